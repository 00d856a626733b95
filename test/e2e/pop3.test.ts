/**
 * The POP3 bridge (`mail-relay pop3`) in front of the real local API, with real clients: python3's
 * poplib, mpop, fetchmail and getmail6 (apt), and a raw socket for what clients do not exercise
 * (pipelining, errors, locks).
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { revokeToken } from '../../functions/api/auth.ts';
import { type Pop3Bridge, startPop3Bridge } from '../../functions/local/pop3-bridge.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { hasCommand, requireOrAnnounce } from '../helpers/env.ts';
import { python, run } from '../helpers/process.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';

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

/**
 * A scripted POP3 conversation over a raw socket: sends `input` at once, returns every byte received
 * once the end of it matches `waitFor`.
 */
function converse(port: number, input: string, waitFor: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no ${waitFor} in: ${got}`));
    }, 10_000);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (waitFor.test(got.slice(-512))) {
        clearTimeout(timer);
        socket.end();
        resolve(got);
      }
    });
    socket.on('error', reject);
    socket.once('data', () => socket.write(input));
  });
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
    bridge = await startPop3Bridge({ apiUrl: env.url, port: 0 });
  });
  after(async () => {
    await bridge?.close();
    await env?.close();
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
    assert.match(out.quit, /^\+OK .*1 messages deleted/);
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
      /-ERR no such message\r\n\+OK message 1 deleted\r\n-ERR message 1 already deleted\r\n\+OK bye, 1 messages deleted\r\n/,
    );
    const third = await converse(bridge.port, `USER ${ALICE}\r\nPASS ${alice}\r\nQUIT\r\n`, /\+OK bye/);
    assert.match(third, /\+OK alice@example\.test has 1 messages/);
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

  it('a big message: RETR follows the API to its presigned URL and streams it; a TOP too large says why', async () => {
    const CAROL = 'carol@example.test';
    const token = await env.token(CAROL);
    const line = `${'0123456789'.repeat(7)}abcdefgh`;
    const body = Buffer.from(`Subject: big\r\n\r\n${`${line}\r\n`.repeat(100_000)}`);
    const r = await env.deliver([CAROL], body);
    const raw = await rawOf(env, token, CAROL, r.id);
    assert.ok(raw.length > 4 * 1024 * 1024, 'larger than the API serves without a redirect');
    const got = await converse(
      bridge.port,
      `USER ${CAROL}\r\nPASS ${token}\r\nRETR 1\r\nTOP 1 90000\r\nQUIT\r\n`,
      /\+OK bye.*\r\n$/,
    );
    const start = got.indexOf(`+OK ${raw.length} octets\r\n`);
    assert.ok(start > 0, got.slice(0, 300));
    const sent = got.slice(
      start + `+OK ${raw.length} octets\r\n`.length,
      got.indexOf('\r\n.\r\n', start) + 2,
    );
    assert.equal(sent, raw.toString('latin1'), 'RETR sent the stored bytes');
    assert.match(got, /\r\n\.\r\n-ERR top_too_large: [^\r\n]+\r\n\+OK bye/);
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
        `-ERR message ${n} no longer exists\\r\\n\\+OK message ${n} deleted\\r\\n\\+OK bye, 1 messages deleted`,
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

  it('closes a session whose line never ends', async () => {
    const got = await converse(bridge.port, 'X'.repeat(10_000), /-ERR line too long\r\n/);
    assert.match(got, /-ERR line too long/);
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
});
