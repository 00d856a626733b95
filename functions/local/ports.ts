/**
 * Where the local servers listen by default, on 127.0.0.1; each has its environment variable.
 * A module of its own so that commands needing only the numbers load nothing else.
 */
/** `MAIL_RELAY_SMTP_PORT`: the SMTP listener of `dev`. */
export const DEFAULT_SMTP_PORT = 2525;
/** `MAIL_RELAY_API_PORT`: the HTTP API of `dev`. */
export const DEFAULT_API_PORT = 8025;
/** `MAIL_RELAY_POP3_PORT`: `mail-relay pop3`. */
export const DEFAULT_POP3_PORT = 1110;
