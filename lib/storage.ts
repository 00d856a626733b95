/**
 * Storage: the mail bucket (raw messages, parsed summaries, parts; design §3) and the index table
 * (DynamoDB single table: messages, counters, token hashes).
 *
 * Nothing under `mailboxes/` expires by lifecycle rule: an object rule cannot remove the index entry
 * and the counters with the message, so `retention.mailboxDays` is the retention sweep's job
 * (lib/retention.ts, docs/adr/0010-mailbox-retention.md).
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { AttributeType, BillingMode, ProjectionType, Table, TableEncryption } from 'aws-cdk-lib/aws-dynamodb';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  HttpMethods,
  type LifecycleRule,
  ObjectOwnership,
} from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge } from './nag.ts';

/** Key prefixes of the bucket (functions/core/notification.ts, functions/pipeline/router.ts, functions/core/keys.ts). */
export const PREFIX = {
  /** What SES wrote: the raw message, kept for replay. */
  inbound: 'inbound/',
  /** The notification the router processed for each inbound message (the envelope that replay needs). */
  notifications: 'notifications/',
  /** Delivered messages, their summaries and decoded parts (and each mailbox's sent view). */
  mailboxes: 'mailboxes/',
  /** Originals of forwarded messages too large for SES, behind the link of the notice sent instead. */
  forwarded: 'forwarded/',
  /** Where a retention sweep stopped early, for the next to go on from (functions/pipeline/retention.ts). */
  retention: 'retention/',
} as const;

/**
 * The sparse index of unread mail (UNSEEN_INDEX of functions/adapters/aws/dynamodb-mailbox-index.ts,
 * named here so synth does not load the SDK; test/infra/stack.test.ts checks they agree).
 */
export const UNSEEN_INDEX = { indexName: 'unseen', partitionKey: 'unseenPk' } as const;

export interface MailStorageProps {
  /** Days `inbound/` (and the matching `notifications/`) are kept: the replay window. */
  readonly inboundRetentionDays: number;
  /** Days `forwarded/` originals are kept (at least as long as the links to them work). */
  readonly forwardedRetentionDays: number;
  /**
   * Keep the bucket and table (and their data) when the stack is deleted. When false, both are
   * deleted with the stack, the bucket emptied first.
   * @default true
   */
  readonly retainData?: boolean;
  /**
   * Let browsers read the presigned downloads the API redirects to (raw messages and parts above
   * the redirect threshold): the web inbox (`/inbox/`, docs/adr/0017) downloads through them, as
   * does a browser app of `aws.corsOrigins`. MailRelay always sets it.
   * @default false
   */
  readonly browserDownloads?: boolean;
}

export class MailStorage extends Construct {
  readonly bucket: Bucket;
  readonly table: Table;

  constructor(scope: Construct, id: string, props: MailStorageProps) {
    super(scope, id);
    const retain = props.retainData ?? true;
    const removalPolicy = retain ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    const lifecycleRules: LifecycleRule[] = [
      {
        id: 'inbound-replay-window',
        prefix: PREFIX.inbound,
        expiration: Duration.days(props.inboundRetentionDays),
      },
      {
        id: 'notifications-replay-window',
        prefix: PREFIX.notifications,
        expiration: Duration.days(props.inboundRetentionDays),
      },
      {
        id: 'forwarded-originals',
        prefix: PREFIX.forwarded,
        expiration: Duration.days(props.forwardedRetentionDays),
      },
      // The S3 adapter streams large messages as multipart uploads; a crashed upload leaves parts
      // that are billed but invisible.
      { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
    ];

    this.bucket = new Bucket(this, 'Bucket', {
      encryption: BucketEncryption.S3_MANAGED,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      // Versioning off: every key is written once with deterministic content (ids derive from the SES
      // message id), so versions would only ever hold mail a user deleted with DELE, which must go.
      versioned: false,
      lifecycleRules,
      removalPolicy,
      autoDeleteObjects: !retain,
      // A browser follows the API's 307 to S3 as a cross-origin request from an origin the fetch
      // standard then calls `null` (a redirect across origins taints it), so no list of the
      // configured origins could match: any origin may read what it holds a presigned URL for.
      // The signature is the credential (nothing here is public: BLOCK_ALL), and no cookie or
      // other ambient authority exists for S3 to honour.
      ...(props.browserDownloads
        ? {
            cors: [
              {
                allowedMethods: [HttpMethods.GET, HttpMethods.HEAD],
                allowedOrigins: ['*'],
                allowedHeaders: ['if-none-match', 'range'],
                exposedHeaders: [
                  'content-length',
                  'content-type',
                  'content-disposition',
                  'etag',
                  'content-range',
                  'accept-ranges',
                ],
                maxAge: 3600,
              },
            ],
          }
        : {}),
    });
    acknowledge(this.bucket, 'AwsSolutions-S1', null, [
      'Server access logs would need a second bucket (itself unlogged) and log every SES write;',
      'object-level auditing of a mail store is better served by CloudTrail S3 data events, which an',
      'account can enable for this bucket without changing the stack.',
    ]);

    this.table = new Table(this, 'Index', {
      partitionKey: { name: 'pk', type: AttributeType.STRING },
      sortKey: { name: 'sk', type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      encryption: TableEncryption.AWS_MANAGED,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // The TTL removes only the memory of deletions (`DEL#` items, which count nothing). Expired mail
      // leaves through the retention sweep, which updates the counters in the same transaction.
      // (TTL_ATTRIBUTE of dynamodb-mailbox-index.ts, named here so synth does not load the SDK.)
      timeToLiveAttribute: 'expiresAt',
      deletionProtection: retain,
      removalPolicy,
    });
    // Only unread message items have `unseenPk`: LIST with `unseen` reads this index, not the mailbox
    // (docs/adr/0020-unseen-index.md). All attributes projected: a LIST row is nearly the whole item,
    // and a projection cannot be changed once the index exists. On a deployed table CloudFormation
    // adds it in place (one index per update); `mail-relay backfill-unseen` then indexes older mail.
    this.table.addGlobalSecondaryIndex({
      indexName: UNSEEN_INDEX.indexName,
      partitionKey: { name: UNSEEN_INDEX.partitionKey, type: AttributeType.STRING },
      sortKey: { name: 'sk', type: AttributeType.STRING },
      projectionType: ProjectionType.ALL,
    });
  }
}
