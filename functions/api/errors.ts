/**
 * The one place where errors become HTTP answers: `{error: {code, message}}` with a stable code.
 * Anything that is not one of our MailRelayError classes is a bug or an outage, and the client
 * learns nothing about it beyond `500 internal` (the details go to the server log).
 */
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import {
  AuthError,
  isOutOfDescriptors,
  isStorageFull,
  isThrottled,
  MailRelayError,
  NotFoundError,
  ValidationError,
} from '../core/errors.ts';
import type { ErrorBody } from './schemas.ts';

/** An HTTP-only refusal that none of the core error classes describes (e.g. 413, 415, 422). */
export class HttpStatusError extends MailRelayError {
  /** Headers the answer needs beyond the shared ones (`Retry-After`). */
  readonly headers: Readonly<Record<string, string>> | undefined;

  constructor(
    readonly status: ContentfulStatusCode,
    code: string,
    message: string,
    options?: { cause?: unknown; headers?: Readonly<Record<string, string>> },
  ) {
    super(code, message, options);
    this.headers = options?.headers;
  }
}

/** ValidationError codes that are not plain 400s. */
const VALIDATION_STATUS: Readonly<Record<string, ContentfulStatusCode>> = {
  range_not_satisfiable: 416,
};

export interface HttpError {
  readonly status: ContentfulStatusCode;
  readonly body: ErrorBody;
  /** Headers the answer needs beyond the shared ones (`Retry-After`). */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * `Retry-After` on a `503 throttled` (RFC 9110 §10.2.3), in seconds: the next step of the backoff the
 * AWS SDK was following when it gave up. Its standard strategy makes 3 attempts, waiting up to
 * 500 ms × 2^n after the n-th throttled one (1 s, then 2 s); the throttling outlasted both, and the
 * next wait would be up to 4 s. Not longer: DynamoDB and S3 throttle per second and per partition,
 * and lift it as the request rate falls or capacity adapts.
 */
export const THROTTLED_RETRY_AFTER_SECONDS = 4;

/**
 * `Retry-After` on a `503 out_of_resources`: the local relay ran out of file descriptors (its
 * open-files limit). They come back as soon as connections close, which on a relay that tests use
 * takes moments: a second is enough to find out.
 */
export const OUT_OF_RESOURCES_RETRY_AFTER_SECONDS = 1;

/**
 * Maps any thrown value to the status and JSON body sent to the client.
 * `internal` is returned for everything unknown, never with the original message or stack.
 */
export function toHttpError(err: unknown): HttpError {
  const make = (status: ContentfulStatusCode, code: string, message: string): HttpError => ({
    status,
    body: { error: { code, message } },
  });
  if (err instanceof HttpStatusError) {
    const answer = make(err.status, err.code, err.message);
    return err.headers === undefined ? answer : { ...answer, headers: err.headers };
  }
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
    // No Retry-After: when there is room again depends on whoever frees it, not on anything this
    // server could promise a time for (docs/adr/0005-mailbox-http-api.md, 2026-11-29).
    return make(507, 'insufficient_storage', 'the server has no space left to store this; try again later');
  }
  // The deployed relay's DynamoDB or S3 refused the calls for their rate, after the SDK's own retries:
  // not a bug, and over soon (a 500 would tell a client to give up, or to retry at once).
  if (isThrottled(err)) {
    return unavailableFor(
      THROTTLED_RETRY_AFTER_SECONDS,
      'throttled',
      `the store is busy (throttled); try again in ${THROTTLED_RETRY_AFTER_SECONDS} seconds`,
    );
  }
  // The client closed its connection before its request body was all there (Node's `aborted`, locally;
  // API Gateway hands a Lambda whole bodies only): nothing failed here, nobody is left to read an
  // answer, and it is no error of the server's to log as one.
  if (isClientAbort(err)) {
    return make(400, 'request_aborted', 'the connection closed before the request body was complete');
  }
  // The local relay's open-files limit ran out (EMFILE): not a bug, and over once connections close.
  if (isOutOfDescriptors(err)) {
    return unavailableFor(
      OUT_OF_RESOURCES_RETRY_AFTER_SECONDS,
      'out_of_resources',
      `the server is out of resources (too many open files); try again in ${OUT_OF_RESOURCES_RETRY_AFTER_SECONDS} second`,
    );
  }
  return make(500, 'internal', 'internal error');
}

/** A `503` that is over soon: its `Retry-After` (RFC 9110 §10.2.3) in seconds. */
function unavailableFor(seconds: number, code: string, message: string): HttpError {
  return {
    status: 503,
    body: { error: { code, message } },
    headers: { 'Retry-After': String(seconds) },
  };
}

/** The error Node's http server gives a request whose client went away before its body ended. */
function isClientAbort(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e.message === 'aborted' && (e as { code?: unknown }).code === 'ECONNRESET') return true;
  }
  return false;
}
