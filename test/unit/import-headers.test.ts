/** `import`'s header reader (`headerFields`): the receipt time of files of every line-end style. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { headerFields, importReceiptTime } from '../../functions/local/import.ts';

const DATE = 'Tue, 04 Mar 2025 09:15:00 +0000';
const fileWith = (eol: string) =>
  Buffer.from(
    ['From: bob@example.org', 'To: alice@example.test', `Date: ${DATE}`, 'Subject: hi', '', 'Hello', ''].join(
      eol,
    ),
    'latin1',
  );

describe('import header reader', () => {
  it('reads the Date of a CRLF, LF, CR-only and doubly converted (CR CR LF) file', () => {
    for (const eol of ['\r\n', '\n', '\r', '\r\r\n']) {
      const fields = headerFields(fileWith(eol));
      assert.equal(
        importReceiptTime(fields, Date.now())?.toISOString(),
        '2025-03-04T09:15:00.000Z',
        JSON.stringify(eol),
      );
      assert.deepEqual(
        fields.map((f) => f.name),
        ['from', 'to', 'date', 'subject'],
        JSON.stringify(eol),
      );
    }
  });
});
