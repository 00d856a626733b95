/**
 * The snippet shown in list items: the first 160 characters of the text (or of the HTML without its
 * tags), whitespace collapsed. snippetOf reads only as much of a long body as it needs; these
 * tests hold it to the plain definition on bodies built to straddle its prefix boundaries.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  clipText,
  ENTRY_TEXT_MAX_CHARS,
  type ParsedSummary,
  SNIPPET_CHARS,
  SUMMARY_BODY_MAX_CHARS,
  snippetOf,
  summaryBody,
} from '../../functions/core/message.ts';
import { deterministicBytes } from '../fixtures/build.ts';

/** The definition, over the whole body. */
function reference(text: string | null, html: string | null): string {
  const source = text ?? (html ? html.replace(/<[^>]*>/g, ' ') : '');
  return source.replace(/\s+/g, ' ').trim().slice(0, SNIPPET_CHARS);
}

function summary(text: string | null, html: string | null): ParsedSummary {
  return {
    headers: [],
    from: [],
    to: [],
    cc: [],
    replyTo: [],
    subject: null,
    date: null,
    messageId: null,
    text,
    html,
    attachments: [],
  };
}

/** Text of words, runs of whitespace and tags, from seeded bytes. */
function generated(seed: number, length: number, tagsPerMille: number): string {
  const bytes = deterministicBytes(length, seed);
  let out = '';
  for (const b of bytes) {
    if (b < tagsPerMille / 4) out += `<div class="c${b}">`;
    else if (b < 60) out += ' \t\r\n'.charAt(b % 4);
    else out += String.fromCharCode(97 + (b % 26));
  }
  return out;
}

describe('snippetOf', () => {
  it('equals the definition on short and long text, HTML, empty and missing bodies', () => {
    const cases: [string | null, string | null][] = [
      [null, null],
      ['', '<p>ignored: the text part wins even when empty</p>'],
      [null, ''],
      ['  hello \r\n\t world  ', null],
      [null, '<html><body><p>Hello</p>\n<p>world</p></body></html>'],
      [`${' '.repeat(50_000)}late start`, null],
      [null, `${'<br>'.repeat(20_000)}late start`],
      [null, `<div>${'x'.repeat(100)}${'<span>'.repeat(3000)}${'y'.repeat(100)}</div>`],
      // A tag that spans the first prefix boundary (4 KiB), and one unterminated at the end.
      [null, `${'a '.repeat(2040)}<img src="${'z'.repeat(200)}">${'b '.repeat(200)}<unterminated`],
      [null, `<p>${'a'.repeat(100)}</p><${'q'.repeat(10_000)}`],
      // Visible text just before a tag cut by the 4 KiB boundary: the tag must not show.
      [null, `${'<br>'.repeat(980)}${'x'.repeat(150)}<img src="${'z'.repeat(300)}">after the image`],
    ];
    for (let seed = 1; seed <= 40; seed++) {
      const length = [100, 5000, 20_000, 70_000][seed % 4] ?? 100;
      cases.push([generated(seed, length, 0), null], [null, generated(seed, length, seed * 10)]);
    }
    for (const [text, html] of cases) {
      assert.equal(
        snippetOf(summary(text, html)),
        reference(text, html),
        JSON.stringify([text, html]).slice(0, 200),
      );
    }
  });
});

describe('clipText (the subject, from and to of an index entry)', () => {
  it('leaves text up to the limit alone and cuts longer text to the limit, whole code points, ending in …', () => {
    assert.equal(clipText('short', 10), 'short');
    assert.equal(clipText('x'.repeat(10), 10), 'x'.repeat(10));
    assert.equal(clipText('x'.repeat(11), 10), `${'x'.repeat(9)}…`);
    // A pair would be split by the cut: it goes whole, and the text is one unit shorter.
    assert.equal(clipText(`${'x'.repeat(8)}😀yy`, 10), `${'x'.repeat(8)}…`);
    const subject = `Re: ${'Grüße 😀 '.repeat(400)}`;
    const clipped = clipText(subject, ENTRY_TEXT_MAX_CHARS);
    assert.ok(clipped.length <= ENTRY_TEXT_MAX_CHARS && clipped.length >= ENTRY_TEXT_MAX_CHARS - 1);
    assert.ok(subject.startsWith(clipped.slice(0, -1)) && clipped.endsWith('…'));
    assert.doesNotMatch(clipped, /[\ud800-\udbff]…$/);
  });

  it('never ends a snippet in half of a surrogate pair', () => {
    const text = `${'a'.repeat(SNIPPET_CHARS - 1)}😀 and more`;
    assert.equal(snippetOf(summary(text, null)), 'a'.repeat(SNIPPET_CHARS - 1));
  });
});

describe('summaryBody (the text and HTML a summary keeps)', () => {
  it('keeps a body up to SUMMARY_BODY_MAX_CHARS whole, and cuts a longer one there (whole code points)', () => {
    const fits = 'é'.repeat(SUMMARY_BODY_MAX_CHARS);
    assert.equal(summaryBody(fits), fits);
    const long = `${'a'.repeat(SUMMARY_BODY_MAX_CHARS - 1)}😀${'b'.repeat(10)}`;
    const cut = summaryBody(long);
    // The pair would be split by the cut: it goes whole, and the body is one unit shorter.
    assert.equal(cut, 'a'.repeat(SUMMARY_BODY_MAX_CHARS - 1));
    const mixed = 'Grüße 😀 '.repeat(SUMMARY_BODY_MAX_CHARS / 4);
    const kept = summaryBody(mixed);
    assert.ok(kept.length >= SUMMARY_BODY_MAX_CHARS - 1 && kept.length <= SUMMARY_BODY_MAX_CHARS);
    assert.ok(mixed.startsWith(kept));
  });
});
