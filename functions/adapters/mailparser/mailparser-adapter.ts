/**
 * MailParser adapter over mailparser's streaming `MailParser`. Everything mailparser returns is
 * mapped to our own types here, so no mailparser type reaches the core.
 */
import { isAscii, isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type {
  AddressObject,
  AttachmentCommon,
  AttachmentStream,
  EmailAddress,
  HeaderLines,
  MailParserOptions,
  MessageText,
} from 'mailparser';
import { MailParser as StreamingParser } from 'mailparser';
import { detectMimeType } from 'nodemailer/lib/mime-funcs';
import { parseMailDate } from '../../core/mail-date.ts';
import {
  type AddressEntry,
  type Attachment,
  type DecodedPart,
  type ParsedSummary,
  type ParseResult,
  SUMMARY_BODY_MAX_CHARS,
  summaryBody,
} from '../../core/message.ts';
import { decodeCharset, repairEncodedWords, utf8OrWindows1252Bytes } from '../../core/mime-header.ts';
import type { MailParser } from '../../ports/mail-parser.ts';

/**
 * Longest HTML part (in characters) that mailparser converts to plain text when a message has no
 * text part. html-to-text is superlinear on big or messy markup and runs on the event loop; past
 * this size the text of that part is left empty (the HTML itself is still returned), which is a
 * better trade than a Lambda burning its timeout on a newsletter. Real HTML mail is far below it
 * (Gmail clips at 102 KB).
 */
export const MAX_HTML_LENGTH_TO_PARSE = 2 * 1024 * 1024;

/**
 * How long parse() waits for mailparser before giving up with `{ok: false}`. A stalled parse must
 * not hold a delivery until the Lambda times out: the raw message is delivered flagged instead.
 * This bounds the wait, not the work (a timer cannot pre-empt synchronous parsing), so it is a
 * guard against hangs, set well above the few seconds a 40 MB message takes.
 */
export const DEFAULT_PARSE_TIMEOUT_MS = 60_000;

/**
 * Largest header block of one MIME part. mailparser's own default, stated here so the limit is
 * visible: the biggest real headers in the shared corpus are a 210 KB Subject and a 135 KB To,
 * and anything past 1 MB is an attack on the parser, not mail. Exceeding it gives `{ok: false}`
 * (the raw message is still delivered, flagged).
 */
export const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * Most MIME parts (nodes, at any depth) in one message. mailparser's default; it also bounds
 * nesting depth, since every level is a node. Exceeding it gives `{ok: false}`.
 */
export const MAX_MIME_PARTS = 1000;

export interface MailparserAdapterOptions {
  /**
   * Milliseconds to wait for a parse before answering `{ok: false}`.
   * @default DEFAULT_PARSE_TIMEOUT_MS
   */
  readonly timeoutMs?: number;
  /**
   * Largest HTML part converted to text, in characters.
   * @default MAX_HTML_LENGTH_TO_PARSE
   */
  readonly maxHtmlLengthToParse?: number;
}

/**
 * Bytes handed to mailparser per chunk. Given one Buffer, mailparser's base64 decoder turns a whole
 * 29 MB attachment into one string (~2× the message in RSS); fed in slices it decodes as it goes.
 */
const PARSE_CHUNK_BYTES = 64 * 1024;

/**
 * Decoded parts up to this size are handed over as one Buffer (a blob row locally: the local
 * store's default row limit); larger ones as the chunks mailparser decoded them in, never joined:
 * joining a 29 MB attachment would hold it twice at the peak, and a store writes a part that size
 * as a stream anyway (a file locally, a multipart upload to S3 past its part size).
 */
export const JOINED_PART_MAX_BYTES = 64 * 1024;

/** What mailparser gave for a message, attachments' contents as decoded chunks. */
interface Collected {
  headerLines: HeaderLines;
  subject: string | undefined;
  messageId: string | undefined;
  from: AddressObject | undefined;
  to: AddressObject | AddressObject[] | undefined;
  cc: AddressObject | AddressObject[] | undefined;
  replyTo: AddressObject | undefined;
  text: string | undefined;
  html: string | false | undefined;
  attachments: { meta: AttachmentCommon; chunks: Buffer[]; size: number }[];
}

/**
 * mailparser's `simpleParser`, less what we do not use (cid: images inlined into the HTML), and
 * keeping each attachment as its chunks instead of one concatenated Buffer.
 */
function collect(raw: Buffer, options: MailParserOptions): Promise<Collected> {
  return new Promise((resolve, reject) => {
    const parser = new BodyCharsetParser(options);
    const mail: Collected = {
      headerLines: [],
      subject: undefined,
      messageId: undefined,
      from: undefined,
      to: undefined,
      cc: undefined,
      replyTo: undefined,
      text: undefined,
      html: undefined,
      attachments: [],
    };
    // mailparser may emit a non-fatal 'error' and still reach 'end': the first outcome wins.
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      parser.destroy();
      reject(err);
    };
    parser.on('error', fail);
    parser.on('headers', () => {
      mail.headerLines = parser.headerLines === false ? [] : parser.headerLines;
    });
    let reading = false;
    const read = (): void => {
      reading = true;
      const data = parser.read() as MessageText | AttachmentStream | null;
      if (data === null) {
        reading = false;
        return;
      }
      if (data.type === 'text') {
        mail.text = typeof data.text === 'string' ? data.text : undefined;
        mail.html = data.html;
        read();
        return;
      }
      const { content, release, ...meta } = data;
      const attachment = { meta, chunks: [] as Buffer[], size: 0 };
      mail.attachments.push(attachment);
      content.on('readable', () => {
        for (let chunk = content.read() as Buffer | null; chunk !== null; chunk = content.read()) {
          attachment.chunks.push(chunk);
          attachment.size += chunk.length;
        }
      });
      content.on('end', () => {
        release?.();
        read();
      });
    };
    parser.on('readable', () => {
      if (!reading) read();
    });
    parser.on('end', () => {
      if (settled) return;
      settled = true;
      mail.subject = parser.subject;
      mail.messageId = parser.messageId;
      mail.from = parser.from;
      mail.to = parser.to;
      mail.cc = parser.cc;
      mail.replyTo = parser.replyTo;
      resolve(mail);
    });
    // A message of one chunk is written at once (most mail: no stream to set up for it).
    if (raw.length <= PARSE_CHUNK_BYTES) {
      parser.end(raw);
      return;
    }
    const input = inChunks(raw);
    input.once('error', (err) => {
      input.destroy();
      fail(err);
    });
    input.pipe(parser);
  });
}

/**
 * What a text body's declared charset says of how its bytes are read (docs/adr/0019-body-charsets.md).
 * - `sniff`: the charset is missing or `us-ascii` (RFC 2045's default), or `utf-8` (one no decoder
 *   knows, `unknown-8bit`, `x-user-defined` or a typo, is read the same way): its 8-bit bytes are read as UTF-8 where they are
 *   UTF-8, else as Windows-1252 (`decodeUtf8OrWindows1252`). mailparser read them as UTF-8, each byte
 *   of any other text a U+FFFD.
 * - `windows-1252`: the charset is ISO-8859-1 (Latin-1), which mail readers (and WHATWG) read as
 *   Windows-1252: its bytes 0x80–0x9F are `’ “ ” – €` there, not invisible C1 controls.
 * - null: any other charset; decoded by the parser's decoder as before when it knows it
 *   (`DeclaredCharsetStream`), else as in `sniff` mode.
 */
function bodyCharsetMode(charset: string): 'sniff' | 'windows-1252' | null {
  const name = charset.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (name === '' || name === 'ascii' || name === 'usascii' || name === 'utf8') return 'sniff';
  if (/^(iso88591|latin1|l1|iso885911987|isoir100|cp819|ibm819|csisolatin1)$/.test(name))
    return 'windows-1252';
  return null;
}

/**
 * A text body's bytes on their way from the transfer decoding to mailparser, which joins them and
 * reads them as UTF-8 (`bodyCharsetMode`). Each chunk is passed on as it is when it is ASCII, or UTF-8
 * in `sniff` mode (one native check), else as `decodeUtf8OrWindows1252` (or Windows-1252) reads it.
 * That reading decides byte by byte, so chunks need no look at each other, but for a UTF-8 sequence
 * cut by a chunk's end: its first bytes wait for the next chunk.
 */
class BodyRepair {
  /** The start of a UTF-8 sequence that the previous chunk cut off. */
  private carry: Buffer | null = null;

  constructor(private readonly mode: 'sniff' | 'windows-1252') {}

  write(chunk: Buffer): Buffer {
    if (this.carry === null && isAscii(chunk)) return chunk;
    if (this.mode === 'windows-1252') return Buffer.from(decodeCharset(chunk, 'windows-1252') ?? '', 'utf8');
    let bytes = this.carry === null ? chunk : Buffer.concat([this.carry, chunk]);
    this.carry = null;
    const cut = cutSequenceStart(bytes);
    if (cut < bytes.length) {
      this.carry = Buffer.from(bytes.subarray(cut));
      bytes = bytes.subarray(0, cut);
    }
    return utf8OrRepaired(bytes);
  }

  end(): Buffer | null {
    const rest = this.carry;
    this.carry = null;
    return rest === null ? null : utf8OrRepaired(rest);
  }
}

/**
 * Bytes of a text body's transfer decoding gathered before they are passed on (`gatherOnPush`).
 * mailsplit hands a body over line by line, and mailparser keeps every piece of a text body until the
 * part ends, to join them: pieces of this size make that a few hundred Buffers, not one per line.
 */
const TEXT_BODY_CHUNK_BYTES = 64 * 1024;

/**
 * A text body's decoded bytes are passed on up to and including its `maxLineBreaks`-th line feed, and
 * the rest is dropped (the parse goes on). mailparser turns each CRLF of a text body into LF with one
 * global regular expression, whose cost in V8 grows with the number of line breaks, not of bytes: ~35
 * bytes of memory each, so a 10 MB body of empty lines took ~350 MB and one of 40 MB (what SES and the
 * relay accept) more than a Lambda has. Every line feed is a character of the text (or, in HTML, a
 * character of the HTML that html-to-text is given), so a body cut after more line feeds than the
 * summary keeps characters (`SUMMARY_BODY_MAX_CHARS`) and the HTML converted to text may have
 * (`maxHtmlLengthToParse`) gives the same summary as the whole body. Not for format=flowed bodies,
 * whose line feeds may vanish (a soft break with DelSp), nor UTF-16 or UTF-32 ones, where a 0x0A byte
 * need not be a line feed.
 */
function lineBreaksKept(summaryChars: number, maxHtmlLengthToParse: number): number {
  return Math.max(summaryChars, maxHtmlLengthToParse) + 1;
}

/** Where the `n`-th line feed of `bytes` ends (n ≥ 1), or -1 when `bytes` holds fewer; and how many it holds. */
function afterLineFeeds(bytes: Buffer, n: number): { end: number; count: number } {
  let count = 0;
  for (let at = bytes.indexOf(0x0a); at !== -1; at = bytes.indexOf(0x0a, at + 1)) {
    count += 1;
    if (count === n) return { end: at + 1, count };
  }
  return { end: -1, count };
}

/**
 * Gathers what a text body's transfer decoder (base64, quoted-printable, or none) outputs into pieces
 * of `TEXT_BODY_CHUNK_BYTES` (the last one shorter), keeps at most `maxLineBreaks` line feeds of it
 * (null: all), and sends the pieces through `repair` when one is given, by taking over the decoder's
 * `push`: no stream added between the decoder and mailparser for the body of every message, where one
 * more stream stage cost ~10% of the parse of a small message. A body is read whole before mailparser
 * returns anything, so holding a piece back delays nothing.
 */
function gatherOnPush(decoder: Transform, repair: BodyRepair | null, maxLineBreaks: number | null): void {
  const push = decoder.push.bind(decoder);
  let held: Buffer[] = [];
  let heldBytes = 0;
  let lineBreaks = 0;
  let cut = false;
  const pushHeld = (): boolean => {
    if (heldBytes === 0) return true;
    let piece = held.length === 1 ? (held[0] as Buffer) : Buffer.concat(held, heldBytes);
    held = [];
    heldBytes = 0;
    if (maxLineBreaks !== null) {
      const { end, count } = afterLineFeeds(piece, maxLineBreaks - lineBreaks);
      lineBreaks += count;
      if (end !== -1) {
        cut = true;
        piece = piece.subarray(0, end);
      }
    }
    return push(repair === null ? piece : repair.write(piece));
  };
  decoder.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk === null) {
      pushHeld();
      const rest = repair?.end() ?? null;
      if (rest !== null) push(rest);
      return push(null);
    }
    if (cut) return true;
    if (!Buffer.isBuffer(chunk)) {
      pushHeld();
      return push(chunk, encoding);
    }
    held.push(chunk);
    heldBytes += chunk.length;
    return heldBytes >= TEXT_BODY_CHUNK_BYTES ? pushHeld() : true;
  };
}

/** A decode stream of `BodyRepair`, for a body in a charset mailparser's decoder does not support. */
class BodyCharsetStream extends Transform {
  private readonly repair = new BodyRepair('sniff');

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    done(null, this.repair.write(chunk));
  }

  override _flush(done: TransformCallback): void {
    done(null, this.repair.end() ?? undefined);
  }
}

/** `bytes` as they are when they are UTF-8, else as `decodeUtf8OrWindows1252` reads them (in UTF-8: `utf8OrWindows1252Bytes`). */
function utf8OrRepaired(bytes: Buffer): Buffer {
  return isUtf8(bytes) ? bytes : utf8OrWindows1252Bytes(bytes);
}

/**
 * Where a UTF-8 sequence begins that the end of `bytes` cuts off (a lead byte in the last three bytes
 * with fewer bytes after it than it needs), else `bytes.length`.
 */
function cutSequenceStart(bytes: Buffer): number {
  for (let at = bytes.length - 1; at >= 0 && at >= bytes.length - 3; at--) {
    const b = bytes[at] as number;
    if (b < 0x80) break;
    if (b < 0xc0) continue;
    const needs = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    return bytes.length - at < needs ? at : bytes.length;
  }
  return bytes.length;
}

/**
 * The charsets tried, in order, for a body that its declared charset cannot read (a byte sequence that
 * charset has no character for, a U+FFFD in its reading): UTF-8 (the commonest mislabel), then the
 * other charsets of the same script, which senders confuse (`iso-2022-jp` on EUC-JP bytes, `big5` on
 * GBK). The first that reads every byte wins; if none does, the declared charset's reading stands.
 */
function mislabelCandidates(declared: string): string[] {
  const name = declared.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (/^(iso2022jp|eucjp|shiftjis|sjis|xsjis|cp932|ms932|windows31j|csiso2022jp)/.test(name)) {
    return ['utf-8', 'euc-jp', 'shift_jis', 'iso-2022-jp'];
  }
  if (/^(gb2312|gbk|gb18030|cp936|ms936|euccn|xgbk|big5|big5hkscs|cp950|xxbig5)/.test(name)) {
    return ['utf-8', 'gb18030', 'big5'];
  }
  if (/^(euckr|ksc56011987|cp949|ks_c_5601|iso2022kr)/.test(name)) return ['utf-8', 'euc-kr'];
  return ['utf-8'];
}

/**
 * A text body in a charset the parser's decoder knows: decoded by the decoder's own stream as before,
 * its bytes also kept until the part ends, when a reading with a U+FFFD the bytes do not hold as such
 * is checked against `mislabelCandidates`. Only parts that declare such a charset pay for it.
 */
class DeclaredCharsetStream extends Transform {
  private readonly raw: Buffer[] = [];
  private rawBytes = 0;
  private readonly decoded: Buffer[] = [];

  constructor(
    private readonly inner: DecodeStream,
    private readonly declared: string,
  ) {
    super();
    inner.on('data', (chunk: Buffer | string) => {
      this.decoded.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.raw.push(chunk);
    this.rawBytes += chunk.length;
    this.inner.write(chunk, (err) => done(err ?? null));
  }

  override _flush(done: TransformCallback): void {
    this.inner.once('error', done);
    this.inner.once('end', () => {
      const text = Buffer.concat(this.decoded);
      const bytes = Buffer.concat(this.raw, this.rawBytes);
      done(null, this.betterReading(text, bytes) ?? text);
    });
    this.inner.end();
  }

  /**
   * The bytes read in another charset, when the declared one left U+FFFDs that they do not hold as such.
   * Valid UTF-8 is evidence enough (text in a legacy charset is next to never valid UTF-8); a charset of
   * the same script is tried only when the declared one failed on at least 1 in 20 of its non-ASCII
   * characters, or it is 7-bit (ISO-2022) and got 8-bit bytes: the double-byte charsets read each
   * other's byte pairs, so one damaged character in a long Big5 text must not turn it all into GBK.
   */
  private betterReading(text: Buffer, bytes: Buffer): Buffer | null {
    if (!text.includes(REPLACEMENT_UTF8) || bytes.includes(REPLACEMENT_UTF8)) return null;
    if (isAscii(bytes)) return null;
    const reading = text.toString('utf8');
    const broken = reading.split('\ufffd').length - 1;
    const nonAscii = (reading.match(/[^ -~\s]/g) ?? []).length;
    const sevenBit = /^iso-?2022/i.test(this.declared.trim());
    for (const label of mislabelCandidates(this.declared)) {
      if (label === 'utf-8') {
        if (isUtf8(bytes)) return bytes;
        continue;
      }
      if (!sevenBit && broken * 20 < nonAscii) break;
      try {
        return Buffer.from(new TextDecoder(label, { fatal: true }).decode(bytes), 'utf8');
      } catch {
        // Not this one.
      }
    }
    return null;
  }
}

const REPLACEMENT_UTF8 = Buffer.from('\ufffd', 'utf8');

/** The charset mailparser is handed for a text body, standing for the declared one (`charset`). */
const BODY_CHARSET_PREFIX = 'x-mail-relay-body:';

/** A charset decode stream as mailparser's own decoder returns it (libmime's `DecodeStream`). */
type DecodeStream = Transform & { supported?: boolean };

interface ParserDecoder {
  decodeStream(charset: string): DecodeStream;
}

/** The part of mailparser's tree node (internal to it) that the body charset pass reads and sets. */
interface ParserNode {
  isAttachment?: boolean;
  decoder?: unknown;
  charset?: string;
  /** mailsplit's node of the part. */
  node?: { flowed?: boolean };
}

/**
 * mailparser's streaming parser, with the text bodies' charsets read as mail readers read them
 * (docs/adr/0019-body-charsets.md). It hooks two of mailparser's internal methods. `createNode`: an
 * inline text body of `sniff` or `windows-1252` mode (`bodyCharsetMode`) has its transfer decoder's
 * output gathered and repaired as it goes (`gatherOnPush`) and is then declared UTF-8, which mailparser takes as
 * it is; any other has its charset named `x-mail-relay-body:<declared>`. `getDecoder`: its decode
 * streams take that name apart: a charset mailparser's decoder supports gets the decoder's own stream
 * inside a `DeclaredCharsetStream`, one it does not (`unknown-8bit`) a `BodyCharsetStream`.
 * Attachments (a text part sent as a file included) keep their bytes as sent: only the text the
 * parser returns changes. test/unit/parser-body-charset.test.ts fails if either hook stops working.
 */
class BodyCharsetParser extends StreamingParser {
  /** Line feeds of a text body passed on (`lineBreaksKept`). */
  private readonly maxLineBreaks: number;

  constructor(options: MailParserOptions) {
    super(options);
    this.maxLineBreaks = lineBreaksKept(SUMMARY_BODY_MAX_CHARS, options.maxHtmlLengthToParse ?? 0);
  }

  getDecoder(): ParserDecoder {
    const own = (StreamingParser.prototype as unknown as { getDecoder(): ParserDecoder }).getDecoder.call(
      this,
    );
    return {
      decodeStream(charset: string): DecodeStream {
        if (!charset.startsWith(BODY_CHARSET_PREFIX)) return own.decodeStream(charset);
        const declared = charset.slice(BODY_CHARSET_PREFIX.length);
        const stream = own.decodeStream(declared);
        if (stream.supported === false) {
          stream.destroy();
          return new BodyCharsetStream();
        }
        // Only a multi-byte charset is checked for a mislabel: a single-byte one (Windows-125x,
        // ISO-8859-x, KOI8) reads every byte as some character, so its reading has no U+FFFD to
        // go by, and the extra stream stage would cost every such body for nothing.
        return mislabelCandidates(declared).length > 1 ? new DeclaredCharsetStream(stream, declared) : stream;
      },
    };
  }

  createNode(data: unknown): ParserNode {
    const node = (
      StreamingParser.prototype as unknown as { createNode(d: unknown): ParserNode }
    ).createNode.call(this, data);
    if (node.isAttachment !== false || !(node.decoder instanceof Transform)) return node;
    const mode = bodyCharsetMode(node.charset ?? '');
    const maxLineBreaks =
      node.node?.flowed === true || /^(utf-?(16|32)|ucs-?[24])/i.test(node.charset?.trim() ?? '')
        ? null
        : this.maxLineBreaks;
    if (mode === null) {
      gatherOnPush(node.decoder, null, maxLineBreaks);
      node.charset = `${BODY_CHARSET_PREFIX}${node.charset ?? ''}`;
    } else {
      // What the decoder outputs is UTF-8 then, which mailparser takes as it is.
      gatherOnPush(node.decoder, new BodyRepair(mode), maxLineBreaks);
      node.charset = 'utf-8';
    }
    return node;
  }
}

/** A stream of views of `raw` (no copies), `PARSE_CHUNK_BYTES` at a time. */
function inChunks(raw: Buffer): Readable {
  let at = 0;
  return new Readable({
    read() {
      if (at >= raw.length) {
        this.push(null);
        return;
      }
      this.push(raw.subarray(at, at + PARSE_CHUNK_BYTES));
      at += PARSE_CHUNK_BYTES;
    },
  });
}

/** Parses raw MIME with mailparser. Never throws: failures come back as `{ok: false, error}`. */
export class MailparserAdapter implements MailParser {
  private readonly timeoutMs: number;
  private readonly parserOptions: MailParserOptions;

  constructor(options: MailparserAdapterOptions = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_PARSE_TIMEOUT_MS;
    const maxHtml = options.maxHtmlLengthToParse ?? MAX_HTML_LENGTH_TO_PARSE;
    if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`timeoutMs must be a positive integer, got ${String(options.timeoutMs)}`);
    }
    if (!Number.isInteger(maxHtml) || maxHtml <= 0) {
      throw new RangeError(
        `maxHtmlLengthToParse must be a positive integer, got ${String(options.maxHtmlLengthToParse)}`,
      );
    }
    this.timeoutMs = timeoutMs;
    this.parserOptions = {
      maxHtmlLengthToParse: maxHtml,
      // We store and serve the message's own HTML: no generated HTML from text, no inlined
      // data: URLs for cid: images (the client fetches those parts by partId; `collect` never
      // inlines them), no linkifying.
      skipImageLinks: true,
      skipTextToHtml: true,
      skipTextLinks: true,
      // We hash the decoded bytes ourselves (sha256); mailparser's default md5 pass would be
      // wasted work on a 40 MB attachment.
      checksumAlgo: false,
      maxHeadSize: MAX_HEADER_BYTES,
      maxChildNodes: MAX_MIME_PARTS,
    };
  }

  async parse(raw: Buffer): Promise<ParseResult> {
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    let input: Buffer | null = null;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          timedOut = true;
          reject(new Error(`parse timed out after ${this.timeoutMs} ms`));
        }, this.timeoutMs);
        // A pending guard must not keep a CLI or test process alive.
        timer.unref();
      });
      input = legacyHeadersToUtf8(dropHeaderBoms(normalizeCrOnly(raw)));
      const parsed = await Promise.race([collect(input, this.parserOptions), timeout]);
      return toParseResult(parsed);
    } catch (err) {
      const error = errorMessage(err);
      // Past the time allowed nothing more is tried; else what can be read is its own header block.
      const summary = timedOut || input === null ? null : await this.headerSummary(input);
      return summary === null ? { ok: false, error } : { ok: false, error, summary };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The summary of a message's own header fields alone (`ownHeaderFields`), or null when even they cannot be read. */
  private async headerSummary(input: Buffer): Promise<ParsedSummary | null> {
    try {
      const result = toParseResult(await collect(ownHeaderFields(input), this.parserOptions));
      return result.ok ? result.summary : null;
    } catch {
      return null;
    }
  }
}

/** The fields a mailbox's list shows a message by (and `q` searches), kept first in a header-only summary. */
const LISTED_FIELDS: ReadonlySet<string> = new Set([
  'from',
  'to',
  'cc',
  'reply-to',
  'subject',
  'date',
  'message-id',
]);
/** What each of the `LISTED_FIELDS` (its first occurrence) may take of a header-only summary, cut to whole lines. */
const LISTED_FIELD_MAX_COST = 64 * 1024;
/** What the other fields, from the first on, may take of it (whole fields). */
const OTHER_FIELDS_MAX_COST = 256 * 1024;
/**
 * What mailsplit counts a header line for, at least (its `HEADER_LINE_MIN_COST`): the costs above are
 * counted the same way, so that the header block made of them stays well within `MAX_HEADER_BYTES`.
 */
const HEADER_LINE_MIN_COST = 64;

/**
 * The header block of a message that could not be parsed whole (more than `MAX_MIME_PARTS` parts, a
 * part's header block over `MAX_HEADER_BYTES`, or its own), made small enough to parse: its first
 * occurrence of each of the `LISTED_FIELDS`, cut to `LISTED_FIELD_MAX_COST` (whole lines: a folded
 * address list keeps its first addresses), and the other fields in order while they fit in
 * `OTHER_FIELDS_MAX_COST`; then a blank line, and no body. Read line by line, so a header block of
 * any size (one of 100,000 fields, or a 30 MB one that never ends) costs no more than its bytes.
 */
function ownHeaderFields(input: Buffer): Buffer {
  const kept: Buffer[] = [];
  const seen = new Set<string>();
  let othersCost = 0;
  let othersOpen = true;
  // The field being read: where it starts, its name, its cost, and where its lines within
  // LISTED_FIELD_MAX_COST end.
  let start = -1;
  let name = '';
  let cost = 0;
  let listedEnd = -1;
  const endField = (end: number) => {
    if (start < 0) return;
    if (LISTED_FIELDS.has(name) && !seen.has(name)) {
      seen.add(name);
      if (listedEnd > start) kept.push(input.subarray(start, listedEnd));
    } else if (othersOpen && othersCost + cost <= OTHER_FIELDS_MAX_COST) {
      othersCost += cost;
      kept.push(input.subarray(start, end));
    } else {
      othersOpen = false;
    }
    start = -1;
  };
  let at = 0;
  while (at < input.length) {
    const lf = input.indexOf(0x0a, at);
    const end = lf === -1 ? input.length : lf + 1;
    const first = input[at];
    if (first === 0x0a || (first === 0x0d && input[at + 1] === 0x0a)) break;
    const lineCost = Math.max(end - at, HEADER_LINE_MIN_COST);
    if ((first === 0x20 || first === 0x09) && start >= 0) {
      cost += lineCost;
    } else {
      endField(at);
      const colon = input.indexOf(0x3a, at);
      name = colon !== -1 && colon < end ? input.toString('latin1', at, colon).trim().toLowerCase() : '';
      start = at;
      cost = lineCost;
    }
    if (cost <= LISTED_FIELD_MAX_COST) listedEnd = end;
    at = end;
  }
  endField(at);
  const firstLf = input.indexOf(0x0a);
  const eol = firstLf > 0 && input[firstLf - 1] === 0x0d ? '\r\n' : '\n';
  const last = kept.at(-1);
  if (last !== undefined && last.at(-1) !== 0x0a) kept.push(Buffer.from(eol));
  kept.push(Buffer.from(eol));
  return Buffer.concat(kept);
}

/** Display text for an address list: `Name <a@b>, c@d`. Names that would break the list are quoted. */
export function formatAddressList(list: readonly AddressEntry[]): string {
  return list
    .map(({ name, address }) => {
      const shownName = /[",;<>@:()[\]\\]/.test(name) ? `"${name.replace(/(["\\])/g, '\\$1')}"` : name;
      if (name === '') return address;
      if (address === '') return shownName;
      return `${shownName} <${address}>`;
    })
    .filter((s) => s !== '')
    .join(', ');
}

const CRLF_CRLF = Buffer.from('\r\n\r\n');

/**
 * RFC 5322 requires CRLF, but classic Mac MTAs wrote bare CR. mailsplit splits lines on LF only,
 * so such a message would parse as a single header line. A message whose line breaks are CR alone
 * is read with CR as its line break: from its first bare CR on there is no LF, but for the CRLF that
 * ends SMTP's DATA, and before it only whole CRLF header lines, those prepended on its way (our
 * trace headers, SES's). Anything else is parsed as is. Only the parser's input changes: the
 * stored raw message stays byte-exact.
 */
function normalizeCrOnly(raw: Buffer): Buffer {
  // Such a message's first bare CR ends one of its header lines: it comes before any CRLF blank line
  // (so a CRLF message is looked at up to the end of its header block, not through a 40 MB body).
  const blank = raw.indexOf(CRLF_CRLF);
  const limit = blank === -1 ? raw.length : blank;
  let first = raw.indexOf(0x0d);
  while (first !== -1 && first < limit && raw[first + 1] === 0x0a) first = raw.indexOf(0x0d, first + 2);
  if (first === -1 || first >= limit) return raw;
  const lf = raw.indexOf(0x0a, first);
  if (lf !== -1 && lf !== raw.length - 1) return raw;
  // Before it: header lines ending in CRLF, no bare LF and no blank line (a bare CR in a body stays).
  for (let at = raw.indexOf(0x0a); at !== -1 && at < first; at = raw.indexOf(0x0a, at + 1)) {
    if (raw[at - 1] !== 0x0d || at === 1 || raw[at - 2] === 0x0a) return raw;
  }
  // After the message's own last CR, SMTP's CRLF adds no line.
  const end = lf !== -1 && raw[lf - 1] === 0x0d && raw[lf - 2] === 0x0d ? lf - 1 : raw.length;
  return Buffer.concat([raw.subarray(0, first), bareCrToCrlf(raw.subarray(first, end))]);
}

/**
 * `bytes` with each CR that no LF follows made CRLF. Built as bytes, not with a regular expression's
 * `replace` on its text, which V8 pays for with ~35 bytes of memory per match: a message of 10 MB of
 * CRs took ~350 MB that way.
 */
function bareCrToCrlf(bytes: Buffer): Buffer {
  let bare = 0;
  for (let at = bytes.indexOf(0x0d); at !== -1; at = bytes.indexOf(0x0d, at + 1)) {
    if (bytes[at + 1] !== 0x0a) bare += 1;
  }
  if (bare === 0) return bytes;
  const out = Buffer.allocUnsafe(bytes.length + bare);
  let from = 0;
  let to = 0;
  for (let at = bytes.indexOf(0x0d); at !== -1; at = bytes.indexOf(0x0d, at + 1)) {
    if (bytes[at + 1] === 0x0a) continue;
    to += bytes.copy(out, to, from, at + 1);
    out[to] = 0x0a;
    to += 1;
    from = at + 1;
  }
  bytes.copy(out, to, from);
  return out;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * Some Windows tools write a UTF-8 byte order mark before a message's first header. Behind the
 * trace headers SES (or the local relay) prepends, it sits at the start of a header line, where it
 * hides that header from the parser (`\ufeffSubject` is no Subject). Such a mark at the start of
 * a line of the header block, followed by a field name, is left out of the parser's input only; the
 * stored message keeps it. Followed by anything else it stays: without it, a line of only a BOM
 * would end the header block, and a BOM then whitespace would fold into the header above.
 */
function dropHeaderBoms(raw: Buffer): Buffer {
  let at = raw.indexOf(BOM);
  if (at < 0) return raw;
  // The blank line ending the header block (bare LF or CRLF), or the end of a message without one.
  const headerEnd = Math.min(
    ...[raw.indexOf('\n\n'), raw.indexOf('\n\r\n')].map((i) => (i < 0 ? raw.length : i)),
  );
  const kept: Buffer[] = [];
  let from = 0;
  for (; at >= 0 && at < headerEnd; at = raw.indexOf(BOM, at + BOM.length)) {
    if (at !== 0 && raw[at - 1] !== 0x0a) continue;
    const next = raw[at + BOM.length] ?? 0;
    // A field name's first character: printable US-ASCII except ':'.
    if (next < 0x21 || next > 0x7e || next === 0x3a) continue;
    kept.push(raw.subarray(from, at));
    from = at + BOM.length;
  }
  if (from === 0) return raw;
  kept.push(raw.subarray(from));
  return Buffer.concat(kept);
}

const utf8Lenient = new TextDecoder('utf-8');
// biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts an ISO-2022-JP escape sequence
const ISO_2022_JP_ESCAPE = /\x1b(?:\$[@B]|\([BJ])/;

/** The charset parameter of the Content-Type in a header block (latin1 text), or null. */
function declaredCharset(block: string): string | null {
  const m = /^content-type:(?:[^\n]|\n[ \t])*?;\s*charset\s*=\s*"?([^";\s]+)/im.exec(block);
  return m?.[1]?.toLowerCase() ?? null;
}

/** The boundary parameter of the Content-Type in a header block (latin1 text), or null. */
function declaredBoundary(block: string): string | null {
  const m = /^content-type:(?:[^\n]|\n[ \t])*?;\s*boundary\s*=\s*(?:"([^"\r\n]+)"|([^;\s]+))/im.exec(block);
  return m?.[1] ?? m?.[2] ?? null;
}

/**
 * One header field's bytes (latin1) as text, when they are not UTF-8: RFC 6532 allows UTF-8 there,
 * but older mailers wrote the charset of their text (GB2312, Big5, Latin-1) or ISO-2022-JP escapes,
 * which mailparser read as UTF-8 (each byte a U+FFFD). Bytes that are UTF-8 but for a character cut
 * off at a length limit (Yahoo cuts long file names) are read as UTF-8, less those bytes. Null when the
 * field is to stay as it is.
 */
function fieldText(field: string, charset: string | null): string | null {
  const bytes = Buffer.from(field, 'latin1');
  if (!/[\x80-\xff]/.test(field)) {
    return ISO_2022_JP_ESCAPE.test(field) ? new TextDecoder('iso-2022-jp').decode(bytes) : null;
  }
  const asUtf8 = utf8Lenient.decode(bytes);
  // A U+FFFD written as such (its UTF-8 bytes, as a mailer that met a broken byte sends it on) is text.
  const written = field.split('\xef\xbf\xbd').length - 1;
  const broken = (asUtf8.match(/\ufffd/g) ?? []).length - written;
  if (broken === 0) return null;
  const good = (asUtf8.match(/[^ -~\s\ufffd]/g) ?? []).length;
  // UTF-8 but for a few bytes (a character cut off): UTF-8 without them. Left as it was, or with a
  // U+FFFD in their place, mailparser (mailsplit) reads the whole value as Latin-1 (`ÐÐ°Ñ…` for `Карт…`).
  if (good >= 4 * broken) return asUtf8.replace(/\ufffd/g, '');
  for (const label of [charset, 'windows-1252']) {
    // A header is never UTF-16 or UTF-32 (a part of that charset has ASCII headers like any other).
    if (label === null || /^(utf-?8|us-ascii|ascii|utf-?16.*|utf-?32.*)$/.test(label)) continue;
    const decoded = decodeCharset(bytes, label);
    // mailsplit reads a value holding a U+FFFD as Latin-1 again: a byte the charset lacks is left out.
    if (decoded !== null) return decoded.replace(/\ufffd/g, '');
  }
  return null;
}

/**
 * An encoded word of a charset `repairEncodedWords` may rewrite: UTF-8, or one no decoder knows
 * (`unknown-8bit`, `x-unknown`, `x-user-defined` are the ones mailers write).
 */
const SUSPECT_WORD_RE = /=\?(?:utf-?8|unknown|x-)[^?\s]*\?[BbQq]\?/i;

/**
 * The header blocks of a message (its own and each MIME part's, found by the boundaries they declare)
 * with every field whose 8-bit bytes are not UTF-8 rewritten as UTF-8 (`fieldText`), read in the
 * charset of that block's Content-Type, else of the message's (its own, else the first a part declares),
 * else Windows-1252, as mail readers do. Only the parser's input changes: the stored message stays
 * byte-exact. A message whose headers are ASCII or UTF-8 is returned as it is.
 */
function legacyHeadersToUtf8(raw: Buffer): Buffer {
  /** Each header block's place and its text (latin1: one character per byte). */
  const blocks: { start: number; end: number; text: string }[] = [];
  const blockAt = (start: number) => {
    // Up to the blank line that ends it (LF or CRLF), line by line: only the header block is read.
    // A block longer than the parser takes (MAX_HEADER_BYTES) is no header block to it: left alone.
    // A block that is empty (its first line is the blank one) is none: what follows it is body.
    if (raw[start] === 0x0a || (raw[start] === 0x0d && raw[start + 1] === 0x0a)) return '';
    let end = -1;
    const limit = Math.min(raw.length, start + MAX_HEADER_BYTES);
    for (let lf = raw.indexOf(0x0a, start); lf >= 0 && lf < limit; lf = raw.indexOf(0x0a, lf + 1)) {
      if (raw[lf + 1] === 0x0a || (raw[lf + 1] === 0x0d && raw[lf + 2] === 0x0a)) {
        end = lf + 1;
        break;
      }
    }
    if (end < 0 && limit === raw.length) end = raw.length;
    if (end < 0) return '';
    const text = raw.toString('latin1', start, end);
    blocks.push({ start, end, text });
    return text;
  };
  const top = blockAt(0);
  const boundaries = new Set<string>();
  const topBoundary = declaredBoundary(top);
  if (topBoundary !== null) boundaries.add(topBoundary);
  let fallback = declaredCharset(top);
  // A part's header block follows a delimiter line of a boundary a block before it declares (RFC 2046
  // §5.1.1): one pass over the `--` lines, which also finds the boundaries of nested multiparts.
  const DASHES = Buffer.from('\n--');
  for (let at = boundaries.size > 0 ? raw.indexOf(DASHES) : -1; at >= 0; at = raw.indexOf(DASHES, at + 1)) {
    const lineEnd = raw.indexOf(0x0a, at + 1);
    if (lineEnd < 0) break;
    if (!boundaries.has(raw.toString('latin1', at + 3, lineEnd).trimEnd())) continue;
    const block = blockAt(lineEnd + 1);
    fallback ??= declaredCharset(block);
    const inner = declaredBoundary(block);
    if (inner !== null) boundaries.add(inner);
  }
  const out: Buffer[] = [];
  let from = 0;
  for (const { start, end, text: block } of blocks) {
    if (start < from) continue;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts an ISO-2022-JP escape sequence
    const eightBit = /[\x80-\xff\x1b]/.test(block);
    if (!eightBit && !SUSPECT_WORD_RE.test(block)) continue;
    const charset = declaredCharset(block) ?? fallback;
    // Whole fields: a first line and its continuation lines.
    const fields = eightBit
      ? block.replace(/^[^\s:][^\n]*(?:\n[ \t][^\n]*)*/gm, (field) => {
          const text = fieldText(field, charset);
          return text === null ? field : Buffer.from(text, 'utf8').toString('latin1');
        })
      : block;
    // Encoded words: never adjacent across fields (a field name is between them).
    const rewritten = repairEncodedWords(fields) ?? fields;
    if (rewritten === block) continue;
    out.push(raw.subarray(from, start), Buffer.from(rewritten, 'latin1'));
    from = end;
  }
  if (out.length === 0) return raw;
  out.push(raw.subarray(from));
  return Buffer.concat(out);
}

/** An RFC 2045 token of a sensible length: a charset name that can go into a Content-Type as it is. */
const CHARSET_RE = /^[A-Za-z0-9!#$%&'*+.^_`{|}~-]{1,40}$/;

/** The declared charset of a text part (its bytes are kept as sent), or null. */
function textCharset(meta: AttachmentCommon): string | null {
  if (typeof meta.contentType !== 'string' || !meta.contentType.toLowerCase().startsWith('text/'))
    return null;
  const header = meta.headers?.get('content-type') as { params?: Record<string, unknown> } | undefined;
  const charset = header?.params?.charset;
  return typeof charset === 'string' && CHARSET_RE.test(charset.trim()) ? charset.trim() : null;
}

function toParseResult(parsed: Collected): ParseResult {
  const headerLines: HeaderLines = parsed.headerLines;
  const headers = headerLines
    .map((line) => toHeaderEntry(line.line))
    // An empty input yields one empty "line"; it is not a header.
    .filter((h) => h.name !== '' || h.value !== '');

  const attachments: Attachment[] = [];
  const parts: DecodedPart[] = [];
  parsed.attachments.forEach(({ meta, chunks, size }, index) => {
    const partId = String(index + 1);
    const filename = nonEmpty(meta.filename);
    const hash = createHash('sha256');
    for (const chunk of chunks) hash.update(chunk);
    attachments.push({
      partId,
      filename,
      // An empty `Content-Type: ; name="x.jpg"` reaches us as `false` despite mailparser's
      // typings; guess from the file name as mailparser does for application/octet-stream.
      contentType: nonEmpty(meta.contentType) ?? detectMimeType(filename ?? false),
      size,
      sha256: hash.digest('hex'),
      contentId: nonEmpty(meta.contentId),
      disposition: nonEmpty(meta.contentDisposition),
      charset: textCharset(meta),
    });
    const content =
      chunks.length === 1
        ? (chunks[0] as Buffer)
        : size <= JOINED_PART_MAX_BYTES
          ? Buffer.concat(chunks, size)
          : chunks;
    parts.push({ partId, content });
  });

  const summary: ParsedSummary = {
    headers,
    from: toAddressEntries(parsed.from),
    to: toAddressEntries(parsed.to),
    cc: toAddressEntries(parsed.cc),
    replyTo: toAddressEntries(parsed.replyTo),
    // mailparser leaves `subject` unset for an empty Subject header; present-but-empty is not absent.
    subject:
      nonEmpty(parsed.subject) ?? (headers.some((h) => h.name.toLowerCase() === 'subject') ? '' : null),
    date: readDate(headers),
    messageId: nonEmpty(parsed.messageId),
    text: typeof parsed.text === 'string' ? summaryBody(parsed.text) : null,
    html: typeof parsed.html === 'string' ? summaryBody(parsed.html) : null,
    attachments,
  };
  return { ok: true, summary, parts };
}

/**
 * mailsplit hands header lines over as binary (latin1) strings with folding kept as CRLF. Raw
 * 8-bit header bytes are UTF-8 in practice (RFC 6532), so they are read as UTF-8.
 */
function toHeaderEntry(binaryLine: string): { name: string; value: string } {
  // RFC 5322 §2.2.3: unfolding removes the CRLF and keeps the whitespace that follows it.
  const line = Buffer.from(binaryLine, 'latin1')
    .toString('utf8')
    .replace(/\r?\n(?=[ \t])/g, '');
  const colon = line.indexOf(':');
  // A line without a colon has no field name: typically body text that followed the headers
  // without the blank separator line. Kept as a value so no text is lost or shown as a name.
  if (colon < 0) return { name: '', value: line.trim() };
  return { name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() };
}

/**
 * Read from the header itself: mailparser substitutes the current time for a Date it cannot
 * read, which would silently re-date the message, and reads one without a zone in the host's.
 */
function readDate(headers: readonly { name: string; value: string }[]): string | null {
  const header = headers.find((h) => h.name.toLowerCase() === 'date');
  const ms = header === undefined ? null : parseMailDate(header.value);
  return ms === null ? null : new Date(ms).toISOString();
}

function toAddressEntries(field: AddressObject | AddressObject[] | undefined): AddressEntry[] {
  if (field === undefined) return [];
  const objects = Array.isArray(field) ? field : [field];
  const out: AddressEntry[] = [];
  for (const object of objects) if (Array.isArray(object.value)) flattenAddresses(object.value, out);
  return out;
}

/** Groups (`Team: a@x, b@y;`) contribute their members; the group name is not a mailbox. */
function flattenAddresses(list: readonly EmailAddress[], out: AddressEntry[]): void {
  for (const entry of list) {
    if (Array.isArray(entry.group)) {
      flattenAddresses(entry.group, out);
      continue;
    }
    const name = typeof entry.name === 'string' ? entry.name : '';
    const address = typeof entry.address === 'string' ? entry.address : '';
    if (name !== '' || address !== '') out.push({ name, address });
  }
}

/** mailparser's runtime values are looser than its typings (`false` for an empty header), so check. */
function nonEmpty(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
