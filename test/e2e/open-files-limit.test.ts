/**
 * `npm start` under a low open-files limit (`ulimit -n`): the built relay, as `npm start` runs it,
 * in a child process behind `prlimit`. Below the floor it says so in one line; at the floor it
 * starts and stores mail; a burst of connections past what the limit allows gets answers that say
 * the server is out of resources (SMTP 421/451, API 503, POP3 -ERR [SYS/TEMP]), one log line, and
 * every message is accepted once the burst is over and readable byte for byte.
 * See functions/local/descriptor-limit.ts and docs/adr/0014-local-server-process.md.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  connectionCap,
  MIN_OPEN_FILES,
  SMTP_MESSAGE_OUT_OF_RESOURCES,
  SMTP_SESSION_OUT_OF_RESOURCES,
} from '../../functions/local/descriptor-limit.ts';
import { buildLocal, startNodeFlags } from '../../scripts/build-local.mjs';
import { BIN, cleanEnv, type DevProcess, startDev } from '../helpers/dev.ts';
import { hasCommand, PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { freePort } from '../helpers/net.ts';
import { python, run } from '../helpers/process.ts';
import { until } from '../helpers/until.ts';

const work = mkdtempSync(join(tmpdir(), 'mr-nofile-'));
const outdir = join(PROJECT_ROOT, 'dist', `test-nofile-${process.pid}`);
let bundle = '';
const havePrlimit = requireOrAnnounce(
  hasCommand('prlimit'),
  'the relay under a low open-files limit',
  'prlimit (util-linux) is Linux only',
);

before(async () => {
  if (havePrlimit) bundle = await buildLocal({ outdir });
});
after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(outdir, { recursive: true, force: true });
});

/** `npm start`'s process (its Node flags, the build) behind `prlimit --nofile=soft:hard`. */
function startRelay(name: string, soft: number, hard = soft): Promise<DevProcess> {
  return startDev(join(work, name), {
    argv: [...startNodeFlags(), bundle, 'dev'],
    wrapper: ['prlimit', `--nofile=${soft}:${hard}`],
  });
}

function apiOf(relay: DevProcess): string {
  const url = /^ {2}api: +(http:\/\/\S+)\/v1\/$/m.exec(relay.output())?.[1];
  assert.ok(url, relay.output());
  return url;
}

/** `mail-relay pop3` in front of the relay's API on a free port, once it listens; its output is kept. */
async function startBridge(
  relay: DevProcess,
): Promise<{ child: ChildProcess; port: number; output: () => string }> {
  const port = await freePort();
  const child = spawn(process.execPath, [BIN, 'pop3', '--api', `${apiOf(relay)}/v1/`], {
    env: cleanEnv({ MAIL_RELAY_POP3_PORT: String(port) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    out += c.toString();
  });
  await until(
    'the POP3 bridge listens',
    () => (out.includes(`127.0.0.1:${port}`) ? true : undefined),
    60_000,
  );
  return { child, port, output: () => out };
}

async function tokenFor(name: string, mailbox: string): Promise<string> {
  const r = await run(process.execPath, [BIN, 'token', 'create', mailbox], {
    env: cleanEnv({ MAIL_RELAY_DATA_DIR: join(work, name) }),
  });
  assert.equal(r.code, 0, r.stderr);
  const token = /mr_[A-Za-z0-9_-]+/.exec(r.stdout)?.[0];
  assert.ok(token, r.stdout);
  return token;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

/** The message the i-th session sends: unique bytes, CRLF lines. */
function messageBytes(i: number, size = 0): Buffer {
  const filler = size > 0 ? `${'x'.repeat(76)}\r\n`.repeat(Math.ceil(size / 78)) : '';
  return Buffer.from(
    `From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: burst ${i}\r\n` +
      `Message-ID: <burst-${i}@remote.test>\r\n\r\nbody of message ${i}\r\n${filler}`,
  );
}

/**
 * `n` SMTP sessions opened at once and all held open, then each sends message i (messageBytes) if it
 * was greeted. One JSON line per session: {i, greeting: "220 …" | "421 …" | error, reply: "250 …" | …}.
 */
const BURST = `
import json, smtplib, socket, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
opened = threading.Barrier(n)
out = [None] * n
def body(i):
    return ('From: sender@remote.test\\r\\nTo: alice@example.test\\r\\nSubject: burst %d\\r\\n'
            'Message-ID: <burst-%d@remote.test>\\r\\n\\r\\nbody of message %d\\r\\n' % (i, i, i)).encode()
def session(i):
    s, r = None, {'i': i}
    try:
        s = smtplib.SMTP(timeout=120)
        code, text = s.connect('127.0.0.1', port)
        r['greeting'] = '%d %s' % (code, text.decode())
        if code != 220: s.close(); s = None
    except smtplib.SMTPConnectError as e:
        r['greeting'] = '%d %s' % (e.smtp_code, e.smtp_error.decode()); s = None
    except Exception as e:
        r['greeting'] = 'error %s: %s' % (type(e).__name__, e); s = None
    opened.wait()
    if s is not None:
        try:
            s.ehlo(); s.mail('sender@remote.test'); s.rcpt('alice@example.test')
            code, text = s.data(body(i))
            r['reply'] = '%d %s' % (code, text.decode())
            s.quit()
        except Exception as e:
            r['reply'] = 'error %s: %s' % (type(e).__name__, e)
    out[i] = r
threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
for r in out: print(json.dumps(r))
`;

/** Sends messages i… (of BURST's shape, `size` bytes longer) one after the other, a session each; prints each reply to DATA. */
const SEND = `
import smtplib, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
filler = ('x' * 76 + '\\r\\n') * ((size + 77) // 78) if size > 0 else ''
for i in map(int, sys.argv[3:]):
    body = ('From: sender@remote.test\\r\\nTo: alice@example.test\\r\\nSubject: burst %d\\r\\n'
            'Message-ID: <burst-%d@remote.test>\\r\\n\\r\\nbody of message %d\\r\\n%s' % (i, i, i, filler)).encode()
    s = smtplib.SMTP('127.0.0.1', port, timeout=120)
    s.ehlo(); s.mail('sender@remote.test'); s.rcpt('alice@example.test')
    code, text = s.data(body)
    print('%d %s' % (code, text.decode()))
    s.quit()
`;

/** The replies to messages `indexes` sent again, as a sender's retry does (SEND). */
async function sendAgain(port: number, indexes: readonly number[], size = 0): Promise<string[]> {
  const r = await python(SEND, [String(port), String(size), ...indexes.map(String)]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

/** The id in `250 2.0.0 Ok: queued as <id>`. */
function queuedId(reply: string): string {
  const id = /^250 2\.0\.0 Ok: queued as (\S+)$/.exec(reply)?.[1];
  assert.ok(id, reply);
  return id;
}

async function assertStoredAsSent(api: string, token: string, ids: Map<number, string>, size = 0) {
  for (const [i, id] of ids) {
    const res = await fetch(`${api}/v1/mailboxes/alice@example.test/messages/${id}/raw`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200, `message ${i} (${id})`);
    const raw = Buffer.from(await res.arrayBuffer());
    const sent = messageBytes(i, size);
    // Stored as received, behind the relay's trace headers (Return-Path, Received).
    assert.ok(
      raw.subarray(raw.length - sent.length).equals(sent),
      `message ${i} is not stored byte for byte`,
    );
  }
}

const LIMIT_LINE =
  /^mail-relay: at the open-files limit \(the limit is \d+\): .+, raise the open-files limit \(`ulimit -n 1024`\) and restart$/gm;

describe('npm start under a low open-files limit', { skip: !havePrlimit }, () => {
  it(`refuses to start below ${MIN_OPEN_FILES} with one line saying what to do, not a stack trace`, async () => {
    const r = await run('prlimit', ['--nofile=48:48', process.execPath, ...startNodeFlags(), bundle, 'dev'], {
      env: cleanEnv({
        MAIL_RELAY_DATA_DIR: join(work, 'too-low'),
        MAIL_RELAY_SMTP_PORT: '0',
        MAIL_RELAY_API_PORT: '0',
      }),
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      `mail-relay: the open-files limit is 48, and the relay needs at least ${MIN_OPEN_FILES} ` +
        '(a descriptor per connection and per file being stored); raise it (`ulimit -n 1024` in the shell that starts it; ' +
        'LimitNOFILE= for a systemd service, --ulimit nofile=1024 for docker run) and start again\n',
    );
  });

  it(`starts at ${MIN_OPEN_FILES} and stores mail`, async () => {
    const relay = await startRelay('floor', MIN_OPEN_FILES);
    try {
      const token = await tokenFor('floor', 'alice@example.test');
      const id = queuedId((await sendAgain(relay.port, [0]))[0] ?? '');
      await assertStoredAsSent(apiOf(relay), token, new Map([[0, id]]));
    } finally {
      await stop(relay.child);
    }
    assert.equal(relay.child.exitCode, 0, relay.output());
    assert.doesNotMatch(relay.output(), /EMFILE|too many open files/i);
  });

  it('answers a burst of SMTP sessions past the limit with 421 out of resources, then takes every message', async () => {
    const limit = 128;
    const cap = connectionCap({ soft: limit, hard: limit }) as number;
    const relay = await startRelay('burst', limit);
    try {
      const token = await tokenFor('burst', 'alice@example.test');
      const n = 120;
      const burst = await python(BURST, [String(relay.port), String(n)]);
      assert.equal(burst.code, 0, burst.stderr);
      const sessions = burst.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { i: number; greeting: string; reply?: string });
      assert.equal(sessions.length, n);
      // Each connection was answered: greeted, or told why not. None dropped in silence.
      const refused = sessions.filter((s) => !s.greeting.startsWith('220 '));
      for (const s of refused)
        assert.equal(s.greeting, `421 ${SMTP_SESSION_OUT_OF_RESOURCES}`, JSON.stringify(s));
      assert.ok(refused.length >= n - cap, `${refused.length} of ${n} refused, with ${cap} sessions allowed`);
      const ids = new Map<number, string>();
      for (const s of sessions) {
        if (s.greeting.startsWith('220 ')) ids.set(s.i, queuedId(s.reply ?? ''));
      }
      // One line in the log, saying what and what to do; not one per refused connection.
      assert.equal(relay.output().match(LIMIT_LINE)?.length, 1, relay.output());
      // The senders try again, as MTAs do: all taken now that the burst is over.
      const again = await sendAgain(
        relay.port,
        refused.map((s) => s.i),
      );
      for (const [k, s] of refused.entries()) ids.set(s.i, queuedId(again[k] ?? ''));
      assert.equal(ids.size, n);
      await assertStoredAsSent(apiOf(relay), token, ids);
    } finally {
      await stop(relay.child);
    }
    assert.equal(relay.child.exitCode, 0, relay.output());
    assert.doesNotMatch(relay.output(), /\(internal\)|smtp error/);
  });

  it('answers API connections past the limit with 503 out_of_resources, and POP3 with -ERR [SYS/TEMP]', async () => {
    const limit = 128;
    const cap = connectionCap({ soft: limit, hard: limit }) as number;
    const relay = await startRelay('api-burst', limit);
    const api = apiOf(relay);
    const { child: bridge, port: pop3Port } = await startBridge(relay);
    try {
      const token = await tokenFor('api-burst', 'alice@example.test');
      const id = queuedId((await sendAgain(relay.port, [0]))[0] ?? '');
      // n long-polls held open at once: those past the cap are answered 503 at once and closed; the
      // rest wait for mail. While they wait, a POP3 login needs the API too.
      const n = 80;
      const held = await python(
        `
import json, poplib, socket, sys, threading
port, token, n, pop3, cap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
req = ('GET /v1/mailboxes/alice@example.test/wait HTTP/1.1\\r\\nHost: x\\r\\n'
       'Authorization: Bearer %s\\r\\n\\r\\n' % token).encode()
answers, lock, enough, socks = [], threading.Lock(), threading.Event(), []
def poll():
    s = socket.create_connection(('127.0.0.1', port), timeout=120)
    with lock: socks.append(s)
    s.sendall(req)
    data = b''
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
    except OSError:
        return
    # Answered and closed by the server: closed here too, as any client does.
    s.close()
    with lock:
        answers.append(data.decode('latin1'))
        if sum(1 for a in answers if ' 503 ' in a.split('\\r\\n', 1)[0]) >= n - cap: enough.set()
threads = [threading.Thread(target=poll, daemon=True) for _ in range(n)]
for t in threads: t.start()
enough.wait(40)
p = poplib.POP3('127.0.0.1', pop3, timeout=60)
p.user('alice@example.test')
try:
    p.pass_(token); login = 'ok'
except poplib.error_proto as e:
    login = e.args[0].decode()
p.quit()
with lock:
    for s in socks: s.close()
    print(json.dumps({'answers': answers, 'login': login}))
`,
        [new URL(api).port, token, String(n), String(pop3Port), String(cap)],
      );
      assert.equal(held.code, 0, held.stderr);
      const { answers, login } = JSON.parse(held.stdout) as { answers: string[]; login: string };
      // Every connection was answered (none closed in silence): 503 out_of_resources, or, for one
      // that was let in, its long-poll ending as usual (25 s) on a slow machine.
      const refusedPolls = answers.filter((a) => !/^HTTP\/1\.1 20[04] /.test(a));
      assert.ok(
        refusedPolls.length >= n - cap,
        `${refusedPolls.length} refused of ${n}, with ${cap} allowed`,
      );
      for (const a of refusedPolls) {
        assert.match(a, /^HTTP\/1\.1 503 Service Unavailable\r\n/, a);
        assert.match(a, /\r\nRetry-After: 1\r\n/);
        assert.match(
          a,
          /\r\n\r\n\{"error":\{"code":"out_of_resources","message":"the server is out of resources \(too many open files\); try again in 1 second"\}\}$/,
        );
      }
      assert.match(
        login,
        /^-ERR \[SYS\/TEMP\] the mail-relay API failed: out_of_resources: the server is out of resources \(too many open files\)/,
      );
      // The connections are gone: the API and the POP3 bridge answer again.
      const res = await until('the API answers again', async () => {
        const r = await fetch(`${api}/v1/mailboxes/alice@example.test/messages/${id}/raw`, {
          headers: { Authorization: `Bearer ${token}` },
        });
        return r.status === 503 ? undefined : r;
      });
      assert.equal(res.status, 200);
      assert.ok(
        Buffer.from(await res.arrayBuffer())
          .toString()
          .endsWith(messageBytes(0).toString()),
      );
      const stat = await python(
        'import poplib,sys\np = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=60)\np.user(sys.argv[2]); p.pass_(sys.argv[3])\nprint(p.stat()[0]); p.quit()',
        [String(pop3Port), 'alice@example.test', token],
      );
      assert.equal(stat.code, 0, stat.stderr);
      assert.equal(stat.stdout, '1\n');
      assert.equal(relay.output().match(LIMIT_LINE)?.length, 1, relay.output());
    } finally {
      await stop(bridge);
      await stop(relay.child);
    }
    assert.doesNotMatch(relay.output(), /internal error/);
  });

  it('refuses a message it cannot open a file for with 451 out of resources, and takes it once it can', async () => {
    const relay = await startRelay('no-spool', 1024);
    const pid = relay.child.pid as number;
    try {
      const token = await tokenFor('no-spool', 'alice@example.test');
      // A message of 1.5 MiB is received into a spool file (docs/adr/0014): opening it needs a
      // descriptor. The limit is lowered under the relay's feet to what it holds once the session is
      // open, as a burst of other connections would leave it.
      const size = 1536 * 1024;
      const sent = await python(
        `
import smtplib, subprocess, os, sys
port, pid, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
filler = ('x' * 76 + '\\r\\n') * ((size + 77) // 78)
body = ('From: sender@remote.test\\r\\nTo: alice@example.test\\r\\nSubject: burst 7\\r\\n'
        'Message-ID: <burst-7@remote.test>\\r\\n\\r\\nbody of message 7\\r\\n%s' % filler).encode()
s = smtplib.SMTP('127.0.0.1', port, timeout=120)
s.ehlo(); s.mail('sender@remote.test'); s.rcpt('alice@example.test')
held = len(os.listdir('/proc/%s/fd' % pid))
# Two fewer than it holds: none to open until two close (a transient one may have been counted).
subprocess.run(['prlimit', '--pid', pid, '--nofile=%d:1024' % (held - 2)], check=True)
code, text = s.data(body)
print('%d %s' % (code, text.decode()))
subprocess.run(['prlimit', '--pid', pid, '--nofile=1024:1024'], check=True)
s.quit()
`,
        [String(relay.port), String(pid), String(size)],
      );
      assert.equal(sent.code, 0, sent.stderr);
      assert.equal(sent.stdout.trim(), `451 ${SMTP_MESSAGE_OUT_OF_RESOURCES}`);
      await until('the log line', () => (relay.output().match(LIMIT_LINE) ? true : undefined));
      // Descriptors are there again: the sender's retry is taken, and stored as it was sent.
      const id = queuedId((await sendAgain(relay.port, [7], size))[0] ?? '');
      await assertStoredAsSent(apiOf(relay), token, new Map([[7, id]]), size);
      assert.deepEqual(readdirSync(join(work, 'no-spool', 'spool')), [], 'the spool is empty');
    } finally {
      await stop(relay.child);
    }
    assert.equal(relay.output().match(LIMIT_LINE)?.length, 1, relay.output());
    assert.doesNotMatch(relay.output(), /\(internal\)|insufficient|4\.3\.1/);
  });

  it('the POP3 bridge out of descriptors answers -ERR [SYS/TEMP] saying so, and works once it has them', async () => {
    const relay = await startRelay('bridge-limit', 1024);
    const { child: bridge, port: pop3Port, output: bridgeOutput } = await startBridge(relay);
    try {
      const token = await tokenFor('bridge-limit', 'alice@example.test');
      queuedId((await sendAgain(relay.port, [0]))[0] ?? '');
      // The bridge's limit is lowered once its client is connected: the API request PASS makes needs a socket.
      const r = await python(
        `
import os, poplib, subprocess, sys
port, pid, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
p = poplib.POP3('127.0.0.1', port, timeout=60)
p.user('alice@example.test')
held = len(os.listdir('/proc/%s/fd' % pid))
subprocess.run(['prlimit', '--pid', pid, '--nofile=%d:1024' % (held - 2)], check=True)
try:
    p.pass_(token); print('ok')
except poplib.error_proto as e:
    print(e.args[0].decode())
subprocess.run(['prlimit', '--pid', pid, '--nofile=1024:1024'], check=True)
p.user('alice@example.test'); p.pass_(token)
print(p.stat()[0])
p.quit()
`,
        [String(pop3Port), String(bridge.pid), token],
      );
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}${bridgeOutput()}`);
      assert.equal(
        r.stdout,
        '-ERR [SYS/TEMP] the POP3 bridge is out of resources (too many open files); try again later\n1\n',
      );
    } finally {
      await stop(bridge);
      await stop(relay.child);
    }
  });
});
