/**
 * `npx cdk synth`, the real CLI in a child process, as a newcomer (or CI, from a clean checkout)
 * runs it: offline, with no AWS credentials or profile in the environment. With the example
 * configuration, with 3 domains and 250 recipients (the receipt rules split at 100), and with a bad
 * configuration, which must stop synth naming every wrong path.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PROJECT_ROOT } from '../helpers/env.ts';
import { type ProcessResult, run } from '../helpers/process.ts';
import { FUNCTION_ENV, runBundle } from './bundle-runner.ts';
import { EXAMPLE_CONFIG_PATH, manyRecipientsConfig, type Resources } from './infra-helpers.ts';

const SYNTH_TIMEOUT_MS = 180_000;
const work = mkdtempSync(join(tmpdir(), 'mail-relay-synth-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** The environment of a machine that has never seen AWS: no credentials, no profile, no metadata service. */
function offlineEnv(configPath: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('AWS_') && !k.startsWith('CDK_')) env[k] = v;
  }
  return {
    ...env,
    AWS_CONFIG_FILE: join(work, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-aws-credentials'),
    AWS_EC2_METADATA_DISABLED: 'true',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
    MAIL_RELAY_CONFIG: configPath,
  };
}

/** `validation: false` skips CDK's built-in CloudFormation schema check (cdk-nag still runs): ~10 s of CPU. */
async function cdkSynth(configPath: string, outdir: string, validation = true): Promise<ProcessResult> {
  const args = ['--no-install', 'cdk', 'synth', '--no-notices', '--quiet', '--output', outdir];
  if (!validation) args.push('--no-validation');
  return run('npx', args, {
    cwd: PROJECT_ROOT,
    env: offlineEnv(configPath),
    timeoutMs: SYNTH_TIMEOUT_MS,
  });
}

interface Synthesized {
  readonly result: ProcessResult;
  readonly outdir: string;
  template(): { Resources: Resources; Outputs: Record<string, unknown> };
}

async function synthesize(name: string, configPath: string, validation: boolean): Promise<Synthesized> {
  const outdir = join(work, name);
  const result = await cdkSynth(configPath, outdir, validation);
  return {
    result,
    outdir,
    template: () =>
      JSON.parse(readFileSync(join(outdir, 'MailRelay.template.json'), 'utf8')) as {
        Resources: Resources;
        Outputs: Record<string, unknown>;
      },
  };
}

function explain(r: ProcessResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-6000)}`;
}

function ofType(resources: Resources, type: string) {
  return Object.values(resources).filter((r) => r.Type === type);
}

describe('npx cdk synth (offline, no credentials)', () => {
  let example: Synthesized;
  let many: Synthesized;

  before(async () => {
    const manyPath = join(work, 'many.config.json');
    writeFileSync(manyPath, JSON.stringify(manyRecipientsConfig(3, 250), null, 2));
    // One after the other: each bundles with esbuild, and the machine has two cores.
    example = await synthesize('example', EXAMPLE_CONFIG_PATH, true);
    // The schema check already ran on the same resource types above.
    many = await synthesize('many', manyPath, false);
  });

  it('synthesizes the example configuration', () => {
    assert.equal(example.result.code, 0, explain(example.result));
    const { Resources, Outputs } = example.template();
    assert.equal(ofType(Resources, 'AWS::SES::ReceiptRule').length, 1);
    assert.equal(ofType(Resources, 'Custom::SesActiveReceiptRuleSet').length, 1);
    for (const o of ['ApiUrl', 'BucketName', 'TableName', 'RuleSetName']) assert.ok(o in Outputs, o);
  });

  it('did no context look-up (nothing to fetch from an account) and cdk-nag reported nothing unacknowledged', () => {
    for (const s of [example, many]) {
      assert.equal(s.result.code, 0, explain(s.result));
      const manifest = JSON.parse(readFileSync(join(s.outdir, 'manifest.json'), 'utf8')) as {
        missing?: unknown[];
      };
      assert.equal(manifest.missing, undefined, `look-ups requested: ${JSON.stringify(manifest.missing)}`);
      const report = JSON.parse(readFileSync(join(s.outdir, 'validation-report.json'), 'utf8')) as {
        pluginReports: { pluginName: string; violations: unknown[] }[];
      };
      for (const r of report.pluginReports) {
        assert.deepEqual(r.violations, [], `${r.pluginName} found problems in ${s.outdir}`);
      }
      assert.ok(
        report.pluginReports.some((r) => r.pluginName === 'AwsSolutions'),
        'cdk-nag did not run in the CDK app',
      );
    }
  });

  it('bundled every function with esbuild (ESM, no better-sqlite3)', () => {
    const assets = readdirSync(example.outdir).filter((d) => d.startsWith('asset.'));
    const bundles = assets.map((d) => join(example.outdir, d, 'index.mjs')).filter((f) => existsSync(f));
    // The router, the API, the send function and the rule set activator.
    assert.equal(bundles.length, 4, `bundles: ${assets.join(', ')}`);
    for (const b of bundles) assert.doesNotMatch(readFileSync(b, 'utf8'), /better-sqlite3/, b);
  });

  it('with 3 domains and 250 recipients: three chained rules of at most 100 recipients, nobody lost', () => {
    assert.equal(many.result.code, 0, explain(many.result));
    const { Resources } = many.template();
    const rules = ofType(Resources, 'AWS::SES::ReceiptRule').map(
      (r) => r.Properties?.Rule as { Recipients: string[]; TlsPolicy: string },
    );
    assert.deepEqual(
      rules.map((r) => r.Recipients.length).sort((a, b) => b - a),
      [100, 100, 50],
    );
    const all = rules.flatMap((r) => r.Recipients);
    assert.equal(new Set(all).size, 250);
    assert.ok(all.includes('user250@domain1.example'));
    assert.equal(ofType(Resources, 'AWS::SES::EmailIdentity').length, 3);
    const mx = Object.entries(many.template().Outputs).filter(([, o]) =>
      JSON.stringify(o).includes(' MX 10 '),
    );
    assert.equal(mx.length, 3, 'one MX record to create per domain');
    assert.match(JSON.stringify(mx), /inbound-smtp\.eu-west-1\.amazonaws\.com/);
  });

  it('a configuration too large for Lambda environment variables (4 KB) ships inside the bundle', async () => {
    const config = JSON.stringify(manyRecipientsConfig(3, 250));
    assert.ok(config.length > 4096, `the test configuration is only ${config.length} bytes`);
    const bundles = readdirSync(many.outdir)
      .filter((d) => d.startsWith('asset.'))
      .map((d) => join(many.outdir, d, 'index.mjs'))
      .filter((f) => existsSync(f) && readFileSync(f, 'utf8').includes('user250@domain1.example'));
    assert.equal(bundles.length, 3, 'the router, API and send bundles carry the configuration');
    // ... and each validates it at cold start in a fresh node process (bundles.test.ts invokes them).
    for (const b of bundles) {
      const r = await runBundle(dirname(b), FUNCTION_ENV);
      assert.equal(r.code, 0, r.output);
    }
  });

  it('a bad configuration stops synth, naming each wrong path', async () => {
    const bad = join(work, 'bad.config.json');
    writeFileSync(
      bad,
      JSON.stringify({
        domains: ['not a domain'],
        routes: [{ match: 'a@example.com', action: 'deliver', to: ['nope'] }],
        aws: { region: 'nowhere', logRetentionDays: 31 },
        typo: true,
      }),
    );
    const r = await cdkSynth(bad, join(work, 'bad'), false);
    assert.notEqual(r.code, 0);
    for (const path of [
      'domains[0]',
      'routes[0].to[0]',
      'aws.region',
      'aws.logRetentionDays',
      '(root): Unrecognized key: "typo"',
    ]) {
      assert.ok(r.stderr.includes(`- ${path}`), `stderr does not name ${path}:\n${r.stderr}`);
    }
    assert.doesNotMatch(r.stderr, /at .*\(.*\.ts:\d+:\d+\)/, 'a stack trace instead of the message');
  });
});
