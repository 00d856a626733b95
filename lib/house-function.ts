/**
 * The house Lambda function: every default decided once (runtime, arm64, ESM bundle built by the
 * local esbuild (bundling.ts), a source map in the asset, tracing, a log group with retention, a role
 * that starts empty), and
 * helpers that grant one resource and set the environment variable naming it in one call, so a
 * permission never exists without the code that uses it, and the reverse.
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Function as LambdaFunction, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { CfnBucket, IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { bundledCode } from './bundling.ts';
import { acknowledge } from './nag.ts';

/**
 * The newest Node.js runtime Lambda offers in this aws-cdk-lib; cdk-nag (AwsSolutions-L1) holds us
 * to it. The issue asks for Node 22 or newer.
 */
export const HOUSE_RUNTIME = Runtime.NODEJS_24_X;

/**
 * The esbuild target: the oldest Node.js the functions may run on (the issue asks for 22 or newer),
 * which also keeps the bundles loadable by the Node that runs the tests and benchmarks.
 */
export const HOUSE_TARGET = 'node22';

/**
 * ESM bundles that contain CommonJS code (mailparser, the AWS SDK's dependencies) call `require`
 * for Node built-ins; esbuild's ESM output has no `require`, so give it one.
 */
export const ESM_REQUIRE_BANNER =
  "import{createRequire as __houseCreateRequire}from'module';const require=__houseCreateRequire(import.meta.url);";

/**
 * Never bundled: better-sqlite3 is the local index adapter's native module and has no business in
 * Lambda; if a handler ever imports it, the bundle must fail to load (the bundle smoke test
 * catches that) rather than ship a native binary built for the wrong platform.
 */
export const NEVER_BUNDLED = ['better-sqlite3'];

/**
 * Left out because Node never runs them: the AWS SDK's browser user-agent parser imports `bowser`
 * dynamically, on a path only browsers take (35 KB a cold start would parse for nothing).
 */
export const NEVER_RUN_IN_NODE = ['bowser'];

export interface HouseFunctionProps {
  /** Absolute path of the handler module (it exports `handler`). */
  readonly entry: string;
  /** Shown in the console and in `aws lambda list-functions`. */
  readonly description: string;
  /**
   * @default Duration.seconds(30)
   */
  readonly timeout?: Duration;
  /**
   * MB; CPU scales with it.
   * @default 512
   */
  readonly memorySize?: number;
  /**
   * Added to the house variables (POWERTOOLS_SERVICE_NAME).
   * @default - none
   */
  readonly environment?: Readonly<Record<string, string>>;
  /**
   * @default RetentionDays.ONE_MONTH
   */
  readonly logRetention?: RetentionDays;
  /**
   * Modules left out of the bundle and taken from the Lambda runtime instead (besides NEVER_BUNDLED).
   * Everything else, the AWS SDK included, is bundled: what ships is the version that was tested.
   * @default - none
   */
  readonly runtimeProvidedModules?: readonly string[];
  /**
   * Identifiers replaced at build time (esbuild `define`): name to a JavaScript expression.
   * @default - none
   */
  readonly define?: Readonly<Record<string, string>>;
  /**
   * npm packages this function's bundle must not contain; synth fails, naming them, if it does
   * (the API function and mailparser, docs/adr/0012-lambda-bundles.md).
   * @default - none
   */
  readonly forbiddenPackages?: readonly string[];
}

/** Access to the mail bucket, by key prefix. */
export interface BucketAccess {
  /** Prefixes read (GetObject; also the source side of CopyObject). @default - none */
  readonly read?: readonly string[];
  /** Prefixes written (PutObject, multipart uploads; also the target side of CopyObject). @default - none */
  readonly write?: readonly string[];
  /** Prefixes deleted from (DeleteObject, also through DeleteObjects). @default - none */
  readonly delete?: readonly string[];
  /**
   * ListBucket on the bucket. Without it S3 answers 403 instead of 404 for a missing key, and the
   * BlobStore contract (`get` of a missing key is null) would break; `list` and `deletePrefix` need
   * it anyway. Prefixes instead of `true` allow listing under those prefixes only (an `s3:prefix`
   * condition), for a function that lists and deletes but never reads a key it has not listed: S3's
   * check for the 404 of a missing key carries no prefix, so such a function gets 403 for one.
   * @default false
   */
  readonly list?: boolean | readonly string[];
}

export class HouseFunction extends LambdaFunction {
  /** The role this class created (Function's `role` is optional in its type). */
  private readonly houseRole: Role;
  /** Every reason for this role's `Resource: *` statements, acknowledged together. */
  private readonly unscopedReasons: string[] = [];

  constructor(scope: Construct, id: string, props: HouseFunctionProps) {
    const holder = new Construct(scope, `${id}Resources`);
    const logGroup = new LogGroup(holder, 'Logs', {
      retention: props.logRetention ?? RetentionDays.ONE_MONTH,
      // Logs are operational, not user data: they go with the stack.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // A role of our own, without AWSLambdaBasicExecutionRole: that managed policy may create any log
    // group; this one may write only to its own.
    const role = new Role(holder, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `${props.description} (execution role)`,
    });
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    );
    super(scope, id, {
      code: bundledCode({
        entry: props.entry,
        target: HOUSE_TARGET,
        banner: ESM_REQUIRE_BANNER,
        external: [...NEVER_BUNDLED, ...NEVER_RUN_IN_NODE, ...(props.runtimeProvidedModules ?? [])],
        define: { ...props.define },
        forbiddenPackages: [...(props.forbiddenPackages ?? [])],
      }),
      handler: 'index.handler',
      description: props.description,
      runtime: HOUSE_RUNTIME,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(30),
      tracing: Tracing.ACTIVE,
      logGroup,
      role,
      // No NODE_OPTIONS=--enable-source-maps: Node would read and parse the source maps at every
      // cold start (the bench's import-with-source-maps rows). The maps stay in the asset, so a stack
      // from the logs maps offline: scripts/map-stack.mjs (docs/adr/0012-lambda-bundles.md).
      environment: {
        POWERTOOLS_SERVICE_NAME: 'mail-relay',
        ...props.environment,
      },
    });
    this.houseRole = role;
    this.acknowledgeUnscoped(
      'X-Ray PutTraceSegments and PutTelemetryRecords have no resource-level permissions' +
        ' (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsx-ray.html); tracing is on for every function.',
    );
  }

  /**
   * Grants actions that IAM cannot scope to a resource (`Resource: *`). `reason` says why, with the
   * evidence; it becomes the cdk-nag acknowledgment of that finding on this function's role.
   */
  allowUnscoped(actions: readonly string[], reason: string): this {
    this.addToRolePolicy(new PolicyStatement({ actions: [...actions], resources: ['*'] }));
    this.acknowledgeUnscoped(reason);
    return this;
  }

  private acknowledgeUnscoped(reason: string): void {
    this.unscopedReasons.push(reason);
    acknowledge(this.houseRole, 'AwsSolutions-IAM5', 'Resource::*', this.unscopedReasons);
  }

  /** Grants exactly the listed access to the bucket and sets `envName` to its name. */
  bindBucket(bucket: IBucket, access: BucketAccess, envName = 'BUCKET_NAME'): this {
    const statement = (actions: string[], prefixes: readonly string[] | undefined) => {
      if (!prefixes || prefixes.length === 0) return;
      this.addToRolePolicy(
        new PolicyStatement({ actions, resources: prefixes.map((p) => bucket.arnForObjects(`${p}*`)) }),
      );
      this.acknowledgePrefixes(bucket, prefixes);
    };
    statement(['s3:GetObject'], access.read);
    statement(['s3:PutObject', 's3:AbortMultipartUpload'], access.write);
    statement(['s3:DeleteObject'], access.delete);
    if (access.list === true) {
      this.addToRolePolicy(
        new PolicyStatement({ actions: ['s3:ListBucket'], resources: [bucket.bucketArn] }),
      );
    } else if (Array.isArray(access.list) && access.list.length > 0) {
      this.addToRolePolicy(
        new PolicyStatement({
          actions: ['s3:ListBucket'],
          resources: [bucket.bucketArn],
          conditions: { StringLike: { 's3:prefix': access.list.map((p) => `${p}*`) } },
        }),
      );
    }
    this.addEnvironment(envName, bucket.bucketName);
    return this;
  }

  /**
   * Grants exactly `actions` on the table and sets `envName`; with `index`, also `index.actions` on
   * that one secondary index (its own ARN: a grant on the table does not reach its indexes).
   */
  bindTable(
    table: ITable,
    actions: readonly string[],
    envName = 'TABLE_NAME',
    index?: { readonly name: string; readonly actions: readonly string[] },
  ): this {
    this.addToRolePolicy(new PolicyStatement({ actions: [...actions], resources: [table.tableArn] }));
    if (index !== undefined) {
      this.addToRolePolicy(
        new PolicyStatement({
          actions: [...index.actions],
          resources: [`${table.tableArn}/index/${index.name}`],
        }),
      );
    }
    this.addEnvironment(envName, table.tableName);
    return this;
  }

  private acknowledgePrefixes(bucket: IBucket, prefixes: readonly string[]): void {
    const cfnBucket = bucket.node.defaultChild as CfnBucket | undefined;
    if (!cfnBucket) return;
    const logicalId = Stack.of(this).getLogicalId(cfnBucket);
    for (const p of prefixes) {
      acknowledge(this.houseRole, 'AwsSolutions-IAM5', `Resource::<${logicalId}.Arn>/${p}*`, [
        `Object-level access under the "${p}" prefix of the mail bucket, the narrowest scope S3 offers for`,
        'keys that are created at run time (one per message).',
      ]);
    }
  }
}
