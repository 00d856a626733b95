/**
 * The SES Bouncer with its own client: the router Lambda loads it on its first bounce (router.ts),
 * `mail-relay replay --stack` at once (router-deps.ts). A relay whose mail is all accepted never
 * loads the SES v1 client.
 */
import { SESClient } from '@aws-sdk/client-ses';
import { SesBouncer } from '../adapters/aws/ses-bouncer.ts';
import { sesRetryConfig } from '../adapters/aws/ses-retry.ts';

/**
 * SendBounce is limited to about one call per second per account: `adaptive` retries slow the
 * client down after a throttling error, and more attempts than the default 3 ride out a burst of
 * refused mail (each attempt waits longer; the router's Lambda timeout bounds the whole). The daily
 * quota is not retried (ses-retry.ts): it does not lift within the router's run.
 */
export function bounceClientConfig(): ReturnType<typeof sesRetryConfig> {
  return sesRetryConfig('adaptive', 6);
}

export function createSesBouncer(client: SESClient = new SESClient(bounceClientConfig())): SesBouncer {
  return new SesBouncer(client);
}
