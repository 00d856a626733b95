/**
 * The shared port contracts against the AWS adapters (S3BlobStore, DynamoDbMailboxIndex), on a
 * private moto_server. Every test gets a fresh bucket or table.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { CreateTableCommand, DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, DeleteBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import {
  DynamoDbMailboxIndex,
  mailboxTableDefinition,
} from '../../functions/adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../../functions/adapters/aws/s3-blob-store.ts';
import { LazyBlobStore } from '../../functions/adapters/lazy-blob-store.ts';
import type { BlobStore } from '../../functions/ports/blob-store.ts';
import { type Moto, motoAvailable, serializeRequests, startMoto } from '../helpers/moto.ts';
import { runBlobStoreContract } from './blob-store.contract.ts';
import { runMailboxIndexContract } from './mailbox-index.contract.ts';

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
    assert.equal(url.searchParams.get('X-Amz-Expires'), '300');
    assert.match(url.searchParams.get('X-Amz-Signature') ?? '', /^[0-9a-f]{64}$/);
    await assert.rejects(store.presign('k', { expiresIn: 8 * 24 * 3600 }), /expiresIn/);
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
    };
  });
});
