/**
 * `POST /v1/mailboxes/{address}/send` (submission, RFC 6409's role over HTTP): a mailbox owner
 * sends mail from their own address, as JSON (built into MIME with nodemailer's composer) or as a
 * ready `message/rfc822`. It leaves through the Outbound port (SES in AWS), and a copy is stored
 * in the mailbox's `sent` view (core/keys.ts `sentMailboxKey`, docs/adr/0009-sent-view.md).
 *
 * Mounted on the API app with `mountSendRoute(app, deps)` after `createApp`: the app's mailbox
 * guard (token, address, authorization) runs first, as for every `/v1/mailboxes/{address}/…` route.
 */
import { randomUUID } from 'node:crypto';
import { createRoute, z } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import MailComposer from 'nodemailer/lib/mail-composer';
import type Mail from 'nodemailer/lib/mailer';
import { type Config, domainOf, isAddress, normalizeAddress } from '../core/config.ts';
import { SendError, ValidationError } from '../core/errors.ts';
import { messageIdFor } from '../core/ids.ts';
import { sentMailboxKey } from '../core/keys.ts';
import {
  fieldValue,
  joinMessage,
  makeField,
  parseAddressList,
  rfc5322Date,
  splitMessage,
} from '../core/mime-header.ts';
import { UNCHECKED_VERDICTS } from '../core/routing.ts';
import { deliverToMailbox } from '../pipeline/router.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { MailParser } from '../ports/mail-parser.ts';
import type { MailboxIndex } from '../ports/mailbox-index.ts';
import type { Outbound } from '../ports/outbound.ts';
import type { ApiApp } from './app.ts';
import { HttpStatusError } from './errors.ts';
import { errorSchema, mailboxParamsSchema } from './schemas.ts';

/** SES accepts at most 50 recipients (To + Cc + Bcc) per message. */
export const MAX_SEND_RECIPIENTS = 50;
/** A client's Idempotency-Key: printable ASCII, short enough to be part of an index key. */
const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,200}$/;
/** A retry with the same Idempotency-Key while the first request is still sending waits at most this long for nothing: it is told 409. */
const SEND_LEASE_MS = 5 * 60 * 1000;

export interface SendDeps {
  readonly config: Config;
  readonly index: MailboxIndex;
  readonly blobs: BlobStore;
  readonly outbound: Outbound;
  /** Parses the `sent` copy once, like a delivery, so it reads like any other message. */
  readonly parser: MailParser;
  /** @default () => new Date() */
  readonly clock?: () => Date;
}

const addressInputSchema = z.union([
  z.string().max(320),
  z.object({ name: z.string().max(200).optional(), address: z.string().max(320) }).strict(),
]);
const addressesSchema = z.union([addressInputSchema, z.array(addressInputSchema).max(MAX_SEND_RECIPIENTS)]);

export const sendJsonSchema = z
  .object({
    to: addressesSchema.optional(),
    cc: addressesSchema.optional(),
    bcc: addressesSchema.optional(),
    subject: z.string().max(998).optional(),
    text: z.string().optional(),
    html: z.string().optional(),
    /** Display name for From; the address is always the mailbox's own. */
    fromName: z.string().max(200).optional(),
    replyTo: addressInputSchema.optional(),
    inReplyTo: z.string().max(998).optional(),
    references: z.union([z.string().max(998), z.array(z.string().max(998)).max(100)]).optional(),
    attachments: z
      .array(
        z
          .object({
            filename: z.string().min(1).max(255),
            contentType: z.string().max(255).optional(),
            /** The bytes, base64-encoded. */
            content: z.string().regex(/^[A-Za-z0-9+/=\r\n]*$/, 'must be base64'),
            /** Makes it an inline part that html can reference as `cid:<contentId>`. */
            contentId: z.string().max(255).optional(),
          })
          .strict(),
      )
      .max(100)
      .optional(),
  })
  .strict()
  .openapi('SendRequest');
export type SendRequest = z.infer<typeof sendJsonSchema>;

export const sendResultSchema = z
  .object({
    /** Id of the copy in the mailbox's sent view. */
    id: z.string(),
    /** The provider's message id (SES MessageId, or the smarthost's reply). */
    messageId: z.string(),
    /** Envelope recipients. */
    recipients: z.array(z.string()),
    /** True when this Idempotency-Key was already sent: nothing was sent again. */
    duplicate: z.boolean(),
  })
  .openapi('SendResult');

const jsonError = (description: string) => ({
  description,
  content: { 'application/json': { schema: errorSchema } },
});

/**
 * The request body may be the message itself or JSON carrying base64 attachments (4/3 larger),
 * plus room for the JSON around them; anything larger could never be sent.
 */
export function maxSendBodyBytes(maxSendBytes: number): number {
  return Math.ceil((maxSendBytes * 4) / 3) + 64 * 1024;
}

/** The route, with a body limit derived from what the relay may send. */
export const sendRouteFor = (maxBodyBytes: number) =>
  createRoute({
    method: 'post',
    path: '/v1/mailboxes/{address}/send',
    tags: ['mailbox'],
    summary: 'Send mail from this mailbox (JSON, or a complete message/rfc822); a copy goes to its sent view',
    security: [{ bearerAuth: [] }],
    request: {
      params: mailboxParamsSchema,
      body: {
        required: true,
        content: {
          'application/json': { schema: sendJsonSchema },
          'message/rfc822': { schema: z.string().openapi({ format: 'binary' }) },
        },
      },
    },
    responses: {
      200: { description: 'Sent', content: { 'application/json': { schema: sendResultSchema } } },
      400: jsonError('Invalid input (`invalid_request`, `invalid_recipient`, `no_recipients`, …)'),
      401: jsonError('Missing or invalid token (`unauthorized`)'),
      403: jsonError('Not this mailbox, or From is not its address (`forbidden`, `from_not_allowed`)'),
      409: jsonError('The same Idempotency-Key is being sent right now (`send_in_progress`)'),
      413: jsonError('Larger than the relay sends (`message_too_large`)'),
      415: jsonError('Neither application/json nor message/rfc822 (`unsupported_media_type`)'),
      422: jsonError('The provider refused the message for good (`send_rejected`)'),
      502: jsonError('The provider could not be reached or failed; try again (`send_failed`)'),
    },
    // Refused while streaming in, before the body is buffered (`payload_too_large`).
    middleware: [bodyLimit({ maxSize: maxBodyBytes })],
  });

function toAddress(
  input: z.infer<typeof addressInputSchema>,
  field: string,
): { name: string; address: string } {
  const parsed =
    typeof input === 'string'
      ? (parseAddressList(Buffer.from(input, 'utf8').toString('latin1'))[0] ?? { name: '', address: input })
      : { name: input.name ?? '', address: input.address };
  const address = normalizeAddress(parsed.address);
  if (!isAddress(address)) {
    throw new ValidationError(
      `${field}: "${address}" is not an e-mail address`,
      [field],
      'invalid_recipient',
    );
  }
  return { name: parsed.name, address };
}

function toAddresses(input: SendRequest['to'], field: string): { name: string; address: string }[] {
  if (input === undefined) return [];
  return (Array.isArray(input) ? input : [input]).map((a, i) => toAddress(a, `${field}[${i}]`));
}

function compose(options: Mail.Options): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const node = new MailComposer(options).compile();
    // The sent copy keeps Bcc, as a mail client's Sent folder does; it is stripped before sending.
    node.keepBcc = true;
    node.build((err, message) => (err ? reject(err) : resolve(message)));
  });
}

interface Prepared {
  /** What the sent view keeps (Bcc included). */
  readonly copy: Buffer;
  /** What goes out (no Bcc). */
  readonly wire: Buffer;
  readonly recipients: readonly string[];
}

function checkRecipients(recipients: readonly string[]): void {
  if (recipients.length === 0)
    throw new ValidationError('no recipients: give to, cc or bcc', [], 'no_recipients');
  if (recipients.length > MAX_SEND_RECIPIENTS) {
    throw new ValidationError(
      `at most ${MAX_SEND_RECIPIENTS} recipients per message`,
      [],
      'too_many_recipients',
    );
  }
}

/** The Message-ID this relay gives a message it composes or completes: the copy's id at the sender's domain. */
function messageIdHeader(id: string, mailbox: string): string {
  return `<${id.toLowerCase()}@${domainOf(mailbox)}>`;
}

function withoutBcc(raw: Buffer): Buffer {
  const split = splitMessage(raw);
  return joinMessage({ ...split, fields: split.fields.filter((f) => f.key !== 'bcc') });
}

async function prepareJson(body: SendRequest, mailbox: string, id: string, now: Date): Promise<Prepared> {
  const to = toAddresses(body.to, 'to');
  const cc = toAddresses(body.cc, 'cc');
  const bcc = toAddresses(body.bcc, 'bcc');
  const recipients = [...new Set([...to, ...cc, ...bcc].map((a) => a.address))];
  checkRecipients(recipients);
  const copy = await compose({
    from: { name: body.fromName ?? '', address: mailbox },
    ...(to.length ? { to } : {}),
    ...(cc.length ? { cc } : {}),
    ...(bcc.length ? { bcc } : {}),
    subject: body.subject ?? '',
    ...(body.text === undefined ? {} : { text: body.text }),
    ...(body.html === undefined ? {} : { html: body.html }),
    ...(body.replyTo === undefined ? {} : { replyTo: toAddress(body.replyTo, 'replyTo') }),
    ...(body.inReplyTo === undefined ? {} : { inReplyTo: body.inReplyTo }),
    ...(body.references === undefined ? {} : { references: body.references }),
    attachments: (body.attachments ?? []).map((a) => ({
      filename: a.filename,
      content: Buffer.from(a.content, 'base64'),
      ...(a.contentType === undefined ? {} : { contentType: a.contentType }),
      ...(a.contentId === undefined ? {} : { cid: a.contentId }),
    })),
    date: now,
    messageId: messageIdHeader(id, mailbox),
    // Attachments are bytes we were given; never let the composer fetch a path or a URL instead.
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  return { copy, wire: withoutBcc(copy), recipients };
}

function prepareRaw(raw: Buffer, mailbox: string, id: string, now: Date): Prepared {
  const split = splitMessage(raw);
  const values = (name: string) => split.fields.filter((f) => f.key === name).map(fieldValue);
  const from = values('from').flatMap((v) => parseAddressList(v));
  const sender = values('sender').flatMap((v) => parseAddressList(v));
  // Only the mailbox's own address may appear as the author or the sender (RFC 5322 §3.6.2).
  if (from.length !== 1 || normalizeAddress(from[0]?.address ?? '') !== mailbox) {
    throw new HttpStatusError(403, 'from_not_allowed', `From must be exactly ${mailbox}`);
  }
  if (sender.some((s) => normalizeAddress(s.address) !== mailbox)) {
    throw new HttpStatusError(403, 'from_not_allowed', `Sender must be ${mailbox} or absent`);
  }
  const recipients = [
    ...new Set(
      ['to', 'cc', 'bcc']
        .flatMap((n) => values(n))
        .flatMap((v) => parseAddressList(v))
        .map((a) => normalizeAddress(a.address)),
    ),
  ];
  for (const r of recipients) {
    if (!isAddress(r)) throw new ValidationError(`"${r}" is not an e-mail address`, [], 'invalid_recipient');
  }
  checkRecipients(recipients);
  // RFC 6409 §8.2–8.3: a submission server may add a missing Date and Message-ID.
  const added = [
    ...(values('date').length === 0 ? [makeField('Date', rfc5322Date(now), split.eol)] : []),
    ...(values('message-id').length === 0
      ? [makeField('Message-ID', messageIdHeader(id, mailbox), split.eol)]
      : []),
  ];
  const copy = added.length > 0 ? joinMessage({ ...split, fields: [...split.fields, ...added] }) : raw;
  return { copy, wire: withoutBcc(copy), recipients };
}

/** Registers the send route on an app built by `createApp` (after its auth middleware). */
export function mountSendRoute(app: ApiApp, deps: SendDeps): void {
  const clock = deps.clock ?? (() => new Date());
  app.openapi(sendRouteFor(maxSendBodyBytes(deps.config.relay.maxSendBytes)), async (c) => {
    const mailbox = c.get('mailbox');
    // An admin token may act for any mailbox, but SES sends only from our verified domains.
    if (!deps.config.domains.includes(domainOf(mailbox))) {
      throw new HttpStatusError(403, 'from_not_allowed', `${mailbox} is not in one of our domains`);
    }
    const idempotencyKey = c.req.header('Idempotency-Key');
    if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY_RE.test(idempotencyKey)) {
      throw new ValidationError(
        'Idempotency-Key must be 1 to 200 printable ASCII characters',
        [],
        'invalid_request',
      );
    }
    const sendKey = `submit:${mailbox}:${idempotencyKey ?? randomUUID()}`;
    const now = clock();
    const id = messageIdFor(now.getTime(), sendKey);

    // Validated and built before anything is recorded: a refused request leaves no trace in the index.
    let prepared: Prepared;
    const type = (c.req.header('Content-Type') ?? '').split(';')[0]?.trim().toLowerCase();
    if (type === 'message/rfc822') {
      prepared = prepareRaw(Buffer.from(await c.req.arrayBuffer()), mailbox, id, now);
    } else {
      // The route's validator checked JSON bodies against sendJsonSchema; the union type also
      // covers the rfc822 schema, which never reaches this branch.
      const body = c.req.valid('json');
      if (typeof body === 'string')
        throw new ValidationError('expected a JSON object', [], 'invalid_request');
      prepared = await prepareJson(body, mailbox, id, now);
    }
    if (prepared.wire.length > deps.config.relay.maxSendBytes) {
      throw new HttpStatusError(
        413,
        'message_too_large',
        `the message is ${prepared.wire.length} bytes; the relay sends at most ${deps.config.relay.maxSendBytes}`,
      );
    }

    const claim = await deps.index.claimSend(sendKey, { now, leaseMs: SEND_LEASE_MS });
    if (!claim.claimed) {
      if (claim.record.state === 'sent') {
        return c.json(
          {
            id: claim.record.detail ?? '',
            messageId: claim.record.providerMessageId ?? '',
            recipients: [...prepared.recipients],
            duplicate: true,
          },
          200,
        );
      }
      throw new HttpStatusError(409, 'send_in_progress', 'a request with this Idempotency-Key is being sent');
    }

    let sent: { messageId: string };
    try {
      sent = await deps.outbound.send({
        from: mailbox,
        to: prepared.recipients,
        raw: prepared.wire,
        idempotencyKey: sendKey,
      });
    } catch (err) {
      await deps.index.finishSend(
        sendKey,
        { state: 'failed', error: err instanceof Error ? err.message : String(err) },
        now,
      );
      if (err instanceof SendError) {
        throw new HttpStatusError(
          err.permanent ? 422 : 502,
          err.permanent ? 'send_rejected' : 'send_failed',
          err.permanent ? 'the mail provider refused the message' : 'the mail provider failed; try again',
        );
      }
      throw err;
    }

    // Recorded as sent before the copy is stored: if storing the copy fails, a retry with the same
    // Idempotency-Key finds the send done instead of sending the mail a second time.
    await deps.index.finishSend(
      sendKey,
      { state: 'sent', providerMessageId: sent.messageId, detail: id },
      now,
    );
    await deliverToMailbox(deps, {
      mailbox: sentMailboxKey(mailbox),
      id,
      raw: prepared.copy,
      parsed: await deps.parser.parse(prepared.copy),
      firstCopy: null,
      entry: {
        receivedAt: now.toISOString(),
        verdicts: UNCHECKED_VERDICTS,
        tags: [],
        quarantineReasons: undefined,
        recipient: mailbox,
        plusTag: undefined,
        sesMessageId: sent.messageId,
      },
    });
    return c.json(
      { id, messageId: sent.messageId, recipients: [...prepared.recipients], duplicate: false },
      200,
    );
  });
}
