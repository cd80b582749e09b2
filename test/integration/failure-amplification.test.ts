/**
 * Failure amplification: the ways a protective mechanism (health checks, passive ejection, the
 * circuit breaker, the limiter, must-revalidate strictness) used to take a healthy, or briefly
 * unhealthy, site down. Every test asserts both what the clients got and what the origin saw.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Agent as UndiciAgent, request } from 'undici';
import { MAX_FREED_ANSWERS } from '../../src/origin/member.js';
import { ManualClock } from '../../src/clock.js';
import { siteFor, type StartedGateway } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import { makeTestCa } from '../helpers/tls-certs.js';
import type { OriginHandler, TestOrigin } from '../helpers/test-origin.js';

const { origin, gateway } = useFixtures();

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
  ms: number;
}

async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const started = performance.now();
  const res = await request(url, init);
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body, ms: performance.now() - started };
}

/** A GET carrying `Expect: 100-continue`, with node:http (undici refuses to send Expect at all). */
function getWithExpect(url: string): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'GET', agent: false, headers: { expect: '100-continue' } });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers as Record<string, string>,
          body: Buffer.concat(chunks).toString(),
          ms: performance.now() - started,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` up to `tries` times, `everyMs` real ms apart; returns whether it came true. */
async function eventually(pred: () => boolean | Promise<boolean>, tries = 100, everyMs = 20): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await pred()) return true;
    await sleep(everyMs);
  }
  return pred();
}

async function metricsOf(g: StartedGateway): Promise<string> {
  return (await request(`${g.adminUrl}/metrics`)).body.text();
}

/** Every sample of one gauge for site "test", by origin label. */
function gauge(metrics: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = new RegExp(`^${name}\\{site="test",origin="([^"]+)"\\} (\\S+)$`, 'gm');
  for (const m of metrics.matchAll(re)) out[m[1]!] = Number(m[2]);
  return out;
}

/** The breaker stayed closed and every member stayed routable. */
async function expectNothingTripped(g: StartedGateway, members: number): Promise<void> {
  const m = await metricsOf(g);
  const circuit = gauge(m, 'crowdgate_circuit_state');
  const healthy = gauge(m, 'crowdgate_origin_healthy');
  expect(Object.keys(circuit)).toHaveLength(members);
  expect(Object.values(circuit).every((v) => v === 0), `crowdgate_circuit_state ${JSON.stringify(circuit)}`).toBe(true);
  expect(Object.keys(healthy)).toHaveLength(members);
  expect(Object.values(healthy).every((v) => v === 1), `crowdgate_origin_healthy ${JSON.stringify(healthy)}`).toBe(true);
}

/** The answer came from the origin (not from the gateway's error pages): it carries x-origin-seq. */
/** Visitors ask for pages one after another until `probes` probes of / happened (5 s at most): every page answered 200. */
async function expectServedWhileProbed(g: StartedGateway, o: TestOrigin, probes: number): Promise<void> {
  const statuses: number[] = [];
  const until = performance.now() + 5_000;
  for (let i = 0; o.count('/') < probes && performance.now() < until; i++) statuses.push((await call(`${g.url}/p/${i}`)).status);
  expect(o.count('/'), `${probes} probes of / happened`).toBeGreaterThanOrEqual(probes);
  expect(statuses.every((s) => s === 200)).toBe(true);
}

/** The only member is up, its probes never took it down, and `warning` was said once, with `fields`. */
async function expectUpWithOneWarning(g: StartedGateway, warning: string, fields: Record<string, unknown>): Promise<void> {
  const body = (await (await request(`${g.adminUrl}/readyz`)).body.json()) as { sites: Array<{ state: string }> };
  expect(body.sites[0]!.state).toBe('up');
  expect(g.logs.some((l) => l.msg === 'origin member down (health check)')).toBe(false);
  const warned = g.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(warning));
  expect(warned).toHaveLength(1);
  expect(warned[0]).toMatchObject({ site: 'test', path: '/', ...fields });
}

function expectFromOrigin(r: Answer, status: number, what: string): void {
  expect({ what, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ what, status, error: undefined });
  expect(r.headers['x-origin-seq'], `${what}: x-origin-seq`).toBeDefined();
}

/** A 502 from the gateway after it really tried the origin (not a refusal to try). */
function expectTriedAndUnreachable(r: Answer, what: string): void {
  expect({ what, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ what, status: 502, error: 'origin_unreachable' });
}

function expectStale(r: Answer, body: string, what: string): void {
  expect({ what, status: r.status, body: r.body }).toEqual({ what, status: 200, body });
  expect(r.headers['cache-status'], `${what}: cache-status`).toMatch(/detail="stale-/);
}

/** A ManualClock on a whole second, so Date headers (second resolution) carry no hidden age. */
const manualClock = () => new ManualClock(Math.floor(Date.now() / 1000) * 1000);

/**
 * A 200 page whose Date header comes from the gateway's ManualClock: with Node's real-time Date,
 * a clock moved seconds ahead would make every later fill arrive already aged (RFC 9111 §4.2.3).
 */
function clockedPage(clock: ManualClock, cacheControl: string, body: () => string): OriginHandler {
  return (_req, res) => {
    const b = body();
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': cacheControl,
      date: new Date(clock.now()).toUTCString(),
      'content-length': Buffer.byteLength(b),
    });
    res.end(b);
  };
}

const staleRoute = { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, graceSeconds: 60 } }] };

describe('failure amplification: active health checks', () => {
  it.each([404, 401])('treats an origin whose / answers %i as alive by default: pages flow and /readyz is ready', async (status) => {
    const o = await origin();
    o.route('/', { status, body: 'not here' });
    const g = await gateway({ sites: [siteFor([o.url], { healthCheck: { enabled: true, intervalMs: 50 } })] });
    expect(await eventually(() => o.count('/') >= 3), 'three probes of / happened').toBe(true);
    for (let i = 0; i < 5; i++) expectFromOrigin(await call(`${g.url}/page/${i}`), 200, `/page/${i}`);
    expect(o.count(/^\/page\//)).toBe(5);
    const ready = await request(`${g.adminUrl}/readyz`);
    const body = (await ready.body.json()) as { sites: Array<{ state: string; origins: Array<{ active: string }> }> };
    expect(ready.statusCode).toBe(200);
    expect(body.sites[0]!.state).toBe('up');
    expect(body.sites[0]!.origins[0]!.active).toBe('up');
    // Each probe is counted by its verdict (the operator sees they run and pass).
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    const checks = (result: string) => Number(metrics.match(new RegExp(`crowdgate_origin_health_checks_total\\{[^}]*result="${result}"[^}]*\\} (\\d+)`))?.[1]);
    expect(checks('pass')).toBeGreaterThanOrEqual(3);
    expect(checks('fail')).toBe(0);
    expect(checks('excused')).toBe(0);
  });

  it('still counts a probe answered 503 as a failure: after unhealthyThreshold of them /readyz says down', async () => {
    // The negative control for the test above: "below 500 is alive" must not become "anything is alive".
    const o = await origin();
    o.route('/', { status: 503, body: 'down' });
    const g = await gateway({ sites: [siteFor([o.url], { healthCheck: { enabled: true, intervalMs: 50 } })] });
    expect(await eventually(() => o.count('/') >= 5), 'five probes of / happened').toBe(true);
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_origin_health_checks_total\{[^}]*result="fail"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/crowdgate_origin_health_checks_total\{[^}]*result="pass"[^}]*\} 0/);
    const ready = await request(`${g.adminUrl}/readyz`);
    const body = (await ready.body.json()) as { sites: Array<{ state: string }> };
    // The instance stays ready (a load balancer must not pull every instance of a shared
    // origin, and their stale copies with them); the body says the origin is down.
    expect(ready.statusCode).toBe(200);
    expect(body.sites[0]!.state).toBe('down');
    // A check that must know the origin is reached asks for it.
    const strict = await request(`${g.adminUrl}/readyz?origin`);
    expect(strict.statusCode).toBe(503);
    expect(((await strict.body.json()) as { status: string }).status).toBe('not ready');
  });

  it('keeps a member the probes found down while live requests also get 500s (a database outage): only an answer below 500 brings it up', async () => {
    const o = await origin();
    let status = 500;
    o.route('/', { status: 500, body: 'Error establishing a database connection' });
    o.route('/page', (_req, res) => {
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status === 500 ? 'Error establishing a database connection' : 'page');
    });
    // Probes 50 ms apart reach the verdict; then the next one is far off, so what follows is
    // what live requests decide.
    const g = await gateway({ sites: [siteFor([o.url], { healthCheck: { enabled: true, intervalMs: 60_000, timeoutMs: 500 } })] });
    const stateOf = async () => ((await (await request(`${g.adminUrl}/readyz`)).body.json()) as { sites: Array<{ state: string }> }).sites[0]!.state;
    expect(await eventually(async () => (await stateOf()) === 'down', 250, 20), 'the probes found it down').toBe(true);
    for (let i = 0; i < 3; i++) expect((await call(`${g.url}/page`)).status).toBe(500);
    expect(o.count('/page')).toBe(3); // tried all the same
    expect(await stateOf()).toBe('down');
    status = 200; // the database is back: the next answer below 500 ends the 'down'
    expect((await call(`${g.url}/page`)).status).toBe(200);
    expect(await stateOf()).toBe('up');
  });

  it('a page of an origin its probes found down (500s, a database outage) is served stale as origin_down, not unreachable (observability trial)', async () => {
    const clock = manualClock();
    const o = await origin();
    let dbUp = true;
    o.route('/', (_req, res) => {
      res.writeHead(dbUp ? 200 : 500, { 'content-type': 'text/plain' });
      res.end(dbUp ? 'home' : 'Error establishing a database connection');
    });
    o.route('/page', clockedPage(clock, 'public, max-age=1', () => 'page'));
    const g = await gateway({ sites: [siteFor([o.url], { ...staleRoute, healthCheck: { enabled: true, intervalMs: 50 } })] }, { clock });
    expect((await call(`${g.url}/page`)).body).toBe('page');
    dbUp = false;
    o.route('/page', { status: 500, body: 'Error establishing a database connection' });
    const stateOf = async () => ((await (await request(`${g.adminUrl}/readyz`)).body.json()) as { sites: Array<{ state: string }> }).sites[0]!.state;
    expect(await eventually(async () => (await stateOf()) === 'down'), 'the probes found it down').toBe(true);
    clock.advance(2_000);
    const r = await call(`${g.url}/page`);
    expectStale(r, 'page', '/page with the origin down');
    expect(r.headers['cache-status'], r.headers['cache-status']).toMatch(/detail="stale-origin_down[ "]/);
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/^crowdgate_stale_served_total\{site="test",reason="origin_down"\} 1$/m);
    expect(metrics).not.toMatch(/reason="unreachable"/);
  });

  it('keeps a member whose / is slower than the probe timeout up while it answers pages: no down, no stale, one warning (failure-day trial: a 2.5 s WordPress front page)', async () => {
    const o = await origin();
    o.route('/', { delayMs: 400, body: 'home' });
    const g = await gateway({ sites: [siteFor([o.url], { healthCheck: { enabled: true, intervalMs: 50, timeoutMs: 100 } })] });
    // Visitors keep asking for pages while the probes time out, one after another.
    await expectServedWhileProbed(g, o, 8);
    await expectUpWithOneWarning(g, 'health check timed out while the member answered requests', { timeoutMs: 100 });
  });

  it('keeps the only member up while its / answers 500 and its pages answer: no down, no stale, one warning (failure-day trial: the member flipped down and up every 15 s)', async () => {
    const o = await origin();
    o.route('/', { status: 500, body: 'Fatal error' });
    const g = await gateway({ sites: [siteFor([o.url], { healthCheck: { enabled: true, intervalMs: 50 } })] });
    await expectServedWhileProbed(g, o, 10);
    await expectUpWithOneWarning(g, 'health check answered 5xx while the member answered requests', { status: 500 });
  });

  it('does not mark a member down from unknown on one failed probe: traffic keeps flowing, nobody gets no_healthy_origin', async () => {
    const o = await origin();
    // The first probe fails; the next ones pass, slowly, so a member wrongly marked down by the
    // first one would stay down (healthyThreshold passes) long enough for the requests below.
    let probes = 0;
    o.route('/', (_req, res) => {
      probes++;
      if (probes === 1) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('starting');
        return;
      }
      setTimeout(() => res.end('ok'), 300);
    });
    const g = await gateway({ sites: [siteFor([o.url], { healthCheck: { enabled: true, intervalMs: 50 } })] });
    // The second probe has arrived: the first one's verdict is recorded (probes are sequential).
    expect(await eventually(() => o.count('/') >= 2), 'the second probe started').toBe(true);
    const answers: Answer[] = [];
    for (let i = 0; i < 10; i++) answers.push(await call(`${g.url}/p/${i}`));
    answers.forEach((r, i) => expectFromOrigin(r, 200, `/p/${i}`));
    expect(answers.some((r) => r.headers['x-crowdgate-error'] === 'no_healthy_origin')).toBe(false);
    expect(o.count(/^\/p\//)).toBe(10);
    expect(g.accessLogs().some((l) => l.error === 'no_healthy_origin')).toBe(false);
  });
});

describe('failure amplification: passive ejection and the breaker', () => {
  it('does not eject on a URL that answers 500: /broken gets the origin\'s 500, other pages keep answering 200', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/broken', { status: 500, body: 'app error' });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const broken: Answer[] = [];
    const fine: Answer[] = [];
    for (let i = 0; i < 20; i++) broken.push(await call(`${g.url}/broken`)); // twenty in a row
    for (let i = 0; i < 10; i++) {
      broken.push(await call(`${g.url}/broken`));
      fine.push(await call(`${g.url}/fine/${i}`));
    }
    for (let i = 10; i < 15; i++) fine.push(await call(`${g.url}/fine/${i}`));
    broken.forEach((r, i) => {
      expectFromOrigin(r, 500, `/broken #${i + 1}`);
      expect(r.body).toBe('app error');
    });
    fine.forEach((r, i) => expectFromOrigin(r, 200, `/fine/${i}`));
    expect(o.count('/broken')).toBe(30);
    expect(o.count(/^\/fine\//)).toBe(15);
    await expectNothingTripped(g, 1);
  });

  it('does not eject or trip on one URL that keeps answering 503 or timing out while the members answer other pages (new-user trial)', async () => {
    const [a, b] = [await origin(), await origin()];
    for (const o of [a, b]) {
      // A search whose backend is down, on both members; an export that never answers in time.
      o.route('/search', { status: 503, headers: { 'retry-after': '30', 'cache-control': 'no-store' }, body: 'search is down' });
      o.route('/export', (_req, res) => {
        const t = setTimeout(() => res.end('late'), 3_000); // no head within the response timeout
        res.on('close', () => clearTimeout(t));
      });
    }
    // (undici times response heads on a timer wheel of about a second: 1 s is the shortest that holds.)
    const g = await gateway({ sites: [siteFor([a.url, b.url], { timeouts: { responseHeadersMs: 1_000 } })] });
    expectFromOrigin(await call(`${g.url}/page/0`), 200, '/page/0');
    // Bursts of one URL's failures with nothing else in between (five searchers at once), then a page.
    for (let round = 1; round <= 6; round++) {
      for (let i = 0; i < 8; i++) expect((await call(`${g.url}/search?q=${round}-${i}`)).status).toBe(503);
      expectFromOrigin(await call(`${g.url}/page/${round}`), 200, `/page/${round}`);
    }
    expect(a.count('/search') + b.count('/search')).toBe(48);
    await expectNothingTripped(g, 2);
    // Said at warn, once a minute for the path (gitweb trial: a URL answering 500 for 80 s left
    // only access-log lines).
    const errors = g.logs.filter((l) => String(l.msg).startsWith('origin error') && l.path === '/search');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.status).toBe(503);
    const exports = await Promise.all(Array.from({ length: 6 }, (_, i) => call(`${g.url}/export?n=${i}`)));
    expect(exports.map((e) => e.status)).toEqual(Array(6).fill(504));
    // Said once at warn, with the fix (new-user trial: access-log lines alone).
    const warned = g.logs.filter((l) => String(l.msg).startsWith('origin timeout') && l.path === '/export');
    expect(warned).toHaveLength(1);
    expect(warned[0]!.msg).toMatch(/routes\[\]\.timeouts\.responseHeadersMs/);
    // And the other cause: a page that usually answers quickly waited at the origin, where a
    // longer timeout only answers it later (Apache trial: the line sent the operator to raise
    // it) and a cap on the slow requests answers it sooner.
    expect(warned[0]!.msg).toMatch(/usually answers quickly waited at the origin .* a longer timeout only answers it later, capping the slow requests \(routes\[\]\.maxConcurrent\)/);
    expectFromOrigin(await call(`${g.url}/page/7`), 200, '/page/7');
    expect(a.count(/^\/page\//)).toBeGreaterThan(0);
    expect(b.count(/^\/page\//)).toBeGreaterThan(0);
    await expectNothingTripped(g, 2);
    // A member that fails every page is still ejected (failures across paths count as before).
    for (let i = 0; i < 16; i++) a.route(`/sick/${i}`, { status: 503 });
    for (let i = 0; i < 16; i++) await call(`${g.url}/sick/${i}`);
    const healthy = gauge(await metricsOf(g), 'crowdgate_origin_healthy');
    expect(Object.values(healthy).sort()).toEqual([0, 1]);
  });

  it('does not trip or eject on one client the origin refuses (503 from its per-client rate limit), whatever paths it asks for; failures of many clients still do (attacker trial)', async () => {
    const o = await origin();
    // The origin limits clients by the X-Forwarded-For the gateway writes (nginx's limit_req: 503).
    const limited: OriginHandler = (req, res) => {
      const refused = String(req.headers['x-forwarded-for']).startsWith('203.0.113.');
      res.writeHead(refused ? 503 : 200, { 'content-type': 'text/plain', 'cache-control': 'no-store', ...(refused ? { 'retry-after': '30' } : {}) });
      res.end(refused ? 'rate limited' : 'fine');
    };
    for (const path of ['/page', '/search/p0', '/search/p1', ...Array.from({ length: 20 }, (_, i) => `/search/q${i}`)]) o.route(path, limited);
    const g = await gateway({ sites: [siteFor([o.url])] });
    // (The tests' client is a trusted proxy: its X-Forwarded-For names the client.)
    const as = (client: string, path: string) => call(`${g.url}${path}`, { headers: { 'x-forwarded-for': client } });
    expectFromOrigin(await as('198.51.100.1', '/page'), 200, 'a visitor');
    // One client, alternating two paths (the URL rule alone counted them: the breaker opened at 10).
    for (let i = 0; i < 24; i++) expect((await as('203.0.113.9', `/search/p${i % 2}`)).status).toBe(503);
    await expectNothingTripped(g, 1);
    expectFromOrigin(await as('198.51.100.2', '/page'), 200, 'another visitor');
    // Twenty clients refused in a row, across paths: the member's failures, counted as before.
    for (let i = 0; i < 20; i++) await as(`203.0.113.${10 + i}`, `/search/q${i}`);
    const m = await metricsOf(g);
    const circuit = Object.values(gauge(m, 'crowdgate_circuit_state'));
    const healthy = Object.values(gauge(m, 'crowdgate_origin_healthy'));
    expect(circuit[0] === 2 || healthy[0] === 0, `circuit ${JSON.stringify(circuit)} healthy ${JSON.stringify(healthy)}`).toBe(true);
  });

  it('ejects the member that fails a path the other member answers (a bad deploy on one of two), however well it answers the rest (review)', async () => {
    const [a, b] = [await origin(), await origin()];
    b.route('/article', { status: 502, headers: { 'cache-control': 'no-store' }, body: 'bad gateway' });
    a.route('/article', { headers: { 'cache-control': 'no-store' }, body: 'the article' });
    const g = await gateway({ sites: [siteFor([a.url, b.url], { balance: 'round-robin' })] });
    // Each member gets one /article and one other page per round: b fails half its requests.
    for (let round = 0; round < 12; round++) {
      await call(`${g.url}/article`);
      await call(`${g.url}/article`);
      await call(`${g.url}/other/${round}-a`);
      await call(`${g.url}/other/${round}-b`);
    }
    expect(b.count('/article')).toBeGreaterThan(0);
    const m = await metricsOf(g);
    const bKey = (series: Record<string, number>) => Object.keys(series).find((k) => k.includes(String(new URL(b.url).port)))!;
    const circuit = gauge(m, 'crowdgate_circuit_state');
    const healthy = gauge(m, 'crowdgate_origin_healthy');
    // Its breaker opened on the error rate, or it was ejected: either way it is taken out.
    expect(circuit[bKey(circuit)] === 2 || healthy[bKey(healthy)] === 0, `circuit ${JSON.stringify(circuit)} healthy ${JSON.stringify(healthy)}`).toBe(true);
  });

  it('never ejects or trips on a storm of 4xx answers, even with hair-trigger thresholds', async () => {
    const clock = manualClock();
    const o = await origin();
    for (const [path, status] of [['/missing', 404], ['/forbidden', 403], ['/gone', 410]] as const) o.route(path, { status });
    const g = await gateway(
      {
        sites: [
          siteFor([o.url], {
            passive: { consecutiveFailures: 2 },
            circuit: { consecutiveFailures: 2, errorRatePercent: 1, minRequests: 1 },
          }),
        ],
      },
      { clock },
    );
    const storm: Array<[Answer, number]> = [];
    for (let i = 0; i < 10; i++)
      for (const [path, status] of [['/missing', 404], ['/forbidden', 403], ['/gone', 410]] as const)
        storm.push([await call(`${g.url}${path}?i=${i}`), status]);
    storm.forEach(([r, status], i) => expectFromOrigin(r, status, `4xx #${i + 1}`));
    expect(o.count((r) => ['/missing', '/forbidden', '/gone'].includes(r.path))).toBe(30);
    expectFromOrigin(await call(`${g.url}/after`), 200, '/after');
    await expectNothingTripped(g, 1);
  });

  it('answers an origin status outside 100-599 with 502 origin_bad_response, on a fill and on a pass-through, and counts nothing against the member', async () => {
    const clock = manualClock();
    const o = await origin();
    // Node's server writes any three digits; undici and node:http read them.
    o.route('/odd', (_req, res) => {
      res.writeHead(799, { 'content-type': 'text/plain', 'content-length': '3' });
      res.end('odd');
    });
    const g = await gateway(
      { sites: [siteFor([o.url], { passive: { consecutiveFailures: 2 }, circuit: { consecutiveFailures: 2, errorRatePercent: 1, minRequests: 1 } })] },
      { clock },
    );
    for (const method of ['GET', 'POST', 'GET', 'POST', 'GET']) {
      const r = await call(`${g.url}/odd`, { method });
      expect({ method, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ method, status: 502, error: 'origin_bad_response' });
    }
    expect(o.count('/odd')).toBe(5);
    expectFromOrigin(await call(`${g.url}/after`), 200, '/after');
    await expectNothingTripped(g, 1);
  });

  it('answers an origin framing with Transfer-Encoding: gzip, chunked with 502 origin_bad_response: the gzip bytes are never stored or sent as the page', async () => {
    const clock = manualClock();
    const o = await origin();
    const gz = gzipSync('the page\n');
    o.route('/gz', (_req, res) => {
      // Node chunks the body (the field ends in chunked) and leaves the gzip on the bytes.
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60', 'transfer-encoding': 'gzip, chunked' });
      res.end(gz);
    });
    const g = await gateway(
      { sites: [siteFor([o.url], { passive: { consecutiveFailures: 2 }, circuit: { consecutiveFailures: 2, errorRatePercent: 1, minRequests: 1 } })] },
      { clock },
    );
    for (const method of ['GET', 'POST', 'GET', 'POST', 'GET']) {
      const r = await call(`${g.url}/gz`, { method });
      expect({ method, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ method, status: 502, error: 'origin_bad_response' });
    }
    // Every GET went to the origin: nothing was stored.
    expect(o.count('/gz')).toBe(5);
    // A token that names no coding (the conformance suite sends one): the body is read to the
    // close (RFC 9112 §6.3) and stored, without the field.
    o.route('/token', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60', 'transfer-encoding': 'not-a-coding' });
      res.end('plain bytes');
    });
    const [miss, hit] = [await call(`${g.url}/token`), await call(`${g.url}/token`)];
    expect([miss.status, miss.body, hit.body]).toEqual([200, 'plain bytes', 'plain bytes']);
    expect(hit.headers['cache-status']).toMatch(/; hit/);
    expect(hit.headers['transfer-encoding']).toBeUndefined();
    expectFromOrigin(await call(`${g.url}/after`), 200, '/after');
    await expectNothingTripped(g, 1);
  });

  it('answers a status 099 and an unsolicited 100 Continue before a fill\'s answer with 502 origin_bad_response, not 500 or a reset, and counts nothing against the member', async () => {
    const clock = manualClock();
    const o = await origin();
    // Written on the socket: Node's server refuses a status below 100 and sends 100 only when asked.
    const raw = (head: string) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.socket!.end(`${head}HTTP/1.1 200 OK\r\ncache-control: public, max-age=60\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok`);
    };
    o.route('/s099', (_req, res) => void res.socket!.end('HTTP/1.1 099 Odd\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'));
    o.route('/c100', raw('HTTP/1.1 100 Continue\r\n\r\n'));
    const g = await gateway(
      { sites: [siteFor([o.url], { passive: { consecutiveFailures: 2 }, circuit: { consecutiveFailures: 2, errorRatePercent: 1, minRequests: 1 } })] },
      { clock },
    );
    for (const path of ['/s099', '/c100', '/s099', '/c100']) {
      const r = await call(`${g.url}${path}`);
      expect({ path, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ path, status: 502, error: 'origin_bad_response' });
    }
    // A pass-through reads the interim answer as Node's client does, and passes the 200 on.
    const passed = await call(`${g.url}/c100`, { method: 'POST' });
    expect({ status: passed.status, body: passed.body }).toEqual({ status: 200, body: 'ok' });
    expect(o.count('/s099') + o.count('/c100')).toBe(5);
    expectFromOrigin(await call(`${g.url}/after`), 200, '/after');
    await expectNothingTripped(g, 1);
  });

  it('never stores a body delimited by its connection\'s close that a reset cut short (502 origin_bad_response, nothing blamed); one the close ends is stored as before (php -S answers so)', async () => {
    const clock = manualClock();
    const o = await origin();
    const head = 'HTTP/1.1 200 OK\r\ncache-control: public, max-age=600\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n';
    o.route('/cut', (_req, res) => {
      const socket = res.socket!;
      socket.write(`${head}the first half of`);
      setTimeout(() => socket.resetAndDestroy(), 20);
    });
    o.route('/whole', (_req, res) => void res.socket!.end(`${head}the whole page`));
    const g = await gateway(
      { sites: [siteFor([o.url], { passive: { consecutiveFailures: 2 }, circuit: { consecutiveFailures: 2, errorRatePercent: 1, minRequests: 1 } })] },
      { clock },
    );
    for (let i = 0; i < 3; i++) {
      const r = await call(`${g.url}/cut`);
      expect({ i, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ i, status: 502, error: 'origin_bad_response' });
    }
    expect(o.count('/cut')).toBe(3); // nothing stored
    const first = await call(`${g.url}/whole`);
    const second = await call(`${g.url}/whole`);
    expect([first.body, second.body]).toEqual(['the whole page', 'the whole page']);
    expect(second.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/whole')).toBe(1);
    await expectNothingTripped(g, 1);
  });

  it('answers an origin response head past 16 KiB with 502 origin_bad_response on a fill, as on a pass-through (was 500 internal_error)', async () => {
    const o = await origin();
    o.route('/big-head', { headers: { 'cache-control': 'public, max-age=60', 'x-pad': 'p'.repeat(40_000) }, body: 'ok' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const method of ['GET', 'POST']) {
      const r = await call(`${g.url}/big-head`, { method });
      expect({ method, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ method, status: 502, error: 'origin_bad_response' });
    }
    await expectNothingTripped(g, 1);
  });

  it('never ejects the last usable member: after ten connection resets on /r, /ok still reaches the origin', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/r', { reset: true });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const resets: Answer[] = [];
    for (let i = 0; i < 10; i++) resets.push(await call(`${g.url}/r`));
    resets.forEach((r, i) =>
      expect({ i, status: r.status, error: r.headers['x-crowdgate-error'] }).toEqual({ i, status: 502, error: 'origin_reset' }),
    );
    expect(o.count('/r')).toBe(10); // every one of them was really tried
    for (let i = 0; i < 3; i++) {
      const ok = await call(`${g.url}/ok/${i}`);
      expect(ok.headers['x-crowdgate-error']).not.toBe('no_healthy_origin');
      expect(ok.headers['x-crowdgate-error']).not.toBe('circuit_open');
      expectFromOrigin(ok, 200, `/ok/${i}`);
    }
    expect(o.count(/^\/ok\//)).toBe(3);
  });
});

describe('failure amplification: Expect: 100-continue', () => {
  it('answers twelve GETs with Expect: 100-continue from the origin, never sends Expect on a cache fill, and stays up', async () => {
    const clock = manualClock();
    const o = await origin();
    o.setHandler((req, res) => {
      const cc = req.url!.startsWith('/page/') ? 'public, max-age=60' : 'no-store';
      const body = `origin ${req.url}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cc, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'private', match: { pathPrefix: '/private/' }, cache: { enabled: false } }] })] },
      { clock },
    );
    // Cacheable fills and uncacheable answers (both filled through the cache path) first, in a
    // row, then bypassed routes: a fill that fails on Expect would eject the member by the fifth.
    const urls: string[] = [];
    for (let i = 0; i < 4; i++) urls.push(`/page/${i}`, `/nostore/${i}`);
    for (let i = 0; i < 4; i++) urls.push(`/private/${i}`);
    const answers: Answer[] = [];
    for (const u of urls) answers.push(await getWithExpect(`${g.url}${u}`));
    answers.forEach((r, i) => {
      expectFromOrigin(r, 200, `${urls[i]} with Expect`);
      expect(r.body).toBe(`origin ${urls[i]}`);
    });
    for (const u of urls) expect(o.count(u), `origin saw ${u}`).toBe(1);
    const fills = o.requests.filter((r) => r.path.startsWith('/page/') || r.path.startsWith('/nostore/'));
    expect(fills).toHaveLength(8);
    expect(fills.filter((r) => r.headers.expect !== undefined).map((r) => r.url)).toEqual([]);
    // The site was not taken down: normal requests still answer from the origin, or the cache.
    for (let i = 0; i < 5; i++) expectFromOrigin(await call(`${g.url}/after/${i}`), 200, `/after/${i}`);
    const hit = await call(`${g.url}/page/0`);
    expect(hit.status).toBe(200);
    expect(hit.headers['cache-status']).toMatch(/crowdgate; hit/);
    await expectNothingTripped(g, 1);
  });
});

describe('failure amplification: recovery after an outage', () => {
  it('tries the origin during a 3 s outage (stale for cached pages, 502 origin_unreachable otherwise) and recovers within 1 s of its return', async () => {
    const clock = manualClock();
    const o = await origin();
    let version = 1;
    const cached = ['/c/0', '/c/1', '/c/2', '/c/3'];
    for (const p of cached) o.route(p, clockedPage(clock, 'public, max-age=1', () => `${p} v${version}`));
    const g = await gateway({ sites: [siteFor([o.url], staleRoute)] }, { clock });
    for (const p of cached) expect((await call(`${g.url}${p}`)).body).toBe(`${p} v1`);
    clock.advance(1_500); // every cached page has expired
    version = 2;
    o.kill();
    await sleep(50); // let the gateway's pooled connections notice
    for (const p of cached) expectStale(await call(`${g.url}${p}`), `${p} v1`, `${p} while down`);
    for (let i = 0; i < 8; i++) expectTriedAndUnreachable(await call(`${g.url}/down/${i}`), `/down/${i}`);
    // Said at warn at once, not left to access lines until the breaker opens (new-user trial),
    // and once for those eight.
    const unreachable = () => g.logs.filter((l) => String(l.msg).startsWith('origin unreachable'));
    expect(unreachable()).toHaveLength(1);
    expect(unreachable()[0]).toMatchObject({ level: 40, site: 'test', failure: 'connect_error' });
    clock.advance(10_000);
    expectTriedAndUnreachable(await call(`${g.url}/down/again`), '/down/again');
    expect(unreachable()).toHaveLength(2);
    expect(unreachable()[1]!.moreSinceLastLine).toBeGreaterThanOrEqual(1);
    expectTriedAndUnreachable(await call(`${g.url}/down/untold`), '/down/untold');
    expect(unreachable()).toHaveLength(2);

    clock.advance(3_000);
    await o.reopen();
    o.reset();
    // Within one second of clock time an uncached page answers from the origin again.
    let recovered: Answer | undefined;
    let advanced = 0;
    for (let i = 0; i < 40; i++) {
      const r = await call(`${g.url}/back/${i}`);
      if (r.status === 200) {
        recovered = r;
        break;
      }
      if (advanced >= 1_000) break;
      clock.advance(50);
      advanced += 50;
      await sleep(20);
    }
    expect(recovered, `an uncached page answered 200 within ${advanced} ms of clock time`).toBeDefined();
    // Its first answer tells what was not told yet, and the counts start again (review).
    const again = g.logs.filter((l) => String(l.msg).startsWith('origin answering again'));
    expect(again).toHaveLength(1);
    expect(again[0]!.untold).toEqual([{ failure: 'connect_error', count: expect.any(Number) }]);
    expectFromOrigin(recovered!, 200, 'first page after recovery');
    expect(advanced).toBeLessThanOrEqual(1_000);
    // A stale page is refreshed: the origin sees its fetch and a later request gets the new copy.
    const first = await call(`${g.url}/c/0`);
    expect(first.status).toBe(200);
    expect(await eventually(() => o.count('/c/0') >= 1, 50, 20), 'the origin saw the refresh of /c/0').toBe(true);
    let fresh: Answer | undefined;
    await eventually(async () => {
      fresh = await call(`${g.url}/c/0`);
      return fresh.body === '/c/0 v2';
    }, 20, 20);
    expect(fresh!.body).toBe('/c/0 v2');
    expect(fresh!.headers['cache-status']).toMatch(/crowdgate; hit; ttl=\d/);
    expect(o.count('/c/0')).toBe(1); // refreshed once, then answered from the cache
  });

  it('a primary in maintenance (503 to everything) with a healthy backup: once it is ejected visitors get the backup\'s pages, its trials fewer and fewer (failure-day trial)', async () => {
    const clock = manualClock();
    const primary = await origin('primary');
    const backup = await origin('backup');
    primary.setHandler((_req, res) => {
      res.writeHead(503, { 'retry-after': '30', 'content-type': 'text/plain' });
      res.end('down for maintenance');
    });
    backup.setHandler((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
      res.end('from the backup');
    });
    const routes = [{ name: 'api', match: { pathPrefix: '/api/' }, cache: { enabled: false } }];
    const g = await gateway({ sites: [{ ...siteFor([primary.url], { routes }), origins: [{ url: primary.url }, { url: backup.url, backup: true }] }] }, { clock });
    // Five 503s eject the primary (those five visitors get them: nothing is known yet).
    for (let i = 0; i < 5; i++) expect((await call(`${g.url}/warm/${i}`)).status).toBe(503);
    primary.reset();
    // Three seconds of visitors, every 50 ms: each page is new, so each is a fill.
    const statuses: number[] = [];
    for (let t = 0; t < 3_000; t += 50) {
      statuses.push((await call(`${g.url}/page/${t}`)).status);
      clock.advance(50);
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // Its trials (each sent once more to the backup) at 250 ms, then 500 and 1 000 ms after
    // each that failed: 3, not 12 (every 250 ms).
    expect(primary.count()).toBeGreaterThan(0);
    expect(primary.count()).toBeLessThanOrEqual(4);
    // The access log says which member answered, and that a second was asked.
    const retried = g.accessLogs().filter((l) => l.originAttempts === 2);
    expect(retried.length).toBeGreaterThan(0);
    for (const l of retried) expect(l.origin).toBe(new URL(backup.url).host);
    expect(g.accessLogs().find((l) => l.path === '/page/0')?.origin).toBe(new URL(backup.url).host);
    // And the metrics count the ejection and the retries (failure-day trial, round 2: the
    // healthy gauge can flip and back between two scrapes).
    const m = await metricsOf(g);
    const primaryName = new URL(primary.url).host;
    expect(m).toMatch(new RegExp(`crowdgate_origin_health_changes_total\\{site="test",origin="${primaryName}",cause="ejected"\\} [1-9]`));
    expect(m).toMatch(new RegExp(`crowdgate_origin_retries_total\\{site="test"\\} ${retried.length}\\b`));
    // Passed through (a route not cached) the same: a GET's failed trial is sent to the backup.
    const passed: number[] = [];
    for (let t = 0; t < 3_000; t += 50) {
      passed.push((await call(`${g.url}/api/${t}`)).status);
      clock.advance(50);
    }
    expect(passed.filter((s) => s !== 200)).toEqual([]);
    expect(primary.count((r) => r.path.startsWith('/api/'))).toBeGreaterThan(0);
    // Its ejection runs out (no trial meanwhile): the first requests it gets again, on
    // probation, are answered by the backup when it still says 503 (failure-day trial, round 2).
    clock.advance(10_100);
    const before = primary.count();
    for (const path of ['/api/after', '/page/after']) expect((await call(`${g.url}${path}`)).status, path).toBe(200);
    expect(primary.count()).toBeGreaterThan(before);
  });

  it.each([
    ['a fill', '/page/'],
    ['a request passed through', '/other/'],
  ])("sends %s whose trial failed once more to a usable member, never to another ejected member's trial (review: two primaries in maintenance, one backup)", async (_kind, prefix) => {
    const clock = manualClock();
    const [a, c, backup] = [await origin('a'), await origin('c'), await origin('backup')];
    for (const o of [a, c])
      o.setHandler((_req, res) => {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('maintenance');
      });
    backup.setHandler((_req, res) => {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
      res.end('from the backup');
    });
    const routes = [{ name: 'api', match: { pathPrefix: '/other/' }, cache: { enabled: false } }]; // passed through
    const site = { ...siteFor([a.url], { passive: { consecutiveFailures: 1 }, balance: 'round-robin', routes }), origins: [{ url: a.url }, { url: c.url }, { url: backup.url, backup: true }] };
    const g = await gateway({ sites: [site] }, { clock });
    // One 503 each ejects both primaries; their trials fall due together.
    for (let i = 0; i < 2; i++) expect((await call(`${g.url}/warm/${i}`)).status).toBe(503);
    const statuses: number[] = [];
    for (let t = 0; t < 3_000; t += 50) {
      statuses.push((await call(`${g.url}${prefix}${t}`)).status);
      clock.advance(50);
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    const tried = (o: TestOrigin) => o.count((r) => r.path.startsWith(prefix));
    expect(tried(a) + tried(c)).toBeGreaterThan(1);
  });

  it('sends a fill whose trial was reset once more to a usable member (review)', async () => {
    const clock = manualClock();
    const primary = await origin('primary');
    const backup = await origin('backup');
    primary.setHandler((req) => req.socket.destroy());
    backup.setHandler((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
      res.end('from the backup');
    });
    const g = await gateway({ sites: [{ ...siteFor([primary.url], { passive: { consecutiveFailures: 1 } }), origins: [{ url: primary.url }, { url: backup.url, backup: true }] }] }, { clock });
    expect((await call(`${g.url}/warm`)).status).toBe(502); // one reset ejects it
    const statuses: number[] = [];
    for (let t = 0; t < 3_000; t += 50) {
      statuses.push((await call(`${g.url}/page/${t}`)).status);
      clock.advance(50);
    }
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    expect(primary.count((r) => r.path.startsWith('/page/'))).toBeGreaterThan(0);
  });

  it('a passed-over trial answer that resets later never cuts the retry\'s answer (review)', async () => {
    const clock = manualClock();
    const primary = await origin('primary');
    const backup = await origin('backup');
    primary.setHandler((req, res) => {
      if (req.url!.startsWith('/api/warm/')) {
        res.writeHead(503, { 'content-type': 'text/plain' });
        return res.end('down');
      }
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.write('down for');
      setTimeout(() => res.socket?.resetAndDestroy(), 300); // resets mid-body, after the retry began
    });
    backup.setHandler((_req, res) => {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
      let n = 0;
      const tick = setInterval(() => {
        res.write(`part ${n} `);
        if (++n === 8) {
          clearInterval(tick);
          res.end('end');
        }
      }, 100);
    });
    const routes = [{ name: 'api', match: { pathPrefix: '/api/' }, cache: { enabled: false } }];
    const g = await gateway({ sites: [{ ...siteFor([primary.url], { routes }), origins: [{ url: primary.url }, { url: backup.url, backup: true }] }] }, { clock });
    for (let i = 0; i < 5; i++) await call(`${g.url}/api/warm/${i}`); // 503s: ejected
    clock.advance(300); // the next request is the primary's trial
    const before = primary.count();
    const answer = await call(`${g.url}/api/page`);
    expect(primary.count()).toBe(before + 1);
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('part 0 part 1 part 2 part 3 part 4 part 5 part 6 part 7 end');
  });

  it('keeps the stale copy of a page when a client fills its other Vary variants with the outage\'s 503s (attacker trial)', async () => {
    const clock = manualClock();
    const o = await origin();
    let down = false;
    o.route('/v', (req, res) => {
      const date = new Date(clock.now()).toUTCString();
      if (down) {
        res.writeHead(503, { 'cache-control': 'max-age=30', vary: 'Origin', date, 'content-type': 'text/plain' });
        return res.end('down');
      }
      res.writeHead(200, { 'cache-control': 'max-age=1', vary: 'Origin', date, 'content-type': 'text/plain' });
      res.end('the page');
    });
    const g = await gateway({ sites: [siteFor([o.url], staleRoute)] }, { clock });
    expect((await call(`${g.url}/v`)).body).toBe('the page');
    clock.advance(3_000);
    down = true;
    expectStale(await call(`${g.url}/v`), 'the page', 'the page in the outage');
    // 17 values of the varied header (cache.maxVariants is 16): each a variant of its own, a 503.
    for (let i = 1; i <= 17; i++) expect((await call(`${g.url}/v`, { headers: { origin: `https://a${i}.example` } })).status).toBe(503);
    expectStale(await call(`${g.url}/v`), 'the page', 'the page after the flood');
  });

  it('with every member down then back: tries them while down, then traffic flows to both within 1 s of their return', async () => {
    const clock = manualClock();
    const a = await origin('a');
    const b = await origin('b');
    for (const o of [a, b]) o.route('/c', clockedPage(clock, 'public, max-age=1', () => 'cached v1'));
    const g = await gateway({ sites: [siteFor([a.url, b.url], staleRoute)] }, { clock });
    expect((await call(`${g.url}/c`)).body).toBe('cached v1');
    clock.advance(1_500);
    a.kill();
    b.kill();
    await sleep(50);
    expectStale(await call(`${g.url}/c`), 'cached v1', '/c while down');
    for (let i = 0; i < 6; i++) expectTriedAndUnreachable(await call(`${g.url}/down/${i}`), `/down/${i}`);
    expectStale(await call(`${g.url}/c`), 'cached v1', '/c while down, again');

    clock.advance(3_000);
    await Promise.all([a.reopen(), b.reopen()]);
    a.reset();
    b.reset();
    const seen = (o: TestOrigin) => o.count((r) => r.path.startsWith('/back/'));
    let advanced = 0;
    let n = 0;
    const answers: Answer[] = [];
    for (let i = 0; i < 40; i++) {
      answers.push(await call(`${g.url}/back/${n++}`), await call(`${g.url}/back/${n++}`));
      if (seen(a) > 0 && seen(b) > 0 && answers.slice(-2).every((r) => r.status === 200)) break;
      if (advanced >= 1_000) break;
      clock.advance(50);
      advanced += 50;
      await sleep(20);
    }
    expect({ a: seen(a) > 0, b: seen(b) > 0 }, `both members saw traffic within ${advanced} ms of clock time`).toEqual({ a: true, b: true });
    expect(advanced).toBeLessThanOrEqual(1_000);
    // And keep flowing: every next request is answered by one of them.
    for (let i = 0; i < 6; i++) expectFromOrigin(await call(`${g.url}/steady/${i}`), 200, `/steady/${i}`);
    expect(a.count((r) => r.path.startsWith('/steady/'))).toBeGreaterThan(0);
    expect(b.count((r) => r.path.startsWith('/steady/'))).toBeGreaterThan(0);
  });
});

describe('failure amplification: a slow endpoint and the limiter', () => {
  it('keeps pages flowing when thirty long-polls that one event answered all ask again at once (failure-day trial: 21-43 % of pages refused)', async () => {
    const o = await origin();
    // A message bus: every poll waits for the next event, which answers them all at once.
    let waiting: http.ServerResponse[] = [];
    o.route('/ev', (_req, res) => void waiting.push(res));
    const event = () => {
      for (const res of waiting.splice(0)) {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
        res.end('event');
      }
    };
    for (let i = 0; i < 40; i++) o.route(`/p/${i}`, { delayMs: 2, headers: { 'cache-control': 'no-store' } });
    const g = await gateway({ sites: [siteFor([o.url])] }); // admission left at its defaults
    const page = (i: number) => call(`${g.url}/p/${i}`);
    for (let i = 0; i < 8; i++) expectFromOrigin(await page(i), 200, `warm /p/${i}`);
    // The first visitors' polls, while pages keep being answered promptly; then an event.
    const first = Array.from({ length: 4 }, (_, i) => call(`${g.url}/ev?c=${i}`));
    expect(await eventually(() => waiting.length === 4, 100, 10)).toBe(true);
    await sleep(250); // past the overdue threshold (10 x a few ms, at least 100 ms)
    for (let i = 8; i < 12; i++) expectFromOrigin(await page(i), 200, `/p/${i} beside the first polls`);
    event();
    for (const r of await Promise.all(first)) expect(r.status).toBe(200);
    // Thirty clients ask again at once, and visitors keep reading pages meanwhile.
    const polls = Array.from({ length: 30 }, (_, i) => call(`${g.url}/ev?c=${i}`));
    expect(await eventually(() => waiting.length >= 8, 100, 10)).toBe(true);
    await sleep(150);
    const pages: Answer[] = [];
    for (let i = 12; i < 24; i++) pages.push(await page(i));
    pages.forEach((r, i) => expectFromOrigin(r, 200, `/p/${12 + i} beside thirty polls`));
    expect(o.count(/^\/p\//)).toBe(24);
    expect(await eventually(() => waiting.length === 30, 150, 10), 'every poll reached the origin').toBe(true);
    event();
    for (const r of await Promise.all(polls)) expect(r.status).toBe(200);
  }, 15_000);

  it('keeps fast pages flowing (no 503s, low latency) while twelve 2 s requests hold the default adaptive limit', async () => {
    const o = await origin();
    for (let i = 0; i < 12; i++) o.route(`/slow/${i}`, { delayMs: 2_000, headers: { 'cache-control': 'no-store' } });
    for (let i = 0; i < 40; i++) o.route(`/fast/${i}`, { delayMs: 5 + (i % 6), headers: { 'cache-control': 'no-store' } });
    const g = await gateway({ sites: [siteFor([o.url])] }); // admission.limit left at its defaults (initial 8)
    const started = performance.now();
    const slow = Array.from({ length: 12 }, (_, i) => call(`${g.url}/slow/${i}`));
    expect(await eventually(() => o.count(/^\/slow\//) >= 8, 50, 10), 'the slow requests hold the permits').toBe(true);
    const fastStarted = performance.now();
    const fast: Answer[] = [];
    for (let batch = 0; batch < 10; batch++)
      fast.push(...(await Promise.all(Array.from({ length: 4 }, (_, j) => call(`${g.url}/fast/${batch * 4 + j}`)))));
    const fastPhaseMs = performance.now() - fastStarted;
    const slowAnswers = await Promise.all(slow);
    const totalMs = performance.now() - started;

    const shed = fast.filter((r) => r.status === 503);
    expect(shed.map((r) => r.headers['cache-status']), 'fast requests shed by the gateway').toEqual([]);
    fast.forEach((r, i) => expectFromOrigin(r, 200, `/fast/${i}`));
    expect(o.count(/^\/fast\//)).toBe(40);
    const ms = fast.map((r) => r.ms).sort((x, y) => x - y);
    const p50 = ms[Math.floor(ms.length / 2)]!;
    expect(p50, 'fast p50 (ms)').toBeLessThan(400); // the slow endpoint takes 2000
    expect(fastPhaseMs, 'all 40 fast pages answered while the slow ones were in flight').toBeLessThan(1_800);
    expect(slowAnswers).toHaveLength(12);
    expect(totalMs).toBeLessThan(5_000);
  }, 15_000);
});

/** Asks over and over, `thinkMs` apart, until `untilMs` (performance.now()). */
async function askUntil(untilMs: number, ask: () => Promise<void>, thinkMs: number): Promise<void> {
  while (performance.now() < untilMs) {
    await ask();
    await sleep(thinkMs);
  }
}

/**
 * An origin with `workers` workers and a FIFO backlog (Apache prefork's MaxRequestWorkers,
 * php-fpm's children): `worker(ms, slow)` is a page that holds one for `ms`; each slow one's
 * start is noted with the slow ones then at work.
 */
function busyWorkers(workers: number) {
  let busy = 0;
  let slowAtWork = 0;
  const slowStarts: { at: number; n: number }[] = [];
  const backlog: (() => void)[] = [];
  const worker = (ms: number, slow: boolean): OriginHandler => (_req, res) => {
    const work = () => {
      busy++;
      if (slow) slowStarts.push({ at: performance.now(), n: ++slowAtWork });
      setTimeout(() => {
        busy--;
        if (slow) slowAtWork--;
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
        res.end(slow ? 'report' : 'page');
        backlog.shift()?.();
      }, ms);
    };
    if (busy < workers) work();
    else backlog.push(work);
  };
  return { worker, slowStarts };
}

describe('failure amplification: an origin whose every worker is held by slow requests', () => {
  it('with admission.limit.slowShare, gives a 2 s page a share of a 3-worker origin once it holds every worker: quick pages are answered beside it, and the slow page still is (Apache trial: 504s after 15 s)', async () => {
    const o = await origin();
    // Three workers and a FIFO backlog, as Apache prefork with MaxRequestWorkers or php-fpm.
    const WORKERS = 3;
    const { worker, slowStarts: slowAtWorkSeen } = busyWorkers(WORKERS);
    // The report's first answer is a 404 at once (a mistyped link, a redirect to the login):
    // only 2xx and 304 answers measure a path's cost, so it still reads as slow after.
    let reportMissed = false;
    const report = worker(2_000, true);
    o.route('/report', (req, res, r) => {
      if (reportMissed) return report(req, res, r);
      reportMissed = true;
      res.writeHead(404, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end('no such report');
    });
    for (let i = 0; i < 4; i++) o.route(`/q/${i}`, worker(5, false));
    const g = await gateway({ sites: [siteFor([o.url])], admission: { limit: { slowShare: true } } });
    expectFromOrigin(await call(`${g.url}/report`), 404, 'the report, mistyped');
    for (let i = 0; i < 20; i++) expectFromOrigin(await call(`${g.url}/q/${i % 4}`), 200, `warm /q/${i % 4}`);
    // Six clients ask the 2 s report over and over; eight readers read quick pages.
    const started = performance.now();
    const untilMs = started + 17_000;
    const reports: Answer[] = [];
    const pages: { at: number; r: Answer }[] = [];
    const loop = (ask: () => Promise<void>, thinkMs: number) => askUntil(untilMs, ask, thinkMs);
    await Promise.all([
      ...Array.from({ length: 6 }, () => loop(async () => void reports.push(await call(`${g.url}/report`)), 10)),
      ...Array.from({ length: 8 }, (_, i) =>
        loop(async () => {
          const at = performance.now() - started;
          pages.push({ at, r: await call(`${g.url}/q/${i % 4}`) });
        }, 50),
      ),
    ]);
    const cut = g.logs.find((l) => String(l.msg).startsWith('origin held up by slow requests'));
    expect(cut, 'the share is cut, and said so at warn').toBeDefined();
    expect(cut!.level).toBe(40);
    expect(cut!.slowShare).toBeLessThanOrEqual(WORKERS);
    expect(cut!.slowPaths, 'the line names the slow path').toEqual(['/report']);
    // The share is on /metrics while set (lifted 30 s after quick pages were last held up).
    const share = Object.values(gauge(await metricsOf(g), 'crowdgate_origin_slow_share'));
    expect(share).toHaveLength(1);
    expect(share[0]).toBeGreaterThanOrEqual(1);
    expect(share[0]).toBeLessThanOrEqual(6);
    // Once the reports at work are within the share, a worker is left for the quick pages: they
    // are answered at once. From 13 s on: the cut comes at about 3 s, to 3 of the 6 out (3 at
    // work, 3 in the origin's backlog), and the pages sent before it wait for both; as those end,
    // quick pages still held a second, no report replaces them (CI: it did, and they waited 2 s
    // more, once or twice). The first cut's level counts the backlog's too, so the share may
    // grow to every worker once (about 10 s in), is cut, and stays below it after.
    const late = pages.filter((p) => p.at > 13_000);
    expect(late.length).toBeGreaterThan(100);
    late.forEach((p) => expectFromOrigin(p.r, 200, `a quick page at ${Math.round(p.at)} ms`));
    const ms = late.map((p) => p.r.ms).sort((x, y) => x - y);
    expect(ms[Math.floor(ms.length * 0.9)], 'quick pages p90 (ms) beside the reports').toBeLessThan(300);
    expect(ms[Math.floor(ms.length * 0.99)], 'quick pages p99 (ms): none waits for a report to end').toBeLessThan(1_000);
    // The share grows while quick pages are answered promptly, but not back to a level they were
    // held under: no report starts with every other worker holding one.
    const lateReports = slowAtWorkSeen.filter((x) => x.at - started > 13_000);
    expect(lateReports.filter((x) => x.n >= WORKERS), 'reports started late with every worker then holding one').toEqual([]);
    // The report is still answered; the clients beyond the share waited at the gateway, and
    // those that waited too long were refused slow_share (a 503 with its reason).
    expect(reports.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(6);
    for (const r of reports.filter((x) => x.status !== 200)) {
      expect(r.status).toBe(503);
      expect(r.headers['cache-status']).toContain('shed-slow_share');
    }
  }, 40_000);
});

describe('failure amplification: a route capped by its maxConcurrent', () => {
  it('keeps a 2 s report to one of a 3-worker origin\'s workers with the shipped admission: quick pages are answered beside it from the start, the reports beyond it are refused route_busy at the gateway', async () => {
    const o = await origin();
    const { worker, slowStarts } = busyWorkers(3);
    o.route('/report', worker(2_000, true));
    for (let i = 0; i < 4; i++) o.route(`/q/${i}`, worker(5, false));
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'report', match: { pathPrefix: '/report' }, maxConcurrent: 1, cache: { enabled: false } }] })],
    });
    // Six clients ask the 2 s report over and over; eight readers read quick pages.
    const started = performance.now();
    const untilMs = started + 6_000;
    const reports: Answer[] = [];
    const pages: Answer[] = [];
    let midRun = '';
    const loop = (ask: () => Promise<void>, thinkMs: number) => askUntil(untilMs, ask, thinkMs);
    await Promise.all([
      ...Array.from({ length: 6 }, () => loop(async () => void reports.push(await call(`${g.url}/report`)), 10)),
      ...Array.from({ length: 8 }, (_, i) => loop(async () => void pages.push(await call(`${g.url}/q/${i % 4}`)), 50)),
      (async () => {
        await sleep(3_000);
        midRun = await metricsOf(g);
      })(),
    ]);
    // Mid-run, the route's gauges show one report at the origin and the others waiting.
    const routeGauge = (name: string) => Number(midRun.match(new RegExp(`^${name}\\{site="test",route="report"\\} (\\S+)$`, 'm'))?.[1]);
    expect(routeGauge('crowdgate_route_inflight')).toBe(1);
    expect(routeGauge('crowdgate_route_queue_length')).toBeGreaterThanOrEqual(1);
    expect(Math.max(...slowStarts.map((x) => x.n)), 'reports at the origin at once').toBe(1);
    expect(pages.length).toBeGreaterThan(200);
    pages.forEach((r, i) => expectFromOrigin(r, 200, `quick page ${i}`));
    const ms = pages.map((r) => r.ms).sort((x, y) => x - y);
    expect(ms[Math.floor(ms.length * 0.99)], 'quick pages p99 (ms): none waits for a report').toBeLessThan(500);
    // One report at a time, 2 s each: two or three answered in 6 s; the rest waited their
    // 500 ms deadline at the gateway and were refused with the reason.
    expect(reports.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(2);
    const refused = reports.filter((r) => r.status !== 200);
    expect(refused.length).toBeGreaterThan(10);
    for (const r of refused) {
      expect(r.status).toBe(503);
      expect(r.headers['x-crowdgate-error']).toBe('overloaded');
      expect(r.headers['cache-status']).toContain('shed-route_busy');
      expect(r.headers['retry-after']).toBeDefined();
    }
    expect(o.count('/report')).toBe(reports.length - refused.length);
    expect(await metricsOf(g)).toMatch(/crowdgate_shed_total\{site="test",reason="route_busy",priority="[a-z]+"\} [1-9]/);
    // The access line (and a local client's page) names the route's cap, not "very busy"
    // alone (Redmine trial: six users read it as the site's load).
    const lines = g.accessLogs().filter((l) => l.error === 'overloaded');
    expect(lines).toHaveLength(refused.length);
    for (const l of lines) expect(String(l.errorDetail)).toMatch(/^route "report" is at its cap: its maxConcurrent \(1\) requests/);
  }, 20_000);
});

describe('failure amplification: a route matched by its query (MediaWiki\'s index.php?title=Special:…)', () => {
  it('caps the slow Special: pages sharing index.php with the articles, and never caches a never-cached query route however it is spelled', async () => {
    const o = await origin();
    const { worker, slowStarts } = busyWorkers(3);
    const special = worker(600, true);
    const article = worker(5, false);
    const raw: string[] = [];
    o.setHandler((req, res, recorded) => {
      const url = new URL(req.url!, 'http://x');
      if (/^special:/i.test(url.searchParams.get('title') ?? '')) return special(req, res, recorded);
      if (url.searchParams.has('action') || url.searchParams.has('ACTION')) {
        raw.push(req.url!);
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
        return res.end('wikitext');
      }
      article(req, res, recorded);
    });
    const g = await gateway({
      sites: [
        siteFor([o.url], {
          routes: [
            { name: 'special', match: { pathPrefix: '/index.php', query: { title: 'Special:*' } }, maxConcurrent: 1, queueDeadlineMs: 10_000, cache: { enabled: false } },
            { name: 'raw', match: { query: { action: 'raw' } }, cache: { enabled: false } },
          ],
        }),
      ],
    });
    // Three Special: pages at once, beside articles read meanwhile: one at the origin at a time.
    const [specials, articles] = await Promise.all([
      Promise.all(['RecentChanges', 'Export', 'AllPages'].map((p) => call(`${g.url}/index.php?title=Special:${p}`))),
      (async () => {
        await sleep(100);
        return Promise.all([1, 2, 3].map((n) => call(`${g.url}/index.php?title=Page_${n}`)));
      })(),
    ]);
    expect(specials.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(Math.max(...slowStarts.map((x) => x.n)), 'Special: pages at the origin at once').toBe(1);
    for (const r of articles) {
      expectFromOrigin(r, 200, 'article');
      expect(r.ms, 'an article waits for no Special: page').toBeLessThan(400);
    }
    // `action=raw` answers with a lifetime, but its route is never cached: each spelling an
    // origin reads as the same parameter goes through.
    for (const target of ['/index.php?title=A&action=raw', '/index.php?title=A&ACTION=Raw', '/index.php?title=A;action=raw&action=x'])
      for (const n of [1, 2]) expectFromOrigin(await call(`${g.url}${target}`), 200, `${target} (${n})`);
    expect(raw).toHaveLength(6);
  }, 20_000);
});

describe('failure amplification: a route capped by its maxConcurrent, on answers whose permit is given back early', () => {
  it.each(['a download', 'an event stream'])('holds the slot until %s ends, not to its head: the origin never has two at once (review: three clients had three)', async (kind) => {
    const o = await origin();
    let atOrigin = 0;
    let most = 0;
    o.route('/export', (_req, res) => {
      most = Math.max(most, ++atOrigin);
      const size = 2 * 1024 * 1024;
      // A download longer than the cache keeps, or an event stream: the permit goes back at the head.
      res.writeHead(200, kind === 'a download' ? { 'content-type': 'text/csv', 'content-length': String(size), 'cache-control': 'no-store' } : { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      let sent = 0;
      const chunk = Buffer.alloc(size / 8, 97);
      const tick = setInterval(() => {
        res.write(chunk);
        sent += chunk.length;
        if (sent >= size) {
          clearInterval(tick);
          res.end();
        }
      }, 100); // 0.8 s of the worker's time
      res.on('close', () => {
        clearInterval(tick);
        atOrigin--;
      });
    });
    const g = await gateway({
      cache: { maxObjectBytes: 1024 * 1024 },
      sites: [siteFor([o.url], { routes: [{ name: 'export', match: { pathPrefix: '/export' }, maxConcurrent: 1, queueDeadlineMs: 10_000, cache: { enabled: false } }] })],
    });
    const answers = await Promise.all([0, 1, 2].map(() => call(`${g.url}/export`)));
    expect(answers.map((a) => [a.status, a.body.length])).toEqual([0, 1, 2].map(() => [200, 2 * 1024 * 1024]));
    expect(most, 'exports at the origin at once').toBe(1);
  }, 30_000);
});

describe('failure amplification: an origin slow for everyone', () => {
  it('keeps letting clients in when every answer of an origin with room starts taking 700 ms: no refusal once its round trip is known', async () => {
    const o = await origin();
    let delayMs = 5;
    o.setHandler((_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
        res.end('ok');
      }, delayMs);
    });
    const g = await gateway({ sites: [siteFor([o.url])] }); // admission at its defaults (limit 8)
    const answers: { at: number; r: Answer }[] = [];
    let stop = false;
    // 24 clients, each asking again 20 ms after its answer: about 1 in flight at 5 ms, 24 at 700 ms.
    const client = async (i: number) => {
      for (let n = 0; !stop && n < 500; n++) {
        const at = performance.now();
        answers.push({ at, r: await call(`${g.url}/p/${i}/${n}`) });
        await sleep(20);
      }
    };
    const clients = Array.from({ length: 24 }, (_, i) => client(i));
    await sleep(1_000);
    delayMs = 700;
    const slowAt = performance.now();
    await sleep(7_000);
    stop = true;
    await Promise.all(clients);
    // From two of the new round trips on (the first ones, before any answer, wait as before).
    const late = answers.filter((a) => a.at >= slowAt + 2_500);
    const refused = late.filter((a) => a.r.status !== 200).map((a) => `${a.r.status} ${a.r.headers['x-crowdgate-error']}`);
    expect(refused, 'requests refused by the gateway once the round trip was known').toEqual([]);
    expect(late.length).toBeGreaterThan(80); // 24 clients, 4.5 s, 0.7 s each
    expect(o.count(/^\/p\//)).toBe(answers.filter((a) => a.r.status === 200).length);
  }, 20_000);
});

describe('failure amplification: an origin slower than the first overdue threshold for every request', () => {
  it('learns its round trip and a limit from the first answers (it kept its initial 8 and a lane of 64 for good)', async () => {
    const o = await origin();
    o.setHandler((_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
        res.end('ok');
      }, 150);
    });
    const g = await gateway({ sites: [siteFor([o.url])] }); // admission at its defaults
    let stop = false;
    let refused = 0;
    const client = async (i: number) => {
      for (let n = 0; !stop && n < 200; n++) {
        const r = await call(`${g.url}/p/${i}/${n}`);
        if (r.status !== 200) refused++;
      }
    };
    // 24 clients asking again at once: 24 in flight wanted, every answer 150 ms.
    const clients = Array.from({ length: 24 }, (_, i) => client(i));
    const learned = await eventually(async () => (gauge(await metricsOf(g), 'crowdgate_origin_limit')[o.url.slice(7)] ?? 0) > 8, 60, 100);
    stop = true;
    await Promise.all(clients);
    expect(learned, 'the learned limit grew past its initial 8 within 6 s').toBe(true);
    // 0 in every local run: 24 clients are within the cold start's deadline of 8 round trips.
    expect(refused, 'requests the gateway refused').toBeLessThan(24);
  }, 20_000);
});

describe('failure amplification: clients that stop reading', () => {
  it('gives the origin permit back when a client stops reading a streamed answer: others keep reaching the origin', async () => {
    const o = await origin();
    // A large uncacheable download, written as fast as the gateway takes it.
    o.route('/big', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
      const chunk = Buffer.alloc(1024 * 1024, 120);
      let left = 64;
      const pump = () => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    o.route('/api/ping', { headers: { 'cache-control': 'no-store' }, body: 'pong' });
    const g = await gateway({
      admission: { limit: { algorithm: 'fixed', initial: 2, ceiling: 2 }, queue: { deadlineMs: 300 } },
      sites: [siteFor([o.url])],
    });
    const { port } = new URL(g.url);
    // Two clients ask for it and never read: without more, they hold both permits until the idle timeout.
    const readers = [0, 1].map(() => {
      const s = net.connect(Number(port), '127.0.0.1', () => {
        s.write('GET /big HTTP/1.1\r\nHost: blog.example.com\r\nAuthorization: Bearer reader\r\n\r\n'); // bypasses the cache: streamed
        s.pause();
      });
      s.on('error', () => undefined);
      return s;
    });
    try {
      expect(await eventually(() => o.count('/big') === 2, 100, 10)).toBe(true);
      await sleep(1_500); // past the stall
      const answers = await Promise.all(Array.from({ length: 4 }, () => call(`${g.url}/api/ping`)));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
      expect(o.count('/api/ping')).toBe(4);
    } finally {
      for (const s of readers) s.destroy();
    }
  }, 15_000);
});

describe('failure amplification: uploads that stop coming', () => {
  async function uploadSetup(limits?: Record<string, unknown>) {
    const o = await origin();
    // (The test origin reads the whole body before the handler runs: bodyLength is all of it.)
    o.route('/upload', (_req, res, recorded) => {
      res.writeHead(201, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(`got ${recorded.bodyLength}`);
    });
    o.route('/api/ping', { headers: { 'cache-control': 'no-store' }, body: 'pong' });
    const g = await gateway({
      admission: { limit: { algorithm: 'fixed', initial: 2, ceiling: 2 }, queue: { deadlineMs: 300 } },
      ...(limits ? { limits } : {}),
      sites: [siteFor([o.url])],
    });
    const { port } = new URL(g.url);
    const received: string[] = [];
    /** A client that declares `length` bytes, sends one, and stops. */
    const upload = (length: number) => {
      const i = received.push('') - 1;
      const s = net.connect(Number(port), '127.0.0.1', () => s.write(`POST /upload HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: ${length}\r\n\r\nx`));
      s.on('data', (d) => (received[i] += d.toString()));
      s.on('error', () => undefined);
      return s;
    };
    return { o, g, received, upload };
  }

  it('reads a body whole before the origin is asked: uploads sent slowly hold no permit and no origin connection, and arrive whole with their length (request buffering)', async () => {
    const { o, g, received, upload } = await uploadSetup();
    // A small form and two 1 MB uploads (spooled to a file) send one byte and stop.
    const clients = [upload(1000), upload(1_000_000), upload(1_000_000)];
    try {
      await sleep(1_500);
      expect(o.count('/upload')).toBe(0); // nothing reached the origin yet
      const answers = await Promise.all(Array.from({ length: 4 }, () => call(`${g.url}/api/ping`)));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
      expect(await metricsOf(g)).not.toMatch(/outcome="client_stalled"/);
      // The uploads resume: each reaches the origin once, whole, with its Content-Length.
      clients[0]!.write('y'.repeat(999));
      for (const s of clients.slice(1)) s.write('y'.repeat(999_999));
      expect(await eventually(() => /got 1000\b/.test(received[0]!) && received.slice(1).every((r) => /got 1000000/.test(r)), 100, 30)).toBe(true);
      expect(o.count('/upload')).toBe(3);
      expect(o.requests.filter((r) => r.url === '/upload').map((r) => r.headers['content-length']).sort()).toEqual(['1000', '1000000', '1000000']);
    } finally {
      for (const s of clients) s.destroy();
    }
  }, 15_000);

  it('with request buffering off, gives the origin permit back when a client stops sending its body: others keep reaching the origin, and the upload still arrives whole (attacker trial)', async () => {
    const { o, g, received, upload } = await uploadSetup({ requestBuffering: { enabled: false } });
    // Two large uploads declare 1 MB, send one byte, and stop: without more, they hold both permits.
    const uploads = [upload(1_000_000), upload(1_000_000)];
    try {
      expect(await eventually(() => o.count('/upload') === 2, 100, 10)).toBe(true);
      await sleep(1_500); // past the stall
      const answers = await Promise.all(Array.from({ length: 4 }, () => call(`${g.url}/api/ping`)));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
      expect(o.count('/api/ping')).toBe(4);
      expect(await metricsOf(g)).toMatch(/crowdgate_origin_requests_total\{[^}]*outcome="client_stalled"\} 2/);
      // The uploads resume: each arrives whole and is answered.
      for (const s of uploads) s.write('y'.repeat(999_999));
      expect(await eventually(() => received.every((r) => /got 1000000/.test(r)), 100, 30)).toBe(true);
      expect(o.count('/upload')).toBe(2);
    } finally {
      for (const s of uploads) s.destroy();
    }
  }, 15_000);
});

describe('failure amplification: an origin that fails while an upload streams', () => {
  it('closes the connection with its 502, so the client does not send its next request into a connection nobody reads', async () => {
    // A member nobody listens on (the port of a server just closed): the connect is refused.
    const gone = http.createServer();
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
    const deadPort = (gone.address() as net.AddressInfo).port;
    await new Promise<void>((r) => gone.close(() => r()));
    const g = await gateway({ limits: { requestBuffering: { enabled: false } }, sites: [siteFor([`http://127.0.0.1:${deadPort}`])] });
    const s = net.connect(Number(new URL(g.url).port), '127.0.0.1');
    let received = '';
    s.on('data', (d) => (received += d.toString()));
    s.on('error', () => undefined);
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.write(`POST /upload HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: 81920\r\n\r\n${'x'.repeat(4096)}`);
    expect(await eventually(() => /\r\n\r\n/.test(received), 100, 30)).toBe(true);
    expect(received).toMatch(/^HTTP\/1\.1 502 /);
    expect(received.toLowerCase()).toContain('connection: close');
    s.write('y'.repeat(81920 - 4096));
    await closed; // closed by the gateway, not left open unread
  }, 15_000);

  it('sends a POST whose connection was refused once more to the other member, its body from the buffer (nothing reached the dead one)', async () => {
    const gone = http.createServer();
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
    const deadPort = (gone.address() as net.AddressInfo).port;
    await new Promise<void>((r) => gone.close(() => r()));
    const live = await origin();
    live.route('/upload', (_req, res, rec) => void res.end(`got ${rec.bodyLength}`));
    const g = await gateway({ sites: [siteFor([`http://127.0.0.1:${deadPort}`, live.url], { balance: 'round-robin' })] });
    const answers: Answer[] = [];
    for (const size of [10, 100_000, 0, 10, 100_000, 0]) answers.push(await call(`${g.url}/upload`, { method: 'POST', body: 'x'.repeat(size) }));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(answers.map((a) => a.body)).toEqual(['got 10', 'got 100000', 'got 0', 'got 10', 'got 100000', 'got 0']);
    expect(live.count('/upload')).toBe(6);
  });
});

describe('failure amplification: an origin that reads an upload slowly', () => {
  it('keeps the permit while the origin, not the client, holds the body back', async () => {
    // An origin busy for 2 s before it reads an 8 MiB upload: the client's bytes wait on it.
    const slow = http.createServer((req, res) => {
      req.pause();
      setTimeout(() => {
        let n = 0;
        req.on('data', (c: Buffer) => (n += c.length));
        req.on('end', () => res.end(`read ${n}`));
        req.resume();
      }, 2_000);
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    try {
      const g = await gateway({ sites: [siteFor([`http://127.0.0.1:${(slow.address() as net.AddressInfo).port}`])] });
      const body = Buffer.alloc(8 * 1024 * 1024, 1);
      const res = await request(`${g.url}/import`, { method: 'POST', body });
      expect(await res.body.text()).toBe(`read ${body.length}`);
      expect(await metricsOf(g)).not.toMatch(/outcome="client_stalled"/);
    } finally {
      await new Promise<void>((r) => slow.close(() => r()));
    }
  }, 15_000);
});

describe('failure amplification: an origin that rate-limits the gateway (429)', () => {
  it('answers from the stored copies while the origin says 429, and asks it again only once a second per page', async () => {
    const clock = manualClock();
    const o = await origin();
    let limited = false;
    o.route('/page', (req, res) => {
      if (limited) {
        res.writeHead(429, { 'retry-after': '30', 'content-type': 'text/plain' });
        res.end('slow down');
        return;
      }
      clockedPage(clock, 'max-age=1', () => 'the page')(req, res, undefined as never);
    });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    expect((await call(`${g.url}/page`)).body).toBe('the page');
    limited = true;
    clock.advance(2_000); // expired; the origin now refuses the gateway
    const answers: Answer[] = [];
    for (let i = 0; i < 10; i++) answers.push(await call(`${g.url}/page`));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(answers.every((a) => a.body === 'the page')).toBe(true);
    // One request to the origin for the expired page, not one per visitor.
    expect(o.count('/page')).toBeLessThanOrEqual(3);
  });
});

describe('failure amplification: waiters of a fill the origin refused (503)', () => {
  it("ask once more together, then get the gateway's own 503 (origin_unavailable) with the origin's Retry-After, not the origin's bytes; they do not each ask again", async () => {
    const o = await origin();
    o.route('/busy', (req, res) =>
      void setTimeout(() => {
        res.writeHead(503, { 'content-type': 'text/plain', 'set-cookie': 'challenge=leader-only', 'retry-after': '5' });
        res.end(`slow down, ${String(req.headers['x-forwarded-for'])}`);
      }, 200),
    );
    const g = await gateway({ sites: [siteFor([o.url])] });
    const answers = await Promise.all([0, 1, 2, 3].map(() => call(`${g.url}/busy`)));
    // The leader's fill, then one fill of the waiters' (its leader gets that fill's own answer).
    expect(o.count('/busy')).toBe(2);
    expect(answers.map((a) => a.status)).toEqual([503, 503, 503, 503]);
    expect(answers.filter((a) => a.body.startsWith('slow down'))).toHaveLength(2);
    const waiters = answers.filter((a) => a.headers['x-crowdgate-error'] === 'origin_unavailable');
    expect(waiters.length).toBe(2);
    for (const w of waiters) {
      expect(w.headers['set-cookie']).toBeUndefined();
      expect(w.body).not.toContain('slow down');
      // The origin's Retry-After, not the gateway's own shedding hint; and no word of shedding.
      expect(w.headers['retry-after']).toBe('5');
      expect(String(w.headers['cache-status'])).toContain('detail="origin_unavailable');
    }
    // A 429's Retry-After may be about the leader alone: the waiters get the gateway's own.
    o.route('/limited', (_req, res) =>
      void setTimeout(() => {
        res.writeHead(429, { 'content-type': 'text/plain', 'retry-after': '3600' });
        res.end('you, slow down');
      }, 200),
    );
    // A 429 may be about the leader alone: its waiters ask once more, together (the second
    // leader gets that fill's own answer, as a leader does), and share only that one's failure.
    const limited = await Promise.all([0, 1, 2].map(() => call(`${g.url}/limited`)));
    expect(o.count('/limited')).toBe(2);
    const limitedWaiters = limited.filter((a) => a.headers['x-crowdgate-error'] === 'origin_unavailable');
    expect(limitedWaiters.length).toBe(1);
    for (const w of limitedWaiters) expect(Number(w.headers['retry-after'])).toBeLessThan(3600);
    expect(limited.filter((a) => a.status === 429 && a.body === 'you, slow down')).toHaveLength(2);
  });

  it('a 503 for the leader alone (one client the origin rate-limits by its address, as nginx\'s limit_req does by default): the visitors who joined its fill get the page from a fill of their own (attacker trial: they got 503)', async () => {
    const o = await origin();
    o.route('/news/new-post', (req, res) =>
      void setTimeout(() => {
        const abuser = String(req.headers['x-forwarded-for']).includes('203.0.113.9');
        res.writeHead(abuser ? 503 : 200, { 'content-type': 'text/plain', 'cache-control': abuser ? 'no-store' : 'max-age=60', ...(abuser ? { 'retry-after': '60' } : {}) });
        res.end(abuser ? 'rate limited' : 'the post');
      }, 200),
    );
    const g = await gateway({ sites: [siteFor([o.url])] });
    // (The tests' client is a trusted proxy: its X-Forwarded-For names the client.)
    const abuser = call(`${g.url}/news/new-post`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect(await eventually(() => o.count('/news/new-post') === 1, 100, 5)).toBe(true);
    const visitors = await Promise.all([1, 2, 3].map((i) => call(`${g.url}/news/new-post`, { headers: { 'x-forwarded-for': `198.51.100.${i}` } })));
    expect((await abuser).status).toBe(503);
    for (const v of visitors) expect({ status: v.status, body: v.body }).toEqual({ status: 200, body: 'the post' });
    // The abuser's fill, then one led by a visitor, stored and shared.
    expect(o.count('/news/new-post')).toBe(2);
  });

  it('a 429 for the leader alone (a crawler throttled by its User-Agent): the visitors who joined its fill get the page from a fill of their own (failure-day trial: they got 503)', async () => {
    const o = await origin();
    o.route('/p', (req, res) =>
      void setTimeout(() => {
        const bot = String(req.headers['user-agent']).includes('crawlbot');
        res.writeHead(bot ? 429 : 200, { 'content-type': 'text/plain', 'cache-control': 'no-store', ...(bot ? { 'retry-after': '60' } : {}) });
        res.end(bot ? 'crawl slower' : 'the page');
      }, 200),
    );
    const g = await gateway({ sites: [siteFor([o.url])] });
    const bot = call(`${g.url}/p`, { headers: { 'user-agent': 'Mozilla/5.0 (compatible; crawlbot/1.0)' } });
    expect(await eventually(() => o.count('/p') === 1, 100, 5)).toBe(true);
    const visitors = await Promise.all([0, 1, 2].map(() => call(`${g.url}/p`, { headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0' } })));
    expect((await bot).status).toBe(429);
    for (const v of visitors) expect({ status: v.status, body: v.body }).toEqual({ status: 200, body: 'the page' });
    // The crawler's fill, then one fill led by a visitor (a no-store answer is not shared: the
    // other two then ask alone).
    expect(o.count('/p')).toBe(4);
    expect(o.requests.filter((r) => r.path === '/p' && String(r.headers['user-agent']).includes('crawlbot'))).toHaveLength(1);
  });
});

describe('failure amplification: waiters of a fill the origin failed (5xx)', () => {
  it.each([500, 502, 504])('a %i after 300 ms reaches the origin twice for the whole crowd (the waiters\' own fill, once): then waiters get the gateway\'s own 502 origin_failed, never the origin\'s bytes', async (status) => {
    const o = await origin();
    o.route('/hot', (req, res) =>
      void setTimeout(() => {
        res.writeHead(status, { 'content-type': 'text/plain', 'set-cookie': 'debug=leader-only' });
        res.end(`database timeout, client ${String(req.headers['x-forwarded-for'])}`);
      }, 300),
    );
    const g = await gateway({ sites: [siteFor([o.url])] });
    const answers = await Promise.all(Array.from({ length: 8 }, () => call(`${g.url}/hot`)));
    expect(o.count('/hot')).toBe(2);
    const waiters = answers.filter((a) => a.headers['x-crowdgate-error'] === 'origin_failed');
    expect(waiters).toHaveLength(6);
    for (const w of waiters) {
      expect(w.status).toBe(502);
      expect(w.headers['set-cookie']).toBeUndefined();
      expect(w.body).not.toContain('database timeout');
    }
    expect(answers.filter((a) => a.status === status && a.body.startsWith('database timeout'))).toHaveLength(2); // each leader's own
  });

  it('a 500 about the leader\'s own request (its User-Agent) is not shared: the waiters\' own fill answers them (review)', async () => {
    const o = await origin();
    o.route('/page', (req, res) =>
      void setTimeout(() => {
        if (req.headers['user-agent'] === 'Evil') {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('bug');
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
        res.end('the page');
      }, 200),
    );
    const g = await gateway({ sites: [siteFor([o.url])] });
    const evil = call(`${g.url}/page`, { headers: { 'user-agent': 'Evil' } });
    await sleep(50); // it leads the fill
    const answers = await Promise.all(Array.from({ length: 5 }, () => call(`${g.url}/page`, { headers: { 'user-agent': 'Mozilla/5.0' } })));
    expect((await evil).status).toBe(500);
    expect(answers.map((a) => [a.status, a.body])).toEqual(Array(5).fill([200, 'the page']));
    expect(o.count('/page')).toBe(2);
  });

  it('waits while a fill that timed out on a hung member tries the other: the crowd gets the answer, the origin two requests (review)', async () => {
    const hung = await origin();
    hung.route('/page', () => undefined); // accepts, never answers
    const slow = await origin();
    slow.route('/page', (_req, res) =>
      void setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
        res.end('the page');
      }, 1_500),
    );
    const g = await gateway({
      cache: { collapse: { waitDeadlineMs: 200 } },
      sites: [siteFor([hung.url, slow.url], { balance: 'round-robin', timeouts: { responseHeadersMs: 2_000, connectMs: 100 } })],
    });
    const answers = await Promise.all(Array.from({ length: 10 }, () => call(`${g.url}/page`)));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(hung.count('/page') + slow.count('/page')).toBeLessThanOrEqual(2);
  }, 15_000);

  it('waits for a fill slower than cache.collapse.waitDeadlineMs while it may still get its head: one origin request for a slow page', async () => {
    const o = await origin();
    o.route('/report', (_req, res) =>
      void setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
        res.end('the slow report');
      }, 800),
    );
    const g = await gateway({ cache: { collapse: { waitDeadlineMs: 200 } }, sites: [siteFor([o.url], { timeouts: { responseHeadersMs: 2_000 } })] });
    const answers = await Promise.all(Array.from({ length: 8 }, () => call(`${g.url}/report`)));
    expect(answers.map((a) => a.status)).toEqual(Array(8).fill(200));
    expect(answers.every((a) => a.body === 'the slow report')).toBe(true);
    expect(o.count('/report')).toBe(1);
  });
});

describe('failure amplification: an https origin whose certificate does not verify', () => {
  it('answers 502 origin_unreachable naming the certificate, on fills and pass-through, never 500 internal_error', async () => {
    const ca = await makeTestCa();
    const leaf = await ca.leaf(['origin.test']);
    const server = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' });
      res.end('secret origin');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      const g = await gateway({ sites: [siteFor([url], { healthCheck: { enabled: false } })] });
      for (const init of [{}, { method: 'POST', headers: { 'content-type': 'text/plain' } }]) {
        const r = await call(`${g.url}/page`, init);
        expect(r.status).toBe(502);
        expect(r.headers['x-crowdgate-error']).toBe('origin_unreachable');
        expect(r.body).toContain('certificate');
      }
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('failure amplification: one member accepts and never answers', () => {
  it('a fill that timed out on it is sent once more to the healthy member: the page is served, not a 504', async () => {
    const hole = net.createServer((s) => s.on('error', () => undefined)); // accepts, reads, never answers
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    const held: net.Socket[] = [];
    hole.on('connection', (s) => held.push(s));
    try {
      const o = await origin();
      for (let i = 0; i < 4; i++) o.route(`/page/${i}`, { headers: { 'cache-control': 'max-age=60' }, body: `page ${i}` });
      const holeUrl = `http://127.0.0.1:${(hole.address() as net.AddressInfo).port}`;
      const g = await gateway({
        sites: [siteFor([holeUrl, o.url], { balance: 'round-robin', healthCheck: { enabled: false }, timeouts: { responseHeadersMs: 300 } })],
      });
      const answers = await Promise.all([0, 1, 2, 3].map((i) => call(`${g.url}/page/${i}`)));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
      expect(answers.map((a) => a.body)).toEqual(['page 0', 'page 1', 'page 2', 'page 3']);
      expect(held.length).toBeGreaterThan(0); // the black hole was tried
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => hole.close(() => r()));
    }
  });
});

describe('failure amplification: a long-poll route', () => {
  it("waits as long as the route's own timeouts allow, while other routes keep the site's", async () => {
    const o = await origin();
    // Nothing, not even the head, for 2.5 s (a long poll waiting for news). undici's timers tick
    // about once a second: a head timeout is honoured to within a second.
    const late = (body: string) => (_req: http.IncomingMessage, res: http.ServerResponse) =>
      void setTimeout(() => {
        res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
        res.end(body);
      }, 2_500);
    o.route('/poll', late('news'));
    o.route('/page', late('page'));
    const g = await gateway({
      sites: [
        siteFor([o.url], {
          timeouts: { responseHeadersMs: 1_000 },
          routes: [{ name: 'poll', match: { pathPrefix: '/poll' }, timeouts: { responseHeadersMs: 6_000 } }],
        }),
      ],
    });
    const [poll, page] = await Promise.all([call(`${g.url}/poll`), call(`${g.url}/page`)]);
    expect(poll.status).toBe(200);
    expect(poll.body).toBe('news');
    expect(page.status).toBe(504);
  });
});

describe('failure amplification: endless event streams', () => {
  it('streams server-sent events at once, on a cacheable route too, without holding origin permits: other requests keep flowing', async () => {
    const o = await origin();
    let open = 0;
    o.route('/notify/stream', (req, res) => {
      open++;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('data: hello\n\n');
      const t = setInterval(() => res.write('data: tick\n\n'), 200);
      req.socket.once('close', () => {
        clearInterval(t);
        open--;
      });
    });
    o.route('/api/ping', { headers: { 'cache-control': 'no-store' }, body: 'pong' });
    const g = await gateway({
      admission: { limit: { algorithm: 'fixed', initial: 2, ceiling: 2 }, queue: { deadlineMs: 300 } },
      sites: [siteFor([o.url])],
    });
    const { port } = new URL(g.url);
    // Five clients on the stream (a GET on the default, cacheable route), each reading.
    const firstEvent: number[] = [];
    const started = performance.now();
    const clients = Array.from({ length: 5 }, (_, i) => {
      const s = net.connect(Number(port), '127.0.0.1', () => s.write(`GET /notify/stream?user=${i} HTTP/1.1\r\nHost: blog.example.com\r\n\r\n`));
      let text = '';
      s.on('data', (d: Buffer) => {
        text += d.toString();
        if (firstEvent[i] === undefined && text.includes('data: hello')) firstEvent[i] = performance.now() - started;
      });
      s.on('error', () => undefined);
      return s;
    });
    try {
      expect(await eventually(() => firstEvent.filter((x) => x !== undefined).length === 5, 150, 20), 'every stream starts').toBe(true);
      expect(Math.max(...firstEvent)).toBeLessThan(2_000);
      const answers = await Promise.all(Array.from({ length: 4 }, () => call(`${g.url}/api/ping`)));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    } finally {
      for (const s of clients) s.destroy();
    }
    // The clients left: so do the origin's streams.
    expect(await eventually(() => open === 0, 100, 20)).toBe(true);
  }, 15_000);
});

/**
 * A download the origin holds: cacheable but past the test's maxObjectBytes, its head and a
 * first chunk at once, the rest at release(); heads() counts the requests it got.
 */
function heldDownload(o: TestOrigin, path: string, size: number, contentType: string) {
  let heads = 0;
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  o.route(path, async (_req, res) => {
    heads++;
    res.writeHead(200, { 'content-type': contentType, 'content-length': String(size), 'cache-control': 'public, max-age=300' });
    res.write(Buffer.alloc(1024, 97));
    await released;
    res.end(Buffer.alloc(size - 1024, 98));
  });
  return { heads: () => heads, release };
}

describe('failure amplification: a crowd of downloads', () => {
  it('a download longer than the cache keeps gives its permit back at its head: a crowd of them is not refused while the origin streams them (normal-day trial)', async () => {
    const o = await origin();
    const size = 1 << 20;
    // A podcast episode: the rest of it once every client has its head.
    const { heads, release } = heldDownload(o, '/episode.mp3', size, 'audio/mpeg');
    const g = await gateway({
      cache: { maxObjectBytes: 64 * 1024 },
      admission: { limit: { algorithm: 'fixed', initial: 2, ceiling: 2 }, queue: { deadlineMs: 300, minWaitRoundTrips: 0 } },
      sites: [siteFor([o.url])],
    });
    const downloads = Array.from({ length: 10 }, () => request(`${g.url}/episode.mp3`));
    const answers = await Promise.all(downloads);
    expect(answers.map((a) => a.statusCode)).toEqual(Array(10).fill(200));
    release();
    const bodies = await Promise.all(answers.map(async (a) => (await a.body.arrayBuffer()).byteLength));
    expect(bodies).toEqual(Array(10).fill(size));
    // The fill that found it too large, then one pass-through each.
    expect(heads()).toBe(11);
  });
});

describe('failure amplification: more downloads than the agent has sockets for', () => {
  it('at most MAX_FREED_ANSWERS answers of a member stream on without their permit; past it they hold it, and all finish (review)', async () => {
    const o = await origin();
    const size = 256 * 1024;
    const { heads, release } = heldDownload(o, '/release.tar', size, 'application/x-tar');
    const g = await gateway({
      cache: { maxObjectBytes: 64 * 1024 },
      limits: { maxConnectionsPerClient: 0 },
      // 140 requests at once in the test's own process: on a busy box the pressure gate shed one,
      // and (a fresh-clone CI run) the standing queue's CoDel bound refused a late arrival; neither
      // is what this tests, so the waits are bounded by the deadline alone.
      admission: {
        pressure: { enabled: false },
        limit: { algorithm: 'fixed', initial: 4, ceiling: 4 },
        queue: { deadlineMs: 20_000, minWaitRoundTrips: 0, codelTargetMs: 20_000, codelIntervalMs: 20_000 },
      },
      sites: [siteFor([o.url], { healthCheck: { enabled: false } })],
    });
    const member = g.gw.runtime().sites[0]!.pool.members()[0]!;
    const dispatcher = new UndiciAgent({ connections: 500 });
    try {
      const n = MAX_FREED_ANSWERS + 12;
      const downloads = Array.from({ length: n }, () =>
        request(`${g.url}/release.tar`, { dispatcher }).then(async (a) => ({
          status: a.statusCode,
          bytes: (await a.body.arrayBuffer()).byteLength,
          error: a.headers['x-crowdgate-error'],
        })),
      );
      // The fill that found it too large, MAX_FREED_ANSWERS freed at their heads, then 4 holding
      // the 4 permits; the rest wait for one.
      await expect.poll(heads, { timeout: 10_000 }).toBe(1 + MAX_FREED_ANSWERS + 4);
      expect(member.freedAnswers).toBe(MAX_FREED_ANSWERS);
      release();
      const done = await Promise.all(downloads);
      expect(done.filter((d) => d.status !== 200 || d.bytes !== size)).toEqual([]);
      expect(member.freedAnswers).toBe(0);
    } finally {
      await dispatcher.close();
    }
  }, 30_000);
});

describe('failure amplification: an EventSource on a cacheable route', () => {
  it('asks the origin once (Accept: text/event-stream bypasses the cache), and the first event arrives', async () => {
    const o = await origin();
    let opened = 0;
    o.route('/live', (req, res) => {
      opened++;
      // The head goes out with the first event, as many servers buffer it.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(`data: first ${opened}\n\n`);
      const t = setInterval(() => res.write('data: tick\n\n'), 200);
      req.socket.once('close', () => clearInterval(t));
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const { port } = new URL(g.url);
    const s = net.connect(Number(port), '127.0.0.1', () =>
      s.write('GET /live HTTP/1.1\r\nHost: blog.example.com\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n'),
    );
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString()));
    s.on('error', () => undefined);
    try {
      expect(await eventually(() => text.includes('data: tick'), 100, 30)).toBe(true);
      expect(text).toContain('data: first 1'); // the origin's one stream, from its first event
      expect(text.toLowerCase()).toContain('cache-status: crowdgate; fwd=bypass');
      expect(opened).toBe(1);
    } finally {
      s.destroy();
    }
    // The same request without the Accept of an EventSource, as plain GET (curl): the cache path
    // (the stream is never stored), still answered.
    const plain = net.connect(Number(port), '127.0.0.1', () => plain.write('GET /live HTTP/1.1\r\nHost: blog.example.com\r\n\r\n'));
    let plainText = '';
    plain.on('data', (d: Buffer) => (plainText += d.toString()));
    plain.on('error', () => undefined);
    try {
      expect(await eventually(() => plainText.includes('data: tick'), 100, 30)).toBe(true);
    } finally {
      plain.destroy();
    }
  }, 15_000);
});

describe('failure amplification: must-revalidate pages when the origin is down', () => {
  const T0_LAST_MODIFIED = Date.UTC(2026, 0, 1);
  const MEDIAWIKI = 's-maxage=1, must-revalidate, max-age=0';

  async function storedThenOriginDown(routes: unknown[]) {
    const clock = manualClock();
    const o = await origin();
    // With Last-Modified, as MediaWiki sends it: the copy is kept past its lifetime to be revalidated.
    const withLastModified = (page: OriginHandler): OriginHandler => (req, res, recorded) => {
      res.setHeader('last-modified', new Date(T0_LAST_MODIFIED).toUTCString());
      return page(req, res, recorded);
    };
    o.route('/wiki/Main_Page', withLastModified(clockedPage(clock, MEDIAWIKI, () => 'main page')));
    o.route('/other', withLastModified(clockedPage(clock, MEDIAWIKI, () => 'other page')));
    const g = await gateway({ sites: [siteFor([o.url], { routes })] }, { clock });
    for (const p of ['/wiki/Main_Page', '/other']) {
      const filled = await call(`${g.url}${p}`);
      expect(filled.status).toBe(200);
      expect(filled.headers['cache-status']).toMatch(/stored/);
      expect((await call(`${g.url}${p}`)).headers['cache-status']).toMatch(/crowdgate; hit/); // stored and fresh
    }
    expect(o.count()).toBe(2);
    clock.advance(2_000); // past s-maxage
    o.kill();
    await sleep(50);
    return { g, o };
  }

  it('serves the stale page when the route opts in with cache.graceOverridesMustRevalidate', async () => {
    const { g } = await storedThenOriginDown([
      { name: 'wiki', match: { pathPrefix: '/wiki/' }, cache: { graceOverridesMustRevalidate: true, staleWhileRevalidateSeconds: 0 } },
    ]);
    const r = await call(`${g.url}/wiki/Main_Page`);
    expectStale(r, 'main page', '/wiki/Main_Page with the origin down');
    expect(r.headers['cache-status']).toMatch(/detail="stale-(unreachable|error)/);
    // The opt-in is per route: a page on the default route keeps strict must-revalidate.
    const other = await call(`${g.url}/other`);
    expect([502, 504]).toContain(other.status);
    expect(other.headers['x-crowdgate-error']).toBeDefined();
    // The route that withheld its copy is named; the opted-in one never is.
    const said = g.logs.filter((l) => String(l.msg).includes('graceOverridesMustRevalidate: true'));
    expect(said.map((l) => l.route)).toEqual(['default']);
  });

  it('answers an error, not the stale page, by default (must-revalidate is honoured)', async () => {
    const { g } = await storedThenOriginDown([]);
    const r = await call(`${g.url}/wiki/Main_Page`);
    expect([502, 504]).toContain(r.status);
    expect(r.headers['x-crowdgate-error']).toMatch(/^origin_(unreachable|timeout)$/);
    expect(r.body).not.toContain('main page');
    // Why no stale page came is said at warn, naming the setting, once in 10 minutes per route
    // (failure trial: MediaWiki readers got 502 through a 3 s restart and nothing said why).
    await call(`${g.url}/wiki/Main_Page`);
    const said = () => g.logs.filter((l) => String(l.msg).includes('graceOverridesMustRevalidate: true'));
    expect(said()).toHaveLength(1);
    expect(said()[0]).toMatchObject({ level: 40, site: expect.any(String), route: 'default', path: '/wiki/Main_Page' });
  });
});
