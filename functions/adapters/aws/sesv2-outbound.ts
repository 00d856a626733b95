/**
 * Outbound through Amazon SES v2 `SendEmail` with Raw content: the message goes out byte for
 * byte as given (headers included), to exactly the envelope recipients in `to`.
 * https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
 *
 * SES sets the envelope sender (MAIL FROM) itself, from the sending identity or its custom MAIL
 * FROM domain; `from` becomes FromEmailAddress, which SES requires to be a verified identity.
 * Rewriting a forwarded message's From to such an identity is the caller's job (forwarding).
 * SES has no idempotency key: the key is attached as a message tag (hashed, since tag values
 * allow only [A-Za-z0-9_-]) so a duplicate send can at least be traced in SES event records.
 */
import { createHash } from 'node:crypto';
import { type SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2';
import { SendError } from '../../core/errors.ts';
import type { Outbound, OutboundMessage } from '../../ports/outbound.ts';
import { sesSendError } from './ses-errors.ts';

/** SES refuses raw messages above 40 MB (after base64 in the API call, the SDK handles that). */
export const MAX_RAW_MESSAGE_BYTES = 40 * 1024 * 1024;
/** SES allows at most 50 recipients per SendEmail call. */
export const MAX_RECIPIENTS = 50;

/**
 * SES errors that sending again cannot fix: the message or a recipient is refused, the identity
 * is not verified, or the account may not send. Everything else (throttling, 5xx, network) is
 * transient; the SDK already retried those a few times before we see them.
 * https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html#API_SendEmail_Errors
 */
const PERMANENT_SES_ERRORS = new Set([
  'MessageRejected',
  'MailFromDomainNotVerifiedException',
  'AccountSuspendedException',
  'SendingPausedException',
  'BadRequestException',
  'NotFoundException',
]);

function toSendError(err: unknown): SendError {
  return sesSendError('SendEmail', err, PERMANENT_SES_ERRORS);
}

export interface Sesv2OutboundOptions {
  /** A client created once per process and shared. */
  readonly client: SESv2Client;
  /** SES configuration set for event publishing (bounces, complaints, deliveries). */
  readonly configurationSetName?: string;
}

export class Sesv2Outbound implements Outbound {
  private readonly client: SESv2Client;
  private readonly configurationSetName: string | undefined;

  constructor(options: Sesv2OutboundOptions) {
    this.client = options.client;
    this.configurationSetName = options.configurationSetName;
  }

  async send(message: OutboundMessage): Promise<{ messageId: string }> {
    // Checked here rather than left to SES: these can never succeed, so they are permanent.
    if (message.to.length === 0) throw new SendError('no recipients', true);
    if (message.to.length > MAX_RECIPIENTS) {
      throw new SendError(`at most ${MAX_RECIPIENTS} recipients per message, got ${message.to.length}`, true);
    }
    if (message.raw.length > MAX_RAW_MESSAGE_BYTES) {
      throw new SendError(
        `message of ${message.raw.length} bytes exceeds SES's limit of ${MAX_RAW_MESSAGE_BYTES}`,
        true,
      );
    }
    let r: { MessageId?: string | undefined };
    try {
      r = await this.client.send(
        new SendEmailCommand({
          // Empty (a null reverse-path) leaves SES to take the sender from the message's From header.
          FromEmailAddress: message.from === '' ? undefined : message.from,
          Destination: { ToAddresses: [...message.to] },
          Content: { Raw: { Data: message.raw } },
          ConfigurationSetName: this.configurationSetName,
          EmailTags: [
            {
              Name: 'idempotency-key',
              Value: createHash('sha256').update(message.idempotencyKey).digest('hex').slice(0, 64),
            },
          ],
        }),
      );
    } catch (err) {
      throw toSendError(err);
    }
    if (r.MessageId === undefined) throw new SendError('SES SendEmail returned no MessageId', false);
    return { messageId: r.MessageId };
  }
}
