import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { makeProbePath, parseExpectStatus, probe } from '../../../src/origin/health-check.js';
import { startTestOrigin, type TestOrigin } from '../../helpers/test-origin.js';

const origins: TestOrigin[] = [];
async function origin(name?: string): Promise<TestOrigin> {
  const o = await startTestOrigin(name === undefined ? {} : { name });
  origins.push(o);
  return o;
}
afterEach(async () => {
  await Promise.all(origins.splice(0).map((o) => o.close()));
});

describe('parseExpectStatus', () => {
  it.each([
    ['2xx,3xx', 200, true],
    ['2xx,3xx', 204, true],
    ['2xx,3xx', 301, true],
    ['2xx,3xx', 404, false],
    ['2xx,3xx', 503, false],
    ['200,204', 200, true],
    ['200,204', 204, true],
    ['200,204', 201, false],
    ['2xx,404', 404, true],
    ['2xx,404', 403, false],
    ['5xx', 500, true],
    [' 200 , 3XX ', 302, true],
  ])('"%s" accepts %i: %s', (spec, status, expected) => {
    expect(parseExpectStatus(spec)(status)).toBe(expected);
  });

  it.each(['abc', '2x', '600', '2xx,,3xx', ''])('rejects "%s" with a message naming it', (spec) => {
    expect(() => parseExpectStatus(spec)).toThrow(/expectStatus/);
  });
});

describe('makeProbePath', () => {
  it.each([
    ['http://127.0.0.1:3000', '/health', '/health'],
    ['http://127.0.0.1:3000/', '/health', '/health'],
    ['http://127.0.0.1:3000/app', '/health', '/app/health'],
    ['http://127.0.0.1:3000/app/', '/', '/app/'],
  ])('base %s + %s -> %s', (base, path, expected) => {
    expect(makeProbePath(new URL(base), path)).toBe(expected);
  });
});

describe('probe against a real origin', () => {
  const all2xx3xx = parseExpectStatus('2xx,3xx');

  // Timeout rows use 150 ms against a 1 s delay; the others allow 2 s so a loaded machine cannot flip them.
  it.each([
    { script: {}, timeoutMs: 2_000, ok: true, status: 200, error: undefined },
    { script: { status: 204 }, timeoutMs: 2_000, ok: true, status: 204, error: undefined },
    { script: { status: 301, headers: { location: '/' } }, timeoutMs: 2_000, ok: true, status: 301, error: undefined },
    { script: { status: 404 }, timeoutMs: 2_000, ok: false, status: 404, error: 'status 404' },
    { script: { status: 503 }, timeoutMs: 2_000, ok: false, status: 503, error: 'status 503' },
    { script: { reset: true }, timeoutMs: 2_000, ok: false, status: undefined, error: 'ECONNRESET' },
    { script: { hang: true }, timeoutMs: 150, ok: false, status: undefined, error: 'timeout' },
    { script: { delayMs: 1_000 }, timeoutMs: 150, ok: false, status: undefined, error: 'timeout' },
    { script: { delayMs: 1_000, delayBody: true }, timeoutMs: 150, ok: false, status: 200, error: 'timeout' },
  ])('$script -> ok=$ok status=$status error=$error', async ({ script, timeoutMs, ok, status, error }) => {
    const o = await origin();
    o.route('/health', script);
    const r = await probe({ url: new URL(o.url), path: '/health', timeoutMs, isExpectedStatus: all2xx3xx });
    expect(r.ok).toBe(ok);
    if (status === undefined) expect(r.status).toBeUndefined();
    else expect(r.status).toBe(status);
    if (error === undefined) expect(r.error).toBeUndefined();
    else expect(r.error).toBe(error);
    expect(o.count('/health')).toBe(1);
  });

  it('fails with ECONNREFUSED when nothing listens', async () => {
    const o = await origin();
    o.kill();
    const r = await probe({ url: new URL(o.url), path: '/', timeoutMs: 1_000, isExpectedStatus: all2xx3xx });
    expect(r).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
  });

  it('sends GET with the member host, the base path prefix, and closes its connection', async () => {
    const o = await origin();
    const r = await probe({ url: new URL(`${o.url}/app/`), path: '/health', timeoutMs: 1_000, isExpectedStatus: all2xx3xx });
    expect(r.ok).toBe(true);
    const [req] = o.requests;
    expect(req).toMatchObject({ method: 'GET', url: '/app/health' });
    expect(req?.headers.host).toBe(`127.0.0.1:${o.port}`);
    expect(req?.headers.connection).toBe('close');
    expect(req?.headers['user-agent']).toBe('crowdgate-health-check');
  });

  it('settles as aborted as soon as the signal fires, well before its timeout', async () => {
    const o = await origin();
    o.route('/health', { hang: true });
    const ac = new AbortController();
    const pending = probe({ url: new URL(o.url), path: '/health', timeoutMs: 10_000, isExpectedStatus: all2xx3xx, signal: ac.signal });
    setImmediate(() => ac.abort());
    const r = await pending;
    expect(r).toMatchObject({ ok: false, error: 'aborted' });
    expect(r.durationMs).toBeLessThan(5_000);
  });
});

describe('startTestOrigin (the scriptable origin every integration test uses)', () => {
  it('answers 200 by default and records method, url, headers and body length', async () => {
    const o = await origin('a');
    const res = await fetch(`${o.url}/p?q=1`, { method: 'POST', body: 'hello', headers: { 'x-test': 'yes' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-origin-name')).toBe('a');
    expect(res.headers.get('x-origin-seq')).toBe('1');
    expect(await res.text()).toBe('origin a POST /p?q=1\n');
    expect(o.requests).toHaveLength(1);
    expect(o.requests[0]).toMatchObject({ seq: 1, method: 'POST', url: '/p?q=1', path: '/p', bodyLength: 5 });
    expect(o.requests[0]?.headers['x-test']).toBe('yes');
  });

  it('counts by path, full URL, RegExp and predicate', async () => {
    const o = await origin();
    for (const u of ['/a', '/a?x=1', '/b', '/a']) await (await fetch(o.url + u)).text();
    expect(o.count()).toBe(4);
    expect(o.count('/a')).toBe(3);
    expect(o.count('/a?x=1')).toBe(1);
    expect(o.count(/^\/b/)).toBe(1);
    expect(o.count((r) => r.seq > 2)).toBe(2);
    o.reset();
    expect(o.count()).toBe(0);
  });

  it('scripts status, headers and body per path, and a handler for the rest', async () => {
    const o = await origin();
    o.route('/x', { status: 201, headers: { 'cache-control': 'max-age=60' }, body: 'made' });
    o.setHandler((_req, res) => res.end('custom'));
    const x = await fetch(`${o.url}/x`);
    expect([x.status, x.headers.get('cache-control'), await x.text()]).toEqual([201, 'max-age=60', 'made']);
    expect(await (await fetch(`${o.url}/other`)).text()).toBe('custom');
    o.unroute('/x');
    expect(await (await fetch(`${o.url}/x`)).text()).toBe('custom');
  });

  it('tracks in-flight and peak concurrency while answers are held', async () => {
    const o = await origin();
    const held: ServerResponse[] = [];
    o.route('/held', (_req, res) => held.push(res));
    const pending = [1, 2, 3].map(() => fetch(`${o.url}/held`).then((r) => r.text()));
    while (o.inflight < 3) await new Promise((r) => setTimeout(r, 2));
    for (const res of held) res.end('done');
    expect(await Promise.all(pending)).toEqual(['done', 'done', 'done']);
    expect(o.peakInflight).toBe(3);
    expect(o.inflight).toBe(0);
  });

  it('kill() refuses connections and reopen() serves again on the same port', async () => {
    const o = await origin();
    o.kill();
    await expect(fetch(o.url)).rejects.toThrow();
    await o.reopen();
    expect((await fetch(o.url)).status).toBe(200);
  });

  it('close() resolves even with a hanging request and a keep-alive socket open', async () => {
    const o = await origin();
    o.route('/hang', { hang: true });
    await (await fetch(o.url)).text(); // leaves an idle keep-alive socket
    const hanging = fetch(`${o.url}/hang`).catch((e: unknown) => e);
    while (o.inflight === 0) await new Promise((r) => setImmediate(r));
    await o.close();
    expect(await hanging).toBeInstanceOf(Error);
    expect(o.server.listening).toBe(false);
  });
});
