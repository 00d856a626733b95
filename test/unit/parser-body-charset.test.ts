/**
 * Text bodies whose bytes are not in the charset they declare (docs/adr/0019-body-charsets.md): no
 * charset or `us-ascii` on 8-bit text, a charset nobody knows (`unknown-8bit`), Windows-1252 labelled
 * UTF-8, UTF-8 labelled GB2312, EUC-JP labelled ISO-2022-JP. Each was U+FFFDs (or, for Latin-1's
 * 0x80–0x9F, invisible control characters) in the parsed text and html; the stored message and the
 * parts served as files keep their bytes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { partBytes } from '../../functions/core/message.ts';
import { decodeUtf8OrWindows1252 } from '../../functions/core/mime-header.ts';

const parser = new MailparserAdapter();

async function parseFixture(name: string) {
  const result = await parser.parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url)));
  assert.ok(result.ok, name);
  return result;
}

async function parseText(raw: Buffer) {
  const result = await parser.parse(raw);
  assert.ok(result.ok);
  return result.summary;
}

describe('text bodies in the wrong or no charset', () => {
  it('UTF-8 with no charset is read as UTF-8', async () => {
    const { summary } = await parseFixture('body-utf8-no-charset.eml');
    assert.equal(summary.text, 'Grüße aus Köln: die Straßenbahnhaltestelle „Domplatz“ ist gesperrt.\n');
  });

  it('Windows-1252 labelled us-ascii is read as Windows-1252, in the text and the html; the attached text file keeps its bytes', async () => {
    const { summary, parts } = await parseFixture('body-cp1252-us-ascii.eml');
    const line = 'Dessert du jour: crème brûlée “maison” – 4,50 €, the chef’s favourite.';
    assert.equal(summary.text, line);
    assert.equal(summary.html, `<p>${line}</p>`);
    assert.deepEqual(
      summary.attachments.map((a) => [a.filename, a.charset]),
      [['menu.txt', 'us-ascii']],
    );
    assert.ok(partBytes(parts[0] as never).equals(Buffer.from('cr\xe8me br\xfbl\xe9e', 'latin1')));
  });

  it('a charset no decoder knows (unknown-8bit) is read as UTF-8 where it is, else Windows-1252', async () => {
    const { summary } = await parseFixture('body-unknown-8bit.eml');
    assert.equal(summary.text, 'Smörgåsbord på fredag, hälsningar från Jörg.\n');
  });

  it('Windows-1252 labelled UTF-8: its UTF-8 stays UTF-8, every other byte is its Windows-1252 character', async () => {
    const { summary } = await parseFixture('body-utf8-mislabelled.eml');
    assert.equal(
      summary.text,
      'Estimado Señor Muñoz, la reunión es mañana – a las 10.\n> Zitat: Grüße aus München\n',
    );
  });

  it('Latin-1 is read as Windows-1252; UTF-8 labelled GB2312 and EUC-JP labelled ISO-2022-JP in the charset they are', async () => {
    const { summary } = await parseFixture('body-legacy-mislabels.eml');
    assert.equal(
      summary.text,
      'Don’t forget the café … at 10.\n你好！会议改到星期五。\n次のあて先へのメッセージは送信できませんでした。',
    );
  });

  it('keeps what is right as it was: ASCII, UTF-8, a legacy charset, a U+FFFD sent as such, UTF-7 left undecoded', async () => {
    const head = (charset: string) => `Subject: x\r\nContent-Type: text/plain; charset=${charset}\r\n\r\n`;
    const cases: [Buffer, string][] = [
      [Buffer.from(`${head('us-ascii')}plain ASCII\r\n`), 'plain ASCII\n'],
      [Buffer.from(`${head('utf-8')}naïve � as sent\r\n`), 'naïve � as sent\n'],
      [
        Buffer.concat([Buffer.from(head('koi8-r')), Buffer.from([0xf0, 0xd2, 0xc9, 0xd7, 0xc5, 0xd4])]),
        'Привет',
      ],
      [
        Buffer.from(`${head('big5')}${Buffer.from([0xa4, 0xa4, 0xa4, 0xe5]).toString('latin1')}`, 'latin1'),
        '中文',
      ],
      // UTF-7 is never decoded (it carries markup past filters): as before, its ASCII as it is.
      [Buffer.from(`${head('utf-7')}+ADw-script+AD4-\r\n`), '+ADw-script+AD4-\n'],
    ];
    for (const [raw, text] of cases) assert.equal((await parseText(raw)).text, text);
  });

  it('one damaged character in a double-byte charset does not switch the whole text to a sibling charset', async () => {
    // Big5 for 中文中文… with one broken pair: GBK reads every pair, but Big5 is what the text is.
    const big5 = Buffer.from([0xa4, 0xa4, 0xa4, 0xe5]);
    const body = Buffer.concat([...Array(20).fill(big5), Buffer.from([0xa4, 0x80]), big5]);
    const raw = Buffer.concat([
      Buffer.from('Subject: x\r\nContent-Type: text/plain; charset=big5\r\n\r\n'),
      body,
    ]);
    const { text } = await parseText(raw);
    assert.ok(text?.startsWith('中文中文'), text ?? '');
  });

  it('reads a body the same however the parser is fed it: 8-bit bytes past the first 64 KiB, and across chunks', async () => {
    const ascii = 'x'.repeat(70 * 1024);
    const raw = Buffer.concat([
      Buffer.from('Subject: x\r\n\r\n'),
      Buffer.from(ascii),
      Buffer.from('\r\nGr\xfc\xdfe, caf\xe9\r\n', 'latin1'),
      Buffer.from('und München\r\n', 'utf8'),
    ]);
    assert.equal((await parseText(raw)).text, `${ascii}\nGrüße, café\nund München\n`);
  });

  it('reads a long base64 body (decoded in chunks that cut UTF-8 sequences) as it reads the whole', async () => {
    // UTF-8 of 1, 2, 3 and 4 bytes, and Windows-1252 bytes, over some 300 KB.
    const unit = Buffer.concat([Buffer.from('a Grüße € 😀 '), Buffer.from('caf\xe9 \x93ok\x94\n', 'latin1')]);
    const body = Buffer.concat(Array(12_000).fill(unit));
    const raw = Buffer.concat([
      Buffer.from('Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n'),
      Buffer.from(`${body.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n`),
    ]);
    const { text } = await parseText(raw);
    assert.equal(text, decodeUtf8OrWindows1252(body));
    assert.ok(text?.startsWith('a Grüße € 😀 café “ok”\n'));
  });
});

describe('decodeUtf8OrWindows1252', () => {
  it('keeps well-formed UTF-8 and reads every other byte as Windows-1252, nothing becoming U+FFFD', () => {
    const cases: [number[], string][] = [
      [[0x63, 0x61, 0x66, 0xc3, 0xa9], 'café'],
      [[0x63, 0x61, 0x66, 0xe9], 'café'],
      [[0x80, 0x92, 0x81, 0x9d], '€’\x81\x9d'],
      // Overlong, surrogate, past U+10FFFF, cut off: not UTF-8, so byte by byte.
      [[0xc0, 0xaf], 'À¯'],
      [[0xed, 0xa0, 0x80], 'í\xa0€'],
      [[0xf4, 0x90, 0x80, 0x80], 'ô\x90€€'],
      [[0xe2, 0x82], 'â‚'],
      [[0xf0, 0x9f, 0x98, 0x80, 0xe9], '😀é'],
    ];
    for (const [bytes, text] of cases)
      assert.equal(decodeUtf8OrWindows1252(Buffer.from(bytes)), text, String(bytes));
  });

  it("takes as UTF-8 exactly the sequences the platform's strict UTF-8 decoder takes, at every lead and continuation boundary, cut off or not", () => {
    const strict = new TextDecoder('utf-8', { fatal: true });
    /** One code point from these bytes, or null when they are no well-formed UTF-8 sequence of one. */
    const sequence = (bytes: number[]) => {
      try {
        const text = strict.decode(Uint8Array.from(bytes));
        return [...text].length === 1 ? text : null;
      } catch {
        return null;
      }
    };
    /** The reading the module promises: UTF-8 sequences as such, every other byte its Windows-1252 character. */
    const expected = (bytes: number[]) => {
      let out = '';
      for (let i = 0; i < bytes.length; ) {
        const length = [2, 3, 4].find(
          (n) => i + n <= bytes.length && sequence(bytes.slice(i, i + n)) !== null,
        );
        if ((bytes[i] as number) >= 0x80 && length !== undefined) {
          out += sequence(bytes.slice(i, i + length));
          i += length;
        } else {
          const byte = bytes[i] as number;
          out += byte >= 0x80 && byte <= 0x9f ? WINDOWS_1252_80_9F[byte - 0x80] : String.fromCharCode(byte);
          i += 1;
        }
      }
      return out;
    };
    // WHATWG's Windows-1252 at 0x80–0x9F (above it, Latin-1); 0x81, 0x8D, 0x8F, 0x90 and 0x9D stay as they are.
    const WINDOWS_1252_80_9F = '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ';
    // The bytes around each boundary of RFC 3629's table: leads, and the range each continuation may take.
    const edges = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef];
    const tails = [...edges, 0xf0, 0xf4, 0xf5, 0xff];
    const cases: number[][] = [];
    const leads = [
      0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4,
    ];
    for (const lead of [...leads, 0xf5, 0xf8, 0xfe, 0xff]) {
      for (const c1 of tails) {
        cases.push([lead], [lead, c1], [0x61, lead, c1, 0x62]);
        for (const c2 of [0x7f, 0x80, 0xbf, 0xc0]) {
          cases.push([lead, c1, c2], [lead, c1, c2, 0x62]);
          for (const c3 of [0x7f, 0x80, 0xbf, 0xc0]) cases.push([lead, c1, c2, c3, 0x62]);
        }
      }
    }
    for (const bytes of cases)
      assert.equal(
        decodeUtf8OrWindows1252(Buffer.from(bytes)),
        expected(bytes),
        Buffer.from(bytes).toString('hex'),
      );
  });
});
