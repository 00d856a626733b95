/**
 * Replay: runs stored mail through the router again, e.g. after a configuration change (a new
 * mailbox, a fixed route) or to recover deliveries that failed. The router keeps every
 * notification it processed under `notifications/` (the envelope SES does not store with the raw
 * message); replay re-runs each one written at or after `since`, reading the raw message from
 * `inbound/` again. Works with any BlobStore (local files or S3).
 *
 * Safe to run twice: deliveries are idempotent (deterministic ids, conditional insert) and
 * forwards go through the send ledger (claimSend), so what was delivered or sent stays once. What
 * was delivered and then deleted stays deleted (the index remembers deletions as long as `inbound/`
 * keeps the message), unless `restoreDeleted`.
 */

import { errorMessage } from '../core/errors.ts';
import {
  type SesReceivedNotification,
  sesReceivedNotificationSchema,
  verdictsOf,
} from '../core/notification.ts';
import { route } from '../core/routing.ts';
import { DAY_MS } from '../core/time.ts';
import type { BlobInfo } from '../ports/blob-store.ts';
import {
  countOutcomes,
  NOTIFICATIONS_PREFIX,
  processNotification,
  type RouteResult,
  type RouterDeps,
} from './router.ts';

export interface ReplayProgress {
  /** Notifications handled so far (replayed, skipped or failed). */
  readonly done: number;
  /** Notifications written at or after `since` (the work to do). */
  readonly total: number;
  readonly failed: number;
  /** The notification just handled. */
  readonly key: string;
}

export interface ReplayOptions {
  /** Replays notifications stored at or after this time. */
  readonly since: Date;
  /** Only notifications whose routing (under the current configuration) reaches this mailbox. */
  readonly mailbox?: string | undefined;
  /** Deliver again what was delivered and deleted since (by default deleted mail stays deleted). */
  readonly restoreDeleted?: boolean | undefined;
  readonly onProgress?: ((progress: ReplayProgress) => void) | undefined;
  /** For tests: the present, which sets the replay window. */
  readonly now?: Date | undefined;
}

export interface ReplayFailure {
  readonly key: string;
  readonly error: string;
}

export interface ReplaySummary {
  /** Notifications written at or after `since`, within the replay window. */
  readonly considered: number;
  /** Notifications run through the router. */
  readonly replayed: number;
  /** Notifications left out by the `mailbox` filter. */
  readonly skipped: number;
  /**
   * Notifications left out because they are past the replay window (`retention.inboundDays`) but not
   * yet deleted (the lifecycle rule runs late, or `npm start` has not swept since): the index
   * remembers deletions only a little longer, so replaying them could bring deleted mail back.
   */
  readonly expired: number;
  readonly failures: readonly ReplayFailure[];
  /** Outcome counts over every replayed notification (`delivered` counts new deliveries only). */
  readonly counts: ReturnType<typeof countOutcomes>;
  readonly results: readonly RouteResult[];
}

function reaches(deps: RouterDeps, n: SesReceivedNotification, mailbox: string): boolean {
  const decisions = route(
    deps.config,
    { mailFrom: n.mail.source, recipients: n.receipt.recipients },
    verdictsOf(n),
  );
  return decisions.some((d) => (d.kind === 'deliver' || d.kind === 'quarantine') && d.mailbox === mailbox);
}

async function readNotification(deps: RouterDeps, key: string): Promise<SesReceivedNotification> {
  const body = await deps.blobs.get(key);
  if (body === null) throw new Error('notification vanished (expired?) before it could be read');
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  const parsed = sesReceivedNotificationSchema.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `not an SES notification: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/**
 * Re-routes every stored notification written at or after `options.since`, one at a time. A
 * notification that fails (its raw message expired from `inbound/`, a storage error) is counted
 * and reported; the others still run.
 */
export async function replay(deps: RouterDeps, options: ReplayOptions): Promise<ReplaySummary> {
  const since = options.since.getTime();
  if (!Number.isFinite(since)) throw new RangeError('replay: since is not a valid date');
  const mailbox = options.mailbox?.trim().toLowerCase();

  const windowStart = (options.now ?? new Date()).getTime() - deps.config.retention.inboundDays * DAY_MS;

  // Listed first so progress has a total; BlobInfo is small, even for a month of mail.
  const work: BlobInfo[] = [];
  let expired = 0;
  for await (const info of deps.blobs.list(NOTIFICATIONS_PREFIX)) {
    if (info.lastModified < since || !info.key.endsWith('.json')) continue;
    if (info.lastModified < windowStart) expired++;
    else work.push(info);
  }
  // Oldest first, so mailboxes fill in the order the mail arrived.
  work.sort((a, b) => a.lastModified - b.lastModified || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

  const results: RouteResult[] = [];
  const failures: ReplayFailure[] = [];
  let skipped = 0;
  let done = 0;
  for (const info of work) {
    try {
      const notification = await readNotification(deps, info.key);
      if (mailbox !== undefined && mailbox !== '' && !reaches(deps, notification, mailbox)) {
        skipped++;
      } else {
        results.push(
          await processNotification(deps, notification, {
            replay: true,
            restoreDeleted: options.restoreDeleted === true,
          }),
        );
      }
    } catch (err) {
      failures.push({ key: info.key, error: errorMessage(err) });
    }
    done++;
    options.onProgress?.({ done, total: work.length, failed: failures.length, key: info.key });
  }
  return {
    considered: work.length,
    replayed: results.length,
    skipped,
    expired,
    failures,
    counts: countOutcomes(results),
    results,
  };
}
