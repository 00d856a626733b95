/**
 * The one behaviour every BlobStore adapter must have (S3 and local files alike).
 * Usage: `runBlobStoreContract('FsBlobStore', async () => ({ store, cleanup }))` in a *.test.ts file.
 * Each test gets a fresh, empty store from the factory.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlobInfo, BlobStore } from '../../functions/ports/blob-store.ts';

export interface PresignedResponse {
  status: number;
  body: Buffer;
  headers: Headers;
}

export interface BlobStoreFixture {
  store: BlobStore;
  /** Fetches a presigned URL (a real HTTP GET, or an equivalent check). Without it presign is not tested. */
  fetchPresigned?: (url: string) => Promise<PresignedResponse>;
  /**
   * Moves the clock that judges presigned URLs forward, so expiry is tested without sleeping.
   * Without it the expiry test waits ~2 s of real time.
   */
  advanceClock?: (ms: number) => void;
  /**
   * Set false for an emulator that serves presigned URLs without checking signature or expiry and
   * ignores the response-header overrides (moto); the byte round trip is still tested. Default true.
   */
  presignEnforced?: boolean;
  cleanup: () => Promise<void>;
}

/**
 * "Large": more than an adapter keeps apart from ordinary blobs (the local store keeps buffers up to
 * 64 KiB as SQLite rows by default), so tests that mix sizes exercise both kinds of storage.
 */
const LARGE_BYTES = (1 << 20) + 1;

/** Every byte value, so an adapter that treats blobs as text (or strips CR) is caught. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return Buffer.concat(chunks);
}

async function collect(iterable: AsyncIterable<BlobInfo>): Promise<BlobInfo[]> {
  const out: BlobInfo[] = [];
  for await (const info of iterable) out.push(info);
  return out;
}

async function keysOf(store: BlobStore, prefix: string): Promise<string[]> {
  return (await collect(store.list(prefix))).map((b) => b.key);
}

/** S3 lists keys in UTF-8 byte order, which differs from JS string order past the BMP. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Deterministic pseudo-random bytes (xorshift), so a failure is reproducible. */
function pseudoRandom(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function runBlobStoreContract(name: string, makeStore: () => Promise<BlobStoreFixture>): void {
  /** Runs a test body against a fresh store and always cleans up. */
  async function withStore(fn: (f: BlobStoreFixture) => Promise<void>): Promise<void> {
    const fixture = await makeStore();
    try {
      await fn(fixture);
    } finally {
      await fixture.cleanup();
    }
  }

  describe(`BlobStore contract: ${name}`, () => {
    it('returns exactly the bytes put: every byte value, CRLF, and the empty blob', () =>
      withStore(async ({ store }) => {
        const binary = Buffer.concat([ALL_BYTES, Buffer.from(ALL_BYTES).reverse(), ALL_BYTES]);
        const crlf = Buffer.from('Subject: hi\r\n\r\nline\r\n.\r\n..dot\rlone CR\nlone LF\r\n', 'latin1');
        await store.put('bin/all-bytes', binary);
        await store.put('bin/crlf.eml', crlf);
        await store.put('bin/empty', Buffer.alloc(0));

        assert.deepEqual(await store.get('bin/all-bytes'), binary);
        assert.deepEqual(await store.get('bin/crlf.eml'), crlf);
        const empty = await store.get('bin/empty');
        assert.ok(empty !== null, 'an empty blob exists: get returns an empty buffer, not null');
        assert.equal(empty.length, 0);
        assert.equal((await store.head('bin/empty'))?.size, 0);
        const stream = await store.getStream('bin/all-bytes');
        assert.ok(stream !== null);
        assert.deepEqual(await readAll(stream), binary);
      }));

    it('stores a multi-megabyte Readable body, streamed in uneven chunks', () =>
      withStore(async ({ store }) => {
        const total = 6 * 1024 * 1024 + 123;
        const data = pseudoRandom(total, 42);
        // Uneven chunk sizes, from tiny to larger than a typical buffer, exercise the write batching.
        function* chunks(): Generator<Buffer> {
          let offset = 0;
          let n = 1;
          while (offset < total) {
            const size = Math.min(total - offset, (n * 7919) % 200_000 || 1);
            yield data.subarray(offset, offset + size);
            offset += size;
            n++;
          }
        }
        await store.put('big/stream.bin', Readable.from(chunks()), {
          contentType: 'application/octet-stream',
        });

        assert.equal((await store.head('big/stream.bin'))?.size, total);
        const back = await store.get('big/stream.bin');
        assert.ok(back !== null);
        assert.equal(back.length, total);
        assert.equal(sha256(back), sha256(data));
        const stream = await store.getStream('big/stream.bin');
        assert.ok(stream !== null);
        assert.equal(sha256(await readAll(stream)), sha256(data));
      }));

    it('overwrites: the new value replaces the old one entirely (also when shorter)', () =>
      withStore(async ({ store }) => {
        await store.put('ow/key', Buffer.from('a much longer first value'));
        await store.put('ow/key', Buffer.from('short'));
        assert.deepEqual(await store.get('ow/key'), Buffer.from('short'));
        assert.equal((await store.head('ow/key'))?.size, 5);
      }));

    it('concurrent puts to one key leave one whole value, never a mix', () =>
      withStore(async ({ store }) => {
        const values = Array.from({ length: 8 }, (_, i) => pseudoRandom(64 * 1024, i + 1));
        await Promise.all(values.map((v) => store.put('race/key', v)));
        const back = await store.get('race/key');
        assert.ok(back !== null);
        assert.ok(
          values.some((v) => v.equals(back)),
          'the stored value is one of the values put',
        );
      }));

    it('concurrent puts of many new keys into one new folder all succeed', () =>
      withStore(async ({ store }) => {
        const keys = Array.from(
          { length: 40 },
          (_, i) => `mailboxes/new@example.com/${String(i).padStart(3, '0')}.eml`,
        );
        await Promise.all(keys.map((k) => store.put(k, Buffer.from(k))));
        assert.deepEqual(await keysOf(store, 'mailboxes/new@example.com/'), keys);
        for (const k of keys) assert.deepEqual(await store.get(k), Buffer.from(k));
      }));

    it('head reports size and a plausible lastModified', () =>
      withStore(async ({ store }) => {
        const before = Date.now();
        await store.put('head/k', Buffer.from('12345'));
        const info = await store.head('head/k');
        assert.ok(info !== null);
        assert.equal(info.key, 'head/k');
        assert.equal(info.size, 5);
        assert.ok(Number.isFinite(info.lastModified));
        // Generous window: S3 has second precision and emulators may run on another clock.
        assert.ok(
          Math.abs(info.lastModified - before) < 10 * 60_000,
          `lastModified ${info.lastModified} near ${before}`,
        );
      }));

    it('reads byte ranges (inclusive): first bytes, middle, open-ended to the end, one byte', () =>
      withStore(async ({ store }) => {
        const data = pseudoRandom(1000, 7);
        await store.put('range/k', data);
        const range = async (start: number, end?: number): Promise<Buffer> => {
          const s = await store.getStream('range/k', end === undefined ? { start } : { start, end });
          assert.ok(s !== null);
          return readAll(s);
        };
        assert.deepEqual(await range(0, 9), data.subarray(0, 10));
        assert.deepEqual(await range(100, 199), data.subarray(100, 200));
        assert.deepEqual(await range(990), data.subarray(990));
        assert.deepEqual(await range(0), data);
        assert.deepEqual(await range(999, 999), data.subarray(999));
        // An end past the blob is clamped (HTTP Range semantics).
        assert.deepEqual(await range(995, 5000), data.subarray(995));
      }));

    it('copy is independent of the source: later delete or overwrite of the source leaves it intact', () =>
      withStore(async ({ store }) => {
        const original = Buffer.from('raw message\r\n');
        await store.put('inbound/abc', original);
        await store.copy('inbound/abc', 'mailboxes/alice@example.com/01.eml');
        await store.copy('inbound/abc', 'mailboxes/bob@example.com/01.eml');
        await store.put('inbound/abc', Buffer.from('overwritten'));
        assert.deepEqual(await store.get('mailboxes/alice@example.com/01.eml'), original);
        await store.delete('inbound/abc');
        assert.equal(await store.get('inbound/abc'), null);
        assert.deepEqual(await store.get('mailboxes/alice@example.com/01.eml'), original);
        assert.deepEqual(await store.get('mailboxes/bob@example.com/01.eml'), original);
        assert.equal((await store.head('mailboxes/bob@example.com/01.eml'))?.size, original.length);
      }));

    it('copy is idempotent and overwrites an existing destination', () =>
      withStore(async ({ store }) => {
        await store.put('cp/src', Buffer.from('new'));
        await store.put('cp/dst', Buffer.from('old destination value'));
        await store.copy('cp/src', 'cp/dst');
        await store.copy('cp/src', 'cp/dst');
        assert.deepEqual(await store.get('cp/dst'), Buffer.from('new'));
        await store.copy('cp/src', 'cp/src');
        assert.deepEqual(await store.get('cp/src'), Buffer.from('new'));
        assert.deepEqual(await keysOf(store, 'cp/'), ['cp/dst', 'cp/src']);
      }));

    it('copy of a missing source rejects and creates nothing', () =>
      withStore(async ({ store }) => {
        await assert.rejects(store.copy('cp/missing', 'cp/dst'));
        assert.equal(await store.head('cp/dst'), null);
      }));

    it('lists keys under a prefix in byte order, with sizes, also for a prefix ending mid-name', () =>
      withStore(async ({ store }) => {
        const keys = [
          'list/ba',
          'list/c/d/e',
          'list/b/c',
          'list/a',
          'list/b0',
          'list/b.e',
          'list/b-d',
          'other/x',
        ];
        for (const k of keys) await store.put(k, Buffer.from(`value of ${k}`));

        const listed = await collect(store.list('list/'));
        // '-' < '.' < '/' < '0' < 'a': keys inside "folder" b sort between b.e and b0, as in S3.
        assert.deepEqual(
          listed.map((b) => b.key),
          ['list/a', 'list/b-d', 'list/b.e', 'list/b/c', 'list/b0', 'list/ba', 'list/c/d/e'],
        );
        for (const b of listed) assert.equal(b.size, Buffer.byteLength(`value of ${b.key}`));
        assert.deepEqual(await keysOf(store, 'list/b'), [
          'list/b-d',
          'list/b.e',
          'list/b/c',
          'list/b0',
          'list/ba',
        ]);
        assert.deepEqual(await keysOf(store, 'list/b/'), ['list/b/c']);
        assert.deepEqual(await keysOf(store, 'list/c/d/e'), ['list/c/d/e']);
        assert.deepEqual(await keysOf(store, 'lis'), await keysOf(store, 'list/'));
        assert.deepEqual(await keysOf(store, 'nothing/'), []);
        assert.deepEqual(await keysOf(store, ''), [...keys].sort(byteOrder));
      }));

    it('delete removes one blob and is idempotent', () =>
      withStore(async ({ store }) => {
        await store.put('del/a', Buffer.from('a'));
        await store.put('del/b', Buffer.from('b'));
        await store.delete('del/a');
        assert.equal(await store.get('del/a'), null);
        await store.delete('del/a');
        await store.delete('del/never-existed');
        await store.delete('no-such-folder/x');
        assert.deepEqual(await keysOf(store, 'del/'), ['del/b']);
      }));

    it('deletePrefix removes exactly the keys starting with the prefix (also mid-name), and keys can be written again', () =>
      withStore(async ({ store }) => {
        for (const k of ['dp/a/1', 'dp/a/2', 'dp/ab', 'dp/b/1', 'dp-x', 'keep/1'])
          await store.put(k, Buffer.from(k));
        await store.deletePrefix('dp/a');
        assert.deepEqual(await keysOf(store, ''), ['dp-x', 'dp/b/1', 'keep/1']);
        await store.deletePrefix('dp/');
        assert.deepEqual(await keysOf(store, ''), ['dp-x', 'keep/1']);
        await store.deletePrefix('nothing/here/');
        // The "folder" of deleted keys must be usable again (a local store may have removed the directory).
        await store.put('dp/a/1', Buffer.from('again'));
        await store.copy('keep/1', 'dp/b/2');
        assert.deepEqual(await store.get('dp/a/1'), Buffer.from('again'));
        assert.deepEqual(await store.get('dp/b/2'), Buffer.from('keep/1'));
      }));

    it('get, head and getStream of a missing key return null', () =>
      withStore(async ({ store }) => {
        await store.put('present/x', Buffer.from('x'));
        assert.equal(await store.get('missing'), null);
        assert.equal(await store.head('missing'), null);
        assert.equal(await store.getStream('missing'), null);
        assert.equal(await store.getStream('missing', { start: 0, end: 10 }), null);
        // A prefix of existing keys is not itself a blob.
        assert.equal(await store.get('present'), null);
        assert.equal(await store.head('present'), null);
        assert.equal(await store.getStream('present'), null);
      }));

    it("stores and lists back exactly keys with '@', '+', spaces, punctuation and Unicode", () =>
      withStore(async ({ store }) => {
        const keys = [
          'k/alice+tag@example.com/01HZX.eml',
          'k/with space/and  two',
          'k/ünïcödé/日本語.eml',
          'k/emoji 😀',
          'k/fullwidth ～',
          "k/punct !$&'()*,;=:#?%[]~",
          'k/z',
        ];
        for (const k of keys) await store.put(k, Buffer.from(k, 'utf8'));
        for (const k of keys) {
          assert.deepEqual(await store.get(k), Buffer.from(k, 'utf8'), k);
          assert.equal((await store.head(k))?.key, k);
        }
        assert.deepEqual(await keysOf(store, 'k/'), [...keys].sort(byteOrder));
        assert.deepEqual(await keysOf(store, 'k/ünï'), ['k/ünïcödé/日本語.eml']);
      }));

    it('overwrites between a small buffer and a large streamed body, both ways: one whole value, listed once', () =>
      withStore(async ({ store }) => {
        const small = Buffer.from('a small value\r\n');
        const large = pseudoRandom(LARGE_BYTES, 11);
        const stream = (): Readable => Readable.from([large.subarray(0, 300_000), large.subarray(300_000)]);
        const expect = async (value: Buffer, label: string): Promise<void> => {
          const back = await store.get('x/k');
          assert.ok(back !== null, label);
          assert.equal(sha256(back), sha256(value), label);
          assert.equal((await store.head('x/k'))?.size, value.length, label);
          const listed = await collect(store.list('x/'));
          assert.deepEqual(
            listed.map((b) => [b.key, b.size]),
            [['x/k', value.length]],
            `${label}: listed once, with the new size`,
          );
          const s = await store.getStream('x/k', { start: 3, end: 9 });
          assert.ok(s !== null, label);
          assert.deepEqual(await readAll(s), value.subarray(3, 10), label);
        };
        await store.put('x/k', small);
        await store.put('x/k', stream());
        await expect(large, 'large stream over small buffer');
        await store.put('x/k', small);
        await expect(small, 'small buffer over large stream');
        await store.put('x/k', large);
        await expect(large, 'large buffer over small buffer');
        await store.put('x/k', Readable.from([small]));
        await expect(small, 'small stream over large buffer');
        await store.put('x/k', small);
        await expect(small, 'small buffer over small stream');
        await store.delete('x/k');
        assert.equal(await store.get('x/k'), null);
        assert.equal(await store.head('x/k'), null);
        assert.equal(await store.getStream('x/k'), null);
        assert.deepEqual(await keysOf(store, 'x/'), []);
      }));

    it('copies between small and large blobs, overwriting the destination either way', () =>
      withStore(async ({ store }) => {
        const small = Buffer.from('small source');
        const large = pseudoRandom(LARGE_BYTES, 12);
        await store.put('c/small', small);
        await store.put('c/large', Readable.from([large]));
        await store.put('c/to-small', Readable.from([pseudoRandom(LARGE_BYTES, 13)]));
        await store.put('c/to-large', Buffer.from('an old small value'));
        await store.copy('c/small', 'c/to-small');
        await store.copy('c/large', 'c/to-large');
        await store.copy('c/small', 'c/new-small');
        await store.copy('c/large', 'c/new-large');
        const check = async (key: string, value: Buffer): Promise<void> => {
          const back = await store.get(key);
          assert.ok(back !== null, key);
          assert.equal(sha256(back), sha256(value), key);
        };
        await check('c/to-small', small);
        await check('c/to-large', large);
        await check('c/new-small', small);
        await check('c/new-large', large);
        assert.deepEqual(
          (await collect(store.list('c/'))).map((b) => [b.key, b.size]),
          [
            ['c/large', large.length],
            ['c/new-large', large.length],
            ['c/new-small', small.length],
            ['c/small', small.length],
            ['c/to-large', large.length],
            ['c/to-small', small.length],
          ],
        );
        // Copies stay independent of their sources, whatever the sources become.
        await store.put('c/small', Readable.from([pseudoRandom(LARGE_BYTES, 14)]));
        await store.put('c/large', Buffer.from('now small'));
        await check('c/to-small', small);
        await check('c/to-large', large);
        await store.delete('c/small');
        await store.delete('c/large');
        await check('c/new-small', small);
        await check('c/new-large', large);
        // And back: a small copy over a large destination, a large one over a small destination.
        await store.copy('c/new-small', 'c/to-large');
        await store.copy('c/new-large', 'c/to-small');
        await check('c/to-large', small);
        await check('c/to-small', large);
        await store.deletePrefix('c/');
        assert.deepEqual(await keysOf(store, 'c/'), []);
        assert.equal(await store.get('c/new-small'), null);
        assert.equal(await store.get('c/new-large'), null);
      }));

    it('lists small and large blobs together in key order, each with its size and lastModified', () =>
      withStore(async ({ store }) => {
        const before = Date.now();
        const sizes = new Map<string, number>([
          ['mix/a', LARGE_BYTES],
          ['mix/a0', 3],
          ['mix/b-', 0],
          ['mix/b/c', LARGE_BYTES + 1],
          ['mix/b/d', 5],
          ['mix/b0', LARGE_BYTES + 2],
          ['mix/ü', 7],
          ['mix/😀', LARGE_BYTES + 3],
          ['mix/～', 9],
        ]);
        for (const [key, size] of sizes) {
          const body = pseudoRandom(size, size);
          await store.put(key, size >= LARGE_BYTES ? Readable.from([body]) : body);
        }
        const listed = await collect(store.list('mix/'));
        assert.deepEqual(
          listed.map((b) => b.key),
          [...sizes.keys()].sort(byteOrder),
        );
        for (const b of listed) {
          assert.equal(b.size, sizes.get(b.key), b.key);
          assert.ok(Math.abs(b.lastModified - before) < 10 * 60_000, `${b.key} lastModified`);
        }
        assert.deepEqual(await keysOf(store, 'mix/b'), ['mix/b-', 'mix/b/c', 'mix/b/d', 'mix/b0']);
        await store.deletePrefix('mix/b');
        assert.deepEqual(await keysOf(store, 'mix/'), ['mix/a', 'mix/a0', 'mix/ü', 'mix/～', 'mix/😀']);
      }));

    it('refuses a range that starts at or past the end of the blob (range_not_satisfiable), small or large', () =>
      withStore(async ({ store }) => {
        await store.put('r/small', Buffer.from('0123456789'));
        await store.put('r/large', Readable.from([pseudoRandom(LARGE_BYTES, 15)]));
        const notSatisfiable = (err: unknown): boolean =>
          typeof err === 'object' &&
          err !== null &&
          (err as { code?: unknown }).code === 'range_not_satisfiable';
        await assert.rejects(store.getStream('r/small', { start: 10 }), notSatisfiable);
        await assert.rejects(store.getStream('r/small', { start: 10, end: 20 }), notSatisfiable);
        await assert.rejects(store.getStream('r/large', { start: LARGE_BYTES }), notSatisfiable);
        const invalid = (err: unknown): boolean =>
          typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'invalid_range';
        await assert.rejects(store.getStream('r/small', { start: 5, end: 2 }), invalid);
        await assert.rejects(store.getStream('r/small', { start: -1 }), invalid);
        const last = await store.getStream('r/small', { start: 9, end: 100 });
        assert.ok(last !== null);
        assert.deepEqual(await readAll(last), Buffer.from('9'));
      }));

    it('presigned URL serves the same bytes with the requested headers; tampered or expired URLs are refused', (t) =>
      withStore(async ({ store, fetchPresigned, advanceClock, presignEnforced = true }) => {
        if (fetchPresigned === undefined) {
          t.skip('this fixture has no fetchPresigned');
          return;
        }
        const key = 'mailboxes/alice+x@example.com/01 ü?#%.eml';
        const data = Buffer.concat([ALL_BYTES, Buffer.from('\r\n.\r\n')]);
        await store.put(key, data);

        const url = await store.presign(key, {
          expiresIn: 60,
          contentType: 'message/rfc822',
          contentDisposition: 'attachment; filename="message.eml"',
        });
        const ok = await fetchPresigned(url);
        assert.equal(ok.status, 200);
        assert.deepEqual(ok.body, data);

        const plain = await fetchPresigned(await store.presign(key, { expiresIn: 60 }));
        assert.equal(plain.status, 200);
        assert.deepEqual(plain.body, data);

        if (!presignEnforced) return;
        assert.equal(ok.headers.get('content-type'), 'message/rfc822');
        assert.equal(ok.headers.get('content-disposition'), 'attachment; filename="message.eml"');
        const u = new URL(url);
        for (const name of ['X-Amz-Signature', 'sig']) {
          const value = u.searchParams.get(name);
          if (value === null) continue;
          const forged = new URL(url);
          forged.searchParams.set(name, `${value.slice(0, -1)}${value.endsWith('0') ? '1' : '0'}`);
          assert.equal(
            (await fetchPresigned(forged.toString())).status,
            403,
            'a changed signature is refused',
          );
        }
        await store.put('mailboxes/other/secret.eml', Buffer.from('secret'));
        const otherKey = new URL(url);
        otherKey.pathname = otherKey.pathname.replace(/[^/]+\/[^/]+$/, 'other/secret.eml');
        assert.equal(
          (await fetchPresigned(otherKey.toString())).status,
          403,
          'a URL for one key does not open another',
        );

        const shortLived = await store.presign(key, { expiresIn: 1 });
        // A URL lives at least expiresIn and at most about a second more (rounding to whole seconds).
        if (advanceClock !== undefined) advanceClock(2_100);
        else await sleep(2_100);
        assert.equal((await fetchPresigned(shortLived)).status, 403, 'an expired URL is refused');
      }));
  });
}
