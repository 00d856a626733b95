/**
 * `crlfSize` is the size POP3 reports (RFC 1939 §11: counted with CRLF line ends, before
 * dot-stuffing), so it must equal what the POP3 bridge's `writeDotStuffed` actually sends for the
 * stored bytes, less the stuffed dots and the terminating `.` line, however the bytes are chunked.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { crlfSize } from '../../functions/core/mime-header.ts';
import { writeDotStuffed } from '../../functions/local/pop3-bridge.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

/** The message as the bridge sends it, with the dot-stuffing and the final `.` CRLF taken off again. */
async function sentOctets(raw: Buffer, chunkSize: number): Promise<Buffer> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out.push(Buffer.from(chunk));
      done();
    },
  });
  async function* chunks() {
    for (let i = 0; i < raw.length; i += chunkSize) yield raw.subarray(i, i + chunkSize);
  }
  await writeDotStuffed(chunks(), sink as unknown as Socket);
  const wire = Buffer.concat(out).toString('latin1');
  assert.ok(wire.endsWith('.\r\n'), 'ends with the terminating line');
  const body = wire.slice(0, -3);
  assert.ok(body === '' || body.endsWith('\r\n'), 'every line ends in CRLF');
  assert.doesNotMatch(body, /[^\r]\n|^\n/, 'no bare LF is sent');
  assert.doesNotMatch(body, /\r(?!\n)/, 'no bare CR is sent');
  return Buffer.from(body.replace(/(^|\r\n)\./g, '$1'), 'latin1');
}

const b = (s: string) => Buffer.from(s, 'latin1');

describe('crlfSize', () => {
  it('is the length of a CRLF message, and counts each bare LF, bare CR and a missing last line end', () => {
    assert.equal(crlfSize(b('')), 0);
    assert.equal(crlfSize(b('a\r\nb\r\n')), 6);
    assert.equal(crlfSize(b('a\nb\n')), 6);
    assert.equal(crlfSize(b('\n')), 2);
    assert.equal(crlfSize(b('a\r\nb')), 6, 'a last line without its line end gains CRLF');
    assert.equal(crlfSize(b('a\r')), 3, 'a CR alone at the end gains its LF');
    assert.equal(crlfSize(b('a\n\r\nb\r\n')), 8, 'mixed line ends');
    assert.equal(crlfSize(b('a\rb\r\n')), 6, 'a bare CR ends a line, as on an SMTP wire');
    assert.equal(crlfSize(b('a\rb\r')), 6, 'CR-only line ends (classic Mac mail)');
    assert.equal(crlfSize(b('a\r\r\n')), 5, 'a bare CR before a CRLF: two line ends');
  });

  const cases: [string, Buffer][] = [
    ['CRLF', b('Subject: a\r\n\r\n.dot\r\nbody\r\n')],
    ['bare LF', b('Subject: a\n\n.dot\n..two\nbody\n')],
    ['mixed, no final line end', b('Subject: a\r\n\nbody\r\nlast')],
    ['ends in CR', b('Subject: a\n\nbody\r')],
    ['only line ends', b('\n\r\n\n')],
    ['CR only', b('Subject: a\r\r.dot\rbody\r')],
    ['bare CR in a CRLF message, CR CR LF', b('Subject: a\r\n\r\nx\ry\r\r\n.z\r\n')],
    ['empty', b('')],
  ];
  for (const [name, raw] of cases) {
    it(`equals the octets the POP3 bridge sends: ${name}, in any chunking`, async () => {
      for (const chunkSize of [1, 2, 3, 7, 1 << 16]) {
        const sent = await sentOctets(raw, chunkSize);
        assert.equal(crlfSize(raw), sent.length, `chunks of ${chunkSize}`);
      }
    });
  }

  it('equals the octets the POP3 bridge sends for every fixture message', async () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.eml'));
    assert.ok(files.length > 5);
    for (const file of files) {
      const raw = readFileSync(join(FIXTURES, file));
      assert.equal(crlfSize(raw), (await sentOctets(raw, 4096)).length, file);
    }
  });
});
