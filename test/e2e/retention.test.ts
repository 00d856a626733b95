/**
 * `retention.mailboxDays`: the sweep (functions/pipeline/retention.ts) on the real local adapters
 * (SQLite + files in a temp dir) and on the AWS adapters against moto_server; `mail-relay dev`
 * sweeping at start; the Lambda handler's failure path. Mail is delivered through the real router
 * with receipt times in the past, so ids, blobs, parts and counters are what delivery writes.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Logger } from '@aws-lambda-powertools/logger';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import Database from 'better-sqlite3';
import { DynamoDbMailboxIndex } from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { MailRelayError } from '../../functions/core/errors.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { mailboxKeys, sentMailboxKey } from '../../functions/core/keys.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { createRetentionHandler } from '../../functions/handlers/retention-handler.ts';
import { main } from '../../functions/local/cli.ts';
import { ingest } from '../../functions/local/ingest.ts';
import { expireReceived, startRetentionSweeper } from '../../functions/local/retention-sweeper.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { replay } from '../../functions/pipeline/replay.ts';
import {
  ORPHAN_GRACE_MS,
  type RetentionDeps,
  SWEEP_RESUME_KEY,
  type SweepProgress,
  type SweepSummary,
  sweepExpired,
} from '../../functions/pipeline/retention.ts';
import { deliverToMailbox, NOTIFICATIONS_PREFIX, type RouterDeps } from '../../functions/pipeline/router.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import type { MailboxIndex, MessageEntry } from '../../functions/ports/mailbox-index.ts';
import { capturePowertools, scheduledEvent } from '../helpers/aws-events.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { type Moto, motoAvailable, startMotoStorage } from '../helpers/moto.ts';
import { listAll } from '../helpers/relay.ts';

const DAY = 24 * 60 * 60 * 1000;
const MAILBOX_DAYS = 30;
const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const CAROL = 'carol@example.test';
const CONFIG: RawConfig = {
  domains: ['example.test'],
  mailboxes: [ALICE, BOB, CAROL],
  routes: [{ match: 'team@example.test', action: 'deliver', to: [ALICE, BOB] }],
  retention: { mailboxDays: MAILBOX_DAYS },
};
/** A message with a decoded attachment, so a delivery writes parts under `<id>/parts/`. */
const WITH_ATTACHMENT = readFileSync(join(PROJECT_ROOT, 'test/fixtures/mixed-attachment.eml'));

function plain(subject: string): Buffer {
  return Buffer.from(
    `From: x@remote.test\r\nTo: someone@example.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`,
  );
}

/** One stored copy: where it is and how big. */
interface Copy {
  readonly mailbox: string;
  readonly id: string;
  readonly size: number;
}

/** Delivers through the real router at `receivedAt`; one Copy per mailbox it landed in. */
async function deliverAt(
  deps: RouterDeps,
  recipients: readonly string[],
  body: Buffer,
  receivedAt: Date,
): Promise<Copy[]> {
  const r = await ingest(deps, {
    body,
    mailFrom: 'x@remote.test',
    recipients,
    via: { protocol: 'LOCAL' },
    receivedAt,
  });
  return r.outcomes.flatMap((o) =>
    o.status === 'delivered' && o.decision.kind === 'deliver'
      ? [{ mailbox: o.decision.mailbox, id: r.id, size: r.size }]
      : [],
  );
}

/** A copy in the owner's sent view, written as POST …/send writes it. */
async function sentCopyAt(deps: RouterDeps, owner: string, subject: string, at: Date): Promise<Copy> {
  const raw = plain(subject);
  const id = messageIdFor(at.getTime(), `submit:${owner}:${subject}`);
  const mailbox = sentMailboxKey(owner);
  await deliverToMailbox(deps, {
    mailbox,
    id,
    raw,
    parsed: await deps.parser.parse(raw),
    firstCopy: null,
    entry: {
      receivedAt: at.toISOString(),
      verdicts: UNCHECKED_VERDICTS,
      tags: [],
      quarantineReasons: undefined,
      recipient: owner,
      plusTag: undefined,
      sesMessageId: `sent-${subject}`,
    },
  });
  return { mailbox, id, size: raw.length };
}

/** Every blob key of a message (raw, summary, parts). */
async function blobKeysOf(blobs: BlobStore, c: Copy): Promise<string[]> {
  const keys: string[] = [];
  if ((await blobs.head(mailboxKeys.raw(c.mailbox, c.id))) !== null)
    keys.push(mailboxKeys.raw(c.mailbox, c.id));
  for await (const info of blobs.list(mailboxKeys.dir(c.mailbox, c.id))) keys.push(info.key);
  return keys;
}

async function assertKept(deps: RetentionDeps, c: Copy): Promise<void> {
  assert.ok((await deps.index.get(c.mailbox, c.id)) !== null, `${c.mailbox}/${c.id} is still listed`);
  const raw = await deps.blobs.get(mailboxKeys.raw(c.mailbox, c.id));
  assert.equal(raw?.length, c.size, `${c.mailbox}/${c.id} keeps its raw bytes`);
  assert.ok((await deps.blobs.head(mailboxKeys.summary(c.mailbox, c.id))) !== null, 'and its summary');
}

async function assertGone(deps: RetentionDeps, c: Copy): Promise<void> {
  assert.equal(await deps.index.get(c.mailbox, c.id), null, `${c.mailbox}/${c.id} is no longer listed`);
  assert.deepEqual(await blobKeysOf(deps.blobs, c), [], `${c.mailbox}/${c.id} has no blob left`);
}

/** The counters are exactly the kept copies of each mailbox, and LIST shows exactly them. */
async function assertMailboxes(index: MailboxIndex, kept: readonly Copy[], mailboxes: readonly string[]) {
  for (const mailbox of mailboxes) {
    const mine = kept.filter((c) => c.mailbox === mailbox);
    assert.deepEqual(await index.stat(mailbox), {
      address: mailbox,
      messages: mine.length,
      bytes: mine.reduce((n, c) => n + c.size, 0),
    });
    assert.deepEqual(
      (await listAll(index, mailbox)).map((e) => e.id),
      mine
        .map((c) => c.id)
        .sort()
        .reverse(),
      `${mailbox}: LIST`,
    );
  }
}

/** An index entry of a message received at `at` (no blobs): for walks over many messages and mailboxes. */
function indexEntry(mailbox: string, sesMessageId: string, at: number, size: number): MessageEntry {
  return {
    mailbox,
    id: messageIdFor(at, sesMessageId),
    size,
    crlfSize: size,
    receivedAt: new Date(at).toISOString(),
    from: 'x@remote.test',
    to: mailbox,
    subject: sesMessageId,
    snippet: '',
    hasAttachments: false,
    seen: false,
    verdicts: UNCHECKED_VERDICTS,
    tags: [],
    recipient: mailbox,
    parseFailed: false,
    sesMessageId,
  };
}

const sum = (copies: readonly Copy[]) => copies.reduce((n, c) => n + c.size, 0);
const NOTHING: Omit<SweepSummary, 'mailboxes'> = {
  deleted: 0,
  bytes: 0,
  orphans: 0,
  failures: [],
  complete: true,
};

describe('retention sweep on the local adapters (SQLite + files)', () => {
  const dirs: string[] = [];
  const runtimes: LocalRuntime[] = [];
  const fresh = (): LocalRuntime => {
    const dir = mkdtempSync(join(tmpdir(), 'mr-retention-'));
    dirs.push(dir);
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: dir });
    runtimes.push(runtime);
    return runtime;
  };
  after(async () => {
    for (const r of runtimes) await r.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  describe('a mailbox set with old and new mail, inbox and sent view', () => {
    let runtime: LocalRuntime;
    const now = new Date();
    const ago = (ms: number) => new Date(now.getTime() - ms);
    const expired: Copy[] = [];
    const kept: Copy[] = [];
    let inboundOfExpired = '';

    before(async () => {
      runtime = fresh();
      expired.push(...(await deliverAt(runtime, [ALICE], plain('forty days'), ago(40 * DAY))));
      // One millisecond past the limit, with parts on disk.
      const old = await ingest(runtime, {
        body: WITH_ATTACHMENT,
        mailFrom: 'x@remote.test',
        recipients: [ALICE],
        via: { protocol: 'LOCAL' },
        receivedAt: ago(MAILBOX_DAYS * DAY + 1),
      });
      expired.push({ mailbox: ALICE, id: old.id, size: old.size });
      inboundOfExpired = old.inboundKey;
      // One message, two mailboxes (the second a server-side copy).
      expired.push(...(await deliverAt(runtime, ['team@example.test'], plain('team, old'), ago(31 * DAY))));
      expired.push(await sentCopyAt(runtime, ALICE, 'sent long ago', ago(45 * DAY)));
      // Exactly at the limit is not "before" it: kept.
      kept.push(...(await deliverAt(runtime, [ALICE], plain('thirty days'), ago(MAILBOX_DAYS * DAY))));
      kept.push(...(await deliverAt(runtime, [ALICE], WITH_ATTACHMENT, ago(DAY))));
      kept.push(...(await deliverAt(runtime, [BOB], plain('two hours'), ago(2 * 60 * 60 * 1000))));
      kept.push(await sentCopyAt(runtime, ALICE, 'sent yesterday', ago(DAY)));
      assert.equal(expired.length, 5);
      assert.equal(
        (await blobKeysOf(runtime.blobs, expired[1] as Copy)).length >= 3,
        true,
        'raw, summary, part',
      );
    });

    it('deletes what was received before now − mailboxDays (entry, counters, raw file, summary, parts) and keeps the rest', async () => {
      const progress: SweepProgress[] = [];
      const summary = await sweepExpired(runtime, {
        mailboxDays: MAILBOX_DAYS,
        now,
        onProgress: (p) => progress.push(p),
      });
      assert.deepEqual(summary, { mailboxes: 3, ...NOTHING, deleted: 5, bytes: sum(expired) });
      for (const c of expired) await assertGone(runtime, c);
      for (const c of kept) await assertKept(runtime, c);
      await assertMailboxes(runtime.index, kept, [ALICE, BOB, sentMailboxKey(ALICE)]);
      // Not even an empty directory is left of a deleted message.
      for (const c of expired) {
        assert.equal(existsSync(join(runtime.blobRoot, mailboxKeys.dir(c.mailbox, c.id))), false);
        assert.equal(existsSync(join(runtime.blobRoot, mailboxKeys.raw(c.mailbox, c.id))), false);
      }
      // inbound/ is the replay window, with a retention of its own: the sweep leaves it alone.
      assert.ok((await runtime.blobs.head(inboundOfExpired)) !== null);
      assert.deepEqual(
        progress.map((p) => [p.mailbox, p.done]),
        [
          [ALICE, 1],
          [sentMailboxKey(ALICE), 2],
          [BOB, 3],
        ],
      );
      assert.equal(progress.at(-1)?.deleted, 5);
    });

    it('running it again deletes nothing and changes nothing', async () => {
      const again = await sweepExpired(runtime, { mailboxDays: MAILBOX_DAYS, now });
      assert.deepEqual(again, { mailboxes: 3, ...NOTHING });
      for (const c of kept) await assertKept(runtime, c);
      await assertMailboxes(runtime.index, kept, [ALICE, BOB, sentMailboxKey(ALICE)]);
    });
  });

  it('walks past a full page of kept mail and deletes across page boundaries (1000 per page)', async () => {
    const runtime = fresh();
    const now = Date.now();
    const entry = (i: number, at: number) => indexEntry(CAROL, `bulk-${i}`, at, 100 + (i % 7));
    // 700 kept (the last 29 days), then 400 expired: the first page holds 700 kept and 300
    // expired entries, the second page the other 100.
    const entries = [
      ...Array.from({ length: 700 }, (_, i) => entry(i, now - 1000 - i * 60_000)),
      ...Array.from({ length: 400 }, (_, i) => entry(700 + i, now - 31 * DAY - i * 60_000)),
    ];
    for (const e of entries) assert.equal((await runtime.index.deliver(e)).inserted, true);
    // What the sweep reads of the mailbox: the expired mail only, not the kept mail before it (it
    // read every kept message each sweep: a whole 100,000-message mailbox, to find nothing).
    let listed = 0;
    const index = runtime.index;
    const counting = new Proxy(index, {
      get(target, key, receiver) {
        if (key !== 'list') {
          const value = Reflect.get(target, key, receiver);
          return typeof value === 'function' ? value.bind(target) : value;
        }
        return async (...args: Parameters<typeof index.list>) => {
          const page = await target.list(...args);
          listed += page.items.length;
          return page;
        };
      },
    });
    const summary = await sweepExpired(
      { index: counting, blobs: runtime.blobs },
      { mailboxDays: MAILBOX_DAYS, now: new Date(now) },
    );
    assert.equal(listed, 400, 'entries the sweep listed');
    const expired = entries.slice(700);
    const kept = entries.slice(0, 700);
    assert.deepEqual(summary, {
      mailboxes: 1,
      ...NOTHING,
      deleted: 400,
      bytes: expired.reduce((n, e) => n + e.size, 0),
    });
    assert.deepEqual(await runtime.index.stat(CAROL), {
      address: CAROL,
      messages: 700,
      bytes: kept.reduce((n, e) => n + e.size, 0),
    });
    assert.deepEqual(
      (await listAll(runtime.index, CAROL)).map((e) => e.id),
      kept
        .map((e) => e.id)
        .sort()
        .reverse(),
    );
  });

  it('reaches every mailbox when there are more than one page of them (1,000 a page), sent views included', async () => {
    const runtime = fresh();
    const now = Date.now();
    const entry = (mailbox: string, i: number, at: number) =>
      indexEntry(mailbox, `many-${i}`, at, 100 + (i % 7));
    // 1,150 addresses, every tenth with a sent view (u0999's too: the last of the first page), and
    // the same local part at a longer domain, whose keys sort between an address and its sent view.
    const addresses = Array.from({ length: 1150 }, (_, i) => `u${String(i).padStart(4, '0')}@example.test`);
    addresses.push('u0999@example.test.org', 'u1000@example.test-x.org');
    const keys = addresses.flatMap((a, i) => (i % 10 === 9 ? [a, sentMailboxKey(a)] : [a]));
    const expired: MessageEntry[] = [];
    const kept: MessageEntry[] = [];
    for (const [i, key] of keys.entries()) {
      const old = entry(key, i, now - 31 * DAY - i * 1000);
      expired.push(old);
      assert.equal((await runtime.index.deliver(old)).inserted, true);
      if (i % 3 === 0) {
        const recent = entry(key, keys.length + i, now - DAY - i * 1000);
        kept.push(recent);
        assert.equal((await runtime.index.deliver(recent)).inserted, true);
      }
    }
    const swept: string[] = [];
    const summary = await sweepExpired(runtime, {
      mailboxDays: MAILBOX_DAYS,
      now: new Date(now),
      onProgress: (p) => swept.push(p.mailbox),
    });
    assert.deepEqual(summary, {
      mailboxes: keys.length,
      ...NOTHING,
      deleted: expired.length,
      bytes: expired.reduce((n, e) => n + e.size, 0),
    });
    assert.deepEqual([...swept].sort(), [...keys].sort(), 'every mailbox once');
    for (const key of keys) {
      const mine = kept.filter((e) => e.mailbox === key);
      assert.deepEqual(await runtime.index.stat(key), {
        address: key,
        messages: mine.length,
        bytes: mine.reduce((n, e) => n + e.size, 0),
      });
    }
  });

  it('a sweep stopped early is taken up where it stopped by the next, which runs to the end; the one after starts over', async () => {
    const runtime = fresh();
    const now = Date.now();
    const owners = ['a', 'b', 'c', 'd'].map((l) => `${l}@example.test`);
    // b's sent view comes right after b: stopping between the two must not skip the sent view.
    const keys = [owners[0], owners[1], sentMailboxKey(owners[1] ?? ''), owners[2], owners[3]] as string[];
    for (const [i, key] of keys.entries()) {
      for (const n of [0, 1]) {
        const at = now - 40 * DAY - (i * 2 + n) * 1000;
        const entry = indexEntry(key, `resume-${i}-${n}`, at, 100);
        assert.equal((await runtime.index.deliver(entry)).inserted, true);
      }
    }
    const run = async (stopAfter?: string) => {
      const stop = new AbortController();
      const swept: string[] = [];
      const summary = await sweepExpired(runtime, {
        mailboxDays: MAILBOX_DAYS,
        now: new Date(now),
        signal: stop.signal,
        onProgress: (p) => {
          swept.push(p.mailbox);
          if (p.mailbox === stopAfter) stop.abort();
        },
      });
      return { swept, complete: summary.complete, deleted: summary.deleted };
    };
    // Stopped after b's inbox, before its sent view: b is not done, so the next run starts at b.
    assert.deepEqual(await run(owners[1]), { swept: keys.slice(0, 2), complete: false, deleted: 4 });
    assert.ok(await runtime.blobs.get(SWEEP_RESUME_KEY), 'the position is kept');
    assert.deepEqual(await run(keys[3]), { swept: keys.slice(1, 4), complete: false, deleted: 4 });
    // c was done: from d to the end. Every mailbox was reached, b's sent view too.
    assert.deepEqual(await run(), { swept: keys.slice(4), complete: true, deleted: 2 });
    assert.equal(await runtime.blobs.get(SWEEP_RESUME_KEY), null, 'a sweep that reached the end forgets it');
    for (const key of keys) assert.equal((await runtime.index.stat(key)).messages, 0, key);
    const again = await run();
    assert.deepEqual(
      again,
      { swept: keys, complete: true, deleted: 0 },
      'the next sweep starts from the first',
    );
  });

  it('removes the blobs an interrupted DELE left behind, once they are older than the grace period', async () => {
    const runtime = fresh();
    const now = Date.now();
    const [orphan] = await deliverAt(runtime, [ALICE], WITH_ATTACHMENT, new Date(now - 40 * DAY));
    const [young] = await deliverAt(runtime, [ALICE], plain('young'), new Date(now - DAY));
    assert.ok(orphan && young);
    // DELE's commit point passed, then the process died before the blobs were deleted.
    assert.ok((await runtime.index.delete(ALICE, orphan.id)) !== null);

    // Just written: it could be a delivery of old mail (import, replay) between its blobs and its entry.
    const first = await sweepExpired(runtime, { mailboxDays: MAILBOX_DAYS, now: new Date(now) });
    assert.deepEqual(first, { mailboxes: 1, ...NOTHING });
    assert.ok((await blobKeysOf(runtime.blobs, orphan)).length >= 3);

    const later = new Date(now + ORPHAN_GRACE_MS + 60_000);
    const second = await sweepExpired(runtime, { mailboxDays: MAILBOX_DAYS, now: later });
    assert.deepEqual(second, { mailboxes: 1, ...NOTHING, orphans: 1 });
    assert.deepEqual(await blobKeysOf(runtime.blobs, orphan), []);
    await assertKept(runtime, young);
    await assertMailboxes(runtime.index, [young], [ALICE]);
  });

  it('runs beside deliveries and beside another sweep: new mail stays, nothing is counted twice, counters stay exact', async () => {
    const runtime = fresh();
    const now = Date.now();
    const old: Copy[] = [];
    for (let i = 0; i < 12; i++) {
      old.push(
        ...(await deliverAt(runtime, [ALICE], plain(`old ${i}`), new Date(now - 40 * DAY + i * 1000))),
      );
    }
    const options = { mailboxDays: MAILBOX_DAYS, now: new Date(now) };
    const [a, b, ...arrivals] = await Promise.all([
      sweepExpired(runtime, options),
      sweepExpired(runtime, options),
      ...Array.from({ length: 4 }, (_, i) =>
        deliverAt(runtime, [ALICE], plain(`new ${i}`), new Date(now + i)),
      ),
    ]);
    assert.ok(a && b);
    assert.equal(a.deleted + b.deleted, 12, 'each message counted by exactly one sweep');
    assert.equal(a.bytes + b.bytes, sum(old));
    const kept = arrivals.flat();
    for (const c of old) await assertGone(runtime, c);
    for (const c of kept) await assertKept(runtime, c);
    await assertMailboxes(runtime.index, kept, [ALICE]);
  });

  it('a mailbox that fails is reported and the others are still swept; the Lambda handler then fails the invocation', async () => {
    const runtime = fresh();
    const now = Date.now();
    const [aliceOld] = await deliverAt(runtime, [ALICE], plain('a'), new Date(now - 40 * DAY));
    const [bobOld] = await deliverAt(runtime, [BOB], plain('b'), new Date(now - 40 * DAY));
    assert.ok(aliceOld && bobOld);
    const index = new Proxy(runtime.index, {
      get(target, prop, receiver) {
        if (prop === 'delete') {
          return (mailbox: string, id: string) =>
            mailbox === ALICE ? Promise.reject(new Error('disk on fire')) : target.delete(mailbox, id);
        }
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const handler = createRetentionHandler({
      deps: { index, blobs: runtime.blobs },
      mailboxDays: MAILBOX_DAYS,
      logger: new Logger({ serviceName: 'mail-relay-retention-test' }),
    });
    const { result, lines } = await capturePowertools(() =>
      handler(scheduledEvent()).then(
        () => null,
        (err: unknown) => err,
      ),
    );
    assert.ok(result instanceof MailRelayError, String(result));
    assert.equal(result.code, 'retention_failed');
    assert.match(result.message, /alice@example\.test: disk on fire/);
    await assertGone(runtime, bobOld);
    await assertKept(runtime, aliceOld);
    assert.ok(lines.some((l) => l.message === 'retention sweep done' && l.deleted === 1 && l.failed === 1));
  });

  it('refuses a retention that is not a positive number of days', async () => {
    const runtime = fresh();
    for (const mailboxDays of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(sweepExpired(runtime, { mailboxDays }), RangeError);
    }
  });
});

describe('local retention timer', () => {
  let dir: string;
  let runtime: LocalRuntime;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mr-retention-timer-'));
    runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: dir });
  });
  after(async () => {
    await runtime.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sweeps at once and again on every interval; stop waits for a sweep in progress', async () => {
    const [first] = await deliverAt(runtime, [ALICE], plain('first'), new Date(Date.now() - 40 * DAY));
    assert.ok(first);
    const swept: SweepSummary[] = [];
    const sweeper = startRetentionSweeper(runtime, {
      mailboxDays: MAILBOX_DAYS,
      received: { inboundDays: 30, forwardedDays: 30 },
      intervalMs: 50,
      onSwept: (s) => swept.push(s),
    });
    try {
      const until = async (what: string, ok: () => boolean) => {
        const deadline = Date.now() + 10_000;
        while (!ok()) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await sleep(10);
        }
      };
      await until('the first sweep', () => swept.length > 0);
      assert.equal(swept[0]?.deleted, 1);
      const [second] = await deliverAt(runtime, [ALICE], plain('second'), new Date(Date.now() - 40 * DAY));
      assert.ok(second);
      await until('a later sweep', () => swept.some((s, i) => i > 0 && s.deleted === 1));
      await assertGone(runtime, second);
    } finally {
      await sweeper.stop();
    }
    const count = swept.length;
    await sleep(150);
    assert.equal(swept.length, count, 'no sweep after stop');
  });
});

/** Runs `mail-relay dev` in this process until it logs a retention line, then stops it; returns its output. */
async function devUntilRetentionLine(configPath: string, dataDir: string): Promise<string> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const stop = new AbortController();
  const env = {
    ...process.env,
    MAIL_RELAY_CONFIG: configPath,
    MAIL_RELAY_DATA_DIR: dataDir,
    MAIL_RELAY_SMTP_PORT: '0',
    MAIL_RELAY_API_PORT: '0',
  };
  const running = main(['dev'], { out, err: out, env, stop: stop.signal });
  const deadline = Date.now() + 20_000;
  while (!/retention: deleted/.test(text)) {
    if (Date.now() > deadline) {
      stop.abort();
      await running;
      throw new Error(`no retention line from dev:\n${text}`);
    }
    await sleep(20);
  }
  stop.abort();
  assert.equal(await running, 0);
  return text;
}

describe('mail-relay dev with retention.mailboxDays', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'mr-retention-dev-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('sweeps at start, logs one line, and leaves the rest', async () => {
    const dataDir = join(work, 'data');
    const configPath = join(work, 'mail-relay.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    // Mail from before the relay was last stopped: one expired, one not.
    const seeded = createLocalRuntime({ config: parseConfig(CONFIG), dataDir });
    const [old] = await deliverAt(seeded, [ALICE], plain('old'), new Date(Date.now() - 40 * DAY));
    const [recent] = await deliverAt(seeded, [ALICE], plain('recent'), new Date(Date.now() - DAY));
    await seeded.close();
    assert.ok(old && recent);

    const text = await devUntilRetentionLine(configPath, dataDir);
    const lines = text.split('\n').filter((l) => / retention: /.test(l));
    assert.equal(lines.length, 1, text);
    assert.match(lines[0] ?? '', /retention: deleted 1 message\(s\), \d+B, older than 30 day\(s\)$/);

    const reopened = createLocalRuntime({ config: parseConfig(CONFIG), dataDir });
    try {
      await assertGone(reopened, old);
      await assertKept(reopened, recent);
      await assertMailboxes(reopened.index, [recent], [ALICE]);
    } finally {
      await reopened.close();
    }
  });
});

describe('retention sweep on the AWS adapters (moto: S3 + DynamoDB)', { skip: !motoAvailable() }, () => {
  const BUCKET = 'mail-relay-retention-test';
  const TABLE = 'mail-relay-retention-test';
  let moto: Moto;
  let s3: S3Client;
  let dynamo: DynamoDBClient;
  let deps: RouterDeps;

  before(async () => {
    ({ moto, s3, dynamo } = await startMotoStorage({ bucket: BUCKET, table: TABLE }));
    deps = {
      config: parseConfig(CONFIG),
      blobs: new S3BlobStore({ client: s3, bucket: BUCKET }),
      index: new DynamoDbMailboxIndex({ client: DynamoDBDocumentClient.from(dynamo), tableName: TABLE }),
      parser: new MailparserAdapter(),
      outbound: {
        send: () => Promise.reject(new Error('nothing is forwarded in this test')),
      },
    };
  });
  after(async () => {
    s3?.destroy();
    dynamo?.destroy();
    await moto?.stop();
  });

  it('deletes expired mail from DynamoDB and S3 with exact counters; the handler’s second run deletes nothing', async () => {
    const now = Date.now();
    // Few messages: moto is slow. Parts, a two-mailbox copy, and one kept message.
    const expired = [
      ...(await deliverAt(deps, [ALICE], WITH_ATTACHMENT, new Date(now - 40 * DAY))),
      ...(await deliverAt(deps, ['team@example.test'], plain('team'), new Date(now - 31 * DAY))),
    ];
    const kept = await deliverAt(deps, [ALICE], plain('kept'), new Date(now - DAY));
    assert.equal(expired.length, 3);

    const summary = await sweepExpired(deps, { mailboxDays: MAILBOX_DAYS, now: new Date(now) });
    assert.deepEqual(summary, { mailboxes: 2, ...NOTHING, deleted: 3, bytes: sum(expired) });
    for (const c of expired) await assertGone(deps, c);
    for (const c of kept) await assertKept(deps, c);
    await assertMailboxes(deps.index, kept, [ALICE, BOB]);

    const handler = createRetentionHandler({
      deps,
      mailboxDays: MAILBOX_DAYS,
      logger: new Logger({ serviceName: 'mail-relay-retention-test' }),
      clock: () => new Date(now),
    });
    const { result, lines } = await capturePowertools(() => handler(scheduledEvent()));
    assert.deepEqual(result, { mailboxes: 2, ...NOTHING });
    assert.ok(lines.some((l) => l.message === 'retention sweep done' && l.deleted === 0));
    await assertMailboxes(deps.index, kept, [ALICE, BOB]);
  });
});

describe('local expiry of received mail (inbound/, notifications/, forwarded/), as S3 lifecycle rules do in AWS', () => {
  let dir: string;
  let runtime: LocalRuntime;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mr-retention-inbound-'));
    runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: dir });
  });
  after(async () => {
    await runtime.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const keysUnder = async (prefix: string) => {
    const keys: string[] = [];
    for await (const b of runtime.blobs.list(prefix)) keys.push(b.key);
    return keys;
  };

  it('deletes them once older than inboundDays (rows and files alike), keeps mailboxes, and replay cannot bring deleted mail back', async () => {
    const now = new Date();
    const [small] = await deliverAt(runtime, [ALICE], plain('small'), now);
    // Over 64 KiB: a file, not a row (ADR 13).
    const [big] = await deliverAt(runtime, [ALICE], plain(`big ${'x'.repeat(100_000)}`), now);
    assert.ok(small && big);
    assert.equal((await keysUnder('inbound/')).length, 2);
    assert.equal((await keysUnder(NOTIFICATIONS_PREFIX)).length, 2);

    // An original kept behind an oversize-forward notice (forwarded/), on its own schedule. It is a
    // hard link of inbound/ (forward.ts keepOriginal); its data may be old (a replay of old mail):
    // the copy must read as written when it was copied, as S3's CopyObject does, or it would expire
    // before the link in the notice does.
    const bigKey = (await keysUnder('inbound/')).find((k) => existsSync(join(dir, 'blobs', k)));
    assert.ok(bigKey, 'the big inbound/ copy is a file');
    const longAgo = new Date(now.getTime() - 25 * DAY);
    utimesSync(join(dir, 'blobs', bigKey), longAgo, longAgo);
    await runtime.blobs.copy(bigKey, 'forwarded/01ORIGINAL.eml');
    const days = { inboundDays: 30, forwardedDays: 8 };
    const early = await expireReceived(runtime.blobs, days, new Date(now.getTime() + 7 * DAY));
    assert.deepEqual(early, { deleted: 0, bytes: 0 }, 'within the window: kept');

    // The owner deletes the small one. A replay past the window (here: the relay not swept yet, or
    // S3's lifecycle rule late) leaves the old notifications alone: the index may have forgotten the
    // deletion by then, and the deleted mail would come back.
    await runtime.index.delete(ALICE, small.id);
    const late = await replay(runtime, { since: new Date(0), now: new Date(now.getTime() + 31 * DAY) });
    assert.deepEqual([late.considered, late.expired, late.replayed], [0, 2, 0]);

    const forwarded = await expireReceived(runtime.blobs, days, new Date(now.getTime() + 9 * DAY));
    assert.equal(forwarded.deleted, 1, 'the forwarded original, past its 8 days');
    assert.deepEqual(await keysUnder('forwarded/'), []);
    assert.equal((await keysUnder('inbound/')).length, 2, 'inbound/ keeps its 30 days');
    const expired = await expireReceived(runtime.blobs, days, new Date(now.getTime() + 31 * DAY));
    assert.equal(expired.deleted, 4, 'two raw messages, two notifications');
    assert.ok(expired.bytes > 100_000);
    assert.deepEqual(await keysUnder('inbound/'), []);
    assert.deepEqual(await keysUnder(NOTIFICATIONS_PREFIX), []);
    // Delivered mail is the mailbox's, not the replay window's.
    assert.ok(await runtime.blobs.get(mailboxKeys.raw(ALICE, big.id)));
    // Nothing is left to replay.
    const replayed = await replay(runtime, { since: new Date(0) });
    assert.equal(replayed.considered, 0);
    assert.deepEqual(
      (await listAll(runtime.index, ALICE)).map((e) => e.id),
      [big.id],
    );
  });
});

describe('mail-relay dev expires received mail even without retention.mailboxDays', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'mr-retention-dev-inbound-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('deletes inbound/ past inboundDays at start, logs one line, and keeps the mailbox copy', async () => {
    const dataDir = join(work, 'data');
    const configPath = join(work, 'mail-relay.config.json');
    const config = { domains: ['example.test'], mailboxes: [ALICE] };
    writeFileSync(configPath, JSON.stringify(config));
    // A message received 40 days ago: its inbound/ copy (a SQLite row, ADR 13) written then. (A
    // file's age cannot be set from here: its inode's change time counts too, and only moves on.)
    const seeded = createLocalRuntime({ config: parseConfig(config), dataDir });
    const [old] = await deliverAt(seeded, [ALICE], plain('old'), new Date());
    await seeded.close();
    assert.ok(old);
    const db = new Database(join(dataDir, 'blobs.sqlite'));
    const aged = db
      .prepare("UPDATE blobs SET mtime = ? WHERE key LIKE 'inbound/%'")
      .run(Date.now() - 40 * DAY).changes;
    db.close();
    assert.equal(aged, 1);

    const text = await devUntilRetentionLine(configPath, dataDir);
    assert.match(
      text,
      /retention: deleted 1 received message\(s\), notification\(s\) and forwarded original\(s\), \d+B \(inbound\/, notifications\/ after 30 day\(s\); forwarded\/ after 30\)/,
    );
    const reopened = createLocalRuntime({ config: parseConfig(config), dataDir });
    try {
      const left: string[] = [];
      for await (const b of reopened.blobs.list('inbound/')) left.push(b.key);
      assert.deepEqual(left, []);
      // The notification was written now: it keeps its 30 days. The mailbox copy is the mailbox's.
      assert.equal((await reopened.blobs.get(mailboxKeys.raw(ALICE, old.id)))?.length, old.size);
    } finally {
      await reopened.close();
    }
  });
});
