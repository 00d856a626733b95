/**
 * An Outbound that builds the real one on first use. The router sends only for `forward` routes,
 * failure notices excepted, and many configurations have none: loading the SES client only when a
 * message leaves keeps it out of the cold starts that deliver to mailboxes
 * (docs/adr/0012-lambda-bundles.md). A failed load is not remembered: the next send tries again.
 */
import type { Outbound, OutboundMessage, OutboundResult } from '../ports/outbound.ts';
import { loadOnce } from './load-once.ts';

export class LazyOutbound implements Outbound {
  /** The real outbound, loading it on the first call. */
  readonly outbound: () => Promise<Outbound>;

  /** `load` is called at most once per success (e.g. `() => import('./ses.ts').then(m => m.create())`). */
  constructor(load: () => Promise<Outbound>) {
    this.outbound = loadOnce(load);
  }

  async send(message: OutboundMessage): Promise<OutboundResult> {
    return (await this.outbound()).send(message);
  }
}
