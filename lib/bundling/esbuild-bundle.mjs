#!/usr/bin/env node
// @ts-check
/**
 * Builds one Lambda bundle with esbuild's JavaScript API, for lib/bundling.ts (which runs this file
 * in a child process during `cdk synth`, because CDK's local bundling is synchronous and esbuild
 * plugins need the asynchronous API). Plain JavaScript so that it runs under any `node`.
 *
 * Input: the JSON of a BundleRequest (lib/bundling.ts) on stdin, or as the one argument. Output in `outdir`: `index.mjs`, and
 * what it loads only when needed: `<name>-<HASH>.mjs` chunks (the targets of dynamic `import()`s,
 * e.g. the API function's S3 client) and `iconv-lite-tables/*.json`; each .mjs with its source
 * map. Exits 1, with the reason on stderr, when the build fails or the bundle contains a package
 * it must not contain (`forbiddenPackages`). MAIL_RELAY_BUNDLE_REPORT=1 prints the largest packages.
 *
 * The plugins, each about what a cold start pays for (docs/adr/0012-lambda-bundles.md):
 * - zod's locales: zod 4 classic re-exports every locale (`z.locales`, `z.core.locales`), so a
 *   bundle that keeps the `z` namespace keeps 258 KB of messages in 40 languages. The locales
 *   module is replaced by one that exports `en` only (the default, which zod imports directly).
 * - zod for @hono/zod-openapi: it passes the whole `z` namespace to extendZodWithOpenApi, which
 *   reads only `z.ZodType`, and re-exports it; handing it `{ ZodType }` lets the rest of zod be
 *   tree-shaken (our code imports zod as a namespace, `import * as z from 'zod'`, and never takes
 *   `z` from @hono/zod-openapi: biome.json forbids it).
 * - Credentials: the SDK's default chain, minus the links that never run in Lambda (SSO, INI
 *   profiles, web identity and their nested STS/SSO clients, ~90 KB): see lambda-credentials.mjs.
 * - mailparser's dependencies: one libmime (its ES and CommonJS builds are both imported), with
 *   its GBK codec built on first use instead of at load; mailparser's linkify-it built on first use
 *   (never, with the relay's options); iconv-lite's code tables as files beside the bundle, loaded
 *   when a message needs them, as iconv-lite intends.
 */
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { inboxAssetsPlugin } from './inbox-assets-plugin.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/** @param {string} file */
const isInZod = (file) => /[\\/]node_modules[\\/]zod[\\/]v4[\\/]/.test(file);

/** @type {esbuild.Plugin} */
const zodEnglishOnly = {
  name: 'zod-english-only',
  setup(build) {
    build.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      isInZod(args.importer)
        ? { path: join(args.resolveDir, '../locales/index.js'), namespace: 'zod-english-only' }
        : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'zod-english-only' }, (args) => ({
      contents: "export { default as en } from './en.js';\n",
      resolveDir: dirname(args.path),
      loader: 'js',
    }));
  },
};

/** @type {esbuild.Plugin} */
const zodTypeForOpenApi = {
  name: 'zod-type-for-openapi',
  setup(build) {
    build.onResolve({ filter: /^zod$/ }, (args) =>
      /[\\/]node_modules[\\/]@hono[\\/]zod-openapi[\\/]/.test(args.importer)
        ? { path: 'zod-for-hono-zod-openapi', namespace: 'zod-type-for-openapi' }
        : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'zod-type-for-openapi' }, () => ({
      contents: "import { ZodType } from 'zod';\nexport const z = { ZodType };\n",
      resolveDir: HERE,
      loader: 'js',
    }));
  },
};

/** @type {esbuild.Plugin} */
const lambdaCredentials = {
  name: 'lambda-credentials',
  setup(build) {
    build.onResolve({ filter: /^@aws-sdk\/credential-provider-node$/ }, async (args) => {
      if (args.pluginData === 'lambda-credentials') return undefined;
      // Where the real package is: the stand-in's imports resolve from there, as the package's own would.
      const real = await build.resolve(args.path, {
        kind: args.kind,
        resolveDir: args.resolveDir,
        pluginData: 'lambda-credentials',
      });
      if (real.errors.length > 0) return { errors: real.errors };
      return { path: real.path, namespace: 'lambda-credentials' };
    });
    build.onLoad({ filter: /.*/, namespace: 'lambda-credentials' }, (args) => ({
      contents: readFileSync(join(HERE, 'lambda-credentials.mjs'), 'utf8'),
      resolveDir: dirname(args.path),
      loader: 'js',
    }));
  },
};

/** Directory of the asset (beside index.mjs) that holds iconv-lite's tables. */
const ICONV_TABLES_DIR = 'iconv-lite-tables';

/**
 * iconv-lite's code tables for the multi-byte charsets (GBK, Big5, Shift_JIS, EUC-JP, EUC-KR, …:
 * ~450 KB of JSON) are `require`d by iconv-lite only when a message in one of them is decoded
 * ("not require()-d until they are needed to speed up library load"). Inlined in the bundle they
 * would be parsed at every cold start; kept as files beside it, they load as iconv-lite intended.
 * `copies` collects what to copy into the asset.
 * @param {Map<string, string>} copies file name in ICONV_TABLES_DIR -> source path
 * @returns {esbuild.Plugin}
 */
const iconvTablesBesideBundle = (copies) => ({
  name: 'iconv-tables-beside-bundle',
  setup(build) {
    build.onResolve({ filter: /^\.\/tables\/[\w.-]+\.json$/ }, (args) => {
      if (!/[\\/]node_modules[\\/]iconv-lite[\\/]encodings$/.test(args.resolveDir)) return undefined;
      const name = args.path.slice('./tables/'.length);
      copies.set(name, join(args.resolveDir, args.path));
      return { path: `./${ICONV_TABLES_DIR}/${name}`, external: true };
    });
  },
});

/**
 * libmime ships an ES module build and a CommonJS one; mailparser imports the first, mailsplit
 * requires the second, and a bundle would carry both (80 KB, half of it a second MIME-type table).
 * Both get the CommonJS build, whose `module.exports` is the same libmime object the ES build
 * exports by default.
 * @type {esbuild.Plugin}
 */
const oneLibmime = {
  name: 'one-libmime',
  setup(build) {
    build.onResolve({ filter: /^libmime$/ }, async (args) => {
      if (args.kind === 'require-call' || args.pluginData === 'one-libmime') return undefined;
      const cjs = await build.resolve(args.path, {
        kind: 'require-call',
        resolveDir: args.resolveDir,
        pluginData: 'one-libmime',
      });
      return cjs.errors.length > 0 ? { errors: cjs.errors } : { path: cjs.path };
    });
  },
};

/**
 * libmime 5.6 builds iconv-lite's GBK codec when it is loaded (charset.js: `const DBCS_DECODER =
 * iconv.getCodec('gbk').decoder`), only to recognise iconv-lite's double-byte decoder class later;
 * building it reads and indexes two of iconv-lite's tables, ~45 ms of every router cold start.
 * This defers that line to its one use, decoding a double-byte charset. Nothing else changes; if
 * libmime's source no longer matches, the bundle is built from it unchanged, with a warning (and
 * test/infra/bundles.test.ts, which checks that the router's cold start loads no table, fails).
 * @type {esbuild.Plugin}
 */
const libmimeLazyGbk = {
  name: 'libmime-lazy-gbk',
  setup(build) {
    build.onLoad({ filter: /[\\/]libmime[\\/]dist[\\/](?:cjs|esm)[\\/]charset\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      const definition = /const DBCS_DECODER = ([\w.]+)\.getCodec\('gbk'\)\.decoder;/;
      const uses = source.split('codec.decoder === DBCS_DECODER)').length - 1;
      if (!definition.test(source) || uses !== 1) {
        return {
          contents: source,
          loader: 'js',
          warnings: [{ text: 'libmime-lazy-gbk: libmime changed; its GBK codec is built at load again' }],
        };
      }
      return {
        contents: source
          .replace(
            definition,
            "let DBCS_DECODER_BUILT; const DBCS_DECODER = () => (DBCS_DECODER_BUILT ??= $1.getCodec('gbk').decoder);",
          )
          .replace('codec.decoder === DBCS_DECODER)', 'codec.decoder === DBCS_DECODER())'),
        loader: 'js',
      };
    });
  },
};

/** A linkify-it whose construction and configuration wait for its first use (mailparserLazyLinkify). */
const LAZY_LINKIFY = `import linkifyIt from 'linkify-it';
export default function lazyLinkifyIt(...args) {
  const configuration = [];
  let real;
  const instance = () => {
    if (real === undefined) {
      real = linkifyIt(...args);
      for (const [name, callArgs] of configuration) real[name](...callArgs);
    }
    return real;
  };
  const proxy = new Proxy({}, {
    get(_target, name) {
      if (real === undefined && (name === 'tlds' || name === 'add' || name === 'set')) {
        return (...callArgs) => {
          configuration.push([name, callArgs]);
          return proxy;
        };
      }
      const target = instance();
      const value = target[name];
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return proxy;
}
`;

/**
 * mailparser builds and configures its linkify-it instance (with the full list of top-level
 * domains) when it is loaded, ~12 ms of every cold start, for turning links in text into anchors
 * (`textAsHtml`), which the relay's parser turns off (skipTextToHtml, skipTextLinks). Its
 * `linkify-it` import gets a stand-in that records the configuration calls (`tlds`, `add`, `set`)
 * and builds the real instance on first use.
 * @type {esbuild.Plugin}
 */
const mailparserLazyLinkify = {
  name: 'mailparser-lazy-linkify',
  setup(build) {
    build.onResolve({ filter: /^linkify-it$/ }, (args) =>
      /[\\/]node_modules[\\/]mailparser[\\/]/.test(args.importer)
        ? { path: args.resolveDir, namespace: 'lazy-linkify' }
        : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'lazy-linkify' }, (args) => ({
      contents: LAZY_LINKIFY,
      // Resolved from mailparser's directory, as mailparser's own import would be.
      resolveDir: args.path,
      loader: 'js',
    }));
  },
};

/**
 * @param {esbuild.Metafile} metafile
 * @returns {Map<string, number>} output bytes per npm package
 */
function packageBytes(metafile) {
  const out = new Map();
  for (const output of Object.values(metafile.outputs)) {
    for (const [file, input] of Object.entries(output.inputs)) {
      const m = /node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)[\\/]/.exec(file);
      if (m?.[1]) {
        const name = m[1].replace('\\', '/');
        out.set(name, (out.get(name) ?? 0) + input.bytesInOutput);
      }
    }
  }
  return out;
}

/**
 * @typedef {object} BundleRequest
 * @property {string} entry
 * @property {string} outdir
 * @property {string} target
 * @property {string} banner
 * @property {string[]} external
 * @property {Record<string, string>} define
 * @property {string[]} forbiddenPackages
 */

async function main() {
  /** @type {BundleRequest} */
  const request = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8'));
  /** @type {Map<string, string>} */
  const iconvTables = new Map();
  const result = await esbuild.build({
    entryPoints: { index: request.entry },
    outdir: request.outdir,
    outExtension: { '.js': '.mjs' },
    // What the code imports with import() is a chunk of its own, loaded when (if ever) it runs.
    // Beside index.mjs, so that a path relative to the bundle means the same from every file.
    splitting: true,
    chunkNames: '[name]-[hash]',
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: request.target,
    mainFields: ['module', 'main'],
    minify: true,
    sourcemap: true,
    sourcesContent: false,
    banner: { js: request.banner },
    external: request.external,
    define: request.define,
    plugins: [
      zodEnglishOnly,
      zodTypeForOpenApi,
      lambdaCredentials,
      oneLibmime,
      libmimeLazyGbk,
      mailparserLazyLinkify,
      iconvTablesBesideBundle(iconvTables),
      inboxAssetsPlugin,
    ],
    metafile: true,
    logLevel: 'warning',
  });
  if (iconvTables.size > 0) {
    mkdirSync(join(request.outdir, ICONV_TABLES_DIR), { recursive: true });
    for (const [name, source] of iconvTables)
      copyFileSync(source, join(request.outdir, ICONV_TABLES_DIR, name));
  }
  const present = packageBytes(result.metafile);
  if (process.env.MAIL_RELAY_BUNDLE_REPORT) {
    const largest = [...present].sort((a, b) => b[1] - a[1]).slice(0, 20);
    process.stderr.write(
      `${request.entry}:\n${largest.map(([name, bytes]) => `  ${(bytes / 1024).toFixed(0).padStart(5)} KB  ${name}`).join('\n')}\n`,
    );
  }
  const found = request.forbiddenPackages.filter((p) => present.has(p));
  if (found.length > 0) {
    process.stderr.write(
      `${request.entry}: the bundle contains ${found.join(', ')}, which this function must not carry\n`,
    );
    process.exit(1);
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
