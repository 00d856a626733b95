/**
 * What of an SES error a sender may be shown (`SendError.reply`, which `POST …/send` puts in its
 * answer): SES's reasons for refusing the message, never an access error naming the account and role.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sesSendError } from '../../functions/adapters/aws/ses-errors.ts';

const named = (name: string, message: string) => Object.assign(new Error(message), { name });
const PERMANENT = new Set(['MessageRejected']);

describe('sesSendError', () => {
  it("a refusal of the message carries SES's reason as the reply a sender may see", () => {
    const err = sesSendError(
      'SendEmail',
      named(
        'MessageRejected',
        'Email address is not verified. The following identities failed the check: x@y.test',
      ),
      PERMANENT,
    );
    assert.equal(err.permanent, true);
    assert.equal(
      err.reply,
      'MessageRejected: Email address is not verified. The following identities failed the check: x@y.test',
    );
  });

  it('an access error or throttling has no reply: its text (account id, role ARN) stays in the log', () => {
    const denied = sesSendError(
      'SendEmail',
      named(
        'AccessDeniedException',
        'User: arn:aws:sts::123456789012:assumed-role/MailRelay-Send/x is not authorized to perform: ses:SendEmail',
      ),
      PERMANENT,
    );
    assert.equal(denied.reply, undefined);
    assert.match(denied.message, /123456789012/, 'the log still has it all');
    assert.equal(
      sesSendError('SendEmail', named('TooManyRequestsException', 'slow down'), PERMANENT).reply,
      undefined,
    );
  });

  it('tells the sending rate from the daily quota by what SES says, whatever it names the error', () => {
    const limit = (name: string, message: string, status = 400) =>
      sesSendError(
        'SendEmail',
        Object.assign(named(name, message), { $metadata: { httpStatusCode: status } }),
        PERMANENT,
      ).limit;
    // SES v2 (SendEmail's documented errors), and SES v1's `Throttling` with the same messages.
    assert.equal(limit('TooManyRequestsException', 'Maximum sending rate exceeded.', 429), 'rate');
    assert.equal(limit('Throttling', 'Maximum sending rate exceeded.'), 'rate');
    assert.equal(limit('LimitExceededException', 'Daily message quota exceeded.'), 'daily_quota');
    assert.equal(limit('TooManyRequestsException', 'Daily message quota exceeded.', 429), 'daily_quota');
    assert.equal(limit('Throttling', 'Daily message quota exceeded.'), 'daily_quota');
    // A throttling name without either message is the rate, the limit that lifts by itself.
    assert.equal(limit('TooManyRequestsException', 'Too many requests', 429), 'rate');
    assert.equal(limit('LimitExceededException', 'Limit exceeded'), 'rate');
    // Neither limit: a failure of another kind, and never a refusal of the message.
    assert.equal(limit('InternalFailure', 'We encountered an internal error', 500), undefined);
    assert.equal(limit('MessageRejected', 'Daily message quota exceeded.'), undefined);
  });
});
