/**
 * LazyBlobStore and LazyOutbound (functions/adapters/lazy-*.ts): the real port is built once, on
 * the first call, never at construction; concurrent first calls share one load; a failed load is
 * tried again by the next call. (The BlobStore contract runs on LazyBlobStore over S3 in
 * test/contract/aws.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LazyBlobStore } from '../../functions/adapters/lazy-blob-store.ts';
import { LazyOutbound } from '../../functions/adapters/lazy-outbound.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import type { Outbound } from '../../functions/ports/outbound.ts';

function memoryStore(): BlobStore {
  const blobs = new Map<string, Buffer>();
  const info = (key: string, b: Buffer) => ({ key, size: b.length, lastModified: 0 });
  return {
    async put(key, body) {
      if (!Buffer.isBuffer(body)) throw new Error('buffers only');
      blobs.set(key, body);
    },
    async get(key) {
      return blobs.get(key) ?? null;
    },
    async getStream() {
      return null;
    },
    async head(key) {
      const b = blobs.get(key);
      return b === undefined ? null : info(key, b);
    },
    async copy(from, to) {
      const b = blobs.get(from);
      if (b !== undefined) blobs.set(to, b);
    },
    async delete(key) {
      blobs.delete(key);
    },
    async deletePrefix(prefix) {
      for (const k of [...blobs.keys()]) if (k.startsWith(prefix)) blobs.delete(k);
    },
    async *list(prefix) {
      for (const [k, b] of [...blobs].sort(([a], [c]) => a.localeCompare(c)))
        if (k.startsWith(prefix)) yield info(k, b);
    },
    async presign(key) {
      return `memory:${key}`;
    },
  };
}

describe('LazyBlobStore', () => {
  it('builds the store on the first call, once, and forwards every method to it', async () => {
    let loads = 0;
    const lazy = new LazyBlobStore(async () => {
      loads++;
      return memoryStore();
    });
    assert.equal(loads, 0, 'nothing is built at construction');
    await Promise.all([lazy.put('a/1', Buffer.from('one')), lazy.put('a/2', Buffer.from('two'))]);
    assert.equal(loads, 1, 'concurrent first calls share one load');
    assert.deepEqual(await lazy.get('a/1'), Buffer.from('one'));
    assert.equal((await lazy.head('a/2'))?.size, 3);
    await lazy.copy('a/1', 'b/1');
    const keys: string[] = [];
    for await (const b of lazy.list('')) keys.push(b.key);
    assert.deepEqual(keys, ['a/1', 'a/2', 'b/1']);
    assert.equal(await lazy.presign('b/1', { expiresIn: 60 }), 'memory:b/1');
    await lazy.delete('b/1');
    await lazy.deletePrefix('a/');
    assert.equal(await lazy.get('a/2'), null);
    assert.equal(await lazy.getStream('a/1'), null);
    assert.equal(loads, 1);
  });

  it('tries again after a failed load', async () => {
    let loads = 0;
    const lazy = new LazyBlobStore(async () => {
      loads++;
      if (loads === 1) throw new Error('chunk not loaded');
      return memoryStore();
    });
    await assert.rejects(lazy.get('k'), /chunk not loaded/);
    assert.equal(await lazy.get('k'), null);
    assert.equal(loads, 2);
  });
});

describe('LazyOutbound', () => {
  it('builds the outbound on the first send only, and tries again after a failed load', async () => {
    let loads = 0;
    const sent: string[] = [];
    const real: Outbound = {
      async send(m) {
        sent.push(m.idempotencyKey);
        return { messageId: `id-${m.idempotencyKey}` };
      },
    };
    const lazy = new LazyOutbound(async () => {
      loads++;
      if (loads === 1) throw new Error('no SES client');
      return real;
    });
    const message = {
      from: 'a@example.test',
      to: ['b@example.test'],
      raw: Buffer.from('x'),
      idempotencyKey: 'k1',
    };
    assert.equal(loads, 0);
    await assert.rejects(lazy.send(message), /no SES client/);
    assert.deepEqual(await lazy.send(message), { messageId: 'id-k1' });
    await lazy.send({ ...message, idempotencyKey: 'k2' });
    assert.equal(loads, 2);
    assert.deepEqual(sent, ['k1', 'k2']);
  });
});
