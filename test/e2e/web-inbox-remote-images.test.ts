/**
 * The web inbox's "Remote images are hidden — Show" (docs/adr/0017-web-inbox.md): a message whose
 * HTML names images elsewhere is shown without them and says so; "Show" shows that message again
 * with its images, and nothing else from elsewhere. A loopback "tracker" stands for the rest of the
 * Internet and counts what it is asked for: nothing before the click, the images after it, and never
 * a style sheet, font, frame, script, prefetch, form post, `ping`, refresh, `background` attribute
 * or SVG trick. Headless Chromium against a real local relay, as in web-inbox.test.ts.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, FrameLocator, Page } from 'playwright-core';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { chromiumAvailable, launchChromium, until } from '../helpers/browser.ts';

const ALICE = 'alice@example.test';

/** A 1×1 PNG, so that an image the tracker serves is an image the frame shows. */
const PIXEL = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=',
  'base64',
);

/** A server that stands for the rest of the Internet: it counts every request, by path. */
async function startTracker(): Promise<{
  url: string;
  hits: string[];
  connections: () => number;
  close(): Promise<void>;
}> {
  const hits: string[] = [];
  let connections = 0;
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '';
    hits.push(path);
    if (path.endsWith('.png')) res.writeHead(200, { 'Content-Type': 'image/png' }).end(PIXEL);
    else if (path.endsWith('.css')) res.writeHead(200, { 'Content-Type': 'text/css' }).end('p{color:red}');
    else if (path.endsWith('.svg')) {
      res
        .writeHead(200, { 'Content-Type': 'image/svg+xml' })
        .end('<svg xmlns="http://www.w3.org/2000/svg"><rect id="a" width="5" height="5"/></svg>');
    } else res.writeHead(200, { 'Content-Type': 'text/html' }).end('<p>the outside world</p>');
  });
  // A connection alone (Chromium opens one to an iframe's host before refusing it) tells the sender
  // as much as a request: that, when and from where the message was read.
  server.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function htmlMessage(subject: string, date: string, html: string): Buffer {
  return Buffer.from(
    [
      'From: Newsletter <news@remote.test>',
      `To: ${ALICE}`,
      `Subject: ${subject}`,
      `Date: ${date}`,
      'MIME-Version: 1.0',
      'Content-Type: text/html; charset=utf-8',
      '',
      html,
      '',
    ].join('\r\n'),
  );
}

/** The paths "Show" loads from the tracker: each way a message names an image. */
const IMAGES = {
  'an img src': '/pixel.png',
  'an img srcset': '/srcset.png',
  "a picture's source srcset": '/picture-source.png',
  'a CSS url() in a style element': '/style-element.png',
  'a CSS url() in a style attribute': '/style-attribute.png',
  'an SVG image': '/svg-image.png',
};

/** The paths that stay unasked for after "Show" too, by what asks for them. */
const BLOCKED = {
  'a remote style sheet (link)': '/link.css',
  'a remote style sheet (@import)': '/import.css',
  'a remote font (@font-face)': '/font.woff',
  'a preloaded font': '/preload-font.woff',
  'a prefetch': '/prefetch',
  'a prerender': '/prerender',
  'a link to the next page': '/next',
  'a script': '/script',
  'an event handler attribute (onerror)': '/onerror',
  'an iframe': '/iframe',
  'an object': '/object',
  'an embed': '/embed',
  'an audio element': '/audio.mp3',
  'a video': '/video.mp4',
  '<meta http-equiv=refresh>': '/refresh',
  'the background attribute of body': '/body-background.png',
  'the background attribute of table': '/table-background.png',
  'the background attribute of td': '/td-background.png',
  'an SVG script': '/svg-script',
  'an SVG use of a remote document': '/use.svg',
  "an SVG foreignObject's iframe": '/svg-frame',
  'an SVG animate that sets a link': '/svg-animate',
  'a form posted by its button': '/form',
  'a link’s ping': '/ping',
};

/** An HTML message with images, and with every other way a message loads something or runs code. */
function newsletter(t: string): Buffer {
  return htmlMessage(
    'Pictures and tricks',
    'Mon, 10 Mar 2025 10:00:00 +0000',
    [
      '<html><head>',
      `<meta http-equiv="refresh" content="0; url=${t}/refresh">`,
      `<link rel="stylesheet" href="${t}/link.css">`,
      `<link rel="prefetch" href="${t}/prefetch">`,
      `<link rel="preconnect" href="${t}">`,
      `<link rel="dns-prefetch" href="${t}">`,
      `<link rel="prerender" href="${t}/prerender">`,
      `<link rel="next" href="${t}/next">`,
      `<link rel="preload" as="image" href="${t}/preload-image.png">`,
      `<link rel="preload" as="font" type="font/woff" href="${t}/preload-font.woff" crossorigin>`,
      `<style>@import url(${t}/import.css); @font-face { font-family: Tracked; src: url(${t}/font.woff) }`,
      `p { font-family: Tracked } .hero { background: url("${t}/style-element.png") }</style>`,
      `</head><body background="${t}/body-background.png">`,
      '<p id="greeting">Hello from the newsletter</p>',
      `<img id="pixel" src="${t}/pixel.png" alt="" width="1" height="1">`,
      `<img id="srcset" srcset="${t}/srcset.png 1x" alt="srcset">`,
      `<picture><source srcset="${t}/picture-source.png"><img id="picture" alt="picture"></picture>`,
      '<div class="hero">hero</div>',
      `<div style="background-image: url('${t}/style-attribute.png')">styled</div>`,
      `<table background="${t}/table-background.png"><tr><td background="${t}/td-background.png">cell</td></tr></table>`,
      '<svg width="20" height="20">',
      `<image href="${t}/svg-image.png" width="10" height="10"/>`,
      `<use href="${t}/use.svg#a"/>`,
      `<script>new Image().src = '${t}/svg-script'</script>`,
      `<foreignObject width="10" height="10"><iframe src="${t}/svg-frame"></iframe></foreignObject>`,
      `<a id="svg-link"><animate attributeName="href" to="${t}/svg-animate" dur="1s" fill="freeze"/><text y="10">svg</text></a>`,
      '</svg>',
      `<script>new Image().src = '${t}/script'</script>`,
      `<img src="cid:nothing" onerror="new Image().src='${t}/onerror'" alt="">`,
      `<iframe src="${t}/iframe"></iframe>`,
      `<object data="${t}/object"></object>`,
      `<embed src="${t}/embed">`,
      `<audio src="${t}/audio.mp3" autoplay></audio>`,
      `<video src="${t}/video.mp4" autoplay muted></video>`,
      `<form action="${t}/form" method="post"><input name="q" value="1"><button id="post">Post</button></form>`,
      `<a id="pinged" href="${t}/article" ping="${t}/ping">Read online</a>`,
      '</body></html>',
    ].join('\r\n'),
  );
}

describe('web inbox: remote images on request', {
  skip: !chromiumAvailable('web inbox in a browser'),
}, () => {
  let env: ApiTestEnv;
  let tracker: Awaited<ReturnType<typeof startTracker>>;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];
  const frame = (): FrameLocator => page.frameLocator('iframe.html');
  const bar = () => page.locator('.html-wrap .remote-images');
  const open = async (subject: string) => {
    await page.click(`li.message:has-text("${subject}") a`);
    await page.waitForSelector(`.reader h2.subject:has-text("${subject}")`);
  };
  /** Gives the frame the moment a request it (wrongly) makes needs to reach the tracker. */
  const settle = () => new Promise((r) => setTimeout(r, 1500));

  before(async () => {
    env = await startApiTestEnv();
    tracker = await startTracker();
    const t = tracker.url;
    await env.deliver([ALICE], newsletter(t), new Date('2025-03-10T10:00:00Z'));
    await env.deliver(
      [ALICE],
      htmlMessage(
        'Second issue',
        'Tue, 11 Mar 2025 10:00:00 +0000',
        `<p id="second">Second</p><img src="${t}/second.png" alt="">`,
      ),
      new Date('2025-03-11T10:00:00Z'),
    );
    const only = (subject: string, html: string, day: number) =>
      env.deliver(
        [ALICE],
        htmlMessage(subject, `Wed, ${day} Mar 2025 10:00:00 +0000`, html),
        new Date(`2025-03-0${day}T10:00:00Z`),
      );
    await only(
      'Only a srcset',
      `<img srcset="${t}/only-srcset.png 2x, ${t}/only-srcset-3.png 3x" alt="">`,
      1,
    );
    await only('Only a CSS background', `<div style="background:url(//127.0.0.1:1/only-css.png)">x</div>`, 2);
    await only(
      'Only styles and fonts',
      `<link rel="stylesheet" href="${t}/only.css"><style>@import url(${t}/only-import.css);` +
        `@font-face{font-family:x;src:url(${t}/only-font.woff)}</style><p>text</p>`,
      3,
    );
    await only('Only an SVG image', `<svg><image href="${t}/only-svg.png" width="9" height="9"/></svg>`, 6);
    await only('Only a background attribute', `<body background="${t}/only-background.png">text</body>`, 4);
    await only('Only links', `<p><a href="${t}/page">a page</a> and <img src="/relative.png" alt=""></p>`, 5);
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1300, height: 850 } });
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${env.url}/inbox/#token=${await env.token(ALICE)}`);
    await page.waitForSelector('li.message');
  });
  after(async () => {
    await browser?.close();
    await tracker?.close();
    await env?.close();
  });

  it('a message with remote images is shown without them, with a bar that says so; no request is made', async () => {
    await open('Pictures and tricks');
    await frame().locator('#greeting').waitFor();
    assert.equal(await bar().textContent(), 'Remote images are hidden — Show remote images');
    assert.equal(await page.getByRole('button', { name: 'Show remote images' }).count(), 1);
    await settle();
    assert.deepEqual(tracker.hits, [], 'reading the message made requests elsewhere');
    assert.equal(tracker.connections(), 0, 'reading the message connected elsewhere');
    assert.equal(
      await frame()
        .locator('#pixel')
        .evaluate((img) => (img as { naturalWidth: number }).naturalWidth),
      0,
    );
  });

  it('"Show" shows the message again with its remote images, each way it names them', async () => {
    await page.getByRole('button', { name: 'Show remote images' }).click();
    await until('the images', async () =>
      Object.values(IMAGES).every((p) => tracker.hits.includes(p)) ? true : undefined,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; the tracker had: ${tracker.hits.join(' ')}`);
    });
    await frame().locator('#greeting').waitFor();
    const width = (id: string) =>
      frame()
        .locator(id)
        .evaluate((img) => (img as { naturalWidth: number }).naturalWidth);
    await until('the pixel shown', async () => ((await width('#pixel')) === 1 ? true : undefined));
    assert.equal(await width('#srcset'), 1);
    assert.equal(await width('#picture'), 1);
    assert.equal(await bar().textContent(), 'Remote images are shown.');
    // The button is gone: the focus is on the bar, not lost on the page's body.
    assert.equal(await page.evaluate('document.activeElement.className'), 'note remote-images');
  });

  it('after "Show", a link opens in a new tab; the form posts nothing', async () => {
    const [tab] = await Promise.all([context.waitForEvent('page'), frame().locator('#pinged').click()]);
    await tab.waitForLoadState();
    await tab.close();
    await frame().locator('#post').click();
    await settle();
    assert.ok(tracker.hits.includes('/article'), 'the link was followed');
  });

  for (const [what, path] of Object.entries(BLOCKED)) {
    it(`after "Show", still nothing from elsewhere for ${what}`, () => {
      assert.ok(tracker.hits.includes('/pixel.png'), 'the images were shown');
      assert.equal(tracker.hits.filter((p) => p === path).length, 0, `${path}: ${tracker.hits.join(' ')}`);
    });
  }

  it('after "Show", the tracker was asked for the images and the link, nothing else', () => {
    // The tab the link opened asked for its icon (a page of the tracker's own, not the message).
    assert.deepEqual(
      [...new Set(tracker.hits)].filter((p) => p !== '/favicon.ico').sort(),
      [...Object.values(IMAGES), '/article'].sort(),
    );
  });

  it('the images stay shown on the HTML tab of the same message, and hidden on the next one', async () => {
    await page.click('button.tab:has-text("Source")');
    await page.waitForSelector('pre.source');
    await page.click('button.tab:has-text("HTML")');
    await frame().locator('#greeting').waitFor();
    assert.equal(await bar().textContent(), 'Remote images are shown.');

    const before = tracker.hits.length;
    await open('Second issue');
    await frame().locator('#second').waitFor();
    assert.equal(await bar().textContent(), 'Remote images are hidden — Show remote images');
    // Opened again, the first one is back to hidden: "Show" was for that reading only.
    await open('Pictures and tricks');
    await frame().locator('#greeting').waitFor();
    assert.equal(await bar().textContent(), 'Remote images are hidden — Show remote images');
    await settle();
    assert.deepEqual(tracker.hits.slice(before), [], 'another message, or the same one again, loaded images');
  });

  it('the bar is there when a srcset, a CSS url() or an SVG image alone names a remote image', async () => {
    for (const subject of ['Only a srcset', 'Only a CSS background', 'Only an SVG image']) {
      await open(subject);
      await bar().waitFor();
      assert.equal(await bar().textContent(), 'Remote images are hidden — Show remote images', subject);
    }
  });

  it('no bar when "Show" would show nothing: styles and fonts, background attributes, links, relative images', async () => {
    for (const subject of ['Only styles and fonts', 'Only a background attribute', 'Only links']) {
      await open(subject);
      await page.waitForSelector('iframe.html');
      assert.equal(await bar().count(), 0, subject);
    }
  });

  it('the page threw no error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
