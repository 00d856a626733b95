/**
 * Argument parsing for every `mail-relay` command: Node's `parseArgs`, with its errors (a missing
 * option value, an unknown option) turned into one line and the command's usage, exit code 2, and
 * `--help` / `-h` answered with the usage on stdout, exit code 0. A module of its own, loading
 * nothing else, so that cli.ts, cli-aws.ts, outbox.ts and compact.ts share it.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** What `parseArgs` returns for these options (positionals always allowed: the command checks them). */
export type ParsedArgs<O extends Options> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>
>;

export interface ArgsIo {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

export interface CommandSpec<O extends Options> {
  /** As the user typed it after `mail-relay`: `import`, `token`, `replay`… */
  readonly command: string;
  readonly usage: string;
  readonly options: O;
  /** When false, any positional argument is a usage error. @default true */
  readonly positionals?: boolean;
}

/** The exit code of a usage error. */
export const USAGE_EXIT = 2;

/** Writes `mail-relay <command>: <problem>` and the usage to stderr; returns the usage exit code. */
export function usageError(io: ArgsIo, command: string, problem: string, usage: string): number {
  io.err.write(`mail-relay ${command}: ${problem}\n${usage}\n`);
  return USAGE_EXIT;
}

/** Whether the arguments ask for help (`--help` or `-h` before any `--`). */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** parseArgs's message, on one line and without its advice about `--` (ours is the usage). */
function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const line = (message.split('\n')[0] ?? message).replace(/\. To specify a positional argument.*$/, '');
  return line.charAt(0).toLowerCase() + line.slice(1);
}

/**
 * The parsed arguments, or the exit code when the command has already answered: `--help` (usage on
 * stdout, 0) or a usage error (one line and the usage on stderr, 2).
 */
export function parseCommandArgs<const O extends Options>(
  spec: CommandSpec<O>,
  args: readonly string[],
  io: ArgsIo,
): ParsedArgs<O> | number {
  if (wantsHelp(args)) {
    io.out.write(`${spec.usage}\n`);
    return 0;
  }
  let parsed: ParsedArgs<O>;
  try {
    parsed = parseArgs({ args: [...args], options: spec.options, allowPositionals: true, strict: true });
  } catch (err) {
    return usageError(io, spec.command, oneLine(err), spec.usage);
  }
  const [extra] = parsed.positionals;
  if (spec.positionals === false && extra !== undefined) {
    return usageError(io, spec.command, `unexpected argument ${JSON.stringify(extra)}`, spec.usage);
  }
  return parsed;
}
