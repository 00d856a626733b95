/**
 * HTTP semantics of the mailbox API as real clients meet them (RFC 9110, 9111, 9112, 6750): the
 * challenge of a 401, a browser's cache shared by two tokens, HEAD answered with the GET's
 * Content-Length, and requests the local server used to refuse with an empty body or a wrong status
 * (HTTP/1.0 without Host, a request target that is no URL, a method it does not know). Over real
 * HTTP to the local server (curl, fetch, a raw socket, headless Chromium) and, where the app itself
 * answers, through the API Lambda handler with API Gateway HTTP API (v2) events.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { createMailboxApp } from '../../functions/api/mailbox-app.ts';
import { createSendApp } from '../../functions/api/send-app.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { httpApiHandler } from '../../functions/handlers/http-api.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';
import { httpApiEvent } from '../helpers/aws-events.ts';
import { chromiumAvailable, launchChromium } from '../helpers/browser.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { run } from '../helpers/process.ts';

const ALICE = 'alice@example.test';
const A = `/v1/mailboxes/${ALICE}`;

/** Sends `request` as bytes on a new connection; the whole answer, once the server closes or goes quiet. */
function rawExchange(port: number, request: string, quietMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(request));
    const chunks: Buffer[] = [];
    const done = () => {
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    let timer = setTimeout(done, quietMs);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      clearTimeout(timer);
      timer = setTimeout(done, quietMs);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      done();
    });
    socket.on('error', reject);
  });
}

/** Status line, lower-cased headers and body of a raw HTTP/1.x answer. */
function parseAnswer(text: string): { status: number; headers: Map<string, string>; body: string } {
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no complete answer: ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: text.slice(end + 4) };
}

describe('HTTP semantics of the mailbox API', () => {
  let env: ApiTestEnv;
  let alice: string;
  let admin: string;
  let id: string;
  let partId: string;

  before(async () => {
    env = await startApiTestEnv();
    alice = await env.token(ALICE);
    admin = await env.token(null, { admin: true });
    await env.deliver([ALICE], readFileSync(join(PROJECT_ROOT, 'test/fixtures/mixed-attachment.eml')));
    const list = (await (await env.request(`${A}/messages`, { token: alice })).json()) as {
      items: { id: string }[];
    };
    id = list.items[0]?.id ?? '';
    const detail = (await (await env.request(`${A}/messages/${id}`, { token: alice })).json()) as {
      attachments: { partId: string }[];
    };
    partId = detail.attachments[0]?.partId ?? '';
    assert.ok(id !== '' && partId !== '');
  });
  after(async () => {
    await env?.close();
  });

  describe('a 401 says how to authenticate (WWW-Authenticate, RFC 9110 §11.6.1, RFC 6750 §3)', () => {
    const expectations = [
      { what: 'no token', authorization: undefined, challenge: 'Bearer realm="mail-relay"' },
      {
        what: 'a malformed token',
        authorization: 'Bearer not-a-token',
        challenge: /^Bearer realm="mail-relay", error="invalid_token"/,
      },
      {
        what: 'an unknown token',
        authorization: `Bearer mr_${'A'.repeat(43)}`,
        challenge: /^Bearer realm="mail-relay", error="invalid_token"/,
      },
    ] as const;

    it('over HTTP, on every kind of route that needs a token', async () => {
      for (const path of [A, `${A}/messages/${id}/raw`, '/v1/me', '/v1/mailboxes']) {
        for (const e of expectations) {
          const res = await fetch(`${env.url}${path}`, {
            headers: e.authorization === undefined ? {} : { Authorization: e.authorization },
          });
          assert.equal(res.status, 401, `${path} with ${e.what}`);
          assert.equal((await errorOf(res)).code, 'unauthorized');
          const challenge = res.headers.get('www-authenticate') ?? '';
          if (typeof e.challenge === 'string') assert.equal(challenge, e.challenge, `${path} with ${e.what}`);
          else assert.match(challenge, e.challenge, `${path} with ${e.what}`);
        }
      }
    });

    it('through the API Lambda handler (API Gateway HTTP API events)', async () => {
      const handler = httpApiHandler(
        createMailboxApp({ index: env.runtime.index, blobs: env.api.blobs, logError: () => {} }),
      );
      for (const e of expectations) {
        const r = await handler(
          httpApiEvent({
            method: 'GET',
            path: A,
            headers: e.authorization === undefined ? {} : { authorization: e.authorization },
          }),
        );
        assert.equal(r.statusCode, 401);
        const headers = new Headers(Object.entries(r.headers ?? {}).map(([k, v]) => [k, String(v)]));
        const challenge = headers.get('www-authenticate') ?? '';
        if (typeof e.challenge === 'string') assert.equal(challenge, e.challenge, e.what);
        else assert.match(challenge, e.challenge, e.what);
      }
    });

    it('curl -i shows the challenge and the JSON error', async () => {
      const r = await run('curl', ['-s', '-i', `${env.url}${A}`]);
      assert.match(r.stdout, /^HTTP\/1\.1 401 /);
      assert.match(r.stdout, /\r\nwww-authenticate: Bearer realm="mail-relay"\r\n/i);
      assert.match(r.stdout, /\{"error":\{"code":"unauthorized"/);
    });
  });

  it("does not let a browser's cache answer one token's request with what another token read (Vary: Authorization)", {
    skip: !chromiumAvailable('the browser cache test'),
  }, async () => {
    const bob = await env.token('bob@example.test');
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(`${env.url}/v1/health`);
      // The web inbox's way: fetch with the bearer token. The admin reads alice's raw message (immutable,
      // so a cache may keep it a year); then bob's token asks for the same URL in the same browser.
      // A string, not a function: tsx's helpers (`__name`) do not exist in the page.
      const statuses = await page.evaluate(`(async () => {
          const get = async (token) =>
            (await fetch(${JSON.stringify(`${env.url}${A}/messages/${id}/raw`)}, {
              headers: { Authorization: 'Bearer ' + token },
            })).status;
          return [await get(${JSON.stringify(admin)}), await get(${JSON.stringify(admin)}), await get(${JSON.stringify(bob)})];
        })()`);
      assert.deepEqual(statuses, [200, 200, 403]);
    } finally {
      await browser.close();
    }
    const res = await env.request(`${A}/messages/${id}/raw`, { token: alice });
    assert.match(res.headers.get('vary') ?? '', /\bAuthorization\b/);
    await res.arrayBuffer();
    const stat = await env.request(A, { token: alice });
    assert.match(stat.headers.get('vary') ?? '', /\bAuthorization\b/);
    await stat.arrayBuffer();
  });

  it("answers HEAD with the GET's headers, Content-Length included, and no body (RFC 9110 §9.3.2)", async () => {
    const paths = [
      { path: '/v1/health' },
      { path: '/v1/openapi.json' },
      { path: '/v1/me', token: alice },
      { path: '/v1/mailboxes', token: admin },
      { path: A, token: alice },
      { path: `${A}/messages?limit=5`, token: alice },
      { path: `${A}/messages/${id}`, token: alice },
      { path: `${A}/messages/${id}/raw`, token: alice },
      { path: `${A}/messages/${id}/top?lines=2`, token: alice },
      { path: `${A}/messages/${id}/parts/${partId}`, token: alice },
      { path: `${A}/messages/NOT-AN-ID`, token: alice },
      { path: A },
      { path: '/inbox/' },
    ];
    for (const { path, token } of paths) {
      const auth = token === undefined ? [] : ['-H', `Authorization: Bearer ${token}`];
      const get = await run('curl', [
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code} %{size_download}',
        ...auth,
        `${env.url}${path}`,
      ]);
      const [getStatus, getBytes] = get.stdout.split(' ');
      // curl -I: HEAD, printing the headers only.
      const head = await run('curl', ['-s', '-I', ...auth, `${env.url}${path}`]);
      const headAnswer = parseAnswer(head.stdout);
      assert.equal(String(headAnswer.status), getStatus, `HEAD ${path}`);
      assert.equal(headAnswer.headers.get('content-length'), getBytes, `HEAD ${path}: ${head.stdout}`);
    }
    // The body is not sent (a raw socket reads what curl -I would not).
    const raw = parseAnswer(
      await rawExchange(
        env.api.port,
        `HEAD ${A} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice}\r\nConnection: close\r\n\r\n`,
      ),
    );
    assert.equal(raw.status, 200);
    assert.ok(Number(raw.headers.get('content-length')) > 0);
    assert.equal(raw.body, '');
  });

  it('a HEAD of a presigned download opens no file: descriptors do not pile up until a garbage collection', async () => {
    // Large enough to be a file of its own (small blobs live in the store's SQLite rows).
    const line = `${'x'.repeat(76)}\r\n`;
    await env.deliver(
      [ALICE],
      Buffer.from(`From: a@remote.test\r\nTo: ${ALICE}\r\nSubject: large\r\n\r\n${line.repeat(3000)}`),
    );
    const page = (await (await env.request(`${A}/messages?q=large`, { token: alice })).json()) as {
      items: { id: string }[];
    };
    const key = mailboxKeys.raw(ALICE, page.items[0]?.id ?? '');
    const size = (await env.api.blobs.head(key))?.size ?? -1;
    const url = await env.api.blobs.presign(key, { expiresIn: 60, method: 'HEAD' });
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    for (let i = 0; i < 40; i += 1) {
      const res = await fetch(url, { method: 'HEAD' });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-length'), String(size));
      await res.arrayBuffer();
    }
    // Each HEAD streamed the file into a body that hono then dropped, unread and unclosed.
    assert.ok(open() - before < 10, `${open() - before} more descriptors open after 40 HEADs`);
  });

  it('evaluates If-Match before a PATCH or DELETE changes anything, and on the bytes (RFC 9110 §13.1.1)', async () => {
    const M = `${A}/messages/${id}`;
    const json = { 'Content-Type': 'application/json' };
    const seen = async () =>
      ((await (await env.request(M, { token: alice })).json()) as { seen: boolean }).seen;
    assert.equal(await seen(), false);
    // A client that believes it guards its write with the raw message's ETag is told it cannot.
    const guarded = await env.request(M, {
      method: 'PATCH',
      token: alice,
      headers: { ...json, 'If-Match': `"${id}"` },
      body: '{"seen":true}',
    });
    assert.equal(guarded.status, 412);
    assert.equal((await errorOf(guarded)).code, 'precondition_failed');
    assert.equal(await seen(), false, 'a PATCH refused by If-Match changed the flag');
    const deleted = await env.request(M, { method: 'DELETE', token: alice, headers: { 'If-Match': '"x"' } });
    assert.equal(deleted.status, 412);
    await deleted.arrayBuffer();
    assert.equal((await env.request(`${M}/raw`, { token: alice, method: 'HEAD' })).status, 200);
    // `*`: while the message exists.
    const star = await env.request(M, {
      method: 'PATCH',
      token: alice,
      headers: { ...json, 'If-Match': '*' },
      body: '{"seen":false}',
    });
    assert.equal(star.status, 200);
    await star.arrayBuffer();
    // If-Unmodified-Since has no modification date to compare with (no Last-Modified): ignored (§13.1.4).
    const since = await env.request(M, {
      method: 'PATCH',
      token: alice,
      headers: { ...json, 'If-Unmodified-Since': 'Thu, 01 Jan 1970 00:00:00 GMT' },
      body: '{"seen":false}',
    });
    assert.equal(since.status, 200);
    await since.arrayBuffer();
    // On the bytes, with their strong ETag: a resumed download of bytes that changed is refused.
    const stale = await run('curl', [
      '-s',
      '-i',
      '-H',
      `Authorization: Bearer ${alice}`,
      '-H',
      'If-Match: "old"',
      '-r',
      '0-9',
      `${env.url}${M}/parts/${partId}`,
    ]);
    assert.equal(parseAnswer(stale.stdout).status, 412);
    const etag =
      (await env.request(`${M}/parts/${partId}`, { token: alice, method: 'HEAD' })).headers.get('etag') ?? '';
    const fresh = await run('curl', [
      '-s',
      '-i',
      '-H',
      `Authorization: Bearer ${alice}`,
      '-H',
      `If-Match: ${etag}`,
      '-r',
      '0-9',
      `${env.url}${M}/parts/${partId}`,
    ]);
    assert.equal(parseAnswer(fresh.stdout).status, 206);
  });

  it('refuses a compressed body (Content-Encoding) with 415 and Accept-Encoding: identity, not as if it were the body', async () => {
    const M = `${A}/messages/${id}`;
    const gz = (text: string) => gzipSync(Buffer.from(text));
    const message = `From: ${ALICE}\r\nTo: bob@example.test\r\nSubject: gz\r\n\r\nhello\r\n`;
    const cases = [
      { method: 'POST', path: `${A}/send`, type: 'message/rfc822', body: gz(message) },
      {
        method: 'POST',
        path: `${A}/send`,
        type: 'application/json',
        body: gz('{"to":"bob@example.test","text":"x"}'),
      },
      { method: 'PATCH', path: M, type: 'application/json', body: gz('{"seen":true}') },
      {
        method: 'POST',
        path: `${A}/messages/delete`,
        type: 'application/json',
        body: gz(`{"ids":["${id}"]}`),
      },
    ];
    const sendApp = createSendApp({
      index: env.runtime.index,
      blobs: env.api.blobs,
      config: env.runtime.config,
      outbound: env.runtime.outbound,
      parser: env.runtime.parser,
      logError: () => {},
    });
    const mailboxApp = createMailboxApp({
      index: env.runtime.index,
      blobs: env.api.blobs,
      logError: () => {},
    });
    for (const c of cases) {
      // curl, as a user would send a compressed upload.
      const r = await run(
        'curl',
        [
          '-s',
          '-i',
          '-X',
          c.method,
          '-H',
          `Authorization: Bearer ${alice}`,
          '-H',
          `Content-Type: ${c.type}`,
          '-H',
          'Content-Encoding: gzip',
          '--data-binary',
          '@-',
          `${env.url}${c.path}`,
        ],
        { input: c.body },
      );
      const a = parseAnswer(r.stdout);
      assert.equal(a.status, 415, `${c.method} ${c.path} (${c.type}): ${r.stdout}`);
      assert.equal(a.headers.get('accept-encoding'), 'identity');
      assert.equal((JSON.parse(a.body) as { error: { code: string } }).error.code, 'unsupported_media_type');
      // Through the Lambda handler of the function API Gateway sends it to, the body base64-encoded.
      const handler = httpApiHandler(c.path.endsWith('/send') ? sendApp : mailboxApp);
      const l = await handler(
        httpApiEvent({
          method: c.method,
          path: c.path,
          headers: { authorization: `Bearer ${alice}`, 'content-type': c.type, 'content-encoding': 'gzip' },
          body: c.body,
          base64: true,
        }),
      );
      assert.equal(l.statusCode, 415, `lambda ${c.method} ${c.path}: ${l.body}`);
    }
    // Nothing was sent, marked or deleted.
    assert.equal(((await (await env.request(M, { token: alice })).json()) as { seen: boolean }).seen, false);
    const sent = (await (await env.request(`${A}?view=sent`, { token: alice })).json()) as {
      messages: number;
    };
    assert.equal(sent.messages, 0);
    // `identity` is no coding at all.
    const plain = await env.request(M, {
      method: 'PATCH',
      token: alice,
      headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'identity' },
      body: '{"seen":false}',
    });
    assert.equal(plain.status, 200);
    await plain.arrayBuffer();
  });

  describe('requests the local server refused with an empty body or a wrong status', () => {
    it('serves an HTTP/1.0 request without Host (a load balancer health check, nc)', async () => {
      const health = parseAnswer(await rawExchange(env.api.port, 'GET /v1/health HTTP/1.0\r\n\r\n'));
      assert.equal(health.status, 200);
      assert.deepEqual(JSON.parse(health.body), { status: 'ok' });
      const stat = parseAnswer(
        await rawExchange(env.api.port, `GET ${A} HTTP/1.0\r\nAuthorization: Bearer ${alice}\r\n\r\n`),
      );
      assert.equal(stat.status, 200);
      assert.equal((JSON.parse(stat.body) as { address: string }).address, ALICE);
      // HAProxy's default `option httpchk`.
      const options = parseAnswer(await rawExchange(env.api.port, 'OPTIONS / HTTP/1.0\r\n\r\n'));
      assert.equal(options.headers.get('content-type'), 'application/json');
    });

    it('refuses an HTTP/1.1 request without Host with a JSON 400 (RFC 9112 §3.2)', async () => {
      const a = parseAnswer(await rawExchange(env.api.port, 'GET /v1/health HTTP/1.1\r\n\r\n'));
      assert.equal(a.status, 400);
      assert.equal(a.headers.get('content-type'), 'application/json');
      assert.equal((JSON.parse(a.body) as { error: { code: string } }).error.code, 'invalid_request');
    });

    it('answers a request target that names no URL (OPTIONS *) with a JSON 400', async () => {
      const a = parseAnswer(await rawExchange(env.api.port, 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n'));
      assert.equal(a.status, 400);
      assert.equal(a.headers.get('content-type'), 'application/json');
      assert.equal((JSON.parse(a.body) as { error: { code: string } }).error.code, 'invalid_request');
    });

    it('answers CONNECT (this is no proxy) with a JSON 501, and an Expect it cannot meet with a JSON 417', async () => {
      const proxied = parseAnswer(
        await rawExchange(
          env.api.port,
          'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n',
        ),
      );
      assert.equal(proxied.status, 501);
      assert.equal(proxied.headers.get('content-type'), 'application/json');
      assert.equal((JSON.parse(proxied.body) as { error: { code: string } }).error.code, 'not_implemented');
      const expect = parseAnswer(
        await rawExchange(env.api.port, 'GET /v1/health HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n'),
      );
      assert.equal(expect.status, 417);
      assert.equal(expect.headers.get('content-type'), 'application/json');
      assert.equal((JSON.parse(expect.body) as { error: { code: string } }).error.code, 'expectation_failed');
      // A CONNECT client that keeps its side open and sends on (as a tunnel would) is let go by the
      // server after a while: the server holds no connection for good, and no stop waits on it. Its
      // sends then fail (the server's side is gone: a reset).
      const open = connect({ port: env.api.port, host: '127.0.0.1', allowHalfOpen: true });
      let answer = '';
      open.on('data', (c: Buffer) => {
        answer += c.toString('latin1');
      });
      open.on('error', () => undefined);
      open.write('CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n');
      const sending = setInterval(() => open.write('tunnelled bytes'), 200);
      try {
        await new Promise<void>((resolve, reject) => {
          open.once('close', () => resolve());
          setTimeout(() => reject(new Error(`the server still holds it: ${answer}`)), 20_000).unref();
        });
      } finally {
        clearInterval(sending);
        open.destroy();
      }
      assert.match(answer, /^HTTP\/1\.1 501 /);
    });

    it('answers a method it does not know with 501, not 400 (RFC 9110 §9.1, §15.6.2)', async () => {
      for (const method of ['FOO', 'get']) {
        const r = await run('curl', ['-s', '-i', '-X', method, `${env.url}/v1/health`]);
        const a = parseAnswer(r.stdout);
        assert.equal(a.status, 501, method);
        assert.equal(a.headers.get('content-type'), 'application/json');
        assert.equal((JSON.parse(a.body) as { error: { code: string } }).error.code, 'not_implemented');
      }
      // A method Node knows but no route takes is still the app's 405.
      const res = await fetch(`${env.url}/v1/health`, { method: 'PUT' });
      assert.equal(res.status, 405);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      await res.arrayBuffer();
    });
  });
});
