/** The constructs for a CDK app of your own (see README, "Deploy to AWS"). */

export { loadStackConfig, type StackConfig } from './config-source.ts';
export { MailRelay, type MailRelayProps } from './mail-relay.ts';
export { MailRelayStack, type MailRelayStackProps } from './mail-relay-stack.ts';
