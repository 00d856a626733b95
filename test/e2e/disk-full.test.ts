/**
 * `mail-relay dev` with its data dir on a small tmpfs that fills up, as a laptop's or a CI runner's
 * disk does: what SMTP clients, API clients, the log and the CLI see, and that nothing answered
 * `250` is lost, through freeing space (no restart), a crash while full and the restart after it.
 * Needs root to mount the tmpfs (helpers/tmpfs.ts).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BIN, cleanEnv, type DevProcess, startDev } from '../helpers/dev.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { freePort } from '../helpers/net.ts';
import { python, run } from '../helpers/process.ts';
import { fillDisk, freeDisk, mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.ts';
import { until } from '../helpers/until.ts';

const MAILBOX = 'alice@example.test';

/**
 * Sends messages over one SMTP session (python3 smtplib), one per size given, each with a subject of
 * its own; prints `code<TAB>text` per message. A refused message is followed by RSET, as a mailer does.
 * Given a pid, kills it (SIGKILL) the moment the last reply is in, before QUIT: a relay that dies
 * right after its `250`, with no time for a journal checkpoint in between.
 */
const SEND = `
import os, signal, smtplib, sys
port, tag, sizes = int(sys.argv[1]), sys.argv[2], [int(x) for x in sys.argv[3].split(',')]
kill = int(sys.argv[4]) if len(sys.argv) > 4 else None
s = smtplib.SMTP('127.0.0.1', port, timeout=60)
for i, size in enumerate(sizes):
    body = ('Subject: %s-%d\\r\\n\\r\\n' % (tag, i)).encode() + bytes(65 + (k % 26) for k in range(size)) + b'\\r\\n'
    try:
        s.ehlo_or_helo_if_needed(); s.mail('me@sender.test'); s.rcpt('${MAILBOX}')
        code, text = s.data(body)
    except smtplib.SMTPResponseException as e:
        code, text = e.smtp_code, e.smtp_error
        s.rset()
    if kill is not None and i == len(sizes) - 1:
        os.kill(kill, signal.SIGKILL)
    print('%d\\t%s' % (code, text.decode()), flush=True)
if kill is None:
    s.quit()
s.close()
`;

/** The body `SEND` sends for one size (what the stored message ends with, behind our trace headers). */
function bodyOf(tag: string, i: number, size: number): Buffer {
  const text = Buffer.alloc(size);
  for (let k = 0; k < size; k++) text[k] = 65 + (k % 26);
  return Buffer.concat([Buffer.from(`Subject: ${tag}-${i}\r\n\r\n`), text, Buffer.from('\r\n')]);
}

interface Sent {
  readonly subject: string;
  readonly body: Buffer;
  readonly code: number;
  readonly text: string;
}

async function send(port: number, tag: string, sizes: readonly number[], killPid?: number): Promise<Sent[]> {
  const r = await python(SEND, [
    String(port),
    tag,
    sizes.join(','),
    ...(killPid === undefined ? [] : [String(killPid)]),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, sizes.length, r.stdout);
  return lines.map((line, i) => {
    const [code, text] = line.split('\t');
    return {
      subject: `${tag}-${i}`,
      body: bodyOf(tag, i, sizes[i] ?? 0),
      code: Number(code),
      text: text ?? '',
    };
  });
}

/** `mail-relay <args>` on the data dir, as a user runs it. */
function cli(dataDir: string, args: readonly string[], env: Record<string, string> = {}) {
  return run(process.execPath, [BIN, ...args], {
    env: cleanEnv({ MAIL_RELAY_DATA_DIR: dataDir, ...env }),
    cwd: PROJECT_ROOT,
    timeoutMs: 30_000,
  });
}

const point = mountTmpfs('mr-disk-full-e2e', 16);

describe('mail-relay dev on a disk that fills up', { skip: point === null }, () => {
  const root = point ?? '';
  const dataDir = join(root, 'data');
  const filler = join(root, 'filler');
  let dev: DevProcess | undefined;
  let apiUrl = '';
  let token = '';
  /** Every message the relay answered, in order. */
  const sent: Sent[] = [];

  const startRelay = async () => {
    dev = await startDev(dataDir);
    const api = /api: +(http:\/\/127\.0\.0\.1:\d+)\/v1\//.exec(dev.output());
    assert.ok(api, dev.output());
    apiUrl = api[1] ?? '';
  };
  const stopRelay = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (dev === undefined || dev.child.exitCode !== null) return;
    dev.child.kill(signal);
    await once(dev.child, 'exit');
  };
  /** Resolves once the journal directory is empty: the last checkpoint has deleted its segment. */
  const journalCheckpointed = () =>
    until('the journal to checkpoint', () =>
      readdirSync(join(dataDir, 'journal')).length === 0 ? true : undefined,
    );
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${apiUrl}/v1/mailboxes/${MAILBOX}${path}`, {
      ...init,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...init.headers },
    });

  before(async () => {
    await startRelay();
    const created = await cli(dataDir, ['token', 'create', MAILBOX]);
    assert.equal(created.code, 0, created.stderr);
    token = created.stdout.trim().split('\n')[0] ?? '';
    sent.push(...(await send(dev?.port ?? 0, 'before', [2000, 40_000])));
    assert.deepEqual(
      sent.map((s) => s.code),
      [250, 250],
    );
    // Past the journal's checkpoint (a second after the first append): its segment is deleted now,
    // not while the disk is full (the room it gives back would let a message through).
    await journalCheckpointed();
  });
  after(async () => {
    await stopRelay('SIGKILL');
    if (point !== null) unmountTmpfs(point);
  });

  it('answers 452 4.3.1 to mail it cannot store, small, spooled (1.5 MiB) and pipelined, and says so once in its log', async () => {
    fillDisk(filler);
    const full = [
      ...(await send(dev?.port ?? 0, 'full-a', [8000, 30_000, 1_500_000, 8000, 60_000, 8000])),
      ...(await send(dev?.port ?? 0, 'full-b', [8000, 8000, 100_000, 8000])),
    ];
    sent.push(...full);
    for (const s of full) {
      // Refused for want of room, in words a sender's log makes sense of; or stored, when a checkpoint
      // freed a little room meanwhile.
      if (s.code !== 250)
        assert.equal(
          `${s.code} ${s.text}`,
          '452 4.3.1 Insufficient system storage for the message; try again later',
        );
    }
    const refused = full.filter((s) => s.code !== 250).length;
    assert.ok(refused >= full.length - 2, `most were refused: ${JSON.stringify(full.map((s) => s.code))}`);
    const log = dev?.output() ?? '';
    assert.equal(log.match(/no space left on the disk of /g)?.length, 1, log);
    assert.doesNotMatch(log, /smtp error/, 'no line per refused message');
    assert.equal(dev?.child.exitCode, null, 'still running');
  });

  it('answers API writes with 507 insufficient_storage and changes nothing; reads keep working', async () => {
    const list = (await (await api('/messages')).json()) as { items: { id: string; seen: boolean }[] };
    const stat = await (await api('')).json();
    const [first, second] = list.items;
    assert.ok(first && second);
    // Writes until the index's WAL has no room left in what it already holds (a write or two may fit).
    const refusedWrites: { status: number; body: unknown }[] = [];
    const attempts: (() => Promise<Response>)[] = [
      () => api(`/messages/${first.id}`, { method: 'DELETE' }),
      () => api('/messages/delete', { method: 'POST', body: JSON.stringify({ ids: [first.id, second.id] }) }),
      () => api('/messages', { method: 'DELETE' }),
      () =>
        api('/send', {
          method: 'POST',
          body: JSON.stringify({ to: ['x@other.test'], subject: 's', text: 'hi' }),
        }),
    ];
    for (const attempt of attempts) {
      const r = await attempt();
      refusedWrites.push({ status: r.status, body: await r.json() });
    }
    for (const w of refusedWrites) {
      assert.deepEqual(w, {
        status: 507,
        body: {
          error: {
            code: 'insufficient_storage',
            message: 'the server has no space left to store this; try again later',
          },
        },
      });
    }
    // Nothing half done: the mailbox is as it was, and it still reads.
    assert.deepEqual(await (await api('')).json(), stat);
    const raw = await api(`/messages/${first.id}/raw`);
    assert.equal(raw.status, 200);
    assert.ok((await raw.arrayBuffer()).byteLength > 0);
    const log = dev?.output() ?? '';
    assert.equal(log.match(/no space left on the disk of /g)?.length, 1, 'still the one line');
    assert.doesNotMatch(log, /internal error/);
  });

  it('takes mail again once there is room, without a restart', async () => {
    freeDisk(filler);
    const again = await send(dev?.port ?? 0, 'room', [2000, 1_500_000]);
    sent.push(...again);
    assert.deepEqual(
      again.map((s) => s.code),
      [250, 250],
    );
  });

  it('keeps every 250 through a crash on a full disk: the next start says what to do, and recovers once there is room', async () => {
    // Messages answered 250 whose journal segment is still there when the relay dies. The last
    // checkpoint is done first (the journal directory is empty then), so the next is a second after
    // the first of these is journaled, and the relay is killed long before.
    await journalCheckpointed();
    const relay = dev?.child;
    assert.ok(relay?.pid !== undefined);
    const exited = once(relay, 'exit');
    sent.push(...(await send(dev?.port ?? 0, 'crash', [3000, 5000], relay.pid)));
    await exited;
    assert.ok(readdirSync(join(dataDir, 'journal')).length > 0, 'a segment to recover');
    fillDisk(filler);

    const port = await freePort();
    const apiPort = await freePort();
    const refused = await cli(dataDir, ['dev'], {
      MAIL_RELAY_SMTP_PORT: String(port),
      MAIL_RELAY_API_PORT: String(apiPort),
    });
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /^mail-relay: .*free (some )?(disk )?space/);
    assert.doesNotMatch(refused.stderr, /^\s+at /m, 'no stack trace');
    assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);

    freeDisk(filler);
    await startRelay();
    assert.match(dev?.output() ?? '', /recovered \d+ journaled messages/);
    type Item = { id: string; subject: string; size: number };
    const items: Item[] = [];
    let cursor: string | null = null;
    do {
      const page = (await (await api(`/messages?limit=1000${cursor ? `&cursor=${cursor}` : ''}`)).json()) as {
        items: Item[];
        nextCursor: string | null;
      };
      items.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor !== null);
    const stat = (await (await api('')).json()) as { messages: number; bytes: number };
    assert.equal(stat.messages, items.length, 'STAT = LIST');
    assert.equal(
      stat.bytes,
      items.reduce((n, i) => n + i.size, 0),
    );
    const accepted = sent.filter((s) => s.code === 250);
    assert.equal(items.length, accepted.length, 'exactly the mail answered 250, nothing else');
    for (const s of accepted) {
      const found = items.filter((i) => i.subject === s.subject);
      assert.equal(found.length, 1, `${s.subject} once`);
      const raw = Buffer.from(await (await api(`/messages/${found[0]?.id}/raw`)).arrayBuffer());
      assert.ok(raw.subarray(raw.length - s.body.length).equals(s.body), `${s.subject} byte for byte`);
    }
  });

  it('CLI commands on a full disk exit 1 with one line, and import is re-runnable once there is room', async () => {
    await stopRelay();
    fillDisk(filler);
    const files = ['plain-crlf.eml', 'alternative.eml', 'mixed-attachment.eml'].map((f) =>
      join(PROJECT_ROOT, 'test/fixtures', f),
    );
    for (const args of [
      ['token', 'create', 'bob@example.test'],
      ['compact'],
      ['import', '--to', MAILBOX, ...files],
    ]) {
      const r = await cli(dataDir, args);
      assert.equal(r.code, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /no space left/, `${args[0]} says why: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^\s+at /m, `${args[0]}: no stack trace`);
    }
    freeDisk(filler);
    const imported = await cli(dataDir, ['import', '--to', MAILBOX, ...files]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /imported 3\/3 files/);
    const created = await cli(dataDir, ['token', 'create', 'bob@example.test']);
    assert.equal(created.code, 0, created.stderr);
  });
});
