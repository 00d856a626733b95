/**
 * BlobStore over a data directory: the local twin of the S3 adapter.
 *
 * Two backings, one key space (docs/adr/0013-small-blobs-in-sqlite.md). A blob given as a Buffer of
 * at most `smallBlobMaxBytes` (64 KiB by default) is a row of a SQLite table in `<root>.sqlite`
 * (blob-rows.ts), written in a group commit with the puts and copies that arrive meanwhile. Larger
 * blobs and every streamed body are files, as follows. A key lives in one backing: a write into one
 * removes the key's older value from the other, after the new value is in place. Where both exist
 * (a crash between those two steps, or two processes racing on one key) the row is the value.
 *
 * A key `a/b/c.eml` is the file `<root>/a/b/c.eml`. Writes go to a temp file in the same
 * directory and are renamed over the target, so a reader (or a crash) sees the whole old value,
 * the whole new value or nothing. In `sync` durability the file and then its directory are also
 * fsynced, so a write survives a power cut once `put()` returns; in `deferred` durability (the
 * local relay's ingest path) they are not, and the ingest journal's checkpoint syncs them in bulk
 * (docs/adr/0011-ingest-journal.md). Copies are hard links: immutable files make a link as good
 * as a copy, at the cost of one syscall.
 *
 * Local limits that S3 does not have (the key layout in design.md §3 never hits them):
 * a key cannot be both a blob and a "folder" of other keys (`a` and `a/b`, in either backing), a
 * key segment is at most 255 bytes, a key must be well-formed Unicode, and on case-insensitive file
 * systems keys differing only in case collide.
 */
import { randomBytes } from 'node:crypto';
import {
  constants,
  type Dirent,
  linkSync,
  lstatSync,
  renameSync,
  type Stats,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import {
  copyFile,
  type FileHandle,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rmdir,
  stat,
  unlink,
} from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { isStorageFull, NotFoundError, PresignUnavailableError, ValidationError } from '../../core/errors.ts';
import { signedBlobUrl } from '../../core/signed-links.ts';
import {
  assertByteRange,
  type BlobInfo,
  type BlobStore,
  type PresignOptions,
} from '../../ports/blob-store.ts';
import { BlobRows, type RowInfo, type RowWrite } from './blob-rows.ts';
import { type ReleasableReserve, retryWithReserve } from './disk-reserve.ts';
import { scheduleGroupCommit } from './group-commit.ts';

/** S3's limit on key length (UTF-8 bytes); keeping it here keeps both adapters interchangeable. */
export const MAX_KEY_BYTES = 1024;
/**
 * Temp files start with this; keys may not have a segment starting with it, so a temp file can
 * never be mistaken for (or clobber) a blob, and `list` can skip them by name alone.
 */
export const TEMP_PREFIX = '.~mr-tmp.';
export { MAX_PRESIGN_SECONDS, verifyPresignedBlobRequest } from '../../core/signed-links.ts';

/**
 * Chunks of a streamed body are gathered up to this size and written with one writev: SMTP and
 * socket streams deliver small chunks, and one syscall per chunk would dominate the ingest cost.
 */
const WRITE_BATCH_BYTES = 1 << 20;
/** `list` stats this many files in parallel: enough to hide latency, few enough not to exhaust fds. */
const STAT_BATCH = 64;
/**
 * Directories `knownDirs` remembers at most. Most are a message's own (`mailboxes/<box>/<id>/parts/`,
 * one or two per message with a blob over `smallBlobMaxBytes`), written once and never again: kept
 * without a bound, a relay running for weeks held every one it had ever made, deleted ones included
 * (another store, the API server's, deletes them). Forgetting one costs one `mkdir` at its next write.
 */
const KNOWN_DIRS_MAX = 1024;
/** Hard-link failures that mean "this file system cannot link here", not "something is wrong". */
const LINK_UNSUPPORTED = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'ENOSYS']);

/**
 * In deferred durability, bodies up to this size are written with synchronous calls: they only
 * reach the page cache, and blocking the event loop ~0.1 ms beats thread-pool round trips. Larger
 * bodies (attachments, big messages) keep the asynchronous path so the loop stays responsive.
 */
const SYNC_WRITE_MAX_BYTES = 256 * 1024;
/** Buffers up to this size are rows by default (the measurements are in ADR 13). */
export const DEFAULT_SMALL_BLOB_MAX_BYTES = 64 * 1024;
/** `list` reads rows in pages of this many, so no read transaction stays open across a yield. */
const ROW_PAGE = 256;

export interface FsBlobStoreOptions {
  /** The directory holding the blobs; created on first write. */
  readonly root: string;
  /** Enables `presign`: URLs served by the local HTTP API under `${baseUrl}/v1/blobs/…`. */
  readonly presign?: { readonly baseUrl: string; readonly secret: string | Buffer } | undefined;
  /**
   * `sync` (default): every write is fsynced before it returns. `deferred`: writes are still atomic
   * (temp file + rename) but not synced; the caller makes them durable in bulk (the local ingest
   * journal's checkpoint, see functions/local/ingest-journal.ts) and owns recovery after a crash.
   */
  readonly durability?: 'sync' | 'deferred';
  /**
   * Blobs given as a Buffer of at most this many bytes are rows of the SQLite database
   * `smallBlobDatabase` instead of files. 0: every blob is a file (rows written by another store
   * over the same root are still read, copied and deleted). Default DEFAULT_SMALL_BLOB_MAX_BYTES.
   */
  readonly smallBlobMaxBytes?: number;
  /** The database holding small blobs; default `<root>.sqlite` (beside the root, never listed as a blob). */
  readonly smallBlobDatabase?: string;
  /**
   * Room to release when the removal of rows (a message's deletion) meets a full disk, so that it
   * commits (disk-reserve.ts). Removals only: a put in the same group commit still fails.
   */
  readonly reserve?: ReleasableReserve | undefined;
}

// Temp names must be unique across store instances and processes sharing a data dir; a counter
// plus pid plus a per-process random tag gives that without a randomBytes call per write.
const PROCESS_TAG = `${process.pid.toString(36)}-${randomBytes(4).toString('hex')}`;
let tempCounter = 0;
function tempName(): string {
  tempCounter += 1;
  return `${TEMP_PREFIX}${PROCESS_TAG}-${tempCounter.toString(36)}`;
}

/** The pid of the process that made a temp file of this name (`tempName`), or null for another name. */
export function tempFileOwner(name: string): number | null {
  if (!name.startsWith(TEMP_PREFIX)) return null;
  const pid = Number.parseInt(name.slice(TEMP_PREFIX.length).split('-')[0] ?? '', 36);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const { code } = err as { code: unknown };
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/** ENOTDIR / EISDIR: the path runs through a file, or names a "folder" — either way no blob has that key. */
function isMissing(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

function noop(): void {}

function invalidKey(key: string, why: string): ValidationError {
  return new ValidationError(`invalid blob key: ${why}`, [JSON.stringify(key)], 'invalid_key');
}

function checkSegment(key: string, segment: string): void {
  if (segment === '' || segment === '.' || segment === '..') {
    throw invalidKey(key, 'empty, "." or ".." segment');
  }
  if (segment.startsWith(TEMP_PREFIX)) throw invalidKey(key, `segment starts with reserved "${TEMP_PREFIX}"`);
}

/** A lone surrogate has no UTF-8 form: SQLite and the file system would each store U+FFFD instead. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkChars(key: string): void {
  if (key.includes('\0')) throw invalidKey(key, 'contains NUL');
  if (LONE_SURROGATE.test(key)) throw invalidKey(key, 'not well-formed Unicode (a lone surrogate)');
  if (key.includes('\\')) throw invalidKey(key, 'contains a backslash');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw invalidKey(key, `longer than ${MAX_KEY_BYTES} bytes`);
}

/** A key must stay inside the root whatever the platform: no absolute paths, traversal or separators other than `/`. */
function assertKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw invalidKey(String(key), 'empty');
  checkChars(key);
  for (const segment of key.split('/')) checkSegment(key, segment);
}

/** A prefix is a key that may stop anywhere, even mid-segment or right after a `/`, or be empty. */
function splitPrefix(prefix: string): { dirKey: string; namePrefix: string } {
  if (typeof prefix !== 'string') throw invalidKey(String(prefix), 'not a string');
  checkChars(prefix);
  const slash = prefix.lastIndexOf('/');
  const dirKey = prefix.slice(0, slash + 1);
  if (slash >= 0) for (const segment of prefix.slice(0, slash).split('/')) checkSegment(prefix, segment);
  return { dirKey, namePrefix: prefix.slice(slash + 1) };
}

function keyConflict(key: string, cause: unknown): ValidationError {
  const err = new ValidationError(
    'blob key conflicts with an existing key: locally a key cannot be both a blob and a prefix of other keys',
    [JSON.stringify(key)],
    'key_conflict',
  );
  err.cause = cause;
  return err;
}

function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  throw new TypeError(`blob stream yielded a ${typeof chunk}, expected bytes`);
}

async function writeAll(fh: FileHandle, buffers: readonly Buffer[]): Promise<void> {
  let total = 0;
  for (const b of buffers) total += b.length;
  if (total === 0) return;
  const { bytesWritten } =
    buffers.length === 1 ? await fh.write(buffers[0] ?? Buffer.alloc(0)) : await fh.writev(buffers);
  // libuv already loops on short writes; this guards the contract rather than a known case.
  if (bytesWritten < total) await writeAll(fh, [Buffer.concat(buffers).subarray(bytesWritten)]);
}

/** Streams the body to disk with bounded memory (at most WRITE_BATCH_BYTES held at once). */
async function writeStream(fh: FileHandle, body: Readable): Promise<void> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of body as AsyncIterable<unknown>) {
    const buf = toBuffer(chunk);
    pending.push(buf);
    pendingBytes += buf.length;
    if (pendingBytes >= WRITE_BATCH_BYTES) {
      await writeAll(fh, pending);
      pending = [];
      pendingBytes = 0;
    }
  }
  await writeAll(fh, pending);
}

/** The fallback when hard links are not available: a real copy, fsynced like a put when `sync`. */
async function copyBytes(from: string, tmp: string, sync: boolean): Promise<void> {
  try {
    await copyFile(from, tmp, constants.COPYFILE_EXCL);
    if (!sync) return;
    const fh = await open(tmp, 'r+');
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await unlink(tmp).catch(noop);
    throw err;
  }
}

/**
 * A file blob's `lastModified`: the later of its data's last write (mtime) and its inode's last
 * change (ctime). A hard-link copy shares the source's inode, whose mtime is the source's write
 * time, but `link()` sets the ctime: so a copy reads as written when it was copied, as rows and S3's
 * CopyObject do, and expiry by age (retention sweeps, the replay window) never takes a fresh copy
 * of old bytes for old. Other inode changes (a link to it removed) only move it later.
 */
function fileLastModified(info: { mtimeMs: number; ctimeMs: number }): number {
  return Math.floor(Math.max(info.mtimeMs, info.ctimeMs));
}

/** A rename or unlink is only durable once the directory holding the entry is fsynced. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await open(dir, 'r');
  } catch (err) {
    // Windows cannot open a directory; it has no directory fsync to do either.
    if (errorCode(err) === 'EISDIR' || errorCode(err) === 'EPERM') return;
    throw err;
  }
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Compares keys in UTF-8 byte order (S3's, and SQLite's for TEXT), which UTF-16 order is not past the BMP. */
function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (code points from U+10000) sort below U+E000..U+FFFF in UTF-16, above them in UTF-8.
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    return x - y;
  }
  return a.length - b.length;
}

function rangeNotSatisfiable(): ValidationError {
  // What S3 answers (416 InvalidRange); clamping silently would hide an off-by-one in the caller.
  return new ValidationError('byte range starts beyond the end of the blob', [], 'range_not_satisfiable');
}

/** A row's bytes (or a range of them, `end` inclusive and clamped) as a byte stream, like a file's. */
function rowStream(data: Buffer, range: { start: number; end?: number } | undefined): Readable {
  if (range !== undefined && range.start >= data.length) throw rangeNotSatisfiable();
  const bytes =
    range === undefined
      ? data
      : data.subarray(range.start, range.end === undefined ? data.length : range.end + 1);
  return Readable.from(bytes.length === 0 ? [] : [bytes], { objectMode: false });
}

function closedError(): Error {
  return new Error('FsBlobStore: the store is closed');
}

/** A row write waiting for the next group commit. */
interface QueuedRowWrite extends RowWrite {
  /** The file that held the key's older value when the batch was prepared, to remove once the row is committed. */
  file: Stats | undefined;
  /** true: written; false: a copy whose source is not a row (the caller tries the files). */
  readonly resolve: (written: boolean) => void;
  readonly reject: (err: unknown) => void;
}

interface DirSyncState {
  running: Promise<void> | null;
  queued: Promise<void> | null;
}

interface SortedEntry {
  readonly name: string;
  readonly isDir: boolean;
  readonly sortKey: Buffer;
}

export class FsBlobStore implements BlobStore {
  private readonly root: string;
  private readonly presignOptions: { baseUrl: string; secret: string | Buffer } | undefined;
  /**
   * Directories known to exist, so the hot path skips mkdir; pruned when we remove one, re-checked on
   * ENOENT (another store or process may remove one), and at most KNOWN_DIRS_MAX of them.
   */
  private readonly knownDirs = new Set<string>();
  /** In-flight mkdirs, so concurrent first writes to a new directory share one (and its parent fsyncs). */
  private readonly creatingDirs = new Map<string, Promise<void>>();
  /** Group commit for directory fsyncs: concurrent puts into one directory share a sync. */
  private readonly dirSyncs = new Map<string, DirSyncState>();

  /** False in `deferred` durability: nothing is fsynced here. */
  private readonly sync: boolean;
  /** `sync`: every write is on disk when it resolves; `deferred`: atomic, synced by someone else (the journal's checkpoint). */
  readonly durability: 'sync' | 'deferred';
  /** Buffers up to this size are rows; 0: none are. */
  private readonly smallBlobMaxBytes: number;
  private readonly reserve: ReleasableReserve | undefined;
  private readonly databasePath: string;
  /** Opened on first use: a store that only presigns (or is never used) creates no database. */
  private database: BlobRows | undefined;
  private closed = false;
  /** File puts in progress, by key, so that a copy issued right after one copies its result. */
  private readonly fileWrites = new Map<string, Promise<void>>();
  /** Row writes waiting for the group commit (see `enqueue`). */
  private queue: QueuedRowWrite[] = [];
  private flushScheduled = false;

  constructor(options: FsBlobStoreOptions) {
    if (typeof options.root !== 'string' || options.root === '')
      throw new TypeError('FsBlobStore: root is required');
    this.root = resolve(options.root);
    const durability = options.durability ?? 'sync';
    if (durability !== 'sync' && durability !== 'deferred') {
      throw new TypeError(`FsBlobStore: durability must be 'sync' or 'deferred', got ${String(durability)}`);
    }
    this.durability = durability;
    this.sync = durability === 'sync';
    const max = options.smallBlobMaxBytes ?? DEFAULT_SMALL_BLOB_MAX_BYTES;
    if (!Number.isSafeInteger(max) || max < 0) {
      throw new TypeError(`FsBlobStore: smallBlobMaxBytes must be an integer >= 0, got ${String(max)}`);
    }
    this.smallBlobMaxBytes = max;
    this.reserve = options.reserve;
    this.databasePath = resolve(options.smallBlobDatabase ?? `${this.root}.sqlite`);
    if (this.databasePath.startsWith(`${this.root}/`)) {
      throw new TypeError(
        'FsBlobStore: smallBlobDatabase must not be inside the root (it would list as a blob)',
      );
    }
    if (options.presign !== undefined) {
      const { baseUrl, secret } = options.presign;
      if (!/^https?:\/\/[^/]/.test(baseUrl))
        throw new TypeError('FsBlobStore: presign.baseUrl must be an http(s) URL');
      if (secret.length < 16) throw new TypeError('FsBlobStore: presign.secret must be at least 16 bytes');
      this.presignOptions = { baseUrl: baseUrl.replace(/\/+$/, ''), secret };
    }
  }

  private pathOf(key: string): string {
    return `${this.root}/${key}`;
  }

  private dirOf(key: string): string {
    const slash = key.lastIndexOf('/');
    return slash < 0 ? this.root : `${this.root}/${key.slice(0, slash)}`;
  }

  private dirPathOf(dirKey: string): string {
    return dirKey === '' ? this.root : `${this.root}/${dirKey.slice(0, -1)}`;
  }

  private rows(): BlobRows {
    if (this.closed) throw closedError();
    this.database ??= new BlobRows(this.databasePath, this.sync ? 'sync' : 'deferred');
    return this.database;
  }

  /**
   * Commits queued row writes and closes the database. Calls after it fail (`presign` excepted).
   * Idempotent. A store that was never closed leaves a WAL that the next open replays.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.database?.close();
    this.database = undefined;
  }

  /**
   * Queues a row write (a put, a copy from a row, or a removal) for the next group commit: every write that
   * arrives before it runs (group-commit.ts) shares one transaction, one commit (and, in
   * `sync` durability, one fsync of the WAL). Resolves once committed.
   */
  private enqueue(write: {
    key: string;
    data?: Buffer;
    from?: string;
    remove?: 'key' | 'prefix';
  }): Promise<boolean> {
    if (this.closed) return Promise.reject(closedError());
    return new Promise((resolve, reject) => {
      this.queue.push({ ...write, file: undefined, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // A few event loop turns later, while more writes keep arriving (group-commit.ts).
        scheduleGroupCommit(
          () => this.queue.length,
          () => this.flush(),
        );
      }
    });
  }

  /**
   * Commits the queued row writes. Every other operation calls it first, so operations apply in
   * call order. Synchronous from the first stat to the last file removal, so no other operation of
   * this process runs in between.
   */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    const writes: QueuedRowWrite[] = [];
    for (const w of batch) {
      try {
        // The file side of the key rule, and the older value (if a file) that the row replaces.
        if (w.remove === undefined) w.file = this.fileAt(w.key);
        writes.push(w);
      } catch (err) {
        w.reject(err);
      }
    }
    if (writes.length === 0) return;
    let committed = writes;
    try {
      this.rows().writeBatch(writes, Date.now());
    } catch (err) {
      // Removals (a message's deletion) on a full disk: the reserve gives them room, puts get none.
      const removals = writes.filter((w) => w.remove !== undefined);
      const retried = removals.length > 0 && isStorageFull(err) && this.reserve?.release() === true;
      for (const w of retried ? writes.filter((w) => w.remove === undefined) : writes) w.reject(err);
      if (!retried) return;
      try {
        this.rows().writeBatch(removals, Date.now());
      } catch (retryErr) {
        for (const w of removals) w.reject(retryErr);
        return;
      }
      committed = removals;
    }
    // While the reserve is released (the disk was full), each deletion's WAL frames would grow the
    // WAL into the room the reserve gave (up to its 64 MB autocheckpoint: 17 KiB a message, measured);
    // checkpointed, the next commit reuses the WAL's own room.
    if (this.reserve?.held === false && committed.some((w) => w.remove !== undefined))
      this.rows().checkpoint();
    for (const w of committed) {
      if (w.outcome === 'conflict') w.reject(keyConflict(w.key, undefined));
      else if (w.outcome === 'no-source') w.resolve(false);
      else {
        // After the commit: until the file is gone a reader finds the row first, so never nothing.
        if (w.file !== undefined) this.removeStaleFile(w.key, w.file);
        w.resolve(true);
      }
    }
  }

  /** What the file side holds at `key`: a file (its stats) or nothing; throws key_conflict for a folder. */
  private fileAt(key: string): Stats | undefined {
    let info: Stats | undefined;
    try {
      info = statSync(this.pathOf(key), { throwIfNoEntry: false });
    } catch (err) {
      // A file where the key has a folder: `a` is a blob, `a/b` cannot be one.
      if (errorCode(err) === 'ENOTDIR') throw keyConflict(key, err);
      throw err;
    }
    if (info === undefined) return undefined;
    if (info.isDirectory()) throw keyConflict(key, undefined);
    return info.isFile() ? info : undefined;
  }

  /**
   * Removes the file holding the older value of a key a row has just taken over. It is moved aside
   * first: if it is not the file we saw (another process renamed a newer one in meanwhile), it is
   * put back, and that process's write replaces our row as it would have anyway.
   */
  private removeStaleFile(key: string, seen: Stats): void {
    const path = this.pathOf(key);
    const aside = `${this.dirOf(key)}/${tempName()}`;
    try {
      renameSync(path, aside);
    } catch {
      return; // already gone
    }
    try {
      const moved = lstatSync(aside);
      if (
        moved.ino !== seen.ino ||
        moved.dev !== seen.dev ||
        moved.size !== seen.size ||
        moved.mtimeMs !== seen.mtimeMs
      ) {
        linkSync(aside, path);
      }
    } catch {
      // EEXIST: something newer is in place already.
    } finally {
      try {
        unlinkSync(aside);
      } catch {
        // already gone
      }
    }
  }

  /**
   * Before a file write of `key`: applies the key rule on the row side, and returns the tag of the
   * row holding the key's older value, if any (deleted by `afterFileWrite` once the file is in place).
   */
  private beforeFileWrite(key: string): number | undefined {
    this.flush();
    const rows = this.rows();
    if (rows.conflicts(key)) throw keyConflict(key, undefined);
    return rows.gen(key);
  }

  /** Deletes the row the new file replaces: only that one, not a row written since (which wins). */
  private afterFileWrite(key: string, replacedGen: number | undefined): void {
    if (replacedGen !== undefined) this.rows().deleteIfGen(key, replacedGen);
  }

  /** The committed row of `key`, after committing queued writes. */
  private rowOf(key: string): { size: number; mtime: number; data: Buffer } | undefined {
    this.flush();
    return this.rows().get(key);
  }

  async put(key: string, body: Buffer | Readable, _options?: { contentType?: string }): Promise<void> {
    // contentType is not kept locally: presigned URLs carry their own, and the API knows what it serves.
    assertKey(key);
    if (this.smallBlobMaxBytes > 0 && Buffer.isBuffer(body) && body.length <= this.smallBlobMaxBytes) {
      await this.enqueue({ key, data: body });
      return;
    }
    const replaced = this.beforeFileWrite(key);
    const writing = this.putFile(key, body);
    this.fileWrites.set(key, writing);
    try {
      await writing;
    } finally {
      if (this.fileWrites.get(key) === writing) this.fileWrites.delete(key);
    }
    this.afterFileWrite(key, replaced);
  }

  private async putFile(key: string, body: Buffer | Readable): Promise<void> {
    const dir = this.dirOf(key);
    await this.ensureDir(dir, key);
    if (!this.sync && Buffer.isBuffer(body) && body.length <= SYNC_WRITE_MAX_BYTES) {
      try {
        this.putSmallDeferred(key, body, dir);
      } catch (err) {
        if (errorCode(err) !== 'ENOENT') throw err;
        // The directory vanished since we cached it (deletePrefix, rm -r): make it again, once.
        this.knownDirs.delete(dir);
        await this.ensureDir(dir, key);
        this.putSmallDeferred(key, body, dir);
      }
      return;
    }
    const tmp = `${dir}/${tempName()}`;
    const fh = await this.openTemp(dir, tmp, key);
    try {
      if (Buffer.isBuffer(body)) await writeAll(fh, [body]);
      else await writeStream(fh, body);
      // datasync is enough: it flushes the data and the size; other metadata (atime…) need not survive.
      if (this.sync) await fh.datasync();
      await fh.close();
    } catch (err) {
      // A failed write (or a body stream that errored) never becomes visible: drop the temp file.
      await fh.close().catch(noop);
      await unlink(tmp).catch(noop);
      if (!Buffer.isBuffer(body)) body.destroy();
      throw err;
    }
    await this.commit(tmp, key, dir);
  }

  /**
   * Deferred durability, small body: nothing waits for the disk, so synchronous calls that land in
   * the page cache (tens of µs) beat three thread-pool round trips (open, write, rename). Atomic all the same.
   */
  private putSmallDeferred(key: string, body: Buffer, dir: string): void {
    const tmp = `${dir}/${tempName()}`;
    writeFileSync(tmp, body, { flag: 'wx' });
    try {
      renameSync(tmp, this.pathOf(key));
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // already gone
      }
      const code = errorCode(err);
      throw code === 'EISDIR' || code === 'ENOTDIR' || code === 'ENOTEMPTY' ? keyConflict(key, err) : err;
    }
  }

  /** Creates the temp file; if the directory vanished since we cached it (deletePrefix, rm -r), makes it again. */
  private async openTemp(dir: string, tmp: string, key: string): Promise<FileHandle> {
    try {
      return await open(tmp, 'wx');
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      this.knownDirs.delete(dir);
      await this.ensureDir(dir, key);
      return await open(tmp, 'wx');
    }
  }

  /** Renames a complete temp file over the key and makes the new directory entry durable. */
  private async commit(tmp: string, key: string, dir: string): Promise<void> {
    try {
      await rename(tmp, this.pathOf(key));
    } catch (err) {
      await unlink(tmp).catch(noop);
      const code = errorCode(err);
      throw code === 'EISDIR' || code === 'ENOTDIR' || code === 'ENOTEMPTY' ? keyConflict(key, err) : err;
    }
    await this.syncDir(dir);
  }

  private ensureDir(dir: string, key: string): Promise<void> {
    if (this.knownDirs.has(dir)) return Promise.resolve();
    let pending = this.creatingDirs.get(dir);
    if (pending === undefined) {
      pending = this.createDir(dir, key).finally(() => this.creatingDirs.delete(dir));
      this.creatingDirs.set(dir, pending);
    }
    return pending;
  }

  private async createDir(dir: string, key: string): Promise<void> {
    let first: string | undefined;
    try {
      first = await mkdir(dir, { recursive: true });
    } catch (err) {
      const code = errorCode(err);
      throw code === 'EEXIST' || code === 'ENOTDIR' ? keyConflict(key, err) : err;
    }
    if (first !== undefined) {
      // Each new directory's entry lives in its parent: fsync every parent from the new leaf up
      // to the one that already existed, or a crash could lose the whole new subtree.
      const parents: string[] = [];
      for (let d = dir; ; ) {
        const parent = dirname(d);
        parents.push(parent);
        if (d === first || parent === d || d.length <= first.length) break;
        d = parent;
      }
      await Promise.all(parents.map((p) => this.syncDir(p)));
    }
    // A cache, not a record: past its bound it starts over rather than grow with every message stored.
    if (this.knownDirs.size >= KNOWN_DIRS_MAX) this.knownDirs.clear();
    this.knownDirs.add(dir);
  }

  /** Directories remembered as existing (diagnostics and tests: it stays within KNOWN_DIRS_MAX). */
  get cachedDirCount(): number {
    return this.knownDirs.size;
  }

  /**
   * fsync a directory after our change to it. If a sync of that directory is already running it
   * may have started before our rename, so we queue one more; everyone who arrives meanwhile
   * shares that queued sync. Under load N puts into `inbound/` cost ~2 directory fsyncs, not N.
   */
  private syncDir(dir: string): Promise<void> {
    if (!this.sync) return Promise.resolve();
    let state = this.dirSyncs.get(dir);
    if (state === undefined) {
      state = { running: null, queued: null };
      this.dirSyncs.set(dir, state);
    }
    const { running, queued } = state;
    if (running === null) return this.startDirSync(dir, state);
    if (queued !== null) return queued;
    const s = state;
    const next = running.then(noop, noop).then(() => {
      s.queued = null;
      return this.startDirSync(dir, s);
    });
    s.queued = next;
    return next;
  }

  private startDirSync(dir: string, state: DirSyncState): Promise<void> {
    const run: Promise<void> = fsyncDir(dir).finally(() => {
      if (state.running === run) state.running = null;
      if (state.running === null && state.queued === null && this.dirSyncs.get(dir) === state) {
        this.dirSyncs.delete(dir);
      }
    });
    state.running = run;
    return run;
  }

  // Reads look for a row, then a file, then a row again: a write that moved the key from a file to
  // a row between the first two looks (row committed, then file removed) is found by the third.

  async get(key: string): Promise<Buffer | null> {
    assertKey(key);
    const row = this.rowOf(key);
    if (row !== undefined) return row.data;
    try {
      return await readFile(this.pathOf(key));
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
    return this.rows().get(key)?.data ?? null;
  }

  async getStream(key: string, range?: { start: number; end?: number }): Promise<Readable | null> {
    assertKey(key);
    assertByteRange(range);
    const row = this.rowOf(key);
    if (row !== undefined) return rowStream(row.data, range);
    const stream = await this.fileStream(key, range);
    if (stream !== null) return stream;
    const again = this.rows().get(key);
    return again === undefined ? null : rowStream(again.data, range);
  }

  private async fileStream(
    key: string,
    range: { start: number; end?: number } | undefined,
  ): Promise<Readable | null> {
    let fh: FileHandle;
    try {
      // The open fd pins this version of the file: a concurrent put renames a new inode in, we keep reading the old one.
      fh = await open(this.pathOf(key), 'r');
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
    try {
      const info = await fh.stat();
      // Opening a directory for reading succeeds on Linux; it is a "folder", not a blob.
      if (!info.isFile()) {
        await fh.close();
        return null;
      }
      if (range !== undefined && range.start >= info.size) throw rangeNotSatisfiable();
    } catch (err) {
      await fh.close().catch(noop);
      throw err;
    }
    return fh.createReadStream(
      range === undefined ? {} : { start: range.start, end: range.end ?? Number.POSITIVE_INFINITY },
    );
  }

  async head(key: string): Promise<BlobInfo | null> {
    assertKey(key);
    this.flush();
    const row = this.rows().info(key);
    if (row !== undefined) return { key, size: row.size, lastModified: row.mtime };
    try {
      const info = await stat(this.pathOf(key));
      if (info.isFile()) return { key, size: info.size, lastModified: fileLastModified(info) };
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
    const again = this.rows().info(key);
    return again === undefined ? null : { key, size: again.size, lastModified: again.mtime };
  }

  /**
   * A row source is copied into a row (in the group commit, like a put; `lastModified` is the time
   * of the copy). A file source becomes a hard link: the source is never modified in place (put
   * renames a new file over it), so the link stays a faithful, independent copy; its
   * `lastModified` is the time of the link, as for rows and S3's CopyObject (fileLastModified).
   */
  async copy(fromKey: string, toKey: string): Promise<void> {
    assertKey(fromKey);
    assertKey(toKey);
    // A put of the source issued just before and still being written as a file: copy what it writes
    // (a put and a copy of a row need no wait: queued row writes are committed in call order).
    const sourceWrite = this.fileWrites.get(fromKey);
    if (sourceWrite !== undefined) await sourceWrite.catch(noop);
    if (await this.enqueue({ key: toKey, from: fromKey })) return;
    const replaced = this.beforeFileWrite(toKey);
    try {
      await this.copyFile(fromKey, toKey);
    } catch (err) {
      // The source may have moved from a file to a row since we looked: copy that row.
      if (err instanceof NotFoundError && (await this.enqueue({ key: toKey, from: fromKey }))) return;
      throw err;
    }
    this.afterFileWrite(toKey, replaced);
  }

  private async copyFile(fromKey: string, toKey: string): Promise<void> {
    const from = this.pathOf(fromKey);
    const to = this.pathOf(toKey);
    const dir = this.dirOf(toKey);
    await this.ensureDir(dir, toKey);
    try {
      // Fresh destinations (every delivery) take one syscall: link straight to the final name.
      await link(from, to);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'EEXIST') {
        await this.replaceByCopy(fromKey, toKey, dir);
        return;
      }
      if (code === 'ENOENT') {
        if ((await this.head(fromKey)) === null)
          throw new NotFoundError(`no blob with key ${JSON.stringify(fromKey)}`);
        // The source exists, so the destination directory vanished under our cache.
        this.knownDirs.delete(dir);
        await this.ensureDir(dir, toKey);
        await this.replaceByCopy(fromKey, toKey, dir);
        return;
      }
      if (code !== undefined && LINK_UNSUPPORTED.has(code)) {
        await this.replaceByCopy(fromKey, toKey, dir);
        return;
      }
      if (code === 'EISDIR' || code === 'ENOTDIR') throw keyConflict(toKey, err);
      throw err;
    }
    await this.syncDir(dir);
  }

  /** Atomically replaces `toKey` with the source's bytes: link (or copy) to a temp name, then rename. */
  private async replaceByCopy(fromKey: string, toKey: string, dir: string): Promise<void> {
    const from = this.pathOf(fromKey);
    const to = this.pathOf(toKey);
    const missing = (): NotFoundError => new NotFoundError(`no blob with key ${JSON.stringify(fromKey)}`);
    const [src, dst] = await Promise.all([
      stat(from).catch((err: unknown) => {
        throw isMissing(err) ? missing() : err;
      }),
      stat(to).catch(() => null),
    ]);
    // A retried copy: the destination already is the source.
    if (dst !== null && dst.ino === src.ino && dst.dev === src.dev) return;
    const tmp = `${dir}/${tempName()}`;
    try {
      await link(from, tmp);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOENT') throw missing();
      if (code === undefined || !LINK_UNSUPPORTED.has(code)) throw err;
      await copyBytes(from, tmp, this.sync).catch((e: unknown) => {
        throw isMissing(e) ? missing() : e;
      });
    }
    await this.commit(tmp, toKey, dir);
    // rename() between two links to one inode is a no-op that leaves the temp name (POSIX); drop it.
    await unlink(tmp).catch(noop);
  }

  // Deletes remove the file first, then the row: where both exist the row is the value, so a
  // reader never sees the older file come back in between.

  async delete(key: string): Promise<void> {
    assertKey(key);
    // A key with no file is a row or nothing (most blobs are rows: ADR 13). Its removal is queued
    // for the next group commit right away, in its place among this store's writes (so a put
    // issued after it still wins), and deletions of many messages at once share a transaction and
    // its fsync instead of one each.
    if (!this.hasFileOrFolder(this.pathOf(key))) return this.removeRows(key, 'key');
    this.flush();
    let unlinked = true;
    try {
      await unlink(this.pathOf(key));
    } catch (err) {
      if (!isMissing(err)) throw err;
      unlinked = false;
    }
    if (unlinked) await this.syncDir(this.dirOf(key));
    const rows = this.rows();
    // Looked up first: a read takes no write lock from the other processes sharing the database.
    if (rows.gen(key) !== undefined) retryWithReserve(this.reserve, () => rows.delete(key));
  }

  async deletePrefix(prefix: string): Promise<void> {
    const { dirKey, namePrefix } = splitPrefix(prefix);
    // A folder prefix with no folder on disk (a small message's `<id>/`: its summary is a row) has
    // rows only: removed as `delete` removes one.
    if (namePrefix === '' && dirKey !== '' && !this.hasFileOrFolder(this.dirPathOf(dirKey))) {
      return this.removeRows(prefix, 'prefix');
    }
    this.flush();
    await this.deleteIn(dirKey, namePrefix);
    if (namePrefix === '' && dirKey !== '') {
      // Every key below this directory matched, so the directory itself can go too.
      await this.removeDirIfEmpty(this.dirPathOf(dirKey));
    }
    const rows = this.rows();
    if (rows.page(prefix, undefined, 1).length > 0)
      retryWithReserve(this.reserve, () => rows.deletePrefix(prefix));
  }

  /** Whether anything is at `path` on disk (or it cannot be told: then the careful path is taken). */
  private hasFileOrFolder(path: string): boolean {
    try {
      return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
    } catch {
      return true;
    }
  }

  /**
   * Removes the row `key`, or the rows under the prefix `key`, in the next group commit. Nothing to
   * wait for when there is no such row and no write queued (one queued may be about to make it).
   */
  private async removeRows(key: string, remove: 'key' | 'prefix'): Promise<void> {
    if (this.queue.length === 0) {
      // Looked up first: a read takes no write lock from the other processes sharing the database.
      const rows = this.rows();
      if (remove === 'key' ? rows.gen(key) === undefined : rows.page(key, undefined, 1).length === 0) return;
    }
    await this.enqueue({ key, remove });
  }

  private async deleteIn(dirKey: string, namePrefix: string): Promise<void> {
    const dirPath = this.dirPathOf(dirKey);
    const entries = await this.readSorted(dirPath, namePrefix);
    let changed = false;
    const files = entries.filter((e) => !e.isDir);
    for (let i = 0; i < files.length; i += STAT_BATCH) {
      await Promise.all(
        files.slice(i, i + STAT_BATCH).map((e) =>
          unlink(`${dirPath}/${e.name}`).then(
            () => {
              changed = true;
            },
            (err: unknown) => {
              if (!isMissing(err)) throw err;
            },
          ),
        ),
      );
    }
    for (const e of entries) {
      if (!e.isDir) continue;
      await this.deleteIn(`${dirKey}${e.name}/`, '');
      if (await this.removeDirIfEmpty(`${dirPath}/${e.name}`)) changed = true;
    }
    if (changed) await this.syncDir(dirPath);
  }

  /** Empty directories are left over from deleted keys; one still holding a concurrent put's temp file stays. */
  private async removeDirIfEmpty(dirPath: string): Promise<boolean> {
    try {
      await rmdir(dirPath);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || isMissing(err)) return false;
      throw err;
    }
    // rmdir removed an empty directory: whatever was below it went before (deleteIn removes bottom-up,
    // each by this call), and an entry left stale by another store is caught by ENOENT at its next
    // write. Scanning the whole cache here cost every deletion time in proportion to it.
    this.knownDirs.delete(dirPath);
    await this.syncDir(dirname(dirPath));
    return true;
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    // Validated here, not inside the generator, so a bad prefix fails at the call.
    const { dirKey, namePrefix } = splitPrefix(prefix);
    this.flush();
    return this.listMerged(prefix, dirKey, namePrefix);
  }

  /** Rows and files merged in key order; a key in both is listed once, as its row (the value). */
  private async *listMerged(prefix: string, dirKey: string, namePrefix: string): AsyncGenerator<BlobInfo> {
    let page: RowInfo[] = this.rows().page(prefix, undefined, ROW_PAGE);
    let at = 0;
    const nextRow = (): RowInfo | undefined => {
      const last = page[page.length - 1];
      if (at === page.length && page.length === ROW_PAGE && last !== undefined) {
        page = this.rows().page(prefix, last.key, ROW_PAGE);
        at = 0;
      }
      return page[at];
    };
    const files = this.listIn(dirKey, namePrefix);
    try {
      let file = await files.next();
      for (;;) {
        const row = nextRow();
        const f = file.done === true ? undefined : file.value;
        if (row === undefined && f === undefined) return;
        const order = row === undefined ? 1 : f === undefined ? -1 : compareKeys(row.key, f.key);
        if (row !== undefined && order <= 0) {
          at += 1;
          if (order === 0) file = await files.next();
          yield { key: row.key, size: row.size, lastModified: row.mtime };
        } else if (f !== undefined) {
          file = await files.next();
          yield f;
        }
      }
    } finally {
      await files.return(undefined);
    }
  }

  private async *listIn(dirKey: string, namePrefix: string): AsyncGenerator<BlobInfo> {
    const dirPath = this.dirPathOf(dirKey);
    const entries = await this.readSorted(dirPath, namePrefix);
    let i = 0;
    while (i < entries.length) {
      const first = entries[i];
      if (first === undefined) break;
      if (first.isDir) {
        i += 1;
        yield* this.listIn(`${dirKey}${first.name}/`, '');
        continue;
      }
      const run: SortedEntry[] = [];
      for (let e = entries[i]; e !== undefined && !e.isDir && run.length < STAT_BATCH; e = entries[++i])
        run.push(e);
      const infos = await Promise.all(
        run.map((e) =>
          stat(`${dirPath}/${e.name}`).catch((err: unknown) => {
            // Deleted between readdir and stat: it is simply not there any more.
            if (isMissing(err)) return null;
            throw err;
          }),
        ),
      );
      for (let j = 0; j < run.length; j++) {
        const e = run[j];
        const info = infos[j];
        if (e === undefined || info === undefined || info === null || !info.isFile()) continue;
        yield { key: `${dirKey}${e.name}`, size: info.size, lastModified: fileLastModified(info) };
      }
    }
  }

  /**
   * The entries of one directory that can hold keys starting with `namePrefix`, in key order.
   * Keys sort by UTF-8 bytes (as S3 lists them), and a directory's keys all start with `name/`,
   * so sorting files by name and directories by `name/` yields the keys in order depth-first.
   */
  private async readSorted(dirPath: string, namePrefix: string): Promise<SortedEntry[]> {
    let dirents: Dirent[];
    try {
      dirents = await readdir(dirPath, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return [];
      throw err;
    }
    const out: SortedEntry[] = [];
    for (const d of dirents) {
      if (!d.name.startsWith(namePrefix) || d.name.startsWith(TEMP_PREFIX)) continue;
      let isDir = d.isDirectory();
      if (!isDir && !d.isFile()) {
        // Symlinks and other special files are not blobs; only an unknown d_type needs a stat.
        if (d.isSymbolicLink() || d.isFIFO() || d.isSocket() || d.isBlockDevice() || d.isCharacterDevice())
          continue;
        const info = await stat(`${dirPath}/${d.name}`).catch(() => null);
        if (info === null || (!info.isFile() && !info.isDirectory())) continue;
        isDir = info.isDirectory();
      }
      out.push({ name: d.name, isDir, sortKey: Buffer.from(isDir ? `${d.name}/` : d.name) });
    }
    out.sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));
    return out;
  }

  async presign(key: string, options: PresignOptions): Promise<string> {
    assertKey(key);
    if (this.presignOptions === undefined) {
      throw new PresignUnavailableError(
        'FsBlobStore.presign: this store was created without `presign: { baseUrl, secret }`',
      );
    }
    return signedBlobUrl({ ...this.presignOptions, ...options, key });
  }
}
