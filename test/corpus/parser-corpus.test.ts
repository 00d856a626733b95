/**
 * MailparserAdapter over every message of the shared corpus (../shared/corpus or
 * $MAIL_RELAY_CORPUS): real and malformed mail from 13 projects. Nothing may throw; every ok
 * result must be a valid summary whose attachments match their decoded parts. ok:false is
 * allowed (the raw message is still delivered, flagged) and counted in the summary line.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { MailparserAdapter } from '../../functions/adapters/mailparser/mailparser-adapter.ts';
import { parsedSummarySchema, partBytes } from '../../functions/core/message.ts';
import { corpusDir, corpusFiles, requireOrAnnounce } from '../helpers/env.ts';

/** Files in the corpus that describe it rather than being messages (walk fallback only). */
const NOT_MESSAGES = new Set(['SOURCES.md', 'MANIFEST.tsv', 'COPYING', '.gitattributes', 'README.md']);

interface CorpusFile {
  /** Relative to the corpus folder. */
  readonly file: string;
  /** From MANIFEST.tsv; absent when the folder has no manifest. */
  readonly sha256?: string;
}

/** The message files, from MANIFEST.tsv when there is one, else by walking the folder. */
function listMessages(dir: string): CorpusFile[] {
  if (existsSync(join(dir, 'MANIFEST.tsv'))) {
    return corpusFiles(dir).map(({ file, sha256 }) => ({ file, sha256 }));
  }
  const walk = (sub: string): CorpusFile[] =>
    readdirSync(join(dir, sub), { withFileTypes: true }).flatMap((entry) => {
      const file = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) return walk(file);
      return NOT_MESSAGES.has(entry.name) || entry.name.endsWith('.md') ? [] : [{ file }];
    });
  return walk('');
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const dir = corpusDir();
if (requireOrAnnounce(dir !== null, 'corpus parser suite', 'needs ../shared/corpus or MAIL_RELAY_CORPUS')) {
  const root = dir ?? '';
  const files = listMessages(root);

  describe(`MailparserAdapter on the shared corpus (${relative(process.cwd(), root) || root})`, () => {
    it('finds the messages, byte-exact as listed in the manifest', () => {
      assert.ok(files.length > 0, 'no message files found');
      const changed = files
        .filter((f) => f.sha256 !== undefined && sha256(readFileSync(join(root, f.file))) !== f.sha256)
        .map((f) => f.file);
      // A changed hash usually means git converted line endings on checkout, which would make
      // the CRLF, CR-only and 8-bit cases test something else.
      assert.deepEqual(changed, [], 'corpus files differ from MANIFEST.tsv');
    });

    it('parses every message without throwing; ok results are valid and self-consistent', async () => {
      const parser = new MailparserAdapter();
      const problems: string[] = [];
      const failed: string[] = [];
      let slowest = { path: '', ms: 0 };
      let bytes = 0;
      let parseMs = 0;
      let okCount = 0;

      for (const file of files) {
        const raw = readFileSync(join(root, file.file));
        bytes += raw.length;
        const started = performance.now();
        let result: Awaited<ReturnType<MailparserAdapter['parse']>>;
        try {
          result = await parser.parse(raw);
        } catch (err) {
          problems.push(`${file.file}: parse() threw ${String(err)}`);
          continue;
        }
        const ms = performance.now() - started;
        parseMs += ms;
        if (ms > slowest.ms) slowest = { path: file.file, ms };

        if (!result.ok) {
          failed.push(`${file.file} (${result.error})`);
          continue;
        }
        okCount += 1;
        const checked = parsedSummarySchema.safeParse(result.summary);
        if (!checked.success) {
          problems.push(`${file.file}: invalid summary: ${checked.error.message}`);
          continue;
        }
        const { attachments } = checked.data;
        if (result.parts.length !== attachments.length) {
          problems.push(`${file.file}: ${result.parts.length} parts for ${attachments.length} attachments`);
        }
        for (const attachment of attachments) {
          const part = result.parts.find((p) => p.partId === attachment.partId);
          if (part === undefined) {
            problems.push(`${file.file}: no part for attachment ${attachment.partId}`);
          } else if (
            partBytes(part).length !== attachment.size ||
            sha256(partBytes(part)) !== attachment.sha256
          ) {
            problems.push(`${file.file}: part ${attachment.partId} does not match its size/sha256`);
          }
        }
      }

      const seconds = parseMs / 1000;
      console.log(
        `corpus: ${files.length} messages (${(bytes / 1e6).toFixed(1)} MB), ` +
          `${okCount} ok, ${failed.length} ok:false` +
          `${failed.length > 0 ? ` [${failed.join('; ')}]` : ''}, ` +
          `parsed in ${seconds.toFixed(2)} s = ${(files.length / seconds).toFixed(0)} msg/s, ` +
          `slowest ${slowest.path} ${slowest.ms.toFixed(0)} ms`,
      );
      assert.deepEqual(problems, []);
    });
  });
}
