/** Types of scripts/build-local.mjs (plain JavaScript so that it runs under any `node`). */
export declare const PROJECT_ROOT: string;
export declare const DEFAULT_OUTDIR: string;
export declare function startNodeFlags(packageJsonPath?: string): string[];
export declare function buildLocal(options?: {
  entry?: string;
  outdir?: string;
  name?: string;
}): Promise<string>;
