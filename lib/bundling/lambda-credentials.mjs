// @ts-check
/**
 * Stands in for `@aws-sdk/credential-provider-node` in the Lambda bundles (esbuild-bundle.mjs loads
 * this file in its place, resolving its imports from that package's own directory). The SDK's
 * default chain is: environment, SSO, INI profiles, credential_process, web identity token, then
 * the container or instance metadata endpoints. A Lambda function gets its role's credentials in
 * the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), and where Lambda
 * runs functions in containers that it does not give them, behind the container credentials
 * endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI); the other links, and the STS/SSO clients they
 * carry, never run there. This chain keeps those two, in the same order and with the same
 * memoization (refresh five minutes before expiry) as the default chain.
 *
 * Not for code that runs on a laptop: the CLI and the tests use the real default chain.
 */
import { fromEnv } from '@aws-sdk/credential-provider-env';
import { doesIdentityRequireRefresh, isIdentityExpired, memoizeIdentityProvider } from '@smithy/core';
import { CredentialsProviderError, chain } from '@smithy/core/config';

/**
 * @param {{ logger?: { debug?: (message: string) => void } }} [init]
 */
export const defaultProvider = (init = {}) =>
  memoizeIdentityProvider(
    chain(fromEnv(init), async () => {
      const imds = await import('@smithy/credential-provider-imds');
      if (process.env[imds.ENV_CMDS_RELATIVE_URI] || process.env[imds.ENV_CMDS_FULL_URI]) {
        const { fromHttp } = await import('@aws-sdk/credential-provider-http');
        return chain(fromHttp(init), imds.fromContainerMetadata(init))();
      }
      throw new CredentialsProviderError(
        'no credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or behind the container credentials endpoint',
        { tryNextLink: false, logger: init.logger },
      );
    }),
    isIdentityExpired,
    doesIdentityRequireRefresh,
  );

/** @param {{ expiration?: Date } | undefined} credentials */
export const credentialsWillNeedRefresh = (credentials) => credentials?.expiration !== undefined;

/** @param {{ expiration?: Date } | undefined} credentials */
export const credentialsTreatedAsExpired = (credentials) =>
  credentials?.expiration !== undefined && credentials.expiration.getTime() - Date.now() < 300_000;
