/**
 * API Lambda entry point: every route of the HTTP API but `POST …/send` (the read side,
 * functions/api/mailbox-app.ts, as `npm start` serves it), behind API Gateway HTTP API through
 * http-api.ts. The index is DynamoDB, the blobs S3; large raw messages and parts are answered
 * with a 307 to a presigned S3 URL by the app itself, because a Lambda response carries at most
 * 6 MB.
 *
 * Built once per execution environment: the settings and the configuration (a bad one fails the
 * cold start), the DynamoDB client that every request needs. The S3 client is loaded on the first
 * request that reads or deletes a message's bytes (LazyBlobStore): STAT, LIST, the long-poll and
 * flags, what polling mail clients send most, never need it.
 *
 * `POST …/send` is the send function's (send.ts): API Gateway routes it there, so this bundle
 * carries neither the MIME composer nor mailparser, and this function may not send mail
 * (docs/adr/0012-lambda-bundles.md). The route is still documented in `GET /v1/openapi.json`.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoDbMailboxIndex } from '../adapters/aws/dynamodb-mailbox-index.ts';
import { LazyBlobStore } from '../adapters/lazy-blob-store.ts';
import { mountSignedLinks } from '../api/local-blobs.ts';
import { createMailboxApp, DEFAULT_PRESIGN_SECONDS } from '../api/mailbox-app.ts';
import { FORWARDED_PREFIX } from '../core/keys.ts';
import { deletionMemoryDaysFor } from '../ports/mailbox-index.ts';
import { httpApiHandler } from './http-api.ts';
import { linkSecretLoader } from './links.ts';
import { readHandlerSettings } from './settings.ts';

const settings = readHandlerSettings(process.env);
const logger = new Logger({ serviceName: 'mail-relay-api' });

const blobs = new LazyBlobStore(async () => (await import('./s3-blobs.ts')).createS3BlobStore(settings));
const app = createMailboxApp({
  index: new DynamoDbMailboxIndex({
    client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
    tableName: settings.tableName,
    deletionMemoryDays: deletionMemoryDaysFor(settings.config),
  }),
  blobs,
  logError: (err) => logger.error('internal error', err instanceof Error ? err : new Error(String(err))),
  documentSend: { maxSendBytes: settings.config.relay.maxSendBytes },
  configuredMailboxes: settings.config.mailboxes,
});

// The links of oversize-forward notices, signed by the router with the stack's link secret.
if (settings.links !== undefined) {
  mountSignedLinks(app, {
    blobs,
    secret: linkSecretLoader(settings.links.secretArn),
    now: Date.now,
    target: { kind: 'redirect', presignSeconds: DEFAULT_PRESIGN_SECONDS, keyPrefix: FORWARDED_PREFIX },
  });
}

/** The API Gateway HTTP API (v2) handler. */
export const handler = httpApiHandler(app, logger);
