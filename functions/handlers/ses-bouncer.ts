/**
 * The SES Bouncer with its own client: the router Lambda loads it on its first bounce (router.ts),
 * `mail-relay replay --stack` at once (router-deps.ts). A relay whose mail is all accepted never
 * loads the SES v1 client.
 */
import { SESClient } from '@aws-sdk/client-ses';
import { SesBouncer } from '../adapters/aws/ses-bouncer.ts';

export function createSesBouncer(client: SESClient = new SESClient({})): SesBouncer {
  return new SesBouncer(client);
}
