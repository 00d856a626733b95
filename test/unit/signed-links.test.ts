/**
 * Signed blob links (functions/core/signed-links.ts) at their edges: how long a link lives, what
 * its URL looks like, and which requests made with it are served. The round trip through the local
 * blob store and API is in test/contract/local.test.ts and test/e2e/api-large.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../functions/core/errors.ts';
import {
  MAX_PRESIGN_SECONDS,
  signedBlobUrl,
  verifyPresignedBlobRequest,
} from '../../functions/core/signed-links.ts';

const SECRET = 'test-secret-0123456789abcdef';
const BASE = 'http://127.0.0.1:8025';
const KEY = 'forwarded/01JNMR8Z1X0000000000000000.eml';

const link = (options: Partial<Parameters<typeof signedBlobUrl>[0]> = {}) =>
  new URL(
    signedBlobUrl({ baseUrl: BASE, secret: SECRET, key: KEY, expiresIn: 60, nowMs: 1_000_000, ...options }),
  );

describe('signedBlobUrl: lifetimes and the URL', () => {
  it('takes lifetimes from 1 second to 7 days, in whole seconds, and nothing else', () => {
    assert.equal(MAX_PRESIGN_SECONDS, 7 * 24 * 3600);
    assert.equal(link({ expiresIn: 1 }).searchParams.get('expires'), '1001');
    assert.equal(
      link({ expiresIn: MAX_PRESIGN_SECONDS }).searchParams.get('expires'),
      String(1000 + 604_800),
    );
    for (const expiresIn of [0, -60, 1.5, MAX_PRESIGN_SECONDS + 1, Number.NaN]) {
      assert.throws(
        () => link({ expiresIn }),
        (err: unknown) =>
          err instanceof ValidationError &&
          err.message === 'expiresIn must be an integer from 1 to 604800 seconds',
        String(expiresIn),
      );
    }
  });

  it('rounds the expiry up, so a link lives at least as long as asked', () => {
    const url = link({ nowMs: 1_000_001, expiresIn: 60 });
    assert.equal(url.searchParams.get('expires'), '1061');
    const q = url.searchParams;
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, q, 1_000_001 + 60_000), { ok: true });
  });

  it('one slash between the base URL and the path, however the base URL ends', () => {
    for (const baseUrl of [BASE, `${BASE}/`, `${BASE}//`]) {
      const url = signedBlobUrl({ baseUrl, secret: SECRET, key: KEY, expiresIn: 60 });
      assert.ok(url.startsWith(`${BASE}/v1/blobs/forwarded/01JNMR8Z1X0000000000000000.eml?expires=`), url);
    }
  });

  it('refuses a Content-Disposition that would break the response header', () => {
    assert.throws(
      () => link({ contentDisposition: 'attachment\r\nSet-Cookie: x=1' }),
      (err: unknown) =>
        err instanceof ValidationError &&
        err.code === 'invalid_request' &&
        err.message === 'contentDisposition must not contain CR, LF or NUL',
    );
    assert.throws(
      () => link({ contentType: 'text/plain\0' }),
      (err: unknown) =>
        err instanceof ValidationError && err.message === 'contentType must not contain CR, LF or NUL',
    );
  });
});

describe('the signature scheme: links already handed out keep working after an upgrade', () => {
  it('signs ["mail-relay-blob-v1", key, expires, ct, cd] as JSON with HMAC-SHA256, type and disposition included', () => {
    const typed = link({ contentType: 'application/pdf' });
    assert.equal(typed.searchParams.get('expires'), '1060');
    assert.equal(
      typed.searchParams.get('sig'),
      '76685e76ea8b29238c0385857f296aa9b97baa2752e73b25d0b35f3d5bac6927',
    );
    assert.equal(
      link().searchParams.get('sig'),
      '94ed7ffb027771705c3f5e19e4aaa1c3b34531aa5607d2325b2659bff15d7ba6',
    );
    const disposed = link({ contentDisposition: 'attachment' });
    assert.equal(
      disposed.searchParams.get('sig'),
      '888740d9533a4a90ae36e5cfb80b84fcad4f5d91f1037ddde4aba997ae03ae0b',
    );
    const inline = new URLSearchParams(disposed.searchParams);
    inline.set('cd', 'inline');
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, inline, 1_000_000), {
      ok: false,
      reason: 'bad_signature',
    });
    // A holder of the link cannot change the type the blob is served as (text/html on our origin).
    const html = new URLSearchParams(typed.searchParams);
    html.set('ct', 'text/html');
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, html, 1_000_000), {
      ok: false,
      reason: 'bad_signature',
    });
  });
});

describe('verifyPresignedBlobRequest: which requests are served', () => {
  it('serves until the last millisecond of the expiry second, not after', () => {
    const q = link().searchParams;
    const expiresMs = Number(q.get('expires')) * 1000;
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, q, expiresMs), { ok: true });
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, q, expiresMs + 1), {
      ok: false,
      reason: 'expired',
    });
  });

  it('reads the signature in either case of hex; other forms of it or of the expiry are bad signatures', () => {
    const q = link().searchParams;
    const upper = new URLSearchParams(q);
    upper.set('sig', (q.get('sig') ?? '').toUpperCase());
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, upper, 1_000_000), { ok: true });
    const with_ = (name: string, value: string) => {
      const copy = new URLSearchParams(q);
      copy.set(name, value);
      return verifyPresignedBlobRequest(SECRET, KEY, copy, 1_000_000);
    };
    const bad = { ok: false, reason: 'bad_signature' };
    for (const name of ['sig', 'expires']) {
      const without = new URLSearchParams(q);
      without.delete(name);
      assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, without, 1_000_000), {
        ok: false,
        reason: 'missing',
      });
    }
    assert.deepEqual(with_('sig', `${q.get('sig')}00`), bad);
    assert.deepEqual(with_('sig', ` ${q.get('sig')}`), bad);
    assert.deepEqual(with_('expires', `${q.get('expires')}x`), bad);
    assert.deepEqual(with_('expires', `x${q.get('expires')}`), bad);
    assert.deepEqual(with_('expires', '1'.repeat(16)), bad);
  });

  it('returns the signed Content-Type and Content-Disposition only when the link has them', () => {
    const both = link({
      contentType: 'application/pdf',
      contentDisposition: 'attachment; filename="a b.pdf"',
    });
    assert.match(both.search, /&ct=application%2Fpdf&cd=attachment%3B%20filename%3D%22a%20b\.pdf%22&sig=/);
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, both.searchParams, 1_000_000), {
      ok: true,
      contentType: 'application/pdf',
      contentDisposition: 'attachment; filename="a b.pdf"',
    });
    // The query as a plain record (what a router hands over) reads the same.
    assert.deepEqual(
      verifyPresignedBlobRequest(SECRET, KEY, Object.fromEntries(both.searchParams), 1_000_000),
      { ok: true, contentType: 'application/pdf', contentDisposition: 'attachment; filename="a b.pdf"' },
    );
    const typeOnly = link({ contentType: 'message/rfc822' });
    assert.deepEqual(verifyPresignedBlobRequest(SECRET, KEY, typeOnly.searchParams, 1_000_000), {
      ok: true,
      contentType: 'message/rfc822',
    });
  });
});
