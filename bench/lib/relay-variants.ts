/**
 * Prototypes of proposed changes to the ingest path, built only from the ports so they run
 * against the real adapters without editing them. They exist to put a number on a proposal
 * (docs/performance.md) before anyone changes functions/; none is meant to ship as is.
 *
 * - `get-no-flush`: the router's idempotency check reads through a second, read-only SQLite
 *   connection, so it no longer forces the pending group commit (SqliteMailboxIndex.get flushes).
 * - `parallel-derived`: the blobs derived from the raw message (notification, mailbox copy,
 *   summary, parts) are written concurrently; the index insert, the commit point, waits for all
 *   of that message's writes first, so the crash guarantees are unchanged.
 * - `link-copy`: the mailbox copy of the raw message is a hard link to `inbound/<id>` (the
 *   BlobStore's `copy`), not a second write + fsync of the same bytes.
 * - `nosync-derived`: derived blobs are written without fsync (only inbound/ and the index are
 *   synced): the ceiling if derived data were rebuilt from inbound/ after a crash instead.
 * - `group-log`: a write-ahead log with group commit. Each raw message is appended to one log
 *   file, and one fdatasync makes every message appended meanwhile durable (all sessions share
 *   it); `inbound/<id>` and the derived blobs are then written without fsync, and SQLite runs
 *   with synchronous=NORMAL. Crash safety would come from replaying the log tail through the
 *   (idempotent) router at start-up — not built here; this measures what the design can reach.
 *   Implies get-no-flush and parallel-derived.
 */
import { type FileHandle, mkdir, open, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import type { MailboxIndex, MessageEntry } from '../../functions/ports/mailbox-index.ts';

export type RelayVariant = 'get-no-flush' | 'parallel-derived' | 'link-copy' | 'nosync-derived' | 'group-log';
const ALL: readonly RelayVariant[] = [
  'get-no-flush',
  'parallel-derived',
  'link-copy',
  'nosync-derived',
  'group-log',
];

/**
 * Appends records to one file; every record appended while a sync runs goes out with the next
 * writev + fdatasync, so N concurrent sessions pay one sync, not N.
 */
class GroupLog {
  private fh: Promise<FileHandle>;
  private queue: { buf: Buffer; done: () => void; fail: (err: unknown) => void }[] = [];
  private running = false;
  syncs = 0;
  records = 0;

  constructor(path: string) {
    this.fh = mkdir(dirname(path), { recursive: true }).then(() => open(path, 'a'));
  }

  append(buf: Buffer): Promise<void> {
    return new Promise((done, fail) => {
      this.queue.push({ buf, done, fail });
      if (!this.running) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.running = true;
    const fh = await this.fh;
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      try {
        const header = (b: Buffer) => Buffer.from(`${b.length}\n`);
        await fh.writev(batch.flatMap((r) => [header(r.buf), r.buf]));
        await fh.datasync();
        this.syncs += 1;
        this.records += batch.length;
        for (const r of batch) r.done();
      } catch (err) {
        for (const r of batch) r.fail(err);
      }
    }
    this.running = false;
  }
}

export function parseVariants(text: string | undefined): RelayVariant[] {
  if (text === undefined || text === '') return [];
  const out: RelayVariant[] = [];
  for (const part of text.split(',')) {
    const v = ALL.find((a) => a === part.trim());
    if (v === undefined) throw new Error(`unknown relay variant ${part}; known: ${ALL.join(', ')}`);
    out.push(v);
  }
  return out;
}

/** Overrides some methods of `target`, forwarding every other one (the ports grow; this keeps up). */
function override<T extends object>(target: T, methods: Partial<T>): T {
  return new Proxy(target, {
    get(t, prop, receiver) {
      if (Object.hasOwn(methods, prop)) return (methods as Record<PropertyKey, unknown>)[prop];
      const value: unknown = Reflect.get(t, prop, receiver);
      return typeof value === 'function' ? value.bind(t) : value;
    },
  });
}

interface MessageRowKey {
  readonly found: number;
}

export function wrapRelay(
  blobs: BlobStore,
  index: MailboxIndex,
  options: { variants: readonly RelayVariant[]; blobRoot: string; indexPath: string },
): { blobs: BlobStore; index: MailboxIndex } {
  const groupLog = options.variants.includes('group-log');
  const has = (v: RelayVariant) =>
    options.variants.includes(v) ||
    (groupLog && (v === 'get-no-flush' || v === 'parallel-derived' || v === 'nosync-derived'));
  const log = groupLog ? new GroupLog(join(options.blobRoot, '..', 'bench-wal.log')) : null;
  if (groupLog) {
    // The SQLite adapter keeps its connection private; the prototype reaches it to relax the commit.
    const db = (index as unknown as { db?: { pragma(source: string): unknown } }).db;
    db?.pragma('synchronous = NORMAL');
  }
  const pending = new Map<string, Promise<void>[]>();
  const inboundKeyOf = new WeakMap<Buffer, string>();
  // The second segment after mailboxes/<mailbox>/ starts with the id; notifications/ carry the SES id.
  const groupOf = (key: string): string | null => {
    const m = /^mailboxes\/[^/]+\/([0-9A-Z]{26})/.exec(key) ?? /^notifications\/([^/.]+)\.json$/.exec(key);
    return m?.[1] ?? null;
  };
  const knownDirs = new Set<string>();
  const plainPut = async (key: string, body: Buffer): Promise<void> => {
    const path = join(options.blobRoot, key);
    if (!knownDirs.has(dirname(path))) {
      await mkdir(dirname(path), { recursive: true });
      knownDirs.add(dirname(path));
    }
    const tmp = `${dirname(path)}/.~bench-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await writeFile(tmp, body);
    await rename(tmp, path);
  };

  const put: BlobStore['put'] = (key, body, putOptions) => {
    if (key.startsWith('inbound/')) {
      if (Buffer.isBuffer(body)) inboundKeyOf.set(body, key);
      if (log !== null && Buffer.isBuffer(body)) return log.append(body).then(() => plainPut(key, body));
      return blobs.put(key, body, putOptions);
    }
    let write: () => Promise<void> = () => blobs.put(key, body, putOptions);
    const inboundKey = Buffer.isBuffer(body) ? inboundKeyOf.get(body) : undefined;
    if (has('link-copy') && inboundKey !== undefined && key.endsWith('.eml')) {
      write = () => blobs.copy(inboundKey, key);
    } else if (has('nosync-derived') && Buffer.isBuffer(body)) {
      write = () => plainPut(key, body);
    }
    const group = groupOf(key);
    if (!has('parallel-derived') || group === null) return write();
    const p = write();
    // Handled at the barrier; a rejection must not go unobserved meanwhile.
    p.catch(() => {});
    const list = pending.get(group) ?? [];
    list.push(p);
    pending.set(group, list);
    return Promise.resolve();
  };

  const barrier = async (entry: MessageEntry): Promise<void> => {
    for (const group of [entry.id, entry.sesMessageId]) {
      const list = pending.get(group);
      if (list === undefined) continue;
      pending.delete(group);
      await Promise.all(list);
    }
  };

  let reader: Database.Database | null = null;
  const get: MailboxIndex['get'] = async (mailbox, id) => {
    reader ??= new Database(options.indexPath, { readonly: true, fileMustExist: true });
    const row = reader
      .prepare('SELECT 1 AS found FROM messages WHERE mailbox = ? AND id = ?')
      .get(mailbox, id) as MessageRowKey | undefined;
    // The router only asks whether the entry exists; a full entry is read through the real index.
    return row === undefined ? null : index.get(mailbox, id);
  };

  const wrappedIndex = override(index, {
    ...(has('get-no-flush') ? { get } : {}),
    ...(has('parallel-derived')
      ? {
          deliver: async (entry: MessageEntry) => {
            await barrier(entry);
            return index.deliver(entry);
          },
        }
      : {}),
    close: async () => {
      reader?.close();
      await index.close();
    },
  });
  return { blobs: override(blobs, { put }), index: wrappedIndex };
}
