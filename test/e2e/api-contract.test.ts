/**
 * The API does what `GET /v1/openapi.json` says, as a client generated from that document sees it:
 * every documented operation is called into every documented status (and a few more refusals: bad
 * ids, cursors, limits, JSON, media types, sizes, tokens, an outage), over real HTTP to the local
 * server and again through the two Lambda handlers with API Gateway HTTP API events. Each answer is
 * checked against the document: its status is one the operation documents, its Content-Type one
 * of the documented media types, its JSON body valid against the documented schema (Ajv, JSON
 * Schema 2020-12, as OpenAPI 3.1 uses), an error's code one its description names, the documented
 * response headers present; the parameters of a request the server took are valid under the
 * document, and a parameter it refused is invalid under it (bounds, enums, patterns). Every
 * documented status of every operation must have been seen, so a status documented for nothing
 * (or a new one left unprovoked) fails here; another method on a documented path is 405 with the
 * documented ones in `Allow`. The document's examples must be valid against their schemas, and
 * every request header the API's code reads must be documented.
 */

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ProvisionedThroughputExceededException } from '@aws-sdk/client-dynamodb';
import { LimitExceededException } from '@aws-sdk/client-sesv2';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { sesSendError } from '../../functions/adapters/aws/ses-errors.ts';
import { createMailboxApp } from '../../functions/api/mailbox-app.ts';
import { createSendApp } from '../../functions/api/send-app.ts';
import { parseConfig, type RawConfig } from '../../functions/core/config.ts';
import { httpApiHandler } from '../../functions/handlers/http-api.ts';
import type { Outbound } from '../../functions/ports/outbound.ts';
import { API_TEST_CONFIG, type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { httpApiEvent } from '../helpers/aws-events.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';

const API_DIR = join(PROJECT_ROOT, 'functions', 'api');

const ALICE = 'alice@example.test';
const A = `/v1/mailboxes/${ALICE}`;
/** Raw messages and parts above this are redirected (307): small, so that the test stays fast. */
const REDIRECT_BYTES = 8192;
const UNKNOWN_ID = '01ARZ3NDEKTSV4RRFFQ69G5FAV';
/** bücher.test, as the configuration lists it. */
const IDN_DOMAIN = 'xn--bcher-kva.test';
const CONFIG: RawConfig = {
  ...API_TEST_CONFIG,
  domains: [...API_TEST_CONFIG.domains, IDN_DOMAIN],
  mailboxes: [...(API_TEST_CONFIG.mailboxes ?? []), `anna@${IDN_DOMAIN}`],
  relay: { maxSendBytes: 2048 },
};

interface RequestSpec {
  readonly token?: string;
  readonly body?: string | Buffer;
  readonly headers?: Record<string, string>;
}
interface Transport {
  /** The local server, which also serves the presigned `/v1/blobs/…` URLs. */
  readonly local: boolean;
  request(method: string, path: string, spec: RequestSpec, failing: boolean): Promise<Response>;
}

type Schema = Record<string, unknown>;
interface Response_ {
  readonly description: string;
  readonly headers?: Record<string, { readonly required?: boolean }>;
  readonly content?: Record<string, { readonly schema?: Schema }>;
}
interface Operation {
  readonly parameters?: readonly { name: string; in: string; required?: boolean; schema?: Schema }[];
  readonly responses: Record<string, Response_>;
}
interface Document {
  readonly paths: Record<string, Record<string, Operation>>;
  readonly components: Record<string, unknown>;
}

/** Statuses the document may list that this test cannot provoke, and why. */
const NOT_PROVOKED: Record<string, string> = {
  'POST /v1/mailboxes/{address}/send 409': 'needs a send still running when its retry arrives',
};

function message(subject: string, body: string, attachment?: Buffer): Buffer {
  const head = `From: Sender <sender@remote.test>\r\nTo: ${ALICE}\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\n`;
  if (attachment === undefined) return Buffer.from(`${head}Content-Type: text/plain\r\n\r\n${body}`);
  return Buffer.from(
    `${head}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n${body}\r\n` +
      '--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n' +
      `Content-Transfer-Encoding: base64\r\n\r\n${attachment.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n--b--\r\n`,
  );
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('the API answers as its OpenAPI document says', () => {
  let env: ApiTestEnv;
  let failing: ApiTestEnv;
  let doc: Document;
  let ajv: InstanceType<typeof Ajv2020>;
  let transport: Transport;
  const seen = new Set<string>();
  const problems: string[] = [];

  /** The document's operation for a request (a literal segment before a parameter), or undefined. */
  function operationOf(method: string, pathname: string): { tpl: string; op: Operation } | undefined {
    const matches = Object.keys(doc.paths).filter((tpl) => {
      const pattern = tpl
        .split('/')
        .map((s) => (s === '{key}' ? '.+' : /^\{\w+\}$/.test(s) ? '[^/]+' : s.replace(/\./g, '\\.')))
        .join('/');
      return new RegExp(`^${pattern}$`).test(pathname);
    });
    // `/messages/delete` before `/messages/{id}`: fewer parameters first.
    matches.sort((a, b) => (a.match(/\{/g)?.length ?? 0) - (b.match(/\{/g)?.length ?? 0));
    for (const tpl of matches) {
      const op = doc.paths[tpl]?.[method === 'HEAD' ? 'get' : method.toLowerCase()];
      if (op !== undefined) return { tpl, op };
    }
    return undefined;
  }

  const toAjv = (schema: Schema): Schema =>
    JSON.parse(
      JSON.stringify(schema).replaceAll(
        '"#/components/',
        '"https://mail-relay.invalid/openapi.json#/components/',
      ),
    );

  /**
   * The request's parameters as the document describes them: a request the server took (2xx, 3xx)
   * sent only values valid under the documented schemas, with every required one; a parameter the
   * server refused (`invalid path: <name>: …`, `invalid query: …`, `invalid header: …`) had a value
   * the document refuses too, so that bounds, enums and patterns say what the server enforces.
   */
  function checkParameters(
    tpl: string,
    op: Operation,
    url: URL,
    headers: Record<string, string>,
    status: number,
    text: string,
    fail: (why: string) => void,
  ) {
    const names = tpl.split('/');
    const segments = url.pathname.split('/');
    const sent = (p: { name: string; in: string }): string | undefined => {
      if (p.in === 'query') return url.searchParams.get(p.name) ?? undefined;
      if (p.in === 'header') {
        const key = Object.keys(headers).find((k) => k.toLowerCase() === p.name.toLowerCase());
        return key === undefined ? undefined : headers[key];
      }
      const i = names.indexOf(`{${p.name}}`);
      return i < 0
        ? undefined
        : p.name === 'key'
          ? segments.slice(i).join('/')
          : decodeURIComponent(segments[i] ?? '');
    };
    const valid = (schema: Schema, value: string) => {
      const typed = schema.type === 'integer' && /^-?\d+$/.test(value) ? Number(value) : value;
      return ajv.validate(toAjv(schema), typed);
    };
    const refused =
      status === 400 ? /"message":"invalid (path|query|header): ([\w-]+):/i.exec(text)?.[2] : undefined;
    for (const p of op.parameters ?? []) {
      const value = sent(p);
      if (status < 400) {
        if (value === undefined && p.required) fail(`required ${p.in} parameter ${p.name} missing`);
        if (value !== undefined && !valid(p.schema ?? {}, value)) {
          fail(
            `${p.in} parameter ${p.name}=${value} taken, but invalid under the document: ${ajv.errorsText(ajv.errors)}`,
          );
        }
      } else if (refused !== undefined && refused.toLowerCase() === p.name.toLowerCase()) {
        if (value === undefined ? p.required !== true : valid(p.schema ?? {}, value)) {
          fail(`${p.in} parameter ${p.name}=${value} refused, but valid under the document`);
        }
      }
    }
  }

  /** Checks one answer against the document; returns its body as text. */
  async function conform(
    method: string,
    path: string,
    headers: Record<string, string>,
    res: Response,
  ): Promise<string> {
    const text = await res.text();
    const url = new URL(path, env.url);
    const where = `${method} ${url.pathname}${url.search} -> ${res.status}`;
    const fail = (why: string) => problems.push(`${where}: ${why} (${text.slice(0, 200)})`);
    const found = operationOf(method, url.pathname);
    if (found === undefined) {
      fail('no such operation in the document');
      return text;
    }
    const { tpl, op } = found;
    checkParameters(tpl, op, url, headers, res.status, text, fail);
    const documented = op.responses[String(res.status)];
    seen.add(`${method} ${tpl} ${res.status}`);
    if (documented === undefined) {
      fail(`status not documented (documented: ${Object.keys(op.responses).join(', ')})`);
      return text;
    }
    for (const [name, h] of Object.entries(documented.headers ?? {})) {
      if (!res.headers.has(name)) fail(`documented header ${name} missing${h.required ? ' (required)' : ''}`);
    }
    const type = (res.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (documented.content === undefined) {
      if (text !== '') fail('a body where the document says none');
      return text;
    }
    const media = Object.keys(documented.content);
    const matched = media.find(
      (m) => m === type || m === '*/*' || (m.endsWith('/*') && type.startsWith(m.slice(0, -1))),
    );
    if (matched === undefined) {
      fail(`Content-Type ${type} is not one of ${media.join(', ')}`);
      return text;
    }
    if (method === 'HEAD') return text;
    if (matched === 'application/json') {
      const schema = documented.content[matched]?.schema ?? {};
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        fail('not JSON');
        return text;
      }
      if (!ajv.validate(toAjv(schema), body)) fail(`body invalid: ${ajv.errorsText(ajv.errors)}`);
      if (res.status >= 400) {
        const code = (body as { error?: { code?: string } }).error?.code ?? '';
        const codes = [...documented.description.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);
        if (!codes.includes(code))
          fail(`error code ${code} is not among ${codes.join(', ')} (its description)`);
      }
    }
    return text;
  }

  /** A request, its answer checked; asserts the expected status. */
  async function call(
    method: string,
    path: string,
    expected: number,
    init: RequestSpec & { failing?: boolean } = {},
  ): Promise<{ res: Response; text: string }> {
    const { failing: toFailing = false, ...spec } = init;
    const res = await transport.request(method, path, spec, toFailing);
    const text = await conform(method, path, spec.headers ?? {}, res);
    assert.equal(res.status, expected, `${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
    return { res, text };
  }

  /** Real HTTP to the local server (`npm start`'s), redirects not followed. */
  const overHttp: Transport = {
    local: true,
    request: (method, path, spec, toFailing) =>
      (toFailing ? failing : env).request(path, {
        method,
        redirect: 'manual',
        ...(spec.token === undefined ? {} : { token: spec.token }),
        ...(spec.headers === undefined ? {} : { headers: spec.headers }),
        ...(spec.body === undefined ? {} : { body: spec.body }),
      }),
  };

  /**
   * API Gateway HTTP API (v2) events into the two Lambda handlers, as lib/api.ts routes them (`POST
   * …/send` to the send function, the rest to the API function), over the same storage.
   */
  function throughLambda(): Transport {
    const config = parseConfig(CONFIG, 'test');
    const ports = { index: env.runtime.index, blobs: env.api.blobs };
    const api = httpApiHandler(
      createMailboxApp({
        ...ports,
        rawRedirectBytes: REDIRECT_BYTES,
        logError: () => {},
        documentSend: { maxSendBytes: config.relay.maxSendBytes },
        configuredMailboxes: config.mailboxes,
      }),
    );
    const sendApp = (outbound: Outbound) =>
      httpApiHandler(createSendApp({ ...ports, config, outbound, parser: env.runtime.parser }));
    const send = sendApp(env.runtime.outbound);
    const sendFailing = sendApp(failing.runtime.outbound);
    return {
      local: false,
      async request(method, path, spec, toFailing) {
        const headers = { ...(spec.headers ?? {}) };
        if (spec.token !== undefined) headers.authorization = `Bearer ${spec.token}`;
        const isSend = method === 'POST' && new URL(path, env.url).pathname.endsWith('/send');
        const handler = isSend ? (toFailing ? sendFailing : send) : api;
        const r = await handler(
          httpApiEvent({ method, path, headers, ...(spec.body === undefined ? {} : { body: spec.body }) }),
        );
        const bytes = Buffer.from(r.body ?? '', r.isBase64Encoded ? 'base64' : 'utf8');
        const empty = r.statusCode === 204 || r.statusCode === 304 || method === 'HEAD';
        const responseHeaders = Object.entries(r.headers ?? {}).map(
          ([k, v]) => [k, String(v)] as [string, string],
        );
        return new Response(empty ? null : bytes, { status: r.statusCode, headers: responseHeaders });
      },
    };
  }

  /** Makes `transport` the one calls go through, and `doc` and `ajv` what it documents. */
  async function use(t: Transport): Promise<void> {
    transport = t;
    seen.clear();
    problems.length = 0;
    const res = await t.request('GET', '/v1/openapi.json', {}, false);
    doc = (await res.json()) as Document;
    ajv = new Ajv2020({ strict: false, allErrors: true });
    // Formats the document names for people and generators; the patterns beside them are checked.
    for (const format of ['binary', 'idn-email']) ajv.addFormat(format, true);
    ajv.addSchema({ $id: 'https://mail-relay.invalid/openapi.json', components: doc.components });
  }

  before(async () => {
    env = await startApiTestEnv({
      config: CONFIG,
      app: { rawRedirectBytes: REDIRECT_BYTES, logError: () => {} },
    });
    failing = await startApiTestEnv({
      config: { ...API_TEST_CONFIG, relay: { smtp: `smtp://127.0.0.1:${await closedPort()}` } },
      app: { logError: () => {} },
    });
    await use(overHttp);
  });
  after(async () => {
    await env?.close();
    await failing?.close();
  });

  it("holds the document's examples valid against their own schemas", () => {
    const bad: string[] = [];
    const walk = (node: unknown, at: string) => {
      if (node === null || typeof node !== 'object') return;
      const o = node as Schema;
      if ('example' in o && ('type' in o || 'pattern' in o || '$ref' in o)) {
        const { example, ...schema } = o;
        if (!ajv.validate(toAjv(schema), example))
          bad.push(`${at}: ${JSON.stringify(example)} ${ajv.errorsText(ajv.errors)}`);
      }
      for (const [k, v] of Object.entries(o)) walk(v, `${at}/${k}`);
    };
    walk(doc.paths, '#/paths');
    walk(doc.components, '#/components');
    assert.deepEqual(bad, []);
  });

  it('documents every request header the server reads', () => {
    // Authorization is the security scheme, Content-Type and Content-Encoding describe the request
    // body (a coding is refused, 415); a CORS preflight (Access-Control-Request-Method) is answered
    // before any operation.
    const implicit = new Set([
      'authorization',
      'content-type',
      'content-encoding',
      'access-control-request-method',
    ]);
    const read = new Set<string>();
    for (const file of readdirSync(API_DIR)) {
      const source = readFileSync(join(API_DIR, file), 'utf8');
      for (const m of source.matchAll(/\.req\.header\('([^']+)'\)/g)) read.add((m[1] ?? '').toLowerCase());
    }
    const documented = new Set<string>();
    for (const item of Object.values(doc.paths)) {
      for (const op of Object.values(item)) {
        for (const p of op.parameters ?? []) if (p.in === 'header') documented.add(p.name.toLowerCase());
      }
    }
    assert.ok(read.has('idempotency-key') && read.has('if-none-match'), [...read].join(', '));
    assert.deepEqual(
      [...read].filter((h) => !implicit.has(h) && !documented.has(h)),
      [],
    );
  });

  it('answers every documented operation as documented, in every documented status, over HTTP', async () => {
    await use(overHttp);
    await walk('http');
  });

  it('answers so through the Lambda handlers too (API Gateway HTTP API events)', async () => {
    await use(throughLambda());
    await walk('lambda');
  });

  /** Calls every operation into every status it documents; `run` keeps its mail apart from another walk's. */
  async function walk(run: string) {
    const alice = await env.token(ALICE);
    const bob = await env.token('bob@example.test');
    const admin = await env.token(null, { admin: true });
    const json = { 'Content-Type': 'application/json' };

    await env.deliver([ALICE], message(`hello-${run}`, 'hello world', Buffer.from('%PDF-1.4 small')));
    const bigBody = Array.from({ length: 1500 }, (_, i) => `line ${i}`).join('\r\n');
    await env.deliver([ALICE], message(`big-${run}`, bigBody, Buffer.alloc(3 * REDIRECT_BYTES, 7)));
    const list = JSON.parse((await call('GET', `${A}/messages`, 200, { token: alice })).text) as {
      items: { id: string; subject: string }[];
    };
    const idOf = (subject: string) => list.items.find((i) => i.subject === subject)?.id ?? '';
    const id = idOf(`hello-${run}`);
    const big = idOf(`big-${run}`);
    const M = `${A}/messages/${id}`;
    const detail = JSON.parse((await call('GET', M, 200, { token: alice })).text) as {
      attachments: { partId: string }[];
    };
    const part = detail.attachments[0]?.partId ?? '';
    const bigDetail = JSON.parse((await call('GET', `${A}/messages/${big}`, 200, { token: alice })).text) as {
      attachments: { partId: string }[];
    };
    const bigPart = bigDetail.attachments[0]?.partId ?? '';

    // meta
    await call('GET', '/v1/health', 200);
    await call('GET', '/v1/openapi.json', 200);
    await call('GET', '/v1/me', 200, { token: alice });
    await call('GET', '/v1/me', 200, { token: admin });
    await call('GET', '/v1/me', 401);
    await call('GET', '/v1/me', 401, { token: 'mr_not-a-token' });

    // the admin's mailbox list
    const page = JSON.parse((await call('GET', '/v1/mailboxes?limit=1', 200, { token: admin })).text);
    await call('GET', `/v1/mailboxes?limit=1&cursor=${encodeURIComponent(page.nextCursor)}`, 200, {
      token: admin,
    });
    await call('GET', '/v1/mailboxes?cursor=zzz', 400, { token: admin });
    await call('GET', '/v1/mailboxes?limit=0', 400, { token: admin });
    await call('GET', '/v1/mailboxes', 403, { token: alice });
    await call('GET', '/v1/mailboxes', 401);

    // STAT
    await call('GET', A, 200, { token: alice });
    await call('GET', `${A}?view=sent`, 200, { token: alice });
    await call('GET', '/v1/mailboxes/ALICE%40Example.Test', 200, { token: alice });
    await call('GET', A, 200, { token: admin });
    await call('GET', `/v1/mailboxes/${encodeURIComponent('Anna@Bücher.test')}`, 200, { token: admin });
    await call('GET', `/v1/mailboxes/anna@${IDN_DOMAIN}/messages`, 200, { token: admin });
    await call('GET', `${A}?view=drafts`, 400, { token: alice });
    await call('GET', '/v1/mailboxes/not-an-address', 400, { token: alice });
    // Behind API Gateway the function gets the path decoded, and its `..` segments resolve (to /etc: 404).
    if (transport.local) await call('GET', '/v1/mailboxes/..%2F..%2Fetc', 400, { token: alice });
    await call('GET', A, 403, { token: bob });
    await call('GET', A, 401);
    await call('HEAD', A, 200, { token: alice });

    // LIST
    const first = JSON.parse((await call('GET', `${A}/messages?limit=1`, 200, { token: alice })).text);
    await call('GET', `${A}/messages?limit=1&cursor=${encodeURIComponent(first.nextCursor)}`, 200, {
      token: alice,
    });
    await call('GET', `${A}/messages?unseen=true&q=HELLO`, 200, { token: alice });
    await call('GET', `${A}/messages?view=sent`, 200, { token: alice });
    for (const q of [
      'limit=0',
      'limit=1001',
      'limit=1e2',
      'unseen=1',
      'cursor=zzz',
      'cursor=',
      `q=${'x'.repeat(201)}`,
    ]) {
      await call('GET', `${A}/messages?${q}`, 400, { token: alice });
    }
    await call('GET', `${A}/messages`, 403, { token: bob });
    await call('GET', `${A}/messages`, 401);

    // the message
    await call('GET', `${A}/messages/${id.toLowerCase()}`, 200, { token: alice });
    await call('GET', `${A}/messages/not-an-id`, 400, { token: alice });
    await call('GET', `${A}/messages/${UNKNOWN_ID}`, 404, { token: alice });
    await call('GET', `${M}?view=sent`, 404, { token: alice });
    await call('GET', M, 403, { token: bob });
    await call('GET', M, 401);

    // PATCH
    await call('PATCH', M, 200, { token: alice, headers: json, body: '{"seen":true}' });
    await call('PATCH', `${M}?view=inbox`, 200, { token: alice, headers: json, body: '{"seen":false}' });
    await call('PATCH', M, 400, { token: alice, headers: json, body: '{"seen":' });
    await call('PATCH', M, 400, { token: alice, headers: json, body: '{"seen":"yes"}' });
    await call('PATCH', M, 400, { token: alice, headers: json, body: '{"seen":true,"flagged":true}' });
    await call('PATCH', M, 415, {
      token: alice,
      headers: { 'Content-Type': 'text/plain' },
      body: '{"seen":true}',
    });
    await call('PATCH', M, 415, { token: alice, body: '{"seen":true}' });
    await call('PATCH', M, 413, {
      token: alice,
      headers: json,
      body: `{"seen":true,"x":"${'x'.repeat(20_000)}"}`,
    });
    await call('PATCH', `${A}/messages/${UNKNOWN_ID}`, 404, {
      token: alice,
      headers: json,
      body: '{"seen":true}',
    });
    await call('PATCH', `${A}/messages/x`, 400, { token: alice, headers: json, body: '{"seen":true}' });
    await call('PATCH', M, 403, { token: bob, headers: json, body: '{"seen":true}' });
    await call('PATCH', M, 401, { headers: json, body: '{"seen":true}' });
    // `If-Match`: the message has no ETag, so only `*` holds (while it exists).
    await call('PATCH', M, 200, {
      token: alice,
      headers: { ...json, 'If-Match': '*' },
      body: '{"seen":true}',
    });
    await call('PATCH', M, 412, {
      token: alice,
      headers: { ...json, 'If-Match': `"${id}"` },
      body: '{"seen":true}',
    });

    // raw
    const raw = await call('GET', `${M}/raw`, 200, { token: alice });
    const etag = raw.res.headers.get('etag') ?? '';
    await call('GET', `${M}/raw`, 304, { token: alice, headers: { 'If-None-Match': etag } });
    await call('GET', `${M}/raw`, 200, { token: alice, headers: { 'If-Match': `"x", ${etag}` } });
    await call('GET', `${M}/raw`, 412, { token: alice, headers: { 'If-Match': `W/${etag}` } });
    const redirected = await call('GET', `${A}/messages/${big}/raw`, 307, { token: alice });
    const location = redirected.res.headers.get('location') ?? '';
    // The presigned URL: the local server's own /v1/blobs/… (in AWS, S3's).
    if (transport.local) {
      const blob = new URL(location);
      await call('GET', `${blob.pathname}${blob.search}`, 200);
      await call('GET', `${blob.pathname}${blob.search}`, 206, { headers: { Range: 'bytes=0-99' } });
      await call('GET', `${blob.pathname}${blob.search}`, 416, { headers: { Range: 'bytes=999999999-' } });
      const forged = new URLSearchParams(blob.search);
      forged.set('expires', String(Number(forged.get('expires')) + 1));
      await call('GET', `${blob.pathname}?${forged}`, 403);
      await call('GET', `${blob.pathname}`, 403);
      await call('GET', '/v1/blobs/%E0%A4%A', 400);
    }
    await call('GET', `${M}/raw`, 206, { token: alice, headers: { Range: 'bytes=-10' } });
    await call('GET', `${M}/raw`, 416, { token: alice, headers: { Range: 'bytes=999999999-' } });
    await call('HEAD', `${M}/raw`, 200, { token: alice });
    await call('GET', `${A}/messages/x/raw`, 400, { token: alice });
    await call('GET', `${A}/messages/${UNKNOWN_ID}/raw`, 404, { token: alice });
    await call('GET', `${M}/raw`, 403, { token: bob });
    await call('GET', `${M}/raw`, 401);

    // top
    await call('GET', `${M}/top?lines=1`, 200, { token: alice });
    await call('GET', `${A}/messages/${big}/top?lines=1`, 200, { token: alice });
    await call('GET', `${A}/messages/${big}/top?lines=1400`, 422, { token: alice });
    await call('GET', `${A}/messages/${big}/top?lines=100000`, 307, { token: alice });
    for (const q of ['', '?lines=-1', '?lines=0x10', '?lines=2147483648']) {
      await call('GET', `${M}/top${q}`, 400, { token: alice });
    }
    await call('GET', `${A}/messages/${UNKNOWN_ID}/top?lines=1`, 404, { token: alice });
    await call('GET', `${M}/top?lines=1`, 403, { token: bob });
    await call('GET', `${M}/top?lines=1`, 401);

    // parts
    const p = await call('GET', `${M}/parts/${part}`, 200, { token: alice });
    await call('GET', `${M}/parts/${part}`, 304, {
      token: alice,
      headers: { 'If-None-Match': p.res.headers.get('etag') ?? '' },
    });
    await call('GET', `${M}/parts/${part}`, 206, { token: alice, headers: { Range: 'bytes=0-0' } });
    await call('GET', `${M}/parts/${part}`, 412, { token: alice, headers: { 'If-Match': '"stale"' } });
    await call('GET', `${M}/parts/${part}`, 416, { token: alice, headers: { Range: 'bytes=999999999-' } });
    await call('GET', `${A}/messages/${big}/parts/${bigPart}`, 307, { token: alice });
    await call('GET', `${M}/parts/99`, 404, { token: alice });
    await call('GET', `${A}/messages/${UNKNOWN_ID}/parts/1`, 404, { token: alice });
    await call('GET', `${M}/parts/x`, 400, { token: alice });
    await call('GET', `${M}/parts/${part}`, 403, { token: bob });
    await call('GET', `${M}/parts/${part}`, 401);

    // wait
    const waited = await call('GET', `${A}/wait?cursor=0&timeout=0`, 200, { token: alice });
    assert.equal(waited.res.headers.get('mail-relay-cursor'), JSON.parse(waited.text).cursor);
    await call('GET', `${A}/wait?timeout=0`, 204, { token: alice });
    await call('GET', `${A}/wait?after=${UNKNOWN_ID}&timeout=0`, 200, { token: alice });
    for (const q of ['timeout=26', 'cursor=999', 'cursor=x', 'after=x', `after=${UNKNOWN_ID}&cursor=0`]) {
      await call('GET', `${A}/wait?${q}`, 400, { token: alice });
    }
    await call('GET', `${A}/wait?timeout=0`, 403, { token: bob });
    await call('GET', `${A}/wait?timeout=0`, 401);

    // send
    const S = `${A}/send`;
    const mail = JSON.stringify({ to: 'someone@remote.test', subject: 's', text: 'hi' });
    await call('POST', S, 200, {
      token: alice,
      headers: { ...json, 'Idempotency-Key': `k1-${run}` },
      body: mail,
    });
    await call('POST', S, 200, {
      token: alice,
      headers: { ...json, 'Idempotency-Key': `k1-${run}` },
      body: mail,
    });
    await call('POST', S, 422, {
      token: alice,
      headers: { ...json, 'Idempotency-Key': `k1-${run}` },
      body: mail.replace('hi', 'ho'),
    });
    await call('POST', S, 200, {
      token: alice,
      headers: { 'Content-Type': 'message/rfc822' },
      body: `From: ${ALICE}\r\nTo: someone@remote.test\r\nSubject: raw\r\n\r\nhi\r\n`,
    });
    await call('POST', S, 400, {
      token: alice,
      headers: { ...json, 'Idempotency-Key': 'k'.repeat(201) },
      body: mail,
    });
    await call('POST', S, 400, { token: alice, headers: json, body: '{}' });
    await call('POST', S, 400, { token: alice, headers: json, body: '{"to":' });
    await call('POST', S, 400, { token: alice, headers: json, body: '{"to":"not an address","text":"x"}' });
    await call('POST', S, 400, { token: alice, headers: json, body: '{"to":"a@remote.test","nope":1}' });
    await call('POST', S, 415, { token: alice, headers: { 'Content-Type': 'text/plain' }, body: 'hi' });
    await call('POST', S, 413, {
      token: alice,
      headers: json,
      body: JSON.stringify({ to: 'someone@remote.test', text: 'x'.repeat(4000) }),
    });
    await call('POST', S, 413, { token: alice, headers: json, body: `{"text":"${'x'.repeat(80_000)}"}` });
    await call('POST', S, 422, {
      token: alice,
      headers: json,
      body: '{"to":"nobody@example.test","text":"x"}',
    });
    await call('POST', S, 403, {
      token: alice,
      headers: { 'Content-Type': 'message/rfc822' },
      body: 'From: bob@example.test\r\nTo: someone@remote.test\r\n\r\nhi\r\n',
    });
    await call('POST', S, 403, { token: bob, headers: json, body: mail });
    await call('POST', S, 401, { headers: json, body: mail });
    await call('POST', S, 502, {
      token: transport.local ? await failing.token(ALICE) : alice,
      headers: json,
      body: mail,
      failing: true,
    });
    // SES's daily sending quota used up, as Sesv2Outbound reports it: `send_quota_exceeded`, no Retry-After.
    const outbound = env.runtime.outbound;
    const sendThrough = outbound.send;
    outbound.send = async () => {
      throw sesSendError(
        'SendEmail',
        new LimitExceededException({
          message: 'Daily message quota exceeded.',
          $metadata: { httpStatusCode: 400 },
        }),
        new Set(),
      );
    };
    try {
      const { res } = await call('POST', S, 429, { token: alice, headers: json, body: mail });
      assert.equal(res.headers.get('retry-after'), null);
    } finally {
      outbound.send = sendThrough;
    }
    await call('GET', `${A}/messages?view=sent`, 200, { token: alice });

    // the batch delete and DELE
    await env.deliver([ALICE], message(`doomed-${run}`, 'bye'));
    const after = JSON.parse(
      (await call('GET', `${A}/messages?q=doomed-${run}`, 200, { token: alice })).text,
    );
    const doomedId = after.items[0].id as string;
    const bigLink = new URL(
      (await call('GET', `${A}/messages/${big}/raw`, 307, { token: alice })).res.headers.get('location') ??
        '',
    );
    await call('POST', `${A}/messages/delete`, 200, {
      token: alice,
      headers: json,
      body: JSON.stringify({ ids: [big, UNKNOWN_ID] }),
    });
    if (transport.local) await call('GET', `${bigLink.pathname}${bigLink.search}`, 404);
    await call('POST', `${A}/messages/delete`, 400, { token: alice, headers: json, body: '{"ids":[]}' });
    await call('POST', `${A}/messages/delete`, 400, { token: alice, headers: json, body: '{"ids":["x"]}' });
    await call('POST', `${A}/messages/delete`, 400, { token: alice, headers: json, body: '{"ids":' });
    await call('POST', `${A}/messages/delete`, 415, {
      token: alice,
      headers: { 'Content-Type': 'text/plain' },
      body: '{"ids":[]}',
    });
    await call('POST', `${A}/messages/delete`, 413, {
      token: alice,
      headers: json,
      body: `{"ids":["${'x'.repeat(70_000)}"]}`,
    });
    await call('POST', `${A}/messages/delete`, 403, { token: bob, headers: json, body: '{"ids":[]}' });
    await call('POST', `${A}/messages/delete`, 401, { headers: json, body: '{"ids":[]}' });
    await call('DELETE', `${A}/messages/${doomedId}`, 412, {
      token: alice,
      headers: { 'If-Match': `"${doomedId}"` },
    });
    await call('DELETE', `${A}/messages/${doomedId}`, 204, { token: alice, headers: { 'If-Match': '*' } });
    // Gone: answered as without the precondition (RFC 9110 §13.2.1).
    await call('DELETE', `${A}/messages/${doomedId}`, 404, { token: alice, headers: { 'If-Match': '*' } });
    await call('DELETE', `${A}/messages/${doomedId}`, 404, { token: alice });
    await call('DELETE', `${A}/messages/x`, 400, { token: alice });
    await call('DELETE', M, 403, { token: bob });
    await call('DELETE', M, 401);
    await call('DELETE', `${A}/messages?view=sent`, 200, { token: alice });
    await call('DELETE', `${A}/messages?view=x`, 400, { token: alice });
    await call('DELETE', `${A}/messages`, 403, { token: bob });
    await call('DELETE', `${A}/messages`, 401);

    // A method no operation of the path documents: 405, with the documented ones in `Allow`.
    const samples: Record<string, string> = { address: ALICE, id, partId: part, key: 'mailboxes/x' };
    for (const [tpl, item] of Object.entries(doc.paths)) {
      const path = tpl.replace(/\{(\w+)\}/g, (_, name: string) => samples[name] ?? name);
      const res = await transport.request('PUT', path, { token: admin }, false);
      const body = (await res.json()) as { error?: { code?: string } };
      assert.equal(res.status, 405, `PUT ${tpl}`);
      assert.equal(body.error?.code, 'method_not_allowed', `PUT ${tpl}`);
      const allowed = new Set((res.headers.get('allow') ?? '').split(', '));
      for (const method of Object.keys(item)) {
        assert.ok(allowed.has(method.toUpperCase()), `PUT ${tpl}: Allow ${[...allowed]} lacks ${method}`);
      }
      if ('get' in item) assert.ok(allowed.has('HEAD'), `PUT ${tpl}: Allow lacks HEAD`);
    }

    // An outage: `internal`, on any operation.
    const { index } = env.runtime;
    const getToken = index.getToken.bind(index);
    index.getToken = async () => {
      throw new Error('the index is down');
    };
    /** Every operation the document says may answer `status`, called expecting it; the answers by operation. */
    const callEveryOperationWith = async (status: number) => {
      const sample: Record<string, string> = { address: ALICE, id, partId: part };
      const answers: { operation: string; res: Response }[] = [];
      for (const [tpl, item] of Object.entries(doc.paths)) {
        for (const [method, op] of Object.entries(item)) {
          if (op.responses[String(status)] === undefined) continue;
          const path = tpl.replace(/\{(\w+)\}/g, (_, name: string) => sample[name] ?? name);
          const { res } = await call(method.toUpperCase(), `${path}?lines=1&timeout=0`, status, {
            token: alice,
            headers: json,
            body: method === 'get' ? undefined : '{}',
          });
          answers.push({ operation: `${method} ${tpl}`, res });
        }
      }
      return answers;
    };
    try {
      await callEveryOperationWith(500);
    } finally {
      index.getToken = getToken;
    }

    // The deployed store throttling (as the SDK throws it once its retries gave up): `throttled`, with
    // the Retry-After the document promises (conform checks it is there), on any operation.
    index.getToken = async () => {
      throw new ProvisionedThroughputExceededException({
        message: 'The level of configured provisioned throughput for the table was exceeded',
        $metadata: { httpStatusCode: 400 },
      });
    };
    try {
      for (const { operation, res } of await callEveryOperationWith(503)) {
        assert.equal(res.headers.get('retry-after'), '4', operation);
      }
    } finally {
      index.getToken = getToken;
    }

    // A full disk (the local relay's; S3 and DynamoDB do not fill up): `insufficient_storage` on writes.
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    // The local server's POST …/send records its sends through the runtime's synced index (api-server.ts).
    const sendIndex = env.runtime.unjournaled.index;
    const writes = {
      setSeen: index.setSeen.bind(index),
      delete: index.delete.bind(index),
      deleteMany: index.deleteMany.bind(index),
      claimSend: index.claimSend.bind(index),
    };
    const claimSend = sendIndex.claimSend.bind(sendIndex);
    const refuse = async () => {
      throw full;
    };
    Object.assign(index, { setSeen: refuse, delete: refuse, deleteMany: refuse, claimSend: refuse });
    sendIndex.claimSend = refuse;
    try {
      await call('PATCH', M, 507, { token: alice, headers: json, body: '{"seen":true}' });
      await call('DELETE', M, 507, { token: alice });
      await call('POST', `${A}/messages/delete`, 507, {
        token: alice,
        headers: json,
        body: JSON.stringify({ ids: [id] }),
      });
      await call('DELETE', `${A}/messages`, 507, { token: alice });
      await call('POST', S, 507, { token: alice, headers: json, body: mail });
    } finally {
      Object.assign(index, writes);
      sendIndex.claimSend = claimSend;
    }

    assert.deepEqual(problems, [], run);
    const missing: string[] = [];
    for (const [tpl, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        for (const status of Object.keys(op.responses)) {
          const key = `${method.toUpperCase()} ${tpl} ${status}`;
          if (!seen.has(key) && NOT_PROVOKED[key] === undefined) missing.push(key);
        }
      }
    }
    assert.deepEqual(missing, [], 'documented but never answered');
  }
});
