/** MailParser: raw MIME bytes to our own parsed types. Adapter: mailparser. */
import type { ParseResult } from '../core/message.ts';

export interface MailParser {
  /** Never throws for bad content: a message that cannot be parsed gives `{ok: false, error}`. */
  parse(raw: Buffer): Promise<ParseResult>;
}
