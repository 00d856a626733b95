/**
 * `GET /v1/openapi.json`: a valid OpenAPI 3.1 document (swagger-parser) that lists exactly the
 * routes the app serves, each answering on the server, and that describes the error shape.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import SwaggerParser from '@apidevtools/swagger-parser';
import { INBOX_PATH } from '../../functions/api/inbox.ts';
import { createMailboxApp } from '../../functions/api/mailbox-app.ts';
import { createSendApp } from '../../functions/api/send-app.ts';
import { SEND_ROUTE } from '../../functions/api/send-route.ts';
import { parseConfig } from '../../functions/core/config.ts';
import { type ApiTestEnv, startApiTestEnv } from '../helpers/api.ts';
import { PROJECT_ROOT } from '../helpers/env.ts';

/** The web inbox's pages (functions/api/inbox.ts) are served beside the API, not part of it. */
const isWebInboxPage = (path: string) => path === '/' || path === '/inbox' || path.startsWith(INBOX_PATH);

import { run } from '../helpers/process.ts';

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;

interface Operation {
  readonly security?: readonly Record<string, readonly string[]>[];
  readonly parameters?: readonly {
    readonly name: string;
    readonly in: string;
    readonly required?: boolean;
    readonly schema?: Record<string, unknown>;
  }[];
  readonly responses: Record<
    string,
    {
      readonly description?: string;
      readonly content?: Record<string, { readonly schema?: { readonly $ref?: string } }>;
    }
  >;
}
interface Document {
  readonly openapi: string;
  readonly paths: Record<string, Partial<Record<(typeof METHODS)[number], Operation>>>;
  readonly components?: {
    readonly securitySchemes?: Record<string, unknown>;
    readonly schemas?: Record<
      string,
      { readonly properties?: Record<string, unknown>; readonly required?: readonly string[] }
    >;
  };
}

describe('OpenAPI document', () => {
  let env: ApiTestEnv;
  let doc: Document;

  before(async () => {
    env = await startApiTestEnv();
    const res = await env.request('/v1/openapi.json');
    assert.equal(res.status, 200);
    doc = (await res.json()) as Document;
  });
  after(async () => env?.close());

  it('is valid OpenAPI 3.1', async () => {
    assert.equal(doc.openapi, '3.1.0');
    // validate() dereferences in place: give it a copy.
    await SwaggerParser.validate(structuredClone(doc) as unknown as SwaggerParser['api']);
    assert.deepEqual(Object.keys(doc.components?.securitySchemes ?? {}), ['bearerAuth']);
  });

  it('lists exactly the routes the app serves, and vice versa', () => {
    const documented = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const m of METHODS) if (item[m]) documented.add(`${m.toUpperCase()} ${path}`);
    }
    const served = new Set(
      env.api.app.routes
        // `use()` middleware is registered as method ALL; it is not an endpoint.
        .filter((r) => r.method !== 'ALL' && !isWebInboxPage(r.path))
        .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}').replace(/\/\*$/, '/{key}')}`),
    );
    assert.deepEqual([...documented].sort(), [...served].sort());
    assert.ok(documented.has('GET /v1/mailboxes/{address}/messages/{id}/parts/{partId}'));
    assert.ok(documented.has('DELETE /v1/mailboxes/{address}/messages/{id}'));
  });

  it('each documented operation exists on the server, declares its path parameters, and documents errors', async () => {
    const token = await env.token(null, { admin: true });
    const sample: Record<string, string> = {
      address: 'alice@example.test',
      id: '01ARZ3NDEKTSV4RRFFQ69G5FAV',
      partId: '1',
      key: 'mailboxes/x',
    };
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const m of METHODS) {
        const op = item[m];
        if (!op) continue;
        const names = [...path.matchAll(/\{(\w+)\}/g)].map((x) => x[1]);
        const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
        assert.deepEqual(declared.sort(), [...names].sort(), `${m} ${path} path parameters`);
        const url = path.replace(/\{(\w+)\}/g, (_, n: string) => sample[n] ?? n);
        const res = await env.request(`${url}?lines=1&timeout=0`, {
          method: m.toUpperCase(),
          token,
          ...(m === 'patch'
            ? { body: '{"seen":true}', headers: { 'Content-Type': 'application/json' } }
            : {}),
        });
        const body = await res.text();
        // Any answer but "no such endpoint" proves the route is served.
        assert.ok(!body.includes('"no such endpoint'), `${m} ${path}: ${res.status} ${body}`);
        const secured = (op.security ?? []).length > 0;
        if (secured) assert.ok(op.responses['401'], `${m} ${path} documents 401`);
        // Behind the mailbox guards a valid token may still be refused (GET /v1/me never is).
        if (secured && path.startsWith('/v1/mailboxes')) {
          assert.ok(op.responses['403'], `${m} ${path} documents 403`);
        }
        for (const [status, response] of Object.entries(op.responses)) {
          if (Number(status) >= 400)
            assert.ok(response.content?.['application/json'], `${m} ${path} ${status} is JSON`);
        }
      }
    }
  });

  it('documents paging the same way on LIST and on the mailbox list: limit and cursor asked, nextCursor answered', () => {
    const paged = ['/v1/mailboxes/{address}/messages', '/v1/mailboxes'].map((path) => {
      const op = doc.paths[path]?.get;
      assert.ok(op, `GET ${path}`);
      const query = (name: string) => {
        const p = op.parameters?.find((x) => x.in === 'query' && x.name === name);
        assert.ok(p, `GET ${path} takes ${name}`);
        assert.notEqual(p.required, true, `${name} is optional on GET ${path}`);
        return p.schema;
      };
      const ref = op.responses['200']?.content?.['application/json']?.schema?.$ref ?? '';
      const answer = doc.components?.schemas?.[ref.replace('#/components/schemas/', '')];
      assert.ok(answer?.required?.includes('nextCursor'), `GET ${path} always answers nextCursor`);
      assert.match(op.responses['400']?.description ?? '', /invalid_cursor/, `GET ${path} 400`);
      return {
        limit: query('limit')?.pattern,
        cursor: query('cursor'),
        nextCursor: answer?.properties?.nextCursor,
      };
    });
    const [list, mailboxes] = paged;
    assert.deepEqual(mailboxes, list);
    assert.deepEqual(list?.nextCursor, {
      type: ['string', 'null'],
      description: 'Pass as `cursor` for the next page; null at the end',
    });
  });

  it('in AWS, the API function and the send function together serve exactly what the API function documents', async () => {
    // As the Lambda handlers build them (functions/handlers/api.ts, send.ts); storage is never reached.
    const config = parseConfig({ domains: ['example.test'] }, 'test');
    const ports = { index: env.runtime.index, blobs: env.runtime.blobs };
    const api = createMailboxApp({ ...ports, documentSend: { maxSendBytes: config.relay.maxSendBytes } });
    const send = createSendApp({
      ...ports,
      config,
      outbound: env.runtime.outbound,
      parser: env.runtime.parser,
    });
    const res = await api.request('/v1/openapi.json');
    const lambdaDoc = (await res.json()) as Document;
    const documented = new Set<string>();
    for (const [path, item] of Object.entries(lambdaDoc.paths)) {
      for (const m of METHODS) if (item[m]) documented.add(`${m.toUpperCase()} ${path}`);
    }
    // One entry per handler of a route (its middleware too): as a set.
    const servedBy = (app: typeof api) => [
      ...new Set(
        app.routes
          .filter((r) => r.method !== 'ALL' && !isWebInboxPage(r.path))
          .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`),
      ),
    ];
    assert.deepEqual(servedBy(send), [`${SEND_ROUTE.method} ${SEND_ROUTE.path}`]);
    assert.deepEqual([...documented].sort(), [...servedBy(api), ...servedBy(send)].sort());
    // The same document as the local server's, less the local-only presigned-URL route.
    assert.deepEqual(
      lambdaDoc.paths,
      Object.fromEntries(Object.entries(doc.paths).filter(([p]) => !p.startsWith('/v1/blobs/'))),
    );
  });

  it('is generated whatever was imported first (the Lambda handler and the CLI import the core before the app)', async () => {
    // zod-openapi extends zod's prototypes when it loads; schemas built earlier lack `.openapi()`.
    const script = `
      await import('./functions/core/message.ts');
      await import('./functions/core/keys.ts');
      const { createApp } = await import('./functions/api/app.ts');
      const res = await createApp({ index: {}, blobs: {} }).request('/v1/openapi.json');
      const doc = await res.json();
      console.log(res.status, Object.keys(doc.paths ?? {}).length, Object.keys(doc.components?.schemas ?? {}).includes('Attachment'));
    `;
    const r = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: PROJECT_ROOT,
    });
    assert.equal(r.code, 0, r.stderr);
    // No `serveLocalBlobs` and no `send` here, so no /v1/blobs and no …/send route.
    const expected = Object.keys(doc.paths).filter(
      (p) => !p.startsWith('/v1/blobs/') && !p.endsWith('/send'),
    ).length;
    assert.equal(r.stdout.trim(), `200 ${expected} true`);
  });
});
