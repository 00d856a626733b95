/**
 * Real SMTP clients (python3 smtplib, swaks) against the local listener on loopback.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { listOutbox } from '../../functions/adapters/local/outbox-outbound.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { main } from '../../functions/local/cli.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { MAX_RECIPIENTS, startSmtpListener } from '../../functions/local/smtp-listener.ts';
import { mailboxKeys } from '../../functions/pipeline/router.ts';
import { hasCommand, requireOrAnnounce } from '../helpers/env.ts';
import { python, run } from '../helpers/process.ts';
import { listAll, startTestRelay, stripTrace, type TestRelay } from '../helpers/relay.ts';

const MAX = 256 * 1024;
const CONFIG = {
  domains: ['example.test'],
  mailboxes: [
    'alice@example.test',
    'bob@example.test',
    'archive@example.test',
    'headless@example.test',
    'mac@example.test',
    'postmaster@example.test',
  ],
  routes: [
    {
      match: 'team@example.test',
      action: 'deliver' as const,
      to: ['alice@example.test', 'bob@example.test'],
    },
    {
      match: 'gone@example.test',
      action: 'reject' as const,
      code: 551,
      message: '5.1.6 User has moved; try bob',
    },
    { match: 'blackhole@example.test', action: 'drop' as const },
  ],
  maxMessageBytes: MAX,
};

/** smtplib sends the bytes as given (dot-stuffing them itself); prints the server's replies as JSON. */
const SMTPLIB_SEND = `
import json, smtplib, sys
port, sender, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(',')
data = sys.stdin.buffer.read()
out = {}
try:
    with smtplib.SMTP('127.0.0.1', port, timeout=30) as s:
        refused = s.sendmail(sender, rcpts, data)
        out['refused'] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
        out['ok'] = True
except smtplib.SMTPRecipientsRefused as e:
    out['error'] = 'recipients'; out['refused'] = {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}
except smtplib.SMTPSenderRefused as e:
    out['error'] = 'sender'; out['code'] = e.smtp_code; out['text'] = e.smtp_error.decode()
except smtplib.SMTPDataError as e:
    out['error'] = 'data'; out['code'] = e.smtp_code; out['text'] = e.smtp_error.decode()
print(json.dumps(out))
`;

interface SendResult {
  ok?: boolean;
  error?: string;
  code?: number;
  text?: string;
  refused?: Record<string, [number, string]>;
}

async function smtplibSend(relay: TestRelay, rcpts: string[], data: Buffer, from = 'sender@remote.test') {
  const r = await python(SMTPLIB_SEND, [String(relay.smtp.port), from, rcpts.join(',')], data);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as SendResult;
}

describe('SMTP listener with python3 smtplib', () => {
  let relay: TestRelay;
  before(async () => {
    relay = await startTestRelay(CONFIG);
  });
  after(async () => relay.close());

  it('delivers a CRLF message byte-exact after the trace headers', async () => {
    const body = Buffer.from(
      'From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nSubject: CRLF\r\n\r\nHello\r\n',
    );
    const r = await smtplibSend(relay, ['alice@example.test'], body);
    assert.equal(r.ok, true);
    const [entry] = await relay.entries('alice@example.test');
    assert.ok(entry);
    assert.equal(entry.subject, 'CRLF');
    const { trace, body: stored } = stripTrace(await relay.raw('alice@example.test', entry.id));
    assert.deepEqual(stored, body);
    assert.match(
      trace,
      /^Return-Path: <sender@remote\.test>\r\nReceived: from \S+ \(\[127\.0\.0\.1\]\)\r\n\tby .+ \(mail-relay\) with ESMTP id [a-z0-9]{40}\r\n\tfor <alice@example\.test>;\r\n\t\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n/,
    );
    assert.equal(entry.size, trace.length + body.length);
  });

  it('a message without headers keeps its text as the body (the blank line added after ours); a bounce has Return-Path <>', async () => {
    const body = Buffer.from('just body text\r\nsecond line\r\n');
    const r = await smtplibSend(relay, ['headless@example.test'], body, '');
    assert.equal(r.ok, true);
    const [entry] = await relay.entries('headless@example.test');
    assert.ok(entry);
    assert.equal(entry.snippet, 'just body text second line');
    const { trace, body: stored } = stripTrace(await relay.raw('headless@example.test', entry.id));
    assert.match(trace, /^Return-Path: <>\r\n/);
    assert.deepEqual(stored, Buffer.concat([Buffer.from('\r\n'), body]));
  });

  it('keeps bare LF, 8-bit bytes and dot-leading lines exactly', async () => {
    const body = Buffer.concat([
      Buffer.from(
        'From: a@remote.test\nTo: bob@example.test\nSubject: bare LF\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n',
      ),
      Buffer.from('Grüße, ünïcödé ✉\n.one dot\n..two dots\n.\n...\nlast\n', 'utf8'),
      Buffer.from([0xe9, 0xa0, 0x0a]), // latin-1 bytes that are not UTF-8
    ]);
    const r = await smtplibSend(relay, ['bob@example.test'], body);
    assert.equal(r.ok, true);
    const [entry] = await relay.entries('bob@example.test');
    assert.ok(entry);
    const { trace, body: stored } = stripTrace(await relay.raw('bob@example.test', entry.id));
    assert.ok(!trace.includes('\r'), 'trace headers follow the message line ending');
    // SMTP data must end with CRLF before the final dot (RFC 5321 §4.1.1.4): a client sending a
    // message that ends in a bare LF adds one, and that CRLF is part of what was received.
    assert.deepEqual(stored, Buffer.concat([body, Buffer.from('\r\n')]));
  });

  it('keeps a CR-only message (classic Mac) exactly and reads its subject, sender and text', async () => {
    const body = readFileSync(new URL('../fixtures/cr-only.eml', import.meta.url));
    const r = await smtplibSend(relay, ['mac@example.test'], body);
    assert.equal(r.ok, true);
    const [entry] = await relay.entries('mac@example.test');
    assert.ok(entry);
    const { body: stored } = stripTrace(await relay.raw('mac@example.test', entry.id));
    assert.deepEqual(stored, Buffer.concat([body, Buffer.from('\r\n')]));
    assert.equal(entry.subject, 'Quarterly numbers, folded onto a second line');
    assert.equal(entry.from, 'Alice Example <alice@example.org>');
    const summary = JSON.parse(
      String(await relay.runtime.blobs.get(mailboxKeys.summary('mac@example.test', entry.id))),
    ) as { text: string | null; parseFailed: boolean };
    assert.equal(summary.parseFailed, false);
    assert.equal(summary.text, 'Hi Bob,\n\nThe numbers follow in the next mail.\n\n-- \nAlice\n');
  });

  it('refuses recipients outside our domains with 550 at RCPT (never an open relay)', async () => {
    const r = await smtplibSend(
      relay,
      ['victim@elsewhere.test'],
      Buffer.from('Subject: relay?\r\n\r\nx\r\n'),
    );
    assert.equal(r.error, 'recipients');
    const [code, text] = r.refused?.['victim@elsewhere.test'] ?? [];
    assert.equal(code, 550);
    assert.match(text ?? '', /5\.7\.1 Relaying denied/);
  });

  it('refuses unknown recipients of our domain with 550 5.1.1 and delivers to the others', async () => {
    const r = await smtplibSend(
      relay,
      ['nobody@example.test', 'archive@example.test'],
      Buffer.from('Subject: mixed\r\n\r\nx\r\n'),
    );
    assert.equal(r.ok, true);
    assert.deepEqual(r.refused?.['nobody@example.test']?.[0], 550);
    assert.match(r.refused?.['nobody@example.test']?.[1] ?? '', /^5\.1\.1/);
    assert.equal((await relay.entries('archive@example.test')).length, 1);
  });

  it('accepts RCPT TO:<Postmaster> without a domain (RFC 5321 §4.5.1): the first domain’s postmaster', async () => {
    const r = await smtplibSend(
      relay,
      ['Postmaster'],
      Buffer.from('Subject: to the postmaster\r\n\r\nx\r\n'),
    );
    assert.equal(r.ok, true, JSON.stringify(r));
    const entries = await relay.entries('postmaster@example.test');
    assert.deepEqual(
      entries.map((e) => [e.subject, e.recipient]),
      [['to the postmaster', 'postmaster@example.test']],
    );
  });

  it('answers a reject route with its own code and text', async () => {
    const r = await smtplibSend(relay, ['gone@example.test'], Buffer.from('Subject: x\r\n\r\nx\r\n'));
    assert.equal(r.error, 'recipients');
    assert.deepEqual(r.refused?.['gone@example.test'], [551, '5.1.6 User has moved; try bob']);
  });

  it('refuses an oversized message with 552 (SIZE declared at MAIL FROM)', async () => {
    const big = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(MAX + 10, 'a\r\n')]);
    const r = await smtplibSend(relay, ['alice@example.test'], big);
    assert.equal(r.error, 'sender');
    assert.equal(r.code, 552);
  });

  it('answers 555 to MAIL and RCPT parameters it does not know (RFC 5321 §4.1.1.11); SIZE, BODY and DSN parameters are taken', async () => {
    // smtplib sends the options as given, without looking at the EHLO reply.
    const script = `
import json, smtplib, sys
port = int(sys.argv[1])
out = []
with smtplib.SMTP('127.0.0.1', port, timeout=30) as s:
    s.ehlo()
    for opts in (['FOO=bar'], ['AUTH=<>'], ['SIZE=20', 'BODY=8BITMIME', 'RET=HDRS', 'ENVID=e1']):
        code, text = s.mail('sender@remote.test', opts)
        out.append([code, text.decode()])
    for opts in (['X-TAG=1'], ['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;alice@example.test']):
        code, text = s.rcpt('alice@example.test', opts)
        out.append([code, text.decode()])
    code, text = s.data(b'Subject: parameters\\r\\n\\r\\nx\\r\\n')
    out.append([code, text.decode()[:13]])
print(json.dumps(out))
`;
    const r = await python(script, [String(relay.smtp.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [
      [555, '5.5.4 MAIL FROM parameter FOO not recognized'],
      [555, '5.5.4 MAIL FROM parameter AUTH not recognized'],
      [250, 'Accepted'],
      [555, '5.5.4 RCPT TO parameter X-TAG not recognized'],
      [250, 'Accepted'],
      [250, '2.0.0 Ok: que'],
    ]);
    assert.equal((await relay.entries('alice@example.test'))[0]?.subject, 'parameters');
  });

  it('takes quoted local parts (RFC 5321 Quoted-string): "alice"@ is alice@; one that needs its quotes is a sender, never a mailbox', async () => {
    // smtplib sends the addresses as given: <"john doe"@remote.test>, <"Alice"@example.test>, …
    const r = await smtplibSend(
      relay,
      ['"Alice"@example.test', '"bob.x"@example.test', '"john doe"@example.test', '"b\\ob"@example.test'],
      Buffer.from('Subject: quoted local parts\r\n\r\nx\r\n'),
      '"john doe"@remote.test',
    );
    assert.equal(r.ok, true, JSON.stringify(r));
    // Before: 501 "Bad recipient address syntax" from smtp-server for the space, 553 for the others.
    assert.deepEqual(r.refused, {
      '"bob.x"@example.test': [550, '5.1.1 Recipient address rejected: no such user'],
      '"john doe"@example.test': [
        553,
        '5.1.3 Recipient address rejected: a quoted local part is not a mailbox here',
      ],
    });
    const alice = (await relay.entries('alice@example.test')).find((e) => e.subject === 'quoted local parts');
    const bob = (await relay.entries('bob@example.test')).find((e) => e.subject === 'quoted local parts');
    assert.equal(alice?.recipient, 'alice@example.test');
    assert.equal(bob?.recipient, 'bob@example.test');
    assert.ok(alice);
    const { trace } = stripTrace(await relay.raw('alice@example.test', alice.id));
    assert.match(trace, /^Return-Path: <"john doe"@remote\.test>\r\n/);
  });

  it('delivers once per mailbox when several recipients lead to it, and accepts dropped mail', async () => {
    const before = (await relay.entries('alice@example.test')).length;
    const r = await smtplibSend(
      relay,
      ['alice@example.test', 'team@example.test', 'alice+x@example.test', 'blackhole@example.test'],
      Buffer.from('Subject: fan-in\r\n\r\nx\r\n'),
    );
    assert.equal(r.ok, true);
    const alice = await relay.entries('alice@example.test');
    assert.equal(alice.length, before + 1);
    assert.equal(alice[0]?.subject, 'fan-in');
    assert.equal((await relay.entries('bob@example.test'))[0]?.subject, 'fan-in');
    assert.deepEqual(await relay.runtime.index.stat('alice@example.test'), {
      address: 'alice@example.test',
      messages: alice.length,
      bytes: alice.reduce((n, e) => n + e.size, 0),
    });
  });

  it('keeps everything across a restart of the relay', async () => {
    const beforeRestart = await relay.entries('alice@example.test');
    const stat = await relay.runtime.index.stat('alice@example.test');
    await relay.restart();
    assert.deepEqual(await relay.entries('alice@example.test'), beforeRestart);
    assert.deepEqual(await relay.runtime.index.stat('alice@example.test'), stat);
    const first = beforeRestart.at(-1);
    assert.ok(first);
    assert.equal((await relay.raw('alice@example.test', first.id)).length, first.size);
    // and it still accepts mail
    const r = await smtplibSend(
      relay,
      ['alice@example.test'],
      Buffer.from('Subject: after restart\r\n\r\nx\r\n'),
    );
    assert.equal(r.ok, true);
    assert.equal((await relay.entries('alice@example.test'))[0]?.subject, 'after restart');
  });
});

describe('SMTP listener with swaks', () => {
  const haveSwaks = hasCommand('swaks');
  let relay: TestRelay;
  before(async () => {
    if (haveSwaks) relay = await startTestRelay(CONFIG);
  });
  after(async () => relay?.close());

  it('delivers a message with CRLF, dot-leading lines and 8-bit bytes byte-exact', async (t) => {
    if (!requireOrAnnounce(haveSwaks, 'swaks SMTP e2e tests', 'apt-get install swaks'))
      return t.skip('no swaks');
    const dir = mkdtempSync(join(tmpdir(), 'mr-swaks-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const body = Buffer.concat([
      Buffer.from(
        'From: s@remote.test\r\nTo: alice@example.test\r\nSubject: swaks\r\nContent-Transfer-Encoding: 8bit\r\n\r\n',
      ),
      Buffer.from('.leading dot\r\n..two\r\nmiddle\r\n.\r\nend ÿ\r\n', 'latin1'),
    ]);
    writeFileSync(join(dir, 'msg.eml'), body);
    // With --no-data-fixup swaks sends the file as is, so the file holds what goes on the wire:
    // dot-stuffed (RFC 5321 §4.5.2) and ended by the lone dot. The listener must undo the stuffing.
    writeFileSync(join(dir, 'wire.eml'), `${body.toString('latin1').replace(/^\./gm, '..')}.\r\n`, 'latin1');
    const r = await run('swaks', [
      '--server',
      `127.0.0.1:${relay.smtp.port}`,
      '--from',
      's@remote.test',
      '--to',
      'alice@example.test',
      '--data',
      join(dir, 'wire.eml'),
      '--no-data-fixup',
      '--suppress-data',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /<- {2}220 mail-relay ESMTP ready\r?\n/);
    // Only what the listener keeps: no SMTPUTF8 (addresses are ASCII), no DSN (it sends none).
    assert.match(r.stdout, /<- {2}250-PIPELINING\r?\n/);
    assert.doesNotMatch(r.stdout, /<- {2}250[- ](SMTPUTF8|DSN)\b/);
    assert.match(r.stdout, /<- {2}250 2\.0\.0 Ok: queued as [0-9A-Z]{26}/);
    const [entry] = await relay.entries('alice@example.test');
    assert.ok(entry);
    assert.deepEqual(
      stripTrace(await relay.raw('alice@example.test', entry.id)).body,
      readFileSync(join(dir, 'msg.eml')),
    );
  });

  it('writes an internationalized EHLO name (sent as UTF-8) in its ASCII form in Received, not as ?s', async (t) => {
    if (!requireOrAnnounce(haveSwaks, 'swaks SMTP e2e tests', 'apt-get install swaks'))
      return t.skip('no swaks');
    const r = await run('swaks', [
      '--server',
      `127.0.0.1:${relay.smtp.port}`,
      '--helo',
      'mail.bücher.example',
      '--to',
      'alice@example.test',
      '--from',
      'a@remote.test',
      '--header',
      'Subject: idn helo',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, / -> EHLO mail\.bücher\.example\r?\n/);
    const entry = (await relay.entries('alice@example.test')).find((e) => e.subject === 'idn helo');
    assert.ok(entry);
    const { trace } = stripTrace(await relay.raw('alice@example.test', entry.id));
    assert.match(trace, /^Received: from mail\.xn--bcher-kva\.example \(\[127\.0\.0\.1\]\)\r\n/m);
  });

  it('gets 550 for a recipient outside our domains and 552 for an oversized DATA', async (t) => {
    if (!requireOrAnnounce(haveSwaks, 'swaks SMTP e2e tests', 'apt-get install swaks'))
      return t.skip('no swaks');
    const relayed = await run('swaks', [
      '--server',
      `127.0.0.1:${relay.smtp.port}`,
      '--to',
      'x@elsewhere.test',
      '--from',
      'a@b.test',
    ]);
    assert.notEqual(relayed.code, 0);
    assert.match(relayed.stdout, /<\*\* 550 5\.7\.1 Relaying denied/);

    const before = (await relay.entries('alice@example.test')).length;
    // swaks does not declare SIZE, so the limit is enforced on the data itself.
    const dir = mkdtempSync(join(tmpdir(), 'mr-swaks-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(
      join(dir, 'big.eml'),
      `Subject: big\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(Math.ceil(MAX / 1000) + 10),
    );
    const big = await run('swaks', [
      '--server',
      `127.0.0.1:${relay.smtp.port}`,
      '--to',
      'alice@example.test',
      '--from',
      'a@b.test',
      '--data',
      join(dir, 'big.eml'),
      '--suppress-data',
    ]);
    assert.notEqual(big.code, 0);
    assert.match(big.stdout, /<\*\* 552 5\.3\.4 Message size exceeds fixed limit/);
    assert.equal(
      (await relay.entries('alice@example.test')).length,
      before,
      'the oversized message was not stored',
    );
  });
});

/**
 * An SMTP client over a raw socket: the envelope pipelined, then DATA's body once 354 comes. `wait`
 * waits for the reply to the message; `disconnect` leaves (a reset) right after the final dot; `cut`
 * leaves before it.
 */
async function sendRaw(port: number, body: Buffer, then: 'wait' | 'disconnect' | 'cut'): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  let received = '';
  socket.on('data', (d: Buffer) => {
    received += d.toString('latin1');
  });
  const until = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => (re.test(received) ? resolve() : undefined);
      socket.on('data', check);
      socket.once('close', () => (re.test(received) ? resolve() : reject(new Error(`closed: ${received}`))));
      check();
    });
  await until(/^220 /m);
  socket.write('EHLO client\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  await until(/^354 /m);
  if (then === 'cut') {
    // Gone in the middle of the message: no final dot.
    await new Promise<void>((resolve) => socket.write(body, () => resolve()));
    socket.destroy();
    return received;
  }
  socket.write(body);
  socket.write('\r\n.\r\n');
  if (then === 'disconnect') {
    // Gone for good (a reset): a FIN alone is a half-close, after which the client still reads replies.
    socket.resetAndDestroy();
    return received;
  }
  await until(/^(250|4\d\d|5\d\d) [^\r\n]*\r\n(?![\s\S]*354)/m);
  socket.end('QUIT\r\n');
  return received;
}

describe('large messages take turns', () => {
  it('a message whose client left while it waited for its turn is not stored (the client sends it again)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'mr-gate-'));
    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['alice@example.test'] }),
      dataDir,
    });
    // Holds the first large message's routing until released, so the second one waits its turn.
    let releaseFirst = (): void => {};
    const held = new Promise<void>((r) => (releaseFirst = r));
    const deliver = runtime.index.deliver.bind(runtime.index);
    let first = true;
    runtime.index.deliver = async (entry, options) => {
      if (first) {
        first = false;
        await held;
      }
      return deliver(entry, options);
    };
    const smtp = await startSmtpListener(runtime, { port: 0, largeMessageBudget: 1024 * 1024 });
    try {
      const big = (subject: string) =>
        Buffer.from(`Subject: ${subject}\r\n\r\n${`${'x'.repeat(76)}\r\n`.repeat(20_000)}`);
      const one = sendRaw(smtp.port, big('first'), 'wait');
      // The first is being routed (held); the second waits for its turn, and its client leaves.
      while (first) await new Promise((r) => setTimeout(r, 20));
      await sendRaw(smtp.port, big('gone'), 'disconnect');
      await new Promise((r) => setTimeout(r, 200));
      releaseFirst();
      assert.match(await one, /^250 /m);
      const third = await sendRaw(smtp.port, big('third'), 'wait');
      assert.match(third, /^250 /m, 'the gate is free again');
      assert.deepEqual((await listAll(runtime.index, 'alice@example.test')).map((e) => e.subject).sort(), [
        'first',
        'third',
      ]);
    } finally {
      await smtp.close();
      await runtime.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('the spool: large messages wait on disk, not in memory', () => {
  const MB = 1024 * 1024;
  /** A message of about `bytes`, no line starting with a dot, with no final CRLF (sendRaw adds it). */
  const bigMessage = (subject: string, bytes: number) =>
    Buffer.from(
      `Subject: ${subject}\r\n\r\n${`${subject} ${'y'.repeat(70)}\r\n`.repeat(Math.ceil(bytes / 80))}end`,
    );
  const spoolFiles = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
  async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  async function relayWithHeldFirstDelivery(raw: Record<string, unknown> = {}) {
    const dataDir = mkdtempSync(join(tmpdir(), 'mr-spool-'));
    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['alice@example.test'], ...raw }),
      dataDir,
    });
    let releaseFirst = (): void => {};
    const held = new Promise<void>((r) => (releaseFirst = r));
    let holding = false;
    const deliver = runtime.index.deliver.bind(runtime.index);
    runtime.index.deliver = async (entry, options) => {
      if (!holding && entry.subject === 'first') {
        holding = true;
        await held;
      }
      return deliver(entry, options);
    };
    const errors: unknown[] = [];
    const smtp = await startSmtpListener(runtime, {
      port: 0,
      spoolDir: runtime.spoolDir,
      largeMessageBudget: MB,
      onError: (err) => errors.push(err),
    });
    return {
      runtime,
      smtp,
      errors,
      holding: () => holding,
      releaseFirst: () => releaseFirst(),
      close: async () => {
        releaseFirst();
        await smtp.close();
        await runtime.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  async function storedBodies(runtime: ReturnType<typeof createLocalRuntime>): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    for (const e of await listAll(runtime.index, 'alice@example.test')) {
      const raw = await runtime.blobs.get(`mailboxes/alice@example.test/${e.id}.eml`);
      assert.ok(raw, `raw of ${e.subject}`);
      out.set(e.subject, stripTrace(raw).body);
    }
    return out;
  }

  it('a large message waiting for its turn is a file in the spool (0600), then delivered byte for byte; the spool empties', async () => {
    const r = await relayWithHeldFirstDelivery();
    try {
      const first = bigMessage('first', 1.5 * MB);
      const second = bigMessage('second', 3 * MB);
      const one = sendRaw(r.smtp.port, first, 'wait');
      await until('the first message is being routed', r.holding);
      const two = sendRaw(r.smtp.port, second, 'wait');
      // Received in full (+ the CRLF before the final dot) and waiting: all of it is on disk.
      await until('the second message is in the spool', () =>
        spoolFiles(r.runtime.spoolDir).some(
          (f) => statSync(join(r.runtime.spoolDir, f)).size === second.length + 2,
        ),
      );
      const [file] = spoolFiles(r.runtime.spoolDir);
      assert.equal(statSync(join(r.runtime.spoolDir, file as string)).mode & 0o777, 0o600);
      r.releaseFirst();
      assert.match(await one, /^250 /m);
      assert.match(await two, /^250 /m);
      const stored = await storedBodies(r.runtime);
      assert.deepEqual(stored.get('first'), Buffer.concat([first, Buffer.from('\r\n')]));
      assert.deepEqual(stored.get('second'), Buffer.concat([second, Buffer.from('\r\n')]));
      assert.deepEqual(spoolFiles(r.runtime.spoolDir), [], 'the spool file is gone once routed');
      assert.deepEqual(r.errors, []);
    } finally {
      await r.close();
    }
  });

  it('a large message cut off mid-DATA leaves nothing in the spool and is not delivered', async () => {
    const r = await relayWithHeldFirstDelivery();
    try {
      await sendRaw(r.smtp.port, bigMessage('cut', 3 * MB), 'cut');
      await until('the spool is empty', () => spoolFiles(r.runtime.spoolDir).length === 0);
      // The listener still takes mail, and the cut message is nowhere.
      assert.match(await sendRaw(r.smtp.port, bigMessage('after', 2 * MB), 'wait'), /^250 /m);
      assert.deepEqual([...(await storedBodies(r.runtime)).keys()], ['after']);
      assert.deepEqual(spoolFiles(r.runtime.spoolDir), []);
    } finally {
      await r.close();
    }
  });

  it('a message over the size limit is refused (552) and not kept past it', async () => {
    const r = await relayWithHeldFirstDelivery({ maxMessageBytes: 2 * MB });
    try {
      assert.match(await sendRaw(r.smtp.port, bigMessage('huge', 5 * MB), 'wait'), /^552 5\.3\.4 /m);
      assert.deepEqual(spoolFiles(r.runtime.spoolDir), []);
      assert.equal((await storedBodies(r.runtime)).size, 0);
    } finally {
      await r.close();
    }
  });

  it('a spool that cannot be written: 452 for a large message, nothing stored; small mail is unaffected', async () => {
    const r = await relayWithHeldFirstDelivery();
    try {
      // A file where the spool directory should be: creating a spool file fails (ENOTDIR).
      rmSync(r.runtime.spoolDir, { recursive: true, force: true });
      writeFileSync(r.runtime.spoolDir, 'not a directory');
      assert.match(
        await sendRaw(r.smtp.port, bigMessage('large', 2 * MB), 'wait'),
        /^452 4\.3\.1 Insufficient system storage/m,
      );
      assert.match(await sendRaw(r.smtp.port, Buffer.from('Subject: small\r\n\r\nhi'), 'wait'), /^250 /m);
      assert.equal(r.errors.length, 1, 'the failure is reported to the operator');
      rmSync(r.runtime.spoolDir);
      assert.match(await sendRaw(r.smtp.port, bigMessage('retried', 2 * MB), 'wait'), /^250 /m);
      assert.deepEqual([...(await storedBodies(r.runtime)).keys()].sort(), ['retried', 'small']);
    } finally {
      await r.close();
    }
  });

  it('at start, spool files of processes that are gone are deleted; those of live processes are kept', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'mr-spool-'));
    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['alice@example.test'] }),
      dataDir,
    });
    try {
      mkdirSync(runtime.spoolDir);
      // pid_max is at most 2^22 on Linux: no process has this pid.
      const dead = '99999999-0123456789abcdef.part';
      const live = `${process.ppid}-0123456789abcdef.part`;
      for (const name of [dead, live, 'notes.txt']) writeFileSync(join(runtime.spoolDir, name), 'x');
      const smtp = await startSmtpListener(runtime, { port: 0, spoolDir: runtime.spoolDir });
      await smtp.close();
      assert.deepEqual(spoolFiles(runtime.spoolDir).sort(), [live, 'notes.txt'].sort());
    } finally {
      await runtime.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

/**
 * Sends `input` at once, half-closes (unless `halfClose` is false), and reads until the server closes
 * (or 10 s pass).
 */
function sendThenHalfClose(
  port: number,
  input: string,
  halfClose = true,
): Promise<{ replies: string; closedBy: 'server' | 'timeout' }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let replies = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ replies, closedBy: 'timeout' });
    }, 10_000);
    socket.on('data', (d: Buffer) => {
      replies += d.toString('latin1');
    });
    socket.once('error', reject);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ replies, closedBy: 'server' });
    });
    socket.once('connect', () => (halfClose ? socket.end(input) : socket.write(input)));
  });
}

describe('recipient limits', () => {
  let relay: TestRelay;
  before(async () => {
    relay = await startTestRelay({
      domains: ['example.test', 'many.test'],
      mailboxes: ['alice@example.test', 'all@example.test'],
      routes: [
        // A "validation" pattern that backtracks without bound; its upper-case range keeps it off
        // the linear-time engine (RouteRegex), so each new address may cost its time limit.
        {
          match: '/^slow-([A-Za-z0-9]+[._-]?)+@example\\.test$/',
          action: 'deliver' as const,
          to: ['all@example.test'],
        },
        { match: '*@many.test', action: 'deliver' as const, to: ['all@example.test'] },
      ],
    });
  });
  after(async () => relay.close());

  it(`takes ${MAX_RECIPIENTS} recipients per message; the rest get 452 4.5.3 (the client sends them again)`, async () => {
    const rcpts = Array.from({ length: MAX_RECIPIENTS + 5 }, (_, i) => `r${i}@many.test`);
    // One of the first given again (in another case) is one of the message's already: not refused.
    const r = await smtplibSend(
      relay,
      [...rcpts, 'R0@MANY.test'],
      Buffer.from('Subject: to many\r\n\r\nhello\r\n'),
    );
    assert.equal(r.ok, true, JSON.stringify(r));
    const refused = Object.entries(r.refused ?? {});
    assert.deepEqual(
      refused.map(([address]) => address),
      rcpts.slice(MAX_RECIPIENTS),
    );
    for (const [, [code, text]] of refused) {
      assert.equal(code, 452);
      assert.match(text, /^4\.5\.3 Too many recipients/);
    }
    const stored = (await relay.entries('all@example.test')).filter((e) => e.subject === 'to many');
    assert.equal(stored.length, 1);
  });

  it('closes a connection whose recipients cost too much routing time (421), and serves the next one', async () => {
    const slow = (i: number) => `slow-${'a'.repeat(30)}${i}!@example.test`;
    const rcpts = Array.from({ length: 400 }, (_, i) => `RCPT TO:<${slow(i)}>\r\n`).join('');
    const r = await sendThenHalfClose(
      relay.smtp.port,
      `EHLO client\r\nMAIL FROM:<a@remote.test>\r\n${rcpts}`,
      false,
    );
    assert.equal(r.closedBy, 'server', r.replies.slice(-300));
    assert.match(r.replies, /\r\n421 4\.7\.0 Too much routing work on this connection; try again later\r\n$/);
    // Refused as not matching (each one ran out of its time), far fewer than were sent.
    const refusedBefore = r.replies.match(/^550 /gm)?.length ?? 0;
    assert.ok(refusedBefore >= 1 && refusedBefore < 200, `${refusedBefore} refused before the 421`);
    const ok = await smtplibSend(relay, ['alice@example.test'], Buffer.from('Subject: after\r\n\r\nx\r\n'));
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.deepEqual(
      (await relay.entries('alice@example.test')).map((e) => e.subject),
      ['after'],
    );
  });
});

describe('a client that half-closes its side (printf … | nc -N)', () => {
  let relay: TestRelay;
  before(async () => {
    relay = await startTestRelay(CONFIG);
  });
  after(async () => relay.close());

  const envelope = (subject: string) =>
    `EHLO client\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: ${subject}\r\n\r\nhello\r\n`;
  const subjects = async () => (await relay.entries('bob@example.test')).map((e) => e.subject);

  it('gets the 250 of its message and the 221 of its QUIT, and the message is stored once', async () => {
    const r = await sendThenHalfClose(relay.smtp.port, `${envelope('half-closed with quit')}.\r\nQUIT\r\n`);
    assert.equal(r.closedBy, 'server');
    assert.match(r.replies, /^250 2\.0\.0 Ok: queued as \S+\r\n221 /m);
    assert.equal((await subjects()).filter((s) => s === 'half-closed with quit').length, 1);
  });

  it('without QUIT: gets the 250, then the server closes (the client can send nothing more)', async () => {
    const r = await sendThenHalfClose(relay.smtp.port, `${envelope('half-closed without quit')}.\r\n`);
    assert.equal(r.closedBy, 'server');
    assert.match(r.replies, /^250 2\.0\.0 Ok: queued as \S+\r\n$/m);
    assert.equal((await subjects()).filter((s) => s === 'half-closed without quit').length, 1);
  });

  it('three whole transactions and QUIT in one write: three 250s and the 221, three messages stored', async () => {
    const r = await sendThenHalfClose(
      relay.smtp.port,
      `${envelope('pipelined one')}.\r\n${envelope('pipelined two').replace('EHLO client\r\n', '')}.\r\n` +
        `${envelope('pipelined three').replace('EHLO client\r\n', '')}.\r\nQUIT\r\n`,
    );
    assert.equal(r.closedBy, 'server');
    assert.equal(r.replies.match(/^250 2\.0\.0 Ok: queued as /gm)?.length, 3, r.replies);
    assert.match(r.replies, /\r\n221 [^\r\n]*\r\n$/);
    const got = (await subjects()).filter((s) => s.startsWith('pipelined '));
    assert.deepEqual(got.sort(), ['pipelined one', 'pipelined three', 'pipelined two']);
  });

  it('before the final dot: no 250, and nothing is stored', async () => {
    const r = await sendThenHalfClose(relay.smtp.port, envelope('half-closed mid-message'));
    assert.equal(r.closedBy, 'server');
    assert.doesNotMatch(r.replies, /queued as/);
    assert.deepEqual(
      (await subjects()).filter((s) => s === 'half-closed mid-message'),
      [],
    );
  });

  it('a non-ASCII MAIL FROM gets 553 (SMTPUTF8 is not offered), as a non-ASCII RCPT TO does', async () => {
    const r = await sendThenHalfClose(
      relay.smtp.port,
      'EHLO client\r\nMAIL FROM:<josé@sender.test>\r\nMAIL FROM:<jose@sender.test> SMTPUTF8\r\n' +
        'MAIL FROM:<jose@sender.test>\r\nRCPT TO:<bób@example.test>\r\nQUIT\r\n',
    );
    assert.match(r.replies, /^553 5\.6\.7 Non-ASCII sender address not accepted/m);
    assert.match(r.replies, /^555 5\.5\.4 SMTPUTF8 is not offered here/m);
    assert.match(
      r.replies,
      /^250 [^\r\n]*\r\n553 5\.6\.7 Non-ASCII recipient address not accepted \(no SMTPUTF8\)\r\n221 /m,
    );
  });
});

/**
 * One transaction per address: MAIL, RCPT, then DATA (Subject `s<i>`) when the RCPT was taken, else
 * RSET. Commands go out as UTF-8 (an internationalized domain written as such). Prints
 * `[rcptCode, rcptText, dataCode]` per address as JSON.
 */
const SMTPLIB_EACH = `
import json, smtplib, sys
port, addresses = int(sys.argv[1]), json.load(sys.stdin)
out = []
with smtplib.SMTP('127.0.0.1', port, timeout=30) as s:
    s.ehlo()
    for i, a in enumerate(addresses):
        s.mail('sender@remote.test')
        s.command_encoding = 'utf-8'  # smtplib resets it to ASCII (RSET, MAIL)
        code, text = s.rcpt(a)
        data = None
        if code < 300:
            data = s.data(f'From: sender@remote.test\\r\\nSubject: s{i}\\r\\n\\r\\nhello\\r\\n'.encode())[0]
        else:
            s.rset()
        out.append([code, text.decode(), data])
print(json.dumps(out))
`;

describe('what `mail-relay route` prints is what happens to mail over SMTP (every kind of route)', () => {
  const ROUTED = {
    domains: ['example.test', 'Other.Test', 'auto.test', 'loop.test', 'xn--mnchen-3ya.test'],
    mailboxes: [
      'alice@example.test',
      'Bob@Example.test',
      'archive@example.test',
      'first.last@example.test',
      "o'brien@example.test",
      'carol@other.test',
      '*@auto.test',
      'info@xn--mnchen-3ya.test',
    ],
    routes: [
      { match: 'postmaster@example.test', action: 'deliver', to: ['alice@example.test'] },
      {
        match: 'team@example.test',
        action: 'deliver',
        to: ['alice@example.test', 'bob@example.test', 'first.last@example.test'],
      },
      { match: 'boss@example.test', action: 'forward', to: ['boss.private@gmail.test', 'Boss@Yahoo.test'] },
      { match: 'old@example.test', action: 'reject', code: 551, message: '5.1.6 User has moved' },
      { match: 'Busy@Example.test', action: 'reject', code: 450 },
      { match: 'noreply@example.test', action: 'drop' },
      { match: '/^(.+)-team@example\\.test$/', action: 'deliver', to: ['$1@example.test'] },
      { match: '/^sales-(.+)@example\\.test$/', action: 'forward', to: ['$1@partner.test'] },
      { match: 'alice+lists@example.test', action: 'deliver', to: ['archive@example.test'] },
      { match: 'ops@example.test', action: 'deliver', to: ['team@example.test', 'oncall@example.test'] },
      // Part refused after the RCPT was taken for the rest: said by `route`, not seen by the sender.
      { match: 'legacy@example.test', action: 'deliver', to: ['alice@example.test', 'old@example.test'] },
      { match: '/^x(.*)@example\\.test$/', action: 'deliver', to: ['$1@other.test', 'archive@example.test'] },
      { match: '/^(.+)\\.dept@other\\.test$/', action: 'deliver', to: ['$1@example.test'] },
      { match: 'x-info@auto.test', action: 'deliver', to: ['info@xn--mnchen-3ya.test'] },
      { match: '*@loop.test', action: 'forward', to: ['$0'] },
      { match: '*@example.test', action: 'deliver', to: ['archive@example.test'] },
    ],
  } satisfies RawConfig;
  let relay: TestRelay;
  let configFile: string;
  before(async () => {
    relay = await startTestRelay(ROUTED);
    configFile = join(relay.dataDir, 'routed.config.json');
    writeFileSync(configFile, JSON.stringify(ROUTED));
  });
  after(async () => relay.close());

  /** Addresses of every route kind, with tags, case and domain spellings, and some made at random (seeded). */
  function addresses(): string[] {
    const locals = [
      'alice',
      'bob',
      'archive',
      'first.last',
      "o'brien",
      'team',
      'boss',
      'old',
      'busy',
      'noreply',
      'alice-team',
      'nobody-team',
      'sales-joe',
      'sales-',
      'ops',
      'legacy',
      'xalice',
      'xcarol',
      'x',
      'postmaster',
      'carol',
      'carol.dept',
      'alice.dept',
      'nobody',
      'info',
      'x-info',
      'quarantine',
      'forwarder',
      'bób',
      '+tag',
      'alice+',
      'alice+lists',
      'alice+other',
      'alice+lists+x',
      'bob+',
      'team+t',
    ];
    const domains = [
      'example.test',
      'EXAMPLE.TEST',
      'other.test',
      'auto.test',
      'loop.test',
      'xn--mnchen-3ya.test',
      'XN--MNCHEN-3YA.test',
      'münchen.test',
      'elsewhere.test',
      'sub.example.test',
    ];
    // By the address `route` prints (lower-cased), so that no two share its lines.
    const out = new Map<string, string>([['postmaster', 'Postmaster']]);
    const add = (address: string) => out.set(address.toLowerCase(), address);
    for (const local of locals) add(`${local}@example.test`);
    for (const domain of domains)
      add(`info@${domain}`).set(`alice@${domain}`.toLowerCase(), `alice@${domain}`);
    let seed = 20261128;
    const next = (n: number) => {
      // xorshift32, in 32-bit integers (a product past 2^53 loses bits and may cycle early).
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const atoms = 'abcdefghijklmnopqrstuvwxyz0123456789_-';
    for (let tries = 0; out.size < 220 && tries < 10_000; tries++) {
      // A local part smtp-server takes: no dot at either end, none doubled (those get its 501).
      const local =
        next(2) === 0
          ? (locals[next(locals.length)] as string)
          : Array.from({ length: 1 + next(8) }, () => atoms[next(atoms.length)]).join('');
      const tag = ['', '', '+t', '+lists', '+a+b', '-x'][next(6)];
      const cased = [local, local.toUpperCase(), local.charAt(0).toUpperCase() + local.slice(1)][next(3)];
      add(`${cased}${tag}@${domains[next(domains.length)]}`);
    }
    return [...out.values()];
  }

  it('takes an xn-- domain as written (smtp-server decodes it): mail for a configured one, and from one', async () => {
    // Before: 553 5.1.3 for info@xn--mnchen-3ya.test, and 553 5.6.7 "Non-ASCII sender" for an ASCII sender.
    const r = await sendThenHalfClose(
      relay.smtp.port,
      'EHLO client\r\nMAIL FROM:<s@xn--bcher-kva.example>\r\nRCPT TO:<info@xn--mnchen-3ya.test>\r\n' +
        'DATA\r\nSubject: idn\r\n\r\nhello\r\n.\r\nQUIT\r\n',
    );
    assert.match(r.replies, /^250 Accepted\r\n250 Accepted\r\n354 [^\r\n]*\r\n250 2\.0\.0 Ok/m, r.replies);
    const [entry] = (await relay.entries('info@xn--mnchen-3ya.test')).filter((e) => e.subject === 'idn');
    assert.ok(entry);
    assert.equal(entry.recipient, 'info@xn--mnchen-3ya.test');
    const { trace } = stripTrace(await relay.raw('info@xn--mnchen-3ya.test', entry.id));
    assert.match(trace, /^Return-Path: <s@xn--bcher-kva\.example>\r\n/);
  });

  it('for each address: the RCPT reply, and every mailbox, outbox entry and loop notice the mail reaches', async () => {
    const list = addresses();
    // What `route` prints, in-process (the command, as a user runs it on the same file).
    let printed = '';
    const out = new PassThrough().on('data', (c: Buffer) => {
      printed += c.toString();
    });
    await main(['route', '--', ...list], {
      out,
      err: new PassThrough(),
      env: { MAIL_RELAY_CONFIG: configFile },
    });
    out.end();
    await once(out, 'end');
    const said = new Map<string, string[]>();
    for (const line of printed.split('\n').slice(1)) {
      if (line === '') continue;
      const at = line.indexOf(': ');
      said.set(line.slice(0, at), [...(said.get(line.slice(0, at)) ?? []), line.slice(at + 2)]);
    }

    const sent = await python(SMTPLIB_EACH, [String(relay.smtp.port)], JSON.stringify(list));
    assert.equal(sent.code, 0, sent.stderr);
    const replies = JSON.parse(sent.stdout) as [number, string, number | null][];

    // Where each message (subject s<i>) landed: mailboxes (with its tag), the outbox, loop notices.
    const landed = new Map<string, string[]>();
    const add = (subject: string, where: string) =>
      landed.set(subject, [...(landed.get(subject) ?? []), where]);
    const config = parseConfig(ROUTED);
    const page = await relay.runtime.index.listMailboxes({ limit: 1000 });
    for (const { address } of page.items) {
      for (const e of await relay.entries(address)) {
        const loop = /^Forwarding loop cut: (s\d+)$/.exec(e.subject);
        if (loop) add(loop[1] as string, `notice in ${address}`);
        else add(e.subject, `deliver to mailbox ${address}${e.plusTag ? ` [+${e.plusTag}]` : ''}`);
      }
    }
    for (const item of await listOutbox(relay.runtime.blobs)) {
      for (const to of item.to) add(item.subject, `forward to ${to}`);
    }

    // Every kind of outcome is among them (the comparison below is not vacuous).
    const kinds = new Set([...said.values()].flat().map((l) => /^(\S+ \S+)/.exec(l)?.[1]));
    for (const kind of [
      'deliver to',
      'forward to',
      'reject 550',
      'reject 551',
      'reject 450',
      'reject 553',
      'drop (accepted',
    ]) {
      assert.ok(kinds.has(kind), `no address got "${kind}…"`);
    }
    assert.match(printed, /: not sent, loop\.test is one of our domains/);
    assert.match(printed, /^info@münchen\.test: deliver to mailbox info@xn--mnchen-3ya\.test via mailbox$/m);
    list.forEach((address, i) => {
      const lines = said.get(address.toLowerCase()) ?? [];
      assert.ok(lines.length > 0, `route printed nothing for ${address}:\n${printed}`);
      const [code, text, data] = replies[i] as [number, string, number | null];
      const rejects = lines.filter((l) => l.startsWith('reject '));
      if (rejects.length === lines.length) {
        // Refused at RCPT with the reply route names (its first).
        assert.equal(
          `reject ${code} ${text}`,
          rejects[0]?.replace(/ via routes\[\d+\] \(.*\)$/, ''),
          address,
        );
        assert.equal(landed.get(`s${i}`), undefined, address);
        return;
      }
      assert.deepEqual([code, data], [250, 250], `${address}: ${text}`);
      const expected = lines
        .filter((l) => !l.startsWith('reject ') && !l.startsWith('drop '))
        .map((l) =>
          l.includes(': not sent, ')
            ? `notice in ${config.relay.notifyMailbox}`
            : // A forward's tag is the recipient's, which its X-Forwarded-For names; not a mailbox's tag.
              l
                .replace(/ via .*$/, '')
                .replace(/^(forward to \S+) \[\+.*\]$/, '$1')
                .replace(/ \[\+\]$/, ''),
        )
        .sort();
      assert.deepEqual(
        (landed.get(`s${i}`) ?? []).sort(),
        expected,
        `${address}: route said\n${lines.join('\n')}`,
      );
    });
  });
});

describe('clients that reset their connection', () => {
  it('are not reported as errors (at the greeting, after RCPT, mid-DATA), and the listener goes on taking mail', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'mr-smtp-reset-'));
    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['alice@example.test'] }),
      dataDir,
    });
    const errors: unknown[] = [];
    const smtp = await startSmtpListener(runtime, { port: 0, onError: (err) => errors.push(err) });
    const envelope = ['EHLO x', 'MAIL FROM:<a@remote.test>', 'RCPT TO:<alice@example.test>'];
    try {
      for (const commands of [[], envelope, [...envelope, 'DATA']]) {
        const socket = connect(smtp.port, '127.0.0.1');
        let got = '';
        socket.on('data', (d: Buffer) => {
          got += d.toString('latin1');
        });
        // Each command after the answer to the one before (the greeting first).
        const answered = async (n: number) => {
          while ((got.match(/^\d{3} /gm) ?? []).length < n) await new Promise((r) => setTimeout(r, 10));
        };
        await answered(1);
        for (const [i, command] of commands.entries()) {
          socket.write(`${command}\r\n`);
          await answered(i + 2);
        }
        if (commands.at(-1) === 'DATA') socket.write('Subject: cut\r\n\r\npart of a body');
        socket.resetAndDestroy();
        await once(socket, 'close');
      }
      await new Promise((r) => setTimeout(r, 300));
      const sent = await python(
        "import smtplib,sys\ns = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))\ns.sendmail('a@remote.test', ['alice@example.test'], b'Subject: after\\r\\n\\r\\nok\\r\\n')\ns.quit()",
        [String(smtp.port)],
      );
      assert.equal(sent.code, 0, sent.stderr);
      assert.deepEqual(
        (await listAll(runtime.index, 'alice@example.test')).map((e) => e.subject),
        ['after'],
        'nothing of the cut message, the next one stored',
      );
      assert.deepEqual(errors, []);
    } finally {
      await smtp.close();
      await runtime.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
