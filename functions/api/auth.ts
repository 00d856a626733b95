/**
 * Bearer tokens. A token is 32 random bytes (`mr_` + base64url), shown once when created; the
 * index keeps only its SHA-256, so a leaked index (or DynamoDB table) yields no usable token.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthError } from '../core/errors.ts';
import type { MailboxIndex, TokenRecord } from '../ports/mailbox-index.ts';

export const TOKEN_PREFIX = 'mr_';
/** 256 bits: far beyond guessing, and what SHA-256 preserves. */
const TOKEN_BYTES = 32;
/** `mr_` + 43 base64url characters (32 bytes, unpadded). */
export const TOKEN_RE = /^mr_[A-Za-z0-9_-]{43}$/;

/** A new random token. */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(TOKEN_BYTES).toString('base64url');
}

/** Hex SHA-256 of a token: what the index stores and looks up. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export interface CreateTokenOptions {
  /** The mailbox the token reads; null only for an admin token. */
  readonly mailbox: string | null;
  /** Admin tokens list every mailbox and read any of them. */
  readonly admin?: boolean;
  readonly label?: string;
  readonly now?: Date;
}

/** Creates and stores a token; returns the token itself, which exists nowhere else afterwards. */
export async function createToken(
  index: MailboxIndex,
  options: CreateTokenOptions,
): Promise<{ token: string; record: TokenRecord }> {
  const admin = options.admin ?? false;
  if (options.mailbox === null && !admin)
    throw new TypeError('createToken: a non-admin token needs a mailbox');
  const token = generateToken();
  const record: TokenRecord = {
    hash: hashToken(token),
    mailbox: options.mailbox,
    admin,
    createdAt: (options.now ?? new Date()).toISOString(),
    ...(options.label === undefined ? {} : { label: options.label }),
  };
  await index.putToken(record);
  return { token, record };
}

/** Removes a token; returns whether it existed. */
export function revokeToken(index: MailboxIndex, token: string): Promise<boolean> {
  return index.deleteToken(hashToken(token));
}

const UNAUTHORIZED = 'a valid token is required: Authorization: Bearer <token>';

/**
 * The token record for an `Authorization` header, or AuthError 401. Malformed tokens are refused
 * without a look-up; the stored hash is compared in constant time, so an index that matched on a
 * prefix or case-insensitively could not be used to probe hashes by timing.
 */
export async function authenticate(index: MailboxIndex, header: string | undefined): Promise<TokenRecord> {
  const match = header === undefined ? null : /^Bearer +(\S+) *$/i.exec(header);
  const token = match?.[1];
  if (token === undefined || !TOKEN_RE.test(token)) throw new AuthError(401, UNAUTHORIZED);
  const hash = hashToken(token);
  const record = await index.getToken(hash);
  if (record === null || !/^[0-9a-f]{64}$/.test(record.hash)) throw new AuthError(401, UNAUTHORIZED);
  if (!timingSafeEqual(Buffer.from(hash, 'hex'), Buffer.from(record.hash, 'hex'))) {
    throw new AuthError(401, UNAUTHORIZED);
  }
  return record;
}

/**
 * AuthError 401 unless the token that authenticated a request is still stored: a request that
 * waits before it answers (the long-poll, up to 25 s) asks again, so a token revoked meanwhile
 * is answered as any revoked token is, not with the mail that arrived after its revocation.
 */
export async function reauthenticate(index: MailboxIndex, record: TokenRecord): Promise<void> {
  if ((await index.getToken(record.hash)) === null) throw new AuthError(401, UNAUTHORIZED);
}

/**
 * Throws AuthError 403 unless the token may read `mailbox`. The answer is the same whether or
 * not that mailbox exists, so a token cannot be used to discover other mailboxes.
 */
export function authorizeMailbox(record: TokenRecord, mailbox: string): void {
  if (record.admin || record.mailbox === mailbox) return;
  throw new AuthError(403, 'this token is not valid for that mailbox');
}

/** Throws AuthError 403 unless the token is an admin token. */
export function authorizeAdmin(record: TokenRecord): void {
  if (!record.admin) throw new AuthError(403, 'this endpoint needs an admin token');
}
