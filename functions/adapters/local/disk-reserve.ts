/**
 * Room kept for deleting mail on a full disk (docs/adr/0011-ingest-journal.md, 2026-11-29).
 *
 * A delete needs room before it frees any: SQLite appends it to the WAL of the index (and of the
 * small-blob database) before the message's files can go, so on a full disk every delete failed
 * with 507, and the only way out was to delete files outside the relay. `mail-relay dev` keeps a file
 * of `DISK_RESERVE_BYTES` in its data dir instead. A delete that meets a full disk releases it
 * (unlinks it) and tries again, in the same synchronous turn, so the delete commits and the
 * message's bytes are given back. New mail is accepted only while the reserve is in place: once
 * released, it is made again before the next message is taken, which needs the room for it, so
 * mail never eats the room that deletes need (it gets `452` until there is room for the reserve).
 *
 * The file is written with random bytes, not zeros: a file system that compresses (btrfs, ZFS) would
 * keep zeros in no room at all. A partial file (ENOSPC part way, a kill while writing) is never
 * taken for the reserve: it must have its full size in allocated blocks.
 */
import { randomFillSync } from 'node:crypto';
import { closeSync, fstatSync, openSync, statfsSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage, isStorageFull } from '../../core/errors.ts';

/** The reserve's file name in the data dir. */
export const DISK_RESERVE_FILE = 'disk-reserve';

/**
 * The reserve's size. Measured (the ADR's note): deleting one message took 8–12 KiB of WAL in the
 * two databases, and the API's largest delete (1,000 messages, `DELETE …/messages`) about 1.3 MiB.
 * 8 MiB leaves room for several of those before the released reserve is used up, and is nothing
 * next to a disk that holds mail.
 */
export const DISK_RESERVE_BYTES = 8 * 1024 * 1024;

/** Written in chunks of this size (one random chunk, written again and again). */
const CHUNK_BYTES = 256 * 1024;

/** Stands for "written, but its blocks are not counted": treated as a size limit is. */
const EFBIG_UNALLOCATED = Object.assign(new Error('the reserve takes no blocks'), { code: 'EFBIG' });

/** What a store asks of the reserve when a delete meets a full disk. */
export interface ReleasableReserve {
  /** Whether the reserve is in place: while it is not, the disk was full lately. */
  readonly held: boolean;
  /** Gives the reserve's room back to the file system; false when there was none to give. */
  release(): boolean;
}

/**
 * Runs a synchronous write (one SQLite transaction, rolled back whole when it fails); when it fails
 * for want of room and `reserve` gives some back, runs it once more. Synchronous from the release to
 * the retry, so no other write of this process can take the room first.
 */
export function retryWithReserve<T>(reserve: ReleasableReserve | undefined, write: () => T): T {
  try {
    return write();
  } catch (err) {
    if (!isStorageFull(err) || reserve?.release() !== true) throw err;
    return write();
  }
}

export class DiskReserve implements ReleasableReserve {
  readonly path: string;
  #held = false;
  /**
   * No reserve can be kept here: a file this large cannot be written (a file size limit, `ulimit -f`:
   * EFBIG), or the file system does not count its blocks as taken. Mail is then not refused for want
   * of one, and deletes on a full disk get 507, as without a reserve.
   */
  #unavailable = false;

  constructor(
    dataDir: string,
    readonly bytes: number = DISK_RESERVE_BYTES,
  ) {
    this.path = join(dataDir, DISK_RESERVE_FILE);
  }

  /** Whether the reserve is in place (as far as this process knows). */
  get held(): boolean {
    return this.#held || this.#unavailable;
  }

  /**
   * Makes sure the reserve is in place: true when it is (kept from before, or made now), false when
   * there is no room for it. Cheap while it is held (no system call), which is the usual case.
   */
  ensure(): boolean {
    if (this.#held || this.#unavailable) return true;
    const found = statSync(this.path, { throwIfNoEntry: false });
    if (found !== undefined && found.size === this.bytes && found.blocks * 512 >= this.bytes) {
      this.#held = true;
      return true;
    }
    // Part of one (a kill while it was written) counts as room; then it must fit whole.
    const partial = found?.size ?? 0;
    const { bavail, bsize } = statfsSync(join(this.path, '..'));
    if (bavail * bsize + partial < this.bytes) return false;
    if (found !== undefined) this.#unlink();
    let fd: number;
    try {
      fd = openSync(this.path, 'w', 0o600);
    } catch (err) {
      if (isStorageFull(err)) return false;
      throw err;
    }
    try {
      const chunk = randomFillSync(Buffer.allocUnsafe(CHUNK_BYTES));
      for (let written = 0; written < this.bytes; ) {
        written += writeSync(fd, chunk, 0, Math.min(chunk.length, this.bytes - written));
      }
      // A file system that does not allocate what is written (or does not say so) would give nothing
      // back when it is released: no reserve there, as with a size limit.
      if (fstatSync(fd).blocks * 512 < this.bytes) return this.#discard(fd, EFBIG_UNALLOCATED);
    } catch (err) {
      return this.#discard(fd, err);
    }
    closeSync(fd);
    this.#held = true;
    return true;
  }

  /**
   * Removes a reserve that could not be made whole: false for want of room; true (and none from now
   * on) where no reserve can be kept; thrown for anything else.
   */
  #discard(fd: number, err: unknown): boolean {
    closeSync(fd);
    this.#unlink();
    if (err === undefined || isStorageFull(err)) return false;
    if ((err as NodeJS.ErrnoException).code === 'EFBIG') {
      this.#unavailable = true;
      return true;
    }
    throw new Error(`cannot make the disk reserve ${this.path}: ${errorMessage(err)}`, { cause: err });
  }

  release(): boolean {
    if (!this.#held) return false;
    this.#held = false;
    return this.#unlink();
  }

  #unlink(): boolean {
    try {
      unlinkSync(this.path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }
}
