/**
 * Real mail through the API: a sample of the shared corpus (every 4th message: all 13 sources,
 * CRLF, bare LF, CR-only, 8-bit, malformed) delivered through the pipeline, then read back over
 * HTTP. RETR is byte-exact, every decoded part's sha256 matches the summary, TOP matches the
 * reference, and unparseable messages are flagged but still served.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { messageDetailSchema, messageListSchema } from '../../functions/api/schemas.ts';
import { type ApiTestEnv, referenceTop, startApiTestEnv } from '../helpers/api.ts';
import { corpusDir, corpusFiles, requireOrAnnounce } from '../helpers/env.ts';

const MAILBOX = 'corpus@example.test';
/** Every 4th message keeps the suite within its time budget and still covers every source folder. */
const SAMPLE_EVERY = 4;
const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');
const dir = corpusDir();

describe('the shared corpus over the HTTP API', {
  skip: !requireOrAnnounce(
    dir !== null,
    'corpus HTTP API suite',
    'needs ../shared/corpus next to the clone, or MAIL_RELAY_CORPUS=/path',
  ),
}, () => {
  let env: ApiTestEnv;
  let token: string;
  const delivered: { file: string; id: string; input: Buffer }[] = [];

  before(async () => {
    env = await startApiTestEnv({ config: { domains: ['example.test'], mailboxes: ['*@example.test'] } });
    token = await env.token(MAILBOX);
    const files = corpusFiles(dir ?? '').filter((_, i) => i % SAMPLE_EVERY === 0);
    for (const f of files) {
      const input = readFileSync(f.path);
      assert.equal(sha256(input), f.sha256, `${f.file} matches the manifest`);
      const r = await env.deliver([MAILBOX], input);
      delivered.push({ file: f.file, id: r.id, input });
    }
  });
  after(async () => env?.close());

  const get = (id: string, suffix = '') =>
    env.request(`/v1/mailboxes/${MAILBOX}/messages/${id}${suffix}`, { token });

  it('LIST shows every delivered message exactly once', async () => {
    const walked: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`;
      const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages?limit=37${q}`, { token });
      assert.equal(res.status, 200);
      const page = messageListSchema.parse(await res.json());
      walked.push(...page.items.map((i) => i.id));
      cursor = page.nextCursor;
    } while (cursor !== null);
    assert.deepEqual(walked.sort(), delivered.map((d) => d.id).sort());
  });

  it('RETR is the input byte for byte after the trace headers; TOP matches the reference', async () => {
    for (const d of delivered) {
      const res = await get(d.id, '/raw');
      assert.equal(res.status, 200, d.file);
      const raw = Buffer.from(await res.arrayBuffer());
      assert.ok(raw.subarray(raw.length - d.input.length).equals(d.input), `${d.file}: raw differs`);
      for (const n of [0, 3]) {
        const top = await get(d.id, `/top?lines=${n}`);
        assert.equal(top.status, 200, d.file);
        assert.ok(Buffer.from(await top.arrayBuffer()).equals(referenceTop(raw, n)), `${d.file}: TOP ${n}`);
      }
    }
  });

  it('every message reads as JSON; every decoded part has the listed size and sha256', async () => {
    let parts = 0;
    let failed = 0;
    for (const d of delivered) {
      const res = await get(d.id);
      assert.equal(res.status, 200, d.file);
      const m = messageDetailSchema.parse(await res.json());
      if (m.parseFailed) failed += 1;
      for (const a of m.attachments) {
        const part = await get(d.id, `/parts/${a.partId}`);
        assert.equal(part.status, 200, `${d.file} part ${a.partId}`);
        const bytes = Buffer.from(await part.arrayBuffer());
        assert.equal(bytes.length, a.size, `${d.file} part ${a.partId} size`);
        assert.equal(sha256(bytes), a.sha256, `${d.file} part ${a.partId} sha256`);
        assert.match(part.headers.get('content-disposition') ?? '', /^(inline|attachment); filename="/);
        parts += 1;
      }
    }
    assert.ok(parts > 20, `only ${parts} parts in the sample`);
    console.log(
      `corpus API sample: ${delivered.length} messages, ${parts} parts, ${failed} flagged parseFailed`,
    );
  });
});
