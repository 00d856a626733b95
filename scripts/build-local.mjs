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
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { INBOX_DIR, inboxAssetsPlugin } from '../lib/bundling/inbox-assets-plugin.mjs';

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
 * What a build was made from, beside it as `inputs.json` (written last): each file esbuild read (our
 * TypeScript, the bundled packages' files), the web inbox's folder and files, and tsconfig.json, by
 * absolute path, with the modification time and size it had. `npx mail-relay` (bin/mail-relay.js)
 * runs the build only while every one of them is unchanged, and the TypeScript otherwise.
 */
export const INPUTS_FILE = 'inputs.json';

/**
 * Chunks of earlier builds that this one does not use are deleted once they are this old: a relay
 * started from an earlier build still loads some of its chunks when first used (its lazy imports),
 * so they are not taken away under it at the next build.
 */
const OLD_CHUNK_MS = 7 * 24 * 3600 * 1000;

/** Writes `path` whole or not at all (a temporary file renamed over it): readers never see half of it. */
function writeAtomically(path, contents) {
  mkdirSync(dirname(path), { recursive: true });
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, contents);
  renameSync(temp, path);
}

/**
 * Bundles `entry` (a TypeScript file of this project) into `outdir`, entry as `<name>.mjs`.
 * node_modules stay imports but for `BUNDLED_PACKAGES` (native better-sqlite3 among them); dynamic `import()`s of our own
 * modules become chunks, loaded when first used as before. Safe beside processes running the
 * previous build: chunks are named by their content and added, each file is replaced whole, and the
 * entry and `inputs.json` are written last.
 * @param {{ entry?: string, outdir?: string, name?: string }} [options]
 */
export async function buildLocal(options = {}) {
  const entry = resolve(options.entry ?? join(PROJECT_ROOT, 'bin', 'cli.ts'));
  const outdir = resolve(options.outdir ?? DEFAULT_OUTDIR);
  const name = options.name ?? 'cli';
  // A file saved after this moment may have been read before it was saved: see inputs.json below.
  const started = Date.now() - 1000;
  const result = await build({
    entryPoints: [{ in: entry, out: name }],
    outdir,
    absWorkingDir: PROJECT_ROOT,
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
    metafile: true,
    write: false,
  });
  const entryFile = join(outdir, `${name}.mjs`);
  const written = new Set(result.outputFiles.map((f) => f.path));
  const chunksDir = join(outdir, 'chunks');
  // Chunks first (one already there has these contents: its name is their hash), the entry last.
  const outputs = result.outputFiles.toSorted(
    (a, b) => Number(a.path.startsWith(entryFile)) - Number(b.path.startsWith(entryFile)),
  );
  for (const file of outputs) {
    if (file.path.startsWith(chunksDir) && existsSync(file.path)) continue;
    writeAtomically(file.path, file.contents);
  }
  if (existsSync(chunksDir)) {
    const now = Date.now();
    for (const f of readdirSync(chunksDir)) {
      const path = join(chunksDir, f);
      if (!written.has(path) && now - statSync(path).mtimeMs > OLD_CHUNK_MS) unlinkSync(path);
    }
  }
  const inputs = [
    ...Object.keys(result.metafile.inputs).map((p) => resolve(PROJECT_ROOT, p)),
    INBOX_DIR,
    ...readdirSync(INBOX_DIR).map((f) => join(INBOX_DIR, f)),
    join(PROJECT_ROOT, 'tsconfig.json'),
  ];
  /** @type {Record<string, [number, number]>} */
  const seen = {};
  let savedMeanwhile = false;
  for (const path of inputs) {
    const s = statSync(path, { throwIfNoEntry: false });
    if (s === undefined) continue;
    seen[path] = [s.mtimeMs, s.size];
    savedMeanwhile ||= s.mtimeMs > started;
  }
  // A file saved while esbuild ran may be in the build as it was before: without inputs.json the CLI
  // runs the TypeScript until the next build.
  if (savedMeanwhile) rmSync(join(outdir, INPUTS_FILE), { force: true });
  else writeAtomically(join(outdir, INPUTS_FILE), `${JSON.stringify({ inputs: seen })}\n`);
  return entryFile;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildLocal({ outdir: process.argv[2] === undefined ? DEFAULT_OUTDIR : resolve(process.argv[2]) }).catch(
    (err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exitCode = 1;
    },
  );
}
