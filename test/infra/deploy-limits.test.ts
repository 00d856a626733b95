/**
 * What a synthesized template must get right for CloudFormation and the services to accept it and
 * behave as the README says, beyond what the schema (cfn-lint, cfn-lint.test.ts) can see: the
 * limits of CloudFormation and SES that a large configuration reaches, and the S3 semantics a role's
 * grants decide (404 or 403 for a missing key).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../functions/core/errors.ts';
import { MAX_RECEIPT_RULES, MAX_RECIPIENTS_PER_RULE } from '../../lib/recipients.ts';
import {
  actionsOf,
  fullConfig,
  manyRecipientsConfig,
  type PolicyStatementJson,
  propertiesOf,
  resourcesOfType,
  resourceText,
  synthStack,
} from './infra-helpers.ts';

/** CloudFormation's quota of outputs per template (a template with more is refused at deploy). */
const MAX_TEMPLATE_OUTPUTS = 200;

/** The statements of every role's inline policies, by role logical id. */
function statementsByRole(template: ReturnType<typeof synthStack>['template']) {
  const out = new Map<string, PolicyStatementJson[]>();
  for (const p of Object.values(resourcesOfType(template, 'AWS::IAM::Policy'))) {
    const doc = propertiesOf(p).PolicyDocument as { Statement: PolicyStatementJson[] };
    for (const role of (propertiesOf(p).Roles ?? []) as { Ref?: string }[]) {
      const id = role.Ref ?? '?';
      out.set(id, [...(out.get(id) ?? []), ...doc.Statement]);
    }
  }
  return out;
}

describe('S3: a missing key is a 404 for every role that reads keys', () => {
  it('each role granted s3:GetObject on the mail bucket may also list the whole bucket, without a condition', () => {
    // S3 answers GetObject/HeadObject of a missing key with 404 only to a caller that may ListBucket;
    // to anyone else, 403 AccessDenied. The BlobStore contract (`get` of a missing key is null)
    // relies on the 404. A ListBucket limited by an `s3:prefix` condition does not count: the
    // implicit check of a GetObject carries no prefix. The retention sweep reads
    // retention/resume.json, absent on most days: with a prefix-limited ListBucket every sweep
    // failed on its first request (AccessDenied), so no mail ever expired.
    const { template } = synthStack(fullConfig());
    const bucketId = Object.keys(resourcesOfType(template, 'AWS::S3::Bucket'))[0] ?? '';
    let readers = 0;
    for (const [role, statements] of statementsByRole(template)) {
      const reads = statements.some(
        (s) =>
          s.Effect === 'Allow' &&
          actionsOf(s).includes('s3:GetObject') &&
          resourceText(s.Resource).includes(bucketId),
      );
      if (!reads) continue;
      readers++;
      const lists = statements.filter(
        (s) =>
          s.Effect === 'Allow' &&
          actionsOf(s).includes('s3:ListBucket') &&
          resourceText(s.Resource).includes(bucketId) &&
          s.Condition === undefined,
      );
      assert.ok(lists.length > 0, `${role} reads keys but its ListBucket is missing or conditioned`);
    }
    // The router, the API function and the retention sweep.
    assert.equal(readers, 3);
  });
});

describe('CloudFormation outputs: at most 200 per template', () => {
  const domains = (n: number) => Array.from({ length: n }, (_, i) => `d${i + 1}.example`);

  it('60 domains without hosted zones (240 records to create) still fit, every record named once', () => {
    const names = domains(60);
    const config = { domains: names, mailboxes: names.map((d) => `*@${d}`), aws: { region: 'us-east-1' } };
    const { template } = synthStack(config);
    const outputs = template.findOutputs('*');
    assert.ok(
      Object.keys(outputs).length <= MAX_TEMPLATE_OUTPUTS,
      `${Object.keys(outputs).length} outputs: CloudFormation refuses more than ${MAX_TEMPLATE_OUTPUTS}`,
    );
    for (const o of ['ApiUrl', 'BucketName', 'TableName', 'LinkSecretArn', 'RuleSetName'])
      assert.ok(o in outputs, o);
    const dns = Object.entries(outputs).filter(([k]) => k.startsWith('DnsRecord'));
    const text = JSON.stringify(dns.map(([, o]) => o.Value));
    for (const d of names) {
      assert.equal(
        text.split(`${d} MX 10 inbound-smtp.us-east-1.amazonaws.com`).length - 1,
        1,
        `the MX record of ${d}`,
      );
    }
    // Three DKIM CNAMEs per domain, each value a token of its identity.
    assert.equal(text.split('DkimDNSTokenValue').length - 1, 180);
    assert.equal(text.split('DkimDNSTokenName').length - 1, 180);
  });

  it('a handful of domains keeps one output per record (DnsRecord1…, as the README shows)', () => {
    const names = domains(3);
    const { template } = synthStack({ domains: names, aws: { region: 'us-east-1' } });
    const dns = Object.keys(template.findOutputs('*')).filter((k) => k.startsWith('DnsRecord'));
    assert.equal(dns.length, 12);
  });
});

/** IAM's quotas: a role's inline policies together, one managed policy, managed policies per role. */
const MAX_INLINE_POLICY_CHARS = 10_240;
const MAX_MANAGED_POLICY_CHARS = 6_144;
const MAX_MANAGED_POLICIES_PER_ROLE = 10;

/**
 * A policy document as IAM counts it (no whitespace), every reference replaced by the longest value
 * it may take: the partition aws-us-gov, a 63-character name, a 140-character ARN.
 */
function renderedLength(doc: unknown): number {
  const render = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(render);
    if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if ('Fn::Join' in o) {
        const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
        return parts.map(render).join(sep);
      }
      if ('Ref' in o) return o.Ref === 'AWS::Partition' ? 'aws-us-gov' : 'x'.repeat(63);
      if ('Fn::GetAtt' in o) return 'x'.repeat(140);
      return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, render(x)]));
    }
    return v;
  };
  return JSON.stringify(render(doc)).length;
}

describe('IAM: every role’s policies within IAM’s size quotas', () => {
  it('150 domains with 31-character names: no policy over its quota, at most 10 managed policies a role', () => {
    // The router's ses:SendBounce statement names each domain's identity (~77 characters each), and
    // the router's and send function's ses:FromAddress condition lists `*@domain` for each: one
    // statement CDK cannot split. At ~80 such domains the router's overflow managed policy passed
    // 6,144 characters and IAM refused it ("Cannot exceed quota for PolicySize"), failing the deploy.
    const domains = Array.from(
      { length: 150 },
      (_, i) => `customer-domain-${String(i).padStart(3, '0')}.example.org`,
    );
    const { template } = synthStack({
      domains,
      mailboxes: domains.map((d) => `*@${d}`),
      aws: { region: 'us-east-1' },
    });
    const inline = new Map<string, number>();
    const managed = new Map<string, number>();
    for (const [id, p] of Object.entries(resourcesOfType(template, 'AWS::IAM::ManagedPolicy'))) {
      const size = renderedLength(propertiesOf(p).PolicyDocument);
      assert.ok(size <= MAX_MANAGED_POLICY_CHARS, `${id}: ${size} characters`);
      for (const role of (propertiesOf(p).Roles ?? []) as { Ref?: string }[]) {
        managed.set(role.Ref ?? '?', (managed.get(role.Ref ?? '?') ?? 0) + 1);
      }
    }
    for (const p of Object.values(resourcesOfType(template, 'AWS::IAM::Policy'))) {
      const size = renderedLength(propertiesOf(p).PolicyDocument);
      for (const role of (propertiesOf(p).Roles ?? []) as { Ref?: string }[]) {
        inline.set(role.Ref ?? '?', (inline.get(role.Ref ?? '?') ?? 0) + size);
      }
    }
    for (const [role, size] of inline) assert.ok(size <= MAX_INLINE_POLICY_CHARS, `${role}: inline ${size}`);
    for (const [role, n] of managed)
      assert.ok(n <= MAX_MANAGED_POLICIES_PER_ROLE, `${role}: ${n} managed policies`);
    // Every domain is still granted, and nothing else: no wildcard identity for bounces.
    const text = JSON.stringify(template.toJSON().Resources);
    for (const d of domains) {
      assert.ok(text.includes(`identity/${d}"`), `SendBounce as ${d}`);
      assert.ok(text.includes(`"*@${d}"`), `SendEmail from ${d}`);
    }
  });
});

describe('SES: at most 200 receipt rules per rule set', () => {
  it('more listed recipients than 200 rules of 100 hold stops synth, saying what to do', () => {
    assert.equal(MAX_RECEIPT_RULES, 200);
    const tooMany = MAX_RECEIPT_RULES * MAX_RECIPIENTS_PER_RULE + 1;
    let error: unknown;
    try {
      synthStack(manyRecipientsConfig(3, tooMany));
    } catch (err) {
      error = err;
    }
    assert.ok(
      error instanceof ConfigError,
      `synth went on (the deploy would fail at rule 201): ${String(error)}`,
    );
    const text = `${error.message}\n${error.issues.join('\n')}`;
    assert.match(text, /20,?001 recipients/);
    assert.match(text, /\*@domain/);
  });

  it('exactly 20,000 listed recipients (200 full rules) synthesize', () => {
    const { template } = synthStack(manyRecipientsConfig(3, MAX_RECEIPT_RULES * MAX_RECIPIENTS_PER_RULE));
    assert.equal(Object.keys(resourcesOfType(template, 'AWS::SES::ReceiptRule')).length, MAX_RECEIPT_RULES);
  });
});
