/**
 * What `mail-relay dev` logs while its disk is full. Every message and API write refused for want
 * of space would otherwise log a line of its own, for as long as the disk stays full (a test suite
 * retrying its mail makes thousands): one line says that the disk is full and what it means, a
 * reminder follows at most every `STORAGE_FULL_REMINDER_MS` while it stays so, and one line says
 * when mail is stored again. Nothing needs restarting: the relay stores again once there is room.
 * Near the edge small mail still fits while large mail does not, and space comes and goes with each
 * journal checkpoint: an episode ends only with a store `STORAGE_FULL_QUIET_MS` after its last
 * refusal, so that flapping is one episode, not a pair of lines per message.
 */
import { errorMessage, isStorageFull } from '../core/errors.ts';

/** How often a disk that stays full is mentioned again. */
export const STORAGE_FULL_REMINDER_MS = 10 * 60 * 1000;
/** How long without a refusal before a store ends a full-disk episode. */
export const STORAGE_FULL_QUIET_MS = 60 * 1000;

export class StorageFullNotice {
  /** Refusals since the episode began (null: the disk is not known to be full). */
  #refused: number | null = null;
  #lastSaid = 0;
  #lastRefused = 0;

  constructor(
    private readonly write: (line: string) => void,
    /** The data dir, named in the lines. */
    private readonly dataDir: string,
    /** Milliseconds on a clock that only moves forward (durations, not dates). */
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /**
   * Takes an error that refused a message or a request. Returns false when it is not a full disk
   * (the caller logs it as before); otherwise it is counted, and said only as described above.
   */
  report(err: unknown): boolean {
    if (!isStorageFull(err)) return false;
    const now = this.clock();
    this.#lastRefused = now;
    if (this.#refused === null) {
      this.#refused = 1;
      this.#lastSaid = now;
      this.write(
        `mail-relay: no space left on the disk of ${this.dataDir} (${errorMessage(err)}): ` +
          'mail gets 452 4.3.1 (senders retry) and API writes other than deletes 507 until there is room; ' +
          'delete mail through the API (or free space elsewhere), no restart needed\n',
      );
      return true;
    }
    this.#refused += 1;
    if (now - this.#lastSaid >= STORAGE_FULL_REMINDER_MS) {
      this.#lastSaid = now;
      this.write(
        `mail-relay: the disk of ${this.dataDir} is still full: ${this.#refused} messages or requests refused so far\n`,
      );
    }
    return true;
  }

  /** Something was stored: a full-disk episode, if any, is over once refusals have stopped a while. */
  stored(): void {
    if (this.#refused === null || this.clock() - this.#lastRefused < STORAGE_FULL_QUIET_MS) return;
    this.write(
      `mail-relay: storing again in ${this.dataDir} (${this.#refused} messages or requests were refused while the disk was full)\n`,
    );
    this.#refused = null;
  }
}
