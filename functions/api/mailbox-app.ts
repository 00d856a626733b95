/**
 * The mailbox HTTP API's read side (design.md §4, issue 3): POP3's verbs over REST (STAT,
 * LIST/UIDL, RETR, TOP, DELE), IMAP's partial fetch of one decoded part, a long-poll for new mail,
 * flags, and the OpenAPI document. The API Lambda serves exactly this app; `npm start` serves it
 * with the local extras and `POST …/send` mounted (app.ts).
 *
 * It takes its storage as ports only and never parses or sends mail: reads are served from the
 * index and from what the router wrote at delivery (raw bytes, summary.json, decoded parts). Keep
 * it free of mailparser, nodemailer and the pipeline: the API Lambda bundle must stay small
 * (docs/adr/0012-lambda-bundles.md; test/infra/bundles.test.ts checks what it contains).
 */
import { createHash } from 'node:crypto';
import { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import * as z from 'zod';
import { encodeCursor } from '../core/cursor.ts';
import { NotFoundError, ValidationError } from '../core/errors.ts';
import { deleteMessageBlobs, mailboxKeys, sentMailboxKey, storedSummarySchema } from '../core/keys.ts';
import { compareKeys, withListedOwners } from '../core/mailbox-pages.ts';
import { type AddressEntry, type ParsedSummary, SUMMARY_BODY_MAX_CHARS } from '../core/message.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import { MAX_DELETE_MANY, type MailboxIndex, type MessageEntry } from '../ports/mailbox-index.ts';
import { authenticate, reauthenticate } from './auth.ts';
import { HttpStatusError } from './errors.ts';
import {
  contentDisposition,
  IMMUTABLE_CACHE_CONTROL,
  ifMatchHolds,
  matchesEtag,
  NO_STORE,
  REVALIDATE_CACHE_CONTROL,
  rangeNotSatisfiable,
  rangeOfRequest,
  SANDBOX_CSP,
  safeContentType,
  withCharset,
} from './http-headers.ts';
import { mountInbox } from './inbox.ts';
import { capHeaders, capJsonString, capList } from './json-cap.ts';
import {
  DEFAULT_LIST_LIMIT,
  deleteAllResultSchema,
  deleteManyBodySchema,
  deleteManyResultSchema,
  errorSchema,
  healthSchema,
  type ListItem,
  listItemSchema,
  listQuerySchema,
  MAX_LIST_LIMIT,
  MAX_WAIT_ITEMS,
  MAX_WAIT_SECONDS,
  type MailboxListItem,
  type MailboxView,
  type MessageDetail,
  mailboxListQuerySchema,
  mailboxListSchema,
  mailboxParamsSchema,
  messageDetailSchema,
  messageListSchema,
  messageParamsSchema,
  partParamsSchema,
  patchMessageBodySchema,
  statSchema,
  tokenInfoSchema,
  topQuerySchema,
  viewQuerySchema,
  waitQuerySchema,
  waitResultSchema,
} from './schemas.ts';
import { documentSendRoute } from './send-route.ts';
import {
  type ApiApp,
  type ApiEnv,
  createApiShell,
  THROTTLED_RESPONSE,
  UNAUTHORIZED_RESPONSE,
} from './shell.ts';
import { readTop } from './top.ts';
import type { MailWaiter } from './waiter.ts';

/**
 * Above this size raw messages and parts are answered with a 307 to a presigned URL. A Lambda
 * response carries at most 6 MB, and binary bodies go through API Gateway base64-encoded (4/3 larger):
 * 4 MiB of bytes is about 5.6 MB on the wire.
 */
export const DEFAULT_RAW_REDIRECT_BYTES = 4 * 1024 * 1024;
/**
 * `text` and `html` of `GET …/messages/{id}` are cut to this many bytes each, its headers to
 * DEFAULT_HEADERS_MAX_BYTES, its addresses (the four lists together) to DEFAULT_ADDRESSES_MAX_BYTES
 * and its attachment list to DEFAULT_ATTACHMENTS_MAX_BYTES (`truncated` says which), counted as a
 * Lambda response carries them (json-cap.ts): 5.5 MiB in all, so the answer stays within a Lambda
 * response's 6 MB. The whole message is at `…/raw`.
 */
export const DEFAULT_BODY_MAX_BYTES = 2 * 1024 * 1024;
/** The headers of `GET …/messages/{id}`: whole headers, in order, up to this many bytes. */
export const DEFAULT_HEADERS_MAX_BYTES = 1024 * 1024;
/** `from`, `replyTo`, `to` and `cc` of `GET …/messages/{id}`, filled in that order: whole addresses. */
export const DEFAULT_ADDRESSES_MAX_BYTES = 256 * 1024;
/** The attachment list of `GET …/messages/{id}`: whole entries, in part order. */
export const DEFAULT_ATTACHMENTS_MAX_BYTES = 256 * 1024;
/**
 * The items of a LIST page or a long-poll answer stop early past this many bytes (json-cap.ts): a
 * page of 1,000 entries whose `from`, `to` and `subject` are each 998 characters of quotes would
 * otherwise not fit a Lambda response.
 */
export const DEFAULT_LIST_MAX_BYTES = 4 * 1024 * 1024;
/** Presigned URLs live long enough to start a download, short enough that a leaked one soon dies. */
export const DEFAULT_PRESIGN_SECONDS = 300;
/** Deletions in flight at once when a whole mailbox is deleted (DynamoDB: one transaction each). */
const DELETE_ALL_CONCURRENCY = 16;
/** `{"seen": true}` is 13 bytes; anything near this limit is not a flags update. */
const MAX_PATCH_BODY_BYTES = 16 * 1024;
/** 1,000 ids of 26 characters in JSON, with room for spaces. */
const MAX_DELETE_MANY_BODY_BYTES = 64 * 1024;
/** How often the long-poll re-reads the index when nothing wakes it (the Lambda case). */
export const DEFAULT_POLL_INTERVAL_MS = 500;
/**
 * With an in-process waiter, the index is still re-read this often: mail delivered by another
 * process (`mail-relay import` next to `npm start`) wakes nobody here.
 */
const WAITER_FALLBACK_POLL_MS = 2000;
/** Long-poll answers by commit carry at most this many messages (see `storedAfter`). */
const WAIT_COMMIT_PAGE = 100;
/** The long-poll's cursor, also on a 204 (which has no body). */
export const CURSOR_HEADER = 'Mail-Relay-Cursor';

export interface MailboxAppDeps {
  readonly index: MailboxIndex;
  readonly blobs: BlobStore;
  /**
   * Raw messages and parts larger than this are served by a 307 to a presigned URL.
   * @default DEFAULT_RAW_REDIRECT_BYTES (4 MiB)
   */
  readonly rawRedirectBytes?: number;
  /**
   * Bytes (json-cap.ts) each of `text` and `html` may take in `GET …/messages/{id}`; longer ones are cut.
   * @default DEFAULT_BODY_MAX_BYTES (2 MiB)
   */
  readonly bodyMaxBytes?: number;
  /**
   * Bytes (json-cap.ts) the items of a LIST page or a long-poll answer may take: a page stops early,
   * with a cursor for the rest (a long-poll answer says `truncated`).
   * @default DEFAULT_LIST_MAX_BYTES (4 MiB)
   */
  readonly listMaxBytes?: number;
  /**
   * Lifetime of presigned URLs, in seconds.
   * @default DEFAULT_PRESIGN_SECONDS (300)
   */
  readonly presignSeconds?: number;
  /** Wakes long-polls as soon as mail is delivered; without it the index is polled. */
  readonly waiter?: MailWaiter;
  /**
   * Aborted when the server stops (local mode): each long-poll then answers at once, as its timeout
   * would (204 and where to go on from), rather than lose its connection.
   */
  readonly stopping?: AbortSignal;
  /**
   * Index polling interval of the long-poll when no waiter is given, in milliseconds.
   * @default DEFAULT_POLL_INTERVAL_MS (500)
   */
  readonly pollIntervalMs?: number;
  /** Receives errors that became a 500 (the client only sees `internal`). @default console.error */
  readonly logError?: (err: unknown) => void;
  /**
   * Documents `POST /v1/mailboxes/{address}/send` in the OpenAPI document without serving it, for an
   * app whose send requests are served elsewhere (in AWS, API Gateway routes them to the send
   * function); `maxSendBytes` is the configuration's `relay.maxSendBytes`. The local server mounts
   * the route itself instead (app.ts).
   */
  readonly documentSend?: { readonly maxSendBytes: number };
  /**
   * The addresses the configuration's `mailboxes` names (not its `*@domain` entries): the admin's
   * `GET /v1/mailboxes` lists them with zero counters before they have mail, as it lists a mailbox
   * that has had mail. @default none
   */
  readonly configuredMailboxes?: Iterable<string>;
}

const API_TITLE = 'mail-relay mailbox API';
const API_VERSION = '1.0.0';

// ---- shared route pieces -------------------------------------------------------------------

const jsonError = (description: string) => ({
  description,
  content: { 'application/json': { schema: errorSchema } },
});
/** A 400 naming every code it may carry (a generated client's only list of them). */
const badRequest = (...codes: readonly string[]) =>
  jsonError(`Invalid input: ${codes.map((code) => `\`${code}\``).join(', ')}`);
/** Any operation that reads the index may meet an outage. */
const SERVER_ERROR = {
  500: jsonError('A bug or an outage (`internal`); the details are only in the server log'),
  503: THROTTLED_RESPONSE,
} as const;
/** Operations that write: the local relay's disk may be full (S3 and DynamoDB do not fill up). */
const STORAGE_FULL = {
  507: jsonError(
    'The local relay has no disk space left (`insufficient_storage`): nothing was changed; try again once there is room (no `Retry-After`: when that is depends on whoever frees space)',
  ),
} as const;
/**
 * Deletes: the local relay keeps room for them (disk-reserve.ts), so a full disk gets them a `507`
 * only once that room is used up too.
 */
const STORAGE_FULL_FOR_DELETES = {
  507: jsonError(
    'The local relay has no disk space left, not even the room it keeps for deletes on a full disk (`insufficient_storage`; a delete normally works on a full disk and gives room back): nothing was changed; try again once there is room (no `Retry-After`: when that is depends on whoever frees space)',
  ),
} as const;
const AUTH_ERRORS = {
  401: UNAUTHORIZED_RESPONSE,
  403: jsonError('The token is not valid for this mailbox (`forbidden`)'),
  ...SERVER_ERROR,
} as const;
/** `{address}` and `view`. */
const MAILBOX_ERRORS = {
  400: badRequest('invalid_address', 'invalid_request'),
  ...AUTH_ERRORS,
};
/** `{address}`, `{id}` and `view`. */
const MESSAGE_ERRORS = {
  ...MAILBOX_ERRORS,
  400: badRequest('invalid_address', 'invalid_id', 'invalid_request'),
  404: jsonError('No such message (`message_not_found`)'),
};
const SECURITY = [{ bearerAuth: [] }];
const BINARY = z.string().openapi({ format: 'binary' });
/** Revalidation of what `ETag` names (RFC 9110 §13.1.2): `304` when it still matches. */
const IF_NONE_MATCH = z.object({
  'If-None-Match': z
    .string()
    .optional()
    .openapi({ description: 'The `ETag` of an earlier answer: `304` (no body) while it still matches' }),
});
/** The precondition of RFC 9110 §13.1.1: `412` unless it holds. */
const IF_MATCH = z.object({
  'If-Match': z.string().optional().openapi({
    description:
      'ETags the answer must have (`*`: any, the message must exist): `412 precondition_failed` unless it has one',
  }),
});
/**
 * On PATCH and DELETE of a message. Its JSON has no ETag (`seen` changes it), so only `*` can hold:
 * a tag is `412`, rather than being ignored and leaving a client to believe it guarded the write.
 */
const IF_MATCH_MESSAGE = z.object({
  'If-Match': z
    .string()
    .optional()
    .openapi({
      description:
        '`*`: only while the message exists, else `412 precondition_failed`. The message has no ETag, so any ' +
        'other value is `412` (no lost-update guard is needed: the message never changes, and `seen` is set, not toggled)',
    }),
});
/** A byte range of the stored bytes (RFC 9110 §14), with revalidation as above. */
const RANGE_HEADERS = IF_NONE_MATCH.extend(IF_MATCH.shape).extend({
  Range: z
    .string()
    .optional()
    .openapi({
      description:
        'One byte range, `bytes=first-last`, `bytes=first-` or the last n bytes `bytes=-n`: `206` with those bytes. ' +
        'Several ranges, another unit or a malformed header are ignored (`200`, the whole)',
      example: 'bytes=0-1023',
    }),
  'If-Range': z.string().optional().openapi({
    description:
      'The `ETag` the range was computed against: the range is served only while it matches, else the whole (`200`)',
  }),
});
const header = (description: string) => ({ description, schema: { type: 'string' as const } });
/** On every answer to a request with a token: a cache keeps what one token read for that token only. */
const VARY = header('`Authorization`: a cache must not answer another token with it');
/** `206` and `416` of a route answering `Range`. */
const rangeResponses = (type: string) => ({
  206: {
    description: 'The byte range asked for (`Range`)',
    headers: {
      'Content-Range': header('`bytes first-last/size`'),
      ETag: header('As on the 200'),
      Vary: VARY,
    },
    content: { [type]: { schema: BINARY } },
  },
  416: {
    description:
      'The range starts at or beyond the end (`range_not_satisfiable`); `Content-Range: bytes */size`',
    headers: { 'Content-Range': header('`bytes */size`') },
    content: { 'application/json': { schema: errorSchema } },
  },
});
const PRECONDITION_FAILED = {
  412: jsonError('`If-Match` does not hold (`precondition_failed`)'),
} as const;
const redirect = (what: string) => ({
  description: `${what} is larger than the redirect threshold: follow \`Location\`, a short-lived presigned URL that serves the same bytes`,
  headers: { Location: { schema: { type: 'string' as const } } },
});

const routes = {
  health: createRoute({
    method: 'get',
    path: '/v1/health',
    tags: ['meta'],
    summary: 'Liveness',
    responses: {
      200: { description: 'The API answers', content: { 'application/json': { schema: healthSchema } } },
    },
  }),
  openapi: createRoute({
    method: 'get',
    path: '/v1/openapi.json',
    tags: ['meta'],
    summary: 'This document (OpenAPI 3.1, generated from the zod schemas)',
    responses: {
      200: {
        description: 'The OpenAPI document',
        content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
      },
    },
  }),
  me: createRoute({
    method: 'get',
    path: '/v1/me',
    tags: ['meta'],
    summary: 'The token this request presents: the mailbox it reads, or admin',
    security: SECURITY,
    responses: {
      200: { description: 'The token', content: { 'application/json': { schema: tokenInfoSchema } } },
      401: AUTH_ERRORS[401],
      ...SERVER_ERROR,
    },
  }),
  listMailboxes: createRoute({
    method: 'get',
    path: '/v1/mailboxes',
    tags: ['admin'],
    summary: 'Every mailbox with its STAT, by address, by opaque cursor (admin token only)',
    security: SECURITY,
    request: { query: mailboxListQuerySchema },
    responses: {
      200: {
        description: 'One page of mailboxes, sorted by address',
        content: { 'application/json': { schema: mailboxListSchema } },
      },
      ...AUTH_ERRORS,
      400: badRequest('invalid_cursor', 'invalid_request'),
      403: jsonError('Not an admin token (`forbidden`)'),
    },
  }),
  stat: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}',
    tags: ['mailbox'],
    summary: 'STAT: message count and total bytes',
    security: SECURITY,
    request: { params: mailboxParamsSchema, query: viewQuerySchema },
    responses: {
      200: { description: 'Exact counters', content: { 'application/json': { schema: statSchema } } },
      ...MAILBOX_ERRORS,
    },
  }),
  list: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}/messages',
    tags: ['mailbox'],
    summary: 'LIST / UIDL: messages newest first, by opaque cursor',
    security: SECURITY,
    request: { params: mailboxParamsSchema, query: listQuerySchema },
    responses: {
      200: {
        description:
          'One page. It can hold fewer than `limit` items with more to come (items past 4 MiB; in AWS, a ' +
          'page with `q` after reading 10,000 messages, maybe with none, and one with `unseen` in a mailbox ' +
          'not yet upgraded to the index of unread mail): follow `nextCursor` until null. In AWS `unseen` ' +
          'reads an eventually consistent index: a message just marked seen can be listed for a moment',
        content: { 'application/json': { schema: messageListSchema } },
      },
      ...MAILBOX_ERRORS,
      400: badRequest('invalid_address', 'invalid_cursor', 'invalid_request'),
    },
  }),
  getMessage: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}/messages/{id}',
    tags: ['message'],
    summary: 'The parsed message (from the summary written at delivery)',
    security: SECURITY,
    request: { params: messageParamsSchema, query: viewQuerySchema },
    responses: {
      200: { description: 'The message', content: { 'application/json': { schema: messageDetailSchema } } },
      ...MESSAGE_ERRORS,
    },
  }),
  patchMessage: createRoute({
    method: 'patch',
    path: '/v1/mailboxes/{address}/messages/{id}',
    tags: ['message'],
    summary: 'Set flags (seen)',
    security: SECURITY,
    middleware: [bodyLimit({ maxSize: MAX_PATCH_BODY_BYTES })],
    request: {
      params: messageParamsSchema,
      query: viewQuerySchema,
      headers: IF_MATCH_MESSAGE,
      body: { required: true, content: { 'application/json': { schema: patchMessageBodySchema } } },
    },
    responses: {
      200: {
        description: 'The updated list item',
        content: { 'application/json': { schema: listItemSchema } },
      },
      ...MESSAGE_ERRORS,
      400: badRequest('invalid_address', 'invalid_id', 'invalid_json', 'invalid_request'),
      413: jsonError('The body is larger than 16 KiB (`payload_too_large`)'),
      ...PRECONDITION_FAILED,
      415: jsonError(
        'The body is not application/json, or is compressed (`Content-Encoding`) (`unsupported_media_type`)',
      ),
      ...STORAGE_FULL,
    },
  }),
  deleteAll: createRoute({
    method: 'delete',
    path: '/v1/mailboxes/{address}/messages',
    tags: ['mailbox'],
    summary: `Delete the mailbox's messages, newest first, at most ${MAX_LIST_LIMIT} a request (\`more\`: ask again)`,
    security: SECURITY,
    request: { params: mailboxParamsSchema, query: viewQuerySchema },
    responses: {
      200: {
        description: 'How many were deleted, and whether more are left',
        content: { 'application/json': { schema: deleteAllResultSchema } },
      },
      ...MAILBOX_ERRORS,
      ...STORAGE_FULL_FOR_DELETES,
    },
  }),
  deleteMany: createRoute({
    method: 'post',
    path: '/v1/mailboxes/{address}/messages/delete',
    tags: ['mailbox'],
    summary: `DELE of many: delete the messages with these ids, up to ${MAX_DELETE_MANY} a request`,
    description:
      'Each message goes as with `DELETE …/messages/{id}` (entry, counters and deletion record together), ' +
      'in as few transactions as the store allows. An id with no message is listed in `notFound`, not an error.',
    security: SECURITY,
    middleware: [bodyLimit({ maxSize: MAX_DELETE_MANY_BODY_BYTES })],
    request: {
      params: mailboxParamsSchema,
      query: viewQuerySchema,
      body: { required: true, content: { 'application/json': { schema: deleteManyBodySchema } } },
    },
    responses: {
      200: {
        description: 'Which were deleted, and which were not there',
        content: { 'application/json': { schema: deleteManyResultSchema } },
      },
      ...MAILBOX_ERRORS,
      400: badRequest('invalid_address', 'invalid_json', 'invalid_request'),
      413: jsonError(
        `The body is larger than ${MAX_DELETE_MANY_BODY_BYTES / 1024} KiB (\`payload_too_large\`)`,
      ),
      415: jsonError(
        'The body is not application/json, or is compressed (`Content-Encoding`) (`unsupported_media_type`)',
      ),
      ...STORAGE_FULL_FOR_DELETES,
    },
  }),
  deleteMessage: createRoute({
    method: 'delete',
    path: '/v1/mailboxes/{address}/messages/{id}',
    tags: ['message'],
    summary: 'DELE: delete the message (counters updated in the same transaction)',
    security: SECURITY,
    request: { params: messageParamsSchema, query: viewQuerySchema, headers: IF_MATCH_MESSAGE },
    responses: {
      204: { description: 'Deleted' },
      ...MESSAGE_ERRORS,
      ...PRECONDITION_FAILED,
      ...STORAGE_FULL_FOR_DELETES,
    },
  }),
  raw: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}/messages/{id}/raw',
    tags: ['message'],
    summary: 'RETR: the stored message, byte for byte (or one byte range of it)',
    security: SECURITY,
    request: { params: messageParamsSchema, query: viewQuerySchema, headers: RANGE_HEADERS },
    responses: {
      200: {
        description: 'The raw message',
        headers: {
          ETag: header('The message id, quoted: the bytes never change'),
          'Cache-Control': header('`private, max-age=31536000, immutable`'),
          'Accept-Ranges': header('`bytes`: a `Range` is answered'),
          Vary: VARY,
        },
        content: { 'message/rfc822': { schema: BINARY } },
      },
      ...rangeResponses('message/rfc822'),
      304: {
        description: 'Not modified (`If-None-Match`)',
        headers: { ETag: header('As on the 200'), Vary: VARY },
      },
      307: redirect('The message'),
      ...MESSAGE_ERRORS,
      ...PRECONDITION_FAILED,
    },
  }),
  top: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}/messages/{id}/top',
    tags: ['message'],
    summary: 'TOP: headers, the blank line, then the first N body lines (RFC 1939 §7)',
    security: SECURITY,
    request: { params: messageParamsSchema, query: topQuerySchema },
    responses: {
      200: {
        description: 'Bytes as stored (no dot-stuffing)',
        content: { 'message/rfc822': { schema: BINARY } },
      },
      307: redirect('The answer is the whole message, and it'),
      ...MESSAGE_ERRORS,
      422: jsonError(
        'The answer would be larger than one response can carry (`top_too_large`): ask for fewer lines',
      ),
    },
  }),
  part: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}/messages/{id}/parts/{partId}',
    tags: ['message'],
    summary:
      'One decoded attachment (IMAP BODY[section]; a byte range of it with `Range`: BODY[section]<partial>)',
    security: SECURITY,
    request: { params: partParamsSchema, query: viewQuerySchema, headers: RANGE_HEADERS },
    responses: {
      200: {
        description:
          'The decoded bytes, with the part content type and a Content-Disposition naming the file',
        headers: {
          ETag: header("The bytes' sha256 and a hash of the headers below, quoted"),
          'Cache-Control': header('`private, no-cache`: revalidate with `If-None-Match`'),
          'Content-Disposition': header(
            '`attachment` or `inline`, with the filename (cut to 255 bytes; path separators and control characters replaced, bidirectional overrides and isolates left out)',
          ),
          'Accept-Ranges': header('`bytes`: a `Range` is answered'),
          Vary: VARY,
        },
        content: { '*/*': { schema: BINARY } },
      },
      ...rangeResponses('*/*'),
      304: {
        description: 'Not modified (`If-None-Match`)',
        headers: { ETag: header('As on the 200'), Vary: VARY },
      },
      307: redirect('The part'),
      ...MESSAGE_ERRORS,
      ...PRECONDITION_FAILED,
      400: badRequest('invalid_address', 'invalid_id', 'invalid_part_id', 'invalid_request'),
      404: jsonError('No such message or part (`message_not_found`, `part_not_found`)'),
    },
  }),
  wait: createRoute({
    method: 'get',
    path: '/v1/mailboxes/{address}/wait',
    tags: ['mailbox'],
    summary: 'Long-poll: answers as soon as a message is stored after `cursor` (or newer than `after`)',
    security: SECURITY,
    request: { params: mailboxParamsSchema, query: waitQuerySchema },
    responses: {
      200: {
        description: 'New messages; the `Mail-Relay-Cursor` header repeats `cursor`',
        headers: z.object({ [CURSOR_HEADER]: z.string() }),
        content: { 'application/json': { schema: waitResultSchema } },
      },
      204: {
        description: 'Nothing new before the timeout; the `Mail-Relay-Cursor` header is where to go on from',
        headers: z.object({ [CURSOR_HEADER]: z.string() }),
      },
      ...MAILBOX_ERRORS,
      400: badRequest('invalid_address', 'invalid_cursor', 'invalid_id', 'invalid_request'),
    },
  }),
};

// ---- helpers -------------------------------------------------------------------------------

function toListItem(e: MessageEntry): ListItem {
  return {
    id: e.id,
    size: e.size,
    crlfSize: e.crlfSize,
    receivedAt: e.receivedAt,
    from: e.from,
    to: e.to,
    subject: e.subject,
    snippet: e.snippet,
    seen: e.seen,
    hasAttachments: e.hasAttachments,
    recipient: e.recipient,
    plusTag: e.plusTag ?? null,
  };
}

/**
 * A page of the index's mailboxes, one item per address: a sent view's key (`<address>/sent`, which
 * no address can be) counts as its owner's `sent`, and an owner with sent mail only is listed too.
 * Sorted by address.
 */
function byOwner(stats: readonly { address: string; messages: number; bytes: number }[]): MailboxListItem[] {
  const items = new Map<string, MailboxListItem>();
  const itemOf = (address: string): MailboxListItem => {
    let item = items.get(address);
    if (item === undefined) {
      item = { address, messages: 0, bytes: 0, sent: { messages: 0, bytes: 0 } };
      items.set(address, item);
    }
    return item;
  };
  for (const s of stats) {
    const slash = s.address.indexOf('/');
    if (slash < 0) Object.assign(itemOf(s.address), { messages: s.messages, bytes: s.bytes });
    else if (s.address === sentMailboxKey(s.address.slice(0, slash))) {
      itemOf(s.address.slice(0, slash)).sent = { messages: s.messages, bytes: s.bytes };
    }
  }
  return [...items.values()].sort((a, b) => compareKeys(a.address, b.address));
}

/**
 * `capList` for list items, settling most pages by a bound before measuring any item. Keeps at least
 * one item (an entry's text fields are cut at delivery, so one always fits a response), so that
 * a page cut short always moves its cursor on.
 */
function capListItems(items: ListItem[], maxBytes: number): { value: ListItem[]; truncated: boolean } {
  // At most 7 bytes per UTF-16 unit (json-cap.ts), plus the keys, id, date, numbers and flags.
  let bound = 2;
  for (const i of items) {
    const chars = i.from.length + i.to.length + i.subject.length + i.snippet.length + i.recipient.length;
    bound += (chars + (i.plusTag?.length ?? 0)) * 7 + 400;
  }
  if (bound <= maxBytes) return { value: items, truncated: false };
  const cut = capList(items, maxBytes);
  const first = items[0];
  if (cut.value.length === 0 && first !== undefined) return { value: [first], truncated: items.length > 1 };
  return { value: cut.value, truncated: cut.truncated };
}

type AddressLists = Pick<ParsedSummary, 'from' | 'to' | 'cc' | 'replyTo'>;

/**
 * The four address lists of a message within `maxBytes` together (json-cap.ts), filled in the order
 * a reader needs them: the sender, where replies go, then the recipients.
 */
function capAddresses(
  lists: Partial<AddressLists> | null,
  maxBytes: number,
): { value: AddressLists; truncated: boolean } {
  // {"from":,"to":,"cc":,"replyTo":} with its quotes escaped as in wireBytes.
  let left = maxBytes - 48;
  let truncated = false;
  const take = (list: readonly AddressEntry[]) => {
    const cut = capList(list, Math.max(2, left));
    left -= cut.bytes;
    truncated ||= cut.truncated;
    return cut.value;
  };
  const from = take(lists?.from ?? []);
  const replyTo = take(lists?.replyTo ?? []);
  const to = take(lists?.to ?? []);
  const cc = take(lists?.cc ?? []);
  return { value: { from, to, cc, replyTo }, truncated };
}

/**
 * The index (and blob) key of a view of an authorized mailbox. The sent view is a key no address
 * can name (docs/adr/0009-sent-view.md), so the only way to it is through its owner's address,
 * behind the same authorization.
 */
function viewKey(mailbox: string, view: MailboxView): string {
  return view === 'sent' ? sentMailboxKey(mailbox) : mailbox;
}

function preconditionFailed(): HttpStatusError {
  return new HttpStatusError(412, 'precondition_failed', 'If-Match does not hold for this resource');
}

function messageNotFound(): NotFoundError {
  return new NotFoundError('no such message in this mailbox', 'message_not_found');
}

/**
 * A Buffer as a response body without copying. Node Buffers are backed by an ArrayBuffer (never a
 * SharedArrayBuffer), which is what the Fetch API's BodyInit asks for.
 */
function asBody(buf: Buffer): Uint8Array<ArrayBuffer> {
  return buf as Uint8Array<ArrayBuffer>;
}

/** Resolves after `ms`, or at once when `signal` aborts; never rejects. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

// ---- the app -------------------------------------------------------------------------------

/**
 * Builds the read side of the API on the shared shell (shell.ts): every request under
 * `/v1/mailboxes` needs `Authorization: Bearer <token>`; errors are `{error: {code, message}}`.
 */
export function createMailboxApp(deps: MailboxAppDeps): ApiApp {
  const { index, blobs } = deps;
  const configuredMailboxes = [...(deps.configuredMailboxes ?? [])];
  const redirectBytes = deps.rawRedirectBytes ?? DEFAULT_RAW_REDIRECT_BYTES;
  const presignSeconds = deps.presignSeconds ?? DEFAULT_PRESIGN_SECONDS;
  const bodyMaxBytes = deps.bodyMaxBytes ?? DEFAULT_BODY_MAX_BYTES;
  const listMaxBytes = deps.listMaxBytes ?? DEFAULT_LIST_MAX_BYTES;
  const pollMs = deps.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  const logError = deps.logError ?? ((err: unknown) => console.error('mail-relay api: internal error', err));
  if (!Number.isSafeInteger(redirectBytes) || redirectBytes < 0) {
    throw new RangeError(
      `rawRedirectBytes must be a non-negative integer, got ${String(deps.rawRedirectBytes)}`,
    );
  }
  // A stored body is cut at SUMMARY_BODY_MAX_CHARS: answering more than that would not say `truncated`.
  if (!Number.isSafeInteger(bodyMaxBytes) || bodyMaxBytes < 2 || bodyMaxBytes > SUMMARY_BODY_MAX_CHARS) {
    throw new RangeError(
      `bodyMaxBytes must be an integer from 2 to ${SUMMARY_BODY_MAX_CHARS}, got ${String(deps.bodyMaxBytes)}`,
    );
  }
  if (!Number.isSafeInteger(listMaxBytes) || listMaxBytes < 2) {
    throw new RangeError(`listMaxBytes must be an integer of at least 2, got ${String(deps.listMaxBytes)}`);
  }
  if (!Number.isSafeInteger(presignSeconds) || presignSeconds < 1) {
    throw new RangeError(`presignSeconds must be a positive integer, got ${String(deps.presignSeconds)}`);
  }
  if (!Number.isFinite(pollMs) || pollMs <= 0) {
    throw new RangeError(`pollIntervalMs must be positive, got ${String(deps.pollIntervalMs)}`);
  }

  const app = createApiShell({ index, logError });

  const getEntry = async (mailbox: string, id: string): Promise<MessageEntry> => {
    const entry = await index.get(mailbox, id);
    if (entry === null) throw messageNotFound();
    return entry;
  };

  /**
   * `If-Match` on PATCH and DELETE of a message, evaluated before either changes anything. The
   * message's JSON has no ETag, so only `*` holds while it exists; for a message that does not, the
   * answer is the 404 it would be without the header (RFC 9110 §13.2.1).
   */
  const checkIfMatchMessage = async (c: Context<ApiEnv>, mailbox: string, id: string): Promise<void> => {
    const ifMatch = c.req.header('If-Match');
    if (ifMatchHolds(ifMatch, null)) return;
    if ((await index.get(mailbox, id)) !== null) throw preconditionFailed();
  };

  const readSummary = async (mailbox: string, id: string) => {
    const bytes = await blobs.get(mailboxKeys.summary(mailbox, id));
    // Deleted between the index read and this one: the message is gone.
    if (bytes === null) throw messageNotFound();
    return storedSummarySchema.parse(JSON.parse(bytes.toString('utf8')));
  };

  /**
   * DELE: the index entry is the commit point (counters change with it); blobs follow. A crash in
   * between leaves unreachable blobs, never an entry without its bytes. False when there was no entry.
   * A DELETE of a message whose deletion the index remembers removes its blobs again (a no-op when
   * they are gone): the DELETE before it may have committed and lost its answer (a 500, or the SDK's
   * own retry then finding nothing to delete) before it removed them, and the client's retry is the
   * one chance to finish it. Not for an id the index never held: that may be a delivery between its
   * blobs and its entry.
   */
  const dele = async (mailbox: string, id: string): Promise<boolean> => {
    if ((await index.delete(mailbox, id)) === null) {
      if ((await index.deliveryState(mailbox, id)) === 'deleted') {
        await deleteMessageBlobs(blobs, mailbox, id).catch(logError);
      }
      return false;
    }
    try {
      await deleteMessageBlobs(blobs, mailbox, id);
    } catch (err) {
      logError(err);
    }
    return true;
  };

  /**
   * `dele` for several ids, in one `deleteMany` of the index; then the blobs of each, and again
   * those of an id whose deletion the index remembers (as `dele` does).
   */
  const deleMany = async (mailbox: string, ids: readonly string[]) => {
    const unique = [...new Set(ids)];
    const entries = await index.deleteMany(mailbox, unique);
    const deleted = unique.filter((_, i) => entries[i] !== null);
    const notFound = unique.filter((_, i) => entries[i] === null);
    const work = [
      ...deleted.map((id) => () => deleteMessageBlobs(blobs, mailbox, id)),
      ...notFound.map((id) => async () => {
        if ((await index.deliveryState(mailbox, id)) === 'deleted')
          await deleteMessageBlobs(blobs, mailbox, id);
      }),
    ];
    const worker = async () => {
      for (let task = work.shift(); task !== undefined; task = work.shift()) await task().catch(logError);
    };
    await Promise.all(Array.from({ length: DELETE_ALL_CONCURRENCY }, worker));
    return { deleted, notFound };
  };

  const presignRedirect = async (
    c: Context<ApiEnv>,
    key: string,
    contentType: string,
    disposition: string,
  ): Promise<Response> => {
    const url = await blobs.presign(key, {
      expiresIn: presignSeconds,
      contentType,
      contentDisposition: disposition,
      // Hono answers HEAD with the GET route; the client will HEAD the Location too.
      method: c.req.method === 'HEAD' ? 'HEAD' : 'GET',
    });
    return c.body(null, 307, { Location: url, 'Cache-Control': NO_STORE });
  };

  /**
   * A message's or a part's stored bytes (`size` of them, under the strong ETag in `headers`): whole
   * (`200`), or for a GET with a `Range` the one range asked for (`206`, read from the store as a
   * range, not whole) or `416` (RFC 9110 §14): a download resumed, a media player seeking, IMAP's
   * partial fetch. `onMissing` throws the right 404 when the blob went (a DELE since the entry was read).
   */
  const answerBytes = async (
    c: Context<ApiEnv>,
    key: string,
    size: number,
    headers: Readonly<Record<string, string>> & { readonly ETag: string },
    onMissing: () => Promise<never>,
  ): Promise<Response> => {
    const asked = rangeOfRequest(c, size, headers.ETag);
    if (asked.kind === 'unsatisfiable') {
      const refusal = rangeNotSatisfiable(size, NO_STORE);
      return c.json(refusal.body, 416, refusal.headers);
    }
    if (asked.kind === 'whole' && c.req.method === 'HEAD') {
      // The GET's headers without reading the bytes (hono drops the body of a HEAD): S3's HeadObject
      // rather than a GetObject of up to 4 MiB, and still a 404 when the message went meanwhile.
      if ((await blobs.head(key)) === null) return onMissing();
      return c.body(null, 200, { ...headers, 'Content-Length': String(size), 'Accept-Ranges': 'bytes' });
    }
    if (asked.kind === 'whole') {
      const bytes = await blobs.get(key);
      if (bytes === null) return onMissing();
      return c.body(asBody(bytes), 200, {
        ...headers,
        'Content-Length': String(bytes.length),
        'Accept-Ranges': 'bytes',
      });
    }
    const stream = await blobs.getStream(key, { start: asked.start, end: asked.end });
    if (stream === null) return onMissing();
    const bytes = Buffer.concat(await stream.toArray());
    return c.body(asBody(bytes), 206, {
      ...headers,
      'Content-Length': String(bytes.length),
      'Content-Range': `bytes ${asked.start}-${asked.start + bytes.length - 1}/${size}`,
      'Accept-Ranges': 'bytes',
    });
  };

  // ---- meta ----

  app.openapi(routes.health, (c) => c.json({ status: 'ok' as const }, 200));
  mountInbox(app, blobs);

  app.openapi(routes.openapi, (c) =>
    c.json(
      app.getOpenAPI31Document({
        openapi: '3.1.0',
        info: {
          title: API_TITLE,
          version: API_VERSION,
          description:
            'Mailboxes over HTTP with POP3 semantics (STAT, LIST/UIDL, RETR, TOP, DELE) and IMAP partial fetch. ' +
            'Errors are `{error: {code, message}}` with stable codes.',
        },
        servers: [{ url: new URL(c.req.url).origin }],
      }) as unknown as Record<string, unknown>,
      200,
    ),
  );

  app.openapi(routes.me, async (c) => {
    const token = await authenticate(index, c.req.header('Authorization'));
    return c.json(
      { admin: token.admin, mailbox: token.mailbox, label: token.label ?? null, createdAt: token.createdAt },
      200,
    );
  });

  // ---- mailboxes ----

  app.openapi(routes.listMailboxes, async (c) => {
    const q = c.req.valid('query');
    // A page holds whole owners (core/mailbox-pages.ts): a sent view is never on another page than its address.
    const limit = q.limit ?? DEFAULT_LIST_LIMIT;
    const page = await index.listMailboxes({ limit, cursor: q.cursor });
    const listed = withListedOwners(
      { owners: byOwner(page.items), nextCursor: page.nextCursor },
      (item) => item.address,
      configuredMailboxes,
      (address) => ({ address, messages: 0, bytes: 0, sent: { messages: 0, bytes: 0 } }),
      limit,
      q.cursor,
    );
    return c.json({ items: listed.owners, nextCursor: listed.nextCursor }, 200);
  });

  app.openapi(routes.stat, async (c) => {
    const mailbox = c.get('mailbox');
    const stat = await index.stat(viewKey(mailbox, c.req.valid('query').view));
    // The address the client named, not the internal key of its sent view.
    return c.json({ ...stat, address: mailbox }, 200);
  });

  app.openapi(routes.list, async (c) => {
    const q = c.req.valid('query');
    const page = await index.list(viewKey(c.get('mailbox'), q.view), {
      limit: q.limit ?? DEFAULT_LIST_LIMIT,
      cursor: q.cursor,
      unseen: q.unseen === 'true' ? true : undefined,
      q: q.q === undefined || q.q === '' ? undefined : q.q,
    });
    const items = capListItems(page.items.map(toListItem), listMaxBytes);
    const last = items.value.at(-1);
    // Cut short: the rest follows from the last item kept (a page of none cannot be: see capListItems).
    const nextCursor = items.truncated && last !== undefined ? encodeCursor(last.id) : page.nextCursor;
    return c.json({ items: items.value, nextCursor }, 200);
  });

  // ---- one message ----

  app.openapi(routes.getMessage, async (c) => {
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    const { id } = c.req.valid('param');
    const entry = await getEntry(mailbox, id);
    const summary = await readSummary(mailbox, id);
    const parsed = summary.parseFailed ? null : summary;
    const text = parsed?.text == null ? null : capJsonString(parsed.text, bodyMaxBytes);
    const html = parsed?.html == null ? null : capJsonString(parsed.html, bodyMaxBytes);
    // A message not parsed whole has what could be read of its own header fields (maybe nothing).
    const headers = capHeaders(summary.headers ?? [], DEFAULT_HEADERS_MAX_BYTES);
    const addresses = capAddresses(summary, DEFAULT_ADDRESSES_MAX_BYTES);
    const attachments = capList(parsed?.attachments ?? [], DEFAULT_ATTACHMENTS_MAX_BYTES);
    const detail: MessageDetail = {
      ...toListItem(entry),
      verdicts: entry.verdicts,
      tags: [...entry.tags],
      quarantineReasons: entry.quarantineReasons === undefined ? null : [...entry.quarantineReasons],
      parseFailed: summary.parseFailed,
      parseError: summary.parseFailed ? summary.parseError : null,
      headers: headers.value,
      addresses: addresses.value,
      date: summary.date ?? null,
      messageId: summary.messageId ?? null,
      text: text?.value ?? null,
      html: html?.value ?? null,
      truncated: {
        text: text?.truncated === true,
        html: html?.truncated === true,
        headers: headers.truncated,
        addresses: addresses.truncated,
        attachments: attachments.truncated,
      },
      attachments: attachments.value,
    };
    return c.json(detail, 200);
  });

  app.openapi(routes.patchMessage, async (c) => {
    const { id } = c.req.valid('param');
    const { seen } = c.req.valid('json');
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    await checkIfMatchMessage(c, mailbox, id);
    const entry = await index.setSeen(mailbox, id, seen);
    if (entry === null) throw messageNotFound();
    return c.json(toListItem(entry), 200);
  });

  app.openapi(routes.deleteMessage, async (c) => {
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    const { id } = c.req.valid('param');
    await checkIfMatchMessage(c, mailbox, id);
    if (!(await dele(mailbox, id))) throw messageNotFound();
    return c.body(null, 204);
  });

  app.openapi(routes.deleteAll, async (c) => {
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    // One page, so that a request stays short in Lambda however large the mailbox: `more` says
    // ask again. Mail stored while this runs is not in the page, and stays.
    const page = await index.list(mailbox, { limit: MAX_LIST_LIMIT });
    // Each as DELETE …/messages/{id} does it (one deleted meanwhile by another client is not counted).
    const { deleted } = await deleMany(
      mailbox,
      page.items.map((e) => e.id),
    );
    return c.json({ deleted: deleted.length, more: page.nextCursor !== null }, 200);
  });

  app.openapi(routes.deleteMany, async (c) => {
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    return c.json(await deleMany(mailbox, c.req.valid('json').ids), 200);
  });

  app.openapi(routes.raw, async (c) => {
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    const { id } = c.req.valid('param');
    const entry = await getEntry(mailbox, id);
    const etag = `"${id}"`;
    if (!ifMatchHolds(c.req.header('If-Match'), etag)) throw preconditionFailed();
    if (matchesEtag(c.req.header('If-None-Match'), etag)) {
      return c.body(null, 304, { ETag: etag, 'Cache-Control': IMMUTABLE_CACHE_CONTROL });
    }
    const key = mailboxKeys.raw(mailbox, id);
    if (entry.size > redirectBytes) {
      return presignRedirect(c, key, 'message/rfc822', contentDisposition('attachment', `${id}.eml`));
    }
    return answerBytes(
      c,
      key,
      entry.size,
      {
        'Content-Type': 'message/rfc822',
        'Content-Security-Policy': SANDBOX_CSP,
        ETag: etag,
        'Cache-Control': IMMUTABLE_CACHE_CONTROL,
      },
      async () => {
        throw messageNotFound();
      },
    );
  });

  app.openapi(routes.top, async (c) => {
    const { id } = c.req.valid('param');
    const { lines, view } = c.req.valid('query');
    const mailbox = viewKey(c.get('mailbox'), view);
    const entry = await getEntry(mailbox, id);
    const key = mailboxKeys.raw(mailbox, id);
    const top =
      entry.size === 0
        ? { kind: 'bytes' as const, body: Buffer.alloc(0) }
        : await readTop(blobs, key, entry.size, lines, redirectBytes);
    if (top === null) throw messageNotFound();
    if (top.kind === 'whole-too-large') {
      return presignRedirect(c, key, 'message/rfc822', contentDisposition('attachment', `${id}.eml`));
    }
    if (top.kind === 'too-large') {
      throw new HttpStatusError(
        422,
        'top_too_large',
        `TOP ${lines} is ${top.bytes} bytes, more than one response carries (${redirectBytes}); ask for fewer lines or use /raw`,
      );
    }
    return c.body(asBody(top.body), 200, {
      'Content-Type': 'message/rfc822',
      'Content-Security-Policy': SANDBOX_CSP,
      'Content-Length': String(top.body.length),
    });
  });

  app.openapi(routes.part, async (c) => {
    const mailbox = viewKey(c.get('mailbox'), c.req.valid('query').view);
    const { id, partId } = c.req.valid('param');
    await getEntry(mailbox, id);
    const summary = await readSummary(mailbox, id);
    const attachment = summary.parseFailed ? undefined : summary.attachments.find((a) => a.partId === partId);
    if (attachment === undefined) throw new NotFoundError('no such part in this message', 'part_not_found');
    const contentType = withCharset(safeContentType(attachment.contentType), attachment.charset);
    // A forwarded message has no name of its own: `.eml` lets the mail program open it.
    const filename = attachment.filename ?? `part-${partId}${contentType === 'message/rfc822' ? '.eml' : ''}`;
    const disposition = contentDisposition(
      attachment.disposition === 'inline' ? 'inline' : 'attachment',
      filename,
    );
    // The bytes' hash, and a short one of the headers: a reparse that changes either changes it.
    const headersHash = createHash('sha256')
      .update(`${contentType}\n${disposition}`)
      .digest('hex')
      .slice(0, 16);
    const etag = `"${attachment.sha256}-${headersHash}"`;
    if (!ifMatchHolds(c.req.header('If-Match'), etag)) throw preconditionFailed();
    if (matchesEtag(c.req.header('If-None-Match'), etag)) {
      return c.body(null, 304, { ETag: etag, 'Cache-Control': REVALIDATE_CACHE_CONTROL });
    }
    const key = mailboxKeys.part(mailbox, id, partId);
    if (attachment.size > redirectBytes) {
      // The presigned URL serves from S3's origin, where no Content-Security-Policy can be set: an
      // HTML or SVG part opened inline there would run. As a download it does not (an <img> or a
      // fetch ignores the disposition).
      return presignRedirect(c, key, contentType, contentDisposition('attachment', filename));
    }
    return answerBytes(
      c,
      key,
      attachment.size,
      {
        'Content-Type': contentType,
        'Content-Disposition': disposition,
        ETag: etag,
        'Cache-Control': REVALIDATE_CACHE_CONTROL,
        // Parts are whatever the sender put in; a browser opening one must not run it with our origin.
        'Content-Security-Policy': SANDBOX_CSP,
      },
      async () => {
        // Deleted (DELE) since the summary was read: the message is gone, not just this part.
        if ((await index.get(mailbox, id)) === null) throw messageNotFound();
        throw new NotFoundError('no such part in this message', 'part_not_found');
      },
    );
  });

  // ---- long-poll ----

  /** Items newer than `after`, newest first, at most MAX_WAIT_ITEMS. */
  const newerThan = async (
    mailbox: string,
    after: string,
  ): Promise<{ items: ListItem[]; truncated: boolean }> => {
    const head = await index.list(mailbox, { limit: 1 });
    const newest = head.items[0];
    if (newest === undefined || newest.id <= after) return { items: [], truncated: false };
    const page = await index.list(mailbox, { limit: Math.min(MAX_WAIT_ITEMS, MAX_LIST_LIMIT) });
    const items = page.items.filter((e) => e.id > after);
    let truncated = false;
    if (items.length === page.items.length && page.nextCursor !== null) {
      const next = await index.list(mailbox, { limit: 1, cursor: page.nextCursor });
      truncated = next.items.some((e) => e.id > after);
    }
    const capped = capListItems(items.map(toListItem), listMaxBytes);
    return { items: capped.value, truncated: truncated || capped.truncated };
  };

  /**
   * Items stored after commit `cursor` (at most WAIT_COMMIT_PAGE, and `listMaxBytes`), newest
   * first, with the cursor after the last one kept: what is cut comes in the next answer.
   */
  const storedAfter = async (
    mailbox: string,
    cursor: number,
  ): Promise<{ items: ListItem[]; truncated: boolean; cursor: string }> => {
    const page = await index.committedAfter(mailbox, cursor, WAIT_COMMIT_PAGE);
    // Cut in commit order, so the cursor can stand after a prefix.
    const capped = capListItems(page.items.map(toListItem), listMaxBytes);
    const kept = capped.value.length;
    const next = capped.truncated ? (page.commits[kept - 1] ?? cursor) : page.cursor;
    const items = capped.value.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    return { items, truncated: page.truncated || capped.truncated, cursor: String(next) };
  };

  app.openapi(routes.wait, async (c) => {
    const query = c.req.valid('query');
    if (query.after !== undefined && query.cursor !== undefined) {
      throw new ValidationError('give `after` or `cursor`, not both', ['after', 'cursor'], 'invalid_request');
    }
    // Nothing wakes a sent view's waiters (POST …/send runs in this process, or in another Lambda),
    // so that long-poll finds new copies by polling the index.
    const mailbox = viewKey(c.get('mailbox'), query.view);
    // Timed by the monotonic clock: a wall clock stepped back an hour (NTP, a host's sleep) would
    // otherwise hold the request for that hour, and one stepped forward would end it at once.
    const deadline = performance.now() + (query.timeout ?? MAX_WAIT_SECONDS) * 1000;
    const requestSignal =
      deps.stopping === undefined ? c.req.raw.signal : AbortSignal.any([c.req.raw.signal, deps.stopping]);
    // Where this answer leaves a client that goes on with `cursor`. With `after`, the commit point
    // at the start: going on from there repeats what `after` found (ids tell them apart) but
    // cannot skip what `after` cannot see.
    const counter = await index.commitCursor(mailbox);
    // A cursor past the counter cannot be this mailbox's (or this view's): it would wait for ever.
    if (query.cursor !== undefined && Number(query.cursor) > counter) {
      throw new ValidationError(
        'this cursor is not one of this mailbox (or view): start again without one',
        ['cursor'],
        'invalid_cursor',
      );
    }
    // Moves past commits whose mail is gone by the time it is read (nothing to return for them).
    let position = query.cursor !== undefined ? Number(query.cursor) : counter;
    const start = position;
    const { after } = query;
    const nothing = () => c.body(null, 204, { [CURSOR_HEADER]: String(position) });
    let waited = false;
    for (;;) {
      // The client left, or the server is stopping (and with it, soon, the index): nothing more to read.
      if (requestSignal.aborted) return nothing();
      const round = new AbortController();
      const signal = AbortSignal.any([round.signal, requestSignal]);
      // Registered before the index read, so a delivery committing in between still wakes us.
      const woken = deps.waiter?.wait(mailbox, signal);
      try {
        const found =
          after === undefined
            ? await storedAfter(mailbox, position)
            : { ...(await newerThan(mailbox, after)), cursor: String(start) };
        if (found.items.length > 0) {
          // Authenticated when the request came in, up to 25 s ago: no mail for a token revoked since.
          if (waited) await reauthenticate(index, c.get('token'));
          c.header(CURSOR_HEADER, found.cursor);
          return c.json(found, 200);
        }
        if (after === undefined) {
          position = Number(found.cursor);
          // Only deleted mail in a full page: read on at once.
          if (found.truncated) continue;
        }
        const left = deadline - performance.now();
        if (left <= 0 || requestSignal.aborted) return nothing();
        const interval = deps.waiter === undefined ? pollMs : WAITER_FALLBACK_POLL_MS;
        await Promise.race([sleep(Math.min(left, interval), signal), ...(woken ? [woken] : [])]);
        waited = true;
      } finally {
        round.abort();
      }
    }
  });

  if (deps.documentSend !== undefined) documentSendRoute(app, deps.documentSend.maxSendBytes);

  return app;
}
