import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { parseConfig } from '../../functions/core/config.ts';
import { caseFree, literalEnds, REGEX_TIME_LIMIT_MS, RouteRegex } from '../../functions/core/route-regex.ts';
import {
  acceptsRecipient,
  applyPolicies,
  type Decision,
  failsDmarcReject,
  qualifyRecipient,
  resolveRecipient,
  route,
  UNCHECKED_VERDICTS,
  type Verdicts,
} from '../../functions/core/routing.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { until } from '../helpers/until.ts';

const config = parseConfig({
  domains: ['example.com', 'example.org'],
  mailboxes: [
    'alice@example.com',
    'bob@example.com',
    'archive@example.com',
    'support@example.com',
    '*@example.org',
  ],
  routes: [
    { match: 'postmaster@example.com', action: 'deliver', to: ['alice@example.com'] },
    { match: 'team@example.com', action: 'deliver', to: ['alice@example.com', 'bob@example.com'] },
    { match: 'everyone@example.com', action: 'deliver', to: ['team@example.com', 'archive@example.com'] },
    { match: 'boss@example.com', action: 'forward', to: ['boss.private@gmail.test'] },
    { match: 'old@example.com', action: 'reject', code: 551, message: '5.1.6 User has moved' },
    { match: 'noreply@example.com', action: 'drop' },
    { match: 'bob@example.com', action: 'deliver', to: ['bob@example.com', 'archive@example.com'] },
    { match: '/^(.+)-support@example\\.com$/', action: 'deliver', to: ['support@example.com'] },
    { match: '/^ticket-(\\d+)@example\\.com$/', action: 'deliver', to: ['support@example.com'] },
    { match: '/^user-([a-z]+)@example\\.com$/', action: 'deliver', to: ['$1@example.com'] },
    {
      match: '/^strict@example\\.com$/',
      action: 'deliver',
      to: ['alice@example.com'],
      policies: { spam: 'reject' },
    },
    { match: '*@example.com', action: 'deliver', to: ['archive@example.com'] },
  ],
});

function summarizeOne(d: Decision): string {
  if (d.kind === 'deliver' || d.kind === 'quarantine') return `${d.kind} ${d.mailbox}`;
  if (d.kind === 'forward') return `forward ${d.to}`;
  if (d.kind === 'reject') return `reject ${d.code}`;
  return 'drop';
}
const summarize = (ds: Decision[]): string[] => ds.map(summarizeOne);

describe('resolveRecipient: every rule kind and precedence', () => {
  const table: [string, string[], string][] = [
    ['alice@example.com', ['deliver alice@example.com'], 'a mailbox'],
    ['ALICE@Example.COM', ['deliver alice@example.com'], 'case-insensitive'],
    ['postmaster@example.com', ['deliver alice@example.com'], 'exact alias'],
    [
      'team@example.com',
      ['deliver alice@example.com', 'deliver bob@example.com', 'deliver archive@example.com'],
      'alias to several mailboxes (bob@ has its own route, which adds archive@)',
    ],
    [
      'everyone@example.com',
      [
        'deliver alice@example.com',
        'deliver bob@example.com',
        'deliver archive@example.com',
        'deliver archive@example.com',
      ],
      'alias of aliases (route() dedupes per mailbox)',
    ],
    ['boss@example.com', ['forward boss.private@gmail.test'], 'forward'],
    ['old@example.com', ['reject 551'], 'reject with its own code'],
    ['noreply@example.com', ['drop'], 'drop'],
    [
      'bob@example.com',
      ['deliver bob@example.com', 'deliver archive@example.com'],
      'exact route beats the mailbox',
    ],
    ['billing-support@example.com', ['deliver support@example.com'], 'regex'],
    ['ticket-42@example.com', ['deliver support@example.com'], 'second regex'],
    ['user-alice@example.com', ['deliver alice@example.com'], 'regex with $1 substitution'],
    [
      'user-nobody@example.com',
      ['deliver archive@example.com'],
      '$1 target unknown -> resolves through the catch-all',
    ],
    ['random@example.com', ['deliver archive@example.com'], 'catch-all last'],
    ['anyone@example.org', ['deliver anyone@example.org'], '*@domain mailboxes'],
    [
      'anyone+news@example.org',
      ['deliver anyone@example.org'],
      'plus-addressing in a *@domain mailbox domain',
    ],
    ['alice+news@example.com', ['deliver alice@example.com'], 'plus-addressing'],
    [
      'bob+x@example.com',
      ['deliver bob@example.com', 'deliver archive@example.com'],
      'plus-address of a routed address',
    ],
    ['stranger@elsewhere.net', ['reject 550'], 'not our domain: never an open relay'],
    ['not an address', ['reject 553'], 'bad syntax'],
  ];
  for (const [address, expected, why] of table) {
    it(`${address} -> ${expected.join(', ')} (${why})`, () => {
      assert.deepEqual(summarize(resolveRecipient(config, address)), expected);
    });
  }

  it('keeps the plus tag on the decision', () => {
    const [d] = resolveRecipient(config, 'alice+news@example.com');
    assert.equal(d?.plusTag, 'news');
    const [auto] = resolveRecipient(config, 'anyone+news@example.org');
    assert.equal(auto?.plusTag, 'news');
  });

  it('in a *@domain mailbox domain, a listed plus-address stays a mailbox of its own', () => {
    const c = parseConfig({ domains: ['example.org'], mailboxes: ['*@example.org', 'team+ops@example.org'] });
    assert.deepEqual(summarize(resolveRecipient(c, 'team+ops@example.org')), [
      'deliver team+ops@example.org',
    ]);
    assert.deepEqual(summarize(resolveRecipient(c, 'team+dev@example.org')), ['deliver team@example.org']);
    // Plus-addressing off: every address is its own mailbox.
    const off = parseConfig({
      domains: ['example.org'],
      mailboxes: ['*@example.org'],
      plusAddressing: { enabled: false },
    });
    assert.deepEqual(summarize(resolveRecipient(off, 'team+dev@example.org')), [
      'deliver team+dev@example.org',
    ]);
  });

  it('prefers an exact route for the full plus-address over the stripped one', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com', 'lists@example.com'],
      routes: [{ match: 'alice+lists@example.com', action: 'deliver', to: ['lists@example.com'] }],
    });
    assert.deepEqual(summarize(resolveRecipient(c, 'alice+lists@example.com')), [
      'deliver lists@example.com',
    ]);
    assert.deepEqual(summarize(resolveRecipient(c, 'alice+other@example.com')), [
      'deliver alice@example.com',
    ]);
  });

  it('does not strip tags when plus-addressing is off', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      plusAddressing: { enabled: false },
    });
    assert.deepEqual(summarize(resolveRecipient(c, 'alice+x@example.com')), ['reject 550']);
  });

  it('answers unknown recipients with 550 5.1.1 when there is no catch-all', () => {
    const c = parseConfig({ domains: ['example.com'], mailboxes: ['alice@example.com'] });
    const [d] = resolveRecipient(c, 'nobody@example.com');
    assert.equal(d?.kind, 'reject');
    assert.ok(
      d?.kind === 'reject' &&
        d.code === 550 &&
        d.message.startsWith('5.1.1') &&
        d.reason === 'unknown-recipient',
    );
  });

  it('cuts run-time alias loops made by regex targets', () => {
    const c = parseConfig({
      domains: ['example.com'],
      routes: [{ match: '/^(.+)@example\\.com$/', action: 'deliver', to: ['x$1@example.com'] }],
    });
    const ds = resolveRecipient(c, 'a@example.com');
    assert.deepEqual(summarize(ds), ['reject 554']);
  });
});

describe('route: a whole envelope', () => {
  it('delivers once per mailbox even when several recipients lead there', () => {
    const ds = route(config, {
      mailFrom: 'x@sender.test',
      recipients: [
        'alice@example.com',
        'postmaster@example.com',
        'alice+tag@example.com',
        'everyone@example.com',
        'ALICE@example.com',
      ],
    });
    assert.deepEqual(summarize(ds), [
      'deliver alice@example.com',
      'deliver bob@example.com',
      'deliver archive@example.com',
    ]);
  });

  it('returns decisions for every recipient, accepted or not', () => {
    const ds = route(config, {
      mailFrom: '',
      recipients: [
        'alice@example.com',
        'old@example.com',
        'noreply@example.com',
        'boss@example.com',
        'x@elsewhere.net',
      ],
    });
    assert.deepEqual(summarize(ds), [
      'deliver alice@example.com',
      'reject 551',
      'drop',
      'forward boss.private@gmail.test',
      'reject 550',
    ]);
    assert.deepEqual(
      ds.map((d) => d.recipient),
      ['alice@example.com', 'old@example.com', 'noreply@example.com', 'boss@example.com', 'x@elsewhere.net'],
    );
  });

  it('forwards once per destination', () => {
    const c = parseConfig({
      domains: ['example.com'],
      routes: [
        { match: 'a@example.com', action: 'forward', to: ['me@gmail.test'] },
        { match: 'b@example.com', action: 'forward', to: ['me@gmail.test', 'you@gmail.test'] },
      ],
    });
    const ds = route(c, { mailFrom: '', recipients: ['a@example.com', 'b@example.com'] });
    assert.deepEqual(summarize(ds), ['forward me@gmail.test', 'forward you@gmail.test']);
  });
});

describe('verdict policies', () => {
  const verdicts = (over: Partial<Verdicts>): Verdicts => ({
    spam: 'PASS',
    virus: 'PASS',
    spf: 'PASS',
    dkim: 'PASS',
    dmarc: 'PASS',
    ...over,
  });

  it('accepts when nothing fails, whatever the policies', () => {
    assert.deepEqual(
      applyPolicies(config.policies, verdicts({ spf: 'GRAY', dkim: 'PROCESSING_FAILED' })).action,
      'accept',
    );
    assert.deepEqual(applyPolicies(config.policies, UNCHECKED_VERDICTS).action, 'accept');
  });

  const cases: [Partial<Verdicts>, string, string[]][] = [
    [{ spam: 'FAIL' }, 'tag', ['deliver alice@example.com']],
    [{ virus: 'FAIL' }, 'quarantine', ['quarantine quarantine@example.com']],
    [{ spf: 'FAIL' }, 'accept', ['deliver alice@example.com']],
    [{ dmarc: 'FAIL', dmarcPolicy: 'reject' }, 'tag', ['deliver alice@example.com']],
    [{ spam: 'FAIL', virus: 'FAIL' }, 'quarantine', ['quarantine quarantine@example.com']],
  ];
  for (const [over, action, expected] of cases) {
    it(`${JSON.stringify(over)} with default policies -> ${action}`, () => {
      assert.equal(applyPolicies(config.policies, verdicts(over)).action, action);
      assert.deepEqual(summarize(resolveRecipient(config, 'alice@example.com', verdicts(over))), expected);
    });
  }

  it('records tag verdicts on the deliver decision', () => {
    const [d] = resolveRecipient(config, 'alice@example.com', verdicts({ spam: 'FAIL', dmarc: 'FAIL' }));
    assert.ok(d?.kind === 'deliver');
    assert.deepEqual(d.tags, ['spam', 'dmarc']);
  });

  it('lets a route override the top-level policy (reject spam for strict@)', () => {
    const [d] = resolveRecipient(config, 'strict@example.com', verdicts({ spam: 'FAIL' }));
    assert.ok(d?.kind === 'reject' && d.reason === 'verdict' && d.code === 550);
    assert.match(d.message, /spam/);
  });

  it('quarantines once even when several mailboxes would receive', () => {
    const ds = route(
      config,
      { mailFrom: '', recipients: ['alice@example.com', 'bob@example.com'] },
      verdicts({ virus: 'FAIL' }),
    );
    assert.deepEqual(summarize(ds), ['quarantine quarantine@example.com']);
  });
});

describe('verdict policies through aliases', () => {
  const aliased = parseConfig({
    domains: ['example.com'],
    mailboxes: ['alice@example.com'],
    routes: [
      {
        match: 'fwd@example.com',
        action: 'forward',
        to: ['me@elsewhere.test'],
        policies: { spam: 'reject' },
      },
      { match: 'alias@example.com', action: 'deliver', to: ['fwd@example.com', 'alice@example.com'] },
      {
        match: 'lax@example.com',
        action: 'deliver',
        to: ['alice@example.com'],
        policies: { virus: 'accept' },
      },
    ],
  });
  const spam: Verdicts = { ...UNCHECKED_VERDICTS, spam: 'FAIL' };

  it('a route reached through an alias keeps its own stricter policies (spam to alias@ is not forwarded by fwd@)', () => {
    assert.deepEqual(summarize(resolveRecipient(aliased, 'fwd@example.com', spam)), ['reject 550']);
    assert.deepEqual(summarize(resolveRecipient(aliased, 'alias@example.com', spam)), [
      'reject 550',
      'deliver alice@example.com',
    ]);
  });

  it("the first route's own policies still decide for what it delivers (lax@ accepts viruses for alice)", () => {
    const virus: Verdicts = { ...UNCHECKED_VERDICTS, virus: 'FAIL' };
    assert.deepEqual(summarize(resolveRecipient(aliased, 'lax@example.com', virus)), [
      'deliver alice@example.com',
    ]);
    assert.deepEqual(summarize(resolveRecipient(aliased, 'alice@example.com', virus)), [
      'quarantine quarantine@example.com',
    ]);
  });
});

describe('aliases to +tag addresses', () => {
  it("deliver with the target's tag (info@ -> alice+info@), or else the recipient's own", () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [
        { match: 'info@example.com', action: 'deliver', to: ['alice+info@example.com'] },
        { match: 'team@example.com', action: 'deliver', to: ['alice@example.com'] },
      ],
    });
    const tagOf = (address: string) =>
      resolveRecipient(c, address).map((d) =>
        d.kind === 'deliver' ? `${d.mailbox} ${d.plusTag ?? '-'}` : d.kind,
      );
    assert.deepEqual(tagOf('info@example.com'), ['alice@example.com info']);
    assert.deepEqual(tagOf('team+news@example.com'), ['alice@example.com news']);
    assert.deepEqual(tagOf('alice+x@example.com'), ['alice@example.com x']);
    assert.deepEqual(tagOf('team@example.com'), ['alice@example.com -']);
  });

  it('keep the tag when the base address has a route of its own (alice@ -> [alice@, archive@], team@ -> [bob@, alice@])', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com', 'archive@example.com', 'bob@example.com'],
      routes: [
        { match: 'info@example.com', action: 'deliver', to: ['alice+info@example.com'] },
        { match: 'alice@example.com', action: 'deliver', to: ['alice@example.com', 'archive@example.com'] },
        { match: 'sales@example.com', action: 'deliver', to: ['team+sales@example.com'] },
        { match: 'team@example.com', action: 'deliver', to: ['bob@example.com', 'alice+lead@example.com'] },
      ],
    });
    const tagOf = (address: string) =>
      resolveRecipient(c, address).map((d) =>
        d.kind === 'deliver' ? `${d.mailbox} ${d.plusTag ?? '-'}` : d.kind,
      );
    assert.deepEqual(tagOf('info@example.com'), ['alice@example.com info', 'archive@example.com info']);
    assert.deepEqual(tagOf('sales@example.com'), [
      'bob@example.com sales',
      'alice@example.com lead',
      'archive@example.com lead',
    ]);
  });
});

describe('acceptsRecipient (RCPT TO)', () => {
  it('accepts routed recipients and refuses the rest with their reply', () => {
    assert.deepEqual(acceptsRecipient(config, 'alice@example.com'), { accept: true });
    assert.deepEqual(acceptsRecipient(config, 'noreply@example.com'), { accept: true });
    assert.deepEqual(acceptsRecipient(config, 'old@example.com'), {
      accept: false,
      code: 551,
      message: '5.1.6 User has moved',
    });
    const r = acceptsRecipient(config, 'x@elsewhere.net');
    assert.ok(!r.accept && r.code === 550 && r.message.includes('Relaying denied'));
  });

  it('an unlisted quarantine mailbox is reached by a route that names it, never by a sender spelling it through $1', () => {
    const teams = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [
        { match: 'held@example.com', action: 'deliver', to: ['quarantine@example.com'] },
        { match: '/^(.+)-team@example\\.com$/', action: 'deliver', to: ['$1@example.com'] },
      ],
    });
    assert.deepEqual(summarize(resolveRecipient(teams, 'alice-team@example.com')), [
      'deliver alice@example.com',
    ]);
    assert.deepEqual(summarize(resolveRecipient(teams, 'held@example.com')), [
      'deliver quarantine@example.com',
    ]);
    for (const address of ['quarantine@example.com', 'quarantine-team@example.com']) {
      const r = acceptsRecipient(teams, address);
      assert.ok(!r.accept && r.code === 550, `${address}: ${JSON.stringify(r)}`);
    }
  });
});

describe('regex routes in bounded time (a sender chooses the address)', () => {
  // A common "validation" pattern: nested repetition, which a backtracking engine takes exponential
  // time to refuse on a long run of letters that cannot end in a match.
  const redos = parseConfig({
    domains: ['example.com'],
    mailboxes: ['alice@example.com', 'bob@example.com'],
    routes: [
      { match: '/^([a-z0-9]+[._-]?)+@example\\.com$/', action: 'deliver', to: ['alice@example.com'] },
      // Upper-case letters (a pattern that needs `i`) and a back-reference: the time-limited path.
      { match: '/^(X+x+)+\\1=@example\\.com$/', action: 'deliver', to: ['bob@example.com'] },
    ],
  });
  const hostile = `${'a'.repeat(40)}!@example.com`;

  it('a nested-repetition pattern runs in linear time: the hostile address is refused at once, others match', {
    timeout: 10_000,
  }, () => {
    const [first] = redos.routes;
    assert.ok(first?.match.kind === 'regex' && first.match.regex.linear);
    assert.equal(acceptsRecipient(redos, hostile).accept, false);
    assert.deepEqual(summarize(resolveRecipient(redos, 'john.smith@example.com')), [
      'deliver alice@example.com',
    ]);
    assert.deepEqual(summarize(resolveRecipient(redos, 'John.Smith@Example.COM')), [
      'deliver alice@example.com',
    ]);
  });

  it('a pattern the linear engine cannot run matches with `i` under a time limit; running out is no match, said once', {
    timeout: 10_000,
  }, async () => {
    const [, second] = redos.routes;
    assert.ok(second?.match.kind === 'regex' && !second.match.regex.linear);
    assert.deepEqual(summarize(resolveRecipient(redos, 'xxxx=@example.com')), ['deliver bob@example.com']);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const slow = `${'xx'.repeat(20)}!@example.com`;
      assert.equal(acceptsRecipient(redos, slow).accept, false);
      assert.equal(acceptsRecipient(redos, `y${slow}`).accept, false);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(
      warnings[0] ?? '',
      /^MailRelayRegexWarning: route \/\^\(X\+x\+\)\+\\1=@example\\\.com\$\/: matching "x+/,
    );
  });

  it('a match that had no processor time through the limit (a busy or stopped process) is run again, not taken for no match', async () => {
    // A child matches an address against a pattern of the time-limited path, over and over, while
    // this process stops it (SIGSTOP) for longer than the limit, eight times: each stop lands in a
    // match, whose watchdog (wall time) fires on the SIGCONT although the match took microseconds.
    const script = `
      import { RouteRegex } from './functions/core/route-regex.ts';
      const re = new RouteRegex('^(ab+)-\\\\1@example\\\\.com$');
      if (re.linear) throw new Error('meant for the time-limited path');
      const warnings = [];
      process.on('warning', (w) => warnings.push(w.message));
      let runs = 0, misses = 0;
      process.stdout.write('ready\\n');
      for (const end = Date.now() + 6000; Date.now() < end; runs++) {
        if (re.exec('abbb-abbb@example.com') === null) misses++;
      }
      await new Promise((r) => setImmediate(r));
      process.stdout.write(JSON.stringify({ runs, misses, warnings }) + '\\n');
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: PROJECT_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const exited = once(child, 'exit');
    await until('the child to start matching', () => (out.startsWith('ready\n') ? true : undefined), 30_000);
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    for (let i = 0; i < 8; i++) {
      await sleep(100);
      child.kill('SIGSTOP');
      await sleep(REGEX_TIME_LIMIT_MS + 150);
      child.kill('SIGCONT');
    }
    const [code] = await exited;
    assert.equal(code, 0);
    const result = JSON.parse(out.slice('ready\n'.length)) as {
      runs: number;
      misses: number;
      warnings: string[];
    };
    assert.ok(result.runs > 100, JSON.stringify(result));
    assert.deepEqual({ misses: result.misses, warnings: result.warnings }, { misses: 0, warnings: [] });
  });

  it('groups for $n are those of the usual engine, also where the linear-time one would fill them otherwise', () => {
    const c = parseConfig({
      domains: ['example.test'],
      mailboxes: ['bob@example.test'],
      routes: [
        { match: '/^(?:(dev)*|(ops)+)?-?(.*)@example\\.test$/', action: 'deliver', to: ['$3@example.test'] },
      ],
    });
    const [r] = c.routes;
    assert.ok(r?.match.kind === 'regex' && r.match.regex.linear);
    for (const address of ['opsops-bob@example.test', 'devdev-bob@example.test', 'bob@example.test']) {
      assert.deepEqual(summarize(resolveRecipient(c, address)), ['deliver bob@example.test'], address);
    }
  });

  it("after one address ran out on a guarded route, other addresses still get the usual engine's groups", {
    timeout: 10_000,
  }, async () => {
    const c = parseConfig({
      domains: ['example.com', 'slow.test'],
      mailboxes: ['b@example.com', 'archive@example.com'],
      routes: [
        {
          match: '/^(?:(x+x+)+y|(?:(dev)*|(ops)+)?-?(.*))@slow\\.test$/',
          action: 'deliver',
          to: ['$4@example.com'],
        },
        { match: '*@example.com', action: 'deliver', to: ['archive@example.com'] },
      ],
    });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      assert.deepEqual(summarize(resolveRecipient(c, 'opsops-b@slow.test')), ['deliver b@example.com']);
      // Matches (the second branch), but the first branch backtracks without bound: the groups run out.
      const hostile = `${'x'.repeat(30)}!@slow.test`;
      assert.deepEqual(summarize(resolveRecipient(c, hostile)), ['deliver archive@example.com']);
      assert.deepEqual(summarize(resolveRecipient(c, 'opsops-b@slow.test')), ['deliver b@example.com']);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings, ['MailRelayRegexWarning']);
  });

  it('the literal text every match begins and ends with, read conservatively', () => {
    const cases: [string, string, string][] = [
      ['^slow-([A-Za-z0-9]+[._-]?)+@example\\.test$', 'slow-', '@example.test'],
      ['^Sales-\\d+@EX\\.com$', 'sales-', '@ex.com'],
      ['^ab?c$', 'a', 'c'],
      ['^a{2}b$', '', 'b'],
      ['^(.+)-team@example\\.test$', '', '-team@example.test'],
      ['^\\w+@x\\.y$', '', '@x.y'],
      ['^a\\$', 'a', ''],
      ['^a\\\\$', 'a', ''],
      ['^(X+x+)+\\1=@example\\.com$', '', '@example.com'],
      ['\\\\d$', '', 'd'],
      ['ops@', '', ''],
      ['^a@x$|^b@x$', '', ''],
      ['^[a-z]+@x\\.y$', '', '@x.y'],
    ];
    for (const [pattern, prefix, suffix] of cases) {
      assert.deepEqual(literalEnds(pattern), { prefix, suffix }, pattern);
    }
  });

  it('telling addresses apart by those ends never changes what a pattern matches', () => {
    // Each pattern with addresses it matches; around them, near misses made by changing a character or two.
    // (The check is for addresses as routing gives them: lower-cased.)
    const patterns: [string, string[]][] = [
      ['^slow-([A-Za-z0-9]+[._-]?)+@example\\.test$', ['slow-ab.c@example.test', 'slow-x@example.test']],
      ['^Sales-\\d+@EX\\.com$', ['sales-12@ex.com']],
      ['^aB?c$', ['ac', 'abc']],
      ['^A{2}b$', ['aab']],
      ['^(.+)-Team@example\\.test$', ['ops-team@example.test']],
      ['^x(.*)@Example\\.test$', ['x@example.test', 'xalice@example.test']],
      ['^T\\.(\\w+)\\+\\-x@y\\.z$', ['t.ab+-x@y.z']],
    ];
    const alphabet = 'abcxt12-_.+@ez';
    let seed = 7;
    const random = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 16) % n;
    };
    const mutate = (address: string) => {
      let out = address;
      for (let k = 1 + random(2); k > 0; k--) {
        const at = random(out.length + 1);
        const ch = alphabet[random(alphabet.length)] ?? 'a';
        const how = random(3);
        out = out.slice(0, at) + (how === 1 ? '' : ch) + out.slice(how === 0 ? at : at + 1);
      }
      return out;
    };
    let matched = 0;
    let missed = 0;
    for (const [pattern, examples] of patterns) {
      const plain = new RegExp(pattern, 'i');
      const route = new RouteRegex(pattern);
      // Upper case keeps each off the linear-time guard: the time-limited path is the one filtered.
      assert.equal(route.linear, false, pattern);
      for (const example of examples) {
        for (const address of [example, ...Array.from({ length: 400 }, () => mutate(example))]) {
          const expected = plain.exec(address);
          if (expected) matched++;
          else missed++;
          assert.deepEqual(
            route.exec(address)?.[0] ?? null,
            expected?.[0] ?? null,
            `${pattern} on ${address}`,
          );
        }
      }
    }
    assert.ok(
      matched > 100 && missed > 1000,
      `${matched} matched, ${missed} did not: the test would prove little`,
    );
  });

  it('escapes and ranges that can stand for upper-case letters keep `i` (the time-limited path)', () => {
    assert.equal(caseFree('^([a-z0-9]+[._-]?)+@example\\.com$'), true);
    assert.equal(caseFree('^[^a-z]?[0-9a-f-]+\\.x$'), true);
    for (const p of [
      '^\\x41lice@',
      '^\\u0041lice@',
      '^\\101lice@',
      '^[0-9+-_]+@',
      '^[A-z]@',
      '^Alice@',
      '^σ@x$',
    ]) {
      assert.equal(caseFree(p), false, p);
    }
    const c = parseConfig({
      domains: ['example.test'],
      mailboxes: ['alice@example.test'],
      routes: [
        { match: '/^\\x41li[+-_]e-(.*)@example\\.test$/', action: 'deliver', to: ['alice@example.test'] },
      ],
    });
    assert.deepEqual(summarize(resolveRecipient(c, 'alice-x@example.test')), ['deliver alice@example.test']);
  });
});

describe('verdict policies: several failures at once', () => {
  const PASS: Verdicts = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
  const policies = {
    spam: 'quarantine',
    virus: 'reject',
    spf: 'tag',
    dkim: 'reject',
    dmarc: 'quarantine',
  } as const;
  const c = parseConfig({ domains: ['example.com'], mailboxes: ['alice@example.com'], policies });

  it('the strictest action wins whatever the order, and the reply names every verdict that caused it', () => {
    const all: Verdicts = { spam: 'FAIL', virus: 'FAIL', spf: 'FAIL', dkim: 'FAIL', dmarc: 'FAIL' };
    const applied = applyPolicies(policies, all);
    assert.equal(applied.action, 'reject');
    assert.deepEqual(applied.failed, ['virus', 'dkim']);
    const [d] = resolveRecipient(c, 'alice@example.com', all);
    assert.ok(d?.kind === 'reject' && d.reason === 'verdict', JSON.stringify(d));
    assert.equal(d.message, '5.7.1 Message rejected by policy (virus, dkim failed)');
    // A quarantine earlier in the list does not hold back a later reject.
    assert.equal(applyPolicies(policies, { ...PASS, spam: 'FAIL', dkim: 'FAIL' }).action, 'reject');
  });

  it('quarantined mail lists as reasons only the verdicts whose policy quarantines', () => {
    const [d] = resolveRecipient(c, 'alice@example.com', {
      ...PASS,
      spam: 'FAIL',
      spf: 'FAIL',
      dmarc: 'FAIL',
    });
    assert.ok(d?.kind === 'quarantine', JSON.stringify(d));
    assert.deepEqual(d.reasons, ['spam', 'dmarc']);
  });

  it('reads verdict statuses in any case ("fail" is FAIL)', () => {
    assert.deepEqual(summarize(resolveRecipient(c, 'alice@example.com', { ...PASS, spam: 'fail' })), [
      'quarantine quarantine@example.com',
    ]);
    assert.equal(failsDmarcReject({ ...PASS, dmarc: 'fail', dmarcPolicy: 'reject' }), true);
  });
});

describe('verdict policies along alias chains', () => {
  const chain = parseConfig({
    domains: ['example.com'],
    mailboxes: ['alice@example.com'],
    routes: [
      {
        match: 'fwd@example.com',
        action: 'forward',
        to: ['me@elsewhere.test'],
        policies: { spam: 'reject' },
      },
      {
        match: 'middle@example.com',
        action: 'deliver',
        to: ['fwd@example.com'],
        policies: { virus: 'reject' },
      },
      { match: 'outer@example.com', action: 'deliver', to: ['middle@example.com'] },
      {
        match: 'strict@example.com',
        action: 'deliver',
        to: ['lax@example.com'],
        policies: { spam: 'reject' },
      },
      {
        match: 'lax@example.com',
        action: 'forward',
        to: ['lax@elsewhere.test'],
        policies: { spam: 'accept' },
      },
    ],
  });
  const spam: Verdicts = { ...UNCHECKED_VERDICTS, spam: 'FAIL' };

  it('a policy two aliases deep still applies (spam to outer@ -> middle@ -> fwd@ is refused as fwd@ refuses it)', () => {
    assert.deepEqual(summarize(resolveRecipient(chain, 'outer@example.com', spam)), ['reject 550']);
    assert.deepEqual(summarize(resolveRecipient(chain, 'outer@example.com', UNCHECKED_VERDICTS)), [
      'forward me@elsewhere.test',
    ]);
  });

  it("a laxer route behind an alias does not loosen the alias's own policy", () => {
    assert.deepEqual(summarize(resolveRecipient(chain, 'strict@example.com', spam)), ['reject 550']);
    assert.deepEqual(summarize(resolveRecipient(chain, 'lax@example.com', spam)), [
      'forward lax@elsewhere.test',
    ]);
  });
});

describe('catch-alls and $n targets', () => {
  it('a catch-all takes the mail of its own domain only', () => {
    const c = parseConfig({
      domains: ['a.test', 'b.test', 'c.test'],
      mailboxes: ['inbox@a.test', 'inbox@b.test'],
      routes: [
        { match: '*@a.test', action: 'deliver', to: ['inbox@a.test'] },
        { match: '*@b.test', action: 'deliver', to: ['inbox@b.test'] },
      ],
    });
    assert.deepEqual(summarize(resolveRecipient(c, 'x@b.test')), ['deliver inbox@b.test']);
    assert.deepEqual(summarize(resolveRecipient(c, 'x@c.test')), ['reject 550']);
  });

  it('$0 in a catch-all target is the whole address, and every $n in a target is replaced', () => {
    const c = parseConfig({
      domains: ['example.com', 'loop.test'],
      routes: [
        { match: '*@loop.test', action: 'forward', to: ['$0'] },
        { match: '/^([a-z]+)\\.([a-z]+)@example\\.com$/', action: 'forward', to: ['$2.$1@elsewhere.test'] },
      ],
    });
    assert.deepEqual(summarize(resolveRecipient(c, 'Anyone@loop.test')), ['forward anyone@loop.test']);
    assert.deepEqual(summarize(resolveRecipient(c, 'john.smith@example.com')), [
      'forward smith.john@elsewhere.test',
    ]);
  });

  it('a $n that makes no address refuses that target with 550 5.1.1, for forward and deliver, never reaching the catch-all', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com', 'archive@example.com'],
      routes: [
        { match: '/^fw-(x*)@example\\.com$/', action: 'forward', to: ['$1@elsewhere.test'] },
        { match: '/^to-(x*)@example\\.com$/', action: 'deliver', to: ['$1@example.com'] },
        { match: '*@example.com', action: 'deliver', to: ['archive@example.com'] },
      ],
    });
    for (const address of ['fw-@example.com', 'to-@example.com']) {
      const ds = resolveRecipient(c, address);
      assert.deepEqual(summarize(ds), ['reject 550'], address);
      assert.ok(ds[0]?.kind === 'reject' && ds[0].message.startsWith('5.1.1'), JSON.stringify(ds));
    }
  });

  it('a regex route that leads an address back to itself opens no mailbox: it is a loop', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [{ match: '/^(.+)@example\\.com$/', action: 'deliver', to: ['$1@example.com'] }],
    });
    assert.deepEqual(summarize(resolveRecipient(c, 'alice@example.com')), ['deliver alice@example.com']);
    assert.deepEqual(summarize(resolveRecipient(c, 'nobody@example.com')), ['reject 554']);
  });
});

describe('which route decided (what `mail-relay route` prints)', () => {
  it("an alias's deliveries carry its index; what a target's own route decides keeps that route's", () => {
    const indexed = resolveRecipient(config, 'team@example.com').map(
      (d) => `${summarizeOne(d)} #${d.routeIndex}`,
    );
    assert.deepEqual(indexed, [
      'deliver alice@example.com #1',
      'deliver bob@example.com #6',
      'deliver archive@example.com #6',
    ]);
  });
});

describe('route and RCPT: recipients named twice, partly refused, unqualified', () => {
  it('a recipient named twice (in any case) is answered once, refused ones too', () => {
    const ds = route(config, {
      mailFrom: '',
      recipients: ['old@example.com', 'OLD@example.com', 'noreply@example.com', 'noreply@example.com'],
    });
    assert.deepEqual(summarize(ds), ['reject 551', 'drop']);
  });

  it('a recipient is accepted at RCPT when any of its targets takes the mail', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [
        { match: 'old@example.com', action: 'reject', code: 551, message: '5.1.6 User has moved' },
        { match: 'legacy@example.com', action: 'deliver', to: ['old@example.com', 'alice@example.com'] },
      ],
    });
    assert.deepEqual(acceptsRecipient(c, 'legacy@example.com'), { accept: true });
  });

  it('the 553 for an address no mailbox can have says whether it is a quoted local part or bad syntax', () => {
    const text = (address: string) => {
      const r = acceptsRecipient(config, address);
      return r.accept ? 'accepted' : `${r.code} ${r.message}`;
    };
    const quoted = '553 5.1.3 Recipient address rejected: a quoted local part is not a mailbox here';
    const syntax = '553 5.1.3 Bad recipient address syntax';
    assert.equal(text('"john doe"@example.com'), quoted);
    assert.equal(text('""@example.com'), quoted);
    assert.equal(text('john"doe"@example.com'), syntax);
    assert.equal(text('"@example.com'), syntax);
    // A quote inside unescaped is no quoted-string; an escaped one is.
    assert.equal(text('"x"y"@example.com'), syntax);
    assert.equal(text('"x\\"y"@example.com'), quoted);
  });

  it("RCPT TO:<Postmaster> (any case) names the first domain's postmaster; other addresses stay as they are", () => {
    assert.equal(qualifyRecipient(config, 'PostMaster'), 'postmaster@example.com');
    assert.equal(qualifyRecipient(config, 'postmaster@example.org'), 'postmaster@example.org');
    assert.equal(qualifyRecipient(config, 'alice'), 'alice');
  });
});
