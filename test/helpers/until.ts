/**
 * Waiting for an event instead of for a time: a test that sleeps a fixed time and then asserts that
 * something has happened fails on a loaded machine (CI runs two test files at once on two cores),
 * and one that waits for the event passes as soon as it happens. The ceiling only bounds how long a
 * real failure takes to be reported; make it generous.
 */

/** What `probe` gives once it gives something (polled every 50 ms), or a failure naming `what` after `ms`. */
export async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
