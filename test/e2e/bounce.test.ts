/**
 * Bounces (docs/adr/0016-bounces.md): mail that SES accepted and the router then refuses goes back
 * to an authenticated sender once, as a delivery status notification made by SES `SendBounce`.
 *
 * moto has no SendBounce, so SES is a loopback HTTP server speaking SES's query protocol
 * (test/helpers/fake-ses.ts): the real SDK client signs and sends the request, the server records
 * its parameters and answers as SES does (a MessageId, or an ErrorResponse). What SES makes of the request is SES's; what we assert
 * is what we ask of it, and what the router does with each answer. The router runs over the local
 * adapters (its code is the same in both modes; the send record that keeps a bounce to once is a
 * port method both index adapters pass the contract for).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { SESClient } from '@aws-sdk/client-ses';
import { enhancedStatus, SesBouncer } from '../../functions/adapters/aws/ses-bouncer.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { SendError } from '../../functions/core/errors.ts';
import { mailboxKeys } from '../../functions/core/keys.ts';
import { buildNotification } from '../../functions/core/notification.ts';
import type { Verdicts } from '../../functions/core/routing.ts';
import { bounceClientConfig, createSesBouncer } from '../../functions/handlers/ses-bouncer.ts';
import { createLocalRuntime, type LocalRuntime } from '../../functions/local/runtime.ts';
import { countBounces } from '../../functions/pipeline/bounce.ts';
import { processNotification, type RouteResult } from '../../functions/pipeline/router.ts';
import type { MailboxIndex } from '../../functions/ports/mailbox-index.ts';
import { FakeSesEndpoint } from '../helpers/fake-ses.ts';

const CONFIG: RawConfig = {
  domains: ['example.test'],
  mailboxes: ['alice@example.test'],
  routes: [
    { match: 'old@example.test', action: 'reject', code: 551, message: '5.1.6 User has moved; try alice@' },
    { match: 'busy@example.test', action: 'reject', code: 450, message: '4.2.1 Try again later' },
    { match: 'nobody@example.test', action: 'reject', code: 550, message: 'Go away' },
    // An alias with a delivered member and a refused one, and one with refused members only.
    { match: 'team@example.test', action: 'deliver', to: ['alice@example.test', 'old@example.test'] },
    { match: 'ghosts@example.test', action: 'deliver', to: ['old@example.test', 'nobody@example.test'] },
  ],
};
const PASS: Verdicts = { spam: 'PASS', virus: 'PASS', spf: 'PASS', dkim: 'PASS', dmarc: 'PASS' };
const RAW = Buffer.from(
  'From: Sender <sender@remote.test>\r\nTo: typo@example.test\r\nSubject: hello\r\nMessage-ID: <b1@remote.test>\r\n\r\nHi.\r\n',
);

/** A bounce as the router asks for one, for the adapter alone. */
const BOUNCE_REQUEST = {
  sesMessageId: 'x',
  from: 'mailer-daemon@example.test',
  recipients: [{ address: 'typo@example.test', code: 550, message: '5.1.1 no such user' }],
  explanation: 'x',
};

describe('bounces of mail refused after acceptance (SES SendBounce over the query protocol)', () => {
  const ses = new FakeSesEndpoint();
  let dir: string;
  let runtime: LocalRuntime;
  let client: SESClient;
  let seq = 0;
  /** Client options for the fake SES endpoint. */
  const fakeSes = () => ({
    endpoint: ses.url,
    region: 'eu-west-1',
    credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' },
  });

  before(async () => {
    await ses.start();
    client = new SESClient({ ...fakeSes(), maxAttempts: 1 });
  });
  after(async () => {
    await ses.stop();
  });
  beforeEach(async () => {
    if (runtime) await runtime.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = mkdtempSync(join(tmpdir(), 'mr-bounce-'));
    runtime = createLocalRuntime({ config: parseConfig(CONFIG), dataDir: dir, durability: 'sync' });
    ses.requests.length = 0;
    ses.authorizations.length = 0;
    ses.replies.length = 0;
  });
  after(async () => {
    await runtime?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function receive(
    recipients: string[],
    opts: {
      verdicts?: Verdicts;
      mailFrom?: string;
      receivedAt?: Date;
      sesMessageId?: string;
      config?: RawConfig;
      index?: MailboxIndex;
    } = {},
  ): Promise<RouteResult> {
    seq += 1;
    const notification = buildNotification({
      sesMessageId: opts.sesMessageId ?? `ses-bounce-${seq}`,
      receivedAt: opts.receivedAt ?? new Date(),
      mailFrom: opts.mailFrom ?? 'sender@remote.test',
      recipients,
      verdicts: opts.verdicts ?? PASS,
      bucketName: 'local',
    });
    const deps = {
      ...runtime,
      ...(opts.config ? { config: parseConfig(opts.config) } : {}),
      ...(opts.index ? { index: opts.index } : {}),
      bouncer: new SesBouncer(client),
    };
    return processNotification(deps, notification, { raw: RAW, storeRaw: true });
  }

  const detailsOf = (r: RouteResult) =>
    r.outcomes.map((o) => `${o.decision.recipient} ${o.status}${o.detail ? ` (${o.detail})` : ''}`);

  it('bounces an unknown recipient to an authenticated sender once, and still delivers to the others', async () => {
    const receivedAt = new Date();
    const result = await receive(['alice@example.test', 'typo@example.test'], { receivedAt });
    assert.deepEqual(detailsOf(result), [
      'alice@example.test delivered',
      'typo@example.test rejected (bounced as bounce-1)',
    ]);
    assert.equal(ses.requests.length, 1);
    const [req] = ses.requests;
    assert.ok(req);
    assert.equal(req.get('Action'), 'SendBounce');
    assert.match(
      ses.authorizations[0] ?? '',
      /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/eu-west-1\/ses\/aws4_request/,
    );
    assert.equal(req.get('OriginalMessageId'), result.sesMessageId);
    assert.equal(req.get('BounceSender'), 'mailer-daemon@example.test');
    assert.equal(req.get('BouncedRecipientInfoList.member.1.Recipient'), 'typo@example.test');
    assert.equal(req.get('BouncedRecipientInfoList.member.1.RecipientDsnFields.Action'), 'failed');
    assert.equal(req.get('BouncedRecipientInfoList.member.1.RecipientDsnFields.Status'), '5.1.1');
    assert.equal(
      req.get('BouncedRecipientInfoList.member.1.RecipientDsnFields.DiagnosticCode'),
      'smtp; 550 5.1.1 Recipient address rejected: no such user',
    );
    assert.equal(req.get('BouncedRecipientInfoList.member.2.Recipient'), null, 'alice is not bounced');
    assert.match(req.get('Explanation') ?? '', /<typo@example\.test>: 550 5\.1\.1/);
    assert.deepEqual(countBounces([result]), { bounced: 1, failed: 0 });
    // alice got it.
    assert.ok(await runtime.blobs.get(mailboxKeys.raw('alice@example.test', result.id)));

    // The notification processed again (an SQS redelivery, a replay): no second bounce.
    const again = await receive(['alice@example.test', 'typo@example.test'], {
      sesMessageId: result.sesMessageId,
      receivedAt,
    });
    assert.equal(ses.requests.length, 1, 'bounced once');
    assert.deepEqual(detailsOf(again), [
      'alice@example.test duplicate',
      'typo@example.test rejected (bounced before as bounce-1)',
    ]);
    assert.deepEqual(countBounces([again]), { bounced: 0, failed: 0 });
  });

  it("puts every permanent refusal of a message in one notification, with each route's code and text", async () => {
    const result = await receive(['old@example.test', 'nobody@example.test', 'busy@example.test']);
    assert.equal(ses.requests.length, 1);
    const [req] = ses.requests;
    assert.ok(req);
    const member = (n: number, field: string) => req.get(`BouncedRecipientInfoList.member.${n}.${field}`);
    assert.equal(member(1, 'Recipient'), 'old@example.test');
    assert.equal(member(1, 'RecipientDsnFields.Status'), '5.1.6');
    assert.equal(
      member(1, 'RecipientDsnFields.DiagnosticCode'),
      'smtp; 551 5.1.6 User has moved; try alice@',
    );
    assert.equal(member(2, 'Recipient'), 'nobody@example.test');
    assert.equal(
      member(2, 'RecipientDsnFields.Status'),
      '5.0.0',
      "no enhanced code in the text: the class's",
    );
    assert.equal(member(3, 'Recipient'), null, 'a 4xx refusal is not bounced');
    assert.deepEqual(detailsOf(result), [
      'old@example.test rejected (bounced as bounce-1)',
      'nobody@example.test rejected (bounced as bounce-1)',
      'busy@example.test rejected (not bounced: a temporary (4xx) refusal)',
    ]);
  });

  it('never bounces where it could be backscatter: unauthenticated, spam, virus, a bounce, too old, or turned off', async () => {
    const cases: [string, Parameters<typeof receive>[1], RegExp][] = [
      ['SPF FAIL', { verdicts: { ...PASS, spf: 'FAIL' } }, /return path is not authenticated \(SPF FAIL\)/],
      ['SPF GRAY', { verdicts: { ...PASS, spf: 'GRAY' } }, /SPF GRAY/],
      ['spam', { verdicts: { ...PASS, spam: 'FAIL' } }, /spam verdict is FAIL/],
      ['virus', { verdicts: { ...PASS, virus: 'FAIL' } }, /virus verdict is FAIL/],
      ['null sender', { mailFrom: '' }, /null reverse-path/],
      ['mailer-daemon', { mailFrom: 'MAILER-DAEMON@remote.test' }, /null reverse-path/],
      ['a day old', { receivedAt: new Date(Date.now() - 24 * 3600_000) }, /more than 23 hours ago/],
    ];
    for (const [why, opts, detail] of cases) {
      const result = await receive(['typo@example.test'], opts);
      const [outcome] = result.outcomes;
      assert.equal(outcome?.status, 'rejected', why);
      assert.match(outcome?.detail ?? '', detail, why);
      assert.match(outcome?.detail ?? '', /^not bounced: /, why);
    }
    const off = await receive(['typo@example.test'], { config: { ...CONFIG, bounces: 'off' } });
    assert.equal(off.outcomes[0]?.detail, undefined, 'bounces off: nothing said, nothing sent');
    assert.equal(ses.requests.length, 0, 'SES was never asked');
  });

  it('an alias is bounced only when none of its destinations took the mail', async () => {
    const result = await receive(['team@example.test', 'ghosts@example.test']);
    assert.equal(ses.requests.length, 1);
    const [req] = ses.requests;
    assert.equal(req?.get('BouncedRecipientInfoList.member.1.Recipient'), 'ghosts@example.test');
    assert.equal(
      req?.get('BouncedRecipientInfoList.member.1.RecipientDsnFields.Status'),
      '5.1.6',
      'its first refusal',
    );
    assert.equal(
      req?.get('BouncedRecipientInfoList.member.2.Recipient'),
      null,
      'team@ reached alice: not bounced',
    );
    assert.deepEqual(detailsOf(result), [
      'team@example.test delivered',
      "team@example.test rejected (not bounced: the recipient's mail was delivered to another of its destinations)",
      'ghosts@example.test rejected (bounced as bounce-1)',
      'ghosts@example.test rejected (bounced as bounce-1)',
    ]);
  });

  it('a second notification of the same message (another receipt rule) bounces what it refuses, once', async () => {
    const receivedAt = new Date();
    const sesMessageId = 'ses-two-rules';
    await receive(['typo@example.test'], { sesMessageId, receivedAt });
    const second = await receive(['nobody@example.test'], { sesMessageId, receivedAt });
    assert.equal(second.outcomes[0]?.detail, 'bounced as bounce-2');
    assert.equal(ses.requests[1]?.get('BouncedRecipientInfoList.member.1.Recipient'), 'nobody@example.test');
    const again = await receive(['nobody@example.test'], { sesMessageId, receivedAt });
    assert.equal(again.outcomes[0]?.detail, 'bounced before as bounce-2');
    assert.equal(ses.requests.length, 2);
  });

  it('a bounce sent whose send record then fails to update still counts as sent', async () => {
    let failures = 1;
    const index = new Proxy(runtime.index, {
      get(target, prop, receiver) {
        if (prop === 'finishSend') {
          return (...args: Parameters<MailboxIndex['finishSend']>) => {
            if (failures-- > 0) return Promise.reject(new Error('ProvisionedThroughputExceededException'));
            return target.finishSend(...args);
          };
        }
        const value: unknown = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const result = await receive(['typo@example.test'], { index });
    assert.equal(
      result.outcomes[0]?.detail,
      'bounced as bounce-1 (its send record was not updated: ProvisionedThroughputExceededException)',
    );
    assert.deepEqual(countBounces([result]), { bounced: 1, failed: 0 });
    assert.equal(ses.requests.length, 1);
  });

  it('a refused bounce is recorded and does not fail the message; a later retry of it is sent', async () => {
    ses.replies.push({ status: 400, code: 'MessageRejected', message: 'Email address is not verified.' });
    const receivedAt = new Date();
    const first = await receive(['alice@example.test', 'typo@example.test'], { receivedAt });
    assert.match(
      first.outcomes[1]?.detail ?? '',
      /^bounce failed: SES SendBounce failed: MessageRejected: Email address is not verified\./,
    );
    assert.equal(first.outcomes[0]?.status, 'delivered', 'the delivery stands');
    assert.deepEqual(countBounces([first]), { bounced: 0, failed: 1 });
    const retry = await receive(['alice@example.test', 'typo@example.test'], {
      sesMessageId: first.sesMessageId,
      receivedAt,
    });
    assert.equal(retry.outcomes[0]?.status, 'duplicate');
    assert.equal(retry.outcomes[1]?.detail, 'bounced as bounce-2');
    assert.equal(ses.requests.length, 2);
  });

  it("the router's bounce client: SendBounce's rate is retried (adaptive), SES's daily quota is not", async () => {
    const bouncer = createSesBouncer(new SESClient({ ...fakeSes(), ...bounceClientConfig() }));
    ses.replies.push({ status: 400, code: 'Throttling', message: 'Maximum sending rate exceeded.' });
    await bouncer.bounce(BOUNCE_REQUEST);
    assert.equal(ses.requests.length, 2, 'the rate: asked again, and sent');
    // SES v1 names both limits `Throttling`; the message says which.
    ses.replies.push({ status: 400, code: 'Throttling', message: 'Daily message quota exceeded.' });
    await assert.rejects(
      bouncer.bounce(BOUNCE_REQUEST),
      (e: unknown) => e instanceof SendError && !e.permanent && e.limit === 'daily_quota',
    );
    assert.equal(ses.requests.length, 3, 'the daily quota: asked once (the SDK alone asks six times)');
  });

  it('the adapter: throttling is transient, a refusal permanent; enhanced status codes from reply texts', async () => {
    const bouncer = new SesBouncer(client);
    ses.replies.push({ status: 400, code: 'Throttling', message: 'Maximum sending rate exceeded.' });
    await assert.rejects(
      bouncer.bounce(BOUNCE_REQUEST),
      (e: unknown) => e instanceof SendError && !e.permanent,
    );
    ses.replies.push({ status: 400, code: 'MessageRejected', message: 'no' });
    await assert.rejects(
      bouncer.bounce(BOUNCE_REQUEST),
      (e: unknown) => e instanceof SendError && e.permanent,
    );
    await assert.rejects(bouncer.bounce({ ...BOUNCE_REQUEST, recipients: [] }), /no recipients/);
    assert.equal(
      enhancedStatus({ code: 550, message: '5.7.1 Message rejected by policy (dkim failed)' }),
      '5.7.1',
    );
    assert.equal(enhancedStatus({ code: 553, message: '5.1.10 bad' }), '5.1.10');
    assert.equal(enhancedStatus({ code: 554, message: 'Rejected' }), '5.0.0');
    assert.equal(enhancedStatus({ code: 550, message: '5.1.1x not a code' }), '5.0.0');
    assert.equal(
      enhancedStatus({ code: 550, message: '4.2.2 mailbox full' }),
      '5.0.0',
      'the reply class decides',
    );
  });
});
