/**
 * A private moto_server (https://docs.getmoto.org/en/latest/docs/server_mode.html) for the AWS
 * adapter suites: one per test file, on a free loopback port, stopped when the file is done.
 * Without `moto_server` on PATH the suites print one `!!! NOT RUN:` line, or fail under
 * MAIL_RELAY_FULL_TESTS=1 (see env.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { mailboxTableDefinition } from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { hasCommand, PROJECT_ROOT, requireOrAnnounce } from './env.ts';
import { freePort } from './net.ts';

/** moto imports every service backend lazily, but its first start on a cold disk can take a few seconds. */
const START_TIMEOUT_MS = 30_000;
const INSTALL_HINT = "pip install 'moto[server]'";
/**
 * Speed-ups to moto 5 loaded at its start (see the file): the rollback of TransactWriteItems by item
 * instead of by a copy of the whole table, which made each transaction cost the size of the table.
 */
const SPEEDUPS = join(PROJECT_ROOT, 'test/helpers/moto-speedups');
const SPEEDUPS_MARK = 'mail-relay moto speed-ups not applied';
let speedupsNoticed = false;

export const MOTO_REGION = 'us-east-1';
export const MOTO_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' } as const;

export interface SentRawMessage {
  readonly id: string;
  readonly source: string | null;
  /** Envelope recipients plus, as moto adds them, the To/Cc/Bcc header addresses. */
  readonly destinations: readonly string[];
  /** The message as moto decoded it (UTF-8). */
  readonly raw_data: string;
}

export interface Moto {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  /** What an SDK client needs to talk to this server (spread into any client's constructor). */
  readonly clientConfig: {
    readonly endpoint: string;
    readonly region: string;
    readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  };
  /** Environment for code that builds its own clients (the Lambda handlers): AWS_ENDPOINT_URL and dummy credentials. */
  readonly env: Readonly<Record<string, string>>;
  /** Clears every service's state (`POST /moto-api/reset`). */
  reset(): Promise<void>;
  /** moto's view of its state (`GET /moto-api/data.json`). */
  data(): Promise<unknown>;
  /** Raw mail SES (v1 or v2) accepted for sending, from data.json (`ses.RawMessage`). */
  sentRawMessages(): Promise<SentRawMessage[]>;
  stop(): Promise<void>;
}

/**
 * Sends one request at a time through this client. moto 5's DynamoDB TransactWriteItems deep-copies
 * the table while other request threads write to it, and answers HTTP 500 ("dictionary changed
 * size during iteration") under concurrent writes. Real DynamoDB does not need this; the adapters'
 * own concurrency handling (TransactionConflict retries) is exercised by the ordering it allows.
 */
export function serializeRequests(client: DynamoDBClient): DynamoDBClient {
  let tail: Promise<unknown> = Promise.resolve();
  client.middlewareStack.add(
    (next) => (args) => {
      const run = tail.then(
        () => next(args),
        () => next(args),
      );
      tail = run.catch(() => undefined);
      return run;
    },
    { step: 'initialize', name: 'motoSerializeRequests' },
  );
  return client;
}

/** True when moto_server can be started; otherwise announces (or, under FULL, throws). */
export function motoAvailable(): boolean {
  return requireOrAnnounce(hasCommand('moto_server'), 'AWS adapter suites (moto_server)', INSTALL_HINT);
}

async function waitUntilAnswering(
  endpoint: string,
  child: ChildProcess,
  stderr: () => string,
): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `moto_server exited (${child.exitCode ?? child.signalCode}) before answering:\n${stderr()}`,
      );
    }
    try {
      const r = await fetch(`${endpoint}/moto-api/data.json`);
      await r.arrayBuffer();
      if (r.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`moto_server did not answer on ${endpoint} within ${START_TIMEOUT_MS} ms:\n${stderr()}`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Starts moto_server on a free loopback port and waits until it answers. */
export async function startMoto(): Promise<Moto> {
  let lastError: unknown;
  // The port is free when we pick it but could be taken before moto binds it: retry on a new one.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const pythonPath = [SPEEDUPS, process.env.PYTHONPATH].filter(Boolean).join(delimiter);
    const child = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PYTHONPATH: pythonPath },
    });
    let errText = '';
    child.stderr?.on('data', (c: Buffer) => {
      // Werkzeug logs every request to stderr; keep only the tail for error messages.
      errText = (errText + c.toString('utf8')).slice(-4000);
    });
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    try {
      await waitUntilAnswering(endpoint, child, () => errText);
      const notApplied = errText.split('\n').find((l) => l.startsWith(SPEEDUPS_MARK));
      if (notApplied !== undefined && !speedupsNoticed) {
        speedupsNoticed = true;
        console.error(`${notApplied} (the AWS suites run slower)`);
      }
    } catch (err) {
      lastError = err;
      process.removeListener('exit', killOnExit);
      await stopChild(child);
      continue;
    }
    const clientConfig = { endpoint, region: MOTO_REGION, credentials: { ...MOTO_CREDENTIALS } };
    return {
      endpoint,
      clientConfig,
      env: {
        AWS_ENDPOINT_URL: endpoint,
        AWS_REGION: MOTO_REGION,
        AWS_DEFAULT_REGION: MOTO_REGION,
        AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey,
      },
      async reset() {
        const r = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
        await r.arrayBuffer();
        if (!r.ok) throw new Error(`moto reset failed: HTTP ${r.status}`);
      },
      async data() {
        const r = await fetch(`${endpoint}/moto-api/data.json`);
        if (!r.ok) throw new Error(`moto data.json failed: HTTP ${r.status}`);
        return (await r.json()) as unknown;
      },
      async sentRawMessages() {
        const r = await fetch(`${endpoint}/moto-api/data.json`);
        if (!r.ok) throw new Error(`moto data.json failed: HTTP ${r.status}`);
        const data = (await r.json()) as { ses?: { RawMessage?: SentRawMessage[] } };
        return data.ses?.RawMessage ?? [];
      },
      async stop() {
        process.removeListener('exit', killOnExit);
        await stopChild(child);
      },
    };
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

/**
 * A moto_server with the relay's storage in it: the bucket and the mailbox table, and clients for
 * them (S3 by path; DynamoDB with `serializeRequests`).
 */
export async function startMotoStorage(names: { readonly bucket: string; readonly table: string }): Promise<{
  moto: Moto;
  s3: S3Client;
  dynamo: DynamoDBClient;
}> {
  const moto = await startMoto();
  const s3 = new S3Client({ ...moto.clientConfig, forcePathStyle: true });
  const dynamo = serializeRequests(new DynamoDBClient(moto.clientConfig));
  await s3.send(new CreateBucketCommand({ Bucket: names.bucket }));
  await dynamo.send(new CreateTableCommand(mailboxTableDefinition(names.table)));
  return { moto, s3, dynamo };
}
