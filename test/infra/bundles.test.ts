/**
 * What ships is what was tested: the stack is synthesized WITH bundling (local esbuild, as
 * `cdk deploy` does), and each Lambda bundle it produced is loaded by a fresh `node` process from a
 * directory outside the project (so nothing can come from node_modules), then invoked against
 * moto_server: the router delivers a message SES stored, the API serves it back (its S3 client
 * loaded on that first read), the retention sweep deletes it once it is older than
 * `retention.mailboxDays`, the send function sends through SES and keeps the sent copy, and a
 * message in a double-byte charset is decoded with the iconv-lite table shipped beside the
 * router's bundle. What the bundles contain is checked from their source maps: sizes are
 * deterministic, times are not (those are bench/bundles.ts's).
 *
 * Every step that runs a bundle runs twice: on the Node that runs the tests and on the Node that
 * Lambda runs (HOUSE_RUNTIME's major; test/helpers/lambda-node.ts says where it comes from), where
 * no step may make Node print a warning.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { App } from 'aws-cdk-lib';
import {
  DynamoDbMailboxIndex,
  mailboxTableDefinition,
} from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { createToken } from '../../functions/api/auth.ts';
import { inboxCsp } from '../../functions/api/inbox.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import { signedBlobUrl } from '../../functions/core/signed-links.ts';
import { HOUSE_RUNTIME } from '../../lib/house-function.ts';
import { API_FORBIDDEN_PACKAGES } from '../../lib/mail-relay.ts';
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
import { findLambdaNode, LAMBDA_NODE_HINT, LAMBDA_NODE_MAJOR } from '../helpers/lambda-node.ts';
import { type Moto, motoAvailable, startMoto } from '../helpers/moto.ts';
import { run } from '../helpers/process.ts';
import { FUNCTION_ENV, processWarnings, runBundle } from './bundle-runner.ts';
import { exampleConfig, type Resources, TEST_ENV } from './infra-helpers.ts';

const work = mkdtempSync(join(tmpdir(), 'mail-relay-bundles-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** The bundle of each function, by the construct path prefix of its logical id. */
const FUNCTIONS = {
  router: 'MailRelayRouter',
  api: 'MailRelayApiFunction',
  send: 'MailRelaySendFunction',
  activator: 'MailRelayIngestActivateRuleSet',
  retention: 'MailRelayRetentionSweep',
} as const;

/** Budgets of docs/performance.md (issue 7): bytes of code in the asset, source maps not counted. */
const MAX_CODE_BYTES: Partial<Record<keyof typeof FUNCTIONS, number>> = {
  api: 1024 * 1024,
  router: 2 * 1024 * 1024,
};

/** Every file of an asset, relative to it. */
function assetFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => statSync(join(dir, f)).isFile())
    .sort();
}

/** Bytes of what an asset loads (code and data files), without its source maps. */
function codeBytes(dir: string): number {
  return assetFiles(dir)
    .filter((f) => !f.endsWith('.map'))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

/** The npm packages whose code is in an output file, from its source map. */
function packagesIn(file: string): Set<string> {
  const map = JSON.parse(readFileSync(`${file}.map`, 'utf8')) as { sources: string[] };
  const out = new Set<string>();
  for (const source of map.sources) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(source);
    if (m?.[1]) out.add(m[1]);
  }
  return out;
}

/** The .mjs files of an asset that `index.mjs` loads when it is imported: itself and its static imports, transitively. */
function loadedAtImport(dir: string): Set<string> {
  const loaded = new Set<string>();
  const visit = (file: string) => {
    if (loaded.has(file)) return;
    loaded.add(file);
    const code = readFileSync(join(dir, file), 'utf8');
    // esbuild's output: `import{a as b}from"./chunk-X.mjs"` or `import"./chunk-X.mjs"`; import("…") is not followed.
    for (const m of code.matchAll(/(?:from|import)\s*"\.\/([\w.-]+\.mjs)"/g)) if (m[1]) visit(m[1]);
  };
  visit('index.mjs');
  return loaded;
}

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

/**
 * The Node binaries every bundle runs on: this process's, and the Lambda runtime's (HOUSE_RUNTIME's
 * major, test/helpers/lambda-node.ts) unless they are the same major. Without the latter the suite
 * says so in one line (and fails under MAIL_RELAY_FULL_TESTS=1); a binary that is there but is not
 * that major fails the file.
 */
const lambdaNode = findLambdaNode();
if (lambdaNode.kind === 'wrong') {
  throw new Error(`${lambdaNode.path} cannot stand for ${HOUSE_RUNTIME.name}: ${lambdaNode.problem}`);
}
const RUNTIMES: { readonly label: string; readonly node: string; readonly lambda: boolean }[] = [
  {
    label: `Node ${process.version} (this process${lambdaNode.kind === 'self' ? `, ${HOUSE_RUNTIME.name}` : ''})`,
    node: process.execPath,
    lambda: lambdaNode.kind === 'self',
  },
];
if (lambdaNode.kind === 'found') {
  RUNTIMES.push({
    label: `Node ${lambdaNode.version} (${HOUSE_RUNTIME.name})`,
    node: lambdaNode.path,
    lambda: true,
  });
} else if (lambdaNode.kind === 'missing') {
  requireOrAnnounce(
    false,
    `running the Lambda bundles on ${HOUSE_RUNTIME.name}'s Node ${LAMBDA_NODE_MAJOR} as well as on ${process.version}`,
    LAMBDA_NODE_HINT,
  );
}
/** moto and the AWS event samples, asked once: the suites below share them. */
const awsReady =
  motoAvailable() &&
  requireOrAnnounce(
    awsEventsAvailable(),
    'bundle invocation (AWS event samples)',
    'put ../shared/aws-events next to the clone',
  );

describe('Lambda bundles from synth', () => {
  let bundles: Record<FunctionName, string>;
  let sharedMoto: Moto | undefined;

  before(async () => {
    bundles = synthBundles('example', BUNDLED_CONFIG);
    if (awsReady) sharedMoto = await startMoto();
  });
  after(async () => {
    await sharedMoto?.stop();
  });

  it('are self-contained ESM files outside the project, with their source maps', () => {
    for (const [fn, dir] of Object.entries(bundles)) {
      assert.ok(!dir.startsWith(PROJECT_ROOT));
      const files = assetFiles(dir);
      // index.mjs, the chunks it loads with import(), iconv-lite's tables (router, send), each .mjs with its map.
      for (const f of files) {
        assert.match(
          f,
          /^(?:index\.mjs|[\w-]+-[A-Z0-9]{8}\.mjs|iconv-lite-tables\/[\w.-]+\.json)(?:\.map)?$/,
          `${fn}: unexpected file ${f}`,
        );
        if (f.endsWith('.mjs')) assert.ok(files.includes(`${f}.map`), `${fn}: ${f} has no source map`);
      }
      assert.ok(files.includes('index.mjs'), `${fn}: no index.mjs`);
      for (const f of files.filter((x) => x.endsWith('.mjs'))) {
        assert.doesNotMatch(
          readFileSync(join(dir, f), 'utf8'),
          /better-sqlite3/,
          `${fn} bundles the local SQLite adapter`,
        );
      }
    }
  });

  it('the API bundle carries no parser, composer or SES client, and stays within its budget; so does the router', () => {
    const outputs = assetFiles(bundles.api).filter((f) => f.endsWith('.mjs'));
    const packages = new Set(outputs.flatMap((f) => [...packagesIn(join(bundles.api, f))]));
    for (const p of API_FORBIDDEN_PACKAGES) assert.ok(!packages.has(p), `the API bundle contains ${p}`);
    assert.ok(
      packages.has('@aws-sdk/client-s3') && packages.has('hono'),
      'the source maps name the packages',
    );
    for (const [fn, max] of Object.entries(MAX_CODE_BYTES) as [FunctionName, number][]) {
      const bytes = codeBytes(bundles[fn]);
      assert.ok(bytes <= max, `${fn}: ${bytes} bytes of code, the budget is ${max}`);
    }
    // The send function is the one that parses and composes.
    const send = new Set(
      assetFiles(bundles.send)
        .filter((f) => f.endsWith('.mjs'))
        .flatMap((f) => [...packagesIn(join(bundles.send, f))]),
    );
    assert.ok(send.has('mailparser') && send.has('nodemailer') && send.has('@aws-sdk/client-sesv2'));
  });

  it('the API loads its S3 client only when a request needs it', () => {
    const loaded = loadedAtImport(bundles.api);
    const withS3 = assetFiles(bundles.api).filter(
      (f) => f.endsWith('.mjs') && packagesIn(join(bundles.api, f)).has('@aws-sdk/client-s3'),
    );
    assert.ok(withS3.length > 0, 'the S3 client is in the asset');
    for (const f of withS3) assert.ok(!loaded.has(f), `${f} (the S3 client) is loaded at cold start`);
    assert.ok(
      [...loaded].some((f) => packagesIn(join(bundles.api, f)).has('@aws-sdk/client-dynamodb')),
      'the DynamoDB client is loaded at cold start',
    );
  });

  it('the router and the API load the Secrets Manager client (notice links) and the router its SES v1 client (bounces) only when used', () => {
    for (const fn of ['router', 'api'] as const) {
      const dir = bundles[fn];
      const chunks = assetFiles(dir).filter((f) => f.endsWith('.mjs') && f !== 'index.mjs');
      const withSecrets = chunks.filter((f) =>
        packagesIn(join(dir, f)).has('@aws-sdk/client-secrets-manager'),
      );
      assert.ok(withSecrets.length > 0, `${fn}: the Secrets Manager client is in the asset`);
      const loaded = loadedAtImport(dir);
      for (const f of withSecrets)
        assert.ok(!loaded.has(f), `${fn}: ${f} (Secrets Manager) is loaded at cold start`);
      // The router's SES v1 client (bounces, ADR 16): in the asset, loaded by a first bounce only.
      const withSesV1 = chunks.filter((f) => packagesIn(join(dir, f)).has('@aws-sdk/client-ses'));
      if (fn === 'router') {
        assert.ok(withSesV1.length > 0, 'router: the SES v1 client is in the asset');
        for (const f of withSesV1) assert.ok(!loaded.has(f), `router: ${f} (SES v1) is loaded at cold start`);
      } else {
        assert.deepEqual(withSesV1, [], `${fn} cannot bounce`);
      }
    }
  });

  for (const { label, node, lambda } of RUNTIMES) {
    describe(`run by ${label}`, () => {
      /**
       * On the Lambda runtime's Node, nothing the functions do may make Node warn (a deprecation
       * there is a line in every cold start's log, and an error to come). This process's Node may
       * be older: the AWS SDK warns that it will not support Node 20 for long.
       */
      const assertQuiet = (warnings: string[], what: string) => {
        if (lambda) assert.deepEqual(warnings, [], `${what} made ${label} warn`);
      };
      /** runBundle on this runtime's node. */
      const invoke = async (dir: string, env: Readonly<Record<string, string>>, event?: unknown) => {
        const r = await runBundle(dir, env, event, node);
        const fn = Object.entries(bundles).find(([, d]) => d === dir)?.[0] ?? dir;
        assertQuiet(r.warnings, `the ${fn} function`);
        return r;
      };

      it('every bundle loads in a fresh node process outside the project', async () => {
        for (const [fn, dir] of Object.entries(bundles)) {
          const r = await invoke(dir, FUNCTION_ENV);
          assert.equal(r.code, 0, `${fn} failed to load:\n${r.output}`);
        }
      });

      it('the router loads no charset table at cold start', async () => {
        // Every request needs the index; whether the first one also decodes GBK or Shift_JIS is up to the mail.
        const probe = [
          "import { createRequire } from 'node:module';",
          'await import(process.argv[1]);',
          'const cache = createRequire(import.meta.url).cache;',
          "console.log(JSON.stringify(Object.keys(cache).filter((k) => k.includes('iconv-lite-tables'))));",
        ].join('\n');
        const r = await run(node, ['--input-type=module', '-e', probe, join(bundles.router, 'index.mjs')], {
          cwd: bundles.router,
          env: { PATH: process.env.PATH ?? '', ...FUNCTION_ENV },
        });
        assert.equal(r.code, 0, r.stderr);
        assertQuiet(processWarnings(r.stderr), 'the router');
        assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? 'null'), []);
      });

      it('every chunk of the router and the API loads (what a first notice, or a first click on one, loads)', async () => {
        for (const fn of ['router', 'api'] as const) {
          const dir = bundles[fn];
          const chunks = assetFiles(dir).filter((f) => f.endsWith('.mjs') && f !== 'index.mjs');
          // In a fresh process, outside the project.
          const probe = 'for (const f of process.argv.slice(1)) await import(f);';
          const r = await run(
            node,
            ['--input-type=module', '-e', probe, ...['index.mjs', ...chunks].map((f) => join(dir, f))],
            { cwd: dir, env: { PATH: process.env.PATH ?? '', ...FUNCTION_ENV } },
          );
          assert.equal(r.code, 0, `${fn}: ${r.stderr}`);
          assertQuiet(processWarnings(r.stderr), `${fn}'s chunks`);
        }
      });

      it('a stack from a bundle maps back to the source with the maps in the asset (scripts/map-stack.mjs)', async () => {
        // The functions run without --enable-source-maps: stacks in their logs name minified positions.
        const thrower = [
          'const { handler } = await import(process.argv[1]);',
          'try { await handler(null); } catch (err) { console.log(err.stack); }',
        ].join('\n');
        const env = { PATH: process.env.PATH ?? '', ...FUNCTION_ENV };
        const r = await run(node, ['--input-type=module', '-e', thrower, join(bundles.api, 'index.mjs')], {
          cwd: bundles.api,
          env,
        });
        assert.equal(r.code, 0, r.stderr);
        assertQuiet(processWarnings(r.stderr), 'the API');
        assert.match(r.stdout, /index\.mjs:\d+:\d+/, 'the stack names the minified bundle');
        // The mapper is a tool of the checkout: it runs on this process's node.
        const mapped = await run(
          process.execPath,
          [join(PROJECT_ROOT, 'scripts/map-stack.mjs'), bundles.api],
          {
            input: r.stdout,
            env,
          },
        );
        assert.equal(mapped.code, 0, mapped.stderr);
        assert.match(mapped.stdout, /functions\/handlers\/http-api\.ts:\d+:\d+/, mapped.stdout);
      });

      it('fail at cold start, with a message, when the environment is incomplete', async () => {
        // Not on the 100th request: the module itself refuses to load.
        const bad = await invoke(bundles.router, {});
        assert.notEqual(bad.code, 0);
        assert.match(bad.output, /BUCKET_NAME is not set/);
      });

      describe('invoked against moto_server', { skip: !awsReady }, () => {
        let moto: Moto;
        let env: Record<string, string>;
        let s3: S3Client;
        let index: DynamoDbMailboxIndex;
        const raw = readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml'));
        const sesMessageId = `smoke${randomUUID().replace(/-/g, '')}`;
        const timestamp = new Date(Date.UTC(2025, 4, 6, 7, 8, 9));
        const id = messageIdFor(timestamp.getTime(), sesMessageId);

        before(async () => {
          assert.ok(sharedMoto);
          moto = sharedMoto;
          // The same fixtures for each runtime, from an empty moto: the retention sweep counts every mailbox.
          await moto.reset();
          env = { ...moto.env, ...FUNCTION_ENV };
          s3 = new S3Client({ ...moto.clientConfig, forcePathStyle: true });
          await s3.send(new CreateBucketCommand({ Bucket: FUNCTION_ENV.BUCKET_NAME }));
          const dynamo = new DynamoDBClient(moto.clientConfig);
          await dynamo.send(new CreateTableCommand(mailboxTableDefinition(FUNCTION_ENV.TABLE_NAME)));
          index = new DynamoDbMailboxIndex({
            client: DynamoDBDocumentClient.from(dynamo),
            tableName: FUNCTION_ENV.TABLE_NAME,
          });
          // SES (and moto) send only from verified identities: the domain, for POST …/send.
          const ses = new SESv2Client(moto.clientConfig);
          await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.com' }));
          ses.destroy();
        });

        it('the router bundle delivers what SES stored under inbound/ (SQS <- SNS <- SES event)', async () => {
          await s3.send(
            new PutObjectCommand({
              Bucket: FUNCTION_ENV.BUCKET_NAME,
              Key: `inbound/${sesMessageId}`,
              Body: raw,
            }),
          );
          const notification = sesNotification({
            sesMessageId,
            recipients: ['alice@example.com'],
            bucket: FUNCTION_ENV.BUCKET_NAME,
            timestamp,
          });
          const r = await invoke(bundles.router, env, sqsEvent([sqsRecord(notification)]));
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
            invoke(
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

          const me = await get('/v1/me', token);
          assert.deepEqual(
            JSON.parse((me.result as { body: string }).body).mailbox,
            'alice@example.com',
            me.output,
          );
          // The web inbox: its files are in the bundle (this directory has no web/ beside it).
          for (const [path, file] of [
            ['/inbox/', 'index.html'],
            ['/inbox/inbox.js', 'inbox.js'],
            ['/inbox/inbox.css', 'inbox.css'],
          ] as const) {
            const page = (await get(path)).result as {
              statusCode: number;
              body: string;
              isBase64Encoded?: boolean;
              headers?: Record<string, string>;
            };
            assert.equal(page.statusCode, 200, path);
            // The page's policy: the one thing between a message and the inbox (and what lets a
            // message's frame show remote images once asked, and only then), as locally, plus the
            // bucket's origin, where the API's redirects lead (presigned S3 URLs).
            assert.equal(page.headers?.['content-security-policy'], inboxCsp(moto.endpoint), path);
            const body = page.isBase64Encoded ? Buffer.from(page.body, 'base64').toString('utf8') : page.body;
            assert.equal(body, readFileSync(join(PROJECT_ROOT, 'web/inbox', file), 'utf8'), path);
          }

          const anonymous = await get('/v1/mailboxes/alice@example.com');
          assert.equal((anonymous.result as { statusCode: number }).statusCode, 401);

          // The first read of a message's bytes loads the S3 client from its chunk, beside index.mjs.
          const rawRead = await get(`/v1/mailboxes/alice@example.com/messages/${id}/raw`, token);
          const rawResponse = rawRead.result as {
            statusCode: number;
            body: string;
            isBase64Encoded: boolean;
          };
          assert.equal(rawResponse.statusCode, 200, rawRead.output);
          assert.ok(rawResponse.isBase64Encoded);
          assert.deepEqual(Buffer.from(rawResponse.body, 'base64'), raw);

          // POST …/send is the send function's: API Gateway never routes it here, and this app does not
          // serve it, but it documents it.
          const post = await invoke(
            bundles.api,
            env,
            httpApiEvent({
              method: 'POST',
              path: '/v1/mailboxes/alice@example.com/send',
              headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
              body: JSON.stringify({ to: 'friend@elsewhere.test', text: 'hi' }),
            }),
          );
          const notHere = post.result as { statusCode: number; body: string };
          assert.equal(notHere.statusCode, 404, post.output);
          assert.equal(JSON.parse(notHere.body).error.code, 'not_found');
          const openapi = await get('/v1/openapi.json');
          const paths = JSON.parse((openapi.result as { body: string }).body).paths as Record<string, object>;
          assert.ok(paths['/v1/mailboxes/{address}/send'] && 'post' in paths['/v1/mailboxes/{address}/send']);
        });

        it("the API bundle answers a notice link signed with the stack's link secret with a 307 to S3", async () => {
          const secret = randomUUID().replace(/-/g, '').repeat(2);
          const sm = new SecretsManagerClient(moto.clientConfig);
          const { ARN } = await sm.send(
            new CreateSecretCommand({ Name: 'bundle-links', SecretString: secret }),
          );
          sm.destroy();
          const key = 'forwarded/01JBUNDLE0000000000000000A.eml';
          await s3.send(new PutObjectCommand({ Bucket: FUNCTION_ENV.BUCKET_NAME, Key: key, Body: raw }));
          const link = new URL(
            signedBlobUrl({ baseUrl: 'https://api.example.com/', secret, key, expiresIn: 3600 }),
          );
          const r = await invoke(
            bundles.api,
            { ...env, LINK_SECRET_ARN: String(ARN) },
            httpApiEvent({ method: 'GET', path: `${link.pathname}${link.search}` }),
          );
          const reply = r.result as { statusCode: number; headers: Record<string, string> };
          assert.equal(reply?.statusCode, 307, r.output);
          const location = new URL(reply.headers.location ?? '');
          assert.equal(location.pathname, `/${FUNCTION_ENV.BUCKET_NAME}/${key}`);
          const res = await fetch(location);
          assert.deepEqual(Buffer.from(await res.arrayBuffer()), raw);
        });

        it('the retention bundle, on its schedule, deletes that message (older than mailboxDays) with its counters', async () => {
          assert.ok(
            Date.now() - timestamp.getTime() > MAILBOX_DAYS * 86_400_000,
            'the fixture message is expired',
          );
          const r = await invoke(bundles.retention, env, scheduledEvent());
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

        it('the send bundle sends through SES and keeps the copy in the sent view, which the API bundle serves', async () => {
          const { token } = await createToken(index, { mailbox: 'alice@example.com' });
          const send = await invoke(
            bundles.send,
            env,
            httpApiEvent({
              method: 'POST',
              path: '/v1/mailboxes/alice@example.com/send',
              headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
              body: JSON.stringify({
                to: 'friend@elsewhere.test',
                subject: 'From the send bundle',
                text: 'hi\n',
              }),
            }),
          );
          const response = send.result as { statusCode: number; body: string };
          assert.equal(response.statusCode, 200, send.output);
          const sent = JSON.parse(response.body) as { id: string; messageId: string; duplicate: boolean };
          assert.equal(sent.duplicate, false);
          const ses = (await moto.sentRawMessages()).find((m) => m.id === sent.messageId);
          assert.ok(ses?.raw_data.includes('Subject: From the send bundle'), 'SES got the message');

          const list = await invoke(
            bundles.api,
            env,
            httpApiEvent({
              method: 'GET',
              path: '/v1/mailboxes/alice@example.com/messages?view=sent',
              headers: { authorization: `Bearer ${token}` },
            }),
          );
          const items = JSON.parse((list.result as { body: string }).body).items as {
            id: string;
            subject: string;
          }[];
          assert.deepEqual(
            items.map((i) => [i.id, i.subject]),
            [[sent.id, 'From the send bundle']],
          );
          assert.ok(await index.get(sentMailboxKey('alice@example.com'), sent.id));
          // An unauthenticated request is refused by the same shell as the API's.
          const anonymous = await invoke(
            bundles.send,
            env,
            httpApiEvent({ method: 'POST', path: '/v1/mailboxes/alice@example.com/send', body: '{}' }),
          );
          assert.equal((anonymous.result as { statusCode: number }).statusCode, 401, anonymous.output);
        });

        it('the router bundle decodes a GBK message with the iconv-lite table shipped beside it', async () => {
          const gbkId = `gbk${randomUUID().replace(/-/g, '')}`;
          const at = new Date();
          // 你好世界 in GBK.
          const body = Buffer.from([0xc4, 0xe3, 0xba, 0xc3, 0xca, 0xc0, 0xbd, 0xe7]);
          const gbk = Buffer.concat([
            Buffer.from(
              'From: sender@elsewhere.test\r\nTo: bob@example.com\r\nSubject: gbk\r\n' +
                'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=gbk\r\nContent-Transfer-Encoding: 8bit\r\n\r\n',
            ),
            body,
            Buffer.from('\r\n'),
          ]);
          await s3.send(
            new PutObjectCommand({ Bucket: FUNCTION_ENV.BUCKET_NAME, Key: `inbound/${gbkId}`, Body: gbk }),
          );
          const notification = sesNotification({
            sesMessageId: gbkId,
            recipients: ['bob@example.com'],
            bucket: FUNCTION_ENV.BUCKET_NAME,
            timestamp: at,
          });
          const r = await invoke(bundles.router, env, sqsEvent([sqsRecord(notification)]));
          assert.deepEqual(r.result, { batchItemFailures: [] }, r.output);
          const summary = await s3.send(
            new GetObjectCommand({
              Bucket: FUNCTION_ENV.BUCKET_NAME,
              Key: `mailboxes/bob@example.com/${messageIdFor(at.getTime(), gbkId)}/summary.json`,
            }),
          );
          const parsed = JSON.parse((await summary.Body?.transformToString('utf8')) ?? '{}') as {
            text?: string;
          };
          assert.equal(parsed.text?.trim(), '你好世界');
        });
      });
    });
  }
});
