/**
 * `mail-relay dev`'s retention timer: with `retention.mailboxDays` set, one sweep at start and
 * then one every hour (functions/pipeline/retention.ts), as the daily schedule does in AWS. The
 * timer never keeps the process alive, and `stop` waits for a sweep in progress, so the index is
 * not closed under it.
 */
import { type RetentionDeps, type SweepSummary, sweepExpired } from '../pipeline/retention.ts';

/** Hourly: a laptop is not up for a whole day, and a sweep with nothing to delete costs one listing per mailbox. */
export const LOCAL_SWEEP_INTERVAL_MS = 60 * 60 * 1000;

export interface RetentionSweeperOptions {
  readonly mailboxDays: number;
  /** @default LOCAL_SWEEP_INTERVAL_MS */
  readonly intervalMs?: number;
  /** After every sweep that ran to its end or was stopped. */
  readonly onSwept?: (summary: SweepSummary) => void;
  /** A sweep that threw (listing the mailboxes failed); the timer keeps going. */
  readonly onError?: (err: unknown) => void;
}

export interface RetentionSweeper {
  /** Stops the timer, interrupts a sweep in progress between two messages, and waits for it. */
  stop(): Promise<void>;
}

/** Starts sweeping now and every `intervalMs`. A tick that finds a sweep still running is skipped. */
export function startRetentionSweeper(
  deps: RetentionDeps,
  options: RetentionSweeperOptions,
): RetentionSweeper {
  const intervalMs = options.intervalMs ?? LOCAL_SWEEP_INTERVAL_MS;
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
    throw new RangeError(`intervalMs must be positive, got ${String(options.intervalMs)}`);
  }
  const stopping = new AbortController();
  let running: Promise<void> | null = null;
  const tick = (): void => {
    if (running !== null || stopping.signal.aborted) return;
    running = (async () => {
      try {
        const summary = await sweepExpired(deps, {
          mailboxDays: options.mailboxDays,
          signal: stopping.signal,
        });
        options.onSwept?.(summary);
      } catch (err) {
        options.onError?.(err);
      } finally {
        running = null;
      }
    })();
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
  return {
    async stop() {
      clearInterval(timer);
      stopping.abort();
      await running;
    },
  };
}
