/**
 * The whole HTTP API in one app, as `npm start` serves it (functions/local/api-server.ts): the read
 * side (mailbox-app.ts), `POST …/send` (send.ts) and, locally, the presigned-URL route of the
 * local blob store (local-blobs.ts). All three are built on the same shell (shell.ts).
 *
 * In AWS the same routes are split over two functions behind one HTTP API, so that the function
 * that serves reads carries neither the MIME composer nor the parser that `send` needs
 * (docs/adr/0012-lambda-bundles.md): the API function serves `createMailboxApp` (which documents
 * the send route), the send function serves `createSendApp` (send-app.ts). Lambda code must not
 * import this module.
 */
import { mountLocalBlobs } from './local-blobs.ts';
import { createMailboxApp, type MailboxAppDeps } from './mailbox-app.ts';
import { mountSendRoute, type SendDeps } from './send.ts';
import type { ApiApp } from './shell.ts';

export {
  DEFAULT_POLL_INTERVAL_MS,
  DEFAULT_PRESIGN_SECONDS,
  DEFAULT_RAW_REDIRECT_BYTES,
} from './mailbox-app.ts';
export type { ApiApp, ApiEnv } from './shell.ts';

export interface ApiDeps extends Omit<MailboxAppDeps, 'documentSend'> {
  /** Milliseconds since epoch: what the local blob links' expiry is checked against. @default Date.now */
  readonly clock?: () => number;
  /**
   * Local mode only: mounts `GET /v1/blobs/*`, which serves the HMAC-signed URLs that the local
   * BlobStore's `presign` makes (same secret).
   */
  readonly serveLocalBlobs?: { readonly secret: string | Buffer };
  /** Enables `POST /v1/mailboxes/{address}/send` (see send.ts); absent, the route does not exist. */
  readonly send?: SendDeps;
}

/**
 * Builds the API. Every request under `/v1/mailboxes` needs `Authorization: Bearer <token>`;
 * errors are `{error: {code, message}}` (see errors.ts).
 */
export function createApp(deps: ApiDeps): ApiApp {
  const app = createMailboxApp(deps);
  if (deps.serveLocalBlobs !== undefined) {
    mountLocalBlobs(app, deps.blobs, deps.serveLocalBlobs.secret, deps.clock ?? Date.now);
  }
  if (deps.send !== undefined) mountSendRoute(app, deps.send);
  return app;
}
