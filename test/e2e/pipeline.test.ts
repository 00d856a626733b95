/**
 * The router with the real local adapters: idempotent redelivery of one notification, one message
 * fanned out to several mailboxes (server-side copies), and a message mailparser cannot read still
 * delivered raw and flagged.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MAX_HEADER_BYTES } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { deleteMessageBlobs, mailboxKeys, type StoredSummary } from '../../functions/core/keys.ts';
import { buildNotification } from '../../functions/core/notification.ts';
import { UNCHECKED_VERDICTS, type Verdicts } from '../../functions/core/routing.ts';
import { ingest, LOCAL_BUCKET } from '../../functions/local/ingest.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import {
  countOutcomes,
  MissingRawMessageError,
  notificationKey,
  processNotification,
} from '../../functions/pipeline/router.ts';
import { buildMessageWithAttachment, pdfLikeBytes } from '../fixtures/build.ts';
import { listAll } from '../helpers/relay.ts';

const config = parseConfig({
  domains: ['example.test'],
  mailboxes: ['alice@example.test', 'bob@example.test', 'carol@example.test'],
  routes: [{ match: 'team@example.test', action: 'deliver', to: ['alice@example.test', 'bob@example.test'] }],
});

/** A message whose header block is above the parser's limit (mailparser gives up on it), filled with `fill`. */
function beyondTheParser(subject: string, fill: string): Buffer {
  const huge = `X-Filler: ${fill.repeat(990)}\r\n`.repeat(Math.ceil(MAX_HEADER_BYTES / 1000) + 10);
  return Buffer.from(`Subject: ${subject}\r\n${huge}\r\nthe body\r\n`);
}

describe('router with the local adapters', () => {
  let dir: string;
  let runtime: LocalRuntime;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mr-pipeline-'));
    runtime = createLocalRuntime({ config, dataDir: dir });
  });
  after(async () => {
    await runtime.close();
    rmSync(dir, { recursive: true, force: true });
  });
  /** A message as the SMTP listener takes it: null sender, these recipients. */
  const ingestOverSmtp = (body: Buffer, recipients: string[]) =>
    ingest(runtime, { body, mailFrom: '', recipients, via: { protocol: 'ESMTP' } });
  /** As SES leaves a message: its bytes under `inbound/`, and the notification of it, received now. */
  const storedBySes = async (
    sesMessageId: string,
    raw: Buffer,
    recipients: string[],
    verdicts: Verdicts = UNCHECKED_VERDICTS,
  ) => {
    await runtime.blobs.put(`inbound/${sesMessageId}`, raw);
    return buildNotification({
      sesMessageId,
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients,
      verdicts,
      bucketName: LOCAL_BUCKET,
    });
  };

  it('processes the same notification twice into exactly one message with exact counters', async () => {
    const body = Buffer.from('Subject: twice\r\n\r\nhello\r\n');
    const first = await ingest(runtime, {
      body,
      mailFrom: 'x@remote.test',
      recipients: ['carol@example.test'],
      via: { protocol: 'ESMTP' },
    });
    const notification = buildNotification({
      sesMessageId: first.sesMessageId,
      receivedAt: new Date(
        Date.parse((await runtime.index.get('carol@example.test', first.id))?.receivedAt ?? ''),
      ),
      mailFrom: 'x@remote.test',
      recipients: ['carol@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    const again = await processNotification(runtime, notification);
    const third = await processNotification(runtime, notification, { replay: true });
    assert.equal(again.id, first.id);
    assert.deepEqual(
      [first, again, third].map((r) => r.outcomes.map((o) => o.status)),
      [['delivered'], ['duplicate'], ['duplicate']],
    );
    assert.equal(again.outcomes[0]?.detail, undefined, 'present, not "deleted since"');
    const entries = await listAll(runtime.index, 'carol@example.test');
    assert.equal(entries.length, 1);
    assert.equal(entries[0]?.seen, false, 'new mail is unseen');
    assert.deepEqual(await runtime.index.stat('carol@example.test'), {
      address: 'carol@example.test',
      messages: 1,
      bytes: entries[0]?.size,
    });
  });

  it('two concurrent processings of one notification (an SQS redelivery racing the first) report one delivery and one duplicate', async () => {
    const sesMessageId = 'concurrent0000000000000000000000000000000';
    const notification = await storedBySes(sesMessageId, Buffer.from('Subject: raced\r\n\r\nonce\r\n'), [
      'carol@example.test',
    ]);
    // Both read the index before either writes: both find no entry, and the conditional insert decides.
    let arrived = 0;
    let release: () => void = () => undefined;
    const bothArrived = new Promise<void>((resolve) => {
      release = resolve;
    });
    const racing = Object.create(runtime.index) as typeof runtime.index;
    racing.deliveryState = async (mailbox, id) => {
      const state = await runtime.index.deliveryState(mailbox, id);
      arrived += 1;
      if (arrived === 2) release();
      await bothArrived;
      return state;
    };
    const deps = { ...runtime, index: racing };
    const results = await Promise.all([
      processNotification(deps, notification),
      processNotification(deps, notification),
    ]);
    assert.deepEqual(results.map((r) => r.outcomes.map((o) => o.status)[0]).sort(), [
      'delivered',
      'duplicate',
    ]);
    assert.equal(countOutcomes(results).delivered, 1);
    assert.equal(
      (await listAll(runtime.index, 'carol@example.test')).filter((e) => e.sesMessageId === sesMessageId)
        .length,
      1,
    );
  });

  it('keeps both notifications of a message two receipt rules notified (one per recipient set); replay routes both', async () => {
    // Where receipt rules list addresses (100 per rule), a message to addresses of two rules is
    // stored once by SES and notified by each rule with its own recipients.
    const sesMessageId = 'two-rules-0001';
    const receivedAt = new Date(Date.UTC(2026, 10, 27, 9, 0));
    await runtime.blobs.put(`inbound/${sesMessageId}`, Buffer.from('Subject: two rules\r\n\r\nhi\r\n'));
    const byRule = (recipients: string[]) =>
      buildNotification({
        sesMessageId,
        receivedAt,
        mailFrom: 'x@remote.test',
        recipients,
        verdicts: UNCHECKED_VERDICTS,
        bucketName: LOCAL_BUCKET,
      });
    const rule1 = byRule(['alice@example.test']);
    const rule2 = byRule(['bob@example.test']);
    await processNotification(runtime, rule1);
    await processNotification(runtime, rule2);
    assert.notEqual(notificationKey(rule1), notificationKey(rule2));
    assert.ok(await runtime.blobs.head(notificationKey(rule1)), 'the first is not overwritten');
    assert.ok(await runtime.blobs.head(notificationKey(rule2)));
    // Deleted from both mailboxes, the message comes back to both on `replay --restore-deleted`.
    const { replay } = await import('../../functions/pipeline/replay.ts');
    for (const mailbox of ['alice@example.test', 'bob@example.test']) {
      const entry = (await listAll(runtime.index, mailbox)).find((e) => e.sesMessageId === sesMessageId);
      assert.ok(entry, mailbox);
      assert.ok(await runtime.index.delete(mailbox, entry.id));
    }
    await replay(runtime, { since: new Date(0), restoreDeleted: true, mailbox: undefined });
    for (const mailbox of ['alice@example.test', 'bob@example.test']) {
      assert.equal(
        (await listAll(runtime.index, mailbox)).filter((e) => e.sesMessageId === sesMessageId).length,
        1,
        mailbox,
      );
    }
  });

  it('fans one message out to several mailboxes, each with its own raw copy, summary and parts', async () => {
    const pdf = pdfLikeBytes(50_000, 7);
    const body = await buildMessageWithAttachment({
      attachmentBytes: pdf,
      filename: 'report.pdf',
      subject: 'fan-out',
    });
    const r = await ingestOverSmtp(body, ['team@example.test']);
    assert.deepEqual(
      r.outcomes.map((o) => [o.status, o.decision.kind === 'deliver' ? o.decision.mailbox : '']),
      [
        ['delivered', 'alice@example.test'],
        ['delivered', 'bob@example.test'],
      ],
    );
    assert.equal(r.parseFailed, false);
    const digest = createHash('sha256').update(pdf).digest('hex');
    for (const mailbox of ['alice@example.test', 'bob@example.test']) {
      const summary = JSON.parse(
        String(await runtime.blobs.get(mailboxKeys.summary(mailbox, r.id))),
      ) as StoredSummary;
      assert.equal(summary.parseFailed, false);
      const attachment = summary.parseFailed
        ? undefined
        : summary.attachments.find((a) => a.filename === 'report.pdf');
      assert.equal(attachment?.sha256, digest);
      const part = await runtime.blobs.get(mailboxKeys.part(mailbox, r.id, attachment?.partId ?? ''));
      assert.equal(part && createHash('sha256').update(part).digest('hex'), digest);
    }
    // Deleting from one mailbox leaves the other's copy intact.
    await runtime.index.delete('alice@example.test', r.id);
    await runtime.blobs.deletePrefix(mailboxKeys.dir('alice@example.test', r.id));
    await runtime.blobs.delete(mailboxKeys.raw('alice@example.test', r.id));
    assert.ok(await runtime.blobs.get(mailboxKeys.raw('bob@example.test', r.id)));
    assert.ok(await runtime.blobs.get(mailboxKeys.summary('bob@example.test', r.id)));
  });

  it('delivers a message the parser refuses, raw and flagged, and loses nothing', async () => {
    // A header block above the parser's limit: mailparser gives up on it; we still deliver.
    const body = beyondTheParser('unreadable', 'a');
    const r = await ingestOverSmtp(body, ['carol@example.test']);
    assert.equal(r.parseFailed, true);
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['delivered'],
    );
    const entry = await runtime.index.get('carol@example.test', r.id);
    assert.equal(entry?.parseFailed, true);
    const raw = await runtime.blobs.get(mailboxKeys.raw('carol@example.test', r.id));
    assert.ok(raw?.subarray(raw.length - body.length).equals(body));
    const summary = JSON.parse(
      String(await runtime.blobs.get(mailboxKeys.summary('carol@example.test', r.id))),
    ) as StoredSummary;
    assert.equal(summary.parseFailed, true);
    assert.ok(summary.parseFailed && summary.parseError.length > 0);
  });

  it('fans a message the parser refuses out to several mailboxes, each with the raw bytes', async () => {
    const body = beyondTheParser('unreadable for two', 'b');
    const r = await ingestOverSmtp(body, ['team@example.test']);
    assert.equal(r.parseFailed, true);
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['delivered', 'delivered'],
    );
    for (const mailbox of ['alice@example.test', 'bob@example.test']) {
      assert.equal((await runtime.index.get(mailbox, r.id))?.parseFailed, true, mailbox);
      const raw = await runtime.blobs.get(mailboxKeys.raw(mailbox, r.id));
      assert.ok(raw?.subarray(raw.length - body.length).equals(body), mailbox);
    }
  });

  it('commits no entry when one of the concurrent blob writes of a delivery fails; a retry delivers once', async () => {
    // The summary's write fails at once, while the part's (issued with it) is still under way.
    const written: string[] = [];
    const failing = Object.create(runtime.blobs) as typeof runtime.blobs;
    failing.put = async (key, body, options) => {
      if (key.endsWith('/summary.json')) throw new Error('disk full');
      if (key.includes('/parts/')) await new Promise((r) => setTimeout(r, 50));
      await runtime.blobs.put(key, body, options);
      written.push(key);
    };
    const raw = await buildMessageWithAttachment({ subject: 'half', attachmentBytes: pdfLikeBytes(2000) });
    const notification = buildNotification({
      sesMessageId: 'halfwrite00000000000000000000000000000000',
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients: ['carol@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    const before = (await listAll(runtime.index, 'carol@example.test')).length;
    await assert.rejects(
      processNotification({ ...runtime, blobs: failing }, notification, { raw }),
      /disk full/,
    );
    // Every write issued with the failing one had finished when the router gave up; no entry.
    assert.ok(
      written.some((k) => k.includes('/parts/')),
      written.join(', '),
    );
    assert.equal((await listAll(runtime.index, 'carol@example.test')).length, before);

    const retry = await processNotification(runtime, notification, { raw });
    assert.deepEqual(
      retry.outcomes.map((o) => o.status),
      ['delivered'],
    );
    const entries = await listAll(runtime.index, 'carol@example.test');
    assert.equal(entries.length, before + 1);
    assert.equal(entries.find((e) => e.id === retry.id)?.subject, 'half');
    // Not stored at inbound/ (nothing to copy from): the mailbox's copy is the bytes in hand.
    assert.deepEqual(await runtime.blobs.get(mailboxKeys.raw('carol@example.test', retry.id)), raw);
  });

  it('commits no entry when the mailbox copy of the raw bytes (written from memory) fails', async () => {
    const failing = Object.create(runtime.blobs) as typeof runtime.blobs;
    failing.put = async (key, body, options) => {
      await new Promise((r) => setImmediate(r));
      if (key.startsWith('mailboxes/carol@example.test/') && key.endsWith('.eml'))
        throw new Error('EIO: raw copy');
      await runtime.blobs.put(key, body, options);
    };
    const sesMessageId = 'rawcopyfails0000000000000000000000000000';
    const notification = buildNotification({
      sesMessageId,
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients: ['carol@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    // Not at inbound/, so the raw copy is a put of the bytes in hand.
    await assert.rejects(
      processNotification({ ...runtime, blobs: failing }, notification, {
        raw: Buffer.from('Subject: no raw copy\r\n\r\nx\r\n'),
      }),
      /EIO: raw copy/,
    );
    assert.equal(
      (await listAll(runtime.index, 'carol@example.test')).filter((e) => e.sesMessageId === sesMessageId)
        .length,
      0,
    );
  });

  it('delivers to the mailboxes after the first together; a failure among them is reported once the others are done, and a retry completes it', async () => {
    // alice is delivered first (her copy is the one the others copy); bob's and carol's deliveries
    // then run together: bob's commit fails soon, carol's takes longer.
    let inFlight = 0;
    let together = 0;
    const committed: string[] = [];
    const faulty = Object.create(runtime.index) as typeof runtime.index;
    faulty.deliver = async (entry, options) => {
      inFlight += 1;
      together = Math.max(together, inFlight);
      try {
        if (entry.mailbox === 'bob@example.test') {
          await new Promise((r) => setTimeout(r, 20));
          throw new Error('EIO: bob');
        }
        if (entry.mailbox === 'carol@example.test') await new Promise((r) => setTimeout(r, 100));
        const result = await runtime.index.deliver(entry, options);
        committed.push(entry.mailbox);
        return result;
      } finally {
        inFlight -= 1;
      }
    };
    const notification = buildNotification({
      sesMessageId: 'together00000000000000000000000000000000',
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients: ['alice@example.test', 'bob@example.test', 'carol@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    const raw = Buffer.from('Subject: together\r\n\r\nhello\r\n');
    await assert.rejects(
      processNotification({ ...runtime, index: faulty }, notification, { raw }),
      /EIO: bob/,
    );
    assert.equal(together, 2, "bob's and carol's deliveries were under way at once");
    // Told of the failure only once nothing of the message was still being written (a local ingest
    // withdraws what was delivered then, and must find carol's entry there to take it back).
    assert.deepEqual(committed, ['alice@example.test', 'carol@example.test']);

    const retry = await processNotification(runtime, notification, { raw });
    assert.deepEqual(
      retry.outcomes.map((o) => `${o.decision.kind === 'deliver' ? o.decision.mailbox : ''} ${o.status}`),
      ['alice@example.test duplicate', 'bob@example.test delivered', 'carol@example.test duplicate'],
    );
    for (const mailbox of ['alice@example.test', 'bob@example.test', 'carol@example.test']) {
      assert.equal((await runtime.blobs.get(mailboxKeys.raw(mailbox, retry.id)))?.toString(), raw.toString());
    }
  });

  it('a write that fails while the delivery waits on the index fails the message, and is never an unhandled rejection (which ends the relay)', async () => {
    // The notification's put fails at once; the delivery is still waiting for its index read then.
    const failing = Object.create(runtime.blobs) as typeof runtime.blobs;
    failing.put = async (key, body, options) => {
      if (key.startsWith('notifications/')) throw new Error('EIO: notification write');
      await runtime.blobs.put(key, body, options);
    };
    const slowIndex = Object.create(runtime.index) as typeof runtime.index;
    slowIndex.deliveryState = async (mailbox, id) => {
      await new Promise((r) => setTimeout(r, 100));
      return runtime.index.deliveryState(mailbox, id);
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await assert.rejects(
        processNotification(
          { ...runtime, blobs: failing, index: slowIndex },
          buildNotification({
            sesMessageId: 'unhandled0000000000000000000000000000000',
            receivedAt: new Date(),
            mailFrom: 'x@remote.test',
            recipients: ['carol@example.test'],
            verdicts: UNCHECKED_VERDICTS,
            bucketName: LOCAL_BUCKET,
          }),
          { raw: Buffer.from('Subject: unhandled\r\n\r\nhello\r\n') },
        ),
        /EIO: notification write/,
      );
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, []);
    // The entry is the commit point: none is made when a write of the message failed (the retry makes it).
    assert.equal(
      (await listAll(runtime.index, 'carol@example.test')).filter(
        (e) => e.sesMessageId === 'unhandled0000000000000000000000000000000',
      ).length,
      0,
    );
  });

  it('sends no forward before the message is stored: a failed notification write fails it, and the retry forwards once', async () => {
    const withForward = parseConfig({
      domains: ['example.test'],
      mailboxes: ['alice@example.test'],
      routes: [{ match: 'fwd@example.test', action: 'forward', to: ['someone@remote.test'] }],
    });
    const sent: string[] = [];
    const outbound = {
      send: async (m: { to: readonly string[] }) => {
        sent.push(...m.to);
        return { messageId: `sent-${sent.length}` };
      },
    };
    let fail = true;
    const failing = Object.create(runtime.blobs) as typeof runtime.blobs;
    failing.put = async (key, body, options) => {
      await new Promise((r) => setImmediate(r));
      if (fail && key.startsWith('notifications/')) throw new Error('EIO: notification write');
      await runtime.blobs.put(key, body, options);
    };
    const sesMessageId = 'forwardstored000000000000000000000000000';
    await runtime.blobs.put(
      `inbound/${sesMessageId}`,
      Buffer.from('Subject: fwd\r\nMessage-ID: <f@remote.test>\r\n\r\nx\r\n'),
    );
    const notification = buildNotification({
      sesMessageId,
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients: ['fwd@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    const deps = { ...runtime, config: withForward, blobs: failing, outbound };
    await assert.rejects(processNotification(deps, notification), /EIO: notification write/);
    assert.deepEqual(sent, [], 'nothing forwarded for a message whose processing failed before its commit');
    fail = false;
    const retry = await processNotification(deps, notification);
    assert.deepEqual(
      retry.outcomes.map((o) => o.status),
      ['forwarded'],
    );
    assert.deepEqual(sent, ['someone@remote.test']);
  });

  it('parses before the caller says the message is durable, but stores and delivers nothing until then', async () => {
    const raw = Buffer.from('Subject: gated\r\n\r\nwaiting for the journal\r\n');
    const gated = (sesMessageId: string) =>
      buildNotification({
        sesMessageId,
        receivedAt: new Date(),
        mailFrom: 'x@remote.test',
        recipients: ['carol@example.test'],
        verdicts: UNCHECKED_VERDICTS,
        bucketName: LOCAL_BUCKET,
      });
    let parsed = 0;
    const counting = {
      ...runtime,
      parser: {
        parse: (b: Buffer) => {
          parsed += 1;
          return runtime.parser.parse(b);
        },
      },
    };
    const named = async (n: ReturnType<typeof gated>) => ({
      inbound: await runtime.blobs.head(n.receipt.action.objectKey),
      notification: await runtime.blobs.head(notificationKey(n)),
      entries: (await listAll(runtime.index, 'carol@example.test')).filter(
        (e) => e.sesMessageId === n.mail.messageId,
      ).length,
    });

    const ok = gated('gatedok000000000000000000000000000000000');
    let durable: () => void = () => undefined;
    const routing = processNotification(counting, ok, {
      raw,
      storeRaw: true,
      durable: new Promise<void>((resolve) => {
        durable = resolve;
      }),
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(parsed, 1);
    assert.deepEqual(await named(ok), { inbound: null, notification: null, entries: 0 });
    durable();
    assert.deepEqual(
      (await routing).outcomes.map((o) => o.status),
      ['delivered'],
    );
    const after = await named(ok);
    assert.ok(after.inbound !== null && after.notification !== null);
    assert.equal(after.entries, 1);

    // The record could not be written: the router stops with that error and leaves nothing behind.
    const lost = gated('gatedlost00000000000000000000000000000000');
    await assert.rejects(
      processNotification(runtime, lost, { raw, storeRaw: true, durable: Promise.reject(new Error('EIO')) }),
      /EIO/,
    );
    assert.deepEqual(await named(lost), { inbound: null, notification: null, entries: 0 });
  });

  it('routes a notification whose recipients are all refused without its raw message (gone or not)', async () => {
    const n = buildNotification({
      sesMessageId: 'refused0000000000000000000000000000000000',
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients: ['nobody@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    const r = await processNotification(runtime, n);
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['rejected'],
    );
    assert.equal(r.parseFailed, false, 'nothing was parsed, so nothing failed to parse');
    assert.equal(r.size, 0);
  });

  it('a retry after a partial fan-out still delivers to the mailbox that missed it when another deleted its copy meanwhile', async () => {
    // team@ -> alice, bob. The first processing commits alice's entry, then bob's index write fails
    // (the record goes back for a retry). Alice's client fetches and deletes the message before the
    // retry, which must still give bob his copy (from the stored raw, not from alice's deleted one).
    const body = Buffer.from('Subject: partial fan-out\r\n\r\nfor alice and bob\r\n');
    const sesMessageId = 'partialfanout000000000000000000000000000';
    const notification = await storedBySes(sesMessageId, body, ['team@example.test']);
    const failingForBob = Object.create(runtime.index) as typeof runtime.index;
    failingForBob.deliver = async (entry, options) => {
      if (entry.mailbox === 'bob@example.test') throw new Error('index unavailable');
      return runtime.index.deliver(entry, options);
    };
    await assert.rejects(
      processNotification({ ...runtime, index: failingForBob }, notification),
      /index unavailable/,
    );
    const [alices] = (await listAll(runtime.index, 'alice@example.test')).filter(
      (e) => e.sesMessageId === sesMessageId,
    );
    assert.ok(alices, 'alice got it on the first try');
    assert.ok(await runtime.index.delete('alice@example.test', alices.id));
    await deleteMessageBlobs(runtime.blobs, 'alice@example.test', alices.id);

    const retry = await processNotification(runtime, notification);
    assert.deepEqual(
      retry.outcomes.map((o) => [o.status, o.detail]),
      [
        ['duplicate', 'delivered before and deleted since'],
        ['delivered', undefined],
      ],
    );
    const bobs = (await listAll(runtime.index, 'bob@example.test')).filter(
      (e) => e.sesMessageId === sesMessageId,
    );
    assert.equal(bobs.length, 1);
    assert.deepEqual(await runtime.blobs.get(mailboxKeys.raw('bob@example.test', retry.id)), body);
    assert.equal(
      (await listAll(runtime.index, 'alice@example.test')).filter((e) => e.sesMessageId === sesMessageId)
        .length,
      0,
      'deleted mail stays deleted',
    );
  });

  it('fails, for a retry, a message refused for every recipient whose notification could not be stored (replay needs it)', async () => {
    const failing = Object.create(runtime.blobs) as typeof runtime.blobs;
    failing.put = async (key, body, options) => {
      if (key.startsWith('notifications/')) throw new Error('EIO: notification write');
      await runtime.blobs.put(key, body, options);
    };
    const n = buildNotification({
      sesMessageId: 'refusednotstored000000000000000000000000',
      receivedAt: new Date(),
      mailFrom: 'x@remote.test',
      recipients: ['nobody@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    await assert.rejects(processNotification({ ...runtime, blobs: failing }, n), /EIO: notification write/);
    assert.equal(await runtime.blobs.head(notificationKey(n)), null);
    // The retry stores it, so `replay` can route the message again.
    await processNotification(runtime, n);
    assert.ok(await runtime.blobs.head(notificationKey(n)));
  });

  it('a mailbox routed to twice in one message (quarantined for one recipient, delivered for another) is decided by the first decision, as one after another', async () => {
    // q is the quarantine mailbox and a listed mailbox; bob's route quarantines spam, the others tag it.
    const twice = parseConfig({
      domains: ['example.test'],
      mailboxes: ['carol@example.test', 'bob@example.test', 'q@example.test'],
      quarantineMailbox: 'q@example.test',
      policies: { spam: 'tag' },
      routes: [
        {
          match: 'bob@example.test',
          action: 'deliver',
          to: ['bob@example.test'],
          policies: { spam: 'quarantine' },
        },
      ],
    });
    // The quarantine's commit is the slower: delivered together, the plain delivery would win q's entry.
    const slowQuarantine = Object.create(runtime.index) as typeof runtime.index;
    slowQuarantine.deliver = async (entry, options) => {
      if (entry.quarantineReasons !== undefined) await new Promise((r) => setTimeout(r, 50));
      return runtime.index.deliver(entry, options);
    };
    const sesMessageId = 'routedtwice00000000000000000000000000000';
    const raw = Buffer.from('Subject: cheap pills\r\n\r\nx\r\n');
    const r = await processNotification(
      { ...runtime, config: twice, index: slowQuarantine },
      buildNotification({
        sesMessageId,
        receivedAt: new Date(),
        mailFrom: 'x@remote.test',
        recipients: ['carol@example.test', 'bob@example.test', 'q@example.test'],
        verdicts: { ...UNCHECKED_VERDICTS, spam: 'FAIL' },
        bucketName: LOCAL_BUCKET,
      }),
      { raw },
    );
    assert.deepEqual(
      r.outcomes.map((o) => `${o.decision.recipient} ${o.decision.kind} ${o.status}`),
      [
        'carol@example.test deliver delivered',
        'bob@example.test quarantine quarantined',
        'q@example.test deliver duplicate',
      ],
    );
    const entry = await runtime.index.get('q@example.test', r.id);
    assert.deepEqual([entry?.recipient, entry?.quarantineReasons], ['bob@example.test', ['spam']]);
  });

  it('a delivery tagged by policy (spam: tag) carries the tag in its entry', async () => {
    const tagging = parseConfig({
      domains: ['example.test'],
      mailboxes: ['alice@example.test'],
      policies: { spam: 'tag' },
    });
    const sesMessageId = 'taggedspam0000000000000000000000000000000';
    const r = await processNotification(
      { ...runtime, config: tagging },
      await storedBySes(
        sesMessageId,
        Buffer.from('Subject: cheap pills\r\n\r\nx\r\n'),
        ['alice@example.test'],
        { ...UNCHECKED_VERDICTS, spam: 'FAIL' },
      ),
    );
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['delivered'],
    );
    assert.deepEqual((await runtime.index.get('alice@example.test', r.id))?.tags, ['spam']);
  });

  it('reports and counts a dropped recipient next to a delivered one', async () => {
    const withDrop = parseConfig({
      domains: ['example.test'],
      mailboxes: ['alice@example.test'],
      routes: [{ match: 'blackhole@example.test', action: 'drop' }],
    });
    const sesMessageId = 'dropped000000000000000000000000000000000';
    const r = await processNotification(
      { ...runtime, config: withDrop },
      await storedBySes(sesMessageId, Buffer.from('Subject: dropped\r\n\r\nx\r\n'), [
        'blackhole@example.test',
        'alice@example.test',
      ]),
    );
    assert.deepEqual(
      r.outcomes.map((o) => [o.decision.recipient, o.status]),
      [
        ['blackhole@example.test', 'dropped'],
        ['alice@example.test', 'delivered'],
      ],
    );
    assert.deepEqual(
      { delivered: countOutcomes([r]).delivered, dropped: countOutcomes([r]).dropped },
      { delivered: 1, dropped: 1 },
    );
  });

  it('refuses, for a retry, a notification whose raw message is not stored', async () => {
    const n = buildNotification({
      sesMessageId: 'missing0000000000000000000000000000000000',
      receivedAt: new Date(),
      mailFrom: '',
      recipients: ['carol@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    await assert.rejects(processNotification(runtime, n), MissingRawMessageError);
  });
});
