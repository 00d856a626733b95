/**
 * The POP3 bridge cuts TOP itself (from the API's TOP, or from the whole message when the API will
 * not answer it in one response, `top_too_large`): `writeDotStuffed` with a body line count must
 * send what the API's TOP gives for the message with its line ends made CRLF (api/top.ts counts
 * lines by LF alone; the wire ends a line at a bare CR too), with RETR's CRLF line endings and
 * dot-stuffing, however the bytes are chunked.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { writeDotStuffed } from '../../functions/local/pop3-bridge.ts';
import { referenceTop } from '../helpers/api.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

/** What the bridge writes for `raw`, in chunks of `chunkSize`, cut after `lines` body lines; and how much of `raw` it read. */
async function sent(raw: Buffer, chunkSize: number, lines?: number): Promise<{ wire: string; read: number }> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out.push(Buffer.from(chunk));
      done();
    },
  });
  let read = 0;
  async function* chunks() {
    for (let i = 0; i < raw.length; i += chunkSize) {
      read = Math.min(raw.length, i + chunkSize);
      yield raw.subarray(i, i + chunkSize);
    }
  }
  await writeDotStuffed(chunks(), sink as unknown as Socket, lines);
  return { wire: Buffer.concat(out).toString('latin1'), read };
}

/** Every line end (CRLF, bare LF, bare CR) as CRLF, as the POP3 wire has them. */
function toCrlf(bytes: Buffer): Buffer {
  return Buffer.from(bytes.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');
}

/** A POP3 multi-line body: CRLF line ends (one added at the end if missing), dots stuffed, then `.` CRLF. */
function onTheWire(bytes: Buffer): string {
  const crlf = toCrlf(bytes).toString('latin1');
  const ended = crlf === '' || crlf.endsWith('\r\n') ? crlf : `${crlf}\r\n`;
  return `${ended.replace(/(^|\r\n)\./g, '$1..')}.\r\n`;
}

/** TOP as the wire counts lines: the API's rule, on the message with its line ends made CRLF. */
function wireTop(raw: Buffer, lines: number): Buffer {
  return referenceTop(toCrlf(raw), lines);
}

const b = (s: string) => Buffer.from(s, 'latin1');

describe('writeDotStuffed with a body line count (TOP cut by the bridge)', () => {
  const cases: [string, Buffer][] = [
    ['CRLF', b('Subject: a\r\nX: y\r\n\r\n.dot\r\nbody\r\n..two\r\nlast\r\n')],
    ['bare LF', b('Subject: a\n\n.dot\nbody\n.\nlast\n')],
    ['mixed, no final line end', b('Subject: a\r\n\nbody\r\n.x\r\nlast')],
    ['blank line first', b('\r\n.body\r\nmore\r\n')],
    ['no blank line: all headers', b('Subject: a\r\nX: y\r\n')],
    ['empty body lines', b('Subject: a\n\n\n\n.\n\nend\n')],
    ['CR only (classic Mac)', b('Subject: a\rX: y\r\r.dot\rbody\r.\rlast\r')],
    ['CR-only message behind CRLF trace headers', b('Received: x\r\nSubject: a\r\rone\r.two\rthree\r')],
    ['CR CR LF', b('Subject: a\r\r\nbody\r\r\n.x\r\n')],
  ];
  for (const [name, raw] of cases) {
    it(`sends the API's TOP n, stuffed: ${name}, in any chunking`, async () => {
      for (const lines of [0, 1, 2, 3, 10, 2 ** 31 - 1]) {
        for (const chunkSize of [1, 2, 3, 7, 1 << 16]) {
          const { wire } = await sent(raw, chunkSize, lines);
          assert.equal(wire, onTheWire(wireTop(raw, lines)), `TOP ${lines}, chunks of ${chunkSize}`);
        }
      }
    });
  }

  it('sends every fixture as the API would, and RETR unchanged without a count', async () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.eml'));
    for (const file of files) {
      const raw = readFileSync(join(FIXTURES, file));
      for (const lines of [0, 1, 5]) {
        assert.equal(
          (await sent(raw, 4096, lines)).wire,
          onTheWire(wireTop(raw, lines)),
          `${file} TOP ${lines}`,
        );
      }
      assert.equal((await sent(raw, 4096)).wire, onTheWire(raw), `${file} RETR`);
    }
  });

  it('stops reading the source once the cut is sent', async () => {
    const raw = b(`Subject: a\r\n\r\n${'line\r\n'.repeat(100_000)}`);
    const { wire, read } = await sent(raw, 1024, 3);
    assert.equal(wire, 'Subject: a\r\n\r\nline\r\nline\r\nline\r\n.\r\n');
    assert.equal(read, 1024, 'one chunk read, not the whole message');
  });
});
