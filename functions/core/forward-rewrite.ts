/**
 * Rewrites a received message so SES will send it on, and so the receiving side (Gmail, …)
 * accepts it: SES sends only from verified identities, and a From of someone else's domain
 * would fail that domain's DMARC at the destination. Only the header block is edited, as bytes;
 * the body is carried over untouched (8-bit and binary MIME included). Pure: no I/O.
 *
 * What changes:
 * - `From` becomes `"<original name> via <domain>" <forwarder@domain>`; the original goes to
 *   `X-Original-From` and, unless the message has one, to `Reply-To`, so replies reach the sender.
 * - Removed: `Return-Path`, `Sender` (SES sets its own, and they must be verified identities),
 *   every `DKIM-Signature` / `DomainKey-Signature` (broken by the From change, and SES refuses
 *   duplicates), `X-SES-*` (SES reads some of them as sending instructions: configuration set,
 *   tags, ARNs; a sender must not choose ours), `Bcc`, and any `X-Mail-Relay-*` (only we set those).
 * - Fields SES accepts only once keep their first occurrence
 *   (https://docs.aws.amazon.com/ses/latest/dg/header-fields.html).
 * - Added on top: `X-Loop` (our marker, to cut loops), `X-Forwarded-For` / `X-Forwarded-To`
 *   (the address it was sent to and where it went), `X-Original-From`, and for tagged mail
 *   `X-Mail-Relay-Verdict` plus a subject prefix; the route's `subjectPrefix` after that; a `Date`
 *   and a `Message-ID` when it has none.
 */
import { canonicalLocalPart, type VerdictName } from './config.ts';
import {
  cleanDisplayText,
  decodeHeaderText,
  encodePhrase,
  fieldValue,
  findField,
  type HeaderField,
  joinMessage,
  makeField,
  type ParsedAddress,
  parseAddressList,
  rawFieldValue,
  rfc5322Date,
  type SplitMessage,
  splitMessage,
} from './mime-header.ts';
import type { Verdicts } from './routing.ts';

/**
 * More `Received:` fields than this and we do not forward: the message is going round in circles.
 * RFC 5321 §6.3 asks a server that *rejects* on a hop count to use a large threshold (≥ 100);
 * we never reject for it (the message is kept and the owner told), so we stop earlier, at
 * Postfix's default `hopcount_limit`. https://www.rfc-editor.org/rfc/rfc5321#section-6.3
 */
export const MAX_FORWARD_HOPS = 50;

/** Header fields removed from every forwarded message (lower case); see the module comment. */
const STRIPPED = new Set(['return-path', 'sender', 'dkim-signature', 'domainkey-signature', 'bcc']);
const STRIPPED_PREFIXES = ['x-ses-', 'x-mail-relay-'];

/** Fields SES refuses to see twice (https://docs.aws.amazon.com/ses/latest/dg/header-fields.html). */
export const SES_SINGLE_FIELDS: ReadonlySet<string> = new Set(
  [
    'Accept-Language',
    'acceptLanguage',
    'Archived-At',
    'Auto-Submitted',
    'Bounces-to',
    'Comments',
    'Content-Alternative',
    'Content-Base',
    'Content-Class',
    'Content-Description',
    'Content-Disposition',
    'Content-Duration',
    'Content-ID',
    'Content-Language',
    'Content-Length',
    'Content-Location',
    'Content-MD5',
    'Content-Transfer-Encoding',
    'Content-Type',
    'Date',
    'Delivered-To',
    'Disposition-Notification-Options',
    'Disposition-Notification-To',
    'DKIM-Signature',
    'DomainKey-Signature',
    'Errors-To',
    'From',
    'Importance',
    'In-Reply-To',
    'Keywords',
    'List-Archive',
    'List-Help',
    'List-Id',
    'List-Owner',
    'List-Post',
    'List-Subscribe',
    'List-Unsubscribe',
    'List-Unsubscribe-Post',
    'Message-Context',
    'Message-ID',
    'MIME-Version',
    'Organization',
    'Original-From',
    'Original-Message-ID',
    'Original-Recipient',
    'Original-Subject',
    'Precedence',
    'Priority',
    'References',
    'Reply-To',
    'Return-Path',
    'Return-Receipt-To',
    'Sender',
    'Solicitation',
    'Sensitivity',
    'Subject',
    'Thread-Index',
    'Thread-Topic',
    'User-Agent',
    'VBR-Info',
  ].map((n) => n.toLowerCase()),
);

/** The subject prefix for each tagged verdict. */
export const TAG_PREFIX: Readonly<Record<VerdictName, string>> = {
  spam: '[SPAM]',
  virus: '[VIRUS]',
  spf: '[SPF-FAIL]',
  dkim: '[DKIM-FAIL]',
  dmarc: '[DMARC-FAIL]',
};

export interface ForwardRewriteOptions {
  /** The verified identity the message is sent from (`forwarder@example.com`). */
  readonly fromAddress: string;
  /** The address the message was sent to (`boss@example.com`). */
  readonly recipient: string;
  /** Where it is forwarded (`boss.private@gmail.com`). */
  readonly destination: string;
  /** Our `X-Loop` value; a message already carrying it is not forwarded again. */
  readonly loopMarker: string;
  /** The envelope sender: the Reply-To of last resort when the message has no usable From. */
  readonly envelopeFrom: string;
  /** Verdicts whose policy is `tag`: a subject prefix and `X-Mail-Relay-Verdict`. */
  readonly tags: readonly VerdictName[];
  /** The route's own subject prefix (`subjectPrefix`), put in front as written, after the verdict tags. */
  readonly subjectPrefix?: string | undefined;
  readonly verdicts?: Verdicts | undefined;
  /**
   * Added when the message has no `Date` / `Message-ID` (RFC 5322 §3.6: Date is required, Message-ID
   * should be there; Gmail refuses mail without one): its receipt time, and an id of ours.
   */
  readonly missing?: { readonly date: Date; readonly messageId: string } | undefined;
}

export interface ForwardRewrite {
  readonly raw: Buffer;
  /** The first From mailbox of the original, when it had a readable one. */
  readonly originalFrom: ParsedAddress | null;
  /** The display name put in the new From (without the quotes). */
  readonly displayName: string;
  /** The new From header value, as written. */
  readonly from: string;
  /** The Reply-To the forwarded message carries (as written), or null. */
  readonly replyTo: string | null;
  /** The decoded original subject, or null when there is none. */
  readonly subject: string | null;
}

export type LoopCheck =
  | { readonly loop: false; readonly hops: number }
  | { readonly loop: true; readonly reason: 'x-loop' | 'hops'; readonly hops: number };

/**
 * Why mail for `relay.fromAddress` is not forwarded (the notice says it, and `mail-relay route`): what
 * arrives there is what comes back from forwards (bounces, SES's feedback), with none of our headers
 * on top, so nothing else would stop the loop.
 */
export const SENDING_ADDRESS_REASON = (address: string) =>
  `${address} is the address forwarded mail is sent from, where bounces of forwarded mail arrive; forwarding them would send each bounce back to where it bounced`;

/** Whether a message must not be forwarded: it carries our X-Loop, or has too many hops. */
export function checkLoop(message: Buffer | SplitMessage, loopMarker: string): LoopCheck {
  const split = Buffer.isBuffer(message) ? splitMessage(message) : message;
  const hops = split.fields.filter((f) => f.key === 'received').length;
  const marker = loopMarker.toLowerCase();
  const ours = split.fields.some((f) => f.key === 'x-loop' && fieldValue(f).trim().toLowerCase() === marker);
  if (ours) return { loop: true, reason: 'x-loop', hops };
  if (hops > MAX_FORWARD_HOPS) return { loop: true, reason: 'hops', hops };
  return { loop: false, hops };
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

function isStripped(key: string): boolean {
  return STRIPPED.has(key) || STRIPPED_PREFIXES.some((p) => key.startsWith(p));
}

/** `"Alice Example via example.com"`: who wrote it, and that it came through us. */
export function forwardDisplayName(
  original: ParsedAddress | null,
  envelopeFrom: string,
  domain: string,
): string {
  const who = cleanDisplayText(original?.name || original?.address || envelopeFrom || 'unknown sender', 150);
  return `${who} via ${domain}`;
}

/**
 * A subject value (raw or decoded) with the verdict tags (`[SPAM]`, each run of them followed by a space)
 * and then the route's own prefix in front. The route's prefix is put as written (`"[info] "`), as
 * aws-lambda-ses-forwarder puts its `subjectPrefix`, with a space added only before an encoded word,
 * which RFC 2047 §5 wants separated from other text (`[info]=?UTF-8?B?…?=` would show undecoded).
 */
export function prefixSubject(value: string, tags: readonly VerdictName[], routePrefix = ''): string {
  const verdicts = tags.map((t) => TAG_PREFIX[t]).join('');
  const spaced = routePrefix !== '' && !/[ \t]$/.test(routePrefix) && value.startsWith('=?');
  const routed = `${routePrefix}${spaced ? ' ' : ''}${value}`;
  return verdicts === '' ? routed : `${verdicts} ${routed}`;
}

function verdictValue(verdicts: Verdicts | undefined, tags: readonly VerdictName[]): string {
  const parts: string[] = [];
  if (verdicts) {
    for (const name of ['spam', 'virus', 'spf', 'dkim', 'dmarc'] as const) {
      parts.push(`${name}=${String(verdicts[name]).replace(/[^\w-]/g, '')}`);
    }
    if (verdicts.dmarcPolicy) parts.push(`dmarc-policy=${verdicts.dmarcPolicy.replace(/[^\w-]/g, '')}`);
  }
  parts.push(`tagged=${tags.join(',')}`);
  return parts.join('; ');
}

/**
 * Whether an envelope sender can be written as a Reply-To address: a local part without space or
 * brackets (UTF-8 included, as SMTPUTF8 carries it), or a well-formed quoted one (`"john doe"`,
 * RFC 5321 §4.1.2), then a domain. `''` (a bounce) cannot.
 */
function replyableEnvelope(envelopeFrom: string): boolean {
  const at = envelopeFrom.lastIndexOf('@');
  if (at <= 0 || !/^[^\s<>@]+$/.test(envelopeFrom.slice(at + 1))) return false;
  const local = envelopeFrom.slice(0, at);
  return /^[^\s<>@"]+$/.test(local) || canonicalLocalPart(local) !== null;
}

/** The message as it is forwarded. Throws nothing for odd input: a message without headers gets ours. */
export function rewriteForForward(raw: Buffer, options: ForwardRewriteOptions): ForwardRewrite {
  const split = splitMessage(raw);
  const { eol } = split;
  const fromField = findField(split.fields, 'from');
  const originalFrom = fromField ? (parseAddressList(fieldValue(fromField))[0] ?? null) : null;
  const hasReplyTo = findField(split.fields, 'reply-to') !== undefined;
  const subjectField = findField(split.fields, 'subject');
  const subject = subjectField ? decodeHeaderText(fieldValue(subjectField)) : null;
  const domain = domainOf(options.fromAddress);

  const displayName = forwardDisplayName(originalFrom, options.envelopeFrom, domain);
  const from = `${encodePhrase(displayName, eol)} <${options.fromAddress}>`;

  let replyTo: string | null = null;
  const added: HeaderField[] = [makeField('X-Loop', options.loopMarker, eol)];
  added.push(makeField('X-Forwarded-For', `${options.recipient} ${options.destination}`, eol));
  added.push(makeField('X-Forwarded-To', options.destination, eol));
  // The original value as written (folding, encoded words, 8-bit bytes and all): nothing is lost, also
  // when it names no address (`Undisclosed recipients:;`), since our From replaces it.
  const original = fromField ? rawFieldValue(fromField).replace(/^[ \t]+/, '') : '';
  if (original.trim() !== '') {
    added.push({
      name: 'X-Original-From',
      key: 'x-original-from',
      raw: `X-Original-From: ${original}${eol}`,
    });
  }
  if (fromField && originalFrom) {
    if (!hasReplyTo) {
      replyTo = original;
      added.push({ name: 'Reply-To', key: 'reply-to', raw: `Reply-To: ${original}${eol}` });
    }
  } else if (!hasReplyTo && replyableEnvelope(options.envelopeFrom)) {
    replyTo = `<${options.envelopeFrom}>`;
    added.push(makeField('Reply-To', replyTo, eol));
  }
  if (options.tags.length > 0) {
    added.push(makeField('X-Mail-Relay-Verdict', verdictValue(options.verdicts, options.tags), eol));
  }
  const routePrefix = options.subjectPrefix ?? '';
  const prefixes = options.tags.length > 0 || routePrefix !== '';

  const seen = new Set<string>();
  const kept: HeaderField[] = [];
  let fromDone = false;
  let subjectDone = false;
  for (const f of split.fields) {
    if (isStripped(f.key)) continue;
    if (SES_SINGLE_FIELDS.has(f.key)) {
      if (seen.has(f.key)) continue;
      seen.add(f.key);
    }
    if (f.key === 'from') {
      kept.push(makeField('From', from, eol));
      fromDone = true;
    } else if (f.key === 'subject' && prefixes) {
      const value = rawFieldValue(f).replace(/^[ \t]+/, '');
      kept.push({
        name: f.name,
        key: f.key,
        raw: `${f.name}: ${prefixSubject(value, options.tags, routePrefix)}${eol}`,
      });
      subjectDone = true;
    } else {
      kept.push(f);
    }
  }
  if (!fromDone) kept.unshift(makeField('From', from, eol));
  if (options.missing !== undefined) {
    if (!kept.some((f) => f.key === 'date'))
      kept.push(makeField('Date', rfc5322Date(options.missing.date), eol));
    if (!kept.some((f) => f.key === 'message-id'))
      kept.push(makeField('Message-ID', options.missing.messageId, eol));
  }
  if (!subjectDone && prefixes && subjectField === undefined)
    kept.push(makeField('Subject', prefixSubject('', options.tags, routePrefix).trimEnd(), eol));

  return {
    raw: joinMessage({ eol, fields: [...added, ...kept], separator: split.separator, body: split.body }),
    originalFrom,
    displayName,
    from,
    replyTo,
    subject,
  };
}
