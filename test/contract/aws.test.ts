/**
 * The shared port contracts against the AWS adapters (S3BlobStore, DynamoDbMailboxIndex), on a
 * private moto_server. Every test gets a fresh bucket or table.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { CreateTableCommand, DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, DeleteBucketCommand, S3Client } from '@aws-sdk/client-s3';
import {
  DynamoDBDocumentClient,
  PutCommand,
  ScanCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import {
  DynamoDbMailboxIndex,
  mailboxTableDefinition,
  TABLE_KEYS,
  UNSEEN_INDEX,
} from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { LazyBlobStore } from '../../functions/adapters/lazy-blob-store.ts';
import { sentMailboxKey } from '../../functions/core/keys.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import type { MessageEntry } from '../../functions/ports/mailbox-index.ts';
import {
  API_TABLE_ACTIONS,
  API_UNSEEN_INDEX_ACTIONS,
  ROUTER_TABLE_ACTIONS,
  SEND_TABLE_ACTIONS,
} from '../../lib/mail-relay.ts';
import { RETENTION_TABLE_ACTIONS } from '../../lib/retention.ts';
import { type Moto, motoAvailable, serializeRequests, startMoto } from '../helpers/moto.ts';
import { runBlobStoreContract } from './blob-store.contract.ts';
import { makeEntry, runMailboxIndexContract } from './mailbox-index.contract.ts';

const available = motoAvailable();

describe('AWS adapters on moto_server', { skip: !available }, () => {
  let moto: Moto;
  let s3: S3Client;
  let dynamo: DynamoDBClient;
  let documents: DynamoDBDocumentClient;

  before(async () => {
    moto = await startMoto();
    s3 = new S3Client({ ...moto.clientConfig, forcePathStyle: true });
    dynamo = serializeRequests(new DynamoDBClient(moto.clientConfig));
    documents = DynamoDBDocumentClient.from(dynamo);
  });
  after(async () => {
    s3?.destroy();
    dynamo?.destroy();
    await moto?.stop();
  });

  /** A fresh bucket and the store `make` builds over it, as the blob-store contract wants them. */
  const s3Subject = async (prefix: string, make: (bucket: string) => BlobStore) => {
    const bucket = `${prefix}-${randomUUID()}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const store = make(bucket);
    return {
      store,
      fetchPresigned: async (url: string) => {
        const r = await fetch(url);
        return { status: r.status, body: Buffer.from(await r.arrayBuffer()), headers: r.headers };
      },
      // moto serves presigned URLs without checking signature or expiry; real S3 does both.
      presignEnforced: false,
      cleanup: async () => {
        await store.deletePrefix('');
        await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
      },
    };
  };

  runBlobStoreContract('S3BlobStore', () =>
    s3Subject('contract', (bucket) => new S3BlobStore({ client: s3, bucket })),
  );

  // The API function's blob store: S3, built on first use (functions/handlers/api.ts).
  runBlobStoreContract('LazyBlobStore over S3BlobStore', () =>
    s3Subject(
      'contract-lazy',
      (bucket) => new LazyBlobStore(async () => new S3BlobStore({ client: s3, bucket })),
    ),
  );

  it('S3BlobStore signs the response Content-Type and Content-Disposition into presigned URLs', async () => {
    // moto serves presigned URLs but ignores response-* overrides, so the contract cannot see them
    // applied there; S3 applies them, and only when they are part of the signed query.
    const bucket = `presign-${randomUUID()}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const store = new S3BlobStore({ client: s3, bucket });
    const url = new URL(
      await store.presign('mailboxes/a@example.com/01.eml', {
        expiresIn: 300,
        contentType: 'message/rfc822',
        contentDisposition: 'attachment; filename="01.eml"',
      }),
    );
    assert.equal(url.searchParams.get('response-content-type'), 'message/rfc822');
    assert.equal(url.searchParams.get('response-content-disposition'), 'attachment; filename="01.eml"');
    assert.equal(
      url.searchParams.get('response-cache-control'),
      'private, no-store',
      'kept out of shared caches',
    );
    assert.equal(url.searchParams.get('X-Amz-Expires'), '300');
    assert.match(url.searchParams.get('X-Amz-Signature') ?? '', /^[0-9a-f]{64}$/);
    await assert.rejects(store.presign('k', { expiresIn: 8 * 24 * 3600 }), /expiresIn/);
  });

  it('a cancelled transaction changes nothing, and a Scan reads the table as before (what every retry of a delivery rests on)', async () => {
    // The moto_server of these suites rolls a cancelled transaction back by item (test/helpers/
    // moto-speedups), not by a copy of the whole table: this is DynamoDB's all-or-nothing, kept.
    const tableName = `rollback-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    try {
      const [pk, sk] = [TABLE_KEYS.partitionKey, TABLE_KEYS.sortKey];
      for (const [p, s] of [
        ['MBX#a', 'B'],
        ['MBX#a', 'D'],
        ['MBX#b', 'A'],
        ['MBX#a', 'C'],
      ]) {
        await documents.send(
          new PutCommand({ TableName: tableName, Item: { [pk]: p, [sk]: s, n: 1, tags: ['x'] } }),
        );
      }
      const scan = async () => (await documents.send(new ScanCommand({ TableName: tableName }))).Items;
      const before = await scan();
      assert.equal(before?.length, 4);
      const writes = [
        { Put: { TableName: tableName, Item: { [pk]: 'MBX#a', [sk]: 'A', n: 2 } } },
        { Put: { TableName: tableName, Item: { [pk]: 'MBX#c', [sk]: 'A', n: 2 } } },
        {
          Update: {
            TableName: tableName,
            Key: { [pk]: 'MBX#a', [sk]: 'B' },
            UpdateExpression: 'SET n = :two, tags = list_append(tags, :more) REMOVE gone',
            ExpressionAttributeValues: { ':two': 2, ':more': ['y'] },
          },
        },
        { Delete: { TableName: tableName, Key: { [pk]: 'MBX#a', [sk]: 'C' } } },
      ];
      const failing = {
        ConditionCheck: {
          TableName: tableName,
          Key: { [pk]: 'MBX#b', [sk]: 'A' },
          ConditionExpression: 'n = :nine',
          ExpressionAttributeValues: { ':nine': 9 },
        },
      };
      for (const items of [
        [...writes, failing],
        [failing, ...writes],
      ]) {
        await assert.rejects(
          documents.send(new TransactWriteCommand({ TransactItems: items })),
          (err: Error) => err.name === 'TransactionCanceledException',
        );
        assert.deepEqual(await scan(), before, 'every item as it was, in its place');
      }
      await documents.send(new TransactWriteCommand({ TransactItems: writes }));
      const after = await scan();
      assert.deepEqual(after?.map((i) => `${i[pk]} ${i[sk]} ${i.n} ${(i.tags ?? []).join('')}`).sort(), [
        'MBX#a A 2 ',
        'MBX#a B 2 xy',
        'MBX#a D 1 x',
        'MBX#b A 1 x',
        'MBX#c A 2 ',
      ]);
    } finally {
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  /**
   * An entry as the version before the index of unread mail wrote it: no `unseenPk`, and a STAT item
   * without `unseenIndexed` (this version's delivery writes both; they are taken away again).
   */
  async function deliverAsBefore(
    writer: DynamoDbMailboxIndex,
    tableName: string,
    entry: MessageEntry,
  ): Promise<void> {
    await writer.deliver(entry);
    await documents.send(
      new UpdateCommand({
        TableName: tableName,
        Key: { [TABLE_KEYS.partitionKey]: `MBX#${entry.mailbox}`, [TABLE_KEYS.sortKey]: `MSG#${entry.id}` },
        UpdateExpression: 'REMOVE #u',
        ExpressionAttributeNames: { '#u': UNSEEN_INDEX.partitionKey },
      }),
    );
    await documents.send(
      new UpdateCommand({
        TableName: tableName,
        Key: { [TABLE_KEYS.partitionKey]: `MBX#${entry.mailbox}`, [TABLE_KEYS.sortKey]: 'STAT' },
        UpdateExpression: 'REMOVE unseenIndexed',
      }),
    );
  }

  /** The items of the index of unread mail (a Scan of the index), as `<pk> <sk>`, sorted. */
  async function unseenIndexItems(tableName: string): Promise<string[]> {
    const r = await documents.send(
      new ScanCommand({ TableName: tableName, IndexName: UNSEEN_INDEX.indexName }),
    );
    return (r.Items ?? [])
      .map((i) => `${String(i[TABLE_KEYS.partitionKey])} ${String(i[TABLE_KEYS.sortKey])}`)
      .sort();
  }

  it('the index of unread mail is sparse: it holds exactly the unread entries, through every write of an entry', async () => {
    const tableName = `sparse-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    try {
      const index = new DynamoDbMailboxIndex({ client: documents, tableName });
      const inbox = 'alice@example.test';
      const start = Date.UTC(2025, 0, 1);
      const entries = Array.from({ length: 6 }, (_, i) =>
        makeEntry(inbox, start + i * 1000, `sparse-${i}`, { seen: i === 1 }),
      );
      for (const e of entries) await index.deliver(e);
      const key = (e: MessageEntry) => `MBX#${e.mailbox} MSG#${e.id}`;
      const [e0, e1, e2, e3, e4, e5] = entries;
      assert.ok(e0 && e1 && e2 && e3 && e4 && e5);
      assert.deepEqual(await unseenIndexItems(tableName), [e0, e2, e3, e4, e5].map(key).sort());
      // Nothing but unread message items: no STAT, SEQ#, registry or token item.
      await index.putToken({
        hash: 'f'.repeat(64),
        mailbox: inbox,
        admin: false,
        createdAt: new Date().toISOString(),
      });
      await index.setSeen(inbox, e2.id, true);
      await index.setSeen(inbox, e1.id, false);
      await index.delete(inbox, e3.id);
      await index.deleteMany(inbox, [e4.id]);
      await index.updateParsed(inbox, e5.id, {
        from: 'x',
        to: inbox,
        subject: 'reparsed',
        snippet: '',
        hasAttachments: false,
        parseFailed: false,
      });
      assert.deepEqual(await unseenIndexItems(tableName), [e0, e1, e5].map(key).sort());
      // A retried delivery of a message since read does not put it back.
      await index.setSeen(inbox, e0.id, true);
      assert.deepEqual(await index.deliver(e0), { inserted: false });
      assert.deepEqual(await unseenIndexItems(tableName), [e1, e5].map(key).sort());
    } finally {
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('an unseen page is one Query of the index that reads the unread entries alone; before the upgrade, a read of the mailbox', async () => {
    const tableName = `unseen-cost-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    try {
      const queries: { index: string | undefined; scanned: number; consistent: boolean }[] = [];
      const counting = {
        send: async (command: object) => {
          const r = await documents.send(command as Parameters<DynamoDBDocumentClient['send']>[0]);
          if (command.constructor.name === 'QueryCommand') {
            const input = (command as { input: { IndexName?: string; ConsistentRead?: boolean } }).input;
            queries.push({
              index: input.IndexName,
              scanned: (r as { ScannedCount?: number }).ScannedCount ?? 0,
              consistent: input.ConsistentRead === true,
            });
          }
          return r;
        },
      } as unknown as DynamoDBDocumentClient;
      const index = new DynamoDbMailboxIndex({ client: counting, tableName });
      const start = Date.UTC(2025, 0, 1);
      // 60 messages, 3 unread among them (the web inbox's Unread box that was slow: 100,000 and 3).
      const unreadAt = new Set([7, 30, 55]);
      const entries = Array.from({ length: 60 }, (_, i) =>
        makeEntry('alice@example.test', start + i * 1000, `cost-${i}`, { seen: !unreadAt.has(i) }),
      );
      for (const e of entries) await index.deliver(e);
      queries.length = 0;
      const page = await index.list('alice@example.test', { limit: 50, unseen: true });
      assert.deepEqual(
        page.items.map((i) => i.id),
        [55, 30, 7].map((i) => entries[i]?.id),
      );
      assert.equal(page.nextCursor, null);
      assert.deepEqual(queries, [{ index: UNSEEN_INDEX.indexName, scanned: 3, consistent: false }]);

      // The same mail as the version before the index stored it: read in the mailbox itself, strongly
      // consistent, until the upgrade marks it.
      const old = 'old@example.test';
      const writer = new DynamoDbMailboxIndex({ client: documents, tableName });
      for (const e of entries.slice(0, 20))
        await deliverAsBefore(writer, tableName, { ...e, mailbox: old, recipient: old });
      queries.length = 0;
      const before = await index.list(old, { limit: 50, unseen: true });
      assert.deepEqual(
        before.items.map((i) => i.id),
        [entries[7]?.id],
      );
      assert.ok(queries.every((q) => q.index === undefined && q.consistent));
      assert.equal(
        queries.reduce((n, q) => n + q.scanned, 0),
        20,
      );
      const progress: number[] = [];
      const done = await writer.backfillUnseen({ onProgress: (p) => progress.push(p.mailboxes) });
      assert.deepEqual(done, { mailboxes: 1, of: 1, entries: 1 });
      assert.deepEqual(progress, [0, 1]);
      queries.length = 0;
      assert.deepEqual(
        (await index.list(old, { limit: 50, unseen: true })).items.map((i) => i.id),
        [entries[7]?.id],
      );
      assert.deepEqual(queries, [{ index: UNSEEN_INDEX.indexName, scanned: 1, consistent: false }]);
      // Marked mailboxes are not looked at again.
      assert.deepEqual(await writer.backfillUnseen(), { mailboxes: 0, of: 0, entries: 0 });
    } finally {
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('the upgrade also takes the index attribute from read mail an older version marked read after this one delivered it', async () => {
    const tableName = `upgrade-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    try {
      const index = new DynamoDbMailboxIndex({ client: documents, tableName });
      const inbox = 'alice@example.test';
      const start = Date.UTC(2025, 0, 1);
      const [a, b] = [makeEntry(inbox, start, 'mixed-a'), makeEntry(inbox, start + 1000, 'mixed-b')];
      await deliverAsBefore(index, tableName, a);
      // Delivered by this version while an older API still ran, which then marked it read its way:
      // `seen` set, `unseenPk` left in place.
      await index.deliver(b);
      await documents.send(
        new UpdateCommand({
          TableName: tableName,
          Key: { [TABLE_KEYS.partitionKey]: `MBX#${inbox}`, [TABLE_KEYS.sortKey]: `MSG#${b.id}` },
          UpdateExpression: 'SET seen = :true',
          ExpressionAttributeValues: { ':true': true },
        }),
      );
      assert.deepEqual(await index.backfillUnseen(), { mailboxes: 1, of: 1, entries: 2 });
      assert.deepEqual(await unseenIndexItems(tableName), [`MBX#${inbox} MSG#${a.id}`]);
      assert.deepEqual(
        (await index.list(inbox, { limit: 10, unseen: true })).items.map((i) => i.id),
        [a.id],
      );
    } finally {
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it("each function's index operations need only the DynamoDB actions its role is granted (IAM, which moto does not check)", async () => {
    const tableName = `iam-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    const used = new Set<string>();
    const recording = {
      send: (command: object) => {
        // A Query of the index of unread mail is authorized on the index's ARN, granted apart.
        const onIndex = (command as { input?: { IndexName?: string } }).input?.IndexName !== undefined;
        for (const action of iamActionsOf(command)) used.add(onIndex ? `index:${action}` : action);
        return documents.send(command as Parameters<DynamoDBDocumentClient['send']>[0]);
      },
    } as unknown as DynamoDBDocumentClient;
    const index = new DynamoDbMailboxIndex({ client: recording, tableName });
    const now = new Date();
    const entry = (mailbox: string, n: number): MessageEntry =>
      makeEntry(mailbox, now.getTime() + n, `iam-${n}`);
    const uses = async (role: string, granted: readonly string[], operations: () => Promise<unknown>) => {
      used.clear();
      await operations();
      assert.ok(used.size > 0, role);
      assert.deepEqual(
        [...used].filter((a) => !granted.includes(a)),
        [],
        `${role} sends actions its role does not have`,
      );
    };
    const inbox = 'alice@example.test';
    const [first, second, third] = [entry(inbox, 1), entry(inbox, 2), entry(inbox, 3)];
    const sending = { now, leaseMs: 60_000 };
    // The router: a delivery (its read first), a repeated one, and a forward's send record.
    await uses('router', ROUTER_TABLE_ACTIONS, async () => {
      for (const e of [first, second, third, first]) {
        await index.deliveryState(e.mailbox, e.id);
        await index.deliver(e);
      }
      await index.claimSend('iam-forward', sending);
      await index.finishSend('iam-forward', { state: 'sent', providerMessageId: 'p' }, now);
    });
    // The send function: the token, the send record, the sent copy.
    await uses('send', SEND_TABLE_ACTIONS, async () => {
      await index.getToken('0'.repeat(64));
      await index.claimSend('iam-submit', sending);
      await index.finishSend('iam-submit', { state: 'sent', providerMessageId: 'p' }, now);
      const copy = entry(sentMailboxKey(inbox), 4);
      await index.deliveryState(copy.mailbox, copy.id);
      await index.deliver(copy);
    });
    // The API: the token, reads, the long-poll by cursor, the seen flag, DELE.
    await uses(
      'api',
      [...API_TABLE_ACTIONS, ...API_UNSEEN_INDEX_ACTIONS.map((a) => `index:${a}`)],
      async () => {
        await index.getToken('0'.repeat(64));
        await index.stat(inbox);
        await index.commitCursor(inbox);
        await index.committedAfter(inbox, 0, 10);
        await index.list(inbox, { limit: 2 });
        await index.list(inbox, { limit: 2, unseen: true, q: 's' });
        await index.list(inbox, { limit: 2, unseen: true });
        await index.listMailboxes({ limit: 10 });
        await index.get(inbox, first.id);
        await index.setSeen(inbox, first.id, true);
        await index.delete(inbox, first.id);
      },
    );
    // The retention sweep.
    await uses('retention', RETENTION_TABLE_ACTIONS, async () => {
      await index.listMailboxes({ limit: 10 });
      await index.list(inbox, { limit: 100 });
      await index.get(inbox, second.id);
      await index.delete(inbox, second.id);
    });
    await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
  });

  it('an entry written before crlfSize was recorded reads back with crlfSize = size', async () => {
    const tableName = `legacy-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    try {
      const index = new DynamoDbMailboxIndex({ client: documents, tableName });
      const old = makeEntry('alice@example.test', Date.UTC(2025, 0, 1), 'legacy', { crlfSize: 4321 });
      await index.deliver(old);
      // What an item from before looks like: no crlfSize attribute.
      await documents.send(
        new UpdateCommand({
          TableName: tableName,
          Key: { [TABLE_KEYS.partitionKey]: `MBX#${old.mailbox}`, [TABLE_KEYS.sortKey]: `MSG#${old.id}` },
          UpdateExpression: 'REMOVE crlfSize',
        }),
      );
      const back = await index.get(old.mailbox, old.id);
      assert.equal(back?.crlfSize, old.size);
      assert.equal((await index.list(old.mailbox, { limit: 10 })).items[0]?.crlfSize, old.size);
    } finally {
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('deliveries racing for a commit number from several functions all land, the wall clock stepped forward meanwhile', async () => {
    // Router invocations in separate Lambda environments (one index each) deliver into one mailbox at
    // once; all but one lose each round's race for the next commit number and try again within a
    // time budget. That budget is time actually spent, not the wall clock: a clock stepped forward
    // (NTP, a host resumed) must not make every delivery still racing give up.
    const tableName = `race-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    const realNow = Date.now;
    try {
      const mailbox = 'race@example.test';
      const functions = Array.from(
        { length: 6 },
        () => new DynamoDbMailboxIndex({ client: documents, tableName }),
      );
      const first = makeEntry(mailbox, Date.UTC(2026, 0, 1), 'race-first');
      for (const index of functions) await index.deliver(first); // each registers the mailbox
      const entries = functions.map((_, i) => makeEntry(mailbox, Date.UTC(2026, 0, 1, 0, 1, i), `race-${i}`));
      const delivered = Promise.allSettled(
        entries.map((e, i) => (functions[i] as DynamoDbMailboxIndex).deliver(e)),
      );
      // Every delivery has begun (its budget set) before the first answer from the table.
      await new Promise((r) => setTimeout(r, 5));
      Date.now = () => realNow() + 3_600_000;
      const results = await delivered;
      Date.now = realNow;
      assert.deepEqual(
        results.map((r) => (r.status === 'fulfilled' ? r.value : String(r.reason))),
        entries.map(() => ({ inserted: true })),
      );
      const stat = await functions[0]?.stat(mailbox);
      assert.equal(stat?.messages, entries.length + 1);
      assert.equal(await functions[0]?.commitCursor(mailbox), entries.length + 1);
    } finally {
      Date.now = realNow;
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('a q or unseen page reads at most filteredReadBudget items, and its nextCursor reads on from there', async () => {
    // A `q` that matched nothing (or `unseen=true` in a read mailbox) read the whole partition in
    // one request: at 100,000 messages ~500 Queries and ~18,000 read units, and past API Gateway's
    // 29 s from about a million. Counted in items read (DynamoDB's ScannedCount), not in time.
    const tableName = `budget-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    try {
      let scanned = 0;
      let queries = 0;
      const counting = {
        send: async (command: object) => {
          const r = await documents.send(command as Parameters<DynamoDBDocumentClient['send']>[0]);
          if (command.constructor.name === 'QueryCommand') {
            queries += 1;
            scanned += (r as { ScannedCount?: number }).ScannedCount ?? 0;
          }
          return r;
        },
      } as unknown as DynamoDBDocumentClient;
      const index = new DynamoDbMailboxIndex({ client: counting, tableName, filteredReadBudget: 10 });
      const inbox = 'alice@example.test';
      const start = Date.UTC(2025, 0, 1);
      // 35 messages, all seen but the oldest and one in the middle; the oldest alone says "zanzibar".
      const entries = Array.from({ length: 35 }, (_, i) =>
        makeEntry(inbox, start + i * 1000, `budget-${i}`, {
          seen: i !== 0 && i !== 17,
          ...(i === 0 ? { subject: 'Zanzibar' } : {}),
        }),
      );
      for (const e of entries) await index.deliver(e);
      const walk = async (options: { q?: string; unseen?: boolean }) => {
        const ids: string[] = [];
        const reads: number[] = [];
        let cursor: string | undefined;
        for (let pages = 0; pages < 20; pages++) {
          scanned = 0;
          const page = await index.list(inbox, { limit: 5, cursor, ...options });
          reads.push(scanned);
          ids.push(...page.items.map((i) => i.id));
          if (page.nextCursor === null) return { ids, reads };
          cursor = page.nextCursor;
        }
        throw new Error('no last page after 20');
      };
      const rare = await walk({ q: 'zanzibar' });
      assert.deepEqual(rare.ids, [entries[0]?.id]);
      assert.ok(
        rare.reads.every((n) => n <= 10),
        `items read per page: ${rare.reads.join(', ')}`,
      );
      assert.ok(rare.reads.length >= 4, 'the search went on over several pages');
      const unseen = await walk({ unseen: true });
      assert.deepEqual(unseen.ids, [entries[17]?.id, entries[0]?.id]);
      assert.ok(
        unseen.reads.every((n) => n <= 10),
        `items read per page: ${unseen.reads.join(', ')}`,
      );
      // A match common enough to fill the page stops there; no filter reads just the page.
      queries = 0;
      scanned = 0;
      const all = await index.list(inbox, { limit: 5, q: 'message' });
      assert.equal(all.items.length, 5);
      assert.notEqual(all.nextCursor, null);
      assert.equal(queries, 1);
      const plain = await index.list(inbox, { limit: 30 });
      assert.equal(plain.items.length, 30, 'an unfiltered page is not cut by the budget');
    } finally {
      await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  runMailboxIndexContract('DynamoDbMailboxIndex', async (options) => {
    const tableName = `contract-${randomUUID()}`;
    await dynamo.send(new CreateTableCommand(mailboxTableDefinition(tableName)));
    return {
      index: new DynamoDbMailboxIndex({ client: documents, tableName, ...options }),
      reopen: async () => new DynamoDbMailboxIndex({ client: documents, tableName, ...options }),
      cleanup: async () => {
        await dynamo.send(new DeleteTableCommand({ TableName: tableName }));
      },
      legacy: {
        deliver: (entry) =>
          deliverAsBefore(new DynamoDbMailboxIndex({ client: documents, tableName }), tableName, entry),
        upgrade: async () => {
          await new DynamoDbMailboxIndex({ client: documents, tableName }).backfillUnseen();
        },
      },
    };
  });
});

/**
 * The IAM actions a DynamoDB document-client command needs: one per command, and for a transaction
 * one per item (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
 */
function iamActionsOf(command: object): string[] {
  const name = command.constructor.name;
  const single: Record<string, string> = {
    GetCommand: 'GetItem',
    PutCommand: 'PutItem',
    UpdateCommand: 'UpdateItem',
    DeleteCommand: 'DeleteItem',
    QueryCommand: 'Query',
    ScanCommand: 'Scan',
    BatchGetCommand: 'BatchGetItem',
    BatchWriteCommand: 'BatchWriteItem',
  };
  const action = single[name];
  if (action !== undefined) return [`dynamodb:${action}`];
  if (name === 'TransactWriteCommand') {
    const items =
      (command as { input: { TransactItems?: Record<string, unknown>[] } }).input.TransactItems ?? [];
    const perItem: Record<string, string> = {
      Put: 'PutItem',
      Update: 'UpdateItem',
      Delete: 'DeleteItem',
      ConditionCheck: 'ConditionCheckItem',
    };
    return items.flatMap((item) => Object.keys(item).map((k) => `dynamodb:${perItem[k] ?? `unknown ${k}`}`));
  }
  return [`dynamodb:unknown ${name}`];
}
