#!/usr/bin/env node
/** Entry point of `mail-relay` (run through tsx by bin/mail-relay.js, or `node --import tsx bin/cli.ts`). */
import { openFilesTooLowLine, readOpenFilesLimit } from '../functions/local/descriptor-limit.ts';

// A reader that leaves early (`token list | head -1`, `route … | grep -q deliver`) closes the pipe.
// What is left to print then has no reader, which is not the command failing: its output stops there,
// and the command finishes what it does and exits with its own code (not an EPIPE stack trace).
// Output that cannot be written (`> /dev/full`, a full disk) fails the command, in one line, not a
// stack trace; a command that writes through a sink of its own (export) says so itself. Its notes on
// stderr are not its output: one that cannot be written there is lost, the command's outcome is not.
let outputFailed = false;
process.stderr.on('error', () => undefined);
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE' || outputFailed) return;
  outputFailed = true;
  // Also once the command has returned (the write failed after it): its code is set by then.
  if (process.exitCode === 0 || process.exitCode === undefined) process.exitCode = 1;
  if (process.stdout.listenerCount('error') === 1)
    process.stderr.write(`mail-relay: could not write to standard output: ${err.message}\n`);
});

// The servers, checked before anything else is loaded: loading the relay is what fails first under
// a very low open-files limit (`npm start` reads ~40 module files at once), with a stack trace.
const command = process.argv[2];
const tooLow = command === 'dev' || command === 'pop3' ? openFilesTooLowLine(readOpenFilesLimit()) : null;
if (tooLow !== null) {
  process.stderr.write(`${tooLow}\n`);
  process.exitCode = 1;
} else {
  const { main } = await import('../functions/local/cli.ts');
  const code = await main(process.argv.slice(2), {
    out: process.stdout,
    err: process.stderr,
    env: process.env,
  });
  process.exitCode = outputFailed && code === 0 ? 1 : code;
}
