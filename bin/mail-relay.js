#!/usr/bin/env node
// `npx mail-relay`: registers tsx so the TypeScript CLI runs without a build step.
import { register } from 'tsx/esm/api';

// The `--stack` commands load the AWS SDK, which prints nine lines on Node 20 about its releases after
// January 2027 needing Node 22: the lockfile pins a release that runs on 20 (see README, Node).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

register();
await import('./cli.ts');
