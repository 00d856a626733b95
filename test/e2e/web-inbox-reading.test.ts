/**
 * The web inbox (`/inbox/`, docs/adr/0017-web-inbox.md) reading mail as it comes from the wild:
 * legacy charsets in the source view, and what a message can put in its headers to mislead the
 * reader. Headless Chromium against a real local relay, as in web-inbox.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium } from '../helpers/browser.ts';

const ALICE = 'alice@example.test';

/** A message of header lines and a body of raw bytes (8-bit, as old mailers send them). */
function message(headers: readonly string[], body: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(
      [
        'From: Old Mailer <old@remote.test>',
        `To: ${ALICE}`,
        'Date: Mon, 10 Mar 2025 10:00:00 +0000',
        'MIME-Version: 1.0',
        ...headers,
        '',
        '',
      ].join('\r\n'),
    ),
    body,
    Buffer.from('\r\n'),
  ]);
}

describe('web inbox reading mail from the wild', {
  skip: !chromiumAvailable('web inbox in a browser'),
}, () => {
  let env: ApiTestEnv;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  const open = async (subject: string) => {
    await page.click(`li.message:has-text(${JSON.stringify(subject)}) a`);
    await page.waitForSelector(`.reader h2.subject:has-text(${JSON.stringify(subject)})`);
  };
  const source = async () => {
    await page.click('button.tab:has-text("Source")');
    return (await (await page.waitForSelector('pre.source')).textContent()) ?? '';
  };

  before(async () => {
    env = await startApiTestEnv();
    await env.deliver(
      [ALICE],
      message(
        [
          'Subject: Latin-1 letter',
          'Content-Type: text/plain; charset=iso-8859-1',
          'Content-Transfer-Encoding: 8bit',
        ],
        Buffer.from('Grüße aus Köln', 'latin1'),
      ),
    );
    await env.deliver(
      [ALICE],
      message(
        [
          'Subject: KOI8-R letter',
          'Content-Type: text/plain; charset=koi8-r',
          'Content-Transfer-Encoding: 8bit',
        ],
        // "Привет" in KOI8-R.
        Buffer.from([0xf0, 0xd2, 0xc9, 0xd7, 0xc5, 0xd4]),
      ),
    );
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1300, height: 850 } })).newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${env.url}/inbox/#token=${await env.token(ALICE)}`);
    await page.waitForSelector('li.message');
  });
  after(async () => {
    await browser?.close();
    await env?.close();
  });

  it('the source of 8-bit mail in a legacy charset reads in that charset, not as U+FFFD', async () => {
    await open('Latin-1 letter');
    const latin1 = await source();
    assert.ok(latin1.includes('Grüße aus Köln'), latin1.slice(-200));
    assert.ok(!latin1.includes('\uFFFD'));
    await open('KOI8-R letter');
    const koi8 = await source();
    assert.ok(koi8.includes('Привет'), koi8.slice(-200));
    assert.ok(!koi8.includes('\uFFFD'));
  });

  it('the page threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
