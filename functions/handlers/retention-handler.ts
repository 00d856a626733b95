/**
 * The retention Lambda's logic (`retention.mailboxDays`), apart from its module-scope wiring
 * (retention.ts) so tests can build it with their own ports. An EventBridge schedule invokes it
 * once a day; the event carries nothing it needs, so any event (or a manual invoke with `{}`) runs
 * one sweep (functions/pipeline/retention.ts).
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import type { Context } from 'aws-lambda';
import { MailRelayError } from '../core/errors.ts';
import { type RetentionDeps, type SweepSummary, sweepExpired } from '../pipeline/retention.ts';

/**
 * The sweep stops this long before the function's timeout, so it can log what it did and end
 * cleanly; the next run continues where it stopped (the sweep is idempotent). A first sweep over
 * years of mail may take several runs.
 */
export const STOP_BEFORE_TIMEOUT_MS = 30_000;

export interface RetentionHandlerOptions {
  readonly deps: RetentionDeps;
  /** `retention.mailboxDays`; absent, the handler does nothing (the stack schedules it only when set). */
  readonly mailboxDays: number | undefined;
  readonly logger: Logger;
  /** @default () => new Date() */
  readonly clock?: () => Date;
}

export type RetentionHandler = (event: unknown, context?: Context) => Promise<SweepSummary | null>;

/**
 * Builds the scheduled handler. It fails the invocation when a mailbox could not be swept (after
 * sweeping the others), so the function's Errors metric shows it and Lambda retries it.
 */
export function createRetentionHandler(options: RetentionHandlerOptions): RetentionHandler {
  const { deps, mailboxDays, logger } = options;
  const clock = options.clock ?? (() => new Date());
  return async (_event, context) => {
    if (context !== undefined) logger.addContext(context);
    if (mailboxDays === undefined) {
      logger.warn('retention.mailboxDays is not set: nothing to delete');
      return null;
    }
    // Never more than half of what is left, for an invocation that starts with little time.
    const remaining = context?.getRemainingTimeInMillis();
    const budget =
      remaining === undefined ? undefined : remaining - Math.min(STOP_BEFORE_TIMEOUT_MS, remaining / 2);
    const started = performance.now();
    const summary = await sweepExpired(deps, {
      mailboxDays,
      now: clock(),
      signal: budget === undefined ? undefined : AbortSignal.timeout(Math.max(Math.floor(budget), 1)),
    });
    const fields = {
      mailboxDays,
      mailboxes: summary.mailboxes,
      deleted: summary.deleted,
      bytes: summary.bytes,
      orphans: summary.orphans,
      failed: summary.failures.length,
      complete: summary.complete,
      ms: Math.round(performance.now() - started),
    };
    if (summary.complete) logger.info('retention sweep done', fields);
    else logger.warn('retention sweep stopped before the timeout; the next run continues', fields);
    if (summary.failures.length > 0) {
      logger.error('some mailboxes could not be swept', { failures: summary.failures.slice(0, 20) });
      throw new MailRelayError(
        'retention_failed',
        `retention: ${summary.failures.length} mailbox(es) could not be swept, e.g. ${summary.failures[0]?.mailbox}: ${summary.failures[0]?.error}`,
      );
    }
    return summary;
  };
}
