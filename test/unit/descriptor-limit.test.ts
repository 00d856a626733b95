import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isOutOfDescriptors, MailRelayError } from '../../functions/core/errors.ts';
import {
  connectionCap,
  OUT_OF_DESCRIPTORS_QUIET_MS,
  OutOfDescriptorsNotice,
  readOpenFilesLimit,
} from '../../functions/local/descriptor-limit.ts';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max processes             127599               127599               processes
Max open files            %SOFT%               %HARD%               files
Max locked memory         8388608              8388608              bytes
`;

describe('readOpenFilesLimit', () => {
  it('reads the soft and hard limits of /proc/self/limits, unlimited as Infinity', () => {
    const read = (soft: string, hard: string) => () => LIMITS.replace('%SOFT%', soft).replace('%HARD%', hard);
    assert.deepEqual(readOpenFilesLimit(read('64', '4096')), { soft: 64, hard: 4096 });
    assert.deepEqual(readOpenFilesLimit(read('1024', 'unlimited')), { soft: 1024, hard: Infinity });
  });

  it('does without where there is no such file', () => {
    const missing = () => readFileSync('/nonexistent/limits', 'latin1');
    assert.equal(readOpenFilesLimit(missing), null);
    assert.equal(connectionCap(readOpenFilesLimit(missing)), undefined);
  });

  it('caps each server at half of what is left beside the reserve, at least one', () => {
    assert.equal(connectionCap({ soft: 128, hard: 128 }), 40);
    assert.equal(connectionCap({ soft: 1024, hard: 1024 }), 488);
    assert.equal(connectionCap({ soft: 50, hard: 50 }), 1);
    assert.equal(connectionCap({ soft: Infinity, hard: Infinity }), undefined);
  });
});

describe('isOutOfDescriptors', () => {
  it('recognizes EMFILE and ENFILE, also as the cause fetch wraps', () => {
    const emfile = Object.assign(new Error('EMFILE: too many open files, open x'), { code: 'EMFILE' });
    assert.equal(isOutOfDescriptors(emfile), true);
    assert.equal(isOutOfDescriptors(Object.assign(new Error('x'), { code: 'ENFILE' })), true);
    assert.equal(isOutOfDescriptors(new TypeError('fetch failed', { cause: emfile })), true);
    assert.equal(isOutOfDescriptors(new MailRelayError('internal', 'x')), false);
    assert.equal(isOutOfDescriptors(Object.assign(new Error('x'), { code: 'ENOSPC' })), false);
  });
});

describe('OutOfDescriptorsNotice', () => {
  it('says an episode once, and that it is over once a store follows a quiet while', () => {
    const lines: string[] = [];
    let now = 1_000_000;
    const notice = new OutOfDescriptorsNotice(
      (l) => lines.push(l),
      { soft: 128, hard: 128 },
      () => now,
    );
    notice.stored();
    assert.deepEqual(lines, []);
    for (let i = 0; i < 50; i++) notice.refused('SMTP sessions beyond 40 at once get 421 4.3.2');
    assert.equal(lines.length, 1);
    assert.match(
      lines[0] ?? '',
      /^mail-relay: at the open-files limit \(the limit is 128\): SMTP sessions beyond 40/,
    );
    assert.match(lines[0] ?? '', /raise the open-files limit \(`ulimit -n 1024`\) and restart\n$/);
    // Mail stored in the middle of a burst does not end it.
    now += OUT_OF_DESCRIPTORS_QUIET_MS - 1;
    notice.stored();
    assert.equal(lines.length, 1);
    now += 1;
    notice.stored();
    assert.equal(
      lines[1],
      'mail-relay: file descriptors available again (50 connections, messages or requests were refused meanwhile)\n',
    );
    notice.refused('messages and connections are refused');
    assert.equal(lines.length, 3, 'a new episode is said again');
  });
});
