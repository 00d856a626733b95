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
import { matchesEtag } from './http-headers.ts';
import type { ApiApp, ApiEnv } from './shell.ts';

export const INBOX_PATH = '/inbox/';
/** The files of `web/inbox/` (index.html is `/inbox/` itself); test/e2e/web-inbox.test.ts checks the list. */
export const INBOX_FILES = ['index.html', 'inbox.css', 'inbox.js'] as const;

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
 * pay for them at cold start.
 */
export function mountInbox(app: ApiApp): void {
  let loaded: Promise<Map<string, Asset>> | undefined;
  const assets = () => {
    loaded ??= import('./inbox-assets.ts').then((m) => assetsByPath(m.inboxAssets()));
    loaded.catch(() => {
      loaded = undefined;
    });
    return loaded;
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
      'Content-Security-Policy': INBOX_CSP,
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
      'Cross-Origin-Opener-Policy': 'same-origin',
    };
    if (matchesEtag(c.req.header('If-None-Match'), asset.etag)) return c.body(null, 304, headers);
    return c.body(asset.body, 200, headers);
  };
  for (const name of INBOX_FILES) app.get(name === 'index.html' ? INBOX_PATH : `${INBOX_PATH}${name}`, serve);
}
