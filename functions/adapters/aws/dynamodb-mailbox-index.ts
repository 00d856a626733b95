/**
 * MailboxIndex on one DynamoDB table (design §3).
 *
 * Items (all strings unless noted):
 *   pk = MBX#<mailbox>  sk = MSG#<id>        one message entry (+ lower-cased copies of from/to/subject for `q`;
 *                                            + `unseenPk` = MBX#<mailbox> while it is unread, see below)
 *   pk = MBX#<mailbox>  sk = STAT            counters: messages, bytes, and commits (the last commit number);
 *                                            `unseenIndexed` once every unread entry carries `unseenPk`
 *   pk = MBX#<mailbox>  sk = SEQ#<n>         id of the message whose delivery took commit number n (zero-padded),
 *                                            while that message exists: `committedAfter` reads these in order
 *   pk = MBX#<mailbox>  sk = DEL#<id>        a deletion, remembered until `expiresAt` (epoch seconds, the table's TTL)
 *   pk = MAILBOXES      sk = MBX#<mailbox>   registry of mailboxes that ever had mail, for listMailboxes (a page
 *                                            of it at a time: core/mailbox-pages.ts)
 *   pk = TOKEN#<hash>   sk = TOKEN           an API token, by the hex SHA-256 of the token (never the token)
 *   pk = SEND#<key>     sk = SEND            the idempotency record of one outgoing send (claimSend; `claimId`:
 *                                            the last claim's random id, see claimSend)
 *
 * A delivery is ONE TransactWriteItems: the conditional put of the entry (only if absent), the
 * counter increment and the next commit number (conditioned on the number read just before, so two
 * deliveries never take the same one; the loser reads again), and its SEQ# item, so a retried
 * delivery changes nothing and the counters can never drift from the entries. (A GSI on a commit
 * number would be eventually consistent: a reader could skip a commit not yet visible in it.) A
 * delete is likewise one transaction (conditional delete + decrement, and its SEQ# item). Concurrent
 * deliveries to one mailbox touch the same STAT item, so DynamoDB may cancel one with
 * TransactionConflict; those are retried here with backoff.
 *
 * The registry item is written before the transaction, idempotently, until this process has
 * once seen it succeed for a mailbox. Before, not after: a retry of a delivery that committed
 * finds the entry present and never calls `deliver` again (router.ts, deliveryState), so a registry
 * write that failed after the commit (or a commit whose answer was lost) was never made up for,
 * and the mailbox was missing from listMailboxes for good. A delivery that fails after the registry
 * write leaves a registered mailbox without mail, listed with zero counters, as configured
 * mailboxes are. It keeps listMailboxes a strongly consistent Query instead of a Scan of every
 * message or an eventually consistent index, and keeps it out of the transaction (2 WCU per
 * delivery saved).
 *
 * Unread mail (docs/adr/0020-unseen-index.md): a message item carries `unseenPk` exactly while it is
 * unread (set by its delivery, removed by setSeen(true), set again by setSeen(false), gone with the
 * item), so the sparse global secondary index UNSEEN_INDEX (`unseenPk` HASH, `sk` RANGE, all
 * attributes projected) holds a mailbox's unread mail and nothing else: a LIST with `unseen` is one
 * Query of it, newest first, however much read mail lies between. The index is eventually
 * consistent and only LIST with `unseen` reads it. Items written before the index existed lack the
 * attribute: a mailbox's STAT item says `unseenIndexed` once they were given it (`backfillUnseen`,
 * or a first delivery to an empty mailbox), and until then LIST with `unseen` reads the mailbox with
 * a filter as before.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  type QueryCommandInput,
  ScanCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import * as z from 'zod';
import { VERDICT_NAMES } from '../../core/config.ts';
import { decodeCursor, encodeCursor } from '../../core/cursor.ts';
import { ValidationError } from '../../core/errors.ts';
import { pageOfOwners } from '../../core/mailbox-pages.ts';
import { foldForSearch } from '../../core/search.ts';
import { DAY_MS } from '../../core/time.ts';
import {
  assertDeleteMany,
  type ClaimSendOptions,
  type CommittedPage,
  DEFAULT_DELETION_MEMORY_DAYS,
  type DeliverOptions,
  type DeliveryState,
  type ListOptions,
  type ListPage,
  type MailboxIndex,
  type MailboxListOptions,
  type MailboxPage,
  type MailboxStat,
  type MessageEntry,
  type ParsedEntryFields,
  type SendOutcome,
  type SendRecord,
  type TokenRecord,
} from '../../ports/mailbox-index.ts';

/**
 * Key attribute names of the table; the infrastructure stack creates it with these
 * (both strings, pk HASH + sk RANGE).
 */
export const TABLE_KEYS = { partitionKey: 'pk', sortKey: 'sk' } as const;

/**
 * The sparse index of unread mail (see the module comment): its name, and its partition key, an
 * attribute only unread message items have (`MBX#<mailbox>`, as their `pk`); its sort key is the
 * table's `sk`. The stack (lib/storage.ts) declares the same.
 */
export const UNSEEN_INDEX = { indexName: 'unseen', partitionKey: 'unseenPk' } as const;
/** On a mailbox's STAT item: every unread entry of the mailbox carries `unseenPk`. */
const UNSEEN_INDEXED = 'unseenIndexed';

/** The port's bounds for a page. */
const MAX_LIMIT = 1000;
/**
 * Items the first Query of a filtered (q / unseen) page examines; the filter applies after the read.
 * Each further round trip of the same page reads twice as many (up to DynamoDB's 1 MB a Query), so a
 * common match costs little more than the page and a rare one few round trips.
 */
const FILTERED_QUERY_PAGE = 200;
/**
 * Message items one filtered page reads at most (DynamoDB bills the items read, not those that
 * match): ~7.5 MB of ~750-byte entries, ~1,900 read units, a few hundred ms. Without it a `q` that
 * matches nothing read the whole mailbox in one request: at 100,000 messages ~500 round trips and
 * ~18,000 read units, and past API Gateway's 29 s from about a million. A page that stops here has
 * fewer than `limit` items (maybe none) and a `nextCursor` to read on from.
 */
export const DEFAULT_FILTERED_READ_BUDGET = 10_000;
/** BatchGetItem takes at most 100 keys. */
const BATCH_GET_MAX = 100;
/** TransactionConflict retries before giving up (the caller, e.g. SQS, retries the whole delivery). */
const MAX_TRANSACTION_ATTEMPTS = 8;
/** Messages per deletion transaction: up to 3 items each plus the counters', within DynamoDB's 100. */
const DELETE_GROUP = 33;
const DELETE_GROUP_CONCURRENCY = 4;
/** Entries `backfillUnseen` updates at a time (one UpdateItem each). */
const BACKFILL_CONCURRENCY = 16;
const RETRY_BASE_MS = 25;
/**
 * How long a delivery keeps trying when other processes keep taking the mailbox's next commit
 * number first (each round has one winner, so a burst of k deliveries to one mailbox needs about
 * k rounds to drain), before giving up (the caller, e.g. SQS, retries the whole delivery). Well
 * inside the router's 60 s timeout.
 */
const COMMIT_RACE_BUDGET_MS = 20_000;
/** Backoff after a lost race: full jitter, doubling from this, up to RACE_BACKOFF_MAX_MS. */
const RACE_BACKOFF_BASE_MS = 10;
const RACE_BACKOFF_MAX_MS = 250;

const REGISTRY_PK = 'MAILBOXES';
const STAT_SK = 'STAT';
const TOKEN_SK = 'TOKEN';
const mailboxPk = (mailbox: string) => `MBX#${mailbox}`;
const messageSk = (id: string) => `MSG#${id}`;
const deletionSk = (id: string) => `DEL#${id}`;
/** Zero-padded so that sort-key order is commit order. */
const commitSk = (seq: number) => `SEQ#${String(seq).padStart(15, '0')}`;
/** Sorts after every SEQ# key ('$' follows '#'). */
const COMMIT_SK_END = 'SEQ$';
/** The TTL attribute of the table (deletions); the stack declares the same name. */
export const TTL_ATTRIBUTE = 'expiresAt';
const tokenPk = (hash: string) => `TOKEN#${hash}`;
const SEND_SK = 'SEND';
const sendPk = (key: string) => `SEND#${key}`;

/** The table as the tests (and local tooling) create it; the CDK stack declares the same keys. */
export function mailboxTableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [
      { AttributeName: TABLE_KEYS.partitionKey, AttributeType: 'S' },
      { AttributeName: TABLE_KEYS.sortKey, AttributeType: 'S' },
      { AttributeName: UNSEEN_INDEX.partitionKey, AttributeType: 'S' },
    ],
    KeySchema: [
      { AttributeName: TABLE_KEYS.partitionKey, KeyType: 'HASH' },
      { AttributeName: TABLE_KEYS.sortKey, KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: UNSEEN_INDEX.indexName,
        KeySchema: [
          { AttributeName: UNSEEN_INDEX.partitionKey, KeyType: 'HASH' },
          { AttributeName: TABLE_KEYS.sortKey, KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
    ],
  };
}

export interface UnseenBackfillOptions {
  /** Also the mailboxes already marked `unseenIndexed`. @default false */
  readonly all?: boolean;
  /** Called before the first mailbox and after each. */
  readonly onProgress?: (progress: UnseenBackfillProgress) => void;
}

/** How far `backfillUnseen` got. */
export interface UnseenBackfillProgress {
  /** Mailboxes (index keys: an address, or its sent view) marked `unseenIndexed` so far. */
  readonly mailboxes: number;
  /** Mailboxes the run found unmarked (with `all`: every mailbox). */
  readonly of: number;
  /** Entries given `unseenPk` (or relieved of it) so far. */
  readonly entries: number;
}

export interface DynamoDbMailboxIndexOptions {
  /** A document client created once per process and shared (module scope in a Lambda). */
  readonly client: DynamoDBDocumentClient;
  readonly tableName: string;
  /** How long a deletion is remembered (see MailboxIndex.delete). @default DEFAULT_DELETION_MEMORY_DAYS */
  readonly deletionMemoryDays?: number;
  /** ms since epoch; for tests. */
  readonly clock?: () => number;
  /** Message items a `q` / `unseen` page reads at most. @default DEFAULT_FILTERED_READ_BUDGET */
  readonly filteredReadBudget?: number;
}

const verdictNameSchema = z.enum(VERDICT_NAMES);

/** What a message item holds; read back through this so a malformed item fails loudly, not later. */
const messageItemSchema = z.object({
  [TABLE_KEYS.partitionKey]: z.string().startsWith('MBX#'),
  [TABLE_KEYS.sortKey]: z.string().startsWith('MSG#'),
  size: z.number(),
  receivedAt: z.string(),
  from: z.string(),
  to: z.string(),
  subject: z.string(),
  snippet: z.string(),
  hasAttachments: z.boolean(),
  seen: z.boolean(),
  verdicts: z.object({
    spam: z.string(),
    virus: z.string(),
    spf: z.string(),
    dkim: z.string(),
    dmarc: z.string(),
    dmarcPolicy: z.string().optional(),
  }),
  tags: z.array(verdictNameSchema),
  quarantineReasons: z.array(verdictNameSchema).optional(),
  recipient: z.string(),
  plusTag: z.string().optional(),
  parseFailed: z.boolean(),
  sesMessageId: z.string(),
  /** Absent on entries written before it was recorded. */
  crlfSize: z.number().optional(),
});

const statItemSchema = z.object({
  messages: z.number(),
  bytes: z.number(),
  /** Absent on a mailbox with no delivery since commit numbers were introduced. */
  commits: z.number().optional(),
  /** Absent until every unread entry of the mailbox carries `unseenPk`. */
  [UNSEEN_INDEXED]: z.boolean().optional(),
});
const commitItemSchema = z.object({ [TABLE_KEYS.sortKey]: z.string().startsWith('SEQ#'), id: z.string() });
/** A registry item: its sort key names the mailbox (and orders the registry). */
const registryItemSchema = z.object({ [TABLE_KEYS.sortKey]: z.string().startsWith('MBX#') });

const tokenItemSchema = z.object({
  hash: z.string(),
  mailbox: z.string().nullable(),
  admin: z.boolean(),
  createdAt: z.string(),
  label: z.string().optional(),
});

const sendItemSchema = z.object({
  key: z.string(),
  state: z.enum(['pending', 'sent', 'failed']),
  attempts: z.number(),
  claimedAt: z.string(),
  updatedAt: z.string(),
  providerMessageId: z.string().optional(),
  detail: z.string().optional(),
  error: z.string().optional(),
});

function toSendRecord(item: Record<string, unknown>): SendRecord {
  const r = sendItemSchema.parse(item);
  return {
    key: r.key,
    state: r.state,
    attempts: r.attempts,
    claimedAt: r.claimedAt,
    updatedAt: r.updatedAt,
    ...(r.providerMessageId !== undefined ? { providerMessageId: r.providerMessageId } : {}),
    ...(r.detail !== undefined ? { detail: r.detail } : {}),
    ...(r.error !== undefined ? { error: r.error } : {}),
  };
}

/** The folded copies `q` searches (`foldForSearch`). */
const fold = foldForSearch;

function toItem(e: MessageEntry): Record<string, unknown> {
  return {
    [TABLE_KEYS.partitionKey]: mailboxPk(e.mailbox),
    // The mailbox and id are the keys themselves; not repeated as attributes.
    [TABLE_KEYS.sortKey]: messageSk(e.id),
    size: e.size,
    receivedAt: e.receivedAt,
    from: e.from,
    to: e.to,
    subject: e.subject,
    snippet: e.snippet,
    hasAttachments: e.hasAttachments,
    seen: e.seen,
    // Absent rather than undefined, so the item marshals whatever the client's marshall options.
    verdicts: JSON.parse(JSON.stringify(e.verdicts)) as Record<string, string>,
    tags: [...e.tags],
    ...(e.quarantineReasons !== undefined ? { quarantineReasons: [...e.quarantineReasons] } : {}),
    recipient: e.recipient,
    ...(e.plusTag !== undefined ? { plusTag: e.plusTag } : {}),
    parseFailed: e.parseFailed,
    sesMessageId: e.sesMessageId,
    crlfSize: e.crlfSize,
    // DynamoDB's contains() is case-sensitive: q searches these folded copies.
    fromLc: fold(e.from),
    toLc: fold(e.to),
    subjectLc: fold(e.subject),
    // In the sparse index of unread mail while unread.
    ...(e.seen ? {} : { [UNSEEN_INDEX.partitionKey]: mailboxPk(e.mailbox) }),
  };
}

function toEntry(item: Record<string, unknown>): MessageEntry {
  const r = messageItemSchema.parse(item);
  // Optional fields are absent (not `undefined`) when unset, so entries compare equal to what was delivered.
  const verdicts = {
    spam: r.verdicts.spam,
    virus: r.verdicts.virus,
    spf: r.verdicts.spf,
    dkim: r.verdicts.dkim,
    dmarc: r.verdicts.dmarc,
    ...(r.verdicts.dmarcPolicy !== undefined ? { dmarcPolicy: r.verdicts.dmarcPolicy } : {}),
  };
  return {
    mailbox: r[TABLE_KEYS.partitionKey].slice('MBX#'.length),
    id: r[TABLE_KEYS.sortKey].slice('MSG#'.length),
    size: r.size,
    crlfSize: r.crlfSize ?? r.size,
    receivedAt: r.receivedAt,
    from: r.from,
    to: r.to,
    subject: r.subject,
    snippet: r.snippet,
    hasAttachments: r.hasAttachments,
    seen: r.seen,
    verdicts,
    tags: r.tags,
    ...(r.quarantineReasons !== undefined ? { quarantineReasons: r.quarantineReasons } : {}),
    recipient: r.recipient,
    ...(r.plusTag !== undefined ? { plusTag: r.plusTag } : {}),
    parseFailed: r.parseFailed,
    sesMessageId: r.sesMessageId,
  };
}

/** The cancellation reason codes of a TransactionCanceledException, or null for any other error. */
function cancellationCodes(err: unknown): string[] | null {
  if (typeof err !== 'object' || err === null) return null;
  const e = err as { name?: unknown; CancellationReasons?: unknown };
  if (e.name !== 'TransactionCanceledException') return null;
  if (!Array.isArray(e.CancellationReasons)) return [];
  return e.CancellationReasons.map((r: unknown) =>
    typeof r === 'object' && r !== null && typeof (r as { Code?: unknown }).Code === 'string'
      ? (r as { Code: string }).Code
      : 'None',
  );
}

function isConditionalCheckFailed(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { name?: unknown }).name === 'ConditionalCheckFailedException'
  );
}

/** Conflicts with a concurrent transaction on the same item are transient: back off and retry. */
function isRetryable(codes: readonly string[]): boolean {
  return codes.some(
    (c) => c === 'TransactionConflict' || c === 'ThrottlingError' || c === 'ProvisionedThroughputExceeded',
  );
}

function backoff(attempt: number): Promise<void> {
  // Full jitter (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
  return sleep(Math.random() * RETRY_BASE_MS * 2 ** attempt);
}

export class DynamoDbMailboxIndex implements MailboxIndex {
  private readonly client: DynamoDBDocumentClient;
  /** The last delivery queued per mailbox (see `deliver`). */
  private readonly delivering = new Map<string, Promise<void>>();
  private readonly table: string;
  /** Mailboxes whose registry item this process has written (it is never removed). */
  private readonly registered = new Set<string>();
  /** Mailboxes seen marked `unseenIndexed` (the mark is never removed). */
  private readonly indexedMailboxes = new Set<string>();
  private readonly deletionMemoryMs: number;
  private readonly clock: () => number;
  private readonly filteredReadBudget: number;

  constructor(options: DynamoDbMailboxIndexOptions) {
    if (typeof options.tableName !== 'string' || options.tableName === '') {
      throw new TypeError('DynamoDbMailboxIndex: tableName is required');
    }
    const days = options.deletionMemoryDays ?? DEFAULT_DELETION_MEMORY_DAYS;
    if (!Number.isFinite(days) || days <= 0) {
      throw new RangeError(`deletionMemoryDays must be positive, got ${String(options.deletionMemoryDays)}`);
    }
    this.client = options.client;
    this.table = options.tableName;
    this.deletionMemoryMs = days * DAY_MS;
    this.clock = options.clock ?? Date.now;
    const budget = options.filteredReadBudget ?? DEFAULT_FILTERED_READ_BUDGET;
    if (!Number.isSafeInteger(budget) || budget < 1) {
      throw new RangeError(`filteredReadBudget must be a positive integer, got ${String(budget)}`);
    }
    this.filteredReadBudget = budget;
  }

  private deletionKey(mailbox: string, id: string): Record<string, string> {
    return { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: deletionSk(id) };
  }

  async deliver(entry: MessageEntry, options: DeliverOptions = {}): Promise<{ inserted: boolean }> {
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) {
      throw new ValidationError('message size must be a non-negative integer', [String(entry.size)]);
    }
    // Deliveries to one mailbox from this process go one after the other: racing each other for
    // the next commit number would only cost rounds. Other processes still race (see below).
    const previous = this.delivering.get(entry.mailbox) ?? Promise.resolve();
    const mine = previous.then(
      () => this.deliverNow(entry, options),
      () => this.deliverNow(entry, options),
    );
    const settled = mine.then(
      () => undefined,
      () => undefined,
    );
    this.delivering.set(entry.mailbox, settled);
    void settled.then(() => {
      if (this.delivering.get(entry.mailbox) === settled) this.delivering.delete(entry.mailbox);
    });
    return mine;
  }

  private async deliverNow(entry: MessageEntry, options: DeliverOptions): Promise<{ inserted: boolean }> {
    const pk = mailboxPk(entry.mailbox);
    const deletion = this.deletionKey(entry.mailbox, entry.id);
    await this.register(entry.mailbox);
    let races = 0;
    // Time actually spent (the monotonic clock): not the injectable clock, which may stand still in
    // tests, nor the wall clock, which NTP or a resumed host may step.
    const giveUpAt = performance.now() + COMMIT_RACE_BUDGET_MS;
    for (let attempt = 0; ; ) {
      const stat = await this.statItem(entry.mailbox);
      const last = stat.commits ?? 0;
      const seq = last + 1;
      // A mailbox without entries has none from before the unread index: from its first delivery on,
      // every entry is written with `unseenPk` (the condition on `commits` below also makes sure no
      // other delivery came in between the read and this one).
      const startsIndexed = stat.messages === 0 && stat[UNSEEN_INDEXED] !== true;
      const nowSeconds = Math.floor(this.clock() / 1000);
      const command = new TransactWriteCommand({
        TransactItems: [
          {
            Put: {
              TableName: this.table,
              Item: { ...toItem(entry), seq },
              ConditionExpression: 'attribute_not_exists(#pk)',
              ExpressionAttributeNames: { '#pk': TABLE_KEYS.partitionKey },
            },
          },
          {
            Update: {
              TableName: this.table,
              Key: { [TABLE_KEYS.partitionKey]: pk, [TABLE_KEYS.sortKey]: STAT_SK },
              UpdateExpression: `SET mailbox = :mailbox, commits = :seq${
                startsIndexed ? `, ${UNSEEN_INDEXED} = :true` : ''
              } ADD messages :one, #bytes :size`,
              // The number read above is still the last one: nobody committed in between.
              ConditionExpression: last === 0 ? 'attribute_not_exists(commits)' : 'commits = :last',
              ExpressionAttributeNames: { '#bytes': 'bytes' },
              ExpressionAttributeValues: {
                ...(startsIndexed ? { ':true': true } : {}),
                ':mailbox': entry.mailbox,
                ':one': 1,
                ':size': entry.size,
                ':seq': seq,
                ...(last === 0 ? {} : { ':last': last }),
              },
            },
          },
          // A deletion of this id, remembered and not yet expired (TTL removes items up to days late),
          // refuses the delivery; `restoreDeleted` forgets it instead.
          options.restoreDeleted === true
            ? { Delete: { TableName: this.table, Key: deletion } }
            : {
                ConditionCheck: {
                  TableName: this.table,
                  Key: deletion,
                  ConditionExpression: 'attribute_not_exists(#pk) OR #ttl < :now',
                  ExpressionAttributeNames: { '#pk': TABLE_KEYS.partitionKey, '#ttl': TTL_ATTRIBUTE },
                  ExpressionAttributeValues: { ':now': nowSeconds },
                },
              },
          {
            Put: {
              TableName: this.table,
              Item: { [TABLE_KEYS.partitionKey]: pk, [TABLE_KEYS.sortKey]: commitSk(seq), id: entry.id },
            },
          },
        ],
      });
      try {
        await this.client.send(command);
        return { inserted: true };
      } catch (err) {
        const codes = cancellationCodes(err);
        if (codes === null) throw err;
        if (codes[0] === 'ConditionalCheckFailed' || codes[2] === 'ConditionalCheckFailed') {
          return { inserted: false };
        }
        // Another delivery committed between our read and our write and took this number: read the
        // counter again, after a jittered backoff that grows with each lost race (to spread a burst
        // out), within a time budget rather than a count (a burst of k needs ~k rounds).
        if (codes[1] === 'ConditionalCheckFailed') {
          if (performance.now() >= giveUpAt) throw err;
          const ceiling = Math.min(RACE_BACKOFF_MAX_MS, RACE_BACKOFF_BASE_MS * 2 ** Math.min(races++, 10));
          await sleep(Math.random() * ceiling);
          continue;
        }
        if (!isRetryable(codes) || attempt + 1 >= MAX_TRANSACTION_ATTEMPTS) throw err;
        await backoff(attempt++);
      }
    }
  }

  /** Puts the mailbox's registry item (idempotent) unless this process already did. */
  private async register(mailbox: string): Promise<void> {
    if (this.registered.has(mailbox)) return;
    await this.client.send(
      new PutCommand({
        TableName: this.table,
        Item: { [TABLE_KEYS.partitionKey]: REGISTRY_PK, [TABLE_KEYS.sortKey]: mailboxPk(mailbox), mailbox },
      }),
    );
    this.registered.add(mailbox);
  }

  async get(mailbox: string, id: string): Promise<MessageEntry | null> {
    const item = await this.getItem(mailbox, id);
    return item === undefined ? null : toEntry(item);
  }

  private async getItem(mailbox: string, id: string): Promise<Record<string, unknown> | undefined> {
    const r = await this.client.send(
      new GetCommand({
        TableName: this.table,
        Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: messageSk(id) },
        ConsistentRead: true,
      }),
    );
    return r.Item;
  }

  async deliveryState(mailbox: string, id: string): Promise<DeliveryState> {
    const [entry, deletion] = await Promise.all([
      this.get(mailbox, id),
      this.client.send(
        new GetCommand({ TableName: this.table, Key: this.deletionKey(mailbox, id), ConsistentRead: true }),
      ),
    ]);
    if (entry !== null) return 'present';
    const expiresAt = deletion.Item?.[TTL_ATTRIBUTE];
    return typeof expiresAt === 'number' && expiresAt * 1000 > this.clock() ? 'deleted' : 'absent';
  }

  /**
   * Newest first (ULIDs sort by receipt time; the Query reads the partition backwards). With
   * `unseen`, in a mailbox whose unread entries are all in the sparse index (`unseenIndexed`), the
   * Query reads that index, which holds the unread entries alone: a full page in one request however
   * much read mail lies between them (eventually consistent: docs/adr/0020-unseen-index.md). Else,
   * and for `q`, DynamoDB filters after reading, so pages are filled by looping until the page is
   * full, the mailbox (or its unread entries) is exhausted, or `filteredReadBudget` items were read:
   * then the page is shorter than `limit` (maybe empty) and `nextCursor` stands after the last item
   * read, so that no request reads a whole large mailbox. One item beyond the limit is sought, so
   * `nextCursor` is null exactly on the last page. The cursor is the last id returned (or read)
   * either way, so a client can go on from one kind of page to the other.
   */
  async list(mailbox: string, options: ListOptions): Promise<ListPage> {
    const { limit, cursor, unseen = false, q, oldestFirst = false } = options;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}`, [String(limit)]);
    }
    const after = cursor === undefined ? undefined : decodeCursor(cursor, oldestFirst);
    const needle = q === undefined || q === '' ? undefined : fold(q);
    const filters: string[] = [];
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = { ':pk': mailboxPk(mailbox) };
    if (needle !== undefined) {
      filters.push('(contains(fromLc, :q) OR contains(toLc, :q) OR contains(subjectLc, :q))');
      values[':q'] = needle;
    }
    if (unseen && (await this.unseenIndexed(mailbox))) {
      names['#unseenPk'] = UNSEEN_INDEX.partitionKey;
      // Every entry in the index is unread: the filter only passes over one whose flag changed in an
      // item written by a version from before the index (it then left the attribute in place).
      filters.push('seen = :false');
      values[':false'] = false;
      if (after !== undefined) {
        names['#sk'] = TABLE_KEYS.sortKey;
        values[':before'] = messageSk(after);
      }
      const base: QueryCommandInput = {
        TableName: this.table,
        IndexName: UNSEEN_INDEX.indexName,
        KeyConditionExpression: `#unseenPk = :pk${after === undefined ? '' : ` AND #sk ${oldestFirst ? '>' : '<'} :before`}`,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ScanIndexForward: oldestFirst,
        FilterExpression: filters.join(' AND '),
      };
      return this.readPages(base, undefined, limit, needle !== undefined, oldestFirst);
    }
    if (unseen) {
      filters.push('seen = :false');
      values[':false'] = false;
    }
    names['#pk'] = TABLE_KEYS.partitionKey;
    names['#sk'] = TABLE_KEYS.sortKey;
    values[':msg'] = 'MSG#';
    const base: QueryCommandInput = {
      TableName: this.table,
      KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :msg)',
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
      ScanIndexForward: oldestFirst,
      ConsistentRead: true,
      ...(filters.length > 0 ? { FilterExpression: filters.join(' AND ') } : {}),
    };
    const startKey =
      after === undefined
        ? undefined
        : { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: messageSk(after) };
    return this.readPages(base, startKey, limit, filters.length > 0, oldestFirst);
  }

  /**
   * The Queries of one page of `list`: `base` from `startKey` until `limit` + 1 entries are found,
   * the items run out, or (for a Query with a filter) `filteredReadBudget` items were read. With
   * `selective` (a filter that may pass few of the items read), each round reads more than the
   * page still needs, doubling from FILTERED_QUERY_PAGE.
   */
  private async readPages(
    base: QueryCommandInput,
    firstKey: Record<string, unknown> | undefined,
    limit: number,
    selective: boolean,
    /** The order `base` reads in, which the cursor says. */
    oldestFirst: boolean,
  ): Promise<ListPage> {
    const filtered = base.FilterExpression !== undefined;
    const wanted = limit + 1;
    const found: MessageEntry[] = [];
    let startKey = firstKey;
    // Items read so far (a filtered Query's Limit counts the items read, before the filter).
    let read = 0;
    let round = FILTERED_QUERY_PAGE;
    do {
      const needed = wanted - found.length;
      const left = this.filteredReadBudget - read;
      const input: QueryCommandInput = {
        ...base,
        Limit: !filtered ? needed : Math.min(left, selective ? Math.max(round, needed) : needed),
        ExclusiveStartKey: startKey,
      };
      const r = await this.client.send(new QueryCommand(input));
      for (const item of r.Items ?? []) found.push(toEntry(item));
      startKey = r.LastEvaluatedKey;
      read += r.ScannedCount ?? r.Items?.length ?? 0;
      round *= 2;
    } while (
      found.length < wanted &&
      startKey !== undefined &&
      (!filtered || read < this.filteredReadBudget)
    );

    const items = found.slice(0, limit);
    const last = items[items.length - 1];
    if (found.length > limit && last !== undefined)
      return { items, nextCursor: encodeCursor(last.id, oldestFirst) };
    // The read budget ran out before the page filled: go on after the last item read.
    const stopped = startKey?.[TABLE_KEYS.sortKey];
    if (typeof stopped === 'string' && stopped.startsWith('MSG#')) {
      return { items, nextCursor: encodeCursor(stopped.slice('MSG#'.length), oldestFirst) };
    }
    return { items, nextCursor: null };
  }

  /**
   * Whether the mailbox's unread entries all carry `unseenPk` (its STAT item says so). Remembered
   * once true: nothing takes the mark away.
   */
  private async unseenIndexed(mailbox: string): Promise<boolean> {
    if (this.indexedMailboxes.has(mailbox)) return true;
    if ((await this.statItem(mailbox))[UNSEEN_INDEXED] !== true) return false;
    this.indexedMailboxes.add(mailbox);
    return true;
  }

  /**
   * The upgrade to the unread index (docs/adr/0020-unseen-index.md), for a table whose items were
   * written by a version without it: finds every mailbox whose STAT item is not yet `unseenIndexed`
   * (one Scan of the table), gives each of its unread entries `unseenPk` (and takes it from a read
   * entry that has it: a flag changed by that older version while both ran), each change conditional
   * on the flag it was made for, so a flag changed meanwhile is left to the write that changed it;
   * then marks the mailbox, from when LIST with `unseen` reads the index. Safe to interrupt and to
   * run again (a marked mailbox is not read again, unless `all`); run it after the deploy that adds
   * the index. `all` checks marked mailboxes too: for mail an older process still running during
   * that deploy wrote to a mailbox this version had marked meanwhile.
   */
  async backfillUnseen(options: UnseenBackfillOptions = {}): Promise<UnseenBackfillProgress> {
    const { all = false, onProgress } = options;
    const mailboxes: string[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const r = await this.client.send(
        new ScanCommand({
          TableName: this.table,
          FilterExpression: all ? '#sk = :stat' : '#sk = :stat AND attribute_not_exists(#indexed)',
          ProjectionExpression: '#pk',
          ExpressionAttributeNames: {
            '#pk': TABLE_KEYS.partitionKey,
            '#sk': TABLE_KEYS.sortKey,
            ...(all ? {} : { '#indexed': UNSEEN_INDEXED }),
          },
          ExpressionAttributeValues: { ':stat': STAT_SK },
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
        }),
      );
      for (const item of r.Items ?? []) {
        const pk = item[TABLE_KEYS.partitionKey];
        if (typeof pk === 'string' && pk.startsWith('MBX#')) mailboxes.push(pk.slice('MBX#'.length));
      }
      startKey = r.LastEvaluatedKey;
    } while (startKey !== undefined);
    const progress = { mailboxes: 0, of: mailboxes.length, entries: 0 };
    onProgress?.({ ...progress });
    for (const mailbox of mailboxes) {
      progress.entries += await this.backfillMailbox(mailbox);
      await this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: STAT_SK },
          UpdateExpression: 'SET #indexed = :true',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: { '#pk': TABLE_KEYS.partitionKey, '#indexed': UNSEEN_INDEXED },
          ExpressionAttributeValues: { ':true': true },
        }),
      );
      progress.mailboxes += 1;
      onProgress?.({ ...progress });
    }
    return progress;
  }

  /** `backfillUnseen` for the entries of one mailbox: how many were changed. */
  private async backfillMailbox(mailbox: string): Promise<number> {
    const names = {
      '#pk': TABLE_KEYS.partitionKey,
      '#sk': TABLE_KEYS.sortKey,
      '#unseenPk': UNSEEN_INDEX.partitionKey,
    };
    let changed = 0;
    let startKey: Record<string, unknown> | undefined;
    do {
      const r = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :msg)',
          FilterExpression:
            '(seen = :false AND attribute_not_exists(#unseenPk)) OR (seen = :true AND attribute_exists(#unseenPk))',
          ProjectionExpression: '#sk, seen',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: {
            ':pk': mailboxPk(mailbox),
            ':msg': 'MSG#',
            ':false': false,
            ':true': true,
          },
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
        }),
      );
      const wrong = (r.Items ?? []).map((item) => ({
        sk: String(item[TABLE_KEYS.sortKey]),
        seen: item.seen === true,
      }));
      for (let i = 0; i < wrong.length; i += BACKFILL_CONCURRENCY) {
        const results = await Promise.all(
          wrong.slice(i, i + BACKFILL_CONCURRENCY).map(async ({ sk, seen }) => {
            try {
              await this.client.send(
                new UpdateCommand({
                  TableName: this.table,
                  Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: sk },
                  UpdateExpression: seen ? 'REMOVE #unseenPk' : 'SET #unseenPk = :pk',
                  // The flag is still the one read: a setSeen meanwhile wrote the attribute itself.
                  ConditionExpression: 'attribute_exists(#pk) AND seen = :seen',
                  ExpressionAttributeNames: {
                    '#pk': TABLE_KEYS.partitionKey,
                    '#unseenPk': UNSEEN_INDEX.partitionKey,
                  },
                  ExpressionAttributeValues: {
                    ':seen': seen,
                    ...(seen ? {} : { ':pk': mailboxPk(mailbox) }),
                  },
                }),
              );
              return 1;
            } catch (err) {
              if (isConditionalCheckFailed(err)) return 0;
              throw err;
            }
          }),
        );
        changed += results.reduce<number>((a, b) => a + b, 0);
      }
      startKey = r.LastEvaluatedKey;
    } while (startKey !== undefined);
    return changed;
  }

  /** The mailbox's STAT item (counters and the last commit number), zeros when it has none. */
  private async statItem(mailbox: string): Promise<z.infer<typeof statItemSchema>> {
    const r = await this.client.send(
      new GetCommand({
        TableName: this.table,
        Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: STAT_SK },
        ConsistentRead: true,
      }),
    );
    return r.Item === undefined ? { messages: 0, bytes: 0 } : statItemSchema.parse(r.Item);
  }

  async stat(mailbox: string): Promise<MailboxStat> {
    const s = await this.statItem(mailbox);
    return { address: mailbox, messages: s.messages, bytes: s.bytes };
  }

  async commitCursor(mailbox: string): Promise<number> {
    return (await this.statItem(mailbox)).commits ?? 0;
  }

  async committedAfter(mailbox: string, cursor: number, limit: number): Promise<CommittedPage> {
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}`, [String(limit)]);
    }
    if (!Number.isSafeInteger(cursor) || cursor < 0) {
      throw new ValidationError('cursor must be a non-negative integer', [String(cursor)], 'invalid_cursor');
    }
    const pk = mailboxPk(mailbox);
    const pointers: { seq: number; id: string }[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const r = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
          ExpressionAttributeNames: { '#pk': TABLE_KEYS.partitionKey, '#sk': TABLE_KEYS.sortKey },
          ExpressionAttributeValues: { ':pk': pk, ':from': commitSk(cursor + 1), ':to': COMMIT_SK_END },
          ConsistentRead: true,
          Limit: limit + 1 - pointers.length,
          ExclusiveStartKey: startKey,
        }),
      );
      for (const item of r.Items ?? []) {
        const c = commitItemSchema.parse(item);
        pointers.push({ seq: Number(c[TABLE_KEYS.sortKey].slice('SEQ#'.length)), id: c.id });
      }
      startKey = r.LastEvaluatedKey;
    } while (startKey !== undefined && pointers.length <= limit);
    const page = pointers.slice(0, limit);
    // One id can have two SEQ# items only by accident (BatchGetItem refuses duplicate keys).
    const ids = [...new Set(page.map((p) => p.id))];
    const items = await this.batchGet(
      ids.map((id) => ({ [TABLE_KEYS.partitionKey]: pk, [TABLE_KEYS.sortKey]: messageSk(id) })),
    );
    const entries = new Map<string, { entry: MessageEntry; seq: unknown }>();
    for (const item of items) {
      const entry = toEntry(item);
      entries.set(entry.id, { entry, seq: item.seq });
    }
    // A pointer whose entry is gone (deleted after the Query read it), or that is not the entry's
    // own commit (a stale one), is passed over.
    const found = page.flatMap((p) => {
      const e = entries.get(p.id);
      return e !== undefined && e.seq === p.seq ? [{ entry: e.entry, seq: p.seq }] : [];
    });
    return {
      items: found.map((f) => f.entry),
      commits: found.map((f) => f.seq),
      cursor: page.at(-1)?.seq ?? cursor,
      truncated: pointers.length > limit,
    };
  }

  /** Every item of `keys` that exists (strongly consistent), in no particular order. */
  private async batchGet(keys: readonly Record<string, unknown>[]): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (let i = 0; i < keys.length; i += BATCH_GET_MAX) {
      let batch = keys.slice(i, i + BATCH_GET_MAX) as Record<string, unknown>[];
      for (let attempt = 0; batch.length > 0; attempt++) {
        const r = await this.client.send(
          new BatchGetCommand({ RequestItems: { [this.table]: { Keys: batch, ConsistentRead: true } } }),
        );
        out.push(...(r.Responses?.[this.table] ?? []));
        // Unprocessed keys are what DynamoDB could not serve under load this time: ask again.
        batch = (r.UnprocessedKeys?.[this.table]?.Keys ?? []) as Record<string, unknown>[];
        if (batch.length > 0) {
          if (attempt + 1 >= MAX_TRANSACTION_ATTEMPTS)
            throw new Error('DynamoDB BatchGetItem left keys unprocessed');
          await backoff(attempt);
        }
      }
    }
    return out;
  }

  /**
   * A Query of the registry partition from the cursor on (`Limit`, `ExclusiveStartKey`; its sort
   * key order is UTF-8 byte order, what core/mailbox-pages.ts expects), then a BatchGetItem of the
   * STAT items of that page's keys only.
   */
  async listMailboxes(options: MailboxListOptions): Promise<MailboxPage> {
    const { limit, cursor } = options;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}`, [String(limit)]);
    }
    const read = async (after: string | undefined, count: number) => {
      const r = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: '#pk = :pk',
          ProjectionExpression: '#sk',
          ExpressionAttributeNames: { '#pk': TABLE_KEYS.partitionKey, '#sk': TABLE_KEYS.sortKey },
          ExpressionAttributeValues: { ':pk': REGISTRY_PK },
          ConsistentRead: true,
          Limit: count,
          ExclusiveStartKey:
            after === undefined
              ? undefined
              : { [TABLE_KEYS.partitionKey]: REGISTRY_PK, [TABLE_KEYS.sortKey]: mailboxPk(after) },
        }),
      );
      const items = (r.Items ?? []).map((item) =>
        registryItemSchema.parse(item)[TABLE_KEYS.sortKey].slice('MBX#'.length),
      );
      return { items, more: r.LastEvaluatedKey !== undefined };
    };
    const page = await pageOfOwners(read, (mailbox) => mailbox, limit, cursor);
    const stats = new Map<string, MailboxStat>();
    const items = await this.batchGet(
      page.items.map((a) => ({ [TABLE_KEYS.partitionKey]: mailboxPk(a), [TABLE_KEYS.sortKey]: STAT_SK })),
    );
    for (const item of items) {
      if (typeof item.mailbox !== 'string') continue;
      const s = statItemSchema.parse(item);
      stats.set(item.mailbox, { address: item.mailbox, messages: s.messages, bytes: s.bytes });
    }
    return {
      items: page.items.map((a) => stats.get(a) ?? { address: a, messages: 0, bytes: 0 }),
      nextCursor: page.nextCursor,
    };
  }

  async updateParsed(mailbox: string, id: string, fields: ParsedEntryFields): Promise<MessageEntry | null> {
    try {
      // The parsed attributes and `q`'s folded copies, each by a name: FROM and TO are reserved words.
      const set: Record<string, unknown> = {
        from: fields.from,
        to: fields.to,
        subject: fields.subject,
        snippet: fields.snippet,
        hasAttachments: fields.hasAttachments,
        parseFailed: fields.parseFailed,
        fromLc: fold(fields.from),
        toLc: fold(fields.to),
        subjectLc: fold(fields.subject),
      };
      const attributes = Object.keys(set);
      const r = await this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: messageSk(id) },
          UpdateExpression: `SET ${attributes.map((a) => `#${a} = :${a}`).join(', ')}`,
          // Never creates an item: a message deleted meanwhile stays deleted.
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: {
            '#pk': TABLE_KEYS.partitionKey,
            ...Object.fromEntries(attributes.map((a) => [`#${a}`, a])),
          },
          ExpressionAttributeValues: Object.fromEntries(attributes.map((a) => [`:${a}`, set[a]])),
          ReturnValues: 'ALL_NEW',
        }),
      );
      return r.Attributes === undefined ? null : toEntry(r.Attributes);
    } catch (err) {
      if (isConditionalCheckFailed(err)) return null;
      throw err;
    }
  }

  async setSeen(mailbox: string, id: string, seen: boolean): Promise<MessageEntry | null> {
    try {
      const r = await this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: messageSk(id) },
          // In the sparse index of unread mail exactly while unread.
          UpdateExpression: seen
            ? 'SET seen = :seen REMOVE #unseenPk'
            : 'SET seen = :seen, #unseenPk = :unseenPk',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: {
            '#pk': TABLE_KEYS.partitionKey,
            '#unseenPk': UNSEEN_INDEX.partitionKey,
          },
          ExpressionAttributeValues: { ':seen': seen, ...(seen ? {} : { ':unseenPk': mailboxPk(mailbox) }) },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return r.Attributes === undefined ? null : toEntry(r.Attributes);
    } catch (err) {
      if (isConditionalCheckFailed(err)) return null;
      throw err;
    }
  }

  /**
   * Read, then delete on condition that the entry is still the one read (same size), with the
   * counters decremented by that size in the same transaction. If it changed in between
   * (deleted, or deleted and delivered again), read again.
   */
  async delete(mailbox: string, id: string): Promise<MessageEntry | null> {
    return (await this.deleteGroup(mailbox, [id])).get(id) ?? null;
  }

  /**
   * Groups of `DELETE_GROUP` messages, each group one transaction with one counter update (so
   * that a QUIT of 1,000 deletions is ~30 transactions, not 1,000 contending for the STAT item),
   * `DELETE_GROUP_CONCURRENCY` groups at a time.
   */
  async deleteMany(mailbox: string, ids: readonly string[]): Promise<(MessageEntry | null)[]> {
    assertDeleteMany(ids);
    const unique = [...new Set(ids)];
    const groups: string[][] = [];
    for (let i = 0; i < unique.length; i += DELETE_GROUP) groups.push(unique.slice(i, i + DELETE_GROUP));
    const removed = new Map<string, MessageEntry>();
    const worker = async () => {
      for (let group = groups.shift(); group !== undefined; group = groups.shift()) {
        for (const [id, entry] of await this.deleteGroup(mailbox, group)) removed.set(id, entry);
      }
    };
    await Promise.all(Array.from({ length: DELETE_GROUP_CONCURRENCY }, worker));
    // An id given twice is removed once: the first time it appears.
    const seen = new Set<string>();
    return ids.map((id) => {
      if (seen.has(id)) return null;
      seen.add(id);
      return removed.get(id) ?? null;
    });
  }

  /**
   * Removes the entries of distinct `ids` that exist, in one transaction: per message its entry
   * (conditioned on being the entry read: not deleted and delivered again meanwhile, same size
   * but another commit, whose SEQ# item must stay), its commit's SEQ# item and a deletion record,
   * plus one update of the counters by their sum. A condition that fails (another client deleted
   * or redelivered one meanwhile) re-reads the group and tries again; the removed entries by id.
   */
  private async deleteGroup(mailbox: string, ids: readonly string[]): Promise<Map<string, MessageEntry>> {
    for (let attempt = 0; ; attempt++) {
      const items = await Promise.all(ids.map((id) => this.getItem(mailbox, id)));
      const present: { id: string; entry: MessageEntry; seq: number | undefined }[] = [];
      items.forEach((item, i) => {
        if (item === undefined) return;
        // Its commit's SEQ# item goes with it (absent on mail delivered before commit numbers).
        present.push({
          id: ids[i] as string,
          entry: toEntry(item),
          seq: typeof item.seq === 'number' ? item.seq : undefined,
        });
      });
      if (present.length === 0) return new Map();
      const deletedAt = new Date(this.clock()).toISOString();
      const expires = Math.ceil((this.clock() + this.deletionMemoryMs) / 1000);
      const bytes = present.reduce((sum, p) => sum + p.entry.size, 0);
      try {
        await this.client.send(
          new TransactWriteCommand({
            TransactItems: [
              {
                Update: {
                  TableName: this.table,
                  Key: { [TABLE_KEYS.partitionKey]: mailboxPk(mailbox), [TABLE_KEYS.sortKey]: STAT_SK },
                  UpdateExpression: 'ADD messages :minusCount, #bytes :minusSize',
                  ExpressionAttributeNames: { '#bytes': 'bytes' },
                  ExpressionAttributeValues: { ':minusCount': -present.length, ':minusSize': -bytes },
                },
              },
              ...present.flatMap(({ id, entry, seq }) => [
                {
                  Delete: {
                    TableName: this.table,
                    Key: {
                      [TABLE_KEYS.partitionKey]: mailboxPk(mailbox),
                      [TABLE_KEYS.sortKey]: messageSk(id),
                    },
                    ConditionExpression:
                      seq === undefined
                        ? 'attribute_exists(#pk) AND #size = :size AND attribute_not_exists(seq)'
                        : 'attribute_exists(#pk) AND #size = :size AND seq = :seq',
                    ExpressionAttributeNames: { '#pk': TABLE_KEYS.partitionKey, '#size': 'size' },
                    ExpressionAttributeValues: {
                      ':size': entry.size,
                      ...(seq === undefined ? {} : { ':seq': seq }),
                    },
                  },
                },
                {
                  Put: {
                    TableName: this.table,
                    Item: { ...this.deletionKey(mailbox, id), deletedAt, [TTL_ATTRIBUTE]: expires },
                  },
                },
                ...(seq === undefined
                  ? []
                  : [
                      {
                        Delete: {
                          TableName: this.table,
                          Key: {
                            [TABLE_KEYS.partitionKey]: mailboxPk(mailbox),
                            [TABLE_KEYS.sortKey]: commitSk(seq),
                          },
                        },
                      },
                    ]),
              ]),
            ],
          }),
        );
        return new Map(present.map((p) => [p.id, p.entry]));
      } catch (err) {
        const codes = cancellationCodes(err);
        if (codes === null || attempt + 1 >= MAX_TRANSACTION_ATTEMPTS) throw err;
        if (codes.includes('ConditionalCheckFailed')) continue;
        if (!isRetryable(codes)) throw err;
        await backoff(attempt);
      }
    }
  }

  /**
   * One conditional UpdateItem: creates the record, or takes over a failed one or one whose
   * pending claim is older than the lease. DynamoDB serializes conditional writes to one item, so
   * of any number of concurrent claims exactly one succeeds.
   *
   * Each claim writes a random `claimId`. When the answer is lost (a timeout or a dropped
   * connection after DynamoDB applied the update, or the SDK's own retry of it then failing its
   * condition on the claim it made itself), the record is read back: our `claimId` in it means the
   * claim is ours. Without this, the claim stayed `pending` with no one sending: a forward's every
   * redelivery failed with ForwardInProgressError until the 15-minute lease ran out (five receives
   * take less: the message went to the dead-letter queue, the rest of its routing undone), and a
   * bounce was skipped as "another router is bouncing it" and never sent.
   */
  async claimSend(key: string, options: ClaimSendOptions): Promise<{ claimed: boolean; record: SendRecord }> {
    const claimId = randomUUID();
    const ours = async (): Promise<SendRecord | null> => {
      const item = await this.getSendItem(key);
      return item !== undefined && item.claimId === claimId && item.state === 'pending'
        ? toSendRecord(item)
        : null;
    };
    const now = options.now.toISOString();
    // ISO 8601 UTC strings of one format compare in time order.
    const stale = new Date(options.now.getTime() - options.leaseMs).toISOString();
    try {
      const r = await this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { [TABLE_KEYS.partitionKey]: sendPk(key), [TABLE_KEYS.sortKey]: SEND_SK },
          UpdateExpression:
            'SET #key = :key, #state = :pending, claimedAt = :now, updatedAt = :now, claimId = :claimId ADD attempts :one REMOVE #error',
          ConditionExpression:
            'attribute_not_exists(#pk) OR #state = :failed OR (#state = :pending AND claimedAt < :stale)',
          ExpressionAttributeNames: {
            '#pk': TABLE_KEYS.partitionKey,
            '#key': 'key',
            '#state': 'state',
            '#error': 'error',
          },
          ExpressionAttributeValues: {
            ':key': key,
            ':pending': 'pending',
            ':failed': 'failed',
            ':now': now,
            ':stale': stale,
            ':one': 1,
            ':claimId': claimId,
          },
          ReturnValues: 'ALL_NEW',
        }),
      );
      if (r.Attributes === undefined)
        throw new Error(`DynamoDB UpdateItem for send ${key} returned no attributes`);
      return { claimed: true, record: toSendRecord(r.Attributes) };
    } catch (err) {
      if (!isConditionalCheckFailed(err)) {
        // The update may have been applied all the same: ours if the record says so.
        const mine = await ours().catch(() => null);
        if (mine !== null) return { claimed: true, record: mine };
        throw err;
      }
      const item = await this.getSendItem(key);
      // The condition failed, so the record existed; records are never deleted.
      if (item === undefined) throw new Error(`send ${key} was neither claimed nor present`);
      const record = toSendRecord(item);
      // Our own update, applied on an attempt whose answer was lost and retried by the SDK.
      if (item.claimId === claimId && record.state === 'pending') return { claimed: true, record };
      return { claimed: false, record };
    }
  }

  private async getSendItem(key: string): Promise<Record<string, unknown> | undefined> {
    const r = await this.client.send(
      new GetCommand({
        TableName: this.table,
        Key: { [TABLE_KEYS.partitionKey]: sendPk(key), [TABLE_KEYS.sortKey]: SEND_SK },
        ConsistentRead: true,
      }),
    );
    return r.Item;
  }

  /** Records the outcome (an upsert, like the local adapter: a finish without a claim still leaves a record). */
  async finishSend(key: string, outcome: SendOutcome, now: Date): Promise<SendRecord> {
    const set = [
      '#key = :key',
      '#state = :state',
      'updatedAt = :now',
      'claimedAt = if_not_exists(claimedAt, :now)',
      'attempts = if_not_exists(attempts, :one)',
    ];
    const remove: string[] = [];
    const values: Record<string, unknown> = {
      ':key': key,
      ':state': outcome.state,
      ':now': now.toISOString(),
      ':one': 1,
    };
    if (outcome.detail !== undefined) {
      set.push('detail = :detail');
      values[':detail'] = outcome.detail;
    } else {
      remove.push('detail');
    }
    if (outcome.state === 'sent') {
      set.push('providerMessageId = :provider');
      values[':provider'] = outcome.providerMessageId;
      remove.push('#error');
    } else {
      set.push('#error = :error');
      values[':error'] = outcome.error;
      remove.push('providerMessageId');
    }
    const r = await this.client.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { [TABLE_KEYS.partitionKey]: sendPk(key), [TABLE_KEYS.sortKey]: SEND_SK },
        UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
        ExpressionAttributeNames: { '#key': 'key', '#state': 'state', '#error': 'error' },
        ExpressionAttributeValues: values,
        ReturnValues: 'ALL_NEW',
      }),
    );
    if (r.Attributes === undefined)
      throw new Error(`DynamoDB UpdateItem for send ${key} returned no attributes`);
    return toSendRecord(r.Attributes);
  }

  async getSend(key: string): Promise<SendRecord | null> {
    const item = await this.getSendItem(key);
    return item === undefined ? null : toSendRecord(item);
  }

  async putToken(token: TokenRecord): Promise<void> {
    await this.client.send(
      new PutCommand({
        TableName: this.table,
        Item: {
          [TABLE_KEYS.partitionKey]: tokenPk(token.hash),
          [TABLE_KEYS.sortKey]: TOKEN_SK,
          hash: token.hash,
          mailbox: token.mailbox,
          admin: token.admin,
          createdAt: token.createdAt,
          ...(token.label !== undefined ? { label: token.label } : {}),
        },
      }),
    );
  }

  async getToken(hash: string): Promise<TokenRecord | null> {
    const r = await this.client.send(
      new GetCommand({
        TableName: this.table,
        Key: { [TABLE_KEYS.partitionKey]: tokenPk(hash), [TABLE_KEYS.sortKey]: TOKEN_SK },
        ConsistentRead: true,
      }),
    );
    if (r.Item === undefined) return null;
    const t = tokenItemSchema.parse(r.Item);
    return {
      hash: t.hash,
      mailbox: t.mailbox,
      admin: t.admin,
      createdAt: t.createdAt,
      ...(t.label !== undefined ? { label: t.label } : {}),
    };
  }

  async deleteToken(hash: string): Promise<boolean> {
    const r = await this.client.send(
      new DeleteCommand({
        TableName: this.table,
        Key: { [TABLE_KEYS.partitionKey]: tokenPk(hash), [TABLE_KEYS.sortKey]: TOKEN_SK },
        ReturnValues: 'ALL_OLD',
      }),
    );
    return r.Attributes !== undefined;
  }

  /** The client is shared and owned by whoever created it; nothing to release here. */
  async close(): Promise<void> {}
}
