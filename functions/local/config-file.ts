/**
 * Finds and loads the configuration: `$MAIL_RELAY_CONFIG`, else `./mail-relay.config.json`,
 * else the documented dev default (every address at example.test is a mailbox).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Config, canonicalAddress, DEV_DEFAULT_CONFIG, isAddress, parseConfig } from '../core/config.ts';
import { ConfigError, errorMessage } from '../core/errors.ts';
import { isMailbox } from '../core/routing.ts';

export const CONFIG_FILE_NAME = 'mail-relay.config.json';

export interface LoadedConfig {
  readonly config: Config;
  /** The file it came from, or null for the dev default. */
  readonly path: string | null;
  /** The file's JSON value, as read (the CDK app passes it to the functions); null for the dev default. */
  readonly raw: unknown;
  /** `aws.region`: where `cdk deploy` put the stack, when the file says (the relay itself ignores it). */
  readonly awsRegion?: string | undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): LoadedConfig {
  const explicit = env.MAIL_RELAY_CONFIG;
  const path = resolve(cwd, explicit ?? CONFIG_FILE_NAME);
  if (!existsSync(path)) {
    if (explicit) throw new ConfigError(`MAIL_RELAY_CONFIG points to ${path}, which does not exist`);
    return {
      config: parseConfig(DEV_DEFAULT_CONFIG, 'the dev default configuration'),
      path: null,
      raw: null,
    };
  }
  const raw = parseJsonText(readConfigFile(path), path);
  const config = parseConfig(raw, path);
  // Valid once parseConfig has passed (the schema checks aws.region).
  const region = (raw as { aws?: { region?: unknown } }).aws?.region;
  return { config, path, raw, awsRegion: typeof region === 'string' ? region : undefined };
}

/** The file's text, or a ConfigError in one line (a directory, no permission…). */
function readConfigFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'EISDIR'
        ? 'it is a directory, not a file'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : errorMessage(err);
    throw new ConfigError(`cannot read the configuration ${path}: ${why}`);
  }
}

export function parseConfigText(text: string, source: string): Config {
  return parseConfig(parseJsonText(text, source), source);
}

/**
 * JSON.parse with a leading byte order mark allowed, and a syntax error, or a property named twice in
 * one object, named by line and column.
 */
function parseJsonText(text: string, source: string): unknown {
  // Editors on Windows save UTF-8 with a BOM; JSON.parse refuses it.
  const json = text.startsWith('\uFEFF') ? text.slice(1) : text;
  let value: unknown;
  let parseError: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    parseError = err;
  }
  // Also for text JSON.parse takes: it keeps the last of a property named twice, and the first (a
  // second `routes`, say, pasted in from an example) would be dropped without a word.
  const at = jsonSyntaxError(json);
  if (at === null) {
    if (parseError === undefined) return value;
    throw new ConfigError(`${source} is not valid JSON: ${errorMessage(parseError).split('\n')[0]}`);
  }
  const before = json.slice(0, at.offset);
  const line = before.split('\n').length;
  const column = at.offset - before.lastIndexOf('\n');
  throw new ConfigError(`${source} is not valid JSON: line ${line}, column ${column}: ${at.problem}`);
}

/**
 * Where a text stops being JSON (RFC 8259) and why, or null if it is JSON. V8's messages give a
 * character position at best, and none for an unexpected token. A property named twice in one object
 * is reported too: RFC 8259 §4 says names SHOULD be unique, and parsers disagree on which one wins.
 */
export function jsonSyntaxError(text: string): { offset: number; problem: string } | null {
  let i = 0;
  class Stop {
    constructor(readonly problem: string) {}
  }
  const found = () => (i >= text.length ? 'the end of the file' : JSON.stringify(text.charAt(i)));
  const space = () => {
    while (i < text.length && ' \t\n\r'.includes(text.charAt(i))) i++;
  };
  const expect = (what: string) => new Stop(`expected ${what}, found ${found()}`);
  const string = () => {
    i++;
    for (;;) {
      if (i >= text.length) throw new Stop('a string that never ends');
      const c = text.charAt(i);
      if (c === '"') {
        i++;
        return;
      }
      if (c === '\\') {
        const escaped = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y;
        escaped.lastIndex = i;
        if (!escaped.test(text)) throw new Stop('an invalid escape in a string');
        i = escaped.lastIndex;
      } else if (c < ' ') {
        throw new Stop('a control character (a line break?) in a string');
      } else {
        i++;
      }
    }
  };
  /** `open` … `close`: items separated by commas (or none), each read by `item`. */
  const sequence = (close: string, item: () => void, after: string) => {
    i++;
    space();
    if (text.charAt(i) === close) {
      i++;
      return;
    }
    for (;;) {
      item();
      space();
      if (text.charAt(i) === close) {
        i++;
        return;
      }
      if (text.charAt(i) !== ',') throw expect(`',' or '${close}' after ${after}`);
      i++;
    }
  };
  const member = (names: Set<string>) => {
    space();
    if (text.charAt(i) !== '"') throw expect('a property name in double quotes');
    const start = i;
    string();
    const name = JSON.parse(text.slice(start, i)) as string;
    if (names.has(name)) {
      i = start;
      throw new Stop(
        `${JSON.stringify(name)} appears twice in this object (the second would replace the first)`,
      );
    }
    names.add(name);
    space();
    if (text.charAt(i) !== ':') throw expect("':' after a property name");
    i++;
    value();
  };
  const value = (): void => {
    space();
    const c = text.charAt(i);
    if (c === '{') {
      const names = new Set<string>();
      sequence('}', () => member(names), 'a property value');
    } else if (c === '[') sequence(']', value, 'an array element');
    else if (c === '"') string();
    else literalValue();
  };
  const literalValue = () => {
    const literal = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])|true\b|false\b|null\b/y;
    literal.lastIndex = i;
    if (!literal.test(text)) throw expect('a value');
    i = literal.lastIndex;
  };
  try {
    value();
    space();
    if (i < text.length) throw new Stop(`${found()} after the end of the JSON value`);
    return null;
  } catch (err) {
    if (err instanceof Stop) return { offset: i, problem: err.problem };
    throw err;
  }
}

/**
 * The mailbox a token may be created for (`token create`, locally or `--stack`), or why not:
 * a token reads a mailbox, so aliases and routed addresses are refused with a pointer to `route`.
 */
export function tokenMailbox(config: Config, raw: string): { mailbox: string } | { problem: string } {
  const mailbox = canonicalAddress(raw);
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
