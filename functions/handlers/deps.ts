/**
 * The AWS storage adapters (S3 blob store, DynamoDB index), wired from the Lambda functions'
 * settings (settings.ts). Built once per execution environment, at module scope of each handler.
 *
 * Kept free of mailparser and SES: the API function imports this, and its bundle must stay small
 * (the router adds those in router-deps.ts).
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoDbMailboxIndex } from '../adapters/aws/dynamodb-mailbox-index.ts';
import { S3BlobStore } from '../adapters/aws/s3-blob-store.ts';
import type { Config } from '../core/config.ts';
import { deletionMemoryDaysFor } from '../ports/mailbox-index.ts';
import type { HandlerSettings } from './settings.ts';

export { type HandlerSettings, readHandlerSettings } from './settings.ts';

export interface StorageClients {
  readonly s3: S3Client;
  readonly dynamo: DynamoDBDocumentClient;
}

export interface AwsStorage {
  readonly config: Config;
  readonly bucketName: string;
  readonly tableName: string;
  readonly blobs: S3BlobStore;
  readonly index: DynamoDbMailboxIndex;
  readonly clients: StorageClients;
}

/**
 * One client per service for the process. Region, credentials and endpoint come from the
 * standard SDK chain (AWS_REGION, the function's role, AWS_ENDPOINT_URL), never from code.
 */
export function createStorageClients(settings: Pick<HandlerSettings, 'forcePathStyle'>): StorageClients {
  return {
    s3: new S3Client({ forcePathStyle: settings.forcePathStyle }),
    dynamo: DynamoDBDocumentClient.from(new DynamoDBClient({})),
  };
}

/** The blob store and the index on AWS, from explicit settings (the CLI builds them from a stack's outputs). */
export function createAwsStorage(
  settings: HandlerSettings,
  clients: StorageClients = createStorageClients(settings),
): AwsStorage {
  return {
    config: settings.config,
    bucketName: settings.bucketName,
    tableName: settings.tableName,
    blobs: new S3BlobStore({ client: clients.s3, bucket: settings.bucketName }),
    index: new DynamoDbMailboxIndex({
      client: clients.dynamo,
      tableName: settings.tableName,
      deletionMemoryDays: deletionMemoryDaysFor(settings.config),
    }),
    clients,
  };
}
