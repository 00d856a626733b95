/**
 * Knobs read from the environment. The defaults follow issue 7 (20 s ingest windows, 100,000
 * messages); smaller values are for trying the harness, and a run with them says so in its notes.
 */

function positiveNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new RangeError(`${name} must be a positive number, got ${raw}`);
  return value;
}

export const knobs = {
  /** Length of the measured window of each pipelined SMTP run. */
  ingestSeconds: positiveNumber('BENCH_INGEST_SECONDS', 20),
  /** Excluded from the window: connection set-up, JIT warm-up, first SQLite pages. */
  warmupSeconds: positiveNumber('BENCH_WARMUP_SECONDS', 2),
  /** Length of each one-message-per-connection window (steady after the first second). */
  connSeconds: positiveNumber('BENCH_CONN_SECONDS', 10),
  /** The durable run goes on until the relay has accepted this many, for the memory figure. */
  memoryMessages: positiveNumber('BENCH_MEMORY_MESSAGES', 100_000),
  /** ...but stops after this long whatever the count, to keep `npm run bench` under 10 minutes. */
  memoryMaxSeconds: positiveNumber('BENCH_MEMORY_MAX_SECONDS', 150),
  /** Messages in the big mailbox of the API benchmark. */
  apiMessages: positiveNumber('BENCH_API_MESSAGES', 100_000),
  /** Sequential requests per endpoint for the latency percentiles. */
  apiRequests: positiveNumber('BENCH_API_REQUESTS', 2000),
  /** Messages in flight through the router in the corpus run (an SQS batch is up to 10). */
  pipelineConcurrency: positiveNumber('BENCH_PIPELINE_CONCURRENCY', 8),
} as const;

/** `smtp-source` (postfix) when installed, else the Node generator; BENCH_GENERATOR forces one. */
export function generatorChoice(): 'smtp-source' | 'node' | 'auto' {
  const raw = process.env.BENCH_GENERATOR;
  if (raw === 'smtp-source' || raw === 'node') return raw;
  return 'auto';
}
