/**
 * The web inbox (`/inbox/`, docs/adr/0017-web-inbox.md): the page as the API serves it, then the
 * page itself in headless Chromium against a real local relay (SMTP in, the API on loopback), as a
 * user reads mail with it: sign in, list, read, download, mark, search, delete, compose, reply, and
 * new mail showing up by itself. A loopback "tracker" server stands for the rest of the Internet:
 * a message must not reach it by being read.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import type { Browser, BrowserContext, Page, Request } from 'playwright-core';
import { revokeToken } from '../../functions/api/auth.ts';
import { INBOX_CSP, INBOX_FILES } from '../../functions/api/inbox.ts';
import { encodeCursor } from '../../functions/core/cursor.ts';
import { buildMessageWithAttachment } from '../fixtures/build.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium, until } from '../helpers/browser.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const fixture = (name: string) => readFileSync(join(PROJECT_ROOT, 'test/fixtures', name));
const inboxFile = (name: string) => readFileSync(join(PROJECT_ROOT, 'web/inbox', name));

describe('web inbox: the page the API serves', () => {
  let env: ApiTestEnv;
  before(async () => {
    env = await startApiTestEnv();
  });
  after(async () => {
    await env.close();
  });

  it('/ and /inbox lead to /inbox/, which is the page, its script and its style sheet as in web/inbox', async () => {
    assert.deepEqual(readdirSync(join(PROJECT_ROOT, 'web/inbox')).sort(), [...INBOX_FILES].sort());
    const root = await env.request('/', { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/inbox/');
    const bare = await env.request('/inbox', { redirect: 'manual' });
    assert.equal(bare.status, 301);
    assert.equal(bare.headers.get('location'), '/inbox/');
    for (const [path, file, type] of [
      ['/inbox/', 'index.html', 'text/html; charset=utf-8'],
      ['/inbox/inbox.js', 'inbox.js', 'text/javascript; charset=utf-8'],
      ['/inbox/inbox.css', 'inbox.css', 'text/css; charset=utf-8'],
    ] as const) {
      const res = await env.request(path);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), type, path);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), inboxFile(file), path);
    }
  });

  it('the page runs only its own script, cannot be framed, and sends no referrer', async () => {
    const res = await env.request('/inbox/');
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.equal(csp, INBOX_CSP);
    const directives = new Map(csp.split(/;\s*/).map((d) => [d.split(' ')[0], d.split(' ').slice(1)]));
    assert.deepEqual(directives.get('script-src'), ["'self'"]);
    assert.deepEqual(directives.get('default-src'), ["'none'"]);
    assert.deepEqual(directives.get('frame-ancestors'), ["'none'"]);
    // Remote images for a message's frame once its reader asks for them (web-inbox-remote-images.test.ts).
    assert.deepEqual(directives.get('img-src'), ["'self'", 'data:', 'http:', 'https:']);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  });

  it('is revalidated at each load and answered 304 while unchanged; HEAD has no body', async () => {
    const first = await env.request('/inbox/inbox.js');
    await first.arrayBuffer();
    assert.equal(first.headers.get('cache-control'), 'no-cache');
    const etag = first.headers.get('etag');
    assert.ok(etag);
    const again = await env.request('/inbox/inbox.js', { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304);
    assert.equal((await again.arrayBuffer()).byteLength, 0);
    const head = await env.request('/inbox/', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it('anything else under /inbox/ is the API’s 404; other methods 405', async () => {
    const missing = await env.request('/inbox/../v1/health.js');
    assert.equal(missing.status, 404);
    assert.equal((await errorOf(missing)).code, 'not_found');
    const other = await env.request('/inbox/secrets.txt');
    assert.equal(other.status, 404);
    assert.equal((await errorOf(other)).code, 'not_found');
    const post = await env.request('/inbox/', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal((await errorOf(post)).code, 'method_not_allowed');
  });

  it('GET /v1/me tells a token what it reads; without a valid one, 401', async () => {
    const alice = await env.token(ALICE);
    const admin = await env.token(null, { admin: true });
    const mine = await env.request('/v1/me', { token: alice });
    assert.equal(mine.status, 200);
    const body = (await mine.json()) as Record<string, unknown>;
    assert.deepEqual(
      { ...body, createdAt: typeof body.createdAt },
      {
        admin: false,
        mailbox: ALICE,
        label: null,
        createdAt: 'string',
      },
    );
    const adminBody = (await (await env.request('/v1/me', { token: admin })).json()) as Record<
      string,
      unknown
    >;
    assert.equal(adminBody.admin, true);
    assert.equal(adminBody.mailbox, null);
    const none = await env.request('/v1/me');
    assert.equal(none.status, 401);
    assert.equal((await errorOf(none)).code, 'unauthorized');
    await revokeToken(env.runtime.index, alice);
    assert.equal((await env.request('/v1/me', { token: alice })).status, 401);
  });
});

/** A server that stands for the rest of the Internet: it records every request it gets. */
async function startTracker(): Promise<{
  url: string;
  hits: { path: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}> {
  const hits: { path: string; headers: IncomingHttpHeaders }[] = [];
  const server: Server = createServer((req, res) => {
    hits.push({ path: req.url ?? '', headers: req.headers });
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<p>the outside world</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An HTML message that tries every way a message phones home or runs code. */
function trackedNewsletter(tracker: string): Buffer {
  return Buffer.from(
    [
      'From: Newsletter <news@remote.test>',
      `To: ${ALICE}`,
      'Subject: Tracked newsletter',
      'Date: Mon, 10 Mar 2025 10:00:00 +0000',
      'Message-ID: <tracked.1@remote.test>',
      'MIME-Version: 1.0',
      'Content-Type: text/html; charset=utf-8',
      '',
      `<html><head><link rel="stylesheet" href="${tracker}/link.css">`,
      `<style>@import url(${tracker}/import.css); .bg { background: url(${tracker}/bg.png) }</style></head>`,
      '<body><p id="greeting">Hello from the newsletter</p>',
      `<img src="${tracker}/pixel.png" alt="">`,
      `<script>fetch('${tracker}/script'); parent.document.title = 'script ran';</script>`,
      `<img src="cid:nothing" onerror="new Image().src='${tracker}/onerror'" alt="">`,
      '<div class="bg">styled</div>',
      `<a id="out" href="${tracker}/article">Read online</a>`,
      '</body></html>',
      '',
    ].join('\r\n'),
  );
}

const REDIRECT_BYTES = 100_000;
/** Bytes of every value, three times over: above the redirect threshold. */
const LARGE_PART = Buffer.from(Array.from({ length: 3 * 256 * 400 }, (_, i) => i % 256));

async function sendSmtp(env: ApiTestEnv, to: string, subject: string): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: env.smtp.port, ignoreTLS: true });
  try {
    await transport.sendMail({ from: 'friend@remote.test', to, subject, text: `${subject}, the body\n` });
  } finally {
    transport.close();
  }
}

describe('web inbox in Chromium', { skip: !chromiumAvailable('web inbox in a browser') }, () => {
  let env: ApiTestEnv;
  let tracker: Awaited<ReturnType<typeof startTracker>>;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let aliceToken: string;
  const pageErrors: string[] = [];

  const entryOf = async (mailbox: string, subject: string, view = 'inbox') => {
    const res = await env.request(
      `/v1/mailboxes/${mailbox}/messages?view=${view}&q=${encodeURIComponent(subject)}`,
      {
        token: await env.token(null, { admin: true }),
      },
    );
    const { items } = (await res.json()) as { items: { id: string; seen: boolean; subject: string }[] };
    return items.find((i) => i.subject === subject);
  };
  const listed = () => page.locator('li.message .subject').allTextContents();

  before(async () => {
    // Parts and messages over 100 KB are answered with a redirect, as large ones are in AWS (to S3).
    env = await startApiTestEnv({ app: { rawRedirectBytes: REDIRECT_BYTES } });
    tracker = await startTracker();
    const bigData = await buildMessageWithAttachment({
      from: 'Data <data@remote.test>',
      to: ALICE,
      subject: 'Big data',
      text: 'The data is attached.',
      attachmentBytes: LARGE_PART,
      filename: 'data.bin',
      contentType: 'application/octet-stream',
    });
    await env.deliver([ALICE], bigData, new Date('2025-03-01T08:00:00Z'));
    await env.deliver([ALICE], fixture('mixed-attachment.eml'), new Date('2025-03-07T09:00:00Z'));
    await env.deliver([ALICE], fixture('related-inline-image.eml'), new Date('2025-03-08T11:00:00Z'));
    await env.deliver([ALICE], trackedNewsletter(tracker.url), new Date('2025-03-10T10:00:00Z'));
    await env.deliver([BOB], fixture('alternative.eml'));
    aliceToken = await env.token(ALICE);
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1300, height: 850 } });
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });
  after(async () => {
    await browser?.close();
    await tracker?.close();
    await env?.close();
  });

  it('a wrong token is refused on the sign-in form', async () => {
    await page.goto(`${env.url}/`);
    // How to get a token, locally and for a deployed stack (whose tokens live in its table).
    assert.match(
      (await page.textContent('form.signin .hint')) ?? '',
      /npx mail-relay token create <address> \(for a deployed stack, add --stack <name>\)/,
    );
    await page.fill('#token', `mr_${'A'.repeat(43)}`);
    await page.click('form.signin button[type=submit]');
    await page.waitForSelector('form.signin .error:has-text("not valid")');
    assert.equal(await page.evaluate('sessionStorage.length + localStorage.length'), 0);
  });

  it('signed in with a mailbox token, it lists that mailbox newest first', async () => {
    await page.fill('#token', aliceToken);
    await page.click('form.signin button[type=submit]');
    await page.waitForSelector('li.message');
    assert.deepEqual(await listed(), [
      'Tracked newsletter',
      'Newsletter with logo',
      'Report attached',
      'Big data',
    ]);
    assert.equal(await page.textContent('header.top .who'), ALICE);
    // One mailbox, its two views, with their counts.
    await until('the counts', async () =>
      (await page.textContent('nav.mailboxes a.view.current .count')) === '4' ? true : undefined,
    );
    assert.equal(await page.locator('nav.mailboxes .address').count(), 1);
  });

  it("a message's HTML is shown, but runs no script and loads nothing from elsewhere", async () => {
    await page.click('li.message:has-text("Tracked newsletter") a');
    const frame = page.frameLocator('iframe.html');
    await frame.locator('#greeting').waitFor();
    assert.equal(await frame.locator('#greeting').textContent(), 'Hello from the newsletter');
    const sandbox = await page.getAttribute('iframe.html', 'sandbox');
    assert.ok(sandbox !== null && !/allow-scripts|allow-same-origin/.test(sandbox), String(sandbox));
    await page.waitForSelector('.html-wrap .note:has-text("Remote images")');
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(
      tracker.hits.map((h) => h.path),
      [],
      'reading the message made requests elsewhere',
    );
    assert.notEqual(await page.title(), 'script ran');
  });

  it('opening a message marks it read; "Mark unread" and the Unread filter agree with the API', async () => {
    await until('seen', async () => ((await entryOf(ALICE, 'Tracked newsletter'))?.seen ? true : undefined));
    await page.click('button.seen-toggle:has-text("Mark unread")');
    await until('unseen', async () =>
      (await entryOf(ALICE, 'Tracked newsletter'))?.seen === false ? true : undefined,
    );
    await page.waitForSelector('button.seen-toggle:has-text("Mark read")');
    // Every other message is still unread, so the filter shows all three, then two once one is read.
    await page.click('li.message:has-text("Report attached") a');
    await until('seen', async () => ((await entryOf(ALICE, 'Report attached'))?.seen ? true : undefined));
    await page.check('.toolbar label:has-text("Unread") input');
    await until('the unread list', async () => ((await listed()).length === 3 ? true : undefined));
    assert.deepEqual(await listed(), ['Tracked newsletter', 'Newsletter with logo', 'Big data']);
    await page.uncheck('.toolbar label:has-text("Unread") input');
    await until('the whole list', async () => ((await listed()).length === 4 ? true : undefined));
  });

  it('the message clicked last is the one shown, however late the one before answers', async () => {
    const slow = await entryOf(ALICE, 'Big data');
    assert.ok(slow);
    // The first message's answer is held until the second one is on show.
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const pattern = (url: URL) => url.pathname.endsWith(`/messages/${slow.id}`);
    await page.route(pattern, async (route) => {
      if (route.request().method() === 'GET') await held;
      await route.continue();
    });
    try {
      await page.click('li.message:has-text("Big data") a');
      await page.click('li.message:has-text("Report attached") a');
      await page.waitForSelector('.reader h2.subject:has-text("Report attached")', { timeout: 5000 });
      const late = page.waitForResponse((res) => pattern(new URL(res.url())));
      release();
      await (await late).finished();
      // The page had the late answer; give it the moment it needs to (wrongly) show it.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await page.textContent('.reader h2.subject'), 'Report attached');
      assert.equal(await page.getAttribute('li.message.selected', 'data-id'), page.url().split('/').pop());
    } finally {
      await page.unroute(pattern);
    }
  });

  it('a link in a message opens in a new tab and tells the site nothing of the inbox', async () => {
    await page.click('li.message:has-text("Tracked newsletter") a');
    const frame = page.frameLocator('iframe.html');
    const [tab] = await Promise.all([context.waitForEvent('page'), frame.locator('#out').click()]);
    await tab.waitForLoadState();
    assert.equal(tab.url(), `${tracker.url}/article`);
    const hit = tracker.hits.find((h) => h.path === '/article');
    assert.ok(hit, 'the link was not followed');
    assert.equal(hit.headers.referer, undefined);
    assert.equal(await tab.evaluate('window.opener'), null);
    await tab.close();
    tracker.hits.length = 0;
  });

  it('inline (cid:) images are shown from the message itself', async () => {
    await page.click('li.message:has-text("Newsletter with logo") a');
    const img = page.frameLocator('iframe.html').locator('img[alt=logo]');
    let src: string | null = null;
    await until('the inline image', async () => {
      src = await img.getAttribute('src');
      return src?.startsWith('data:image/png;base64,') ? true : undefined;
    }).catch(async (err: Error) => {
      const frames = await page.locator('iframe.html').count();
      const toast = await page.locator('.toast').allTextContents();
      throw new Error(
        `${err.message}; its src: ${String(src).slice(0, 80)}; frames: ${frames}; toast: ${toast}`,
      );
    });
    assert.equal(await img.evaluate((el) => (el as unknown as { naturalWidth: number }).naturalWidth), 1);
  });

  it('an attachment and the raw message download byte for byte', async () => {
    await page.click('li.message:has-text("Report attached") a');
    await page.waitForSelector('button.attachment:has-text("report.pdf")');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click('button.attachment:has-text("report.pdf")'),
    ]);
    assert.equal(download.suggestedFilename(), 'report.pdf');
    const entry = await entryOf(ALICE, 'Report attached');
    assert.ok(entry);
    const message = (await (
      await env.request(`/v1/mailboxes/${ALICE}/messages/${entry.id}`, { token: aliceToken })
    ).json()) as { attachments: { partId: string; filename: string; sha256: string }[] };
    const part = message.attachments.find((a) => a.filename === 'report.pdf');
    assert.ok(part);
    const expected = Buffer.from(
      await (
        await env.request(`/v1/mailboxes/${ALICE}/messages/${entry.id}/parts/${part.partId}`, {
          token: aliceToken,
        })
      ).arrayBuffer(),
    );
    assert.deepEqual(readFileSync(await download.path()), expected);

    const [eml] = await Promise.all([
      page.waitForEvent('download'),
      page.click('button:has-text("Download .eml")'),
    ]);
    assert.equal(eml.suggestedFilename(), `${entry.id}.eml`);
    assert.deepEqual(
      readFileSync(await eml.path()),
      await env.runtime.blobs.get(`mailboxes/${ALICE}/${entry.id}.eml`),
    );
  });

  it('the source tab shows the message as stored', async () => {
    await page.click('button.tab:has-text("Source")');
    const source = (await page.textContent('pre.source')) ?? '';
    assert.ok(source.startsWith('Return-Path: '), source.slice(0, 200));
    assert.ok(source.includes('Message-ID: <mixed-attachment.1@example.org>'), source.slice(0, 600));
  });

  it('a part over the redirect threshold downloads byte for byte through the redirect', async () => {
    await page.click('li.message:has-text("Big data") a');
    const entry = await entryOf(ALICE, 'Big data');
    assert.ok(entry);
    const message = (await (
      await env.request(`/v1/mailboxes/${ALICE}/messages/${entry.id}`, { token: aliceToken })
    ).json()) as { attachments: { partId: string; filename: string }[] };
    const part = message.attachments.find((a) => a.filename === 'data.bin');
    assert.ok(part);
    const direct = await env.request(`/v1/mailboxes/${ALICE}/messages/${entry.id}/parts/${part.partId}`, {
      token: aliceToken,
      redirect: 'manual',
    });
    assert.equal(direct.status, 307, 'the part is not above the threshold');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click('button.attachment:has-text("data.bin")'),
    ]);
    assert.equal(download.suggestedFilename(), 'data.bin');
    assert.ok(readFileSync(await download.path()).equals(LARGE_PART), 'the download differs from the part');
  });

  it('new mail shows up at the top by itself', async () => {
    await sendSmtp(env, ALICE, 'Arrived while reading');
    await page.waitForSelector('li.message:has-text("Arrived while reading")', { timeout: 10_000 });
    assert.equal((await listed())[0], 'Arrived while reading');
    await until('the new count', async () =>
      (await page.textContent('nav.mailboxes a.view.current .count')) === '5' ? true : undefined,
    );
  });

  it('search asks the API', async () => {
    await page.fill('.toolbar input[type=search]', 'report');
    await page.press('.toolbar input[type=search]', 'Enter');
    await until('the search', async () => ((await listed()).length === 1 ? true : undefined));
    assert.deepEqual(await listed(), ['Report attached']);
    await page.fill('.toolbar input[type=search]', '');
    await page.press('.toolbar input[type=search]', 'Enter');
    await until('the whole list', async () => ((await listed()).length === 5 ? true : undefined));
  });

  it('a search page with no items but a nextCursor (DynamoDB stops after reading 10,000) is asked on', async () => {
    // In AWS a search page stops after reading 10,000 messages, with what it found so far (maybe
    // nothing) and a cursor to read on from. Two such empty pages come first here, as from a large
    // mailbox whose newest mail does not match; the inbox showed "No messages match." instead.
    const onward = encodeCursor('7ZZZZZZZZZZZZZZZZZZZZZZZZZ');
    let searches = 0;
    await page.route('**/messages?*', async (route) => {
      const url = new URL(route.request().url());
      if (route.request().method() !== 'GET' || url.searchParams.get('q') !== 'report')
        return route.fallback();
      searches++;
      if (searches <= 2) return route.fulfill({ json: { items: [], nextCursor: onward } });
      return route.fallback();
    });
    try {
      await page.fill('.toolbar input[type=search]', 'report');
      await page.press('.toolbar input[type=search]', 'Enter');
      await until('the search', async () => ((await listed()).length === 1 ? true : undefined));
      assert.deepEqual(await listed(), ['Report attached']);
      assert.equal(searches, 3);
    } finally {
      await page.unroute('**/messages?*');
    }
    await page.fill('.toolbar input[type=search]', '');
    await page.press('.toolbar input[type=search]', 'Enter');
    await until('the whole list', async () => ((await listed()).length === 5 ? true : undefined));
  });

  it('delete removes the message from the list and from the mailbox', async () => {
    const entry = await entryOf(ALICE, 'Arrived while reading');
    assert.ok(entry);
    await page.click('li.message:has-text("Arrived while reading") a');
    page.once('dialog', (dialog) => void dialog.accept());
    await page.click('.reader button.danger:has-text("Delete")');
    await page.waitForSelector('li.message:has-text("Arrived while reading")', { state: 'detached' });
    const gone = await env.request(`/v1/mailboxes/${ALICE}/messages/${entry.id}`, { token: aliceToken });
    assert.equal(gone.status, 404);
  });

  it('ticked messages are deleted together (one batch delete), the open one closes, and select-all ticks the list', async () => {
    for (const n of [1, 2, 3]) await sendSmtp(env, ALICE, `Batch ${n}`);
    const entries = await Promise.all([1, 2, 3].map((n) => entryOf(ALICE, `Batch ${n}`)));
    assert.ok(entries.every((e) => e !== undefined));
    const [first, second, third] = entries as { id: string }[];
    await page.click('.toolbar button:has-text("Refresh")');
    await page.waitForSelector('li.message:has-text("Batch 3")');
    const stat = async () =>
      (
        (await (await env.request(`/v1/mailboxes/${ALICE}`, { token: aliceToken })).json()) as {
          messages: number;
        }
      ).messages;
    const before = await stat();
    assert.equal(await page.isHidden('.toolbar button.delete-checked'), true, 'nothing ticked, no button');
    await page.click('li.message:has-text("Batch 1") a');
    await page.waitForSelector('.reader h2.subject:has-text("Batch 1")');
    await page.check('li.message:has-text("Batch 1") input.pick');
    await page.check('li.message:has-text("Batch 3") input.pick');
    assert.equal(await page.textContent('.toolbar button.delete-checked'), 'Delete 2 selected');
    const posted: unknown[] = [];
    const onRequest = (r: Request) => {
      if (r.url().includes('/messages/delete')) posted.push(r.postDataJSON());
    };
    page.on('request', onRequest);
    try {
      page.once('dialog', (d) => {
        assert.equal(d.message(), 'Delete 2 selected messages?');
        void d.accept();
      });
      await page.click('.toolbar button.delete-checked');
      await page.waitForSelector('li.message:has-text("Batch 3")', { state: 'detached' });
      await page.waitForSelector('li.message:has-text("Batch 1")', { state: 'detached' });
    } finally {
      page.off('request', onRequest);
    }
    assert.equal(posted.length, 1, 'one request');
    assert.deepEqual(new Set((posted[0] as { ids: string[] }).ids), new Set([first?.id, third?.id]));
    assert.ok((await listed()).includes('Batch 2'), 'the one not ticked stays');
    assert.equal(await page.locator('.reader h2.subject').count(), 0, 'the open message, deleted, is closed');
    assert.equal(await page.isHidden('.toolbar button.delete-checked'), true);
    assert.equal(await stat(), before - 2);
    for (const e of [first, third]) {
      const gone = await env.request(`/v1/mailboxes/${ALICE}/messages/${e?.id}`, { token: aliceToken });
      assert.equal(gone.status, 404);
    }
    assert.equal(
      (await env.request(`/v1/mailboxes/${ALICE}/messages/${second?.id}`, { token: aliceToken })).status,
      200,
    );
    // Select all ticks every message shown; unticking one makes it partial; unticking all hides the button.
    const shown = (await listed()).length;
    await page.check('.toolbar input[type=checkbox][aria-label="Select every message shown"]');
    assert.equal(await page.locator('li.message input.pick:checked').count(), shown);
    assert.equal(await page.textContent('.toolbar button.delete-checked'), `Delete ${shown} selected`);
    await page.uncheck('li.message:has-text("Batch 2") input.pick');
    assert.equal(
      await page.$eval(
        '.toolbar input[aria-label="Select every message shown"]',
        (el) => (el as unknown as { indeterminate: boolean }).indeterminate,
      ),
      true,
    );
    // Clicked when some are ticked, it ticks all; clicked again, none.
    const all = '.toolbar input[type=checkbox][aria-label="Select every message shown"]';
    await page.click(all);
    assert.equal(await page.locator('li.message input.pick:checked').count(), shown);
    await page.click(all);
    assert.equal(await page.locator('li.message input.pick:checked').count(), 0);
    assert.equal(await page.isHidden('.toolbar button.delete-checked'), true);
  });

  it('compose sends from the mailbox; the copy is in its Sent view and a local recipient gets it', async () => {
    await page.click('header.top button:has-text("Compose")');
    await page.fill('#compose-to', BOB);
    await page.fill('#compose-subject', 'Lunch?');
    await page.fill('#compose-text', 'Noon at the usual place.');
    await page.click('dialog.compose button[type=submit]');
    await page.waitForSelector('.toast:has-text("Sent to bob@example.test")');
    assert.ok(await until('bob to get it', () => entryOf(BOB, 'Lunch?')));
    await page.click('nav.mailboxes a.view:has-text("Sent")');
    await page.waitForSelector('li.message:has-text("Lunch?")');
    assert.match((await page.textContent('li.message .from')) ?? '', /To: bob@example\.test/);
  });

  it('Escape or Cancel asks before a written draft is thrown away; an untouched one just closes', async () => {
    await page.click('header.top button:has-text("Compose")');
    await page.keyboard.press('Escape');
    await page.waitForSelector('dialog.compose', { state: 'detached' });
    await page.click('header.top button:has-text("Compose")');
    await page.fill('#compose-text', 'Half a thought');
    const asked: string[] = [];
    page.once('dialog', (d) => {
      asked.push(d.message());
      void d.dismiss();
    });
    await page.keyboard.press('Escape');
    await until('the question', async () => (asked.length > 0 ? true : undefined));
    assert.deepEqual(asked, ['Discard this message?']);
    assert.equal(await page.inputValue('#compose-text'), 'Half a thought');
    page.once('dialog', (d) => void d.accept());
    await page.click('dialog.compose button:has-text("Cancel")');
    await page.waitForSelector('dialog.compose', { state: 'detached' });
  });

  it('reply answers the sender, quotes the message and threads it', async () => {
    await page.click('nav.mailboxes a.view:has-text("Inbox")');
    await page.click('li.message:has-text("Report attached") a');
    await page.click('.reader button:has-text("Reply")');
    assert.equal(await page.inputValue('#compose-to'), 'alice@example.org');
    assert.equal(await page.inputValue('#compose-subject'), 'Re: Report attached');
    assert.match(await page.inputValue('#compose-text'), /\n> The report and the raw data are attached\./);
    await page.click('dialog.compose button[type=submit]');
    await page.waitForSelector('.toast:has-text("Sent to alice@example.org")');
    const sent = await until('the sent copy', () => entryOf(ALICE, 'Re: Report attached', 'sent'));
    const detail = (await (
      await env.request(`/v1/mailboxes/${ALICE}/messages/${sent.id}?view=sent`, { token: aliceToken })
    ).json()) as { headers: { name: string; value: string }[] };
    const header = (name: string) => detail.headers.find((h) => h.name.toLowerCase() === name)?.value;
    assert.equal(header('in-reply-to'), '<mixed-attachment.1@example.org>');
    assert.equal(header('references'), '<mixed-attachment.1@example.org>');
  });

  it('a long-poll cursor the mailbox no longer knows (its index was reset) starts over from the list', async () => {
    // One answer hands the page a cursor past the mailbox's last: its next long-poll is a 400.
    let handed = false;
    await page.route('**/wait?*', async (route) => {
      if (handed || !route.request().url().includes('cursor=')) return route.fallback();
      handed = true;
      await route.fulfill({
        status: 200,
        contentType: 'application/json',
        body: JSON.stringify({ items: [], truncated: false, cursor: '999999999999' }),
      });
    });
    try {
      await page.click('.toolbar button:has-text("Refresh")');
      await until('the bad cursor', async () => (handed ? true : undefined));
      await sendSmtp(env, ALICE, 'After the reset');
      await page.waitForSelector('li.message:has-text("After the reset")', { timeout: 10_000 });
    } finally {
      await page.unroute('**/wait?*');
    }
  });

  it('a revoked token signs the page out', async () => {
    await revokeToken(env.runtime.index, aliceToken);
    // The page's long-poll checks its token again while it waits, and may meet the revocation and sign
    // out by itself before this click: either way the page must end up signed out, saying why.
    const refresh = page.locator('.toolbar button:has-text("Refresh")');
    await refresh.click({ timeout: 2000 }).catch(() => undefined);
    await page.waitForSelector('form.signin .error:has-text("no longer valid")');
    assert.equal(await page.evaluate('sessionStorage.length + localStorage.length'), 0);
  });

  it('an admin token reads every mailbox; a #token= link signs in and leaves the address bar', async () => {
    const admin = await env.token(null, { admin: true });
    await page.goto(`${env.url}/inbox/#token=${admin}`);
    await page.waitForSelector('li.message');
    assert.doesNotMatch(page.url(), /token=/);
    // The configured mailboxes by address, carol too although she has no mail yet.
    assert.deepEqual(await page.locator('nav.mailboxes .address').allTextContents(), [
      ALICE,
      BOB,
      'carol@example.test',
    ]);
    await page.click(`nav.mailboxes a[href="#/${encodeURIComponent('carol@example.test')}/inbox"]`);
    await page.waitForSelector('li.empty:has-text("No messages.")');
    await page.click(`nav.mailboxes a[href="#/${encodeURIComponent(BOB)}/inbox"]`);
    await page.waitForSelector('li.message:has-text("Text and HTML")');
    assert.deepEqual((await listed()).sort(), ['Lunch?', 'Text and HTML']);
    // Reload keeps the place; sign out forgets the token.
    await page.reload();
    await page.waitForSelector('li.message:has-text("Text and HTML")');
    await page.click('header.top button:has-text("Sign out")');
    await page.waitForSelector('form.signin');
    assert.equal(await page.evaluate('sessionStorage.length + localStorage.length'), 0);
  });

  it('a token kept with "Remember me" is neither replaced nor erased by #token= links (a link in a message)', async () => {
    const kept = await env.token(ALICE);
    const other = await context.browser()?.newContext();
    assert.ok(other);
    try {
      const first = await other.newPage();
      await first.goto(`${env.url}/inbox/`);
      await first.fill('#token', kept);
      await first.check('#remember');
      await first.click('form.signin button[type=submit]');
      await first.waitForSelector('li.message');
      const keptNow = () => first.evaluate(`localStorage.getItem('mail-relay.token')`);
      assert.equal(await keptNow(), kept);
      // Another mailbox's token, then a token that is no token, each from a link in a new tab.
      const linked = await other.newPage();
      await linked.goto(`${env.url}/inbox/#token=${await env.token(BOB)}`);
      await linked.waitForSelector(`header.top .who:has-text("${BOB}")`);
      await linked.reload();
      await linked.waitForSelector(`header.top .who:has-text("${BOB}")`);
      const bogus = await other.newPage();
      await bogus.goto(`${env.url}/inbox/#token=mr_${'B'.repeat(43)}`);
      await bogus.waitForSelector('form.signin .error:has-text("not valid")');
      assert.equal(await keptNow(), kept);
      const later = await other.newPage();
      await later.goto(`${env.url}/inbox/`);
      await later.waitForSelector(`header.top .who:has-text("${ALICE}")`);
    } finally {
      await other.close();
    }
  });

  it('Delete all empties the mailbox it was asked for, even if the reader goes to another meanwhile', async () => {
    const CAROL = 'carol@example.test';
    for (const n of [1, 2, 3]) await sendSmtp(env, CAROL, `For carol ${n}`);
    const count = async (mailbox: string) =>
      (
        (await (
          await env.request(`/v1/mailboxes/${mailbox}`, { token: await env.token(null, { admin: true }) })
        ).json()) as { messages: number }
      ).messages;
    const aliceBefore = await count(ALICE);
    assert.ok(aliceBefore > 0);
    await page.goto(`${env.url}/inbox/#token=${await env.token(null, { admin: true })}`);
    await page.waitForSelector('li.message');
    await page.click(`nav.mailboxes a[href="#/${encodeURIComponent(CAROL)}/inbox"]`);
    await page.waitForSelector('li.message:has-text("For carol 1")');
    // The first answer is held, and says there is more (as past 1,000 messages): the rest is asked for after the switch.
    let release: () => void = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    let deletes = 0;
    await page.route('**/messages?*', async (route) => {
      if (route.request().method() !== 'DELETE') return route.fallback();
      deletes++;
      const response = await route.fetch();
      const body = (await response.json()) as { deleted: number; more: boolean };
      if (deletes === 1) await held;
      await route.fulfill({ response, json: deletes === 1 ? { ...body, more: true } : body });
    });
    try {
      page.once('dialog', (d) => void d.accept());
      await page.click('.toolbar button.danger:has-text("Delete all")');
      const button = page.locator('.toolbar button.danger:not(.delete-checked)');
      await until('the progress', async () =>
        (await button.textContent())?.startsWith('Deleting') ? true : undefined,
      );
      assert.equal(await button.isDisabled(), true);
      await page.click(`nav.mailboxes a[href="#/${encodeURIComponent(ALICE)}/inbox"]`);
      await page.waitForSelector('.list-title:has-text("alice@example.test")');
      release();
      await until('the end of Delete all', async () =>
        deletes >= 2 && (await button.textContent()) === 'Delete all' ? true : undefined,
      );
    } finally {
      release();
      await page.unroute('**/messages?*');
    }
    assert.equal(await count(CAROL), 0);
    assert.equal(await count(ALICE), aliceBefore, "alice's mailbox was emptied instead");
    assert.ok((await listed()).length > 0, "alice's list is still on show");
  });

  it('the page threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
