/** The delivery status notifications the local outbox returns for refused local recipients. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { buildDsn } from '../../functions/core/dsn.ts';

const at = new Date('2026-11-27T12:00:00Z');

describe('buildDsn', () => {
  it('reports each refused recipient with its status, and returns the header block only (CRLF)', async () => {
    const original = Buffer.from('From: a@x.test\nTo: b@y.test, c@y.test\nSubject: hi\n\nthe body\n');
    const raw = buildDsn({
      reportingMta: 'relay.local',
      to: 'a@x.test',
      refused: [
        { recipient: 'b@y.test', code: 550, message: '5.1.1 Recipient address rejected: no such user' },
        { recipient: 'c@y.test', code: 551, message: 'User has moved' },
      ],
      original,
      arrivalDate: at,
      now: at,
    });
    const text = raw.toString('latin1');
    assert.doesNotMatch(text, /[^\r]\n/, 'every line ends with CRLF');
    assert.match(text, /^Final-Recipient: rfc822; b@y\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r$/m);
    // No enhanced status code in the reply: one from the reply code's class.
    assert.match(text, /^Final-Recipient: rfc822; c@y\.test\r\nAction: failed\r\nStatus: 5\.0\.0\r$/m);
    assert.match(text, /^Subject: hi\r$/m);
    assert.doesNotMatch(text, /the body/, 'the original body is not returned');

    const parsed = await new MailparserAdapter().parse(raw);
    assert.ok(parsed.ok);
    assert.equal(parsed.summary.subject, 'Undelivered Mail Returned to Sender');
    assert.deepEqual(parsed.summary.to, [{ name: '', address: 'a@x.test' }]);
    assert.deepEqual(parsed.summary.from, [
      { name: 'Mail Delivery System', address: 'MAILER-DAEMON@relay.local' },
    ]);
  });

  it('keeps header fields ASCII whatever the addresses and texts hold', () => {
    const raw = buildDsn({
      reportingMta: 'relay.local',
      to: 'a@x.test\r\nBcc: eve@z.test',
      refused: [{ recipient: 'ü@y.test', code: 550, message: '5.1.1 nein\r\nX: y' }],
      original: Buffer.from('Subject: no blank line'),
      arrivalDate: at,
      now: at,
    });
    const text = raw.toString('latin1');
    assert.doesNotMatch(text, /^Bcc:/m);
    assert.doesNotMatch(text, /^X: y/m);
    assert.match(text, /^Final-Recipient: rfc822; \?@y\.test\r$/m);
    assert.match(text, /^Subject: no blank line\r\n--dsn-[0-9a-f]+--\r\n$/m);
  });
});
