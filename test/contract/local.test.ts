/**
 * The local adapters against the shared contracts, plus what only the file store can get wrong:
 * keys escaping the data dir, temp files left behind, half-written blobs.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { FsBlobStore, verifyPresignedBlobRequest } from '../../functions/adapters/local/fs-blob-store.ts';
import { SqliteMailboxIndex } from '../../functions/adapters/local/sqlite-mailbox-index.ts';
import { ValidationError } from '../../functions/core/errors.ts';
import type { PresignedResponse } from './blob-store.contract.ts';
import { runBlobStoreContract } from './blob-store.contract.ts';
import { runMailboxIndexContract } from './mailbox-index.contract.ts';

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

async function tempDir(name: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `mail-relay-${name}-`));
}

/** Every file under a directory, as `/`-separated paths relative to it, sorted. */
async function filesUnder(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const path = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...(await filesUnder(root, path)));
    else out.push(path);
  }
  return out.sort();
}

runBlobStoreContract('FsBlobStore', async () => {
  const root = await tempDir('blobs');
  const store = new FsBlobStore({ root, presign: { baseUrl: BASE_URL, secret: SECRET } });
  let clockOffsetMs = 0;
  return {
    store,
    fetchPresigned: (url) => servePresigned(store, url, Date.now() + clockOffsetMs),
    advanceClock: (ms) => {
      clockOffsetMs += ms;
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

runMailboxIndexContract('SqliteMailboxIndex (file)', async () => {
  const dir = await tempDir('index');
  const path = join(dir, 'index.sqlite');
  const opened = [new SqliteMailboxIndex(path)];
  const [index] = opened;
  assert.ok(index);
  return {
    index,
    reopen: async () => {
      const again = new SqliteMailboxIndex(path);
      opened.push(again);
      return again;
    },
    cleanup: async () => {
      for (const i of opened) await i.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

runMailboxIndexContract('SqliteMailboxIndex (:memory:)', async () => {
  const index = new SqliteMailboxIndex(':memory:');
  return { index, cleanup: () => index.close() };
});

describe('FsBlobStore: local specifics', () => {
  let dir: string;
  let root: string;
  let store: FsBlobStore;
  before(async () => {
    dir = await tempDir('fs-specific');
    root = join(dir, 'data');
    store = new FsBlobStore({ root, presign: { baseUrl: `${BASE_URL}/`, secret: SECRET } });
    await mkdir(join(dir, 'outside'));
    await writeFile(join(dir, 'outside', 'secret'), 'outside the data dir');
  });
  after(() => rm(dir, { recursive: true, force: true }));

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
    assert.deepEqual(await filesUnder(root), ['ok/key']);
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
    assert.deepEqual(await filesUnder(root), ['t/a', 't/c', 't/s']);
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
    assert.deepEqual(await filesUnder(root), ['crash/k']);
  });

  it('copy is a hard link: no second copy of the bytes on disk', async () => {
    await store.put('link/src', Buffer.alloc(100_000, 7));
    await store.copy('link/src', 'link/dst');
    const [a, b] = await Promise.all([stat(join(root, 'link/src')), stat(join(root, 'link/dst'))]);
    assert.equal(a.ino, b.ino);
    assert.equal(b.nlink, 2);
  });

  it('recovers when a directory it created is removed behind its back', async () => {
    await store.put('gone/deep/a', Buffer.from('a'));
    await rm(join(root, 'gone'), { recursive: true });
    await store.put('gone/deep/b', Buffer.from('b'));
    await rm(join(root, 'gone'), { recursive: true });
    await store.put('src/x', Buffer.from('x'));
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
  });

  it('refuses a range that starts beyond the end, like S3 (416)', async () => {
    await store.put('range/k', Buffer.from('0123456789'));
    await assert.rejects(
      store.getStream('range/k', { start: 10 }),
      (err: unknown) => err instanceof ValidationError && err.code === 'range_not_satisfiable',
    );
    await assert.rejects(store.getStream('range/k', { start: 5, end: 2 }), ValidationError);
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
