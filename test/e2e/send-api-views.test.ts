/**
 * The `sent` view over real HTTP: mail sent with `POST /v1/mailboxes/{address}/send` is read back
 * with `?view=sent` on every message endpoint (LIST, STAT, message, raw, top, parts, PATCH, DELETE,
 * wait), behind the mailbox's own authorization; the inbox never shows it. Without `relay.smtp`
 * the mail leaves into the local outbox.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import { mailboxKeys } from '../../functions/pipeline/router.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const BASE = `/v1/mailboxes/${ALICE}`;
const ATTACHMENT = Buffer.from([0, 1, 2, 250, 251, 255]);

interface ListBody {
  items: { id: string; subject: string; seen: boolean; hasAttachments: boolean }[];
  nextCursor: string | null;
}

describe('the sent view through the API (?view=sent)', () => {
  let env: ApiTestEnv;
  let alice: string;
  let bob: string;
  let admin: string;
  let sentId: string;
  let inboxId: string;

  const get = (path: string, token: string | undefined = alice) => env.request(path, { token });

  before(async () => {
    env = await startApiTestEnv({ config: { domains: ['example.test'], mailboxes: [ALICE, BOB] } });
    alice = await env.token(ALICE);
    bob = await env.token(BOB);
    admin = await env.token(null, { admin: true });
    // Something in the inbox too, so a view that leaked into the other would show.
    inboxId = (await env.deliver([ALICE], Buffer.from('Subject: to alice\r\n\r\nin the inbox\r\n'))).id;
    const res = await env.request(`${BASE}/send`, {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        to: 'carol@remote.test',
        bcc: 'dave@remote.test',
        subject: 'Quarterly numbers',
        text: 'line one\nline two\nline three\n',
        attachments: [
          {
            filename: 'numbers.bin',
            contentType: 'application/octet-stream',
            content: ATTACHMENT.toString('base64'),
          },
        ],
      }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    sentId = ((await res.json()) as { id: string }).id;
  });
  after(async () => env?.close());

  it('LIST and STAT: the sent view shows what was sent, the inbox what was received, and view=inbox is the default', async () => {
    const sent = (await (await get(`${BASE}/messages?view=sent`)).json()) as ListBody;
    assert.deepEqual(
      sent.items.map((i) => [i.id, i.subject, i.hasAttachments]),
      [[sentId, 'Quarterly numbers', true]],
    );
    assert.equal(sent.nextCursor, null);
    for (const path of [`${BASE}/messages`, `${BASE}/messages?view=inbox`]) {
      const inbox = (await (await get(path)).json()) as ListBody;
      assert.deepEqual(
        inbox.items.map((i) => i.id),
        [inboxId],
        path,
      );
    }

    const size = (await env.runtime.blobs.head(mailboxKeys.raw(sentMailboxKey(ALICE), sentId)))?.size;
    assert.ok(size !== undefined && size > 0);
    const stat = await get(`${BASE}?view=sent`);
    assert.equal(stat.status, 200);
    // The address is the mailbox's, never the internal key of its sent view.
    assert.deepEqual(await stat.json(), { address: ALICE, messages: 1, bytes: size });
    const inboxStat = (await (await get(BASE)).json()) as { messages: number };
    assert.equal(inboxStat.messages, 1);
  });

  it('message, raw, top and parts read the sent copy; without view=sent the same id is not found', async () => {
    const message = await get(`${BASE}/messages/${sentId}?view=sent`);
    assert.equal(message.status, 200);
    const detail = (await message.json()) as {
      subject: string;
      text: string;
      attachments: { partId: string; filename: string; size: number }[];
      addresses: { to: { address: string }[] };
    };
    assert.equal(detail.subject, 'Quarterly numbers');
    assert.match(detail.text, /line one/);
    assert.deepEqual(
      detail.addresses.to.map((a) => a.address),
      ['carol@remote.test'],
    );
    const [attachment] = detail.attachments;
    assert.ok(attachment);
    assert.equal(attachment.filename, 'numbers.bin');

    const raw = await get(`${BASE}/messages/${sentId}/raw?view=sent`);
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get('content-type'), 'message/rfc822');
    const bytes = Buffer.from(await raw.arrayBuffer());
    // Where ADR 0009 puts it (copies stored by earlier versions are read from there too).
    const stored = await env.runtime.blobs.get(`mailboxes/${ALICE}/sent/${sentId}.eml`);
    assert.ok(stored);
    assert.ok(bytes.equals(stored), 'RETR of the sent view is the stored copy, byte for byte');
    // The owner's copy keeps Bcc, as a Sent folder does.
    assert.match(bytes.toString('latin1'), /^Bcc: dave@remote\.test\r$/m);

    const top = await get(`${BASE}/messages/${sentId}/top?lines=0&view=sent`);
    assert.equal(top.status, 200);
    const head = Buffer.from(await top.arrayBuffer()).toString('latin1');
    assert.match(head, /^Subject: Quarterly numbers\r$/m);
    assert.ok(head.endsWith('\r\n\r\n'), 'headers and the blank line, no body');

    const part = await get(`${BASE}/messages/${sentId}/parts/${attachment.partId}?view=sent`);
    assert.equal(part.status, 200);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), ATTACHMENT);
    assert.match(part.headers.get('content-disposition') ?? '', /numbers\.bin/);

    for (const path of [
      `${BASE}/messages/${sentId}`,
      `${BASE}/messages/${sentId}/raw`,
      `${BASE}/messages/${sentId}/top?lines=0`,
      `${BASE}/messages/${sentId}/parts/${attachment.partId}`,
      `${BASE}/messages/${inboxId}?view=sent`,
    ]) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.equal((await errorOf(res)).code, 'message_not_found', path);
    }
  });

  it('wait: answers with newer sent mail at once, and 204 when there is none', async () => {
    // `after` just below the sent id: the copy is newer.
    const older = `${sentId.slice(0, 10)}${'0'.repeat(16)}`;
    const found = await get(`${BASE}/wait?view=sent&after=${older}&timeout=0`);
    assert.equal(found.status, 200);
    const body = (await found.json()) as { items: { id: string }[]; truncated: boolean };
    assert.deepEqual(
      body.items.map((i) => i.id),
      [sentId],
    );
    // Default `after`: the newest of the sent view now, so nothing is newer.
    const none = await get(`${BASE}/wait?view=sent&timeout=0`);
    assert.equal(none.status, 204);
    // The sent copy is newer than the inbox's message, yet the inbox view never sees it.
    const inbox = await get(`${BASE}/wait?after=${inboxId}&timeout=0`);
    assert.equal(inbox.status, 204);
  });

  it('a token of another mailbox gets 403 for the sent view too, on every endpoint; no token 401; an admin reads it', async () => {
    const sentPaths: [string, string][] = [
      ['GET', `${BASE}?view=sent`],
      ['GET', `${BASE}/messages?view=sent`],
      ['GET', `${BASE}/messages/${sentId}?view=sent`],
      ['GET', `${BASE}/messages/${sentId}/raw?view=sent`],
      ['GET', `${BASE}/messages/${sentId}/top?lines=1&view=sent`],
      ['GET', `${BASE}/messages/${sentId}/parts/1?view=sent`],
      ['GET', `${BASE}/wait?view=sent&timeout=0`],
      ['PATCH', `${BASE}/messages/${sentId}?view=sent`],
      ['DELETE', `${BASE}/messages/${sentId}?view=sent`],
    ];
    const call = (method: string, path: string, token: string | undefined) =>
      env.request(path, {
        method,
        token,
        ...(method === 'PATCH'
          ? { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ seen: true }) }
          : {}),
      });
    for (const [method, path] of sentPaths) {
      const forbidden = await call(method, path, bob);
      assert.equal(forbidden.status, 403, `${method} ${path}`);
      assert.equal((await errorOf(forbidden)).code, 'forbidden');
      const anonymous = await call(method, path, undefined);
      assert.equal(anonymous.status, 401, `${method} ${path}`);
    }
    // Nothing changed behind the refusals.
    const list = (await (await get(`${BASE}/messages?view=sent`)).json()) as ListBody;
    assert.deepEqual(
      list.items.map((i) => [i.id, i.seen]),
      [[sentId, false]],
    );
    const asAdmin = await get(`${BASE}/messages?view=sent`, admin);
    assert.equal(asAdmin.status, 200);
    assert.deepEqual(
      ((await asAdmin.json()) as ListBody).items.map((i) => i.id),
      [sentId],
    );
  });

  it('the admin list shows each mailbox once, by address, with its sent view counted beside its STAT', async () => {
    // Bob has sent mail and received none.
    const sent = await env.request(`/v1/mailboxes/${BOB}/send`, {
      method: 'POST',
      token: bob,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ to: 'erin@remote.test', subject: 'from bob', text: 'hi\n' }),
    });
    assert.equal(sent.status, 200);
    const list = (await (await get('/v1/mailboxes', admin)).json()) as {
      items: {
        address: string;
        messages: number;
        bytes: number;
        sent: { messages: number; bytes: number };
      }[];
    };
    assert.deepEqual(
      list.items.map((i) => i.address),
      [ALICE, BOB],
    );
    const stat = async (path: string, token: string) =>
      (await (await get(path, token)).json()) as { messages: number; bytes: number };
    for (const [address, token] of [
      [ALICE, alice],
      [BOB, bob],
    ] as const) {
      const item = list.items.find((i) => i.address === address);
      const inbox = await stat(`/v1/mailboxes/${address}`, token);
      const sentView = await stat(`/v1/mailboxes/${address}?view=sent`, token);
      assert.deepEqual(item, {
        address,
        messages: inbox.messages,
        bytes: inbox.bytes,
        sent: { messages: sentView.messages, bytes: sentView.bytes },
      });
    }
    assert.equal(list.items.find((i) => i.address === BOB)?.messages, 0);
    assert.equal(list.items.find((i) => i.address === BOB)?.sent.messages, 1);
  });

  it('an unknown view is a 400 invalid_request, after authorization (another mailbox still gets 403)', async () => {
    const bad = await get(`${BASE}/messages?view=drafts`);
    assert.equal(bad.status, 400);
    assert.equal((await errorOf(bad)).code, 'invalid_request');
    const badStat = await get(`${BASE}?view=SENT`);
    assert.equal(badStat.status, 400);
    const other = await get(`${BASE}/messages?view=drafts`, bob);
    assert.equal(other.status, 403);
  });

  it('PATCH and DELETE act on the sent copy: seen flag, then DELE with its counters and blobs', async () => {
    const patched = await env.request(`${BASE}/messages/${sentId}?view=sent`, {
      method: 'PATCH',
      token: alice,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ seen: true }),
    });
    assert.equal(patched.status, 200);
    assert.equal(((await patched.json()) as { seen: boolean }).seen, true);
    const unseen = (await (await get(`${BASE}/messages?view=sent&unseen=true`)).json()) as ListBody;
    assert.deepEqual(unseen.items, []);
    // The inbox message's flag is its own.
    assert.equal((await env.runtime.index.get(ALICE, inboxId))?.seen, false);

    const deleted = await env.request(`${BASE}/messages/${sentId}?view=sent`, {
      method: 'DELETE',
      token: alice,
    });
    assert.equal(deleted.status, 204);
    const again = await env.request(`${BASE}/messages/${sentId}?view=sent`, {
      method: 'DELETE',
      token: alice,
    });
    assert.equal(again.status, 404);
    assert.deepEqual(await (await get(`${BASE}?view=sent`)).json(), {
      address: ALICE,
      messages: 0,
      bytes: 0,
    });
    assert.equal(await env.runtime.blobs.head(mailboxKeys.raw(sentMailboxKey(ALICE), sentId)), null);
    const left: string[] = [];
    for await (const info of env.runtime.blobs.list(mailboxKeys.dir(sentMailboxKey(ALICE), sentId)))
      left.push(info.key);
    assert.deepEqual(left, []);
    // The inbox is untouched.
    assert.deepEqual(await (await get(BASE)).json(), {
      address: ALICE,
      messages: 1,
      bytes: (await env.runtime.index.get(ALICE, inboxId))?.size,
    });
  });

  it('the OpenAPI document describes `view` (inbox|sent, default inbox) on every endpoint that takes it', async () => {
    const doc = (await (await env.request('/v1/openapi.json')).json()) as {
      paths: Record<
        string,
        Record<
          string,
          {
            parameters?: { name: string; in: string; required?: boolean; schema?: Record<string, unknown> }[];
          }
        >
      >;
    };
    const operations: [string, string][] = [
      ['/v1/mailboxes/{address}', 'get'],
      ['/v1/mailboxes/{address}/messages', 'get'],
      ['/v1/mailboxes/{address}/messages/{id}', 'get'],
      ['/v1/mailboxes/{address}/messages/{id}', 'patch'],
      ['/v1/mailboxes/{address}/messages/{id}', 'delete'],
      ['/v1/mailboxes/{address}/messages/{id}/raw', 'get'],
      ['/v1/mailboxes/{address}/messages/{id}/top', 'get'],
      ['/v1/mailboxes/{address}/messages/{id}/parts/{partId}', 'get'],
      ['/v1/mailboxes/{address}/wait', 'get'],
    ];
    for (const [path, method] of operations) {
      const view = doc.paths[path]?.[method]?.parameters?.find((p) => p.name === 'view');
      assert.ok(view, `${method} ${path} documents view`);
      assert.equal(view.in, 'query');
      assert.notEqual(view.required, true);
      assert.deepEqual(view.schema?.enum, ['inbox', 'sent'], `${method} ${path}`);
      assert.equal(view.schema?.default, 'inbox', `${method} ${path}`);
    }
    // Not on the endpoints a view means nothing to.
    assert.equal(
      doc.paths['/v1/mailboxes/{address}/send']?.post?.parameters?.some((p) => p.name === 'view') ?? false,
      false,
    );
  });
});
