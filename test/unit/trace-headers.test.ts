/**
 * The trace headers the local relay prepends: the envelope sender as `Return-Path:` (as SES stores
 * it), in the message's own line ending, found across the chunks the SMTP listener hands over (the
 * first LF may sit in a later chunk than its CR); and the blank line a message without headers lacks.
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

const trace = (input: Partial<IngestInput> & Pick<IngestInput, 'body'>) =>
  traceHeaders(
    { mailFrom: 'a@remote.test', recipients: ['bob@example.test'], via: { protocol: 'ESMTP' }, ...input },
    'id',
    new Date(0),
  ).toString('latin1');

describe('traceHeaders content', () => {
  it('start with the envelope sender as Return-Path (<> for a bounce), unless it is unknown (import)', () => {
    assert.match(
      trace({ body: b('Subject: a\r\n\r\nx\r\n') }),
      /^Return-Path: <a@remote\.test>\r\nReceived: /,
    );
    assert.match(trace({ body: b('Subject: a\n\nx\n'), mailFrom: '' }), /^Return-Path: <>\nReceived: /);
    assert.match(trace({ body: b('Subject: a\r\n\r\nx\r\n'), returnPath: false }), /^Received: /);
    assert.match(
      trace({ body: b('Subject: a\r\n\r\nx\r\n'), mailFrom: 'we\u00efrd\r\n@x' }),
      /^Return-Path: <we\?rd\?\?@x>\r\n/,
      'not a header injection',
    );
  });

  it("name the client's internationalized HELO/EHLO name in its ASCII form (it was written as ?s)", () => {
    const received = (helo: string) =>
      /^Received: from (\S+) /m.exec(
        trace({ body: b('Subject: a\r\n\r\nx\r\n'), via: { protocol: 'ESMTP', helo } }),
      )?.[1];
    assert.equal(received('bücher.example'), 'xn--bcher-kva.example');
    assert.equal(received('mail.例え.テスト'), 'mail.xn--r8jz45g.xn--zckzah');
    assert.equal(received('xn--bcher-kva.example'), 'xn--bcher-kva.example');
    assert.equal(received('[192.0.2.1]'), '[192.0.2.1]');
    // Not a domain name: still no raw 8-bit or control character in the header.
    assert.equal(received('b\u00fc\r\nX-Injected: 1'), 'b???X-Injected:?1');
  });

  it('end with a blank line when the message has no header block, and only then', () => {
    const ends = (body: IngestInput['body']) =>
      trace({ body }).endsWith('none\r\n\r\n') || trace({ body }).endsWith('none\n\n');
    assert.equal(ends(b('just body text\r\nsecond line\r\n')), true);
    assert.equal(ends(b('Hello')), true);
    assert.equal(ends([b('just bo'), b('dy\nmore\n')]), true);
    assert.equal(ends(b('From me to you\r\nhello\r\n')), true, 'a sentence starting "From " is body');
    assert.equal(ends(b('From 9:00 to 17:00 the office is closed.\r\nSubject: body text\r\n')), true);
    assert.equal(ends(b('\xef\xbb\xbfHello, plain text with a BOM.\r\nline 2\r\n')), true, 'BOM, then text');
    for (const headed of [
      'Subject: a\r\n\r\nx\r\n',
      'X-Odd-Name_1 : obsolete space before the colon\r\n\r\nx\r\n',
      '\r\nno headers, but the blank line\r\n',
      'From sender@example.test Thu Mar  6 10:00:00 2025\nSubject: mbox\n\nx\n',
      '\xef\xbb\xbfSubject: BOM\r\n\r\nx\r\n',
      '',
    ]) {
      assert.equal(ends(b(headed)), false, JSON.stringify(headed));
    }
    assert.equal(ends([b('Subj'), b('ect: split\r\n\r\n')]), false);
  });
});

describe('a message starting with a folded line', () => {
  it('continues a note of ours, never the Authentication-Results above it (no forged results)', () => {
    const forged = b(
      ' dkim=pass header.d=bank.example; spf=pass\r\nFrom: Bank <ceo@bank.example>\r\n\r\nPay\r\n',
    );
    const t = trace({ body: forged });
    assert.match(
      t,
      /Authentication-Results: \S+; none\r\nX-Mail-Relay-Note: the message began with a folded line:\r\n$/,
    );
    assert.match(trace({ body: b('\tindented\nSubject: x\n\nbody\n') }), /X-Mail-Relay-Note: [^\n]*:\n$/);
    assert.doesNotMatch(trace({ body: b('Subject: a\r\n\r\nx\r\n') }), /X-Mail-Relay-Note/);
    // Behind a BOM (which the parser reads past) too.
    assert.match(
      trace({ body: b('\xef\xbb\xbf\tdkim=pass\r\nSubject: s\r\n\r\nx\r\n') }),
      /X-Mail-Relay-Note: [^\n]*\r\n$/,
    );
    assert.doesNotMatch(
      trace({ body: b('\xef\xbb\xbfSubject: s\r\n\r\nx\r\n') }),
      /X-Mail-Relay-Note|none\r\n\r\n$/,
    );
  });
});
