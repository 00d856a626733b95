import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capHeaders, capJsonString, capList, wireBytes } from '../../functions/api/json-cap.ts';

/** The longest prefix that fits, by trying every length: the definition the bisection must match. */
function longestFittingPrefix(s: string, maxBytes: number): string {
  let best = '';
  for (const cp of Array.from(s)) {
    const next = best + cp;
    if (wireBytes(next) > maxBytes) break;
    best = next;
  }
  return best;
}

describe('wireBytes', () => {
  it('is the size of a value in the Lambda response that carries an answer holding it', () => {
    // What API Gateway's Lambda integration gets: the answer's JSON inside a JSON string.
    const envelope = (answer: unknown) =>
      Buffer.byteLength(JSON.stringify({ statusCode: 200, body: JSON.stringify(answer) }));
    for (const value of ['plain', 'quotes "q" and \\ backslash', 'é 日本 😀 \u0001', ['a', { b: '"' }]]) {
      assert.equal(envelope({ x: value }) - envelope({ x: null }), wireBytes(value) - wireBytes(null));
    }
    assert.equal(
      wireBytes('"'),
      8,
      'a quote: \\" in the answer, \\\\\\" in the response, and its string quotes',
    );
  });
});

describe('capJsonString', () => {
  it('leaves a string whose JSON fits exactly as it is', () => {
    for (const s of ['', 'hello', 'é'.repeat(10), '"\\\n'.repeat(5)]) {
      assert.deepEqual(capJsonString(s, wireBytes(s)), { value: s, truncated: false });
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
      for (const max of [4, 5, 9, 50, 101, 333]) {
        const { value, truncated } = capJsonString(s, max);
        assert.equal(truncated, true, `${max}`);
        assert.equal(value, longestFittingPrefix(s, max), `${JSON.stringify(s.slice(0, 20))} at ${max}`);
        assert.ok(wireBytes(value) <= max);
        assert.ok(s.startsWith(value));
        assert.doesNotMatch(value, /[\ud800-\udbff]$/);
      }
    }
  });

  it('cuts a body of megabytes to within a byte or three of the limit', () => {
    const html = `<p>${'Grüße aus Köln, '.repeat(300_000)}</p>`; // ~5.4 MB of UTF-8
    const { value, truncated } = capJsonString(html, 2 * 1024 * 1024);
    assert.equal(truncated, true);
    assert.ok(wireBytes(value) <= 2 * 1024 * 1024);
    assert.ok(wireBytes(value) > 2 * 1024 * 1024 - 4, 'only the last character that did not fit is left out');
    assert.ok(html.startsWith(value));
  });
});

describe('capHeaders', () => {
  const headers = Array.from({ length: 40 }, (_, i) => ({
    name: i % 2 === 0 ? 'Received' : 'X-Ünïcode',
    value: `from host-${i} by relay “${'x'.repeat(i * 7)}” \u0001 "q"`,
  }));
  const arrayBytes = (list: readonly unknown[]) => wireBytes(list);

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

describe('capList', () => {
  const items = Array.from({ length: 30 }, (_, i) => ({
    address: `user${i}@example.test`,
    name: i % 3 ? '' : `“${i}” "q"`,
  }));

  it('keeps whole items in order while the array fits, and reports the size kept', () => {
    const all = capList(items, wireBytes(items));
    assert.deepEqual(all, { value: items, truncated: false, bytes: wireBytes(items) });
    for (const max of [1, 2, 40, 777, wireBytes(items) - 1]) {
      const { value, truncated, bytes } = capList(items, max);
      assert.equal(truncated, true);
      assert.deepEqual(value, items.slice(0, value.length));
      assert.equal(bytes, wireBytes(value));
      assert.ok(value.length === 0 || bytes <= max);
      assert.ok(wireBytes(items.slice(0, value.length + 1)) > max, 'one more item would not fit');
    }
  });
});
