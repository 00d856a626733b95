/**
 * The local twin of SES's receipt rule: prepend trace headers, build the SES-shaped notification,
 * make both durable (the ingest journal's group commit, or fsynced writes in `sync` durability),
 * store the raw message under `inbound/<sesMessageId>` and run the same router the Lambda runs.
 * Used by the SMTP listener and by `mail-relay import`.
 */
import { hostname } from 'node:os';
import { newSesMessageId } from '../core/ids.ts';
import { detectEol, rfc5322Date } from '../core/mime-header.ts';
import { buildNotification, type SesReceivedNotification } from '../core/notification.ts';
import { UNCHECKED_VERDICTS, type Verdicts } from '../core/routing.ts';
import { processNotification, type RouteResult, type RouterDeps } from '../pipeline/router.ts';
import type { IngestJournal } from './ingest-journal.ts';

/** The bucket name in locally built notifications (there is no bucket; the data dir plays its part). */
export const LOCAL_BUCKET = 'mail-relay-local';

export interface IngestInput {
  /**
   * The message exactly as received (after SMTP dot-unstuffing): one Buffer, or the chunks it
   * arrived in (joined once, behind the trace headers, instead of twice).
   */
  readonly body: Buffer | readonly Buffer[];
  readonly mailFrom: string;
  readonly recipients: readonly string[];
  readonly receivedAt?: Date;
  readonly sesMessageId?: string;
  /** How the message arrived, for the Received line. */
  readonly via: {
    readonly protocol: 'ESMTP' | 'SMTP' | 'LOCAL';
    readonly helo?: string;
    readonly remoteAddress?: string;
  };
  readonly verdicts?: Verdicts;
}

const SERVER_NAME = hostname() || 'localhost';

/**
 * The trace headers prepended to every stored message, as SES prepends its own:
 * a `Received:` line (RFC 5321 §4.4) and an `Authentication-Results:` (RFC 8601) that says
 * honestly that nothing was checked locally (`none`).
 * Uses the message's own line ending so a bare-LF message stays consistently bare-LF.
 */
export function traceHeaders(input: IngestInput, sesMessageId: string, receivedAt: Date): Buffer {
  const eol = detectEol(input.body);
  const helo = sanitize(input.via.helo ?? 'localhost');
  const addr = sanitize(input.via.remoteAddress ?? '127.0.0.1');
  const forClause =
    input.recipients.length === 1 ? `${eol}\tfor <${sanitize(input.recipients[0] ?? '')}>` : '';
  const received =
    `Received: from ${helo} (${helo} [${addr}])${eol}\tby ${SERVER_NAME} (mail-relay) with ${input.via.protocol} id ${sesMessageId}` +
    `${forClause};${eol}\t${rfc5322Date(receivedAt)}${eol}`;
  const auth = `Authentication-Results: ${SERVER_NAME}; none${eol}`;
  return Buffer.from(received + auth, 'latin1');
}

function sanitize(s: string): string {
  return s.replace(/[^\x21-\x7e]/g, '?');
}

export interface IngestResult extends RouteResult {
  readonly inboundKey: string;
}

/** Router deps, plus the journal that makes `250` durable when the stores defer their syncs. */
export interface IngestDeps extends RouterDeps {
  readonly journal?: IngestJournal | undefined;
}

/**
 * What SES does on receipt, after the message is durable: store it under `inbound/`, then route it.
 * Also what journal recovery re-runs (idempotent).
 */
export async function applyReceived(
  deps: RouterDeps,
  notification: SesReceivedNotification,
  raw: Buffer,
  options: {
    readonly recovering?: boolean;
    readonly fresh?: boolean;
    /** The journal append of this message: routing commits nothing before it resolves. */
    readonly durable?: Promise<unknown>;
  } = {},
): Promise<RouteResult> {
  return processNotification(deps, notification, {
    raw,
    storeRaw: true,
    rewriteBlobs: options.recovering === true,
    fresh: options.fresh === true,
    durable: options.durable,
  });
}

export async function ingest(deps: IngestDeps, input: IngestInput): Promise<IngestResult> {
  const sesMessageId = input.sesMessageId ?? newSesMessageId();
  const receivedAt = input.receivedAt ?? new Date();
  const trace = traceHeaders(input, sesMessageId, receivedAt);
  const raw = Buffer.concat(Buffer.isBuffer(input.body) ? [trace, input.body] : [trace, ...input.body]);
  const notification = buildNotification({
    sesMessageId,
    receivedAt,
    mailFrom: input.mailFrom,
    recipients: input.recipients,
    verdicts: input.verdicts ?? UNCHECKED_VERDICTS,
    bucketName: LOCAL_BUCKET,
  });
  const inboundKey = notification.receipt.action.objectKey;
  // A message id minted here: no mailbox can hold it yet (an id given by the caller may be a retry).
  const fresh = input.sesMessageId === undefined;
  const { journal } = deps;
  if (!journal) return { ...(await applyReceived(deps, notification, raw, { fresh })), inboundKey };

  // The router parses while the record is synced, and commits nothing before it is durable.
  const appended = journal.append({ type: 'ingest', notification, raw });
  appended.catch(() => undefined);
  try {
    return { ...(await applyReceived(deps, notification, raw, { fresh, durable: appended })), inboundKey };
  } catch (err) {
    // The client is told to retry (4xx): recovery must not deliver this copy as well (if the
    // record was written at all: a failed append is the error itself).
    const ticket = await appended.catch(() => null);
    if (ticket !== null) {
      await journal.abort(ticket).catch((abortErr: unknown) => {
        // Only an I/O error gets here (marking needs no free space): the message may be delivered
        // again at the next start, next to the client's retry. Said, not hidden; the client still
        // gets the routing error.
        process.emitWarning(
          `message ${sesMessageId}: routing failed and marking its journal record aborted failed too ` +
            `(${abortErr instanceof Error ? abortErr.message : String(abortErr)}); ` +
            'it may be delivered at the next start as well as on the client’s retry',
          'MailRelayJournalWarning',
        );
      });
    }
    throw err;
  } finally {
    // Settled after the abort (if any) is durable, so a checkpoint cannot drop the record first.
    await appended.then(
      (ticket) => journal.settle(ticket),
      () => undefined,
    );
  }
}
