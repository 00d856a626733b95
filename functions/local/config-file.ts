/**
 * Finds and loads the configuration: `$MAIL_RELAY_CONFIG`, else `./mail-relay.config.json`,
 * else the documented dev default (every address at example.test is a mailbox).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Config, DEV_DEFAULT_CONFIG, isAddress, normalizeAddress, parseConfig } from '../core/config.ts';
import { ConfigError } from '../core/errors.ts';
import { isMailbox } from '../core/routing.ts';

export const CONFIG_FILE_NAME = 'mail-relay.config.json';

export interface LoadedConfig {
  readonly config: Config;
  /** The file it came from, or null for the dev default. */
  readonly path: string | null;
  /** `aws.region`: where `cdk deploy` put the stack, when the file says (the relay itself ignores it). */
  readonly awsRegion?: string | undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): LoadedConfig {
  const explicit = env.MAIL_RELAY_CONFIG;
  const path = resolve(cwd, explicit ?? CONFIG_FILE_NAME);
  if (!existsSync(path)) {
    if (explicit) throw new ConfigError(`MAIL_RELAY_CONFIG points to ${path}, which does not exist`);
    return { config: parseConfig(DEV_DEFAULT_CONFIG, 'the dev default configuration'), path: null };
  }
  const text = readFileSync(path, 'utf8');
  const config = parseConfigText(text, path);
  // Valid once parseConfigText has passed (the schema checks aws.region).
  const region = (JSON.parse(text) as { aws?: { region?: unknown } }).aws?.region;
  return { config, path, awsRegion: typeof region === 'string' ? region : undefined };
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

/**
 * The mailbox a token may be created for (`token create`, locally or `--stack`), or why not:
 * a token reads a mailbox, so aliases and routed addresses are refused with a pointer to `route`.
 */
export function tokenMailbox(config: Config, raw: string): { mailbox: string } | { problem: string } {
  const mailbox = normalizeAddress(raw);
  if (!isAddress(mailbox)) return { problem: `${raw} is not an address` };
  if (!isMailbox(config, mailbox) && mailbox !== config.quarantineMailbox) {
    return {
      problem:
        `${mailbox} is not a mailbox in the configuration ` +
        `(see \`mail-relay route ${mailbox}\` for where its mail goes)`,
    };
  }
  return { mailbox };
}

/** How `token create` names what a new token reads (both the local and the `--stack` command). */
export function tokenScope(admin: boolean, mailbox: string | null): string {
  return admin ? `admin token${mailbox === null ? '' : ` (mailbox ${mailbox})`}` : `token for ${mailbox}`;
}
