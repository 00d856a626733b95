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
