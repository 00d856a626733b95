/**
 * Finds and loads the configuration: `$MAIL_RELAY_CONFIG`, else `./mail-relay.config.json`,
 * else the documented dev default (every address at example.test is a mailbox).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Config, DEV_DEFAULT_CONFIG, parseConfig } from '../core/config.ts';
import { ConfigError } from '../core/errors.ts';

export const CONFIG_FILE_NAME = 'mail-relay.config.json';

export interface LoadedConfig {
  readonly config: Config;
  /** The file it came from, or null for the dev default. */
  readonly path: string | null;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): LoadedConfig {
  const explicit = env.MAIL_RELAY_CONFIG;
  const path = resolve(cwd, explicit ?? CONFIG_FILE_NAME);
  if (!existsSync(path)) {
    if (explicit) throw new ConfigError(`MAIL_RELAY_CONFIG points to ${path}, which does not exist`);
    return { config: parseConfig(DEV_DEFAULT_CONFIG, 'the dev default configuration'), path: null };
  }
  return { config: parseConfigText(readFileSync(path, 'utf8'), path), path };
}

export function parseConfigText(text: string, source: string): Config {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${source} is not valid JSON: ${(err as Error).message}`);
  }
  return parseConfig(json, source);
}
