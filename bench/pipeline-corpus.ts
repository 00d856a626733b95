/**
 * Issue 7, item 2: every message of the shared corpus through the router (parse + route + store +
 * index, with the local adapters: fsync'd files and SQLite), against bare mailparser
 * `simpleParser` on the same bytes in the same process. The router runs as the Lambda does, from
 * an SES notification with the raw bytes in hand; `concurrency` messages are in flight at once
 * (an SQS batch brings up to 10), so fsync waits can overlap the parsing of other messages.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { MailparserAdapter } from '../functions/adapters/mailparser/mailparser-adapter.ts';
import { DEV_DEFAULT_CONFIG, parseConfig } from '../functions/core/config.ts';
import { ingest } from '../functions/local/ingest.ts';
import { createLocalRuntime } from '../functions/local/runtime.ts';
import { corpusDir, corpusFiles } from '../test/helpers/env.ts';
import { knobs } from './lib/env.ts';
import { runPool } from './lib/pool.ts';
import { MiB } from './lib/proc.ts';
import { type BenchContext, type Benchmark, type Measurement, measured, notMeasured } from './lib/types.ts';
import { median, removeDir, round } from './lib/util.ts';

const TARGET_RATIO = 0.8;
/**
 * Timed rounds. Each round times every contender once, one after the other (bare mailparser, our
 * adapter, the router with 8 in flight, the router one at a time), so a reference and the figure
 * compared with it see the same state of a shared machine; each contender's median round is
 * reported. One untimed round first (JIT, first use of every code path).
 */
const ROUNDS = 5;
const RECIPIENT = 'bob@example.test';

async function timeParse(raws: readonly Buffer[], parse: (raw: Buffer) => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  for (const raw of raws) await parse(raw);
  return (performance.now() - t0) / 1000;
}

/** Seconds to route every message once into a fresh data dir, and the CPU milliseconds per message. */
async function routeOnce(
  dataDir: string,
  raws: readonly Buffer[],
  concurrency: number,
): Promise<{ seconds: number; cpuMsPerMessage: number }> {
  const runtime = createLocalRuntime({ config: parseConfig(DEV_DEFAULT_CONFIG), dataDir });
  try {
    // `ingest` is the local pipeline as `dev` and `import` run it: the journal's group-committed
    // append (what makes it durable), then inbound/ + the router.
    const one = (raw: Buffer) =>
      ingest(runtime, {
        body: raw,
        mailFrom: 'sender@corpus.test',
        recipients: [RECIPIENT],
        via: { protocol: 'LOCAL' },
      });
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await runPool(raws, concurrency, async (raw) => {
      await one(raw);
    });
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return { seconds, cpuMsPerMessage: (cpu.user + cpu.system) / 1000 / Math.max(1, raws.length) };
  } finally {
    await runtime.close();
    await removeDir(dataDir);
  }
}

interface Round {
  bare: number;
  adapter: number;
  router: { seconds: number; cpuMsPerMessage: number };
  sequential: number;
}

async function timeRound(ctx: BenchContext, raws: readonly Buffer[], tag: string): Promise<Round> {
  const adapter = new MailparserAdapter();
  const bare = await timeParse(raws, (raw) => simpleParser(raw));
  const adapterSeconds = await timeParse(raws, (raw) => adapter.parse(raw));
  const router = await routeOnce(join(ctx.workDir, `pipeline-${tag}-c`), raws, knobs.pipelineConcurrency);
  const sequential = (await routeOnce(join(ctx.workDir, `pipeline-${tag}-s`), raws, 1)).seconds;
  return { bare, adapter: adapterSeconds, router, sequential };
}

/** The median of the rounds by `key` (seconds). */
function medianBy<T>(rounds: readonly T[], key: (r: T) => number): number {
  return median(rounds.map(key));
}

export const pipelineCorpus: Benchmark = {
  name: 'pipeline-corpus',
  title: 'router on the shared corpus vs bare mailparser',
  async run(ctx) {
    const dir = corpusDir();
    if (dir === null) {
      return [
        notMeasured(
          'pipeline-corpus.pipeline',
          'router on the corpus',
          'msg/s',
          `≥ ${TARGET_RATIO}× bare mailparser`,
          'no corpus (../shared/corpus or MAIL_RELAY_CORPUS)',
        ),
      ];
    }
    const raws = corpusFiles(dir).map((f) => readFileSync(f.path));
    const count = raws.length;
    const mb = raws.reduce((s, r) => s + r.length, 0) / MiB;
    ctx.log(`  ${count} messages, ${mb.toFixed(1)} MB`);

    await timeRound(ctx, raws, 'warm');
    const rounds: Round[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const done = await timeRound(ctx, raws, `r${r}`);
      rounds.push(done);
      ctx.log(
        `  round ${r + 1}: bare mailparser ${(count / done.bare).toFixed(0)} msg/s, adapter ${(count / done.adapter).toFixed(0)}, ` +
          `router ${(count / done.router.seconds).toFixed(0)} (${(count / done.sequential).toFixed(0)} one at a time)`,
      );
    }
    const concurrency = knobs.pipelineConcurrency;
    const bareSeconds = medianBy(rounds, (r) => r.bare);
    const adapterSeconds = medianBy(rounds, (r) => r.adapter);
    const pipelineSeconds = medianBy(rounds, (r) => r.router.seconds);
    const sequentialSeconds = medianBy(rounds, (r) => r.sequential);
    const concurrent = { cpuMsPerMessage: medianBy(rounds, (r) => r.router.cpuMsPerMessage) };
    // The spread of the ratio over the rounds, each round's router against that round's bare parse.
    const ratios = rounds.map((r) => r.bare / r.router.seconds).sort((a, b) => a - b);

    const bareRate = { label: 'bare simpleParser', value: round(count / bareSeconds, 0), unit: 'msg/s' };
    const corpusNote = `${count} messages, ${mb.toFixed(1)} MB`;
    const rows: Measurement[] = [
      measured({
        name: 'pipeline-corpus.bare-mailparser',
        label: 'bare mailparser simpleParser, default options (reference)',
        value: bareRate.value,
        unit: 'msg/s',
        note: `${corpusNote}; ${(mb / bareSeconds).toFixed(1)} MB/s`,
      }),
      measured({
        name: 'pipeline-corpus.adapter-parse',
        label: 'MailparserAdapter.parse alone (diagnostic)',
        value: round(count / adapterSeconds, 0),
        unit: 'msg/s',
        reference: bareRate,
        note: 'our options (no text→html, no checksum) plus sha256 of each part',
      }),
      measured({
        name: 'pipeline-corpus.router',
        label: `router: parse + route + store + index (${concurrency} in flight)`,
        value: round(count / pipelineSeconds, 0),
        unit: 'msg/s',
        reference: bareRate,
        target: `≥ ${TARGET_RATIO}× bare mailparser`,
        meets: bareSeconds / pipelineSeconds >= TARGET_RATIO,
        note:
          '`ingest`: journal append (group fsync), inbound/, router, local adapters (SQLite, files); ' +
          `ratio of each round ${ratios.map((x) => x.toFixed(2)).join(', ')} (median round reported)`,
      }),
      measured({
        name: 'pipeline-corpus.router-mbps',
        label: `router throughput in bytes (${concurrency} in flight)`,
        value: round(mb / pipelineSeconds, 1),
        unit: 'MB/s',
        reference: { label: 'bare simpleParser', value: round(mb / bareSeconds, 1), unit: 'MB/s' },
        target: `≥ ${TARGET_RATIO}× bare mailparser`,
        meets: bareSeconds / pipelineSeconds >= TARGET_RATIO,
      }),
      measured({
        name: 'pipeline-corpus.router-cpu',
        label: 'router CPU time per message (user + system)',
        value: round(concurrent.cpuMsPerMessage, 2),
        unit: 'ms',
        reference: {
          label: 'bare simpleParser wall time per message',
          value: round((bareSeconds * 1000) / count, 2),
          unit: 'ms',
        },
        note: 'input of the cost model (Lambda duration)',
      }),
      measured({
        name: 'pipeline-corpus.router-sequential',
        label: 'router, one message at a time (diagnostic)',
        value: round(count / sequentialSeconds, 0),
        unit: 'msg/s',
        reference: bareRate,
        note: 'every fsync waited for in turn: the cost of durability without overlap',
      }),
    ];
    return rows;
  },
};
