/**
 * A keep-alive connection the origin closes as idle just as the gateway sends a request on it
 * (gunicorn closes idle connections after 2 s without a `Keep-Alive: timeout` hint, so the
 * gateway cannot know): the reset must not reach the client as `502 origin_reset`, nor count
 * against the member. An idempotent request without a body is sent once more on a new
 * connection; a POST never is; a reset on a new connection is not retried (the ten-resets test
 * in failure-amplification.test.ts pins that).
 *
 * The race is made deterministic: the origin answers a connection's first request and drops
 * (destroys the socket, unanswered) any later request arriving on it, which is what the gateway
 * sees when the origin's idle close crosses its request on the wire. It sends no Keep-Alive
 * hint (Node's server adds one unless keepAliveTimeout is 0).
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { siteFor, type StartedGateway } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import { startTestOrigin, type RecordedRequest, type TestOrigin } from '../helpers/test-origin.js';
import { REUSED_RESET_WINDOW_MS } from '../../src/origin/fetch.js';

const { cleanups, gateway } = useFixtures();

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

async function call(url: string, init: { method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await request(url, init);
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body: await res.body.text() };
}

/** A GET with node:http through `agent`: its status, whether it reused a socket, and two headers. */
function get(url: string, agent: http.Agent): Promise<{ status: number; reused: boolean; keepAlive?: string; connection?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, keepAlive: res.headers['keep-alive'] as string | undefined, connection: res.headers.connection }),
      );
    });
    req.on('error', reject);
  });
}

interface ClosingOrigin {
  o: TestOrigin;
  /** Requests that arrived on a connection that had answered before: dropped unanswered. */
  dropped: RecordedRequest[];
}

/** An origin that closes every keep-alive connection after one answer, without saying so. */
async function closingOrigin(name: string, cacheControl: string): Promise<ClosingOrigin> {
  const o = await startTestOrigin({ name, keepAliveTimeoutMs: 0 });
  cleanups.push(() => o.close());
  const answered = new WeakSet<Socket>();
  const dropped: RecordedRequest[] = [];
  o.setHandler((req, res, rec) => {
    if (answered.has(req.socket)) {
      dropped.push(rec);
      req.socket.destroy();
      return;
    }
    answered.add(req.socket);
    const body = `${name} ${rec.method} ${rec.url}`;
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cacheControl, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return { o, dropped };
}

async function metricsOf(g: StartedGateway): Promise<string> {
  return (await request(`${g.adminUrl}/metrics`)).body.text();
}

/** crowdgate_origin_requests_total summed over members and kinds, by outcome. */
function originOutcomes(metrics: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(/^crowdgate_origin_requests_total\{([^}]*)\} (\S+)$/gm)) {
    const outcome = /outcome="([^"]+)"/.exec(m[1]!)![1]!;
    out[outcome] = (out[outcome] ?? 0) + Number(m[2]);
  }
  return out;
}

function gauge(metrics: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(new RegExp(`^${name}\\{site="test",origin="([^"]+)"\\} (\\S+)$`, 'gm'))) out[m[1]!] = Number(m[2]);
  return out;
}

/**
 * Every client got the origin's 200; every dropped request was sent again and answered (the
 * answer the client got is that retry's); the resets counted as `reset_reused`, never as
 * `reset`, and no member was ejected nor its breaker opened although one counted failure would
 * have done both (passive and circuit consecutiveFailures: 1).
 */
async function expectRetriedAndHealthy(g: StartedGateway, origins: ClosingOrigin[], answers: Array<[string, Answer]>): Promise<void> {
  for (const [path, a] of answers) {
    expect({ path, status: a.status, error: a.headers['x-crowdgate-error'] }).toEqual({ path, status: 200, error: undefined });
    expect(a.body).toMatch(new RegExp(` GET ${path}$`));
  }
  const dropped = origins.flatMap((c) => c.dropped);
  expect(dropped.length, 'requests that met a connection the origin had closed').toBeGreaterThanOrEqual(2);
  const seen = origins.flatMap((c) => c.o.requests);
  for (const d of dropped) {
    const answered = seen.filter((r) => r.url === d.url && !dropped.includes(r));
    expect({ url: d.url, answered: answered.length }).toEqual({ url: d.url, answered: 1 });
    const [, a] = answers.find(([p]) => p === d.url)!;
    expect(a.headers['x-origin-seq']).toBe(String(answered[0]!.seq));
  }
  // Nothing else was sent twice: one request per page, plus one per drop.
  expect(seen.length).toBe(answers.length + dropped.length);
  const m = await metricsOf(g);
  const outcomes = originOutcomes(m);
  expect(outcomes).toEqual({ ok: answers.length, reset_reused: dropped.length });
  const healthy = gauge(m, 'crowdgate_origin_healthy');
  const circuit = gauge(m, 'crowdgate_circuit_state');
  expect(Object.values(healthy)).toEqual(origins.map(() => 1));
  expect(Object.values(circuit)).toEqual(origins.map(() => 0));
}

/** Two members that count one failure: a counted reset would eject one and open its breaker. */
const strict = { passive: { consecutiveFailures: 1, ejectMs: 60_000 }, circuit: { consecutiveFailures: 1 } };

describe('reused keep-alive connection closed by the origin', () => {
  it('the origin under test sends no Keep-Alive hint and drops a second request on a connection', async () => {
    const c = await closingOrigin('a', 'no-store');
    const agent = new http.Agent({ keepAlive: true });
    cleanups.push(() => agent.destroy());
    const first = await get(`${c.o.url}/first`, agent);
    expect(first).toMatchObject({ status: 200, reused: false, keepAlive: undefined, connection: 'keep-alive' });
    await expect(get(`${c.o.url}/second`, agent)).rejects.toThrow(/socket hang up/);
    expect(c.dropped.map((r) => r.url)).toEqual(['/second']);
  });

  it('a cache fill on a reused connection the origin closed is sent again on a new one: 200, and the member is not blamed', async () => {
    const a = await closingOrigin('a', 'public, max-age=60');
    const b = await closingOrigin('b', 'public, max-age=60');
    const g = await gateway({ sites: [siteFor([a.o.url, b.o.url], strict)] });
    const answers: Array<[string, Answer]> = [];
    for (let i = 1; i <= 8; i++) {
      const path = `/page/${i}`;
      const r = await call(`${g.url}${path}`);
      expect(r.headers['cache-status'], path).toMatch(/fwd=uri-miss/);
      answers.push([path, r]);
    }
    await expectRetriedAndHealthy(g, [a, b], answers);
  });

  it('a pass-through GET on a reused connection the origin closed is sent again on a new one: 200, and the member is not blamed', async () => {
    const a = await closingOrigin('a', 'private, no-store');
    const b = await closingOrigin('b', 'private, no-store');
    const g = await gateway({
      sites: [siteFor([a.o.url, b.o.url], { ...strict, routes: [{ name: 'private', match: { pathPrefix: '/private/' }, cache: { enabled: false } }] })],
    });
    const answers: Array<[string, Answer]> = [];
    for (let i = 1; i <= 8; i++) {
      const path = `/private/${i}`;
      const r = await call(`${g.url}${path}`);
      expect(r.headers['cache-status'], path).toMatch(/fwd=bypass/);
      answers.push([path, r]);
    }
    await expectRetriedAndHealthy(g, [a, b], answers);
  });

  it('a reset on a new connection is not sent again (the origin refusing work): a pass-through GET gets 502 origin_reset once', async () => {
    const o = await startTestOrigin({ name: 'a' });
    cleanups.push(() => o.close());
    o.route('/private/r', { reset: true });
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'private', match: { pathPrefix: '/private/' }, cache: { enabled: false } }] })],
    });
    const r = await call(`${g.url}/private/r`); // the gateway's first request: a new connection
    expect({ status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ status: 502, error: 'origin_reset' });
    expect(o.count('/private/r')).toBe(1);
    expect(originOutcomes(await metricsOf(g))).toEqual({ reset: 1 });
  });

  it.each([
    ['a cache fill', 'public, max-age=60', '/page/slow', /fwd=uri-miss/],
    ['a pass-through GET', 'private, no-store', '/private/slow', /fwd=bypass/],
  ])('%s whose reused connection is reset after the origin worked on it for a while (a worker that died) is a counted reset, not sent again', async (_n, cacheControl, path) => {
    const o = await startTestOrigin({ name: 'a', keepAliveTimeoutMs: 0 });
    cleanups.push(() => o.close());
    const answered = new WeakSet<Socket>();
    o.setHandler((req, res) => {
      if (answered.has(req.socket)) {
        setTimeout(() => req.socket.destroy(), REUSED_RESET_WINDOW_MS + 200); // worked, then died
        return;
      }
      answered.add(req.socket);
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cacheControl, 'content-length': 2 });
      res.end('ok');
    });
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'private', match: { pathPrefix: '/private/' }, cache: { enabled: false } }] })],
    });
    expect((await call(`${g.url}${path.replace('slow', 'warm')}`)).status).toBe(200); // leaves an idle connection to reuse
    const r = await call(`${g.url}${path}`);
    expect({ status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ status: 502, error: 'origin_reset' });
    expect(o.count(path)).toBe(1);
    expect(originOutcomes(await metricsOf(g))).toEqual({ ok: 1, reset: 1 });
  });

  it('a POST on a reused connection the origin closed is not sent again: 502 origin_reset, and the origin saw it once', async () => {
    const a = await closingOrigin('a', 'private, no-store');
    const g = await gateway({
      sites: [siteFor([a.o.url], { routes: [{ name: 'private', match: { pathPrefix: '/private/' }, cache: { enabled: false } }] })],
    });
    expect((await call(`${g.url}/private/warm`)).status).toBe(200); // leaves an idle connection to reuse
    const r = await call(`${g.url}/private/form`, { method: 'POST', body: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect({ status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ status: 502, error: 'origin_reset' });
    expect(a.dropped.map((d) => `${d.method} ${d.url} ${d.bodyLength}`)).toEqual(['POST /private/form 3']);
    expect(a.o.count((d) => d.method === 'POST')).toBe(1);
    expect(originOutcomes(await metricsOf(g))).toEqual({ ok: 1, reset_reused: 1 });
  });
});
