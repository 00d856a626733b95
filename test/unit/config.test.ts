import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_MAX_MESSAGE_BYTES, MAX_ALIAS_DEPTH, parseConfig } from '../../functions/core/config.ts';
import { ConfigError } from '../../functions/core/errors.ts';
import { acceptsRecipient, resolveRecipient } from '../../functions/core/routing.ts';
import { jsonSyntaxError, loadConfig } from '../../functions/local/config-file.ts';

function configError(input: unknown): ConfigError {
  try {
    parseConfig(input);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('config was accepted');
}

describe('configuration', () => {
  it('applies documented defaults', () => {
    const c = parseConfig({ domains: ['Example.COM'], mailboxes: ['Alice@Example.com'] });
    assert.deepEqual(c.domains, ['example.com']);
    assert.ok(c.mailboxes.has('alice@example.com'));
    assert.equal(c.maxMessageBytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert.equal(c.maxMessageBytes, 40 * 1024 * 1024);
    assert.deepEqual(c.plusAddressing, { enabled: true, separator: '+' });
    assert.equal(c.quarantineMailbox, 'quarantine@example.com');
    assert.equal(c.retention.inboundDays, 30);
    assert.equal(c.policies.spam, 'tag');
    assert.equal(c.bounces, 'authenticated');
    assert.equal(parseConfig({ domains: ['example.com'], bounces: 'off' }).bounces, 'off');
    assert.throws(
      () => parseConfig({ domains: ['example.com'], bounces: 'always' as never }),
      (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('bounces')),
    );
    // SQS event sources allow a maximum concurrency of 2 to 1000.
    assert.throws(
      () => parseConfig({ domains: ['example.com'], aws: { routerConcurrency: 1 } }),
      (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('aws.routerConcurrency')),
    );
  });

  it('names every wrong path in one error', () => {
    const err = configError({
      domains: ['not a domain'],
      routes: [
        { match: 'a@example.com', action: 'deliver', to: ['not-an-address'] },
        { match: '/[unclosed/', action: 'drop' },
        { match: 'x@example.com', action: 'bounce' },
      ],
      policies: { spam: 'maybe' },
      maxMessageBytes: 1e12,
      unknownKey: true,
    });
    const text = err.message;
    for (const path of [
      'domains[0]',
      'routes[0].to[0]',
      'routes[1].match',
      'routes[2].action',
      'policies.spam',
      'maxMessageBytes',
      '(root)',
    ]) {
      assert.ok(
        err.issues.some((i) => i.startsWith(path)),
        `no issue for ${path} in:\n${text}`,
      );
    }
    assert.match(text, /unknownKey/);
  });

  it('refuses a $n in a route target that its match cannot fill', () => {
    const err = configError({
      domains: ['example.com'],
      mailboxes: ['*@example.com'],
      routes: [
        { match: '/^(.+)-list@example\\.com$/', action: 'deliver', to: ['$2@example.com'] },
        { match: 'a@example.com', action: 'deliver', to: ['$1@example.com'] },
      ],
    });
    assert.deepEqual(err.issues, [
      'routes[0].to[0]: "$2" but the regex has 1 group(s)',
      'routes[1].to[0]: "$1" is only for routes whose match is a /regex/',
    ]);
    // What the groups can fill is fine.
    parseConfig({
      domains: ['example.com'],
      mailboxes: ['*@example.com'],
      routes: [{ match: '/^(.+)-(.+)@example\\.com$/', action: 'deliver', to: ['$1-$2@example.com'] }],
    });
  });

  it('refuses mailboxes and routes outside the configured domains', () => {
    const err = configError({
      domains: ['example.com'],
      mailboxes: ['bob@elsewhere.org', '*@other.org'],
      routes: [{ match: '*@elsewhere.org', action: 'drop' }],
    });
    assert.ok(err.issues.some((i) => i.startsWith('mailboxes[0]')));
    assert.ok(err.issues.some((i) => i.startsWith('mailboxes[1]')));
    assert.ok(err.issues.some((i) => i.startsWith('routes[0].match')));
  });

  it('refuses an alias that points to itself', () => {
    const err = configError({
      domains: ['example.com'],
      routes: [{ match: 'loop@example.com', action: 'deliver', to: ['loop@example.com'] }],
    });
    assert.match(err.message, /routes\[0\]\.to: alias loop loop@example\.com -> loop@example\.com/);
  });

  it('refuses a cycle of aliases', () => {
    const err = configError({
      domains: ['example.com'],
      mailboxes: ['real@example.com'],
      routes: [
        { match: 'a@example.com', action: 'deliver', to: ['b@example.com'] },
        { match: 'b@example.com', action: 'deliver', to: ['real@example.com', 'c@example.com'] },
        { match: 'c@example.com', action: 'deliver', to: ['a@example.com'] },
      ],
    });
    assert.match(
      err.message,
      /alias loop a@example\.com -> b@example\.com -> c@example\.com -> a@example\.com/,
    );
  });

  it('allows a route that also delivers to the mailbox it names', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com', 'archive@example.com'],
      routes: [
        { match: 'alice@example.com', action: 'deliver', to: ['alice@example.com', 'archive@example.com'] },
      ],
    });
    assert.equal(c.routes.length, 1);
  });

  it('refuses deliver targets that lead nowhere and forwards into our own domains', () => {
    const err = configError({
      domains: ['example.com'],
      routes: [
        { match: 'sales@example.com', action: 'deliver', to: ['nobody@example.com'] },
        { match: 'fw@example.com', action: 'forward', to: ['someone@example.com'] },
        { match: 'out@example.com', action: 'deliver', to: ['someone@gmail.com'] },
      ],
    });
    assert.ok(err.issues.some((i) => i.startsWith('routes[0].to[0]') && i.includes('neither a mailbox')));
    assert.ok(err.issues.some((i) => i.startsWith('routes[1].to[0]') && i.includes('loop')));
    assert.ok(err.issues.some((i) => i.startsWith('routes[2].to[0]') && i.includes('forward')));
  });

  it('refuses an exact route forwarding the sending address (bounces of forwards arrive there), by default or set', () => {
    const set = configError({
      domains: ['example.com'],
      relay: { fromAddress: 'Info@example.com' },
      routes: [{ match: 'info@example.com', action: 'forward', to: ['me@gmail.com'] }],
    });
    assert.deepEqual(set.issues, [
      'routes[0].match: "info@example.com" is the address forwarded mail is sent from (relay.fromAddress), where bounces of forwarded mail arrive; forwarding it would loop (give relay.fromAddress an address of its own, such as forwarder@example.com)',
    ]);
    const byDefault = configError({
      domains: ['example.com'],
      routes: [{ match: 'forwarder@example.com', action: 'forward', to: ['me@gmail.com'] }],
    });
    assert.ok(byDefault.issues[0]?.startsWith('routes[0].match: "forwarder@example.com" is the address'));
    // A catch-all covering it is fine: forward.ts cuts that one mail at run time.
    parseConfig({
      domains: ['example.com'],
      routes: [{ match: '*@example.com', action: 'forward', to: ['me@gmail.com'] }],
    });
  });

  it("a forward route's subjectPrefix is one line of printable ASCII", () => {
    const err = configError({
      domains: ['example.com'],
      routes: [
        { match: 'a@example.com', action: 'forward', to: ['me@gmail.com'], subjectPrefix: '[a]\r\nBcc: x@y' },
        { match: 'b@example.com', action: 'forward', to: ['me@gmail.com'], subjectPrefix: '   ' },
        { match: 'c@example.com', action: 'deliver', to: ['a@example.com'], subjectPrefix: '[c] ' },
      ],
    });
    assert.ok(
      err.issues.some((i) => i.startsWith('routes[0].subjectPrefix: must be one line of printable ASCII')),
    );
    assert.ok(err.issues.some((i) => i.startsWith('routes[1].subjectPrefix: must not be only spaces')));
    assert.ok(
      err.issues.some((i) => i.startsWith('routes[2]')),
      err.issues.join('\n'),
    );
  });

  it('refuses literal targets of catch-all and regex routes that lead nowhere (a typo), not those with $n', () => {
    // The catch-all would take its own typo'd target again: a loop at run time.
    const catchAll = configError({
      domains: ['example.com'],
      mailboxes: ['archive@example.com'],
      routes: [{ match: '*@example.com', action: 'deliver', to: ['archve@example.com'] }],
    });
    assert.deepEqual(catchAll.issues, [
      'routes[0].to[0]: "archve@example.com" is neither a mailbox nor routed by another route',
    ]);
    const regex = configError({
      domains: ['example.com'],
      mailboxes: ['support@example.com'],
      routes: [
        {
          match: '/^ticket-(\\d+)@example\\.com$/',
          action: 'deliver',
          to: ['suport@example.com', '$1@example.com'],
        },
      ],
    });
    assert.deepEqual(regex.issues, [
      'routes[0].to[0]: "suport@example.com" is neither a mailbox nor routed by another route',
    ]);
    // A catch-all to a mailbox of its domain is what it is for.
    parseConfig({
      domains: ['example.com'],
      mailboxes: ['archive@example.com'],
      routes: [{ match: '*@example.com', action: 'deliver', to: ['archive@example.com'] }],
    });
  });

  it('accepts an alias to a plus-address of a mailbox (routing delivers it to that mailbox, tag kept)', () => {
    const c = parseConfig({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [{ match: 'team@example.com', action: 'deliver', to: ['alice+team@example.com'] }],
    });
    assert.equal(c.routes.length, 1);
    // Without plus-addressing there is no such mailbox.
    const err = configError({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      plusAddressing: { enabled: false },
      routes: [{ match: 'team@example.com', action: 'deliver', to: ['alice+team@example.com'] }],
    });
    assert.match(err.message, /routes\[0\]\.to\[0\]: "alice\+team@example\.com" is neither a mailbox/);
  });

  it("refuses alias loops through +tag addresses (routing takes alice+inbox@ to alice@'s route)", () => {
    const self = configError({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [{ match: 'alice@example.com', action: 'deliver', to: ['alice+inbox@example.com'] }],
    });
    assert.deepEqual(self.issues, [
      "routes[0].to: alias loop alice@example.com -> alice+inbox@example.com (alice@example.com's route)",
    ]);
    const pair = configError({
      domains: ['example.com'],
      mailboxes: ['real@example.com'],
      routes: [
        { match: 'a@example.com', action: 'deliver', to: ['b+x@example.com'] },
        { match: 'b@example.com', action: 'deliver', to: ['a+y@example.com', 'real@example.com'] },
      ],
    });
    assert.match(
      pair.message,
      /alias loop a@example\.com -> b\+x@example\.com \(b@example\.com's route\) -> a\+y@example\.com/,
    );
  });

  it('refuses a route shadowed by an earlier one for the same address (any case) or domain', () => {
    const err = configError({
      domains: ['example.com'],
      mailboxes: ['alice@example.com'],
      routes: [
        { match: 'b@example.com', action: 'deliver', to: ['alice@example.com'] },
        { match: 'B@Example.com', action: 'drop' },
        { match: '*@example.com', action: 'deliver', to: ['alice@example.com'] },
        { match: '*@EXAMPLE.com', action: 'drop' },
      ],
    });
    assert.deepEqual(err.issues, [
      'routes[1].match: "B@Example.com" is matched by routes[0] already (addresses are case-insensitive); this route would never be used',
      'routes[3].match: "*@EXAMPLE.com" is matched by routes[2] already (addresses are case-insensitive); this route would never be used',
    ]);
  });

  it('refuses a catch-all route in a domain where every address is a mailbox (it would never be used)', () => {
    const err = configError({
      domains: ['example.com', 'example.org'],
      mailboxes: ['*@example.com', 'alice@example.org'],
      routes: [
        { match: '*@Example.com', action: 'deliver', to: ['alice@example.org'] },
        { match: '*@example.org', action: 'deliver', to: ['alice@example.org'] },
      ],
    });
    assert.deepEqual(err.issues, [
      'routes[0].match: every address of example.com is a mailbox ("*@example.com" in mailboxes); this route would never be used',
    ]);
  });

  it('answers a 4xx reject route with a 4.x.x text, and refuses a text of the other class or on several lines', () => {
    const reject = (route: Record<string, unknown>) =>
      parseConfig({
        domains: ['example.com'],
        routes: [{ match: 'busy@example.com', action: 'reject', ...route }],
      });
    // A 450 with the default text answered `450 5.1.1`: a temporary refusal saying "permanent".
    assert.deepEqual(acceptsRecipient(reject({ code: 450 }), 'busy@example.com'), {
      accept: false,
      code: 450,
      message: '4.1.1 Recipient address rejected',
    });
    assert.deepEqual(acceptsRecipient(reject({}), 'busy@example.com'), {
      accept: false,
      code: 550,
      message: '5.1.1 Recipient address rejected',
    });
    assert.equal(
      acceptsRecipient(reject({ code: 451, message: 'Mailbox busy' }), 'busy@example.com').accept,
      false,
      'a text without an enhanced code is taken as it is',
    );
    const refused = (route: Record<string, unknown>) =>
      configError({
        domains: ['example.com'],
        routes: [{ match: 'x@example.com', action: 'reject', ...route }],
      }).issues;
    assert.deepEqual(refused({ code: 451, message: '5.1.1 Gone' }), [
      'routes[0].message: starts with the enhanced code 5.x.x, but the reply code is 451 (their first digits must agree)',
    ]);
    assert.deepEqual(refused({ message: '4.2.1 Later' }), [
      'routes[0].message: starts with the enhanced code 4.x.x, but the reply code is 550 (their first digits must agree)',
    ]);
    for (const message of [
      '5.1.1 Gone\r\n250 2.0.0 Ok',
      '5.1.1 Line one\nline two',
      '5.1.1 Umgezogen \u2192 neu',
    ]) {
      assert.deepEqual(refused({ message }), [
        'routes[0].message: must be one line of printable ASCII (the text of an SMTP reply)',
      ]);
    }
  });

  it('names the ASCII form of an internationalized domain, the form to list', () => {
    assert.deepEqual(configError({ domains: ['M\u00fcnchen.de'] }).issues, [
      'domains[0]: write an internationalized domain in its ASCII form: "xn--mnchen-3ya.de"',
    ]);
    assert.deepEqual(configError({ domains: ['not a domain'] }).issues, [
      'domains[0]: must be a domain name such as example.com',
    ]);
  });

  it('names the ASCII form for an internationalized domain in a mailbox, a match, a target or relay address; refuses a non-ASCII regex (it never matches)', () => {
    // Before: "must be an e-mail address…" for these, and the regex route was accepted and never matched.
    const ascii = (a: string) => `write an internationalized domain in its ASCII form: "${a}"`;
    assert.deepEqual(
      configError({
        domains: ['xn--mnchen-3ya.de'],
        mailboxes: ['info@xn--mnchen-3ya.de'],
        routes: [
          { match: 'a@M\u00fcnchen.de', action: 'deliver', to: ['info@m\u00fcnchen.de'] },
          { match: '*@m\u00fcnchen.de', action: 'forward', to: ['x@b\u00fccher.example'] },
          { match: '/^(.+)@m\u00fcnchen\\.de$/', action: 'drop' },
        ],
        relay: { fromAddress: 'fw@m\u00fcnchen.de' },
      }).issues,
      [
        `relay.fromAddress: ${ascii('fw@xn--mnchen-3ya.de')}`,
        `routes[0].match: ${ascii('a@xn--mnchen-3ya.de')}`,
        `routes[0].to[0]: ${ascii('info@xn--mnchen-3ya.de')}`,
        `routes[1].match: ${ascii('*@xn--mnchen-3ya.de')}`,
        `routes[1].to[0]: ${ascii('x@xn--bcher-kva.example')}`,
        'routes[2].match: addresses are matched in their ASCII form: write an internationalized domain as xn--… (e.g. münchen.de as xn--mnchen-3ya\\.de); a non-ASCII local part never reaches a route',
      ],
    );
    assert.deepEqual(
      configError({
        domains: ['xn--mnchen-3ya.de'],
        mailboxes: ['info@m\u00fcnchen.de', '*@M\u00dcNCHEN.de'],
      }).issues,
      [`mailboxes[0]: ${ascii('info@xn--mnchen-3ya.de')}`, `mailboxes[1]: ${ascii('*@xn--mnchen-3ya.de')}`],
    );
  });

  it('routes an address however it is written: a quoted local part that needs no quotes, an internationalized domain in Unicode (NFC or NFD)', () => {
    const config = parseConfig({
      domains: ['example.com', 'xn--mnchen-3ya.de'],
      mailboxes: ['john.doe@example.com', 'info@xn--mnchen-3ya.de'],
    });
    const decided = (a: string) => {
      const [d] = resolveRecipient(config, a);
      return d?.kind === 'deliver'
        ? `deliver ${d.mailbox} (${d.recipient})`
        : `${d?.kind} ${d && 'code' in d ? `${d.code} ${d.message}` : ''}`;
    };
    assert.equal(decided('"John.Doe"@example.com'), 'deliver john.doe@example.com (john.doe@example.com)');
    assert.equal(decided('"john\\.doe"@example.com'), 'deliver john.doe@example.com (john.doe@example.com)');
    assert.equal(decided('info@M\u00dcNCHEN.de'), 'deliver info@xn--mnchen-3ya.de (info@xn--mnchen-3ya.de)');
    assert.equal(
      decided('"info"@mu\u0308nchen.de'),
      'deliver info@xn--mnchen-3ya.de (info@xn--mnchen-3ya.de)',
    );
    assert.equal(
      decided('"john doe"@example.com'),
      'reject 553 5.1.3 Recipient address rejected: a quoted local part is not a mailbox here',
    );
    assert.equal(
      decided('j\u00f6hn@example.com'),
      'reject 553 5.6.7 Non-ASCII recipient address not accepted (no SMTPUTF8)',
    );
    assert.equal(decided('"unterminated@example.com'), 'reject 553 5.1.3 Bad recipient address syntax');
  });

  it(`refuses a chain of more aliases than routing follows (${MAX_ALIAS_DEPTH}); accepts one of exactly that many`, () => {
    const chain = (n: number) => ({
      domains: ['example.com'],
      mailboxes: ['end@example.com'],
      routes: Array.from({ length: n }, (_, i) => ({
        match: `c${i}@example.com`,
        action: 'deliver' as const,
        to: [i === n - 1 ? 'end@example.com' : `c${i + 1}@example.com`],
      })),
    });
    const ok = parseConfig(chain(MAX_ALIAS_DEPTH));
    assert.deepEqual(
      resolveRecipient(ok, 'c0@example.com').map((d) => d.kind === 'deliver' && d.mailbox),
      ['end@example.com'],
      'routing follows a chain of that length',
    );
    const err = configError(chain(MAX_ALIAS_DEPTH + 1));
    assert.match(
      err.message,
      new RegExp(`routes\\[0\\]\\.to: alias chain longer than ${MAX_ALIAS_DEPTH} aliases`),
    );
  });

  it('loads the file named by MAIL_RELAY_CONFIG, or the dev default when there is none', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mr-config-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const dev = loadConfig({}, dir);
    assert.equal(dev.path, null);
    assert.deepEqual(dev.config.domains, ['example.test']);
    assert.ok(dev.config.autoMailboxDomains.has('example.test'));

    writeFileSync(
      join(dir, 'custom.json'),
      JSON.stringify({ domains: ['mine.test'], mailboxes: ['me@mine.test'] }),
    );
    const custom = loadConfig({ MAIL_RELAY_CONFIG: 'custom.json' }, dir);
    assert.deepEqual(custom.config.domains, ['mine.test']);

    writeFileSync(join(dir, 'mail-relay.config.json'), '{ "domains": [ }');
    assert.throws(
      () => loadConfig({}, dir),
      (e: unknown) => e instanceof ConfigError && /not valid JSON/.test(e.message),
    );
    assert.throws(() => loadConfig({ MAIL_RELAY_CONFIG: 'missing.json' }, dir), /does not exist/);

    // Saved with a byte order mark (Windows editors): the same configuration, and its JSON value.
    const value = { domains: ['bom.test'], mailboxes: ['me@bom.test'], aws: { region: 'eu-west-1' } };
    writeFileSync(join(dir, 'bom.json'), `\uFEFF${JSON.stringify(value)}`);
    const bom = loadConfig({ MAIL_RELAY_CONFIG: 'bom.json' }, dir);
    assert.deepEqual(bom.config.domains, ['bom.test']);
    assert.deepEqual(bom.raw, value);
    assert.equal(bom.awsRegion, 'eu-west-1');
  });

  it('a property named twice in one object is refused with its line and column (JSON.parse would keep the last)', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mr-config-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    // A second `routes`, pasted in from an example, would have dropped the first without a word.
    const text =
      '{\n  "domains": ["mine.test"],\n  "mailboxes": ["me@mine.test"],\n' +
      '  "routes": [{"match": "old@mine.test", "action": "reject"}],\n' +
      '  "routes": [{"match": "info@mine.test", "action": "deliver", "to": ["me@mine.test"]}]\n}\n';
    writeFileSync(join(dir, 'twice.json'), text);
    assert.throws(
      () => loadConfig({ MAIL_RELAY_CONFIG: 'twice.json' }, dir),
      (e: unknown) =>
        e instanceof ConfigError &&
        /twice\.json is not valid JSON: line 5, column 3: "routes" appears twice in this object/.test(
          e.message,
        ),
    );
    // In a nested object too; the same name in two objects is fine.
    assert.match(jsonSyntaxError('{"a": {"b": 1, "b": 2}}')?.problem ?? '', /"b" appears twice/);
    assert.equal(jsonSyntaxError('{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}'), null);
    // Escapes spell the same name.
    assert.match(jsonSyntaxError('{"ab": 1, "a\\u0062": 2}')?.problem ?? '', /"ab" appears twice/);
  });

  it('names where a text stops being JSON, and finds nothing wrong in JSON', () => {
    for (const json of [
      '{}',
      ' [1, -2.5e+3, 0, "a\\u00e9\\n", true, false, null, {"a": {"b": []}}] ',
      '"x"',
      '0',
    ]) {
      assert.doesNotThrow(() => JSON.parse(json), json);
      assert.equal(jsonSyntaxError(json), null, json);
    }
    const cases: [string, number, RegExp][] = [
      ['{"a": 1,}', 8, /expected a property name in double quotes, found "}"/],
      ['[1, 2,]', 6, /expected a value, found "]"/],
      ['{"a" 1}', 5, /expected ':' after a property name/],
      ['{"a": 1 "b": 2}', 8, /expected ',' or '}' after a property value/],
      ['{"a": 01}', 6, /expected a value, found "0"/],
      ['{"a": "x', 8, /a string that never ends/],
      ['{"a": "\\q"}', 7, /an invalid escape/],
      ["{'a': 1}", 1, /expected a property name in double quotes, found "'"/],
      ['{} {}', 3, /"\{" after the end of the JSON value/],
      ['', 0, /expected a value, found the end of the file/],
      ['// comment\n{}', 0, /expected a value, found "\/"/],
    ];
    for (const [json, offset, problem] of cases) {
      assert.throws(() => JSON.parse(json), json);
      const at = jsonSyntaxError(json);
      assert.equal(at?.offset, offset, json);
      assert.match(at?.problem ?? '', problem, json);
    }
  });
});
