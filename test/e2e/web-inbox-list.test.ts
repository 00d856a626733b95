/**
 * The web inbox's message list and toasts as a mail client's (docs/adr/0017-web-inbox.md): the list
 * is one tab stop driven by arrow keys (the WAI-ARIA grid pattern, with a roving tabindex), "Load
 * more" adds the next page below the entries shown without making them anew, and a toast stays
 * until dismissed (an error) or long enough to read (a notice, held while pointed at or focused).
 * Headless Chromium against a real local relay, as in web-inbox.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium, until } from '../helpers/browser.ts';

// The page's globals, for the functions run in it by `page.evaluate` (the project compiles without the DOM lib).
// biome-ignore lint/suspicious/noExplicitAny: the page's DOM, untyped here.
declare const document: any;
// biome-ignore lint/suspicious/noExplicitAny: as above.
declare const window: any;
// biome-ignore lint/suspicious/noExplicitAny: as above.
declare const MutationObserver: any;

const ALICE = 'alice@example.test';
/** A mailbox of 2,000 messages, paged in 50 at a time. */
const CAROL = 'carol@example.test';
const BIG = 2000;
const PAGE_SIZE = 50;

function note(n: number, to: string): Buffer {
  return Buffer.from(
    [
      `From: Friend ${n} <friend${n}@remote.test>`,
      `To: ${to}`,
      `Subject: Note ${n}`,
      'Date: Mon, 10 Mar 2025 10:00:00 +0000',
      '',
      `Note ${n}, the body.`,
      '',
    ].join('\r\n'),
  );
}

/** What has the keyboard focus: the subject of its list entry and which control (`open`, `pick`), or its tag. */
function focused(page: Page): Promise<string> {
  return page.evaluate(() => {
    const el = document.activeElement;
    const li = el?.closest('li.message');
    if (li === null || li === undefined) return el === null || el === document.body ? 'body' : el.tagName;
    return `${el.matches('input.pick') ? 'pick' : 'open'} ${li.querySelector('.subject').textContent}`;
  });
}

describe('web inbox: the list by keyboard, "Load more", toasts', {
  skip: !chromiumAvailable('web inbox in a browser'),
}, () => {
  let env: ApiTestEnv;
  let browser: Browser;
  let aliceToken: string;
  const contexts: BrowserContext[] = [];
  const pageErrors: string[] = [];
  const dialogs: string[] = [];

  const signedIn = async (token: string, { clock = false } = {}) => {
    const context = await browser.newContext({ viewport: { width: 1300, height: 850 } });
    contexts.push(context);
    const page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.accept();
    });
    if (clock) await page.clock.install();
    await page.goto(`${env.url}/inbox/#token=${token}`);
    await page.waitForSelector('li.message');
    return page;
  };

  before(async () => {
    env = await startApiTestEnv();
    // Note 11 is the newest, first in the list; Note 0 the last.
    for (let n = 0; n < 12; n++) {
      await env.deliver([ALICE], note(n, ALICE), new Date(Date.UTC(2025, 2, 10, 10, n)));
    }
    for (let n = 0; n < BIG; n++) {
      await env.deliver([CAROL], note(n, CAROL), new Date(Date.UTC(2025, 0, 1) + n * 60_000));
    }
    aliceToken = await env.token(ALICE);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await env?.close();
  });

  it('the list is one tab stop: Tab enters it, arrows, Page Up/Down and Home/End move, Tab leaves and comes back', async () => {
    const page = await signedIn(aliceToken);
    const tabStops = () =>
      page.evaluate(() =>
        [...document.querySelectorAll('.grid a, .grid input')]
          .filter((el) => el.tabIndex >= 0)
          .map((el) => `${el.tagName} ${el.closest('li').querySelector('.subject').textContent}`),
      );
    assert.deepEqual(await tabStops(), ['A Note 11'], 'one control of the list is in the tab order');
    // From the list's heading (where sign-in leaves the focus) through the toolbar into the list.
    let steps = 0;
    while (!(await focused(page)).startsWith('open ') && steps++ < 10) await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'open Note 11');
    for (const [key, expected] of [
      ['ArrowDown', 'open Note 10'],
      ['ArrowDown', 'open Note 9'],
      ['ArrowUp', 'open Note 10'],
      ['End', 'open Note 0'],
      ['ArrowDown', 'open Note 0'],
      ['Home', 'open Note 11'],
      ['ArrowUp', 'open Note 11'],
      ['PageDown', 'open Note 1'],
      ['PageUp', 'open Note 11'],
      ['Control+End', 'open Note 0'],
      ['Control+Home', 'open Note 11'],
      ['ArrowDown', 'open Note 10'],
    ] as const) {
      await page.keyboard.press(key);
      assert.equal(await focused(page), expected, key);
    }
    // Tab leaves the list (for the next control after it), Shift+Tab comes back where it left.
    await page.keyboard.press('Tab');
    assert.doesNotMatch(await focused(page), /^(open|pick) /);
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), 'open Note 10');
    assert.deepEqual(await tabStops(), ['A Note 10']);
    // Shift+Tab leaves it upwards, to the toolbar.
    await page.keyboard.press('Shift+Tab');
    assert.equal(await page.evaluate(() => document.activeElement.closest('.toolbar') !== null), true);
  });

  it('Left/Right reach the row’s box; Space ticks it (from the message too) for "Delete n selected"', async () => {
    const page = await signedIn(aliceToken);
    await page.focus('li.message:has-text("Note 11") a');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowLeft');
    assert.equal(await focused(page), 'pick Note 10');
    await page.keyboard.press('Space');
    assert.equal(await page.isChecked('li.message:has-text("Note 10") input.pick'), true);
    await page.waitForSelector('button.delete-checked:has-text("Delete 1 selected")');
    // Down keeps to the column; Right goes to the message, where Space ticks the box too (and does not scroll).
    await page.keyboard.press('ArrowDown');
    assert.equal(await focused(page), 'pick Note 9');
    await page.keyboard.press('ArrowRight');
    assert.equal(await focused(page), 'open Note 9');
    const scrolled = await page.evaluate(() => document.querySelector('.grid').scrollTop);
    await page.keyboard.press('Space');
    assert.equal(await page.isChecked('li.message:has-text("Note 9") input.pick'), true);
    await page.waitForSelector('button.delete-checked:has-text("Delete 2 selected")');
    assert.equal(await page.evaluate(() => document.querySelector('.grid').scrollTop), scrolled);
    await page.keyboard.press('Space');
    await page.waitForSelector('button.delete-checked:has-text("Delete 1 selected")');
    assert.equal(await focused(page), 'open Note 9');
    // The ticked box is reached from "Delete n selected" and back.
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('Space');
    assert.equal(await page.isChecked('li.message:has-text("Note 10") input.pick'), false);
    await page.waitForSelector('button.delete-checked', { state: 'hidden' });
  });

  it('Enter opens the message; Tab into the list comes to it; Delete asks, then deletes the focused message', async () => {
    const page = await signedIn(aliceToken);
    await page.focus('li.message:has-text("Note 11") a');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.reader h2.subject:has-text("Note 9")');
    // The focus went to the message; back into the list, it is on the entry on show.
    await until('the focus in the reader', async () =>
      (await page.evaluate(() => document.activeElement.matches('.reader h2.subject'))) ? true : undefined,
    );
    // Shift+Tab through the reader's buttons back into the list: on the entry on show.
    for (let i = 0; i < 10 && !/^(open|pick) /.test(await focused(page)); i++) {
      await page.keyboard.press('Shift+Tab');
    }
    assert.equal(await focused(page), 'open Note 9');
    assert.equal(await page.getAttribute('li.message:has-text("Note 9") a', 'aria-current'), 'true');
    // Enter on the box opens its message as well.
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.reader h2.subject:has-text("Note 10")');

    // Delete on an entry that is not on show: asked, deleted, the one on show stays, the focus on the next.
    await page.focus('li.message:has-text("Note 5") a');
    dialogs.length = 0;
    await page.keyboard.press('Delete');
    await page.waitForSelector('li.message:has-text("Note 5")', { state: 'detached' });
    assert.deepEqual(dialogs, ['Delete “Note 5”?']);
    const left = await (
      await env.request(`/v1/mailboxes/${ALICE}/messages?limit=100`, { token: aliceToken })
    ).json();
    assert.equal(
      (left as { items: { subject: string }[] }).items.some((i) => i.subject === 'Note 5'),
      false,
    );
    assert.equal(await page.textContent('.reader h2.subject'), 'Note 10');
    await until('the focus on the next entry', async () =>
      (await focused(page)) === 'open Note 4' ? true : undefined,
    );
    // Delete on the entry on show closes the reader too.
    await page.focus('li.message:has-text("Note 10") a');
    await page.keyboard.press('Delete');
    await page.waitForSelector('li.message:has-text("Note 10")', { state: 'detached' });
    await page.waitForSelector('.reader h2.subject', { state: 'detached' });
    await until('the focus on the next entry', async () =>
      (await focused(page)) === 'open Note 9' ? true : undefined,
    );
    // A screen reader hears what each row is: a grid of rows, each message a link named by its sender, date and subject.
    const grid = page.getByRole('grid', { name: 'Messages' });
    assert.equal(await grid.getByRole('row').count(), 10);
    await grid
      .getByRole('row')
      .getByRole('gridcell')
      .getByRole('link', { name: /^Friend 9 <friend9@remote\.test>.*Note 9/ })
      .waitFor();
    await grid.getByRole('checkbox', { name: 'Select “Note 9”' }).waitFor();
  });

  it(`"Load more" adds each page below the entries shown, which stay the same elements (${BIG} messages)`, async (t) => {
    const page = await signedIn(await env.token(CAROL));
    const rows = () => page.locator('li.message').count();
    assert.equal(await rows(), PAGE_SIZE);
    // A box ticked, a message open, the list scrolled, and every change to the list recorded.
    await page.check(`li.message:has-text("Note ${BIG - 3}") input.pick`);
    await page.click(`li.message:has-text("Note ${BIG - 2}") a`);
    await page.waitForSelector(`.reader h2.subject:has-text("Note ${BIG - 2}")`);
    // Marked read as it opened (its entry drawn again): done before the changes are counted.
    await page.waitForSelector(`li.message.seen:has-text("Note ${BIG - 2}")`);
    const first = await page.evaluateHandle(() => document.querySelector('li.message'));
    await page.evaluate(() => {
      document.querySelector('.grid').scrollTop = 400;
      window.listChanges = { added: 0, removed: 0 };
      new MutationObserver((records: { addedNodes: unknown[]; removedNodes: unknown[] }[]) => {
        for (const r of records) {
          window.listChanges.added += r.addedNodes.length;
          window.listChanges.removed += r.removedNodes.length;
        }
      }).observe(document.querySelector('ul.messages'), { childList: true, subtree: true });
    });
    const scrollTop = await page.evaluate(() => document.querySelector('.grid').scrollTop);
    assert.ok(scrollTop > 0);
    await page.focus('button.more');
    const times: number[] = [];
    for (let shown = PAGE_SIZE; shown < BIG; shown += PAGE_SIZE) {
      const started = Date.now();
      await page.keyboard.press('Enter');
      await until(`${shown + PAGE_SIZE} entries`, async () =>
        (await rows()) === shown + PAGE_SIZE ? true : undefined,
      );
      times.push(Date.now() - started);
      if (shown + PAGE_SIZE < BIG) {
        assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Load more');
        assert.equal(await page.evaluate(() => document.querySelector('.grid').scrollTop), scrollTop);
      }
    }
    t.diagnostic(
      `"Load more": ${times[0]} ms at ${PAGE_SIZE} entries, ${times[times.length - 1]} ms at ${BIG - PAGE_SIZE}`,
    );
    assert.deepEqual(await page.evaluate(() => window.listChanges), { added: BIG - PAGE_SIZE, removed: 0 });
    assert.equal(
      await page.evaluate((el) => el === document.querySelector('li.message') && el.isConnected, first),
      true,
      'the first entry is the element it was',
    );
    assert.equal(await page.isChecked(`li.message:has-text("Note ${BIG - 3}") input.pick`), true);
    assert.equal(await page.textContent('button.delete-checked'), 'Delete 1 selected');
    assert.equal(await page.getAttribute(`li.message:has-text("Note ${BIG - 2}") a`, 'aria-current'), 'true');
    assert.equal(await page.textContent('.reader h2.subject'), `Note ${BIG - 2}`);
    // The last page: the button has gone, and the focus went to the first entry it brought.
    assert.equal(await page.isVisible('button.more'), false);
    assert.equal(await focused(page), `open Note ${PAGE_SIZE - 1}`);
    assert.equal(
      await page.locator('[role=status].sr-only').textContent(),
      `${PAGE_SIZE} more messages, ${BIG} in all`,
    );
    // End reaches the oldest of all 2,000.
    await page.keyboard.press('End');
    assert.equal(await focused(page), 'open Note 0');
  });

  it('an error toast stays until dismissed (its button or Escape); the focus goes back where it was', async () => {
    const page = await signedIn(aliceToken, { clock: true });
    const alert = page.locator('.toast.error');
    // The live region is in the page before it speaks, and its close button is not in it.
    assert.equal(await page.locator('[role=alert]#alert').count(), 1);
    assert.equal(await page.locator('[role=alert]#alert').textContent(), '');
    await page.click('li.message:has-text("Note 3") a');
    // Marked read as it opens; then marking fails.
    await page.waitForSelector('button.seen-toggle:has-text("Mark unread")');
    await page.route('**/v1/mailboxes/*/messages/*', (route) =>
      route.request().method() === 'PATCH'
        ? route.fulfill({ status: 500, json: { error: { code: 'internal', message: 'It broke' } } })
        : route.fallback(),
    );
    const fail = async () => {
      await page.click('button.seen-toggle');
      await page.waitForSelector('.toast.error:has-text("It broke")');
    };
    await fail();
    assert.equal(await page.locator('[role=alert]#alert').textContent(), 'It broke (internal)');
    assert.equal(await page.locator('[role=alert]#alert button').count(), 0);
    await page.clock.runFor('05:00');
    assert.equal(await alert.isVisible(), true, 'still shown after five minutes');
    await page.focus('li.message:has-text("Note 3") a');
    await page.keyboard.press('Escape');
    await page.waitForSelector('.toast.error', { state: 'hidden' });
    assert.equal(await page.locator('[role=alert]#alert').textContent(), '');

    // Dismissed by its button, the focus goes back to where it was before.
    await fail();
    await page.focus('li.message:has-text("Note 3") a');
    await page.focus('.toast.error button.toast-close');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.toast.error', { state: 'hidden' });
    assert.equal(await focused(page), 'open Note 3');
    await page.unrouteAll();
  });

  it('a notice stays long enough to read, and stays while the pointer is on it or the focus in it', async () => {
    const page = await signedIn(aliceToken, { clock: true });
    const notice = page.locator('.toast.info');
    await page.click('li.message:has-text("Note 2") a');
    await page.waitForSelector('button.seen-toggle:has-text("Mark unread")');
    const mark = async () => {
      await page.click('button.seen-toggle');
      await notice.filter({ hasText: /^Marked (un)?read/ }).waitFor();
    };
    await mark();
    assert.equal(await page.locator('[role=status]#status').textContent(), 'Marked unread');
    await page.clock.runFor(5000);
    assert.equal(await notice.isVisible(), true, 'shown after 5 s');
    await page.clock.runFor(2000);
    await notice.waitFor({ state: 'hidden' });

    // Pointed at, it stays; when the pointer leaves, it goes after a moment.
    await mark();
    await page.clock.runFor(5000);
    await page.hover('.toast.info');
    await page.clock.runFor('01:00');
    assert.equal(await notice.isVisible(), true, 'held by the pointer');
    await page.mouse.move(5, 5);
    await page.clock.runFor(1000);
    assert.equal(await notice.isVisible(), true, 'a moment after the pointer left');
    await page.clock.runFor(1500);
    await notice.waitFor({ state: 'hidden' });

    // With the focus on its close button, it stays; when the focus leaves, it goes after a moment.
    await mark();
    await page.clock.runFor(5000);
    await page.focus('.toast.info button.toast-close');
    await page.clock.runFor('01:00');
    assert.equal(await notice.isVisible(), true, 'held by the focus');
    await page.focus('button.seen-toggle');
    await page.clock.runFor(1000);
    assert.equal(await notice.isVisible(), true, 'a moment after the focus left');
    await page.clock.runFor(1500);
    await notice.waitFor({ state: 'hidden' });
  });

  it('the pages threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
