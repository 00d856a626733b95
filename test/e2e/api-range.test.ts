/**
 * Byte ranges (RFC 9110 §14) of a message (RETR) and of a decoded part (IMAP's BODY[section]<partial>)
 * on the local API: a download resumed, a media player seeking, a client fetching the start of a
 * large attachment. Answered from the store as a range read; through the 307 of a large part or
 * message, the signed link answers the range as S3 does in AWS. curl resumes real downloads.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { buildMessageWithAttachment, pdfLikeBytes } from '../fixtures/build.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';
import { hasCommand, requireOrAnnounce } from '../helpers/env.ts';

const run = promisify(execFile);
const MAILBOX = 'alice@example.test';
/** Parts and messages above this are answered with a 307 to a signed link (as above 4 MiB by default). */
const REDIRECT_BYTES = 128 * 1024;

interface Stored {
  id: string;
  raw: Buffer;
  part: Buffer;
}

describe('byte ranges of messages and parts', () => {
  let env: ApiTestEnv;
  let token: string;
  /** A message answered directly, and one (and its part) answered through the 307. */
  const small: Stored = { id: '', raw: Buffer.alloc(0), part: pdfLikeBytes(60_000, 7) };
  const large: Stored = { id: '', raw: Buffer.alloc(0), part: pdfLikeBytes(300_000, 8) };

  before(async () => {
    env = await startApiTestEnv({ app: { rawRedirectBytes: REDIRECT_BYTES } });
    token = await env.token(MAILBOX);
    for (const m of [small, large]) {
      const r = await env.deliver(
        [MAILBOX],
        await buildMessageWithAttachment({ attachmentBytes: m.part, filename: 'report.pdf' }),
      );
      m.id = r.id;
      const stored = await env.runtime.blobs.get(mailboxKeys.raw(MAILBOX, r.id));
      assert.ok(stored);
      m.raw = stored;
    }
    assert.ok(small.raw.length < REDIRECT_BYTES && large.part.length > REDIRECT_BYTES);
  });
  after(async () => env?.close());

  const path = (id: string, suffix: string) => `/v1/mailboxes/${MAILBOX}/messages/${id}${suffix}`;
  const get = (id: string, suffix: string, headers: Record<string, string> = {}, method = 'GET') =>
    env.request(path(id, suffix), { token, headers, method });
  const bytesOf = async (r: Response) => Buffer.from(await r.arrayBuffer());

  it('a part: 206 with the bytes asked for, first-last, first- and the last n; the whole says Accept-Ranges', async () => {
    const whole = await get(small.id, '/parts/1');
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get('accept-ranges'), 'bytes');
    const etag = whole.headers.get('etag');
    assert.ok((await bytesOf(whole)).equals(small.part));
    const size = small.part.length;
    for (const [range, start, end] of [
      ['bytes=0-0', 0, 0],
      ['bytes=1000-1999', 1000, 1999],
      ['bytes=59000-', 59_000, size - 1],
      ['bytes=-500', size - 500, size - 1],
      ['bytes=50000-99999999', 50_000, size - 1], // a last position past the end is the end
      ['bytes=-99999999', 0, size - 1],
    ] as const) {
      const r = await get(small.id, '/parts/1', { Range: range });
      assert.equal(r.status, 206, range);
      assert.equal(r.headers.get('content-range'), `bytes ${start}-${end}/${size}`, range);
      assert.equal(r.headers.get('content-length'), String(end - start + 1), range);
      assert.equal(r.headers.get('etag'), etag, 'the same representation');
      assert.equal(r.headers.get('content-type'), 'application/pdf');
      assert.match(r.headers.get('content-disposition') ?? '', /filename="report\.pdf"/);
      assert.equal(r.headers.get('content-security-policy'), "sandbox; default-src 'none'");
      assert.ok((await bytesOf(r)).equals(small.part.subarray(start, end + 1)), range);
    }
  });

  it('a raw message: 206 with its stored bytes; the same ETag as the whole', async () => {
    const r = await get(small.id, '/raw', { Range: 'bytes=10-4095' });
    assert.equal(r.status, 206);
    assert.equal(r.headers.get('content-type'), 'message/rfc822');
    assert.equal(r.headers.get('content-range'), `bytes 10-4095/${small.raw.length}`);
    assert.equal(r.headers.get('etag'), `"${small.id}"`);
    assert.ok((await bytesOf(r)).equals(small.raw.subarray(10, 4096)));
  });

  it('a range starting at or past the end: 416 range_not_satisfiable with Content-Range: bytes */size', async () => {
    for (const [suffix, size] of [
      ['/parts/1', small.part.length],
      ['/raw', small.raw.length],
    ] as const) {
      const r = await get(small.id, suffix, { Range: `bytes=${size}-` });
      assert.equal(r.status, 416);
      assert.equal(r.headers.get('content-range'), `bytes */${size}`);
      assert.equal((await errorOf(r)).code, 'range_not_satisfiable');
      assert.equal((await get(small.id, suffix, { Range: 'bytes=-0' })).status, 416);
    }
    // Nothing was changed by it: the message is still whole.
    assert.ok((await bytesOf(await get(small.id, '/raw'))).equals(small.raw));
  });

  it('what a server may ignore is answered whole: several ranges, another unit, a malformed header, HEAD', async () => {
    for (const range of ['bytes=0-9,20-29', 'items=0-9', 'bytes=9-0', 'bytes=a-b', 'bytes 0-9']) {
      const r = await get(small.id, '/parts/1', { Range: range });
      assert.equal(r.status, 200, range);
      assert.equal(r.headers.get('content-range'), null, range);
      assert.ok((await bytesOf(r)).equals(small.part), range);
    }
    const head = await get(small.id, '/raw', { Range: 'bytes=0-9' }, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(small.raw.length));
  });

  it('If-Range: the range while the ETag it names is current, the whole once it is not', async () => {
    const etag = (await get(small.id, '/parts/1', {}, 'HEAD')).headers.get('etag') ?? '';
    const current = await get(small.id, '/parts/1', { Range: 'bytes=0-99', 'If-Range': etag });
    assert.equal(current.status, 206);
    assert.equal((await bytesOf(current)).length, 100);
    const stale = await get(small.id, '/parts/1', { Range: 'bytes=0-99', 'If-Range': '"an-old-version"' });
    assert.equal(stale.status, 200);
    assert.ok((await bytesOf(stale)).equals(small.part));
    const dated = await get(small.id, '/parts/1', {
      Range: 'bytes=0-99',
      'If-Range': 'Sun, 29 Nov 2026 00:00:00 GMT',
    });
    assert.equal(dated.status, 200, 'a date is no validator of ours: the whole');
  });

  it('through the 307 of a large part and message, the signed link answers the range', async () => {
    for (const [suffix, bytes] of [
      ['/parts/1', large.part],
      ['/raw', large.raw],
    ] as const) {
      // fetch follows the 307 (same origin): the whole, saying it takes ranges.
      const followed = await get(large.id, suffix);
      assert.equal(followed.status, 200, suffix);
      assert.equal(followed.headers.get('accept-ranges'), 'bytes');
      assert.ok((await bytesOf(followed)).equals(bytes), suffix);
      const ranged = await env.request(path(large.id, suffix), {
        token,
        headers: { Range: 'bytes=200000-' },
        redirect: 'manual',
      });
      assert.equal(ranged.status, 307, 'a range does not change where it is served from');
      const location = ranged.headers.get('location') ?? '';
      const r = await fetch(location, { headers: { Range: 'bytes=200000-' } });
      assert.equal(r.status, 206, suffix);
      assert.equal(r.headers.get('content-range'), `bytes 200000-${bytes.length - 1}/${bytes.length}`);
      assert.ok((await bytesOf(r)).equals(bytes.subarray(200_000)), suffix);
      const past = await fetch(location, { headers: { Range: `bytes=${bytes.length}-` } });
      assert.equal(past.status, 416);
      assert.equal(past.headers.get('content-range'), `bytes */${bytes.length}`);
      await past.arrayBuffer();
    }
  });

  const curlReady = requireOrAnnounce(
    hasCommand('curl'),
    'resumed downloads with curl -C -',
    'apt-get install curl',
  );
  it('curl resumes an interrupted download of a part and of a message, direct and through the 307', {
    skip: !curlReady,
  }, async () => {
    const work = mkdtempSync(join(tmpdir(), 'mr-range-'));
    try {
      for (const [id, suffix, bytes] of [
        [small.id, '/parts/1', small.part],
        [small.id, '/raw', small.raw],
        [large.id, '/parts/1', large.part],
        [large.id, '/raw', large.raw],
      ] as const) {
        // What an interrupted download left: the first third of the file.
        const file = join(work, 'download');
        writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length / 3)));
        const { stdout } = await run('curl', [
          '-sS',
          '--fail',
          '-L',
          '--location-trusted',
          '-C',
          '-',
          '-o',
          file,
          '-w',
          '%{http_code}',
          '-H',
          `Authorization: Bearer ${token}`,
          `${env.url}${path(id, suffix)}`,
        ]);
        assert.equal(stdout, '206', `${suffix} of ${bytes.length} bytes: resumed, not fetched again`);
        assert.ok(readFileSync(file).equals(bytes), `${suffix} of ${bytes.length} bytes: byte for byte`);
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
