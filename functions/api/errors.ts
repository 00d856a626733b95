/**
 * The one place where errors become HTTP answers: `{error: {code, message}}` with a stable code.
 * Anything that is not one of our MailRelayError classes is a bug or an outage, and the client
 * learns nothing about it beyond `500 internal` (the details go to the server log).
 */
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { AuthError, isStorageFull, MailRelayError, NotFoundError, ValidationError } from '../core/errors.ts';
import type { ErrorBody } from './schemas.ts';

/** An HTTP-only refusal that none of the core error classes describes (e.g. 413, 415, 422). */
export class HttpStatusError extends MailRelayError {
  constructor(
    readonly status: ContentfulStatusCode,
    code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** ValidationError codes that are not plain 400s. */
const VALIDATION_STATUS: Readonly<Record<string, ContentfulStatusCode>> = {
  range_not_satisfiable: 416,
};

export interface HttpError {
  readonly status: ContentfulStatusCode;
  readonly body: ErrorBody;
}

/**
 * Maps any thrown value to the status and JSON body sent to the client.
 * `internal` is returned for everything unknown, never with the original message or stack.
 */
export function toHttpError(err: unknown): HttpError {
  const make = (status: ContentfulStatusCode, code: string, message: string): HttpError => ({
    status,
    body: { error: { code, message } },
  });
  if (err instanceof HttpStatusError) return make(err.status, err.code, err.message);
  if (err instanceof AuthError) return make(err.status, err.code, err.message);
  if (err instanceof NotFoundError) return make(404, err.code, err.message);
  if (err instanceof ValidationError) return make(VALIDATION_STATUS[err.code] ?? 400, err.code, err.message);
  if (err instanceof HTTPException) {
    // Raised by hono's body validator: the only places are a body that is not JSON and a wrong media type.
    if (err.status === 400) return make(400, 'invalid_json', 'the request body is not valid JSON');
    if (err.status === 415) {
      return make(
        415,
        'unsupported_media_type',
        'send the body as application/json (POST …/send also takes message/rfc822)',
      );
    }
    if (err.status === 413) return make(413, 'payload_too_large', 'the request body is too large');
    return make(err.status === 401 ? 401 : 400, 'invalid_request', 'the request was refused');
  }
  // A full disk (locally; S3 and DynamoDB do not fill up) is not a bug: the client may try again once
  // there is room. What failed was not kept (an index write is one transaction).
  if (isStorageFull(err)) {
    return make(507, 'insufficient_storage', 'the server has no space left to store this; try again later');
  }
  return make(500, 'internal', 'internal error');
}
