/** Response header values built from stored message data, which must never break the header. */

const TOKEN_CHARS = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE_RE = new RegExp(`^${TOKEN_CHARS}/${TOKEN_CHARS}$`);

/** The part's media type when it is a plain `type/subtype`, else `application/octet-stream`. */
export function safeContentType(contentType: string): string {
  const essence = contentType.split(';')[0]?.trim().toLowerCase() ?? '';
  return MEDIA_TYPE_RE.test(essence) ? essence : 'application/octet-stream';
}

const CHARSET_RE = new RegExp(`^${TOKEN_CHARS}$`);

/**
 * A text type with the charset its part declared (its bytes are served as sent; without it a browser
 * guesses, and a Latin-1 text shows as mojibake). Other types, and a charset that is no token, as given.
 */
export function withCharset(mediaType: string, charset: string | null | undefined): string {
  if (!charset || !mediaType.startsWith('text/') || !CHARSET_RE.test(charset)) return mediaType;
  return `${mediaType}; charset=${charset}`;
}

/** RFC 8187 ext-value: UTF-8, percent-encoding everything outside attr-char. */
function encodeExtValue(value: string): string {
  return encodeURIComponent(value).replace(
    /['()*]/g,
    (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * Longest file name given, in UTF-8 bytes: what file systems take (ext4, APFS, NTFS). A sender's
 * name of thousands of characters would also make a header HTTP clients refuse (fetch/undici: 16 KiB
 * of headers in all) and, through a presigned URL's `cd`, a URL too long to follow.
 */
const MAX_FILENAME_BYTES = 255;

/** `name` cut to MAX_FILENAME_BYTES (whole characters), keeping a short extension. */
function shortName(name: string): string {
  if (Buffer.byteLength(name) <= MAX_FILENAME_BYTES) return name;
  const ext = /\.[^.]{1,16}$/u.exec(name)?.[0] ?? '';
  let budget = MAX_FILENAME_BYTES - Buffer.byteLength(ext);
  let stem = '';
  for (const ch of name.slice(0, name.length - ext.length)) {
    budget -= Buffer.byteLength(ch);
    if (budget < 0) break;
    stem += ch;
  }
  return stem + ext;
}

/**
 * Unicode's bidirectional embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI,
 * PDI). In a file name they are the known way to disguise one: `invoice<RLO>fdp.exe` shows as
 * `invoiceexe.pdf` in a save dialog and a file manager. The web inbox leaves them out of the names it
 * shows (web/inbox/inbox.js `plain`); so does the name a part is served under.
 */
const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069]/g;

/**
 * `Content-Disposition` (RFC 6266) carrying a file name: an ASCII `filename` for old clients and
 * `filename*` with the exact UTF-8 name (cut to 255 bytes), less bidirectional controls
 * (`BIDI_CONTROLS`). Path separators and control characters are replaced, so a client that saves
 * under the given name stays in its directory.
 */
export function contentDisposition(type: 'inline' | 'attachment', filename: string): string {
  const cleaned =
    shortName(
      filename
        .replace(BIDI_CONTROLS, '')
        .replace(/[\\/\p{Cc}]/gu, '_')
        .trim(),
    ) || 'download';
  const ascii = cleaned.replace(/[^\x20-\x7e]/g, '_').replace(/["%]/g, '_');
  return `${type}; filename="${ascii}"; filename*=UTF-8''${encodeExtValue(cleaned)}`;
}

/** Stored content addressed by id or hash never changes: clients may keep it. `private`: it needs a token. */
export const IMMUTABLE_CACHE_CONTROL = 'private, max-age=31536000, immutable';
/**
 * A message's part: its bytes and headers come from the stored summary, which `mail-relay reparse`
 * may rewrite (a part id may then name other bytes, or the same bytes with another type). Kept, but
 * asked again each time (a 304 when its ETag still matches).
 */
export const REVALIDATE_CACHE_CONTROL = 'private, no-cache';
/** Mailbox state (lists, counters, flags) changes with every delivery. */
export const NO_STORE = 'no-store';

/**
 * On every response carrying a message's or a part's bytes: whatever the sender put there, a browser
 * that opens it must not run it with our origin (no script, no plugin, no same-origin access).
 */
export const SANDBOX_CSP = "sandbox; default-src 'none'";

/** Whether an `If-None-Match` header matches `etag` (weak comparison, RFC 9110 §13.1.2). */
export function matchesEtag(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  if (ifNoneMatch.trim() === '*') return true;
  const bare = etag.replace(/^W\//, '');
  return ifNoneMatch.split(',').some((t) => t.trim().replace(/^W\//, '') === bare);
}

/**
 * Whether an `If-Match` header holds for a resource that exists (RFC 9110 §13.1.1; a request for one
 * that does not is answered as without it, §13.2.1): absent or `*`, it does; a list holds when one
 * of its tags is `etag` by strong comparison (a weak tag never does). `etag` null: the resource has
 * none, so no tag can match.
 */
export function ifMatchHolds(ifMatch: string | undefined, etag: string | null): boolean {
  if (ifMatch === undefined || ifMatch.trim() === '*') return true;
  if (etag === null || etag.startsWith('W/')) return false;
  return ifMatch.split(',').some((t) => t.trim() === etag);
}

/** What a `Range` header asks of a representation of `size` bytes (RFC 9110 §14.2). */
export type RangeAnswer =
  /** No range to serve: answer `200` with the whole (no header, one not understood, several ranges). */
  | { readonly kind: 'whole' }
  /** `206` with bytes `start`..`end` (inclusive), `Content-Range: bytes start-end/size`. */
  | { readonly kind: 'part'; readonly start: number; readonly end: number }
  /** `416` with `Content-Range: bytes *\/size`: no byte of the range exists. */
  | { readonly kind: 'unsatisfiable' };

/**
 * The range a request asks for (`requestedRange`), for a GET only: RFC 9110 §14.2 defines `Range` for
 * GET, and a HEAD is answered with the whole's headers.
 */
export function rangeOfRequest(
  c: { readonly req: { readonly method: string; header(name: string): string | undefined } },
  size: number,
  etag: string,
): RangeAnswer {
  return c.req.method === 'GET'
    ? requestedRange(c.req.header('Range'), c.req.header('If-Range'), size, etag)
    : { kind: 'whole' };
}

/** The `416` answer's body and headers for a representation of `size` bytes. */
export function rangeNotSatisfiable(
  size: number,
  cacheControl: string,
): { body: { error: { code: string; message: string } }; headers: Record<string, string> } {
  return {
    body: {
      error: {
        code: 'range_not_satisfiable',
        message: `the range asked for starts at or beyond the end of the ${size} bytes`,
      },
    },
    headers: { 'Content-Range': `bytes */${size}`, 'Cache-Control': cacheControl },
  };
}

const BYTE_RANGE_RE = /^bytes[ \t]*=[ \t]*(?:(\d+)[ \t]*-[ \t]*(\d*)|-[ \t]*(\d+))[ \t]*$/i;

/**
 * The single byte range a GET asks for, as RFC 9110 §14 has it: `bytes=a-b`, `bytes=a-` or the last
 * n bytes `bytes=-n`, a last position past the end taken as the end. Ignored (`whole`), as a server
 * may: another unit, a malformed header, several ranges (what downloaders and media players send is
 * one), and a range whose `If-Range` (§13.1.5) names another ETag or a date (our validators are
 * ETags). `etag` is the strong ETag the `200` would carry.
 */
export function requestedRange(
  range: string | undefined,
  ifRange: string | undefined,
  size: number,
  etag: string,
): RangeAnswer {
  if (range === undefined) return { kind: 'whole' };
  if (ifRange !== undefined && (etag.startsWith('W/') || ifRange.trim() !== etag)) return { kind: 'whole' };
  const m = BYTE_RANGE_RE.exec(range.trim());
  if (m === null) return { kind: 'whole' };
  const [, first, last, suffix] = m;
  if (suffix !== undefined) {
    const n = Number(suffix);
    if (!Number.isSafeInteger(n)) return { kind: 'whole' };
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'part', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' || last === undefined ? Number.POSITIVE_INFINITY : Number(last);
  if (!Number.isSafeInteger(start) || (end !== Number.POSITIVE_INFINITY && !Number.isSafeInteger(end))) {
    return { kind: 'whole' };
  }
  if (end < start) return { kind: 'whole' }; // invalid: ignored (§14.1.1)
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'part', start, end: Math.min(end, size - 1) };
}
