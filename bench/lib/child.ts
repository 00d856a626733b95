/**
 * Runs a process under test (a TypeScript file, through tsx, or its JavaScript build) as a child
 * with an IPC channel, so its memory is its own and can be read from /proc while the harness drives
 * the load.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLocal, PROJECT_ROOT, startNodeFlags } from '../../scripts/build-local.mjs';
import { type IpcMessage, isIpcMessage } from './ipc.ts';
import { type ProcMemory, procCpuSeconds, procMemory } from './proc.ts';

export const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url));

export interface ChildOptions {
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Extra node flags, e.g. `--cpu-prof`. */
  readonly nodeFlags?: readonly string[];
  /** A JavaScript build of the script to run instead, with plain `node` (no tsx): see `startSmtpServerChild`. */
  readonly compiled?: string;
  /** How long to wait for `ready`. */
  readonly readyTimeoutMs?: number;
}

export class BenchChild {
  private readonly waiters: ((msg: IpcMessage) => boolean)[] = [];
  private exited = false;
  private readonly exitPromise: Promise<number | null>;
  stderrTail = '';

  private constructor(private readonly proc: ChildProcess) {
    this.exitPromise = new Promise((resolve) => {
      proc.once('exit', (code) => {
        this.exited = true;
        resolve(code);
      });
    });
    // A child that dies mid-run must fail its benchmark, not the harness.
    proc.on('error', () => {});
    proc.on('message', (raw: unknown) => {
      if (!isIpcMessage(raw)) return;
      const i = this.waiters.findIndex((w) => w(raw));
      if (i >= 0) this.waiters.splice(i, 1);
    });
    proc.stderr?.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-4000);
      process.stderr.write(chunk);
    });
  }

  /** Starts `bench/<script>` and waits for its `ready` message, which is returned. */
  static async start(
    script: string,
    options: ChildOptions = {},
  ): Promise<{ child: BenchChild; ready: IpcMessage }> {
    const proc = fork(options.compiled ?? `${BENCH_DIR}${script}`, [...(options.args ?? [])], {
      execArgv: [
        ...(options.compiled === undefined ? ['--import', 'tsx'] : []),
        ...(options.nodeFlags ?? []),
      ],
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    const child = new BenchChild(proc);
    const ready = await child.next('ready', options.readyTimeoutMs ?? 60_000);
    return { child, ready };
  }

  get pid(): number {
    if (this.proc.pid === undefined) throw new Error('child has no pid');
    return this.proc.pid;
  }

  /** The next message of `type` (or an `error` message, which rejects). */
  next(type: string, timeoutMs: number): Promise<IpcMessage> {
    return new Promise((resolve, reject) => {
      if (this.exited) {
        reject(
          new Error(`child exited before sending ${type}: ${this.stderrTail.trim().split('\n').pop() ?? ''}`),
        );
        return;
      }
      const timer = setTimeout(() => {
        reject(new Error(`child sent no ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onExit = () => {
        clearTimeout(timer);
        reject(
          new Error(`child exited before sending ${type}: ${this.stderrTail.trim().split('\n').pop() ?? ''}`),
        );
      };
      this.proc.once('exit', onExit);
      this.waiters.push((msg) => {
        if (msg.type !== type && msg.type !== 'error') return false;
        clearTimeout(timer);
        this.proc.off('exit', onExit);
        if (msg.type === 'error') reject(new Error(`child: ${String(msg.message)}`));
        else resolve(msg);
        return true;
      });
    });
  }

  /** Sends a request and waits for the reply of type `replyType`. */
  async request(msg: IpcMessage, replyType: string, timeoutMs = 600_000): Promise<IpcMessage> {
    const reply = this.next(replyType, timeoutMs);
    this.proc.send(msg, () => {});
    return reply;
  }

  memory(): ProcMemory {
    return procMemory(this.pid);
  }

  cpuSeconds(): number {
    return procCpuSeconds(this.pid);
  }

  /** Asks the child to stop, and kills it if it does not within `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.exited) return;
    // With a callback a failed send (the child already disconnecting) is not an 'error' event.
    if (this.proc.connected) this.proc.send({ type: 'stop' }, () => {});
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(timer);
  }

  /** Resolves when the child exits by itself (a one-shot job). */
  waitExit(): Promise<number | null> {
    return this.exitPromise;
  }
}

let smtpServerBuild: Promise<string> | undefined;

/**
 * Starts `children/smtp-server.ts` the way `npm start` runs the relay: bundled by
 * scripts/build-local.mjs (no TypeScript loader in the process) and with the Node flags of the
 * `start` script, so the relay's memory and CPU are what a user's relay has. The references (discard,
 * fsync) run the same way, so they differ from the relay only in what they do with DATA.
 */
export async function startSmtpServerChild(
  options: ChildOptions,
): Promise<{ child: BenchChild; ready: IpcMessage }> {
  smtpServerBuild ??= buildLocal({
    entry: `${BENCH_DIR}children/smtp-server.ts`,
    // Inside the project, so the bundle's package imports resolve to node_modules as the relay's do.
    outdir: join(PROJECT_ROOT, 'dist', 'bench'),
    name: 'smtp-server',
  });
  return BenchChild.start('children/smtp-server.ts', {
    ...options,
    compiled: await smtpServerBuild,
    nodeFlags: [...startNodeFlags(), ...(options.nodeFlags ?? [])],
  });
}
