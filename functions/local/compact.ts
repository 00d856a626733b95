/**
 * `mail-relay compact`: gives the space of deleted mail back to the file system. Small blobs and the
 * index are SQLite databases (ADR 13); deleting mail frees their pages for new mail, but the files
 * never shrink by themselves (no `auto_vacuum`: it would add pointer-map writes to every commit of
 * the ingest path). `VACUUM` rewrites each database without its free pages.
 *
 * Safe while `dev` runs (SQLite locks; readers go on), but writers wait for it: a long compaction
 * can make deliveries time out (the SMTP client is told to retry, nothing is lost). Best with `dev`
 * stopped.
 */
import { existsSync, statSync } from 'node:fs';
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
    db.exec('VACUUM');
    // The rewrite went through the WAL: move it into the file and empty the WAL.
    db.pragma('wal_checkpoint(TRUNCATE)');
    return { file: path, bytesBefore, bytesAfter: bytesOf(path), freePagesBefore, pageSize };
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
      `${path}: ${mb(r.bytesBefore)} -> ${mb(r.bytesAfter)} (${r.freePagesBefore} free pages of ${r.pageSize} bytes given back)\n`,
    );
  }
  return failed ? 1 : 0;
}
