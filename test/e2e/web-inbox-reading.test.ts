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
    // Multipart, but none of its boundaries in the body: the parser finds no text in it.
    await env.deliver(
      [ALICE],
      message(
        ['Subject: Lost boundaries', 'Content-Type: multipart/mixed; boundary="BOUNDARY"'],
        Buffer.from('Hi there,\r\n\r\nThis is the dingus fish.'),
      ),
    );
    // A right-to-left override (U+202E) shows what follows it backwards.
    const rlo = (text: string) => `=?utf-8?B?${Buffer.from(text).toString('base64')}?=`;
    await env.deliver(
      [ALICE],
      Buffer.from(
        [
          `From: ${rlo('Your bank \u202Emoc.knab')} <phish@remote.test>`,
          `To: ${ALICE}`,
          `Subject: Invoice ${rlo('\u202Efdp.exe')}`,
          'MIME-Version: 1.0',
          'Content-Type: multipart/mixed; boundary="b1"',
          '',
          '--b1',
          'Content-Type: text/plain; charset=utf-8',
          '',
          'The invoice is attached.',
          '--b1',
          `Content-Type: application/octet-stream; name="${rlo('invoice\u202Egpj.exe')}"`,
          `Content-Disposition: attachment; filename="${rlo('invoice\u202Egpj.exe')}"`,
          'Content-Transfer-Encoding: base64',
          '',
          Buffer.from('MZ, a program').toString('base64'),
          '--b1--',
          '',
        ].join('\r\n'),
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

  it('going back to the text while the source loads keeps the text on show', async () => {
    await open('Latin-1 letter');
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const raw = (url: URL) => url.pathname.endsWith('/raw');
    await page.route(raw, async (route) => {
      await held;
      await route.continue();
    });
    try {
      await page.click('button.tab:has-text("Source")');
      await page.click('button.tab:has-text("Text")');
      const late = page.waitForResponse((res) => raw(new URL(res.url())));
      release();
      await (await late).finished();
      // The page had the source; give it the moment it needs to (wrongly) show it.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await page.textContent('button.tab.current'), 'Text');
      assert.equal(await page.locator('.reader pre.source').count(), 0, 'the source replaced the text');
      assert.match((await page.textContent('.reader .body pre.text')) ?? '', /^Grüße aus Köln\s*$/);
    } finally {
      await page.unroute(raw);
    }
  });

  it('a message whose text the parser could not find shows its source, not nothing', async () => {
    await open('Lost boundaries');
    await page.waitForSelector('.reader pre.source:has-text("This is the dingus fish.")', { timeout: 5000 });
  });

  it("a sender's name, a subject or a file name cannot turn what follows it backwards", async () => {
    const bidiControls = /[\u202a-\u202e\u2066-\u2069]/;
    const item = (await page.textContent('li.message:has-text("Invoice")')) ?? '';
    assert.doesNotMatch(item, bidiControls);
    await open('Invoice');
    // Shown as it is: a program, not "invoiceexe.jpg"; the address as it is, not "<tset.etomer@hsihp>".
    assert.equal(await page.textContent('button.attachment'), 'invoicegpj.exe');
    assert.equal(await page.textContent('dl.headers dd >> nth=0'), 'Your bank moc.knab <phish@remote.test>');
    assert.doesNotMatch((await page.textContent('.reader')) ?? '', bidiControls);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('button.attachment')]);
    assert.match(download.suggestedFilename(), /\.exe$/);
  });

  it('the page threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
