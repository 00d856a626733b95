/**
 * API (design §4): an API Gateway HTTP API in front of two functions: `POST
 * /v1/mailboxes/{address}/send` goes to the send function, every other request (the `$default`
 * route) to the API function; both serve the same Hono app shell (functions/api/shell.ts), so
 * tokens, errors and headers are the same whichever answers (docs/adr/0012-lambda-bundles.md).
 * Stage throttling and JSON access logs; CORS stays off unless origins are configured.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import {
  CorsHttpMethod,
  HttpApi,
  HttpMethod,
  HttpStage,
  LogGroupLogDestination,
} from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { SEND_ROUTE } from '../functions/api/send-route.ts';
import type { HouseFunction } from './house-function.ts';
import { acknowledge } from './nag.ts';

/** Steady-state requests per second for the whole stage; mail clients poll, nobody needs more. */
export const DEFAULT_RATE_LIMIT = 50;
/** Requests allowed in a burst above the rate. */
export const DEFAULT_BURST_LIMIT = 100;

/**
 * HTTP API context variables only ($context.resourcePath and friends belong to REST APIs and
 * would fail the deployment). No header, query string or body is logged: tokens stay out of logs.
 */
const ACCESS_LOG_FIELDS = {
  requestId: '$context.requestId',
  ip: '$context.identity.sourceIp',
  requestTime: '$context.requestTime',
  method: '$context.httpMethod',
  path: '$context.path',
  routeKey: '$context.routeKey',
  status: '$context.status',
  protocol: '$context.protocol',
  responseLength: '$context.responseLength',
  responseLatency: '$context.responseLatency',
  integrationStatus: '$context.integration.status',
  integrationLatency: '$context.integration.latency',
  integrationError: '$context.integrationErrorMessage',
  userAgent: '$context.identity.userAgent',
};

export interface MailApiProps {
  /** The API function: every request but `POST …/send` (the `$default` route). */
  readonly handler: HouseFunction;
  /** The send function: `POST /v1/mailboxes/{address}/send` only. */
  readonly sendHandler: HouseFunction;
  /**
   * Browser origins allowed to call the API. Bearer tokens are not cookies, so CORS only decides
   * which web pages may read the answers.
   * @default - CORS off: no preflight route, no CORS headers
   */
  readonly corsOrigins?: readonly string[];
  /** @default DEFAULT_RATE_LIMIT */
  readonly rateLimit?: number;
  /** @default DEFAULT_BURST_LIMIT */
  readonly burstLimit?: number;
  /** @default RetentionDays.ONE_MONTH */
  readonly logRetention?: RetentionDays;
}

export class MailApi extends Construct {
  readonly httpApi: HttpApi;
  readonly stage: HttpStage;
  readonly accessLogs: LogGroup;
  /** The base URL, ending in `/` (`https://<id>.execute-api.<region>.amazonaws.com/`). */
  readonly url: string;

  constructor(scope: Construct, id: string, props: MailApiProps) {
    super(scope, id);
    const cors = props.corsOrigins && props.corsOrigins.length > 0 ? props.corsOrigins : undefined;
    this.httpApi = new HttpApi(this, 'Http', {
      description: 'mail-relay: mailboxes over HTTP (POP3 verbs, IMAP partial fetch)',
      defaultIntegration: new HttpLambdaIntegration('Function', props.handler),
      // Our own stage below carries throttling and access logs.
      createDefaultStage: false,
      ...(cors
        ? {
            corsPreflight: {
              allowOrigins: [...cors],
              // Idempotency-Key (POST …/send), If-Match, If-None-Match, If-Range and Range (/raw, /parts;
              // a Range is safelisted in its simplest form only) are not CORS-safelisted: without them
              // here a browser's preflight refuses those requests. Content-Encoding too, so that a
              // compressed upload meets the API's 415 rather than a CORS failure.
              allowHeaders: [
                'authorization',
                'content-encoding',
                'content-type',
                'idempotency-key',
                'if-match',
                'if-none-match',
                'if-range',
                'range',
              ],
              allowMethods: [
                CorsHttpMethod.GET,
                CorsHttpMethod.POST,
                CorsHttpMethod.PATCH,
                CorsHttpMethod.DELETE,
                CorsHttpMethod.OPTIONS,
              ],
              exposeHeaders: [
                'location',
                'etag',
                'mail-relay-cursor',
                'content-range',
                'accept-ranges',
                'www-authenticate',
              ],
            },
          }
        : {}),
    });
    // The one route with a function of its own; API Gateway matches it before `$default`.
    this.httpApi.addRoutes({
      path: SEND_ROUTE.path,
      methods: [HttpMethod[SEND_ROUTE.method]],
      integration: new HttpLambdaIntegration('SendFunction', props.sendHandler),
    });
    this.accessLogs = new LogGroup(this, 'AccessLogs', {
      retention: props.logRetention ?? RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.stage = new HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: {
        rateLimit: props.rateLimit ?? DEFAULT_RATE_LIMIT,
        burstLimit: props.burstLimit ?? DEFAULT_BURST_LIMIT,
      },
      accessLogSettings: {
        destination: new LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.custom(JSON.stringify(ACCESS_LOG_FIELDS)),
      },
    });
    this.url = this.stage.url;

    acknowledge(this.httpApi, 'AwsSolutions-APIG4', null, [
      'Every route authenticates in the API function: a bearer token is hashed (SHA-256) and looked up',
      'in the table, and it reads only its own mailbox (design §4, §5). An API Gateway authorizer would',
      'duplicate that lookup on every request; /v1/health and /v1/openapi.json are public by design.',
    ]);
  }
}
