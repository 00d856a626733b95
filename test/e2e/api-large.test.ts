/**
 * Large content through the API: a 20 MB attachment delivered through the pipeline is served by
 * a 307 to a short-lived presigned URL (as S3 would in AWS), for the part and the raw message;
 * clients that follow redirects get the same bytes. Plus TOP on a big message, and TOP whose
 * blank line falls exactly on the boundary between two range reads; and GET message of a message
 * whose HTML body or header block is larger than one answer may carry.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { messageDetailSchema } from '../../functions/api/schemas.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { startApiServer } from '../../functions/local/api-server.ts';
import { buildMessageWithAttachment, pdfLikeBytes } from '../fixtures/build.ts';
import { type ApiTestEnv, errorOf, referenceTop, startApiTestEnv } from '../helpers/api.ts';

const MAILBOX = 'alice@example.test';
const ATTACHMENT_BYTES = 20 * 1024 * 1024;
const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('large messages: 307 to presigned URLs', () => {
  let env: ApiTestEnv;
  let token: string;
  let id: string;
  let attachment: Buffer;
  let stored: Buffer;

  before(async () => {
    env = await startApiTestEnv();
    token = await env.token(MAILBOX);
    attachment = pdfLikeBytes(ATTACHMENT_BYTES, 2026);
    const raw = await buildMessageWithAttachment({ attachmentBytes: attachment, filename: 'big report.pdf' });
    const r = await env.deliver([MAILBOX], raw);
    assert.equal(r.parseFailed, false);
    id = r.id;
    const b = await env.runtime.blobs.get(mailboxKeys.raw(MAILBOX, id));
    assert.ok(b);
    stored = b;
  });
  after(async () => env?.close());

  const path = (suffix: string) => `/v1/mailboxes/${MAILBOX}/messages/${id}${suffix}`;

  it('the 20 MB part: 307 to a presigned URL; following it gives the decoded bytes (sha256 as listed)', async () => {
    const detail = messageDetailSchema.parse(await (await env.request(path(''), { token })).json());
    const listed = detail.attachments.find((a) => a.partId === '1');
    assert.ok(listed);
    assert.equal(listed.size, ATTACHMENT_BYTES);
    assert.equal(listed.sha256, sha256(attachment));

    const redirect = await env.request(path('/parts/1'), { token, redirect: 'manual' });
    assert.equal(redirect.status, 307);
    assert.equal(redirect.headers.get('cache-control'), 'no-store');
    const location = redirect.headers.get('location');
    assert.ok(location?.startsWith(`${env.url}/v1/blobs/`), location ?? '');

    const followed = await env.request(path('/parts/1'), { token });
    assert.equal(followed.status, 200);
    assert.equal(followed.redirected, true);
    const bytes = Buffer.from(await followed.arrayBuffer());
    assert.equal(bytes.length, ATTACHMENT_BYTES);
    assert.equal(sha256(bytes), listed.sha256);
    assert.equal(followed.headers.get('content-type'), 'application/pdf');
    assert.equal(
      followed.headers.get('content-disposition'),
      `attachment; filename="big report.pdf"; filename*=UTF-8''big%20report.pdf`,
    );
  });

  it('raw: 307, and the presigned URL serves the stored bytes exactly, with no token', async () => {
    const redirect = await env.request(path('/raw'), { token, redirect: 'manual' });
    assert.equal(redirect.status, 307);
    const location = redirect.headers.get('location') ?? '';
    const direct = await fetch(location);
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('content-type'), 'message/rfc822');
    assert.equal(direct.headers.get('content-length'), String(stored.length));
    assert.equal(sha256(Buffer.from(await direct.arrayBuffer())), sha256(stored));

    const followed = await env.request(path('/raw'), { token });
    assert.equal(sha256(Buffer.from(await followed.arrayBuffer())), sha256(stored));
  });

  it('presigned URLs: a changed signature or key is refused; an expired one too; they survive a restart', async () => {
    const location = new URL(
      (await env.request(path('/raw'), { token, redirect: 'manual' })).headers.get('location') ?? '',
    );
    const tampered = new URL(location);
    tampered.searchParams.set('sig', '0'.repeat(64));
    const bad = await fetch(tampered);
    assert.equal(bad.status, 403);
    assert.equal((await errorOf(bad)).code, 'invalid_signature');
    const otherKey = new URL(location.href.replace(`${id}.eml`, `${id}/summary.json`));
    const wrongKey = await fetch(otherKey);
    assert.equal(wrongKey.status, 403);
    await wrongKey.arrayBuffer();
    const unsigned = await fetch(`${env.url}${location.pathname}`);
    assert.equal(unsigned.status, 403);
    await unsigned.arrayBuffer();

    // A second server on the same data dir (a restart) shares the persisted secret: the URL still works ...
    const restarted = await startApiServer(env.runtime, { port: 0 });
    // ... and one whose clock is past the URL's expiry refuses it.
    const later = await startApiServer(env.runtime, {
      port: 0,
      app: { clock: () => Date.now() + 3_600_000 },
    });
    try {
      const again = await fetch(`${restarted.url}${location.pathname}${location.search}`);
      assert.equal(again.status, 200);
      assert.equal(sha256(Buffer.from(await again.arrayBuffer())), sha256(stored));
      const expired = await fetch(`${later.url}${location.pathname}${location.search}`);
      assert.equal(expired.status, 403);
      assert.equal((await errorOf(expired)).code, 'url_expired');
    } finally {
      await restarted.close();
      await later.close();
    }
  });

  it('TOP on the big message reads only what it needs; TOP of the whole message redirects like RETR', async () => {
    const top0 = await env.request(path('/top?lines=0'), { token });
    assert.equal(top0.status, 200);
    assert.deepEqual(Buffer.from(await top0.arrayBuffer()), referenceTop(stored, 0));
    const top20 = await env.request(path('/top?lines=20'), { token });
    assert.deepEqual(Buffer.from(await top20.arrayBuffer()), referenceTop(stored, 20));

    const whole = await env.request(path('/top?lines=1000000'), { token, redirect: 'manual' });
    assert.equal(whole.status, 307);
    await whole.arrayBuffer();
    // 100,000 base64 lines are about 7.8 MB: more than one response may carry, and less than the message.
    const tooLarge = await env.request(path('/top?lines=100000'), { token });
    assert.equal(tooLarge.status, 422);
    assert.equal((await errorOf(tooLarge)).code, 'top_too_large');
  });
});

describe('TOP across range-read boundaries', () => {
  let env: ApiTestEnv;
  let token: string;
  before(async () => {
    env = await startApiTestEnv();
    token = await env.token(MAILBOX);
  });
  after(async () => env?.close());

  /** Headers of exactly `length` bytes (CRLF lines of at most 78 characters, the last one padded). */
  function headersOfLength(length: number): string {
    let out = 'Subject: boundary\r\n';
    let n = 0;
    while (length - out.length > 200) out += `X-Pad-${n++}: ${'p'.repeat(60)}\r\n`;
    const last = 'X-Last: ';
    return `${out}${last}${'q'.repeat(length - out.length - last.length - 2)}\r\n`;
  }

  it('finds the blank line whether its CR and LF fall before, across or after the 64 KiB boundary', async () => {
    // The trace headers have the same length for every delivery here: measure them once.
    const probeBody = Buffer.from('Subject: probe\r\n\r\nx\r\n');
    const probe = await env.deliver([MAILBOX], probeBody);
    const traceLength = probe.size - probeBody.length;
    const boundary = 64 * 1024;
    for (const crOffset of [boundary - 2, boundary - 1, boundary, boundary + 1]) {
      const head = headersOfLength(crOffset - traceLength);
      const body = Buffer.from(`${head}\r\nline one\r\n.line two\r\nline three\r\n`, 'latin1');
      const r = await env.deliver([MAILBOX], body);
      const raw = await env.runtime.blobs.get(mailboxKeys.raw(MAILBOX, r.id));
      assert.ok(raw);
      assert.equal(raw.indexOf('\r\n\r\n') + 2, crOffset, 'the blank line is where the test put it');
      for (const n of [0, 1, 2, 5]) {
        const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}/top?lines=${n}`, { token });
        assert.equal(res.status, 200);
        assert.deepEqual(
          Buffer.from(await res.arrayBuffer()),
          referenceTop(raw, n),
          `CR at ${crOffset}, TOP ${n}`,
        );
      }
    }
  });
});

describe('a message whose HTML body or headers are larger than one answer may carry', () => {
  let env: ApiTestEnv;
  let token: string;
  before(async () => {
    env = await startApiTestEnv();
    token = await env.token(MAILBOX);
  });
  after(async () => env?.close());

  it('GET message cuts html to 2 MiB of JSON and says so; text stays whole; /raw has every byte', async () => {
    const html = `<html><body>${'<p>Grüße aus Köln — “quoted” & <b>bold</b></p>\n'.repeat(80_000)}</body></html>\n`;
    const htmlBytes = Buffer.from(html, 'utf8');
    assert.ok(htmlBytes.length > 4 * 1024 * 1024);
    const base64Lines = htmlBytes.toString('base64').replace(/.{76}/g, '$&\r\n');
    const body = Buffer.from(
      [
        'From: Newsletter <news@example.test>',
        `To: ${MAILBOX}`,
        'Subject: a very long newsletter',
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="alt"',
        '',
        '--alt',
        'Content-Type: text/plain; charset=utf-8',
        '',
        'The short text version.',
        '--alt',
        'Content-Type: text/html; charset=utf-8',
        'Content-Transfer-Encoding: base64',
        '',
        base64Lines,
        '--alt--',
        '',
      ].join('\r\n'),
      'latin1',
    );
    const r = await env.deliver([MAILBOX], body);
    assert.equal(r.parseFailed, false);

    const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}`, { token });
    assert.equal(res.status, 200);
    const answer = Buffer.from(await res.arrayBuffer());
    assert.ok(answer.length < 6_000_000, `${answer.length} bytes: more than a Lambda response carries`);
    const detail = messageDetailSchema.parse(JSON.parse(answer.toString('utf8')));
    assert.deepEqual(detail.truncated, { text: false, html: true, headers: false });
    assert.equal(detail.text?.trim(), 'The short text version.');
    assert.ok(detail.html !== null && html.startsWith(detail.html), 'html is a prefix of the body');
    const htmlJson = Buffer.byteLength(JSON.stringify(detail.html));
    assert.ok(htmlJson <= 2 * 1024 * 1024 && htmlJson > 2 * 1024 * 1024 - 8, `${htmlJson} bytes of JSON`);

    const raw = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}/raw`, { token });
    assert.equal(raw.status, 200);
    const stored = Buffer.from(await raw.arrayBuffer());
    assert.ok(stored.subarray(stored.length - body.length).equals(body), 'the raw message is whole');

    // A small message says nothing was cut.
    const small = await env.deliver([MAILBOX], Buffer.from('Subject: small\r\n\r\nhello\r\n'));
    const smallDetail = messageDetailSchema.parse(
      await (await env.request(`/v1/mailboxes/${MAILBOX}/messages/${small.id}`, { token })).json(),
    );
    assert.deepEqual(smallDetail.truncated, { text: false, html: false, headers: false });
    assert.equal(smallDetail.text?.trim(), 'hello');
  });

  it('GET message keeps whole headers, in order, up to 1 MiB of JSON, and says it stopped', async () => {
    // Under mailparser's 1 MiB limit for a header block (beyond it the parse fails and the message is
    // flagged), but quotes take two bytes each in JSON: ~1.6 MB of it.
    const received = Array.from(
      { length: 2000 },
      (_, i) => `Received: from hop-${i}.example.test by hop-${i + 1}.example.test; ${'"'.repeat(370)}`,
    );
    const body = Buffer.from(
      `${received.join('\r\n')}\r\nFrom: loop@example.test\r\nTo: ${MAILBOX}\r\nSubject: a mail loop\r\n\r\nbody\r\n`,
      'latin1',
    );
    const r = await env.deliver([MAILBOX], body);
    const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}`, { token });
    assert.equal(res.status, 200);
    const detail = messageDetailSchema.parse(await res.json());
    assert.deepEqual(detail.truncated, { text: false, html: false, headers: true });
    const headersJson = Buffer.byteLength(JSON.stringify(detail.headers));
    assert.ok(
      headersJson <= 1024 * 1024 && headersJson > 1024 * 1024 - 1000,
      `${headersJson} bytes of headers`,
    );
    // The first headers are the trace headers this relay added, then the message's own, in order.
    const hops = detail.headers.filter(
      (h) => h.name.toLowerCase() === 'received' && h.value.startsWith('from hop-'),
    );
    assert.ok(hops.length > 1000 && hops.length < 2000, `${hops.length} of 2000`);
    assert.deepEqual(
      hops.map((h) => h.value.slice(0, h.value.indexOf(' by '))),
      hops.map((_, i) => `from hop-${i}.example.test`),
    );
    // What the headers say is still read from all of them.
    assert.equal(detail.subject, 'a mail loop');
    assert.equal(detail.text?.trim(), 'body');
  });
});
