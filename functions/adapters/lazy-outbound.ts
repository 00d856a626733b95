/**
 * An Outbound that builds the real one on first use. The router sends only for `forward` routes,
 * failure notices excepted, and many configurations have none: loading the SES client only when a
 * message leaves keeps it out of the cold starts that deliver to mailboxes
 * (docs/adr/0012-lambda-bundles.md). A failed load is not remembered: the next send tries again.
 */
import type { Outbound, OutboundMessage } from '../ports/outbound.ts';

export class LazyOutbound implements Outbound {
  private loading: Promise<Outbound> | undefined;

  /** `load` is called at most once per success (e.g. `() => import('./ses.ts').then(m => m.create())`). */
  constructor(private readonly load: () => Promise<Outbound>) {}

  /** The real outbound, loading it on the first call. */
  outbound(): Promise<Outbound> {
    if (this.loading === undefined) {
      const loading = this.load();
      this.loading = loading;
      loading.catch(() => {
        if (this.loading === loading) this.loading = undefined;
      });
    }
    return this.loading;
  }

  async send(message: OutboundMessage): Promise<{ messageId: string }> {
    return (await this.outbound()).send(message);
  }
}
