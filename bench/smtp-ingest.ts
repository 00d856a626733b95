/**
 * Issue 7, item 1: SMTP ingest. 5 KB messages from 8 connections into
 * - a bare npm smtp-server that discards (the ceiling of the SMTP layer),
 * - the same plus write + fsync of each message (the ceiling of a durable server on this disk),
 * - the local relay (`250` only after fsync, delivery and the index commit),
 * first reusing each connection (`smtp-source -d`), then one message per connection. Throughput is
 * counted by the server over a window after a warm-up; memory is the server process's own.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type BenchChild, startSmtpServerChild } from './lib/child.ts';
import { generatorChoice, knobs } from './lib/env.ts';
import { numberField } from './lib/ipc.ts';
import { MiB } from './lib/proc.ts';
import {
  type GeneratorKind,
  postfixTool,
  type SinkProcess,
  startLoad,
  startSmtpSink,
} from './lib/smtp-load.ts';
import { countSyscalls, hasStrace } from './lib/syscalls.ts';
import { type BenchContext, type Benchmark, type Measurement, measured, notMeasured } from './lib/types.ts';
import { errorText, removeDir, round, sleep } from './lib/util.ts';

const SESSIONS = 8;
const MESSAGE_BYTES = 5 * 1024;
const DURABLE_TARGET = 2000;
const RSS_TARGET_BYTES = 200 * 1024 * 1024;
const PER_CONNECTION_TARGET = 1000;
/**
 * The bare smtp-server discard reference as issue 7 measured it on the machine where it set the
 * targets (2 cores). The "at the issue's machine's speed" rows scale a run's figure by it over the
 * same reference of that run, so that a target set in msg/s can be read in any state of a VM whose
 * speed halves and doubles. The discard server is CPU-bound as the relay is; scaled by it, the
 * relay's figures of a slow, a calm and a fast phase of this VM agree within ~20% (docs/performance.md,
 * twenty-second pass), where scaled by write + fsync or by smtp-sink they did not.
 */
const ISSUE_DISCARD_RATE = 11_100;
/** Where the "flat memory" comparison starts: early enough, past start-up and the first caches. */
const RSS_MARK_MESSAGES = 10_000;

type ServerUnderTest =
  | { readonly kind: 'discard' | 'fsync' | 'relay'; readonly greeting: 'default' | 'prompt' }
  | { readonly kind: 'sink' };

interface RunResult {
  readonly rate: number;
  readonly windowSeconds: number;
  /** CPU cores the server used during the window (null for smtp-sink, which is not our child). */
  readonly serverCores: number | null;
  readonly generatorCores: number;
  readonly peakRssBytes: number | null;
  readonly rssAtMarkBytes: number | null;
  readonly totalMessages: number;
  readonly failed: number;
}

interface MemoryPhase {
  readonly until: number;
  readonly maxSeconds: number;
}

function describe(server: ServerUnderTest): string {
  if (server.kind === 'sink') return 'postfix smtp-sink';
  return `${server.kind} (${server.greeting} greeting)`;
}

async function runOnce(
  ctx: BenchContext,
  server: ServerUnderTest,
  generator: GeneratorKind,
  perConnection: boolean,
  seconds: number,
  memory?: MemoryPhase,
): Promise<RunResult> {
  const dir = join(ctx.workDir, `${server.kind}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  let child: BenchChild | null = null;
  let sink: SinkProcess | null = null;
  let port: number;
  const profileDir = process.env.BENCH_CPU_PROF;
  if (server.kind === 'sink') {
    sink = await startSmtpSink();
    port = sink.port;
  } else {
    const started = await startSmtpServerChild({
      args: [server.kind, server.greeting],
      env: { BENCH_DATA_DIR: dir },
      nodeFlags:
        profileDir !== undefined && server.kind === 'relay'
          ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]
          : [],
    });
    child = started.child;
    port = numberField(started.ready, 'port');
  }
  const load = startLoad(generator, { port, sessions: SESSIONS, messageBytes: MESSAGE_BYTES, perConnection });
  const counted = async (): Promise<{ accepted: number; failed: number }> => {
    if (child === null) return { accepted: load.sent(), failed: 0 };
    const reply = await child.request({ type: 'count' }, 'count', 10_000);
    return { accepted: numberField(reply, 'accepted'), failed: numberField(reply, 'failed') };
  };
  const check = () => {
    const failure = load.failure();
    if (failure !== null) throw new Error(failure);
  };
  try {
    ctx.log(`  ${describe(server)}, ${perConnection ? 'one message per connection' : 'connections reused'}…`);
    await sleep(knobs.warmupSeconds * 1000);
    check();
    const c0 = await counted();
    const t0 = performance.now();
    const s0 = child?.cpuSeconds() ?? 0;
    const g0 = load.cpuSeconds();
    await sleep(seconds * 1000);
    check();
    const c1 = await counted();
    const t1 = performance.now();
    const windowSeconds = (t1 - t0) / 1000;
    const serverCores = child === null ? null : (child.cpuSeconds() - s0) / windowSeconds;
    const generatorCores = (load.cpuSeconds() - g0) / windowSeconds;
    let total = c1.accepted;
    let rssAtMark: number | null = null;
    if (memory !== undefined && child !== null) {
      const started = performance.now();
      while (total < memory.until && performance.now() - started < memory.maxSeconds * 1000) {
        await sleep(1000);
        check();
        total = (await counted()).accepted;
        if (rssAtMark === null && total >= RSS_MARK_MESSAGES) rssAtMark = child.memory().rssBytes;
      }
    }
    const peakRssBytes = child?.memory().peakRssBytes ?? null;
    const failed = (await counted()).failed;
    const rate = (c1.accepted - c0.accepted) / windowSeconds;
    ctx.log(
      `    ${Math.round(rate)} msg/s (server ${serverCores === null ? '?' : serverCores.toFixed(2)} cores, ` +
        `generator ${generatorCores.toFixed(2)} cores${peakRssBytes === null ? '' : `, peak RSS ${Math.round(peakRssBytes / MiB)} MB`})`,
    );
    return {
      rate,
      windowSeconds,
      serverCores,
      generatorCores,
      peakRssBytes,
      rssAtMarkBytes: rssAtMark,
      totalMessages: total,
      failed,
    };
  } finally {
    await load.stop();
    await child?.stop();
    await sink?.stop();
    await removeDir(dir);
  }
}

/** Messages counted under strace: enough for stable per-message averages, few enough to be quick. */
const SYSCALL_MESSAGES = 300;

interface SyscallProfile {
  readonly messages: number;
  readonly syncs: number;
  readonly opens: number;
  readonly total: number;
}

/** Syscalls per message of a server under the same load, counted with strace (see lib/syscalls.ts). */
async function syscallRun(
  ctx: BenchContext,
  kind: 'fsync' | 'relay',
  generator: GeneratorKind,
): Promise<SyscallProfile> {
  const dir = join(ctx.workDir, `strace-${kind}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  const { child, ready } = await startSmtpServerChild({
    args: [kind, 'default'],
    env: { BENCH_DATA_DIR: join(dir, 'data') },
  });
  const load = startLoad(generator, {
    port: numberField(ready, 'port'),
    sessions: SESSIONS,
    messageBytes: MESSAGE_BYTES,
    perConnection: false,
  });
  const count = async () => numberField(await child.request({ type: 'count' }, 'count', 30_000), 'accepted');
  try {
    ctx.log(`  ${kind}: syscalls per message (strace)…`);
    await sleep(knobs.warmupSeconds * 1000);
    const counter = await countSyscalls(child.pid, join(dir, 'strace.txt'));
    const c0 = await count();
    const deadline = performance.now() + 90_000;
    let c1 = c0;
    while (c1 - c0 < SYSCALL_MESSAGES && performance.now() < deadline) {
      await sleep(250);
      c1 = await count();
    }
    const calls = await counter.stop();
    const messages = Math.max(1, (await count()) - c0);
    const per = (...names: string[]) => names.reduce((s, n) => s + (calls.get(n) ?? 0), 0) / messages;
    return {
      messages,
      syncs: per('fsync', 'fdatasync'),
      opens: per('openat', 'open'),
      total: [...calls.values()].reduce((a, b) => a + b, 0) / messages,
    };
  } finally {
    await load.stop();
    await child.stop();
    await removeDir(dir);
  }
}

function cores(r: RunResult, generator: GeneratorKind): string {
  const server = r.serverCores === null ? '' : `server ${r.serverCores.toFixed(2)} cores, `;
  return `${server}${generator} ${r.generatorCores.toFixed(2)} cores`;
}

/**
 * A diagnostic row: `rate` as it would read on the machine where issue 7 set its targets, i.e. scaled
 * by that machine's bare smtp-server discard figure over this run's. Its reference is the target, so
 * the ratio says how far the relay is from it whatever state the VM is in; no verdict (the target
 * row has it).
 */
function atIssueSpeed(
  name: string,
  what: string,
  rate: number,
  discardRate: number,
  target: number,
): Measurement {
  return measured({
    name,
    label: `${what}, at the issue's machine's speed (diagnostic)`,
    value: round((rate * ISSUE_DISCARD_RATE) / discardRate, 0),
    unit: 'msg/s',
    reference: { label: 'the target', value: target, unit: 'msg/s' },
    note:
      `${round(rate, 0).toLocaleString('en-US')} msg/s × ${ISSUE_DISCARD_RATE.toLocaleString('en-US')} / ` +
      `${round(discardRate, 0).toLocaleString('en-US')}: this run's bare smtp-server discard read ` +
      `${round(discardRate / ISSUE_DISCARD_RATE, 2)}× the issue's`,
  });
}

export const smtpIngest: Benchmark = {
  name: 'smtp-ingest',
  title: 'SMTP ingest (5 KB messages, 8 loopback connections)',
  async run(ctx) {
    const choice = generatorChoice();
    const hasSource = postfixTool('smtp-source') !== null;
    if (choice === 'smtp-source' && !hasSource) {
      return [notMeasured('smtp-ingest', 'SMTP ingest', 'msg/s', '', 'smtp-source not installed')];
    }
    const generator: GeneratorKind = choice === 'auto' ? (hasSource ? 'smtp-source' : 'node') : choice;
    const hasSink = postfixTool('smtp-sink') !== null;
    const gen = `generator: ${generator}`;
    const rows: Measurement[] = [];
    const attempt = async (
      name: string,
      label: string,
      body: () => Promise<Measurement[]>,
      unit = 'msg/s',
      target = '',
    ): Promise<void> => {
      try {
        rows.push(...(await body()));
      } catch (err) {
        ctx.log(`  ${name} failed: ${errorText(err)}`);
        rows.push(notMeasured(name, label, unit, target, errorText(err)));
      }
    };
    const secs = knobs.ingestSeconds;

    // Connections reused: the throughput figures.
    let discard: RunResult | null = null;
    await attempt('smtp-ingest.reuse.discard', 'bare smtp-server, discard', async () => {
      const r = await runOnce(ctx, { kind: 'discard', greeting: 'default' }, generator, false, secs);
      discard = r;
      return [
        measured({
          name: 'smtp-ingest.reuse.discard',
          label: 'bare smtp-server, discard (reference)',
          value: round(r.rate, 0),
          unit: 'msg/s',
          note: `${gen}; ${cores(r, generator)}; peak RSS ${Math.round((r.peakRssBytes ?? 0) / MiB)} MB`,
        }),
      ];
    });
    const discardRef = () =>
      discard === null
        ? null
        : { label: 'bare smtp-server, discard', value: round(discard.rate, 0), unit: 'msg/s' };

    if (hasSink) {
      await attempt('smtp-ingest.reuse.generator-ceiling', 'generator → smtp-sink', async () => {
        const r = await runOnce(ctx, { kind: 'sink' }, generator, false, secs);
        const ref = discardRef();
        return [
          measured({
            name: 'smtp-ingest.reuse.generator-ceiling',
            label: `${generator} → postfix smtp-sink (generator ceiling)`,
            value: round(r.rate, 0),
            unit: 'msg/s',
            reference: ref,
            target: '> discard (the generator is not the bottleneck)',
            meets: ref === null ? null : r.rate > ref.value,
            note: `${gen}; ${generator} ${r.generatorCores.toFixed(2)} cores`,
          }),
        ];
      });
    } else {
      rows.push(
        notMeasured(
          'smtp-ingest.reuse.generator-ceiling',
          `${generator} → smtp-sink (generator ceiling)`,
          'msg/s',
          '> discard',
          'smtp-sink not installed (apt-get install postfix)',
        ),
      );
    }

    let fsync: RunResult | null = null;
    await attempt('smtp-ingest.reuse.fsync', 'smtp-server, write + fsync', async () => {
      const r = await runOnce(ctx, { kind: 'fsync', greeting: 'default' }, generator, false, secs);
      fsync = r;
      return [
        measured({
          name: 'smtp-ingest.reuse.fsync',
          label: 'smtp-server, write + fsync each message (reference)',
          value: round(r.rate, 0),
          unit: 'msg/s',
          reference: discardRef(),
          note: `${gen}; ${cores(r, generator)}`,
        }),
      ];
    });

    await attempt(
      'smtp-ingest.reuse.relay',
      'local relay, durable',
      async () => {
        const r = await runOnce(ctx, { kind: 'relay', greeting: 'prompt' }, generator, false, secs, {
          until: knobs.memoryMessages,
          maxSeconds: knobs.memoryMaxSeconds,
        });
        const f = fsync as RunResult | null;
        const d = discard as RunResult | null;
        const peak = r.peakRssBytes ?? 0;
        const reachedAll = r.totalMessages >= knobs.memoryMessages;
        return [
          measured({
            name: 'smtp-ingest.reuse.relay',
            label: 'local relay, durable (fsync + deliver + index before 250)',
            value: round(r.rate, 0),
            unit: 'msg/s',
            reference: f === null ? null : { label: 'write + fsync', value: round(f.rate, 0), unit: 'msg/s' },
            target: `≥ ${DURABLE_TARGET.toLocaleString('en-US')} msg/s`,
            meets: r.rate >= DURABLE_TARGET,
            note:
              `${gen}; ${cores(r, generator)}` +
              (d === null ? '' : `; ${round(r.rate / d.rate, 2)}× discard`) +
              (r.failed > 0 ? `; ${r.failed} failed` : ''),
          }),
          ...(d === null
            ? []
            : [
                atIssueSpeed(
                  'smtp-ingest.reuse.relay-at-issue-speed',
                  'local relay, durable',
                  r.rate,
                  d.rate,
                  DURABLE_TARGET,
                ),
              ]),
          measured({
            name: 'smtp-ingest.reuse.relay-peak-rss',
            label: `local relay, peak RSS after ${r.totalMessages.toLocaleString('en-US')} messages`,
            value: round(peak / MiB, 1),
            unit: 'MB',
            reference:
              r.rssAtMarkBytes === null
                ? null
                : {
                    label: `RSS at ${RSS_MARK_MESSAGES.toLocaleString('en-US')} messages`,
                    value: round(r.rssAtMarkBytes / MiB, 1),
                    unit: 'MB',
                  },
            target: `≤ 200 MB after ${knobs.memoryMessages.toLocaleString('en-US')} messages`,
            meets: reachedAll ? peak <= RSS_TARGET_BYTES : null,
            note: reachedAll
              ? 'VmHWM of the relay process'
              : `only ${r.totalMessages} messages within ${knobs.memoryMaxSeconds} s; VmHWM of the relay process`,
          }),
        ];
      },
      'msg/s',
      `≥ ${DURABLE_TARGET} msg/s`,
    );

    if (hasStrace()) {
      await attempt(
        'smtp-ingest.reuse.relay-syncs',
        'relay: fsyncs per message',
        async () => {
          const ref = await syscallRun(ctx, 'fsync', generator);
          const relay = await syscallRun(ctx, 'relay', generator);
          return [
            measured({
              name: 'smtp-ingest.reuse.relay-syncs',
              label: 'local relay: fsync + fdatasync calls per message (diagnostic)',
              value: round(relay.syncs, 2),
              unit: 'calls',
              reference: { label: 'write + fsync server', value: round(ref.syncs, 2), unit: 'calls' },
              note: `strace -c over ${relay.messages} messages; a sync costs ~1 ms of disk time here, so > 1 per message caps throughput below the reference`,
            }),
            measured({
              name: 'smtp-ingest.reuse.relay-syscalls',
              label: 'local relay: syscalls per message (diagnostic)',
              value: round(relay.total, 1),
              unit: 'calls',
              reference: { label: 'write + fsync server', value: round(ref.total, 1), unit: 'calls' },
              note: `${relay.opens.toFixed(1)} opens per message (reference ${ref.opens.toFixed(1)}); futex wake-ups of the libuv pool included`,
            }),
          ];
        },
        'calls',
      );
    } else {
      rows.push(
        notMeasured(
          'smtp-ingest.reuse.relay-syncs',
          'relay: fsyncs per message',
          'calls',
          '',
          'strace not installed (apt-get install strace)',
        ),
      );
    }

    // One message per connection: connection set-up and the greeting dominate.
    const conn = knobs.connSeconds;
    let sinkPerConn: RunResult | null = null;
    if (hasSink) {
      await attempt('smtp-ingest.per-connection.sink', 'smtp-sink, one per connection', async () => {
        const r = await runOnce(ctx, { kind: 'sink' }, generator, true, conn);
        sinkPerConn = r;
        return [
          measured({
            name: 'smtp-ingest.per-connection.sink',
            label: 'one per connection: postfix smtp-sink (reference)',
            value: round(r.rate, 0),
            unit: 'msg/s',
            note: `${gen}; ${generator} ${r.generatorCores.toFixed(2)} cores`,
          }),
        ];
      });
    }
    const sinkRef = () => {
      const s = sinkPerConn as RunResult | null;
      return s === null
        ? null
        : { label: 'smtp-sink, one per connection', value: round(s.rate, 0), unit: 'msg/s' };
    };
    await attempt(
      'smtp-ingest.per-connection.smtp-server',
      'bare smtp-server, one per connection',
      async () => {
        const r = await runOnce(ctx, { kind: 'discard', greeting: 'default' }, generator, true, conn);
        return [
          measured({
            name: 'smtp-ingest.per-connection.smtp-server',
            label: 'one per connection: bare smtp-server, 100 ms greeting delay',
            value: round(r.rate, 0),
            unit: 'msg/s',
            reference: sinkRef(),
            note: `${gen}; ${cores(r, generator)}`,
          }),
        ];
      },
    );
    await attempt(
      'smtp-ingest.per-connection.prompt',
      'PromptGreetingSMTPServer, one per connection',
      async () => {
        const r = await runOnce(ctx, { kind: 'discard', greeting: 'prompt' }, generator, true, conn);
        return [
          measured({
            name: 'smtp-ingest.per-connection.prompt',
            label: 'one per connection: smtp-server greeting at once (earlyTalkerDelay 0), discard',
            value: round(r.rate, 0),
            unit: 'msg/s',
            reference: sinkRef(),
            note: `${gen}; ${cores(r, generator)}`,
          }),
        ];
      },
    );
    await attempt(
      'smtp-ingest.per-connection.relay',
      'local relay, one per connection',
      async () => {
        const r = await runOnce(ctx, { kind: 'relay', greeting: 'prompt' }, generator, true, conn);
        const d = discard as RunResult | null;
        return [
          measured({
            name: 'smtp-ingest.per-connection.relay',
            label: 'one per connection: local relay, durable',
            value: round(r.rate, 0),
            unit: 'msg/s',
            reference: sinkRef(),
            target: `≥ ${PER_CONNECTION_TARGET.toLocaleString('en-US')} msg/s`,
            meets: r.rate >= PER_CONNECTION_TARGET,
            note: `${gen}; ${cores(r, generator)}${r.failed > 0 ? `; ${r.failed} failed` : ''}`,
          }),
          ...(d === null
            ? []
            : [
                atIssueSpeed(
                  'smtp-ingest.per-connection.relay-at-issue-speed',
                  'one per connection: local relay',
                  r.rate,
                  d.rate,
                  PER_CONNECTION_TARGET,
                ),
              ]),
        ];
      },
      'msg/s',
      `≥ ${PER_CONNECTION_TARGET} msg/s`,
    );
    return rows;
  },
};
