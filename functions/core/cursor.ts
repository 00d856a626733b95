/**
 * The cursors shared by every MailboxIndex adapter, versioned and base64url-encoded, opaque to
 * clients. LIST's is the id of the last entry of a page: adapters use it only as a start key inside
 * the requested mailbox, so a cursor from another mailbox reveals nothing, and a deleted last entry
 * is still a valid start. The mailbox list's (`listMailboxes`, core/mailbox-pages.ts) is the address
 * of the last mailbox of a page: a start key inside the registry of mailboxes.
 */
import { ValidationError } from './errors.ts';
import { ULID_RE } from './ids.ts';

/** Longest mailbox key a mailbox-list cursor may name (an address has at most 64 + 1 + 253 characters). */
const MAX_CURSOR_MAILBOX_BYTES = 512;

function invalidCursor(): ValidationError {
  return new ValidationError('invalid cursor', [], 'invalid_cursor');
}

/**
 * A LIST cursor: the last id of a page. One of a page listed oldest first (`oldestFirst`) says so, so
 * that it is refused in the other order, where it would skip the mailbox's other half.
 */
export function encodeCursor(lastId: string, oldestFirst = false): string {
  const cursor = oldestFirst ? { v: 1, id: lastId, asc: true } : { v: 1, id: lastId };
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

/**
 * The id a cursor names, when made for this order (`oldestFirst`); anything else is a ValidationError
 * with code `invalid_cursor`.
 */
export function decodeCursor(cursor: string, oldestFirst = false): string {
  const { v, id, asc } = decodeObject(cursor, 256);
  if (v !== 1 || typeof id !== 'string' || !ULID_RE.test(id)) throw invalidCursor();
  if ((asc === true) !== oldestFirst || (asc !== undefined && asc !== true)) throw invalidCursor();
  return id;
}

export function encodeMailboxCursor(lastMailbox: string): string {
  return Buffer.from(JSON.stringify({ v: 1, mailbox: lastMailbox })).toString('base64url');
}

/** The mailbox a mailbox-list cursor names; anything else (a LIST cursor too) is `invalid_cursor`. */
export function decodeMailboxCursor(cursor: string): string {
  const { v, mailbox } = decodeObject(cursor, 1024);
  if (v !== 1 || typeof mailbox !== 'string' || mailbox === '') throw invalidCursor();
  if (Buffer.byteLength(mailbox) > MAX_CURSOR_MAILBOX_BYTES) throw invalidCursor();
  return mailbox;
}

function decodeObject(cursor: string, maxChars: number): Record<string, unknown> {
  // Node's base64url decoder skips junk silently; insist on the alphabet so garbage is refused, not guessed at.
  if (cursor.length > maxChars || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalidCursor();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor();
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalidCursor();
  return parsed as Record<string, unknown>;
}
