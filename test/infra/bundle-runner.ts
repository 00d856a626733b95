/**
 * Runs a Lambda bundle the way Lambda would: a fresh `node` process, the bundle's own directory as
 * cwd (outside the project, so nothing can come from node_modules), only the function's variables.
 */
import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../helpers/process.ts';

/** What deps.ts requires besides the configuration (which comes from the bundle itself). */
export const FUNCTION_ENV = { BUCKET_NAME: 'mail-relay-bundle-test', TABLE_NAME: 'mail-relay-bundle-test' };

/**
 * Imports `<dir>/index.mjs` in a new node process (cwd = the bundle's directory) and, with an event,
 * calls `handler(event, context)`; the result comes back as the last stdout line. `node` is the
 * binary that runs it: this process's by default, the Lambda runtime's (test/helpers/lambda-node.ts)
 * to run it on the Node that Lambda runs.
 *
 * As Lambda's nodejs24.x runtime does (its runtime interface client, v4), a handler declared with a
 * third (callback) parameter is refused at load, and the context has no callbackWaitsForEmptyEventLoop.
 */
const RUNNER = `
import { readFileSync } from 'node:fs';
const [file, eventFile] = process.argv.slice(1);
const mod = await import(new URL('file://' + file).href);
if (typeof mod.handler !== 'function') { console.error('no exported handler'); process.exit(3); }
if (mod.handler.length >= 3) { console.error('a callback-based handler: nodejs24.x runs async handlers only'); process.exit(4); }
if (eventFile) {
  const context = {
    functionName: 'smoke', functionVersion: '$LATEST', memoryLimitInMB: '512', awsRequestId: 'req-smoke',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:smoke', logGroupName: 'smoke', logStreamName: 'smoke',
    getRemainingTimeInMillis: () => 30000,
  };
  const result = await mod.handler(JSON.parse(readFileSync(eventFile, 'utf8')), context);
  process.stdout.write('\\n@@RESULT ' + JSON.stringify(result) + '\\n');
}
`;

export async function runBundle(
  dir: string,
  env: Readonly<Record<string, string>>,
  event?: unknown,
  node: string = process.execPath,
): Promise<{ code: number | null; result: unknown; output: string; warnings: string[] }> {
  let eventFile: string | undefined;
  const args = ['--enable-source-maps', '--input-type=module', '-e', RUNNER, join(dir, 'index.mjs')];
  if (event !== undefined) {
    // Beside the bundle's directory (not in it: the directory must stay exactly what ships).
    eventFile = join(dir, '..', `event-${randomUUID()}.json`);
    writeFileSync(eventFile, JSON.stringify(event));
    args.push(eventFile);
  }
  // Only what Lambda would give the function: PATH for node itself, and the function's variables.
  const r = await run(node, args, {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', ...env },
  }).finally(() => eventFile && rmSync(eventFile, { force: true }));
  const line = r.stdout.split('\n').find((l) => l.startsWith('@@RESULT '));
  return {
    code: r.code,
    result: line ? (JSON.parse(line.slice('@@RESULT '.length)) as unknown) : undefined,
    output: `${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`,
    warnings: processWarnings(r.stderr),
  };
}

/**
 * The process warnings Node wrote to a stderr (`(node:123) [DEP0169] DeprecationWarning: …`,
 * `(node:123) ExperimentalWarning: …`): in Lambda they are lines in the function's log, and a
 * deprecation that warns in one Node major is often an error in a later one.
 */
export function processWarnings(stderr: string): string[] {
  return stderr.match(/^\(node:\d+\) (?:\[\w+\] )?\w*Warning: .*$/gm) ?? [];
}
