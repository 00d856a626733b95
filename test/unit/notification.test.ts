/**
 * The SES-shaped notification the local relay builds must be what the SES schema accepts (the
 * router and replay read it back through that schema), without paying for a parse per message.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ZodError } from 'zod';
import {
  buildNotification,
  notificationJson,
  sesReceivedNotificationSchema,
} from '../../functions/core/notification.ts';
import { UNCHECKED_VERDICTS } from '../../functions/core/routing.ts';

const base = {
  sesMessageId: 'abc123',
  receivedAt: new Date('2026-11-27T12:00:00.123Z'),
  mailFrom: 'a@remote.test',
  recipients: ['bob@example.test', 'carol@example.test'],
  verdicts: UNCHECKED_VERDICTS,
  bucketName: 'mail-relay-local',
};

describe('buildNotification', () => {
  it('builds what the SES schema accepts, unchanged by a parse', () => {
    for (const receipt of [
      base,
      {
        ...base,
        mailFrom: '',
        headers: [{ name: 'Subject', value: 'hi' }],
        verdicts: { ...UNCHECKED_VERDICTS, dmarc: 'FAIL', dmarcPolicy: 'reject' },
      },
    ]) {
      const n = buildNotification(receipt);
      assert.deepEqual(sesReceivedNotificationSchema.parse(JSON.parse(JSON.stringify(n))), n);
      assert.equal(n.receipt.action.objectKey, `inbound/${receipt.sesMessageId}`);
      assert.equal(n.mail.timestamp, '2026-11-27T12:00:00.123Z');
      assert.equal(notificationJson(n), JSON.stringify(n));
      assert.equal(notificationJson(n), notificationJson(n));
    }
  });

  it('refuses, as the schema does, a receipt without recipients or without an id', () => {
    assert.throws(() => buildNotification({ ...base, recipients: [] }), ZodError);
    assert.throws(() => buildNotification({ ...base, sesMessageId: '' }), ZodError);
  });
});
