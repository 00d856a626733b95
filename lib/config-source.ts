/**
 * The configuration the CDK app deploys: `$MAIL_RELAY_CONFIG`, else `./mail-relay.config.json`, found
 * and validated exactly as `npm start` does (functions/local/config-file.ts). Unlike `npm start`,
 * there is no dev default: deploying example.test would receive nothing.
 */
import { type AwsSettings, configSchema } from '../functions/core/config.ts';
import { ConfigError } from '../functions/core/errors.ts';
import { CONFIG_FILE_NAME, loadConfig } from '../functions/local/config-file.ts';

export interface StackConfig {
  /** The parsed JSON, as the functions will receive it. */
  readonly raw: unknown;
  /** The file it came from. */
  readonly source: string;
  readonly aws: AwsSettings;
}

export function loadStackConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): StackConfig {
  const { path, raw } = loadConfig(env, cwd);
  if (path === null) {
    throw new ConfigError(
      `no ${CONFIG_FILE_NAME} in ${cwd}: copy mail-relay.config.example.json to ${CONFIG_FILE_NAME} and put ` +
        'your domains in it, or point MAIL_RELAY_CONFIG at your file',
    );
  }
  // The JSON value loadConfig validated (a leading BOM already dropped).
  return { raw, source: path, aws: configSchema.parse(raw).aws ?? {} };
}
