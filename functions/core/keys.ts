/**
 * Blob keys of a delivered message and the shape of its stored summary: shared by the router
 * (which writes them) and the HTTP API (which reads them). Kept apart from the router so the API
 * bundle never pulls in the parse path.
 */
import * as z from 'zod';
import type { BlobStore } from '../ports/blob-store.ts';
import { type ParsedSummary, parsedSummarySchema } from './message.ts';

/** Kept originals of oversize forwards (their notices link here; see pipeline/forward.ts). */
export const FORWARDED_PREFIX = 'forwarded/';

/** Blob keys of a delivered message. Mailbox addresses are validated (no '/'), so they are safe segments. */
export const mailboxKeys = {
  prefix: (mailbox: string) => `mailboxes/${mailbox}/`,
  raw: (mailbox: string, id: string) => `mailboxes/${mailbox}/${id}.eml`,
  dir: (mailbox: string, id: string) => `mailboxes/${mailbox}/${id}/`,
  summary: (mailbox: string, id: string) => `mailboxes/${mailbox}/${id}/summary.json`,
  part: (mailbox: string, id: string, partId: string) => `mailboxes/${mailbox}/${id}/parts/${partId}`,
};

/**
 * What is stored at `summary.json`: the parsed message, or the reason it could not be parsed, with
 * what could be read of it (its own header fields: `ParseResult`'s `summary`; absent in summaries
 * stored before it was kept, and when not even those could be read).
 */
export type StoredSummary =
  | ({ readonly parseFailed: false } & ParsedSummary)
  | ({ readonly parseFailed: true; readonly parseError: string } & Partial<ParsedSummary>);

/** Validates a `summary.json` read back from the blob store (it crossed a storage boundary). */
export const storedSummarySchema = z.union([
  parsedSummarySchema.extend({ parseFailed: z.literal(false) }),
  parsedSummarySchema.partial().extend({ parseFailed: z.literal(true), parseError: z.string() }),
]);

/**
 * The index and blob key of a mailbox's `sent` view: copies of what its owner sent through
 * `POST /v1/mailboxes/{address}/send`. A path inside the mailbox's own key space that no address
 * can name (addresses have no '/'), so it never shows in the inbox listing and a client reaches it
 * only through the API's sent view. See docs/adr/0009-sent-view.md.
 */
export const sentMailboxKey = (mailbox: string) => `${mailbox}/sent`;

/**
 * Removes a message's blobs (raw copy, summary, parts). Call it after the index entry is gone: the
 * entry is the commit point, so a crash in between leaves unreachable blobs, never an entry without bytes.
 */
export async function deleteMessageBlobs(blobs: BlobStore, mailbox: string, id: string): Promise<void> {
  await blobs.delete(mailboxKeys.raw(mailbox, id));
  await blobs.deletePrefix(mailboxKeys.dir(mailbox, id));
}
