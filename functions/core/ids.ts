/**
 * Message ids. A ULID (https://github.com/ulid/spec) whose time part is the receipt time and whose
 * "random" part is derived from the SES message id, so a retried delivery computes the same id and
 * the index's conditional insert makes it a no-op.
 */
import { createHash, randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const ULID_RE = /^[0-9A-HJKMNP-TV-Z]{26}$/;

function encodeBase32(bytes: Uint8Array, chars: number): string {
  // The big-endian integer of `bytes`, its lowest `chars * 5` bits as base-32 digits (most
  // significant first). Read from the last byte up, a few bits at a time: no BigInt on the hot path.
  const digits = new Array<string>(chars);
  let acc = 0;
  let bits = 0;
  let i = bytes.length - 1;
  for (let out = chars - 1; out >= 0; out--) {
    if (bits < 5 && i >= 0) {
      acc |= (bytes[i] as number) << bits;
      bits += 8;
      i -= 1;
    }
    digits[out] = CROCKFORD[acc & 31] as string;
    acc >>>= 5;
    bits -= 5;
  }
  return digits.join('');
}

/** Random bytes for ids, drawn from the CSPRNG a few KB at a time rather than one call per id. */
const RANDOM_POOL_BYTES = 4096;
let randomPool = Buffer.alloc(0);
let randomPoolOffset = 0;

function poolRandomBytes(n: number): Buffer {
  if (randomPoolOffset + n > randomPool.length) {
    randomPool = randomBytes(Math.max(RANDOM_POOL_BYTES, n));
    randomPoolOffset = 0;
  }
  const out = randomPool.subarray(randomPoolOffset, randomPoolOffset + n);
  randomPoolOffset += n;
  return out;
}

export function messageIdFor(receivedAtMs: number, sesMessageId: string): string {
  if (!Number.isSafeInteger(receivedAtMs) || receivedAtMs < 0 || receivedAtMs > 2 ** 48 - 1) {
    throw new RangeError(`receipt time out of ULID range: ${receivedAtMs}`);
  }
  const timeBytes = Buffer.allocUnsafe(6);
  timeBytes.writeUIntBE(receivedAtMs, 0, 6);
  const time = encodeBase32(timeBytes, 10);
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
  return encodeBase32(poolRandomBytes(25), 40).toLowerCase();
}

/** A deterministic SES-like id from content (used by `import`, so importing twice is a no-op). */
export function sesMessageIdFromContent(content: Buffer): string {
  return encodeBase32(createHash('sha256').update(content).digest().subarray(0, 25), 40).toLowerCase();
}

/**
 * A short, stable name for a set of recipients (order does not matter): in the keys of what is
 * stored once per message and recipient set, such as a notification (SES sends one per matching
 * receipt rule) and a bounce's send record.
 */
export function recipientSetId(recipients: readonly string[]): string {
  return createHash('sha256')
    .update([...recipients].sort().join('\n'))
    .digest('hex')
    .slice(0, 16);
}
