/**
 * Issue 7, item 3: a generated 40 MB message with a 29 MB attachment through the router: wall
 * time and peak RSS of the process, against bare mailparser on the same file, each in a fresh
 * process. Target: the peak grows by at most 3× the message size, and no string holds the whole
 * message.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildMessageOfSize } from '../test/fixtures/build.ts';
import { BenchChild } from './lib/child.ts';
import { type IpcMessage, numberField, stringField } from './lib/ipc.ts';
import { MiB } from './lib/proc.ts';
import { type Benchmark, type Measurement, measured, notMeasured } from './lib/types.ts';
import { errorText, round } from './lib/util.ts';

const MESSAGE_BYTES = 40 * MiB;
const RSS_FACTOR = 3;

async function runChild(mode: 'router' | 'mailparser', file: string, dataDir: string): Promise<IpcMessage> {
  // The child reports once, when done: its `ready` carries the result.
  const { child, ready } = await BenchChild.start('children/big-message.ts', {
    args: [mode, file, dataDir],
    nodeFlags: ['--expose-gc'],
    readyTimeoutMs: 300_000,
  });
  await child.stop();
  return ready;
}

export const bigMessage: Benchmark = {
  name: 'big-message',
  title: '40 MB message (29 MB attachment) through the router',
  async run(ctx) {
    const { raw, attachmentBytes } = await buildMessageOfSize(MESSAGE_BYTES);
    const file = join(ctx.workDir, 'big.eml');
    writeFileSync(file, raw);
    const sizeMb = raw.length / MiB;
    const attachmentMb = attachmentBytes.length / MiB;
    ctx.log(`  message ${sizeMb.toFixed(1)} MB, attachment ${attachmentMb.toFixed(1)} MB`);
    let reference: IpcMessage | null = null;
    try {
      reference = await runChild('mailparser', file, join(ctx.workDir, 'ref'));
    } catch (err) {
      ctx.log(`  reference failed: ${errorText(err)}`);
    }
    let result: IpcMessage;
    try {
      result = await runChild('router', file, join(ctx.workDir, 'router'));
    } catch (err) {
      return [
        notMeasured('big-message.wall', 'router, 40 MB message', 'ms', '', errorText(err)),
        notMeasured(
          'big-message.peak-rss',
          'router, peak RSS growth',
          'MB',
          `≤ ${RSS_FACTOR}× message size`,
          errorText(err),
        ),
      ];
    }
    const wallMs = numberField(result, 'wallMs');
    const growth = (numberField(result, 'peakRssBytes') - numberField(result, 'baselineRssBytes')) / MiB;
    const peak = numberField(result, 'peakRssBytes') / MiB;
    const largest = numberField(result, 'largestString');
    const refWall = reference === null ? null : numberField(reference, 'wallMs');
    const refGrowth =
      reference === null
        ? null
        : (numberField(reference, 'peakRssBytes') - numberField(reference, 'baselineRssBytes')) / MiB;
    const resetNote =
      result.peakReset === true ? '' : ' (peak counter could not be reset: includes start-up)';
    ctx.log(
      `  router ${wallMs.toFixed(0)} ms, peak RSS +${growth.toFixed(0)} MB (${peak.toFixed(0)} MB), largest string ${largest}`,
    );
    const rows: Measurement[] = [
      measured({
        name: 'big-message.wall',
        label: 'router, 40 MB message: wall time',
        value: round(wallMs, 0),
        unit: 'ms',
        reference:
          refWall === null
            ? null
            : { label: 'readFile + bare simpleParser', value: round(refWall, 0), unit: 'ms' },
        note: 'read from the blob store, parse, store copy + summary + part, index',
      }),
      measured({
        name: 'big-message.peak-rss',
        label: 'router, 40 MB message: peak RSS growth over the warmed-up process',
        value: round(growth, 1),
        unit: 'MB',
        reference: { label: 'message size', value: round(sizeMb, 1), unit: 'MB' },
        target: `≤ ${RSS_FACTOR}× message size`,
        meets: growth <= RSS_FACTOR * sizeMb,
        note:
          `absolute peak ${peak.toFixed(0)} MB` +
          (refGrowth === null ? '' : `; bare simpleParser grows ${refGrowth.toFixed(0)} MB`) +
          resetNote,
      }),
      measured({
        name: 'big-message.largest-string',
        label: 'router, 40 MB message: longest string made from a Buffer',
        value: round(largest / MiB, 2),
        unit: 'MB',
        reference: { label: 'message size', value: round(sizeMb, 1), unit: 'MB' },
        target: 'no string copy of the whole message (< 10% of it)',
        // A chunk-sized string is how streams work; one near the message size is a copy of it.
        meets: largest < raw.length / 10,
        note: `by ${stringField(result, 'largestStringSource') || 'nothing'}; Buffer#*Slice/toString and TextDecoder are watched`,
      }),
    ];
    return rows;
  },
};
