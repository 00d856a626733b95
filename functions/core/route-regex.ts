/**
 * A route's `/regex/`, matched against lower-cased addresses in bounded time. JavaScript's regex
 * engine backtracks: a pattern such as `/^([a-z0-9]+[._-]?)+@example\.com$/` (a common "validation"
 * pattern) takes minutes on `aaaa…a!@example.com`, an address any sender may write at RCPT TO, and
 * that time is the event loop's: SMTP and the API stop. So:
 * - a pattern V8's linear-time engine can run (no back-references or look-arounds) and that is
 *   plainly lower-case (`caseFree`) is compiled for that engine too (the `l` flag), as a guard:
 *   whether an address matches is decided there, in time that grows with the address, never
 *   exponentially. Only an address that matches goes on to the usual engine (with `i`), for the
 *   groups `$1`… of its targets: the linear engine matches the same addresses but may fill optional
 *   groups differently. That run is time-limited as below; should it run out, the guard's groups
 *   serve;
 * - any other pattern runs on the usual engine with `i` in a `vm` context with a time limit (the
 *   watchdog stops the match). A match that runs out counts as none, a warning names the route once,
 *   the address is remembered as not matching, and the route's limit drops for the addresses after
 *   it, so that a sender repeating such addresses cannot stall the relay for long.
 */
import { setFlagsFromString } from 'node:v8';
import { createContext, Script } from 'node:vm';

/**
 * How long one match may take before it counts as no match: far more than any real address needs, so
 * that a GC pause or a busy machine does not turn a match into none.
 */
export const REGEX_TIME_LIMIT_MS = 250;
/** The limit of a route once one of its matches has run out: it is known to backtrack badly. */
export const REGEX_TIME_LIMIT_AFTER_TIMEOUT_MS = 20;
/** Runs of one match at most, when those that stopped had not had the processor (`#limited`). */
const MATCH_ATTEMPTS = 3;
/** Addresses remembered per route as having run out (the oldest forgotten first). */
const TIMED_OUT_REMEMBERED = 1024;

// Accepts the `l` flag (opt-in per regex; nothing else changes). If a Node version no longer takes
// it, compiling with `l` fails and every route takes the time-limited path.
setFlagsFromString('--enable-experimental-regexp-engine');

const EXEC = new Script('re.exec(s)');

const isLower = (c: number) => c >= 0x61 && c <= 0x7a;
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;

/**
 * Whether the pattern, run without `i` on a lower-cased address, matches exactly what it matches
 * with `i`: ASCII only, no upper-case letter, no escape that can name one (`\x41`, `\u0041`, `\101`, `\cJ`), and
 * in character classes only ranges within a–z or 0–9 (`[+-_]` spans A–Z: with `i` it also takes a–z).
 * Conservative: a pattern it refuses still works, on the time-limited path.
 */
export function caseFree(pattern: string): boolean {
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charCodeAt(i);
    if (c === 0x5c) {
      // An escape: these letters may stand for any character, an upper-case one among them.
      if (/[xuc0-9]/.test(pattern[i + 1] ?? '')) return false;
      i++;
      continue;
    }
    // Upper case, and any non-ASCII letter (É, Σ, µ… fold with `i` too).
    if ((c >= 0x41 && c <= 0x5a) || c > 0x7f) return false;
    if (inClass) {
      if (c === 0x5d) inClass = false;
      else if (c === 0x2d && i > 0 && pattern[i - 1] !== '[' && pattern[i + 1] !== ']') {
        // A range `a-b`: both ends letters or both digits.
        const from = pattern.charCodeAt(i - 1);
        const to = pattern.charCodeAt(i + 1);
        if (!((isLower(from) && isLower(to)) || (isDigit(from) && isDigit(to)))) return false;
      }
    } else if (c === 0x5b) {
      inClass = true;
      if (pattern[i + 1] === '^') i++;
      if (pattern[i + 1] === ']') i++; // `[]…]` / `[^]…]`: a literal `]` first
    }
  }
  return true;
}

/** Characters taken as themselves, outside a class, unescaped / after a backslash. */
const PLAIN = /^[A-Za-z0-9@_-]$/;
const ESCAPED_PLAIN = /^[.+@_\-/]$/;
const QUANTIFIER = /^[*+?{]$/;

/**
 * The literal text (lower-cased) that every address a pattern matches begins and ends with: what
 * follows a leading `^` and precedes a final `$`, up to the first character that is not plainly
 * itself (a class, a group, an escape such as `\d`, a character a quantifier applies to). `''` where
 * there is none, and for a pattern with `|` anywhere (an alternation could bypass either end).
 * A necessary condition only: an address that passes may still not match.
 */
export function literalEnds(pattern: string): { prefix: string; suffix: string } {
  if (pattern.includes('|')) return { prefix: '', suffix: '' };
  let prefix = '';
  if (pattern.startsWith('^')) {
    for (let i = 1; i < pattern.length; ) {
      const [literal, next] =
        pattern[i] === '\\' && ESCAPED_PLAIN.test(pattern[i + 1] ?? '')
          ? [pattern[i + 1], i + 2]
          : PLAIN.test(pattern[i] ?? '')
            ? [pattern[i], i + 1]
            : [undefined, i];
      // `ab?`: the `b` may be absent or repeated.
      if (literal === undefined || QUANTIFIER.test(pattern[next] ?? '')) break;
      prefix += literal;
      i = next;
    }
  }
  let suffix = '';
  const backslashesBefore = (end: number) => {
    let n = 0;
    while (end - 1 - n >= 0 && pattern[end - 1 - n] === '\\') n++;
    return n;
  };
  if (pattern.endsWith('$') && backslashesBefore(pattern.length - 1) % 2 === 0) {
    // Read backwards: a quantifier is met before the character it applies to, and stops the reading.
    for (let j = pattern.length - 2; j >= 0; ) {
      const ch = pattern[j] ?? '';
      const escaped = backslashesBefore(j) % 2 === 1;
      if (escaped ? !ESCAPED_PLAIN.test(ch) : !PLAIN.test(ch)) break;
      // `\d` read backwards is `d` preceded by one backslash: the `escaped` test above refuses it.
      suffix = ch + suffix;
      j -= escaped ? 2 : 1;
    }
  }
  if (prefix.length + suffix.length === 0) return { prefix, suffix };
  return { prefix: prefix.toLowerCase(), suffix: suffix.toLowerCase() };
}

export class RouteRegex {
  /** Whether a linear-time guard decides which addresses match (see the module comment). */
  readonly linear: boolean;
  /** Capture groups in the pattern (`$1`… of a target). */
  readonly groupCount: number;
  readonly #guard: RegExp | undefined;
  readonly #regex: RegExp;
  #context: { re: RegExp; s: string } | undefined;
  #limitMs = REGEX_TIME_LIMIT_MS;
  readonly #timedOut = new Set<string>();
  #warned = false;
  /** What every match begins and ends with (`literalEnds`): an address without them is no match, at no cost. */
  readonly #ends: { prefix: string; suffix: string };

  /** Throws a SyntaxError for an invalid pattern. */
  constructor(readonly pattern: string) {
    this.#regex = new RegExp(pattern, 'i');
    this.#ends = literalEnds(pattern);
    if (caseFree(pattern)) {
      try {
        this.#guard = new RegExp(pattern, 'l');
      } catch {
        // Back-references, look-arounds, or a Node without the flag.
      }
    }
    this.linear = this.#guard !== undefined;
    // An empty alternative makes every pattern match '', which reports its group count.
    this.groupCount = (new RegExp(`${pattern}|`).exec('')?.length ?? 1) - 1;
  }

  /** The match of a lower-cased address, or null (also when the time limit ran out). */
  exec(address: string): RegExpExecArray | null {
    if (this.#guard) {
      if (!this.#guard.test(address)) return null;
      // An address whose groups ran out before takes the guard's at once; others keep the usual
      // engine's (the guard fills optional groups differently).
      if (this.#timedOut.has(address)) return this.#guard.exec(address);
      const groups = this.#limited(address);
      if (groups !== undefined) return groups;
      this.#ranOut(address, 'its groups are taken from the linear-time match');
      return this.#guard.exec(address);
    }
    if (this.#timedOut.has(address)) return null;
    // Most addresses are not for this route: telling them apart costs a string compare, not a run in
    // the time-limited context (~0.1 ms, and more on a busy machine, counted against the SMTP
    // session's routing budget for each of up to 1,000 recipients of a message).
    const { prefix, suffix } = this.#ends;
    if (!address.startsWith(prefix) || !address.endsWith(suffix)) return null;
    const match = this.#limited(address);
    if (match !== undefined) return match;
    this.#ranOut(address, 'it counts as no match, as will any address that does so again');
    return null;
  }

  /**
   * The usual engine's match under the time limit; undefined when it ran out. The watchdog counts
   * wall time: on a machine busy enough that this process waited its turn (or was stopped) through
   * the limit, a match of a few microseconds "ran out" too, and the address was routed as no match.
   * So a run that stopped having used the processor for less than half its limit did not run out: it
   * was never given the time, and is run again (a few times at most; a pattern that backtracks uses
   * the processor all along, and is stopped as before).
   */
  #limited(address: string): RegExpExecArray | null | undefined {
    this.#context ??= createContext({ re: this.#regex, s: '' }) as { re: RegExp; s: string };
    this.#context.s = address;
    for (let attempt = 1; ; attempt++) {
      const cpu = process.cpuUsage();
      try {
        return EXEC.runInContext(this.#context, { timeout: this.#limitMs }) as RegExpExecArray | null;
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw err;
        const used = process.cpuUsage(cpu);
        const usedMs = (used.user + used.system) / 1000;
        if (usedMs >= this.#limitMs / 2 || attempt >= MATCH_ATTEMPTS) return undefined;
      }
    }
  }

  /** After a match ran out: the address is remembered, the route's limit drops, a warning names it (once). */
  #ranOut(address: string, outcome: string): void {
    if (this.#timedOut.size >= TIMED_OUT_REMEMBERED) {
      this.#timedOut.delete(this.#timedOut.values().next().value as string);
    }
    this.#timedOut.add(address);
    this.#limitMs = REGEX_TIME_LIMIT_AFTER_TIMEOUT_MS;
    if (this.#warned) return;
    this.#warned = true;
    process.emitWarning(
      `route /${this.pattern}/: matching "${address.slice(0, 100)}" took over ${REGEX_TIME_LIMIT_MS} ms and ` +
        `was stopped (${outcome}; its later matches get ${REGEX_TIME_LIMIT_AFTER_TIMEOUT_MS} ms): the pattern ` +
        'backtracks without bound: remove nested repetition such as (x+)+',
      'MailRelayRegexWarning',
    );
  }
}
