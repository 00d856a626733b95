/**
 * `npx mail-relay <command>`: dev, route, import. Each command is a function that takes its
 * arguments and an output stream, so tests call them in-process as well as through the binary.
 */
import { parseArgs } from 'node:util';
import { type Config, isAddress, normalizeAddress } from '../core/config.ts';
import { MailRelayError } from '../core/errors.ts';
import { type Decision, resolveRecipient } from '../core/routing.ts';
import { countOutcomes } from '../pipeline/router.ts';
import { loadConfig } from './config-file.ts';
import { importFiles, progressBar } from './import.ts';
import { createLocalRuntime, dataDirFromEnv } from './runtime.ts';
import { startSmtpListener } from './smtp-listener.ts';

export interface Io {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  readonly err: NodeJS.WritableStream & { isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
}

const USAGE = `Usage: mail-relay <command> [options]

Commands:
  dev                      run the local relay (SMTP on 127.0.0.1:$MAIL_RELAY_SMTP_PORT, default 2525)
  route <address>…         print what would happen to mail for each address
  import [--to <address>] <files…>
                           feed .eml files through the router (recipients: --to, else the
                           message's Delivered-To / X-Original-To / To / Cc headers)

Environment: MAIL_RELAY_CONFIG (default ./mail-relay.config.json), MAIL_RELAY_DATA_DIR (./.mail-relay),
MAIL_RELAY_SMTP_PORT (2525).`;

export async function main(argv: readonly string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'dev':
        return await commandDev(io);
      case 'route':
        return commandRoute(rest, io);
      case 'import':
        return await commandImport(rest, io);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out.write(`${USAGE}\n`);
        return command === undefined ? 1 : 0;
      default:
        io.err.write(`mail-relay: unknown command "${command}"\n\n${USAGE}\n`);
        return 2;
    }
  } catch (err) {
    if (err instanceof MailRelayError) {
      io.err.write(`mail-relay: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

function describeDecision(d: Decision, config: Config): string {
  const via =
    d.routeIndex === undefined
      ? 'mailbox'
      : `routes[${d.routeIndex}] (${config.routes[d.routeIndex]?.route.match})`;
  const tag = d.plusTag ? ` [+${d.plusTag}]` : '';
  switch (d.kind) {
    case 'deliver':
      return `deliver to mailbox ${d.mailbox}${tag} via ${via}`;
    case 'quarantine':
      return `quarantine in ${d.mailbox} (${d.reasons.join(', ')})`;
    case 'forward':
      return `forward to ${d.to}${tag} via ${via}`;
    case 'reject':
      return `reject ${d.code} ${d.message}${d.routeIndex === undefined ? '' : ` via ${via}`}`;
    case 'drop':
      return `drop (accepted and discarded) via ${via}`;
  }
}

function commandRoute(args: readonly string[], io: Io): number {
  if (args.length === 0) {
    io.err.write('mail-relay route: give one or more addresses\n');
    return 2;
  }
  const { config, path } = loadConfig(io.env);
  io.out.write(`config: ${path ?? 'dev default (example.test, every address a mailbox)'}\n`);
  let allAccepted = true;
  for (const address of args) {
    const decisions = resolveRecipient(config, address);
    for (const d of decisions) io.out.write(`${normalizeAddress(address)}: ${describeDecision(d, config)}\n`);
    if (decisions.every((d) => d.kind === 'reject')) allAccepted = false;
  }
  return allAccepted ? 0 : 1;
}

async function commandDev(io: Io): Promise<number> {
  const { config, path } = loadConfig(io.env);
  const runtime = createLocalRuntime({ config, dataDir: dataDirFromEnv(io.env) });
  const port = Number(io.env.MAIL_RELAY_SMTP_PORT ?? 2525);
  const smtp = await startSmtpListener(runtime, {
    port,
    onDelivered: (r) => {
      const c = countOutcomes([r]);
      io.out.write(
        `${new Date().toISOString()} ${r.id} ${r.size}B delivered=${c.delivered + c.quarantined} forwarded=${c.forwarded} ` +
          `rejected=${c.rejected} dropped=${c.dropped}${r.parseFailed ? ' parse-failed' : ''}\n`,
      );
    },
    onError: (err) => io.err.write(`smtp error: ${err instanceof Error ? err.message : String(err)}\n`),
  });
  io.out.write(
    `mail-relay dev\n  config: ${path ?? 'dev default: domain example.test, every address is a mailbox'}\n` +
      `  data:   ${runtime.dataDir}\n  smtp:   127.0.0.1:${smtp.port}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await smtp.close();
  await runtime.close();
  return 0;
}

async function commandImport(args: readonly string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...args],
    options: { to: { type: 'string', multiple: true } },
    allowPositionals: true,
  });
  if (positionals.length === 0) {
    io.err.write('mail-relay import: give one or more .eml files\n');
    return 2;
  }
  const forced = (values.to ?? []).map(normalizeAddress);
  const bad = forced.find((t) => !isAddress(t));
  if (bad !== undefined) {
    io.err.write(`mail-relay import: --to ${bad} is not an address\n`);
    return 2;
  }
  const { config } = loadConfig(io.env);
  const runtime = createLocalRuntime({ config, dataDir: dataDirFromEnv(io.env) });
  try {
    const summary = await importFiles(runtime, positionals, {
      to: forced,
      onProgress:
        io.err.isTTY === true ? (done, total) => io.err.write(`\r${progressBar(done, total)}`) : undefined,
    });
    if (io.err.isTTY === true) io.err.write('\n');
    for (const f of summary.failures) io.err.write(`failed: ${f.file}: ${f.reason}\n`);
    io.out.write(`${summary.line}\n`);
    return summary.failures.length > 0 ? 1 : 0;
  } finally {
    await runtime.close();
  }
}
