/**
 * Bearer tokens (functions/api/auth.ts) through their public functions, against a real SQLite
 * index: who a token lets read which mailbox. Every endpoint over real HTTP is in
 * test/e2e/api-isolation.test.ts; this file holds the edges a mutation pass found untested there.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { SqliteMailboxIndex } from '../../functions/adapters/local/sqlite-mailbox-index.ts';
import {
  authenticate,
  authorizeAdmin,
  authorizeMailbox,
  createToken,
  reauthenticate,
  revokeToken,
} from '../../functions/api/auth.ts';
import { AuthError } from '../../functions/core/errors.ts';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';

const index = new SqliteMailboxIndex(':memory:');
after(() => index.close());

/** Whether `fn` throws the AuthError of `status`. */
function refusedWith(status: 401 | 403, fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => err instanceof AuthError && err.status === status);
}

async function rejectedWith(status: 401 | 403, promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (err: unknown) => err instanceof AuthError && err.status === status);
}

describe('createToken', () => {
  it('makes a token that reads its own mailbox only, unless it is asked for an admin token', async () => {
    const { token, record } = await createToken(index, { mailbox: ALICE });
    assert.equal(record.admin, false);
    const authenticated = await authenticate(index, `Bearer ${token}`);
    authorizeMailbox(authenticated, ALICE);
    refusedWith(403, () => authorizeMailbox(authenticated, BOB));
    refusedWith(403, () => authorizeAdmin(authenticated));
  });
});

describe('authenticate: the Authorization header', () => {
  it('takes the Bearer scheme in any case (RFC 9110 §11.1), with any run of spaces around the token', async () => {
    const { token, record } = await createToken(index, { mailbox: ALICE });
    for (const header of [
      `Bearer ${token}`,
      `bearer ${token}`,
      `BEARER ${token}`,
      `Bearer   ${token}`,
      `Bearer ${token}  `,
    ]) {
      assert.equal((await authenticate(index, header)).hash, record.hash, header);
    }
  });

  it('refuses (401) a header that is not exactly "Bearer <token>", even around a valid token', async () => {
    const { token } = await createToken(index, { mailbox: ALICE });
    for (const header of [
      undefined,
      '',
      token,
      `Basic ${token}`,
      `NotBearer ${token}`,
      `Bearer${token}`,
      `Bearer ${token} ${token}`,
      `Bearer ${token}x`,
      `Bearer x${token}`,
      `Bearer ${token.slice(0, -1)}`,
    ]) {
      await rejectedWith(401, authenticate(index, header));
    }
  });
});

describe('authenticate: cost of a refusal', () => {
  it('refuses a malformed token without reading the index (junk headers cost no DynamoDB read)', async () => {
    const { token } = await createToken(index, { mailbox: ALICE });
    let reads = 0;
    const counting = new Proxy(index, {
      get(target, name, receiver) {
        if (name === 'getToken') {
          return (hash: string) => {
            reads += 1;
            return target.getToken(hash);
          };
        }
        const value: unknown = Reflect.get(target, name, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    for (const malformed of [`x${token}`, `${token}x`, `${token.slice(0, -1)}`, 'mr_short', 'Bearer']) {
      await rejectedWith(401, authenticate(counting, `Bearer ${malformed}`));
    }
    await rejectedWith(401, authenticate(counting, undefined));
    assert.equal(reads, 0);
    // A well-formed token is looked up: one read.
    await authenticate(counting, `Bearer ${token}`);
    assert.equal(reads, 1);
  });
});

describe('authenticate: an index that answers with another token', () => {
  /** The real index, with getToken's answer changed as an index matching loosely would change it. */
  const answering = (change: (hash: string) => string) =>
    new Proxy(index, {
      get(target, name, receiver) {
        if (name === 'getToken') {
          return async (hash: string) => {
            const record = await target.getToken(hash);
            return record === null ? null : { ...record, hash: change(record.hash) };
          };
        }
        const value: unknown = Reflect.get(target, name, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });

  it('is refused (401, not a 500) when the stored hash is malformed or is not the hash asked for', async () => {
    const { token } = await createToken(index, { mailbox: ALICE });
    const header = `Bearer ${token}`;
    // Matched on a prefix (a short hash), a hash with junk after it, another token's hash.
    await rejectedWith(
      401,
      authenticate(
        answering((h) => h.slice(0, 8)),
        header,
      ),
    );
    await rejectedWith(
      401,
      authenticate(
        answering((h) => `${h}00`),
        header,
      ),
    );
    await rejectedWith(
      401,
      authenticate(
        answering((h) => `${h.slice(0, -1)}${h.endsWith('0') ? '1' : '0'}`),
        header,
      ),
    );
    await rejectedWith(
      401,
      authenticate(
        answering((h) => h.replace(/[0-9a-f]/, 'g')),
        header,
      ),
    );
    // The same answer unchanged is accepted.
    await authenticate(
      answering((h) => h),
      header,
    );
  });
});

describe('createToken: what is stored', () => {
  it('refuses a token that is neither for a mailbox nor admin, and stores nothing', async () => {
    let puts = 0;
    const counting = new Proxy(index, {
      get(target, name, receiver) {
        if (name === 'putToken') puts += 1;
        const value: unknown = Reflect.get(target, name, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    await assert.rejects(createToken(counting, { mailbox: null }), TypeError);
    await assert.rejects(createToken(counting, { mailbox: null, admin: false }), TypeError);
    assert.equal(puts, 0);
    const admin = await createToken(counting, { mailbox: null, admin: true });
    authorizeAdmin(await authenticate(index, `Bearer ${admin.token}`));
  });

  it('keeps the label given, and none where none is given', async () => {
    const labelled = await createToken(index, { mailbox: ALICE, label: 'my laptop' });
    assert.equal((await authenticate(index, `Bearer ${labelled.token}`)).label, 'my laptop');
    const plain = await createToken(index, { mailbox: ALICE });
    assert.equal('label' in (await authenticate(index, `Bearer ${plain.token}`)), false);
    assert.equal('label' in plain.record, false);
  });
});

describe('revokeToken and reauthenticate', () => {
  it('a revoked token is refused, also by a request that authenticated before the revocation', async () => {
    const { token } = await createToken(index, { mailbox: ALICE });
    const record = await authenticate(index, `Bearer ${token}`);
    await reauthenticate(index, record);
    assert.equal(await revokeToken(index, token), true);
    assert.equal(await revokeToken(index, token), false);
    await rejectedWith(401, reauthenticate(index, record));
    await rejectedWith(401, authenticate(index, `Bearer ${token}`));
  });
});
