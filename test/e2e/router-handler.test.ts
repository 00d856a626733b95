/**
 * The router Lambda handler (functions/handlers/router.ts, with its real cold start from the
 * environment) against S3, DynamoDB and SES on a private moto_server, invoked with SQS events
 * built from the real SES -> SNS -> SQS sample. Messages are put under `inbound/` as SES's S3
 * action would; every delivery is checked byte for byte, with exact counters.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { CreateEmailIdentityCommand, DeleteEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { DynamoDbMailboxIndex } from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { ENTRY_TEXT_MAX_CHARS } from '../../functions/core/message.ts';
import { MAX_RECEIVE_COUNT } from '../../functions/handlers/queue-settings.ts';
import { RECORD_TIME_RESERVE_MS, type RouterHandler } from '../../functions/handlers/router-handler.ts';
import {
  BOUNCE_FAILURES_METRIC,
  FORWARD_FAILURES_METRIC,
  ROUTER_FUNCTION_DIMENSION,
  ROUTER_METRICS_NAMESPACE,
  ROUTER_SERVICE_NAME,
} from '../../functions/handlers/router-metrics.ts';
import { replay } from '../../functions/pipeline/replay.ts';
import type { RouterDeps } from '../../functions/pipeline/router.ts';
import {
  awsEventsAvailable,
  capturePowertools,
  readSample,
  sesNotification,
  sqsEvent,
  sqsRecord,
} from '../helpers/aws-events.ts';
import { corpusDir, corpusFiles, PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { FakeSesEndpoint } from '../helpers/fake-ses.ts';
import { type Moto, motoAvailable, startMotoStorage } from '../helpers/moto.ts';

const BUCKET = 'mail-relay-test-bucket';
const TABLE = 'mail-relay-test-table';
/** Every Nth corpus message: a spread of every source project, at a cost moto can carry in seconds. */
const CORPUS_STRIDE = 12;
/** SQS delivers at most 10 records per batch to Lambda (the stack's batch size). */
const BATCH = 10;

const CONFIG: RawConfig = {
  domains: ['example.test'],
  mailboxes: ['alice@example.test', 'bob@example.test', 'carol@example.test'],
  routes: [
    { match: 'team@example.test', action: 'deliver', to: ['alice@example.test', 'bob@example.test'] },
    { match: 'boss@example.test', action: 'forward', to: ['boss.private@gmail.test'] },
  ],
};
/** The router function's name, as Lambda gives it in AWS_LAMBDA_FUNCTION_NAME. */
const ROUTER_FUNCTION_NAME = 'MailRelayStack-MailRelayIngestRouter1A2B3C-xyz';
const MAILBOXES = ['alice@example.test', 'bob@example.test', 'carol@example.test'];

const available =
  motoAvailable() &&
  requireOrAnnounce(
    awsEventsAvailable(),
    'router handler e2e (AWS event samples)',
    'put ../shared/aws-events next to the clone',
  );

interface Sent {
  readonly sesMessageId: string;
  readonly raw: Buffer;
  readonly mailboxes: readonly string[];
  readonly timestamp: Date;
}

describe('router Lambda handler on moto (SQS <- SNS <- SES S3 action)', { skip: !available }, () => {
  let moto: Moto;
  let handler: RouterHandler;
  let s3: S3Client;
  let dynamo: DynamoDBClient;
  let blobs: S3BlobStore;
  let index: DynamoDbMailboxIndex;
  /** What every mailbox must hold: message id -> raw bytes. */
  const expected = new Map<string, Map<string, Buffer>>(MAILBOXES.map((m) => [m, new Map()]));
  let clock = Date.UTC(2025, 0, 2, 8, 0, 0);

  /** Stores the raw message as SES would, and returns the notification's SQS record. */
  async function receive(
    raw: Buffer,
    recipients: readonly string[],
    mailboxes: readonly string[],
  ): Promise<{ record: SQSRecord; sent: Sent }> {
    const sesMessageId = randomUUID().replace(/-/g, '');
    clock += 1000;
    const timestamp = new Date(clock);
    await blobs.put(`inbound/${sesMessageId}`, raw);
    const record = sqsRecord(sesNotification({ sesMessageId, recipients, bucket: BUCKET, timestamp }));
    return { record, sent: { sesMessageId, raw, mailboxes, timestamp } };
  }

  function expectDelivered(sent: Sent): void {
    const id = messageIdFor(sent.timestamp.getTime(), sent.sesMessageId);
    for (const m of sent.mailboxes) expected.get(m)?.set(id, sent.raw);
  }

  async function invoke(
    records: readonly SQSRecord[],
    context?: Context,
  ): Promise<{ response: SQSBatchResponse; lines: Record<string, unknown>[] }> {
    const event: SQSEvent = sqsEvent(records);
    const { result, lines } = await capturePowertools(() => handler(event, context));
    return { response: result, lines };
  }

  /** A Lambda context whose remaining time is `remaining()` at each call. */
  const contextWithTime = (remaining: () => number): Context =>
    ({
      functionName: 'router',
      awsRequestId: randomUUID(),
      getRemainingTimeInMillis: remaining,
    }) as unknown as Context;

  /**
   * The batch's EMF line, checked to be where the stack's alarms look (lib/alarms.ts): the namespace,
   * `service` (the router's service name) and `function` (the function's name) as the dimensions.
   */
  function metricLine(lines: readonly Record<string, unknown>[]): Record<string, unknown> {
    const line = lines.find((l) => '_aws' in l) ?? assert.fail('no EMF line');
    const directive = (line._aws as { CloudWatchMetrics: { Namespace: string; Dimensions: string[][] }[] })
      .CloudWatchMetrics[0];
    assert.equal(directive?.Namespace, ROUTER_METRICS_NAMESPACE);
    assert.deepEqual(directive?.Dimensions, [['service', ROUTER_FUNCTION_DIMENSION]]);
    assert.equal(line.service, ROUTER_SERVICE_NAME);
    assert.equal(line[ROUTER_FUNCTION_DIMENSION], ROUTER_FUNCTION_NAME);
    return line;
  }

  /** Every mailbox holds exactly the expected messages, byte for byte, with exact counters. */
  async function assertMailboxes(): Promise<void> {
    for (const [mailbox, messages] of expected) {
      const listed = await index.list(mailbox, { limit: 1000 });
      assert.deepEqual(
        listed.items.map((e) => e.id),
        [...messages.keys()].sort().reverse(),
        `${mailbox}: the listed messages`,
      );
      let bytes = 0;
      for (const [id, raw] of messages) {
        const stored = await blobs.get(mailboxKeys.raw(mailbox, id));
        assert.ok(stored !== null, `${mailbox}/${id} stored`);
        assert.ok(
          stored.equals(raw),
          `${mailbox}/${id} is byte-exact (${stored.length} vs ${raw.length} bytes)`,
        );
        assert.ok(
          (await blobs.head(mailboxKeys.summary(mailbox, id))) !== null,
          `${mailbox}/${id} has its summary`,
        );
        bytes += raw.length;
      }
      assert.deepEqual(await index.stat(mailbox), { address: mailbox, messages: messages.size, bytes });
    }
  }

  before(async () => {
    ({ moto, s3, dynamo } = await startMotoStorage({ bucket: BUCKET, table: TABLE }));
    const ses = new SESv2Client(moto.clientConfig);
    // moto, like SES, sends only from verified identities; forwards go out as forwarder@example.test.
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    ses.destroy();
    blobs = new S3BlobStore({ client: s3, bucket: BUCKET });
    index = new DynamoDbMailboxIndex({ client: DynamoDBDocumentClient.from(dynamo), tableName: TABLE });

    // The function's environment, as the stack sets it; the module reads it at import (cold start).
    Object.assign(process.env, moto.env, {
      BUCKET_NAME: BUCKET,
      TABLE_NAME: TABLE,
      MAIL_RELAY_CONFIG_JSON: JSON.stringify(CONFIG),
      // What the stack sets for every function (lib/house-function.ts); the router names its own service.
      POWERTOOLS_SERVICE_NAME: 'mail-relay',
      // What Lambda sets: the router's metrics carry it, for the alarms of this stack only.
      AWS_LAMBDA_FUNCTION_NAME: ROUTER_FUNCTION_NAME,
    });
    ({ handler } = await import('../../functions/handlers/router.ts'));
  });

  after(async () => {
    s3?.destroy();
    dynamo?.destroy();
    await moto?.stop();
  });

  it('delivers every fixture message byte-exact, in batches of 10, with exact counters and metrics', async () => {
    const dir = join(PROJECT_ROOT, 'test/fixtures');
    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.eml'))
      .sort();
    assert.ok(files.length >= 10, 'the fixtures are there');
    const received: { record: SQSRecord; sent: Sent }[] = [];
    for (const [i, f] of files.entries()) {
      const raw = readFileSync(join(dir, f));
      // A spread over mailboxes, an alias to two mailboxes, and a plus-address.
      const target =
        i % 4 === 0
          ? { rcpt: ['team@example.test'], mb: ['alice@example.test', 'bob@example.test'] }
          : i % 4 === 1
            ? { rcpt: ['carol+lists@example.test'], mb: ['carol@example.test'] }
            : i % 4 === 2
              ? { rcpt: ['bob@example.test'], mb: ['bob@example.test'] }
              : {
                  rcpt: ['alice@example.test', 'carol@example.test'],
                  mb: ['alice@example.test', 'carol@example.test'],
                };
      received.push(await receive(raw, target.rcpt, target.mb));
    }
    const metrics: Record<string, unknown>[] = [];
    for (let i = 0; i < received.length; i += BATCH) {
      const batch = received.slice(i, i + BATCH);
      const { response, lines } = await invoke(batch.map((r) => r.record));
      assert.deepEqual(response, { batchItemFailures: [] });
      metrics.push(...lines.filter((l) => '_aws' in l));
      for (const r of batch) expectDelivered(r.sent);
    }
    await assertMailboxes();

    const deliveries = received.reduce((n, r) => n + r.sent.mailboxes.length, 0);
    const sum = (name: string) => metrics.reduce((n, m) => n + Number(m[name] ?? 0), 0);
    assert.equal(sum('received'), received.length, 'EMF metric received');
    assert.equal(sum('delivered'), deliveries, 'EMF metric delivered');
    assert.equal(sum('failedRecords'), 0);
    assert.ok(
      metrics.every((m) => typeof m.batchLatency === 'number'),
      'per-batch latency',
    );
    const namespace = (metrics[0]?._aws as { CloudWatchMetrics?: { Namespace?: string }[] } | undefined)
      ?.CloudWatchMetrics?.[0]?.Namespace;
    assert.equal(namespace, 'MailRelay');
  });

  it('delivers a spread of the shared corpus byte-exact', async (t) => {
    const dir = corpusDir();
    if (
      !requireOrAnnounce(
        dir !== null,
        'router handler corpus delivery',
        'put ../shared/corpus next to the clone or set MAIL_RELAY_CORPUS',
      )
    ) {
      t.skip('no corpus');
      return;
    }
    const files = corpusFiles(dir ?? '').filter((_, i) => i % CORPUS_STRIDE === 0);
    assert.ok(files.length >= 20, `a real spread of the corpus (${files.length} files)`);
    const received: { record: SQSRecord; sent: Sent }[] = [];
    for (const [i, f] of files.entries()) {
      const mailbox = MAILBOXES[i % MAILBOXES.length] ?? 'alice@example.test';
      received.push(await receive(readFileSync(f.path), [mailbox], [mailbox]));
    }
    for (let i = 0; i < received.length; i += BATCH) {
      const batch = received.slice(i, i + BATCH);
      const { response } = await invoke(batch.map((r) => r.record));
      assert.deepEqual(response, { batchItemFailures: [] }, `batch ${i / BATCH}`);
      for (const r of batch) expectDelivered(r.sent);
    }
    await assertMailboxes();
  });

  it('the same event delivered twice gives one message, counters unchanged', async () => {
    const raw = Buffer.from(
      'From: a@remote.test\r\nTo: carol@example.test\r\nSubject: twice\r\n\r\nonce only\r\n',
    );
    const { record, sent } = await receive(raw, ['carol@example.test'], ['carol@example.test']);
    const first = await invoke([record]);
    assert.deepEqual(first.response, { batchItemFailures: [] });
    expectDelivered(sent);
    const statBefore = await index.stat('carol@example.test');
    // SQS delivers at least once: the very same record (same SQS message id) again.
    const second = await invoke([record]);
    assert.deepEqual(second.response, { batchItemFailures: [] });
    const metric = second.lines.find((l) => '_aws' in l);
    assert.equal(metric?.delivered, 0);
    assert.equal(metric?.duplicates, 1);
    assert.deepEqual(await index.stat('carol@example.test'), statBefore);
    await assertMailboxes();
  });

  it('a message with 12,000 recipients in its To header and a 5,000-character subject is delivered', async () => {
    // ~530 KB of To header: within mailparser's 1 MiB header block, beyond DynamoDB's 400 KB item
    // (the entry holds the To display and a lower-cased copy for search): the entry holds them clipped.
    const to = Array.from({ length: 12_000 }, (_, i) => `"Reader ${i}" <reader-${i}@remote.test>`);
    const subject = 'long '.repeat(1000).trim();
    const raw = Buffer.from(
      `From: a@remote.test\r\nTo: carol@example.test,\r\n ${to.join(',\r\n ')}\r\nSubject: ${subject}\r\n\r\nhello\r\n`,
    );
    const { record, sent } = await receive(raw, ['carol@example.test'], ['carol@example.test']);
    const { response } = await invoke([record]);
    assert.deepEqual(response, { batchItemFailures: [] });
    expectDelivered(sent);
    const id = messageIdFor(sent.timestamp.getTime(), sent.sesMessageId);
    const entry = await index.get('carol@example.test', id);
    assert.equal(entry?.subject.length, ENTRY_TEXT_MAX_CHARS);
    assert.ok(entry?.to.startsWith('carol@example.test, Reader 0 <reader-0@remote.test>, '));
    assert.ok((entry?.to.length ?? Infinity) <= ENTRY_TEXT_MAX_CHARS && entry?.to.endsWith('…'));
    await assertMailboxes();
  });

  it('one poisoned record in a batch is reported alone; the others are delivered', async () => {
    const good1 = await receive(
      Buffer.from('Subject: one\r\n\r\nfirst\r\n'),
      ['alice@example.test'],
      ['alice@example.test'],
    );
    const good2 = await receive(
      Buffer.from('Subject: two\r\n\r\nsecond\r\n'),
      ['bob@example.test'],
      ['bob@example.test'],
    );
    // A real SQS record whose body is not an SNS notification at all (powertools' sample).
    const [notJson] = readSample<SQSEvent>('sqs-event-batch.json').Records;
    assert.ok(notJson);
    const { response, lines } = await invoke([good1.record, notJson, good2.record]);
    assert.deepEqual(response, { batchItemFailures: [{ itemIdentifier: notJson.messageId }] });
    expectDelivered(good1.sent);
    expectDelivered(good2.sent);
    await assertMailboxes();
    const error = lines.find((l) => l.level === 'ERROR');
    assert.equal(error?.sqsMessageId, notJson.messageId, 'the failure is logged with its SQS message id');
    assert.equal(error?.permanent, true);
  });

  it('near its timeout the invocation starts no more records: they go back to the queue unstarted, and go first next time', async () => {
    const batch = await Promise.all(
      ['late one', 'late two', 'late three'].map((subject) =>
        receive(Buffer.from(`Subject: ${subject}\r\n\r\nx\r\n`), ['bob@example.test'], ['bob@example.test']),
      ),
    );
    const subjects = async () =>
      (await index.list('bob@example.test', { limit: 1000 })).items
        .map((e) => e.subject)
        .filter((t) => t.startsWith('late '));
    // Less than the reserve left from the start: the first record is started all the same (an
    // invocation always makes progress), the others are not.
    const short = contextWithTime(() => RECORD_TIME_RESERVE_MS - 1);
    const first = await invoke(
      batch.map((b) => b.record),
      short,
    );
    const [one, two, three] = batch;
    assert.ok(one && two && three);
    assert.deepEqual(first.response, {
      batchItemFailures: [
        { itemIdentifier: two.record.messageId },
        { itemIdentifier: three.record.messageId },
      ],
    });
    expectDelivered(one.sent);
    assert.deepEqual(await subjects(), ['late one']);
    const metric = first.lines.find((l) => '_aws' in l);
    assert.equal(metric?.deferredRecords, 2);
    assert.equal(metric?.failedRecords, 0);
    assert.ok(first.lines.some((l) => l.level === 'WARN' && l.deferred === 2));

    // SQS hands them back with a higher receive count, among new mail: they are taken first.
    const again = (r: SQSRecord): SQSRecord => ({
      ...r,
      attributes: { ...r.attributes, ApproximateReceiveCount: '2' },
    });
    const fresh = await receive(
      Buffer.from('Subject: late four\r\n\r\nx\r\n'),
      ['bob@example.test'],
      ['bob@example.test'],
    );
    const second = await invoke([fresh.record, again(three.record), again(two.record)], short);
    assert.deepEqual(second.response, {
      batchItemFailures: [
        { itemIdentifier: two.record.messageId },
        { itemIdentifier: fresh.record.messageId },
      ],
    });
    expectDelivered(three.sent);
    // With time enough, the rest is delivered, and nothing twice.
    const third = await invoke(
      [again(fresh.record), again(two.record)],
      contextWithTime(() => 60_000),
    );
    assert.deepEqual(third.response, { batchItemFailures: [] });
    expectDelivered(two.sent);
    expectDelivered(fresh.sent);
    assert.deepEqual((await subjects()).sort(), ['late four', 'late one', 'late three', 'late two']);
    await assertMailboxes();
  });

  it('a record on its last receive is started however little time is left (returned, it would reach the DLQ untried)', async () => {
    const batch = await Promise.all(
      ['last one', 'last two', 'not last'].map((subject) =>
        receive(
          Buffer.from(`Subject: ${subject}\r\n\r\nx\r\n`),
          ['carol@example.test'],
          ['carol@example.test'],
        ),
      ),
    );
    const [one, two, three] = batch;
    assert.ok(one && two && three);
    const atCount = (r: SQSRecord, n: number): SQSRecord => ({
      ...r,
      attributes: { ...r.attributes, ApproximateReceiveCount: String(n) },
    });
    const { response } = await invoke(
      [
        atCount(three.record, 2),
        atCount(one.record, MAX_RECEIVE_COUNT),
        atCount(two.record, MAX_RECEIVE_COUNT),
      ],
      contextWithTime(() => RECORD_TIME_RESERVE_MS - 1),
    );
    assert.deepEqual(response, { batchItemFailures: [{ itemIdentifier: three.record.messageId }] });
    expectDelivered(one.sent);
    expectDelivered(two.sent);
    const { response: later } = await invoke(
      [atCount(three.record, 3)],
      contextWithTime(() => 60_000),
    );
    assert.deepEqual(later, { batchItemFailures: [] });
    expectDelivered(three.sent);
    await assertMailboxes();
  });

  it('records that cannot succeed fail alone: wrong notification type, wrong bucket, S3 object missing', async () => {
    const good = await receive(
      Buffer.from('Subject: fine\r\n\r\nok\r\n'),
      ['carol@example.test'],
      ['carol@example.test'],
    );
    const snsButNotSes = sqsRecord({ notificationType: 'Bounce', bounce: {} });
    const otherBucket = sqsRecord(
      sesNotification({
        sesMessageId: 'other-bucket-id',
        recipients: ['alice@example.test'],
        bucket: 'someone-elses-bucket',
      }),
    );
    const lateAt = new Date(Date.UTC(2025, 0, 1));
    const missing = sqsRecord(
      sesNotification({
        sesMessageId: 'never-stored',
        recipients: ['alice@example.test'],
        bucket: BUCKET,
        timestamp: lateAt,
      }),
    );
    const { response, lines } = await invoke([snsButNotSes, good.record, otherBucket, missing]);
    assert.deepEqual(
      response.batchItemFailures.map((f) => f.itemIdentifier).sort(),
      [snsButNotSes.messageId, otherBucket.messageId, missing.messageId].sort(),
    );
    // Each failure is logged at ERROR with what finds its message: the SES message id once the body
    // could be read (inbound/<id>, replay), the SQS message id always (the dead-letter queue).
    const failed = new Map(
      lines
        .filter((l) => l.level === 'ERROR' && String(l.message).startsWith('record failed'))
        .map((l) => [l.sqsMessageId, l]),
    );
    assert.equal(failed.size, 3);
    assert.equal(failed.get(otherBucket.messageId)?.sesMessageId, 'other-bucket-id');
    assert.equal(failed.get(missing.messageId)?.sesMessageId, 'never-stored');
    assert.equal(failed.get(snsButNotSes.messageId)?.sesMessageId, undefined, 'not a notification: no id');
    assert.equal(metricLine(lines).failedRecords, 3);
    expectDelivered(good.sent);
    await assertMailboxes();

    // Once SES's object is there (S3 was late), the retried record succeeds.
    const raw = Buffer.from('Subject: late\r\n\r\nstored after the notification\r\n');
    await blobs.put('inbound/never-stored', raw);
    const retry = await invoke([missing]);
    assert.deepEqual(retry.response, { batchItemFailures: [] });
    expectDelivered({
      sesMessageId: 'never-stored',
      raw,
      mailboxes: ['alice@example.test'],
      timestamp: lateAt,
    });
    await assertMailboxes();
  });

  it('accepts raw message delivery (body = the notification) and acknowledges the SES setup notification', async () => {
    const { sent } = await receive(
      Buffer.from('Subject: raw delivery\r\n\r\nbody\r\n'),
      ['bob@example.test'],
      ['bob@example.test'],
    );
    const raw = sqsRecord(
      sesNotification({
        sesMessageId: sent.sesMessageId,
        recipients: ['bob@example.test'],
        bucket: BUCKET,
        timestamp: sent.timestamp,
      }),
      { rawDelivery: true },
    );
    const setup = sqsRecord({ notificationType: 'AMAZON_SES_SETUP_NOTIFICATION', receipt: {} });
    // The other shape seen in the wild: a Received notification for the object SES writes when a
    // rule is created. Acknowledged, not routed as mail.
    await blobs.put('inbound/AMAZON_SES_SETUP_NOTIFICATION', Buffer.from('Subject: setup\r\n\r\ntest\r\n'));
    const setupReceived = sqsRecord(
      sesNotification({
        sesMessageId: 'AMAZON_SES_SETUP_NOTIFICATION',
        recipients: ['alice@example.test'],
        bucket: BUCKET,
      }),
    );
    const { response, lines } = await invoke([raw, setup, setupReceived]);
    assert.deepEqual(response, { batchItemFailures: [] });
    assert.equal(lines.filter((l) => l.message === 'acknowledged the SES setup notification').length, 2);
    expectDelivered(sent);
    await assertMailboxes();
  });

  it('forwards through SESv2 (moto records the sent mail) and quarantines a virus', async () => {
    const body = readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml'));
    const fwd = await receive(body, ['boss@example.test'], []);
    const virusId = randomUUID().replace(/-/g, '');
    await blobs.put(`inbound/${virusId}`, Buffer.from('Subject: bad\r\n\r\nEICAR\r\n'));
    const virus = sqsRecord(
      sesNotification({
        sesMessageId: virusId,
        recipients: ['carol@example.test'],
        bucket: BUCKET,
        verdicts: { virus: 'FAIL' },
      }),
    );
    const { response, lines } = await invoke([fwd.record, virus]);
    assert.deepEqual(response, { batchItemFailures: [] });
    const metric = lines.find((l) => '_aws' in l);
    assert.equal(metric?.forwarded, 1);
    assert.equal(metric?.quarantined, 1);
    const sentMail = await moto.sentRawMessages();
    assert.ok(
      sentMail.some(
        (m) => m.destinations.includes('boss.private@gmail.test') && m.raw_data.includes('Quarterly numbers'),
      ),
      `the forward reached SES: ${JSON.stringify(sentMail).slice(0, 300)}`,
    );
    assert.equal((await index.stat('quarantine@example.test')).messages, 1);
  });

  it('bounces a refused recipient once through SES SendBounce (its client loaded on the first bounce); alice still gets the mail', async () => {
    const ses = new FakeSesEndpoint();
    await ses.start();
    // moto has no SendBounce: the handler's SES v1 client goes to the loopback endpoint instead.
    process.env.AWS_ENDPOINT_URL_SES = ses.url;
    try {
      const sesMessageId = randomUUID().replace(/-/g, '');
      const timestamp = new Date();
      const raw = readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml'));
      await blobs.put(`inbound/${sesMessageId}`, raw);
      const record = sqsRecord(
        sesNotification({
          sesMessageId,
          recipients: ['alice@example.test', 'typo@example.test'],
          bucket: BUCKET,
          timestamp,
          mailFrom: 'sender@remote.test',
          verdicts: { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' },
        }),
      );
      const { response, lines } = await invoke([record]);
      assert.deepEqual(response, { batchItemFailures: [] });
      expectDelivered({ sesMessageId, raw, mailboxes: ['alice@example.test'], timestamp });
      await assertMailboxes();
      assert.equal(ses.requests.length, 1);
      assert.equal(ses.requests[0]?.get('OriginalMessageId'), sesMessageId);
      assert.equal(ses.requests[0]?.get('BounceSender'), 'mailer-daemon@example.test');
      assert.equal(ses.requests[0]?.get('BouncedRecipientInfoList.member.1.Recipient'), 'typo@example.test');
      const metric = lines.find((l) => '_aws' in l);
      assert.equal(metric?.bounces, 1);
      assert.equal(metric?.bounceFailures, 0);
      assert.equal(metric?.rejected, 1);
      const routed = lines.find((l) => l.message === 'routed');
      assert.deepEqual(routed?.refused, [
        { recipient: 'typo@example.test', code: 550, detail: 'bounced as bounce-1' },
      ]);

      // SQS delivers the record again: the send record in DynamoDB keeps it to one bounce.
      const again = await invoke([record]);
      assert.deepEqual(again.response, { batchItemFailures: [] });
      assert.equal(ses.requests.length, 1, 'bounced once');
      assert.equal(again.lines.find((l) => '_aws' in l)?.bounces, 0);

      // SES refuses a bounce: the mail is still delivered, and the operator hears of it: a WARN line
      // naming the message and the error, and the metric the BounceFailures alarm watches.
      ses.replies.push({ status: 400, code: 'MessageRejected', message: 'Email address is not verified.' });
      const refusedId = randomUUID().replace(/-/g, '');
      await blobs.put(`inbound/${refusedId}`, raw);
      const refusedAgain = sqsRecord(
        sesNotification({
          sesMessageId: refusedId,
          recipients: ['alice@example.test', 'typo2@example.test'],
          bucket: BUCKET,
          timestamp,
          mailFrom: 'sender@remote.test',
          verdicts: { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' },
        }),
      );
      const failedBounce = await invoke([refusedAgain]);
      assert.deepEqual(failedBounce.response, { batchItemFailures: [] });
      expectDelivered({ sesMessageId: refusedId, raw, mailboxes: ['alice@example.test'], timestamp });
      const warned = failedBounce.lines.find((l) => l.message === 'routed');
      assert.equal(warned?.level, 'WARN');
      assert.equal(warned?.sesMessageId, refusedId);
      assert.match(
        String((warned?.refused as { detail?: string }[] | undefined)?.[0]?.detail),
        /^bounce failed: .*not verified/,
      );
      assert.equal(metricLine(failedBounce.lines)[BOUNCE_FAILURES_METRIC], 1);
      assert.equal(routed?.level, 'INFO', 'a bounce sent is no warning');
    } finally {
      delete process.env.AWS_ENDPOINT_URL_SES;
      await ses.stop();
    }
  });

  it('replay re-routes stored notifications from S3: deleted mail stays deleted unless restored, twice is a no-op', async () => {
    const deps: RouterDeps = {
      config: parseConfig(CONFIG),
      blobs,
      index,
      parser: new MailparserAdapter(),
      outbound: { send: async () => assert.fail('replay must not send again what was already forwarded') },
    };
    const [mailbox, messages] =
      [...expected].find(([, m]) => m.size > 0) ?? assert.fail('something was delivered');
    const [id] = [...messages.keys()];
    assert.ok(id !== undefined);
    assert.ok(await index.delete(mailbox, id), 'deleted by its owner');
    const since = new Date(Date.now() - 3600_000);
    const kept = await replay(deps, { since, mailbox });
    assert.equal(kept.failures.length, 0, JSON.stringify(kept.failures));
    assert.equal(kept.counts.delivered, 0, 'deleted mail stays deleted');
    assert.ok(
      kept.results.some((r) =>
        r.outcomes.some((o) => o.status === 'duplicate' && o.detail === 'delivered before and deleted since'),
      ),
    );
    assert.equal(await index.get(mailbox, id), null);
    const progress: number[] = [];
    const first = await replay(deps, {
      since,
      mailbox,
      restoreDeleted: true,
      onProgress: (p) => progress.push(p.done),
    });
    assert.equal(first.failures.length, 0, JSON.stringify(first.failures));
    assert.equal(first.counts.delivered, 1, 'asked to, the deleted message is delivered again');
    assert.ok(first.skipped > 0, 'notifications for other mailboxes are left out');
    assert.equal(progress.length, first.considered);
    await assertMailboxes();
    const second = await replay(deps, { since });
    assert.equal(second.failures.length, 0, JSON.stringify(second.failures));
    assert.equal(second.counts.delivered + second.counts.quarantined, 0, 'replaying again changes nothing');
    assert.ok(second.counts.duplicate > 0);
    await assertMailboxes();
    const future = await replay(deps, { since: new Date(Date.now() + 3600_000) });
    assert.equal(future.considered, 0, 'nothing was stored after a future time');
  });

  // Last: the failed forward it leaves would be sent again by the replays above.
  it('a forward SES refuses is logged at WARN with its destination and error, and counted where the ForwardFailures alarm looks', async () => {
    const ses = new SESv2Client(moto.clientConfig);
    // The forwarding identity gone (deleted, or never verified in this region): SES refuses the send.
    await ses.send(new DeleteEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    try {
      const body = readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml'));
      const fwd = await receive(body, ['boss@example.test'], []);
      const notices = (await index.stat('quarantine@example.test')).messages;
      const { response, lines } = await invoke([fwd.record]);
      assert.deepEqual(response, { batchItemFailures: [] }, 'recorded and noticed, not retried');
      const routed = lines.find((l) => l.message === 'routed');
      assert.equal(routed?.level, 'WARN');
      assert.equal(routed?.sesMessageId, fwd.sent.sesMessageId);
      const unsent = routed?.unsentForwards as Record<string, string>[] | undefined;
      assert.equal(unsent?.length, 1);
      assert.equal(unsent?.[0]?.recipient, 'boss@example.test');
      assert.equal(unsent?.[0]?.destination, 'boss.private@gmail.test');
      assert.equal(unsent?.[0]?.status, 'failed');
      assert.match(String(unsent?.[0]?.detail), /MessageRejected/);
      assert.equal(metricLine(lines)[FORWARD_FAILURES_METRIC], 1);
      assert.equal(
        (await index.stat('quarantine@example.test')).messages,
        notices + 1,
        'the owner has a notice',
      );
    } finally {
      await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
      ses.destroy();
    }
  });
});
