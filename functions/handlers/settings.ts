/**
 * The Lambda functions' settings, read from their environment once per execution environment
 * (module scope of each handler), so a missing variable or an invalid configuration fails the
 * cold start with a message naming what is wrong, not the 100th request. No AWS SDK here: a
 * handler reads its settings before it decides which clients to build, and when
 * (deps.ts, s3-storage.ts).
 *
 * Environment (the stack sets these; see lib/mail-relay.ts HANDLER_ENV):
 *   BUCKET_NAME             the mail bucket (inbound/, notifications/, mailboxes/)
 *   TABLE_NAME              the single DynamoDB table of the mailbox index
 *   MAIL_RELAY_CONFIG_JSON  mail-relay.config.json's content, validated with parseConfig
 *   SES_CONFIGURATION_SET   optional: SES configuration set for outbound mail (router forwards, the send function)
 *   LINK_SECRET_ARN         optional: the Secrets Manager secret that signs links to the API (links.ts);
 *                           the API serves `GET /v1/blobs/forwarded/…` with it, the router signs with it
 *   LINK_BASE_URL           optional: the API's URL, for the links the router signs (with LINK_SECRET_ARN)
 *   AWS_ENDPOINT_URL        optional, read by the SDK itself: an S3/DynamoDB/SES-compatible endpoint
 *   MAIL_RELAY_S3_FORCE_PATH_STYLE  optional `true`/`false`; defaults to true when AWS_ENDPOINT_URL(_S3) is set
 */
import { type Config, parseConfig } from '../core/config.ts';
import { ConfigError } from '../core/errors.ts';

export interface HandlerSettings {
  readonly bucketName: string;
  readonly tableName: string;
  readonly config: Config;
  readonly sesConfigurationSet?: string | undefined;
  /** Signed links through the API (links.ts): the secret, and (the router's) the API's URL. */
  readonly links?: { readonly secretArn: string; readonly baseUrl?: string | undefined } | undefined;
  /** S3-compatible endpoints (moto, MinIO, LocalStack) serve buckets by path, not by host name. */
  readonly forcePathStyle: boolean;
}

function parseBoolean(name: string, value: string): boolean {
  if (/^(1|true|yes)$/i.test(value)) return true;
  if (/^(0|false|no)$/i.test(value)) return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(value)}`);
}

/** An http(s) URL that paths can be appended to: no query, no fragment, no credentials. */
function isBaseUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (
    (url.protocol === 'https:' || url.protocol === 'http:') &&
    url.search === '' &&
    url.hash === '' &&
    url.username === '' &&
    !value.includes('?') &&
    !value.includes('#')
  );
}

/** Reads and validates the handlers' environment; every missing variable is reported at once. */
export function readHandlerSettings(env: NodeJS.ProcessEnv): HandlerSettings {
  const issues: string[] = [];
  const required = (name: string): string => {
    const value = env[name]?.trim();
    if (value === undefined || value === '') {
      issues.push(`${name} is not set`);
      return '';
    }
    return value;
  };
  const bucketName = required('BUCKET_NAME');
  const tableName = required('TABLE_NAME');
  const configJson = required('MAIL_RELAY_CONFIG_JSON');
  if (issues.length > 0) throw new ConfigError('the function environment is incomplete', issues);

  let raw: unknown;
  try {
    raw = JSON.parse(configJson);
  } catch (err) {
    throw new ConfigError(`MAIL_RELAY_CONFIG_JSON is not valid JSON: ${(err as Error).message}`);
  }
  const config = parseConfig(raw, 'MAIL_RELAY_CONFIG_JSON');
  const customEndpoint = Boolean(env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL);
  const pathStyle = env.MAIL_RELAY_S3_FORCE_PATH_STYLE?.trim();
  const configurationSet = env.SES_CONFIGURATION_SET?.trim();
  const linkSecretArn = env.LINK_SECRET_ARN?.trim();
  const linkBaseUrl = env.LINK_BASE_URL?.trim();
  if (linkBaseUrl && !isBaseUrl(linkBaseUrl)) {
    throw new ConfigError(
      `LINK_BASE_URL must be an http(s) URL without query or fragment, got ${JSON.stringify(linkBaseUrl)}`,
    );
  }
  return {
    bucketName,
    tableName,
    config,
    sesConfigurationSet: configurationSet === '' ? undefined : configurationSet,
    links: linkSecretArn ? { secretArn: linkSecretArn, baseUrl: linkBaseUrl || undefined } : undefined,
    forcePathStyle:
      pathStyle === undefined || pathStyle === ''
        ? customEndpoint
        : parseBoolean('MAIL_RELAY_S3_FORCE_PATH_STYLE', pathStyle),
  };
}
