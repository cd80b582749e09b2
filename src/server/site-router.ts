/**
 * Host -> site, then path and method -> route. Built once per config generation.
 * Host precedence across all sites: exact name, then the longest `*.suffix` wildcard, then `*`.
 * Routes are tried in order, first match wins; a catch-all route named "default" is appended
 * when the config does not end with one.
 */
import type { RouteConfig, SiteConfig } from '../config/schema.js';
import { compileGlobs } from './headers.js';

export interface CompiledRoute {
  readonly config: RouteConfig;
  readonly name: string;
  matches(method: string, path: string, query: QueryReading): boolean;
  /**
   * matches() of a loose spelling (loosePath, the query read loosely): its prefix and regular
   * expression without regard to case, a query condition when any one value matches.
   */
  matchesLoosely(method: string, loose: string, query: QueryReading): boolean;
  /** Its path as spelled, its query conditions read loosely (a capped route's); false for a route with none. */
  matchesQueryLoosely(method: string, path: string, query: QueryReading): boolean;
}

export interface CompiledSite<S = SiteConfig> {
  readonly config: S;
  readonly routes: readonly CompiledRoute[];
  /** The route of a request: `query` is the target's query without its `?` (undefined when none). */
  matchRoute(method: string, path: string, query?: string): CompiledRoute;
}

export const DEFAULT_ROUTE_NAME = 'default';

function compileRoute(route: RouteConfig): CompiledRoute {
  const { pathPrefix, pathRegex, methods, query } = route.match;
  const re = pathRegex !== undefined ? new RegExp(pathRegex) : undefined;
  const looseRe = pathRegex !== undefined ? new RegExp(pathRegex, 'i') : undefined;
  const loosePrefix = pathPrefix?.toLowerCase();
  const methodSet = methods ? new Set(methods) : undefined;
  const conditions = query === undefined ? undefined : Object.entries(query).map(([name, value]) => ({
    name,
    matches: compileGlobs([value]),
    looseName: looseParamName(name),
    looseMatches: compileGlobs([looseParamValue(value)]),
  }));
  const matchesQueryLoosely = (q: QueryReading): boolean => {
    if (!conditions) return true;
    const params = q.loose();
    for (const c of conditions) if (!params.get(c.looseName)?.some(c.looseMatches)) return false;
    return true;
  };
  return {
    config: route,
    name: route.name,
    matches(method, path, q) {
      if (methodSet && !methodSet.has(method)) return false;
      if (pathPrefix !== undefined && !path.startsWith(pathPrefix)) return false;
      if (re && !re.test(path)) return false;
      if (conditions) {
        const params = q.strict();
        for (const c of conditions) {
          const values = params.get(c.name);
          if (values === undefined || !values.every(c.matches)) return false;
        }
      }
      return true;
    },
    matchesLoosely(method, loose, q) {
      if (methodSet && !methodSet.has(method)) return false;
      if (loosePrefix !== undefined && !loose.startsWith(loosePrefix)) return false;
      if (looseRe && !looseRe.test(loose)) return false;
      return matchesQueryLoosely(q);
    },
    matchesQueryLoosely(method, path, q) {
      if (conditions === undefined) return false; // nothing read loosely: as spelled only
      if (methodSet && !methodSet.has(method)) return false;
      if (pathPrefix !== undefined && !path.startsWith(pathPrefix)) return false;
      if (re && !re.test(path)) return false;
      return matchesQueryLoosely(q);
    },
  };
}

/** A request's query parameters, read once and only if a route asks: name to its values in order. */
export interface QueryReading {
  /** As most origins read it: split at `&`, name and value percent-decoded, `+` a space. */
  strict(): ReadonlyMap<string, readonly string[]>;
  /** As the loosest origins read it (see looseParamName, looseParamValue); `;` separates too (Rack 2). */
  loose(): ReadonlyMap<string, readonly string[]>;
}

/** The parameter names a site's routes ask about, as read strictly and loosely (readQuery's filter). */
export interface QueryNames {
  strict: ReadonlySet<string>;
  loose: ReadonlySet<string>;
  /** A piece of each loose name without `_` (which `.` or a blank may spell): a name containing none is passed over unread. */
  looseFragments: readonly string[];
}

export function queryNamesOf(routes: readonly RouteConfig[]): QueryNames {
  const names = routes.flatMap((r) => Object.keys(r.match.query ?? {}));
  const loose = new Set(names.map(looseParamName));
  const looseFragments = [...loose].map((n) => n.split('_').reduce((a, b) => (b.length > a.length ? b : a), ''));
  return { strict: new Set(names), loose, looseFragments };
}

/** The reading of a site whose routes ask about no parameter: nothing to read. */
const NO_QUERY: QueryReading = { strict: () => new Map(), loose: () => new Map() };

/**
 * Parameters read at most: PHP's max_input_vars, qs's parameterLimit and Django's
 * DATA_UPLOAD_MAX_NUMBER_FIELDS are 1 000 by default, and the origin reads none past them.
 */
export const MAX_QUERY_PARAMS = 1_000;

/**
 * A request's query, read only for the names `names` lists (a 15 KB query of 2 000 parameters,
 * each one read in full twice, cost 12 ms a request), and only as far as origins read one.
 */
export function readQuery(query: string | undefined, names?: QueryNames): QueryReading {
  let strict: Map<string, string[]> | undefined;
  let loose: Map<string, string[]> | undefined;
  const read = (separator: RegExp, name: (raw: string) => string | undefined, value: (raw: string) => string) => {
    const params = new Map<string, string[]>();
    if (query === undefined || (names !== undefined && names.strict.size === 0)) return params;
    let count = 0;
    for (const part of query.split(separator, MAX_QUERY_PARAMS * 2)) {
      if (part === '' || ++count > MAX_QUERY_PARAMS) continue;
      const eq = part.indexOf('=');
      const n = name(eq < 0 ? part : part.slice(0, eq));
      if (n === undefined) continue;
      const v = value(eq < 0 ? '' : part.slice(eq + 1));
      const values = params.get(n);
      if (values) values.push(v);
      else params.set(n, [v]);
    }
    return params;
  };
  const strictName = (raw: string): string | undefined => {
    const n = raw.includes('%') || raw.includes('+') ? decodeParam(raw) : raw;
    return names === undefined || names.strict.has(n) ? n : undefined;
  };
  const looseName = (raw: string): string | undefined => {
    if (names !== undefined) {
      const lower = raw.toLowerCase();
      if (!lower.includes('%') && !names.looseFragments.some((f) => lower.includes(f))) return undefined;
    }
    const n = looseParamName(decodeParam(raw, 4));
    return names === undefined || names.loose.has(n) ? n : undefined;
  };
  return {
    strict: () => (strict ??= read(/&/, strictName, decodeParam)),
    loose: () => (loose ??= read(/[&;]/, looseName, (raw) => looseParamValue(decodeParam(raw, 4)))),
  };
}

/**
 * Percent-decoded with `+` a space, `times` times over (an origin may decode twice), as PHP
 * decodes: each valid `%XX` is its byte and anything else stays as it is (a lone `%`, `%FF` in
 * no valid UTF-8: U+FFFD). decodeURIComponent refuses the whole value over one such escape,
 * and `?title=Special%3AExport/%FF` went to the cached default route while MediaWiki served
 * the special page (review).
 */
function decodeParam(raw: string, times = 1): string {
  let text = raw.replace(/\+/g, ' ');
  for (let i = 0; i < times && text.includes('%'); i++) {
    const next = decodeLeniently(text);
    if (next === text) break;
    text = next;
  }
  return text;
}

const UTF8 = new TextDecoder('utf-8');

function decodeLeniently(text: string): string {
  if (!/%[0-9a-fA-F]{2}/.test(text)) return text;
  try {
    return decodeURIComponent(text);
  } catch {
    // Runs of escapes decoded as bytes (invalid UTF-8 as U+FFFD), the rest kept as it is.
    return text.replace(/(?:%[0-9a-fA-F]{2})+/g, (run) => UTF8.decode(Uint8Array.from(run.slice(1).split('%'), (h) => parseInt(h, 16))));
  }
}

/**
 * A parameter name as the loosest origins read it: any case (ASP.NET), ended at a NUL and its
 * leading blanks dropped (PHP), leading brackets dropped and read up to the next one (Rack 2
 * reads `[format]`, `[[format]]` and `format]` as `format`; qs reads `%5Bformat%5D` so; PHP
 * and Rack read `format[]` as an array named `format`), and `.` and a blank read as `_` (PHP:
 * `ti.tle` is `ti_tle`, never `title`).
 */
export function looseParamName(name: string): string {
  return name
    .split('\0', 1)[0]!
    .toLowerCase()
    .replace(/^\s+/, '')
    .replace(/^[[\]]+/, '')
    .replace(/[[\]][^]*$/, '')
    .replace(/[. ]/g, '_');
}

/**
 * A value as the loosest origins read it, MediaWiki's titles above all: any case, `_` and every
 * blank (a no-break space, a line break) one blank, direction marks dropped, no blank at either
 * end or beside a `:` (`Special_:Search`), and no leading `:` (`:Special:Search`).
 */
export function looseParamValue(value: string): string {
  return value
    .toLowerCase()
    .replace(/[\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, '')
    .replace(/[_\s]+/g, ' ')
    .replace(/ ?: ?/g, ':')
    .trim()
    .replace(/^:+/, '');
}

/**
 * A path as origins that read it loosely route it: lower case (IIS, ASP.NET), percent-encoding
 * decoded again (`%2561` is `a` to an origin that decodes twice), `;` parameters of a segment
 * dropped, `%3B` too (Tomcat, Spring), `%2F`, `%5C` and a backslash read as `/`, ASP.NET's
 * cookieless-session segments (`/(S(x))/`) dropped, a segment's trailing dots, blanks and
 * control characters dropped (IIS; Java's trim()), and runs of `/` merged (nginx's
 * merge_slashes, Spring).
 */
export function loosePath(path: string): string {
  let p = path.toLowerCase();
  // Encoded more than once, as often as an origin may decode it (a few times at most).
  for (let i = 0; i < 4 && p.includes('%25'); i++) p = p.replace(/%25([0-9a-f]{2})/g, '%$1');
  return p
    .replace(/%(2d|2e|3[0-9]|[46][1-9a-f]|[57][0-9a]|5f|7e)/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)).toLowerCase())
    .replace(/%2f|%5c|\\/g, '/')
    .replace(/%3b/g, ';')
    .replace(/;[^/]*/g, '')
    .replace(/\/\([a-z]\([^)/]*\)\)(?=\/|$)/g, '')
    .replace(/(?:\.|%[01][0-9a-f]|%20|\s)+(?=\/|$)/g, '')
    .replace(/\/{2,}/g, '/');
}

/** A route a loose spelling must not sidestep: never cached, or capped at the origin. */
function isGuarded(route: RouteConfig): boolean {
  return !route.cache.enabled || route.maxConcurrent !== undefined;
}

export function compileSite(site: SiteConfig, defaultRoute: RouteConfig): CompiledSite {
  const routes = site.routes.map(compileRoute);
  const last = site.routes[site.routes.length - 1];
  const isCatchAll = (r: RouteConfig | undefined) =>
    r !== undefined && !r.match.pathPrefix && !r.match.pathRegex && !r.match.methods && !r.match.query;
  if (!isCatchAll(last)) {
    // A name no route of the site has: policies and metrics are keyed by route name, and a
    // route of the operator's named `_default` lost its cache settings to this one (config-edit trial).
    const taken = new Set(site.routes.map((r) => r.name));
    let name = DEFAULT_ROUTE_NAME;
    while (taken.has(name)) name = `_${name}`;
    routes.push(compileRoute({ ...defaultRoute, name }));
  }
  const fallback = routes[routes.length - 1]!;
  const queryRoutes = site.routes.some((r) => r.match.query !== undefined && isGuarded(r));
  const queryNames = queryNamesOf(site.routes);
  return {
    config: site,
    routes,
    matchRoute(method, path, query) {
      const q = queryNames.strict.size === 0 ? NO_QUERY : readQuery(query, queryNames);
      let matched = fallback;
      for (const r of routes)
        if (r.matches(method, path, q)) {
          matched = r;
          break;
        }
      // A route the operator never caches (`cache.enabled: false`, the shipped `/api/`) is
      // not sidestepped by a spelling the origin reads as its path: `/API/x`, `//api/x`,
      // `/api;a/x`, `/api%2Fx` matched the cached default route, and an API answer with a
      // lifetime was stored for everyone (attacker trial). When unsure, do not cache.
      // A query condition the same way: `?title=special:export`, `?title=Main&title=Special:Export`
      // (PHP reads the last), `?title=Special%253AExport`. A capped route (maxConcurrent)
      // likewise: `?%20search=x` and `?title=_Special:Search` reached MediaWiki's search
      // beside its cap (attacker trial).
      // The first such route before the one matched as spelled (an unguarded one that matches
      // loosely is passed over: `?Action=render&title=Special_:Export` stopped at a cached
      // `action: render` route; review). A capped route that is cached takes loose readings of
      // its query only: read case-blind, its path regular expression put wiki pages named
      // `Search_Tips` under a cap of 1 meant for `/search` (review).
      if (!matched.config.cache.enabled) return matched;
      const loose = loosePath(path);
      if (loose === path && !(queryRoutes && query !== undefined)) return matched;
      for (const r of routes) {
        if (r === matched) break;
        if (!r.config.cache.enabled ? r.matchesLoosely(method, loose, q) : isGuarded(r.config) && r.matchesQueryLoosely(method, path, q)) return r;
      }
      return matched;
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

/** A host name (a trailing dot allowed), an IPv4 address or a bracketed IP literal, with an optional port. */
const HOST_ENTRY = /^(?:[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$/;

/** How the router reads one `sites[].hosts` entry. */
export type HostEntry = { kind: 'all' } | { kind: 'wildcard'; suffix: string } | { kind: 'exact'; host: string };

/**
 * A `hosts` entry as the router reads it: `*`, a `*.example.com` wildcard, or a name or address
 * compared as a request's Host is (lower case; a port and a trailing dot ignored, so
 * `docs.example.com:80` and `docs.example.com.` match `Host: docs.example.com`: they used to
 * match nothing). Undefined for an entry no request can match (a scheme, a path, a space):
 * the loader warns at it.
 */
export function readHostEntry(raw: string): HostEntry | undefined {
  const entry = raw.trim().toLowerCase();
  if (entry === '*') return { kind: 'all' };
  const wildcard = entry.startsWith('*.');
  const name = wildcard ? entry.slice(2) : entry;
  if (!HOST_ENTRY.test(name)) return undefined;
  const host = normaliseHost(name);
  if (host === undefined || host === '') return undefined;
  return wildcard ? { kind: 'wildcard', suffix: `.${host}` } : { kind: 'exact', host };
}

const MEMO_LIMIT = 1024;

export class SiteRouter<S extends { config: { hosts: readonly string[] } }> {
  private readonly exact = new Map<string, S>();
  private readonly wildcards: Array<{ suffix: string; site: S }> = [];
  private catchAll: S | undefined;

  constructor(sites: readonly S[]) {
    for (const site of sites) {
      for (const h of site.config.hosts) {
        const entry = readHostEntry(h);
        if (entry === undefined) continue; // matches nothing (the loader warned)
        if (entry.kind === 'all') this.catchAll ??= site;
        else if (entry.kind === 'wildcard') this.wildcards.push({ suffix: entry.suffix, site });
        else if (!this.exact.has(entry.host)) this.exact.set(entry.host, site);
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
