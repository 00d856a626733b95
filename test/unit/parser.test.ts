/**
 * MailparserAdapter on our own fixtures (test/fixtures): every field of the parsed summary, the
 * decoded parts and their hashes, and the malformed and pathological inputs it must survive.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import {
  formatAddressList,
  JOINED_PART_MAX_BYTES,
  MAX_HEADER_BYTES,
  MAX_MIME_PARTS,
  MailparserAdapter,
} from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import type { DecodedPart, ParsedSummary } from '../../functions/core/message.ts';
import { parsedSummarySchema, partBody, partBytes } from '../../functions/core/message.ts';
import {
  buildMessageOfSize,
  buildMessageWithAttachment,
  buildTextMessage,
  deterministicBytes,
  FIXTURE_NAMES,
  pdfLikeBytes,
  TINY_PNG,
} from '../fixtures/build.ts';

const FIXTURES = new URL('../fixtures/', import.meta.url);

const parser = new MailparserAdapter();

function fixture(name: string): Buffer {
  return readFileSync(new URL(name, FIXTURES));
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

interface Parsed {
  readonly summary: ParsedSummary;
  readonly parts: readonly DecodedPart[];
}

async function parseOk(raw: Buffer): Promise<Parsed> {
  const result = await parser.parse(raw);
  if (!result.ok) assert.fail(`expected ok, got error: ${result.error}`);
  return { summary: parsedSummarySchema.parse(result.summary), parts: result.parts };
}

function parseFixture(name: string): Promise<Parsed> {
  return parseOk(fixture(name));
}

function partContent(parsed: Parsed, partId: string): Buffer {
  const part = parsed.parts.find((p) => p.partId === partId);
  if (part === undefined) return assert.fail(`no part ${partId}`);
  return partBytes(part);
}

function headerValue(summary: ParsedSummary, name: string): string | undefined {
  return summary.headers.find((h) => h.name.toLowerCase() === name.toLowerCase())?.value;
}

describe('MailparserAdapter on every fixture', () => {
  for (const name of FIXTURE_NAMES) {
    it(`${name}: valid summary, one part per attachment, hashes match the bytes`, async () => {
      const { summary, parts } = await parseFixture(name);
      assert.equal(parts.length, summary.attachments.length);
      summary.attachments.forEach((attachment, index) => {
        assert.equal(attachment.partId, String(index + 1));
        const part = parts[index];
        assert.ok(part, `part ${attachment.partId}`);
        assert.equal(part.partId, attachment.partId);
        assert.equal(attachment.size, partBytes(part).length);
        assert.equal(attachment.sha256, sha256(partBytes(part)));
        assert.match(attachment.sha256, /^[0-9a-f]{64}$/);
      });
    });
  }

  it('gives the same summary, part ids and bytes on a second parse', async () => {
    for (const name of FIXTURE_NAMES) {
      const first = await parseFixture(name);
      const second = await parseFixture(name);
      assert.deepEqual(second, first, name);
    }
  });
});

describe('headers and addresses', () => {
  it('lists every header line in order, unfolded, names as written', async () => {
    const { summary } = await parseFixture('plain-crlf.eml');
    assert.deepEqual(
      summary.headers.map((h) => h.name),
      [
        'Return-Path',
        'Received',
        'From',
        'To',
        'Cc',
        'Reply-To',
        'Subject',
        'Date',
        'Message-ID',
        'MIME-Version',
        'Content-Type',
        'Content-Transfer-Encoding',
      ],
    );
    assert.equal(
      headerValue(summary, 'Received'),
      'from mx.example.org (mx.example.org [192.0.2.10])\tby relay.example.com with ESMTPS id 4f2a9c' +
        '\tfor <bob@example.com>; Tue, 04 Mar 2025 09:15:02 +0000',
    );
    assert.equal(headerValue(summary, 'Subject'), 'Quarterly numbers, folded onto a second line');
    for (const h of summary.headers) assert.doesNotMatch(h.value, /[\r\n]/, h.name);
  });

  it('maps subject, date, message id and address fields, flattening groups', async () => {
    const { summary } = await parseFixture('plain-crlf.eml');
    assert.equal(summary.subject, 'Quarterly numbers, folded onto a second line');
    assert.equal(summary.date, '2025-03-04T09:15:00.000Z');
    assert.equal(summary.messageId, '<plain-crlf.1@example.org>');
    assert.deepEqual(summary.from, [{ name: 'Alice Example', address: 'alice@example.org' }]);
    assert.deepEqual(summary.to, [
      { name: 'Bob', address: 'bob@example.com' },
      { name: '', address: 'carol@example.com' },
    ]);
    assert.deepEqual(summary.cc, [
      { name: '', address: 'dave@example.net' },
      { name: 'Erin, E.', address: 'erin@example.net' },
    ]);
    assert.deepEqual(summary.replyTo, [{ name: '', address: 'replies@example.org' }]);
    assert.equal(summary.text, 'Hi Bob,\n\nThe numbers follow in the next mail.\n\n-- \nAlice\n');
    assert.equal(summary.html, null);
    assert.deepEqual(summary.attachments, []);
  });

  it('parses bare-LF mail the same as CRLF mail', async () => {
    const crlf = await parseFixture('plain-crlf.eml');
    const lf = await parseFixture('bare-lf.eml');
    const withoutId = (s: ParsedSummary) => ({
      ...s,
      messageId: null,
      headers: s.headers.filter((h) => h.name !== 'Message-ID'),
    });
    assert.equal(lf.summary.messageId, '<bare-lf.1@example.org>');
    assert.deepEqual(withoutId(lf.summary), withoutId(crlf.summary));
  });

  it('keeps raw 8-bit UTF-8 in headers and body', async () => {
    const { summary } = await parseFixture('utf8-8bit.eml');
    assert.equal(summary.subject, 'Grüße aus Köln – 東京 ☕');
    assert.equal(headerValue(summary, 'Subject'), 'Grüße aus Köln – 東京 ☕');
    assert.deepEqual(summary.from, [{ name: 'Jürgen Müller', address: 'juergen@example.de' }]);
    assert.deepEqual(summary.to, [{ name: 'Zoë', address: 'zoe@example.com' }]);
    assert.equal(summary.text, 'Schöne Grüße, naïve café, 東京, emoji 🎉.\n');
  });

  it('decodes RFC 2047 encoded words in the subject and display names', async () => {
    const { summary } = await parseFixture('encoded-word-subject.eml');
    assert.equal(summary.subject, 'Re: Résumé – 東京 café');
    assert.deepEqual(summary.from, [{ name: 'André Pirard', address: 'pirard@example.be' }]);
    assert.deepEqual(summary.to, [{ name: 'Éloïse', address: 'eloise@example.fr' }]);
    // The header list is the message as written; the decoded forms are the fields above.
    assert.match(headerValue(summary, 'Subject') ?? '', /^=\?UTF-8\?B\?/);
    assert.equal(summary.date, '2025-03-12T09:00:00.000Z');
  });

  it('gives null for missing fields and for an unreadable Date (not the current time)', async () => {
    const { summary } = await parseFixture('missing-headers.eml');
    assert.equal(summary.subject, null);
    assert.equal(summary.messageId, null);
    assert.equal(summary.date, null);
    assert.deepEqual(summary.to, []);
    assert.deepEqual(summary.cc, []);
    assert.deepEqual(summary.replyTo, []);
    assert.deepEqual(summary.from, [{ name: '', address: 'nobody@example.net' }]);
    assert.equal(headerValue(summary, 'Date'), 'the day before yesterday');
  });

  it('gives null for an ISO 8601 Date on a day its month does not have (not the day after it)', async () => {
    const parse = async (date: string) =>
      (await parseOk(Buffer.from(`From: a@example.com\r\nDate: ${date}\r\n\r\nbody\r\n`))).summary.date;
    assert.equal(await parse('2026-02-29T10:00:00Z'), null);
    assert.equal(await parse('2026-04-31T09:00:00+02:00'), null);
    assert.equal(await parse('2028-02-29T10:00:00Z'), '2028-02-29T10:00:00.000Z');
  });

  it('keeps an empty Subject as an empty string, distinct from a missing one', async () => {
    const { summary } = await parseOk(Buffer.from('From: a@example.com\r\nSubject:\r\n\r\nbody\r\n'));
    assert.equal(summary.subject, '');
  });

  it('reads the header behind a byte order mark at the start of a header line (behind trace headers)', async () => {
    const bom = '\xef\xbb\xbf';
    const raw = Buffer.from(
      `Return-Path: <a@remote.test>\r\nReceived: from x by y; Thu, 6 Mar 2025 10:00:00 +0000\r\n${bom}Subject: t-bom\r\n` +
        `From: a@example.com\r\n\r\nbody with ${bom} inside\r\n`,
      'latin1',
    );
    const { summary } = await parseOk(raw);
    assert.equal(summary.subject, 't-bom');
    assert.equal(summary.text, 'body with \ufeff inside\n', 'a mark in the body is not touched');
  });

  it('keeps a BOM that is not before a field name: no header block cut short, no fold into the header above', async () => {
    const bom = '\xef\xbb\xbf';
    const alone = await parseOk(
      Buffer.from(`Subject: report\r\n${bom}\r\nX-After: yes\r\n\r\nsee attached\r\n`, 'latin1'),
    );
    assert.equal(alone.summary.text, 'see attached\n', 'a line of only a BOM does not end the headers');
    assert.ok(alone.summary.headers.some((h) => h.name === 'X-After' && h.value === 'yes'));
    const folded = await parseOk(
      Buffer.from(
        `Authentication-Results: mx; none\r\n${bom}\tdkim=pass\r\nSubject: s\r\n\r\nb\r\n`,
        'latin1',
      ),
    );
    assert.equal(
      folded.summary.headers.find((h) => h.name === 'Authentication-Results')?.value,
      'mx; none',
      'a BOM then whitespace does not continue the header above',
    );
  });
});

describe('bodies', () => {
  it('returns the text and html of multipart/alternative as sent', async () => {
    const { summary } = await parseFixture('alternative.eml');
    assert.equal(summary.text, 'Hello Bob, this is the plain text version.\n');
    assert.equal(
      summary.html,
      '<html><body><p>Hello <b>Bob</b>, this is the HTML version.</p></body></html>\n',
    );
    assert.equal(summary.date, '2025-03-06T19:30:00.000Z');
    assert.deepEqual(summary.attachments, []);
  });

  it('decodes quoted-printable: escapes, soft line breaks, encoded trailing space', async () => {
    const { summary } = await parseFixture('quoted-printable.eml');
    assert.equal(
      summary.text,
      'Price: 10 €, equation a=b.\n' +
        'This is a long line that was wrapped with a soft line break so that it stays under seventy-six characters.\n' +
        'Trailing space kept here: \n' +
        'Café crème brûlée\n',
    );
  });

  it('keeps lines that begin with dots exactly', async () => {
    const { summary } = await parseFixture('dot-leading.eml');
    assert.deepEqual(summary.text?.split('\n'), [
      'First line.',
      '.hidden file name at the start of a line',
      '..two dots at the start',
      '.',
      '. a dot and a space',
      '...',
      'Last line.',
      '',
    ]);
  });
});

describe('attachments and parts', () => {
  it('decodes a base64 binary attachment byte for byte', async () => {
    const parsed = await parseFixture('mixed-attachment.eml');
    const expectedPdf = pdfLikeBytes(3000, 42);
    assert.deepEqual(parsed.summary.attachments, [
      {
        partId: '1',
        filename: 'report.pdf',
        contentType: 'application/pdf',
        size: 3000,
        sha256: sha256(expectedPdf),
        contentId: null,
        disposition: 'attachment',
        charset: null,
      },
      {
        partId: '2',
        filename: 'data.csv',
        contentType: 'text/csv',
        size: 34,
        sha256: sha256(Buffer.from('region,total\r\nnorth,12\r\nsouth,30\r\n')),
        contentId: null,
        disposition: 'attachment',
        // A text part's declared charset (the fixture's is us-ascii): its bytes are kept as sent.
        charset: 'us-ascii',
      },
    ]);
    assert.ok(partContent(parsed, '1').equals(expectedPdf));
    assert.equal(partContent(parsed, '2').toString('latin1'), 'region,total\r\nnorth,12\r\nsouth,30\r\n');
    assert.equal(parsed.summary.text, 'The report and the raw data are attached.\n');
  });

  it('hands a small part over as one Buffer and a large one as its decoded chunks, never joined', async () => {
    const big = pdfLikeBytes(JOINED_PART_MAX_BYTES * 3, 7);
    const raw = await buildMessageWithAttachment({ subject: 'chunks', attachmentBytes: big });
    const result = await new MailparserAdapter().parse(raw);
    assert.ok(result.ok);
    const [part] = result.parts;
    assert.ok(part !== undefined && !Buffer.isBuffer(part.content), 'a large part stays in chunks');
    assert.ok(part.content.length > 1);
    assert.ok(partBytes(part).equals(big));
    assert.deepEqual(
      [result.summary.attachments[0]?.size, result.summary.attachments[0]?.sha256],
      [big.length, sha256(big)],
    );
    // What the router stores: a byte stream of exactly those bytes.
    const body = partBody(part);
    assert.ok(body instanceof Readable);
    const streamed: Buffer[] = [];
    for await (const chunk of body) streamed.push(chunk as Buffer);
    assert.ok(Buffer.concat(streamed).equals(big));

    const small = (await parseFixture('mixed-attachment.eml')).parts[0];
    assert.ok(small !== undefined && Buffer.isBuffer(small.content) && partBody(small) === small.content);
  });

  it('keeps an inline image as a part with its Content-ID and leaves cid: links in the html', async () => {
    const parsed = await parseFixture('related-inline-image.eml');
    assert.deepEqual(parsed.summary.attachments, [
      {
        partId: '1',
        filename: 'logo.png',
        contentType: 'image/png',
        size: TINY_PNG.length,
        sha256: sha256(TINY_PNG),
        contentId: '<logo@example.org>',
        disposition: 'inline',
        charset: null,
      },
    ]);
    assert.ok(partContent(parsed, '1').equals(TINY_PNG));
    assert.match(parsed.summary.html ?? '', /src="cid:logo@example\.org"/);
    assert.doesNotMatch(parsed.summary.html ?? '', /data:image/);
    // mailparser only derives text from html that is the root part or beside a text part.
    assert.equal(parsed.summary.text, null);
  });

  it('keeps an attached message/rfc822 whole, as a part that parses on its own', async () => {
    const parsed = await parseFixture('attached-message.eml');
    const [attachment] = parsed.summary.attachments;
    assert.equal(parsed.summary.attachments.length, 1);
    assert.equal(attachment?.contentType, 'message/rfc822');
    assert.equal(attachment?.filename, 'forwarded.eml');
    assert.equal(attachment?.disposition, 'attachment');
    assert.equal(parsed.summary.text, 'See the message below.\n');
    const inner = await parseOk(partContent(parsed, '1'));
    assert.equal(inner.summary.subject, 'Original question');
    assert.equal(inner.summary.messageId, '<original.1@example.com>');
    assert.equal(inner.summary.text, 'Could you send me the numbers?\n');
  });
});

describe('malformed and hostile input never throws', () => {
  it('without a header/body separator, reads the headers and keeps the body lines as nameless headers', async () => {
    const { summary } = await parseFixture('malformed-no-separator.eml');
    assert.equal(summary.subject, 'No blank line after the headers');
    assert.equal(summary.date, '2025-03-13T12:00:00.000Z');
    assert.deepEqual(summary.to, [{ name: '', address: 'rcpt@example.com' }]);
    assert.equal(summary.text, null);
    assert.deepEqual(summary.headers.slice(-2), [
      { name: '', value: 'This line should have been the body.' },
      { name: '', value: 'And so should this one.' },
    ]);
  });

  it('with an unterminated boundary, keeps every part up to the end of the input', async () => {
    const parsed = await parseFixture('malformed-unterminated-boundary.eml');
    assert.equal(parsed.summary.text, 'The text part is complete.\n');
    assert.equal(parsed.summary.attachments.length, 1);
    assert.equal(parsed.summary.attachments[0]?.filename, 'notes.txt');
    assert.equal(
      partContent(parsed, '1').toString(),
      "The sender's MTA cut the message off here, before the closing boundary\r\n",
    );
  });

  it('guesses the type of an attachment whose Content-Type is empty from its file name', async () => {
    // Seen in real spam (flanker/spam/broken-ctype.eml): mailparser reports the type as `false`.
    const raw = [
      'Content-Type: multipart/mixed; boundary=b',
      '',
      '--b',
      'Content-Type: text/plain',
      '',
      'see picture',
      '--b',
      'Content-Type: ; name="face.jpg"',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: attachment; filename="face.jpg"',
      '',
      TINY_PNG.toString('base64'),
      '--b--',
      '',
    ].join('\r\n');
    const parsed = await parseOk(Buffer.from(raw));
    assert.equal(parsed.summary.attachments[0]?.contentType, 'image/jpeg');
    assert.equal(parsed.summary.attachments[0]?.filename, 'face.jpg');
    assert.ok(partContent(parsed, '1').equals(TINY_PNG));
  });

  it('parses empty input and random bytes as (empty) messages', async () => {
    const empty = await parseOk(Buffer.alloc(0));
    assert.deepEqual(empty.summary.headers, []);
    assert.equal(empty.summary.text, null);
    await parseOk(deterministicBytes(64 * 1024, 3));
  });

  it('reads CR-only line endings as line breaks', async () => {
    const { summary } = await parseOk(Buffer.from('From: a@example.com\rSubject: old Mac\r\rbody\r'));
    assert.equal(summary.subject, 'old Mac');
    assert.equal(summary.text, 'body\n');
  });

  it('reads a CR-only message as stored: behind CRLF trace headers, ended by SMTP’s CRLF', async () => {
    const crlf = await parseFixture('plain-crlf.eml');
    const trace = Buffer.from(
      'Received: from mx ([127.0.0.1])\r\n\tby relay (mail-relay) with ESMTP id x;\r\n\tTue, 04 Mar 2025 09:15:03 +0000\r\nAuthentication-Results: relay; none\r\n',
    );
    const withoutId = (s: ParsedSummary) => ({
      ...s,
      messageId: null,
      headers: s.headers.filter(
        (h) => !['Message-ID', 'Received', 'Authentication-Results'].includes(h.name),
      ),
    });
    for (const ending of ['', '\r\n']) {
      const stored = Buffer.concat([trace, fixture('cr-only.eml'), Buffer.from(ending)]);
      const { summary } = await parseOk(stored);
      assert.equal(summary.messageId, '<cr-only.1@example.org>', JSON.stringify(ending));
      assert.deepEqual(withoutId(summary), withoutId(crlf.summary), JSON.stringify(ending));
    }
  });

  it('keeps a bare CR in the body of a CRLF message (only CR-only messages are read by CR)', async () => {
    const { summary } = await parseOk(Buffer.from('Subject: s\r\n\r\nbody\rmore\r\nlast\rtail'));
    assert.equal(summary.subject, 's');
    assert.equal(summary.text, 'body\rmore\nlast\rtail');
  });

  it('reads 8-bit header bytes that are not UTF-8 in the charset of the message or part, else Windows-1252 (they were U+FFFDs)', async () => {
    const latin1 = (t: string) => Buffer.from(t, 'latin1');
    const gb = Buffer.from('c8abd0c2d4add7b0', 'hex'); // 全新原装 in GB2312
    const big5 = Buffer.from('a4e9a5bb', 'hex'); // 日本 in Big5
    const message = Buffer.concat([
      latin1('From: "'),
      gb,
      latin1('" <a@example.cn>\r\nSubject: '),
      gb,
      latin1(
        '\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n\tboundary="b1"\r\n\r\n--b1\r\n' +
          'Content-Type: text/plain; charset=gb2312\r\n\r\nbody\r\n--b1\r\nContent-Type: multipart/mixed; boundary=b2\r\n\r\n' +
          '--b2\r\nContent-Type: text/plain; charset=big5; name="',
      ),
      big5,
      latin1('.txt"\r\nContent-Disposition: attachment; filename="'),
      big5,
      latin1('.txt"\r\n\r\nx\r\n--b2\r\nContent-Type: image/png; name="'),
      gb,
      latin1('.png"\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b2--\r\n--b1--\r\n'),
    ]);
    const { summary } = await parseOk(message);
    // The message declares no charset of its own: the first a part declares.
    assert.equal(summary.subject, '全新原装');
    assert.deepEqual(summary.from, [{ name: '全新原装', address: 'a@example.cn' }]);
    assert.equal(summary.headers.find((h) => h.name === 'Subject')?.value, '全新原装');
    // A part's own charset for its file name, else the message's; in nested multiparts too.
    assert.deepEqual(
      summary.attachments.map((a) => a.filename),
      ['日本.txt', '全新原装.png'],
    );
  });

  it('reads Latin-1 and Windows-1252 header bytes (no charset, or us-ascii declared), and UTF-8 cut off mid-character, as mail readers do', async () => {
    const latin1 = (t: string) => Buffer.from(t, 'latin1');
    const plain = await parseOk(
      latin1(
        'From: "Ingo L\xfctkebohle" <ingo@example.de>\r\nSubject: Don\x92t \x93quote\x94 \x85\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nx\r\n',
      ),
    );
    assert.deepEqual(plain.summary.from, [{ name: 'Ingo Lütkebohle', address: 'ingo@example.de' }]);
    assert.equal(plain.summary.subject, 'Don’t “quote” …');
    // Yahoo cuts a long file name to a byte count, through a character: the rest is still UTF-8.
    const cut = Buffer.concat([
      latin1(
        'Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png; name="',
      ),
      Buffer.from('Картинка чт', 'utf8'),
      Buffer.from([0xd0]),
      latin1('"\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n'),
    ]);
    assert.deepEqual(
      (await parseOk(cut)).summary.attachments.map((a) => a.filename),
      ['Картинка чт'],
    );
    // Valid UTF-8, a U+FFFD written as such included, and 7-bit headers are left to the parser as they are.
    const utf8 = await parseOk(Buffer.from('Subject: Grüße phone\ufffd\r\n\r\nx\r\n', 'utf8'));
    assert.equal(utf8.summary.subject, 'Grüße phone\ufffd');
  });

  it('reads encoded words in a charset no decoder knows, or in utf-8 that is not, as mail readers do (they were U+FFFDs)', async () => {
    const subjectOf = async (subject: string) =>
      (await parseOk(Buffer.from(`Subject: ${subject}\r\n\r\nx\r\n`, 'latin1'))).summary.subject;
    for (const word of [
      '=?unknown-8bit?Q?caf=E9?=',
      '=?x-user-defined?B?Y2Fm6Q==?=',
      '=?x-unknown?Q?caf=E9?=',
      '=?utf-8?Q?caf=E9?=',
      '=?UTF-8?Q?caf=C3=A9?=',
    ]) {
      assert.equal(await subjectOf(word), 'café', word);
    }
    // Windows-1252's own characters, UTF-8 mixed in, a character split between two words, text around.
    assert.equal(await subjectOf('=?unknown-8bit?Q?=93q=94_na=C3=AFve?= x'), '“q” naïve x');
    assert.equal(
      await subjectOf('=?UTF-8?Q?=E6=97?= =?UTF-8?Q?=A5?= and =?unknown-8bit?Q?=E9?='),
      '日 and é',
    );
    // Display names and attachment names too.
    const parsed = await parseOk(
      Buffer.from(
        'From: =?unknown-8bit?Q?Jos=E9?= <jose@remote.test>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n' +
          '--b\r\nContent-Type: application/pdf; name="=?utf-8?Q?r=E9sum=E9.pdf?="\r\n' +
          'Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n',
        'latin1',
      ),
    );
    assert.deepEqual(parsed.summary.from, [{ name: 'José', address: 'jose@remote.test' }]);
    assert.deepEqual(
      parsed.summary.attachments.map((a) => a.filename),
      ['résumé.pdf'],
    );
    // A charset the parser's decoder knows is left to it, whatever is beside it.
    assert.equal(await subjectOf('=?cp850?Q?caf=82?= =?utf-8?Q?x?='), 'caféx');
    // Text that only looks like an encoded word, in a part with no header fields, is body: as sent.
    const bodyOnly = await parseOk(
      Buffer.from(
        'Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n' +
          'RFC 2047 example: =?utf-8?Q?caf=E9?= is wrong\r\n--b--\r\n',
        'latin1',
      ),
    );
    assert.match(bodyOnly.summary.text ?? '', /RFC 2047 example: =\?utf-8\?Q\?caf=E9\?= is wrong/);
  });

  it('answers ok:false past the header-size and part-count limits', async () => {
    const bigHeader = await parser.parse(Buffer.from(`Subject: ${'x'.repeat(MAX_HEADER_BYTES)}\r\n\r\nbody`));
    assert.equal(bigHeader.ok, false);
    let manyParts = 'Content-Type: multipart/mixed; boundary=b\r\n\r\n';
    for (let i = 0; i <= MAX_MIME_PARTS; i++) manyParts += `--b\r\nContent-Type: text/plain\r\n\r\n${i}\r\n`;
    const many = await parser.parse(Buffer.from(`${manyParts}--b--\r\n`));
    assert.equal(many.ok, false);
    if (!many.ok) assert.match(many.error, /child nodes/);
  });

  it('keeps the html but leaves text empty when the html is too long to convert', async () => {
    const small = new MailparserAdapter({ maxHtmlLengthToParse: 1000 });
    const html = `<p>${'word '.repeat(400)}</p>`;
    const result = await small.parse(Buffer.from(`Content-Type: text/html\r\n\r\n${html}`));
    assert.ok(result.ok);
    assert.equal(result.summary.html, html);
    assert.equal(result.summary.text, '');
  });

  it('gives up with ok:false when the parse outlasts the timeout', async () => {
    const { raw } = await buildMessageOfSize(8 * 1024 * 1024, 5);
    const result = await new MailparserAdapter({ timeoutMs: 1 }).parse(raw);
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.error, /timed out/);
  });

  it('rejects invalid options when constructed', () => {
    assert.throws(() => new MailparserAdapter({ timeoutMs: 0 }), RangeError);
    assert.throws(() => new MailparserAdapter({ maxHtmlLengthToParse: Number.NaN }), RangeError);
  });
});

describe('built messages (test/fixtures/build.ts)', () => {
  it('are deterministic', async () => {
    assert.ok((await buildTextMessage()).equals(await buildTextMessage()));
    const bytes = deterministicBytes(1000, 9);
    assert.ok(
      (await buildMessageWithAttachment({ attachmentBytes: bytes })).equals(
        await buildMessageWithAttachment({ attachmentBytes: bytes }),
      ),
    );
  });

  it('carry an inline image with a Content-ID into a part', async () => {
    const raw = await buildMessageWithAttachment({
      attachmentBytes: TINY_PNG,
      filename: 'logo.png',
      contentType: 'image/png',
      cid: 'logo@example.org',
      html: '<img src="cid:logo@example.org">',
    });
    const parsed = await parseOk(raw);
    assert.equal(parsed.summary.attachments[0]?.contentId, '<logo@example.org>');
    assert.equal(parsed.summary.attachments[0]?.disposition, 'inline');
    assert.ok(partContent(parsed, '1').equals(TINY_PNG));
  });

  it('survive at 20 MB: size close to the target, attachment bytes intact', async () => {
    const target = 20 * 1024 * 1024;
    const { raw, attachmentBytes } = await buildMessageOfSize(target, 11);
    assert.ok(raw.length <= target && raw.length > target - 4096, `built ${raw.length} bytes`);
    const parsed = await parseOk(raw);
    assert.equal(parsed.summary.attachments[0]?.size, attachmentBytes.length);
    assert.equal(parsed.summary.attachments[0]?.sha256, sha256(attachmentBytes));
    assert.ok(partContent(parsed, '1').equals(attachmentBytes));
  });
});

describe('formatAddressList', () => {
  it('formats names and bare addresses for display', () => {
    assert.equal(
      formatAddressList([
        { name: 'Name', address: 'a@b' },
        { name: '', address: 'c@d' },
      ]),
      'Name <a@b>, c@d',
    );
  });

  it('quotes names that would otherwise split the list', () => {
    assert.equal(
      formatAddressList([
        { name: 'Erin, E.', address: 'erin@example.net' },
        { name: 'Say "hi"', address: 'x@y' },
      ]),
      '"Erin, E." <erin@example.net>, "Say \\"hi\\"" <x@y>',
    );
  });

  it('handles a name without an address and an empty list', () => {
    assert.equal(formatAddressList([{ name: 'Undisclosed', address: '' }]), 'Undisclosed');
    assert.equal(formatAddressList([]), '');
  });
});
