/**
 * `npm run bench` runs every benchmark; `npm run bench -- <name> [<name>…]` runs those only.
 * Prints a markdown table, merges the rows into bench/results.json and rewrites the generated
 * block of docs/performance.md. A benchmark never fails the run on a number: what cannot be
 * measured (a missing tool, a part not built yet) becomes a "not measured" row.
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { apiBench } from './api.ts';
import { bigMessage } from './big-message.ts';
import { bundles } from './bundles.ts';
import { cost } from './cost.ts';
import {
  describeMachine,
  mergeResults,
  readResults,
  renderTable,
  updatePerformanceDoc,
  writeResults,
} from './lib/report.ts';
import { type Benchmark, type Measurement, notMeasured } from './lib/types.ts';
import { errorText, load1, removeDir } from './lib/util.ts';
import { pipelineCorpus } from './pipeline-corpus.ts';
import { smtpIngest } from './smtp-ingest.ts';

/** In run order: the cost model reads the durations the others measured. */
const BENCHMARKS: readonly Benchmark[] = [smtpIngest, pipelineCorpus, bigMessage, apiBench, bundles, cost];
/** `npm run bench` must finish within this on 2 cores (issue 7). */
const BUDGET_SECONDS = 600;

async function main(argv: readonly string[]): Promise<number> {
  const names = argv.filter((a) => !a.startsWith('-'));
  const unknown = names.filter((n) => !BENCHMARKS.some((b) => b.name === n));
  if (unknown.length > 0) {
    console.error(
      `unknown benchmark ${unknown.join(', ')}; known: ${BENCHMARKS.map((b) => b.name).join(', ')}`,
    );
    return 2;
  }
  const selected = names.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => names.includes(b.name));
  const root = process.env.BENCH_WORK_DIR ?? join(tmpdir(), `mail-relay-bench-${process.pid}`);
  mkdirSync(root, { recursive: true });
  const machine = describeMachine(root);
  const loadBefore = load1();
  const started = performance.now();
  const log = (line: string) => process.stderr.write(`${line}\n`);
  log(`mail-relay bench on ${machine}`);
  if (loadBefore > 1)
    log(`warning: load average ${loadBefore.toFixed(2)}: other work competes for the 2 cores`);

  const rows: Measurement[] = [];
  const earlier = new Map<string, Measurement>();
  try {
    for (const bench of selected) {
      const workDir = join(root, bench.name);
      mkdirSync(workDir, { recursive: true });
      const t0 = performance.now();
      log(`${bench.name}: ${bench.title}`);
      let got: Measurement[];
      try {
        got = await bench.run({ workDir, earlier, log });
      } catch (err) {
        log(`${bench.name} failed: ${errorText(err)}`);
        got = [notMeasured(bench.name, bench.title, '', '', `benchmark failed: ${errorText(err)}`)];
      } finally {
        await removeDir(workDir);
      }
      for (const m of got) earlier.set(m.name, m);
      rows.push(...got);
      log(`${bench.name}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
  } finally {
    await removeDir(root);
  }

  const seconds = (performance.now() - started) / 1000;
  const measuredAt = new Date().toISOString();
  const results = mergeResults(
    readResults(),
    selected.map((b) => b.name),
    rows,
    BENCHMARKS.map((b) => b.name),
    measuredAt,
  );
  writeResults(results);
  const thisRun = renderTable(rows.map((m) => ({ ...m, measuredAt })));
  console.log(thisRun);
  const header =
    `Last run ${measuredAt.slice(0, 16).replace('T', ' ')} UTC: \`npm run bench${names.length > 0 ? ` -- ${names.join(' ')}` : ''}\`, ` +
    `${seconds.toFixed(0)} s, on ${machine}; load average ${loadBefore.toFixed(2)} before, ${load1().toFixed(2)} after. ` +
    'Rows of benchmarks not in that run keep their earlier figures (dates in bench/results.json).';
  const allRows = Object.entries(results).map(([name, r]) => ({ name, ...r }));
  if (updatePerformanceDoc(renderTable(allRows), header)) log('docs/performance.md updated');
  log(
    `total ${seconds.toFixed(0)} s${seconds > BUDGET_SECONDS ? ` — over the ${BUDGET_SECONDS} s budget` : ''}`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
