/**
 * Ingest (design §1): SES receives mail for the configured domains, writes the raw message to
 * `inbound/` in the bucket and publishes the "Received" notification to an SNS topic; SNS feeds an
 * SQS queue (with a dead-letter queue) that triggers the router function.
 */
import { fileURLToPath } from 'node:url';
import { CustomResource, Duration, Stack } from 'aws-cdk-lib';
import { PolicyStatement, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { MxRecord, PublicHostedZone } from 'aws-cdk-lib/aws-route53';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import {
  EmailIdentity,
  Identity,
  type IReceiptRuleAction,
  type ReceiptRule,
  type ReceiptRuleActionConfig,
  ReceiptRuleSet,
  TlsPolicy,
} from 'aws-cdk-lib/aws-ses';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { SqsSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { MAX_RECEIVE_COUNT } from '../functions/handlers/queue-settings.ts';
import { HouseFunction } from './house-function.ts';
import { splitIntoRules } from './recipients.ts';
import { inboundSmtpHost } from './ses-regions.ts';
import { PREFIX } from './storage.ts';

/** Lambda's guidance: the queue's visibility timeout at least six times the function's timeout. */
const VISIBILITY_TIMEOUT_FACTOR = 6;

export interface MailIngestProps {
  /** The domains SES receives for; each becomes an SES identity (with Easy DKIM) unless `createIdentities` is false. */
  readonly domains: readonly string[];
  /** Receipt rule recipients (domains or addresses), in order; split into rules of at most 100. */
  readonly recipients: readonly string[];
  /** Where SES writes raw messages (under `inbound/`). */
  readonly bucket: IBucket;
  /** Encrypts the notification topic; SES must be allowed to use it (MailRelay adds that to the key policy). */
  readonly topicKey: IKey;
  /** The router function; the queue becomes its event source. */
  readonly router: HouseFunction;
  /**
   * Create an SES identity (domain, Easy DKIM) per domain. False when they exist already in this
   * account and region (CloudFormation cannot adopt them).
   * @default true
   */
  readonly createIdentities?: boolean;
  /**
   * Route 53 hosted zone id per domain: the MX record and (with `createIdentities`) the DKIM records
   * are created there. No look-up happens: the zone is named after the domain.
   * @default - no DNS records; they are listed in the stack outputs instead
   */
  readonly hostedZoneIds?: Readonly<Record<string, string>>;
  /**
   * Activate our rule set even when another one is active (SES allows one per region).
   * @default false
   */
  readonly replaceActiveRuleSet?: boolean;
  /**
   * The router's maximum concurrency on the queue (SQS event source `maxConcurrency`, 2–1000).
   * @default - unbounded (Lambda scales with the queue)
   */
  readonly routerConcurrency?: number;
  /** @default - the house default */
  readonly logRetention?: RetentionDays;
}

/**
 * The S3 action: raw message to `inbound/<sesMessageId>`, notification to the topic. Written here
 * rather than taken from aws-ses-actions because that one grants SES on aws:SourceAccount only; the
 * bucket and topic policies below also pin aws:SourceArn to this stack's rule set.
 */
class StoreInboundAction implements IReceiptRuleAction {
  constructor(
    private readonly bucket: IBucket,
    private readonly topic: Topic,
  ) {}

  bind(): ReceiptRuleActionConfig {
    return {
      s3Action: {
        bucketName: this.bucket.bucketName,
        objectKeyPrefix: PREFIX.inbound,
        topicArn: this.topic.topicArn,
      },
    };
  }
}

export interface DnsRecord {
  readonly name: string;
  readonly type: 'MX' | 'CNAME';
  readonly value: string;
}

export class MailIngest extends Construct {
  readonly ruleSet: ReceiptRuleSet;
  readonly rules: readonly ReceiptRule[];
  readonly topic: Topic;
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
  readonly identities: ReadonlyMap<string, EmailIdentity>;
  /** The DNS records the user must create (those not created in Route 53 by the stack). */
  readonly dnsRecords: readonly DnsRecord[];

  constructor(scope: Construct, id: string, props: MailIngestProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const hostedZoneIds = props.hostedZoneIds ?? {};
    const dnsRecords: DnsRecord[] = [];

    const identities = new Map<string, EmailIdentity>();
    const mxRecords: MxRecord[] = [];
    for (const domain of props.domains) {
      const zoneId = hostedZoneIds[domain];
      // The zone is named after the domain even when the real zone is a parent (mail.example.com in
      // example.com): record names are absolute, and Route 53 only needs them inside the zone.
      const zone = zoneId
        ? PublicHostedZone.fromPublicHostedZoneAttributes(this, `Zone-${domain}`, {
            hostedZoneId: zoneId,
            zoneName: domain,
          })
        : undefined;
      if (props.createIdentities ?? true) {
        const identity = new EmailIdentity(this, `Identity-${domain}`, {
          identity: zone ? Identity.publicHostedZone(zone) : Identity.domain(domain),
        });
        identities.set(domain, identity);
        if (!zone) {
          for (const r of identity.dkimRecords)
            dnsRecords.push({ name: r.name, type: 'CNAME', value: r.value });
        }
      }
      const mx = { priority: 10, hostName: inboundSmtpHost(stack.region) };
      if (zone) {
        mxRecords.push(new MxRecord(this, `Mx-${domain}`, { zone, recordName: `${domain}.`, values: [mx] }));
      } else {
        dnsRecords.push({ name: domain, type: 'MX', value: `${mx.priority} ${mx.hostName}` });
      }
    }
    this.identities = identities;
    this.dnsRecords = dnsRecords;

    // Queue first: its visibility timeout follows the router's timeout.
    this.deadLetterQueue = new Queue(this, 'DeadLetters', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // The longest SQS allows: a failed message waits here for a redrive.
      retentionPeriod: Duration.days(14),
    });
    const routerTimeout = props.router.timeout ?? Duration.seconds(30);
    this.queue = new Queue(this, 'Notifications', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(routerTimeout.toSeconds() * VISIBILITY_TIMEOUT_FACTOR),
      retentionPeriod: Duration.days(14),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: MAX_RECEIVE_COUNT },
    });

    this.topic = new Topic(this, 'Received', {
      displayName: 'mail-relay: SES Received notifications',
      masterKey: props.topicKey,
    });
    // Not raw: the router parses the SNS envelope (functions/handlers/router-handler.ts).
    this.topic.addSubscription(new SqsSubscription(this.queue, { rawMessageDelivery: false }));

    props.router.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: 10,
        maxBatchingWindow: Duration.seconds(1),
        // One bad message must not make its batch-mates retry (and count towards their DLQ limit).
        reportBatchItemFailures: true,
        ...(props.routerConcurrency === undefined ? {} : { maxConcurrency: props.routerConcurrency }),
      }),
    );

    this.ruleSet = new ReceiptRuleSet(this, 'RuleSet');
    const ruleArns = stack.formatArn({
      service: 'ses',
      resource: 'receipt-rule-set',
      resourceName: `${this.ruleSet.receiptRuleSetName}:receipt-rule/*`,
    });
    const fromOurRules = {
      StringEquals: { 'aws:SourceAccount': stack.account },
      ArnLike: { 'aws:SourceArn': ruleArns },
    };
    const bucketGrant = props.bucket.addToResourcePolicy(
      new PolicyStatement({
        sid: 'SesWritesInbound',
        principals: [new ServicePrincipal('ses.amazonaws.com')],
        actions: ['s3:PutObject'],
        resources: [props.bucket.arnForObjects(`${PREFIX.inbound}*`)],
        conditions: fromOurRules,
      }),
    );
    const topicGrant = this.topic.addToResourcePolicy(
      new PolicyStatement({
        sid: 'SesPublishesReceived',
        principals: [new ServicePrincipal('ses.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: fromOurRules,
      }),
    );

    const action = new StoreInboundAction(props.bucket, this.topic);
    const rules: ReceiptRule[] = [];
    splitIntoRules(props.recipients).forEach((recipients, i) => {
      const rule = this.ruleSet.addRule(`Rule${i + 1}`, {
        recipients,
        enabled: true,
        scanEnabled: true,
        tlsPolicy: TlsPolicy.REQUIRE,
        actions: [action],
      });
      // SES checks that it may write to the bucket and publish to the topic when the rule is created.
      for (const grant of [bucketGrant, topicGrant]) {
        if (grant.policyDependable) rule.node.addDependency(grant.policyDependable);
      }
      rules.push(rule);
    });
    this.rules = rules;

    const activator = new HouseFunction(this, 'ActivateRuleSet', {
      entry: fileURLToPath(new URL('./custom-resources/active-receipt-rule-set.ts', import.meta.url)),
      description: 'mail-relay: activates the SES receipt rule set (custom resource)',
      timeout: Duration.seconds(30),
      memorySize: 128,
      runtimeProvidedModules: ['@aws-sdk/client-ses'],
      ...(props.logRetention ? { logRetention: props.logRetention } : {}),
    });
    activator.allowUnscoped(
      ['ses:DescribeActiveReceiptRuleSet', 'ses:SetActiveReceiptRuleSet'],
      'SES DescribeActiveReceiptRuleSet and SetActiveReceiptRuleSet act on the region, not on a resource,' +
        ' and have no resource-level permissions (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonses.html).',
    );
    const activation = new CustomResource(this, 'ActiveRuleSet', {
      serviceToken: activator.functionArn,
      resourceType: 'Custom::SesActiveReceiptRuleSet',
      properties: {
        RuleSetName: this.ruleSet.receiptRuleSetName,
        ReplaceActive: String(props.replaceActiveRuleSet ?? false),
      },
    });
    // Activate only a complete rule set; on delete, deactivate before the rules go.
    for (const rule of rules) activation.node.addDependency(rule);
    // Mail follows the MX record: point it at SES only once SES has somewhere to put the mail.
    for (const record of mxRecords) record.node.addDependency(activation);
  }
}
