/**
 * The `mail-relay` binary as a user runs it (bin/mail-relay.js in a child process): route, import on
 * our own fixtures (so this runs without ../shared/corpus), and dev (SMTP in, restart, still there).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { type AddressInfo, createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { hashToken } from '../../functions/api/auth.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { main, noticeConfigChanges } from '../../functions/local/cli.ts';
import { importFiles } from '../../functions/local/import.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { buildLocal, startNodeFlags } from '../../scripts/build-local.mjs';
import { startDev } from '../helpers/dev.ts';
import { hasCommand, PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { killedRelaySegment } from '../helpers/journal.ts';
import { freePort } from '../helpers/net.ts';
import { python, run } from '../helpers/process.ts';
import { recordCalls } from '../helpers/record-calls.ts';
import { listAll, stripTrace } from '../helpers/relay.ts';
import { fillDisk, mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.ts';

const BIN = join(PROJECT_ROOT, 'bin/mail-relay.js');
const FIXTURES = join(PROJECT_ROOT, 'test/fixtures');
const work = mkdtempSync(join(tmpdir(), 'mr-cli-'));
after(() => rmSync(work, { recursive: true, force: true }));

const CONFIG = {
  domains: ['example.test'],
  mailboxes: ['alice@example.test', 'archive@example.test'],
  routes: [
    { match: 'sales@example.test', action: 'deliver', to: ['alice@example.test'] },
    { match: 'old@example.test', action: 'reject', code: 551, message: '5.1.6 moved' },
    { match: '/^(.+)-list@example\\.test$/', action: 'deliver', to: ['archive@example.test'] },
  ],
};

/** An mbox message as it is stored: without its `From ` line (nor a byte order mark before it). */
const asStored = (message: string) => message.replace(/^(?:\xef\xbb\xbf)?From [^\n]*\n/, '');

function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const { MAIL_RELAY_CONFIG: _c, MAIL_RELAY_DATA_DIR: _d, ...rest } = process.env;
  return { ...rest, ...extra };
}

describe('mail-relay route', () => {
  const configPath = join(work, 'route.config.json');
  writeFileSync(configPath, JSON.stringify(CONFIG));

  it('prints the decision for each address and exits 1 when one is refused', async () => {
    const r = await run(
      process.execPath,
      [
        BIN,
        'route',
        'sales@example.test',
        'Alice+News@example.test',
        'dev-list@example.test',
        'old@example.test',
      ],
      { env: env({ MAIL_RELAY_CONFIG: configPath }) },
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /sales@example\.test: deliver to mailbox alice@example\.test via routes\[0\]/);
    assert.match(
      r.stdout,
      /alice\+news@example\.test: deliver to mailbox alice@example\.test \[\+news\] via mailbox/,
    );
    assert.match(
      r.stdout,
      /dev-list@example\.test: deliver to mailbox archive@example\.test via routes\[2\]/,
    );
    assert.match(r.stdout, /old@example\.test: reject 551 5\.1\.6 moved/);

    // The tag is shown with the configured separator.
    const dashPath = join(work, 'route-dash.config.json');
    writeFileSync(dashPath, JSON.stringify({ ...CONFIG, plusAddressing: { separator: '-' } }));
    const dash = await run(process.execPath, [BIN, 'route', 'alice-news@example.test'], {
      env: env({ MAIL_RELAY_CONFIG: dashPath }),
    });
    assert.equal(dash.code, 0, dash.stderr);
    assert.match(
      dash.stdout,
      /alice-news@example\.test: deliver to mailbox alice@example\.test \[-news\] via mailbox/,
    );
  });

  it('says what really happens: a forward into our own domain is cut, an empty $1 refuses, one line per mailbox', async () => {
    const path = join(work, 'route-edge.config.json');
    writeFileSync(
      path,
      JSON.stringify({
        ...CONFIG,
        routes: [
          ...CONFIG.routes,
          { match: '/^loop=(.*)=(.*)@example\\.test$/', action: 'forward', to: ['$1@$2'] },
          { match: '/^fw-(.*)@example\\.test$/', action: 'forward', to: ['$1@ext.test'] },
          { match: 'all@example.test', action: 'deliver', to: ['sales@example.test', 'alice@example.test'] },
        ],
      }),
    );
    const r = await run(
      process.execPath,
      [BIN, 'route', 'loop=alice=example.test@example.test', 'fw-@example.test', 'all@example.test'],
      { env: env({ MAIL_RELAY_CONFIG: path }) },
    );
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stdout.split('\n').slice(1, -1);
    assert.deepEqual(lines, [
      'loop=alice=example.test@example.test: forward to alice@example.test via routes[3] (/^loop=(.*)=(.*)@example\\.test$/): ' +
        'not sent, example.test is one of our domains (cut as a loop; a notice goes to quarantine@example.test)',
      'fw-@example.test: reject 550 5.1.1 Recipient address rejected: no such user',
      'all@example.test: deliver to mailbox alice@example.test via routes[0] (sales@example.test)',
    ]);
  });

  it('refuses a bad config with one line per wrong path', async () => {
    const bad = join(work, 'bad.config.json');
    writeFileSync(
      bad,
      JSON.stringify({
        domains: ['example.test'],
        routes: [{ match: 'x@example.test', action: 'deliver', to: [] }],
      }),
    );
    const r = await run(process.execPath, [BIN, 'route', 'x@example.test'], {
      env: env({ MAIL_RELAY_CONFIG: bad }),
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.config\.json is invalid\n {2}- routes\[0\]\.to: /);
  });
});

/** What alice's mailbox stores for each of `entries`, less the trace headers it was stored with. */
function alicesBodies(
  runtime: ReturnType<typeof createLocalRuntime>,
  entries: readonly { readonly id: string }[],
): Promise<Buffer[]> {
  return Promise.all(
    entries.map(
      async (e) =>
        stripTrace((await runtime.blobs.get(`mailboxes/alice@example.test/${e.id}.eml`)) ?? Buffer.alloc(0))
          .body,
    ),
  );
}

describe('mail-relay import', () => {
  const dataDir = join(work, 'import-data');
  const files = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.eml'))
    .map((f) => join(FIXTURES, f));

  it('reads a pipe given by name (process substitution, /dev/stdin) as the file it carries; /dev/null is empty', async () => {
    const piped = join(work, 'import-pipe-data');
    const eml = files[0] as string;
    const mbox = join(work, 'import-pipe.mbox');
    writeFileSync(
      mbox,
      [1, 2, 3]
        .map((i) => `From a@remote.test Mon Nov  2 10:00:0${i} 2026\nSubject: piped ${i}\n\nbody ${i}\n\n`)
        .join('') +
        // One Thunderbird deleted and has not compacted out yet: passed over, and said under the pipe's name.
        'From a@remote.test Mon Nov  2 10:00:09 2026\nX-Mozilla-Status: 0009\nSubject: gone\n\nbody\n\n',
    );
    const copiesBefore = new Set(readdirSync(tmpdir()));
    const sh = (script: string) =>
      run('bash', ['-c', script, 'bash', process.execPath, BIN, eml, mbox], {
        env: env({ MAIL_RELAY_DATA_DIR: piped }),
      });
    // A message through process substitution, then again: stored once, byte for byte.
    for (const expected of [
      /^imported 1\/1 files in [\d.]+s: delivered 1, duplicate 0,/,
      /delivered 0, duplicate 1,/,
    ]) {
      const r = await sh('"$1" "$2" import --to alice@example.test <(cat "$3")');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, expected);
    }
    // An mbox on standard input, a shell's pipe: each of its messages.
    const stdin = await sh('cat "$4" | "$1" "$2" import --to alice@example.test /dev/stdin');
    assert.equal(stdin.code, 0, stdin.stderr);
    assert.match(stdin.stdout, /^imported 3\/3 messages from 1 file in [\d.]+s: delivered 3, duplicate 0,/);
    assert.equal(
      stdin.stderr,
      'skipped: /dev/stdin: 1 message deleted in Thunderbird (X-Mozilla-Status), still in the file until the folder is compacted\n',
    );
    // A device is no mail: /dev/null is empty, /dev/zero would never end. Passed over, not read.
    const devices = await sh('"$1" "$2" import --to alice@example.test /dev/null /dev/zero');
    assert.equal(devices.code, 0, devices.stderr);
    assert.equal(
      devices.stderr,
      'skipped: /dev/null: a device, not a file or a pipe: not read\n' +
        'skipped: /dev/zero: a device, not a file or a pipe: not read\n',
    );
    // Stopped (Ctrl-C) while a pipe has given nothing yet (a FIFO with no writer): it stops, as a
    // signal stops it, and takes its copies with it.
    const fifo = join(work, 'import-pipe.fifo');
    assert.equal((await run('mkfifo', [fifo])).code, 0);
    const waiting = spawn(process.execPath, [BIN, 'import', '--to', 'alice@example.test', fifo], {
      env: env({ MAIL_RELAY_DATA_DIR: piped }),
      stdio: 'ignore',
    });
    const copies = () =>
      readdirSync(tmpdir()).filter((f) => f.startsWith('mail-relay-import-') && !copiesBefore.has(f));
    const deadline = Date.now() + 30_000;
    while (copies().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(copies().length, 1, 'the copy of the pipe is being made');
    waiting.kill('SIGINT');
    const [, signal] = await once(waiting, 'exit');
    assert.equal(signal, 'SIGINT');
    // Nothing of the pipes' copies is left in the temporary directory.
    assert.deepEqual(copies(), []);
    // A copy that cannot be made (the temporary directory's disk is full) fails that pipe alone.
    const point = mountTmpfs('mr-import-tmp', 1);
    if (point === null) return;
    try {
      fillDisk(join(point, 'filler'));
      const r = await run(
        'bash',
        [
          '-c',
          '"$1" "$2" import --to alice@example.test <(cat "$3" "$3" "$3") "$4"',
          'bash',
          process.execPath,
          BIN,
          mbox,
          eml,
        ],
        {
          env: env({ MAIL_RELAY_DATA_DIR: piped, TMPDIR: point }),
        },
      );
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(
        r.stderr,
        /^failed: \/dev\/fd\/\d+: could not copy what it gives to \S+: ENOSPC: no space left on device/m,
      );
      assert.match(r.stdout, /delivered 0, duplicate 1, .* failed 1$/m);
      assert.deepEqual(
        readdirSync(point).filter((f) => f.startsWith('mail-relay-import-')),
        [],
      );
    } finally {
      unmountTmpfs(point);
    }
    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
      dataDir: piped,
    });
    try {
      const entries = await listAll(runtime.index, 'alice@example.test');
      assert.deepEqual(
        entries.map((e) => e.subject).sort(),
        [
          ...['piped 1', 'piped 2', 'piped 3'],
          /^Subject:[ \t]*([^\r\n]*)/im.exec(readFileSync(eml, 'latin1'))?.[1] ?? '',
        ].sort(),
      );
      const copies = await alicesBodies(runtime, entries);
      assert.ok(
        copies.some((c) => c.equals(readFileSync(eml))),
        'the piped message byte for byte',
      );
    } finally {
      await runtime.close();
    }
  });

  it('feeds every fixture through the router and prints a summary line', async () => {
    const r = await run(process.execPath, [BIN, 'import', '--to', 'alice@example.test', ...files], {
      env: env({ MAIL_RELAY_DATA_DIR: dataDir }),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `^imported ${files.length}/${files.length} files in [\\d.]+s: delivered ${files.length}, duplicate 0,`,
      ),
    );
    const runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
      dataDir,
    });
    try {
      const entries = await listAll(runtime.index, 'alice@example.test');
      assert.equal(entries.length, files.length);
      // The receipt time is each file's Date: several fixtures (CRLF, bare LF, CR-only, forward-headers, …) share one.
      const sharedDate = files.filter((f) => {
        const date = /^Date:[ \t]*([^\r\n]+)/im.exec(readFileSync(f, 'latin1'))?.[1];
        return date !== undefined && Date.parse(date) === Date.parse('2025-03-04T09:15:00Z');
      }).length;
      assert.ok(sharedDate >= 4, `${sharedDate} fixtures dated 2025-03-04 09:15 UTC`);
      assert.equal(entries.filter((e) => e.receivedAt === '2025-03-04T09:15:00.000Z').length, sharedDate);
      const bodies = await alicesBodies(runtime, entries);
      for (const f of files) {
        const original = readFileSync(f);
        assert.ok(
          bodies.some((b) => b.equals(original)),
          `${f} not stored byte-exact`,
        );
      }
    } finally {
      await runtime.close();
    }
  });

  it('is a no-op the second time', async () => {
    const r = await run(process.execPath, [BIN, 'import', '--to', 'alice@example.test', ...files], {
      env: env({ MAIL_RELAY_DATA_DIR: dataDir }),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`delivered 0, duplicate ${files.length},`));
  });

  it('is a no-op for a copied or touched file without a Date, and for --to given in another order', async () => {
    const configPath = join(work, 'import-same.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const e = env({ MAIL_RELAY_DATA_DIR: join(work, 'import-same'), MAIL_RELAY_CONFIG: configPath });
    const nodate = join(work, 'nodate.eml');
    writeFileSync(nodate, 'To: alice@example.test\r\nSubject: no date\r\n\r\nhi\r\n');
    const copy = join(work, 'nodate-copy.eml');
    writeFileSync(copy, readFileSync(nodate));
    const first = await run(
      process.execPath,
      [BIN, 'import', nodate, '--to', 'alice@example.test', '--to', 'archive@example.test'],
      { env: e },
    );
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /delivered 2, duplicate 0,/);
    utimesSync(nodate, new Date(), new Date(Date.now() + 60_000));
    const again = await run(
      process.execPath,
      [BIN, 'import', nodate, copy, '--to', 'Archive@example.test', '--to', 'alice@example.test'],
      { env: e },
    );
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /delivered 0, duplicate 4,/);
  });

  it('imports each message of an mbox file (Thunderbird, mutt, Google Takeout) from its From line, byte for byte but for that line; again a no-op', async () => {
    const configPath = join(work, 'import-mbox.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const e = env({ MAIL_RELAY_DATA_DIR: join(work, 'import-mbox'), MAIL_RELAY_CONFIG: configPath });
    const messages = [
      // Read, as mutt and Thunderbird say so in the file.
      'From alice@remote.test Tue Mar  4 09:15:00 2025\nFrom: a@remote.test\nTo: alice@example.test\n' +
        'Subject: first\nDate: Tue, 04 Mar 2025 09:15:00 +0000\nStatus: RO\n\none\n>From the escaped line\n\n',
      // No Date: the From line's time. A body line starting "From " that is no From line stays in.
      'From bob@remote.test Wed Mar  5 10:00:00 2025\nFrom: b@remote.test\nTo: alice@example.test\n' +
        'Subject: no date\nX-Mozilla-Status: 0000\n\nFrom here on, a sentence\n\n',
      'From carol@remote.test Thu Mar  6 11:30:00 2025\nFrom: c@remote.test\nTo: archive@example.test\n' +
        'Subject: third\nX-Gmail-Labels: Archived,Opened\n\nthree\n',
    ];
    const mbox = join(work, 'export.mbox');
    writeFileSync(mbox, messages.join(''));
    const r = await run(process.execPath, [BIN, 'import', mbox], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^imported 3\/3 messages from 1 file in [\d.]+s: delivered 3, duplicate 0,.* failed 0/,
    );
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: join(work, 'import-mbox') });
    try {
      const stored = [];
      for (const mailbox of ['alice@example.test', 'archive@example.test']) {
        for (const entry of await listAll(runtime.index, mailbox)) {
          const raw = (await runtime.blobs.get(`mailboxes/${mailbox}/${entry.id}.eml`)) ?? Buffer.alloc(0);
          stored.push({
            subject: entry.subject,
            at: entry.receivedAt,
            seen: entry.seen,
            body: stripTrace(raw).body.toString(),
          });
        }
      }
      assert.deepEqual(
        stored.sort((a, b) => (a.at < b.at ? -1 : 1)),
        [
          { subject: 'first', at: '2025-03-04T09:15:00.000Z', seen: true, body: asStored(messages[0] ?? '') },
          {
            subject: 'no date',
            at: '2025-03-05T10:00:00.000Z',
            seen: false,
            body: asStored(messages[1] ?? ''),
          },
          { subject: 'third', at: '2025-03-06T11:30:00.000Z', seen: true, body: asStored(messages[2] ?? '') },
        ],
      );
    } finally {
      await runtime.close();
    }
    const again = await run(process.execPath, [BIN, 'import', mbox], { env: e });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /delivered 0, duplicate 3,/);
  });

  it('imports a directory: a Maildir (cur/ and new/, not tmp/), mbox and .eml files in it; hidden and non-mail files passed over', async () => {
    const configPath = join(work, 'import-dir.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const e = env({ MAIL_RELAY_DATA_DIR: join(work, 'import-dir'), MAIL_RELAY_CONFIG: configPath });
    const dir = join(work, 'mail-export');
    const mail = (subject: string) => `To: alice@example.test\nSubject: ${subject}\n\nhi\n`;
    for (const sub of ['Maildir/cur', 'Maildir/new', 'Maildir/tmp'])
      mkdirSync(join(dir, sub), { recursive: true });
    writeFileSync(join(dir, 'Maildir/cur/1732838400.M1P2.host:2,S'), mail('read one'));
    writeFileSync(join(dir, 'Maildir/new/1732838460.M3P4.host'), mail('new one'));
    writeFileSync(
      join(dir, 'Maildir/tmp/1732838520.M5P6.host'),
      'To: alice@example.test\nSubject: still being wri',
    );
    writeFileSync(join(dir, '.hidden.eml'), mail('hidden'));
    writeFileSync(join(dir, 'notes.txt'), 'Remember to export the calendar too.\n');
    writeFileSync(join(dir, 'one.eml'), mail('an eml'));
    writeFileSync(
      join(dir, 'Sent.mbox'),
      `From me@example.test Tue Mar  4 09:15:00 2025\n${mail('sent 1')}\nFrom me@example.test Tue Mar  4 09:16:00 2025\n${mail('sent 2')}`,
    );
    const r = await run(process.execPath, [BIN, 'import', dir], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 5\/5 messages from 4 files in [\d.]+s: delivered 5,/);
    assert.match(r.stderr, /skipped: .*notes\.txt: not a message/);
    assert.doesNotMatch(r.stderr, /\.hidden|Maildir\/tmp/);
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: join(work, 'import-dir') });
    try {
      assert.deepEqual(
        (await listAll(runtime.index, 'alice@example.test'))
          .map((m) => `${m.subject}: ${m.seen ? 'read' : 'unread'}`)
          .sort(),
        // The Maildir's S flag is kept; a file of new/ and one outside a Maildir are unread.
        ['an eml: unread', 'new one: unread', 'read one: read', 'sent 1: unread', 'sent 2: unread'],
      );
    } finally {
      await runtime.close();
    }
  });

  /** Subject, receipt time and read state of each message in alice's mailbox, oldest first. */
  async function aliceMail(
    dataDir: string,
  ): Promise<{ subject: string; at: string; seen: boolean; raw: string }[]> {
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir });
    try {
      const out = [];
      for (const e of await listAll(runtime.index, 'alice@example.test')) {
        const raw = (await runtime.blobs.get(`mailboxes/alice@example.test/${e.id}.eml`)) ?? Buffer.alloc(0);
        out.push({
          subject: e.subject,
          at: e.receivedAt,
          seen: e.seen,
          raw: stripTrace(raw).body.toString('latin1'),
        });
      }
      return out.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.subject < b.subject ? -1 : 1));
    } finally {
      await runtime.close();
    }
  }

  const mboxMessage = (subject: string, time: string, headers = '', body = 'hi\n') =>
    `From someone@remote.test Mon Jan  6 ${time} 2025\nFrom: someone@remote.test\n` +
    `To: alice@example.test\nSubject: ${subject}\n${headers}\n${body}\n`;

  it('splits an mbox saved with a UTF-8 byte order mark, and reads its first message', async () => {
    const configPath = join(work, 'import-bom.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-bom');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const messages = [mboxMessage('first', '10:00:00'), mboxMessage('second', '11:00:00')];
    const path = join(work, 'notepad.mbox');
    writeFileSync(path, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(messages.join(''))]));
    const r = await run(process.execPath, [BIN, 'import', path], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 2\/2 messages from 1 file in [\d.]+s: delivered 2,/);
    const stored = await aliceMail(dataDir);
    assert.deepEqual(
      stored.map((m) => [m.subject, m.at]),
      // No Date: the From line's time, the first message's too (behind the mark).
      [
        ['first', '2025-01-06T10:00:00.000Z'],
        ['second', '2025-01-06T11:00:00.000Z'],
      ],
    );
    // The mark belongs to the file, not to its first message.
    assert.equal(stored[0]?.raw, asStored(messages[0] ?? ''));
  });

  it("splits what Python's mailbox writes for set_from(sender) (From lines without a date), and an mbox behind blank lines", async () => {
    const configPath = join(work, 'import-py.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-py');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const path = join(work, 'python.mbox');
    const made = await python(
      'import mailbox, sys\n' +
        'box = mailbox.mbox(sys.argv[1])\n' +
        'for i, flags in enumerate(["", "RO"]):\n' +
        '    m = mailbox.mboxMessage("To: alice@example.test\\nSubject: py %d\\n\\nFrom Paris, with love\\nFrom me\\n" % i)\n' +
        '    m.set_from("converter@remote.test")\n' +
        '    m.set_flags(flags)\n' +
        '    box.add(m)\n' +
        'box.flush()\n',
      [path],
    );
    assert.equal(made.code, 0, made.stderr);
    assert.match(readFileSync(path, 'latin1'), /^From converter@remote\.test\n/);
    const r = await run(process.execPath, [BIN, 'import', path], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 2\/2 messages from 1 file in [\d.]+s: delivered 2,/);
    assert.deepEqual(
      (await aliceMail(dataDir)).map((m) => `${m.subject}: ${m.seen ? 'read' : 'unread'}`).sort(),
      ['py 0: unread', 'py 1: read'],
    );

    const leading = join(work, 'leading-blank.mbox');
    writeFileSync(
      leading,
      `\n\n${mboxMessage('after blank lines', '10:00:00')}${mboxMessage('next', '11:00:00')}`,
    );
    const lead = await run(process.execPath, [BIN, 'import', leading], { env: e });
    assert.equal(lead.code, 0, lead.stderr);
    assert.match(lead.stdout, /^imported 2\/2 messages from 1 file /);
    const stored = await aliceMail(dataDir);
    assert.deepEqual(
      stored.filter((m) => !m.subject.startsWith('py')).map((m) => [m.subject, m.at]),
      [
        ['after blank lines', '2025-01-06T10:00:00.000Z'],
        ['next', '2025-01-06T11:00:00.000Z'],
      ],
    );
  });

  it('keeps an mboxcl2 message whole where its Content-Length covers a From line in its body', async () => {
    const configPath = join(work, 'import-cl.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-cl');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    // mboxcl2 does not escape body lines starting "From ": the length says where the body ends.
    const quoted =
      'The old archive said:\nFrom bob@remote.test Mon Jan  6 09:00:00 2025\nSubject: the original\n\ntext\n';
    const messages = [
      mboxMessage('quotes an mbox', '10:00:00', `Content-Length: ${quoted.length}\n`, quoted),
      mboxMessage('plain', '11:00:00', 'Content-Length: 3\n'),
      // A length that leads to no From line is not believed: split at each From line as before.
      mboxMessage('stale length', '12:00:00', 'Content-Length: 5\n', 'long body\n'),
      mboxMessage('last', '13:00:00'),
    ];
    const path = join(work, 'solaris.mbox');
    writeFileSync(path, messages.join(''));
    const r = await run(process.execPath, [BIN, 'import', path], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 4\/4 messages from 1 file in [\d.]+s: delivered 4,/);
    const stored = await aliceMail(dataDir);
    assert.deepEqual(
      stored.map((m) => m.subject),
      ['quotes an mbox', 'plain', 'stale length', 'last'],
    );
    assert.equal(stored[0]?.raw, asStored(messages[0] ?? ''));
  });

  it('imports a Thunderbird profile folder: deleted mail not compacted away yet, .msf indexes and empty folders passed over', async () => {
    const configPath = join(work, 'import-tb.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-tb');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const folder = join(work, 'Local Folders');
    mkdirSync(join(folder, 'Inbox.sbd'), { recursive: true });
    const tb = (subject: string, time: string, status: string) =>
      mboxMessage(
        subject,
        time,
        `X-Mozilla-Status: ${status}\nX-Mozilla-Status2: 00000000\nX-Mozilla-Keys:                   \n`,
      );
    writeFileSync(
      join(folder, 'Inbox'),
      // Read; deleted (read, expunged: 0x0009); unread; deleted unread (0x0008).
      tb('kept read', '10:00:00', '0001') +
        tb('deleted', '10:30:00', '0009') +
        tb('kept unread', '11:00:00', '0000') +
        tb('deleted too', '11:30:00', '0008'),
    );
    writeFileSync(
      join(folder, 'Inbox.msf'),
      '// <!-- <mdb:mork:z v="1.4"/> -->\n< <(a=c)> // (f=iso-8859-1)\n',
    );
    writeFileSync(join(folder, 'Trash'), '');
    writeFileSync(join(folder, 'Trash.msf'), '// <!-- <mdb:mork:z v="1.4"/> -->\n');
    writeFileSync(join(folder, 'Inbox.sbd', 'Receipts'), tb('in a subfolder', '12:00:00', '0000'));
    const r = await run(process.execPath, [BIN, 'import', folder], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 3\/3 messages from 2 files in [\d.]+s: delivered 3,.* failed 0$/m);
    assert.match(
      r.stderr,
      /^skipped: .*Local Folders\/Inbox: 2 messages deleted in Thunderbird \(X-Mozilla-Status\), still in the file until the folder is compacted$/m,
    );
    assert.match(r.stderr, /^skipped: .*Local Folders\/Trash: empty file, no message in it$/m);
    assert.match(r.stderr, /^skipped: .*Inbox\.msf: not a message/m);
    assert.deepEqual(
      (await aliceMail(dataDir)).map((m) => `${m.subject}: ${m.seen ? 'read' : 'unread'}`),
      ['kept read: read', 'kept unread: unread', 'in a subfolder: unread'],
    );

    // An empty file given by name is no empty message either.
    const empty = await run(
      process.execPath,
      [BIN, 'import', '--to', 'alice@example.test', join(folder, 'Trash')],
      {
        env: e,
      },
    );
    assert.equal(empty.code, 0, empty.stderr);
    assert.match(empty.stdout, /^imported 0\/0 files .*delivered 0,/);
    assert.match(empty.stderr, /^skipped: .*Trash: empty file, no message in it$/m);
    assert.equal((await aliceMail(dataDir)).length, 3);
  });

  it("imports Google Takeout's one mbox: its Trash left out, its Spam under the spam policy", async () => {
    const takeout = join(work, 'All mail Including Spam and Trash.mbox');
    const gmail = (subject: string, time: string, labels: string) =>
      mboxMessage(subject, time, `X-GM-THRID: 1780000000000000000\nX-Gmail-Labels: ${labels}\n`);
    writeFileSync(
      takeout,
      gmail('inbox', '10:00:00', 'Inbox,Category Personal,Unread') +
        gmail('binned', '10:30:00', 'Trash,Opened') +
        gmail('junk', '11:00:00', 'Spam,Unread') +
        gmail('archived', '11:30:00', 'Archived,Opened'),
    );
    const importWith = async (dataDir: string, config: object) => {
      const configPath = join(work, `${basename(dataDir)}.config.json`);
      writeFileSync(configPath, JSON.stringify(config));
      const r = await run(process.execPath, [BIN, 'import', takeout], {
        env: env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath }),
      });
      const runtime = createLocalRuntime({ config: parseConfig(config), dataDir });
      try {
        const listed = (await listAll(runtime.index, 'alice@example.test')).map(
          (m) => `${m.subject}: ${m.tags.join(' ') || '-'}`,
        );
        return { ...r, listed: listed.sort() };
      } finally {
        await runtime.close();
      }
    };
    const tagged = await importWith(join(work, 'import-takeout'), CONFIG);
    assert.equal(tagged.code, 0, tagged.stderr);
    assert.match(tagged.stdout, /^imported 3\/3 messages from 1 file in [\d.]+s: delivered 3,.* failed 0$/m);
    assert.match(tagged.stderr, /^skipped: .*Trash\.mbox: 1 message in Gmail's Trash \(X-Gmail-Labels\)$/m);
    assert.deepEqual(tagged.listed, ['archived: -', 'inbox: -', 'junk: spam']);

    const quarantined = await importWith(join(work, 'import-takeout-q'), {
      ...CONFIG,
      policies: { spam: 'quarantine' },
    });
    assert.equal(quarantined.code, 0, quarantined.stderr);
    assert.match(quarantined.stdout, /: delivered 2, duplicate 0, quarantined 1,/);
    assert.deepEqual(quarantined.listed, ['archived: -', 'inbox: -']);
  });

  it("reads Takeout's labels as CSV: a user's label holding a comma or Gmail's own name is the user's", async () => {
    const configPath = join(work, 'import-labels.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-labels');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const takeout = join(work, 'labels.mbox');
    const gmail = (subject: string, time: string, labels: string) =>
      mboxMessage(subject, time, `X-GM-THRID: 1780000000000000000\nX-Gmail-Labels: ${labels}\n`);
    writeFileSync(
      takeout,
      gmail('old work', '10:00:00', '"Old, Trash, 2019",Archived,Opened') +
        gmail('to do', '10:10:00', 'Inbox,"To do, Unread, later",Opened') +
        gmail('quoted', '10:20:00', '"""Inbox""","Work, 2024",Unread') +
        // Labels outside ASCII: Takeout wraps the whole list in one RFC 2047 word.
        gmail('binned', '10:30:00', '=?UTF-8?Q?Trash,Opened,R=C3=A9sum=C3=A9s?=') +
        gmail('accented', '10:40:00', '=?UTF-8?Q?Inbox,Re=C3=A7us,Unread?='),
    );
    const r = await run(process.execPath, [BIN, 'import', takeout], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 4\/4 messages from 1 file in [\d.]+s: delivered 4,.* failed 0$/m);
    assert.match(r.stderr, /^skipped: .*labels\.mbox: 1 message in Gmail's Trash \(X-Gmail-Labels\)$/m);
    assert.deepEqual(
      (await aliceMail(dataDir)).map((m) => `${m.subject}: ${m.seen ? 'read' : 'unread'}`),
      ['old work: read', 'to do: read', 'quoted: unread', 'accented: unread'],
    );
  });

  it('names the Maildir++ folders it leaves out of a Maildir, and imports one given by name; mail marked deleted is left out', async () => {
    const configPath = join(work, 'import-mdpp.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-mdpp');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const maildir = join(work, 'Maildir');
    for (const sub of ['cur', 'new', 'tmp', '.Sent/cur', '.Sent/new', '.Sent/tmp', '.cache'])
      mkdirSync(join(maildir, sub), { recursive: true });
    writeFileSync(
      join(maildir, 'cur', '1732838400.M1P2.host:2,S'),
      'To: alice@example.test\nSubject: inbox\n\nhi\n',
    );
    writeFileSync(
      join(maildir, '.Sent', 'cur', '1732838460.M3P4.host:2,S'),
      'To: alice@example.test\nSubject: sent\n\nhi\n',
    );
    // Marked deleted (IMAP's \Deleted, as Dovecot stores it; mutt's maildir_trash), not expunged yet.
    writeFileSync(
      join(maildir, 'cur', '1732838520.M5P6.host:2,ST'),
      'To: alice@example.test\nSubject: deleted\n\nhi\n',
    );
    const r = await run(process.execPath, [BIN, 'import', maildir], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 1\/1 files /);
    assert.match(
      r.stderr,
      /^skipped: .*Maildir\/cur: 1 message marked deleted \(the T flag\), not expunged yet$/m,
    );
    assert.match(
      r.stderr,
      /^skipped: .*Maildir\/\.Sent: a Maildir\+\+ folder, not imported with its parent \(give it by name\)$/m,
    );
    // Other hidden entries (no Maildir) are left out without a word, as before.
    assert.doesNotMatch(r.stderr, /\.cache/);
    const sent = await run(process.execPath, [BIN, 'import', join(maildir, '.Sent')], { env: e });
    assert.equal(sent.code, 0, sent.stderr);
    assert.deepEqual(
      (await aliceMail(dataDir)).map((m) => `${m.subject}: ${m.seen ? 'read' : 'unread'}`),
      ['inbox: read', 'sent: read'],
    );
  });

  it('reads a symbolic link to a message as the message, once; names the links it does not follow', async () => {
    const configPath = join(work, 'import-links.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-links');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    // A folder as `cp -s` or a backup tool leaves it: some messages are links to files elsewhere.
    const originals = join(work, 'link-originals');
    const folder = join(work, 'linked');
    mkdirSync(originals);
    mkdirSync(folder);
    const eml = (subject: string) =>
      `From: bob@remote.test\nTo: alice@example.test\nSubject: ${subject}\n\nhi\n`;
    writeFileSync(join(originals, 'a.eml'), eml('linked by its full path'));
    writeFileSync(join(originals, 'b.eml'), eml('linked by a relative path'));
    writeFileSync(join(folder, '1.eml'), eml('a file'));
    symlinkSync(join(originals, 'a.eml'), join(folder, '2.eml'));
    symlinkSync('../link-originals/b.eml', join(folder, '3.eml'));
    // A second link to a file already read, a link to a directory, one to nothing, a loop.
    symlinkSync(join(originals, 'a.eml'), join(folder, '4.eml'));
    symlinkSync(originals, join(folder, 'more'));
    symlinkSync('gone.eml', join(folder, '5.eml'));
    symlinkSync('6.eml', join(folder, '6.eml'));
    const r = await run(process.execPath, [BIN, 'import', folder], { env: e });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^imported 3\/5 files in [\d.]+s: delivered 3, duplicate 0,.* failed 2$/m);
    assert.match(r.stderr, /^skipped: .*linked\/4\.eml: the same file as .*linked\/2\.eml, read once$/m);
    assert.match(
      r.stderr,
      /^skipped: .*linked\/more: a symbolic link to a directory \(.*link-originals\), not followed \(give it by name\)$/m,
    );
    assert.match(r.stderr, /^failed: .*linked\/5\.eml: a symbolic link to gone\.eml, which is not there$/m);
    assert.match(r.stderr, /^failed: .*linked\/6\.eml: a symbolic link to 6\.eml, a loop of links$/m);
    assert.deepEqual((await aliceMail(dataDir)).map((m) => m.subject).sort(), [
      'a file',
      'linked by a relative path',
      'linked by its full path',
    ]);

    // Given by name, the linked directory is imported: the same messages, found imported.
    const more = await run(process.execPath, [BIN, 'import', join(folder, 'more')], { env: e });
    assert.equal(more.code, 0, more.stderr);
    assert.match(more.stdout, /^imported 2\/2 files in [\d.]+s: delivered 0, duplicate 2,.* failed 0$/m);
    assert.equal((await aliceMail(dataDir)).length, 3);
  });

  it('a file of a folder it may not read is one failure: the others are imported', async () => {
    const configPath = join(work, 'import-locked.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-locked');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const folder = join(work, 'locked-folder');
    mkdirSync(folder);
    const eml = (subject: string) =>
      `From: bob@remote.test\nTo: alice@example.test\nSubject: ${subject}\n\nhi\n`;
    writeFileSync(join(folder, '1.eml'), eml('readable before'));
    // Another user's message in the folder (a shared Maildir, a copy made by root).
    writeFileSync(join(folder, '2.eml'), eml('not ours to read'), { mode: 0o000 });
    writeFileSync(join(folder, '3.eml'), eml('readable after'));
    // Root reads any file: run the CLI without the capabilities that let it (util-linux setpriv).
    const asRoot = process.getuid?.() === 0;
    assert.ok(!asRoot || hasCommand('setpriv'), 'setpriv (util-linux) is needed to test this as root');
    const args = [BIN, 'import', folder];
    const r = asRoot
      ? await run('setpriv', ['--bounding-set=-dac_override,-dac_read_search', process.execPath, ...args], {
          env: e,
        })
      : await run(process.execPath, args, { env: e });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^imported 2\/3 files in [\d.]+s: delivered 2, duplicate 0,.* failed 1$/m);
    assert.match(r.stderr, /^failed: .*locked-folder\/2\.eml: EACCES: permission denied, open .*2\.eml'$/m);
    assert.deepEqual((await aliceMail(dataDir)).map((m) => m.subject).sort(), [
      'readable after',
      'readable before',
    ]);
  });

  it('reads a one-message mbox as an mbox: its From line time and its read state', async () => {
    const configPath = join(work, 'import-one.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-one');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const path = join(work, 'Drafts');
    const message = mboxMessage('only one', '10:00:00', 'Status: RO\n');
    writeFileSync(path, message);
    const r = await run(process.execPath, [BIN, 'import', path], { env: e });
    assert.equal(r.code, 0, r.stderr);
    // Named and counted as a file of one message always was, and stored byte for byte but for its
    // `From ` line.
    assert.match(r.stdout, /^imported 1\/1 files /);
    assert.deepEqual(await aliceMail(dataDir), [
      { subject: 'only one', at: '2025-01-06T10:00:00.000Z', seen: true, raw: asStored(message) },
    ]);
  });

  it('takes no time from a zone that is none (+9900): the next time the message has instead', async () => {
    const configPath = join(work, 'import-zone.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dataDir = join(work, 'import-zone');
    const e = env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath });
    const path = join(work, 'zones.mbox');
    const message = (fromLine: string, headers: string, subject: string) =>
      `From someone@remote.test ${fromLine}\n${headers}To: alice@example.test\nSubject: ${subject}\n\nhi\n\n`;
    writeFileSync(
      path,
      // No Date, and a From line whose zone is 99 hours ahead: the file's time instead.
      message('Tue Mar  4 09:15:00 2025 +9900', '', 'from line') +
        // A Date 99 hours ahead, under a Received line: the Received line's time instead.
        message(
          'Tue Mar  4 09:15:00 2025',
          'Received: from mx.remote.test; Tue, 4 Mar 2025 09:20:00 +0100\nDate: Tue, 4 Mar 2025 09:15:00 +9900\n',
          'date',
        ) +
        // The farthest zones there are, west and east, are read.
        message('Tue Mar  4 09:15:00 2025 -1200', '', 'west') +
        message('Tue Mar  4 09:15:00 2025', 'Date: Tue, 4 Mar 2025 09:15:00 +1400\n', 'east'),
    );
    utimesSync(path, new Date('2025-06-01T12:00:00Z'), new Date('2025-06-01T12:00:00Z'));
    const r = await run(process.execPath, [BIN, 'import', path], { env: e });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported 4\/4 messages from 1 file /);
    assert.deepEqual((await aliceMail(dataDir)).map((m) => `${m.subject}: ${m.at}`).sort(), [
      'date: 2025-03-04T08:20:00.000Z',
      'east: 2025-03-03T19:15:00.000Z',
      'from line: 2025-06-01T12:00:00.000Z',
      'west: 2025-03-04T21:15:00.000Z',
    ]);
  });

  it('holds nothing per message it has imported: memory does not grow with the length of an export', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const path = join(work, 'long.mbox');
    // A message kept per import costs ~1 KB (below): 4,000 messages after the first measure make
    // that 4 MB, four times the heap's noise seen on a loaded machine (~1 MB: code optimised or
    // not yet, the pages of what is in flight), so the bound of half of it holds there too.
    const count = 5000;
    writeFileSync(
      path,
      Array.from({ length: count }, (_, i) =>
        mboxMessage(`long ${i}`, '10:00:00', `Message-ID: <${i}@remote.test>\n`),
      ).join(''),
    );
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: join(work, 'import-long') });
    const heap: number[] = [];
    try {
      const summary = await importFiles(runtime, [path], {
        onProgress: (done) => {
          if (done === 1000 || done === count) {
            gc();
            heap.push(process.memoryUsage().heapUsed);
          }
        },
      });
      assert.match(summary.line, new RegExp(`^imported ${count}/${count} messages .*delivered ${count},`));
    } finally {
      await runtime.close();
    }
    // Each message's routing result was kept to the end, 1 KB apiece: 4 MB for these 4,000, a
    // gigabyte for a Takeout of a million messages. What is left is the allocator's noise.
    const grown = (heap[1] ?? 0) - (heap[0] ?? 0);
    assert.ok(grown < 2_000_000, `the heap grew by ${grown} bytes over 4,000 messages`);
  });

  it('writes nothing when it imports an export again; a mailbox added to the route since gets its copy', async () => {
    const path = join(work, 'twice.mbox');
    writeFileSync(path, mboxMessage('one', '10:00:00') + mboxMessage('two', '11:00:00'));
    const dataDir = join(work, 'import-twice');
    const first = createLocalRuntime({ config: parseConfig(CONFIG), dataDir });
    try {
      assert.match((await importFiles(first, [path])).line, /delivered 2, duplicate 0,/);
      const [gone] = await listAll(first.index, 'alice@example.test');
      assert.ok(gone);
      await first.index.delete('alice@example.test', gone.id);
    } finally {
      await first.close();
    }
    // Every write the import could make: the journal, the blob store, the index.
    const importWrites = async (config: typeof CONFIG) => {
      const runtime = createLocalRuntime({ config: parseConfig(config), dataDir });
      const writes: string[] = [];
      assert.ok(runtime.journal);
      recordCalls(writes, runtime.journal, 'journal', ['append']);
      recordCalls(writes, runtime.blobs, 'blobs', ['put', 'copy', 'delete']);
      recordCalls(writes, runtime.index, 'index', ['deliver', 'delete', 'setSeen']);
      try {
        const summary = await importFiles(runtime, [path]);
        return { line: summary.line, writes, archive: await listAll(runtime.index, 'archive@example.test') };
      } finally {
        await runtime.close();
      }
    };
    // A second import found the same (duplicates, the deleted one too) after appending each message
    // to the journal and storing it again under inbound/: as much work as the first.
    const again = await importWrites(CONFIG);
    assert.match(again.line, /^imported 2\/2 messages .*: delivered 0, duplicate 2,.* failed 0$/);
    assert.deepEqual(again.writes, []);
    // Routed anew where the route changed: archive@ gets both, alice@'s stay as they are.
    const widened = await importWrites({
      ...CONFIG,
      routes: [
        ...CONFIG.routes,
        {
          match: 'alice@example.test',
          action: 'deliver',
          to: ['alice@example.test', 'archive@example.test'],
        },
      ],
    });
    assert.match(widened.line, /: delivered 2, duplicate 2,.* failed 0$/);
    assert.deepEqual(widened.archive.map((e) => e.subject).sort(), ['one', 'two']);
    assert.ok(widened.writes.includes('journal.append'));
  });

  it('uses the header recipients without --to, and reports files it cannot route', async () => {
    const own = join(work, 'to-header.eml');
    writeFileSync(
      own,
      'To: Sales <sales@example.test>, someone@elsewhere.test\r\nSubject: by header\r\n\r\nhi\r\n',
    );
    const none = join(work, 'no-recipient.eml');
    writeFileSync(none, 'Subject: nobody\r\n\r\nhi\r\n');
    const configPath = join(work, 'import.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const r = await run(process.execPath, [BIN, 'import', own, none, join(work, 'missing.eml')], {
      env: env({ MAIL_RELAY_DATA_DIR: join(work, 'import-2'), MAIL_RELAY_CONFIG: configPath }),
    });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /imported 1\/3 files .*delivered 1, .*rejected 1, .*failed 2/);
    assert.match(r.stderr, /no-recipient\.eml: no recipient in the headers \(use --to\)/);
    assert.match(r.stderr, /missing\.eml: ENOENT/);
    // The refused recipient is named, with the reply an SMTP client would have got.
    assert.match(r.stderr, /refused: .*to-header\.eml: someone@elsewhere\.test: 550 5\.7\.1 Relaying denied/);

    // A file whose every recipient is refused is not imported: named, and the exit code says so.
    const refused = await run(process.execPath, [BIN, 'import', '--to', 'nobody@other.test', own], {
      env: env({ MAIL_RELAY_DATA_DIR: join(work, 'import-2'), MAIL_RELAY_CONFIG: configPath }),
    });
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(refused.stdout, /imported 0\/1 files .*failed 1/);
    assert.match(
      refused.stderr,
      /refused: .*to-header\.eml: nobody@other\.test: 550 5\.7\.1 Relaying denied/,
    );
    assert.match(refused.stderr, /failed: .*to-header\.eml: every recipient was refused/);
  });
});

async function sendOne(port: number, subject: string): Promise<void> {
  const send = await python(
    `import smtplib,sys\nwith smtplib.SMTP('127.0.0.1', int(sys.argv[1])) as s: s.sendmail('a@remote.test', ['bob@example.test'], ('Subject: ' + sys.argv[2] + '\\r\\n\\r\\nhello\\r\\n').encode())`,
    [String(port), subject],
  );
  assert.equal(send.code, 0, send.stderr);
}

async function subjectsIn(dataDir: string): Promise<string[]> {
  const runtime = createLocalRuntime({
    config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
    dataDir,
  });
  try {
    return (await listAll(runtime.index, 'bob@example.test')).map((e) => e.subject);
  } finally {
    await runtime.close();
  }
}

describe('npm start', () => {
  it('builds the relay to JavaScript and runs it with its Node flags: SMTP in, mail stored', async () => {
    // Where `npm start` puts it is dist/local; a directory of our own keeps a running relay's untouched.
    const outdir = join(PROJECT_ROOT, 'dist', `test-${process.pid}`);
    try {
      const bundle = await buildLocal({ outdir });
      const flags = startNodeFlags();
      assert.ok(flags.length > 0, 'npm start sets the local server process settings (docs/adr/0014)');
      const dataDir = join(work, 'start-data');
      const relay = await startDev(dataDir, { argv: [...flags, bundle, 'dev'] });
      try {
        await sendOne(relay.port, 'built');
        // The web inbox's files are in the build (lib/bundling/inbox-assets-plugin.mjs), not read from web/.
        const inbox = /^ {2}inbox: +(\S+)$/m.exec(relay.output())?.[1];
        assert.ok(inbox, relay.output());
        const script = await fetch(`${inbox}inbox.js`);
        assert.equal(script.status, 200);
        assert.equal(await script.text(), readFileSync(join(PROJECT_ROOT, 'web/inbox/inbox.js'), 'utf8'));
        const built = [bundle, ...readdirSync(join(outdir, 'chunks')).map((f) => join(outdir, 'chunks', f))];
        assert.ok(
          built.some((f) => f.endsWith('.mjs') && readFileSync(f, 'utf8').includes('mail-relay.token')),
          'the inbox script is not inlined in the build',
        );
      } finally {
        relay.child.kill('SIGTERM');
      }
      const [code] = await once(relay.child, 'exit');
      assert.equal(code, 0, relay.output());
      // A process without tsx: a TypeScript file reaching node unbundled would have failed to load.
      assert.doesNotMatch(relay.output(), /ERR_UNKNOWN_FILE_EXTENSION|Cannot find module/);
      assert.deepEqual(await subjectsIn(dataDir), ['built']);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });

  it('npx mail-relay runs the build while every file it was made from is unchanged, else the TypeScript', async () => {
    // A copy of bin/mail-relay.js with a build of its own beside it (../dist/local/, as in the
    // project); its cli.ts is the project's (a link). The build's entry says it ran.
    const root = join(PROJECT_ROOT, 'dist', `test-bin-${process.pid}`);
    try {
      mkdirSync(join(root, 'bin'), { recursive: true });
      writeFileSync(join(root, 'bin/mail-relay.js'), readFileSync(BIN));
      symlinkSync(join(PROJECT_ROOT, 'bin/cli.ts'), join(root, 'bin/cli.ts'));
      const outdir = join(root, 'dist/local');
      const entry = await buildLocal({ outdir });
      // After its `#!` line (bin/cli.ts's).
      writeFileSync(
        entry,
        readFileSync(entry, 'utf8').replace(/^(#![^\n]*\n)?/, "$1console.error('the build');\n"),
      );
      const inputsPath = join(outdir, 'inputs.json');
      const inputs = JSON.parse(readFileSync(inputsPath, 'utf8')) as {
        inputs: Record<string, [number, number]>;
      };
      const routed = async () => {
        const r = await run(
          process.execPath,
          [join(root, 'bin/mail-relay.js'), 'route', 'alice@example.test'],
          {
            env: env({ MAIL_RELAY_CONFIG: join(work, 'route.config.json') }),
          },
        );
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^alice@example\.test: deliver to mailbox alice@example\.test via mailbox$/m);
        return r.stderr.includes('the build') ? 'build' : 'typescript';
      };
      assert.equal(await routed(), 'build');
      // The inputs are our TypeScript, the bundled packages' files and the web inbox's, by absolute path.
      const paths = Object.keys(inputs.inputs);
      for (const f of [
        'functions/core/routing.ts',
        'bin/cli.ts',
        'web/inbox/inbox.js',
        'web/inbox',
        'tsconfig.json',
      ])
        assert.ok(paths.includes(join(PROJECT_ROOT, f)), f);
      assert.ok(paths.some((p) => p.startsWith(join(PROJECT_ROOT, 'node_modules/zod/'))));

      const edited = (change: (i: Record<string, [number, number]>) => void) => {
        const copy = structuredClone(inputs.inputs);
        change(copy);
        writeFileSync(inputsPath, JSON.stringify({ inputs: copy }));
      };
      const routing = join(PROJECT_ROOT, 'functions/core/routing.ts');
      const [mtimeMs, size] = inputs.inputs[routing] ?? [0, 0];
      // A source saved since the build (a later time), or of another size: the TypeScript, as it is now.
      edited((i) => {
        i[routing] = [mtimeMs - 1000, size];
      });
      assert.equal(await routed(), 'typescript');
      edited((i) => {
        i[routing] = [mtimeMs, size + 1];
      });
      assert.equal(await routed(), 'typescript');
      // A file it was made from that is gone; and no inputs.json at all (never built, or an older build).
      edited((i) => {
        i[join(PROJECT_ROOT, 'functions/core/gone.ts')] = [mtimeMs, size];
      });
      assert.equal(await routed(), 'typescript');
      rmSync(inputsPath);
      assert.equal(await routed(), 'typescript');
      writeFileSync(inputsPath, JSON.stringify(inputs));
      assert.equal(await routed(), 'build');
      // The build's entry deleted by hand: the TypeScript, not a missing module.
      renameSync(entry, `${entry}.away`);
      assert.equal(await routed(), 'typescript');
      renameSync(`${entry}.away`, entry);
      assert.equal(await routed(), 'build');

      // A second build adds its chunks (named by their contents) beside the first's, so a process
      // started from the first still loads its lazy ones; a week after, unused chunks are deleted.
      const chunks = join(outdir, 'chunks');
      const first = readdirSync(chunks);
      writeFileSync(join(chunks, 'earlier-AAAA.mjs'), 'export {};\n');
      writeFileSync(join(chunks, 'old-BBBB.mjs'), 'export {};\n');
      const eightDaysAgo = new Date(Date.now() - 8 * 24 * 3600 * 1000);
      utimesSync(join(chunks, 'old-BBBB.mjs'), eightDaysAgo, eightDaysAgo);
      utimesSync(join(chunks, first[0] ?? ''), eightDaysAgo, eightDaysAgo); // used by the build: kept
      await buildLocal({ outdir });
      assert.deepEqual(readdirSync(chunks).sort(), [...first, 'earlier-AAAA.mjs'].sort());
      assert.deepEqual(
        readdirSync(outdir).filter((f) => f.endsWith('.tmp')),
        [],
        'each file is written whole, by rename',
      );

      // A file saved while the build ran may be in it as it was before: no inputs.json, the TypeScript.
      const saved = join(root, 'saved.ts');
      writeFileSync(saved, 'console.log("saved");\n');
      const soon = new Date(Date.now() + 60_000);
      utimesSync(saved, soon, soon);
      const savedOut = join(root, 'saved-build');
      await buildLocal({ entry: saved, outdir: savedOut });
      assert.ok(!existsSync(join(savedOut, 'inputs.json')));
      const before = new Date(Date.now() - 60_000);
      utimesSync(saved, before, before);
      await buildLocal({ entry: saved, outdir: savedOut });
      assert.ok(existsSync(join(savedOut, 'inputs.json')));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('refuses a start script it cannot read the flags from', () => {
    const path = join(work, 'package.json');
    writeFileSync(path, JSON.stringify({ scripts: { start: 'node --import tsx bin/cli.ts dev' } }));
    assert.throws(() => startNodeFlags(path), /expected "node scripts\/build-local\.mjs && node \[flags\]/);
    writeFileSync(
      path,
      JSON.stringify({
        scripts: { start: 'node scripts/build-local.mjs && node --a=1 --b dist/local/cli.mjs dev' },
      }),
    );
    assert.deepEqual(startNodeFlags(path), ['--a=1', '--b']);
  });
});

describe('mail-relay dev', () => {
  it('receives over SMTP, stops on SIGTERM, and has the mail after a restart', async () => {
    const dataDir = join(work, 'dev-data');
    const first = await startDev(dataDir);
    await sendOne(first.port, 'dev');
    first.child.kill('SIGTERM');
    const [code] = await once(first.child, 'exit');
    assert.equal(code, 0, first.output());

    const second = await startDev(dataDir);
    try {
      assert.deepEqual(await subjectsIn(dataDir), ['dev']);
    } finally {
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
    }
  });

  it('logs each message with the mailboxes it went to, and each refusal with its reply (a mailer may swallow it)', async () => {
    const dataDir = join(work, 'dev-log');
    const configPath = join(work, 'dev-log.config.json');
    writeFileSync(configPath, JSON.stringify({ ...CONFIG, maxMessageBytes: 2048 }));
    const dev = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath } });
    try {
      // One message to two mailboxes and an alias of one, one recipient of a domain we do not receive
      // for, one of a reject route; then a message over the size limit; then a null sender's.
      const sent = await python(
        [
          'import smtplib,sys',
          "s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))",
          "refused = s.sendmail('app@remote.test', ['alice@example.test', 'sales@example.test', 'archive@example.test', 'x@other.test', 'old@example.test'], b'Subject: log\\r\\n\\r\\nhello\\r\\n')",
          'print(sorted(refused))',
          // Without SIZE on MAIL FROM (which sendmail() adds, and which smtp-server refuses itself at once).
          "s.mail('app@remote.test')",
          "s.rcpt('archive@example.test')",
          "print('data', s.data(b'Subject: big\\r\\n\\r\\n' + b'x' * 4000 + b'\\r\\n')[0])",
          "s.sendmail('<>', ['alice@example.test', 'other@xn--mnchen-3ya.de', 'nobody@other.test'], b'Subject: bounce\\r\\n\\r\\nhi\\r\\n')",
          's.quit()',
        ].join('\n'),
        [String(dev.port)],
      );
      assert.equal(sent.code, 0, sent.stderr);
      assert.match(sent.stdout, /\['old@example\.test', 'x@other\.test'\]\ndata 552/);
      const deadline = Date.now() + 10_000;
      while (!/refused RCPT nobody@other\.test/.test(dev.output()) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const log = dev.output();
      // sales@ is an alias of alice@: one copy.
      assert.match(log, /Z \S+ \d+B delivered=2 .* to alice@example\.test, archive@example\.test\n/, log);
      assert.match(log, /Z refused RCPT x@other\.test from app@remote\.test: 550 5\.7\.1 Relaying denied/);
      assert.match(log, /Z refused RCPT old@example\.test from app@remote\.test: 551 5\.1\.6 moved\n/);
      assert.match(
        log,
        /Z refused DATA to archive@example\.test from app@remote\.test: 552 5\.3\.4 Message size exceeds fixed limit of 2048 bytes\n/,
      );
      assert.match(log, /Z refused RCPT nobody@other\.test from <>: 550 /);
      // An internationalized domain as the client gave it (its xn-- form), not with a `?` per letter.
      assert.match(log, /Z refused RCPT other@xn--mnchen-3ya\.de from <>: 550 /);
    } finally {
      dev.child.kill('SIGTERM');
      await once(dev.child, 'exit');
    }
  });

  it('makes a new data dir, and its missing parents, readable by its owner alone: every mailbox is in it', async () => {
    // dev, and token create when run first: each makes the data dir it is given.
    const devDir = join(work, 'private-dev', 'data');
    const dev = await startDev(devDir);
    await sendOne(dev.port, 'private');
    dev.child.kill('SIGTERM');
    assert.equal((await once(dev.child, 'exit'))[0], 0, dev.output());
    const tokenDir = join(work, 'private-token', 'data');
    const token = await run(process.execPath, [BIN, 'token', 'create', 'alice@example.test'], {
      env: env({ MAIL_RELAY_DATA_DIR: tokenDir }),
    });
    assert.equal(token.code, 0, token.stderr);
    for (const dir of [devDir, join(work, 'private-dev'), tokenDir]) {
      assert.equal((statSync(dir).mode & 0o777).toString(8), '700', dir);
    }
  });

  it('a data dir that cannot be made (a file in its way) is one line, not a stack trace, and exit 1', async () => {
    const blocker = join(work, 'not-a-dir');
    writeFileSync(blocker, 'a file');
    for (const args of [['dev'], ['token', 'create', 'alice@example.test']]) {
      const r = await run(process.execPath, [BIN, ...args], {
        env: env({
          MAIL_RELAY_DATA_DIR: join(blocker, 'data'),
          MAIL_RELAY_SMTP_PORT: '0',
          MAIL_RELAY_API_PORT: '0',
        }),
      });
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(
        r.stderr,
        `mail-relay: cannot make the data dir ${join(blocker, 'data')} (ENOTDIR): set MAIL_RELAY_DATA_DIR to a directory you can write\n`,
        args.join(' '),
      );
    }
  });
});

describe('mail-relay dev, stopped at once and with its configuration edited', () => {
  it('a SIGTERM right after it says it listens closes it cleanly (exit 0)', async () => {
    const dev = await startDev(join(work, 'dev-stop-data'));
    dev.child.kill('SIGTERM');
    const [code, signal] = await once(dev.child, 'exit');
    assert.deepEqual([code, signal], [0, null], dev.output());
  });

  it('on SIGINT a long-poll gets its 204 at once, while a message still coming in gets its 250 after', async () => {
    const dataDir = join(work, 'dev-stop-wait');
    const dev = await startDev(dataDir);
    const socket = createConnection(dev.port, '127.0.0.1');
    try {
      const api = /^ {2}api: +(http:\/\/\S+)\/v1\/$/m.exec(dev.output())?.[1];
      assert.ok(api, dev.output());
      const token = await run(process.execPath, [BIN, 'token', 'create', 'alice@example.test'], {
        env: env({ MAIL_RELAY_DATA_DIR: dataDir }),
      });
      const secret = /mr_[A-Za-z0-9_-]+/.exec(token.stdout)?.[0];
      assert.ok(secret, token.stdout + token.stderr);
      // A message under way: its lines come in one at a time.
      let said = '';
      socket.on('data', (c: Buffer) => {
        said += c.toString('latin1');
      });
      const until = async (re: RegExp) => {
        while (!re.test(said)) {
          if (socket.destroyed) throw new Error(`the SMTP session ended: ${said}`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      await until(/^220 /m);
      socket.write('EHLO slow\r\nMAIL FROM:<ann@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n');
      await until(/^354 /m);
      socket.write('Subject: slow\r\n\r\n');
      let stopTrickling = false;
      let trickling = true;
      const trickle = (async () => {
        for (let i = 0; i < 30 && !stopTrickling; i++) {
          socket.write(`line ${i}\r\n`);
          await new Promise((r) => setTimeout(r, 200));
        }
        trickling = false;
      })();
      const waiting = fetch(`${api}/v1/mailboxes/alice@example.test/wait?timeout=25`, {
        headers: { authorization: `Bearer ${secret}` },
      });
      // The long-poll is waiting (nothing answers it before its 25 s but the stop).
      await new Promise((r) => setTimeout(r, 500));
      dev.child.kill('SIGINT');
      const answer = await waiting;
      assert.equal(answer.status, 204);
      assert.equal(trickling, true, 'answered while the message was still coming in');
      // Then the message ends, and is taken.
      stopTrickling = true;
      await trickle;
      socket.write('.\r\n');
      await until(/^250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 /m);
      const [code] = await once(dev.child, 'exit');
      assert.equal(code, 0, dev.output());
    } finally {
      socket.destroy();
      if (dev.child.exitCode === null) {
        dev.child.kill('SIGKILL');
        await once(dev.child, 'exit');
      }
    }
  });

  it('says once that its configuration file changed and that it still routes by the old one', async () => {
    const configPath = join(work, 'dev-watch.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dev = await startDev(join(work, 'dev-watch-data'), { env: { MAIL_RELAY_CONFIG: configPath } });
    try {
      writeFileSync(
        configPath,
        JSON.stringify({ ...CONFIG, mailboxes: [...CONFIG.mailboxes, 'new@example.test'] }),
      );
      utimesSync(configPath, new Date(), new Date(Date.now() + 5000));
      const deadline = Date.now() + 10_000;
      while (!dev.output().includes('changed: restart mail-relay dev') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(dev.output(), /dev-watch\.config\.json changed: restart mail-relay dev to route by it/);
    } finally {
      dev.child.kill('SIGTERM');
      await once(dev.child, 'exit');
    }
  });

  it('keeps running when its configuration file can no longer be looked at (its folder replaced by a file)', async () => {
    // The watch's stat threw ENOTDIR from a timer: an uncaught exception that ended the relay (exit
    // 1) for the sake of a notice. Any stat error (EACCES, a stale network mount) did the same.
    const folder = join(work, 'dev-gone');
    mkdirSync(folder, { recursive: true });
    const configPath = join(folder, 'mail-relay.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const dev = await startDev(join(work, 'dev-gone-data'), { env: { MAIL_RELAY_CONFIG: configPath } });
    try {
      renameSync(folder, `${folder}.moved`);
      writeFileSync(folder, 'not a folder');
      const deadline = Date.now() + 10_000;
      while (!dev.output().includes('changed: restart mail-relay dev') && Date.now() < deadline) {
        if (dev.child.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(dev.child.exitCode, null, `dev exited:\n${dev.output()}`);
      assert.match(dev.output(), /dev-gone\/mail-relay\.config\.json changed: restart mail-relay dev/);
      // And still takes mail.
      const sent = await python(
        "import smtplib,sys\nwith smtplib.SMTP('127.0.0.1', int(sys.argv[1])) as s: print(s.sendmail('a@remote.test', ['alice@example.test'], b'Subject: still here\\r\\n\\r\\nhi\\r\\n'))",
        [String(dev.port)],
      );
      assert.equal(sent.code, 0, sent.stderr);
    } finally {
      if (dev.child.exitCode === null) {
        dev.child.kill('SIGTERM');
        await once(dev.child, 'exit');
      }
    }
  });

  it('started with the dev default, says once that ./mail-relay.config.json appeared (the file route now reads)', async () => {
    const cwd = join(work, 'dev-appear');
    mkdirSync(cwd, { recursive: true });
    const dev = await startDev(join(work, 'dev-appear-data'), { cwd });
    try {
      assert.match(dev.output(), /config: dev default/);
      writeFileSync(join(cwd, 'mail-relay.config.json'), JSON.stringify(CONFIG));
      const deadline = Date.now() + 10_000;
      while (!dev.output().includes('appeared: restart mail-relay dev') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(
        dev.output(),
        /dev-appear\/mail-relay\.config\.json appeared: restart mail-relay dev to route by it \(it routes by the dev default\)/,
      );
    } finally {
      dev.child.kill('SIGTERM');
      await once(dev.child, 'exit');
    }
  });
});

describe('dev tells a configuration change from the file as it was read, not from a later first look', () => {
  const watching = (path: string, what: 'changed' | 'appeared', asRead: Stats | undefined) => {
    const out = new PassThrough();
    let said = '';
    out.on('data', (c: Buffer) => {
      said += c.toString('utf8');
    });
    const stop = noticeConfigChanges(path, { out }, what, 'the old one', asRead);
    return { said: () => said, stop };
  };

  it('a change made while dev was starting (after the file was read, before the watch) is told at once', () => {
    const path = join(work, 'race.config.json');
    writeFileSync(path, JSON.stringify(CONFIG));
    const asRead = statSync(path);
    writeFileSync(path, JSON.stringify({ ...CONFIG, mailboxes: [...CONFIG.mailboxes, 'late@example.test'] }));
    const w = watching(path, 'changed', asRead);
    w.stop();
    assert.match(
      w.said(),
      /race\.config\.json changed: restart mail-relay dev to route by it \(it routes by the old one\)/,
    );
  });

  it('a file that appeared meanwhile is told at once; one unchanged is not told', () => {
    const path = join(work, 'race-appear.config.json');
    const absent = statSync(path, { throwIfNoEntry: false });
    writeFileSync(path, JSON.stringify(CONFIG));
    const appeared = watching(path, 'appeared', absent);
    appeared.stop();
    assert.match(appeared.said(), /appeared: restart/);
    const unchanged = watching(path, 'changed', statSync(path));
    unchanged.stop();
    assert.equal(unchanged.said(), '');
  });
});

describe('a port already in use', () => {
  it('dev and pop3 say so in one line, and exit 1', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = String((taken.address() as AddressInfo).port);
    try {
      const cases: [string[], Record<string, string>][] = [
        [['dev'], { MAIL_RELAY_SMTP_PORT: port, MAIL_RELAY_API_PORT: '0' }],
        [['dev'], { MAIL_RELAY_SMTP_PORT: '0', MAIL_RELAY_API_PORT: port }],
        [['pop3'], { MAIL_RELAY_POP3_PORT: port }],
      ];
      for (const [args, extra] of cases) {
        const r = await run(process.execPath, [BIN, ...args], {
          env: env({ MAIL_RELAY_DATA_DIR: join(work, 'busy-data'), ...extra }),
        });
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
        assert.equal(
          r.stderr,
          `mail-relay: cannot listen on 127.0.0.1:${port}: the port is in use; choose another port ` +
            '(MAIL_RELAY_SMTP_PORT, MAIL_RELAY_API_PORT, MAIL_RELAY_POP3_PORT)\n',
        );
      }
    } finally {
      taken.close();
    }
  });
});

describe('mail-relay dev after a crash, on a disk it cannot write', () => {
  it('says in one line that the journaled mail could not be routed and is kept, and exits 1', async (t) => {
    if (!requireOrAnnounce(hasCommand('prlimit'), 'dev on a full disk', 'prlimit (util-linux) is Linux only'))
      return t.skip('no prlimit');
    const dataDir = join(work, 'full-disk');
    const journalDir = join(dataDir, 'journal');
    // What a killed relay leaves: a journal segment holding a message it had acknowledged.
    const raw = Buffer.from(`Subject: kept\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(4000));
    const orphan = await killedRelaySegment(
      journalDir,
      [{ sesMessageId: 'journaled', recipient: 'alice@example.test', raw }],
      999_999_992,
    );
    // Files may not grow past 128 KiB: the message's inbound/ copy (300 KB) cannot be written.
    const r = await run('prlimit', ['--fsize=131072', process.execPath, BIN, 'dev'], {
      env: env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_SMTP_PORT: '0', MAIL_RELAY_API_PORT: '0' }),
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
    assert.match(
      r.stderr,
      /^mail-relay: could not route the mail a previous run left in \S+journal \(.+\); it is kept there: fix the cause \(free disk space\?\) and start again\n$/,
    );
    assert.deepEqual(readdirSync(journalDir), [orphan], 'the segment is kept for the next start');
  });
});

describe('mail-relay pop3', () => {
  it('a POP3 client reads what arrived over SMTP: dev, token create, pop3, poplib', async () => {
    const dataDir = join(work, 'pop3-data');
    const [smtpPort, apiPort, pop3Port] = [await freePort(), await freePort(), await freePort()];
    const ports = {
      MAIL_RELAY_DATA_DIR: dataDir,
      MAIL_RELAY_SMTP_PORT: String(smtpPort),
      MAIL_RELAY_API_PORT: String(apiPort),
      MAIL_RELAY_POP3_PORT: String(pop3Port),
    };
    const started: ReturnType<typeof spawn>[] = [];
    const start = async (args: string[], ready: string, extra: Record<string, string> = {}) => {
      const child = spawn(process.execPath, [BIN, ...args], {
        env: env({ ...ports, ...extra }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      started.push(child);
      let out = '';
      child.stdout?.on('data', (c: Buffer) => {
        out += c.toString();
      });
      child.stderr?.on('data', (c: Buffer) => {
        out += c.toString();
      });
      while (!out.includes(ready)) {
        if (child.exitCode !== null) throw new Error(`${args[0]} exited: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return { child, output: () => out };
    };
    try {
      await start(['dev'], `127.0.0.1:${smtpPort}`);
      const pop3 = await start(['pop3'], `127.0.0.1:${pop3Port}`);
      assert.match(pop3.output(), new RegExp(`api: +http://127\\.0\\.0\\.1:${apiPort}/v1/`));
      const token = await run(process.execPath, [BIN, 'token', 'create', 'bob@example.test'], {
        env: env(ports),
      });
      assert.equal(token.code, 0, token.stderr);
      const secret = /mr_[A-Za-z0-9_-]+/.exec(token.stdout)?.[0];
      assert.ok(secret, token.stdout);
      await sendOne(smtpPort, 'over pop3');
      const read = await python(
        `import poplib,sys\np = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=20)\np.user(sys.argv[2]); p.pass_(sys.argv[3])\nprint(p.stat()[0]); print(b'\\n'.join(p.retr(1)[1]).decode()); p.quit()`,
        [String(pop3Port), 'bob@example.test', secret],
      );
      assert.equal(read.code, 0, read.stderr);
      assert.match(read.stdout, /^1\n/);
      assert.match(read.stdout, /\nSubject: over pop3\n\nhello\n/);

      // A wrong token: refused after the bridge's delay (2 s), and a line in its log.
      const refused = await python(
        `import poplib,sys,time\np = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=20)\np.user(sys.argv[2])\nt = time.monotonic()\ntry:\n  p.pass_('mr_wrong')\nexcept poplib.error_proto as e:\n  print(e.args[0].decode()); print(round(time.monotonic() - t, 2))\np.quit()`,
        [String(pop3Port), 'bob@example.test'],
      );
      assert.equal(refused.code, 0, refused.stderr);
      const [answer, seconds] = refused.stdout.trim().split('\n');
      assert.match(answer ?? '', /^-ERR \[AUTH\] /);
      assert.ok(Number(seconds) >= 1.9, `answered after ${seconds} s`);
      assert.match(pop3.output(), /pop3: failed login for "bob@example\.test" from 127\.0\.0\.1:\d+\n/);

      // --api as dev prints it (…/v1/), or without the slash: the same API, not …/v1/v1/.
      for (const api of [`http://127.0.0.1:${apiPort}/v1/`, `http://127.0.0.1:${apiPort}/v1`]) {
        const port = await freePort();
        const bridge = await start(['pop3', '--api', api], `127.0.0.1:${port}`, {
          MAIL_RELAY_POP3_PORT: String(port),
        });
        assert.match(bridge.output(), new RegExp(`api: +http://127\\.0\\.0\\.1:${apiPort}/v1/\n`));
        const stat = await python(
          `import poplib,sys\np = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=20)\np.user(sys.argv[2]); p.pass_(sys.argv[3])\nprint(p.stat()[0]); p.quit()`,
          [String(port), 'bob@example.test', secret],
        );
        assert.equal(stat.code, 0, `${api}: ${stat.stderr}${bridge.output()}`);
        assert.equal(stat.stdout, '1\n');
      }
    } finally {
      for (const child of started) child.kill('SIGTERM');
      for (const child of started) if (child.exitCode === null) await once(child, 'exit');
    }
    assert.deepEqual(
      started.map((c) => c.exitCode),
      [0, 0, 0, 0],
    );
  });
});

/**
 * Runs `mail-relay <args>` with no config file and a data dir of its own. Killed after run()'s minute,
 * a bound that only names a hang: six of these at once took over 20 s to start at load average 20.
 */
function cli(args: readonly string[], extra: Record<string, string> = {}) {
  return run(process.execPath, [BIN, ...args], {
    env: env({
      MAIL_RELAY_DATA_DIR: join(work, 'usage-data'),
      MAIL_RELAY_SMTP_PORT: '0',
      MAIL_RELAY_API_PORT: '0',
      MAIL_RELAY_POP3_PORT: '0',
      ...extra,
    }),
  });
}

/** At most `n` CLI processes at a time: each is a Node with tsx, and the machine may have two cores. */
async function inBatches<T, R>(items: readonly T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n) out.push(...(await Promise.all(items.slice(i, i + n).map(fn))));
  return out;
}

describe('arguments, in every command', () => {
  it('a missing option value or an unknown option: one line and the usage, exit 2; --help / -h: the usage, exit 0', async () => {
    // [arguments, the problem line, the usage's first line]
    const errors: [string[], string, string][] = [
      [['import', '--to'], "option '--to <value>' argument missing", 'mail-relay import'],
      [['import', '--bogus', 'x'], "unknown option '--bogus'", 'mail-relay import'],
      [['pop3', '--api'], "option '--api <value>' argument missing", 'mail-relay pop3'],
      [['pop3', '--bogus'], "unknown option '--bogus'", 'mail-relay pop3'],
      [['pop3', 'extra'], 'unexpected argument "extra"', 'mail-relay pop3'],
      [
        ['token', 'create', 'alice@example.test', '--label'],
        "option '--label <value>' argument missing",
        'mail-relay token create <mailbox>',
      ],
      [
        ['token', 'create', 'alice@example.test', '--bogus'],
        "unknown option '--bogus'",
        'mail-relay token create <mailbox>',
      ],
      [
        ['token', 'create', '--admin', '--label'],
        "option '--label <value>' argument missing",
        'mail-relay token create <mailbox>',
      ],
      [
        ['token', 'revoke', '--stack', 'S', '--bogus'],
        "unknown option '--bogus'",
        'mail-relay token create --stack',
      ],
      [['replay', '--since'], "option '--since <value>' argument missing", 'mail-relay replay'],
      [['dev', '--bogus'], "unknown option '--bogus'", 'mail-relay dev'],
      [['dev', 'now'], 'unexpected argument "now"', 'mail-relay dev'],
      [['route', '--bogus'], "unknown option '--bogus'", 'mail-relay route'],
      [['outbox', '--bogus'], "unknown option '--bogus'", 'mail-relay outbox'],
      [['compact', '--now'], "unknown option '--now'", 'mail-relay compact'],
      [['reparse', '--since'], "option '--since <value>' argument missing", 'mail-relay reparse'],
      // `help <command>` of a command that does not exist is a wrong argument like any other.
      [['help', 'frob'], 'unknown command "frob"', 'mail-relay <command> [options]'],
      [['help', 'dev', 'route'], 'give one command', 'mail-relay <command> [options]'],
      [['upgrade'], '--stack needs a stack name (the local data dir upgrades itself)', 'mail-relay upgrade'],
      [['upgrade', '--stack', 'S', 'now'], 'unexpected argument "now"', 'mail-relay upgrade'],
      [['export', '--out'], "option '--out <value>' argument missing", 'mail-relay export'],
      [['export'], 'give one mailbox address', 'mail-relay export'],
      [['export', 'a@example.test', 'b@example.test'], 'give one mailbox address', 'mail-relay export'],
      [['export', 'not an address', '--out', 'x'], 'not an address is not an address', 'mail-relay export'],
    ];
    const helps: [string[], string][] = [
      [['import', '--help'], 'mail-relay import'],
      [['pop3', '--help'], 'mail-relay pop3'],
      [['token', 'create', '--help'], 'mail-relay token create <mailbox>'],
      [['token', '-h'], 'mail-relay token create <mailbox>'],
      [['token', 'create', '--stack', 'S', '--help'], 'mail-relay token create --stack'],
      [['replay', '-h'], 'mail-relay replay'],
      [['dev', '--help'], 'mail-relay dev'],
      [['route', '--help'], 'mail-relay route'],
      [['outbox', '--help'], 'mail-relay outbox'],
      [['compact', '-h'], 'mail-relay compact'],
      [['reparse', '-h'], 'mail-relay reparse'],
      [['help', 'upgrade'], 'mail-relay upgrade'],
      [['help', 'dev'], 'mail-relay dev'],
      [['export', '-h'], 'mail-relay export'],
      [['help', 'export'], 'mail-relay export'],
    ];
    const results = await inBatches([...errors.map((e) => e[0]), ...helps.map((h) => h[0])], 6, (a) =>
      cli(a),
    );
    for (const [i, [args, problem, usage]] of errors.entries()) {
      const r = results[i];
      const what = `${args.join(' ')}: ${r?.code} ${r?.stdout}${r?.stderr}`;
      assert.equal(r?.code, 2, what);
      assert.equal(r.stdout, '', what);
      assert.ok(
        r.stderr.startsWith(`mail-relay ${args[0]}: ${problem}\nUsage: ${usage}`),
        `${what}\nexpected: mail-relay ${args[0]}: ${problem}\\nUsage: ${usage}…`,
      );
      assert.doesNotMatch(r.stderr, /\n\s+at |node:internal/, what);
    }
    for (const [i, [args, usage]] of helps.entries()) {
      const r = results[errors.length + i];
      const what = `${args.join(' ')}: ${r?.code} ${r?.stdout}${r?.stderr}`;
      assert.equal(r?.code, 0, what);
      assert.ok(r.stdout.startsWith(`Usage: ${usage}`), what);
      assert.equal(r.stderr, '', what);
    }
  });

  it('a reader that leaves early (`| head -1`, `| grep -q`) ends the output, not the command: no EPIPE trace, its own exit code', async () => {
    // `true` reads nothing and is gone long before the CLI writes: every write meets a closed pipe.
    const dataDir = join(work, 'piped-data');
    await createLocalRuntime({ config: parseConfig(CONFIG), dataDir }).close();
    const piped = (args: string) =>
      run('bash', ['-c', `node ${JSON.stringify(BIN)} ${args} | true; echo "exit \${PIPESTATUS[0]}" >&2`], {
        env: env({ MAIL_RELAY_DATA_DIR: dataDir }),
      });
    const results = await Promise.all(
      ['help', 'route alice@example.test', 'route alice@elsewhere.test', 'token list'].map(piped),
    );
    for (const [i, expected] of [0, 0, 1, 0].entries()) {
      const r = results[i];
      assert.equal(r?.stderr, `exit ${expected}\n`, `${i}: ${r?.stderr}`);
    }
  });

  it('route takes addresses only; outbox show names a malformed id, and an empty outbox ends its line', async () => {
    // A data dir with nothing in its outbox.
    const emptyOutbox = join(work, 'empty-outbox');
    await createLocalRuntime({ config: parseConfig(CONFIG), dataDir: emptyOutbox }).close();
    const [route, malformed, missing, empty, help] = await Promise.all([
      cli(['route', '--help']),
      cli(['outbox', 'show', 'nope']),
      cli(['outbox', 'show', '0123456789abcdef0123456789abcdef'], { MAIL_RELAY_DATA_DIR: emptyOutbox }),
      cli(['outbox'], { MAIL_RELAY_DATA_DIR: emptyOutbox }),
      cli(['help']),
    ]);
    assert.doesNotMatch(route.stdout, /reject 553/);
    // The command list says what `outbox --help` says: POST …/send lands there too, not only forwards.
    assert.match(help.stdout, /\n {2}outbox \[show <id>\] +what forwarding and POST …\/send would have sent/);
    // Every option a command takes is in the command list too (README: `help` lists them).
    assert.match(
      help.stdout,
      /\n {2}replay --since <time> \[--mailbox <address>\] \[--stack <name>\] \[--restore-deleted\]\n/,
    );
    assert.match(
      help.stdout,
      /\n {2}import \[--to <address>\]… \[--restore-deleted\] \[--stack <name>\] <files or directories…>\n/,
    );
    assert.match(
      help.stdout,
      /\n {2}import --sent-of <mailbox> \[--restore-deleted\] \[--stack <name>\] <files or directories…>\n/,
    );
    assert.equal(malformed.code, 2);
    assert.equal(
      malformed.stderr,
      'mail-relay outbox: "nope" is not an outbox message id (32 hex digits, as `mail-relay outbox` lists them)\n',
    );
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'mail-relay outbox: no message 0123456789abcdef0123456789abcdef\n');
    assert.equal(empty.code, 0, empty.stderr);
    assert.equal(empty.stdout, 'outbox is empty: nothing would have been sent\n');
  });

  it('a command that reads a data dir names one with no mail-relay data in it (a mistyped path), and makes none', async () => {
    const typo = join(work, 'no-such-data-dir');
    const said = `no mail-relay data in ${typo} (no index.sqlite): set MAIL_RELAY_DATA_DIR to the data dir\n`;
    for (const [args, prefix] of [
      [['token', 'list'], 'mail-relay token list: '],
      [['token', 'revoke', '0123456789abcdef'], 'mail-relay token revoke: '],
      [['outbox'], 'mail-relay outbox: '],
      [['replay', '--since', '1h'], 'mail-relay: '],
      [['reparse'], 'mail-relay: '],
      [['export', 'alice@example.test'], 'mail-relay export: '],
    ] as const) {
      const r = await cli(args, { MAIL_RELAY_DATA_DIR: typo });
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stderr, prefix + said, args.join(' '));
      assert.equal(existsSync(typo), false, `${args.join(' ')} made ${typo}`);
    }
  });
});

describe('a configuration file that cannot be used', () => {
  it('a directory, a BOM, a syntax error: one line each, the error with its line and column', async () => {
    const dir = join(work, 'config-dir');
    mkdirSync(dir, { recursive: true });
    const bom = join(work, 'bom.config.json');
    writeFileSync(bom, `\uFEFF${JSON.stringify(CONFIG, null, 2)}`);
    const broken = join(work, 'broken.config.json');
    writeFileSync(broken, '{\n  "domains": ["example.test",],\n  "mailboxes": []\n}\n');
    const unquoted = join(work, 'unquoted.config.json');
    writeFileSync(unquoted, '{\n  "domains": ["example.test"],\n  mailboxes: []\n}\n');
    const [isDir, withBom, trailing, name] = await Promise.all(
      [dir, bom, broken, unquoted].map((path) =>
        cli(['route', 'sales@example.test'], { MAIL_RELAY_CONFIG: path }),
      ),
    );
    assert.equal(isDir?.code, 1);
    assert.equal(
      isDir.stderr,
      `mail-relay: cannot read the configuration ${dir}: it is a directory, not a file\n`,
    );
    assert.equal(withBom?.code, 0, withBom?.stderr);
    assert.match(
      withBom.stdout,
      /sales@example\.test: deliver to mailbox alice@example\.test via routes\[0\]/,
    );
    assert.equal(trailing?.code, 1);
    assert.equal(
      trailing.stderr,
      `mail-relay: ${broken} is not valid JSON: line 2, column 30: expected a value, found "]"\n`,
    );
    assert.equal(name?.code, 1);
    assert.equal(
      name.stderr,
      `mail-relay: ${unquoted} is not valid JSON: line 3, column 3: expected a property name in double quotes, found "m"\n`,
    );
  });

  it('a file it may not read: one line', async () => {
    const locked = join(work, 'locked.config.json');
    writeFileSync(locked, JSON.stringify(CONFIG), { mode: 0o000 });
    const args = ['route', 'sales@example.test'];
    const extra = { MAIL_RELAY_CONFIG: locked };
    // Root reads any file: run the CLI without the capabilities that let it (util-linux setpriv).
    const asRoot = process.getuid?.() === 0;
    assert.ok(!asRoot || hasCommand('setpriv'), 'setpriv (util-linux) is needed to test this as root');
    const r = asRoot
      ? await run(
          'setpriv',
          ['--bounding-set=-dac_override,-dac_read_search', process.execPath, BIN, ...args],
          {
            env: env({ MAIL_RELAY_DATA_DIR: join(work, 'usage-data'), ...extra }),
          },
        )
      : await cli(args, extra);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `mail-relay: cannot read the configuration ${locked}: permission denied\n`);
  });
});

/** What a killed relay leaves in `journalDir`: a segment of a dead process, holding one acknowledged message. */
function orphanSegment(journalDir: string, subject: string): Promise<string> {
  return killedRelaySegment(
    journalDir,
    [
      {
        sesMessageId: `orphan-${subject}`,
        recipient: 'bob@example.test',
        raw: Buffer.from(`Subject: ${subject}\r\n\r\nhello\r\n`),
      },
    ],
    999_999_993,
  );
}

describe('one dev per data dir', () => {
  it('a second dev refuses in one line before it recovers or opens anything; import, token, replay and reparse run beside dev', async () => {
    const dataDir = join(work, 'one-dev');
    const first = await startDev(dataDir);
    try {
      // Left for the next dev's recovery: a second one must not take it (the first owns the data dir).
      const orphan = await orphanSegment(join(dataDir, 'journal'), 'orphaned');
      const second = await run(process.execPath, [BIN, 'dev'], {
        env: env({ MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_SMTP_PORT: '0', MAIL_RELAY_API_PORT: '0' }),
      });
      assert.equal(second.code, 1, second.stdout + second.stderr);
      assert.equal(
        second.stderr,
        `mail-relay: mail-relay dev (or compact) is already running on ${dataDir} (it holds dev.lock there); ` +
          'stop it, or give this one another MAIL_RELAY_DATA_DIR\n',
      );
      assert.equal(second.stdout, '');
      assert.ok(readdirSync(join(dataDir, 'journal')).includes(orphan), 'the second dev recovered nothing');

      // What the README says runs beside dev still does.
      const eml = join(work, 'beside.eml');
      writeFileSync(eml, 'Subject: beside\r\n\r\nhi\r\n');
      const beside = (args: string[]) =>
        run(process.execPath, [BIN, ...args], { env: env({ MAIL_RELAY_DATA_DIR: dataDir }) });
      const [imported, token] = await Promise.all([
        beside(['import', '--to', 'bob@example.test', eml]),
        beside(['token', 'create', 'bob@example.test']),
      ]);
      assert.equal(imported.code, 0, imported.stderr);
      assert.match(imported.stdout, /delivered 1,/);
      assert.equal(token.code, 0, token.stderr);
      const replayed = await beside(['replay', '--since', '1h']);
      assert.equal(replayed.code, 0, replayed.stderr);
      assert.match(replayed.stdout, /delivered 0, duplicate 2,/);
      const reparsed = await beside(['reparse']);
      assert.equal(reparsed.code, 0, reparsed.stderr);
      assert.equal(reparsed.stdout, 'reparsed 0 messages in 1 mailbox, 2 unchanged, 0 failed\n');
      await sendOne(first.port, 'over smtp');
    } finally {
      first.child.kill('SIGTERM');
    }
    const [code] = await once(first.child, 'exit');
    assert.equal(code, 0, first.output());
    assert.deepEqual((await subjectsIn(dataDir)).sort(), ['beside', 'orphaned', 'over smtp']);
  });

  it('a dev whose port is taken says so in one line, and leaves the data dir to the next dev', async () => {
    const dataDir = join(work, 'port-then-dev');
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      for (const ports of [
        { MAIL_RELAY_SMTP_PORT: String(port), MAIL_RELAY_API_PORT: '0' },
        { MAIL_RELAY_SMTP_PORT: '0', MAIL_RELAY_API_PORT: String(port) },
      ]) {
        // In this process: what failed must have released the lock itself, not the end of a process.
        const out = new PassThrough();
        const err = new PassThrough();
        let text = '';
        err.on('data', (c: Buffer) => {
          text += c.toString();
        });
        const code = await main(['dev'], { out, err, env: env({ MAIL_RELAY_DATA_DIR: dataDir, ...ports }) });
        assert.equal(code, 1);
        assert.match(
          text,
          new RegExp(`^mail-relay: cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use; .*\\n$`),
        );
      }
    } finally {
      taken.close();
    }
    const next = await startDev(dataDir);
    try {
      await sendOne(next.port, 'next');
    } finally {
      next.child.kill('SIGTERM');
    }
    const [code] = await once(next.child, 'exit');
    assert.equal(code, 0, next.output());
  });
});

describe('mail-relay token list and revoke by id', () => {
  it('lists id, mailbox or admin, created and label; revoke takes the id; no token is stored or shown', async () => {
    const dataDir = join(work, 'tokens');
    const tokenCli = (args: string[]) =>
      run(process.execPath, [BIN, 'token', ...args], { env: env({ MAIL_RELAY_DATA_DIR: dataDir }) });
    const laptop = await tokenCli(['create', 'alice@example.test', '--label', 'my laptop']);
    const admin = await tokenCli(['create', '--admin']);
    const bob = await tokenCli(['create', 'bob@example.test']);
    for (const r of [laptop, admin, bob]) assert.equal(r.code, 0, r.stderr);
    // A token works only with a dev on the data dir it was made in: the confirmation names it.
    assert.equal(
      admin.stderr,
      `admin token created in ${dataDir}; it is shown only this once. Use it as: Authorization: Bearer <token>\n`,
    );
    const tokens = [laptop, admin, bob].map((r) => r.stdout.trim());
    const ids = tokens.map((t) => hashToken(t).slice(0, 12));

    const [all, alice] = await Promise.all([tokenCli(['list']), tokenCli(['list', 'Alice@Example.test'])]);
    assert.equal(all.code, 0, all.stderr);
    const lines = all.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^id +for +created +label$/);
    assert.match(
      lines[1] ?? '',
      new RegExp(`^${ids[0]}  alice@example\\.test  +\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z  my laptop$`),
    );
    assert.match(lines[2] ?? '', new RegExp(`^${ids[1]}  admin  +\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z$`));
    assert.match(lines[3] ?? '', new RegExp(`^${ids[2]}  bob@example\\.test  +\\d{4}-`));
    assert.equal(lines.length, 4);
    assert.deepEqual(
      alice.stdout
        .trimEnd()
        .split('\n')
        .slice(1)
        .map((l) => l.slice(0, 12)),
      [ids[0]],
    );
    for (const t of tokens) assert.ok(!all.stdout.includes(t) && !all.stdout.includes(hashToken(t)));

    // The token the user lost: revoked by what list shows.
    const revoked = await tokenCli(['revoke', ids[0] ?? '']);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stderr, `token revoked: ${ids[0]} alice@example.test (my laptop)\n`);
    const [again, byToken, tooShort, stack] = await Promise.all([
      tokenCli(['revoke', ids[0] ?? '']),
      tokenCli(['revoke', tokens[2] ?? '']),
      tokenCli(['revoke', 'abc']),
      tokenCli(['list', '--stack', 'MailRelay']),
    ]);
    assert.equal(stack.code, 2);
    assert.match(stack.stderr, /^mail-relay token list: local data dir only/);
    assert.equal(again.code, 1);
    assert.equal(again.stderr, 'no such token (already revoked?)\n');
    assert.equal(byToken.code, 0, byToken.stderr);
    assert.equal(tooShort.code, 2);
    assert.match(tooShort.stderr, /neither a mail-relay token \(mr_…\) nor a token id/);
    // It takes 8 digits and more (the README's "8+"): the message must not ask for all 12.
    assert.match(
      tooShort.stderr,
      /token id \(the 12 hex digits token list shows, or at least their first 8\)/,
    );
    const left = await tokenCli(['list']);
    assert.deepEqual(
      left.stdout
        .trimEnd()
        .split('\n')
        .slice(1)
        .map((l) => l.slice(0, 12)),
      [ids[1]],
    );

    // Only hashes are stored: no token in the index's files.
    const files = readdirSync(dataDir).filter((f) => f.startsWith('index.sqlite'));
    const stored = Buffer.concat(files.map((f) => readFileSync(join(dataDir, f))));
    for (const t of tokens) assert.ok(!stored.includes(t), 'a token is in the index');
    assert.ok(stored.includes(hashToken(tokens[1] ?? '')), 'the admin token’s hash is');
  });
});
