/**
 * Operations: the alarms a mail system needs someone to hear about: mail stuck in the dead-letter
 * queue (stored by SES but not delivered), router errors, API 5xx, a failed retention sweep.
 * Optionally e-mailed.
 */
import { Duration } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  type IMetric,
  Metric,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { MailApi } from './api.ts';

export interface MailAlarmsProps {
  readonly deadLetterQueue: IQueue;
  readonly router: IFunction;
  readonly api: MailApi;
  /**
   * The retention sweep, when `retention.mailboxDays` is set.
   * @default - no retention alarm
   */
  readonly retention?: IFunction;
  /**
   * Where alarm notifications are e-mailed (SNS sends a confirmation link first).
   * @default - alarms only show in the CloudWatch console
   */
  readonly email?: string;
  /** Encrypts the alarm topic; CloudWatch must be allowed to use it (MailRelay adds that to the key policy). */
  readonly topicKey: IKey;
}

export class MailAlarms extends Construct {
  readonly deadLetters: Alarm;
  readonly routerErrors: Alarm;
  readonly apiServerErrors: Alarm;
  /** Present when the retention sweep exists. */
  readonly retentionErrors: Alarm | undefined;
  /** Present when an e-mail address is configured. */
  readonly topic: Topic | undefined;

  constructor(scope: Construct, id: string, props: MailAlarmsProps) {
    super(scope, id);
    const period = Duration.minutes(5);
    const alarm = (name: string, metric: IMetric, description: string) =>
      new Alarm(this, name, {
        metric,
        threshold: 0,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        // No data means no traffic, which is not a fault.
        treatMissingData: TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });

    this.deadLetters = alarm(
      'DeadLetters',
      props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }),
      'Mail that SES stored could not be routed after every retry and waits in the dead-letter queue. ' +
        'Fix the cause, then redrive the queue (SQS console: "Start DLQ redrive").',
    );
    this.routerErrors = alarm(
      'RouterErrors',
      props.router.metricErrors({ period, statistic: 'Sum' }),
      'The router function failed; SQS retries the message (and moves it to the dead-letter queue after the last try).',
    );
    this.apiServerErrors = alarm(
      'ApiServerErrors',
      new Metric({
        namespace: 'AWS/ApiGateway',
        metricName: '5xx',
        dimensionsMap: { ApiId: props.api.httpApi.apiId, Stage: '$default' },
        period,
        statistic: 'Sum',
      }),
      'The HTTP API answered 5xx (the API function failed or timed out).',
    );
    this.retentionErrors =
      props.retention === undefined
        ? undefined
        : alarm(
            'RetentionErrors',
            // Hourly: the sweep runs once a day, and a 5-minute alarm would be back to OK before anyone looks.
            props.retention.metricErrors({ period: Duration.hours(1), statistic: 'Sum' }),
            'The retention sweep failed (a mailbox could not be swept, or the function crashed); expired mail ' +
              'stays until a sweep succeeds. Lambda retries twice; the logs of the retention function name the mailbox.',
          );

    if (props.email) {
      this.topic = new Topic(this, 'Topic', {
        displayName: 'mail-relay alarms',
        masterKey: props.topicKey,
      });
      this.topic.addSubscription(new EmailSubscription(props.email));
      const action = new SnsAction(this.topic);
      for (const a of [this.deadLetters, this.routerErrors, this.apiServerErrors, this.retentionErrors]) {
        if (a === undefined) continue;
        a.addAlarmAction(action);
        a.addOkAction(action);
      }
    } else {
      this.topic = undefined;
    }
  }
}
