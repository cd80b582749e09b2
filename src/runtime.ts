import { TrustedProxies } from './server/client-address.js';
/**
 * The compiled form of one config generation: site router, compiled routes, policy options,
 * priority matchers and the cookie filters. A request takes one Runtime at its start and keeps
 * it, so a reload never changes the rules under a request in flight. Long-lived parts (origin
 * pools, limiters, stores) are not here: the Gateway keeps them across generations.
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { PolicyOptions } from './cache/policy.js';
import type { GatewayConfig, RouteConfig, SiteConfig } from './config/schema.js';
import { DEFAULT_BYPASS_COOKIES, routeSchema } from './config/schema.js';
import type { OriginPool } from './origin/pool.js';
import { parseCookies } from './cache/cache-key.js';
import { fieldOf } from './cache/cache-control.js';
import { SAFE_METHODS } from './http/facts.js';
import { compileGlobs } from './server/headers.js';
import { compileSite, SiteRouter, type CompiledRoute, type CompiledSite } from './server/site-router.js';

/** Default bypassCookies patterns a site's own list leaves out (SiteRuntime.leftOutDefaults). */
export interface LeftOutDefaults {
  matchesAny(name: string): boolean;
  patternOf(name: string): string | undefined;
  /** Patterns not warned of yet under this config; a pattern is deleted when its warning is logged. */
  readonly unwarned: Set<string>;
}

export interface SiteRuntime {
  readonly name: string;
  readonly config: SiteConfig;
  readonly compiled: CompiledSite;
  readonly pool: OriginPool;
  /** True when a cookie of this name makes a request bypass the cache (sites[].bypassCookies). */
  isBypassCookie(name: string): boolean;
  /**
   * For a site whose bypassCookies list leaves out some of the default one, for a warning when a
   * request carries such a cookie (handle-request.ts hasBypassCookie): whether a name matches any
   * left-out pattern (one regex), which pattern it is, and the patterns not warned of yet under
   * this config (once all are, the check costs nothing). Undefined for a site that keeps them all.
   */
  readonly leftOutDefaults: LeftOutDefaults | undefined;
  /** Lower-case names of the headers that make a request bypass the cache (sites[].credentialHeaders). */
  readonly credentialHeaders: readonly string[];
  /** Lower-case names of the fragment-request headers that make a request bypass the cache (sites[].bypassHeaders). */
  readonly bypassHeaders: readonly string[];
  /** Whether a fill passes this (lower-case) client header on (sites[].fillHeaders). */
  isFillHeader(name: string): boolean;
  policyFor(route: CompiledRoute): PolicyOptions;
}

export interface PriorityMatcher {
  readonly name: string;
  matches(method: string, path: string, headers: IncomingHttpHeaders, route: string): boolean;
}

/**
 * The request priority classes of one config, in one place: the configured names, most
 * important first, with "default" last, then a background class below all of them (refreshes
 * nobody waits for). The origin limiter's queue puts its health probes in a class above these
 * (Upstream: queue class = priority + 1).
 */
export class PriorityClasses {
  /** Configured class names, most important first; the last is "default". */
  readonly names: readonly string[];

  constructor(priorities: readonly { name: string }[]) {
    this.names = [...priorities.map((p) => p.name).filter((n) => n !== 'default'), 'default'];
  }

  /** The class of a request that matches nothing. */
  get default(): number {
    return this.names.length - 1;
  }

  /** Below every configured class: background refreshes. */
  get background(): number {
    return this.names.length;
  }

  /** The configured classes, default included (background and the probes' class not). */
  get configured(): number {
    return this.names.length;
  }

  /** Classes a request can be in, background included. */
  get count(): number {
    return this.names.length + 1;
  }

  indexOf(name: string): number {
    return this.names.indexOf(name);
  }

  /** For labels: the class name, 'background' for the background class. */
  nameOf(index: number): string {
    return this.names[index] ?? 'background';
  }
}

export class Runtime {
  readonly router: SiteRouter<SiteRuntime>;
  readonly sites: readonly SiteRuntime[];
  readonly priorities: PriorityClasses;
  private readonly priorityMatchers: readonly PriorityMatcher[];
  /** Who may send PURGE (purge.allow). */
  readonly purgeAllowed: TrustedProxies;

  /**
   * The running config's fingerprint: the first 12 hex digits of the SHA-256 of the validated
   * config (defaults filled in; listener hosts and ports left out), the same on every instance
   * that runs the same config, for
   * /status.json, the reload log and `crowdgate_config_info`.
   */
  readonly configHash: string;

  constructor(
    readonly config: GatewayConfig,
    readonly generation: number,
    poolFor: (site: SiteConfig) => OriginPool,
  ) {
    this.configHash = configHashOf(config);
    const defaultRoute: RouteConfig = routeSchema.parse({ name: 'default' });
    this.sites = config.sites.map((site) => makeSiteRuntime(site, defaultRoute, poolFor(site), config.cache.targetedHeader));
    this.router = new SiteRouter(this.sites);
    this.priorityMatchers = config.admission.priorities.map(compilePriority);
    this.priorities = new PriorityClasses(config.admission.priorities);
    this.purgeAllowed = new TrustedProxies(config.purge.allow);
  }

  /** The priority class index (0 = most important) for a request. */
  priorityOf(route: CompiledRoute, method: string, path: string, headers: IncomingHttpHeaders): number {
    if (route.config.priority) {
      const i = this.priorities.indexOf(route.config.priority);
      if (i !== -1) return i;
    }
    for (const m of this.priorityMatchers) {
      if (m.matches(method, path, headers, route.name)) return this.priorities.indexOf(m.name);
    }
    return this.priorities.default;
  }
}

function makeSiteRuntime(site: SiteConfig, defaultRoute: RouteConfig, pool: OriginPool, targetedHeader: string): SiteRuntime {
  const compiled = compileSite(site, defaultRoute);
  const isBypassCookie = compileGlobs(site.bypassCookies);
  const listed = new Set(site.bypassCookies.map((c) => c.toLowerCase()));
  const leftOut = DEFAULT_BYPASS_COOKIES.filter((c) => !listed.has(c.toLowerCase()));
  const each = leftOut.map((pattern) => ({ pattern, matches: compileGlobs([pattern]) }));
  const leftOutDefaults: LeftOutDefaults | undefined =
    leftOut.length === 0
      ? undefined
      : { matchesAny: compileGlobs(leftOut), patternOf: (name) => each.find((c) => c.matches(name))?.pattern, unwarned: new Set(leftOut) };
  const policies = new Map<string, PolicyOptions>();
  for (const r of compiled.routes) {
    policies.set(r.name, {
      route: r.config.cache,
      targetedHeader,
      honorClientNoCache: site.honorClientNoCache,
      ...(r.config.cache.ignoreSessionCookies ? { isIgnoredSessionCookie: isBypassCookie } : {}),
    });
  }
  return {
    name: site.name,
    config: site,
    compiled,
    pool,
    isBypassCookie,
    leftOutDefaults,
    credentialHeaders: [...new Set(site.credentialHeaders.map((h) => h.toLowerCase()))],
    bypassHeaders: [...new Set(site.bypassHeaders.map((h) => h.toLowerCase()))],
    isFillHeader: makeFillHeaderFilter(site.fillHeaders),
    policyFor: (route) => policies.get(route.name)!,
  };
}

function compilePriority(p: GatewayConfig['admission']['priorities'][number]): PriorityMatcher {
  const { pathPrefix, method, header, cookie, route } = p.match;
  const headerName = header?.toLowerCase();
  const isCookie = cookie === undefined ? undefined : compileGlobs([cookie]);
  return {
    name: p.name,
    matches(reqMethod, path, headers, routeName) {
      if (pathPrefix !== undefined && !path.startsWith(pathPrefix)) return false;
      if (method !== undefined && method.toUpperCase() !== reqMethod) return false;
      if (headerName !== undefined && fieldOf(headers, headerName) === undefined) return false;
      if (route !== undefined && route !== routeName) return false;
      if (isCookie !== undefined && (headers.cookie === undefined || ![...parseCookies(headers.cookie).keys()].some(isCookie))) return false;
      return true;
    },
  };
}

/**
 * Client headers a shared fill passes on, besides those always sent (Host, Accept*, User-Agent,
 * the key template's, the names a stored Vary lists): everything but `drop`, or only `only`.
 */
function makeFillHeaderFilter(cfg: SiteConfig['fillHeaders']): (name: string) => boolean {
  const drop = new Set(cfg.drop.map((h) => h.toLowerCase()));
  if (cfg.only !== undefined) {
    const only = new Set(cfg.only.map((h) => h.toLowerCase()));
    return (name) => only.has(name) && !drop.has(name);
  }
  return (name) => !drop.has(name);
}

/**
 * First 12 hex digits of the SHA-256 of a validated config (see Runtime.configHash), leaving
 * out where this instance is reached (the listeners' hosts and ports): two instances on one
 * machine differ there and nowhere else, and showed two hashes (multi-instance trial). And the
 * ACME settings while no site uses ACME: its storage directory is resolved against the file's
 * own, so one file copied to three directories gave three hashes, and a real drift looked
 * like none (fleet trial).
 */
export function configHashOf(config: GatewayConfig): string {
  const { host: _lh, port: _lp, ...listen } = config.listen;
  const { host: _ah, port: _ap, ...admin } = config.admin;
  const { host: _th, port: _tp, ...tls } = config.tls;
  const usesAcme = config.sites.some((site) => (site.tls as { acme?: boolean } | undefined)?.acme === true);
  const hashed = { ...config, listen, admin, tls, acme: usesAcme ? config.acme : undefined };
  return createHash('sha256').update(JSON.stringify(hashed)).digest('hex').slice(0, 12);
}

/** How long a request of this route waits for an origin permit: its `queueDeadlineMs`, else admission.queue.deadlineMs. */
export function queueDeadlineFor(config: GatewayConfig, route: { config: RouteConfig } | undefined): number {
  return route?.config.queueDeadlineMs ?? config.admission.queue.deadlineMs;
}

/** The cap on this route's origin requests at once (`maxConcurrent`; Upstream.admit's routeCap), if it has one. */
export function routeCapOf(route: { name: string; config: RouteConfig } | undefined): { route: string; max: number } | undefined {
  const max = route?.config.maxConcurrent;
  return max === undefined ? undefined : { route: route!.name, max };
}

/** The origin timeouts for a request on `route` of `site`: the site's, with the route's over them; for an unsafe `method`, its head may take unsafeResponseHeadersMs. */
export function timeoutsFor(site: SiteConfig, route: { config: RouteConfig } | undefined, method?: string): SiteConfig['timeouts'] {
  const own = route?.config.timeouts;
  const t = own === undefined ? site.timeouts : { ...site.timeouts, ...own };
  // An unsafe method waits at least unsafeResponseHeadersMs for its head: the origin carries it
  // out whether the gateway waits or not (LEMP trial: a comment and a post update cut at 15 s
  // with 504 were saved, and the retry was a duplicate; logins got no cookie).
  // A route that sets its own responseHeadersMs and no unsafe one has spoken for all its methods.
  if (method === undefined || SAFE_METHODS.has(method) || t.unsafeResponseHeadersMs <= t.responseHeadersMs) return t;
  if (own?.responseHeadersMs !== undefined && own.unsafeResponseHeadersMs === undefined) return t;
  return { ...t, responseHeadersMs: t.unsafeResponseHeadersMs };
}
