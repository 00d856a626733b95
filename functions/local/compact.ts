/**
 * `mail-relay compact`: gives the space of deleted mail back to the file system. Small blobs and the
 * index are SQLite databases (ADR 13); deleting mail frees their pages for new mail, but the files
 * never shrink by themselves (no `auto_vacuum`: it would add pointer-map writes to every commit of
 * the ingest path). `VACUUM` rewrites each database without its free pages.
 *
 * Refused while `mail-relay dev` (`npm start`) runs on the data dir (it holds the lock of
 * `dev.lock`): `VACUUM` holds the write lock for as long as it copies the database, and the relay's
 * SQLite calls are synchronous, so the whole relay (SMTP, API, POP3 through the API) would stall,
 * deliveries would time out with `451`, and a DELE could leave its blobs behind. Needs free disk
 * space about the size of the database (the copy goes through the WAL).
 */
import { type Dirent, existsSync, statSync } from 'node:fs';
import { lstat, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { tempFileOwner } from '../adapters/local/fs-blob-store.ts';
import { errorMessage, isStorageFull, MailRelayError } from '../core/errors.ts';
import type { Io } from './cli.ts';
import { parseCommandArgs } from './cli-args.ts';
import { processIsAlive } from './ingest-journal.ts';
import { dataDirFromEnv, makeDataDir } from './runtime.ts';

/** The data dir's SQLite databases: small blobs (FsBlobStore's `<root>.sqlite`) and the index. */
export const DATABASES = ['blobs.sqlite', 'index.sqlite'] as const;
/** The blob store's files (`createLocalRuntime`'s blob root). */
const BLOB_DIR = 'blobs';

/** The waiting a writer (the relay) does on our lock is its business; ours waits this long for theirs. */
const BUSY_TIMEOUT_MS = 30_000;

export interface CompactResult {
  readonly file: string;
  readonly bytesBefore: number;
  readonly bytesAfter: number;
  readonly freePagesBefore: number;
  readonly pageSize: number;
  /** The WAL could not be emptied at the end (another connection was reading). */
  readonly walKept: boolean;
}

/**
 * `dev` holds the exclusive lock of this file (an empty SQLite database) for as long as it runs, and
 * the operating system drops it when the process ends, however it ends: no stale pid files, no pid
 * reuse. A second `dev` on the data dir cannot take it and refuses to start; `compact` holds the same
 * lock while it runs, so neither runs beside the other. (Versions before held a shared lock, which
 * both refuse as well.)
 */
const DEV_LOCK_FILE = 'dev.lock';

/** How long `dev` or `compact` waits for the lock: either holds it for as long as it runs. */
const DEV_LOCK_WAIT_MS = 1000;

export interface DevLock {
  release(): void;
}

/**
 * Taken by `dev` at start, before anything in the data dir is touched, and by `compact`; released
 * when it stops.
 */
export function holdDevLock(dataDir: string): DevLock {
  makeDataDir(dataDir);
  const db = new Database(join(dataDir, DEV_LOCK_FILE), { timeout: DEV_LOCK_WAIT_MS });
  try {
    // No journal file: there is never anything to write, and a killed dev leaves nothing behind.
    db.pragma('journal_mode = MEMORY');
    // SQLite's EXCLUSIVE lock, held until the transaction ends.
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: unknown }).code === 'SQLITE_BUSY') {
      throw new MailRelayError(
        'dev_running',
        `mail-relay dev (or compact) is already running on ${dataDir} (it holds ${DEV_LOCK_FILE} there); ` +
          'stop it, or give this one another MAIL_RELAY_DATA_DIR',
      );
    }
    throw err;
  }
  return {
    release() {
      if (!db.open) return;
      db.exec('ROLLBACK');
      db.close();
    },
  };
}

/** A database's bytes on disk, with its WAL (what `du` sees). */
function bytesOf(path: string): number {
  let n = 0;
  for (const p of [path, `${path}-wal`]) {
    try {
      n += statSync(p).size;
    } catch {
      // no WAL (or no file): nothing to count
    }
  }
  return n;
}

export function compactDatabase(path: string): CompactResult {
  const bytesBefore = bytesOf(path);
  const db = new Database(path, { fileMustExist: true });
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    const freePagesBefore = Number(db.pragma('freelist_count', { simple: true }));
    const pageSize = Number(db.pragma('page_size', { simple: true }));
    // Nothing to give back: no copy of the whole database for nothing.
    if (freePagesBefore > 0) db.exec('VACUUM');
    // The rewrite went through the WAL: move it into the file and empty the WAL.
    const [checkpoint] = db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
    return {
      file: path,
      bytesBefore,
      bytesAfter: bytesOf(path),
      freePagesBefore,
      pageSize,
      walKept: (checkpoint?.busy ?? 0) !== 0,
    };
  } finally {
    db.close();
  }
}

/**
 * Deletes the temp files under `root` (the blob store's files) of processes that are gone: a blob
 * is written to a temp file beside its key and renamed into place, and a process killed in between
 * leaves the temp file, which nothing else removes (a 40 MB message leaves 40 MB). Files of live
 * processes (an `import` running meanwhile) are left alone.
 */
export async function removeStaleTempFiles(root: string): Promise<{ files: number; bytes: number }> {
  const removed = { files: 0, bytes: 0 };
  const walk = async (dir: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        await walk(path);
        continue;
      }
      const pid = tempFileOwner(e.name);
      if (pid === null || pid === process.pid || processIsAlive(pid)) continue;
      try {
        const { size } = await lstat(path);
        await unlink(path);
        removed.files += 1;
        removed.bytes += size;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  };
  await walk(root);
  return removed;
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

const COMPACT_USAGE = `Usage: mail-relay compact
  gives the space of deleted mail back to the file system: rewrites the SQLite files of
  $MAIL_RELAY_DATA_DIR (default ./.mail-relay) without their free pages, and deletes the temp files
  a killed run left among the blobs; takes no arguments, and runs only with dev stopped (it needs
  free disk space about the size of the database it copies)`;

export async function commandCompact(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandArgs(
    { command: 'compact', usage: COMPACT_USAGE, options: {}, positionals: false },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const dataDir = dataDirFromEnv(io.env);
  const found = DATABASES.map((name) => join(dataDir, name)).filter((p) => existsSync(p));
  if (found.length === 0 && !existsSync(join(dataDir, BLOB_DIR))) {
    io.out.write(`nothing to compact: no database in ${dataDir}\n`);
    return 0;
  }
  // Held throughout, so that a dev started meanwhile refuses instead of stalling behind the copy.
  let lock: DevLock;
  try {
    lock = holdDevLock(dataDir);
  } catch (err) {
    if (!(err instanceof MailRelayError && err.code === 'dev_running')) throw err;
    io.err.write(
      `mail-relay: mail-relay dev is running on ${dataDir} (it holds dev.lock there); stop it first ` +
        '(compact locks the databases while it copies them, which would stall the relay)\n',
    );
    return 1;
  }
  try {
    const status = compactAll(found, io);
    const temp = await removeStaleTempFiles(join(dataDir, BLOB_DIR));
    if (temp.files > 0) {
      io.out.write(
        `${join(dataDir, BLOB_DIR)}: ${temp.files} temp file(s) of killed runs deleted (${mb(temp.bytes)})\n`,
      );
    }
    return status;
  } finally {
    lock.release();
  }
}

function compactAll(found: readonly string[], io: Io): number {
  let failed = false;
  for (const path of found) {
    let r: CompactResult;
    try {
      r = compactDatabase(path);
    } catch (err) {
      // SQLITE_BUSY after the timeout (a long write elsewhere), a full disk (VACUUM needs room for a
      // second copy), a file that is not a database: the database is as it was.
      const why = isStorageFull(err)
        ? `no space left on the disk (${errorMessage(err)}; compact needs free space about the size of the database)`
        : errorMessage(err);
      io.err.write(`mail-relay: could not compact ${path}: ${why} (it is unchanged)\n`);
      failed = true;
      continue;
    }
    io.out.write(
      r.freePagesBefore === 0
        ? `${path}: ${mb(r.bytesBefore)}, nothing to give back\n`
        : `${path}: ${mb(r.bytesBefore)} -> ${mb(r.bytesAfter)} (${r.freePagesBefore} free pages of ${r.pageSize} bytes given back)` +
            `${r.walKept ? '; its WAL shrinks at the next write (another process was reading)' : ''}\n`,
    );
  }
  return failed ? 1 : 0;
}
