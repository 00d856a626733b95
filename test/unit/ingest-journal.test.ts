/**
 * The ingest journal: group commit, torn tails, checkpoints, and recovery of what a crashed process
 * acknowledged (`250`) but had not finished routing.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConfig } from '../../functions/core/config.ts';
import { buildNotification, type SesReceivedNotification } from '../../functions/core/notification.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { ingest, LOCAL_BUCKET } from '../../functions/local/ingest.ts';
import {
  decodeSegment,
  FileSystemSyncer,
  IngestJournal,
  orphanedSegments,
  recoverJournal,
} from '../../functions/local/ingest-journal.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { hasCommand, PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { listAll } from '../helpers/relay.ts';
import { until } from '../helpers/until.ts';

const work = mkdtempSync(join(tmpdir(), 'mr-journal-'));
after(() => rmSync(work, { recursive: true, force: true }));

/**
 * Runs `body` in a child process, as a relay journals mail, and kills it (SIGKILL) once `body` has run:
 * what a crash leaves. In `body`'s scope: `IngestJournal`, and `n(id)`, a notification for alice@.
 */
async function journalThenKilled(body: string): Promise<void> {
  const script = `
    import { IngestJournal } from './functions/local/ingest-journal.ts';
    import { buildNotification } from './functions/core/notification.ts';
    import { UNCHECKED_VERDICTS } from './functions/core/routing.ts';
    const n = (id) => buildNotification({ sesMessageId: id, receivedAt: new Date('2026-11-27T10:00:00.000Z'),
      mailFrom: 'x@remote.test', recipients: ['alice@example.test'], verdicts: UNCHECKED_VERDICTS, bucketName: 'b' });
    ${body}
    process.stdout.write('journaled\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await once(child.stdout, 'data');
  child.kill('SIGKILL');
  await once(child, 'exit');
}

function notification(id: string, recipient = 'alice@example.test'): SesReceivedNotification {
  return buildNotification({
    sesMessageId: id,
    receivedAt: new Date('2026-11-27T10:00:00.000Z'),
    mailFrom: 'x@remote.test',
    recipients: [recipient],
    verdicts: UNCHECKED_VERDICTS,
    bucketName: LOCAL_BUCKET,
  });
}

describe('IngestJournal', () => {
  it('commits concurrent appends together and checkpoints them away once settled', async () => {
    const dir = join(work, 'group');
    let syncs = 0;
    const journal = new IngestJournal(dir, async () => {
      syncs += 1;
    });
    const tickets = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        journal.append({
          type: 'ingest',
          notification: notification(`m${i}`),
          raw: Buffer.from(`raw ${i}\r\n`),
        }),
      ),
    );
    // 20 appends issued in one tick: one batch for the first, one for the rest at most.
    assert.ok(new Set(tickets.map((t) => t.segment)).size === 1, 'all in one segment');
    const [segment] = readdirSync(dir);
    assert.ok(segment);
    const records = decodeSegment(readFileSync(join(dir, segment)));
    assert.equal(records.length, 20);
    assert.deepEqual(
      records.map((r) => (r.type === 'ingest' ? r.raw.toString() : '')),
      Array.from({ length: 20 }, (_, i) => `raw ${i}\r\n`),
    );
    // Not settled yet: a checkpoint must wait for the router.
    const checkpoint = journal.checkpoint();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(readdirSync(dir).length, 1, 'segment kept while messages are being routed');
    for (const t of tickets) journal.settle(t);
    await checkpoint;
    assert.equal(syncs, 1);
    assert.deepEqual(readdirSync(dir), [], 'checkpointed segment deleted');
    await journal.close();
  });

  it('leaves nothing to recover when closed while a checkpoint is running', async () => {
    const dir = join(work, 'close-during-checkpoint');
    let releaseFirstSync = (): void => {};
    let syncs = 0;
    const journal = new IngestJournal(dir, () => {
      syncs += 1;
      return syncs === 1 ? new Promise<void>((r) => (releaseFirstSync = r)) : Promise.resolve();
    });
    journal.settle(await journal.append({ type: 'abort', sesMessageId: 'first' }));
    const running = journal.checkpoint();
    await new Promise((r) => setTimeout(r, 20));
    // Lands in the segment the running checkpoint rotated to.
    journal.settle(await journal.append({ type: 'abort', sesMessageId: 'second' }));
    const closing = journal.close();
    setTimeout(() => releaseFirstSync(), 20);
    await Promise.all([running, closing]);
    assert.deepEqual(readdirSync(dir), [], 'both segments checkpointed away');
  });

  it('reads a segment up to a torn or corrupt tail', async () => {
    const dir = join(work, 'torn');
    const journal = new IngestJournal(dir, async () => {});
    await journal.append({ type: 'ingest', notification: notification('a'), raw: Buffer.from('first') });
    await journal.append({ type: 'ingest', notification: notification('b'), raw: Buffer.from('second') });
    const [segment] = readdirSync(dir);
    assert.ok(segment);
    const path = join(dir, segment);
    const whole = readFileSync(path);
    assert.equal(decodeSegment(whole).length, 2);
    assert.equal(decodeSegment(whole.subarray(0, whole.length - 3)).length, 1, 'a cut-off record is dropped');
    const flipped = Buffer.from(whole);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 0xff;
    assert.equal(decodeSegment(flipped).length, 1, 'a record whose checksum fails is dropped');
    appendFileSync(path, Buffer.from('garbage'));
    assert.equal(decodeSegment(readFileSync(path)).length, 2);
  });

  it('abort marks a record in place: it is not read back, the records around it are', async () => {
    const dir = join(work, 'abort');
    const journal = new IngestJournal(dir, async () => {});
    const tickets = await Promise.all(
      ['a', 'b', 'c'].map((id) =>
        journal.append({ type: 'ingest', notification: notification(id), raw: Buffer.from(`raw ${id}`) }),
      ),
    );
    const [segment] = readdirSync(dir);
    assert.ok(segment && tickets[1]);
    const before = readFileSync(join(dir, segment));
    await journal.abort(tickets[1]);
    const after = readFileSync(join(dir, segment));
    assert.equal(after.length, before.length, 'nothing appended');
    const ids = (records: ReturnType<typeof decodeSegment>) =>
      records.map((r) => (r.type === 'ingest' ? r.notification.mail.messageId : `abort ${r.sesMessageId}`));
    assert.deepEqual(ids(decodeSegment(before)), ['a', 'b', 'c']);
    assert.deepEqual(ids(decodeSegment(after)), ['a', 'c']);
    for (const t of tickets) journal.settle(t);
    await journal.close();
    // Abort records of earlier versions are still honoured by recovery.
    const legacy = join(work, 'abort-legacy');
    const old = new IngestJournal(legacy, async () => {});
    await old.append({ type: 'ingest', notification: notification('kept'), raw: Buffer.from('x') });
    await old.append({ type: 'ingest', notification: notification('dropped'), raw: Buffer.from('y') });
    await old.append({ type: 'abort', sesMessageId: 'dropped' });
    const [oldSegment] = readdirSync(legacy);
    assert.ok(oldSegment);
    renameSync(join(legacy, oldSegment), join(legacy, oldSegment.replace(/^\d+-/, '999999995-')));
    const routed: string[] = [];
    const recovered = await recoverJournal(
      legacy,
      async (n) => {
        routed.push(n.mail.messageId);
      },
      async () => {},
    );
    assert.deepEqual(recovered, { segments: 1, messages: 1 });
    assert.deepEqual(routed, ['kept']);
  });

  it('on a full disk: a failed batch is cut off (none of it recovered), later appends and aborts still work', async (t) => {
    if (
      !requireOrAnnounce(
        hasCommand('prlimit'),
        'journal on a full disk',
        'prlimit (util-linux) is Linux only',
      )
    )
      return t.skip('no prlimit');
    // The child runs with a file size limit of 64 KiB (RLIMIT_FSIZE): writes past it are cut short,
    // then fail (EFBIG; Node ignores SIGXFSZ), as on a full disk, where space runs out too.
    const dir = join(work, 'full');
    const script = `
      import { readdirSync, statSync } from 'node:fs';
      import { IngestJournal } from './functions/local/ingest-journal.ts';
      import { buildNotification } from './functions/core/notification.ts';
      import { UNCHECKED_VERDICTS } from './functions/core/routing.ts';
      const journal = new IngestJournal(${JSON.stringify(dir)}, async () => {});
      const n = (id) => buildNotification({ sesMessageId: id, receivedAt: new Date('2026-11-27T10:00:00.000Z'),
        mailFrom: 'x@remote.test', recipients: ['alice@example.test'], verdicts: UNCHECKED_VERDICTS, bucketName: 'b' });
      const append = (id, kib) => journal.append({ type: 'ingest', notification: n(id), raw: Buffer.alloc(kib * 1024, 97) })
        .then((ticket) => ({ id, ticket }), (err) => ({ id, error: err.code ?? err.message }));
      const out = {};
      const a = await append('A', 1);
      // Issued in one tick: B0 is written alone (the flush starts at once), B1 and B2 together in the
      // next batch, which crosses the 64 KiB limit: B1 fits, B2 is cut short.
      out.batch = await Promise.all([append('B0', 1), append('B1', 20), append('B2', 60)]);
      out.c = (await append('C', 30)).error ?? 'ok';
      out.d = (await append('D', 40)).error ?? 'ok';
      out.e = (await append('E', 1)).error ?? 'ok';
      // Fill the file to 8 bytes short of the limit: a probe gives a record's size without its bytes.
      const [name] = readdirSync(${JSON.stringify(dir)});
      const path = ${JSON.stringify(dir)} + '/' + name;
      const size = () => statSync(path).size;
      const beforeProbe = size();
      await append('P', 0);
      const overhead = size() - beforeProbe;
      out.f = (await journal.append({ type: 'ingest', notification: n('F'), raw: Buffer.alloc(65536 - size() - overhead - 8) })
        .then(() => 'ok', (err) => err.code ?? err.message));
      out.full = 65536 - size();
      out.abortA = await journal.abort(a.ticket).then(() => 'ok', (err) => err.code ?? err.message);
      // An abort record appended instead would not fit: what earlier versions did.
      out.abortRecord = await journal.append({ type: 'abort', sesMessageId: 'A' }).then(() => 'ok', (err) => err.code ?? err.message);
      out.segments = readdirSync(${JSON.stringify(dir)}).length;
      process.stdout.write(JSON.stringify(out) + '\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(
      'prlimit',
      ['--fsize=65536', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = once(child, 'exit');
    const line = await new Promise<string>((resolve, reject) => {
      let buffered = '';
      child.stdout.on('data', (data: Buffer) => {
        buffered += data.toString();
        if (buffered.includes('\n')) resolve(buffered);
      });
      exited.then(([code]) => reject(new Error(`the journal process ended (${code}) before reporting`)));
    });
    child.kill('SIGKILL');
    await exited;
    const out = JSON.parse(line) as Record<string, unknown>;
    assert.deepEqual(
      (out.batch as { id: string; error?: string }[]).map((r) => [r.id, typeof r.error]),
      [
        ['B0', 'undefined'],
        ['B1', 'string'],
        ['B2', 'string'],
      ],
      'both appends of the failed batch are refused',
    );
    assert.equal(out.c, 'ok', 'the space the failed batch took is given back');
    assert.match(String(out.d), /EFBIG|insufficient_storage/);
    assert.equal(out.e, 'ok');
    assert.equal(out.f, 'ok');
    assert.equal(out.full, 8);
    assert.equal(out.abortA, 'ok', 'an abort needs no free space');
    assert.match(
      String(out.abortRecord),
      /EFBIG|insufficient_storage/,
      'where an abort record no longer fits',
    );
    assert.equal(out.segments, 1, 'failed batches do not leave a segment each behind');
    // The crash: recovery finds what was acknowledged, not A (aborted) nor any refused append.
    const [orphan] = await orphanedSegments(dir);
    assert.ok(orphan);
    assert.deepEqual(
      orphan.records.map((r) => (r.type === 'ingest' ? r.notification.mail.messageId : r.type)),
      ['B0', 'C', 'E', 'P', 'F'],
    );
  });

  it('a checkpoint waits for the last message of its segment to be routed, not the first', async () => {
    const dir = join(work, 'drain');
    let syncs = 0;
    const journal = new IngestJournal(dir, async () => {
      syncs += 1;
    });
    const tickets = await Promise.all(
      ['p', 'q', 'r'].map((id) =>
        journal.append({ type: 'ingest', notification: notification(id), raw: Buffer.from(id) }),
      ),
    );
    const checkpoint = journal.checkpoint();
    const [first, second, third] = tickets;
    assert.ok(first && second && third);
    journal.settle(first);
    await new Promise((r) => setTimeout(r, 50));
    journal.settle(second);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(syncs, 0, 'no checkpoint sync while a message is being routed');
    assert.equal(readdirSync(dir).length, 1, 'its segment is kept');
    journal.settle(third);
    await checkpoint;
    assert.equal(syncs, 1);
    assert.deepEqual(readdirSync(dir), []);
    await journal.close();
  });

  it('refuses appends once closed (nothing is written after the final checkpoint)', async () => {
    const dir = join(work, 'closed');
    const journal = new IngestJournal(dir, async () => {});
    journal.settle(
      await journal.append({ type: 'ingest', notification: notification('in'), raw: Buffer.from('x') }),
    );
    await journal.close();
    await assert.rejects(
      journal.append({ type: 'ingest', notification: notification('late'), raw: Buffer.from('y') }),
      /closed/,
    );
    assert.deepEqual(readdirSync(dir), []);
  });

  it('closes each segment it checkpoints away (no descriptor left open per checkpoint)', async (t) => {
    if (!existsSync('/proc/self/fd')) return t.skip('no /proc/self/fd to count descriptors');
    const dir = join(work, 'descriptors');
    const journal = new IngestJournal(dir, async () => {});
    const descriptors = () => readdirSync('/proc/self/fd').length;
    journal.settle(await journal.append({ type: 'abort', sesMessageId: 'warm-up' }));
    await journal.checkpoint();
    const before = descriptors();
    for (let i = 0; i < 5; i++) {
      journal.settle(await journal.append({ type: 'abort', sesMessageId: `n${i}` }));
      await journal.checkpoint();
    }
    assert.equal(descriptors(), before);
    await journal.close();
  });

  it('a checkpoint asked for while the first append is still being written waits for it', async () => {
    const dir = join(work, 'checkpoint-in-flight');
    const journal = new IngestJournal(dir, async () => {});
    const appended = journal.append({
      type: 'ingest',
      notification: notification('f'),
      raw: Buffer.from('x'),
    });
    const checkpoint = journal.checkpoint();
    journal.settle(await appended);
    await checkpoint;
    assert.deepEqual(readdirSync(dir), [], 'its segment was checkpointed away, not left to recovery');
    await journal.close();
  });

  it('abort marks its own record when several were committed in one batch', async () => {
    const dir = join(work, 'abort-in-batch');
    const journal = new IngestJournal(dir, async () => {});
    const ids = ['a', 'b', 'c', 'd', 'e'];
    // Issued in one tick: 'a' is written alone, the others together in the next batch.
    const tickets = await Promise.all(
      ids.map((id) =>
        journal.append({ type: 'ingest', notification: notification(id), raw: Buffer.from(`raw ${id}`) }),
      ),
    );
    assert.ok(tickets[3]);
    await journal.abort(tickets[3]);
    const [segment] = readdirSync(dir);
    assert.ok(segment);
    assert.deepEqual(
      decodeSegment(readFileSync(join(dir, segment))).map((r) =>
        r.type === 'ingest' ? r.notification.mail.messageId : r.type,
      ),
      ['a', 'b', 'c', 'e'],
    );
    for (const t of tickets) journal.settle(t);
    await journal.close();
  });

  it('a failed batch that cannot be cut off either is not recovered: its records are cut off from recovery', async (t) => {
    const dir = join(work, 'undo-fails');
    const journal = new IngestJournal(dir, async () => {});
    const append = (id: string) =>
      journal.append({ type: 'ingest', notification: notification(id), raw: Buffer.from(`raw ${id}`) });
    const first = await append('a');
    // The batch's records are written whole, then its sync fails (an I/O error), and so does the
    // truncate that would take them back.
    const probe = await open(join(work, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as {
      datasync: () => Promise<void>;
      truncate: () => Promise<void>;
    };
    await probe.close();
    const datasync = proto.datasync;
    let failSyncs = 1;
    t.mock.method(proto, 'datasync', function (this: unknown) {
      if (failSyncs-- > 0) return Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
      return datasync.call(this);
    });
    const truncate = t.mock.method(proto, 'truncate', () =>
      Promise.reject(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })),
    );
    await assert.rejects(append('refused'), /EIO/);
    assert.equal(truncate.mock.callCount(), 1);
    t.mock.restoreAll();
    const later = await append('c');
    for (const ticket of [first, later]) journal.settle(ticket);
    // What a crash now would leave to recover, segment by segment (the failed one is kept).
    const recovered = readdirSync(dir)
      .sort()
      .flatMap((name) => decodeSegment(readFileSync(join(dir, name))))
      .map((r) => (r.type === 'ingest' ? r.notification.mail.messageId : r.type));
    assert.deepEqual(recovered.sort(), ['a', 'c']);
    await journal.close();
  });

  it('acknowledges an append, and an abort, only once its bytes are synced to the disk (fdatasync)', async (t) => {
    const dir = join(work, 'datasync');
    const journal = new IngestJournal(dir, async () => {});
    // Every FileHandle shares one prototype: hold its datasync until the test lets it go.
    const probe = await open(join(work, 'datasync-probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const datasync = proto.datasync;
    const held: (() => void)[] = [];
    proto.datasync = function (this: unknown) {
      return new Promise<void>((resolve) => held.push(resolve)).then(() => datasync.call(this));
    };
    t.after(() => {
      proto.datasync = datasync;
    });
    const settledYet = async (promise: Promise<unknown>): Promise<boolean> => {
      let done = false;
      promise.then(
        () => (done = true),
        () => (done = true),
      );
      // Once the sync is asked for (the file is opened on the thread pool first, which a loaded
      // machine may take a while to get to), and a moment more for a wrong acknowledgement to show.
      await until('the fdatasync', () => (held.length > 0 ? true : undefined));
      await new Promise((r) => setTimeout(r, 50));
      return done;
    };
    const appended = journal.append({
      type: 'ingest',
      notification: notification('s'),
      raw: Buffer.from('x'),
    });
    assert.equal(await settledYet(appended), false, 'not acknowledged before the sync');
    assert.equal(held.length, 1);
    held.shift()?.();
    const ticket = await appended;
    const aborted = journal.abort(ticket);
    assert.equal(await settledYet(aborted), false, 'an abort is not done before its sync');
    assert.equal(held.length, 1);
    held.shift()?.();
    await aborted;
    proto.datasync = datasync;
    journal.settle(ticket);
    await journal.close();
  });

  it('an append whose segment cannot be created fails alone: the next one creates it', async () => {
    const dir = join(work, 'reopen');
    const journal = new IngestJournal(dir, async () => {});
    rmSync(dir, { recursive: true });
    await assert.rejects(
      journal.append({ type: 'ingest', notification: notification('lost'), raw: Buffer.from('x') }),
      { code: 'ENOENT' },
    );
    mkdirSync(dir);
    const ticket = await journal.append({
      type: 'ingest',
      notification: notification('kept'),
      raw: Buffer.from('y'),
    });
    const [segment] = readdirSync(dir);
    assert.ok(segment);
    assert.deepEqual(
      decodeSegment(readFileSync(join(dir, segment))).map((r) =>
        r.type === 'ingest' ? r.notification.mail.messageId : r.type,
      ),
      ['kept'],
    );
    journal.settle(ticket);
    await journal.close();
    assert.deepEqual(readdirSync(dir), []);
  });

  it('past maxSegmentBytes, appends go to a new segment; the old one is checkpointed away once drained', async () => {
    const dir = join(work, 'rotate');
    let syncs = 0;
    const journal = new IngestJournal(
      dir,
      async () => {
        syncs += 1;
      },
      { maxSegmentBytes: 4096 },
    );
    const append = (id: string) =>
      journal.append({ type: 'ingest', notification: notification(id), raw: Buffer.alloc(4096, 97) });
    // One record (4 KiB of message and its notification) takes a segment past the limit.
    const a = await append('r1');
    const b = await append('r2');
    const c = await append('r3');
    assert.notEqual(b.segment, a.segment, 'the append after the limit went to a new segment');
    assert.notEqual(c.segment, b.segment);
    const files = readdirSync(dir).sort();
    assert.equal(files.length, 3, 'the full segments stay until their messages are routed');
    assert.deepEqual(
      files
        .flatMap((f) => decodeSegment(readFileSync(join(dir, f))))
        .map((r) => (r.type === 'ingest' ? r.notification.mail.messageId : '')),
      ['r1', 'r2', 'r3'],
      'each record in one segment, none twice',
    );
    assert.equal(syncs, 0);
    // Routed: the first segment is synced and deleted, the others are left as they are.
    journal.settle(a);
    await until('the first segment deleted', () => (existsSync(a.segment.path) ? undefined : true));
    assert.equal(syncs, 1);
    assert.ok(existsSync(b.segment.path) && existsSync(c.segment.path));
    journal.settle(b);
    journal.settle(c);
    await until('the second segment deleted', () => (existsSync(b.segment.path) ? undefined : true));
    await journal.close();
    assert.deepEqual(readdirSync(dir), []);
  });

  it('refuses a maxSegmentBytes that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN])
      assert.throws(
        () => new IngestJournal(join(work, 'bad-size'), async () => {}, { maxSegmentBytes: bad }),
        RangeError,
      );
  });

  it('leaves the segments of a live process alone', async () => {
    const dir = join(work, 'live');
    const journal = new IngestJournal(dir, async () => {});
    await journal.append({ type: 'ingest', notification: notification('c'), raw: Buffer.from('x') });
    // Our own pid counts as gone (recovery runs before this process appends); a live child's does not.
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)']);
    await once(child, 'spawn');
    const [segment] = readdirSync(dir);
    assert.ok(segment);
    const renamed = segment.replace(/^\d+-/, `${child.pid}-`);
    renameSync(join(dir, segment), join(dir, renamed));
    assert.deepEqual(await orphanedSegments(dir), []);
    child.kill();
    await once(child, 'exit');
    assert.equal((await orphanedSegments(dir)).length, 1);
  });

  it('recovers a segment written before this boot even if its pid is alive again (pids are reused after a reboot)', async (t) => {
    if (!existsSync('/proc/sys/kernel/random/boot_id')) {
      t.skip('no boot id on this system: segments go by their pid alone');
      return;
    }
    const dir = join(work, 'reboot');
    const journal = new IngestJournal(dir, async () => {});
    await journal.append({ type: 'ingest', notification: notification('d'), raw: Buffer.from('y') });
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)']);
    await once(child, 'spawn');
    try {
      const [segment] = readdirSync(dir);
      assert.ok(segment);
      // The name ends in this boot's id; written by the live child's pid in another boot, it is an orphan.
      const boot = /-([0-9a-f]{8})\.log$/.exec(segment)?.[1];
      assert.ok(boot, `${segment} carries the boot id`);
      const otherBoot = boot === '00000000' ? '11111111' : '00000000';
      const renamed = segment.replace(/^\d+-/, `${child.pid}-`).replace(`-${boot}.log`, `-${otherBoot}.log`);
      renameSync(join(dir, segment), join(dir, renamed));
      const orphans = await orphanedSegments(dir);
      assert.equal(orphans.length, 1);
      assert.equal(orphans[0]?.records[0]?.type, 'ingest');
      // The same pid in this boot: a live process's segment, left alone (a clock step changes nothing).
      renameSync(join(dir, renamed), join(dir, renamed.replace(`-${otherBoot}.log`, `-${boot}.log`)));
      assert.deepEqual(await orphanedSegments(dir), []);
    } finally {
      child.kill();
      await once(child, 'exit');
    }
  });

  it("leaves a live process's segment alone where the boot id cannot be read (a sandbox hiding /proc/sys)", async (t) => {
    const canMask =
      existsSync('/proc/sys/kernel/random/boot_id') &&
      process.getuid?.() === 0 &&
      hasCommand('unshare') &&
      spawnSync('unshare', ['-m', 'true']).status === 0;
    if (
      !requireOrAnnounce(
        canMask,
        'journal recovery where the boot id cannot be read',
        'run the tests as root with unshare(1) (util-linux) able to make a mount namespace',
      )
    ) {
      t.skip('hiding the boot id needs root and unshare(1)');
      return;
    }
    const dir = join(work, 'no-boot-id');
    const journal = new IngestJournal(dir, async () => {});
    await journal.append({ type: 'ingest', notification: notification('e'), raw: Buffer.from('y') });
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']);
    await once(child, 'spawn');
    try {
      const [segment] = readdirSync(dir);
      assert.ok(segment);
      // The live child's segment of this boot, as dev's open one is to an import run beside it.
      renameSync(join(dir, segment), join(dir, segment.replace(/^\d+-/, `${child.pid}-`)));
      const empty = join(work, 'empty-boot-id');
      writeFileSync(empty, '');
      const module = join(PROJECT_ROOT, 'functions/local/ingest-journal.ts');
      const script = `import(${JSON.stringify(module)}).then(async (j) => console.log(JSON.stringify((await j.orphanedSegments(${JSON.stringify(dir)})).map((s) => s.path))))`;
      const out = spawnSync(
        'unshare',
        [
          '-m',
          'sh',
          '-c',
          'mount --bind "$1" /proc/sys/kernel/random/boot_id && exec "$2" --import tsx -e "$3"',
          'sh',
          empty,
          process.execPath,
          script,
        ],
        { cwd: PROJECT_ROOT, encoding: 'utf8' },
      );
      assert.equal(out.status, 0, out.stderr);
      assert.deepEqual(JSON.parse(out.stdout), []);
      assert.equal(readdirSync(dir).length, 1);
    } finally {
      child.kill();
      await once(child, 'exit');
    }
  });
});

describe('recovery after a crash', () => {
  it('syncs what it re-routed before deleting the segments; with nothing to recover, neither syncs nor announces', async () => {
    const dir = join(work, 'recovery-hooks');
    const journal = new IngestJournal(dir, async () => {});
    await journal.append({ type: 'ingest', notification: notification('h1'), raw: Buffer.from('x') });
    const events: string[] = [];
    const recovered = await recoverJournal(
      dir,
      async (n) => {
        events.push(`apply ${n.mail.messageId}`);
      },
      async () => {
        events.push(`sync with ${readdirSync(dir).length} segment(s) on disk`);
      },
      (messages) => {
        events.push(`announce ${messages}`);
      },
    );
    assert.deepEqual(recovered, { segments: 1, messages: 1 });
    assert.deepEqual(events, ['announce 1', 'apply h1', 'sync with 1 segment(s) on disk']);
    assert.deepEqual(readdirSync(dir), []);
    events.length = 0;
    assert.deepEqual(
      await recoverJournal(
        dir,
        async () => {},
        async () => {
          events.push('sync');
        },
        (messages) => {
          events.push(`announce ${messages}`);
        },
      ),
      { segments: 0, messages: 0 },
    );
    assert.deepEqual(events, []);
  });

  it('two processes recovering the same segments at once (dev and an import) both succeed', async () => {
    const dir = join(work, 'twice');
    const journal = new IngestJournal(dir, async () => {});
    for (const id of ['e1', 'e2']) {
      await journal.append({ type: 'ingest', notification: notification(id), raw: Buffer.from(id) });
    }
    // This process's own segments count as a dead one's; routing is idempotent, so both may apply.
    const applied: string[] = [];
    const apply = async (n: { mail: { messageId: string } }) => {
      await new Promise((r) => setImmediate(r));
      applied.push(n.mail.messageId);
    };
    const [a, b] = await Promise.all([
      recoverJournal(dir, apply, async () => {}),
      recoverJournal(dir, apply, async () => {}),
    ]);
    // Each routes what it read: both segments each (4), or, when one had already finished and
    // removed them before the other looked (a busy machine), only the first (2). Never fewer.
    assert.ok(a.messages + b.messages >= 2 && a.messages + b.messages <= 4, `${a.messages} + ${b.messages}`);
    assert.deepEqual([...new Set(applied)].sort(), ['e1', 'e2']);
    assert.deepEqual(readdirSync(dir), []);
  });

  it('routes every acknowledged message a killed relay left in its journal, and none it aborted', async () => {
    const dataDir = join(work, 'crash');
    // A child process journals three messages (as the SMTP listener does before answering 250),
    // aborts one of them, and is killed before it routes any.
    await journalThenKilled(`
      const journal = new IngestJournal(${JSON.stringify(join(dataDir, 'journal'))}, async () => {});
      const raw = (s) => Buffer.from('Subject: ' + s + '\\r\\n\\r\\nbody\\r\\n');
      const tickets = await Promise.all(['one', 'two', 'three'].map((s) => journal.append({ type: 'ingest', notification: n(s), raw: raw(s) })));
      await journal.abort(tickets[1]);
    `);

    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
      dataDir,
    });
    try {
      const recovered = await runtime.recover();
      assert.deepEqual(recovered, { segments: 1, messages: 2 });
      const subjects = (await listAll(runtime.index, 'alice@example.test')).map((e) => e.subject).sort();
      assert.deepEqual(subjects, ['one', 'three']);
      const [entry] = await listAll(runtime.index, 'alice@example.test');
      assert.ok(entry);
      const raw = await runtime.blobs.get(`mailboxes/alice@example.test/${entry.id}.eml`);
      assert.ok(raw?.toString().startsWith(`Subject: ${entry.subject}`));
      assert.deepEqual(readdirSync(join(dataDir, 'journal')), [], 'recovered segments are deleted');
      // Recovering again finds nothing; routing again would be a no-op anyway (idempotent router).
      assert.deepEqual(await runtime.recover(), { segments: 0, messages: 0 });
    } finally {
      await runtime.close();
    }
  });

  it('a killed relay that left several segments (rotated past maxSegmentBytes): every acknowledged message is delivered once', async () => {
    const dataDir = join(work, 'crash-rotated');
    // The child journals eight messages one after the other (each acknowledged before the next, as
    // 250s are), with segments of 4 KiB: each record fills one, so the journal rotates after each;
    // none is routed, so none is checkpointed away. Then it is killed.
    await journalThenKilled(`
      const journal = new IngestJournal(${JSON.stringify(join(dataDir, 'journal'))}, async () => {}, { maxSegmentBytes: 4096 });
      const raw = (s) => Buffer.from('Subject: ' + s + '\\r\\n\\r\\n' + 'x'.repeat(4096) + '\\r\\n');
      for (let i = 1; i <= 8; i++) await journal.append({ type: 'ingest', notification: n('m' + i), raw: raw('m' + i) });
    `);
    const segments = readdirSync(join(dataDir, 'journal'));
    assert.ok(segments.length >= 4, `several segments on disk: ${segments.join(', ')}`);

    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
      dataDir,
    });
    try {
      assert.deepEqual(await runtime.recover(), { segments: segments.length, messages: 8 });
      const subjects = (await listAll(runtime.index, 'alice@example.test')).map((e) => e.subject).sort();
      assert.deepEqual(subjects, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8']);
      assert.deepEqual(readdirSync(join(dataDir, 'journal')), [], 'every segment recovered and deleted');
      assert.deepEqual(await runtime.recover(), { segments: 0, messages: 0 });
    } finally {
      await runtime.close();
    }
  });

  it('is idempotent with mail that was routed before the crash', async () => {
    const dataDir = join(work, 'routed');
    const config = parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] });
    const runtime = createLocalRuntime({ config, dataDir });
    await ingest(runtime, {
      body: Buffer.from('Subject: once\r\n\r\nx\r\n'),
      mailFrom: '',
      recipients: ['bob@example.test'],
      via: { protocol: 'ESMTP' },
    });
    // A crash after routing but before the checkpoint leaves the segment behind: keep a copy of it.
    const journalDir = join(dataDir, 'journal');
    const [segment] = readdirSync(journalDir);
    assert.ok(segment);
    const bytes = readFileSync(join(journalDir, segment));
    await runtime.close();
    // The process that wrote it is gone (a pid no process has): its segment is an orphan.
    writeFileSync(join(journalDir, segment.replace(/^\d+-/, '999999998-')), bytes);
    const third = createLocalRuntime({ config, dataDir });
    try {
      assert.deepEqual(await third.recover(), { segments: 1, messages: 1 });
      const entries = await listAll(third.index, 'bob@example.test');
      assert.equal(entries.length, 1, 'the recovered copy was a duplicate');
      assert.deepEqual(await third.index.stat('bob@example.test'), {
        address: 'bob@example.test',
        messages: 1,
        bytes: entries[0]?.size,
      });
    } finally {
      await third.close();
    }
  });

  it('after a power loss undid commits a long-poll saw, recovered mail takes commit numbers after them (none missed)', async () => {
    const dataDir = join(work, 'power-loss');
    const config = parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] });
    const BOB = 'bob@example.test';
    const mail = (subject: string) => ({
      body: Buffer.from(`Subject: ${subject}\r\n\r\nx\r\n`),
      mailFrom: 'x@remote.test',
      recipients: [BOB],
      via: { protocol: 'ESMTP' as const },
    });
    const first = createLocalRuntime({ config, dataDir });
    await ingest(first, mail('a'));
    await first.close();
    // The index as the disk still holds it after the power loss: A's commit only.
    const indexFiles = readdirSync(dataDir).filter((n) => n.startsWith('index.sqlite'));
    const onDisk = new Map(indexFiles.map((n) => [n, readFileSync(join(dataDir, n))]));

    // B and C are committed (at synchronous=NORMAL) and a client's long-poll hands out their numbers.
    const second = createLocalRuntime({ config, dataDir });
    await ingest(second, mail('b'));
    await ingest(second, mail('c'));
    const seen = await second.index.commitCursor(BOB);
    assert.equal(seen, 3);
    const journalDir = join(dataDir, 'journal');
    const [segment] = readdirSync(journalDir);
    assert.ok(segment);
    const segmentBytes = readFileSync(join(journalDir, segment));
    await second.close();

    // Another message, X, was journaled (answered 250) just before them and not routed yet.
    const xDir = join(work, 'power-loss-x');
    const xJournal = new IngestJournal(xDir, async () => {});
    const ticket = await xJournal.append({
      type: 'ingest',
      notification: notification('x-message', BOB),
      raw: mail('x').body,
    });
    const [xSegment] = readdirSync(xDir);
    assert.ok(xSegment);
    const xBytes = readFileSync(join(xDir, xSegment));
    xJournal.settle(ticket);
    await xJournal.close();

    // The power comes back: B's and C's commits are undone, both segments are orphans, X's first.
    for (const n of readdirSync(dataDir).filter((n) => n.startsWith('index.sqlite')))
      rmSync(join(dataDir, n));
    for (const [n, bytes] of onDisk) writeFileSync(join(dataDir, n), bytes);
    const stamp = segment.split('-')[1] as string;
    const earlier = (parseInt(stamp, 36) - 1).toString(36);
    writeFileSync(join(journalDir, `999999997-${earlier}-0.log`), xBytes);
    writeFileSync(join(journalDir, `999999998-${stamp}-0.log`), segmentBytes);

    const third = createLocalRuntime({ config, dataDir });
    try {
      assert.deepEqual(await third.recover(), { segments: 2, messages: 3 });
      assert.equal((await third.index.stat(BOB)).messages, 4, 'A, X, B and C');
      // The client asks for what came after what it saw: X, which it never saw, is there.
      const after = await third.index.committedAfter(BOB, seen, 100);
      assert.ok(
        after.items.some((e) => e.subject === 'x'),
        `after ${seen}: ${after.items.map((e) => e.subject).join(', ')}`,
      );
    } finally {
      await third.close();
    }
  });

  it('restores the blobs of a delivery whose index entry reached the disk before they did', async () => {
    const dataDir = join(work, 'lost-blobs');
    const config = parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] });
    const runtime = createLocalRuntime({ config, dataDir });
    const body = Buffer.from('Subject: kept\r\n\r\nthe body\r\n');
    await ingest(runtime, {
      body,
      mailFrom: '',
      recipients: ['carol@example.test'],
      via: { protocol: 'ESMTP' },
    });
    const journalDir = join(dataDir, 'journal');
    const [segment] = readdirSync(journalDir);
    assert.ok(segment);
    const bytes = readFileSync(join(journalDir, segment));
    const [entry] = await listAll(runtime.index, 'carol@example.test');
    assert.ok(entry);
    const emlKey = `mailboxes/carol@example.test/${entry.id}.eml`;
    const summaryKey = `mailboxes/carol@example.test/${entry.id}/summary.json`;
    const raw = await runtime.blobs.get(emlKey);
    const summary = await runtime.blobs.get(summaryKey);
    assert.ok(raw && summary);
    // The crash: the index commit survived, the (not yet synced) blobs did not.
    await runtime.blobs.delete(emlKey);
    await runtime.blobs.deletePrefix(`mailboxes/carol@example.test/${entry.id}/`);
    await runtime.close();
    writeFileSync(join(journalDir, segment.replace(/^\d+-/, '999999997-')), bytes);

    const next = createLocalRuntime({ config, dataDir });
    try {
      assert.deepEqual(await next.recover(), { segments: 1, messages: 1 });
      assert.deepEqual(await next.blobs.get(emlKey), raw, 'the raw copy is back, byte for byte');
      assert.deepEqual(await next.blobs.get(summaryKey), summary, 'and its parsed summary');
      assert.equal((await listAll(next.index, 'carol@example.test')).length, 1, 'still one entry');
      assert.equal((await next.index.stat('carol@example.test')).messages, 1);
    } finally {
      await next.close();
    }
  });
});

describe('FileSystemSyncer', () => {
  it('syncs through one helper process, and falls back to a one-off sync once it is closed', async () => {
    const syncer = new FileSystemSyncer(work);
    await Promise.all([syncer.sync(), syncer.sync(), syncer.sync()]);
    await syncer.sync();
    syncer.close();
    await syncer.sync();
  });

  it('neither keeps a finished process alive nor lets it exit while a sync is pending', async () => {
    const marker = join(work, 'synced-marker');
    const script = `
      import { writeFileSync } from 'node:fs';
      import { FileSystemSyncer } from './functions/local/ingest-journal.ts';
      const syncer = new FileSystemSyncer(${JSON.stringify(work)});
      // Nothing but the pending sync keeps this process alive until its answer arrives.
      syncer.sync().then(() => writeFileSync(${JSON.stringify(marker)}, 'ok'));
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: PROJECT_ROOT,
      stdio: 'inherit',
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const [code] = await once(child, 'exit');
    clearTimeout(timer);
    assert.equal(code, 0, 'the process ended on its own (the idle helper did not hold it)');
    assert.equal(readFileSync(marker, 'utf8'), 'ok', 'after its pending sync was answered');
  });
});

describe('a message refused (4xx) after it reached some of its mailboxes', () => {
  it('is taken back from them, so the client’s retry is the only copy, also after a crash', async () => {
    const dataDir = join(work, 'withdraw');
    const config = parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] });
    const runtime = createLocalRuntime({ config, dataDir });
    const input = {
      body: Buffer.from('Subject: to two\r\n\r\nbody\r\n'),
      mailFrom: 'x@remote.test',
      recipients: ['ann@example.test', 'ben@example.test'],
      via: { protocol: 'ESMTP' as const },
    };
    try {
      // Ann's delivery commits; Ben's fails (a full disk, say): the client is told to retry.
      const deliver = runtime.index.deliver.bind(runtime.index);
      runtime.index.deliver = async (entry, options) => {
        if (entry.mailbox === 'ben@example.test') throw new Error('database or disk is full');
        return deliver(entry, options);
      };
      await assert.rejects(ingest(runtime, input), /disk is full/);
      runtime.index.deliver = deliver;
      assert.deepEqual(await listAll(runtime.index, 'ann@example.test'), [], 'taken back from Ann');
      assert.deepEqual(await runtime.index.stat('ann@example.test'), {
        address: 'ann@example.test',
        messages: 0,
        bytes: 0,
      });
      assert.deepEqual(
        (await listAllKeys(runtime, 'inbound/')).concat(await listAllKeys(runtime, 'notifications/')),
        [],
        'nothing left for replay to bring back',
      );
      assert.deepEqual(await listAllKeys(runtime, 'mailboxes/'), [], 'no blobs left behind');
      // The crash before the next checkpoint: the journal still holds the refused message.
      const journalDir = join(dataDir, 'journal');
      const segments = readdirSync(journalDir).map((name) => ({
        name,
        bytes: readFileSync(join(journalDir, name)),
      }));
      // The retry.
      await ingest(runtime, input);
      await runtime.close();
      for (const s of segments)
        writeFileSync(join(journalDir, s.name.replace(/^\d+-/, '999999994-')), s.bytes);
    } finally {
      await runtime.close().catch(() => undefined);
    }
    const next = createLocalRuntime({ config, dataDir });
    try {
      assert.deepEqual(await next.recover(), { segments: 1, messages: 0 }, 'the refused record was aborted');
      for (const mailbox of ['ann@example.test', 'ben@example.test']) {
        assert.deepEqual(
          (await listAll(next.index, mailbox)).map((e) => e.subject),
          ['to two'],
          `${mailbox} has the retry only`,
        );
      }
    } finally {
      await next.close();
    }
  });
});

describe('taking back a refused message when the disk is still full', () => {
  it('is retried in the background until it succeeds', async () => {
    const dataDir = join(work, 'withdraw-later');
    const config = parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] });
    const runtime = createLocalRuntime({ config, dataDir });
    try {
      const deliver = runtime.index.deliver.bind(runtime.index);
      runtime.index.deliver = async (entry, options) => {
        if (entry.mailbox === 'ben@example.test') throw new Error('database or disk is full');
        return deliver(entry, options);
      };
      // The first delete fails too (still no room); the retry a second later finds room.
      const remove = runtime.index.delete.bind(runtime.index);
      let deletes = 0;
      runtime.index.delete = async (mailbox, id) => {
        deletes += 1;
        if (deletes === 1) throw new Error('database or disk is full');
        return remove(mailbox, id);
      };
      await assert.rejects(
        ingest(runtime, {
          body: Buffer.from('Subject: to two\r\n\r\nbody\r\n'),
          mailFrom: 'x@remote.test',
          recipients: ['ann@example.test', 'ben@example.test'],
          via: { protocol: 'ESMTP' },
        }),
        /disk is full/,
      );
      assert.equal((await listAll(runtime.index, 'ann@example.test')).length, 1, 'not taken back yet');
      for (let i = 0; i < 50 && (await listAll(runtime.index, 'ann@example.test')).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(await listAll(runtime.index, 'ann@example.test'), [], 'taken back by the retry');
      assert.equal((await runtime.index.stat('ann@example.test')).messages, 0);
    } finally {
      await runtime.close();
    }
  });
});

async function listAllKeys(runtime: LocalRuntime, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of runtime.blobs.list(prefix)) keys.push(info.key);
  return keys;
}
