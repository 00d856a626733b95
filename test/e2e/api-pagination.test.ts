/**
 * LIST over 2,500 messages while the mailbox changes under the cursor: new mail arrives and old
 * mail is deleted between pages. A client paging from the top must see every message that existed
 * when it started and was not deleted before it got there, exactly once, in order.
 * The 2,500 entries go straight into the index (the pipeline is exercised elsewhere); the mail that
 * arrives during the walk comes through the real pipeline.
 *
 * And the admin mailbox list (`GET /v1/mailboxes`), which pages the same way (`limit`, `cursor`,
 * `nextCursor`), over more mailboxes than its largest page.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mailboxListSchema, messageListSchema, statSchema } from '../../functions/api/schemas.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import type { MessageEntry } from '../../functions/ports/mailbox-index.ts';
import { API_TEST_CONFIG, type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';

const MAILBOX = 'alice@example.test';
const COUNT = 2500;

function entry(i: number, baseMs: number, mailbox = MAILBOX): MessageEntry {
  return {
    mailbox,
    // Several messages per millisecond, as a burst of mail gets: ordering then rests on the id's random half.
    id: messageIdFor(baseMs + Math.floor(i / 3), `bulk-${i}`),
    size: 1000 + i,
    crlfSize: 1000 + i,
    receivedAt: new Date(baseMs + Math.floor(i / 3)).toISOString(),
    from: `Sender ${i} <s${i}@remote.test>`,
    to: mailbox,
    subject: i % 10 === 0 ? `invoice ${i}` : `message ${i}`,
    snippet: `body of ${i}`,
    hasAttachments: false,
    seen: i % 2 === 0,
    verdicts: UNCHECKED_VERDICTS,
    tags: [],
    recipient: mailbox,
    parseFailed: false,
    sesMessageId: `bulk-${i}`,
  };
}

describe('LIST pagination over 2,500 messages while mail arrives and is deleted', () => {
  let env: ApiTestEnv;
  let token: string;
  let initial: MessageEntry[];

  before(async () => {
    env = await startApiTestEnv();
    token = await env.token(MAILBOX);
    const base = Date.now() - 3_600_000;
    initial = Array.from({ length: COUNT }, (_, i) => entry(i, base));
    for (const e of initial) assert.equal((await env.runtime.index.deliver(e)).inserted, true);
    initial.sort((a, b) => (a.id < b.id ? 1 : -1));
  });
  after(async () => env?.close());

  const page = async (query: string) => {
    const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages?${query}`, { token });
    assert.equal(res.status, 200, query);
    return messageListSchema.parse(await res.json());
  };

  it('no duplicates and no gaps, newest first, across pages of several sizes', async () => {
    const deletedBeforeReached = new Set<string>();
    const deletedAfterSeen = new Set<string>();
    const arrived: string[] = [];
    const walked: string[] = [];
    let cursor: string | null = null;
    let round = 0;
    const limits = [1, 7, 100, 250, 1000, 33];
    do {
      const limit: number = limits[round % limits.length] ?? 100;
      const p = await page(
        cursor === null ? `limit=${limit}` : `limit=${limit}&cursor=${encodeURIComponent(cursor)}`,
      );
      assert.ok(p.items.length <= limit);
      walked.push(...p.items.map((i) => i.id));
      cursor = p.nextCursor;
      round += 1;

      // Between pages: new mail through the real pipeline, one deletion ahead of the cursor, one behind it.
      const r = await env.deliver([MAILBOX], Buffer.from(`Subject: arrived ${round}\r\n\r\nnew mail\r\n`));
      arrived.push(r.id);
      const last = walked.at(-1);
      const ahead = initial.find((e) => last !== undefined && e.id < last && !deletedBeforeReached.has(e.id));
      if (ahead && round % 2 === 0) {
        const del = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${ahead.id}`, {
          token,
          method: 'DELETE',
        });
        assert.equal(del.status, 204);
        deletedBeforeReached.add(ahead.id);
      }
      const behind = walked[Math.floor(walked.length / 2)];
      if (behind !== undefined && !deletedAfterSeen.has(behind) && !arrived.includes(behind)) {
        const del = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${behind}`, {
          token,
          method: 'DELETE',
        });
        assert.equal(del.status, 204);
        deletedAfterSeen.add(behind);
      }
    } while (cursor !== null);

    assert.ok(round > 10, `walked ${round} pages`);
    assert.equal(new Set(walked).size, walked.length, 'no message twice');
    for (let i = 1; i < walked.length; i++) {
      assert.ok((walked[i - 1] ?? '') > (walked[i] ?? ''), `newest first at position ${i}`);
    }
    const expected = initial.map((e) => e.id).filter((id) => !deletedBeforeReached.has(id));
    assert.deepEqual(
      walked,
      expected,
      'every message present at the start and not deleted ahead of the cursor',
    );
    for (const id of arrived)
      assert.ok(!walked.includes(id), 'mail newer than the first page is not in this walk');

    // The counters followed every delivery and deletion exactly.
    const stat = statSchema.parse(await (await env.request(`/v1/mailboxes/${MAILBOX}`, { token })).json());
    const deleted = new Set([...deletedBeforeReached, ...deletedAfterSeen]);
    const remainingInitial = initial.filter((e) => !deleted.has(e.id));
    let arrivedBytes = 0;
    for (const id of arrived) arrivedBytes += (await env.runtime.index.get(MAILBOX, id))?.size ?? 0;
    assert.deepEqual(stat, {
      address: MAILBOX,
      messages: remainingInitial.length + arrived.length,
      bytes: remainingInitial.reduce((n, e) => n + e.size, 0) + arrivedBytes,
    });

    // A fresh walk from the top now starts with the mail that arrived, newest first.
    const top = await page(`limit=${arrived.length}`);
    assert.deepEqual(
      top.items.map((i) => i.id),
      [...arrived].reverse(),
    );
  });

  it('filters (unseen, q) page without duplicates or gaps too', async () => {
    const all = await env.runtime.index.list(MAILBOX, { limit: 1000 });
    assert.ok(all.items.length > 0);
    for (const [query, keep] of [
      ['unseen=true', (e: MessageEntry) => !e.seen],
      ['q=INVOICE', (e: MessageEntry) => e.subject.includes('invoice')],
    ] as const) {
      const expected: string[] = [];
      let c: string | null = null;
      do {
        const p = await env.runtime.index.list(MAILBOX, { limit: 1000, ...(c ? { cursor: c } : {}) });
        expected.push(...p.items.filter(keep).map((e) => e.id));
        c = p.nextCursor;
      } while (c !== null);
      const walked: string[] = [];
      let cursor: string | null = null;
      do {
        const p = await page(
          `${query}&limit=97${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`,
        );
        walked.push(...p.items.map((i) => i.id));
        cursor = p.nextCursor;
      } while (cursor !== null);
      assert.ok(expected.length > 100, query);
      assert.deepEqual(walked, expected, query);
    }
  });
});

describe('GET /v1/mailboxes pages like LIST: limit, cursor, nextCursor', () => {
  let env: ApiTestEnv;
  let admin: string;
  /** What the list must show, in order: every address once, its sent view folded in. */
  const expected: {
    address: string;
    messages: number;
    bytes: number;
    sent: { messages: number; bytes: number };
  }[] = [];

  before(async () => {
    env = await startApiTestEnv();
    admin = await env.token(null, { admin: true });
    // 1,050 addresses (more than the largest page) with [inbox, sent] messages: a sent view on
    // every seventh, sent mail only on every fiftieth, and the same local part at longer domains,
    // whose keys sort between an address and its sent view ('-' and '.' come before '/').
    const mail = new Map<string, readonly [number, number]>();
    for (let i = 0; i < 1050; i++) {
      mail.set(
        `u${String(i).padStart(4, '0')}@example.test`,
        i % 50 === 1 ? [0, 1] : [1, i % 7 === 1 ? 1 : 0],
      );
    }
    mail.set('u0003@example.test', [2, 0]);
    mail.set('u0001@example.test-mail.org', [1, 0]);
    mail.set('u0001@example.test.org', [1, 1]);
    mail.set('u0002@example.test.org', [0, 1]);
    const base = Date.now() - 3_600_000;
    let n = 0;
    for (const [address, [inbox, sent]] of mail) {
      const item = { address, messages: 0, bytes: 0, sent: { messages: 0, bytes: 0 } };
      for (const [key, count, counters] of [
        [address, inbox, item],
        [sentMailboxKey(address), sent, item.sent],
      ] as const) {
        for (let m = 0; m < count; m++) {
          const e = entry(n++, base, key);
          assert.equal((await env.runtime.index.deliver(e)).inserted, true);
          counters.messages += 1;
          counters.bytes += e.size;
        }
      }
      expected.push(item);
    }
    // The configured mailboxes (alice, bob, carol) have no mail here: listed all the same, with zeros.
    for (const address of API_TEST_CONFIG.mailboxes ?? []) {
      expected.push({ address, messages: 0, bytes: 0, sent: { messages: 0, bytes: 0 } });
    }
    expected.sort((a, b) => (a.address < b.address ? -1 : 1));
  });
  after(async () => env?.close());

  const get = (query: string) => env.request(`/v1/mailboxes${query}`, { token: admin });
  const page = async (query: string) => {
    const res = await get(query);
    assert.equal(res.status, 200, query);
    return mailboxListSchema.parse(await res.json());
  };

  it('limit 2 walks every mailbox once, by address, two a page, and the last page has no cursor', async () => {
    const walked: (typeof expected)[number][] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const p = await page(`?limit=2${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
      pages += 1;
      if (p.nextCursor !== null) assert.equal(p.items.length, 2, `page ${pages} is full`);
      walked.push(...p.items);
      cursor = p.nextCursor;
    } while (cursor !== null);
    assert.equal(pages, Math.ceil(expected.length / 2));
    assert.deepEqual(walked, expected);
    assert.deepEqual(
      walked
        .filter((m) => m.address.startsWith('u0001@'))
        .map((m) => [m.address, m.messages, m.sent.messages]),
      [
        ['u0001@example.test', 0, 1],
        ['u0001@example.test-mail.org', 1, 0],
        ['u0001@example.test.org', 1, 1],
      ],
      'an address with sent mail only is listed, its sent view folded in, before its longer domains',
    );
  });

  it('without limit a page holds 100 mailboxes; the cursor goes on from there', async () => {
    const first = await page('');
    assert.deepEqual(first.items, expected.slice(0, 100));
    assert.ok(first.nextCursor !== null);
    const second = await page(`?cursor=${encodeURIComponent(first.nextCursor)}`);
    assert.deepEqual(second.items, expected.slice(100, 200));
  });

  it('limit 1000 is the largest page; more is refused like a LIST limit', async () => {
    const first = await page('?limit=1000');
    assert.deepEqual(first.items, expected.slice(0, 1000));
    assert.ok(first.nextCursor !== null);
    const rest = await page(`?limit=1000&cursor=${encodeURIComponent(first.nextCursor)}`);
    assert.deepEqual(rest.items, expected.slice(1000));
    assert.equal(rest.nextCursor, null);
    for (const limit of ['1001', '0', 'ten', '1e2']) {
      const res = await get(`?limit=${limit}`);
      assert.equal(res.status, 400, limit);
      assert.equal((await errorOf(res)).code, 'invalid_request', limit);
    }
  });

  it('a bad cursor is a 400 invalid_cursor, as on LIST (a LIST cursor too)', async () => {
    const list = await env.request('/v1/mailboxes/u0003@example.test/messages?limit=1', { token: admin });
    const listCursor = messageListSchema.parse(await list.json()).nextCursor;
    assert.ok(listCursor !== null);
    const listBad = await env.request('/v1/mailboxes/u0003@example.test/messages?cursor=garbage!!', {
      token: admin,
    });
    assert.equal(listBad.status, 400);
    const listCode = (await errorOf(listBad)).code;
    assert.equal(listCode, 'invalid_cursor');
    for (const cursor of ['garbage!!', listCursor, Buffer.from('{"v":1}').toString('base64url')]) {
      const res = await get(`?cursor=${encodeURIComponent(cursor)}`);
      assert.equal(res.status, 400, cursor);
      assert.equal((await errorOf(res)).code, listCode, cursor);
    }
  });
});
