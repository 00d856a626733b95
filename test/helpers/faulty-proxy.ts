/**
 * An HTTP proxy on loopback in front of an AWS endpoint (moto_server) that passes every request on,
 * and fails the ones a test picks as a real network or service would: `cut` sends the answer's status,
 * headers and the first bytes of its body, then drops the connection (a read failing mid-body); `deny`
 * answers with an AWS JSON error (one the SDK does not retry, or, as throttling, one it retries and
 * then gives up on). Point AWS_ENDPOINT_URL at `endpoint`.
 */
import { createServer, type IncomingMessage, request } from 'node:http';
import type { AddressInfo } from 'node:net';

export type ProxyFault =
  | { readonly kind: 'cut'; readonly afterBytes: number }
  | {
      readonly kind: 'deny';
      readonly type: string;
      readonly message: string;
      /** The answer's HTTP status. @default 400 */
      readonly status?: number;
    };

export interface FaultyProxy {
  readonly endpoint: string;
  /** Requests that were failed, as `METHOD path`. */
  readonly failed: string[];
  close(): Promise<void>;
}

export async function startFaultyProxy(
  target: string,
  pick: (req: IncomingMessage, body: Buffer) => ProxyFault | undefined,
): Promise<FaultyProxy> {
  const upstream = new URL(target);
  const failed: string[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const fault = pick(req, body);
    if (fault !== undefined) failed.push(`${req.method} ${req.url}`);
    if (fault?.kind === 'deny') {
      const answer = JSON.stringify({
        __type: `com.amazonaws.dynamodb.v20120810#${fault.type}`,
        message: fault.message,
      });
      res.writeHead(fault.status ?? 400, {
        'content-type': 'application/x-amz-json-1.0',
        'x-amzn-errortype': fault.type,
      });
      res.end(answer);
      return;
    }
    const forward = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (fault?.kind !== 'cut') {
          answer.pipe(res);
          return;
        }
        let sent = 0;
        answer.on('data', (c: Buffer) => {
          if (sent >= fault.afterBytes) return;
          const part = c.subarray(0, fault.afterBytes - sent);
          sent += part.length;
          res.write(part);
          if (sent >= fault.afterBytes) {
            answer.destroy();
            // The connection drops with the body short of its Content-Length.
            res.socket?.destroy();
          }
        });
      },
    );
    forward.on('error', () => res.socket?.destroy());
    forward.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    failed,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
