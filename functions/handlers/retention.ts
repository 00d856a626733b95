/**
 * Retention Lambda entry point (an EventBridge schedule, daily; see retention-handler.ts). Runs
 * once per execution environment: a bad environment or configuration fails the cold start
 * (settings.ts, read by deps.ts), and the clients are reused by every invocation.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { createAwsStorage, readHandlerSettings } from './deps.ts';
import { createRetentionHandler } from './retention-handler.ts';

const storage = createAwsStorage(readHandlerSettings(process.env));
const logger = new Logger({ serviceName: 'mail-relay-retention' });

/** The scheduled handler: one sweep of every mailbox; returns its summary. */
export const handler = createRetentionHandler({
  deps: storage,
  mailboxDays: storage.config.retention.mailboxDays,
  logger,
});
