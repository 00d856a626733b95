/**
 * The routing core: pure, no I/O. `route(config, envelope, verdicts)` decides what happens to
 * a message for every recipient; `resolveRecipient` answers for one address (RCPT TO, and the
 * `mail-relay route <address>` tester).
 *
 * Precedence for one address (see docs/adr/0003-routing-precedence.md):
 *   1. a route whose `match` is exactly the address;
 *   2. a mailbox with exactly that address (in a `*@domain` mailbox domain: the address without
 *      its `+tag`, since every address there is a mailbox);
 *   3. regex routes, in the order written;
 *   4. the domain's catch-all route (`*@domain`);
 *   each tried first for the full address, then (plus-addressing) for `user@domain` without `+tag`.
 * Anything else is an unknown recipient: 550 5.1.1.
 */
import {
  type Candidate,
  type CompiledRoute,
  type Config,
  candidatesFor,
  canonicalAddress,
  domainOf,
  isAddress,
  MAX_ALIAS_DEPTH,
  normalizeAddress,
  type Policies,
  VERDICT_NAMES,
  type VerdictAction,
  type VerdictName,
} from './config.ts';

/** SES verdict statuses: PASS, FAIL, GRAY, PROCESSING_FAILED; DISABLED when a check is off or not run. */
export type VerdictStatus = string;

export interface Verdicts {
  readonly spam: VerdictStatus;
  readonly virus: VerdictStatus;
  readonly spf: VerdictStatus;
  readonly dkim: VerdictStatus;
  readonly dmarc: VerdictStatus;
  /** The sender domain's DMARC policy; SES sends it only when DMARC FAILs. */
  readonly dmarcPolicy?: string | undefined;
}

/** Verdicts when nothing was checked (local mode without an authentication library). */
export const UNCHECKED_VERDICTS: Verdicts = {
  spam: 'DISABLED',
  virus: 'DISABLED',
  spf: 'DISABLED',
  dkim: 'DISABLED',
  dmarc: 'DISABLED',
};

export interface Envelope {
  readonly mailFrom: string;
  readonly recipients: readonly string[];
}

interface DecisionBase {
  /** The envelope recipient this decision answers (normalized). */
  readonly recipient: string;
  /** Index of the route that decided (absent for a plain mailbox or an unknown address). */
  readonly routeIndex?: number | undefined;
  /** The `+tag` of a plus-address, when it was stripped to find the route. */
  readonly plusTag?: string | undefined;
}

export type Decision =
  | (DecisionBase & {
      readonly kind: 'deliver';
      readonly mailbox: string;
      /** Verdicts whose policy is `tag`: stored with the message and shown to the reader. */
      readonly tags: readonly VerdictName[];
    })
  | (DecisionBase & { readonly kind: 'forward'; readonly to: string; readonly tags: readonly VerdictName[] })
  | (DecisionBase & {
      readonly kind: 'quarantine';
      readonly mailbox: string;
      readonly reasons: readonly VerdictName[];
    })
  | (DecisionBase & {
      readonly kind: 'reject';
      readonly code: number;
      readonly message: string;
      readonly reason: 'route' | 'unknown-recipient' | 'not-our-domain' | 'verdict' | 'alias-depth';
    })
  | (DecisionBase & { readonly kind: 'drop' });

export type DecisionKind = Decision['kind'];

const SEVERITY: Record<VerdictAction, number> = { accept: 0, tag: 1, quarantine: 2, reject: 3 };

/** Applies the policies to FAILed verdicts: returns the strongest action and which verdicts caused it. */
export function applyPolicies(
  policies: Policies,
  verdicts: Verdicts,
): { action: VerdictAction; failed: VerdictName[]; tags: VerdictName[] } {
  let action: VerdictAction = 'accept';
  const failed: VerdictName[] = [];
  const tags: VerdictName[] = [];
  for (const name of VERDICT_NAMES) {
    if (String(verdicts[name]).toUpperCase() !== 'FAIL') continue;
    const a = policies[name];
    if (a === 'accept') continue;
    if (a === 'tag') tags.push(name);
    if (SEVERITY[a] > SEVERITY[action]) {
      action = a;
      failed.length = 0;
    }
    if (a === action) failed.push(name);
  }
  return { action, failed, tags };
}

/**
 * A listed mailbox, or any address of a `*@domain` mailbox domain except a plus-address: mail for
 * `user+tag@` goes to `user@` (tag kept) there, as it does for a listed `user@`.
 */
export function isMailbox(config: Config, address: string): boolean {
  if (config.mailboxes.has(address)) return true;
  return config.autoMailboxDomains.has(domainOf(address)) && candidatesFor(config, address).length === 1;
}

interface Match {
  readonly route?: CompiledRoute;
  readonly groups?: RegExpExecArray;
  readonly candidate: Candidate;
}

function findMatch(config: Config, address: string): Match | null {
  const candidates = candidatesFor(config, address);
  for (const c of candidates) {
    const r = config.routes.find((x) => x.match.kind === 'exact' && x.match.address === c.address);
    if (r) return { route: r, candidate: c };
  }
  for (const c of candidates) if (isMailbox(config, c.address)) return { candidate: c };
  for (const c of candidates) {
    for (const r of config.routes) {
      if (r.match.kind !== 'regex') continue;
      const m = r.match.regex.exec(c.address);
      if (m) return { route: r, groups: m, candidate: c };
    }
  }
  for (const c of candidates) {
    const r = config.routes.find(
      (x) => x.match.kind === 'catchAll' && x.match.domain === domainOf(c.address),
    );
    if (r) return { route: r, candidate: c };
  }
  return null;
}

/** `$0`…`$9` in a target become the regex groups (for a catch-all, `$0` is the address). */
function substitute(target: string, groups: RegExpExecArray | undefined, address: string): string {
  return target.replace(/\$(\d)/g, (_, d: string) => {
    const n = Number(d);
    if (!groups) return n === 0 ? address : '';
    return (groups[n] ?? '').toLowerCase();
  });
}

type RawOutcome = (
  | { kind: 'deliver'; mailbox: string; routeIndex?: number | undefined; plusTag?: string | undefined }
  | { kind: 'forward'; to: string; routeIndex: number }
  | {
      kind: 'reject';
      code: number;
      message: string;
      reason: 'route' | 'unknown-recipient' | 'not-our-domain' | 'alias-depth';
      routeIndex?: number | undefined;
    }
  | { kind: 'drop'; routeIndex: number }
) & {
  /**
   * The `policies` of routes the mail passed after the first (an alias to a route with policies of its
   * own): where one is stricter than what applies, it applies.
   */
  stricter?: Partial<Policies> | undefined;
};

/** `a` with every action of `b` that is stricter (reject > quarantine > tag > accept). */
function stricterOf<T extends Partial<Policies>>(a: T, b: Partial<Policies> | undefined): T {
  if (!b) return a;
  const out: Partial<Policies> = { ...a };
  for (const name of VERDICT_NAMES) {
    const action = b[name];
    if (action === undefined) continue;
    const current = out[name];
    if (current === undefined || SEVERITY[action] > SEVERITY[current]) out[name] = action;
  }
  return out as T;
}

function unknown(): RawOutcome {
  return {
    kind: 'reject',
    code: 550,
    message: '5.1.1 Recipient address rejected: no such user',
    reason: 'unknown-recipient',
  };
}

/** Follows routes (and aliases through other routes) from one address to its final outcomes. */
function resolveAddress(
  config: Config,
  address: string,
  depth: number,
  seen: ReadonlySet<string>,
): { outcomes: RawOutcome[]; first?: Match } {
  if (!config.domains.includes(domainOf(address))) {
    return {
      outcomes: [
        {
          kind: 'reject',
          code: 550,
          message: '5.7.1 Relaying denied: not a domain we receive for',
          reason: 'not-our-domain',
        },
      ],
    };
  }
  const m = findMatch(config, address);
  if (!m) return { outcomes: [unknown()] };
  if (!m.route) {
    // The tag of a `+tag` target (an alias to `alice+lists@`) stays with the delivery.
    return {
      outcomes: [{ kind: 'deliver', mailbox: m.candidate.address, plusTag: m.candidate.plusTag }],
      first: m,
    };
  }
  const { route, index } = m.route;
  switch (route.action) {
    case 'reject':
      return {
        outcomes: [
          { kind: 'reject', code: route.code, message: route.message, reason: 'route', routeIndex: index },
        ],
        first: m,
      };
    case 'drop':
      return { outcomes: [{ kind: 'drop', routeIndex: index }], first: m };
    case 'forward':
      return {
        // A `$1` that makes no address (an empty group) refuses that target, as for deliver.
        outcomes: route.to
          .map((t) => substitute(t, m.groups, m.candidate.address))
          .map((to) => (isAddress(to) ? { kind: 'forward' as const, to, routeIndex: index } : unknown())),
        first: m,
      };
    case 'deliver': {
      const outcomes: RawOutcome[] = [];
      for (const raw of route.to) {
        const target = normalizeAddress(substitute(raw, m.groups, m.candidate.address));
        if (!isAddress(target)) {
          outcomes.push(unknown());
          continue;
        }
        // A route that names its own address delivers to that mailbox (`alice@ -> [alice@, archive@]`).
        if (target === m.candidate.address && isMailbox(config, target)) {
          outcomes.push({ kind: 'deliver', mailbox: target, routeIndex: index });
          continue;
        }
        // The quarantine mailbox as a route names it, not as a sender can spell it through a `$1`
        // (`quarantine-team@` by `$1@`): unlisted, it is not reachable from outside.
        if (target === config.quarantineMailbox && !raw.includes('$') && !isMailbox(config, target)) {
          outcomes.push({ kind: 'deliver', mailbox: target, routeIndex: index });
          continue;
        }
        if (seen.has(target) || depth >= MAX_ALIAS_DEPTH) {
          outcomes.push({
            kind: 'reject',
            code: 554,
            message: '5.4.6 Routing loop detected',
            reason: 'alias-depth',
            routeIndex: index,
          });
          continue;
        }
        const inner = resolveAddress(config, target, depth + 1, new Set([...seen, target]));
        // The alias leads into a route with policies of its own: they still apply where stricter.
        const innerPolicies = inner.first?.route?.route.policies;
        outcomes.push(
          ...inner.outcomes.map((o) => {
            const indexed =
              o.kind === 'deliver' && o.routeIndex === undefined ? { ...o, routeIndex: index } : o;
            return innerPolicies
              ? { ...indexed, stricter: stricterOf(indexed.stricter ?? {}, innerPolicies) }
              : indexed;
          }),
        );
      }
      // A `+tag` address routed by its base address's route (an alias to `team+sales@`): what that
      // route delivers carries the tag, unless a target has a tag of its own.
      const tag = m.candidate.plusTag;
      return {
        outcomes:
          tag === undefined
            ? outcomes
            : outcomes.map((o) =>
                o.kind === 'deliver' && o.plusTag === undefined ? { ...o, plusTag: tag } : o,
              ),
        first: m,
      };
    }
  }
}

/**
 * Why an address cannot be one of ours, in the words of RFC 6531 §3.7.4.1 (non-ASCII) and RFC 5321
 * §4.2.3 (553: mailbox name not allowed). Mailbox addresses here are ASCII dot-atoms: a local part that
 * needs quotes (`"john doe"@`) is a valid address, but no mailbox has one.
 */
function badAddressText(address: string): string {
  if (/[^\x20-\x7e]/.test(address)) return '5.6.7 Non-ASCII recipient address not accepted (no SMTPUTF8)';
  // RFC 5321 §4.1.2: a quoted-string is quotes around text in which a quote or backslash is escaped.
  if (/^"(?:[^"\\]|\\.)*"@[^@"]+$/.test(address)) {
    return '5.1.3 Recipient address rejected: a quoted local part is not a mailbox here';
  }
  return '5.1.3 Bad recipient address syntax';
}

/** DMARC FAILed and the sender's domain publishes `p=reject` (SES sends `dmarcPolicy` only on FAIL). */
export function failsDmarcReject(verdicts: Verdicts): boolean {
  return (
    String(verdicts.dmarc).toUpperCase() === 'FAIL' &&
    String(verdicts.dmarcPolicy ?? '').toUpperCase() === 'REJECT'
  );
}

function forwardsDmarcReject(config: Config, routeIndex: number): boolean {
  const r = config.routes[routeIndex]?.route;
  return r?.action === 'forward' && r.forwardDmarcReject === true;
}

/**
 * Every decision for one recipient address, with the verdict policies applied: the first route's own
 * `policies` override the top-level ones, and a route reached through it (an alias to a forward with
 * `policies`) adds its own where they are stricter, so an alias cannot bypass them.
 */
export function resolveRecipient(
  config: Config,
  recipient: string,
  verdicts: Verdicts = UNCHECKED_VERDICTS,
): Decision[] {
  // `"john"@example.com` is john@'s mail, `info@münchen.de` info@xn--mnchen-3ya.de's (as SMTP has it).
  const address = canonicalAddress(recipient);
  if (!isAddress(address)) {
    return [
      {
        recipient: address,
        kind: 'reject',
        code: 553,
        message: badAddressText(address),
        reason: 'unknown-recipient',
      },
    ];
  }
  const { outcomes, first } = resolveAddress(config, address, 0, new Set([address]));
  const plusTag = first?.candidate.plusTag;
  const policies: Policies = { ...config.policies, ...(first?.route?.route.policies ?? {}) };
  const firstVerdict = applyPolicies(policies, verdicts);

  return outcomes.map((o): Decision => {
    const base = {
      recipient: address,
      routeIndex: o.routeIndex,
      // A tag the target itself carries (alias to `alice+lists@`), else the recipient's own.
      plusTag: (o.kind === 'deliver' ? o.plusTag : undefined) ?? plusTag,
    };
    const verdict = o.stricter ? applyPolicies(stricterOf(policies, o.stricter), verdicts) : firstVerdict;
    if (o.kind === 'reject')
      return { ...base, kind: 'reject', code: o.code, message: o.message, reason: o.reason };
    if (o.kind === 'drop') return { ...base, kind: 'drop' };
    if (verdict.action === 'reject') {
      return {
        ...base,
        kind: 'reject',
        code: 550,
        message: `5.7.1 Message rejected by policy (${verdict.failed.join(', ')} failed)`,
        reason: 'verdict',
      };
    }
    if (verdict.action === 'quarantine') {
      return { ...base, kind: 'quarantine', mailbox: config.quarantineMailbox, reasons: verdict.failed };
    }
    if (o.kind === 'forward') {
      // A DMARC failure from a domain that asks for rejection is most likely a spoof; forwarding it
      // under our own From would pass DMARC at the destination and launder it. Kept, not sent on.
      if (failsDmarcReject(verdicts) && !forwardsDmarcReject(config, o.routeIndex)) {
        return { ...base, kind: 'quarantine', mailbox: config.quarantineMailbox, reasons: ['dmarc'] };
      }
      return { ...base, kind: 'forward', to: o.to, tags: verdict.tags };
    }
    return { ...base, kind: 'deliver', mailbox: o.mailbox, tags: verdict.tags };
  });
}

/**
 * Decisions for every recipient of a message. One delivery per mailbox and one forward per
 * destination, even when several recipients (aliases, plus-addresses, repeats) lead to the same place.
 */
export function route(
  config: Config,
  envelope: Envelope,
  verdicts: Verdicts = UNCHECKED_VERDICTS,
): Decision[] {
  const out: Decision[] = [];
  const delivered = new Set<string>();
  const forwarded = new Set<string>();
  const recipientsSeen = new Set<string>();
  for (const rcpt of envelope.recipients) {
    const address = canonicalAddress(rcpt);
    if (recipientsSeen.has(address)) continue;
    recipientsSeen.add(address);
    for (const d of resolveRecipient(config, address, verdicts)) {
      if (d.kind === 'deliver' || d.kind === 'quarantine') {
        const key = `${d.kind}:${d.mailbox}`;
        if (delivered.has(key)) continue;
        delivered.add(key);
      } else if (d.kind === 'forward') {
        if (forwarded.has(d.to)) continue;
        forwarded.add(d.to);
      }
      out.push(d);
    }
  }
  return out;
}

/**
 * RFC 5321 §4.5.1: `RCPT TO:<Postmaster>` without a domain must be accepted; it names the postmaster
 * of this server, here that of the first configured domain (routed like any address there).
 */
export function qualifyRecipient(config: Config, address: string): string {
  return address.toLowerCase() === 'postmaster' ? `postmaster@${config.domains[0]}` : address;
}

/** Whether the listener should accept this recipient at RCPT time, and with what reply otherwise. */
export function acceptsRecipient(
  config: Config,
  recipient: string,
): { accept: true } | { accept: false; code: number; message: string } {
  const decisions = resolveRecipient(config, recipient);
  const accepted = decisions.some((d) => d.kind !== 'reject');
  if (accepted) return { accept: true };
  const r = decisions.find((d) => d.kind === 'reject');
  return r && r.kind === 'reject'
    ? { accept: false, code: r.code, message: r.message }
    : { accept: false, code: 550, message: '5.1.1 Recipient address rejected' };
}
