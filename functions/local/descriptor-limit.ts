/**
 * The local relay and the process's open-files limit (`ulimit -n`, RLIMIT_NOFILE). Every SMTP session,
 * API request, long-poll and POP3 connection is a socket, and storing a message opens files: a low
 * limit (256 in a macOS shell, some launchd and container setups) is met as a crash at start or as
 * mail refused. What the relay needs, measured on Linux with Node 20 (docs/adr/0014-local-server-process.md,
 * 2026-11-29): ~40 descriptors while `npm start` loads its modules, ~34 at rest (stdio, libuv's
 * epoll/eventfd/pipes, the SQLite files and the dev lock, the listening sockets), then one per
 * connection and a few per message being stored.
 *
 * Node cannot raise its own soft limit (it has no setrlimit), so below `MIN_OPEN_FILES` the relay
 * says so in one line and does not start; above it, SMTP sessions and API connections are capped
 * (`connectionCap`) so that a burst gets `421` and `503` answers that say why instead of connections
 * dropped unanswered.
 *
 * Imports nothing but Node's own modules: bin/cli.ts checks the limit before loading the relay.
 */
import { readFileSync } from 'node:fs';

/**
 * Below this the relay does not start: it holds ~34 at rest, and needs room for a few sessions and
 * the files a message is stored in. 64 is the lowest limit seen in the wild (besides 256 and 1024).
 */
export const MIN_OPEN_FILES = 64;

/**
 * Descriptors kept out of the SMTP session cap: the ~34 the relay holds at rest and room for the
 * files of messages being stored (a journal segment, a blob's file and its directory for an fsync).
 */
export const RESERVED_DESCRIPTORS = 48;

/** What to tell the user to run (any limit from `MIN_OPEN_FILES` up works; 1024 is Linux's default). */
const RAISE_HINT = 'ulimit -n 1024';

export interface OpenFilesLimit {
  /** The soft limit: what the process may open now. */
  readonly soft: number;
  /** The hard limit: as far as an unprivileged shell can raise the soft one. */
  readonly hard: number;
}

/**
 * The open-files limit from `/proc/self/limits` (Linux), or null where there is no such file (macOS,
 * Windows): there the relay does without the check. `unlimited` reads as Infinity.
 */
export function readOpenFilesLimit(
  read: () => string = () => readFileSync('/proc/self/limits', 'latin1'),
): OpenFilesLimit | null {
  let text: string;
  try {
    text = read();
  } catch {
    return null;
  }
  const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
  if (match === null) return null;
  const value = (s: string | undefined) => (s === undefined || s === 'unlimited' ? Infinity : Number(s));
  return { soft: value(match[1]), hard: value(match[2]) };
}

/**
 * The one line `dev` and `pop3` print instead of starting, or null when the limit is enough. Node
 * raises its soft limit to the hard one as it starts (src/node.cc, PlatformInit), so what is read here
 * is in effect the hard limit: a shell's low soft limit (256 on macOS) never stops the relay, and
 * what needs raising is the hard limit (`ulimit -n` raises both where the hard one allows).
 */
export function openFilesTooLowLine(limit: OpenFilesLimit | null): string | null {
  if (limit === null || limit.soft >= MIN_OPEN_FILES) return null;
  return (
    `mail-relay: the open-files limit is ${limit.soft}, and the relay needs at least ${MIN_OPEN_FILES} ` +
    `(a descriptor per connection and per file being stored); raise it (\`${RAISE_HINT}\` in the shell that starts it; ` +
    'LimitNOFILE= for a systemd service, --ulimit nofile=1024 for docker run) and start again'
  );
}

/**
 * How many connections at once each of the relay's servers (SMTP, API) takes under a soft limit:
 * half of what is left beside `RESERVED_DESCRIPTORS` each. One beyond gets an answer that says the
 * server is out of resources (`421 4.3.2`, `503 out_of_resources`) rather than the silence of a
 * connection the system could not accept. Undefined (no cap) where the limit is not known or unlimited.
 */
export function connectionCap(limit: OpenFilesLimit | null): number | undefined {
  if (limit === null || limit.soft === Infinity) return undefined;
  return Math.max(1, Math.floor((limit.soft - RESERVED_DESCRIPTORS) / 2));
}

/** RFC 3463 4.3.2 "system not accepting network messages": a session refused for want of descriptors. */
export const SMTP_SESSION_OUT_OF_RESOURCES =
  '4.3.2 Server out of resources (too many open files); try again later';
/** RFC 3463 4.3.0: a message that could not be stored for want of descriptors; nothing was kept. */
export const SMTP_MESSAGE_OUT_OF_RESOURCES =
  '4.3.0 Server out of resources (too many open files); message not stored, try again later';

/** How long without a refusal before a store ends an out-of-descriptors episode. */
export const OUT_OF_DESCRIPTORS_QUIET_MS = 10 * 1000;

/**
 * What `dev` logs while it is out of descriptors: one line when it starts (what and what to do) and
 * one when mail is stored again, not one per refused connection, message or request (a burst makes
 * hundreds). Recovery needs nothing: descriptors come back as connections close.
 */
export class OutOfDescriptorsNotice {
  /** Refusals since the episode began (null: not out of descriptors). */
  #refused: number | null = null;
  #lastRefused = 0;

  constructor(
    private readonly write: (line: string) => void,
    private readonly limit: OpenFilesLimit | null,
    /** Milliseconds on a clock that only moves forward. */
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /** Counts a refusal (a connection not accepted, a message or request not served). */
  refused(what: string): void {
    this.#lastRefused = this.clock();
    if (this.#refused !== null) {
      this.#refused += 1;
      return;
    }
    this.#refused = 1;
    const limit = this.limit === null ? '' : ` (the limit is ${this.limit.soft})`;
    this.write(
      `mail-relay: at the open-files limit${limit}: ${what}; ` +
        'mail gets 4xx (senders retry) and the API 503 until connections close; ' +
        `for more connections at once, raise the open-files limit (\`${RAISE_HINT}\`) and restart\n`,
    );
  }

  /** Something was stored: an episode, if any, is over once refusals have stopped a while. */
  stored(): void {
    if (this.#refused === null || this.clock() - this.#lastRefused < OUT_OF_DESCRIPTORS_QUIET_MS) return;
    this.write(
      `mail-relay: file descriptors available again (${this.#refused} connections, messages or requests were refused meanwhile)\n`,
    );
    this.#refused = null;
  }
}
