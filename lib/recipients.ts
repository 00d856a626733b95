/**
 * Which recipients the SES receipt rules list, and how they are split into rules.
 *
 * A domain is listed whole (`example.com`: every address at it) when the router may accept any
 * address there: a `*@domain` mailbox, a catch-all route, any regex route (it may match any domain),
 * or plus-addressing (SES matches recipients exactly, so `alice+tag@` would not match `alice@`).
 * Otherwise the domain's known addresses are listed one by one (not those the router refuses for good),
 * and SES itself refuses mail for any other address at SMTP time: nothing is stored, nothing is
 * bounced later. Under a domain-wide rule the router bounces what it refuses (docs/adr/0016).
 * https://docs.aws.amazon.com/ses/latest/DeveloperGuide/receiving-email-managing-receipt-rules.html
 */
import { type Config, domainOf } from '../functions/core/config.ts';
import { acceptsRecipient } from '../functions/core/routing.ts';

/** SES's limit on recipients per receipt rule (CreateReceiptRule: Recipients, 100 at most). */
export const MAX_RECIPIENTS_PER_RULE = 100;

/**
 * SES's limit on receipt rules per rule set (Amazon SES quotas, "Email receiving": 200 rules per
 * rule set), so at most 20,000 listed recipients.
 */
export const MAX_RECEIPT_RULES = 200;

/** The recipients, domain by domain, in configuration order. */
export function receiptRecipients(config: Config): string[] {
  const hasRegexRoute = config.routes.some((r) => r.match.kind === 'regex');
  const out: string[] = [];
  for (const domain of config.domains) {
    const wholeDomain =
      hasRegexRoute ||
      config.plusAddressing.enabled ||
      config.autoMailboxDomains.has(domain) ||
      config.routes.some((r) => r.match.kind === 'catchAll' && r.match.domain === domain);
    if (wholeDomain) {
      out.push(domain);
      continue;
    }
    const addresses = new Set<string>();
    for (const m of config.mailboxes) if (domainOf(m) === domain) addresses.add(m);
    for (const r of config.routes)
      if (r.match.kind === 'exact' && domainOf(r.match.address) === domain) addresses.add(r.match.address);
    // An address the router refuses for good (its first exact route a 5xx `reject`, or an alias to
    // refused addresses only) is left out: SES refuses it at RCPT (with SES's own reply text) instead
    // of accepting mail the router would then refuse. A 4xx refusal stays listed: SES's refusal would
    // be permanent.
    for (const a of [...addresses]) {
      const verdict = acceptsRecipient(config, a);
      if (!verdict.accept && verdict.code >= 500) addresses.delete(a);
    }
    out.push(...[...addresses].sort());
  }
  return out;
}

/** Splits recipients into rules of at most `max`, keeping order (so a domain's addresses stay together). */
export function splitIntoRules(recipients: readonly string[], max = MAX_RECIPIENTS_PER_RULE): string[][] {
  const rules: string[][] = [];
  for (let i = 0; i < recipients.length; i += max) rules.push(recipients.slice(i, i + max));
  return rules;
}
