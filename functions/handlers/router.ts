/**
 * Router Lambda entry point (SQS trigger; see router-handler.ts for the behaviour).
 * Everything here runs once per execution environment: a bad environment or configuration
 * fails the cold start (deps.ts), and the clients are reused by every invocation.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { readHandlerSettings } from './deps.ts';
import { createAwsRouterDeps } from './router-deps.ts';
import { createRouterHandler } from './router-handler.ts';

const deps = createAwsRouterDeps(readHandlerSettings(process.env));
const logger = new Logger({ serviceName: 'mail-relay-router' });
const metrics = new Metrics({ namespace: 'MailRelay', serviceName: 'mail-relay-router' });

/** The SQS event handler: returns `{batchItemFailures}` (partial batch response). */
export const handler = createRouterHandler({ deps, bucketName: deps.bucketName, logger, metrics });
