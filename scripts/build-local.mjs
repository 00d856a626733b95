#!/usr/bin/env node
// @ts-check
/**
 * Builds what `npm start` runs: the local relay's CLI (bin/cli.ts) as plain JavaScript in
 * `dist/local/` (esbuild: our TypeScript bundled, packages left to node_modules, one chunk per
 * lazily imported module), so the long-running server starts without a TypeScript loader.
 * See docs/adr/0014-local-server-process.md.
 *
 * Why not `node --import tsx` as the CLI commands run: tsx registers its loader on a thread of its
 * own and keeps every transpiled module's source, ~25 MB of the relay's resident memory (measured
 * in docs/performance.md), for a process that runs for days. The build takes well under a second.
 *
 * `node scripts/build-local.mjs [outdir]` builds (default `dist/local`). The module also exports
 * the build and the Node flags of `npm start` (read from package.json, the one place they live),
 * for the benchmark and the tests to run exactly what users run.
 */
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { inboxAssetsPlugin } from '../lib/bundling/inbox-assets-plugin.mjs';

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_OUTDIR = join(PROJECT_ROOT, 'dist', 'local');

/**
 * The shape `npm start` must have: build, then run the bundle with some Node flags. Whatever flags
 * stand between `node` and the bundle are the local server's process settings.
 */
const START_SCRIPT =
  /^node scripts\/build-local\.mjs && node((?: --[a-z-]+(?:=\S+)?)*) dist\/local\/cli\.mjs dev$/;

/** The Node flags `npm start` runs the relay with, e.g. `['--max-semi-space-size=4']`. */
export function startNodeFlags(packageJsonPath = join(PROJECT_ROOT, 'package.json')) {
  const start = JSON.parse(readFileSync(packageJsonPath, 'utf8')).scripts?.start;
  const match = typeof start === 'string' ? START_SCRIPT.exec(start) : null;
  if (match === null) {
    throw new Error(
      `package.json "start" is ${JSON.stringify(start)}; expected "node scripts/build-local.mjs && node [flags] dist/local/cli.mjs dev"`,
    );
  }
  return (match[1] ?? '').split(' ').filter((f) => f !== '');
}

/**
 * Packages bundled into the build rather than left to node_modules: pure ES modules whose files Node
 * would otherwise read all at once at start, a descriptor each. zod alone is ~100 files (its ~50
 * locales re-exported by its entry), hono and its middleware ~50: `npm start` needed an open-files
 * limit of ~112 to start, and died with EMFILE at 64 (docs/adr/0014-local-server-process.md,
 * 2026-11-29). Bundled together, so that there is one zod (the schemas of @hono/zod-openapi are ours).
 * CommonJS packages are read one at a time by `require` and stay external, as does native better-sqlite3.
 */
export const BUNDLED_PACKAGES = new Set([
  'zod',
  '@hono/zod-openapi',
  '@hono/zod-validator',
  '@asteasolutions/zod-to-openapi',
  'hono',
  '@hono/node-server',
]);

/** The package a bare import names: `@scope/name` or `name`. */
function packageOf(specifier) {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? specifier);
}

/** esbuild's `packages: 'external'` but for `BUNDLED_PACKAGES`. */
const externalPackagesBut = {
  name: 'external-packages-but',
  /** @param {import('esbuild').PluginBuild} b */
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (!args.path.startsWith('node:') && BUNDLED_PACKAGES.has(packageOf(args.path))) return undefined;
      return { path: args.path, external: true };
    });
  },
};

/**
 * Bundles `entry` (a TypeScript file of this project) into `outdir`, entry as `<name>.mjs`.
 * node_modules stay imports but for `BUNDLED_PACKAGES` (native better-sqlite3 among them); dynamic `import()`s of our own
 * modules become chunks, loaded when first used as before.
 * @param {{ entry?: string, outdir?: string, name?: string }} [options]
 */
export async function buildLocal(options = {}) {
  const entry = options.entry ?? join(PROJECT_ROOT, 'bin', 'cli.ts');
  const outdir = options.outdir ?? DEFAULT_OUTDIR;
  const name = options.name ?? 'cli';
  // Chunk names change with their content: drop the previous build's so stale ones do not pile up.
  rmSync(join(outdir, 'chunks'), { recursive: true, force: true });
  await build({
    entryPoints: [{ in: entry, out: name }],
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
    // Readable stack traces without a source-map step: names kept, nothing minified.
    keepNames: true,
    sourcemap: 'linked',
    // The web inbox's files as strings, so the built relay does not read them from the repository.
    plugins: [externalPackagesBut, inboxAssetsPlugin],
    logLevel: 'warning',
  });
  return join(outdir, `${name}.mjs`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildLocal({ outdir: process.argv[2] === undefined ? DEFAULT_OUTDIR : resolve(process.argv[2]) }).catch(
    (err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exitCode = 1;
    },
  );
}
