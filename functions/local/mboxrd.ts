/**
 * The mbox `mail-relay export` writes, and how `mail-relay import` knows it again
 * (docs/adr/0022-export-mbox-and-maildir.md).
 *
 * mboxrd (https://www.rfc-editor.org/rfc/rfc4155 and the mboxrd variant it describes): each message
 * is a `From <sender> <asctime>` line, the message with every line matching `>*From ` given one more
 * `>`, and an empty line. Ahead of the message's own header fields, three of ours:
 *
 *     Status: RO                 read state for mutt, pine, Apple Mail, Python's mailbox (O: unread)
 *     X-Mozilla-Status: 0001     read state for Thunderbird (0000: unread)
 *     X-Mail-Relay-Export: mboxrd; eol=crlf; size=1234; id=01J…; ses=…
 *
 * First, so that they win over a `Status:` the message carries itself (readers take the first). The
 * last one says what `import` needs to give back the stored bytes exactly: that the file is mboxrd
 * (unescape one level), whether the message's CRLF line ends were written as LF (`eol=crlf`: put
 * them back; `eol=lf`: the line ends are as stored), and the stored size (a message whose last line
 * had no line end gained one), and the message's id in the store it came from (`import` finds it
 * there by it, and `import --sent-of` gives it the same id) with the SES message id it was received
 * under (`import` into another store routes it under that again, which gives it the same id).
 */
import { ULID_RE } from '../core/ids.ts';
import { asctime } from '../core/mime-header.ts';
import { MBOX_FROM_LINE_RE } from './ingest.ts';

/** The field that marks a message of our export (see the module comment). */
export const EXPORT_FIELD = 'X-Mail-Relay-Export';

/**
 * A message's `From ` line: the envelope sender (`MAILER-DAEMON` for none, as mail programs write
 * it) and the receipt time. Whitespace and control characters in the sender (a quoted local part,
 * `"john doe"@…`) become `_`: the line is split at spaces by every reader.
 */
export function mboxFromLine(sender: string, receivedAt: Date): string {
  const who = sender === '' ? 'MAILER-DAEMON' : sender.replace(/[\s\p{Cc}]/gu, '_');
  return `From ${who} ${asctime(receivedAt)}\n`;
}

/**
 * An SES message id as an export writes it (`ses=` in the mbox field, `,E=` in a Maildir name): SES's
 * own (lowercase letters and digits, or with dashes), the listener's and `import`'s (base32). Anything
 * else (none of ours makes it) is left out, so that it cannot break the field or the name; and, read
 * back, it is a key segment (`inbound/<it>`): never `.`, `..` or hidden, whatever a file says.
 */
const SES_ID = '[0-9A-Za-z][0-9A-Za-z._-]{0,127}';
const SES_ID_RE = new RegExp(`^${SES_ID}$`);

/** Our fields ahead of the message's own (see the module comment). `ses`: its SES message id. */
export function exportFields(seen: boolean, crlf: boolean, size: number, id: string, ses?: string): string {
  const sesField = ses !== undefined && SES_ID_RE.test(ses) ? `; ses=${ses}` : '';
  return (
    `Status: ${seen ? 'RO' : 'O'}\nX-Mozilla-Status: ${seen ? '0001' : '0000'}\n` +
    `${EXPORT_FIELD}: mboxrd; eol=${crlf ? 'crlf' : 'lf'}; size=${size}; id=${id}${sesField}\n`
  );
}

/**
 * The longest start of a line kept back when a chunk ends inside it, before it is known whether it
 * is a `From ` line to escape: beyond it, the line is written as it comes (no writer quotes a line
 * with thousands of `>`s; holding it would let one line of `>`s fill memory).
 */
const HELD_LINE_START = 4096;

/**
 * Writes one message as mboxrd, chunk by chunk, in memory of a chunk: line starts `>*From ` gain a
 * `>`, and with `crlf` each CRLF becomes LF. `end()` ends the last line if it had no line end, and
 * adds the empty line that separates messages.
 */
export class MboxrdEncoder {
  /** Bytes of an unfinished line (or a CR) not yet written: what follows decides them. */
  private held = '';
  /** Whether `held` starts at the start of a line. */
  private lineStart = true;
  private last = 10;

  constructor(private readonly crlf: boolean) {}

  /** The mboxrd bytes of the next chunk of the message (latin1 keeps every byte as it is). */
  push(chunk: Buffer): Buffer {
    let text = this.held + chunk.toString('latin1');
    this.held = '';
    // A CR at the end may be half of a CRLF.
    if (this.crlf && text.endsWith('\r')) {
      this.held = '\r';
      text = text.slice(0, -1);
    }
    const lf = text.lastIndexOf('\n');
    // An unfinished line is held back while it could still turn out to be a `From ` line.
    const tailAtLineStart = lf >= 0 || this.lineStart;
    if (tailAtLineStart && undecided(text.slice(lf + 1))) {
      this.held = text.slice(lf + 1) + this.held;
      text = text.slice(0, lf + 1);
    }
    const out = this.encode(text);
    if (text.length > 0) this.lineStart = text.endsWith('\n');
    return out;
  }

  /** The rest: the held bytes, a line end for a last line without one, and the separating empty line. */
  end(): Buffer {
    const rest = this.encode(this.held);
    this.held = '';
    return Buffer.concat([rest, Buffer.from(this.last === 10 ? '\n' : '\n\n', 'latin1')]);
  }

  private encode(text: string): Buffer {
    if (text === '') return Buffer.alloc(0);
    let s = this.crlf ? text.replace(/\r\n/g, '\n') : text;
    // `\n` before the text stands for a line start there: the first line is escaped only when it is one.
    s = `${this.lineStart ? '\n' : 'x'}${s}`.replace(/\n(>*From )/g, '\n>$1').slice(1);
    const out = Buffer.from(s, 'latin1');
    this.last = out[out.length - 1] ?? this.last;
    return out;
  }
}

/**
 * Whether the start of a line may still become `>*From ` with what follows: `>`s, then a start of
 * "From" (an empty start too), and short enough to hold back.
 */
function undecided(start: string): boolean {
  return start.length <= HELD_LINE_START && /^>*(?:F(?:r(?:o(?:m)?)?)?)?$/.test(start);
}

/** Exports before 2026-11-29 have no `id`; none before the afternoon of that day has a `ses`. */
const EXPORTED_RE = new RegExp(
  '^From [^\\n]*\\nStatus: [A-Z]*\\nX-Mozilla-Status: [0-9A-Fa-f]{4}\\nX-Mail-Relay-Export: mboxrd; ' +
    `eol=(crlf|lf); size=(\\d{1,15})(?:; id=([0-9A-Z]{26})(?:; ses=(${SES_ID}))?)?\\n`,
);

/** What an export says of a message's identity in the store it came from. */
export interface ExportedIds {
  /** Its id (a ULID). */
  readonly id: string;
  /** The SES message id it was received under, when the export says it. */
  readonly ses: string | null;
}

/**
 * A message of an mbox `mail-relay export` wrote (its bytes from its `From ` line to the next
 * message's), given back as it was stored: without the `From ` line and our fields ahead of its own
 * (the mbox's, not the message's), unescaped one level, with its CRLF line ends back, without the
 * empty line that separated it from the next; null for any other message. A message a mail program
 * has rewritten since (its size no longer what the field says) is given back as read, but for the
 * line end the export added to a last line without one, which only the size tells. `ids`: the
 * message's ids in the store it came from (null from an export made before they were written).
 */
export function fromExportedMbox(message: Buffer): { bytes: Buffer; ids: ExportedIds | null } | null {
  const head = message.toString('latin1', 0, Math.min(message.length, 1024));
  const m = EXPORTED_RE.exec(head);
  if (m === null || !MBOX_FROM_LINE_RE.test(head)) return null;
  const ids = m[3] !== undefined && ULID_RE.test(m[3]) ? { id: m[3], ses: m[4] ?? null } : null;
  const crlf = m[1] === 'crlf';
  const size = Number(m[2]);
  let text = message.toString('latin1', m[0].length);
  // The empty line after the message, which separates it from the next.
  if (text.endsWith('\n')) text = text.slice(0, -1);
  text = `\n${text}`.replace(/\n>(>*From )/g, '\n$1').slice(1);
  if (crlf) text = text.replace(/\n/g, '\r\n');
  const eol = crlf ? '\r\n' : '\n';
  // The line end the export gave a last line that had none.
  if (text.length === size + eol.length && text.endsWith(eol)) text = text.slice(0, -eol.length);
  return { bytes: Buffer.from(text, 'latin1'), ids };
}

/**
 * What the Maildir export adds to a message file's name: `,I=<id>`, its id in the store it came
 * from, and `,E=<SES message id>` (ExportedIds), fields after the host as Dovecot's `,S=<size>`, which
 * readers pass over. A Maildir file has no room for a marker in its bytes, which are the message as
 * stored.
 */
export function maildirIdField(id: string, ses?: string): string {
  return `,I=${id}${ses !== undefined && SES_ID_RE.test(ses) ? `,E=${ses}` : ''}`;
}

const MAILDIR_ID_RE = /,I=([0-9A-Z]{26})(?=[,:]|$)/;
const MAILDIR_SES_RE = new RegExp(`,E=(${SES_ID})(?=[,:]|$)`);

/** The ids in the store it came from of a message file our Maildir export named; else null. */
export function exportedMaildirIds(fileName: string): ExportedIds | null {
  const id = MAILDIR_ID_RE.exec(fileName)?.[1];
  if (id === undefined || !ULID_RE.test(id)) return null;
  return { id, ses: MAILDIR_SES_RE.exec(fileName)?.[1] ?? null };
}
