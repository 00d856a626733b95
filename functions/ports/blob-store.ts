/**
 * BlobStore: raw messages, parsed summaries and decoded parts, addressed by key
 * (`inbound/<sesMessageId>`, `mailboxes/<mailbox>/<id>.eml`, `mailboxes/<mailbox>/<id>/…`).
 * Adapters: S3 (AWS) and files under the data dir (local). Both pass test/contract/blob-store.contract.ts.
 */
import type { Readable } from 'node:stream';
import { ValidationError } from '../core/errors.ts';

export interface BlobInfo {
  readonly key: string;
  readonly size: number;
  /** When the blob was written (ms since epoch). */
  readonly lastModified: number;
}

export interface PresignOptions {
  /** Seconds the URL stays valid. */
  readonly expiresIn: number;
  /** Sets `Content-Type` on the response. */
  readonly contentType?: string;
  /** Sets `Content-Disposition` on the response. */
  readonly contentDisposition?: string;
  /**
   * The method the URL is for. An S3 signature covers the method, so a URL signed for GET is
   * refused (403) to HEAD: a redirect answering a HEAD must be signed for HEAD. The local store's
   * links serve both. @default 'GET'
   */
  readonly method?: 'GET' | 'HEAD';
}

export interface BlobStore {
  /**
   * Writes a blob atomically: a reader sees the whole old value, the whole new value, or nothing.
   * Returns once the bytes are durable (a 200 from S3; fsync locally, except in the local store's
   * `deferred` durability, where the ingest journal's checkpoint syncs them later).
   */
  put(key: string, body: Buffer | Readable, options?: { contentType?: string }): Promise<void>;
  /** The whole blob, or null when it does not exist. */
  get(key: string): Promise<Buffer | null>;
  /** A stream of the blob (or of bytes `start`..`end` inclusive), or null when it does not exist. */
  getStream(key: string, range?: { start: number; end?: number }): Promise<Readable | null>;
  head(key: string): Promise<BlobInfo | null>;
  /**
   * Server-side copy (S3 CopyObject; a row copy or a hard link locally). Durable on return, as `put`.
   * Throws NotFoundError when the source does not exist. The local store also copies the result of
   * a `put` of the source that was called before and is still in flight (S3 may not see it yet).
   */
  copy(fromKey: string, toKey: string): Promise<void>;
  /** Deletes one blob; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Deletes every blob whose key starts with `prefix`. */
  deletePrefix(prefix: string): Promise<void>;
  /** Keys under a prefix, in lexicographic order. */
  list(prefix: string): AsyncIterable<BlobInfo>;
  /** A short-lived URL that serves the blob to anyone holding it. */
  presign(key: string, options: PresignOptions): Promise<string>;
}

/** What every adapter refuses as a range (`invalid_range`): negative, fractional, or end before start. */
export function assertByteRange(range: { start: number; end?: number } | undefined): void {
  if (range === undefined) return;
  const { start, end } = range;
  if (
    !Number.isSafeInteger(start) ||
    start < 0 ||
    (end !== undefined && (!Number.isSafeInteger(end) || end < start))
  ) {
    throw new ValidationError('invalid byte range', [JSON.stringify(range)], 'invalid_range');
  }
}
