/**
 * The AWS path of a forward against the local one: the same notification routed once with the
 * outbox (the local Outbound, which keeps the exact bytes) and once with the SESv2 adapter on a
 * private moto_server. What SES was asked to send must be what the local path produced.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateEmailIdentityCommand, SESv2Client } from '@aws-sdk/client-sesv2';
import { Sesv2Outbound } from '../../functions/adapters/aws/sesv2-outbound.ts';
import { listOutbox } from '../../functions/adapters/local/outbox-outbound.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { buildNotification } from '../../functions/core/notification.ts';
import { LOCAL_BUCKET, traceHeaders } from '../../functions/local/ingest.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { processNotification } from '../../functions/pipeline/router.ts';
import { type Moto, motoAvailable, startMoto } from '../helpers/moto.ts';

const FIXTURES = new URL('../fixtures/', import.meta.url);
const CONFIG = parseConfig({
  domains: ['example.test'],
  mailboxes: ['alice@example.test'],
  routes: [{ match: 'boss@example.test', action: 'forward', to: ['boss@remote.test'] }],
});
const PASS = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** moto hands back what it was sent as a UTF-8 string, so only messages that are valid UTF-8 compare byte for byte. */
function isUtf8(b: Buffer): boolean {
  try {
    utf8.decode(b);
    return true;
  } catch {
    return false;
  }
}

const available = motoAvailable();

describe('forwarding through SESv2 (moto) sends what the local path sends', { skip: !available }, () => {
  let moto: Moto;
  let ses: SESv2Client;
  let dir: string;
  let local: LocalRuntime;
  let aws: LocalRuntime;

  before(async () => {
    moto = await startMoto();
    ses = new SESv2Client(moto.clientConfig);
    // SES sends only from verified identities; moto checks that too.
    await ses.send(new CreateEmailIdentityCommand({ EmailIdentity: 'example.test' }));
    dir = mkdtempSync(join(tmpdir(), 'mr-fwd-ses-'));
    local = createLocalRuntime({ config: CONFIG, dataDir: join(dir, 'local') });
    aws = createLocalRuntime({ config: CONFIG, dataDir: join(dir, 'aws') });
  });
  after(async () => {
    await local?.close();
    await aws?.close();
    ses?.destroy();
    await moto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the same notification: SES gets the outbox bytes, from the verified identity, to the destination', async () => {
    // moto decodes what it is sent as UTF-8 and answers 500 otherwise (real SES takes any bytes).
    const files = readdirSync(FIXTURES)
      .filter((f) => f.endsWith('.eml') && isUtf8(readFileSync(new URL(f, FIXTURES))))
      .sort();
    const sesDeps = { ...aws, outbound: new Sesv2Outbound({ client: ses }) };
    let compared = 0;
    for (const [i, file] of files.entries()) {
      const body = readFileSync(new URL(file, FIXTURES));
      const sesMessageId = `fwdses${String(i).padStart(34, '0')}`;
      const receivedAt = new Date(Date.UTC(2025, 2, 4, 10, 0, i));
      const input = {
        body,
        mailFrom: 'sender@origin.test',
        recipients: ['boss@example.test'],
        via: { protocol: 'ESMTP' as const, helo: 'mx.origin.test', remoteAddress: '192.0.2.7' },
      };
      const raw = Buffer.concat([traceHeaders(input, sesMessageId, receivedAt), body]);
      const notification = buildNotification({
        sesMessageId,
        receivedAt,
        mailFrom: input.mailFrom,
        recipients: input.recipients,
        verdicts: PASS,
        bucketName: LOCAL_BUCKET,
      });
      for (const deps of [local, sesDeps]) {
        await deps.blobs.put(notification.receipt.action.objectKey, raw);
        const r = await processNotification(deps, notification, { raw });
        assert.deepEqual(
          r.outcomes.map((o) => o.status),
          ['forwarded'],
          `${file}: ${r.outcomes.map((o) => o.detail).join()}`,
        );
      }
      const [outboxItem] = (await listOutbox(local.blobs)).filter((x) =>
        x.idempotencyKey.startsWith(sesMessageId),
      );
      assert.ok(outboxItem, file);
      const localBytes = await local.blobs.get(outboxItem.key);
      assert.ok(localBytes);
      const sent = (await moto.sentRawMessages()).at(-1);
      assert.ok(sent, `${file}: SES accepted a message`);
      assert.equal(sent.source, 'forwarder@example.test', file);
      assert.ok(sent.destinations.includes('boss@remote.test'), file);
      assert.deepEqual(Buffer.from(sent.raw_data, 'utf8'), localBytes, `${file}: SES sent the local bytes`);
      compared++;
    }
    assert.ok(compared >= 10, `compared ${compared} messages byte for byte`);
  });
});
