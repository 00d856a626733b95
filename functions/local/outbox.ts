/**
 * `mail-relay outbox`: what the relay would have sent, when no smarthost is configured
 * (`relay.smtp`). Lists the outbox newest first; `outbox show <messageId>` prints one message raw.
 */

import { join } from 'node:path';
import { FsBlobStore } from '../adapters/local/fs-blob-store.ts';
import { formatOutbox, listOutbox, OUTBOX_PREFIX } from '../adapters/local/outbox-outbound.ts';
import { dataDirFromEnv } from './runtime.ts';

export interface OutboxIo {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

/** Returns the exit code. */
export async function commandOutbox(args: readonly string[], io: OutboxIo): Promise<number> {
  // Only the blob store is needed: no index, so this runs next to a live `dev` without contention.
  const blobs = new FsBlobStore({ root: join(dataDirFromEnv(io.env), 'blobs') });
  try {
    return await outbox(blobs, args, io);
  } finally {
    await blobs.close();
  }
}

async function outbox(blobs: FsBlobStore, args: readonly string[], io: OutboxIo): Promise<number> {
  const [sub, id] = args;
  if (sub === undefined || sub === 'list') {
    io.out.write(formatOutbox(await listOutbox(blobs)));
    return 0;
  }
  if (sub === 'show' && id !== undefined && /^[0-9a-f]{32}$/.test(id)) {
    const raw = await blobs.get(`${OUTBOX_PREFIX}${id}.eml`);
    if (raw === null) {
      io.err.write(`mail-relay outbox: no message ${id}\n`);
      return 1;
    }
    io.out.write(raw);
    return 0;
  }
  if (sub === 'show' && id !== undefined && /^[0-9A-Za-z]{26}$/.test(id)) {
    io.err.write(
      `mail-relay outbox: ${id} is a message id of a mailbox (POST …/send answers it as \`id\`, the Sent\n` +
        'copy); the outbox knows the 32-hex `messageId` of the same answer, which `mail-relay outbox` lists\n',
    );
    return 2;
  }
  io.err.write('usage: mail-relay outbox [list] | mail-relay outbox show <messageId>\n');
  return 2;
}
