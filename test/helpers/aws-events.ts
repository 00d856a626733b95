/**
 * Lambda events for the AWS handler tests, built from the real samples in ../shared/aws-events
 * (see its SOURCES.md): an SES "Received" notification (S3 action) inside an SNS envelope inside
 * an SQS record, exactly as SES -> SNS -> SQS delivers it; and API Gateway HTTP API (v2) events.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { APIGatewayProxyEventV2, ScheduledEvent, SQSEvent, SQSRecord } from 'aws-lambda';
import {
  type SesReceivedNotification,
  sesReceivedNotificationSchema,
} from '../../functions/core/notification.ts';
import { PROJECT_ROOT } from './env.ts';

export const AWS_EVENTS_DIR = resolve(PROJECT_ROOT, '../shared/aws-events');
const SQS_SAMPLE = 'sqs-event-ses-received-s3.derived.json';
const APIGW_SAMPLE = 'apigw-http-v2-post-json-body.captured.json';

export function awsEventsAvailable(): boolean {
  return existsSync(resolve(AWS_EVENTS_DIR, SQS_SAMPLE)) && existsSync(resolve(AWS_EVENTS_DIR, APIGW_SAMPLE));
}

export function readSample<T>(name: string): T {
  return JSON.parse(readFileSync(resolve(AWS_EVENTS_DIR, name), 'utf8')) as T;
}

interface SnsEnvelope {
  Type: string;
  MessageId: string;
  Message: string;
  [key: string]: unknown;
}

/** The sample SQS record (real layout), its SNS envelope and the SES notification inside. */
function sample(): { record: SQSRecord; envelope: SnsEnvelope; notification: SesReceivedNotification } {
  const event = readSample<SQSEvent>(SQS_SAMPLE);
  const record = event.Records[0];
  if (record === undefined) throw new Error(`${SQS_SAMPLE} has no record`);
  const envelope = JSON.parse(record.body) as SnsEnvelope;
  const notification = sesReceivedNotificationSchema.parse(JSON.parse(envelope.Message));
  return { record, envelope, notification };
}

export interface NotificationSpec {
  readonly sesMessageId: string;
  readonly recipients: readonly string[];
  readonly bucket: string;
  /** Defaults to `inbound/<sesMessageId>`, the layout the receipt rule writes. */
  readonly objectKey?: string;
  readonly mailFrom?: string;
  readonly timestamp?: Date;
  /** Overrides of the sample's verdict statuses (it has spam/virus PASS, spf/dkim GRAY, dmarc FAIL). */
  readonly verdicts?: Partial<Record<'spam' | 'virus' | 'spf' | 'dkim' | 'dmarc', string>>;
}

/** The sample notification with this message's id, envelope, time and S3 location. */
export function sesNotification(spec: NotificationSpec): SesReceivedNotification {
  const { notification } = sample();
  const ts = (spec.timestamp ?? new Date()).toISOString();
  const n = structuredClone(notification) as SesReceivedNotification & {
    receipt: Record<string, unknown>;
  };
  n.mail.messageId = spec.sesMessageId;
  n.mail.timestamp = ts;
  n.mail.destination = [...spec.recipients];
  if (spec.mailFrom !== undefined) n.mail.source = spec.mailFrom;
  n.receipt.timestamp = ts;
  n.receipt.recipients = [...spec.recipients];
  n.receipt.action = {
    ...n.receipt.action,
    bucketName: spec.bucket,
    objectKey: spec.objectKey ?? `inbound/${spec.sesMessageId}`,
  };
  for (const [name, status] of Object.entries(spec.verdicts ?? {})) {
    n.receipt[`${name}Verdict`] = { status };
  }
  return sesReceivedNotificationSchema.parse(n);
}

/** An SQS record as SNS -> SQS delivers it: the body is the SNS envelope whose Message is `message`. */
export function sqsRecord(message: unknown, options: { rawDelivery?: boolean } = {}): SQSRecord {
  const { record, envelope } = sample();
  const messageText = typeof message === 'string' ? message : JSON.stringify(message);
  const body = options.rawDelivery
    ? messageText
    : // SNS writes its JSON with "Key" : value and two-space indent; any JSON reader accepts it.
      JSON.stringify({ ...envelope, MessageId: randomUUID(), Message: messageText }, null, 2).replace(
        /^( +"[^"]+"):/gm,
        '$1 :',
      );
  return {
    ...record,
    messageId: randomUUID(),
    body,
    md5OfBody: createHash('md5').update(body).digest('hex'),
  };
}

export function sqsEvent(records: readonly SQSRecord[]): SQSEvent {
  return { Records: [...records] };
}

export interface HttpRequestSpec {
  readonly method: string;
  /** Path with its query string, e.g. `/v1/mailboxes/a@b.c/messages?limit=2`. */
  readonly path: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Buffer | string;
  /** Send the body base64-encoded, as API Gateway does for binary media. */
  readonly base64?: boolean;
}

/**
 * An API Gateway HTTP API (payload 2.0) event for a request, shaped like the real capture
 * `apigw-http-v2-post-json-body.captured.json`: lower-case headers, `rawQueryString`,
 * `queryStringParameters` only when there is a query, no `body` key when there is no body. The
 * path arrives percent-decoded in `rawPath` too, as HTTP APIs deliver it (a request for `/a%2Fb`
 * is `rawPath: "/a/b"`: the capture in fastify/aws-lambda-fastify#169); the query stays encoded.
 */
export function httpApiEvent(spec: HttpRequestSpec): APIGatewayProxyEventV2 {
  const base = readSample<APIGatewayProxyEventV2>(APIGW_SAMPLE);
  const url = new URL(spec.path, 'https://lsw1ro4ipb.execute-api.eu-west-1.amazonaws.com');
  const rawQueryString = url.search.replace(/^\?/, '');
  const query: Record<string, string> = {};
  // API Gateway joins repeated keys with commas in queryStringParameters.
  for (const [k, v] of url.searchParams) query[k] = k in query ? `${query[k]},${v}` : v;
  const headers: Record<string, string> = {
    accept: '*/*',
    host: url.host,
    'user-agent': 'mail-relay-tests',
    'x-forwarded-proto': 'https',
    'x-forwarded-port': '443',
  };
  for (const [k, v] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = v;
  const bodyBuffer =
    spec.body === undefined ? undefined : Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body);
  if (bodyBuffer !== undefined) headers['content-length'] = String(bodyBuffer.length);
  const event: APIGatewayProxyEventV2 = {
    ...base,
    routeKey: '$default',
    rawPath: decodeURIComponent(url.pathname),
    rawQueryString,
    headers,
    requestContext: {
      ...base.requestContext,
      http: { ...base.requestContext.http, method: spec.method, path: decodeURIComponent(url.pathname) },
      requestId: randomUUID(),
      routeKey: '$default',
      time: new Date().toUTCString(),
      timeEpoch: Date.now(),
    },
    isBase64Encoded: spec.base64 === true,
  };
  if (rawQueryString !== '') event.queryStringParameters = query;
  else delete event.queryStringParameters;
  if (bodyBuffer !== undefined)
    event.body = spec.base64 ? bodyBuffer.toString('base64') : bodyBuffer.toString('utf8');
  else delete event.body;
  return event;
}

/**
 * Runs `fn` while taking the Powertools JSON lines (logs, EMF metrics) that it writes to stdout
 * and stderr (errors go there); everything else passes through (the test runner reports on stdout).
 */
export async function capturePowertools<T>(
  fn: () => Promise<T>,
): Promise<{ result: T; lines: Record<string, unknown>[] }> {
  const lines: Record<string, unknown>[] = [];
  const streams = [process.stdout, process.stderr];
  const originals = streams.map((s) => s.write);
  streams.forEach((stream, i) => {
    const original = originals[i] as (...args: unknown[]) => boolean;
    const write = (chunk: unknown, ...rest: unknown[]): boolean => {
      const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : '';
      if (text.startsWith('{') && (text.includes('"_aws"') || text.includes('"level"'))) {
        for (const line of text.split('\n')) {
          if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
        }
        return true;
      }
      return original.call(stream, chunk, ...rest);
    };
    stream.write = write as typeof stream.write;
  });
  try {
    return { result: await fn(), lines };
  } finally {
    streams.forEach((stream, i) => {
      const original = originals[i];
      if (original !== undefined) stream.write = original;
    });
  }
}

/**
 * What an EventBridge schedule delivers to its Lambda target, in the documented shape
 * (https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-scheduled.html); no sample file is
 * needed, the handler reads nothing from it.
 */
export function scheduledEvent(time = new Date()): ScheduledEvent {
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': 'Scheduled Event',
    source: 'aws.events',
    account: '123456789012',
    time: time.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    region: 'us-east-1',
    resources: ['arn:aws:events:us-east-1:123456789012:rule/mail-relay-retention'],
    detail: {},
  };
}
