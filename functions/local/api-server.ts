/**
 * The HTTP API on loopback (`npm start`): the same Hono app as the API Lambda, served by
 * @hono/node-server, with local presigned URLs pointing back at this server (`/v1/blobs/…`).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { getRequestListener, RequestError } from '@hono/node-server';
import { FsBlobStore } from '../adapters/local/fs-blob-store.ts';
import { type ApiApp, type ApiDeps, createApp } from '../api/app.ts';
import { OUT_OF_RESOURCES_RETRY_AFTER_SECONDS } from '../api/errors.ts';
import type { MailWaiter } from '../api/waiter.ts';
import { type LocalRuntime, loadOrCreatePresignSecret } from './runtime.ts';

export interface ApiServerOptions {
  /** 0 picks a free port (tests). */
  readonly port: number;
  /** @default '127.0.0.1' (loopback only, like the SMTP listener) */
  readonly host?: string;
  /** Wakes long-polls on delivery; pass the one the SMTP listener's `onDelivered` notifies. */
  readonly waiter?: MailWaiter;
  /** Overrides for the app (thresholds, clock, logging); storage always comes from the runtime. */
  readonly app?: Omit<ApiDeps, 'index' | 'blobs' | 'waiter' | 'serveLocalBlobs' | 'stopping'>;
  /**
   * Connections at once; one beyond gets `503 out_of_resources` and is closed (`connectionCap` of
   * the open-files limit for `mail-relay dev`). @default no limit
   */
  readonly maxConnections?: number;
  /** Called for each connection refused by `maxConnections` (the log says it once, not per connection). */
  readonly onConnectionRefused?: () => void;
}

/**
 * What a connection beyond `maxConnections` gets, written before its request is read (RFC 9110
 * §15.6.4; a client reads a response whenever it comes): it holds a descriptor only until it is sent.
 */
const OUT_OF_RESOURCES_ANSWER = (() => {
  const body = JSON.stringify({
    error: {
      code: 'out_of_resources',
      message: `the server is out of resources (too many open files); try again in ${OUT_OF_RESOURCES_RETRY_AFTER_SECONDS} second`,
    },
  });
  return (
    'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\nRetry-After: ${OUT_OF_RESOURCES_RETRY_AFTER_SECONDS}\r\n` +
    `Cache-Control: no-store\r\nConnection: close\r\n\r\n${body}`
  );
})();

/** How long a refused connection (or a CONNECT) may take to close its side before it is dropped. */
const REFUSED_CONNECTION_CLOSE_MS = 1000;

/**
 * Answers connections beyond `max` with `OUT_OF_RESOURCES_ANSWER` and closes them, before the HTTP
 * server sees them: its own `connection` listener (the one `http.Server` adds in its constructor)
 * is called only for the others. Node's `maxConnections` would drop them unanswered.
 */
function capConnections(server: Server, max: number, onRefused: (() => void) | undefined): void {
  const listeners = server.listeners('connection');
  const serve = listeners[0];
  if (listeners.length !== 1 || serve === undefined) {
    throw new Error(`expected http.Server to have one connection listener, found ${listeners.length}`);
  }
  server.removeAllListeners('connection');
  let open = 0;
  server.on('connection', (socket: Socket) => {
    open += 1;
    socket.once('close', () => {
      open -= 1;
    });
    if (open <= max) return serve.call(server, socket);
    onRefused?.();
    // Its request is read and dropped (closing on unread bytes would reset the connection, and the
    // client could lose the answer); the socket goes when the client closes, or after a while.
    letGo(socket);
    socket.end(OUT_OF_RESOURCES_ANSWER);
  });
}

/**
 * A refused connection's socket, its answer being written: what the client sends is read and dropped
 * (closing on unread bytes would reset the connection, and the client could lose the answer); the
 * socket goes when the client closes its side, or `REFUSED_CONNECTION_CLOSE_MS` after, whatever the
 * client keeps sending meanwhile.
 */
function letGo(socket: Duplex): void {
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  socket.on('end', () => socket.destroy());
  const timer = setTimeout(() => socket.destroy(), REFUSED_CONNECTION_CLOSE_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

export interface ApiServer {
  readonly port: number;
  /** `http://host:port`, no trailing slash. */
  readonly url: string;
  readonly app: ApiApp;
  /**
   * The runtime's files through a store that can presign URLs pointing at this server. `dev` gives it
   * to the router too, so links in oversize-forward notices work.
   */
  readonly blobs: FsBlobStore;
  /**
   * Stops listening; long-polls answer at once (204, where to go on from), other requests under way
   * get up to STOP_GRACE_MS to answer, then every connection is ended.
   */
  close(): Promise<void>;
}

/** How long `close` lets requests under way finish (a long-poll answers at once) before ending them. */
export const STOP_GRACE_MS = 2000;

/** The URL clients use to reach a server bound to `host`: a wildcard bind is reached on loopback. */
function reachableUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

/** What Node's parser refused, as the app's `{error}` would say it (Node itself answers with no body). */
function clientErrorAnswer(code: string | undefined): [status: string, code: string, message: string] {
  if (code === 'HPE_HEADER_OVERFLOW') {
    return [
      '431 Request Header Fields Too Large',
      'headers_too_large',
      'the request line and headers are larger than 16 KiB (a very long query string?)',
    ];
  }
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return ['408 Request Timeout', 'request_timeout', 'the request did not arrive in time'];
  }
  // A method Node's parser does not know (`FOO`, or `get`: methods are case-sensitive) is one this
  // server does not implement (RFC 9110 §9.1, §15.6.2), not a malformed request.
  if (code === 'HPE_INVALID_METHOD') {
    return [
      '501 Not Implemented',
      'not_implemented',
      'this server implements no such method (methods are case-sensitive: GET, not get)',
    ];
  }
  return [
    '400 Bad Request',
    'invalid_request',
    'the request is not valid HTTP (a raw space, control character or non-ASCII byte in the path or a header?)',
  ];
}

/**
 * A request that Node refuses before the app sees it (its path has bytes HTTP does not allow, such as
 * invalid UTF-8 sent raw; its URL and headers pass 16 KiB) is answered with a JSON error as every
 * other refusal is. Like Node's own answer, only when no response is under way on the socket.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  const current = (socket as Duplex & { _httpMessage?: { headersSent: boolean } | null })._httpMessage;
  if (err.code !== 'ECONNRESET' && socket.writable && (current == null || !current.headersSent)) {
    writeErrorAndClose(socket, ...clientErrorAnswer(err.code));
  }
  socket.destroy(err);
}

/** An `{error}` answer written on a socket outside of any response, as the connection's last. */
function writeErrorAndClose(socket: Duplex, status: string, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** An `{error}` answer to a request the app is not given, as its connection's last. */
function endWithError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    Connection: 'close',
  });
  res.end(body);
}

/** An `{error}` answer made outside the app (which is not reached), with the app's headers for one. */
function jsonErrorResponse(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
    },
  });
}

/**
 * A request Node parsed but that names no URL of this server (a request target such as `OPTIONS *`
 * or one with a backslash, a Host header that is no host): @hono/node-server cannot make a Request
 * of it and would answer an empty 400.
 */
function requestErrorAnswer(err: unknown): Response {
  if (err instanceof RequestError) {
    return jsonErrorResponse(
      400,
      'invalid_request',
      'the request target or Host header does not name a URL of this server',
    );
  }
  console.error('mail-relay api: internal error', err);
  return jsonErrorResponse(500, 'internal', 'internal error');
}

/**
 * `Expect: 100-continue` (RFC 9110 §10.1.1): the client holds the body back until the server says
 * `100 Continue`, so that a request the server refuses anyway (no or a bad token, a Content-Length over
 * the route's limit, no such route or method) does not upload a large body for nothing. Node's own
 * answer, without a `checkContinue` listener, is `100` to every such request at once. Here the app
 * decides, with the very checks it makes of any request: `100` goes out when something first reads the
 * body (the route, once the guards, the route and method match and the body limit have let it by), and a
 * request refused before that gets its final status alone. Node then closes the connection after that
 * answer (a response to an `Expect` without `100` is not kept alive), which tells the client not to send
 * the body and frees the server from reading it (RFC 9110 §10.1.1, RFC 9112 §9.6).
 */
function continueOnFirstRead(req: IncomingMessage, res: ServerResponse): void {
  // `_read` is how a Readable asks its source for data, whoever reads it (a `data` listener, `read()`, a
  // web stream over it): the one place that sees every first read of the body.
  const read = req._read;
  req._read = function readAfterContinue(this: IncomingMessage, size: number) {
    req._read = read;
    // Not once the answer has begun (Node reads what is left of a refused body away after it).
    if (!res.headersSent && !res.writableEnded) res.writeContinue();
    read.call(this, size);
  };
}

/**
 * An answer given before the request's body has all arrived (a 413 while it streams in, a 401 that
 * never reads it) ends its connection: `Connection: close`. The body's rest cannot always be read away
 * (@hono/node-server gives up after 500 ms or 64 MiB and closes the socket; a body the app stopped
 * reading at its limit is not read further), and a client told `keep-alive` would send its next
 * request on a connection about to close: that request is lost without an answer (a POST is not
 * retried by clients). RFC 9112 §9.6: a server closes a connection whose request it did not read
 * whole. The header is set when the answer's head is written, the first moment the answer is known.
 */
function lastIfBodyUnread(req: IncomingMessage, res: ServerResponse): void {
  const writeHead = res.writeHead;
  res.writeHead = function writeHeadOfLast(this: ServerResponse, ...args: Parameters<typeof writeHead>) {
    if (!req.complete && !this.headersSent) this.setHeader('Connection', 'close');
    return writeHead.apply(this, args);
  } as typeof writeHead;
}

/**
 * Starts the API for a local runtime. The presign secret lives in `<dataDir>/presign.secret`, so
 * URLs handed out before a restart keep working until they expire.
 */
export async function startApiServer(runtime: LocalRuntime, options: ApiServerOptions): Promise<ApiServer> {
  const host = options.host ?? '127.0.0.1';
  const secret = loadOrCreatePresignSecret(runtime.dataDir);
  // The app is built once the port is known (presigned URLs name it); until then nothing can arrive.
  let app: ApiApp | undefined;
  const listener = getRequestListener(
    (request, env) => {
      if (app === undefined) return new Response('starting', { status: 503 });
      return app.fetch(request, env);
    },
    { errorHandler: requestErrorAnswer },
  );
  const stopping = new AbortController();
  // Responses under way, so that a stop can make each the last of its connection (`Connection: close`).
  const underWay = new Set<ServerResponse>();
  // Host is checked here rather than by Node (`requireHostHeader`), whose 400 has no body.
  const server: Server = createServer({ requireHostHeader: false }, (req, res) => {
    if (req.headers.host === undefined) {
      // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. HTTP/1.0 did not have Host (a load
      // balancer's health check, `nc`, old tools still send such requests): it asked this server.
      if (req.httpVersion !== '1.0') {
        endWithError(res, 400, 'invalid_request', 'an HTTP/1.1 request needs a Host header');
        return;
      }
      const local = req.socket.localAddress ?? host;
      req.headers.host = `${local.includes(':') ? `[${local}]` : local}:${req.socket.localPort ?? port}`;
    }
    if (stopping.signal.aborted) res.setHeader('Connection', 'close');
    else if (!req.complete) lastIfBodyUnread(req, res);
    underWay.add(res);
    res.once('close', () => underWay.delete(res));
    return listener(req, res);
  });
  server.on('clientError', answerClientError);
  // Node answers these itself: CONNECT by closing the connection, an `Expect:` other than
  // 100-continue by a bare 417. Answered as the app answers everything, with an `{error}`.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    // Node hands the socket over: nothing else times it out or closes it at a stop.
    letGo(socket);
    writeErrorAndClose(
      socket,
      '501 Not Implemented',
      'not_implemented',
      'this server is no proxy: CONNECT is not implemented',
    );
  });
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    endWithError(
      res,
      417,
      'expectation_failed',
      `this server meets no expectation but 100-continue (Expect: ${String(req.headers.expect).slice(0, 100)})`,
    );
  });
  server.on('checkContinue', (req, res) => {
    continueOnFirstRead(req, res);
    server.emit('request', req, res);
  });
  if (options.maxConnections !== undefined)
    capConnections(server, options.maxConnections, options.onConnectionRefused);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = reachableUrl(host, port);
  // A second store over the same files: the runtime's store does not presign (it was built before the port was known).
  // The store the API deletes a message's blobs through: on a full disk it may use the reserve.
  const blobs = new FsBlobStore({
    root: runtime.blobRoot,
    presign: { baseUrl: url, secret },
    reserve: runtime.reserve,
  });
  const built = createApp({
    ...options.app,
    stopping: stopping.signal,
    index: runtime.index,
    blobs,
    serveLocalBlobs: { secret },
    configuredMailboxes: runtime.config.mailboxes,
    send: {
      config: runtime.config,
      // Not journaled: the Sent copy's index entry is synced before the API answers.
      index: runtime.unjournaled.index,
      blobs,
      outbound: runtime.outbound,
      parser: runtime.parser,
    },
    ...(options.waiter === undefined ? {} : { waiter: options.waiter }),
  });
  app = built;
  return {
    port,
    url,
    app: built,
    blobs,
    close: async () => {
      await new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Long-polls answer now rather than lose their connection, and every answer still to come is
        // its connection's last; idle keep-alive sockets close now; what still runs after the grace is cut.
        for (const res of underWay) if (!res.headersSent) res.setHeader('Connection', 'close');
        stopping.abort();
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), STOP_GRACE_MS).unref();
      });
      await blobs.close();
    },
  };
}
