/**
 * The HTTP API's zod schemas: the source of the request validation, of the response types and of
 * the OpenAPI document (`GET /v1/openapi.json`). Names end in `Schema`; types are inferred.
 */
// Loaded first for its side effect: it gives zod's schemas the `.openapi()` used below (extendZodWithOpenApi).
import '@hono/zod-openapi';
import * as z from 'zod';
import { canonicalAddress, isAddress } from '../core/config.ts';
import { addressEntrySchema, attachmentSchema, headerEntrySchema } from '../core/message.ts';
import { MAX_DELETE_MANY } from '../ports/mailbox-index.ts';
import { MAX_TOP_LINES } from './top.ts';

/** LIST page size bounds (issue 3): large enough for a sync, small enough for one Lambda response. */
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LIST_LIMIT = 100;
/** API Gateway's integration timeout is 30 s; a long-poll must answer well before it. */
export const MAX_WAIT_SECONDS = 25;
/**
 * At most this many items in a long-poll answer by `after`; a client that fell further behind pages
 * with LIST. An answer by `cursor` carries at most 100 (mailbox-app.ts, WAIT_COMMIT_PAGE) and says `truncated`.
 */
export const MAX_WAIT_ITEMS = 1000;
/** Longest `q`: a substring search on from/to/subject needs no more, and it bounds the scan's cost. */
export const MAX_QUERY_CHARS = 200;
/** Decoded parts are numbered `1`, `2`, … by the parser; mailparser allows at most 1000 nodes. */
export const PART_ID_RE = /^\d{1,4}$/;

// ---- errors ------------------------------------------------------------------------------

export const errorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ description: 'Stable machine-readable code', example: 'invalid_id' }),
      message: z.string().openapi({ description: 'Human-readable explanation; may change between versions' }),
    }),
  })
  .openapi('Error');
export type ErrorBody = z.infer<typeof errorSchema>;

// ---- parameters --------------------------------------------------------------------------

/**
 * ULID_RE in either case, without the `i` flag: the OpenAPI document carries a regex as its source
 * only (JSON Schema patterns have no flags; the generator wrote `…$/i`, a pattern no id matches).
 */
export const ULID_ANY_CASE_RE = /^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$/;

/**
 * Addresses arrive in any case, an internationalized domain in either form, a local part maybe quoted:
 * taken in their canonical form (`canonicalAddress`) before the check, as everywhere in the relay.
 */
const addressParamSchema = z
  .string()
  .refine((s) => isAddress(canonicalAddress(s)), {
    message: 'must be a mailbox address such as alice@example.com',
  })
  .openapi({
    param: { name: 'address', in: 'path' },
    description:
      'The mailbox address (case-insensitive; an internationalized domain in either form), percent-encoded as a path segment',
    example: 'alice@example.com',
    format: 'idn-email',
    // What the address check needs at least: a local part, `@`, and a domain without `@`, `/` or spaces.
    pattern: '^.+@[^@/\\s]+$',
  });

/**
 * ULIDs are case-insensitive (https://github.com/ulid/spec): ids are handed out in upper case, but
 * a Message-ID the relay composes carries the id in lower case, and a user may copy it from there.
 */
const idParamSchema = z
  .string()
  .regex(ULID_ANY_CASE_RE, 'must be a message id (26-character ULID)')
  .transform((s) => s.toUpperCase())
  .openapi({
    param: { name: 'id', in: 'path' },
    description: 'Message id (ULID, case-insensitive; sorts by receipt time)',
    example: '01JNMR8Z1X0000000000000000',
  });

const partIdParamSchema = z
  .string()
  .regex(PART_ID_RE, 'must be a part id such as 1')
  .openapi({
    param: { name: 'partId', in: 'path' },
    description: 'The `partId` of an attachment in the message',
    example: '1',
  });

export const mailboxParamsSchema = z.object({ address: addressParamSchema });
export const messageParamsSchema = z.object({ address: addressParamSchema, id: idParamSchema });
export const partParamsSchema = z.object({
  address: addressParamSchema,
  id: idParamSchema,
  partId: partIdParamSchema,
});

const booleanQuerySchema = z.enum(['true', 'false']);

/** The views of a mailbox: what it received, and the copies of what its owner sent (docs/adr/0009-sent-view.md). */
export const MAILBOX_VIEWS = ['inbox', 'sent'] as const;
export type MailboxView = (typeof MAILBOX_VIEWS)[number];

const viewSchema = z.enum(MAILBOX_VIEWS).default('inbox').openapi({
  description:
    '`inbox` (received mail) or `sent` (copies of mail sent through `POST …/send`); the same token reads both',
  example: 'sent',
});

/** `?view=` alone, for the endpoints that take no other query parameter. */
export const viewQuerySchema = z.object({ view: viewSchema });

/**
 * A decimal integer in a query string, `min`..`max`: `0x10`, `1e2` or ` 5`, which a plain number
 * coercion would take for 16, 100 and 5, are refused. Documented as what it is, an integer and its
 * bounds (a query string is text either way): not as a string with a digit pattern, which a
 * generated client would type as a string and whose bounds it would never learn.
 */
function queryInt(min: number, max: number) {
  return z
    .string({
      error: (issue) =>
        issue.input === undefined ? 'required: a decimal integer' : 'must be a decimal integer',
    })
    .regex(/^\d{1,300}$/, 'must be a decimal integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .openapi({ type: 'integer', minimum: min, maximum: max });
}

/** `limit` of a paged list (LIST and the mailbox list): one way to page through both. */
const limitQuerySchema = queryInt(1, MAX_LIST_LIMIT)
  .optional()
  .openapi({
    description: `Page size, 1..${MAX_LIST_LIMIT} (default ${DEFAULT_LIST_LIMIT})`,
    example: 50,
    default: DEFAULT_LIST_LIMIT,
  });

/** `cursor` of a paged list: the `nextCursor` of the page before, as it came. */
const cursorQuerySchema = z
  .string()
  .min(1)
  .max(2048)
  .optional()
  .openapi({ description: 'Opaque `nextCursor` from the previous page' });

export const listQuerySchema = z.object({
  view: viewSchema,
  limit: limitQuerySchema,
  cursor: cursorQuerySchema,
  unseen: booleanQuerySchema.optional().openapi({ description: 'Only messages not marked seen' }),
  q: z
    .string()
    .max(MAX_QUERY_CHARS)
    .optional()
    .openapi({
      description:
        'Substring of from, to or subject, in any case and Unicode form (NFKC: `café` composed or as `e` + ' +
        'U+0301, `test` for full-width `ＴＥＳＴ`)',
    }),
});

export const mailboxListQuerySchema = z.object({
  limit: limitQuerySchema.openapi({
    description: `Mailboxes per page, 1..${MAX_LIST_LIMIT} (default ${DEFAULT_LIST_LIMIT})`,
    example: 50,
    default: DEFAULT_LIST_LIMIT,
  }),
  cursor: cursorQuerySchema,
});

export const topQuerySchema = z.object({
  view: viewSchema,
  lines: queryInt(0, MAX_TOP_LINES).openapi({
    description: 'Body lines to return after the headers and the blank line',
    example: 10,
  }),
});

export const waitQuerySchema = z.object({
  view: viewSchema,
  after: z
    .string()
    .regex(ULID_ANY_CASE_RE, 'must be a message id (26-character ULID)')
    .transform((s) => s.toUpperCase())
    .optional()
    .openapi({
      description:
        'Return messages with a larger id (newer by receipt time). A message received earlier but stored later ' +
        '(a large one) can be missed this way: follow `cursor` instead',
    }),
  cursor: z
    .string()
    .regex(/^\d{1,15}$/, 'must be a cursor from an earlier answer')
    .optional()
    .openapi({
      description:
        'Return messages stored after this point, whatever their ids: the `cursor` of the previous answer ' +
        '(or of its `Mail-Relay-Cursor` header). Without `after` or `cursor`: from the time of the request',
    }),
  timeout: queryInt(0, MAX_WAIT_SECONDS)
    .optional()
    .openapi({
      description: `Seconds to wait, 0..${MAX_WAIT_SECONDS} (default ${MAX_WAIT_SECONDS})`,
      default: MAX_WAIT_SECONDS,
    }),
});

export const patchMessageBodySchema = z
  .object({ seen: z.boolean().openapi({ description: 'Marks the message read (true) or unread (false)' }) })
  .strict()
  .openapi('MessagePatch');

// ---- responses ---------------------------------------------------------------------------

export const statSchema = z
  .object({
    address: z.string(),
    messages: z.number().int().nonnegative(),
    bytes: z.number().int().nonnegative(),
  })
  .openapi('MailboxStat', { description: 'POP3 STAT: exact counters of the mailbox' });
export type Stat = z.infer<typeof statSchema>;

export const mailboxListItemSchema = statSchema
  .extend({
    sent: z
      .object({ messages: z.number().int().nonnegative(), bytes: z.number().int().nonnegative() })
      .openapi({ description: 'Counters of the sent view (copies of what the mailbox sent)' }),
  })
  .openapi('MailboxListItem', {
    description: 'A mailbox: its STAT (the inbox) and the counters of its sent view',
  });
export type MailboxListItem = z.infer<typeof mailboxListItemSchema>;

/** `nextCursor` of a paged list (LIST and the mailbox list), the answer's side of `cursorQuerySchema`. */
const nextCursorSchema = z
  .string()
  .nullable()
  .openapi({ description: 'Pass as `cursor` for the next page; null at the end' });

export const mailboxListSchema = z
  .object({
    items: z.array(mailboxListItemSchema).openapi({ description: 'By address' }),
    nextCursor: nextCursorSchema,
  })
  .openapi('MailboxList');

export const listItemSchema = z
  .object({
    id: z.string().openapi({ description: 'ULID; also the UIDL (unique and stable)' }),
    size: z.number().int().nonnegative().openapi({ description: 'Bytes of the raw message (RETR size)' }),
    crlfSize: z
      .number()
      .int()
      .nonnegative()
      .openapi({
        description:
          'Octets of the raw message with every line ending in CRLF, as POP3 counts and sends it (RFC 1939 §11); ' +
          'equal to `size` unless the message has bare LF or bare CR line ends',
      }),
    receivedAt: z.string().openapi({ description: 'ISO 8601 receipt time' }),
    from: z.string(),
    to: z.string(),
    subject: z.string(),
    snippet: z.string().openapi({ description: 'The start of the text, whitespace collapsed' }),
    seen: z.boolean(),
    hasAttachments: z.boolean(),
    recipient: z.string().openapi({
      description:
        'The envelope recipient that led to this mailbox: `user+tag@…` for plus-addressed mail delivered to `user@…`',
    }),
    plusTag: z.string().nullable().openapi({ description: 'The `+tag` of `recipient`, null without one' }),
  })
  .openapi('MessageListItem');
export type ListItem = z.infer<typeof listItemSchema>;

export const messageListSchema = z
  .object({
    items: z.array(listItemSchema).openapi({ description: 'Newest first' }),
    nextCursor: nextCursorSchema,
  })
  .openapi('MessageList');

export const deleteManyBodySchema = z
  .object({
    ids: z
      .array(
        z
          .string()
          .regex(ULID_ANY_CASE_RE, 'must be a message id (26-character ULID)')
          .transform((s) => s.toUpperCase()),
      )
      .min(1)
      .max(MAX_DELETE_MANY)
      .openapi({
        description: `The message ids (ULIDs, case-insensitive), 1 to ${MAX_DELETE_MANY}`,
        example: ['01JNMR8Z1X0000000000000000'],
      }),
  })
  .strict()
  .openapi('DeleteMany');

export const deleteManyResultSchema = z
  .object({
    deleted: z.array(z.string()).openapi({ description: 'The ids this request deleted, in the order given' }),
    notFound: z.array(z.string()).openapi({
      description:
        'The ids with no message in the mailbox (never there, or deleted already), in the order given',
    }),
  })
  .openapi('DeleteManyResult');

export const deleteAllResultSchema = z
  .object({
    deleted: z.number().int().nonnegative().openapi({ description: 'Messages this request deleted' }),
    more: z.boolean().openapi({
      description: `True when the mailbox held more than one request deletes (${MAX_LIST_LIMIT}): ask again`,
    }),
  })
  .openapi('DeleteAllResult');

export const waitResultSchema = z
  .object({
    items: z.array(listItemSchema).openapi({
      description: 'Messages stored after `cursor` (or newer than `after`), newest first',
    }),
    truncated: z.boolean().openapi({
      description: `True when there are more: ask again with \`cursor\` at once (with \`after\`: more than ${MAX_WAIT_ITEMS} are newer, page the rest with LIST)`,
    }),
    cursor: z.string().openapi({
      description: 'Where the next long-poll starts (`?cursor=`): after everything this answer covers',
    }),
  })
  .openapi('WaitResult');

const verdictsSchema = z
  .object({
    spam: z.string(),
    virus: z.string(),
    spf: z.string(),
    dkim: z.string(),
    dmarc: z.string(),
    dmarcPolicy: z.string().optional(),
  })
  .openapi('Verdicts', {
    description: 'SES receipt verdicts (PASS, FAIL, GRAY, PROCESSING_FAILED; DISABLED locally)',
  });

export const messageDetailSchema = listItemSchema
  .extend({
    verdicts: verdictsSchema,
    tags: z.array(z.string()).openapi({ description: 'Verdicts that failed under a `tag` policy' }),
    quarantineReasons: z.array(z.string()).nullable(),
    parseFailed: z.boolean().openapi({
      description:
        'The message could not be parsed whole (`parseError` says why): its text, html and attachments are not read (the whole message is at /raw); its headers, addresses, date and messageId are those of its own header block that could be read',
    }),
    parseError: z.string().nullable(),
    headers: z.array(headerEntrySchema),
    addresses: z.object({
      from: z.array(addressEntrySchema),
      to: z.array(addressEntrySchema),
      cc: z.array(addressEntrySchema),
      replyTo: z.array(addressEntrySchema),
    }),
    date: z.string().nullable().openapi({
      description:
        'The Date header as ISO 8601 in UTC, read as RFC 5322 (with its obsolete forms) reads it: a zone it does not name, or none, as UTC; null when absent or unreadable (a day the month does not have, `24:00`, a numeric zone outside −12:00…+14:00 such as `+9900`)',
    }),
    messageId: z.string().nullable(),
    text: z.string().nullable(),
    html: z.string().nullable(),
    truncated: z
      .object({
        text: z.boolean(),
        html: z.boolean(),
        headers: z.boolean(),
        addresses: z.boolean(),
        attachments: z.boolean(),
      })
      .openapi({
        description:
          "Whether `text` / `html` were cut (between two characters) to the API's limit, 2 MiB each, and whether " +
          '`headers` (1 MiB), `addresses` (256 KiB for the four lists, filled from, replyTo, to, cc) and ' +
          '`attachments` (256 KiB) stop early (whole entries only, in order), counted as a Lambda response ' +
          'carries them (JSON inside a JSON string), so that the answer fits one (6 MB). The whole message ' +
          'is at `…/raw`',
      }),
    // A copy made here: core schemas may predate the `.openapi()` extension (import order), so they are never extended directly.
    attachments: z.array(attachmentSchema.extend({}).openapi('Attachment')),
  })
  .openapi('Message');
export type MessageDetail = z.infer<typeof messageDetailSchema>;

export const healthSchema = z.object({ status: z.literal('ok') }).openapi('Health');

export const tokenInfoSchema = z
  .object({
    admin: z.boolean().openapi({ description: 'An admin token lists every mailbox and reads any of them' }),
    mailbox: z
      .string()
      .nullable()
      .openapi({ description: 'The mailbox the token reads (null for an admin token)' }),
    label: z.string().nullable(),
    createdAt: z.string().openapi({ description: 'ISO 8601' }),
  })
  .openapi('TokenInfo', { description: 'The token a request presents: what it may read' });
