/**
 * What `mail-relay import` reads: .eml files, mbox files (what Thunderbird, mutt, Apple Mail and
 * Google Takeout export) and directories (a Maildir, a folder of .eml files), expanded into the
 * messages they hold. An mbox is split at its `From ` lines without a copy: each message is its
 * byte range of the file, from its `From ` line to the next one's, so the messages together are the
 * file (each is stored without its `From ` line: `withoutFromLine`).
 */
import { createReadStream, createWriteStream, type Dirent, rmSync, type Stats } from 'node:fs';
import { type FileHandle, mkdtemp, open, readdir, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { errorMessage } from '../core/errors.ts';
import { monthNumber, numericZoneOffset } from '../core/mail-date.ts';
import { decodeHeaderText } from '../core/mime-header.ts';
import { MBOX_BARE_FROM_LINE_RE, MBOX_FROM_LINE_RE, messageStart } from './ingest.ts';

/** One message to import: `[start, end)` of the file at `path`. */
export interface ImportItem {
  /** How it is named in failures and refusals: the path, with `#n` for the n-th message of an mbox. */
  readonly label: string;
  readonly path: string;
  readonly start: number;
  readonly end: number;
  /** The file's modification time (a last resort for the receipt time). */
  readonly mtime: Date;
  /** The mbox `From ` line's time, when the message has one (UTC unless the line names an offset). */
  readonly fromLineTime: Date | null;
  /**
   * Where the mail program that kept it says whether it was read: `{maildirSeen}` (the `S` flag of a
   * file in `cur/`, in its name), `mbox` (a message of an mbox: its `Status`, `X-Mozilla-Status` or
   * `X-Gmail-Labels` header, `mailWasRead`), or `none` (a single file: what its headers claim is the
   * sender's word).
   */
  readonly readState: 'none' | 'mbox' | { readonly maildirSeen: boolean };
  /**
   * A file of a Maildir's `cur/` or `new/`: the only place where its name may carry the ids our
   * Maildir export gives a message (`,I=<id>,E=<ses>`, mboxrd.ts); a name elsewhere is just a name.
   */
  readonly inMaildir?: boolean;
  /** The file as the user named it, where `path` is a copy of it (a pipe's). */
  readonly shownAs?: string;
  /**
   * Why it cannot be read, found while listing a directory (a symbolic link whose target is not there,
   * a link loop): a failure of its own, as a file given by name that cannot be read is.
   */
  readonly failure?: string;
}

export interface ImportSources {
  readonly items: readonly ImportItem[];
  /** Files given or found. */
  readonly files: number;
  /**
   * What is passed over, with why: files inside directories that are not mail (an index, notes), empty
   * files, Maildir++ folders inside a Maildir, a `cur/`'s messages marked deleted (one line for them),
   * symbolic links to directories (not followed), a second name of a file already read (a link to it),
   * entries that are no regular file (a FIFO, a socket).
   */
  readonly skipped: readonly { readonly path: string; readonly reason: string }[];
  /** Removes the copies made of pipes given by name (`<(…)`, `/dev/stdin`): once the items are read. */
  dispose(): Promise<void>;
}

const NL_FROM = Buffer.from('\nFrom ');
/** Enough of a line to tell a `From ` line (sender, weekday, month, day, time). */
const FROM_LINE_PREFIX = 400;
/**
 * The date of a `From ` line: `Tue Mar  4 09:15:00 2025`, an optional zone before or after the year
 * (UW IMAP's c-client, so Pine and Alpine, write `Tue Mar  4 09:15:00 2025 +0200`).
 */
const FROM_LINE_TIME_RE =
  /^From \S+ +\w{3} +(\w{3}) +(\d{1,2}) +(\d{1,2}):(\d\d)(?::(\d\d))?(?: +[A-Z]{2,5})?(?: +([+-]\d{4}))? +(\d{4})(?: +([+-]\d{4}))?\b/;

/**
 * Whether a `From ` line starts at `start` (past the file's first line). `bare` also takes one that
 * names the sender alone, without a date (what Python's `mailbox` writes for `set_from(sender)`),
 * where a blank line precedes it: the file's first line was one such, and mboxo writers escape the
 * body's `From ` lines.
 */
function isFromLine(buf: Buffer, start: number, bare = false): boolean {
  const line = buf.toString('latin1', start, Math.min(buf.length, start + FROM_LINE_PREFIX));
  if (MBOX_FROM_LINE_RE.test(line)) return true;
  if (!bare || !MBOX_BARE_FROM_LINE_RE.test(line)) return false;
  const before = buf[start - 2] === 0x0d ? start - 3 : start - 2;
  return buf[before] === 0x0a;
}

/**
 * Where an mbox's first message starts, behind a UTF-8 byte order mark and blank lines (some
 * converters begin with one), and whether its `From ` lines are bare; null when it is no mbox.
 */
function firstFromLine(buf: Buffer): { start: number; bare: boolean } | null {
  const bom = bomLength(buf);
  let start = bom;
  while (buf[start] === 0x0a || buf[start] === 0x0d) start += 1;
  // Right behind a mark, the mark stays in the first message (bomLength). Compared with the mark's
  // length, three blank lines (`\n\n\n`, `\r\n\n`) in a file without one were taken for it.
  const at = start === bom ? 0 : start;
  if (isFromLine(buf, start)) return { start: at, bare: false };
  // The first one needs no blank line before it: the file's start, blank lines or a mark are as good.
  const line = buf.toString('latin1', start, Math.min(buf.length, start + FROM_LINE_PREFIX));
  return MBOX_BARE_FROM_LINE_RE.test(line) ? { start: at, bare: true } : null;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * 3 when the file starts with a UTF-8 byte order mark (an export saved by a Windows editor), else 0.
 * The mark stays part of the first message as read (the messages together are the file, and its id
 * is of those bytes); before a `From ` line it is left out of what is stored (`withoutFromLine`),
 * and elsewhere ingest.ts and the parser read past it.
 */
function bomLength(buf: Buffer): number {
  return buf.subarray(0, BOM.length).equals(BOM) ? BOM.length : 0;
}

/**
 * A message of an mbox (or a file starting with a `From ` line) as it is stored: without its `From `
 * line, the mbox's separator and no part of the message (RFC 4155), nor a UTF-8 byte order mark before
 * it. Kept, that line sat among the headers, where it is not a field: a client fetching the message
 * over POP3 into an mbox (mpop, fetchmail's MDAs) escapes it as `>From `, and mbox readers then end
 * the headers there, losing From, To and Subject. Converters to Maildir drop it as well. What it names
 * is not lost: its time is the receipt time when the message has no date of its own (`fromLineTime`),
 * and its sender is the envelope sender a mail store also writes as `Return-Path:` (Thunderbird writes
 * `From - <date>`, Google Takeout a thread number). A message without such a line is returned as it is.
 */
export function withoutFromLine(message: Buffer): Buffer {
  const start = bomLength(message);
  const line = message.toString('latin1', start, Math.min(message.length, start + FROM_LINE_PREFIX));
  if (!MBOX_FROM_LINE_RE.test(line) && !MBOX_BARE_FROM_LINE_RE.test(line)) return message;
  const lf = message.indexOf(0x0a, start);
  return lf === -1 ? message.subarray(message.length) : message.subarray(lf + 1);
}

/** The time a `From ` line names, or null when it names none this reads. */
export function fromLineTime(line: string): Date | null {
  const m = FROM_LINE_TIME_RE.exec(line);
  if (m === null) return null;
  const [, mon, day, hh, mm, ss, zoneBefore, year, zoneAfter] = m;
  const month = monthNumber(mon ?? '');
  if (month === null) return null;
  // As parseMailDate: no time past 23:59:60, no day the month does not have (Date.UTC rolls `Feb 31`
  // over into March, `25:00` into the next day), no zone that is none (minutes past 59, `+9900`: its
  // numericZoneOffset, the same rule).
  const zone = zoneBefore ?? zoneAfter;
  const offset =
    zone === undefined ? 0 : numericZoneOffset(zone.slice(0, 1), zone.slice(1, 3), zone.slice(3, 5));
  if (offset === null || Number(hh) > 23 || Number(mm) > 59 || Number(ss ?? 0) > 60) return null;
  const ms = Date.UTC(
    Number(year),
    month,
    Number(day),
    Number(hh),
    Number(mm),
    Math.min(Number(ss ?? 0), 59),
  );
  if (new Date(ms).getUTCDate() !== Number(day)) return null;
  return new Date(ms - offset * 60_000);
}

/**
 * Where each message of an mbox starts: its first `From ` line (0, or past blank lines), then each
 * line that is a `From ` line (as ingest.ts tells one: sender, weekday, month, day and time; or, in a
 * file whose first one names the sender alone, such a line after a blank line). Read as a stream; null when the file does not begin
 * with a `From ` line (not an mbox), after a UTF-8 byte order mark if it has one.
 */
export async function mboxOffsets(path: string): Promise<number[] | null> {
  const offsets: number[] = [];
  let carry: Buffer = Buffer.alloc(0);
  /** The file offset of `carry`'s first byte. */
  let base = 0;
  let first = true;
  let bare = false;
  const scan = (buf: Buffer, ended: boolean): number => {
    // Bytes from `keep` on may start a `From ` line not yet complete: looked at again with more, with
    // the two bytes before it (a bare `From ` line needs the blank line before it).
    let keep = ended ? buf.length : Math.max(0, buf.length - (NL_FROM.length - 1) - 2);
    for (let k = buf.indexOf(NL_FROM); k >= 0; k = buf.indexOf(NL_FROM, k + 1)) {
      const lineEnd = buf.indexOf(10, k + 1);
      if (lineEnd < 0 && !ended && buf.length - (k + 1) < FROM_LINE_PREFIX) {
        keep = Math.min(keep, Math.max(0, k - 2));
        break;
      }
      // Bytes looked at again may hold one found before.
      const at = base + k + 1;
      if (at > (offsets.at(-1) ?? -1) && isFromLine(buf, k + 1, bare)) offsets.push(at);
    }
    return keep;
  };
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const buf = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
    if (first) {
      if (buf.length < FROM_LINE_PREFIX && buf.indexOf(10) < 0) {
        carry = buf; // too little to tell yet
        continue;
      }
      first = false;
      const found = firstFromLine(buf);
      if (found === null) return null;
      bare = found.bare;
      offsets.push(found.start);
    }
    const keep = scan(buf, false);
    carry = buf.subarray(keep);
    base += keep;
  }
  if (first) {
    const found = carry.length === 0 ? null : firstFromLine(carry);
    if (found === null) return null;
    bare = found.bare;
    offsets.push(found.start);
  }
  scan(carry, true);
  return offsets;
}

/** How much of a message is read for its `Content-Length:` (mailparser's limit on a header block). */
const HEADER_READ_BYTES = 64 * 1024;
const CONTENT_LENGTH_RE = /^content-length:[ \t]*(\d{1,15})[ \t]*\r?$/im;

/**
 * The messages of an mbox, from the offsets of its `From ` lines: where each starts, and the time its
 * `From ` line names. One read of each message's start (its headers, up to 64 KiB).
 *
 * mboxcl and mboxcl2 (Solaris and System V mail, some mutt folders) give each message's body length
 * in a `Content-Length:` header, and mboxcl2 does not escape body lines starting "From ": a quoted or
 * forwarded mbox line in a body would cut the message in two. Where a message's Content-Length
 * leads exactly to a later `From ` line (or the end of the file), past a line end or not, the `From `
 * lines before it are its body, not separators. A length that leads elsewhere (a stale header, a
 * sender's own) is not believed, and the split stays at every `From ` line.
 */
async function mboxMessages(
  handle: FileHandle,
  offsets: readonly number[],
  size: number,
): Promise<{ start: number; fromLineTime: Date | null }[]> {
  const starts = [...offsets];
  const out: { start: number; fromLineTime: Date | null }[] = [];
  for (let i = 0; i < starts.length; i += 1) {
    const start = starts[i] ?? 0;
    // The headers are before the next `From ` line, a true one or not: no header line starts "From ".
    const head = Buffer.alloc(Math.min(HEADER_READ_BYTES, (starts[i + 1] ?? size) - start));
    const { bytesRead } = await handle.read(head, 0, head.length, start);
    const text = head.toString('latin1', 0, bytesRead);
    out.push({ start, fromLineTime: fromLineTime(text.slice(bomLength(head)).split(/\r?\n/, 1)[0] ?? '') });
    if (i === starts.length - 1) break;
    const blank = /\n\r?\n/.exec(text);
    const length = blank === null ? null : CONTENT_LENGTH_RE.exec(text.slice(0, blank.index + 1));
    if (blank === null || length === null) continue;
    const target = start + blank.index + blank[0].length + Number(length[1]);
    const ends = [target, target + 1, target + 2];
    if (ends.includes(size)) break;
    const j = starts.findIndex((o, k) => k > i && ends.includes(o));
    if (j > i + 1) starts.splice(i + 1, j - i - 1);
  }
  return out;
}

/**
 * Whether an mbox message's headers say it was read: `Status: RO` (mutt, pine, Apple Mail, and
 * Thunderbird alongside its own), `X-Mozilla-Status` with its read bit (0x0001), or Google Takeout's
 * `X-Gmail-Labels` without `Unread`. False when none of them is there.
 */
export function mailWasRead(fields: HeaderFields): boolean {
  const value = (name: string) => fields.find((f) => f.name === name)?.value;
  const mozilla = mozillaStatus(fields);
  if (mozilla !== null) return (mozilla & 1) === 1;
  const status = value('status');
  if (status !== undefined) return status.toUpperCase().includes('R');
  const labels = gmailLabels(fields);
  if (labels !== null) return !labels.includes('unread');
  return false;
}

/**
 * Google Takeout's `X-Gmail-Labels` of an mbox message, lower-cased (`inbox`, `spam`, `trash`,
 * `unread`, the user's own labels), or null when it has none. Gmail's own labels are read by their
 * English names; Takeout writes them in the account's language in some exports (Norwegian `Åpnet` for
 * Opened in stalwartlabs/vandelay issue 7; rgladwell/imap-upload's `--google-takeout-language` knows
 * Spanish `Papelera` for Trash, `No leídos` for Unread), which this does not read (ADR 21).
 *
 * Takeout writes the labels "in CSV format" (Google's own archive_browser.html in a Takeout archive
 * says so): a label holding a comma or a double quote is quoted, its quotes doubled (`"Work, 2024"`,
 * `"""Inbox"""` for a label named `"Inbox"` with its quotes), as the importers that read Takeout
 * parse it: rgladwell/imap-upload (pull request 36, Python's csv reader), suitenumerique/messages
 * (pull request 172, "Culture, associations, événements"), GAM-team/got-your-back (quoted labels).
 * And a value with a label outside ASCII is one RFC 2047 encoded word around the whole list, commas
 * and all (`=?UTF-8?Q?=C3=85pnet,Kategori:_Reklame?=`, stalwartlabs/vandelay issue 7; got-your-back
 * decodes it first too): decoded before it is split, or its first and last labels keep the word's
 * `=?UTF-8?Q?` and `?=`. Split at every comma, a user's label `"Old, Trash, 2019"` put the message in
 * Gmail's Trash, and one next to non-ASCII labels (`…,Unread?=`) was taken for read.
 */
export function gmailLabels(fields: HeaderFields): string[] | null {
  const value = fields.find((f) => f.name === 'x-gmail-labels')?.value;
  return value === undefined ? null : csvFields(decodeHeaderText(value)).map((l) => l.toLowerCase());
}

/**
 * A field of a CSV line (RFC 4180 §2): quoted, with `""` for a quote, or bare up to the next comma.
 * Spaces around either are not part of it. A quote that is not closed, or text after a closing quote,
 * makes the field bare: read as written, up to the next comma.
 */
const CSV_FIELD_RE = /[ \t]*(?:"((?:[^"]|"")*)"[ \t]*|([^,]*))(,|$)/y;

/** The fields of one CSV line (`CSV_FIELD_RE`). */
function csvFields(line: string): string[] {
  const out: string[] = [];
  const re = new RegExp(CSV_FIELD_RE);
  for (let m = re.exec(line); m !== null; m = re.exec(line)) {
    out.push(m[1] !== undefined ? m[1].replaceAll('""', '"') : (m[2] ?? '').trim());
    if (m[3] === '') break;
  }
  return out;
}

/**
 * Whether Thunderbird deleted an mbox message: its `X-Mozilla-Status` has the expunged flag (0x0008).
 * Thunderbird marks a message deleted (or moved to another folder) so, and leaves it in the file until
 * the folder is compacted.
 */
export function mozillaExpunged(fields: HeaderFields): boolean {
  return ((mozillaStatus(fields) ?? 0) & 8) === 8;
}

type HeaderFields = readonly { readonly name: string; readonly value: string }[];

/** Thunderbird's `X-Mozilla-Status` flags (four hex digits), or null when there is none. */
function mozillaStatus(fields: HeaderFields): number | null {
  const value = fields.find((f) => f.name === 'x-mozilla-status')?.value;
  return value !== undefined && /^[0-9a-f]{4}$/i.test(value) ? Number.parseInt(value, 16) : null;
}

/** A Maildir file's flags (`<unique>:2,<flags>`, or `;2,` where `:` cannot be in a name) hold `S`. */
function maildirSeen(path: string): boolean {
  return maildirFlags(path).includes('S');
}

/** A Maildir file's flags, from its name (`<unique>:2,<flags>`); '' when it has none. */
function maildirFlags(path: string): string {
  return /[:;]2,([A-Za-z]*)$/.exec(path)?.[1] ?? '';
}

/** Reads one item's bytes. */
export async function readItem(item: ImportItem): Promise<Buffer> {
  const length = item.end - item.start;
  const file = await open(item.path, 'r');
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await file.read(buf, got, length - got, item.start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got === length ? buf : buf.subarray(0, got);
  } finally {
    await file.close();
  }
}

/**
 * How a file begins: `mbox` (a `From ` line, behind a byte order mark or not), `mail` (a header
 * field), `other` (not mail: an index, a note).
 */
async function fileStart(path: string): Promise<'mbox' | 'mail' | 'other'> {
  const file = await open(path, 'r');
  try {
    const head = Buffer.alloc(1000);
    const { bytesRead } = await file.read(head, 0, head.length, 0);
    if (bytesRead === 0) return 'other';
    if (firstFromLine(head.subarray(0, bytesRead)) !== null) return 'mbox';
    return messageStart(head.subarray(0, bytesRead)) === 'field' ? 'mail' : 'other';
  } finally {
    await file.close();
  }
}

/** Whether a directory's entries are a Maildir's: it has `cur/` and `new/`. */
function isMaildirListing(entries: readonly Dirent[]): boolean {
  const names = new Set(entries.filter((e) => e.isDirectory()).map((e) => e.name));
  return names.has('cur') && names.has('new');
}

/** Whether a directory is a Maildir. */
async function isMaildir(dir: string): Promise<boolean> {
  return isMaildirListing(await readdir(dir, { withFileTypes: true }).catch(() => []));
}

/** An entry found below a directory: a file to read, or one that cannot be read and why. */
type Found = { path: string; inMaildirCur: boolean; inMaildir: boolean; failure?: string };

/**
 * The files below a directory, sorted: hidden entries (a name starting with `.`) are passed over, and
 * a Maildir's `tmp/` (messages still being written by the program that delivers them). A Maildir++
 * folder among the hidden entries is named in `skipped`.
 *
 * A symbolic link to a regular file is read as the file (`cp -s`, `lndir`, backup tools and mail
 * programs that link duplicates make them; the user pointed import at the folder that shows it). One
 * to a directory is not followed (it may lead back up the tree, or out of it), and is named in
 * `skipped`: given by name, it is imported. A link whose target is not there, or a loop of links, is
 * returned with its `failure`: a message the folder shows that cannot be read.
 */
async function filesBelow(
  dir: string,
  skipped: { path: string; reason: string }[],
  inMaildirCur = false,
  inMaildir = false,
): Promise<Found[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const maildir = isMaildirListing(entries);
  const out: Found[] = [];
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const path = join(dir, e.name);
    if (e.name.startsWith('.')) {
      // A Maildir++ folder (`.Sent`, `.Archive.2024`: Dovecot, Courier) is left out as hidden, but
      // said: it holds mail the user may well want (and Trash or Junk they may not).
      if (maildir && e.isDirectory() && (await isMaildir(path)))
        skipped.push({ path, reason: 'a Maildir++ folder, not imported with its parent (give it by name)' });
      continue;
    }
    if (e.isDirectory()) {
      if (!(maildir && e.name === 'tmp'))
        out.push(
          ...(await filesBelow(
            path,
            skipped,
            maildir && e.name === 'cur',
            maildir && (e.name === 'cur' || e.name === 'new'),
          )),
        );
    } else if (e.isFile()) {
      out.push({ path, inMaildirCur, inMaildir });
    } else if (e.isSymbolicLink()) {
      const target = await stat(path).catch((err: NodeJS.ErrnoException) => err);
      if (!(target instanceof Error)) {
        if (target.isFile()) out.push({ path, inMaildirCur, inMaildir });
        else if (target.isDirectory())
          skipped.push({
            path,
            reason: `a symbolic link to a directory (${await readlink(path)}), not followed (give it by name)`,
          });
        else skipped.push({ path, reason: 'a symbolic link to something that is not a regular file' });
      } else {
        const to = await readlink(path).catch(() => '?');
        const failure =
          target.code === 'ENOENT'
            ? `a symbolic link to ${to}, which is not there`
            : target.code === 'ELOOP'
              ? `a symbolic link to ${to}, a loop of links`
              : `a symbolic link to ${to}: ${target.message}`;
        out.push({ path, inMaildirCur, inMaildir, failure });
      }
    } else {
      skipped.push({ path, reason: 'not a regular file (a FIFO, a socket, a device)' });
    }
  }
  return out;
}

/** An item for a path that is not read: its read, or its `failure`, says why. */
function unread(path: string): ImportItem {
  return { label: path, path, start: 0, end: 0, mtime: new Date(0), fromLineTime: null, readState: 'none' };
}

/**
 * The messages the paths hold, in order: a file is one message, or each message of an mbox; a
 * directory is every file below it that looks like mail (others are listed in `skipped`). A file
 * that cannot be read is one item, whose read fails with the reason (as before: one failure line).
 */
export async function importSources(paths: readonly string[]): Promise<ImportSources> {
  const items: ImportItem[] = [];
  const skipped: { path: string; reason: string }[] = [];
  let files = 0;
  const addFile = async (
    path: string,
    size: number,
    mtime: Date,
    inMaildirCur = false,
    /** False when the file is known not to start with a `From ` line: it is not scanned for more. */
    maybeMbox = true,
    inMaildir = false,
    /** What the user named (a pipe's copy is read from elsewhere). */
    shownAs = path,
  ): Promise<void> => {
    if (size === 0) {
      // Thunderbird keeps a file for every folder, empty ones too: nothing to import, nothing wrong.
      skipped.push({ path: shownAs, reason: 'empty file, no message in it' });
      return;
    }
    files += 1;
    const found = maybeMbox ? await mboxOffsets(path) : null;
    if (found === null) {
      const readState = inMaildirCur ? { maildirSeen: maildirSeen(path) } : ('none' as const);
      items.push({
        label: shownAs,
        path,
        start: 0,
        end: size,
        mtime,
        fromLineTime: null,
        readState,
        inMaildir,
        ...(shownAs === path ? {} : { shownAs }),
      });
      return;
    }
    const handle = await open(path, 'r');
    try {
      const messages = await mboxMessages(handle, found, size);
      for (const [i, { start, fromLineTime }] of messages.entries()) {
        items.push({
          // A file of one message is named as it always was.
          label: messages.length === 1 ? shownAs : `${shownAs}#${i + 1}`,
          path,
          start,
          end: messages[i + 1]?.start ?? size,
          mtime,
          fromLineTime,
          readState: inMaildirCur ? { maildirSeen: maildirSeen(path) } : 'mbox',
          inMaildir,
          ...(shownAs === path ? {} : { shownAs }),
        });
      }
    } finally {
      await handle.close();
    }
  };
  /**
   * The first path each file was found by (device and inode): a second name of it in a directory (a
   * symbolic or hard link) is the same message, read once and named in `skipped`. Files given by name
   * are never passed over.
   */
  const seen = new Map<string, string>();
  let spoolDir: string | undefined;
  let spooled = 0;
  /** Reads `paths` into `items`, `skipped` and `files`. */
  const readPaths = async (): Promise<void> => {
    for (const path of paths) {
      const info = await stat(path).catch(() => null);
      if (info?.isDirectory()) {
        /** Messages of a Maildir's `cur/` marked deleted (`T`: IMAP's \\Deleted in Dovecot, mutt's maildir_trash). */
        const trashed = new Map<string, number>();
        // A Maildir's `cur/` or `new/` given by name is read as it is inside its Maildir.
        const folder = basename(path);
        const maildirPart = (folder === 'cur' || folder === 'new') && (await isMaildir(dirname(path)));
        for (const file of await filesBelow(path, skipped, maildirPart && folder === 'cur', maildirPart)) {
          if (file.failure !== undefined) {
            files += 1;
            items.push({ ...unread(file.path), failure: file.failure });
            continue;
          }
          if (file.inMaildirCur && maildirFlags(file.path).includes('T')) {
            const dir = dirname(file.path);
            trashed.set(dir, (trashed.get(dir) ?? 0) + 1);
            continue;
          }
          let s: Stats;
          let begins: Awaited<ReturnType<typeof fileStart>>;
          try {
            s = await stat(file.path);
            const first = seen.get(`${s.dev}:${s.ino}`);
            if (first !== undefined) {
              skipped.push({ path: file.path, reason: `the same file as ${first}, read once` });
              continue;
            }
            seen.set(`${s.dev}:${s.ino}`, file.path);
            // A Maildir's files are read here once, for their first line, not each in 1 MiB for `From ` lines.
            begins = s.size > 0 ? await fileStart(file.path) : 'mail';
          } catch (err) {
            // One file of the folder that cannot be read (not ours to read, gone since the listing) is
            // a failure of its own, as a file given by name is; the others are still imported.
            files += 1;
            items.push({ ...unread(file.path), failure: errorMessage(err) });
            continue;
          }
          if (begins === 'other') {
            skipped.push({ path: file.path, reason: 'not a message (its first line is no header field)' });
            continue;
          }
          await addFile(file.path, s.size, s.mtime, file.inMaildirCur, begins === 'mbox', file.inMaildir);
        }
        for (const [dir, n] of trashed)
          skipped.push({
            path: dir,
            reason: `${n} message${n === 1 ? '' : 's'} marked deleted (the T flag), not expunged yet`,
          });
      } else if (info?.isFile()) {
        if (!seen.has(`${info.dev}:${info.ino}`)) seen.set(`${info.dev}:${info.ino}`, path);
        // One that cannot be read is scanned anyway: the scan says why, as before.
        const begins = info.size > 0 ? await fileStart(path).catch(() => 'mbox') : 'mail';
        // A Maildir file given by name keeps what its name says of our export.
        const parent = dirname(path);
        const inMaildir = ['cur', 'new'].includes(basename(parent)) && (await isMaildir(dirname(parent)));
        await addFile(path, info.size, info.mtime, false, begins === 'mbox', inMaildir);
      } else if (info?.isFIFO()) {
        // A pipe (`import <(zcat mail.mbox.gz)`, `… | import /dev/stdin`) can be read once, and from
        // its start only: what it gives is copied to a file first, and imported from there under its own
        // name. A copy that fails (the temporary directory's disk is full) is that pipe's failure alone.
        let copy: string | undefined;
        try {
          if (spoolDir === undefined) {
            spoolDir = await mkdtemp(join(tmpdir(), 'mail-relay-import-'));
            removeOnSignal(spoolDir);
          }
          copy = join(spoolDir, String(spooled++));
          await pipeline(createReadStream(path), createWriteStream(copy, { flags: 'wx' }));
        } catch (err) {
          if (copy !== undefined) await rm(copy, { force: true });
          files += 1;
          items.push({
            ...unread(path),
            failure: `could not copy what it gives to ${copy ?? tmpdir()}: ${errorMessage(err)}`,
          });
          continue;
        }
        const { size } = await stat(copy);
        const begins = size > 0 ? await fileStart(copy) : 'mail';
        // It has no time of its own: a message with no date gets the time it is imported at.
        await addFile(copy, size, new Date(), false, begins === 'mbox', false, path);
      } else if (info?.isCharacterDevice()) {
        // A device is no mail (`/dev/null` is empty; `/dev/zero` never ends; a terminal waits for typing).
        skipped.push({ path, reason: 'a device, not a file or a pipe: not read' });
      } else {
        // Missing, or not a regular file (a socket): its read says why, as a failure of its own.
        files += 1;
        items.push(unread(path));
      }
    }
  };
  try {
    await readPaths();
  } catch (err) {
    if (spoolDir !== undefined) await removeSpool(spoolDir);
    throw err;
  }
  const made: string | undefined = spoolDir;
  return {
    items,
    files,
    skipped,
    dispose: async () => {
      if (made !== undefined) await removeSpool(made);
    },
  };
}

/** Pipe copies to remove should the import be stopped (Ctrl-C) before it disposes of them. */
const signalCleanups = new Set<string>();

let signalsHandled = false;

/** Removes a directory of pipe copies, which a signal then no longer needs to. */
async function removeSpool(dir: string): Promise<void> {
  signalCleanups.delete(dir);
  await rm(dir, { recursive: true, force: true });
}

function removeOnSignal(dir: string): void {
  signalCleanups.add(dir);
  if (signalsHandled) return;
  signalsHandled = true;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = () => {
      for (const d of signalCleanups) rmSync(d, { recursive: true, force: true });
      // Then stopped as the signal stops a process (process.exit would wait on a pipe's blocked open).
      process.off(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}
