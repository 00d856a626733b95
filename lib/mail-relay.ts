/**
 * `MailRelay`: the whole relay as one construct (storage, ingest, API, retention, alarms), for the stack in
 * this repository and for anyone who has a CDK app of their own:
 *
 *   new MailRelay(stack, 'Mail', { config: JSON.parse(readFileSync('mail-relay.config.json', 'utf8')) });
 *
 * The configuration is validated here by the same schema the functions use at run time, so a bad
 * configuration stops `cdk synth` with one line per wrong path instead of failing in Lambda.
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Annotations, Duration, RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import { PolicyStatement, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import {
  type AwsSettings,
  awsSettingsSchema,
  type Config,
  configSchema,
  domainOf,
  forwardedRetentionDays,
  parseConfig,
} from '../functions/core/config.ts';
import { ConfigError } from '../functions/core/errors.ts';
import { mailboxKeys, sentMailboxKey } from '../functions/core/keys.ts';
import { MailAlarms } from './alarms.ts';
import { MailApi } from './api.ts';
import { HouseFunction } from './house-function.ts';
import { type DnsRecord, MailIngest } from './ingest.ts';
import { acknowledge } from './nag.ts';
import { MAX_RECEIPT_RULES, MAX_RECIPIENTS_PER_RULE, receiptRecipients } from './recipients.ts';
import { MailRetention } from './retention.ts';
import { receivingRegionProblem } from './ses-regions.ts';
import { MailStorage, PREFIX, UNSEEN_INDEX } from './storage.ts';

/** Environment variables the handlers read (functions/handlers/settings.ts). */
export const HANDLER_ENV = {
  bucket: 'BUCKET_NAME',
  table: 'TABLE_NAME',
  /** Set from the bundle by lib/lambda/bundled-config.ts, not as a Lambda variable (4 KB limit). */
  config: 'MAIL_RELAY_CONFIG_JSON',
  /** SHA-256 of the bundled configuration: shows in the console which one a function runs. */
  configSha256: 'MAIL_RELAY_CONFIG_SHA256',
  /** The SES configuration set of outgoing mail (router forwards, the send function), when configured. */
  sesConfigurationSet: 'SES_CONFIGURATION_SET',
  /** The secret that signs the links of oversize-forward notices (router) and checks them (API). */
  linkSecret: 'LINK_SECRET_ARN',
  /** The API's URL, for the links the router signs. */
  linkBaseUrl: 'LINK_BASE_URL',
} as const;

/** The build-time identifier lib/lambda/bundled-config.ts reads. */
export const BUNDLED_CONFIG_IDENTIFIER = '__MAIL_RELAY_CONFIG_JSON__';

/** Entry modules of the functions (the handlers in functions/handlers/, behind the configuration). */
export const HANDLER_ENTRIES = {
  router: fileURLToPath(new URL('./lambda/router.ts', import.meta.url)),
  api: fileURLToPath(new URL('./lambda/api.ts', import.meta.url)),
  /** `POST /v1/mailboxes/{address}/send`, routed to its own function (docs/adr/0012-lambda-bundles.md). */
  send: fileURLToPath(new URL('./lambda/send.ts', import.meta.url)),
  /** Only when `retention.mailboxDays` is set. */
  retention: fileURLToPath(new URL('./lambda/retention.ts', import.meta.url)),
} as const;

/**
 * DynamoDB actions of the index adapter (functions/adapters/aws/dynamodb-mailbox-index.ts), per
 * function. A TransactWriteItems needs the action of each item (Put, Update, Delete,
 * ConditionCheck), not an action of its own. test/contract/aws.test.ts records what each function's
 * index operations send and checks it against these lists.
 */
export const ROUTER_TABLE_ACTIONS = [
  'dynamodb:GetItem', // deliveryState (entry, deletion), the commit counter (deliver), getSend
  'dynamodb:PutItem', // deliver (entry, its commit's SEQ# item, mailbox registry)
  'dynamodb:UpdateItem', // deliver (counters), claimSend / finishSend of forwards
  'dynamodb:ConditionCheckItem', // deliver (no deletion of the id remembered)
];
export const API_TABLE_ACTIONS = [
  'dynamodb:GetItem', // tokens, entries, counters (and the commit counter of wait)
  'dynamodb:BatchGetItem', // listMailboxes, wait's entries by commit
  'dynamodb:Query', // list, listMailboxes, wait's commits
  'dynamodb:UpdateItem', // seen flags, DELE's counters
  'dynamodb:DeleteItem', // DELE (the entry and its commit's SEQ# item)
  'dynamodb:PutItem', // DELE (the deletion remembered)
];
/**
 * The API's actions on the index of unread mail (LIST with `unseen`), granted on that index alone.
 * No other function reads it: POP3, deletes and the long-poll read the table, strongly consistent.
 */
export const API_UNSEEN_INDEX_ACTIONS = ['dynamodb:Query'];
export const SEND_TABLE_ACTIONS = [
  'dynamodb:GetItem', // the token, the sent copy's deliveryState and commit counter
  'dynamodb:PutItem', // the sent copy's entry, its SEQ# item and its mailbox registry item (deliver)
  'dynamodb:UpdateItem', // the sent view's counters (deliver), claimSend / finishSend
  'dynamodb:ConditionCheckItem', // deliver (no deletion of the id remembered)
];

/**
 * Where the sent views' blobs are, for every mailbox: `mailboxes/<any address>/sent/`, with `*` for
 * the address (an IAM wildcard, not a key prefix). Made by the functions that make the keys.
 */
const SENT_VIEWS = mailboxKeys.prefix(sentMailboxKey('*'));

/**
 * What the API function's bundle must never contain: it serves reads, so it neither parses
 * (mailparser and the packages only mailparser brings) nor composes (nodemailer) nor sends (SES).
 * Synth fails if one of them gets in (docs/adr/0012-lambda-bundles.md).
 */
export const API_FORBIDDEN_PACKAGES = [
  'mailparser',
  '@zone-eu/mailsplit',
  'libmime',
  'iconv-lite',
  'html-to-text',
  'nodemailer',
  '@aws-sdk/client-sesv2',
] as const;

export interface MailRelayProps {
  /**
   * The relay configuration: the parsed JSON of `mail-relay.config.json`. Validated at synth and
   * built into every function's bundle as is (read at cold start as MAIL_RELAY_CONFIG_JSON). Its
   * optional `aws` object supplies the defaults of the settings below.
   */
  readonly config: unknown;
  /**
   * Names the configuration in error messages (a file path).
   * @default 'configuration'
   */
  readonly configSource?: string;
  /**
   * Route 53 hosted zone id per domain; the MX and DKIM records of that domain are created there.
   * @default - `aws.hostedZoneIds`, else none (the records to create are in the stack outputs)
   */
  readonly hostedZoneIds?: Readonly<Record<string, string>>;
  /**
   * Create the SES domain identities (Easy DKIM). False when they already exist in the account.
   * @default - `aws.createIdentities`, else true
   */
  readonly createIdentities?: boolean;
  /**
   * E-mail address that receives the alarms.
   * @default - `aws.alarmEmail`, else none (alarms in the CloudWatch console only)
   */
  readonly alarmEmail?: string;
  /**
   * Keep the bucket and the table, with the mail in them, when the stack is deleted.
   * @default - `aws.retainData`, else true
   */
  readonly retainData?: boolean;
  /**
   * Browser origins allowed to call the HTTP API.
   * @default - `aws.corsOrigins`, else CORS off
   */
  readonly corsOrigins?: readonly string[];
  /**
   * Take over SES's active receipt rule set if another one is active.
   * @default - `aws.replaceActiveRuleSet`, else false (deploy fails with an explanation)
   */
  readonly replaceActiveRuleSet?: boolean;
  /**
   * Skip the check that SES receives mail in the stack's region.
   * @default - `aws.skipRegionCheck`, else false
   */
  readonly skipRegionCheck?: boolean;
  /**
   * Days CloudWatch keeps function and access logs.
   * @default - `aws.logRetentionDays`, else 30
   */
  readonly logRetentionDays?: number;
  /**
   * API stage throttling.
   * @default - `aws.apiThrottle`, else 50 requests/s with bursts of 100
   */
  readonly apiThrottle?: { readonly rateLimit: number; readonly burstLimit: number };
  /**
   * An existing SES configuration set that every send (forwards, `POST …/send`) goes through.
   * @default - `aws.sesConfigurationSet`, else none
   */
  readonly sesConfigurationSet?: string;
  /**
   * At most this many router invocations at once (2–1000).
   * @default - `aws.routerConcurrency`, else as many as Lambda scales to
   */
  readonly routerConcurrency?: number;
}

export class MailRelay extends Construct {
  readonly config: Config;
  readonly storage: MailStorage;
  readonly ingest: MailIngest;
  readonly api: MailApi;
  readonly alarms: MailAlarms;
  /** The daily retention sweep; present when `retention.mailboxDays` is set. */
  readonly retention: MailRetention | undefined;
  readonly router: HouseFunction;
  /** Every route of the HTTP API but `POST …/send`. */
  readonly apiFunction: HouseFunction;
  /** `POST /v1/mailboxes/{address}/send`: composes, sends through SES, stores the sent copy. */
  readonly sendFunction: HouseFunction;
  /** Signs the download links of oversize-forward notices (router) and checks them (API). */
  readonly linkSecret: Secret;
  /** The DNS records to create by hand (MX, and DKIM when the identities are ours), one line each. */
  readonly dnsRecords: readonly DnsRecord[];

  constructor(scope: Construct, id: string, props: MailRelayProps) {
    super(scope, id);
    const source = props.configSource ?? 'configuration';
    // Throws ConfigError naming every wrong path; the same check the functions make at cold start.
    this.config = parseConfig(props.config, source);
    const fromFile: AwsSettings = configSchema.parse(props.config).aws ?? {};
    // Props override the file's `aws` settings, and go through the same schema (and messages).
    const overrides = Object.fromEntries(
      Object.entries({
        hostedZoneIds: props.hostedZoneIds,
        createIdentities: props.createIdentities,
        alarmEmail: props.alarmEmail,
        retainData: props.retainData,
        corsOrigins: props.corsOrigins,
        replaceActiveRuleSet: props.replaceActiveRuleSet,
        skipRegionCheck: props.skipRegionCheck,
        logRetentionDays: props.logRetentionDays,
        apiThrottle: props.apiThrottle,
        sesConfigurationSet: props.sesConfigurationSet,
        routerConcurrency: props.routerConcurrency,
      }).filter(([, v]) => v !== undefined),
    );
    const merged = awsSettingsSchema.safeParse({ ...fromFile, ...overrides });
    if (!merged.success) {
      throw new ConfigError(
        `${source}: the AWS settings are invalid`,
        merged.error.issues.map(
          (i) =>
            `aws${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}: ${i.message}`,
        ),
      );
    }
    const aws = merged.data;
    const settings = {
      hostedZoneIds: aws.hostedZoneIds ?? {},
      createIdentities: aws.createIdentities ?? true,
      alarmEmail: aws.alarmEmail,
      retainData: aws.retainData ?? true,
      corsOrigins: aws.corsOrigins ?? [],
      replaceActiveRuleSet: aws.replaceActiveRuleSet ?? false,
      skipRegionCheck: aws.skipRegionCheck ?? false,
      logRetentionDays: aws.logRetentionDays ?? 30,
      apiThrottle: aws.apiThrottle,
      sesConfigurationSet: aws.sesConfigurationSet,
      routerConcurrency: aws.routerConcurrency,
    };
    this.checkSettings(source, { ...settings, configRegion: aws.region });
    const logRetention = settings.logRetentionDays as RetentionDays;
    const recipients = receiptRecipients(this.config);
    // SES refuses the 201st rule of a rule set: the deploy would fail half-way, after the bucket and
    // table exist. Said here instead, with what to do.
    if (recipients.length > MAX_RECEIPT_RULES * MAX_RECIPIENTS_PER_RULE) {
      throw new ConfigError(`${source}: too many addresses for SES's receipt rules`, [
        `mailboxes, routes: ${recipients.length.toLocaleString('en-US')} recipients to list, and SES holds at most ` +
          `${MAX_RECEIPT_RULES} receipt rules of ${MAX_RECIPIENTS_PER_RULE} recipients per rule set ` +
          `(${(MAX_RECEIPT_RULES * MAX_RECIPIENTS_PER_RULE).toLocaleString('en-US')}). Let a domain accept ` +
          'every address (a "*@domain" mailbox, a catch-all route "*@domain", or plus-addressing): it is then one ' +
          'recipient, and the router refuses unknown addresses (see bounces)',
      ]);
    }

    this.storage = new MailStorage(this, 'Storage', {
      inboundRetentionDays: this.config.retention.inboundDays,
      forwardedRetentionDays: forwardedRetentionDays(this.config),
      retainData: settings.retainData,
      // The web inbox, and any browser app of `corsOrigins`, follows the API's redirects to S3.
      browserDownloads: true,
    });
    const { bucket, table } = this.storage;
    const configJson = JSON.stringify(props.config);
    const configDefine = { [BUNDLED_CONFIG_IDENTIFIER]: JSON.stringify(configJson) };
    const configSha256 = createHash('sha256').update(configJson).digest('hex');

    // One key for the two notification topics (SES received, alarms): each customer key costs a month's fee.
    const topicKey = new Key(this, 'TopicKey', {
      description: 'mail-relay: encrypts the SES notification and alarm topics',
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.DESTROY,
      pendingWindow: Duration.days(7),
    });
    // SES (received notifications) and CloudWatch (alarms) publish to the encrypted topics; SNS asks
    // KMS on their behalf, with the topic's ARN as encryption context. That context (not
    // aws:SourceAccount, which these calls need not carry) limits the key to SNS topics of this
    // account and region; naming the topics themselves would make the key depend on them, a cycle.
    const topicsHere = Stack.of(this).formatArn({ service: 'sns', resource: '*' });
    for (const service of ['ses.amazonaws.com', 'cloudwatch.amazonaws.com']) {
      topicKey.addToResourcePolicy(
        new PolicyStatement({
          sid: `${service.split('.')[0]}PublishesToEncryptedTopics`,
          principals: [new ServicePrincipal(service)],
          actions: ['kms:GenerateDataKey*', 'kms:Decrypt'],
          resources: ['*'],
          conditions: { ArnLike: { 'kms:EncryptionContext:aws:sns:topicArn': topicsHere } },
        }),
      );
    }

    this.router = new HouseFunction(this, 'Router', {
      entry: HANDLER_ENTRIES.router,
      description: 'mail-relay: routes each message SES received (SQS -> S3 -> mailboxes, forwards)',
      // A 40 MB message is parsed in memory; CPU scales with memory too.
      memorySize: 1024,
      timeout: Duration.seconds(60),
      logRetention,
      define: configDefine,
      environment: { [HANDLER_ENV.configSha256]: configSha256 },
    })
      .bindBucket(
        bucket,
        {
          // mailboxes/: the source of the server-side copies to a message's second mailbox onwards;
          // forwarded/: kept originals of oversize forwards (head, presigned link).
          read: [PREFIX.inbound, PREFIX.mailboxes, PREFIX.forwarded],
          write: [PREFIX.notifications, PREFIX.mailboxes, PREFIX.forwarded],
          list: true,
        },
        HANDLER_ENV.bucket,
      )
      .bindTable(table, ROUTER_TABLE_ACTIONS, HANDLER_ENV.table);

    this.apiFunction = new HouseFunction(this, 'ApiFunction', {
      entry: HANDLER_ENTRIES.api,
      description: 'mail-relay: the HTTP API (mailboxes, messages, parts, flags, long-poll)',
      // API Gateway gives up on an integration after 29 s; the long-poll `wait` must end before.
      timeout: Duration.seconds(29),
      memorySize: 512,
      logRetention,
      define: configDefine,
      environment: { [HANDLER_ENV.configSha256]: configSha256 },
      forbiddenPackages: API_FORBIDDEN_PACKAGES,
    })
      // Reads (and presigns) what the router and the send function stored; DELE deletes it.
      // forwarded/: the kept originals that notices link to (through the API, see below).
      .bindBucket(
        bucket,
        { read: [PREFIX.mailboxes, PREFIX.forwarded], delete: [PREFIX.mailboxes], list: true },
        HANDLER_ENV.bucket,
      )
      .bindTable(table, API_TABLE_ACTIONS, HANDLER_ENV.table, {
        name: UNSEEN_INDEX.indexName,
        actions: API_UNSEEN_INDEX_ACTIONS,
      });

    this.sendFunction = new HouseFunction(this, 'SendFunction', {
      entry: HANDLER_ENTRIES.send,
      description: 'mail-relay: POST /v1/mailboxes/{address}/send (SES, and a copy in the sent view)',
      timeout: Duration.seconds(29),
      // Composes and parses up to a Lambda request's 6 MB in memory; CPU scales with memory too.
      memorySize: 1024,
      logRetention,
      define: configDefine,
      environment: { [HANDLER_ENV.configSha256]: configSha256 },
    })
      // Writes only the sent copies (raw message, summary, parts): mailboxes/<address>/sent/…, never an inbox.
      .bindBucket(bucket, { write: [SENT_VIEWS] }, HANDLER_ENV.bucket)
      .bindTable(table, SEND_TABLE_ACTIONS, HANDLER_ENV.table);

    // The router forwards; the send function sends for a mailbox owner. The API function cannot send.
    this.grantSending([this.router, this.sendFunction], settings.sesConfigurationSet);
    this.grantBouncing(this.router);

    this.ingest = new MailIngest(this, 'Ingest', {
      domains: this.config.domains,
      recipients,
      bucket,
      topicKey,
      router: this.router,
      createIdentities: settings.createIdentities,
      hostedZoneIds: settings.hostedZoneIds,
      replaceActiveRuleSet: settings.replaceActiveRuleSet,
      routerConcurrency: settings.routerConcurrency,
      logRetention,
    });
    this.dnsRecords = this.ingest.dnsRecords;

    this.api = new MailApi(this, 'Api', {
      handler: this.apiFunction,
      sendHandler: this.sendFunction,
      corsOrigins: settings.corsOrigins,
      logRetention,
      ...(settings.apiThrottle ? settings.apiThrottle : {}),
    });

    // Oversize-forward notices link to the API, signed with this secret; the API answers a link with
    // an S3 URL presigned at that moment. An S3 URL presigned by the router would die with the
    // router's role session (hours), long before the notice's stated expiry (docs/adr/0008).
    this.linkSecret = new Secret(this, 'LinkSecret', {
      description:
        'mail-relay: signs the download links of oversize-forward notices (router signs, API checks)',
      generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
    });
    this.linkSecret.grantRead(this.router);
    this.linkSecret.grantRead(this.apiFunction);
    this.router.addEnvironment(HANDLER_ENV.linkSecret, this.linkSecret.secretArn);
    this.router.addEnvironment(HANDLER_ENV.linkBaseUrl, this.api.url);
    this.apiFunction.addEnvironment(HANDLER_ENV.linkSecret, this.linkSecret.secretArn);
    acknowledge(this.linkSecret, 'AwsSolutions-SMG4', null, [
      'Rotating the link secret would break the download links already sent in notices, which promise',
      'relay.linkExpirySeconds (up to 7 days); it signs links to forwarded/ originals only, which its',
      'readers (the router and API roles) can read anyway.',
    ]);

    const { mailboxDays } = this.config.retention;
    this.retention =
      mailboxDays === undefined
        ? undefined
        : new MailRetention(this, 'Retention', {
            mailboxDays,
            bucket,
            table,
            entry: HANDLER_ENTRIES.retention,
            define: configDefine,
            environment: { [HANDLER_ENV.configSha256]: configSha256 },
            env: { bucket: HANDLER_ENV.bucket, table: HANDLER_ENV.table },
            logRetention,
          });

    this.alarms = new MailAlarms(this, 'Alarms', {
      queue: this.ingest.queue,
      deadLetterQueue: this.ingest.deadLetterQueue,
      router: this.router,
      bounces: this.config.bounces !== 'off',
      api: this.api,
      ...(this.retention ? { retention: this.retention.function } : {}),
      topicKey,
      ...(settings.alarmEmail ? { email: settings.alarmEmail } : {}),
    });
  }

  /**
   * SESv2 SendEmail, From one of our domains only. With raw content, SES authorizes
   * ses:SendRawEmail as well as ses:SendEmail (seen as AccessDenied for SendRawEmail from SESv2
   * clients), hence both. The resource is every identity of the account
   * and region because, in the SES sandbox, SES also authorizes against the recipient's identity;
   * the `ses:FromAddress` condition is what keeps the functions to our own domains.
   */
  private grantSending(functions: readonly HouseFunction[], configurationSet: string | undefined): void {
    const stack = Stack.of(this);
    const identities = stack.formatArn({ service: 'ses', resource: 'identity', resourceName: '*' });
    // A send through a configuration set is authorized against it too.
    const sets = configurationSet
      ? [stack.formatArn({ service: 'ses', resource: 'configuration-set', resourceName: configurationSet })]
      : [];
    for (const fn of functions) {
      if (configurationSet) fn.addEnvironment(HANDLER_ENV.sesConfigurationSet, configurationSet);
      // One statement per few dozen domains: IAM cannot take one statement larger than a managed
      // policy (6,144 characters), which ~170 domains' `*@domain` would pass (policyChunks).
      for (const fromAddresses of policyChunks(this.config.domains.map((d) => `*@${d}`))) {
        fn.addToRolePolicy(
          new PolicyStatement({
            actions: ['ses:SendEmail', 'ses:SendRawEmail'],
            resources: [identities, ...sets],
            conditions: { StringLike: { 'ses:FromAddress': fromAddresses } },
          }),
        );
      }
      const role = fn.role;
      if (role) {
        acknowledge(
          role,
          'AwsSolutions-IAM5',
          `Resource::arn:<AWS::Partition>:ses:${nagText(stack.region, 'AWS::Region')}:${nagText(stack.account, 'AWS::AccountId')}:identity/*`,
          [
            'Sending is limited by the ses:FromAddress condition to our own domains; the resource must cover',
            'recipient identities because the SES sandbox authorizes against them too',
            '(https://docs.aws.amazon.com/ses/latest/dg/control-user-access.html).',
          ],
        );
      }
    }
  }

  /**
   * SES (v1) SendBounce for the router, which tells authenticated senders of refused mail
   * (docs/adr/0016-bounces.md). It is authorized against the identity of the bounce's From,
   * `mailer-daemon@<one of our domains>`: only our domains' identities are granted. Not granted
   * when the configuration turns bounces off.
   */
  private grantBouncing(router: HouseFunction): void {
    if (this.config.bounces === 'off') return;
    const stack = Stack.of(this);
    // Split as in grantSending: ~80 domains' identity ARNs passed a managed policy's 6,144 characters.
    for (const domains of policyChunks(this.config.domains, IDENTITY_ARN_CHARS)) {
      router.addToRolePolicy(
        new PolicyStatement({
          actions: ['ses:SendBounce'],
          resources: domains.map((d) =>
            stack.formatArn({ service: 'ses', resource: 'identity', resourceName: d }),
          ),
        }),
      );
    }
  }

  /** Problems the schema cannot see (they depend on the stack or on other settings), all reported at once. */
  private checkSettings(
    source: string,
    settings: {
      hostedZoneIds: Readonly<Record<string, string>>;
      skipRegionCheck: boolean;
      alarmEmail?: string | undefined;
      configRegion?: string | undefined;
    },
  ): void {
    const issues: string[] = [];
    for (const domain of Object.keys(settings.hostedZoneIds)) {
      if (!this.config.domains.includes(domain.toLowerCase())) {
        issues.push(`aws.hostedZoneIds.${domain}: "${domain}" is not one of the configured domains`);
      }
    }
    const region = Stack.of(this).region;
    if (Token.isUnresolved(region)) {
      issues.push(
        'aws.region: the stack has no explicit region; SES receiving exists in some regions only, so set ' +
          'aws.region in the configuration (or AWS_REGION / CDK_DEFAULT_REGION when running cdk)',
      );
    } else if (settings.configRegion && settings.configRegion !== region) {
      issues.push(
        `aws.region: the configuration says ${settings.configRegion} but the stack is in ${region}`,
      );
    } else if (!settings.skipRegionCheck) {
      const problem = receivingRegionProblem(region);
      if (problem) issues.push(`aws.region: ${problem}`);
    }
    if (settings.alarmEmail && this.config.domains.includes(domainOf(settings.alarmEmail))) {
      Annotations.of(this).addWarningV2(
        'mail-relay:alarm-email-in-own-domain',
        `aws.alarmEmail ${settings.alarmEmail} is at one of the relay's own domains: alarms about a broken relay ` +
          'would be delivered by that relay. An address elsewhere is safer.',
      );
    }
    if (issues.length > 0) throw new ConfigError(`${source}: the AWS settings are invalid`, issues);
  }
}

/**
 * IAM takes no statement larger than the policy that holds it: 6,144 characters for a managed
 * policy, where CDK moves what passes a role's 10,240 characters of inline policy, one statement
 * at a time (a statement is never split). Lists that grow with the configuration's domains are
 * therefore cut into statements of at most STATEMENT_LIST_CHARS characters (each item counted with
 * `extra` for what surrounds it in the policy: quotes, a comma, an ARN's prefix). CDK merges
 * statements again only up to ~2,000 characters, so the pieces stay apart and are spread over the
 * role's policies.
 */
const STATEMENT_LIST_CHARS = 1_500;
/** `arn:aws-us-gov:ses:ap-southeast-3:123456789012:identity/` and the quotes and comma around it. */
const IDENTITY_ARN_CHARS = 60;

export function policyChunks(items: readonly string[], extra = 3): string[][] {
  const chunks: string[][] = [];
  let current: string[] = [];
  let size = 0;
  for (const item of items) {
    if (current.length > 0 && size + item.length + extra > STATEMENT_LIST_CHARS) {
      chunks.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += item.length + extra;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/** How cdk-nag prints a value in a finding id: literally, or `<AWS::…>` for a pseudo parameter. */
function nagText(value: string, pseudo: string): string {
  return Token.isUnresolved(value) ? `<${pseudo}>` : value;
}
