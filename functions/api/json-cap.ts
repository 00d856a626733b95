/**
 * Bounds a string by the size of its JSON encoding, so that one answer of the API stays within what
 * every deployment can carry: a Lambda response is at most 6 MB, and `GET …/messages/{id}` carries the
 * message's text and HTML bodies, which a 40 MB message can make as large as it is.
 */

/** What `JSON.stringify(s)` takes in UTF-8, the quotes included. */
export function jsonBytes(s: string): number {
  return Buffer.byteLength(JSON.stringify(s), 'utf8');
}

/** The first `n` UTF-16 units of `s`, one fewer if the last would be half of a surrogate pair. */
function prefix(s: string, n: number): string {
  if (n <= 0) return '';
  if (n >= s.length) return s;
  const last = s.charCodeAt(n - 1);
  return last >= 0xd800 && last <= 0xdbff ? s.slice(0, n - 1) : s.slice(0, n);
}

/**
 * `s` itself when its JSON encoding takes at most `maxBytes`, else its longest prefix (cut between
 * two code points) whose encoding does, with `truncated: true`.
 */
export function capJsonString(s: string, maxBytes: number): { value: string; truncated: boolean } {
  // No character takes more than 6 bytes in JSON (\u001f, or 3 bytes of UTF-8 per UTF-16 unit).
  if (s.length * 6 + 2 <= maxBytes || jsonBytes(s) <= maxBytes) return { value: s, truncated: false };
  // The encoding of a prefix grows with its length: the longest one that fits, by bisection (every
  // unit takes at least a byte, so no prefix longer than `maxBytes` fits).
  let lo = 0;
  let hi = Math.min(s.length - 1, maxBytes);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (jsonBytes(prefix(s, mid)) <= maxBytes) lo = mid;
    else hi = mid - 1;
  }
  return { value: prefix(s, lo), truncated: true };
}

/**
 * The longest leading run of `headers` whose JSON array (`[{"name":…,"value":…},…]`) takes at most
 * `maxBytes`, with `truncated: true` when headers were left out. Whole headers only: a reader of a
 * header sees its whole value or not at all.
 */
export function capHeaders<H extends { readonly name: string; readonly value: string }>(
  headers: readonly H[],
  maxBytes: number,
): { value: H[]; truncated: boolean } {
  // At most 6 bytes of JSON per UTF-16 unit (see capJsonString): most messages are settled by this bound.
  let bound = 2;
  for (const h of headers) bound += (h.name.length + h.value.length) * 6 + 23;
  if (bound <= maxBytes) return { value: [...headers], truncated: false };
  let bytes = 2; // []
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i] as H;
    // {"name":…,"value":…} plus the comma before every entry but the first.
    bytes += jsonBytes(h.name) + jsonBytes(h.value) + 18 + (i > 0 ? 1 : 0);
    if (bytes > maxBytes) return { value: headers.slice(0, i), truncated: true };
  }
  return { value: [...headers], truncated: false };
}
