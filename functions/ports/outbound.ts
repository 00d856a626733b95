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

export interface Outbound {
  /** Sends; returns the provider's message id. Throws on failure. */
  send(message: OutboundMessage): Promise<{ messageId: string }>;
}
