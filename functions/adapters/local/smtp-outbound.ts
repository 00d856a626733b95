/**
 * Outbound for local mode with a smarthost (`relay.smtp` in the config): every message is handed
 * over SMTP, as is (nodemailer's `raw`: no header is added or changed), with an explicit envelope.
 * SMTP itself requires CRLF line endings and dot-stuffing on the wire (RFC 5321 §2.3.8, §4.5.2);
 * nodemailer applies both, so a bare-LF message arrives with CRLF and otherwise the same bytes.
 */
import { createTransport, type Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport';
import { errorMessage, SendError, sendingLimitNamed } from '../../core/errors.ts';
import type { Outbound, OutboundMessage, OutboundResult } from '../../ports/outbound.ts';

/** A smarthost that does not answer within this long is treated as down (the router then retries). */
const CONNECTION_TIMEOUT_MS = 15_000;
/** Time allowed for the whole DATA phase of a large message on a slow link. */
const SOCKET_TIMEOUT_MS = 120_000;

export interface SmtpOutboundOptions {
  /** `smtp://host:port` or `smtps://user:pass@host:465`; a user name in an `smtp://` URL requires STARTTLS. */
  readonly url: string;
  /** The name we give in EHLO. @default the host name nodemailer finds */
  readonly name?: string;
}

/** nodemailer's errors carry the SMTP reply code and a short code (`EENVELOPE`, `ECONNECTION`, …). */
function replyCodeOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { responseCode?: unknown }).responseCode;
  return typeof code === 'number' ? code : undefined;
}

function smtpErrorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

export class SmtpOutbound implements Outbound {
  private readonly transport: Transporter<SMTPTransport.SentMessageInfo>;

  constructor(options: SmtpOutboundOptions) {
    const parsed = new URL(options.url);
    if (parsed.protocol !== 'smtp:' && parsed.protocol !== 'smtps:') {
      throw new TypeError(`SmtpOutbound: ${parsed.protocol} is not smtp: or smtps:`);
    }
    this.transport = createTransport({
      host: parsed.hostname,
      port: parsed.port === '' ? (parsed.protocol === 'smtps:' ? 465 : 25) : Number(parsed.port),
      secure: parsed.protocol === 'smtps:',
      ...(parsed.username
        ? {
            auth: { user: decodeURIComponent(parsed.username), pass: decodeURIComponent(parsed.password) },
            // With a password over smtp://, STARTTLS or no AUTH: nodemailer would otherwise send the
            // password in clear to a server that offers no STARTTLS, or whose offer a man in the middle
            // removed from the EHLO reply. (smtps:// is TLS from the start.)
            requireTLS: true,
          }
        : {}),
      ...(options.name === undefined ? {} : { name: options.name }),
      connectionTimeout: CONNECTION_TIMEOUT_MS,
      greetingTimeout: CONNECTION_TIMEOUT_MS,
      socketTimeout: SOCKET_TIMEOUT_MS,
    });
  }

  async send(message: OutboundMessage): Promise<OutboundResult> {
    try {
      const info = await this.transport.sendMail({
        envelope: { from: message.from, to: [...message.to] },
        raw: message.raw,
      });
      // The server's queue id (`250 2.0.0 Ok: queued as X`) is the best id we get back.
      const messageId = info.response || info.messageId;
      // nodemailer goes on to DATA when the smarthost accepts some recipients and refuses others
      // (refusing all is an error, below): the message has left for those it accepted, so this is
      // a send, not a failure a retry would repeat to them. Forwards have one recipient: never partial.
      return info.rejected.length > 0 ? { messageId, refused: info.rejected.map(String) } : { messageId };
    } catch (err) {
      const replyCode = replyCodeOf(err);
      const text = errorMessage(err);
      // RFC 5321 §4.2.1: 5yz is a permanent failure, but only a reply to the envelope (MAIL, RCPT:
      // nodemailer's EENVELOPE) or to the message (DATA: EMESSAGE) is about this message. A 5yz at
      // the greeting, to EHLO, to STARTTLS or to AUTH (a smarthost that refuses us, a wrong password) is the
      // relay's configuration failing: every message would fail the same way until it is mended, so
      // it is not the sender's refusal (422) and a forward is retried rather than given up. Such a
      // reply, like a connection error (host and port), says nothing about the message and stays
      // in the log.
      const code = smtpErrorCode(err);
      const aboutMessage = code === 'EENVELOPE' || code === 'EMESSAGE';
      const response = (err as { response?: unknown }).response;
      const reply =
        !aboutMessage || replyCode === undefined ? undefined : typeof response === 'string' ? response : text;
      throw new SendError(
        `smtp send failed: ${text}`,
        aboutMessage && replyCode !== undefined && replyCode >= 500,
        replyCode,
        {
          cause: err,
          reply,
          // SES's SMTP interface as the smarthost names its sending limits in a 454 (core/errors.ts).
          limit: replyCode !== undefined && replyCode < 500 ? sendingLimitNamed(text) : undefined,
        },
      );
    }
  }

  close(): void {
    this.transport.close();
  }
}
