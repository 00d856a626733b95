/**
 * The web inbox's files (`web/inbox/`: one HTML page, its script and its style sheet), by file name.
 * Run from source (tsx: tests, the CLI) they are read from the repository once, at first use. The
 * bundles (the API Lambda's, `npm start`'s) carry them as strings instead: the esbuild plugin in
 * lib/bundling/inbox-assets-plugin.mjs replaces this module with one that exports the same function
 * over the files' contents, so a Lambda reads no file it was not given.
 */
import { readdirSync, readFileSync } from 'node:fs';

let cached: Readonly<Record<string, string>> | undefined;

/** Every file of `web/inbox/`, by name. */
export function inboxAssets(): Readonly<Record<string, string>> {
  if (cached === undefined) {
    const dir = new URL('../../web/inbox/', import.meta.url);
    const files: Record<string, string> = {};
    for (const name of readdirSync(dir).sort()) files[name] = readFileSync(new URL(name, dir), 'utf8');
    cached = files;
  }
  return cached;
}
