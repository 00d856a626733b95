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
  return new SendError(`SES ${operation} failed: ${name}: ${message}`, permanentNames.has(name), undefined, {
    cause: err,
  });
}
