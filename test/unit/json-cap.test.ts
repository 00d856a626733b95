import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capHeaders, capJsonString, jsonBytes } from '../../functions/api/json-cap.ts';

/** The longest prefix that fits, by trying every length: the definition the bisection must match. */
function longestFittingPrefix(s: string, maxBytes: number): string {
  let best = '';
  for (const cp of Array.from(s)) {
    const next = best + cp;
    if (jsonBytes(next) > maxBytes) break;
    best = next;
  }
  return best;
}

describe('capJsonString', () => {
  it('leaves a string whose JSON fits exactly as it is', () => {
    for (const s of ['', 'hello', 'é'.repeat(10), '"\\\n'.repeat(5)]) {
      assert.deepEqual(capJsonString(s, jsonBytes(s)), { value: s, truncated: false });
    }
  });

  it('cuts to the longest prefix whose JSON fits, counting UTF-8 bytes and escapes, never half a pair', () => {
    const samples = [
      'plain ascii text, '.repeat(40),
      'größere Ümlaute und 日本語のテキスト'.repeat(8),
      'emoji 😀🎉 between pairs '.repeat(30),
      'control \u0000\u0001 chars "quoted" and \\ backslashes\n'.repeat(20),
    ];
    for (const s of samples) {
      for (const max of [2, 3, 7, 50, 101, 333]) {
        const { value, truncated } = capJsonString(s, max);
        assert.equal(truncated, true, `${max}`);
        assert.equal(value, longestFittingPrefix(s, max), `${JSON.stringify(s.slice(0, 20))} at ${max}`);
        assert.ok(jsonBytes(value) <= max);
        assert.ok(s.startsWith(value));
        assert.doesNotMatch(value, /[\ud800-\udbff]$/);
      }
    }
  });

  it('cuts a body of megabytes to within a byte or three of the limit', () => {
    const html = `<p>${'Grüße aus Köln, '.repeat(300_000)}</p>`; // ~5.4 MB of UTF-8
    const { value, truncated } = capJsonString(html, 2 * 1024 * 1024);
    assert.equal(truncated, true);
    assert.ok(jsonBytes(value) <= 2 * 1024 * 1024);
    assert.ok(jsonBytes(value) > 2 * 1024 * 1024 - 4, 'only the last character that did not fit is left out');
    assert.ok(html.startsWith(value));
  });
});

describe('capHeaders', () => {
  const headers = Array.from({ length: 40 }, (_, i) => ({
    name: i % 2 === 0 ? 'Received' : 'X-Ünïcode',
    value: `from host-${i} by relay “${'x'.repeat(i * 7)}” \u0001 "q"`,
  }));
  const arrayBytes = (list: readonly unknown[]) => Buffer.byteLength(JSON.stringify(list));

  it('keeps every header when the array fits, exactly at the limit too', () => {
    assert.deepEqual(capHeaders(headers, arrayBytes(headers)), { value: headers, truncated: false });
    assert.deepEqual(capHeaders(headers, 10 * arrayBytes(headers)), { value: headers, truncated: false });
    assert.deepEqual(capHeaders([], 2), { value: [], truncated: false });
  });

  it('keeps the longest leading run of whole headers whose JSON array fits', () => {
    for (const max of [2, 50, 500, 1234, arrayBytes(headers) - 1]) {
      const { value, truncated } = capHeaders(headers, max);
      assert.equal(truncated, true);
      assert.ok(arrayBytes(value) <= max, `${arrayBytes(value)} > ${max}`);
      assert.deepEqual(value, headers.slice(0, value.length));
      assert.ok(arrayBytes(headers.slice(0, value.length + 1)) > max, 'one more header would not fit');
    }
  });
});
