/**
 * When a local group commit (FsBlobStore's row writes, SqliteMailboxIndex's deliveries) runs.
 *
 * Not on a microtask: the writes of other messages whose I/O completes in the same turn of the
 * event loop should join. Not on the first check phase either: under load one turn carries the work
 * of about one message, so a commit per turn commits ~1.5 messages at a time and pays SQLite's
 * per-commit cost (locks, WAL header, interior pages, the commit frame) for each. Instead the commit
 * waits, one check phase at a time, while the queue keeps growing, and runs on the first turn that
 * added nothing (or after `MAX_TURNS`). A lone write waits one extra turn, which costs microseconds:
 * nothing is waiting on a timer.
 */
export const MAX_TURNS = 8;

/**
 * Calls `flush` once the queue whose length `pending` reports has stopped growing from one event
 * loop turn to the next, or after `maxTurns` turns. `flush` must tolerate an empty queue (another
 * operation may have flushed it meanwhile).
 */
export function scheduleGroupCommit(pending: () => number, flush: () => void, maxTurns = MAX_TURNS): void {
  let turns = 0;
  let seen = pending();
  const turn = () => {
    turns++;
    const now = pending();
    if (now > seen && turns < maxTurns) {
      seen = now;
      setImmediate(turn);
      return;
    }
    flush();
  };
  setImmediate(turn);
}
