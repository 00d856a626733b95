/**
 * cdk-nag acknowledgments (v3: CDK's own `Validations.acknowledge`). Every one names the exact finding
 * when the rule is granular, and carries its reason here, beside the resource it excuses.
 */
import { Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/** The validation plugin name of cdk-nag's AwsSolutionsChecks pack. */
export const NAG_PLUGIN = 'AwsSolutions';

/**
 * Acknowledges `rule` on `scope` and everything below it; with `finding`, only that finding
 * (`AwsSolutions-IAM5[Resource::*]`), so a new wildcard added later is still reported.
 */
export function acknowledge(
  scope: IConstruct,
  rule: string,
  finding: string | null,
  reason: readonly string[],
): void {
  // `AwsSolutions::` names the plugin (cdk-nag's pack); without a known prefix CDK would file the
  // acknowledgment under annotations.
  const id = `${NAG_PLUGIN}::${finding ? `${rule}[${finding}]` : rule}`;
  Validations.of(scope).acknowledge({ id, reason: reason.join(' ') });
}
