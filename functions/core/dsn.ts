/**
 * Delivery status notifications (RFC 3464 in a RFC 6522 multipart/report): what a sending MTA
 * returns to a message's envelope sender when a recipient's server refused it. The local outbox
 * makes them for recipients in our own domains that the relay refuses, as SES would for mail it
 * could not deliver to our MX.
 */
import { createHash } from 'node:crypto';
import { rfc5322Date } from './mime-header.ts';

export interface RefusedRecipient {
  readonly recipient: string;
  /** The SMTP reply code the receiving side gave (e.g. 550). */
  readonly code: number;
  /** Its text, starting with the enhanced status code (e.g. `5.1.1 Recipient address rejected: …`). */
  readonly message: string;
}

export interface DsnInput {
  /** The host name that reports (Reporting-MTA, and the MAILER-DAEMON address). */
  readonly reportingMta: string;
  /** The envelope sender of the original message: the notification's recipient. */
  readonly to: string;
  readonly refused: readonly RefusedRecipient[];
  /** The original message: its header block is returned (not its body). */
  readonly original: Buffer;
  readonly arrivalDate: Date;
  readonly now: Date;
}

/** The status code a reply text starts with (`5.1.1 …`), or one derived from the reply code. */
function statusOf(r: RefusedRecipient): string {
  const m = /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(r.message);
  if (m?.[1] !== undefined) return m[1];
  return r.code >= 500 ? '5.0.0' : '4.0.0';
}

/** The original's header block, up to (not including) the blank line that ends it. */
function headerBlock(raw: Buffer): Buffer {
  const crlf = raw.indexOf('\r\n\r\n');
  const lf = raw.indexOf('\n\n');
  const ends = [crlf === -1 ? -1 : crlf + 2, lf === -1 ? -1 : lf + 1].filter((n) => n > 0);
  return ends.length === 0 ? raw : raw.subarray(0, Math.min(...ends));
}

/** Lines of an RFC 5322 message, CRLF-terminated, with any bare LF of `block` made CRLF. */
function crlf(block: Buffer): Buffer {
  return Buffer.from(block.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}

/** Printable ASCII only, for values placed in header fields and DSN fields. */
function ascii(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/** A multipart/report delivery status notification for `refused`, addressed to `to`. */
export function buildDsn(input: DsnInput): Buffer {
  const host = ascii(input.reportingMta);
  const digest = createHash('sha256')
    .update(input.original)
    .update(input.refused.map((r) => r.recipient).join(','))
    .digest('hex');
  const boundary = `dsn-${digest.slice(0, 24)}`;
  const failures = input.refused.map((r) => ({
    ...r,
    recipient: ascii(r.recipient),
    message: ascii(r.message),
  }));
  const lines = [
    `From: Mail Delivery System <MAILER-DAEMON@${host}>`,
    `To: <${ascii(input.to)}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${rfc5322Date(input.now)}`,
    `Message-ID: <${digest.slice(0, 32)}.dsn@${host}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is the mail system at ${host}.`,
    '',
    `Your message could not be delivered to ${failures.length === 1 ? 'this recipient' : 'these recipients'}:`,
    '',
    ...failures.map((f) => `  <${f.recipient}>: ${f.code} ${f.message}`),
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${host}`,
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
    ...failures.flatMap((f) => [
      '',
      `Final-Recipient: rfc822; ${f.recipient}`,
      // The loopback does not retry a temporary refusal either: every one is final here.
      'Action: failed',
      `Status: ${statusOf(f)}`,
      `Diagnostic-Code: smtp; ${f.code} ${f.message}`,
    ]),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    'Content-Transfer-Encoding: 8bit',
    '',
  ];
  return Buffer.concat([
    Buffer.from(`${lines.join('\r\n')}\r\n`, 'latin1'),
    crlf(headerBlock(input.original)),
    Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'),
  ]);
}
