/**
 * `mail-relay replay` and `mail-relay reparse` (local data dir and `--stack`) and
 * `mail-relay token create|revoke --stack`
 * (functions/local/cli-aws.ts). The stack is a real CloudFormation stack in a private moto_server,
 * with the bucket, the table and the `BucketName` / `TableName` outputs the relay's stack has.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { CloudFormationClient, CreateStackCommand } from '@aws-sdk/client-cloudformation';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { DynamoDBDocumentClient, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { DynamoDbMailboxIndex } from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { createApp } from '../../functions/api/app.ts';
import { createToken, hashToken } from '../../functions/api/auth.ts';
import { createMailboxApp } from '../../functions/api/mailbox-app.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { ConfigError, MailRelayError } from '../../functions/core/errors.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { deleteMessageBlobs, mailboxKeys } from '../../functions/core/keys.ts';
import { buildNotification } from '../../functions/core/notification.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { type AwsRouterDeps, createAwsRouterDeps } from '../../functions/handlers/router-deps.ts';
import { main } from '../../functions/local/cli.ts';
import {
  commandReparse,
  commandReplay,
  commandTokenForStack,
  commandUpgrade,
  parseSince,
  readStackOutputs,
} from '../../functions/local/cli-aws.ts';
import { ingest } from '../../functions/local/ingest.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { processNotification } from '../../functions/pipeline/router.ts';
import { makeEntry } from '../contract/mailbox-index.contract.ts';
import { startFaultyProxy } from '../helpers/faulty-proxy.ts';
import { type Moto, motoAvailable, startMoto } from '../helpers/moto.ts';
import { listAll } from '../helpers/relay.ts';
import { ATTACHMENT, gbMessage, makeStale, SUBJECT_NOW } from '../helpers/stale-parse.ts';

const STACK = 'mail-relay-cli-test';
const BUCKET = 'mail-relay-cli-bucket';
const TABLE = 'mail-relay-cli-table';
const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const CAROL = 'carol@example.test';
/** The mailbox `import --stack` fills (the other tests count the others' mail). */
const DAVE = 'dave@example.test';
/** The mailbox `export --stack` reads. */
const ERIN = 'erin@example.test';
const CONFIG: RawConfig = { domains: ['example.test'], mailboxes: [ALICE, BOB, CAROL, DAVE, ERIN] };
const LINK_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:mail-relay-links-AbCdEf';

/** The relay stack's storage and outputs, as lib/mail-relay-stack.ts names them. */
const TEMPLATE = {
  Resources: {
    Bucket: { Type: 'AWS::S3::Bucket', Properties: { BucketName: BUCKET } },
    Table: {
      Type: 'AWS::DynamoDB::Table',
      Properties: {
        TableName: TABLE,
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
          { AttributeName: 'unseenPk', AttributeType: 'S' },
        ],
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        GlobalSecondaryIndexes: [
          {
            IndexName: 'unseen',
            KeySchema: [
              { AttributeName: 'unseenPk', KeyType: 'HASH' },
              { AttributeName: 'sk', KeyType: 'RANGE' },
            ],
            Projection: { ProjectionType: 'ALL' },
          },
        ],
      },
    },
  },
  Outputs: {
    BucketName: { Value: { Ref: 'Bucket' } },
    TableName: { Value: { Ref: 'Table' } },
    LinkSecretArn: { Value: LINK_SECRET_ARN },
    ApiUrl: { Value: 'https://api.example.test/' },
  },
};

interface TestIo {
  readonly out: PassThrough;
  readonly err: PassThrough;
  readonly env: NodeJS.ProcessEnv;
  text(): { out: string; err: string };
}

function makeIo(env: NodeJS.ProcessEnv): TestIo {
  const out = new PassThrough();
  const err = new PassThrough();
  const chunks = { out: [] as Buffer[], err: [] as Buffer[] };
  out.on('data', (c: Buffer) => chunks.out.push(c));
  err.on('data', (c: Buffer) => chunks.err.push(c));
  return {
    out,
    err,
    env,
    text: () => ({ out: Buffer.concat(chunks.out).toString(), err: Buffer.concat(chunks.err).toString() }),
  };
}

const available = motoAvailable();

describe('mail-relay replay, reparse, upgrade and token --stack', { skip: !available }, () => {
  let moto: Moto;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let aws: AwsRouterDeps;

  before(async () => {
    moto = await startMoto();
    // The CLI resolves AWS access like the AWS CLI: from the process environment.
    Object.assign(process.env, moto.env);
    const cfn = new CloudFormationClient(moto.clientConfig);
    await cfn.send(new CreateStackCommand({ StackName: STACK, TemplateBody: JSON.stringify(TEMPLATE) }));
    cfn.destroy();
    dir = mkdtempSync(join(tmpdir(), 'mr-cli-aws-'));
    writeFileSync(join(dir, 'mail-relay.config.json'), JSON.stringify(CONFIG));
    env = { MAIL_RELAY_CONFIG: join(dir, 'mail-relay.config.json'), MAIL_RELAY_DATA_DIR: join(dir, 'data') };
    aws = createAwsRouterDeps({
      bucketName: BUCKET,
      tableName: TABLE,
      config: parseConfig(CONFIG),
      forcePathStyle: true,
    });
  });

  after(async () => {
    aws?.clients.s3.destroy();
    aws?.clients.dynamo.destroy();
    aws?.ses.destroy();
    await moto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('parses --since as an ISO date or time, or an age', () => {
    const now = new Date('2025-03-10T12:00:00Z');
    assert.equal(parseSince('2025-03-01', now)?.toISOString(), '2025-03-01T00:00:00.000Z');
    assert.equal(parseSince('2025-03-01T08:30:00+01:00', now)?.toISOString(), '2025-03-01T07:30:00.000Z');
    assert.equal(parseSince('90m', now)?.toISOString(), '2025-03-10T10:30:00.000Z');
    assert.equal(parseSince('7d', now)?.toISOString(), '2025-03-03T12:00:00.000Z');
    for (const bad of ['yesterday', 'March 1', '7 days', '', '2025-13-45'])
      assert.equal(parseSince(bad, now), null, bad);
  });

  it("reads the stack's outputs: bucket, table, and what replayed notices sign their links with", async () => {
    assert.deepEqual(await readStackOutputs(STACK), {
      bucketName: BUCKET,
      tableName: TABLE,
      links: { secretArn: LINK_SECRET_ARN, baseUrl: 'https://api.example.test/' },
    });
  });

  it('token create --stack writes a hashed token to the stack table; revoke removes it', async () => {
    const io = makeIo(env);
    assert.equal(await commandTokenForStack(['create', '--stack', STACK, ALICE, '--label', 'phone'], io), 0);
    const token = io.text().out.trim();
    assert.match(token, /^mr_[A-Za-z0-9_-]{43}$/);
    assert.match(io.text().err, /stored in stack mail-relay-cli-test/);
    const record = await aws.index.getToken(hashToken(token));
    assert.equal(record?.mailbox, ALICE);
    assert.equal(record?.admin, false);
    assert.equal(record?.label, 'phone');
    assert.equal(await aws.index.getToken(token), null, 'the token itself is not stored');

    const adminIo = makeIo(env);
    assert.equal(await commandTokenForStack(['create', '--admin', '--stack', STACK], adminIo), 0);
    assert.equal((await aws.index.getToken(hashToken(adminIo.text().out.trim())))?.admin, true);

    assert.equal(await commandTokenForStack(['revoke', '--stack', STACK, token], makeIo(env)), 0);
    assert.equal(await aws.index.getToken(hashToken(token)), null);
    assert.equal(
      await commandTokenForStack(['revoke', '--stack', STACK, token], makeIo(env)),
      1,
      'already revoked',
    );
  });

  it('--stack looks in the region of aws.region in the configuration, not the shell’s', async () => {
    const region = 'eu-west-1';
    assert.notEqual(process.env.AWS_REGION, region);
    const other = `${STACK}-eu`;
    const table = `${TABLE}-eu`;
    const cfn = new CloudFormationClient({ ...moto.clientConfig, region });
    const template = structuredClone(TEMPLATE);
    template.Resources.Table.Properties.TableName = table;
    template.Resources.Bucket.Properties.BucketName = `${BUCKET}-eu`;
    await cfn.send(new CreateStackCommand({ StackName: other, TemplateBody: JSON.stringify(template) }));
    cfn.destroy();
    const configPath = join(dir, 'eu.config.json');
    writeFileSync(configPath, JSON.stringify({ ...CONFIG, aws: { region } }));
    const euEnv = { ...env, MAIL_RELAY_CONFIG: configPath };
    const shellRegion = process.env.AWS_REGION;

    const io = makeIo(euEnv);
    assert.equal(await commandTokenForStack(['create', '--stack', other, ALICE], io), 0, io.text().err);
    assert.equal(process.env.AWS_REGION, shellRegion, 'the shell’s region is put back');
    const dynamo = new DynamoDBClient({ ...moto.clientConfig, region });
    try {
      const index = new DynamoDbMailboxIndex({
        client: DynamoDBDocumentClient.from(dynamo),
        tableName: table,
      });
      assert.equal((await index.getToken(hashToken(io.text().out.trim())))?.mailbox, ALICE);
    } finally {
      dynamo.destroy();
    }
    // The same command with the shell's region only does not find the stack.
    await assert.rejects(
      commandTokenForStack(['create', '--stack', other, ALICE], makeIo(env)),
      (err: unknown) => err instanceof ConfigError && /does not exist in us-east-1/.test(err.message),
    );
    const replayIo = makeIo(euEnv);
    assert.equal(await commandReplay(['--since', '1d', '--stack', other], replayIo), 0, replayIo.text().err);
    assert.match(replayIo.text().out, /replayed 0 of 0 notifications/);

    // Without aws.region, as the CDK CLI resolves it: AWS_DEFAULT_REGION too (the SDK alone ignores
    // it); with no region anywhere, one line says so.
    const saved = {
      AWS_REGION: process.env.AWS_REGION,
      AWS_DEFAULT_REGION: process.env.AWS_DEFAULT_REGION,
      AWS_CONFIG_FILE: process.env.AWS_CONFIG_FILE,
    };
    try {
      delete process.env.AWS_REGION;
      process.env.AWS_DEFAULT_REGION = region;
      process.env.AWS_CONFIG_FILE = join(dir, 'no-such-aws-config');
      const defaultIo = makeIo(env);
      assert.equal(
        await commandTokenForStack(['create', '--stack', other, ALICE], defaultIo),
        0,
        defaultIo.text().err,
      );
      delete process.env.AWS_DEFAULT_REGION;
      await assert.rejects(
        commandTokenForStack(['create', '--stack', other, ALICE], makeIo(env)),
        (err: unknown) =>
          err instanceof MailRelayError && /^no AWS region: set aws\.region/.test(err.message),
      );
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('token create --stack refuses what is not a mailbox, and names a stack that does not exist', async () => {
    const io = makeIo(env);
    assert.equal(await commandTokenForStack(['create', '--stack', STACK, 'nobody@example.test'], io), 2);
    assert.match(io.text().err, /not a mailbox in the configuration/);
    assert.equal(await commandTokenForStack(['create', ALICE], makeIo(env)), 2, '--stack is required here');
    await assert.rejects(
      commandTokenForStack(['create', '--stack', 'no-such-stack', ALICE], makeIo(env)),
      (err: unknown) => err instanceof ConfigError && /no-such-stack does not exist/.test(err.message),
    );
  });

  it('replay --stack leaves a deleted message deleted, re-delivers it with --restore-deleted, then is a no-op', async () => {
    const ids: string[] = [];
    for (const [i, mailbox] of [ALICE, BOB, ALICE].entries()) {
      const sesMessageId = `cli-replay-${i}`;
      const receivedAt = new Date(Date.UTC(2025, 2, 1, 9, i));
      await aws.blobs.put(
        `inbound/${sesMessageId}`,
        Buffer.from(`Subject: replay ${i}\r\n\r\nbody ${i}\r\n`),
      );
      const notification = buildNotification({
        sesMessageId,
        receivedAt,
        mailFrom: 'sender@remote.test',
        recipients: [mailbox],
        verdicts: UNCHECKED_VERDICTS,
        bucketName: BUCKET,
      });
      await processNotification(aws, notification);
      ids.push(messageIdFor(receivedAt.getTime(), sesMessageId));
    }
    const [first] = ids;
    assert.ok(first !== undefined);
    assert.ok(await aws.index.delete(ALICE, first));

    const kept = makeIo(env);
    assert.equal(
      await commandReplay(['--since', '1h', '--stack', STACK, '--mailbox', ALICE], kept),
      0,
      kept.text().err,
    );
    assert.match(kept.text().out, /^replayed 2 of 3 notifications .*delivered 0, duplicate 2,/);
    assert.equal((await aws.index.stat(ALICE)).messages, 1, 'deleted mail stays deleted');

    const io = makeIo(env);
    assert.equal(
      await commandReplay(['--since', '1h', '--stack', STACK, '--mailbox', ALICE, '--restore-deleted'], io),
      0,
      io.text().err,
    );
    assert.match(
      io.text().out,
      /^replayed 2 of 3 notifications .*delivered 1, duplicate 1,.*skipped 1 \(other mailboxes\), 0 past the replay window \(retention\.inboundDays\), errors 0/,
    );
    assert.match(io.text().err, /s3:\/\/mail-relay-cli-bucket, table mail-relay-cli-table/);
    assert.equal((await aws.index.stat(ALICE)).messages, 2);

    const again = makeIo(env);
    assert.equal(await commandReplay(['--since', '1h', '--stack', STACK], again), 0);
    assert.match(again.text().out, /^replayed 3 of 3 .*delivered 0, duplicate 3,/);
  });

  it('import --stack puts an mbox into the deployed stack (inbound/, notifications, the index): its mail is read there as locally; again a no-op', async () => {
    const mbox = join(dir, 'takeout.mbox');
    writeFileSync(
      mbox,
      'From 1@xxx Tue Mar  4 09:15:00 2025\nFrom: a@remote.test\nTo: dave@example.test\nSubject: imported 1\n' +
        'X-Gmail-Labels: Inbox,Unread\n\none\n\n' +
        'From 2@xxx Tue Mar  4 09:16:00 2025\nFrom: b@remote.test\nTo: dave@example.test, x@other.test\n' +
        'Subject: imported 2\nX-Gmail-Labels: Inbox\n\ntwo\n',
    );
    const io = makeIo(env);
    assert.equal(await main(['import', '--stack', STACK, mbox], io), 0, io.text().err);
    assert.match(
      io.text().err,
      /importing into stack mail-relay-cli-test \(s3:\/\/mail-relay-cli-bucket, table mail-relay-cli-table\)/,
    );
    assert.match(io.text().err, /refused: .*takeout\.mbox#2: x@other\.test: 550 5\.7\.1 Relaying denied/);
    assert.match(io.text().out, /^imported 2\/2 messages from 1 file in [\d.]+s: delivered 2, duplicate 0,/);
    // What the deployed API serves: the mailbox's list, read flags from the export, the raw bytes.
    const page = await aws.index.list(DAVE, { limit: 10 });
    assert.deepEqual(
      page.items.map((e) => [e.subject, e.seen, e.receivedAt]),
      [
        ['imported 2', true, '2025-03-04T09:16:00.000Z'],
        ['imported 1', false, '2025-03-04T09:15:00.000Z'],
      ],
    );
    const raw = await aws.blobs.get(mailboxKeys.raw(DAVE, page.items[1]?.id ?? ''));
    assert.match(
      raw?.toString() ?? '',
      /\r?\nAuthentication-Results: [^\n]*\nFrom: a@remote\.test\n[\s\S]*\n\none\n\n$/,
    );
    const again = makeIo(env);
    assert.equal(await main(['import', '--stack', STACK, mbox], again), 0, again.text().err);
    assert.match(again.text().out, /delivered 0, duplicate 2,/);
    const missing = makeIo(env);
    assert.equal(await main(['import', '--stack', 'no-such-stack', mbox], missing), 1);
    assert.match(missing.text().err, /no-such-stack/);
  });

  it('reparse --stack rewrites what an older parser stored (API: message, LIST, q, parts), keeps ids, seen, STAT and raw, leaves deleted mail deleted', async () => {
    const ids: string[] = [];
    for (const n of [1, 2, 3]) {
      const sesMessageId = `cli-reparse-${n}`;
      const receivedAt = new Date(Date.UTC(2025, 3, 1, 9, n));
      await aws.blobs.put(`inbound/${sesMessageId}`, gbMessage(n, BOB));
      const notification = buildNotification({
        sesMessageId,
        receivedAt,
        mailFrom: 'sender@remote.test',
        recipients: [BOB],
        verdicts: UNCHECKED_VERDICTS,
        bucketName: BUCKET,
      });
      await processNotification(aws, notification);
      const id = messageIdFor(receivedAt.getTime(), sesMessageId);
      await makeStale(aws.blobs, aws.index, BOB, id);
      ids.push(id);
    }
    const [seenId, goneId, otherId] = ids;
    assert.ok(seenId && goneId && otherId);
    await aws.index.setSeen(BOB, seenId, true);
    assert.ok(await aws.index.delete(BOB, goneId));
    await aws.blobs.deletePrefix(mailboxKeys.dir(BOB, goneId));
    await aws.blobs.delete(mailboxKeys.raw(BOB, goneId));

    // Read as a client reads it: the API's own routes over the stack's bucket and table.
    const app = createMailboxApp({ index: aws.index, blobs: aws.blobs });
    const { token } = await createToken(aws.index, { mailbox: BOB, admin: false });
    const get = (path: string) =>
      app.request(`/v1/mailboxes/${BOB}${path}`, { headers: { Authorization: `Bearer ${token}` } });
    // Only this test's mail (bob has the replay test's too).
    const items = async (query = '') =>
      (
        (await (await get(`/messages${query}`)).json()) as {
          items: { id: string; subject: string; seen: boolean }[];
        }
      ).items.filter((i) => ids.includes(i.id));
    const before = await items();
    assert.ok(before.every((i) => i.subject.includes('\uFFFD')));
    const statBefore = await (await get('')).json();
    const rawBefore = Buffer.from(await (await get(`/messages/${seenId}/raw`)).arrayBuffer());

    const io = makeIo(env);
    assert.equal(await commandReparse(['--stack', STACK, '--mailbox', BOB], io), 0, io.text().err);
    assert.match(io.text().out, /^reparsed 2 messages in 1 mailbox, \d+ unchanged, 0 failed\n$/);
    assert.match(
      io.text().err,
      /in stack mail-relay-cli-test \(s3:\/\/mail-relay-cli-bucket, table mail-relay-cli-table\)/,
    );

    const after = await items();
    assert.deepEqual(
      after.map((i) => [i.id, i.seen]),
      before.map((i) => [i.id, i.seen]),
    );
    assert.deepEqual(
      after.map((i) => i.subject),
      [`${SUBJECT_NOW} 3`, `${SUBJECT_NOW} 1`],
    );
    assert.deepEqual(
      (await items(`?q=${encodeURIComponent('全新原装 offer 3')}`)).map((i) => i.id),
      [otherId],
    );
    const message = (await (await get(`/messages/${seenId}`)).json()) as {
      subject: string;
      attachments: { partId: string }[];
    };
    assert.equal(message.subject, `${SUBJECT_NOW} 1`);
    assert.deepEqual(
      message.attachments.map((a) => a.partId),
      ['1'],
    );
    const part = await get(`/messages/${seenId}/parts/1`);
    assert.equal(part.status, 200);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), ATTACHMENT);
    assert.equal((await get(`/messages/${seenId}/parts/2`)).status, 404);
    assert.equal(await aws.blobs.head(mailboxKeys.part(BOB, seenId, '2')), null, 'the stale part removed');
    assert.deepEqual(await (await get('')).json(), statBefore);
    assert.deepEqual(Buffer.from(await (await get(`/messages/${seenId}/raw`)).arrayBuffer()), rawBefore);
    assert.equal((await get(`/messages/${goneId}`)).status, 404);
    assert.equal(await aws.blobs.head(mailboxKeys.summary(BOB, goneId)), null);

    const again = makeIo(env);
    assert.equal(await commandReparse(['--stack', STACK], again), 0, again.text().err);
    // Every mailbox of the table; all of it parsed by this parser already.
    assert.match(
      again.text().out,
      /^reparsed 0 messages in \d+ mailbox(es)?, [1-9]\d* unchanged, 0 failed\n$/,
    );
  });

  it('upgrade --stack puts unread mail an earlier version stored into the unread index: the Unread view lists it before and after', async () => {
    const documents = DynamoDBDocumentClient.from(aws.clients.dynamo);
    const start = Date.UTC(2025, 4, 1);
    const entries = Array.from({ length: 5 }, (_, i) =>
      makeEntry(CAROL, start + i * 60_000, `cli-upgrade-${i}`, { seen: i % 2 === 1 }),
    );
    for (const e of entries) await aws.index.deliver(e);
    // As the version before the index stored them: no index attribute, the mailbox not marked.
    const key = (sk: string) => ({ pk: `MBX#${CAROL}`, sk });
    for (const e of entries) {
      await documents.send(
        new UpdateCommand({ TableName: TABLE, Key: key(`MSG#${e.id}`), UpdateExpression: 'REMOVE unseenPk' }),
      );
    }
    await documents.send(
      new UpdateCommand({ TableName: TABLE, Key: key('STAT'), UpdateExpression: 'REMOVE unseenIndexed' }),
    );
    const app = createMailboxApp({ index: aws.index, blobs: aws.blobs });
    const { token } = await createToken(aws.index, { mailbox: CAROL, admin: false });
    const headers = { Authorization: `Bearer ${token}` };
    const unread = async () =>
      (
        (await (await app.request(`/v1/mailboxes/${CAROL}/messages?unseen=true`, { headers })).json()) as {
          items: { id: string }[];
        }
      ).items.map((i) => i.id);
    const expected = [entries[4]?.id, entries[2]?.id, entries[0]?.id];
    assert.deepEqual(await unread(), expected, 'before the upgrade: complete (read from the mailbox)');
    const inIndex = async () =>
      ((await documents.send(new ScanCommand({ TableName: TABLE, IndexName: 'unseen' }))).Items ?? []).filter(
        (i) => i.pk === `MBX#${CAROL}`,
      ).length;
    assert.equal(await inIndex(), 0);

    const io = makeIo(env);
    assert.equal(await commandUpgrade(['--stack', STACK], io), 0, io.text().err);
    assert.match(io.text().out, /^indexed the unread mail of \d+ mailbox(es)? \(3 entries changed\)\n$/);
    assert.match(io.text().err, /in stack mail-relay-cli-test \(table mail-relay-cli-table\)/);
    assert.equal(await inIndex(), 3);
    assert.deepEqual(await unread(), expected, 'after the upgrade: the same, from the index');
    // Marked read through the API: out of the Unread view.
    const patch = await app.request(`/v1/mailboxes/${CAROL}/messages/${entries[2]?.id}`, {
      method: 'PATCH',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ seen: true }),
    });
    assert.equal(patch.status, 200);
    assert.deepEqual(await unread(), [entries[4]?.id, entries[0]?.id]);
    assert.equal(await inIndex(), 2);

    const again = makeIo(env);
    assert.equal(await commandUpgrade(['--stack', STACK], again), 0, again.text().err);
    assert.equal(again.text().out, 'up to date: every mailbox reads its unread mail from the index\n');

    // An earlier version's router, still running for a moment after the deploy, delivers to the
    // mailbox after it was marked: the entry has no index attribute. --all finds it.
    const late = makeEntry(CAROL, start + 3_600_000, 'cli-upgrade-late');
    await aws.index.deliver(late);
    await documents.send(
      new UpdateCommand({
        TableName: TABLE,
        Key: key(`MSG#${late.id}`),
        UpdateExpression: 'REMOVE unseenPk',
      }),
    );
    assert.deepEqual(await unread(), [entries[4]?.id, entries[0]?.id]);
    const all = makeIo(env);
    assert.equal(await commandUpgrade(['--stack', STACK, '--all'], all), 0, all.text().err);
    assert.match(all.text().out, /^indexed the unread mail of \d+ mailbox(es)? \(1 entry changed\)\n$/);
    assert.deepEqual(await unread(), [late.id, entries[4]?.id, entries[0]?.id]);
  });

  it('export --stack reads a mailbox of the deployed stack, oldest first, page after page, a large message streamed from S3; import brings it back byte for byte', async () => {
    // As SES stores mail: its trace headers first, CRLF; the router copies it into the mailbox.
    const originals: { id: string; raw: Buffer; seen: boolean }[] = [];
    const large = `${'0123456789abcdef'.repeat(4)}\r\n`.repeat(60_000); // ~4 MB
    for (let i = 0; i < 205; i++) {
      const sesMessageId = `cli-export-${i}`;
      const receivedAt = new Date(Date.UTC(2025, 4, 1, 9, 0, i));
      const body =
        i === 7 ? large : i % 50 === 3 ? `From the start ${i}\r\n>From quoted\r\n` : `body ${i}\r\n`;
      const raw = Buffer.from(
        `Return-Path: <sender${i}@remote.test>\r\nReceived: from remote.test by inbound-smtp.us-east-1.amazonaws.com\r\n` +
          ` with SMTP id ${sesMessageId}; ${receivedAt.toUTCString()}\r\n` +
          `From: Sender ${i} <sender${i}@remote.test>\r\nTo: ${ERIN}\r\nSubject: export ${i}\r\n\r\n${body}`,
      );
      await aws.blobs.put(`inbound/${sesMessageId}`, raw);
      const notification = buildNotification({
        sesMessageId,
        receivedAt,
        mailFrom: `sender${i}@remote.test`,
        recipients: [ERIN],
        verdicts: UNCHECKED_VERDICTS,
        bucketName: BUCKET,
      });
      await processNotification(aws, notification);
      const id = messageIdFor(receivedAt.getTime(), sesMessageId);
      if (i % 4 === 0) await aws.index.setSeen(ERIN, id, true);
      originals.push({ id, raw, seen: i % 4 === 0 });
    }
    const path = join(dir, 'erin.mbox');
    const io = makeIo(env);
    assert.equal(await main(['export', ERIN, '--stack', STACK, '--out', path], io), 0, io.text().err);
    assert.match(
      io.text().err,
      new RegExp(`^exported 205 messages \\(\\d+\\.\\d MB\\) of ${ERIN} to ${path}\\n$`),
    );
    const mbox = readFileSync(path, 'latin1');
    const separators = mbox.split('\n').filter((l) => l.startsWith('From '));
    assert.equal(separators.length, 205);
    assert.match(separators[0] ?? '', /^From sender0@remote\.test Thu May {2}1 09:00:00 2025$/);
    assert.match(separators[204] ?? '', /^From sender204@remote\.test Thu May {2}1 09:03:24 2025$/);
    assert.match(mbox, /\n>From the start 3\n>>From quoted\n/);

    const check = async (exported: string, label: string) => {
      const fresh = { ...env, MAIL_RELAY_DATA_DIR: mkdtempSync(join(dir, 'fresh-')) };
      const imported = makeIo(fresh);
      assert.equal(await main(['import', '--to', ERIN, exported], imported), 0, imported.text().err);
      const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: fresh.MAIL_RELAY_DATA_DIR });
      try {
        const entries = await listAll(runtime.index, ERIN);
        assert.equal(entries.length, originals.length, label);
        const back = new Map<string, boolean>();
        for (const e of entries) {
          const raw = await runtime.blobs.get(mailboxKeys.raw(ERIN, e.id));
          back.set((raw ?? Buffer.alloc(0)).toString('latin1'), e.seen);
        }
        for (const [i, o] of originals.entries())
          assert.equal(
            back.get(o.raw.toString('latin1')),
            o.seen,
            `${label}: message ${i} byte for byte, read state`,
          );
        // Imported in the order it was received: the receipt time is the From line's.
        assert.equal(entries.at(-1)?.receivedAt, '2025-05-01T09:00:00.000Z', label);
        // Each with the id it has in the stack (routed under the SES message id the export names).
        assert.deepEqual(
          entries.map((e) => e.id).reverse(),
          originals.map((o) => o.id),
          label,
        );
      } finally {
        await runtime.close();
      }
    };
    await check(path, 'mbox');
    const maildir = join(dir, 'erin-maildir');
    const m = makeIo(env);
    assert.equal(
      await main(['export', ERIN, '--stack', STACK, '--format', 'maildir', '--out', maildir], m),
      0,
      m.text().err,
    );
    assert.equal(readdirSync(join(maildir, 'cur')).length, originals.filter((o) => o.seen).length);
    await check(maildir, 'Maildir');

    // The export imported back into the stack it came from (a restore), after a message was deleted
    // there: nothing is added, unless --restore-deleted, which brings that one back.
    const deletedId = originals[5]?.id ?? '';
    assert.ok(await aws.index.delete(ERIN, deletedId));
    await deleteMessageBlobs(aws.blobs, ERIN, deletedId);
    const restore = async (args: readonly string[]) => {
      const r = makeIo(env);
      assert.equal(await main(['import', '--stack', STACK, '--to', ERIN, ...args, path], r), 0, r.text().err);
      return r.text().out;
    };
    assert.match(await restore([]), /delivered 0, duplicate 205,/);
    assert.equal((await aws.index.stat(ERIN)).messages, 204);
    assert.match(await restore(['--restore-deleted']), /delivered 1, duplicate 204,/);
    const entries = await listAll(aws.index, ERIN);
    assert.equal(entries.length, 205);
    const back = entries.find((e) => e.subject === 'export 5');
    assert.equal(back?.receivedAt, '2025-05-01T09:00:05.000Z', 'at the receipt time it had');
    assert.equal(
      (await aws.blobs.get(mailboxKeys.raw(ERIN, back?.id ?? '')))?.toString(),
      originals[5]?.raw.toString(),
      'as it was stored: no trace header added',
    );

    const unknown = makeIo(env);
    assert.equal(
      await main(['export', 'nobody@example.org', '--stack', STACK, '--out', join(dir, 'x.mbox')], unknown),
      1,
    );
    assert.match(unknown.text().err, /no mail stored for nobody@example\.org in stack mail-relay-cli-test/);
  });

  it('a data dir’s export imported with --stack: each message keeps its id, receipt time and bytes in the stack; again a no-op', async () => {
    // Mail of a data dir (here imported there from two files), moved to the deployed stack.
    const local = { ...env, MAIL_RELAY_DATA_DIR: mkdtempSync(join(dir, 'moving-')) };
    const files = [1, 2].map((i) => {
      const file = join(dir, `moving-${i}.eml`);
      writeFileSync(
        file,
        `From: a${i}@remote.test\r\nTo: ${BOB}\r\nSubject: moving ${i}\r\n` +
          `Date: Tue, 4 Mar 2025 09:1${i}:00 +0000\r\n\r\nbody ${i}\r\n`,
      );
      return file;
    });
    const io = makeIo(local);
    assert.equal(await main(['import', '--to', BOB, ...files], io), 0, io.text().err);
    const exported = join(dir, 'moving.mbox');
    assert.equal(await main(['export', BOB, '--out', exported], makeIo(local)), 0);
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: local.MAIL_RELAY_DATA_DIR });
    const there: { id: string; receivedAt: string; raw: string }[] = [];
    try {
      for (const e of await listAll(runtime.index, BOB)) {
        const raw = await runtime.blobs.get(mailboxKeys.raw(BOB, e.id));
        there.push({ id: e.id, receivedAt: e.receivedAt, raw: raw?.toString('latin1') ?? '' });
      }
    } finally {
      await runtime.close();
    }
    assert.equal(there.length, 2);

    const up = makeIo(env);
    assert.equal(await main(['import', '--stack', STACK, '--to', BOB, exported], up), 0, up.text().err);
    assert.match(up.text().out, /delivered 2, duplicate 0,/);
    for (const m of there) {
      const entry = await aws.index.get(BOB, m.id);
      assert.equal(entry?.receivedAt, m.receivedAt, `${m.id}: in the stack under its id, at its time`);
      const raw = await aws.blobs.get(mailboxKeys.raw(BOB, m.id));
      assert.equal(raw?.toString('latin1'), m.raw, `${m.id}: byte for byte`);
    }
    const again = makeIo(env);
    assert.equal(await main(['import', '--stack', STACK, '--to', BOB, exported], again), 0);
    assert.match(again.text().out, /delivered 0, duplicate 2,/);
  });

  it('export --stack: S3 failing mid-body, a DynamoDB page refused, a blob missing: one line naming the message, exit 1, no stack trace, no partial file', async () => {
    // ERIN's 205 messages from the test above: message 7 is ~4 MB, 200 a page.
    const idOf = (i: number) => messageIdFor(Date.UTC(2025, 4, 1, 9, 0, i), `cli-export-${i}`);
    const large = idOf(7);
    const out = mkdtempSync(join(dir, 'export-faults-'));
    const exportThrough = async (
      pick: Parameters<typeof startFaultyProxy>[1],
      args: readonly string[],
    ): Promise<{ code: number; err: string; failed: string[] }> => {
      const proxy = await startFaultyProxy(moto.endpoint, pick);
      const before = process.env.AWS_ENDPOINT_URL;
      process.env.AWS_ENDPOINT_URL = proxy.endpoint;
      try {
        const io = makeIo(env);
        const code = await main(['export', ERIN, '--stack', STACK, ...args], io);
        return { code, err: io.text().err, failed: proxy.failed };
      } finally {
        process.env.AWS_ENDPOINT_URL = before;
        await proxy.close();
      }
    };
    const where = `stack ${STACK} \\(s3://${BUCKET}, table ${TABLE}\\)`;

    // S3 drops the connection 1 MB into the large message's body.
    const mbox = join(out, 'cut.mbox');
    const cut = await exportThrough(
      (req) =>
        req.method === 'GET' && req.url?.includes(`/${large}.eml`) === true
          ? { kind: 'cut', afterBytes: 1_000_000 }
          : undefined,
      ['--out', mbox],
    );
    assert.equal(cut.failed.length, 1, 'the GET of the large message was cut');
    assert.equal(cut.code, 1, cut.err);
    assert.match(
      cut.err,
      new RegExp(
        `^mail-relay export: cannot read message ${large} \\("export 7", received 2025-05-01T09:00:07\\.000Z\\) from ${where}: ` +
          `[^\\n]+; export again \\(if it fails on the same message again, its stored bytes are damaged\\); nothing was written to ${mbox}\\n$`,
      ),
    );
    assert.deepEqual(readdirSync(out), [], 'no mbox, no temporary file');

    // DynamoDB refuses the second page of the index.
    const page = await exportThrough(
      (req, body) =>
        req.headers['x-amz-target'] === 'DynamoDB_20120810.Query' && body.includes('ExclusiveStartKey')
          ? {
              kind: 'deny',
              type: 'AccessDeniedException',
              message: 'not authorized to perform dynamodb:Query (injected)',
            }
          : undefined,
      ['--format', 'maildir', '--out', join(out, 'maildir')],
    );
    assert.equal(page.failed.length, 1, 'the second page was refused');
    assert.equal(page.code, 1, page.err);
    assert.match(
      page.err,
      new RegExp(
        `^mail-relay export: cannot list the mail of ${ERIN} in ${where} after message ${idOf(199)} \\("export 199", [^)]+\\): ` +
          `not authorized to perform dynamodb:Query \\(injected\\); export again; ` +
          `the 200 messages before it are in ${join(out, 'maildir')} \\(--force adds the rest\\)\\n$`,
      ),
    );
    assert.deepEqual(readdirSync(join(out, 'maildir', 'tmp')), []);
    rmSync(join(out, 'maildir'), { recursive: true });

    // A message's object deleted from the bucket behind the index's back.
    const key = mailboxKeys.raw(ERIN, idOf(100));
    const kept = await aws.blobs.get(key);
    assert.ok(kept);
    await aws.blobs.delete(key);
    try {
      const missing = await exportThrough(() => undefined, ['--out', mbox]);
      assert.equal(missing.code, 1, missing.err);
      assert.match(
        missing.err,
        new RegExp(
          `^mail-relay export: message ${idOf(100)} \\("export 100", [^)]+\\) of ${ERIN} is in the index of ${where} ` +
            `but its stored bytes \\(${key}\\) are missing: .*; nothing was written to ${mbox}\\n$`,
        ),
      );
      for (const r of [cut, page, missing]) assert.doesNotMatch(r.err, /^\s+at /m, 'no stack trace');
      assert.deepEqual(readdirSync(out), []);
    } finally {
      await aws.blobs.put(key, kept);
    }
  });

  it('export --sent --stack writes a mailbox’s sent view (POST …/send through SES); import --sent-of brings it into a data dir’s sent view, and --stack into a stack’s, routed nowhere; again a no-op', async () => {
    // SES (moto too) sends only from a verified identity.
    const sesv2 = new SESv2Client(moto.clientConfig);
    await sesv2.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    sesv2.destroy();
    const config = parseConfig(CONFIG);
    const app = createApp({
      index: aws.index,
      blobs: aws.blobs,
      send: { config, index: aws.index, blobs: aws.blobs, outbound: aws.outbound, parser: aws.parser },
    });
    const tokens = {
      [CAROL]: (await createToken(aws.index, { mailbox: CAROL })).token,
      [DAVE]: (await createToken(aws.index, { mailbox: DAVE })).token,
    };
    const api = (owner: typeof CAROL | typeof DAVE, path: string, init: RequestInit = {}) =>
      app.request(`/v1/mailboxes/${owner}${path}`, {
        ...init,
        headers: { Authorization: `Bearer ${tokens[owner]}`, 'Content-Type': 'application/json' },
      });
    /** The sent view as the API serves it: each message's raw bytes with its read state; and STAT. */
    const sentView = async (owner: typeof CAROL | typeof DAVE) => {
      const list = (await (await api(owner, '/messages?view=sent')).json()) as {
        items: { id: string; seen: boolean; receivedAt: string }[];
      };
      const messages = new Map<string, { seen: boolean; second: string }>();
      for (const item of list.items) {
        const raw = await api(owner, `/messages/${item.id}/raw?view=sent`);
        assert.equal(raw.status, 200);
        messages.set(Buffer.from(await raw.arrayBuffer()).toString('latin1'), {
          seen: item.seen,
          second: item.receivedAt.slice(0, 19),
        });
      }
      const stat = (await (await api(owner, '?view=sent')).json()) as { messages: number; bytes: number };
      return { messages, stat: { messages: stat.messages, bytes: stat.bytes } };
    };
    const ids: string[] = [];
    for (const [i, text] of ['From the start of a line.\n>From quoted.\n', 'two', 'three'].entries()) {
      const res = await api(CAROL, '/send', {
        method: 'POST',
        body: JSON.stringify({ to: `friend${i}@remote.test`, subject: `sent ${i}`, text }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      ids.push(((await res.json()) as { id: string }).id);
    }
    const read = await api(CAROL, `/messages/${ids[1]}?view=sent`, {
      method: 'PATCH',
      body: JSON.stringify({ seen: true }),
    });
    assert.equal(read.status, 200, await read.clone().text());
    const original = await sentView(CAROL);
    assert.equal(original.messages.size, 3);
    const sentBySes = (await moto.sentRawMessages()).length;

    const path = join(dir, 'carol.sent.mbox');
    const io = makeIo(env);
    assert.equal(
      await main(['export', CAROL, '--sent', '--stack', STACK, '--out', path], io),
      0,
      io.text().err,
    );
    assert.match(
      io.text().err,
      /^exported 3 messages \(\d+\.\d MB\) of the sent mail of carol@example\.test to /m,
    );
    const separators = readFileSync(path, 'latin1')
      .split('\n')
      .filter((l) => l.startsWith('From '));
    assert.deepEqual(
      separators.map((l) => l.split(' ')[1]),
      [CAROL, CAROL, CAROL],
      'each From line names the sender, the mailbox',
    );
    assert.match(readFileSync(path, 'latin1'), /\n>From the start of a line\.\n>>From quoted\.\n/);

    // Into a fresh data dir's sent view, as it was.
    const fresh = { ...env, MAIL_RELAY_DATA_DIR: mkdtempSync(join(dir, 'fresh-sent-')) };
    const local = makeIo(fresh);
    assert.equal(await main(['import', '--sent-of', CAROL, path], local), 0, local.text().err);
    assert.match(local.text().out, /delivered 3, duplicate 0,/);
    const runtime = createLocalRuntime({ config, dataDir: fresh.MAIL_RELAY_DATA_DIR });
    try {
      const back = new Map<string, { seen: boolean; second: string }>();
      for (const e of await listAll(runtime.index, `${CAROL}/sent`)) {
        const raw = await runtime.blobs.get(mailboxKeys.raw(`${CAROL}/sent`, e.id));
        back.set(raw?.toString('latin1') ?? '', { seen: e.seen, second: e.receivedAt.slice(0, 19) });
      }
      assert.deepEqual(back, original.messages, 'byte for byte, read state, receipt time');
      assert.equal((await runtime.index.stat(CAROL)).messages, 0, 'nothing in the inbox');
    } finally {
      await runtime.close();
    }

    // Up into a stack: dave's sent view (another mailbox, so that the ids are new there).
    const daveInbox = (await aws.index.stat(DAVE)).messages;
    const up = makeIo(env);
    assert.equal(await main(['import', '--stack', STACK, '--sent-of', DAVE, path], up), 0, up.text().err);
    assert.match(
      up.text().err,
      /^importing into the sent mail of dave@example\.test in stack mail-relay-cli-test \(s3:\/\/mail-relay-cli-bucket, table mail-relay-cli-table\)\n/,
    );
    assert.match(up.text().out, /^imported 3\/3 messages from 1 file in [\d.]+s: delivered 3, duplicate 0,/);
    const dave = await sentView(DAVE);
    assert.deepEqual(
      dave,
      original,
      "dave's sent view serves carol's sent mail as it was, with its read state",
    );
    assert.equal((await aws.index.stat(DAVE)).messages, daveInbox, 'nothing routed into the inbox');
    assert.equal((await moto.sentRawMessages()).length, sentBySes, 'nothing sent');
    const again = makeIo(env);
    assert.equal(
      await main(['import', '--stack', STACK, '--sent-of', DAVE, path], again),
      0,
      again.text().err,
    );
    assert.match(again.text().out, /delivered 0, duplicate 3,/);
    assert.deepEqual((await sentView(DAVE)).stat, original.stat);

    const both = makeIo(env);
    assert.equal(await main(['import', '--stack', STACK, '--sent-of', DAVE, '--to', DAVE, path], both), 2);
    assert.match(both.text().err, /--sent-of puts the mail into a sent view, --to routes it to mailboxes/);
  });

  it('replay on the local data dir restores a deleted delivery when asked; bad arguments are usage errors', async () => {
    const runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: join(dir, 'data') });
    let id: string;
    try {
      const r = await ingest(runtime, {
        body: Buffer.from('Subject: local\r\n\r\nlocal body\r\n'),
        mailFrom: 'sender@remote.test',
        recipients: [BOB],
        via: { protocol: 'LOCAL' },
      });
      id = r.id;
      assert.ok(await runtime.index.delete(BOB, id));
    } finally {
      await runtime.close();
    }
    const kept = makeIo(env);
    assert.equal(await commandReplay(['--since', '10m'], kept), 0, kept.text().err);
    assert.match(kept.text().out, /delivered 0, duplicate 1,/);
    const io = makeIo(env);
    assert.equal(await commandReplay(['--since', '10m', '--restore-deleted'], io), 0, io.text().err);
    assert.match(io.text().out, /delivered 1,/);
    const check = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: join(dir, 'data') });
    try {
      assert.ok((await check.index.get(BOB, id)) !== null, 'the message is back');
    } finally {
      await check.close();
    }

    assert.equal(await commandReplay([], makeIo(env)), 2, '--since is required');
    assert.equal(await commandReplay(['--since', 'last tuesday'], makeIo(env)), 2);
    assert.equal(await commandReplay(['--since', '1h', '--mailbox', 'not an address'], makeIo(env)), 2);
    assert.equal(await commandReplay(['--since', '1h', '--bogus'], makeIo(env)), 2);
  });
});
