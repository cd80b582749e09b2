/**
 * The shared-cache decisions of RFC 9111, RFC 5861 (stale-while-revalidate / stale-if-error) and
 * RFC 9213 (targeted cache-control), as pure functions: is this request eligible, may this
 * response be stored (and with which lifetimes), is this stored entry usable for this request now.
 * Owns no I/O and no clock: times are epoch ms passed in. Does not build keys (cache-key.ts),
 * build conditional requests or merge 304s (revalidation.ts), or keep entries (stores/).
 *
 * Order of the freshness lifetime (RFC 9111 §4.2.1, then the route's rules):
 *   s-maxage > max-age > Expires − Date > route.negativeTtlSeconds[status]
 *   > route.defaultTtlSeconds (heuristically cacheable statuses only)
 *   > heuristic 10 % of (Date − Last-Modified), capped at 24 h (§4.2.2; heuristically cacheable
 *     statuses only), else 0 (stored stale: usable for revalidation and stale-if-error only)
 * then ttlFloorSeconds (2xx and 3xx only) / ttlCeilingSeconds. The per-status negative TTL is more specific than the
 * default TTL, and a configured default TTL replaces heuristics (schema: "0 = only heuristic
 * freshness").
 *
 * Route-configured durations (default TTL, negative TTL, floor, ceiling, micro-cache) count from
 * when the gateway received the response, so they are stored as `configured + initialAge` (the
 * stale moment is response_time + freshness − initial_age, entry.ts staleAtOf).
 *
 * Micro-caching (route.microcacheSeconds > 0) overrides exactly two origin signals: a bare
 * `no-cache` (the entry is stored with noCache false) and an explicit zero lifetime (max-age=0,
 * s-maxage=0, invalid max-age, Expires at or before Date). The lifetime becomes microcacheSeconds,
 * with no floor or ceiling. It never applies with no-store, private (with or without field
 * names), Set-Cookie (even with setCookie 'strip'), an Authorization request, or Vary: *; and
 * must-revalidate still holds once the micro-cache lifetime is over. A micro-cached `no-cache`
 * response gets no stale windows: the origin's "validate every time" forbids serving it stale
 * (§4.2.4), the operator only bought a short fresh window.
 *
 * must-revalidate beats grace: when mustRevalidate (must-revalidate, proxy-revalidate, s-maxage)
 * or noCache holds, both stale windows are 0, whatever stale-if-error or route.graceSeconds say
 * (RFC 9111 §4.2.4 "A cache MUST NOT generate a stale response if it is prohibited by an explicit
 * in-protocol directive").
 *
 * deleteAt = staleAt + max(swr, sie, revalidation window); the revalidation window is 60 s, only
 * for entries with a validator (ETag or Last-Modified), so a just-stale entry can still be
 * refreshed by a cheap 304. A response whose deleteAt is not after `now` is never usable and is
 * refused, and so is a `no-cache` response without a validator (every use would be a full fetch).
 *
 * Deliberately conservative (a cache is never required to store):
 * - no-store is honoured even with must-understand (§5.2.2.3 lets a cache ignore it there).
 * - `public` alone does not make a status that is not heuristically cacheable storable.
 * - Only statuses of RFC 9110 (plus 429, 451) are understood, which matters only under
 *   must-understand (§3): an unknown final status with explicit freshness is stored; 206 and 304
 *   are never stored.
 * - Only responses to GET are stored (a HEAD response has no content to serve a GET).
 */
import { Token, parseDictionary } from 'structured-headers';
import { CACHED_METHODS, SET_COOKIE_FIELDS, connectionListedNames, isHopByHop } from '../http/facts.js';
import type { RouteCacheConfig } from '../config/schema.js';
import { currentAgeMsOf, staleAtOf, type CacheEntry, type StoredHeaders } from './entry.js';
import {
  fieldOf,
  hasHeader,
  headerValue,
  joinHeader,
  parseAge,
  parseCacheControl,
  parseHttpDate,
  parseLastModified,
  CacheControl,
  DELTA_SECONDS_MAX,
  type HeaderMap,
} from './cache-control.js';
import { parseVary } from './cache-key.js';

export interface RequestFacts {
  method: string;
  /** Request target as received (origin-form or absolute-form). */
  url: string;
  headers: HeaderMap;
}

export interface ResponseFacts {
  status: number;
  headers: HeaderMap;
  /** RFC 9111 §4.2.3 request_time: when the origin request was sent (epoch ms). */
  requestTime: number;
  /** RFC 9111 §4.2.3 response_time: when the response was received (epoch ms). */
  responseTime: number;
}

export interface PolicyOptions {
  route: RouteCacheConfig;
  /** Our own targeted cache-control field (RFC 9213), e.g. 'Crowdgate-Cache-Control'. */
  targetedHeader: string;
  /** Let client no-cache / Pragma / max-age force revalidation (site.honorClientNoCache). */
  honorClientNoCache: boolean;
  /**
   * On a route with `ignoreSessionCookies`, the site's session cookies (bypassCookies): its fills
   * never send them, so they are no cookies of a request's own (carriesOwnCookies).
   */
  isIgnoredSessionCookie?: (name: string) => boolean;
}

/** Statuses defined as heuristically cacheable (RFC 9110 §15.1, RFC 9111 §4.2.2). */
export const HEURISTICALLY_CACHEABLE_STATUSES: ReadonlySet<number> = new Set([
  200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501,
]);

/** Final statuses the cache understands (RFC 9110 §15, plus 429 RFC 6585 and 451 RFC 7725). */
export const UNDERSTOOD_STATUSES: ReadonlySet<number> = new Set([
  200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 402, 403, 404, 405, 406,
  407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 429, 451, 500, 501, 502, 503, 504,
  505,
]);

/** §4.2.2 "a typical setting of this fraction might be 10%". */
export const HEURISTIC_FRACTION = 0.1;
/** Upper bound on a heuristic lifetime: 24 h in ms. */
export const HEURISTIC_CAP_MS = 24 * 3600 * 1000;
/** How long a stale entry with a validator is kept for a conditional refresh, in ms. */
export const REVALIDATION_WINDOW_MS = 60_000;

export const CDN_CACHE_CONTROL = 'cdn-cache-control';

export function isHeuristicallyCacheable(status: number): boolean {
  return HEURISTICALLY_CACHEABLE_STATUSES.has(status);
}

// ---------------------------------------------------------------------------------------------
// Request eligibility

export type RequestEligibility =
  | {
      cacheable: true;
      /** False when the request carries no-store: it may be answered from cache, but the
       * response to it must not be stored (RFC 9111 §5.2.1.5). */
      canStoreResponse: boolean;
    }
  | { cacheable: false; reason: string };

/** May this request be answered from (and fill) the cache at all? */
export function isCacheableRequest(req: RequestFacts, opts: PolicyOptions): RequestEligibility {
  if (!opts.route.enabled) return { cacheable: false, reason: 'route cache disabled' };
  const method = req.method.toUpperCase();
  // RFC 9111 §2: only methods whose responses are cacheable and that we understand.
  if (!CACHED_METHODS.has(method)) return { cacheable: false, reason: `method ${method} is not cached` };
  // §4.3.2: a cache must not evaluate preconditions that only apply to an origin server; they
  // are for it, so the request goes to it as it came. Stripped from a fill, the copy answered
  // 200 where the origin answered 412 (differential trial); judged against the copy (as nginx
  // does), a client holding the origin's newer ETag got 412 from an older copy (review).
  if (req.headers['if-match'] !== undefined || req.headers['if-unmodified-since'] !== undefined)
    return { cacheable: false, reason: 'If-Match or If-Unmodified-Since: for the origin to evaluate' };
  const cc = parseCacheControl(req.headers['cache-control']);
  // §5.2.1.5: no-store forbids storing, not answering from a stored response.
  return { cacheable: true, canStoreResponse: !cc.has('no-store') };
}

// ---------------------------------------------------------------------------------------------
// Storage

export type StorageDecision =
  | {
      store: true;
      entry: Omit<CacheEntry, 'key' | 'variantKey' | 'body'>;
      detail: string;
      /** The lifetime is the site's (negative TTL, default TTL, micro-cache), not the origin's. */
      configured: boolean;
    }
  | { store: false; reason: string; code: NotStoredReason };

/** Why an answer was not stored, in a word (the `reason` label of crowdgate_not_stored_total). */
export type NotStoredReason =
  | 'disabled'
  | 'method'
  | 'status'
  | 'request_no_store'
  | 'must_understand'
  | 'no_store'
  | 'private'
  | 'vary'
  | 'authorization'
  | 'set_cookie'
  | 'clear_site_data'
  | 'no_freshness'
  | 'never_usable'
  | 'too_large'
  | 'origin_error'
  | 'client_address';

/** Which field gave the caching directives (RFC 9213 §2.2). */
export interface DirectiveSource {
  /** Lowercase field name, or 'none'. */
  field: string;
  cc: CacheControl;
  /** A targeted field was chosen: Cache-Control and Expires are ignored. */
  targeted: boolean;
}

/**
 * Choose the directives that govern us: our targeted field, else CDN-Cache-Control, else
 * Cache-Control. RFC 9213 §2.2: the first targeted field with a valid, non-empty value wins
 * and Cache-Control and Expires are then ignored; an empty or unparseable one is as if absent,
 * and so is one of whose members none is kept (see parseTargetedField).
 */
export function selectDirectives(headers: HeaderMap, targetedHeader: string): DirectiveSource {
  for (const field of [targetedHeader.toLowerCase(), CDN_CACHE_CONTROL]) {
    const raw = joinHeader(fieldOf(headers, field));
    if (raw === undefined) continue;
    const cc = parseTargetedField(raw);
    if (cc !== undefined && !cc.isEmpty) return { field, cc, targeted: true };
  }
  const raw = headers['cache-control'];
  return { field: raw === undefined ? 'none' : 'cache-control', cc: parseCacheControl(raw), targeted: false };
}

/** Directives whose value is a number of seconds: an Integer in a targeted field. */
const SECONDS_DIRECTIVES: ReadonlySet<string> = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error']);
/** Directives that may carry a list of field names (`private="x-user"`, RFC 9111 §5.2.2.4, §5.2.2.7). */
const FIELD_NAMES_DIRECTIVES: ReadonlySet<string> = new Set(['private', 'no-cache']);
/** Directives that take no value: Boolean true in a targeted field. */
const FLAG_DIRECTIVES: ReadonlySet<string> = new Set(['no-store', 'public', 'must-revalidate', 'proxy-revalidate', 'must-understand', 'no-transform', 'immutable']);

/**
 * RFC 9213 §2.1: a targeted field is a Structured Field Dictionary (RFC 8941), read as one with
 * the same parser that checks it; one that fails to parse is ignored as a whole (undefined).
 * Each member's value is read by its type, never as Cache-Control text, and its parameters are
 * ignored: Boolean true is the bare directive (`private=?1` and `private;x=1` are `private`),
 * an Integer of 0 or more is a directive's seconds, a String or Token is `private`'s and
 * `no-cache`'s field names. A member whose value is of another type is not consumed (§2.1:
 * `max-age="60"`, `max-age=?1`, `max-age=1.5`, `public=?0` are ignored), except that `no-store`,
 * `private` and `no-cache` with any value but `?0` still count, unqualified: the stricter
 * reading, as for a Cache-Control member that does not parse. Read as Cache-Control text,
 * `private=?1` and `no-store;reason="pii"` were no `private` and no `no-store` at all, and the
 * page was stored for everyone (attacker trial).
 */
export function parseTargetedField(raw: string): CacheControl | undefined {
  const directives = new Map<string, (string | undefined)[]>();
  try {
    parseDictionary(raw);
    // Each member on its own, so that a repeated name keeps every occurrence: a Dictionary
    // keeps the last, but `private, private="x-user"` is unqualified and `max-age=60,
    // max-age=3600` stale, as in Cache-Control (RFC 9111 §4.2.1, §5.2.2.7: the stricter reading).
    for (const member of splitMembers(raw)) {
      for (const [name, [value]] of parseDictionary(member)) {
        const kept = targetedMemberValue(name, value);
        if (kept === IGNORED) continue;
        const list = directives.get(name);
        if (list === undefined) directives.set(name, [kept]);
        else list.push(kept);
      }
    }
  } catch {
    return undefined;
  }
  return new CacheControl(directives, false);
}
const IGNORED = Symbol('ignored');

/**
 * The members of a field that parsed as a Dictionary, split at its top-level commas: a comma
 * is inside a member only within a String's (or Display String's) quotes.
 */
function splitMembers(raw: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      out.push(raw.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(raw.slice(start).trim());
  return out.filter((m) => m.length > 0);
}

/** What a targeted field's member says, as a Cache-Control value (undefined: bare), or IGNORED. */
function targetedMemberValue(name: string, value: unknown): string | undefined | typeof IGNORED {
  if (value === true) return undefined;
  if (SECONDS_DIRECTIVES.has(name)) {
    return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? String(Math.min(value, DELTA_SECONDS_MAX)) : IGNORED;
  }
  if (FIELD_NAMES_DIRECTIVES.has(name) || name === 'no-store') {
    if (value === false) return IGNORED;
    if (name !== 'no-store' && (typeof value === 'string' || value instanceof Token)) return String(value);
    return undefined;
  }
  if (FLAG_DIRECTIVES.has(name)) return IGNORED;
  // An extension directive: kept by name (`CDN-Cache-Control: none` is a field, not an empty one).
  return typeof value === 'string' || typeof value === 'number' || value instanceof Token ? String(value) : undefined;
}

/** Inputs to RFC 9111 §4.2.3; times in epoch ms, age in seconds. */
export interface AgeInputs {
  requestTime: number;
  responseTime: number;
  /** Date header (epoch ms); undefined when missing or invalid. */
  dateAt: number | undefined;
  /** Age header in seconds; undefined when missing or invalid. */
  ageSeconds: number | undefined;
}

/**
 * corrected_initial_age in ms (RFC 9111 §4.2.3):
 *   apparent_age          = max(0, response_time − date_value)
 *   response_delay        = response_time − request_time
 *   corrected_age_value   = age_value + response_delay
 *   corrected_initial_age = max(apparent_age, corrected_age_value)
 * A missing Date counts as the receipt time (RFC 9110 §6.6.1), so apparent_age is 0.
 * Date has one-second resolution (RFC 9110 §5.6.7), so apparent_age compares whole seconds: a
 * response made and received within the same second has apparent age 0, not the fraction of a
 * second the origin's clock had run since its Date was formatted (that made every entry go stale
 * up to a second early, an extra origin fetch every few TTLs).
 */
export function computeInitialAgeMs(a: AgeInputs): number {
  const apparentAgeMs = a.dateAt === undefined ? 0 : Math.max(0, Math.floor(a.responseTime / 1000) * 1000 - a.dateAt);
  const responseDelayMs = Math.max(0, a.responseTime - a.requestTime);
  const correctedAgeValueMs = (a.ageSeconds ?? 0) * 1000 + responseDelayMs;
  return Math.max(apparentAgeMs, correctedAgeValueMs);
}

export type FreshnessSource =
  | 's-maxage'
  | 'max-age'
  | 'expires'
  | 'negative-ttl'
  | 'default-ttl'
  | 'heuristic'
  | 'none';

export interface Freshness {
  /** Lifetime in ms; for configured sources, still without the initial age (see module doc). */
  lifetimeMs: number;
  source: FreshnessSource;
  /** The lifetime came from the response itself (s-maxage, max-age, Expires). */
  explicit: boolean;
  /** The lifetime is configuration and counts from receipt. */
  configured: boolean;
}

export interface FreshnessInputs {
  status: number;
  headers: HeaderMap;
  directives: DirectiveSource;
  route: RouteCacheConfig;
  /** Date header or, when missing, response_time (RFC 9111 §4.2.1). */
  dateAt: number;
  responseTime: number;
}

/**
 * The freshness lifetime (RFC 9111 §4.2.1) before floor, ceiling and micro-caching; undefined
 * when nothing gives this response a lifetime (then it is not storable, §3).
 */
export function computeFreshness(f: FreshnessInputs): Freshness | undefined {
  const cc = f.directives.cc;
  const sMaxAge = cc.deltaSeconds('s-maxage');
  if (sMaxAge !== undefined) return explicit(sMaxAge * 1000, 's-maxage'); // §5.2.2.10 shared caches
  const maxAge = cc.deltaSeconds('max-age');
  if (maxAge !== undefined) return explicit(maxAge * 1000, 'max-age'); // §5.2.2.1
  if (!f.directives.targeted && hasHeader(f.headers, 'expires')) {
    const raw = f.headers['expires'];
    const lines = Array.isArray(raw) ? raw : [raw];
    // §4.2.1: several Expires that disagree -> stale; §5.3: an invalid date (e.g. "0") is in the past.
    const agree = new Set(lines.map((l) => (l ?? '').trim())).size === 1;
    const expiresAt = agree ? parseHttpDate(lines[0], f.responseTime) : undefined;
    return explicit(expiresAt === undefined ? 0 : Math.max(0, expiresAt - f.dateAt), 'expires');
  }
  const negative = f.route.negativeTtlSeconds[String(f.status)];
  if (negative !== undefined) return configured(negative * 1000, 'negative-ttl');
  if (!isHeuristicallyCacheable(f.status)) return undefined;
  if (f.route.defaultTtlSeconds > 0) return configured(f.route.defaultTtlSeconds * 1000, 'default-ttl');
  const lastModifiedAt = parseLastModified(f.headers['last-modified'], f.responseTime);
  // §4.2.2: 10 % of the time since Last-Modified, capped.
  const heuristicMs =
    lastModifiedAt === undefined ? 0 : Math.min(HEURISTIC_CAP_MS, Math.max(0, f.dateAt - lastModifiedAt) * HEURISTIC_FRACTION);
  return { lifetimeMs: Math.floor(heuristicMs), source: 'heuristic', explicit: false, configured: false };
}

function explicit(lifetimeMs: number, source: FreshnessSource): Freshness {
  return { lifetimeMs, source, explicit: true, configured: false };
}
function configured(lifetimeMs: number, source: FreshnessSource): Freshness {
  return { lifetimeMs, source, explicit: false, configured: true };
}


/**
 * Response headers as stored: without hop-by-hop fields (§3.1), Age (recomputed on use), both
 * targeted cache-control fields (RFC 9213: they are for us), Set-Cookie and Set-Cookie2 (never
 * stored), and any
 * extra names given (no-cache / private field names, §5.2.2.4, §5.2.2.7).
 */
export function makeStoredHeaders(
  headers: HeaderMap,
  targetedHeader: string,
  alsoRemove: Iterable<string> = [],
): StoredHeaders {
  const connectionListed = new Set(connectionListedNames(headerValue(headers, 'connection')));
  // CDN-Cache-Control is kept: it targets every CDN, one downstream of us too (RFC 9213 §2.1
  // only says a cache uses it); our own targeted field is for us alone.
  const removed = new Set<string>(['age', ...SET_COOKIE_FIELDS, targetedHeader.toLowerCase()]);
  for (const n of alsoRemove) removed.add(n.toLowerCase());
  const out: StoredHeaders = {};
  for (const [rawName, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    if (removed.has(name) || isHopByHop(name, connectionListed)) continue;
    out[name] = Array.isArray(value) ? [...value] : value;
  }
  return out;
}

/** Surrogate-Key (space separated) and Cache-Tag (comma separated) values, deduplicated. */
export function parseTags(headers: HeaderMap): string[] {
  const tags = new Set<string>();
  for (const t of (headerValue(headers, 'surrogate-key') ?? '').split(/[\s,]+/)) if (t) tags.add(t);
  for (const t of (headerValue(headers, 'cache-tag') ?? '').split(',')) {
    const tag = t.trim();
    if (tag) tags.add(tag);
  }
  return [...tags];
}

function refuse(reason: string, code: NotStoredReason): StorageDecision {
  return { store: false, reason, code };
}

/**
 * Request headers the gateway writes for each request (the client's address, its hop, the
 * request's id): a response that varies on one answers that one request, and a shared copy
 * stored under the variant the fill sent would match nobody else (or, computed from the later
 * request's own header, everybody).
 */
const PER_REQUEST_HEADERS: ReadonlySet<string> = new Set(['x-forwarded-for', 'via', 'x-request-id']);

/** May this response be stored for a shared cache, and with which lifetimes? */
export function decideStorage(req: RequestFacts, res: ResponseFacts, opts: PolicyOptions, now: number): StorageDecision {
  const route = opts.route;
  if (!route.enabled) return refuse('route cache disabled', 'disabled');
  if (req.method.toUpperCase() !== 'GET') return refuse(`only responses to GET are stored, not ${req.method}`, 'method');

  const status = res.status;
  // RFC 9111 §3: the status must be final and understood; 206 needs range support we lack.
  if (status < 200 || status > 599) return refuse(`§3 status ${status} is not final`, 'status');
  if (status === 206) return refuse('§3.3 206 Partial Content is not stored (no range support)', 'status');
  if (status === 304) return refuse('§4.3.4 a 304 updates a stored entry, it is not stored itself', 'status');

  const reqCc = parseCacheControl(req.headers['cache-control']);
  if (reqCc.has('no-store')) return refuse('§5.2.1.5 request no-store: the response is not stored', 'request_no_store');

  const directives = selectDirectives(res.headers, opts.targetedHeader);
  const cc = directives.cc;
  // §3: only must-understand asks the cache to understand the status; any other final status
  // with explicit freshness may be stored (an unknown one is never heuristically cacheable).
  if (cc.has('must-understand') && !UNDERSTOOD_STATUSES.has(status))
    return refuse(`§5.2.2.3 must-understand and status ${status} is not understood`, 'must_understand');
  if (cc.has('no-store')) return refuse(`§5.2.2.5 response no-store (${directives.field})`, 'no_store');
  const privateFields = cc.fieldNames('private');
  if (privateFields !== undefined && privateFields.length === 0)
    return refuse(`§5.2.2.7 response private (${directives.field}): not for a shared cache`, 'private');

  const vary = parseVary(res.headers['vary']);
  if (vary === '*') return refuse('§4.1 Vary: * never matches a later request', 'vary');
  const perRequest = vary.find((name) => PER_REQUEST_HEADERS.has(name));
  if (perRequest !== undefined) return refuse(`§4.1 Vary: ${perRequest}, which the gateway sets for each request: no other request matches`, 'vary');

  const hasAuthorization = hasHeader(req.headers, 'authorization');
  if (hasAuthorization && !(cc.has('public') || cc.has('s-maxage') || cc.has('must-revalidate')))
    return refuse('§3.5 request had Authorization and the response lacks public, s-maxage and must-revalidate', 'authorization');

  const hasSetCookie = SET_COOKIE_FIELDS.some((name) => hasHeader(res.headers, name));
  if (hasSetCookie && route.setCookie === 'refuse') return refuse('response has Set-Cookie (route setCookie: refuse)', 'set_cookie');
  // Like Set-Cookie, an action on the browser that asked (W3C Clear-Site-Data): stored, a
  // logout's `"cookies"` or `"*"` was replayed to every visitor of the URL, logging them all
  // out (attacker trial). Never stored, whatever setCookie says.
  if (hasHeader(res.headers, 'clear-site-data')) return refuse('response has Clear-Site-Data: an action for the client that asked', 'clear_site_data');

  const dateAt = parseHttpDate(res.headers['date'], res.responseTime);
  const freshness = computeFreshness({
    status,
    headers: res.headers,
    directives,
    route,
    dateAt: dateAt ?? res.responseTime,
    responseTime: res.responseTime,
  });
  if (freshness === undefined)
    return refuse(`§3 status ${status} has no explicit freshness and is not heuristically cacheable (no negative TTL configured)`, 'no_freshness');

  // §4.2.3 age; Age from an upstream cache is ignored when invalid (§5.1).
  const ageSeconds = parseAge(res.headers['age']);
  let initialAgeMs = computeInitialAgeMs({ requestTime: res.requestTime, responseTime: res.responseTime, dateAt, ageSeconds });
  // A Date that makes a fresh-looking answer stale on arrival is the origin's clock, not the
  // answer's age, when its Age (what a cache on the way says) and transit time do not: an
  // origin ten minutes behind with max-age=300 turned caching and collapsing off for the whole
  // site (failure-day trial), and with an upstream cache's `Age: 50` it still did, 486 origin
  // fetches in 15 s where 2 were due (failure-day trial, round 3). nginx and Varnish do not read
  // Date for age at all. Its Age and transit time still count.
  if (freshness.explicit && initialAgeMs >= freshness.lifetimeMs && freshness.lifetimeMs > 0) {
    const skewed = computeInitialAgeMs({ requestTime: res.requestTime, responseTime: res.responseTime, dateAt: undefined, ageSeconds });
    if (skewed < freshness.lifetimeMs) initialAgeMs = skewed;
  }

  const noCacheFields = cc.fieldNames('no-cache');
  const originNoCache = noCacheFields !== undefined && noCacheFields.length === 0; // §5.2.2.4
  const zeroLifetime = freshness.explicit && freshness.lifetimeMs === 0;
  const microcacheApplies =
    route.microcacheSeconds > 0 &&
    (originNoCache || zeroLifetime) &&
    privateFields === undefined &&
    !hasSetCookie &&
    !hasAuthorization;

  let freshnessMs: number;
  const notes: string[] = [];
  if (microcacheApplies) {
    freshnessMs = route.microcacheSeconds * 1000 + initialAgeMs;
    notes.push(`micro-cache ${route.microcacheSeconds}s overrides ${originNoCache ? 'no-cache' : `${freshness.source}=0`}`);
  } else {
    freshnessMs = freshness.configured ? freshness.lifetimeMs + initialAgeMs : freshness.lifetimeMs;
    notes.push(`${freshness.source} ${Math.round(freshness.lifetimeMs / 1000)}s`);
    // Route floor and ceiling count from receipt (module doc). The floor lengthens answers
    // (2xx, 3xx), never errors: a 404 for an asset that does not exist yet, asked for by
    // anyone, was kept for the static route's day instead of its negative TTL.
    const floorMs = route.ttlFloorSeconds * 1000 + initialAgeMs;
    if (route.ttlFloorSeconds > 0 && status < 400 && freshnessMs < floorMs) {
      freshnessMs = floorMs;
      notes.push(`floor ${route.ttlFloorSeconds}s`);
    }
    if (route.ttlCeilingSeconds !== undefined) {
      const ceilingMs = route.ttlCeilingSeconds * 1000 + initialAgeMs;
      if (freshnessMs > ceilingMs) {
        freshnessMs = ceilingMs;
        notes.push(`ceiling ${route.ttlCeilingSeconds}s`);
      }
    }
  }

  const noCache = originNoCache && !microcacheApplies;
  // §5.2.2.2 must-revalidate, §5.2.2.8 proxy-revalidate, §5.2.2.10 s-maxage (implies proxy-revalidate).
  const mustRevalidate = cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage');
  const staleForbidden = mustRevalidate || noCache || (microcacheApplies && originNoCache);

  // RFC 5861 §3 / §4; route defaults; must-revalidate beats grace (module doc).
  const swrHeader = cc.deltaSeconds('stale-while-revalidate');
  const sieHeader = cc.deltaSeconds('stale-if-error');
  const staleWhileRevalidateMs = staleForbidden ? 0 : (swrHeader ?? route.staleWhileRevalidateSeconds) * 1000;
  const staleIfErrorMs = staleForbidden ? 0 : Math.max(sieHeader ?? 0, route.graceSeconds) * 1000;
  if (staleForbidden) notes.push(mustRevalidate ? 'must-revalidate: no stale serving' : 'no-cache: no stale serving');

  const headers = makeStoredHeaders(res.headers, opts.targetedHeader, [...(noCacheFields ?? []), ...(privateFields ?? [])]);
  const hasValidator = headers['etag'] !== undefined || headers['last-modified'] !== undefined;

  // §5.2.2.4: every use of a no-cache entry is a validation; without a validator that is a full
  // fetch, so the entry could never be used.
  if (noCache && !hasValidator) return refuse('§5.2.2.4 no-cache without ETag or Last-Modified: never usable', 'never_usable');

  const staleAt = res.responseTime + freshnessMs - initialAgeMs;
  // The route's opt-in grace for must-revalidate pages (evaluateEntry) needs them kept that long.
  const graceOverrideMs = mustRevalidate && !noCache && route.graceOverridesMustRevalidate ? route.graceSeconds * 1000 : 0;
  const keepMs = Math.max(staleWhileRevalidateMs, staleIfErrorMs, graceOverrideMs, hasValidator ? REVALIDATION_WINDOW_MS : 0);
  const deleteAt = staleAt + keepMs;
  if (deleteAt <= now)
    return refuse(`never usable: stale on arrival (${notes.join('; ')}) with no stale window and no validator`, 'never_usable');

  return {
    store: true,
    entry: {
      vary,
      status,
      headers,
      requestTime: res.requestTime,
      responseTime: res.responseTime,
      initialAgeMs,
      freshnessMs,
      staleWhileRevalidateMs,
      staleIfErrorMs,
      noCache,
      mustRevalidate,
      tags: parseTags(res.headers),
      deleteAt,
      sharedByOrigin: directives.targeted || cc.has('public') || cc.has('s-maxage'),
    },
    detail: `directives from ${directives.field}; ${notes.join('; ')}${noCache ? '; no-cache: validate every use' : ''}${
      hasSetCookie ? '; Set-Cookie stripped' : ''
    }`,
    configured: microcacheApplies || freshness.configured,
  };
}

// ---------------------------------------------------------------------------------------------
// Use of a stored entry

export interface EntryEvaluation {
  /** current_age < freshness_lifetime, not invalidated, not no-cache (§4.2). */
  fresh: boolean;
  /** current_age in whole seconds, for the Age header (§5.1). */
  ageSeconds: number;
  /**
   * The entry may not be served as it is: it must be validated (or refetched) first, unless a
   * stale window below allows serving it meanwhile or on error.
   */
  needsRevalidation: boolean;
  /** Stale, and inside stale-while-revalidate: serve it and refresh in the background (RFC 5861 §3). */
  withinStaleWhileRevalidate: boolean;
  /** Before staleAt + stale-if-error/grace: may be served if the origin fails (RFC 5861 §4). */
  withinStaleIfError: boolean;
  /**
   * May be served when the origin *fails* (error, timeout, unreachable, circuit open): as
   * `withinStaleIfError`, widened by the route's opt-in `graceOverridesMustRevalidate` to
   * must-revalidate / s-maxage entries within `graceSeconds` (a deliberate RFC 9111 §4.2.4
   * deviation, as Varnish grace makes). Not for a busy origin, nor for stale-while-revalidate.
   */
  withinGraceOnFailure: boolean;
  /** The client sent only-if-cached: answer 504 rather than contact the origin (§5.2.1.7). */
  onlyIfCached: boolean;
  /**
   * The request itself demands a validated or younger response (no-cache, max-age or
   * min-fresh it is allowed to force): no stale answer just because the origin is busy.
   */
  refetchDemanded: boolean;
  reason: string;
}

function hasPragmaNoCache(headers: HeaderMap): boolean {
  return (headerValue(headers, 'pragma') ?? '')
    .split(',')
    .some((p) => p.trim().toLowerCase() === 'no-cache');
}

/** Is this stored entry usable for this request at `now`? */
export function evaluateEntry(entry: CacheEntry, req: RequestFacts, now: number, opts: PolicyOptions): EntryEvaluation {
  const ageMs = currentAgeMsOf(entry, now);
  const ageSeconds = Math.floor(ageMs / 1000); // §5.1 Age is delta-seconds
  const staleAt = staleAtOf(entry); // response_time + freshness_lifetime − corrected_initial_age, or invalidatedAt
  const invalidated = entry.invalidatedAt !== undefined && entry.invalidatedAt <= now;
  const fresh = !entry.noCache && now < staleAt; // §4.2: current_age < freshness_lifetime
  const staleForbidden = entry.mustRevalidate || entry.noCache; // §4.2.4
  const reqCc = parseCacheControl(req.headers['cache-control']);
  const onlyIfCached = reqCc.has('only-if-cached'); // §5.2.1.7

  // Request directives that demand a validated or younger response.
  let forced: string | undefined;
  if (opts.honorClientNoCache) {
    if (reqCc.has('no-cache')) forced = '§5.2.1.4 request no-cache';
    else if (!hasHeader(req.headers, 'cache-control') && hasPragmaNoCache(req.headers))
      forced = '§5.4 Pragma: no-cache without Cache-Control';
    else {
      const maxAge = reqCc.deltaSeconds('max-age');
      if (maxAge !== undefined && ageMs > maxAge * 1000) forced = `§5.2.1.1 request max-age=${maxAge} < age`;
    }
  }
  // §5.2.1.3 min-fresh: like the directives above, only with honorClientNoCache. Any client can
  // read a page's lifetime and ask for min-fresh equal to it, which forces a refetch of every
  // fresh copy at will (min-fresh=60 on a max-age=60 page, every request after the first second).
  const minFresh = opts.honorClientNoCache ? reqCc.deltaSeconds('min-fresh') : undefined;
  if (forced === undefined && fresh && minFresh !== undefined && staleAt - now < minFresh * 1000)
    forced = `§5.2.1.3 min-fresh=${minFresh} not met`;

  // §5.2.1.2 max-stale: the client accepts a stale response, never when stale serving is
  // forbidden (§4.2.4), nor an invalidated one (§4.4: a purged or unsafe-method-invalidated copy
  // needs a validation first; max-stale read a soft-purged page at will, attacker trial).
  let maxStaleOk = false;
  if (!fresh && !staleForbidden && !invalidated && reqCc.has('max-stale')) {
    const limit = reqCc.isBare('max-stale') ? Infinity : (reqCc.deltaSeconds('max-stale') ?? 0) * 1000;
    maxStaleOk = now - staleAt <= limit;
  }

  const needsRevalidation = forced !== undefined || (!fresh && !maxStaleOk);
  // An invalidated entry (RFC 9111 §4.4, or a soft purge) needs "a mandatory validation before
  // it can be sent": no stale-while-revalidate; stale-if-error still covers a failing origin.
  const withinStaleWhileRevalidate =
    !fresh && !staleForbidden && !invalidated && forced === undefined && now < staleAt + entry.staleWhileRevalidateMs;
  const withinStaleIfError = !staleForbidden && now < staleAt + entry.staleIfErrorMs;
  const withinGraceOnFailure =
    withinStaleIfError ||
    (entry.mustRevalidate && !entry.noCache && opts.route.graceOverridesMustRevalidate && now < staleAt + opts.route.graceSeconds * 1000);

  let reason: string;
  if (forced !== undefined) reason = forced;
  else if (fresh) reason = 'fresh';
  else if (entry.noCache) reason = '§5.2.2.4 no-cache: validate every use';
  else if (maxStaleOk) reason = '§5.2.1.2 stale, accepted by request max-stale';
  else if (entry.mustRevalidate) reason = '§5.2.2.2 stale and must-revalidate';
  else if (invalidated) reason = 'invalidated by purge';
  else reason = 'stale';

  return {
    fresh,
    ageSeconds,
    needsRevalidation,
    withinStaleWhileRevalidate,
    withinStaleIfError,
    withinGraceOnFailure,
    onlyIfCached,
    refetchDemanded: forced !== undefined,
    reason,
  };
}
