/**
 * `POST /v1/mailboxes/{address}/send` (submission, RFC 6409's role over HTTP): a mailbox owner
 * sends mail from their own address, as JSON (built into MIME with nodemailer's composer) or as a
 * ready `message/rfc822`. It leaves through the Outbound port (SES in AWS), and a copy is stored
 * in the mailbox's `sent` view (core/keys.ts `sentMailboxKey`, docs/adr/0009-sent-view.md).
 *
 * Mounted with `mountSendRoute(app, deps)` on an app built on the API shell (shell.ts): the local
 * server's full app (app.ts), or the send function's (send-app.ts). The shell's mailbox guard (token,
 * address, authorization) runs first, as for every `/v1/mailboxes/{address}/…` route. The route's
 * schemas live in send-route.ts, which the API function imports to document it.
 */
import { createHash, randomUUID } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer';
import type Mail from 'nodemailer/lib/mailer';
import { type Config, canonicalAddress, domainOf, isAddress } from '../core/config.ts';
import { errorMessage, SendError, ValidationError } from '../core/errors.ts';
import { messageIdFor, timeOfId, ULID_RE } from '../core/ids.ts';
import { sentMailboxKey } from '../core/keys.ts';
import { clipText } from '../core/message.ts';
import {
  fieldValue,
  joinMessage,
  makeField,
  parseAddressList,
  parseMailboxList,
  rfc5322Date,
  splitMessage,
} from '../core/mime-header.ts';
import { acceptsRecipient, UNCHECKED_VERDICTS } from '../core/routing.ts';
import { deliverToMailbox } from '../pipeline/router.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { MailParser } from '../ports/mail-parser.ts';
import type { MailboxIndex } from '../ports/mailbox-index.ts';
import type { Outbound, OutboundResult } from '../ports/outbound.ts';
import { HttpStatusError, THROTTLED_RETRY_AFTER_SECONDS } from './errors.ts';
import {
  IDEMPOTENCY_KEY_RE,
  MAX_SEND_RECIPIENTS,
  maxSendBodyBytes,
  NO_CONTROLS,
  NO_CONTROLS_RE,
  type SendRequest,
  sendRouteFor,
} from './send-route.ts';
import type { ApiApp } from './shell.ts';

export {
  MAX_SEND_RECIPIENTS,
  maxSendBodyBytes,
  type SendRequest,
  sendJsonSchema,
  sendResultSchema,
  sendRouteFor,
} from './send-route.ts';

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

type AddressInput = Exclude<SendRequest['replyTo'], undefined>;

function toAddress(input: AddressInput, field: string): { name: string; address: string } {
  const refuse = (why: string) => new ValidationError(`${field}: ${why}`, [field], 'invalid_recipient');
  const texts = typeof input === 'string' ? [input] : [input.name ?? '', input.address];
  // A line break would start another header (or, in a string, another list): one address per entry.
  if (texts.some((t) => !NO_CONTROLS_RE.test(t))) throw refuse(NO_CONTROLS);
  let parsed: { name: string; address: string };
  if (typeof input === 'string') {
    const list = parseAddressList(Buffer.from(input, 'utf8').toString('latin1'));
    if (list.length > 1) throw refuse(`"${input}" holds ${list.length} addresses; give one per entry`);
    parsed = list[0] ?? { name: '', address: input };
  } else {
    parsed = { name: input.name ?? '', address: input.address };
  }
  // An internationalized domain goes out in its ASCII form (SES takes no other), `"bob"@` as bob@.
  const address = canonicalAddress(parsed.address);
  if (!isAddress(address)) {
    throw new ValidationError(
      /[^\x20-\x7e]/.test(address)
        ? `${field}: "${address}" has a non-ASCII local part, which the relay cannot send to (no SMTPUTF8)`
        : `${field}: "${address}" is not an e-mail address`,
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

/** A CR alone ends a line too (the composer's CRLF conversion only sees LF): made an LF first. */
function lfLineEnds(text: string): string {
  return text.replace(/\r\n?/g, '\n');
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
    ...(body.text === undefined ? {} : { text: lfLineEnds(body.text) }),
    ...(body.html === undefined ? {} : { html: lfLineEnds(body.html) }),
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
    // Multipart boundaries from the id, not made up at random: composed again with the same id and
    // date (a retry with the same Idempotency-Key), the message is the same bytes.
    baseBoundary: createHash('sha256').update(`boundary:${id}`).digest('hex').slice(0, 24),
    // Attachments are bytes we were given; never let the composer fetch a path or a URL instead.
    disableFileAccess: true,
    disableUrlAccess: true,
    // RFC 5322 §2.3: every line ends in CRLF. The composer keeps the text's own line ends (JSON
    // text has LF), which an SMTP client turns into CRLF on the wire but SES and the sent copy
    // would get as they are: the copy must be what was sent, and a message as RFC 5322 has it.
    newline: 'windows',
  });
  return { copy, wire: withoutBcc(copy), recipients };
}

function prepareRaw(raw: Buffer, mailbox: string, id: string, now: Date): Prepared {
  // No message at all (a client that sent the headers and forgot the body) is no From to refuse.
  if (raw.toString('latin1').trim() === '') {
    throw new ValidationError(
      'the message/rfc822 body is empty: send the whole message',
      [],
      'invalid_request',
    );
  }
  const split = splitMessage(raw);
  // RFC 5322 §2.2: CR only as part of CRLF. A CR alone is no line end to us, but it is to the SMTP
  // client (which sends it as CRLF) and to many readers: `From: ceo@…<CR>From: <mailbox>` would be
  // checked as one From field and read as two, the first someone else's.
  if (split.fields.some((f) => /\r(?!\n)/.test(f.raw))) {
    throw new ValidationError(
      'the header block holds a CR that is not part of a CRLF line end',
      [],
      'invalid_request',
    );
  }
  const values = (name: string) => split.fields.filter((f) => f.key === name).map(fieldValue);
  const mailboxes = (name: string) => values(name).map((v) => parseMailboxList(v));
  const from = mailboxes('from');
  const sender = mailboxes('sender');
  // Only the mailbox's own address may appear as the author or the sender (RFC 5322 §3.6.2), as a
  // plain mailbox list: no group, nothing a reader could take for another address.
  const only = (list: ReturnType<typeof parseMailboxList>) =>
    list !== null && list.length === 1 && canonicalAddress(list[0]?.address ?? '') === mailbox;
  if (from.length !== 1 || !only(from[0] ?? null)) {
    throw new HttpStatusError(403, 'from_not_allowed', `From must be exactly ${mailbox}`);
  }
  if (sender.some((s) => !only(s))) {
    throw new HttpStatusError(403, 'from_not_allowed', `Sender must be ${mailbox} or absent`);
  }
  const recipients = [
    ...new Set(
      ['to', 'cc', 'bcc']
        .flatMap((n) => values(n))
        .flatMap((v) => parseAddressList(v))
        .map((a) => canonicalAddress(a.address)),
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

/** What a request asks for: a retry has the same fingerprint, a reuse of its Idempotency-Key another. */
function fingerprintOf(type: string, payload: string | Buffer): string {
  return createHash('sha256').update(type).update('\n').update(payload).digest('hex').slice(0, 32);
}

/**
 * The `detail` of a finished send: the id of its Sent copy, the request's fingerprint, then the
 * recipients the provider refused, if any (comma-separated), so that a retry answers as the send did.
 * A failed send keeps the id and fingerprint of its attempt, so that a retry sends the same message.
 */
function sentDetail(id: string, fingerprint: string, refused: readonly string[]): string {
  return refused.length > 0 ? `${id} ${fingerprint} ${refused.join(',')}` : `${id} ${fingerprint}`;
}

function parseSentDetail(detail: string | undefined | null): {
  id: string;
  fingerprint?: string;
  refused: string[];
} {
  const [id = '', fingerprint, refused] = (detail ?? '').split(' ');
  const list = refused ? refused.split(',') : [];
  return fingerprint === undefined ? { id, refused: list } : { id, fingerprint, refused: list };
}

/** The answer's `refused`, present only when the provider refused some recipients. */
function refusedField(refused: readonly string[]): { refused?: string[] } {
  return refused.length > 0 ? { refused: [...refused] } : {};
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
    /** The copy in the sender's sent view: a delivery (blobs, then the entry), idempotent by its id. */
    const storeSentCopy = async (id: string, copy: Buffer, date: Date, providerMessageId: string) => {
      await deliverToMailbox(deps, {
        mailbox: sentMailboxKey(mailbox),
        id,
        raw: copy,
        parsed: await deps.parser.parse(copy),
        firstCopy: null,
        entry: {
          receivedAt: date.toISOString(),
          verdicts: UNCHECKED_VERDICTS,
          tags: [],
          quarantineReasons: undefined,
          recipient: mailbox,
          plusTag: undefined,
          sesMessageId: providerMessageId,
        },
      });
    };
    const now = clock();
    let id = messageIdFor(now.getTime(), sendKey);

    // Validated and built before anything is recorded: a refused request leaves no trace in the index.
    let prepare: (id: string, date: Date) => Promise<Prepared>;
    let fingerprint: string;
    const type = (c.req.header('Content-Type') ?? '').split(';')[0]?.trim().toLowerCase();
    if (type === 'message/rfc822') {
      const raw = Buffer.from(await c.req.arrayBuffer());
      fingerprint = fingerprintOf('message/rfc822', raw);
      prepare = async (id, date) => prepareRaw(raw, mailbox, id, date);
    } else {
      // The route's validator checked JSON bodies against sendJsonSchema; the union type also
      // covers the rfc822 schema, which never reaches this branch.
      const body = c.req.valid('json');
      if (typeof body === 'string')
        throw new ValidationError('expected a JSON object', [], 'invalid_request');
      // The validated body, whose keys come in the schema's order: the request's meaning, not its spelling.
      fingerprint = fingerprintOf('application/json', JSON.stringify(body));
      prepare = (id, date) => prepareJson(body, mailbox, id, date);
    }
    let prepared = await prepare(id, now);
    // Our own addresses are ours to check: one the relay would refuse (no such mailbox, a `reject`
    // route) is refused here, in both modes, rather than sent and refused afterwards (in AWS the
    // router would refuse it after SES accepted it, and its bounce would go to SES's return path).
    const refused = prepared.recipients.flatMap((r) => {
      if (!deps.config.domains.includes(domainOf(r))) return [];
      const verdict = acceptsRecipient(deps.config, r);
      return verdict.accept ? [] : [`${r} (${verdict.code} ${verdict.message})`];
    });
    if (refused.length > 0) {
      throw new HttpStatusError(
        422,
        'recipient_refused',
        `this relay refuses mail for ${refused.join(', ')}; nothing was sent`,
      );
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
        const done = parseSentDetail(claim.record.detail);
        // A send recorded before fingerprints were kept has none: it is taken for a retry.
        if (done.fingerprint !== undefined && done.fingerprint !== fingerprint) {
          throw new HttpStatusError(
            422,
            'idempotency_key_reused',
            'this Idempotency-Key was used for a different request; send a new one with a new key',
          );
        }
        // The request that sent it may have failed after recording the send and before its copy was
        // committed (and answered 500): this retry stores the copy, composed again as it was sent
        // (same id and date). A no-op when the copy is there, or was deleted since.
        if (
          done.fingerprint === fingerprint &&
          ULID_RE.test(done.id) &&
          (await deps.index.deliveryState(sentMailboxKey(mailbox), done.id)) === 'absent'
        ) {
          const date = new Date(timeOfId(done.id));
          const again = await prepare(done.id, date);
          await storeSentCopy(done.id, again.copy, date, claim.record.providerMessageId ?? '');
        }
        return c.json(
          {
            id: done.id,
            messageId: claim.record.providerMessageId ?? '',
            recipients: [...prepared.recipients],
            ...refusedField(done.refused),
            duplicate: true,
          },
          200,
        );
      }
      throw new HttpStatusError(409, 'send_in_progress', 'a request with this Idempotency-Key is being sent');
    }
    // A retry of the same request after a failure goes out as the failed attempt composed it: same
    // id, Message-ID and Date. A failure is not proof that nothing arrived (a reply lost after DATA,
    // an SES call that timed out after sending), and a receiver can then tell the copies apart.
    const earlier = parseSentDetail(claim.record.detail);
    if (claim.record.attempts > 1 && earlier.fingerprint === fingerprint && ULID_RE.test(earlier.id)) {
      id = earlier.id;
      prepared = await prepare(id, new Date(timeOfId(id)));
    }

    let sent: OutboundResult;
    try {
      sent = await deps.outbound.send({
        from: mailbox,
        to: prepared.recipients,
        raw: prepared.wire,
        idempotencyKey: sendKey,
      });
    } catch (err) {
      // The attempt's id and fingerprint stay with the failure, for a retry to send the same message.
      await deps.index.finishSend(
        sendKey,
        { state: 'failed', error: errorMessage(err), detail: sentDetail(id, fingerprint, []) },
        now,
      );
      // The provider's sending rate, past the SDK's retries: over within seconds, and a retry with the
      // same Idempotency-Key sends the same message (the claim above was recorded failed).
      if (err instanceof SendError && err.limit === 'rate') {
        throw new HttpStatusError(
          503,
          'throttled',
          `the mail provider is refusing mail at this rate (throttled); try again in ${THROTTLED_RETRY_AFTER_SECONDS} seconds, with the same Idempotency-Key`,
          { cause: err, headers: { 'Retry-After': String(THROTTLED_RETRY_AFTER_SECONDS) } },
        );
      }
      // The provider's quota for the last 24 hours is used up: no retry passes until sends of a day ago
      // age out of it or it is raised, which the provider does not say when; so no Retry-After.
      if (err instanceof SendError && err.limit === 'daily_quota') {
        throw new HttpStatusError(
          429,
          'send_quota_exceeded',
          "the relay has sent as much mail as its provider's daily quota allows (SES counts the last 24 hours); " +
            'nothing more is sent until that quota frees up or is raised. Nothing was sent: the same request ' +
            'with the same Idempotency-Key sends it then',
          { cause: err },
        );
      }
      if (err instanceof SendError) {
        // The provider's own words about the message (a smarthost's reply, SES's reason) say which
        // address or rule it was; nothing else of the failure (hosts, account ids) is shown.
        const reply = err.reply === undefined ? '' : `: ${clipText(err.reply, 500)}`;
        throw new HttpStatusError(
          err.permanent ? 422 : 502,
          err.permanent ? 'send_rejected' : 'send_failed',
          err.permanent
            ? `the mail provider refused the message${reply}`
            : `the mail provider failed; try again${reply}`,
          // Logged with the 502: the operator's only view of why (a smarthost's greeting, AUTH).
          { cause: err },
        );
      }
      throw err;
    }

    // Some recipients refused while the others were sent to (a smarthost's RCPT replies) is a send:
    // it is recorded, copied and answered as one, naming those refused, so that a retry does not
    // send the message again to those who have it.
    const refusedByProvider = sent.refused ?? [];
    // Recorded as sent before the copy is stored: if storing the copy fails, a retry with the same
    // Idempotency-Key finds the send done instead of sending the mail a second time.
    await deps.index.finishSend(
      sendKey,
      {
        state: 'sent',
        providerMessageId: sent.messageId,
        detail: sentDetail(id, fingerprint, refusedByProvider),
      },
      now,
    );
    await storeSentCopy(id, prepared.copy, now, sent.messageId);
    return c.json(
      {
        id,
        messageId: sent.messageId,
        recipients: [...prepared.recipients],
        ...refusedField(refusedByProvider),
        duplicate: false,
      },
      200,
    );
  });
}
