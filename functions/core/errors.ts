/**
 * The project's error classes. Each carries a stable `code` that clients can rely on; the HTTP
 * error mapper (api) turns them into HTTP answers, and smtp-server sends an `SmtpRejectError`'s
 * `responseCode` and message as the SMTP reply.
 * Never serialize a raw Error to a client.
 */
/** An error's message for a log line or a reply text, whatever was thrown. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class MailRelayError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The configuration file is missing, unreadable or invalid. `issues` names each wrong path. */
export class ConfigError extends MailRelayError {
  constructor(
    message: string,
    readonly issues: readonly string[] = [],
  ) {
    super('config_invalid', issues.length > 0 ? `${message}\n  - ${issues.join('\n  - ')}` : message);
  }
}

/** Input from a client (HTTP body, query, SMTP command) that we refuse. */
export class ValidationError extends MailRelayError {
  constructor(
    message: string,
    readonly details: readonly string[] = [],
    code = 'invalid_request',
  ) {
    super(code, message);
  }
}

export class NotFoundError extends MailRelayError {
  constructor(message: string, code = 'not_found') {
    super(code, message);
  }
}

export class AuthError extends MailRelayError {
  constructor(
    readonly status: 401 | 403,
    message: string,
  ) {
    super(status === 401 ? 'unauthorized' : 'forbidden', message);
  }
}

/**
 * This blob store cannot make links at all (a local store built without the API's address): the
 * caller says where the blob is instead. Any other failure to presign is an error like any other.
 */
export class PresignUnavailableError extends MailRelayError {
  constructor(message: string) {
    super('presign_unavailable', message);
  }
}

/** A refusal with an SMTP reply code, e.g. a `reject` route, a size overflow or a 451 to retry later. */
export class SmtpRejectError extends MailRelayError {
  constructor(
    readonly responseCode: number,
    message: string,
    code = 'rejected',
  ) {
    super(code, message);
  }
}

/**
 * Which of the provider's sending limits refused a message: its sending `rate` (messages, or
 * recipients, per second: over within seconds) or its `daily_quota` (messages in the last 24 hours:
 * nothing passes until the quota frees up or is raised).
 */
export type SendingLimit = 'rate' | 'daily_quota';

/**
 * The sending limit SES names in an error's text, through its API ("Maximum sending rate exceeded",
 * "Daily message quota exceeded") and its SMTP interface alike (`454 Throttling failure: Maximum sending
 * rate exceeded`, a smarthost's reply locally):
 * https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html. Undefined when it names neither.
 */
export function sendingLimitNamed(text: string): SendingLimit | undefined {
  if (/daily message quota exceeded/i.test(text)) return 'daily_quota';
  if (/maximum sending rate exceeded/i.test(text)) return 'rate';
  return undefined;
}

/**
 * An Outbound adapter could not send. `permanent` when trying again cannot help (an SMTP 5xx,
 * SES MessageRejected); otherwise the sender retries. `responseCode` is the SMTP reply, when any.
 */
export class SendError extends MailRelayError {
  /**
   * The provider's answer about this message (a smarthost's SMTP reply, SES's reason for refusing
   * it), fit to show whoever sent it; absent for failures whose text names internals (a connection
   * to a host and port, an access error with account ids and role ARNs).
   */
  readonly reply: string | undefined;
  /** The sending limit that refused the message, when the provider said which (a transient failure). */
  readonly limit: SendingLimit | undefined;

  constructor(
    message: string,
    readonly permanent: boolean,
    readonly responseCode?: number,
    options?: { cause?: unknown; reply?: string | undefined; limit?: SendingLimit | undefined },
  ) {
    super(permanent ? 'send_rejected' : 'send_failed', message, options);
    this.reply = options?.reply;
    this.limit = options?.limit;
  }
}

/**
 * The data store has no room left (a full disk or quota): nothing of the operation was kept, and it
 * succeeds once there is room again. SMTP answers `452 4.3.1` (RFC 3463: mail system full), HTTP
 * `507 insufficient_storage` (RFC 4918 §11.5). Thrown where we detect it ourselves (a short write);
 * the file system's and SQLite's own errors are recognized by `isStorageFull`.
 */
export class StorageFullError extends MailRelayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('insufficient_storage', message, options);
  }
}

/**
 * Error codes that mean "no room to write": the file system's (ENOSPC, EDQUOT: a quota) and SQLite's
 * (`SQLITE_FULL`; `SQLITE_IOERR_SHMSIZE`, the shared-memory file of a WAL database that cannot be
 * grown, which is how opening a database fails on a full disk).
 */
const STORAGE_FULL_CODES: ReadonlySet<string> = new Set([
  'ENOSPC',
  'EDQUOT',
  'SQLITE_FULL',
  'SQLITE_IOERR_SHMSIZE',
]);

/** Whether `err` (or an error it wraps as its `cause`) says the storage is full. */
export function isStorageFull(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof StorageFullError) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && STORAGE_FULL_CODES.has(code)) return true;
  }
  return false;
}

/**
 * What AWS calls a throttling error: the names the AWS SDK's own retry classification reads as
 * throttling, for the services the relay calls (DynamoDB, S3, SES), and any error it marks
 * `$retryable.throttling` or that came with HTTP 429. Duck-typed, so that the core and the API stay
 * free of the SDK (as `isStorageFull` is of SQLite).
 */
const THROTTLING_NAMES: ReadonlySet<string> = new Set([
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'ThrottlingException',
  'Throttling',
  'SlowDown',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestThrottledException',
  'ThrottledException',
]);

/** Whether `err` (or an error it wraps as its `cause`) is AWS throttling the relay's calls. */
export function isThrottled(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const sdk = e as { $retryable?: { throttling?: boolean }; $metadata?: { httpStatusCode?: number } };
    if (THROTTLING_NAMES.has(e.name) || sdk.$retryable?.throttling === true) return true;
    if (sdk.$metadata?.httpStatusCode === 429) return true;
  }
  return false;
}

/**
 * Error codes that mean "no descriptor to open a file or a socket with": the process's open-files
 * limit (EMFILE, `ulimit -n`) or the system's (ENFILE). Not a bug and not lasting: the relay works
 * again as soon as connections close (docs/adr/0014-local-server-process.md, 2026-11-29).
 */
const OUT_OF_DESCRIPTORS_CODES: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE']);

/** Whether `err` (or an error it wraps as its `cause`, as `fetch` does) ran out of file descriptors. */
export function isOutOfDescriptors(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && OUT_OF_DESCRIPTORS_CODES.has(code)) return true;
  }
  return false;
}
