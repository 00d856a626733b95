/**
 * `Expect: 100-continue` on the local server (RFC 9110 §10.1.1): a client that asks holds its body
 * back until the server says `100 Continue`. A request the API refuses from its headers alone (no or
 * a bad token, a Content-Length over the route's limit, no such route, a method the path does not
 * take) gets its final status without a `100`, and the body is never sent; one it takes gets `100`
 * and works once the body follows. Over a raw socket (what is on the wire, in order) and with curl,
 * which asks for bodies over 1 MB.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { maxSendBodyBytes } from '../../functions/api/send-route.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { run } from '../helpers/process.ts';
import { until } from '../helpers/until.ts';

const ALICE = 'alice@example.test';
const SEND = `/v1/mailboxes/${ALICE}/send`;
/** Small enough that a body over the send route's limit is quick to describe, large enough for curl's 1 MB. */
const MAX_SEND_BYTES = 2 * 1024 * 1024;

interface Answer {
  readonly status: number;
  readonly headers: Map<string, string>;
  readonly body: string;
}

/** The complete answers in `text`, in order (a 1xx has no body; the others carry Content-Length). */
function answersIn(text: string): Answer[] {
  const answers: Answer[] = [];
  let at = 0;
  for (;;) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) return answers;
    const [statusLine = '', ...lines] = text.slice(at, end).split('\r\n');
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const status = Number(statusLine.split(' ')[1]);
    const length = status < 200 ? 0 : Number(headers.get('content-length') ?? '0');
    if (text.length < end + 4 + length) return answers;
    answers.push({ status, headers, body: text.slice(end + 4, end + 4 + length) });
    at = end + 4 + length;
  }
}

/** A connection to the server, with everything it has received so far and whether the server closed it. */
async function openConnection(
  port: number,
): Promise<{ socket: Socket; received: () => string; closed: () => boolean }> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let text = '';
  let closed = false;
  socket.on('data', (c: Buffer) => {
    text += c.toString('latin1');
  });
  socket.on('close', () => {
    closed = true;
  });
  socket.on('error', () => {});
  return { socket, received: () => text, closed: () => closed };
}

function message(bytes: number): Buffer {
  const head =
    `From: ${ALICE}\r\nTo: bob@remote.test\r\nSubject: large upload\r\n` +
    'Content-Type: text/plain; charset=us-ascii\r\n\r\n';
  const line = `${'x'.repeat(76)}\r\n`;
  return Buffer.from(head + line.repeat(Math.ceil((bytes - head.length) / line.length)), 'latin1');
}

describe('Expect: 100-continue (RFC 9110 §10.1.1)', () => {
  let env: ApiTestEnv;
  let alice: string;

  before(async () => {
    env = await startApiTestEnv({
      config: {
        domains: ['example.test'],
        mailboxes: [ALICE, 'bob@example.test'],
        relay: { maxSendBytes: MAX_SEND_BYTES },
      },
    });
    alice = await env.token(ALICE);
  });
  after(async () => {
    await env.close();
  });

  const head = (
    method: string,
    path: string,
    length: number,
    authorization?: string,
    type = 'message/rfc822',
  ) =>
    `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${type}\r\n` +
    `Content-Length: ${length}\r\nExpect: 100-continue\r\n` +
    `${authorization === undefined ? '' : `Authorization: ${authorization}\r\n`}\r\n`;

  it('a request refused from its headers gets its final status and no 100, and its connection is closed', async () => {
    const bob = await env.token('bob@example.test');
    const admin = await env.token(null, { admin: true });
    const refusals = [
      { what: 'no token', request: head('POST', SEND, 1_500_000), status: 401, code: 'unauthorized' },
      {
        what: 'an unknown token',
        request: head('POST', SEND, 1_500_000, `Bearer mr_${'A'.repeat(43)}`),
        status: 401,
        code: 'unauthorized',
      },
      {
        what: "another mailbox's token",
        request: head('POST', SEND, 1_500_000, `Bearer ${bob}`),
        status: 403,
        code: 'forbidden',
      },
      {
        what: "a Content-Length over the route's limit",
        request: head('POST', SEND, maxSendBodyBytes(MAX_SEND_BYTES) + 1, `Bearer ${alice}`),
        status: 413,
        code: 'payload_too_large',
      },
      {
        what: 'a PATCH body over its limit',
        request: head(
          'PATCH',
          `/v1/mailboxes/${ALICE}/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV`,
          1_500_000,
          `Bearer ${alice}`,
        ),
        status: 413,
        code: 'payload_too_large',
      },
      {
        what: 'a media type the route does not take',
        request: head('POST', SEND, 1_500_000, `Bearer ${alice}`, 'text/plain'),
        status: 415,
        code: 'unsupported_media_type',
      },
      {
        what: 'a mailbox outside our domains',
        request: head('POST', '/v1/mailboxes/someone@remote.test/send', 1_500_000, `Bearer ${admin}`),
        status: 403,
        code: 'from_not_allowed',
      },
      {
        what: 'no such route',
        request: head('POST', '/v1/upload', 1_500_000, `Bearer ${alice}`),
        status: 404,
        code: 'not_found',
      },
      {
        what: 'a method the path does not take',
        request: head('PUT', SEND, 1_500_000, `Bearer ${alice}`),
        status: 405,
        code: 'method_not_allowed',
      },
    ];
    for (const r of refusals) {
      const conn = await openConnection(env.api.port);
      conn.socket.write(r.request);
      const [first] = await until(`the answer to ${r.what}`, () => {
        const answers = answersIn(conn.received());
        return answers.length > 0 ? answers : undefined;
      });
      assert.ok(first !== undefined);
      // The first answer is the final one: no `100` went out before it.
      assert.equal(first.status, r.status, `${r.what}: ${conn.received().slice(0, 200)}`);
      assert.equal((JSON.parse(first.body) as { error: { code: string } }).error.code, r.code, r.what);
      // The body was never sent, so the connection cannot carry another request: the server says so and closes it.
      assert.equal(first.headers.get('connection'), 'close', r.what);
      await until(`the server to close the connection after ${r.what}`, () =>
        conn.closed() ? true : undefined,
      );
      conn.socket.destroy();
    }
  });

  it('a request the API takes gets 100, sends its body, is answered, and keeps its connection', async () => {
    const raw = message(1_200_000);
    const conn = await openConnection(env.api.port);
    conn.socket.write(head('POST', SEND, raw.length, `Bearer ${alice}`));
    await until('100 Continue', () =>
      answersIn(conn.received()).some((a) => a.status === 100) ? true : undefined,
    );
    assert.match(conn.received(), /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    conn.socket.write(raw);
    const final = await until('the answer to the send', () =>
      answersIn(conn.received()).find((a) => a.status >= 200),
    );
    assert.equal(final.status, 200, final.body);
    const sent = JSON.parse(final.body) as { id: string; duplicate: boolean; recipients: string[] };
    assert.deepEqual(sent.recipients, ['bob@remote.test']);
    assert.equal(sent.duplicate, false);
    assert.equal(await env.runtime.index.deliveryState(sentMailboxKey(ALICE), sent.id), 'present');
    assert.notEqual(final.headers.get('connection'), 'close');
    // The same connection takes the next request.
    conn.socket.write('GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const health = await until(
      'the answer to the next request on the connection',
      () => answersIn(conn.received()).filter((a) => a.status >= 200)[1],
    );
    assert.equal(health.status, 200);
    assert.equal(conn.closed(), false);
    conn.socket.destroy();
  });

  it('curl uploads nothing of a 1.2 MB body to a request that is refused, and all of it to one that is taken', async () => {
    const file = join(env.dataDir, 'upload.eml');
    const raw = message(1_200_000);
    writeFileSync(file, raw);
    // curl asks `Expect: 100-continue` for bodies over 1 MB; it waits for the answer here however long
    // the server takes (its default is to send the body anyway after 1 s).
    const curl = (token: string) =>
      run('curl', [
        '-sS',
        '-v',
        '--expect100-timeout',
        '60',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code} %{size_upload}',
        '-H',
        `Authorization: Bearer ${token}`,
        '-H',
        'Content-Type: message/rfc822',
        '--data-binary',
        `@${file}`,
        `${env.url}${SEND}`,
      ]);
    const refused = await curl(`mr_${'A'.repeat(43)}`);
    assert.match(refused.stderr, /> Expect: 100-continue/);
    assert.equal(refused.stdout, '401 0', refused.stderr);
    assert.doesNotMatch(refused.stderr, /< HTTP\/1\.1 100/);

    const taken = await curl(alice);
    assert.match(taken.stderr, /< HTTP\/1\.1 100 Continue/);
    assert.equal(taken.stdout, `200 ${raw.length}`, taken.stderr);
  });
});
