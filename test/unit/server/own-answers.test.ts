/**
 * The gateway's own answers besides error pages, the redirect to https (https-edge.ts) and a
 * PURGE's result (purge-method.ts), go through the one Answer (answer.ts recordAnswer, respond.ts
 * sendOwn) like every other: the request's id in X-Request-Id and in Cache-Status, the state
 * recorded once for Cache-Status and the access log, Via, and HEAD answered with the head alone.
 * Through the real request path (test/helpers/request-path.ts), read off the wire.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { PurgeSelector } from '../../../src/cache/stores/cache-store.js';
import { startRequestPath, type RequestPath } from '../../helpers/request-path.js';

let path: RequestPath | undefined;
afterEach(async () => {
  await path?.close();
  path = undefined;
});

/** A request path that redirects plain HTTP for a.test (its certificate names it) to port 8443. */
async function redirecting(): Promise<RequestPath> {
  path = await startRequestPath({
    config: { tls: { redirectHttp: true } },
    tls: { hasCertificate: (_site, host) => host === 'a.test', redirectPort: () => 8443 },
  });
  return path;
}

describe('the redirect to https', () => {
  it('carries the request id, Cache-Status and Via beside its Location, and is accounted for as bypass', async () => {
    const p = await redirecting();
    const r = await p.get('/page?x=1', { host: 'a.test', 'x-request-id': 'redirect-1' });
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe('https://a.test:8443/page?x=1');
    expect(r.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(r.body).toBe('Moved to https://a.test:8443/page?x=1\n');
    expect(r.headers['content-length']).toBe(String(Buffer.byteLength(r.body)));
    expect(r.headers['x-request-id']).toBe('redirect-1');
    expect(r.cacheStatus).toBe('crowdgate; fwd=bypass; detail="https-redirect rid=redirect-1"');
    expect(r.headers.via).toBe('1.1 crowdgate');
    expect([r.state, r.log['status'], r.log['requestId']]).toEqual(['bypass', 308, 'redirect-1']);
    expect([p.fetcher.calls.length, p.forwarder.calls.length]).toEqual([0, 0]);
    // A Host the certificate does not name is not redirected: the edge above is what decides.
    p.fetcher.script = [p.page('the page', { 'cache-control': 'max-age=60' })];
    const plain = await p.get('/page', { host: 'b.test' });
    expect([plain.status, plain.body, plain.headers.location]).toEqual([200, 'the page', undefined]);
  });

  // The redirect goes out over plain HTTP/1.1 only, where node:http also drops a HEAD answer's
  // body itself: `body` pins what the client gets; the head (same Content-Length and Location,
  // its own id and Cache-Status) is what the Answer decides.
  it('answers HEAD with the same head and no body, its own request id included', async () => {
    const p = await redirecting();
    const get = await p.get('/page', { host: 'a.test' });
    const head = await p.get('/page', { host: 'a.test', 'x-request-id': 'redirect-head' }, 'HEAD');
    expect(head.status).toBe(308);
    expect(head.body).toBe('');
    expect(head.headers.location).toBe(get.headers.location);
    expect(head.headers['content-length']).toBe(String(Buffer.byteLength(get.body)));
    expect(head.headers['x-request-id']).toBe('redirect-head');
    expect(head.cacheStatus).toBe('crowdgate; fwd=bypass; detail="https-redirect rid=redirect-head"');
    expect([head.state, head.log['method'], head.log['status']]).toEqual(['bypass', 'HEAD', 308]);
  });
});

describe('the PURGE answer', () => {
  // A PURGE is never a HEAD (the method is PURGE), so there is no HEAD case to pin here: its
  // Answer says head: false by construction, and the body always goes out.
  it('carries the request id, Cache-Status and Via beside its JSON and no-store, and is accounted for as bypass', async () => {
    const p = (path = await startRequestPath());
    const asked: PurgeSelector[][] = [];
    p.deps.purge = async (selectors) => {
      asked.push([...selectors]);
      return { purged: 2 };
    };
    const r = await p.get('/wiki/Page', { host: 'wiki.test', 'x-request-id': 'purge-1' }, 'PURGE');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ status: 200, purged: 2, mode: 'hard', url: '/wiki/Page' });
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.headers['content-length']).toBe(String(Buffer.byteLength(r.body)));
    expect(r.headers['x-request-id']).toBe('purge-1');
    expect(r.cacheStatus).toBe('crowdgate; fwd=bypass; detail="purge rid=purge-1"');
    expect(r.headers.via).toBe('1.1 crowdgate');
    expect([r.state, r.log['method'], r.log['status'], r.log['requestId']]).toEqual(['bypass', 'PURGE', 200, 'purge-1']);
    expect(asked).toHaveLength(1); // both schemes' selectors in one purge
    expect(asked[0]).toHaveLength(4); // per scheme: the Host's key, and it followed by key-template parts

    // Nothing stored: 404, and a generated id, the same in X-Request-Id, Cache-Status and the log.
    p.deps.purge = async () => ({ purged: 0 });
    const none = await p.get('/wiki/Other', { host: 'wiki.test' }, 'PURGE');
    expect(none.status).toBe(404);
    const id = none.headers['x-request-id'];
    expect(typeof id).toBe('string');
    expect(none.cacheStatus).toBe(`crowdgate; fwd=bypass; detail="purge rid=${String(id)}"`);
    expect([none.state, none.log['requestId']]).toEqual(['bypass', id]);
  });
});
