/**
 * The local adapter set, wired: files under the data dir, SQLite, mailparser, the outbox.
 * `mail-relay dev`, `import` and the tests all build their runtime here.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DiskReserve } from '../adapters/local/disk-reserve.ts';
import { FsBlobStore } from '../adapters/local/fs-blob-store.ts';
import { OutboxOutbound } from '../adapters/local/outbox-outbound.ts';
import { SmtpOutbound } from '../adapters/local/smtp-outbound.ts';
import { SqliteMailboxIndex } from '../adapters/local/sqlite-mailbox-index.ts';
import { MailparserAdapter } from '../adapters/mailparser/mailparser-adapter.ts';
import type { Config } from '../core/config.ts';
import { errorMessage, MailRelayError } from '../core/errors.ts';
import type { RouterDeps } from '../pipeline/router.ts';
import { deletionMemoryDaysFor } from '../ports/mailbox-index.ts';
import { applyReceived, ingest } from './ingest.ts';
import { FileSystemSyncer, IngestJournal, recoverJournal, syncFileSystem } from './ingest-journal.ts';

export const DEFAULT_DATA_DIR = '.mail-relay';

/** Where the HMAC secret of local presigned URLs is kept, so URLs survive a restart. */
export const PRESIGN_SECRET_FILE = 'presign.secret';

/**
 * Makes the data dir (and any missing parent) readable by its owner alone. It holds every
 * mailbox's mail, which the API gives only to a token of that mailbox, and the presign secret: made
 * with the usual umask (0755), any other user of the machine could read all the mail without a token.
 * A data dir that exists already keeps the mode it has.
 */
export function makeDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    // One line for the CLI (a file in the way, no permission), not a stack trace.
    const code = (err as NodeJS.ErrnoException).code;
    throw new MailRelayError(
      'data_dir_unusable',
      `cannot make the data dir ${dataDir} (${code ?? errorMessage(err)}): ` +
        'set MAIL_RELAY_DATA_DIR to a directory you can write',
      { cause: err },
    );
  }
}

export interface LocalRuntime extends RouterDeps {
  readonly dataDir: string;
  /** Where the SMTP listener keeps large messages while they arrive and wait (`<dataDir>/spool`). */
  readonly spoolDir: string;
  /** Present in `journal` durability: what makes `250` durable (see ingest-journal.ts). */
  readonly journal: IngestJournal | undefined;
  /** Re-routes what a crashed process journaled but may not have finished; run before listening. */
  recover(): Promise<{ segments: number; messages: number }>;
  /** The FsBlobStore root (`<dataDir>/blobs`), for a second store over the same files (the API's, which presigns). */
  readonly blobRoot: string;
  readonly blobs: FsBlobStore;
  readonly index: SqliteMailboxIndex;
  /**
   * With the `reserve` option (`mail-relay dev`): the room kept for deletes on a full disk
   * (disk-reserve.ts). `ingest` takes mail only while it is in place; the index and the API's blob
   * store release it when a delete meets a full disk.
   */
  readonly reserve: DiskReserve | undefined;
  /**
   * The stores for writes the ingest journal does not cover: the outbox (what a forward or
   * `POST …/send` would have sent, with no `relay.smtp`) and `POST …/send`'s Sent copy. Every write
   * through them is on disk when it resolves. In `sync` durability they are `blobs` and `index`.
   */
  readonly unjournaled: { readonly blobs: FsBlobStore; readonly index: SqliteMailboxIndex };
  close(): Promise<void>;
}

export interface LocalRuntimeOptions {
  readonly config: Config;
  readonly dataDir?: string;
  /** Base URL and secret for presigned local URLs (the API server's address). */
  readonly presign?: { readonly baseUrl: string; readonly secret: string | Buffer };
  /**
   * `journal` (default): received mail is group-committed to a write-ahead journal and the router's
   * file writes are synced in bulk at checkpoints. `sync`: every file write is fsynced on its own.
   */
  readonly durability?: 'journal' | 'sync';
  /**
   * Keep a reserve of disk space for deletes (disk-reserve.ts), made now when there is room for it:
   * what `mail-relay dev` does, the one process that takes mail and deletes through the API.
   * @default false
   */
  readonly reserve?: boolean;
}

export function dataDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.MAIL_RELAY_DATA_DIR ?? DEFAULT_DATA_DIR);
}

/**
 * What a command that works on the mail a data dir holds (`export`, `token list`, `replay`, `outbox`)
 * says when `dataDir` holds none (no index.sqlite): a mistyped MAIL_RELAY_DATA_DIR would otherwise be
 * made, empty, and read as "nothing there". Null when it holds some.
 */
export function noDataIn(dataDir: string): string | null {
  if (existsSync(join(dataDir, 'index.sqlite'))) return null;
  return `no mail-relay data in ${dataDir} (no index.sqlite): set MAIL_RELAY_DATA_DIR to the data dir`;
}

export function createLocalRuntime(options: LocalRuntimeOptions): LocalRuntime {
  const dataDir = resolve(options.dataDir ?? dataDirFromEnv());
  makeDataDir(dataDir);
  const blobRoot = join(dataDir, 'blobs');
  const reserve = options.reserve === true ? new DiskReserve(dataDir) : undefined;
  // Not made on a disk without room for it: mail is refused until there is (ingest.ts).
  reserve?.ensure();
  const journaled = (options.durability ?? 'journal') === 'journal';
  const blobs = new FsBlobStore({
    root: blobRoot,
    presign: options.presign,
    durability: journaled ? 'deferred' : 'sync',
  });
  // Deliveries are redone by journal recovery, so their commits need not wait for the disk.
  const deletionMemoryDays = deletionMemoryDaysFor(options.config);
  const index = new SqliteMailboxIndex(join(dataDir, 'index.sqlite'), {
    deferredDeliveries: journaled,
    deletionMemoryDays,
    reserve,
  });
  // Started now, while the process is small: the helper is forked once (see FileSystemSyncer).
  const syncer = journaled ? new FileSystemSyncer(dataDir) : null;
  const syncFs = () => (syncer ? syncer.sync() : syncFileSystem(dataDir));
  // A send is recorded as done by a synced index commit (forward.ts, send.ts) right after its outbox
  // write; through the deferred stores that write, and the Sent copy after it, would reach the disk
  // only at the journal's next checkpoint, and no journal record would bring them back after a power
  // loss. Sends are rare: these stores sync every write, and open their database on first use.
  let unjournaledIndex: SqliteMailboxIndex | undefined;
  const unjournaled = {
    blobs: journaled ? new FsBlobStore({ root: blobRoot, durability: 'sync' }) : blobs,
    get index(): SqliteMailboxIndex {
      if (!journaled) return index;
      unjournaledIndex ??= new SqliteMailboxIndex(join(dataDir, 'index.sqlite'), { deletionMemoryDays });
      return unjournaledIndex;
    },
  };
  const journalDir = join(dataDir, 'journal');
  const journal = journaled ? new IngestJournal(journalDir, syncFs) : undefined;
  const runtime: LocalRuntime = {
    config: options.config,
    dataDir,
    spoolDir: join(dataDir, 'spool'),
    blobRoot,
    blobs,
    index,
    reserve,
    unjournaled,
    journal,
    parser: new MailparserAdapter(),
    // `relay.smtp` set: forwards go to that smarthost; otherwise to outbox/ (`mail-relay outbox`),
    // and what is for our own domains comes back in, as through our MX in AWS.
    outbound: options.config.relay.smtp
      ? new SmtpOutbound({ url: options.config.relay.smtp })
      : new OutboxOutbound(unjournaled.blobs, {
          domains: options.config.domains,
          receive: async ({ from, to, raw }) => {
            await ingest(runtime, { body: raw, mailFrom: from, recipients: to, via: { protocol: 'LOCAL' } });
          },
        }),
    recover: () =>
      recoverJournal(
        journalDir,
        // Only segments of processes that are gone are recovered: a forward one of them claimed and
        // did not finish (killed mid-send) is being sent by no one, so its claim is taken over now
        // (at least once, as after a lease). Waiting out the lease (15 minutes) failed the recovery,
        // and with it every start of `dev` and `import` until then.
        (n, raw) =>
          applyReceived({ ...runtime, forwarding: { ...runtime.forwarding, leaseMs: 0 } }, n, raw, {
            recovering: true,
          }),
        syncFs,
        // A power loss may have undone commits whose numbers a long-poll handed out (deliveries
        // commit at synchronous=NORMAL): the replay must not take them again. Each message makes at
        // most two commits in a mailbox (its delivery, and a notice of a failed forward).
        (messages) => index.skipCommitNumbers(2 * messages),
      ),
    close: async () => {
      // A failed final checkpoint keeps its segment for recovery; the rest is closed all the same,
      // and the first failure is thrown once everything has been tried.
      const closers = [
        () => journal?.close(),
        () => syncer?.close(),
        () => index.close(),
        () => unjournaledIndex?.close(),
        () => blobs.close(),
        () => (unjournaled.blobs === blobs ? undefined : unjournaled.blobs.close()),
      ];
      const failures: unknown[] = [];
      for (const close of closers) {
        try {
          await close();
        } catch (err) {
          failures.push(err);
        }
      }
      if (failures.length > 0) throw failures[0];
    },
  };
  return runtime;
}

/**
 * The secret that signs local presigned URLs: read from `<dataDir>/presign.secret`, or created
 * there (32 random bytes, hex, mode 0600) on first use. The file appears complete or not at all
 * (written aside, then hard-linked into place), and when two processes race, the first link wins
 * and both read the winner's secret.
 */
export function loadOrCreatePresignSecret(dataDir: string): string {
  const path = join(dataDir, PRESIGN_SECRET_FILE);
  makeDataDir(dataDir);
  if (!existsSync(path)) {
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
  const secret = readFileSync(path, 'utf8').trim();
  // A truncated file (crash mid-write, hand edit) would make every URL guessable: refuse it.
  if (!/^[0-9a-f]{64}$/.test(secret)) {
    throw new Error(
      `${path} is not a 64-hex-digit secret; delete it to make a new one (existing URLs stop working)`,
    );
  }
  return secret;
}
