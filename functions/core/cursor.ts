/**
 * The LIST cursor shared by every MailboxIndex adapter: the id of the last entry of a page,
 * versioned and base64url-encoded. Opaque to clients; adapters use it only as a start key inside
 * the requested mailbox, so a cursor from another mailbox reveals nothing, and a deleted last entry
 * is still a valid start.
 */
import { ValidationError } from './errors.ts';
import { ULID_RE } from './ids.ts';

function invalidCursor(): ValidationError {
  return new ValidationError('invalid cursor', [], 'invalid_cursor');
}

export function encodeCursor(lastId: string): string {
  return Buffer.from(JSON.stringify({ v: 1, id: lastId })).toString('base64url');
}

/** The id a cursor names; anything else is a ValidationError with code `invalid_cursor`. */
export function decodeCursor(cursor: string): string {
  // Node's base64url decoder skips junk silently; insist on the alphabet so garbage is refused, not guessed at.
  if (!/^[A-Za-z0-9_-]{1,256}$/.test(cursor)) throw invalidCursor();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor();
  }
  if (typeof parsed !== 'object' || parsed === null) throw invalidCursor();
  const { v, id } = parsed as { v?: unknown; id?: unknown };
  if (v !== 1 || typeof id !== 'string' || !ULID_RE.test(id)) throw invalidCursor();
  return id;
}
