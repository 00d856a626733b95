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

  constructor(
    message: string,
    readonly permanent: boolean,
    readonly responseCode?: number,
    options?: { cause?: unknown; reply?: string | undefined },
  ) {
    super(permanent ? 'send_rejected' : 'send_failed', message, options);
    this.reply = options?.reply;
  }
}
