/**
 * The web inbox (`/inbox/`, docs/adr/0017-web-inbox.md) for everyone: an automated audit (axe-core
 * injected into the page, the WCAG 2.1 A and AA rules and axe's best practices) of each state in
 * light and dark mode; the whole round by keyboard alone, with the focus where a user expects it
 * after each step; what a screen reader is told (names, unread, the tab shown, new mail); and a
 * phone-sized screen and 200% zoom. Headless Chromium against a real local relay, as in
 * web-inbox.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium, until } from '../helpers/browser.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';

// The page's globals, for the functions run in it by `page.evaluate` (the project compiles without the DOM lib).
// biome-ignore lint/suspicious/noExplicitAny: the page's DOM, untyped here.
declare const document: any;
// biome-ignore lint/suspicious/noExplicitAny: as above.
declare const window: any;
// biome-ignore lint/suspicious/noExplicitAny: as above.
declare function getComputedStyle(el: unknown): any;
declare const innerWidth: number;

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const fixture = (name: string) => readFileSync(join(PROJECT_ROOT, 'test/fixtures', name));
const AXE_SOURCE = readFileSync(join(PROJECT_ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8');

function note(n: number, to = ALICE): Buffer {
  return Buffer.from(
    [
      `From: Friend ${n} <friend${n}@remote.test>`,
      `To: ${to}`,
      `Subject: Note ${n} with a subject long enough to be wider than a phone`,
      `Date: Mon, 10 Mar 2025 10:0${n}:00 +0000`,
      '',
      `Note ${n}, the body.`,
      '',
    ].join('\r\n'),
  );
}

const LINKED = Buffer.from(
  [
    'From: Links <links@remote.test>',
    `To: ${ALICE}`,
    'Subject: Linked page',
    'Date: Mon, 10 Mar 2025 11:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/html; charset=utf-8',
    '',
    '<p>Read <a href="https://remote.test/one">one</a> or <a href="https://remote.test/two">two</a>.</p>',
    '',
  ].join('\r\n'),
);

/** Names an image elsewhere (nothing listens there): the reader shows "Remote images are hidden — Show". */
const REMOTE_IMAGES = Buffer.from(
  [
    'From: Pictures <pictures@remote.test>',
    `To: ${ALICE}`,
    'Subject: Pictures from afar',
    'Date: Fri, 07 Mar 2025 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/html; charset=utf-8',
    '',
    '<p>A picture: <img src="http://127.0.0.1:9/picture.png" alt="a picture"></p>',
    '',
  ].join('\r\n'),
);

interface Violation {
  id: string;
  nodes: string[];
}

/** axe-core's violations of the page as it is (the message frame, the message's own HTML, left out). */
async function audit(page: Page): Promise<Violation[]> {
  // Evaluated through the DevTools protocol, which the page's CSP (script-src 'self') does not cover.
  if (!(await page.evaluate('typeof window.axe === "object"'))) await page.evaluate(AXE_SOURCE);
  return page.evaluate(async () => {
    const axe = window.axe;
    const result = await axe.run(document, {
      iframes: false,
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return result.violations.map(
      (v: { id: string; nodes: { target: string[]; failureSummary: string }[] }) => ({
        id: v.id,
        nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`),
      }),
    );
  });
}

/** What has the keyboard focus: a short description (tag, class, text or label). */
function focused(page: Page): Promise<string> {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (el === null || el === document.body) return 'body';
    const text = (el.getAttribute('aria-label') ?? el.textContent ?? '')
      .replace(/\s+/g, ' ')
      .trim()
      .slice(0, 200);
    return `${el.tagName.toLowerCase()}${el.className ? `.${String(el.className).split(' ').join('.')}` : ''} ${text}`;
  });
}

/** Presses Tab (Shift+Tab with `back`) until `matches` says the focused element is the one; fails after `max`. */
async function tabTo(page: Page, matches: (desc: string) => boolean, { back = false, max = 40 } = {}) {
  const seen: string[] = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
    const desc = await focused(page);
    if (matches(desc)) return;
    seen.push(desc);
  }
  throw new Error(`not reached by ${back ? 'Shift+Tab' : 'Tab'}; went through: ${seen.join(' | ')}`);
}

describe('web inbox for everyone: keyboard, screen reader, small screens, dark mode', {
  skip: !chromiumAvailable('web inbox in a browser'),
}, () => {
  let env: ApiTestEnv;
  let browser: Browser;
  let aliceToken: string;
  let adminToken: string;
  const contexts: BrowserContext[] = [];
  const pageErrors: string[] = [];

  const newPage = async (options: Parameters<Browser['newContext']>[0] = {}) => {
    const context = await browser.newContext({ viewport: { width: 1300, height: 850 }, ...options });
    contexts.push(context);
    const page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('dialog', (d) => void d.accept());
    return page;
  };
  const signedIn = async (options: Parameters<typeof newPage>[0] = {}, token = aliceToken) => {
    const page = await newPage(options);
    await page.goto(`${env.url}/inbox/#token=${token}`);
    await page.waitForSelector('li.message');
    return page;
  };

  before(async () => {
    env = await startApiTestEnv();
    await env.deliver([ALICE], fixture('mixed-attachment.eml'), new Date('2025-03-07T09:00:00Z'));
    await env.deliver([ALICE], fixture('alternative.eml'), new Date('2025-03-08T09:00:00Z'));
    for (let n = 0; n < 6; n++) await env.deliver([ALICE], note(n), new Date(`2025-03-09T0${n}:00:00Z`));
    await env.deliver([ALICE], LINKED, new Date('2025-03-10T11:00:00Z'));
    await env.deliver([ALICE], REMOTE_IMAGES, new Date('2025-03-07T10:00:00Z'));
    await env.deliver([BOB], note(9, BOB));
    aliceToken = await env.token(ALICE);
    adminToken = await env.token(null, { admin: true });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await env?.close();
  });

  for (const colorScheme of ['light', 'dark'] as const) {
    it(`axe finds no WCAG 2.1 A/AA violation in any state (${colorScheme} mode)`, async () => {
      const page = await newPage({ colorScheme });
      const found: string[] = [];
      const check = async (state: string) => {
        for (const v of await audit(page)) found.push(`${state}: ${v.id}: ${v.nodes.join('; ')}`);
      };
      await page.goto(`${env.url}/inbox/`);
      await page.waitForSelector('#token');
      await check('sign-in');
      await page.fill('#token', `mr_${'A'.repeat(43)}`);
      await page.press('#token', 'Enter');
      await page.waitForSelector('form.signin .error:has-text("not valid")');
      await check('sign-in refused');
      await page.fill('#token', aliceToken);
      await page.press('#token', 'Enter');
      await page.waitForSelector('li.message');
      await check('list');
      await page.click('li.message:has-text("Text and HTML") a');
      await page.waitForSelector('iframe.html');
      await check('message (HTML)');
      await page.click('button.tab:has-text("Text")');
      await check('message (text)');
      await page.click('button.tab:has-text("Source")');
      await page.waitForSelector('pre.source');
      await check('message (source)');
      await page.click('li.message:has-text("Pictures from afar") a');
      await page.waitForSelector('.remote-images button');
      await check('message with remote images hidden');
      await page.click('.remote-images button');
      await page.waitForSelector('.remote-images:has-text("shown")');
      await check('message with remote images shown');
      await page.click('li.message:has-text("Report attached") a');
      await page.waitForSelector('ul.attachments');
      await check('message with attachments');
      await page.click('button.seen-toggle');
      await page.waitForSelector('.toast:has-text("Marked unread")');
      await check('toast');
      await page.route('**/v1/mailboxes/*/messages/*', (route) =>
        route.request().method() === 'PATCH'
          ? route.fulfill({ status: 500, json: { error: { code: 'internal', message: 'It broke' } } })
          : route.fallback(),
      );
      await page.click('button.seen-toggle');
      await page.waitForSelector('.toast.error:has-text("It broke")');
      await check('error toast');
      await page.unrouteAll();
      await page.click('li.message input.pick >> nth=0');
      await page.waitForSelector('button.delete-checked:visible');
      await check('ticked');
      await page.click('header button:has-text("Compose")');
      await page.waitForSelector('dialog.compose');
      await check('compose');
      await page.fill('#compose-to', 'not an address');
      await page.click('dialog.compose button[type=submit]');
      await page.waitForSelector('dialog.compose .error:not(:empty)');
      await check('compose refused');
      await page.keyboard.press('Escape');
      await page.waitForSelector('dialog.compose', { state: 'detached' });
      await page.goto(`${env.url}/inbox/#token=${adminToken}`);
      await page.waitForSelector('nav.mailboxes .mailbox');
      await page.click('a.view[href="#/carol%40example.test/inbox"]');
      await page.waitForSelector('li.empty:has-text("No messages.")');
      await check('admin, empty mailbox');
      assert.deepEqual(found, []);
    });
  }

  it('by keyboard alone: sign in, open a message (the focus goes to it), switch tabs, mark unread, download, delete (the focus goes to the next one)', async () => {
    const page = await newPage();
    await page.goto(`${env.url}/inbox/`);
    await page.waitForSelector('#token');
    assert.match(await focused(page), /^input/, 'the token field has the focus');
    await page.keyboard.type(aliceToken);
    await page.keyboard.press('Enter');
    await page.waitForSelector('li.message');
    // Not lost on the page's body when the form went: at the list's heading.
    assert.match(await focused(page), /^h2\.list-title alice@example\.test/);

    // Every control reached on the way shows where the focus is. The list is one tab stop (its first
    // message), arrow keys and Home/End move in it: Report attached is the oldest, the last.
    await tabTo(page, (d) => d.startsWith('a '));
    assert.match(await focused(page), /^a .*Linked page/);
    await page.keyboard.press('End');
    assert.match(await focused(page), /^a .*Report attached/);
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, 'none');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.reader h2.subject:has-text("Report attached")');
    await until('the focus on the message', async () =>
      (await focused(page)).startsWith('h2.subject Report attached') ? true : undefined,
    );

    // The attachments, then the tabs, are next.
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button.attachment report.pdf');
    await tabTo(page, (d) => d === 'button.tab Source');
    await page.keyboard.press('Enter');
    await page.waitForSelector('pre.source');
    assert.equal(await page.getAttribute('button.tab:has-text("Source")', 'aria-pressed'), 'true');
    assert.equal(await page.getAttribute('button.tab:has-text("Text")', 'aria-pressed'), 'false');

    await tabTo(page, (d) => d.includes('Mark unread'), { back: true });
    await page.keyboard.press('Enter');
    await page.waitForSelector('button.seen-toggle:has-text("Mark read")');
    assert.equal(await focused(page), 'button.secondary.seen-toggle Mark read');
    await page.waitForSelector('.toast:has-text("Marked unread")');

    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button.secondary Download .eml');
    const download = page.waitForEvent('download');
    await page.keyboard.press('Enter');
    assert.match((await download).suggestedFilename(), /\.eml$/);

    // Delete (confirmed): the focus goes to the message that took its place in the list.
    const order = await page.locator('li.message .subject').allTextContents();
    // The next one down; Report attached is the oldest, so the one above it.
    const at = order.indexOf('Report attached');
    const next = order[at + 1] ?? order[at - 1] ?? '';
    assert.notEqual(next, '');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button.danger Delete');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.toast:has-text("Deleted")');
    await until('the focus on the next message', async () =>
      (await focused(page)).startsWith('a ') && (await focused(page)).includes(next) ? true : undefined,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; focused: ${await focused(page)}`);
    });
    await env.deliver([ALICE], fixture('mixed-attachment.eml'), new Date('2025-03-07T09:00:00Z'));
  });

  it('new mail or fresh counters leave the focus where it was, and new mail is announced', async () => {
    const page = await signedIn();
    const announcer = page.locator('[role=status].sr-only');
    const before = await announcer.allTextContents();
    await page.focus('li.message:has-text("Note 2") a');
    const id = await page.getAttribute('li.message:has-text("Note 2")', 'data-id');
    await env.deliver([ALICE], note(7));
    await page.waitForSelector('li.message:has-text("Note 7")');
    assert.equal(await page.evaluate(() => document.activeElement?.closest('li')?.dataset.id), id);
    assert.deepEqual(before, [''], 'the live region is in the page before it speaks');
    await until('the announcement', async () =>
      (await announcer.textContent()) === '1 new message' ? true : undefined,
    );
    // The sidebar is drawn again with new counts: its link keeps the focus.
    await page.focus('nav.mailboxes a.view.current');
    const count = await page.textContent('nav.mailboxes a.view.current .count');
    await env.deliver([ALICE], note(8));
    await until('the new count', async () =>
      (await page.textContent('nav.mailboxes a.view.current .count')) !== count ? true : undefined,
    );
    assert.equal(
      await page.evaluate(() => document.activeElement?.getAttribute('href')),
      '#/alice%40example.test/inbox',
    );
  });

  it('ticked with Space and deleted with "Delete n selected" by keyboard; the focus goes back to the list', async () => {
    await env.deliver([ALICE], note(9));
    await env.deliver([ALICE], note(6));
    const page = await signedIn();
    await page.focus('li.message:has-text("Note 6") input.pick');
    await page.keyboard.press('Space');
    await page.focus('li.message:has-text("Note 9") input.pick');
    await page.keyboard.press('Space');
    await tabTo(page, (d) => d.includes('Delete 2 selected'), { back: true });
    await page.keyboard.press('Enter');
    await page.waitForSelector('.toast:has-text("Deleted 2 messages")');
    await until('the focus in the list', async () =>
      (await page.evaluate(() => document.activeElement?.closest('ul.messages') !== null)) ? true : undefined,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; focused: ${await focused(page)}`);
    });
  });

  it('compose by keyboard: a named dialog, Escape closes it and the focus returns; a refused send keeps the focus in it', async () => {
    const page = await signedIn();
    await page.focus('header button:has-text("Compose")');
    await page.keyboard.press('Enter');
    await page.waitForSelector('dialog.compose');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'compose-to');
    await page.keyboard.type('not an address');
    await tabTo(page, (d) => d === 'button Send');
    await page.keyboard.press('Enter');
    await page.waitForSelector('dialog.compose .error:not(:empty)');
    assert.equal(await focused(page), 'button Send', 'the focus is not lost behind the dialog');
    // Escape asks about the draft (accepted here) and closes.
    await page.keyboard.press('Escape');
    await page.waitForSelector('dialog.compose', { state: 'detached' });
    assert.equal(await focused(page), 'button Compose');

    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'New message' }).waitFor({ timeout: 2000 });
    await page.keyboard.press('Escape');
    await page.waitForSelector('dialog.compose', { state: 'detached' });
    assert.equal(await focused(page), 'button Compose');
  });

  it('with the Unread filter on, "n new — show" by keyboard reloads the list and leaves the focus on it; Sign out goes back to the token', async () => {
    const page = await signedIn();
    await page.focus('label.check:has-text("Unread") input');
    await page.keyboard.press('Space');
    await page.waitForSelector('li.message:has-text("Friend 3")');
    await env.deliver([ALICE], note(4));
    const notice = page.locator('button.notice:visible');
    await notice.waitFor();
    await notice.focus();
    await page.keyboard.press('Enter');
    await page.waitForSelector('button.notice', { state: 'hidden' });
    await page.waitForSelector('li.message');
    assert.match(await focused(page), /^h2\.list-title /);
    await page.focus('button:has-text("Sign out")');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#token');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'token');
  });

  it('"Delete all" by keyboard: its button has the focus again when it is done', async () => {
    await env.deliver(['carol@example.test'], note(1, 'carol@example.test'));
    await env.deliver(['carol@example.test'], note(2, 'carol@example.test'));
    const page = await newPage();
    await page.goto(`${env.url}/inbox/#token=${adminToken}`);
    await page.waitForSelector('nav.mailboxes .mailbox');
    await page.click('a.view[href="#/carol%40example.test/inbox"]');
    await page.waitForSelector('li.message:has-text("Note 2")');
    await page.focus('button:has-text("Delete all")');
    await page.keyboard.press('Enter');
    await page.waitForSelector('li.empty:has-text("No messages.")');
    assert.equal(await focused(page), 'button.danger Delete all');
  });

  it('"Show" remote images by keyboard: the next stop after the tabs; the focus then stays on the bar', async () => {
    const page = await signedIn();
    await page.click('li.message:has-text("Pictures from afar") a');
    await page.waitForSelector('.remote-images button');
    await page.focus('button.tab:has-text("Source")');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'button.secondary Show remote images');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, 'none');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.remote-images:has-text("shown")');
    assert.equal(await focused(page), 'p.note.remote-images Remote images are shown.');
    assert.match((await page.getAttribute('iframe.html', 'srcdoc')) ?? '', /img-src data: http: https:/);
    // Where the button was in the order of the page: Shift+Tab goes back to the tabs.
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), 'button.tab Source');
  });

  it('the message frame is no keyboard trap', async () => {
    const page = await signedIn();
    await page.click('li.message:has-text("Linked page") a');
    // Loaded, not only in the page: a frame still loading is passed over by Tab (a slow machine).
    const frame = await (await page.waitForSelector('iframe.html')).contentFrame();
    await frame?.waitForLoadState('load');
    await frame?.waitForSelector('a');
    await page.focus('button.tab:has-text("HTML")');
    const inFrame = () => page.evaluate(() => document.activeElement?.tagName === 'IFRAME');
    await tabTo(page, (d) => d.startsWith('iframe'), { max: 5 });
    // Shift+Tab from the frame's first link leaves it the way it came. The focus crosses the frame's
    // edge a moment after the key (the frame has its own renderer): waited for, not read at once.
    await page.keyboard.press('Shift+Tab');
    await until('the focus to leave the frame', async () => ((await inFrame()) ? undefined : true));
    assert.equal(await focused(page), 'button.tab Source');
    await page.keyboard.press('Tab');
    await until('the focus to enter the frame again', async () => ((await inFrame()) ? true : undefined));
    let out = false;
    for (let i = 0; i < 8 && !out; i++) {
      await page.keyboard.press('Tab');
      out = !(await inFrame());
    }
    assert.ok(out, 'Tab leaves the frame');
  });

  it('a screen reader hears which messages are unread or have attachments, and whose Inbox a link is', async () => {
    const page = await signedIn({}, adminToken);
    await page.click('a.view[href="#/alice%40example.test/inbox"]');
    await page.waitForSelector('li.message:has-text("Linked page")');
    // Note 3 was never opened; "Linked page" was (the test before).
    assert.equal(
      await page.getByRole('link', { name: /^Unread, Friend 3 <friend3@remote\.test>/ }).count(),
      1,
    );
    assert.equal(await page.getByRole('link', { name: /^Links <links@remote\.test>/ }).count(), 1);
    await page.getByRole('link', { name: /Report attached ?, has attachments/ }).waitFor();
    await page.getByRole('link', { name: /^Inbox\s+of carol@example\.test\s*0\s+messages$/ }).waitFor();
    await page.getByRole('link', { name: /^Sent\s+of bob@example\.test\b/ }).waitFor();
    await page.getByRole('banner').getByRole('heading', { level: 1, name: 'mail-relay' }).waitFor();
    await page.getByRole('main').getByRole('grid', { name: 'Messages' }).waitFor();
    await page.click('li.message:has-text("Linked page") a');
    await page
      .getByRole('link', { name: /Links <links@remote\.test>/ })
      .and(page.locator('[aria-current=true]'))
      .waitFor();
    await page
      .getByRole('group', { name: 'Show the message as' })
      .getByRole('button', { name: 'HTML', pressed: true })
      .waitFor();
  });

  for (const [what, viewport] of [
    ['a phone (375×667)', { width: 375, height: 667 }],
    ['200% zoom (a 1280×850 window)', { width: 640, height: 425 }],
  ] as const) {
    it(`on ${what} the page does not scroll sideways, and a message takes the list's place until "Back to list"`, async () => {
      const page = await signedIn({ viewport });
      const overflow = () =>
        page.evaluate(() =>
          [...document.querySelectorAll('body, body *')]
            .filter((el) => {
              const box = el.getBoundingClientRect();
              const style = getComputedStyle(el);
              const inClipped = el.closest('.sr-only, .from, .subject, .snippet') !== null;
              return !inClipped && style.display !== 'none' && box.width > 0 && box.right > innerWidth + 1;
            })
            .map((el) => `${el.tagName.toLowerCase()}.${el.className}`)
            .concat(document.documentElement.scrollWidth > innerWidth ? ['the page'] : [])
            .concat(
              [...document.querySelectorAll('main.layout')]
                .filter((el) => el.scrollWidth > el.clientWidth)
                .map(() => 'the layout'),
            ),
        );
      assert.deepEqual(await overflow(), []);
      await page.focus('li.message:has-text("Report attached") a');
      await page.keyboard.press('Enter');
      await page.waitForSelector('.reader h2.subject:has-text("Report attached")');
      assert.equal(await page.isVisible('section.list'), false, 'the list makes way');
      const top = await page.evaluate(
        () => document.querySelector('.reader h2.subject')?.getBoundingClientRect().top,
      );
      assert.ok(top !== undefined && top >= 0 && top < viewport.height / 2, `the subject at ${top}`);
      assert.deepEqual(await overflow(), []);
      await page.getByRole('button', { name: 'Back to list' }).focus();
      await page.keyboard.press('Enter');
      await page.waitForSelector('section.list:visible');
      assert.equal(await page.isVisible('section.reader'), false);
      assert.match(await focused(page), /^a .*Report attached/);
      assert.equal(new URL(page.url()).hash, '#/alice%40example.test/inbox');
    });
  }

  it('on a wide screen list and message are side by side, with no "Back to list"', async () => {
    const page = await signedIn();
    await page.click('li.message:has-text("Report attached") a');
    await page.waitForSelector('.reader h2.subject');
    assert.equal(await page.isVisible('section.list'), true);
    assert.equal(await page.isVisible('button.back'), false);
  });

  it('the pages threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
