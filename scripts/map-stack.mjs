#!/usr/bin/env node
// Maps the positions in a stack trace from a Lambda function's logs back to the source, with the
// source maps that ship in the function's code (the functions do not enable source maps at run
// time: docs/adr/0012-lambda-bundles.md).
//
//   aws lambda get-function --function-name <name> --query Code.Location --output text  # a URL to a zip
//   unzip code.zip -d code && node scripts/map-stack.mjs code < stack.txt
//
// Every `<file>.mjs:<line>:<column>` whose `<file>.mjs.map` is in the directory is replaced by the
// original file, line and column (and function name, when the map has one); the rest is unchanged.
import { existsSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: node scripts/map-stack.mjs <unzipped function code> < stack.txt\n');
  process.exit(2);
}
/** @type {Map<string, SourceMap | null>} */
const maps = new Map();
/** @param {string} file */
function mapOf(file) {
  if (!maps.has(file)) {
    const path = join(dir, `${file}.map`);
    maps.set(file, existsSync(path) ? new SourceMap(JSON.parse(readFileSync(path, 'utf8'))) : null);
  }
  return maps.get(file) ?? null;
}

const input = readFileSync(0, 'utf8');
const mapped = input.replace(
  /(?:file:\/\/)?[^\s()]*?([\w.-]+\.mjs):(\d+):(\d+)/g,
  (whole, file, line, column) => {
    const entry = mapOf(file)?.findEntry(Number(line) - 1, Number(column) - 1);
    if (!entry || !('originalSource' in entry) || !entry.originalSource) return whole;
    // Sources are relative to the bundle's build directory; from the project (or node_modules) on is enough.
    const source = entry.originalSource.replace(/^.*?(?=(?:node_modules|functions|lib)\/)|^(?:\.\.\/)+/, '');
    const name = entry.name ? ` [${entry.name}]` : '';
    return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}${name}`;
  },
);
process.stdout.write(mapped);
