/**
 * The README's examples, run from the README's own text, so that they cannot drift from what the relay
 * does: the "Try it" commands (swaks, python3's smtplib, `route`, `import`, `reparse`), the HTTP API's
 * curl walk-through, the "Testing an application against it" helpers, and the configurations shown.
 * Only the ports change (the relay here listens on free ones); `npm ci && npm start` is the `dev`
 * this suite started, and `npx mail-relay` is `node bin/mail-relay.js`, as npx resolves it.
 */
import assert from 'node:assert/strict';
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import nodemailer from 'nodemailer';
import { parseConfig } from '../../functions/core/config.ts';
import { BIN, cleanEnv, type DevProcess, startDev } from '../helpers/dev.ts';
import { hasCommand, PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';

const README = readFileSync(join(PROJECT_ROOT, 'README.md'), 'utf8');

/** The first fenced block of `lang` after the first occurrence of `marker` in the README. */
function blockAfter(marker: string, lang: string): string {
  const at = README.indexOf(marker);
  assert.ok(at >= 0, `README has no "${marker}"`);
  const open = README.indexOf(`\n\`\`\`${lang}\n`, at);
  assert.ok(open >= 0, `README has no \`\`\`${lang} block after "${marker}"`);
  const start = open + lang.length + 5;
  return README.slice(start, README.indexOf('\n```\n', start) + 1);
}

/** The README's ports, as this suite's relay has them. */
function onPorts(text: string, smtp: number, api: number): string {
  return text.replace(/\b2525\b/g, String(smtp)).replace(/\b8025\b/g, String(api));
}

const TOOLS = ['swaks', 'python3', 'curl', 'jq'];
const ready = requireOrAnnounce(
  TOOLS.every(hasCommand),
  `README examples (${TOOLS.filter((t) => !hasCommand(t)).join(', ')})`,
  'apt-get install swaks jq curl python3',
);

/** A shell that runs README text as a user's would, against this suite's relay and data dir. */
const PRELUDE = `set -o pipefail
npm() { :; }   # "npm ci && npm start": the relay this suite started
npx() { if [ "$1" = mail-relay ]; then shift; node ${JSON.stringify(BIN)} "$@"; else command npx "$@"; fi; }
`;

describe('the README examples, from its text', { skip: !ready }, () => {
  const work = mkdtempSync(join(tmpdir(), 'readme-examples-'));
  const dataDir = join(work, 'data');
  let dev: DevProcess;
  let api: number;
  let env: NodeJS.ProcessEnv;

  /** Sends a raw message over SMTP, as any mailer does. */
  const sendRaw = async (to: string, raw: Buffer | string): Promise<void> => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: dev.port, ignoreTLS: true });
    try {
      await transport.sendMail({ envelope: { from: 'app@sender.test', to: [to] }, raw });
    } finally {
      transport.close();
    }
  };

  /** Runs `script` in bash from `cwd`; `onOutput` sees stdout as it comes. */
  const bash = async (
    script: string,
    cwd: string,
    onOutput: (stdout: string) => void = () => {},
  ): Promise<{ code: number | null; stdout: string; stderr: string }> => {
    const child: ChildProcessByStdio<null, Readable, Readable> = spawn('bash', ['-c', PRELUDE + script], {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      onOutput(stdout);
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [code] = (await once(child, 'close')) as [number | null];
    clearTimeout(timer);
    return { code, stdout, stderr };
  };

  before(async () => {
    dev = await startDev(dataDir);
    const m = /api: +http:\/\/127\.0\.0\.1:(\d+)\/v1\//.exec(dev.output());
    assert.ok(m?.[1], dev.output());
    api = Number(m[1]);
    env = cleanEnv({ MAIL_RELAY_DATA_DIR: dataDir });
  });
  after(async () => {
    if (dev !== undefined && dev.child.exitCode === null) {
      dev.child.kill('SIGINT');
      await once(dev.child, 'exit');
    }
    rmSync(work, { recursive: true, force: true });
  });

  it('"Try it": mail over swaks and smtplib is delivered, route and import say what the README says', async () => {
    const cwd = join(work, 'try-it');
    // `import … path/to/*.eml`: the README's path, holding one of our fixtures.
    mkdirSync(join(cwd, 'path/to'), { recursive: true });
    writeFileSync(
      join(cwd, 'path/to/plain.eml'),
      readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml')),
    );
    // `import … export.mbox Maildir/`: an mbox of two messages, a Maildir holding one.
    const mail = (subject: string) => `From: a@remote.test\nSubject: ${subject}\n\nhi\n`;
    writeFileSync(
      join(cwd, 'export.mbox'),
      `From a@remote.test Tue Mar  4 09:15:00 2025\n${mail('m1')}\nFrom a@remote.test Tue Mar  4 09:16:00 2025\n${mail('m2')}`,
    );
    for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(cwd, 'Maildir', sub), { recursive: true });
    writeFileSync(join(cwd, 'Maildir/cur/1732838400.M1P2.host:2,S'), mail('md'));
    const r = await bash(onPorts(blockAfter('## Try it', 'sh'), dev.port, api), cwd);
    const what = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.code, 0, what);
    assert.match(r.stdout, /<- {2}250 2\.0\.0 Ok: queued as [0-9A-Z]{26}\n/, 'swaks got its 250');
    assert.match(
      r.stdout,
      /\nbob\+news@example\.test: deliver to mailbox bob@example\.test \[\+news\] via mailbox\n/,
    );
    assert.match(r.stdout, /\nimported 1\/1 files in [\d.]+s: delivered 1, /);
    assert.match(r.stdout, /\nimported 3\/3 messages from 2 files in [\d.]+s: delivered 3, .*failed 0\n/);
    assert.match(r.stdout, /\nreparsed 0 messages in 2 mailboxes, 6 unchanged, 0 failed\n/);
  });

  it('"HTTP API": the curl walk-through reads, fetches, flags, deletes and waits as its comments say', async () => {
    const cwd = join(work, 'api');
    mkdirSync(cwd);
    // The newest message of alice's mailbox (what `limit=1` picks): one with attachments.
    const fixture = readFileSync(join(PROJECT_ROOT, 'test/fixtures/mixed-attachment.eml'));
    await sendRaw('alice@example.test', fixture);
    // `wait` "blocks until new mail": once the script has deleted, mail keeps coming until it ends.
    let sending: Promise<void> | undefined;
    let done = false;
    // One command a line: each line's output is told apart by a separator printed after it.
    const commands = onPorts(blockAfter('curl -L` and `fetch` follow it', 'sh'), dev.port, api)
      .split('\n')
      .filter((l) => l.trim() !== '');
    const r = await bash(commands.join("\nprintf '\\036'\n"), cwd, (stdout) => {
      if (sending === undefined && stdout.includes('"notFound"')) {
        sending = (async () => {
          for (let i = 0; !done && i < 100; i++) {
            await sendRaw('alice@example.test', `Subject: new ${i}\r\n\r\nnew\r\n`);
            await new Promise((res) => setTimeout(res, 200));
          }
        })();
      }
    });
    done = true;
    await sending;
    const what = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.code, 0, what);
    const outputs = r.stdout.split('\x1e');
    assert.equal(outputs.length, commands.length, what);
    /** What the README's line containing `text` printed. */
    const out = (text: string): string => {
      const i = commands.findIndex((c) => c.includes(text));
      assert.ok(i >= 0, `the README's API example has no line with ${text}`);
      return outputs[i] ?? '';
    };
    const stat = JSON.parse(out('# STAT')) as { address: string; messages: number };
    assert.equal(stat.address, 'alice@example.test', what);
    assert.ok(stat.messages >= 2, what);
    const unseen = JSON.parse(out('unseen=true')) as { items: { id: string }[] };
    assert.ok(unseen.items.length >= 2, what);
    const id = unseen.items[0]?.id ?? '';
    // TOP 5: the headers, the blank line and five body lines of the newest message.
    const top = out('/top?lines=5');
    assert.match(top, /\nSubject: Report attached\r\n/, what);
    const body = top.slice(top.indexOf('\r\n\r\n') + 4).split('\r\n');
    assert.deepEqual(
      [body.length, body.at(-1), body.at(-2)],
      [6, '', 'The report and the raw data are attached.'],
    );
    // RETR saved as message.eml: the fixture behind the trace headers, byte for byte.
    const saved = readFileSync(join(cwd, 'message.eml'));
    assert.ok(
      saved.subarray(saved.length - fixture.length).equals(fixture),
      'message.eml ends with the message',
    );
    // The first attachment, under its own filename.
    assert.equal(readFileSync(join(cwd, 'report.pdf')).length, 3000);
    // PATCH answers the item, seen; DELETE answers nothing (204); the batch delete then finds nothing.
    const patched = JSON.parse(out('-X PATCH')) as { id: string; seen: boolean };
    assert.deepEqual([patched.id, patched.seen], [id, true]);
    assert.equal(out('-X DELETE'), '');
    assert.deepEqual(JSON.parse(out('/messages/delete')), { deleted: [], notFound: [id] });
    // The long-poll: answered with the mail that came while it waited.
    const waited = JSON.parse(out('/wait?')) as { items: { subject: string }[]; cursor: string };
    assert.match(waited.items[0]?.subject ?? '', /^new \d+$/, what);
    assert.match(waited.cursor, /^\d+$/);
  });

  it('"Testing an application against it": clear() empties a mailbox, firstMail() returns its first mail', async () => {
    const admin = await bash('npx mail-relay token create --admin --label tests', work);
    assert.equal(admin.code, 0, admin.stderr);
    const helpers = join(work, 'helpers.mjs');
    writeFileSync(helpers, onPorts(blockAfter('### Testing an application against it', 'js'), dev.port, api));
    process.env.MAIL_RELAY_TOKEN = admin.stdout.trim();
    try {
      const { clear, firstMail } = (await import(pathToFileURL(helpers).href)) as {
        clear(address: string): Promise<void>;
        firstMail(address: string, timeout?: number): Promise<{ subject: string; text: string }>;
      };
      await sendRaw('carol@example.test', 'Subject: from an earlier test\r\n\r\nold\r\n');
      await clear('carol@example.test');
      // Mail that came before the call is found at once, and the first one of two.
      await sendRaw('carol@example.test', 'Subject: Confirm your address\r\n\r\nhttps://app.test/c/1\r\n');
      await sendRaw('carol@example.test', 'Subject: Welcome\r\n\r\nhello\r\n');
      const first = await firstMail('carol@example.test');
      assert.equal(first.subject, 'Confirm your address');
      assert.match(first.text, /https:\/\/app\.test\/c\/1/);
      // And mail that comes after it.
      await clear('dave@example.test');
      const later = firstMail('dave@example.test', 5);
      setTimeout(() => void sendRaw('dave@example.test', 'Subject: later\r\n\r\nlater\r\n'), 300);
      assert.equal((await later).subject, 'later');
    } finally {
      delete process.env.MAIL_RELAY_TOKEN;
    }
  });
});

describe('the README configurations', () => {
  it('the config showing every route kind, the dev default and the catcher one are valid, and the example file is a part of the first', () => {
    const full = JSON.parse(blockAfter('A config showing every route kind', 'json')) as { routes: unknown[] };
    parseConfig(full);
    const devDefault = /\(`(\{"domains": \["example\.test"\], "mailboxes": \["\*@example\.test"\]\})`\)/.exec(
      README,
    );
    assert.ok(devDefault?.[1], 'README states the dev default');
    parseConfig(JSON.parse(devDefault[1]));
    const catcher = /by\s+`MAIL_RELAY_CONFIG`: `(\{"domains".*?\})`/s.exec(README);
    assert.ok(catcher?.[1], "README shows the catcher's configuration");
    parseConfig(JSON.parse(catcher[1]));
    // mail-relay.config.example.json: "a shorter one with the aws settings added".
    const example = JSON.parse(
      readFileSync(join(PROJECT_ROOT, 'mail-relay.config.example.json'), 'utf8'),
    ) as {
      routes: unknown[];
      aws?: unknown;
    };
    parseConfig(example);
    assert.ok(example.aws !== undefined);
    const shown = new Set(full.routes.map((r) => JSON.stringify(r)));
    for (const route of example.routes) assert.ok(shown.has(JSON.stringify(route)), JSON.stringify(route));
  });
});
