/**
 * The app of the send function: `POST /v1/mailboxes/{address}/send` alone, on the same shell as
 * every other route (shell.ts: token, address and authorization checks, error answers). API Gateway
 * routes that one route here and everything else to the API function, which documents it in
 * `GET /v1/openapi.json` (docs/adr/0012-lambda-bundles.md).
 */
import { mountSendRoute, type SendDeps } from './send.ts';
import { type ApiApp, createApiShell } from './shell.ts';

export interface SendAppDeps extends SendDeps {
  /** Receives errors that became a 500 (the client only sees `internal`). @default console.error */
  readonly logError?: (err: unknown) => void;
}

export function createSendApp(deps: SendAppDeps): ApiApp {
  const app = createApiShell({
    index: deps.index,
    ...(deps.logError === undefined ? {} : { logError: deps.logError }),
  });
  mountSendRoute(app, deps);
  return app;
}
