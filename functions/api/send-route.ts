/**
 * The contract of `POST /v1/mailboxes/{address}/send`: its request and result schemas and its
 * OpenAPI route, without the code that sends (send.ts: the MIME composer, the Outbound port, the
 * parser of the sent copy). The API function imports only this, to document the route in
 * `GET /v1/openapi.json`, while in AWS the route itself is served by the send function
 * (docs/adr/0012-lambda-bundles.md); keep it free of nodemailer, mailparser and the pipeline.
 */
import { createRoute } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import * as z from 'zod';
import { errorSchema, mailboxParamsSchema } from './schemas.ts';
import { type ApiApp, THROTTLED_RESPONSE, UNAUTHORIZED_RESPONSE } from './shell.ts';

/** SES accepts at most 50 recipients (To + Cc + Bcc) per message. */
export const MAX_SEND_RECIPIENTS = 50;

/** A client's Idempotency-Key: printable ASCII, short enough to be part of an index key. */
export const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,200}$/;

/** The route as API Gateway names it (method and path template), for the stack's route to the send function. */
export const SEND_ROUTE = { method: 'POST', path: '/v1/mailboxes/{address}/send' } as const;

const addressInputSchema = z.union([
  z.string().max(320),
  z.object({ name: z.string().max(200).optional(), address: z.string().max(320) }).strict(),
]);
// No bound on an array here: the total over to, cc and bcc is checked (`too_many_recipients`), and
// the body's size bounds the rest.
const addressesSchema = z.union([addressInputSchema, z.array(addressInputSchema)]);

/** No control character: a CR or LF in a header field's value would be taken for the start of another. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
export const NO_CONTROLS_RE = /^[^\x00-\x1f\x7f]*$/;
export const NO_CONTROLS = 'control characters are not allowed';
/** RFC 2045's token. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
/** A media type as a Content-Type holds it: `type/subtype`, and parameters. */
const MEDIA_TYPE_RE = new RegExp(`^${TOKEN}/${TOKEN}( *; *${TOKEN}=(${TOKEN}|"[^"\\x00-\\x1f\\x7f]*"))*$`);
/** A message id (RFC 5322 `msg-id`; nodemailer adds the angle brackets where they are left out). */
const MSG_ID = '<?[^<>\\s\\x00-\\x1f\\x7f]+>?';
const MSG_ID_RE = new RegExp(`^${MSG_ID}$`);
const MSG_IDS_RE = new RegExp(`^ *${MSG_ID}( +${MSG_ID})* *$`);
const MSG_IDS = 'must be message ids such as <id@example.com>, separated by spaces';

export const sendJsonSchema = z
  .object({
    to: addressesSchema.optional(),
    cc: addressesSchema.optional(),
    bcc: addressesSchema.optional(),
    subject: z.string().max(998).optional(),
    text: z.string().optional(),
    html: z.string().optional(),
    /** Display name for From; the address is always the mailbox's own. */
    fromName: z.string().max(200).regex(NO_CONTROLS_RE, NO_CONTROLS).optional(),
    replyTo: addressInputSchema.optional(),
    inReplyTo: z.string().max(998).regex(MSG_IDS_RE, MSG_IDS).optional(),
    references: z
      .union([
        z.string().max(998).regex(MSG_IDS_RE, MSG_IDS),
        z
          .array(z.string().max(998).regex(MSG_ID_RE, 'must be a message id such as <id@example.com>'))
          .max(100),
      ])
      .optional(),
    attachments: z
      .array(
        z
          .object({
            filename: z.string().min(1).max(255),
            contentType: z
              .string()
              .max(255)
              .regex(MEDIA_TYPE_RE, 'must be a media type such as application/pdf')
              .optional(),
            /** The bytes, base64-encoded. */
            content: z.string().regex(/^[A-Za-z0-9+/=\r\n]*$/, 'must be base64'),
            /** Makes it an inline part that html can reference as `cid:<contentId>`. */
            contentId: z.string().max(255).optional(),
          })
          .strict(),
      )
      .max(100)
      .optional(),
  })
  .strict()
  .openapi('SendRequest');
export type SendRequest = z.infer<typeof sendJsonSchema>;

export const sendResultSchema = z
  .object({
    /** Id of the copy in the mailbox's sent view. */
    id: z.string(),
    /** The provider's message id (SES MessageId, or the smarthost's reply). */
    messageId: z.string(),
    /** Envelope recipients. */
    recipients: z.array(z.string()),
    /**
     * Recipients the provider refused while it took the message for the others (a smarthost's RCPT
     * replies, locally): they did not get it. Absent when none were refused.
     */
    refused: z.array(z.string()).optional(),
    /** True when this Idempotency-Key was already sent: nothing was sent again. */
    duplicate: z.boolean(),
  })
  .openapi('SendResult');

const jsonError = (description: string) => ({
  description,
  content: { 'application/json': { schema: errorSchema } },
});

/**
 * The request body may be the message itself or JSON carrying base64 attachments (4/3 larger),
 * plus room for the JSON around them; anything larger could never be sent.
 */
export function maxSendBodyBytes(maxSendBytes: number): number {
  return Math.ceil((maxSendBytes * 4) / 3) + 64 * 1024;
}

/** The route, with a body limit derived from what the relay may send. */
export const sendRouteFor = (maxBodyBytes: number) =>
  createRoute({
    method: 'post',
    path: SEND_ROUTE.path,
    tags: ['mailbox'],
    summary: 'Send mail from this mailbox (JSON, or a complete message/rfc822); a copy goes to its sent view',
    security: [{ bearerAuth: [] }],
    request: {
      params: mailboxParamsSchema,
      headers: z.object({
        'Idempotency-Key': z
          .string()
          .regex(IDEMPOTENCY_KEY_RE, 'must be 1 to 200 printable ASCII characters')
          .optional()
          .openapi({
            description:
              'Makes a retry send once: a request with a key already sent answers as it did (`duplicate: true`) ' +
              'without sending again; the same key with a different request is `422 idempotency_key_reused`, ' +
              'and while the first is still sending `409 send_in_progress`. 1 to 200 printable ASCII characters',
            example: 'order-4711-confirmation',
          }),
      }),
      body: {
        required: true,
        content: {
          'application/json': { schema: sendJsonSchema },
          'message/rfc822': { schema: z.string().openapi({ format: 'binary' }) },
        },
      },
    },
    responses: {
      200: { description: 'Sent', content: { 'application/json': { schema: sendResultSchema } } },
      400: jsonError(
        'Invalid input: `invalid_address`, `invalid_json`, `invalid_request`, `invalid_recipient`, `no_recipients`, `too_many_recipients`',
      ),
      401: UNAUTHORIZED_RESPONSE,
      403: jsonError('Not this mailbox, or From is not its address (`forbidden`, `from_not_allowed`)'),
      409: jsonError('The same Idempotency-Key is being sent right now (`send_in_progress`)'),
      413: jsonError(
        'The message is larger than the relay sends (`message_too_large`), or the body larger than such a message could take (`payload_too_large`)',
      ),
      415: jsonError(
        'Neither application/json nor message/rfc822, or compressed (`Content-Encoding`) (`unsupported_media_type`)',
      ),
      422: jsonError(
        'The provider refused the message for good (`send_rejected`), one of our own addresses refuses mail (`recipient_refused`: no such mailbox, a `reject` route; nothing is sent), or the Idempotency-Key was used for a different request (`idempotency_key_reused`)',
      ),
      429: jsonError(
        'The relay\'s provider has sent as much as its daily quota allows (`send_quota_exceeded`; SES\'s sending quota counts the last 24 hours): nothing was sent, and no retry passes until the quota frees up or is raised, which the provider does not say when (no `Retry-After`). The same request with the same Idempotency-Key sends it then. (API Gateway\'s own throttling of the stage is a `429` too, with the body `{"message":"Too Many Requests"}`: back off and retry.)',
      ),
      502: jsonError('The provider could not be reached or failed; try again (`send_failed`)'),
      500: jsonError('A bug or an outage (`internal`); the details are only in the server log'),
      503: {
        ...THROTTLED_RESPONSE,
        description:
          "The deployed relay's store (DynamoDB, S3) or its provider's sending rate (SES) is throttling requests " +
          '(`throttled`): nothing was sent; try again after `Retry-After` seconds with the same `Idempotency-Key`. ' +
          "(API Gateway's own throttling of the stage answers `429` " +
          '`{"message":"Too Many Requests"}` before this API, without `Retry-After`: back off and retry.)',
      },
      507: jsonError(
        'The local relay has no disk space left (`insufficient_storage`); try again once there is room, with the same Idempotency-Key, the same message (no `Retry-After`: when that is depends on whoever frees space)',
      ),
    },
    // Refused while streaming in, before the body is buffered (`payload_too_large`).
    middleware: [bodyLimit({ maxSize: maxBodyBytes })],
  });

/**
 * Documents the route in an app's OpenAPI document without serving it: the API function's app,
 * whose `POST …/send` requests API Gateway sends to the send function instead.
 */
export function documentSendRoute(app: ApiApp, maxSendBytes: number): void {
  const { middleware: _servedElsewhere, ...route } = sendRouteFor(maxSendBodyBytes(maxSendBytes));
  app.openAPIRegistry.registerPath(route);
}
