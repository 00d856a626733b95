/**
 * API Lambda entry point: the same Hono app as `npm start` serves locally (functions/api/app.ts),
 * behind API Gateway HTTP API (payload format 2.0) through hono's Lambda adapter. Storage is S3 +
 * DynamoDB (deps.ts, read once at cold start); large raw messages and parts are answered with a
 * 307 to a presigned S3 URL by the app itself, because a Lambda response carries at most 6 MB.
 * `POST …/send` leaves through SES.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { SESv2Client } from '@aws-sdk/client-sesv2';
import type { APIGatewayProxyEventV2, Context } from 'aws-lambda';
import { type APIGatewayProxyResult, handle } from 'hono/aws-lambda';
import { Sesv2Outbound } from '../adapters/aws/sesv2-outbound.ts';
import { createApp } from '../api/app.ts';
import type { MailParser } from '../ports/mail-parser.ts';
import { createAwsStorage, readHandlerSettings } from './deps.ts';

const settings = readHandlerSettings(process.env);
const storage = createAwsStorage(settings);
const logger = new Logger({ serviceName: 'mail-relay-api' });

/** Standard base64 with padding, as API Gateway encodes request bodies. */
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Only JSON goes back as text. Everything else (message/rfc822, decoded parts, whose bytes may be
 * in any charset) is base64-encoded, so API Gateway returns the stored bytes exactly; hono's
 * default would decode text/* as UTF-8 and mangle other charsets.
 */
export function isContentTypeBinary(contentType: string): boolean {
  return !/^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i.test(contentType);
}

/**
 * Only `/send` parses (its sent copy); mailparser and its charset tables are loaded on the first
 * send rather than evaluated at every cold start of a read-mostly API.
 */
let loadedParser: Promise<MailParser> | undefined;
const parser: MailParser = {
  async parse(raw) {
    loadedParser ??= import('../adapters/mailparser/mailparser-adapter.ts').then(
      (m) => new m.MailparserAdapter(),
    );
    return (await loadedParser).parse(raw);
  },
};

const app = createApp({
  index: storage.index,
  blobs: storage.blobs,
  logError: (err) => logger.error('internal error', err instanceof Error ? err : new Error(String(err))),
  send: {
    config: storage.config,
    index: storage.index,
    blobs: storage.blobs,
    outbound: new Sesv2Outbound({
      client: new SESv2Client({}),
      configurationSetName: settings.sesConfigurationSet,
    }),
    parser,
  },
});
const handleWithHono = handle(app, { isContentTypeBinary });
type HonoLambdaEvent = Parameters<typeof handleWithHono>[0];

/**
 * hono's (deprecated) adapter types insist on fields an HTTP API event may leave out (`body`
 * spelled null, `authorizer`, `authentication: null`); of these its code reads only `body`.
 */
function toHonoEvent(event: APIGatewayProxyEventV2): HonoLambdaEvent {
  return {
    ...event,
    body: event.body ?? null,
    requestContext: { ...event.requestContext, authentication: null, authorizer: {} },
  };
}

/**
 * The API Gateway HTTP API (v2) handler. A body flagged base64 that is not base64 is the
 * client's error (400), not a decoder crash (hono's adapter would answer 500).
 */
export async function handler(
  event: APIGatewayProxyEventV2,
  context?: Context,
): Promise<APIGatewayProxyResult> {
  if (event.isBase64Encoded && event.body !== undefined && !BASE64_RE.test(event.body)) {
    return {
      statusCode: 400,
      headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      body: JSON.stringify({
        error: { code: 'invalid_request', message: 'the request body is not valid base64' },
      }),
      isBase64Encoded: false,
    };
  }
  return handleWithHono(toHonoEvent(event), context);
}
