/**
 * The SES Bouncer with its own client: the router Lambda loads it on its first bounce (router.ts),
 * `mail-relay replay --stack` at once (router-deps.ts). A relay whose mail is all accepted never
 * loads the SES v1 client.
 */
import { SESClient } from '@aws-sdk/client-ses';
import { SesBouncer } from '../adapters/aws/ses-bouncer.ts';

/**
 * SendBounce is limited to about one call per second per account: `adaptive` retries slow the
 * client down after a throttling error, and more attempts than the default 3 ride out a burst of
 * refused mail (each attempt waits longer; the router's Lambda timeout bounds the whole).
 */
export const BOUNCE_CLIENT_CONFIG = { retryMode: 'adaptive', maxAttempts: 6 } as const;

export function createSesBouncer(client: SESClient = new SESClient(BOUNCE_CLIENT_CONFIG)): SesBouncer {
  return new SesBouncer(client);
}
