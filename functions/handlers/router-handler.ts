/**
 * The router Lambda's logic, separated from its module-scope wiring (router.ts) so tests and
 * other entry points can build it with their own ports.
 *
 * Event path: SES receipt rule (S3 action) -> SNS topic -> SQS queue -> this function, in batches.
 * Each SQS record's body is the SNS envelope whose `Message` is the SES "Received" notification,
 * or (with SNS raw message delivery on) the notification itself. Every record is handled on its
 * own: a record that fails is reported in `batchItemFailures` and only it returns to the queue
 * (the event source mapping must enable ReportBatchItemFailures), so SQS retries it until the
 * queue's maxReceiveCount moves it to the DLQ; it is never dropped.
 * https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html
 * Records are not started when the invocation is close to its timeout (`RECORD_TIME_RESERVE_MS`):
 * the rest of the batch is returned, and records that have been returned before go first.
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import { type Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Context, SQSBatchItemFailure, SQSBatchResponse } from 'aws-lambda';
import * as z from 'zod';
import { MailRelayError, ValidationError } from '../core/errors.ts';
import { type SesReceivedNotification, sesReceivedNotificationSchema } from '../core/notification.ts';
import { countBounces } from '../pipeline/bounce.ts';
import { countOutcomes, processNotification, type RouteResult, type RouterDeps } from '../pipeline/router.ts';
import { MAX_RECEIVE_COUNT } from './queue-settings.ts';
import { BOUNCE_FAILURES_METRIC, FORWARD_FAILURES_METRIC } from './router-metrics.ts';

/** The parts of an SQS record we rely on (the full shape is in ../shared/aws-events). */
export const sqsRecordSchema = z
  .object({
    messageId: z.string().min(1),
    body: z.string(),
    attributes: z.object({ ApproximateReceiveCount: z.string().optional() }).passthrough().optional(),
    eventSource: z.literal('aws:sqs').optional(),
  })
  .passthrough();

export const sqsEventSchema = z.object({ Records: z.array(sqsRecordSchema) }).passthrough();

/**
 * Time that must be left in the invocation to start another record: about what the largest record
 * takes (a 40 MB message read from S3, parsed, its parts stored, forwarded). An invocation cut by its
 * timeout returns its whole batch, the records it delivered too, and a batch of large messages would
 * run out the same way on every retry until the dead-letter queue; the records not started are
 * returned instead (`batchItemFailures`), and the next invocation takes them.
 */
export const RECORD_TIME_RESERVE_MS = 20_000;

type SqsRecord = z.infer<typeof sqsRecordSchema>;

const receiveCount = (r: SqsRecord): number => Number(r.attributes?.ApproximateReceiveCount ?? 1) || 1;

/**
 * Records returned before come first (stable otherwise): a record left unstarted by an invocation
 * that ran short of time must not be left out again until the queue's maxReceiveCount moves it to
 * the dead-letter queue without ever having been tried.
 */
export function inProcessingOrder(records: readonly SqsRecord[]): SqsRecord[] {
  return records
    .map((record, i) => ({ record, i, count: receiveCount(record) }))
    .sort((a, b) => b.count - a.count || a.i - b.i)
    .map((x) => x.record);
}

/** An SNS notification as SNS delivers it to an SQS queue (raw message delivery off). */
export const snsEnvelopeSchema = z
  .object({
    Type: z.literal('Notification'),
    MessageId: z.string(),
    TopicArn: z.string(),
    Subject: z.string().nullable().optional(),
    Message: z.string(),
    Timestamp: z.string(),
  })
  .passthrough();

/**
 * SES publishes this once to a topic when a receipt rule starts using it (again whenever a rule is
 * created: a config change that adds one), and writes an object of that name beside the mail. It
 * carries no mail; acknowledging it (rather than failing it into the DLQ, or routing the object
 * as a message) is the right answer.
 */
const SES_SETUP_NOTIFICATION = 'AMAZON_SES_SETUP_NOTIFICATION';

/**
 * Whether a notification is SES's setup notification. What is known of its shape comes from code
 * that consumes it, not from AWS's documentation, and differs: `notificationType` set to the name,
 * or a `Received` notification whose `mail.messageId` (and S3 object key) is the name. Any of them
 * will do: no real message has that id.
 */
export function isSetupNotification(notification: unknown): boolean {
  if (typeof notification !== 'object' || notification === null) return false;
  const n = notification as {
    notificationType?: unknown;
    mail?: { messageId?: unknown };
    receipt?: { action?: { objectKey?: unknown } };
  };
  const objectKey = n.receipt?.action?.objectKey;
  return (
    n.notificationType === SES_SETUP_NOTIFICATION ||
    n.mail?.messageId === SES_SETUP_NOTIFICATION ||
    (typeof objectKey === 'string' && objectKey.split('/').pop() === SES_SETUP_NOTIFICATION)
  );
}

export type RecordContent =
  | {
      readonly kind: 'received';
      readonly notification: SesReceivedNotification;
      readonly snsMessageId?: string;
    }
  | { readonly kind: 'setup' };

/** A record whose content can never succeed (not JSON, not a notification): it goes to the DLQ via retries. */
export class PoisonRecordError extends ValidationError {
  constructor(message: string, details: readonly string[] = []) {
    super(message, details, 'invalid_record');
  }
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new PoisonRecordError(`${what} is not JSON: ${(err as Error).message}`);
  }
}

/** Reads an SQS body: an SNS envelope around the notification, or the bare notification. */
export function readRecordBody(body: string): RecordContent {
  const outer = parseJson(body, 'SQS message body');
  const envelope = snsEnvelopeSchema.safeParse(outer);
  const inner = envelope.success ? parseJson(envelope.data.Message, 'SNS Message') : outer;
  if (isSetupNotification(inner)) return { kind: 'setup' };
  const parsed = sesReceivedNotificationSchema.safeParse(inner);
  if (!parsed.success) {
    throw new PoisonRecordError(
      'not an SES "Received" notification with an S3 action',
      parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`),
    );
  }
  return envelope.success
    ? { kind: 'received', notification: parsed.data, snsMessageId: envelope.data.MessageId }
    : { kind: 'received', notification: parsed.data };
}

export interface RouterHandlerOptions {
  readonly deps: RouterDeps;
  /** The bucket the blob store reads; a notification naming another bucket is refused. */
  readonly bucketName: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export type RouterHandler = (event: unknown, context?: Context) => Promise<SQSBatchResponse>;

/** The refused recipients of a message and what became of their bounce, for the `routed` log line. */
function refusalsLog(result: RouteResult): {
  refused?: { recipient: string; code: number; detail?: string }[];
} {
  const refused = result.outcomes.flatMap((o) =>
    o.decision.kind === 'reject'
      ? [
          {
            recipient: o.decision.recipient,
            code: o.decision.code,
            ...(o.detail ? { detail: o.detail } : {}),
          },
        ]
      : [],
  );
  return refused.length > 0 ? { refused } : {};
}

/**
 * Forwards that did not go out (failed: recorded, the owner notified; or cut as a loop) and why, for
 * the `routed` log line: the operator's view of which message, which destination and what failed.
 */
function unsentForwardsLog(result: RouteResult): {
  unsentForwards?: { recipient: string; destination: string; status: string; detail?: string }[];
} {
  const unsent = result.outcomes.flatMap((o) =>
    o.decision.kind === 'forward' && (o.status === 'failed' || o.status === 'looped')
      ? [
          {
            recipient: o.decision.recipient,
            destination: o.decision.to,
            status: o.status,
            ...(o.detail ? { detail: o.detail } : {}),
          },
        ]
      : [],
  );
  return unsent.length > 0 ? { unsentForwards: unsent } : {};
}

function errorFields(err: unknown): {
  name: string;
  code?: string;
  message: string;
  details?: readonly string[];
} {
  if (err instanceof ValidationError)
    return { name: err.name, code: err.code, message: err.message, details: err.details };
  if (err instanceof MailRelayError) return { name: err.name, code: err.code, message: err.message };
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}

/**
 * Builds the SQS handler. Records are processed one after another: each may hold a 40 MB
 * message and its parse, and a Lambda's memory is sized for one at a time.
 */
export function createRouterHandler(options: RouterHandlerOptions): RouterHandler {
  const { deps, bucketName, logger, metrics } = options;

  async function processRecord(sqsMessageId: string, content: RecordContent): Promise<RouteResult | null> {
    if (content.kind === 'setup') {
      logger.info('acknowledged the SES setup notification', { sqsMessageId });
      return null;
    }
    const { notification } = content;
    const action = notification.receipt.action;
    if (action.bucketName !== bucketName) {
      // Reading the key from our bucket instead would route some other message, or none.
      throw new PoisonRecordError(
        `notification names bucket ${action.bucketName}; this router reads ${bucketName}`,
      );
    }
    return processNotification(deps, notification);
  }

  let coldStart = true;
  return async (event, context) => {
    const started = performance.now();
    if (coldStart) {
      coldStart = false;
      metrics.captureColdStartMetric();
    }
    if (context !== undefined) logger.addContext(context);
    const parsed = sqsEventSchema.safeParse(event);
    if (!parsed.success) {
      // Not an SQS event at all (a wrong trigger or a test invoke): fail the invocation loudly.
      logger.error('event is not an SQS batch', { issues: parsed.error.issues.slice(0, 5) });
      throw new ValidationError('event is not an SQS batch');
    }
    const records = inProcessingOrder(parsed.data.Records);
    const failures: SQSBatchItemFailure[] = [];
    const results: RouteResult[] = [];
    let deferred = 0;
    try {
      for (const [i, record] of records.entries()) {
        if (
          i > 0 &&
          context !== undefined &&
          receiveCount(record) < MAX_RECEIVE_COUNT &&
          context.getRemainingTimeInMillis() < RECORD_TIME_RESERVE_MS
        ) {
          // Not started: returned to the queue whole, and taken first by a later invocation. (Records
          // on their last receive come first and are always started: returned, they would go to the
          // dead-letter queue untried.)
          const rest = records.slice(i);
          deferred = rest.length;
          for (const r of rest) failures.push({ itemIdentifier: r.messageId });
          logger.warn('too little time left in this invocation; records returned to the queue unstarted', {
            deferred,
            remainingMs: context.getRemainingTimeInMillis(),
            sqsMessageIds: rest.map((r) => r.messageId),
          });
          break;
        }
        const recordStarted = performance.now();
        // Known once the body is read: what finds the message (inbound/<id>, replay) when it fails.
        let sesMessageId: string | undefined;
        try {
          const content = readRecordBody(record.body);
          if (content.kind === 'received') sesMessageId = content.notification.mail.messageId;
          const result = await processRecord(record.messageId, content);
          if (result === null) continue;
          results.push(result);
          const c = countOutcomes([result]);
          // A forward or a bounce that could not be sent is mail that did not reach someone: a warning.
          const sendFailed = c.failed > 0 || countBounces([result]).failed > 0;
          logger[sendFailed ? 'warn' : 'info']('routed', {
            sqsMessageId: record.messageId,
            sesMessageId: result.sesMessageId,
            id: result.id,
            size: result.size,
            parseFailed: result.parseFailed,
            outcomes: c,
            ...refusalsLog(result),
            ...unsentForwardsLog(result),
            ms: Math.round(performance.now() - recordStarted),
          });
        } catch (err) {
          failures.push({ itemIdentifier: record.messageId });
          logger.error('record failed; it returns to the queue (DLQ after maxReceiveCount)', {
            sqsMessageId: record.messageId,
            ...(sesMessageId === undefined ? {} : { sesMessageId }),
            receiveCount: record.attributes?.ApproximateReceiveCount,
            permanent: err instanceof PoisonRecordError,
            error: errorFields(err),
          });
        }
      }
    } finally {
      const c = countOutcomes(results);
      metrics.addMetric('received', MetricUnit.Count, records.length);
      metrics.addMetric('delivered', MetricUnit.Count, c.delivered);
      metrics.addMetric('duplicates', MetricUnit.Count, c.duplicate);
      metrics.addMetric('forwarded', MetricUnit.Count, c.forwarded);
      metrics.addMetric('rejected', MetricUnit.Count, c.rejected);
      metrics.addMetric('dropped', MetricUnit.Count, c.dropped);
      metrics.addMetric('quarantined', MetricUnit.Count, c.quarantined);
      metrics.addMetric(FORWARD_FAILURES_METRIC, MetricUnit.Count, c.failed);
      metrics.addMetric('forwardLoops', MetricUnit.Count, c.looped);
      metrics.addMetric('parseFailures', MetricUnit.Count, c.parseFailed);
      const bounces = countBounces(results);
      metrics.addMetric('bounces', MetricUnit.Count, bounces.bounced);
      metrics.addMetric(BOUNCE_FAILURES_METRIC, MetricUnit.Count, bounces.failed);
      metrics.addMetric('failedRecords', MetricUnit.Count, failures.length - deferred);
      metrics.addMetric('deferredRecords', MetricUnit.Count, deferred);
      metrics.addMetric('batchLatency', MetricUnit.Milliseconds, Math.round(performance.now() - started));
      metrics.publishStoredMetrics();
    }
    logger.info('batch done', { records: records.length, failed: failures.length - deferred, deferred });
    return { batchItemFailures: failures };
  };
}
