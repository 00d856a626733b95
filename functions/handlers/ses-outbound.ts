/**
 * The SESv2 Outbound of a function's settings, with its own client: the send function builds it at
 * cold start, the router Lambda on its first send (router.ts, LazyOutbound), `mail-relay replay
 * --stack` at once (router-deps.ts).
 */
import { SESv2Client } from '@aws-sdk/client-sesv2';
import { Sesv2Outbound } from '../adapters/aws/sesv2-outbound.ts';
import type { HandlerSettings } from './settings.ts';

export function createSesOutbound(
  settings: Pick<HandlerSettings, 'sesConfigurationSet'>,
  client: SESv2Client = new SESv2Client({}),
): Sesv2Outbound {
  return new Sesv2Outbound({ client, configurationSetName: settings.sesConfigurationSet });
}
