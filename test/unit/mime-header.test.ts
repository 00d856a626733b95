/**
 * functions/core/mime-header.ts on its own: where a header block ends, which lines are its fields,
 * and that a message put back together is the message it was (forward, send and import lean on it).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  asctime,
  cleanDisplayText,
  decodeCharset,
  decodeHeaderText,
  detectEol,
  fieldValue,
  findField,
  joinMessage,
  makeField,
  parseAddressList,
  parseMailboxList,
  rfc5322Date,
  splitMessage,
} from '../../functions/core/mime-header.ts';

const b = (s: string) => Buffer.from(s, 'latin1');
/** The fields (name and unfolded value) and the body of a message. */
const read = (raw: string) => {
  const split = splitMessage(b(raw));
  return {
    fields: split.fields.map((f) => `${f.name}: ${fieldValue(f)}`),
    body: split.body.toString('latin1'),
  };
};

describe('detectEol', () => {
  it("is the line end of the message's first line, however it arrived in chunks", () => {
    assert.equal(detectEol(b('Subject: a\nTo: b\r\n')), '\n');
    assert.equal(detectEol(b('Subject: a\r\nTo: b\n')), '\r\n');
    assert.equal(detectEol(b('\nSubject: a')), '\n', 'an LF first');
    assert.equal(detectEol(b('Subject: a')), '\r\n', 'no line end at all: CRLF');
    assert.equal(detectEol([b('Subject: a\r'), b('\nTo: b\n')]), '\r\n', 'a CR ending one chunk');
    assert.equal(
      detectEol([b('Subject: a'), b('\r'), b(''), b('\nTo: b\n')]),
      '\r\n',
      'a chunk of the CR alone',
    );
    assert.equal(
      detectEol([b('Subject: a\r'), b('x'), b('\nTo: b\n')]),
      '\n',
      'a CR further back is no CRLF',
    );
    assert.equal(detectEol([b(''), b('\n')]), '\n');
  });
});

describe('splitMessage', () => {
  it('a message that is a header block without a line end at its end: every field, no body; put back with its blank line', () => {
    for (const raw of [
      'Subject: hi',
      'From: a@b.test\r\nSubject: hi',
      'From: a@b.test\nSubject: hi\n folded',
    ]) {
      const split = splitMessage(b(raw));
      assert.equal(split.fields.length, raw.split(/\r?\n(?! )/).length, raw);
      assert.equal(split.body.length, 0, raw);
      assert.equal(joinMessage(split).toString('latin1'), `${raw}${split.eol}${split.eol}`, raw);
    }
  });

  it('an LF message whose fields are short (`Cc:` empty, a one-letter name) keeps them all, and the fields after them', () => {
    assert.deepEqual(read('From: a@b.test\nCc:\nX: 1\nSubject: hi\n\nbody\n'), {
      fields: ['From: a@b.test', 'Cc: ', 'X: 1', 'Subject: hi'],
      body: 'body\n',
    });
  });

  it('a fold that lost its whitespace is kept with its field when a field follows, past continuation lines', () => {
    assert.deepEqual(read('Subject: a\nbroken\n  fold\nTo: c@d.test\n\nbody\n'), {
      fields: ['Subject: a broken  fold', 'To: c@d.test'],
      body: 'body\n',
    });
  });

  it('a line that is no field, with no field after it before the blank line, starts the body', () => {
    assert.deepEqual(read('Subject: a\nnot a field\n\nbody\n'), {
      fields: ['Subject: a'],
      body: 'not a field\n\nbody\n',
    });
    assert.deepEqual(read('Subject: a\nnot a field\n continued\n'), {
      fields: ['Subject: a'],
      body: 'not a field\n continued\n',
    });
  });
});

describe('made fields', () => {
  it('are found by their name in any case, as read ones are', () => {
    const fields = [
      ...splitMessage(b('Subject: a\r\n\r\n')).fields,
      makeField('X-Loop', 'x@example.test', '\r\n'),
    ];
    assert.equal(findField(fields, 'x-loop')?.raw, 'X-Loop: x@example.test\r\n');
    assert.equal(findField(fields, 'SUBJECT')?.name, 'Subject');
  });
});

describe('decoding header text', () => {
  it("reads the charset names Windows mailers write that the platform's decoder does not know", () => {
    const cases: [string, number[], string][] = [
      ['cp932', [0x93, 0xfa, 0x96, 0x7b], '日本'],
      ['MS932', [0x93, 0xfa, 0x96, 0x7b], '日本'],
      ['Windows-31J', [0x93, 0xfa, 0x96, 0x7b], '日本'],
      ['x-sjis', [0x93, 0xfa, 0x96, 0x7b], '日本'],
      ['cp936', [0xc8, 0xd5, 0xb1, 0xbe], '日本'],
      ['ms936', [0xc8, 0xd5, 0xb1, 0xbe], '日本'],
      ['cp949', [0xc0, 0xcf, 0xba, 0xbb], '일본'],
      ['cp950', [0xa4, 0xe9, 0xa5, 0xbb], '日本'],
    ];
    for (const [label, bytes, text] of cases) {
      assert.equal(decodeCharset(Uint8Array.from(bytes), label), text, label);
      const q = bytes.map((x) => `=${x.toString(16).toUpperCase()}`).join('');
      assert.equal(decodeHeaderText(`=?${label}?Q?${q}?=`), text, label);
    }
    assert.equal(decodeCharset(Uint8Array.of(0x61), 'x-no-such-charset'), null);
  });

  it('the space between a decoded word and one kept as written (a charset no decoder knows) is kept', () => {
    assert.equal(decodeHeaderText('=?UTF-8?Q?caf=C3=A9?= =?x-unknown?Q?b?='), 'café =?x-unknown?Q?b?=');
    assert.equal(decodeHeaderText('=?x-unknown?Q?a?= =?x-other?Q?b?='), '=?x-unknown?Q?a?= =?x-other?Q?b?=');
  });

  it('an encoded word with a language (RFC 2231 §5: `=?charset*lang?…?=`) decodes in its charset', () => {
    assert.equal(decodeHeaderText('=?UTF-8*en?Q?caf=C3=A9?='), 'café');
    assert.equal(decodeHeaderText('=?ISO-8859-1*fr-CA?B?Y2Fm6Q==?= ok'), 'café ok');
  });
});

describe('cleanDisplayText', () => {
  it('turns control characters into spaces, runs of space into one, trims, and cuts at the length given', () => {
    assert.equal(cleanDisplayText('  Alice\r\nBcc: x@y.test\t\u007f '), 'Alice Bcc: x@y.test');
    assert.equal(cleanDisplayText(' \u00a0😀'.repeat(3), 3), '😀 😀', 'code points, not UTF-16 units');
    assert.equal(cleanDisplayText('x'.repeat(201)), 'x'.repeat(200));
  });
});

describe('parseAddressList', () => {
  it('a comment as the name: nested comments and quoted pairs (RFC 5322 §3.2.2) read as written', () => {
    assert.deepEqual(parseAddressList('alice@example.test (Alice (the boss) \\(Smith\\))'), [
      { name: 'Alice (the boss) (Smith)', address: 'alice@example.test' },
    ]);
  });

  it('an obsolete source route is dropped; an IPv6 address literal is no route', () => {
    assert.deepEqual(
      parseAddressList('Joe <@relay.example,@b.example:joe@example.test>, <joe@[IPv6:2001:db8::1]>'),
      [
        { name: 'Joe', address: 'joe@example.test' },
        { name: '', address: 'joe@[IPv6:2001:db8::1]' },
      ],
    );
  });

  it('groups are flattened, and a quoted local part is part of the address', () => {
    assert.deepEqual(parseAddressList('Team: a@example.test, "john doe"@example.test;, c@example.test'), [
      { name: '', address: 'a@example.test' },
      { name: '', address: '"john doe"@example.test' },
      { name: '', address: 'c@example.test' },
    ]);
    // A group's name is no mailbox, even one that looks like an address.
    assert.deepEqual(parseAddressList('ceo@example.com:alice@example.com;'), [
      { name: '', address: 'alice@example.com' },
    ]);
  });

  it('a comment cut off after a backslash keeps the backslash as its last character, and nothing else comes in', () => {
    assert.deepEqual(parseAddressList('alice@example.test (Alice \\'), [
      { name: 'Alice \\', address: 'alice@example.test' },
    ]);
  });
});

describe('parseMailboxList', () => {
  it('reads a list of mailboxes, empty entries skipped; null for a group or an entry that is no mailbox', () => {
    assert.deepEqual(parseMailboxList('a@example.test, , Bob <b@example.test> (work)'), [
      { name: '', address: 'a@example.test' },
      { name: 'Bob', address: 'b@example.test' },
    ]);
    assert.equal(parseMailboxList('ceo@example.com:alice@example.com;'), null);
    assert.equal(parseMailboxList('Team: a@example.test;'), null);
    assert.equal(parseMailboxList('a@example.test, nobody'), null);
    assert.deepEqual(parseMailboxList(''), []);
  });
});

describe('dates written in headers and From lines', () => {
  it('every month and weekday by its English name, in UTC, padded as RFC 5322 §3.3 and asctime() write them', () => {
    const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
    const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
    for (let month = 0; month < 12; month++) {
      const at = new Date(Date.UTC(2026, month, 3 + month, 4, 5, 6));
      const day = days[at.getUTCDay()];
      const dd = String(3 + month).padStart(2, '0');
      assert.equal(rfc5322Date(at), `${day}, ${dd} ${months[month]} 2026 04:05:06 +0000`);
      assert.equal(
        asctime(at),
        `${day} ${months[month]} ${String(3 + month).padStart(2, ' ')} 04:05:06 2026`,
      );
    }
    // A week of days, so that every weekday name is written once.
    assert.deepEqual(
      Array.from({ length: 7 }, (_, i) =>
        rfc5322Date(new Date(Date.UTC(2026, 10, 29 + i, 23, 59, 59))).slice(0, 3),
      ),
      days,
    );
  });
});
