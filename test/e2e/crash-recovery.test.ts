/**
 * `mail-relay dev` killed (SIGKILL) at moments that leave work half done, then started again on the
 * same data dir, as a user's crashed relay would be: what the next start must still do.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { startDev } from '../helpers/dev.ts';
import { python } from '../helpers/process.ts';

const work = mkdtempSync(join(tmpdir(), 'mr-crash-'));
after(() => rmSync(work, { recursive: true, force: true }));

describe('dev killed while it forwards a message', () => {
  it('starts again and sends the forward the killed run had claimed but not finished', async () => {
    // The smarthost takes the first message and never answers its DATA: the relay is killed while it
    // waits, with the forward claimed in the index and not recorded as sent.
    const received: string[] = [];
    let held: () => void = () => undefined;
    const heldFirst = new Promise<void>((resolve) => {
      held = resolve;
    });
    const smarthost = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
      logger: false,
      onData(stream, _session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.once('end', () => {
          received.push(Buffer.concat(chunks).toString('latin1'));
          if (received.length === 1) held();
          else callback(null, 'queued');
        });
      },
    });
    await new Promise<void>((resolve) => smarthost.listen(0, '127.0.0.1', resolve));
    const smarthostPort = (smarthost.server.address() as AddressInfo).port;
    const dataDir = join(work, 'forward');
    const configPath = join(work, 'forward.config.json');
    writeFileSync(
      configPath,
      JSON.stringify({
        domains: ['example.test'],
        mailboxes: ['*@example.test'],
        routes: [{ match: 'boss@example.test', action: 'forward', to: ['boss@remote.test'] }],
        relay: { smtp: `smtp://127.0.0.1:${smarthostPort}` },
      }),
    );
    const first = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath } });
    // The client gets no reply (the relay dies first); its message is in the journal all the same.
    const client = python(
      'import smtplib,sys\nwith smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s: ' +
        's.sendmail("a@remote.test", ["boss@example.test"], b"Subject: for the boss\\r\\n\\r\\nhello\\r\\n")',
      [String(first.port)],
    );
    await heldFirst;
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    await client;

    let second: Awaited<ReturnType<typeof startDev>> | undefined;
    try {
      second = await startDev(dataDir, { env: { MAIL_RELAY_CONFIG: configPath } });
      // Recovery runs before the relay listens: the forward has been sent again by now.
      assert.equal(received.length, 2, 'the forward reached the smarthost after the restart');
      assert.match(received[1] ?? '', /Subject: for the boss\r\n/);
      assert.match(second.output(), /recovered 1 journaled messages/);
    } finally {
      second?.child.kill('SIGTERM');
      if (second) await once(second.child, 'exit');
      await new Promise<void>((resolve) => smarthost.close(() => resolve()));
    }
  });
});
