/**
 * Links that outlive the role session that makes them (docs/adr/0008, "Later changes"). The router
 * signs the link of an oversize-forward notice with the stack's link secret (a Secrets Manager
 * secret) as a link to the API (`<api>/v1/blobs/forwarded/…`, core/signed-links.ts); the API checks
 * it with the same secret and answers with a 307 to a presigned S3 URL made at that moment. An S3
 * URL presigned by the router itself would stop working when the router's role credentials expire
 * (hours), while the notice promises `relay.linkExpirySeconds` (up to 7 days).
 *
 * The Secrets Manager client is imported on first use: only a notice or a click on one needs it.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { signedBlobUrl } from '../core/signed-links.ts';
import type { ForwardOptions } from '../pipeline/forward.ts';
import type { PresignOptions } from '../ports/blob-store.ts';
import type { HandlerSettings } from './settings.ts';

/** The link secret's value, fetched once per execution environment (a failure is retried next time). */
export function linkSecretLoader(secretId: string, client?: SecretsManagerClient): () => Promise<Buffer> {
  let cached: Promise<Buffer> | undefined;
  return () => {
    cached ??= (async () => {
      const sm = await import('@aws-sdk/client-secrets-manager');
      const out = await (client ?? new sm.SecretsManagerClient({})).send(
        new sm.GetSecretValueCommand({ SecretId: secretId }),
      );
      if (out.SecretString === undefined || out.SecretString.length < 32) {
        throw new Error(`the link secret ${secretId} has no SecretString of at least 32 characters`);
      }
      return Buffer.from(out.SecretString, 'utf8');
    })();
    cached.catch(() => {
      cached = undefined;
    });
    return cached;
  };
}

/** `ForwardOptions.presign` for the router: a signed link to the API instead of an S3 URL. */
export function apiLinkPresigner(
  baseUrl: string,
  secret: () => Promise<Buffer>,
): (key: string, options: PresignOptions) => Promise<string> {
  return async (key, options) => signedBlobUrl({ baseUrl, secret: await secret(), key, ...options });
}

/**
 * The router's forwarding options: notices link through the API when the stack gave the link secret
 * and the API's URL; otherwise (a stack from before them) to a presigned S3 URL as before.
 */
export function routerForwarding(settings: Pick<HandlerSettings, 'links'>): ForwardOptions | undefined {
  const { links } = settings;
  if (links?.baseUrl === undefined) return undefined;
  return { presign: apiLinkPresigner(links.baseUrl, linkSecretLoader(links.secretArn)) };
}
