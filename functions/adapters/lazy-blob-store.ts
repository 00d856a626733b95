/**
 * A BlobStore that builds the real one on first use. The API function serves STAT, LIST, the
 * long-poll and flags from the index alone; only reading or deleting a message's bytes needs S3.
 * Loading the S3 client (its module, its schemas, its endpoint rules) only then keeps it out of
 * every cold start that does not need it (docs/adr/0012-lambda-bundles.md). A failed load is not
 * remembered: the next call tries again.
 */
import type { Readable } from 'node:stream';
import type { BlobInfo, BlobStore, PresignOptions } from '../ports/blob-store.ts';
import { loadOnce } from './load-once.ts';

export class LazyBlobStore implements BlobStore {
  /** The real store, loading it on the first call. */
  readonly store: () => Promise<BlobStore>;

  /** `load` is called at most once per success (e.g. `() => import('./s3.ts').then(m => m.create())`). */
  constructor(load: () => Promise<BlobStore>) {
    this.store = loadOnce(load);
  }

  async put(key: string, body: Buffer | Readable, options?: { contentType?: string }): Promise<void> {
    return (await this.store()).put(key, body, options);
  }

  async get(key: string): Promise<Buffer | null> {
    return (await this.store()).get(key);
  }

  async getStream(key: string, range?: { start: number; end?: number }): Promise<Readable | null> {
    return (await this.store()).getStream(key, range);
  }

  async head(key: string): Promise<BlobInfo | null> {
    return (await this.store()).head(key);
  }

  async copy(fromKey: string, toKey: string): Promise<void> {
    return (await this.store()).copy(fromKey, toKey);
  }

  async delete(key: string): Promise<void> {
    return (await this.store()).delete(key);
  }

  async deletePrefix(prefix: string): Promise<void> {
    return (await this.store()).deletePrefix(prefix);
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    yield* (await this.store()).list(prefix);
  }

  async presign(key: string, options: PresignOptions): Promise<string> {
    return (await this.store()).presign(key, options);
  }
}
