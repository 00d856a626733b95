/**
 * Sesv2Outbound against SES v2 on a private moto_server: the raw message SES accepted (read back
 * from moto's /moto-api/data.json) is the message we sent, byte for byte; refusals map to
 * SendError with the right `permanent` flag (the forwarder retries only transient failures).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { Sesv2Outbound } from '../../functions/adapters/aws/sesv2-outbound.ts';
import { SendError } from '../../functions/core/errors.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { type Moto, motoAvailable, startMoto } from '../helpers/moto.ts';

const available = motoAvailable();

describe('Sesv2Outbound on moto (SESv2 SendEmail, Raw content)', { skip: !available }, () => {
  let moto: Moto;
  let ses: SESv2Client;
  let outbound: Sesv2Outbound;

  before(async () => {
    moto = await startMoto();
    ses = new SESv2Client(moto.clientConfig);
    // SES (and moto) send only from verified identities.
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'relay.example.test' }));
    outbound = new Sesv2Outbound({ client: ses });
  });

  after(async () => {
    ses?.destroy();
    await moto?.stop();
  });

  it('sends the raw message unchanged to the envelope recipients', async () => {
    // A real fixture: folded headers, a group in Cc, CRLF line ends. (moto stores mail as UTF-8
    // text, so this check uses a UTF-8 message; the SDK itself base64-encodes any bytes.)
    const raw = readFileSync(join(PROJECT_ROOT, 'test/fixtures/plain-crlf.eml'));
    const { messageId } = await outbound.send({
      from: 'forwarder@relay.example.test',
      to: ['boss.private@gmail.test'],
      raw,
      idempotencyKey: 'ses-id-1:boss.private@gmail.test',
    });
    assert.ok(messageId.length > 0);
    const sent = (await moto.sentRawMessages()).find((m) => m.id === messageId);
    assert.ok(sent, 'moto recorded the message under the returned id');
    assert.ok(Buffer.from(sent.raw_data, 'utf8').equals(raw), 'the bytes SES got are the bytes we sent');
    assert.equal(sent.source, 'forwarder@relay.example.test');
    // moto appends the header recipients to the envelope list; ours comes first.
    assert.equal(sent.destinations[0], 'boss.private@gmail.test');
  });

  it('keeps 8-bit UTF-8 and bare-LF messages byte-exact', async () => {
    for (const name of ['utf8-8bit.eml', 'bare-lf.eml']) {
      const raw = readFileSync(join(PROJECT_ROOT, 'test/fixtures', name));
      const { messageId } = await outbound.send({
        from: 'forwarder@relay.example.test',
        to: ['someone@gmail.test'],
        raw,
        idempotencyKey: `k:${name}`,
      });
      const sent = (await moto.sentRawMessages()).find((m) => m.id === messageId);
      assert.ok(sent !== undefined && Buffer.from(sent.raw_data, 'utf8').equals(raw), name);
    }
  });

  it('an unverified sender is a permanent SendError (SES MessageRejected); no recipients is refused before SES', async () => {
    const raw = Buffer.from('From: x@unverified.test\r\nSubject: no\r\n\r\nbody\r\n');
    await assert.rejects(
      outbound.send({ from: 'x@unverified.test', to: ['a@gmail.test'], raw, idempotencyKey: 'k2' }),
      (err: unknown) => err instanceof SendError && err.permanent && /MessageRejected/.test(err.message),
    );
    await assert.rejects(
      outbound.send({ from: 'forwarder@relay.example.test', to: [], raw, idempotencyKey: 'k3' }),
      (err: unknown) => err instanceof SendError && err.permanent,
    );
  });

  it('a transport failure is a transient SendError (the sender retries)', async () => {
    const dead = new SESv2Client({ ...moto.clientConfig, endpoint: 'http://127.0.0.1:9', maxAttempts: 1 });
    try {
      await assert.rejects(
        new Sesv2Outbound({ client: dead }).send({
          from: 'forwarder@relay.example.test',
          to: ['a@gmail.test'],
          raw: Buffer.from('Subject: x\r\n\r\ny\r\n'),
          idempotencyKey: 'k4',
        }),
        (err: unknown) => err instanceof SendError && !err.permanent,
      );
    } finally {
      dead.destroy();
    }
  });
});
