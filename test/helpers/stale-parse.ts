/**
 * Mail as an older parser stored it, for the `mail-relay reparse` tests: a message whose Subject, From
 * name and text body are raw GB2312 bytes (as Chinese senders write them), and `makeStale`, which
 * rewrites a stored copy of it to what a parser that read every header and body as UTF-8 made of it
 * (U+FFFDs in the summary and in the index entry, the text body counted as part 1, which moved the
 * attachment to part 2).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mailboxKeys, type StoredSummary } from '../../functions/core/keys.ts';
import { parsedSummarySchema } from '../../functions/core/message.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import type { MailboxIndex } from '../../functions/ports/mailbox-index.ts';

const gb2312 = (hex: string) => Buffer.from(hex, 'hex');
/** 台湾形龙 and 全新原装 in GB2312. */
const SENDER_GB = gb2312('cca8cde5d0cec1fa');
const SUBJECT_GB = gb2312('c8abd0c2d4add7b0');
export const ATTACHMENT = Buffer.from('00010203040506070809', 'hex');

/** A message whose Subject, From name and text body are raw GB2312 bytes, with one attachment. */
export function gbMessage(n: number, to = 'alice@example.test'): Buffer {
  return Buffer.concat([
    Buffer.from('From: '),
    SENDER_GB,
    Buffer.from(` <sales${n}@e34.test>\r\nTo: ${to}\r\nSubject: `),
    SUBJECT_GB,
    Buffer.from(
      ` offer ${n}\r\nMessage-ID: <gb-${n}@e34.test>\r\nMIME-Version: 1.0\r\n` +
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' +
        'Content-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: 8bit\r\n\r\n',
    ),
    SUBJECT_GB,
    Buffer.from(
      ` body ${n}\r\n--b\r\nContent-Type: application/octet-stream; name="data.bin"\r\n` +
        'Content-Disposition: attachment; filename="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
        `${ATTACHMENT.toString('base64')}\r\n--b--\r\n`,
    ),
  ]);
}

/** What a parser that read every header and body as UTF-8 made of GB2312 bytes. */
const asUtf8 = (b: Buffer) => b.toString('utf8');
export const SUBJECT_NOW = '全新原装 offer';
export const SENDER_NOW = '台湾形龙';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Rewrites a stored message (summary, part blobs, index entry) to what the old parser gave: the
 * U+FFFD subject and sender, and the text body as part 1 before the attachment as part 2.
 */
export async function makeStale(
  blobs: BlobStore,
  index: MailboxIndex,
  mailbox: string,
  id: string,
): Promise<void> {
  const bytes = await blobs.get(mailboxKeys.summary(mailbox, id));
  assert.ok(bytes);
  const now = parsedSummarySchema.parse(JSON.parse(bytes.toString('utf8')));
  const oldSubject = now.subject?.replace('全新原装', asUtf8(SUBJECT_GB)) ?? null;
  const oldSender = asUtf8(SENDER_GB);
  const oldText = (now.text ?? '').replace('全新原装', asUtf8(SUBJECT_GB));
  const textPart = Buffer.from(oldText);
  const [attachment] = now.attachments;
  assert.ok(attachment);
  const { charset: _charset, ...attachmentWithoutCharset } = attachment;
  const stale: StoredSummary = {
    parseFailed: false,
    ...now,
    headers: now.headers.map((h) => ({
      name: h.name,
      value: h.value.replace('全新原装', asUtf8(SUBJECT_GB)).replace(SENDER_NOW, oldSender),
    })),
    from: now.from.map((a) => ({ ...a, name: oldSender })),
    subject: oldSubject,
    text: oldText,
    attachments: [
      {
        partId: '1',
        filename: null,
        contentType: 'text/plain',
        size: textPart.length,
        sha256: sha256(textPart),
        contentId: null,
        disposition: 'inline',
      },
      { ...attachmentWithoutCharset, partId: '2' },
    ],
  };
  await blobs.put(mailboxKeys.part(mailbox, id, '1'), textPart);
  await blobs.put(mailboxKeys.part(mailbox, id, '2'), ATTACHMENT);
  await blobs.put(mailboxKeys.summary(mailbox, id), Buffer.from(JSON.stringify(stale)));
  const entry = await index.get(mailbox, id);
  assert.ok(entry);
  assert.ok(
    await index.updateParsed(mailbox, id, {
      from: `${oldSender} <${now.from[0]?.address}>`,
      to: entry.to,
      subject: oldSubject ?? '',
      snippet: oldText.replace(/\s+/g, ' ').trim(),
      hasAttachments: true,
      parseFailed: false,
    }),
  );
}
