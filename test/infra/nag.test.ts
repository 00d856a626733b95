/**
 * cdk-nag AwsSolutionsChecks over the stack: no unacknowledged finding, and every acknowledgment
 * carries a reason. A control stack with a known violation proves the check is really running.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { App, Stack, Validations } from 'aws-cdk-lib';
import { Queue } from 'aws-cdk-lib/aws-sqs';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { MailRelayStack } from '../../lib/mail-relay-stack.ts';
import { exampleConfig, fullConfig, manyRecipientsConfig, TEST_ENV } from './infra-helpers.ts';

const outdirs: string[] = [];
after(() => {
  for (const d of outdirs) rmSync(d, { recursive: true, force: true });
});

function nagApp(): App {
  const outdir = mkdtempSync(join(tmpdir(), 'mail-relay-nag-'));
  outdirs.push(outdir);
  const app = new App({
    outdir,
    context: { 'aws:cdk:bundling-stacks': [] },
    builtinCloudFormationValidation: false,
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return app;
}

/** Synthesizes; returns the validation failure text, or null when nothing is reported. */
function synthFindings(app: App): string | null {
  try {
    app.synth();
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

interface Acknowledged {
  readonly id: string;
  readonly reason: string;
}

function acknowledgmentsUnder(scope: IConstruct): Acknowledged[] {
  const out: Acknowledged[] = [];
  for (const c of scope.node.findAll()) {
    for (const entry of c.node.metadata) {
      if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
      // One entry per construct: acknowledged id -> reason.
      for (const [id, reason] of Object.entries(entry.data as Record<string, string>))
        out.push({ id, reason });
    }
  }
  return out;
}

const configs = {
  example: exampleConfig(),
  'every aws setting on (zones, alarm e-mail, CORS, retainData false, retention sweep)': fullConfig(),
  '3 domains, 250 recipients': manyRecipientsConfig(),
};

describe('cdk-nag AwsSolutionsChecks', () => {
  for (const [name, config] of Object.entries(configs)) {
    it(`reports nothing unacknowledged: ${name}`, () => {
      const app = nagApp();
      const aws = (config as { aws?: { region?: string } }).aws;
      const stack = new MailRelayStack(app, 'Nagged', {
        env: { ...TEST_ENV, region: aws?.region ?? TEST_ENV.region },
        config,
      });
      assert.equal(synthFindings(app), null);
      const report = JSON.parse(readFileSync(join(app.outdir, 'validation-report.json'), 'utf8')) as {
        pluginReports: {
          pluginName: string;
          conclusion: string;
          violations: unknown[];
          suppressedViolations?: { ruleName: string; reason: string }[];
        }[];
      };
      for (const r of report.pluginReports) {
        assert.equal(r.conclusion, 'success', r.pluginName);
        assert.deepEqual(r.violations, [], `${r.pluginName}: warnings count too`);
        for (const v of r.suppressedViolations ?? []) {
          // A reason says why, with evidence: not a placeholder.
          assert.ok(v.reason.length >= 80, `reason too thin for ${v.ruleName}: ${v.reason}`);
        }
      }

      const acks = acknowledgmentsUnder(stack);
      assert.ok(acks.length > 0);
      for (const a of acks) {
        assert.match(a.id, /^AwsSolutions::AwsSolutions-[A-Z]+\d+(\[.+\])?$/, `acknowledgment id ${a.id}`);
        assert.ok(a.reason.length >= 80, `reason too thin for ${a.id}: ${a.reason}`);
      }
      // Acknowledgments are exact findings wherever the rule allows it: no blanket IAM5.
      assert.ok(
        !acks.some((a) => a.id.endsWith('AwsSolutions-IAM5')),
        'IAM5 acknowledged without naming the finding',
      );
    });
  }

  it('does report a violation (control: an SQS queue without TLS enforcement or DLQ)', () => {
    const app = nagApp();
    const stack = new Stack(app, 'Control', { env: TEST_ENV });
    new Queue(stack, 'Unsafe');
    assert.ok(synthFindings(app), 'cdk-nag reported nothing for a non-compliant queue');
    const report = readFileSync(join(app.outdir, 'validation-report.json'), 'utf8');
    assert.match(report, /AwsSolutions-SQS3/);
    assert.match(report, /AwsSolutions-SQS4/);
  });
});
