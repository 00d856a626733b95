/**
 * smtp-server with a configurable early-talker delay.
 *
 * npm smtp-server waits a fixed 100 ms after accepting a connection before it sends the 220
 * greeting, to catch spam bots that talk before being greeted (an "early talker"). That costs
 * every connection 100 ms: a test suite that sends each message on a new connection waits 100 ms
 * per message, and one-message-per-connection throughput is capped near 80 msg/s for 8 clients.
 * The local relay listens on loopback for developers and their test suites, where that defence
 * buys nothing, so it greets at once.
 *
 * The override below is `SMTPServer.connect` + `SMTPConnection.init` from smtp-server 3.21.x with
 * the delay made an option — the change we would propose upstream (an `earlyTalkerDelay` option,
 * default 100). It uses only methods the package's own type declarations make public.
 */
import { Socket as NetSocket, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { readQuotedLocalParts } from './smtp-paths.ts';

export interface PromptGreetingOptions extends SMTPServerOptions {
  /** Milliseconds to wait before the greeting; input before it gets `421 You talk too soon`. */
  readonly earlyTalkerDelay: number;
  /** The text of the `421` a connection beyond `maxClients` gets (after the code). */
  readonly tooManyClientsReply?: string;
  /** Called for each connection refused for `maxClients`. */
  readonly onTooManyClients?: (() => void) | undefined;
}

export class PromptGreetingSMTPServer extends SMTPServer {
  readonly #delay: number;
  readonly #tooManyClientsReply: string | undefined;
  readonly #onTooManyClients: (() => void) | undefined;

  constructor(options: PromptGreetingOptions) {
    const { earlyTalkerDelay, tooManyClientsReply, onTooManyClients, ...rest } = options;
    if (!Number.isInteger(earlyTalkerDelay) || earlyTalkerDelay < 0) {
      throw new RangeError(`earlyTalkerDelay must be a non-negative integer, got ${earlyTalkerDelay}`);
    }
    // smtp-server's default onConnect defers the greeting by a tick (setImmediate); without a delay
    // there is nothing to wait for, so answer in the same tick unless the caller has its own hook.
    super(
      earlyTalkerDelay === 0 && !rest.onConnect
        ? { ...rest, onConnect: (_session, callback) => callback() }
        : rest,
    );
    this.#delay = earlyTalkerDelay;
    this.#tooManyClientsReply = tooManyClientsReply;
    this.#onTooManyClients = onTooManyClients;
  }

  override connect(socket: Socket, socketOptions?: ConstructorParameters<typeof SMTPConnection>[2]): void {
    const connection = new SMTPConnection(this, socket, socketOptions);
    // Not about the greeting: `<"john doe"@example.com>` is an address (see smtp-paths.ts).
    readQuotedLocalParts(connection);
    if (this.options.allowHalfOpen) answerAfterHalfClose(socket, connection);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    // SMTPConnection.init(), with the delay from the option.
    connection._setListeners(() => {
      const max = this.options.maxClients;
      if (max && this.connections.size > max) {
        this.#onTooManyClients?.();
        connection.send(
          421,
          this.#tooManyClientsReply ?? `${connection.name} Too many connected clients, try again in a moment`,
          false,
        );
        return;
      }
      if (this.#delay === 0) {
        connection.connectionReady();
        return;
      }
      setTimeout(() => connection.connectionReady(), this.#delay).unref();
    });
  }
}

const socketReadyState = Object.getOwnPropertyDescriptor(NetSocket.prototype, 'readyState')?.get;

/**
 * A client that half-closes its side after its last command (`printf … | nc -N`, a script's
 * `shutdown(SHUT_WR)` after the final dot) still reads our replies, as from any MTA. With the
 * server's `allowHalfOpen` the socket stays writable after the client's FIN, but smtp-server writes
 * only while `readyState` is 'open' (it is 'writeOnly' then), so the `250` of a message already
 * delivered was never sent and the client, seeing none, would send it again. Here the socket counts
 * as open while it can be written to, and the connection closes once every command the client sent
 * has been answered (the parser has finished its input), as it can send nothing more.
 */
function answerAfterHalfClose(socket: Socket, connection: SMTPConnection): void {
  if (!socketReadyState) return;
  // Only once the client's FIN has come: the socket of every other connection keeps its shape.
  socket.once('end', () => {
    Object.defineProperty(socket, 'readyState', {
      configurable: true,
      get(this: Socket) {
        const state = socketReadyState.call(this) as string;
        return state === 'writeOnly' ? 'open' : state;
      },
    });
  });
  const parser = (connection as unknown as { _parser: Writable | false })._parser;
  if (parser) parser.once('finish', () => connection.close());
}
