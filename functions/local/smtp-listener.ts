/**
 * The local SMTP listener (npm smtp-server): the twin of SES's inbound endpoint.
 * Policy lives in the hooks, the protocol engine owns the wire:
 * - RCPT TO (RFC 5321 §4.1.1.3): only recipients the config routes; others 550 5.1.1, never an open relay;
 *   `reject` routes answer with their own code and text. At most `MAX_RECIPIENTS` per message (452 4.5.3
 *   beyond, RFC 5321 §4.5.3.1.10), and a connection whose recipients cost too much routing time (a
 *   backtracking regex route) is closed with 421 (`RCPT_SLOW_ROUTING_BUDGET_MS`).
 * - SIZE (RFC 1870): advertised; MAIL FROM with a larger SIZE and DATA overflow both get 552.
 * - MAIL and RCPT parameters other than SIZE, BODY and DSN's get 555 (RFC 5321 §4.1.1.11).
 * - DATA: `250` only after the message is durable (appended to the ingest journal, or fsynced in
 *   `sync` durability) and the router has committed it; see docs/adr/0011-ingest-journal.md.
 */
import type { AddressInfo } from 'node:net';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { asciiDomain, type Config, canonicalAddress } from '../core/config.ts';
import { isOutOfDescriptors, isStorageFull, MailRelayError, SmtpRejectError } from '../core/errors.ts';
import { acceptsRecipient, qualifyRecipient } from '../core/routing.ts';
import type { RouteResult, RouterDeps } from '../pipeline/router.ts';
import { clearStaleSpool, DataSpool } from './data-spool.ts';
import { SMTP_MESSAGE_OUT_OF_RESOURCES, SMTP_SESSION_OUT_OF_RESOURCES } from './descriptor-limit.ts';
import { ingest } from './ingest.ts';
import { PromptGreetingSMTPServer } from './prompt-greeting-server.ts';

export interface SmtpListenerOptions {
  readonly host?: string;
  readonly port: number;
  /** Called after each accepted message (logging, the API's long-poll wake-up). */
  readonly onDelivered?: (result: RouteResult) => void;
  readonly onError?: (err: unknown) => void;
  /**
   * Called when the routing refuses a recipient at RCPT (a domain we do not receive for, a `reject`
   * route, 5xx or 4xx as configured) and when a message over the size limit is refused after its
   * DATA. The sender got the reply; a test suite whose mailer swallows it learns from the relay's
   * log why its mail never arrived.
   */
  readonly onRefused?: (refusal: SmtpRefusal) => void;
  /**
   * Milliseconds before the 220 greeting (smtp-server's early-talker check). 0 on loopback: the check
   * protects public MXes from spam bots and costs every local connection 100 ms.
   */
  readonly earlyTalkerDelay?: number;
  /**
   * Where the DATA of messages from `LARGE_MESSAGE_BYTES` up is written as it arrives and kept until
   * its turn to be routed (`DataSpool`; `<dataDir>/spool` for `mail-relay dev`). Without it, messages
   * are held in memory.
   */
  readonly spoolDir?: string;
  /** Bytes of large messages routed at once (`LargeMessageGate`). @default LARGE_MESSAGES_IN_FLIGHT_BYTES */
  readonly largeMessageBudget?: number;
  /**
   * Milliseconds a session may stay silent while we wait for its client (the next command, more of its
   * message) before it is closed with 421. @default SMTP_IDLE_TIMEOUT_MS
   */
  readonly idleTimeout?: number;
  /**
   * Sessions at once; a connection beyond gets `421 4.3.2 Server out of resources` and is closed
   * (`connectionCap` of the open-files limit for `mail-relay dev`). @default no limit
   */
  readonly maxSessions?: number;
  /** Called for each connection refused by `maxSessions` (the log says it once, not per connection). */
  readonly onSessionRefused?: () => void;
}

/** Mail refused, as `onRefused` reports it. */
export interface SmtpRefusal {
  /** The command answered with the refusal. */
  readonly command: 'RCPT' | 'DATA';
  /** The envelope sender (`''` for the null sender). */
  readonly from: string;
  /** The refused recipient (RCPT), or the recipients of the refused message (DATA). */
  readonly recipients: readonly string[];
  /** The reply sent: code and text. */
  readonly reply: string;
}

/** The session's MAIL FROM address, `''` for the null sender (or none yet). */
function envelopeSender(session: SMTPServerSession): string {
  return session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
}

/** A message between its DATA command and its routing: `gone` is set when its client disconnects. */
interface InFlight {
  gone: boolean;
  /** True from DATA until the final dot. */
  receiving: boolean;
  /** `performance.now()` of the last chunk of the message received. */
  lastDataAt: number;
}

export interface SmtpListener {
  readonly port: number;
  close(): Promise<void>;
}

/** Socket errors that say the client went away, not that something failed here. */
const CLIENT_GONE = new Set(['ECONNRESET', 'EPIPE']);

/**
 * Recipients of one message (postfix's `smtpd_recipient_limit`; RFC 5321 §4.5.3.1.8 asks for at least
 * 100). Beyond it RCPT gets `452 4.5.3`, and the client sends the rest in another transaction.
 */
export const MAX_RECIPIENTS = 1000;
/**
 * What a recipient check may take for free (a normal one takes microseconds); the time beyond it
 * counts against the connection's budget. Counting the excess of every check, not whole slow checks,
 * leaves no cost per address just under a threshold that an attacker could repeat without end.
 */
const FREE_RCPT_MS = 1;
/**
 * Milliseconds a connection may spend in recipient checks beyond `FREE_RCPT_MS` each (a regex route
 * that backtracks, `RouteRegex`, costs up to 250 ms and then 20 ms per new address) before it is
 * closed with 421. Without it one connection could hold the event loop, and with it SMTP and the
 * API, for as long as it keeps sending addresses.
 */
export const RCPT_SLOW_ROUTING_BUDGET_MS = 1000;

/**
 * RFC 5321 §4.5.3.2.7: a server SHOULD wait at least 5 minutes for the next command (postfix's
 * `smtpd_timeout` is 300 s). smtp-server's default, 60 s, hung up on a mailer that keeps its
 * connection between messages (a test suite's long-lived client, a pooled transport) after a minute.
 */
export const SMTP_IDLE_TIMEOUT_MS = 5 * 60 * 1000;

/**
 * While the relay stops, how long a client in the middle of its message may go without sending a
 * byte before it is hung up on (421; nothing of the message was acknowledged, so its sender sends it
 * again later). One still sending keeps its time, within smtp-server's 30 s grace: a stalled one held
 * the stop for all of it, and 5 s more waiting for the client to close its side.
 */
export const STALLED_DATA_ON_STOP_MS = 2000;

/**
 * The MAIL FROM parameters the listener takes: those of the extensions it offers (SIZE, RFC 1870;
 * BODY, RFC 6152) and DSN's (RFC 3461), which smtp-server reads and the relay ignores (it sends no
 * delivery status notifications and does not offer DSN, but a client that adds `RET=`/`ENVID=`
 * anyway loses nothing by it). Any other gets 555 (RFC 5321 §4.1.1.11); `SMTPUTF8` has a text of its own.
 */
const MAIL_PARAMETERS: ReadonlySet<string> = new Set(['SIZE', 'BODY', 'RET', 'ENVID']);
/** The RCPT TO parameters the listener takes (DSN's, ignored as above); any other gets 555. */
const RCPT_PARAMETERS: ReadonlySet<string> = new Set(['NOTIFY', 'ORCPT']);

/** The first parameter of a MAIL or RCPT command (smtp-server upper-cases the names) not in `known`. */
function unknownParameter(args: Record<string, unknown> | false | undefined, known: ReadonlySet<string>) {
  if (!args) return null;
  return Object.keys(args).find((name) => !known.has(name)) ?? null;
}

/** Messages from this size up take turns to be routed (see `LargeMessageGate`). */
export const LARGE_MESSAGE_BYTES = 1024 * 1024;
/** Bytes of large messages routed at once; one larger than this is routed alone. */
export const LARGE_MESSAGES_IN_FLIGHT_BYTES = 48 * 1024 * 1024;

/**
 * Bounds the memory of large messages arriving together. Routing a message holds it about three
 * times over (the joined bytes, the parse, the decoded parts; measured: a 30 MB message took the
 * relay from ~110 to ~200 MB, six at once to 650 MB). Large messages are routed while their total
 * stays within a budget (and one at a time beyond it); the others wait before their `250`, in the
 * spool (`DataSpool`) when the listener has one. Small mail never waits.
 */
export class LargeMessageGate {
  #inFlight = 0;
  readonly #waiting: { bytes: number; go: () => void }[] = [];

  constructor(private readonly budget: number = LARGE_MESSAGES_IN_FLIGHT_BYTES) {}

  /** Resolves when a message of `bytes` may be routed; call the returned function once it is done. */
  async acquire(bytes: number): Promise<() => void> {
    if (bytes < LARGE_MESSAGE_BYTES) return () => undefined;
    if (this.#waiting.length > 0 || !this.#fits(bytes)) {
      await new Promise<void>((go) => this.#waiting.push({ bytes, go }));
    } else {
      this.#inFlight += bytes;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight -= bytes;
      // First come, first served: a big message is not overtaken for ever by smaller ones.
      while (this.#waiting.length > 0 && this.#fits((this.#waiting[0] as { bytes: number }).bytes)) {
        const next = this.#waiting.shift() as { bytes: number; go: () => void };
        this.#inFlight += next.bytes;
        next.go();
      }
    };
  }

  #fits(bytes: number): boolean {
    return this.#inFlight === 0 || this.#inFlight + bytes <= this.budget;
  }
}

/**
 * No room to store the message (RFC 3463 4.3.1, "mail system full"; RFC 5321's 452). What the spool
 * and a full disk anywhere on the way (journal, blobs, index) answer alike.
 */
function storageFull(): SmtpRejectError {
  return new SmtpRejectError(
    452,
    '4.3.1 Insufficient system storage for the message; try again later',
    'insufficient_storage',
  );
}

/** A temporary failure: the client keeps the message and retries; nothing is lost. */
function temporaryFailure(err: unknown): SmtpRejectError {
  if (isStorageFull(err)) return storageFull();
  // Not "(internal)": the open-files limit ran out. Over once connections close; the sender retries.
  if (isOutOfDescriptors(err)) {
    return new SmtpRejectError(451, SMTP_MESSAGE_OUT_OF_RESOURCES, 'out_of_resources');
  }
  const code = err instanceof MailRelayError ? err.code : 'internal';
  return new SmtpRejectError(
    451,
    `4.3.0 Temporary failure storing the message (${code}); try again later`,
    'temporary_failure',
  );
}

export async function startSmtpListener(
  deps: RouterDeps,
  options: SmtpListenerOptions,
): Promise<SmtpListener> {
  const config: Config = deps.config;
  const gate = new LargeMessageGate(options.largeMessageBudget);
  /** Messages being received or waiting for the gate, by session id. */
  const inFlight = new Map<string, InFlight>();
  /** Milliseconds of recipient checks beyond `FREE_RCPT_MS` per session (`RCPT_SLOW_ROUTING_BUDGET_MS`). */
  const slowRouting = new Map<string, number>();
  /** The addresses of a transaction's recipient list once it is full (each transaction has its own list). */
  const fullEnvelopes = new WeakMap<object, Set<string>>();
  if (options.spoolDir !== undefined) await clearStaleSpool(options.spoolDir);
  /** Set by `close()`: sessions that wait for their client are then hung up on (`hangUpIdle`). */
  let closing = false;
  const server = new PromptGreetingSMTPServer({
    earlyTalkerDelay: options.earlyTalkerDelay ?? 0,
    socketTimeout: options.idleTimeout ?? SMTP_IDLE_TIMEOUT_MS,
    // A client's FIN is a half-close: it may still read the replies it is owed (PromptGreetingSMTPServer
    // writes them, then closes). A client that is gone (reset, error) is one whose waiting message is dropped.
    allowHalfOpen: true,
    name: 'mail-relay',
    // smtp-server greets with `220 <name> ESMTP <banner>`.
    banner: 'ready',
    size: config.maxMessageBytes,
    authOptional: true,
    // Local mode listens on loopback for developers and test suites: no AUTH, no TLS to set up.
    disabledCommands: ['AUTH', 'STARTTLS'],
    // No network here, and a PTR lookup per connection costs time for nothing on loopback.
    disableReverseLookup: true,
    // Not advertised: addresses are ASCII here (a UTF-8 local part gets 553 5.6.7; an internationalized
    // domain is taken in its xn-- form, see canonicalAddress), and the relay sends no delivery status
    // notifications.
    hideSMTPUTF8: true,
    hideDSN: true,
    // MAX_RECIPIENTS is enforced in onRcptTo: smtp-server's own 452 has no enhanced status code.
    ...(options.maxSessions === undefined
      ? {}
      : {
          maxClients: options.maxSessions,
          tooManyClientsReply: SMTP_SESSION_OUT_OF_RESOURCES,
          onTooManyClients: options.onSessionRefused,
        }),
    logger: false,
    onClose(session) {
      slowRouting.delete(session.id);
      const message = inFlight.get(session.id);
      if (!message) return;
      // Received in full and waiting for its turn: dropped when its turn comes. (One still being
      // received gets its stream destroyed by smtp-server, and the stream's error disposes of it.)
      message.gone = true;
    },
    onMailFrom(address, _session, callback) {
      // SMTPUTF8 is not offered (RFC 6531 §3.4): an envelope sender must be ASCII, as a recipient must.
      // Accepted, it would be stored as `?`s in Return-Path and Received.
      const unknown = unknownParameter(address.args, MAIL_PARAMETERS);
      const refusal =
        address.args && 'SMTPUTF8' in address.args
          ? new SmtpRejectError(555, '5.5.4 SMTPUTF8 is not offered here')
          : unknown !== null
            ? new SmtpRejectError(555, `5.5.4 MAIL FROM parameter ${unknown} not recognized`)
            : /[^\x20-\x7e]/.test(asciiDomain(address.address))
              ? new SmtpRejectError(553, '5.6.7 Non-ASCII sender address not accepted (no SMTPUTF8)')
              : null;
      // Answered on the next turn, as smtp-server's own handler does: answered at once, a MAIL FROM
      // pipelined behind a message's final dot stopped the session (no reply to what followed).
      setImmediate(() => callback(refusal));
    },
    onRcptTo(address, session, callback) {
      const unknown = unknownParameter(address.args, RCPT_PARAMETERS);
      if (unknown !== null) {
        return callback(new SmtpRejectError(555, `5.5.4 RCPT TO parameter ${unknown} not recognized`));
      }
      // RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction. A recipient given
      // again is one of the message's already (smtp-server keeps it once): not refused.
      const taken = session.envelope.rcptTo;
      if (taken.length >= MAX_RECIPIENTS) {
        let known = fullEnvelopes.get(taken);
        if (known === undefined) {
          known = new Set(taken.map((r) => r.address.toLowerCase()));
          fullEnvelopes.set(taken, known);
        }
        if (!known.has(address.address.toLowerCase())) {
          return callback(
            new SmtpRejectError(452, '4.5.3 Too many recipients; send the rest in another message'),
          );
        }
      }
      const started = performance.now();
      const verdict = acceptsRecipient(config, qualifyRecipient(config, canonicalAddress(address.address)));
      const over = performance.now() - started - FREE_RCPT_MS;
      if (over > 0) {
        const spent = (slowRouting.get(session.id) ?? 0) + over;
        slowRouting.set(session.id, spent);
        if (spent > RCPT_SLOW_ROUTING_BUDGET_MS) {
          // smtp-server closes the connection after a 421. The client may come back (each connection
          // has its own budget, and addresses that ran out are remembered by their route: cheap next time).
          return callback(
            new SmtpRejectError(421, '4.7.0 Too much routing work on this connection; try again later'),
          );
        }
      }
      if (verdict.accept) return callback();
      options.onRefused?.({
        command: 'RCPT',
        from: envelopeSender(session),
        recipients: [address.address],
        reply: `${verdict.code} ${verdict.message}`,
      });
      // smtp-server answers with the error's `responseCode` and message.
      return callback(new SmtpRejectError(verdict.code, verdict.message));
    },
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, answer) {
      // While closing, a session whose message is answered and that waits for its client's next
      // command is hung up on (after the commands it pipelined behind the message are answered).
      const callback: typeof answer = (err, message) => {
        answer(err, message);
        if (closing) setImmediate(() => hangUpIdle(server));
      };
      // Past the size limit the stream is still drained (the protocol requires reading to the final
      // dot) but nothing more is kept.
      const spool = new DataSpool({
        dir: options.spoolDir,
        memoryBytes: LARGE_MESSAGE_BYTES,
        discard: () => stream.sizeExceeded === true,
      });
      const message: InFlight = { gone: false, receiving: true, lastDataAt: performance.now() };
      inFlight.set(session.id, message);
      stream.once('error', (err) => {
        // The client left mid-message (smtp-server destroys the stream) or the stream failed.
        inFlight.delete(session.id);
        void spool.dispose();
        callback(err);
      });
      stream.on('data', (chunk: Buffer) => {
        message.lastDataAt = performance.now();
        const writing = spool.push(chunk);
        if (writing) {
          // To the spool file: no more chunks in memory until it is written (back-pressure to the socket).
          stream.pause();
          void writing.then(() => stream.resume());
        }
      });
      stream.once('end', async () => {
        message.receiving = false;
        await spool.finish();
        if (stream.sizeExceeded) {
          inFlight.delete(session.id);
          await spool.dispose();
          const text = `5.3.4 Message size exceeds fixed limit of ${config.maxMessageBytes} bytes`;
          options.onRefused?.({
            command: 'DATA',
            from: envelopeSender(session),
            recipients: session.envelope.rcptTo.map((r) => r.address),
            reply: `552 ${text}`,
          });
          return callback(new SmtpRejectError(552, text));
        }
        if (spool.error) {
          inFlight.delete(session.id);
          options.onError?.(spool.error);
          await spool.dispose();
          // A spool file that could not be opened for want of descriptors is no full disk.
          return callback(isOutOfDescriptors(spool.error) ? temporaryFailure(spool.error) : storageFull());
        }
        // A message waiting for its turn whose client has gone (it never got a 250, so it will send
        // again) is dropped: delivering it too would make the retry a duplicate.
        const release = await gate.acquire(spool.bytes);
        inFlight.delete(session.id);
        if (message.gone) {
          release();
          await spool.dispose();
          return callback(new SmtpRejectError(421, '4.4.2 Connection closed before the message was stored'));
        }
        let body: Buffer[];
        try {
          body = await spool.take();
        } catch (err) {
          release();
          options.onError?.(err);
          await spool.dispose();
          return callback(temporaryFailure(err));
        }
        const mailFrom = asciiDomain(envelopeSender(session));
        const routed = ingest(deps, {
          // Joined once by ingest, behind the trace headers.
          body,
          mailFrom,
          recipients: session.envelope.rcptTo.map((r) =>
            qualifyRecipient(config, canonicalAddress(r.address)),
          ),
          via: {
            protocol: session.openingCommand === 'EHLO' ? 'ESMTP' : 'SMTP',
            helo: session.hostNameAppearsAs,
            remoteAddress: session.remoteAddress,
          },
        });
        // ingest joined the chunks before its first await: let them go now, not after routing (for a
        // large message, the joined copy and the chunks would otherwise be held together throughout).
        body.length = 0;
        routed.finally(release).then(
          (result) => {
            try {
              options.onDelivered?.(result);
            } catch (err) {
              // A throwing hook must not leave the client without a reply (nor reject unhandled).
              options.onError?.(err);
            }
            const accepted = result.outcomes.some((o) => o.status !== 'rejected');
            if (!accepted) {
              const reject = result.outcomes.find((o) => o.decision.kind === 'reject')?.decision;
              return callback(
                reject && reject.kind === 'reject'
                  ? new SmtpRejectError(reject.code, reject.message)
                  : new SmtpRejectError(550, '5.7.1 Message rejected'),
              );
            }
            return callback(null, `2.0.0 Ok: queued as ${result.id}`);
          },
          (err: unknown) => {
            options.onError?.(err);
            callback(temporaryFailure(err));
          },
        );
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After listen: a failure to listen is the caller's error, not a runtime one to report. A client
  // that resets its connection (a test suite's killed process, a scanner) is routine: nothing of
  // its was acknowledged, and a line for each made the relay's log noise.
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (!CLIENT_GONE.has(err.code ?? '')) options.onError?.(err);
  });
  const address = server.server.address() as AddressInfo;
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        // smtp-server lets every connection finish within its grace period (30 s) and answers 421 to
        // any command meanwhile; one that says nothing (a mailer's idle pooled connection, a client
        // between messages) held the stop for the whole 30 s. Hang up on those at once (RFC 5321
        // §3.8); a message being received or routed still gets its reply, unless its client stops
        // sending it (STALLED_DATA_ON_STOP_MS).
        const stalled = setInterval(() => hangUpStalled(server, inFlight), STALLED_DATA_ON_STOP_MS / 4);
        stalled.unref();
        server.close(() => {
          clearInterval(stalled);
          resolve();
        });
        hangUpIdle(server);
      }),
  };
}

/**
 * While stopping: sends 421 to every session whose client has sent nothing of its message for
 * `STALLED_DATA_ON_STOP_MS`, and drops its connection once the reply is written (smtp-server would
 * otherwise wait 5 s for a client that may never close its side). The message's stream then errs,
 * which disposes of what was received.
 */
function hangUpStalled(server: PromptGreetingSMTPServer, inFlight: ReadonlyMap<string, InFlight>): void {
  const now = performance.now();
  for (const connection of server.connections) {
    const message = inFlight.get(connection.id);
    if (!message?.receiving || now - message.lastDataAt < STALLED_DATA_ON_STOP_MS) continue;
    const socket = connection._socket;
    connection.send(
      421,
      '4.3.2 Server shutting down before your message was received in full; send it again later',
    );
    socket.once('finish', () => socket.destroy());
  }
}

/** Sends 421 to (and closes) every session that waits for its client: nothing of it is in progress. */
function hangUpIdle(server: PromptGreetingSMTPServer): void {
  for (const connection of server.connections) {
    if (connection._closing || connection._handlerPending || connection._dataStream) continue;
    connection.send(421, '4.3.2 Server shutting down; try again later');
  }
}
