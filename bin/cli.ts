#!/usr/bin/env node
/** Entry point of `mail-relay` (run through tsx by bin/mail-relay.js, or `node --import tsx bin/cli.ts`). */
import { main } from '../functions/local/cli.ts';

const code = await main(process.argv.slice(2), {
  out: process.stdout,
  err: process.stderr,
  env: process.env,
});
process.exitCode = code;
