/**
 * cdk-nag acknowledgments (v3: CDK's own `Validations.acknowledge`). Every one names the exact finding
 * when the rule is granular, and carries its reason here, beside the resource it excuses.
 */
import { Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

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
  Validations.of(scope).acknowledge({ id: finding ? `${rule}[${finding}]` : rule, reason: reason.join(' ') });
}
