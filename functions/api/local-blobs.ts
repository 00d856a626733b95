/**
 * `GET /v1/blobs/<key>?expires&ct&cd&sig`: local mode's stand-in for S3 presigned URLs. The
 * signature is the authorization (no bearer token, as with S3), checked with the same secret the
 * local BlobStore signs with; the file is streamed, so a 40 MB message never sits in memory.
 */
import { Readable } from 'node:stream';
import * as z from 'zod';
import { verifyPresignedBlobRequest } from '../adapters/local/fs-blob-store.ts';
import { ValidationError } from '../core/errors.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import { HttpStatusError } from './errors.ts';
import { errorSchema } from './schemas.ts';
import type { ApiApp } from './shell.ts';

export const LOCAL_BLOBS_PREFIX = '/v1/blobs/';

/** Mounts the presigned-URL route on the app (local mode only; S3 serves these in AWS). */
export function mountLocalBlobs(
  app: ApiApp,
  blobs: BlobStore,
  secret: string | Buffer,
  now: () => number,
): void {
  app.get(`${LOCAL_BLOBS_PREFIX}*`, async (c) => {
    const url = new URL(c.req.url);
    // The key is taken from the raw path: each segment was percent-encoded by `presign`.
    let key: string;
    try {
      key = url.pathname.slice(LOCAL_BLOBS_PREFIX.length).split('/').map(decodeURIComponent).join('/');
    } catch {
      throw new ValidationError('malformed percent-encoding in the blob key', [], 'invalid_request');
    }
    const verdict = verifyPresignedBlobRequest(secret, key, url.searchParams, now());
    if (!verdict.ok) {
      throw verdict.reason === 'expired'
        ? new HttpStatusError(403, 'url_expired', 'this presigned URL has expired; ask the API for a new one')
        : new HttpStatusError(403, 'invalid_signature', 'this URL is not a valid presigned URL');
    }
    const info = await blobs.head(key);
    const stream = info === null ? null : await blobs.getStream(key);
    if (info === null || stream === null) {
      throw new HttpStatusError(404, 'not_found', 'no such blob (the message may have been deleted)');
    }
    const headers: Record<string, string> = {
      'Content-Type': verdict.contentType ?? 'application/octet-stream',
      'Content-Length': String(info.size),
      'Cache-Control': 'private, no-store',
      'Content-Security-Policy': "sandbox; default-src 'none'",
    };
    if (verdict.contentDisposition !== undefined) headers['Content-Disposition'] = verdict.contentDisposition;
    return c.body(Readable.toWeb(stream) as ReadableStream<Uint8Array>, 200, headers);
  });

  // Documented so the OpenAPI document lists every route the app serves.
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/v1/blobs/{key}',
    tags: ['local'],
    summary: 'Local mode only: the target of a 307 from /raw or /parts (HMAC-signed, short-lived)',
    request: {
      params: z.object({ key: z.string().openapi({ description: 'Blob key; may contain slashes' }) }),
      query: z.object({
        expires: z.string(),
        sig: z.string(),
        ct: z.string().optional(),
        cd: z.string().optional(),
      }),
    },
    responses: {
      200: {
        description: 'The blob',
        content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } },
      },
      403: {
        description: 'Bad or expired signature (`invalid_signature`, `url_expired`)',
        content: { 'application/json': { schema: errorSchema } },
      },
      404: {
        description: 'No such blob (`not_found`)',
        content: { 'application/json': { schema: errorSchema } },
      },
    },
  });
}
