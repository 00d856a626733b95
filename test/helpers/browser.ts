/**
 * Headless Chromium for the web inbox's tests, driven by playwright-core (which downloads no
 * browser: it drives Debian's `chromium`, or the one at $MAIL_RELAY_CHROMIUM).
 */
import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';
import { requireOrAnnounce } from './env.ts';

export { until } from './until.ts';

export const CHROMIUM = process.env.MAIL_RELAY_CHROMIUM ?? '/usr/bin/chromium';

/** True when Chromium is there; otherwise one loud line (or a failure under MAIL_RELAY_FULL_TESTS). */
export function chromiumAvailable(what: string): boolean {
  return requireOrAnnounce(
    existsSync(CHROMIUM),
    what,
    `needs Chromium: apt-get install chromium (or set MAIL_RELAY_CHROMIUM to its path)`,
  );
}

/**
 * A fresh headless Chromium. The flags keep it off the network it would otherwise call at start
 * (this machine's network is closed) and let it run as root.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
