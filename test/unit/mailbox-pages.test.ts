/**
 * The mailbox list's pages (core/mailbox-pages.ts) over an in-memory registry read in key order, as
 * both adapters read theirs: every owner once, in address order, with all of its keys on one page,
 * `limit` owners a page, and no cursor after the last. Random registries are built from local parts
 * and domains that extend one another (`x.co`, `x.co.uk`, `x.co-op.net`, `x.com`), whose keys sort
 * between an address and its sent view.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decodeCursor,
  decodeMailboxCursor,
  encodeCursor,
  encodeMailboxCursor,
} from '../../functions/core/cursor.ts';
import { ValidationError } from '../../functions/core/errors.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import {
  compareKeys,
  ownerOf,
  pageOfOwners,
  type RegistryReader,
  withListedOwners,
} from '../../functions/core/mailbox-pages.ts';

/**
 * A registry in key order, read like a Query: strictly after a key, at most `count` at a time, and
 * at most `cap` (DynamoDB stops a Query at 1 MB and says there is more).
 */
function registry(
  keys: readonly string[],
  cap = Number.POSITIVE_INFINITY,
): { read: RegistryReader<string>; reads: number[] } {
  const sorted = [...new Set(keys)].sort(compareKeys);
  const reads: number[] = [];
  const read: RegistryReader<string> = async (after, count) => {
    const from = after === undefined ? 0 : sorted.findIndex((k) => compareKeys(k, after) > 0);
    const n = Math.min(count, cap);
    const items = from < 0 ? [] : sorted.slice(from, from + n);
    reads.push(items.length);
    return { items, more: from >= 0 && from + n < sorted.length };
  };
  return { read, reads };
}

/** Every page with `limit`; checks each page on the way. */
async function walk(keys: readonly string[], limit: number, cap?: number): Promise<string[][]> {
  const { read } = registry(keys, cap);
  const pages: string[][] = [];
  let cursor: string | undefined;
  for (;;) {
    assert.ok(pages.length <= keys.length + 1, 'the walk ends');
    const page = await pageOfOwners(read, (k) => k, limit, cursor);
    pages.push(page.items);
    if (page.nextCursor === null) return pages;
    cursor = page.nextCursor;
  }
}

/** What the pages must be: owners by address, each followed by its sent view, `limit` owners a page. */
function expectedPages(keys: readonly string[], limit: number): string[][] {
  const set = new Set(keys);
  const owners = [...new Set(keys.map(ownerOf))].sort(compareKeys);
  const pages: string[][] = [];
  for (let i = 0; i < owners.length || pages.length === 0; i += limit) {
    pages.push(owners.slice(i, i + limit).flatMap((o) => [o, sentMailboxKey(o)].filter((k) => set.has(k))));
  }
  return pages;
}

/** A deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LOCALS = ['a', 'a.b', 'a-b', 'a+b', 'ab', 'b', 'z'];
const DOMAINS = [
  'x.co',
  'x.co.uk',
  'x.co.uk.net',
  'x.co-op.net',
  'x.co-op.net.au',
  'x.com',
  'x.com.au',
  'x.cox.io',
];

describe('mailbox list pages (core/mailbox-pages.ts)', () => {
  it('keeps an address and its sent view on one page although other keys sort between them', async () => {
    // Key order: a@x.co, a@x.co-op.net, a@x.co.uk, a@x.co.uk/sent, a@x.co/sent, a@x.com
    const keys = [
      'a@x.co',
      sentMailboxKey('a@x.co'),
      'a@x.co-op.net',
      'a@x.co.uk',
      sentMailboxKey('a@x.co.uk'),
      'a@x.com',
    ];
    for (const limit of [1, 2, 3, 4, 5]) {
      for (const cap of [1, 2, 3, undefined]) {
        const label = `limit ${limit}, cap ${cap}`;
        assert.deepEqual(await walk(keys, limit, cap), expectedPages(keys, limit), label);
      }
    }
    assert.deepEqual((await walk(keys, 1, 1))[0], ['a@x.co', sentMailboxKey('a@x.co')]);
  });

  it('puts an address with only a sent view in its place by address, before the domains that extend it', async () => {
    const keys = [
      sentMailboxKey('a@x.co'),
      'a@x.co-op.net',
      'a@x.co.uk',
      sentMailboxKey('a@x.co.uk'),
      'a@x.co.uk.net',
    ];
    for (const cap of [1, 2, undefined]) {
      assert.deepEqual(
        await walk(keys, 1, cap),
        [
          [sentMailboxKey('a@x.co')],
          ['a@x.co-op.net'],
          ['a@x.co.uk', sentMailboxKey('a@x.co.uk')],
          ['a@x.co.uk.net'],
        ],
        `cap ${cap}`,
      );
    }
  });

  it('random registries: every limit gives every owner once, by address, whole, and ends exactly', async () => {
    for (let seed = 1; seed <= 300; seed++) {
      const next = random(seed);
      const keys: string[] = [];
      for (const local of LOCALS) {
        for (const domain of DOMAINS) {
          const r = next();
          const address = `${local}@${domain}`;
          if (r < 0.3) continue;
          if (r < 0.55) keys.push(address);
          else if (r < 0.8) keys.push(sentMailboxKey(address));
          else keys.push(address, sentMailboxKey(address));
        }
      }
      const limit = 1 + Math.floor(next() * 9);
      const cap = seed % 3 === 0 ? 1 + Math.floor(next() * 4) : undefined;
      assert.deepEqual(
        await walk(keys, limit, cap),
        expectedPages(keys, limit),
        `seed ${seed}, limit ${limit}, cap ${cap}`,
      );
    }
  });

  it('configured mailboxes without mail: pages hold the union by address, limit owners each, each once', async () => {
    for (let seed = 1; seed <= 300; seed++) {
      const next = random(seed);
      const keys: string[] = [];
      const configured: string[] = [];
      for (const local of LOCALS) {
        for (const domain of DOMAINS) {
          const address = `${local}@${domain}`;
          const r = next();
          if (r < 0.2) keys.push(address);
          else if (r < 0.3) keys.push(sentMailboxKey(address));
          if (next() < 0.3) configured.push(address);
        }
      }
      const limit = 1 + Math.floor(next() * 9);
      const { read } = registry(keys, seed % 3 === 0 ? 2 : undefined);
      const label = `seed ${seed}, limit ${limit}`;
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let pages = 0; ; pages++) {
        assert.ok(pages <= keys.length + configured.length + 1, `${label}: the walk ends`);
        const page = await pageOfOwners(read, (k) => k, limit, cursor);
        const owners = [...new Set(page.items.map(ownerOf))];
        const listed = withListedOwners(
          { owners, nextCursor: page.nextCursor },
          (o) => o,
          configured,
          (a) => a,
          limit,
          cursor,
        );
        assert.ok(listed.owners.length <= limit, `${label}: a page holds at most limit owners`);
        if (listed.nextCursor !== null)
          assert.equal(listed.owners.length, limit, `${label}: only the last page is short`);
        seen.push(...listed.owners);
        if (listed.nextCursor === null) break;
        cursor = listed.nextCursor;
      }
      const union = [...new Set([...keys.map(ownerOf), ...configured])].sort(compareKeys);
      assert.deepEqual(seen, union, label);
    }
  });

  it('an empty registry is one empty last page', async () => {
    assert.deepEqual(await walk([], 10), [[]]);
  });

  it('reads about one page of keys, not the whole registry', async () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `user${String(i).padStart(5, '0')}@x.com`);
    const { read, reads } = registry(keys);
    const page = await pageOfOwners(read, (k) => k, 100, undefined);
    assert.equal(page.items.length, 100);
    assert.ok(reads.reduce((a, b) => a + b, 0) <= 2 * 101, `read ${reads.join('+')} keys`);
  });

  it('refuses a cursor that is not one of its own with invalid_cursor (a LIST cursor too)', async () => {
    const { read } = registry(['a@x.com']);
    for (const cursor of [
      'garbage!!',
      encodeCursor('01JNMR8Z1X0000000000000000'),
      Buffer.from('{"v":1,"mailbox":""}').toString('base64url'),
    ]) {
      await assert.rejects(
        pageOfOwners(read, (k) => k, 10, cursor),
        (err: unknown) => {
          assert.ok(err instanceof ValidationError);
          assert.equal(err.code, 'invalid_cursor');
          return true;
        },
      );
    }
  });
});

describe('cursors (core/cursor.ts): what a client gets back is what it sent, anything else is invalid_cursor', () => {
  const ID = '01JNMR8Z1X0000000000000000';
  const b64 = (json: string) => Buffer.from(json).toString('base64url');
  const refused = (decode: (cursor: string) => string, cursor: string, label: string) =>
    assert.throws(
      () => decode(cursor),
      (err: unknown) =>
        err instanceof ValidationError && err.code === 'invalid_cursor' && err.message === 'invalid cursor',
      label,
    );

  it('a LIST cursor names the id it was made from; other versions, ids and shapes are refused', () => {
    assert.equal(decodeCursor(encodeCursor(ID)), ID);
    for (const [label, cursor] of [
      ['version 2', b64(`{"v":2,"id":"${ID}"}`)],
      ['version 0', b64(`{"v":0,"id":"${ID}"}`)],
      ['no version', b64(`{"id":"${ID}"}`)],
      ['id not a ULID', b64('{"v":1,"id":"../../etc"}')],
      ['id a number', b64('{"v":1,"id":42}')],
      ['id an array holding a ULID', b64(`{"v":1,"id":["${ID}"]}`)],
      ['an array', b64(`[1,"${ID}"]`)],
      ['null', b64('null')],
      ['not JSON', b64('{"v":1,')],
      ['outside the base64url alphabet', `${encodeCursor(ID)}=`],
      ['junk before it (Node would skip it)', `!${encodeCursor(ID)}`],
      ['empty', ''],
      ['a mailbox-list cursor', encodeMailboxCursor('alice@example.com')],
    ] as const) {
      refused(decodeCursor, cursor, label);
    }
  });

  it('a LIST cursor of 256 characters is read, one character more is refused unread', () => {
    const padded = (chars: number) => b64(`{"v":1,"id":"${ID}"}`.padEnd((chars / 4) * 3, ' '));
    assert.equal(padded(256).length, 256);
    assert.equal(decodeCursor(padded(256)), ID);
    refused(decodeCursor, `${padded(256)}I`, '257 characters');
  });

  it('a mailbox-list cursor names its mailbox; up to 512 bytes of it, of version 1 only', () => {
    assert.equal(decodeMailboxCursor(encodeMailboxCursor('alice@example.com')), 'alice@example.com');
    const at = (bytes: number) => `${'a'.repeat(bytes - 'x@example.com'.length)}x@example.com`;
    assert.equal(decodeMailboxCursor(encodeMailboxCursor(at(512))), at(512));
    refused(decodeMailboxCursor, encodeMailboxCursor(at(513)), '513 bytes');
    refused(decodeMailboxCursor, b64('{"v":2,"mailbox":"alice@example.com"}'), 'version 2');
    refused(decodeMailboxCursor, b64('{"v":1,"mailbox":7}'), 'mailbox a number');
    refused(decodeMailboxCursor, encodeCursor(ID), 'a LIST cursor');
    const padded = (chars: number) =>
      b64('{"v":1,"mailbox":"alice@example.com"}'.padEnd((chars / 4) * 3, ' '));
    assert.equal(decodeMailboxCursor(padded(1024)), 'alice@example.com');
    refused(decodeMailboxCursor, `${padded(1024)}I`, '1025 characters');
  });
});
