/**
 * The stack `npx cdk deploy` creates: the MailRelay construct and the outputs a newcomer needs
 * (`npx mail-relay token create --stack <name>` reads TableName and BucketName from them).
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import type { DnsRecord } from './ingest.ts';
import { MailRelay } from './mail-relay.ts';

export interface MailRelayStackProps extends StackProps {
  /** The parsed `mail-relay.config.json`. */
  readonly config: unknown;
  /**
   * Names the configuration in error messages.
   * @default 'configuration'
   */
  readonly configSource?: string;
}

export class MailRelayStack extends Stack {
  readonly relay: MailRelay;

  constructor(scope: Construct, id: string, props: MailRelayStackProps) {
    super(scope, id, props);
    this.relay = new MailRelay(this, 'MailRelay', {
      config: props.config,
      ...(props.configSource ? { configSource: props.configSource } : {}),
    });
    const { relay } = this;
    new CfnOutput(this, 'ApiUrl', { value: relay.api.url, description: 'Base URL of the HTTP API' });
    new CfnOutput(this, 'BucketName', { value: relay.storage.bucket.bucketName });
    new CfnOutput(this, 'TableName', { value: relay.storage.table.tableName });
    new CfnOutput(this, 'LinkSecretArn', {
      value: relay.linkSecret.secretArn,
      description:
        'Signs the download links of oversize-forward notices (used by `mail-relay replay --stack`)',
    });
    new CfnOutput(this, 'RuleSetName', {
      value: relay.ingest.ruleSet.receiptRuleSetName,
      description: 'The SES receipt rule set (activated by the stack)',
    });
    // One output per record while they fit in CloudFormation's 200 outputs per template (a template
    // with more is refused at deploy: 49 domains without hosted zones have 196 records); past that,
    // several records per output, in order, separated by ` ; `.
    const budget = MAX_TEMPLATE_OUTPUTS - this.node.findAll().filter((c) => c instanceof CfnOutput).length;
    const records = relay.dnsRecords;
    const perOutput = Math.ceil(records.length / Math.max(1, budget));
    for (let i = 0; i * perOutput < records.length; i++) {
      const group = records.slice(i * perOutput, (i + 1) * perOutput);
      const [only] = group;
      new CfnOutput(this, `DnsRecord${i + 1}`, {
        value: group.map(recordLine).join(' ; '),
        description:
          group.length > 1 || only === undefined
            ? 'Create these DNS records (MX: mail to SES; CNAME: DKIM), separated by " ; "'
            : only.type === 'MX'
              ? "Create this MX record: it sends the domain's mail to SES"
              : 'Create this DKIM record (SES verifies the domain with it)',
      });
    }
  }
}

/** CloudFormation's quota: outputs per template. */
export const MAX_TEMPLATE_OUTPUTS = 200;

function recordLine(r: DnsRecord): string {
  return `${r.name} ${r.type} ${r.value}`;
}
