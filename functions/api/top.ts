/**
 * POP3 TOP (RFC 1939 §7, https://www.rfc-editor.org/rfc/rfc1939#page-11): the headers, the blank
 * line that ends them, then the first N lines of the body, computed from the stored raw bytes.
 * Only as much of the blob is read as the answer needs, in growing range reads, so TOP 0 on a
 * 40 MB message reads one small chunk. Lines are kept exactly as stored (CRLF or bare LF, 8-bit,
 * dot-leading lines unchanged: dot-stuffing belongs to the POP3 wire, not to HTTP).
 */
import type { Readable } from 'node:stream';
import type { BlobStore } from '../ports/blob-store.ts';

/**
 * Most body lines TOP takes (a count this high means "the whole body"): POP3 clients ask for a few
 * dozen to preview, and fetchmail, keeping mail on the server, asks for 99,999,999 to mean all of it.
 */
export const MAX_TOP_LINES = 2 ** 31 - 1;

/** First range read: headers of ordinary mail fit, so most TOPs are one read. */
const FIRST_CHUNK_BYTES = 64 * 1024;
/** Range reads double up to this size, bounding both the number of reads and memory per read. */
const MAX_CHUNK_BYTES = 4 * 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;

export type TopResult =
  /** The answer, when it is at most `maxBytes`. */
  | { readonly kind: 'bytes'; readonly body: Buffer }
  /** The answer is the whole message and larger than `maxBytes`: serve it as RETR does. */
  | { readonly kind: 'whole-too-large' }
  /** The answer is part of the message and larger than `maxBytes`. */
  | { readonly kind: 'too-large'; readonly bytes: number };

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Computes TOP for the blob at `key` of `size` bytes. Returns null when the blob is missing.
 * A message without a blank line is all headers, so TOP returns all of it.
 */
export async function readTop(
  blobs: BlobStore,
  key: string,
  size: number,
  lines: number,
  maxBytes: number,
): Promise<TopResult | null> {
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let overflow = false;
  let inHeaders = true;
  let remaining = lines;
  // The current line so far, across chunk boundaries: its length and whether it began with CR
  // (a line that is just CR before its LF is the blank line of a CRLF message).
  let lineLength = 0;
  let lineStartsWithCr = false;
  let end = -1;
  let offset = 0;
  let chunkSize = FIRST_CHUNK_BYTES;

  while (offset < size && end < 0) {
    const stream = await blobs.getStream(key, { start: offset, end: Math.min(size, offset + chunkSize) - 1 });
    if (stream === null) return null;
    const buf = await readAll(stream);
    if (buf.length === 0) break;
    let pos = 0;
    while (pos < buf.length) {
      const lf = buf.indexOf(LF, pos);
      const segmentEnd = lf < 0 ? buf.length : lf;
      if (segmentEnd > pos) {
        if (lineLength === 0) lineStartsWithCr = buf[pos] === CR;
        lineLength += segmentEnd - pos;
      }
      if (lf < 0) break;
      const blank = lineLength === 0 || (lineLength === 1 && lineStartsWithCr);
      lineLength = 0;
      if (inHeaders) {
        if (blank) {
          inHeaders = false;
          if (remaining === 0) end = offset + lf + 1;
        }
      } else {
        remaining -= 1;
        if (remaining === 0) end = offset + lf + 1;
      }
      if (end >= 0) break;
      pos = lf + 1;
    }
    const useful = end >= 0 ? buf.subarray(0, end - offset) : buf;
    if (!overflow && keptBytes + useful.length <= maxBytes) {
      kept.push(useful);
      keptBytes += useful.length;
    } else {
      // Past the limit we only keep counting, to tell "whole message" from "part of it".
      overflow = true;
      kept.length = 0;
    }
    offset += buf.length;
    chunkSize = Math.min(chunkSize * 2, MAX_CHUNK_BYTES);
  }
  const answerBytes = end >= 0 ? end : offset;
  if (!overflow) return { kind: 'bytes', body: Buffer.concat(kept, keptBytes) };
  return answerBytes >= size ? { kind: 'whole-too-large' } : { kind: 'too-large', bytes: answerBytes };
}
