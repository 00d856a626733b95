/**
 * `mail-relay import`: .eml files, mbox files and directories (import-sources.ts) through the same
 * ingest path as SMTP (trace headers, `inbound/`, notification, router). Deterministic: the SES-like
 * id comes from the recipients (in any order) and the content, the receipt time from an earlier
 * import of it (within the replay window), else the message's Date header, else its topmost
 * Received line, else its mbox `From ` line, else the file's mtime (each only when after 1970 and
 * not in the future), else the time of the import; so importing the same content again, from a copy
 * or a touched file too, under another TZ or after its Date has come, computes the same message id
 * and is a no-op.
 */
import { basename } from 'node:path';
import addressparser from 'nodemailer/lib/addressparser';
import { canonicalAddress, isAddress } from '../core/config.ts';
import { errorMessage, isStorageFull } from '../core/errors.ts';
import { messageIdFor, sesMessageIdFromContent, timeOfId } from '../core/ids.ts';
import { sentMailboxKey } from '../core/keys.ts';
import { parseMailDate } from '../core/mail-date.ts';
import { INBOUND_PREFIX, notificationJson } from '../core/notification.ts';
import { route, UNCHECKED_VERDICTS, type Verdicts } from '../core/routing.ts';
import { DAY_MS } from '../core/time.ts';
import {
  countOutcomes,
  deliverToMailbox,
  notificationKey,
  type Outcome,
  type RouteResult,
  type RouterDeps,
} from '../pipeline/router.ts';
import type { MailParser } from '../ports/mail-parser.ts';
import {
  gmailLabels,
  type ImportItem,
  importSources,
  mailWasRead,
  mozillaExpunged,
  readItem,
  withoutFromLine,
} from './import-sources.ts';
import { type IngestDeps, ingest, ingestNotification } from './ingest.ts';
import { type ExportedIds, exportedMaildirIds, fromExportedMbox } from './mboxrd.ts';

/** mailparser's limit on a header block; a longer one is not read further here either. */
const HEADER_BLOCK_MAX_BYTES = 1024 * 1024;
/**
 * A line end of any style (CRLF, LF, or a classic Mac CR alone). CRs before an LF belong to it: a
 * CRLF file converted once more (`\r\r\n`) has no blank line after its first header.
 */
const EOL = '(?:\\r?\\r?\\n|\\r(?!\\r?\\n))';
const BLANK_LINE_RE = new RegExp(`${EOL}${EOL}`);

/** Unfolded header fields of a raw message (name lower-cased), read without a MIME parser. */
export function headerFields(raw: Buffer): { name: string; value: string }[] {
  // Most header blocks end within the first 64 KiB: a whole megabyte is decoded only when not.
  let text = raw.toString('latin1', 0, Math.min(raw.length, 64 * 1024));
  let blank = BLANK_LINE_RE.exec(text);
  if (blank === null && raw.length > text.length) {
    text = raw.toString('latin1', 0, Math.min(raw.length, HEADER_BLOCK_MAX_BYTES));
    blank = BLANK_LINE_RE.exec(text);
  }
  const end = blank?.index ?? text.length;
  const head = text.slice(0, end).replace(new RegExp(`${EOL}[ \\t]+`, 'g'), ' ');
  const out: { name: string; value: string }[] = [];
  for (const line of head.split(new RegExp(EOL))) {
    const colon = line.indexOf(':');
    if (colon > 0)
      out.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  return out;
}

const RECIPIENT_HEADERS = ['delivered-to', 'x-original-to', 'to', 'cc'];

type HeaderFields = readonly { readonly name: string; readonly value: string }[];

/** Recipients named in a message's headers (`headerFields`), for `import` without `--to`. */
export function headerRecipients(fields: HeaderFields): string[] {
  const found: string[] = [];
  for (const { name, value } of fields) {
    if (!RECIPIENT_HEADERS.includes(name)) continue;
    for (const a of addressparser(value, { flatten: true })) {
      const addr = canonicalAddress(a.address ?? '');
      if (isAddress(addr) && !found.includes(addr)) found.push(addr);
    }
  }
  return found;
}

/**
 * How far ahead of the clock a Date or Received time may be and still be taken as a receipt time: a
 * sender's clock that runs minutes or hours fast, not spam dated 2099, which would otherwise head
 * the mailbox's list for decades and outlive `retention.mailboxDays`.
 */
export const IMPORT_FUTURE_SKEW_MS = DAY_MS;

/** Whether `ms` can be a receipt time: not before 1970 (no ULID holds it), at most a day after `nowMs`. */
const receivable = (ms: number, nowMs: number): boolean => ms >= 0 && ms <= nowMs + IMPORT_FUTURE_SKEW_MS;

/**
 * The receipt time a message carries: its Date when readable (archives keep their order), else the
 * date of its topmost Received line (when the last server got it); null when it has neither, or
 * when each is before 1970 (no ULID holds it) or more than a day after `nowMs`.
 */
export function importReceiptTime(fields: HeaderFields, nowMs: number): Date | null {
  const date = fields.find((h) => h.name === 'date')?.value;
  const received = fields.find((h) => h.name === 'received')?.value;
  // RFC 5321 §4.4: a Received line ends with `; date-time`.
  const receivedDate = received?.includes(';') ? received.slice(received.lastIndexOf(';') + 1) : undefined;
  for (const value of [date, receivedDate]) {
    const ms = value === undefined ? null : parseMailDate(value);
    if (ms !== null && receivable(ms, nowMs)) return new Date(ms);
  }
  return null;
}

/**
 * A file's modification time as a receipt time, held to what `importReceiptTime` takes: one before
 * 1970 (no ULID holds it) or more than a day ahead (an archive from a machine with a wrong clock) is
 * replaced by the time of this import.
 */
export function fileReceiptTime(mtime: Date, nowMs: number): Date {
  return receivable(mtime.getTime(), nowMs) ? mtime : new Date(nowMs);
}

/**
 * When this content was imported before for these recipients (its notification is kept for the
 * replay window), so that a file without a date of its own gets the same message id again, however
 * its modification time has changed since.
 */
async function earlierImportTime(
  deps: IngestDeps,
  sesMessageId: string,
  recipients: readonly string[],
): Promise<Date | null> {
  const stored = await deps.blobs.get(
    notificationKey({ mail: { messageId: sesMessageId }, receipt: { recipients } }),
  );
  if (!stored) return null;
  const timestamp = (JSON.parse(stored.toString('utf8')) as { mail?: { timestamp?: unknown } }).mail
    ?.timestamp;
  const ms = typeof timestamp === 'string' ? Date.parse(timestamp) : Number.NaN;
  return Number.isFinite(ms) ? new Date(ms) : null;
}

/**
 * What importing again a message found in its mailboxes already comes to, found without writing
 * anything: when every mailbox it routes to holds `id` (or held it, and it was deleted since), each
 * delivery a duplicate, as routing it again would find. `id` is the one an earlier import of the same
 * content gave it, or the one our export says it has in the store it came from. Importing it as the
 * first time would append it to the journal, store it again under `inbound/` (an upload to S3 with
 * `--stack`) and parse it, only to find the same (or, under an exported id, add a second copy);
 * an export imported twice cost as much the second time. `null` when routing it now would do anything
 * else (a mailbox added to its route since, a forward, `restoreDeleted` and a mailbox that deleted
 * it), or when no mailbox is among its routes: it is then imported as the first time was, which
 * delivers what is missing. A refusal or a drop is as routing it again would find it.
 *
 * Sound as ADR 2 has it: an index entry exists once its message's blobs are written (or, locally,
 * once the journal record that rewrites them at recovery is durable, and recovery runs before an
 * import). Nothing is parsed, so a message that failed to parse the first time is not counted among
 * this run's parse failures.
 */
async function heldAlready(
  deps: IngestDeps,
  message: {
    readonly id: string;
    readonly sesMessageId: string;
    readonly recipients: readonly string[];
    readonly verdicts: Verdicts;
    readonly restoreDeleted: boolean;
  },
): Promise<RouteResult | null> {
  const { id, sesMessageId } = message;
  // As `ingest` routes it: no envelope sender.
  const decisions = route(deps.config, { mailFrom: '', recipients: message.recipients }, message.verdicts);
  const outcomes: Outcome[] = [];
  let held = 0;
  for (const decision of decisions) {
    // A refusal or a drop is what routing it again would come to (and the first time came to).
    if (decision.kind === 'reject') outcomes.push({ decision, status: 'rejected' });
    else if (decision.kind === 'drop') outcomes.push({ decision, status: 'dropped' });
    // A forward: whether it went under this id is the router's to find.
    else if (decision.kind !== 'deliver' && decision.kind !== 'quarantine') return null;
    else {
      const state = await deps.index.deliveryState(decision.mailbox, id);
      if (state === 'absent' || (state === 'deleted' && message.restoreDeleted)) return null;
      held += 1;
      outcomes.push({
        decision,
        status: 'duplicate',
        ...(state === 'deleted' ? { detail: 'delivered before and deleted since' } : {}),
      });
    }
  }
  return held === 0 ? null : { sesMessageId, id, size: 0, parseFailed: false, outcomes };
}

/**
 * Whether `import` may route a message of our export under the SES message id it was received with
 * (and so give it the id it has in the store it came from): its id comes out as the exported one, and
 * routing it writes nothing that is not there. That is, the store holds no `inbound/` copy under that
 * SES id (it never received the message), or exactly what this import would write there: the same
 * bytes, and for these recipients the same notification (an earlier import of it). The store the mail
 * came from holds its receipt's copy and notification, with the envelope sender and the verdicts, and
 * `replay` reads them: an import there must not replace them.
 */
async function routableUnderOriginal(
  deps: IngestDeps,
  ids: ExportedIds,
  input: { readonly body: Buffer } & Parameters<typeof ingestNotification>[0],
): Promise<boolean> {
  const { ses } = ids;
  if (ses === null || messageIdFor(timeOfId(ids.id), ses) !== ids.id) return false;
  const inboundKey = `${INBOUND_PREFIX}${ses}`;
  if ((await deps.blobs.head(inboundKey)) === null) return true;
  const notification = ingestNotification(input, ses, new Date(timeOfId(ids.id)));
  const stored = await deps.blobs.get(notificationKey(notification));
  if (stored === null || stored.toString('utf8') !== notificationJson(notification)) return false;
  return (await deps.blobs.get(inboundKey))?.equals(input.body) === true;
}

/**
 * Runs tasks one at a time per key, each after the ones of its key started before it have settled;
 * tasks of different keys run as they come.
 */
function keyedQueue(): <T>(key: string, task: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<unknown>>();
  return async (key, task) => {
    const run = (tails.get(key) ?? Promise.resolve()).then(task, task);
    const tail = run.catch(() => undefined);
    tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (tails.get(key) === tail) tails.delete(key);
    }
  };
}

/**
 * The ids our export gave a message (mbox: the `id=` and `ses=` of its `X-Mail-Relay-Export:` field;
 * Maildir: `,I=<id>,E=<ses>` in its file's name), when its id's time is one a receipt may have; else null.
 */
function exportedIdsOf(
  item: Pick<ImportItem, 'readState' | 'path' | 'inMaildir'>,
  exported: { readonly ids: ExportedIds | null } | null,
  nowMs: number,
): ExportedIds | null {
  const given =
    item.readState === 'mbox'
      ? (exported?.ids ?? null)
      : item.inMaildir === true
        ? exportedMaildirIds(basename(item.path))
        : null;
  return given !== null && receivable(timeOfId(given.id), nowMs) ? given : null;
}

/**
 * The SES-like id of an imported message: from its recipients (sorted, normalized) and its bytes. A NUL
 * ends the recipients (no address holds one), so no other split of the same bytes collides.
 */
export function importSesMessageId(recipients: readonly string[], body: Buffer): string {
  return sesMessageIdFromContent(Buffer.concat([Buffer.from(`${recipients.join(',')}\0`), body]));
}

export function progressBar(done: number, total: number, width = 30): string {
  const filled = total === 0 ? width : Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
}

export interface ImportSummary {
  /** Messages imported (not failed, not every recipient refused). */
  readonly imported: number;
  /** What became of them, recipient by recipient (`countOutcomes`). */
  readonly counts: ReturnType<typeof countOutcomes>;
  /** `file`: the path, with `#n` for the n-th message of an mbox. */
  readonly failures: readonly { file: string; reason: string }[];
  /**
   * The disk filled up: why (the first such failure), and how many messages were not imported, from
   * the one that met it on (the import stopped there). Null when it did not.
   */
  readonly diskFull: { readonly reason: string; readonly notImported: number } | null;
  /** Recipients the relay refused, message by message, with the reply an SMTP client would have got. */
  readonly refusals: readonly { file: string; recipient: string; reply: string }[];
  /**
   * What was passed over (`ImportSources.skipped`), and the messages of an mbox deleted in Thunderbird
   * or in Gmail's Trash (one line per file and program).
   */
  readonly skipped: readonly { path: string; reason: string }[];
  /** One line for the terminal. */
  readonly line: string;
}

/**
 * `mail-relay import` into `deps` (the data dir's runtime, or a deployed stack's adapters): a progress
 * bar on a terminal, then the outcome (`reportImport`). Returns the exit code.
 */
export async function runImport(
  deps: IngestDeps,
  paths: readonly string[],
  target: {
    readonly to: readonly string[];
    readonly sentOf?: SentImport | undefined;
    readonly restoreDeleted?: boolean | undefined;
  },
  io: {
    readonly out: NodeJS.WritableStream;
    readonly err: NodeJS.WritableStream & { isTTY?: boolean };
  },
): Promise<number> {
  const tty = io.err.isTTY === true;
  const summary = await importFiles(deps, paths, {
    to: target.to,
    sentOf: target.sentOf,
    restoreDeleted: target.restoreDeleted,
    onProgress: tty ? (done, total) => io.err.write(`\r${progressBar(done, total)}`) : undefined,
  });
  if (tty) io.err.write('\n');
  return reportImport(summary, io);
}

/** Prints an import's outcome (named lines on `err`, the summary line on `out`); returns the exit code. */
function reportImport(
  summary: ImportSummary,
  io: { readonly out: NodeJS.WritableStream; readonly err: NodeJS.WritableStream },
): number {
  for (const f of summary.skipped) io.err.write(`skipped: ${f.path}: ${f.reason}\n`);
  for (const f of summary.failures) io.err.write(`failed: ${f.file}: ${f.reason}\n`);
  for (const r of summary.refusals) io.err.write(`refused: ${r.file}: ${r.recipient}: ${r.reply}\n`);
  if (summary.diskFull !== null) {
    const n = summary.diskFull.notImported;
    io.err.write(
      `mail-relay import: no space left on the disk (${summary.diskFull.reason}); ${n} message${n === 1 ? '' : 's'} not imported: ` +
        'free some space and run the same import again (what it imported is not added twice)\n',
    );
  }
  io.out.write(`${summary.line}\n`);
  return summary.failures.length > 0 || summary.diskFull !== null ? 1 : 0;
}

/**
 * Why a message still in an mbox file is deleted mail: Thunderbird's expunged flag, or Gmail's Trash
 * label (Google Takeout's one mbox holds the Trash, "All mail Including Spam and Trash").
 */
type DeletedIn = 'thunderbird' | 'gmail-trash';

/** Files read and routed at once: enough for the journal's group commit to batch their syncs. */
export const IMPORT_CONCURRENCY = 8;

/**
 * `import --sent-of <mailbox>`: the messages are mail the mailbox sent (its sent view exported, a mail
 * program's Sent folder), to be put back where `POST …/send` keeps its copies (ADR 9), not routed to
 * their recipients (which would deliver the owner's sent mail to them, or refuse it).
 */
export interface SentImport {
  /** The mailbox whose sent view receives the messages (a mailbox of the configuration). */
  readonly owner: string;
  /**
   * Where the copies are written, each write durable when it resolves: the sent view is written as
   * the send route writes it, blobs then the index entry, outside the ingest journal (locally the
   * runtime's `unjournaled` stores; a stack's S3 and DynamoDB).
   */
  readonly stores: Pick<RouterDeps, 'blobs' | 'index'>;
}

/**
 * One message of `import --sent-of` into the owner's sent view: stored as it is (an export of ours as
 * it was stored: mboxrd.ts), with no trace header, `inbound/` copy or notification (it was never
 * received: nothing to replay), and no routing. An export of ours says the message's id in the store
 * it came from (`exportedId`): it keeps it, and its receipt time (the id's), so that the export
 * imported back into that store finds each message there, and into another gives the same ids.
 * Otherwise its id is from the sent view's key, the stored bytes and the receipt time. Either way the
 * same message imported again is found there (or found deleted, and stays deleted unless
 * `restoreDeleted`) without a write.
 * `read`: the source says so.
 */
async function importSentCopy(
  parser: MailParser,
  sent: SentImport,
  message: {
    readonly bytes: Buffer;
    /** The id's time when `exportedId` is given. */
    readonly receivedAt: Date;
    readonly read: boolean;
    readonly exportedId: string | null;
    readonly restoreDeleted: boolean;
  },
): Promise<RouteResult> {
  const { owner, stores } = sent;
  const mailbox = sentMailboxKey(owner);
  const sesMessageId = importSesMessageId([mailbox], message.bytes);
  const id = message.exportedId ?? messageIdFor(message.receivedAt.getTime(), sesMessageId);
  const decision = { kind: 'deliver', recipient: owner, mailbox, tags: [] } as const;
  const result = (status: Outcome['status'], parseFailed: boolean, detail?: string): RouteResult => ({
    sesMessageId,
    id,
    size: message.bytes.length,
    parseFailed,
    outcomes: [{ decision, status, ...(detail === undefined ? {} : { detail }) }],
  });
  const state = await stores.index.deliveryState(mailbox, id);
  if (state === 'present') return result('duplicate', false);
  if (state === 'deleted' && !message.restoreDeleted)
    return result('duplicate', false, 'delivered before and deleted since');
  const parsed = await parser.parse(message.bytes);
  const delivered = await deliverToMailbox(stores, {
    mailbox,
    id,
    raw: message.bytes,
    parsed,
    firstCopy: null,
    // Looked up just above; another worker delivering the same bytes meanwhile makes it `present`.
    fresh: true,
    restoreDeleted: message.restoreDeleted,
    entry: {
      receivedAt: message.receivedAt.toISOString(),
      verdicts: UNCHECKED_VERDICTS,
      tags: [],
      quarantineReasons: undefined,
      recipient: owner,
      plusTag: undefined,
      sesMessageId,
    },
  });
  if (delivered !== 'delivered') return result('duplicate', false);
  if (message.read) await stores.index.setSeen(mailbox, id, true);
  return result('delivered', !parsed.ok);
}

export async function importFiles(
  deps: IngestDeps,
  files: readonly string[],
  options: {
    to?: readonly string[];
    /** Into this mailbox's sent view instead of through the router (`import --sent-of`). */
    sentOf?: SentImport | undefined;
    /**
     * Deliver again what a mailbox held and deleted since (`import --restore-deleted`): by default it
     * stays deleted, as with `replay`.
     */
    restoreDeleted?: boolean | undefined;
    onProgress?: ((done: number, total: number) => void) | undefined;
  } = {},
): Promise<ImportSummary> {
  const now = Date.now();
  const restoreDeleted = options.restoreDeleted === true;
  // The run's length by the monotonic clock: a wall clock stepped meanwhile would make it negative.
  const started = performance.now();
  // Counted as they come, not kept: an export of a million messages would hold a million results.
  let imported = 0;
  const counts = countOutcomes([]);
  const failures: { file: string; reason: string }[] = [];
  const refusals: { file: string; recipient: string; reply: string }[] = [];
  /** Messages deleted in the program they come from, by mbox file and by why they are left out. */
  const deleted = new Map<string, Map<DeletedIn, number>>();
  const tally = (result: RouteResult): void => {
    imported += 1;
    for (const [k, n] of Object.entries(countOutcomes([result]))) counts[k as keyof typeof counts] += n;
  };
  const sources = await importSources(files);
  const items = sources.items;
  const oneAtATime = keyedQueue();
  /** The first full-disk failure's reason, once one happened; and the messages it left unimported. */
  let full: string | null = null;
  let notImported = 0;
  let next = 0;
  let done = 0;
  const importOne = async (item: (typeof items)[number]): Promise<void> => {
    const file = item.label;
    if (item.failure !== undefined) {
      failures.push({ file, reason: item.failure });
      return;
    }
    try {
      const body = await readItem(item);
      const fields = headerFields(body);
      // Only an mbox's: these headers are written by the program that kept the mail, where a .eml
      // file's headers are the sender's.
      const labels = item.readState === 'mbox' ? gmailLabels(fields) : null;
      const deletedIn: DeletedIn | null =
        item.readState !== 'mbox'
          ? null
          : mozillaExpunged(fields)
            ? 'thunderbird'
            : labels?.includes('trash') === true
              ? 'gmail-trash'
              : null;
      if (deletedIn !== null) {
        const shown = item.shownAs ?? item.path;
        const byWhy = deleted.get(shown) ?? new Map<DeletedIn, number>();
        byWhy.set(deletedIn, (byWhy.get(deletedIn) ?? 0) + 1);
        deleted.set(shown, byWhy);
        return;
      }
      const read =
        item.readState === 'mbox'
          ? mailWasRead(fields)
          : item.readState !== 'none' && item.readState.maildirSeen;
      const fromLine =
        item.fromLineTime !== null && receivable(item.fromLineTime.getTime(), now) ? item.fromLineTime : null;
      // A message of our own export (mboxrd.ts): its stored bytes, and its receipt time in the `From `
      // line; and the id it has in the store it came from (an mbox's field, a Maildir file's name).
      const exported = item.readState === 'mbox' ? fromExportedMbox(body) : null;
      const exportedIds = exportedIdsOf(item, exported, now);
      const exportedId = exportedIds?.id ?? null;
      // The receipt time the file gives: our export's id's (to the millisecond), else its `From ` line's,
      // else the message's own Date or Received, else an mbox `From ` line's, else the file's.
      const fileTime = () =>
        (exportedId === null ? null : new Date(timeOfId(exportedId))) ??
        (exported === null ? null : fromLine) ??
        importReceiptTime(fields, now) ??
        fromLine ??
        fileReceiptTime(item.mtime, now);
      if (options.sentOf !== undefined) {
        const receivedAt = fileTime();
        const bytes = exported?.bytes ?? withoutFromLine(body);
        return tally(
          await importSentCopy(deps.parser, options.sentOf, {
            bytes,
            receivedAt,
            read,
            exportedId,
            restoreDeleted,
          }),
        );
      }
      // What Gmail judged spam is spam to the routing too: the spam policy decides (tagged by
      // default), as for mail SES judged so.
      const verdicts: Verdicts =
        labels?.includes('spam') === true ? { ...UNCHECKED_VERDICTS, spam: 'FAIL' } : UNCHECKED_VERDICTS;
      const given = options.to && options.to.length > 0 ? options.to : headerRecipients(fields);
      // In one order, so that the id does not depend on the order of --to options or headers.
      const recipients = [...new Set(given.map(canonicalAddress))].sort();
      if (recipients.length === 0) {
        failures.push({ file, reason: 'no recipient in the headers (use --to)' });
        return;
      }
      // The id is of the bytes as read (as it was before the `From ` line was left out: an export
      // imported before that is still found imported), but for an export that names its messages' ids:
      // of the bytes as stored, the same in its mbox and its Maildir, so that either imported after
      // the other finds its messages there.
      const sesMessageId = importSesMessageId(
        recipients,
        exportedId === null ? body : (exported?.bytes ?? body),
      );
      const routed = async (): Promise<RouteResult> => {
        // An earlier import first: what the Date reads as can change (a date no longer in the future,
        // a fix to how dates are read), and the same content must keep its id.
        const earlier = await earlierImportTime(deps, sesMessageId, recipients);
        const held = (id: string, to: readonly string[] = recipients) =>
          heldAlready(deps, { id, sesMessageId, recipients: to, verdicts, restoreDeleted });
        const before = earlier === null ? null : await held(messageIdFor(earlier.getTime(), sesMessageId));
        if (before !== null) return before;
        // Our export imported back into the store it came from (a restore): each message it holds
        // still, or held and deleted since, is left as it is, not added a second time under an id from
        // its content.
        const restored = exportedId === null ? null : await held(exportedId);
        if (restored !== null) return restored;
        const input = {
          // An exported mbox's `From ` line and our fields are the export's, not the message's: the
          // stored bytes come back as they were, with the trace headers they were stored with (none for
          // a sent view's copy, which never had any) and no new one (the export's time and id are kept
          // too: it is the same message, not a new receipt).
          body: exported?.bytes ?? withoutFromLine(body),
          trace: exported === null && exportedIds === null,
          mailFrom: '',
          returnPath: false,
          recipients,
          via: { protocol: 'LOCAL', helo: 'mail-relay-import' },
          verdicts,
          restoreDeleted,
        } as const;
        // Into a store that never received it, such a message keeps its id (a POP3 client's UIDL, a
        // link to it): routed under the SES message id it was received with, at the time its id says,
        // it gets the same id, as the sent view's copies keep theirs; and so does each import of it
        // after that one, which the router then finds delivered.
        if (
          earlier === null &&
          exportedIds !== null &&
          (await routableUnderOriginal(deps, exportedIds, input))
        )
          return ingest(deps, {
            ...input,
            sesMessageId: exportedIds.ses as string,
            receivedAt: new Date(timeOfId(exportedIds.id)),
          });
        // Elsewhere (the store it came from, another mailbox of it) the message gets an id from its
        // content, at the receipt time the file gives; but not in a mailbox that holds it under its
        // exported id still (or held it, and it was deleted since): a recipient all of whose
        // mailboxes do is left out, a duplicate. (An alias of such a mailbox and another is routed
        // whole: routing takes recipients, not mailboxes.)
        const receivedAt = earlier ?? fileTime();
        let to: readonly string[] = recipients;
        const kept: Outcome[] = [];
        if (exportedId !== null) {
          const rest: string[] = [];
          for (const recipient of recipients) {
            const one = await held(exportedId, [recipient]);
            if (one === null) rest.push(recipient);
            else kept.push(...one.outcomes);
          }
          if (rest.length === 0)
            return { sesMessageId, id: exportedId, size: 0, parseFailed: false, outcomes: kept };
          // The others got it under the content id from an import before: nothing to write again.
          const contentCopy =
            rest.length < recipients.length
              ? await held(messageIdFor(receivedAt.getTime(), sesMessageId), rest)
              : null;
          if (contentCopy !== null) return { ...contentCopy, outcomes: [...kept, ...contentCopy.outcomes] };
          to = rest;
        }
        const result = await ingest(deps, { ...input, recipients: to, sesMessageId, receivedAt });
        return { ...result, outcomes: [...kept, ...result.outcomes] };
      };
      // One at a time per exported id: the mbox and the Maildir of one export, imported together, hold
      // each message twice, and the second must find what the first did.
      const result = exportedId === null ? await routed() : await oneAtATime(exportedId, routed);
      for (const o of result.outcomes) {
        if (o.decision.kind === 'reject')
          refusals.push({
            file,
            recipient: o.decision.recipient,
            reply: `${o.decision.code} ${o.decision.message}`,
          });
      }
      // Mail the program it comes from had read stays read, where it says so (a Maildir's S flag, an
      // mbox's Status headers); only when delivered now: a message imported before keeps its flag.
      if (read) {
        for (const o of result.outcomes) {
          if (o.status === 'delivered' && o.decision.kind === 'deliver') {
            await deps.index.setSeen(o.decision.mailbox, result.id, true);
          }
        }
      }
      // As over SMTP, where the message would get no 250: every recipient refused is a file not imported.
      if (result.outcomes.every((o) => o.status === 'rejected')) {
        failures.push({ file, reason: 'every recipient was refused' });
        return;
      }
      tally(result);
    } catch (err) {
      // A full disk fails every message after it too: the import stops, and says so once.
      if (isStorageFull(err)) {
        full ??= errorMessage(err);
        notImported += 1;
      } else failures.push({ file, reason: errorMessage(err) });
    }
  };
  const worker = async (): Promise<void> => {
    while (full === null) {
      const item = items[next++];
      if (item === undefined) break;
      await importOne(item);
      done += 1;
      options.onProgress?.(done, items.length);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(IMPORT_CONCURRENCY, items.length) }, worker));
  } finally {
    await sources.dispose();
  }
  const c = counts;
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  // Deleted mail is not counted among the messages to import: passed over is not failed.
  const skipped = [...sources.skipped];
  let deletedCount = 0;
  for (const [path, byWhy] of deleted) {
    for (const [why, n] of byWhy) {
      deletedCount += n;
      const messages = `${n} message${n === 1 ? '' : 's'}`;
      skipped.push({
        path,
        reason:
          why === 'thunderbird'
            ? `${messages} deleted in Thunderbird (X-Mozilla-Status), still in the file until the folder is compacted`
            : `${messages} in Gmail's Trash (X-Gmail-Labels)`,
      });
    }
  }
  const total = items.length - deletedCount;
  // "files" while each file is a message, as it was before mbox files and directories.
  const what =
    items.length === sources.files
      ? `${imported}/${total} files`
      : `${imported}/${total} messages from ${sources.files} file${sources.files === 1 ? '' : 's'}`;
  // Those the full disk failed, and those not started after it.
  const diskFull =
    full === null ? null : { reason: full, notImported: notImported + Math.max(0, items.length - next) };
  const line =
    `imported ${what} in ${secs}s: delivered ${c.delivered}, duplicate ${c.duplicate}, ` +
    `quarantined ${c.quarantined}, forwarded ${c.forwarded}, rejected ${c.rejected}, dropped ${c.dropped}, ` +
    `parse failures ${c.parseFailed}, failed ${failures.length}` +
    (diskFull === null ? '' : `, not imported for a full disk ${diskFull.notImported}`);
  return { imported, counts, failures, refusals, skipped, diskFull, line };
}
