/**
 * BlobStore on Amazon S3 (or any S3-compatible endpoint: the SDK honours AWS_ENDPOINT_URL).
 *
 * Bodies are streamed both ways: `getStream` hands out the HTTP response body as is (range reads
 * are S3 `Range` requests), and a Readable given to `put` is uploaded in parts of at most
 * `partSizeBytes`, so no caller ever needs a whole 40 MB message in memory twice, let alone in a
 * string. A put is atomic by S3's own rules: a reader sees the old object or the new one.
 */
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NotFoundError, ValidationError } from '../../core/errors.ts';
import {
  assertByteRange,
  type BlobInfo,
  type BlobStore,
  type PresignOptions,
} from '../../ports/blob-store.ts';

/** S3's limit on key length (UTF-8 bytes). */
export const MAX_KEY_BYTES = 1024;
/** S3 refuses presigned URLs (SigV4) valid for longer than 7 days. */
export const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
/**
 * S3's minimum part size (every part but the last), and the unit of memory of a streamed put:
 * at most two parts are held at once (the first two, to choose between PutObject and a multipart
 * upload). A 40 MB message is 8 parts, uploaded one after another.
 */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
/** DeleteObjects takes at most 1000 keys per request. */
const DELETE_BATCH = 1000;

export interface S3BlobStoreOptions {
  /** A client created once per process (module scope in a Lambda) and shared. */
  readonly client: S3Client;
  readonly bucket: string;
  /**
   * Bytes per part when a Readable body is uploaded; bodies that end within one part are a
   * single PutObject.
   * @default MIN_PART_BYTES
   */
  readonly partSizeBytes?: number;
}

function invalidKey(key: string, why: string): ValidationError {
  return new ValidationError(`invalid blob key: ${why}`, [JSON.stringify(key)], 'invalid_key');
}

function assertKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw invalidKey(String(key), 'empty');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw invalidKey(key, `longer than ${MAX_KEY_BYTES} bytes`);
}

/** The SDK's service errors carry `name` (the S3 error code) and the HTTP status in `$metadata`. */
function s3ErrorOf(err: unknown): { name: string; status: number | undefined } {
  if (typeof err !== 'object' || err === null) return { name: '', status: undefined };
  const e = err as { name?: unknown; Code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const name = typeof e.Code === 'string' ? e.Code : typeof e.name === 'string' ? e.name : '';
  const status = typeof e.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined;
  return { name, status };
}

function isNotFound(err: unknown): boolean {
  const { name, status } = s3ErrorOf(err);
  return name === 'NoSuchKey' || name === 'NotFound' || status === 404;
}

/** CopySource is `bucket/key` URL-encoded, with the key's slashes kept. */
function copySource(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  throw new TypeError(`blob stream yielded a ${typeof chunk}, expected bytes`);
}

/** Yields the stream's bytes regrouped into buffers of exactly `size` bytes (the last may be shorter). */
async function* partsOf(body: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of body as AsyncIterable<unknown>) {
    let buf = toBuffer(chunk);
    while (pendingBytes + buf.length >= size) {
      const take = size - pendingBytes;
      pending.push(buf.subarray(0, take));
      yield Buffer.concat(pending, size);
      buf = buf.subarray(take);
      pending = [];
      pendingBytes = 0;
    }
    if (buf.length > 0) {
      pending.push(buf);
      pendingBytes += buf.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

/** What a presigned download tells caches: private mail, not to be stored. */
export const PRESIGNED_CACHE_CONTROL = 'private, no-store';

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly partSize: number;

  constructor(options: S3BlobStoreOptions) {
    if (typeof options.bucket !== 'string' || options.bucket === '')
      throw new TypeError('S3BlobStore: bucket is required');
    const partSize = options.partSizeBytes ?? MIN_PART_BYTES;
    if (!Number.isSafeInteger(partSize) || partSize < MIN_PART_BYTES) {
      throw new RangeError(
        `S3BlobStore: partSizeBytes must be an integer >= ${MIN_PART_BYTES}, got ${String(partSize)}`,
      );
    }
    this.client = options.client;
    this.bucket = options.bucket;
    this.partSize = partSize;
  }

  async put(key: string, body: Buffer | Readable, options?: { contentType?: string }): Promise<void> {
    assertKey(key);
    const contentType = options?.contentType;
    if (Buffer.isBuffer(body)) {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }),
      );
      return;
    }
    await this.putStream(key, body, contentType);
  }

  /**
   * PutObject needs the length up front, which a stream does not have: the first part is read
   * before deciding. A body that fits one part is a plain PutObject; a longer one is a multipart
   * upload, completed only after the last part (until then readers still see the old object), and
   * aborted on any error so no orphaned parts are billed.
   */
  private async putStream(key: string, body: Readable, contentType: string | undefined): Promise<void> {
    const parts = partsOf(body, this.partSize);
    let uploadId: string | undefined;
    try {
      const first = await parts.next();
      const firstPart = first.done ? Buffer.alloc(0) : first.value;
      const second = first.done ? first : await parts.next();
      if (second.done) {
        await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: firstPart, ContentType: contentType }),
        );
        return;
      }
      const created = await this.client.send(
        new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: contentType }),
      );
      uploadId = created.UploadId;
      if (uploadId === undefined) throw new Error(`S3 CreateMultipartUpload for ${key} returned no UploadId`);
      const completed: CompletedPart[] = [];
      const upload = async (data: Buffer): Promise<void> => {
        const PartNumber = completed.length + 1;
        const r = await this.client.send(
          new UploadPartCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber,
            Body: data,
          }),
        );
        completed.push({
          PartNumber,
          ETag: r.ETag,
          ...(r.ChecksumCRC32 !== undefined ? { ChecksumCRC32: r.ChecksumCRC32 } : {}),
        });
      };
      await upload(firstPart);
      await upload(second.value);
      for await (const part of parts) await upload(part);
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: completed },
        }),
      );
    } catch (err) {
      if (uploadId !== undefined) {
        await this.client
          .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
          .catch(() => undefined);
      }
      body.destroy();
      throw err;
    }
  }

  async get(key: string): Promise<Buffer | null> {
    const stream = await this.getStream(key);
    if (stream === null) return null;
    const chunks: Buffer[] = [];
    for await (const chunk of stream as AsyncIterable<unknown>) chunks.push(toBuffer(chunk));
    return Buffer.concat(chunks);
  }

  async getStream(key: string, range?: { start: number; end?: number }): Promise<Readable | null> {
    assertKey(key);
    assertByteRange(range);
    try {
      const r = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range === undefined ? undefined : `bytes=${range.start}-${range.end ?? ''}`,
        }),
      );
      // In Node the SDK's body is the HTTP response (an IncomingMessage): a Readable.
      const body = r.Body as Readable | undefined;
      if (body === undefined) throw new Error(`S3 GetObject for ${key} returned no body`);
      return body;
    } catch (err) {
      if (isNotFound(err)) return null;
      const { name, status } = s3ErrorOf(err);
      if (name === 'InvalidRange' || status === 416) {
        throw new ValidationError(
          'byte range starts beyond the end of the blob',
          [],
          'range_not_satisfiable',
        );
      }
      throw err;
    }
  }

  async head(key: string): Promise<BlobInfo | null> {
    assertKey(key);
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, size: r.ContentLength ?? 0, lastModified: r.LastModified?.getTime() ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async copy(fromKey: string, toKey: string): Promise<void> {
    assertKey(fromKey);
    assertKey(toKey);
    if (fromKey === toKey) {
      // S3 refuses to copy an object onto itself unchanged; the port's copy is then a no-op that
      // still fails for a missing source.
      if ((await this.head(fromKey)) === null)
        throw new NotFoundError(`no blob with key ${JSON.stringify(fromKey)}`);
      return;
    }
    try {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: toKey,
          CopySource: copySource(this.bucket, fromKey),
        }),
      );
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`no blob with key ${JSON.stringify(fromKey)}`);
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    assertKey(key);
    // S3 answers 204 for a missing key too, which is the port's contract.
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async deletePrefix(prefix: string): Promise<void> {
    let batch: string[] = [];
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return;
      const r = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      batch = [];
      const failed = r.Errors ?? [];
      if (failed.length > 0) {
        const first = failed[0];
        throw new Error(
          `S3 DeleteObjects failed for ${failed.length} key(s), e.g. ${first?.Key}: ${first?.Code} ${first?.Message}`,
        );
      }
    };
    for await (const info of this.list(prefix)) {
      batch.push(info.key);
      if (batch.length >= DELETE_BATCH) await flush();
    }
    await flush();
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    if (typeof prefix !== 'string') throw invalidKey(String(prefix), 'not a string');
    return this.listPages(prefix);
  }

  private async *listPages(prefix: string): AsyncGenerator<BlobInfo> {
    let token: string | undefined;
    do {
      const r = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix === '' ? undefined : prefix,
          ContinuationToken: token,
        }),
      );
      for (const o of r.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified?.getTime() ?? 0 };
      }
      token = r.IsTruncated === true ? r.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async presign(key: string, options: PresignOptions): Promise<string> {
    assertKey(key);
    const { expiresIn, contentType, contentDisposition, method = 'GET' } = options;
    if (!Number.isSafeInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_PRESIGN_SECONDS) {
      throw new ValidationError(`expiresIn must be an integer from 1 to ${MAX_PRESIGN_SECONDS} seconds`);
    }
    // The response-* overrides are part of the signed query, so a URL holder cannot change them.
    // Mail behind a capability URL is kept out of shared caches, as the local blob links do
    // (functions/api/local-blobs.ts); S3 has no override for Content-Security-Policy.
    const input = {
      Bucket: this.bucket,
      Key: key,
      ResponseContentType: contentType,
      ResponseContentDisposition: contentDisposition,
      ResponseCacheControl: PRESIGNED_CACHE_CONTROL,
    };
    // HeadObject takes the same response-* overrides, so a HEAD sees the headers a GET would.
    const command = method === 'HEAD' ? new HeadObjectCommand(input) : new GetObjectCommand(input);
    return getSignedUrl(this.client, command, { expiresIn });
  }
}
