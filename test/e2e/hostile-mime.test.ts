/**
 * Structurally extreme mail through the real paths (a QA pass): each message is generated here, sent
 * over SMTP by a real client to the local relay, and read back over its HTTP API. The relay must
 * answer it clearly, keep within its memory, store it, and serve it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { messageDetailSchema } from '../../functions/api/schemas.ts';
import { SUMMARY_BODY_MAX_CHARS } from '../../functions/core/message.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { BIN, cleanEnv, startDev } from '../helpers/dev.ts';
import { freePort } from '../helpers/net.ts';
import { python, run } from '../helpers/process.ts';

const ALICE = 'alice@example.test';

/** Sends `message` (its bytes on stdin) to alice@ on `port` with Python's smtplib; answers the DATA reply. */
async function sendWithSmtplib(port: number, message: Buffer): Promise<string> {
  const sent = await python(
    [
      'import smtplib,sys',
      "s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=120)",
      "s.ehlo('client.remote.test')",
      "s.mail('sender@remote.test')",
      "s.rcpt('alice@example.test')",
      'code, text = s.data(sys.stdin.buffer.read())',
      "print(code, text.decode('latin1'))",
      's.quit()',
    ].join('\n'),
    [String(port)],
    message,
  );
  assert.equal(sent.code, 0, sent.stderr);
  return sent.stdout.trim();
}

describe('mail-relay dev with a bounded heap: a text body of millions of empty lines', () => {
  /** The relay's heap: room for it at rest and a 10 MB message, not for ~35 bytes per line break. */
  const HEAP_MB = 160;
  const LINES = 10 * 1024 * 1024;
  let dataDir: string;
  let apiPort: number;
  let token: string;
  let dev: Awaited<ReturnType<typeof startDev>>;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'mr-hostile-'));
    const created = await run(process.execPath, [BIN, 'token', 'create', ALICE], {
      env: cleanEnv({ MAIL_RELAY_DATA_DIR: dataDir }),
      cwd: dataDir,
    });
    assert.equal(created.code, 0, created.stderr);
    token = created.stdout.trim();
    apiPort = await freePort();
    dev = await startDev(dataDir, {
      cwd: dataDir,
      env: { NODE_OPTIONS: `--max-old-space-size=${HEAP_MB}`, MAIL_RELAY_API_PORT: String(apiPort) },
    });
  });

  after(async () => {
    if (dev !== undefined && dev.child.exitCode === null) {
      dev.child.kill('SIGTERM');
      await once(dev.child, 'exit');
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  const api = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${apiPort}/v1/mailboxes/${ALICE}${path}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    return res.json();
  };

  it('10 MB of line feeds: 250, listed, its text served (cut as any long body is), and the relay goes on', async () => {
    // mailparser's CRLF-to-LF pass cost ~35 bytes of heap per line break: ~350 MB here, past the heap.
    const message = Buffer.concat([
      Buffer.from('From: <sender@remote.test>\r\nSubject: blank lines\r\n\r\nfirst line\n'),
      Buffer.alloc(LINES, '\n'),
    ]);
    assert.match(await sendWithSmtplib(dev.port, message), /^250 /, dev.output());

    const list = (await api('/messages')) as { items: { id: string; subject: string; size: number }[] };
    assert.deepEqual(
      list.items.map((i) => i.subject),
      ['blank lines'],
    );
    const detail = messageDetailSchema.parse(await api(`/messages/${list.items[0]?.id}`));
    assert.equal(detail.parseFailed, false);
    assert.equal(detail.truncated.text, true);
    assert.ok(detail.text?.startsWith('first line\n\n\n'), JSON.stringify(detail.text?.slice(0, 40)));
    assert.ok((detail.text?.length ?? 0) <= SUMMARY_BODY_MAX_CHARS);
    assert.match(detail.text ?? '', /^first line\n+$/);

    // Still up, and still taking mail.
    assert.match(
      await sendWithSmtplib(dev.port, Buffer.from('Subject: after\r\n\r\nstill here\r\n')),
      /^250 /,
      dev.output(),
    );
    assert.equal(dev.child.exitCode, null, dev.output());
  });

  it('10 MB of bare CRs (line breaks as classic Mac mailers wrote them): 250, listed, its text served', async () => {
    // Read with CR as its line break (MailparserAdapter), each CR made CRLF by a regular expression:
    // ~35 bytes of heap per CR, ~350 MB here, past the heap.
    const message = Buffer.concat([
      Buffer.from('From: <sender@remote.test>\rSubject: bare CRs\r\rfirst line\r'),
      Buffer.alloc(LINES, '\r'),
    ]);
    assert.match(await sendWithSmtplib(dev.port, message), /^250 /, dev.output());

    const list = (await api('/messages')) as { items: { id: string; subject: string }[] };
    const listed = list.items.find((i) => i.subject === 'bare CRs');
    assert.ok(listed, JSON.stringify(list.items.map((i) => i.subject)));
    const detail = messageDetailSchema.parse(await api(`/messages/${listed.id}`));
    assert.equal(detail.parseFailed, false);
    assert.equal(detail.truncated.text, true);
    assert.match(detail.text ?? '', /^first line\n\n+$/);
    assert.equal(dev.child.exitCode, null, dev.output());
  });
});

/** The header fields every generated message starts with (after any that a test puts first). */
const HEAD =
  'From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n';

describe('structurally extreme mail through SMTP and the API', () => {
  let env: ApiTestEnv;
  let token: string;
  before(async () => {
    env = await startApiTestEnv();
    token = await env.token(ALICE);
  });
  after(async () => env?.close());

  const base = `/v1/mailboxes/${ALICE}/messages`;
  const json = async (path: string) => {
    const res = await env.request(path, { token });
    assert.equal(res.status, 200, path);
    return res.json();
  };

  const pastTheParser: [string, () => string][] = [
    [
      '10,000 attachments',
      () =>
        `${HEAD}Subject: ten thousand parts\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n${Array.from(
          { length: 10_000 },
          (_, i) =>
            `--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="f${i}.bin"\r\n\r\nx\r\n`,
        ).join('')}--B--\r\n`,
    ],
    [
      'multipart nested 1,001 deep',
      () => {
        let body = 'Content-Type: text/plain\r\n\r\ninnermost\r\n';
        for (let i = 1001; i >= 1; i--) {
          body = `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n${body}\r\n--b${i}--\r\n`;
        }
        return `${HEAD}Subject: nested deep\r\n${body}`;
      },
    ],
    [
      '100,000 header fields before From and Subject (as Received lines come first)',
      () =>
        `${Array.from({ length: 100_000 }, (_, i) => `X-Hop-${i}: v\r\n`).join('')}${HEAD}Subject: many fields\r\n\r\nbody\r\n`,
    ],
  ];

  for (const [what, build] of pastTheParser) {
    it(`${what}: 250, listed by its sender and subject, its header fields served, the raw message byte-exact`, async () => {
      const message = Buffer.from(build());
      assert.match(await sendWithSmtplib(env.smtp.port, message), /^250 /);
      const subject = /^Subject: (.*)\r$/m.exec(message.toString('latin1'))?.[1] ?? assert.fail('no subject');

      const list = (await json(base)) as { items: { id: string; from: string; subject: string }[] };
      const item = list.items[0] ?? assert.fail('not listed');
      // Before, such a message was listed with no sender and no subject: it could not be told apart.
      assert.deepEqual([item.from, item.subject], ['Sender <sender@remote.test>', subject]);
      const detail = messageDetailSchema.parse(await json(`${base}/${item.id}`));
      assert.equal(detail.parseFailed, true);
      assert.ok((detail.parseError ?? '').length > 0);
      assert.equal(detail.date, '2026-11-28T10:00:00.000Z');
      assert.deepEqual(detail.addresses.to, [{ name: '', address: ALICE }]);
      assert.ok(detail.headers.some((h) => h.name === 'Subject' && h.value === subject));
      assert.deepEqual([detail.text, detail.html, detail.attachments], [null, null, []]);

      const raw = await env.request(`${base}/${item.id}/raw`, { token });
      assert.equal(raw.status, 200);
      const served = Buffer.from(await raw.arrayBuffer());
      assert.ok(served.subarray(served.length - message.length).equals(message), 'the raw message as sent');

      // The relay goes on: the next message is delivered and parsed.
      assert.match(
        await sendWithSmtplib(env.smtp.port, Buffer.from(`${HEAD}Subject: next\r\n\r\nhi\r\n`)),
        /^250 /,
      );
      const next = (await json(base)) as { items: { subject: string }[] };
      assert.equal(next.items[0]?.subject, 'next');
    });
  }

  it('a part is served under its name in its true order: bidirectional overrides and isolates left out', async () => {
    // U+202E (RLO) shows `invoice\u202efdp.exe` as "invoiceexe.pdf"; U+2067 (RLI) and U+2069 (PDI) likewise.
    const names = ['invoice\u202efdp.exe', 'report\u2067fdp.scr\u2069.txt', 'plain.pdf'];
    const parts = names.map(
      (name) =>
        `--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=UTF-8''${encodeURIComponent(name)}\r\n\r\nbytes of ${name.length}\r\n`,
    );
    const message = Buffer.from(
      `From: <sender@remote.test>\r\nSubject: names\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsee the files\r\n${parts.join('')}--B--\r\n`,
    );
    assert.match(await sendWithSmtplib(env.smtp.port, message), /^250 /);

    const list = (await json(base)) as { items: { id: string }[] };
    const id = list.items[0]?.id ?? assert.fail('not listed');
    const detail = messageDetailSchema.parse(await json(`${base}/${id}`));
    // The message's data keeps the sender's names as they were sent.
    assert.deepEqual(
      detail.attachments.map((a) => a.filename),
      names,
    );
    const served: string[] = [];
    for (const a of detail.attachments) {
      const res = await env.request(`${base}/${id}/parts/${a.partId}`, { token });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      const disposition = res.headers.get('content-disposition') ?? '';
      const extended = /filename\*=UTF-8''([^;]+)/.exec(disposition)?.[1] ?? assert.fail(disposition);
      served.push(decodeURIComponent(extended));
    }
    assert.deepEqual(served, ['invoicefdp.exe', 'reportfdp.scr.txt', 'plain.pdf']);
  });
});
