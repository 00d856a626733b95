/**
 * Time as a user meets it: `mail-relay dev` and `mail-relay import` run as processes under other
 * time zones (TZ), mail over SMTP (python3 smtplib), the API over HTTP. A message's `Date:` is read
 * the same in every zone; `import` takes no receipt time from the future, and an import of the same
 * content keeps its id whatever the clock says by then; `--since` means the same instant in every zone.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startApiTestEnv } from '../helpers/api.ts';
import { BIN, cleanEnv, type DevProcess, startDev } from '../helpers/dev.ts';
import { python, run } from '../helpers/process.ts';
import { until } from '../helpers/until.ts';

const work = mkdtempSync(join(tmpdir(), 'mr-time-'));
after(() => rmSync(work, { recursive: true, force: true }));

const ALICE = 'alice@example.test';
const configPath = join(work, 'mail-relay.config.json');
writeFileSync(configPath, JSON.stringify({ domains: ['example.test'], mailboxes: [ALICE] }));

interface Item {
  readonly id: string;
  readonly receivedAt: string;
  readonly subject: string;
}

/** `mail-relay <args>` as a process, on `dataDir`, under time zone `tz` (and `--import preload`, if given). */
function cli(dataDir: string, tz: string, args: readonly string[], preload?: string) {
  return run(process.execPath, [...(preload ? ['--import', preload] : []), BIN, ...args], {
    env: cleanEnv({ MAIL_RELAY_CONFIG: configPath, MAIL_RELAY_DATA_DIR: dataDir, TZ: tz }),
  });
}

function eml(name: string, subject: string, date: string | null): string {
  const path = join(work, name);
  writeFileSync(
    path,
    `From: sender@remote.test\r\nTo: ${ALICE}\r\nSubject: ${subject}\r\n${date === null ? '' : `Date: ${date}\r\n`}\r\nhello\r\n`,
  );
  return path;
}

async function smtpSend(port: number, subject: string, date: string): Promise<void> {
  const r = await python(
    `import smtplib,sys\nwith smtplib.SMTP('127.0.0.1', int(sys.argv[1])) as s: s.sendmail('sender@remote.test', ['${ALICE}'], ('Subject: ' + sys.argv[2] + '\\r\\nDate: ' + sys.argv[3] + '\\r\\n\\r\\nhello\\r\\n').encode())`,
    [String(port), subject, date],
  );
  assert.equal(r.code, 0, r.stderr);
}

describe('a relay under another time zone', () => {
  const dataDir = join(work, 'kiritimati');
  let dev: DevProcess;
  let api: string;
  let token: string;

  const get = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${api}mailboxes/${ALICE}${path}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200, path);
    return (await res.json()) as T;
  };
  const items = async () => (await get<{ items: Item[] }>('/messages?limit=1000')).items;
  const dateOf = async (subject: string) => {
    const item = (await items()).find((i) => i.subject === subject);
    assert.ok(item, subject);
    return (await get<{ date: string | null }>(`/messages/${item.id}`)).date;
  };

  before(async () => {
    // UTC+14: a date read in the host's zone is 14 hours off.
    dev = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath, TZ: 'Pacific/Kiritimati' } });
    const url = /^ {2}api: +(\S+)$/m.exec(dev.output())?.[1];
    assert.ok(url, dev.output());
    api = url;
    const created = await cli(dataDir, 'Pacific/Kiritimati', ['token', 'create', ALICE]);
    assert.equal(created.code, 0, created.stderr);
    token = created.stdout.trim();
  });
  after(() => dev.child.kill('SIGTERM'));

  it("reads a Date without a zone, or with one RFC 5322 reads as -0000, in UTC: the API's date", async () => {
    const cases: [string, string, string][] = [
      ['no zone', 'Fri, 27 Nov 2026 13:40:00', '2026-11-27T13:40:00.000Z'],
      ['military', 'Fri, 27 Nov 2026 13:40:00 A', '2026-11-27T13:40:00.000Z'],
      ['named', 'Fri, 27 Nov 2026 13:40:00 CET', '2026-11-27T13:40:00.000Z'],
      ['three-digit year', 'Fri, 27 Nov 126 13:40:00 +0000', '2026-11-27T13:40:00.000Z'],
      ['comment and +1400', 'Fri (Friday), 27 Nov 2026 13:40:00 +1400 (LINT)', '2026-11-26T23:40:00.000Z'],
      ['EST', 'Fri, 27 Nov 2026 13:40:00 EST', '2026-11-27T18:40:00.000Z'],
      ['garbage', '12345', ''],
    ];
    for (const [subject, date] of cases) await smtpSend(dev.port, subject, date);
    for (const [subject, , expected] of cases) assert.equal(await dateOf(subject), expected || null, subject);
  });

  it('imports a Date without a zone as the same instant, and as the same message, from any TZ', async () => {
    const file = eml('zoneless.eml', 'zoneless import', 'Fri, 27 Nov 2026 13:40:00');
    const first = await cli(dataDir, 'America/St_Johns', ['import', file]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /delivered 1, duplicate 0,/);
    const again = await cli(dataDir, 'Pacific/Kiritimati', ['import', file]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /delivered 0, duplicate 1,/);
    const imported = (await items()).filter((i) => i.subject === 'zoneless import');
    assert.deepEqual(
      imported.map((i) => i.receivedAt),
      ['2026-11-27T13:40:00.000Z'],
    );
  });
});

describe('import and the clock', () => {
  it('takes no receipt time from the future: spam dated 2099 does not head the list for decades', async () => {
    const dataDir = join(work, 'future');
    const spam = eml('spam-2099.eml', 'from the future', 'Thu, 31 Dec 2099 23:59:59 +0000');
    const old = eml('old-1901.eml', 'from 1901', 'Fri, 13 Dec 1901 20:45:52 +0000');
    const written = new Date(Date.now() - 2 * 3600_000);
    utimesSync(spam, written, written);
    utimesSync(old, written, written);
    const r = await cli(dataDir, 'UTC', ['import', spam, old]);
    assert.equal(r.code, 0, r.stderr);
    const dev = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath } });
    try {
      await smtpSend(dev.port, 'just now', 'Sat, 28 Nov 2026 10:00:00 +0000');
      const created = await cli(dataDir, 'UTC', ['token', 'create', ALICE]);
      const url = /^ {2}api: +(\S+)$/m.exec(dev.output())?.[1];
      const res = await fetch(`${url}mailboxes/${ALICE}/messages`, {
        headers: { authorization: `Bearer ${created.stdout.trim()}` },
      });
      const list = ((await res.json()) as { items: Item[] }).items;
      // Mail received now heads the list; the two imports were received when their files were written.
      assert.equal(list[0]?.subject, 'just now');
      assert.deepEqual(list.map((i) => i.subject).sort(), ['from 1901', 'from the future', 'just now']);
      for (const i of list.slice(1)) assert.equal(i.receivedAt, written.toISOString(), i.subject);
    } finally {
      dev.child.kill('SIGTERM');
    }
  });

  it('takes a file time from the future or before 1970 as the time of the import, not as a receipt time', async () => {
    const dataDir = join(work, 'file-times');
    const ahead = eml('mtime-2099.eml', 'file from 2099', null);
    const before1970 = eml('mtime-1969.eml', 'file from 1969', null);
    utimesSync(ahead, new Date('2099-01-01T00:00:00Z'), new Date('2099-01-01T00:00:00Z'));
    utimesSync(before1970, new Date('1969-07-20T20:17:00Z'), new Date('1969-07-20T20:17:00Z'));
    const started = Date.now();
    const r = await cli(dataDir, 'UTC', ['import', ahead, before1970]);
    const ended = Date.now();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /imported 2\/2 files .*delivered 2, .*failed 0/);
    const dev = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath } });
    try {
      const created = await cli(dataDir, 'UTC', ['token', 'create', ALICE]);
      const url = /^ {2}api: +(\S+)$/m.exec(dev.output())?.[1];
      const res = await fetch(`${url}mailboxes/${ALICE}/messages`, {
        headers: { authorization: `Bearer ${created.stdout.trim()}` },
      });
      const list = ((await res.json()) as { items: Item[] }).items;
      assert.equal(list.length, 2);
      for (const i of list) {
        const at = Date.parse(i.receivedAt);
        assert.ok(at >= started - 1000 && at <= ended, `${i.subject}: ${i.receivedAt}`);
      }
    } finally {
      dev.child.kill('SIGTERM');
    }
    // Imported again: the earlier import's time, the same messages.
    const again = await cli(dataDir, 'UTC', ['import', ahead, before1970]);
    assert.match(again.stdout, /delivered 0, duplicate 2,/);
  });

  it('imports the same content as the same message once its Date, future at the first import, has come', async () => {
    const dataDir = join(work, 'came');
    const inTwoDays = new Date(Date.now() + 2 * 86_400_000).toUTCString().replace('GMT', '+0000');
    const file = eml('early.eml', 'dated ahead', inTwoDays);
    const first = await cli(dataDir, 'UTC', ['import', file]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /delivered 1, duplicate 0,/);
    // The same import three days later: this process's clock, and so its Date and Date.now, run ahead.
    const later = join(work, 'three-days-later.mjs');
    writeFileSync(
      later,
      `const Real = Date; const ahead = 3 * 86_400_000;
globalThis.Date = class extends Real {
  constructor(...a) { if (a.length === 0) super(Real.now() + ahead); else super(...a); }
  static now() { return Real.now() + ahead; }
};\n`,
    );
    const again = await cli(dataDir, 'UTC', ['import', file], later);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /delivered 0, duplicate 1,/);
  });
});

describe('--since', () => {
  it('reads a date-time without a zone as UTC (the times LIST shows), under any TZ', async () => {
    const dataDir = join(work, 'since');
    // A data dir that holds mail-relay data (replay refuses one that does not): a token made in it.
    const made = await cli(dataDir, 'UTC', ['token', 'create', 'alice@example.test']);
    assert.equal(made.code, 0, made.stderr);
    for (const tz of ['Pacific/Kiritimati', 'America/St_Johns']) {
      for (const since of ['2026-11-27T12:00', '2026-11-27 12:00:00']) {
        const r = await cli(dataDir, tz, ['replay', '--since', since]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /stored since 2026-11-27T12:00:00\.000Z /, `${tz} ${since}`);
      }
    }
  });
});

describe('the wall clock stepping while the relay runs', () => {
  it('a long-poll still answers when its timeout is up, the clock stepped back an hour meanwhile', async () => {
    // The process's wall clock, as NTP or a host waking from sleep steps it: set before the relay starts.
    const realNow = Date.now;
    let step = 0;
    Date.now = () => realNow() + step;
    const env = await startApiTestEnv();
    try {
      const token = await env.token(ALICE);
      const started = performance.now();
      const poll = env.request(`/v1/mailboxes/${ALICE}/wait?timeout=2`, { token });
      // The step comes while the long-poll waits (a fixed pause let a slow start take it first).
      await until('the long-poll to wait', () => (env.waiter.size === 1 ? true : undefined));
      step = -3_600_000;
      // A wait timed by the wall clock would answer an hour late. A minute tells the two apart on
      // any machine; the 4 s allowed before did not (on a loaded one the answer took 5.7 s).
      const res = await Promise.race([
        poll,
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 60_000).unref()),
      ]);
      assert.ok(res, 'the long-poll was still waiting a minute into its 2 s');
      assert.equal(res.status, 204);
      const took = performance.now() - started;
      assert.ok(took >= 1900, `answered after ${Math.round(took)} ms, before its 2 s were up`);
    } finally {
      Date.now = realNow;
      await env.close();
    }
  });
});

describe('the wall clock stepping under a CLI command', () => {
  it('import and replay print how long they took, not a negative time', async () => {
    const dataDir = join(work, 'stepping');
    // Each reading of this process's wall clock is an hour before the one before it.
    const stepping = join(work, 'clock-steps-back.mjs');
    writeFileSync(
      stepping,
      'const real = Date.now; let steps = 0;\nDate.now = () => real() - 3_600_000 * steps++;\n',
    );
    const file = eml('stepped.eml', 'while the clock stepped', 'Tue, 4 Mar 2025 09:15:00 +0000');
    const imported = await cli(dataDir, 'UTC', ['import', file], stepping);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /^imported 1\/1 files in \d+\.\ds: delivered 1,/);
    const replayed = await cli(dataDir, 'UTC', ['replay', '--since', '2000-01-01'], stepping);
    assert.equal(replayed.code, 0, replayed.stderr);
    assert.match(
      replayed.stdout,
      /^replayed 1 of 1 notifications stored since 2000-01-01T00:00:00\.000Z in \d+\.\ds:/,
    );
  });
});
