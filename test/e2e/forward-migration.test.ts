/**
 * What a user switching from aws-lambda-ses-forwarder gets, checked from the text of
 * docs/migrating-from-ses-forwarder.md: its jq program turns the forwarder's configuration into the
 * guide's, and every row of the guide's table, sent over SMTP to a relay on loopback (forwarding
 * through `relay.smtp` to a second SMTP server playing the destinations' MX), reaches the destinations
 * the row names, once each, with the forwarder's subject prefix. The same rows go through the AWS
 * router's path on moto (SESv2). Also: a bounce of a forward, sent back to the sending address as
 * smarthosts and SES's feedback do, is not forwarded back to where it bounced.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { Sesv2Outbound } from '../../functions/adapters/aws/sesv2-outbound.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { fieldValue, splitMessage } from '../../functions/core/mime-header.ts';
import { buildNotification } from '../../functions/core/notification.ts';
import { LOCAL_BUCKET, traceHeaders } from '../../functions/local/ingest.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { processNotification } from '../../functions/pipeline/router.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { BIN, cleanEnv } from '../helpers/dev.ts';
import { hasCommand, PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { type Moto, motoAvailable, startMoto } from '../helpers/moto.ts';
import { run } from '../helpers/process.ts';
import { type RemoteMx, startRemoteMx } from '../helpers/remote-mx.ts';

const GUIDE = readFileSync(join(PROJECT_ROOT, 'docs/migrating-from-ses-forwarder.md'), 'utf8');

/** The first fenced block of `lang` after the first occurrence of `marker` in the guide. */
function blockAfter(marker: string, lang: string): string {
  const at = GUIDE.indexOf(marker);
  assert.ok(at >= 0, `the guide has no "${marker}"`);
  const open = GUIDE.indexOf(`\n\`\`\`${lang}\n`, at);
  assert.ok(open >= 0, `the guide has no \`\`\`${lang} block after "${marker}"`);
  const start = open + lang.length + 5;
  return GUIDE.slice(start, GUIDE.indexOf('\n```\n', start) + 1);
}

const FORWARDER_CONFIG = blockAfter('## A worked example', 'json');
const OUR_CONFIG = JSON.parse(blockAfter('becomes this', 'json')) as RawConfig;
const JQ_PROGRAM = blockAfter('The conversion as a jq program', 'jq');
const PREFIX = '[fwd] ';
const NOTIFY = 'quarantine@example.com';
const SENDING = 'noreply@example.com';

interface Row {
  readonly to: string[];
  readonly destinations: string[];
}

/** The guide's "sent to | forwarded to" table: backquoted addresses in each cell, `nobody` for none. */
function guideRows(): Row[] {
  const at = GUIDE.indexOf('| sent to | forwarded to |');
  assert.ok(at >= 0, 'the guide has its table of messages');
  const lines = GUIDE.slice(at).split('\n').slice(2);
  const rows: Row[] = [];
  for (const line of lines) {
    if (!line.startsWith('|')) break;
    const [to, destinations] = line
      .split('|')
      .slice(1, 3)
      .map((cell) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? ''));
    assert.ok(to && to.length > 0 && destinations, line);
    rows.push({ to, destinations });
  }
  assert.ok(rows.length >= 8, `the table has ${rows.length} rows`);
  return rows;
}

const message = (subject: string, to: string) =>
  `From: Jane Example <jane@example.org>\r\nTo: ${to}\r\nSubject: ${subject}\r\n` +
  `Message-ID: <${subject.replace(/\W/g, '')}@example.org>\r\n\r\nHello.\r\n`;

function subjectOf(raw: Buffer): string {
  const f = splitMessage(raw).fields.find((x) => x.key === 'subject');
  return f ? fieldValue(f).trim() : '';
}

const jq = requireOrAnnounce(hasCommand('jq'), "the migration guide's jq program (jq)", 'apt-get install jq');

describe("the guide's jq program", { skip: !jq }, () => {
  it("turns the forwarder's configuration into the guide's mail-relay configuration", async () => {
    const work = mkdtempSync(join(tmpdir(), 'mr-migrate-'));
    try {
      writeFileSync(join(work, 'forwarder-to-mail-relay.jq'), JQ_PROGRAM);
      writeFileSync(join(work, 'forwarder.json'), FORWARDER_CONFIG);
      const domains = JSON.stringify(OUR_CONFIG.domains);
      const r = await run(
        'jq',
        ['--argjson', 'domains', domains, '-f', 'forwarder-to-mail-relay.jq', 'forwarder.json'],
        { cwd: work },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), OUR_CONFIG);
      parseConfig(JSON.parse(r.stdout));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe("the guide's configuration on a local relay, over SMTP", () => {
  let mx: RemoteMx;
  let env: ApiTestEnv;
  before(async () => {
    mx = await startRemoteMx();
    env = await startApiTestEnv({ config: { ...OUR_CONFIG, relay: { ...OUR_CONFIG.relay, smtp: mx.url } } });
  });
  after(async () => {
    await env?.close();
    await mx?.close();
  });

  const send = async (envelope: { from: string; to: string[] }, raw: string) => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: env.smtp.port, ignoreTLS: true });
    try {
      return await transport.sendMail({ envelope, raw });
    } finally {
      transport.close();
    }
  };

  const notices = async (): Promise<string[]> => {
    const token = await env.token(NOTIFY);
    const res = await env.request(`/v1/mailboxes/${NOTIFY}/messages?limit=100`, { token });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { items: { subject: string }[] };
    return body.items.map((i) => i.subject);
  };

  for (const [i, row] of guideRows().entries()) {
    it(`${row.to.join(' + ')}: ${row.destinations.join(', ') || 'nobody'}`, async () => {
      const subject = `migration row ${i}`;
      const before = mx.received.length;
      await send({ from: 'jane@example.org', to: row.to }, message(subject, row.to.join(', ')));
      const got = mx.received.slice(before);
      // Each destination once, one message each, with the forwarder's prefix.
      assert.deepEqual(got.map((m) => m.rcptTo.join()).sort(), [...row.destinations].sort());
      for (const m of got) {
        assert.equal(subjectOf(m.raw), `${PREFIX}${subject}`);
        assert.equal(m.mailFrom, SENDING);
      }
      if (row.destinations.length === 0) {
        assert.ok((await notices()).includes(`Forwarding loop cut: ${subject}`), 'a notice says why');
      }
    });
  }

  it('mail for a domain the relay does not receive is refused at RCPT with 550 5.7.1', async () => {
    await assert.rejects(
      send(
        { from: 'jane@example.org', to: ['someone@example.net'] },
        message('elsewhere', 'someone@example.net'),
      ),
      (err: Error & { responseCode?: number; response?: string }) =>
        err.responseCode === 550 && /5\.7\.1/.test(err.response ?? ''),
    );
  });

  it('a subject in encoded words is still read as text after the prefix', async () => {
    const before = mx.received.length;
    await send(
      { from: 'jane@example.org', to: ['abuse@example.com'] },
      'From: jane@example.org\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nHallo.\r\n',
    );
    const [got] = mx.received.slice(before);
    assert.ok(got);
    assert.equal((await simpleParser(got.raw)).subject, `${PREFIX}Grüße`);
  });

  it('a bounce of a forward, sent to the sending address, does not go back to the address that bounced', async () => {
    // What the destination's MX sends when jim@ has gone: a DSN from the null sender to the
    // envelope sender of our forward, our headers only inside its copy of the message.
    const before = mx.received.length;
    await send(
      { from: 'jane@example.org', to: ['abuse@example.com'] },
      message('abuse report', 'abuse@example.com'),
    );
    const [forwarded] = mx.received.slice(before);
    assert.ok(forwarded);
    const head = forwarded.raw.toString('latin1').split('\r\n\r\n')[0];
    const dsn =
      'From: Mail Delivery System <MAILER-DAEMON@example.net>\r\n' +
      `To: ${SENDING}\r\nSubject: Undelivered Mail Returned to Sender\r\n` +
      'Message-ID: <dsn-1@example.net>\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n' +
      '--b\r\nContent-Type: text/plain\r\n\r\n<jim@example.net>: mailbox unavailable\r\n' +
      '--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n' +
      'Final-Recipient: rfc822; jim@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n' +
      `--b\r\nContent-Type: text/rfc822-headers\r\n\r\n${head}\r\n--b--\r\n`;
    const after = mx.received.length;
    await send({ from: '', to: [SENDING] }, dsn);
    assert.deepEqual(
      mx.received.slice(after).map((m) => m.rcptTo.join()),
      [],
      'nothing is sent on: the catch-all of example.com would send it to john@, whose bounce comes back',
    );
    assert.ok((await notices()).includes('Forwarding loop cut: Undelivered Mail Returned to Sender'));
  });

  it('`mail-relay route` says that mail for the sending address is not forwarded', async () => {
    const work = mkdtempSync(join(tmpdir(), 'mr-migrate-route-'));
    try {
      const path = join(work, 'config.json');
      writeFileSync(path, JSON.stringify(OUR_CONFIG));
      const r = await run(process.execPath, [BIN, 'route', SENDING, 'anyone@example.com'], {
        env: cleanEnv({ MAIL_RELAY_CONFIG: path }),
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /noreply@example\.com: forward to john@example\.net via routes\[2\] \(\*@example\.com\): not sent, noreply@example\.com is the address forwarded mail is sent from.*\(cut as a loop; a notice goes to quarantine@example\.com\)/,
      );
      assert.match(
        r.stdout,
        /anyone@example\.com: forward to john@example\.net via routes\[2\] \(\*@example\.com\)\n/,
      );
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('an oversize forward on a route with subjectPrefix', () => {
  it('the notice sent instead carries the prefix too, so a filter on it still finds the mail', async () => {
    const mx = await startRemoteMx();
    const env = await startApiTestEnv({
      config: { ...OUR_CONFIG, relay: { ...OUR_CONFIG.relay, smtp: mx.url, maxSendBytes: 1024 } },
    });
    try {
      await env.deliver(
        ['abuse@example.com'],
        Buffer.from(message('big report', 'abuse@example.com') + 'x'.repeat(4000)),
      );
      const [notice] = mx.to('jim@example.net');
      assert.ok(notice);
      assert.equal(subjectOf(notice.raw), `${PREFIX}[Too large to forward] big report`);
    } finally {
      await env.close();
      await mx.close();
    }
  });
});

const available = motoAvailable();

describe("the guide's configuration on the AWS router's path (SESv2 on moto)", { skip: !available }, () => {
  let moto: Moto;
  let ses: SESv2Client;
  let dir: string;
  let runtime: ReturnType<typeof createLocalRuntime>;

  before(async () => {
    moto = await startMoto();
    ses = new SESv2Client(moto.clientConfig);
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.com' }));
    dir = mkdtempSync(join(tmpdir(), 'mr-migrate-ses-'));
    runtime = createLocalRuntime({ config: parseConfig(OUR_CONFIG), dataDir: dir });
  });
  after(async () => {
    await runtime?.close();
    ses?.destroy();
    await moto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('each row: SES is asked once per destination, from the sending address, with the prefix', async () => {
    const deps = { ...runtime, outbound: new Sesv2Outbound({ client: ses }) };
    for (const [i, row] of guideRows().entries()) {
      const sesMessageId = `migrate${String(i).padStart(33, '0')}`;
      const receivedAt = new Date(Date.UTC(2026, 10, 29, 10, 0, i));
      const subject = `migration row ${i}`;
      const input = {
        body: Buffer.from(message(subject, row.to.join(', '))),
        mailFrom: 'jane@example.org',
        recipients: row.to,
        via: { protocol: 'ESMTP' as const, helo: 'mx.example.org', remoteAddress: '192.0.2.7' },
      };
      const raw = Buffer.concat([traceHeaders(input, sesMessageId, receivedAt), input.body]);
      const notification = buildNotification({
        sesMessageId,
        receivedAt,
        mailFrom: input.mailFrom,
        // SES hands the recipients over in lower case, as our listener does.
        recipients: row.to.map((a) => a.toLowerCase()),
        verdicts: { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' },
        bucketName: LOCAL_BUCKET,
      });
      await deps.blobs.put(notification.receipt.action.objectKey, raw);
      const sentBefore = (await moto.sentRawMessages()).length;
      const r = await processNotification(deps, notification, { raw });
      const sent = (await moto.sentRawMessages()).slice(sentBefore);
      assert.deepEqual(
        // moto adds the To header's addresses (ours) to the envelope's: the destinations are example.net's.
        sent.flatMap((m) => m.destinations.filter((d) => d.endsWith('@example.net'))).sort(),
        [...row.destinations].sort(),
        `${row.to.join()}: ${r.outcomes.map((o) => `${o.status} ${o.detail ?? ''}`).join('; ')}`,
      );
      for (const m of sent) {
        assert.equal(m.source, SENDING);
        assert.equal(subjectOf(Buffer.from(m.raw_data, 'utf8')), `${PREFIX}${subject}`);
      }
    }
  });
});
