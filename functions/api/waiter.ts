/**
 * Wake-ups for the long-poll (`GET …/wait`). A waiter only says "new mail may have arrived":
 * the API always re-reads the index, so a spurious wake-up costs one query and a missed one
 * costs at most one polling interval.
 */

export interface MailWaiter {
  /**
   * Resolves when mail for `mailbox` may have arrived, or when `signal` aborts (never rejects).
   * Registration happens synchronously in the call, so a caller that calls `wait` before reading
   * the index cannot miss a delivery that commits in between.
   */
  wait(mailbox: string, signal: AbortSignal): Promise<void>;
}

/**
 * The in-process waiter of local mode: the SMTP listener's `onDelivered` calls `notify` for each
 * mailbox a message was delivered to.
 */
export class InProcessMailWaiter implements MailWaiter {
  private readonly waiting = new Map<string, Set<() => void>>();

  wait(mailbox: string, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      if (signal.aborted) return resolve();
      let set = this.waiting.get(mailbox);
      if (set === undefined) {
        set = new Set();
        this.waiting.set(mailbox, set);
      }
      const waiters = set;
      const done = () => {
        waiters.delete(done);
        if (waiters.size === 0 && this.waiting.get(mailbox) === waiters) this.waiting.delete(mailbox);
        signal.removeEventListener('abort', done);
        resolve();
      };
      waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Wakes every request waiting on `mailbox`. */
  notify(mailbox: string): void {
    const set = this.waiting.get(mailbox);
    if (set === undefined) return;
    for (const wake of [...set]) wake();
  }

  /** Requests currently waiting (for tests and diagnostics). */
  get size(): number {
    let n = 0;
    for (const set of this.waiting.values()) n += set.size;
    return n;
  }
}
