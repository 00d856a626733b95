/**
 * A second, in-process SMTP server (npm smtp-server) playing the remote MX that forwarded mail
 * goes to (Gmail, in real life). It keeps every message it accepts, byte for byte, with its envelope.
 * Recipients can be told to fail: `refuse(address, 550)` always, `refuseOnce(address, 451)` the first time.
 * With `{auth: true}` it offers AUTH (and still no STARTTLS), as a smarthost without TLS would.
 * It greets at once, as Gmail or Postfix do: npm smtp-server's own 100 ms wait before the greeting
 * (see functions/local/prompt-greeting-server.ts) cost each forward of the corpus suite 100 ms.
 */
import { type AddressInfo, createServer } from 'node:net';
import { PromptGreetingSMTPServer } from '../../functions/local/prompt-greeting-server.ts';

export interface ReceivedMessage {
  readonly mailFrom: string;
  readonly rcptTo: readonly string[];
  /** The DATA as received (dot-unstuffed by the server). */
  readonly raw: Buffer;
}

export interface RemoteMx {
  readonly port: number;
  /** `smtp://127.0.0.1:<port>`: what `relay.smtp` is set to. */
  readonly url: string;
  readonly received: ReceivedMessage[];
  /** User names and passwords clients logged in with (`{auth: true}`). */
  readonly logins: { readonly user: string; readonly pass: string }[];
  /** Messages received for one recipient. */
  to(address: string): ReceivedMessage[];
  /** Refuses RCPT TO of `address` with `code` (and `text`, else a test's own reply text). */
  refuse(address: string, code: number, text?: string): void;
  refuseOnce(address: string, code: number, text?: string): void;
  /** Stops refusing an address. */
  accept(address: string): void;
  close(): Promise<void>;
}

function smtpError(code: number, message: string): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode: code });
}

export async function startRemoteMx(options: { auth?: boolean } = {}): Promise<RemoteMx> {
  const received: ReceivedMessage[] = [];
  const logins: { user: string; pass: string }[] = [];
  const always = new Map<string, { code: number; text: string | undefined }>();
  const once = new Map<string, { code: number; text: string | undefined }>();
  const server = new PromptGreetingSMTPServer({
    earlyTalkerDelay: 0,
    name: 'mx.remote.test',
    authOptional: true,
    disabledCommands: options.auth === true ? ['STARTTLS'] : ['AUTH', 'STARTTLS'],
    allowInsecureAuth: true,
    onAuth(auth, _session, callback) {
      logins.push({ user: auth.username ?? '', pass: auth.password ?? '' });
      callback(null, { user: auth.username });
    },
    disableReverseLookup: true,
    size: 100 * 1024 * 1024,
    logger: false,
    onRcptTo(address, _session, callback) {
      const a = address.address.toLowerCase();
      const refusal = always.get(a) ?? once.get(a);
      once.delete(a);
      if (refusal !== undefined) {
        const { code, text } = refusal;
        return callback(smtpError(code, text ?? `${code === 550 ? '5.1.1' : '4.3.0'} refused by test`));
      }
      return callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.once('end', () => {
        received.push({
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address.toLowerCase()),
          raw: Buffer.concat(chunks),
        });
        callback(null, `2.0.0 Ok: queued as remote-${received.length}`);
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    received,
    logins,
    to: (address) => received.filter((m) => m.rcptTo.includes(address.toLowerCase())),
    refuse: (address, code, text) => always.set(address.toLowerCase(), { code, text }),
    refuseOnce: (address, code, text) => once.set(address.toLowerCase(), { code, text }),
    accept: (address) => {
      always.delete(address.toLowerCase());
      once.delete(address.toLowerCase());
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface RefusingSmarthost {
  /** `smtp://127.0.0.1:<port>`. */
  readonly url: string;
  /** Connections it was opened, so far. */
  connections(): number;
  close(): Promise<void>;
}

/**
 * A smarthost that refuses the relay itself, not any message: with `greeting` it answers a new
 * connection with that line and closes it; with `reply` it greets, then answers every command but
 * QUIT with that line (EHLO, HELO, MAIL… all refused).
 */
export async function startRefusingSmarthost(
  refusal: { readonly greeting: string } | { readonly reply: string },
): Promise<RefusingSmarthost> {
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    if ('greeting' in refusal) return void socket.end(`${refusal.greeting}\r\n`);
    socket.write('220 smarthost.internal.test ESMTP\r\n');
    socket.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('latin1').split('\r\n').filter(Boolean)) {
        socket.write(/^QUIT/i.test(line) ? '221 bye\r\n' : `${refusal.reply}\r\n`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
