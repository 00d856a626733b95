/**
 * The web inbox (docs/adr/0017-web-inbox.md): one static page, its script and its style sheet at
 * `/inbox/`, served by the API itself, so that it needs no host of its own and calls the API on its
 * own origin (no CORS). The page holds no mail and grants nothing: it asks for a token and reads the
 * mailboxes through the same `/v1` routes as any client.
 *
 * Its Content-Security-Policy is what keeps mail from running as the inbox: scripts only from this
 * origin (and the page builds its DOM with text, never HTML), no plugins, no framing by others. A
 * message's HTML is shown in an `<iframe sandbox srcdoc>`, without `allow-scripts` or
 * `allow-same-origin`; a srcdoc document inherits this policy, so a message cannot load fonts or
 * styles from elsewhere either. Inline styles are allowed, for the messages' own styling; they cannot
 * run code.
 *
 * Images from anywhere (`img-src http: https:`) are allowed here only so that a message's frame may
 * show them when its reader asks ("Remote images are hidden — Show"): a srcdoc document can add to
 * its parent's policy, never loosen it. The frame's own policy (a `<meta>` at the top of its
 * srcdoc, web/inbox/inbox.js `framePolicy`) takes them away again until then, so no tracking pixel
 * loads by reading; the page itself shows no image it did not make (its DOM is built with text).
 */
import { createHash } from 'node:crypto';
import type { Context, Next } from 'hono';
import type { BlobStore } from '../ports/blob-store.ts';
import { matchesEtag } from './http-headers.ts';
import type { ApiApp, ApiEnv } from './shell.ts';

export const INBOX_PATH = '/inbox/';
/** The files of `web/inbox/` (index.html is `/inbox/` itself); test/e2e/web-inbox.test.ts checks the list. */
export const INBOX_FILES = ['index.html', 'inbox.css', 'inbox.js'] as const;

/**
 * The page's Content-Security-Policy as served where the API's redirects (raw messages and parts over
 * the threshold, ADR 5) stay on its own origin: locally. Where they lead elsewhere (to S3 in AWS),
 * `inboxCsp` adds that origin to `connect-src`.
 */
export const INBOX_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  // For a message's remote images once asked for (see above); the frame refuses them until then.
  "img-src 'self' data: http: https:",
  "connect-src 'self'",
  "form-action 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The page's policy when the API's redirects lead to `downloadOrigin`: the page downloads through
 * `fetch`, and a policy is checked again at each redirect, so with `connect-src 'self'` alone every
 * download over the threshold failed in AWS ("Failed to fetch") where it works locally.
 */
export function inboxCsp(downloadOrigin: string | undefined): string {
  if (downloadOrigin === undefined) return INBOX_CSP;
  return INBOX_CSP.replace("connect-src 'self'", `connect-src 'self' ${downloadOrigin}`);
}

/** A key that names no blob: presigning signs, it reads nothing, and the URL is only looked at. */
const PROBE_KEY = 'inbox/csp-probe';

/**
 * Where the store's presigned URLs lead (the bucket's origin for S3; the local API's own address
 * locally), or undefined for a relative URL. Its signature is all that differs between keys. Throws
 * when the store presigns nothing (a test's, which answers every read itself).
 */
async function presignedOrigin(blobs: BlobStore): Promise<string | undefined> {
  const url = await blobs.presign(PROBE_KEY, { expiresIn: 60 });
  if (!/^https?:\/\//i.test(url)) return undefined;
  return new URL(url).origin;
}

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

interface Asset {
  readonly body: string;
  readonly type: string;
  readonly etag: string;
}

function assetsByPath(files: Readonly<Record<string, string>>): Map<string, Asset> {
  const byPath = new Map<string, Asset>();
  for (const [name, body] of Object.entries(files)) {
    const type = TYPES[/\.[a-z]+$/.exec(name)?.[0] ?? ''];
    if (type === undefined) continue;
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    byPath.set(name === 'index.html' ? INBOX_PATH : `${INBOX_PATH}${name}`, { body, type, etag });
  }
  return byPath;
}

/**
 * Mounts `GET /inbox/…` (and `GET /`, which leads there). The files are loaded at the first request
 * for one (a chunk of their own in the bundles): an API request that is not for the page does not
 * pay for them at cold start, nor for the S3 client that finds where presigned URLs lead.
 */
export function mountInbox(app: ApiApp, blobs: BlobStore): void {
  let loaded: Promise<Map<string, Asset>> | undefined;
  const assets = () => {
    loaded ??= import('./inbox-assets.ts').then((m) => assetsByPath(m.inboxAssets()));
    loaded.catch(() => {
      loaded = undefined;
    });
    return loaded;
  };
  let downloads: Promise<string | undefined> | undefined;
  /** The policy for a page at `pageOrigin` (API Gateway's, a custom domain's, loopback's). */
  const policyFor = async (pageOrigin: string) => {
    if (downloads === undefined) {
      downloads = presignedOrigin(blobs);
      // Asked again at the next load: a store that presigns nothing, or an S3 client that failed to load.
      downloads.catch(() => {
        downloads = undefined;
      });
    }
    const origin = await downloads.catch(() => undefined);
    return inboxCsp(origin === pageOrigin ? undefined : origin);
  };
  app.get('/', (c) => c.redirect(INBOX_PATH, 302));
  app.get('/inbox', (c) => c.redirect(INBOX_PATH, 301));
  const serve = async (c: Context<ApiEnv>, next: Next) => {
    const asset = (await assets()).get(c.req.path);
    if (asset === undefined) return next();
    // Revalidated at every load (a new version shows at once), answered 304 while unchanged.
    const headers: Record<string, string> = {
      'Content-Type': asset.type,
      'Cache-Control': 'no-cache',
      ETag: asset.etag,
      'Content-Security-Policy': await policyFor(new URL(c.req.url).origin),
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
      'Cross-Origin-Opener-Policy': 'same-origin',
    };
    if (matchesEtag(c.req.header('If-None-Match'), asset.etag)) return c.body(null, 304, headers);
    return c.body(asset.body, 200, headers);
  };
  for (const name of INBOX_FILES) app.get(name === 'index.html' ? INBOX_PATH : `${INBOX_PATH}${name}`, serve);
}
