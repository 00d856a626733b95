/**
 * `mail-relay import`: .eml files through the same ingest path as SMTP (trace headers, `inbound/`,
 * notification, router). Deterministic: the SES-like id comes from the recipients and the content,
 * the receipt time from the message's Date header (else the file's mtime), so importing the same
 * file twice computes the same message id and the second import is a no-op.
 */
import { readFile, stat } from 'node:fs/promises';
import addressparser from 'nodemailer/lib/addressparser';
import { isAddress, normalizeAddress } from '../core/config.ts';
import { errorMessage } from '../core/errors.ts';
import { sesMessageIdFromContent } from '../core/ids.ts';
import { countOutcomes, type RouteResult } from '../pipeline/router.ts';
import { type IngestDeps, ingest } from './ingest.ts';

/** Unfolded header fields of a raw message (name lower-cased), read without a MIME parser. */
export function headerFields(raw: Buffer): { name: string; value: string }[] {
  const ends = [raw.indexOf('\r\n\r\n'), raw.indexOf('\n\n')].filter((i) => i >= 0);
  const head = raw
    .subarray(0, ends.length > 0 ? Math.min(...ends) : raw.length)
    .toString('latin1')
    .replace(/\r?\n[ \t]+/g, ' ');
  const out: { name: string; value: string }[] = [];
  for (const line of head.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0)
      out.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() });
  }
  return out;
}

const RECIPIENT_HEADERS = ['delivered-to', 'x-original-to', 'to', 'cc'];

/** Recipients named in a message's headers, for `import` without `--to`. */
export function headerRecipients(raw: Buffer): string[] {
  const found: string[] = [];
  for (const { name, value } of headerFields(raw)) {
    if (!RECIPIENT_HEADERS.includes(name)) continue;
    for (const a of addressparser(value, { flatten: true })) {
      const addr = normalizeAddress(a.address ?? '');
      if (isAddress(addr) && !found.includes(addr)) found.push(addr);
    }
  }
  return found;
}

/** The message's own Date when it is readable (archives keep their order), else the fallback. */
export function importReceiptTime(raw: Buffer, fallback: Date): Date {
  const date = headerFields(raw).find((h) => h.name === 'date');
  const ms = date ? Date.parse(date.value) : Number.NaN;
  return Number.isFinite(ms) && ms >= 0 && ms < 2 ** 48 ? new Date(ms) : fallback;
}

export function progressBar(done: number, total: number, width = 30): string {
  const filled = total === 0 ? width : Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
}

export interface ImportSummary {
  readonly results: readonly RouteResult[];
  readonly failures: readonly { file: string; reason: string }[];
  /** Recipients the relay refused, file by file, with the reply an SMTP client would have got. */
  readonly refusals: readonly { file: string; recipient: string; reply: string }[];
  /** One line for the terminal. */
  readonly line: string;
}

/** Files read and routed at once: enough for the journal's group commit to batch their syncs. */
export const IMPORT_CONCURRENCY = 8;

export async function importFiles(
  deps: IngestDeps,
  files: readonly string[],
  options: { to?: readonly string[]; onProgress?: ((done: number, total: number) => void) | undefined } = {},
): Promise<ImportSummary> {
  const started = Date.now();
  const results: RouteResult[] = [];
  const failures: { file: string; reason: string }[] = [];
  const refusals: { file: string; recipient: string; reply: string }[] = [];
  let next = 0;
  let done = 0;
  const importOne = async (file: string): Promise<void> => {
    try {
      const [body, info] = await Promise.all([readFile(file), stat(file)]);
      const recipients = options.to && options.to.length > 0 ? options.to : headerRecipients(body);
      if (recipients.length === 0) {
        failures.push({ file, reason: 'no recipient in the headers (use --to)' });
        return;
      }
      const result = await ingest(deps, {
        body,
        mailFrom: '',
        returnPath: false,
        recipients,
        sesMessageId: sesMessageIdFromContent(Buffer.concat([Buffer.from(recipients.join(',')), body])),
        receivedAt: importReceiptTime(body, info.mtime),
        via: { protocol: 'LOCAL', helo: 'mail-relay-import' },
      });
      results.push(result);
      for (const o of result.outcomes) {
        if (o.decision.kind === 'reject')
          refusals.push({
            file,
            recipient: o.decision.recipient,
            reply: `${o.decision.code} ${o.decision.message}`,
          });
      }
    } catch (err) {
      failures.push({ file, reason: errorMessage(err) });
    }
  };
  const worker = async (): Promise<void> => {
    for (let file = files[next++]; file !== undefined; file = files[next++]) {
      await importOne(file);
      done += 1;
      options.onProgress?.(done, files.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(IMPORT_CONCURRENCY, files.length) }, worker));
  const c = countOutcomes(results);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const line =
    `imported ${results.length}/${files.length} files in ${secs}s: delivered ${c.delivered}, duplicate ${c.duplicate}, ` +
    `quarantined ${c.quarantined}, forwarded ${c.forwarded}, rejected ${c.rejected}, dropped ${c.dropped}, ` +
    `parse failures ${c.parseFailed}, failed ${failures.length}`;
  return { results, failures, refusals, line };
}
