/**
 * The rule set activation custom resource: activates ours, refuses to silently replace another
 * active rule set, deactivates on delete only while ours is still the active one, and always
 * answers CloudFormation (a real HTTP PUT to a local server standing in for the pre-signed URL).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import {
  type ActiveRuleSetApi,
  createHandler,
  onEvent,
} from '../../lib/custom-resources/active-receipt-rule-set.ts';

/** SES's one-active-rule-set state, and the calls made to it. */
class FakeSes implements ActiveRuleSetApi {
  readonly calls: string[] = [];
  constructor(public active: string | null) {}
  async activeRuleSetName() {
    this.calls.push('describe');
    return this.active;
  }
  async setActive(name: string | null) {
    this.calls.push(`set:${name}`);
    this.active = name;
  }
}

const base = {
  ServiceToken: 'arn:aws:lambda:us-east-1:123456789012:function:activator',
  ResponseURL: 'http://127.0.0.1:1/unused',
  StackId: 'arn:aws:cloudformation:us-east-1:123456789012:stack/MailRelay/1',
  RequestId: 'req-1',
  LogicalResourceId: 'ActiveRuleSet',
  ResourceType: 'Custom::SesActiveReceiptRuleSet',
};

function create(name: string, replaceActive = false): CloudFormationCustomResourceEvent {
  return {
    ...base,
    RequestType: 'Create',
    ResourceProperties: {
      ServiceToken: base.ServiceToken,
      RuleSetName: name,
      ReplaceActive: String(replaceActive),
    },
  };
}

function update(name: string, old: string): CloudFormationCustomResourceEvent {
  return {
    ...base,
    RequestType: 'Update',
    PhysicalResourceId: `active-receipt-rule-set:${old}`,
    ResourceProperties: { ServiceToken: base.ServiceToken, RuleSetName: name, ReplaceActive: 'false' },
    OldResourceProperties: { ServiceToken: base.ServiceToken, RuleSetName: old, ReplaceActive: 'false' },
  };
}

function del(
  name: string,
  physicalId = `active-receipt-rule-set:${name}`,
): CloudFormationCustomResourceEvent {
  return {
    ...base,
    RequestType: 'Delete',
    PhysicalResourceId: physicalId,
    ResourceProperties: { ServiceToken: base.ServiceToken, RuleSetName: name, ReplaceActive: 'false' },
  };
}

describe('activating the receipt rule set', () => {
  it('activates ours when none is active', async () => {
    const ses = new FakeSes(null);
    const out = await onEvent(create('ours'), ses);
    assert.equal(ses.active, 'ours');
    assert.equal(out.physicalResourceId, 'active-receipt-rule-set:ours');
    assert.deepEqual(out.data, { PreviouslyActive: '' });
  });

  it('refuses to replace another active rule set, with what to do about it', async () => {
    const ses = new FakeSes('theirs');
    await assert.rejects(onEvent(create('ours'), ses), /"theirs" is active .*replaceActiveRuleSet/);
    assert.equal(ses.active, 'theirs');
    assert.deepEqual(ses.calls, ['describe']);
  });

  it('replaces it when told to, and says which one it replaced', async () => {
    const ses = new FakeSes('theirs');
    const out = await onEvent(create('ours', true), ses);
    assert.equal(ses.active, 'ours');
    assert.deepEqual(out.data, { PreviouslyActive: 'theirs' });
  });

  it('an update that renames our rule set switches to the new one', async () => {
    const ses = new FakeSes('ours-v1');
    const out = await onEvent(update('ours-v2', 'ours-v1'), ses);
    assert.equal(ses.active, 'ours-v2');
    assert.equal(out.physicalResourceId, 'active-receipt-rule-set:ours-v2');
  });

  it('delete deactivates only while ours is the active one', async () => {
    const ours = new FakeSes('ours');
    await onEvent(del('ours'), ours);
    assert.equal(ours.active, null);

    const theirs = new FakeSes('theirs');
    const out = await onEvent(del('ours'), theirs);
    assert.equal(theirs.active, 'theirs', 'someone else’s rule set was switched off');
    assert.deepEqual(theirs.calls, ['describe']);
    assert.deepEqual(out.data, { Deactivated: 'false' });
  });

  it('delete after a failed create touches nothing', async () => {
    const ses = new FakeSes('ours');
    await onEvent(del('ours', 'failed:req-0'), ses);
    assert.deepEqual(ses.calls, []);
    assert.equal(ses.active, 'ours');
  });
});

describe('answering CloudFormation', () => {
  let server: Server;
  let url = '';
  const received: { method: string; contentType: string | undefined; body: Record<string, unknown> }[] = [];

  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({
          method: req.method ?? '',
          contentType: req.headers['content-type'],
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
        });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/presigned?X-Amz-Signature=x`;
  });
  after(() => server.close());

  it('PUTs SUCCESS with the physical id, with the empty content type the URL was signed with', async () => {
    received.length = 0;
    await createHandler(async () => new FakeSes(null))({ ...create('ours'), ResponseURL: url });
    assert.equal(received.length, 1);
    const [r] = received;
    assert.equal(r?.method, 'PUT');
    assert.equal(r?.contentType, '');
    assert.deepEqual(r?.body, {
      StackId: base.StackId,
      RequestId: base.RequestId,
      LogicalResourceId: base.LogicalResourceId,
      Status: 'SUCCESS',
      PhysicalResourceId: 'active-receipt-rule-set:ours',
      Data: { PreviouslyActive: '' },
    });
  });

  it('PUTs FAILED with the reason (and an id a later Delete ignores) instead of leaving the stack hanging', async () => {
    received.length = 0;
    await createHandler(async () => new FakeSes('theirs'))({ ...create('ours'), ResponseURL: url });
    const body = received[0]?.body;
    assert.equal(body?.Status, 'FAILED');
    assert.match(String(body?.Reason), /"theirs" is active/);
    assert.equal(body?.PhysicalResourceId, 'failed:req-1');

    received.length = 0;
    await createHandler(async () => {
      throw new Error('SES unreachable');
    })({ ...update('ours', 'ours'), ResponseURL: url });
    assert.equal(received[0]?.body.Status, 'FAILED');
    assert.equal(received[0]?.body.PhysicalResourceId, 'active-receipt-rule-set:ours');
  });
});
