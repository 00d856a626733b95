/**
 * `POST /v1/mailboxes/{address}/send` over real HTTP: the relay's API sends through `relay.smtp`
 * to a second in-process SMTP server (the remote MX), and keeps a copy in the sender's sent view.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import SwaggerParser from '@apidevtools/swagger-parser';
import { mountSendRoute } from '../../functions/api/send.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import { fieldValue, splitMessage } from '../../functions/core/mime-header.ts';
import { mailboxKeys } from '../../functions/pipeline/router.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';
import { freePort } from '../helpers/net.ts';
import { listAll } from '../helpers/relay.ts';
import { type RemoteMx, startRefusingSmarthost, startRemoteMx } from '../helpers/remote-mx.ts';

const ALICE = 'alice@example.test';

function header(raw: Buffer, name: string): string[] {
  return splitMessage(raw)
    .fields.filter((f) => f.key === name.toLowerCase())
    .map(fieldValue);
}

/** One JSON send from alice through `smtp`: the answer, and what the API logged with it (the operator's view). */
async function sendThrough(smtp: string): Promise<{ res: Response; logged: string }> {
  const logged: unknown[] = [];
  const env = await startApiTestEnv({
    config: { domains: ['example.test'], mailboxes: [ALICE], relay: { smtp } },
    app: { logError: (err) => logged.push(err) },
  });
  try {
    mountSendRoute(env.api.app, { ...env.runtime });
    const res = await env.request(`/v1/mailboxes/${ALICE}/send`, {
      method: 'POST',
      token: await env.token(ALICE),
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ to: 'bob@remote.test', text: 'x' }),
    });
    await res.clone().arrayBuffer();
    return { res, logged: logged.map((e) => inspect(e)).join('\n') };
  } finally {
    await env.close();
  }
}

describe('POST /v1/mailboxes/{address}/send', () => {
  let mx: RemoteMx;
  let env: ApiTestEnv;
  let alice: string;

  before(async () => {
    mx = await startRemoteMx();
    env = await startApiTestEnv({
      config: {
        domains: ['example.test'],
        mailboxes: [ALICE, 'bob@example.test'],
        relay: { smtp: mx.url, maxSendBytes: 64 * 1024 },
      },
    });
    // Mounted before the first request, as the lead's wiring does inside createApp's callers.
    mountSendRoute(env.api.app, { ...env.runtime });
    alice = await env.token(ALICE);
  });
  after(async () => {
    await env.close();
    await mx.close();
  });

  const send = (body: unknown, init: { token?: string; headers?: Record<string, string> } = {}) =>
    env.request(`/v1/mailboxes/${ALICE}/send`, {
      method: 'POST',
      token: init.token ?? alice,
      headers: { 'Content-Type': 'application/json', ...init.headers },
      body: JSON.stringify(body),
    });

  it('JSON: builds MIME, sends from the mailbox to to+cc+bcc, hides Bcc, keeps a copy in the sent view', async () => {
    const res = await send({
      to: ['Bob <bob@remote.test>'],
      cc: { name: 'Carol', address: 'carol@remote.test' },
      bcc: 'dave@remote.test',
      fromName: 'Alice Example',
      subject: 'Grüße',
      text: 'Hello from the API',
      html: '<p>Hello from the <b>API</b></p>',
      attachments: [
        {
          filename: 'data.bin',
          contentType: 'application/octet-stream',
          content: Buffer.from([0, 1, 2, 255]).toString('base64'),
        },
      ],
    });
    assert.equal(res.status, 200, await res.clone().text());
    const result = (await res.json()) as {
      id: string;
      messageId: string;
      recipients: string[];
      duplicate: boolean;
    };
    assert.deepEqual(result.recipients, ['bob@remote.test', 'carol@remote.test', 'dave@remote.test']);
    assert.equal(result.duplicate, false);
    const got = mx.received.at(-1);
    assert.ok(got);
    assert.equal(got.mailFrom, ALICE);
    assert.deepEqual(got.rcptTo, ['bob@remote.test', 'carol@remote.test', 'dave@remote.test']);
    assert.deepEqual(header(got.raw, 'Bcc'), [], 'recipients never see Bcc');
    assert.deepEqual(header(got.raw, 'From'), ['Alice Example <alice@example.test>']);
    assert.match(got.raw.toString('latin1'), /filename=data\.bin/);

    const sent = await listAll(env.runtime.index, sentMailboxKey(ALICE));
    assert.deepEqual(
      sent.map((e) => [e.id, e.subject]),
      [[result.id, 'Grüße']],
    );
    const copy = await env.runtime.blobs.get(mailboxKeys.raw(sentMailboxKey(ALICE), result.id));
    assert.ok(copy);
    assert.deepEqual(header(copy, 'Bcc'), ['dave@remote.test'], 'the sender sees whom they Bcc-ed');
    // Not in the inbox: the sent view is its own key.
    assert.deepEqual(await listAll(env.runtime.index, ALICE), []);
  });

  it('JSON: the message has CRLF line ends throughout, and the sent copy is the bytes the remote side got', async () => {
    const res = await send({
      to: 'bob@remote.test',
      subject: 'lines',
      text: 'one\ntwo\rthree\r\n.four\n',
      html: '<p>one</p>\n<p>two</p>\n',
    });
    assert.equal(res.status, 200, await res.clone().text());
    const { id } = (await res.json()) as { id: string };
    const copy = await env.runtime.blobs.get(mailboxKeys.raw(sentMailboxKey(ALICE), id));
    assert.ok(copy);
    const text = copy.toString('latin1');
    assert.doesNotMatch(text, /[^\r]\n|\r[^\n]/, 'no LF or CR alone');
    assert.deepEqual(mx.received.at(-1)?.raw, copy);
  });

  it('message/rfc822: sent as written (Bcc removed), Date and Message-ID added when missing', async () => {
    const raw = Buffer.from(
      'From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nBcc: eve@remote.test\r\nSubject: raw\r\n\r\nbody \xe9\r\n',
      'latin1',
    );
    const res = await env.request(`/v1/mailboxes/${ALICE}/send`, {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'message/rfc822' },
      body: raw,
    });
    assert.equal(res.status, 200, await res.clone().text());
    const got = mx.received.at(-1);
    assert.ok(got);
    assert.deepEqual(got.rcptTo, ['bob@remote.test', 'eve@remote.test']);
    assert.deepEqual(header(got.raw, 'Bcc'), []);
    assert.equal(header(got.raw, 'Date').length, 1);
    assert.match(header(got.raw, 'Message-ID')[0] ?? '', /^<[0-9a-z]{26}@example\.test>$/);
    assert.deepEqual(splitMessage(got.raw).body, Buffer.from('body \xe9\r\n', 'latin1'));
  });

  it('refuses another From, another mailbox, no recipients, and too large', async () => {
    const forged = await env.request(`/v1/mailboxes/${ALICE}/send`, {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'message/rfc822' },
      body: 'From: ceo@example.test\r\nTo: bob@remote.test\r\n\r\nx\r\n',
    });
    assert.equal(forged.status, 403);
    assert.equal((await errorOf(forged)).code, 'from_not_allowed');

    // No message at all is a bad request, not a From that is not the mailbox's.
    for (const body of ['', '\r\n']) {
      const empty = await env.request(`/v1/mailboxes/${ALICE}/send`, {
        method: 'POST',
        token: alice,
        headers: { 'Content-Type': 'message/rfc822' },
        body,
      });
      assert.equal(empty.status, 400, JSON.stringify(body));
      const error = await errorOf(empty);
      assert.equal(error.code, 'invalid_request');
      assert.match(error.message, /body is empty/);
    }

    const bob = await env.token('bob@example.test');
    const other = await send({ to: 'x@remote.test', text: 'x' }, { token: bob });
    assert.equal(other.status, 403);
    assert.equal((await errorOf(other)).code, 'forbidden');

    const none = await send({ subject: 'to nobody', text: 'x' });
    assert.equal(none.status, 400);
    assert.equal((await errorOf(none)).code, 'no_recipients');

    const bad = await send({ to: 'not an address', text: 'x' });
    assert.equal(bad.status, 400);
    assert.equal((await errorOf(bad)).code, 'invalid_recipient');

    // One address per entry: a list in one string, or a line break that would add a header (here a
    // group whose member is an outside address), is refused rather than sent to part of it.
    const sentBefore = mx.received.length;
    for (const to of [
      'hank@remote.test, bob@remote.test',
      ['hank@remote.test\r\nBcc: eve@elsewhere.test'],
      [{ name: 'Hank\r\nBcc: eve@elsewhere.test', address: 'hank@remote.test' }],
    ]) {
      const refused = await send({ to, text: 'x' });
      assert.equal(refused.status, 400, JSON.stringify(to));
      assert.equal((await errorOf(refused)).code, 'invalid_recipient');
    }
    // Nor is a line break in the other header values, nor what is not their kind: a sender's name, a
    // reply's message ids, an attachment's media type (it was cut into `text/plainX-Evil: 1`).
    for (const fields of [
      { fromName: 'Support\r\nTo: ceo@example.test' },
      { inReplyTo: '<a@example.test>\r\nBcc: eve@elsewhere.test' },
      { references: ['<a@example.test>', '<b@example.test>\r\nX-Evil: 1'] },
      { attachments: [{ filename: 'a.txt', contentType: 'text/plain\r\nX-Evil: 1', content: 'eA==' }] },
      { attachments: [{ filename: 'a.txt', contentType: 'not a type', content: 'eA==' }] },
    ]) {
      const refused = await send({ to: 'hank@remote.test', text: 'x', ...fields });
      assert.equal(refused.status, 400, JSON.stringify(fields));
      assert.equal((await errorOf(refused)).code, 'invalid_request', JSON.stringify(fields));
    }
    const many = await send({ to: Array.from({ length: 51 }, (_, i) => `r${i}@remote.test`), text: 'x' });
    assert.equal(many.status, 400);
    assert.equal((await errorOf(many)).code, 'too_many_recipients');
    assert.equal(mx.received.length, sentBefore, 'nothing was sent');

    const big = await send({ to: 'bob@remote.test', text: 'x'.repeat(100 * 1024) });
    assert.equal(big.status, 413);
    assert.equal((await errorOf(big)).code, 'message_too_large');
  });

  it('message/rfc822: a From that a reader could take for another address is refused, and nothing is sent', async () => {
    const post = (head: string) =>
      env.request(`/v1/mailboxes/${ALICE}/send`, {
        method: 'POST',
        token: alice,
        headers: { 'Content-Type': 'message/rfc822' },
        body: Buffer.from(`${head}\r\nTo: bob@remote.test\r\nSubject: who?\r\n\r\nx\r\n`, 'latin1'),
      });
    const sentBefore = mx.received.length;
    for (const [head, status] of [
      // A CR alone: one field to a CRLF splitter, two From fields on the wire (ceo's first).
      ['From: ceo@example.test\rFrom: alice@example.test', 400],
      // A group (not allowed in From): its name is ceo's address to some readers.
      ['From: ceo@example.test:alice@example.test;', 403],
      ['Sender: ceo@example.test:alice@example.test;\r\nFrom: alice@example.test', 403],
      // An entry that is not a mailbox beside ours: a second author to readers.
      ['From: ceo, alice@example.test', 403],
    ] as const) {
      const res = await post(head);
      assert.equal(res.status, status, `${JSON.stringify(head)}: ${await res.clone().text()}`);
    }
    assert.equal(mx.received.length, sentBefore, 'nothing was sent');
    // Names with commas, comments and an empty entry are still one mailbox: ours.
    for (const head of ['From: "Doe, Alice" <alice@example.test>', 'From: alice@example.test (Alice), ']) {
      const res = await post(head);
      assert.equal(res.status, 200, `${JSON.stringify(head)}: ${await res.clone().text()}`);
    }
  });

  it('the same Idempotency-Key sends once', async () => {
    const before = mx.received.length;
    const first = await send(
      { to: 'bob@remote.test', text: 'once' },
      { headers: { 'Idempotency-Key': 'k-123' } },
    );
    const second = await send(
      { to: 'bob@remote.test', text: 'once' },
      { headers: { 'Idempotency-Key': 'k-123' } },
    );
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    const a = (await first.json()) as { id: string; messageId: string; duplicate: boolean };
    const b = (await second.json()) as { id: string; messageId: string; duplicate: boolean };
    assert.equal(b.duplicate, true);
    assert.equal(b.id, a.id);
    assert.equal(b.messageId, a.messageId);
    assert.equal(mx.received.length, before + 1);

    // The same key for a different message is the client's mistake: refused, nothing sent.
    for (const other of [
      { to: 'carol@remote.test', text: 'once' },
      { to: 'bob@remote.test', text: 'twice' },
    ]) {
      const reused = await send(other, { headers: { 'Idempotency-Key': 'k-123' } });
      assert.equal(reused.status, 422);
      assert.equal((await errorOf(reused)).code, 'idempotency_key_reused');
    }
    // Still a retry when only the JSON's spelling differs (key order, spaces).
    const respelled = await env.request(`/v1/mailboxes/${ALICE}/send`, {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': 'k-123' },
      body: '{ "text": "once",  "to": "bob@remote.test" }',
    });
    assert.equal(respelled.status, 200);
    assert.equal(((await respelled.json()) as { duplicate: boolean }).duplicate, true);
    assert.equal(mx.received.length, before + 1);
  });

  it('is in the OpenAPI document, which stays valid', async () => {
    const doc = (await (await env.request('/v1/openapi.json')).json()) as {
      paths: Record<string, { post?: { requestBody?: { content?: Record<string, unknown> } } }>;
    };
    const content = doc.paths['/v1/mailboxes/{address}/send']?.post?.requestBody?.content ?? {};
    assert.deepEqual(Object.keys(content).sort(), ['application/json', 'message/rfc822']);
    await SwaggerParser.validate(structuredClone(doc) as unknown as SwaggerParser['api']);
  });

  it('a body larger than anything the relay could send is refused while it streams in (413)', async () => {
    const res = await env.request(`/v1/mailboxes/${ALICE}/send`, {
      method: 'POST',
      token: alice,
      headers: { 'Content-Type': 'message/rfc822' },
      body: Buffer.alloc(200 * 1024, 'a'),
    });
    assert.equal(res.status, 413);
    assert.equal((await errorOf(res)).code, 'payload_too_large');
  });

  it('an answer before the whole body arrived (413 while it streams in, 401) ends its connection: the next request is not lost on it', async () => {
    for (const { token, status } of [
      { token: alice, status: 413 },
      { token: 'mr_not-a-token', status: 401 },
    ]) {
      const socket = connect(env.api.port, '127.0.0.1');
      await once(socket, 'connect');
      let answer = '';
      socket.on('data', (chunk: Buffer) => {
        answer += chunk.toString('latin1');
      });
      const ended = once(socket, 'end');
      const body = Buffer.alloc(200 * 1024, 'a');
      socket.write(
        `POST /v1/mailboxes/${ALICE}/send HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
          `Content-Type: message/rfc822\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      socket.write(body);
      // The server says the connection ends with this answer, and ends it: a client does not send its
      // next request on it (before, it said keep-alive and then closed it, losing that request).
      await ended;
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.match(answer, /\r\nconnection: close\r\n/i);
      socket.destroy();
    }
  });

  it('the remote side refusing one recipient of several: sent to the others, once, and the answer names the refused one', async () => {
    mx.refuse('gone@remote.test', 550);
    const before = mx.to('bob@remote.test').length;
    const body = { to: ['bob@remote.test', 'gone@remote.test'], subject: 'partly refused', text: 'x' };
    const res = await send(body, { headers: { 'Idempotency-Key': 'partial-1' } });
    assert.equal(res.status, 200, await res.clone().text());
    const result = (await res.json()) as { id: string; refused?: string[]; duplicate: boolean };
    assert.deepEqual(result.refused, ['gone@remote.test']);
    assert.equal(mx.to('bob@remote.test').length, before + 1, 'bob got it');
    const sent = await listAll(env.runtime.index, sentMailboxKey(ALICE));
    assert.ok(
      sent.some((e) => e.id === result.id),
      'the sent view keeps what was sent',
    );

    // A retry with the same key is answered as the send was, and bob does not get it again.
    const retry = await send(body, { headers: { 'Idempotency-Key': 'partial-1' } });
    assert.equal(retry.status, 200, await retry.clone().text());
    const again = (await retry.json()) as { id: string; refused?: string[]; duplicate: boolean };
    assert.deepEqual([again.id, again.refused, again.duplicate], [result.id, ['gone@remote.test'], true]);
    assert.equal(mx.to('bob@remote.test').length, before + 1, 'sent once');
  });

  it("SES's SMTP interface as the smarthost, out of its sending rate or daily quota: 503 with Retry-After, or 429; the same key sends once later", async () => {
    // Its replies (https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html).
    const cases = [
      { to: 'rate@remote.test', text: 'Throttling failure: Maximum sending rate exceeded.', status: 503 },
      { to: 'quota@remote.test', text: 'Throttling failure: Daily message quota exceeded.', status: 429 },
    ];
    for (const { to, text, status } of cases) {
      mx.refuse(to, 454, text);
      const body = { to, subject: `limited ${status}`, text: 'x' };
      const key = { headers: { 'Idempotency-Key': `limit-${status}` } };
      const res = await send(body, key);
      assert.equal(res.status, status, await res.clone().text());
      const error = await errorOf(res);
      assert.equal(error.code, status === 503 ? 'throttled' : 'send_quota_exceeded');
      assert.equal(res.headers.get('retry-after'), status === 503 ? '4' : null);
      assert.equal(mx.to(to).length, 0);
      // The limit lifts: the same request with the same key sends it, once.
      mx.accept(to);
      const later = await send(body, key);
      assert.equal(later.status, 200, await later.clone().text());
      assert.equal(((await later.json()) as { duplicate: boolean }).duplicate, false);
      assert.equal((await send(body, key)).status, 200);
      assert.equal(mx.to(to).length, 1, 'sent once');
    }
  });

  it('a refusal by the remote side is a 422 and nothing lands in the sent view', async () => {
    mx.refuse('nobody@remote.test', 550);
    const before = (await listAll(env.runtime.index, sentMailboxKey(ALICE))).length;
    const res = await send({ to: 'nobody@remote.test', text: 'x' });
    assert.equal(res.status, 422);
    const error = await errorOf(res);
    assert.equal(error.code, 'send_rejected');
    // The smarthost's reply, so the user knows which address and why.
    assert.match(error.message, /refused the message: .*550 5\.1\.1 refused by test/);
    assert.equal((await listAll(env.runtime.index, sentMailboxKey(ALICE))).length, before);
  });
});

describe('POST …/send when the smarthost cannot be reached', () => {
  it('is a 502 to try again, and says nothing of the smarthost (its host and port stay in the log)', async () => {
    const port = await freePort(); // nothing listens there
    const { res, logged } = await sendThrough(`smtp://127.0.0.1:${port}`);
    assert.equal(res.status, 502);
    const error = await errorOf(res);
    assert.equal(error.code, 'send_failed');
    assert.equal(error.message, 'the mail provider failed; try again');
    assert.doesNotMatch(error.message, new RegExp(String(port)));
    assert.match(logged, new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${port}`), 'the log says where');
  });
});

describe('POST …/send when the smarthost refuses the relay itself (a 5xx not about the message)', () => {
  it('a smarthost refusing EHLO and HELO (5xx) is a 502 to try again, not a refusal of the message', async () => {
    const smarthost = await startRefusingSmarthost({ reply: '550 5.7.1 relay host 127.0.0.1 not allowed' });
    try {
      const { res, logged } = await sendThrough(smarthost.url);
      assert.equal(res.status, 502);
      const error = await errorOf(res);
      assert.equal(error.code, 'send_failed');
      assert.equal(error.message, 'the mail provider failed; try again');
      assert.match(logged, /550 5\.7\.1 relay host 127\.0\.0\.1 not allowed/, 'the log says why');
    } finally {
      await smarthost.close();
    }
  });

  it('a password never goes out in clear: a smarthost without STARTTLS gets no AUTH and no mail; a 502, and the log says why', async () => {
    const mx = await startRemoteMx({ auth: true });
    try {
      const { res, logged } = await sendThrough(`smtp://relay-user:s3cret@127.0.0.1:${mx.port}`);
      assert.equal(res.status, 502);
      assert.equal((await errorOf(res)).code, 'send_failed');
      assert.match(logged, /STARTTLS/);
      assert.deepEqual(mx.logins, [], 'the smarthost saw no credentials');
      assert.equal(mx.received.length, 0);
    } finally {
      await mx.close();
    }
  });

  it('a 554 greeting is a 502 to try again, and its text stays in the log', async () => {
    const smarthost = await startRefusingSmarthost({
      greeting: '554 5.3.2 smarthost.internal.test is not accepting mail from 127.0.0.1',
    });
    try {
      const { res, logged } = await sendThrough(smarthost.url);
      assert.equal(res.status, 502);
      const error = await errorOf(res);
      assert.equal(error.code, 'send_failed');
      assert.doesNotMatch(error.message, /smarthost\.internal|554/);
      assert.match(logged, /554 5\.3\.2 smarthost\.internal\.test is not accepting/, 'the log says why');
    } finally {
      await smarthost.close();
    }
  });
});

describe('POST …/send retried after a failure that may have reached the recipient', () => {
  it('the retry sends the same message (id, Message-ID, Date), so that a receiver can tell the copies apart', async () => {
    // A smarthost that takes the whole message and then, the first time, drops the connection
    // instead of answering 250: the sender cannot know the mail went out.
    const received: string[] = [];
    const smarthost = createServer((socket) => {
      let buffer = '';
      let inData = false;
      socket.write('220 flaky.test ESMTP\r\n');
      socket.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('latin1');
        for (;;) {
          if (inData) {
            const end = buffer.indexOf('\r\n.\r\n');
            if (end < 0) return;
            received.push(buffer.slice(0, end + 2));
            buffer = buffer.slice(end + 5);
            inData = false;
            if (received.length === 1) return void socket.destroy();
            socket.write('250 2.0.0 queued\r\n');
            continue;
          }
          const eol = buffer.indexOf('\r\n');
          if (eol < 0) return;
          const line = buffer.slice(0, eol).toUpperCase();
          buffer = buffer.slice(eol + 2);
          if (line.startsWith('EHLO')) socket.write('250-flaky.test\r\n250 8BITMIME\r\n');
          else if (line === 'DATA') {
            inData = true;
            socket.write('354 go ahead\r\n');
          } else if (line === 'QUIT') socket.end('221 bye\r\n');
          else socket.write('250 ok\r\n');
        }
      });
    });
    await new Promise<void>((resolve) => smarthost.listen(0, '127.0.0.1', resolve));
    const port = (smarthost.address() as { port: number }).port;
    const env = await startApiTestEnv({
      config: { domains: ['example.test'], mailboxes: [ALICE], relay: { smtp: `smtp://127.0.0.1:${port}` } },
    });
    try {
      mountSendRoute(env.api.app, { ...env.runtime });
      const token = await env.token(ALICE);
      const send = () =>
        env.request(`/v1/mailboxes/${ALICE}/send`, {
          method: 'POST',
          token,
          headers: { 'Content-Type': 'application/json', 'Idempotency-Key': 'lost-reply-1' },
          body: JSON.stringify({ to: 'bob@remote.test', subject: 'once', text: 'hello' }),
        });
      const first = await send();
      assert.equal(first.status, 502, await first.clone().text());
      await new Promise((resolve) => setTimeout(resolve, 20));
      const retry = await send();
      assert.equal(retry.status, 200, await retry.clone().text());
      const { id } = (await retry.json()) as { id: string };
      assert.equal(received.length, 2, 'both attempts reached the smarthost');
      const [a, b] = received.map((r) => Buffer.from(r, 'latin1'));
      assert.ok(a && b);
      assert.deepEqual(header(b, 'Message-ID'), header(a, 'Message-ID'));
      assert.deepEqual(header(b, 'Date'), header(a, 'Date'));
      assert.deepEqual(header(a, 'Message-ID'), [`<${id.toLowerCase()}@example.test>`]);
      // The sent view keeps the one copy, under that id.
      const sent = await listAll(env.runtime.index, sentMailboxKey(ALICE));
      assert.deepEqual(
        sent.map((e) => e.id),
        [id],
      );
    } finally {
      await env.close();
      await new Promise<void>((resolve) => smarthost.close(() => resolve()));
    }
  });
});
