import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SqliteError } from 'better-sqlite3';
import { isStorageFull, MailRelayError, StorageFullError } from '../../functions/core/errors.ts';
import {
  STORAGE_FULL_QUIET_MS,
  STORAGE_FULL_REMINDER_MS,
  StorageFullNotice,
} from '../../functions/local/storage-full-notice.ts';

const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

describe('isStorageFull', () => {
  it("recognizes the file system's, SQLite's and our own way of saying it, also as a cause", () => {
    assert.equal(isStorageFull(enospc), true);
    assert.equal(isStorageFull(new SqliteError('database or disk is full', 'SQLITE_FULL')), true);
    assert.equal(isStorageFull(new SqliteError('disk I/O error', 'SQLITE_IOERR_SHMSIZE')), true);
    assert.equal(isStorageFull(new StorageFullError('wrote 3 of 9 bytes')), true);
    assert.equal(isStorageFull(new MailRelayError('recovery_failed', 'x', { cause: enospc })), true);
  });

  it('leaves other failures alone', () => {
    assert.equal(isStorageFull(new SqliteError('disk I/O error', 'SQLITE_IOERR')), false);
    assert.equal(isStorageFull(Object.assign(new Error('EMFILE'), { code: 'EMFILE' })), false);
    assert.equal(isStorageFull('ENOSPC'), false);
  });
});

describe('StorageFullNotice', () => {
  const make = () => {
    const lines: string[] = [];
    let now = 1_000_000;
    const notice = new StorageFullNotice(
      (l) => lines.push(l),
      '/data',
      () => now,
    );
    return { lines, notice, advance: (ms: number) => (now += ms) };
  };

  it('says a full disk once, however many refusals follow, and a reminder at most every ten minutes', () => {
    const { lines, notice, advance } = make();
    for (let i = 0; i < 500; i++) {
      assert.equal(notice.report(enospc), true);
      advance(100);
    }
    assert.equal(lines.length, 1);
    assert.match(
      lines[0] ?? '',
      /^mail-relay: no space left on the disk of \/data .*452 4\.3\.1.*507.*no restart needed\n$/,
    );
    advance(STORAGE_FULL_REMINDER_MS);
    notice.report(enospc);
    assert.equal(lines.length, 2);
    assert.match(lines[1] ?? '', /still full: 501 messages or requests refused so far/);
  });

  it('ends an episode with one line once stores succeed a while after the last refusal, not while it flaps', () => {
    const { lines, notice, advance } = make();
    notice.report(enospc);
    for (let i = 0; i < 20; i++) {
      advance(1000);
      notice.stored();
      notice.report(enospc);
    }
    assert.equal(lines.length, 1, 'flapping near the edge is one episode');
    advance(STORAGE_FULL_QUIET_MS);
    notice.stored();
    notice.stored();
    assert.equal(lines.length, 2);
    assert.match(
      lines[1] ?? '',
      /^mail-relay: storing again in \/data \(21 messages or requests were refused/,
    );
    notice.report(enospc);
    assert.equal(lines.length, 3, 'a new episode is said again');
  });

  it('times its quiet minute and reminders by time passed, not by a wall clock stepped back', () => {
    // As built by `dev` (no clock given). The wall clock stepped back an hour (NTP, a host resumed)
    // while a minute passed: the episode still ends after that minute, not an hour later.
    const realNow = Date.now;
    const realMonotonic = performance.now;
    let passed = 0;
    Date.now = () => realNow() - (passed > 0 ? 3_600_000 : 0);
    performance.now = () => realMonotonic.call(performance) + passed;
    try {
      const lines: string[] = [];
      const notice = new StorageFullNotice((l) => lines.push(l), '/data');
      notice.report(enospc);
      passed = STORAGE_FULL_QUIET_MS + 1000;
      notice.stored();
      assert.equal(lines.length, 2);
      assert.match(lines[1] ?? '', /^mail-relay: storing again in \/data/);
    } finally {
      Date.now = realNow;
      performance.now = realMonotonic;
    }
  });

  it('returns false for other errors, which the caller logs as before', () => {
    const { lines, notice } = make();
    assert.equal(notice.report(new Error('boom')), false);
    notice.stored();
    assert.deepEqual(lines, []);
  });
});
