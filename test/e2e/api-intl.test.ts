/**
 * International mail through the API, over real HTTP: mailbox addresses with an internationalized
 * domain (written in Unicode, in either case, in NFC or NFD, or as xn--) and quoted local parts name
 * the same mailbox in the API, in `token create` and in `route` as over SMTP; `POST …/send` takes
 * such recipients as they are written.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountSendRoute } from '../../functions/api/send.ts';
import type { RawConfig } from '../../functions/core/config.ts';
import { fieldValue, splitMessage } from '../../functions/core/mime-header.ts';
import { type ApiTestEnv, errorOf, runMailRelayCli, startApiTestEnv } from '../helpers/api.ts';
import { corpusDir, requireOrAnnounce } from '../helpers/env.ts';
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

  const cli = (args: string[]) => runMailRelayCli(env.dataDir, CONFIG, args);

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

const FIXTURES = new URL('../fixtures/', import.meta.url);

describe('text bodies in the wrong or no charset, through the router and the API (docs/adr/0019-body-charsets.md)', () => {
  let env: ApiTestEnv;
  let token: string;
  const ids = new Map<string, string>();
  const NAMES = [
    'body-utf8-no-charset.eml',
    'body-cp1252-us-ascii.eml',
    'body-unknown-8bit.eml',
    'body-utf8-mislabelled.eml',
  ] as const;
  const fixture = (name: string) => readFileSync(new URL(name, FIXTURES));
  before(async () => {
    env = await startApiTestEnv({ config: CONFIG });
    token = await env.token('alice@example.test');
    for (const name of NAMES) ids.set(name, (await env.deliver(['alice@example.test'], fixture(name))).id);
  });
  after(async () => env.close());

  const get = async (name: string, suffix = '') => {
    const res = await env.request(`/v1/mailboxes/alice@example.test/messages/${ids.get(name)}${suffix}`, {
      token,
    });
    assert.equal(res.status, 200, `${name}${suffix}`);
    return res;
  };

  it('GET …/messages/{id}: the text and html read as mail readers read them, no U+FFFD', async () => {
    const expected: Record<(typeof NAMES)[number], [string, string | null]> = {
      'body-utf8-no-charset.eml': [
        'Grüße aus Köln: die Straßenbahnhaltestelle „Domplatz“ ist gesperrt.\n',
        null,
      ],
      'body-cp1252-us-ascii.eml': [
        'Dessert du jour: crème brûlée “maison” – 4,50 €, the chef’s favourite.',
        '<p>Dessert du jour: crème brûlée “maison” – 4,50 €, the chef’s favourite.</p>',
      ],
      'body-unknown-8bit.eml': ['Smörgåsbord på fredag, hälsningar från Jörg.\n', null],
      'body-utf8-mislabelled.eml': [
        'Estimado Señor Muñoz, la reunión es mañana – a las 10.\n> Zitat: Grüße aus München\n',
        null,
      ],
    };
    for (const name of NAMES) {
      const message = (await (await get(name)).json()) as { text: string | null; html: string | null };
      assert.deepEqual([message.text, message.html], expected[name], name);
    }
  });

  it('LIST: the snippet (what the list and the web inbox show) has the words', async () => {
    const res = await env.request('/v1/mailboxes/alice@example.test/messages', { token });
    const { items } = (await res.json()) as { items: { id: string; snippet: string }[] };
    const snippet = (name: string) => items.find((i) => i.id === ids.get(name))?.snippet ?? '';
    assert.match(snippet('body-cp1252-us-ascii.eml'), /crème brûlée “maison” – 4,50 €/);
    assert.match(snippet('body-unknown-8bit.eml'), /^Smörgåsbord på fredag/);
    assert.match(snippet('body-utf8-mislabelled.eml'), /^Estimado Señor Muñoz, la reunión es mañana/);
    for (const item of items) assert.doesNotMatch(item.snippet, /\ufffd/);
  });

  it('the stored message and the attached text file keep their bytes as they arrived', async () => {
    for (const name of NAMES) {
      const raw = Buffer.from(await (await get(name, '/raw')).arrayBuffer());
      const sent = fixture(name);
      // The stored message is the fixture behind the relay's trace headers.
      assert.ok(raw.subarray(raw.length - sent.length).equals(sent), name);
    }
    const part = await get('body-cp1252-us-ascii.eml', '/parts/1');
    assert.equal(part.headers.get('content-type'), 'text/plain; charset=us-ascii');
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(Buffer.from('cr\xe8me br\xfbl\xe9e', 'latin1')));
  });
});

const corpus = corpusDir();

describe('corpus mail with header bytes in a legacy charset, through the API', {
  skip: !requireOrAnnounce(
    corpus !== null,
    'corpus legacy-charset API tests',
    'needs ../shared/corpus next to the clone, or MAIL_RELAY_CORPUS=/path',
  ),
}, () => {
  let env: ApiTestEnv;
  let token: string;
  before(async () => {
    env = await startApiTestEnv({ config: CONFIG });
    token = await env.token('alice@example.test');
  });
  after(async () => env.close());

  interface Item {
    id: string;
    from: string;
    subject: string;
  }
  const list = async (q?: string) => {
    const query = q === undefined ? '' : `?q=${encodeURIComponent(q)}`;
    const res = await env.request(`/v1/mailboxes/alice@example.test/messages${query}`, { token });
    assert.equal(res.status, 200);
    return ((await res.json()) as { items: Item[] }).items;
  };

  it('raw GB2312, Big5 and Latin-1 Subject and From read in the charset the message declares (they were U+FFFDs), and found by q', async () => {
    assert.ok(corpus);
    const cases: [string, string, string][] = [
      [
        'spamassassin/nice/cjk/gb2312.1',
        '台湾鑫龙商贸集团公司 <1234@e34.com>',
        '全新原装进口，送货上门，货到付款－台湾鑫龙商贸集团公司向您拜年!',
      ],
      [
        'spamassassin/nice/cjk/big5-base64.1',
        'y971880896@pchome.com.tw',
        '[SLAT-talk] 鉅靡6月17日新片又到.如有重複寄發.敬請原諒!',
      ],
      [
        'flanker/from-encoding.eml',
        'Ingo Lütkebohle <ingo@blank.pages.de>',
        'Re: running server as root (Was: Re: PUT method)',
      ],
      [
        'ruby-mail/error_emails/invalid_subject_characters.eml',
        'Formação Frenetikpolis <info@formacaofrenetik.info>',
        'Formação FrenetikPolis: Mega Campanha Final Verão | Cursos de Setembro',
      ],
    ];
    for (const [file] of cases) await env.deliver(['alice@example.test'], readFileSync(join(corpus, file)));
    const items = await list();
    for (const [file, from, subject] of cases) {
      const item = items.find((i) => i.subject.startsWith(subject));
      assert.ok(item, `${file}: ${JSON.stringify(items.map((i) => i.subject))}`);
      assert.equal(item.from, from, file);
      const res = await env.request(`/v1/mailboxes/alice@example.test/messages/${item.id}`, { token });
      const message = (await res.json()) as { subject: string; headers: { name: string; value: string }[] };
      assert.ok(message.subject.startsWith(subject), file);
      assert.ok(message.headers.find((h) => h.name === 'Subject')?.value.startsWith(subject), file);
    }
    assert.deepEqual(
      (await list('鑫龙商贸')).map((i) => i.subject),
      ['全新原装进口，送货上门，货到付款－台湾鑫龙商贸集团公司向您拜年!'],
    );
    assert.equal((await list('lütkebohle')).length, 1);
  });

  it('a raw UTF-8 file name cut off mid-character (Yahoo) is the UTF-8 it is, in the JSON and in the download', async () => {
    assert.ok(corpus);
    const r = await env.deliver(
      ['alice@example.test'],
      readFileSync(join(corpus, 'flanker/russian-attachment-yahoo.eml')),
    );
    const res = await env.request(`/v1/mailboxes/alice@example.test/messages/${r.id}`, { token });
    const { attachments } = (await res.json()) as { attachments: { partId: string; filename: string }[] };
    const name = 'Картинка с очень, очень длинным предлинным именем преименем таким чт';
    // Before: `ÐÐ°ÑÑÐ¸Ð½ÐºÐ° …` (the UTF-8 read as Latin-1).
    assert.deepEqual(
      attachments.map((a) => a.filename),
      [name],
    );
    const part = await env.request(`/v1/mailboxes/alice@example.test/messages/${r.id}/parts/1`, { token });
    assert.equal(part.status, 200);
    const disposition = part.headers.get('content-disposition') ?? '';
    assert.match(disposition, /^attachment; filename="[^"]*"; filename\*=UTF-8''(\S+)$/);
    assert.equal(decodeURIComponent(/filename\*=UTF-8''(\S+)$/.exec(disposition)?.[1] ?? ''), name);
  });
});
