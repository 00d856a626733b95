/**
 * MailboxIndex in SQLite (better-sqlite3): the local twin of the DynamoDB single table.
 *
 * Durability: WAL with synchronous=FULL, so a committed write is on disk when its promise resolves;
 * with `deferredDeliveries` (the local relay's ingest journal redoes them) the commits of
 * `deliver()` run at synchronous=NORMAL instead (see the constructor). Deliveries that arrive while
 * a commit is in progress are committed together (group commit), one commit for the lot, each in
 * its own savepoint so one bad entry cannot fail its neighbours.
 *
 * Listing is keyset pagination on the ULID id (newest first): a page starts strictly below the
 * last id seen, so mail that arrives or is deleted between pages causes neither duplicates nor gaps.
 */
import Database from 'better-sqlite3';
import type { VerdictName } from '../../core/config.ts';
import { decodeCursor, encodeCursor } from '../../core/cursor.ts';
import { ValidationError } from '../../core/errors.ts';
import { pageOfOwners } from '../../core/mailbox-pages.ts';
import type { Verdicts } from '../../core/routing.ts';
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
  type SendState,
  type TokenRecord,
} from '../../ports/mailbox-index.ts';
import { type ReleasableReserve, retryWithReserve } from './disk-reserve.ts';
import { scheduleGroupCommit } from './group-commit.ts';
import { addColumnIfMissing, migrateSchema } from './sqlite-schema.ts';

/** Bumped when the schema changes; a database from a newer version is refused rather than misread. */
const SCHEMA_VERSION = 5;
/** The port's bounds for a page. */
const MAX_LIMIT = 1000;
/** Waits this long for another process (e.g. `mail-relay token create` next to `dev`) to release the write lock. */
const BUSY_TIMEOUT_MS = 5000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  mailbox TEXT NOT NULL,
  id TEXT NOT NULL,
  size INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  subject TEXT NOT NULL,
  snippet TEXT NOT NULL,
  has_attachments INTEGER NOT NULL,
  seen INTEGER NOT NULL,
  verdicts TEXT NOT NULL,
  tags TEXT NOT NULL,
  quarantine_reasons TEXT,
  recipient TEXT NOT NULL,
  plus_tag TEXT,
  parse_failed INTEGER NOT NULL,
  ses_message_id TEXT NOT NULL,
  -- Folded copies for q (foldForSearch): SQLite's LIKE and lower() fold ASCII only, JS folds Unicode.
  sender_lc TEXT NOT NULL,
  recipients_lc TEXT NOT NULL,
  subject_lc TEXT NOT NULL,
  -- v5: the size with CRLF line ends (POP3's); NULL in rows from before, read as size.
  crlf_size INTEGER,
  PRIMARY KEY (mailbox, id)
) WITHOUT ROWID;
-- Keeps "unseen only" pages cheap in a large mailbox where most mail has been read.
CREATE INDEX IF NOT EXISTS messages_unseen ON messages (mailbox, id) WHERE seen = 0;
CREATE TABLE IF NOT EXISTS stats (
  mailbox TEXT PRIMARY KEY,
  messages INTEGER NOT NULL,
  bytes INTEGER NOT NULL
) WITHOUT ROWID;
-- v2: one row per outgoing send (message x destination), the idempotency record of forwards.
CREATE TABLE IF NOT EXISTS sends (
  key TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  claimed_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  provider_message_id TEXT,
  detail TEXT,
  error TEXT
) WITHOUT ROWID;
-- v3: deletions remembered for a while (ms since epoch), so that mail delivered again stays deleted.
CREATE TABLE IF NOT EXISTS deletions (
  mailbox TEXT NOT NULL,
  id TEXT NOT NULL,
  deleted_at INTEGER NOT NULL,
  PRIMARY KEY (mailbox, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deletions_by_time ON deletions (deleted_at);
-- v4: the order deliveries commit in, per mailbox (the cursor of \`wait\`): a counter that never goes
-- down, and a row for each delivered message still present. Mail from before v4 is numbered in id order.
CREATE TABLE IF NOT EXISTS commit_counters (
  mailbox TEXT PRIMARY KEY,
  last INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits (
  mailbox TEXT NOT NULL,
  seq INTEGER NOT NULL,
  id TEXT NOT NULL,
  PRIMARY KEY (mailbox, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS commits_by_id ON commits (mailbox, id);
INSERT OR IGNORE INTO commits (mailbox, seq, id)
  SELECT mailbox, ROW_NUMBER() OVER (PARTITION BY mailbox ORDER BY id), id FROM messages;
INSERT OR IGNORE INTO commit_counters (mailbox, last) SELECT mailbox, MAX(seq) FROM commits GROUP BY mailbox;
CREATE TABLE IF NOT EXISTS tokens (
  hash TEXT PRIMARY KEY,
  mailbox TEXT,
  admin INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  label TEXT
) WITHOUT ROWID;
`;

const MESSAGE_COLUMNS =
  'mailbox, id, size, received_at, sender, recipients, subject, snippet, has_attachments, seen, verdicts, tags, ' +
  'quarantine_reasons, recipient, plus_tag, parse_failed, ses_message_id, crlf_size';

interface MessageRow {
  mailbox: string;
  id: string;
  size: number;
  received_at: string;
  sender: string;
  recipients: string;
  subject: string;
  snippet: string;
  has_attachments: number;
  seen: number;
  verdicts: string;
  tags: string;
  quarantine_reasons: string | null;
  recipient: string;
  plus_tag: string | null;
  parse_failed: number;
  ses_message_id: string;
  crlf_size: number | null;
}

interface InsertParams extends MessageRow {
  sender_lc: string;
  recipients_lc: string;
  subject_lc: string;
}

type ParsedParams = Pick<
  InsertParams,
  | 'mailbox'
  | 'id'
  | 'sender'
  | 'recipients'
  | 'subject'
  | 'snippet'
  | 'has_attachments'
  | 'parse_failed'
  | 'sender_lc'
  | 'recipients_lc'
  | 'subject_lc'
>;

interface StatRow {
  mailbox: string;
  messages: number;
  bytes: number;
}

interface TokenRow {
  hash: string;
  mailbox: string | null;
  admin: number;
  created_at: string;
  label: string | null;
}

interface SendRow {
  key: string;
  state: string;
  attempts: number;
  claimed_at: string;
  updated_at: string;
  provider_message_id: string | null;
  detail: string | null;
  error: string | null;
}

const SEND_COLUMNS = 'key, state, attempts, claimed_at, updated_at, provider_message_id, detail, error';

function toSendRecord(r: SendRow): SendRecord {
  return {
    key: r.key,
    state: r.state as SendState,
    attempts: r.attempts,
    claimedAt: r.claimed_at,
    updatedAt: r.updated_at,
    ...(r.provider_message_id !== null ? { providerMessageId: r.provider_message_id } : {}),
    ...(r.detail !== null ? { detail: r.detail } : {}),
    ...(r.error !== null ? { error: r.error } : {}),
  };
}

interface ListParams {
  mailbox: string;
  limit: number;
  /** The cursor's id: newest first, ids before it; oldest first, ids after it. */
  before?: string;
  q?: string;
}

export interface SqliteMailboxIndexOptions {
  /**
   * Deliveries commit at synchronous=NORMAL (see the constructor).
   */
  readonly deferredDeliveries?: boolean;
  /** How long a deletion is remembered (see MailboxIndex.delete). @default DEFAULT_DELETION_MEMORY_DAYS */
  readonly deletionMemoryDays?: number;
  /** ms since epoch; for tests. */
  readonly clock?: () => number;
  /**
   * Room to release when a delete meets a full disk, so that the delete commits and gives the
   * message's room back (functions/local/disk-reserve.ts). Deletes only: nothing else may use it.
   */
  readonly reserve?: ReleasableReserve | undefined;
}

interface PendingDelivery {
  readonly entry: MessageEntry;
  readonly restoreDeleted: boolean;
  readonly resolve: (result: { inserted: boolean }) => void;
  readonly reject: (err: unknown) => void;
}

/** The folded copies `q` searches (`foldForSearch`). */
const fold = foldForSearch;

/** The columns the parse fills (a delivery writes them, `updateParsed` rewrites them), with `q`'s folded copies. */
function parsedParams(f: ParsedEntryFields) {
  return {
    sender: f.from,
    recipients: f.to,
    subject: f.subject,
    snippet: f.snippet,
    has_attachments: f.hasAttachments ? 1 : 0,
    parse_failed: f.parseFailed ? 1 : 0,
    sender_lc: fold(f.from),
    recipients_lc: fold(f.to),
    subject_lc: fold(f.subject),
  };
}

function toParams(e: MessageEntry): InsertParams {
  return {
    mailbox: e.mailbox,
    id: e.id,
    size: e.size,
    received_at: e.receivedAt,
    ...parsedParams(e),
    seen: e.seen ? 1 : 0,
    verdicts: JSON.stringify(e.verdicts),
    tags: JSON.stringify(e.tags),
    quarantine_reasons: e.quarantineReasons === undefined ? null : JSON.stringify(e.quarantineReasons),
    recipient: e.recipient,
    plus_tag: e.plusTag ?? null,
    ses_message_id: e.sesMessageId,
    crlf_size: e.crlfSize,
  };
}

function toEntry(r: MessageRow): MessageEntry {
  // Optional fields are absent (not `undefined`) when unset, so entries compare equal to what was delivered.
  return {
    mailbox: r.mailbox,
    id: r.id,
    size: r.size,
    crlfSize: r.crlf_size ?? r.size,
    receivedAt: r.received_at,
    from: r.sender,
    to: r.recipients,
    subject: r.subject,
    snippet: r.snippet,
    hasAttachments: r.has_attachments === 1,
    seen: r.seen === 1,
    verdicts: JSON.parse(r.verdicts) as Verdicts,
    tags: JSON.parse(r.tags) as VerdictName[],
    ...(r.quarantine_reasons !== null
      ? { quarantineReasons: JSON.parse(r.quarantine_reasons) as VerdictName[] }
      : {}),
    recipient: r.recipient,
    ...(r.plus_tag !== null ? { plusTag: r.plus_tag } : {}),
    parseFailed: r.parse_failed === 1,
    sesMessageId: r.ses_message_id,
  };
}

function toToken(r: TokenRow): TokenRecord {
  return {
    hash: r.hash,
    mailbox: r.mailbox,
    admin: r.admin === 1,
    createdAt: r.created_at,
    ...(r.label !== null ? { label: r.label } : {}),
  };
}

function listVariantKey(cursor: boolean, unseen: boolean, q: boolean, oldestFirst: boolean): number {
  return (cursor ? 1 : 0) | (unseen ? 2 : 0) | (q ? 4 : 0) | (oldestFirst ? 8 : 0);
}

/** The partial index of unread mail (SCHEMA). */
const UNSEEN_INDEX = 'messages_unseen';

/** The statement of one `list` variant (exported for the test that checks its query plan). */
export function listSql(cursor: boolean, unseen: boolean, q: boolean, oldestFirst = false): string {
  // One statement per filter combination rather than `(@x IS NULL OR …)`: SQLite cannot seek the
  // primary key on an OR, and every later page would rescan the mailbox from the top.
  // instr() on the folded columns matches q literally, so % and _ in a search need no escaping.
  // Unseen pages name the partial index of unread mail: without statistics (nothing runs ANALYZE)
  // the planner prefers the primary key, which covers every column, and walked every read message
  // of the mailbox to find the unread ones (100,000 rows for 3). INDEXED BY also makes a schema
  // without that index an error at start-up rather than a slow list.
  return (
    `SELECT ${MESSAGE_COLUMNS} FROM messages${unseen ? ` INDEXED BY ${UNSEEN_INDEX}` : ''} WHERE mailbox = @mailbox` +
    (cursor ? (oldestFirst ? ' AND id > @before' : ' AND id < @before') : '') +
    (unseen ? ' AND seen = 0' : '') +
    (q
      ? ' AND (instr(sender_lc, @q) > 0 OR instr(recipients_lc, @q) > 0 OR instr(subject_lc, @q) > 0)'
      : '') +
    ` ORDER BY id ${oldestFirst ? 'ASC' : 'DESC'} LIMIT @limit`
  );
}

export class SqliteMailboxIndex implements MailboxIndex {
  private readonly db: Database.Database;
  private readonly insertMessage: Database.Statement<[InsertParams]>;
  private readonly addToStats: Database.Statement<[{ mailbox: string; bytes: number }]>;
  private readonly subtractFromStats: Database.Statement<[{ mailbox: string; bytes: number }]>;
  private readonly selectMessage: Database.Statement<[string, string], MessageRow>;
  private readonly deleteMessage: Database.Statement<[string, string], MessageRow>;
  private readonly updateSeen: Database.Statement<
    [{ mailbox: string; id: string; seen: number }],
    MessageRow
  >;
  private readonly updateParsedStatement: Database.Statement<[ParsedParams], MessageRow>;
  private readonly selectStat: Database.Statement<[string], StatRow>;
  private readonly selectFirstStats: Database.Statement<[number], StatRow>;
  private readonly selectStatsAfter: Database.Statement<[string, number], StatRow>;
  private readonly upsertToken: Database.Statement<[TokenRow]>;
  private readonly selectToken: Database.Statement<[string], TokenRow>;
  private readonly removeToken: Database.Statement<[string]>;
  private readonly selectTokens: Database.Statement<[], TokenRow>;
  private readonly claimSendStatement: Database.Statement<
    [{ key: string; now: string; stale: string }],
    SendRow
  >;
  private readonly finishSendStatement: Database.Statement<
    [
      {
        key: string;
        state: string;
        now: string;
        provider_message_id: string | null;
        detail: string | null;
        error: string | null;
      },
    ],
    SendRow
  >;
  private readonly selectSend: Database.Statement<[string], SendRow>;
  private readonly listStatements = new Map<number, Database.Statement<[ListParams], MessageRow>>();
  private readonly deliverOne: Database.Transaction<
    (entry: MessageEntry, restoreDeleted: boolean) => boolean
  >;
  private readonly deliverBatch: Database.Transaction<(batch: readonly PendingDelivery[]) => boolean[]>;
  private readonly deleteOne: Database.Transaction<(mailbox: string, id: string) => MessageRow | undefined>;
  private readonly deleteBatch: Database.Transaction<
    (mailbox: string, ids: readonly string[]) => (MessageRow | undefined)[]
  >;
  private pending: PendingDelivery[] = [];
  private flushScheduled = false;

  /** `deferredDeliveries`: see the constructor. */
  readonly deferredDeliveries: boolean;
  private readonly deletionMemoryMs: number;
  private readonly clock: () => number;
  private readonly reserve: ReleasableReserve | undefined;
  private readonly selectDeletion: Database.Statement<[string, string, number], number>;
  private readonly upsertDeletion: Database.Statement<[string, string, number]>;
  private readonly removeDeletion: Database.Statement<[string, string]>;
  private readonly purgeDeletions: Database.Statement<[number]>;
  private readonly nextCommit: Database.Statement<[string], number>;
  private readonly advanceCommitCounters: Database.Statement<[number]>;
  private readonly insertCommit: Database.Statement<[string, number, string]>;
  private readonly removeCommit: Database.Statement<[string, string]>;
  private readonly selectCommitCursor: Database.Statement<[string], number>;
  private readonly selectCommitted: Database.Statement<
    [string, number, number],
    MessageRow & { seq: number }
  >;

  /**
   * `path` is a file (created when missing) or `:memory:`. Every commit is fsynced (WAL,
   * synchronous=FULL), except, with `deferredDeliveries`, the group commits of `deliver()`: those run
   * at synchronous=NORMAL (crash-safe, but the last ones can be lost on power failure), for a caller
   * that can redo them — the local ingest journal, whose recovery re-runs the idempotent router.
   * The next FULL commit, or the journal's checkpoint, makes them durable too.
   */
  constructor(path: string, options: SqliteMailboxIndexOptions = {}) {
    this.deferredDeliveries = options.deferredDeliveries === true;
    const days = options.deletionMemoryDays ?? DEFAULT_DELETION_MEMORY_DAYS;
    if (!Number.isFinite(days) || days <= 0) {
      throw new RangeError(`deletionMemoryDays must be positive, got ${String(options.deletionMemoryDays)}`);
    }
    this.deletionMemoryMs = days * DAY_MS;
    this.clock = options.clock ?? Date.now;
    this.reserve = options.reserve;
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    try {
      migrateSchema(this.db, 'mailbox index', SCHEMA, SCHEMA_VERSION, (db) =>
        addColumnIfMissing(db, 'messages', 'crlf_size INTEGER'),
      );
    } catch (err) {
      this.db.close();
      throw err;
    }

    this.insertMessage = this.db.prepare<[InsertParams]>(
      `INSERT INTO messages (${MESSAGE_COLUMNS}, sender_lc, recipients_lc, subject_lc) VALUES (` +
        '@mailbox, @id, @size, @received_at, @sender, @recipients, @subject, @snippet, @has_attachments, @seen, ' +
        '@verdicts, @tags, @quarantine_reasons, @recipient, @plus_tag, @parse_failed, @ses_message_id, @crlf_size, ' +
        '@sender_lc, @recipients_lc, @subject_lc) ' +
        // Not INSERT OR IGNORE: that would also swallow NOT NULL violations and report them as duplicates.
        'ON CONFLICT (mailbox, id) DO NOTHING',
    );
    this.addToStats = this.db.prepare(
      'INSERT INTO stats (mailbox, messages, bytes) VALUES (@mailbox, 1, @bytes) ' +
        'ON CONFLICT (mailbox) DO UPDATE SET messages = messages + 1, bytes = bytes + excluded.bytes',
    );
    this.subtractFromStats = this.db.prepare(
      'UPDATE stats SET messages = messages - 1, bytes = bytes - @bytes WHERE mailbox = @mailbox',
    );
    this.selectMessage = this.db.prepare(
      `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE mailbox = ? AND id = ?`,
    );
    this.deleteMessage = this.db.prepare(
      `DELETE FROM messages WHERE mailbox = ? AND id = ? RETURNING ${MESSAGE_COLUMNS}`,
    );
    this.updateSeen = this.db.prepare(
      `UPDATE messages SET seen = @seen WHERE mailbox = @mailbox AND id = @id RETURNING ${MESSAGE_COLUMNS}`,
    );
    this.updateParsedStatement = this.db.prepare(
      'UPDATE messages SET sender = @sender, recipients = @recipients, subject = @subject, snippet = @snippet, ' +
        'has_attachments = @has_attachments, parse_failed = @parse_failed, sender_lc = @sender_lc, ' +
        'recipients_lc = @recipients_lc, subject_lc = @subject_lc ' +
        `WHERE mailbox = @mailbox AND id = @id RETURNING ${MESSAGE_COLUMNS}`,
    );
    this.selectStat = this.db.prepare('SELECT mailbox, messages, bytes FROM stats WHERE mailbox = ?');
    // BINARY collation: UTF-8 byte order, as core/mailbox-pages.ts expects.
    this.selectFirstStats = this.db.prepare(
      'SELECT mailbox, messages, bytes FROM stats ORDER BY mailbox LIMIT ?',
    );
    this.selectStatsAfter = this.db.prepare(
      'SELECT mailbox, messages, bytes FROM stats WHERE mailbox > ? ORDER BY mailbox LIMIT ?',
    );
    this.upsertToken = this.db.prepare(
      'INSERT INTO tokens (hash, mailbox, admin, created_at, label) VALUES (@hash, @mailbox, @admin, @created_at, @label) ' +
        'ON CONFLICT (hash) DO UPDATE SET mailbox = excluded.mailbox, admin = excluded.admin, ' +
        'created_at = excluded.created_at, label = excluded.label',
    );
    this.selectToken = this.db.prepare(
      'SELECT hash, mailbox, admin, created_at, label FROM tokens WHERE hash = ?',
    );
    this.removeToken = this.db.prepare('DELETE FROM tokens WHERE hash = ?');
    this.selectTokens = this.db.prepare(
      'SELECT hash, mailbox, admin, created_at, label FROM tokens ORDER BY created_at, hash',
    );
    // The conditional write: a new key inserts; an existing one is taken over only when its last
    // attempt failed or its claim is stale. No row back means someone else holds it (or it was sent).
    this.claimSendStatement = this.db.prepare(
      `INSERT INTO sends (key, state, attempts, claimed_at, updated_at) VALUES (@key, 'pending', 1, @now, @now) ` +
        `ON CONFLICT (key) DO UPDATE SET state = 'pending', attempts = attempts + 1, claimed_at = excluded.claimed_at, ` +
        'updated_at = excluded.updated_at, error = NULL ' +
        `WHERE sends.state = 'failed' OR (sends.state = 'pending' AND sends.claimed_at < @stale) ` +
        `RETURNING ${SEND_COLUMNS}`,
    );
    this.finishSendStatement = this.db.prepare(
      `INSERT INTO sends (key, state, attempts, claimed_at, updated_at, provider_message_id, detail, error) ` +
        'VALUES (@key, @state, 1, @now, @now, @provider_message_id, @detail, @error) ' +
        'ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, ' +
        'provider_message_id = excluded.provider_message_id, detail = excluded.detail, error = excluded.error ' +
        `RETURNING ${SEND_COLUMNS}`,
    );
    this.selectSend = this.db.prepare(`SELECT ${SEND_COLUMNS} FROM sends WHERE key = ?`);
    for (const cursor of [false, true]) {
      for (const unseen of [false, true]) {
        for (const q of [false, true]) {
          for (const oldestFirst of [false, true]) {
            this.listStatements.set(
              listVariantKey(cursor, unseen, q, oldestFirst),
              this.db.prepare(listSql(cursor, unseen, q, oldestFirst)),
            );
          }
        }
      }
    }

    // A deletion older than the memory counts as none (it is purged with the next delete).
    this.selectDeletion = this.db
      .prepare<[string, string, number], number>(
        'SELECT 1 FROM deletions WHERE mailbox = ? AND id = ? AND deleted_at >= ?',
      )
      .pluck();
    this.upsertDeletion = this.db.prepare(
      'INSERT INTO deletions (mailbox, id, deleted_at) VALUES (?, ?, ?) ' +
        'ON CONFLICT (mailbox, id) DO UPDATE SET deleted_at = excluded.deleted_at',
    );
    this.removeDeletion = this.db.prepare('DELETE FROM deletions WHERE mailbox = ? AND id = ?');
    this.purgeDeletions = this.db.prepare('DELETE FROM deletions WHERE deleted_at < ?');

    this.advanceCommitCounters = this.db.prepare('UPDATE commit_counters SET last = last + ?');
    this.nextCommit = this.db
      .prepare<[string], number>(
        'INSERT INTO commit_counters (mailbox, last) VALUES (?, 1) ' +
          'ON CONFLICT (mailbox) DO UPDATE SET last = last + 1 RETURNING last',
      )
      .pluck();
    this.insertCommit = this.db.prepare('INSERT INTO commits (mailbox, seq, id) VALUES (?, ?, ?)');
    this.removeCommit = this.db.prepare('DELETE FROM commits WHERE mailbox = ? AND id = ?');
    this.selectCommitCursor = this.db
      .prepare<[string], number>('SELECT last FROM commit_counters WHERE mailbox = ?')
      .pluck();
    this.selectCommitted = this.db.prepare<[string, number, number], MessageRow & { seq: number }>(
      `SELECT c.seq AS seq, ${MESSAGE_COLUMNS.split(', ')
        .map((c) => `m.${c}`)
        .join(', ')} FROM commits c JOIN messages m ON m.mailbox = c.mailbox AND m.id = c.id ` +
        'WHERE c.mailbox = ? AND c.seq > ? ORDER BY c.seq LIMIT ?',
    );

    this.deliverOne = this.db.transaction((entry: MessageEntry, restoreDeleted: boolean): boolean => {
      if (
        this.selectDeletion.get(entry.mailbox, entry.id, this.clock() - this.deletionMemoryMs) !== undefined
      ) {
        if (!restoreDeleted) return false;
        this.removeDeletion.run(entry.mailbox, entry.id);
      }
      const inserted = this.insertMessage.run(toParams(entry)).changes > 0;
      // Counters move only with the row, so a repeated delivery leaves them exact.
      if (inserted) {
        this.addToStats.run({ mailbox: entry.mailbox, bytes: entry.size });
        const seq = this.nextCommit.get(entry.mailbox);
        if (seq === undefined) throw new Error('unreachable: the commit counter returned nothing');
        this.insertCommit.run(entry.mailbox, seq, entry.id);
      }
      return inserted;
    });
    this.deliverBatch = this.db.transaction((batch: readonly PendingDelivery[]): boolean[] =>
      // Each delivery runs in a nested transaction (a SAVEPOINT): a failure rolls back that one only.
      batch.map((p) => {
        try {
          return this.deliverOne(p.entry, p.restoreDeleted);
        } catch (err) {
          p.reject(err);
          return false;
        }
      }),
    );
    this.deleteOne = this.db.transaction((mailbox: string, id: string): MessageRow | undefined => {
      const row = this.deleteMessage.get(mailbox, id);
      if (row !== undefined) {
        this.subtractFromStats.run({ mailbox, bytes: row.size });
        this.removeCommit.run(mailbox, id);
        const now = this.clock();
        this.upsertDeletion.run(mailbox, id, now);
        // Forgetting expired deletions here keeps the table as small as the memory asks.
        this.purgeDeletions.run(now - this.deletionMemoryMs);
      }
      return row;
    });
    // Nested: each `deleteOne` is a SAVEPOINT of this one transaction.
    this.deleteBatch = this.db.transaction((mailbox: string, ids: readonly string[]) =>
      ids.map((id) => this.deleteOne(mailbox, id)),
    );
  }

  deliver(entry: MessageEntry, options: DeliverOptions = {}): Promise<{ inserted: boolean }> {
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) {
      return Promise.reject(
        new ValidationError('message size must be a non-negative integer', [String(entry.size)]),
      );
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ entry, restoreDeleted: options.restoreDeleted === true, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // A few event loop turns later, while more deliveries keep arriving (group-commit.ts):
        // deliveries whose I/O completed meanwhile join this batch.
        scheduleGroupCommit(
          () => this.pending.length,
          () => this.flushDeliveries(),
        );
      }
    });
  }

  /** Commits queued deliveries. Every other method calls it first, so operations apply in call order. */
  private flushDeliveries(): void {
    this.flushScheduled = false;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    let results: boolean[];
    try {
      if (this.deferredDeliveries) this.db.pragma('synchronous = NORMAL');
      try {
        results = this.deliverBatch.immediate(batch);
      } finally {
        if (this.deferredDeliveries) this.db.pragma('synchronous = FULL');
      }
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    // Resolved only after COMMIT returned: durable (or, with deferredDeliveries, redoable). A rejected one ignores resolve.
    batch.forEach((p, i) => {
      p.resolve({ inserted: results[i] === true });
    });
  }

  async get(mailbox: string, id: string): Promise<MessageEntry | null> {
    // Not a flush: the router asks before every delivery whether it is a retry, and flushing here
    // would commit batches of one. A committed row wins; else a queued delivery of that id counts
    // (it is about to be committed, or it is itself a repeat of a committed one).
    const row = this.selectMessage.get(mailbox, id);
    if (row !== undefined) return toEntry(row);
    const queued = this.pending.find((p) => p.entry.id === id && p.entry.mailbox === mailbox);
    return queued === undefined ? null : queued.entry;
  }

  async deliveryState(mailbox: string, id: string): Promise<DeliveryState> {
    // Like `get`, no flush (the router asks before every delivery that is not fresh).
    if ((await this.get(mailbox, id)) !== null) return 'present';
    const since = this.clock() - this.deletionMemoryMs;
    return this.selectDeletion.get(mailbox, id, since) === undefined ? 'absent' : 'deleted';
  }

  async list(mailbox: string, options: ListOptions): Promise<ListPage> {
    this.flushDeliveries();
    const { limit, cursor, unseen = false, q, oldestFirst = false } = options;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}`, [String(limit)]);
    }
    const before = cursor === undefined ? undefined : decodeCursor(cursor, oldestFirst);
    const needle = q === undefined || q === '' ? undefined : fold(q);
    const statement = this.listStatements.get(
      listVariantKey(before !== undefined, unseen, needle !== undefined, oldestFirst),
    );
    if (statement === undefined)
      throw new Error('unreachable: every list variant is prepared in the constructor');
    // One row more than asked tells whether another page exists, so the last page has no cursor.
    const params: ListParams = { mailbox, limit: limit + 1 };
    if (before !== undefined) params.before = before;
    if (needle !== undefined) params.q = needle;
    const rows = statement.all(params);
    const items = rows.slice(0, limit).map(toEntry);
    const last = items[items.length - 1];
    return {
      items,
      nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last.id, oldestFirst) : null,
    };
  }

  async stat(mailbox: string): Promise<MailboxStat> {
    this.flushDeliveries();
    const row = this.selectStat.get(mailbox);
    return { address: mailbox, messages: row?.messages ?? 0, bytes: row?.bytes ?? 0 };
  }

  /** The rows of `stats` are the registry: one per mailbox key that ever had mail. */
  async listMailboxes(options: MailboxListOptions): Promise<MailboxPage> {
    this.flushDeliveries();
    const { limit, cursor } = options;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}`, [String(limit)]);
    }
    const read = async (after: string | undefined, count: number) => {
      const rows =
        after === undefined ? this.selectFirstStats.all(count) : this.selectStatsAfter.all(after, count);
      return { items: rows, more: rows.length === count };
    };
    const page = await pageOfOwners(read, (r) => r.mailbox, limit, cursor);
    return {
      items: page.items.map((r) => ({ address: r.mailbox, messages: r.messages, bytes: r.bytes })),
      nextCursor: page.nextCursor,
    };
  }

  async setSeen(mailbox: string, id: string, seen: boolean): Promise<MessageEntry | null> {
    this.flushDeliveries();
    const row = this.updateSeen.get({ mailbox, id, seen: seen ? 1 : 0 });
    return row === undefined ? null : toEntry(row);
  }

  async updateParsed(mailbox: string, id: string, fields: ParsedEntryFields): Promise<MessageEntry | null> {
    // A delivery of this id still queued is committed first, so it is the row updated here.
    this.flushDeliveries();
    const row = this.updateParsedStatement.get({ mailbox, id, ...parsedParams(fields) });
    return row === undefined ? null : toEntry(row);
  }

  /**
   * Moves every mailbox's commit counter on by `count`, so that the next commits take numbers no
   * client can have seen. For journal recovery after a crash: deliveries are committed at
   * synchronous=NORMAL, so a power loss can undo the last commits after a long-poll handed out their
   * numbers; recovery then delivers again, in journal order, mail that may take those same numbers
   * for other messages, and a client waiting from such a number would miss them. Numbers skipped
   * are gaps, which nothing minds (the long-poll reads `seq > cursor`). Local only, durable (FULL).
   */
  skipCommitNumbers(count: number): void {
    if (!Number.isSafeInteger(count) || count < 0)
      throw new RangeError(`count must be a non-negative integer: ${count}`);
    this.flushDeliveries();
    if (count > 0) this.advanceCommitCounters.run(count);
  }

  async commitCursor(mailbox: string): Promise<number> {
    this.flushDeliveries();
    return this.selectCommitCursor.get(mailbox) ?? 0;
  }

  async committedAfter(mailbox: string, cursor: number, limit: number): Promise<CommittedPage> {
    this.flushDeliveries();
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
      throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}`, [String(limit)]);
    }
    if (!Number.isSafeInteger(cursor) || cursor < 0) {
      throw new ValidationError('cursor must be a non-negative integer', [String(cursor)], 'invalid_cursor');
    }
    const rows = this.selectCommitted.all(mailbox, cursor, limit + 1);
    const page = rows.slice(0, limit);
    return {
      items: page.map(toEntry),
      commits: page.map((r) => r.seq),
      cursor: page.at(-1)?.seq ?? cursor,
      truncated: rows.length > limit,
    };
  }

  async delete(mailbox: string, id: string): Promise<MessageEntry | null> {
    this.flushDeliveries();
    const row = retryWithReserve(this.reserve, () => this.deleteOne.immediate(mailbox, id));
    this.checkpointWhileFull();
    return row === undefined ? null : toEntry(row);
  }

  /**
   * While the reserve is released (the disk was full), copies the WAL into the database after a
   * delete as far as readers allow, so that the next commit starts the WAL over in the room it has
   * instead of growing it into the room the reserve gave. A failure (no room for the database file
   * to grow) is ignored: the WAL still holds everything.
   */
  private checkpointWhileFull(): void {
    if (this.reserve?.held !== false) return;
    try {
      this.db.pragma('wal_checkpoint(PASSIVE)');
    } catch {
      // Kept in the WAL; the next checkpoint copies it.
    }
  }

  /** One transaction, one fsync, for all of them (POP3's QUIT, the API's batch delete). */
  async deleteMany(mailbox: string, ids: readonly string[]): Promise<(MessageEntry | null)[]> {
    assertDeleteMany(ids);
    this.flushDeliveries();
    const rows = retryWithReserve(this.reserve, () => this.deleteBatch.immediate(mailbox, ids));
    this.checkpointWhileFull();
    return rows.map((row) => (row === undefined ? null : toEntry(row)));
  }

  async claimSend(key: string, options: ClaimSendOptions): Promise<{ claimed: boolean; record: SendRecord }> {
    this.flushDeliveries();
    const now = options.now.toISOString();
    const stale = new Date(options.now.getTime() - options.leaseMs).toISOString();
    const claimed = this.claimSendStatement.get({ key, now, stale });
    if (claimed !== undefined) return { claimed: true, record: toSendRecord(claimed) };
    const current = this.selectSend.get(key);
    if (current === undefined) throw new Error(`unreachable: send ${key} neither claimed nor present`);
    return { claimed: false, record: toSendRecord(current) };
  }

  async finishSend(key: string, outcome: SendOutcome, now: Date): Promise<SendRecord> {
    this.flushDeliveries();
    const row = this.finishSendStatement.get({
      key,
      state: outcome.state,
      now: now.toISOString(),
      provider_message_id: outcome.state === 'sent' ? outcome.providerMessageId : null,
      detail: outcome.detail ?? null,
      error: outcome.state === 'failed' ? outcome.error : null,
    });
    if (row === undefined) throw new Error(`unreachable: upsert of send ${key} returned nothing`);
    return toSendRecord(row);
  }

  async getSend(key: string): Promise<SendRecord | null> {
    this.flushDeliveries();
    const row = this.selectSend.get(key);
    return row === undefined ? null : toSendRecord(row);
  }

  async putToken(token: TokenRecord): Promise<void> {
    this.flushDeliveries();
    this.upsertToken.run({
      hash: token.hash,
      mailbox: token.mailbox,
      admin: token.admin ? 1 : 0,
      created_at: token.createdAt,
      label: token.label ?? null,
    });
  }

  async getToken(hash: string): Promise<TokenRecord | null> {
    this.flushDeliveries();
    const row = this.selectToken.get(hash);
    return row === undefined ? null : toToken(row);
  }

  async deleteToken(hash: string): Promise<boolean> {
    this.flushDeliveries();
    return this.removeToken.run(hash).changes > 0;
  }

  /**
   * Every token, oldest first (`mail-relay token list`). Local only, not part of MailboxIndex: in
   * DynamoDB it would be a scan of the whole table.
   */
  async listTokens(): Promise<TokenRecord[]> {
    this.flushDeliveries();
    return this.selectTokens.all().map(toToken);
  }

  /** Commits anything queued, then closes. Closing twice is harmless. */
  async close(): Promise<void> {
    if (!this.db.open) return;
    this.flushDeliveries();
    this.db.close();
  }
}
