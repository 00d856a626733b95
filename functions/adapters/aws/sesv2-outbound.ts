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
import { SendEmailCommand, type SESv2Client } from '@aws-sdk/client-sesv2';
import type { Outbound, OutboundMessage } from '../../ports/outbound.ts';

/** SES refuses raw messages above 40 MB (after base64 in the API call, the SDK handles that). */
export const MAX_RAW_MESSAGE_BYTES = 40 * 1024 * 1024;
/** SES allows at most 50 recipients per SendEmail call. */
export const MAX_RECIPIENTS = 50;

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
    if (message.to.length === 0) throw new RangeError('Sesv2Outbound: no recipients');
    if (message.to.length > MAX_RECIPIENTS) {
      throw new RangeError(`Sesv2Outbound: at most ${MAX_RECIPIENTS} recipients per message, got ${message.to.length}`);
    }
    if (message.raw.length > MAX_RAW_MESSAGE_BYTES) {
      throw new RangeError(`Sesv2Outbound: message of ${message.raw.length} bytes exceeds SES's ${MAX_RAW_MESSAGE_BYTES}`);
    }
    const r = await this.client.send(
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
    if (r.MessageId === undefined) throw new Error('SES SendEmail returned no MessageId');
    return { messageId: r.MessageId };
  }
}
