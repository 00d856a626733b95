#!/usr/bin/env node
// `npx mail-relay`: runs `npm start`'s build of the CLI (dist/local/cli.mjs) while it is current,
// and otherwise registers tsx and runs the TypeScript, so that the CLI never needs a build step.
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The `--stack` commands load the AWS SDK, which prints nine lines on Node 20 about its releases after
// January 2027 needing Node 22: the lockfile pins a release that runs on 20 (see README, Node).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const BUILD = new URL('../dist/local/', import.meta.url);

/**
 * Whether `npm start`'s build is current: every file it was made from (its `inputs.json`, see
 * scripts/build-local.mjs) still has the modification time and size it had then. About 2 ms for its
 * ~220 files, against the ~0.7 s more that tsx takes to load a command's TypeScript (docs/adr/0014).
 */
function buildIsCurrent() {
  try {
    const { inputs } = JSON.parse(readFileSync(fileURLToPath(new URL('inputs.json', BUILD)), 'utf8'));
    if (statSync(fileURLToPath(new URL('cli.mjs', BUILD)), { throwIfNoEntry: false }) === undefined)
      return false;
    return Object.entries(inputs).every(([path, [mtimeMs, size]]) => {
      const s = statSync(path, { throwIfNoEntry: false });
      return s !== undefined && s.mtimeMs === mtimeMs && s.size === size;
    });
  } catch {
    return false; // never built (or by an earlier version, without inputs.json)
  }
}

if (buildIsCurrent()) {
  await import(new URL('cli.mjs', BUILD).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('./cli.ts');
}
