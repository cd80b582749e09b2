/**
 * The dashboard and the alert rules against a real Prometheus scraping a real gateway.
 *
 * A gateway (fixed origin limit 1, queue of 1) and two loopback origins get a scripted mix of
 * traffic — hits, misses, collapsed waiters, stale (origin 500 after expiry; an origin killed and
 * ejected, and its 502s), queueing and sheds (a slow uncached route), 429s, a purge, a good and a bad reload —
 * while `prometheus` (Debian package) scrapes the admin /metrics every second, with the alert
 * rules loaded and a second, dead target in the job (so `up == 0` has a series). Two more
 * gateways share a real `redis-server` (L2 misses, sets and hits), which is then killed (Redis
 * errors, crowdgate_redis_up 0: the Redis panels and CrowdgateRedisDown have data), after a spell
 * of refusing writes while up (maxmemory under noeviction: CrowdgateRedisErrors). Then every
 * PromQL expression of every dashboard panel and every alert rule is evaluated through the HTTP API
 * as Grafana does (a range query over the scenario, variables substituted): each must parse and
 * return data. Also: a broken expression is reported, `promtool check metrics` passes on a scrape
 * (with prom-client's own lint complaints listed), and a random-path flood adds no series.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { siteFor, startGateway, type StartedGateway } from '../helpers/gateway.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startTestOrigin, type TestOrigin } from '../helpers/test-origin.js';
import { freePort } from '../helpers/free-port.js';

const ROOT = join(import.meta.dirname, '../..');
const DASHBOARD = join(ROOT, 'grafana/dashboards/crowdgate.json');
const RULES = join(ROOT, 'grafana/alerts/crowdgate.rules.yaml');
const SCRAPE_INTERVAL_S = 1;
/** Origin latency of the slow route: longer than a scrape interval, so a scrape sees the queue. */
const SLOW_MS = 1_300;

/**
 * `promtool check metrics` complaints about prom-client's default metrics (not ours, not fixable
 * here): these gauges count things and are named `_total` by prom-client.
 */
const PROM_CLIENT_LINT_IGNORES: Array<{ metric: string; message: RegExp }> = [
  { metric: 'nodejs_active_handles_total', message: /non-counter metrics should not have "_total" suffix/ },
  { metric: 'nodejs_active_requests_total', message: /non-counter metrics should not have "_total" suffix/ },
  { metric: 'nodejs_active_resources_total', message: /non-counter metrics should not have "_total" suffix/ },
];

function binary(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/bin')) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found (PATH or /usr/bin/${name}). Install the "prometheus" package: apt-get install -y prometheus`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ''}`);
}

// ---- Prometheus -------------------------------------------------------------------------------

interface Prometheus {
  url: string;
  stop(): Promise<void>;
  log(): string;
}

async function startPrometheus(targets: string[]): Promise<Prometheus> {
  const bin = binary('prometheus');
  const dir = mkdtempSync(join(tmpdir(), 'crowdgate-prom-'));
  const port = await freePort();
  const config = [
    'global:',
    `  scrape_interval: ${SCRAPE_INTERVAL_S}s`,
    `  scrape_timeout: ${SCRAPE_INTERVAL_S}s`,
    `  evaluation_interval: ${SCRAPE_INTERVAL_S}s`,
    'rule_files:',
    `  - ${JSON.stringify(RULES)}`,
    'scrape_configs:',
    '  - job_name: crowdgate',
    '    static_configs:',
    `      - targets: ${JSON.stringify(targets)}`,
  ].join('\n');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  let output = '';
  const child: ChildProcess = spawn(
    bin,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
      const killed = await Promise.race([exited.then(() => true), sleep(3_000).then(() => false)]);
      if (!killed && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      'prometheus to be ready',
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${output.slice(-2000)}`);
        const r = await get(`${url}/-/ready`);
        return r.status === 200 ? true : undefined;
      },
      15_000,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stop, log: () => output };
}

interface QueryResult {
  status: 'success' | 'error';
  error?: string;
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; values?: Array<[number, string]>; value?: [number, string] }> };
}

async function queryRange(prom: Prometheus, expr: string, startS: number, endS: number): Promise<QueryResult> {
  const body = new URLSearchParams({ query: expr, start: String(startS), end: String(endS), step: String(SCRAPE_INTERVAL_S) });
  const res = await request(`${prom.url}/api/v1/query_range`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: body.toString(),
  });
  return (await res.body.json()) as QueryResult;
}

async function instant(prom: Prometheus, expr: string): Promise<QueryResult> {
  const res = await request(`${prom.url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
  return (await res.body.json()) as QueryResult;
}

/** Grafana's variables, as Grafana would send them for "All" and this scrape interval. */
function substitute(expr: string, rangeS: number): string {
  return expr
    .replaceAll('$__rate_interval', `${4 * SCRAPE_INTERVAL_S + 1}s`)
    .replaceAll('$__range', `${rangeS}s`)
    .replaceAll('$__interval', `${SCRAPE_INTERVAL_S}s`)
    .replaceAll('${site}', '.*')
    .replaceAll('$site', '.*')
    .replaceAll('${instance}', '.*')
    .replaceAll('$instance', '.*');
}

interface Expression {
  where: string;
  expr: string;
}

function dashboardExpressions(): Expression[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Array<{ title: string; type: string; targets?: Array<{ expr?: string; refId?: string }>; panels?: unknown[] }> };
  const out: Expression[] = [];
  for (const p of dash.panels) {
    for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId ?? ''}`, expr: t.expr ?? '' });
  }
  return out;
}

/**
 * Alerts whose condition is a share of time over minutes, which a scenario of seconds cannot
 * reach: checked with the threshold at 0 (the series exists and moved in the scenario). Their
 * thresholds are promtool's to test (crowdgate.rules.test.yaml).
 */
const SHARE_OVER_MINUTES: Record<string, { threshold: RegExp; here: string }> = {
  CrowdgateOriginLimiterSaturated: { threshold: /> 0\.5\s*$/, here: '> 0' },
};

function alertExpressions(): Expression[] {
  const doc = parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Array<{ alert?: string; record?: string; expr: string }> }> };
  return doc.groups.flatMap((g) =>
    g.rules.map((r) => {
      const share = r.alert === undefined ? undefined : SHARE_OVER_MINUTES[r.alert];
      const expr = String(r.expr);
      if (share && !share.threshold.test(expr)) throw new Error(`alert ${r.alert}: its threshold is no longer ${share.threshold}; update SHARE_OVER_MINUTES`);
      return { where: `alert ${r.alert ?? r.record}`, expr: share ? expr.replace(share.threshold, share.here) : expr };
    }),
  );
}

/** Evaluates expressions over [startS, endS]; returns one problem line per expression that fails or is empty. */
async function checkExpressions(prom: Prometheus, exprs: Expression[], startS: number, endS: number) {
  const problems: string[] = [];
  for (const e of exprs) {
    const q = substitute(e.expr, Math.max(1, Math.round(endS - startS)));
    const r = await queryRange(prom, q, startS, endS);
    if (r.status !== 'success') {
      problems.push(`${e.where}: ${r.error ?? 'query failed'} — ${q}`);
      continue;
    }
    const points = (r.data?.result ?? []).reduce((n, s) => n + (s.values?.length ?? 0), 0);
    if (points > 0) continue;
    problems.push(`${e.where}: no data — ${q}`);
  }
  return { problems };
}

// ---- the scenario -------------------------------------------------------------------------------

describe('dashboard and alerts against a real Prometheus', () => {
  let origin: TestOrigin;
  let fragile: TestOrigin;
  let g: StartedGateway;
  let redis: RedisServer;
  /** Two gateways sharing `redis`: what one stores, the other finds in L2. */
  let shared: StartedGateway[] = [];
  let prom: Prometheus;
  let dead: Server | undefined;
  let startS = 0;
  let endS = 0;

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'main' });
    fragile = await startTestOrigin({ name: 'fragile' });
    origin.route('/page', { headers: { 'cache-control': 'public, max-age=60' }, body: 'page' });
    // A compressible page: its fill stores br and gzip (the compression panels).
    origin.route('/article', { headers: { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' }, body: '<p>crowd</p>\n'.repeat(400) });
    origin.route('/cold', { delayMs: 300, headers: { 'cache-control': 'public, max-age=60' }, body: 'cold' });
    // No stale-while-revalidate (the route default would answer these `updating`): once expired,
    // the next request goes to the origin, whose failure is then answered `stale`.
    origin.route('/expiring', { headers: { 'cache-control': 'public, max-age=1, stale-while-revalidate=0' }, body: 'fresh for a second' });
    origin.route('/slow', { delayMs: SLOW_MS, body: 'slow' });
    origin.route('/limited', { headers: { 'cache-control': 'no-store' }, body: 'limited' });
    fragile.route('/news', { headers: { 'cache-control': 'public, max-age=1, stale-while-revalidate=0' }, body: 'news' });
    g = await startGateway({
      admin: { purgeToken: 'test-token-0123456789' },
      // An ACME site whose CA never answers (a closed port): it keeps its temporary self-signed
      // certificate (7 days), which is what the two certificate alerts read.
      tls: { host: '127.0.0.1', port: 0 },
      acme: { directoryUrl: `https://127.0.0.1:${await freePort()}/directory`, storageDir: mkdtempSync(join(tmpdir(), 'crowdgate-prom-acme-')) },
      admission: {
        limit: { algorithm: 'fixed', initial: 1, ceiling: 1 },
        // One waiting place, a deadline longer than the slow route, CoDel out of the way: the
        // limiter is saturated with a queue while the slow requests run.
        queue: { maxLength: 1, deadlineMs: 5_000, codelTargetMs: 5_000, codelIntervalMs: 5_000 },
      },
      sites: [
        siteFor([origin.url], {
          routes: [
            // A cap the six slow requests at once stay within: its gauges are on the queue panel.
            { name: 'slow', match: { pathPrefix: '/slow' }, cache: { enabled: false }, maxConcurrent: 6 },
            { name: 'limited', match: { pathPrefix: '/limited' }, rateLimit: { ratePerSecond: 0.1, burst: 1 } },
          ],
        }),
        { name: 'secure', hosts: ['secure.test'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: { acme: true } },
        {
          name: 'fragile',
          hosts: ['fragile.test'],
          origins: [{ url: fragile.url, name: 'fragile' }],
          // The only member is never ejected by live traffic: the probes mark it down.
          healthCheck: { enabled: true, intervalMs: 200, timeoutMs: 200, unhealthyThreshold: 1 },
          passive: { consecutiveFailures: 2, ejectMs: 60_000 },
          circuit: { consecutiveFailures: 2, openMs: 60_000 },
        },
      ],
    });
    redis = await startRedisServer();
    shared = await Promise.all(
      [1, 2].map(() =>
        startGateway({
          redis: { url: redis.url, commandTimeoutMs: 75, breakerOpenMs: 500 },
          sites: [siteFor([origin.url])],
        }),
      ),
    );
    // A target whose scrapes always fail (so `up == 0` has a series): a port held by a listener
    // that drops each connection. A free port left unbound was taken by another test file's
    // server in a full run, which Prometheus then scraped as up.
    dead = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => dead!.listen(0, '127.0.0.1', resolve));
    const deadTarget = `127.0.0.1:${(dead.address() as { port: number }).port}`;
    const targets = [g, ...shared].map((x) => new URL(x.adminUrl).host).concat(deadTarget);
    prom = await startPrometheus(targets);
    startS = Date.now() / 1000;
    await waitFor(
      'two scrapes of the gateways',
      async () => {
        const r = await instant(prom, 'count_over_time(up{job="crowdgate"}[1m])');
        const counts = (r.data?.result ?? []).map((s) => Number(s.value?.[1] ?? 0));
        return counts.length === targets.length && counts.every((n) => n >= 2) ? true : undefined;
      },
      15_000,
    );

    // The Redis tier: a miss stored in L1 and L2 by one gateway, an L2 hit on the other.
    const [r1, r2] = shared as [StartedGateway, StartedGateway];
    // (One public Host for both, as behind a load balancer: the Host is in the key.)
    expect((await get(`${r1.url}/page`, { host: 'shop.test' })).headers['cache-status']).toMatch(/fwd=uri-miss/);
    expect((await get(`${r2.url}/page`, { host: 'shop.test' })).headers['cache-status']).toMatch(/; hit/);

    // Hits and a miss; a cold page fetched once for five collapsed requests.
    for (let i = 0; i < 10; i++) await get(`${g.url}/page`);
    await get(`${g.url}/article`);
    await Promise.all(Array.from({ length: 5 }, () => get(`${g.url}/cold`)));

    // Stale: the entry expires, then the origin fails; grace (60 s by default) serves the old copy.
    await get(`${g.url}/expiring`);
    await get(`${g.url}/news`, { host: 'fragile.test' });
    await sleep(1_200);
    origin.route('/expiring', { status: 500, body: 'broken' });
    const stale = await get(`${g.url}/expiring`);
    expect(stale.status).toBe(200);
    expect(stale.body).toBe('fresh for a second');
    // More of them (CrowdgateOriginErrorsHiddenByStale: over 10 in 5 minutes), after a scrape
    // has seen the counter low (an increase starts from a series' first sample).
    await sleep(1_200);
    for (let i = 0; i < 12; i++) expect((await get(`${g.url}/expiring`)).body).toBe('fresh for a second');

    // An origin that dies: its health checks mark it down while its stale copy is served.
    // Two waves, a scrape or more apart: prom-client creates a labelled counter at its first
    // increment, and rate() only sees increases after the series' first sample.
    fragile.kill();
    await waitFor(
      'the fragile origin marked down',
      async () => ((await (await fetch(`${g.adminUrl}/readyz`)).text()).includes('"down"') ? true : undefined),
      5_000,
    );
    for (const wave of [1, 2]) {
      for (let i = 0; i < 2; i++) {
        const r = await get(`${g.url}/news`, { host: 'fragile.test' });
        expect(r.body, `wave ${wave}`).toBe('news');
      }
      // Nothing stored for these: the dead origin's 502s (server errors over 5 % of answers, on a
      // site with enough traffic for the alert's floor of 0.1 answers/s over 5 minutes).
      for (let i = 0; i < 50; i++) expect((await get(`${g.url}/uncached-${wave}-${i}`, { host: 'fragile.test' })).status, `wave ${wave}`).toBe(502);
      if (wave === 1) await sleep(1_500);
    }

    // Queueing and sheds: limit 1, one queue place, six slow uncached requests at once — one
    // runs, one waits (the limiter saturated with a queue: its time counted), four are shed. Twice.
    for (const wave of [1, 2]) {
      const slow = await Promise.all(Array.from({ length: 6 }, (_, i) => get(`${g.url}/slow?wave=${wave}&i=${i}`)));
      expect(slow.filter((r) => r.status === 503).length, `wave ${wave}`).toBe(4);
      expect(slow.filter((r) => r.status === 200).length, `wave ${wave}`).toBe(2);
    }

    // Per-client rate limit: one token, then 429s.
    const limited = await Promise.all([1, 2, 3].map(() => get(`${g.url}/limited`)));
    expect(limited.filter((r) => r.status === 429).length).toBe(2);

    // A purge, a good reload and a refused one.
    const purge = await request(`${g.adminUrl}/purge`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-token-0123456789', 'content-type': 'application/json' },
      body: JSON.stringify({ url: '/page' }),
    });
    expect(purge.statusCode).toBe(200);
    await purge.body.text();
    expect((await g.gw.reload())?.ok).toBe(true);
    writeFileSync(g.configPath, 'sites: [ this is : not valid');
    expect((await g.gw.reload())?.ok).toBe(false);

    // Redis full under noeviction: it stays up, and refuses every write (CrowdgateRedisErrors).
    const admin = new Redis(redis.url);
    await admin.config('SET', 'maxmemory', '1');
    for (let i = 0; i < 3; i++) {
      expect((await get(`${r1.url}/full-${i}`, { host: 'shop.test' })).status).toBe(200);
      await sleep(1_200); // the errors grow across scrapes: a rate
    }
    await admin.config('SET', 'maxmemory', '0');
    admin.disconnect();

    // Redis dies: lookups fail open (counted as Redis errors), the breaker opens, redis_up turns 0.
    await redis.kill();
    for (const path of ['/after-redis-1', '/after-redis-2', '/after-redis-3']) {
      expect((await get(`${r1.url}${path}`)).status).toBe(200);
    }

    // Let the last counters land in at least two scrapes.
    await sleep(3_000);
    endS = Date.now() / 1000;
  }, 60_000);

  afterAll(async () => {
    await prom?.stop();
    await g?.close();
    await Promise.all(shared.map((x) => x.close()));
    await redis?.stop();
    await origin?.close();
    await fragile?.close();
    await new Promise((resolve) => (dead ? dead.close(resolve) : resolve(undefined)));
  });

  it('loads the alert rules without errors', async () => {
    const res = await request(`${prom.url}/api/v1/rules`);
    const body = (await res.body.json()) as { data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> } };
    const rules = body.data.groups.flatMap((gr) => gr.rules);
    expect(rules.length).toBe(alertExpressions().length);
    expect(rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError ?? ''}`)).toEqual([]);
  });

  it('returns data for every dashboard panel expression', async () => {
    const { problems } = await checkExpressions(prom, dashboardExpressions(), startS, endS);
    expect(problems).toEqual([]);
  });

  it('returns data for every alert rule expression (each condition occurred in the scenario)', async () => {
    const { problems } = await checkExpressions(prom, alertExpressions(), startS, endS);
    expect(problems).toEqual([]);
  });

  it('reports an expression that names a metric that does not exist, or does not parse', async () => {
    const { problems } = await checkExpressions(
      prom,
      [
        { where: 'broken name', expr: 'sum by (state) (rate(crowdgate_requests_totl{site=~"$site"}[$__rate_interval]))' },
        { where: 'broken syntax', expr: 'sum by (state) (rate(crowdgate_requests_total[$__rate_interval])' },
        { where: 'good', expr: 'sum by (state) (rate(crowdgate_requests_total{site=~"$site"}[$__rate_interval]))' },
      ],
      startS,
      endS,
    );
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^broken name: no data/);
    expect(problems[1]).toMatch(/^broken syntax: .*parse error/);
  });

  it('passes promtool check metrics on a scrape, apart from prom-client\'s own default metrics', async () => {
    const body = (await get(`${g.adminUrl}/metrics`)).body;
    const r = spawnSync(binary('promtool'), ['check', 'metrics'], { input: body, encoding: 'utf8' });
    const complaints = `${r.stdout}${r.stderr}`
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    const unexpected = complaints.filter(
      (line) => !PROM_CLIENT_LINT_IGNORES.some((ig) => line.startsWith(`${ig.metric} `) && ig.message.test(line)),
    );
    expect(unexpected).toEqual([]);
  });
});

// ---- cardinality ----------------------------------------------------------------------------------

/**
 * prom-client default metrics whose series come and go with the process's own state, whatever the
 * traffic, from small fixed sets: GC kinds (nodejs_gc_duration_seconds{kind}: four) and libuv
 * handle/request types alive at scrape time (nodejs_active_*{type}).
 */
const PROCESS_STATE_SERIES = ['nodejs_gc_duration_seconds', 'nodejs_active_'];

/** Series in a Prometheus text scrape (name and labels; no values, no comments). */
function seriesOf(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#') && !PROCESS_STATE_SERIES.some((p) => l.startsWith(p)))
    .map((l) => l.replace(/ [^ ]+$/, ''));
}

describe('metrics cardinality', () => {
  it('does not grow the series count under a flood of random paths, queries and hosts', async () => {
    const o = await startTestOrigin();
    // A limit above the flood's concurrency: admission is not what this test is about.
    const g = await startGateway({
      admission: { limit: { algorithm: 'fixed', initial: 64, ceiling: 64 } },
      sites: [siteFor([o.url])],
    });
    try {
      const rand = () => Math.random().toString(36).slice(2, 10);
      let answered = 0;
      const flood = async (n: number) => {
        let next = 0;
        const worker = async () => {
          while (next < n) {
            next++;
            const res = await request(`${g.url}/${rand()}/${rand()}?${rand()}=${rand()}&q=${rand()}`, {
              headers: { host: `${rand()}.example` },
            });
            await res.body.text();
            if (res.statusCode === 200) answered++;
          }
        };
        await Promise.all(Array.from({ length: 16 }, worker));
      };
      // A first small flood creates the finite label sets such traffic can reach (state, status class).
      await flood(50);
      const before = seriesOf((await get(`${g.adminUrl}/metrics`)).body);
      await flood(2_000);
      const after = seriesOf((await get(`${g.adminUrl}/metrics`)).body);
      expect(answered).toBe(2_050);
      expect(o.count()).toBe(2_050);
      expect(after.filter((s) => !before.includes(s))).toEqual([]);
      expect(after.length).toBe(before.length);
      expect(after.filter((s) => s.startsWith('crowdgate_')).length).toBeGreaterThan(20);
      const status = await get(`${g.adminUrl}/status.json`);
      if (status.status === 200) expect((JSON.parse(status.body) as { hotKeys: unknown[] }).hotKeys.length).toBeLessThanOrEqual(10);
    } finally {
      await g.close();
      await o.close();
    }
  });
});
