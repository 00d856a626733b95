/**
 * The AWS side under faults: the router Lambda's handler over the real SDK clients on a private
 * moto_server (S3, DynamoDB, SES v2) and the SES v1 SendBounce endpoint of fake-ses.ts, with a
 * fault injected into one AWS call of an invocation at a time. The fault is an SDK middleware at
 * the `initialize` step, above the SDK's own retries (it is what a call looks like once those gave
 * up): a throttling error, an HTTP 500, a socket error before the request, or the call carried out
 * and its answer lost (`lost`). The same SQS record is then processed again with faults off, as SQS
 * redelivers it, and the promises of design §5 are checked: every mailbox holds exactly the
 * expected messages byte for byte, STAT exact, every entry has its blobs, the commit cursor counts
 * each delivery once, a forward is sent once (or recorded failed with a notice), a bounce once, and
 * the batch response names exactly the records that failed. The API's send route and the retention
 * sweep get the same treatment. By default each call is failed once (a write's answer lost, a read
 * failed outright), which runs in about half a minute; MAIL_RELAY_FAULT_SWEEP=full fails every call
 * in every way (about four times as long).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { SESClient } from '@aws-sdk/client-ses';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import {
  DynamoDbMailboxIndex,
  mailboxTableDefinition,
} from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { SesBouncer } from '../../functions/adapters/aws/ses-bouncer.ts';
import { Sesv2Outbound } from '../../functions/adapters/aws/sesv2-outbound.ts';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { createApp } from '../../functions/api/app.ts';
import { createToken } from '../../functions/api/auth.ts';
import { createMailboxApp } from '../../functions/api/mailbox-app.ts';
import { createSendApp } from '../../functions/api/send-app.ts';
import { type Config, parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { mailboxKeys, sentMailboxKey } from '../../functions/core/keys.ts';
import { httpApiHandler } from '../../functions/handlers/http-api.ts';
import { MAX_RECEIVE_COUNT } from '../../functions/handlers/queue-settings.ts';
import { createRouterHandler, type RouterHandler } from '../../functions/handlers/router-handler.ts';
import { forwardSendKey } from '../../functions/pipeline/forward.ts';
import { replay } from '../../functions/pipeline/replay.ts';
import { ORPHAN_GRACE_MS, sweepExpired } from '../../functions/pipeline/retention.ts';
import type { RouterDeps } from '../../functions/pipeline/router.ts';
import {
  awsEventsAvailable,
  capturePowertools,
  httpApiEvent,
  readSample,
  sesNotification,
  sqsEvent,
  sqsRecord,
} from '../helpers/aws-events.ts';
import { requireOrAnnounce } from '../helpers/env.ts';
import { FakeSesEndpoint } from '../helpers/fake-ses.ts';
import { type Moto, motoAvailable, serializeRequests, startMoto } from '../helpers/moto.ts';

const BUCKET = 'mail-relay-faults';
const TABLE = 'mail-relay-faults';

const available =
  motoAvailable() &&
  requireOrAnnounce(
    awsEventsAvailable(),
    'AWS fault sweep (AWS event samples)',
    'put ../shared/aws-events next to the clone',
  );

/**
 * `lost-retried`: the request is carried out and its answer lost below the SDK's retries, which
 * send it again (what a real timeout after the server applied the request looks like).
 */
export type FaultMode = 'throttle' | 'http500' | 'socket' | 'lost' | 'lost-retried';
export const FAULT_MODES: readonly FaultMode[] = ['throttle', 'http500', 'socket', 'lost'];

function faultError(mode: FaultMode, service: string): Error {
  switch (mode) {
    case 'throttle':
      return Object.assign(new Error('Rate exceeded (injected)'), {
        name: service === 'dynamodb' ? 'ThrottlingException' : service === 's3' ? 'SlowDown' : 'Throttling',
        $fault: 'client',
        $metadata: { httpStatusCode: service === 's3' ? 503 : 400 },
      });
    case 'http500':
      return Object.assign(new Error('We encountered an internal error (injected)'), {
        name: service === 's3' ? 'InternalError' : 'InternalServerError',
        $fault: 'server',
        $metadata: { httpStatusCode: 500 },
      });
    case 'socket':
    case 'lost':
    case 'lost-retried':
      return Object.assign(new Error('socket hang up (injected)'), {
        name: 'TimeoutError',
        code: 'ECONNRESET',
      });
  }
}

/** Which call of an invocation to fail: its number (1-based), or the nth call of a command. */
export type FaultTarget =
  | number
  | { readonly command: string; readonly nth?: number }
  /** Every call of the command, until `off` (an outage rather than a glitch). */
  | { readonly command: string; readonly every: true };

/**
 * Counts every AWS call made through the clients it is installed on (`s3.PutObjectCommand`, …)
 * and fails the targeted one in the way `mode` says; `lost` carries the call out first.
 */
export class FaultInjector {
  calls: string[] = [];
  private target: FaultTarget | null = null;
  private mode: FaultMode = 'throttle';
  /** The call that was failed, once it was. */
  hit: string | null = null;
  /** Requests the SDK sent for a `lost-retried` call (its retries included). */
  attempts = 0;

  arm(target: FaultTarget, mode: FaultMode): void {
    this.calls = [];
    this.target = target;
    this.mode = mode;
    this.hit = null;
    this.attempts = 0;
  }

  off(): void {
    this.target = null;
    this.calls = [];
  }

  private isTarget(n: number, call: string): boolean {
    const t = this.target;
    if (t === null) return false;
    if (typeof t !== 'number' && 'every' in t) return call === t.command;
    if (this.hit !== null) return false;
    if (typeof t === 'number') return n === t;
    return call === t.command && this.calls.filter((c) => c === call).length === (t.nth ?? 1);
  }

  install<C extends { middlewareStack: unknown }>(client: C, service: string): C {
    const stack = client.middlewareStack as {
      add: (
        mw: (
          next: (args: unknown) => Promise<unknown>,
          context: { commandName?: string },
        ) => (args: unknown) => Promise<unknown>,
        options: { step: 'initialize'; name: string; priority: 'high' },
      ) => void;
    };
    // Marks the attempts of a targeted `lost-retried` call (the SDK's retries run below `initialize`).
    let retried: { pending: boolean } | null = null;
    stack.add(
      (next, context) => async (args) => {
        const call = `${service}.${context.commandName ?? '?'}`;
        const n = this.calls.push(call);
        if (!this.isTarget(n, call)) return next(args);
        this.hit = `#${n} ${call} (${this.mode})`;
        if (this.mode === 'lost-retried') {
          retried = { pending: true };
          try {
            return await next(args);
          } finally {
            retried = null;
          }
        }
        if (this.mode === 'lost') {
          await next(args);
          throw faultError('lost', service);
        }
        throw faultError(this.mode, service);
      },
      { step: 'initialize', name: 'faultInjection', priority: 'high' },
    );
    (stack as unknown as { add: (mw: unknown, options: unknown) => void }).add(
      (next: (args: unknown) => Promise<unknown>) => async (args: unknown) => {
        const once = retried;
        if (once !== null) this.attempts++;
        if (once === null || !once.pending) return next(args);
        once.pending = false;
        await next(args);
        throw faultError('lost', service);
      },
      { step: 'deserialize', name: 'faultInjectionBelowRetries' },
    );
    return client;
  }
}

const CONFIG: RawConfig = {
  domains: ['example.test', 'auto.test'],
  mailboxes: ['alice@example.test', 'bob@example.test', '*@auto.test'],
  routes: [
    { match: 'team@example.test', action: 'deliver', to: ['alice@example.test', 'bob@example.test'] },
    { match: 'boss@example.test', action: 'forward', to: ['boss.private@gmail.test'] },
    { match: 'old@example.test', action: 'reject', code: 551, message: '5.1.6 User has moved' },
  ],
};
const PASS = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' } as const;
const RAW = Buffer.from(
  'From: Sender <sender@remote.test>\r\nTo: team@example.test, boss@example.test, old@example.test\r\n' +
    'Subject: faults\r\nMessage-ID: <faults@remote.test>\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' +
    '--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\n' +
    'Content-Disposition: attachment; filename="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--b--\r\n',
);

describe('the AWS side under faults (real SDK clients on moto, a fault injected per call)', {
  skip: !available,
}, () => {
  let moto: Moto;
  const sesV1 = new FakeSesEndpoint();
  const faults = new FaultInjector();
  let s3: S3Client;
  let dynamo: DynamoDBClient;
  let config: Config;
  let blobs: S3BlobStore;
  let index: DynamoDbMailboxIndex;
  let handler: RouterHandler;
  let newEnvironment: () => void;
  let ses: SESv2Client;
  let deps: RouterDeps;
  let clock = Date.now() - 60_000;

  before(async () => {
    await sesV1.start();
    moto = await startMoto();
    s3 = faults.install(new S3Client({ ...moto.clientConfig, forcePathStyle: true }), 's3');
    dynamo = faults.install(serializeRequests(new DynamoDBClient(moto.clientConfig)), 'dynamodb');
    ses = faults.install(new SESv2Client(moto.clientConfig), 'sesv2');
    const bounceClient = faults.install(
      new SESClient({ ...moto.clientConfig, endpoint: sesV1.url, maxAttempts: 1 }),
      'ses',
    );
    config = parseConfig(CONFIG);
    blobs = new S3BlobStore({ client: s3, bucket: BUCKET });
    newEnvironment = () => {
      // A new execution environment: nothing remembered from an earlier run (the index's registry cache).
      index = new DynamoDbMailboxIndex({ client: DynamoDBDocumentClient.from(dynamo), tableName: TABLE });
      deps = {
        config,
        blobs,
        index,
        parser: new MailparserAdapter(),
        outbound: new Sesv2Outbound({ client: ses }),
        forwarding: { sleep: async () => undefined },
        bouncer: new SesBouncer(bounceClient),
      };
      handler = createRouterHandler({
        deps,
        bucketName: BUCKET,
        logger: new Logger({ serviceName: 'faults' }),
        metrics: new Metrics({ namespace: 'MailRelayFaults', serviceName: 'faults' }),
      });
    };
  });
  after(async () => {
    s3?.destroy();
    dynamo?.destroy();
    await moto?.stop();
    await sesV1.stop();
  });

  /** A fresh account: moto's state cleared, the bucket, the table and the sending identity made again. */
  async function freshAccount(): Promise<void> {
    faults.off();
    await moto.reset();
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(TABLE)));
    const ses = new SESv2Client(moto.clientConfig);
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    ses.destroy();
    sesV1.requests.length = 0;
    newEnvironment();
  }

  async function receive(
    recipients: readonly string[],
  ): Promise<{ record: SQSRecord; id: string; sesMessageId: string }> {
    const sesMessageId = randomUUID().replace(/-/g, '');
    clock += 1000;
    const timestamp = new Date(clock);
    await blobs.put(`inbound/${sesMessageId}`, RAW);
    const record = sqsRecord(
      sesNotification({
        sesMessageId,
        recipients,
        bucket: BUCKET,
        timestamp,
        mailFrom: 'sender@remote.test',
        verdicts: PASS,
      }),
    );
    return { record, id: messageIdFor(timestamp.getTime(), sesMessageId), sesMessageId };
  }

  async function invoke(
    records: readonly SQSRecord[],
    receiveCount: number,
    context?: Context,
  ): Promise<SQSBatchResponse> {
    const event = sqsEvent(
      records.map((r) => ({
        ...r,
        attributes: { ...r.attributes, ApproximateReceiveCount: String(receiveCount) },
      })),
    );
    return (await capturePowertools(() => handler(event, context))).result;
  }

  /** Every mailbox holds exactly `expected` (mailbox -> id -> bytes), with exact counters and cursor. */
  async function assertMailboxes(expected: ReadonlyMap<string, ReadonlyMap<string, Buffer>>, what: string) {
    for (const [mailbox, messages] of expected) {
      const listed = await index.list(mailbox, { limit: 1000 });
      assert.deepEqual(
        listed.items.map((e) => e.id),
        [...messages.keys()].sort().reverse(),
        `${what}: ${mailbox} lists exactly the expected messages`,
      );
      let bytes = 0;
      for (const [id, raw] of messages) {
        const stored = await blobs.get(mailboxKeys.raw(mailbox, id));
        assert.ok(stored?.equals(raw), `${what}: ${mailbox}/${id} is stored byte for byte`);
        assert.ok(
          (await blobs.head(mailboxKeys.summary(mailbox, id))) !== null,
          `${what}: ${mailbox}/${id} summary`,
        );
        bytes += raw.length;
      }
      assert.deepEqual(
        await index.stat(mailbox),
        { address: mailbox, messages: messages.size, bytes },
        `${what}: STAT`,
      );
      const committed = await index.committedAfter(mailbox, 0, 1000);
      assert.deepEqual(
        [...committed.items.map((e) => e.id)].sort(),
        [...messages.keys()].sort(),
        `${what}: ${mailbox}'s commit log names each message once`,
      );
      // The cursor is the last commit number: past every listed commit, with nothing after it.
      const cursor = await index.commitCursor(mailbox);
      assert.ok(
        cursor >= (committed.commits.at(-1) ?? 0),
        `${what}: ${mailbox}'s cursor is past its commits`,
      );
      assert.deepEqual(
        (await index.committedAfter(mailbox, cursor, 10)).items,
        [],
        `${what}: nothing after the cursor`,
      );
    }
  }

  it('a `*@` mailbox whose registry write failed is listed once the record is redelivered', async () => {
    for (const [target, mode] of [
      // dave@auto.test's registry item (alice@'s is the first).
      [{ command: 'dynamodb.PutItemCommand', nth: 2 }, 'throttle'],
      // dave@auto.test's commit, done and its answer lost.
      [{ command: 'dynamodb.TransactWriteItemsCommand', nth: 2 }, 'lost'],
    ] as const) {
      await freshAccount();
      const m = await receive(['alice@example.test', 'dave@auto.test']);
      faults.arm(target, mode);
      const first = await invoke([m.record], 1);
      faults.off();
      assert.ok(faults.hit === null || first.batchItemFailures.length === 1, `${mode}: the record failed`);
      assert.deepEqual(await invoke([m.record], 2), { batchItemFailures: [] });
      await assertMailboxes(
        new Map(['alice@example.test', 'dave@auto.test'].map((mb) => [mb, new Map([[m.id, RAW]])])),
        mode,
      );
      // A new execution environment lists the mailboxes (the registry cache is per process).
      newEnvironment();
      const page = await index.listMailboxes({ limit: 100 });
      assert.deepEqual(
        page.items.map((i) => [i.address, i.messages]),
        [
          ['alice@example.test', 1],
          ['dave@auto.test', 1],
        ],
        `${mode}: every mailbox with mail is in the registry`,
      );
    }
  });

  /** alice@: a mailbox; boss@: a forward; old@: a refusal, bounced; dave@auto.test: a `*@` mailbox, the second copy. */
  const RECIPIENTS = ['alice@example.test', 'boss@example.test', 'old@example.test', 'dave@auto.test'];
  const DELIVERED = ['alice@example.test', 'dave@auto.test'];
  const FORWARD_TO = 'boss.private@gmail.test';
  const NOTIFY = 'quarantine@example.test';
  const WRITES = /\.(Put|Copy|TransactWrite|Update|Delete|Send|CreateMultipart|UploadPart|Complete)/;

  interface Fault {
    readonly mode: FaultMode;
    /** The failed call, and the one before it. */
    readonly call: string;
    readonly previous: string | undefined;
  }

  /**
   * What is wrong after the record was processed with the fault and redelivered until it
   * succeeded. Three outcomes are what the design accepts, not faults of the code (docs/adr/0008,
   * 0016): a SendEmail whose answer was lost is sent again by the retry (SES has no idempotency
   * key); a forward whose `sent` record could not be written stays `pending` (a replay after the
   * lease may send it again); a SendBounce that failed is recorded `failed`, not retried.
   */
  async function violations(
    m: { record: SQSRecord; id: string; sesMessageId: string },
    receives: number,
    fault: Fault | null,
  ): Promise<string[]> {
    const found: string[] = [];
    const check = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (err) {
        found.push(`${what}: ${(err as Error).message.split('\n')[0]}`);
      }
    };
    if (receives > MAX_RECEIVE_COUNT) found.push(`still failing after ${MAX_RECEIVE_COUNT} receives (DLQ)`);
    const expected = new Map(DELIVERED.map((mb) => [mb, new Map([[m.id, RAW]])]));
    await check('mailboxes', () => assertMailboxes(expected, 'after retries'));
    await check('registry', async () => {
      const page = await index.listMailboxes({ limit: 100 });
      for (const mb of DELIVERED)
        assert.ok(
          page.items.some((i) => i.address === mb && i.messages === 1),
          `${mb} in the registry`,
        );
    });
    const sent = (await moto.sentRawMessages()).filter((r) => r.destinations.includes(FORWARD_TO)).length;
    const forward = (await index.getSend(forwardSendKey(m.sesMessageId, FORWARD_TO)))?.state;
    const notices = (await index.list(NOTIFY, { limit: 100 })).items.length;
    const lostSend = fault?.mode === 'lost' && fault.call === 'sesv2.SendEmailCommand';
    const unrecorded =
      fault !== null &&
      fault.mode !== 'lost' &&
      fault.call === 'dynamodb.UpdateItemCommand' &&
      fault.previous === 'sesv2.SendEmailCommand';
    const forwardOk =
      (sent === 1 && forward === 'sent' && notices === 0) ||
      (sent === 0 && forward === 'failed' && notices === 1) ||
      (lostSend && sent === 2 && forward === 'sent' && notices === 0) ||
      (unrecorded && sent === 1 && forward === 'pending' && notices === 0);
    if (!forwardOk) found.push(`forward: sent ${sent}, record ${forward}, notices ${notices}`);
    const bounces = sesV1.requests.filter((r) => r.get('Action') === 'SendBounce').length;
    const bounceFailed = fault !== null && fault.mode !== 'lost' && fault.call === 'ses.SendBounceCommand';
    if (!(bounces === 1 || (bounceFailed && bounces === 0))) found.push(`bounces sent: ${bounces}`);
    return found;
  }

  it("a send claim whose answer was lost is its claimant's: the forward and the bounce go out at once, once", async () => {
    // UpdateItem calls in order: the forward's claim, its `sent` record, the bounce's claim, its record.
    for (const mode of ['lost', 'lost-retried'] as const) {
      for (const nth of [1, 3]) {
        await freshAccount();
        const m = await receive(RECIPIENTS);
        faults.arm({ command: 'dynamodb.UpdateItemCommand', nth }, mode);
        const first = await invoke([m.record], 1);
        const hit = faults.hit;
        faults.off();
        assert.ok(hit !== null, 'the claim was failed');
        if (mode === 'lost-retried') assert.equal(faults.attempts, 2, 'the SDK sent the claim again');
        assert.deepEqual(
          first,
          { batchItemFailures: [] },
          `${hit}: the record succeeds on its first receive`,
        );
        assert.deepEqual(await violations(m, 1, null), [], `${hit}`);
      }
    }
  });
  /**
   * Processes a new message with the fault armed, then again (faults off) as SQS redelivers it
   * until it succeeds; returns what is wrong, or null when the fault was never reached.
   */
  async function runWithFault(target: FaultTarget, mode: FaultMode): Promise<string[] | null> {
    await freshAccount();
    const m = await receive(RECIPIENTS);
    faults.arm(target, mode);
    const first = await invoke([m.record], 1);
    const hit = faults.hit;
    const calls = faults.calls;
    faults.off();
    if (hit === null) return null;
    const failedAt = Number(/^#(\d+)/.exec(hit)?.[1]);
    const fault: Fault = { mode, call: calls[failedAt - 1] ?? '', previous: calls[failedAt - 2] };
    const found: string[] = [];
    const failures = first.batchItemFailures.map((f) => f.itemIdentifier);
    if (!(failures.length === 0 || (failures.length === 1 && failures[0] === m.record.messageId)))
      found.push(`batch response ${JSON.stringify(first)}`);
    let receives = 1;
    let failed = failures.length > 0;
    while (failed && receives <= MAX_RECEIVE_COUNT) {
      receives++;
      failed = (await invoke([m.record], receives)).batchItemFailures.length > 0;
    }
    found.push(...(await violations(m, receives, fault)));
    return found.map((v) => `${hit} [${failures.length > 0 ? 'failed' : 'acked'}]: ${v}`);
  }

  it('a fault at any AWS call of an invocation, then the redelivery: one message everywhere, one forward, one bounce', async () => {
    await freshAccount();
    const baseline = await receive(RECIPIENTS);
    faults.arm(0, 'throttle');
    assert.deepEqual(await invoke([baseline.record], 1), { batchItemFailures: [] });
    const calls = [...faults.calls];
    faults.off();
    assert.deepEqual(await violations(baseline, 1, null), [], 'no fault: everything once');
    // Every call position once: a write has its answer lost (the nastiest: done, and reported as
    // failed), a read fails outright (throttling, 500, socket in turn). MAIL_RELAY_FAULT_SWEEP=full
    // tries every mode at every position (4x as long).
    const full = process.env.MAIL_RELAY_FAULT_SWEEP === 'full';
    const before: FaultMode[] = ['throttle', 'http500', 'socket'];
    const problems: string[] = [];
    let tried = 0;
    for (const [i, call] of calls.entries()) {
      const modes: FaultMode[] = full
        ? [...FAULT_MODES]
        : [WRITES.test(call) ? 'lost' : (before[i % before.length] ?? 'throttle')];
      for (const mode of modes) {
        const found = await runWithFault(i + 1, mode);
        if (found === null) continue;
        tried++;
        problems.push(...found);
      }
    }
    assert.ok(tried >= calls.length, `every call position was failed (${tried} of ${calls.length})`);
    assert.deepEqual(problems, []);
  });

  it('POST send with a fault at any AWS call, then the same request again: sent once, one copy in the sent view, the bytes sent', async () => {
    const request = (token: string) =>
      new Request('http://api.test/v1/mailboxes/alice@example.test/send', {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'idempotency-key': 'send-1',
        },
        // text and html: a multipart message, whose boundaries the composer makes up.
        body: JSON.stringify({
          to: ['carl@remote.test'],
          subject: 'sent once',
          text: 'hi',
          html: '<p>hi</p>',
        }),
      });
    const setup = async () => {
      await freshAccount();
      const { token } = await createToken(index, { mailbox: 'alice@example.test' });
      const app = createSendApp({
        config,
        index,
        blobs,
        outbound: new Sesv2Outbound({ client: ses }),
        parser: new MailparserAdapter(),
        logError: () => undefined,
      });
      return { token, app };
    };
    const baseline = await setup();
    faults.arm(0, 'throttle');
    assert.equal((await baseline.app.request(request(baseline.token))).status, 200);
    const calls = [...faults.calls];
    faults.off();
    const problems: string[] = [];
    for (const [i, call] of calls.entries()) {
      const mode: FaultMode = WRITES.test(call) ? 'lost' : 'throttle';
      const { token, app } = await setup();
      faults.arm(i + 1, mode);
      const first = await app.request(request(token));
      const hit = faults.hit;
      faults.off();
      let status = first.status;
      for (let retry = 0; retry < 3 && status >= 500; retry++)
        status = (await app.request(request(token))).status;
      const sent = (await moto.sentRawMessages()).filter((r) => r.destinations.includes('carl@remote.test'));
      const copies = await index.list(sentMailboxKey('alice@example.test'), { limit: 10 });
      const copy = copies.items[0]
        ? await blobs.get(mailboxKeys.raw(sentMailboxKey('alice@example.test'), copies.items[0].id))
        : null;
      const lostSend = mode === 'lost' && call === 'sesv2.SendEmailCommand';
      const what = `${hit} [${first.status}, then ${status}]`;
      if (status !== 200) problems.push(`${what}: answered ${status}`);
      if (!(sent.length === 1 || (lostSend && sent.length === 2)))
        problems.push(`${what}: sent ${sent.length}`);
      if (copies.items.length !== 1) problems.push(`${what}: ${copies.items.length} copies in the sent view`);
      else if (!sent.some((m) => copy?.toString('utf8') === m.raw_data.replace(/\r?\n/g, '\r\n')))
        problems.push(`${what}: the sent copy is not the bytes sent`);
    }
    assert.deepEqual(problems, []);
  });

  it('the retention sweep with a fault at each of its writes, then the next sweep: expired mail gone with its blobs, the rest kept, counters exact', async () => {
    const DAY = 24 * 3600 * 1000;
    const now = Date.now();
    const setup = async () => {
      await freshAccount();
      const messages: { id: string; mailboxes: string[]; expired: boolean }[] = [];
      for (const [age, recipients] of [
        [40 * DAY, ['alice@example.test', 'dave@auto.test']],
        [DAY, ['alice@example.test']],
      ] as const) {
        const sesMessageId = randomUUID().replace(/-/g, '');
        const timestamp = new Date(now - age);
        await blobs.put(`inbound/${sesMessageId}`, RAW);
        const record = sqsRecord(sesNotification({ sesMessageId, recipients, bucket: BUCKET, timestamp }));
        assert.deepEqual(await invoke([record], 1), { batchItemFailures: [] });
        messages.push({
          id: messageIdFor(timestamp.getTime(), sesMessageId),
          mailboxes: [...recipients],
          expired: age > 30 * DAY,
        });
      }
      return messages;
    };
    const sweep = (at: number) => sweepExpired({ index, blobs }, { mailboxDays: 30, now: new Date(at) });
    const check = async (messages: { id: string; mailboxes: string[]; expired: boolean }[], what: string) => {
      const expected = new Map(
        DELIVERED.map((mb) => [
          mb,
          new Map(messages.filter((m) => !m.expired && m.mailboxes.includes(mb)).map((m) => [m.id, RAW])),
        ]),
      );
      await assertMailboxes(expected, what);
      for (const mb of DELIVERED) {
        const keys: string[] = [];
        for await (const b of blobs.list(`mailboxes/${mb}/`)) keys.push(b.key);
        const left = keys.filter((k) => messages.some((m) => m.expired && k.includes(m.id)));
        assert.deepEqual(left, [], `${what}: no blob of expired mail left in ${mb}`);
      }
    };
    const baseline = await setup();
    faults.arm(0, 'throttle');
    const summary = await sweep(now);
    const calls = [...faults.calls];
    faults.off();
    assert.equal(summary.deleted, 2);
    await check(baseline, 'no fault');
    // Each write (the index deletes, the blob deletes) with its answer lost; MAIL_RELAY_FAULT_SWEEP=full
    // fails every call in every way.
    const full = process.env.MAIL_RELAY_FAULT_SWEEP === 'full';
    const runs = calls.flatMap((call, i) =>
      full
        ? FAULT_MODES.map((mode) => ({ i, mode }))
        : WRITES.test(call)
          ? [{ i, mode: 'lost' as const }]
          : [],
    );
    assert.ok(runs.length >= 4, 'the sweep deletes entries and blobs');
    const problems: string[] = [];
    for (const { i, mode } of runs) {
      const messages = await setup();
      faults.arm(i + 1, mode);
      const first = await sweep(now).catch((err: Error) => err);
      const hit = faults.hit;
      faults.off();
      // The next sweep, after the grace period for blobs without an entry.
      // (From the present: the blobs of this run were written after `now`.)
      const second = await sweep(Date.now() + ORPHAN_GRACE_MS + 60_000);
      try {
        await check(messages, `${hit}`);
        if (second.failures.length > 0)
          problems.push(`${hit}: the next sweep failed ${JSON.stringify(second.failures)}`);
      } catch (err) {
        problems.push(
          `${hit} [${first instanceof Error ? first.message : JSON.stringify(first.failures)}]: ${(err as Error).message.split('\n')[0]}`,
        );
      }
    }
    assert.deepEqual(problems, []);
  });

  it('a record that fails on every receive (an outage) goes to the DLQ; replay, then the redrive, route it once', async () => {
    for (const command of [
      'dynamodb.TransactWriteItemsCommand',
      's3.CopyObjectCommand',
      'dynamodb.GetItemCommand',
    ]) {
      await freshAccount();
      const started = new Date(Date.now() - 1000);
      const m = await receive(RECIPIENTS);
      faults.arm({ command, every: true }, 'http500');
      for (let receives = 1; receives <= MAX_RECEIVE_COUNT; receives++) {
        assert.deepEqual(
          await invoke([m.record], receives),
          { batchItemFailures: [{ itemIdentifier: m.record.messageId }] },
          `${command}: receive ${receives} fails`,
        );
      }
      faults.off();
      // In the dead-letter queue now. The operator replays what was received since the outage began…
      const summary = await replay(deps, { since: started });
      assert.deepEqual(summary.failures, [], `${command}: replay`);
      assert.equal(
        summary.replayed,
        1,
        `${command}: the notification was stored before the outage stopped it`,
      );
      assert.deepEqual(await violations(m, 1, null), [], `${command}: after replay`);
      // …and redrives the dead-letter queue: the same record again, a no-op.
      assert.deepEqual(await invoke([m.record], 1), { batchItemFailures: [] });
      assert.deepEqual(await violations(m, 1, null), [], `${command}: after the redrive`);
    }
  });

  it('SES down for a whole invocation: the forward is recorded failed with a notice; replay sends it once', async () => {
    await freshAccount();
    const started = new Date(Date.now() - 1000);
    const m = await receive(RECIPIENTS);
    faults.arm({ command: 'sesv2.SendEmailCommand', every: true }, 'http500');
    assert.deepEqual(await invoke([m.record], 1), { batchItemFailures: [] });
    faults.off();
    assert.equal((await index.getSend(forwardSendKey(m.sesMessageId, FORWARD_TO)))?.state, 'failed');
    assert.equal((await index.list(NOTIFY, { limit: 10 })).items.length, 1, 'the owner is told');
    const summary = await replay(deps, { since: started });
    assert.deepEqual(summary.failures, []);
    assert.equal(summary.counts.forwarded, 1);
    const sent = (await moto.sentRawMessages()).filter((r) => r.destinations.includes(FORWARD_TO));
    assert.equal(sent.length, 1, 'sent once, by the replay');
    assert.equal((await index.getSend(forwardSendKey(m.sesMessageId, FORWARD_TO)))?.state, 'sent');
    // Replayed again: nothing more.
    await replay(deps, { since: started });
    assert.equal((await moto.sentRawMessages()).filter((r) => r.destinations.includes(FORWARD_TO)).length, 1);
  });

  it('a batch with a poison record and a fault in another: the response names exactly those two; the redelivery leaves one copy each', async () => {
    const [poison] = readSample<SQSEvent>('sqs-event-batch.json').Records;
    assert.ok(poison);
    for (const [target, mode] of [
      // B's raw message read, B's commit, and C's registry write (each mailbox's first delivery writes one).
      [{ command: 's3.GetObjectCommand', nth: 2 }, 'throttle'],
      [{ command: 'dynamodb.TransactWriteItemsCommand', nth: 2 }, 'lost'],
      [{ command: 'dynamodb.PutItemCommand', nth: 3 }, 'http500'],
    ] as const) {
      await freshAccount();
      const a = await receive(['alice@example.test']);
      const b = await receive(['dave@auto.test']);
      const c = await receive(['erin@auto.test']);
      faults.arm(target, mode);
      const first = await invoke([a.record, poison, b.record, c.record], 1);
      const hit = faults.hit;
      faults.off();
      const failed = first.batchItemFailures.map((f) => f.itemIdentifier);
      assert.ok(hit !== null);
      // Which record the call belonged to: B's read and commit are B's, the third registry write C's.
      const faulted = target.command === 'dynamodb.PutItemCommand' ? c : b;
      assert.deepEqual(
        failed,
        [poison.messageId, faulted.record.messageId],
        `${hit}: the poison record and the faulted one`,
      );
      // SQS returns only those; the poison one fails again (on to the DLQ), the other is routed.
      const again = await invoke([poison, faulted.record], 2);
      assert.deepEqual(again.batchItemFailures, [{ itemIdentifier: poison.messageId }], `${hit}: redelivery`);
      await assertMailboxes(
        new Map([
          ['alice@example.test', new Map([[a.id, RAW]])],
          ['dave@auto.test', new Map([[b.id, RAW]])],
          ['erin@auto.test', new Map([[c.id, RAW]])],
        ]),
        `${hit}`,
      );
    }
  });

  it('an invocation short of time after a record that failed: the failed one and the unstarted rest are returned, then routed once', async () => {
    await freshAccount();
    const a = await receive(['alice@example.test']);
    const b = await receive(['dave@auto.test']);
    const c = await receive(['erin@auto.test']);
    // Time enough to start B, not C.
    const left = [60_000, 1_000];
    const context = {
      functionName: 'router',
      awsRequestId: randomUUID(),
      getRemainingTimeInMillis: () => left.shift() ?? 1_000,
    } as unknown as Context;
    faults.arm({ command: 'dynamodb.TransactWriteItemsCommand', nth: 2 }, 'lost');
    const first = await invoke([a.record, b.record, c.record], 1, context);
    faults.off();
    assert.deepEqual(
      first.batchItemFailures.map((f) => f.itemIdentifier),
      [b.record.messageId, c.record.messageId],
    );
    assert.deepEqual(await invoke([b.record, c.record], 2), { batchItemFailures: [] });
    await assertMailboxes(
      new Map([
        ['alice@example.test', new Map([[a.id, RAW]])],
        ['dave@auto.test', new Map([[b.id, RAW]])],
        ['erin@auto.test', new Map([[c.id, RAW]])],
      ]),
      'after the redelivery',
    );
  });

  it("DynamoDB or S3 throttling past the SDK's retries: the Lambda API answers 503 throttled with Retry-After, and the request after it succeeds", async () => {
    await freshAccount();
    const m = await receive(['alice@example.test']);
    assert.deepEqual(await invoke([m.record], 1), { batchItemFailures: [] });
    const { token } = await createToken(index, { mailbox: 'alice@example.test' });
    const handler = httpApiHandler(createMailboxApp({ index, blobs, logError: () => undefined }));
    const get = async (path: string) => {
      const r = await handler(
        httpApiEvent({ method: 'GET', path, headers: { authorization: `Bearer ${token}` } }),
      );
      return { status: r.statusCode, headers: r.headers ?? {}, body: r.body ?? '' };
    };
    const list = '/v1/mailboxes/alice@example.test/messages';
    const raw = `/v1/mailboxes/alice@example.test/messages/${m.id}/raw`;
    for (const [command, path] of [
      ['dynamodb.QueryCommand', list],
      ['s3.GetObjectCommand', raw],
    ] as const) {
      faults.arm({ command, every: true }, 'throttle');
      const throttled = await get(path);
      faults.off();
      assert.equal(throttled.status, 503, `${command}: ${throttled.body}`);
      assert.equal(throttled.headers['retry-after'] ?? throttled.headers['Retry-After'], '4', command);
      assert.equal((JSON.parse(throttled.body) as { error: { code: string } }).error.code, 'throttled');
      assert.equal((await get(path)).status, 200, `${command}: once the throttling stops`);
    }
  });

  it('DELE with a fault at any AWS call, then the same DELETE again: gone for good, counters exact, its blobs removed', async () => {
    const setup = async () => {
      await freshAccount();
      const m = await receive(['alice@example.test']);
      assert.deepEqual(await invoke([m.record], 1), { batchItemFailures: [] });
      const { token } = await createToken(index, { mailbox: 'alice@example.test' });
      const app = createApp({ index, blobs, logError: () => undefined });
      const dele = () =>
        app.request(
          new Request(`http://api.test/v1/mailboxes/alice@example.test/messages/${m.id}`, {
            method: 'DELETE',
            headers: { authorization: `Bearer ${token}` },
          }),
        );
      return { m, dele };
    };
    const baseline = await setup();
    faults.arm(0, 'throttle');
    assert.equal((await baseline.dele()).status, 204);
    const calls = [...faults.calls];
    faults.off();
    const problems: string[] = [];
    const runs: { target: FaultTarget; mode: FaultMode }[] = [
      ...calls.map((call, i) => ({
        target: i + 1,
        mode: WRITES.test(call) ? ('lost' as const) : ('throttle' as const),
      })),
      // The commit's answer lost below the SDK's retries: the retry finds nothing to delete (404).
      { target: { command: 'dynamodb.TransactWriteItemsCommand' }, mode: 'lost-retried' },
    ];
    for (const { target, mode } of runs) {
      const { m, dele } = await setup();
      faults.arm(target, mode);
      const first = (await dele()).status;
      const hit = faults.hit;
      faults.off();
      let status = first;
      for (let retry = 0; retry < 3 && status >= 500; retry++) status = (await dele()).status;
      const what = `${hit} [${first}, then ${status}]`;
      if (status !== 204 && status !== 404) problems.push(`${what}: answered ${status}`);
      // SQS delivering the notification again does not bring it back.
      assert.deepEqual(await invoke([m.record], 2), { batchItemFailures: [] });
      try {
        await assertMailboxes(new Map([['alice@example.test', new Map()]]), what);
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message.split('\n')[0]}`);
      }
      const left: string[] = [];
      for await (const b of blobs.list(`mailboxes/alice@example.test/${m.id}`)) left.push(b.key);
      // A blob delete failing after the commit point is logged and the DELETE answered 204: those
      // blobs are orphans, removed by the retention sweep once expired (docs/adr/0010), as after a crash.
      const afterCommit = first === 204 && /^#\d+ s3\./.test(hit ?? '');
      if (left.length > 0 && !afterCommit) problems.push(`${what}: blobs left: ${left.length}`);
    }
    assert.deepEqual(problems, []);
  });
});
