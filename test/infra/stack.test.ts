/**
 * The synthesized template (aws-cdk-lib/assertions), resource by resource, with the security
 * properties a reviewer would check by hand: encryption, public access, TLS-only policies, IAM
 * scoped to the bucket prefixes and the table, the SQS dead-letter wiring, the receipt rule's
 * single S3 action, the rule set activation.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Annotations, Match, type Template } from 'aws-cdk-lib/assertions';
import {
  UNSEEN_INDEX as ADAPTER_UNSEEN_INDEX,
  mailboxTableDefinition,
  TTL_ATTRIBUTE,
} from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import {
  BOUNCE_FAILURES_METRIC,
  FORWARD_FAILURES_METRIC,
  ROUTER_FUNCTION_DIMENSION,
  ROUTER_METRICS_NAMESPACE,
  ROUTER_SERVICE_NAME,
} from '../../functions/handlers/router-metrics.ts';
import { SWEEP_RESUME_KEY } from '../../functions/pipeline/retention.ts';
import {
  API_TABLE_ACTIONS,
  API_UNSEEN_INDEX_ACTIONS,
  HANDLER_ENV,
  ROUTER_TABLE_ACTIONS,
  SEND_TABLE_ACTIONS,
} from '../../lib/mail-relay.ts';
import { RETENTION_TABLE_ACTIONS } from '../../lib/retention.ts';
import { PREFIX, UNSEEN_INDEX } from '../../lib/storage.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import {
  actionsOf,
  exampleConfig,
  fullConfig,
  type PolicyStatementJson,
  propertiesOf,
  resourcesOfType,
  resourceText,
  statementsOfRole,
  synthStack,
} from './infra-helpers.ts';

const example = synthStack(exampleConfig()).template;
const full = synthStack(fullConfig()).template;

function onlyLogicalId(template: Template, type: string, prefix: string): string {
  const ids = Object.keys(resourcesOfType(template, type)).filter((k) => k.startsWith(prefix));
  assert.equal(ids.length, 1, `expected one ${type} named ${prefix}*, found ${ids.join(', ')}`);
  return ids[0] ?? '';
}

const bucketId = onlyLogicalId(example, 'AWS::S3::Bucket', 'MailRelayStorageBucket');
const tableId = onlyLogicalId(example, 'AWS::DynamoDB::Table', 'MailRelayStorageIndex');

/** The statements that grant `action`; fails when none does. */
function grantsOf(statements: PolicyStatementJson[], action: string): PolicyStatementJson[] {
  return statements.filter((s) => s.Effect === 'Allow' && actionsOf(s).includes(action));
}

function objectResources(s: PolicyStatementJson): string[] {
  const list = Array.isArray(s.Resource) ? s.Resource : [s.Resource];
  return list.map((r) => {
    const text = resourceText(r);
    const m = /"\/([a-z]+\/)\*"/.exec(text);
    assert.ok(text.includes(bucketId), `object resource outside the mail bucket: ${text}`);
    assert.ok(m, `object resource without a prefix: ${text}`);
    return m[1] ?? '';
  });
}

function dnsOutputs(template: Template): string[] {
  return Object.keys(template.findOutputs('*')).filter((k) => k.startsWith('DnsRecord'));
}

describe('storage', () => {
  it('what holds mail keeps its logical id, so that `cdk deploy` of a new version updates it in place', () => {
    // A changed logical id makes CloudFormation create a new resource and drop the old one: a new,
    // empty bucket and table (the old ones retained, but no longer the stack's), a new queue (mail
    // waiting in the dead-letter queue left behind), a new link secret (every notice link broken).
    // Renaming a construct on the path of one of these needs a migration, not a new id.
    const pinned: [string, string][] = [
      ['AWS::S3::Bucket', 'MailRelayStorageBucketA44EDB0E'],
      ['AWS::DynamoDB::Table', 'MailRelayStorageIndex09FF89F4'],
      ['AWS::SQS::Queue', 'MailRelayIngestNotificationsD9FD179C'],
      ['AWS::SQS::Queue', 'MailRelayIngestDeadLettersF414162B'],
      ['AWS::SNS::Topic', 'MailRelayIngestReceivedCEB82F8A'],
      ['AWS::KMS::Key', 'MailRelayTopicKey1DC2FF2B'],
      ['AWS::SecretsManager::Secret', 'MailRelayLinkSecretEEC0B525'],
    ];
    for (const [type, id] of pinned) {
      assert.ok(
        id in resourcesOfType(example, type),
        `${type} ${id} is gone: found ${Object.keys(resourcesOfType(example, type)).join(', ')}`,
      );
    }
  });

  it('the bucket is encrypted, private, TLS-only, unversioned, and expires inbound/ after the replay window', () => {
    example.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
        VersioningConfiguration: Match.absent(),
        LifecycleConfiguration: {
          Rules: Match.arrayWith([
            Match.objectLike({ Prefix: 'inbound/', ExpirationInDays: 30, Status: 'Enabled' }),
            Match.objectLike({ Prefix: 'notifications/', ExpirationInDays: 30, Status: 'Enabled' }),
            Match.objectLike({ Prefix: 'forwarded/', ExpirationInDays: 30, Status: 'Enabled' }),
            Match.objectLike({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } }),
          ]),
        },
      },
    });
    // Never a mailbox expiry, even with retention.mailboxDays (full): the retention sweep deletes
    // expired mail with its index entry and counters, which an object lifecycle rule cannot.
    for (const t of [example, full]) {
      assert.doesNotMatch(JSON.stringify(t.findResources('AWS::S3::Bucket')), /"Prefix":"mailboxes\/"/);
    }
  });

  it('the bucket policy denies every request without TLS (and below TLS 1.2)', () => {
    example.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Principal: { AWS: '*' },
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
          Match.objectLike({ Effect: 'Deny', Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } } }),
        ]),
      },
    });
  });

  it('SES may write only under inbound/, only for our own rule set and account', () => {
    const policy = Object.values(resourcesOfType(example, 'AWS::S3::BucketPolicy'))[0];
    const statements = (propertiesOf(policy).PolicyDocument as { Statement: PolicyStatementJson[] })
      .Statement;
    const ses = statements.filter((s) => JSON.stringify(s.Principal).includes('ses.amazonaws.com'));
    assert.equal(ses.length, 1);
    const [s] = ses;
    assert.ok(s);
    assert.deepEqual(actionsOf(s), ['s3:PutObject']);
    assert.deepEqual(objectResources(s), ['inbound/']);
    assert.equal(s.Condition?.StringEquals?.['aws:SourceAccount'], '123456789012');
    const sourceArn = resourceText(s.Condition?.ArnLike?.['aws:SourceArn']);
    assert.match(sourceArn, /receipt-rule-set\/.*MailRelayIngestRuleSet.*:receipt-rule\/\*/);
  });

  it('the table is on-demand, with PITR and encryption, keyed pk/sk, retained, and a TTL on expiresAt (deletions)', () => {
    example.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: {
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
        SSESpecification: { SSEEnabled: true },
        DeletionProtectionEnabled: true,
      },
    });
  });

  it('the table has the sparse index of unread mail the adapter reads, as the adapter declares it (one index: one CloudFormation update)', () => {
    assert.deepEqual(UNSEEN_INDEX, ADAPTER_UNSEEN_INDEX);
    const table = Object.values(resourcesOfType(example, 'AWS::DynamoDB::Table'))[0] as {
      Properties: { GlobalSecondaryIndexes?: unknown[]; AttributeDefinitions?: unknown[] };
    };
    const adapter = mailboxTableDefinition('t');
    assert.deepEqual(table.Properties.GlobalSecondaryIndexes, adapter.GlobalSecondaryIndexes);
    assert.deepEqual(
      [...(table.Properties.AttributeDefinitions ?? [])].sort((a, b) =>
        JSON.stringify(a).localeCompare(JSON.stringify(b)),
      ),
      [...(adapter.AttributeDefinitions ?? [])].sort((a, b) =>
        JSON.stringify(a).localeCompare(JSON.stringify(b)),
      ),
    );
  });

  it('retainData: false deletes both with the stack (bucket emptied first); inboundDays sets the replay window', () => {
    const { stack, template: t } = synthStack({
      ...fullConfig(),
      retention: { inboundDays: 7, mailboxDays: 365 },
    });
    t.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Delete',
      Properties: {
        LifecycleConfiguration: {
          Rules: Match.arrayWith([Match.objectLike({ Prefix: 'inbound/', ExpirationInDays: 7 })]),
        },
      },
    });
    // The old lifecycle expiry warned that index entries would outlive their files; the sweep has no such caveat.
    Annotations.fromStack(stack).hasNoWarning('*', Match.anyValue());
    t.resourceCountIs('Custom::S3AutoDeleteObjects', 1);
    t.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Delete',
      Properties: { DeletionProtectionEnabled: false },
    });
  });
});

describe('ingest', () => {
  it('one SES identity per domain, with DKIM signing', () => {
    example.resourceCountIs('AWS::SES::EmailIdentity', 1);
    example.hasResourceProperties('AWS::SES::EmailIdentity', {
      EmailIdentity: 'example.com',
      DkimAttributes: Match.absent(),
    });
    full.resourceCountIs('AWS::SES::EmailIdentity', 2);
  });

  it('the receipt rule requires TLS, scans, and has exactly one action: S3 under inbound/ with the topic', () => {
    const rules = Object.values(resourcesOfType(example, 'AWS::SES::ReceiptRule'));
    assert.equal(rules.length, 1);
    const topicId = onlyLogicalId(example, 'AWS::SNS::Topic', 'MailRelayIngestReceived');
    const rule = rules[0]?.Properties?.Rule as Record<string, unknown>;
    assert.deepEqual(rule, {
      Actions: [
        {
          S3Action: {
            BucketName: { Ref: bucketId },
            ObjectKeyPrefix: 'inbound/',
            TopicArn: { Ref: topicId },
          },
        },
      ],
      Enabled: true,
      // The example routes *@example.com and uses plus-addressing: SES must accept the whole domain.
      Recipients: ['example.com'],
      ScanEnabled: true,
      TlsPolicy: 'Require',
    });
    // SES checks its permissions when the rule is created: the policies must exist first.
    assert.deepEqual(rules[0]?.DependsOn?.length, 2);
  });

  it('the topic is KMS-encrypted and only our rules may publish; the key lets SES use it', () => {
    const keyId = onlyLogicalId(example, 'AWS::KMS::Key', 'MailRelayTopicKey');
    example.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] } });
    example.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeyPolicy: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Principal: { Service: 'ses.amazonaws.com' },
            Action: ['kms:GenerateDataKey*', 'kms:Decrypt'],
            // Only through SNS topics of this account and region.
            Condition: { ArnLike: { 'kms:EncryptionContext:aws:sns:topicArn': Match.anyValue() } },
          }),
        ]),
      },
    });
    example.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: 'sns:Publish',
            Principal: { Service: 'ses.amazonaws.com' },
            Condition: { StringEquals: { 'aws:SourceAccount': '123456789012' }, ArnLike: Match.anyValue() },
          }),
        ]),
      },
    });
  });

  it('SNS feeds an encrypted, TLS-only queue whose failures go to a dead-letter queue after 5 receives', () => {
    const dlqId = onlyLogicalId(example, 'AWS::SQS::Queue', 'MailRelayIngestDeadLetters');
    const queueId = onlyLogicalId(example, 'AWS::SQS::Queue', 'MailRelayIngestNotifications');
    example.hasResourceProperties('AWS::SQS::Queue', {
      SqsManagedSseEnabled: true,
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] }, maxReceiveCount: 5 },
      // Six times the router's 60 s timeout, so a slow message is not handed out twice.
      VisibilityTimeout: 360,
    });
    example.hasResourceProperties('AWS::SQS::Queue', {
      SqsManagedSseEnabled: true,
      MessageRetentionPeriod: 1209600,
    });
    for (const id of [queueId, dlqId]) {
      example.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: id }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
    example.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'sqs',
      Endpoint: { 'Fn::GetAtt': [queueId, 'Arn'] },
    });
    example.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [queueId, 'Arn'] },
      FunctionName: { Ref: onlyLogicalId(example, 'AWS::Lambda::Function', 'MailRelayRouter') },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    // By default Lambda scales the router with the queue; aws.routerConcurrency caps it.
    const [mapping] = Object.values(resourcesOfType(example, 'AWS::Lambda::EventSourceMapping'));
    assert.equal(propertiesOf(mapping).ScalingConfig, undefined);
    const [capped] = Object.values(resourcesOfType(full, 'AWS::Lambda::EventSourceMapping'));
    assert.deepEqual(propertiesOf(capped).ScalingConfig, { MaximumConcurrency: 5 });
  });

  it('a custom resource activates the rule set after every rule exists', () => {
    const [cr] = Object.values(resourcesOfType(example, 'Custom::SesActiveReceiptRuleSet'));
    assert.ok(cr, 'no Custom::SesActiveReceiptRuleSet');
    const ruleSetId = onlyLogicalId(example, 'AWS::SES::ReceiptRuleSet', 'MailRelayIngestRuleSet');
    const activatorId = onlyLogicalId(example, 'AWS::Lambda::Function', 'MailRelayIngestActivateRuleSet');
    assert.deepEqual(cr.Properties?.RuleSetName, { Ref: ruleSetId });
    assert.equal(cr.Properties?.ReplaceActive, 'false');
    assert.deepEqual(cr.Properties?.ServiceToken, { 'Fn::GetAtt': [activatorId, 'Arn'] });
    const ruleIds = Object.keys(resourcesOfType(example, 'AWS::SES::ReceiptRule'));
    for (const id of ruleIds) assert.ok(cr.DependsOn?.includes(id), `activation does not wait for ${id}`);
    const statements = statementsOfRole(example, 'MailRelayIngestActivateRuleSetResourcesRole');
    const ses = grantsOf(statements, 'ses:SetActiveReceiptRuleSet');
    assert.equal(ses.length, 1);
    assert.deepEqual(actionsOf(ses[0] as PolicyStatementJson).sort(), [
      'ses:DescribeActiveReceiptRuleSet',
      'ses:SetActiveReceiptRuleSet',
    ]);
    full.hasResourceProperties('Custom::SesActiveReceiptRuleSet', { ReplaceActive: 'true' });
  });

  it('with hosted zones, creates each domain’s MX (and DKIM) records there; without, outputs them', () => {
    full.hasResourceProperties('AWS::Route53::RecordSet', {
      Type: 'MX',
      Name: 'example.com.',
      HostedZoneId: 'Z0123456789ABC',
      ResourceRecords: ['10 inbound-smtp.eu-west-1.amazonaws.com'],
    });
    full.hasResourceProperties('AWS::Route53::RecordSet', {
      Type: 'MX',
      Name: 'example.org.',
      HostedZoneId: 'Z0987654321XYZ',
    });
    // Three DKIM CNAMEs per domain.
    const cnames = Object.values(resourcesOfType(full, 'AWS::Route53::RecordSet')).filter(
      (r) => r.Properties?.Type === 'CNAME',
    );
    assert.equal(cnames.length, 6);
    assert.deepEqual(dnsOutputs(full), []);
    // The MX moves the domain's mail to SES: only once our rule set is active.
    const activation = onlyLogicalId(full, 'Custom::SesActiveReceiptRuleSet', 'MailRelayIngestActiveRuleSet');
    const mx = Object.values(resourcesOfType(full, 'AWS::Route53::RecordSet')).filter(
      (r) => r.Properties?.Type === 'MX',
    );
    assert.equal(mx.length, 2);
    for (const r of mx)
      assert.ok([r.DependsOn ?? []].flat().includes(activation), JSON.stringify(r.DependsOn));

    example.resourceCountIs('AWS::Route53::RecordSet', 0);
    example.hasOutput('DnsRecord4', { Value: 'example.com MX 10 inbound-smtp.us-east-1.amazonaws.com' });
    assert.equal(dnsOutputs(example).length, 4, 'MX + 3 DKIM records');
  });
});

describe('functions', () => {
  it('every function runs on Node 22+ arm64 with tracing, its own log group with retention, and no source-map cost at cold start', () => {
    const fns = Object.entries(resourcesOfType(full, 'AWS::Lambda::Function'));
    assert.ok(fns.length >= 3);
    for (const [id, fn] of fns) {
      if (id.startsWith('CustomS3AutoDeleteObjects')) continue; // CDK's own provider for retainData: false
      const p = fn.Properties ?? {};
      assert.match(String(p.Runtime), /^nodejs(2[2-9]|[3-9]\d)\.x$/, `${id} runtime ${String(p.Runtime)}`);
      assert.deepEqual(p.Architectures, ['arm64'], id);
      assert.deepEqual(p.TracingConfig, { Mode: 'Active' }, id);
      const logGroup = (p.LoggingConfig as { LogGroup?: { Ref?: string } } | undefined)?.LogGroup?.Ref;
      assert.ok(logGroup, `${id} has no log group of its own`);
      assert.equal(
        resourcesOfType(full, 'AWS::Logs::LogGroup')[logGroup]?.Properties?.RetentionInDays,
        90,
        id,
      );
      const env = (p.Environment as { Variables: Record<string, unknown> }).Variables;
      // The map ships in the asset (bundles.test.ts); enabling it would parse it at every cold start.
      assert.equal(env.NODE_OPTIONS, undefined, id);
      assert.equal(p.Handler, 'index.handler', id);
    }
  });

  it('the router, API and send functions get the bucket and table through the environment, and the configuration’s hash', () => {
    for (const prefix of ['MailRelayRouter', 'MailRelayApiFunction', 'MailRelaySendFunction']) {
      const id = onlyLogicalId(example, 'AWS::Lambda::Function', prefix);
      const env = (
        propertiesOf(resourcesOfType(example, 'AWS::Lambda::Function')[id]).Environment as {
          Variables: Record<string, unknown>;
        }
      ).Variables;
      assert.deepEqual(env[HANDLER_ENV.bucket], { Ref: bucketId });
      assert.deepEqual(env[HANDLER_ENV.table], { Ref: tableId });
      // The configuration itself is in the bundle (bundles.test.ts): Lambda variables are limited to 4 KB.
      assert.equal(env[HANDLER_ENV.config], undefined);
      const sha = createHash('sha256').update(JSON.stringify(exampleConfig())).digest('hex');
      assert.equal(env[HANDLER_ENV.configSha256], sha);
    }
  });

  it('the router gets exactly what it uses: its prefixes, the table (no deletes), its queue', () => {
    const s = statementsOfRole(example, 'MailRelayRouterResourcesRole');
    assert.deepEqual(grantsOf(s, 's3:GetObject').flatMap(objectResources).sort(), [
      'forwarded/',
      'inbound/',
      'mailboxes/',
    ]);
    assert.deepEqual(grantsOf(s, 's3:PutObject').flatMap(objectResources).sort(), [
      'forwarded/',
      'mailboxes/',
      'notifications/',
    ]);
    assert.deepEqual(grantsOf(s, 's3:DeleteObject'), []);
    const dynamo = s.filter((x) => actionsOf(x).some((a) => a.startsWith('dynamodb:')));
    assert.equal(dynamo.length, 1);
    assert.deepEqual(dynamo[0]?.Resource, { 'Fn::GetAtt': [tableId, 'Arn'] });
    assert.deepEqual(actionsOf(dynamo[0] as PolicyStatementJson).sort(), [...ROUTER_TABLE_ACTIONS].sort());
    assert.ok(!actionsOf(dynamo[0] as PolicyStatementJson).includes('dynamodb:DeleteItem'));
    const sqs = s.filter((x) => actionsOf(x).some((a) => a.startsWith('sqs:')));
    assert.deepEqual(
      resourceText(sqs[0]?.Resource),
      JSON.stringify({
        'Fn::GetAtt': [onlyLogicalId(example, 'AWS::SQS::Queue', 'MailRelayIngestNotifications'), 'Arn'],
      }),
    );
  });

  it('the API reads mailboxes/ and forwarded/ (the originals notices link to), deletes under mailboxes/ only, writes nothing, and cannot send', () => {
    const s = statementsOfRole(example, 'MailRelayApiFunctionResourcesRole');
    assert.deepEqual(grantsOf(s, 's3:GetObject').flatMap(objectResources), ['mailboxes/', 'forwarded/']);
    assert.deepEqual(grantsOf(s, 's3:DeleteObject').flatMap(objectResources), ['mailboxes/']);
    assert.deepEqual(grantsOf(s, 's3:PutObject'), []);
    assert.doesNotMatch(JSON.stringify(s), /inbound\/|notifications\/|ses:/);
    const dynamo = s.filter((x) => actionsOf(x).some((a) => a.startsWith('dynamodb:')));
    const onTable = dynamo.filter(
      (x) => resourceText(x.Resource) === JSON.stringify({ 'Fn::GetAtt': [tableId, 'Arn'] }),
    );
    assert.deepEqual(onTable.flatMap(actionsOf).sort(), [...API_TABLE_ACTIONS].sort());
    // LIST with unseen reads the index of unread mail: Query on that one index, nothing more.
    const onIndex = dynamo.filter((x) => !onTable.includes(x));
    assert.deepEqual(onIndex.flatMap(actionsOf), [...API_UNSEEN_INDEX_ACTIONS]);
    assert.deepEqual(
      onIndex.map((x) => x.Resource),
      [{ 'Fn::Join': ['', [{ 'Fn::GetAtt': [tableId, 'Arn'] }, `/index/${UNSEEN_INDEX.indexName}`]] }],
    );
  });

  it('the send function writes only the sent views, reads no object, and gets only the table actions it uses', () => {
    const s = statementsOfRole(example, 'MailRelaySendFunctionResourcesRole');
    assert.deepEqual(grantsOf(s, 's3:GetObject'), []);
    assert.deepEqual(grantsOf(s, 's3:DeleteObject'), []);
    assert.deepEqual(grantsOf(s, 's3:ListBucket'), []);
    const [put, ...more] = grantsOf(s, 's3:PutObject');
    assert.ok(put);
    assert.deepEqual(more, []);
    const resource = resourceText(put.Resource);
    assert.ok(resource.includes(bucketId), resource);
    assert.match(resource, /"\/mailboxes\/\*\/sent\/\*"/, 'only mailboxes/<address>/sent/…');
    const dynamo = s.filter((x) => actionsOf(x).some((a) => a.startsWith('dynamodb:')));
    assert.deepEqual(dynamo.flatMap(actionsOf).sort(), [...SEND_TABLE_ACTIONS].sort());
    assert.doesNotMatch(JSON.stringify(s), /inbound\/|notifications\/|forwarded\/|DeleteItem/);
  });

  it('sending is limited to From addresses at our domains, and only the router and the send function may', () => {
    for (const role of ['MailRelayRouterResourcesRole', 'MailRelaySendFunctionResourcesRole']) {
      const [send] = grantsOf(statementsOfRole(full, role), 'ses:SendEmail');
      assert.ok(send, role);
      assert.deepEqual(send.Condition, {
        StringLike: { 'ses:FromAddress': ['*@example.com', '*@example.org'] },
      });
      // aws.sesConfigurationSet: sends go through it, so they are authorized against it too.
      assert.match(resourceText(send.Resource), /:configuration-set\/mail-events"/, role);
      const [plain] = grantsOf(statementsOfRole(example, role), 'ses:SendEmail');
      assert.doesNotMatch(resourceText(plain?.Resource), /configuration-set/, role);
    }
    const functions = resourcesOfType(full, 'AWS::Lambda::Function');
    for (const prefix of ['MailRelayRouter', 'MailRelaySendFunction', 'MailRelayApiFunction']) {
      const fn = propertiesOf(functions[onlyLogicalId(full, 'AWS::Lambda::Function', prefix)]);
      const env = (fn.Environment as { Variables: Record<string, unknown> }).Variables;
      assert.equal(
        env[HANDLER_ENV.sesConfigurationSet],
        prefix === 'MailRelayApiFunction' ? undefined : 'mail-events',
        prefix,
      );
    }
    const senders = Object.keys(resourcesOfType(full, 'AWS::IAM::Policy')).filter((id) =>
      JSON.stringify(resourcesOfType(full, 'AWS::IAM::Policy')[id]).includes('ses:SendEmail'),
    );
    assert.equal(senders.length, 2, `policies granting ses:SendEmail: ${senders.join(', ')}`);
    assert.deepEqual(
      grantsOf(statementsOfRole(full, 'MailRelayApiFunctionResourcesRole'), 'ses:SendEmail'),
      [],
    );
  });

  it("the router may bounce, From our domains' identities only, and nothing else may; bounces off grants none", () => {
    const [bounce, ...more] = grantsOf(
      statementsOfRole(full, 'MailRelayRouterResourcesRole'),
      'ses:SendBounce',
    );
    assert.ok(bounce, 'the router is granted ses:SendBounce');
    assert.deepEqual(more, []);
    assert.deepEqual(actionsOf(bounce), ['ses:SendBounce']);
    const resource = resourceText(bounce.Resource);
    assert.match(resource, /:identity\/example\.com"/);
    assert.match(resource, /:identity\/example\.org"/);
    assert.doesNotMatch(resource, /identity\/\*/, 'no wildcard identity');
    for (const role of ['MailRelaySendFunctionResourcesRole', 'MailRelayApiFunctionResourcesRole']) {
      assert.deepEqual(grantsOf(statementsOfRole(full, role), 'ses:SendBounce'), [], role);
    }
    const off = synthStack({ ...exampleConfig(), bounces: 'off' }).template;
    assert.deepEqual(grantsOf(statementsOfRole(off, 'MailRelayRouterResourcesRole'), 'ses:SendBounce'), []);
  });

  it('notice links: the router signs with the link secret and knows the API URL, the API checks with it, nothing else reads it', () => {
    const [secretId] = Object.keys(resourcesOfType(example, 'AWS::SecretsManager::Secret'));
    assert.ok(secretId, 'a link secret');
    assert.equal(Object.keys(resourcesOfType(example, 'AWS::SecretsManager::Secret')).length, 1);
    const readers = Object.entries(resourcesOfType(example, 'AWS::IAM::Policy'))
      .filter(([, p]) => JSON.stringify(p).includes('secretsmanager:GetSecretValue'))
      .map(([id]) => id.replace(/ResourcesRoleDefaultPolicy.*$/, ''));
    assert.deepEqual(readers.sort(), ['MailRelayApiFunction', 'MailRelayRouter']);
    for (const role of ['MailRelayRouterResourcesRole', 'MailRelayApiFunctionResourcesRole']) {
      const [read] = grantsOf(statementsOfRole(example, role), 'secretsmanager:GetSecretValue');
      assert.deepEqual(read?.Resource, { Ref: secretId }, role);
    }
    const functions = resourcesOfType(example, 'AWS::Lambda::Function');
    const envOf = (prefix: string) =>
      (
        propertiesOf(functions[onlyLogicalId(example, 'AWS::Lambda::Function', prefix)]).Environment as {
          Variables: Record<string, unknown>;
        }
      ).Variables;
    const router = envOf('MailRelayRouter');
    assert.deepEqual(router[HANDLER_ENV.linkSecret], { Ref: secretId });
    // The stage's URL: the API that serves GET /v1/blobs/forwarded/….
    assert.match(JSON.stringify(router[HANDLER_ENV.linkBaseUrl]), /execute-api/);
    assert.deepEqual(envOf('MailRelayApiFunction')[HANDLER_ENV.linkSecret], { Ref: secretId });
    assert.equal(envOf('MailRelaySendFunction')[HANDLER_ENV.linkSecret], undefined);
  });

  it('no role has a managed policy, and no statement grants a service-wide wildcard action', () => {
    for (const [id, role] of Object.entries(resourcesOfType(example, 'AWS::IAM::Role'))) {
      assert.equal(role.Properties?.ManagedPolicyArns, undefined, `${id} has managed policies`);
    }
    for (const p of Object.values(resourcesOfType(full, 'AWS::IAM::Policy'))) {
      for (const st of (propertiesOf(p).PolicyDocument as { Statement: PolicyStatementJson[] }).Statement) {
        for (const a of actionsOf(st)) assert.doesNotMatch(a, /(^\*$|:\*$)/, `wildcard action ${a}`);
      }
    }
  });
});

describe('retention', () => {
  it('without retention.mailboxDays there is no sweep: no schedule, no function, no alarm', () => {
    example.resourceCountIs('AWS::Events::Rule', 0);
    const fns = Object.keys(resourcesOfType(example, 'AWS::Lambda::Function'));
    assert.deepEqual(
      fns.filter((id) => id.startsWith('MailRelayRetention')),
      [],
    );
  });

  it('with it, an EventBridge rule invokes the sweep daily, and only that rule may', () => {
    const fnId = onlyLogicalId(full, 'AWS::Lambda::Function', 'MailRelayRetentionSweep');
    const ruleId = onlyLogicalId(full, 'AWS::Events::Rule', 'MailRelayRetentionSchedule');
    full.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'cron(17 3 * * ? *)',
      State: 'ENABLED',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fnId, 'Arn'] } })],
    });
    full.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      FunctionName: { 'Fn::GetAtt': [fnId, 'Arn'] },
      Principal: 'events.amazonaws.com',
      SourceArn: { 'Fn::GetAtt': [ruleId, 'Arn'] },
    });
    const fn = propertiesOf(resourcesOfType(full, 'AWS::Lambda::Function')[fnId]);
    // Lambda's maximum: the handler stops 30 s before it and the next run continues.
    assert.equal(fn.Timeout, 900);
    const env = (fn.Environment as { Variables: Record<string, unknown> }).Variables;
    const fullBucket = onlyLogicalId(full, 'AWS::S3::Bucket', 'MailRelayStorageBucket');
    const fullTable = onlyLogicalId(full, 'AWS::DynamoDB::Table', 'MailRelayStorageIndex');
    assert.deepEqual(env[HANDLER_ENV.bucket], { Ref: fullBucket });
    assert.deepEqual(env[HANDLER_ENV.table], { Ref: fullTable });
    assert.equal(
      env[HANDLER_ENV.configSha256],
      createHash('sha256').update(JSON.stringify(fullConfig())).digest('hex'),
    );
  });

  it('the sweep deletes under mailboxes/ only, reads no mail, and gets only the table actions it uses', () => {
    const s = statementsOfRole(full, 'MailRelayRetentionSweepResourcesRole');
    const fullTable = onlyLogicalId(full, 'AWS::DynamoDB::Table', 'MailRelayStorageIndex');
    const fullBucket = onlyLogicalId(full, 'AWS::S3::Bucket', 'MailRelayStorageBucket');
    const [del, ...moreDeletes] = grantsOf(s, 's3:DeleteObject');
    assert.ok(del);
    assert.deepEqual(moreDeletes, []);
    assert.deepEqual(actionsOf(del), ['s3:DeleteObject']);
    assert.match(resourceText(del.Resource), new RegExp(`${fullBucket}.*"/mailboxes/\\*"`));
    assert.match(resourceText(del.Resource), new RegExp(`${fullBucket}.*"/retention/\\*"`));
    const [list, ...moreLists] = grantsOf(s, 's3:ListBucket');
    assert.ok(list);
    assert.deepEqual(moreLists, []);
    assert.deepEqual(list.Resource, { 'Fn::GetAtt': [fullBucket, 'Arn'] });
    // Unconditioned: with a ListBucket limited to mailboxes/*, S3 answered the GetObject of an absent
    // retention/resume.json with 403 instead of 404, and every sweep failed (deploy-limits.test.ts).
    assert.equal(list.Condition, undefined);
    // Its own object only: where a stopped sweep goes on from (SWEEP_RESUME_KEY).
    for (const action of ['s3:GetObject', 's3:PutObject']) {
      const grants = grantsOf(s, action);
      assert.equal(grants.length, 1, action);
      assert.match(resourceText(grants[0]?.Resource), new RegExp(`${fullBucket}.*"/retention/\\*"`));
      assert.doesNotMatch(resourceText(grants[0]?.Resource), /mailboxes/, action);
    }
    assert.ok(SWEEP_RESUME_KEY.startsWith(PREFIX.retention));
    assert.doesNotMatch(JSON.stringify(s), /inbound\/|notifications\/|forwarded\/|ses:|sqs:/);
    const dynamo = s.filter((x) => actionsOf(x).some((a) => a.startsWith('dynamodb:')));
    assert.equal(dynamo.length, 1);
    assert.deepEqual(dynamo[0]?.Resource, { 'Fn::GetAtt': [fullTable, 'Arn'] });
    assert.deepEqual(actionsOf(dynamo[0] as PolicyStatementJson).sort(), [...RETENTION_TABLE_ACTIONS].sort());
  });

  it('a failed sweep raises an alarm', () => {
    const fnId = onlyLogicalId(full, 'AWS::Lambda::Function', 'MailRelayRetentionSweep');
    full.resourceCountIs('AWS::CloudWatch::Alarm', 7);
    full.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Errors',
      Namespace: 'AWS/Lambda',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: fnId } }],
      Period: 3600,
    });
  });
});

describe('API', () => {
  it('an HTTP API sends POST …/send to the send function and every other request to the API function; the $default stage throttles and logs', () => {
    const apiFn = onlyLogicalId(example, 'AWS::Lambda::Function', 'MailRelayApiFunction');
    const sendFn = onlyLogicalId(example, 'AWS::Lambda::Function', 'MailRelaySendFunction');
    const integrations = resourcesOfType(example, 'AWS::ApiGatewayV2::Integration');
    const target = (routeKey: string) => {
      const routes = Object.values(resourcesOfType(example, 'AWS::ApiGatewayV2::Route')).filter(
        (r) => r.Properties?.RouteKey === routeKey,
      );
      assert.equal(routes.length, 1, routeKey);
      const ref = JSON.stringify(routes[0]?.Properties?.Target);
      const [integrationId] = Object.keys(integrations).filter((id) => ref.includes(id));
      assert.ok(integrationId, `${routeKey} has no integration`);
      return JSON.stringify(integrations[integrationId]?.Properties?.IntegrationUri);
    };
    assert.match(target('$default'), new RegExp(`"${apiFn}"`));
    assert.match(target('POST /v1/mailboxes/{address}/send'), new RegExp(`"${sendFn}"`));
    example.resourceCountIs('AWS::ApiGatewayV2::Route', 2);
    example.hasResourceProperties('AWS::ApiGatewayV2::Api', {
      ProtocolType: 'HTTP',
      CorsConfiguration: Match.absent(),
    });
    example.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      IntegrationUri: { 'Fn::GetAtt': [apiFn, 'Arn'] },
      PayloadFormatVersion: '2.0',
    });
    example.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: '$default' });
    const logsId = onlyLogicalId(example, 'AWS::Logs::LogGroup', 'MailRelayApiAccessLogs');
    example.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      AccessLogSettings: {
        DestinationArn: { 'Fn::GetAtt': [logsId, 'Arn'] },
        Format: Match.stringLikeRegexp('requestId'),
      },
    });
  });

  it('the access log format never includes headers or the query string (bearer tokens stay out of logs)', () => {
    const [stage] = Object.values(resourcesOfType(example, 'AWS::ApiGatewayV2::Stage'));
    const format = String((propertiesOf(stage).AccessLogSettings as { Format: string }).Format);
    assert.doesNotMatch(format, /header|querystring|authorizer/i);
    assert.doesNotThrow(() => JSON.parse(format));
  });

  it('CORS and throttling follow the aws settings', () => {
    full.hasResourceProperties('AWS::ApiGatewayV2::Api', {
      CorsConfiguration: Match.objectLike({ AllowOrigins: ['https://app.example.com'] }),
    });
    // The presigned downloads the API redirects large messages to are readable by the browser
    // that followed the redirect (from the `null` origin of a cross-origin redirect), for GET and
    // HEAD only: the web inbox's, on the API's own origin, with or without browser origins.
    for (const template of [full, example]) {
      template.hasResourceProperties('AWS::S3::Bucket', {
        CorsConfiguration: {
          CorsRules: [Match.objectLike({ AllowedMethods: ['GET', 'HEAD'], AllowedOrigins: ['*'] })],
        },
      });
    }
    full.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 5, ThrottlingBurstLimit: 10 },
    });
  });

  it('a browser on a configured origin may send every request header the API reads, and read the answers it needs', () => {
    // Headers a preflight must allow: every one the API's code reads, but the safelisted ones
    // (the Fetch standard's CORS-safelisted request headers; Range only in its simplest form).
    const apiDir = join(PROJECT_ROOT, 'functions/api');
    const read = new Set<string>();
    for (const file of readdirSync(apiDir)) {
      const source = readFileSync(join(apiDir, file), 'utf8');
      for (const m of source.matchAll(/\.req\.header\('([^']+)'\)/g)) read.add((m[1] ?? '').toLowerCase());
    }
    assert.ok(read.has('range') && read.has('if-none-match'), [...read].join(', '));
    const api = Object.values(resourcesOfType(full, 'AWS::ApiGatewayV2::Api'))[0];
    const cors = propertiesOf(api).CorsConfiguration as { AllowHeaders: string[]; ExposeHeaders: string[] };
    // (A preflight's own Access-Control-Request-Method is the browser's, never a script's.)
    const safelisted = new Set([
      'accept',
      'accept-language',
      'content-language',
      'access-control-request-method',
    ]);
    assert.deepEqual(
      [...read].filter((h) => !safelisted.has(h) && !cors.AllowHeaders.includes(h)),
      [],
      'headers a preflight would refuse',
    );
    // Beyond the safelisted response headers: what a client reads to go on (a redirect, a
    // revalidation, a long-poll's cursor, a range's position, how to authenticate).
    for (const h of [
      'location',
      'etag',
      'mail-relay-cursor',
      'content-range',
      'accept-ranges',
      'www-authenticate',
    ]) {
      assert.ok(cors.ExposeHeaders.includes(h), h);
    }
    // And the presigned S3 downloads the API redirects to answer ranges a browser may read.
    const bucket = Object.values(resourcesOfType(full, 'AWS::S3::Bucket')).find(
      (b) => (b.Properties as { CorsConfiguration?: unknown }).CorsConfiguration !== undefined,
    );
    const rules = (
      propertiesOf(bucket).CorsConfiguration as {
        CorsRules: { ExposedHeaders: string[]; AllowedHeaders: string[] }[];
      }
    ).CorsRules;
    const rule = rules[0];
    assert.ok(rule?.AllowedHeaders.includes('range'));
    assert.ok(rule?.ExposedHeaders.includes('content-range'));
  });
});

describe('operations', () => {
  it('alarms on dead letters, mail waiting for the router, router errors, failed forwards and bounces, and API 5xx', () => {
    example.resourceCountIs('AWS::CloudWatch::Alarm', 6);
    const queueId = onlyLogicalId(example, 'AWS::SQS::Queue', 'MailRelayIngestNotifications');
    // A failed record is reported to SQS, not as a Lambda error: the queue's age is what shows it.
    example.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateAgeOfOldestMessage',
      Namespace: 'AWS/SQS',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [queueId, 'QueueName'] } }],
      Statistic: 'Maximum',
      Threshold: 600,
      ComparisonOperator: 'GreaterThanThreshold',
    });
    const dlqId = onlyLogicalId(example, 'AWS::SQS::Queue', 'MailRelayIngestDeadLetters');
    example.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [dlqId, 'QueueName'] } }],
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
    });
    example.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Errors',
      Namespace: 'AWS/Lambda',
    });
    example.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: '5xx',
      Namespace: 'AWS/ApiGateway',
    });
    example.resourceCountIs('AWS::SNS::Subscription', 1); // only SNS -> SQS: no e-mail configured
  });

  it("the forward and bounce failure alarms watch the router's own metrics, as the router emits them", () => {
    // The router's EMF: its namespace, `service` (its Powertools service name) and `function` (the
    // name Lambda gives it) as dimensions (asserted on what the handler prints in
    // test/e2e/router-handler.test.ts). The function's name keeps another stack's failures out.
    const router = onlyLogicalId(example, 'AWS::Lambda::Function', 'MailRelayRouter');
    for (const metric of [FORWARD_FAILURES_METRIC, BOUNCE_FAILURES_METRIC]) {
      example.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: ROUTER_METRICS_NAMESPACE,
        MetricName: metric,
        Dimensions: [
          { Name: ROUTER_FUNCTION_DIMENSION, Value: { Ref: router } },
          { Name: 'service', Value: ROUTER_SERVICE_NAME },
        ],
        Statistic: 'Sum',
        Period: 300,
        Threshold: 0,
        ComparisonOperator: 'GreaterThanThreshold',
        // Published with every batch, zero included: no data is no mail.
        TreatMissingData: 'notBreaching',
      });
    }
    // No bounces, no bounce alarm.
    const off = synthStack({ ...exampleConfig(), bounces: 'off' }).template;
    off.resourceCountIs('AWS::CloudWatch::Alarm', 5);
    const watched = Object.values(resourcesOfType(off, 'AWS::CloudWatch::Alarm')).map(
      (a) => a.Properties?.MetricName,
    );
    assert.ok(watched.includes(FORWARD_FAILURES_METRIC));
    assert.ok(!watched.includes(BOUNCE_FAILURES_METRIC));
  });

  it('with an alarm e-mail, the alarms notify an encrypted topic with that subscription', () => {
    full.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@elsewhere.example',
    });
    const topicId = onlyLogicalId(full, 'AWS::SNS::Topic', 'MailRelayAlarmsTopic');
    full.hasResourceProperties('AWS::SNS::Topic', {
      KmsMasterKeyId: Match.anyValue(),
      DisplayName: 'mail-relay alarms',
    });
    const alarms = Object.values(resourcesOfType(full, 'AWS::CloudWatch::Alarm'));
    for (const a of alarms) assert.deepEqual(a.Properties?.AlarmActions, [{ Ref: topicId }]);
  });
});

describe('outputs', () => {
  it('API URL, bucket, table and rule set, under the names the CLI reads', () => {
    example.hasOutput('ApiUrl', { Value: Match.objectLike({ 'Fn::Join': Match.anyValue() }) });
    example.hasOutput('BucketName', { Value: { Ref: bucketId } });
    example.hasOutput('TableName', { Value: { Ref: tableId } });
    example.hasOutput('RuleSetName', {
      Value: { Ref: onlyLogicalId(example, 'AWS::SES::ReceiptRuleSet', 'MailRelayIngestRuleSet') },
    });
  });
});
