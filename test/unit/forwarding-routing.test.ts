/**
 * Verdict policies on forward routes, and the `relay` configuration: what a forwarding user
 * receives (or does not) for spam, viruses and DMARC failures.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_MAX_SEND_BYTES, parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { ConfigError } from '../../functions/core/errors.ts';
import { type Decision, failsDmarcReject, route, type Verdicts } from '../../functions/core/routing.ts';

const PASS: Verdicts = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };

const RAW: RawConfig = {
  domains: ['example.com'],
  mailboxes: ['alice@example.com'],
  routes: [
    { match: 'boss@example.com', action: 'forward', to: ['boss.private@gmail.test'] },
    {
      match: 'lenient@example.com',
      action: 'forward',
      to: ['lenient@gmail.test'],
      forwardDmarcReject: true,
      policies: { spam: 'accept' },
    },
    {
      match: 'strict@example.com',
      action: 'forward',
      to: ['strict@gmail.test'],
      policies: { spam: 'reject' },
    },
    { match: 'both@example.com', action: 'deliver', to: ['alice@example.com', 'boss@example.com'] },
  ],
  policies: { spam: 'tag', virus: 'quarantine', spf: 'accept', dkim: 'accept', dmarc: 'tag' },
};
const config = parseConfig(RAW);

function decide(recipient: string, verdicts: Verdicts): string[] {
  return route(config, { mailFrom: 's@sender.test', recipients: [recipient] }, verdicts).map(
    (d: Decision) => {
      if (d.kind === 'forward') return `forward ${d.to}${d.tags.length ? ` tags=${d.tags.join(',')}` : ''}`;
      if (d.kind === 'quarantine') return `quarantine ${d.mailbox} (${d.reasons.join(',')})`;
      if (d.kind === 'deliver')
        return `deliver ${d.mailbox}${d.tags.length ? ` tags=${d.tags.join(',')}` : ''}`;
      if (d.kind === 'reject') return `reject ${d.code}`;
      return d.kind;
    },
  );
}

describe('forward routes under the verdict policies', () => {
  const table: [string, string, Verdicts, string[]][] = [
    ['clean mail is forwarded untagged', 'boss@example.com', PASS, ['forward boss.private@gmail.test']],
    [
      'spam with policy tag: forwarded, tagged',
      'boss@example.com',
      { ...PASS, spam: 'FAIL' },
      ['forward boss.private@gmail.test tags=spam'],
    ],
    [
      'a virus with policy quarantine: kept in quarantine, not forwarded',
      'boss@example.com',
      { ...PASS, virus: 'FAIL' },
      ['quarantine quarantine@example.com (virus)'],
    ],
    [
      'spam on a route whose policy is reject',
      'strict@example.com',
      { ...PASS, spam: 'FAIL' },
      ['reject 550'],
    ],
    [
      'spam on a route whose policy is accept: forwarded untagged',
      'lenient@example.com',
      { ...PASS, spam: 'FAIL' },
      ['forward lenient@gmail.test'],
    ],
    [
      'DMARC fail, sender p=reject: never forwarded by default',
      'boss@example.com',
      { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'REJECT' },
      ['quarantine quarantine@example.com (dmarc)'],
    ],
    [
      'DMARC fail, sender p=reject (lower case): same',
      'boss@example.com',
      { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'reject' },
      ['quarantine quarantine@example.com (dmarc)'],
    ],
    [
      'DMARC fail, sender p=reject, route opted in: forwarded with the dmarc tag',
      'lenient@example.com',
      { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'REJECT' },
      ['forward lenient@gmail.test tags=dmarc'],
    ],
    [
      'DMARC fail, sender p=quarantine: the dmarc policy (tag) applies',
      'boss@example.com',
      { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'QUARANTINE' },
      ['forward boss.private@gmail.test tags=dmarc'],
    ],
    [
      'DMARC p=reject does not stop delivery to a mailbox, only the forward',
      'both@example.com',
      { ...PASS, dmarc: 'FAIL', dmarcPolicy: 'REJECT' },
      ['deliver alice@example.com tags=dmarc', 'quarantine quarantine@example.com (dmarc)'],
    ],
    [
      'DMARC p=reject on a route that rejects spam: the stronger reject wins',
      'strict@example.com',
      { ...PASS, spam: 'FAIL', dmarc: 'FAIL', dmarcPolicy: 'REJECT' },
      ['reject 550'],
    ],
  ];
  for (const [title, recipient, verdicts, expected] of table) {
    it(title, () => assert.deepEqual(decide(recipient, verdicts), expected));
  }

  it('failsDmarcReject needs both the FAIL and the reject policy', () => {
    assert.equal(failsDmarcReject({ ...PASS, dmarc: 'FAIL', dmarcPolicy: 'REJECT' }), true);
    assert.equal(failsDmarcReject({ ...PASS, dmarc: 'PASS', dmarcPolicy: 'REJECT' }), false);
    assert.equal(failsDmarcReject({ ...PASS, dmarc: 'FAIL' }), false);
  });
});

describe('relay configuration', () => {
  it('defaults: forwarder@<first domain>, SES limit, 7-day links, notices to the quarantine mailbox', () => {
    assert.deepEqual(config.relay, {
      smtp: undefined,
      fromAddress: 'forwarder@example.com',
      maxSendBytes: DEFAULT_MAX_SEND_BYTES,
      linkExpirySeconds: 7 * 24 * 3600,
      notifyMailbox: 'quarantine@example.com',
      loopMarker: 'forwarder@example.com',
    });
  });

  it('takes every setting, and aws.forwardFrom as the from address when relay has none', () => {
    const c = parseConfig({
      ...RAW,
      relay: {
        smtp: 'smtp://127.0.0.1:2526',
        fromAddress: 'Relay@Example.com',
        maxSendBytes: 4096,
        linkExpirySeconds: 3600,
        notify: { mailbox: 'alice@example.com' },
      },
    });
    assert.equal(c.relay.smtp, 'smtp://127.0.0.1:2526');
    assert.equal(c.relay.fromAddress, 'relay@example.com');
    assert.equal(c.relay.maxSendBytes, 4096);
    assert.equal(c.relay.linkExpirySeconds, 3600);
    assert.equal(c.relay.notifyMailbox, 'alice@example.com');
    assert.equal(
      parseConfig({ ...RAW, aws: { forwardFrom: 'ses@example.com' } }).relay.fromAddress,
      'ses@example.com',
    );
  });

  it('refuses bad values, naming each path', () => {
    const issuesOf = (relay: unknown, extra: Partial<RawConfig> = {}): readonly string[] => {
      try {
        parseConfig({ ...RAW, ...extra, relay });
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err.issues;
      }
      assert.fail('accepted');
    };
    assert.deepEqual(issuesOf({ smtp: 'http://host' }), [
      'relay.smtp: must be an SMTP URL such as smtp://127.0.0.1:2526 or smtps://user:pass@smtp.example.com:465',
    ]);
    assert.deepEqual(issuesOf({ maxSendBytes: 50_000_000 }).length, 1);
    assert.match(issuesOf({ maxSendBytes: 50_000_000 })[0] ?? '', /^relay\.maxSendBytes: /);
    assert.match(issuesOf({ linkExpirySeconds: 8 * 24 * 3600 })[0] ?? '', /^relay\.linkExpirySeconds: /);
    assert.deepEqual(issuesOf({ fromAddress: 'me@gmail.test' }), [
      'relay.fromAddress: "me@gmail.test" is not in one of the configured domains (SES sends only from verified identities)',
    ]);
    assert.deepEqual(issuesOf({ notify: { mailbox: 'ops@elsewhere.test' } }), [
      'relay.notify.mailbox: "ops@elsewhere.test" is not in one of the configured domains',
    ]);
    assert.match(issuesOf({ bogus: 1 })[0] ?? '', /^relay: /);
    assert.deepEqual(issuesOf({ fromAddress: 'a@example.com' }, { aws: { forwardFrom: 'b@example.com' } }), [
      'relay.fromAddress: "a@example.com" differs from aws.forwardFrom "b@example.com"; set one of them',
    ]);
  });
});
