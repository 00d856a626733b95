/**
 * `mail-relay outbox`: what the relay would have sent, when no smarthost is configured
 * (`relay.smtp`). Lists the outbox newest first; `outbox show <messageId>` prints one message raw.
 */

import { join } from 'node:path';
import { FsBlobStore } from '../adapters/local/fs-blob-store.ts';
import { formatOutbox, listOutbox, OUTBOX_PREFIX } from '../adapters/local/outbox-outbound.ts';
import { parseCommandArgs, USAGE_EXIT, usageError } from './cli-args.ts';
import { dataDirFromEnv, noDataIn } from './runtime.ts';

export interface OutboxIo {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

const OUTBOX_USAGE = `Usage: mail-relay outbox [list]
       mail-relay outbox show <messageId>
  what forwarding and POST …/send would have sent, with no relay.smtp configured: the list, newest
  first, or one message raw (its 32-hex messageId, as the list shows)`;

/** Returns the exit code. */
export async function commandOutbox(args: readonly string[], io: OutboxIo): Promise<number> {
  const parsed = parseCommandArgs({ command: 'outbox', usage: OUTBOX_USAGE, options: {} }, args, io);
  if (typeof parsed === 'number') return parsed;
  const [sub, id, ...extra] = parsed.positionals;
  if ((sub === undefined || sub === 'list') && id === undefined)
    return withOutbox(io, (blobs) => list(blobs, io));
  if (sub !== 'show' || extra.length > 0) {
    return usageError(
      io,
      'outbox',
      sub === 'show' || sub === 'list' ? 'too many arguments' : `unknown subcommand "${sub}"`,
      OUTBOX_USAGE,
    );
  }
  if (id === undefined) return usageError(io, 'outbox', 'show which message?', OUTBOX_USAGE);
  if (/^[0-9A-Za-z]{26}$/.test(id)) {
    io.err.write(
      `mail-relay outbox: ${id} is a message id of a mailbox (POST …/send answers it as \`id\`, the Sent\n` +
        'copy); the outbox knows the 32-hex `messageId` of the same answer, which `mail-relay outbox` lists\n',
    );
    return USAGE_EXIT;
  }
  if (!/^[0-9a-f]{32}$/.test(id)) {
    io.err.write(
      `mail-relay outbox: ${JSON.stringify(id)} is not an outbox message id (32 hex digits, as \`mail-relay outbox\` lists them)\n`,
    );
    return USAGE_EXIT;
  }
  return withOutbox(io, (blobs) => show(blobs, id, io));
}

async function withOutbox(io: OutboxIo, fn: (blobs: FsBlobStore) => Promise<number>): Promise<number> {
  const dataDir = dataDirFromEnv(io.env);
  const noData = noDataIn(dataDir);
  if (noData !== null) {
    io.err.write(`mail-relay outbox: ${noData}\n`);
    return 1;
  }
  // Only the blob store is needed: no index, so this runs next to a live `dev` without contention.
  const blobs = new FsBlobStore({ root: join(dataDir, 'blobs') });
  try {
    return await fn(blobs);
  } finally {
    await blobs.close();
  }
}

async function list(blobs: FsBlobStore, io: OutboxIo): Promise<number> {
  io.out.write(formatOutbox(await listOutbox(blobs)));
  return 0;
}

async function show(blobs: FsBlobStore, id: string, io: OutboxIo): Promise<number> {
  const raw = await blobs.get(`${OUTBOX_PREFIX}${id}.eml`);
  if (raw === null) {
    io.err.write(`mail-relay outbox: no message ${id}\n`);
    return 1;
  }
  io.out.write(raw);
  return 0;
}
