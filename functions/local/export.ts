/**
 * `mail-relay export`: a mailbox's mail out of the store, as an mbox (mboxrd, mboxrd.ts) or a
 * Maildir, oldest first, for a backup or a move to another mail system
 * (docs/adr/0022-export-mbox-and-maildir.md). Reads only: the index a page at a time (oldest first)
 * and each message's stored raw bytes (`mailboxKeys.raw`) as a stream, so memory stays that of a
 * page and a chunk, whatever the size of the mailbox or of its messages.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import {
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  stat,
  unlink,
  utimes,
} from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fsyncDir } from '../adapters/local/fs-blob-store.ts';
import { canonicalAddress, isAddress } from '../core/config.ts';
import { errorMessage, MailRelayError } from '../core/errors.ts';
import { mailboxKeys, sentMailboxKey } from '../core/keys.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { MailboxIndex, MessageEntry } from '../ports/mailbox-index.ts';
import { parseCommandArgs, usageError } from './cli-args.ts';
import { type CliIo, inStackRegion, openStackStorage } from './cli-aws.ts';
import { loadConfig, tokenMailbox } from './config-file.ts';
import { headerFields, progressBar } from './import.ts';
import { exportFields, MboxrdEncoder, maildirIdField, mboxFromLine } from './mboxrd.ts';

export type ExportFormat = 'mbox' | 'maildir';

/** Index entries read at once: a page in memory, few round trips to DynamoDB. */
export const EXPORT_PAGE_SIZE = 200;
/** How much of a message's start is read for its envelope sender before its first byte is written. */
const HEAD_BYTES = 64 * 1024;

export interface ExportStore {
  readonly index: MailboxIndex;
  readonly blobs: BlobStore;
  /** Where the store is (the data dir, or the stack's bucket and table), for a failure's message. */
  readonly where?: string | undefined;
}

export interface ExportSummary {
  readonly messages: number;
  /** Bytes written (the mbox file, or the Maildir's message files). */
  readonly bytes: number;
  /** Listed, then deleted before their bytes were read (a client or retention, while exporting). */
  readonly gone: number;
  /** Maildir with `force`: messages already in it from an earlier export, not written again. */
  readonly present: number;
}

/** The problems an export reports in one line (exit code 1), with a stable code. */
export class ExportError extends MailRelayError {}

/**
 * The store failed while the export read it (S3 or a file failing mid-body, a blob the index names
 * missing, a DynamoDB page refused): `commandExport` says it in one line, with what became of the
 * output; `written` messages were complete before it.
 */
export class ExportReadError extends ExportError {
  constructor(
    message: string,
    readonly written: number,
    options?: { cause?: unknown },
  ) {
    super('export_read_failed', message, options);
  }
}

/** A message as the user can find it: its id, subject and receipt time. */
function describeEntry(entry: MessageEntry): string {
  const subject = entry.subject === '' ? '' : `"${entry.subject}", `;
  return `message ${entry.id} (${subject}received ${entry.receivedAt})`;
}

/**
 * The stored bytes of `entry` as a stream, or null when the message was deleted meanwhile (its index
 * entry is gone too: a delete removes the entry before the blobs, ADR 5). A blob missing under an entry
 * that is still there is not that: the store lost it, and the export says so rather than leave the
 * message out of a backup without a word.
 */
async function openMessage(store: ExportStore, mailbox: string, entry: MessageEntry, written: number) {
  const stream = await reading(store, entry, written, () =>
    store.blobs.getStream(mailboxKeys.raw(mailbox, entry.id)),
  );
  if (stream !== null) return stream;
  if ((await reading(store, entry, written, () => store.index.get(mailbox, entry.id))) === null) return null;
  throw new ExportReadError(
    `${describeEntry(entry)} of ${mailbox} is in the index${inStore(store)} but its stored bytes ` +
      `(${mailboxKeys.raw(mailbox, entry.id)}) are missing: put them back, or delete the message ` +
      '(DELETE /v1/mailboxes/{address}/messages/{id}), and export again',
    written,
  );
}

function inStore(store: ExportStore): string {
  return store.where === undefined ? '' : ` of ${store.where}`;
}

/** Runs a read of `entry`'s bytes; a failure is an ExportReadError naming the message. */
async function reading<T>(
  store: ExportStore,
  entry: MessageEntry,
  written: number,
  read: () => Promise<T>,
): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof ExportError) throw err;
    throw new ExportReadError(
      `cannot read ${describeEntry(entry)}${store.where === undefined ? '' : ` from ${store.where}`}: ` +
        `${errorMessage(err)}; export again (if it fails on the same message again, its stored bytes are damaged)`,
      written,
      { cause: err },
    );
  }
}

/** The mailbox's counters; a failure is an ExportReadError (before anything was written). */
async function statOf(store: ExportStore, mailbox: string) {
  try {
    return await store.index.stat(mailbox);
  } catch (err) {
    throw new ExportReadError(
      `cannot read the mailbox ${mailbox}${store.where === undefined ? '' : ` in ${store.where}`}: ${errorMessage(err)}`,
      0,
      { cause: err },
    );
  }
}

/** A mailbox's entries, oldest first, a page at a time; `written()` says how many were exported. */
export async function* entriesOldestFirst(
  store: Pick<ExportStore, 'index' | 'where'>,
  mailbox: string,
  written: () => number = () => 0,
): AsyncGenerator<MessageEntry> {
  const { index } = store;
  let cursor: string | undefined;
  let last: MessageEntry | undefined;
  do {
    let page: Awaited<ReturnType<MailboxIndex['list']>>;
    try {
      page = await index.list(mailbox, { limit: EXPORT_PAGE_SIZE, cursor, oldestFirst: true });
    } catch (err) {
      const where = last === undefined ? '' : ` after ${describeEntry(last)}`;
      throw new ExportReadError(
        `cannot list the mail of ${mailbox}${store.where === undefined ? '' : ` in ${store.where}`}${where}: ` +
          `${errorMessage(err)}; export again`,
        written(),
        { cause: err },
      );
    }
    yield* page.items;
    last = page.items.at(-1) ?? last;
    cursor = page.nextCursor ?? undefined;
  } while (cursor !== undefined);
}

/** The start of a stream (at least `HEAD_BYTES` when it is that long), and an iterator of the rest. */
async function readHead(stream: Readable): Promise<{ head: Buffer[]; rest: AsyncIterator<Buffer> }> {
  const rest = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let length = 0;
  while (length < HEAD_BYTES) {
    const next = await rest.next();
    if (next.done === true) break;
    head.push(next.value);
    length += next.value.length;
  }
  return { head, rest };
}

/**
 * The envelope sender a stored message names: its topmost `Return-Path:` (SES's, or the local SMTP
 * listener's), else '' (none, or not known, as for imported mail: `MAILER-DAEMON`).
 */
export function envelopeSender(head: Buffer): string {
  const returnPath = headerFields(head).find((f) => f.name === 'return-path')?.value;
  if (returnPath === undefined) return '';
  return /^<([^>]*)>/.exec(returnPath)?.[1] ?? returnPath.split(/\s/)[0] ?? '';
}

/** Whether the message's line ends are CRLF throughout (then written as LF, and marked so). */
function crlfThroughout(entry: MessageEntry, head: Buffer): boolean {
  // crlfSize is the size once every line end is CRLF: equal only when they all are (and the last line
  // has one). The start is looked at too, for entries stored before crlfSize was (which read back as size).
  if (entry.crlfSize !== entry.size) return false;
  for (let lf = head.indexOf(10); lf !== -1; lf = head.indexOf(10, lf + 1))
    if (head[lf - 1] !== 13) return false;
  return head.length === 0 || head.indexOf(10) !== -1;
}

/** Where bytes go: `write` resolves when they are taken (a pipe's backpressure waited out). */
interface Sink {
  write(bytes: Buffer): Promise<void>;
}

/** A stream (stdout) as a sink; a closed pipe fails the next write. */
export function streamSink(out: NodeJS.WritableStream): Sink {
  let failed: Error | null = null;
  out.on('error', (err: Error) => {
    failed = err;
  });
  return {
    write: async (bytes) => {
      if (failed !== null) throw failed;
      if (out.write(bytes)) return;
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          out.off('error', onError);
          resolve();
        };
        const onError = (err: Error) => {
          out.off('drain', onDrain);
          reject(err);
        };
        out.once('drain', onDrain);
        out.once('error', onError);
      });
    },
  };
}

export interface ExportRun {
  readonly store: ExportStore;
  /** The index key: a mailbox, or its sent view (`sentMailboxKey`). */
  readonly mailbox: string;
  /**
   * The `From ` line's sender for a message without `Return-Path:`: for the sent view its owner, who
   * was the envelope sender of everything in it (`POST …/send` sends from the mailbox).
   */
  readonly sender?: string | undefined;
  /**
   * Write each message's SES message id beside its id (mboxrd.ts): for an inbox, whose mail `import`
   * routes under it again in another store, which gives it the same id. Not for the sent view, whose
   * ids `import --sent-of` keeps as they are.
   */
  readonly sesIds?: boolean | undefined;
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
}

/** The SES message id an export of `run` writes for `entry` (ExportRun.sesIds), if any. */
function sesIdOf(run: ExportRun, entry: MessageEntry): string | undefined {
  return run.sesIds === true ? entry.sesMessageId : undefined;
}

/**
 * Writes the mailbox as mboxrd to `sink`, oldest first. Each message: its `From ` line (envelope
 * sender, receipt time), our fields (read state, what `import` needs to give the bytes back), the
 * stored bytes escaped, with CRLF as LF when the message's line ends are CRLF throughout.
 */
export async function exportMbox(run: ExportRun, sink: Sink): Promise<ExportSummary> {
  const { store, mailbox } = run;
  const total = (await statOf(store, mailbox)).messages;
  let messages = 0;
  let bytes = 0;
  let gone = 0;
  const put = async (b: Buffer) => {
    if (b.length === 0) return;
    bytes += b.length;
    await sink.write(b);
  };
  for await (const entry of entriesOldestFirst(store, mailbox, () => messages)) {
    const stream = await openMessage(store, mailbox, entry, messages);
    if (stream === null) {
      gone += 1;
      continue;
    }
    // Only the reads are named as the message's failure: a write that fails is the output's.
    const read = <T>(fn: () => Promise<T>) => reading(store, entry, messages, fn);
    try {
      const { head, rest } = await read(() => readHead(stream));
      const start = Buffer.concat(head);
      const crlf = crlfThroughout(entry, start);
      await put(
        Buffer.from(
          mboxFromLine(envelopeSender(start) || (run.sender ?? ''), new Date(entry.receivedAt)) +
            exportFields(entry.seen, crlf, entry.size, entry.id, sesIdOf(run, entry)),
          'latin1',
        ),
      );
      const encoder = new MboxrdEncoder(crlf);
      await put(encoder.push(start));
      for (
        let next = await read(() => rest.next());
        next.done !== true;
        next = await read(() => rest.next())
      ) {
        await put(encoder.push(next.value));
      }
      await put(encoder.end());
    } finally {
      stream.destroy();
    }
    messages += 1;
    run.onProgress?.(messages + gone, total);
  }
  return { messages, bytes, gone, present: 0 };
}

/** A file of our own as a sink: each write is a write(2) at the end. */
function fileSink(handle: FileHandle): Sink {
  return {
    write: async (bytes) => {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await handle.write(bytes, done);
        // A write that takes nothing and says nothing would be retried for ever: the disk is full.
        if (bytesWritten === 0) {
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        }
        done += bytesWritten;
      }
    },
  };
}

/**
 * The mbox to the file at `path`, written beside it (`.<name>.<pid>.tmp`, mode 0600: it is mail) and
 * synced, then put in place at once: a reader, or an export that fails halfway, never leaves a
 * partial file under the name. Without `force` an existing file is refused (also one made meanwhile:
 * the file is linked into place, which does not replace); with it, the export replaces it.
 */
export async function exportMboxToFile(run: ExportRun, path: string, force: boolean): Promise<ExportSummary> {
  await refuseExisting(path, 'mbox', force);
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  let handle: FileHandle;
  try {
    handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    throw unwritable(path, err);
  }
  let placed = false;
  try {
    const summary = await exportMbox(run, fileSink(handle));
    await handle.sync();
    await handle.close();
    if (force) await rename(temp, path);
    else {
      await link(temp, path).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST' ? exists(path, 'mbox') : unwritable(path, err);
      });
      await unlink(temp);
    }
    placed = true;
    return summary;
  } finally {
    if (!placed) {
      await handle.close().catch(() => undefined);
      await rm(temp, { force: true });
    }
  }
}

function exists(path: string, format: ExportFormat): ExportError {
  return new ExportError(
    'export_target_exists',
    format === 'mbox'
      ? `${path} exists; give another --out, or --force to replace it`
      : `${path} exists and is not an empty directory; give another --out, or --force to add what it does not hold yet (if it is a Maildir)`,
  );
}

function unwritable(path: string, err: unknown): ExportError {
  const code = (err as NodeJS.ErrnoException).code ?? String(err);
  return new ExportError('export_target_unwritable', `cannot write ${path} (${code})`, { cause: err });
}

/** Refuses what is at `path` (see `exists`); returns whether a Maildir to add to is there (`force`). */
async function refuseExisting(path: string, format: ExportFormat, force: boolean): Promise<boolean> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw unwritable(path, err);
  });
  if (info === null) return false;
  if (format === 'mbox') {
    if (!info.isFile()) throw new ExportError('export_target_exists', `${path} exists and is not a file`);
    if (!force) throw exists(path, format);
    return false;
  }
  if (!info.isDirectory()) throw exists(path, format);
  // Maildir++ folders (`.Sent`, Dovecot's layout; `export --sent` writes one) are not the inbox's:
  // a Maildir that holds only those is empty, so that its inbox can be exported after its sent mail.
  const entries = (await readdir(path, { withFileTypes: true }))
    .filter((e) => !(e.isDirectory() && e.name.startsWith('.')))
    .map((e) => e.name);
  if (entries.length === 0) return false;
  const maildir = ['cur', 'new', 'tmp'].every((d) => entries.includes(d));
  if (!force || !maildir) throw exists(path, format);
  return true;
}

/**
 * The Maildir name's host part (https://cr.yp.to/proto/maildir.html): this host's name, its `/` and
 * `:` written as `\057` and `\072`.
 */
function maildirHost(): string {
  return (hostname() || 'localhost').replace(/\//g, '\\057').replace(/:/g, '\\072');
}

/**
 * A message's unique Maildir name: `<seconds>.M<microseconds>R<hex>.<host>,I=<id>`, and `,E=<SES message
 * id>` with `ses` (mboxrd.ts, maildirIdField), the receipt time (so
 * that names sort as the mail arrived, and readers that date by it date right) and, as the spec's
 * `R` (a random number, in hex), 128 bits of a hash of the message id: the same message gets the
 * same name in every export, so `--force` knows what a Maildir holds already.
 */
export function maildirName(entry: MessageEntry, ses: string | undefined): string {
  const ms = Date.parse(entry.receivedAt);
  // Microseconds in six digits, so that names sort by time within a second too.
  const micros = String((ms % 1000) * 1000).padStart(6, '0');
  return `${Math.floor(ms / 1000)}.M${micros}R${maildirR(entry)}.${maildirHost()}${maildirIdField(entry.id, ses)}`;
}

/** The `R` part of a message's Maildir name: 128 bits of a hash of its id, in hex. */
function maildirR(entry: MessageEntry): string {
  return createHash('sha256').update(entry.id).digest('hex').slice(0, 32);
}

const MAILDIR_R_RE = /^\d+\.M\d+R([0-9a-f]{32})\./;

/** The `R` parts of the names in a Maildir's cur/ and new/ (what an earlier export wrote). */
async function namesIn(dir: string): Promise<Set<string>> {
  const found = new Set<string>();
  for (const sub of ['cur', 'new']) {
    for (const name of await readdir(join(dir, sub))) {
      const r = MAILDIR_R_RE.exec(name)?.[1];
      if (r !== undefined) found.add(r);
    }
  }
  return found;
}

/**
 * The mailbox as a Maildir at `dir` (made, with cur/, new/ and tmp/, mode 0700): each message's
 * stored bytes, as they are, written to tmp/, synced, dated by its receipt time, and renamed into
 * new/ (unread) or cur/ with `:2,S` (read), as the spec delivers. Refused when `dir` exists and is
 * not an empty directory; with `force`, an existing Maildir gets the messages it does not hold yet.
 */
export async function exportMaildir(run: ExportRun, dir: string, force: boolean): Promise<ExportSummary> {
  const { store, mailbox } = run;
  const adding = await refuseExisting(dir, 'maildir', force);
  try {
    for (const sub of ['', 'tmp', 'new', 'cur'])
      await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw unwritable(dir, err);
  }
  const present = adding ? await namesIn(dir) : new Set<string>();
  const total = (await statOf(store, mailbox)).messages;
  let messages = 0;
  let bytes = 0;
  let gone = 0;
  let skipped = 0;
  for await (const entry of entriesOldestFirst(store, mailbox, () => messages)) {
    if (present.has(maildirR(entry))) {
      skipped += 1;
      run.onProgress?.(messages + gone + skipped, total);
      continue;
    }
    const stream = await openMessage(store, mailbox, entry, messages);
    if (stream === null) {
      gone += 1;
      continue;
    }
    const name = maildirName(entry, sesIdOf(run, entry));
    const temp = join(dir, 'tmp', name);
    let handle: FileHandle;
    try {
      handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (err) {
      stream.destroy();
      throw unwritable(temp, err);
    }
    try {
      const sink = fileSink(handle);
      const chunks = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      const next = () => reading(store, entry, messages, () => chunks.next());
      for (let chunk = await next(); chunk.done !== true; chunk = await next()) {
        await sink.write(chunk.value);
        bytes += chunk.value.length;
      }
      await handle.sync();
    } catch (err) {
      await handle.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw err;
    } finally {
      stream.destroy();
    }
    await handle.close();
    const at = new Date(entry.receivedAt);
    await utimes(temp, at, at);
    await rename(temp, entry.seen ? join(dir, 'cur', `${name}:2,S`) : join(dir, 'new', name));
    messages += 1;
    run.onProgress?.(messages + gone + skipped, total);
  }
  // The renames are entries of cur/ and new/: durable once the directories are synced.
  for (const sub of ['cur', 'new']) await fsyncDir(join(dir, sub));
  return { messages, bytes, gone, present: skipped };
}

export const EXPORT_USAGE = `Usage: mail-relay export <mailbox> [--sent] [--out <path>] [--format mbox|maildir] [--force] [--stack <name>]
  writes every message of the mailbox, oldest first, as stored (trace headers included), with its
  read state, from $MAIL_RELAY_DATA_DIR (also while mail-relay dev runs on it) or a deployed stack
  --sent    the mailbox's sent view instead (what it sent with POST …/send): --out alice.sent.mbox, or
            a Maildir++ folder beside its inbox's Maildir (--format maildir --out ~/Maildir/.Sent)
  --format  mbox (default): one mboxrd file, which mutt, Thunderbird, Apple Mail, Python's mailbox and
            mail-relay import read; maildir: a Maildir (cur/, new/, tmp/) for Dovecot, mutt, notmuch
  --out     the mbox file or the Maildir directory; without it the mbox goes to stdout (pipe it:
            | gzip > backup.mbox.gz); a Maildir needs one
  --force   replace an existing mbox file (once the export is complete), or add to an existing Maildir
            the messages it does not hold yet; without it an existing file or non-empty directory is
            refused
  --stack   from the deployed stack (S3 + DynamoDB, read only, with your AWS credentials)
The quarantine is a mailbox of its own: export it by its address (quarantineMailbox in the configuration).
Back in: mail-relay import --to <mailbox> <the mbox or Maildir>; the sent view: import --sent-of <mailbox>`;

/** `mail-relay export`: see EXPORT_USAGE. Returns the exit code. */
export async function commandExport(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'export',
      usage: EXPORT_USAGE,
      options: {
        out: { type: 'string' },
        format: { type: 'string' },
        force: { type: 'boolean', default: false },
        sent: { type: 'boolean', default: false },
        stack: { type: 'string' },
      },
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const [raw, ...extra] = positionals;
  if (raw === undefined || extra.length > 0)
    return usageError(io, 'export', 'give one mailbox address', EXPORT_USAGE);
  const mailbox = canonicalAddress(raw);
  if (!isAddress(mailbox)) return usageError(io, 'export', `${raw} is not an address`, EXPORT_USAGE);
  const format = values.format ?? 'mbox';
  if (format !== 'mbox' && format !== 'maildir')
    return usageError(io, 'export', `--format ${format}: mbox or maildir`, EXPORT_USAGE);
  if (values.out === '') return usageError(io, 'export', '--out needs a path', EXPORT_USAGE);
  if (values.stack === '') return usageError(io, 'export', '--stack needs a stack name', EXPORT_USAGE);
  if (format === 'maildir' && values.out === undefined)
    return usageError(io, 'export', 'a Maildir is a directory: give --out <path>', EXPORT_USAGE);
  if (values.out === undefined && io.out.isTTY === true)
    return usageError(
      io,
      'export',
      'the mbox would go to the terminal: give --out <path>, or redirect (> backup.mbox)',
      EXPORT_USAGE,
    );
  const { config, awsRegion } = loadConfig(io.env);
  const sent = values.sent === true;
  // What is read (the index key), and how the messages say it.
  const key = sent ? sentMailboxKey(mailbox) : mailbox;
  const what = sent ? `the sent mail of ${mailbox}` : mailbox;
  const mail = sent ? 'sent mail' : 'mail';
  const run = async (store: ExportStore & { where: string }): Promise<number> => {
    const stat = await statOf(store, key);
    const configured = !('problem' in tokenMailbox(config, mailbox));
    if (stat.messages === 0 && configured) io.err.write(`${mailbox} has no ${mail} in ${store.where}\n`);
    if (stat.messages === 0 && !configured) {
      io.err.write(
        `mail-relay export: no ${mail} stored for ${mailbox} in ${store.where}, and it is not a mailbox in the configuration\n`,
      );
      return 1;
    }
    const tty = io.err.isTTY === true;
    const exportRun: ExportRun = {
      store,
      mailbox: key,
      sender: sent ? mailbox : undefined,
      sesIds: !sent,
      onProgress: tty ? (done, total) => io.err.write(`\r${progressBar(done, total)}`) : undefined,
    };
    const force = values.force === true;
    const target = values.out === undefined ? 'stdout' : resolve(values.out);
    let summary: ExportSummary;
    try {
      summary =
        values.out === undefined
          ? await exportMbox(exportRun, streamSink(io.out))
          : format === 'mbox'
            ? await exportMboxToFile(exportRun, target, force)
            : await exportMaildir(exportRun, target, force);
    } finally {
      if (tty && stat.messages > 0) io.err.write('\n');
    }
    const n = summary.messages;
    const notes = [
      ...(summary.present > 0 ? [`${summary.present} already in the Maildir`] : []),
      ...(summary.gone > 0 ? [`${summary.gone} deleted while exporting`] : []),
    ];
    io.err.write(
      `exported ${n} message${n === 1 ? '' : 's'} (${(summary.bytes / 1e6).toFixed(1)} MB) of ${what} ` +
        `to ${target}${notes.length > 0 ? `; ${notes.join(', ')}` : ''}\n`,
    );
    return 0;
  };
  try {
    if (values.stack !== undefined) {
      const stack = values.stack;
      return await inStackRegion(awsRegion, async () => {
        const storage = await openStackStorage(config, stack);
        try {
          return await run(storage);
        } finally {
          storage.close();
        }
      });
    }
    const { dataDirFromEnv, noDataIn } = await import('./runtime.ts');
    const dataDir = dataDirFromEnv(io.env);
    const indexPath = join(dataDir, 'index.sqlite');
    const noData = noDataIn(dataDir);
    if (noData !== null) {
      io.err.write(`mail-relay export: ${noData}\n`);
      return 1;
    }
    const [{ SqliteMailboxIndex }, { FsBlobStore }] = await Promise.all([
      import('../adapters/local/sqlite-mailbox-index.ts'),
      import('../adapters/local/fs-blob-store.ts'),
    ]);
    // Reads only, beside a running dev too: SQLite in WAL mode gives each page read a snapshot of
    // committed data, and a blob is written before the entry that names it.
    const index = new SqliteMailboxIndex(indexPath);
    const blobs = new FsBlobStore({ root: join(dataDir, 'blobs'), durability: 'sync' });
    try {
      return await run({ index, blobs, where: dataDir });
    } finally {
      await index.close();
      await blobs.close();
    }
  } catch (err) {
    if (err instanceof ExportReadError) {
      io.err.write(`mail-relay export: ${err.message}; ${readFailureOutcome(err, format, values.out)}\n`);
      return 1;
    }
    if (err instanceof ExportError) {
      io.err.write(`mail-relay export: ${err.message}\n`);
      return 1;
    }
    if (isClosedPipe(err)) {
      io.err.write('mail-relay export: the output was closed before the export ended\n');
      return 1;
    }
    // The data dir is only read, and its reads fail as ExportReadError: an I/O error (ENOSPC, EIO,
    // EDQUOT) is the output's, whose disk is the one to see to.
    if (isIoError(err)) {
      const where = values.out === undefined ? 'standard output' : resolve(values.out);
      io.err.write(
        `mail-relay export: could not write to ${where}: ${errorMessage(err)}; ${writeFailureOutcome(format, values.out)}\n`,
      );
      return 1;
    }
    throw err;
  }
}

/** An error of the system (an errno code), not SQLite's or ours. */
function isIoError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code);
}

/** What a failed write left of the output: the rest of its one line. */
function writeFailureOutcome(format: ExportFormat, out: string | undefined): string {
  if (out === undefined) return 'the mbox written there is incomplete';
  if (format === 'mbox') return `nothing was written to ${resolve(out)}`;
  return `the messages written before it are in ${resolve(out)} (--force adds the rest)`;
}

/** What a read failure left of the output, and what to do: the rest of its one line. */
function readFailureOutcome(err: ExportReadError, format: ExportFormat, out: string | undefined): string {
  if (out === undefined) return `the mbox on stdout is incomplete (${err.written} messages complete)`;
  const path = resolve(out);
  if (format === 'mbox') return `nothing was written to ${path}`;
  const n = err.written;
  return `the ${n} message${n === 1 ? '' : 's'} before it are in ${path} (--force adds the rest)`;
}

/** The reader of stdout went away (`export | head`). */
function isClosedPipe(err: unknown): boolean {
  return (
    (err as NodeJS.ErrnoException)?.code === 'EPIPE' ||
    (err as NodeJS.ErrnoException)?.code === 'ERR_STREAM_DESTROYED'
  );
}
