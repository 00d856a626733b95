/**
 * `mail-relay compact`: gives the space of deleted mail back to the file system. Small blobs and the
 * index are SQLite databases (ADR 13); deleting mail frees their pages for new mail, but the files
 * never shrink by themselves (no `auto_vacuum`: it would add pointer-map writes to every commit of
 * the ingest path). `VACUUM` rewrites each database without its free pages.
 *
 * Refused while `mail-relay dev` (`npm start`) runs on the data dir (it leaves its pid in
 * `dev.pid`): `VACUUM` holds the write lock for as long as it copies the database, and the relay's
 * SQLite calls are synchronous, so the whole relay (SMTP, API, POP3 through the API) would stall,
 * deliveries would time out with `451`, and a DELE could leave its blobs behind. Needs free disk
 * space about the size of the database (the copy goes through the WAL).
 */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Io } from './cli.ts';
import { dataDirFromEnv } from './runtime.ts';

/** The data dir's SQLite databases: small blobs (FsBlobStore's `<root>.sqlite`) and the index. */
export const DATABASES = ['blobs.sqlite', 'index.sqlite'] as const;

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

const DEV_PID_FILE = 'dev.pid';

/** `dev` leaves its pid in the data dir while it runs. */
export function claimDevPid(dataDir: string): void {
  writeFileSync(join(dataDir, DEV_PID_FILE), `${process.pid}\n`);
}

/** Removes the pid file, if it is still ours (another `dev` may have started on the same dir since). */
export function releaseDevPid(dataDir: string): void {
  const path = join(dataDir, DEV_PID_FILE);
  if (runningDev(dataDir) === process.pid) rmSync(path, { force: true });
}

/** The pid of a live `dev` on this data dir, or null (no file, or its process is gone). */
export function runningDev(dataDir: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, DEV_PID_FILE), 'utf8').trim());
  } catch {
    return null;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive, someone else's.
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : null;
  }
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

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export async function commandCompact(args: readonly string[], io: Io): Promise<number> {
  if (args.length > 0) {
    io.err.write('mail-relay: compact takes no arguments (it compacts $MAIL_RELAY_DATA_DIR)\n');
    return 2;
  }
  const dataDir = dataDirFromEnv(io.env);
  const dev = runningDev(dataDir);
  if (dev !== null) {
    io.err.write(
      `mail-relay: mail-relay dev (pid ${dev}) is running on ${dataDir}; stop it first ` +
        '(compact locks the databases while it copies them, which would stall the relay)\n',
    );
    return 1;
  }
  const found = DATABASES.map((name) => join(dataDir, name)).filter((p) => existsSync(p));
  if (found.length === 0) {
    io.out.write(`nothing to compact: no database in ${dataDir}\n`);
    return 0;
  }
  let failed = false;
  for (const path of found) {
    let r: CompactResult;
    try {
      r = compactDatabase(path);
    } catch (err) {
      // SQLITE_BUSY after the timeout (a long write elsewhere), a full disk (VACUUM needs room for a
      // second copy), a file that is not a database: the database is as it was.
      const why = err instanceof Error ? err.message : String(err);
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
