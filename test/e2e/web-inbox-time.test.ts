/**
 * The web inbox and time: dates in the viewer's zone, and mail that arrives while the list is open
 * but was received before what it shows (an import of old mail, a replay), which "Load more" brings
 * in its place instead of the list growing out of order. Headless Chromium against a real local
 * relay, as in web-inbox.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium, until } from '../helpers/browser.ts';

// biome-ignore lint/suspicious/noExplicitAny: the page's DOM, untyped here (the project compiles without the DOM lib).
declare const document: any;

const ALICE = 'alice@example.test';
/** One page of the inbox is 50 entries: 60 messages leave "Load more". */
const MESSAGES = 60;

function note(subject: string, date: string): Buffer {
  return Buffer.from(
    [
      `From: Friend <friend@remote.test>`,
      `To: ${ALICE}`,
      `Subject: ${subject}`,
      `Date: ${date}`,
      '',
      'hi',
      '',
    ].join('\r\n'),
  );
}

describe('web inbox: time', { skip: !chromiumAvailable('web inbox in a browser') }, () => {
  let env: ApiTestEnv;
  let browser: Browser;

  before(async () => {
    env = await startApiTestEnv();
    // Received 2025-03-10 from 10:00 UTC, a minute apart: Note 59 the newest.
    for (let n = 0; n < MESSAGES; n++) {
      await env.deliver(
        [ALICE],
        note(`Note ${n}`, 'Mon, 10 Mar 2025 10:00:00 +0000'),
        new Date(Date.UTC(2025, 2, 10, 10, n)),
      );
    }
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await env?.close();
  });

  it('shows dates in the viewer’s zone, and old mail stored while the list is open where it belongs', async () => {
    // UTC+14: 10:59 UTC on 10 March is 00:59 on 11 March there.
    const context = await browser.newContext({ timezoneId: 'Pacific/Kiritimati', locale: 'en-US' });
    try {
      const page = await context.newPage();
      await page.goto(`${env.url}/inbox/#token=${await env.token(ALICE)}`);
      await page.waitForSelector('li.message');
      const subjects = () => page.$$eval('li.message .subject', (els) => els.map((e) => e.textContent));
      assert.equal((await subjects()).length, 50);
      assert.equal(await page.textContent('li.message:has-text("Note 59") time'), 'Mar 11, 2025');
      assert.equal(
        await page.getAttribute('li.message:has-text("Note 59") time', 'title'),
        '3/11/2025, 12:59:00 AM',
      );
      await page.click('li.message:has-text("Note 59") a');
      await page.waitForSelector('.reader h2.subject');
      // The Date header (10:00 UTC) in the reader, in the viewer's zone.
      assert.match((await page.textContent('.reader')) ?? '', /3\/11\/2025, 12:00:00 AM/);

      // Stored now, received in January (before every entry shown, and before the 10 not loaded yet).
      await env.deliver(
        [ALICE],
        note('Old import', 'Wed, 1 Jan 2025 08:00:00 +0000'),
        new Date(Date.UTC(2025, 0, 1, 8)),
      );
      await env.deliver([ALICE], note('Brand new', 'Sat, 28 Nov 2026 10:00:00 +0000'));
      await until('the new mail on top', async () =>
        (await subjects())[0] === 'Brand new' ? true : undefined,
      );
      assert.equal((await subjects()).includes('Old import'), false, 'not put above entries not loaded yet');
      await page.click('button.more');
      await until('the next page', async () =>
        (await subjects()).length === MESSAGES + 2 ? true : undefined,
      );
      const expected = [
        'Brand new',
        ...Array.from({ length: MESSAGES }, (_, i) => `Note ${MESSAGES - 1 - i}`),
        'Old import',
      ];
      assert.deepEqual(await subjects(), expected);
      assert.equal(await page.evaluate(() => document.querySelectorAll('li.message').length), MESSAGES + 2);
    } finally {
      await context.close();
    }
  });
});
