/**
 * Syscalls a process makes per unit of work, counted with `strace -c -f`. Unlike a rate, a count
 * does not move with the load of the machine, so it shows what a change to the ingest path
 * saved even on a busy box. strace slows the traced process down a lot: never time under it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export function hasStrace(): boolean {
  return spawnSync('sh', ['-c', 'command -v strace'], { stdio: 'ignore' }).status === 0;
}

export interface SyscallCounter {
  /** Stops counting; returns calls per syscall name. */
  stop(): Promise<Map<string, number>>;
}

export async function countSyscalls(pid: number, outFile: string): Promise<SyscallCounter> {
  const proc = spawn('strace', ['-c', '-f', '-p', String(pid), '-o', outFile], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  // strace prints "attached" per thread once it is in place.
  const deadline = Date.now() + 5000;
  while (!stderr.includes('attached') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    async stop() {
      proc.kill('SIGINT');
      await exited;
      const counts = new Map<string, number>();
      for (const line of readFileSync(outFile, 'utf8').split('\n')) {
        // % time, seconds, usecs/call, calls, [errors,] syscall
        const f = line.trim().split(/\s+/);
        const name = f[f.length - 1];
        if (f.length >= 5 && /^\d/.test(f[0] ?? '') && name !== undefined && name !== 'total') {
          counts.set(name, Number(f[3]));
        }
      }
      return counts;
    },
  };
}
