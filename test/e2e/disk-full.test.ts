/**
 * `mail-relay dev` with its data dir on a small tmpfs that fills up, as a laptop's or a CI runner's
 * disk does: what SMTP clients, API clients, the log and the CLI see, and that nothing answered
 * `250` is lost, through freeing space (no restart), a crash while full and the restart after it.
 * Needs root to mount the tmpfs (helpers/tmpfs.ts).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, statfsSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startPop3Bridge } from '../../functions/local/pop3-bridge.ts';
import { BIN, cleanEnv, type DevProcess, startDev } from '../helpers/dev.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { freePort } from '../helpers/net.ts';
import { python, run } from '../helpers/process.ts';
import { fillDisk, freeDisk, mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.ts';
import { until } from '../helpers/until.ts';

const MAILBOX = 'alice@example.test';
/** A bound on what deleting messages writes to the disk itself (measured: 28 KiB for one). */
const DELETE_WRITES_BYTES = 256 * 1024;

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

/** Marks the message with the given UIDL deleted over POP3 (python3 poplib), then QUIT; prints QUIT's reply. */
const POP3_DELE = `
import poplib, sys
port, user, password, uid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
p = poplib.POP3('127.0.0.1', port, timeout=20)
p.user(user)
p.pass_(password)
n = [l.decode().split()[0] for l in p.uidl()[1] if l.decode().split()[1] == uid]
assert len(n) == 1, p.uidl()
p.dele(n[0])
print(p.quit().decode())
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

const point = mountTmpfs('mr-disk-full-e2e', 24);

describe('mail-relay dev on a disk that fills up', { skip: point === null }, () => {
  const root = point ?? '';
  const dataDir = join(root, 'data');
  const filler = join(root, 'filler');
  let dev: DevProcess | undefined;
  let apiUrl = '';
  let token = '';
  /** Every message the relay answered, in order. */
  const sent: Sent[] = [];
  /** The subjects of the mail deleted through the API. */
  const deleted = new Set<string>();

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

  /** Free bytes on the tmpfs, as `df` says. */
  const freeBytes = () => {
    const { bavail, bsize } = statfsSync(root);
    return bavail * bsize;
  };
  /** Every file name under the blob root (the large blobs' files: a message's `.eml` and parts). */
  const blobFiles = () =>
    readdirSync(join(dataDir, 'blobs'), { recursive: true, encoding: 'utf8' }).filter((f) =>
      /\.eml$/.test(f),
    );
  type Listed = { id: string; subject: string; size: number };
  const listAll = async () =>
    ((await (await api('/messages?limit=1000')).json()) as { items: Listed[] }).items;

  /**
   * On the full disk: deletes the large message with subject `<tag>-2` on its own, then two in a batch,
   * then the rest with DELETE …/messages; checks STAT and LIST after each, that the deleted mail's
   * files are gone and their room given back, and that the next message is taken (250).
   */
  const deleteEverythingOnFullDisk = async (tag: string) => {
    const items = await listAll();
    const large = items.find((i) => i.subject === `${tag}-2`);
    assert.ok(large, JSON.stringify(items));
    assert.ok(
      blobFiles().some((f) => f.includes(large.id)),
      'the large message is a file',
    );
    const freeBefore = freeBytes();

    const one = await api(`/messages/${large.id}`, { method: 'DELETE' });
    assert.equal(one.status, 204, await one.text());
    assert.equal((await api(`/messages/${large.id}`)).status, 404);
    let stat = (await (await api('')).json()) as { messages: number; bytes: number };
    assert.equal(stat.messages, items.length - 1);
    assert.deepEqual(
      blobFiles().filter((f) => f.includes(large.id)),
      [],
      'its file is gone',
    );
    // Less what the delete itself wrote (WAL frames of the two databases: a few KiB).
    assert.ok(
      freeBytes() - freeBefore >= large.size - DELETE_WRITES_BYTES,
      `its room is given back: ${freeBefore} -> ${freeBytes()} bytes free, the message had ${large.size}`,
    );

    const rest = items.filter((i) => i.id !== large.id);
    const pair = rest.slice(0, 2).map((i) => i.id);
    const batch = await api('/messages/delete', { method: 'POST', body: JSON.stringify({ ids: pair }) });
    assert.equal(batch.status, 200, await batch.clone().text());
    assert.deepEqual(await batch.json(), { deleted: pair, notFound: [] });
    stat = (await (await api('')).json()) as { messages: number; bytes: number };
    assert.equal(stat.messages, items.length - 3);

    const all = await api('/messages', { method: 'DELETE' });
    assert.equal(all.status, 200);
    assert.deepEqual(await all.json(), { deleted: items.length - 3, more: false });
    assert.deepEqual(await (await api('')).json(), { address: MAILBOX, messages: 0, bytes: 0 });
    assert.deepEqual(await listAll(), []);
    assert.deepEqual(blobFiles(), [], 'no message file is left');

    // The room given back takes mail again, no restart: and the reserve is made again first.
    const next = await send(dev?.port ?? 0, `${tag}-after`, [2000]);
    sent.push(...next);
    assert.deepEqual(
      next.map((s) => `${s.code}`),
      ['250'],
    );
    // Deleted: not what a restart must bring back.
    for (const i of items) deleted.add(i.subject);
  };

  before(async () => {
    await startRelay();
    const created = await cli(dataDir, ['token', 'create', MAILBOX]);
    assert.equal(created.code, 0, created.stderr);
    token = created.stdout.trim().split('\n')[0] ?? '';
    // The last is large: a file of its own, whose deletion gives room back on the full disk.
    sent.push(...(await send(dev?.port ?? 0, 'before', [2000, 40_000, 3_000_000])));
    assert.deepEqual(
      sent.map((s) => s.code),
      [250, 250, 250],
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

  it('answers other API writes with 507 insufficient_storage and changes nothing; reads keep working', async () => {
    const list = (await (await api('/messages')).json()) as { items: { id: string }[] };
    const stat = await (await api('')).json();
    const first = list.items[0];
    assert.ok(first);
    const r = await api('/send', {
      method: 'POST',
      body: JSON.stringify({ to: ['x@other.test'], subject: 's', text: 'hi' }),
    });
    assert.deepEqual(
      { status: r.status, body: await r.json() },
      {
        status: 507,
        body: {
          error: {
            code: 'insufficient_storage',
            message: 'the server has no space left to store this; try again later',
          },
        },
      },
    );
    // Nothing half done: the mailbox is as it was, and it still reads.
    assert.deepEqual(await (await api('')).json(), stat);
    const raw = await api(`/messages/${first.id}/raw`);
    assert.equal(raw.status, 200);
    assert.ok((await raw.arrayBuffer()).byteLength > 0);
    const log = dev?.output() ?? '';
    assert.equal(log.match(/no space left on the disk of /g)?.length, 1, 'still the one line');
    assert.doesNotMatch(log, /internal error/);
  });

  it('deletes on the full disk (one, a batch, all), gives the room back, and takes the next message with 250', async () => {
    await deleteEverythingOnFullDisk('before');
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

  it('deletes on a second full disk as on the first: the reserve came back', async () => {
    assert.equal(statSync(join(dataDir, 'disk-reserve')).size, 8 * 1024 * 1024, 'the reserve is made again');
    const again = await send(dev?.port ?? 0, 'again', [2000, 8000, 2_000_000]);
    sent.push(...again);
    assert.deepEqual(
      again.map((s) => s.code),
      [250, 250, 250],
    );
    await journalCheckpointed();
    fillDisk(filler);
    const refused = await send(dev?.port ?? 0, 'again-full', [8000]);
    sent.push(...refused);
    assert.equal(refused[0]?.code, 452);
    // A small message is a row of the blob database: deleting it gives the file system nothing back,
    // but the delete needs room, and takes it from the reserve. Mail must not take the rest of it
    // (or the next delete would have none): until there is room to make the reserve again, 452.
    const small = (await listAll()).find((i) => i.subject === 'again-0');
    assert.ok(small);
    const dele = await api(`/messages/${small.id}`, { method: 'DELETE' });
    assert.equal(dele.status, 204, await dele.text());
    const meanwhile = await send(dev?.port ?? 0, 'again-released', [1_000_000, 8000]);
    sent.push(...meanwhile);
    assert.deepEqual(
      meanwhile.map((s) => s.code),
      [452, 452],
    );
    deleted.add(small.subject);
    // POP3's DELE and QUIT through the bridge (a mail client's delete), on the full disk too.
    const older = (await listAll()).find((i) => i.subject === 'room-0');
    assert.ok(older);
    const bridge = await startPop3Bridge({ apiUrl, port: 0 });
    try {
      const pop = await python(POP3_DELE, [String(bridge.port), MAILBOX, token, older.id]);
      assert.equal(pop.code, 0, pop.stderr);
      assert.match(pop.stdout, /^\+OK/);
    } finally {
      await bridge.close();
    }
    assert.equal((await api(`/messages/${older.id}`)).status, 404);
    deleted.add(older.subject);
    await deleteEverythingOnFullDisk('again');
    freeDisk(filler);
  });

  it('keeps every 250 through a crash on a full disk: the next start says what to do, and recovers once there is room', async () => {
    // Messages answered 250 whose journal segment is still there when the relay dies. The last
    // checkpoint is done first (the journal directory is empty then), so the next is a second after
    // the first of these is journaled, and the relay is killed long before.
    await journalCheckpointed();
    const relay = dev?.child;
    assert.ok(relay?.pid !== undefined);
    const exited = once(relay, 'exit');
    // One is larger than a blob row (64 KiB): routing it needs new room on the disk, not only what
    // the databases' WALs hold already (after the deletes above they may hold some).
    sent.push(...(await send(dev?.port ?? 0, 'crash', [3000, 100_000], relay.pid)));
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
    const accepted = sent.filter((s) => s.code === 250 && !deleted.has(s.subject));
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
      // Once, not once per message (compact: once per database it could not compact).
      const lines = args[0] === 'compact' ? 2 : 1;
      assert.equal(r.stderr.split('\n').length, lines + 1, `${args[0]}: ${lines} line(s): ${r.stderr}`);
    }
    freeDisk(filler);
    const imported = await cli(dataDir, ['import', '--to', MAILBOX, ...files]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /imported 3\/3 files/);
    const created = await cli(dataDir, ['token', 'create', 'bob@example.test']);
    assert.equal(created.code, 0, created.stderr);

    // A disk that fills up during an import: said once (not once per message), the import stops there,
    // and run again once there is room it brings the rest.
    const mbox = join(dataDir, '..', 'many.mbox');
    const count = 200;
    writeFileSync(
      mbox,
      Array.from(
        { length: count },
        (_, i) =>
          `From a@remote.test Mon Nov  2 10:00:00 2026\nSubject: many ${i}\n\n${'x'.repeat(4000)}\n\n`,
      ).join(''),
    );
    fillDisk(filler);
    truncateSync(filler, statSync(filler).size - 1024 * 1024);
    const partly = await cli(dataDir, ['import', '--to', MAILBOX, mbox]);
    assert.equal(partly.code, 1, partly.stdout + partly.stderr);
    assert.match(
      partly.stderr,
      /^mail-relay import: [^\n]*no space left[^\n]*; (\d+) messages not imported: free some space and run the same import again[^\n]*\n$/,
    );
    const left = Number(/; (\d+) messages not imported/.exec(partly.stderr)?.[1]);
    assert.ok(left > 0 && left < count, `${left} of ${count} not imported`);
    freeDisk(filler);
    const rest = await cli(dataDir, ['import', '--to', MAILBOX, mbox]);
    assert.equal(rest.code, 0, rest.stderr);
    assert.match(rest.stdout, new RegExp(`delivered ${left}, duplicate ${count - left},`));
  });
});
