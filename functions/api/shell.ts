/**
 * What every app of the HTTP API shares, whichever routes it serves: request validation answered as
 * `400 {error}`, the one error handler (errors.ts), `404 not_found` for unknown endpoints, the
 * response headers, and the bearer-token guards of `/v1/mailboxes/…`. The mailbox app (the read
 * routes, mailbox-app.ts) and the send app (send-app.ts) are both built on it, so a request is
 * authenticated and answered the same way whether API Gateway hands it to the API function or to
 * the send function (docs/adr/0012-lambda-bundles.md).
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type * as z from 'zod';
import { canonicalAddress } from '../core/config.ts';
import { ValidationError } from '../core/errors.ts';
import type { MailboxIndex, TokenRecord } from '../ports/mailbox-index.ts';
import { authenticate, authorizeAdmin, authorizeMailbox } from './auth.ts';
import { HttpStatusError, toHttpError } from './errors.ts';
import { NO_STORE } from './http-headers.ts';
import { errorSchema, mailboxParamsSchema } from './schemas.ts';

/** Per-request values set by the auth middleware. */
export interface ApiEnv {
  Variables: {
    token: TokenRecord;
    /** The normalized mailbox address of a `/v1/mailboxes/{address}/…` request, authorized. */
    mailbox: string;
  };
}

export type ApiApp = OpenAPIHono<ApiEnv>;

export interface ApiShellDeps {
  /** Where tokens are looked up. */
  readonly index: MailboxIndex;
  /** Receives errors that became a 500 (the client only sees `internal`). @default console.error */
  readonly logError?: (err: unknown) => void;
}

/** Issues of a failed request validation, as one line, and the code a client can act on. */
export function validationErrorOf(target: string, issues: readonly z.core.$ZodIssue[]): ValidationError {
  const field = String(issues[0]?.path[0] ?? '');
  const codes: Record<string, string> = {
    address: 'invalid_address',
    id: 'invalid_id',
    after: 'invalid_id',
    partId: 'invalid_part_id',
    cursor: 'invalid_cursor',
  };
  const code = target === 'json' ? 'invalid_request' : (codes[field] ?? 'invalid_request');
  const details = issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : target}: ${i.message}`);
  return new ValidationError(
    `invalid ${target === 'param' ? 'path' : target}: ${details.join('; ')}`,
    details,
    code,
  );
}

/**
 * The `WWW-Authenticate` challenge of a 401 (RFC 9110 §11.6.1 requires one; RFC 6750 §3 its form
 * for bearer tokens): `error="invalid_token"` only when a token was presented, since a request
 * without credentials gets no error code (RFC 6750 §3.1).
 */
export function bearerChallenge(authorization: string | undefined): string {
  const realm = 'Bearer realm="mail-relay"';
  return authorization === undefined || authorization.trim() === ''
    ? realm
    : `${realm}, error="invalid_token", error_description="the token is unknown, revoked or malformed"`;
}

/** The documented `401` of every operation that takes a token, with its challenge. */
export const UNAUTHORIZED_RESPONSE = {
  description: 'Missing or invalid token (`unauthorized`)',
  headers: {
    'WWW-Authenticate': {
      description:
        '`Bearer realm="mail-relay"`, with `error="invalid_token"` when a token was given (RFC 6750 §3)',
      schema: { type: 'string' as const },
    },
  },
  content: { 'application/json': { schema: errorSchema } },
};

/**
 * The deployed relay's DynamoDB or S3 throttling its calls, or the local relay out of file
 * descriptors (`toHttpError`): documented on every operation, with the `Retry-After` it comes with.
 */
export const THROTTLED_RESPONSE = {
  description:
    "The deployed relay's store (DynamoDB, S3) is throttling requests (`throttled`), or the local relay " +
    'has run out of file descriptors, its open-files limit (`out_of_resources`): try again ' +
    "after `Retry-After` seconds (a send with the same `Idempotency-Key`). (API Gateway's own throttling of the stage answers `429` " +
    '`{"message":"Too Many Requests"}` before this API, without `Retry-After`: back off and retry.)',
  headers: {
    'Retry-After': {
      description: 'Seconds to wait before trying again (RFC 9110 §10.2.3)',
      schema: { type: 'integer' as const, minimum: 1 },
      required: true,
    },
  },
  content: { 'application/json': { schema: errorSchema } },
};

/**
 * The methods of the app's routes (not its middleware) whose path matches `path`, sorted; HEAD with
 * GET. The routes it documents count too: in AWS the API function documents `POST …/send`, which
 * API Gateway sends to the send function, so another method on that path reaches this app.
 */
function methodsServing(app: ApiApp, path: string): string[] {
  const routes = app.routes
    .filter((r) => r.method !== 'ALL')
    .map((r) => ({ method: r.method, path: r.path }));
  for (const d of app.openAPIRegistry.definitions) {
    if (d.type === 'route') {
      routes.push({ method: d.route.method.toUpperCase(), path: d.route.path.replace(/\{(\w+)\}/g, ':$1') });
    }
  }
  const methods = new Set<string>();
  for (const route of routes) {
    // Hono's patterns here are literal segments, `:name` parameters and a trailing `*` (the rest of the path).
    const pattern = route.path
      .split('/')
      .map((segment) =>
        segment === '*'
          ? '.*'
          : segment.startsWith(':')
            ? '[^/]+'
            : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
      )
      .join('/');
    if (new RegExp(`^${pattern}$`).test(path)) {
      methods.add(route.method);
      if (route.method === 'GET') methods.add('HEAD');
    }
  }
  return [...methods].sort();
}

/**
 * An app with no routes yet, only the shared behaviour. Every request under `/v1/mailboxes` needs
 * `Authorization: Bearer <token>`; errors are `{error: {code, message}}`.
 */
export function createApiShell(deps: ApiShellDeps): ApiApp {
  const { index } = deps;
  const logError = deps.logError ?? ((err: unknown) => console.error('mail-relay api: internal error', err));

  const app: ApiApp = new OpenAPIHono<ApiEnv>({
    defaultHook: (result) => {
      if (!result.success) throw validationErrorOf(result.target, result.error.issues);
    },
  });

  app.onError((err, c) => {
    const { status, body, headers: needed } = toHttpError(err);
    // A 429 is the relay's provider quota used up (`send_quota_exceeded`): the operator's to know of and raise.
    if (status >= 500 || status === 429) logError(err);
    const headers: Record<string, string> = { 'Cache-Control': NO_STORE, ...needed };
    if (status === 401) headers['WWW-Authenticate'] = bearerChallenge(c.req.header('Authorization'));
    // What a client may send instead of a content coding it used (RFC 9110 §12.5.3).
    if (status === 415 && c.req.header('Content-Encoding') !== undefined)
      headers['Accept-Encoding'] = 'identity';
    return c.json(body, status, headers);
  });
  app.notFound((c) => {
    // A path this app serves, asked with another method: 405 and what it takes (RFC 9110 §15.5.6).
    const allowed = methodsServing(app, c.req.path);
    // A method the app documents but another function serves (POST …/send in the API function) is
    // not a wrong method: it is not here.
    if (allowed.length > 0 && !allowed.includes(c.req.method)) {
      const allow = allowed.join(', ');
      return c.json(
        {
          error: { code: 'method_not_allowed', message: `${c.req.method} is not allowed here; use ${allow}` },
        },
        405,
        { Allow: allow },
      );
    }
    return c.json(
      { error: { code: 'not_found', message: `no such endpoint: ${c.req.method} ${c.req.path}` } },
      404,
    );
  });

  app.use('*', async (c, next) => {
    await next();
    // Mailbox state changes with every delivery; only immutable content opts into caching.
    if (!c.res.headers.has('Cache-Control')) c.res.headers.set('Cache-Control', NO_STORE);
    c.res.headers.set('X-Content-Type-Options', 'nosniff');
    // What a token may read depends on the token: a browser's cache (which keys on the URL alone)
    // must not answer one token's request with what it kept for another's, as it would the
    // immutable `/raw` of a mailbox the second token cannot read (RFC 9111 §4.1).
    if (
      c.req.path === '/v1/me' ||
      c.req.path === '/v1/mailboxes' ||
      c.req.path.startsWith('/v1/mailboxes/')
    ) {
      c.res.headers.append('Vary', 'Authorization');
    }
    // A HEAD is answered with the GET's headers (hono drops the body afterwards), so that a client
    // learns the size the GET would send (RFC 9110 §9.3.2, §8.6): bodies built in memory (JSON,
    // the inbox's files) have no Content-Length until the server writes them.
    if (c.req.method === 'HEAD' && c.res.body !== null && !c.res.headers.has('Content-Length')) {
      const bytes = await c.res.arrayBuffer();
      const res = new Response(null, c.res);
      res.headers.set('Content-Length', String(bytes.byteLength));
      c.res = res;
    }
  });

  // A CORS preflight carries no token (Fetch: credentials are never sent on it), so it must not reach
  // the authentication below. With `aws.corsOrigins`, API Gateway's `$default` route catches OPTIONS
  // too and hands it to the function ("including OPTIONS requests",
  // https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-cors.html); API Gateway adds
  // the configured CORS headers to this 204, and without CORS a browser still refuses the request.
  app.use('/v1/*', async (c, next) => {
    if (c.req.method === 'OPTIONS' && c.req.header('Access-Control-Request-Method') !== undefined) {
      return c.body(null, 204);
    }
    return next();
  });

  // Authentication first (401), then the address (400), then authorization (403): a token learns
  // nothing about mailboxes it cannot read, and a client without one learns nothing at all.
  app.use('/v1/mailboxes', async (c, next) => {
    const token = await authenticate(index, c.req.header('Authorization'));
    authorizeAdmin(token);
    c.set('token', token);
    await next();
  });
  const mailboxGuard = async (c: Context<ApiEnv>, next: () => Promise<void>) => {
    const token = await authenticate(index, c.req.header('Authorization'));
    const parsed = mailboxParamsSchema.safeParse({ address: c.req.param('address') });
    if (!parsed.success) throw validationErrorOf('param', parsed.error.issues);
    const mailbox = canonicalAddress(parsed.data.address);
    authorizeMailbox(token, mailbox);
    c.set('token', token);
    c.set('mailbox', mailbox);
    await next();
  };
  // `/:address/*` also matches the bare `/v1/mailboxes/:address` (STAT).
  app.use('/v1/mailboxes/:address/*', mailboxGuard);

  // A body sent compressed (`Content-Encoding: gzip`, what some clients do with large uploads) was read
  // as it came: a gzipped message/rfc822 to …/send was refused as `403 from_not_allowed` (no From in
  // the compressed bytes), gzipped JSON as `invalid_json`. No route decodes a content coding (a bounded
  // inflate for one client in a hundred is not worth a zip bomb's risk): 415 and what we take (RFC 9110
  // §15.5.16, §12.5.3). After authentication, as any other refusal of a body.
  app.use('/v1/*', async (c, next) => {
    const coding = c.req.header('Content-Encoding');
    if (
      c.req.method !== 'GET' &&
      c.req.method !== 'HEAD' &&
      coding?.split(',').some((t) => t.trim() !== '' && t.trim().toLowerCase() !== 'identity')
    ) {
      throw new HttpStatusError(
        415,
        'unsupported_media_type',
        `the body is ${coding?.trim()}-encoded; send it as it is, without Content-Encoding`,
      );
    }
    return next();
  });

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'A token from `mail-relay token create <mailbox>` (admin: `--admin`)',
  });
  return app;
}
