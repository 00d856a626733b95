/**
 * A token reads only its own mailbox (design.md §5). Every endpoint × {no token, malformed,
 * unknown, revoked, a token of another mailbox} over real HTTP: 401 for the first four, 403 for
 * the last, with the same answer whether or not the target mailbox or message exists.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { revokeToken } from '../../functions/api/auth.ts';
import { buildMessageWithAttachment, pdfLikeBytes } from '../fixtures/build.ts';
import { type ApiTestEnv, errorOf, startApiTestEnv } from '../helpers/api.ts';
import { until } from '../helpers/until.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
/** In the config's domain but never configured, never delivered to. */
const GHOST = 'ghost@example.test';
const UNKNOWN_ID = '01ARZ3NDEKTSV4RRFFQ69G5FAV';

interface Endpoint {
  readonly name: string;
  readonly method: string;
  readonly path: (mailbox: string, id: string) => string;
  readonly body?: string;
  /** Status for the owner's own token. */
  readonly ok: number;
}

const ENDPOINTS: readonly Endpoint[] = [
  { name: 'STAT', method: 'GET', path: (m) => `/v1/mailboxes/${m}`, ok: 200 },
  { name: 'LIST', method: 'GET', path: (m) => `/v1/mailboxes/${m}/messages?limit=10`, ok: 200 },
  { name: 'message', method: 'GET', path: (m, id) => `/v1/mailboxes/${m}/messages/${id}`, ok: 200 },
  { name: 'raw', method: 'GET', path: (m, id) => `/v1/mailboxes/${m}/messages/${id}/raw`, ok: 200 },
  { name: 'TOP', method: 'GET', path: (m, id) => `/v1/mailboxes/${m}/messages/${id}/top?lines=1`, ok: 200 },
  { name: 'part', method: 'GET', path: (m, id) => `/v1/mailboxes/${m}/messages/${id}/parts/1`, ok: 200 },
  {
    name: 'PATCH',
    method: 'PATCH',
    path: (m, id) => `/v1/mailboxes/${m}/messages/${id}`,
    body: '{"seen":true}',
    ok: 200,
  },
  {
    name: 'wait',
    method: 'GET',
    path: (m) => `/v1/mailboxes/${m}/wait?after=${UNKNOWN_ID}&timeout=0`,
    ok: 200,
  },
  // Last: it removes the message the other rows read.
  { name: 'DELETE', method: 'DELETE', path: (m, id) => `/v1/mailboxes/${m}/messages/${id}`, ok: 204 },
];

describe('mailbox isolation: every endpoint × a token of another mailbox × no token', () => {
  let env: ApiTestEnv;
  let aliceId: string;
  const tokens: Record<'alice' | 'bob' | 'revoked', string> = { alice: '', bob: '', revoked: '' };

  before(async () => {
    env = await startApiTestEnv();
    const raw = await buildMessageWithAttachment({
      attachmentBytes: pdfLikeBytes(2000, 7),
      subject: 'private',
    });
    aliceId = (await env.deliver([ALICE], raw)).id;
    await env.deliver([BOB], raw);
    tokens.alice = await env.token(ALICE);
    tokens.bob = await env.token(BOB);
    tokens.revoked = await env.token(ALICE);
    assert.equal(await revokeToken(env.runtime.index, tokens.revoked), true);
  });
  after(async () => env?.close());

  const call = (e: Endpoint, mailbox: string, id: string, authorization?: string) => {
    const headers: Record<string, string> = {};
    if (authorization !== undefined) headers.Authorization = authorization;
    if (e.body !== undefined) headers['Content-Type'] = 'application/json';
    return env.request(e.path(mailbox, id), {
      method: e.method,
      headers,
      ...(e.body ? { body: e.body } : {}),
    });
  };

  it('401 without a valid token, for every endpoint, whether or not the mailbox and message exist', async () => {
    const credentials: [string, string | undefined][] = [
      ['no header', undefined],
      ['empty bearer', 'Bearer '],
      ['basic auth', 'Basic YWxpY2U6c2VjcmV0'],
      ['malformed token', 'Bearer not-a-token'],
      ['unknown token', `Bearer mr_${'A'.repeat(43)}`],
      ['revoked token', `Bearer ${tokens.revoked}`],
    ];
    const bodies = new Set<string>();
    for (const e of ENDPOINTS) {
      for (const [label, auth] of credentials) {
        for (const [mailbox, id] of [
          [ALICE, aliceId],
          [ALICE, UNKNOWN_ID],
          [GHOST, UNKNOWN_ID],
        ] as const) {
          const res = await call(e, mailbox, id, auth);
          assert.equal(res.status, 401, `${e.name} ${label} ${mailbox}`);
          const err = await errorOf(res);
          assert.equal(err.code, 'unauthorized');
          bodies.add(JSON.stringify(err));
        }
      }
    }
    assert.equal(bodies.size, 1, 'one answer for every unauthenticated request');
    const admin = await env.request('/v1/mailboxes');
    assert.equal(admin.status, 401);
  });

  it('403 for a token of another mailbox, the same answer whether or not the mailbox or message exists', async () => {
    const bodies = new Set<string>();
    for (const e of ENDPOINTS) {
      for (const [mailbox, id] of [
        [ALICE, aliceId],
        [ALICE, UNKNOWN_ID],
        [GHOST, UNKNOWN_ID],
        [GHOST, aliceId],
      ] as const) {
        const res = await call(e, mailbox, id, `Bearer ${tokens.bob}`);
        assert.equal(res.status, 403, `${e.name} bob -> ${mailbox}/${id}`);
        const err = await errorOf(res);
        assert.equal(err.code, 'forbidden');
        bodies.add(JSON.stringify(err));
      }
    }
    assert.equal(bodies.size, 1, 'one answer for every forbidden request');
    const admin = await env.request('/v1/mailboxes', { token: tokens.bob });
    assert.equal(admin.status, 403);
  });

  it('the owner gets every endpoint, and nothing above changed the mailbox', async () => {
    const stat = await env.request(`/v1/mailboxes/${ALICE}`, { token: tokens.alice });
    assert.equal(
      ((await stat.json()) as { messages: number }).messages,
      1,
      'no forbidden DELETE went through',
    );
    const detail = await env.request(`/v1/mailboxes/${ALICE}/messages/${aliceId}`, { token: tokens.alice });
    assert.equal(((await detail.json()) as { seen: boolean }).seen, false, 'no forbidden PATCH went through');
    for (const e of ENDPOINTS) {
      const res = await call(e, ALICE, aliceId, `Bearer ${tokens.alice}`);
      assert.equal(res.status, e.ok, e.name);
      await res.arrayBuffer();
    }
  });
});

describe('a token revoked while its long-poll waits', () => {
  let env: ApiTestEnv;
  before(async () => {
    env = await startApiTestEnv();
  });
  after(async () => env?.close());

  it('gets 401, not the mail that arrived after the revocation', async () => {
    const token = await env.token(ALICE);
    const waiting = env.request(`/v1/mailboxes/${ALICE}/wait?timeout=20`, { token });
    await until('the long-poll to wait', () => (env.waiter.size === 1 ? true : undefined));
    assert.equal(await revokeToken(env.runtime.index, token), true);
    await env.deliver(
      [ALICE],
      Buffer.from('From: a@remote.test\r\nTo: alice@example.test\r\nSubject: after revocation\r\n\r\nhi\r\n'),
    );
    const res = await waiting;
    assert.equal(res.status, 401);
    assert.equal((await errorOf(res)).code, 'unauthorized');
    // The owner's other token still follows the mailbox, and finds the message.
    const owner = await env.token(ALICE);
    const all = await env.request(`/v1/mailboxes/${ALICE}/wait?cursor=0&timeout=0`, { token: owner });
    assert.equal(all.status, 200);
    const body = (await all.json()) as { items: { subject: string }[] };
    assert.deepEqual(
      body.items.map((i) => i.subject),
      ['after revocation'],
    );
  });
});
