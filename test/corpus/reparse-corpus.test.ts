/**
 * `mail-relay reparse` over the whole shared corpus: every message imported, then its stored parse
 * made stale the way a parser that numbered parts differently would have left it (each attachment
 * one part id later, its blob moved there; the index entry's subject a U+FFFD). After reparse, read
 * through the HTTP API: every raw message byte for byte as before, every summary the current
 * parser's, every partId it names served with its bytes, and no other part stored. A second run
 * changes nothing.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createToken } from '../../functions/api/auth.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { mailboxKeys, type StoredSummary } from '../../functions/core/keys.ts';
import { type ApiServer, startApiServer } from '../../functions/local/api-server.ts';
import { main } from '../../functions/local/cli.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import type { MessageEntry } from '../../functions/ports/mailbox-index.ts';
import { corpusDir, corpusFiles, requireOrAnnounce } from '../helpers/env.ts';
import { listAll } from '../helpers/relay.ts';

const MAILBOX = 'corpus@example.test';
const dir = corpusDir();

async function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const code = await main(args, { out, err: new PassThrough().resume(), env });
  return { code, out: text };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('mail-relay reparse over the shared corpus', {
  skip: !requireOrAnnounce(
    dir !== null,
    'corpus reparse suite',
    'needs ../shared/corpus next to the clone, or MAIL_RELAY_CORPUS=/path',
  ),
}, () => {
  const files = dir ? corpusFiles(dir) : [];
  const dataDir = mkdtempSync(join(tmpdir(), 'mr-reparse-corpus-'));
  // No config file: the dev default (every address at example.test is a mailbox).
  const devEnv = { ...process.env, MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: undefined };
  let runtime: LocalRuntime;
  let api: ApiServer;
  let token: string;
  let entries: MessageEntry[];
  /** By id: the raw copy and the summary the current parser wrote at import. */
  const fresh = new Map<string, { raw: Buffer; summary: Buffer }>();

  before(async () => {
    const imported = await cli(['import', '--to', MAILBOX, ...files.map((f) => f.path)], devEnv);
    assert.equal(imported.code, 0, imported.out);
    runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
      dataDir,
    });
    api = await startApiServer(runtime, { port: 0 });
    token = (await createToken(runtime.index, { mailbox: MAILBOX, admin: false })).token;
    entries = await listAll(runtime.index, MAILBOX);
    const { blobs, index } = runtime;
    for (const e of entries) {
      const raw = await blobs.get(mailboxKeys.raw(MAILBOX, e.id));
      const summary = await blobs.get(mailboxKeys.summary(MAILBOX, e.id));
      assert.ok(raw && summary, e.id);
      fresh.set(e.id, { raw, summary });
      const stored = JSON.parse(summary.toString('utf8')) as StoredSummary;
      if (!stored.parseFailed && stored.attachments.length > 0) {
        // Each part one id later, highest first so that no blob is overwritten before it moved.
        const shifted = stored.attachments.map((a) => ({ ...a, partId: String(Number(a.partId) + 1) }));
        for (const a of [...stored.attachments].reverse()) {
          const bytes = await blobs.get(mailboxKeys.part(MAILBOX, e.id, a.partId));
          assert.ok(bytes);
          await blobs.put(mailboxKeys.part(MAILBOX, e.id, String(Number(a.partId) + 1)), bytes);
        }
        await blobs.delete(mailboxKeys.part(MAILBOX, e.id, '1'));
        await blobs.put(
          mailboxKeys.summary(MAILBOX, e.id),
          Buffer.from(JSON.stringify({ ...stored, attachments: shifted })),
        );
      }
      assert.ok(await index.updateParsed(MAILBOX, e.id, { ...e, subject: '\uFFFD' }));
    }
  });
  after(async () => {
    await api?.close();
    await runtime?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const get = (path: string) =>
    fetch(`${api.url}/v1/mailboxes/${MAILBOX}${path}`, { headers: { Authorization: `Bearer ${token}` } });

  it('reparses every message; each reads byte for byte as before, and every partId its summary names is served', async () => {
    assert.ok(files.length >= 400, `corpus has ${files.length} messages`);
    const statBefore = await runtime.index.stat(MAILBOX);
    const first = await cli(['reparse'], devEnv);
    assert.equal(first.code, 0, first.out);
    assert.equal(first.out, `reparsed ${entries.length} messages in 1 mailbox, 0 unchanged, 0 failed\n`);
    assert.deepEqual(await runtime.index.stat(MAILBOX), statBefore);

    let parts = 0;
    for (const e of entries) {
      const was = fresh.get(e.id);
      assert.ok(was);
      const raw = await get(`/messages/${e.id}/raw`);
      assert.equal(raw.status, 200, e.id);
      assert.ok(Buffer.from(await raw.arrayBuffer()).equals(was.raw), `${e.id}: raw bytes differ`);
      const summary = await runtime.blobs.get(mailboxKeys.summary(MAILBOX, e.id));
      assert.ok(summary, `${e.id}: no summary`);
      assert.ok(summary.equals(was.summary), `${e.id}: not the current parser's summary`);
      const stored = JSON.parse(summary.toString('utf8')) as StoredSummary;
      const named = stored.parseFailed ? [] : stored.attachments;
      for (const a of named) {
        const res = await get(`/messages/${e.id}/parts/${a.partId}`);
        assert.equal(res.status, 200, `${e.id} part ${a.partId}`);
        assert.equal(sha256(Buffer.from(await res.arrayBuffer())), a.sha256, `${e.id} part ${a.partId}`);
        parts++;
      }
      const onDisk: string[] = [];
      for await (const b of runtime.blobs.list(`${mailboxKeys.dir(MAILBOX, e.id)}parts/`)) onDisk.push(b.key);
      assert.deepEqual(
        onDisk.sort(),
        named.map((a) => mailboxKeys.part(MAILBOX, e.id, a.partId)).sort(),
        `${e.id}: only the parts the summary names are stored`,
      );
      const item = await runtime.index.get(MAILBOX, e.id);
      assert.deepEqual(item, e, `${e.id}: the entry is what the import wrote`);
    }
    console.log(`corpus reparse: ${entries.length} messages, ${parts} parts served`);
  });

  it('a second run changes nothing', async () => {
    const again = await cli(['reparse', '--mailbox', MAILBOX], devEnv);
    assert.equal(again.code, 0, again.out);
    assert.equal(again.out, `reparsed 0 messages in 1 mailbox, ${entries.length} unchanged, 0 failed\n`);
  });
});
