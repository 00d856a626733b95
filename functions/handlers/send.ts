/**
 * Send Lambda entry point: `POST /v1/mailboxes/{address}/send` (functions/api/send-app.ts), which
 * API Gateway routes here rather than to the API function (docs/adr/0012-lambda-bundles.md). The
 * message leaves through SES; its copy in the sender's sent view is parsed with mailparser like a
 * delivery, so it reads like any other message. Storage is S3 + DynamoDB (deps.ts), read once at
 * cold start, with the clients at module scope.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { MailparserAdapter } from '../adapters/mailparser/mailparser-adapter.ts';
import { createSendApp } from '../api/send-app.ts';
import { createAwsStorage, readHandlerSettings } from './deps.ts';
import { httpApiHandler } from './http-api.ts';
import { createSesOutbound } from './ses-outbound.ts';

const settings = readHandlerSettings(process.env);
const storage = createAwsStorage(settings);
const logger = new Logger({ serviceName: 'mail-relay-send' });

const app = createSendApp({
  config: storage.config,
  index: storage.index,
  blobs: storage.blobs,
  outbound: createSesOutbound(settings),
  parser: new MailparserAdapter(),
  logError: (err) => logger.error('internal error', err instanceof Error ? err : new Error(String(err))),
});

/** The API Gateway HTTP API (v2) handler of the send route. */
export const handler = httpApiHandler(app, logger);
