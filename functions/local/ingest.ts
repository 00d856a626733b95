/**
 * The local twin of SES's receipt rule: prepend trace headers, build the SES-shaped notification,
 * make both durable (the ingest journal's group commit, or fsynced writes in `sync` durability),
 * store the raw message under `inbound/<sesMessageId>` and run the same router the Lambda runs.
 * Used by the SMTP listener and by `mail-relay import`.
 */
import { hostname } from 'node:os';
import { domainToASCII } from 'node:url';
import { errorMessage, StorageFullError } from '../core/errors.ts';
import { messageIdFor, newSesMessageId } from '../core/ids.ts';
import { deleteMessageBlobs } from '../core/keys.ts';
import { detectEol, rfc5322Date } from '../core/mime-header.ts';
import { buildNotification, type SesReceivedNotification, verdictsOf } from '../core/notification.ts';
import { route, UNCHECKED_VERDICTS, type Verdicts } from '../core/routing.ts';
import {
  notificationKey,
  processNotification,
  type RouteResult,
  type RouterDeps,
} from '../pipeline/router.ts';
import type { IngestJournal } from './ingest-journal.ts';

/** The bucket name in locally built notifications (there is no bucket; the data dir plays its part). */
export const LOCAL_BUCKET = 'mail-relay-local';

export interface IngestInput {
  /**
   * The message exactly as received (after SMTP dot-unstuffing): one Buffer, or the chunks it
   * arrived in (joined once, behind the trace headers, instead of twice).
   */
  readonly body: Buffer | readonly Buffer[];
  /** The envelope sender (MAIL FROM); '' for the null sender of bounces. */
  readonly mailFrom: string;
  /**
   * Whether `mailFrom` is the real envelope sender, to be recorded as `Return-Path:` (true: the SMTP
   * listener, local sends). `mail-relay import` does not know it (the file may carry its own).
   * @default true
   */
  readonly returnPath?: boolean;
  readonly recipients: readonly string[];
  readonly receivedAt?: Date;
  readonly sesMessageId?: string;
  /** How the message arrived, for the Received line. */
  readonly via: {
    readonly protocol: 'ESMTP' | 'SMTP' | 'LOCAL';
    readonly helo?: string;
    readonly remoteAddress?: string;
  };
  readonly verdicts?: Verdicts;
  /**
   * `import --restore-deleted`: deliver again into a mailbox that held this message and deleted it
   * (ProcessOptions.restoreDeleted). Not in the journal record: a recovery leaves deleted mail deleted,
   * and the import run again restores it.
   */
  readonly restoreDeleted?: boolean;
  /**
   * Prepend our trace headers (the default). `import` of our own export sets false: its bytes are a
   * message as we stored it, its trace headers included, and come back as they were (the same size
   * for a POP3 client that knew it), not as a new receipt.
   * @default true
   */
  readonly trace?: boolean;
}

const SERVER_NAME = hostname() || 'localhost';

/**
 * The trace headers prepended to every stored message, as SES prepends its own: `Return-Path:`
 * with the envelope sender, which the server making final delivery adds (RFC 5321 §4.4; `<>` for a
 * bounce), a `Received:` line (§4.4) and an `Authentication-Results:` (RFC 8601) that says honestly
 * that nothing was checked locally (`none`). A message with no header block at all (its first line
 * is not a header field) gets the blank line that ends ours, as an MTA adds it, so its text stays
 * its body instead of reading as broken header lines; one that starts with a folded line gets an
 * `X-Mail-Relay-Note:` for that line to continue.
 * Uses the message's own line ending so a bare-LF message stays consistently bare-LF.
 */
export function traceHeaders(input: IngestInput, sesMessageId: string, receivedAt: Date): Buffer {
  const eol = detectEol(input.body);
  // A space is kept: it is part of a quoted local part (`<"john doe"@example.com>`, smtp-paths.ts).
  const returnPath =
    input.returnPath === false ? '' : `Return-Path: <${sanitize(input.mailFrom, ' ')}>${eol}`;
  const helo = heloName(input.via.helo ?? 'localhost');
  const addr = sanitize(input.via.remoteAddress ?? '127.0.0.1');
  const forClause =
    input.recipients.length === 1 ? `${eol}\tfor <${sanitize(input.recipients[0] ?? '')}>` : '';
  const received =
    // RFC 5321 §4.4 TCP-info: the peer's address (no reverse-DNS name to give here), not its EHLO again.
    `Received: from ${helo} ([${addr}])${eol}\tby ${SERVER_NAME} (mail-relay) with ${input.via.protocol} id ${sesMessageId}` +
    `${forClause};${eol}\t${rfc5322Date(receivedAt)}${eol}`;
  const auth = `Authentication-Results: ${SERVER_NAME}; none${eol}`;
  // A body with no header block gets the blank line that ends ours; a message starting with a folded
  // line gets a header of ours for it to continue, so that it cannot extend (and forge) the
  // Authentication-Results above.
  const start = messageStart(input.body);
  const after =
    start === 'body'
      ? eol
      : start === 'continuation'
        ? `X-Mail-Relay-Note: the message began with a folded line:${eol}`
        : '';
  return Buffer.from(returnPath + received + auth + after, 'latin1');
}

/** mbox's separator line: `From <sender> <asctime date>` (a sentence starting "From " is body). */
export const MBOX_FROM_LINE_RE =
  /^From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} +\d{1,2}:\d\d/;
/**
 * An mbox separator naming the sender alone, no date (Python's `mailbox` with `set_from(sender)`):
 * the whole line, so that "From Paris, with love" is body.
 */
export const MBOX_BARE_FROM_LINE_RE = /^From \S+[ \t]*(?:\r?\n|\r?$)/;
/** RFC 5322 §2.2 field name, then the colon (obsolete syntax allows whitespace before it). */
const FIELD_START_RE = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;
const BOM = '\xef\xbb\xbf';

/**
 * How a message begins, for what follows our trace headers: `field` (a header field, possibly
 * behind a UTF-8 BOM, or what precedes headers: the blank line of a message without headers, an mbox
 * `From ` line, BOM or not), `continuation` (a folded line, BOM or not: it would continue our last header), or
 * `body` (no header block at all).
 */
export function messageStart(body: Buffer | readonly Buffer[]): 'field' | 'continuation' | 'body' {
  // The first line's start is enough: a field name is at most a few dozen bytes before its colon.
  const chunks = Buffer.isBuffer(body) ? [body] : body;
  let head = '';
  for (const chunk of chunks) {
    head += chunk.subarray(0, 1000 - head.length).toString('latin1');
    if (head.length >= 1000 || /[\r\n]/.test(head)) break;
  }
  if (head === '') return 'field';
  const firstLine = head.split(/\r?\n|\r/, 1)[0] ?? '';
  if (firstLine === '') return 'field';
  // The parser reads past a BOM at the start of a header line (MailparserAdapter): judge what follows
  // it. So an mbox `From ` line behind one (an export saved by a Windows editor) is one still.
  const line = firstLine.startsWith(BOM) ? firstLine.slice(BOM.length) : firstLine;
  if (MBOX_FROM_LINE_RE.test(line) || MBOX_BARE_FROM_LINE_RE.test(line)) return 'field';
  if (/^[ \t]/.test(line)) return 'continuation';
  return FIELD_START_RE.test(line) ? 'field' : 'body';
}

function sanitize(s: string, keep = ''): string {
  return s.replace(keep === ' ' ? /[^\x20-\x7e]/g : /[^\x21-\x7e]/g, '?');
}

/**
 * The client's HELO/EHLO name for the Received line. An internationalized one (`EHLO bücher.example`,
 * sent as UTF-8) is written in its ASCII form (`xn--bcher-kva.example`), as DNS knows it: each
 * non-ASCII character came out as a `?`. Anything else non-ASCII is still a `?` (the header is ASCII).
 */
function heloName(helo: string): string {
  if (!/[^\x21-\x7e]/.test(helo)) return helo;
  const ascii = /[\s\p{Cc}]/u.test(helo) ? '' : domainToASCII(helo);
  return sanitize(ascii === '' ? helo : ascii);
}

export interface IngestResult extends RouteResult {
  readonly inboundKey: string;
}

/** Router deps, plus the journal that makes `250` durable when the stores defer their syncs. */
export interface IngestDeps extends RouterDeps {
  readonly journal?: IngestJournal | undefined;
  /**
   * The room kept for deletes on a full disk (disk-reserve.ts): mail is taken only while it is in
   * place, so that new mail never uses the room a delete released.
   */
  readonly reserve?: { ensure(): boolean } | undefined;
}

/**
 * What SES does on receipt, after the message is durable: store it under `inbound/`, then route it.
 * Also what journal recovery re-runs (idempotent).
 */
export async function applyReceived(
  deps: RouterDeps,
  notification: SesReceivedNotification,
  raw: Buffer,
  options: {
    readonly recovering?: boolean;
    readonly fresh?: boolean;
    /** The journal append of this message: routing commits nothing before it resolves. */
    readonly durable?: Promise<unknown>;
    readonly restoreDeleted?: boolean;
  } = {},
): Promise<RouteResult> {
  return processNotification(deps, notification, {
    raw,
    storeRaw: true,
    rewriteBlobs: options.recovering === true,
    fresh: options.fresh === true,
    durable: options.durable,
    restoreDeleted: options.restoreDeleted === true,
  });
}

/**
 * Takes back what routing a message stored before it failed: its mailbox entries (with their counters
 * and blobs), its `inbound/` copy and its notification, so that `replay` does not bring it back either.
 * Only for a message id minted here (`ingest` without `sesMessageId`): nothing else can hold it.
 * Forwards already sent cannot be taken back; the client's retry forwards again.
 */
async function withdraw(deps: RouterDeps, notification: SesReceivedNotification): Promise<void> {
  const { mail, receipt } = notification;
  const id = messageIdFor(new Date(mail.timestamp).getTime(), mail.messageId);
  const decisions = route(
    deps.config,
    { mailFrom: mail.source, recipients: receipt.recipients },
    verdictsOf(notification),
  );
  const mailboxes = new Set(
    decisions.flatMap((d) => (d.kind === 'deliver' || d.kind === 'quarantine' ? [d.mailbox] : [])),
  );
  for (const mailbox of mailboxes) {
    await deps.index.delete(mailbox, id);
    await deleteMessageBlobs(deps.blobs, mailbox, id);
  }
  await deps.blobs.delete(notificationKey(notification));
  await deps.blobs.delete(receipt.action.objectKey);
}

/** Retries of a failed `withdraw`: every few seconds, then every minute, for about an hour. */
const WITHDRAW_RETRY_MAX_MS = 60_000;
const WITHDRAW_ATTEMPTS = 64;

/**
 * Withdraws in the background what could not be withdrawn at once (SQLite cannot write a delete on
 * a full disk either). Meanwhile the mailbox shows the message, and the client's retry may add its
 * copy: once this succeeds, that copy is the only one. Lost if the process stops first.
 */
function withdrawLater(deps: RouterDeps, notification: SesReceivedNotification, attempt = 1): void {
  const delay = Math.min(WITHDRAW_RETRY_MAX_MS, 1000 * 2 ** (attempt - 1));
  setTimeout(() => {
    withdraw(deps, notification).catch((err: unknown) => {
      if (attempt < WITHDRAW_ATTEMPTS) return withdrawLater(deps, notification, attempt + 1);
      process.emitWarning(
        `message ${notification.mail.messageId}: was answered 4xx, and taking back the deliveries it ` +
          `made before failing still fails (${errorMessage(err)}); ` +
          'a mailbox may hold it as well as the client’s retry',
        'MailRelayJournalWarning',
      );
    });
  }, delay).unref();
}

/** The SES-shaped notification `ingest` stores and routes for `input` under this SES id and time. */
export function ingestNotification(
  input: Pick<IngestInput, 'mailFrom' | 'recipients' | 'verdicts'>,
  sesMessageId: string,
  receivedAt: Date,
): SesReceivedNotification {
  return buildNotification({
    sesMessageId,
    receivedAt,
    mailFrom: input.mailFrom,
    recipients: input.recipients,
    verdicts: input.verdicts ?? UNCHECKED_VERDICTS,
    bucketName: LOCAL_BUCKET,
  });
}

export async function ingest(deps: IngestDeps, input: IngestInput): Promise<IngestResult> {
  // Made again first after a delete released it: until there is room for it, mail gets 452.
  if (deps.reserve?.ensure() === false) {
    throw new StorageFullError('no room for the disk space kept for deletes; free some space');
  }
  const sesMessageId = input.sesMessageId ?? newSesMessageId();
  const receivedAt = input.receivedAt ?? new Date();
  const body = Buffer.isBuffer(input.body) ? [input.body] : input.body;
  const raw = Buffer.concat(
    input.trace === false ? body : [traceHeaders(input, sesMessageId, receivedAt), ...body],
  );
  const notification = ingestNotification(input, sesMessageId, receivedAt);
  const inboundKey = notification.receipt.action.objectKey;
  // A message id minted here: no mailbox can hold it yet (an id given by the caller may be a retry).
  const fresh = input.sesMessageId === undefined;
  const restoreDeleted = input.restoreDeleted === true;
  const { journal } = deps;
  if (!journal)
    return { ...(await applyReceived(deps, notification, raw, { fresh, restoreDeleted })), inboundKey };

  // The router parses while the record is synced, and commits nothing before it is durable.
  const appended = journal.append({ type: 'ingest', notification, raw });
  appended.catch(() => undefined);
  try {
    return {
      ...(await applyReceived(deps, notification, raw, { fresh, durable: appended, restoreDeleted })),
      inboundKey,
    };
  } catch (err) {
    // The client is told to retry (4xx), so this copy must end up nowhere: not in a mailbox that it
    // reached before the failure (a message to several mailboxes is delivered to one after another),
    // and not through journal recovery (if the record was written at all: a failed append is the
    // error itself).
    // A caller's own id (import's, from the content) may name mail delivered before: left alone.
    // On a full disk the deletes can fail as the delivery did: retried until there is room again.
    if (fresh) await withdraw(deps, notification).catch(() => withdrawLater(deps, notification));
    const ticket = await appended.catch(() => null);
    if (ticket !== null) {
      await journal.abort(ticket).catch((abortErr: unknown) => {
        // Only an I/O error gets here (marking needs no free space): the message may be delivered
        // again at the next start, next to the client's retry. Said, not hidden; the client still
        // gets the routing error.
        process.emitWarning(
          `message ${sesMessageId}: routing failed and marking its journal record aborted failed too ` +
            `(${errorMessage(abortErr)}); ` +
            'it may be delivered at the next start as well as on the client’s retry',
          'MailRelayJournalWarning',
        );
      });
    }
    throw err;
  } finally {
    // Settled after the abort (if any) is durable, so a checkpoint cannot drop the record first.
    await appended.then(
      (ticket) => journal.settle(ticket),
      () => undefined,
    );
  }
}
