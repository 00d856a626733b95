/**
 * The API as a test suite's mail catcher uses it (README "Testing an application against it"):
 * mail sent over SMTP, one connection per message, read back over HTTP; plus-addressed workers
 * sharing a mailbox; the mailbox emptied between tests.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import {
  deleteAllResultSchema,
  messageListSchema,
  statSchema,
  waitResultSchema,
} from '../../functions/api/schemas.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { makeEntry } from '../contract/mailbox-index.contract.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const CAROL = 'carol@example.test';

describe('the API as a mail catcher for test suites', () => {
  let env: ApiTestEnv;
  let bob: string;
  let admin: string;

  /** Sends as an application's mailer does: a new connection for each message. */
  const send = async (to: string, subject: string): Promise<void> => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: env.smtp.port,
      secure: false,
      ignoreTLS: true,
    });
    try {
      await transport.sendMail({ from: 'app@remote.test', to, subject, text: `${subject}\n` });
    } finally {
      transport.close();
    }
  };
  const stat = async (mailbox: string, token: string) =>
    statSchema.parse(await (await env.request(`/v1/mailboxes/${mailbox}`, { token })).json());
  const deleteAll = (mailbox: string, token: string, query = '') =>
    env.request(`/v1/mailboxes/${mailbox}/messages${query}`, { token, method: 'DELETE' });

  before(async () => {
    env = await startApiTestEnv();
    bob = await env.token(BOB);
    admin = await env.token(null, { admin: true });
  });
  after(async () => env?.close());

  it('DELETE …/messages empties the mailbox, blobs and counters included, and no other mailbox', async () => {
    for (const subject of ['one', 'two', 'three']) await send(BOB, subject);
    await send(ALICE, 'for alice');
    const ids = messageListSchema
      .parse(await (await env.request(`/v1/mailboxes/${BOB}/messages`, { token: bob })).json())
      .items.map((i) => i.id);
    assert.equal(ids.length, 3);

    const res = await deleteAll(BOB, bob);
    assert.equal(res.status, 200);
    assert.deepEqual(deleteAllResultSchema.parse(await res.json()), { deleted: 3, more: false });
    assert.deepEqual(await stat(BOB, bob), { address: BOB, messages: 0, bytes: 0 });
    for (const id of ids) {
      assert.equal(existsSync(join(env.runtime.blobRoot, mailboxKeys.raw(BOB, id))), false);
      assert.equal(existsSync(join(env.runtime.blobRoot, mailboxKeys.dir(BOB, id))), false);
      const gone = await env.request(`/v1/mailboxes/${BOB}/messages/${id}`, { token: bob });
      assert.equal(gone.status, 404);
    }
    assert.equal((await stat(ALICE, admin)).messages, 1, "alice's mail stays");

    const again = await deleteAll(BOB, bob);
    assert.deepEqual(await again.json(), { deleted: 0, more: false });
  });

  it('DELETE …/messages takes the token of that mailbox (or an admin one), and `view`', async () => {
    const forbidden = await deleteAll(ALICE, bob);
    assert.equal(forbidden.status, 403);
    assert.equal((await errorOf(forbidden)).code, 'forbidden');
    assert.equal((await stat(ALICE, admin)).messages, 1);
    const noToken = await env.request(`/v1/mailboxes/${ALICE}/messages`, { method: 'DELETE' });
    assert.equal(noToken.status, 401);
    const badView = await deleteAll(ALICE, admin, '?view=trash');
    assert.equal(badView.status, 400);
    assert.equal((await errorOf(badView)).code, 'invalid_request');
    // The sent view is emptied on its own: the inbox keeps its mail.
    const sent = await deleteAll(ALICE, admin, '?view=sent');
    assert.deepEqual(await sent.json(), { deleted: 0, more: false });
    assert.equal((await stat(ALICE, admin)).messages, 1);
    const put = await env.request(`/v1/mailboxes/${ALICE}/messages`, { token: admin, method: 'PUT' });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get('allow'), 'DELETE, GET, HEAD');
    assert.deepEqual(await (await deleteAll(ALICE, admin)).json(), { deleted: 1, more: false });
  });

  it('DELETE …/messages deletes at most 1,000 a request, newest first, and says `more`', async () => {
    const base = Date.UTC(2030, 0, 1);
    for (let i = 0; i < 1001; i++) await env.runtime.index.deliver(makeEntry(CAROL, base + i, `bulk-${i}`));
    const oldest = makeEntry(CAROL, base, 'bulk-0').id;
    const first = await deleteAll(CAROL, admin);
    assert.deepEqual(await first.json(), { deleted: 1000, more: true });
    const left = messageListSchema.parse(
      await (await env.request(`/v1/mailboxes/${CAROL}/messages`, { token: admin })).json(),
    );
    assert.deepEqual(
      left.items.map((i) => i.id),
      [oldest],
    );
    assert.deepEqual(await (await deleteAll(CAROL, admin)).json(), { deleted: 1, more: false });
    assert.equal((await stat(CAROL, admin)).messages, 0);
  });

  it('LIST and wait items name the envelope recipient and its +tag: workers sharing a mailbox find their own mail', async () => {
    const start = await env.request(`/v1/mailboxes/${BOB}/wait?timeout=0`, { token: bob });
    const cursor = start.headers.get('mail-relay-cursor');
    // Sent to one worker's address, with another in To (a Bcc, a list): the header does not tell them apart.
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: env.smtp.port, ignoreTLS: true });
    await transport.sendMail({
      envelope: { from: 'app@remote.test', to: ['bob+w2@example.test'] },
      from: 'app@remote.test',
      to: 'bob+w1@example.test',
      subject: 'for w2',
      text: 'hi',
    });
    transport.close();
    await send(BOB, 'untagged');
    const list = messageListSchema.parse(
      await (await env.request(`/v1/mailboxes/${BOB}/messages`, { token: bob })).json(),
    );
    assert.deepEqual(
      list.items.map((i) => [i.subject, i.recipient, i.plusTag]),
      [
        ['untagged', BOB, null],
        ['for w2', 'bob+w2@example.test', 'w2'],
      ],
    );
    const waited = await env.request(`/v1/mailboxes/${BOB}/wait?cursor=${cursor}&timeout=0`, { token: bob });
    const body = waitResultSchema.parse(await waited.json());
    assert.deepEqual(
      body.items.map((i) => i.plusTag),
      [null, 'w2'],
    );
    await deleteAll(BOB, bob);
  });

  it('wait?cursor=0 after emptying the mailbox finds mail sent before the wait began', async () => {
    await send(BOB, 'old');
    await deleteAll(BOB, bob);
    // The test sends first, then asks: a wait from "now" would miss it; from 0 it does not.
    await send(BOB, 'sign-up');
    const fromNow = await env.request(`/v1/mailboxes/${BOB}/wait?timeout=0`, { token: bob });
    assert.equal(fromNow.status, 204);
    const res = await env.request(`/v1/mailboxes/${BOB}/wait?cursor=0&timeout=5`, { token: bob });
    assert.equal(res.status, 200);
    const body = waitResultSchema.parse(await res.json());
    assert.deepEqual(
      body.items.map((i) => i.subject),
      ['sign-up'],
    );
  });
});
