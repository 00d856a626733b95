/**
 * Outbound for local mode with no smarthost configured: every message that would be sent is
 * written to `outbox/` in the blob store (raw `.eml` plus a `.json` envelope), so a developer can
 * see exactly what would have gone out. Idempotent: the same idempotency key overwrites the same
 * files, so a retried send leaves one copy. Recipients in our own domains also get the message
 * through `receive`, as they would in AWS, where SES hands it to the domain's MX: this relay.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { domainOf } from '../../core/config.ts';
import { decodeHeaderText, fieldValue, findField, splitMessage } from '../../core/mime-header.ts';
import type { BlobStore } from '../../ports/blob-store.ts';
import type { Outbound, OutboundMessage } from '../../ports/outbound.ts';

export const OUTBOX_PREFIX = 'outbox/';

export interface OutboxLoopback {
  /** Our domains: mail for them comes back in. */
  readonly domains: readonly string[];
  /** Receives a message for some of our addresses, as the SMTP listener would (the local ingest). */
  readonly receive: (message: {
    readonly from: string;
    readonly to: readonly string[];
    readonly raw: Buffer;
  }) => Promise<void>;
}

export class OutboxOutbound implements Outbound {
  constructor(
    private readonly blobs: BlobStore,
    private readonly loopback?: OutboxLoopback,
  ) {}

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
    const ours = this.loopback?.domains ?? [];
    const local = message.to.filter((to) => ours.includes(domainOf(to)));
    if (local.length > 0) await this.loopback?.receive({ from: message.from, to: local, raw: message.raw });
    return { messageId };
  }
}

/** The envelope written beside each outbox message; validated when read back (it crossed a storage boundary). */
const outboxEnvelopeSchema = z.object({
  messageId: z.string(),
  idempotencyKey: z.string(),
  from: z.string(),
  to: z.array(z.string()),
  size: z.number(),
  writtenAt: z.string(),
});

/** One message that would have been sent, as the outbox listing shows it. */
export interface OutboxItem {
  readonly messageId: string;
  readonly idempotencyKey: string;
  /** Envelope sender and recipients. */
  readonly from: string;
  readonly to: readonly string[];
  readonly size: number;
  readonly writtenAt: string;
  /** Decoded Subject and From header of the message ('' when absent). */
  readonly subject: string;
  readonly headerFrom: string;
  /** Blob key of the raw message. */
  readonly key: string;
}

/** Enough of a message to hold any sane header block; the listing never reads whole bodies. */
const HEAD_BYTES = 64 * 1024;

async function readHead(blobs: BlobStore, key: string): Promise<Buffer> {
  const stream: Readable | null = await blobs.getStream(key, { start: 0, end: HEAD_BYTES - 1 });
  if (stream === null) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** What the outbox holds, newest first: a mailbox-like view of what would have been sent. */
export async function listOutbox(blobs: BlobStore, options: { limit?: number } = {}): Promise<OutboxItem[]> {
  const items: OutboxItem[] = [];
  for await (const info of blobs.list(OUTBOX_PREFIX)) {
    if (!info.key.endsWith('.json')) continue;
    const json = await blobs.get(info.key);
    if (json === null) continue;
    const parsed = outboxEnvelopeSchema.safeParse(JSON.parse(json.toString('utf8')));
    if (!parsed.success) continue;
    const key = `${OUTBOX_PREFIX}${parsed.data.messageId}.eml`;
    const split = splitMessage(await readHead(blobs, key));
    const subject = findField(split.fields, 'subject');
    const from = findField(split.fields, 'from');
    items.push({
      ...parsed.data,
      subject: subject ? decodeHeaderText(fieldValue(subject)) : '',
      headerFrom: from ? decodeHeaderText(fieldValue(from)) : '',
      key,
    });
  }
  items.sort((a, b) => (a.writtenAt < b.writtenAt ? 1 : a.writtenAt > b.writtenAt ? -1 : 0));
  return options.limit === undefined ? items : items.slice(0, options.limit);
}

/** The listing as text, one message per block, like a mail client's message list. */
export function formatOutbox(items: readonly OutboxItem[]): string {
  if (items.length === 0) return 'outbox is empty: nothing would have been sent\n';
  return items
    .map(
      (i) =>
        `${i.writtenAt}  ${i.size} B  ${i.messageId}\n` +
        `  From:    ${i.headerFrom}\n  To:      ${i.to.join(', ')} (envelope from ${i.from || '<>'})\n` +
        `  Subject: ${i.subject}\n  Show:    mail-relay outbox show ${i.messageId}\n`,
    )
    .join('\n');
}
