/** A local relay (runtime + SMTP listener) in a temp data dir, for e2e tests. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { type SmtpListener, startSmtpListener } from '../../functions/local/smtp-listener.ts';
import { mailboxKeys, type RouteResult } from '../../functions/pipeline/router.ts';
import type { MailboxIndex, MessageEntry } from '../../functions/ports/mailbox-index.ts';

/** Every entry of a mailbox, newest first, following the cursor to the end. */
export async function listAll(index: MailboxIndex, mailbox: string): Promise<MessageEntry[]> {
  const out: MessageEntry[] = [];
  let cursor: string | undefined;
  do {
    const page = await index.list(mailbox, { limit: 1000, cursor });
    out.push(...page.items);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return out;
}

export interface TestRelay {
  readonly dataDir: string;
  runtime: LocalRuntime;
  smtp: SmtpListener;
  readonly delivered: RouteResult[];
  /** Stops and starts the relay on the same data dir (a restart). */
  restart(): Promise<void>;
  /** All entries of a mailbox, newest first. */
  entries(mailbox: string): Promise<MessageEntry[]>;
  /** The stored raw bytes of a delivered message. */
  raw(mailbox: string, id: string): Promise<Buffer>;
  close(): Promise<void>;
}

export async function startTestRelay(raw: RawConfig, dataDir?: string): Promise<TestRelay> {
  const config = parseConfig(raw);
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'mr-relay-'));
  const delivered: RouteResult[] = [];
  const start = async () => {
    const runtime = createLocalRuntime({ config, dataDir: dir });
    const smtp = await startSmtpListener(runtime, {
      port: 0,
      spoolDir: runtime.spoolDir,
      onDelivered: (r) => delivered.push(r),
    });
    return { runtime, smtp };
  };
  let { runtime, smtp } = await start();
  const relay: TestRelay = {
    dataDir: dir,
    get runtime() {
      return runtime;
    },
    get smtp() {
      return smtp;
    },
    delivered,
    async restart() {
      await smtp.close();
      await runtime.close();
      ({ runtime, smtp } = await start());
    },
    entries: (mailbox) => listAll(runtime.index, mailbox),
    async raw(mailbox, id) {
      const b = await runtime.blobs.get(mailboxKeys.raw(mailbox, id));
      if (!b) throw new Error(`no raw message ${mailbox}/${id}`);
      return b;
    },
    async close() {
      await smtp.close();
      await runtime.close();
      if (!dataDir) rmSync(dir, { recursive: true, force: true });
    },
  } as TestRelay;
  return relay;
}

/**
 * Splits a stored message into the prepended trace headers and the rest, checking that the trace
 * part is exactly our `Return-Path:` (absent for imports) + `Received:` + `Authentication-Results:`
 * lines, and the `X-Mail-Relay-Note:` a message starting with a folded line gets.
 */
export function stripTrace(stored: Buffer): { trace: string; body: Buffer } {
  const text = stored.toString('latin1');
  const m =
    /^(?:Return-Path: <[^\n]*>\r?\n)?Received: [^\n]*\n(?:\t[^\n]*\n)+Authentication-Results: [^\n]*\n(?:X-Mail-Relay-Note: [^\n]*\n)?/.exec(
      text,
    );
  if (!m) throw new Error(`stored message does not start with our trace headers:\n${text.slice(0, 300)}`);
  return { trace: m[0], body: stored.subarray(Buffer.byteLength(m[0], 'latin1')) };
}
