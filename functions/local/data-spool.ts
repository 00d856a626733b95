/**
 * Where the SMTP listener keeps a message's DATA between receiving it and routing it: in memory up to
 * `memoryBytes`, and past that in a file of its own under the spool directory, written as it arrives.
 * A large message waiting for its turn to be routed (`LargeMessageGate`) then holds no memory, and is
 * read back in one piece when its turn comes. Nothing in the spool was answered `250`: the files are
 * neither synced nor kept, and those of a process that died are deleted by the next listener.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { type FileHandle, open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageFullError } from '../core/errors.ts';
import { processIsAlive } from './ingest-journal.ts';

export interface DataSpoolOptions {
  /** Directory of the spool files, created if missing; without one, everything stays in memory. */
  readonly dir?: string | undefined;
  /** Bytes kept in memory; a message reaching this goes to a file. */
  readonly memoryBytes: number;
  /** Whether to stop keeping what arrives (the message is over its size limit and will be refused). */
  readonly discard?: () => boolean;
}

/**
 * One message's DATA, chunk by chunk (`push`). It never fails the stream: an error writing the file is
 * kept (`error`) and the rest is drained unstored, as SMTP requires reading to the final dot before
 * answering. Not a Writable the stream is piped to: for the small messages that never reach the
 * file, that machinery cost ~5% of the relay's throughput.
 */
export class DataSpool {
  /** Bytes received (also those not kept after `discard` said so). */
  bytes = 0;
  /** The first error writing the spool file, if any: the message is incomplete. */
  error: Error | undefined;
  #chunks: Buffer[] = [];
  #file: FileHandle | undefined;
  #path: string | undefined;
  /** Set once nothing more is to be kept: over the size limit, or disposed of. */
  #discarded = false;
  /** The file write in flight, if any. */
  #writing: Promise<void> | undefined;

  constructor(private readonly options: DataSpoolOptions) {}

  /**
   * Keeps a chunk. Returns a promise when it goes to the file: the caller pauses its stream until it
   * settles (it never rejects), so that writes do not pile up in memory.
   */
  push(chunk: Buffer): Promise<void> | undefined {
    if (this.#writing !== undefined || this.#file !== undefined) return this.#toFile(chunk);
    // In memory: the path of every small message.
    this.bytes += chunk.length;
    if (this.#discarded || this.error) return undefined;
    if (this.options.discard?.()) {
      this.#discarded = true;
      this.#chunks = [];
      return undefined;
    }
    this.#chunks.push(chunk);
    if (this.options.dir === undefined || this.bytes < this.options.memoryBytes) return undefined;
    // Large: what came so far goes to a new file, and so does the rest.
    return this.#toFile(null);
  }

  /** Once the stream has ended: waits for the last write and closes the file. */
  async finish(): Promise<void> {
    await this.#writing;
    await this.#closeFile();
  }

  /** Queues `chunk` (null: only what is held) for the file, after any write in flight. */
  #toFile(chunk: Buffer | null): Promise<void> {
    const write = async (): Promise<void> => {
      if (chunk !== null) {
        this.bytes += chunk.length;
        if (this.#discarded || this.error) return;
        if (this.options.discard?.()) {
          await this.dispose();
          return;
        }
        this.#chunks.push(chunk);
      }
      try {
        await this.#flush();
      } catch (err) {
        this.error = asError(err);
        await this.dispose();
      }
    };
    const writing = (this.#writing ?? Promise.resolve()).then(write);
    this.#writing = writing;
    void writing.then(() => {
      if (this.#writing === writing) this.#writing = undefined;
    });
    return writing;
  }

  async #closeFile(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    try {
      await file?.close();
    } catch (err) {
      this.error ??= asError(err);
    }
  }

  /**
   * The message, once the stream has finished: its chunks, or the file's bytes in one Buffer (the file
   * is then deleted). Call once.
   */
  async take(): Promise<Buffer[]> {
    if (this.error) throw this.error;
    if (!this.#path) {
      const chunks = this.#chunks;
      this.#chunks = [];
      return chunks;
    }
    try {
      return [await readFile(this.#path)];
    } finally {
      // A file left behind (it could not be deleted) is deleted by the next listener's start.
      await this.#removeFile().catch(() => undefined);
    }
  }

  /** Lets go of whatever is held (a message refused, or whose client left); never rejects. */
  async dispose(): Promise<void> {
    this.#discarded = true;
    this.#chunks = [];
    await this.#removeFile().catch(() => undefined);
  }

  /** Writes the chunks held in memory to the spool file, opening it first if need be. */
  async #flush(): Promise<void> {
    if (!this.#file) {
      const dir = this.options.dir as string;
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // The pid in the name tells a later listener which files belong to a live process.
      const path = join(dir, `${process.pid}-${randomBytes(8).toString('hex')}.part`);
      this.#path = path;
      const file = await open(path, 'wx', 0o600);
      if (this.#discarded) {
        // Disposed of while the file was being opened.
        await file.close();
        await unlink(path);
        return;
      }
      this.#file = file;
    }
    const chunks = this.#chunks;
    this.#chunks = [];
    const bytes = chunks.reduce((n, c) => n + c.length, 0);
    // A regular file takes all of a writev, or a part of it when the disk fills up (no error then).
    const { bytesWritten } = await (this.#file as FileHandle).writev(chunks);
    if (bytesWritten < bytes)
      throw new StorageFullError(
        `no space left to spool the message in ${this.#path} (wrote ${bytesWritten} of ${bytes} bytes)`,
      );
  }

  async #removeFile(): Promise<void> {
    const path = this.#path;
    await this.#closeFile();
    this.#path = undefined;
    if (path) await unlink(path);
  }
}

/** Deletes the spool files of processes that are gone (none of them was answered `250`). */
export async function clearStaleSpool(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let removed = 0;
  for (const name of names) {
    const pid = /^(\d+)-[0-9a-f]+\.part$/.exec(name)?.[1];
    // This process's own files belong to a listener still running in it.
    if (pid === undefined || Number(pid) === process.pid || processIsAlive(Number(pid))) continue;
    await unlink(join(dir, name)).catch(() => undefined);
    removed += 1;
  }
  return removed;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
