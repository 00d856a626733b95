/** The Lambda functions' environment (functions/handlers/settings.ts): the notice-link variables. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../functions/core/errors.ts';
import { readHandlerSettings } from '../../functions/handlers/settings.ts';

const BASE = {
  BUCKET_NAME: 'bucket',
  TABLE_NAME: 'table',
  MAIL_RELAY_CONFIG_JSON: JSON.stringify({ domains: ['example.test'], mailboxes: ['alice@example.test'] }),
};
const ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:links-AbCdEf';

describe('readHandlerSettings: notice links', () => {
  it('the router gets the secret and the API URL; the API the secret only; without the secret, no links', () => {
    assert.deepEqual(
      readHandlerSettings({ ...BASE, LINK_SECRET_ARN: ARN, LINK_BASE_URL: 'https://x.execute-api.test/' })
        .links,
      { secretArn: ARN, baseUrl: 'https://x.execute-api.test/' },
    );
    assert.deepEqual(readHandlerSettings({ ...BASE, LINK_SECRET_ARN: ARN }).links, {
      secretArn: ARN,
      baseUrl: undefined,
    });
    assert.equal(readHandlerSettings({ ...BASE, LINK_BASE_URL: 'https://x.test/' }).links, undefined);
  });

  it('refuses at cold start an API URL that links cannot be built on', () => {
    for (const bad of [
      'x.test',
      'ftp://x.test/',
      'https://x.test/?a=1',
      'https://x.test/#f',
      'https://u:p@x.test/',
    ]) {
      assert.throws(
        () => readHandlerSettings({ ...BASE, LINK_SECRET_ARN: ARN, LINK_BASE_URL: bad }),
        (err: unknown) => err instanceof ConfigError && /LINK_BASE_URL/.test(err.message),
        bad,
      );
    }
  });
});
