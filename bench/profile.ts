/**
 * `node --import tsx bench/profile.ts [seconds] [relay|discard|fsync] [reuse|per-connection]`: runs one SMTP server
 * under smtp-source load (8 sessions, 5 KB) with `--cpu-prof`, then prints where its CPU went
 * (self time by package and by function). The profile file is kept for Chrome DevTools.
 * Runs the TypeScript through tsx (not the bundle `npm start` and the benchmark run), so that the
 * profile names our source files; expect ~25 MB more RSS and a little more CPU than the benchmark.
 * Not part of `npm run bench`: a tool for finding what to fix, not a measurement.
 */
import { mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BenchChild } from './lib/child.ts';
import { summarizeProfile } from './lib/cpu-profile.ts';
import { numberField } from './lib/ipc.ts';
import { MiB, procCpuSplit } from './lib/proc.ts';
import { postfixTool, startLoad } from './lib/smtp-load.ts';
import { removeDir, sleep } from './lib/util.ts';

async function main(): Promise<void> {
  const [secondsArg = '15', kind = 'relay', mode = 'reuse'] = process.argv.slice(2);
  const seconds = Number(secondsArg);
  const profileDir = join(tmpdir(), `mail-relay-profile-${Date.now()}`);
  const dataDir = join(profileDir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const { child, ready } = await BenchChild.start('children/smtp-server.ts', {
    args: [kind, 'prompt'],
    env: { BENCH_DATA_DIR: dataDir },
    // BENCH_NO_PROF=1: the same run without the profiler's own cost, to compare variants.
    nodeFlags: process.env.BENCH_NO_PROF === '1' ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
  });
  const load = startLoad(postfixTool('smtp-source') === null ? 'node' : 'smtp-source', {
    port: numberField(ready, 'port'),
    sessions: 8,
    messageBytes: 5 * 1024,
    perConnection: mode === 'per-connection',
  });
  const cpu0 = child.cpuSeconds();
  const split0 = procCpuSplit(child.pid);
  await sleep(seconds * 1000);
  const count = numberField(await child.request({ type: 'count' }, 'count'), 'accepted');
  const cpu = child.cpuSeconds() - cpu0;
  const split1 = procCpuSplit(child.pid);
  const perMessage = (s: number) => ((s * 1000) / Math.max(1, count)).toFixed(2);
  const peak = child.memory().peakRssBytes;
  await load.stop();
  await child.stop();
  await removeDir(dataDir);
  const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
  console.log(
    `${kind}: ${count} messages in ${seconds} s (${(count / seconds).toFixed(0)} msg/s), ` +
      `${perMessage(cpu)} ms CPU per message (user ${perMessage(split1.user - split0.user)}, system ${perMessage(split1.system - split0.system)}), ` +
      `peak RSS ${(peak / MiB).toFixed(0)} MB`,
  );
  if (file === undefined) {
    await removeDir(profileDir);
    return;
  }
  const summary = summarizeProfile(join(profileDir, file));
  console.log(
    `\nprofile ${join(profileDir, file)} (${summary.totalMs.toFixed(0)} ms sampled)\n\nself time by package:`,
  );
  for (const p of summary.byPackage) console.log(`  ${(p.share * 100).toFixed(1).padStart(5)}%  ${p.name}`);
  console.log('\nself time by function:');
  for (const f of summary.byFunction) console.log(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.name}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
