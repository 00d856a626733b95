/**
 * HMAC-signed links to a blob: `<baseUrl>/v1/blobs/<key>?expires&ct&cd&sig`, served by our own
 * API. Locally they stand in for S3 presigned URLs (the API streams the blob; the secret is
 * `presign.secret` in the data dir). In AWS the router signs the link of an oversize-forward notice
 * this way (the secret is a Secrets Manager secret of the stack), and the API answers it with a 307
 * to a presigned S3 URL it makes at that moment: an S3 URL presigned by the router would die with
 * the role session that signed it, hours before the days the notice promises (docs/adr/0008).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ValidationError } from './errors.ts';

/** S3 refuses presigned URLs valid for longer than 7 days; so do we, so code that works locally works on AWS. */
export const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

/** The path under which the API serves signed links. */
export const SIGNED_BLOB_PATH = '/v1/blobs/';

export type PresignVerification =
  | { ok: true; contentType?: string; contentDisposition?: string }
  | { ok: false; reason: 'expired' | 'bad_signature' | 'missing' };

function encodeKeyPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** JSON keeps the signed fields unambiguous: no separator a key or header value could forge. */
function signaturePayload(
  key: string,
  expires: string,
  ct: string | undefined,
  cd: string | undefined,
): string {
  return JSON.stringify(['mail-relay-blob-v1', key, expires, ct ?? null, cd ?? null]);
}

function sign(secret: string | Buffer, payload: string): Buffer {
  return createHmac('sha256', secret).update(payload).digest();
}

function assertHeaderValue(name: string, value: string | undefined): void {
  // The value becomes a response header: CR/LF would let a URL holder inject headers.
  if (value !== undefined && /[\r\n\0]/.test(value)) {
    throw new ValidationError(`${name} must not contain CR, LF or NUL`, [], 'invalid_request');
  }
}

/** A signed link to `key`, valid for `expiresIn` seconds (at least: the expiry is rounded up). */
export function signedBlobUrl(options: {
  readonly baseUrl: string;
  readonly secret: string | Buffer;
  readonly key: string;
  readonly expiresIn: number;
  readonly contentType?: string | undefined;
  readonly contentDisposition?: string | undefined;
  readonly nowMs?: number;
}): string {
  const { expiresIn, contentType, contentDisposition } = options;
  if (!Number.isSafeInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_PRESIGN_SECONDS) {
    throw new ValidationError(`expiresIn must be an integer from 1 to ${MAX_PRESIGN_SECONDS} seconds`);
  }
  assertHeaderValue('contentType', contentType);
  assertHeaderValue('contentDisposition', contentDisposition);
  const expires = String(Math.ceil((options.nowMs ?? Date.now()) / 1000) + expiresIn);
  const sig = sign(options.secret, signaturePayload(options.key, expires, contentType, contentDisposition));
  let query = `expires=${expires}`;
  if (contentType !== undefined) query += `&ct=${encodeURIComponent(contentType)}`;
  if (contentDisposition !== undefined) query += `&cd=${encodeURIComponent(contentDisposition)}`;
  query += `&sig=${sig.toString('hex')}`;
  return `${options.baseUrl.replace(/\/+$/, '')}${SIGNED_BLOB_PATH}${encodeKeyPath(options.key)}?${query}`;
}

/**
 * Checks a `GET /v1/blobs/<key>?expires&ct&cd&sig` request made with a URL from `signedBlobUrl`.
 * `key` is the decoded path after `/v1/blobs/`. On success the caller serves the blob with the
 * returned headers (application/octet-stream when `contentType` is absent).
 */
export function verifyPresignedBlobRequest(
  secret: string | Buffer,
  key: string,
  searchParams: URLSearchParams | Readonly<Record<string, string | undefined>>,
  nowMs: number = Date.now(),
): PresignVerification {
  const param = (name: string): string | undefined =>
    searchParams instanceof URLSearchParams ? (searchParams.get(name) ?? undefined) : searchParams[name];
  const expires = param('expires');
  const sig = param('sig');
  if (expires === undefined || sig === undefined) return { ok: false, reason: 'missing' };
  const contentType = param('ct');
  const contentDisposition = param('cd');
  if (!/^\d{1,15}$/.test(expires) || !/^[0-9a-f]{64}$/i.test(sig))
    return { ok: false, reason: 'bad_signature' };
  const expected = sign(secret, signaturePayload(key, expires, contentType, contentDisposition));
  if (!timingSafeEqual(Buffer.from(sig, 'hex'), expected)) return { ok: false, reason: 'bad_signature' };
  // Checked after the signature so that a forged `expires` reads as forged, not as expired.
  if (nowMs > Number(expires) * 1000) return { ok: false, reason: 'expired' };
  return {
    ok: true,
    ...(contentType !== undefined ? { contentType } : {}),
    ...(contentDisposition !== undefined ? { contentDisposition } : {}),
  };
}
