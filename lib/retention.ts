/**
 * Mailbox retention (`retention.mailboxDays`): a function that deletes expired mail through the
 * index and the blob store (functions/pipeline/retention.ts), invoked once a day by an EventBridge
 * rule. It replaces an S3 lifecycle rule on `mailboxes/`, which would expire the bytes and leave
 * index entries and counters behind (docs/adr/0010-mailbox-retention.md).
 */
import { Duration } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { HouseFunction } from './house-function.ts';
import { PREFIX } from './storage.ts';

/**
 * DynamoDB actions of the sweep (index.listMailboxes, list, get, delete). The delete is a
 * TransactWriteItems of a Delete (the entry), an Update (the counters) and a Put (the deletion,
 * remembered); IAM authorizes each item by its own action, and has no action named
 * TransactWriteItems (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
 */
export const RETENTION_TABLE_ACTIONS = [
  'dynamodb:Query', // listMailboxes (the registry), list
  'dynamodb:BatchGetItem', // listMailboxes (the counters)
  'dynamodb:GetItem', // delete reads the entry first; the orphan check
  'dynamodb:DeleteItem', // delete (the entry)
  'dynamodb:UpdateItem', // delete (the counters)
  'dynamodb:PutItem', // delete (the deletion, remembered)
];

/** 03:17 UTC: a quiet hour for most of the mail in the world, off the top of the hour when schedules pile up. */
export const RETENTION_SCHEDULE = Schedule.cron({ minute: '17', hour: '3' });

export interface MailRetentionProps {
  /** `retention.mailboxDays`, shown in the function's description (the function reads it from its configuration). */
  readonly mailboxDays: number;
  readonly bucket: IBucket;
  readonly table: ITable;
  /** Absolute path of the Lambda entry module. */
  readonly entry: string;
  /** Build-time definitions of the bundle (the configuration). */
  readonly define: Readonly<Record<string, string>>;
  /** Variables besides the bucket and table (the configuration's hash). @default - none */
  readonly environment?: Readonly<Record<string, string>>;
  /** Names of the bucket and table variables (functions/handlers/deps.ts). */
  readonly env: { readonly bucket: string; readonly table: string };
  readonly logRetention: RetentionDays;
  /** @default RETENTION_SCHEDULE (daily, 03:17 UTC) */
  readonly schedule?: Schedule;
}

export class MailRetention extends Construct {
  readonly function: HouseFunction;
  readonly rule: Rule;

  constructor(scope: Construct, id: string, props: MailRetentionProps) {
    super(scope, id);
    this.function = new HouseFunction(this, 'Sweep', {
      entry: props.entry,
      description: `mail-relay: deletes mail older than ${props.mailboxDays} day(s) (index, counters, blobs)`,
      // Lambda's maximum: a first sweep over years of mail takes long; the handler stops 30 s early
      // and the next day's run carries on.
      timeout: Duration.minutes(15),
      // I/O bound: one message at a time, no parsing.
      memorySize: 256,
      logRetention: props.logRetention,
      define: props.define,
      ...(props.environment ? { environment: props.environment } : {}),
    })
      // Lists and deletes mail, never reads it: no GetObject under mailboxes/. It reads and writes one
      // object of its own: where a sweep stopped early (SWEEP_RESUME_KEY), absent on most days. S3
      // answers a GetObject of a missing key with 404 only to a role that may list the bucket (and
      // a ListBucket limited by `s3:prefix` does not count: that check carries no prefix); to any
      // other, 403, and every sweep failed on its first request. Hence the whole bucket's listing.
      .bindBucket(
        props.bucket,
        {
          read: [PREFIX.retention],
          write: [PREFIX.retention],
          delete: [PREFIX.mailboxes, PREFIX.retention],
          list: true,
        },
        props.env.bucket,
      )
      .bindTable(props.table, RETENTION_TABLE_ACTIONS, props.env.table);

    this.rule = new Rule(this, 'Schedule', {
      description: `mail-relay: daily retention sweep (retention.mailboxDays = ${props.mailboxDays})`,
      schedule: props.schedule ?? RETENTION_SCHEDULE,
      // A failed sweep is retried by Lambda's asynchronous invocation (twice); the sweep is idempotent.
      targets: [new LambdaFunction(this.function)],
    });
  }
}
