/**
 * Every message of the shared corpus through `mail-relay import` (the real router, the real local
 * adapters): each is delivered; the stored raw message is the input byte for byte after our trace
 * headers (but for an mbox `From ` line at its start, left out); the parsed summary exists for each message that parses, the parse-failure flag for any that does not.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../functions/core/config.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { parsedSummarySchema } from '../../functions/core/message.ts';
import { detectEol } from '../../functions/core/mime-header.ts';
import { main } from '../../functions/local/cli.ts';
import { importSesMessageId } from '../../functions/local/import.ts';
import { MBOX_BARE_FROM_LINE_RE, MBOX_FROM_LINE_RE, messageStart } from '../../functions/local/ingest.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { mailboxKeys, type StoredSummary } from '../../functions/pipeline/router.ts';
import type { MessageEntry } from '../../functions/ports/mailbox-index.ts';
import { corpusDir, corpusFiles, requireOrAnnounce } from '../helpers/env.ts';
import { listAll, stripTrace } from '../helpers/relay.ts';

const MAILBOX = 'corpus@example.test';
const dir = corpusDir();

describe('the shared corpus through `mail-relay import`', {
  skip: !requireOrAnnounce(
    dir !== null,
    'corpus import suite',
    'needs ../shared/corpus next to the clone, or MAIL_RELAY_CORPUS=/path',
  ),
}, () => {
  const files = dir ? corpusFiles(dir) : [];
  const dataDir = mkdtempSync(join(tmpdir(), 'mr-corpus-'));
  // No config file in the data dir's parent: the dev default (every address at example.test is a mailbox).
  const devEnv = { ...process.env, MAIL_RELAY_DATA_DIR: dataDir, MAIL_RELAY_CONFIG: undefined };
  let runtime: LocalRuntime;
  let output = '';
  let deliveredCount = 0;

  before(async () => {
    const out = new PassThrough();
    out.on('data', (c: Buffer) => {
      output += c.toString();
    });
    const code = await main(['import', '--to', MAILBOX, ...files.map((f) => f.path)], {
      out,
      err: out,
      env: devEnv,
    });
    assert.equal(code, 0, output);
    runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
      dataDir,
    });
  });
  after(async () => {
    await runtime?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('delivers every message exactly once, with exact counters', async () => {
    assert.ok(files.length >= 400, `corpus has ${files.length} messages`);
    // A few corpus files are byte-identical copies: the same content for the same recipient is one
    // message (same id), whatever their dates or modification times. Every file is delivered or a duplicate.
    const m = /imported (\d+)\/(\d+) files .*delivered (\d+), duplicate (\d+),.* failed 0$/m.exec(output);
    assert.ok(m, output);
    const [, imported, total, delivered, duplicate] = m.map(Number);
    assert.equal(imported, files.length);
    assert.equal(total, files.length);
    assert.equal((delivered ?? 0) + (duplicate ?? 0), files.length);
    assert.ok((delivered ?? 0) >= new Set(files.map((f) => f.sha256)).size);
    deliveredCount = delivered ?? 0;
    const stat = await runtime.index.stat(MAILBOX);
    assert.equal(stat.messages, deliveredCount);
    const entries = await listAll(runtime.index, MAILBOX);
    assert.equal(entries.length, deliveredCount);
    assert.equal(
      stat.bytes,
      entries.reduce((n, e) => n + e.size, 0),
    );
  });

  it('stores each message byte for byte after the trace headers, with a summary or the parse-failure flag', async () => {
    let failed = 0;
    for (const f of files) {
      const body = readFileSync(f.path);
      assert.equal(
        createHash('sha256').update(body).digest('hex'),
        f.sha256,
        `${f.file} differs from the manifest`,
      );
      const sesId = importSesMessageId([MAILBOX], body);
      // The receipt time is unknown to the test; find the entry by its SES id through the index page scan.
      const entry = await findBySesId(runtime, sesId);
      assert.ok(entry, `${f.file} was not delivered`);
      assert.equal(entry.id.slice(10), messageIdFor(0, sesId).slice(10), 'id derives from the SES id');
      const stored = await runtime.blobs.get(mailboxKeys.raw(MAILBOX, entry.id));
      assert.ok(stored);
      // A file with no header block gets the blank line that ends ours (as an MTA adds it); a file
      // starting with an mbox `From ` line is stored without that line.
      const first = body.toString('latin1', 0, 400);
      const expected =
        messageStart(body) === 'body'
          ? Buffer.concat([Buffer.from(detectEol(body)), body])
          : MBOX_FROM_LINE_RE.test(first) || MBOX_BARE_FROM_LINE_RE.test(first)
            ? body.subarray(body.indexOf(0x0a) + 1)
            : body;
      assert.ok(stripTrace(stored).body.equals(expected), `${f.file}: stored bytes differ from the input`);
      assert.equal(entry.size, stored.length);
      const summaryBytes = await runtime.blobs.get(mailboxKeys.summary(MAILBOX, entry.id));
      assert.ok(summaryBytes, `${f.file}: no summary.json`);
      const summary = JSON.parse(summaryBytes.toString('utf8')) as StoredSummary;
      assert.equal(summary.parseFailed, entry.parseFailed);
      if (summary.parseFailed) {
        failed++;
        assert.ok(summary.parseError.length > 0);
      } else {
        const { parseFailed: _, ...rest } = summary;
        parsedSummarySchema.parse(rest);
        for (const a of summary.attachments) {
          const part = await runtime.blobs.get(mailboxKeys.part(MAILBOX, entry.id, a.partId));
          assert.ok(part, `${f.file}: part ${a.partId} missing`);
          assert.equal(createHash('sha256').update(part).digest('hex'), a.sha256);
        }
      }
    }
    console.log(`corpus: ${files.length} delivered, ${failed} flagged parseFailed`);
  });

  it('is idempotent: importing the corpus again adds nothing', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => {
      text += c.toString();
    });
    const sample = files.slice(0, 50).map((f) => f.path);
    const code = await main(['import', '--to', MAILBOX, ...sample], { out, err: out, env: devEnv });
    assert.equal(code, 0, text);
    assert.match(text, /delivered 0, duplicate 50/);
    assert.equal((await runtime.index.stat(MAILBOX)).messages, deliveredCount);
  });
});

const bySesId = new Map<string, MessageEntry>();
async function findBySesId(runtime: LocalRuntime, sesId: string): Promise<MessageEntry | null> {
  if (bySesId.size === 0)
    for (const e of await listAll(runtime.index, MAILBOX)) bySesId.set(e.sesMessageId, e);
  return bySesId.get(sesId) ?? null;
}
