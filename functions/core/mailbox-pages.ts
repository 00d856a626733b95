/**
 * Pages of the mailbox registry (`MailboxIndex.listMailboxes`), shared by every adapter so that
 * pages and cursors are the same on all of them.
 *
 * The registry holds mailbox keys: addresses, and sent views `<address>/sent` (core/keys.ts). A page
 * is `limit` owners in address order, each with all of its keys, so that a sent view is never on
 * another page than its owner. Adapters only read keys in key order (UTF-8 byte order, which both
 * SQLite's BINARY collation and DynamoDB's sort key use); this module picks the owners.
 *
 * Key order is not owner order. '-' and '.' sort before '/', so the keys of an address's other
 * domains with the same local part come between the address and its sent view:
 *
 *   a@x.com   a@x.com-mail.net   a@x.com.au   a@x.com.au/sent   a@x.com/sent   a@x.comz
 *
 * An owner with a sent view only (it sent mail, never received any) therefore shows up late: were
 * `a@x.com` not there, `a@x.com/sent` would be read after `a@x.com.au` although `a@x.com` comes first
 * by address. A page is only settled once the reading has passed the last key an owner up to the
 * page's last one can have (`horizon`); what lies between is the same local part at longer domains
 * (here `a@x.com-mail.net` and `a@x.com.au`, with their sent views): a handful of keys.
 */
import { isAddress } from './config.ts';
import { decodeMailboxCursor, encodeMailboxCursor } from './cursor.ts';
import { sentMailboxKey } from './keys.ts';

const SENT_SUFFIX = sentMailboxKey('');
/** '/': the first character of the sent suffix. */
const SLASH = 0x2f;

/** The address a mailbox key belongs to: the key itself, or the owner of a sent view. */
export function ownerOf(key: string): string {
  if (!key.endsWith(SENT_SUFFIX)) return key;
  const owner = key.slice(0, -SENT_SUFFIX.length);
  return owner.includes('/') ? key : owner;
}

/** Storage order: UTF-8 bytes (the same as UTF-16 code units for the ASCII of addresses). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * The largest key that an owner up to `owner` (in address order) can have: `owner`'s sent view, or
 * the sent view of a shorter address that `owner` extends with a character sorting before '/'
 * (`a@x.com` for `a@x.com.au`), whose sent key sorts after every key that starts like `owner`.
 * Mailbox keys are addresses, so only a prefix that is one can be such an owner.
 */
export function horizon(owner: string): string {
  for (let i = owner.indexOf('@') + 1; i < owner.length; i++) {
    if (owner.charCodeAt(i) < SLASH && isAddress(owner.slice(0, i))) return sentMailboxKey(owner.slice(0, i));
  }
  return sentMailboxKey(owner);
}

/** Reads registry items whose key sorts after `after` (all, without it), ascending, at most `count`. */
export type RegistryReader<T> = (
  after: string | undefined,
  count: number,
) => Promise<{ readonly items: readonly T[]; readonly more: boolean }>;

export interface OwnerPage<T> {
  /** The registry items of the page's owners: by owner address, each owner's key before its sent view. */
  readonly items: T[];
  /** Present when more owners follow. */
  readonly nextCursor: string | null;
}

/**
 * One page of `limit` owners after `cursor` (a `nextCursor` of an earlier page; a bad one throws
 * ValidationError `invalid_cursor`). `keyOf` names the mailbox key of an item `read` returns.
 * `nextCursor` is null exactly on the last page.
 */
export async function pageOfOwners<T>(
  read: RegistryReader<T>,
  keyOf: (item: T) => string,
  limit: number,
  cursor: string | undefined,
): Promise<OwnerPage<T>> {
  const after = cursor === undefined ? undefined : decodeMailboxCursor(cursor);
  const owners = new Map<string, T[]>();
  const sortedOwners = () => [...owners.keys()].sort(compareKeys);
  // Every owner after `after` has all of its keys after `after` too (a sent key sorts after its owner).
  let position = after;
  for (;;) {
    // Two keys an owner at most, one more owner than the page to know whether another page follows.
    const count = 2 * Math.max(limit + 1 - owners.size, 8);
    const { items, more } = await read(position, count);
    for (const item of items) {
      const key = keyOf(item);
      position = key;
      const owner = ownerOf(key);
      // The sent view of an owner of an earlier page, read late (see above).
      if (after !== undefined && compareKeys(owner, after) <= 0) continue;
      const keys = owners.get(owner);
      if (keys === undefined) owners.set(owner, [item]);
      else keys.push(item);
    }
    if (!more || items.length === 0) break;
    // Settled: one owner beyond the page is known, and no key of an owner up to the page's last is left.
    const last = sortedOwners()[limit - 1];
    if (owners.size > limit && last !== undefined && position !== undefined) {
      if (compareKeys(position, horizon(last)) >= 0) break;
    }
  }
  const page = sortedOwners().slice(0, limit);
  const lastOwner = page.at(-1);
  return {
    items: page.flatMap((o) => (owners.get(o) ?? []).sort((a, b) => compareKeys(keyOf(a), keyOf(b)))),
    nextCursor: owners.size > limit && lastOwner !== undefined ? encodeMailboxCursor(lastOwner) : null,
  };
}

/**
 * Adds `addresses` (the mailboxes the configuration names) to a page of owners that `pageOfOwners`
 * made, so that a mailbox is listed before it has had mail. `page` holds the page's owners in address
 * order, `cursor` and `limit` are what the page was asked with. An address goes on the page whose
 * range holds it: after the cursor's owner and, unless the page is the last, up to its last owner.
 * When that makes more than `limit` owners, the page ends at the `limit`-th and its cursor names that
 * owner: the next page starts after it, where the registry and the addresses both go on.
 */
export function withListedOwners<T>(
  page: { readonly owners: readonly T[]; readonly nextCursor: string | null },
  ownerOfItem: (item: T) => string,
  addresses: Iterable<string>,
  makeItem: (address: string) => T,
  limit: number,
  cursor: string | undefined,
): { owners: T[]; nextCursor: string | null } {
  const after = cursor === undefined ? undefined : decodeMailboxCursor(cursor);
  const last = page.nextCursor === null ? undefined : page.owners.at(-1);
  const upTo = last === undefined ? undefined : ownerOfItem(last);
  const present = new Set(page.owners.map(ownerOfItem));
  const owners = [...page.owners];
  for (const address of addresses) {
    if (present.has(address)) continue;
    if (after !== undefined && compareKeys(address, after) <= 0) continue;
    if (upTo !== undefined && compareKeys(address, upTo) > 0) continue;
    present.add(address);
    owners.push(makeItem(address));
  }
  if (owners.length === page.owners.length) return { owners, nextCursor: page.nextCursor };
  owners.sort((a, b) => compareKeys(ownerOfItem(a), ownerOfItem(b)));
  if (owners.length <= limit) return { owners, nextCursor: page.nextCursor };
  const kept = owners.slice(0, limit);
  return { owners: kept, nextCursor: encodeMailboxCursor(ownerOfItem(kept[limit - 1] as T)) };
}
