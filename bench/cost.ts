/**
 * Issue 7, item 6: what 1,000 received messages cost in AWS (SES + Lambda + S3 + DynamoDB +
 * SQS/SNS + logs), next to SES's own receiving fee. Request counts per message follow the router
 * (functions/pipeline/router.ts with the S3 and DynamoDB adapters); sizes come from the shared
 * corpus; the router's CPU time is the one measured by `pipeline-corpus` in this run (or the last
 * one in results.json), stretched to the Lambda's share of a vCPU, plus an assumed latency per AWS call.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MailparserAdapter } from '../functions/adapters/mailparser/mailparser-adapter.ts';
import { snippetOf } from '../functions/core/message.ts';
import { corpusDir, corpusFiles } from '../test/helpers/env.ts';
import { readResults } from './lib/report.ts';
import {
  type BenchContext,
  type Benchmark,
  type Measurement,
  measured,
  type Reference,
} from './lib/types.ts';
import { round } from './lib/util.ts';

/**
 * Public on-demand prices, us-east-1, USD, from the AWS pricing pages of each service as known in
 * 2025 (after the November 2024 DynamoDB on-demand cut). Free tiers are ignored: this is the
 * marginal cost. Re-check them before quoting the result.
 */
export const PRICES = {
  sesPerThousandEmails: 0.1,
  /** Each received message is billed in 256 KB chunks, one at least. */
  sesPerThousandChunks: 0.09,
  sesChunkBytes: 256 * 1024,
  lambdaArmPerGbSecond: 0.0000133334,
  lambdaPerRequest: 0.2 / 1e6,
  s3PutPerRequest: 0.005 / 1000,
  s3GetPerRequest: 0.0004 / 1000,
  s3StandardPerGbMonth: 0.023,
  dynamoPerWriteUnit: 0.625 / 1e6,
  dynamoPerReadUnit: 0.125 / 1e6,
  sqsPerRequest: 0.4 / 1e6,
  snsPerPublish: 0.5 / 1e6,
  logsPerGbIngested: 0.5,
  apiGatewayHttpPerRequest: 1.0 / 1e6,
  /** The link secret of oversize-forward notices: a fixed monthly fee (its reads are rare: a notice, a click). */
  secretsManagerPerSecretMonth: 0.4,
} as const;

/** Assumed round trips from Lambda to S3 and DynamoDB in the same region (ms). Not measured here. */
const LATENCY_MS = { s3Put: 20, s3Get: 12, dynamoRead: 4, dynamoTransact: 10 } as const;
/** Lambda gives a full vCPU at 1,769 MB and a proportional share below. */
const FULL_VCPU_MB = 1769;
/** One router invocation per message: the worst case, a quiet mailbox where the 1 s batching window closes on one message. */
const MESSAGES_PER_INVOCATION = 1;
/** Requests to SQS per message: the send from SNS, the receive that brings it, the delete after. */
const SQS_REQUESTS_PER_MESSAGE = 3;
/** Bytes the router logs per message (one structured line from Powertools, plus the platform's REPORT line). */
const LOG_BYTES_PER_MESSAGE = 700;
/** Every invocation a cold start: worst case, as above. */
const COLD_START_SHARE = 1;
/**
 * What a global secondary index adds to the size of an item it holds: the index key attribute
 * (`unseenPk` = `MBX#<mailbox>`, ~40 bytes) and DynamoDB's 100 bytes of index overhead per item.
 */
const UNSEEN_INDEX_ITEM_EXTRA_BYTES = 140;
/** Node runtime start-up on Lambda before our module loads (ms), a typical figure. */
const RUNTIME_INIT_MS = 120;

interface Profile {
  readonly messages: number;
  readonly avgBytes: number;
  readonly avgParts: number;
  readonly avgPartBytes: number;
  readonly avgSummaryBytes: number;
  readonly avgEntryBytes: number;
  readonly avgChunks: number;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function configuredMemory(fn: 'router' | 'api', fallback: number): number {
  const file = `${ROOT}lib/mail-relay.ts`;
  if (!existsSync(file)) return fallback;
  const text = readFileSync(file, 'utf8');
  const m = new RegExp(`entry: HANDLER_ENTRIES\\.${fn},[\\s\\S]{0,400}?memorySize: (\\d+)`).exec(text);
  return m?.[1] === undefined ? fallback : Number(m[1]);
}

/** The corpus as the router sees it: sizes of what it stores per message. */
async function corpusProfile(): Promise<Profile | null> {
  const dir = corpusDir();
  if (dir === null) return null;
  const parser = new MailparserAdapter();
  let bytes = 0;
  let parts = 0;
  let partBytes = 0;
  let summaryBytes = 0;
  let entryBytes = 0;
  let chunks = 0;
  const files = corpusFiles(dir);
  for (const f of files) {
    const raw = readFileSync(f.path);
    bytes += raw.length;
    chunks += Math.max(1, Math.ceil(raw.length / PRICES.sesChunkBytes));
    const parsed = await parser.parse(raw);
    if (parsed.ok) {
      parts += parsed.parts.length;
      partBytes += parsed.parts.reduce((s, p) => s + p.content.length, 0);
      summaryBytes += Buffer.byteLength(JSON.stringify(parsed.summary));
      const s = parsed.summary;
      // The DynamoDB item: attribute names and values of the index entry (design.md §3).
      entryBytes +=
        300 +
        Buffer.byteLength(s.subject ?? '') +
        Buffer.byteLength(JSON.stringify(s.from)) +
        Buffer.byteLength(JSON.stringify(s.to)) +
        Buffer.byteLength(snippetOf(s));
    } else {
      summaryBytes += 100;
      entryBytes += 300;
    }
  }
  const n = files.length;
  return {
    messages: n,
    avgBytes: bytes / n,
    avgParts: parts / n,
    avgPartBytes: partBytes / n,
    avgSummaryBytes: summaryBytes / n,
    avgEntryBytes: entryBytes / n,
    avgChunks: chunks / n,
  };
}

function earlierValue(ctx: BenchContext, name: string): { value: number; from: string } | null {
  const now = ctx.earlier.get(name);
  if (now?.value != null) return { value: now.value, from: 'this run' };
  const stored = readResults()[name];
  if (stored?.value != null)
    return { value: stored.value, from: `results.json, ${stored.measuredAt.slice(0, 10)}` };
  return null;
}

const usd = (x: number) => round(x, 5);

export const cost: Benchmark = {
  name: 'cost',
  title: 'AWS cost per 1,000 received messages',
  async run(ctx) {
    const profile = (await corpusProfile()) ?? {
      messages: 0,
      avgBytes: 50 * 1024,
      avgParts: 1,
      avgPartBytes: 30 * 1024,
      avgSummaryBytes: 8 * 1024,
      avgEntryBytes: 800,
      avgChunks: 1,
    };
    const basis =
      profile.messages > 0
        ? `corpus average: ${(profile.avgBytes / 1024).toFixed(1)} KB, ${profile.avgParts.toFixed(2)} parts`
        : 'no corpus: assumed 50 KB, 1 part';
    const routerMb = configuredMemory('router', 1024);
    const apiMb = configuredMemory('api', 512);
    const cpu = earlierValue(ctx, 'pipeline-corpus.router-cpu');
    const cpuMs = cpu?.value ?? 10;
    const coldImport = earlierValue(ctx, 'bundles.router.import');
    const vcpu = Math.min(1, routerMb / FULL_VCPU_MB);
    const ioMs =
      LATENCY_MS.s3Put * (3 + profile.avgParts) +
      LATENCY_MS.s3Get +
      2 * LATENCY_MS.dynamoRead +
      LATENCY_MS.dynamoTransact;
    const durationMs = cpuMs / vcpu + ioMs;
    const n = 1000;

    const sesFee =
      (n * PRICES.sesPerThousandEmails) / 1000 + (n * profile.avgChunks * PRICES.sesPerThousandChunks) / 1000;
    const ses: Reference = { label: 'SES receiving fee', value: usd(sesFee), unit: 'USD' };

    // Per message: SES's PUT of inbound/, the router's PUT of the notification, the raw copy, each part and the summary.
    const puts = 1 + 1 + 1 + profile.avgParts + 1;
    const gets = 1;
    const lambda =
      (n / MESSAGES_PER_INVOCATION) * PRICES.lambdaPerRequest +
      n * (durationMs / 1000) * (routerMb / 1024) * PRICES.lambdaArmPerGbSecond;
    const coldMs = RUNTIME_INIT_MS + (coldImport?.value ?? 300);
    const cold = n * COLD_START_SHARE * (coldMs / 1000) * (routerMb / 1024) * PRICES.lambdaArmPerGbSecond;
    const s3Requests = n * (puts * PRICES.s3PutPerRequest + gets * PRICES.s3GetPerRequest);
    const storedBytes = 2 * profile.avgBytes + profile.avgPartBytes + profile.avgSummaryBytes + 1500;
    const s3Storage = ((n * storedBytes) / 1024 ** 3) * PRICES.s3StandardPerGbMonth;
    // TransactWriteItems costs 2 WCU per KB per item: the message item, the STAT counters (and the
    // commit number), the condition check that no deletion of the id is remembered, and the commit's
    // SEQ# item; plus strongly consistent reads: the idempotency read (the entry and the deletion
    // item) and the commit counter read just before the transaction. Mail arrives unread, so the
    // entry is also written to the sparse index of unread mail (docs/adr/0020-unseen-index.md): a
    // standard write of 1 WRU per KB of the projected item (all of it), outside the transaction's price.
    const indexItemUnits = Math.ceil((profile.avgEntryBytes + UNSEEN_INDEX_ITEM_EXTRA_BYTES) / 1024);
    const writeUnits = 2 * Math.ceil(profile.avgEntryBytes / 1024) + 2 + 2 + 2 + indexItemUnits;
    const readUnits = 3;
    const dynamo = n * (writeUnits * PRICES.dynamoPerWriteUnit + readUnits * PRICES.dynamoPerReadUnit);
    const queue = n * (SQS_REQUESTS_PER_MESSAGE * PRICES.sqsPerRequest + PRICES.snsPerPublish);
    const logs = ((n * LOG_BYTES_PER_MESSAGE) / 1024 ** 3) * PRICES.logsPerGbIngested;
    const total = lambda + cold + s3Requests + s3Storage + dynamo + queue + logs;
    // Reading each message once over the API: API Gateway + API Lambda (assumed 30 ms) + GetItem + S3 GET of the summary.
    const apiRead =
      n *
      (PRICES.apiGatewayHttpPerRequest +
        PRICES.lambdaPerRequest +
        0.03 * (apiMb / 1024) * PRICES.lambdaArmPerGbSecond +
        PRICES.dynamoPerReadUnit +
        PRICES.s3GetPerRequest);
    // Marking each message read once (PATCH seen): API Gateway + API Lambda (assumed 20 ms), the
    // entry's UpdateItem (1 WRU per KB) and its removal from the index of unread mail (1 WRU).
    // Marking it unread again costs the same, the index write then being the whole projected item.
    const seenWriteUnits = Math.ceil(profile.avgEntryBytes / 1024) + 1;
    const markSeen =
      n *
      (PRICES.apiGatewayHttpPerRequest +
        PRICES.lambdaPerRequest +
        0.02 * (apiMb / 1024) * PRICES.lambdaArmPerGbSecond +
        seenWriteUnits * PRICES.dynamoPerWriteUnit);

    const row = (name: string, label: string, value: number, note: string): Measurement =>
      measured({ name: `cost.${name}`, label, value: usd(value), unit: 'USD', reference: ses, note });
    return [
      measured({
        name: 'cost.ses-fee',
        label: 'SES receiving fee per 1,000 messages (reference)',
        value: usd(sesFee),
        unit: 'USD',
        note: `$0.10 per 1,000 + $0.09 per 1,000 chunks of 256 KB; ${profile.avgChunks.toFixed(2)} chunks per message (${basis})`,
      }),
      row(
        'lambda',
        'router Lambda: requests + duration',
        lambda,
        `${routerMb} MB arm64, ${durationMs.toFixed(0)} ms per message = ${cpuMs.toFixed(1)} ms CPU (${cpu?.from ?? 'assumed'}) ÷ ${vcpu.toFixed(2)} vCPU + ${ioMs.toFixed(0)} ms of assumed S3/DynamoDB round trips; one invocation per message`,
      ),
      row(
        'cold-starts',
        'router Lambda: INIT billed, every invocation cold (worst case)',
        cold,
        `${coldMs.toFixed(0)} ms = ${RUNTIME_INIT_MS} ms runtime + ${coldImport === null ? 'assumed 300' : `${coldImport.value}`} ms bundle import`,
      ),
      row('s3-requests', 'S3 requests', s3Requests, `${puts.toFixed(2)} PUT + ${gets} GET per message`),
      row(
        's3-storage',
        'S3 storage, per month kept',
        s3Storage,
        `${(storedBytes / 1024).toFixed(1)} KB per message: inbound/ + mailbox copy + parts + summary + notification (inbound/ expires after 30 days)`,
      ),
      row(
        'dynamodb',
        'DynamoDB on-demand',
        dynamo,
        `${writeUnits} WRU (transaction of entry + STAT + deletion check + commit number, ${indexItemUnits} for the unread index) + ${readUnits} RRU per message`,
      ),
      row(
        'queue',
        'SNS publish + SQS',
        queue,
        `1 publish + ${SQS_REQUESTS_PER_MESSAGE} SQS requests per message`,
      ),
      row('logs', 'CloudWatch Logs ingestion', logs, `${LOG_BYTES_PER_MESSAGE} bytes per message`),
      measured({
        name: 'cost.total',
        label: 'our overhead per 1,000 received messages (all rows above but SES)',
        value: usd(total),
        unit: 'USD',
        reference: ses,
        target: '≤ SES receiving fee',
        meets: total <= sesFee,
        note: `worst case (one cold invocation per message); plus fixed per month: idle SQS polling by Lambda, the link secret (${PRICES.secretsManagerPerSecretMonth.toFixed(2)} USD)`,
      }),
      row(
        'api-read',
        'reading each message once over the API (informational)',
        apiRead,
        `API Gateway HTTP API + ${apiMb} MB API Lambda (30 ms assumed) + GetItem + S3 GET`,
      ),
      row(
        'mark-seen',
        'marking each message read once over the API (informational)',
        markSeen,
        `API Gateway HTTP API + ${apiMb} MB API Lambda (20 ms assumed) + ${seenWriteUnits} WRU (the entry's UpdateItem, its removal from the unread index)`,
      ),
    ];
  },
};
