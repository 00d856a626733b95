/**
 * Reparse: runs stored mail through the current parser again, so that mail delivered before a
 * parser fix gains it (docs/adr/0018-reparse.md). A delivery parses once and stores what the API
 * reads (summary.json, the decoded parts, the index entry's from/to/subject/snippet); `import` of
 * the same file and `replay` are no-ops for a message already delivered, so neither does this.
 *
 * Per message, from the mailbox's own raw copy (`<id>.eml`, never rewritten), in this order:
 *   1. the decoded parts the new parse names (only those whose bytes differ from what is stored),
 *   2. `summary.json` (one atomic put: a reader sees the old summary or the new one),
 *   3. the index entry's parsed fields, conditional on the entry existing (`updateParsed`): a message
 *      deleted meanwhile stays deleted, and what steps 1–2 wrote for it is removed again,
 *   4. the part blobs the new summary no longer names.
 * So a crash anywhere leaves a summary whose parts all exist (old ones are removed last), and a
 * second run finishes the job: each step compares before it writes, which also makes a run over
 * mail that is already up to date read-only ("unchanged"). Nothing else changes: id, order, `seen`,
 * received time, verdicts, counters and raw bytes are not written.
 */
import { errorMessage, MailRelayError } from '../core/errors.ts';
import {
  deleteMessageBlobs,
  mailboxKeys,
  type StoredSummary,
  sentMailboxKey,
  storedSummarySchema,
} from '../core/keys.ts';
import { type Attachment, partBody } from '../core/message.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { MailParser } from '../ports/mail-parser.ts';
import type { MailboxIndex, ParsedEntryFields } from '../ports/mailbox-index.ts';
import { allWritten, parsedEntryFields, storedSummaryOf } from './router.ts';

export interface ReparseDeps {
  readonly blobs: BlobStore;
  readonly index: MailboxIndex;
  readonly parser: MailParser;
}

export interface ReparseOptions {
  /** Only this mailbox (its inbox and its sent view); by default every mailbox with mail. */
  readonly mailbox?: string | undefined;
  /** Only mail received at or after this time. */
  readonly since?: Date | undefined;
  readonly onProgress?: ((progress: ReparseProgress) => void) | undefined;
}

export interface ReparseProgress {
  /** Messages handled so far (reparsed, unchanged, gone or failed). */
  readonly done: number;
  /** Messages selected when the run started. */
  readonly total: number;
  readonly failed: number;
}

export interface ReparseFailure {
  /** The index key: an address, or an address's sent view (`<address>/sent`). */
  readonly mailbox: string;
  readonly id: string;
  readonly error: string;
}

export interface ReparseSummary {
  /** Mailboxes (addresses; an address's sent view counts with it) whose mail was looked at. */
  readonly mailboxes: number;
  /** Messages selected. */
  readonly considered: number;
  /** Messages whose summary, parts or index fields were rewritten. */
  readonly reparsed: number;
  /** Messages for which the current parser gives what is stored already. */
  readonly unchanged: number;
  /** Messages deleted while the run went on (left deleted). */
  readonly gone: number;
  readonly failures: readonly ReparseFailure[];
}

/** What happened to one message. */
export type ReparseOutcome = 'reparsed' | 'unchanged' | 'gone';

/** Index pages while selecting the mail (the port's largest page). */
const PAGE_SIZE = 1000;

const PARSED_FIELDS = [
  'from',
  'to',
  'subject',
  'snippet',
  'hasAttachments',
  'parseFailed',
] as const satisfies readonly (keyof ParsedEntryFields)[];

/** Thrown for a message that cannot be reparsed; the run goes on with the next one. */
export class ReparseError extends MailRelayError {
  constructor(message: string) {
    super('reparse_failed', message);
  }
}

/** The stored summary, or null when it is missing or not one (a reparse then writes it anew). */
function readStoredSummary(bytes: Buffer | null): StoredSummary | null {
  if (bytes === null) return null;
  try {
    const parsed = storedSummarySchema.safeParse(JSON.parse(bytes.toString('utf8')));
    return parsed.success ? (parsed.data as StoredSummary) : null;
  } catch {
    return null;
  }
}

/** The part blobs stored for a message: partId -> size. */
async function storedParts(blobs: BlobStore, mailbox: string, id: string): Promise<Map<string, number>> {
  const prefix = `${mailboxKeys.dir(mailbox, id)}parts/`;
  const parts = new Map<string, number>();
  for await (const info of blobs.list(prefix)) parts.set(info.key.slice(prefix.length), info.size);
  return parts;
}

/**
 * Reparses one message of one mailbox index key (an address or its sent view); see the module
 * comment for the order of writes. Throws ReparseError (or a storage error) when it cannot.
 */
export async function reparseMessage(
  deps: ReparseDeps,
  mailbox: string,
  id: string,
): Promise<ReparseOutcome> {
  const { blobs, index } = deps;
  const entry = await index.get(mailbox, id);
  if (entry === null) return 'gone';
  const raw = await blobs.get(mailboxKeys.raw(mailbox, id));
  if (raw === null) {
    if ((await index.get(mailbox, id)) === null) return 'gone';
    throw new ReparseError(`its raw copy ${mailboxKeys.raw(mailbox, id)} is missing`);
  }
  const summaryKey = mailboxKeys.summary(mailbox, id);
  const [parsed, oldBytes, onDisk] = await Promise.all([
    deps.parser.parse(raw),
    blobs.get(summaryKey),
    storedParts(blobs, mailbox, id),
  ]);
  const old = readStoredSummary(oldBytes);
  // A parser that now fails where an older one read the message would throw away a good summary.
  if (!parsed.ok && old !== null && !old.parseFailed) {
    throw new ReparseError(`the parser now fails on it (${parsed.error}); its summary is kept`);
  }

  const summaryBytes = Buffer.from(JSON.stringify(storedSummaryOf(parsed)));
  const summaryChanged = oldBytes === null || !oldBytes.equals(summaryBytes);
  const fields = parsedEntryFields(parsed);
  const entryChanged = PARSED_FIELDS.some((k) => entry[k] !== fields[k]);

  // A part is written unless its blob holds what the new parse decoded already: the old summary
  // describes it with the same hash and size, and a blob of that size is there. (A crash between
  // writing new parts and the summary leaves blobs the old summary does not describe: written again.)
  const oldAttachments = new Map<string, Attachment>(
    old !== null && !old.parseFailed ? old.attachments.map((a) => [a.partId, a]) : [],
  );
  const newAttachments = new Map<string, Attachment>(
    parsed.ok ? parsed.summary.attachments.map((a) => [a.partId, a]) : [],
  );
  const partsToWrite = (parsed.ok ? parsed.parts : []).filter((part) => {
    const now = newAttachments.get(part.partId);
    const before = oldAttachments.get(part.partId);
    return !(
      now !== undefined &&
      before !== undefined &&
      before.sha256 === now.sha256 &&
      before.size === now.size &&
      onDisk.get(part.partId) === now.size
    );
  });
  const wanted = new Set(parsed.ok ? parsed.parts.map((p) => p.partId) : []);
  const stale = [...onDisk.keys()].filter((partId) => !wanted.has(partId));

  if (!summaryChanged && !entryChanged && partsToWrite.length === 0 && stale.length === 0) return 'unchanged';

  const wrote = summaryChanged || partsToWrite.length > 0;
  // 1. The parts first, all of them done before the summary that names them.
  await allWritten(
    partsToWrite.map((part) => blobs.put(mailboxKeys.part(mailbox, id, part.partId), partBody(part))),
  );
  // 2. The summary.
  if (summaryChanged) await blobs.put(summaryKey, summaryBytes, { contentType: 'application/json' });
  // 3. The entry, only if it is still there; also the check that the blobs just written belong to a
  //    message that exists.
  if (wrote || entryChanged) {
    const updated = await index.updateParsed(mailbox, id, fields);
    if (updated === null) {
      // Deleted meanwhile: DELETE removes the entry, then the blobs; ours may have landed after.
      await deleteMessageBlobs(blobs, mailbox, id);
      return 'gone';
    }
  }
  // 4. Parts no summary names any more.
  for (const partId of stale) await blobs.delete(mailboxKeys.part(mailbox, id, partId));
  return 'reparsed';
}

/** The owner address of an index key (`<address>/sent` is its address's sent view). */
function ownerOf(key: string): string {
  const slash = key.indexOf('/');
  return slash === -1 ? key : key.slice(0, slash);
}

async function selectedKeys(index: MailboxIndex, mailbox: string | undefined): Promise<string[]> {
  if (mailbox !== undefined) return [mailbox, sentMailboxKey(mailbox)];
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await index.listMailboxes({ limit: PAGE_SIZE, cursor });
    for (const s of page.items) keys.push(s.address);
    cursor = page.nextCursor ?? undefined;
  } while (cursor !== undefined);
  return keys;
}

/**
 * Reparses every selected message, one at a time, oldest mailbox key first and newest message first
 * within it. The selection (ids only) is made first, so progress has a total and mail delivered
 * meanwhile is left alone (it was parsed by the current parser anyway). A message that fails is
 * reported and the run goes on.
 */
export async function reparse(deps: ReparseDeps, options: ReparseOptions = {}): Promise<ReparseSummary> {
  const since = options.since?.getTime();
  if (since !== undefined && !Number.isFinite(since))
    throw new RangeError('reparse: since is not a valid date');
  const keys = await selectedKeys(deps.index, options.mailbox);
  const work: { readonly mailbox: string; readonly id: string }[] = [];
  for (const mailbox of keys) {
    let cursor: string | undefined;
    do {
      const page = await deps.index.list(mailbox, { limit: PAGE_SIZE, cursor });
      for (const e of page.items) {
        if (since === undefined || Date.parse(e.receivedAt) >= since) work.push({ mailbox, id: e.id });
      }
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  const counts = { reparsed: 0, unchanged: 0, gone: 0 };
  const failures: ReparseFailure[] = [];
  let done = 0;
  for (const { mailbox, id } of work) {
    try {
      counts[await reparseMessage(deps, mailbox, id)]++;
    } catch (err) {
      failures.push({ mailbox, id, error: errorMessage(err) });
    }
    done++;
    options.onProgress?.({ done, total: work.length, failed: failures.length });
  }
  return {
    mailboxes: new Set(keys.map(ownerOf)).size,
    considered: work.length,
    ...counts,
    failures,
  };
}
