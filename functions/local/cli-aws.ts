/**
 * CLI commands that reach the deployed relay, or that replay stored mail:
 *
 *   mail-relay replay --since <time> [--mailbox <address>] [--stack <name>]
 *   mail-relay reparse [--mailbox <address>] [--since <time>] [--stack <name>]
 *   mail-relay upgrade --stack <name>
 *   mail-relay import --stack <name> [--to <address>… | --sent-of <mailbox>] <files or directories…>
 *   mail-relay token create --stack <name> (<mailbox> | --admin [<mailbox>]) [--label <text>]
 *   mail-relay token revoke --stack <name> <token>
 *
 * (`token list` and revoking by a token's id are local only: in DynamoDB they would need a scan of
 * the whole table, or an item listing the tokens.)
 *
 * With `--stack`, the bucket and table come from the CloudFormation stack's outputs (`BucketName`,
 * `TableName`; lib/mail-relay-stack.ts declares them under these keys), and AWS access from the
 * user's own credentials, resolved by the SDK as the AWS CLI does (AWS_PROFILE, ~/.aws/…,
 * AWS_ENDPOINT_URL), in the configuration's `aws.region` (where `cdk deploy` put the stack), else
 * the SDK's region. Without it, replay and reparse work on the local data dir.
 * The routing configuration is the local `mail-relay.config.json`: the file the stack was built from.
 */
import type { Stack } from '@aws-sdk/client-cloudformation';
import { createToken, hashToken, TOKEN_RE } from '../api/auth.ts';
import { type Config, canonicalAddress, isAddress } from '../core/config.ts';
import { ConfigError, errorMessage, MailRelayError } from '../core/errors.ts';
import type { ReparseProgress, ReparseSummary } from '../pipeline/reparse.ts';
import type { ReplayProgress, ReplaySummary } from '../pipeline/replay.ts';
import type { RouterDeps } from '../pipeline/router.ts';
import { parseCommandArgs, USAGE_EXIT, usageError } from './cli-args.ts';
import { loadConfig, tokenMailbox, tokenScope } from './config-file.ts';

/** The subset of cli.ts's Io these commands use (structurally the same, so cli.ts passes its own). */
export interface CliIo {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  readonly err: NodeJS.WritableStream & { isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
}

/** Output keys of the stack (lib/mail-relay-stack.ts). */
export const STACK_OUTPUT_KEYS = {
  bucket: 'BucketName',
  table: 'TableName',
  /** With `apiUrl`: a replayed oversize forward's notice links through the API (handlers/links.ts). */
  linkSecret: 'LinkSecretArn',
  apiUrl: 'ApiUrl',
} as const;

export const REPLAY_USAGE = `Usage: mail-relay replay --since <time> [--mailbox <address>] [--stack <name>] [--restore-deleted]
  --since            ISO 8601 date or time (2025-03-01, 2025-03-01T12:00:00Z), or an age: 90m, 12h, 7d
  --mailbox          only mail whose routing reaches this mailbox
  --stack            replay in the deployed stack (S3 + DynamoDB + SES, with your AWS credentials);
                     without it, the local data dir ($MAIL_RELAY_DATA_DIR)
  --restore-deleted  also deliver again what was deleted since it arrived (by default it stays deleted)
Replaying twice is safe: deliveries and forwards happen once.`;

export const REPARSE_USAGE = `Usage: mail-relay reparse [--mailbox <address>] [--since <time>] [--stack <name>]
  parses stored mail again with this version's parser and rewrites what the parse gives (the summary
  GET …/messages/{id} shows, the decoded parts, LIST's from/to/subject/snippet and what q searches),
  so mail stored before a parser fix gains it; ids, order, seen flags, counters and raw bytes stay
  --mailbox  only this mailbox (its inbox and its sent view); by default every mailbox
  --since    only mail received since: ISO 8601 date or time (2025-03-01, 2025-03-01T12:00:00Z), or an
             age: 90m, 12h, 7d
  --stack    in the deployed stack (S3 + DynamoDB, with your AWS credentials); without it, the local
             data dir ($MAIL_RELAY_DATA_DIR), also while mail-relay dev runs on it
Safe to repeat and to interrupt: what is up to date already is counted unchanged and not written.`;

export const UPGRADE_USAGE = `Usage: mail-relay upgrade --stack <name> [--all]
  brings the mail a deployed stack stored with an earlier version up to this one's, after
  \`npx cdk deploy\` of this version: today, puts the unread mail stored before the index of unread
  mail (docs/adr/0020-unseen-index.md) into that index, so that the Unread view (LIST with unseen)
  reads it in one request instead of reading the whole mailbox. Until then the Unread view is
  complete, only slower. With your AWS credentials (dynamodb:Scan, Query, UpdateItem on the table).
  The local data dir needs nothing: it upgrades itself when opened.
  --all  check every mailbox, also those done: for mail an earlier version's function still running
         during the deploy stored (run it a few minutes after the deploy to be sure of those)
Safe to repeat and to interrupt: what is done is not done again (unless --all).`;

export const TOKEN_STACK_USAGE = `Usage: mail-relay token create --stack <name> <mailbox> [--label <text>]
       mail-relay token create --stack <name> --admin [<mailbox>] [--label <text>]
       mail-relay token revoke --stack <name> <token>`;

const DURATION_UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`: an ISO 8601 date/time, or an age such as `90m`, `12h`, `7d` (relative to `now`). A date
 * or date-time without a zone is UTC, the zone of the times LIST shows, whatever this host's `TZ`.
 */
export function parseSince(value: string, now: Date = new Date()): Date | null {
  const age = /^(\d{1,6})([smhd])$/.exec(value.trim());
  if (age) {
    const [, amount, unit] = age;
    return new Date(now.getTime() - Number(amount) * (DURATION_UNITS[unit ?? ''] ?? Number.NaN));
  }
  // Date-only or date-time in ISO 8601; Date.parse alone would accept "March 1" and guess a year.
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}:?\d{2})?)?$/i.exec(
    value.trim(),
  );
  if (m === null) return null;
  const [, day, time, zone] = m;
  // ECMAScript reads a date-time without an offset (and any with a space for the T) in local time.
  const ms = Date.parse(time === undefined ? `${day}` : `${day}T${time}${zone ?? 'Z'}`);
  return Number.isFinite(ms) ? new Date(ms) : null;
}

export interface StackOutputs {
  readonly bucketName: string;
  readonly tableName: string;
  /** Absent on a stack from before notice links went through the API. */
  readonly links?: { readonly secretArn: string; readonly baseUrl: string } | undefined;
}

/** Reads the bucket and table names from a deployed stack's outputs (CloudFormation DescribeStacks). */
export async function readStackOutputs(stackName: string): Promise<StackOutputs> {
  // Loaded on demand: `mail-relay route` and friends should not pay for the AWS SDK at start.
  const { CloudFormationClient, DescribeStacksCommand } = await import('@aws-sdk/client-cloudformation');
  const client = new CloudFormationClient({});
  try {
    let stacks: Stack[] | undefined;
    try {
      ({ Stacks: stacks } = await client.send(new DescribeStacksCommand({ StackName: stackName })));
    } catch (err) {
      const message = errorMessage(err);
      if (/does not exist/i.test(message))
        throw new ConfigError(
          `stack ${stackName} does not exist in ${await client.config.region()} (check --stack, and aws.region in the configuration)`,
        );
      throw new ConfigError(`cannot read stack ${stackName}: ${message}`);
    }
    const outputs = stacks?.[0]?.Outputs ?? [];
    const value = (key: string) => outputs.find((o) => o.OutputKey === key)?.OutputValue;
    const bucketName = value(STACK_OUTPUT_KEYS.bucket);
    const tableName = value(STACK_OUTPUT_KEYS.table);
    const missing = [
      ...(bucketName === undefined ? [STACK_OUTPUT_KEYS.bucket] : []),
      ...(tableName === undefined ? [STACK_OUTPUT_KEYS.table] : []),
    ];
    if (bucketName === undefined || tableName === undefined) {
      throw new ConfigError(
        `stack ${stackName} has no output ${missing.join(' or ')}; is it a mail-relay stack?`,
      );
    }
    const secretArn = value(STACK_OUTPUT_KEYS.linkSecret);
    const baseUrl = value(STACK_OUTPUT_KEYS.apiUrl);
    return {
      bucketName,
      tableName,
      links: secretArn !== undefined && baseUrl !== undefined ? { secretArn, baseUrl } : undefined,
    };
  } finally {
    client.destroy();
  }
}

/**
 * Runs `fn` with AWS_REGION set to the region `npx cdk deploy` put the stack in: the configuration's
 * `aws.region`, whichever region the shell's AWS profile names; else, as the CDK CLI resolves it,
 * AWS_REGION, AWS_DEFAULT_REGION (which the SDK alone does not read) or the profile's region. The CDK
 * CLI then falls back to us-east-1; rather than guess that, a missing region is said in one line. The
 * SDK reads AWS_REGION when a client first resolves its region, inside `fn`; the variable is put back
 * afterwards.
 */
export async function inStackRegion<T>(region: string | undefined, fn: () => Promise<T>): Promise<T> {
  const chosen = region ?? process.env.AWS_REGION ?? (process.env.AWS_DEFAULT_REGION || undefined);
  const before = process.env.AWS_REGION;
  if (chosen !== undefined) process.env.AWS_REGION = chosen;
  try {
    return await fn();
  } catch (err) {
    // The SDK's words, also inside the error that names the stack it could not read.
    if (/\bRegion is missing\b/.test(errorMessage(err))) {
      throw new MailRelayError(
        'no_region',
        'no AWS region: set aws.region in the configuration to the region the stack is in ' +
          '(`npx cdk deploy` used us-east-1 if nothing named one), or AWS_REGION',
        { cause: err },
      );
    }
    throw err;
  } finally {
    if (before === undefined) delete process.env.AWS_REGION;
    else process.env.AWS_REGION = before;
  }
}

/** S3-compatible endpoints (moto, MinIO, LocalStack) need path-style bucket addressing. */
function pathStyle(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL);
}

function summaryLine(s: ReplaySummary, since: Date, seconds: string): string {
  const c = s.counts;
  return (
    `replayed ${s.replayed} of ${s.considered} notifications stored since ${since.toISOString()} in ${seconds}s: ` +
    `delivered ${c.delivered}, duplicate ${c.duplicate}, quarantined ${c.quarantined}, forwarded ${c.forwarded}, ` +
    `rejected ${c.rejected}, dropped ${c.dropped}, forward failures ${c.failed}, loops ${c.looped}, ` +
    `parse failures ${c.parseFailed}; skipped ${s.skipped} (other mailboxes), ${s.expired} past the replay window ` +
    `(retention.inboundDays), errors ${s.failures.length}`
  );
}

/** `--since` and `--mailbox` as `replay` and `reparse` take them, or the exit code after saying which is wrong. */
function selectionOf(
  command: string,
  values: { readonly since?: string | undefined; readonly mailbox?: string | undefined },
  io: CliIo,
): { since: Date | undefined; mailbox: string | undefined } | number {
  const since = values.since === undefined ? undefined : parseSince(values.since);
  if (since === null) {
    io.err.write(
      `mail-relay ${command}: --since ${values.since} is not a date, a time or an age (90m, 12h, 7d)\n`,
    );
    return USAGE_EXIT;
  }
  const mailbox = values.mailbox === undefined ? undefined : canonicalAddress(values.mailbox);
  if (mailbox !== undefined && !isAddress(mailbox)) {
    io.err.write(`mail-relay ${command}: --mailbox ${values.mailbox} is not an address\n`);
    return USAGE_EXIT;
  }
  return { since, mailbox };
}

/** `mail-relay replay`: re-routes stored mail, locally or in a deployed stack. Returns the exit code. */
export async function commandReplay(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'replay',
      usage: REPLAY_USAGE,
      options: {
        since: { type: 'string' },
        mailbox: { type: 'string' },
        stack: { type: 'string' },
        'restore-deleted': { type: 'boolean' },
      },
      positionals: false,
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const selection = selectionOf('replay', values, io);
  if (typeof selection === 'number') return selection;
  const { since, mailbox } = selection;
  if (since === undefined) return usageError(io, 'replay', '--since is required', REPLAY_USAGE);
  const { config, awsRegion } = loadConfig(io.env);
  const options = { since, mailbox, stack: values.stack, restoreDeleted: values['restore-deleted'] === true };
  return inStackRegion(values.stack === undefined ? undefined : awsRegion, () =>
    replayIn(config, options, io),
  );
}

async function replayIn(
  config: Config,
  values: {
    readonly since: Date;
    readonly mailbox: string | undefined;
    readonly stack: string | undefined;
    readonly restoreDeleted: boolean;
  },
  io: CliIo,
): Promise<number> {
  const { since, mailbox } = values;
  const { replay } = await import('../pipeline/replay.ts');
  const { progressBar } = await import('./import.ts');

  const { deps, close, where } = await openStoredMail(config, values.stack, io);

  io.err.write(
    `replaying mail stored since ${since.toISOString()} in ${where}${mailbox ? ` for ${mailbox}` : ''}\n`,
  );
  const tty = io.err.isTTY === true;
  // Timed by the monotonic clock: a wall clock stepped meanwhile would make the run's length negative.
  const started = performance.now();
  let summary: ReplaySummary;
  try {
    summary = await replay(deps, {
      since,
      mailbox,
      restoreDeleted: values.restoreDeleted,
      onProgress: (p: ReplayProgress) => {
        if (tty)
          io.err.write(`\r${progressBar(p.done, p.total)}${p.failed > 0 ? ` (${p.failed} failed)` : ''}`);
        // Without a terminal, a line every 100 keeps a long replay visibly alive in a log.
        else if (p.done % 100 === 0) io.err.write(`${p.done}/${p.total}\n`);
      },
    });
  } finally {
    if (tty) io.err.write('\n');
    await close();
  }
  for (const f of summary.failures) io.err.write(`failed: ${f.key}: ${f.error}\n`);
  io.out.write(`${summaryLine(summary, since, ((performance.now() - started) / 1000).toFixed(1))}\n`);
  return summary.failures.length > 0 ? 1 : 0;
}

/**
 * `mail-relay import --stack <name>`: the files' messages into the deployed stack, through the same
 * path as locally (import.ts): each is stored under `inbound/` as SES would store it and routed by
 * this process with the stack's bucket, table and SES (your AWS credentials), as `replay --stack`
 * routes. Importing the same files again is a no-op there too. Returns the exit code.
 */
export async function commandImportIntoStack(
  stack: string,
  paths: readonly string[],
  target: {
    readonly to: readonly string[];
    readonly sentOf?: string | undefined;
    readonly restoreDeleted?: boolean | undefined;
  },
  io: CliIo,
): Promise<number> {
  const { config, awsRegion } = loadConfig(io.env);
  const { runImport } = await import('./import.ts');
  return inStackRegion(awsRegion, async () => {
    const { deps, close, where } = await openStoredMail(config, stack, io);
    io.err.write(
      `importing into ${target.sentOf === undefined ? '' : `the sent mail of ${target.sentOf} in `}${where}\n`,
    );
    try {
      // `--sent-of`: straight into the stack's bucket and table, as the send function stores its copies.
      const sentOf = target.sentOf === undefined ? undefined : { owner: target.sentOf, stores: deps };
      return await runImport(
        deps,
        paths,
        { to: target.to, sentOf, restoreDeleted: target.restoreDeleted },
        io,
      );
    } finally {
      await close();
    }
  });
}

/** `mail-relay reparse`: parses stored mail again, locally or in a deployed stack. Returns the exit code. */
export async function commandReparse(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'reparse',
      usage: REPARSE_USAGE,
      options: { since: { type: 'string' }, mailbox: { type: 'string' }, stack: { type: 'string' } },
      positionals: false,
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const selection = selectionOf('reparse', values, io);
  if (typeof selection === 'number') return selection;
  const { since, mailbox } = selection;
  if (values.stack === '') return usageError(io, 'reparse', '--stack needs a stack name', REPARSE_USAGE);
  const { config, awsRegion } = loadConfig(io.env);
  return inStackRegion(values.stack === undefined ? undefined : awsRegion, () =>
    reparseIn(config, { since, mailbox, stack: values.stack }, io),
  );
}

/**
 * The stored mail `replay` and `reparse` work on: the deployed stack's (`--stack`, through the AWS
 * SDK), else the local data dir's, where no journal is written, so nothing would sync deferred
 * writes: each write is synced itself.
 */
async function openStoredMail(
  config: Config,
  stack: string | undefined,
  io: CliIo,
): Promise<{ deps: RouterDeps; close: () => Promise<void>; where: string }> {
  if (stack !== undefined) {
    const outputs = await readStackOutputs(stack);
    const { createAwsRouterDeps } = await import('../handlers/router-deps.ts');
    const aws = createAwsRouterDeps({ ...outputs, config, forcePathStyle: pathStyle(process.env) });
    return {
      deps: aws,
      close: async () => {
        aws.clients.s3.destroy();
        aws.clients.dynamo.destroy();
        aws.ses.destroy();
      },
      where: `stack ${stack} (s3://${outputs.bucketName}, table ${outputs.tableName})`,
    };
  }
  const { createLocalRuntime, dataDirFromEnv, noDataIn } = await import('./runtime.ts');
  const noData = noDataIn(dataDirFromEnv(io.env));
  if (noData !== null) throw new MailRelayError('no_data', noData);
  const runtime = createLocalRuntime({ config, dataDir: dataDirFromEnv(io.env), durability: 'sync' });
  return { deps: runtime, close: () => runtime.close(), where: runtime.dataDir };
}

async function reparseIn(
  config: Config,
  values: {
    readonly since: Date | undefined;
    readonly mailbox: string | undefined;
    readonly stack: string | undefined;
  },
  io: CliIo,
): Promise<number> {
  const { since, mailbox } = values;
  const { reparse } = await import('../pipeline/reparse.ts');
  const { progressBar } = await import('./import.ts');

  // Beside a running dev, as replay: SQLite waits its turn for the write lock, and every write is one
  // that dev's could race with harmlessly (docs/adr/0018-reparse.md).
  const { deps, close, where } = await openStoredMail(config, values.stack, io);

  io.err.write(
    `reparsing mail${since === undefined ? '' : ` received since ${since.toISOString()}`} in ${where}` +
      `${mailbox === undefined ? '' : ` for ${mailbox}`}\n`,
  );
  const tty = io.err.isTTY === true;
  let summary: ReparseSummary;
  try {
    summary = await reparse(deps, {
      since,
      mailbox,
      onProgress: (p: ReparseProgress) => {
        if (tty)
          io.err.write(`\r${progressBar(p.done, p.total)}${p.failed > 0 ? ` (${p.failed} failed)` : ''}`);
        // Without a terminal, a line every 100 keeps a long run visibly alive in a log.
        else if (p.done % 100 === 0 || p.done === p.total) io.err.write(`${p.done}/${p.total}\n`);
      },
    });
  } finally {
    if (tty) io.err.write('\n');
    await close();
  }
  for (const f of summary.failures) io.err.write(`failed: ${f.mailbox} ${f.id}: ${f.error}\n`);
  // A mistyped --mailbox finds nothing to do, which the count alone would not tell.
  if (mailbox !== undefined && since === undefined && summary.considered === 0)
    io.err.write(`no mail stored for ${mailbox} (inbox or sent view)\n`);
  const mailboxes = `${summary.mailboxes} mailbox${summary.mailboxes === 1 ? '' : 'es'}`;
  const messages = `${summary.reparsed} message${summary.reparsed === 1 ? '' : 's'}`;
  io.out.write(
    `reparsed ${messages} in ${mailboxes}, ${summary.unchanged} unchanged, ${summary.failures.length} failed` +
      `${summary.gone > 0 ? `; ${summary.gone} deleted meanwhile (left deleted)` : ''}\n`,
  );
  return summary.failures.length > 0 ? 1 : 0;
}

/**
 * The deployed stack's bucket and table (from its outputs) as the blob store and the mailbox index,
 * for commands that only read them (`export`); `close` when done. Inside `inStackRegion`.
 */
export async function openStackStorage(config: Config, stack: string) {
  const outputs = await readStackOutputs(stack);
  const { createAwsStorage } = await import('../handlers/deps.ts');
  const storage = createAwsStorage({ ...outputs, config, forcePathStyle: pathStyle(process.env) });
  return {
    index: storage.index,
    blobs: storage.blobs,
    where: `stack ${stack} (s3://${outputs.bucketName}, table ${outputs.tableName})`,
    close: () => {
      storage.clients.s3.destroy();
      storage.clients.dynamo.destroy();
    },
  };
}

/** The deployed stack's mailbox index (its table, found from the stack's outputs); `close` when done. */
async function openStackIndex(stack: string) {
  const { tableName } = await readStackOutputs(stack);
  const [{ DynamoDBClient }, { DynamoDBDocumentClient }, { DynamoDbMailboxIndex }] = await Promise.all([
    import('@aws-sdk/client-dynamodb'),
    import('@aws-sdk/lib-dynamodb'),
    import('../adapters/aws/dynamodb-mailbox-index.ts'),
  ]);
  const dynamo = new DynamoDBClient({});
  const index = new DynamoDbMailboxIndex({ client: DynamoDBDocumentClient.from(dynamo), tableName });
  return { index, tableName, close: () => dynamo.destroy() };
}

/** `mail-relay upgrade --stack <name>`: see UPGRADE_USAGE. Returns the exit code. */
export async function commandUpgrade(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'upgrade',
      usage: UPGRADE_USAGE,
      options: { stack: { type: 'string' }, all: { type: 'boolean', default: false } },
      positionals: false,
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const stack = parsed.values.stack;
  if (stack === undefined || stack === '')
    return usageError(
      io,
      'upgrade',
      '--stack needs a stack name (the local data dir upgrades itself)',
      UPGRADE_USAGE,
    );
  const { awsRegion } = loadConfig(io.env);
  return inStackRegion(awsRegion, async () => {
    const { index, tableName, close } = await openStackIndex(stack);
    const tty = io.err.isTTY === true;
    io.err.write(
      `indexing unread mail stored before the unread index in stack ${stack} (table ${tableName})\n`,
    );
    try {
      const done = await index.backfillUnseen({
        all: parsed.values.all === true,
        onProgress: (p) => {
          if (tty) io.err.write(`\r${p.mailboxes}/${p.of} mailboxes, ${p.entries} entries indexed`);
          else if (p.mailboxes % 100 === 0 || p.mailboxes === p.of)
            io.err.write(`${p.mailboxes}/${p.of} mailboxes\n`);
        },
      });
      if (tty) io.err.write('\n');
      const mailboxes = `${done.mailboxes} mailbox${done.mailboxes === 1 ? '' : 'es'}`;
      io.out.write(
        done.of === 0
          ? 'up to date: every mailbox reads its unread mail from the index\n'
          : `indexed the unread mail of ${mailboxes} (${done.entries} entr${done.entries === 1 ? 'y' : 'ies'} changed)\n`,
      );
      return 0;
    } finally {
      close();
    }
  });
}

/**
 * `mail-relay token create|revoke --stack <name> …`: the same command as the local one, writing
 * to the deployed table. The token is printed once on stdout; only its SHA-256 is stored.
 */
export async function commandTokenForStack(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'token',
      usage: TOKEN_STACK_USAGE,
      options: {
        admin: { type: 'boolean', default: false },
        label: { type: 'string' },
        stack: { type: 'string' },
      },
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const [sub, ...positionals] = parsed.positionals;
  const { values } = parsed;
  const stack = values.stack;
  if (stack === undefined || stack === '')
    return usageError(io, 'token', '--stack needs a stack name', TOKEN_STACK_USAGE);
  if (sub === 'list') {
    io.err.write(
      'mail-relay token list: local data dir only (in a stack it would read the whole table); ' +
        'revoke a stack token with the token itself\n',
    );
    return USAGE_EXIT;
  }
  if (sub !== 'create' && sub !== 'revoke') {
    return usageError(
      io,
      'token',
      sub === undefined ? 'create or revoke?' : `unknown subcommand "${sub}"`,
      TOKEN_STACK_USAGE,
    );
  }
  const admin = values.admin === true;
  const label = values.label;
  const [first, ...extra] = positionals;
  const loaded = loadConfig(io.env);
  let mailbox: string | null = null;
  if (sub === 'revoke') {
    if (first === undefined || extra.length > 0 || admin || label !== undefined) {
      return usageError(io, 'token', 'revoke takes one token, and no --admin or --label', TOKEN_STACK_USAGE);
    }
    if (!TOKEN_RE.test(first)) {
      io.err.write(
        'mail-relay token revoke: that is not a mail-relay token (mr_…); with --stack, revoke takes ' +
          'the token itself (token ids are for the local data dir)\n',
      );
      return USAGE_EXIT;
    }
  } else {
    if (extra.length > 0) return usageError(io, 'token', 'create takes one mailbox', TOKEN_STACK_USAGE);
    if (first === undefined && !admin) {
      return usageError(io, 'token', 'create needs a mailbox, or --admin', TOKEN_STACK_USAGE);
    }
    if (label !== undefined && (label.length > 200 || /\p{Cc}/u.test(label))) {
      io.err.write('mail-relay token create: --label must be at most 200 printable characters\n');
      return USAGE_EXIT;
    }
    if (first !== undefined) {
      const checked = tokenMailbox(loaded.config, first);
      if ('problem' in checked) {
        io.err.write(`mail-relay token create: ${checked.problem}\n`);
        return USAGE_EXIT;
      }
      mailbox = checked.mailbox;
    }
  }

  return inStackRegion(loaded.awsRegion, async () => {
    const { index, tableName, close } = await openStackIndex(stack);
    try {
      if (sub === 'revoke') {
        const removed = await index.deleteToken(hashToken(first ?? ''));
        io.err.write(removed ? `token revoked in stack ${stack}\n` : 'no such token (already revoked?)\n');
        return removed ? 0 : 1;
      }
      const { token } = await createToken(index, {
        mailbox,
        admin,
        ...(label === undefined ? {} : { label }),
      });
      io.out.write(`${token}\n`);
      const scope = tokenScope(admin, mailbox);
      io.err.write(`${scope} stored in stack ${stack} (table ${tableName}); it is shown only this once\n`);
      return 0;
    } finally {
      close();
    }
  });
}
