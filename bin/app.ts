/** The CDK app (`npx cdk synth|deploy`): one stack, configured by mail-relay.config.json. */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError } from '../functions/core/errors.ts';
import { loadStackConfig } from '../lib/config-source.ts';
import { MailRelayStack } from '../lib/mail-relay-stack.ts';

const app = new App();
try {
  const { raw, source, aws } = loadStackConfig();
  new MailRelayStack(app, aws.stackName ?? 'MailRelay', {
    // Explicit region (SES receives mail in some regions only); no account means no look-ups either way.
    env: {
      region: aws.region ?? process.env.CDK_DEFAULT_REGION,
      account: aws.account ?? process.env.CDK_DEFAULT_ACCOUNT,
    },
    config: raw,
    configSource: source,
  });
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(err.message);
  process.exit(1);
}
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
