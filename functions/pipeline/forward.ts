/**
 * Carries out one `forward` decision: loop check, exactly-once claim, header rewrite, size check
 * (an oversize message goes out as a notice with a download link), send with retries, and on
 * failure a record in the index plus a notice in the owner's mailbox. Called by the router.
 * See docs/adr/0008-forwarding.md.
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import type Mail from 'nodemailer/lib/mailer';
import { type Config, domainOf, normalizeAddress, type VerdictName } from '../core/config.ts';
import {
  errorMessage,
  MailRelayError,
  NotFoundError,
  PresignUnavailableError,
  SendError,
} from '../core/errors.ts';
import {
  checkLoop,
  type ForwardRewrite,
  prefixSubject,
  rewriteForForward,
  SENDING_ADDRESS_REASON,
} from '../core/forward-rewrite.ts';
import { timeOfId } from '../core/ids.ts';
import { FORWARDED_PREFIX } from '../core/keys.ts';
import { splitMessage } from '../core/mime-header.ts';
import type { Verdicts } from '../core/routing.ts';
import type { BlobStore, PresignOptions } from '../ports/blob-store.ts';
import type { MailboxIndex } from '../ports/mailbox-index.ts';
import type { Outbound } from '../ports/outbound.ts';

/** Where the original of a forwarded message is kept when the forward could not carry it (oversize, failure, loop). */
export { FORWARDED_PREFIX };
export const forwardedKey = (id: string) => `${FORWARDED_PREFIX}${id}.eml`;

/** The idempotency key of one forward: message × destination. */
export const forwardSendKey = (sesMessageId: string, destination: string) =>
  `${sesMessageId}:${normalizeAddress(destination)}`;

/**
 * A claim older than this is taken over by the next attempt. Lambda runs at most 15 minutes, so a
 * router still alive cannot lose its claim to a retry of the same notification.
 */
export const DEFAULT_SEND_LEASE_MS = 15 * 60 * 1000;
/** Pauses between send attempts (so 3 attempts); the AWS SDK also retries throttling inside each. */
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [1000, 4000];
/** Originals up to this size are attached to the failure notice; larger ones are only referenced. */
export const NOTICE_ATTACH_MAX_BYTES = 10 * 1024 * 1024;

/** The `forward` route a decision came from (its `routeIndex`), or undefined. */
export function forwardRouteOf(
  config: Config,
  routeIndex: number | undefined,
): Extract<Config['routes'][number]['route'], { action: 'forward' }> | undefined {
  const r = routeIndex === undefined ? undefined : config.routes[routeIndex]?.route;
  return r?.action === 'forward' ? r : undefined;
}

/** Another invocation holds the claim on this send: retry the notification later (SQS does). */
export class ForwardInProgressError extends MailRelayError {
  constructor(key: string) {
    super('forward_in_progress', `forward ${key} is being sent by another invocation; retry later`);
  }
}

export interface ForwardOptions {
  /** Makes the download link of an oversize notice. @default the blob store's presign */
  readonly presign?: (key: string, options: PresignOptions) => Promise<string>;
  /** @default () => new Date() */
  readonly clock?: () => Date;
  /** @default DEFAULT_RETRY_DELAYS_MS */
  readonly retryDelaysMs?: readonly number[];
  /** @default DEFAULT_SEND_LEASE_MS */
  readonly leaseMs?: number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface ForwardDeps {
  readonly config: Config;
  readonly blobs: BlobStore;
  readonly index: MailboxIndex;
  readonly outbound: Outbound;
  readonly forwarding?: ForwardOptions | undefined;
}

export interface ForwardRequest {
  /** The address the message was sent to, and where the route forwards it. */
  readonly recipient: string;
  readonly destination: string;
  readonly tags: readonly VerdictName[];
  /** The forward route's `subjectPrefix`, if it has one. */
  readonly subjectPrefix?: string | undefined;
  /** The message id (ULID) and the SES message id. */
  readonly id: string;
  readonly sesMessageId: string;
  /** The stored raw message (`inbound/…`), and its key. */
  readonly raw: Buffer;
  readonly inboundKey: string;
  readonly mailFrom: string;
  readonly verdicts: Verdicts;
  /** Stores a notice in a mailbox as a delivery would; `noticeSesId` makes its id deterministic (retries write it once). */
  readonly deliverNotice: (mailbox: string, raw: Buffer, noticeSesId: string) => Promise<void>;
}

export type ForwardResult =
  | {
      readonly status: 'forwarded';
      readonly providerMessageId: string;
      /** `oversize-notice`, and/or that the send record could not be updated afterwards. */
      readonly detail?: string;
    }
  | { readonly status: 'duplicate'; readonly detail: string }
  | { readonly status: 'looped'; readonly detail: string }
  | { readonly status: 'failed'; readonly detail: string };

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function compose(options: Mail.Options): Promise<Buffer> {
  // RFC 5322 §2.3: every line ends in CRLF; the composer otherwise keeps the text's own LFs, and a
  // notice is stored in a mailbox (and sent through SES) as composed, not through an SMTP client.
  const crlf: Mail.Options = { ...options, newline: 'windows' };
  return new Promise((resolve, reject) => {
    new MailComposer(crlf).compile().build((err, message) => (err ? reject(err) : resolve(message)));
  });
}

function megabytes(bytes: number): string {
  return `${(bytes / 1_000_000).toFixed(1)} MB`;
}

/** Keeps the original where a link or a notice can point at it: a server-side copy of `inbound/…`. */
async function keepOriginal(deps: ForwardDeps, req: ForwardRequest): Promise<string> {
  const key = forwardedKey(req.id);
  if ((await deps.blobs.head(key)) !== null) return key;
  try {
    await deps.blobs.copy(req.inboundKey, key);
  } catch (err) {
    // Expired from inbound/ (a late replay) or never stored there: write the bytes we hold.
    if (!(err instanceof NotFoundError)) throw err;
    await deps.blobs.put(key, req.raw, { contentType: 'message/rfc822' });
  }
  return key;
}

async function sendWithRetries(
  deps: ForwardDeps,
  message: { from: string; to: string; raw: Buffer; idempotencyKey: string },
): Promise<{ messageId: string }> {
  const delays = deps.forwarding?.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  const sleep = deps.forwarding?.sleep ?? defaultSleep;
  for (let attempt = 0; ; attempt++) {
    try {
      return await deps.outbound.send({ ...message, to: [message.to] });
    } catch (err) {
      const permanent = err instanceof SendError && err.permanent;
      const delay = delays[attempt];
      if (permanent || delay === undefined) throw err;
      await sleep(delay);
    }
  }
}

/** The short message sent instead of one SES cannot carry, with a link to the kept original. */
async function buildOversizeNotice(
  deps: ForwardDeps,
  req: ForwardRequest,
  rewrite: ForwardRewrite,
  size: number,
  now: Date,
): Promise<Buffer> {
  const { relay } = deps.config;
  const key = await keepOriginal(deps, req);
  const presign = deps.forwarding?.presign ?? ((k: string, o: PresignOptions) => deps.blobs.presign(k, o));
  let link: string | null = null;
  try {
    link = await presign(key, {
      expiresIn: relay.linkExpirySeconds,
      contentType: 'message/rfc822',
      contentDisposition: `attachment; filename="${req.id}.eml"`,
    });
  } catch (err) {
    // No way to sign a link here (a local store without presigning): the notice says where the
    // original is. Any other failure (the link secret unreadable, say) fails the forward, which
    // records it and tells the owner, rather than sending a notice without its link.
    if (!(err instanceof PresignUnavailableError)) throw err;
  }
  const expires = new Date(now.getTime() + relay.linkExpirySeconds * 1000).toISOString();
  const sender = rewrite.originalFrom
    ? `${rewrite.originalFrom.name ? `${rewrite.originalFrom.name} ` : ''}<${rewrite.originalFrom.address}>`
    : req.mailFrom || '(unknown)';
  const text = [
    `A message for ${req.recipient} was too large to forward: ${megabytes(size)}, and the limit is ${megabytes(relay.maxSendBytes)}.`,
    '',
    `  From:    ${sender}`,
    `  Subject: ${rewrite.subject ?? '(no subject)'}`,
    '',
    link
      ? `The original is kept. Download it (an .eml file any mail program opens) until ${expires}:\n${link}`
      : `The original is kept on the relay as ${key}; ask its administrator for a copy.`,
    '',
    'Replying to this message replies to the sender.',
    '',
  ].join('\n');
  return compose({
    from: { name: rewrite.displayName, address: relay.fromAddress },
    to: req.destination,
    ...(rewrite.originalFrom ? { replyTo: rewrite.originalFrom } : {}),
    subject: prefixSubject(
      `[Too large to forward] ${rewrite.subject ?? '(no subject)'}`,
      [],
      req.subjectPrefix,
    ),
    date: now,
    text,
    headers: {
      'X-Loop': relay.loopMarker,
      'X-Forwarded-For': `${req.recipient} ${req.destination}`,
      'X-Forwarded-To': req.destination,
      'X-Mail-Relay-Notice': 'oversize',
    },
  });
}

/** A message for the owner: what could not be forwarded, why, and the original (attached when small). */
async function buildFailureNotice(
  deps: ForwardDeps,
  req: ForwardRequest,
  what: 'failed' | 'looped',
  reason: string,
  now: Date,
): Promise<Buffer> {
  const { relay } = deps.config;
  const key = await keepOriginal(deps, req);
  const split = splitMessage(req.raw);
  const rewrite = rewriteForForward(req.raw, {
    fromAddress: relay.fromAddress,
    recipient: req.recipient,
    destination: req.destination,
    loopMarker: relay.loopMarker,
    envelopeFrom: req.mailFrom,
    tags: [],
  });
  const subject = rewrite.subject ?? '(no subject)';
  const headline =
    what === 'failed'
      ? `Mail for ${req.recipient} could not be forwarded to ${req.destination}.`
      : `Mail for ${req.recipient} was not forwarded to ${req.destination}: it was going round in a loop.`;
  const attach = req.raw.length <= NOTICE_ATTACH_MAX_BYTES;
  const text = [
    headline,
    '',
    `  Reason:  ${reason}`,
    `  From:    ${rewrite.originalFrom?.address ?? (req.mailFrom || '(unknown)')}`,
    `  Subject: ${subject}`,
    `  Hops:    ${split.fields.filter((f) => f.key === 'received').length} Received headers`,
    `  Message: ${req.id} (SES ${req.sesMessageId})`,
    '',
    `The original is kept as ${key}${attach ? ' and attached here' : ''}.`,
    what === 'failed'
      ? `Replaying it (mail-relay replay: its notification is notifications/${req.sesMessageId}.*.json) tries the forward again.`
      : '',
    '',
  ].join('\n');
  return compose({
    from: { name: 'mail-relay', address: relay.fromAddress },
    to: relay.notifyMailbox,
    subject: what === 'failed' ? `Forwarding failed: ${subject}` : `Forwarding loop cut: ${subject}`,
    date: now,
    text,
    headers: { 'X-Mail-Relay-Notice': what === 'failed' ? 'forward-failed' : 'forward-loop' },
    ...(attach
      ? {
          attachments: [
            {
              filename: `${req.id}.eml`,
              content: req.raw,
              contentType: 'message/rfc822',
              // nodemailer marks message/rfc822 inline, and readers then fold it into the text.
              contentDisposition: 'attachment',
            },
          ],
        }
      : {}),
  });
}

export async function forwardMessage(deps: ForwardDeps, req: ForwardRequest): Promise<ForwardResult> {
  const { config, index } = deps;
  const { relay } = config;
  const now = (deps.forwarding?.clock ?? (() => new Date()))();
  const destination = normalizeAddress(req.destination);
  const key = forwardSendKey(req.sesMessageId, destination);

  // Sending to one of our own domains would come straight back in (config refuses it statically;
  // a regex route's `$1` can still produce one at run time). Mail for our sending address is what
  // comes back from forwards (bounces, SES's feedback), so forwarding it (by a catch-all, say) sends a
  // bounce to the address that bounced, whose bounce comes back here: a loop no header of ours marks.
  const loop = config.domains.includes(domainOf(destination))
    ? { loop: true as const, reason: 'destination is one of our own domains' }
    : req.recipient === relay.fromAddress
      ? { loop: true as const, reason: SENDING_ADDRESS_REASON(relay.fromAddress) }
      : (() => {
          const c = checkLoop(req.raw, relay.loopMarker);
          if (!c.loop) return c;
          return {
            loop: true as const,
            reason:
              c.reason === 'x-loop'
                ? `it already carries our X-Loop: ${relay.loopMarker}`
                : `${c.hops} Received headers (more than the limit)`,
          };
        })();
  if (loop.loop) {
    await req.deliverNotice(
      relay.notifyMailbox,
      await buildFailureNotice(deps, req, 'looped', loop.reason, now),
      `${key}:loop`,
    );
    return { status: 'looped', detail: loop.reason };
  }

  const claim = await index.claimSend(key, {
    now,
    leaseMs: deps.forwarding?.leaseMs ?? DEFAULT_SEND_LEASE_MS,
  });
  if (!claim.claimed) {
    if (claim.record.state === 'sent') {
      return { status: 'duplicate', detail: `already sent as ${claim.record.providerMessageId ?? '?'}` };
    }
    throw new ForwardInProgressError(key);
  }

  const rewrite = rewriteForForward(req.raw, {
    fromAddress: relay.fromAddress,
    recipient: req.recipient,
    destination,
    loopMarker: relay.loopMarker,
    envelopeFrom: req.mailFrom,
    tags: req.tags,
    subjectPrefix: req.subjectPrefix,
    verdicts: req.verdicts,
    // The same for every attempt and destination: a retry sends the same message.
    missing: {
      date: new Date(timeOfId(req.id)),
      messageId: `<${req.id}.forwarded@${domainOf(relay.fromAddress)}>`,
    },
  });
  const oversize = rewrite.raw.length > relay.maxSendBytes;
  let sent: { messageId: string };
  try {
    const raw = oversize
      ? await buildOversizeNotice(deps, req, rewrite, rewrite.raw.length, now)
      : rewrite.raw;
    sent = await sendWithRetries(deps, {
      from: relay.fromAddress,
      to: destination,
      raw,
      idempotencyKey: key,
    });
  } catch (err) {
    const error = errorMessage(err);
    await index.finishSend(key, { state: 'failed', error }, now);
    await req.deliverNotice(
      relay.notifyMailbox,
      await buildFailureNotice(deps, req, 'failed', error, now),
      `${key}:failed:${claim.record.attempts}`,
    );
    return { status: 'failed', detail: error };
  }
  // Sent: a failure to record it must not say otherwise (no failure notice). The claim stays
  // pending; a processing after its lease may send again (at least once, ClaimSendOptions).
  const detail = oversize ? 'oversize-notice' : undefined;
  try {
    await index.finishSend(
      key,
      { state: 'sent', providerMessageId: sent.messageId, ...(detail ? { detail } : {}) },
      now,
    );
  } catch (err) {
    const error = errorMessage(err);
    const unrecorded = `its send record was not updated: ${error}`;
    return {
      status: 'forwarded',
      providerMessageId: sent.messageId,
      detail: detail ? `${detail} (${unrecorded})` : unrecorded,
    };
  }
  return detail
    ? { status: 'forwarded', providerMessageId: sent.messageId, detail }
    : { status: 'forwarded', providerMessageId: sent.messageId };
}
