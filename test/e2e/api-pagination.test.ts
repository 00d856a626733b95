/**
 * LIST over 2,500 messages while the mailbox changes under the cursor: new mail arrives and old
 * mail is deleted between pages. A client paging from the top must see every message that existed
 * when it started and was not deleted before it got there, exactly once, in order.
 * The 2,500 entries go straight into the index (the pipeline is exercised elsewhere); the mail that
 * arrives during the walk comes through the real pipeline.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { messageListSchema, statSchema } from '../../functions/api/schemas.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import type { MessageEntry } from '../../functions/ports/mailbox-index.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';

const MAILBOX = 'alice@example.test';
const COUNT = 2500;

function entry(i: number, baseMs: number): MessageEntry {
  return {
    mailbox: MAILBOX,
    // Several messages per millisecond, as a burst of mail gets: ordering then rests on the id's random half.
    id: messageIdFor(baseMs + Math.floor(i / 3), `bulk-${i}`),
    size: 1000 + i,
    crlfSize: 1000 + i,
    receivedAt: new Date(baseMs + Math.floor(i / 3)).toISOString(),
    from: `Sender ${i} <s${i}@remote.test>`,
    to: MAILBOX,
    subject: i % 10 === 0 ? `invoice ${i}` : `message ${i}`,
    snippet: `body of ${i}`,
    hasAttachments: false,
    seen: i % 2 === 0,
    verdicts: UNCHECKED_VERDICTS,
    tags: [],
    recipient: MAILBOX,
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
