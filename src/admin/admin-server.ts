/**
 * The admin listener (127.0.0.1 by default, its own port): /healthz, /readyz, /metrics,
 * /status (JSON), and POST /purge with a bearer token (applied here and, with Redis, broadcast to
 * every instance). Owns the admin HTTP surface; the data
 * comes from the Gateway.
 */
import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { keyPrefixFor, keyUrlSelectorsFor, makeAuthority, parseUrlPath } from '../cache/cache-key.js';
import type { PurgeMode, PurgeSelector } from '../cache/stores/cache-store.js';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { CacheStore } from '../cache/stores/cache-store.js';
import type { RedisStatus } from '../cache/stores/gateway-store.js';
import type { Inflight } from '../collapse/inflight.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { Admission } from '../admission/admission.js';
import type { Runtime } from '../runtime.js';
import type { CrossInstanceCollapse, FillResult } from '../server/handle-request.js';
import type { HotKeys } from './hot-keys.js';
import type { Readiness } from './readiness.js';
import type { StatusHistory } from './status-history.js';
import type { SiteStatus } from '../tls/acme/manager.js';
import type { LastReload } from '../config/live-reload.js';
import { prefersJson } from '../errors.js';
import { renderStatusPage, STATUS_PAGE_HEADERS } from './status-page.js';
import { isLoopbackHost } from '../log.js';

const MAX_PURGE_BODY = 64 * 1024;

export interface PurgeRequest {
  site?: string;
  url?: string;
  prefix?: string;
  tag?: string;
  all?: boolean;
  mode?: PurgeMode;
}

/**
 * What the admin listener reads from the gateway (gateway.ts implements it): declared here, so
 * the admin module depends on the parts, not on the composition root that imports it.
 */
export interface AdminGateway {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly store: CacheStore;
  readonly inflight: Inflight<FillResult>;
  /** The pressure gate's readings and verdicts (admission/admission.ts). */
  readonly admission: Pick<Admission, 'pressure' | 'isOverloaded' | 'isShedding'>;
  readonly hotKeys: HotKeys;
  readonly status: StatusHistory;
  readonly startedAt: number;
  readonly crossInstance?: CrossInstanceCollapse;
  runtime(): Runtime;
  purge(selectors: readonly PurgeSelector[], mode: PurgeMode): Promise<{ purged: number; broadcast: boolean }>;
  readiness(): Readiness;
  collectGauges(): void;
  /** The ACME sites' certificates (tls/acme-sites.ts); empty without `tls.acme` sites. */
  acmeStatus?(): SiteStatus[];
  /** The last config reload attempt (config/live-reload.ts); undefined before one, or without a config file. */
  lastReload?(): LastReload | undefined;
  /** The Redis tier: answering now, purges it has not taken (cache/stores/gateway-store.ts); undefined without one. */
  redisStatus?(): RedisStatus | undefined;
}

export function createAdminServer(gw: AdminGateway): http.Server {
  const server = http.createServer({ headersTimeout: 5_000, requestTimeout: 10_000 }, (req, res) => {
    handleAdmin(gw, req, res).catch((err) => {
      gw.logger.error({ err }, 'admin request failed');
      if (!res.headersSent) json(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  return server;
}

async function handleAdmin(gw: AdminGateway, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const path = url.pathname;
  if (!answersHost(gw.runtime().config.admin, req.headers.host))
    return json(res, 421, { error: 'this Host is not answered by the admin listener on a loopback address (add it to admin.allowedHosts)' });
  if (path === '/healthz') return json(res, 200, { status: 'ok' });
  if (path === '/readyz') {
    const r = gw.readiness();
    // The origins' addresses are for the status token's bearer when there is one (the status
    // page is guarded because it names them); a load balancer's probe still reads every state.
    const statusToken = gw.runtime().config.admin.statusToken;
    if (statusToken !== undefined && !isAuthorised(gw, req, statusToken)) r.sites = r.sites.map((s) => ({ ...s, origins: s.origins.map(withoutAddress) }));
    // `?origin`: also 503 when no site has a usable origin, for a check that must know this
    // instance reaches its origin (a deploy gate, a gateway beside its own app). The default
    // does not: every instance shares the origin, and a load balancer would pull them all.
    const ready = r.ready && (!url.searchParams.has('origin') || r.sites.some((s) => s.state === 'up'));
    return json(res, ready ? 200 : 503, { status: ready ? 'ready' : r.draining ? 'draining' : r.stopping ? 'stopping' : 'not ready', ...r, ready });
  }
  if (path === '/metrics') {
    gw.collectGauges();
    const { contentType, body } = await gw.metrics.render();
    res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
    res.end(body);
    return;
  }
  // The status page names the hottest paths and the origins: with admin.statusToken set, only
  // for the bearer of it (health, readiness and metrics stay open to probes and Prometheus).
  const statusToken = gw.runtime().config.admin.statusToken;
  if ((path === '/status' || path === '/status.json' || path === '/') && statusToken !== undefined && !isAuthorised(gw, req, statusToken))
    return json(res, 401, { error: 'missing or wrong bearer token (admin.statusToken)' }, { 'www-authenticate': 'Bearer' });
  if (path === '/status.json' || (path === '/status' && prefersJson(req.headers.accept))) {
    return json(res, 200, { ...statusSnapshot(gw), ...gw.status.snapshot() });
  }
  if (path === '/status' || path === '/') {
    const body = renderStatusPage();
    res.writeHead(200, { ...STATUS_PAGE_HEADERS, 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  if (path === '/purge') {
    if (req.method !== 'POST') return json(res, 405, { error: 'use POST' }, { allow: 'POST' });
    return purge(gw, req, res);
  }
  return json(res, 404, { error: 'not found', endpoints: ['/healthz', '/readyz', '/metrics', '/status', 'POST /purge'] });
}

/**
 * DNS rebinding: a web page open in a browser on the gateway's machine can point a name of its
 * own at 127.0.0.1 and read the admin listener as its own origin (/status.json names the
 * origins and the hottest paths; attacker trial). Such a request carries that name as Host. So
 * on a loopback admin address only IP literals, `localhost` (and `*.localhost`), this machine's
 * name and `admin.allowedHosts` are answered; a request without Host too (HTTP/1.0 tools). On
 * any other address every name is (a scraper may use any; the tokens guard it).
 */
export function answersHost(admin: { host: string; allowedHosts: readonly string[] }, host: string | undefined): boolean {
  if (host === undefined || host === '' || !isLoopbackHost(admin.host)) return true;
  if (host.startsWith('[')) return true; // an IPv6 literal
  const name = host.replace(/:\d*$/, '').replace(/\.$/, '').toLowerCase();
  if (isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost')) return true;
  const own = hostname().toLowerCase();
  if (name === own || name === own.split('.')[0]) return true;
  return admin.allowedHosts.some((h) => h.toLowerCase().replace(/\.$/, '') === name);
}

export function statusSnapshot(gw: AdminGateway): Record<string, unknown> {
  const rt = gw.runtime();
  const stats = gw.store.stats();
  return {
    generation: rt.generation,
    configHash: rt.configHash,
    uptimeSeconds: Math.round((gw.clock.now() - gw.startedAt) / 1000),
    readiness: gw.readiness(),
    cache: { entries: stats.entries, bytes: stats.bytes, maxBytes: rt.config.cache.maxBytes, inflightFills: gw.inflight.size },
    pressure: { overloaded: gw.admission.isOverloaded(), shedding: gw.admission.isShedding(), ...gw.admission.pressure.readings() },
    hotKeys: gw.hotKeys.top(10),
    ...reloadSnapshot(gw),
    ...acmeSnapshot(gw),
    ...redisSnapshot(gw),
  };
}

/**
 * `redis`: with a Redis tier, whether it answers now, the purges it has not taken, and how the
 * fills asked across instances ended since start (crowdgate_redis_fills_total): the status page
 * said nothing about Redis (multi-instance trial).
 */
function redisSnapshot(gw: AdminGateway): { redis?: RedisStatus } {
  const status = gw.redisStatus?.();
  return status === undefined ? {} : { redis: status };
}

/**
 * `lastReload`: the last config reload attempt, so that a refused edit is seen where ops look
 * (the log has every error; the page shows the first few and that the old config still runs).
 */
function reloadSnapshot(gw: AdminGateway): { lastReload?: Record<string, unknown> } {
  const last = gw.lastReload?.();
  if (last === undefined) return {};
  return { lastReload: { ...last, at: new Date(last.at).toISOString() } };
}

/** `acme`: per ACME site, the certificate served (temporary or not, serial, expiry), when it renews and the last error. */
function acmeSnapshot(gw: AdminGateway): { acme?: Array<Record<string, unknown>> } {
  const sites = gw.acmeStatus?.() ?? [];
  if (sites.length === 0) return {};
  const iso = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? undefined : new Date(ms).toISOString());
  return {
    acme: sites.map((s) => ({
      site: s.site,
      hostnames: s.hostnames,
      temporary: s.temporary,
      serial: s.serial,
      notAfter: iso(s.notAfter),
      renewAt: iso(s.renewAt),
      failures: s.failures,
      nextAttemptAt: s.failures > 0 ? iso(s.nextAttemptAt) : undefined,
      lastError: s.lastError,
    })),
  };
}

function isAuthorised(gw: AdminGateway, req: http.IncomingMessage, token = gw.runtime().config.admin.purgeToken): boolean {
  if (!token) return false;
  const header = req.headers.authorization ?? '';
  const m = /^Bearer\s+(.+)$/i.exec(header);
  if (!m) return false;
  const given = Buffer.from(m[1]!.trim());
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

async function purge(gw: AdminGateway, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  if (!gw.runtime().config.admin.purgeToken)
    return json(res, 403, { error: 'purge is disabled: set admin.purgeToken in the config' });
  if (!isAuthorised(gw, req)) return json(res, 401, { error: 'missing or wrong bearer token' }, { 'www-authenticate': 'Bearer' });
  let body: PurgeRequest;
  try {
    body = JSON.parse((await readBody(req, MAX_PURGE_BODY)) || '{}') as PurgeRequest;
  } catch (err) {
    return json(res, 400, { error: `body must be JSON: ${(err as Error).message}` });
  }
  const parsed = toSelectors(gw, body);
  if ('error' in parsed) return json(res, 400, { error: parsed.error });
  // Here (L1 and, with Redis, L2), then broadcast to the other instances' L1 (gateway.purge).
  const { purged, broadcast } = await gw.purge(parsed.selectors, parsed.mode);
  gw.metrics.get('purges').inc({ kind: parsed.kind, mode: parsed.mode });
  gw.metrics.get('purgedEntries').inc({ mode: parsed.mode }, purged);
  gw.logger.info({ kind: parsed.kind, mode: parsed.mode, purged, broadcast }, 'purge');
  return json(res, 200, { purged, mode: parsed.mode, kind: parsed.kind, ...(gw.crossInstance ? { broadcast } : {}) });
}

/** Turns a purge request into store selectors; soft unless `mode: "hard"` (a purge must never stampede the origin). */
export function toSelectors(
  gw: AdminGateway,
  body: PurgeRequest,
): { selectors: PurgeSelector[]; mode: PurgeMode; kind: string } | { error: string } {
  if (typeof body !== 'object' || body === null) return { error: 'body must be a JSON object' };
  const mode: PurgeMode = body.mode === 'hard' ? 'hard' : 'soft';
  if (body.mode !== undefined && body.mode !== 'hard' && body.mode !== 'soft') return { error: 'mode must be "soft" or "hard"' };
  const rt = gw.runtime();
  const chosen = ['url', 'prefix', 'tag', 'all'].filter((k) => (body as Record<string, unknown>)[k] !== undefined);
  if (chosen.length !== 1) return { error: 'give exactly one of url, prefix, tag, all' };
  if (body.all) return { selectors: [{ kind: 'all' }], mode, kind: 'all' };
  if (typeof body.tag === 'string' && body.tag) return { selectors: [{ kind: 'tag', tag: body.tag }], mode, kind: 'tag' };

  const target = body.url ?? body.prefix;
  if (typeof target !== 'string' || target.length === 0) return { error: 'url/prefix must be a non-empty string' };
  let host: string | undefined;
  let scheme = 'http';
  let pathAndQuery = target;
  if (/^https?:\/\//i.test(target)) {
    try {
      const u = new URL(target);
      host = u.host;
      scheme = u.protocol.slice(0, -1);
      pathAndQuery = u.pathname + u.search;
    } catch {
      return { error: `not a URL: ${target}` };
    }
  }
  if (!pathAndQuery.startsWith('/')) return { error: 'url/prefix must be a path starting with / or an absolute URL' };
  const sites = body.site
    ? rt.sites.filter((s) => s.name === body.site)
    : host
      ? [rt.router.match(host)].filter((s) => s !== undefined)
      : rt.sites;
  if (sites.length === 0) return { error: `no such site: ${body.site ?? host}` };
  const selectors: PurgeSelector[] = [];
  for (const site of sites) {
    if (body.prefix !== undefined) {
      selectors.push({ kind: 'prefix', prefix: keyPrefixFor(site.name, pathAndQuery) });
      continue;
    }
    // Every key for this URL: every Host (or the one the absolute URL names) and every header
    // or cookie part of the key template.
    const target = parseUrlPath(pathAndQuery);
    const route = site.compiled.matchRoute('GET', target.path, target.query);
    const keyCfg = site.policyFor(route).route.key;
    selectors.push(...keyUrlSelectorsFor(site.name, pathAndQuery, keyCfg, host === undefined ? undefined : makeAuthority(host, scheme)));
  }
  return { selectors, mode, kind: body.prefix !== undefined ? 'prefix' : 'key' };
}

function readBody(req: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function json(res: http.ServerResponse, status: number, payload: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  const body = JSON.stringify(payload, null, 1) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(body);
}

/**
 * A member's readiness entry without its address: no `url`, and its position (`origin-1`...) for
 * a name, since an unnamed member is named by its `host:port` (review).
 */
function withoutAddress(origin: unknown, index: number): unknown {
  if (typeof origin !== 'object' || origin === null) return origin;
  const { url: _url, name: _name, ...rest } = origin as Record<string, unknown>;
  return { name: `origin-${index + 1}`, ...rest };
}
