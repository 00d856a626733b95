/**
 * SMTP protocol behaviour of the local listener towards real and misbehaving clients (RFC 5321),
 * over raw sockets: what each command is answered, and what is stored for whom.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseConfig } from '../../functions/core/config.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import {
  SMTP_IDLE_TIMEOUT_MS,
  type SmtpListenerOptions,
  STALLED_DATA_ON_STOP_MS,
  startSmtpListener,
} from '../../functions/local/smtp-listener.ts';
import { listAll } from '../helpers/relay.ts';

/** A client on a raw socket: `until` waits for the replies so far to match. */
async function rawClient(port: number) {
  const socket: Socket = connect(port, '127.0.0.1');
  let received = '';
  let closed = false;
  socket.on('data', (d: Buffer) => {
    received += d.toString('latin1');
  });
  socket.on('error', () => undefined);
  socket.once('close', () => {
    closed = true;
  });
  const client = {
    socket,
    get received() {
      return received;
    },
    get closed() {
      return closed;
    },
    async until(what: RegExp | 'closed', ms = 5000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!(what === 'closed' ? closed : what.test(received))) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got:\n${received}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
  await client.until(/^220 /m);
  return client;
}

async function withListener(
  fn: (l: Awaited<ReturnType<typeof startListener>>) => Promise<void>,
  options: Partial<SmtpListenerOptions> = {},
) {
  const l = await startListener(options);
  try {
    await fn(l);
  } finally {
    await l.close();
  }
}

async function startListener(options: Partial<SmtpListenerOptions>) {
  const dataDir = mkdtempSync(join(tmpdir(), 'mr-conformance-'));
  const runtime = createLocalRuntime({
    config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
    dataDir,
  });
  const smtp = await startSmtpListener(runtime, { port: 0, spoolDir: runtime.spoolDir, ...options });
  let smtpClosed = false;
  return {
    runtime,
    port: smtp.port,
    subjects: async (mailbox: string) => (await listAll(runtime.index, mailbox)).map((e) => e.subject),
    closeSmtp: async () => {
      smtpClosed = true;
      await smtp.close();
    },
    close: async () => {
      if (!smtpClosed) await smtp.close();
      await runtime.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

describe('stopping the listener (the 421 of a shutdown)', () => {
  it('hangs up at once on idle sessions (421 4.3.2), lets a message being sent finish, and stops without the 30 s grace', async () => {
    await withListener(async (l) => {
      // A mailer's pooled connection between messages: greeted, EHLO answered, then silent.
      const idle = await rawClient(l.port);
      idle.socket.write('EHLO pool\r\n');
      await idle.until(/^250 /m);
      // One in the middle of its message.
      const sending = await rawClient(l.port);
      sending.socket.write(
        'EHLO busy\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n',
      );
      await sending.until(/^354 /m);
      sending.socket.write('Subject: during shutdown\r\n\r\nfirst half\r\n');

      const started = Date.now();
      const stopped = l.closeSmtp();
      await idle.until(/^421 4\.3\.2 Server shutting down; try again later\r\n$/m, 2000);
      await idle.until('closed', 2000);
      // The message being sent is received and answered, then that session is hung up on too.
      sending.socket.write('second half\r\n.\r\n');
      await sending.until(/^250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 /m, 2000);
      await sending.until('closed', 2000);
      await stopped;
      assert.ok(Date.now() - started < 3000, `stopped after ${Date.now() - started} ms`);
      assert.deepEqual(await l.subjects('bob@example.test'), ['during shutdown']);
    });
  });

  it(`hangs up on a client that stops sending mid-message (${STALLED_DATA_ON_STOP_MS} ms of silence); one still sending finishes`, async () => {
    await withListener(async (l) => {
      const start = async (subject: string) => {
        const c = await rawClient(l.port);
        c.socket.write('EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<dave@example.test>\r\nDATA\r\n');
        await c.until(/^354 /m);
        c.socket.write(`Subject: ${subject}\r\n\r\nfirst line\r\n`);
        return c;
      };
      const stalled = await start('stalled');
      const trickling = await start('trickling');
      const started = Date.now();
      const stopped = l.closeSmtp();
      // The trickling client sends a line every half second for three seconds, then ends its message.
      const trickle = (async () => {
        for (let i = 0; i < 6; i++) {
          await new Promise((r) => setTimeout(r, 500));
          trickling.socket.write(`line ${i}\r\n`);
        }
        trickling.socket.write('.\r\n');
      })();
      await stalled.until(
        /^421 4\.3\.2 Server shutting down before your message was received in full/m,
        4000,
      );
      await stalled.until('closed', 1000);
      const hungUpAfter = Date.now() - started;
      assert.ok(hungUpAfter >= STALLED_DATA_ON_STOP_MS - 100, `hung up after ${hungUpAfter} ms`);
      await trickle;
      await trickling.until(/^250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 /m, 3000);
      await stopped;
      assert.ok(Date.now() - started < 6000, `stopped after ${Date.now() - started} ms`);
      assert.deepEqual(await l.subjects('dave@example.test'), ['trickling']);
    });
  });
});

describe('a silent client (timeouts)', () => {
  it('waits at least the 5 minutes of RFC 5321 §4.5.3.2.7 for the next command (smtp-server’s default: 60 s)', async () => {
    assert.ok(SMTP_IDLE_TIMEOUT_MS >= 5 * 60 * 1000);
    // The idle timeout is the server socket's: record what each accepted socket is given.
    const given: number[] = [];
    const setTimeout = Socket.prototype.setTimeout;
    Socket.prototype.setTimeout = function (this: Socket, ms: number, ...rest: [(() => void)?]) {
      given.push(ms);
      return setTimeout.call(this, ms, ...rest);
    };
    try {
      await withListener(async (l) => {
        const client = await rawClient(l.port);
        client.socket.write('EHLO client\r\n');
        await client.until(/^250 /m);
        client.socket.end('QUIT\r\n');
        await client.until('closed');
      });
    } finally {
      Socket.prototype.setTimeout = setTimeout;
    }
    assert.ok(given.includes(SMTP_IDLE_TIMEOUT_MS), `socket timeouts set: ${given.join(', ')}`);
    assert.ok(!given.includes(60_000), `socket timeouts set: ${given.join(', ')}`);
  });

  it('past the idle timeout: 421 and the session closed; a message stalled mid-DATA is not stored', async () => {
    await withListener(
      async (l) => {
        const idle = await rawClient(l.port);
        idle.socket.write('EHLO client\r\n');
        const stalled = await rawClient(l.port);
        stalled.socket.write(
          'EHLO client\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n',
        );
        await stalled.until(/^354 /m);
        stalled.socket.write('Subject: stalled\r\n\r\nhalf of it\r\n');
        await idle.until(/^421 [^\r\n]*Timeout/m);
        await stalled.until(/^421 [^\r\n]*Timeout/m);
        await idle.until('closed');
        await stalled.until('closed');
        assert.deepEqual(await l.subjects('carol@example.test'), []);
      },
      { idleTimeout: 300 },
    );
  });
});
