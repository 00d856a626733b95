/**
 * The local relay's write-ahead journal: how `250` can mean "durable" without an fsync per file.
 *
 * Before the router runs, each received message (its SES-shaped notification and raw bytes) is
 * appended to a journal segment. Appends from all SMTP sessions that arrive while a flush is running
 * are written together with one `writev` + `fdatasync` (group commit), so N concurrent messages cost
 * one sync, not ~9 each. Everything the router then writes under the data dir (inbound/, mailboxes/,
 * summaries, parts) goes through a store in `deferred` durability: atomic, not synced.
 *
 * A checkpoint (every second while there is traffic, and at close) rotates to a new segment, waits
 * until every message of the old one has been routed, flushes the whole file system (`sync -f`,
 * i.e. syncfs(2)), and deletes the old segment. After a crash, `recoverJournal` re-runs the router
 * over the segments left behind; the router is idempotent, so messages already routed are no-ops.
 * See docs/adr/0011-ingest-journal.md.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writevSync } from 'node:fs';
import { type FileHandle, open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { StorageFullError } from '../core/errors.ts';
import {
  notificationJson,
  type SesReceivedNotification,
  sesReceivedNotificationSchema,
} from '../core/notification.ts';

/** 'MRJ1': marks the start of every record, so a torn tail is recognized. */
const MAGIC = 0x4d524a31;
/**
 * 'MRJX': a record whose message was aborted (routing failed and the client was told to retry),
 * written over its MAGIC in place: four bytes in a block the file already has, so it works on a
 * full disk, where appending an abort record would not (and recovery would then deliver a second
 * copy next to the client's retry).
 */
const ABORTED_MAGIC = 0x4d524a58;
const RECORD_HEAD_BYTES = 16;
/** Checkpoint at least this often while messages arrive (bounds the replay work after a crash). */
export const CHECKPOINT_INTERVAL_MS = 1000;
/** …and as soon as a segment grows past this (bounds disk use under a burst of big messages). */
export const MAX_SEGMENT_BYTES = 256 * 1024 * 1024;
/** Batches up to this size are written with a synchronous call (page cache only; the sync is not). */
const SYNC_APPEND_MAX_BYTES = 256 * 1024;

export type JournalRecord =
  | { readonly type: 'ingest'; readonly notification: SesReceivedNotification; readonly raw: Buffer }
  /**
   * Routing of that message failed and the client got a 4xx: recovery must not deliver it. Written
   * by earlier versions (now `IngestJournal.abort` marks the record itself); still read.
   */
  | { readonly type: 'abort'; readonly sesMessageId: string };

function run(command: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, [...args], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} exited with ${code}`)),
    );
  });
}

/**
 * Flushes every dirty page of the file system holding `path` to disk: syncfs(2) through coreutils
 * `sync -f` (Linux); where `-f` is unknown (macOS, BSD), a plain `sync` of every file system.
 * Spawns a process per call: fine for one-off use (recovery, tests). A running relay uses a
 * `FileSystemSyncer`, which forks once.
 */
export async function syncFileSystem(path: string): Promise<void> {
  try {
    await run('sync', ['-f', path]);
  } catch {
    await run('sync', []);
  }
}

/**
 * The shell loop a `FileSystemSyncer` runs: one `sync -f` (or plain `sync`) per line read, answered
 * with `ok` or `fail`. The path is passed as an argument, never interpolated into the script.
 */
const SYNC_LOOP =
  'while IFS= read -r _; do if sync -f "$1" 2>/dev/null || sync; then echo ok; else echo fail; fi; done';

/**
 * `syncFileSystem` for a long-running process, through one small helper process started up front.
 *
 * Node has no syncfs(2), so a checkpoint needs a child process. Spawning one per checkpoint forks
 * the whole relay every second: fork write-protects every page of the parent, and the relay then
 * takes a page fault on the first write to each of them (measured: ~0.4 ms of CPU per message at
 * full load). Here the fork happens once; each sync is a line on the helper's stdin and the small
 * shell forks `sync`. If the helper dies, calls fall back to `syncFileSystem`.
 */
export class FileSystemSyncer {
  readonly #path: string;
  #child: ChildProcess | null;
  #waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  #buffered = '';
  #pipes: { ref(): void; unref(): void } | null = null;

  constructor(path: string) {
    this.#path = path;
    this.#child = this.#start();
  }

  #start(): ChildProcess | null {
    let child: ChildProcess;
    try {
      child = spawn('/bin/sh', ['-c', SYNC_LOOP, 'mail-relay-sync', this.#path], {
        stdio: ['pipe', 'pipe', 'ignore'],
      });
    } catch {
      return null;
    }
    const sockets = [child.stdin, child.stdout] as unknown as ({ ref(): void; unref(): void } | null)[];
    const pipes = {
      ref: () => {
        for (const p of sockets) p?.ref();
      },
      unref: () => {
        for (const p of sockets) p?.unref();
      },
    };
    this.#pipes = pipes;
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      this.#buffered += chunk;
      for (let nl = this.#buffered.indexOf('\n'); nl >= 0; nl = this.#buffered.indexOf('\n')) {
        const line = this.#buffered.slice(0, nl);
        this.#buffered = this.#buffered.slice(nl + 1);
        const waiter = this.#waiting.shift();
        if (this.#waiting.length === 0) pipes.unref();
        if (line === 'ok') waiter?.resolve();
        else waiter?.reject(new Error(`sync of ${this.#path} failed`));
      }
    });
    const gone = () => {
      if (this.#child === child) this.#child = null;
      // Whoever was waiting gets the one-off sync instead (a lost reply must not hang a checkpoint).
      for (const w of this.#waiting.splice(0)) syncFileSystem(this.#path).then(w.resolve, w.reject);
    };
    child.once('error', gone);
    child.once('exit', gone);
    child.stdin?.on('error', gone);
    // An idle helper does not keep an otherwise finished process alive; a pending sync does (its pipe
    // is referenced while an answer is awaited).
    child.unref();
    pipes.unref();
    return child;
  }

  sync(): Promise<void> {
    const child = this.#child;
    if (child === null || child.stdin === null) return syncFileSystem(this.#path);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#pipes?.ref();
      child.stdin?.write('sync\n');
    });
  }

  /** Stops the helper (after the syncs already asked for have been answered). */
  close(): void {
    const child = this.#child;
    this.#child = null;
    child?.stdin?.end();
  }
}

function encode(record: JournalRecord): Buffer[] {
  // Exactly JSON.stringify({ type, notification }), with the notification's JSON made once for
  // the journal and the router's `notifications/` copy.
  const header = Buffer.from(
    record.type === 'ingest'
      ? `{"type":"ingest","notification":${notificationJson(record.notification)}}`
      : JSON.stringify({ type: 'abort', sesMessageId: record.sesMessageId }),
  );
  const raw = record.type === 'ingest' ? record.raw : Buffer.alloc(0);
  const head = Buffer.alloc(RECORD_HEAD_BYTES);
  head.writeUInt32BE(MAGIC, 0);
  head.writeUInt32BE(header.length, 4);
  head.writeUInt32BE(raw.length, 8);
  head.writeUInt32BE(crc32(raw, crc32(header)), 12);
  return [head, header, raw];
}

/**
 * The complete records of a segment, less those marked aborted; a torn or corrupt tail (a crash
 * mid-append) ends the list.
 */
export function decodeSegment(bytes: Buffer): JournalRecord[] {
  const out: JournalRecord[] = [];
  let at = 0;
  while (at + RECORD_HEAD_BYTES <= bytes.length) {
    const magic = bytes.readUInt32BE(at);
    if (magic !== MAGIC && magic !== ABORTED_MAGIC) break;
    const headerLen = bytes.readUInt32BE(at + 4);
    const rawLen = bytes.readUInt32BE(at + 8);
    const end = at + RECORD_HEAD_BYTES + headerLen + rawLen;
    if (end > bytes.length) break;
    const header = bytes.subarray(at + RECORD_HEAD_BYTES, at + RECORD_HEAD_BYTES + headerLen);
    const raw = bytes.subarray(at + RECORD_HEAD_BYTES + headerLen, end);
    if (crc32(raw, crc32(header)) !== bytes.readUInt32BE(at + 12)) break;
    if (magic === ABORTED_MAGIC) {
      at = end;
      continue;
    }
    const parsed = JSON.parse(header.toString('utf8')) as {
      type: string;
      notification?: unknown;
      sesMessageId?: string;
    };
    if (parsed.type === 'ingest') {
      out.push({
        type: 'ingest',
        notification: sesReceivedNotificationSchema.parse(parsed.notification),
        raw,
      });
    } else if (parsed.type === 'abort' && typeof parsed.sesMessageId === 'string') {
      out.push({ type: 'abort', sesMessageId: parsed.sesMessageId });
    }
    at = end;
  }
  return out;
}

interface Segment {
  readonly path: string;
  fh: FileHandle | null;
  opening: Promise<FileHandle> | null;
  bytes: number;
  /** Messages appended and not yet settled (routed or aborted). */
  outstanding: number;
  drained: (() => void) | null;
  /** The batch being written to this segment, if any (never rejects). */
  writing: Promise<void> | null;
}

/** A receipt for an appended message; give it back to `settle` once the router is done with it. */
export interface JournalTicket {
  readonly segment: Segment;
  /** Where its record starts in the segment file. */
  readonly offset: number;
}

interface QueuedAppend {
  readonly buffers: Buffer[];
  readonly resolve: (ticket: JournalTicket) => void;
  readonly reject: (err: unknown) => void;
}

export interface IngestJournalOptions {
  /**
   * A segment that grows past this many bytes is checkpointed at once (rotated to a new one, and
   * deleted once its messages are routed).
   * @default MAX_SEGMENT_BYTES (256 MiB)
   */
  readonly maxSegmentBytes?: number | undefined;
}

export class IngestJournal {
  readonly #dir: string;
  readonly #syncFs: () => Promise<void>;
  readonly #maxSegmentBytes: number;
  #current: Segment;
  #seq = 0;
  #queue: QueuedAppend[] = [];
  #flushing: Promise<void> | null = null;
  /** The latest checkpoint, which a later call shares while it runs (unless the segment filled up). */
  #checkpointing: Promise<void> | null = null;
  /** Every checkpoint still running: one per segment rotated away and not yet deleted. */
  readonly #running = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  /** `dir` holds the segments; `syncFs` makes every write under the data dir durable. */
  constructor(dir: string, syncFs: () => Promise<void>, options: IngestJournalOptions = {}) {
    const maxSegmentBytes = options.maxSegmentBytes ?? MAX_SEGMENT_BYTES;
    if (!Number.isSafeInteger(maxSegmentBytes) || maxSegmentBytes <= 0)
      throw new RangeError(`maxSegmentBytes must be a positive integer, not ${maxSegmentBytes}`);
    mkdirSync(dir, { recursive: true });
    this.#dir = dir;
    this.#syncFs = syncFs;
    this.#maxSegmentBytes = maxSegmentBytes;
    this.#current = this.#newSegment();
  }

  #newSegment(): Segment {
    this.#seq += 1;
    // The pid in the name tells recovery which segments belong to a live process; the boot id, that
    // a pid alive now is not the writer's (pids are handed out anew after a reboot).
    const boot = BOOT_ID === null ? '' : `-${BOOT_ID}`;
    const name = `${process.pid}-${Date.now().toString(36)}-${this.#seq}${boot}.log`;
    return {
      path: join(this.#dir, name),
      fh: null,
      opening: null,
      bytes: 0,
      outstanding: 0,
      drained: null,
      writing: null,
    };
  }

  /** Appends a record; resolves once it is on disk (group commit with every concurrent append). */
  append(record: JournalRecord): Promise<JournalTicket> {
    if (this.#closed) return Promise.reject(new Error('the ingest journal is closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ buffers: encode(record), resolve, reject });
      this.#flushing ??= this.#flushLoop();
      this.#timer ??= setTimeout(() => {
        this.#timer = null;
        this.checkpoint().catch(() => {
          // A failed checkpoint keeps its segment; the next one (or recovery) retries it.
        });
      }, CHECKPOINT_INTERVAL_MS).unref();
    });
  }

  async #flushLoop(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      const segment = this.#current;
      segment.writing = this.#write(segment, batch);
      await segment.writing;
      if (segment.bytes > this.#maxSegmentBytes) {
        this.checkpoint().catch(() => {
          // Kept for the next checkpoint, as above.
        });
      }
    }
    this.#flushing = null;
  }

  async #write(segment: Segment, batch: readonly QueuedAppend[]): Promise<void> {
    const start = segment.bytes;
    try {
      if (segment.fh === null) {
        // Positional writes, not O_APPEND: on Linux a positional write to an O_APPEND file appends,
        // and `abort` writes over a record in place.
        segment.opening ??= open(segment.path, 'wx');
        segment.fh = await segment.opening;
      }
      const buffers = batch.flatMap((b) => b.buffers);
      const bytes = buffers.reduce((n, b) => n + b.length, 0);
      // A small batch is copied into the page cache at once: a thread-pool round trip would add
      // a turn of a busy event loop to every message's latency. Big ones keep the loop free.
      const written =
        bytes <= SYNC_APPEND_MAX_BYTES
          ? writevSync(segment.fh.fd, buffers, start)
          : (await segment.fh.writev(buffers, start)).bytesWritten;
      // A regular file takes a part of a write only when the disk (or a file size limit) is full.
      if (written !== bytes) {
        throw new StorageFullError(
          `no space left to journal the message (wrote ${written} of ${bytes} bytes)`,
        );
      }
      await segment.fh.datasync();
      segment.bytes += bytes;
      segment.outstanding += batch.length;
      let offset = start;
      for (const b of batch) {
        b.resolve({ segment, offset });
        offset += b.buffers.reduce((n, buf) => n + buf.length, 0);
      }
    } catch (err) {
      // A failed open is retried by the next batch rather than cached as a rejection for good.
      if (segment.fh === null) segment.opening = null;
      else await this.#undo(segment, start);
      for (const b of batch) b.reject(err);
    }
  }

  /**
   * After a failed batch (a full disk, an I/O error), cuts the segment back to where the batch began:
   * its appends were refused (the clients get 4xx and retry), so none of its records may be
   * recovered later, not even the complete ones a short write left. Truncating needs no free space.
   * If even that fails, the batch's first record start is overwritten with zeros (four bytes in a
   * block the file has, as `abort` writes), so that recovery stops reading there, as at a tear: the
   * batch's complete records are not delivered next to the clients' retries. Later records go to a
   * fresh segment; this one is never checkpointed away, and is closed once its messages are settled.
   */
  async #undo(segment: Segment, start: number): Promise<void> {
    const fh = segment.fh;
    if (fh === null) return;
    try {
      await fh.truncate(start);
      await fh.datasync();
      return;
    } catch {
      // Abandoned below, its refused records cut off from recovery if the disk still lets us.
      await fh
        .write(Buffer.alloc(4), 0, 4, start)
        .then(() => fh.datasync())
        .catch(() => undefined);
    }
    if (this.#current !== segment) return;
    this.#current = this.#newSegment();
    const close = () => {
      segment.fh = null;
      fh.close().catch(() => undefined);
    };
    if (segment.outstanding === 0) close();
    else segment.drained = close;
  }

  /**
   * Marks an appended message as aborted (its routing failed and the client is told to retry), so
   * that recovery does not deliver it as well as the client's retry: the record's start is
   * overwritten in place and synced. Call it before `settle`.
   */
  async abort(ticket: JournalTicket): Promise<void> {
    const fh = ticket.segment.fh;
    if (fh === null) throw new Error('the journal segment is closed');
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE(ABORTED_MAGIC, 0);
    await fh.write(mark, 0, mark.length, ticket.offset);
    await fh.datasync();
  }

  /** Marks an appended message as routed (or aborted): its segment may be checkpointed. */
  settle(ticket: JournalTicket): void {
    const { segment } = ticket;
    segment.outstanding -= 1;
    if (segment.outstanding === 0) segment.drained?.();
  }

  /**
   * Rotates to a new segment, waits until the old one is fully routed, makes the file system
   * durable and deletes the old segment. Concurrent calls share one checkpoint, except when the
   * segment written since it began has grown past `maxSegmentBytes`: that one is rotated away too,
   * by a checkpoint of its own, so that a checkpoint waiting on a slow message (a big one being
   * routed) does not leave the next segment to grow without bound. Each deletes its segment once
   * that one is routed, whatever the other waits for.
   */
  checkpoint(): Promise<void> {
    if (this.#checkpointing !== null && this.#current.bytes <= this.#maxSegmentBytes)
      return this.#checkpointing;
    const run: Promise<void> = this.#checkpoint().finally(() => {
      this.#running.delete(run);
      if (this.#checkpointing === run) this.#checkpointing = null;
    });
    this.#running.add(run);
    this.#checkpointing = run;
    return run;
  }

  async #checkpoint(): Promise<void> {
    const old = this.#current;
    if (old.fh === null && old.opening === null) return;
    this.#current = this.#newSegment();
    // A batch already taken for the old segment finishes before it is judged drained; later ones go
    // to the new segment. (Waiting for the whole flush loop instead would starve under steady traffic.)
    await old.writing;
    // Its only batch failed to open it: there is no file to sync or delete.
    if (old.fh === null) return;
    if (old.outstanding > 0) await new Promise<void>((resolve) => (old.drained = resolve));
    try {
      await this.#syncFs();
    } finally {
      // Closed even when the sync fails: the segment stays on disk for recovery, not its descriptor.
      await old.fh?.close();
    }
    await unlink(old.path);
  }

  /** A final checkpoint: after close, nothing is left to recover. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#flushing;
    // The checkpoints already running (the timer's, a full segment's) cover older segments only: let
    // them end, then checkpoint the current one. A failure keeps its segment for recovery, as on the timer.
    await Promise.allSettled([...this.#running]);
    await this.checkpoint();
  }
}

/**
 * The first 8 hex digits of this boot's id (Linux's `/proc/sys/kernel/random/boot_id`), or null
 * where there is none. Not the wall clock against the uptime: a clock stepped forward after a host's
 * sleep (Docker Desktop, WSL2) would make a live process's segment look older than the boot.
 */
const BOOT_ID: string | null = (() => {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').replace(/-/g, '').trim();
    return /^[0-9a-f]{8}/.test(id) ? id.slice(0, 8) : null;
  } catch {
    return null;
  }
})();

/** Whether segments of this pid belong to another live process (this process's own count as orphans). */
function isAlive(pid: number): boolean {
  return pid !== process.pid && processIsAlive(pid);
}

/** Whether a process of this pid exists (signal 0; EPERM means it exists but is not ours). */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Segments left by processes that are gone (a crash), oldest first, with their records. Segments
 * of a live process (a `dev` running beside an `import`) are left to that process.
 */
export async function orphanedSegments(dir: string): Promise<{ path: string; records: JournalRecord[] }[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  // A segment written before this boot is an orphan even if its pid is alive again: after a reboot
  // (an OS crash, a power cut) pids are handed out anew, and another process may hold it. Names
  // without a boot id (older ones, systems without one) go by the pid alone, and so do all names
  // where this process cannot read the boot id (a sandbox hiding /proc/sys): it cannot tell them
  // from a live process's segments.
  const segments = names
    .map((name) => /^(\d+)-([0-9a-z]+)-(\d+)(?:-([0-9a-f]{8}))?\.log$/.exec(name))
    .filter(
      (m): m is RegExpExecArray =>
        m !== null &&
        (!isAlive(Number(m[1])) || (m[4] !== undefined && BOOT_ID !== null && m[4] !== BOOT_ID)),
    )
    .sort((a, b) => parseInt(a[2] ?? '0', 36) - parseInt(b[2] ?? '0', 36) || Number(a[3]) - Number(b[3]));
  const out: { path: string; records: JournalRecord[] }[] = [];
  for (const m of segments) {
    const path = join(dir, m[0]);
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      // Recovered and deleted meanwhile by another process.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    out.push({ path, records: decodeSegment(bytes) });
  }
  return out;
}

/**
 * Re-routes what crashed processes journaled: every ingested message not aborted. `apply` is the
 * same function ingest runs after the append (idempotent). Then syncs and deletes the segments.
 * `beforeReplay` is told how many messages are about to be re-routed, when there are any.
 */
export async function recoverJournal(
  dir: string,
  apply: (notification: SesReceivedNotification, raw: Buffer) => Promise<unknown>,
  syncFs: () => Promise<void>,
  beforeReplay?: (messages: number) => void | Promise<void>,
): Promise<{ segments: number; messages: number }> {
  const segments = await orphanedSegments(dir);
  const aborted = new Set(
    segments.flatMap((s) => s.records.flatMap((r) => (r.type === 'abort' ? [r.sesMessageId] : []))),
  );
  const replay = segments.flatMap((s) =>
    s.records.flatMap((r) => (r.type === 'ingest' && !aborted.has(r.notification.mail.messageId) ? [r] : [])),
  );
  if (replay.length > 0) await beforeReplay?.(replay.length);
  let messages = 0;
  for (const r of replay) {
    await apply(r.notification, r.raw);
    messages += 1;
  }
  if (segments.length > 0) {
    await syncFs();
    for (const s of segments) {
      // Gone already: another process (an `import` started beside `dev`) recovered it too, which
      // routing's idempotence makes harmless.
      await unlink(s.path).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
  }
  return { segments: segments.length, messages };
}
