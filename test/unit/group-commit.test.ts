import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_TURNS, scheduleGroupCommit } from '../../functions/adapters/local/group-commit.ts';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('scheduleGroupCommit', () => {
  it('commits a lone write on the next turn of the event loop', async () => {
    const queue = ['a'];
    let flushedAt = -1;
    let turn = 0;
    scheduleGroupCommit(
      () => queue.length,
      () => {
        flushedAt = turn;
      },
    );
    while (flushedAt < 0 && turn < 20) {
      await nextTurn();
      turn++;
    }
    assert.equal(flushedAt, 0, 'flushed in the first check phase');
  });

  it('waits while writes keep arriving, and commits them together', async () => {
    const queue = ['w0'];
    const batches: string[][] = [];
    // Two more writes, one per turn, each arriving before the commit's check in that turn (as the
    // writes of other messages do under load, from I/O callbacks).
    setImmediate(() => {
      queue.push('w1');
      setImmediate(() => queue.push('w2'));
    });
    scheduleGroupCommit(
      () => queue.length,
      () => batches.push(queue.splice(0)),
    );
    for (let i = 0; i < 6; i++) await nextTurn();
    assert.deepEqual(batches, [['w0', 'w1', 'w2']]);
  });

  it('never starves: under a write in every turn it still commits within MAX_TURNS turns', async () => {
    const queue = ['w'];
    let flushes = 0;
    let turns = 0;
    const arrive = () => {
      if (flushes > 0 || turns > 100) return;
      turns++;
      queue.push('more');
      setImmediate(arrive);
    };
    setImmediate(arrive);
    scheduleGroupCommit(
      () => queue.length,
      () => {
        flushes++;
      },
    );
    while (flushes === 0 && turns <= 100) await nextTurn();
    assert.equal(flushes, 1);
    assert.equal(turns, MAX_TURNS, 'committed in the last turn it may wait');
  });
});
