/**
 * The API Lambda handler (functions/handlers/api.ts: the Hono app through hono/aws-lambda, with
 * its real cold start from the environment) invoked with API Gateway HTTP API (v2) events for
 * every endpoint, against S3 + DynamoDB on a private moto_server. The mail is delivered first by
 * the router handler from SQS events, so both functions share the same data, as in AWS. Requests go
 * where API Gateway sends them (lib/api.ts): `POST …/send` to the send function's handler
 * (functions/handlers/send.ts), everything else to the API function's.
 */
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import type { APIGatewayProxyResult } from 'hono/aws-lambda';
import { DynamoDbMailboxIndex } from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { createToken } from '../../functions/api/auth.ts';
import { SEND_ROUTE } from '../../functions/api/send-route.ts';
import type { RawConfig } from '../../functions/core/config.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import type { RouterHandler } from '../../functions/handlers/router-handler.ts';
import { buildMessageOfSize, pdfLikeBytes } from '../fixtures/build.ts';
import {
  awsEventsAvailable,
  capturePowertools,
  type HttpRequestSpec,
  httpApiEvent,
  readSample,
  sesNotification,
  sqsEvent,
  sqsRecord,
} from '../helpers/aws-events.ts';
import { PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { MOTO_CREDENTIALS, type Moto, motoAvailable, startMotoStorage } from '../helpers/moto.ts';
import { presignedFor } from '../helpers/sigv4.ts';

const BUCKET = 'mail-relay-api-bucket';
const TABLE = 'mail-relay-api-table';
const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
/** `#` and `%` are legal in a local part (RFC 5322 atext): a client must percent-encode them in the path. */
const ODD = 'deals#50%off@example.test';
const CONFIG: RawConfig = { domains: ['example.test'], mailboxes: [ALICE, BOB, ODD] };

const available =
  motoAvailable() &&
  requireOrAnnounce(
    awsEventsAvailable(),
    'API handler e2e (AWS event samples)',
    'put ../shared/aws-events next to the clone',
  );

type ApiHandler = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyResult>;

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string>;
  /** The body as bytes, decoded from base64 when the handler flagged it so. */
  readonly bytes: Buffer;
  readonly base64: boolean;
  json<T = Record<string, unknown>>(): T;
}

describe('API Lambda handler on moto (API Gateway HTTP API v2 events)', { skip: !available }, () => {
  let moto: Moto;
  let api: ApiHandler;
  let send: ApiHandler;
  let router: RouterHandler;
  let s3: S3Client;
  let dynamo: DynamoDBClient;
  let blobs: S3BlobStore;
  let index: DynamoDbMailboxIndex;
  let aliceToken: string;
  let bobToken: string;
  let adminToken: string;
  /** Delivered to alice: id -> raw bytes, in delivery (= id) order. */
  const delivered = new Map<string, Buffer>();
  let clock = Date.UTC(2025, 2, 1, 12, 0, 0);

  async function deliver(raw: Buffer, mailbox = ALICE): Promise<string> {
    const sesMessageId = randomUUID().replace(/-/g, '');
    clock += 60_000;
    await blobs.put(`inbound/${sesMessageId}`, raw);
    const record = sqsRecord(
      sesNotification({ sesMessageId, recipients: [mailbox], bucket: BUCKET, timestamp: new Date(clock) }),
    );
    const { result } = await capturePowertools(() => router(sqsEvent([record])));
    assert.deepEqual(result, { batchItemFailures: [] });
    const id = messageIdFor(clock, sesMessageId);
    if (mailbox === ALICE) delivered.set(id, raw);
    return id;
  }

  /** The function API Gateway invokes for a request: the send route's, or `$default`'s. */
  const sendPath = new RegExp(`^${SEND_ROUTE.path.replace('{address}', '[^/]+')}$`);
  function gateway(method: string, path: string): ApiHandler {
    return method === SEND_ROUTE.method && sendPath.test(new URL(path, 'https://api.test').pathname)
      ? send
      : api;
  }

  async function call(spec: HttpRequestSpec & { token?: string }): Promise<Reply> {
    const headers = { ...(spec.headers ?? {}) };
    if (spec.token !== undefined) headers.authorization = `Bearer ${spec.token}`;
    const r = await gateway(spec.method, spec.path)(httpApiEvent({ ...spec, headers }));
    const responseHeaders: Record<string, string> = {};
    for (const [k, v] of Object.entries(r.headers ?? {})) responseHeaders[k.toLowerCase()] = String(v);
    const bytes = r.isBase64Encoded ? Buffer.from(r.body, 'base64') : Buffer.from(r.body, 'utf8');
    return {
      status: r.statusCode,
      headers: responseHeaders,
      bytes,
      base64: r.isBase64Encoded,
      json: <T>() => JSON.parse(bytes.toString('utf8')) as T,
    };
  }

  const fixture = (name: string) => readFileSync(join(PROJECT_ROOT, 'test/fixtures', name));
  const path = (rest = '') => `/v1/mailboxes/${encodeURIComponent(ALICE)}${rest}`;

  before(async () => {
    ({ moto, s3, dynamo } = await startMotoStorage({ bucket: BUCKET, table: TABLE }));
    blobs = new S3BlobStore({ client: s3, bucket: BUCKET });
    index = new DynamoDbMailboxIndex({ client: DynamoDBDocumentClient.from(dynamo), tableName: TABLE });
    const ses = new SESv2Client(moto.clientConfig);
    // SES (and moto) send only from verified identities: the domain, for POST …/send.
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    ses.destroy();

    Object.assign(process.env, moto.env, {
      BUCKET_NAME: BUCKET,
      TABLE_NAME: TABLE,
      MAIL_RELAY_CONFIG_JSON: JSON.stringify(CONFIG),
    });
    ({ handler: api } = await import('../../functions/handlers/api.ts'));
    ({ handler: send } = await import('../../functions/handlers/send.ts'));
    ({ handler: router } = await import('../../functions/handlers/router.ts'));

    aliceToken = (await createToken(index, { mailbox: ALICE })).token;
    bobToken = (await createToken(index, { mailbox: BOB })).token;
    adminToken = (await createToken(index, { mailbox: null, admin: true })).token;

    for (const name of [
      'plain-crlf.eml',
      'utf8-8bit.eml',
      'mixed-attachment.eml',
      'quoted-printable.eml',
      'bare-lf.eml',
    ]) {
      await deliver(fixture(name));
    }
    await deliver(fixture('alternative.eml'), BOB);
  });

  after(async () => {
    s3?.destroy();
    dynamo?.destroy();
    await moto?.stop();
  });

  it('GET /v1/health and /v1/openapi.json answer without a token, as JSON text', async () => {
    const health = await call({ method: 'GET', path: '/v1/health' });
    assert.equal(health.status, 200);
    assert.equal(health.base64, false, 'JSON goes back as text');
    assert.deepEqual(health.json(), { status: 'ok' });
    const openapi = await call({ method: 'GET', path: '/v1/openapi.json' });
    assert.equal(openapi.status, 200);
    assert.match(String(openapi.json().openapi), /^3\./);
  });

  it('refuses a missing token (401) and another mailbox (403) with JSON errors, never a stack trace', async () => {
    const none = await call({ method: 'GET', path: path() });
    assert.equal(none.status, 401);
    assert.equal(none.json<{ error: { code: string } }>().error.code, 'unauthorized');
    const other = await call({ method: 'GET', path: path(), token: bobToken });
    assert.equal(other.status, 403);
    assert.doesNotMatch(other.bytes.toString(), /at .+\.ts:\d+/);
  });

  it("a GET or HEAD that carries a body is answered as without it, as the local server does (not a text/plain 400); HEAD has the GET's length", async () => {
    // Python's `requests.get(url, json=…)` and axios' `data` send one; API Gateway passes it on.
    const stat = await call({ method: 'GET', path: path(), token: aliceToken });
    assert.equal(stat.status, 200);
    for (const base64 of [false, true]) {
      const r = await call({
        method: 'GET',
        path: path(),
        token: aliceToken,
        headers: { 'content-type': 'application/json' },
        body: '{"limit":10}',
        base64,
      });
      assert.equal(r.status, 200, `${base64 ? 'base64 ' : ''}body: ${r.bytes.toString()}`);
      assert.equal(r.headers['content-type'], 'application/json');
      assert.deepEqual(r.json(), stat.json());
    }
    const head = await call({ method: 'HEAD', path: path(), token: aliceToken, body: 'x' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(stat.bytes.length));
    // A HEAD of the bytes answers from S3's metadata (HeadObject), with the GET's length.
    const [id, raw] = [...delivered][0] ?? ['', Buffer.alloc(0)];
    const headRaw = await call({ method: 'HEAD', path: path(`/messages/${id}/raw`), token: aliceToken });
    assert.equal(headRaw.status, 200);
    assert.equal(headRaw.headers['content-length'], String(raw.length));
    assert.equal(headRaw.headers['content-type'], 'message/rfc822');
    assert.equal(headRaw.bytes.length, 0);
  });

  it("a browser's CORS preflight (no token) gets a 2xx; any other request without a token is still 401", async () => {
    const preflight = (target: string) =>
      call({
        method: 'OPTIONS',
        path: target,
        headers: {
          origin: 'https://app.example.test',
          'access-control-request-method': 'GET',
          'access-control-request-headers': 'authorization',
        },
      });
    for (const target of [path('/messages'), '/v1/mailboxes']) {
      const r = await preflight(target);
      assert.equal(r.status, 204, `${target}: ${r.bytes.toString()}`);
      assert.equal(r.bytes.length, 0);
    }
    const plain = await call({ method: 'OPTIONS', path: path('/messages') });
    assert.equal(plain.status, 401);
    const noToken = await call({
      method: 'GET',
      path: path('/messages'),
      headers: { origin: 'https://app.example.test', 'access-control-request-method': 'GET' },
    });
    assert.equal(noToken.status, 401, 'only OPTIONS skips authentication');
  });

  it('STAT and the admin mailbox list match the DynamoDB counters; a configured mailbox without mail is listed', async () => {
    const stat = await call({ method: 'GET', path: path(), token: aliceToken });
    assert.equal(stat.status, 200);
    const bytes = [...delivered.values()].reduce((n, b) => n + b.length, 0);
    assert.deepEqual(stat.json(), { address: ALICE, messages: delivered.size, bytes });
    const all = await call({ method: 'GET', path: '/v1/mailboxes', token: adminToken });
    assert.equal(all.status, 200);
    const items = all.json<{ items: { address: string; messages: number }[] }>().items;
    assert.deepEqual(
      items.map((i) => [i.address, i.messages]),
      [
        [ALICE, delivered.size],
        [BOB, 1],
        // Configured, no mail yet (it gets some in a later test): listed from the function's configuration.
        [ODD, 0],
      ],
    );
    assert.equal((await call({ method: 'GET', path: '/v1/mailboxes', token: aliceToken })).status, 403);
  });

  it('LIST pages newest first with an opaque cursor; q and unseen filter; a bad cursor is a 400', async () => {
    const ids: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = `?limit=2${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
      const page = await call({ method: 'GET', path: path(`/messages${query}`), token: aliceToken });
      assert.equal(page.status, 200);
      const body = page.json<{ items: { id: string }[]; nextCursor: string | null }>();
      assert.ok(body.items.length <= 2);
      ids.push(...body.items.map((i) => i.id));
      cursor = body.nextCursor;
    } while (cursor !== null);
    assert.deepEqual(ids, [...delivered.keys()].sort().reverse());

    const q = await call({ method: 'GET', path: path('/messages?q=QUARTERLY'), token: aliceToken });
    assert.deepEqual(
      q.json<{ items: { subject: string }[] }>().items.map((i) => i.subject),
      ['Quarterly numbers, folded onto a second line', 'Quarterly numbers, folded onto a second line'],
      'plain-crlf and bare-lf carry the same subject',
    );
    const bad = await call({ method: 'GET', path: path('/messages?cursor=garbage!!'), token: aliceToken });
    assert.equal(bad.status, 400);
    assert.equal(bad.json<{ error: { code: string } }>().error.code, 'invalid_cursor');
  });

  it('GET a message gives the parsed JSON; raw (RETR) is byte-exact through base64; TOP cuts the body', async () => {
    for (const [id, raw] of delivered) {
      const r = await call({ method: 'GET', path: path(`/messages/${id}/raw`), token: aliceToken });
      assert.equal(r.status, 200);
      assert.equal(r.base64, true, 'message/rfc822 travels base64-encoded');
      assert.match(r.headers['content-type'] ?? '', /^message\/rfc822/);
      assert.ok(r.bytes.equals(raw), `raw ${id} is byte-exact`);
    }
    const [firstId] = [...delivered.keys()];
    assert.ok(firstId !== undefined);
    const detail = await call({ method: 'GET', path: path(`/messages/${firstId}`), token: aliceToken });
    assert.equal(detail.status, 200);
    const body = detail.json<{ subject: string; addresses: { from: { address: string }[] } }>();
    assert.equal(body.subject, 'Quarterly numbers, folded onto a second line');
    assert.equal(body.addresses.from[0]?.address, 'alice@example.org');

    const top = await call({
      method: 'GET',
      path: path(`/messages/${firstId}/top?lines=0`),
      token: aliceToken,
    });
    assert.equal(top.status, 200);
    const raw = delivered.get(firstId) ?? Buffer.alloc(0);
    const headerEnd = raw.indexOf('\r\n\r\n') + 4;
    assert.ok(top.bytes.equals(raw.subarray(0, headerEnd)), 'TOP 0 is the header block and the blank line');

    const missing = await call({
      method: 'GET',
      path: path(`/messages/${messageIdFor(1, 'none')}`),
      token: aliceToken,
    });
    assert.equal(missing.status, 404);
  });

  it('GET a part returns the decoded attachment bytes exactly (binary, base64 on the wire)', async () => {
    const id = [...delivered.entries()].find(([, raw]) => raw.includes('application/pdf'))?.[0];
    assert.ok(id !== undefined, 'mixed-attachment.eml was delivered');
    const detail = await call({ method: 'GET', path: path(`/messages/${id}`), token: aliceToken });
    const attachments = detail.json<{
      attachments: { partId: string; contentType: string; sha256: string }[];
    }>().attachments;
    const pdf = attachments.find((a) => a.contentType === 'application/pdf');
    assert.ok(pdf);
    const part = await call({
      method: 'GET',
      path: path(`/messages/${id}/parts/${pdf.partId}`),
      token: aliceToken,
    });
    assert.equal(part.status, 200);
    assert.equal(part.base64, true);
    // The fixture's attachment is pdfLikeBytes(3000, 42) (test/fixtures/README.md).
    assert.ok(part.bytes.equals(pdfLikeBytes(3000, 42)));
    assert.equal(createHash('sha256').update(part.bytes).digest('hex'), pdf.sha256);
    // A text part goes back base64 too, so any charset survives.
    for (const a of attachments.filter((x) => x.contentType.startsWith('text/'))) {
      const text = await call({
        method: 'GET',
        path: path(`/messages/${id}/parts/${a.partId}`),
        token: aliceToken,
      });
      assert.equal(text.base64, true);
      assert.equal(createHash('sha256').update(text.bytes).digest('hex'), a.sha256);
    }
  });

  it('a Range on a part or a raw message is a 206 of those bytes read from S3 as a range; past the end a 416', async () => {
    const [id, raw] = [...delivered.entries()].find(([, r]) => r.includes('application/pdf')) ?? [];
    assert.ok(id !== undefined && raw !== undefined, 'mixed-attachment.eml was delivered');
    const detail = await call({ method: 'GET', path: path(`/messages/${id}`), token: aliceToken });
    const pdf = detail
      .json<{ attachments: { partId: string; contentType: string }[] }>()
      .attachments.find((a) => a.contentType === 'application/pdf');
    assert.ok(pdf);
    const whole = pdfLikeBytes(3000, 42);
    const part = await call({
      method: 'GET',
      path: path(`/messages/${id}/parts/${pdf.partId}`),
      headers: { range: 'bytes=1000-1999' },
      token: aliceToken,
    });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], 'bytes 1000-1999/3000');
    assert.ok(part.bytes.equals(whole.subarray(1000, 2000)));
    const tail = await call({
      method: 'GET',
      path: path(`/messages/${id}/raw`),
      headers: { range: 'bytes=-100' },
      token: aliceToken,
    });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers['content-range'], `bytes ${raw.length - 100}-${raw.length - 1}/${raw.length}`);
    assert.ok(tail.bytes.equals(raw.subarray(raw.length - 100)));
    const past = await call({
      method: 'GET',
      path: path(`/messages/${id}/raw`),
      headers: { range: `bytes=${raw.length}-` },
      token: aliceToken,
    });
    assert.equal(past.status, 416);
    assert.equal(past.headers['content-range'], `bytes */${raw.length}`);
    assert.equal(past.json<{ error: { code: string } }>().error.code, 'range_not_satisfiable');
  });

  it('PATCH sets seen (JSON body, also base64-encoded as API Gateway may send it); unseen lists follow', async () => {
    const [id] = [...delivered.keys()];
    assert.ok(id !== undefined);
    const plain = await call({
      method: 'PATCH',
      path: path(`/messages/${id}`),
      token: aliceToken,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ seen: true }),
    });
    assert.equal(plain.status, 200);
    assert.equal(plain.json().seen, true);
    assert.equal((await index.get(ALICE, id))?.seen, true);
    const unseen = await call({ method: 'GET', path: path('/messages?unseen=true'), token: aliceToken });
    assert.ok(!unseen.json<{ items: { id: string }[] }>().items.some((i) => i.id === id));

    const encoded = await call({
      method: 'PATCH',
      path: path(`/messages/${id}`),
      token: aliceToken,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ seen: false }),
      base64: true,
    });
    assert.equal(encoded.status, 200);
    assert.equal((await index.get(ALICE, id))?.seen, false);

    // The real sample apigw-http-v2-base64.json: flagged base64, but its body is not base64.
    const sample = readSample<APIGatewayProxyEventV2>('apigw-http-v2-base64.json');
    const broken = await api({
      ...httpApiEvent({
        method: 'PATCH',
        path: path(`/messages/${id}`),
        headers: { authorization: `Bearer ${aliceToken}` },
      }),
      body: sample.body,
      isBase64Encoded: sample.isBase64Encoded,
    });
    assert.equal(broken.statusCode, 400);
  });

  it('a raw message above 4 MiB is a 307 to a presigned S3 URL that serves the same bytes', async () => {
    const { raw } = await buildMessageOfSize(4.5 * 1024 * 1024, 7, { to: ALICE });
    const id = await deliver(raw);
    const r = await call({ method: 'GET', path: path(`/messages/${id}/raw`), token: aliceToken });
    assert.equal(r.status, 307);
    const location = r.headers.location ?? '';
    assert.match(location, /X-Amz-Signature=/);
    assert.ok(location.startsWith(moto.endpoint), 'an S3 URL (here: moto)');
    const fetched = await fetch(location);
    assert.equal(fetched.status, 200);
    assert.ok(Buffer.from(await fetched.arrayBuffer()).equals(raw), 'the presigned URL serves the raw bytes');
  });

  it('HEAD on a raw message above 4 MiB redirects to a URL signed for HEAD (S3 refuses a GET-signed one to HEAD)', async () => {
    const { raw } = await buildMessageOfSize(4.5 * 1024 * 1024, 8, { to: ALICE });
    const id = await deliver(raw);
    const head = await call({ method: 'HEAD', path: path(`/messages/${id}/raw`), token: aliceToken });
    assert.equal(head.status, 307);
    const location = head.headers.location ?? '';
    assert.equal(await presignedFor(location, 'HEAD', MOTO_CREDENTIALS), true, 'signed for HEAD');
    assert.equal(await presignedFor(location, 'GET', MOTO_CREDENTIALS), false);
    const followed = await fetch(location, { method: 'HEAD' });
    assert.equal(followed.status, 200);
    assert.equal(followed.headers.get('content-length'), String(raw.length));
    // (S3 applies the signed response-content-type to HEAD too; moto does not, so it is not asserted.)
    // And GET's redirect is signed for GET.
    const get = await call({ method: 'GET', path: path(`/messages/${id}/raw`), token: aliceToken });
    assert.equal(await presignedFor(get.headers.location ?? '', 'GET', MOTO_CREDENTIALS), true);
  });

  it('wait (long-poll) returns newer mail at once, and 204 after a short timeout', async () => {
    const ids = [...delivered.keys()].sort();
    const [oldest] = ids;
    const newest = ids[ids.length - 1];
    assert.ok(oldest !== undefined && newest !== undefined);
    const newer = await call({
      method: 'GET',
      path: path(`/wait?after=${oldest}&timeout=5`),
      token: aliceToken,
    });
    assert.equal(newer.status, 200);
    assert.equal(newer.json<{ items: unknown[] }>().items.length, ids.length - 1);
    const started = Date.now();
    const none = await call({
      method: 'GET',
      path: path(`/wait?after=${newest}&timeout=1`),
      token: aliceToken,
    });
    assert.equal(none.status, 204, 'no new mail before the timeout');
    assert.equal(none.bytes.length, 0);
    assert.ok(Date.now() - started >= 900, 'it waited');
  });

  it('POST send leaves through SES (JSON, and a base64-encoded message/rfc822); a retry with the same Idempotency-Key sends once', async () => {
    const json = await call({
      method: 'POST',
      path: path('/send'),
      token: aliceToken,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'lambda-send-1' },
      body: JSON.stringify({ to: 'friend@gmail.test', subject: 'Sent from the Lambda API', text: 'hello\n' }),
    });
    assert.equal(json.status, 200, json.bytes.toString());
    const result = json.json<{ messageId: string; duplicate: boolean; recipients: string[] }>();
    assert.deepEqual(result.recipients, ['friend@gmail.test']);
    const sent = (await moto.sentRawMessages()).find((m) => m.id === result.messageId);
    assert.ok(sent?.raw_data.includes('Subject: Sent from the Lambda API'), 'SES got the message');
    assert.equal(sent?.source, ALICE);

    const again = await call({
      method: 'POST',
      path: path('/send'),
      token: aliceToken,
      headers: { 'content-type': 'application/json', 'idempotency-key': 'lambda-send-1' },
      body: JSON.stringify({ to: 'friend@gmail.test', subject: 'Sent from the Lambda API', text: 'hello\n' }),
    });
    assert.equal(again.json<{ duplicate: boolean }>().duplicate, true);
    assert.equal(
      (await moto.sentRawMessages()).filter((m) => m.raw_data.includes('Sent from the Lambda API')).length,
      1,
    );

    const raw = Buffer.from(
      `From: Alice <${ALICE}>\r\nTo: other@gmail.test\r\nSubject: raw submission\r\nDate: Sat, 01 Mar 2025 12:00:00 +0000\r\n` +
        'Message-ID: <raw-1@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n',
    );
    const rfc822 = await call({
      method: 'POST',
      path: path('/send'),
      token: aliceToken,
      headers: { 'content-type': 'message/rfc822' },
      body: raw,
      base64: true,
    });
    assert.equal(rfc822.status, 200, rfc822.bytes.toString());
    const rawSent = (await moto.sentRawMessages()).find(
      (m) => m.id === rfc822.json<{ messageId: string }>().messageId,
    );
    assert.ok(
      rawSent !== undefined && Buffer.from(rawSent.raw_data, 'utf8').equals(raw),
      'a complete message goes out unchanged',
    );
  });

  it('the API function does not serve POST …/send (API Gateway routes it to the send function), but documents it', async () => {
    const r = await api(
      httpApiEvent({
        method: 'POST',
        path: path('/send'),
        headers: { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ to: 'friend@gmail.test', text: 'hello\n' }),
      }),
    );
    assert.equal(r.statusCode, 404);
    assert.equal(JSON.parse(r.body).error.code, 'not_found');
    const doc = await call({ method: 'GET', path: '/v1/openapi.json' });
    const paths = doc.json<{ paths: Record<string, Record<string, unknown>> }>().paths;
    assert.ok(paths['/v1/mailboxes/{address}/send']?.post, 'the send route is documented');
  });

  it('DELETE (DELE) removes the message, its blobs and its bytes from the counters', async () => {
    const [id] = [...delivered.keys()];
    assert.ok(id !== undefined);
    const raw = delivered.get(id) ?? Buffer.alloc(0);
    const before = await index.stat(ALICE);
    const r = await call({ method: 'DELETE', path: path(`/messages/${id}`), token: aliceToken });
    assert.equal(r.status, 204);
    delivered.delete(id);
    assert.deepEqual(await index.stat(ALICE), {
      address: ALICE,
      messages: before.messages - 1,
      bytes: before.bytes - raw.length,
    });
    assert.equal(await blobs.head(`mailboxes/${ALICE}/${id}.eml`), null);
    assert.equal(
      (await call({ method: 'DELETE', path: path(`/messages/${id}`), token: aliceToken })).status,
      404,
    );
    assert.equal(
      (await call({ method: 'GET', path: path(`/messages/${id}/raw`), token: aliceToken })).status,
      404,
    );
  });

  it('DELETE …/messages empties a mailbox in pages ({deleted, more}) on DynamoDB, counters and blobs with it; list items name their recipient', async () => {
    const bobPath = (rest = '') => `/v1/mailboxes/${encodeURIComponent(BOB)}${rest}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await deliver(Buffer.from(`Subject: bulk ${i}\r\n\r\nx\r\n`), BOB));
    const listed = await call({ method: 'GET', path: bobPath('/messages'), token: bobToken });
    assert.equal(listed.status, 200);
    const items = listed.json<{ items: { id: string; recipient: string; plusTag: string | null }[] }>().items;
    assert.deepEqual(
      items.filter((i) => ids.includes(i.id)).map((i) => [i.recipient, i.plusTag]),
      [
        [BOB, null],
        [BOB, null],
        [BOB, null],
      ],
    );
    const r = await call({ method: 'DELETE', path: bobPath('/messages'), token: bobToken });
    assert.equal(r.status, 200);
    const body = r.json<{ deleted: number; more: boolean }>();
    assert.equal(body.more, false);
    assert.ok(body.deleted >= 3, JSON.stringify(body));
    assert.deepEqual(await index.stat(BOB), { address: BOB, messages: 0, bytes: 0 });
    for (const id of ids) assert.equal(await blobs.head(`mailboxes/${BOB}/${id}.eml`), null);
    // Another mailbox's token empties nothing.
    const other = await call({ method: 'DELETE', path: path('/messages'), token: bobToken });
    assert.equal(other.status, 403);
  });

  it('POST …/messages/delete on DynamoDB and S3: 40 messages (two transactions) go with their blobs and bytes; absent ids are listed', async () => {
    const bobPath = (rest = '') => `/v1/mailboxes/${encodeURIComponent(BOB)}${rest}`;
    const ids: string[] = [];
    for (let i = 0; i < 41; i++) {
      ids.push(await deliver(Buffer.from(`Subject: batch ${i}\r\n\r\n${'x'.repeat(i)}\r\n`), BOB));
    }
    const keep = ids.pop() as string;
    const before = await index.stat(BOB);
    let deletedBytes = 0;
    for (const id of ids) deletedBytes += (await index.get(BOB, id))?.size ?? Number.NaN;
    const never = '01ARZ3NDEKTSV4RRFFQ69G5FAV';
    const r = await call({
      method: 'POST',
      path: bobPath('/messages/delete'),
      token: bobToken,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ids: [...ids, never] }),
    });
    assert.equal(r.status, 200, r.bytes.toString());
    assert.deepEqual(r.json(), { deleted: ids, notFound: [never] });
    assert.deepEqual(await index.stat(BOB), {
      address: BOB,
      messages: before.messages - ids.length,
      bytes: before.bytes - deletedBytes,
    });
    for (const id of ids) {
      assert.equal(await blobs.head(`mailboxes/${BOB}/${id}.eml`), null, id);
      assert.equal(await index.deliveryState(BOB, id), 'deleted');
    }
    assert.notEqual(await blobs.head(`mailboxes/${BOB}/${keep}.eml`), null, 'the one not named stays');
  });

  it('a mailbox whose address has # and % is read through its encoded path, which API Gateway decodes', async () => {
    const first = fixture('plain-crlf.eml');
    const second = fixture('utf8-8bit.eml');
    const ids = [await deliver(first, ODD), await deliver(second, ODD)];
    const token = (await createToken(index, { mailbox: ODD })).token;
    const odd = (rest: string) => `/v1/mailboxes/${encodeURIComponent(ODD)}${rest}`;
    const stat = await call({ method: 'GET', path: odd(''), token });
    assert.equal(stat.status, 200, stat.bytes.toString());
    assert.deepEqual(stat.json(), { address: ODD, messages: 2, bytes: first.length + second.length });
    // The query string after the path still counts: one item of two.
    const page = await call({ method: 'GET', path: odd('/messages?limit=1'), token });
    assert.equal(page.status, 200, page.bytes.toString());
    const body = page.json<{ items: { id: string }[]; nextCursor: string | null }>();
    assert.deepEqual(
      body.items.map((i) => i.id),
      [ids[1]],
    );
    assert.notEqual(body.nextCursor, null);
    const raw = await call({ method: 'GET', path: odd(`/messages/${ids[0]}/raw`), token });
    assert.equal(raw.status, 200);
    assert.ok(raw.bytes.equals(first), 'the stored bytes');
    // Still only its own mailbox.
    assert.equal((await call({ method: 'GET', path: odd(''), token: aliceToken })).status, 403);
    assert.equal((await call({ method: 'GET', path: path(), token })).status, 403);
  });

  it('a 500 is logged at ERROR with the request it answered (the access log requestId, method, path), never the token', async () => {
    // A summary that is not JSON any more (damaged in the bucket): the read fails inside the function.
    const id = await deliver(Buffer.from('Subject: damaged\r\n\r\nbody\r\n'));
    await blobs.put(mailboxKeys.summary(ALICE, id), Buffer.from('{not json'));
    const event = httpApiEvent({
      method: 'GET',
      path: path(`/messages/${id}`),
      headers: { authorization: `Bearer ${aliceToken}` },
    });
    const { result, lines } = await capturePowertools(() => api(event));
    assert.equal(result.statusCode, 500);
    const logged = lines.find((l) => l.message === 'internal error');
    assert.equal(logged?.level, 'ERROR');
    assert.equal(logged?.requestId, event.requestContext.requestId);
    assert.equal(logged?.method, 'GET');
    assert.equal(logged?.path, `/v1/mailboxes/${ALICE}/messages/${id}`);
    assert.ok(logged?.error, 'with the error');
    assert.doesNotMatch(JSON.stringify(lines), new RegExp(aliceToken), 'no bearer token in the log');
    delivered.delete(id);
  });
});
