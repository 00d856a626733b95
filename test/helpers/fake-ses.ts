/**
 * A loopback endpoint for SES (v1) `SendBounce`, which moto does not implement: it speaks SES's
 * query protocol (form-encoded POST, XML replies), records each request's parameters and answers
 * with the next scripted reply, as SES would: a MessageId, or an ErrorResponse with SES's code.
 * Point an SESClient at `url` (`endpoint`), or a Lambda module's default client through
 * `AWS_ENDPOINT_URL_SES`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export class FakeSesEndpoint {
  readonly requests: URLSearchParams[] = [];
  /** The Authorization header of each request (SigV4 when the SDK signed it). */
  readonly authorizations: string[] = [];
  /** Replies to give, in order; when empty, success with a fresh MessageId. */
  readonly replies: { status: number; code?: string; message?: string }[] = [];
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        this.requests.push(params);
        this.authorizations.push(req.headers.authorization ?? '');
        const reply =
          params.get('Action') === 'SendBounce'
            ? (this.replies.shift() ?? { status: 200 })
            : { status: 400, code: 'InvalidAction', message: `${params.get('Action')} is not served here` };
        res.setHeader('content-type', 'text/xml');
        if (reply.status === 200) {
          res.end(
            `<SendBounceResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><SendBounceResult><MessageId>bounce-${this.requests.length}</MessageId></SendBounceResult><ResponseMetadata><RequestId>r${this.requests.length}</RequestId></ResponseMetadata></SendBounceResponse>`,
          );
          return;
        }
        res.statusCode = reply.status;
        res.end(
          `<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>Sender</Type><Code>${reply.code}</Code><Message>${reply.message}</Message></Error><RequestId>e${this.requests.length}</RequestId></ErrorResponse>`,
        );
      });
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}
