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

/** An ISO 8601 date-time with its offset, which ECMAScript's date-time string format reads in UTC. */
const ISO_WITH_ZONE_RE =
  /^(\d{4})-(\d{2})-(\d{2})T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2})$/i;

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
 * or after 9999, or a day the month does not have, is not a date.
 */
export function parseMailDate(value: string): number | null {
  // Not RFC 5322, but written by scripts: ISO 8601 with its zone (ECMAScript reads that format the same everywhere).
  const isoMatch = ISO_WITH_ZONE_RE.exec(value.trim());
  if (isoMatch !== null) {
    const iso = Date.parse(value.trim());
    // V8 rolls 30 Feb over into March, as Date.UTC does: a day the month does not have is no date.
    // (setUTCFullYear, not Date.UTC: that takes years 0–99 as 1900–1999.)
    const calendar = new Date(0);
    calendar.setUTCFullYear(Number(isoMatch[1]), Number(isoMatch[2]) - 1, Number(isoMatch[3]));
    return Number.isFinite(iso) && calendar.getUTCDate() === Number(isoMatch[3]) ? iso : null;
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
  const d = Number(day);
  const h = Number(hour);
  const min = Number(minute);
  // RFC 5322 §3.3 allows 60 for a leap second; it is read as the second before, on the same day.
  const s = Math.min(Number(second ?? 0), 59);
  if (year < 1900 || year > 9999 || d < 1 || h > 23 || min > 59 || Number(second ?? 0) > 60) return null;
  let offset = 0;
  if (zoneName !== undefined) offset = NAMED_ZONES[zoneName] ?? 0;
  else if (zoneHours !== undefined) {
    if (Number(zoneMinutes) > 59) return null;
    offset = (sign === '-' ? -1 : 1) * (Number(zoneHours) * 60 + Number(zoneMinutes));
  }
  const ms = fraction === undefined ? 0 : Math.floor(Number(`0.${fraction}`) * 1000);
  const local = Date.UTC(year, month, d, h, min, s, ms);
  // Date.UTC rolls 31 Nov over into December: a day the month does not have is no date.
  if (new Date(local).getUTCDate() !== d) return null;
  return local - offset * 60_000;
}
