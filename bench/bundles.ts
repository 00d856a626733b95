/**
 * Issue 7, item 5: the Lambda bundles that `cdk synth` builds with esbuild: bytes of each, and the
 * cold import time of each in a fresh Node process minus that of an empty module (the part a
 * cold start pays for our code). The synth runs offline into a scratch directory.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Benchmark, type Measurement, measured, notMeasured } from './lib/types.ts';
import { median, round } from './lib/util.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const IMPORT_RUNS = 7;
const SYNTH_TIMEOUT_MS = 420_000;

interface Target {
  readonly key: 'api' | 'router';
  readonly match: RegExp;
  readonly maxBytes: number;
  readonly maxImportMs: number;
}

const TARGETS: readonly Target[] = [
  { key: 'api', match: /api/i, maxBytes: 1024 * 1024, maxImportMs: 150 },
  { key: 'router', match: /router/i, maxBytes: 2 * 1024 * 1024, maxImportMs: 300 },
];

interface LambdaAsset {
  readonly logicalId: string;
  readonly dir: string;
  readonly env: Record<string, string>;
  readonly nodeOptions: string | undefined;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(v: Json | undefined): v is { [key: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Functions of the synthesized templates whose code is a local asset directory. */
function lambdaAssets(outDir: string): LambdaAsset[] {
  const out: LambdaAsset[] = [];
  for (const file of readdirSync(outDir).filter((f) => f.endsWith('.template.json'))) {
    const template = JSON.parse(readFileSync(join(outDir, file), 'utf8')) as Json;
    const resources = isObject(template) ? template.Resources : undefined;
    if (!isObject(resources)) continue;
    for (const [logicalId, resource] of Object.entries(resources)) {
      if (!isObject(resource) || resource.Type !== 'AWS::Lambda::Function') continue;
      const metadata = resource.Metadata;
      const assetPath = isObject(metadata) ? metadata['aws:asset:path'] : undefined;
      if (typeof assetPath !== 'string') continue;
      const props = resource.Properties;
      const environment = isObject(props) ? props.Environment : undefined;
      const vars = isObject(environment) ? environment.Variables : undefined;
      const env: Record<string, string> = {};
      let nodeOptions: string | undefined;
      if (isObject(vars)) {
        for (const [k, v] of Object.entries(vars)) {
          // References (bucket and table names) resolve only in AWS; a placeholder keeps config checks happy.
          const value = typeof v === 'string' ? v : `bench-placeholder-${k.toLowerCase()}`;
          if (k === 'NODE_OPTIONS') nodeOptions = value;
          else env[k] = value;
        }
      }
      out.push({ logicalId, dir: join(outDir, assetPath), env, nodeOptions });
    }
  }
  return out;
}

/**
 * What went into a bundle, from its source map: bytes of source per npm package (or `(ours)`),
 * largest first. Null when there is no source map.
 */
function packagesOf(file: string): { name: string; bytes: number }[] | null {
  const mapFile = `${file}.map`;
  if (!existsSync(mapFile)) return null;
  const map = JSON.parse(readFileSync(mapFile, 'utf8')) as Json;
  if (!isObject(map) || !Array.isArray(map.sources)) return null;
  const contents = Array.isArray(map.sourcesContent) ? map.sourcesContent : [];
  const sizes = new Map<string, number>();
  map.sources.forEach((source, i) => {
    if (typeof source !== 'string') return;
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(source);
    const name = m?.[1] ?? '(ours)';
    const content = contents[i];
    sizes.set(name, (sizes.get(name) ?? 0) + (typeof content === 'string' ? content.length : 0));
  });
  return [...sizes.entries()].map(([name, bytes]) => ({ name, bytes })).sort((a, b) => b.bytes - a.bytes);
}

function bundleFile(dir: string): string | null {
  for (const name of ['index.mjs', 'index.js', 'index.cjs'])
    if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

/** Milliseconds to import `file` in a fresh process (median of several), or an error text. */
function importMs(importer: string, file: string, env: NodeJS.ProcessEnv): number | string {
  const times: number[] = [];
  for (let i = 0; i < IMPORT_RUNS; i++) {
    const r = spawnSync(process.execPath, [importer, file], { env, encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0)
      return (r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n').slice(-3).join(' ');
    times.push(Number(r.stdout.trim()));
  }
  return median(times);
}

export const bundles: Benchmark = {
  name: 'bundles',
  title: 'Lambda bundles from cdk synth',
  async run(ctx) {
    const missing = [
      'cdk.json',
      'bin/app.ts',
      'functions/handlers/api.ts',
      'functions/handlers/router.ts',
    ].filter((f) => !existsSync(join(ROOT, f)));
    const skip = (why: string): Measurement[] =>
      TARGETS.flatMap((t) => [
        notMeasured(
          `bundles.${t.key}.bytes`,
          `${t.key} bundle size`,
          'bytes',
          `≤ ${t.maxBytes / 1024 / 1024} MB`,
          why,
        ),
        notMeasured(`bundles.${t.key}.import`, `${t.key} cold import`, 'ms', `≤ ${t.maxImportMs} ms`, why),
      ]);
    if (missing.length > 0) return skip(`${missing.join(', ')} not written yet`);
    const outDir = join(ctx.workDir, 'cdk.out');
    const configFile = process.env.MAIL_RELAY_CONFIG ?? join(ROOT, 'mail-relay.config.example.json');
    ctx.log('  npx cdk synth (esbuild bundling)…');
    const t0 = performance.now();
    const synth = spawnSync('npx', ['cdk', 'synth', '--quiet', '--no-notices', '--output', outDir], {
      cwd: ROOT,
      env: { ...process.env, MAIL_RELAY_CONFIG: configFile, CDK_DISABLE_VERSION_CHECK: '1' },
      encoding: 'utf8',
      timeout: SYNTH_TIMEOUT_MS,
    });
    const synthSeconds = (performance.now() - t0) / 1000;
    if (synth.status !== 0) {
      const why = `${synth.stderr || synth.stdout || synth.error?.message || ''}`
        .trim()
        .split('\n')
        .slice(-2)
        .join(' ');
      return skip(`cdk synth failed: ${why.slice(0, 300)}`);
    }
    ctx.log(`  synth ${synthSeconds.toFixed(0)} s`);
    const assets = lambdaAssets(outDir);
    const importer = join(ctx.workDir, 'import-timer.mjs');
    writeFileSync(
      importer,
      // Timed inside the process, so Node's own start-up is not in the figure; the empty module's time is subtracted.
      'const t0 = performance.now();\nawait import(process.argv[2]);\nprocess.stdout.write(String(performance.now() - t0));\n',
    );
    const empty = join(ctx.workDir, 'empty.mjs');
    writeFileSync(empty, 'export {};\n');
    const rows: Measurement[] = [];
    for (const t of TARGETS) {
      const asset = assets.find((a) => t.match.test(a.logicalId));
      const file = asset === undefined ? null : bundleFile(asset.dir);
      if (asset === undefined || file === null) {
        rows.push(
          ...skip(`no ${t.key} function with a bundled asset in the synthesized template`).filter((r) =>
            r.name.startsWith(`bundles.${t.key}.`),
          ),
        );
        continue;
      }
      const bytes = statSync(file).size;
      const mapBytes = existsSync(`${file}.map`) ? statSync(`${file}.map`).size : 0;
      const packages = packagesOf(file);
      const hasMailparser =
        packages === null
          ? readFileSync(file, 'latin1').includes('mailparser')
          : packages.some((p) => p.name === 'mailparser' || p.name === 'mailsplit');
      const top =
        packages === null
          ? ''
          : `; largest sources: ${packages
              .slice(0, 4)
              .map((p) => `${p.name} ${round(p.bytes / 1024, 0)} KB`)
              .join(', ')}`;
      const env: NodeJS.ProcessEnv = {
        PATH: process.env.PATH,
        AWS_REGION: 'us-east-1',
        AWS_DEFAULT_REGION: 'us-east-1',
        AWS_ACCESS_KEY_ID: 'bench',
        AWS_SECRET_ACCESS_KEY: 'bench',
        AWS_LAMBDA_FUNCTION_NAME: asset.logicalId,
        ...asset.env,
        ...(asset.nodeOptions === undefined ? {} : { NODE_OPTIONS: asset.nodeOptions }),
      };
      const base = importMs(importer, empty, env);
      const took = importMs(importer, file, env);
      rows.push(
        measured({
          name: `bundles.${t.key}.bytes`,
          label: `${t.key} Lambda bundle (${asset.logicalId})`,
          value: bytes,
          unit: 'bytes',
          reference: { label: 'budget', value: t.maxBytes, unit: 'bytes' },
          target: `≤ ${t.maxBytes / 1024 / 1024} MB${t.key === 'api' ? ', no mailparser' : ''}`,
          meets: bytes <= t.maxBytes && (t.key !== 'api' || !hasMailparser),
          note: `source map ${round(mapBytes / 1024, 0)} KB${hasMailparser ? '; contains mailparser' : '; no mailparser'}${top}`,
        }),
      );
      if (typeof took === 'string' || typeof base === 'string') {
        rows.push(
          notMeasured(
            `bundles.${t.key}.import`,
            `${t.key} cold import`,
            'ms',
            `≤ ${t.maxImportMs} ms`,
            `import failed: ${String(typeof took === 'string' ? took : base).slice(0, 200)}`,
          ),
        );
        continue;
      }
      rows.push(
        measured({
          name: `bundles.${t.key}.import`,
          label: `${t.key} bundle: cold import minus an empty module's`,
          value: round(took - base, 1),
          unit: 'ms',
          reference: { label: 'empty module', value: round(base, 1), unit: 'ms' },
          target: `≤ ${t.maxImportMs} ms`,
          meets: took - base <= t.maxImportMs,
          note: `median of ${IMPORT_RUNS} fresh processes, Node ${process.version} (Lambda runs 22)${asset.nodeOptions ? `, NODE_OPTIONS=${asset.nodeOptions}` : ''}`,
        }),
      );
    }
    return rows;
  },
};
