/**
 * The local HTTP API over a mailbox index filled directly (not through SMTP, which would take
 * minutes): `node --import tsx bench/children/api-server.ts <dataDir> <bigCount> <smallCount>`.
 * Each mailbox gets `count - 1` generated entries plus one real message routed through ingest
 * (the newest), so GET message and GET part have a summary and a decoded part to serve.
 * Reports the port, a token per mailbox, that message's id and part, and a cursor deep in the list.
 */
import { DEV_DEFAULT_CONFIG, parseConfig } from '../../functions/core/config.ts';
import { messageIdFor } from '../../functions/core/ids.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';
import { ingest } from '../../functions/local/ingest.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import type { MessageEntry } from '../../functions/ports/mailbox-index.ts';
import { buildMessageWithAttachment, pdfLikeBytes } from '../../test/fixtures/build.ts';
import { sendToParent, serveRequests } from '../lib/ipc.ts';

const [dataDir = '', bigArg = '100000', smallArg = '1000'] = process.argv.slice(2);
const BIG = 'big@example.test';
const SMALL = 'small@example.test';
/** Deliveries handed to the index per await: its group commit makes each chunk one transaction. */
const FILL_CHUNK = 5000;
/** Entries from this time on, one second apart: older than the real message routed last. */
const FILL_START_MS = Date.UTC(2024, 0, 1);

function entry(mailbox: string, i: number): MessageEntry {
  const sesMessageId = `bench-${mailbox}-${i}`;
  return {
    mailbox,
    id: messageIdFor(FILL_START_MS + i * 1000, sesMessageId),
    size: 5200 + (i % 700),
    crlfSize: 5200 + (i % 700),
    receivedAt: new Date(FILL_START_MS + i * 1000).toISOString(),
    from: `Sender ${i % 97} <sender${i % 97}@example.org>`,
    to: mailbox,
    subject: `Benchmark message ${i}: quarterly report and the minutes of the meeting`,
    snippet:
      'Hello, please find attached the report we discussed on Tuesday. The figures for the third quarter',
    hasAttachments: i % 5 === 0,
    seen: i % 3 === 0,
    verdicts: UNCHECKED_VERDICTS,
    tags: [],
    recipient: mailbox,
    parseFailed: false,
    sesMessageId,
  };
}

async function fill(runtime: LocalRuntime, mailbox: string, count: number): Promise<void> {
  for (let start = 0; start < count - 1; start += FILL_CHUNK) {
    const end = Math.min(count - 1, start + FILL_CHUNK);
    const batch: Promise<{ inserted: boolean }>[] = [];
    for (let i = start; i < end; i++) batch.push(runtime.index.deliver(entry(mailbox, i)));
    await Promise.all(batch);
  }
}

/** The cursor after `depth` items, walked with the index itself (pages of 1000). */
async function cursorAt(runtime: LocalRuntime, mailbox: string, depth: number): Promise<string | null> {
  let cursor: string | undefined;
  let seen = 0;
  while (seen < depth) {
    const page = await runtime.index.list(mailbox, { limit: Math.min(1000, depth - seen), cursor });
    seen += page.items.length;
    if (page.nextCursor === null) return null;
    cursor = page.nextCursor;
  }
  return cursor ?? null;
}

async function main(): Promise<void> {
  const { startApiServer } = await import('../../functions/local/api-server.ts');
  const { createToken } = await import('../../functions/api/auth.ts');
  const runtime = createLocalRuntime({ config: parseConfig(DEV_DEFAULT_CONFIG), dataDir });
  const sizes = { [BIG]: Number(bigArg), [SMALL]: Number(smallArg) };
  for (const [mailbox, count] of Object.entries(sizes)) await fill(runtime, mailbox, count);
  const raw = await buildMessageWithAttachment({
    to: [BIG, SMALL],
    subject: 'The real one',
    attachmentBytes: pdfLikeBytes(100 * 1024),
  });
  const routed = await ingest(runtime, {
    body: raw,
    mailFrom: 'real@sender.test',
    recipients: [BIG, SMALL],
    via: { protocol: 'LOCAL' },
  });
  const mailboxes: Record<string, { token: string; deepCursor: string | null; messages: number }> = {};
  for (const [mailbox, count] of Object.entries(sizes)) {
    const { token } = await createToken(runtime.index, { mailbox });
    // 100 items before the end: a client paging to the oldest mail.
    const deepCursor = await cursorAt(runtime, mailbox, Math.max(1, count - 100));
    mailboxes[mailbox] = { token, deepCursor, messages: (await runtime.index.stat(mailbox)).messages };
  }
  const server = await startApiServer(runtime, { port: 0 });
  serveRequests(
    () => ({ type: 'pong' }),
    async () => {
      await server.close();
      await runtime.close();
    },
  );
  sendToParent({ type: 'ready', port: server.port, id: routed.id, partId: '1', mailboxes });
}

main().catch((err: unknown) => {
  sendToParent({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
  process.disconnect?.();
});
