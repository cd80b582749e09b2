/**
 * The composition root: builds every part from the config, wires them together and owns the
 * lifecycle (start, live reload, drain, close); the listeners themselves are server/listeners.ts.
 * No request logic lives here — that is server/handle-request.ts.
 */
import { BodySpool } from './origin/request-body.js';
import type { Fence, PurgeFence } from './cache/purge-fence.js';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { systemClock, type Clock } from './clock.js';
import { isUnderPrefix, type CacheStore, type GraceWidening, type PurgeMode, type PurgeSelector } from './cache/stores/cache-store.js';
import { keyPrefixFor, targetOfKey } from './cache/cache-key.js';
import { GatewayStore, type RedisStatus } from './cache/stores/gateway-store.js';
import { Inflight } from './collapse/inflight.js';
import { routeSchema, type GatewayConfig, type RouteConfig } from './config/schema.js';
import { ConfigSource } from './config/source.js';
import { startLiveReload, type LastReload, type LiveReload } from './config/live-reload.js';
import { keyTemplateSignature, type ReloadOutcome } from './config/reloader.js';
import { GatewayMetrics } from './metrics/gateway-metrics.js';
import { collectGauges } from './metrics/collect-gauges.js';
import { OriginFetcher } from './origin/fetch.js';
import { Forwarder } from './origin/forward.js';
import { PoolTable } from './origin/pool-table.js';
import { Upstream } from './origin/upstream.js';
import { Admission } from './admission/admission.js';
import { PriorityClasses, Runtime } from './runtime.js';
import { TrustedProxies } from './server/client-address.js';
import { handleRequest, type CrossInstanceCollapse, type FillResult, type RequestDeps } from './server/handle-request.js';
import { Drain } from './server/drain.js';
import { Listeners, type ListenerAddresses, type ListenerHooks } from './server/listeners.js';
import type { ClientRefusal } from './server/http-server.js';
import type { CompiledRoute } from './server/site-router.js';
import { WebSocketUpgrades } from './server/websocket.js';
import { readinessOf, type Readiness } from './admin/readiness.js';
import { HotKeys } from './admin/hot-keys.js';
import { HitMemo } from './server/hit-memo.js';
import { CompressionBudget } from './cache/content-coding.js';
import { carryHeat } from './server/stale.js';
import { StatusHistory } from './admin/status-history.js';
import type { CacheState } from './outcome.js';
import { createLogger } from './log.js';
import type { AcmeManagerOptions, SiteStatus } from './tls/acme/manager.js';
import { TlsEdge } from './tls/tls-edge.js';

export interface GatewayOptions {
  config: GatewayConfig;
  /** The file the config came from; enables live reload (config/live-reload.ts; SIGHUP via reload()). */
  configPath?: string;
  clock?: Clock;
  logger?: Logger;
  /** A store instead of the configured one (tests); turns the Redis tier off (cache/stores/gateway-store.ts). */
  store?: CacheStore;
  /** Decides "overloaded?" instead of the pressure gate, whatever `admission.pressure.enabled` says (tests). */
  isOverloaded?: () => boolean;
  /** `false`: no hit memo (server/hit-memo.ts), every request the slow way (a memo test's reference, a diagnosis). */
  hitMemo?: boolean;
  /** ACME client settings the config does not carry (tests: how fast acme-client polls the CA). */
  acme?: Pick<AcmeManagerOptions, 'poll'>;
}

/** Whether a purge selector covers a primary key (a tag: any key, as the marks carry no tags). */
function isUnderSelector(primary: string, selector: PurgeSelector): boolean {
  if (selector.kind === 'key') return primary === selector.key;
  if (selector.kind === 'prefix') return isUnderPrefix(primary, selector);
  return true;
}

/** The key template of a route that sets none (and of the catch-all route added last). */
const DEFAULT_KEY_SIGNATURE = keyTemplateSignature(routeSchema.parse({ name: 'default' }).cache.key);

export class Gateway implements RequestDeps {
  readonly clock: Clock;
  readonly logger: Logger;
  /** The logger is the gateway's own (not a caller's): `log.level` edits apply to it. */
  private readonly ownLogger: boolean;
  readonly metrics: GatewayMetrics;
  readonly source: ConfigSource;
  readonly store: CacheStore;
  readonly inflight: Inflight<FillResult>;
  readonly fetcher: OriginFetcher;
  readonly forwarder: Forwarder;
  readonly bodies = new BodySpool();
  readonly upstream: Upstream;
  /** The pressure gate, rate limits and Retry-After (admission/admission.ts). */
  readonly admission: Admission;
  /** Certificates (by SNI, from files and ACME) and the HTTPS listener (tls/tls-edge.ts). */
  readonly tls: TlsEdge;
  readonly hotKeys = new HotKeys(200);
  /** Routing remembered for plain requests; emptied on every config change (hit-memo.ts); undefined with `hitMemo: false`. */
  readonly hitMemo: HitMemo | undefined;
  /** Fill-time compression of large bodies, bounded in bytes per second (content-coding.ts). */
  readonly compressionBudget: CompressionBudget;
  /** The fills in flight, which every purge also covers (cache/purge-fence.ts). */
  readonly purgeFence: PurgeFence;
  readonly status: StatusHistory;
  readonly startedAt: number;
  /** Collapsing across instances; set only when `redis:` is configured. */
  readonly crossInstance?: CrossInstanceCollapse;

  private rt: Runtime;
  /** Site names a reload removed (renamed or dropped) since the start: their copies missed the purges made since. */
  private readonly retiredSites = new Set<string>();
  /** Per site, route key templates a reload replaced (`route\0signature`): their copies missed the purges made since. */
  private readonly retiredKeyTemplates = new Map<string, Set<string>>();
  private readonly cache: GatewayStore;
  private trusted: TrustedProxies;
  private readonly pools: PoolTable;
  /** The public, HTTPS and admin listeners (server/listeners.ts). */
  private readonly listeners: Listeners;
  private reloader?: LiveReload;
  private readonly drainer: Drain;
  private readonly websockets = new WebSocketUpgrades(this);

  constructor(opts: GatewayOptions) {
    const cfg = opts.config;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? createLogger(cfg.log.level);
    this.ownLogger = opts.logger === undefined;
    this.metrics = new GatewayMetrics();
    this.drainer = new Drain(this.logger);
    this.source = new ConfigSource(cfg);
    this.startedAt = this.clock.now();
    this.cache = new GatewayStore({ config: cfg, clock: this.clock, logger: this.logger, metrics: this.metrics, override: opts.store, carryOver: carryHeat });
    this.purgeFence = this.cache.fence;
    this.store = this.cache.store;
    this.crossInstance = this.cache.redis?.crossInstance;
    this.metrics.get('cacheMaxBytes').set(cfg.cache.maxBytes);
    this.inflight = new Inflight<FillResult>({ maxWaiters: cfg.cache.collapse.maxWaiters, clock: this.clock });
    this.fetcher = new OriginFetcher(this.clock);
    this.forwarder = new Forwarder(() => this.clock.now());
    this.upstream = new Upstream(this.clock, this.metrics, cfg.admission, new PriorityClasses(cfg.admission.priorities).configured);
    this.upstream.samplesValid = () => !this.admission.isOverloaded();
    this.upstream.hostDelayMs = () => this.admission.pressure.readings().eventLoopDelayMeanMs ?? 0;
    this.upstream.logger = this.logger;
    if (this.cache.redis) this.upstream.sharePeers(this.cache.redis.loadBus);
    this.hitMemo = opts.hitMemo === false ? undefined : new HitMemo();
    this.compressionBudget = new CompressionBudget(() => this.clock.now());
    this.admission = new Admission({ config: cfg, clock: this.clock, upstream: this.upstream, override: opts.isOverloaded });
    this.trusted = new TrustedProxies(cfg.trustedProxies);
    const currentSite = (name: string) => this.rt.config.sites.find((s) => s.name === name);
    this.pools = new PoolTable({ clock: this.clock, logger: this.logger, metrics: this.metrics, upstream: this.upstream, currentSite });
    this.rt = this.pools.refresh((poolFor) => new Runtime(cfg, 1, poolFor));
    this.metrics.get('configInfo').set({ hash: this.rt.configHash }, 1);
    this.status = new StatusHistory(this);
    this.tls = new TlsEdge({
      config: cfg,
      logger: this.logger,
      metrics: this.metrics,
      clock: this.clock,
      redis: this.cache.redis,
      acme: opts.acme,
      // A certificate installed or withdrawn changes which plain requests redirect: routing memoised before is stale.
      onCertificateChange: () => this.hitMemo?.clear(),
    });
    this.listeners = new Listeners({ logger: this.logger, tls: this.tls, admin: this });
    this.source.onChange((next) => this.applyConfig(next));
    if (opts.configPath)
      this.reloader = startLiveReload({
        file: opts.configPath,
        source: this.source,
        logger: this.logger,
        metrics: this.metrics,
        reload: cfg.reload,
        now: () => this.clock.now(),
      });
  }

  /** Purges here (L1 and L2 when tiered), then on the other instances (gateway-store.ts); `purged` counts here. */
  purge(selectors: readonly PurgeSelector[], mode: PurgeMode, except?: Fence): Promise<{ purged: number; broadcast: boolean }> {
    this.inflight.clearHitForPassWhere((primary) => selectors.some((s) => isUnderSelector(primary, s)));
    return this.cache.purge(selectors, mode, this.clock.now(), except);
  }

  // ---- RequestDeps ------------------------------------------------------------------------

  runtime(): Runtime {
    return this.rt;
  }

  trustedProxies(): TrustedProxies {
    return this.trusted;
  }

  isDraining(): boolean {
    return this.drainer.isDraining();
  }

  /** Shutting down: the delay before draining (shutdown.delayMs), or draining. */
  isStopping(): boolean {
    return this.drainer.isStopping();
  }

  noteKey(site: string, path: string, state: CacheState): void {
    this.hotKeys.note(site, path, state);
  }

  // ---- AdminGateway (and StatusSource) ----------------------------------------------------

  acmeStatus(): SiteStatus[] {
    return this.tls.acmeStatus();
  }

  lastReload(): LastReload | undefined {
    return this.reloader?.last();
  }

  redisStatus(): RedisStatus | undefined {
    return this.cache.redisStatus();
  }

  /** /readyz: ready unless shutting down (shutdown.delayMs, draining); the origins' state is in its body. */
  readiness(): Readiness {
    return readinessOf(this.rt.sites, this.drainer.isStopping(), this.drainer.isDraining(), this.clock.now());
  }

  /** Publishes gauges that are read rather than counted (called before each scrape). */
  collectGauges(): void {
    collectGauges(this, this.cache.redis);
  }

  // ---- lifecycle --------------------------------------------------------------------------

  /** Starts health checks, the pressure gate, the store and the listeners (server/listeners.ts). */
  async listen(): Promise<ListenerAddresses> {
    this.pools.start();
    this.admission.start();
    this.status.start();
    const hooks: ListenerHooks = {
      onRequest: (req, res) => this.onRequest(req, res),
      onUpgrade: (req, socket, head) => this.websockets.handle(req, socket, head),
      onConnectionRefused: (reason) => this.metrics.get('clientConnectionsRefused').inc({ reason }),
      onClientError: (refusal) => this.noteClientError(refusal),
      isExemptPeer: (peer) => this.trusted.isTrusted(peer),
      onConnectionCount: (delta) => this.metrics.get('clientConnections').inc(delta),
    };
    await this.cache.start();
    const addresses = await this.listeners.listen(this.rt.config, hooks);
    this.tls.startAcme();
    return addresses;
  }

  /**
   * A request the parser refused (a head over `limits.maxHeaderBytes`, bare LF, a bad name): counted
   * under site and route `-` and logged as an access line, as the request path's own 400s are.
   */
  private noteClientError(refusal: ClientRefusal): void {
    this.metrics.observeRequest('-', '-', 'error', '4xx', 0);
    if (!this.rt.config.log.access) return;
    this.logger.info(
      { type: 'access', client: refusal.peer, method: '-', path: '-', site: '-', route: '-', status: refusal.status, durationMs: 0, cache: 'error', error: refusal.code, parserError: refusal.parserCode },
      'request',
    );
  }

  /** The HTTPS listener's bound address; undefined without `tls.port`. */
  get httpsAddress(): AddressInfo | undefined {
    return this.tls.address;
  }

  get publicAddress(): AddressInfo | undefined {
    return this.listeners.publicAddress;
  }

  get adminAddress(): AddressInfo | undefined {
    return this.listeners.adminAddress;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.drainer.requestStarted(res);
    void handleRequest(this, req, res);
  }

  /** Called by the request path once per request, when its response is finished or cut. */
  requestDone(): void {
    this.drainer.requestDone();
  }

  /** Re-reads the config file (SIGHUP, file watch, or tests). */
  async reload(reason: 'signal' | 'watch' | 'manual' = 'manual'): Promise<ReloadOutcome | undefined> {
    return this.reloader?.reload(reason);
  }

  /** Applies a validated config: a new Runtime for new requests; pools (pool-table.ts) and limiters keep their state. */
  private applyConfig(next: GatewayConfig): void {
    const generation = this.source.generation;
    const before = new Set(this.rt.config.sites.map((s) => s.name));
    const prevConfig = this.rt.config;
    const prevRt = this.rt;
    this.rt = this.pools.refresh((poolFor) => new Runtime(next, generation, poolFor));
    // Each part on its own: one that throws skips none of the others (an unreadable
    // trustedProxies entry used to skip the rate limits, the admission cap, TLS and the
    // generation metrics while the new routing ran and the reload said it succeeded). The
    // failures are thrown together at the end, and the reloader logs them.
    const failures: unknown[] = [];
    const apply = (part: () => void): void => {
      try {
        part();
      } catch (err) {
        failures.push(err);
      }
    };
    apply(() => this.hitMemo?.clear()); // entries of the old generation are never used; let it go
    apply(() => this.inflight.clearMarks()); // uncacheable under the old rules (a setCookie: strip since?): asked again
    apply(() => this.inflight.setMaxWaiters(next.cache.collapse.maxWaiters));
    apply(() => this.reviveRetiredSites(before, next));
    apply(() => this.reviveRetiredKeyTemplates(prevConfig, next));
    // `log.level` live, as nginx applies error_log on reload: `debug` in an incident took a restart.
    apply(() => {
      if (this.ownLogger) this.logger.level = next.log.level;
    });
    apply(() => (this.trusted = new TrustedProxies(next.trustedProxies)));
    apply(() => this.listeners.applyLimits(next.limits));
    apply(() => this.upstream.configure(next.admission, this.rt.priorities.configured));
    apply(() => this.upstream.applyRouteCaps(next.sites));
    apply(() => this.upstream.applyCircuits(next.sites));
    apply(() => this.widenRaisedGrace(prevRt));
    apply(() => this.cache.applyLimits(next.cache));
    apply(() => this.admission.configure(next));
    apply(() => {
      this.metrics.get('configGeneration').set(generation);
      this.metrics.get('configInfo').reset();
      this.metrics.get('configInfo').set({ hash: this.rt.configHash }, 1);
      this.metrics.get('cacheMaxBytes').set(next.cache.maxBytes);
    });
    apply(() => this.tls.reload(next)); // a setting OpenSSL refuses skips nothing above (tls-edge.ts)
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, `${failures.length} parts of the new config failed to apply`);
  }

  /**
   * A reload that gives a page's route more grace (graceSeconds, or graceOverridesMustRevalidate
   * turned on) widens the copies this process holds, as if stored under it: raising it during an
   * outage is the runbook's answer when the outage outlasts the grace, and it did nothing for
   * the pages already cached, which turned into 502s when their old grace ran out (ops trial).
   * Each held key of such a site is routed under both configs; copies in Redis keep theirs.
   */
  private widenRaisedGrace(prevRt: Runtime): void {
    const store = this.store;
    if (!store.widenGrace) return;
    const graceOf = (r: RouteConfig): GraceWidening => ({ graceMs: r.cache.graceSeconds * 1000, overridesMustRevalidate: r.cache.graceOverridesMustRevalidate });
    for (const site of this.rt.sites) {
      const old = prevRt.sites.find((s) => s.name === site.name);
      if (!old) continue;
      const before = old.compiled.routes.map((r) => graceOf(r.config));
      const after = site.compiled.routes.map((r) => graceOf(r.config));
      const wider = (a: GraceWidening, b: GraceWidening) => a.graceMs > b.graceMs || (a.overridesMustRevalidate && !b.overridesMustRevalidate);
      // Routed as before: only a route given more grace than it had can widen anything (the
      // shipped config's day for /static/ beside an hour walked the store at every edit; review).
      // Routed otherwise: a route giving more than some route gave.
      const routing = (routes: readonly CompiledRoute[]) => JSON.stringify(routes.map((r) => [r.name, r.config.match]));
      if (routing(old.compiled.routes) === routing(site.compiled.routes)) {
        if (!after.some((g, i) => wider(g, before[i]!))) continue;
      } else if (!after.some((g) => before.some((b) => wider(g, b)))) continue;
      store
        .widenGrace(keyPrefixFor(site.name, '/'), (key) => {
          const target = targetOfKey(key);
          if (!target) return undefined;
          const now = graceOf(site.compiled.matchRoute('GET', target.path, target.query).config);
          const then = graceOf(old.compiled.matchRoute('GET', target.path, target.query).config);
          return wider(now, then) ? now : undefined;
        })
        .then(
          (widened) => {
            if (widened > 0) this.logger.info({ site: site.name, widened }, 'grace raised: copies stored before the reload have the new grace');
          },
          (err: unknown) => this.logger.warn({ err, site: site.name }, 'grace raised: the copies stored before could not all be widened'),
        );
    }
  }

  /**
   * A site name is in every key of its copies: a site renamed or removed leaves them unused, and
   * the purges made meanwhile (an edit's PURGE under the new name) never reach them. When the
   * name comes back, its copies are soft-purged: kept to answer while the origin fails, but
   * revalidated before any other use. Renamed and renamed back, a wiki served a page edited in
   * between as a hit for the rest of its 5 h s-maxage (new-operator trial).
   */
  private reviveRetiredSites(before: ReadonlySet<string>, next: GatewayConfig): void {
    const now = new Set(next.sites.map((s) => s.name));
    for (const name of before) if (!now.has(name)) this.retiredSites.add(name);
    for (const name of now) {
      if (before.has(name) || !this.retiredSites.delete(name)) continue;
      this.purge([{ kind: 'prefix', prefix: keyPrefixFor(name, '/') }], 'soft').then(
        ({ purged }) => this.logger.info({ site: name, purged }, 'site name back: its copies from before are revalidated before use'),
        (err: unknown) => this.logger.warn({ err, site: name }, 'site name back: its copies from before could not be marked stale'),
      );
    }
  }

  /**
   * The same for a route's key template changed and changed back (`cache.key`: a query mode, the
   * headers or cookies it keys on): its old copies come back into use under the keys the
   * template makes again, and the purges and POST invalidations made meanwhile reached only the
   * keys of the template in use then. When a site's route takes a template it had before, the
   * site's copies are soft-purged (the copies cannot be told apart by route): revalidated before
   * use, still an answer while the origin fails.
   */
  private reviveRetiredKeyTemplates(prev: GatewayConfig, next: GatewayConfig): void {
    for (const site of next.sites) {
      const old = prev.sites.find((s) => s.name === site.name);
      if (!old) continue;
      const retired = this.retiredKeyTemplates.get(site.name) ?? new Set<string>();
      const nextSigs = new Map(site.routes.map((r) => [r.name, keyTemplateSignature(r.cache.key)]));
      const prevSigs = new Map(old.routes.map((r) => [r.name, keyTemplateSignature(r.cache.key)]));
      // A route taken out whose key template every route left shares (the added catch-all's
      // too) keys its pages alike under whichever takes them: nothing to revalidate when it
      // comes back. A half-written file that lacked a route, then completed, soft-purged the
      // whole site mid-crowd although no key had changed (ops trial).
      const alike = (sig: string) => sig === DEFAULT_KEY_SIGNATURE && [...nextSigs.values()].every((s) => s === sig);
      for (const [route, sig] of prevSigs) if (nextSigs.get(route) !== sig && (nextSigs.has(route) || !alike(sig))) retired.add(`${route}\0${sig}`);
      const back: string[] = [];
      for (const [route, sig] of nextSigs)
        if (prevSigs.get(route) !== sig && retired.delete(`${route}\0${sig}`)) back.push(route);
      if (retired.size > 0) this.retiredKeyTemplates.set(site.name, retired);
      else this.retiredKeyTemplates.delete(site.name);
      if (back.length === 0) continue;
      this.purge([{ kind: 'prefix', prefix: keyPrefixFor(site.name, '/') }], 'soft').then(
        ({ purged }) => this.logger.info({ site: site.name, routes: back, purged }, 'route cache key back: the site\'s copies from before are revalidated before use'),
        (err: unknown) => this.logger.warn({ err, site: site.name, routes: back }, 'route cache key back: the site\'s copies from before could not be marked stale'),
      );
    }
  }

  /**
   * SIGTERM's first phase: for `shutdown.delayMs` /readyz answers 503 and answers close their
   * connections while requests are still accepted and served, so a load balancer takes this
   * instance out before its listener closes (Caddy's shutdown_delay, kube-apiserver's
   * --shutdown-delay-duration). `elapsed` resolves when the delay has passed, or at `hurry()`.
   */
  announceShutdown(): { elapsed: Promise<void>; hurry(): void } {
    this.drainer.announce();
    const delayMs = this.rt.config.shutdown.delayMs;
    let hurry = (): void => {};
    const elapsed = new Promise<void>((resolve) => {
      if (delayMs === 0) return resolve();
      const timer = setTimeout(resolve, delayMs);
      hurry = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    return { elapsed, hurry: () => hurry() };
  }

  /** Graceful shutdown within `shutdown.drainTimeoutMs` (server/drain.ts): /readyz turns 503, stragglers are cut. */
  drain(): Promise<{ drained: boolean; cut: number }> {
    return this.drainer.drain(this.listeners.drainable, this.rt.config.shutdown.drainTimeoutMs);
  }

  async close(): Promise<void> {
    this.reloader?.close();
    this.admission.stop();
    this.status.stop();
    await this.listeners.close(); // the TLS edge with them
    this.forwarder.close();
    await this.bodies.close();
    await this.fetcher.close();
    await this.pools.close();
    this.upstream.closePeers();
    await this.cache.close();
  }
}
