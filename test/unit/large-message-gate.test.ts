/**
 * The SMTP listener's LargeMessageGate: large messages are routed while their total stays within a
 * budget (one alone beyond it), first come first served; small mail never waits.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LARGE_MESSAGE_BYTES, LargeMessageGate } from '../../functions/local/smtp-listener.ts';

const MB = 1024 * 1024;

/** Acquires for each size in order; records the order in which they were let through. */
function start(gate: LargeMessageGate, sizes: readonly number[]) {
  const order: number[] = [];
  const releases = sizes.map((bytes, i) =>
    gate.acquire(bytes).then((release) => {
      order.push(i);
      return release;
    }),
  );
  return { order, releases };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('LargeMessageGate', () => {
  it('lets small messages through at once, however many large ones wait', async () => {
    const gate = new LargeMessageGate(10 * MB);
    const big = start(gate, [10 * MB, 10 * MB]);
    await settle();
    assert.deepEqual(big.order, [0], 'the second large one waits');
    const small = await Promise.race([
      gate.acquire(LARGE_MESSAGE_BYTES - 1).then(() => 'through'),
      settle().then(() => 'waiting'),
    ]);
    assert.equal(small, 'through');
    (await big.releases[0])?.();
    await settle();
    assert.deepEqual(big.order, [0, 1]);
  });

  it('routes large messages together within the budget, in arrival order beyond it', async () => {
    const gate = new LargeMessageGate(10 * MB);
    const run = start(gate, [4 * MB, 4 * MB, 4 * MB, 1 * MB]);
    await settle();
    // 4 + 4 fit; the third does not, and the 1 MB one behind it does not overtake it.
    assert.deepEqual(run.order, [0, 1]);
    (await run.releases[0])?.();
    await settle();
    assert.deepEqual(run.order, [0, 1, 2, 3], '4 + 4 + 1 fit once the first is done');
  });

  it('routes a message larger than the budget alone', async () => {
    const gate = new LargeMessageGate(10 * MB);
    const run = start(gate, [30 * MB, 2 * MB]);
    await settle();
    assert.deepEqual(run.order, [0]);
    const release = await run.releases[0];
    release?.();
    release?.(); // a second call changes nothing
    await settle();
    assert.deepEqual(run.order, [0, 1]);
    const alone = start(gate, [30 * MB]);
    await settle();
    assert.deepEqual(alone.order, [], 'waits for the 2 MB one: over budget together');
    (await run.releases[1])?.();
    await settle();
    assert.deepEqual(alone.order, [0]);
  });
});
