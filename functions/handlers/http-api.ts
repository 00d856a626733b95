/**
 * What the HTTP API's Lambda functions (api.ts, send.ts) share: a Hono app served behind API
 * Gateway HTTP API (payload format 2.0) through hono's Lambda adapter, with the body and content-type
 * handling both need.
 */
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

export type HttpApiHandler = (
  event: APIGatewayProxyEventV2,
  context?: Context,
) => Promise<APIGatewayProxyResult>;

/**
 * The API Gateway HTTP API (v2) handler of an app. A body flagged base64 that is not base64 is the
 * client's error (400), not a decoder crash (hono's adapter would answer 500).
 */
export function httpApiHandler(app: ApiApp): HttpApiHandler {
  const handleWithHono = handle(app, { isContentTypeBinary });
  type HonoLambdaEvent = Parameters<typeof handleWithHono>[0];

  /**
   * hono's (deprecated) adapter types insist on fields an HTTP API event may leave out (`body`
   * spelled null, `authorizer`, `authentication: null`); of these its code reads only `body`.
   */
  const toHonoEvent = (event: APIGatewayProxyEventV2): HonoLambdaEvent => ({
    ...event,
    body: event.body ?? null,
    requestContext: { ...event.requestContext, authentication: null, authorizer: {} },
  });

  return async (event, context) => {
    if (event.isBase64Encoded && event.body !== undefined && !BASE64_RE.test(event.body)) {
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
