/**
 * The forward rewrite (functions/core/forward-rewrite.ts) and the header-block tools under it, on
 * our fixtures and on the shared corpus: the header block as a forwarding user's mail provider
 * will see it, and the body byte for byte.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  checkLoop,
  type ForwardRewriteOptions,
  MAX_FORWARD_HOPS,
  rewriteForForward,
  SES_SINGLE_FIELDS,
} from '../../functions/core/forward-rewrite.ts';
import {
  decodeHeaderText,
  encodePhrase,
  encodeWords,
  fieldValue,
  findField,
  parseAddressList,
  splitMessage,
} from '../../functions/core/mime-header.ts';
import { corpusDir, corpusFiles, requireOrAnnounce } from '../helpers/env.ts';

const FIXTURES = new URL('../fixtures/', import.meta.url);
const fixture = (name: string): Buffer => readFileSync(new URL(name, FIXTURES));

const OPTIONS: ForwardRewriteOptions = {
  fromAddress: 'forwarder@example.com',
  recipient: 'boss@example.com',
  destination: 'boss.private@gmail.test',
  loopMarker: 'forwarder@example.com',
  envelopeFrom: 'bounce-123@lists.example.org',
  tags: [],
};

/** The header block of a message as text, and its body bytes (split at the first empty line). */
function parts(raw: Buffer): { head: string; body: Buffer } {
  const crlf = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  const end = crlf >= 0 && (lf < 0 || crlf + 2 <= lf) ? crlf + 4 : lf + 2;
  assert.ok(end > 1, 'the message has an empty line');
  return { head: raw.toString('latin1', 0, end), body: raw.subarray(end) };
}

function headerValues(raw: Buffer, name: string): string[] {
  return splitMessage(raw)
    .fields.filter((f) => f.key === name.toLowerCase())
    .map(fieldValue);
}

describe('rewriteForForward: the header block a forwarding user receives', () => {
  it('plain-crlf.eml: exactly these headers, body untouched', () => {
    const raw = fixture('plain-crlf.eml');
    const out = rewriteForForward(raw, OPTIONS);
    const expected = [
      'X-Loop: forwarder@example.com',
      'X-Forwarded-For: boss@example.com boss.private@gmail.test',
      'X-Forwarded-To: boss.private@gmail.test',
      'X-Original-From: Alice Example <alice@example.org>',
      'Received: from mx.example.org (mx.example.org [192.0.2.10])',
      '\tby relay.example.com with ESMTPS id 4f2a9c',
      '\tfor <bob@example.com>; Tue, 04 Mar 2025 09:15:02 +0000',
      'From: "Alice Example via example.com" <forwarder@example.com>',
      'To: Bob <bob@example.com>, carol@example.com',
      'Cc: Project Team: dave@example.net, "Erin, E." <erin@example.net>;',
      // The message has its own Reply-To: it wins over the original From.
      'Reply-To: replies@example.org',
      'Subject: Quarterly numbers,',
      ' folded onto a second line',
      'Date: Tue, 04 Mar 2025 10:15:00 +0100',
      'Message-ID: <plain-crlf.1@example.org>',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=us-ascii',
      'Content-Transfer-Encoding: 7bit',
      '',
      '',
    ].join('\r\n');
    assert.equal(parts(out.raw).head, expected);
    assert.deepEqual(parts(out.raw).body, parts(raw).body);
    assert.equal(out.displayName, 'Alice Example via example.com');
    assert.equal(out.replyTo, null);
    assert.deepEqual(out.originalFrom, { name: 'Alice Example', address: 'alice@example.org' });
  });

  it('forward-headers.eml: strips what SES refuses or a sender could abuse; binary body intact', () => {
    const raw = fixture('forward-headers.eml');
    const out = rewriteForForward(raw, OPTIONS);
    const { head, body } = parts(out.raw);
    for (const gone of [
      'Return-Path',
      'Sender',
      'DKIM-Signature',
      'X-SES-CONFIGURATION-SET',
      'X-SES-MESSAGE-TAGS',
      'Bcc',
    ]) {
      assert.deepEqual(headerValues(out.raw, gone), [], `${gone} removed`);
    }
    // The forged "clean" verdict is gone, and untagged mail carries none of ours.
    assert.deepEqual(headerValues(out.raw, 'X-Mail-Relay-Verdict'), []);
    assert.deepEqual(headerValues(out.raw, 'Message-ID'), ['<forward-headers.1@example.org>']);
    assert.deepEqual(headerValues(out.raw, 'X-Loop'), ['forwarder@example.com', 'lists.example.org']);
    assert.deepEqual(headerValues(out.raw, 'ARC-Seal'), [
      'i=1; a=rsa-sha256; cv=none; d=example.org; s=arc; b=AAAA',
    ]);
    assert.deepEqual(headerValues(out.raw, 'From'), [
      '"Doe, John \\"JD\\" via example.com" <forwarder@example.com>',
    ]);
    assert.deepEqual(parseAddressList(headerValues(out.raw, 'From')[0] ?? ''), [
      { name: 'Doe, John "JD" via example.com', address: 'forwarder@example.com' },
    ]);
    assert.deepEqual(headerValues(out.raw, 'Reply-To'), ['"Doe, John \\"JD\\"" <john.doe@example.org>']);
    assert.deepEqual(headerValues(out.raw, 'X-Original-From'), [
      '"Doe, John \\"JD\\"" <john.doe@example.org>',
    ]);
    assert.match(head, /^X-Loop: forwarder@example\.com\r\n/);
    assert.deepEqual(body, parts(raw).body);
    assert.equal(new Set(body).size, 256, 'every byte value survives');
  });

  it('8-bit UTF-8 and encoded-word names become an encoded-word From that decodes to "<name> via <domain>"', () => {
    for (const [file, name] of [
      ['utf8-8bit.eml', 'Jürgen Müller'],
      ['encoded-word-subject.eml', 'André Pirard'],
    ] as const) {
      const raw = fixture(file);
      const out = rewriteForForward(raw, OPTIONS);
      const from = headerValues(out.raw, 'From')[0] ?? '';
      assert.match(
        from,
        /^=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=( =\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=)* <forwarder@example\.com>$/,
      );
      assert.deepEqual(parseAddressList(from), [
        { name: `${name} via example.com`, address: 'forwarder@example.com' },
      ]);
      // The original From goes along exactly as written (8-bit bytes and encoded words alike).
      const originalFrom = findField(splitMessage(raw).fields, 'from');
      assert.ok(originalFrom);
      assert.deepEqual(headerValues(out.raw, 'X-Original-From'), [fieldValue(originalFrom)]);
      assert.deepEqual(headerValues(out.raw, 'Reply-To'), [fieldValue(originalFrom)]);
      assert.deepEqual(parts(out.raw).body, parts(raw).body);
    }
  });

  it('a From of an RFC 6532 address (UTF-8 bytes) without a name: "<address> via <domain>" in UTF-8, not Latin-1 mojibake', () => {
    for (const from of ['jd\u00f6e@m\u00e4chine.example', '<jd\u00f6e@m\u00e4chine.example>']) {
      const raw = Buffer.from(`From: ${from}\r\nSubject: x\r\n\r\nbody\r\n`, 'utf8');
      const out = rewriteForForward(raw, OPTIONS);
      // Before: `jdÃ¶e@mÃ¤chine.example via example.com`.
      assert.equal(out.displayName, 'jd\u00f6e@m\u00e4chine.example via example.com', from);
      assert.deepEqual(out.originalFrom, { name: '', address: 'jd\u00f6e@m\u00e4chine.example' });
      assert.deepEqual(parseAddressList(headerValues(out.raw, 'From')[0] ?? ''), [
        { name: 'jd\u00f6e@m\u00e4chine.example via example.com', address: 'forwarder@example.com' },
      ]);
    }
  });

  it('bare-LF messages get bare-LF headers: not one CR is added', () => {
    const raw = fixture('bare-lf.eml');
    const out = rewriteForForward(raw, { ...OPTIONS, tags: ['spam'] });
    assert.ok(!out.raw.includes(13), 'no CR anywhere');
    assert.deepEqual(parts(out.raw).body, parts(raw).body);
    assert.match(parts(out.raw).head, /\nSubject: \[SPAM\] Quarterly numbers,\n folded onto a second line\n/);
  });

  it('a message without a blank line after its headers gets one, and keeps every body line', () => {
    const raw = fixture('malformed-no-separator.eml');
    const out = rewriteForForward(raw, OPTIONS);
    const text = out.raw.toString('latin1');
    assert.ok(
      text.endsWith(
        'Message-ID: <malformed-no-separator.1@example.com>\r\n\r\nThis line should have been the body.\r\nAnd so should this one.\r\n',
      ),
      text,
    );
  });

  it('a message without Date or Message-ID gets ours (Gmail refuses mail without a Message-ID); one with them keeps its own', () => {
    const missing = {
      date: new Date(Date.UTC(2025, 2, 4, 9, 15, 2)),
      messageId: '<01JN.forwarded@example.com>',
    };
    const bare = Buffer.from('From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n');
    const out = rewriteForForward(bare, { ...OPTIONS, missing });
    assert.deepEqual(headerValues(out.raw, 'Date'), ['Tue, 04 Mar 2025 09:15:02 +0000']);
    assert.deepEqual(headerValues(out.raw, 'Message-ID'), ['<01JN.forwarded@example.com>']);
    assert.deepEqual(parts(out.raw).body, Buffer.from('body\r\n'));
    const own = rewriteForForward(fixture('plain-crlf.eml'), { ...OPTIONS, missing });
    assert.deepEqual(
      headerValues(own.raw, 'Message-ID'),
      headerValues(fixture('plain-crlf.eml'), 'Message-ID'),
    );
    assert.deepEqual(headerValues(own.raw, 'Date'), headerValues(fixture('plain-crlf.eml'), 'Date'));
    // Bare-LF mail gets them with its own line ends.
    const lf = rewriteForForward(Buffer.from('Subject: x\n\nbody\n'), { ...OPTIONS, missing });
    assert.ok(!lf.raw.includes(13), 'no CR anywhere');
    assert.deepEqual(headerValues(lf.raw, 'Message-ID'), ['<01JN.forwarded@example.com>']);
  });

  it('tagged mail: subject prefix per verdict and X-Mail-Relay-Verdict with the verdicts', () => {
    const verdicts = {
      spam: 'FAIL',
      virus: 'PASS',
      spf: 'PASS',
      dkim: 'GRAY',
      dmarc: 'FAIL',
      dmarcPolicy: 'QUARANTINE',
    };
    const out = rewriteForForward(fixture('plain-crlf.eml'), {
      ...OPTIONS,
      tags: ['spam', 'dmarc'],
      verdicts,
    });
    assert.deepEqual(headerValues(out.raw, 'Subject'), [
      '[SPAM][DMARC-FAIL] Quarterly numbers, folded onto a second line',
    ]);
    assert.deepEqual(headerValues(out.raw, 'X-Mail-Relay-Verdict'), [
      'spam=FAIL; virus=PASS; spf=PASS; dkim=GRAY; dmarc=FAIL; dmarc-policy=QUARANTINE; tagged=spam,dmarc',
    ]);
    // A message without a Subject still shows the tag where the reader looks.
    const none = rewriteForForward(fixture('missing-headers.eml'), { ...OPTIONS, tags: ['virus'] });
    assert.deepEqual(headerValues(none.raw, 'Subject'), ['[VIRUS]']);
  });

  it("a route's subjectPrefix: as written, after the verdict tags, spaced from an encoded word, alone when there is no Subject", () => {
    const subject = (raw: string, options: Partial<ForwardRewriteOptions>) =>
      headerValues(rewriteForForward(Buffer.from(raw), { ...OPTIONS, ...options }).raw, 'Subject');
    const plain = 'From: a@example.org\r\nSubject: Hello\r\n\r\nbody\r\n';
    assert.deepEqual(subject(plain, { subjectPrefix: '[info] ' }), ['[info] Hello']);
    // As aws-lambda-ses-forwarder puts its subjectPrefix: nothing added to what the user wrote.
    assert.deepEqual(subject(plain, { subjectPrefix: 'Fwd:' }), ['Fwd:Hello']);
    assert.deepEqual(subject(plain, { subjectPrefix: '[info] ', tags: ['spam'] }), ['[SPAM] [info] Hello']);
    // RFC 2047 §5: an encoded word must be apart from other text, or readers show it undecoded.
    const encoded = 'From: a@example.org\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\nbody\r\n';
    const [value] = subject(encoded, { subjectPrefix: '[info]' });
    assert.equal(value, '[info] =?UTF-8?B?R3LDvMOfZQ==?=');
    assert.equal(decodeHeaderText(value ?? ''), '[info] Grüße');
    assert.deepEqual(subject('From: a@example.org\r\n\r\nbody\r\n', { subjectPrefix: '[info] ' }), [
      '[info]',
    ]);
    assert.deepEqual(
      subject('From: a@example.org\r\n\r\nbody\r\n', { subjectPrefix: '[info] ', tags: ['spam'] }),
      ['[SPAM] [info]'],
    );
  });

  it('From forms: comment name, bare address, no From at all (Reply-To from the envelope)', () => {
    const make = (from: string | null) =>
      Buffer.from(
        `${from === null ? '' : `From: ${from}\r\n`}To: boss@example.com\r\nSubject: x\r\n\r\nbody\r\n`,
        'latin1',
      );
    const cases: [string | null, string, string | null][] = [
      [
        'alice@example.org (Alice Example)',
        'Alice Example via example.com',
        'alice@example.org (Alice Example)',
      ],
      ['alice@example.org', 'alice@example.org via example.com', 'alice@example.org'],
      ['<alice@example.org>', 'alice@example.org via example.com', '<alice@example.org>'],
      ['"" <alice@example.org>', 'alice@example.org via example.com', '"" <alice@example.org>'],
      [null, 'bounce-123@lists.example.org via example.com', '<bounce-123@lists.example.org>'],
    ];
    for (const [from, display, replyTo] of cases) {
      const out = rewriteForForward(make(from), OPTIONS);
      assert.equal(out.displayName, display, String(from));
      assert.deepEqual(headerValues(out.raw, 'From'), [`"${display}" <forwarder@example.com>`], String(from));
      assert.deepEqual(headerValues(out.raw, 'Reply-To'), replyTo === null ? [] : [replyTo], String(from));
    }
  });

  it('a display name cannot smuggle a line break or an unbounded length into the new From', () => {
    const evil = `=?UTF-8?B?${Buffer.from('Eve\r\nBcc: victim@example.net\r\n').toString('base64')}?= <eve@example.net>`;
    const out = rewriteForForward(Buffer.from(`From: ${evil}\r\n\r\nx\r\n`), OPTIONS);
    assert.equal(out.displayName, 'Eve Bcc: victim@example.net via example.com');
    assert.deepEqual(headerValues(out.raw, 'Bcc'), []);
    const long = rewriteForForward(
      Buffer.from(`From: "${'A'.repeat(5000)}" <a@example.net>\r\n\r\nx\r\n`),
      OPTIONS,
    );
    assert.ok(long.displayName.length < 200);
  });

  it('drops an mbox "From " line and a byte order mark before the headers', () => {
    const raw = Buffer.from(
      '\xef\xbb\xbfFrom: a@example.net\r\nFrom a@example.net  Tue Mar  4 10:00:00 2025\r\nSubject: s\r\n\r\nbody\r\n',
      'latin1',
    );
    const out = rewriteForForward(raw, OPTIONS);
    assert.deepEqual(headerValues(out.raw, 'X-Original-From'), ['a@example.net']);
    assert.ok(!out.raw.includes('From a@example.net  Tue'));
    assert.ok(!out.raw.includes(Buffer.from([0xef, 0xbb, 0xbf])));
  });

  it('a fold that lost its whitespace stays in the header block, and the fields after it too', () => {
    const raw = Buffer.from(
      'Subject: s\r\nX-Broken: a\r\nbroken continuation\r\nFrom: a@example.net\r\n\r\nbody\r\n',
    );
    const split = splitMessage(raw);
    assert.deepEqual(
      split.fields.map((f) => f.name),
      ['Subject', 'X-Broken', 'From'],
    );
    assert.deepEqual(split.body, Buffer.from('body\r\n'));
  });
});

describe('checkLoop: never forward what has been through us, or is going round', () => {
  it("our X-Loop (any case, any position) is a loop; someone else's is not", () => {
    assert.deepEqual(checkLoop(fixture('forward-headers.eml'), 'forwarder@example.com'), {
      loop: false,
      hops: 1,
    });
    const again = rewriteForForward(fixture('forward-headers.eml'), OPTIONS).raw;
    assert.deepEqual(checkLoop(again, 'Forwarder@Example.com'), { loop: true, reason: 'x-loop', hops: 1 });
  });

  it(`more than ${MAX_FORWARD_HOPS} Received headers is a loop`, () => {
    const hops = (n: number) =>
      Buffer.from(
        `${'Received: from a by b; Tue, 04 Mar 2025 10:00:00 +0000\r\n'.repeat(n)}Subject: s\r\n\r\nx\r\n`,
      );
    assert.deepEqual(checkLoop(hops(MAX_FORWARD_HOPS), 'f@example.com'), {
      loop: false,
      hops: MAX_FORWARD_HOPS,
    });
    assert.deepEqual(checkLoop(hops(MAX_FORWARD_HOPS + 1), 'f@example.com'), {
      loop: true,
      reason: 'hops',
      hops: MAX_FORWARD_HOPS + 1,
    });
  });

  it('Received lines in the body do not count', () => {
    const raw = Buffer.from(`Subject: s\r\n\r\n${'Received: from a by b\r\n'.repeat(100)}`);
    assert.deepEqual(checkLoop(raw, 'f@example.com'), { loop: false, hops: 0 });
  });
});

describe('header text: RFC 2047 encoded words and address lists', () => {
  it('decodes B and Q words in several charsets, joining adjacent words', () => {
    assert.equal(decodeHeaderText('=?ISO-8859-1?Q?Andr=E9?= Pirard'), 'André Pirard');
    assert.equal(decodeHeaderText('=?UTF-8?B?w4lsb8Ovc2U=?= =?UTF-8?Q?_et_moi?='), 'Éloïse et moi');
    assert.equal(decodeHeaderText('=?x-unknown?Q?abc?= stays'), '=?x-unknown?Q?abc?= stays');
    assert.equal(decodeHeaderText(Buffer.from('Grüße', 'utf8').toString('latin1')), 'Grüße');
  });

  it('decodes a character split across adjacent encoded words, and Windows-1252 at 0x80–0x9F (they were U+FFFDs, C1 controls)', () => {
    // 日本 (E6 97 A5 E6 9C AC) cut inside its first character, as many mailers cut long words.
    assert.equal(decodeHeaderText('=?UTF-8?B?5pel5g==?= =?UTF-8?B?nKw=?='), '日本');
    assert.equal(decodeHeaderText('=?utf-8?Q?=E6=97?=\r\n =?UTF-8?Q?=A5=E6=9C=AC?= x'), '日本 x');
    // A word of another charset between them is decoded on its own.
    assert.equal(decodeHeaderText('=?ISO-8859-1?Q?caf=E9?= =?UTF-8?Q?_=E2=82=AC?='), 'café €');
    assert.equal(decodeHeaderText('=?x-unknown?Q?a?= =?utf-8?Q?b?= c'), '=?x-unknown?Q?a?= b c');
    assert.equal(decodeHeaderText('=?windows-1252?Q?=93Bob=94_=96_Don=92t?='), '“Bob” – Don’t');
    assert.equal(decodeHeaderText('=?iso-8859-1?Q?=85?='), '…');
    const out = rewriteForForward(
      Buffer.from('From: =?UTF-8?Q?=E5=B1?= =?UTF-8?Q?=B1=E7=94=B0?= <y@example.jp>\r\n\r\nx\r\n'),
      OPTIONS,
    );
    assert.equal(out.displayName, '山田 via example.com');
  });

  it('encodes long non-ASCII text in words of at most 75 characters that decode back', () => {
    const text = `${'東京'.repeat(40)} – 😀 café`;
    const words = encodeWords(text);
    assert.ok(words.length > 1);
    for (const w of words) assert.ok(w.length <= 75, w);
    assert.equal(decodeHeaderText(words.join(' ')), text);
    assert.equal(encodePhrase('Plain "Name"', '\r\n'), '"Plain \\"Name\\""');
  });

  it('parses address lists with groups, quoted names, comments and route addresses', () => {
    assert.deepEqual(
      parseAddressList(
        'Team: a@example.net, "Erin, E." <erin@example.net>;, <@relay.example:carl@example.org>, bad, x@y (X Y)',
      ),
      [
        { name: '', address: 'a@example.net' },
        { name: 'Erin, E.', address: 'erin@example.net' },
        { name: '', address: 'carl@example.org' },
        { name: 'X Y', address: 'x@y' },
      ],
    );
  });
});

describe('rewriteForForward on the shared corpus', () => {
  const dir = corpusDir();
  const available = requireOrAnnounce(
    dir !== null,
    'forward rewrite corpus suite',
    'put the corpus at ../shared/corpus or set MAIL_RELAY_CORPUS',
  );
  it('every message: body byte-identical, one From of ours, nothing SES refuses in the header block', {
    skip: !available,
  }, () => {
    assert.ok(dir);
    const files = corpusFiles(dir);
    assert.ok(files.length > 100);
    for (const f of files) {
      const raw = readFileSync(f.path);
      const before = splitMessage(raw);
      const out = rewriteForForward(raw, { ...OPTIONS, tags: ['spam'] });
      const after = splitMessage(out.raw);
      assert.deepEqual(after.body, before.body, `${f.file}: body bytes`);
      assert.notEqual(after.separator, '', `${f.file}: a blank line separates header and body`);
      const froms = after.fields.filter((x) => x.key === 'from').map(fieldValue);
      assert.equal(froms.length, 1, `${f.file}: one From`);
      assert.equal(
        parseAddressList(froms[0] ?? '')[0]?.address,
        'forwarder@example.com',
        `${f.file}: From is ours`,
      );
      const counts = new Map<string, number>();
      for (const x of after.fields) counts.set(x.key, (counts.get(x.key) ?? 0) + 1);
      for (const [key, n] of counts) {
        if (SES_SINGLE_FIELDS.has(key)) assert.equal(n, 1, `${f.file}: ${key} at most once`);
      }
      for (const gone of ['return-path', 'sender', 'dkim-signature', 'bcc']) {
        assert.ok(!counts.has(gone), `${f.file}: ${gone} removed`);
      }
      assert.ok(
        after.fields.every((x) => !x.key.startsWith('x-ses-')),
        `${f.file}: no SES control headers`,
      );
      assert.equal(checkLoop(out.raw, OPTIONS.loopMarker).loop, true, `${f.file}: marked with our X-Loop`);
    }
  });
});

describe('rewriteForForward: edge cases of the header block', () => {
  const msg = (head: string) => Buffer.from(`${head}\r\n\r\nbody\r\n`, 'latin1');

  it('strips DomainKey-Signature as it strips DKIM-Signature, and keeps repeatable fields every time they occur', () => {
    const out = rewriteForForward(
      msg(
        [
          'Received: from a by b; Tue, 04 Mar 2025 10:00:00 +0000',
          'Received: from c by d; Tue, 04 Mar 2025 09:59:00 +0000',
          'DomainKey-Signature: a=rsa-sha1; d=example.org; b=AAAA',
          'X-Custom: one',
          'X-Custom: two',
          'From: a@example.org',
          'Subject: s',
          'Subject: second subject',
        ].join('\r\n'),
      ),
      OPTIONS,
    );
    assert.deepEqual(headerValues(out.raw, 'DomainKey-Signature'), []);
    assert.equal(headerValues(out.raw, 'Received').length, 2);
    assert.deepEqual(headerValues(out.raw, 'X-Custom'), ['one', 'two']);
    assert.deepEqual(headerValues(out.raw, 'Subject'), ['s']);
  });

  it('a From unreadable as an address (an empty group) or none at all: Reply-To from the envelope, unless the message has one; the From as written kept in X-Original-From', () => {
    const group = rewriteForForward(msg('From: Undisclosed recipients:;\r\nSubject: s'), OPTIONS);
    assert.equal(group.originalFrom, null);
    assert.deepEqual(headerValues(group.raw, 'Reply-To'), ['<bounce-123@lists.example.org>']);
    // The From is replaced by ours: what the sender wrote is not lost, even when it names no address.
    assert.deepEqual(headerValues(group.raw, 'X-Original-From'), ['Undisclosed recipients:;']);
    assert.deepEqual(
      headerValues(rewriteForForward(msg('From: \r\nSubject: s'), OPTIONS).raw, 'X-Original-From'),
      [],
    );
    assert.equal(group.replyTo, '<bounce-123@lists.example.org>');
    const own = rewriteForForward(msg('Reply-To: lists@example.org\r\nSubject: s'), OPTIONS);
    assert.deepEqual(headerValues(own.raw, 'Reply-To'), ['lists@example.org']);
    assert.equal(own.replyTo, null);
  });

  it('a bounce (empty envelope sender) without a From: "unknown sender via <domain>", no Reply-To', () => {
    const out = rewriteForForward(msg('Subject: s'), { ...OPTIONS, envelopeFrom: '' });
    assert.equal(out.displayName, 'unknown sender via example.com');
    assert.deepEqual(headerValues(out.raw, 'Reply-To'), []);
    assert.equal(out.replyTo, null);
  });

  it('without a From, an envelope sender with a quoted local part is the Reply-To; a malformed one is not', () => {
    const replyTo = (envelopeFrom: string) =>
      headerValues(rewriteForForward(msg('Subject: s'), { ...OPTIONS, envelopeFrom }).raw, 'Reply-To');
    assert.deepEqual(replyTo('"john doe"@example.org'), ['<"john doe"@example.org>']);
    assert.deepEqual(replyTo('"a\\"b"@example.org'), ['<"a\\"b"@example.org>']);
    assert.deepEqual(replyTo('jörg@example.org'), ['<jörg@example.org>']);
    // Not an address a reply could go to: no Reply-To rather than a broken one.
    assert.deepEqual(replyTo('"x"y"@example.org'), []);
    assert.deepEqual(replyTo('"open@example.org'), []);
    assert.deepEqual(replyTo('john doe@example.org'), []);
  });

  it('returns the Reply-To it wrote and the decoded subject (the oversize notice shows them), null when there is none', () => {
    const out = rewriteForForward(
      msg('From: Alice <alice@example.org>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?='),
      OPTIONS,
    );
    assert.equal(out.replyTo, 'Alice <alice@example.org>');
    assert.equal(out.subject, 'Grüße');
    assert.equal(rewriteForForward(msg('From: alice@example.org'), OPTIONS).subject, null);
  });

  it('untagged mail without a Subject gets none of ours', () => {
    const out = rewriteForForward(msg('From: alice@example.org'), OPTIONS);
    assert.deepEqual(headerValues(out.raw, 'Subject'), []);
  });

  it('fields written without a space after the colon, or with several, keep their text whole', () => {
    for (const gap of ['', '   ']) {
      const out = rewriteForForward(
        msg(`From:${gap}Alice Example <alice@example.org>\r\nSubject:${gap}Hello there`),
        {
          ...OPTIONS,
          tags: ['spam'],
        },
      );
      assert.deepEqual(
        headerValues(out.raw, 'X-Original-From'),
        ['Alice Example <alice@example.org>'],
        JSON.stringify(gap),
      );
      assert.deepEqual(
        headerValues(out.raw, 'Reply-To'),
        ['Alice Example <alice@example.org>'],
        JSON.stringify(gap),
      );
      assert.match(out.raw.toString('latin1'), /\r\nSubject: \[SPAM\] Hello there\r\n/, JSON.stringify(gap));
    }
  });

  it('a long display name is cut at 150 characters before " via <domain>"', () => {
    const out = rewriteForForward(msg(`From: "${'A'.repeat(5000)}" <a@example.net>`), OPTIONS);
    assert.equal(out.displayName, `${'A'.repeat(150)} via example.com`);
  });

  it('one tag is enough for X-Mail-Relay-Verdict; its values carry only word characters, and no dmarc-policy unless SES sent one', () => {
    const out = rewriteForForward(msg('From: a@example.org\r\nSubject: s'), {
      ...OPTIONS,
      tags: ['spam'],
      verdicts: { spam: 'FAIL; spam=PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' },
    });
    assert.deepEqual(headerValues(out.raw, 'X-Mail-Relay-Verdict'), [
      'spam=FAILspamPASS; virus=PASS; spf=PASS; dkim=PASS; dmarc=PASS; tagged=spam',
    ]);
    const policy = rewriteForForward(msg('From: a@example.org\r\nSubject: s'), {
      ...OPTIONS,
      tags: ['dmarc'],
      verdicts: {
        spam: 'PASS',
        virus: 'PASS',
        spf: 'PASS',
        dkim: 'PASS',
        dmarc: 'FAIL',
        dmarcPolicy: 'quar antine;x',
      },
    });
    assert.match(
      headerValues(policy.raw, 'X-Mail-Relay-Verdict')[0] ?? '',
      /; dmarc-policy=quarantinex; tagged=dmarc$/,
    );
  });
});

describe('checkLoop: what counts as ours', () => {
  it('our X-Loop in any case and with trailing space is a loop; our address in From or Reply-To is not', () => {
    const loop = Buffer.from('X-Loop: FORWARDER@EXAMPLE.COM  \r\nSubject: s\r\n\r\nx\r\n');
    assert.deepEqual(checkLoop(loop, 'forwarder@example.com'), { loop: true, reason: 'x-loop', hops: 0 });
    const reply = Buffer.from(
      'From: forwarder@example.com\r\nReply-To: forwarder@example.com\r\nSubject: s\r\n\r\nx\r\n',
    );
    assert.deepEqual(checkLoop(reply, 'forwarder@example.com'), { loop: false, hops: 0 });
  });

  it('the hop limit is the 50 Received fields README promises', () => {
    const hops = (n: number) =>
      Buffer.from(`${'Received: from a by b\r\n'.repeat(n)}Subject: s\r\n\r\nx\r\n`);
    assert.equal(checkLoop(hops(50), 'f@example.com').loop, false);
    assert.equal(checkLoop(hops(51), 'f@example.com').loop, true);
  });
});
