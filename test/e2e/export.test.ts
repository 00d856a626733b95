/**
 * `mail-relay export` (functions/local/export.ts, mboxrd.ts) as a user runs it: mail arrives over
 * SMTP, the binary exports the mailbox (mbox to stdout or a file, or a Maildir), Python's `mailbox`
 * reads the export, and `mail-relay import` brings it into a fresh data dir byte for byte with its
 * read state. Also beside a running `dev`, on a slice of the corpus, and its refusals.
 */
import assert from 'node:assert/strict';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import { parseConfig } from '../../functions/core/config.ts';
import { deleteMessageBlobs, mailboxKeys } from '../../functions/core/keys.ts';
import { main } from '../../functions/local/cli.ts';
import { importFiles } from '../../functions/local/import.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { BIN, cleanEnv, startDev } from '../helpers/dev.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { python, run } from '../helpers/process.ts';
import { listAll, startTestRelay, type TestRelay } from '../helpers/relay.ts';
import { fillDisk, mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const CONFIG = { domains: ['example.test'], mailboxes: [ALICE, BOB] };
const FIXTURES = join(PROJECT_ROOT, 'test/fixtures');
const CORPUS = join(PROJECT_ROOT, '../shared/corpus');

const work = mkdtempSync(join(tmpdir(), 'mr-export-'));
after(() => rmSync(work, { recursive: true, force: true }));
const configPath = join(work, 'mail-relay.config.json');
writeFileSync(configPath, JSON.stringify(CONFIG));

/** The binary, on a data dir. */
function cli(dataDir: string, args: readonly string[], timeoutMs = 120_000) {
  return run(process.execPath, [BIN, ...args], {
    env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir }),
    timeoutMs,
  });
}

/** Sends raw bytes over SMTP, as a remote server would. */
async function sendRaw(port: number, raw: Buffer, from = 'friend@remote.test', to = ALICE): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
  try {
    await transport.sendMail({ envelope: { from, to: [to] }, raw });
  } finally {
    transport.close();
  }
}

/** What each stored message of a data dir's mailbox is, oldest first: its bytes and read state. */
async function stored(
  dataDir: string,
  mailbox: string,
): Promise<{ id: string; raw: Buffer; seen: boolean; receivedAt: string }[]> {
  const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir, durability: 'sync' });
  try {
    const entries = (await listAll(runtime.index, mailbox)).reverse();
    const out = [];
    for (const e of entries) {
      const raw = await runtime.blobs.get(mailboxKeys.raw(mailbox, e.id));
      assert.ok(raw, `raw of ${e.id}`);
      out.push({ id: e.id, raw, seen: e.seen, receivedAt: e.receivedAt });
    }
    return out;
  } finally {
    await runtime.close();
  }
}

/**
 * Imports `path` into a fresh data dir (`--to mailbox`) and checks the round trip: as many messages,
 * each the original's bytes exactly (its trace headers, and none added), the same read state, receipt
 * time and id.
 */
async function assertRoundTrip(
  original: { id: string; raw: Buffer; seen: boolean; receivedAt: string }[],
  path: string,
  mailbox: string,
  label: string,
): Promise<void> {
  const fresh = mkdtempSync(join(work, 'fresh-'));
  const imported = await cli(fresh, ['import', '--to', mailbox, path]);
  assert.equal(imported.code, 0, `${label}: ${imported.stderr}${imported.stdout}`);
  const back = await stored(fresh, mailbox);
  assert.equal(back.length, original.length, `${label}: as many messages`);
  // Import orders by its receipt time: compared as sets of bytes, then each one's read state.
  const byBytes = new Map(back.map((b) => [b.raw.toString('latin1'), b]));
  for (const [i, o] of original.entries()) {
    const again = byBytes.get(o.raw.toString('latin1'));
    assert.ok(
      again,
      `${label}: message ${i + 1} comes back byte for byte\n--- original:\n${o.raw.toString('latin1').slice(0, 400)}`,
    );
    // Byte for byte: so neither the export's `From ` line nor its read state fields came back, every
    // `>From ` is unescaped, and no trace header was added (it is the message as stored, not a receipt).
    assert.equal(again.seen, o.seen, `${label}: message ${i + 1} read state`);
    // The same id (a POP3 client's UIDL, a link), at the same time to the millisecond.
    assert.equal(again.id, o.id, `${label}: message ${i + 1} id`);
    assert.equal(again.receivedAt, o.receivedAt, `${label}: message ${i + 1} receipt time`);
  }
  // Imported again there: found, nothing added.
  const twice = await cli(fresh, ['import', '--to', mailbox, path]);
  assert.match(twice.stdout, new RegExp(`delivered 0, duplicate ${original.length},`), label);
}

/** Messages that take an mbox writer's care: From lines in the body, CRLF and LF, no last line end. */
const TRICKY = [
  Buffer.from(
    'From: Ann <ann@remote.test>\r\nTo: alice@example.test\r\nSubject: quoting\r\n\r\n' +
      'From the start of a line.\r\n>From once quoted.\r\n>>From twice.\r\nFrom\r\nFromage\r\n \r\n',
  ),
  Buffer.from(
    'From: Bob <bob@remote.test>\nTo: alice@example.test\nSubject: bare LF\n\nFrom here, LF only.\n>From there.\n',
  ),
];

describe('mail-relay export, local', () => {
  let relay: TestRelay;
  let dataDir: string;
  let original: { id: string; raw: Buffer; seen: boolean; receivedAt: string }[];

  before(async () => {
    dataDir = join(work, 'data');
    relay = await startTestRelay(CONFIG, dataDir);
    const port = relay.smtp.port;
    await sendRaw(port, TRICKY[0] as Buffer, 'ann@remote.test');
    for (const name of readdirSync(FIXTURES)
      .filter((n) => n.endsWith('.eml'))
      .sort())
      await sendRaw(port, readFileSync(join(FIXTURES, name)));
    await sendRaw(port, TRICKY[1] as Buffer, '');
    await sendRaw(
      port,
      Buffer.from('Subject: for bob\r\nTo: bob@example.test\r\n\r\nhi bob\r\n'),
      'x@remote.test',
      BOB,
    );
    // Read mail: every third message of alice's.
    const entries = (await relay.entries(ALICE)).reverse();
    for (const [i, e] of entries.entries())
      if (i % 3 === 0) await relay.runtime.index.setSeen(ALICE, e.id, true);
    await relay.close();
    original = await stored(dataDir, ALICE);
    assert.ok(original.length >= 20);
  });

  it('writes an mbox to stdout, oldest first, that Python reads with its headers, read state and sender; import brings it back byte for byte', async () => {
    // As in a shell: the mbox to stdout, redirected to a file.
    const piped = join(work, 'stdout.mbox');
    const r = await run(
      'sh',
      ['-c', 'exec "$0" "$1" export "$2" > "$3"', process.execPath, BIN, ALICE, piped],
      {
        env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir }),
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^exported ${original.length} messages \\(\\d+\\.\\d MB\\) of ${ALICE} to stdout\\n$`),
    );
    const path = join(work, 'out.mbox');
    const file = await cli(dataDir, ['export', ALICE, '--out', path]);
    assert.equal(file.code, 0, file.stderr);
    assert.deepEqual(readFileSync(path), readFileSync(piped), 'stdout and --out write the same');
    assert.equal(statSync(path).mode & 0o777, 0o600, 'mail: readable by its owner alone');
    const mbox = readFileSync(path, 'latin1');
    // mboxrd: body lines starting From gain a '>', quoted ones one more; no line starts "From " but separators.
    assert.match(
      mbox,
      /\n>From the start of a line\.\n>>From once quoted\.\n>>>From twice\.\nFrom\nFromage\n/,
    );
    assert.match(mbox, /\n>From here, LF only\.\n>>From there\.\n/);
    const separators = mbox.split('\n').filter((l) => l.startsWith('From '));
    assert.equal(separators.length, original.length);
    assert.match(separators[0] ?? '', /^From ann@remote\.test \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/);
    assert.ok(!mbox.includes('\r\n'), 'LF line ends');

    // Python's mailbox reads each message with the header fields the stored one has (ours ahead of
    // them) and its defects, none more: the originals are given alongside, one file each.
    const originals = mkdtempSync(join(work, 'originals-'));
    for (const [i, o] of original.entries())
      writeFileSync(join(originals, String(i).padStart(4, '0')), o.raw);
    const read = await python(
      `import email, email.policy, mailbox, os, sys, json
box = mailbox.mbox(sys.argv[1], create=False)
names = sorted(os.listdir(sys.argv[2]))
h = lambda v: None if v is None else str(v)
out = []
for m, name in zip(box, names):
    with open(os.path.join(sys.argv[2], name), "rb") as f:
        o = email.message_from_binary_file(f, policy=email.policy.compat32)
    out.append({"from": h(m["From"]), "to": h(m["To"]), "subject": h(m["Subject"]), "flags": m.get_flags(),
                "sender": m.get_from().split(" ")[0],
                "fields": m.keys()[3:] == o.keys(), "ours": m.keys()[:3],
                "defects": [type(d).__name__ for d in m.defects] == [type(d).__name__ for d in o.defects]})
print(json.dumps({"count": len(box), "messages": out}))`,
      [path, originals],
    );
    assert.equal(read.code, 0, read.stderr);
    const { count, messages } = JSON.parse(read.stdout) as {
      count: number;
      messages: {
        from: string | null;
        to: string | null;
        subject: string | null;
        flags: string;
        sender: string;
        fields: boolean;
        ours: string[];
        defects: boolean;
      }[];
    };
    assert.equal(count, original.length);
    assert.deepEqual(messages[0], {
      from: 'Ann <ann@remote.test>',
      to: 'alice@example.test',
      subject: 'quoting',
      flags: 'RO',
      sender: 'ann@remote.test',
      fields: true,
      ours: ['Status', 'X-Mozilla-Status', 'X-Mail-Relay-Export'],
      defects: true,
    });
    assert.equal(messages.at(-1)?.subject, 'bare LF');
    assert.equal(messages.at(-1)?.sender, 'MAILER-DAEMON');
    for (const [i, m] of messages.entries()) {
      assert.equal(m.flags.includes('R'), original[i]?.seen, `message ${i + 1}'s read state`);
      assert.ok(m.fields, `message ${i + 1} has the header fields it was stored with`);
      assert.ok(m.defects, `message ${i + 1} has the defects it was stored with, no more`);
    }
    await assertRoundTrip(original, path, ALICE, 'mbox');
  });

  it('writes a Maildir (read mail in cur/ with :2,S, unread in new/, tmp/ empty) that Python reads and import brings back byte for byte', async () => {
    const dir = join(work, 'maildir');
    const r = await cli(dataDir, ['export', ALICE, '--format', 'maildir', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^exported ${original.length} messages \\(\\d+\\.\\d MB\\) of ${ALICE} to ${dir}\\n$`),
    );
    assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
    const cur = readdirSync(join(dir, 'cur')).sort();
    const fresh = readdirSync(join(dir, 'new')).sort();
    assert.equal(cur.length, original.filter((o) => o.seen).length);
    assert.equal(fresh.length, original.filter((o) => !o.seen).length);
    for (const name of cur) assert.match(name, /^\d{10}\.M\d+R[0-9a-f]{32}\.[^/:]+:2,S$/);
    for (const name of fresh) assert.match(name, /^\d{10}\.M\d+R[0-9a-f]{32}\.[^/:]+$/);
    // Each file is the stored message as it is, dated by its receipt time.
    const first = original[0];
    assert.ok(first);
    const firstName = (first.seen ? cur : fresh).find((n) =>
      readFileSync(join(dir, first.seen ? 'cur' : 'new', n)).equals(first.raw),
    );
    assert.ok(firstName, 'the oldest message, as stored, in cur/ when read, else new/');
    const firstPath = join(dir, first.seen ? 'cur' : 'new', firstName);
    assert.equal(
      Math.floor(statSync(firstPath).mtimeMs / 1000),
      Math.floor(Date.parse(first.receivedAt) / 1000),
    );
    // Names sort as the mail arrived (seconds, then microseconds of ten digits and six).
    const names = [...cur, ...fresh].sort();
    assert.equal(names[0], firstName);

    const read = await python(
      `import mailbox, sys, json
box = mailbox.Maildir(sys.argv[1], factory=None, create=False)
print(json.dumps(sorted([[str(m["Subject"] or ""), "S" in m.get_flags(), m.get_subdir(), len(m.defects)] for m in box])))`,
      [dir],
    );
    assert.equal(read.code, 0, read.stderr);
    const rows = JSON.parse(read.stdout) as [string, boolean, string, number][];
    assert.equal(rows.length, original.length);
    assert.ok(rows.some(([s, seen, sub]) => s === 'quoting' && seen && sub === 'cur'));
    assert.ok(rows.every(([, seen, sub]) => (seen ? sub === 'cur' : sub === 'new')));
    await assertRoundTrip(original, dir, ALICE, 'maildir');

    // Again into the same Maildir: refused; with --force, only what it does not hold yet (nothing).
    const again = await cli(dataDir, ['export', ALICE, '--format', 'maildir', '--out', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists and is not an empty directory; .*--force/);
    const forced = await cli(dataDir, ['export', ALICE, '--format', 'maildir', '--out', dir, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(
      forced.stderr,
      new RegExp(`exported 0 messages .*; ${original.length} already in the Maildir`),
    );
    assert.equal(
      readdirSync(join(dir, 'cur')).length + readdirSync(join(dir, 'new')).length,
      original.length,
    );
  });

  it('imported back into the store it came from (a restore), an export adds no second copy; what was deleted since stays deleted unless --restore-deleted', async () => {
    // A copy of the data dir, so that the other tests keep theirs.
    const home = join(work, 'restore');
    cpSync(dataDir, home, { recursive: true });
    const mbox = join(work, 'restore.mbox');
    const maildir = join(work, 'restore-maildir');
    assert.equal((await cli(home, ['export', ALICE, '--out', mbox])).code, 0);
    assert.equal((await cli(home, ['export', ALICE, '--format', 'maildir', '--out', maildir])).code, 0);
    const n = original.length;
    /** Deletes the `count` oldest messages of alice's as DELE does: the index entry, then the blobs. */
    const deleteOldest = async (count: number) => {
      const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: home, durability: 'sync' });
      try {
        for (const e of (await listAll(runtime.index, ALICE)).reverse().slice(0, count)) {
          assert.ok(await runtime.index.delete(ALICE, e.id));
          await deleteMessageBlobs(runtime.blobs, ALICE, e.id);
        }
      } finally {
        await runtime.close();
      }
    };
    // Two messages deleted after the export (the first read, the second not).
    await deleteOldest(2);
    const summary = async (args: readonly string[]) => {
      const r = await cli(home, ['import', ...args]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      return r.stdout;
    };
    // The mbox, then the Maildir: every message is found there, or found deleted, and nothing is added.
    for (const from of [mbox, maildir]) {
      assert.match(await summary(['--to', ALICE, from]), new RegExp(`delivered 0, duplicate ${n},`), from);
      assert.equal((await stored(home, ALICE)).length, n - 2, `${from}: no message added`);
    }
    // Asked to, the two deleted ones come back (as the export has them: bytes, read state), once.
    assert.match(
      await summary(['--to', ALICE, '--restore-deleted', mbox]),
      new RegExp(`delivered 2, duplicate ${n - 2},`),
    );
    assert.match(
      await summary(['--to', ALICE, '--restore-deleted', maildir]),
      new RegExp(`delivered 0, duplicate ${n},`),
    );
    const back = await stored(home, ALICE);
    assert.equal(back.length, n);
    const byBytes = new Map(back.map((b) => [b.raw.toString('latin1'), b]));
    for (const [i, o] of original.entries()) {
      const again = byBytes.get(o.raw.toString('latin1'));
      assert.equal(again?.seen, o.seen, `message ${i + 1}: there once, byte for byte, with its read state`);
      assert.equal(again?.receivedAt, o.receivedAt, `message ${i + 1}: its receipt time, to the millisecond`);
    }
    // A restored message deleted again comes back again when asked, and only then.
    await deleteOldest(1);
    assert.match(await summary(['--to', ALICE, mbox]), new RegExp(`delivered 0, duplicate ${n},`));
    assert.match(
      await summary(['--to', ALICE, '--restore-deleted', mbox]),
      new RegExp(`delivered 1, duplicate ${n - 1},`),
    );
    assert.equal((await stored(home, ALICE)).length, n);
    // Another mailbox never held them: it gets each one.
    assert.match(await summary(['--to', BOB, mbox]), new RegExp(`delivered ${n}, duplicate 0,`));
  });

  it('imported again, an export whose mail names a refused address or several mailboxes adds nothing, in the store it came from and in another', async () => {
    const home = join(work, 'several');
    const relay = await startTestRelay(CONFIG, home);
    // Received for alice alone (the envelope); its headers name bob too, and an address elsewhere.
    await sendRaw(
      relay.smtp.port,
      Buffer.from(
        'From: Ann <ann@remote.test>\r\nTo: alice@example.test, carol@remote.test\r\n' +
          'Cc: bob@example.test\r\nSubject: to several\r\n\r\nhello\r\n',
      ),
      'ann@remote.test',
    );
    await relay.close();
    const [received] = await stored(home, ALICE);
    assert.ok(received);
    const mbox = join(work, 'several.mbox');
    assert.equal((await cli(home, ['export', ALICE, '--out', mbox])).code, 0);
    const untouched = join(work, 'several-untouched');
    cpSync(home, untouched, { recursive: true });
    /** Imports the export by its headers: its summary line, and the refusal of carol's address. */
    const importByHeaders = async (dataDir: string) => {
      const r = await cli(dataDir, ['import', mbox]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stderr, /refused: .*carol@remote\.test: 550 /, 'carol is refused each time');
      return r.stdout;
    };
    /** When the `inbound/` copy of a mailbox's (one) message was written, in a store. */
    const inboundWritten = async (dataDir: string, mailbox: string) => {
      const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir, durability: 'sync' });
      try {
        const [entry, ...more] = await listAll(runtime.index, mailbox);
        assert.ok(entry && more.length === 0);
        return (await runtime.blobs.head(`inbound/${entry.sesMessageId}`))?.lastModified;
      } finally {
        await runtime.close();
      }
    };
    // Into the store it came from: alice holds it (a duplicate, no second copy), bob gets it; then
    // nothing, and nothing is written.
    assert.match(await importByHeaders(home), /delivered 1, duplicate 1,/);
    const bobsCopy = await inboundWritten(home, BOB);
    assert.match(await importByHeaders(home), /delivered 0, duplicate 2,/);
    assert.equal(await inboundWritten(home, BOB), bobsCopy);
    assert.deepEqual(
      (await stored(home, ALICE)).map((m) => m.id),
      [received.id],
    );
    assert.equal((await stored(home, BOB)).length, 1);
    // Into a store that never received it: both get it under its id, and importing it again adds nothing.
    const fresh = mkdtempSync(join(work, 'several-fresh-'));
    assert.match(await importByHeaders(fresh), /delivered 2, duplicate 0,/);
    const written = await inboundWritten(fresh, ALICE);
    assert.ok(written);
    // Found held (carol's refusal aside), it is not routed again: nothing is written.
    assert.match(await importByHeaders(fresh), /delivered 0, duplicate 2,/);
    assert.equal(await inboundWritten(fresh, ALICE), written);
    for (const mailbox of [ALICE, BOB]) {
      const copies = await stored(fresh, mailbox);
      assert.deepEqual(
        copies.map((m): [string, boolean] => [m.id, m.raw.equals(received.raw)]),
        [[received.id, true]],
        `${mailbox}: one copy, its id and bytes`,
      );
    }
    // Deleted there and restored: it comes back under its id too (the store holds what the import wrote).
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: fresh, durability: 'sync' });
    try {
      assert.ok(await runtime.index.delete(ALICE, received.id));
      await deleteMessageBlobs(runtime.blobs, ALICE, received.id);
    } finally {
      await runtime.close();
    }
    assert.match(await importByHeaders(fresh), /delivered 0, duplicate 2,/);
    const restored = await cli(fresh, ['import', '--restore-deleted', mbox]);
    assert.match(restored.stdout, /delivered 1, duplicate 1,/, restored.stderr);
    assert.deepEqual(
      (await stored(fresh, ALICE)).map((m) => m.id),
      [received.id],
    );
    // --to several mailboxes, where one holds it: only the other gets it; then nothing.
    for (const expected of [/delivered 1, duplicate 1,/, /delivered 0, duplicate 2,/]) {
      const r = await cli(untouched, ['import', '--to', ALICE, '--to', BOB, mbox]);
      assert.match(r.stdout, expected, r.stderr);
    }
    assert.equal((await stored(untouched, ALICE)).length, 1);
    assert.equal((await stored(untouched, BOB)).length, 1);
  });

  it('the mbox and the Maildir of one export, imported in one run, give each message once', async () => {
    const mbox = join(work, 'one-run.mbox');
    const maildir = join(work, 'one-run-maildir');
    assert.equal((await cli(dataDir, ['export', ALICE, '--out', mbox])).code, 0);
    assert.equal((await cli(dataDir, ['export', ALICE, '--format', 'maildir', '--out', maildir])).code, 0);
    const fresh = mkdtempSync(join(work, 'one-run-'));
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: fresh, durability: 'sync' });
    try {
      // Writes take a while, as S3's and DynamoDB's do (`import --stack`), and each its own: the two
      // copies of a message are in flight together, one finding what the other has written so far.
      const later = () => new Promise((resolve) => setTimeout(resolve, 15));
      const { index, blobs } = runtime;
      const deliver = index.deliver.bind(index);
      const slowIndex: typeof index = Object.create(index);
      slowIndex.deliver = async (...args: Parameters<typeof deliver>) => {
        await later();
        return deliver(...args);
      };
      const put = blobs.put.bind(blobs);
      const slowBlobs: typeof blobs = Object.create(blobs);
      slowBlobs.put = async (...args: Parameters<typeof put>) => {
        if (args[0].startsWith('notifications/')) await later();
        return put(...args);
      };
      const summary = await importFiles({ ...runtime, index: slowIndex, blobs: slowBlobs }, [mbox, maildir], {
        to: [ALICE],
      });
      const n = original.length;
      assert.match(summary.line, new RegExp(`delivered ${n}, duplicate ${n},`));
    } finally {
      await runtime.close();
    }
    assert.deepEqual((await stored(fresh, ALICE)).map((m) => m.id).sort(), original.map((m) => m.id).sort());
  });

  it('reads ids from a file name in a Maildir only: a file elsewhere named like one is mail as any other', async () => {
    const [first] = original;
    assert.ok(first);
    const maildir = join(work, 'named-like-maildir');
    assert.equal((await cli(dataDir, ['export', ALICE, '--format', 'maildir', '--out', maildir])).code, 0);
    const dir = join(work, 'named-like');
    mkdirSync(dir);
    // The name of a message of our Maildir export, on a file that is not in a Maildir.
    const name = readdirSync(join(maildir, 'cur'))
      .concat(readdirSync(join(maildir, 'new')))
      .find((f) => f.includes(`,I=${first.id}`));
    assert.ok(name);
    writeFileSync(join(dir, name), first.raw);
    const fresh = mkdtempSync(join(work, 'named-like-'));
    assert.equal((await cli(fresh, ['import', '--to', ALICE, join(dir, name)])).code, 0);
    const [copy] = await stored(fresh, ALICE);
    assert.ok(copy);
    // A new receipt: our trace headers ahead of the bytes, and an id of its own.
    assert.notEqual(copy.id, first.id);
    assert.ok(copy.raw.subarray(copy.raw.length - first.raw.length).equals(first.raw));
    assert.match(
      copy.raw.subarray(0, copy.raw.length - first.raw.length).toString('latin1'),
      /^Received: .*mail-relay-import/m,
    );
    // The Maildir's own cur/ and new/, given by name, are read as in their Maildir: all there already.
    const home = join(work, 'named-like-home');
    cpSync(dataDir, home, { recursive: true });
    const r = await cli(home, ['import', '--to', ALICE, join(maildir, 'cur'), join(maildir, 'new')]);
    assert.match(r.stdout, new RegExp(`delivered 0, duplicate ${original.length},`), r.stderr);
  });

  it('refuses an existing file unless --force (which replaces it whole), an unknown mailbox, a path it cannot write, a Maildir without --out', async () => {
    const path = join(work, 'exists.mbox');
    writeFileSync(path, 'keep me\n');
    const refused = await cli(dataDir, ['export', ALICE, '--out', path]);
    assert.equal(refused.code, 1);
    assert.equal(
      refused.stderr,
      `mail-relay export: ${path} exists; give another --out, or --force to replace it\n`,
    );
    assert.equal(readFileSync(path, 'utf8'), 'keep me\n', 'left as it was');
    const forced = await cli(dataDir, ['export', BOB, '--out', path, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(readFileSync(path, 'utf8'), /^From x@remote\.test .*\nStatus: O\n[\s\S]*Subject: for bob\n/);
    assert.deepEqual(
      readdirSync(work).filter((n) => n.endsWith('.tmp')),
      [],
      'no temporary file left beside it',
    );

    const unknown = await cli(dataDir, ['export', 'nobody@elsewhere.test', '--out', join(work, 'no.mbox')]);
    assert.equal(unknown.code, 1);
    assert.match(
      unknown.stderr,
      /^mail-relay export: no mail stored for nobody@elsewhere\.test in .*, and it is not a mailbox in the configuration\n$/,
    );
    assert.equal(existsSync(join(work, 'no.mbox')), false);

    const locked = join(work, 'locked');
    mkdirSync(locked);
    chmodSync(locked, 0o500);
    try {
      const denied = await cli(dataDir, ['export', ALICE, '--out', join(locked, 'a.mbox')]);
      // root writes anywhere: only a user without the permission is refused.
      if (process.getuid?.() !== 0) {
        assert.equal(denied.code, 1);
        assert.match(denied.stderr, /^mail-relay export: cannot write .*locked\/a\.mbox \(EACCES\)\n$/);
      }
    } finally {
      chmodSync(locked, 0o700);
    }
    const noDir = await cli(dataDir, ['export', ALICE, '--out', join(work, 'missing', 'a.mbox')]);
    assert.equal(noDir.code, 1);
    assert.match(noDir.stderr, /cannot write .*missing\/a\.mbox \(ENOENT\)/);

    const usage = await cli(dataDir, ['export', ALICE, '--format', 'maildir']);
    assert.equal(usage.code, 2);
    assert.match(
      usage.stderr,
      /^mail-relay export: a Maildir is a directory: give --out <path>\nUsage: mail-relay export/,
    );
    const format = await cli(dataDir, ['export', ALICE, '--format', 'mmdf']);
    assert.equal(format.code, 2);
    const noData = await cli(join(work, 'no-data-here'), ['export', ALICE]);
    assert.equal(noData.code, 1);
    assert.match(noData.stderr, /no mail-relay data in .*no-data-here/);
    assert.equal(existsSync(join(work, 'no-data-here')), false, 'a data dir is not made by reading');
  });

  it('output that cannot be written (`> /dev/full`) fails the command in one line naming it, exit 1, no stack trace', async () => {
    const full = async (command: string) =>
      run(
        'bash',
        ['-c', `exec 2>&1; "$0" "$1" ${command} >/dev/full; echo "exit $?"`, process.execPath, BIN, ALICE],
        {
          env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir }),
        },
      );
    assert.equal(
      (await full('export "$2"')).stdout,
      'mail-relay export: could not write to standard output: ENOSPC: no space left on device, write; ' +
        'the mbox written there is incomplete\nexit 1\n',
    );
    // Any command's output: one line, and the command fails.
    assert.equal(
      (await full('route "$2"')).stdout,
      'mail-relay: could not write to standard output: ENOSPC: no space left on device, write\nexit 1\n',
    );
    // Its notes on stderr are not its output: one that cannot be written there does not fail it.
    const noted = await run(
      'bash',
      [
        '-c',
        '"$0" "$1" export "$2" --out "$3" 2>/dev/full; echo "exit $?"',
        process.execPath,
        BIN,
        ALICE,
        join(work, 'noted.mbox'),
      ],
      { env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir }) },
    );
    assert.equal(noted.stdout, 'exit 0\n');
    assert.ok(existsSync(join(work, 'noted.mbox')));
    // A full disk under --out is that disk's, not the data dir's.
    const point = mountTmpfs('mr-export-full', 1);
    if (point === null) return;
    try {
      fillDisk(join(point, 'filler'));
      const out = join(point, 'alice.mbox');
      const r = await cli(dataDir, ['export', ALICE, '--out', out], 60_000);
      assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
      assert.equal(
        r.stderr,
        `mail-relay export: could not write to ${out}: ENOSPC: no space left on device, write; nothing was written to ${out}\n`,
      );
      assert.deepEqual(readdirSync(point), ['filler']);
    } finally {
      unmountTmpfs(point);
    }
  });

  it('a reader that leaves early (`| head -c 100`) ends the export: one line, exit 1, no stack trace', async () => {
    const r = await run(
      'bash',
      [
        '-c',
        `exec 2>&1; "$0" "$1" export "$2" | head -c 100 >/dev/null; echo "exit \${PIPESTATUS[0]}"`,
        process.execPath,
        BIN,
        ALICE,
      ],
      { env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir }) },
    );
    assert.equal(r.stdout, 'mail-relay export: the output was closed before the export ended\nexit 1\n');
  });

  it('a message whose stored bytes are missing stops the export with one line naming it, exit 1, no stack trace, no partial mbox', async () => {
    // A copy of the data dir, with one message's raw blob removed behind the index's back.
    const broken = join(work, 'broken-data');
    cpSync(dataDir, broken, { recursive: true });
    const lost = original.length >> 1;
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: broken, durability: 'sync' });
    let entry: { id: string; subject: string };
    try {
      const entries = (await listAll(runtime.index, ALICE)).reverse();
      entry = entries[lost] as { id: string; subject: string };
      await runtime.blobs.delete(mailboxKeys.raw(ALICE, entry.id));
    } finally {
      await runtime.close();
    }
    const out = mkdtempSync(join(work, 'broken-out-'));
    const path = join(out, 'alice.mbox');
    const r = await cli(broken, ['export', ALICE, '--out', path]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^mail-relay export: message ${entry.id} \\(.*received [^)]+\\) of ${ALICE} is in the index of ${broken} ` +
          `but its stored bytes \\(mailboxes/${ALICE}/${entry.id}\\.eml\\) are missing: put them back, or delete the message .*; ` +
          `nothing was written to ${path}\\n$`,
      ),
    );
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    assert.deepEqual(readdirSync(out), [], 'no mbox, no temporary file');

    const dir = join(out, 'maildir');
    const m = await cli(broken, ['export', ALICE, '--format', 'maildir', '--out', dir]);
    assert.equal(m.code, 1, m.stderr);
    assert.match(
      m.stderr,
      new RegExp(
        `^mail-relay export: message ${entry.id} .* are missing: .*; the ${lost} messages before it are in ${dir} \\(--force adds the rest\\)\\n$`,
      ),
    );
    assert.equal(readdirSync(join(dir, 'cur')).length + readdirSync(join(dir, 'new')).length, lost);
    assert.deepEqual(readdirSync(join(dir, 'tmp')), [], 'no partial message');
  });

  it('shows a progress bar on a terminal, as import does', async () => {
    const err = Object.assign(new PassThrough(), { isTTY: true });
    const chunks: Buffer[] = [];
    err.on('data', (c: Buffer) => chunks.push(c));
    const path = join(work, 'progress.mbox');
    const code = await main(['export', ALICE, '--out', path], {
      out: new PassThrough(),
      err,
      env: { MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir },
    });
    assert.equal(code, 0);
    const text = Buffer.concat(chunks).toString();
    const n = original.length;
    assert.ok(text.includes(`\r[${'#'.repeat(30)}] ${n}/${n}\n`), text);
    assert.match(text, new RegExp(`\\nexported ${n} messages `));
  });

  it('an empty mailbox of the configuration exports as an empty mbox, exit 0', async () => {
    const empty = mkdtempSync(join(work, 'empty-'));
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: empty, durability: 'sync' });
    await runtime.close();
    const r = await cli(empty, ['export', BOB, '--out', join(empty, 'bob.mbox')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /bob@example\.test has no mail in .*\nexported 0 messages \(0\.0 MB\)/);
    assert.equal(readFileSync(join(empty, 'bob.mbox'), 'utf8'), '');
  });
});

describe('mail-relay export beside a running dev', () => {
  it('reads the data dir while dev receives: every message committed before it began, each whole', async () => {
    const dataDir = mkdtempSync(join(work, 'dev-'));
    const dev = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath } });
    try {
      for (let i = 0; i < 30; i++)
        await sendRaw(
          dev.port,
          Buffer.from(`Subject: before ${i}\r\nTo: ${ALICE}\r\n\r\n${'x'.repeat(i * 500)}\r\n`),
        );
      // More mail keeps arriving while the export reads.
      const more = (async () => {
        for (let i = 0; i < 30; i++)
          await sendRaw(dev.port, Buffer.from(`Subject: during ${i}\r\nTo: ${ALICE}\r\n\r\nbody\r\n`));
      })();
      const path = join(dataDir, 'live.mbox');
      const r = await cli(dataDir, ['export', ALICE, '--out', path]);
      await more;
      assert.equal(r.code, 0, r.stderr);
      const read = await python(
        `import mailbox, sys, json
print(json.dumps([m["Subject"] for m in mailbox.mbox(sys.argv[1], create=False)]))`,
        [path],
      );
      const subjects = JSON.parse(read.stdout) as string[];
      for (let i = 0; i < 30; i++) assert.ok(subjects.includes(`before ${i}`), `before ${i}`);
      assert.equal(new Set(subjects).size, subjects.length, 'each message once');
      assert.ok(subjects.every((s) => /^(before|during) \d+$/.test(s)));
    } finally {
      dev.child.kill('SIGTERM');
      await new Promise((r) => dev.child.once('exit', r));
    }
  });
});

describe('mail-relay export, a slice of the corpus', {
  skip: !existsSync(CORPUS) && 'no ../shared/corpus',
}, () => {
  it('exports and imports back every message byte for byte (mbox and Maildir)', async () => {
    const dataDir = mkdtempSync(join(work, 'corpus-'));
    const manifest = readFileSync(join(CORPUS, 'MANIFEST.tsv'), 'utf8').split('\n').slice(1);
    const files = manifest
      .map((l) => l.split('\t')[0] ?? '')
      .filter((f) => f.endsWith('.eml') && existsSync(join(CORPUS, f)))
      .slice(0, 120);
    assert.ok(files.length > 20, 'a slice of the corpus');
    const imported = await cli(dataDir, ['import', '--to', ALICE, ...files.map((f) => join(CORPUS, f))]);
    assert.notEqual(imported.code, null, imported.stderr);
    const original = await stored(dataDir, ALICE);
    assert.ok(original.length > 20);
    const path = join(dataDir, 'corpus.mbox');
    const r = await cli(dataDir, ['export', ALICE, '--out', path]);
    assert.equal(r.code, 0, r.stderr);
    await assertRoundTrip(original, path, ALICE, 'corpus mbox');
    const dir = join(dataDir, 'corpus-maildir');
    const m = await cli(dataDir, ['export', ALICE, '--format', 'maildir', '--out', dir]);
    assert.equal(m.code, 0, m.stderr);
    await assertRoundTrip(original, dir, ALICE, 'corpus Maildir');
  });
});
