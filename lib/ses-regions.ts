/**
 * Where Amazon SES receives mail. Receiving is a subset of SES's regions, and nothing fails at
 * deploy time in a region without it: the stack deploys, the MX record points at a host that does
 * not exist, and mail bounces. So the region is checked at synth.
 *
 * Source: AWS General Reference, "Amazon Simple Email Service endpoints and quotas", table
 * "Email receiving endpoints" (https://docs.aws.amazon.com/general/latest/gr/ses.html#ses_inbound_endpoints).
 * The list started as us-east-1, us-west-2 and eu-west-1 and has grown since; a region added after
 * this list was written can be used with `aws.skipRegionCheck: true`.
 */
export const SES_RECEIVING_REGIONS: readonly string[] = [
  'us-east-1',
  'us-east-2',
  'us-west-2',
  'ca-central-1',
  'eu-west-1',
  'eu-west-2',
  'eu-central-1',
  'ap-northeast-1',
  'ap-southeast-1',
  'ap-southeast-2',
  'ap-southeast-3',
];

/** The host a domain's MX record points at to have SES receive its mail. */
export function inboundSmtpHost(region: string): string {
  return `inbound-smtp.${region}.amazonaws.com`;
}

/** Null when SES receives mail in `region`, else the message that stops synth. */
export function receivingRegionProblem(region: string): string | null {
  if (SES_RECEIVING_REGIONS.includes(region)) return null;
  return (
    `Amazon SES does not receive mail in ${region}. Deploy to one of ${SES_RECEIVING_REGIONS.join(', ')} ` +
    '(set aws.region in mail-relay.config.json, or AWS_REGION), or set aws.skipRegionCheck: true if SES has ' +
    'added receiving in this region since this list was written.'
  );
}
