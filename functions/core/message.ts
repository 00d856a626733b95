/**
 * Our own types for a parsed message. Produced once at delivery by the MailParser port and
 * stored beside the raw message, so no later read re-parses it. No mailparser type leaks here.
 */
import { Readable } from 'node:stream';
import * as z from 'zod';

export const addressEntrySchema = z.object({
  name: z.string(),
  address: z.string(),
});
export type AddressEntry = z.infer<typeof addressEntrySchema>;

export const attachmentSchema = z.object({
  /** Stable id of the decoded part inside this message: `1`, `2`, … in document order. */
  partId: z.string(),
  filename: z.string().nullable(),
  contentType: z.string(),
  /** Decoded size in bytes. */
  size: z.number().int().nonnegative(),
  /** Hex SHA-256 of the decoded bytes. */
  sha256: z.string(),
  contentId: z.string().nullable(),
  disposition: z.string().nullable(),
  /**
   * A text part's charset as its sender declared it (`Content-Type: text/plain; charset=…`): its
   * bytes are stored as sent, and served with it. Absent in summaries stored before it was kept.
   */
  charset: z.string().nullable().optional(),
});
export type Attachment = z.infer<typeof attachmentSchema>;

export const headerEntrySchema = z.object({ name: z.string(), value: z.string() });

export const parsedSummarySchema = z.object({
  /** Every header line in order, unfolded, as decoded text. */
  headers: z.array(headerEntrySchema),
  from: z.array(addressEntrySchema),
  to: z.array(addressEntrySchema),
  cc: z.array(addressEntrySchema),
  replyTo: z.array(addressEntrySchema),
  subject: z.string().nullable(),
  /** ISO 8601, or null when the Date header is missing or unreadable. */
  date: z.string().nullable(),
  messageId: z.string().nullable(),
  text: z.string().nullable(),
  html: z.string().nullable(),
  attachments: z.array(attachmentSchema),
});
export type ParsedSummary = z.infer<typeof parsedSummarySchema>;

/**
 * A decoded part to be stored under its partId: one Buffer, or (a large part) the chunks it was
 * decoded in, in order, never joined (see `partBody`).
 */
export interface DecodedPart {
  readonly partId: string;
  readonly content: Buffer | readonly Buffer[];
}

/** What to hand the blob store for a part: its Buffer, or a byte stream of its chunks. */
export function partBody(part: DecodedPart): Buffer | Readable {
  const { content } = part;
  return Buffer.isBuffer(content) ? content : Readable.from(content, { objectMode: false });
}

/** A part's bytes as one Buffer (joins a chunked part: for tests and small parts). */
export function partBytes(part: DecodedPart): Buffer {
  const { content } = part;
  return Buffer.isBuffer(content) ? content : Buffer.concat(content);
}

export type ParseResult =
  | { readonly ok: true; readonly summary: ParsedSummary; readonly parts: readonly DecodedPart[] }
  | {
      readonly ok: false;
      readonly error: string;
      /**
       * What could be read of a message that could not be parsed whole: its own header fields (or the
       * most of them a parser takes), with no text, html or attachments. Absent when not even those.
       */
      readonly summary?: ParsedSummary;
    };

/** The first `n` UTF-16 units of `s`, one fewer if the last would be half of a surrogate pair. */
export function codePointPrefix(s: string, n: number): string {
  if (n <= 0) return '';
  if (n >= s.length) return s;
  const last = s.charCodeAt(n - 1);
  return last >= 0xd800 && last <= 0xdbff ? s.slice(0, n - 1) : s.slice(0, n);
}

/**
 * The text and HTML bodies a message's summary keeps are cut to this many UTF-16 units (whole code
 * points). `GET …/messages/{id}` answers at most 2 MiB of each (DEFAULT_BODY_MAX_BYTES, counted in
 * bytes of which every unit takes at least one), so a body this long is cut there anyway and nothing
 * the API serves is lost; the whole message stays in its raw copy. Uncut, a 30 MB text body made a
 * 30 MB summary, which the router held three times over (the string, its JSON, its bytes) and the
 * API read and parsed whole to answer 2 MiB of it.
 */
export const SUMMARY_BODY_MAX_CHARS = 2 * 1024 * 1024;

/**
 * `s` cut to `SUMMARY_BODY_MAX_CHARS`, as a string of its own: a prefix made by `slice` would keep the
 * whole body alive for as long as the summary lives.
 */
export function summaryBody(s: string): string {
  if (s.length <= SUMMARY_BODY_MAX_CHARS) return s;
  return Buffer.from(codePointPrefix(s, SUMMARY_BODY_MAX_CHARS), 'utf16le').toString('utf16le');
}

/**
 * The text fields of an index entry (`from`, `to`, `subject`) are cut to this many UTF-16 units
 * (RFC 5322's line length): a header block can take 1 MiB, while a DynamoDB item, which also holds
 * lower-cased copies of these fields for search, takes at most 400 KB, and a LIST page carries 100
 * entries. The message's headers keep the whole values.
 */
export const ENTRY_TEXT_MAX_CHARS = 998;

/** `s` if at most `max` units long, else a prefix of it (whole code points) ending in '…', `max` units at most. */
export function clipText(s: string, max: number): string {
  return s.length <= max ? s : `${codePointPrefix(s, max - 1)}…`;
}

/** Snippet length shown in list items (no body content beyond this). */
export const SNIPPET_CHARS = 160;

export function snippetOf(summary: ParsedSummary): string {
  const html = summary.text === null && summary.html !== null;
  const source = summary.text ?? summary.html ?? '';
  // The snippet of a prefix is the snippet of the whole once it is longer than a snippet, so a
  // 2 MB body is not scanned whole for 160 characters. An HTML prefix ends right after a '>', so
  // every tag in it is complete and is removed exactly as in the whole.
  for (let length = 4 * 1024; length < source.length; length *= 4) {
    const end = html ? source.lastIndexOf('>', length) + 1 : length;
    if (end <= 0) continue;
    const snippet = snippetText(source.slice(0, end), html).trimStart();
    if (snippet.length > SNIPPET_CHARS) return codePointPrefix(snippet, SNIPPET_CHARS);
  }
  return codePointPrefix(snippetText(source, html).trim(), SNIPPET_CHARS);
}

function snippetText(source: string, html: boolean): string {
  return (html ? source.replace(/<[^>]*>/g, ' ') : source).replace(/\s+/g, ' ');
}
