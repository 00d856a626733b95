/**
 * Bouncer through Amazon SES (v1) `SendBounce`: SES builds the delivery status notification
 * (RFC 3464) for a message it received, and sends it to that message's return path from `from`,
 * which must be an address at a verified identity. SESv2 has no such operation.
 * https://docs.aws.amazon.com/ses/latest/APIReference/API_SendBounce.html
 * SES allows it up to 24 hours after receipt and about once per second per account: the client
 * (handlers/ses-bouncer.ts) retries throttling with client-side rate limiting; what still fails is
 * reported, not retried (see docs/adr/0016).
 */
import { type SESClient, SendBounceCommand } from '@aws-sdk/client-ses';
import { SendError } from '../../core/errors.ts';
import type { BouncedRecipient, BounceRequest, Bouncer } from '../../ports/bouncer.ts';
import { sesSendError } from './ses-errors.ts';

/** SES errors that asking again cannot fix (a refused request, an unverified sender). */
const PERMANENT_SES_ERRORS = new Set([
  'MessageRejected',
  'InvalidParameterValue',
  'ValidationError',
  'AccessDenied',
  'AccessDeniedException',
]);

/**
 * The enhanced status code (RFC 3463) of a reply text (`5.1.1 Recipient address rejected` → `5.1.1`),
 * or the generic one of its reply code's class when the text has none.
 */
export function enhancedStatus(recipient: Pick<BouncedRecipient, 'code' | 'message'>): string {
  const replyClass = String(recipient.code).charAt(0);
  const m = /^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)/.exec(recipient.message.trim());
  // A text whose code contradicts the reply's class (`550 4.2.2 …`) does not decide the status.
  if (m && m[1] === replyClass) return `${m[1]}.${m[2]}.${m[3]}`;
  return `${replyClass}.0.0`;
}

export class SesBouncer implements Bouncer {
  constructor(private readonly client: SESClient) {}

  async bounce(request: BounceRequest): Promise<{ messageId: string }> {
    if (request.recipients.length === 0) throw new SendError('no recipients to bounce', true);
    let r: { MessageId?: string | undefined };
    try {
      r = await this.client.send(
        new SendBounceCommand({
          OriginalMessageId: request.sesMessageId,
          BounceSender: request.from,
          Explanation: request.explanation,
          BouncedRecipientInfoList: request.recipients.map((rcpt) => ({
            Recipient: rcpt.address,
            RecipientDsnFields: {
              Action: 'failed',
              Status: enhancedStatus(rcpt),
              DiagnosticCode: `smtp; ${rcpt.code} ${rcpt.message}`,
            },
          })),
        }),
      );
    } catch (err) {
      throw sesSendError('SendBounce', err, PERMANENT_SES_ERRORS);
    }
    if (r.MessageId === undefined) throw new SendError('SES SendBounce returned no MessageId', false);
    return { messageId: r.MessageId };
  }
}
