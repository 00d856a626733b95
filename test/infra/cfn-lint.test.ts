/**
 * cfn-lint (the CloudFormation linter, Python, 1.x) over synthesized templates: the resource
 * specification of each region SES receives mail in (types, properties, values, IAM policy
 * syntax, the template's quotas). CDK's own checks and cdk-nag see neither the per-region
 * specification nor the quotas: a template over 200 outputs synthesized, and failed at deploy
 * (that case, too slow to lint here, is deploy-limits.test.ts's).
 *
 * Needs `cfn-lint` on the PATH (`pipx install cfn-lint`); without it, one `!!! NOT RUN` line, and
 * a failure under MAIL_RELAY_FULL_TESTS=1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SES_RECEIVING_REGIONS } from '../../lib/ses-regions.ts';
import { hasCommand, requireOrAnnounce } from '../helpers/env.ts';
import { fullConfig, synthStack } from './infra-helpers.ts';

/**
 * Findings judged noise, each with its reason (docs/adr/0007-infrastructure.md, 2026-11-28).
 * W3005: CDK puts a function's role in its DependsOn although the function's `Role` already
 * refers to it (it also lists the role's default policy there, which is needed: the function must
 * not run before its permissions exist). Redundant, harmless.
 */
const IGNORED = ['W3005'];

interface Finding {
  readonly Filename: string;
  readonly Rule: { readonly Id: string };
  readonly Message: string;
  readonly Location: { readonly Path?: readonly (string | number)[] };
}

const work = mkdtempSync(join(tmpdir(), 'mail-relay-cfn-lint-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Lints the templates in ONE cfn-lint run (its start-up is most of the cost); findings by name. */
function lint(templates: Record<string, unknown>, regions: readonly string[]): Map<string, Finding[]> {
  const files = Object.entries(templates).map(([name, template]) => {
    const file = join(work, `${name}.json`);
    writeFileSync(file, JSON.stringify(template));
    return [name, file] as const;
  });
  const r = spawnSync(
    'cfn-lint',
    [
      '--format',
      'json',
      '--ignore-checks',
      ...IGNORED,
      '--regions',
      ...regions,
      '--',
      ...files.map(([, f]) => f),
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  // Exit status is a bit mask of the levels found (2 error, 4 warning, 8 info); JSON either way.
  assert.ok(r.stdout.trim().startsWith('['), `cfn-lint did not run: ${r.error ?? ''}${r.stderr}`);
  const findings = JSON.parse(r.stdout) as Finding[];
  return new Map(files.map(([name, file]) => [name, findings.filter((f) => f.Filename === file)]));
}

function describeFindings(findings: readonly Finding[] = []): string {
  return findings.map((f) => `${f.Rule.Id} ${(f.Location.Path ?? []).join('/')}: ${f.Message}`).join('\n');
}

/** A template cfn-lint must fault: 201 outputs (E6010) and a Lambda runtime long retired. */
function controlTemplate(): unknown {
  return {
    Resources: {
      Fn: {
        Type: 'AWS::Lambda::Function',
        Properties: {
          Runtime: 'nodejs8.10',
          Handler: 'index.handler',
          Role: 'arn:aws:iam::123456789012:role/r',
          Code: { ZipFile: 'x' },
        },
      },
    },
    Outputs: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`O${i}`, { Value: String(i) }])),
  };
}

const available = requireOrAnnounce(
  hasCommand('cfn-lint'),
  'cfn-lint over the synthesized templates (test/infra/cfn-lint.test.ts)',
  'install cfn-lint 1.x (pipx install cfn-lint)',
);

describe('cfn-lint', { skip: !available }, () => {
  let results: Map<string, Finding[]>;
  before(() => {
    results = lint(
      { full: synthStack(fullConfig()).template.toJSON(), control: controlTemplate() },
      SES_RECEIVING_REGIONS,
    );
  });

  it('every setting on (zones, alarm e-mail, CORS, retention sweep, …): clean in every region SES receives mail in', () => {
    const findings = results.get('full');
    assert.deepEqual(findings, [], describeFindings(findings));
  });

  it('does find problems (control: 201 outputs and a retired Lambda runtime)', () => {
    const ids = new Set((results.get('control') ?? []).map((f) => f.Rule.Id));
    assert.ok(ids.has('E6010'), `no finding about 201 outputs: ${[...ids].join(', ')}`);
    assert.ok(
      [...ids].some((id) => /^[EW]253/.test(id)),
      `no finding about the runtime: ${[...ids].join(', ')}`,
    );
  });
});
