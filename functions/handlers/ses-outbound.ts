/**
 * The SESv2 Outbound of a function's settings, with its own client: the send function builds it at
 * cold start, the router Lambda on its first send (router.ts, LazyOutbound), `mail-relay replay
 * --stack` at once (router-deps.ts). The client retries as the SDK does, but not SES's daily quota
 * (ses-retry.ts).
 */
import { SESv2Client } from '@aws-sdk/client-sesv2';
import { sesRetryConfig } from '../adapters/aws/ses-retry.ts';
import { Sesv2Outbound } from '../adapters/aws/sesv2-outbound.ts';
import type { HandlerSettings } from './settings.ts';

export function createSesOutbound(
  settings: Pick<HandlerSettings, 'sesConfigurationSet'>,
  client: SESv2Client = new SESv2Client(sesRetryConfig()),
): Sesv2Outbound {
  return new Sesv2Outbound({ client, configurationSetName: settings.sesConfigurationSet });
}
