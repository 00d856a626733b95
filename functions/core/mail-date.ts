/**
 * Reading the date-time of a `Date:` field or a `Received:` line (RFC 5322 §3.3, with the obsolete
 * forms of §4.3 that real mail still carries). Pure: no I/O, and no dependence on the host's time
 * zone.
 *
 * Not `Date.parse`: its reading of this format is implementation-defined, and V8's takes a date-time
 * without a zone in the host's local time, so the same message had another `date` (and, imported,
 * another receipt time and id) under another `TZ`; it refuses the military zones and the zone names
 * RFC 5322 says to read as `-0000`, and takes a three-digit year as it stands (year 126).
 */

const MONTHS: Readonly<Record<string, number>> = {
  jan: 0,
  feb: 1,
  mar: 2,
  apr: 3,
  may: 4,
  jun: 5,
  jul: 6,
  aug: 7,
  sep: 8,
  oct: 9,
  nov: 10,
  dec: 11,
};

/** A month's number (0 for January) from its English three-letter name in any case, else null. */
export function monthNumber(name: string): number | null {
  const key = name.toLowerCase();
  return Object.hasOwn(MONTHS, key) ? (MONTHS[key] ?? null) : null;
}

/** RFC 5322 §4.3 obs-zone: the North American zones, in minutes east of UTC. */
const NAMED_ZONES: Readonly<Record<string, number>> = {
  ut: 0,
  utc: 0,
  gmt: 0,
  z: 0,
  est: -300,
  edt: -240,
  cst: -360,
  cdt: -300,
  mst: -420,
  mdt: -360,
  pst: -480,
  pdt: -420,
};

/**
 * `[day-of-week ","] day month year hour ":" minute [":" second] [zone]`, once comments are gone and
 * spaces collapsed. Lenient where senders are: the comma or the space after it missing, fractional
 * seconds, a numeric zone without its sign or with a colon, no space before the zone, a zone name
 * after the numeric zone (`+0000 GMT`; the number wins).
 */
const DATE_TIME_RE =
  /^(?:[a-z]+ ?, ?|[a-z]+ )?(\d{1,2}) ([a-z]+) (\d{2,4}) (\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)? ?(?:([+-]?)(\d{2}):?(\d{2})(?: [a-z]{1,5})?|([a-z]{1,5}))?$/;

/** An ISO 8601 date-time with its offset (ECMAScript's date-time string format, which has one). */
const ISO_WITH_ZONE_RE =
  /^(\d{4})-(\d{2})-(\d{2})t(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(?:z|([+-])(\d{2}):(\d{2}))$/;

/**
 * RFC 5322 §3.2.2: comments (which nest, and may hold quoted pairs) are white space. One left open
 * runs to the end, and a stray `)` is a space: a date is still read around either.
 */
function withoutComments(value: string): string {
  let out = '';
  let depth = 0;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (depth > 0 && ch === '\\') i++;
    else if (ch === '(') {
      depth++;
      out += ' ';
    } else if (ch === ')') {
      if (depth > 0) depth--;
      out += ' ';
    } else if (depth === 0) out += ch;
  }
  return out;
}

/**
 * Milliseconds since the epoch of an RFC 5322 date-time, or null when it cannot be read.
 * https://www.rfc-editor.org/rfc/rfc5322#section-3.3 and #section-4.3: a two-digit year is
 * 2000–2049 below 50, else 19xx; a three-digit year is 1900 plus it; a zone RFC 5322 does not name
 * (`CET`, `JST`, the military letters, whose meanings RFC 822 got backwards) reads as `-0000`, UTC
 * with the sender's local zone unknown; and so does a date-time with no zone at all (an invalid
 * field, read as Lambda reads it, rather than in whatever zone this host is in). A year before 1900
 * or after 9999, or a day the month does not have, is not a date. An ISO 8601 date-time with its zone
 * (`2026-11-27T13:40:00Z`, which scripts write) is read too, by the same rules (`dateTime`), so that a
 * date is or is not one whichever form it came in.
 */
export function parseMailDate(value: string): number | null {
  // Not RFC 5322, but written by scripts: ISO 8601 with its zone, read by the same rules (not by
  // Date.parse, which takes years before 1900, `24:00` as the next day's midnight, and no leap second).
  const iso = ISO_WITH_ZONE_RE.exec(value.trim().toLowerCase());
  if (iso !== null) {
    const [, year, month, day, hour, minute, second, fraction, sign, zoneHours, zoneMinutes] = iso;
    return dateTime({
      year: Number(year),
      month: Number(month) - 1,
      day: Number(day),
      hour: Number(hour),
      minute: Number(minute),
      second: Number(second ?? 0),
      fraction,
      offset: sign === undefined ? 0 : numericZoneOffset(sign, zoneHours, zoneMinutes),
    });
  }
  const m = DATE_TIME_RE.exec(withoutComments(value).replace(/\s+/g, ' ').trim().toLowerCase());
  if (m === null) return null;
  const [, day, monthName, yearText, hour, minute, second, fraction, sign, zoneHours, zoneMinutes, zoneName] =
    m;
  const month = MONTHS[monthName as string];
  if (month === undefined) return null;
  let year = Number(yearText);
  if ((yearText as string).length === 2) year += year < 50 ? 2000 : 1900;
  else if ((yearText as string).length === 3) year += 1900;
  let offset: number | null = 0;
  if (zoneName !== undefined) offset = NAMED_ZONES[zoneName] ?? 0;
  else if (zoneHours !== undefined) offset = numericZoneOffset(sign, zoneHours, zoneMinutes);
  return dateTime({
    year,
    month,
    day: Number(day),
    hour: Number(hour),
    minute: Number(minute),
    second: Number(second ?? 0),
    fraction,
    offset,
  });
}

/**
 * The numeric zones a date-time can carry, in minutes east of UTC: −12:00 (Baker Island; Kwajalein
 * until 1993) to +14:00 (Kiribati's Line Islands; Samoa's and Tonga's summer time), every offset the
 * tz database gives any place since 1970. RFC 5322 §3.3 writes a zone as four digits and gives no
 * range, but `+9900` is no place's zone: a sender's clock or a converter wrote nonsense, and a date
 * read with it would be days off. Such a date is no date (null), as `Feb 29 2025` or `24:00` is, so a
 * reader falls back to what it has next (`import`: the Received line, the mbox `From ` line, the
 * file's time) rather than take a wrong time.
 */
export const ZONE_MINUTES_MIN = -12 * 60;
export const ZONE_MINUTES_MAX = 14 * 60;

/**
 * A numeric zone (`+hhmm`, `-hhmm`; no sign is `+`) in minutes east of UTC, or null when it is no
 * zone: minutes past 59, or an offset outside −12:00…+14:00 (`ZONE_MINUTES_MIN`, `ZONE_MINUTES_MAX`).
 * Shared by `parseMailDate` and import's mbox `From ` line reader, so the two agree.
 */
export function numericZoneOffset(
  sign: string | undefined,
  hours: string | undefined,
  minutes: string | undefined,
): number | null {
  if (Number(minutes) > 59) return null;
  const offset = (sign === '-' ? -1 : 1) * (Number(hours) * 60 + Number(minutes));
  return offset < ZONE_MINUTES_MIN || offset > ZONE_MINUTES_MAX ? null : offset;
}

/**
 * The instant of a date-time read from either form, held to one set of rules: a year from 1900 to
 * 9999, a day the month has, hours to 23 (no `24:00`), minutes to 59, seconds to 60 (RFC 5322 §3.3's
 * leap second, read as the second before, on the same day), a zone that was read (`offset` not null:
 * one with minutes past 59 or outside −12:00…+14:00 is not, `numericZoneOffset`).
 */
function dateTime(t: {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  fraction: string | undefined;
  offset: number | null;
}): number | null {
  const { year, month, day, hour, minute, second, offset } = t;
  if (offset === null || year < 1900 || year > 9999 || month < 0 || month > 11 || day < 1) return null;
  if (hour > 23 || minute > 59 || second > 60) return null;
  const ms = t.fraction === undefined ? 0 : Math.floor(Number(`0.${t.fraction}`) * 1000);
  const local = Date.UTC(year, month, day, hour, minute, Math.min(second, 59), ms);
  // Date.UTC rolls 31 Nov over into December: a day the month does not have is no date.
  if (new Date(local).getUTCDate() !== day) return null;
  return local - offset * 60_000;
}
