/**
 * Bounds the parts of an answer by their size in a Lambda response, so that one answer of the API
 * stays within what every deployment can carry: a Lambda response is at most 6 MB, and
 * `GET …/messages/{id}` carries the message's text and HTML bodies, headers, addresses and attachment
 * list, which a 40 MB message can make as large as it is.
 */
import { codePointPrefix } from '../core/message.ts';

/**
 * What `value` takes of a Lambda response: the answer's JSON (`JSON.stringify(value)`) travels as a
 * JSON string in the function's response to API Gateway, so its quotes and backslashes are escaped
 * once more (`"` is `\"` in the answer and `\\\"` in the response). Counting so keeps the response
 * under 6 MB whatever the characters; the local server cuts its answers the same way.
 */
export function wireBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(JSON.stringify(value)), 'utf8') - 2;
}

/**
 * `s` itself when it takes at most `maxBytes` (`wireBytes`), else its longest prefix (cut between two
 * code points) that does, with `truncated: true`.
 */
export function capJsonString(s: string, maxBytes: number): { value: string; truncated: boolean } {
  // No UTF-16 unit takes more than 7 bytes (\u001f escaped twice: \\u001f), the quotes 4.
  if (s.length * 7 + 4 <= maxBytes || wireBytes(s) <= maxBytes) return { value: s, truncated: false };
  // The size of a prefix grows with its length: the longest one that fits, by bisection (every unit
  // takes at least a byte, so no prefix longer than `maxBytes` fits).
  let lo = 0;
  let hi = Math.min(s.length - 1, maxBytes);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (wireBytes(codePointPrefix(s, mid)) <= maxBytes) lo = mid;
    else hi = mid - 1;
  }
  return { value: codePointPrefix(s, lo), truncated: true };
}

/**
 * The longest leading run of `items` whose array takes at most `maxBytes` (`wireBytes`; whole items
 * only: a reader sees an item entire or not at all), with `truncated: true` when items were left out,
 * and the size of the array kept.
 */
export function capList<T>(
  items: readonly T[],
  maxBytes: number,
): { value: T[]; truncated: boolean; bytes: number } {
  // The whole array in one measure first: most lists fit.
  const whole = wireBytes(items);
  if (whole <= maxBytes) return { value: [...items], truncated: false, bytes: whole };
  let bytes = 2; // []
  for (let i = 0; i < items.length; i++) {
    // The comma before every item but the first.
    const next = bytes + wireBytes(items[i]) + (i > 0 ? 1 : 0);
    if (next > maxBytes) return { value: items.slice(0, i), truncated: true, bytes };
    bytes = next;
  }
  return { value: [...items], truncated: false, bytes };
}

/** `capList` for headers, settling most messages by a bound before measuring any header. */
export function capHeaders<H extends { readonly name: string; readonly value: string }>(
  headers: readonly H[],
  maxBytes: number,
): { value: H[]; truncated: boolean } {
  // At most 7 bytes per UTF-16 unit (see capJsonString), plus {"name":"","value":""} (30 bytes with
  // its quotes escaped) and a comma.
  let bound = 2;
  for (const h of headers) bound += (h.name.length + h.value.length) * 7 + 31;
  if (bound <= maxBytes) return { value: [...headers], truncated: false };
  const { value, truncated } = capList(headers, maxBytes);
  return { value, truncated };
}
