/**
 * Hands the functions their configuration through MAIL_RELAY_CONFIG_JSON (what
 * functions/handlers/settings.ts reads) without a Lambda environment variable: those are limited to
 * 4 KB per function, all variables together, and a configuration with a few hundred mailboxes is
 * larger. The stack inlines the configuration into the bundle at build time (esbuild `define`, see
 * MailRelay), and this module, imported before the handler, puts it where settings.ts looks.
 * A variable set by hand in the Lambda console still wins, as an operator would expect.
 */
declare const __MAIL_RELAY_CONFIG_JSON__: string | undefined;

if (typeof __MAIL_RELAY_CONFIG_JSON__ === 'string' && process.env.MAIL_RELAY_CONFIG_JSON === undefined) {
  process.env.MAIL_RELAY_CONFIG_JSON = __MAIL_RELAY_CONFIG_JSON__;
}
