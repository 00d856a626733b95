/**
 * `mail-relay compact` (functions/local/compact.ts), run as a user runs it (the binary in a child
 * process): after most mail is deleted, the data dir's SQLite files shrink, and what is left is all
 * there; a runtime kept open across the compaction (as `import` or `token` hold one) goes on
 * delivering and reading; while `dev` runs on the data dir, compact refuses to start.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { TEMP_PREFIX } from '../../functions/adapters/local/fs-blob-store.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { deleteMessageBlobs, mailboxKeys } from '../../functions/core/keys.ts';
import { buildNotification } from '../../functions/core/notification.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { main } from '../../functions/local/cli.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { processNotification } from '../../functions/pipeline/router.ts';
import { startDev } from '../helpers/dev.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { run } from '../helpers/process.ts';
import { listAll } from '../helpers/relay.ts';

const BIN = join(PROJECT_ROOT, 'bin/mail-relay.js');
const CONFIG = parseConfig({ domains: ['example.test'], mailboxes: ['alice@example.test'] });
const work = mkdtempSync(join(tmpdir(), 'mr-compact-'));
after(() => rmSync(work, { recursive: true, force: true }));

function env(dataDir: string): NodeJS.ProcessEnv {
  const { MAIL_RELAY_CONFIG: _c, MAIL_RELAY_DATA_DIR: _d, ...rest } = process.env;
  return { ...rest, MAIL_RELAY_DATA_DIR: dataDir };
}

/** A 30 KB message (a SQLite row, ADR 13) whose body says which one it is. */
function message(n: number): Buffer {
  const line = `message ${n} ${'x'.repeat(60)}\r\n`;
  return Buffer.from(
    `From: a@remote.test\r\nTo: alice@example.test\r\nSubject: m${n}\r\n\r\n${line.repeat(400)}`,
  );
}

async function deliver(runtime: LocalRuntime, n: number): Promise<string> {
  const notification = buildNotification({
    sesMessageId: `compact-${n}`,
    receivedAt: new Date(Date.UTC(2026, 0, 1) + n * 1000),
    mailFrom: 'a@remote.test',
    recipients: ['alice@example.test'],
    verdicts: UNCHECKED_VERDICTS,
    bucketName: 'local',
  });
  const r = await processNotification(runtime, notification, { raw: message(n), storeRaw: true });
  return r.id;
}

const size = (path: string) => statSync(path).size;

/** `mail-relay dev` in a child process, as `npm start` runs it; resolves once it listens. */

describe('mail-relay compact', () => {
  it('shrinks the databases after deletions, keeps every message left, and a running relay goes on', async () => {
    const dataDir = join(work, 'data');
    const filler = createLocalRuntime({ config: CONFIG, dataDir, durability: 'sync' });
    const ids: string[] = [];
    for (let n = 0; n < 300; n++) ids.push(await deliver(filler, n));
    // Delete all but every 20th, as a POP3 client deleting what it fetched would.
    const kept = ids.filter((_, i) => i % 20 === 0);
    for (const id of ids) {
      if (kept.includes(id)) continue;
      await filler.index.delete('alice@example.test', id);
      await deleteMessageBlobs(filler.blobs, 'alice@example.test', id);
    }
    await filler.close();
    const blobsDb = join(dataDir, 'blobs.sqlite');
    const before = size(blobsDb);
    assert.ok(before > 10 * 1024 * 1024, `the rows took space: ${before} bytes`);

    // A relay keeps its databases open meanwhile.
    const relay = createLocalRuntime({ config: CONFIG, dataDir, durability: 'sync' });
    await relay.blobs.get(mailboxKeys.raw('alice@example.test', kept[0] ?? ''));
    const r = await run(process.execPath, [BIN, 'compact'], { env: env(dataDir) });
    assert.equal(r.code, 0, r.stderr);
    const line = /blobs\.sqlite: [\d.]+ MB -> [\d.]+ MB \((\d+) free pages of (\d+) bytes given back\)/.exec(
      r.stdout,
    );
    assert.ok(line, r.stdout);
    assert.match(r.stdout, /index\.sqlite: /);
    const after = size(blobsDb);
    // 285 of 300 mailbox copies and summaries went (~17 MB); inbound/ and notifications/ stay for
    // their retention (~9.5 MB for 300 messages).
    const freed = Number(line[1]) * Number(line[2]);
    assert.ok(freed > 15 * 1024 * 1024, `free pages: ${line[1]}`);
    assert.ok(after <= before - freed * 0.95, `blobs.sqlite ${before} -> ${after} bytes (${freed} free)`);
    assert.ok(after < before * 0.5, `blobs.sqlite ${before} -> ${after} bytes`);

    // Everything left is there, byte for byte, through the runtime that was open all along.
    assert.deepEqual(
      (await listAll(relay.index, 'alice@example.test')).map((e) => e.id).sort(),
      [...kept].sort(),
    );
    for (const [i, id] of kept.entries()) {
      const raw = await relay.blobs.get(mailboxKeys.raw('alice@example.test', id));
      assert.ok(raw?.includes(Buffer.from(`message ${i * 20} `)), `message ${i * 20}`);
    }
    const fresh = await deliver(relay, 1000);
    assert.ok(await relay.blobs.get(mailboxKeys.raw('alice@example.test', fresh)));
    assert.equal((await relay.index.stat('alice@example.test')).messages, kept.length + 1);
    await relay.close();
  });

  it('is refused while mail-relay dev runs on the data dir (it would stall the relay); runs once dev is gone, even killed', async () => {
    const dataDir = join(work, 'with-dev');
    const compact = () => run(process.execPath, [BIN, 'compact'], { env: env(dataDir) });
    const first = await startDev(dataDir);
    try {
      const refused = await compact();
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /mail-relay dev is running on .*with-dev \(it holds dev\.lock there\); stop it first/,
      );
      // A second dev on the same data dir refuses to start (before its port, taken too, matters), and
      // changes nothing.
      const second = await run(process.execPath, [BIN, 'dev'], {
        env: { ...env(dataDir), MAIL_RELAY_SMTP_PORT: String(first.port), MAIL_RELAY_API_PORT: '0' },
      });
      assert.equal(second.code, 1, second.stdout + second.stderr);
      assert.match(
        second.stderr,
        /^mail-relay: mail-relay dev \(or compact\) is already running on .*with-dev /,
      );
      assert.equal((await compact()).code, 1, 'still refused: the first dev runs');
    } finally {
      // Not a clean stop: the lock must go with the process all the same.
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
    }
    const r = await compact();
    assert.equal(r.code, 0, r.stderr);
    // Nothing was deleted: nothing to give back, and no copy made.
    assert.match(r.stdout, /blobs\.sqlite: [\d.]+ MB, nothing to give back/);

    // And in one process: dev started and stopped through the CLI's own entry point.
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => {
      text += c.toString();
    });
    const stop = new AbortController();
    const devEnv = { ...env(dataDir), MAIL_RELAY_SMTP_PORT: '0', MAIL_RELAY_API_PORT: '0' };
    const running = main(['dev'], { out, err: out, env: devEnv, stop: stop.signal });
    try {
      const deadline = Date.now() + 20_000;
      while (!text.includes('mail-relay dev')) {
        if (Date.now() > deadline) throw new Error(`dev did not start:\n${text}`);
        await sleep(20);
      }
      assert.equal((await compact()).code, 1);
    } finally {
      stop.abort();
      assert.equal(await running, 0);
    }
    assert.equal((await compact()).code, 0, 'dev released its lock when it stopped');
  });

  it('deletes the temp files killed runs left among the blobs, not those of a live process, nor any blob', async () => {
    const dataDir = join(work, 'temp-files');
    const runtime = createLocalRuntime({ config: CONFIG, dataDir });
    let id: string;
    try {
      id = await deliver(runtime, 1);
    } finally {
      await runtime.close();
    }
    // A process that has exited: its pid is free (a temp file of it is what a kill mid-write leaves).
    const exited = spawn(process.execPath, ['-e', '']);
    await once(exited, 'exit');
    const deadPid = exited.pid as number;
    const dir = join(dataDir, 'blobs', 'mailboxes', 'alice@example.test');
    mkdirSync(dir, { recursive: true });
    const tempOf = (pid: number, n: number) => join(dir, `${TEMP_PREFIX}${pid.toString(36)}-0badc0de-${n}`);
    writeFileSync(tempOf(deadPid, 1), Buffer.alloc(300_000, 1));
    // This test process is alive while compact runs (as an `import` beside it would be).
    writeFileSync(tempOf(process.pid, 2), 'in flight');
    const r = await run(process.execPath, [BIN, 'compact'], { env: env(dataDir) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /blobs: 1 temp file\(s\) of killed runs deleted \(0\.3 MB\)/);
    assert.equal(existsSync(tempOf(deadPid, 1)), false);
    assert.equal(readFileSync(tempOf(process.pid, 2), 'utf8'), 'in flight');
    const again = createLocalRuntime({ config: CONFIG, dataDir });
    try {
      assert.deepEqual(await again.blobs.get(mailboxKeys.raw('alice@example.test', id)), message(1));
    } finally {
      await again.close();
    }
  });

  it('says so when there is nothing to compact, refuses arguments, and names a file it cannot compact', async () => {
    const empty = join(work, 'empty');
    const r = await run(process.execPath, [BIN, 'compact'], { env: env(empty) });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /nothing to compact: no database in .*empty/);
    const bad = await run(process.execPath, [BIN, 'compact', '--now'], { env: env(empty) });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^mail-relay compact: unknown option '--now'\nUsage: mail-relay compact\n/);

    // A file that cannot be compacted is named, left as it is, and the exit code says so; no stack trace.
    const broken = join(work, 'broken');
    mkdirSync(broken);
    writeFileSync(join(broken, 'index.sqlite'), 'not a database at all, just text\n'.repeat(200));
    const failed = await run(process.execPath, [BIN, 'compact'], { env: env(broken) });
    assert.equal(failed.code, 1);
    assert.match(
      failed.stderr,
      /^mail-relay: could not compact .*index\.sqlite: .*not a database.* \(it is unchanged\)\n$/,
    );
    assert.equal(
      readFileSync(join(broken, 'index.sqlite'), 'utf8'),
      'not a database at all, just text\n'.repeat(200),
    );
  });
});
