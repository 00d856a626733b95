/**
 * Quoted local parts in MAIL FROM and RCPT TO (RFC 5321 §4.1.2 Quoted-string: `<"john doe"@example.com>`).
 *
 * smtp-server splits the command on whitespace before it reads the path, so a quoted local part with
 * a space in it was `501 Bad address syntax` (a valid address: a sender may have one), and one without
 * kept its quotes (`"john"@example.com`, which is john@'s address, RFC 5321 §4.1.2). Here the quoted
 * local part is taken out of the command before smtp-server parses it (which it does for the rest:
 * the domain, the parameters, the checks it makes) and put back into what it returns in its canonical
 * form (`canonicalLocalPart`): without the quotes when it needs none, else quoted. Routing then treats
 * `"john"@` as john@, and answers a local part that needs its quotes with a 553 of its own (no mailbox
 * has one); a sender keeps it, in Return-Path too.
 */
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { canonicalLocalPart } from '../core/config.ts';

/** A path's opening `<`, an optional source route, then a quoted local part and its `@`. */
const QUOTED_PATH_RE = /^([A-Za-z]+ *[A-Za-z]+ *: *<(?:@[^:<>"]*:)?)("(?:[^"\\\r\n]|\\[^\r\n])*")@/;

/** What smtp-server's parser gets in place of a quoted local part: an atom it accepts. */
const PLACEHOLDER = 'quoted-local-part';

/** Makes `connection` read quoted local parts in MAIL FROM and RCPT TO (see the module comment). */
export function readQuotedLocalParts(connection: SMTPConnection): void {
  const parse = connection._parseAddressCommand.bind(connection);
  connection._parseAddressCommand = (name, command) => {
    const text = command.toString();
    const quoted = QUOTED_PATH_RE.exec(text);
    if (!quoted) return parse(name, command);
    const [whole, opening = '', local = ''] = quoted;
    const canonical = canonicalLocalPart(local);
    // Not a Quoted-string of RFC 5321 (a control character, 8-bit, a lone backslash): as smtp-server has it.
    if (canonical === null) return parse(name, command);
    const parsed = parse(name, `${opening}${PLACEHOLDER}@${text.slice(whole.length)}`);
    if (parsed === false || !parsed.address.startsWith(`${PLACEHOLDER}@`)) return parsed;
    parsed.address = `${canonical}${parsed.address.slice(PLACEHOLDER.length)}`;
    return parsed;
  };
}
