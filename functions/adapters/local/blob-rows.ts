/**
 * The small-blob half of FsBlobStore (docs/adr/0013-small-blobs-in-sqlite.md): blobs given as a
 * Buffer of at most `smallBlobMaxBytes` are rows of one SQLite table in a file beside the blob root
 * (`<dataDir>/blobs.sqlite` for the root `<dataDir>/blobs`), so a 5 KB message costs a few row
 * writes in a group commit instead of several file creations.
 *
 * This class only knows SQL: which keys are rows, their bytes, and a batch write that checks the
 * local key rule on the row side. FsBlobStore decides which backing a write goes to, queues row
 * writes, and keeps the file side consistent with them.
 *
 * WAL with busy_timeout, so several stores (the runtime's, the API server's, a CLI command's, in one
 * process or several) share the file; no transaction is ever held across an await (better-sqlite3 is
 * synchronous, and listing reads in short pages). `sync` durability commits at synchronous=FULL (the
 * WAL is fsynced at each commit); `deferred` at NORMAL, which the ingest journal's checkpoint
 * (`sync -f`, i.e. syncfs of the data dir's file system) makes durable in bulk.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { migrateSchema } from './sqlite-schema.ts';

/** Bumped when the schema changes; a database from a newer version is refused rather than misread. */
const SCHEMA_VERSION = 1;
/** Waits this long for another process (a CLI command next to `dev`) to release the write lock. */
const BUSY_TIMEOUT_MS = 5000;
/**
 * Pages of WAL before SQLite copies them into the database file (its default is 1,000: 4 MB). At
 * ingest rates the default checkpoints several times a second, each with two fsyncs on the event
 * loop; a larger WAL checkpoints less often, and the file is truncated back after a checkpoint.
 */
const WAL_AUTOCHECKPOINT_PAGES = 16_384;
const JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;

// Keys compare as TEXT with the BINARY collation: memcmp of their UTF-8 bytes, the order S3 lists in.
// A rowid table (not WITHOUT ROWID): rows hold up to hundreds of KiB, and the bytes go last so that
// size and mtime are read without touching the overflow pages.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS blobs (
  key TEXT PRIMARY KEY NOT NULL,
  size INTEGER NOT NULL,
  mtime INTEGER NOT NULL,
  -- A random tag per write: a file write replacing a row deletes that row only if it is still the
  -- one it saw, never a newer one written meanwhile.
  gen INTEGER NOT NULL,
  data BLOB NOT NULL
);
`;

export interface RowInfo {
  readonly key: string;
  readonly size: number;
  /** ms since epoch */
  readonly mtime: number;
}

export interface Row {
  readonly size: number;
  readonly mtime: number;
  readonly data: Buffer;
}

/**
 * One queued write: a put (`data`), a copy from another row (`from`), or a removal (`remove`: of
 * the row `key`, or of every row whose key starts with `key`).
 */
export interface RowWrite {
  readonly key: string;
  readonly data?: Buffer | undefined;
  readonly from?: string | undefined;
  readonly remove?: 'key' | 'prefix' | undefined;
  /** Set by `writeBatch`. `conflict`: the key rule refused it; `no-source`: a copy whose source is not a row. */
  outcome?: 'written' | 'conflict' | 'no-source';
}

/** A random tag per write (53 bits; collisions between two writes of one key are not a concern). */
export function newGen(): number {
  return Math.floor(Math.random() * Number.MAX_SAFE_INTEGER);
}

/**
 * The smallest string greater (in UTF-8 byte order) than every string starting with `prefix`, or
 * null when there is none: keys in [prefix, end) are exactly the keys starting with `prefix`.
 */
export function prefixEnd(prefix: string): string | null {
  const points = Array.from(prefix);
  while (points.length > 0) {
    const last = (points.pop() as string).codePointAt(0) ?? 0;
    if (last < 0x10ffff) {
      // UTF-8 cannot encode surrogates: the code point after U+D7FF is U+E000.
      const next = last === 0xd7ff ? 0xe000 : last + 1;
      return points.join('') + String.fromCodePoint(next);
    }
  }
  return null;
}

type PageParams = { lo?: string; after?: string; hi?: string; limit: number };

export class BlobRows {
  private readonly db: Database.Database;
  private readonly selectRow: Database.Statement<[string], Row>;
  private readonly selectInfo: Database.Statement<[string], { size: number; mtime: number }>;
  private readonly selectGen: Database.Statement<[string], number>;
  private readonly selectDescendant: Database.Statement<[string, string], number>;
  private readonly upsert: Database.Statement<[string, number, number, number, Buffer]>;
  private readonly copyRow: Database.Statement<[{ from: string; to: string; mtime: number; gen: number }]>;
  private readonly deleteKey: Database.Statement<[string]>;
  private readonly deleteKeyIfGen: Database.Statement<[string, number]>;
  private readonly deleteRange: Database.Statement<[string, string]>;
  private readonly deleteFrom: Database.Statement<[string]>;
  /** [first page?][bounded above?] */
  private readonly pages: Database.Statement<[PageParams], RowInfo>[][];
  private readonly batch: Database.Transaction<(writes: readonly RowWrite[], mtime: number) => void>;

  constructor(path: string, durability: 'sync' | 'deferred') {
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    try {
      this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${durability === 'sync' ? 'FULL' : 'NORMAL'}`);
      this.db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
      this.db.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT_BYTES}`);
      migrateSchema(this.db, 'blob database', SCHEMA, SCHEMA_VERSION);
    } catch (err) {
      this.db.close();
      throw err;
    }
    this.selectRow = this.db.prepare('SELECT size, mtime, data FROM blobs WHERE key = ?');
    this.selectInfo = this.db.prepare('SELECT size, mtime FROM blobs WHERE key = ?');
    this.selectGen = this.db.prepare<[string], number>('SELECT gen FROM blobs WHERE key = ?').pluck();
    this.selectDescendant = this.db
      .prepare<[string, string], number>('SELECT 1 FROM blobs WHERE key > ? AND key < ? LIMIT 1')
      .pluck();
    const onConflict =
      'ON CONFLICT (key) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, gen = excluded.gen, data = excluded.data';
    this.upsert = this.db.prepare(
      `INSERT INTO blobs (key, size, mtime, gen, data) VALUES (?, ?, ?, ?, ?) ${onConflict}`,
    );
    // The WHERE is what lets SQLite parse ON CONFLICT after a SELECT.
    this.copyRow = this.db.prepare(
      'INSERT INTO blobs (key, size, mtime, gen, data) SELECT @to, size, @mtime, @gen, data FROM blobs ' +
        `WHERE key = @from ${onConflict}`,
    );
    this.deleteKey = this.db.prepare('DELETE FROM blobs WHERE key = ?');
    this.deleteKeyIfGen = this.db.prepare('DELETE FROM blobs WHERE key = ? AND gen = ?');
    this.deleteRange = this.db.prepare('DELETE FROM blobs WHERE key >= ? AND key < ?');
    this.deleteFrom = this.db.prepare('DELETE FROM blobs WHERE key >= ?');
    this.pages = [false, true].map((first) =>
      [false, true].map((bounded) =>
        this.db.prepare<[PageParams], RowInfo>(
          `SELECT key, size, mtime FROM blobs WHERE ${first ? 'key >= @lo' : 'key > @after'}` +
            `${bounded ? ' AND key < @hi' : ''} ORDER BY key LIMIT @limit`,
        ),
      ),
    );
    this.batch = this.db.transaction((writes: readonly RowWrite[], mtime: number) => {
      // Folders of this batch's keys found not to be rows. Sound within the transaction: a folder
      // is looked up only for a write below it, so from then on it has something below it (that
      // write, or what made the write conflict) and cannot become a row in this batch; a removal
      // only takes rows away, so it cannot make one either, and no other connection writes while
      // the batch holds the lock.
      const folders = new Set<string>();
      for (const w of writes) this.apply(w, mtime, folders);
    });
  }

  /** Writes a batch in one transaction (one commit). A write the key rule refuses is skipped, not fatal. */
  writeBatch(writes: readonly RowWrite[], mtime: number): void {
    // IMMEDIATE: take the write lock up front (waiting up to busy_timeout), never upgrade mid-way.
    this.batch.immediate(writes, mtime);
  }

  private apply(w: RowWrite, mtime: number, folders: Set<string>): void {
    if (w.remove !== undefined) {
      if (w.remove === 'key') this.delete(w.key);
      else this.deletePrefix(w.key);
      w.outcome = 'written';
      return;
    }
    // Checks first, writes last: a refused write changes nothing, so the batch can go on.
    if (this.conflicts(w.key, folders)) {
      w.outcome = 'conflict';
      return;
    }
    if (w.from !== undefined) {
      const { changes } = this.copyRow.run({ from: w.from, to: w.key, mtime, gen: newGen() });
      w.outcome = changes > 0 ? 'written' : 'no-source';
      return;
    }
    if (w.data !== undefined) this.upsert.run(w.key, w.data.length, mtime, newGen(), w.data);
    w.outcome = 'written';
  }

  /**
   * The local key rule on the row side: a row that is a "folder" of `key` or lies below it.
   * `folders`: folders known not to be rows (skipped), and where to note the ones found so.
   */
  conflicts(key: string, folders?: Set<string>): boolean {
    for (let slash = key.indexOf('/'); slash > 0; slash = key.indexOf('/', slash + 1)) {
      const folder = key.slice(0, slash);
      if (folders?.has(folder)) continue;
      if (this.selectGen.get(folder) !== undefined) return true;
      folders?.add(folder);
    }
    // '0' follows '/' in every encoding: the keys starting with `key/` are exactly those in (key/, key0).
    return this.selectDescendant.get(`${key}/`, `${key}0`) !== undefined;
  }

  get(key: string): Row | undefined {
    return this.selectRow.get(key);
  }

  info(key: string): { size: number; mtime: number } | undefined {
    return this.selectInfo.get(key);
  }

  /** The tag of the row now holding `key`, to delete exactly that row later (`deleteIfGen`). */
  gen(key: string): number | undefined {
    return this.selectGen.get(key);
  }

  delete(key: string): void {
    this.deleteKey.run(key);
  }

  deleteIfGen(key: string, gen: number): void {
    this.deleteKeyIfGen.run(key, gen);
  }

  deletePrefix(prefix: string): void {
    const hi = prefixEnd(prefix);
    if (hi === null) this.deleteFrom.run(prefix);
    else this.deleteRange.run(prefix, hi);
  }

  /** One page of keys starting with `prefix`, after `after` (exclusive) or from the start, in key order. */
  page(prefix: string, after: string | undefined, limit: number): RowInfo[] {
    const hi = prefixEnd(prefix);
    const statement = this.pages[after === undefined ? 1 : 0]?.[hi === null ? 0 : 1];
    if (statement === undefined) throw new Error('unreachable: every page variant is prepared');
    const params: PageParams = { limit };
    if (after === undefined) params.lo = prefix;
    else params.after = after;
    if (hi !== null) params.hi = hi;
    return statement.all(params);
  }

  /**
   * Copies the WAL into the database as far as readers allow (PASSIVE: never waits), so that the
   * next commit starts the WAL over in the room it already has instead of growing it. False when it
   * could not (the database file has no room to grow either): nothing is lost, the WAL still holds it.
   */
  checkpoint(): boolean {
    try {
      this.db.pragma('wal_checkpoint(PASSIVE)');
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    this.db.close();
  }
}
