/**
 * The router's ports on AWS: the storage of deps.ts plus mailparser and SES (which the API
 * function never loads), all built at once. Used by `mail-relay replay --stack`; the router Lambda
 * (router.ts) builds the same ports but loads SES on its first send.
 */
import { SESv2Client } from '@aws-sdk/client-sesv2';
import { sesRetryConfig } from '../adapters/aws/ses-retry.ts';
import { MailparserAdapter } from '../adapters/mailparser/mailparser-adapter.ts';
import type { RouterDeps } from '../pipeline/router.ts';
import { type AwsStorage, createAwsStorage, type HandlerSettings, type StorageClients } from './deps.ts';
import { routerForwarding } from './links.ts';
import { createSesBouncer } from './ses-bouncer.ts';
import { createSesOutbound } from './ses-outbound.ts';

export type AwsRouterDeps = RouterDeps & AwsStorage & { readonly ses: SESv2Client };

/** Router ports from explicit settings; clients default to the SDK's standard chain. */
export function createAwsRouterDeps(
  settings: HandlerSettings,
  clients?: StorageClients & { readonly ses?: SESv2Client },
): AwsRouterDeps {
  const storage = createAwsStorage(settings, clients);
  const ses = clients?.ses ?? new SESv2Client(sesRetryConfig());
  return {
    ...storage,
    parser: new MailparserAdapter(),
    outbound: createSesOutbound(settings, ses),
    forwarding: routerForwarding(settings),
    bouncer: createSesBouncer(),
    ses,
  };
}
