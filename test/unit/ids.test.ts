/**
 * Message ids are part of the stored data: `import` derives an SES id from the content so that
 * importing a file twice is a no-op, and a retried delivery recomputes its ULID from the SES id.
 * These values were computed by the first implementation; any later encoder must give the same.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  messageIdFor,
  newSesMessageId,
  sesMessageIdFromContent,
  timeOfId,
  ULID_RE,
} from '../../functions/core/ids.ts';

describe('message ids', () => {
  it('derives the same ULID as every earlier version (time part and digest part)', () => {
    assert.equal(messageIdFor(0, 'x'), '00000000005NRHCGNQ4TR480B2');
    assert.equal(messageIdFor(2 ** 48 - 1, '0'.repeat(40)), '7ZZZZZZZZZJT9ECYW3F2KFCX9Z');
    assert.equal(
      messageIdFor(1795799323840, 'eh4a39x1vt7vpfaehg6wz2qc9ts5j66b2wwbsh1d'),
      '01M8EZP560NCHVHQTVK7S1VN0J',
    );
    assert.equal(timeOfId(messageIdFor(1795799323840, 'any')), 1795799323840);
    assert.throws(() => messageIdFor(2 ** 48, 'x'), RangeError);
  });

  it('derives the same SES id from the same content as every earlier version', () => {
    assert.equal(sesMessageIdFromContent(Buffer.from('')), 'werc8gmrzge196qvyk49jvxs4gktwgf4cjds6k54');
    assert.equal(
      sesMessageIdFromContent(Buffer.from('Subject: hi\r\n\r\nbody\r\n')),
      'rgd1t5rpk4f07ytt7tftjv5x8cffq52z3zahtvb7',
    );
  });

  it('mints distinct 40-character SES ids, across refills of the random pool', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const id = newSesMessageId();
      assert.match(id, /^[0-9a-hjkmnp-tv-z]{40}$/);
      ids.add(id);
    }
    assert.equal(ids.size, 2000);
    assert.match(messageIdFor(Date.now(), newSesMessageId()), ULID_RE);
  });
});
