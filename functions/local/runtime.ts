/**
 * The local adapter set, wired: files under the data dir, SQLite, mailparser, the outbox.
 * `mail-relay dev`, `import` and the tests all build their runtime here.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FsBlobStore } from '../adapters/local/fs-blob-store.ts';
import { OutboxOutbound } from '../adapters/local/outbox-outbound.ts';
import { SqliteMailboxIndex } from '../adapters/local/sqlite-mailbox-index.ts';
import { MailparserAdapter } from '../adapters/mailparser/mailparser-adapter.ts';
import type { Config } from '../core/config.ts';
import type { RouterDeps } from '../pipeline/router.ts';

export const DEFAULT_DATA_DIR = '.mail-relay';

export interface LocalRuntime extends RouterDeps {
  readonly dataDir: string;
  readonly blobs: FsBlobStore;
  readonly index: SqliteMailboxIndex;
  close(): Promise<void>;
}

export interface LocalRuntimeOptions {
  readonly config: Config;
  readonly dataDir?: string;
  /** Base URL and secret for presigned local URLs (the API server's address). */
  readonly presign?: { readonly baseUrl: string; readonly secret: string | Buffer };
}

export function dataDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.MAIL_RELAY_DATA_DIR ?? DEFAULT_DATA_DIR);
}

export function createLocalRuntime(options: LocalRuntimeOptions): LocalRuntime {
  const dataDir = resolve(options.dataDir ?? dataDirFromEnv());
  mkdirSync(dataDir, { recursive: true });
  const blobs = new FsBlobStore({ root: join(dataDir, 'blobs'), presign: options.presign });
  const index = new SqliteMailboxIndex(join(dataDir, 'index.sqlite'));
  return {
    config: options.config,
    dataDir,
    blobs,
    index,
    parser: new MailparserAdapter(),
    outbound: new OutboxOutbound(blobs),
    close: () => index.close(),
  };
}
