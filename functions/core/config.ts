/**
 * `mail-relay.config.json`: the single source of truth for domains, mailboxes, routes and
 * policies. Validated by zod at local start and at `cdk synth`; every wrong path is named.
 */
import { domainToASCII } from 'node:url';
import * as z from 'zod';
import { ConfigError } from './errors.ts';
import { RouteRegex } from './route-regex.ts';

/** SES refuses inbound messages above 40 MB (including headers); we default to the same. */
export const DEFAULT_MAX_MESSAGE_BYTES = 40 * 1024 * 1024;
/** SES keeps nothing for us; `inbound/` is our replay window. */
export const DEFAULT_INBOUND_RETENTION_DAYS = 30;
/** Bound on alias chains resolved at run time (regex and catch-all targets are dynamic). */
export const MAX_ALIAS_DEPTH = 10;
/**
 * The largest message we hand to SES: "40 MB per message" for the v2 API and SMTP
 * (https://docs.aws.amazon.com/ses/latest/dg/quotas.html). Counted in decimal megabytes, the
 * smaller reading; the forward rewrite adds a few hundred bytes of headers on top of what arrived.
 */
export const DEFAULT_MAX_SEND_BYTES = 40_000_000;
/** S3 (SigV4) refuses presigned URLs valid for longer than 7 days; the oversize notice link lives that long. */
export const MAX_LINK_EXPIRY_SECONDS = 7 * 24 * 3600;

const DOMAIN_RE =
  /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;
// RFC 5322 atext plus dots, minus '/': a slash is legal in a local part but never seen in practice,
// and the mailbox address is a storage key segment (mailboxes/<address>/…).
const LOCAL_RE = /^[a-z0-9!#$%&'*+=?^_`{|}~.-]{1,64}$/;

export function isAddress(value: string): boolean {
  const at = value.lastIndexOf('@');
  if (at <= 0) return false;
  return LOCAL_RE.test(value.slice(0, at)) && DOMAIN_RE.test(value.slice(at + 1));
}

/** Addresses are compared case-insensitively, as every real mail system does. */
export function normalizeAddress(value: string): string {
  return value.trim().toLowerCase();
}

/**
 * The address with an internationalized domain in its ASCII form (`info@münchen.de` is
 * `info@xn--mnchen-3ya.de`), the form `domains` lists. smtp-server decodes an `xn--` domain of an
 * envelope address before the relay sees it, so the SMTP listener (and `route`, to answer as it does)
 * take it back. Anything else is returned as it is.
 */
export function asciiDomain(address: string): string {
  const at = address.lastIndexOf('@');
  const domain = address.slice(at + 1);
  if (at < 0 || !/[^ -~]/.test(domain)) return address;
  const ascii = domainToASCII(domain);
  return ascii === '' ? address : `${address.slice(0, at + 1)}${ascii}`;
}

/** RFC 5322 atext: what a local part may hold without quotes (with dots between atoms: a dot-atom). */
const DOT_ATOM_RE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
/** RFC 5321 §4.1.2 Quoted-string: printable ASCII and space, `\` and `"` only as a quoted pair. */
const QUOTED_LOCAL_RE = /^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*)"$/;

/**
 * A local part in its canonical form (RFC 5321 §4.1.2: a quoted string and the dot-atom it spells are
 * the same local part): `"john.doe"` is `john.doe`; one that needs its quotes (`"john doe"`) keeps
 * them, with only the backslashes it needs. Null for a local part that is neither (not an address).
 */
export function canonicalLocalPart(local: string): string | null {
  if (DOT_ATOM_RE.test(local)) return local;
  const quoted = QUOTED_LOCAL_RE.exec(local);
  if (!quoted) return null;
  const text = (quoted[1] ?? '').replace(/\\(.)/g, '$1');
  return DOT_ATOM_RE.test(text) ? text : `"${text.replace(/(["\\])/g, '\\$1')}"`;
}

/**
 * An address as the relay keys it, however a sender or a user wrote it: lower case
 * (`normalizeAddress`), a quoted local part that needs no quotes without them (`"john"@x` is
 * `john@x`), and an internationalized domain in its ASCII form (`asciiDomain`). What the SMTP
 * listener, `route`, `token`, `import`, the API's `{address}` and `POST …/send` take an address as;
 * `isAddress` then says whether it can be a mailbox here (no quoted or non-ASCII local part can).
 */
export function canonicalAddress(value: string): string {
  const address = normalizeAddress(value);
  const at = address.lastIndexOf('@');
  if (at <= 0 || !address.startsWith('"')) return asciiDomain(address);
  const local = canonicalLocalPart(address.slice(0, at));
  return asciiDomain(local === null ? address : `${local}${address.slice(at)}`);
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

const domainSchema = z
  .string()
  .transform((s) => s.trim().toLowerCase())
  .superRefine((s, ctx) => {
    if (DOMAIN_RE.test(s)) return;
    // An internationalized domain is listed as mail carries it in the envelope: its ASCII form.
    const ascii = /[^ -~]/.test(s) ? domainToASCII(s) : '';
    ctx.addIssue({
      code: 'custom',
      message: DOMAIN_RE.test(ascii)
        ? `write an internationalized domain in its ASCII form: "${ascii}"`
        : 'must be a domain name such as example.com',
    });
  });

/**
 * For an address or `*@domain` written with an internationalized domain in its Unicode form, the
 * problem to report: the form to write instead (as for `domains`, see `domainSchema`). Null otherwise.
 */
function unicodeDomainProblem(value: string): string | null {
  const v = normalizeAddress(value);
  if (!/[^ -~]/.test(domainOf(v)) || /[^ -~]/.test(v.slice(0, v.lastIndexOf('@')))) return null;
  const ascii = asciiDomain(v);
  const ok = v.startsWith('*@') ? DOMAIN_RE.test(ascii.slice(2)) : isAddress(ascii);
  return ok ? `write an internationalized domain in its ASCII form: "${ascii}"` : null;
}

const addressSchema = z
  .string()
  .transform(normalizeAddress)
  .superRefine((s, ctx) => {
    if (isAddress(s)) return;
    ctx.addIssue({
      code: 'custom',
      message: unicodeDomainProblem(s) ?? 'must be an e-mail address such as alice@example.com',
    });
  });

export const verdictActionSchema = z.enum(['accept', 'tag', 'quarantine', 'reject']);
export type VerdictAction = z.infer<typeof verdictActionSchema>;

export const VERDICT_NAMES = ['spam', 'virus', 'spf', 'dkim', 'dmarc'] as const;
export type VerdictName = (typeof VERDICT_NAMES)[number];

/** What to do when a verdict FAILs. PASS, GRAY, DISABLED and PROCESSING_FAILED always accept. */
export const policiesSchema = z
  .object({
    spam: verdictActionSchema.default('tag'),
    virus: verdictActionSchema.default('quarantine'),
    spf: verdictActionSchema.default('accept'),
    dkim: verdictActionSchema.default('accept'),
    dmarc: verdictActionSchema.default('tag'),
  })
  .strict();
export type Policies = z.infer<typeof policiesSchema>;

const partialPoliciesSchema = z
  .object({
    spam: verdictActionSchema.optional(),
    virus: verdictActionSchema.optional(),
    spf: verdictActionSchema.optional(),
    dkim: verdictActionSchema.optional(),
    dmarc: verdictActionSchema.optional(),
  })
  .strict();

/**
 * `match` is one of: an exact address (`sales@example.com`), a catch-all (`*@example.com`),
 * or a regular expression between slashes (`/^(.+)-team@example\.com$/`), whose groups
 * can be used as `$1`… in `to`.
 */
const matchSchema = z.string().superRefine((value, ctx) => {
  const m = parseMatch(value);
  if (typeof m === 'string') ctx.addIssue({ code: 'custom', message: m });
});

const routeBase = {
  match: matchSchema,
  /** Overrides the top-level verdict policies for mail taking this route. */
  policies: partialPoliciesSchema.optional(),
};

const targetSchema = z
  .string()
  .transform(normalizeAddress)
  .superRefine((s, ctx) => {
    if (isAddress(s) || /\$\d/.test(s)) return;
    ctx.addIssue({
      code: 'custom',
      message: unicodeDomainProblem(s) ?? 'must be an e-mail address (it may use $1… from a regex match)',
    });
  });

export const routeSchema = z.discriminatedUnion('action', [
  z
    .object({
      ...routeBase,
      action: z.literal('deliver'),
      /** Mailboxes, or addresses that other routes resolve further (aliases). */
      to: z.array(targetSchema).min(1),
    })
    .strict(),
  z
    .object({
      ...routeBase,
      action: z.literal('forward'),
      /** External addresses the message is relayed to. */
      to: z.array(targetSchema).min(1),
      /**
       * Forward mail that fails DMARC even when the sender's domain publishes `p=reject`. Off by
       * default: such mail is quarantined instead, since forwarding it under our From would launder
       * a spoof the sender's domain asked everyone to refuse. The route's `dmarc` policy still applies.
       */
      forwardDmarcReject: z.boolean().default(false),
      /**
       * Put in front of the subject of what this route forwards, as written (`"[info] "`), after any
       * verdict tag (`[SPAM] [info] …`): a filter at the destination can tell the route's mail apart,
       * as aws-lambda-ses-forwarder's `subjectPrefix` lets it. One line of printable ASCII, since it
       * goes into the header as it is.
       */
      subjectPrefix: z
        .string()
        .min(1)
        .max(100)
        .regex(/^[\x20-\x7e]*$/, { message: 'must be one line of printable ASCII' })
        .refine((s) => s.trim() !== '', { message: 'must not be only spaces' })
        .optional(),
    })
    .strict(),
  z
    .object({
      ...routeBase,
      action: z.literal('reject'),
      code: z.number().int().min(400).max(599).default(550),
      /**
       * The reply's text, sent as one line. An enhanced status code at its start (RFC 3463) must be of
       * the reply code's class (RFC 2034 §4): `4.x.x` says "try again", `5.x.x` "give up". Default:
       * `<class>.1.1 Recipient address rejected` (a `450` answers `4.1.1 …`, as postfix's does).
       */
      message: z
        .string()
        .min(1)
        .max(400)
        .regex(/^[\x20-\x7e]*$/, {
          message: 'must be one line of printable ASCII (the text of an SMTP reply)',
        })
        .optional(),
    })
    .strict()
    .superRefine((r, ctx) => {
      const enhanced = /^([245])\.\d{1,3}\.\d{1,3}(?:\s|$)/.exec(r.message ?? '');
      if (enhanced && enhanced[1] !== String(r.code)[0]) {
        ctx.addIssue({
          code: 'custom',
          path: ['message'],
          message: `starts with the enhanced code ${enhanced[1]}.x.x, but the reply code is ${r.code} (their first digits must agree)`,
        });
      }
    })
    .transform((r) => ({
      ...r,
      message: r.message ?? `${String(r.code)[0]}.1.1 Recipient address rejected`,
    })),
  z.object({ ...routeBase, action: z.literal('drop') }).strict(),
]);
export type Route = z.infer<typeof routeSchema>;

/** The retention periods CloudWatch Logs accepts (PutRetentionPolicy). */
export const LOG_RETENTION_DAYS: readonly number[] = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

/**
 * AWS-only settings, read by the CDK app at `cdk synth` (lib/, see docs/adr/0006-aws-settings-in-config-file.md).
 * The relay itself (local or in Lambda) ignores them. Defaults are documented on the MailRelay construct props.
 */
export const awsSettingsSchema = z
  .object({
    /** The region to deploy to; it must be one where SES receives mail. Else CDK_DEFAULT_REGION (AWS_REGION). */
    region: z
      .string()
      .regex(/^[a-z]{2}(-gov)?-[a-z]+-\d$/, { message: 'must be an AWS region such as us-east-1' })
      .optional(),
    /** The account to deploy to. Else CDK_DEFAULT_ACCOUNT; absent, the template stays account-agnostic. */
    account: z
      .string()
      .regex(/^\d{12}$/, { message: 'must be a 12-digit AWS account id' })
      .optional(),
    stackName: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9-]{0,127}$/, { message: 'must be a CloudFormation stack name' })
      .optional(),
    /** Route 53 hosted zone id per domain: the stack creates that domain's MX and DKIM records. */
    hostedZoneIds: z
      .record(
        z.string(),
        z.string().regex(/^Z[A-Z0-9]{1,32}$/, { message: 'must be a hosted zone id such as Z0123ABC' }),
      )
      .optional(),
    /** False when the domains are already SES identities in this account and region (created elsewhere). */
    createIdentities: z.boolean().optional(),
    /** Where alarms are e-mailed (an SNS subscription to confirm). */
    alarmEmail: addressSchema.optional(),
    /** Keep the bucket and table when the stack is deleted. */
    retainData: z.boolean().optional(),
    /** Browser origins allowed to call the HTTP API (CORS); absent, CORS stays off. */
    corsOrigins: z
      .array(
        z.string().refine((s) => s === '*' || /^https?:\/\/[a-z0-9.-]+(:\d{1,5})?$/i.test(s), {
          message: 'must be an origin such as https://app.example.com (scheme and host, no path)',
        }),
      )
      .optional(),
    /** The verified address forwarded mail is sent from (SES sends only from verified identities). */
    forwardFrom: addressSchema.optional(),
    /** Activate our receipt rule set even when another one is active (SES allows one per region). */
    replaceActiveRuleSet: z.boolean().optional(),
    /** Deploy to a region missing from the known SES receiving regions (for regions added since). */
    skipRegionCheck: z.boolean().optional(),
    /**
     * At most this many router invocations at once (the SQS event source's maximum concurrency).
     * Bounds the deliveries racing for one mailbox's commit counter and the bounces against SES's
     * one per second; absent, Lambda scales the router with the queue.
     */
    routerConcurrency: z.number().int().min(2).max(1000).optional(),
    /** Days CloudWatch keeps the functions' and the API's logs; one of the values CloudWatch accepts. */
    logRetentionDays: z
      .number()
      .refine((n) => LOG_RETENTION_DAYS.includes(n), {
        message: `must be one of the values CloudWatch Logs accepts: ${LOG_RETENTION_DAYS.join(', ')}`,
      })
      .optional(),
    apiThrottle: z
      .object({ rateLimit: z.number().min(1).max(10000), burstLimit: z.number().int().min(1).max(5000) })
      .strict()
      .optional(),
    /** An SES configuration set (event publishing, dedicated IPs) every send goes through; it must exist. */
    sesConfigurationSet: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, {
        message: 'must be an SES configuration set name (letters, digits, _ and -)',
      })
      .optional(),
  })
  .strict();
export type AwsSettings = z.infer<typeof awsSettingsSchema>;

/** How forwarded and submitted mail leaves (the Outbound port), and what happens when it cannot. */
export const relaySettingsSchema = z
  .object({
    /**
     * Local mode: an SMTP smarthost (`smtp://host:port`, `smtps://user:pass@host:465`) that
     * forwarded mail is handed to. Absent, it is written to the outbox folder (`mail-relay outbox`).
     * Ignored in AWS, where mail leaves through SES.
     */
    smtp: z
      .string()
      .refine((s) => /^smtps?:\/\/[^\s/]+(:\d{1,5})?\/?(\?\S*)?$/i.test(s), {
        message:
          'must be an SMTP URL such as smtp://127.0.0.1:2526 or smtps://user:pass@smtp.example.com:465',
      })
      .optional(),
    /** The verified identity forwarded mail is sent from. Default `forwarder@<first domain>`. */
    fromAddress: addressSchema.optional(),
    /** Forwarded messages larger than this go out as a short notice with a download link instead. */
    maxSendBytes: z.number().int().min(1024).max(DEFAULT_MAX_SEND_BYTES).default(DEFAULT_MAX_SEND_BYTES),
    /** How long the download link of an oversize notice works, in seconds. */
    linkExpirySeconds: z.number().int().min(60).max(MAX_LINK_EXPIRY_SECONDS).default(MAX_LINK_EXPIRY_SECONDS),
    /** Who hears about forwards that failed or were cut as loops. */
    notify: z
      .object({
        /** A mailbox (readable through the API) that receives a notice per failure. Default: `quarantineMailbox`. */
        mailbox: addressSchema.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type RelaySettings = z.infer<typeof relaySettingsSchema>;

export const configSchema = z
  .object({
    $schema: z.string().optional(),
    aws: awsSettingsSchema.optional(),
    relay: relaySettingsSchema.optional(),
    /** The domains we receive mail for. Anything else is refused at RCPT (never an open relay). */
    domains: z.array(domainSchema).min(1),
    /** Mailbox addresses; `*@domain` makes every address of that domain its own mailbox. */
    mailboxes: z.array(z.string()).default([]),
    routes: z.array(routeSchema).default([]),
    /** `user+tag@domain` goes to `user@domain` (the tag is kept on the decision). */
    plusAddressing: z
      .object({ enabled: z.boolean().default(true), separator: z.string().length(1).default('+') })
      .strict()
      .default({ enabled: true, separator: '+' }),
    policies: policiesSchema.default({
      spam: 'tag',
      virus: 'quarantine',
      spf: 'accept',
      dkim: 'accept',
      dmarc: 'tag',
    }),
    /** Where `quarantine` puts mail. Defaults to `quarantine@<first domain>`; not reachable from outside unless listed in `mailboxes`. */
    quarantineMailbox: addressSchema.optional(),
    /**
     * In AWS, mail refused after SES accepted it (a recipient without a mailbox or route, a
     * `reject` route or policy) is bounced to its sender when the sender is authenticated
     * (`authenticated`: SPF, spam and virus verdicts PASS), or never (`off`). See docs/adr/0016.
     */
    bounces: z.enum(['authenticated', 'off']).default('authenticated'),
    maxMessageBytes: z
      .number()
      .int()
      .min(1024)
      .max(DEFAULT_MAX_MESSAGE_BYTES)
      .default(DEFAULT_MAX_MESSAGE_BYTES),
    retention: z
      .object({
        inboundDays: z.number().int().min(1).max(3650).default(DEFAULT_INBOUND_RETENTION_DAYS),
        /** Delete delivered mail after this many days; absent keeps it forever. */
        mailboxDays: z.number().int().min(1).max(36500).optional(),
      })
      .strict()
      .default({ inboundDays: DEFAULT_INBOUND_RETENTION_DAYS }),
  })
  .strict();

export type RawConfig = z.input<typeof configSchema>;

/**
 * Days the originals behind oversize-forward notices (`forwarded/`) are kept: as long as the replay
 * window, and never shorter than the links to them (plus a day). The bucket's lifecycle rule in AWS,
 * `npm start`'s sweep locally.
 */
export function forwardedRetentionDays(config: Pick<Config, 'retention' | 'relay'>): number {
  return Math.max(config.retention.inboundDays, Math.ceil(config.relay.linkExpirySeconds / 86_400) + 1);
}

export type MatchSpec =
  | { kind: 'exact'; address: string }
  | { kind: 'catchAll'; domain: string }
  | { kind: 'regex'; regex: RouteRegex; source: string };

/** Parses a route's `match`; returns a message string when it is not valid. */
export function parseMatch(value: string): MatchSpec | string {
  const v = value.trim();
  if (v.startsWith('/')) {
    const end = v.lastIndexOf('/');
    if (end <= 0) return 'a regex match must look like /pattern/ or /pattern/i';
    const flags = v.slice(end + 1);
    if (!/^[i]*$/.test(flags)) return `regex flag(s) "${flags}" not allowed (only i)`;
    // Addresses are matched in their canonical form, which is ASCII: a non-ASCII character in the
    // pattern (`@münchen\.de`) would never match, and the route would be silently dead.
    if (/[^ -~]/.test(v)) {
      return 'addresses are matched in their ASCII form: write an internationalized domain as xn--… (e.g. münchen.de as xn--mnchen-3ya\\.de); a non-ASCII local part never reaches a route';
    }
    try {
      // Addresses are lower-cased before matching, so `i` is implied; anchors are the user's choice.
      return { kind: 'regex', regex: new RouteRegex(v.slice(1, end)), source: v };
    } catch (err) {
      return `invalid regex: ${(err as Error).message}`;
    }
  }
  const lower = v.toLowerCase();
  if (lower.startsWith('*@')) {
    const domain = lower.slice(2);
    return DOMAIN_RE.test(domain)
      ? { kind: 'catchAll', domain }
      : (unicodeDomainProblem(lower) ?? 'a catch-all must look like *@example.com');
  }
  return isAddress(lower)
    ? { kind: 'exact', address: lower }
    : (unicodeDomainProblem(lower) ?? 'must be an address, *@domain, or /regex/');
}

export interface CompiledRoute {
  readonly index: number;
  readonly route: Route;
  readonly match: MatchSpec;
}

/** A validated configuration, with routes compiled for the router. */
export interface Config {
  readonly domains: readonly string[];
  /** Exact mailbox addresses. */
  readonly mailboxes: ReadonlySet<string>;
  /** Domains where every address is a mailbox (`*@domain` in `mailboxes`). */
  readonly autoMailboxDomains: ReadonlySet<string>;
  readonly routes: readonly CompiledRoute[];
  readonly plusAddressing: { readonly enabled: boolean; readonly separator: string };
  readonly policies: Policies;
  readonly quarantineMailbox: string;
  /** Whether mail refused after acceptance is bounced (AWS; locally it is refused at RCPT). */
  readonly bounces: 'authenticated' | 'off';
  readonly maxMessageBytes: number;
  readonly retention: { readonly inboundDays: number; readonly mailboxDays?: number | undefined };
  readonly relay: RelayConfig;
}

/** `relay` with its defaults resolved. */
export interface RelayConfig {
  /** Local smarthost URL, when configured. */
  readonly smtp?: string | undefined;
  /** The verified identity forwarded mail is sent from (envelope and header From). */
  readonly fromAddress: string;
  readonly maxSendBytes: number;
  readonly linkExpirySeconds: number;
  /** Where failure notices are delivered. */
  readonly notifyMailbox: string;
  /** Our `X-Loop` value: a message arriving with it has been through us already. */
  readonly loopMarker: string;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join('');
}

/**
 * Validates a parsed JSON value as configuration. Throws ConfigError listing every problem,
 * each prefixed with its path (e.g. `routes[2].to[0]: must be an e-mail address`).
 */
export function parseConfig(input: unknown, source = 'configuration'): Config {
  // Without zod's compiled fast path for objects: a configuration is parsed once per process (each
  // Lambda cold start, `npm start`, `cdk synth`), and generating and compiling that code for each of
  // its object schemas costs more than it saves on one parse (about 40% of it; docs/adr/0012).
  const parsed = configSchema.safeParse(input, { jitless: true });
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
    throw new ConfigError(`${source} is invalid`, issues);
  }
  const raw = parsed.data;
  const issues: string[] = [];
  const domains = [...new Set(raw.domains)];
  const inOurDomains = (address: string) => domains.includes(domainOf(address));

  const mailboxes = new Set<string>();
  const autoMailboxDomains = new Set<string>();
  raw.mailboxes.forEach((m, i) => {
    const v = normalizeAddress(m);
    if (v.startsWith('*@')) {
      const d = v.slice(2);
      const hint = unicodeDomainProblem(v);
      if (hint !== null) issues.push(`mailboxes[${i}]: ${hint}`);
      else if (!domains.includes(d)) issues.push(`mailboxes[${i}]: domain "${d}" is not listed in domains`);
      else autoMailboxDomains.add(d);
    } else if (!isAddress(v)) {
      issues.push(`mailboxes[${i}]: ${unicodeDomainProblem(v) ?? 'must be an e-mail address or *@domain'}`);
    } else if (!inOurDomains(v)) {
      issues.push(`mailboxes[${i}]: "${v}" is not in one of the configured domains`);
    } else {
      mailboxes.add(v);
    }
  });

  const quarantineMailbox = raw.quarantineMailbox ?? `quarantine@${domains[0]}`;
  if (!inOurDomains(quarantineMailbox)) {
    issues.push(`quarantineMailbox: "${quarantineMailbox}" is not in one of the configured domains`);
  }

  const routes: CompiledRoute[] = raw.routes.map((route, index) => {
    const match = parseMatch(route.match) as MatchSpec; // validated by the schema
    if (match.kind === 'exact' && !inOurDomains(match.address)) {
      issues.push(`routes[${index}].match: "${match.address}" is not in one of the configured domains`);
    }
    if (match.kind === 'catchAll' && !domains.includes(match.domain)) {
      issues.push(`routes[${index}].match: domain "${match.domain}" is not listed in domains`);
    }
    // A mailbox comes before a catch-all (ADR 3), and there every address is one.
    if (match.kind === 'catchAll' && autoMailboxDomains.has(match.domain)) {
      issues.push(
        `routes[${index}].match: every address of ${match.domain} is a mailbox ("*@${match.domain}" in mailboxes); this route would never be used`,
      );
    }
    // `$n` (n ≥ 1) in a target needs a group n in the regex; otherwise every address the route
    // matches would get an empty part there and be refused at run time.
    if ((route.action === 'deliver' || route.action === 'forward') && 'to' in route) {
      const groups = match.kind === 'regex' ? match.regex.groupCount + 1 : 1;
      route.to.forEach((t, j) => {
        for (const m of t.matchAll(/\$(\d)/g)) {
          const n = Number(m[1]);
          if (n === 0) continue; // the whole address, for every kind of match
          if (n >= groups) {
            issues.push(
              match.kind === 'regex'
                ? `routes[${index}].to[${j}]: "$${n}" but the regex has ${groups - 1} group(s)`
                : `routes[${index}].to[${j}]: "$${n}" is only for routes whose match is a /regex/`,
            );
          }
        }
      });
    }
    if (route.action === 'forward') {
      route.to.forEach((t, j) => {
        if (isAddress(t) && inOurDomains(t)) {
          issues.push(
            `routes[${index}].to[${j}]: "${t}" is one of our own domains; forwarding to it would loop (use "deliver")`,
          );
        }
      });
    }
    if (route.action === 'deliver') {
      route.to.forEach((t, j) => {
        if (isAddress(t) && !inOurDomains(t)) {
          issues.push(
            `routes[${index}].to[${j}]: "${t}" is outside our domains; use "forward" for external addresses`,
          );
        }
      });
    }
    return { index, route, match };
  });

  const relayRaw = raw.relay;
  const fromAddress = relayRaw?.fromAddress ?? raw.aws?.forwardFrom ?? `forwarder@${domains[0]}`;
  if (!inOurDomains(fromAddress)) {
    issues.push(
      `${relayRaw?.fromAddress ? 'relay.fromAddress' : 'aws.forwardFrom'}: "${fromAddress}" is not in one of the configured domains (SES sends only from verified identities)`,
    );
  }
  if (relayRaw?.fromAddress && raw.aws?.forwardFrom && relayRaw.fromAddress !== raw.aws.forwardFrom) {
    issues.push(
      `relay.fromAddress: "${relayRaw.fromAddress}" differs from aws.forwardFrom "${raw.aws.forwardFrom}"; set one of them`,
    );
  }
  // Bounces of forwarded mail (and SES's feedback) come back to the sending address; a forward of it
  // would send each bounce to where it bounced (forward.ts cuts one a catch-all or regex makes).
  for (const r of routes) {
    if (r.route.action === 'forward' && r.match.kind === 'exact' && r.match.address === fromAddress) {
      issues.push(
        `routes[${r.index}].match: "${fromAddress}" is the address forwarded mail is sent from (relay.fromAddress), where bounces of forwarded mail arrive; forwarding it would loop (give relay.fromAddress an address of its own, such as forwarder@${domainOf(fromAddress)})`,
      );
    }
  }
  const notifyMailbox = relayRaw?.notify?.mailbox ?? quarantineMailbox;
  if (!inOurDomains(notifyMailbox)) {
    issues.push(`relay.notify.mailbox: "${notifyMailbox}" is not in one of the configured domains`);
  }
  const relay: RelayConfig = {
    smtp: relayRaw?.smtp,
    fromAddress,
    maxSendBytes: relayRaw?.maxSendBytes ?? DEFAULT_MAX_SEND_BYTES,
    linkExpirySeconds: relayRaw?.linkExpirySeconds ?? MAX_LINK_EXPIRY_SECONDS,
    notifyMailbox,
    loopMarker: fromAddress,
  };

  const config: Config = {
    domains,
    mailboxes,
    autoMailboxDomains,
    routes,
    plusAddressing: raw.plusAddressing,
    policies: raw.policies,
    quarantineMailbox,
    bounces: raw.bounces,
    maxMessageBytes: raw.maxMessageBytes,
    retention: raw.retention,
    relay,
  };
  issues.push(...findAliasProblems(config));
  if (issues.length > 0) throw new ConfigError(`${source} is invalid`, issues);
  return config;
}

/**
 * The addresses routing tries for `address`, in order: itself, then (plus-addressing on) the address
 * without its `+tag`.
 */
export interface Candidate {
  readonly address: string;
  /** The `+tag` removed to make `address`, if any. */
  readonly plusTag?: string | undefined;
}

export function candidatesFor(config: Pick<Config, 'plusAddressing'>, address: string): Candidate[] {
  const out: Candidate[] = [{ address }];
  const { enabled, separator } = config.plusAddressing;
  if (enabled) {
    const at = address.lastIndexOf('@');
    const local = address.slice(0, at);
    const plus = local.indexOf(separator);
    if (plus > 0) {
      out.push({ address: `${local.slice(0, plus)}${address.slice(at)}`, plusTag: local.slice(plus + 1) });
    }
  }
  return out;
}

/**
 * Refuses, at config time, what can only be a mistake: an exact route shadowed by an earlier one for
 * the same address (or a second catch-all for a domain), an alias that points to itself, a cycle of
 * aliases or a chain longer than MAX_ALIAS_DEPTH, and deliver targets that lead nowhere (of every
 * kind of route; targets with `$n` depend on the recipient and are checked at run time).
 */
function findAliasProblems(config: Config): string[] {
  const problems: string[] = [];
  const exact = new Map<string, CompiledRoute>();
  const catchAlls = new Map<string, CompiledRoute>();
  for (const r of config.routes) {
    const { match } = r;
    const [seen, key] =
      match.kind === 'exact'
        ? [exact, match.address]
        : match.kind === 'catchAll'
          ? [catchAlls, match.domain]
          : [];
    if (!seen || key === undefined) continue;
    const earlier = seen.get(key);
    if (earlier) {
      problems.push(
        `routes[${r.index}].match: "${r.route.match}" is matched by routes[${earlier.index}] already (addresses are case-insensitive); this route would never be used`,
      );
    } else {
      seen.set(key, r);
    }
  }
  const isMailbox = (a: string) => config.mailboxes.has(a) || config.autoMailboxDomains.has(domainOf(a));
  /** What routing takes `a` to first (precedence as in routing.ts): a mailbox, a route, or nothing. */
  const takenBy = (a: string): CompiledRoute | 'mailbox' | undefined =>
    exact.get(a) ??
    (isMailbox(a) ? 'mailbox' : undefined) ??
    config.routes.find((r) => r.match.kind === 'regex' && r.match.regex.exec(a) !== null) ??
    catchAlls.get(domainOf(a));
  // As routing tries it: the address, then without its `+tag`. A target only the naming route itself
  // takes (a catch-all's typo) would come back to it: a loop at run time.
  const leadsSomewhere = (t: string, from: CompiledRoute) =>
    t === config.quarantineMailbox ||
    candidatesFor(config, t).some((c) => {
      const by = takenBy(c.address);
      // `alice@ -> [alice@, …]` where alice@ is a mailbox: the route delivers to the mailbox it names.
      return by === from ? isMailbox(c.address) : by !== undefined;
    });

  for (const start of exact.values()) {
    if (start.route.action !== 'deliver') continue;
    // Depth-first walk over exact aliases, looking for a way back to a node on the current path, or
    // a path longer than routing follows.
    // The routes' addresses on the current path, and how each was written as a target.
    const path: string[] = [];
    const shown: string[] = [];
    const visit = (target: string): string | null => {
      // As routing takes a target: an exact route of the address, else of the address without its
      // `+tag` (`alice@ -> [alice+inbox@]` comes back to alice@'s own route).
      const address = candidatesFor(config, target).find((c) => exact.has(c.address))?.address ?? target;
      const label = address === target ? target : `${target} (${address}'s route)`;
      if (path.includes(address)) return `alias loop ${[...shown, label].join(' -> ')}`;
      const r = exact.get(address);
      if (r?.route.action !== 'deliver') return null;
      // `alice@ -> [alice@, …]` where alice@ is a mailbox: the route also delivers to the mailbox it names.
      const onward = r.route.to.filter((t) => !(t === address && isMailbox(t)));
      if (onward.length > 0 && path.length >= MAX_ALIAS_DEPTH) {
        return `alias chain longer than ${MAX_ALIAS_DEPTH} aliases (routing stops there): ${[...shown, label].join(' -> ')}`;
      }
      path.push(address);
      shown.push(label);
      for (const t of onward) {
        const found = visit(t);
        if (found) return found;
      }
      path.pop();
      shown.pop();
      return null;
    };
    const found = visit(start.match.kind === 'exact' ? start.match.address : '');
    if (found) problems.push(`routes[${start.index}].to: ${found}`);
  }
  for (const r of config.routes) {
    if (r.route.action !== 'deliver') continue;
    r.route.to.forEach((t, j) => {
      if (!t.includes('$') && isAddress(t) && !leadsSomewhere(t, r)) {
        problems.push(`routes[${r.index}].to[${j}]: "${t}" is neither a mailbox nor routed by another route`);
      }
    });
  }
  return [...new Set(problems)];
}

/** The configuration `npm start` uses when no file exists: every address at example.test is a mailbox. */
export const DEV_DEFAULT_CONFIG: RawConfig = {
  domains: ['example.test'],
  mailboxes: ['*@example.test'],
  routes: [],
};
