/**
 * Mailbox retention (`retention.mailboxDays`): deletes delivered mail received more than
 * `mailboxDays` ago, through the ports, so that the index entry, the mailbox counters and the
 * blobs go together. An S3 lifecycle rule cannot do this: it expires objects and leaves their
 * index entries and counters pointing at nothing (docs/adr/0010-mailbox-retention.md).
 *
 * The order is DELE's (docs/adr/0005-mailbox-http-api.md): the index delete, which updates the
 * counters in the same transaction, is the commit point; the blobs follow. A reader never sees an
 * entry whose bytes are gone. A crash in between leaves blobs without an entry, which the next
 * sweep finds by listing the mailbox's expired keys (oldest first, so the listing stops at the
 * first kept message) and removes.
 *
 * Idempotent, and safe beside delivery: new mail has new ids (ULIDs of the receipt time), newer
 * than anything the sweep deletes, and every delete is conditional on the entry still existing.
 */

import { encodeCursor, encodeMailboxCursor } from '../core/cursor.ts';
import { errorMessage, ValidationError } from '../core/errors.ts';
import { messageIdFor, timeOfId, ULID_RE } from '../core/ids.ts';
import { deleteMessageBlobs, mailboxKeys } from '../core/keys.ts';
import { ownerOf } from '../core/mailbox-pages.ts';
import { DAY_MS } from '../core/time.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { MailboxIndex } from '../ports/mailbox-index.ts';

/**
 * Page size of the walk, of mailboxes and of each mailbox's LIST: the index's maximum, so a mailbox
 * of kept mail costs few queries.
 */
const PAGE_SIZE = 1000;
/** Length of a message id (ULID) at the start of a key under `mailboxes/<mailbox>/`. */
const ID_LENGTH = 26;
/**
 * Expired blobs without an index entry are left alone until they are this old: a delivery of old
 * mail (`mail-relay import`, `replay`) writes its blobs before its index entry and may be between
 * the two right now. A router invocation ends within 15 minutes (Lambda's limit).
 */
export const ORPHAN_GRACE_MS = 60 * 60 * 1000;

/**
 * Where a sweep stopped early (`signal`): the mailbox-list cursor after the last mailbox it finished.
 * The next sweep goes on from there to the end, so a registry too large for one run (a Lambda's 15
 * minutes) is still swept to its last mailbox; a sweep that reaches the end removes it, and the one
 * after starts from the first mailbox again.
 */
export const SWEEP_RESUME_KEY = 'retention/resume.json';

/** The ports a sweep needs: no parser, no outbound. */
export interface RetentionDeps {
  readonly index: MailboxIndex;
  readonly blobs: BlobStore;
}

export interface SweepProgress {
  /** The mailbox (index key) just swept. */
  readonly mailbox: string;
  /** Mailboxes swept so far (how many there are is known only at the end: they are listed a page at a time). */
  readonly done: number;
  /** Messages deleted so far, and their bytes. */
  readonly deleted: number;
  readonly bytes: number;
}

export interface SweepOptions {
  /** Messages received more than this many days before `now` are deleted. */
  readonly mailboxDays: number;
  /** @default new Date() */
  readonly now?: Date | undefined;
  /** Called after each mailbox. */
  readonly onProgress?: ((progress: SweepProgress) => void) | undefined;
  /**
   * Stops the sweep between two messages (shutdown, a Lambda close to its timeout). What was
   * deleted stays deleted; the next sweep carries on.
   */
  readonly signal?: AbortSignal | undefined;
}

export interface SweepFailure {
  readonly mailbox: string;
  readonly error: string;
}

export interface SweepSummary {
  /**
   * Mailboxes swept (sent views included): every one the index knows, or, for a sweep that went on
   * from where an earlier one stopped (SWEEP_RESUME_KEY), those from there to the end.
   */
  readonly mailboxes: number;
  /** Messages deleted: index entry, counters and blobs. */
  readonly deleted: number;
  /** Their bytes, as the counters counted them. */
  readonly bytes: number;
  /** Expired messages whose blobs had outlived their index entry (an interrupted DELE or sweep), removed. */
  readonly orphans: number;
  /** Mailboxes whose sweep failed (a storage error); the others were still swept. */
  readonly failures: readonly SweepFailure[];
  /** False when `signal` stopped the sweep before the last mailbox was done (the next goes on from there). */
  readonly complete: boolean;
}

/**
 * Deletes every message received before `now − mailboxDays` from every mailbox. Mailboxes are
 * swept one after another; one that fails is reported in `failures` and the rest still run.
 */
export async function sweepExpired(deps: RetentionDeps, options: SweepOptions): Promise<SweepSummary> {
  const { mailboxDays, signal, onProgress } = options;
  if (!Number.isFinite(mailboxDays) || mailboxDays <= 0) {
    throw new RangeError(`sweepExpired: mailboxDays must be a positive number, got ${String(mailboxDays)}`);
  }
  const now = (options.now ?? new Date()).getTime();
  if (!Number.isFinite(now)) throw new RangeError('sweepExpired: now is not a valid date');
  const cutoff = now - mailboxDays * DAY_MS;

  const totals = { mailboxes: 0, deleted: 0, bytes: 0, orphans: 0 };
  const failures: SweepFailure[] = [];
  const resumed = await readResumeCursor(deps.blobs);
  // The last owner (address) whose keys, its sent view's too, were all swept: where to go on from.
  let finished: string | undefined;
  let current: string | undefined;
  const stopped = async (): Promise<SweepSummary> => {
    const cursor = finished === undefined ? resumed : encodeMailboxCursor(finished);
    if (cursor !== undefined) {
      await deps.blobs.put(SWEEP_RESUME_KEY, Buffer.from(JSON.stringify({ cursor })), {
        contentType: 'application/json',
      });
    }
    return { ...totals, failures, complete: false };
  };
  // A page of mailboxes at a time, so that a registry of any size is walked in bounded memory. The
  // cursor is the last address seen: deleting mail does not disturb the next page.
  let cursor = resumed;
  for (;;) {
    let page: Awaited<ReturnType<MailboxIndex['listMailboxes']>>;
    try {
      page = await deps.index.listMailboxes({ limit: PAGE_SIZE, cursor });
    } catch (err) {
      // A saved position the index no longer takes: start from the first mailbox.
      if (!(err instanceof ValidationError) || cursor === undefined || cursor !== resumed) throw err;
      cursor = undefined;
      continue;
    }
    // Keys come by owner (an address, then its sent view), and a page holds whole owners: the owner
    // swept so far is done when the next key is another's, or the page ends.
    const { items } = page;
    const settle = (next: number): void => {
      const key = items[next]?.address;
      if (current !== undefined && (key === undefined || ownerOf(key) !== current)) finished = current;
    };
    for (const [i, { address: mailbox }] of items.entries()) {
      if (signal?.aborted) return stopped();
      current = ownerOf(mailbox);
      let whole: boolean;
      try {
        whole = await sweepMailbox(deps, mailbox, { cutoff, now, signal }, totals);
      } catch (err) {
        failures.push({ mailbox, error: errorMessage(err) });
        // Reported, and tried again by the next full sweep.
        whole = true;
      }
      if (!whole) return stopped();
      settle(i + 1);
      totals.mailboxes++;
      onProgress?.({ mailbox, done: totals.mailboxes, deleted: totals.deleted, bytes: totals.bytes });
    }
    if (page.nextCursor === null) break;
    cursor = page.nextCursor;
  }
  if (resumed !== undefined) await deps.blobs.delete(SWEEP_RESUME_KEY);
  return { ...totals, failures, complete: true };
}

/** The position a stopped sweep saved, if any (an unreadable one is ignored: the sweep starts over). */
async function readResumeCursor(blobs: BlobStore): Promise<string | undefined> {
  const saved = await blobs.get(SWEEP_RESUME_KEY);
  if (saved === null) return undefined;
  try {
    const { cursor } = JSON.parse(saved.toString('utf8')) as { cursor?: unknown };
    return typeof cursor === 'string' && cursor !== '' ? cursor : undefined;
  } catch {
    return undefined;
  }
}

interface MailboxSweep {
  readonly cutoff: number;
  readonly now: number;
  readonly signal: AbortSignal | undefined;
}

/** Index first (the commit point, with the counters), then the blobs. */
async function deleteMessage(
  deps: RetentionDeps,
  mailbox: string,
  id: string,
  totals: { deleted: number; bytes: number },
): Promise<void> {
  const removed = await deps.index.delete(mailbox, id);
  // null: a DELE (or another sweep) got there first; its blob deletes may not have run yet, and
  // deleting a missing blob is a no-op, so ours run anyway.
  if (removed !== null) {
    totals.deleted++;
    totals.bytes += removed.size;
  }
  await deleteMessageBlobs(deps.blobs, mailbox, id);
}

async function sweepMailbox(
  deps: RetentionDeps,
  mailbox: string,
  sweep: MailboxSweep,
  totals: { deleted: number; bytes: number; orphans: number },
): Promise<boolean> {
  // Newest first, from the cutoff down: a cursor is exclusive and ids sort by receipt time, so
  // listing starts below the first possible id of the cutoff's millisecond and reads expired mail
  // only (it read every kept message first, each sweep: the whole of a 100,000-message mailbox,
  // ~18,000 read units in DynamoDB, to find nothing). The cursor is the last id seen, so deleting
  // the entries of a page does not disturb the next.
  if (sweep.cutoff <= 0) return sweepOrphans(deps, mailbox, sweep, totals);
  let cursor: string | undefined = encodeCursor(
    `${messageIdFor(sweep.cutoff, '').slice(0, 10)}${'0'.repeat(16)}`,
  );
  do {
    const page = await deps.index.list(mailbox, { limit: PAGE_SIZE, cursor });
    for (const entry of page.items) {
      if (timeOfId(entry.id) >= sweep.cutoff) continue;
      if (sweep.signal?.aborted) return false;
      await deleteMessage(deps, mailbox, entry.id, totals);
    }
    cursor = page.nextCursor ?? undefined;
  } while (cursor !== undefined);

  return sweepOrphans(deps, mailbox, sweep, totals);
}

/**
 * Expired ids that still have blobs under `mailboxes/<mailbox>/`. Keys list in byte order and
 * ids sort by receipt time, so the expired ones come first: the listing stops at the first key
 * that is not an expired id (a kept message, or the `sent/` view, which sorts after every id).
 */
async function expiredBlobIds(
  blobs: BlobStore,
  mailbox: string,
  cutoff: number,
): Promise<Map<string, number>> {
  const prefix = mailboxKeys.prefix(mailbox);
  /** id -> newest lastModified of its blobs */
  const found = new Map<string, number>();
  for await (const info of blobs.list(prefix)) {
    const rest = info.key.slice(prefix.length);
    const id = rest.slice(0, ID_LENGTH);
    const after = rest.charAt(ID_LENGTH);
    if (!ULID_RE.test(id) || (after !== '.' && after !== '/') || timeOfId(id) >= cutoff) break;
    found.set(id, Math.max(found.get(id) ?? 0, info.lastModified));
  }
  return found;
}

async function sweepOrphans(
  deps: RetentionDeps,
  mailbox: string,
  sweep: MailboxSweep,
  totals: { deleted: number; bytes: number; orphans: number },
): Promise<boolean> {
  for (const [id, lastModified] of await expiredBlobIds(deps.blobs, mailbox, sweep.cutoff)) {
    if (sweep.signal?.aborted) return false;
    // An entry that appeared after the walk passed (old mail imported or replayed meanwhile) is
    // expired all the same, and goes the usual way.
    if ((await deps.index.get(mailbox, id)) !== null) {
      await deleteMessage(deps, mailbox, id, totals);
    } else if (lastModified < sweep.now - ORPHAN_GRACE_MS) {
      await deleteMessageBlobs(deps.blobs, mailbox, id);
      totals.orphans++;
    }
  }
  return true;
}
