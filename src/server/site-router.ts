/**
 * Host -> site, then path and method -> route. Built once per config generation.
 * Host precedence across all sites: exact name, then the longest `*.suffix` wildcard, then `*`.
 * Routes are tried in order, first match wins; a catch-all route named "default" is appended
 * when the config does not end with one.
 */
import type { RouteConfig, SiteConfig } from '../config/schema.js';

export interface CompiledRoute {
  readonly config: RouteConfig;
  readonly name: string;
  matches(method: string, path: string): boolean;
}

export interface CompiledSite<S = SiteConfig> {
  readonly config: S;
  readonly routes: readonly CompiledRoute[];
  matchRoute(method: string, path: string): CompiledRoute;
}

export const DEFAULT_ROUTE_NAME = 'default';

function compileRoute(route: RouteConfig): CompiledRoute {
  const { pathPrefix, pathRegex, methods } = route.match;
  const re = pathRegex !== undefined ? new RegExp(pathRegex) : undefined;
  const methodSet = methods ? new Set(methods) : undefined;
  return {
    config: route,
    name: route.name,
    matches(method, path) {
      if (methodSet && !methodSet.has(method)) return false;
      if (pathPrefix !== undefined && !path.startsWith(pathPrefix)) return false;
      if (re && !re.test(path)) return false;
      return true;
    },
  };
}

export function compileSite(site: SiteConfig, defaultRoute: RouteConfig): CompiledSite {
  const routes = site.routes.map(compileRoute);
  const last = site.routes[site.routes.length - 1];
  const isCatchAll = (r: RouteConfig | undefined) =>
    r !== undefined && !r.match.pathPrefix && !r.match.pathRegex && !r.match.methods;
  if (!isCatchAll(last)) {
    const hasDefaultName = site.routes.some((r) => r.name === DEFAULT_ROUTE_NAME);
    routes.push(compileRoute({ ...defaultRoute, name: hasDefaultName ? '_default' : DEFAULT_ROUTE_NAME }));
  }
  const fallback = routes[routes.length - 1]!;
  return {
    config: site,
    routes,
    matchRoute(method, path) {
      for (const r of routes) if (r.matches(method, path)) return r;
      return fallback;
    },
  };
}

/** Lowercase host without port; undefined for garbage. */
export function normaliseHost(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  let host = raw.trim().toLowerCase();
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end > 0 ? host.slice(0, end + 1) : undefined;
  }
  const colon = host.indexOf(':');
  if (colon !== -1) host = host.slice(0, colon);
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (!/^[a-z0-9.\-_]+$/.test(host)) return undefined;
  return host;
}

const MEMO_LIMIT = 1024;

export class SiteRouter<S extends { config: { hosts: readonly string[] } }> {
  private readonly exact = new Map<string, S>();
  private readonly wildcards: Array<{ suffix: string; site: S }> = [];
  private catchAll: S | undefined;

  constructor(sites: readonly S[]) {
    for (const site of sites) {
      for (const h of site.config.hosts) {
        const host = h.trim().toLowerCase();
        if (host === '*') this.catchAll ??= site;
        else if (host.startsWith('*.')) this.wildcards.push({ suffix: host.slice(1), site });
        else if (!this.exact.has(host)) this.exact.set(host, site);
      }
    }
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  }

  /**
   * Host header as received -> site, so a crowd on one name skips normalising it every request.
   * Bounded: a flood of random names only clears it (the router is rebuilt on every reload).
   */
  private readonly memo = new Map<string, S | undefined>();

  match(hostHeader: string | undefined): S | undefined {
    if (hostHeader === undefined) return this.resolve(undefined);
    if (this.memo.has(hostHeader)) return this.memo.get(hostHeader);
    const site = this.resolve(hostHeader);
    if (this.memo.size >= MEMO_LIMIT) this.memo.clear();
    this.memo.set(hostHeader, site);
    return site;
  }

  private resolve(hostHeader: string | undefined): S | undefined {
    const host = normaliseHost(hostHeader);
    if (host !== undefined) {
      const exact = this.exact.get(host);
      if (exact) return exact;
      for (const w of this.wildcards) if (host.endsWith(w.suffix)) return w.site;
    }
    return this.catchAll;
  }
}
