/**
 * Without a smarthost, forwards land in the outbox, and `mail-relay outbox` shows them like a
 * mailbox: what would have been sent, to whom, with which subject.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { listOutbox } from '../../functions/adapters/local/outbox-outbound.ts';
import { ingest } from '../../functions/local/ingest.ts';
import { commandOutbox } from '../../functions/local/outbox.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { startTestRelay, type TestRelay } from '../helpers/relay.ts';

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

describe('the outbox: forwards when no smarthost is configured', () => {
  let relay: TestRelay;
  before(async () => {
    relay = await startTestRelay({
      domains: ['example.test'],
      mailboxes: ['alice@example.test'],
      routes: [{ match: 'boss@example.test', action: 'forward', to: ['boss@remote.test'] }],
    });
  });
  after(async () => relay.close());

  it('lists what would have been sent, newest first, and shows one message raw', async () => {
    for (const subject of ['first', 'Grüße zweite']) {
      const r = await ingest(relay.runtime, {
        body: Buffer.from(
          `From: Alice <alice@origin.test>\r\nTo: boss@example.test\r\nSubject: ${subject}\r\n\r\nhi\r\n`,
        ),
        mailFrom: 'alice@origin.test',
        recipients: ['boss@example.test'],
        via: { protocol: 'LOCAL' },
      });
      assert.deepEqual(
        r.outcomes.map((o) => o.status),
        ['forwarded'],
      );
      // The listing orders by write time (milliseconds): keep the two apart.
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const items = await listOutbox(relay.runtime.blobs);
    assert.deepEqual(
      items.map((i) => [i.subject, i.headerFrom, i.from, i.to]),
      [
        [
          'Grüße zweite',
          '"Alice via example.test" <forwarder@example.test>',
          'forwarder@example.test',
          ['boss@remote.test'],
        ],
        [
          'first',
          '"Alice via example.test" <forwarder@example.test>',
          'forwarder@example.test',
          ['boss@remote.test'],
        ],
      ],
    );

    const out = capture();
    const err = capture();
    const env = { ...process.env, MAIL_RELAY_DATA_DIR: relay.dataDir };
    assert.equal(await commandOutbox([], { out: out.stream, err: err.stream, env }), 0);
    assert.match(out.text(), /Subject: Grüße zweite\n[\s\S]*Subject: first\n/);
    assert.match(out.text(), /To: {6}boss@remote\.test \(envelope from forwarder@example\.test\)/);
    assert.match(out.text(), /Show: {4}mail-relay outbox show [0-9a-f]{32}\n/);

    const first = items[1];
    assert.ok(first);
    const shown = capture();
    assert.equal(
      await commandOutbox(['show', first.messageId], { out: shown.stream, err: err.stream, env }),
      0,
    );
    assert.match(
      shown.text(),
      // The message had no Date or Message-ID: the forward carries ours (ADR 8).
      /^X-Loop: forwarder@example\.test\r\n[\s\S]*\r\nSubject: first\r\nDate: [^\r\n]+\r\nMessage-ID: <\w+\.forwarded@example\.test>\r\n\r\nhi\r\n$/,
    );
    assert.equal(await commandOutbox(['show', 'nope'], { out: shown.stream, err: err.stream, env }), 2);
    // A mailbox message id (what POST …/send answers as `id`) is not an outbox id: said so.
    const wrong = capture();
    assert.equal(
      await commandOutbox(['show', '01M8FECX0000000000000000AB'], {
        out: shown.stream,
        err: wrong.stream,
        env,
      }),
      2,
    );
    assert.match(wrong.text(), /is a message id of a mailbox[\s\S]*32-hex `messageId`/);
  });

  it('keeps what it holds on disk without the ingest journal: its store syncs every write', async () => {
    // A send is recorded as done by a synced index commit right after the outbox write; the journal
    // brings back received mail only. (A power loss cannot be staged here: this checks the wiring.)
    const { runtime } = relay;
    assert.ok(runtime.journal, 'the test relay runs in journal durability, as `npm start` does');
    assert.equal(runtime.blobs.durability, 'deferred');
    assert.equal(runtime.index.deferredDeliveries, true);
    assert.equal(runtime.unjournaled.blobs.durability, 'sync');
    assert.equal(runtime.unjournaled.index.deferredDeliveries, false);
    const r = await ingest(runtime, {
      body: Buffer.from('From: a@origin.test\r\nTo: boss@example.test\r\nSubject: synced\r\n\r\nhi\r\n'),
      mailFrom: 'a@origin.test',
      recipients: ['boss@example.test'],
      via: { protocol: 'LOCAL' },
    });
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['forwarded'],
    );
    const items = await listOutbox(runtime.unjournaled.blobs);
    assert.ok(items.some((i) => i.subject === 'synced'));
  });
});

describe('the outbox: mail sent to our own domains comes back in, as through our MX', () => {
  let env: ApiTestEnv;
  before(async () => {
    env = await startApiTestEnv({
      config: { domains: ['example.test'], mailboxes: ['alice@example.test', 'bob@example.test'] },
    });
  });
  after(async () => env?.close());

  it('POST …/send to a remote and a local recipient: both in the outbox, and the local one in its inbox', async () => {
    const alice = await env.token('alice@example.test');
    const bob = await env.token('bob@example.test');
    const res = await env.request('/v1/mailboxes/alice@example.test/send', {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        to: 'carol@remote.test',
        bcc: 'bob@example.test',
        subject: 'lunch?',
        text: 'at noon\n',
      }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    const { messageId } = (await res.json()) as { messageId: string };
    const [item] = await listOutbox(env.runtime.unjournaled.blobs);
    assert.equal(item?.messageId, messageId);
    assert.deepEqual(item?.to, ['carol@remote.test', 'bob@example.test']);

    const list = (await (
      await env.request('/v1/mailboxes/bob@example.test/messages', { token: bob })
    ).json()) as {
      items: { id: string; subject: string; from: string }[];
    };
    assert.deepEqual(
      list.items.map((i) => [i.subject, i.from]),
      [['lunch?', 'alice@example.test']],
    );
    const raw = await (
      await env.request(`/v1/mailboxes/bob@example.test/messages/${list.items[0]?.id}/raw`, { token: bob })
    ).text();
    assert.doesNotMatch(raw, /^Bcc:/im, 'a Bcc recipient does not see the Bcc header');
    assert.match(raw, /^Received: from localhost/m, 'it came in like any received mail');
    // The sender's own mailbox got nothing: only the addressed local recipient.
    const stat = (await (await env.request('/v1/mailboxes/alice@example.test', { token: alice })).json()) as {
      messages: number;
    };
    assert.equal(stat.messages, 0);
  });

  it('a recipient in our own domains that the relay refuses: 422 recipient_refused, and nothing is sent to anyone', async () => {
    const alice = await env.token('alice@example.test');
    const bob = await env.token('bob@example.test');
    const before = (await listOutbox(env.runtime.unjournaled.blobs)).length;
    const res = await env.request('/v1/mailboxes/alice@example.test/send', {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        to: ['bob@example.test', 'carol@remote.test'],
        cc: 'nobody@example.test',
        subject: 'typo',
        text: 'hi\n',
      }),
    });
    assert.equal(res.status, 422, await res.clone().text());
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(error.code, 'recipient_refused');
    assert.match(error.message, /nobody@example\.test \(550 5\.1\.1 /);
    assert.doesNotMatch(error.message, /bob@|carol@/, 'only the refused address is named');
    assert.equal((await listOutbox(env.runtime.unjournaled.blobs)).length, before, 'nothing in the outbox');
    const bobs = (await (
      await env.request('/v1/mailboxes/bob@example.test/messages', { token: bob })
    ).json()) as {
      items: { subject: string }[];
    };
    assert.ok(!bobs.items.some((i) => i.subject === 'typo'), 'nothing delivered either');
  });
});
