/**
 * An SES SDK error as the SendError the ports speak: named after the operation and the error, and
 * permanent when its name is one that asking again cannot fix (each adapter lists its own).
 */
import { errorMessage, SendError } from '../../core/errors.ts';

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
  });
}
