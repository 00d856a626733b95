/**
 * `POST …/send` when SES refuses for its sending limits, past the SDK's retries: the send function
 * (its Lambda handler, API Gateway HTTP API events) over the real SDK clients on moto_server, with a
 * loopback proxy in front of SES v2 that answers SendEmail as SES does when an account is over a limit
 * (moto never is). The sending rate is `503 throttled` with `Retry-After`; the daily quota is
 * `429 send_quota_exceeded` without one. Either way nothing was sent, and the same request with the
 * same Idempotency-Key sends it once the limit lifts: once, with one copy in the sent view.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoDbMailboxIndex } from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { sesRetryConfig } from '../../functions/adapters/aws/ses-retry.ts';
import { Sesv2Outbound } from '../../functions/adapters/aws/sesv2-outbound.ts';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { createToken } from '../../functions/api/auth.ts';
import { createSendApp } from '../../functions/api/send-app.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import { type HttpApiHandler, httpApiHandler } from '../../functions/handlers/http-api.ts';
import { awsEventsAvailable, httpApiEvent } from '../helpers/aws-events.ts';
import { requireOrAnnounce } from '../helpers/env.ts';
import { type FaultyProxy, type ProxyFault, startFaultyProxy } from '../helpers/faulty-proxy.ts';
import { type Moto, motoAvailable, startMotoStorage } from '../helpers/moto.ts';

const BUCKET = 'mail-relay-ses-limits';
const TABLE = 'mail-relay-ses-limits';
const ALICE = 'alice@example.test';

const available =
  motoAvailable() &&
  requireOrAnnounce(
    awsEventsAvailable(),
    'SES sending limits on moto (AWS event samples)',
    'put ../shared/aws-events next to the clone',
  );

describe('POST …/send when SES refuses for a sending limit', { skip: !available }, () => {
  let moto: Moto;
  let proxy: FaultyProxy;
  let ses: SESv2Client;
  let index: DynamoDbMailboxIndex;
  let handler: HttpApiHandler;
  let token: string;
  /** What the proxy answers SendEmail with; undefined passes it on to moto. */
  let fault: ProxyFault | undefined;
  const logged: unknown[] = [];

  before(async () => {
    const storage = await startMotoStorage({ bucket: BUCKET, table: TABLE });
    moto = storage.moto;
    await new SESv2Client(moto.clientConfig).send(
      new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }),
    );
    // SES v2's SendEmail is `POST /v2/email/outbound-emails`.
    proxy = await startFaultyProxy(moto.endpoint, (req) =>
      req.url?.startsWith('/v2/email/outbound-emails') ? fault : undefined,
    );
    // The retries the send function's client has (ses-outbound.ts): the SDK's standard ones, which
    // the sending rate outlasts, but none for the daily quota.
    ses = new SESv2Client({ ...moto.clientConfig, endpoint: proxy.endpoint, ...sesRetryConfig() });
    index = new DynamoDbMailboxIndex({
      client: DynamoDBDocumentClient.from(storage.dynamo),
      tableName: TABLE,
    });
    handler = httpApiHandler(
      createSendApp({
        config: parseConfig({ domains: ['example.test'], mailboxes: [ALICE] }),
        index,
        blobs: new S3BlobStore({ client: storage.s3, bucket: BUCKET }),
        outbound: new Sesv2Outbound({ client: ses }),
        parser: new MailparserAdapter(),
        logError: (err) => logged.push(err),
      }),
    );
    token = (await createToken(index, { mailbox: ALICE })).token;
  });
  after(async () => {
    ses?.destroy();
    await proxy?.close();
    await moto?.stop();
  });

  const send = async (to: string, key: string) => {
    const r = await handler(
      httpApiEvent({
        method: 'POST',
        path: `/v1/mailboxes/${ALICE}/send`,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'idempotency-key': key,
        },
        body: JSON.stringify({ to, subject: `to ${to}`, text: 'hello' }),
      }),
    );
    const headers = new Map(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
    const body = JSON.parse(r.body ?? '{}') as {
      error?: { code: string; message: string };
      duplicate?: boolean;
    };
    return { status: r.statusCode, headers, body };
  };
  const sentTo = async (to: string) =>
    (await moto.sentRawMessages()).filter((m) => m.destinations.includes(to));
  const copies = async () => (await index.list(sentMailboxKey(ALICE), { limit: 100 })).items;

  /** The same request again once SES takes mail: sent once, one more copy in the sent view. */
  const sendsOnceLimitLifts = async (to: string, key: string, copiesBefore: number) => {
    fault = undefined;
    const again = await send(to, key);
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(again.body.duplicate, false);
    assert.equal((await sentTo(to)).length, 1);
    assert.equal((await copies()).length, copiesBefore + 1);
  };

  it("SES's sending rate, past the SDK's retries: 503 throttled with Retry-After; the same request later sends once", async () => {
    const to = 'rate@remote.test';
    fault = {
      kind: 'deny',
      type: 'TooManyRequestsException',
      message: 'Maximum sending rate exceeded.',
      status: 429,
    };
    const failedBefore = proxy.failed.length;
    const copiesBefore = (await copies()).length;
    const throttled = await send(to, 'rate-1');
    assert.equal(throttled.status, 503, JSON.stringify(throttled.body));
    assert.equal(throttled.body.error?.code, 'throttled');
    assert.equal(throttled.headers.get('retry-after'), '4');
    // The SDK tried three times before giving up; nothing went out, no copy was kept.
    assert.equal(proxy.failed.length - failedBefore, 3);
    assert.equal((await sentTo(to)).length, 0);
    assert.equal((await copies()).length, copiesBefore);
    await sendsOnceLimitLifts(to, 'rate-1', copiesBefore);
  });

  it("SES's daily quota: 429 send_quota_exceeded without Retry-After, logged for the operator; the same request later sends once", async () => {
    // SES v2 names it LimitExceededException; the message is what says it is the daily quota (SES v1
    // sends the same message as `Throttling`).
    for (const [i, deny] of [
      { type: 'LimitExceededException', status: 400 },
      { type: 'TooManyRequestsException', status: 429 },
    ].entries()) {
      const to = `quota${i}@remote.test`;
      fault = {
        kind: 'deny',
        type: deny.type,
        message: 'Daily message quota exceeded.',
        status: deny.status,
      };
      const copiesBefore = (await copies()).length;
      const loggedBefore = logged.length;
      const failedBefore = proxy.failed.length;
      const refused = await send(to, `quota-${i}`);
      // Asked once: no retry within seconds passes a quota of the last 24 hours (the SDK's own
      // strategy asked three times, with a backoff of seconds between).
      assert.equal(proxy.failed.length - failedBefore, 1, `${deny.type}: SES asked once`);
      assert.equal(refused.status, 429, `${deny.type}: ${JSON.stringify(refused.body)}`);
      assert.equal(refused.body.error?.code, 'send_quota_exceeded', deny.type);
      assert.match(refused.body.error?.message ?? '', /daily quota/);
      assert.equal(refused.headers.get('retry-after'), undefined, deny.type);
      assert.equal(logged.length, loggedBefore + 1, `${deny.type}: the operator learns of it`);
      assert.equal((await sentTo(to)).length, 0);
      assert.equal((await copies()).length, copiesBefore);
      await sendsOnceLimitLifts(to, `quota-${i}`, copiesBefore);
    }
  });
});
