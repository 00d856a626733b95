/**
 * Router Lambda entry point (SQS trigger; see router-handler.ts for the behaviour).
 * Everything here runs once per execution environment: a bad environment or configuration
 * fails the cold start (settings.ts), and the clients are reused by every invocation. The SES
 * client is loaded on the first send (a forward, or a failure notice), the SES v1 client on the
 * first bounce (bounce.ts): a relay that only delivers to mailboxes never pays for them
 * (docs/adr/0012-lambda-bundles.md). `mail-relay replay --stack` builds the same ports eagerly
 * (router-deps.ts).
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { LazyOutbound } from '../adapters/lazy-outbound.ts';
import { loadOnce } from '../adapters/load-once.ts';
import { MailparserAdapter } from '../adapters/mailparser/mailparser-adapter.ts';
import type { RouterDeps } from '../pipeline/router.ts';
import type { Bouncer } from '../ports/bouncer.ts';
import { createAwsStorage } from './deps.ts';
import { routerForwarding } from './links.ts';
import { createRouterHandler } from './router-handler.ts';
import {
  ROUTER_FUNCTION_DIMENSION,
  ROUTER_METRICS_NAMESPACE,
  ROUTER_SERVICE_NAME,
} from './router-metrics.ts';
import { readHandlerSettings } from './settings.ts';

const settings = readHandlerSettings(process.env);
const deps: RouterDeps & { readonly bucketName: string } = {
  ...createAwsStorage(settings),
  parser: new MailparserAdapter(),
  outbound: new LazyOutbound(async () => (await import('./ses-outbound.ts')).createSesOutbound(settings)),
  forwarding: routerForwarding(settings),
  bouncer: lazyBouncer(),
};
/** The SES v1 client is loaded on the first bounce: most mail is never refused. */
function lazyBouncer(): Bouncer {
  const load = loadOnce(async () => (await import('./ses-bouncer.ts')).createSesBouncer());
  return { bounce: async (request) => (await load()).bounce(request) };
}

const logger = new Logger({ serviceName: ROUTER_SERVICE_NAME });
const metrics = new Metrics({
  namespace: ROUTER_METRICS_NAMESPACE,
  serviceName: ROUTER_SERVICE_NAME,
  // Lambda sets it; the stack's alarms watch this function's metrics by it (lib/alarms.ts).
  defaultDimensions: {
    [ROUTER_FUNCTION_DIMENSION]: process.env.AWS_LAMBDA_FUNCTION_NAME ?? 'mail-relay-router',
  },
});

/** The SQS event handler: returns `{batchItemFailures}` (partial batch response). */
export const handler = createRouterHandler({ deps, bucketName: deps.bucketName, logger, metrics });
