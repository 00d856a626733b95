#!/usr/bin/env node
/** Entry point of `mail-relay` (run through tsx by bin/mail-relay.js, or `node --import tsx bin/cli.ts`). */
import { main } from '../functions/local/cli.ts';

// A reader that leaves early (`token list | head -1`, `route … | grep -q deliver`) closes the pipe.
// What is left to print then has no reader, which is not the command failing: its output stops there,
// and the command finishes what it does and exits with its own code (not an EPIPE stack trace).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

const code = await main(process.argv.slice(2), {
  out: process.stdout,
  err: process.stderr,
  env: process.env,
});
process.exitCode = code;
