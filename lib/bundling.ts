/**
 * The Lambda bundles: esbuild, run locally at synth (no Docker), through its JavaScript API so
 * that plugins can take out what a cold start would parse for nothing (bundling/esbuild-bundle.mjs
 * says which, and docs/adr/0012-lambda-bundles.md why). The asset is `index.mjs` and its source
 * map; the asset hash is that of the output, so an unchanged bundle is not deployed again.
 */
import { spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AssetHashType, DockerImage } from 'aws-cdk-lib';
import { Code } from 'aws-cdk-lib/aws-lambda';

const BUNDLER = fileURLToPath(new URL('./bundling/esbuild-bundle.mjs', import.meta.url));

/** What esbuild-bundle.mjs builds (its BundleRequest), less the output directory. */
export interface BundleSpec {
  /** Absolute path of the entry module. */
  readonly entry: string;
  /** esbuild target, e.g. `node22`. */
  readonly target: string;
  /** JavaScript put before the bundle. */
  readonly banner: string;
  /** Imports left as they are (loaded at run time, if ever). */
  readonly external: readonly string[];
  /** Identifiers replaced at build time (esbuild `define`). */
  readonly define: Readonly<Record<string, string>>;
  /** npm packages the bundle must not contain: the build fails, naming them, if it does. */
  readonly forbiddenPackages: readonly string[];
}

/** The bundle of `spec` as Lambda code, built when the stack is synthesized with bundling. */
export function bundledCode(spec: BundleSpec): Code {
  const request = (outdir: string) => JSON.stringify({ ...spec, outdir });
  return Code.fromAsset(dirname(spec.entry), {
    assetHashType: AssetHashType.OUTPUT,
    bundling: {
      // Never pulled: local bundling always succeeds or throws. CDK requires an image regardless.
      image: DockerImage.fromRegistry('mail-relay-bundles-are-built-locally'),
      // Not run either; it also makes CDK's asset cache key differ per function and per configuration.
      command: ['node', BUNDLER, request('/asset-output')],
      local: {
        tryBundle(outputDir: string): boolean {
          // On stdin: the request carries the configuration, which may exceed what one argument may hold.
          const r = spawnSync(process.execPath, [BUNDLER], {
            input: request(outputDir),
            encoding: 'utf8',
            stdio: ['pipe', 'pipe', 'pipe'],
          });
          const output = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
          if (r.status !== 0) {
            throw new Error(
              `bundling ${spec.entry} failed: ${output || r.error?.message || `exit ${r.status}`}`,
            );
          }
          // esbuild's warnings; stdout belongs to the CDK app.
          if (output) process.stderr.write(`${output}\n`);
          return true;
        },
      },
    },
  });
}
