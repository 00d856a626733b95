/**
 * `mail-relay dev`'s retention timer: one sweep at start and then one every hour. It deletes what
 * S3's lifecycle rules expire in AWS, `inbound/` and `notifications/` older than
 * `retention.inboundDays` (the replay window) and `forwarded/` originals older than
 * `forwardedRetentionDays`, and with `retention.mailboxDays` set, delivered mail
 * older than that (functions/pipeline/retention.ts), as the daily schedule does in AWS. The timer
 * never keeps the process alive, and `stop` waits for a sweep in progress, so the index is not
 * closed under it.
 */
import { FORWARDED_PREFIX } from '../core/keys.ts';
import { INBOUND_PREFIX } from '../core/notification.ts';
import { DAY_MS } from '../core/time.ts';
import { type RetentionDeps, type SweepSummary, sweepExpired } from '../pipeline/retention.ts';
import { NOTIFICATIONS_PREFIX } from '../pipeline/router.ts';
import type { BlobInfo, BlobStore } from '../ports/blob-store.ts';

/** How long each prefix the lifecycle rules cover in AWS is kept. */
export interface ReceivedRetention {
  /** `inbound/` and `notifications/`. */
  readonly inboundDays: number;
  /** `forwarded/`. */
  readonly forwardedDays: number;
}

export interface ReceivedExpiry {
  /** Raw messages, notifications and forwarded originals deleted. */
  readonly deleted: number;
  readonly bytes: number;
}

/**
 * Deletes `inbound/` and `notifications/` blobs written more than `inboundDays` before `now`, and
 * `forwarded/` ones past `forwardedDays`: what the bucket's lifecycle rules do in AWS. Past that,
 * `replay` cannot bring a message back, and the index forgets deletions two days later
 * (deletionMemoryDaysFor), so deleted mail stays deleted.
 */
export async function expireReceived(
  blobs: Pick<BlobStore, 'list' | 'head' | 'delete'>,
  retention: ReceivedRetention,
  now: Date,
  signal?: AbortSignal,
): Promise<ReceivedExpiry> {
  let deleted = 0;
  let bytes = 0;
  const rules: [string, number][] = [
    [INBOUND_PREFIX, retention.inboundDays],
    [NOTIFICATIONS_PREFIX, retention.inboundDays],
    [FORWARDED_PREFIX, retention.forwardedDays],
  ];
  for (const [prefix, days] of rules) {
    const cutoff = now.getTime() - days * DAY_MS;
    // Listed first, deleted after: no deletion under a listing in progress.
    const expired: BlobInfo[] = [];
    for await (const b of blobs.list(prefix)) {
      if (signal?.aborted) return { deleted, bytes };
      if (b.lastModified < cutoff) expired.push(b);
    }
    for (const b of expired) {
      if (signal?.aborted) return { deleted, bytes };
      // Written again since it was listed (a re-import, a recovery): it is new now, and stays.
      const current = await blobs.head(b.key);
      if (current === null || current.lastModified >= cutoff) continue;
      await blobs.delete(b.key);
      deleted += 1;
      bytes += b.size;
    }
  }
  return { deleted, bytes };
}

/** Hourly: a laptop is not up for a whole day, and a sweep with nothing to delete costs one listing per mailbox. */
export const LOCAL_SWEEP_INTERVAL_MS = 60 * 60 * 1000;

export interface RetentionSweeperOptions {
  /** Delivered mail older than this is deleted; absent, it is kept. */
  readonly mailboxDays?: number | undefined;
  /** What is deleted from `inbound/`, `notifications/` and `forwarded/`, and when. */
  readonly received: ReceivedRetention;
  /**
   * The store those are deleted through (default: the sweep's). `dev` gives the router's, whose
   * commits do not wait for the disk: an expiry lost in a crash is simply redone by the next sweep,
   * and a synced commit per deletion would stall the relay through a first sweep of a big backlog.
   */
  readonly receivedBlobs?: Pick<BlobStore, 'list' | 'head' | 'delete'>;
  /** @default LOCAL_SWEEP_INTERVAL_MS */
  readonly intervalMs?: number;
  /** After every sweep of mailboxes that ran to its end or was stopped. */
  readonly onSwept?: (summary: SweepSummary) => void;
  /** After every expiry of received mail. */
  readonly onExpired?: (expiry: ReceivedExpiry) => void;
  /** A sweep that threw (listing the mailboxes failed); the timer keeps going. */
  readonly onError?: (err: unknown) => void;
}

export interface RetentionSweeper {
  /** Stops the timer, interrupts a sweep in progress between two messages, and waits for it. */
  stop(): Promise<void>;
}

/** Starts sweeping now and every `intervalMs`. A tick that finds a sweep still running is skipped. */
export function startRetentionSweeper(
  deps: RetentionDeps,
  options: RetentionSweeperOptions,
): RetentionSweeper {
  const intervalMs = options.intervalMs ?? LOCAL_SWEEP_INTERVAL_MS;
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
    throw new RangeError(`intervalMs must be positive, got ${String(options.intervalMs)}`);
  }
  const stopping = new AbortController();
  let running: Promise<void> | null = null;
  const tick = (): void => {
    if (running !== null || stopping.signal.aborted) return;
    running = (async () => {
      try {
        if (options.mailboxDays !== undefined) {
          const summary = await sweepExpired(deps, {
            mailboxDays: options.mailboxDays,
            signal: stopping.signal,
          });
          options.onSwept?.(summary);
        }
        const expiry = await expireReceived(
          options.receivedBlobs ?? deps.blobs,
          options.received,
          new Date(),
          stopping.signal,
        );
        options.onExpired?.(expiry);
      } catch (err) {
        options.onError?.(err);
      } finally {
        running = null;
      }
    })();
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
  return {
    async stop() {
      clearInterval(timer);
      stopping.abort();
      await running;
    },
  };
}
