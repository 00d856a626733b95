/**
 * International mail through the API, over real HTTP: mailbox addresses with an internationalized
 * domain (written in Unicode, in either case, in NFC or NFD, or as xn--) and quoted local parts name
 * the same mailbox in the API, in `token create` and in `route` as over SMTP; `POST …/send` takes
 * such recipients as they are written.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { mountSendRoute } from '../../functions/api/send.ts';
import type { RawConfig } from '../../functions/core/config.ts';
import { fieldValue, splitMessage } from '../../functions/core/mime-header.ts';
import { main } from '../../functions/local/cli.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';
import { type RemoteMx, startRemoteMx } from '../helpers/remote-mx.ts';

const INFO = 'info@xn--mnchen-3ya.test';
const CONFIG: RawConfig = {
  domains: ['example.test', 'xn--mnchen-3ya.test'],
  mailboxes: ['alice@example.test', INFO],
};

describe('mailbox addresses written in any form name one mailbox', () => {
  let env: ApiTestEnv;
  let mx: RemoteMx;
  let admin: string;
  before(async () => {
    mx = await startRemoteMx();
    env = await startApiTestEnv({ config: { ...CONFIG, relay: { smtp: mx.url } } });
    mountSendRoute(env.api.app, { ...env.runtime });
    admin = await env.token(null, { admin: true });
  });
  after(async () => {
    await env.close();
    await mx.close();
  });

  const cli = async (args: string[]) => {
    const configPath = join(env.dataDir, 'mail-relay.config.json');
    writeFileSync(configPath, JSON.stringify(CONFIG));
    const out = new PassThrough();
    const err = new PassThrough();
    let stdout = '';
    let stderr = '';
    out.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    err.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const code = await main(args, {
      out,
      err,
      env: { ...process.env, MAIL_RELAY_DATA_DIR: env.dataDir, MAIL_RELAY_CONFIG: configPath },
    });
    return { code, stdout, stderr };
  };

  it('{address}: an internationalized domain in Unicode (any case, NFC or NFD) or xn--, a quoted local part that needs no quotes', async () => {
    await env.deliver([INFO], Buffer.from('Subject: idn\r\n\r\nx\r\n'));
    const forms: [string, string][] = [
      [INFO, INFO],
      ['INFO@XN--MNCHEN-3YA.TEST', INFO],
      [encodeURIComponent('info@münchen.test'), INFO],
      [encodeURIComponent('Info@MÜNCHEN.test'), INFO],
      [encodeURIComponent('info@mu\u0308nchen.test'), INFO],
      [encodeURIComponent('"info"@münchen.test'), INFO],
      [encodeURIComponent('"Alice"@example.test'), 'alice@example.test'],
    ];
    for (const [path, address] of forms) {
      const res = await env.request(`/v1/mailboxes/${path}`, { token: admin });
      assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
      const stat = (await res.json()) as { address: string; messages: number };
      assert.equal(stat.address, address, path);
      if (address === INFO) assert.equal(stat.messages, 1, path);
    }
    // Never a mailbox here: a local part that needs its quotes, or a non-ASCII one.
    for (const bad of ['"john doe"@example.test', 'jöhn@example.test']) {
      const res = await env.request(`/v1/mailboxes/${encodeURIComponent(bad)}`, { token: admin });
      assert.equal(res.status, 400, bad);
      assert.equal((await errorOf(res)).code, 'invalid_address');
    }
  });

  it('`token create` and `route` take the Unicode form as SMTP does; the token reads the mailbox by either form', async () => {
    const created = await cli(['token', 'create', 'info@münchen.test']);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    for (const path of [INFO, encodeURIComponent('info@münchen.test')]) {
      const res = await env.request(`/v1/mailboxes/${path}/messages`, { token });
      assert.equal(res.status, 200, path);
    }
    const routed = await cli([
      'route',
      'info@münchen.test',
      '"Alice"@example.test',
      '"john doe"@example.test',
    ]);
    assert.match(routed.stdout, /^info@münchen\.test: deliver to mailbox info@xn--mnchen-3ya\.test/m);
    assert.match(routed.stdout, /^"alice"@example\.test: deliver to mailbox alice@example\.test/m);
    assert.match(
      routed.stdout,
      /^"john doe"@example\.test: reject 553 5\.1\.3 Recipient address rejected: a quoted local part is not a mailbox here$/m,
    );
  });

  it('POST …/send: a recipient at an internationalized domain goes out in its ASCII form; a non-ASCII local part is refused by name', async () => {
    const alice = await env.token('alice@example.test');
    const send = (body: unknown) =>
      env.request('/v1/mailboxes/alice@example.test/send', {
        method: 'POST',
        token: alice,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    const res = await send({ to: ['Jörg Müller <bob@bücher.example>'], subject: 'Grüße', text: 'x' });
    assert.equal(res.status, 200, await res.clone().text());
    const { recipients } = (await res.json()) as { recipients: string[] };
    assert.deepEqual(recipients, ['bob@xn--bcher-kva.example']);
    const got = mx.received.at(-1);
    assert.ok(got);
    const to = splitMessage(got.raw)
      .fields.filter((f) => f.key === 'to')
      .map(fieldValue);
    assert.deepEqual(to, ['=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <bob@xn--bcher-kva.example>']);

    // Before: `to[0]: "jÃ¶hn@example.org" is not an e-mail address` (its UTF-8 read as Latin-1).
    const refused = await send({ to: ['Jöhn <jöhn@example.org>'], text: 'x' });
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.equal(error.code, 'invalid_recipient');
    assert.match(error.message, /"jöhn@example\.org"/);
  });
});
