/**
 * `mail-relay reparse` on the local data dir, beside a running relay (the API test env: the real
 * runtime, SMTP listener and HTTP API), checked through the HTTP API as a mail client sees it.
 *
 * Stored mail is first made to look as an older parser left it: a GB2312 Subject and From (raw 8-bit
 * header bytes, as Chinese senders write them) read as UTF-8, i.e. U+FFFDs, in the summary and in
 * the index entry (LIST, `q`), and the text body counted as part 1, which moved the attachment to
 * part 2. After `reparse` the API shows the current parse; ids, order, seen flags, STAT and the raw
 * bytes are as they were.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RawConfig } from '../../functions/core/config.ts';
import { mailboxKeys, sentMailboxKey } from '../../functions/core/keys.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { reparse } from '../../functions/pipeline/reparse.ts';
import { deliverToMailbox } from '../../functions/pipeline/router.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import type { MailParser } from '../../functions/ports/mail-parser.ts';
import { type ApiTestEnv, runMailRelayCli, startApiTestEnv } from '../helpers/api.ts';
import { ATTACHMENT, gbMessage, makeStale, SENDER_NOW, SUBJECT_NOW } from '../helpers/stale-parse.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const CONFIG: RawConfig = { domains: ['example.test'], mailboxes: [ALICE, BOB] };

interface Item {
  id: string;
  from: string;
  subject: string;
  snippet: string;
  seen: boolean;
}

interface Message {
  subject: string;
  from: string;
  addresses: { from: { name: string; address: string }[] };
  text: string;
  headers: { name: string; value: string }[];
  attachments: { partId: string; filename: string | null; size: number }[];
}

describe('mail-relay reparse (local data dir, beside a running relay)', () => {
  let env: ApiTestEnv;
  let token: string;
  before(async () => {
    env = await startApiTestEnv({ config: CONFIG });
    token = await env.token(ALICE);
  });
  after(async () => {
    await env.close();
  });

  const cli = (args: string[]) => runMailRelayCli(env.dataDir, CONFIG, args);
  const api = async <T>(path: string): Promise<T> => {
    const res = await env.request(`/v1/mailboxes/${ALICE}${path}`, { token });
    assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
    return (await res.json()) as T;
  };
  const list = async (query = '') => (await api<{ items: Item[] }>(`/messages${query}`)).items;
  const part = (id: string, partId: string, view = '') =>
    env.request(`/v1/mailboxes/${ALICE}/messages/${id}/parts/${partId}${view}`, { token });
  const raw = async (id: string, view = '') => {
    const res = await env.request(`/v1/mailboxes/${ALICE}/messages/${id}/raw${view}`, { token });
    assert.equal(res.status, 200);
    return Buffer.from(await res.arrayBuffer());
  };

  it('rewrites what an older parser stored: GET message, LIST, q and parts show the new parse; ids, order, seen, STAT and raw stay', async () => {
    const at = (minute: number) => new Date(Date.UTC(2026, 0, 5, 9, minute));
    const gb1 = await env.deliver([ALICE], gbMessage(1), at(1));
    const plain = await env.deliver([ALICE], Buffer.from('Subject: plain\r\n\r\nup to date\r\n'), at(2));
    const gb2 = await env.deliver([ALICE], gbMessage(2), at(3));
    const gone = await env.deliver([ALICE], gbMessage(3), at(4));
    // A copy of a sent message, in the sent view.
    const sent = await deliverToMailbox(env.runtime, {
      mailbox: sentMailboxKey(ALICE),
      id: gb1.id,
      raw: gbMessage(4),
      parsed: await env.runtime.parser.parse(gbMessage(4)),
      firstCopy: null,
      entry: {
        receivedAt: at(1).toISOString(),
        verdicts: UNCHECKED_VERDICTS,
        tags: [],
        quarantineReasons: undefined,
        recipient: ALICE,
        plusTag: undefined,
        sesMessageId: 'sent-1',
      },
    });
    assert.equal(sent, 'delivered');
    for (const [mailbox, id] of [
      [ALICE, gb1.id],
      [ALICE, gb2.id],
      [ALICE, gone.id],
      [sentMailboxKey(ALICE), gb1.id],
    ] as const) {
      await makeStale(env.runtime.blobs, env.runtime.index, mailbox, id);
    }
    const patched = await env.request(`/v1/mailboxes/${ALICE}/messages/${gb2.id}`, {
      token,
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ seen: true }),
    });
    assert.equal(patched.status, 200);
    const deleted = await env.request(`/v1/mailboxes/${ALICE}/messages/${gone.id}`, {
      token,
      method: 'DELETE',
    });
    assert.ok(deleted.ok);

    // What the user sees before: U+FFFDs, not found by what the subject says, the attachment as part 2.
    const before = await list();
    assert.ok(before.some((i) => i.subject.includes('\uFFFD')));
    assert.deepEqual(await list(`?q=${encodeURIComponent('全新原装')}`), []);
    const statBefore = await api<{ messages: number; bytes: number }>('');
    const rawBefore = await raw(gb1.id);
    // A client (a browser) keeps part 1 as the old parse numbered it: the text body.
    const cachedPart = await part(gb1.id, '1');
    assert.equal(cachedPart.status, 200);
    assert.equal(
      cachedPart.headers.get('cache-control'),
      'private, no-cache',
      'kept, but asked again each time',
    );
    const cachedEtag = cachedPart.headers.get('etag') ?? '';

    const first = await cli(['reparse']);
    assert.equal(first.code, 0, first.stderr);
    // gb1, gb2 and the sent copy; the plain message was parsed as this parser parses it.
    assert.equal(first.stdout, 'reparsed 3 messages in 1 mailbox, 1 unchanged, 0 failed\n');
    assert.match(first.stderr, /^reparsing mail in .*\n4\/4\n$/);

    const items = await list();
    assert.deepEqual(
      items.map((i) => [i.id, i.seen]),
      before.map((i) => [i.id, i.seen]),
      'same ids, same order, same seen flags',
    );
    assert.deepEqual(
      items.map((i) => i.id),
      [gb2.id, plain.id, gb1.id],
    );
    for (const item of items.filter((i) => i.id !== plain.id)) {
      assert.match(item.subject, /^全新原装 offer [12]$/);
      assert.match(item.from, /^台湾形龙 <sales[12]@e34\.test>$/);
      assert.match(item.snippet, /^全新原装 body [12]$/);
    }
    assert.deepEqual(
      (await list(`?q=${encodeURIComponent('全新原装')}`)).map((i) => i.id),
      [gb2.id, gb1.id],
    );
    assert.deepEqual((await list(`?q=${encodeURIComponent('台湾形龙')}`)).length, 2);
    assert.deepEqual(await list(`?q=${encodeURIComponent('\uFFFD')}`), []);

    const message = await api<Message>(`/messages/${gb1.id}`);
    assert.equal(message.subject, `${SUBJECT_NOW} 1`);
    assert.equal(message.from, `${SENDER_NOW} <sales1@e34.test>`);
    assert.equal(message.addresses.from[0]?.name, SENDER_NOW);
    assert.equal(message.text.trim(), '全新原装 body 1');
    assert.equal(message.headers.find((h) => h.name === 'Subject')?.value, `${SUBJECT_NOW} 1`);
    assert.deepEqual(
      message.attachments.map((a) => [a.partId, a.filename, a.size]),
      [['1', 'data.bin', ATTACHMENT.length]],
    );
    const one = await part(gb1.id, '1');
    assert.equal(one.status, 200);
    assert.deepEqual(Buffer.from(await one.arrayBuffer()), ATTACHMENT);
    // Asked again with what it kept, the client is given the new part 1, not told to keep the old.
    const revalidated = await env.request(`/v1/mailboxes/${ALICE}/messages/${gb1.id}/parts/1`, {
      token,
      headers: { 'If-None-Match': cachedEtag },
    });
    assert.equal(revalidated.status, 200);
    assert.deepEqual(Buffer.from(await revalidated.arrayBuffer()), ATTACHMENT);
    // The old numbering's part 2 is gone: not named, not served.
    assert.equal((await part(gb1.id, '2')).status, 404);
    assert.equal(await env.runtime.blobs.head(mailboxKeys.part(ALICE, gb1.id, '2')), null);

    // The sent view too.
    const sentCopy = await api<Message>(`/messages/${gb1.id}?view=sent`);
    assert.equal(sentCopy.subject, `${SUBJECT_NOW} 4`);
    assert.equal((await part(gb1.id, '1', '?view=sent')).status, 200);
    assert.equal((await part(gb1.id, '2', '?view=sent')).status, 404);

    assert.deepEqual(await api(''), statBefore, 'STAT unchanged');
    assert.deepEqual(await raw(gb1.id), rawBefore, 'raw bytes unchanged');
    // Deleted mail stays deleted: no entry, no blobs, not counted.
    const goneRes = await env.request(`/v1/mailboxes/${ALICE}/messages/${gone.id}`, { token });
    assert.equal(goneRes.status, 404);
    assert.equal(await env.runtime.blobs.head(mailboxKeys.summary(ALICE, gone.id)), null);
    assert.equal(await env.runtime.index.deliveryState(ALICE, gone.id), 'deleted');

    const again = await cli(['reparse']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, 'reparsed 0 messages in 1 mailbox, 4 unchanged, 0 failed\n');
    // --mailbox and --since select; mail received before --since is not looked at.
    const some = await cli(['reparse', '--mailbox', 'ALICE@example.test', '--since', '2026-01-05T09:02:00Z']);
    assert.equal(some.code, 0, some.stderr);
    assert.equal(some.stdout, 'reparsed 0 messages in 1 mailbox, 2 unchanged, 0 failed\n');
  });

  it('an interrupted run leaves every message readable (old summary, all its parts served); the next run finishes', async () => {
    const r = await env.deliver([BOB], gbMessage(5), new Date(Date.UTC(2026, 0, 6)));
    await makeStale(env.runtime.blobs, env.runtime.index, BOB, r.id);
    const bobToken = await env.token(BOB);
    const read = async (path: string) =>
      env.request(`/v1/mailboxes/${BOB}/messages/${r.id}${path}`, { token: bobToken });

    // The process dies as it writes the summary: the parts are written, the summary is not.
    const crashing: BlobStore = Object.create(env.runtime.blobs, {
      put: {
        value: async (...args: Parameters<BlobStore['put']>) => {
          if (args[0].endsWith('/summary.json')) throw new Error('killed');
          return env.runtime.blobs.put(...args);
        },
      },
    });
    const interrupted = await reparse({ ...env.runtime, blobs: crashing }, { mailbox: BOB });
    assert.equal(interrupted.failures.length, 1);
    const old = (await (await read('')).json()) as Message;
    assert.ok(old.subject.includes('\uFFFD'), 'the old summary');
    for (const a of old.attachments) assert.equal((await read(`/parts/${a.partId}`)).status, 200, a.partId);

    // Dies after the index entry, before the old part 2 is removed: the new summary, all its parts.
    const dying: BlobStore = Object.create(env.runtime.blobs, {
      delete: {
        value: async () => {
          throw new Error('killed');
        },
      },
    });
    const later = await reparse({ ...env.runtime, blobs: dying }, { mailbox: BOB });
    assert.equal(later.failures.length, 1);
    const now = (await (await read('')).json()) as Message;
    assert.equal(now.subject, `${SUBJECT_NOW} 5`);
    for (const a of now.attachments) assert.equal((await read(`/parts/${a.partId}`)).status, 200, a.partId);

    const done = await runMailRelayCli(env.dataDir, CONFIG, ['reparse', '--mailbox', BOB]);
    assert.equal(done.stdout, 'reparsed 1 message in 1 mailbox, 0 unchanged, 0 failed\n', done.stderr);
    assert.equal(
      await env.runtime.blobs.head(mailboxKeys.part(BOB, r.id, '2')),
      null,
      'the stale part removed',
    );
    const final = await runMailRelayCli(env.dataDir, CONFIG, ['reparse', '--mailbox', BOB]);
    assert.equal(final.stdout, 'reparsed 0 messages in 1 mailbox, 1 unchanged, 0 failed\n');
  });

  it('a message deleted while it is reparsed stays deleted, blobs and all; mail delivered meanwhile is untouched', async () => {
    const victim = await env.deliver([BOB], gbMessage(6), new Date(Date.UTC(2026, 0, 7)));
    await makeStale(env.runtime.blobs, env.runtime.index, BOB, victim.id);
    const statBefore = await env.runtime.index.stat(BOB);
    let arrived: string | undefined;
    // DELETE (as the API does it: the entry, then the blobs) is done while the reparse parses, after
    // it read the entry and before its writes; a new message arrives at the same moment.
    const racing: MailParser = {
      parse: async (raw) => {
        if (raw.includes('sales6@')) {
          assert.ok(await env.runtime.index.delete(BOB, victim.id));
          await env.runtime.blobs.deletePrefix(mailboxKeys.dir(BOB, victim.id));
          await env.runtime.blobs.delete(mailboxKeys.raw(BOB, victim.id));
          arrived = (await env.deliver([BOB], gbMessage(7), new Date(Date.UTC(2026, 0, 8)))).id;
        }
        return env.runtime.parser.parse(raw);
      },
    };
    const summary = await reparse({ ...env.runtime, parser: racing }, { mailbox: BOB });
    assert.deepEqual(summary.failures, []);
    assert.equal(summary.gone, 1);
    assert.equal(await env.runtime.index.get(BOB, victim.id), null);
    const left: string[] = [];
    for await (const b of env.runtime.blobs.list(mailboxKeys.prefix(BOB))) {
      if (b.key.includes(victim.id)) left.push(b.key);
    }
    assert.deepEqual(left, [], 'no blob of the deleted message written back');
    assert.ok(arrived);
    const stat = await env.runtime.index.stat(BOB);
    assert.equal(stat.messages, statBefore.messages, 'one deleted, one arrived');
    const bobToken = await env.token(BOB);
    const res = await env.request(`/v1/mailboxes/${BOB}/messages/${arrived}`, { token: bobToken });
    assert.equal(((await res.json()) as Message).subject, `${SUBJECT_NOW} 7`);
  });

  it('a --mailbox with no mail says so (a mistyped address would otherwise look like success)', async () => {
    const r = await cli(['reparse', '--mailbox', 'nobody@example.test']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'reparsed 0 messages in 1 mailbox, 0 unchanged, 0 failed\n');
    assert.match(r.stderr, /\nno mail stored for nobody@example\.test \(inbox or sent view\)\n$/);
  });

  it('help, and bad arguments are usage errors (exit 2)', async () => {
    const help = await cli(['help', 'reparse']);
    assert.equal(help.code, 0);
    assert.match(
      help.stdout,
      /^Usage: mail-relay reparse \[--mailbox <address>\] \[--since <time>\] \[--stack <name>\]/,
    );
    assert.equal((await cli(['reparse', '--help'])).stdout, help.stdout);
    assert.match((await cli(['--help'])).stdout, /\n {2}reparse \[--mailbox <address>\]/);
    for (const bad of [
      ['reparse', '--since', 'last tuesday'],
      ['reparse', '--mailbox', 'not an address'],
      ['reparse', '--bogus'],
      ['reparse', 'alice@example.test'],
      ['reparse', '--stack='],
    ]) {
      const r = await cli(bad);
      assert.equal(r.code, 2, bad.join(' '));
      assert.match(r.stderr, /^mail-relay reparse: /, bad.join(' '));
      assert.equal(r.stdout, '');
    }
  });
});
