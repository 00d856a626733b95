/**
 * The router: one SES "Received" notification in, every decision carried out through the ports.
 * The Lambda router handler and the local SMTP listener both call `processNotification`.
 *
 * Order of writes for a delivery (see docs/adr/0002-idempotent-delivery.md): the blobs first
 * (raw copy, parsed summary, decoded parts; all idempotent overwrites of the same bytes), the
 * index last. The index insert is the commit point, conditional on the id, so a retried
 * notification recomputes the same id and changes nothing.
 */
import { type Config, normalizeAddress, type VerdictName } from '../core/config.ts';
import { MailRelayError, NotFoundError } from '../core/errors.ts';
import { messageIdFor, recipientSetId } from '../core/ids.ts';
import { mailboxKeys, type StoredSummary } from '../core/keys.ts';
import { clipText, ENTRY_TEXT_MAX_CHARS, type ParseResult, partBody, snippetOf } from '../core/message.ts';
import { crlfSize } from '../core/mime-header.ts';
import { notificationJson, type SesReceivedNotification, verdictsOf } from '../core/notification.ts';
import { type Decision, route, UNCHECKED_VERDICTS, type Verdicts } from '../core/routing.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { Bouncer } from '../ports/bouncer.ts';
import type { MailParser } from '../ports/mail-parser.ts';
import type { MailboxIndex, MessageEntry, ParsedEntryFields } from '../ports/mailbox-index.ts';
import type { Outbound } from '../ports/outbound.ts';
import { bounceRejections } from './bounce.ts';
import { type ForwardOptions, forwardMessage, forwardRouteOf } from './forward.ts';

// Re-exported so existing importers keep working; the definitions live in core/keys.ts.
export { mailboxKeys, type StoredSummary } from '../core/keys.ts';

export interface RouterDeps {
  readonly config: Config;
  readonly blobs: BlobStore;
  readonly index: MailboxIndex;
  readonly parser: MailParser;
  /** Where `forward` decisions go. */
  readonly outbound: Outbound;
  /** Link signing, clock and retry pacing for forwards (see forward.ts); defaults suit production. */
  readonly forwarding?: ForwardOptions | undefined;
  /**
   * Where refusals of mail already accepted go back to the sender (AWS: SES SendBounce). Absent
   * locally, where the listener refuses at RCPT (bounce.ts).
   */
  readonly bouncer?: Bouncer | undefined;
}

/** `failed`: a forward that could not be sent (recorded, owner notified); `looped`: a forward cut as a loop. */
export type OutcomeStatus =
  | 'delivered'
  | 'duplicate'
  | 'quarantined'
  | 'forwarded'
  | 'rejected'
  | 'dropped'
  | 'failed'
  | 'looped';

export interface Outcome {
  readonly decision: Decision;
  readonly status: OutcomeStatus;
  /**
   * For forwards: `oversize-notice`, the failure, or why it was a loop or duplicate. For refusals
   * where a bouncer is configured: whether and how the sender was told (`bounced as <id>`, `not
   * bounced: <why>`, `bounce failed: <error>`).
   */
  readonly detail?: string | undefined;
}

export interface RouteResult {
  readonly sesMessageId: string;
  /** The id the message has in every mailbox it was delivered to. */
  readonly id: string;
  readonly size: number;
  readonly parseFailed: boolean;
  readonly outcomes: readonly Outcome[];
}

/** The raw message named by the notification is not in the blob store (yet): retry later. */
export class MissingRawMessageError extends MailRelayError {
  constructor(key: string) {
    super('raw_message_missing', `raw message ${key} not found in the blob store`);
  }
}

/**
 * Where the router keeps each notification it processed: SES stores only the raw message, and the
 * envelope (recipients, verdicts) is needed to replay it. Same retention as `inbound/`.
 *
 * One message can have several notifications: where the receipt rules list addresses (100 per rule),
 * a message to addresses of two rules is stored once and notified by each rule with its own
 * recipients. The key names the recipient set, so one does not overwrite the other and `replay`
 * routes both (`notifications/<sesMessageId>.json` is what earlier versions wrote; replay reads any).
 */
export const NOTIFICATIONS_PREFIX = 'notifications/';
export function notificationKey(notification: {
  readonly mail: { readonly messageId: string };
  readonly receipt: { readonly recipients: readonly string[] };
}): string {
  return `${NOTIFICATIONS_PREFIX}${notification.mail.messageId}.${recipientSetId(notification.receipt.recipients)}.json`;
}

export interface ProcessOptions {
  /** The raw bytes when the caller already holds them (local listener), to skip a read. */
  readonly raw?: Buffer;
  /** A parse the caller already made of exactly these bytes, to parse once. */
  readonly parsed?: ParseResult;
  /** Set by `replay`: the notification is already stored. */
  readonly replay?: boolean;
  /**
   * Set by the local journal's recovery: write every blob again even where the index entry exists.
   * A delivery's index commit can reach the disk before its blob files do (they are synced only at
   * the checkpoint), so after a crash an entry may name blobs that were lost; the rewrite restores
   * them (same bytes, idempotent) and the entry itself is left as it is.
   */
  readonly rewriteBlobs?: boolean;
  /**
   * Set by the local listener for a notification it built just now around a new SES message id: no
   * mailbox can hold an entry with its id yet, so the index is not asked before writing.
   */
  readonly fresh?: boolean;
  /**
   * Set by the local listener, which has the raw bytes and plays SES's part: store them at the
   * notification's object key too, with the router's own writes (one group commit locally).
   */
  readonly storeRaw?: boolean;
  /**
   * Set by the local listener: resolves once its journal record of this message is durable. The
   * router parses meanwhile, but stores the notification and carries out no decision (no mailbox
   * entry, no forward) before it, so nothing that names the message exists unless it can be
   * recovered; if it rejects, the router stops with its error.
   */
  readonly durable?: Promise<unknown>;
  /**
   * Set by `replay --restore-deleted` and `import --restore-deleted`: deliver again what was
   * delivered and then deleted (the index remembers deletions for a while so that, by default,
   * deleted mail stays deleted).
   */
  readonly restoreDeleted?: boolean;
}

/**
 * Awaits every promise, then throws the first rejection: no write is left running (or unobserved)
 * when the caller moves on to its commit point.
 */
export async function allWritten(writes: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(writes);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** Mailbox deliveries of one message made at once, after its first (see processNotification). */
export const DELIVERY_CONCURRENCY = 8;

/**
 * `work` on each item, at most `limit` at once. After a failure no further item is started, and the
 * first failure is thrown once every started one has settled: nothing of the message is still being
 * written when the caller learns of it (a local `ingest` then withdraws what was delivered).
 */
async function eachAtOnce<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { readonly error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.error;
}

export async function processNotification(
  deps: RouterDeps,
  notification: SesReceivedNotification,
  options: ProcessOptions = {},
): Promise<RouteResult> {
  const { mail, receipt } = notification;
  // Awaited after the parse; observed now, so a failure meanwhile is not an unhandled rejection.
  options.durable?.catch(() => undefined);
  const verdicts = verdictsOf(notification);
  const decisions = route(deps.config, { mailFrom: mail.source, recipients: receipt.recipients }, verdicts);
  const receivedAt = new Date(mail.timestamp);
  const id = messageIdFor(receivedAt.getTime(), mail.messageId);

  const needsRaw = decisions.some(
    (d) => d.kind === 'deliver' || d.kind === 'quarantine' || d.kind === 'forward',
  );
  let raw = options.raw ?? null;
  if (!raw && needsRaw) {
    raw = await deps.blobs.get(receipt.action.objectKey);
    if (!raw) throw new MissingRawMessageError(receipt.action.objectKey);
  }
  const size = raw?.length ?? 0;

  const needsParse = decisions.some((d) => d.kind === 'deliver' || d.kind === 'quarantine');
  const parsed: ParseResult | null =
    needsParse && raw ? (options.parsed ?? (await deps.parser.parse(raw))) : (options.parsed ?? null);
  const parseFailed = parsed !== null && !parsed.ok;
  if (options.durable !== undefined) await options.durable;
  // Issued together with the first delivery's writes (none of them awaits another), so a message
  // costs one group commit locally and one round of parallel requests to S3; every one of them is
  // done before the first index entry, and before any forward.
  const received: Promise<unknown>[] = [];
  if (options.storeRaw === true && raw !== null) {
    received.push(deps.blobs.put(receipt.action.objectKey, raw, { contentType: 'message/rfc822' }));
  }
  if (!options.replay) {
    received.push(
      deps.blobs.put(notificationKey(notification), Buffer.from(notificationJson(notification)), {
        contentType: 'application/json',
      }),
    );
  }
  const stored = allWritten(received);
  // Observed at once: a failure is thrown by whichever await below comes first, never unhandled.
  stored.catch(() => undefined);

  // By decision, in the order routing made them.
  const outcomes: Outcome[] = new Array(decisions.length);
  // The first mailbox's raw copy links `inbound/` and its parts are written from memory; later
  // mailboxes get server-side copies of the first one's.
  let firstCopy: string | null = null;
  // Mailboxes first, forwards after: a forward that cannot go now (another router's claim on it, an
  // outage) fails the record for a retry, and the mail for our own mailboxes must not wait with it.
  const order = decisions.map((_, i) => i);
  order.sort((a, b) => Number(decisions[a]?.kind === 'forward') - Number(decisions[b]?.kind === 'forward'));
  const deliverAt = async (at: number): Promise<void> => {
    const decision = decisions[at] as Decision;
    if (decision.kind !== 'deliver' && decision.kind !== 'quarantine') return;
    if (!raw || !parsed) throw new Error('unreachable: delivery without raw bytes or parse');
    const delivery = await deliverToMailbox(deps, {
      mailbox: decision.mailbox,
      id,
      raw,
      parsed,
      firstCopy,
      rawSource: receipt.action.objectKey,
      rewriteBlobs: options.rewriteBlobs === true,
      fresh: options.fresh === true,
      restoreDeleted: options.restoreDeleted === true,
      stored,
      entry: {
        receivedAt: receivedAt.toISOString(),
        verdicts,
        tags: decision.kind === 'deliver' ? decision.tags : [],
        quarantineReasons: decision.kind === 'quarantine' ? decision.reasons : undefined,
        recipient: decision.recipient,
        plusTag: decision.plusTag,
        sesMessageId: mail.messageId,
      },
    });
    // Later mailboxes copy this one's blobs, which a deleted message no longer has.
    if (delivery !== 'deleted') firstCopy ??= decision.mailbox;
    if (delivery === 'delivered') {
      outcomes[at] = { decision, status: decision.kind === 'quarantine' ? 'quarantined' : 'delivered' };
    } else {
      outcomes[at] = {
        decision,
        status: 'duplicate',
        ...(delivery === 'deleted' ? { detail: 'delivered before and deleted since' } : {}),
      };
    }
  };
  // One at a time until a mailbox holds the message's blobs (the first writes them from memory, the
  // others copy its blobs), then the others together, DELIVERY_CONCURRENCY at a time: a message to a
  // team of mailboxes costs about one delivery's round trips in AWS, and shares one group commit
  // locally, instead of one after another.
  const deliveries = order.filter((at) => {
    const kind = decisions[at]?.kind;
    return kind === 'deliver' || kind === 'quarantine';
  });
  let next = 0;
  while (next < deliveries.length && firstCopy === null) await deliverAt(deliveries[next++] as number);
  // A mailbox routed to twice (delivered, and quarantined for another recipient) gets its second
  // decision after the first has committed, as one after another did: the first decides its entry.
  const together: number[] = [];
  const repeats: number[] = [];
  const mailboxes = new Set<string>();
  for (const at of deliveries.slice(next)) {
    const mailbox = (decisions[at] as Decision & { mailbox: string }).mailbox;
    (mailboxes.has(mailbox) ? repeats : together).push(at);
    mailboxes.add(mailbox);
  }
  await eachAtOnce(together, DELIVERY_CONCURRENCY, deliverAt);
  for (const at of repeats) await deliverAt(at);
  for (const at of order) {
    const decision = decisions[at] as Decision;
    switch (decision.kind) {
      case 'deliver':
      case 'quarantine':
        break; // above
      case 'forward': {
        if (!raw) throw new Error('unreachable: forward without raw bytes');
        await stored;
        const forwarded = await forwardMessage(deps, {
          recipient: decision.recipient,
          destination: normalizeAddress(decision.to),
          tags: decision.tags,
          subjectPrefix: forwardRouteOf(deps.config, decision.routeIndex)?.subjectPrefix,
          id,
          sesMessageId: mail.messageId,
          raw,
          inboundKey: receipt.action.objectKey,
          mailFrom: mail.source,
          verdicts,
          deliverNotice: (mailbox, noticeRaw, noticeSesId) =>
            deliverNotice(deps, mailbox, noticeRaw, noticeSesId, receivedAt, options.rewriteBlobs === true),
        });
        outcomes[at] = { decision, status: forwarded.status, detail: forwarded.detail };
        break;
      }
      case 'reject':
        outcomes[at] = { decision, status: 'rejected' };
        break;
      case 'drop':
        outcomes[at] = { decision, status: 'dropped' };
        break;
    }
  }
  await stored;
  const rejections = decisions.filter((d) => d.kind === 'reject');
  if (rejections.length > 0 && deps.bouncer !== undefined && deps.config.bounces !== 'off') {
    const details = await bounceRejections(
      { bouncer: deps.bouncer, index: deps.index, config: deps.config },
      { sesMessageId: mail.messageId, mailFrom: mail.source, verdicts, receivedAt, rejections },
    );
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i];
      if (o?.decision.kind === 'reject') outcomes[i] = { ...o, detail: details.get(o.decision.recipient) };
    }
  }
  return { sesMessageId: mail.messageId, id, size, parseFailed, outcomes };
}

export interface EntryFields {
  readonly receivedAt: string;
  readonly verdicts: Verdicts;
  readonly tags: readonly VerdictName[];
  readonly quarantineReasons: readonly VerdictName[] | undefined;
  readonly recipient: string;
  readonly plusTag: string | undefined;
  readonly sesMessageId: string;
}

/** A server-side copy of `source` when it is still there, else a put of the bytes in hand. */
async function copyOrPut(
  blobs: BlobStore,
  source: string | undefined,
  key: string,
  raw: Buffer,
): Promise<void> {
  if (source !== undefined) {
    try {
      await blobs.copy(source, key);
      return;
    } catch (err) {
      // Expired from inbound/ (an old replay) or never stored there: the bytes in hand will do.
      if (!(err instanceof NotFoundError)) throw err;
    }
  }
  await blobs.put(key, raw, { contentType: 'message/rfc822' });
}

/**
 * Writes one message into one mailbox (blobs, then the index entry as the commit point).
 * Exported for the other writers of mailboxes: notices, and the `sent` copies of submissions.
 * `delivered`: now; `present`: it already was (a retry); `deleted`: it was, and was deleted since
 * (nothing written, unless `restoreDeleted`).
 */
export async function deliverToMailbox(
  deps: Pick<RouterDeps, 'blobs' | 'index'>,
  args: {
    mailbox: string;
    id: string;
    raw: Buffer;
    parsed: ParseResult;
    firstCopy: string | null;
    /**
     * Where these raw bytes are already stored (`inbound/<sesMessageId>`): the first mailbox copy is
     * then a server-side copy (a hard link locally; CopyObject in S3, no second upload of 40 MB).
     */
    rawSource?: string | undefined;
    /** Write the blobs even when the entry exists (see ProcessOptions.rewriteBlobs). */
    rewriteBlobs?: boolean;
    /** No entry can exist yet (see ProcessOptions.fresh): skip the index read. */
    fresh?: boolean;
    /** See ProcessOptions.restoreDeleted. */
    restoreDeleted?: boolean;
    /** The caller's writes of this message in flight, to finish before the entry is committed. */
    stored?: Promise<unknown>;
    entry: EntryFields;
  },
): Promise<'delivered' | 'present' | 'deleted'> {
  const { blobs, index } = deps;
  const { mailbox, id, raw, parsed, firstCopy } = args;
  const restoreDeleted = args.restoreDeleted === true;
  if (args.fresh !== true) {
    const state = await index.deliveryState(mailbox, id);
    // A retry of an already-committed delivery, or of one deleted since: nothing to write.
    const skip =
      (state === 'present' && args.rewriteBlobs !== true) || (state === 'deleted' && !restoreDeleted);
    if (skip) {
      await args.stored;
      return state;
    }
  }

  const stored = storedSummaryOf(parsed);
  // Independent writes, issued together: one group commit locally, parallel requests to S3. (The
  // raw copy from `rawSource` may be issued while the caller's put of it is in flight: the ports
  // apply a copy after a put of its source issued before it, see BlobStore.copy.)
  const writes: Promise<unknown>[] = args.stored === undefined ? [] : [args.stored];
  if (firstCopy === null) {
    writes.push(copyOrPut(blobs, args.rawSource, mailboxKeys.raw(mailbox, id), raw));
    if (parsed.ok) {
      for (const part of parsed.parts)
        writes.push(blobs.put(mailboxKeys.part(mailbox, id, part.partId), partBody(part)));
    }
  } else {
    writes.push(blobs.copy(mailboxKeys.raw(firstCopy, id), mailboxKeys.raw(mailbox, id)));
    if (parsed.ok) {
      for (const part of parsed.parts) {
        writes.push(
          blobs.copy(
            mailboxKeys.part(firstCopy, id, part.partId),
            mailboxKeys.part(mailbox, id, part.partId),
          ),
        );
      }
    }
  }
  writes.push(
    blobs.put(mailboxKeys.summary(mailbox, id), Buffer.from(JSON.stringify(stored)), {
      contentType: 'application/json',
    }),
  );
  await allWritten(writes);

  const entry: MessageEntry = {
    mailbox,
    id,
    size: raw.length,
    crlfSize: crlfSize(raw),
    receivedAt: args.entry.receivedAt,
    ...parsedEntryFields(parsed),
    seen: false,
    verdicts: args.entry.verdicts,
    tags: args.entry.tags,
    quarantineReasons: args.entry.quarantineReasons,
    recipient: args.entry.recipient,
    plusTag: args.entry.plusTag,
    sesMessageId: args.entry.sesMessageId,
  };
  const { inserted } = await index.deliver(entry, { restoreDeleted });
  return inserted ? 'delivered' : 'present';
}

/** What a delivery stores at `summary.json` for a parse (`mail-relay reparse` rewrites it the same way). */
export function storedSummaryOf(parsed: ParseResult): StoredSummary {
  return parsed.ok
    ? { parseFailed: false, ...parsed.summary }
    : { parseFailed: true, parseError: parsed.error, ...parsed.summary };
}

/**
 * The fields of an index entry that come from the parse (LIST's from, to, subject, snippet, the
 * attachment flag; `q` searches the first three): at delivery, and again at `mail-relay reparse`.
 */
export function parsedEntryFields(parsed: ParseResult): ParsedEntryFields {
  // A message not parsed whole is listed by what could be read of it: its own header fields.
  const summary = parsed.ok ? parsed.summary : (parsed.summary ?? null);
  return {
    from: summary ? clipText(displayList(summary.from.slice(0, 1)), ENTRY_TEXT_MAX_CHARS) : '',
    to: summary ? clipText(displayList(summary.to), ENTRY_TEXT_MAX_CHARS) : '',
    subject: clipText(summary?.subject ?? '', ENTRY_TEXT_MAX_CHARS),
    snippet: summary ? snippetOf(summary) : '',
    hasAttachments: summary ? summary.attachments.some((a) => a.disposition !== 'inline') : false,
    parseFailed: !parsed.ok,
  };
}

/** Stores a notice (a failed or looped forward) in a mailbox like any delivery; its id is deterministic. */
async function deliverNotice(
  deps: RouterDeps,
  mailbox: string,
  raw: Buffer,
  noticeSesId: string,
  receivedAt: Date,
  rewriteBlobs: boolean,
): Promise<void> {
  await deliverToMailbox(deps, {
    mailbox,
    id: messageIdFor(receivedAt.getTime(), noticeSesId),
    raw,
    parsed: await deps.parser.parse(raw),
    firstCopy: null,
    rewriteBlobs,
    entry: {
      receivedAt: receivedAt.toISOString(),
      verdicts: UNCHECKED_VERDICTS,
      tags: [],
      quarantineReasons: undefined,
      recipient: mailbox,
      plusTag: undefined,
      sesMessageId: noticeSesId,
    },
  });
}

function displayList(list: readonly { name: string; address: string }[]): string {
  return list.map((a) => (a.name ? `${a.name} <${a.address}>` : a.address)).join(', ');
}

/** Counts of outcomes by status, for logs, metrics and the CLI summary. */
export function countOutcomes(
  results: readonly RouteResult[],
): Record<OutcomeStatus | 'parseFailed', number> {
  const counts: Record<OutcomeStatus | 'parseFailed', number> = {
    delivered: 0,
    duplicate: 0,
    quarantined: 0,
    forwarded: 0,
    rejected: 0,
    dropped: 0,
    failed: 0,
    looped: 0,
    parseFailed: 0,
  };
  for (const r of results) {
    if (r.parseFailed) counts.parseFailed++;
    for (const o of r.outcomes) counts[o.status]++;
  }
  return counts;
}
