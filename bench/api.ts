/**
 * Issue 7, item 4: the HTTP API on a mailbox of 100,000 messages against one of 1,000 (flatness),
 * with a Node HTTP client over loopback (keep-alive, like any real client): p50/p99 of sequential
 * requests, and requests/s with 8 in flight. The server runs in its own process.
 */
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { BenchChild } from './lib/child.ts';
import { knobs } from './lib/env.ts';
import { type IpcMessage, numberField, stringField } from './lib/ipc.ts';
import { type Benchmark, type Measurement, measured, notMeasured } from './lib/types.ts';
import { errorText, percentile, round } from './lib/util.ts';

const BIG = 'big@example.test';
const SMALL = 'small@example.test';
const SMALL_COUNT = 1000;
const P99_TARGET_MS = 10;
/** "Flat": the big mailbox's p99 within 1.5× the small one's, or 1 ms of it (sub-ms noise is not growth). */
const FLAT_FACTOR = 1.5;
const FLAT_SLACK_MS = 1;
const WARMUP_REQUESTS = 200;
const CONCURRENCY = 8;

interface MailboxInfo {
  readonly token: string;
  readonly deepCursor: string | null;
  readonly messages: number;
}

interface Endpoint {
  readonly key: string;
  readonly label: string;
  readonly path: (mailbox: string, info: MailboxInfo) => string | null;
  readonly target: boolean;
}

function mailboxInfo(ready: IpcMessage, mailbox: string): MailboxInfo {
  const all = ready.mailboxes;
  if (typeof all !== 'object' || all === null) throw new Error('ready has no mailboxes');
  const info = (all as Record<string, unknown>)[mailbox];
  if (typeof info !== 'object' || info === null) throw new Error(`ready has no ${mailbox}`);
  const { token, deepCursor, messages } = info as Record<string, unknown>;
  if (typeof token !== 'string' || typeof messages !== 'number') throw new Error(`bad info for ${mailbox}`);
  return { token, deepCursor: typeof deepCursor === 'string' ? deepCursor : null, messages };
}

function get(agent: Agent, port: number, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, agent, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          if (status !== 200) chunks.push(c);
        });
        res.on('end', () => {
          if (status === 200) resolve(status);
          else
            reject(
              new Error(`GET ${path}: ${status} ${Buffer.concat(chunks).toString('utf8').slice(0, 200)}`),
            );
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function latencies(
  agent: Agent,
  port: number,
  path: string,
  token: string,
  n: number,
): Promise<number[]> {
  for (let i = 0; i < WARMUP_REQUESTS; i++) await get(agent, port, path, token);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await get(agent, port, path, token);
    out.push(performance.now() - t0);
  }
  return out.sort((a, b) => a - b);
}

async function throughput(
  agent: Agent,
  port: number,
  path: string,
  token: string,
  n: number,
): Promise<number> {
  let issued = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (issued < n) {
      issued += 1;
      await get(agent, port, path, token);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return n / ((performance.now() - t0) / 1000);
}

export const apiBench: Benchmark = {
  name: 'api',
  title: 'HTTP API on 100,000 messages',
  async run(ctx) {
    let started: { child: BenchChild; ready: IpcMessage };
    try {
      ctx.log(`  filling the index: ${knobs.apiMessages.toLocaleString('en-US')} + ${SMALL_COUNT} entries…`);
      started = await BenchChild.start('children/api-server.ts', {
        args: [join(ctx.workDir, 'data'), String(knobs.apiMessages), String(SMALL_COUNT)],
        readyTimeoutMs: 300_000,
      });
    } catch (err) {
      return [
        notMeasured(
          'api',
          'HTTP API',
          'ms',
          `p99 ≤ ${P99_TARGET_MS} ms`,
          `API server did not start: ${errorText(err)}`,
        ),
      ];
    }
    const { child, ready } = started;
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    try {
      const port = numberField(ready, 'port');
      const id = stringField(ready, 'id');
      const partId = stringField(ready, 'partId');
      const base = (m: string) => `/v1/mailboxes/${encodeURIComponent(m)}`;
      const endpoints: Endpoint[] = [
        {
          key: 'list-first',
          label: 'LIST first page (100 items)',
          path: (m) => `${base(m)}/messages`,
          target: true,
        },
        {
          key: 'list-deep',
          label: 'LIST deep cursor (100 before the oldest)',
          path: (m, info) =>
            info.deepCursor === null
              ? null
              : `${base(m)}/messages?cursor=${encodeURIComponent(info.deepCursor)}`,
          target: true,
        },
        { key: 'stat', label: 'STAT', path: (m) => base(m), target: true },
        {
          key: 'get-message',
          label: 'GET message (parsed JSON)',
          path: (m) => `${base(m)}/messages/${id}`,
          target: false,
        },
        {
          key: 'get-part',
          label: 'GET part (100 KB attachment)',
          path: (m) => `${base(m)}/messages/${id}/parts/${partId}`,
          target: false,
        },
      ];
      const big = mailboxInfo(ready, BIG);
      const small = mailboxInfo(ready, SMALL);
      const rows: Measurement[] = [];
      for (const ep of endpoints) {
        const bigPath = ep.path(BIG, big);
        const smallPath = ep.path(SMALL, small);
        const name = `api.${ep.key}`;
        if (bigPath === null || smallPath === null) {
          rows.push(notMeasured(name, ep.label, 'ms', '', 'no deep cursor (mailbox smaller than a page)'));
          continue;
        }
        try {
          const smallLat = await latencies(agent, port, smallPath, small.token, knobs.apiRequests);
          const bigLat = await latencies(agent, port, bigPath, big.token, knobs.apiRequests);
          const rps = await throughput(agent, port, bigPath, big.token, knobs.apiRequests);
          const p99 = percentile(bigLat, 0.99);
          const p99Small = percentile(smallLat, 0.99);
          const flat = p99 <= Math.max(FLAT_FACTOR * p99Small, p99Small + FLAT_SLACK_MS);
          ctx.log(
            `  ${ep.label}: p50 ${percentile(bigLat, 0.5).toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, ${rps.toFixed(0)} req/s`,
          );
          rows.push(
            measured({
              name: `${name}.p99`,
              label: `${ep.label}: p99 at ${big.messages.toLocaleString('en-US')} messages`,
              value: round(p99, 2),
              unit: 'ms',
              reference: {
                label: `p99 at ${small.messages.toLocaleString('en-US')}`,
                value: round(p99Small, 2),
                unit: 'ms',
              },
              target: ep.target ? `≤ ${P99_TARGET_MS} ms, flat from 1,000` : '',
              meets: ep.target ? p99 <= P99_TARGET_MS && flat : null,
              note: `p50 ${percentile(bigLat, 0.5).toFixed(2)} ms (${percentile(smallLat, 0.5).toFixed(2)} ms at ${small.messages.toLocaleString('en-US')}); ${knobs.apiRequests} sequential requests`,
            }),
            measured({
              name: `${name}.rps`,
              label: `${ep.label}: requests/s, ${CONCURRENCY} in flight`,
              value: round(rps, 0),
              unit: 'req/s',
              reference: {
                label: 'sequential, 1 / p50',
                value: round(1000 / percentile(bigLat, 0.5), 0),
                unit: 'req/s',
              },
            }),
          );
        } catch (err) {
          rows.push(
            notMeasured(
              `${name}.p99`,
              ep.label,
              'ms',
              ep.target ? `≤ ${P99_TARGET_MS} ms` : '',
              errorText(err),
            ),
          );
        }
      }
      return rows;
    } finally {
      agent.destroy();
      await child.stop();
    }
  },
};
