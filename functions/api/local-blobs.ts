/**
 * `GET /v1/blobs/<key>?expires&ct&cd&sig`: links signed with a secret the API shares with whoever
 * made them (core/signed-links.ts). The signature is the authorization (no bearer token, as with
 * S3). Locally they are the local BlobStore's stand-in for S3 presigned URLs, and the file is
 * streamed, so a 40 MB message never sits in memory; in AWS they are the links of oversize-forward
 * notices, answered with a 307 to S3.
 */
import { Readable } from 'node:stream';
import * as z from 'zod';
import { ValidationError } from '../core/errors.ts';
import { SIGNED_BLOB_PATH, verifyPresignedBlobRequest } from '../core/signed-links.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import { HttpStatusError } from './errors.ts';
import { rangeNotSatisfiable, rangeOfRequest, SANDBOX_CSP } from './http-headers.ts';
import { errorSchema } from './schemas.ts';
import type { ApiApp } from './shell.ts';

export const LOCAL_BLOBS_PREFIX = SIGNED_BLOB_PATH;

/** Where a signed link leads: the blob itself (local mode), or a fresh presigned URL (AWS). */
export type SignedLinkTarget =
  | { readonly kind: 'stream' }
  | {
      readonly kind: 'redirect';
      /** Seconds the presigned S3 URL of the redirect is valid. */
      readonly presignSeconds: number;
      /** The only keys links may name (AWS: `forwarded/`, the kept originals of oversize forwards). */
      readonly keyPrefix: string;
    };

/** Mounts the presigned-URL route on the app (local mode only; S3 serves these in AWS). */
export function mountLocalBlobs(
  app: ApiApp,
  blobs: BlobStore,
  secret: string | Buffer,
  now: () => number,
): void {
  mountSignedLinks(app, { blobs, secret: async () => secret, now, target: { kind: 'stream' } });
}

/**
 * `GET /v1/blobs/<key>?expires&ct&cd&sig`: a link signed with `signedBlobUrl` (core/signed-links.ts).
 * Locally it is what the local BlobStore's `presign` makes, and the blob is streamed. In AWS it is
 * the link of an oversize-forward notice (handlers/links.ts), answered with a 307 to an S3 URL
 * presigned now, so the link lives as long as its own expiry says, not as long as a role session.
 */
export function mountSignedLinks(
  app: ApiApp,
  deps: {
    readonly blobs: BlobStore;
    readonly secret: () => Promise<string | Buffer>;
    readonly now: () => number;
    readonly target: SignedLinkTarget;
  },
): void {
  const { blobs, now, target } = deps;
  app.get(`${LOCAL_BLOBS_PREFIX}*`, async (c) => {
    const url = new URL(c.req.url);
    // The key is taken from the raw path: each segment was percent-encoded by `presign`.
    let key: string;
    try {
      key = url.pathname.slice(LOCAL_BLOBS_PREFIX.length).split('/').map(decodeURIComponent).join('/');
    } catch {
      throw new ValidationError('malformed percent-encoding in the blob key', [], 'invalid_request');
    }
    // What needs no secret first: a request that cannot be a link (no signature, another prefix)
    // is refused without fetching the secret (in AWS a Secrets Manager call).
    const sig = url.searchParams.get('sig');
    if (
      sig === null ||
      !/^[0-9a-f]{64}$/i.test(sig) ||
      (target.kind === 'redirect' && !key.startsWith(target.keyPrefix))
    ) {
      throw new HttpStatusError(403, 'invalid_signature', 'this URL is not a valid presigned URL');
    }
    const verdict = verifyPresignedBlobRequest(await deps.secret(), key, url.searchParams, now());
    if (!verdict.ok) {
      throw verdict.reason !== 'expired'
        ? new HttpStatusError(403, 'invalid_signature', 'this URL is not a valid presigned URL')
        : new HttpStatusError(
            403,
            'url_expired',
            'this presigned URL has expired; ask the API for a new one',
          );
    }
    const info = await blobs.head(key);
    if (info === null) {
      throw new HttpStatusError(404, 'not_found', 'no such blob (the message may have been deleted)');
    }
    if (target.kind === 'redirect') {
      const location = await blobs.presign(key, {
        expiresIn: target.presignSeconds,
        method: c.req.method === 'HEAD' ? 'HEAD' : 'GET',
        ...(verdict.contentType !== undefined ? { contentType: verdict.contentType } : {}),
        ...(verdict.contentDisposition !== undefined
          ? { contentDisposition: verdict.contentDisposition }
          : {}),
      });
      return c.body(null, 307, { Location: location, 'Cache-Control': 'private, no-store' });
    }
    // A Range as S3 answers one on its presigned URLs (the AWS side of the same 307), so a download
    // of a large message or part resumes locally too. The link names no ETag: an If-Range never matches.
    const asked = rangeOfRequest(c, info.size, '');
    if (asked.kind === 'unsatisfiable') {
      const refusal = rangeNotSatisfiable(info.size, 'private, no-store');
      return c.json(refusal.body, 416, refusal.headers);
    }
    const headers: Record<string, string> = {
      'Content-Type': verdict.contentType ?? 'application/octet-stream',
      'Content-Length': String(asked.kind === 'part' ? asked.end - asked.start + 1 : info.size),
      'Cache-Control': 'private, no-store',
      'Content-Security-Policy': SANDBOX_CSP,
      'Accept-Ranges': 'bytes',
    };
    if (asked.kind === 'part') headers['Content-Range'] = `bytes ${asked.start}-${asked.end}/${info.size}`;
    if (verdict.contentDisposition !== undefined) headers['Content-Disposition'] = verdict.contentDisposition;
    // A HEAD opens nothing: hono drops the body of the GET it answers with, and a file stream
    // dropped unread kept its descriptor open until the garbage collector closed it (one per HEAD).
    if (c.req.method === 'HEAD') return c.body(null, 200, headers);
    const stream = await blobs.getStream(
      key,
      asked.kind === 'part' ? { start: asked.start, end: asked.end } : undefined,
    );
    if (stream === null) {
      throw new HttpStatusError(404, 'not_found', 'no such blob (the message may have been deleted)');
    }
    return c.body(
      Readable.toWeb(stream) as ReadableStream<Uint8Array>,
      asked.kind === 'part' ? 206 : 200,
      headers,
    );
  });

  // Documented so the OpenAPI document lists every route the app serves.
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/v1/blobs/{key}',
    tags: ['links'],
    summary:
      target.kind === 'stream'
        ? 'Local mode: the target of a 307 from /raw or /parts (HMAC-signed, short-lived)'
        : 'The link of an oversize-forward notice (HMAC-signed): a 307 to the kept original',
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
      ...(target.kind === 'stream'
        ? {
            200: {
              description: 'The blob, with the Content-Type and Content-Disposition the link was signed with',
              content: { '*/*': { schema: z.string().openapi({ format: 'binary' }) } },
            },
            206: {
              description:
                'The one byte range a `Range` header asked for (`bytes=first-last`, `bytes=first-`, `bytes=-n`), as S3 answers it',
              headers: { 'Content-Range': { schema: { type: 'string' as const } } },
              content: { '*/*': { schema: z.string().openapi({ format: 'binary' }) } },
            },
            416: {
              description:
                'The range starts at or beyond the end (`range_not_satisfiable`); `Content-Range: bytes */size`',
              content: { 'application/json': { schema: errorSchema } },
            },
          }
        : { 307: { description: 'To the kept original: an S3 URL presigned now, valid for a few minutes' } }),
      400: {
        description: 'A blob key whose percent-encoding is malformed (`invalid_request`)',
        content: { 'application/json': { schema: errorSchema } },
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
