/**
 * Shared by the infra suites: configurations, an in-process synth without bundling (fast), and
 * typed access to the synthesized template.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { MailRelayStack } from '../../lib/mail-relay-stack.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';

export const EXAMPLE_CONFIG_PATH = join(PROJECT_ROOT, 'mail-relay.config.example.json');
export const TEST_ENV = { region: 'us-east-1', account: '123456789012' } as const;

export function exampleConfig(): Record<string, unknown> {
  return JSON.parse(readFileSync(EXAMPLE_CONFIG_PATH, 'utf8')) as Record<string, unknown>;
}

/**
 * `domains` domains and `recipients` mailboxes spread over them, plus-addressing off and no
 * catch-all, so every address is listed in the receipt rules (the case that needs splitting).
 */
export function manyRecipientsConfig(domains = 3, recipients = 250): Record<string, unknown> {
  const names = Array.from({ length: domains }, (_, i) => `domain${i + 1}.example`);
  const mailboxes = Array.from({ length: recipients }, (_, i) => `user${i + 1}@${names[i % domains]}`);
  return {
    domains: names,
    mailboxes,
    plusAddressing: { enabled: false },
    aws: { region: 'eu-west-1' },
  };
}

/** Every optional AWS setting switched on, and mailbox retention (which adds the retention sweep). */
export function fullConfig(): Record<string, unknown> {
  return {
    ...exampleConfig(),
    domains: ['example.com', 'example.org'],
    retention: { inboundDays: 30, mailboxDays: 365 },
    aws: {
      region: 'eu-west-1',
      hostedZoneIds: { 'example.com': 'Z0123456789ABC', 'example.org': 'Z0987654321XYZ' },
      alarmEmail: 'ops@elsewhere.example',
      retainData: false,
      corsOrigins: ['https://app.example.com'],
      replaceActiveRuleSet: true,
      logRetentionDays: 90,
      apiThrottle: { rateLimit: 5, burstLimit: 10 },
      sesConfigurationSet: 'mail-events',
      routerConcurrency: 5,
    },
  };
}

/** Synthesizes the stack in process without bundling (the handler code is not built). */
export function synthStack(
  config: unknown,
  env: { region?: string; account?: string } = { ...TEST_ENV, region: regionOf(config) },
): { app: App; stack: MailRelayStack; template: Template } {
  // The built-in CloudFormation schema validation costs ~10 s per synth; the CLI synth suite runs it.
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] }, builtinCloudFormationValidation: false });
  const stack = new MailRelayStack(app, 'MailRelayTest', { env, config, configSource: 'test config' });
  return { app, stack, template: Template.fromStack(stack) };
}

/** `aws.region` of a configuration, else the test region (as bin/app.ts does with CDK_DEFAULT_REGION). */
function regionOf(config: unknown): string {
  const aws = (config as { aws?: { region?: unknown } } | null)?.aws;
  return typeof aws?.region === 'string' ? aws.region : TEST_ENV.region;
}

export type Resources = Record<
  string,
  { Type: string; Properties?: Record<string, unknown>; DependsOn?: string[] }
>;

/** A resource's Properties; fails the test when the resource or its properties are missing. */
export function propertiesOf(resource: Resources[string] | undefined): Record<string, unknown> {
  if (!resource?.Properties) throw new Error('resource (or its Properties) not found');
  return resource.Properties;
}

export function resourcesOfType(template: Template, type: string): Resources {
  return template.findResources(type) as Resources;
}

export interface PolicyStatementJson {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, Record<string, unknown>>;
  Principal?: unknown;
}

/** The statements of the inline policies attached to the role whose logical id starts with `rolePrefix`. */
export function statementsOfRole(template: Template, rolePrefix: string): PolicyStatementJson[] {
  const policies = resourcesOfType(template, 'AWS::IAM::Policy');
  const out: PolicyStatementJson[] = [];
  for (const p of Object.values(policies)) {
    const roles = (p.Properties?.Roles ?? []) as { Ref?: string }[];
    if (!roles.some((r) => r.Ref?.startsWith(rolePrefix))) continue;
    const doc = p.Properties?.PolicyDocument as { Statement: PolicyStatementJson[] };
    out.push(...doc.Statement);
  }
  return out;
}

export function actionsOf(s: PolicyStatementJson): string[] {
  return Array.isArray(s.Action) ? s.Action : [s.Action];
}

/** A resource reference rendered as text, for matching (`{"Fn::Join": …}` flattened). */
export function resourceText(resource: unknown): string {
  return JSON.stringify(resource);
}
