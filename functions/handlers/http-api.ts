/**
 * What the HTTP API's Lambda functions (api.ts, send.ts) share: a Hono app served behind API
 * Gateway HTTP API (payload format 2.0) through hono's Lambda adapter, with the body and content-type
 * handling both need.
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import type { APIGatewayProxyEventV2, Context } from 'aws-lambda';
import { type APIGatewayProxyResult, handle } from 'hono/aws-lambda';
import type { ApiApp } from '../api/shell.ts';

/** Standard base64 with padding, as API Gateway encodes request bodies. */
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Only JSON goes back as text. Everything else (message/rfc822, decoded parts, whose bytes may be
 * in any charset) is base64-encoded, so API Gateway returns the stored bytes exactly; hono's
 * default would decode text/* as UTF-8 and mangle other charsets.
 */
export function isContentTypeBinary(contentType: string): boolean {
  return !/^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i.test(contentType);
}

/**
 * `rawPath` as a URL path. API Gateway HTTP APIs hand the function the path percent-decoded (a
 * request for `/v1/mailboxes/a%23b@example.com` arrives as `rawPath: "/v1/mailboxes/a#b@example.com"`;
 * captured: fastify/aws-lambda-fastify#169), and hono's adapter pastes it into a URL as it is, where a
 * `#` would end the path (and hide the query string) and a bare `%` is not a valid escape. Those two
 * (and `?`, which API Gateway itself cuts at) cannot stand literally in an encoded path, so they are
 * escaped; an already encoded path passes unchanged. A `%` followed by two hex digits stays ambiguous
 * (an address such as `x%41y@` is read as `xAy@`): it is taken to be an escape.
 */
export function pathForUrl(rawPath: string): string {
  return rawPath.replace(
    /%(?![0-9A-Fa-f]{2})|[#?]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * A GET or HEAD whose body is dropped: content there has no meaning (RFC 9110 §9.3.1) and the local
 * server ignores it, but the Fetch `Request` hono's adapter builds refuses one, and the adapter then
 * answers a bare `text/plain` 400 ("Invalid request") before any route: a client that sends a body
 * with every request (Python's `requests.get(url, json=…)`, axios' `data`) failed in AWS only.
 */
function hasNoContent(event: APIGatewayProxyEventV2): boolean {
  const method = event.requestContext.http.method;
  return method === 'GET' || method === 'HEAD';
}

export type HttpApiHandler = (
  event: APIGatewayProxyEventV2,
  context?: Context,
) => Promise<APIGatewayProxyResult>;

/**
 * The API Gateway HTTP API (v2) handler of an app. A body flagged base64 that is not base64 is the
 * client's error (400), not a decoder crash (hono's adapter would answer 500). With `logger`, each
 * of its lines names the request it was written for: API Gateway's `requestId` (the access log's),
 * the method and the path (never the query string or headers), and the Lambda invocation.
 */
export function httpApiHandler(
  app: ApiApp,
  logger?: Pick<Logger, 'addContext' | 'appendKeys'>,
): HttpApiHandler {
  const handleWithHono = handle(app, { isContentTypeBinary });
  type HonoLambdaEvent = Parameters<typeof handleWithHono>[0];

  /**
   * hono's (deprecated) adapter types insist on fields an HTTP API event may leave out (`body`
   * spelled null, `authorizer`, `authentication: null`); of these its code reads only `body`.
   */
  const toHonoEvent = (event: APIGatewayProxyEventV2): HonoLambdaEvent => ({
    ...event,
    rawPath: pathForUrl(event.rawPath),
    ...(hasNoContent(event) ? { body: null, isBase64Encoded: false } : { body: event.body ?? null }),
    requestContext: { ...event.requestContext, authentication: null, authorizer: {} },
  });

  return async (event, context) => {
    if (logger !== undefined) {
      if (context !== undefined) logger.addContext(context);
      // Replaced by the next request (a Lambda environment serves one at a time).
      logger.appendKeys({
        requestId: event.requestContext.requestId,
        method: event.requestContext.http.method,
        path: event.rawPath,
      });
    }
    if (
      !hasNoContent(event) &&
      event.isBase64Encoded &&
      event.body !== undefined &&
      !BASE64_RE.test(event.body)
    ) {
      return {
        statusCode: 400,
        headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
        body: JSON.stringify({
          error: { code: 'invalid_request', message: 'the request body is not valid base64' },
        }),
        isBase64Encoded: false,
      };
    }
    return handleWithHono(toHonoEvent(event), context);
  };
}
