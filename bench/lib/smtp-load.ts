/**
 * SMTP load generators: postfix's `smtp-source` (the reference tool of issue 7) and a Node
 * generator for machines without postfix. Both speak plain SMTP without pipelining, keep
 * `sessions` connections busy, and either reuse each connection (`smtp-source -d`) or open one
 * per message. The count each reports is of completed DATA transactions, read while running, so
 * the harness can take a window out of the middle of the run.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { freePort } from '../../test/helpers/net.ts';
import { procCpuSeconds } from './proc.ts';

export type GeneratorKind = 'smtp-source' | 'node';

export interface LoadOptions {
  readonly port: number;
  readonly sessions: number;
  /** Body bytes after the headers, as `smtp-source -l`. */
  readonly messageBytes: number;
  /** One message per connection (smtp-source without `-d`). */
  readonly perConnection: boolean;
  readonly recipient?: string;
}

export interface LoadRun {
  readonly generator: GeneratorKind;
  /** Messages whose DATA got a 2xx so far. */
  sent(): number;
  /** CPU seconds the generator itself has used (to show it is not the bottleneck). */
  cpuSeconds(): number;
  /** Set when the generator stopped by itself (a refused message, a crash). */
  failure(): string | null;
  stop(): Promise<void>;
}

const SENDER = 'load@sender.test';
const DEFAULT_RECIPIENT = 'bob@example.test';

/** Where postfix's test tools are, if installed (root's PATH has /usr/sbin, others' may not). */
export function postfixTool(name: 'smtp-source' | 'smtp-sink'): string | null {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/sbin']) {
    const path = `${dir}/${name}`;
    if (existsSync(path)) return path;
  }
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  return found.status === 0 && found.stdout.trim() !== '' ? found.stdout.trim() : null;
}

export function startLoad(kind: GeneratorKind, options: LoadOptions): LoadRun {
  return kind === 'smtp-source' ? startSmtpSource(options) : startNodeGenerator(options);
}

function startSmtpSource(options: LoadOptions): LoadRun {
  const tool = postfixTool('smtp-source');
  if (tool === null) throw new Error('smtp-source is not installed (apt-get install postfix)');
  const args = [
    '-c',
    '-s',
    String(options.sessions),
    ...(options.perConnection ? [] : ['-d']),
    '-l',
    String(options.messageBytes),
    // Far more than any window needs: the harness stops it, the count comes from the counter.
    '-m',
    '100000000',
    '-f',
    SENDER,
    '-t',
    options.recipient ?? DEFAULT_RECIPIENT,
    `127.0.0.1:${options.port}`,
  ];
  const proc = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let count = 0;
  let partial = '';
  let stderr = '';
  let failure: string | null = null;
  let stopping = false;
  // `-c` prints the running count followed by CR after every completed DATA.
  proc.stdout.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString('latin1');
    const parts = text.split('\r');
    partial = parts.pop() ?? '';
    for (let i = parts.length - 1; i >= 0; i--) {
      const n = Number(parts[i]);
      if (Number.isInteger(n) && n > 0) {
        count = n;
        break;
      }
    }
  });
  proc.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-2000);
  });
  let lastCpu = 0;
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      if (!stopping) failure = `smtp-source exited (${code ?? signal}): ${stderr.trim()}`;
      resolve();
    });
  });
  return {
    generator: 'smtp-source',
    sent: () => count,
    cpuSeconds: () => {
      if (proc.pid !== undefined && proc.exitCode === null) {
        try {
          lastCpu = procCpuSeconds(proc.pid);
        } catch {
          // It has just exited; keep the last reading.
        }
      }
      return lastCpu;
    },
    failure: () => failure,
    stop: async () => {
      stopping = true;
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** What the Node generator sends: the shape of smtp-source's message (a few headers, then `X` lines). */
function nodeMessage(bodyBytes: number, recipient: string): Buffer {
  const head =
    `From: <${SENDER}>\r\nTo: <${recipient}>\r\nDate: ${new Date().toUTCString()}\r\n` +
    `Message-Id: <${process.pid}.${Date.now()}@bench.invalid>\r\n\r\n`;
  const line = `${'X'.repeat(78)}\r\n`;
  let body = line.repeat(Math.floor(bodyBytes / line.length));
  const rest = bodyBytes - body.length;
  if (rest >= 2) body += `${'X'.repeat(rest - 2)}\r\n`;
  return Buffer.from(`${head}${body}.\r\n`, 'latin1');
}

type Step = 'greeting' | 'ehlo' | 'mail' | 'rcpt' | 'data' | 'body' | 'quit';

/**
 * A plain SMTP client on raw sockets: one command, wait for the whole reply, next command
 * (no PIPELINING, as smtp-source). Nagle is off so each command leaves at once.
 */
function startNodeGenerator(options: LoadOptions): LoadRun {
  const recipient = options.recipient ?? DEFAULT_RECIPIENT;
  const message = nodeMessage(options.messageBytes, recipient);
  const mailFrom = `MAIL FROM:<${SENDER}>\r\n`;
  const rcptTo = `RCPT TO:<${recipient}>\r\n`;
  let count = 0;
  let stopping = false;
  let failure: string | null = null;
  const sockets = new Set<Socket>();
  const cpuStart = process.cpuUsage();

  const session = () =>
    new Promise<void>((resolve) => {
      const socket = connect(options.port, '127.0.0.1');
      sockets.add(socket);
      socket.setNoDelay(true);
      let step: Step = 'greeting';
      let buffer = '';
      const fail = (why: string) => {
        if (!stopping && failure === null) failure = why;
        socket.destroy();
      };
      const advance = (code: string, reply: string) => {
        const ok = code.startsWith('2') || (step === 'data' && code === '354');
        if (!ok) return fail(`server answered ${reply.trim()} at ${step}`);
        switch (step) {
          case 'greeting':
            step = 'ehlo';
            socket.write('EHLO bench.invalid\r\n');
            return;
          case 'ehlo':
            step = 'mail';
            socket.write(mailFrom);
            return;
          case 'mail':
            step = 'rcpt';
            socket.write(rcptTo);
            return;
          case 'rcpt':
            step = 'data';
            socket.write('DATA\r\n');
            return;
          case 'data':
            step = 'body';
            socket.write(message);
            return;
          case 'body':
            count += 1;
            if (stopping || options.perConnection) {
              step = 'quit';
              socket.write('QUIT\r\n');
            } else {
              step = 'mail';
              socket.write(mailFrom);
            }
            return;
          case 'quit':
            socket.end();
            return;
        }
      };
      socket.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('latin1');
        for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
          const line = buffer.slice(0, nl + 1);
          buffer = buffer.slice(nl + 1);
          // A multi-line reply continues while the 4th character is '-'.
          if (line[3] === '-') continue;
          advance(line.slice(0, 3), line);
        }
      });
      socket.on('error', (err) => fail(`socket: ${err.message}`));
      socket.on('close', () => {
        sockets.delete(socket);
        resolve();
      });
    });

  const worker = async () => {
    do await session();
    while (!stopping && failure === null && options.perConnection);
  };
  const done = Promise.all(Array.from({ length: options.sessions }, worker));
  return {
    generator: 'node',
    sent: () => count,
    cpuSeconds: () => {
      const u = process.cpuUsage(cpuStart);
      return (u.user + u.system) / 1e6;
    },
    failure: () => failure,
    stop: async () => {
      stopping = true;
      for (const s of sockets) s.destroy();
      await done;
    },
  };
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface SinkProcess {
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * postfix's smtp-sink, the C reference server (a test program, not the postfix daemon). It is
 * started by pid and stopped by pid; nothing of postfix's own service is ever started.
 */
export async function startSmtpSink(): Promise<SinkProcess> {
  const tool = postfixTool('smtp-sink');
  if (tool === null) throw new Error('smtp-sink is not installed (apt-get install postfix)');
  const port = await freePort();
  // smtp-sink refuses to run as root without a user to drop to.
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const proc: ChildProcess = spawn(tool, [...(asRoot ? ['-u', 'nobody'] : []), `127.0.0.1:${port}`, '1024'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  await waitForPort(port, 5000);
  if (proc.pid === undefined) throw new Error('smtp-sink did not start');
  const pid = proc.pid;
  return {
    port,
    pid,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}
