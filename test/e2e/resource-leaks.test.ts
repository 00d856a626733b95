/**
 * What a relay that runs for weeks must not accumulate (found by a soak of `npm start`: mixed SMTP,
 * API, POP3 and deletion traffic for 15 minutes, bench/soak.py). Each test is one leak, kept fast.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FsBlobStore } from '../../functions/adapters/local/fs-blob-store.ts';

const work = mkdtempSync(join(tmpdir(), 'mr-leaks-'));
after(() => rmSync(work, { recursive: true, force: true }));

describe('the local blob store over a long run', () => {
  it('remembers a bounded number of directories, however many messages made one', async () => {
    // Each message with a blob over 64 KiB gets directories of its own (mailboxes/<box>/<id>/parts/);
    // the store remembered every one it had made for good, deleted ones included (the API server's
    // store deletes them, not the router's): memory in proportion to the mail ever received, and a
    // deletion that scanned all of it (48 ms each after 20,000 such messages).
    const root = join(work, 'bounded');
    const store = new FsBlobStore({ root: `${root}/blobs`, durability: 'deferred', smallBlobMaxBytes: 0 });
    const other = new FsBlobStore({ root: `${root}/blobs`, durability: 'deferred', smallBlobMaxBytes: 0 });
    try {
      const n = 1300;
      for (let i = 0; i < n; i += 200) {
        await Promise.all(
          Array.from({ length: Math.min(200, n - i) }, (_, j) =>
            store.put(`mailboxes/a@example.test/${i + j}/parts/1`, Buffer.from(`part ${i + j}`)),
          ),
        );
      }
      assert.ok(store.cachedDirCount <= 1024, `${store.cachedDirCount} directories remembered`);
      // Forgetting is safe: a directory removed meanwhile, by this store or another, is made again.
      await store.deletePrefix('mailboxes/a@example.test/3/');
      await other.deletePrefix(`mailboxes/a@example.test/${n - 1}/`);
      assert.equal(existsSync(`${root}/blobs/mailboxes/a@example.test/${n - 1}`), false);
      await store.put('mailboxes/a@example.test/3/parts/2', Buffer.from('again 3'));
      await store.put(`mailboxes/a@example.test/${n - 1}/parts/2`, Buffer.from('again last'));
      assert.equal((await other.get('mailboxes/a@example.test/3/parts/2'))?.toString(), 'again 3');
      assert.equal((await other.get(`mailboxes/a@example.test/${n - 1}/parts/2`))?.toString(), 'again last');
      assert.equal((await store.get('mailboxes/a@example.test/1000/parts/1'))?.toString(), 'part 1000');
    } finally {
      await store.close();
      await other.close();
    }
  });
});
