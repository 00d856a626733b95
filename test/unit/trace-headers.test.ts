/**
 * The trace headers the local relay prepends use the message's own line ending, found across the
 * chunks the SMTP listener hands over (the first LF may sit in a later chunk than its CR).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type IngestInput, traceHeaders } from '../../functions/local/ingest.ts';

function eolOf(body: IngestInput['body']): string {
  const trace = traceHeaders(
    { body, mailFrom: 'a@remote.test', recipients: ['bob@example.test'], via: { protocol: 'ESMTP' } },
    'id',
    new Date(0),
  ).toString('latin1');
  if (/[^\r]\n/.test(trace)) return 'LF';
  assert.match(trace, /\r\n$/);
  return 'CRLF';
}

const b = (s: string) => Buffer.from(s, 'latin1');

describe('traceHeaders line endings', () => {
  it('follow the first line break of the body, whether one Buffer or chunks', () => {
    assert.equal(eolOf(b('Subject: a\r\n\r\nbody\r\n')), 'CRLF');
    assert.equal(eolOf(b('Subject: a\n\nbody\n')), 'LF');
    assert.equal(eolOf([b('Subject: a\r'), b('\nbody')]), 'CRLF');
    assert.equal(eolOf([b('Subject: a'), b('\nbody')]), 'LF');
    assert.equal(eolOf([b(''), b('Subject: a'), b(''), b('\r\n')]), 'CRLF');
    assert.equal(eolOf([b('\n'), b('x')]), 'LF');
    // No line break at all (or no body): CRLF, as RFC 5322 has it.
    assert.equal(eolOf([b('no line break')]), 'CRLF');
    assert.equal(eolOf([]), 'CRLF');
    assert.equal(eolOf(b('')), 'CRLF');
  });
});
