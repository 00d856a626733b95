/**
 * The one behaviour every MailboxIndex adapter must have (DynamoDB and SQLite alike).
 * Usage: `runMailboxIndexContract('SqliteMailboxIndex', async () => ({ index, cleanup }))` in a *.test.ts file.
 * Each test gets a fresh, empty index from the factory.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { ValidationError } from '../../functions/core/errors.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import {
  type ListOptions,
  MAX_DELETE_MANY,
  type MailboxIndex,
  type MailboxStat,
  type MessageEntry,
  type TokenRecord,
} from '../../functions/ports/mailbox-index.ts';

export interface MailboxIndexFixture {
  index: MailboxIndex;
  /**
   * Opens a second handle on the same storage, to check that entries survive close + reopen.
   * The test closes `index` first and closes what this returns itself. Required unless the suite is
   * run with `{ reopens: false }` (storage that ends with its handle, such as SQLite's `:memory:`).
   */
  reopen?: () => Promise<MailboxIndex>;
  /** Releases everything; must tolerate `index` having been closed already. */
  cleanup: () => Promise<void>;
  /**
   * Storage as the version before the index of unread mail left it (docs/adr/0020-unseen-index.md):
   * `deliver` writes an entry as that version did, `upgrade` runs what a deployment of this one runs
   * to index such mail. Omitted by an adapter whose index of unread mail was always kept by the
   * store itself (SQLite's partial index): its older entries are this version's.
   */
  legacy?: {
    deliver: (entry: MessageEntry) => Promise<void>;
    upgrade: () => Promise<void>;
  };
}

const ALICE = 'alice@example.com';
const BOB = 'bob@example.org';
/** A fixed epoch keeps ids (and failures) reproducible. */
const BASE_MS = Date.UTC(2024, 0, 15, 9, 30);

/** An entry as the router would write it; the id derives from time and SES id like a real delivery. */
export function makeEntry(
  mailbox: string,
  receivedAtMs: number,
  sesMessageId: string,
  overrides: Partial<MessageEntry> = {},
): MessageEntry {
  const size = 1000 + (receivedAtMs % 997);
  return {
    mailbox,
    id: messageIdFor(receivedAtMs, sesMessageId),
    size,
    crlfSize: size,
    receivedAt: new Date(receivedAtMs).toISOString(),
    from: 'Sender <sender@example.net>',
    to: mailbox,
    subject: `message ${sesMessageId}`,
    snippet: 'Hello there',
    hasAttachments: false,
    seen: false,
    verdicts: { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' },
    tags: [],
    recipient: mailbox,
    parseFailed: false,
    sesMessageId,
    ...overrides,
  };
}

/** Drops keys whose value is undefined: an adapter may store an absent optional as absent. */
function plain<T>(value: T): unknown {
  return JSON.parse(JSON.stringify(value));
}

function newestFirst(ids: Iterable<string>): string[] {
  return [...ids].sort().reverse();
}

async function listAllIds(
  index: MailboxIndex,
  mailbox: string,
  options: Omit<ListOptions, 'cursor'>,
  betweenPages?: (pageNumber: number, idsSoFar: readonly string[]) => Promise<void>,
): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; ; page++) {
    assert.ok(page < 5_000, 'pagination terminates');
    const result = await index.list(mailbox, { ...options, cursor });
    assert.ok(result.items.length <= options.limit, 'a page never exceeds limit');
    for (const item of result.items) {
      assert.equal(item.mailbox, mailbox);
      ids.push(item.id);
    }
    if (result.nextCursor === null) return ids;
    cursor = result.nextCursor;
    await betweenPages?.(page, ids);
  }
}

/** The owner of a mailbox key: the address itself, or the address of a sent view. */
function ownerOfKey(key: string): string {
  return key.endsWith('/sent') ? key.slice(0, -'/sent'.length) : key;
}

/**
 * Every page of listMailboxes with `limit`, checked on the way as a client sees it: `limit`
 * mailboxes (owners) a page, fewer only on the last, which alone has no cursor and is never an
 * empty page after a full one; no owner on two pages.
 */
async function listAllMailboxPages(index: MailboxIndex, limit: number): Promise<MailboxStat[][]> {
  const pages: MailboxStat[][] = [];
  const seen = new Set<string>();
  let cursor: string | undefined;
  for (;;) {
    assert.ok(pages.length < 5_000, 'pagination terminates');
    const page = await index.listMailboxes({ limit, cursor });
    const owners = new Set(page.items.map((s) => ownerOfKey(s.address)));
    for (const o of owners) {
      assert.ok(!seen.has(o), `${o} is on one page only (limit ${limit})`);
      seen.add(o);
    }
    pages.push([...page.items]);
    if (page.nextCursor === null) {
      assert.ok(owners.size <= limit, `the last page holds at most ${limit} mailboxes`);
      assert.ok(owners.size > 0 || pages.length === 1, 'no empty page after a full one');
      return pages;
    }
    assert.equal(owners.size, limit, `a page before the last holds ${limit} mailboxes`);
    cursor = page.nextCursor;
  }
}

async function listAllMailboxes(index: MailboxIndex, limit = 1000): Promise<MailboxStat[]> {
  return (await listAllMailboxPages(index, limit)).flat();
}

/**
 * Delivers with a few requests in flight: enough to overlap, few enough for an emulator (and for
 * DynamoDB's conflict on the shared counter item) to keep up. Bursts have their own tests.
 */
async function deliverAll(
  index: MailboxIndex,
  entries: readonly MessageEntry[],
  inFlight = 4,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (let e = entries[next++]; e !== undefined; e = entries[next++]) {
        assert.deepEqual(await index.deliver(e), { inserted: true });
      }
    }),
  );
}

async function assertInvalidCursor(promise: Promise<unknown>, label: string): Promise<void> {
  await assert.rejects(
    promise,
    (err: unknown) => err instanceof ValidationError && err.code === 'invalid_cursor',
    `cursor ${label} is refused with ValidationError invalid_cursor`,
  );
}

/** What a contract run may ask of the adapter it builds (both adapters take these options). */
export interface MailboxIndexOptions {
  readonly deletionMemoryDays?: number;
  readonly clock?: () => number;
  /**
   * Items a page with a filter reads at most, where the store reads before it filters (DynamoDB;
   * SQLite's pages are always full, and it ignores this).
   */
  readonly filteredReadBudget?: number;
}

const DAY_MS = 24 * 3600 * 1000;

export function runMailboxIndexContract(
  name: string,
  makeIndex: (options?: MailboxIndexOptions) => Promise<MailboxIndexFixture>,
  { reopens = true }: { reopens?: boolean } = {},
): void {
  /** The reopen tests are registered only for storage that outlives its handle. */
  const reopenIt = reopens ? it : () => undefined;
  const reopenOf = (f: MailboxIndexFixture): (() => Promise<MailboxIndex>) => {
    assert.ok(f.reopen, `${name}: a fixture of storage that outlives its handle must give reopen`);
    return f.reopen;
  };
  async function withIndex(
    fn: (f: MailboxIndexFixture) => Promise<void>,
    options?: MailboxIndexOptions,
  ): Promise<void> {
    const fixture = await makeIndex(options);
    try {
      await fn(fixture);
    } finally {
      await fixture.cleanup();
    }
  }

  describe(`MailboxIndex contract: ${name}`, () => {
    it('get returns exactly the delivered entry, with and without the optional fields', () =>
      withIndex(async ({ index }) => {
        const full = makeEntry(ALICE, BASE_MS, 'ses-full', {
          from: 'Zoë Ünicode <zoe@example.de>',
          to: 'Alice <alice@example.com>, carol@example.com',
          subject: 'Grüße — "quoted" 日本語 😀',
          snippet: 'line one\nline two',
          hasAttachments: true,
          seen: true,
          verdicts: {
            spam: 'FAIL',
            virus: 'PASS',
            spf: 'GRAY',
            dkim: 'DISABLED',
            dmarc: 'FAIL',
            dmarcPolicy: 'reject',
          },
          tags: ['spam', 'dmarc'],
          quarantineReasons: ['virus'],
          recipient: 'alice+news@example.com',
          plusTag: 'news',
          parseFailed: true,
          // A message with bare LF line ends: POP3's size is larger than the stored one.
          size: 5000,
          crlfSize: 5123,
        });
        const minimal = makeEntry(ALICE, BASE_MS + 1, 'ses-minimal', { from: '', subject: '', snippet: '' });
        assert.deepEqual(await index.deliver(full), { inserted: true });
        assert.deepEqual(await index.deliver(minimal), { inserted: true });

        assert.deepEqual(plain(await index.get(ALICE, full.id)), plain(full));
        const back = await index.get(ALICE, minimal.id);
        assert.deepEqual(plain(back), plain(minimal));
        assert.equal(back?.plusTag, undefined);
        assert.equal(back?.quarantineReasons, undefined);
        assert.equal(await index.get(ALICE, messageIdFor(BASE_MS, 'never-delivered')), null);
        assert.equal(await index.get(BOB, full.id), null, 'an entry belongs to its mailbox only');
      }));

    it('the same id in two mailboxes (one message, two recipients) is two independent entries', () =>
      withIndex(async ({ index }) => {
        const a = makeEntry(ALICE, BASE_MS, 'ses-shared');
        const b = makeEntry(BOB, BASE_MS, 'ses-shared', { size: 42 });
        assert.equal(a.id, b.id);
        assert.deepEqual(await index.deliver(a), { inserted: true });
        assert.deepEqual(await index.deliver(b), { inserted: true });
        assert.deepEqual(plain(await index.delete(ALICE, a.id)), plain(a));
        assert.deepEqual(plain(await index.get(BOB, b.id)), plain(b));
        assert.deepEqual(await index.stat(BOB), { address: BOB, messages: 1, bytes: 42 });
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 0, bytes: 0 });
      }));

    it('a repeated delivery is a no-op: one message, {inserted: false}, counters unchanged', () =>
      withIndex(async ({ index }) => {
        const e = makeEntry(ALICE, BASE_MS, 'ses-1', { size: 1234 });
        assert.deepEqual(await index.deliver(e), { inserted: true });
        assert.deepEqual(await index.deliver(e), { inserted: false });
        // A retry after a partial failure may carry different details; the first write wins.
        assert.deepEqual(await index.deliver({ ...e, size: 9999, subject: 'changed' }), { inserted: false });
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 1234 });
        const page = await index.list(ALICE, { limit: 10 });
        assert.deepEqual(
          page.items.map((i) => i.id),
          [e.id],
        );
        assert.equal((await index.get(ALICE, e.id))?.subject, e.subject);
      }));

    it('ten concurrent deliveries of one entry store exactly one', () =>
      withIndex(async ({ index }) => {
        const e = makeEntry(ALICE, BASE_MS, 'ses-concurrent', { size: 777 });
        const results = await Promise.all(Array.from({ length: 10 }, () => index.deliver(e)));
        assert.equal(results.filter((r) => r.inserted).length, 1);
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 777 });
        assert.equal((await index.list(ALICE, { limit: 100 })).items.length, 1);
      }));

    it('counters stay exact through many deliveries, repeats and deletes across two mailboxes', () =>
      withIndex(async ({ index }) => {
        const model = new Map<string, Map<string, number>>([
          [ALICE, new Map()],
          [BOB, new Map()],
        ]);
        const entries: MessageEntry[] = [];
        for (let i = 0; i < 60; i++) {
          // Every third message goes to both mailboxes (same id), as a multi-recipient delivery does.
          const mailboxes = i % 3 === 0 ? [ALICE, BOB] : [i % 2 === 0 ? ALICE : BOB];
          for (const mb of mailboxes) {
            entries.push(makeEntry(mb, BASE_MS + i * 1000, `ses-${i}`, { size: 100 + ((i * 7919) % 5000) }));
          }
        }
        // Deleted messages stay deleted when delivered again (see the deletion tests below).
        const deleted = new Set<string>();
        const deliver = async (e: MessageEntry): Promise<void> => {
          const r = await index.deliver(e);
          const box = model.get(e.mailbox);
          assert.ok(box);
          const expected = !box.has(e.id) && !deleted.has(`${e.mailbox}/${e.id}`);
          assert.equal(r.inserted, expected, `deliver ${e.mailbox}/${e.id}`);
          if (expected) box.set(e.id, e.size);
        };
        const remove = async (mailbox: string, id: string): Promise<void> => {
          const r = await index.delete(mailbox, id);
          const box = model.get(mailbox);
          assert.ok(box);
          assert.equal(r === null, !box.has(id), `delete ${mailbox}/${id}`);
          if (r !== null) deleted.add(`${mailbox}/${id}`);
          box.delete(id);
        };
        const check = async (): Promise<void> => {
          for (const [mb, box] of model) {
            const bytes = [...box.values()].reduce((a, b) => a + b, 0);
            assert.deepEqual(await index.stat(mb), { address: mb, messages: box.size, bytes });
          }
        };

        // A burst of different messages into the same mailboxes (concurrent router invocations).
        await Promise.all(entries.slice(0, 30).map((e) => index.deliver(e)));
        for (const e of entries.slice(0, 30)) model.get(e.mailbox)?.set(e.id, e.size);
        await check();
        for (const e of entries.slice(20, 50)) await deliver(e);
        await check();
        for (const e of entries.slice(0, 50).filter((_, i) => i % 4 === 0)) await remove(e.mailbox, e.id);
        for (const e of entries.slice(0, 50).filter((_, i) => i % 8 === 0)) await remove(e.mailbox, e.id);
        await check();
        for (const e of entries) await deliver(e);
        await check();
        const stats = await listAllMailboxes(index);
        assert.deepEqual(
          stats.map((s) => s.address),
          [ALICE, BOB],
        );
        for (const s of stats) assert.deepEqual(s, await index.stat(s.address));
      }));

    it('committedAfter follows commit order, not id order: a message received earlier but committed later is not skipped', () =>
      withIndex(async ({ index }) => {
        assert.equal(await index.commitCursor(ALICE), 0);
        const small = makeEntry(ALICE, BASE_MS + 60_000, 'small-newer');
        const big = makeEntry(ALICE, BASE_MS, 'big-older'); // received first, stored last
        await index.deliver(small);
        const cursor = await index.commitCursor(ALICE);
        assert.equal(cursor, 1);
        await index.deliver(big);
        await index.deliver(small); // a retry takes no number
        assert.equal(await index.commitCursor(ALICE), 2);
        assert.deepEqual(plain((await index.committedAfter(ALICE, cursor, 10)).items), [plain(big)]);
        const all = await index.committedAfter(ALICE, 0, 10);
        assert.deepEqual(
          all.items.map((e) => e.id),
          [small.id, big.id],
        );
        assert.deepEqual([all.cursor, all.truncated], [2, false]);
        const none = await index.committedAfter(ALICE, 2, 10);
        assert.deepEqual([none.items, none.cursor, none.truncated], [[], 2, false]);
        assert.deepEqual((await index.committedAfter(BOB, 0, 10)).items, [], 'per mailbox');
      }));

    it('committedAfter pages with truncated, skips deleted mail, and commit numbers are never reused', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 5 }, (_, i) => makeEntry(ALICE, BASE_MS + i * 1000, `seq-${i}`));
        for (const e of entries) await index.deliver(e);
        const first = await index.committedAfter(ALICE, 0, 2);
        assert.deepEqual(
          [first.items.map((e) => e.id), first.cursor, first.truncated],
          [[entries[0]?.id, entries[1]?.id], 2, true],
        );
        await index.delete(ALICE, entries[2]?.id ?? '');
        await index.delete(ALICE, entries[4]?.id ?? '');
        const rest = await index.committedAfter(ALICE, first.cursor, 10);
        assert.deepEqual(
          rest.items.map((e) => e.id),
          [entries[3]?.id],
        );
        assert.equal(rest.truncated, false);
        // The last commit was deleted: the next delivery still takes a new number.
        const late = makeEntry(ALICE, BASE_MS - 5000, 'seq-late');
        await index.deliver(late);
        assert.equal(await index.commitCursor(ALICE), 6);
        assert.deepEqual(
          (await index.committedAfter(ALICE, 5, 10)).items.map((e) => e.id),
          [late.id],
        );
      }));

    it('a message deleted and restored (replay --restore-deleted) is a new commit, listed once', () =>
      withIndex(async ({ index }) => {
        const e = makeEntry(ALICE, BASE_MS, 'restored');
        await index.deliver(e);
        await index.delete(ALICE, e.id);
        assert.deepEqual(await index.deliver(e, { restoreDeleted: true }), { inserted: true });
        const page = await index.committedAfter(ALICE, 0, 10);
        assert.deepEqual([page.items.map((x) => x.id), page.commits, page.cursor], [[e.id], [2], 2]);
      }));

    it('concurrent deliveries to one mailbox each take their own commit number', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 6 }, (_, i) => makeEntry(ALICE, BASE_MS + i, `par-${i}`));
        await Promise.all(entries.map((e) => index.deliver(e)));
        assert.equal(await index.commitCursor(ALICE), 6);
        const page = await index.committedAfter(ALICE, 0, 10);
        assert.deepEqual(page.items.map((e) => e.id).sort(), entries.map((e) => e.id).sort());
        assert.equal(page.cursor, 6);
      }));

    it('delete returns the removed entry once; a second delete returns null and leaves counters alone', () =>
      withIndex(async ({ index }) => {
        const keep = makeEntry(ALICE, BASE_MS, 'keep', { size: 10 });
        const gone = makeEntry(ALICE, BASE_MS + 1000, 'gone', { size: 20 });
        await index.deliver(keep);
        await index.deliver(gone);
        assert.deepEqual(plain(await index.delete(ALICE, gone.id)), plain(gone));
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 10 });
        assert.equal(await index.delete(ALICE, gone.id), null);
        assert.equal(await index.delete(ALICE, messageIdFor(BASE_MS, 'never')), null);
        assert.equal(
          await index.delete(BOB, keep.id),
          null,
          'deleting from the wrong mailbox removes nothing',
        );
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 10 });
        assert.equal(await index.get(ALICE, gone.id), null);
        assert.deepEqual(
          (await index.list(ALICE, { limit: 10 })).items.map((i) => i.id),
          [keep.id],
        );
      }));

    it('concurrent deletes of one message (DELE twice at once): exactly one removes it, counters stay exact', () =>
      withIndex(async ({ index }) => {
        const keep = makeEntry(ALICE, BASE_MS, 'twice-keep', { size: 10 });
        const gone = makeEntry(ALICE, BASE_MS + 1000, 'twice-gone', { size: 20 });
        await index.deliver(keep);
        await index.deliver(gone);
        const results = await Promise.all(Array.from({ length: 4 }, () => index.delete(ALICE, gone.id)));
        assert.equal(results.filter((r) => r !== null).length, 1, 'one delete removed it');
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 10 });
        assert.deepEqual(
          (await index.list(ALICE, { limit: 10 })).items.map((i) => i.id),
          [keep.id],
        );
        assert.deepEqual(
          (await index.committedAfter(ALICE, 0, 10)).items.map((i) => i.id),
          [keep.id],
        );
        assert.deepEqual(await index.deliver(gone), { inserted: false }, 'and it stays deleted');
      }));

    it('deleteMany removes many in order, null for absent and repeated ids, counters and commits exact', () =>
      withIndex(async ({ index }) => {
        // 40 messages, 36 deleted: more than one DynamoDB transaction's worth (33), so the groups meet.
        const entries = Array.from({ length: 40 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `many-${i}`, { size: 100 + i }),
        );
        for (const e of entries) await index.deliver(e);
        const bobs = { ...(entries[0] as MessageEntry), mailbox: BOB, recipient: BOB };
        await index.deliver(bobs);
        const gone = entries.filter((_, i) => i % 10 !== 0);
        const kept = entries.filter((_, i) => i % 10 === 0);
        const never = messageIdFor(BASE_MS, 'never');
        const ids = [never, ...gone.map((e) => e.id), (gone[0] as MessageEntry).id];
        const results = await index.deleteMany(ALICE, ids);
        assert.equal(results.length, ids.length, 'one result per id given');
        assert.equal(results[0], null, 'an id never delivered');
        assert.deepEqual(plain(results.slice(1, -1)), plain(gone), 'the removed entries, in the order given');
        assert.equal(results.at(-1), null, 'an id given twice is removed once');
        assert.deepEqual(await index.stat(ALICE), {
          address: ALICE,
          messages: kept.length,
          bytes: kept.reduce((sum, e) => sum + e.size, 0),
        });
        assert.deepEqual(
          (await index.list(ALICE, { limit: 100 })).items.map((i) => i.id),
          kept.map((e) => e.id).reverse(),
        );
        assert.deepEqual(
          (await index.committedAfter(ALICE, 0, 100)).items.map((i) => i.id),
          kept.map((e) => e.id),
          'the long-poll no longer sees them',
        );
        for (const e of gone.slice(0, 5)) {
          assert.equal(await index.deliveryState(ALICE, e.id), 'deleted');
          assert.deepEqual(await index.deliver(e), { inserted: false }, 'each stays deleted');
        }
        assert.deepEqual(
          await index.stat(BOB),
          { address: BOB, messages: 1, bytes: bobs.size },
          'bob untouched',
        );
        assert.deepEqual(
          await index.deleteMany(
            ALICE,
            gone.slice(0, 3).map((e) => e.id),
          ),
          [null, null, null],
          'deleting them again removes nothing',
        );
        assert.deepEqual(await index.deleteMany(ALICE, []), []);
        await assert.rejects(
          index.deleteMany(
            ALICE,
            Array.from({ length: MAX_DELETE_MANY + 1 }, () => never),
          ),
          (err: unknown) => err instanceof ValidationError,
        );
        assert.equal(kept.length, (await index.stat(ALICE)).messages, 'a refused call changes nothing');
      }));

    it('concurrent deleteMany and delete of overlapping ids: each message removed exactly once, counters exact', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 40 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `overlap-${i}`, { size: 10 + i }),
        );
        for (const e of entries) await index.deliver(e);
        const ids = entries.map((e) => e.id);
        const [a, b, singles] = await Promise.all([
          index.deleteMany(ALICE, ids.slice(0, 30)),
          index.deleteMany(ALICE, ids.slice(10, 40).reverse()),
          Promise.all(ids.slice(5, 15).map((id) => index.delete(ALICE, id))),
        ]);
        const removedBy = new Map<string, number>();
        for (const r of [...a, ...b, ...singles]) {
          if (r !== null) removedBy.set(r.id, (removedBy.get(r.id) ?? 0) + 1);
        }
        assert.deepEqual([...removedBy.keys()].sort(), [...ids].sort(), 'every one removed');
        assert.ok(
          [...removedBy.values()].every((n) => n === 1),
          'and none twice',
        );
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 0, bytes: 0 });
      }));

    it('setSeen racing a delete never brings the message back, and counters stay exact', () =>
      withIndex(async ({ index }) => {
        const keep = makeEntry(ALICE, BASE_MS, 'race-keep', { size: 10 });
        const gone = makeEntry(ALICE, BASE_MS + 1000, 'race-gone', { size: 20 });
        await index.deliver(keep);
        await index.deliver(gone);
        const [flagged, removed, unflagged] = await Promise.all([
          index.setSeen(ALICE, gone.id, true),
          index.delete(ALICE, gone.id),
          index.setSeen(ALICE, gone.id, false),
        ]);
        assert.ok(removed !== null);
        for (const r of [flagged, unflagged]) assert.ok(r === null || r.id === gone.id);
        assert.equal(await index.get(ALICE, gone.id), null);
        assert.equal(
          await index.setSeen(ALICE, gone.id, true),
          null,
          'a flag on a deleted message is a miss',
        );
        assert.equal(await index.get(ALICE, gone.id), null, 'and creates nothing');
        assert.deepEqual(
          (await index.list(ALICE, { limit: 10 })).items.map((i) => i.id),
          [keep.id],
        );
        assert.deepEqual(
          (await index.list(ALICE, { limit: 10, unseen: true })).items.map((i) => i.id),
          [keep.id],
        );
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 10 });
      }));

    it('a deleted message stays deleted when delivered again, unless restoreDeleted; deliveryState says which', () =>
      withIndex(async ({ index }) => {
        const gone = makeEntry(ALICE, BASE_MS, 'gone', { size: 20 });
        assert.equal(await index.deliveryState(ALICE, gone.id), 'absent');
        await index.deliver(gone);
        assert.equal(await index.deliveryState(ALICE, gone.id), 'present');
        // The same message for bob (another recipient of it) is an entry of its own.
        const bobs = { ...gone, mailbox: BOB, recipient: BOB };
        await index.deliver(bobs);
        assert.ok(await index.delete(ALICE, gone.id));
        assert.equal(await index.deliveryState(ALICE, gone.id), 'deleted');
        assert.equal(await index.deliveryState(BOB, gone.id), 'present');
        // Delivered again (a replay, a notification delivered twice): still deleted, counters alone.
        assert.deepEqual(await index.deliver(gone), { inserted: false });
        assert.equal(await index.get(ALICE, gone.id), null);
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 0, bytes: 0 });
        // Asked for: back, counted once, and the deletion forgotten.
        assert.deepEqual(await index.deliver(gone, { restoreDeleted: true }), { inserted: true });
        assert.equal(await index.deliveryState(ALICE, gone.id), 'present');
        assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 20 });
        assert.deepEqual(await index.deliver(gone, { restoreDeleted: true }), { inserted: false });
        // Deleted a second time: remembered again.
        assert.ok(await index.delete(ALICE, gone.id));
        assert.deepEqual(await index.deliver(gone), { inserted: false });
        assert.deepEqual(await index.stat(BOB), { address: BOB, messages: 1, bytes: 20 });
      }));

    it('a deletion is remembered for deletionMemoryDays, then forgotten', () => {
      let now = BASE_MS;
      return withIndex(
        async ({ index }) => {
          const e = makeEntry(ALICE, BASE_MS, 'old', { size: 5 });
          await index.deliver(e);
          await index.delete(ALICE, e.id);
          now += 1.5 * DAY_MS;
          assert.equal(await index.deliveryState(ALICE, e.id), 'deleted');
          assert.deepEqual(await index.deliver(e), { inserted: false });
          now += 1 * DAY_MS;
          assert.equal(await index.deliveryState(ALICE, e.id), 'absent');
          assert.deepEqual(await index.deliver(e), { inserted: true });
          assert.deepEqual(await index.stat(ALICE), { address: ALICE, messages: 1, bytes: 5 });
        },
        { deletionMemoryDays: 2, clock: () => now },
      );
    });

    it('setSeen sets and clears the flag; unseen lists only unseen mail; counters unchanged', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 5 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `seen-${i}`),
        );
        for (const e of entries) await index.deliver(e);
        const statBefore = await index.stat(ALICE);
        const [e0, e1, e2] = entries;
        assert.ok(e0 && e1 && e2);

        const updated = await index.setSeen(ALICE, e1.id, true);
        assert.deepEqual(plain(updated), plain({ ...e1, seen: true }));
        await index.setSeen(ALICE, e2.id, true);
        assert.equal((await index.get(ALICE, e1.id))?.seen, true);
        const unseen = await index.list(ALICE, { limit: 10, unseen: true });
        assert.deepEqual(
          unseen.items.map((i) => i.id),
          newestFirst(entries.filter((e) => e !== e1 && e !== e2).map((e) => e.id)),
        );
        assert.ok(unseen.items.every((i) => !i.seen));

        assert.equal((await index.setSeen(ALICE, e1.id, false))?.seen, false);
        assert.equal((await index.get(ALICE, e1.id))?.seen, false);
        assert.equal((await index.list(ALICE, { limit: 10, unseen: true })).items.length, 4);
        assert.equal((await index.list(ALICE, { limit: 10 })).items.length, 5);
        assert.equal(await index.setSeen(ALICE, messageIdFor(BASE_MS, 'nope'), true), null);
        assert.equal(await index.setSeen(BOB, e0.id, true), null);
        assert.deepEqual(await index.stat(ALICE), statBefore);
      }));

    it('updateParsed rewrites the parsed fields and what q finds, keeps seen, order and counters, and never resurrects', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 3 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `reparse-${i}`, { subject: `Ol\uFFFD ${i}`, snippet: 'old' }),
        );
        for (const e of entries) await index.deliver(e);
        const [e0, e1, e2] = entries;
        assert.ok(e0 && e1 && e2);
        await index.setSeen(ALICE, e1.id, true);
        const statBefore = await index.stat(ALICE);
        const fields = {
          from: 'Ingo Lütkebohle <ingo@blank.pages.de>',
          to: 'Ａｌｉｃｅ <alice@example.com>',
          subject: 'Olá 1',
          snippet: 'new text',
          hasAttachments: true,
          parseFailed: false,
        };

        const updated = await index.updateParsed(ALICE, e1.id, fields);
        assert.deepEqual(plain(updated), plain({ ...e1, ...fields, seen: true }));
        assert.deepEqual(plain(await index.get(ALICE, e1.id)), plain({ ...e1, ...fields, seen: true }));
        assert.deepEqual(await index.stat(ALICE), statBefore);
        assert.deepEqual(
          (await index.list(ALICE, { limit: 10 })).items.map((i) => i.id),
          newestFirst(entries.map((e) => e.id)),
        );
        // The folded copies follow: the new text is found (NFKC, any case), the old is not.
        for (const q of ['OLÁ 1', 'lütkebohle', 'alice <']) {
          assert.deepEqual(
            (await index.list(ALICE, { limit: 10, q })).items.map((i) => i.id),
            [e1.id],
            q,
          );
        }
        assert.deepEqual(
          (await index.list(ALICE, { limit: 10, q: `ol\uFFFD 1` })).items.map((i) => i.id),
          [],
        );

        // Deleted, or never there: null, and nothing comes back.
        assert.ok(await index.delete(ALICE, e2.id));
        const statAfterDelete = await index.stat(ALICE);
        assert.equal(await index.updateParsed(ALICE, e2.id, fields), null);
        assert.equal(await index.get(ALICE, e2.id), null);
        assert.equal(await index.deliveryState(ALICE, e2.id), 'deleted');
        assert.equal(await index.updateParsed(BOB, e0.id, fields), null);
        assert.equal(await index.get(BOB, e0.id), null);
        assert.deepEqual(await index.stat(ALICE), statAfterDelete);
        assert.deepEqual(await index.stat(BOB), { address: BOB, messages: 0, bytes: 0 });
      }));

    it('lists newest first, honours limit, and an empty mailbox gives an empty last page', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 20 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 60_000, `order-${i}`),
        );
        // Delivered out of order: the list order comes from the ids (receipt time), not insertion order.
        // 7 and 20 are coprime, so i*7 mod 20 visits every entry once, in a scrambled order.
        for (let i = 0; i < entries.length; i++) {
          const e = entries[(i * 7) % entries.length];
          assert.ok(e);
          await index.deliver(e);
        }
        const expected = newestFirst(entries.map((e) => e.id));

        const first = await index.list(ALICE, { limit: 5 });
        assert.deepEqual(
          first.items.map((i) => i.id),
          expected.slice(0, 5),
        );
        assert.notEqual(first.nextCursor, null);
        const all = await index.list(ALICE, { limit: 1000 });
        assert.deepEqual(
          all.items.map((i) => i.id),
          expected,
        );
        assert.equal(all.nextCursor, null, 'no cursor when everything fit');
        assert.deepEqual(await index.list(BOB, { limit: 10 }), { items: [], nextCursor: null });
      }));

    it('paginates 250 entries with limit 7: complete, in order, no duplicates', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 250 }, (_, i) =>
          // Several messages per millisecond: order then rests on the random part of the ULID.
          makeEntry(ALICE, BASE_MS + Math.floor(i / 3), `page-${i}`),
        );
        await deliverAll(index, entries);
        await index.deliver(makeEntry(BOB, BASE_MS, 'other-mailbox'));
        const ids = await listAllIds(index, ALICE, { limit: 7 });
        assert.equal(new Set(ids).size, ids.length, 'no duplicates');
        assert.deepEqual(ids, newestFirst(entries.map((e) => e.id)));
      }));

    it('pagination has no duplicates and no gaps while mail arrives and is deleted between pages', () =>
      withIndex(async ({ index }) => {
        const original = Array.from({ length: 250 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `churn-${i}`),
        );
        await deliverAll(index, original);
        const originalDesc = newestFirst(original.map((e) => e.id));
        const deletedAhead = new Set<string>();
        const deletedBehind = new Set<string>();
        const added = new Set<string>();

        const ids = await listAllIds(index, ALICE, { limit: 7 }, async (page, seen) => {
          const seenSet = new Set(seen);
          // New mail (newer than everything) and backdated mail (older than everything, e.g. an import).
          const fresh = makeEntry(ALICE, BASE_MS + 10_000_000 + page, `fresh-${page}`);
          const old = makeEntry(ALICE, BASE_MS - 1_000_000 - page * 1000, `old-${page}`);
          await index.deliver(fresh);
          await index.deliver(old);
          added.add(fresh.id);
          added.add(old.id);
          // Delete one message already shown and one not reached yet.
          const behind = seen[seen.length - 1 - (page % Math.min(seen.length, 5))];
          if (behind !== undefined && originalDesc.includes(behind) && !deletedBehind.has(behind)) {
            await index.delete(ALICE, behind);
            deletedBehind.add(behind);
          }
          const ahead = originalDesc[seen.length + 10 + page];
          if (ahead !== undefined && !seenSet.has(ahead) && !deletedAhead.has(ahead)) {
            assert.ok(await index.delete(ALICE, ahead));
            deletedAhead.add(ahead);
          }
        });

        assert.ok(deletedAhead.size > 10 && deletedBehind.size > 10, 'the test did churn');
        assert.equal(new Set(ids).size, ids.length, 'no duplicates');
        assert.deepEqual(ids, newestFirst(ids), 'strictly newest first across pages');
        const returned = new Set(ids);
        for (const id of originalDesc) {
          if (deletedAhead.has(id))
            assert.ok(!returned.has(id), 'mail deleted before its page is not listed');
          else assert.ok(returned.has(id), `no gap: ${id} existed throughout and was listed`);
        }
        for (const id of ids) assert.ok(originalDesc.includes(id) || added.has(id));
        const stat = await index.stat(ALICE);
        assert.equal(stat.messages, original.length + added.size - deletedAhead.size - deletedBehind.size);
      }));

    it('unseen pages while flags change between pages: no duplicates, and mail unseen throughout is listed', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 60 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `flags-${i}`, { seen: i % 4 === 0 }),
        );
        await deliverAll(index, entries);
        const desc = newestFirst(entries.map((e) => e.id));
        const touched = new Set<string>();
        const ids = await listAllIds(index, ALICE, { limit: 5, unseen: true }, async (page, seen) => {
          // Read one not reached yet, mark one already listed unread again, unread one that was read.
          const ahead = desc[seen.length + 8 + page];
          const shown = seen[seen.length - 1];
          const readAhead = desc[seen.length + 4 * page];
          for (const [id, flag] of [
            [ahead, true],
            [shown, false],
            [readAhead, false],
          ] as const) {
            if (id === undefined || touched.has(id)) continue;
            touched.add(id);
            await index.setSeen(ALICE, id, flag);
          }
        });
        assert.equal(new Set(ids).size, ids.length, 'no duplicates');
        assert.deepEqual(ids, newestFirst(ids), 'newest first across pages');
        for (const e of entries) {
          if (!e.seen && !touched.has(e.id)) assert.ok(ids.includes(e.id), `unseen throughout: ${e.id}`);
          if (e.seen && !touched.has(e.id)) assert.ok(!ids.includes(e.id), `seen throughout: ${e.id}`);
        }
      }));

    it('unread pages are full and newest first however much read mail lies between (a small filteredReadBudget)', () =>
      withIndex(
        async ({ index }) => {
          // 60 messages, one in ten unread: a filter after the read fills a page of 2 only by reading
          // 20 items, more than the budget, so it came back short (or empty) with a cursor.
          const entries = Array.from({ length: 60 }, (_, i) =>
            makeEntry(ALICE, BASE_MS + i * 1000, `sparse-${i}`, { seen: i % 10 !== 3 }),
          );
          await deliverAll(index, entries);
          const unread = newestFirst(entries.filter((e) => !e.seen).map((e) => e.id));
          const pages: string[][] = [];
          let cursor: string | undefined;
          for (;;) {
            assert.ok(pages.length < 20, 'pagination terminates');
            const page = await index.list(ALICE, { limit: 2, unseen: true, cursor });
            pages.push(page.items.map((i) => i.id));
            assert.ok(
              page.items.every((i) => !i.seen),
              'only unread mail',
            );
            if (page.nextCursor === null) break;
            cursor = page.nextCursor;
          }
          assert.deepEqual(
            pages.map((p) => p.length),
            [2, 2, 2],
            'three full pages, the last without a cursor',
          );
          assert.deepEqual(pages.flat(), unread);
          // With q as well: the unread mail it matches (every unread subject has a 3, and 9 read ones
          // too), in a full page.
          const matched = await index.list(ALICE, { limit: 4, unseen: true, q: '3' });
          assert.deepEqual(
            matched.items.map((i) => i.id),
            unread.slice(0, 4),
          );
          assert.notEqual(matched.nextCursor, null);
        },
        { filteredReadBudget: 8 },
      ));

    it('marking read or unread moves a message out of or into the unread list at its place; delete and reparse', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 6 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `move-${i}`),
        );
        await deliverAll(index, entries);
        const [e0, e1, e2, e3, e4, e5] = entries;
        assert.ok(e0 && e1 && e2 && e3 && e4 && e5);
        const unread = async (q?: string) =>
          (await index.list(ALICE, { limit: 10, unseen: true, q })).items.map((i) => i.id);
        assert.deepEqual(await unread(), newestFirst(entries.map((e) => e.id)));
        await index.setSeen(ALICE, e2.id, true);
        await index.setSeen(ALICE, e4.id, true);
        assert.deepEqual(await unread(), [e5.id, e3.id, e1.id, e0.id]);
        // Unread again: back at its place by id, not on top.
        await index.setSeen(ALICE, e4.id, false);
        assert.deepEqual(await unread(), [e5.id, e4.id, e3.id, e1.id, e0.id]);
        // Marking read twice, or unread what is unread, changes nothing.
        await index.setSeen(ALICE, e2.id, true);
        await index.setSeen(ALICE, e3.id, false);
        assert.deepEqual(await unread(), [e5.id, e4.id, e3.id, e1.id, e0.id]);
        // Deleted: gone from the unread list (one at a time, and several at once).
        await index.delete(ALICE, e5.id);
        await index.deleteMany(ALICE, [e0.id, e2.id]);
        assert.deepEqual(await unread(), [e4.id, e3.id, e1.id]);
        // Reparsed: an unread entry stays unread (with its new subject), a read one stays read.
        const fields = {
          from: 'New Parser <np@example.net>',
          to: ALICE,
          subject: 'Reparsed subject',
          snippet: 'new',
          hasAttachments: false,
          parseFailed: false,
        };
        assert.equal((await index.updateParsed(ALICE, e3.id, fields))?.seen, false);
        await index.setSeen(ALICE, e1.id, true);
        assert.equal((await index.updateParsed(ALICE, e1.id, fields))?.seen, true);
        const after = (await index.list(ALICE, { limit: 10, unseen: true })).items;
        assert.deepEqual(
          after.map((i) => [i.id, i.subject]),
          [
            [e4.id, e4.subject],
            [e3.id, 'Reparsed subject'],
          ],
        );
        assert.deepEqual(await unread('reparsed'), [e3.id]);
        // A mailbox's unread list holds its own mail only.
        await index.deliver({ ...e3, mailbox: BOB, recipient: BOB });
        assert.deepEqual(await unread(), [e4.id, e3.id]);
        assert.deepEqual(
          (await index.list(BOB, { limit: 10, unseen: true })).items.map((i) => i.id),
          [e3.id],
        );
      }));

    it('unread pages by cursor while mail arrives and is deleted between pages: no duplicates, no gaps', () =>
      withIndex(async ({ index }) => {
        const entries = Array.from({ length: 24 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `churn-${i}`, { seen: i % 3 === 0 }),
        );
        await deliverAll(index, entries);
        const desc = newestFirst(entries.filter((e) => !e.seen).map((e) => e.id));
        const deleted = new Set<string>();
        const ids = await listAllIds(index, ALICE, { limit: 4, unseen: true }, async (page, so) => {
          // Newer unread mail arrives (it sorts before the cursor: not on a later page), and an
          // unread message not listed yet is deleted.
          await index.deliver(makeEntry(ALICE, BASE_MS + 100_000 + page * 1000, `churn-new-${page}`));
          const ahead = desc[so.length + 2];
          if (ahead !== undefined) {
            deleted.add(ahead);
            await index.delete(ALICE, ahead);
          }
        });
        assert.equal(new Set(ids).size, ids.length, 'no duplicates');
        assert.deepEqual(
          ids,
          desc.filter((id) => !deleted.has(id)),
          'every unread message there throughout, once, newest first',
        );
      }));

    it('upgrade: unread mail written before the unread index is listed before the upgrade and after it', () =>
      withIndex(async ({ index, legacy }) => {
        const deliverOld = legacy?.deliver ?? ((e: MessageEntry) => index.deliver(e).then(() => undefined));
        // Mail the older version stored: read and unread, in the mailbox whose mail the upgrade must find.
        const old = Array.from({ length: 15 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `old-${i}`, { seen: i % 5 !== 0 }),
        );
        for (const e of old) await deliverOld(e);
        const unreadOld = newestFirst(old.filter((e) => !e.seen).map((e) => e.id));
        assert.deepEqual(
          await listAllIds(index, ALICE, { limit: 2, unseen: true }),
          unreadOld,
          'before the upgrade: none lost',
        );
        // This version delivers to it, and changes an old entry's flag, before the upgrade runs.
        const fresh = makeEntry(ALICE, BASE_MS + 60_000, 'new-0');
        await index.deliver(fresh);
        const [o0, o5] = [old[0], old[5]];
        assert.ok(o0 && o5);
        await index.setSeen(ALICE, o5.id, true);
        const before = [fresh.id, ...unreadOld.filter((id) => id !== o5.id)];
        assert.deepEqual(await listAllIds(index, ALICE, { limit: 2, unseen: true }), before);
        // A mailbox that only ever had this version's mail.
        const bobs = makeEntry(BOB, BASE_MS, 'bob-0');
        await index.deliver(bobs);

        await legacy?.upgrade();
        assert.deepEqual(
          await listAllIds(index, ALICE, { limit: 2, unseen: true }),
          before,
          'after the upgrade',
        );
        assert.deepEqual(await listAllIds(index, ALICE, { limit: 50, unseen: true }), before);
        assert.deepEqual(
          (await index.list(BOB, { limit: 10, unseen: true })).items.map((i) => i.id),
          [bobs.id],
        );
        // An old entry's flag changes as any other's.
        await index.setSeen(ALICE, o0.id, true);
        const readOld = old.find((e) => e.seen);
        assert.ok(readOld);
        await index.setSeen(ALICE, readOld.id, false);
        assert.deepEqual(
          await listAllIds(index, ALICE, { limit: 3, unseen: true }),
          newestFirst([...before.filter((id) => id !== o0.id), readOld.id]),
        );
        // Running the upgrade again changes nothing.
        await legacy?.upgrade();
        assert.deepEqual(
          await listAllIds(index, ALICE, { limit: 3, unseen: true }),
          newestFirst([...before.filter((id) => id !== o0.id), readOld.id]),
        );
        assert.equal((await index.stat(ALICE)).messages, old.length + 1);
      }));

    it('q matches from, to and subject case-insensitively (Unicode too), with % and _ taken literally', () =>
      withIndex(async ({ index }) => {
        const at = (i: number): number => BASE_MS + i * 1000;
        const e = {
          invoice1: makeEntry(ALICE, at(1), 'q1', {
            subject: 'Invoice March',
            from: 'Billing <billing@shop.example>',
          }),
          invoice2: makeEntry(ALICE, at(2), 'q2', {
            subject: 'your INVOICE for April',
            from: 'Bob Smith <BOB@Example.COM>',
          }),
          percent: makeEntry(ALICE, at(3), 'q3', {
            subject: 'Hello 100% off',
            to: 'Carol <carol@example.org>',
          }),
          underscore: makeEntry(ALICE, at(4), 'q4', { subject: 'under_score', to: 'dave@example.net' }),
          umlaut: makeEntry(ALICE, at(5), 'q5', {
            subject: 'Ärger im Büro',
            from: 'Jörg <jorg@example.de>',
            to: 'e@x.de',
          }),
          wild: makeEntry(ALICE, at(6), 'q6', { subject: 'u1r2 roo', to: 'zed@example.net' }),
          // Decomposed (NFD, as macOS writes file names), full-width and half-width forms.
          decomposed: makeEntry(ALICE, at(8), 'q8', { subject: 'Cafe\u0301 Mu\u0308ller', to: 'f@x.de' }),
          wide: makeEntry(ALICE, at(9), 'q9', {
            subject: '\uff34\uff25\uff33\uff34 \uff83\uff7d\uff84',
            to: 'g@x.jp',
          }),
          // A compatibility character whose NFKC form is upper case: ㎓ is GHz.
          unit: makeEntry(ALICE, at(10), 'q10', { subject: 'Band 5 \u3393', to: 'h@x.jp' }),
        };
        for (const entry of Object.values(e)) await index.deliver(entry);
        await index.deliver(makeEntry(BOB, at(7), 'q7', { subject: 'Invoice for Bob' }));
        const search = async (q: string, unseen = false): Promise<string[]> =>
          (await index.list(ALICE, { limit: 100, q, unseen })).items.map((i) => i.id);
        const ids = (...entries: MessageEntry[]): string[] => newestFirst(entries.map((x) => x.id));

        assert.deepEqual(await search('invoice'), ids(e.invoice1, e.invoice2));
        assert.deepEqual(await search('INVOICE'), ids(e.invoice1, e.invoice2));
        assert.deepEqual(await search('bob@example.com'), ids(e.invoice2), 'from');
        assert.deepEqual(await search('CAROL@'), ids(e.percent), 'to');
        assert.deepEqual(await search('ärger'), ids(e.umlaut), 'Unicode subject');
        assert.deepEqual(await search('JÖRG'), ids(e.umlaut), 'Unicode from');
        assert.deepEqual(await search('%'), ids(e.percent), '% is literal');
        assert.deepEqual(await search('0% o'), ids(e.percent));
        assert.deepEqual(await search('_'), ids(e.underscore), '_ is literal');
        assert.deepEqual(await search('r_s'), ids(e.underscore));
        assert.deepEqual(await search('u_r'), [], '_ matches no other character');
        assert.deepEqual(await search('r%o'), [], '% matches no run of characters');
        assert.deepEqual(await search('no such text'), []);
        // Text typed one way finds text written another (foldForSearch: NFKC, then lower case).
        assert.deepEqual(await search('caf\u00e9 m\u00fcller'), ids(e.decomposed), 'NFC finds NFD');
        assert.deepEqual(await search('CAFE\u0301'), ids(e.decomposed), 'NFD finds NFD');
        assert.deepEqual(await search('test'), ids(e.wide), 'ASCII finds full-width');
        assert.deepEqual(await search('\u30c6\u30b9\u30c8'), ids(e.wide), 'テスト finds half-width ﾃｽﾄ');
        assert.deepEqual(await search('5 ghz'), ids(e.unit), 'lower case after NFKC: ghz finds ㎓');

        await index.setSeen(ALICE, e.invoice1.id, true);
        assert.deepEqual(await search('invoice', true), ids(e.invoice2), 'q and unseen combine');
      }));

    it('q with pagination returns every match once and nothing else', () =>
      withIndex(async ({ index }) => {
        const reports: MessageEntry[] = [];
        for (let i = 0; i < 60; i++) {
          const isReport = i % 2 === 0;
          const entry = makeEntry(ALICE, BASE_MS + i * 1000, `qp-${i}`, {
            subject: isReport ? `Weekly REPORT #${i}` : `Other ${i}`,
          });
          if (isReport) reports.push(entry);
          await index.deliver(entry);
        }
        const ids = await listAllIds(index, ALICE, { limit: 4, q: 'report' });
        assert.deepEqual(ids, newestFirst(reports.map((r) => r.id)));
      }));

    it('lists oldest first with oldestFirst, a page at a time, filters too; its cursors are its own', () =>
      withIndex(
        async ({ index }) => {
          const entries = Array.from({ length: 23 }, (_, i) =>
            makeEntry(ALICE, BASE_MS + i * 1000, `asc-${i}`, { seen: i % 3 !== 0 }),
          );
          // Delivered out of order: the order comes from the ids (receipt time).
          for (let i = 0; i < entries.length; i++) {
            const e = entries[(i * 5) % entries.length];
            assert.ok(e);
            await index.deliver(e);
          }
          await index.deliver(makeEntry(BOB, BASE_MS + 500, 'asc-bob'));
          const ascending = entries.map((e) => e.id).sort();
          assert.deepEqual(await listAllIds(index, ALICE, { limit: 4, oldestFirst: true }), ascending);
          assert.deepEqual(
            await listAllIds(index, ALICE, { limit: 2, oldestFirst: true, unseen: true }),
            entries
              .filter((e) => !e.seen)
              .map((e) => e.id)
              .sort(),
          );
          assert.deepEqual(
            await listAllIds(index, ALICE, { limit: 3, oldestFirst: true, q: 'asc-1' }),
            entries
              .filter((e) => e.subject.includes('asc-1'))
              .map((e) => e.id)
              .sort(),
          );
          // A cursor continues the order it was made in: given to the other, it would skip half the mailbox.
          const ascCursor = (await index.list(ALICE, { limit: 5, oldestFirst: true })).nextCursor;
          const descCursor = (await index.list(ALICE, { limit: 5 })).nextCursor;
          assert.ok(ascCursor !== null && descCursor !== null);
          await assertInvalidCursor(
            index.list(ALICE, { limit: 5, cursor: ascCursor }),
            'oldest-first cursor',
          );
          await assertInvalidCursor(
            index.list(ALICE, { limit: 5, cursor: descCursor, oldestFirst: true }),
            'newest-first cursor',
          );
        },
        { filteredReadBudget: 8 },
      ));

    it('an invalid cursor is refused with ValidationError code invalid_cursor', () =>
      withIndex(async ({ index }) => {
        for (let i = 0; i < 3; i++) await index.deliver(makeEntry(ALICE, BASE_MS + i, `c-${i}`));
        const valid = (await index.list(ALICE, { limit: 1 })).nextCursor;
        assert.ok(valid !== null);
        const b64 = (s: string): string => Buffer.from(s).toString('base64url');
        const bad: Record<string, string> = {
          garbage: 'garbage!!',
          empty: '',
          padding: '====',
          spaces: 'not a cursor',
          'base64 of junk': b64('junk'),
          'base64 of null': b64('null'),
          'base64 of an array': b64('[1,2]'),
          'base64 of {}': b64('{}'),
          'base64 of a wrong id': b64(JSON.stringify({ v: 1, id: '../../etc' })),
          truncated: valid.slice(0, Math.max(1, valid.length - 3)),
          'with junk appended': `${valid}!*`,
        };
        for (const [label, cursor] of Object.entries(bad)) {
          await assertInvalidCursor(index.list(ALICE, { limit: 10, cursor }), label);
        }
      }));

    it("a cursor from one mailbox never reveals another mailbox's mail", () =>
      withIndex(async ({ index }) => {
        for (let i = 0; i < 5; i++) {
          await index.deliver(makeEntry(ALICE, BASE_MS + i * 1000, `a-${i}`));
          await index.deliver(makeEntry(BOB, BASE_MS + i * 1000 + 500, `b-${i}`));
        }
        const cursorOfAlice = (await index.list(ALICE, { limit: 2 })).nextCursor;
        assert.ok(cursorOfAlice !== null);
        try {
          const page = await index.list(BOB, { limit: 100, cursor: cursorOfAlice });
          assert.ok(
            page.items.every((i) => i.mailbox === BOB),
            'only the requested mailbox is listed',
          );
        } catch (err) {
          // Refusing the foreign cursor is the other acceptable answer.
          assert.ok(err instanceof ValidationError && err.code === 'invalid_cursor', String(err));
        }
      }));

    it('stores, reads and deletes tokens; unknown tokens are null', () =>
      withIndex(async ({ index }) => {
        const hash = (t: string): string => createHash('sha256').update(t).digest('hex');
        const admin: TokenRecord = {
          hash: hash('admin-token'),
          mailbox: null,
          admin: true,
          createdAt: '2024-01-15T09:30:00.000Z',
          label: 'ops laptop',
        };
        const user: TokenRecord = {
          hash: hash('alice-token'),
          mailbox: ALICE,
          admin: false,
          createdAt: '2024-01-16T10:00:00.000Z',
        };
        await index.putToken(admin);
        await index.putToken(user);
        assert.deepEqual(plain(await index.getToken(admin.hash)), plain(admin));
        const back = await index.getToken(user.hash);
        assert.deepEqual(plain(back), plain(user));
        assert.equal(back?.label, undefined);
        assert.equal(await index.getToken(hash('unknown')), null);
        assert.equal(await index.deleteToken(user.hash), true);
        assert.equal(await index.getToken(user.hash), null);
        assert.equal(await index.deleteToken(user.hash), false);
        assert.deepEqual(plain(await index.getToken(admin.hash)), plain(admin));
      }));

    it('claimSend is a conditional insert: one claim wins, a sent record is never claimed again', () =>
      withIndex(async ({ index }) => {
        const key = 'ses-0001:boss.private@gmail.test';
        const t0 = new Date(BASE_MS);
        const lease = { now: t0, leaseMs: 60_000 };
        assert.equal(await index.getSend(key), null);
        const first = await index.claimSend(key, lease);
        assert.equal(first.claimed, true);
        assert.equal(first.record.state, 'pending');
        assert.equal(first.record.attempts, 1);
        assert.equal(first.record.claimedAt, t0.toISOString());
        // A second router processing the same notification while the first is sending.
        const second = await index.claimSend(key, { now: new Date(BASE_MS + 1000), leaseMs: 60_000 });
        assert.equal(second.claimed, false);
        assert.equal(second.record.state, 'pending');
        const sent = await index.finishSend(
          key,
          { state: 'sent', providerMessageId: 'prov-1' },
          new Date(BASE_MS + 2000),
        );
        assert.equal(sent.state, 'sent');
        assert.equal(sent.providerMessageId, 'prov-1');
        assert.equal(sent.updatedAt, new Date(BASE_MS + 2000).toISOString());
        // A replay hours later, with the lease long expired: still sent once.
        const replay = await index.claimSend(key, { now: new Date(BASE_MS + 86_400_000), leaseMs: 60_000 });
        assert.equal(replay.claimed, false);
        assert.equal(replay.record.state, 'sent');
        assert.equal(replay.record.providerMessageId, 'prov-1');
        assert.deepEqual(plain(await index.getSend(key)), plain(replay.record));
        assert.equal(await index.getSend('ses-0001:someone-else@gmail.test'), null);
      }));

    it('twenty concurrent claims of one send: exactly one wins', () =>
      withIndex(async ({ index }) => {
        const now = new Date(BASE_MS);
        const results = await Promise.all(
          Array.from({ length: 20 }, () => index.claimSend('race:x@example.net', { now, leaseMs: 60_000 })),
        );
        assert.equal(results.filter((r) => r.claimed).length, 1);
      }));

    it('a failed send and a stale pending claim can be claimed again; the error is kept until then', () =>
      withIndex(async ({ index }) => {
        const key = 'ses-0002:x@example.net';
        await index.claimSend(key, { now: new Date(BASE_MS), leaseMs: 60_000 });
        const failed = await index.finishSend(
          key,
          { state: 'failed', error: '554 5.7.1 refused' },
          new Date(BASE_MS + 10),
        );
        assert.equal(failed.state, 'failed');
        assert.equal(failed.error, '554 5.7.1 refused');
        assert.equal(failed.providerMessageId, undefined);
        assert.equal((await index.getSend(key))?.error, '554 5.7.1 refused');
        const retry = await index.claimSend(key, { now: new Date(BASE_MS + 20), leaseMs: 60_000 });
        assert.equal(retry.claimed, true);
        assert.equal(retry.record.state, 'pending');
        assert.equal(retry.record.attempts, 2);
        assert.equal(retry.record.error, undefined);
        // The sender crashed mid-send: within the lease nobody else may claim, after it someone may.
        const within = await index.claimSend(key, { now: new Date(BASE_MS + 20 + 59_000), leaseMs: 60_000 });
        assert.equal(within.claimed, false);
        const after = await index.claimSend(key, { now: new Date(BASE_MS + 20 + 61_000), leaseMs: 60_000 });
        assert.equal(after.claimed, true);
        assert.equal(after.record.attempts, 3);
        const done = await index.finishSend(
          key,
          { state: 'sent', providerMessageId: 'p2', detail: 'oversize-notice' },
          new Date(BASE_MS + 90_000),
        );
        assert.equal(done.detail, 'oversize-notice');
        assert.equal(done.error, undefined);
        assert.equal(done.attempts, 3);
      }));

    it("a failure's detail (what the attempt sent) is kept, and the re-claim hands it to the retry", () =>
      withIndex(async ({ index }) => {
        const key = 'submit:a@example.test:retry-detail';
        await index.claimSend(key, { now: new Date(BASE_MS), leaseMs: 60_000 });
        const failed = await index.finishSend(
          key,
          { state: 'failed', error: 'connection lost', detail: '01ARZ3NDEKTSV4RRFFQ69G5FAV abc' },
          new Date(BASE_MS + 10),
        );
        assert.equal(failed.detail, '01ARZ3NDEKTSV4RRFFQ69G5FAV abc');
        const retry = await index.claimSend(key, { now: new Date(BASE_MS + 20), leaseMs: 60_000 });
        assert.equal(retry.claimed, true);
        assert.equal(retry.record.detail, '01ARZ3NDEKTSV4RRFFQ69G5FAV abc');
        // A failure without a detail leaves none behind.
        const again = await index.finishSend(key, { state: 'failed', error: 'x' }, new Date(BASE_MS + 30));
        assert.equal(again.detail, undefined);
      }));

    reopenIt('send records survive close and reopen', () =>
      withIndex(async (fixture) => {
        const { index } = fixture;
        const reopen = reopenOf(fixture);
        await index.claimSend('keep:x@example.net', { now: new Date(BASE_MS), leaseMs: 1000 });
        await index.finishSend(
          'keep:x@example.net',
          { state: 'sent', providerMessageId: 'p' },
          new Date(BASE_MS),
        );
        await index.close();
        const again = await reopen();
        try {
          assert.equal((await again.getSend('keep:x@example.net'))?.state, 'sent');
          const c = await again.claimSend('keep:x@example.net', {
            now: new Date(BASE_MS + 1e9),
            leaseMs: 1000,
          });
          assert.equal(c.claimed, false);
        } finally {
          await again.close();
        }
      }),
    );

    it('listMailboxes lists every mailbox with mail, sorted by address, with exact counters', () =>
      withIndex(async ({ index }) => {
        assert.deepEqual(await index.listMailboxes({ limit: 10 }), { items: [], nextCursor: null });
        const zed = 'zed@example.com';
        await index.deliver(makeEntry(zed, BASE_MS, 'm1', { size: 5 }));
        await index.deliver(makeEntry(ALICE, BASE_MS, 'm2', { size: 7 }));
        await index.deliver(makeEntry(ALICE, BASE_MS + 1, 'm3', { size: 11 }));
        await index.deliver(makeEntry(BOB, BASE_MS, 'm4', { size: 13 }));
        assert.deepEqual(await listAllMailboxes(index), [
          { address: ALICE, messages: 2, bytes: 18 },
          { address: BOB, messages: 1, bytes: 13 },
          { address: zed, messages: 1, bytes: 5 },
        ]);
        await index.delete(BOB, messageIdFor(BASE_MS, 'm4'));
        // A mailbox emptied by deletes may stay listed (with zeros) or disappear.
        const after = (await listAllMailboxes(index)).filter(
          (m) => m.address !== BOB || m.messages !== 0 || m.bytes !== 0,
        );
        assert.deepEqual(after, [
          { address: ALICE, messages: 2, bytes: 18 },
          { address: zed, messages: 1, bytes: 5 },
        ]);
      }));

    it('listMailboxes pages by address in whole mailboxes: a sent view stays with its address, whatever sorts between them', () =>
      withIndex(async ({ index }) => {
        const sent = sentMailboxKey;
        // '-' and '.' sort before '/': the same local part at longer domains comes between an
        // address and its sent view, and '+', '-', '.' before '@' in local parts.
        const keys = [
          'a@x.co',
          sent('a@x.co'),
          'a@x.co-op.net',
          'a@x.co.uk',
          sent('a@x.co.uk'),
          sent('a@x.com'),
          'a@x.com.au',
          'a.b@x.co',
          sent('a-b@x.co'),
          'a+b@x.co',
          'ab@x.co',
          ALICE,
          sent(ALICE),
          BOB,
          // Sent mail only, and more of its longer domains than an adapter reads in one go.
          sent('c@x.co'),
          ...Array.from({ length: 20 }, (_, i) => `c@x.co.d${String(i).padStart(2, '0')}`),
        ];
        const counters = new Map<string, { messages: number; bytes: number }>();
        for (const [i, key] of keys.entries()) {
          for (let m = 0; m <= i % 3; m++) {
            const size = 100 + i * 10 + m;
            await index.deliver(makeEntry(key, BASE_MS + i * 1000 + m, `mbx-${i}-${m}`, { size }));
            const c = counters.get(key) ?? { messages: 0, bytes: 0 };
            counters.set(key, { messages: c.messages + 1, bytes: c.bytes + size });
          }
        }
        const owners = [...new Set(keys.map(ownerOfKey))].sort();
        const expected = owners.flatMap((o) =>
          [o, sent(o)].flatMap((k) => {
            const c = counters.get(k);
            return c === undefined ? [] : [{ address: k, ...c }];
          }),
        );
        assert.equal(owners.length, 32);
        const byLimit = new Map<number, MailboxStat[][]>();
        for (const limit of [1, 3, 4, 1000]) {
          const pages = await listAllMailboxPages(index, limit);
          assert.equal(pages.length, Math.ceil(owners.length / limit), `limit ${limit}: ends exactly`);
          assert.deepEqual(pages.flat(), expected, `limit ${limit}`);
          byLimit.set(limit, pages);
        }
        // The address with sent mail only is where its address puts it, before its longer domains.
        const pages = byLimit.get(1) ?? [];
        const at = owners.indexOf('c@x.co');
        assert.deepEqual(pages[at], [{ address: sent('c@x.co'), ...counters.get(sent('c@x.co')) }]);
        assert.deepEqual(
          pages[at + 1]?.map((s) => s.address),
          ['c@x.co.d00'],
        );
      }));

    it('listMailboxes: a cursor is a position, not a snapshot, and an address is never listed twice', () =>
      withIndex(async ({ index }) => {
        let n = 0;
        const deliver = (key: string) => index.deliver(makeEntry(key, BASE_MS + n * 1000, `pos-${n++}`));
        for (const a of ['m1@x.co', 'm3@x.co', 'm5@x.co', 'm7@x.co']) await deliver(a);
        const first = await index.listMailboxes({ limit: 2 });
        assert.deepEqual(
          first.items.map((s) => s.address),
          ['m1@x.co', 'm3@x.co'],
        );
        assert.ok(first.nextCursor !== null);
        // Between pages: mail for new mailboxes before and after the cursor, and first sent mail of
        // an address already listed and of one still to come.
        for (const key of [
          'm0@x.co',
          'm2@x.co',
          sentMailboxKey('m3@x.co'),
          'm4@x.co',
          sentMailboxKey('m5@x.co'),
        ]) {
          await deliver(key);
        }
        const rest: string[] = [];
        let cursor: string | null = first.nextCursor;
        while (cursor !== null) {
          const page = await index.listMailboxes({ limit: 2, cursor });
          rest.push(...page.items.map((s) => s.address));
          cursor = page.nextCursor;
        }
        assert.deepEqual(rest, ['m4@x.co', 'm5@x.co', sentMailboxKey('m5@x.co'), 'm7@x.co']);
      }));

    it('listMailboxes refuses a bad cursor with invalid_cursor (a LIST cursor too) and a limit out of 1..1000', () =>
      withIndex(async ({ index }) => {
        for (const a of [ALICE, BOB, 'zed@example.com'])
          await index.deliver(makeEntry(a, BASE_MS, `bad-${a}`));
        await index.deliver(makeEntry(ALICE, BASE_MS + 1, 'bad-second'));
        const valid = (await index.listMailboxes({ limit: 1 })).nextCursor;
        const listCursor = (await index.list(ALICE, { limit: 1 })).nextCursor;
        assert.ok(valid !== null && listCursor !== null);
        const b64 = (x: string): string => Buffer.from(x).toString('base64url');
        const bad: Record<string, string> = {
          garbage: 'garbage!!',
          empty: '',
          'a LIST cursor': listCursor,
          'base64 of {}': b64('{}'),
          'base64 of a number for the mailbox': b64(JSON.stringify({ v: 1, mailbox: 5 })),
          'base64 of another version': b64(JSON.stringify({ v: 2, mailbox: ALICE })),
          truncated: valid.slice(0, Math.max(1, valid.length - 3)),
          'with junk appended': `${valid}!*`,
        };
        for (const [label, cursor] of Object.entries(bad)) {
          await assertInvalidCursor(index.listMailboxes({ limit: 10, cursor }), label);
        }
        for (const limit of [0, 1001, 1.5]) {
          await assert.rejects(index.listMailboxes({ limit }), ValidationError, `limit ${limit}`);
        }
        // The valid one still goes on where it stood.
        assert.deepEqual(
          (await index.listMailboxes({ limit: 10, cursor: valid })).items.map((s) => s.address),
          [BOB, 'zed@example.com'],
        );
      }));

    it('stat of a mailbox that never had mail is zeros', () =>
      withIndex(async ({ index }) => {
        assert.deepEqual(await index.stat('nobody@example.com'), {
          address: 'nobody@example.com',
          messages: 0,
          bytes: 0,
        });
      }));

    reopenIt('entries, flags, counters and tokens survive close and reopen', () =>
      withIndex(async (fixture) => {
        const { index } = fixture;
        const reopen = reopenOf(fixture);
        const entries = Array.from({ length: 3 }, (_, i) =>
          makeEntry(ALICE, BASE_MS + i * 1000, `durable-${i}`),
        );
        for (const e of entries) await index.deliver(e);
        const [e0, e1, e2] = entries;
        assert.ok(e0 && e1 && e2);
        await index.setSeen(ALICE, e1.id, true);
        await index.delete(ALICE, e2.id);
        const token: TokenRecord = {
          hash: 'ab'.repeat(32),
          mailbox: ALICE,
          admin: false,
          createdAt: e0.receivedAt,
        };
        await index.putToken(token);
        await index.close();

        const again = await reopen();
        try {
          assert.deepEqual(plain(await again.get(ALICE, e0.id)), plain(e0));
          assert.deepEqual(plain(await again.get(ALICE, e1.id)), plain({ ...e1, seen: true }));
          assert.equal(await again.get(ALICE, e2.id), null);
          assert.deepEqual(await again.stat(ALICE), {
            address: ALICE,
            messages: 2,
            bytes: e0.size + e1.size,
          });
          assert.deepEqual(plain(await again.getToken(token.hash)), plain(token));
          assert.deepEqual(await again.deliver(e0), { inserted: false });
          assert.deepEqual(
            (await again.list(ALICE, { limit: 10 })).items.map((i) => i.id),
            [e1.id, e0.id],
          );
        } finally {
          await again.close();
        }
      }),
    );
  });
}
