/**
 * Forwarding end to end, locally: the relay (real runtime, SMTP listener and HTTP API) forwards
 * through `relay.smtp` to a second in-process SMTP server playing the remote MX (Gmail). What
 * that server receives is what a forwarding user would get: rewritten headers, the body byte for
 * byte, tags, notices; and what it does not get: quarantined, rejected, looped, duplicate mail.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { FsBlobStore } from '../../functions/adapters/local/fs-blob-store.ts';
import type { RawConfig } from '../../functions/core/config.ts';
import { MAX_FORWARD_HOPS } from '../../functions/core/forward-rewrite.ts';
import { fieldValue, parseAddressList, splitMessage } from '../../functions/core/mime-header.ts';
import { sesReceivedNotificationSchema } from '../../functions/core/notification.ts';
import type { Verdicts } from '../../functions/core/routing.ts';
import { type IngestResult, ingest } from '../../functions/local/ingest.ts';
import { loadOrCreatePresignSecret } from '../../functions/local/runtime.ts';
import {
  FORWARDED_PREFIX,
  ForwardInProgressError,
  forwardedKey,
  forwardSendKey,
} from '../../functions/pipeline/forward.ts';
import {
  NOTIFICATIONS_PREFIX,
  processNotification,
  type RouterDeps,
} from '../../functions/pipeline/router.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { corpusDir, corpusFiles, requireOrAnnounce } from '../helpers/env.ts';
import { python } from '../helpers/process.ts';
import { listAll } from '../helpers/relay.ts';
import { type RemoteMx, startRefusingSmarthost, startRemoteMx } from '../helpers/remote-mx.ts';

const FIXTURES = new URL('../fixtures/', import.meta.url);
const PASS: Verdicts = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
const QUARANTINE = 'quarantine@example.test';

function configFor(mx: RemoteMx, relay: Record<string, unknown> = {}): RawConfig {
  return {
    domains: ['example.test'],
    mailboxes: ['alice@example.test'],
    routes: [
      { match: 'boss@example.test', action: 'forward', to: ['boss@remote.test'] },
      {
        match: 'strict@example.test',
        action: 'forward',
        to: ['strict@remote.test'],
        policies: { spam: 'reject' },
      },
      {
        match: 'lenient@example.test',
        action: 'forward',
        to: ['lenient@remote.test'],
        forwardDmarcReject: true,
      },
      { match: 'gone@example.test', action: 'forward', to: ['gone@remote.test'] },
      { match: 'flaky@example.test', action: 'forward', to: ['flaky@remote.test'] },
      { match: 'both@example.test', action: 'deliver', to: ['alice@example.test', 'boss@example.test'] },
    ],
    policies: { spam: 'tag', virus: 'quarantine', spf: 'accept', dkim: 'accept', dmarc: 'tag' },
    relay: { smtp: mx.url, ...relay },
  };
}

/** SMTP carries lines ending in CRLF only (RFC 5321 §2.3.8): a bare CR or LF arrives as CRLF, and DATA ends with one. */
function onTheWire(bytes: Buffer): Buffer {
  const text = bytes.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  return Buffer.from(text.length === 0 || text.endsWith('\r\n') ? text : `${text}\r\n`, 'latin1');
}

function header(raw: Buffer, name: string): string[] {
  const key = name.toLowerCase();
  return splitMessage(raw)
    .fields.filter((f) => f.key === key)
    .map(fieldValue);
}

interface Harness {
  env: ApiTestEnv;
  mx: RemoteMx;
  deps: RouterDeps;
  send(
    recipients: string[],
    body: Buffer,
    options?: { verdicts?: Verdicts; sesMessageId?: string },
  ): Promise<IngestResult>;
}

async function startHarness(relay: Record<string, unknown> = {}): Promise<Harness> {
  const mx = await startRemoteMx();
  const env = await startApiTestEnv({ config: configFor(mx, relay) });
  // Links signed with the API server's secret, so the test can follow them over HTTP like a user.
  const signer = new FsBlobStore({
    root: env.runtime.blobRoot,
    presign: { baseUrl: env.url, secret: loadOrCreatePresignSecret(env.dataDir) },
  });
  const deps: RouterDeps = {
    ...env.runtime,
    forwarding: { presign: (key, o) => signer.presign(key, o), retryDelaysMs: [20, 20] },
  };
  return {
    env,
    mx,
    deps,
    send: (recipients, body, options = {}) =>
      ingest(deps, {
        body,
        mailFrom: 'sender@origin.test',
        recipients,
        via: { protocol: 'LOCAL', helo: 'forward-test' },
        verdicts: options.verdicts ?? PASS,
        ...(options.sesMessageId ? { sesMessageId: options.sesMessageId } : {}),
      }),
  };
}

const message = (subject: string, extra = '') =>
  Buffer.from(
    `From: "Alice Example" <alice@origin.test>\r\nTo: boss@example.test\r\nSubject: ${subject}\r\n` +
      `Message-ID: <${subject.replace(/\W/g, '')}@origin.test>\r\n${extra}\r\nHello boss.\r\n`,
  );

describe('forwarding through a smarthost to a remote MX', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    await h.env.close();
    await h.mx.close();
  });

  it('a real SMTP client sends; the remote MX gets the rewritten headers and the same body', async () => {
    const raw = readFileSync(new URL('forward-headers.eml', FIXTURES));
    // python's smtplib sends what it is given (dot-stuffing on its own); the relay answers 250.
    const r = await python(
      'import smtplib,sys\nwith smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s: s.sendmail("list@origin.test", ["boss@example.test"], sys.stdin.buffer.read())',
      [String(h.env.smtp.port)],
      raw,
    );
    assert.equal(r.code, 0, r.stderr);
    const [got, ...more] = h.mx.to('boss@remote.test');
    assert.ok(got);
    assert.equal(more.length, 0);
    assert.equal(got.mailFrom, 'forwarder@example.test');
    assert.deepEqual(got.rcptTo, ['boss@remote.test']);
    assert.deepEqual(header(got.raw, 'From'), [
      '"Doe, John \\"JD\\" via example.test" <forwarder@example.test>',
    ]);
    assert.deepEqual(header(got.raw, 'Reply-To'), ['"Doe, John \\"JD\\"" <john.doe@example.org>']);
    assert.deepEqual(header(got.raw, 'X-Original-From'), ['"Doe, John \\"JD\\"" <john.doe@example.org>']);
    assert.deepEqual(header(got.raw, 'X-Forwarded-For'), ['boss@example.test boss@remote.test']);
    assert.deepEqual(header(got.raw, 'X-Loop'), ['forwarder@example.test', 'lists.example.org']);
    for (const gone of ['Return-Path', 'Sender', 'DKIM-Signature', 'X-SES-CONFIGURATION-SET', 'Bcc']) {
      assert.deepEqual(header(got.raw, gone), [], gone);
    }
    // Our own trace headers (Received, Authentication-Results) travel on as the newest hop.
    assert.equal(header(got.raw, 'Received').length, 2);
    assert.deepEqual(splitMessage(got.raw).body, onTheWire(splitMessage(raw).body));
  });

  it('a message without Date and Message-ID arrives with both (receiving MXes refuse mail without a Message-ID)', async () => {
    const r = await h.send(
      ['boss@example.test'],
      Buffer.from('From: a@origin.test\r\nSubject: bare\r\n\r\nhi\r\n'),
    );
    const [got] = h.mx.to('boss@remote.test').filter((m) => header(m.raw, 'Subject')[0] === 'bare');
    assert.ok(got);
    assert.deepEqual(header(got.raw, 'Message-ID'), [`<${r.id}.forwarded@example.test>`]);
    assert.equal(header(got.raw, 'Date').length, 1);
    assert.ok(Math.abs(Date.parse(header(got.raw, 'Date')[0] ?? '') - Date.now()) < 3_600_000);
  });

  it('every fixture arrives once, From ours and body identical', async () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.eml'));
    assert.ok(files.length >= 12);
    for (const file of files) {
      const raw = readFileSync(new URL(file, FIXTURES));
      const before = h.mx.received.length;
      const r = await h.send(['boss@example.test'], raw);
      assert.deepEqual(
        r.outcomes.map((o) => o.status),
        ['forwarded'],
        file,
      );
      assert.equal(h.mx.received.length, before + 1, file);
      const got = h.mx.received[before];
      assert.ok(got);
      assert.equal(
        parseAddressList(header(got.raw, 'From')[0] ?? '')[0]?.address,
        'forwarder@example.test',
        file,
      );
      assert.deepEqual(splitMessage(got.raw).body, onTheWire(splitMessage(raw).body), `${file}: body`);
    }
  });

  it('the shared corpus: every message forwarded, body identical', async (t) => {
    const dir = corpusDir();
    if (
      !requireOrAnnounce(
        dir !== null,
        'forwarding corpus suite',
        'put the corpus at ../shared/corpus or set MAIL_RELAY_CORPUS',
      )
    ) {
      t.skip('no corpus');
      return;
    }
    assert.ok(dir);
    for (const f of corpusFiles(dir)) {
      const raw = readFileSync(f.path);
      const before = h.mx.received.length;
      const r = await h.send(['boss@example.test'], raw);
      // The body is what follows the header block of the message as the relay stored it (our trace
      // headers on top: a message starting with a folded line continues our Authentication-Results).
      const stored = await h.env.runtime.blobs.get(r.inboundKey);
      assert.ok(stored);
      const hops = splitMessage(stored).fields.filter((x) => x.key === 'received').length;
      if (hops > MAX_FORWARD_HOPS) {
        // A few test messages carry a hundred Received headers: exactly what the hop limit is for.
        assert.deepEqual(
          r.outcomes.map((o) => o.status),
          ['looped'],
          f.file,
        );
        assert.equal(h.mx.received.length, before, f.file);
        continue;
      }
      assert.deepEqual(
        r.outcomes.map((o) => o.status),
        ['forwarded'],
        `${f.file}: ${r.outcomes.map((o) => o.detail).join()}`,
      );
      const got = h.mx.received[before];
      assert.ok(got, f.file);
      assert.deepEqual(splitMessage(got.raw).body, onTheWire(splitMessage(stored).body), `${f.file}: body`);
      // Ours is the newest, on top; earlier forwarders' stay below it.
      assert.equal(header(got.raw, 'X-Forwarded-To')[0], 'boss@remote.test', f.file);
    }
  });

  it('spam with policy tag: forwarded with a subject prefix and X-Mail-Relay-Verdict', async () => {
    const r = await h.send(['boss@example.test'], message('cheap pills'), {
      verdicts: { ...PASS, spam: 'FAIL' },
    });
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['forwarded'],
    );
    const got = h.mx.received.at(-1);
    assert.ok(got);
    assert.deepEqual(header(got.raw, 'Subject'), ['[SPAM] cheap pills']);
    assert.deepEqual(header(got.raw, 'X-Mail-Relay-Verdict'), [
      'spam=FAIL; virus=PASS; spf=PASS; dkim=PASS; dmarc=PASS; tagged=spam',
    ]);
  });

  it('a virus (quarantine), spam on a reject route, and a DMARC p=reject sender are not forwarded', async () => {
    const before = h.mx.received.length;
    const virus = await h.send(['boss@example.test'], message('invoice'), {
      verdicts: { ...PASS, virus: 'FAIL' },
    });
    assert.deepEqual(
      virus.outcomes.map((o) => `${o.status} ${o.decision.kind}`),
      ['quarantined quarantine'],
    );
    const quarantined = (await listAll(h.env.runtime.index, QUARANTINE)).find((e) => e.id === virus.id);
    assert.deepEqual(quarantined?.quarantineReasons, ['virus']);

    const spam = await h.send(['strict@example.test'], message('offer'), {
      verdicts: { ...PASS, spam: 'FAIL' },
    });
    assert.deepEqual(
      spam.outcomes.map((o) => o.status),
      ['rejected'],
    );

    const spoof = await h.send(['boss@example.test'], message('wire transfer'), {
      verdicts: { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'REJECT' },
    });
    assert.deepEqual(
      spoof.outcomes.map((o) => o.status),
      ['quarantined'],
    );
    assert.deepEqual(
      (await listAll(h.env.runtime.index, QUARANTINE)).find((e) => e.id === spoof.id)?.quarantineReasons,
      ['dmarc'],
    );
    assert.equal(h.mx.received.length, before, 'nothing reached the remote MX');
  });

  it('a route that opts in forwards a DMARC p=reject failure, tagged', async () => {
    await h.send(['lenient@example.test'], message('from a bank'), {
      verdicts: { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'REJECT' },
    });
    const [got] = h.mx.to('lenient@remote.test');
    assert.ok(got);
    assert.deepEqual(header(got.raw, 'Subject'), ['[DMARC-FAIL] from a bank']);
  });

  it('a replayed notification sends once', async () => {
    const first = await h.send(['boss@example.test'], message('once only'));
    assert.deepEqual(
      first.outcomes.map((o) => o.status),
      ['forwarded'],
    );
    const count = () => h.mx.received.filter((m) => header(m.raw, 'Subject')[0] === 'once only').length;
    assert.equal(count(), 1);
    const stored = await storedNotification(h.env.runtime.blobs, first.sesMessageId);
    assert.ok(stored);
    const notification = sesReceivedNotificationSchema.parse(JSON.parse(stored.toString('utf8')));
    // SQS redelivers, Lambda retries, an operator replays: twice in parallel and once after.
    const again = await Promise.allSettled([
      processNotification(h.deps, notification, { replay: true }),
      processNotification(h.deps, notification, { replay: true }),
    ]);
    const later = await processNotification(h.deps, notification, { replay: true });
    assert.deepEqual(
      later.outcomes.map((o) => o.status),
      ['duplicate'],
    );
    for (const a of again) {
      // The loser of a race either sees the send done or is told to retry later; it never sends.
      if (a.status === 'fulfilled')
        assert.deepEqual(
          a.value.outcomes.map((o) => o.status),
          ['duplicate'],
        );
      else assert.match(String(a.reason), /forward_in_progress|being sent/);
    }
    assert.equal(count(), 1);
    const record = await h.env.runtime.index.getSend(forwardSendKey(first.sesMessageId, 'boss@remote.test'));
    assert.equal(record?.state, 'sent');
  });

  it('a loop is cut: mail coming back with our X-Loop is kept and reported, not sent again', async () => {
    await h.send(['boss@example.test'], message('round and round'));
    const out = h.mx.received.at(-1);
    assert.ok(out);
    // The remote mailbox forwards it straight back to boss@ (a Gmail filter pointing at us).
    const before = h.mx.received.length;
    const back = await h.send(['boss@example.test'], out.raw);
    assert.deepEqual(
      back.outcomes.map((o) => `${o.status}: ${o.detail}`),
      ['looped: it already carries our X-Loop: forwarder@example.test'],
    );
    assert.equal(h.mx.received.length, before);
    assert.ok(await h.env.runtime.blobs.head(forwardedKey(back.id)), 'original kept');
    const notices = await listAll(h.env.runtime.index, QUARANTINE);
    assert.ok(notices.some((e) => e.subject === 'Forwarding loop cut: round and round'));

    const hops = 'Received: from a.test by b.test; Tue, 4 Mar 2025 10:00:00 +0000\r\n'.repeat(60);
    const many = await h.send(['boss@example.test'], message('many hops', hops));
    assert.deepEqual(
      many.outcomes.map((o) => o.status),
      ['looped'],
    );
    assert.equal(h.mx.received.length, before);
  });

  it('a permanent failure is recorded and the owner gets a notice readable through the API', async () => {
    h.mx.refuse('gone@remote.test', 550);
    const r = await h.send(['gone@example.test'], message('undeliverable'));
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['failed'],
    );
    assert.match(r.outcomes[0]?.detail ?? '', /550 5\.1\.1/);
    const record = await h.env.runtime.index.getSend(forwardSendKey(r.sesMessageId, 'gone@remote.test'));
    assert.equal(record?.state, 'failed');
    assert.match(record?.error ?? '', /550/);
    assert.ok(await h.env.runtime.blobs.head(forwardedKey(r.id)), 'original kept under forwarded/');

    const token = await h.env.token(QUARANTINE);
    const list = await h.env.request(`/v1/mailboxes/${QUARANTINE}/messages`, { token });
    assert.equal(list.status, 200);
    const items = ((await list.json()) as { items: { id: string; subject: string }[] }).items;
    const notice = items.find((i) => i.subject === 'Forwarding failed: undeliverable');
    assert.ok(notice, JSON.stringify(items));
    const noticeRaw = Buffer.from(
      await (
        await h.env.request(`/v1/mailboxes/${QUARANTINE}/messages/${notice.id}/raw`, { token })
      ).arrayBuffer(),
    ).toString('latin1');
    assert.doesNotMatch(noticeRaw, /[^\r]\n/, 'every line of the notice ends in CRLF (RFC 5322 §2.3)');
    const detail = (await (
      await h.env.request(`/v1/mailboxes/${QUARANTINE}/messages/${notice.id}`, { token })
    ).json()) as { text: string; attachments: { partId: string; contentType: string }[] };
    assert.match(detail.text, /could not be forwarded to gone@remote\.test/);
    assert.match(detail.text, /550 5\.1\.1 refused by test/);
    const attached = detail.attachments.find((a) => a.contentType === 'message/rfc822');
    assert.ok(attached, 'the original is attached');
    const part = await h.env.request(
      `/v1/mailboxes/${QUARANTINE}/messages/${notice.id}/parts/${attached.partId}`,
      {
        token,
      },
    );
    assert.match(Buffer.from(await part.arrayBuffer()).toString('latin1'), /Subject: undeliverable/);

    // Fixed on the remote side, a replay sends it (a failed send may be claimed again), once.
    h.mx.accept('gone@remote.test');
    const stored = await storedNotification(h.env.runtime.blobs, r.sesMessageId);
    assert.ok(stored);
    const n = sesReceivedNotificationSchema.parse(JSON.parse(stored.toString('utf8')));
    const replay = await processNotification(h.deps, n, { replay: true });
    assert.deepEqual(
      replay.outcomes.map((o) => o.status),
      ['forwarded'],
    );
    assert.equal(h.mx.to('gone@remote.test').length, 1);
  });

  it('a forward sent whose send record then fails to update is reported forwarded, with no failure notice', async () => {
    let failures = 1;
    const index = new Proxy(h.env.runtime.index, {
      get(target, prop, receiver) {
        if (prop === 'finishSend') {
          return (...args: Parameters<typeof target.finishSend>) =>
            failures-- > 0 ? Promise.reject(new Error('disk full')) : target.finishSend(...args);
        }
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const noticesBefore = (await h.env.runtime.index.stat(QUARANTINE)).messages;
    const r = await ingest(
      { ...h.deps, index },
      {
        body: message('recorded late'),
        mailFrom: 'sender@origin.test',
        recipients: ['boss@example.test'],
        via: { protocol: 'LOCAL', helo: 'forward-test' },
        verdicts: PASS,
      },
    );
    assert.deepEqual(
      r.outcomes.map((o) => `${o.status} ${o.detail ?? ''}`),
      ['forwarded its send record was not updated: disk full'],
    );
    assert.equal(h.mx.received.filter((m) => header(m.raw, 'Subject')[0] === 'recorded late').length, 1);
    assert.equal((await h.env.runtime.index.stat(QUARANTINE)).messages, noticesBefore, 'no failure notice');
  });

  it('a temporary failure is retried and delivered once', async () => {
    h.mx.refuseOnce('flaky@remote.test', 451);
    const r = await h.send(['flaky@example.test'], message('try again'));
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['forwarded'],
    );
    assert.equal(h.mx.to('flaky@remote.test').length, 1);
  });

  it('a forward that cannot go yet (another router holds its claim) does not hold back the mailbox copy', async () => {
    const sesMessageId = 'forward-claimed-elsewhere-0001';
    const key = forwardSendKey(sesMessageId, 'boss@remote.test');
    // Another router claimed this forward a moment ago and is sending it (its lease runs).
    const taken = await h.env.runtime.index.claimSend(key, { now: new Date(), leaseMs: 15 * 60_000 });
    assert.equal(taken.claimed, true);
    const ALICE = 'alice@example.test';
    const before = (await h.env.runtime.index.stat(ALICE)).messages;
    // The forward is routed first (recipients in this order), the mailbox after it.
    await assert.rejects(
      h.send(['boss@example.test', ALICE], message('claimed elsewhere'), { sesMessageId }),
      (err: unknown) => err instanceof ForwardInProgressError,
    );
    assert.equal((await h.env.runtime.index.stat(ALICE)).messages, before + 1, 'alice has it already');
    assert.equal(h.mx.to('boss@remote.test').filter((m) => m.raw.includes('claimed elsewhere')).length, 0);
  });

  it('deliver and forward from one message: the mailbox copy and the forward both happen', async () => {
    const r = await h.send(['both@example.test'], message('for both'));
    assert.deepEqual(r.outcomes.map((o) => `${o.status} ${o.decision.kind}`).sort(), [
      'delivered deliver',
      'forwarded forward',
    ]);
  });
});

describe('a smarthost refusing the relay itself (5xx to EHLO and HELO) is retried, not taken for a refusal of the message', () => {
  it("every attempt is made before the forward fails, and the failure records the smarthost's reply", async () => {
    const smarthost = await startRefusingSmarthost({ reply: '550 5.7.1 relay host not allowed' });
    const h = await startHarness({ smtp: smarthost.url });
    try {
      const r = await h.send(['boss@example.test'], message('refused relay'));
      assert.deepEqual(
        r.outcomes.map((o) => o.status),
        ['failed'],
      );
      // retryDelaysMs [20, 20]: the first try and two more (a 550 to RCPT is tried once).
      assert.equal(smarthost.connections(), 3);
      const record = await h.env.runtime.index.getSend(forwardSendKey(r.sesMessageId, 'boss@remote.test'));
      assert.match(record?.error ?? '', /550 5\.7\.1 relay host not allowed/);
    } finally {
      await h.env.close();
      await h.mx.close();
      await smarthost.close();
    }
  });
});

describe('oversize: above the sending limit a notice with a link goes out, and the original is kept', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ maxSendBytes: 16 * 1024, linkExpirySeconds: 3600 });
  });
  after(async () => {
    await h.env.close();
    await h.mx.close();
  });

  it('sends a short notice whose link serves the original, byte for byte', async () => {
    const big = Buffer.concat([
      message('holiday photos', 'Content-Type: text/plain\r\n'),
      Buffer.alloc(64 * 1024, 'x\r\n'),
    ]);
    const r = await h.send(['boss@example.test'], big);
    assert.deepEqual(
      r.outcomes.map((o) => `${o.status} ${o.detail}`),
      ['forwarded oversize-notice'],
    );
    const [got] = h.mx.to('boss@remote.test');
    assert.ok(got);
    assert.ok(got.raw.length < 16 * 1024);
    assert.deepEqual(header(got.raw, 'Subject'), ['[Too large to forward] holiday photos']);
    assert.equal(
      parseAddressList(header(got.raw, 'From')[0] ?? '')[0]?.name,
      'Alice Example via example.test',
    );
    assert.deepEqual(parseAddressList(header(got.raw, 'Reply-To')[0] ?? ''), [
      { name: 'Alice Example', address: 'alice@origin.test' },
    ]);
    assert.deepEqual(header(got.raw, 'X-Loop'), ['forwarder@example.test']);
    const text = got.raw.toString('latin1').replace(/=\r\n/g, '');
    const link = /(http:\/\/127\.0\.0\.1:\d+\/v1\/blobs\/\S+)/.exec(text)?.[1]?.replace(/=3D/g, '=');
    assert.ok(link, text);
    assert.ok(link.includes(encodeURIComponent(FORWARDED_PREFIX.slice(0, -1))));
    const res = await fetch(link);
    assert.equal(res.status, 200);
    const served = Buffer.from(await res.arrayBuffer());
    const inbound = await h.env.runtime.blobs.get(`inbound/${r.sesMessageId}`);
    assert.ok(inbound);
    assert.deepEqual(served, inbound, 'the link serves the message as received');
    const record = await h.env.runtime.index.getSend(forwardSendKey(r.sesMessageId, 'boss@remote.test'));
    assert.equal(record?.detail, 'oversize-notice');
  });

  it('a link that cannot be signed (the link secret unreadable, say) fails the forward visibly: no notice without its link', async () => {
    const deps: RouterDeps = {
      ...h.deps,
      forwarding: {
        ...h.deps.forwarding,
        presign: () => Promise.reject(new Error('AccessDeniedException: not authorized to GetSecretValue')),
      },
    };
    const big = Buffer.concat([
      message('no link', 'Content-Type: text/plain\r\n'),
      Buffer.alloc(64 * 1024, 'x\r\n'),
    ]);
    const before = h.mx.to('boss@remote.test').length;
    const r = await ingest(deps, {
      body: big,
      mailFrom: 'sender@origin.test',
      recipients: ['boss@example.test'],
      via: { protocol: 'LOCAL' },
      verdicts: PASS,
    });
    assert.deepEqual(
      r.outcomes.map((o) => o.status),
      ['failed'],
    );
    assert.match(r.outcomes[0]?.detail ?? '', /AccessDenied/);
    assert.equal(h.mx.to('boss@remote.test').length, before, 'nothing sent without the link');
    const record = await h.env.runtime.index.getSend(forwardSendKey(r.sesMessageId, 'boss@remote.test'));
    assert.equal(record?.state, 'failed');
    const token = await h.env.token(QUARANTINE);
    const items = (
      (await (await h.env.request(`/v1/mailboxes/${QUARANTINE}/messages`, { token })).json()) as {
        items: { subject: string }[];
      }
    ).items;
    assert.ok(
      items.some((i) => i.subject === 'Forwarding failed: no link'),
      JSON.stringify(items),
    );
  });
});

/** The one notification stored for a message (its key also names the recipient set). */
async function storedNotification(blobs: BlobStore, sesMessageId: string): Promise<Buffer | null> {
  const keys: string[] = [];
  for await (const info of blobs.list(`${NOTIFICATIONS_PREFIX}${sesMessageId}.`)) keys.push(info.key);
  assert.equal(keys.length, 1, keys.join(', '));
  return blobs.get(keys[0] ?? '');
}
