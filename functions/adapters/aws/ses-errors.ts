/**
 * An SES SDK error as the SendError the ports speak: named after the operation and the error, and
 * permanent when its name is one that asking again cannot fix (each adapter lists its own).
 */
import {
  errorMessage,
  isThrottled,
  SendError,
  type SendingLimit,
  sendingLimitNamed,
} from '../../core/errors.ts';

/**
 * Which sending limit an SES error is, if any. SES answers both of an account's sending limits as
 * throttling, and only its message tells them apart: "Maximum sending rate exceeded" or "Daily message
 * quota exceeded" (https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html). The
 * name depends on the API: SES v1 says `Throttling`; SES v2's SendEmail documents
 * `TooManyRequestsException` (HTTP 429) and `LimitExceededException`, both of which the SDK retries as
 * throttling before we see them. So the message decides, and a throttling name without either message
 * is taken for the rate (the limit that lifts by itself).
 */
export function sesSendingLimit(err: unknown): SendingLimit | undefined {
  const named = sendingLimitNamed(errorMessage(err));
  if (named !== undefined) return named;
  if (isThrottled(err) || (err instanceof Error && err.name === 'LimitExceededException')) return 'rate';
  return undefined;
}

export function sesSendError(
  operation: string,
  err: unknown,
  permanentNames: ReadonlySet<string>,
): SendError {
  const name =
    typeof err === 'object' && err !== null && typeof (err as { name?: unknown }).name === 'string'
      ? (err as { name: string }).name
      : 'Error';
  const message = errorMessage(err);
  const permanent = permanentNames.has(name);
  // SES's reasons for refusing a message (not verified, rejected, sending paused) are the sender's
  // business; other errors (AccessDenied names the account and role, throttling) stay in the log.
  return new SendError(`SES ${operation} failed: ${name}: ${message}`, permanent, undefined, {
    cause: err,
    reply: permanent ? `${name}: ${message}` : undefined,
    limit: permanent ? undefined : sesSendingLimit(err),
  });
}
