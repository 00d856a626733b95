/**
 * Gate for suites that need something a user's fresh machine may lack (moto_server, the shared
 * corpus, an apt client). Without it, they print ONE loud line saying what was not run and how to
 * get it; under MAIL_RELAY_FULL_TESTS=1 (set by .ci/run) the absence fails the run instead.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FULL = process.env.MAIL_RELAY_FULL_TESTS === '1';
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Returns true when the requirement is met; otherwise skips loudly, or throws under FULL. */
export function requireOrAnnounce(ok: boolean, what: string, hint: string): boolean {
  if (ok) return true;
  const line = `!!! NOT RUN: ${what} — ${hint}`;
  if (FULL) throw new Error(`${line} (MAIL_RELAY_FULL_TESTS=1 requires it)`);
  console.log(line);
  return false;
}

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** The shared corpus: $MAIL_RELAY_CORPUS, or ../shared/corpus next to the clone. */
export function corpusDir(): string | null {
  const candidates = [process.env.MAIL_RELAY_CORPUS, resolve(PROJECT_ROOT, '../shared/corpus')];
  for (const c of candidates) if (c && existsSync(c)) return c;
  return null;
}

/** Files the manifest lists that are licence notes, not messages. */
const NOT_MESSAGES = /(^|\/)(COPYING|\.gitattributes|SOURCES\.md)$/;

/** The corpus's message files (absolute paths) as listed in its MANIFEST.tsv, with their sha256. */
export function corpusFiles(dir: string): { path: string; file: string; sha256: string }[] {
  const lines = readFileSync(join(dir, 'MANIFEST.tsv'), 'utf8').split('\n').slice(1);
  return lines
    .filter((l) => l.trim() !== '' && !NOT_MESSAGES.test(l.split('\t')[0] ?? ''))
    .map((l) => {
      const cols = l.split('\t');
      const file = cols[0] ?? '';
      return { file, path: join(dir, file), sha256: cols[5] ?? '' };
    });
}
