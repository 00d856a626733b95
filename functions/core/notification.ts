/**
 * The SES "Received" notification (S3 action), as SES publishes it to SNS. One schema for both
 * the Lambda router (parsed out of SQS → SNS) and the local SMTP listener (which builds the same
 * shape), so both run the same router code. Built on real samples in ../shared/aws-events.
 * https://docs.aws.amazon.com/ses/latest/dg/receiving-email-notifications-contents.html
 */
import * as z from 'zod';
import type { Verdicts } from './routing.ts';

/** Documented: PASS, FAIL, GRAY, PROCESSING_FAILED; seen in captures: DISABLED. Unknown values are kept. */
const verdictSchema = z.object({ status: z.string() }).passthrough();

export const sesMailSchema = z
  .object({
    timestamp: z.string().datetime({ offset: true }),
    source: z.string(),
    messageId: z.string().min(1),
    destination: z.array(z.string()),
    headersTruncated: z.boolean().optional(),
    headers: z.array(z.object({ name: z.string(), value: z.string() })).optional(),
    commonHeaders: z.record(z.string(), z.unknown()).optional(),
  })
  .passthrough();

export const sesS3ActionSchema = z
  .object({
    type: z.literal('S3'),
    topicArn: z.string().optional(),
    bucketName: z.string(),
    /** Already includes the prefix and ends in mail.messageId. */
    objectKey: z.string().min(1),
    objectKeyPrefix: z.string().optional(),
  })
  .passthrough();

export const sesReceiptSchema = z
  .object({
    timestamp: z.string().datetime({ offset: true }),
    processingTimeMillis: z.number().optional(),
    /** The recipients this receipt rule matched (a subset of mail.destination). */
    recipients: z.array(z.string()).min(1),
    spamVerdict: verdictSchema,
    virusVerdict: verdictSchema,
    spfVerdict: verdictSchema,
    dkimVerdict: verdictSchema,
    /** Missing from some samples (docs S3 example). */
    dmarcVerdict: verdictSchema.optional(),
    /** Present when DMARC FAILs; key order varies. */
    dmarcPolicy: z.string().optional(),
    action: sesS3ActionSchema,
  })
  .passthrough();

export const sesReceivedNotificationSchema = z
  .object({
    notificationType: z.literal('Received'),
    mail: sesMailSchema,
    receipt: sesReceiptSchema,
  })
  .passthrough();

export type SesReceivedNotification = z.infer<typeof sesReceivedNotificationSchema>;

export function verdictsOf(n: SesReceivedNotification): Verdicts {
  const r = n.receipt;
  return {
    spam: r.spamVerdict.status,
    virus: r.virusVerdict.status,
    spf: r.spfVerdict.status,
    dkim: r.dkimVerdict.status,
    dmarc: r.dmarcVerdict?.status ?? 'GRAY',
    dmarcPolicy: r.dmarcPolicy,
  };
}

export const INBOUND_PREFIX = 'inbound/';

export interface LocalReceipt {
  readonly sesMessageId: string;
  readonly receivedAt: Date;
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly verdicts: Verdicts;
  readonly bucketName: string;
  readonly headers?: readonly { name: string; value: string }[];
}

/** The notification SES would publish for a message the local listener (or `import`) stored. */
export function buildNotification(r: LocalReceipt): SesReceivedNotification {
  const ts = r.receivedAt.toISOString();
  const status = (s: string) => ({ status: s });
  const notification: SesReceivedNotification = {
    notificationType: 'Received',
    mail: {
      timestamp: ts,
      source: r.mailFrom,
      messageId: r.sesMessageId,
      destination: [...r.recipients],
      headersTruncated: false,
      headers: r.headers ? [...r.headers] : [],
      commonHeaders: {},
    },
    receipt: {
      timestamp: ts,
      processingTimeMillis: 0,
      recipients: [...r.recipients],
      spamVerdict: status(r.verdicts.spam),
      virusVerdict: status(r.verdicts.virus),
      spfVerdict: status(r.verdicts.spf),
      dkimVerdict: status(r.verdicts.dkim),
      dmarcVerdict: status(r.verdicts.dmarc),
      ...(r.verdicts.dmarcPolicy ? { dmarcPolicy: r.verdicts.dmarcPolicy } : {}),
      action: {
        type: 'S3',
        bucketName: r.bucketName,
        objectKeyPrefix: INBOUND_PREFIX,
        objectKey: `${INBOUND_PREFIX}${r.sesMessageId}`,
      },
    },
  };
  // Built from typed fields, so the schema holds but for its two value constraints (timestamps come
  // from toISOString); only then is it run, for its error. Parsing every message cost ~3% of the
  // local pipeline.
  if (r.recipients.length === 0 || r.sesMessageId === '')
    return sesReceivedNotificationSchema.parse(notification);
  return notification;
}

const serialized = new WeakMap<SesReceivedNotification, string>();

/**
 * `JSON.stringify(notification)`, made once per notification object: the local relay writes the
 * same notification to its journal and to `notifications/`. Notifications are never mutated.
 */
export function notificationJson(notification: SesReceivedNotification): string {
  let json = serialized.get(notification);
  if (json === undefined) {
    json = JSON.stringify(notification);
    serialized.set(notification, json);
  }
  return json;
}
