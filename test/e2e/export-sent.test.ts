/**
 * `mail-relay export <mailbox> --sent` and `import --sent-of <mailbox>` as a user runs them: alice
 * sends mail with `POST …/send` through a smarthost on loopback, the binary exports her sent view
 * (an mbox, a Maildir++ `.Sent` folder beside her inbox's Maildir), each message byte for byte what the
 * API serves with `view=sent`, and `import --sent-of` puts it into a fresh data dir's sent view, read
 * there through the API (STAT, LIST, raw, read state), routed nowhere; a second import is a no-op.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createToken } from '../../functions/api/auth.ts';
import { InProcessMailWaiter } from '../../functions/api/waiter.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { startApiServer } from '../../functions/local/api-server.ts';
import { importFiles } from '../../functions/local/import.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { BIN, cleanEnv } from '../helpers/dev.ts';
import { python, run } from '../helpers/process.ts';
import { recordCalls } from '../helpers/record-calls.ts';
import { type RemoteMx, startRemoteMx } from '../helpers/remote-mx.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const BASE = `/v1/mailboxes/${ALICE}`;

const work = mkdtempSync(join(tmpdir(), 'mr-export-sent-'));
after(() => rmSync(work, { recursive: true, force: true }));
const configPath = join(work, 'mail-relay.config.json');

/** The binary, on a data dir. */
function cli(dataDir: string, args: readonly string[]) {
  return run(process.execPath, [BIN, ...args], {
    env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir }),
    timeoutMs: 120_000,
  });
}

interface SentMessage {
  readonly id: string;
  readonly subject: string;
  readonly seen: boolean;
  readonly receivedAt: string;
  readonly raw: Buffer;
}

/** The sent view as the API serves it, oldest first: LIST's fields and each message's `raw`. */
async function sentView(url: string, token: string): Promise<{ stat: unknown; messages: SentMessage[] }> {
  const get = (path: string) => fetch(`${url}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  const stat = await (await get(`${BASE}?view=sent`)).json();
  const list = (await (await get(`${BASE}/messages?view=sent&limit=100`)).json()) as {
    items: { id: string; subject: string; seen: boolean; receivedAt: string }[];
    nextCursor: string | null;
  };
  assert.equal(list.nextCursor, null);
  const messages: SentMessage[] = [];
  for (const item of list.items.reverse()) {
    const raw = await get(`${BASE}/messages/${item.id}/raw?view=sent`);
    assert.equal(raw.status, 200);
    messages.push({ ...item, raw: Buffer.from(await raw.arrayBuffer()) });
  }
  return { stat, messages };
}

/** The C library's asctime in UTC, as an mbox `From ` line dates a message: `Sun Nov  9 08:05:03 2026`. */
function asctime(iso: string): string {
  const d = new Date(iso);
  const day = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][d.getUTCDay()];
  const month = d.toUTCString().slice(8, 11);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${day} ${month} ${String(d.getUTCDate()).padStart(2, ' ')} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

/**
 * What an mboxrd export of these messages is, written out here by its rules (ADR 22) rather than by
 * the exporter's code: `From <owner> <receipt time>`, the read state and marker fields (with the
 * message's id), the message
 * with LF line ends and `>*From ` lines quoted once more, and an empty line after it.
 */
function expectedMbox(owner: string, messages: readonly SentMessage[]): string {
  return messages
    .map((m) => {
      const text = m.raw.toString('latin1');
      assert.ok(!/\r(?!\n)|(?<!\r)\n/.test(text), 'a sent copy is CRLF throughout');
      const body = text.replaceAll('\r\n', '\n').replace(/^(>*From )/gm, '>$1');
      return (
        `From ${owner} ${asctime(m.receivedAt)}\n` +
        `Status: ${m.seen ? 'RO' : 'O'}\nX-Mozilla-Status: ${m.seen ? '0001' : '0000'}\n` +
        `X-Mail-Relay-Export: mboxrd; eol=crlf; size=${m.raw.length}; id=${m.id}\n` +
        `${body}${body.endsWith('\n') ? '' : '\n'}\n`
      );
    })
    .join('');
}

/** The API of the relay on a data dir (the one `import` wrote), on loopback, for as long as `use` runs. */
async function withApiOn<T>(
  dataDir: string,
  config: RawConfig,
  use: (url: string, token: string) => Promise<T>,
): Promise<T> {
  const runtime = createLocalRuntime({ config: parseConfig(config), dataDir });
  const api = await startApiServer(runtime, { port: 0, waiter: new InProcessMailWaiter() });
  try {
    const { token } = await createToken(runtime.index, { mailbox: ALICE });
    return await use(api.url, token);
  } finally {
    await api.close();
    await runtime.close();
  }
}

/** The messages as sets of bytes with their read state and receipt second: import orders by receipt time. */
function asSet(messages: readonly SentMessage[]): Map<string, { seen: boolean; second: string }> {
  return new Map(
    messages.map((m) => [m.raw.toString('latin1'), { seen: m.seen, second: m.receivedAt.slice(0, 19) }]),
  );
}

describe('mail-relay export --sent and import --sent-of, local', () => {
  let mx: RemoteMx;
  let env: ApiTestEnv;
  let config: RawConfig;
  let sent: { stat: unknown; messages: SentMessage[] };
  let mbox: string;
  let maildir: string;
  /**
   * A sent view read back is the one exported: STAT, each message's bytes, read state and receipt
   * time, and the ids and receipt times of the store it came from (the export says them).
   */
  const assertAsSent = (view: { stat: unknown; messages: SentMessage[] }, label: string) => {
    assert.deepEqual(view.stat, sent.stat, `${label}: STAT, as many messages, as many bytes`);
    assert.deepEqual(
      asSet(view.messages),
      asSet(sent.messages),
      `${label}: raw byte for byte, read state, receipt time`,
    );
    assert.deepEqual(
      view.messages.map((m) => [m.id, m.receivedAt]),
      sent.messages.map((m) => [m.id, m.receivedAt]),
      `${label}: ids and receipt times`,
    );
  };

  before(async () => {
    mx = await startRemoteMx();
    config = { domains: ['example.test'], mailboxes: [ALICE, BOB], relay: { smtp: mx.url } };
    writeFileSync(configPath, JSON.stringify(config));
    env = await startApiTestEnv({ config });
    const alice = await env.token(ALICE);
    // Something in her inbox too, so that a view leaking into the other would show.
    await env.deliver([ALICE], Buffer.from('From: friend@remote.test\r\nSubject: received\r\n\r\nhello\r\n'));
    const send = async (body: string, type = 'application/json') => {
      const res = await env.request(`${BASE}/send`, {
        method: 'POST',
        token: alice,
        headers: { 'Content-Type': type },
        body,
      });
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { id: string }).id;
    };
    await send(
      JSON.stringify({
        to: 'carol@remote.test',
        bcc: 'dave@remote.test',
        subject: 'Quarterly numbers',
        // Lines an mbox writer must quote, and undo on the way back.
        text: 'From the start of a line.\n>From quoted once.\nthe end\n',
        attachments: [{ filename: 'n.bin', contentType: 'application/octet-stream', content: 'AAEC+vv/' }],
      }),
    );
    const second = await send(JSON.stringify({ to: BOB, subject: 'to bob, one of ours', text: 'hi bob' }));
    await send(
      'From: Alice <alice@example.test>\r\nTo: erin@remote.test\r\nSubject: raw one\r\n\r\nFrom me, raw.\r\n',
      'message/rfc822',
    );
    const read = await env.request(`${BASE}/messages/${second}?view=sent`, {
      method: 'PATCH',
      token: alice,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ seen: true }),
    });
    assert.equal(read.status, 200, await read.clone().text());
    sent = await sentView(env.url, alice);
    assert.equal(sent.messages.length, 3);
    assert.deepEqual(
      sent.messages.map((m) => m.seen),
      [false, true, false],
    );
    mbox = join(work, 'alice.sent.mbox');
    maildir = join(work, 'Maildir');
  });
  after(async () => {
    await env?.close();
    await mx?.close();
  });

  it('export --sent writes the sent view as an mbox, byte for byte what the API serves with view=sent; export without it is the inbox, as before', async () => {
    const r = await cli(env.dataDir, ['export', ALICE, '--sent', '--out', mbox]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^exported 3 messages \(\d+\.\d MB\) of the sent mail of alice@example\.test to .*\n$/,
    );
    assert.equal(readFileSync(mbox, 'latin1'), expectedMbox(ALICE, sent.messages));

    // The inbox's export is what it was: the received message alone, its sender from its Return-Path.
    const inbox = await cli(env.dataDir, ['export', ALICE]);
    assert.equal(inbox.code, 0, inbox.stderr);
    assert.match(inbox.stderr, /^exported 1 message \(\d+\.\d MB\) of alice@example\.test to stdout\n$/);
    assert.match(
      inbox.stdout,
      /^From sender@remote\.test .*\nStatus: O\n[\s\S]*\nSubject: received\n\nhello\n\n$/,
    );
    assert.doesNotMatch(inbox.stdout, /Quarterly/);
  });

  it('export --sent --format maildir writes a Maildir++ .Sent folder, and the inbox goes into the Maildir around it; Python reads both', async () => {
    const sentDir = join(maildir, '.Sent');
    const r = await cli(env.dataDir, ['export', ALICE, '--sent', '--format', 'maildir', '--out', sentDir]);
    assert.equal(r.code, 0, r.stderr);
    const files = new Map<string, string>();
    for (const sub of ['new', 'cur'])
      for (const name of readdirSync(join(sentDir, sub)))
        files.set(readFileSync(join(sentDir, sub, name), 'latin1'), `${sub}/${name}`);
    assert.equal(files.size, 3);
    for (const m of sent.messages) {
      const where = files.get(m.raw.toString('latin1'));
      assert.ok(where, `"${m.subject}" is in the Maildir byte for byte`);
      assert.equal(/^cur\/.*:2,S$/.test(where), m.seen, `"${m.subject}": ${where}`);
      // Its id in this data dir, after the host, as Dovecot adds `,S=<size>`.
      assert.match(where, new RegExp(`^(new|cur)/\\d+\\.M\\d+R[0-9a-f]{32}\\.[^/:,]+,I=${m.id}(:2,S)?$`));
    }
    // The inbox after its sent mail: a Maildir holding only its folders is empty, not refused.
    const inbox = await cli(env.dataDir, ['export', ALICE, '--format', 'maildir', '--out', maildir]);
    assert.equal(inbox.code, 0, inbox.stderr);
    const read = await python(
      `import mailbox, sys, json
box = mailbox.Maildir(sys.argv[1], factory=None, create=False)
sent = box.get_folder("Sent")
print(json.dumps({"folders": box.list_folders(), "inbox": [m["Subject"] for m in box],
                  "sent": sorted(m["Subject"] for m in sent)}))`,
      [maildir],
    );
    assert.equal(read.code, 0, read.stderr);
    assert.deepEqual(JSON.parse(read.stdout), {
      folders: ['Sent'],
      inbox: ['received'],
      sent: ['Quarterly numbers', 'raw one', 'to bob, one of ours'],
    });
    // With anything else in it, a directory is still refused.
    const other = join(work, 'not-empty');
    mkdirSync(join(other, '.Sent'), { recursive: true });
    writeFileSync(join(other, 'notes.txt'), 'mine');
    const refused = await cli(env.dataDir, ['export', ALICE, '--format', 'maildir', '--out', other]);
    assert.equal(refused.code, 1, refused.stderr);
  });

  it('import --sent-of puts the mbox into a fresh data dir’s sent view: STAT, LIST, raw and read state as they were, nothing routed; again a no-op', async () => {
    const fresh = mkdtempSync(join(work, 'fresh-'));
    const sentBefore = mx.received.length;
    const r = await cli(fresh, ['import', '--sent-of', ALICE, mbox]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /^imported 3\/3 messages from 1 file in [\d.]+s: delivered 3, duplicate 0,/);
    const back = await withApiOn(fresh, config, async (url, token) => {
      // Nothing was routed: neither alice's inbox nor bob's has it, and nothing was sent.
      const inbox = (await (
        await fetch(`${url}${BASE}`, { headers: { Authorization: `Bearer ${token}` } })
      ).json()) as {
        messages: number;
      };
      assert.equal(inbox.messages, 0);
      return await sentView(url, token);
    });
    assertAsSent(back, 'the mbox');
    assert.deepEqual(back.messages.map((m) => m.subject).sort(), sent.messages.map((m) => m.subject).sort());
    assert.equal(mx.received.length, sentBefore);
    const bob = await cli(fresh, ['export', BOB]);
    assert.match(bob.stderr, /^bob@example\.test has no mail in /);

    const again = await cli(fresh, ['import', '--sent-of', ALICE, mbox]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^imported 3\/3 messages from 1 file in [\d.]+s: delivered 0, duplicate 3,/);
    // Found there before anything is written: no blob, no index entry, no flag, not even the same again.
    const runtime = createLocalRuntime({ config: parseConfig(config), dataDir: fresh });
    const writes: string[] = [];
    try {
      const { blobs, index } = runtime.unjournaled;
      recordCalls(writes, blobs, 'blobs', ['put', 'copy', 'delete']);
      recordCalls(writes, index, 'index', ['deliver', 'delete', 'setSeen']);
      const third = await importFiles(runtime, [mbox], {
        sentOf: { owner: ALICE, stores: { blobs, index } },
      });
      assert.match(third.line, /delivered 0, duplicate 3,/);
      assert.deepEqual(writes, []);
    } finally {
      await runtime.close();
    }
    // The Maildir export of the same messages is the same messages.
    const maildirToo = await cli(fresh, ['import', '--sent-of', ALICE, join(maildir, '.Sent')]);
    assert.equal(maildirToo.code, 0, maildirToo.stderr);
    assert.match(maildirToo.stdout, /delivered 0, duplicate 3,/);
    const after = await withApiOn(fresh, config, (url, token) => sentView(url, token));
    assert.deepEqual(after.stat, sent.stat);
  });

  it('import --sent-of reads the Maildir++ folder into a fresh data dir the same way; a message deleted there since stays deleted unless --restore-deleted', async () => {
    const fresh = mkdtempSync(join(work, 'fresh-'));
    const r = await cli(fresh, ['import', '--sent-of', ALICE, join(maildir, '.Sent')]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /delivered 3, duplicate 0,/);
    assertAsSent(await withApiOn(fresh, config, (url, token) => sentView(url, token)), 'the Maildir');

    const gone = sent.messages[1]?.id ?? '';
    await withApiOn(fresh, config, async (url, token) => {
      const res = await fetch(`${url}${BASE}/messages/${gone}?view=sent`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 204, await res.text());
    });
    const kept = await cli(fresh, ['import', '--sent-of', ALICE, mbox]);
    assert.match(kept.stdout, /delivered 0, duplicate 3,/, kept.stderr);
    const without = await withApiOn(fresh, config, (url, token) => sentView(url, token));
    assert.deepEqual(
      without.messages.map((m) => m.id),
      sent.messages.map((m) => m.id).filter((id) => id !== gone),
    );
    const restored = await cli(fresh, ['import', '--sent-of', ALICE, '--restore-deleted', mbox]);
    assert.match(restored.stdout, /delivered 1, duplicate 2,/, restored.stderr);
    // Under its own id, byte for byte, with its read state and receipt time.
    assertAsSent(await withApiOn(fresh, config, (url, token) => sentView(url, token)), 'restored');
  });

  it('import --sent-of of the exports back into the data dir they came from finds every message there: nothing doubled', async () => {
    for (const exported of [mbox, join(maildir, '.Sent')]) {
      const r = await cli(env.dataDir, ['import', '--sent-of', ALICE, exported]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /delivered 0, duplicate 3,/, exported);
    }
    const alice = await env.token(ALICE);
    const now = await sentView(env.url, alice);
    assert.deepEqual(now.stat, sent.stat);
    assert.deepEqual(
      now.messages.map((m) => [m.id, m.seen]),
      sent.messages.map((m) => [m.id, m.seen]),
    );
  });

  it('--sent-of with --to, or naming what is not a mailbox, is a usage error; export --sent of an unknown address is refused', async () => {
    const fresh = mkdtempSync(join(work, 'fresh-'));
    const both = await cli(fresh, ['import', '--sent-of', ALICE, '--to', BOB, mbox]);
    assert.equal(both.code, 2);
    assert.match(
      both.stderr,
      /^mail-relay import: --sent-of puts the mail into a sent view, --to routes it to mailboxes: give one of them\nUsage: mail-relay import /,
    );
    const notMailbox = await cli(fresh, ['import', '--sent-of', 'nobody@example.test', mbox]);
    assert.equal(notMailbox.code, 2);
    assert.match(
      notMailbox.stderr,
      /^mail-relay import: --sent-of: nobody@example\.test is not a mailbox in the configuration /,
    );
    const notAddress = await cli(fresh, ['import', '--sent-of', 'alice', mbox]);
    assert.equal(notAddress.code, 2);
    assert.match(notAddress.stderr, /^mail-relay import: --sent-of: alice is not an address\n$/);
    assert.deepEqual(readdirSync(fresh), [], 'nothing written');
    const unknown = await cli(env.dataDir, ['export', 'nobody@elsewhere.test', '--sent']);
    assert.equal(unknown.code, 1);
    assert.match(
      unknown.stderr,
      /^mail-relay export: no sent mail stored for nobody@elsewhere\.test in .*, and it is not a mailbox in the configuration\n$/,
    );
  });
});
