/**
 * Receipt rule recipients and their split into rules of at most 100, and the synth-time refusals
 * (a bad configuration, a region without SES receiving), each naming what is wrong.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { App, Stack } from 'aws-cdk-lib';
import { parseConfig } from '../../functions/core/config.ts';
import { ConfigError } from '../../functions/core/errors.ts';
import { loadStackConfig } from '../../lib/config-source.ts';
import { MailRelay } from '../../lib/mail-relay.ts';
import { MAX_RECIPIENTS_PER_RULE, receiptRecipients, splitIntoRules } from '../../lib/recipients.ts';
import { SES_RECEIVING_REGIONS } from '../../lib/ses-regions.ts';
import {
  exampleConfig,
  manyRecipientsConfig,
  resourcesOfType,
  synthStack,
  TEST_ENV,
} from './infra-helpers.ts';

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('accepted');
}

describe('receipt rule recipients', () => {
  it('lists a whole domain when any address there may be accepted', () => {
    const cases: [string, Record<string, unknown>][] = [
      ['plus-addressing (SES matches exact addresses only)', { mailboxes: ['a@example.com'] }],
      ['a *@domain mailbox', { mailboxes: ['*@example.com'], plusAddressing: { enabled: false } }],
      [
        'a catch-all route',
        {
          mailboxes: ['a@example.com'],
          routes: [{ match: '*@example.com', action: 'deliver', to: ['a@example.com'] }],
          plusAddressing: { enabled: false },
        },
      ],
      [
        'a regex route',
        {
          mailboxes: ['a@example.com'],
          routes: [{ match: '/^x-(.+)@example\\.com$/', action: 'deliver', to: ['a@example.com'] }],
          plusAddressing: { enabled: false },
        },
      ],
    ];
    for (const [why, extra] of cases) {
      assert.deepEqual(
        receiptRecipients(parseConfig({ domains: ['example.com'], ...extra })),
        ['example.com'],
        why,
      );
    }
  });

  it('otherwise lists the known addresses (mailboxes and exact routes), so SES refuses the rest at SMTP time', () => {
    const config = parseConfig({
      domains: ['example.com', 'example.org'],
      mailboxes: ['bob@example.com', 'alice@example.com', 'gone@example.com'],
      routes: [
        { match: 'sales@example.org', action: 'deliver', to: ['alice@example.com'] },
        { match: 'old@example.com', action: 'reject' },
        // An exact route wins over the mailbox of its address: refused too.
        { match: 'gone@example.com', action: 'reject', code: 551, message: '5.1.6 User has moved' },
        // An alias to refused addresses only is refused; one with a delivered member is not.
        { match: 'ghosts@example.com', action: 'deliver', to: ['old@example.com'] },
        { match: 'team@example.com', action: 'deliver', to: ['alice@example.com', 'old@example.com'] },
        // A temporary refusal stays listed (SES's refusal at RCPT would be permanent).
        { match: 'busy@example.com', action: 'reject', code: 450, message: '4.2.1 Try later' },
      ],
      plusAddressing: { enabled: false },
    });
    // Addresses the router refuses for good are left out, so SES refuses them at RCPT rather than
    // accepting mail the router would then refuse.
    assert.deepEqual(receiptRecipients(config), [
      'alice@example.com',
      'bob@example.com',
      'busy@example.com',
      'team@example.com',
      'sales@example.org',
    ]);
  });

  it('splits into rules of at most 100, in order, losing nobody', () => {
    const config = parseConfig(manyRecipientsConfig(3, 250));
    const recipients = receiptRecipients(config);
    assert.equal(recipients.length, 250);
    const rules = splitIntoRules(recipients);
    assert.deepEqual(
      rules.map((r) => r.length),
      [100, 100, 50],
    );
    assert.deepEqual(rules.flat(), recipients);
    assert.deepEqual(
      splitIntoRules([]),
      [],
      'no recipients, no rule (a rule without recipients matches everything)',
    );
    assert.deepEqual(
      splitIntoRules(Array.from({ length: 100 }, (_, i) => `u${i}@example.com`)).map((r) => r.length),
      [MAX_RECIPIENTS_PER_RULE],
    );
  });

  it('the stack chains the rules of a 3-domain, 250-recipient configuration in one rule set', () => {
    const { template } = synthStack(manyRecipientsConfig(3, 250));
    const rules = Object.entries(resourcesOfType(template, 'AWS::SES::ReceiptRule'));
    assert.equal(rules.length, 3);
    const all: string[] = [];
    for (const [, r] of rules) {
      const rule = r.Properties?.Rule as { Recipients: string[]; TlsPolicy: string; ScanEnabled: boolean };
      assert.ok(rule.Recipients.length <= 100);
      assert.equal(rule.TlsPolicy, 'Require');
      assert.equal(rule.ScanEnabled, true);
      all.push(...rule.Recipients);
    }
    assert.equal(new Set(all).size, 250);
    // Rules 2 and 3 come after their predecessor (the order SES evaluates them in).
    const afters = rules
      .map(([, r]) => (r.Properties?.After as { Ref?: string } | undefined)?.Ref)
      .filter(Boolean);
    assert.equal(afters.length, 2);
    template.resourceCountIs('AWS::SES::EmailIdentity', 3);
  });
});

describe('synth-time refusals', () => {
  it('a bad configuration stops synth with one line per wrong path', () => {
    const err = configError(() =>
      synthStack({
        domains: ['not a domain'],
        routes: [{ match: 'a@example.com', action: 'deliver', to: ['nope'] }],
        aws: { region: 'mars-1', alarmEmail: 'x', hostedZoneIds: { 'example.com': 'bad' } },
      }),
    );
    for (const path of [
      'domains[0]',
      'routes[0].to[0]',
      'aws.region',
      'aws.alarmEmail',
      'aws.hostedZoneIds.example.com',
    ]) {
      assert.ok(
        err.issues.some((i) => i.startsWith(path)),
        `no issue for ${path} in:\n${err.message}`,
      );
    }
  });

  it('settings that depend on the stack are all reported together', () => {
    const err = configError(() =>
      synthStack(
        { ...exampleConfig(), aws: { region: 'eu-west-1', hostedZoneIds: { 'other.example': 'Z123' } } },
        { region: 'us-west-2', account: '123456789012' },
      ),
    );
    assert.deepEqual(err.issues, [
      'aws.hostedZoneIds.other.example: "other.example" is not one of the configured domains',
      'aws.region: the configuration says eu-west-1 but the stack is in us-west-2',
    ]);
  });

  it('construct props go through the same checks as the file’s aws settings', () => {
    const err = configError(
      () =>
        new MailRelay(new Stack(new App(), 'Props', { env: TEST_ENV }), 'Relay', {
          config: exampleConfig(),
          logRetentionDays: 31,
          corsOrigins: ['https://ok.example', 'not an origin'],
          sesConfigurationSet: 'events for mail',
        }),
    );
    assert.deepEqual(
      err.issues.map((i) => i.split(':')[0]),
      ['aws.corsOrigins[1]', 'aws.logRetentionDays', 'aws.sesConfigurationSet'],
    );
  });

  it('a region where SES does not receive mail stops synth, naming the regions that do', () => {
    const config = { ...exampleConfig(), aws: { region: 'ap-south-1' } };
    const err = configError(() => synthStack(config));
    assert.equal(err.issues.length, 1);
    assert.match(
      err.issues[0] ?? '',
      /^aws\.region: Amazon SES does not receive mail in ap-south-1\. Deploy to one of us-east-1, /,
    );
    // For a region added after this list was written, the check can be skipped knowingly.
    const skipped = { ...exampleConfig(), aws: { region: 'ap-south-1', skipRegionCheck: true } };
    assert.doesNotThrow(() => synthStack(skipped));
    for (const r of ['us-east-1', 'us-west-2', 'eu-west-1']) assert.ok(SES_RECEIVING_REGIONS.includes(r));
  });

  it('without a configuration file, the CDK app says how to make one (no dev default is deployed)', () => {
    const empty = mkdtempSync(join(tmpdir(), 'mail-relay-noconfig-'));
    try {
      const err = configError(() => loadStackConfig({}, empty));
      assert.match(err.message, /copy mail-relay\.config\.example\.json to mail-relay\.config\.json/);
      const named = configError(() => loadStackConfig({ MAIL_RELAY_CONFIG: 'missing.json' }, empty));
      assert.match(named.message, /MAIL_RELAY_CONFIG points to .*missing\.json, which does not exist/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('an environment-agnostic stack (no region) stops synth: the region must be explicit', () => {
    const config = { ...exampleConfig(), aws: {} };
    const err = configError(() => synthStack(config, {}));
    assert.match(err.issues.join('\n'), /^aws\.region: the stack has no explicit region/);
  });
});
