/**
 * Bouncer: tells the sender of a message that was accepted and then refused (a recipient that does
 * not exist, a `reject` route, a `reject` policy) that it was not delivered, as a delivery status
 * notification (RFC 3464). Adapter: SES `SendBounce` (AWS), which SES allows for mail it received
 * in the last 24 hours. Locally there is none: the listener refuses such recipients at RCPT, so the
 * client already has its answer (docs/adr/0016-bounces.md).
 */
export interface BouncedRecipient {
  /** The envelope recipient refused. */
  readonly address: string;
  /** The SMTP reply code it would have got at RCPT (5xx). */
  readonly code: number;
  /** The reply text, starting with its enhanced status code when it has one (`5.1.1 …`). */
  readonly message: string;
}

export interface BounceRequest {
  /** SES's id of the received message (only mail SES received can be bounced). */
  readonly sesMessageId: string;
  /** The From of the notification: an address at a verified identity (`mailer-daemon@<our domain>`). */
  readonly from: string;
  readonly recipients: readonly BouncedRecipient[];
  /** Human-readable text of the notification. */
  readonly explanation: string;
}

export interface Bouncer {
  /** Sends the notification; returns the provider's message id. Throws a SendError on failure. */
  bounce(request: BounceRequest): Promise<{ messageId: string }>;
}
