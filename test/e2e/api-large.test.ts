/**
 * Large content through the API: a 20 MB attachment delivered through the pipeline is served by
 * a 307 to a short-lived presigned URL (as S3 would in AWS), for the part and the raw message;
 * clients that follow redirects get the same bytes. Plus TOP on a big message, and TOP whose
 * blank line falls exactly on the boundary between two range reads; and GET message of a message
 * whose HTML body, header block, address or attachment list is larger than one answer may carry, and
 * LIST and long-poll pages that would be.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { wireBytes } from '../../functions/api/json-cap.ts';
import { messageDetailSchema } from '../../functions/api/schemas.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { ENTRY_TEXT_MAX_CHARS, SUMMARY_BODY_MAX_CHARS } from '../../functions/core/message.ts';
import { startApiServer } from '../../functions/local/api-server.ts';
import { buildMessageWithAttachment, pdfLikeBytes } from '../fixtures/build.ts';
import { type ApiTestEnv, errorOf, referenceTop, startApiTestEnv } from '../helpers/api.ts';

const MAILBOX = 'alice@example.test';
const ATTACHMENT_BYTES = 20 * 1024 * 1024;
const sha256 = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');
const NOTHING_CUT = { text: false, html: false, headers: false, addresses: false, attachments: false };
/** The size of an answer in the Lambda response that would carry it: its JSON inside a JSON string. */
const lambdaBytes = (answer: Buffer) => Buffer.byteLength(JSON.stringify(answer.toString('utf8')));

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

  it('an inline SVG part above the threshold redirects as a download (the S3 origin cannot sandbox it)', async () => {
    const svg = Buffer.from(
      `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>${' '.repeat(5 * 1024 * 1024)}</svg>`,
    );
    const raw = Buffer.from(
      'From: a@remote.test\r\nTo: alice@example.test\r\nSubject: picture\r\nMIME-Version: 1.0\r\n' +
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee\r\n' +
        '--b\r\nContent-Type: image/svg+xml\r\nContent-Disposition: inline; filename="pic.svg"\r\n' +
        `Content-Transfer-Encoding: base64\r\n\r\n${svg.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n--b--\r\n`,
    );
    const r = await env.deliver([MAILBOX], raw);
    const redirect = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}/parts/1`, {
      token,
      redirect: 'manual',
    });
    assert.equal(redirect.status, 307);
    const followed = await fetch(redirect.headers.get('location') ?? '');
    assert.equal(followed.status, 200);
    assert.match(followed.headers.get('content-disposition') ?? '', /^attachment; filename="pic\.svg"/);
    assert.equal(followed.headers.get('content-type'), 'image/svg+xml');
    assert.equal(sha256(Buffer.from(await followed.arrayBuffer())), sha256(svg));
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

  it('GET message cuts html to 2 MiB and says so; text stays whole; /raw has every byte', async () => {
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
    assert.ok(
      lambdaBytes(answer) < 6_000_000,
      `${lambdaBytes(answer)} bytes: more than a Lambda response carries`,
    );
    const detail = messageDetailSchema.parse(JSON.parse(answer.toString('utf8')));
    assert.deepEqual(detail.truncated, { ...NOTHING_CUT, html: true });
    assert.equal(detail.text?.trim(), 'The short text version.');
    assert.ok(detail.html !== null && html.startsWith(detail.html), 'html is a prefix of the body');
    const htmlWire = wireBytes(detail.html);
    assert.ok(htmlWire <= 2 * 1024 * 1024 && htmlWire > 2 * 1024 * 1024 - 8, `${htmlWire} bytes`);

    const raw = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}/raw`, { token });
    assert.equal(raw.status, 200);
    const stored = Buffer.from(await raw.arrayBuffer());
    assert.ok(stored.subarray(stored.length - body.length).equals(body), 'the raw message is whole');

    // A small message says nothing was cut.
    const small = await env.deliver([MAILBOX], Buffer.from('Subject: small\r\n\r\nhello\r\n'));
    const smallDetail = messageDetailSchema.parse(
      await (await env.request(`/v1/mailboxes/${MAILBOX}/messages/${small.id}`, { token })).json(),
    );
    assert.deepEqual(smallDetail.truncated, NOTHING_CUT);
    assert.equal(smallDetail.text?.trim(), 'hello');
  });

  it('a 6 MB text body: the stored summary keeps 2 Mi characters of it, GET message says text was cut, /raw is whole', async () => {
    const lines = Array.from({ length: 80_000 }, (_, i) => `line ${i} ${'x'.repeat(64)}`);
    const body = Buffer.from(
      `From: logs@example.test\r\nTo: ${MAILBOX}\r\nSubject: a huge log\r\n\r\n${lines.join('\r\n')}\r\n`,
      'latin1',
    );
    assert.ok(body.length > 6_000_000);
    const r = await env.deliver([MAILBOX], body);
    const summary = await env.runtime.blobs.get(mailboxKeys.summary(MAILBOX, r.id));
    assert.ok(summary);
    const stored = JSON.parse(summary.toString('utf8')) as { text: string };
    assert.equal(stored.text.length, SUMMARY_BODY_MAX_CHARS);
    assert.ok(summary.length < SUMMARY_BODY_MAX_CHARS * 1.1, `summary.json is ${summary.length} bytes`);

    const detail = messageDetailSchema.parse(
      await (await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}`, { token })).json(),
    );
    assert.deepEqual(detail.truncated, { ...NOTHING_CUT, text: true });
    assert.ok(detail.text?.startsWith('line 0 xxx'), 'the text starts as the body does');
    assert.ok(lines.join('\n').startsWith(detail.text ?? '-'), 'the text answered is a prefix of the body');
    const raw = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}/raw`, {
      token,
      redirect: 'follow',
    });
    const whole = Buffer.from(await raw.arrayBuffer());
    assert.ok(whole.subarray(whole.length - body.length).equals(body), 'the raw message is whole');
  });

  it('GET message keeps whole headers, in order, up to 1 MiB, and says it stopped', async () => {
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
    assert.deepEqual(detail.truncated, { ...NOTHING_CUT, headers: true });
    const headersBytes = wireBytes(detail.headers);
    assert.ok(
      headersBytes <= 1024 * 1024 && headersBytes > 1024 * 1024 - 2000,
      `${headersBytes} bytes of headers`,
    );
    // The first headers are the trace headers this relay added, then the message's own, in order.
    const hops = detail.headers.filter(
      (h) => h.name.toLowerCase() === 'received' && h.value.startsWith('from hop-'),
    );
    assert.ok(hops.length > 500 && hops.length < 2000, `${hops.length} of 2000`);
    assert.deepEqual(
      hops.map((h) => h.value.slice(0, h.value.indexOf(' by '))),
      hops.map((_, i) => `from hop-${i}.example.test`),
    );
    // What the headers say is still read from all of them.
    assert.equal(detail.subject, 'a mail loop');
    assert.equal(detail.text?.trim(), 'body');
  });

  it('a message with 12,000 recipients, 900 attachments and a 5,000-character subject: listed, and GET message fits', async () => {
    // ~330 KB of To header (within mailparser's 1 MiB header block), ~640 KB of address JSON.
    const recipients = Array.from({ length: 12_000 }, (_, i) => `"Reader ${i}" <reader-${i}@example.test>`);
    const subject = `Re: ${'a very long subject '.repeat(250)}`.trim();
    // 900 parts: mailparser refuses more than 1,000 in one message ("Max allowed child nodes exceeded").
    const parts = Array.from({ length: 900 }, (_, i) =>
      [
        '--mix',
        `Content-Type: text/plain; name="attachment-${i}-${'n'.repeat(240)}.txt"`,
        `Content-Disposition: attachment; filename="attachment-${i}-${'n'.repeat(240)}.txt"`,
        '',
        `part ${i}`,
      ].join('\r\n'),
    );
    const body = Buffer.from(
      [
        'From: Sender <sender@example.test>',
        `To: ${recipients.join(',\r\n ')}`,
        `Subject: ${subject}`,
        'MIME-Version: 1.0',
        'Content-Type: multipart/mixed; boundary="mix"',
        '',
        '--mix',
        'Content-Type: text/plain',
        '',
        'see the attachments',
        ...parts,
        '--mix--',
        '',
      ].join('\r\n'),
      'utf8',
    );
    const r = await env.deliver([MAILBOX], body);
    assert.equal(r.parseFailed, false);

    // The list entry holds a clipped subject and To (the index keeps its entries small).
    const list = (await (
      await env.request(`/v1/mailboxes/${MAILBOX}/messages?limit=1`, { token })
    ).json()) as {
      items: { id: string; subject: string; to: string }[];
    };
    const item = list.items[0];
    assert.equal(item?.id, r.id);
    assert.equal(item.subject.length, ENTRY_TEXT_MAX_CHARS);
    assert.ok(item.subject.endsWith('…') && subject.startsWith(item.subject.slice(0, -1)));
    assert.ok(
      item.to.length <= ENTRY_TEXT_MAX_CHARS && item.to.startsWith('Reader 0 <reader-0@example.test>, '),
    );

    const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}`, { token });
    assert.equal(res.status, 200);
    const answer = Buffer.from(await res.arrayBuffer());
    assert.ok(lambdaBytes(answer) < 6_000_000, `${lambdaBytes(answer)} bytes`);
    const detail = messageDetailSchema.parse(JSON.parse(answer.toString('utf8')));
    assert.deepEqual(detail.truncated, { ...NOTHING_CUT, addresses: true, attachments: true });
    assert.deepEqual(detail.addresses.from, [{ name: 'Sender', address: 'sender@example.test' }]);
    const to = detail.addresses.to;
    assert.ok(to.length > 1000 && to.length < 12_000, `${to.length} of 12,000 recipients`);
    assert.deepEqual(
      to.map((a) => a.address),
      recipients.slice(0, to.length).map((_, i) => `reader-${i}@example.test`),
    );
    assert.ok(wireBytes(detail.addresses) <= 256 * 1024);
    const attachments = detail.attachments;
    assert.ok(
      attachments.length > 300 && attachments.length < 900,
      `${attachments.length} of 900 attachments`,
    );
    assert.ok(wireBytes(attachments) <= 256 * 1024 && wireBytes(attachments) > 255 * 1024);
    assert.deepEqual(
      attachments.map((a) => a.filename),
      attachments.map((_, i) => `attachment-${i}-${'n'.repeat(240)}.txt`),
    );
    // The last listed attachment is readable; so is one beyond the list, by its part id.
    for (const partId of [attachments.at(-1)?.partId, String(attachments.length + 2)]) {
      const part = await env.request(`/v1/mailboxes/${MAILBOX}/messages/${r.id}/parts/${partId}`, { token });
      assert.equal(part.status, 200, `part ${partId}`);
    }
    // The whole subject is in the headers.
    assert.equal(detail.subject, item.subject);
    assert.equal(detail.headers.find((h) => h.name.toLowerCase() === 'subject')?.value, subject);
  });
});

describe('LIST and long-poll answers stop before they outgrow a response', () => {
  // A small budget stands for the 4 MiB default, which would take hundreds of such messages.
  const LIST_MAX_BYTES = 40 * 1024;
  let env: ApiTestEnv;
  let token: string;
  const ids: string[] = [];
  before(async () => {
    env = await startApiTestEnv({ app: { listMaxBytes: LIST_MAX_BYTES } });
    token = await env.token(MAILBOX);
  });
  after(async () => env?.close());

  it('a page stops early with a cursor for the rest: every message once, newest first', async () => {
    // Subjects of quotes: four bytes each in a Lambda response, ~4 KB per item.
    const empty = await env.request(`/v1/mailboxes/${MAILBOX}/wait?timeout=0`, { token });
    assert.equal(empty.status, 204, 'a fresh mailbox');
    // Received a millisecond apart: two received in the same millisecond (deliveries that take less,
    // on a fast machine) are listed in the order of their ids' hashed part, not in the order sent.
    const base = Date.now() - 60_000;
    for (let i = 0; i < 40; i++) {
      const subject = `${i} ${'"'.repeat(990)}`;
      const r = await env.deliver(
        [MAILBOX],
        Buffer.from(`Subject: ${subject}\r\n\r\nbody ${i}\r\n`),
        new Date(base + i),
      );
      ids.push(r.id);
    }
    const seen: string[] = [];
    let pages = 0;
    for (let cursor: string | null = null; ; ) {
      const query = cursor === null ? '' : `&cursor=${cursor}`;
      const res = await env.request(`/v1/mailboxes/${MAILBOX}/messages?limit=1000${query}`, { token });
      assert.equal(res.status, 200);
      const answer = Buffer.from(await res.arrayBuffer());
      const page = JSON.parse(answer.toString('utf8')) as {
        items: { id: string }[];
        nextCursor: string | null;
      };
      assert.ok(wireBytes(page.items) <= LIST_MAX_BYTES, `${wireBytes(page.items)} bytes of items`);
      seen.push(...page.items.map((item) => item.id));
      pages++;
      if (page.nextCursor === null) break;
      cursor = page.nextCursor;
    }
    assert.ok(pages >= 4, `${pages} pages`);
    assert.deepEqual(seen, [...ids].reverse());
  });

  it('a long-poll answer keeps the newest that fit and says truncated', async () => {
    const res = await env.request(`/v1/mailboxes/${MAILBOX}/wait?after=${ids[0]}&timeout=0`, { token });
    assert.equal(res.status, 200);
    const found = (await res.json()) as { items: { id: string }[]; truncated: boolean };
    assert.equal(found.truncated, true);
    assert.ok(found.items.length > 0 && found.items.length < 39, `${found.items.length} items`);
    assert.deepEqual(
      found.items.map((item) => item.id),
      [...ids].reverse().slice(0, found.items.length),
    );
  });

  it('following the long-poll cursor, cut answers go on where they stopped: every message once', async () => {
    const seen: string[] = [];
    let answers = 0;
    for (let cursor = '0'; ; answers++) {
      const res = await env.request(`/v1/mailboxes/${MAILBOX}/wait?cursor=${cursor}&timeout=0`, { token });
      if (res.status === 204) break;
      assert.equal(res.status, 200);
      const found = (await res.json()) as { items: { id: string }[]; truncated: boolean; cursor: string };
      assert.ok(wireBytes(found.items) <= LIST_MAX_BYTES, `${wireBytes(found.items)} bytes of items`);
      seen.push(...found.items.map((item) => item.id));
      cursor = found.cursor;
    }
    assert.ok(answers >= 4, `${answers} answers`);
    assert.deepEqual([...seen].sort(), [...ids].sort());
    assert.equal(new Set(seen).size, seen.length, 'none twice');
  });
});
