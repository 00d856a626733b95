/**
 * A route's `/regex/`, matched against lower-cased addresses in bounded time. JavaScript's regex
 * engine backtracks: a pattern such as `/^([a-z0-9]+[._-]?)+@example\.com$/` (a common "validation"
 * pattern) takes minutes on `aaaa…a!@example.com`, an address any sender may write at RCPT TO, and
 * that time is the event loop's: SMTP and the API stop. So:
 * - a pattern V8's linear-time engine can run (no back-references or look-arounds) and that has no
 *   upper-case letter outside an escape is compiled for it (the `l` flag): its time grows with the
 *   address, never exponentially, and results are those of the usual engine. Addresses are
 *   lower-cased before matching, so such a pattern needs no `i` (which that engine does not take);
 * - any other pattern runs with `i` in a `vm` context with a time limit (the watchdog stops the
 *   match); one that runs out counts as not matching, and a warning names the route once.
 */
import { setFlagsFromString } from 'node:v8';
import { createContext, Script } from 'node:vm';

/**
 * How long one match may take before it counts as no match: far more than any real address needs, so
 * that a GC pause or a busy machine does not turn a match into none.
 */
export const REGEX_TIME_LIMIT_MS = 250;

// Accepts the `l` flag (opt-in per regex; nothing else changes). If a Node version no longer takes
// it, compiling with `l` fails and every route takes the time-limited path.
setFlagsFromString('--enable-experimental-regexp-engine');

const EXEC = new Script('re.exec(s)');

/** Whether the pattern has an upper-case letter outside an escape (`\W`, `\cJ`…): then it needs `i`. */
function hasUpperCase(pattern: string): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charCodeAt(i);
    if (c === 0x5c)
      i++; // a backslash: skip what it escapes
    else if (c >= 0x41 && c <= 0x5a) return true;
  }
  return false;
}

export class RouteRegex {
  /** Whether matches run on V8's linear-time engine (else: time-limited, see the module comment). */
  readonly linear: boolean;
  /** Capture groups in the pattern (`$1`… of a target). */
  readonly groupCount: number;
  readonly #regex: RegExp;
  #context: { re: RegExp; s: string } | undefined;
  #warned = false;

  /** Throws a SyntaxError for an invalid pattern. */
  constructor(readonly pattern: string) {
    const backtracking = new RegExp(pattern, 'i');
    let linear: RegExp | undefined;
    if (!hasUpperCase(pattern)) {
      try {
        linear = new RegExp(pattern, 'l');
      } catch {
        // Back-references, look-arounds, or a Node without the flag.
      }
    }
    this.linear = linear !== undefined;
    this.#regex = linear ?? backtracking;
    // An empty alternative makes every pattern match '', which reports its group count.
    this.groupCount = (new RegExp(`${pattern}|`).exec('')?.length ?? 1) - 1;
  }

  /** The match of a lower-cased address, or null (also when the time limit ran out). */
  exec(address: string): RegExpExecArray | null {
    if (this.linear) return this.#regex.exec(address);
    this.#context ??= createContext({ re: this.#regex, s: '' }) as { re: RegExp; s: string };
    this.#context.s = address;
    try {
      return EXEC.runInContext(this.#context, { timeout: REGEX_TIME_LIMIT_MS }) as RegExpExecArray | null;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw err;
      if (!this.#warned) {
        this.#warned = true;
        process.emitWarning(
          `route /${this.pattern}/: matching "${address.slice(0, 100)}" took over ${REGEX_TIME_LIMIT_MS} ms ` +
            'and counts as no match (as will any address that does so again); the pattern backtracks ' +
            'without bound: remove nested repetition such as (x+)+',
          'MailRelayRegexWarning',
        );
      }
      return null;
    }
  }
}
