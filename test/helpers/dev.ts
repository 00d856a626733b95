/**
 * `mail-relay dev` in a child process, as a user runs it: for the suites that kill, restart or run
 * two of it. The parent's MAIL_RELAY_CONFIG / MAIL_RELAY_DATA_DIR never leak into the child.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { PROJECT_ROOT } from './env.ts';
import { freePort } from './net.ts';

export const BIN = join(PROJECT_ROOT, 'bin/mail-relay.js');

/** This process's environment without the relay's own variables, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { MAIL_RELAY_CONFIG: _c, MAIL_RELAY_DATA_DIR: _d, ...rest } = process.env;
  return { ...rest, ...extra };
}

export interface DevProcess {
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  /** Its SMTP port (the API's is another free port). */
  readonly port: number;
  /** Everything it has written so far, stdout and stderr. */
  output(): string;
}

/**
 * Starts `node <argv>` (default `bin/mail-relay.js dev`; behind `wrapper` if given) on `dataDir` with free ports, and waits
 * until it listens for SMTP; throws with its output if it exits first or is not up within 30 s.
 */
export async function startDev(
  dataDir: string,
  options: {
    argv?: readonly string[];
    env?: Record<string, string>;
    cwd?: string;
    /** A command that runs node, e.g. `['prlimit', '--nofile=64:64']` (it must exec it: same pid). */
    wrapper?: readonly [string, ...string[]];
  } = {},
): Promise<DevProcess> {
  const port = await freePort();
  const argv = [...(options.argv ?? [BIN, 'dev'])];
  const [command, ...args] = options.wrapper ?? [process.execPath];
  const child = spawn(command, options.wrapper === undefined ? argv : [...args, process.execPath, ...argv], {
    env: cleanEnv({
      MAIL_RELAY_DATA_DIR: dataDir,
      MAIL_RELAY_SMTP_PORT: String(port),
      MAIL_RELAY_API_PORT: String(await freePort()),
      ...options.env,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    out += c.toString();
  });
  const deadline = Date.now() + 30_000;
  while (!out.includes(`127.0.0.1:${port}`)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`dev did not start (exit ${child.exitCode}):\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, port, output: () => out };
}
