/**
 * A local relay with its HTTP API on loopback, in a temp data dir: the real runtime (files,
 * SQLite, mailparser), the real SMTP listener and the API server, wired as `mail-relay dev`
 * wires them (deliveries wake long-polls). Tests talk to it with fetch, over real HTTP.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createToken } from '../../functions/api/auth.ts';
import { InProcessMailWaiter } from '../../functions/api/waiter.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { type ApiServer, type ApiServerOptions, startApiServer } from '../../functions/local/api-server.ts';
import { main } from '../../functions/local/cli.ts';
import { type IngestResult, ingest } from '../../functions/local/ingest.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { type SmtpListener, startSmtpListener } from '../../functions/local/smtp-listener.ts';
import type { RouteResult } from '../../functions/pipeline/router.ts';

export interface ApiTestEnv {
  readonly dataDir: string;
  readonly runtime: LocalRuntime;
  readonly smtp: SmtpListener;
  readonly api: ApiServer;
  readonly waiter: InProcessMailWaiter;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** A new token for a mailbox (or an admin token with `null`). */
  token(mailbox: string | null, options?: { admin?: boolean }): Promise<string>;
  /**
   * Delivers a message through the real pipeline (trace headers, inbound/, router) as the SMTP
   * listener does, and wakes long-polls; faster than a client round trip for bulk delivery.
   */
  deliver(recipients: readonly string[], body: Buffer, receivedAt?: Date): Promise<IngestResult>;
  /** fetch against the API with an optional bearer token. */
  request(path: string, init?: RequestInit & { token?: string | undefined }): Promise<Response>;
  close(): Promise<void>;
}

export const API_TEST_CONFIG: RawConfig = {
  domains: ['example.test'],
  mailboxes: ['alice@example.test', 'bob@example.test', 'carol@example.test'],
  routes: [{ match: 'team@example.test', action: 'deliver', to: ['alice@example.test', 'bob@example.test'] }],
};

function wakeAll(waiter: InProcessMailWaiter, r: RouteResult): void {
  for (const o of r.outcomes) {
    if (o.decision.kind === 'deliver' || o.decision.kind === 'quarantine') waiter.notify(o.decision.mailbox);
  }
}

export async function startApiTestEnv(
  options: { config?: RawConfig; app?: ApiServerOptions['app'] } = {},
): Promise<ApiTestEnv> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mr-api-'));
  const runtime = createLocalRuntime({ config: parseConfig(options.config ?? API_TEST_CONFIG), dataDir });
  const waiter = new InProcessMailWaiter();
  const smtp = await startSmtpListener(runtime, {
    port: 0,
    spoolDir: runtime.spoolDir,
    onDelivered: (r) => wakeAll(waiter, r),
  });
  const api = await startApiServer(runtime, {
    port: 0,
    waiter,
    ...(options.app ? { app: options.app } : {}),
  });
  return {
    dataDir,
    runtime,
    smtp,
    api,
    waiter,
    url: api.url,
    async token(mailbox, tokenOptions = {}) {
      return (await createToken(runtime.index, { mailbox, admin: tokenOptions.admin ?? false })).token;
    },
    async deliver(recipients, body, receivedAt) {
      const r = await ingest(runtime, {
        body,
        mailFrom: 'sender@remote.test',
        recipients,
        via: { protocol: 'LOCAL', helo: 'api-test' },
        ...(receivedAt ? { receivedAt } : {}),
      });
      wakeAll(waiter, r);
      return r;
    },
    request(path, init = {}) {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token !== undefined) headers.set('Authorization', `Bearer ${token}`);
      return fetch(`${api.url}${path}`, { ...rest, headers });
    },
    async close() {
      await api.close();
      await smtp.close();
      await runtime.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The error body of a response, checked to be our JSON error shape and nothing more. */
export async function errorOf(res: Response): Promise<{ code: string; message: string }> {
  const type = res.headers.get('content-type') ?? '';
  if (!type.startsWith('application/json'))
    throw new Error(`expected a JSON error, got ${res.status} ${type}`);
  const body = (await res.json()) as { error?: { code?: unknown; message?: unknown } };
  const keys = Object.keys(body);
  if (keys.length !== 1 || typeof body.error?.code !== 'string' || typeof body.error.message !== 'string') {
    throw new Error(`not an {error: {code, message}} body: ${JSON.stringify(body)}`);
  }
  if (Object.keys(body.error).length !== 2) throw new Error(`extra fields in error: ${JSON.stringify(body)}`);
  return { code: body.error.code, message: body.error.message };
}

/** POP3 TOP computed the obvious way (whole message in memory), to check the range-reading one against. */
export function referenceTop(raw: Buffer, n: number): Buffer {
  const lines = raw.toString('latin1').match(/[^\n]*\n|[^\n]+$/g) ?? [];
  let i = 0;
  let out = '';
  while (i < lines.length) {
    const line = lines[i] ?? '';
    out += line;
    i += 1;
    if (line === '\n' || line === '\r\n') break;
  }
  return Buffer.from(out + lines.slice(i, i + n).join(''), 'latin1');
}

/**
 * Runs `mail-relay <args>` in process (cli.ts `main`) on `dataDir` with `config` written beside it,
 * as a user would from a shell; returns the exit code and what it printed.
 */
export async function runMailRelayCli(
  dataDir: string,
  config: RawConfig,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const configPath = join(dataDir, 'mail-relay.config.json');
  writeFileSync(configPath, JSON.stringify(config));
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  err.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const code = await main(args, {
    out,
    err,
    env: { ...process.env, MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: configPath },
  });
  return { code, stdout, stderr };
}
