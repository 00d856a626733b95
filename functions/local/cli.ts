/**
 * `npx mail-relay <command>`: dev, route, import, export, token, replay, reparse, upgrade, outbox, pop3, compact.
 * Each command is a function that takes its arguments and an output stream, so tests call them
 * in-process as well as through the binary.
 */
import { type Stats, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { domainToASCII } from 'node:url';
import { createToken, hashToken, TOKEN_RE } from '../api/auth.ts';
import { InProcessMailWaiter } from '../api/waiter.ts';
import {
  type Config,
  canonicalAddress,
  domainOf,
  forwardedRetentionDays,
  isAddress,
  normalizeAddress,
} from '../core/config.ts';
import {
  ConfigError,
  errorMessage,
  isOutOfDescriptors,
  isStorageFull,
  MailRelayError,
} from '../core/errors.ts';
import { SENDING_ADDRESS_REASON } from '../core/forward-rewrite.ts';
import { type Decision, qualifyRecipient, resolveRecipient } from '../core/routing.ts';
import type { RetentionDeps } from '../pipeline/retention.ts';
import { countOutcomes, type RouteResult } from '../pipeline/router.ts';
import type { TokenRecord } from '../ports/mailbox-index.ts';
import { parseCommandArgs, USAGE_EXIT, usageError } from './cli-args.ts';
import { CONFIG_FILE_NAME, loadConfig, tokenMailbox, tokenScope } from './config-file.ts';
import { connectionCap, OutOfDescriptorsNotice, readOpenFilesLimit } from './descriptor-limit.ts';
import { DEFAULT_API_PORT, DEFAULT_POP3_PORT, DEFAULT_SMTP_PORT } from './ports.ts';
import type { RetentionSweeper } from './retention-sweeper.ts';
import type { LocalRuntime } from './runtime.ts';
import type { SmtpRefusal } from './smtp-listener.ts';
import { StorageFullNotice } from './storage-full-notice.ts';

/** `noDataIn` for the data dir of the environment. */
async function noDataInEnv(io: Io): Promise<string | null> {
  const { dataDirFromEnv, noDataIn } = await import('./runtime.ts');
  return noDataIn(dataDirFromEnv(io.env));
}

// The heavy modules (SQLite, mailparser, smtp-server, Hono) load only for the commands that need
// them, so `mail-relay route` and `help` start fast.
async function openRuntime(
  io: Io,
  config: Config,
  options: { reserve?: boolean } = {},
): Promise<LocalRuntime> {
  const { createLocalRuntime, dataDirFromEnv } = await import('./runtime.ts');
  return createLocalRuntime({ config, dataDir: dataDirFromEnv(io.env), reserve: options.reserve });
}

export interface Io {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  readonly err: NodeJS.WritableStream & { isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
  /** Stops `dev` (tests); without it `dev` runs until SIGINT or SIGTERM. */
  readonly stop?: AbortSignal;
}

const USAGE = `Usage: mail-relay <command> [options]

Commands:
  dev                      run the local relay: SMTP on 127.0.0.1:$MAIL_RELAY_SMTP_PORT (default 2525)
                           and the HTTP API on 127.0.0.1:$MAIL_RELAY_API_PORT (default 8025)
  route <address>…         print what would happen to mail for each address
  import [--to <address>]… [--restore-deleted] [--stack <name>] <files or directories…>
                           feed .eml files, mbox files and directories (a Maildir) through the router
                           (recipients: --to, else every address in the message's Delivered-To,
                           X-Original-To, To and Cc headers); what a mailbox holds, or held and
                           deleted, is not added again unless --restore-deleted; --stack: into the
                           deployed stack
  import --sent-of <mailbox> [--restore-deleted] [--stack <name>] <files or directories…>
                           put sent mail (export --sent, a mail program's Sent folder) into the
                           mailbox's sent view, as POST …/send keeps it; nothing is routed
  export <mailbox> [--sent] [--out <path>] [--format mbox|maildir] [--force] [--stack <name>]
                           write a mailbox's mail (--sent: its sent view), oldest first, with its read
                           state: an mbox (to stdout without --out) or a Maildir; from the data dir or
                           the deployed stack (backups, moving to another mail system; import reads it back)
  token create <mailbox> [--label <text>]
  token create --admin [<mailbox>] [--label <text>]
                           print a new API token (shown once; only its SHA-256 is stored);
                           an admin token lists every mailbox and reads any of them
  token list [<mailbox>]   the tokens (their id, mailbox or admin, created, label), never the tokens
  token revoke <token | id>
                           revoke a token, by itself or by the id token list shows
  token create|revoke … --stack <name>
                           the same, in a deployed stack's table (your AWS credentials; revoke
                           takes the token itself there)
  replay --since <time> [--mailbox <address>] [--stack <name>] [--restore-deleted]
                           re-route stored mail (local data dir, or the deployed stack); safe to repeat;
                           what was deleted since it arrived stays deleted unless --restore-deleted
  reparse [--mailbox <address>] [--since <time>] [--stack <name>]
                           parse stored mail again with this version's parser (summaries, parts, LIST
                           fields, search), so mail stored before a parser fix gains it; safe to repeat
  upgrade --stack <name>   after deploying this version: index the unread mail an earlier version
                           stored in the stack (the Unread view reads it in one request); safe to repeat
  outbox [show <id>]       what forwarding and POST …/send would have sent (when no relay.smtp is set)
  pop3 [--api <url>]       the POP3 bridge on 127.0.0.1:$MAIL_RELAY_POP3_PORT (default 1110) for any mail
                           client, in front of the API (default: dev's); USER <mailbox>, PASS <token>
  compact                  give the space of deleted mail back to the file system (the data dir's
                           SQLite files do not shrink by themselves); with dev stopped
  help <command>           that command's usage (as <command> --help)

Environment: MAIL_RELAY_CONFIG (default ./mail-relay.config.json), MAIL_RELAY_DATA_DIR (./.mail-relay),
MAIL_RELAY_SMTP_PORT (2525), MAIL_RELAY_API_PORT (8025), MAIL_RELAY_POP3_PORT (1110).`;

/** How often `dev` looks at its configuration file's modification time. */
const CONFIG_POLL_MS = 2000;

const COMMANDS = [
  'dev',
  'route',
  'import',
  'export',
  'token',
  'replay',
  'reparse',
  'upgrade',
  'pop3',
  'outbox',
  'compact',
];

const DEV_USAGE = `Usage: mail-relay dev
  runs the local relay: SMTP on 127.0.0.1:$MAIL_RELAY_SMTP_PORT (default 2525) and the HTTP API on
  127.0.0.1:$MAIL_RELAY_API_PORT (default 8025), storing in $MAIL_RELAY_DATA_DIR (default ./.mail-relay);
  one dev per data dir. Stops on Ctrl-C (SIGINT) or SIGTERM.`;

const ROUTE_USAGE = `Usage: mail-relay route <address>…
  prints what would happen to mail for each address (exit code 1 when one is refused)`;

const IMPORT_USAGE = `Usage: mail-relay import [--to <address>… | --sent-of <mailbox>] [--restore-deleted] [--stack <name>] <files or directories…>
  feeds messages through the router into $MAIL_RELAY_DATA_DIR: .eml files, mbox files (each message
  of it; an export of Thunderbird, mutt, Apple Mail or Google Takeout) and directories (every file
  below that is mail: a Maildir, a folder of .eml files; hidden entries and a Maildir's tmp/ passed
  over); recipients: each --to, else the message's Delivered-To / X-Original-To / To / Cc headers
  --sent-of  mail the mailbox sent (mail-relay export --sent, a Sent folder: ~/Maildir/.Sent, Sent.mbox)
             into its sent view (GET …?view=sent), stored as it is, read state kept; not routed
  --restore-deleted
             deliver again what a mailbox held and deleted since (it stays deleted by default):
             mail-relay export's output imported back restores the deleted mail, the rest is there
  --stack    into the deployed stack (S3 + DynamoDB, and SES for forwards, with your AWS credentials)`;

const POP3_USAGE = `Usage: mail-relay pop3 [--api <url>]
  the POP3 bridge on 127.0.0.1:$MAIL_RELAY_POP3_PORT (default 1110) in front of the HTTP API at <url>
  (default: dev's, http://127.0.0.1:$MAIL_RELAY_API_PORT; a deployed stack's ApiUrl; with or without
  /v1/); log in with USER <mailbox address>, PASS <API token>`;

export async function main(argv: readonly string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'dev':
        return await commandDev(rest, io);
      case 'route':
        return commandRoute(rest, io);
      case 'import':
        return await commandImport(rest, io);
      case 'export': {
        const { commandExport } = await import('./export.ts');
        return await commandExport(rest, io);
      }
      case 'token':
        return await commandToken(rest, io);
      case 'replay': {
        const { commandReplay } = await import('./cli-aws.ts');
        return await commandReplay(rest, io);
      }
      case 'reparse': {
        const { commandReparse } = await import('./cli-aws.ts');
        return await commandReparse(rest, io);
      }
      case 'upgrade': {
        const { commandUpgrade } = await import('./cli-aws.ts');
        return await commandUpgrade(rest, io);
      }
      case 'pop3':
        return await commandPop3(rest, io);
      case 'outbox': {
        const { commandOutbox } = await import('./outbox.ts');
        return await commandOutbox(rest, io);
      }
      case 'compact': {
        const { commandCompact } = await import('./compact.ts');
        return await commandCompact(rest, io);
      }
      case 'help':
        if (rest.length === 1 && COMMANDS.includes(rest[0] ?? ''))
          return await main([rest[0] ?? '', '--help'], io);
        if (rest.length === 0) {
          io.out.write(`${USAGE}\n`);
          return 0;
        }
        // As an unknown command or option is answered: one line saying what is wrong, the usage, exit 2.
        return usageError(
          io,
          'help',
          rest.length === 1 ? `unknown command "${rest[0]}"` : 'give one command',
          USAGE,
        );
      case undefined:
      case '--help':
      case '-h':
        io.out.write(`${USAGE}\n`);
        return command === undefined ? 1 : 0;
      default:
        io.err.write(`mail-relay: unknown command "${command}"\n\n${USAGE}\n`);
        return USAGE_EXIT;
    }
  } catch (err) {
    if (err instanceof MailRelayError) {
      io.err.write(`mail-relay: ${err.message}\n`);
      return 1;
    }
    const listen = listenFailure(err);
    if (listen !== null) {
      io.err.write(`mail-relay: ${listen}\n`);
      return 1;
    }
    if (isStorageFull(err)) {
      // SQLite's own words for it ("disk I/O error" when a database cannot even be opened) read like
      // a broken disk, and a stack trace like a bug: say what it is and what to do.
      const { dataDirFromEnv } = await import('./runtime.ts');
      io.err.write(
        `mail-relay: no space left on the disk of ${dataDirFromEnv(io.env)} (${errorMessage(err)}); ` +
          'free some space and run the command again\n',
      );
      return 1;
    }
    throw err;
  }
}

/** A server that could not listen (port taken, or privileged): one line saying what to change. */
function listenFailure(err: unknown): string | null {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (e?.syscall !== 'listen' || (e.code !== 'EADDRINUSE' && e.code !== 'EACCES')) return null;
  const where = `${e.address ?? '127.0.0.1'}:${e.port ?? '?'}`;
  const why = e.code === 'EADDRINUSE' ? 'the port is in use' : 'permission denied';
  return (
    `cannot listen on ${where}: ${why}; choose another port ` +
    '(MAIL_RELAY_SMTP_PORT, MAIL_RELAY_API_PORT, MAIL_RELAY_POP3_PORT)'
  );
}

function describeDecision(d: Decision, config: Config): string {
  const via =
    d.routeIndex === undefined
      ? 'mailbox'
      : `routes[${d.routeIndex}] (${config.routes[d.routeIndex]?.route.match})`;
  const tag = d.plusTag ? ` [${config.plusAddressing.separator}${d.plusTag}]` : '';
  switch (d.kind) {
    case 'deliver':
      return `deliver to mailbox ${d.mailbox}${tag} via ${via}`;
    case 'quarantine':
      return `quarantine in ${d.mailbox} (${d.reasons.join(', ')})`;
    case 'forward':
      // forward.ts cuts it: it would come straight back in.
      if (config.domains.includes(domainOf(d.to)))
        return (
          `forward to ${d.to}${tag} via ${via}: not sent, ${domainOf(d.to)} is one of our domains ` +
          `(cut as a loop; a notice goes to ${config.relay.notifyMailbox})`
        );
      if (d.recipient === config.relay.fromAddress)
        return (
          `forward to ${d.to}${tag} via ${via}: not sent, ${SENDING_ADDRESS_REASON(d.recipient)} ` +
          `(cut as a loop; a notice goes to ${config.relay.notifyMailbox})`
        );
      return `forward to ${d.to}${tag} via ${via}`;
    case 'reject':
      return `reject ${d.code} ${d.message}${d.routeIndex === undefined ? '' : ` via ${via}`}`;
    case 'drop':
      return `drop (accepted and discarded) via ${via}`;
  }
}

function commandRoute(args: readonly string[], io: Io): number {
  const parsed = parseCommandArgs({ command: 'route', usage: ROUTE_USAGE, options: {} }, args, io);
  if (typeof parsed === 'number') return parsed;
  const addresses = parsed.positionals;
  if (addresses.length === 0) return usageError(io, 'route', 'give one or more addresses', ROUTE_USAGE);
  const { config, path } = loadConfig(io.env);
  io.out.write(`config: ${path ?? 'dev default (example.test, every address a mailbox)'}\n`);
  let allAccepted = true;
  for (const address of addresses) {
    // As the SMTP listener takes it: an internationalized domain in its ASCII (xn--) form, a quoted
    // local part that needs no quotes without them.
    const decisions = resolveRecipient(config, qualifyRecipient(config, canonicalAddress(address)));
    // An address reaching one mailbox (or destination) by several paths gets one copy: said once.
    const said = new Set<string>();
    for (const d of decisions) {
      const key =
        d.kind === 'deliver'
          ? `deliver ${d.mailbox}`
          : d.kind === 'forward'
            ? `forward ${d.to}`
            : describeDecision(d, config);
      if (said.has(key)) continue;
      said.add(key);
      io.out.write(`${normalizeAddress(address)}: ${describeDecision(d, config)}\n`);
    }
    if (decisions.every((d) => d.kind === 'reject')) allAccepted = false;
  }
  return allAccepted ? 0 : 1;
}

/** A TCP port from the environment, or the default; anything else is a configuration error. */
function portFromEnv(io: Io, name: string, fallback: number): number {
  const raw = io.env[name];
  if (raw === undefined || raw === '') return fallback;
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port > 65535) throw new ConfigError(`${name}=${raw} is not a TCP port (0-65535)`);
  return port;
}

/**
 * An address for a log line, in printable ASCII: an internationalized domain in its `xn--` form (as a
 * client may have sent it, and as a grep for it finds it), anything else unprintable as `?`.
 */
function logAddress(address: string): string {
  const at = address.lastIndexOf('@');
  const domain = at < 0 ? '' : domainToASCII(address.slice(at + 1));
  const ascii = at < 0 || domain === '' ? address : `${address.slice(0, at)}@${domain}`;
  return ascii.replace(/[^\x21-\x7e]/g, '?');
}

/** Addresses for a log line: the first three, then how many more; printable ASCII only. */
function someOf(addresses: readonly string[], lead: string): string {
  const unique = [...new Set(addresses)];
  if (unique.length === 0) return '';
  const shown = unique.slice(0, 3).map(logAddress);
  return `${lead}${shown.join(', ')}${unique.length > 3 ? ` (+${unique.length - 3} more)` : ''}`;
}

/** What `dev` logs of mail refused at RCPT or after DATA (the sender had the reply). */
function refusalLine(r: SmtpRefusal): string {
  const from = r.from === '' ? '<>' : logAddress(r.from);
  const what =
    r.command === 'RCPT' ? `RCPT${someOf(r.recipients, ' ')}` : `DATA${someOf(r.recipients, ' to ')}`;
  return `${new Date().toISOString()} refused ${what} from ${from}: ${r.reply.replace(/[^\x20-\x7e]/g, '?')}\n`;
}

/** The mailboxes a routed message landed in: they get the long-poll wake-up. */
function deliveredMailboxes(r: RouteResult): string[] {
  return r.outcomes.flatMap((o) =>
    (o.status === 'delivered' || o.status === 'quarantined') &&
    (o.decision.kind === 'deliver' || o.decision.kind === 'quarantine')
      ? [o.decision.mailbox]
      : [],
  );
}

async function commandDev(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandArgs(
    { command: 'dev', usage: DEV_USAGE, options: {}, positionals: false },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { config, path } = loadConfig(io.env);
  // The file as it was read (or, with the dev default, its absence): what a later change is told from.
  const configPath = path ?? resolve(process.cwd(), CONFIG_FILE_NAME);
  const configAsRead = statSync(configPath, { throwIfNoEntry: false });
  const smtpPort = portFromEnv(io, 'MAIL_RELAY_SMTP_PORT', DEFAULT_SMTP_PORT);
  const apiPort = portFromEnv(io, 'MAIL_RELAY_API_PORT', DEFAULT_API_PORT);
  // One at a time, not in parallel: Node reads a module graph's files all at once, a descriptor each,
  // and this is what set the open-files limit `npm start` needs (descriptor-limit.ts).
  const { startApiServer } = await import('./api-server.ts');
  const { startSmtpListener } = await import('./smtp-listener.ts');
  const { holdDevLock } = await import('./compact.ts');
  const { dataDirFromEnv } = await import('./runtime.ts');
  // One dev per data dir, and no `compact` beside it (compact.ts); the OS drops the lock if we die.
  // Taken before the journal is recovered or a store opened: a second dev must touch nothing.
  const devLock = holdDevLock(dataDirFromEnv(io.env));
  // dev keeps the room deletes need on a full disk (disk-reserve.ts).
  const runtime = await openRuntime(io, config, { reserve: true }).catch((err: unknown) => {
    devLock.release();
    throw err;
  });
  // Mail a crashed run had acknowledged but maybe not finished routing: route it before listening.
  const recovered = await runtime.recover().catch(async (err: unknown) => {
    await runtime.close().catch(() => undefined);
    devLock.release();
    // Nothing is lost: the segments stay until a recovery succeeds. A full disk is the usual cause.
    throw new MailRelayError(
      'recovery_failed',
      `could not route the mail a previous run left in ${runtime.dataDir}/journal ` +
        `(${errorMessage(err)}); it is kept there: fix the cause ` +
        '(free disk space?) and start again',
      { cause: err },
    );
  });
  if (recovered.messages > 0) io.out.write(`recovered ${recovered.messages} journaled messages\n`);
  const waiter = new InProcessMailWaiter();
  // A full disk is said once (and when it is over), not for every message and request it refuses.
  const storageFull = new StorageFullNotice((line) => io.err.write(line), runtime.dataDir);
  // So is running out of file descriptors (the open-files limit): a burst of connections past it.
  const openFiles = readOpenFilesLimit();
  const outOfDescriptors = new OutOfDescriptorsNotice((line) => io.err.write(line), openFiles);
  const cap = connectionCap(openFiles);
  const api = await startApiServer(runtime, {
    port: apiPort,
    waiter,
    maxConnections: cap,
    onConnectionRefused: () =>
      outOfDescriptors.refused(`API connections beyond ${cap} at once get 503 out_of_resources`),
    app: {
      logError: (err) => {
        if (isOutOfDescriptors(err)) return outOfDescriptors.refused('API requests get 503 out_of_resources');
        if (!storageFull.report(err)) console.error('mail-relay api: internal error', err);
      },
    },
  }).catch(async (err: unknown) => {
    await runtime.close();
    devLock.release();
    throw err;
  });
  // Links the router signs (oversize-forward notices) point at this API server.
  const smtp = await startSmtpListener(
    { ...runtime, forwarding: { presign: (key, options) => api.blobs.presign(key, options) } },
    {
      port: smtpPort,
      spoolDir: runtime.spoolDir,
      maxSessions: cap,
      onSessionRefused: () => outOfDescriptors.refused(`SMTP sessions beyond ${cap} at once get 421 4.3.2`),
      onDelivered: (r) => {
        storageFull.stored();
        outOfDescriptors.stored();
        const mailboxes = deliveredMailboxes(r);
        for (const mailbox of mailboxes) waiter.notify(mailbox);
        const c = countOutcomes([r]);
        io.out.write(
          `${new Date().toISOString()} ${r.id} ${r.size}B delivered=${c.delivered + c.quarantined} forwarded=${c.forwarded} ` +
            `rejected=${c.rejected} dropped=${c.dropped} failed=${c.failed} looped=${c.looped}${r.parseFailed ? ' parse-failed' : ''}` +
            `${someOf(mailboxes, ' to ')}\n`,
        );
      },
      onRefused: (refusal) => io.out.write(refusalLine(refusal)),
      onError: (err) => {
        if (isOutOfDescriptors(err)) return outOfDescriptors.refused('messages and connections are refused');
        if (!storageFull.report(err)) io.err.write(`smtp error: ${errorMessage(err)}\n`);
      },
    },
  ).catch(async (err: unknown) => {
    await api.close();
    await runtime.close();
    devLock.release();
    throw err;
  });
  // From here a SIGINT or SIGTERM closes everything (the banner says we are up; a stop right after it
  // must not kill the process mid-start).
  const stopped = untilStopped(io);
  io.out.write(
    `mail-relay dev\n  config: ${path ?? 'dev default: domain example.test, every address is a mailbox'}\n` +
      `  data:   ${runtime.dataDir}\n  smtp:   127.0.0.1:${smtp.port}\n  api:    ${api.url}/v1/\n` +
      `  inbox:  ${api.url}/inbox/\n` +
      '  token:  npx mail-relay token create <mailbox>\n',
  );
  // Without a file, the one `route` would read from now on if it appeared (cp …example.json …).
  const unwatch =
    path === null
      ? noticeConfigChanges(configPath, io, 'appeared', 'the dev default', configAsRead)
      : noticeConfigChanges(configPath, io, 'changed', 'the configuration it started with', configAsRead);
  const retention = await startDevRetention(io, config, api.blobs, runtime.index, runtime.blobs);
  await stopped;
  unwatch();
  await retention.stop();
  // Together: a long-poll gets its 204 at once, not once the last message under way has come in.
  await Promise.all([smtp.close(), api.close()]);
  await runtime.close();
  devLock.release();
  return 0;
}

/**
 * Says once when the configuration file changes (or, started with the dev default, appears) while
 * `dev` runs: `route` reads the file anew and would show the new decisions while the relay still
 * routes by the ones it started with. Told from the file as it was read (`asRead`, undefined when
 * there was none), by a stat now and every CONFIG_POLL_MS: a change made while `dev` was starting is
 * told too.
 */
export function noticeConfigChanges(
  path: string,
  io: Pick<Io, 'out'>,
  what: 'changed' | 'appeared',
  startedWith: string,
  asRead: Stats | undefined,
): () => void {
  let said = false;
  const differs = (now: Stats | undefined): boolean => {
    if (now === undefined || asRead === undefined) return (now === undefined) !== (asRead === undefined);
    return now.mtimeMs !== asRead.mtimeMs || now.size !== asRead.size || now.ino !== asRead.ino;
  };
  const check = () => {
    if (said) return;
    let now: Stats | undefined;
    try {
      now = statSync(path, { throwIfNoEntry: false });
    } catch {
      // Not there as a file we can look at any more (its folder replaced by a file, ENOTDIR; no
      // permission; a network mount gone stale): told as gone. Thrown from this timer, it ended
      // the relay (an uncaught exception) for the sake of a notice.
      now = undefined;
    }
    if (!differs(now)) return;
    said = true;
    io.out.write(`${path} ${what}: restart mail-relay dev to route by it (it routes by ${startedWith})\n`);
  };
  // Not fs.watchFile: it takes its own first look asynchronously, and a change made before that
  // look became its baseline, never told (the dev-watch test failed a CI run that way).
  const timer = setInterval(check, CONFIG_POLL_MS);
  timer.unref();
  check();
  return () => clearInterval(timer);
}

/** Resolves on SIGINT, SIGTERM or `io.stop`. */
function untilStopped(io: Io): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      io.stop?.removeEventListener('abort', stop);
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (io.stop?.aborted) stop();
    else io.stop?.addEventListener('abort', stop, { once: true });
  });
}

/**
 * `pop3 [--api <url>]`: the POP3 bridge (pop3-bridge.ts) on 127.0.0.1:$MAIL_RELAY_POP3_PORT, in
 * front of the local API (`dev`'s, by default) or a deployed one.
 */
async function commandPop3(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandArgs(
    { command: 'pop3', usage: POP3_USAGE, options: { api: { type: 'string' } }, positionals: false },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { apiBaseUrl, startPop3Bridge } = await import('./pop3-bridge.ts');
  const apiUrl = apiBaseUrl(
    parsed.values.api ?? `http://127.0.0.1:${portFromEnv(io, 'MAIL_RELAY_API_PORT', DEFAULT_API_PORT)}`,
  );
  const bridge = await startPop3Bridge({
    apiUrl,
    port: portFromEnv(io, 'MAIL_RELAY_POP3_PORT', DEFAULT_POP3_PORT),
    onError: (err) => io.err.write(`pop3 error: ${errorMessage(err)}\n`),
    onAuthFailure: ({ mailbox, remote }) =>
      io.err.write(`pop3: failed login for ${JSON.stringify(mailbox)} from ${remote}\n`),
  });
  io.out.write(
    `mail-relay pop3\n  pop3:  127.0.0.1:${bridge.port}\n  api:   ${apiUrl}/v1/\n` +
      '  login: USER <mailbox address>, PASS <API token> (npx mail-relay token create <mailbox>)\n',
  );
  await untilStopped(io);
  await bridge.close();
  return 0;
}

/**
 * Sweeps at start and hourly (local/retention-sweeper.ts) through the API server's store, which the
 * router writes through too: received mail past `retention.inboundDays` (forwarded originals past
 * forwardedRetentionDays) and, with
 * `retention.mailboxDays`, delivered mail past that. One line per sweep that deleted something.
 */
async function startDevRetention(
  io: Io,
  config: Config,
  blobs: RetentionDeps['blobs'],
  index: RetentionDeps['index'],
  receivedBlobs: RetentionDeps['blobs'],
): Promise<RetentionSweeper> {
  const { mailboxDays, inboundDays } = config.retention;
  const forwardedDays = forwardedRetentionDays(config);
  const { startRetentionSweeper } = await import('./retention-sweeper.ts');
  return startRetentionSweeper(
    { blobs, index },
    {
      mailboxDays,
      received: { inboundDays, forwardedDays },
      receivedBlobs,
      onExpired: (e) => {
        if (e.deleted === 0) return;
        io.out.write(
          `${new Date().toISOString()} retention: deleted ${e.deleted} received message(s), notification(s) and forwarded ` +
            `original(s), ${e.bytes}B (inbound/, notifications/ after ${inboundDays} day(s); forwarded/ after ${forwardedDays})\n`,
        );
      },
      onSwept: (s) => {
        for (const f of s.failures) io.err.write(`retention: ${f.mailbox}: ${f.error}\n`);
        if (s.deleted === 0 && s.orphans === 0) return;
        io.out.write(
          `${new Date().toISOString()} retention: deleted ${s.deleted} message(s), ${s.bytes}B, older than ${mailboxDays} day(s)` +
            `${s.orphans > 0 ? `, ${s.orphans} orphaned blob set(s)` : ''}\n`,
        );
      },
      onError: (err) => io.err.write(`retention error: ${errorMessage(err)}\n`),
    },
  );
}

async function commandImport(args: readonly string[], io: Io): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'import',
      usage: IMPORT_USAGE,
      options: {
        to: { type: 'string', multiple: true },
        'sent-of': { type: 'string' },
        'restore-deleted': { type: 'boolean' },
        stack: { type: 'string' },
      },
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  if (positionals.length === 0)
    return usageError(io, 'import', 'give one or more .eml files, mbox files or directories', IMPORT_USAGE);
  const forced = (values.to ?? []).map(canonicalAddress);
  const bad = forced.find((t) => !isAddress(t));
  if (bad !== undefined) {
    io.err.write(`mail-relay import: --to ${bad} is not an address\n`);
    return USAGE_EXIT;
  }
  const sentOf = values['sent-of'];
  if (sentOf !== undefined && forced.length > 0)
    return usageError(
      io,
      'import',
      '--sent-of puts the mail into a sent view, --to routes it to mailboxes: give one of them',
      IMPORT_USAGE,
    );
  if (values.stack === '') return usageError(io, 'import', '--stack needs a stack name', IMPORT_USAGE);
  const { config } = loadConfig(io.env);
  let owner: string | undefined;
  if (sentOf !== undefined) {
    const checked = tokenMailbox(config, sentOf);
    if ('problem' in checked) {
      io.err.write(`mail-relay import: --sent-of: ${checked.problem}\n`);
      return USAGE_EXIT;
    }
    owner = checked.mailbox;
  }
  const restoreDeleted = values['restore-deleted'] === true;
  if (values.stack !== undefined) {
    const { commandImportIntoStack } = await import('./cli-aws.ts');
    return await commandImportIntoStack(
      values.stack,
      positionals,
      { to: forced, sentOf: owner, restoreDeleted },
      io,
    );
  }
  const { runImport } = await import('./import.ts');
  const runtime = await openRuntime(io, config);
  try {
    await runtime.recover();
    // The sent view is written as the send route writes it: outside the journal, each write synced.
    const sent = owner === undefined ? undefined : { owner, stores: runtime.unjournaled };
    return await runImport(runtime, positionals, { to: forced, sentOf: sent, restoreDeleted }, io);
  } finally {
    await runtime.close();
  }
}

const TOKEN_USAGE = `Usage: mail-relay token create <mailbox> [--label <text>]
       mail-relay token create --admin [<mailbox>] [--label <text>]
       mail-relay token list [<mailbox>]
       mail-relay token revoke <token | id>
  create prints a new token, once: only its SHA-256 is stored. list shows each token's id (the start
  of that SHA-256), its mailbox or admin, when it was created and its label; revoke takes the token
  itself or that id. With --stack <name>: create, and revoke <token>, in a deployed stack.`;

/** How many hex digits of a token's SHA-256 `token list` shows as its id. */
export const TOKEN_ID_LENGTH = 12;
/** The shortest id prefix `token revoke` takes (fewer would too easily name more than one token). */
const MIN_TOKEN_ID_LENGTH = 8;

/**
 * `token create|list|revoke`: a new token goes to stdout alone on its line (scripts capture it);
 * notes go to stderr.
 */
async function commandToken(args: readonly string[], io: Io): Promise<number> {
  if (args.some((a) => a === '--stack' || a.startsWith('--stack='))) {
    const { commandTokenForStack } = await import('./cli-aws.ts');
    return await commandTokenForStack(args, io);
  }
  const parsed = parseCommandArgs(
    {
      command: 'token',
      usage: TOKEN_USAGE,
      options: { admin: { type: 'boolean', default: false }, label: { type: 'string' } },
    },
    args,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  const [sub, ...rest] = positionals;
  if (sub !== 'create' && (values.admin || values.label !== undefined)) {
    return usageError(io, 'token', '--admin and --label are for token create', TOKEN_USAGE);
  }
  switch (sub) {
    case 'create':
      return await tokenCreate(rest, values.admin === true, values.label, io);
    case 'list':
      return await tokenList(rest, io);
    case 'revoke':
      return await tokenRevoke(rest, io);
    default:
      return usageError(
        io,
        'token',
        sub === undefined ? 'create, list or revoke?' : `unknown subcommand "${sub}"`,
        TOKEN_USAGE,
      );
  }
}

async function tokenCreate(
  positionals: readonly string[],
  admin: boolean,
  label: string | undefined,
  io: Io,
): Promise<number> {
  const [rawMailbox, ...extra] = positionals;
  if (extra.length > 0) return usageError(io, 'token', 'create takes one mailbox', TOKEN_USAGE);
  if (rawMailbox === undefined && !admin) {
    return usageError(io, 'token', 'create needs a mailbox, or --admin', TOKEN_USAGE);
  }
  if (label !== undefined && (label.length > 200 || /\p{Cc}/u.test(label))) {
    io.err.write('mail-relay token create: --label must be at most 200 printable characters\n');
    return USAGE_EXIT;
  }
  const { config } = loadConfig(io.env);
  let mailbox: string | null = null;
  if (rawMailbox !== undefined) {
    const checked = tokenMailbox(config, rawMailbox);
    if ('problem' in checked) {
      io.err.write(`mail-relay token create: ${checked.problem}\n`);
      return USAGE_EXIT;
    }
    mailbox = checked.mailbox;
  }
  const runtime = await openRuntime(io, config);
  try {
    const { token } = await createToken(runtime.index, {
      mailbox,
      admin,
      ...(label === undefined ? {} : { label }),
    });
    io.out.write(`${token}\n`);
    const scope = tokenScope(admin, mailbox);
    // Tokens live in the data dir: one made in another than `dev`'s is refused there (401), so say which.
    io.err.write(
      `${scope} created in ${runtime.dataDir}; it is shown only this once. Use it as: Authorization: Bearer <token>\n`,
    );
    return 0;
  } finally {
    await runtime.close();
  }
}

/** Who a token is for, as `token list` and `token revoke` name it. */
function tokenFor(t: TokenRecord): string {
  return t.admin ? `admin${t.mailbox === null ? '' : ` (${t.mailbox})`}` : (t.mailbox ?? '');
}

/** `token list [<mailbox>]`: one line per token, oldest first, under a header; never a token itself. */
async function tokenList(positionals: readonly string[], io: Io): Promise<number> {
  const [raw, ...extra] = positionals;
  if (extra.length > 0) return usageError(io, 'token', 'list takes at most one mailbox', TOKEN_USAGE);
  const mailbox = raw === undefined ? undefined : canonicalAddress(raw);
  if (mailbox !== undefined && !isAddress(mailbox)) {
    io.err.write(`mail-relay token list: ${raw} is not an address\n`);
    return USAGE_EXIT;
  }
  const { config } = loadConfig(io.env);
  const noData = await noDataInEnv(io);
  if (noData !== null) {
    io.err.write(`mail-relay token list: ${noData}\n`);
    return 1;
  }
  const runtime = await openRuntime(io, config);
  let tokens: TokenRecord[];
  try {
    tokens = (await runtime.index.listTokens()).filter((t) => mailbox === undefined || t.mailbox === mailbox);
  } finally {
    await runtime.close();
  }
  if (tokens.length === 0) {
    io.out.write(mailbox === undefined ? 'no tokens\n' : `no tokens for ${mailbox}\n`);
    return 0;
  }
  const rows = [
    ['id', 'for', 'created', 'label'],
    ...tokens.map((t) => [t.hash.slice(0, TOKEN_ID_LENGTH), tokenFor(t), t.createdAt, t.label ?? '']),
  ];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  for (const r of rows) {
    const line = r.map((cell, c) => (c < 3 ? cell.padEnd(widths[c] ?? 0) : cell)).join('  ');
    io.out.write(`${line.trimEnd()}\n`);
  }
  return 0;
}

/** `token revoke <token | id>`: the token itself, or the start of its SHA-256 (`token list`'s id). */
async function tokenRevoke(positionals: readonly string[], io: Io): Promise<number> {
  const [given, ...extra] = positionals;
  if (given === undefined || extra.length > 0) {
    return usageError(io, 'token', 'revoke takes one token or token id', TOKEN_USAGE);
  }
  const byToken = TOKEN_RE.test(given);
  const id = given.toLowerCase();
  if (!byToken && !new RegExp(`^[0-9a-f]{${MIN_TOKEN_ID_LENGTH},64}$`).test(id)) {
    io.err.write(
      'mail-relay token revoke: that is neither a mail-relay token (mr_…) nor a token id ' +
        `(the ${TOKEN_ID_LENGTH} hex digits token list shows, or at least their first ${MIN_TOKEN_ID_LENGTH})\n`,
    );
    return USAGE_EXIT;
  }
  const { config } = loadConfig(io.env);
  const noData = await noDataInEnv(io);
  if (noData !== null) {
    io.err.write(`mail-relay token revoke: ${noData}\n`);
    return 1;
  }
  const runtime = await openRuntime(io, config);
  try {
    let found: TokenRecord | null;
    if (byToken) {
      found = await runtime.index.getToken(hashToken(given));
    } else {
      const matches = (await runtime.index.listTokens()).filter((t) => t.hash.startsWith(id));
      if (matches.length > 1) {
        io.err.write(
          `mail-relay token revoke: ${given} is the start of ${matches.length} tokens' ids; give more of it\n`,
        );
        return USAGE_EXIT;
      }
      found = matches[0] ?? null;
    }
    const removed = found !== null && (await runtime.index.deleteToken(found.hash));
    io.err.write(
      removed && found !== null
        ? `token revoked: ${found.hash.slice(0, TOKEN_ID_LENGTH)} ${tokenFor(found)}${found.label === undefined ? '' : ` (${found.label})`}\n`
        : 'no such token (already revoked?)\n',
    );
    return removed ? 0 : 1;
  } finally {
    await runtime.close();
  }
}
