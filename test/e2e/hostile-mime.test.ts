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

describe('attachment names that disguise a file, through SMTP and the API', () => {
  let env: ApiTestEnv;
  let token: string;
  before(async () => {
    env = await startApiTestEnv();
    token = await env.token(ALICE);
  });
  after(async () => env?.close());

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

    const base = `/v1/mailboxes/${ALICE}/messages`;
    const list = (await (await env.request(base, { token })).json()) as { items: { id: string }[] };
    const id = list.items[0]?.id ?? assert.fail('not listed');
    const detail = messageDetailSchema.parse(await (await env.request(`${base}/${id}`, { token })).json());
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
