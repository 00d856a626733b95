/**
 * The room `mail-relay dev` keeps for deletes on a full disk (functions/adapters/local/disk-reserve.ts),
 * and the local blob store using it, on a real tmpfs that fills up. Needs root to mount one
 * (helpers/tmpfs.ts); test/e2e/disk-full.test.ts covers the relay as a user sees it.
 */
import assert from 'node:assert/strict';
import { existsSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DISK_RESERVE_BYTES, DiskReserve } from '../../functions/adapters/local/disk-reserve.ts';
import { FsBlobStore } from '../../functions/adapters/local/fs-blob-store.ts';
import { SqliteMailboxIndex } from '../../functions/adapters/local/sqlite-mailbox-index.ts';
import { isStorageFull } from '../../functions/core/errors.ts';
import { makeEntry } from '../contract/mailbox-index.contract.ts';
import { fillDisk, freeDisk, mountTmpfs, unmountTmpfs } from '../helpers/tmpfs.ts';

const point = mountTmpfs('mr-disk-reserve-unit', 24);

describe('the disk reserve', { skip: point === null }, () => {
  const root = point ?? '';
  const filler = join(root, 'filler');
  const free = () => {
    const { bavail, bsize } = statfsSync(root);
    return bavail * bsize;
  };
  after(() => {
    if (point !== null) unmountTmpfs(point);
  });

  it('is made when there is room, kept across a restart, gives its room back when released, and is not made without room', () => {
    const reserve = new DiskReserve(root);
    const before = free();
    assert.equal(reserve.ensure(), true);
    assert.equal(statSync(reserve.path).size, DISK_RESERVE_BYTES);
    assert.ok(before - free() >= DISK_RESERVE_BYTES, 'it takes its room');
    // The next start finds it whole and keeps it (not written again).
    const mtime = statSync(reserve.path).mtimeMs;
    const next = new DiskReserve(root);
    assert.equal(next.ensure(), true);
    assert.equal(statSync(next.path).mtimeMs, mtime);

    const held = free();
    assert.equal(next.release(), true);
    assert.ok(free() - held >= DISK_RESERVE_BYTES, 'its room is given back');
    assert.equal(next.release(), false, 'once');

    // Without room for all of it: not made, and nothing of it left behind.
    fillDisk(filler);
    assert.equal(next.ensure(), false);
    assert.equal(existsSync(next.path), false);
    freeDisk(filler);
    // Part of one (killed while writing) is made whole.
    writeFileSync(next.path, Buffer.alloc(1000, 1));
    assert.equal(next.ensure(), true);
    assert.equal(statSync(next.path).size, DISK_RESERVE_BYTES);
    next.release();
  });

  it('lets the blob store delete rows on a full disk, and no put', async () => {
    const reserve = new DiskReserve(root);
    assert.equal(reserve.ensure(), true);
    const blobs = new FsBlobStore({ root: join(root, 'blobs'), reserve });
    const plain = new FsBlobStore({ root: join(root, 'blobs') });
    const keys = Array.from({ length: 300 }, (_, i) => `mailboxes/a@example.test/${i}.eml`);
    await Promise.all(keys.map((key, i) => blobs.put(key, Buffer.alloc(3000, i))));
    await blobs.close();
    await plain.get(keys[0] ?? '');
    const reopened = new FsBlobStore({ root: join(root, 'blobs'), reserve });
    await reopened.get(keys[0] ?? '');
    fillDisk(filler);
    try {
      // Without the reserve the removal cannot be written (nothing changed).
      await assert.rejects(plain.deletePrefix('mailboxes/a@example.test/1'), (err) => isStorageFull(err));
      assert.ok(await plain.get(keys[1] ?? ''));
      // With it: removals commit; a put in the same group commit gets no room.
      const put = reopened.put('mailboxes/a@example.test/new.eml', Buffer.alloc(3000, 7));
      const removed = Promise.all(keys.map((key) => reopened.delete(key)));
      await assert.rejects(put, (err) => isStorageFull(err));
      await removed;
      assert.equal(reserve.held, false);
      for (const key of keys) assert.equal(await plain.get(key), null, key);
    } finally {
      freeDisk(filler);
      await reopened.close();
      await plain.close();
    }
  });

  it('keeps what deletes write small once the reserve is released: the WAL starts over instead of growing', async () => {
    const released = { held: false, release: () => false };
    const dir = join(root, 'wal');
    const writer = new FsBlobStore({ root: dir });
    const keys = Array.from({ length: 2000 }, (_, i) => `mailboxes/b@example.test/${i}/summary.json`);
    await Promise.all(keys.map((key, i) => writer.put(key, Buffer.alloc(1500, i))));
    await writer.close();
    const blobs = new FsBlobStore({ root: dir, reserve: released });
    const before = free();
    // As the API deletes a page of mail: 16 at a time, one removal each.
    const work = [...keys];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let key = work.shift(); key !== undefined; key = work.shift()) await blobs.delete(key);
      }),
    );
    const used = before - free();
    await blobs.close();
    assert.ok(used < 1024 * 1024, `deleting 2,000 rows took ${used} bytes of the disk`);
  });

  it('keeps what the index writes for deletes small once the reserve is released', async () => {
    const path = join(root, 'index.sqlite');
    const writer = new SqliteMailboxIndex(path);
    const mailbox = 'c@example.test';
    const entries = Array.from({ length: 2000 }, (_, i) =>
      makeEntry(mailbox, Date.UTC(2026, 0, 1) + i, `r-${i}`),
    );
    await Promise.all(entries.map((e) => writer.deliver(e)));
    writer.close();
    const index = new SqliteMailboxIndex(path, { reserve: { held: false, release: () => false } });
    const before = free();
    // As POP3 clients and the web inbox delete: one message at a time.
    for (const e of entries) assert.ok(await index.delete(mailbox, e.id));
    const used = before - free();
    index.close();
    assert.ok(used < 1024 * 1024, `deleting 2,000 entries one by one took ${used} bytes of the disk`);
  });
});
