/**
 * The mboxrd writer of `mail-relay export` and its inverse in `import` (functions/local/mboxrd.ts):
 * whatever the chunks a stored message is read in, the same mbox; and what import takes from it is
 * the stored message, byte for byte.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { asctime } from '../../functions/core/mime-header.ts';
import {
  exportedMaildirIds,
  exportFields,
  fromExportedMbox,
  MboxrdEncoder,
  maildirIdField,
  mboxFromLine,
} from '../../functions/local/mboxrd.ts';

/** The id our mbox export gave a message, through what import reads of it. */
const exportedId = (message: Buffer) => fromExportedMbox(message)?.ids?.id ?? null;
const exportedMaildirId = (name: string) => exportedMaildirIds(name)?.id ?? null;

/** A message id (a ULID, functions/core/ids.ts). */
const ID = '01KB0ZQ3M4N5P6Q7R8S9T0V1W2';

const b = (s: string) => Buffer.from(s, 'latin1');

const MESSAGES: Record<string, string> = {
  'CRLF throughout':
    'Subject: a\r\nTo: b@example.test\r\n\r\nFrom me.\r\n>From you.\r\n>>>From them\r\nFro\r\n',
  'LF throughout': 'Subject: a\n\nFrom me.\n>From you.\nbody\n',
  'no line end at the end': 'Subject: a\n\nlast line From here',
  'no line end, a From line last': 'Subject: a\n\nFrom',
  'mixed line ends': 'Subject: a\r\nX: y\n\r\nFrom mixed\r\nFrom bare\n',
  'a bare CR': 'Subject: a\r\n\r\nclassic\rFrom mac\r\n',
  'ends with empty lines': 'Subject: a\r\n\r\nbody\r\n\r\n\r\n',
  'a line of quotes only': 'Subject: a\n\n>>>>\n>>>>From\n>>>>From x\n',
  empty: '',
};

/** Whether a message's line ends are CRLF throughout (what export works out from crlfSize). */
const crlfOnly = (m: string) =>
  m.length > 0 && /\r\n$/.test(m) && !/(^|[^\r])\n/.test(m) && !/\r(?!\n)/.test(m);

function encodeInChunks(message: Buffer, crlf: boolean, cuts: readonly number[]): Buffer {
  const encoder = new MboxrdEncoder(crlf);
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, message.length]) {
    out.push(encoder.push(message.subarray(from, cut)));
    from = cut;
  }
  out.push(encoder.end());
  return Buffer.concat(out);
}

describe('mboxrd', () => {
  it('escapes >*From lines one level, turns CRLF into LF when the message is CRLF throughout, ends with an empty line', () => {
    const m = Buffer.from(MESSAGES['CRLF throughout'] ?? '', 'latin1');
    assert.equal(
      encodeInChunks(m, true, []).toString('latin1'),
      'Subject: a\nTo: b@example.test\n\n>From me.\n>>From you.\n>>>>From them\nFro\n\n',
    );
    assert.equal(
      encodeInChunks(Buffer.from('x\n\nlast From', 'latin1'), false, []).toString('latin1'),
      'x\n\nlast From\n\n',
      'a last line without a line end gains one',
    );
  });

  it('writes the same bytes however the message is cut into chunks (every cut, and every pair of cuts)', () => {
    for (const [label, text] of Object.entries(MESSAGES)) {
      const m = Buffer.from(text, 'latin1');
      const crlf = crlfOnly(text);
      const whole = encodeInChunks(m, crlf, []);
      for (let i = 0; i <= m.length; i++) {
        assert.deepEqual(encodeInChunks(m, crlf, [i]), whole, `${label}: cut at ${i}`);
        for (let j = i; j <= m.length; j++)
          assert.deepEqual(encodeInChunks(m, crlf, [i, j]), whole, `${label}: cut at ${i} and ${j}`);
      }
    }
  });

  it('import takes back the stored bytes exactly: no From line, none of our fields, unescaped, line ends as stored', () => {
    for (const [label, text] of Object.entries(MESSAGES)) {
      const m = Buffer.from(text, 'latin1');
      const crlf = crlfOnly(text);
      for (const seen of [true, false]) {
        const exported = Buffer.concat([
          Buffer.from(
            mboxFromLine('a@b.test', new Date('2026-03-04T05:06:07Z')) +
              exportFields(seen, crlf, m.length, ID),
          ),
          encodeInChunks(m, crlf, []),
        ]);
        assert.deepEqual(fromExportedMbox(exported)?.bytes.toString('latin1'), text, label);
      }
    }
    assert.equal(
      fromExportedMbox(Buffer.from('From a@b Tue Mar  4 05:06:07 2026\nSubject: x\n\nbody\n\n')),
      null,
    );
  });

  it('a message whose first line is a From line (as imports kept it before the headers) is escaped there too, in every chunking', () => {
    const stored = b('From a@b.test Tue Mar  4 09:15:00 2025\nSubject: a\n\nx\n');
    for (let cut = 0; cut <= stored.length; cut++)
      assert.equal(
        encodeInChunks(stored, false, [cut]).toString('latin1'),
        '>From a@b.test Tue Mar  4 09:15:00 2025\nSubject: a\n\nx\n\n',
        `cut at ${cut}`,
      );
  });

  it('our fields: the read state for mutt and Thunderbird, and what import needs, ahead of the message', () => {
    assert.equal(
      exportFields(true, true, 1234, ID),
      `Status: RO\nX-Mozilla-Status: 0001\nX-Mail-Relay-Export: mboxrd; eol=crlf; size=1234; id=${ID}\n`,
    );
    assert.equal(
      exportFields(false, false, 0, ID),
      `Status: O\nX-Mozilla-Status: 0000\nX-Mail-Relay-Export: mboxrd; eol=lf; size=0; id=${ID}\n`,
    );
    // With the SES message id it was received under; one that could break the field is left out.
    assert.equal(
      exportFields(false, false, 0, ID, 'o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1'),
      `Status: O\nX-Mozilla-Status: 0000\nX-Mail-Relay-Export: mboxrd; eol=lf; size=0; id=${ID}; ses=o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1\n`,
    );
    assert.equal(
      exportFields(false, false, 0, ID, 'a; b'),
      `Status: O\nX-Mozilla-Status: 0000\nX-Mail-Relay-Export: mboxrd; eol=lf; size=0; id=${ID}\n`,
    );
  });

  it("the message's id in the store it came from: from our mbox field or our Maildir file name, never from anything else", () => {
    const from = mboxFromLine('a@b.test', new Date('2026-03-04T05:06:07Z'));
    const ours = b(`${from}${exportFields(true, false, 20, ID)}Subject: a\n\nbody\n\n`);
    assert.equal(exportedId(ours), ID);
    assert.equal(fromExportedMbox(ours)?.bytes.toString('latin1'), 'Subject: a\n\nbody\n');
    // An export from before the id was written: the message is still ours, without an id.
    const older = b(
      `${from}Status: RO\nX-Mozilla-Status: 0001\nX-Mail-Relay-Export: mboxrd; eol=lf; size=20\nSubject: a\n\nbody\n\n`,
    );
    assert.equal(exportedId(older), null);
    assert.equal(fromExportedMbox(older)?.bytes.toString('latin1'), 'Subject: a\n\nbody\n');
    // The field inside a message that is not our export (no From line and fields ahead), or not an id.
    assert.equal(
      exportedId(b(`${from}Subject: a\nX-Mail-Relay-Export: mboxrd; eol=lf; size=1; id=${ID}\n\n`)),
      null,
    );
    assert.equal(exportedId(b(ours.toString('latin1').replace(ID, 'IL0VEY0U0000000000000000UU'))), null);

    const name = `1772600767.M000000R${'a'.repeat(32)}.host${maildirIdField(ID)}`;
    assert.equal(exportedMaildirId(name), ID);
    assert.equal(exportedMaildirId(`${name}:2,S`), ID);
    assert.equal(exportedMaildirId(`${name},S=1234:2,S`), ID);
    assert.equal(exportedMaildirId(`1772600767.M000000R${'a'.repeat(32)}.host:2,S`), null);
    assert.equal(exportedMaildirId(`${name}X`), null);

    // The SES message id beside it, in the field and in the name; none from an export without it.
    const ses = '0100018c-5e5c3b8a-a1b2';
    const withSes = b(`${from}${exportFields(true, false, 20, ID, ses)}Subject: a\n\nbody\n\n`);
    assert.deepEqual(fromExportedMbox(withSes)?.ids, { id: ID, ses });
    assert.equal(fromExportedMbox(withSes)?.bytes.toString('latin1'), 'Subject: a\n\nbody\n');
    assert.deepEqual(fromExportedMbox(ours)?.ids, { id: ID, ses: null });
    const named = `1772600767.M000000R${'a'.repeat(32)}.host${maildirIdField(ID, ses)}`;
    assert.equal(named.endsWith(`,I=${ID},E=${ses}`), true);
    assert.deepEqual(exportedMaildirIds(`${named}:2,S`), { id: ID, ses });
    assert.deepEqual(exportedMaildirIds(`${named},S=1234:2,S`), { id: ID, ses });
    assert.deepEqual(exportedMaildirIds(`${name}:2,S`), { id: ID, ses: null });
    assert.equal(maildirIdField(ID, 'a/b:c'), `,I=${ID}`);
    // Read back it names a key (`inbound/<it>`): never `.`, `..` or hidden, whatever a name says.
    assert.equal(maildirIdField(ID, '..'), `,I=${ID}`);
    assert.deepEqual(exportedMaildirIds(`${name},E=..:2,S`), { id: ID, ses: null });
    assert.deepEqual(exportedMaildirIds(`${name},E=.hidden:2,S`), { id: ID, ses: null });
  });

  it('a message a mail program has changed since (its size no longer the one written) is given back as read, its last line end kept', () => {
    const from = mboxFromLine('a@b.test', new Date('2026-03-04T05:06:07Z'));
    const stored = 'Subject: a\n\nlast line';
    const exported =
      from +
      exportFields(true, false, stored.length, ID) +
      encodeInChunks(b(stored), false, []).toString('latin1');
    assert.equal(
      fromExportedMbox(b(exported))?.bytes.toString('latin1'),
      stored,
      'as exported: the added line end taken off',
    );
    const edited = exported.replace('Subject: a\n', 'Subject: a\nX-Label: kept\n');
    assert.equal(
      fromExportedMbox(b(edited))?.bytes.toString('latin1'),
      'Subject: a\nX-Label: kept\n\nlast line\n',
      'edited: as read',
    );
  });

  it('From lines: asctime in UTC, MAILER-DAEMON for the null sender, no spaces in the sender', () => {
    assert.equal(asctime(new Date('2026-03-04T05:06:07Z')), 'Wed Mar  4 05:06:07 2026');
    assert.equal(
      mboxFromLine('', new Date('2025-12-25T23:59:59Z')),
      'From MAILER-DAEMON Thu Dec 25 23:59:59 2025\n',
    );
    assert.equal(
      mboxFromLine('"john doe"@example.test', new Date(0)),
      'From "john_doe"@example.test Thu Jan  1 00:00:00 1970\n',
    );
  });
});
