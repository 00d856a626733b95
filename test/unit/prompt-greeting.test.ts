import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, connect } from 'node:net';
import { describe, it } from 'node:test';
import { PromptGreetingSMTPServer } from '../../functions/local/prompt-greeting-server.ts';

async function withServer(earlyTalkerDelay: number, fn: (port: number) => Promise<void>): Promise<void> {
  const server = new PromptGreetingSMTPServer({
    earlyTalkerDelay,
    logger: false,
    disableReverseLookup: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
  });
  server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  try {
    await fn((server.server.address() as AddressInfo).port);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/** Connects, optionally talks at once, and collects what the server says until it has `lines` lines. */
async function converse(port: number, sayFirst: string | null, lines: number): Promise<string[]> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  if (sayFirst !== null) socket.write(sayFirst);
  let text = '';
  for await (const chunk of socket) {
    text += String(chunk);
    if (text.split('\r\n').length > lines) break;
  }
  socket.destroy();
  return text.split('\r\n').slice(0, lines);
}

describe('PromptGreetingSMTPServer (configurable early-talker delay)', () => {
  it('greets at once with delay 0, so a client that speaks immediately is served', async () => {
    await withServer(0, async (port) => {
      const [greeting, reply] = await converse(port, 'EHLO client.test\r\n', 2);
      assert.match(greeting ?? '', /^220 /);
      assert.match(reply ?? '', /^250[- ]/);
    });
  });

  it('keeps the early-talker defence when a delay is set', async () => {
    await withServer(100, async (port) => {
      const [first] = await converse(port, 'EHLO too.early.test\r\n', 1);
      assert.match(first ?? '', /^421 .*You talk too soon/);
    });
  });

  it('refuses a negative or fractional delay', () => {
    assert.throws(() => new PromptGreetingSMTPServer({ earlyTalkerDelay: -1 }), RangeError);
    assert.throws(() => new PromptGreetingSMTPServer({ earlyTalkerDelay: 1.5 }), RangeError);
  });
});
