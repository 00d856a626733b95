/**
 * The header block of a raw message, handled as bytes: split it from the body, read and edit
 * fields, put it back together. The body is never decoded, so 8-bit and binary MIME survive
 * byte for byte. Header text is held as latin1 strings (one char per byte), which round-trips
 * every byte value; only display values (names, subjects) are decoded to Unicode.
 * Pure: no I/O.
 */

import { isUtf8 } from 'node:buffer';

/**
 * RFC 5322 §2.2: a field name is printable US-ASCII except ':'. Obsolete syntax (§4.5) allows
 * whitespace before the colon, which real mail still carries.
 */
const FIELD_START_RE = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;
/** An mbox separator (`From sender date`) that an exporter left at the top of a message. */
const MBOX_FROM_RE = /^From /;
/** A UTF-8 byte order mark, as latin1: some Windows tools write one before the first header. */
const BOM = '\xef\xbb\xbf';

export type Eol = '\r\n' | '\n';

export interface HeaderField {
  /** The name as written (case kept). */
  readonly name: string;
  /** Lower-cased name, for comparisons. */
  readonly key: string;
  /** The whole field as bytes (latin1): first line, continuation lines, and their line endings. */
  readonly raw: string;
}

export interface SplitMessage {
  /** The message's own line ending (that of its first line); added lines use it too. */
  readonly eol: Eol;
  readonly fields: readonly HeaderField[];
  /** The blank line ending the header block as written, or '' when the message has none. */
  readonly separator: string;
  /** Everything after the header block, untouched. */
  readonly body: Buffer;
  /**
   * Lines inside the header block that are not fields: an mbox `From ` line or a byte order mark
   * (left out on rebuild), or a broken fold (kept, as a continuation of the field before it).
   */
  readonly dropped: readonly string[];
}

/**
 * A message's line ending: the byte before its first LF (CRLF when there is no LF at all). The body
 * may be given as the chunks it arrived in; the CR may end one chunk and the LF start the next.
 */
export function detectEol(body: Buffer | readonly Buffer[]): Eol {
  let previous = -1;
  for (const chunk of Buffer.isBuffer(body) ? [body] : body) {
    const lf = chunk.indexOf(10);
    if (lf === -1) {
      if (chunk.length > 0) previous = chunk[chunk.length - 1] as number;
      continue;
    }
    return (lf > 0 ? chunk[lf - 1] : previous) === 13 ? '\r\n' : '\n';
  }
  return '\r\n';
}

/**
 * Octets of a message once every line ends in CRLF: a bare LF or a bare CR (classic Mac line
 * ends) counts as CRLF, and a last line without a line end gains one. This is the size POP3 gives
 * (RFC 1939 §11: counted with CRLF line ends, before dot-stuffing) for what the POP3 bridge sends;
 * for a message stored with CRLF throughout it is its length.
 */
export function crlfSize(raw: Buffer): number {
  let size = raw.length;
  for (let lf = raw.indexOf(10); lf !== -1; lf = raw.indexOf(10, lf + 1)) {
    if (lf === 0 || raw[lf - 1] !== 13) size++;
  }
  for (let cr = raw.indexOf(13); cr !== -1; cr = raw.indexOf(13, cr + 1)) {
    if (raw[cr + 1] !== 10) size++;
  }
  const last = raw.length === 0 ? 10 : raw[raw.length - 1];
  if (last !== 10 && last !== 13) size += 2;
  return size;
}

/**
 * Splits at the end of the header block: the first empty line (CRLF or bare LF), or the first line
 * that is neither a field nor a continuation (a message whose sender forgot the blank line).
 */
export function splitMessage(raw: Buffer): SplitMessage {
  const eol = detectEol(raw);
  const fields: HeaderField[] = [];
  const dropped: string[] = [];
  /** Bounds of each line: [start, end of content, start of next line]. */
  const lineAt = (pos: number): [number, number, number] => {
    const lf = raw.indexOf(10, pos);
    if (lf === -1) return [pos, raw.length, raw.length];
    return [pos, lf > pos && raw[lf - 1] === 13 ? lf - 1 : lf, lf + 1];
  };
  const isFieldStart = (line: string) =>
    FIELD_START_RE.test(line.startsWith(BOM) ? line.slice(BOM.length) : line);
  /** Whether a field line follows `pos` (after any continuation lines) before the blank line or the end. */
  const fieldFollows = (pos: number): boolean => {
    let p = pos;
    while (p < raw.length) {
      const [start, end, next] = lineAt(p);
      if (end === start) return false;
      if (raw[start] !== 0x20 && raw[start] !== 0x09) return isFieldStart(raw.toString('latin1', start, end));
      p = next;
    }
    return false;
  };
  let current: { name: string; text: string } | null = null;
  const closeField = () => {
    if (current !== null)
      fields.push({ name: current.name, key: current.name.toLowerCase(), raw: current.text });
    current = null;
  };
  let pos = 0;
  while (pos < raw.length) {
    const [start, end, next] = lineAt(pos);
    const whole = raw.toString('latin1', start, next);
    if (end === start) {
      closeField();
      return { eol, fields, separator: whole, body: raw.subarray(next), dropped };
    }
    const first = raw[start];
    if ((first === 0x20 || first === 0x09) && current !== null) {
      current.text += whole;
      pos = next;
      continue;
    }
    let line = raw.toString('latin1', start, end);
    let text = whole;
    if (line.startsWith(BOM)) {
      dropped.push(BOM);
      line = line.slice(BOM.length);
      text = text.slice(BOM.length);
    }
    const m = FIELD_START_RE.exec(line);
    if (m?.[1] !== undefined) {
      closeField();
      current = { name: m[1], text };
    } else if (MBOX_FROM_RE.test(line)) {
      closeField();
      dropped.push(line);
    } else if (current !== null && fieldFollows(next)) {
      // A fold that lost its leading whitespace, with more fields after it: kept as a continuation,
      // so neither the line nor the fields below it are lost.
      dropped.push(line);
      current.text += ` ${text}`;
    } else {
      // Not a header line: the body starts here, with no blank line before it.
      closeField();
      return { eol, fields, separator: '', body: raw.subarray(start), dropped };
    }
    pos = next;
  }
  closeField();
  return { eol, fields, separator: '', body: raw.subarray(raw.length), dropped };
}

/**
 * The message again from (edited) fields. A header block without its blank line gets one, in the
 * message's line ending: SES refuses a message whose header and body are not separated by one.
 */
export function joinMessage(split: Pick<SplitMessage, 'eol' | 'fields' | 'separator' | 'body'>): Buffer {
  const head = split.fields.map((f) => (f.raw.endsWith('\n') ? f.raw : f.raw + split.eol)).join('');
  return Buffer.concat([Buffer.from(head + (split.separator || split.eol), 'latin1'), split.body]);
}

/** A field from a name and an already-encoded value (ASCII, folded or not); `\n` in value becomes eol. */
export function makeField(name: string, value: string, eol: Eol): HeaderField {
  return { name, key: name.toLowerCase(), raw: `${name}: ${value}${eol}` };
}

/** The value of a field as bytes (latin1), unfolded (RFC 5322 §2.2.3), without the leading space. */
export function fieldValue(field: HeaderField): string {
  const colon = field.raw.indexOf(':');
  return field.raw
    .slice(colon + 1)
    .replace(/\r?\n(?=[ \t])/g, '')
    .replace(/\r?\n$/, '')
    .replace(/^[ \t]+/, '');
}

/** The value as written after the colon, folding and line endings kept, without the final line ending. */
export function rawFieldValue(field: HeaderField): string {
  const colon = field.raw.indexOf(':');
  return field.raw.slice(colon + 1).replace(/\r?\n$/, '');
}

export function findField(fields: readonly HeaderField[], name: string): HeaderField | undefined {
  const key = name.toLowerCase();
  return fields.find((f) => f.key === key);
}

// ---- decoding display text ------------------------------------------------------------------

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Header bytes as text: UTF-8 when they are valid UTF-8 (RFC 6532 allows raw UTF-8 in headers),
 * else latin1, which is what most 8-bit headers without a declared charset turn out to be.
 */
export function bytesToText(latin1: string): string {
  if (!/[\x80-\xff]/.test(latin1)) return latin1;
  try {
    return utf8.decode(Buffer.from(latin1, 'latin1'));
  } catch {
    return latin1;
  }
}

/** RFC 2047 §2: `=?charset[*language]?B|Q?encoded-text?=`. */
const ENCODED_WORD_RE = /=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?=/g;

/** The bytes an encoded word's text stands for (B: base64; Q: RFC 2047 §4.2, `_` a space, `=XX` a byte). */
function wordBytes(encoding: string, text: string): Buffer {
  if (encoding.toUpperCase() === 'B') return Buffer.from(text, 'base64');
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '_') out.push(0x20);
    else if (c === '=' && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
      out.push(Number.parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(text.charCodeAt(i) & 0xff);
  }
  return Buffer.from(out);
}

/** Charset names mailers write that TextDecoder does not know by that name. */
const CHARSET_ALIASES: Readonly<Record<string, string>> = {
  cp932: 'shift_jis',
  ms932: 'shift_jis',
  'windows-31j': 'shift_jis',
  'x-sjis': 'shift_jis',
  cp936: 'gbk',
  ms936: 'gbk',
  cp949: 'euc-kr',
  cp950: 'big5',
};

/**
 * Windows-1252's characters at 0x80–0x9F (WHATWG's, which is also what `iso-8859-1` and `us-ascii` mean
 * in mail): Node's TextDecoder gives the C1 control characters there, so `Don\x92t` read as `Don` + an
 * invisible U+0092 + `t`. 0x81, 0x8D, 0x8F, 0x90 and 0x9D have none and stay as they are.
 */
const WINDOWS_1252_C1 = '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ';

/** `bytes` as text in the charset named `label` (as mail names it), or null when it is not one TextDecoder knows. */
export function decodeCharset(bytes: Uint8Array, label: string): string | null {
  const name = label.trim().toLowerCase();
  let text: string;
  let encoding: string;
  try {
    const decoder = new TextDecoder(CHARSET_ALIASES[name] ?? name);
    text = decoder.decode(bytes);
    encoding = decoder.encoding;
  } catch {
    return null;
  }
  if (encoding !== 'windows-1252') return text;
  return text.replace(/[\x80-\x9f]/g, (c: string) => WINDOWS_1252_C1[c.charCodeAt(0) - 0x80] ?? c);
}

/** Each byte's Windows-1252 character in UTF-8 (0x80–0xFF; ASCII is itself). */
const WINDOWS_1252_UTF8: readonly Buffer[] = Array.from({ length: 256 }, (_, byte) =>
  Buffer.from(
    byte >= 0x80 && byte <= 0x9f ? (WINDOWS_1252_C1[byte - 0x80] as string) : String.fromCharCode(byte),
    'utf8',
  ),
);

/**
 * How many bytes the UTF-8 sequence at `at` takes, or 0 when the bytes there are no well-formed
 * sequence (RFC 3629 §4: no overlong forms, no surrogates, nothing past U+10FFFF, no cut-off end).
 */
function utf8SequenceLength(bytes: Uint8Array, at: number): number {
  const b = bytes[at] as number;
  const c1 = at + 1 < bytes.length ? (bytes[at + 1] as number) : -1;
  if (b >= 0xc2 && b <= 0xdf) return c1 >= 0x80 && c1 <= 0xbf ? 2 : 0;
  const c2 = at + 2 < bytes.length ? (bytes[at + 2] as number) : -1;
  if (b >= 0xe0 && b <= 0xef) {
    const lo = b === 0xe0 ? 0xa0 : 0x80;
    const hi = b === 0xed ? 0x9f : 0xbf;
    return c1 >= lo && c1 <= hi && c2 >= 0x80 && c2 <= 0xbf ? 3 : 0;
  }
  if (b >= 0xf0 && b <= 0xf4) {
    const c3 = at + 3 < bytes.length ? (bytes[at + 3] as number) : -1;
    const lo = b === 0xf0 ? 0x90 : 0x80;
    const hi = b === 0xf4 ? 0x8f : 0xbf;
    return c1 >= lo && c1 <= hi && c2 >= 0x80 && c2 <= 0xbf && c3 >= 0x80 && c3 <= 0xbf ? 4 : 0;
  }
  return 0;
}

/**
 * `decodeUtf8OrWindows1252`'s reading, as UTF-8 bytes: the UTF-8 sequences copied, every other byte
 * replaced by its Windows-1252 character's UTF-8 (at most 3 bytes for 1), in one pass and one buffer.
 */
export function utf8OrWindows1252Bytes(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(bytes.length * 3);
  let n = 0;
  let run = 0;
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i] as number;
    if (b < 0x80) {
      i += 1;
      continue;
    }
    const length = utf8SequenceLength(bytes, i);
    if (length > 0) {
      i += length;
      continue;
    }
    if (i > run) {
      out.set(bytes.subarray(run, i), n);
      n += i - run;
    }
    const char = WINDOWS_1252_UTF8[b] as Buffer;
    char.copy(out, n);
    n += char.length;
    i += 1;
    run = i;
  }
  if (run === 0) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  out.set(bytes.subarray(run), n);
  n += bytes.length - run;
  return out.subarray(0, n);
}

/**
 * A text body's bytes read the way mail readers read text whose charset is missing, `us-ascii` while
 * it holds 8-bit bytes, one they do not know (`unknown-8bit`) or a `utf-8` it is not: UTF-8 where the
 * bytes are UTF-8, and every byte that is not part of a well-formed UTF-8 sequence as the Windows-1252
 * character it is (Windows-1252 has a character for every byte; 0x81, 0x8D, 0x8F, 0x90 and 0x9D are
 * the C1 controls of that value). UTF-8 text comes out as UTF-8, Windows-1252 or Latin-1 text as
 * such, and a body mixing the two (a UTF-8 reply quoting Windows-1252) with nothing lost: no byte
 * becomes U+FFFD. docs/adr/0019-body-charsets.md.
 */
export function decodeUtf8OrWindows1252(bytes: Buffer): string {
  return utf8OrWindows1252Bytes(bytes).toString('utf8');
}

/**
 * Decodes RFC 2047 encoded words in unstructured text (Subject, display names) and raw UTF-8
 * (RFC 6532). Whitespace between two adjacent encoded words is dropped (RFC 2047 §6.2). Adjacent
 * words of one charset are decoded together: many mailers split a word inside a multi-byte
 * character (`=?UTF-8?Q?=E6=97?= =?UTF-8?Q?=A5?=` is `日`), which decoded word by word gave U+FFFDs.
 * A word of a charset TextDecoder does not know is kept as written.
 */
export function decodeHeaderText(latin1: string): string {
  const text = bytesToText(latin1);
  let out = '';
  let last = 0;
  let sawWord = false;
  let previousDecoded = false;
  let group: { charset: string; bytes: Buffer[]; raw: string; lead: string } | null = null;
  const flush = () => {
    if (group === null) return;
    const decoded = decodeCharset(Buffer.concat(group.bytes), group.charset);
    if (!(previousDecoded && decoded !== null)) out += group.lead;
    out += decoded ?? group.raw;
    previousDecoded = decoded !== null;
    group = null;
  };
  for (const m of text.matchAll(ENCODED_WORD_RE)) {
    const between = text.slice(last, m.index);
    const charset = (m[1] ?? '').toLowerCase();
    const bytes = wordBytes(m[2] ?? 'Q', m[3] ?? '');
    const adjacent = sawWord && /^[ \t\r\n]*$/.test(between);
    if (adjacent && group !== null && group.charset === charset) {
      group.bytes.push(bytes);
      group.raw += between + m[0];
    } else {
      flush();
      if (!adjacent) {
        out += between;
        previousDecoded = false;
      }
      group = { charset, bytes: [bytes], raw: m[0], lead: adjacent ? between : '' };
    }
    sawWord = true;
    last = m.index + m[0].length;
  }
  flush();
  return out + text.slice(last);
}

/**
 * Charsets that name no charset (mailers write them for 8-bit text whose charset they do not know):
 * mailparser reads their bytes to U+FFFDs. Only these: any other name it does not know may be one
 * its decoder does (cp850), and is left to it.
 */
const NO_CHARSET = new Set(['unknown8bit', 'unknown', 'xunknown', 'xuserdefined']);

/**
 * Whether an encoded word's charset and bytes are ones mailparser reads to U+FFFDs where mail readers
 * read text: 8-bit bytes in a charset that names none (`NO_CHARSET`), or `utf-8` that is not UTF-8.
 * Mail readers read such bytes as a body of that charset is read (`decodeUtf8OrWindows1252`).
 */
function wordNeedsRepair(charset: string, bytes: Buffer): boolean {
  if (!bytes.some((b) => b >= 0x80)) return false;
  const name = charset.replace(/[^a-z0-9]/g, '');
  if (name === 'utf8') return !isUtf8(bytes);
  return NO_CHARSET.has(name);
}

/**
 * A header field (latin1) with its encoded words of `wordNeedsRepair` rewritten as UTF-8 words of the
 * text mail readers read in them, so that the parser reads that text and not U+FFFDs. Adjacent words of
 * one charset are read together (a character split between them). Null when nothing is to change.
 */
export function repairEncodedWords(field: string): string | null {
  if (!field.includes('=?')) return null;
  let out = '';
  let last = 0;
  let changed = false;
  let group: { charset: string; bytes: Buffer[]; start: number; end: number } | null = null;
  const flush = () => {
    if (group === null) return;
    const bytes = Buffer.concat(group.bytes);
    if (wordNeedsRepair(group.charset, bytes)) {
      out += field.slice(last, group.start) + encodeWords(decodeUtf8OrWindows1252(bytes)).join(' ');
      last = group.end;
      changed = true;
    }
    group = null;
  };
  for (const m of field.matchAll(ENCODED_WORD_RE)) {
    const charset = (m[1] ?? '').toLowerCase();
    const bytes = wordBytes(m[2] ?? 'Q', m[3] ?? '');
    const end = m.index + m[0].length;
    if (group !== null && group.charset === charset && /^[ \t\r\n]*$/.test(field.slice(group.end, m.index))) {
      group.bytes.push(bytes);
      group.end = end;
    } else {
      flush();
      group = { charset, bytes: [bytes], start: m.index, end };
    }
  }
  flush();
  return changed ? out + field.slice(last) : null;
}

// ---- encoding display text ------------------------------------------------------------------

/** RFC 2047 §2: an encoded word is at most 75 characters; `=?UTF-8?B?` + `?=` take 12 of them. */
const MAX_WORD_BYTES = 45;

/** `text` as one or more UTF-8 B encoded words (RFC 2047), split on character boundaries. */
export function encodeWords(text: string): string[] {
  const words: string[] = [];
  let chunk = '';
  for (const ch of text) {
    if (Buffer.byteLength(chunk + ch, 'utf8') > MAX_WORD_BYTES) {
      words.push(chunk);
      chunk = '';
    }
    chunk += ch;
  }
  if (chunk !== '' || words.length === 0) words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w, 'utf8').toString('base64')}?=`);
}

/**
 * A display name as an RFC 5322 phrase: a quoted-string when it is printable ASCII, else encoded
 * words folded onto continuation lines (each line stays well under 78 characters).
 */
export function encodePhrase(name: string, eol: Eol): string {
  if (/^[\x20-\x7e]*$/.test(name)) return `"${name.replace(/["\\]/g, '\\$&')}"`;
  return encodeWords(name).join(`${eol} `);
}

/** Display text without control characters and bounded in length: it becomes a header. */
export function cleanDisplayText(text: string, maxChars = 200): string {
  // Control characters (CR and LF above all) must never reach a header line.
  const visible = [...text]
    .map((ch) => ((ch.codePointAt(0) ?? 0) < 0x20 || ch === '\u007f' ? ' ' : ch))
    .join('');
  const flat = visible.replace(/\s+/g, ' ').trim();
  return [...flat].slice(0, maxChars).join('');
}

// ---- addresses ------------------------------------------------------------------------------

export interface ParsedAddress {
  /** Decoded display name ('' when none). */
  readonly name: string;
  /** `local@domain` as written (not lower-cased), its 8-bit bytes read as UTF-8 (RFC 6532). */
  readonly address: string;
}

type Token =
  | { kind: 'quoted'; text: string }
  | { kind: 'comment'; text: string }
  | { kind: 'angle'; text: string }
  | { kind: 'special'; text: ',' | ':' | ';' }
  | { kind: 'atom'; text: string }
  | { kind: 'space' };

/** RFC 5322 §3.2: quoted strings, (nested) comments, angle addresses, separators and atoms. */
function tokenize(value: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < value.length) {
    const c = value[i] ?? '';
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
      if (tokens[tokens.length - 1]?.kind !== 'space') tokens.push({ kind: 'space' });
      i++;
    } else if (c === '"') {
      let text = '';
      i++;
      while (i < value.length && value[i] !== '"') {
        if (value[i] === '\\' && i + 1 < value.length) i++;
        text += value[i];
        i++;
      }
      i++;
      tokens.push({ kind: 'quoted', text });
    } else if (c === '(') {
      let depth = 1;
      let text = '';
      i++;
      while (i < value.length && depth > 0) {
        const d = value[i];
        if (d === '\\' && i + 1 < value.length) {
          text += value[i + 1];
          i += 2;
          continue;
        }
        if (d === '(') depth++;
        if (d === ')') depth--;
        if (depth > 0) text += d;
        i++;
      }
      tokens.push({ kind: 'comment', text });
    } else if (c === '<') {
      const end = value.indexOf('>', i);
      const stop = end === -1 ? value.length : end;
      tokens.push({ kind: 'angle', text: value.slice(i + 1, stop) });
      i = stop + 1;
    } else if (c === ',' || c === ':' || c === ';') {
      tokens.push({ kind: 'special', text: c });
      i++;
    } else {
      let text = '';
      while (i < value.length && !/[\s"(<,:;]/.test(value[i] ?? '')) {
        text += value[i];
        i++;
      }
      tokens.push({ kind: 'atom', text });
    }
  }
  return tokens;
}

/** Joins phrase tokens, decoding encoded words, which are only recognised outside quotes (RFC 2047 §5). */
function phraseText(tokens: readonly Token[]): string {
  let out = '';
  let plain = '';
  for (const t of tokens) {
    if (t.kind === 'space') plain += ' ';
    else if (t.kind === 'atom') plain += t.text;
    else if (t.kind === 'quoted') {
      out += decodeHeaderText(plain) + bytesToText(t.text);
      plain = '';
    }
  }
  return (out + decodeHeaderText(plain)).replace(/\s+/g, ' ').trim();
}

function mailboxOf(tokens: readonly Token[]): ParsedAddress | null {
  const angleAt = tokens.findIndex((t) => t.kind === 'angle');
  if (angleAt >= 0) {
    const angle = tokens[angleAt];
    // An obsolete source route (`<@a.example,@b.example:user@c.example>`, RFC 5322 §4.4) is dropped.
    const address = (angle?.kind === 'angle' ? angle.text : '').replace(/^@[^:]*:/, '').trim();
    if (!address.includes('@')) return null;
    // An address of UTF-8 bytes (RFC 6532: `jöhn@mächine.example`) as text, as the name is.
    return { name: cleanDisplayText(phraseText(tokens.slice(0, angleAt))), address: bytesToText(address) };
  }
  const address = bytesToText(
    tokens
      .filter((t) => t.kind === 'atom' || t.kind === 'quoted')
      .map((t) => (t.kind === 'quoted' ? `"${t.text}"` : t.text))
      .join(''),
  );
  if (!address.includes('@')) return null;
  // `alice@example.org (Alice Example)`: the comment is the name by old convention.
  const comment = tokens.find((t) => t.kind === 'comment');
  const name = comment?.kind === 'comment' ? cleanDisplayText(decodeHeaderText(comment.text)) : '';
  return { name, address };
}

/**
 * The mailboxes of an address-list header (From, To, Cc, Reply-To), groups flattened
 * (RFC 5322 §3.4). Lenient: entries without an `@` are skipped rather than failing the list.
 */
export function parseAddressList(latin1Value: string): ParsedAddress[] {
  const out: ParsedAddress[] = [];
  let entry: Token[] = [];
  const flush = () => {
    const m = mailboxOf(entry);
    if (m) out.push(m);
    entry = [];
  };
  for (const t of tokenize(latin1Value)) {
    if (t.kind === 'special') {
      // `Group name:` starts a group: what came before was its name, not a mailbox.
      if (t.text === ':') entry = [];
      else flush();
    } else entry.push(t);
  }
  flush();
  return out;
}

/**
 * The mailboxes of a mailbox-list header (From, Sender: RFC 5322 §3.6.2, where groups are not
 * allowed), or null when it holds a group or an entry that is not a mailbox. Strict where
 * `parseAddressList` is lenient: it checks who a message says it is from, and every reader must
 * come to the same answer (`ceo@example.com:alice@example.com;` is a group to one parser and
 * `ceo@example.com` to another). Empty entries (`a@x, , b@y`, RFC 5322 §4.4) are skipped.
 */
export function parseMailboxList(latin1Value: string): ParsedAddress[] | null {
  const out: ParsedAddress[] = [];
  let entry: Token[] = [];
  for (const t of [...tokenize(latin1Value), { kind: 'special', text: ',' } as const]) {
    if (t.kind !== 'special') {
      entry.push(t);
      continue;
    }
    if (t.text !== ',') return null;
    if (entry.some((e) => e.kind !== 'space' && e.kind !== 'comment')) {
      const m = mailboxOf(entry);
      if (m === null) return null;
      out.push(m);
    }
    entry = [];
  }
  return out;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

/** RFC 5322 §3.3 date-time in UTC, e.g. `Fri, 27 Nov 2026 13:40:00 +0000`. */
export function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${p(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(
    d.getUTCHours(),
  )}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** C's asctime() of a time in UTC, as mbox `From ` lines carry it: `Sun Nov  2 05:26:57 2026`. */
export function asctime(at: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return (
    `${DAYS[at.getUTCDay()]} ${MONTHS[at.getUTCMonth()]} ${String(at.getUTCDate()).padStart(2, ' ')} ` +
    `${p(at.getUTCHours())}:${p(at.getUTCMinutes())}:${p(at.getUTCSeconds())} ${at.getUTCFullYear()}`
  );
}
