/**
 * The request path (server/handle-request.ts) in-process with its real collaborators: the
 * memory store, Inflight, Upstream with a real OriginPool and Limiter, the metrics and the
 * config compiled by the real loader. Only the clock (ManualClock), the pressure gate's verdict
 * and what would need a network are faked: the cache fetcher and the pass-through forwarder
 * answer from a script and record what was asked of them. Requests arrive through a real
 * node:http server on 127.0.0.1, so answers are read off the wire, and each request's cache
 * state from its access-log line.
 */
import { BodySpool } from '../../src/origin/request-body.js';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { stringify } from 'yaml';
import { ManualClock } from '../../src/clock.js';
import { MemoryStore } from '../../src/cache/stores/memory-store.js';
import { Inflight } from '../../src/collapse/inflight.js';
import { formatConfigError, parseConfigText } from '../../src/config/load.js';
import type { GatewayConfig, GatewayConfigInput } from '../../src/config/schema.js';
import { GatewayMetrics } from '../../src/metrics/gateway-metrics.js';
import { OriginFetcher, type FetchFailure, type FetchRequest, type FetchResult } from '../../src/origin/fetch.js';
import { Forwarder, type ForwardCall, type ForwardOutcome } from '../../src/origin/forward.js';
import { OriginPool, type OriginMember } from '../../src/origin/pool.js';
import { Upstream } from '../../src/origin/upstream.js';
import { Runtime, type SiteRuntime } from '../../src/runtime.js';
import { TrustedProxies } from '../../src/server/client-address.js';
import type { HttpsRedirectFacts } from '../../src/server/context.js';
import { handleRequest, type FillResult, type RequestDeps } from '../../src/server/handle-request.js';

/** A promise settled from outside: holds an origin answer until the test lets it go. */
export interface Held<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

export function held<T>(): Held<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** What the scripted fetcher answers one fill with. */
export type Scripted = FetchResult | Promise<FetchResult> | 'throw';

/** The cache fetcher, answering from `script` (in order; the last answer repeats) and recording each request. */
export class ScriptedFetcher extends OriginFetcher {
  readonly calls: FetchRequest[] = [];
  script: Scripted[] = [];

  override async fetch(req: FetchRequest): Promise<FetchResult> {
    this.calls.push(req);
    const next = this.script.length > 1 ? this.script.shift()! : this.script[0];
    if (next === undefined) throw new Error('the fetcher has no script');
    if (next === 'throw') throw new Error('scripted fetcher failure');
    return next;
  }
}

/** The pass-through forwarder: answers 200 `passed` through the request path's onHead, or throws. */
export class ScriptedForwarder extends Forwarder {
  readonly calls: string[] = [];
  throws = false;

  override async web(req: IncomingMessage, res: ServerResponse, call: ForwardCall): Promise<ForwardOutcome> {
    this.calls.push(req.url ?? '');
    if (this.throws) throw new Error('scripted forwarder failure');
    res.writeHead(200, call.onHead(200, { 'content-type': 'text/plain' }));
    res.end('passed');
    return { kind: 'ok', status: 200, headAt: 0 };
  }
}

export interface Answered {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  cacheStatus: string;
  /** The request's cache state, from its access-log line. */
  state: string;
  log: Record<string, unknown>;
}

export interface RequestPath {
  clock: ManualClock;
  config: GatewayConfig;
  rt: Runtime;
  site: SiteRuntime;
  pool: OriginPool;
  store: MemoryStore;
  inflight: Inflight<FillResult>;
  upstream: Upstream;
  metrics: GatewayMetrics;
  fetcher: ScriptedFetcher;
  forwarder: ScriptedForwarder;
  deps: RequestDeps;
  /** The pressure gate's verdict (deps.admission.isOverloaded). */
  overloaded: boolean;
  /** Its hard level (deps.admission.isShedding); undefined: the same as `overloaded`. */
  shedding?: boolean;
  member(name?: string): OriginMember;
  /** One request to the gateway (GET unless `method`); resolves with its answer once its access-log line is written. */
  get(path: string, headers?: Record<string, string>, method?: string): Promise<Answered>;
  /** An origin answer for the scripted fetcher, timed by the manual clock. */
  page(body: string, headers?: Record<string, string>, status?: number): FetchResult;
  failure(failure: FetchFailure): FetchResult;
  close(): Promise<void>;
}

/**
 * Starts the request path for one site `site` (hosts `*`) whose origins are `origins` (names);
 * `tls`: what the redirect to https asks of the HTTPS edge (without it, nothing is redirected).
 */
export async function startRequestPath(
  input: { origins?: string[]; site?: Record<string, unknown>; config?: Partial<GatewayConfigInput>; tls?: HttpsRedirectFacts } = {},
): Promise<RequestPath> {
  const clock = new ManualClock(1_800_000_000_000);
  const origins = (input.origins ?? ['a']).map((name, i) => ({ name, url: `http://127.0.0.1:${9 + i}` })); // never connected
  const text = stringify({
    ...input.config,
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    sites: [{ name: 'site', hosts: ['*'], origins, healthCheck: { enabled: false }, ...input.site }],
  });
  const loaded = parseConfigText(text, 'request-path.yaml');
  if (!loaded.ok) throw new Error(`test config invalid:\n${loaded.errors.map(formatConfigError).join('\n')}`);
  const config = loaded.config;
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  const metrics = new GatewayMetrics();
  const pool = new OriginPool(config.sites[0]!, { clock });
  const rt = new Runtime(config, 1, () => pool);
  const upstream = new Upstream(clock, metrics, config.admission, rt.priorities.configured);
  const store = new MemoryStore({
    maxBytes: config.cache.maxBytes,
    maxObjectBytes: config.cache.maxObjectBytes,
    maxVariants: config.cache.maxVariants,
    clock,
  });
  const inflight = new Inflight<FillResult>({ maxWaiters: config.cache.collapse.maxWaiters, clock });
  const fetcher = new ScriptedFetcher(clock);
  const forwarder = new ScriptedForwarder(() => clock.now());
  const trusted = new TrustedProxies([]);
  const path: RequestPath = {
    clock,
    config,
    rt,
    site: rt.sites[0]!,
    pool,
    store,
    inflight,
    upstream,
    metrics,
    fetcher,
    forwarder,
    overloaded: false,
    deps: {
      clock,
      runtime: () => rt,
      trustedProxies: () => trusted,
      store,
      inflight,
      fetcher,
      forwarder,
      bodies: new BodySpool(),
      upstream,
      metrics,
      logger,
      admission: {
        isOverloaded: () => path.overloaded,
        isShedding: () => path.shedding ?? path.overloaded,
        // No allowance while shedding: the request path's unit tests see every shed.
        admitForward: () => ((path.shedding ?? path.overloaded) ? undefined : () => {}),
        takeRateLimit: () => undefined,
        retryAfterSeconds: () => 1,
      },
      isDraining: () => false,
      purge: async () => ({ purged: 0 }),
      tls: input.tls,
    },
    member: (name = origins[0]!.name) => pool.members().find((m) => m.name === name)!,
    async get(target, headers = {}, method = 'GET') {
      const { port } = server.address() as AddressInfo;
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        http.request({ host: '127.0.0.1', port, method, path: target, headers, agent: false }, resolve).on('error', reject).end();
      });
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      const requestId = res.headers['x-request-id'];
      let log: Record<string, unknown> | undefined;
      for (let i = 0; i < 200 && log === undefined; i++) {
        log = logs.find((l) => l['type'] === 'access' && l['requestId'] === requestId);
        if (log === undefined) await new Promise((r) => setTimeout(r, 5));
      }
      if (log === undefined) throw new Error(`no access-log line for request ${String(requestId)}`);
      return {
        status: res.statusCode!,
        headers: res.headers,
        body: Buffer.concat(chunks).toString(),
        cacheStatus: String(res.headers['cache-status'] ?? ''),
        state: String(log['cache']),
        log,
      };
    },
    page(body, headers = {}, status = 200) {
      const now = clock.now();
      return { ok: true, status, headers: { 'content-type': 'text/plain', ...headers }, body: Buffer.from(body), requestTime: now, responseTime: now };
    },
    failure(failure) {
      const now = clock.now();
      return { ok: false, failure, error: new Error(failure), requestTime: now, responseTime: now };
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      forwarder.close();
      await pool.close();
    },
  };
  const server = http.createServer((req, res) => void handleRequest(path.deps, req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return path;
}
