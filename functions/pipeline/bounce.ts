/**
 * Bounces: mail refused after it was accepted goes back to its sender as a delivery status
 * notification, once, and only where that cannot be backscatter (docs/adr/0016-bounces.md).
 *
 * In AWS, SES accepts every address a domain-wide receipt rule covers (plus-addressing, catch-alls
 * and regex routes need one), so the router finds out only afterwards that an address has no
 * mailbox, or that a `reject` route or policy refuses it. Locally the listener refuses those at
 * RCPT and there is nothing to bounce (RouterDeps.bouncer is absent).
 */
import { type Config, domainOf } from '../core/config.ts';
import { errorMessage } from '../core/errors.ts';
import { recipientSetId } from '../core/ids.ts';
import { type Decision, resolveRecipient, type Verdicts } from '../core/routing.ts';
import type { BouncedRecipient, Bouncer } from '../ports/bouncer.ts';
import type { MailboxIndex } from '../ports/mailbox-index.ts';

/** SES bounces mail it received in the last 24 hours; an hour is left for retries and clock skew. */
export const BOUNCE_WINDOW_MS = 23 * 60 * 60 * 1000;
/** Details of `bounceRejections` that the metrics count. */
export const BOUNCED_PREFIX = 'bounced as ';
export const BOUNCE_FAILED_PREFIX = 'bounce failed: ';

/** A claim older than this is taken to be from a router that crashed mid-send (ClaimSendOptions). */
const BOUNCE_LEASE_MS = 5 * 60 * 1000;

/** The detail of a 4xx refusal: no notification (the sender would wait to retry a delivery that never comes). */
export const TEMPORARY_NOT_BOUNCED = 'not bounced: a temporary (4xx) refusal';
/** The detail of a refusal of one destination of a recipient whose mail reached another (an alias). */
export const PARTLY_DELIVERED_NOT_BOUNCED =
  "not bounced: the recipient's mail was delivered to another of its destinations";

type Rejection = Extract<Decision, { kind: 'reject' }>;

/** Why a message's refusals are not bounced, or null when they may be. */
export function whyNotBounce(
  mailFrom: string,
  verdicts: Verdicts,
  receivedAt: Date,
  now: Date,
): string | null {
  const from = mailFrom.trim().replace(/^<|>$/g, '');
  // A null reverse-path is a bounce itself (RFC 5321 §4.5.5); a mailer-daemon is one by convention.
  if (from === '' || /^mailer-daemon@/i.test(from)) return 'the sender is a null reverse-path';
  // The notification goes to the return path: bounced only when SPF says that domain sent the mail,
  // so a forged sender never gets it (backscatter); spam and viruses are never answered.
  if (verdicts.spf !== 'PASS') return `the return path is not authenticated (SPF ${verdicts.spf})`;
  if (verdicts.spam !== 'PASS') return `the spam verdict is ${verdicts.spam}`;
  if (verdicts.virus !== 'PASS') return `the virus verdict is ${verdicts.virus}`;
  if (now.getTime() - receivedAt.getTime() > BOUNCE_WINDOW_MS) {
    return 'received more than 23 hours ago (SES bounces within 24)';
  }
  return null;
}

export interface BounceArgs {
  readonly sesMessageId: string;
  readonly mailFrom: string;
  readonly verdicts: Verdicts;
  readonly receivedAt: Date;
  /** Every `reject` decision of the message. */
  readonly rejections: readonly Rejection[];
  readonly now?: Date;
}

/**
 * Bounces a message's refused recipients in one notification, at most once: recipients whose every
 * decision is a refusal, at least one of them permanent (5xx). A recipient whose mail also reached a
 * mailbox or a forward (an alias to a delivered address and a refused one) is not bounced. The send
 * record is keyed by the message and the set of recipients bounced, so an SQS redelivery or a replay
 * does not bounce again, and a second notification of the same message (a second receipt rule)
 * bounces only what it refuses. Never throws for the bounce itself: the refusal stands whatever
 * happens to its notice, and the rest of the message must not be retried for it.
 * Returns, for each refused recipient, what happened (the outcomes' `detail`).
 */
export async function bounceRejections(
  deps: { readonly bouncer: Bouncer; readonly index: MailboxIndex; readonly config: Config },
  args: BounceArgs,
): Promise<Map<string, string>> {
  const now = args.now ?? new Date();
  const byRecipient = new Map<string, Rejection[]>();
  for (const r of args.rejections) byRecipient.set(r.recipient, [...(byRecipient.get(r.recipient) ?? []), r]);
  const details = new Map<string, string>();
  const recipients: BouncedRecipient[] = [];
  for (const [recipient, refusals] of byRecipient) {
    if (!resolveRecipient(deps.config, recipient, args.verdicts).every((d) => d.kind === 'reject')) {
      details.set(recipient, PARTLY_DELIVERED_NOT_BOUNCED);
      continue;
    }
    const permanent = refusals.find((r) => r.code >= 500 && r.code < 600);
    if (permanent === undefined) {
      details.set(recipient, TEMPORARY_NOT_BOUNCED);
      continue;
    }
    recipients.push({ address: recipient, code: permanent.code, message: permanent.message });
  }
  const [first] = recipients;
  if (first === undefined) return details;
  const tell = (detail: string) => {
    for (const r of recipients) details.set(r.address, detail);
    return details;
  };
  const why = whyNotBounce(args.mailFrom, args.verdicts, args.receivedAt, now);
  if (why !== null) return tell(`not bounced: ${why}`);

  const key = `${args.sesMessageId}:bounce:${recipientSetId(recipients.map((r) => r.address))}`;
  const claim = await deps.index.claimSend(key, { now, leaseMs: BOUNCE_LEASE_MS });
  if (!claim.claimed) {
    return tell(
      claim.record.state === 'sent'
        ? `bounced before as ${claim.record.providerMessageId ?? '?'}`
        : 'not bounced: another router is bouncing it',
    );
  }
  let sent: { messageId: string };
  try {
    sent = await deps.bouncer.bounce({
      sesMessageId: args.sesMessageId,
      from: `mailer-daemon@${domainOf(first.address)}`,
      recipients,
      explanation: explanationOf(recipients),
    });
  } catch (err) {
    const error = errorMessage(err);
    // Recorded so that a later processing (a replay) tries again; if even that fails, the claim
    // stays pending and is taken again once its lease ends.
    await deps.index.finishSend(key, { state: 'failed', error }, now).catch(() => undefined);
    return tell(`${BOUNCE_FAILED_PREFIX}${error}`);
  }
  try {
    await deps.index.finishSend(key, { state: 'sent', providerMessageId: sent.messageId }, now);
  } catch (err) {
    // Sent all the same: say so. The claim stays pending; a processing after its lease may bounce
    // again (at least once, as forwards, ClaimSendOptions).
    const error = errorMessage(err);
    return tell(`${BOUNCED_PREFIX}${sent.messageId} (its send record was not updated: ${error})`);
  }
  return tell(`${BOUNCED_PREFIX}${sent.messageId}`);
}

/** Messages bounced now, and bounces that failed, among results' refusals (one per message). */
export function countBounces(
  results: readonly {
    readonly outcomes: readonly { readonly status: string; readonly detail?: string | undefined }[];
  }[],
): { bounced: number; failed: number } {
  let bounced = 0;
  let failed = 0;
  for (const r of results) {
    const details = new Set(r.outcomes.filter((o) => o.status === 'rejected').map((o) => o.detail ?? ''));
    for (const d of details) {
      if (d.startsWith(BOUNCED_PREFIX)) bounced++;
      if (d.startsWith(BOUNCE_FAILED_PREFIX)) failed++;
    }
  }
  return { bounced, failed };
}

function explanationOf(recipients: readonly BouncedRecipient[]): string {
  const lines = recipients.map((r) => `  <${r.address}>: ${r.code} ${r.message}`);
  return [
    'Your message could not be delivered to the following recipient(s):',
    '',
    ...lines,
    '',
    'This is a permanent error; the message was not delivered to them.',
  ].join('\n');
}
