/**
 * The POP3 bridge (`mail-relay pop3`) in front of the real local API, with real clients: python3's
 * poplib, mpop, fetchmail and getmail6 (apt), and a raw socket for what clients do not exercise
 * (pipelining, errors, locks).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import { revokeToken } from '../../functions/api/auth.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { importFiles } from '../../functions/local/import.ts';
import { type Pop3Bridge, startPop3Bridge } from '../../functions/local/pop3-bridge.ts';
import { type ApiTestEnv, referenceTop, startApiTestEnv } from '../helpers/api.ts';
import { corpusDir, corpusFiles, hasCommand, requireOrAnnounce } from '../helpers/env.ts';
import { python, run } from '../helpers/process.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const CAROL = 'carol@example.test';

/** The bytes a POP3 client should get for a stored message: CRLF line endings, ending in CRLF. */
function asTransmitted(raw: Buffer): Buffer {
  const crlf = raw.toString('latin1').replace(/\r?\n/g, '\r\n');
  return Buffer.from(crlf.endsWith('\r\n') ? crlf : `${crlf}\r\n`, 'latin1');
}

/** Oldest first, as the bridge numbers them. */
async function listIds(env: ApiTestEnv, token: string, mailbox: string): Promise<string[]> {
  const res = await env.request(`/v1/mailboxes/${mailbox}/messages?limit=1000`, { token });
  const page = (await res.json()) as { items: { id: string }[] };
  return page.items.map((i) => i.id).reverse();
}

async function rawOf(env: ApiTestEnv, token: string, mailbox: string, id: string): Promise<Buffer> {
  return Buffer.from(
    await (await env.request(`/v1/mailboxes/${mailbox}/messages/${id}/raw`, { token })).arrayBuffer(),
  );
}

/** The multi-line answers in a conversation: each status line and its body, dot-stuffed, without the final `.` line. */
function multiLineAnswers(got: string): { status: string; body: string }[] {
  const out: { status: string; body: string }[] = [];
  const re = /(\+OK [^\r\n]*(?:octets|follows))\r\n/g;
  for (let m = re.exec(got); m !== null; m = re.exec(got)) {
    const start = m.index + m[0].length;
    const end = got.startsWith('.\r\n', start) ? start : got.indexOf('\r\n.\r\n', start) + 2;
    out.push({ status: m[1] as string, body: got.slice(start, end) });
    re.lastIndex = end;
  }
  return out;
}

/**
 * A scripted POP3 conversation over a raw socket: sends `input` at once, returns every byte received
 * once the end of it matches `waitFor`.
 */
function converse(port: number, input: string, waitFor: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    // Chunks, and the last 512 characters to match: slicing the whole text on every chunk of a
    // message of megabytes is quadratic.
    const chunks: string[] = [];
    let tail = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no ${waitFor} in: ${chunks.join('').slice(0, 4000)}`));
    }, timeoutMs);
    socket.on('data', (d: Buffer) => {
      const text = d.toString('latin1');
      chunks.push(text);
      tail = (tail + text).slice(-512);
      if (waitFor.test(tail)) {
        clearTimeout(timer);
        socket.end();
        resolve(chunks.join(''));
      }
    });
    socket.on('error', reject);
    socket.once('data', () => socket.write(input));
  });
}

/** Descriptors of this process open on `path` (the API server runs in this process). */
function openDescriptors(path: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {
      // Closed between the listing and the readlink.
    }
  }
  return n;
}

/** TCP connections in state ESTABLISHED from a local port to `port` on loopback (/proc/net/tcp). */
function establishedTo(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'latin1')
    .split('\n')
    .slice(1)
    .filter((row) => {
      const f = row.trim().split(/\s+/);
      return f[2] === `0100007F:${hexPort}` && f[3] === '01';
    }).length;
}

/**
 * No connection to the API is left (fetch's pool closes idle keep-alive connections within seconds;
 * one streaming an answer nobody reads would stay) and the API server (in this process) holds no
 * descriptor on `blob`.
 */
async function assertReleased(env: ApiTestEnv, blob: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (establishedTo(env.api.port) > 0 || openDescriptors(blob) > 0) {
    if (Date.now() > deadline) {
      assert.fail(
        `${establishedTo(env.api.port)} connections to the API, ${openDescriptors(blob)} descriptors on the blob`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A 6.4 MB message (the API redirects it to /v1/blobs) for CAROL: its number in a new session, its blob file, its bytes. */
async function deliverHuge(
  env: ApiTestEnv,
  token: string,
): Promise<{ n: number; blob: string; raw: Buffer }> {
  const line = `${'abcdefghij'.repeat(7)}01234567`;
  const r = await env.deliver([CAROL], Buffer.from(`Subject: huge\r\n\r\n${`${line}\r\n`.repeat(80_000)}`));
  const raw = await rawOf(env, token, CAROL, r.id);
  assert.ok(raw.length > 6 * 1024 * 1024);
  return {
    n: (await listIds(env, token, CAROL)).indexOf(r.id) + 1,
    blob: join(env.runtime.blobRoot, mailboxKeys.raw(CAROL, r.id)),
    raw,
  };
}

interface Session {
  write(text: string): void;
  /** Everything received so far. */
  received(): string;
  /** Resolves once what was received matches `re`. */
  until(re: RegExp): Promise<void>;
  readonly closed: Promise<void>;
  destroy(): void;
}

/** An interactive session over a raw socket, logged in as `mailbox` (after the greeting). */
async function login(port: number, mailbox: string, token: string): Promise<Session> {
  const socket = connect(port, '127.0.0.1');
  let got = '';
  socket.on('data', (d: Buffer) => {
    got += d.toString('latin1');
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const session: Session = {
    write: (text) => socket.write(text),
    received: () => got,
    async until(re) {
      while (!re.test(got)) await new Promise((r) => setTimeout(r, 10));
    },
    closed,
    destroy: () => socket.destroy(),
  };
  await session.until(/^\+OK mail-relay POP3 bridge ready\r\n/);
  session.write(`USER ${mailbox}\r\nPASS ${token}\r\n`);
  await session.until(/has \d+ messages|-ERR/);
  return session;
}

/**
 * The API behind a proxy on loopback that forwards each request (method, token, body) and first
 * asks `intercept`: it may hold a request, answer it itself (`true`), or let it through.
 */
async function startApiProxy(
  env: ApiTestEnv,
  intercept: (
    req: IncomingMessage,
    res: ServerResponse,
  ) => Promise<boolean | undefined> | boolean | undefined,
): Promise<{ url: string; close(): Promise<void> }> {
  const proxy = createServer(async (req, res) => {
    if ((await intercept(req, res)) === true) return;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers: Record<string, string> = { authorization: req.headers.authorization ?? '' };
    if (req.headers['content-type'] !== undefined) headers['content-type'] = req.headers['content-type'];
    const up = await fetch(`${env.url}${req.url}`, {
      method: req.method ?? 'GET',
      headers,
      ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
    });
    res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'text/plain' });
    res.end(Buffer.from(await up.arrayBuffer()));
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}`,
    async close() {
      proxy.closeAllConnections();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}

const POPLIB_SESSION = `
import json, poplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
p = poplib.POP3('127.0.0.1', port, timeout=20)
out = {'welcome': p.getwelcome().decode(), 'capa': sorted(p.capa().keys())}
p.user(user)
p.pass_(password)
out['stat'] = list(p.stat())
out['list'] = [l.decode() for l in p.list()[1]]
out['uidl'] = [l.decode() for l in p.uidl()[1]]
out['retr'] = [b'\\r\\n'.join(p.retr(i + 1)[1]).decode('latin1') for i in range(out['stat'][0])]
out['top0'] = b'\\r\\n'.join(p.top(1, 0)[1]).decode('latin1')
p.dele(1)
try:
    p.retr(1)
    out['retr_deleted'] = 'ok'
except poplib.error_proto as e:
    out['retr_deleted'] = e.args[0].decode()
p.rset()
p.dele(2)
out['stat_after_dele'] = list(p.stat())
out['quit'] = p.quit().decode()
print(json.dumps(out))
`;

describe('POP3 bridge', () => {
  let env: ApiTestEnv;
  let bridge: Pop3Bridge;
  let alice: string;
  const bodies = [
    // Dot-leading lines (stuffed on the wire), a lone dot line, CRLF.
    'From: a@remote.test\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n.one dot\r\n..two dots\r\n.\r\nend\r\n',
    // Bare LF throughout: a POP3 client gets CRLF.
    'From: b@remote.test\nTo: alice@example.test\nSubject: bare LF\n\nline 1\nline 2\n',
    // 8-bit text, several lines, for TOP.
    'From: c@remote.test\r\nTo: alice@example.test\r\nSubject: third\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\nzwei\r\ndrei\r\n',
  ];

  before(async () => {
    env = await startApiTestEnv();
    alice = await env.token(ALICE);
    for (const [i, b] of bodies.entries()) {
      await env.deliver([ALICE], Buffer.from(b, 'utf8'), new Date(Date.UTC(2026, 10, 1, 12, i)));
    }
    // Refused logins wait 2 s by default; the tests that make them need not.
    bridge = await startPop3Bridge({ apiUrl: env.url, port: 0, authFailureDelayMs: 50 });
  });
  after(async () => {
    await bridge?.close();
    await env?.close();
  });

  it('refused logins are answered after the delay and told to onAuthFailure; the third closes the session', async () => {
    const failures: { mailbox: string; remote: string }[] = [];
    const slow = await startPop3Bridge({
      apiUrl: env.url,
      port: 0,
      authFailureDelayMs: 300,
      onAuthFailure: (f) => failures.push(f),
    });
    try {
      const session = await login(slow.port, ALICE, 'mr_wrong1');
      const attempt = async (token: string) => {
        const before = session.received().length;
        const started = performance.now();
        session.write(`USER ${ALICE}\r\nPASS ${token}\r\n`);
        while (!/-ERR[^\r]*\r\n$/.test(session.received().slice(before))) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        return performance.now() - started;
      };
      assert.match(
        session.received(),
        /-ERR \[AUTH\] no such mailbox, or the token is not valid for it\r\n$/,
      );
      assert.ok((await attempt('mr_wrong2')) >= 290, 'the second refusal waited too');
      await attempt('mr_wrong3');
      assert.match(session.received(), /-ERR \[AUTH\] [^\r]*too many failed logins, closing\r\n$/);
      await session.closed;
      assert.equal(failures.length, 3);
      for (const f of failures) {
        assert.equal(f.mailbox, ALICE);
        assert.match(f.remote, /^127\.0\.0\.1:\d+$/);
      }
      // The right token still logs in at once, and mail is where it was.
      const right = await login(slow.port, ALICE, alice);
      assert.match(right.received(), /\+OK alice@example\.test has \d+ messages/);
      right.write('QUIT\r\n');
      await right.closed;
      assert.equal(failures.length, 3, 'a right login is not a failure');
    } finally {
      await slow.close();
    }
  });

  it('python poplib: STAT, LIST, UIDL, RETR, TOP match the API; DELE, RSET and QUIT delete through it', async () => {
    const ids = await listIds(env, alice, ALICE);
    const raws = await Promise.all(ids.map((id) => rawOf(env, alice, ALICE, id)));
    const r = await python(POPLIB_SESSION, [String(bridge.port), ALICE, alice]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      welcome: string;
      capa: string[];
      stat: [number, number];
      list: string[];
      uidl: string[];
      retr: string[];
      top0: string;
      retr_deleted: string;
      stat_after_dele: [number, number];
      quit: string;
    };
    assert.match(out.welcome, /^\+OK/);
    for (const c of ['RESP-CODES', 'TOP', 'UIDL', 'USER']) assert.ok(out.capa.includes(c), c);
    // Sizes are the octets sent (RFC 1939 §11: CRLF line ends): the bare-LF message counts one more per line.
    const sizes = raws.map((b) => asTransmitted(b).length);
    assert.ok((sizes[1] ?? 0) > (raws[1]?.length ?? 0));
    assert.deepEqual(out.stat, [3, sizes.reduce((n, s) => n + s, 0)]);
    assert.deepEqual(
      out.list,
      sizes.map((s, i) => `${i + 1} ${s}`),
    );
    assert.deepEqual(
      out.uidl,
      ids.map((id, i) => `${i + 1} ${id}`),
    );
    // poplib returns the lines without their CRLF and with the stuffed dots removed.
    out.retr.forEach((text, i) => {
      assert.equal(`${text}\r\n`, asTransmitted(raws[i] as Buffer).toString('latin1'), `message ${i + 1}`);
    });
    const headers = asTransmitted(raws[0] as Buffer)
      .toString('latin1')
      .split('\r\n\r\n')[0];
    assert.equal(out.top0, `${headers}\r\n`);
    assert.match(out.retr_deleted, /^-ERR message 1 already deleted/);
    assert.deepEqual(out.stat_after_dele, [2, (sizes[0] ?? 0) + (sizes[2] ?? 0)]);
    assert.match(out.quit, /^\+OK .*1 message deleted/);
    // RSET undid the first DELE; the second was carried out at QUIT.
    assert.deepEqual(await listIds(env, alice, ALICE), [ids[0], ids[2]]);
  });

  it('the wire: dot-stuffing and CRLF on RETR, pipelined commands answered in order', async () => {
    const ids = await listIds(env, alice, ALICE);
    const got = await converse(
      bridge.port,
      `USER ${ALICE}\r\nPASS ${alice}\r\nSTAT\r\nRETR 1\r\nTOP 2 1\r\nUIDL 2\r\nNOOP\r\nQUIT\r\n`,
      /\+OK bye.*\r\n$/,
    );
    const lines = got.split('\r\n');
    assert.match(lines[0] ?? '', /^\+OK mail-relay POP3 bridge ready/);
    assert.match(lines[1] ?? '', /^\+OK send the API token/);
    assert.match(lines[2] ?? '', new RegExp(`^\\+OK ${ALICE} has 2 messages`));
    assert.match(lines[3] ?? '', /^\+OK 2 \d+$/);
    assert.match(lines[4] ?? '', /^\+OK \d+ octets$/);
    // The first message's body on the wire: every dot-leading line doubled, the lone dot too.
    const body = got.slice(got.indexOf('Subject: dots'));
    assert.ok(body.includes('\r\n\r\n..one dot\r\n...two dots\r\n..\r\nend\r\n.\r\n'), body.slice(0, 200));
    // TOP 2 1 (the poplib test deleted the bare-LF one): the headers, the blank line, one body line.
    const top = Buffer.from(
      'Subject: third\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n.\r\n',
      'utf8',
    );
    assert.ok(got.includes(top.toString('latin1')), 'TOP 2 1');
    assert.ok(got.includes(`+OK 2 ${ids[1]}\r\n`), 'UIDL 2');
    assert.ok(got.includes('\r\n+OK\r\n+OK bye, 0 messages deleted\r\n'), 'NOOP then QUIT');
  });

  it('refuses a wrong token, a second session on the same mailbox, and commands out of place', async () => {
    const wrong = await converse(
      bridge.port,
      `USER ${ALICE}\r\nPASS mr_not_a_token\r\nQUIT\r\n`,
      /\+OK bye\r\n$/,
    );
    assert.match(wrong, /\r\n-ERR \[AUTH\] no such mailbox, or the token is not valid for it\r\n/);
    const otherMailbox = await converse(
      bridge.port,
      `USER ${BOB}\r\nPASS ${alice}\r\nQUIT\r\n`,
      /\+OK bye\r\n$/,
    );
    assert.match(otherMailbox, /-ERR \[AUTH\]/);

    const early = await converse(bridge.port, 'STAT\r\nPASS x\r\nFOO\r\nQUIT\r\n', /\+OK bye\r\n$/);
    assert.deepEqual(early.split('\r\n').slice(1, 4), [
      '-ERR USER and PASS first',
      '-ERR USER first',
      '-ERR USER and PASS first',
    ]);

    // One session holds the mailbox; a second is refused until the first quits.
    const holder = await login(bridge.port, ALICE, alice);
    const second = await converse(bridge.port, `USER ${ALICE}\r\nPASS ${alice}\r\nQUIT\r\n`, /\+OK bye\r\n$/);
    assert.match(second, /-ERR \[IN-USE\]/);
    holder.write('RETR 99\r\nDELE 1\r\nDELE 1\r\nQUIT\r\n');
    await holder.until(/bye/);
    assert.match(
      holder.received(),
      /-ERR no such message\r\n\+OK message 1 deleted\r\n-ERR message 1 already deleted\r\n\+OK bye, 1 message deleted\r\n/,
    );
    const third = await converse(bridge.port, `USER ${ALICE}\r\nPASS ${alice}\r\nQUIT\r\n`, /\+OK bye/);
    assert.match(third, /\+OK alice@example\.test has 1 messages/);
  });

  it('a wrong token for a mailbox in use hears [AUTH], not [IN-USE] (RFC 2449: IN-USE means the login was right)', async () => {
    const token = await env.token(BOB);
    const holder = await login(bridge.port, BOB, token);
    try {
      assert.match(holder.received(), /has \d+ messages/);
      for (const pass of ['mr_not_a_token', alice]) {
        const got = await converse(bridge.port, `USER ${BOB}\r\nPASS ${pass}\r\nQUIT\r\n`, /\+OK bye\r\n$/);
        assert.match(got, /\r\n-ERR \[AUTH\] no such mailbox, or the token is not valid for it\r\n/, pass);
      }
      const right = await converse(bridge.port, `USER ${BOB}\r\nPASS ${token}\r\nQUIT\r\n`, /\+OK bye\r\n$/);
      assert.match(right, /\r\n-ERR \[IN-USE\] the mailbox is open in another session\r\n/);
    } finally {
      holder.write('QUIT\r\n');
      await holder.closed;
    }
  });

  it('refuses a command with too many or too few arguments (RFC 1939 syntax), changing nothing', async () => {
    const token = await env.token(BOB);
    await env.deliver([BOB], Buffer.from('Subject: args\r\n\r\none\r\ntwo\r\n'));
    const commands = [
      'LIST 1 2',
      'UIDL 1 2',
      'RETR 1 2',
      'TOP 1 1 1',
      'DELE 1 x',
      'STAT x',
      'NOOP x',
      'RSET x',
      'CAPA x',
      'QUIT now',
      'RETR',
      'TOP 1',
      'DELE',
    ];
    const got = await converse(
      bridge.port,
      `USER ${BOB} extra\r\nUSER ${BOB}\r\nPASS ${token}\r\n${commands.join('\r\n')}\r\nSTAT\r\nLIST 1\r\nQUIT\r\n`,
      /\+OK bye.*\r\n$/,
    );
    const lines = got.split('\r\n');
    assert.deepEqual(lines.slice(1, 3), [
      '-ERR too many arguments; usage: USER <mailbox address>',
      '+OK send the API token for this mailbox as PASS',
    ]);
    assert.match(lines[3] ?? '', new RegExp(`^\\+OK ${BOB} has 1 messages`));
    assert.deepEqual(lines.slice(4, 4 + commands.length), [
      '-ERR too many arguments; usage: LIST [msg]',
      '-ERR too many arguments; usage: UIDL [msg]',
      '-ERR too many arguments; usage: RETR msg',
      '-ERR too many arguments; usage: TOP msg n',
      '-ERR too many arguments; usage: DELE msg',
      '-ERR too many arguments; usage: STAT',
      '-ERR too many arguments; usage: NOOP',
      '-ERR too many arguments; usage: RSET',
      '-ERR too many arguments; usage: CAPA',
      '-ERR too many arguments; usage: QUIT',
      '-ERR missing argument; usage: RETR msg',
      '-ERR missing argument; usage: TOP msg n',
      '-ERR missing argument; usage: DELE msg',
    ]);
    // Nothing was marked deleted, nothing sent, the session went on: STAT, LIST 1 and QUIT as before.
    const rest = lines.slice(4 + commands.length);
    assert.match(rest[0] ?? '', /^\+OK 1 \d+$/);
    assert.match(rest[1] ?? '', /^\+OK 1 \d+$/);
    assert.equal(rest[2], '+OK bye, 0 messages deleted');
    assert.equal((await listIds(env, token, BOB)).length, 1);
  });

  it('takes the API URL with or without /v1/; an API URL that is wrong is not passed off as a bad token', async () => {
    for (const url of [`${env.url}/v1/`, `${env.url}/v1`, `${env.url}//`]) {
      const other = await startPop3Bridge({ apiUrl: url, port: 0 });
      try {
        const r = await converse(other.port, `USER ${ALICE}\r\nPASS ${alice}\r\nQUIT\r\n`, /\+OK bye/);
        assert.match(r, /\+OK alice@example\.test has \d+ messages/, url);
      } finally {
        await other.close();
      }
    }
    const errors: unknown[] = [];
    const wrong = await startPop3Bridge({
      apiUrl: `${env.url}/api`,
      port: 0,
      onError: (e) => errors.push(e),
    });
    try {
      const r = await converse(wrong.port, `USER ${ALICE}\r\nPASS ${alice}\r\nQUIT\r\n`, /\+OK bye/);
      assert.match(
        r,
        /\r\n-ERR \[SYS\/PERM\] the bridge's API URL is wrong: not_found: no such endpoint: GET \/api\/v1\//,
      );
      assert.equal(errors.length, 1, 'and the bridge logs it');
    } finally {
      await wrong.close();
    }
  });

  it('ends a session whose token is revoked meanwhile, at its next read of mail', async () => {
    const token = await env.token(ALICE);
    const session = await login(bridge.port, ALICE, token);
    assert.equal(await revokeToken(env.runtime.index, token), true);
    session.write('STAT\r\nRETR 1\r\n');
    await session.closed;
    const got = session.received();
    assert.match(got, /\r\n\+OK 1 \d+\r\n-ERR \[AUTH\] the token is no longer valid for this mailbox\r\n$/);
  });

  it("a big message: RETR follows the API to its presigned URL; a TOP past the API's cap is cut by the bridge", async () => {
    const token = await env.token(CAROL);
    const line = `${'0123456789'.repeat(7)}abcdefgh`;
    // Bare LF and dot-leading lines: a cut TOP is sent as RETR is, with CRLF and dot-stuffing.
    const lines = Array.from({ length: 100_000 }, (_, i) => (i % 10 === 0 ? `.${line}` : line));
    const r = await env.deliver([CAROL], Buffer.from(`Subject: big\n\n${lines.join('\n')}\n`));
    const raw = await rawOf(env, token, CAROL, r.id);
    assert.ok(raw.length > 4 * 1024 * 1024, 'larger than the API serves without a redirect');
    const topTooLarge = await env.request(`/v1/mailboxes/${CAROL}/messages/${r.id}/top?lines=90000`, {
      token,
    });
    assert.equal(topTooLarge.status, 422, 'more than the API answers in one response');
    const got = await converse(
      bridge.port,
      `USER ${CAROL}\r\nPASS ${token}\r\nRETR 1\r\nTOP 1 90000\r\nTOP 1 2\r\nQUIT\r\n`,
      /\+OK bye.*\r\n$/,
    );
    const answers = multiLineAnswers(got);
    assert.deepEqual(
      answers.map((a) => a.status),
      [`+OK ${asTransmitted(raw).length} octets`, '+OK top of message follows', '+OK top of message follows'],
    );
    const onTheWire = (b: Buffer) =>
      asTransmitted(b)
        .toString('latin1')
        .replace(/(^|\r\n)\./g, '$1..');
    assert.equal(answers[0]?.body, onTheWire(raw), 'RETR');
    assert.equal(answers[1]?.body, onTheWire(referenceTop(raw, 90_000)), 'TOP 1 90000, cut by the bridge');
    assert.equal(answers[2]?.body, onTheWire(referenceTop(raw, 2)), 'TOP 1 2, from the API');
    assert.match(got, /\r\n\+OK bye/);
    // The cut ended the download of the rest of the message.
    await assertReleased(env, join(env.runtime.blobRoot, mailboxKeys.raw(CAROL, r.id)));
  });

  it('clients leaving in the middle of a big RETR leave no request to the API and no open blob behind', async () => {
    const token = await env.token(CAROL);
    const { n, blob, raw } = await deliverHuge(env, token);
    for (let i = 0; i < 6; i++) {
      const session = await login(bridge.port, CAROL, token);
      session.write(`RETR ${n}\r\n`);
      // Part of the message arrived: the API is streaming the blob through the bridge.
      await session.until(/octets\r\n[\s\S]{65536}/);
      session.destroy();
      await session.closed;
    }
    await assertReleased(env, blob);
    // The bridge still serves the whole message.
    const session = await login(bridge.port, CAROL, token);
    session.write(`RETR ${n}\r\nQUIT\r\n`);
    await session.until(/\r\n\.\r\n\+OK bye/);
    const got = session.received();
    const start = got.indexOf(`+OK ${raw.length} octets\r\n`) + `+OK ${raw.length} octets\r\n`.length;
    assert.equal(got.slice(start, got.indexOf('\r\n.\r\n', start) + 2), raw.toString('latin1'));
  });

  it('a client that stops reading mid-RETR is dropped at the idle timeout, and its API request with it', async () => {
    const quick = await startPop3Bridge({ apiUrl: env.url, port: 0, idleTimeoutMs: 300 });
    const token = await env.token(CAROL);
    const { n, blob } = await deliverHuge(env, token);
    // A small receive window, so the bridge's writes stall instead of filling the kernel's buffers.
    const script = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(('127.0.0.1', int(sys.argv[1])))
f = s.makefile('rb')
f.readline()
s.sendall(('USER %s\\r\\nPASS %s\\r\\nRETR %s\\r\\n' % (sys.argv[2], sys.argv[3], sys.argv[4])).encode())
f.readline(); f.readline(); f.readline(); f.read(65536)
print('stalled', flush=True)
sys.stdin.read()
`;
    const client = spawn('python3', ['-c', script, String(quick.port), CAROL, token, String(n)]);
    try {
      await new Promise<void>((resolve, reject) => {
        client.stdout.on('data', (d: Buffer) => d.toString().includes('stalled') && resolve());
        client.once('exit', (code) => reject(new Error(`python exited: ${code}`)));
      });
      await assertReleased(env, blob);
    } finally {
      client.kill();
      await quick.close();
    }
  });

  it('answers a flood of pipelined commands, every one, in order', async () => {
    const token = await env.token(ALICE);
    const got = await converse(
      bridge.port,
      `USER ${ALICE}\r\nPASS ${token}\r\n${'NOOP\r\nSTAT\r\n'.repeat(500)}QUIT\r\n`,
      /\+OK bye.*\r\n$/,
    );
    const answers = got.split('\r\n').slice(3, -2);
    assert.equal(answers.length, 1000);
    for (const [i, a] of answers.entries()) assert.match(a, i % 2 === 0 ? /^\+OK$/ : /^\+OK 1 \d+$/);
  });

  it('a message deleted behind the session: RETR says it is gone, DELE and QUIT still succeed', async () => {
    const token = await env.token(ALICE);
    const r = await env.deliver([ALICE], Buffer.from('Subject: short-lived\r\n\r\nbye\r\n'));
    const session = await login(bridge.port, ALICE, token);
    const n = (await listIds(env, token, ALICE)).indexOf(r.id) + 1;
    assert.ok(n > 0);
    const gone = await env.request(`/v1/mailboxes/${ALICE}/messages/${r.id}`, { token, method: 'DELETE' });
    assert.equal(gone.status, 204);
    session.write(`RETR ${n}\r\nDELE ${n}\r\nQUIT\r\n`);
    await session.until(/bye/);
    assert.match(
      session.received(),
      new RegExp(
        `-ERR message ${n} no longer exists\\r\\n\\+OK message ${n} deleted\\r\\n\\+OK bye, 1 message deleted`,
      ),
    );
    session.destroy();
  });

  it('logs out a session idle for longer than the limit, and frees its mailbox', async () => {
    const quick = await startPop3Bridge({ apiUrl: env.url, port: 0, idleTimeoutMs: 300 });
    try {
      const token = await env.token(ALICE);
      const session = await login(quick.port, ALICE, token);
      await session.closed;
      assert.match(session.received(), /has \d+ messages[^\r]*\r\n-ERR autologout: idle for too long\r\n$/);
      const again = await converse(quick.port, `USER ${ALICE}\r\nPASS ${token}\r\nQUIT\r\n`, /\+OK bye/);
      assert.match(again, /\+OK alice@example\.test has/);
    } finally {
      await quick.close();
    }
  });

  it('a message with CR-only line ends (classic Mac mail) is sent in CRLF lines, sized, stuffed and cut as sent', async () => {
    const token = await env.token(CAROL);
    // Longer than poplib's 2048-octet line limit: sent with its bare CRs, it was one line of all of it.
    const body = `${'.a dot-leading line\r'.repeat(120)}${'x'.repeat(60)}\r`;
    const raw = Buffer.from(`From: mac@remote.test\rTo: ${CAROL}\rSubject: classic Mac\r\r${body}`, 'latin1');
    const r = await env.deliver([CAROL], raw);
    const stored = await rawOf(env, token, CAROL, r.id);
    const n = (await listIds(env, token, CAROL)).indexOf(r.id) + 1;
    const script = `
import email, json, poplib, sys
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=20)
p.user(sys.argv[2]); p.pass_(sys.argv[3])
n = int(sys.argv[4])
out = {'list': p.list(n).decode()}
out['retr'] = b'\\r\\n'.join(p.retr(n)[1]).decode('latin1') + '\\r\\n'
out['subject'] = email.message_from_string(out['retr'])['Subject']
out['top0'] = b'\\r\\n'.join(p.top(n, 0)[1]).decode('latin1') + '\\r\\n'
out['top2'] = b'\\r\\n'.join(p.top(n, 2)[1]).decode('latin1') + '\\r\\n'
p.quit()
print(json.dumps(out))
`;
    const got = await python(script, [String(bridge.port), CAROL, token, String(n)]);
    assert.equal(got.code, 0, got.stderr);
    const out = JSON.parse(got.stdout) as Record<string, string>;
    // Every line end as CRLF: a bare CR is one, as on an SMTP wire (RFC 5322 §2.3 allows no other).
    const sent = stored.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
    assert.equal(out.retr, sent);
    assert.equal(out.list, `+OK ${n} ${sent.length}`, 'LIST counts the octets RETR sends');
    assert.equal(out.subject, 'classic Mac', 'the headers are headers');
    const headers = sent.slice(0, sent.indexOf('\r\n\r\n') + 4);
    assert.ok(headers.includes('Subject: classic Mac\r\n'));
    assert.equal(out.top0, headers, 'TOP 0: the headers and the blank line');
    assert.equal(out.top2, `${headers}.a dot-leading line\r\n.a dot-leading line\r\n`, 'TOP 2');
  });

  it("sends its answers without waiting for the client's ACKs (TCP_NODELAY)", async () => {
    // Each answer is several writes (status, message, `.` line): under Nagle's algorithm the last one
    // waits for the client to ACK the one before, and a client with nothing to send delays its ACK
    // (40 ms on Linux), so every RETR of a small message took ~45 ms (2,000 took 94 s, not 9).
    const calls: { port: number | undefined; on: boolean }[] = [];
    const original = Socket.prototype.setNoDelay;
    const spy = mock.method(Socket.prototype, 'setNoDelay', function (this: Socket, on?: boolean) {
      calls.push({ port: this.localPort, on: on ?? true });
      return original.call(this, on);
    });
    try {
      const got = await converse(bridge.port, 'NOOP\r\nQUIT\r\n', /\+OK bye\r\n$/);
      assert.match(got, /^\+OK mail-relay POP3 bridge ready\r\n/);
    } finally {
      spy.mock.restore();
    }
    assert.deepEqual(
      calls.filter((c) => c.port === bridge.port),
      [{ port: bridge.port, on: true }],
      "the bridge's end of the connection",
    );
  });

  it('keeps the mailbox locked while QUIT deletes, even when the client has left (UPDATE state)', async () => {
    const token = await env.token(BOB);
    const r = await env.deliver([BOB], Buffer.from('Subject: to delete\r\n\r\nbye\r\n'));
    // The API behind a proxy that holds DELETE requests until told to let them through.
    const held: (() => void)[] = [];
    let deleting: () => void = () => {};
    const deleteSeen = new Promise<void>((resolve) => {
      deleting = resolve;
    });
    const proxy = await startApiProxy(env, async (req) => {
      if (req.method === 'DELETE' || req.url?.endsWith('/messages/delete')) {
        deleting();
        await new Promise<void>((resolve) => held.push(resolve));
      }
      return false;
    });
    const gated = await startPop3Bridge({ apiUrl: proxy.url, port: 0 });
    try {
      const n = (await listIds(env, token, BOB)).indexOf(r.id) + 1;
      const leaving = await login(gated.port, BOB, token);
      leaving.write(`DELE ${n}\r\nQUIT\r\n`);
      await deleteSeen;
      leaving.destroy();
      await leaving.closed;
      // The client is gone, its deletion not done: another session must not list the message.
      const meanwhile = await converse(
        gated.port,
        `USER ${BOB}\r\nPASS ${token}\r\nQUIT\r\n`,
        /\+OK bye\r\n$/,
      );
      assert.match(meanwhile, /\r\n-ERR \[IN-USE\] /);
      for (const release of held.splice(0)) release();
      let after = '';
      for (let i = 0; i < 200 && !/has \d+ messages/.test(after); i++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        after = await converse(gated.port, `USER ${BOB}\r\nPASS ${token}\r\nQUIT\r\n`, /\+OK bye[^\r]*\r\n$/);
      }
      assert.match(after, /has \d+ messages/, 'the lock is released once QUIT is done');
      assert.ok(!(await listIds(env, token, BOB)).includes(r.id), 'and the message was deleted');
    } finally {
      for (const release of held.splice(0)) release();
      await gated.close();
      await proxy.close();
    }
  });

  it('QUIT deletes 1,200 marked messages with the batch delete, a request per 1,000, and says how many', async () => {
    const token = await env.token(CAROL);
    const earlier = await listIds(env, token, CAROL);
    const mine: string[] = [];
    for (let i = 0; i < 1200; i += 8) {
      const eight = Array.from({ length: 8 }, (_, j) =>
        env.deliver([CAROL], Buffer.from(`Subject: bulk ${i + j}\r\n\r\nbody\r\n`)),
      );
      for (const r of await Promise.all(eight)) mine.push(r.id);
    }
    mine.sort();
    const requests: string[] = [];
    const proxy = await startApiProxy(env, (req) => {
      if (req.method !== 'GET')
        requests.push(`${req.method} ${req.url?.replace(/^.*\/messages/, '…/messages')}`);
      return false;
    });
    const counted = await startPop3Bridge({ apiUrl: proxy.url, port: 0 });
    try {
      const session = await login(counted.port, CAROL, token);
      assert.match(session.received(), new RegExp(`has ${earlier.length + 1200} messages`));
      // Oldest first: ours follow the earlier ones. All of ours but the newest are marked.
      const dele = Array.from({ length: 1199 }, (_, i) => `DELE ${earlier.length + i + 1}\r\n`).join('');
      session.write(`${dele}QUIT\r\n`);
      await session.until(/bye[^\r]*\r\n/);
      assert.match(session.received(), /\+OK bye, 1199 messages deleted\r\n$/);
      await session.closed;
      assert.deepEqual(requests, ['POST …/messages/delete', 'POST …/messages/delete']);
      assert.deepEqual(await listIds(env, token, CAROL), [...earlier, mine.at(-1)]);
    } finally {
      await counted.close();
      await proxy.close();
    }
  });

  it('QUIT against an API without the batch delete (an older stack) deletes one by one', async () => {
    const token = await env.token(BOB);
    const mine = [];
    for (let i = 0; i < 3; i++)
      mine.push(await env.deliver([BOB], Buffer.from(`Subject: old api ${i}\r\n\r\nx\r\n`)));
    let batchTries = 0;
    const proxy = await startApiProxy(env, (req, res) => {
      if (!req.url?.endsWith('/messages/delete')) return false;
      // What an API from before it answers: a path it serves (`/messages/{id}`) with another method.
      batchTries++;
      res.writeHead(405, { 'content-type': 'application/json', allow: 'GET, PATCH, DELETE' });
      res.end(JSON.stringify({ error: { code: 'method_not_allowed', message: 'POST is not allowed here' } }));
      return true;
    });
    const old = await startPop3Bridge({ apiUrl: proxy.url, port: 0 });
    try {
      for (let round = 0; round < 2; round++) {
        const ids = await listIds(env, token, BOB);
        const target = mine.pop();
        assert.ok(target !== undefined);
        const n = ids.indexOf(target.id) + 1;
        const session = await login(old.port, BOB, token);
        session.write(`DELE ${n}\r\nQUIT\r\n`);
        await session.until(/bye[^\r]*\r\n/);
        assert.match(session.received(), /\+OK bye, 1 message deleted\r\n$/);
        await session.closed;
        assert.ok(!(await listIds(env, token, BOB)).includes(target.id), `round ${round}: deleted`);
      }
      assert.equal(batchTries, 2, 'each session tries the batch delete once');
    } finally {
      await old.close();
      await proxy.close();
    }
  });

  it('closes a session whose line never ends', async () => {
    const got = await converse(bridge.port, 'X'.repeat(10_000), /-ERR line too long\r\n/);
    assert.match(got, /-ERR line too long/);
  });
});

/** Every line end (CRLF, bare LF, bare CR) as CRLF, as the POP3 wire has them. */
function wireLines(b: Buffer): Buffer {
  return Buffer.from(b.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');
}

describe('POP3 bridge: an internationalized domain in the user name', () => {
  const MAILBOX = 'info@xn--mnchen-3ya.de';
  let env: ApiTestEnv;
  let bridge: Pop3Bridge;
  before(async () => {
    env = await startApiTestEnv({ config: { domains: ['xn--mnchen-3ya.de'], mailboxes: [MAILBOX] } });
    await env.deliver([MAILBOX], Buffer.from('From: a@remote.test\r\nSubject: grüße\r\n\r\nhi\r\n'));
    bridge = await startPop3Bridge({ apiUrl: env.url, port: 0 });
  });
  after(async () => {
    await bridge?.close();
    await env?.close();
  });

  it('USER in Unicode (sent as UTF-8, any case) is the same mailbox as its xn-- form, lock included', async () => {
    const token = await env.token(MAILBOX);
    const holder = await login(bridge.port, 'Info@München.de', token);
    try {
      assert.match(holder.received(), /\+OK info@xn--mnchen-3ya\.de has 1 messages/);
      const other = await converse(
        bridge.port,
        `USER ${MAILBOX}\r\nPASS ${token}\r\nQUIT\r\n`,
        /\+OK bye\r\n$/,
      );
      assert.match(other, /-ERR \[IN-USE\]/, 'one mailbox, one lock, whichever form');
    } finally {
      holder.write('QUIT\r\n');
      await holder.closed;
    }
  });
});

describe('the shared corpus through the POP3 bridge', {
  skip: !requireOrAnnounce(
    corpusDir() !== null,
    'corpus POP3 suite',
    'needs ../shared/corpus next to the clone, or MAIL_RELAY_CORPUS=/path',
  ),
}, () => {
  const MAILBOX = 'corpus@example.test';
  let env: ApiTestEnv;
  let bridge: Pop3Bridge;
  before(async () => {
    env = await startApiTestEnv({ config: { domains: ['example.test'], mailboxes: ['*@example.test'] } });
    for (const f of corpusFiles(corpusDir() ?? '')) await env.deliver([MAILBOX], readFileSync(f.path));
    bridge = await startPop3Bridge({ apiUrl: env.url, port: 0 });
  });
  after(async () => {
    await bridge?.close();
    await env?.close();
  });

  it('every message: LIST counts the octets RETR sends, in CRLF lines; TOP 0 and TOP 3 are cut as sent', async () => {
    const token = await env.token(MAILBOX);
    const ids = await listIds(env, token, MAILBOX);
    assert.ok(ids.length >= 400, `${ids.length} messages`);
    const commands = ids.map(
      (_, i) => `LIST ${i + 1}\r\nRETR ${i + 1}\r\nTOP ${i + 1} 0\r\nTOP ${i + 1} 3\r\n`,
    );
    const got = await converse(
      bridge.port,
      `USER ${MAILBOX}\r\nPASS ${token}\r\n${commands.join('')}QUIT\r\n`,
      /\+OK bye.*\r\n$/,
      120_000,
    );
    const sizes = [...got.matchAll(/^\+OK (\d+) (\d+)\r$/gm)].map((m) => Number(m[2]));
    const answers = multiLineAnswers(got);
    assert.equal(sizes.length, ids.length);
    assert.equal(answers.length, ids.length * 3);
    const stuffed = (b: Buffer) => {
      const text = b.toString('latin1');
      return (text === '' || text.endsWith('\r\n') ? text : `${text}\r\n`).replace(/(^|\r\n)\./g, '$1..');
    };
    for (const [i, id] of ids.entries()) {
      const sent = wireLines(await rawOf(env, token, MAILBOX, id));
      const [retr, top0, top3] = answers.slice(i * 3, i * 3 + 3);
      const what = `message ${i + 1} (${id})`;
      assert.equal(retr?.body, stuffed(sent), `${what}: RETR`);
      assert.equal(retr?.status, `+OK ${sizes[i]} octets`, `${what}: RETR's size`);
      assert.equal(
        sizes[i],
        sent.length === 0 || sent.toString('latin1').endsWith('\r\n') ? sent.length : sent.length + 2,
        `${what}: LIST`,
      );
      assert.equal(top0?.body, stuffed(referenceTop(sent, 0)), `${what}: TOP 0`);
      assert.equal(top3?.body, stuffed(referenceTop(sent, 3)), `${what}: TOP 3`);
    }
  });
});

/**
 * Each stored message is in what a client delivered, with LF line endings (as mbox and Maildir
 * hold them) and without our Return-Path: clients write their own, from the envelope they saw.
 */
function assertDelivered(got: string, raws: readonly Buffer[]): void {
  for (const raw of raws) {
    const lf = raw
      .toString('latin1')
      .replace(/\r\n/g, '\n')
      .replace(/^Return-Path: [^\n]*\n/, '');
    assert.ok(got.includes(lf), `delivered:\n${lf}\n--- in:\n${got}`);
  }
}

describe('POP3 bridge with real clients: mpop, fetchmail, getmail6', () => {
  let env: ApiTestEnv;
  let bridge: Pop3Bridge;
  before(async () => {
    env = await startApiTestEnv();
    bridge = await startPop3Bridge({ apiUrl: env.url, port: 0 });
  });
  after(async () => {
    await bridge?.close();
    await env?.close();
  });

  /**
   * Three messages (one with a dot-leading line, one with bare LF line ends) into `mailbox`; `client`
   * fetches them into `dir` and returns everything it delivered as one text; then each stored message
   * must be in it (with LF line endings, as mbox and Maildir hold them) and the mailbox empty (the
   * clients delete).
   */
  async function fetchAll(mailbox: string, client: (dir: string, token: string) => Promise<string>) {
    const token = await env.token(mailbox);
    for (const [i, b] of ['first\r\n.dot line\r\n', 'second\r\n'].entries()) {
      await env.deliver(
        [mailbox],
        Buffer.from(`From: x${i}@remote.test\r\nTo: ${mailbox}\r\nSubject: m${i}\r\n\r\n${b}`),
      );
    }
    await env.deliver(
      [mailbox],
      Buffer.from(`From: x2@remote.test\nTo: ${mailbox}\nSubject: m2\n\nbare\nLF\n`),
    );
    const ids = await listIds(env, token, mailbox);
    const raws = await Promise.all(ids.map((id) => rawOf(env, token, mailbox, id)));
    const dir = mkdtempSync(join(tmpdir(), 'mr-pop3-client-'));
    try {
      const got = await client(dir, token);
      assertDelivered(got, raws);
      assert.deepEqual(await listIds(env, token, mailbox), [], 'deleted after retrieval');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('mpop retrieves every message into an mbox, then deletes them', async (t) => {
    if (!requireOrAnnounce(hasCommand('mpop'), 'POP3 bridge with mpop', 'apt-get install mpop'))
      return t.skip('no mpop');
    await fetchAll(BOB, async (dir, token) => {
      const mbox = join(dir, 'inbox.mbox');
      const rc = join(dir, 'mpoprc');
      const lines = ['account bridge', 'host 127.0.0.1', `port ${bridge.port}`, 'tls off', 'auth user'];
      lines.push(
        `user ${BOB}`,
        `password ${token}`,
        `delivery mbox ${mbox}`,
        'keep off',
        `uidls_file ${join(dir, 'uidls')}`,
      );
      writeFileSync(rc, `${lines.join('\n')}\n`, { mode: 0o600 });
      writeFileSync(mbox, '');
      const r = await run('mpop', ['-C', rc, '-q', 'bridge'], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      return readFileSync(mbox, 'latin1');
    });
  });

  it('fetchmail retrieves every message through an MDA, then deletes them', async (t) => {
    if (
      !requireOrAnnounce(hasCommand('fetchmail'), 'POP3 bridge with fetchmail', 'apt-get install fetchmail')
    )
      return t.skip('no fetchmail');
    await fetchAll(ALICE, async (dir, token) => {
      const out = join(dir, 'delivered.txt');
      const rc = join(dir, 'fetchmailrc');
      writeFileSync(
        rc,
        `set no syslog\npoll 127.0.0.1 protocol pop3 port ${bridge.port} no uidl\n` +
          `  user "${ALICE}" password "${token}" sslproto '' no rewrite fetchall no keep\n` +
          `  mda "/bin/sh -c 'cat >> ${out}'"\n`,
        { mode: 0o600 },
      );
      const r = await run('fetchmail', ['-f', rc, '--nodetach', '--idfile', join(dir, 'ids')], {
        env: { ...process.env, HOME: dir },
        timeoutMs: 30_000,
      });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      return readFileSync(out, 'latin1');
    });
  });

  it('fetchmail with keep (mail left on the server) fetches every message by TOP n 99999999', async (t) => {
    if (
      !requireOrAnnounce(hasCommand('fetchmail'), 'POP3 bridge with fetchmail', 'apt-get install fetchmail')
    )
      return t.skip('no fetchmail');
    const mailbox = 'carol@example.test';
    const token = await env.token(mailbox);
    for (const [i, b] of ['first\r\n.dot line\r\n', 'second\r\n'].entries()) {
      await env.deliver(
        [mailbox],
        Buffer.from(`From: x${i}@remote.test\r\nTo: ${mailbox}\r\nSubject: k${i}\r\n\r\n${b}`),
      );
    }
    const ids = await listIds(env, token, mailbox);
    const raws = await Promise.all(ids.map((id) => rawOf(env, token, mailbox, id)));
    const dir = mkdtempSync(join(tmpdir(), 'mr-pop3-keep-'));
    try {
      const out = join(dir, 'delivered.txt');
      const rc = join(dir, 'fetchmailrc');
      writeFileSync(
        rc,
        `set no syslog\npoll 127.0.0.1 protocol pop3 port ${bridge.port} uidl\n` +
          `  user "${mailbox}" password "${token}" sslproto '' no rewrite keep\n` +
          `  mda "/bin/sh -c 'cat >> ${out}'"\n`,
        { mode: 0o600 },
      );
      const r = await run('fetchmail', ['-v', '-f', rc, '--nodetach', '--idfile', join(dir, 'ids')], {
        env: { ...process.env, HOME: dir },
        timeoutMs: 30_000,
      });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(
        r.stdout + r.stderr,
        /POP3> TOP 1 99999999/,
        'fetchmail fetched by TOP, as it does with keep',
      );
      const got = readFileSync(out, 'latin1');
      assertDelivered(got, raws);
      assert.deepEqual(await listIds(env, token, mailbox), ids, 'kept on the server');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      for (const id of ids) {
        await env.request(`/v1/mailboxes/${mailbox}/messages/${id}`, { token, method: 'DELETE' });
      }
    }
  });

  it('getmail6 retrieves every message into a Maildir, then deletes them', async (t) => {
    if (!requireOrAnnounce(hasCommand('getmail'), 'POP3 bridge with getmail6', 'apt-get install getmail6'))
      return t.skip('no getmail6');
    await fetchAll('carol@example.test', async (dir, token) => {
      const maildir = join(dir, 'Maildir');
      for (const sub of ['cur', 'new', 'tmp'])
        mkdirSync(join(maildir, sub), { recursive: true, mode: 0o777 });
      // getmail6 will not deliver as root: when the tests run as root it delivers as nobody.
      for (const d of [dir, maildir, ...['cur', 'new', 'tmp'].map((sub) => join(maildir, sub))])
        chmodSync(d, 0o777);
      const rc = join(dir, 'getmailrc');
      writeFileSync(
        rc,
        [
          '[retriever]',
          'type = SimplePOP3Retriever',
          'server = 127.0.0.1',
          `port = ${bridge.port}`,
          'username = carol@example.test',
          `password = ${token}`,
          '[destination]',
          'type = Maildir',
          `path = ${maildir}/`,
          ...(process.getuid?.() === 0 ? ['user = nobody'] : []),
          '[options]',
          'read_all = true',
          'delete = true',
          'verbose = 0',
          '',
        ].join('\n'),
      );
      const r = await run('getmail', ['--getmaildir', dir, '--rcfile', rc], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      return readdirSync(join(maildir, 'new'))
        .map((f) => readFileSync(join(maildir, 'new', f), 'latin1'))
        .join('\n');
    });
  });

  it('mail imported from an mbox keeps its headers through mpop into an mbox, as Python reads it', async (t) => {
    if (!requireOrAnnounce(hasCommand('mpop'), 'POP3 bridge with mpop', 'apt-get install mpop'))
      return t.skip('no mpop');
    const dir = mkdtempSync(join(tmpdir(), 'mr-pop3-import-'));
    try {
      // An export of two messages, imported into alice's mailbox.
      const exported = join(dir, 'export.mbox');
      writeFileSync(
        exported,
        ['10:00:00', '11:00:00']
          .map(
            (time, i) =>
              `From someone@remote.test Mon Jan  6 ${time} 2025\nFrom: someone@remote.test\n` +
              `To: ${ALICE}\nSubject: exported ${i}\n\nhi\n\n`,
          )
          .join(''),
      );
      const summary = await importFiles(env.runtime, [exported]);
      assert.match(summary.line, /: delivered 2,/);
      const token = await env.token(ALICE);
      const mbox = join(dir, 'inbox.mbox');
      const rc = join(dir, 'mpoprc');
      const lines = ['account bridge', 'host 127.0.0.1', `port ${bridge.port}`, 'tls off', 'auth user'];
      lines.push(`user ${ALICE}`, `password ${token}`, `delivery mbox ${mbox}`, 'keep off');
      writeFileSync(rc, `${[...lines, `uidls_file ${join(dir, 'uidls')}`].join('\n')}\n`, { mode: 0o600 });
      writeFileSync(mbox, '');
      const r = await run('mpop', ['-C', rc, '-q', 'bridge'], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      // mpop writes mboxrd: a `From ` line left among the headers became `>From `, where readers end
      // the headers, and From, To and Subject were lost.
      const read = await python(
        'import mailbox, sys\n' +
          'for m in mailbox.mbox(sys.argv[1]):\n' +
          '    print(m["subject"], "|", m["from"], "|", m["to"], "|", len(m.defects))\n',
        [mbox],
      );
      assert.equal(read.code, 0, read.stderr);
      assert.deepEqual(read.stdout.trim().split('\n').sort(), [
        `exported 0 | someone@remote.test | ${ALICE} | 0`,
        `exported 1 | someone@remote.test | ${ALICE} | 0`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
