import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { headerFields } from '../../functions/local/import.ts';
import {
  fromLineTime,
  gmailLabels,
  importSources,
  mailWasRead,
  mboxOffsets,
  readItem,
} from '../../functions/local/import-sources.ts';

const work = mkdtempSync(join(tmpdir(), 'mr-mbox-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** The file is read in chunks of this many bytes (import-sources.ts). */
const CHUNK = 1 << 20;

const message = (n: number, bodyBytes: number, eol = '\n') =>
  `From sender${n}@remote.test Tue Mar  4 09:15:${String(n % 60).padStart(2, '0')} 2025${eol}` +
  `To: alice@example.test${eol}Subject: ${n}${eol}${eol}${'x'.repeat(bodyBytes)}${eol}${eol}`;

describe('mboxOffsets', () => {
  it('splits at every From line, wherever the 1 MiB read chunks cut one (before, inside, right after its "\\n")', async () => {
    // A first message whose length puts the next From line's start at each position around the
    // chunk boundary in turn: the `\n` before it, its `From `, its date, its end.
    for (const shift of [-40, -7, -6, -5, -1, 0, 1, 5, 20, 60]) {
      const first = message(0, 0);
      const padding = CHUNK + shift - first.length - 1;
      const messages = [message(0, padding), message(1, 10), message(2, 3 * CHUNK), message(3, 0)];
      const path = join(work, `cut${shift}.mbox`);
      writeFileSync(path, messages.join(''));
      const expected: number[] = [];
      let at = 0;
      for (const m of messages) {
        expected.push(at);
        at += Buffer.byteLength(m);
      }
      assert.deepEqual(await mboxOffsets(path), expected, `shift ${shift}`);
    }
  });

  it('bare From lines (no date, after a blank line), wherever a read chunk cuts one or the blank line before it', async () => {
    const bare = (n: number, bodyBytes: number, eol: string) =>
      `From sender${n}@remote.test${eol}To: alice@example.test${eol}Subject: ${n}${eol}${eol}` +
      `From Paris, with love${eol}${'x'.repeat(bodyBytes)}${eol}${eol}`;
    for (const shift of [-12, -9, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 30]) {
      for (const eol of ['\n', '\r\n']) {
        const first = bare(0, 0, eol);
        const messages = [bare(0, CHUNK + shift - first.length, eol), bare(1, 5, eol), bare(2, 0, eol)];
        const path = join(work, `bare${shift}.mbox`);
        writeFileSync(path, messages.join(''));
        const a = Buffer.byteLength(messages[0] ?? '');
        assert.deepEqual(
          await mboxOffsets(path),
          [0, a, a + Buffer.byteLength(messages[1] ?? '')],
          `${shift} ${JSON.stringify(eol)}`,
        );
      }
    }
  });

  it('every cut position of one boundary, and CRLF files', async () => {
    for (const shift of [-8, -6, -4, -2, 0, 2]) {
      for (const eol of ['\n', '\r\n']) {
        const first = message(0, 0, eol);
        const messages = [message(0, CHUNK + shift - first.length, eol), message(1, 5, eol)];
        const path = join(work, `crlf${shift}.mbox`);
        writeFileSync(path, messages.join(''));
        assert.deepEqual(
          await mboxOffsets(path),
          [0, Buffer.byteLength(messages[0] ?? '')],
          `${shift} ${JSON.stringify(eol)}`,
        );
      }
    }
  });

  it('does not split at a body line that starts "From " but is no From line; null for a file that is no mbox', async () => {
    const path = join(work, 'sentence.mbox');
    const first = `${message(0, 3)}From here on, a sentence\nFrom me Tuesday\n\n`;
    writeFileSync(path, `${first}${message(1, 3)}`);
    assert.deepEqual(await mboxOffsets(path), [0, Buffer.byteLength(first)]);
    const eml = join(work, 'plain.eml');
    writeFileSync(eml, 'To: alice@example.test\nSubject: x\n\nFrom Tue Mar  4 09:15:00 2025 we met\n');
    assert.equal(await mboxOffsets(eml), null);
    const empty = join(work, 'empty.eml');
    writeFileSync(empty, '');
    assert.equal(await mboxOffsets(empty), null);
    const short = join(work, 'short.mbox');
    writeFileSync(short, 'From a@b.test Tue Mar  4 09:15:00 2025');
    assert.deepEqual(await mboxOffsets(short), [0]);
    // A file cut short after a From line: that line is no line of the message before it.
    const cut = join(work, 'cut-short.mbox');
    writeFileSync(cut, `${message(0, 3)}From b@b.test Tue Mar  4 09:16:00 2025`);
    assert.deepEqual(await mboxOffsets(cut), [0, Buffer.byteLength(message(0, 3))]);
  });

  it('in an mbox of dated From lines, one naming the sender alone is body, after a blank line too', async () => {
    const path = join(work, 'dated-bare.mbox');
    const first = `${message(0, 3)}From the desk of Alice\n\nFrom alice@remote.test\nlater\n\n`;
    writeFileSync(path, `${first}${message(1, 3)}`);
    assert.deepEqual(await mboxOffsets(path), [0, Buffer.byteLength(first)]);
  });
});

describe('importSources', () => {
  it('makes an item of each message of an mbox; read back, the items are the file', async () => {
    const messages = [message(0, 100), message(1, 200), message(2, 300)];
    const path = join(work, 'three.mbox');
    writeFileSync(path, messages.join(''));
    const { items, files } = await importSources([path]);
    assert.equal(files, 1);
    assert.deepEqual(
      items.map((i) => i.label),
      [`${path}#1`, `${path}#2`, `${path}#3`],
    );
    assert.deepEqual(await Promise.all(items.map(async (i) => (await readItem(i)).toString())), messages);
    assert.equal(items[1]?.fromLineTime?.toISOString(), '2025-03-04T09:15:01.000Z');
    // A file of one message is named in failures as it always was, without `#1`.
    const one = join(work, 'one.mbox');
    writeFileSync(one, message(5, 10));
    assert.deepEqual(
      (await importSources([one])).items.map((i) => [i.label, i.fromLineTime?.toISOString()]),
      [[one, '2025-03-04T09:15:05.000Z']],
    );
  });

  it('an mbox behind blank lines (any number, any line end) or a byte order mark: one item per message, from its From line', async () => {
    const messages = [message(0, 10), message(1, 20)];
    const bom = '\xef\xbb\xbf';
    for (const lead of [
      '',
      '\n',
      '\n\n',
      '\n\n\n',
      '\r\n\n',
      '\n\r\n',
      '\r\n\r\n',
      bom,
      `${bom}\n`,
      `${bom}\n\n\n`,
    ]) {
      const path = join(work, 'lead.mbox');
      writeFileSync(path, Buffer.from(lead + messages.join(''), 'latin1'));
      const { items } = await importSources([path]);
      // The mark right before the first From line is part of the first message's bytes; blank lines are not.
      const first = lead === bom ? bom + messages[0] : messages[0];
      assert.deepEqual(
        await Promise.all(items.map(async (i) => (await readItem(i)).toString('latin1'))),
        [first, messages[1]],
        JSON.stringify(lead),
      );
      assert.deepEqual(
        items.map((i) => i.fromLineTime?.toISOString()),
        ['2025-03-04T09:15:00.000Z', '2025-03-04T09:15:01.000Z'],
        JSON.stringify(lead),
      );
    }
  });
  it('an mbox of From lines without a date behind one blank line or a byte order mark: one item per message', async () => {
    const bare = (n: number, eol: string) =>
      `From sender${n}@remote.test${eol}To: alice@example.test${eol}Subject: ${n}${eol}${eol}` +
      `From Paris, with love${eol}${eol}`;
    const bom = '\xef\xbb\xbf';
    for (const eol of ['\n', '\r\n'])
      for (const lead of ['', eol, `${eol}${eol}`, bom, `${bom}${eol}`]) {
        const messages = [bare(0, eol), bare(1, eol), bare(2, eol)];
        const path = join(work, 'lead-bare.mbox');
        writeFileSync(path, Buffer.from(lead + messages.join(''), 'latin1'));
        const { items } = await importSources([path]);
        assert.deepEqual(
          await Promise.all(items.map(async (i) => (await readItem(i)).toString('latin1'))),
          [lead === bom ? bom + messages[0] : messages[0], messages[1], messages[2]],
          JSON.stringify(lead),
        );
      }
  });

  it("keeps the From lines of an mboxcl2 message's body in it where its Content-Length leads to the next From line or the end", async () => {
    for (const eol of ['\n', '\r\n']) {
      const from = (who: string, time: string) => `From ${who}@remote.test Tue Mar  4 ${time} 2025${eol}`;
      const withLength = (head: string, body: string, after: string) =>
        `${head}Content-length: ${Buffer.byteLength(body)}${eol}Subject: cl${eol}${eol}${body}${after}`;
      const quoting = (who: string) =>
        withLength(
          from(who, '09:01:00'),
          `Two lines of a quoted mbox:${eol}${from('q1', '08:00:00')}${from('q2', '08:01:00')}end${eol}`,
          eol,
        );
      // Headers alone, no blank line: the length that follows is the next message's.
      const headersOnly = `${from('a', '09:00:00')}To: alice@example.test${eol}`;
      // A length that leads nowhere (a stale one): split at each From line.
      const staleHead = `${from('c', '09:02:00')}Content-Length: 2${eol}${eol}stale${eol}`;
      const staleTail = `${from('q3', '08:02:00')}text${eol}${eol}`;
      // The last one: its length leads to the end of the file.
      const last = withLength(from('d', '09:03:00'), `${from('q4', '08:03:00')}end${eol}`, '');
      const messages = [quoting('first'), headersOnly, quoting('b'), staleHead, staleTail, last];
      const path = join(work, 'mboxcl2.mbox');
      writeFileSync(path, messages.join(''));
      const { items } = await importSources([path]);
      assert.deepEqual(
        await Promise.all(items.map(async (i) => (await readItem(i)).toString('latin1'))),
        messages,
        JSON.stringify(eol),
      );
    }
  });
});

describe('fromLineTime', () => {
  it('reads the asctime of a From line, with or without a numeric zone; null for what it cannot read', () => {
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 2025')?.toISOString(),
      '2025-03-04T09:15:00.000Z',
    );
    assert.equal(fromLineTime('From a@b Tue Mar 4 9:15 2025')?.toISOString(), '2025-03-04T09:15:00.000Z');
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 +0200 2025')?.toISOString(),
      '2025-03-04T07:15:00.000Z',
    );
    assert.equal(fromLineTime('From a@b Tue Foo  4 09:15:00 2025'), null);
    assert.equal(fromLineTime('From here on'), null);
  });

  it("reads a zone after the year too (UW IMAP's c-client: Pine, Alpine)", () => {
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 2025 +0200')?.toISOString(),
      '2025-03-04T07:15:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Mon Mar  3 21:15:00 2025 -0530')?.toISOString(),
      '2025-03-04T02:45:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 2025 PST')?.toISOString(),
      '2025-03-04T09:15:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 UT 2025')?.toISOString(),
      '2025-03-04T09:15:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 2025 +1030')?.toISOString(),
      '2025-03-03T22:45:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Mon Mar  3 21:15:00 -1000 2025')?.toISOString(),
      '2025-03-04T07:15:00.000Z',
    );
  });

  it('a day the month does not have, a time past 23:59:60 or a zone no place has is no time (not the day it would roll over into)', () => {
    for (const line of [
      'From a@b Mon Feb 29 09:15:00 2025',
      'From a@b Mon Nov 31 09:15:00 2025',
      'From a@b Tue Mar  0 09:15:00 2025',
      'From a@b Tue Mar 32 09:15:00 2025',
      'From a@b Tue Mar  4 24:00:00 2025',
      'From a@b Tue Mar  4 09:60:00 2025',
      'From a@b Tue Mar  4 09:15:61 2025',
      'From a@b Tue Mar  4 09:15:00 2025 +0260',
    ])
      assert.equal(fromLineTime(line), null, line);
    // A zone no place has (outside −12:00…+14:00, as parseMailDate holds a Date to) is no time either.
    for (const line of [
      'From a@b Tue Mar  4 09:15:00 2025 +9900',
      'From a@b Tue Mar  4 09:15:00 -9900 2025',
      'From a@b Tue Mar  4 09:15:00 2025 +1401',
      'From a@b Tue Mar  4 09:15:00 2025 -1230',
    ])
      assert.equal(fromLineTime(line), null, line);
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 2025 +1400')?.toISOString(),
      '2025-03-03T19:15:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Tue Mar  4 09:15:00 -1200 2025')?.toISOString(),
      '2025-03-04T21:15:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Thu Feb 29 09:15:00 2024')?.toISOString(),
      '2024-02-29T09:15:00.000Z',
    );
    assert.equal(
      fromLineTime('From a@b Wed Dec 31 23:59:60 2025')?.toISOString(),
      '2025-12-31T23:59:59.000Z',
    );
  });
});

describe('mailWasRead', () => {
  const h = (name: string, value: string) => ({ name, value });
  it("reads what mutt, Thunderbird and Google Takeout write; Thunderbird's own header first", () => {
    assert.equal(mailWasRead([h('status', 'RO')]), true);
    assert.equal(mailWasRead([h('status', 'O')]), false);
    assert.equal(mailWasRead([h('x-mozilla-status', '0001')]), true);
    assert.equal(mailWasRead([h('x-mozilla-status', '8000')]), false);
    assert.equal(
      mailWasRead([h('status', 'RO'), h('x-mozilla-status', '0000')]),
      false,
      'marked unread later',
    );
    assert.equal(mailWasRead([h('x-gmail-labels', 'Inbox,Category Updates')]), true);
    assert.equal(mailWasRead([h('x-gmail-labels', 'Inbox,Unread')]), false);
    assert.equal(mailWasRead([h('subject', 'none of them')]), false);
  });
});

describe('gmailLabels', () => {
  /** The labels of a message whose header block holds this `X-Gmail-Labels` line, as bytes. */
  const labels = (line: string) =>
    gmailLabels(
      headerFields(Buffer.from(`X-GM-THRID: 1780000000000000000\r\n${line}\r\nFrom: a@b\r\n\r\nhi\r\n`)),
    );

  it("splits Takeout's CSV: a quoted label keeps its commas and its doubled quotes", () => {
    assert.deepEqual(labels('X-Gmail-Labels: Inbox,Category Personal,Unread'), [
      'inbox',
      'category personal',
      'unread',
    ]);
    // A user's labels `Work, 2024` and `"Inbox"` (with its quotes) are not Gmail's Inbox.
    assert.deepEqual(labels('X-Gmail-Labels: "Work, 2024","""Inbox""",Opened'), [
      'work, 2024',
      '"inbox"',
      'opened',
    ]);
    // Nor is a Trash or Unread inside a user's label Gmail's own.
    assert.deepEqual(labels('X-Gmail-Labels: "Old, Trash, 2019",Archived,Opened'), [
      'old, trash, 2019',
      'archived',
      'opened',
    ]);
    assert.deepEqual(labels('X-Gmail-Labels: Inbox,"To do, Unread, later",Opened'), [
      'inbox',
      'to do, unread, later',
      'opened',
    ]);
    assert.equal(labels('Subject: no labels'), null);
  });

  it('decodes the RFC 2047 word Takeout wraps a list with non-ASCII labels in, before splitting it', () => {
    assert.deepEqual(labels('X-Gmail-Labels: =?UTF-8?Q?Trash,Opened,R=C3=A9sum=C3=A9s?='), [
      'trash',
      'opened',
      'résumés',
    ]);
    assert.deepEqual(labels('X-Gmail-Labels: =?UTF-8?Q?Inbox,"Re=C3=A7us,_2024",Unread?='), [
      'inbox',
      'reçus, 2024',
      'unread',
    ]);
    // Folded over two lines, as a long header is.
    assert.deepEqual(labels('X-Gmail-Labels: =?UTF-8?Q?Inbox,R=C3=A9sum=C3=A9s?=\r\n =?UTF-8?Q?,Unread?='), [
      'inbox',
      'résumés',
      'unread',
    ]);
  });
});
