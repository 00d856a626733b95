/**
 * The download link of an oversize-forward notice in AWS: the router handler signs it with the
 * stack's link secret (Secrets Manager) as a link to the API, and the API handler answers it with a
 * 307 to an S3 URL presigned at that moment, so the link lives as long as the notice says (up to 7
 * days), not as long as the router's role session. On moto: S3, DynamoDB, SESv2, Secrets Manager.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import type { APIGatewayProxyResult } from 'hono/aws-lambda';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import type { RawConfig } from '../../functions/core/config.ts';
import { signedBlobUrl } from '../../functions/core/signed-links.ts';
import type { RouterHandler } from '../../functions/handlers/router-handler.ts';
import {
  awsEventsAvailable,
  capturePowertools,
  httpApiEvent,
  sesNotification,
  sqsEvent,
  sqsRecord,
} from '../helpers/aws-events.ts';
import { requireOrAnnounce } from '../helpers/env.ts';
import { MOTO_CREDENTIALS, type Moto, motoAvailable, startMotoStorage } from '../helpers/moto.ts';
import { presignedFor } from '../helpers/sigv4.ts';

const BUCKET = 'mail-relay-links-bucket';
const TABLE = 'mail-relay-links-table';
const API_URL = 'https://links.execute-api.us-east-1.amazonaws.com/';
const CONFIG: RawConfig = {
  domains: ['example.test'],
  mailboxes: ['alice@example.test'],
  routes: [{ match: 'boss@example.test', action: 'forward', to: ['boss@remote.test'] }],
  // Any real message is "too large" to forward: the notice is what SES sends.
  relay: { maxSendBytes: 1024 },
};

const available =
  motoAvailable() &&
  requireOrAnnounce(
    awsEventsAvailable(),
    'notice links e2e (AWS event samples)',
    'put ../shared/aws-events next to the clone',
  );

type ApiHandler = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyResult>;

describe('oversize-forward notices link through the API (router and API handlers on moto)', {
  skip: !available,
}, () => {
  let moto: Moto;
  let api: ApiHandler;
  let router: RouterHandler;
  let s3: S3Client;
  let dynamo: DynamoDBClient;
  let blobs: S3BlobStore;
  let secret: string;
  const original = Buffer.from(
    'From: Carol <carol@remote.test>\r\nTo: boss@example.test\r\nSubject: the big one\r\n' +
      `Message-ID: <big@remote.test>\r\n\r\n${'twenty kilobytes of text\r\n'.repeat(800)}`,
  );
  let link: URL;

  const get = (url: URL, method: 'GET' | 'HEAD' = 'GET') =>
    api(httpApiEvent({ method, path: `${url.pathname}${url.search}` }));

  before(async () => {
    ({ moto, s3, dynamo } = await startMotoStorage({ bucket: BUCKET, table: TABLE }));
    blobs = new S3BlobStore({ client: s3, bucket: BUCKET });
    const ses = new SESv2Client(moto.clientConfig);
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    ses.destroy();
    // What the stack's generateSecretString makes: 64 characters, no punctuation.
    secret = randomBytes(48).toString('base64url').slice(0, 64);
    const sm = new SecretsManagerClient(moto.clientConfig);
    const { ARN } = await sm.send(
      new CreateSecretCommand({ Name: 'mail-relay-links', SecretString: secret }),
    );
    sm.destroy();

    Object.assign(process.env, moto.env, {
      BUCKET_NAME: BUCKET,
      TABLE_NAME: TABLE,
      MAIL_RELAY_CONFIG_JSON: JSON.stringify(CONFIG),
      LINK_SECRET_ARN: ARN,
      LINK_BASE_URL: API_URL,
    });
    ({ handler: api } = await import('../../functions/handlers/api.ts'));
    ({ handler: router } = await import('../../functions/handlers/router.ts'));

    const sesMessageId = randomUUID().replace(/-/g, '');
    await blobs.put(`inbound/${sesMessageId}`, original);
    const record = sqsRecord(
      sesNotification({ sesMessageId, recipients: ['boss@example.test'], bucket: BUCKET }),
    );
    const { result } = await capturePowertools(() => router(sqsEvent([record])));
    assert.deepEqual(result, { batchItemFailures: [] });
    const [notice, ...more] = await moto.sentRawMessages();
    assert.equal(more.length, 0);
    assert.ok(notice, 'SES sent the notice');
    assert.match(notice.raw_data, /^Subject: \[Too large to forward\] the big one\r?$/m);
    const url = /https:\/\/\S+/.exec(notice.raw_data.replace(/=\r?\n/g, '').replace(/=3D/g, '='))?.[0];
    assert.ok(url, `a link in the notice:\n${notice.raw_data}`);
    link = new URL(url);
  });

  after(async () => {
    s3?.destroy();
    dynamo?.destroy();
    await moto?.stop();
  });

  it('the notice links to the API, signed, for as long as relay.linkExpirySeconds (7 days)', () => {
    assert.equal(link.origin, new URL(API_URL).origin);
    assert.match(link.pathname, /^\/v1\/blobs\/forwarded\/[0-9A-Z]{26}\.eml$/);
    const days = (Number(link.searchParams.get('expires')) * 1000 - Date.now()) / 86_400_000;
    assert.ok(days > 6.99 && days <= 7.01, `valid for ${days} days`);
    assert.match(link.searchParams.get('sig') ?? '', /^[0-9a-f]{64}$/);
  });

  it('the API answers it with a 307 to a fresh presigned S3 URL that serves the original', async () => {
    const reply = await get(link);
    assert.equal(reply.statusCode, 307, reply.body);
    const location = String(reply.headers?.location ?? reply.headers?.Location);
    assert.ok(location.startsWith(`${moto.endpoint}/${BUCKET}/forwarded/`), location);
    // Presigned now, for minutes: not the days of the notice.
    assert.equal(new URL(location).searchParams.get('X-Amz-Expires'), '300');
    const res = await fetch(location);
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), original);
    // S3 answers with the headers the link asked for (moto does not apply them; AWS does).
    assert.match(
      new URL(location).searchParams.get('response-content-disposition') ?? '',
      /^attachment; filename="[0-9A-Z]{26}\.eml"$/,
    );
    assert.equal(new URL(location).searchParams.get('response-content-type'), 'message/rfc822');
  });

  it('a HEAD of the link redirects to a URL signed for HEAD (S3 refuses a GET-signed URL to HEAD)', async () => {
    const reply = await get(link, 'HEAD');
    assert.equal(reply.statusCode, 307, reply.body);
    const location = String(reply.headers?.location ?? reply.headers?.Location);
    assert.equal(await presignedFor(location, 'HEAD', MOTO_CREDENTIALS), true);
    assert.equal(await presignedFor(location, 'GET', MOTO_CREDENTIALS), false);
    const res = await fetch(location, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(original.length));
  });

  it('refuses a changed link, and a link to anything but forwarded/ even when signed with the secret', async () => {
    const forged = new URL(link);
    forged.searchParams.set('expires', String(Number(forged.searchParams.get('expires')) + 86_400));
    const bad = await get(forged);
    assert.equal(bad.statusCode, 403);
    assert.equal(JSON.parse(bad.body).error.code, 'invalid_signature');

    await blobs.put('mailboxes/alice@example.test/x.eml', Buffer.from('private\r\n'));
    const elsewhere = new URL(
      signedBlobUrl({ baseUrl: API_URL, secret, key: 'mailboxes/alice@example.test/x.eml', expiresIn: 60 }),
    );
    const refused = await get(elsewhere);
    assert.equal(refused.statusCode, 403);
    assert.equal(JSON.parse(refused.body).error.code, 'invalid_signature');
  });

  it('an expired link says so, and a link to a deleted original is a 404', async () => {
    const past = new URL(
      signedBlobUrl({
        baseUrl: API_URL,
        secret,
        key: link.pathname.slice('/v1/blobs/'.length),
        expiresIn: 60,
        nowMs: Date.now() - 3_600_000,
      }),
    );
    const expired = await get(past);
    assert.equal(expired.statusCode, 403);
    assert.equal(JSON.parse(expired.body).error.code, 'url_expired');

    await blobs.delete(link.pathname.slice('/v1/blobs/'.length));
    const gone = await get(link);
    assert.equal(gone.statusCode, 404);
    assert.equal(JSON.parse(gone.body).error.code, 'not_found');
  });
});
