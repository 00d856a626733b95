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
      /^X-Loop: forwarder@example\.test\r\n[\s\S]*\r\nSubject: first\r\n\r\nhi\r\n$/,
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
