/**
 * The S3 blob store of a function's settings, with its own client. The API function imports this
 * module on the first request that reads or deletes a message's bytes (api.ts, LazyBlobStore), so
 * the S3 client is not part of the cold start of the requests that never touch S3.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { S3BlobStore } from '../adapters/aws/s3-blob-store.ts';
import type { HandlerSettings } from './settings.ts';

export function createS3BlobStore(
  settings: Pick<HandlerSettings, 'bucketName' | 'forcePathStyle'>,
): S3BlobStore {
  return new S3BlobStore({
    client: new S3Client({ forcePathStyle: settings.forcePathStyle }),
    bucket: settings.bucketName,
  });
}
