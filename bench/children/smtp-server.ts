/**
 * An SMTP server under test, in its own process so its memory and CPU are its own.
 * `node --import tsx bench/children/smtp-server.ts <kind> <greeting>`:
 * - `discard`: npm smtp-server that reads DATA and throws it away (the SMTP layer's ceiling);
 * - `fsync`: the same, plus each message written to its own file and fsynced before `250`
 *   (the ceiling of any durable server on this disk);
 * - `relay`: the local relay itself (`startSmtpListener` over `createLocalRuntime`), `250` only after
 *   the message is in `inbound/`, delivered, and committed to the index.
 * `greeting` is `default` (smtp-server's fixed 100 ms early-talker wait) or `prompt` (the
 * PromptGreetingSMTPServer the listener uses, which greets at once); the relay always uses its own.
 */
import { mkdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerOptions } from 'smtp-server';
import { sendToParent, serveRequests } from '../lib/ipc.ts';
import { parseVariants, wrapRelay } from '../lib/relay-variants.ts';

const [kind = 'discard', greeting = 'default'] = process.argv.slice(2);
const dataDir = process.env.BENCH_DATA_DIR ?? '';
let accepted = 0;
let failed = 0;

/** The listener's own options, so the references differ from the relay only in what they do with DATA. */
const baseOptions: SMTPServerOptions = {
  name: 'bench',
  banner: 'bench ESMTP',
  size: 40 * 1024 * 1024,
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  disableReverseLookup: true,
  logger: false,
};

function collect(
  stream: SMTPServerDataStream,
  done: (body: Buffer) => void,
  fail: (err: Error) => void,
): void {
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.once('error', fail);
  stream.once('end', () => done(Buffer.concat(chunks)));
}

async function writeAndFsync(path: string, body: Buffer): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.write(body);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The references load smtp-server alone (and the listener's subclass): their RSS is the SMTP layer's. */
async function bareServer(): Promise<SMTPServer> {
  let seq = 0;
  const options: SMTPServerOptions = {
    ...baseOptions,
    onData(stream, _session, callback) {
      if (kind === 'discard') {
        stream.on('data', () => {});
        stream.once('error', (err) => callback(err));
        stream.once('end', () => {
          accepted += 1;
          callback(null);
        });
        return;
      }
      collect(
        stream,
        (body) => {
          seq += 1;
          writeAndFsync(join(dataDir, `${seq}.eml`), body).then(
            () => {
              accepted += 1;
              callback(null);
            },
            (err: unknown) => {
              failed += 1;
              callback(err instanceof Error ? err : new Error(String(err)));
            },
          );
        },
        (err) => callback(err),
      );
    },
  };
  if (greeting !== 'prompt') return new SMTPServer(options);
  const { PromptGreetingSMTPServer } = await import('../../functions/local/prompt-greeting-server.ts');
  return new PromptGreetingSMTPServer({ ...options, earlyTalkerDelay: 0 });
}

async function main(): Promise<void> {
  if (kind === 'relay') {
    const { DEV_DEFAULT_CONFIG, parseConfig } = await import('../../functions/core/config.ts');
    const { createLocalRuntime } = await import('../../functions/local/runtime.ts');
    const { startSmtpListener } = await import('../../functions/local/smtp-listener.ts');
    const runtime = createLocalRuntime({ config: parseConfig(DEV_DEFAULT_CONFIG), dataDir });
    const variants = parseVariants(process.env.BENCH_RELAY_VARIANT);
    const deps =
      variants.length === 0
        ? runtime
        : {
            ...runtime,
            ...wrapRelay(runtime.blobs, runtime.index, {
              variants,
              blobRoot: runtime.blobRoot,
              indexPath: join(runtime.dataDir, 'index.sqlite'),
            }),
          };
    const listener = await startSmtpListener(deps, {
      port: 0,
      spoolDir: runtime.spoolDir,
      onDelivered: () => {
        accepted += 1;
      },
      onError: () => {
        failed += 1;
      },
    });
    serveRequests(
      () => ({ type: 'count', accepted, failed }),
      async () => {
        await listener.close();
        await deps.index.close();
      },
    );
    sendToParent({ type: 'ready', port: listener.port });
    return;
  }
  if (kind === 'fsync') mkdirSync(dataDir, { recursive: true });
  const server = await bareServer();
  server.on('error', () => {
    failed += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.server.address() as AddressInfo;
  serveRequests(
    () => ({ type: 'count', accepted, failed }),
    () => new Promise<void>((resolve) => server.close(() => resolve())),
  );
  sendToParent({ type: 'ready', port });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
