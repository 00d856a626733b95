/**
 * MailboxIndex: per-mailbox message entries, exact counters and API tokens.
 * Adapters: DynamoDB single table (AWS) and SQLite (local). Both pass test/contract/mailbox-index.contract.ts.
 */
import type { VerdictName } from '../core/config.ts';
import { ValidationError } from '../core/errors.ts';
import type { Verdicts } from '../core/routing.ts';

export interface MessageEntry {
  readonly mailbox: string;
  /** ULID: sorts by receipt time; deterministic from receipt time and SES message id. */
  readonly id: string;
  /** Bytes of the stored raw message (trace headers included). */
  readonly size: number;
  /**
   * Octets of that message with every line ending in CRLF (`crlfSize` of core/mime-header.ts):
   * what POP3 counts. Equal to `size` unless the message has bare LF or bare CR line ends. Entries
   * written before it was recorded read back with `size`.
   */
  readonly crlfSize: number;
  /** ISO 8601 receipt time. */
  readonly receivedAt: string;
  /** Display form of the first From address ("Name <a@b>"), or "" when absent. */
  readonly from: string;
  /** Display form of the To addresses, comma-separated. */
  readonly to: string;
  readonly subject: string;
  readonly snippet: string;
  readonly hasAttachments: boolean;
  readonly seen: boolean;
  readonly verdicts: Verdicts;
  /** Verdicts whose policy said `tag`. */
  readonly tags: readonly VerdictName[];
  /** Set when this copy is in the quarantine mailbox: which verdicts put it there. */
  readonly quarantineReasons?: readonly VerdictName[] | undefined;
  /** The envelope recipient that led here, and its `+tag` when plus-addressed. */
  readonly recipient: string;
  readonly plusTag?: string | undefined;
  /** True when the parser could not read the message: only the raw bytes are available. */
  readonly parseFailed: boolean;
  /** The SES message id (`inbound/<sesMessageId>`). */
  readonly sesMessageId: string;
}

/**
 * The fields of an entry that come from parsing its message (the rest come from the envelope, the
 * receipt and the owner's flags): what `mail-relay reparse` rewrites with a newer parser.
 */
export type ParsedEntryFields = Pick<
  MessageEntry,
  'from' | 'to' | 'subject' | 'snippet' | 'hasAttachments' | 'parseFailed'
>;

export interface MailboxStat {
  readonly address: string;
  readonly messages: number;
  readonly bytes: number;
}

export interface ListOptions {
  /** 1..1000 */
  readonly limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. An invalid cursor throws ValidationError (code `invalid_cursor`). */
  readonly cursor?: string | undefined;
  /**
   * Only messages not yet seen. DynamoDB reads these from an eventually consistent index (ADR 20):
   * a flag changed a moment ago may not show yet, so nothing that must be exact lists with it.
   */
  readonly unseen?: boolean | undefined;
  /** Case-insensitive substring match on from, to and subject. */
  readonly q?: string | undefined;
  /**
   * Oldest first (ascending ids) instead of newest first: `mail-relay export` streams a mailbox in
   * the order it received it, a page at a time. A cursor is for the order it was made in; given to the
   * other it is `invalid_cursor`. @default false
   */
  readonly oldestFirst?: boolean | undefined;
}

export interface ListPage {
  /** Newest first (oldest first with `oldestFirst`). */
  readonly items: readonly MessageEntry[];
  /** Present when more items may follow. */
  readonly nextCursor: string | null;
}

export interface MailboxListOptions {
  /** Mailboxes (owner addresses) per page, 1..1000; a sent view goes with its owner and is not counted. */
  readonly limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. An invalid cursor throws ValidationError (code `invalid_cursor`). */
  readonly cursor?: string | undefined;
}

export interface MailboxPage {
  /**
   * The counters of every index key of the page's mailboxes: by address, each address's own key
   * before its sent view's (`sentMailboxKey`, which is on the same page as its owner, and makes an
   * owner of its own when the address has no mail of its own).
   */
  readonly items: readonly MailboxStat[];
  /** Present when more mailboxes follow; null exactly on the last page. */
  readonly nextCursor: string | null;
}

export interface TokenRecord {
  /** Hex SHA-256 of the token; the token itself is never stored. */
  readonly hash: string;
  /** The mailbox the token reads, or null for an admin token. */
  readonly mailbox: string | null;
  readonly admin: boolean;
  readonly createdAt: string;
  readonly label?: string | undefined;
}

/** The state of one outgoing send (a forward to one destination, or a submission). */
export type SendState = 'pending' | 'sent' | 'failed';

/**
 * The idempotency record of one send, keyed by message × destination. Written by a conditional
 * insert, so two routers processing the same notification cannot both send.
 */
export interface SendRecord {
  /** `<sesMessageId>:<destination>` for forwards; any unique string for other sends. */
  readonly key: string;
  readonly state: SendState;
  /** How many times the send was claimed (1 on the first attempt; re-claims after a failure or an expired lease add 1). */
  readonly attempts: number;
  /** ISO 8601 time of the latest claim. */
  readonly claimedAt: string;
  /** ISO 8601 time of the latest state change. */
  readonly updatedAt: string;
  /** The provider's message id once sent. */
  readonly providerMessageId?: string | undefined;
  /** What was sent when it was not the message itself (e.g. `oversize-notice`), or a reference such as a stored copy's id. */
  readonly detail?: string | undefined;
  /** Why the last attempt failed. */
  readonly error?: string | undefined;
}

export interface ClaimSendOptions {
  readonly now: Date;
  /**
   * A `pending` claim older than this is taken to be from a sender that crashed mid-send and may
   * be claimed again (a crash after the provider accepted but before `finishSend` then sends twice:
   * at-least-once for that window, never lost).
   */
  readonly leaseMs: number;
}

export type SendOutcome =
  | { readonly state: 'sent'; readonly providerMessageId: string; readonly detail?: string | undefined }
  | {
      readonly state: 'failed';
      readonly error: string;
      /** Kept on the record, as for a send (e.g. what the failed attempt sent, for a retry to send the same). */
      readonly detail?: string | undefined;
    };

export interface DeliverOptions {
  /** Deliver even an id that was deleted (see `delete`), and forget the deletion. */
  readonly restoreDeleted?: boolean | undefined;
}

/** What `committedAfter` returns: entries in the order their deliveries committed. */
export interface CommittedPage {
  /** Entries whose delivery committed after the cursor, oldest commit first; deleted ones are skipped. */
  readonly items: readonly MessageEntry[];
  /** The commit number of each of `items`, in the same order. */
  readonly commits: readonly number[];
  /** Ask with this next: the last commit returned, or the cursor asked with when there was none. */
  readonly cursor: number;
  /** More committed than `limit`: ask again with `cursor` at once. */
  readonly truncated: boolean;
}

/** Whether a mailbox holds an id, held it and had it deleted (and still remembers), or never did. */
export type DeliveryState = 'present' | 'deleted' | 'absent';

/** S3 runs lifecycle expirations asynchronously: an expired object can linger about a day. */
const LIFECYCLE_LAG_DAYS = 2;

/**
 * How long an adapter remembers a deletion: as long as `inbound/` keeps the raw message (config
 * `retention.inboundDays`) plus the lag of the bucket's lifecycle rule, since without the raw bytes
 * nothing can be delivered again.
 */
export function deletionMemoryDaysFor(config: {
  readonly retention: { readonly inboundDays: number };
}): number {
  return config.retention.inboundDays + LIFECYCLE_LAG_DAYS;
}

/** The adapters' default: `deletionMemoryDaysFor` the default `retention.inboundDays` (30). */
export const DEFAULT_DELETION_MEMORY_DAYS = 30 + LIFECYCLE_LAG_DAYS;

/** The most ids one `deleteMany` takes (the API's batch delete and a page of LIST alike). */
export const MAX_DELETE_MANY = 1000;

/** What every adapter's `deleteMany` checks first. */
export function assertDeleteMany(ids: readonly string[]): void {
  if (ids.length > MAX_DELETE_MANY) {
    throw new ValidationError(`at most ${MAX_DELETE_MANY} ids at a time`, [String(ids.length)]);
  }
}

export interface MailboxIndex {
  /**
   * Inserts the entry and adds it to the mailbox counters in ONE transaction, only if no entry
   * with this mailbox and id exists, and none was deleted (unless `restoreDeleted`). A repeated
   * delivery, or one of a deleted message, is a no-op: `{inserted: false}`.
   */
  deliver(entry: MessageEntry, options?: DeliverOptions): Promise<{ inserted: boolean }>;
  get(mailbox: string, id: string): Promise<MessageEntry | null>;
  /**
   * What a delivery of this id would find (the router asks before writing any blob): the entry,
   * the memory of its deletion, or nothing.
   */
  deliveryState(mailbox: string, id: string): Promise<DeliveryState>;
  list(mailbox: string, options: ListOptions): Promise<ListPage>;
  /**
   * The mailbox's commit counter: each delivery takes the next number in the order deliveries
   * commit (which is not the order of ids: an id is the time of receipt, and a large message can
   * commit after a newer small one). Never goes down, not even when mail is deleted; 0 for a
   * mailbox that never received any.
   */
  commitCursor(mailbox: string): Promise<number>;
  /**
   * Entries delivered after `cursor` (from `commitCursor` or an earlier page), oldest commit first,
   * at most `limit`: what a client that follows new mail by cursor has not seen yet. Mail delivered
   * before commit numbers existed has none in DynamoDB (the local index numbers it in id order when
   * it upgrades), so start from `commitCursor`, not from 0, to follow new mail.
   */
  committedAfter(mailbox: string, cursor: number, limit: number): Promise<CommittedPage>;
  /** Exact counters; a mailbox that never received mail has zeros. */
  stat(mailbox: string): Promise<MailboxStat>;
  /**
   * The mailboxes that have (or had) mail, with their counters, by address, a page at a time (the
   * mailbox list's cursor, core/mailbox-pages.ts: the same on every adapter).
   */
  listMailboxes(options: MailboxListOptions): Promise<MailboxPage>;
  /** Returns the updated entry, or null when there is no such message. */
  setSeen(mailbox: string, id: string, seen: boolean): Promise<MessageEntry | null>;
  /**
   * Rewrites the parsed fields of an existing entry (and the folded copies `q` searches), leaving
   * everything else as it is: id, size, receipt time, `seen`, verdicts, the counters, the commit
   * order. Conditional on the entry existing: returns the updated entry, or null when there is none
   * (never delivered, or deleted meanwhile, which this never undoes).
   */
  updateParsed(mailbox: string, id: string, fields: ParsedEntryFields): Promise<MessageEntry | null>;
  /**
   * Removes the entry and subtracts it from the counters in one transaction, which also records the
   * deletion (for `deletionMemoryDays`), so that the same message delivered again (a replay, a
   * notification delivered twice, journal recovery) stays deleted; null when already gone.
   */
  delete(mailbox: string, id: string): Promise<MessageEntry | null>;
  /**
   * `delete` for several ids of one mailbox, in as few transactions as the store allows (locally
   * one, and one fsync; in DynamoDB one per group of messages that fits a transaction). Each
   * message's removal, deletion record and counter change still commit together. The result is in
   * the order of `ids`: the removed entry, or null for an id with no entry (an id given twice is
   * removed once, null the second time). At most `MAX_DELETE_MANY` ids.
   */
  deleteMany(mailbox: string, ids: readonly string[]): Promise<(MessageEntry | null)[]>;

  /**
   * Claims a send, conditionally: succeeds when there is no record for `key`, or its state is
   * `failed`, or it is `pending` with a claim older than `leaseMs`; the record is then `pending`.
   * Otherwise (already `sent`, or `pending` under a live lease) `{claimed: false}` and the record as it is.
   */
  claimSend(key: string, options: ClaimSendOptions): Promise<{ claimed: boolean; record: SendRecord }>;
  /** Records how a claimed send ended. Returns the updated record. */
  finishSend(key: string, outcome: SendOutcome, now: Date): Promise<SendRecord>;
  /** The record of a send, or null when it was never claimed. */
  getSend(key: string): Promise<SendRecord | null>;

  putToken(token: TokenRecord): Promise<void>;
  getToken(hash: string): Promise<TokenRecord | null>;
  /** Returns whether a token was removed. */
  deleteToken(hash: string): Promise<boolean>;

  close(): Promise<void>;
}
