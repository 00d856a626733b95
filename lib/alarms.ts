/**
 * Operations: the alarms a mail system needs someone to hear about: mail stuck in the dead-letter
 * queue (stored by SES but not delivered), mail waiting too long for the router, router crashes,
 * forwards and bounces the router could not send, API 5xx, a failed retention sweep.
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
import {
  BOUNCE_FAILURES_METRIC,
  FORWARD_FAILURES_METRIC,
  ROUTER_FUNCTION_DIMENSION,
  ROUTER_METRICS_NAMESPACE,
  ROUTER_SERVICE_NAME,
} from '../functions/handlers/router-metrics.ts';
import type { MailApi } from './api.ts';

export interface MailAlarmsProps {
  /** The router's queue: mail waiting in it too long means records keep failing, or a throttled router. */
  readonly queue: IQueue;
  readonly deadLetterQueue: IQueue;
  readonly router: IFunction;
  /**
   * Whether the router bounces refused mail (`bounces` is not `"off"`): then failed bounces alarm.
   * @default true
   */
  readonly bounces?: boolean;
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

/** Mail older than this in the router's queue raises the backlog alarm (a healthy router takes seconds). */
export const ROUTER_BACKLOG_SECONDS = 600;

export class MailAlarms extends Construct {
  readonly deadLetters: Alarm;
  readonly routerBacklog: Alarm;
  readonly routerErrors: Alarm;
  readonly forwardFailures: Alarm;
  /** Present unless bouncing is off. */
  readonly bounceFailures: Alarm | undefined;
  readonly apiServerErrors: Alarm;
  /** Present when the retention sweep exists. */
  readonly retentionErrors: Alarm | undefined;
  /** Present when an e-mail address is configured. */
  readonly topic: Topic | undefined;

  constructor(scope: Construct, id: string, props: MailAlarmsProps) {
    super(scope, id);
    const period = Duration.minutes(5);
    const alarm = (name: string, metric: IMetric, description: string, threshold = 0) =>
      new Alarm(this, name, {
        metric,
        threshold,
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
    // The router reports a failed record to SQS (a partial batch failure) instead of failing its
    // invocation, so Lambda's Errors count only crashes and timeouts: a router failing every record
    // shows here, as mail getting older in the queue, long before it reaches the dead-letter queue.
    this.routerBacklog = alarm(
      'RouterBacklog',
      props.queue.metricApproximateAgeOfOldestMessage({ period, statistic: 'Maximum' }),
      `Mail has waited more than ${ROUTER_BACKLOG_SECONDS / 60} minutes in the router's queue: records keep ` +
        'failing (the router logs "record failed" with the reason; SQS retries each, then moves it to the ' +
        'dead-letter queue), or the router is throttled (Lambda concurrency, aws.routerConcurrency).',
      ROUTER_BACKLOG_SECONDS,
    );
    this.routerErrors = alarm(
      'RouterErrors',
      props.router.metricErrors({ period, statistic: 'Sum' }),
      'A router invocation failed as a whole (a crash or a timeout); SQS retries its messages (and moves ' +
        'them to the dead-letter queue after the last try). A failed record alone shows as RouterBacklog.',
    );
    // The router's own counts (EMF), published with every batch (zero when nothing failed). A forward or
    // a bounce that failed does not fail its record (ADR 8, ADR 16), so nothing above sees it.
    const routerMetric = (metricName: string) =>
      new Metric({
        namespace: ROUTER_METRICS_NAMESPACE,
        metricName,
        // This stack's router only: another stack's in the same account and region has another name.
        dimensionsMap: {
          service: ROUTER_SERVICE_NAME,
          [ROUTER_FUNCTION_DIMENSION]: props.router.functionName,
        },
        period,
        statistic: 'Sum',
      });
    this.forwardFailures = alarm(
      'ForwardFailures',
      routerMetric(FORWARD_FAILURES_METRIC),
      'A forward could not be sent (SES refused it or failed after the retries): the mail did not reach its ' +
        'destination. The router logs "routed" at WARN with unsentForwards (recipient, destination, error) ' +
        'and sesMessageId; the original is kept under forwarded/ with a notice in relay.notify.mailbox; ' +
        'mail-relay replay sends it again.',
    );
    this.bounceFailures =
      props.bounces === false
        ? undefined
        : alarm(
            'BounceFailures',
            routerMetric(BOUNCE_FAILURES_METRIC),
            'A bounce could not be sent (SES SendBounce refused or throttled): the sender of refused mail was ' +
              'not told. The router logs "routed" at WARN with the refused recipients ("bounce failed: …") and ' +
              'sesMessageId; mail-relay replay tries the bounce again.',
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
      for (const a of [
        this.deadLetters,
        this.routerBacklog,
        this.routerErrors,
        this.forwardFailures,
        this.bounceFailures,
        this.apiServerErrors,
        this.retentionErrors,
      ]) {
        if (a === undefined) continue;
        a.addAlarmAction(action);
        a.addOkAction(action);
      }
    } else {
      this.topic = undefined;
    }
  }
}
