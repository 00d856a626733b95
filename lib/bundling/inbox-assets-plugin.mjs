// @ts-check
/**
 * An esbuild plugin that bundles the web inbox's files (`web/inbox/`) as strings: it replaces
 * functions/api/inbox-assets.ts, which reads them from the repository when run from source, with a
 * module exporting the same `inboxAssets()` over their contents. Used by the Lambda bundler
 * (esbuild-bundle.mjs) and by `npm start`'s build (scripts/build-local.mjs).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const INBOX_DIR = join(ROOT, 'web', 'inbox');

/** @type {import('esbuild').Plugin} */
export const inboxAssetsPlugin = {
  name: 'inbox-assets',
  setup(build) {
    build.onLoad({ filter: /[\\/]functions[\\/]api[\\/]inbox-assets\.ts$/ }, () => {
      /** @type {Record<string, string>} */
      const files = {};
      for (const name of readdirSync(INBOX_DIR).sort())
        files[name] = readFileSync(join(INBOX_DIR, name), 'utf8');
      return {
        contents: `const files = Object.freeze(${JSON.stringify(files)});\nexport function inboxAssets() { return files; }\n`,
        loader: 'js',
        watchFiles: Object.keys(files).map((name) => join(INBOX_DIR, name)),
      };
    });
  },
};
