/** Outbound: sends a raw message. Adapters: SESv2 SendEmail Raw (AWS); SMTP smarthost or outbox folder (local). */
export interface OutboundMessage {
  /** Envelope sender (MAIL FROM). */
  readonly from: string;
  /** Envelope recipients (RCPT TO). */
  readonly to: readonly string[];
  /** The complete message, headers and body. */
  readonly raw: Buffer;
  /** Deterministic key so that a retried send can be recognized (message id × destination). */
  readonly idempotencyKey: string;
}

export interface OutboundResult {
  readonly messageId: string;
  /**
   * Recipients the provider refused while it took the message for the others (an SMTP smarthost's
   * RCPT replies): the message was sent, but not to them. Absent when it took every recipient.
   */
  readonly refused?: readonly string[];
}

export interface Outbound {
  /** Sends; returns the provider's message id. Throws on failure, which includes refusing every recipient. */
  send(message: OutboundMessage): Promise<OutboundResult>;
}
