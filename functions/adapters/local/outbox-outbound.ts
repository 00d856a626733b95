/**
 * Outbound for local mode with no smarthost configured: every message that would be sent is
 * written to `outbox/` in the blob store (raw `.eml` plus a `.json` envelope), so a developer can
 * see exactly what would have gone out. Idempotent: the same idempotency key overwrites the same
 * files, so a retried send leaves one copy.
 */
import { createHash } from 'node:crypto';
import type { BlobStore } from '../../ports/blob-store.ts';
import type { Outbound, OutboundMessage } from '../../ports/outbound.ts';

export const OUTBOX_PREFIX = 'outbox/';

export class OutboxOutbound implements Outbound {
  constructor(private readonly blobs: BlobStore) {}

  async send(message: OutboundMessage): Promise<{ messageId: string }> {
    // The key may hold characters that are awkward in file names; a digest is stable and safe.
    const messageId = createHash('sha256').update(message.idempotencyKey).digest('hex').slice(0, 32);
    await this.blobs.put(`${OUTBOX_PREFIX}${messageId}.eml`, message.raw, { contentType: 'message/rfc822' });
    const envelope = {
      messageId,
      idempotencyKey: message.idempotencyKey,
      from: message.from,
      to: message.to,
      size: message.raw.length,
      writtenAt: new Date().toISOString(),
    };
    await this.blobs.put(
      `${OUTBOX_PREFIX}${messageId}.json`,
      Buffer.from(JSON.stringify(envelope, null, 2)),
      {
        contentType: 'application/json',
      },
    );
    return { messageId };
  }
}
