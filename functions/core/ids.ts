/**
 * Message ids. A ULID (https://github.com/ulid/spec) whose time part is the receipt time and whose
 * "random" part is derived from the SES message id, so a retried delivery computes the same id and
 * the index's conditional insert makes it a no-op.
 */
import { createHash, randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const ULID_RE = /^[0-9A-HJKMNP-TV-Z]{26}$/;

function encodeBase32(bytes: Uint8Array, chars: number): string {
  // Big-endian bit stream, 5 bits per char, taking the lowest `chars * 5` bits.
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  let out = '';
  for (let i = 0; i < chars; i++) {
    out = CROCKFORD[Number(value & 31n)] + out;
    value >>= 5n;
  }
  return out;
}

export function messageIdFor(receivedAtMs: number, sesMessageId: string): string {
  if (!Number.isSafeInteger(receivedAtMs) || receivedAtMs < 0 || receivedAtMs > 2 ** 48 - 1) {
    throw new RangeError(`receipt time out of ULID range: ${receivedAtMs}`);
  }
  const time = encodeBase32(new Uint8Array(new BigUint64Array([BigInt(receivedAtMs)]).buffer).reverse(), 10);
  const digest = createHash('sha256').update(sesMessageId).digest().subarray(0, 10);
  return time + encodeBase32(digest, 16);
}

/** Milliseconds since epoch encoded in a ULID. */
export function timeOfId(id: string): number {
  let t = 0;
  for (const ch of id.slice(0, 10)) t = t * 32 + CROCKFORD.indexOf(ch);
  return t;
}

/** An SES-like message id (lowercase base32, 40 chars) for mail received locally. */
export function newSesMessageId(): string {
  return encodeBase32(randomBytes(25), 40).toLowerCase();
}

/** A deterministic SES-like id from content (used by `import`, so importing twice is a no-op). */
export function sesMessageIdFromContent(content: Buffer): string {
  return encodeBase32(createHash('sha256').update(content).digest().subarray(0, 25), 40).toLowerCase();
}
