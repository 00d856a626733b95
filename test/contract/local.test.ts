/**
 * The local adapters against the shared contracts, plus what only the file store can get wrong:
 * keys escaping the data dir, temp files left behind, half-written blobs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import {
  DEFAULT_SMALL_BLOB_MAX_BYTES,
  FsBlobStore,
  type FsBlobStoreOptions,
  verifyPresignedBlobRequest,
} from '../../functions/adapters/local/fs-blob-store.ts';
import { listSql, SqliteMailboxIndex } from '../../functions/adapters/local/sqlite-mailbox-index.ts';
import { NotFoundError, ValidationError } from '../../functions/core/errors.ts';
import type { BlobInfo } from '../../functions/ports/blob-store.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import type { PresignedResponse } from './blob-store.contract.ts';
import { runBlobStoreContract } from './blob-store.contract.ts';
import { makeEntry, runMailboxIndexContract } from './mailbox-index.contract.ts';

const SECRET = 'test-secret-0123456789abcdef';
const BASE_URL = 'http://127.0.0.1:8025';

/**
 * What the local HTTP API does for `GET /v1/blobs/*` (it does not exist yet): decode the key from
 * the path, verify the query, serve the bytes with the signed headers.
 */
async function servePresigned(store: FsBlobStore, url: string, nowMs: number): Promise<PresignedResponse> {
  const u = new URL(url);
  const prefix = '/v1/blobs/';
  const refuse = (status: number, why: string): PresignedResponse => ({
    status,
    body: Buffer.from(why),
    headers: new Headers({ 'content-type': 'text/plain' }),
  });
  if (!u.pathname.startsWith(prefix)) return refuse(404, 'not found');
  let key: string;
  try {
    key = u.pathname.slice(prefix.length).split('/').map(decodeURIComponent).join('/');
  } catch {
    return refuse(400, 'bad path');
  }
  const verdict = verifyPresignedBlobRequest(SECRET, key, u.searchParams, nowMs);
  if (!verdict.ok) return refuse(403, verdict.reason);
  const body = await store.get(key);
  if (body === null) return refuse(404, 'not found');
  const headers = new Headers({ 'content-type': verdict.contentType ?? 'application/octet-stream' });
  if (verdict.contentDisposition !== undefined)
    headers.set('content-disposition', verdict.contentDisposition);
  return { status: 200, body, headers };
}

async function keysOf(store: FsBlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const info of store.list(prefix)) out.push(info.key);
  return out;
}

async function collectInfos(store: FsBlobStore, prefix: string): Promise<BlobInfo[]> {
  const out: BlobInfo[] = [];
  for await (const info of store.list(prefix)) out.push(info);
  return out;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function tempDir(name: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `mail-relay-${name}-`));
}

/** Every file under a directory, as `/`-separated paths relative to it, sorted ([] when there is no directory). */
async function filesUnder(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  if (rel === '' && !existsSync(root)) return out;
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const path = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...(await filesUnder(root, path)));
    else out.push(path);
  }
  return out.sort();
}

/** The store's two backings: every blob a file (the store before ADR 13), and small blobs as SQLite rows. */
const MODES = [
  { name: 'files only', options: { smallBlobMaxBytes: 0 } },
  { name: 'small blobs in SQLite', options: {} },
] as const satisfies readonly { name: string; options: Partial<FsBlobStoreOptions> }[];

for (const [name, options] of [
  ...MODES.map((m) => [m.name, m.options] as const),
  // What the relay's ingest path runs: rows at synchronous=NORMAL, files unsynced.
  ['small blobs in SQLite, deferred durability', { durability: 'deferred' }] as const,
]) {
  runBlobStoreContract(`FsBlobStore (${name})`, async () => {
    const dir = await tempDir('blobs');
    const store = new FsBlobStore({
      ...options,
      root: join(dir, 'blobs'),
      presign: { baseUrl: BASE_URL, secret: SECRET },
    });
    let clockOffsetMs = 0;
    return {
      store,
      fetchPresigned: (url) => servePresigned(store, url, Date.now() + clockOffsetMs),
      advanceClock: (ms) => {
        clockOffsetMs += ms;
      },
      cleanup: async () => {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  });
}

runMailboxIndexContract('SqliteMailboxIndex (file)', async (options) => {
  const dir = await tempDir('index');
  const path = join(dir, 'index.sqlite');
  const opened = [new SqliteMailboxIndex(path, options)];
  const [index] = opened;
  assert.ok(index);
  return {
    index,
    reopen: async () => {
      const again = new SqliteMailboxIndex(path, options);
      opened.push(again);
      return again;
    },
    cleanup: async () => {
      for (const i of opened) await i.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

// `:memory:` storage ends with its handle: the reopen tests run on the file fixture above.
runMailboxIndexContract(
  'SqliteMailboxIndex (:memory:)',
  async (options) => {
    const index = new SqliteMailboxIndex(':memory:', options);
    return { index, cleanup: () => index.close() };
  },
  { reopens: false },
);

/** A body the store always keeps as a file, whatever its small-blob threshold: a stream. */
const fileBody = (bytes: Buffer | string): Readable => Readable.from([Buffer.from(bytes)]);

for (const mode of MODES) {
  // With rows, small buffers are not files: what is expected on disk depends on the mode.
  const rows = mode.name !== 'files only';
  describe(`FsBlobStore: local specifics (${mode.name})`, () => {
    let dir: string;
    let root: string;
    let store: FsBlobStore;
    before(async () => {
      dir = await tempDir('fs-specific');
      root = join(dir, 'data');
      store = new FsBlobStore({
        ...mode.options,
        root,
        presign: { baseUrl: `${BASE_URL}/`, secret: SECRET },
      });
      await mkdir(join(dir, 'outside'));
      await writeFile(join(dir, 'outside', 'secret'), 'outside the data dir');
    });
    after(async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    });

    const isInvalidKey = (err: unknown): boolean =>
      err instanceof ValidationError && err.code === 'invalid_key';

    it('refuses keys that could leave the data dir or are ambiguous, for every operation', async () => {
      await store.put('ok/key', Buffer.from('x'));
      const bad = [
        '',
        '../outside/secret',
        'ok/../../outside/secret',
        '/etc/passwd',
        'ok//key',
        'ok/',
        'ok/./key',
        '.',
        '..',
        'ok\\..\\..\\outside',
        'nul\0byte',
        'ok/.~mr-tmp.x',
        'x'.repeat(1025),
        'lone \uD800 surrogate',
        'lone \uDC00 low surrogate',
      ];
      for (const key of bad) {
        const label = JSON.stringify(key);
        await assert.rejects(store.put(key, Buffer.from('evil')), isInvalidKey, `put ${label}`);
        await assert.rejects(
          store.put(key, Readable.from([Buffer.from('evil')])),
          isInvalidKey,
          `put stream ${label}`,
        );
        await assert.rejects(store.get(key), isInvalidKey, `get ${label}`);
        await assert.rejects(store.head(key), isInvalidKey, `head ${label}`);
        await assert.rejects(store.getStream(key), isInvalidKey, `getStream ${label}`);
        await assert.rejects(store.copy(key, 'ok/copy'), isInvalidKey, `copy from ${label}`);
        await assert.rejects(store.copy('ok/key', key), isInvalidKey, `copy to ${label}`);
        await assert.rejects(store.delete(key), isInvalidKey, `delete ${label}`);
        await assert.rejects(store.presign(key, { expiresIn: 60 }), isInvalidKey, `presign ${label}`);
      }
      for (const prefix of ['../', '../outside/', '/etc', 'ok/../', 'ok//', 'a\\b', 'a\0']) {
        const label = JSON.stringify(prefix);
        await assert.rejects(
          async () => {
            for await (const _ of store.list(prefix)) assert.fail('listed something');
          },
          isInvalidKey,
          `list ${label}`,
        );
        await assert.rejects(store.deletePrefix(prefix), isInvalidKey, `deletePrefix ${label}`);
      }
      assert.deepEqual(
        await filesUnder(join(dir, 'outside')),
        ['secret'],
        'nothing outside the root was touched',
      );
      assert.deepEqual(await filesUnder(root), rows ? [] : ['ok/key']);
      assert.deepEqual(await keysOf(store, ''), ['ok/key']);
    });

    it('leaves only the blobs on disk: no temp files after puts, overwrites, copies and deletes', async () => {
      await store.deletePrefix('');
      await store.put('t/a', Buffer.from('a'));
      await store.put('t/a', Buffer.from('a2'));
      await store.put('t/s', Readable.from([Buffer.alloc(3 << 20, 1), Buffer.alloc(10, 2)]));
      await store.copy('t/a', 't/c');
      await store.copy('t/a', 't/c');
      await store.copy('t/s', 't/c');
      await store.copy('t/a', 't/a');
      await store.put('t/gone', Buffer.from('x'));
      await store.delete('t/gone');
      await store.put('t/f', fileBody('f'));
      await store.put('t/f', Buffer.from('f2'));
      // t/c ends as a link to the file t/s; with rows, t/a and t/f are rows, and t/f's file is gone.
      assert.deepEqual(await filesUnder(root), rows ? ['t/c', 't/s'] : ['t/a', 't/c', 't/f', 't/s']);
      assert.deepEqual(await keysOf(store, 't/'), ['t/a', 't/c', 't/f', 't/s']);
    });

    it('a put whose stream fails midway leaves the old value intact and no temp file', async () => {
      await store.deletePrefix('');
      await store.put('crash/k', Buffer.from('old value'));
      const failing = (): Readable =>
        Readable.from(
          (async function* () {
            // More than one write batch, so partial data really reached the temp file.
            for (let i = 0; i < 3; i++) yield Buffer.alloc(512 * 1024, i);
            throw new Error('connection reset mid-DATA');
          })(),
        );
      await assert.rejects(store.put('crash/k', failing()), /connection reset/);
      await assert.rejects(store.put('crash/new', failing()), /connection reset/);
      assert.deepEqual(await store.get('crash/k'), Buffer.from('old value'));
      assert.equal(await store.head('crash/new'), null);
      assert.deepEqual(await filesUnder(root), rows ? [] : ['crash/k']);
      assert.deepEqual(await keysOf(store, ''), ['crash/k']);
    });

    it('copy of a file is a hard link: no second copy of the bytes on disk', async () => {
      await store.put('link/src', fileBody(Buffer.alloc(100_000, 7)));
      await store.copy('link/src', 'link/dst');
      const [a, b] = await Promise.all([stat(join(root, 'link/src')), stat(join(root, 'link/dst'))]);
      assert.equal(a.ino, b.ino);
      assert.equal(b.nlink, 2);
    });

    it('recovers when a directory it created is removed behind its back', async () => {
      await store.put('gone/deep/a', fileBody('a'));
      await rm(join(root, 'gone'), { recursive: true });
      await store.put('gone/deep/b', fileBody('b'));
      await rm(join(root, 'gone'), { recursive: true });
      await store.put('src/x', fileBody('x'));
      await store.copy('src/x', 'gone/deep/c');
      assert.deepEqual(await store.get('gone/deep/c'), Buffer.from('x'));
      assert.equal(await store.get('gone/deep/b'), null);
    });

    it('reports a key that is both a blob and a folder as key_conflict (a local-only limit)', async () => {
      const isConflict = (err: unknown): boolean =>
        err instanceof ValidationError && err.code === 'key_conflict';
      await store.put('conflict/file', Buffer.from('f'));
      await assert.rejects(store.put('conflict/file/child', Buffer.from('c')), isConflict);
      await store.put('conflict/dir/child', Buffer.from('c'));
      await assert.rejects(store.put('conflict/dir', Buffer.from('d')), isConflict);
      await assert.rejects(store.copy('conflict/file', 'conflict/dir'), isConflict);
      assert.deepEqual(await store.get('conflict/dir/child'), Buffer.from('c'));
      // The same across backings (with rows): a file below a row, a row below a file, either above the other.
      await assert.rejects(store.put('conflict/file/child', fileBody('c')), isConflict);
      await assert.rejects(store.put('conflict/dir', fileBody('d')), isConflict);
      await store.put('conflict/bigfile', fileBody('f'));
      await store.put('conflict/bigdir/child', fileBody('c'));
      await assert.rejects(store.put('conflict/bigfile/child', Buffer.from('c')), isConflict);
      await assert.rejects(store.put('conflict/bigdir', Buffer.from('d')), isConflict);
      await assert.rejects(store.copy('conflict/file', 'conflict/bigdir'), isConflict);
      await assert.rejects(store.copy('conflict/bigfile', 'conflict/dir'), isConflict);
      await assert.rejects(store.copy('conflict/file', 'conflict/bigfile/x'), isConflict);
      await assert.rejects(store.copy('conflict/bigfile', 'conflict/file/x'), isConflict);
      assert.deepEqual(await keysOf(store, 'conflict/'), [
        'conflict/bigdir/child',
        'conflict/bigfile',
        'conflict/dir/child',
        'conflict/file',
      ]);
    });

    it('refuses a range that starts beyond the end, like S3 (416)', async () => {
      await store.put('range/k', Buffer.from('0123456789'));
      await store.put('range/f', fileBody('0123456789'));
      for (const key of ['range/k', 'range/f']) {
        await assert.rejects(
          store.getStream(key, { start: 10 }),
          (err: unknown) => err instanceof ValidationError && err.code === 'range_not_satisfiable',
        );
        await assert.rejects(store.getStream(key, { start: 5, end: 2 }), ValidationError);
      }
      await store.put('range/empty', Buffer.alloc(0));
      await assert.rejects(
        store.getStream('range/empty', { start: 0 }),
        (err: unknown) => err instanceof ValidationError && err.code === 'range_not_satisfiable',
      );
      const empty = await store.getStream('range/empty');
      assert.ok(empty !== null);
      assert.equal((await readAll(empty)).length, 0);
    });

    it('presign: a clear error when not configured; refuses header injection and bad lifetimes', async () => {
      const bare = new FsBlobStore({ root });
      await assert.rejects(
        bare.presign('range/k', { expiresIn: 60 }),
        /without `presign: \{ baseUrl, secret \}`/,
      );
      await assert.rejects(
        store.presign('range/k', { expiresIn: 60, contentType: 'text/html\r\nSet-Cookie: x=1' }),
        ValidationError,
      );
      await assert.rejects(store.presign('range/k', { expiresIn: 0 }), ValidationError);
      await assert.rejects(store.presign('range/k', { expiresIn: 8 * 24 * 3600 }), ValidationError);
      const url = await store.presign('a b/ü@x', { expiresIn: 60 });
      assert.match(
        url,
        /^http:\/\/127\.0\.0\.1:8025\/v1\/blobs\/a%20b\/%C3%BC%40x\?expires=\d+&sig=[0-9a-f]{64}$/,
      );
    });

    it('verifyPresignedBlobRequest: ok, missing, bad_signature for any changed field, expired', async () => {
      const key = 'mailboxes/a@example.com/01.eml';
      const url = new URL(
        await store.presign(key, {
          expiresIn: 60,
          contentType: 'message/rfc822',
          contentDisposition: 'inline',
        }),
      );
      const q = url.searchParams;
      const now = Date.now();
      assert.deepEqual(verifyPresignedBlobRequest(SECRET, key, q, now), {
        ok: true,
        contentType: 'message/rfc822',
        contentDisposition: 'inline',
      });
      assert.deepEqual(verifyPresignedBlobRequest(SECRET, key, Object.fromEntries(q), now), {
        ok: true,
        contentType: 'message/rfc822',
        contentDisposition: 'inline',
      });
      const changed = (name: string, value: string | null): URLSearchParams => {
        const copy = new URLSearchParams(q);
        if (value === null) copy.delete(name);
        else copy.set(name, value);
        return copy;
      };
      const reason = (
        params: URLSearchParams,
        k = key,
        secret: string = SECRET,
        at = now,
      ): string | undefined => {
        const v = verifyPresignedBlobRequest(secret, k, params, at);
        return v.ok ? undefined : v.reason;
      };
      assert.equal(reason(changed('sig', null)), 'missing');
      assert.equal(reason(changed('expires', null)), 'missing');
      assert.equal(reason(q, key, 'another-secret-0123456789'), 'bad_signature');
      assert.equal(reason(q, 'mailboxes/b@example.com/01.eml'), 'bad_signature');
      assert.equal(reason(changed('ct', 'text/html')), 'bad_signature');
      assert.equal(reason(changed('ct', null)), 'bad_signature');
      assert.equal(reason(changed('cd', 'attachment')), 'bad_signature');
      assert.equal(reason(changed('expires', String(Number(q.get('expires')) + 3600))), 'bad_signature');
      assert.equal(reason(changed('sig', 'zz')), 'bad_signature');
      assert.equal(reason(changed('sig', '0'.repeat(64))), 'bad_signature');
      assert.equal(reason(q, key, SECRET, now + 62_000), 'expired');
      assert.equal(reason(q, key, SECRET, now + 59_000), undefined, 'still valid before expiresIn');
    });
  });
}

describe('FsBlobStore: small blobs as SQLite rows', () => {
  let dir: string;
  let root: string;
  let dbPath: string;
  let store: FsBlobStore;
  /** A separate connection to the store's database, to see where a key lives. */
  let raw: Database.Database;
  const rowKeys = (): string[] => raw.prepare<[], string>('SELECT key FROM blobs ORDER BY key').pluck().all();
  before(async () => {
    dir = await tempDir('rows');
    root = join(dir, 'blobs');
    dbPath = join(dir, 'blobs.sqlite');
    store = new FsBlobStore({ root });
    await store.put('init', Buffer.from('creates the database'));
    raw = new Database(dbPath, { readonly: true });
  });
  after(async () => {
    raw.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => store.deletePrefix(''));

  it('keeps buffers up to the threshold as rows in <root>.sqlite; larger ones and streams are files', async () => {
    await store.put('mailboxes/a@example.test/01.eml', Buffer.alloc(5 * 1024, 1));
    await store.put('mailboxes/a@example.test/01/summary.json', Buffer.from('{}'));
    await store.put('mailboxes/a@example.test/02.eml', Buffer.alloc(DEFAULT_SMALL_BLOB_MAX_BYTES + 1, 2));
    await store.put('mailboxes/a@example.test/04.eml', Buffer.alloc(DEFAULT_SMALL_BLOB_MAX_BYTES, 4));
    await store.put('mailboxes/a@example.test/03.eml', fileBody('streamed'));
    await store.put('empty', Buffer.alloc(0));
    assert.deepEqual(rowKeys(), [
      'empty',
      'mailboxes/a@example.test/01.eml',
      'mailboxes/a@example.test/01/summary.json',
      'mailboxes/a@example.test/04.eml',
    ]);
    assert.deepEqual(await filesUnder(root), [
      'mailboxes/a@example.test/02.eml',
      'mailboxes/a@example.test/03.eml',
    ]);
    assert.deepEqual(await store.get('empty'), Buffer.alloc(0));
    assert.deepEqual(await keysOf(store, ''), [
      'empty',
      'mailboxes/a@example.test/01.eml',
      'mailboxes/a@example.test/01/summary.json',
      'mailboxes/a@example.test/02.eml',
      'mailboxes/a@example.test/03.eml',
      'mailboxes/a@example.test/04.eml',
    ]);

    const small = new FsBlobStore({ root, smallBlobMaxBytes: 10 });
    try {
      await small.put('t/ten', Buffer.alloc(10));
      await small.put('t/eleven', Buffer.alloc(11));
      assert.ok(rowKeys().includes('t/ten'));
      assert.ok(!rowKeys().includes('t/eleven'));
      assert.ok((await filesUnder(root)).includes('t/eleven'));
    } finally {
      await small.close();
    }
  });

  it('a write into one backing removes the older value from the other', async () => {
    const where = async (key: string): Promise<string> =>
      `${rowKeys().includes(key) ? 'row' : ''}${(await filesUnder(root)).includes(key) ? 'file' : ''}`;
    await store.put('k', Buffer.from('row 1'));
    assert.equal(await where('k'), 'row');
    await store.put('k', fileBody('file 1'));
    assert.equal(await where('k'), 'file');
    assert.deepEqual(await store.get('k'), Buffer.from('file 1'));
    await store.put('k', Buffer.from('row 2'));
    assert.equal(await where('k'), 'row');
    assert.deepEqual(await store.get('k'), Buffer.from('row 2'));

    await store.put('src-row', Buffer.from('from a row'));
    await store.put('src-file', fileBody('from a file'));
    await store.put('dst-file', fileBody('old file'));
    await store.put('dst-row', Buffer.from('old row'));
    await store.copy('src-row', 'dst-file');
    await store.copy('src-file', 'dst-row');
    assert.equal(await where('dst-file'), 'row');
    assert.equal(await where('dst-row'), 'file');
    assert.deepEqual(await store.get('dst-file'), Buffer.from('from a row'));
    assert.deepEqual(await store.get('dst-row'), Buffer.from('from a file'));
  });

  it('where a stale file shadows a row (a crash between the two steps), the row is the value for every read, and delete removes both', async () => {
    await store.put('dup/k', Buffer.from('the row'));
    await mkdir(join(root, 'dup'), { recursive: true });
    await writeFile(join(root, 'dup/k'), 'an older file value');
    assert.deepEqual(await store.get('dup/k'), Buffer.from('the row'));
    assert.equal((await store.head('dup/k'))?.size, 7);
    const stream = await store.getStream('dup/k', { start: 4 });
    assert.ok(stream !== null);
    assert.deepEqual(await readAll(stream), Buffer.from('row'));
    assert.deepEqual(
      (await collectInfos(store, 'dup/')).map((b) => [b.key, b.size]),
      [['dup/k', 7]],
    );
    await store.copy('dup/k', 'dup/c');
    assert.deepEqual(await store.get('dup/c'), Buffer.from('the row'));
    await store.delete('dup/k');
    assert.equal(await store.get('dup/k'), null);
    assert.deepEqual(await filesUnder(root), []);
  });

  it('applies the key rule in call order to writes that share one group commit', async () => {
    const isConflict = (err: unknown): boolean =>
      err instanceof ValidationError && err.code === 'key_conflict';
    // Issued without waiting: one transaction, in which folders already checked are not looked up again.
    const results = await Promise.allSettled([
      store.put('g/a/b/c', Buffer.from('1')),
      store.put('g/a/b', Buffer.from('2')), // a folder of the write just before
      store.put('g/a', Buffer.from('3')),
      store.put('g/x', Buffer.from('4')),
      store.put('g/x/y', Buffer.from('5')), // below a row written earlier in the same commit
      store.put('g/a/b/d', Buffer.from('6')),
      store.copy('g/x', 'g/x/z'),
      store.copy('g/a/b/c', 'g/a/e'),
    ]);
    assert.deepEqual(
      results.map((r) =>
        r.status === 'fulfilled' ? 'ok' : isConflict(r.reason) ? 'conflict' : String(r.reason),
      ),
      ['ok', 'conflict', 'conflict', 'ok', 'conflict', 'ok', 'conflict', 'ok'],
    );
    assert.deepEqual(rowKeys(), ['g/a/b/c', 'g/a/b/d', 'g/a/e', 'g/x']);
    assert.deepEqual(await store.get('g/a/e'), Buffer.from('1'));
  });

  it('deletes of rows, issued without waiting among puts, apply in call order (they share group commits)', async () => {
    await Promise.all(
      ['o/a', 'o/b', 'o/c/summary.json', 'o/d/parts/1'].map((k) => store.put(k, Buffer.from(k))),
    );
    // Each line is one caller's calls, issued one right after the other, nothing awaited in between.
    await Promise.all([
      store.delete('o/a'),
      store.put('o/a', Buffer.from('put after the delete')),
      store.put('o/b', Buffer.from('put before the delete')),
      store.delete('o/b'),
      store.deletePrefix('o/c/'),
      store.put('o/c/summary.json', Buffer.from('put after the prefix delete')),
      store.put('o/e', Buffer.from('a new key, deleted at once')),
      store.delete('o/e'),
      store.deletePrefix('o/d/'),
    ]);
    assert.deepEqual(await store.get('o/a'), Buffer.from('put after the delete'));
    assert.equal(await store.get('o/b'), null);
    assert.deepEqual(await store.get('o/c/summary.json'), Buffer.from('put after the prefix delete'));
    assert.equal(await store.get('o/e'), null);
    assert.equal(await store.get('o/d/parts/1'), null);
    // Another connection sees the same: each call resolved once committed.
    const other = new FsBlobStore({ root });
    try {
      assert.deepEqual(await keysOf(other, 'o/'), ['o/a', 'o/c/summary.json']);
    } finally {
      await other.close();
    }
    // Many at once, as a batch delete of messages issues them.
    const many = Array.from({ length: 300 }, (_, i) => `o/m/${String(i).padStart(3, '0')}`);
    await Promise.all(many.map((k) => store.put(k, Buffer.from(k))));
    await Promise.all(many.map((k) => store.delete(k)));
    assert.deepEqual(await keysOf(store, 'o/m/'), []);
  });

  it('a read sees a put that is still queued; put resolves once committed (another connection sees it)', async () => {
    const other = new FsBlobStore({ root });
    try {
      const pending = store.put('q/k', Buffer.from('queued'));
      assert.deepEqual(await store.get('q/k'), Buffer.from('queued'));
      await pending;
      const many = Array.from({ length: 200 }, (_, i) => `q/${String(i).padStart(3, '0')}`);
      await Promise.all(many.map((k) => store.put(k, Buffer.from(k))));
      for (const k of many) assert.deepEqual(await other.get(k), Buffer.from(k));
      assert.equal((await keysOf(other, 'q/')).length, 201);
    } finally {
      await other.close();
    }
  });

  it('a copy called right after a put of its source, before the put resolved, copies what the put writes', async () => {
    // What the router does with a message: put inbound/, then copy it to the mailbox, in one go.
    const small = Buffer.from('a row');
    const big = Buffer.alloc(DEFAULT_SMALL_BLOB_MAX_BYTES + 1, 7);
    const streamed = 'a streamed file';
    const puts = [
      store.put('src/row', small),
      store.put('src/file', big),
      store.put('src/stream', fileBody(streamed)),
    ];
    const copies = [
      store.copy('src/row', 'dst/row'),
      store.copy('src/file', 'dst/file'),
      store.copy('src/stream', 'dst/stream'),
    ];
    await Promise.all([...puts, ...copies]);
    assert.deepEqual(await store.get('dst/row'), small);
    assert.deepEqual(await store.get('dst/file'), big);
    assert.equal((await store.get('dst/stream'))?.toString(), streamed);
    // A copy of a source whose put failed finds no source.
    const failed = store.put(
      'src/broken',
      Readable.from(
        (async function* () {
          yield Buffer.from('x');
          throw new Error('reset');
        })(),
      ),
    );
    const copy = store.copy('src/broken', 'dst/broken');
    await assert.rejects(failed, /reset/);
    await assert.rejects(copy, NotFoundError);
  });

  it('several stores over one root, in this process and another, write and read each other’s blobs', async () => {
    const second = new FsBlobStore({ root, durability: 'deferred' });
    try {
      await Promise.all([
        ...Array.from({ length: 50 }, (_, i) => store.put(`multi/a/${i}`, Buffer.from(`a${i}`))),
        ...Array.from({ length: 50 }, (_, i) => second.put(`multi/b/${i}`, Buffer.from(`b${i}`))),
        second.put('multi/big', fileBody(Buffer.alloc(300_000, 3))),
      ]);
      assert.deepEqual(await second.get('multi/a/7'), Buffer.from('a7'));
      assert.deepEqual(await store.get('multi/b/7'), Buffer.from('b7'));
      // Another process writes while this one does: both group-commit into the one database.
      const script = `
        import { FsBlobStore } from './functions/adapters/local/fs-blob-store.ts';
        const store = new FsBlobStore({ root: ${JSON.stringify(root)} });
        await Promise.all(Array.from({ length: 100 }, (_, i) => store.put('multi/c/' + i, Buffer.from('c' + i))));
        await store.copy('multi/a/1', 'multi/c/copied');
        await store.close();
      `;
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        cwd: PROJECT_ROOT,
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      const exited = once(child, 'exit');
      for (let i = 0; i < 100; i++) await store.put(`multi/d/${i}`, Buffer.from(`d${i}`));
      const [code] = await exited;
      assert.equal(code, 0);
      assert.deepEqual(await store.get('multi/c/99'), Buffer.from('c99'));
      assert.deepEqual(await second.get('multi/c/copied'), Buffer.from('a1'));
      assert.equal((await keysOf(second, 'multi/')).length, 50 + 50 + 1 + 100 + 1 + 100);
      await second.deletePrefix('multi/');
      assert.deepEqual(await keysOf(store, 'multi/'), []);
    } finally {
      await second.close();
    }
  });

  it('close commits queued writes; a closed store refuses calls but still presigns', async () => {
    const s = new FsBlobStore({ root, presign: { baseUrl: BASE_URL, secret: SECRET } });
    const pending = s.put('closing/k', Buffer.from('committed at close'));
    await s.close();
    await pending;
    await s.close();
    await assert.rejects(s.get('closing/k'), /closed/);
    await assert.rejects(s.put('closing/k', Buffer.from('x')), /closed/);
    assert.match(await s.presign('closing/k', { expiresIn: 60 }), /^http:\/\/127\.0\.0\.1:8025\/v1\/blobs\//);
    assert.deepEqual(await store.get('closing/k'), Buffer.from('committed at close'));
  });

  it('opens its database on first use: a store that only presigns creates none', async () => {
    const fresh = join(dir, 'fresh');
    const s = new FsBlobStore({ root: join(fresh, 'blobs'), presign: { baseUrl: BASE_URL, secret: SECRET } });
    await s.presign('a', { expiresIn: 60 });
    await s.close();
    assert.equal(existsSync(join(fresh, 'blobs.sqlite')), false);
    assert.throws(
      () => new FsBlobStore({ root, smallBlobDatabase: join(root, 'db.sqlite') }),
      /must not be inside the root/,
    );
    assert.throws(() => new FsBlobStore({ root, smallBlobMaxBytes: -1 }), /smallBlobMaxBytes/);
  });

  it('refuses a database written by a newer schema instead of misreading it', async () => {
    const other = join(dir, 'newer');
    const s = new FsBlobStore({ root: join(other, 'blobs') });
    await s.put('k', Buffer.from('v'));
    await s.close();
    const db = new Database(join(other, 'blobs.sqlite'));
    db.pragma('user_version = 99');
    db.close();
    const again = new FsBlobStore({ root: join(other, 'blobs') });
    await assert.rejects(again.get('k'), /newer than this mail-relay/);
    await again.close();
  });
});

describe('SqliteMailboxIndex: local specifics', () => {
  it('refuses a limit outside 1..1000', async () => {
    const index = new SqliteMailboxIndex(':memory:');
    try {
      for (const limit of [0, -1, 1001, 1.5, Number.NaN]) {
        await assert.rejects(index.list('a@example.com', { limit }), ValidationError, `limit ${limit}`);
      }
    } finally {
      await index.close();
    }
  });

  it('an unread page reads the partial index of unread mail, not every message of the mailbox (query plan)', async () => {
    // Without statistics the planner took the primary key (it covers every column) and walked all
    // of a mailbox's read mail for its few unread ones: ~35 ms for 3 unread among 100,000 read,
    // ~0.25 ms through the index.
    const dir = await tempDir('index-unseen');
    try {
      const path = join(dir, 'index.sqlite');
      const mb = 'a@example.com';
      const index = new SqliteMailboxIndex(path);
      for (let i = 0; i < 50; i++) {
        await index.deliver(makeEntry(mb, Date.UTC(2025, 0, 1) + i * 1000, `plan-${i}`, { seen: i !== 7 }));
      }
      await index.close();
      const raw = new Database(path, { readonly: true });
      try {
        for (const cursor of [false, true]) {
          for (const q of [false, true]) {
            const plan = raw
              .prepare(`EXPLAIN QUERY PLAN ${listSql(cursor, true, q)}`)
              .all({ mailbox: mb, before: 'z', q: 'x', limit: 51 }) as { detail: string }[];
            assert.deepEqual(
              plan.map((p) => p.detail),
              [`SEARCH messages USING INDEX messages_unseen (mailbox=?${cursor ? ' AND id<?' : ''})`],
              `cursor ${cursor}, q ${q}`,
            );
          }
        }
      } finally {
        raw.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('an index from before commit numbers (schema v3) numbers its mail in id order, then counts on', async () => {
    const dir = await tempDir('index-v3');
    try {
      const path = join(dir, 'index.sqlite');
      const mb = 'a@example.com';
      const before = new SqliteMailboxIndex(path);
      const older = makeEntry(mb, Date.UTC(2025, 0, 1), 'v3-older');
      const newer = makeEntry(mb, Date.UTC(2025, 0, 2), 'v3-newer');
      await before.deliver(newer);
      await before.deliver(older);
      await before.close();
      // What a v3 file looks like: no commit tables.
      const raw = new Database(path);
      raw.exec('DROP TABLE commits; DROP TABLE commit_counters;');
      raw.pragma('user_version = 3');
      raw.close();
      const index = new SqliteMailboxIndex(path);
      try {
        assert.equal(await index.commitCursor(mb), 2);
        assert.deepEqual(
          (await index.committedAfter(mb, 0, 10)).items.map((e) => e.id),
          [older.id, newer.id],
        );
        const later = makeEntry(mb, Date.UTC(2024, 0, 1), 'v4-later');
        await index.deliver(later);
        assert.deepEqual(
          (await index.committedAfter(mb, 2, 10)).items.map((e) => e.id),
          [later.id],
        );
      } finally {
        await index.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('an index from before crlfSize (schema v4) gains the column; its entries read crlfSize = size', async () => {
    const dir = await tempDir('index-v4');
    try {
      const path = join(dir, 'index.sqlite');
      const mb = 'a@example.com';
      const before = new SqliteMailboxIndex(path);
      const old = makeEntry(mb, Date.UTC(2025, 0, 1), 'v4-old', { crlfSize: 9999 });
      await before.deliver(old);
      await before.close();
      // What a v4 file looks like: no crlf_size column.
      const raw = new Database(path);
      raw.exec('ALTER TABLE messages DROP COLUMN crlf_size');
      raw.pragma('user_version = 4');
      raw.close();
      const index = new SqliteMailboxIndex(path);
      try {
        assert.equal((await index.get(mb, old.id))?.crlfSize, old.size);
        const later = makeEntry(mb, Date.UTC(2025, 0, 2), 'v5-new', { size: 100, crlfSize: 110 });
        await index.deliver(later);
        assert.deepEqual(
          (await index.list(mb, { limit: 10 })).items.map((e) => [e.size, e.crlfSize]),
          [
            [100, 110],
            [old.size, old.size],
          ],
        );
      } finally {
        await index.close();
      }
      // Opened again at v5: nothing to migrate, nothing lost.
      const again = new SqliteMailboxIndex(path);
      try {
        assert.equal((await again.list(mb, { limit: 10 })).items.length, 2);
      } finally {
        await again.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a database written by a newer schema instead of misreading it', async () => {
    const dir = await tempDir('index-version');
    try {
      const path = join(dir, 'index.sqlite');
      await new SqliteMailboxIndex(path).close();
      const raw = new Database(path);
      raw.pragma('user_version = 99');
      raw.close();
      assert.throws(() => new SqliteMailboxIndex(path), /newer than this mail-relay/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
