/**
 * `node --import tsx bench/ab.ts <git-ref> [rounds] [seconds] [reuse|per-connection]`: the relay of
 * `<git-ref>` (a checkout in a temporary git worktree sharing this node_modules) against the working
 * tree's, under the same smtp-source load, in alternating runs of `bench/profile.ts` without the
 * profiler (A B, B A, A B, …), and prints each pair's ratio and their median.
 *
 * Why: this VM's speed moves by up to ~45% within minutes, so two figures taken a few minutes apart
 * say little about a change; runs back to back, alternating which goes first, do. A tool for
 * deciding whether a change is worth it, not a measurement of the table (`npm run bench` is that).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { median, removeDir } from './lib/util.ts';

const ROOT = resolve(import.meta.dirname, '..');

interface Run {
  readonly msgsPerSecond: number;
  readonly cpuMsPerMessage: number;
}

/** One `profile.ts` run in `dir`; its first line is `relay: N messages in S s (R msg/s), C ms CPU per message …`. */
function profileRun(dir: string, seconds: number, mode: string): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(dir, 'bench/profile.ts'), String(seconds), 'relay', mode],
      { cwd: dir, env: { ...process.env, BENCH_NO_PROF: '1' }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const m = /\(([\d.]+) msg\/s\), ([\d.]+) ms CPU per message/.exec(out);
      if (code !== 0 || m === null) {
        reject(new Error(`profile.ts in ${dir} exited ${code}: ${out.trim().slice(0, 300)}`));
        return;
      }
      resolvePromise({ msgsPerSecond: Number(m[1]), cpuMsPerMessage: Number(m[2]) });
    });
  });
}

async function main(): Promise<void> {
  const [ref, roundsArg = '4', secondsArg = '6', mode = 'reuse'] = process.argv.slice(2);
  if (ref === undefined || !['reuse', 'per-connection'].includes(mode)) {
    console.error('usage: node --import tsx bench/ab.ts <git-ref> [rounds] [seconds] [reuse|per-connection]');
    process.exitCode = 2;
    return;
  }
  const rounds = Number(roundsArg);
  const seconds = Number(secondsArg);
  const scratch = mkdtempSync(join(tmpdir(), 'mail-relay-ab-'));
  const base = join(scratch, 'base');
  execFileSync('git', ['worktree', 'add', '--detach', '--quiet', base, ref], { cwd: ROOT, stdio: 'inherit' });
  try {
    // The base shares this checkout's dependencies: compare code, not installs.
    if (!existsSync(join(base, 'node_modules')))
      symlinkSync(join(ROOT, 'node_modules'), join(base, 'node_modules'));
    const ratios: number[] = [];
    const cpuRatios: number[] = [];
    console.log(`A = ${ref}, B = working tree; ${rounds} pairs of ${seconds} s runs (${mode})`);
    for (let r = 0; r < rounds; r++) {
      const baseFirst = r % 2 === 0;
      const first = await profileRun(baseFirst ? base : ROOT, seconds, mode);
      const second = await profileRun(baseFirst ? ROOT : base, seconds, mode);
      const [a, b] = baseFirst ? [first, second] : [second, first];
      ratios.push(b.msgsPerSecond / a.msgsPerSecond);
      cpuRatios.push(b.cpuMsPerMessage / a.cpuMsPerMessage);
      console.log(
        `  pair ${r + 1} (${baseFirst ? 'A first' : 'B first'}): A ${a.msgsPerSecond} msg/s, ${a.cpuMsPerMessage} ms CPU; ` +
          `B ${b.msgsPerSecond} msg/s, ${b.cpuMsPerMessage} ms CPU; B/A ${(ratios.at(-1) ?? 0).toFixed(2)}×`,
      );
    }
    console.log(
      `median B/A: throughput ${median(ratios).toFixed(2)}× (pairs ${ratios.map((x) => x.toFixed(2)).join(', ')}), ` +
        `CPU per message ${median(cpuRatios).toFixed(2)}×`,
    );
  } finally {
    execFileSync('git', ['worktree', 'remove', '--force', base], { cwd: ROOT, stdio: 'inherit' });
    await removeDir(scratch);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
