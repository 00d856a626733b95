/**
 * Custom resource `Custom::SesActiveReceiptRuleSet`: makes our receipt rule set the active one.
 * CloudFormation can create a rule set but not activate it, and SES has exactly one active rule set
 * per account and region, so this is a small Lambda-backed resource rather than AwsCustomResource:
 * - Create/Update refuse to take over another active rule set unless told to (ReplaceActive), so a
 *   deploy never silently switches off someone else's mail flow;
 * - Delete deactivates only when the active rule set is still ours: if someone has since activated
 *   another one, deleting the stack must leave it alone. AwsCustomResource can only make an
 *   unconditional call.
 * It answers CloudFormation itself (the pre-signed ResponseURL) instead of going through the
 * Provider framework, which would add a second function and role for two API calls.
 *
 * Runs on the Lambda Node.js runtime and takes SES v1 (receipt rules are not in SESv2) from the SDK
 * the runtime ships, which keeps this function's asset a few kilobytes.
 * https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { CloudFormationCustomResourceEvent, CloudFormationCustomResourceResponse } from 'aws-lambda';

/** The two SES v1 calls this resource makes. */
export interface ActiveRuleSetApi {
  /** The name of the active receipt rule set, or null when none is active. */
  activeRuleSetName(): Promise<string | null>;
  /** Activates `name`; null deactivates every rule set. */
  setActive(name: string | null): Promise<void>;
}

export interface Outcome {
  readonly physicalResourceId: string;
  readonly data: Record<string, string>;
}

const PHYSICAL_ID_PREFIX = 'active-receipt-rule-set:';

function stringProperty(props: Record<string, unknown>, key: string): string {
  const v = props[key];
  if (typeof v !== 'string' || v === '') throw new Error(`property ${key} must be a non-empty string`);
  return v;
}

/** The decision logic, separate from SES and from the response protocol so tests drive it directly. */
export async function onEvent(
  event: CloudFormationCustomResourceEvent,
  ses: ActiveRuleSetApi,
): Promise<Outcome> {
  const props = event.ResourceProperties as Record<string, unknown>;
  const name = stringProperty(props, 'RuleSetName');
  if (event.RequestType === 'Delete') {
    // A resource whose Create failed was never ours to deactivate.
    if (!event.PhysicalResourceId.startsWith(PHYSICAL_ID_PREFIX)) {
      return { physicalResourceId: event.PhysicalResourceId, data: {} };
    }
    const active = await ses.activeRuleSetName();
    if (active === name) await ses.setActive(null);
    return { physicalResourceId: event.PhysicalResourceId, data: { Deactivated: String(active === name) } };
  }

  const replaceActive = props.ReplaceActive === 'true' || props.ReplaceActive === true;
  const previousName =
    event.RequestType === 'Update'
      ? (event.OldResourceProperties as Record<string, unknown>).RuleSetName
      : undefined;
  const active = await ses.activeRuleSetName();
  const ours = active === null || active === name || active === previousName;
  if (!ours && !replaceActive) {
    throw new Error(
      `SES receipt rule set "${active}" is active in this region, and SES allows only one. ` +
        'Set "aws": {"replaceActiveRuleSet": true} in mail-relay.config.json to replace it with ours ' +
        '(mail for its rules stops), or move its rules elsewhere first.',
    );
  }
  await ses.setActive(name);
  return {
    physicalResourceId: `${PHYSICAL_ID_PREFIX}${name}`,
    data: { PreviouslyActive: active ?? '' },
  };
}

interface SesV1Module {
  SESClient: new (config: object) => { send(command: unknown): Promise<unknown> };
  DescribeActiveReceiptRuleSetCommand: new (input: object) => unknown;
  SetActiveReceiptRuleSetCommand: new (input: { RuleSetName?: string }) => unknown;
}

// A variable specifier keeps esbuild and tsc from resolving it: the module comes from the runtime.
const SES_V1_MODULE = '@aws-sdk/client-ses';

async function sesFromRuntime(): Promise<ActiveRuleSetApi> {
  const sdk = (await import(SES_V1_MODULE)) as SesV1Module;
  const client = new sdk.SESClient({});
  return {
    async activeRuleSetName() {
      const out = (await client.send(new sdk.DescribeActiveReceiptRuleSetCommand({}))) as {
        Metadata?: { Name?: string };
      };
      return out.Metadata?.Name ?? null;
    },
    async setActive(name) {
      await client.send(new sdk.SetActiveReceiptRuleSetCommand(name === null ? {} : { RuleSetName: name }));
    },
  };
}

/**
 * PUTs the response to CloudFormation's pre-signed URL (signed with an empty content type).
 * CloudFormation's URLs are https; plain http is for the tests' local server.
 */
export function sendResponse(url: string, body: CloudFormationCustomResourceResponse): Promise<void> {
  const payload = JSON.stringify(body);
  const request = url.startsWith('http:') ? httpRequest : httpsRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'PUT', headers: { 'content-type': '', 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode && res.statusCode < 300
            ? resolve()
            : reject(new Error(`response PUT: ${res.statusCode}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** The Lambda handler around an SES API (injected by tests); it always answers CloudFormation. */
export function createHandler(ses: () => Promise<ActiveRuleSetApi>) {
  return async (event: CloudFormationCustomResourceEvent): Promise<void> => {
    const common = {
      StackId: event.StackId,
      RequestId: event.RequestId,
      LogicalResourceId: event.LogicalResourceId,
    };
    let response: CloudFormationCustomResourceResponse;
    try {
      const outcome = await onEvent(event, await ses());
      response = {
        ...common,
        Status: 'SUCCESS',
        PhysicalResourceId: outcome.physicalResourceId,
        Data: outcome.data,
      };
    } catch (err) {
      console.error(err);
      response = {
        ...common,
        Status: 'FAILED',
        Reason: err instanceof Error ? err.message : String(err),
        // Keep an existing id (so a failed Update does not look like a replacement); a failed Create
        // gets an id that Delete recognises as never having activated anything.
        PhysicalResourceId:
          'PhysicalResourceId' in event ? event.PhysicalResourceId : `failed:${event.RequestId}`,
      };
    }
    // Without this answer CloudFormation waits an hour; if it cannot be sent, the error is logged by Lambda.
    await sendResponse(event.ResponseURL, response);
  };
}

export const handler = createHandler(sesFromRuntime);
