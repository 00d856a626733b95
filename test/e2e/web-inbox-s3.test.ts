/**
 * The web inbox where the API's redirects lead to another origin, as they do in AWS: the API app
 * over S3 (a private moto_server, with the bucket's CORS rule as the stack sets it), served on
 * loopback, read in headless Chromium. A part over the redirect threshold is a 307 to a presigned
 * S3 URL on the bucket's origin; the page downloads through `fetch`, which the page's
 * Content-Security-Policy checks again at each redirect (docs/adr/0017-web-inbox.md).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PutBucketCorsCommand } from '@aws-sdk/client-s3';
import { getRequestListener } from '@hono/node-server';
import type { Browser, Page } from 'playwright-core';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { createToken } from '../../functions/api/auth.ts';
import { INBOX_CSP } from '../../functions/api/inbox.ts';
import { createMailboxApp } from '../../functions/api/mailbox-app.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { ingest } from '../../functions/local/ingest.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { buildMessageWithAttachment } from '../fixtures/build.ts';
import { chromiumAvailable, launchChromium } from '../helpers/browser.ts';
import { type Moto, motoAvailable, startMotoStorage } from '../helpers/moto.ts';

const ALICE = 'alice@example.test';
const BUCKET = 'mail-relay-inbox-bucket';
const REDIRECT_BYTES = 100_000;
/** Bytes of every value, three times over: above the redirect threshold. */
const LARGE_PART = Buffer.from(Array.from({ length: 3 * 256 * 400 }, (_, i) => i % 256));

describe('web inbox over S3: downloads that redirect to the bucket', {
  skip: !motoAvailable() || !chromiumAvailable('web inbox over S3 in a browser'),
}, () => {
  let moto: Moto;
  let runtime: LocalRuntime;
  let dataDir: string;
  let server: Server;
  let url: string;
  let browser: Browser;
  let page: Page;

  before(async () => {
    const storage = await startMotoStorage({ bucket: BUCKET, table: 'unused-table' });
    moto = storage.moto;
    // As lib/storage.ts sets it: any origin may read what it holds a presigned URL for.
    await storage.s3.send(
      new PutBucketCorsCommand({
        Bucket: BUCKET,
        CORSConfiguration: {
          CORSRules: [{ AllowedMethods: ['GET', 'HEAD'], AllowedOrigins: ['*'], MaxAgeSeconds: 3600 }],
        },
      }),
    );
    const blobs = new S3BlobStore({ client: storage.s3, bucket: BUCKET });
    dataDir = mkdtempSync(join(tmpdir(), 'mr-inbox-s3-'));
    runtime = createLocalRuntime({
      config: parseConfig({ domains: ['example.test'], mailboxes: [ALICE] }),
      dataDir,
      durability: 'sync',
    });
    // The message's bytes go to S3, its index entry to the local index: the API reads both.
    const message = await buildMessageWithAttachment({
      from: 'Data <data@remote.test>',
      to: ALICE,
      subject: 'Big data',
      text: 'The data is attached.',
      attachmentBytes: LARGE_PART,
      filename: 'data.bin',
      contentType: 'application/octet-stream',
    });
    await ingest(
      { ...runtime, blobs, journal: undefined },
      {
        body: message,
        mailFrom: 'data@remote.test',
        recipients: [ALICE],
        via: { protocol: 'LOCAL', helo: 'test' },
      },
    );
    const app = createMailboxApp({ index: runtime.index, blobs, rawRedirectBytes: REDIRECT_BYTES });
    server = createServer(getRequestListener((request) => app.fetch(request)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await launchChromium();
    page = await (await browser.newContext({ acceptDownloads: true })).newPage();
    const { token } = await createToken(runtime.index, { mailbox: ALICE });
    await page.goto(`${url}/inbox/#token=${token}`);
    await page.waitForSelector('li.message');
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => server?.close(resolve));
    await runtime?.close();
    await moto?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("the page's policy lets it fetch from the bucket's origin, and only from there besides its own", async () => {
    const res = await fetch(`${url}/inbox/`);
    await res.arrayBuffer();
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.equal(csp, INBOX_CSP.replace("connect-src 'self'", `connect-src 'self' ${moto.endpoint}`));
  });

  it('a part over the redirect threshold downloads byte for byte from the bucket', async () => {
    await page.click('li.message:has-text("Big data") a');
    await page.waitForSelector('button.attachment:has-text("data.bin")');
    const redirected = page.waitForResponse((r) => r.status() === 307);
    redirected.catch(() => undefined);
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 10_000 }),
      page.click('button.attachment:has-text("data.bin")'),
    ]).catch(async (err: Error) => {
      throw new Error(`${err.message}; toast: ${await page.locator('.toast').allTextContents()}`);
    });
    assert.ok((await redirected).headers().location?.startsWith(`${moto.endpoint}/`), 'not redirected to S3');
    assert.equal(download.suggestedFilename(), 'data.bin');
    assert.deepEqual(readFileSync(await download.path()), LARGE_PART);
  });
});
