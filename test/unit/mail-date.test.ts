/**
 * `parseMailDate`: the date-times of `Date:` and `Received:` as RFC 5322 §3.3 and §4.3 read them,
 * the same in every host time zone (the API's `date` and `import`'s receipt time come from it).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { monthNumber, parseMailDate } from '../../functions/core/mail-date.ts';

const iso = (value: string): string | null => {
  const ms = parseMailDate(value);
  return ms === null ? null : new Date(ms).toISOString();
};

const TABLE: readonly [string, string | null][] = [
  ['Fri, 27 Nov 2026 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
  ['27 Nov 2026 13:40 +0000', '2026-11-27T13:40:00.000Z'],
  ['Fri,27 Nov 2026 13:40:00 -0000', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 +1400', '2026-11-26T23:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 -1200', '2026-11-28T01:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 +0530', '2026-11-27T08:10:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 -0330', '2026-11-27T17:10:00.000Z'],
  // No zone (invalid, but sent): UTC, whatever TZ this process runs in.
  ['Fri, 27 Nov 2026 13:40:00', '2026-11-27T13:40:00.000Z'],
  // §4.3 obs-zone: UT, GMT and the North American names; the military letters and unknown names as -0000.
  ['Fri, 27 Nov 2026 13:40:00 UT', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 GMT', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 EST', '2026-11-27T18:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 EDT', '2026-11-27T17:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 CST', '2026-11-27T19:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 PDT', '2026-11-27T20:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 A', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 z', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 Y', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 CET', '2026-11-27T13:40:00.000Z'],
  // §4.3 obs-year.
  ['Fri, 27 Nov 26 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
  ['Sat, 27 Nov 49 13:40:00 +0000', '2049-11-27T13:40:00.000Z'],
  ['Sun, 27 Nov 50 13:40:00 +0000', '1950-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 126 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
  // Comments (§3.2.2), nested, anywhere CFWS may be.
  ['Fri, 27 Nov 2026 13:40:00 +0100 (CET)', '2026-11-27T12:40:00.000Z'],
  ['Wed, 20 Sep 1995 00:19:00 (EDT) -0400', '1995-09-20T04:19:00.000Z'],
  ['Fri (Friday (really)), 27 Nov 2026 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
  ['Thu, 16 Jun 2016 00:41:19 (UTC)', '2016-06-16T00:41:19.000Z'],
  // Far past and far future, as written.
  ['Thu, 01 Jan 1970 00:00:00 +0000', '1970-01-01T00:00:00.000Z'],
  ['Fri, 13 Dec 1901 20:45:52 +0000', '1901-12-13T20:45:52.000Z'],
  ['Thu, 31 Dec 2099 23:59:59 +0000', '2099-12-31T23:59:59.000Z'],
  // A leap second stays on its day.
  ['Wed, 31 Dec 2025 23:59:60 +0000', '2025-12-31T23:59:59.000Z'],
  // What senders write beside the grammar.
  ['Tue, 17 Jul 2012 22:23:35.882 0000', '2012-07-17T22:23:35.882Z'],
  ['01 Jan 2001 00:01+0000', '2001-01-01T00:01:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00.9999 +0000', '2026-11-27T13:40:00.999Z'],
  ['Mon, 15 Aug 2005 15:52:01 -0700 PDT', '2005-08-15T22:52:01.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 +01:00', '2026-11-27T12:40:00.000Z'],
  ['2026-11-27T13:40:00Z', '2026-11-27T13:40:00.000Z'],
  ['2026-11-27T13:40:00+01:00', '2026-11-27T12:40:00.000Z'],
  // Every month by its name.
  ['Sun, 1 Feb 2026 00:00:00 +0000', '2026-02-01T00:00:00.000Z'],
  ['Sun, 1 Mar 2026 00:00:00 +0000', '2026-03-01T00:00:00.000Z'],
  ['Wed, 1 Apr 2026 00:00:00 +0000', '2026-04-01T00:00:00.000Z'],
  ['Fri, 1 May 2026 00:00:00 +0000', '2026-05-01T00:00:00.000Z'],
  ['Thu, 1 Oct 2026 00:00:00 +0000', '2026-10-01T00:00:00.000Z'],
  // The rest of §4.3's zone names.
  ['Fri, 27 Nov 2026 13:40:00 UTC', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 CDT', '2026-11-27T18:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 MST', '2026-11-27T20:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 MDT', '2026-11-27T19:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 PST', '2026-11-27T21:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 +0559', '2026-11-27T07:41:00.000Z'],
  // A quoted pair in a comment, a comment or a stray `)` as the only space, a comment left open.
  ['Fri, 27 Nov 2026 13:40:00 +0100 (Central \\) European Time)', '2026-11-27T12:40:00.000Z'],
  ['Fri, 27(day)Nov 2026 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27)Nov 2026 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
  ['Fri, 27 Nov 2026 13:40:00 +0000 (Coordinated', '2026-11-27T13:40:00.000Z'],
  // The first and last years read.
  ['Mon, 1 Jan 1900 00:00:00 +0000', '1900-01-01T00:00:00.000Z'],
  ['Fri, 31 Dec 9999 23:59:59 +0000', '9999-12-31T23:59:59.000Z'],
  ['2028-02-29T10:00:00Z', '2028-02-29T10:00:00.000Z'],
  ['2026-11-27t13:40:00.5z', '2026-11-27T13:40:00.500Z'],
  // Not dates.
  ['', null],
  ['Sun, 31 Dec 1899 23:59:59 +0000', null],
  ['Fri, 27 Nov 2026 13:60:00 +0000', null],
  ['Fri, 27 Nov 2026 13:40:61 +0000', null],
  ['Fri, 27 Nov 2026 13:40:00 +0000 +0100', null],
  ['1 27 Nov 2026 13:40:00 +0000', null],
  ['2026-02-29T10:00:00Z', null],
  ['2026-04-31T00:00:00+14:00', null],
  ['2026-13-01T10:00:00Z', null],
  ['the day before yesterday', null],
  ['12345', null],
  ['1', null],
  ['2026-11-27T13:40:00', null],
  ['Fri, 31 Nov 2026 13:40:00 +0000', null],
  ['Fri, 27 Nov 2026 24:00:00 +0000', null],
  ['Fri, 27 Nov 2026 13:40:00 +0960', null],
  // A zone outside −12:00…+14:00 is no place's: no date, rather than one days off.
  ['Fri, 27 Nov 2026 13:40:00 +9900', null],
  ['Fri, 27 Nov 2026 13:40:00 -9900', null],
  ['Fri, 27 Nov 2026 13:40:00 +1401', null],
  ['Fri, 27 Nov 2026 13:40:00 -1201', null],
  ['Fri, 27 Nov 2026 13:40:00 1500', null],
  ['Fri, 27 Nov 2026 13:40:00 +1345', '2026-11-26T23:55:00.000Z'],
  ['Mon, 1 Jan 0001 00:00:00 +0000', null],
  ['Pn, 29 paX 2007 21:13:00 +0100', null],
  ['Wed, 15 Dec 2010    59:10 -0500', null],
  // ISO 8601 is held to the same rules as RFC 5322's form: the same years, hours, leap second, zones.
  ['1900-01-01T00:00:00Z', '1900-01-01T00:00:00.000Z'],
  ['9999-12-31T23:59:59Z', '9999-12-31T23:59:59.000Z'],
  ['2026-11-27T13:40:60+00:00', '2026-11-27T13:40:59.000Z'],
  ['2026-11-27T13:40:00+05:59', '2026-11-27T07:41:00.000Z'],
  ['1899-12-31T23:59:59Z', null],
  ['0001-01-01T00:00:00Z', null],
  ['2026-11-27T24:00Z', null],
  ['2026-11-27T24:00:00+00:00', null],
  ['2026-11-27T13:60:00Z', null],
  ['2026-11-27T13:40:61Z', null],
  ['2026-11-27T13:40:00+09:60', null],
  ['2026-11-27T13:40:00+99:00', null],
  ['2026-11-27T13:40:00-12:30', null],
  ['2026-11-27T13:40:00+14:00', '2026-11-26T23:40:00.000Z'],
  ['2026-11-27T13:40:00-12:00', '2026-11-28T01:40:00.000Z'],
];

describe('parseMailDate', () => {
  const tz = process.env.TZ;
  after(() => {
    if (tz === undefined) delete process.env.TZ;
    else process.env.TZ = tz;
  });

  for (const zone of ['UTC', 'Pacific/Kiritimati', 'America/St_Johns', 'Pacific/Pago_Pago']) {
    it(`reads each form the same under TZ=${zone}`, () => {
      process.env.TZ = zone;
      for (const [value, expected] of TABLE) assert.equal(iso(value), expected, JSON.stringify(value));
    });
  }
});

describe('monthNumber', () => {
  it('numbers the English month names from 0, in any case, and nothing else', () => {
    assert.equal(monthNumber('Jan'), 0);
    assert.equal(monthNumber('NOV'), 10);
    assert.equal(monthNumber('dec'), 11);
    for (const name of ['', 'janu', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      assert.equal(monthNumber(name), null, name);
    }
  });
});
