#!/usr/bin/env node
// Runs every test/**/*.test.ts with node's test runner (Node 20 does not expand globs itself).
// Extra arguments are passed through as file filters: `node scripts/run-tests.mjs routing`.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildLocal } from './build-local.mjs';

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [join(dir, e.name)] : [],
  );
}
const filters = process.argv.slice(2);
const files = walk('test')
  .sort()
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
/**
 * A bound on each test file (Node 20 applies --test-timeout to a file's run as a whole): without
 * one, a file that hangs (a promise nothing settles, a child process that never exits) holds the
 * whole run until CI's own limit, and the log does not say which file it was. An hour is about five
 * times the longest file seen on a loaded machine (test/contract/aws.test.ts: 12.5 minutes at load
 * average 17, against moto_server), so it cuts no file that is merely slow.
 */
const FILE_TIMEOUT_MS = 60 * 60 * 1000;
/**
 * `npm start`'s build first (under a second): the suites run the CLI as users do, `bin/mail-relay.js`
 * in a child process, some 250 times, and it runs the build while it is current (docs/adr/0014): ~0.3 s
 * of CPU a command instead of the ~1.2 s tsx takes to load its TypeScript. The build is made from the
 * files the tests run; the TypeScript path is tested on its own (test/e2e/cli.test.ts).
 */
await buildLocal();
const r = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=2',
    `--test-timeout=${FILE_TIMEOUT_MS}`,
    '--test-reporter=spec',
    ...files,
  ],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);
