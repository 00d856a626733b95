/**
 * SMTP protocol behaviour of the local listener towards real and misbehaving clients (RFC 5321),
 * over raw sockets: what each command is answered, and what is stored for whom.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseConfig } from '../../functions/core/config.ts';
import { createLocalRuntime } from '../../functions/local/runtime.ts';
import { startSmtpListener } from '../../functions/local/smtp-listener.ts';
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

async function withListener(fn: (l: Awaited<ReturnType<typeof startListener>>) => Promise<void>) {
  const l = await startListener();
  try {
    await fn(l);
  } finally {
    await l.close();
  }
}

async function startListener() {
  const dataDir = mkdtempSync(join(tmpdir(), 'mr-conformance-'));
  const runtime = createLocalRuntime({
    config: parseConfig({ domains: ['example.test'], mailboxes: ['*@example.test'] }),
    dataDir,
  });
  const smtp = await startSmtpListener(runtime, { port: 0, spoolDir: runtime.spoolDir });
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
});
