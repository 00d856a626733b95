/**
 * Where the router's metrics land in CloudWatch (embedded metric format, Powertools Metrics): their
 * namespace, the `service` dimension Powertools adds to each, and the names the stack's alarms watch
 * (lib/alarms.ts). Shared so that an alarm watches exactly what the router emits.
 */
export const ROUTER_METRICS_NAMESPACE = 'MailRelay';
/** The router's Powertools service name: the value of the `service` dimension of its metrics. */
export const ROUTER_SERVICE_NAME = 'mail-relay-router';
/**
 * The second dimension of the router's metrics: the function's name (Lambda's
 * `AWS_LAMBDA_FUNCTION_NAME`), so that two stacks in one account and region (staging and
 * production) each alarm on their own router's failures, not on both.
 */
export const ROUTER_FUNCTION_DIMENSION = 'function';
/** Forwards that could not be sent (each recorded, its notice in `relay.notify.mailbox`). */
export const FORWARD_FAILURES_METRIC = 'forwardFailures';
/** Bounces that could not be sent (the sender of refused mail was not told). */
export const BOUNCE_FAILURES_METRIC = 'bounceFailures';
