/**
 * One big message through the router, in a fresh process, so the peak RSS is that message's.
 * `node --expose-gc --import tsx bench/children/big-message.ts <router|mailparser> <file> <dataDir>`
 * - `router`: the raw message is stored as `inbound/<id>` (streamed, untimed), then
 *   `processNotification` runs as the Lambda does: it reads the raw bytes from the blob store,
 *   parses, stores the copy, the summary and the decoded part, and commits the index.
 * - `mailparser`: the reference, `readFile` + bare `simpleParser` on the same file.
 * The kernel's peak-RSS counter is reset after the warm-up, so the peak is this message's alone.
 * Every Buffer→string conversion is watched: the longest string made is reported, which tells
 * whether anything copied the whole message into a string.
 */
import { createReadStream, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { simpleParser } from 'mailparser';
import { DEV_DEFAULT_CONFIG, parseConfig } from '../../functions/core/config.ts';
import { newSesMessageId } from '../../functions/core/ids.ts';
import { buildNotification, INBOUND_PREFIX } from '../../functions/core/notification.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { ingest, LOCAL_BUCKET } from '../../functions/local/ingest.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { processNotification } from '../../functions/pipeline/router.ts';
import { buildTextMessage } from '../../test/fixtures/build.ts';
import { sendToParent } from '../lib/ipc.ts';
import { procMemory } from '../lib/proc.ts';

const [mode = 'router', file = '', dataDir = ''] = process.argv.slice(2);

let largestString = 0;
let largestStringSource = '';
/** Strings this long get their call site recorded (cheap enough: a handful per message). */
const TRACE_STRING_CHARS = 1024 * 1024;

/** The first frames outside this file: who made the string. */
function callSite(): string {
  const frames = (new Error().stack ?? '')
    .split('\n')
    .slice(1)
    .map((l) => l.trim());
  return frames
    .filter((f) => !f.includes('big-message.ts'))
    .slice(0, 3)
    .map((f) =>
      f
        .replace(/^at /, '')
        .replace(/\(?(file:\/\/)?\/[^)]*node_modules\//, '(')
        .replace(/\(?\/[^)]*\/work\/main\//, '('),
    )
    .join(' < ');
}

/** Wraps the Buffer methods that make strings (toString goes through the *Slice ones) and TextDecoder. */
function watchStringConversions(): void {
  const proto = Buffer.prototype as unknown as Record<string, unknown>;
  for (const name of [
    'toString',
    'latin1Slice',
    'utf8Slice',
    'asciiSlice',
    'base64Slice',
    'base64urlSlice',
    'hexSlice',
    'ucs2Slice',
  ]) {
    const original = proto[name];
    if (typeof original !== 'function') continue;
    proto[name] = function (this: Buffer, ...args: unknown[]): unknown {
      const out: unknown = Reflect.apply(original, this, args);
      if (typeof out === 'string' && out.length > largestString) {
        largestString = out.length;
        largestStringSource = `Buffer#${name}${out.length >= TRACE_STRING_CHARS ? ` at ${callSite()}` : ''}`;
      }
      return out;
    };
  }
  const decoder = TextDecoder.prototype as unknown as Record<string, unknown>;
  const decode = decoder.decode;
  if (typeof decode === 'function') {
    decoder.decode = function (this: unknown, ...args: unknown[]): unknown {
      const out: unknown = Reflect.apply(decode, this, args);
      if (typeof out === 'string' && out.length > largestString) {
        largestString = out.length;
        largestStringSource = `TextDecoder#decode${out.length >= TRACE_STRING_CHARS ? ` at ${callSite()}` : ''}`;
      }
      return out;
    };
  }
}

function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc === 'function') gc();
}

/** Linux: writing 5 to clear_refs resets VmHWM to the current RSS. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  let run: () => Promise<void>;
  let messageBytes = 0;
  if (mode === 'router') {
    const runtime = createLocalRuntime({ config: parseConfig(DEV_DEFAULT_CONFIG), dataDir });
    // Warm-up: every module loaded and every statement prepared before the peak counter starts.
    await ingest(runtime, {
      body: await buildTextMessage({ to: 'bob@example.test' }),
      mailFrom: 'warm@sender.test',
      recipients: ['bob@example.test'],
      via: { protocol: 'LOCAL' },
    });
    const sesMessageId = newSesMessageId();
    const key = `${INBOUND_PREFIX}${sesMessageId}`;
    await runtime.blobs.put(key, createReadStream(file));
    messageBytes = (await runtime.blobs.head(key))?.size ?? 0;
    const notification = buildNotification({
      sesMessageId,
      receivedAt: new Date(),
      mailFrom: 'big@sender.test',
      recipients: ['bob@example.test'],
      verdicts: UNCHECKED_VERDICTS,
      bucketName: LOCAL_BUCKET,
    });
    run = async () => {
      const result = await processNotification(runtime, notification);
      if (result.parseFailed) throw new Error('the big message did not parse');
      await runtime.close();
    };
  } else {
    await simpleParser(await buildTextMessage());
    run = async () => {
      const raw = await readFile(file);
      messageBytes = raw.length;
      await simpleParser(raw);
    };
  }
  watchStringConversions();
  collectGarbage();
  const peakReset = resetPeak();
  const baseline = procMemory(process.pid);
  const t0 = performance.now();
  await run();
  const wallMs = performance.now() - t0;
  const after = procMemory(process.pid);
  sendToParent({
    type: 'ready',
    wallMs,
    messageBytes,
    baselineRssBytes: baseline.rssBytes,
    peakRssBytes: after.peakRssBytes,
    peakReset,
    largestString,
    largestStringSource,
  });
  process.disconnect?.();
}

main().catch((err: unknown) => {
  sendToParent({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
  process.disconnect?.();
});
