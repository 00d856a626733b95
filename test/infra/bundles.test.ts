/**
 * What ships is what was tested: the stack is synthesized WITH bundling (local esbuild, as
 * `cdk deploy` does), and each Lambda bundle it produced is loaded by a fresh `node` process from a
 * directory outside the project (so nothing can come from node_modules), then invoked against
 * moto_server: the router delivers a message SES stored, the API serves it back, the retention
 * sweep deletes it once it is older than `retention.mailboxDays`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { App } from 'aws-cdk-lib';
import {
  DynamoDbMailboxIndex,
  mailboxTableDefinition,
} from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { createToken } from '../../functions/api/auth.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { MailRelayStack } from '../../lib/mail-relay-stack.ts';
import {
  awsEventsAvailable,
  httpApiEvent,
  scheduledEvent,
  sesNotification,
  sqsEvent,
  sqsRecord,
} from '../helpers/aws-events.ts';
import { PROJECT_ROOT, requireOrAnnounce } from '../helpers/env.ts';
import { type Moto, motoAvailable, startMoto } from '../helpers/moto.ts';
import { FUNCTION_ENV, runBundle } from './bundle-runner.ts';
import { exampleConfig, type Resources, TEST_ENV } from './infra-helpers.ts';

const work = mkdtempSync(join(tmpdir(), 'mail-relay-bundles-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** The bundle of each function, by the construct path prefix of its logical id. */
const FUNCTIONS = {
  router: 'MailRelayRouter',
  api: 'MailRelayApiFunction',
  activator: 'MailRelayIngestActivateRuleSet',
  retention: 'MailRelayRetentionSweep',
} as const;

/** The example, with mailbox retention so that the stack has its retention sweep too. */
const MAILBOX_DAYS = 30;
const BUNDLED_CONFIG = {
  ...exampleConfig(),
  retention: { inboundDays: 30, mailboxDays: MAILBOX_DAYS },
};
type FunctionName = keyof typeof FUNCTIONS;

/** Synthesizes with bundling into `outdir` and copies each function's bundle out of the project tree. */
function synthBundles(name: string, config: unknown): Record<FunctionName, string> {
  const outdir = join(work, `${name}.out`);
  const app = new App({ outdir, builtinCloudFormationValidation: false });
  const region = (config as { aws?: { region?: string } }).aws?.region ?? TEST_ENV.region;
  const stack = new MailRelayStack(app, 'Bundled', { env: { ...TEST_ENV, region }, config });
  const assembly = app.synth();
  const template = assembly.getStackByName(stack.stackName).template as { Resources: Resources };
  const out = {} as Record<FunctionName, string>;
  for (const [fn, prefix] of Object.entries(FUNCTIONS) as [FunctionName, string][]) {
    const entry = Object.entries(template.Resources).find(
      ([id, r]) => r.Type === 'AWS::Lambda::Function' && id.startsWith(prefix) && !id.includes('Resources'),
    );
    assert.ok(entry, `no function ${prefix}`);
    const code = entry[1].Properties?.Code as { S3Key: string };
    const assetDir = join(outdir, `asset.${code.S3Key.replace(/\.zip$/, '')}`);
    const isolated = join(work, `${name}-${fn}`);
    cpSync(assetDir, isolated, { recursive: true });
    out[fn] = isolated;
  }
  return out;
}

describe('Lambda bundles from synth', () => {
  let bundles: Record<FunctionName, string>;

  before(() => {
    bundles = synthBundles('example', BUNDLED_CONFIG);
  });

  it('are self-contained ESM files that load in a fresh node process outside the project', async () => {
    for (const [fn, dir] of Object.entries(bundles)) {
      assert.ok(!dir.startsWith(PROJECT_ROOT));
      assert.deepEqual(
        readdirSync(dir).sort(),
        ['index.mjs', 'index.mjs.map'],
        `${fn}: nothing but the bundle and its source map`,
      );
      const code = readFileSync(join(dir, 'index.mjs'), 'utf8');
      assert.doesNotMatch(code, /better-sqlite3/, `${fn} bundles the local SQLite adapter`);
      const r = await runBundle(dir, FUNCTION_ENV);
      assert.equal(r.code, 0, `${fn} failed to load:\n${r.output}`);
    }
  });

  it('fail at cold start, with a message, when the environment is incomplete', async () => {
    // Not on the 100th request: the module itself refuses to load.
    const bad = await runBundle(bundles.router, {});
    assert.notEqual(bad.code, 0);
    assert.match(bad.output, /BUCKET_NAME is not set/);
  });

  describe('invoked against moto_server', {
    skip: !(
      motoAvailable() &&
      requireOrAnnounce(
        awsEventsAvailable(),
        'bundle invocation (AWS event samples)',
        'put ../shared/aws-events next to the clone',
      )
    ),
  }, () => {
    let moto: Moto;
    let env: Record<string, string>;
    let s3: S3Client;
    let index: DynamoDbMailboxIndex;
    const raw = readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml'));
    const sesMessageId = `smoke${randomUUID().replace(/-/g, '')}`;
    const timestamp = new Date(Date.UTC(2025, 4, 6, 7, 8, 9));
    const id = messageIdFor(timestamp.getTime(), sesMessageId);

    before(async () => {
      moto = await startMoto();
      env = { ...moto.env, ...FUNCTION_ENV };
      s3 = new S3Client({ ...moto.clientConfig, forcePathStyle: true });
      await s3.send(new CreateBucketCommand({ Bucket: FUNCTION_ENV.BUCKET_NAME }));
      const dynamo = new DynamoDBClient(moto.clientConfig);
      await dynamo.send(new CreateTableCommand(mailboxTableDefinition(FUNCTION_ENV.TABLE_NAME)));
      index = new DynamoDbMailboxIndex({
        client: DynamoDBDocumentClient.from(dynamo),
        tableName: FUNCTION_ENV.TABLE_NAME,
      });
    });
    after(async () => {
      await moto?.stop();
    });

    it('the router bundle delivers what SES stored under inbound/ (SQS <- SNS <- SES event)', async () => {
      await s3.send(
        new PutObjectCommand({ Bucket: FUNCTION_ENV.BUCKET_NAME, Key: `inbound/${sesMessageId}`, Body: raw }),
      );
      const notification = sesNotification({
        sesMessageId,
        recipients: ['alice@example.com'],
        bucket: FUNCTION_ENV.BUCKET_NAME,
        timestamp,
      });
      const r = await runBundle(bundles.router, env, sqsEvent([sqsRecord(notification)]));
      assert.equal(r.code, 0, r.output);
      assert.deepEqual(r.result, { batchItemFailures: [] }, r.output);
      const stored = await s3.send(
        new GetObjectCommand({
          Bucket: FUNCTION_ENV.BUCKET_NAME,
          Key: `mailboxes/alice@example.com/${id}.eml`,
        }),
      );
      assert.deepEqual(Buffer.from(await (stored.Body?.transformToByteArray() ?? new Uint8Array())), raw);
      assert.deepEqual(await index.stat('alice@example.com'), {
        address: 'alice@example.com',
        messages: 1,
        bytes: raw.length,
      });
    });

    it('the API bundle serves that mailbox to its token, and nobody else', async () => {
      const { token } = await createToken(index, { mailbox: 'alice@example.com' });
      const get = (path: string, auth?: string) =>
        runBundle(
          bundles.api,
          env,
          httpApiEvent({ method: 'GET', path, headers: auth ? { authorization: `Bearer ${auth}` } : {} }),
        );
      const health = await get('/v1/health');
      assert.equal((health.result as { statusCode?: number }).statusCode, 200, health.output);

      const stat = await get('/v1/mailboxes/alice@example.com', token);
      const response = stat.result as { statusCode: number; body: string };
      assert.equal(response.statusCode, 200, stat.output);
      assert.deepEqual(JSON.parse(response.body), {
        address: 'alice@example.com',
        messages: 1,
        bytes: raw.length,
      });

      const list = await get('/v1/mailboxes/alice@example.com/messages', token);
      assert.match((list.result as { body: string }).body, new RegExp(id));

      const anonymous = await get('/v1/mailboxes/alice@example.com');
      assert.equal((anonymous.result as { statusCode: number }).statusCode, 401);
    });

    it('the retention bundle, on its schedule, deletes that message (older than mailboxDays) with its counters', async () => {
      assert.ok(
        Date.now() - timestamp.getTime() > MAILBOX_DAYS * 86_400_000,
        'the fixture message is expired',
      );
      const r = await runBundle(bundles.retention, env, scheduledEvent());
      assert.equal(r.code, 0, r.output);
      assert.deepEqual(
        r.result,
        { mailboxes: 1, deleted: 1, bytes: raw.length, orphans: 0, failures: [], complete: true },
        r.output,
      );
      assert.deepEqual(await index.stat('alice@example.com'), {
        address: 'alice@example.com',
        messages: 0,
        bytes: 0,
      });
      assert.equal(await index.get('alice@example.com', id), null);
      const left = await s3.send(
        new ListObjectsV2Command({ Bucket: FUNCTION_ENV.BUCKET_NAME, Prefix: 'mailboxes/' }),
      );
      assert.deepEqual(left.Contents ?? [], [], 'no blob of the message is left');
    });
  });
});
