/**
 * The web inbox showing internationalized domain names as people write them: a mailbox at
 * `xn--mnchen-3ya.test` is `info@münchen.test` in the sidebar, the list's title and the message's
 * headers, a sender at `xn--bcher-kva.example` is `bücher.example`; a name that mixes look-alike
 * scripts (a Cyrillic `а` in `pаypal`) stays in its `xn--` form. The page's URLs and API calls keep
 * the ASCII form. Headless Chromium against a real local relay, as in web-inbox.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium } from '../helpers/browser.ts';

const INFO = 'info@xn--mnchen-3ya.test';

describe('web inbox: internationalized domains in Unicode where a person reads them', {
  skip: !chromiumAvailable('web inbox in a browser'),
}, () => {
  let env: ApiTestEnv;
  let browser: Browser;
  let page: Page;
  const apiUrls: string[] = [];
  const pageErrors: string[] = [];

  before(async () => {
    env = await startApiTestEnv({
      config: { domains: ['example.test', 'xn--mnchen-3ya.test'], mailboxes: ['alice@example.test', INFO] },
    });
    const mail = (from: string, subject: string) =>
      Buffer.from(
        [
          `From: ${from}`,
          `To: ${INFO}`,
          `Subject: ${subject}`,
          'Date: Mon, 10 Mar 2025 10:00:00 +0000',
          '',
          'Hallo.',
          '',
        ].join('\r\n'),
      );
    await env.deliver([INFO], mail('Jörg <joerg@xn--bcher-kva.example>', 'Bücher'));
    // pаypal.example with a Cyrillic а (U+0430): shown as the Punycode it is, not as "paypal".
    await env.deliver([INFO], mail('Service <service@xn--pypal-4ve.example>', 'Konto'));
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1300, height: 850 } })).newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('request', (req) => {
      if (new URL(req.url()).pathname.startsWith('/v1/')) apiUrls.push(req.url());
    });
    await page.goto(`${env.url}/inbox/#token=${await env.token(null, { admin: true })}`);
    await page.waitForSelector('nav.mailboxes .mailbox');
  });
  after(async () => {
    await browser?.close();
    await env?.close();
  });

  it('the sidebar and the list show the mailbox in Unicode; its link and the API calls keep the ASCII form', async () => {
    const entry = page.locator('nav.mailboxes .mailbox', { hasText: 'münchen' });
    assert.equal(await entry.locator('.address').textContent(), 'info@münchen.test');
    assert.equal(await entry.locator('.address').getAttribute('title'), INFO);
    await entry.locator('a.view', { hasText: 'Inbox' }).click();
    await page.waitForSelector('li.message:has-text("Bücher")');
    assert.equal(await page.textContent('h2.list-title'), 'info@münchen.test — Inbox');
    assert.match(page.url(), /#\/info%40xn--mnchen-3ya\.test\/inbox$/);
    assert.equal(
      await page.textContent('li.message:has-text("Bücher") .from'),
      'Jörg <joerg@bücher.example>',
    );
    const mailboxCalls = apiUrls.filter((u) => u.includes('/v1/mailboxes/info'));
    assert.ok(mailboxCalls.length > 0);
    for (const url of mailboxCalls)
      assert.match(url, /\/v1\/mailboxes\/info%40xn--mnchen-3ya\.test(\/|\?|$)/, url);
  });

  it('the message headers show the sender and the recipient in Unicode', async () => {
    await page.click('li.message:has-text("Bücher") a');
    await page.waitForSelector('.reader h2.subject:has-text("Bücher")');
    const headers = await page.locator('dl.headers dd').allTextContents();
    assert.ok(headers.includes('Jörg <joerg@bücher.example>'), JSON.stringify(headers));
    assert.ok(headers.includes('info@münchen.test'), JSON.stringify(headers));
  });

  it('a domain that mixes look-alike scripts stays in its xn-- form', async () => {
    assert.equal(
      await page.textContent('li.message:has-text("Konto") .from'),
      'Service <service@xn--pypal-4ve.example>',
    );
    await page.click('li.message:has-text("Konto") a');
    await page.waitForSelector('.reader h2.subject:has-text("Konto")');
    const headers = await page.locator('dl.headers dd').allTextContents();
    assert.ok(headers.includes('Service <service@xn--pypal-4ve.example>'), JSON.stringify(headers));
  });

  it('the page threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
