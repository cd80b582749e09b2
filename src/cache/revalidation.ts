/**
 * Validation: the conditional headers the gateway sends to refresh a stored entry (RFC 9111
 * §4.3.1), merging the origin's 304 into it (§4.3.3, §4.3.4), answering a client's own
 * conditional request from the cache (§4.3.2, RFC 9110 §13.1), and which URIs an unsafe request
 * invalidates (§4.4). Pure; does not fetch, store or respond.
 */
import { SAFE_METHODS, SET_COOKIE_FIELDS } from '../http/facts.js';
import type { CacheEntry, StoredHeaders } from './entry.js';
import { encodedETag, hasNoTransform, type StoredCoding } from './content-coding.js';
import { headerValue, parseHttpDate, parseLastModified, type HeaderMap } from './cache-control.js';
import { parseUrlPath, parseVary } from './cache-key.js';
import { decideStorage, makeStoredHeaders, type PolicyOptions, type RequestFacts, type ResponseFacts } from './policy.js';

/** Headers for the conditional request that validates `entry` (§4.3.1). */
export function makeConditionalHeaders(entry: CacheEntry): Record<string, string> {
  const out: Record<string, string> = {};
  const etag = storedValue(entry.headers, 'etag');
  if (etag !== undefined) out['if-none-match'] = etag; // RFC 9110 §13.1.2
  const lastModified = storedValue(entry.headers, 'last-modified');
  if (lastModified !== undefined && parseLastModified(lastModified) !== undefined)
    out['if-modified-since'] = lastModified; // RFC 9110 §13.1.3
  return out;
}

function storedValue(headers: StoredHeaders, name: string): string | undefined {
  const v = Object.hasOwn(headers, name) ? headers[name] : undefined;
  return Array.isArray(v) ? v[0] : v;
}

/** An entity-tag split into its weakness and opaque part (RFC 9110 §8.8.3). */
interface EntityTag {
  weak: boolean;
  opaque: string;
}

function parseEntityTag(text: string): EntityTag | undefined {
  const t = text.trim();
  const weak = t.startsWith('W/');
  const opaque = weak ? t.slice(2) : t;
  if (opaque.length < 2 || !opaque.startsWith('"') || !opaque.endsWith('"')) return undefined;
  return { weak, opaque };
}

/** Split an If-None-Match list on commas outside quotes (entity-tags may contain commas). */
function splitEntityTags(list: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of list) {
    if (c === '"') quoted = !quoted;
    if (c === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter((s) => s !== '');
}

/** RFC 9110 §8.8.3.2 weak comparison: opaque-tags equal, weakness ignored. */
export function weakMatch(a: string, b: string): boolean {
  const x = parseEntityTag(a);
  const y = parseEntityTag(b);
  return x !== undefined && y !== undefined && x.opaque === y.opaque;
}

/** RFC 9110 §8.8.3.2 strong comparison: both strong and opaque-tags equal. */
export function strongMatch(a: string, b: string): boolean {
  const x = parseEntityTag(a);
  const y = parseEntityTag(b);
  return x !== undefined && y !== undefined && !x.weak && !y.weak && x.opaque === y.opaque;
}

/**
 * Does this 304 select `entry` for update (§4.3.4)? A strong ETag must match strongly; a weak
 * one weakly; without an ETag, a Last-Modified must equal the stored one; a 304 with no
 * validator at all selects the entry (deviation, see below).
 */
export function isSelectedByNotModified(entry: CacheEntry, headers: HeaderMap): boolean {
  const newTag = headerValue(headers, 'etag');
  const storedTag = storedValue(entry.headers, 'etag');
  if (newTag !== undefined) {
    if (storedTag === undefined) return false;
    const parsed = parseEntityTag(newTag);
    if (parsed === undefined) return false;
    return parsed.weak ? weakMatch(newTag, storedTag) : strongMatch(newTag, storedTag);
  }
  const newLm = parseLastModified(headers['last-modified']);
  if (newLm !== undefined) return parseLastModified(storedValue(entry.headers, 'last-modified')) === newLm;
  // No validator in the 304. §4.3.4 selects only a stored response without one either; we relax
  // that: the gateway validates exactly one entry per conditional request, so the 304 answers
  // for the entry whose validators we sent (many origins omit ETag on 304 despite §15.4.5).
  return true;
}

/**
 * Fields a 304 must not change in the stored response (§3.2): Content-Length, and the fields the
 * stored body depends on (its coding, type and range), so headers always describe the bytes.
 */
const NOT_UPDATED_BY_304 = new Set(['content-length', 'content-encoding', 'content-type', 'content-range']);

/**
 * Merge a 304 into `entry` (§4.3.4): the 304's header fields replace the stored ones (except
 * NOT_UPDATED_BY_304 and what is never stored), then every lifetime, the age and the tags are
 * recomputed from the merged headers with the 304's request/response times (the same rules as
 * decideStorage), and `invalidatedAt` is cleared.
 *
 * undefined when the 304 does not select this entry (§4.3.4), when its Vary differs from the
 * entry's (its variant key would be wrong), or when the merged response is no longer storable.
 *
 * `req` is the request that was validated (Authorization, no-store); defaults to a plain GET.
 *
 * Known gap: the entry does not keep the targeted / CDN-Cache-Control field it was stored under
 * (they are stripped). A 304 that omits them is judged by the merged Cache-Control, which may be
 * stricter (then undefined: the caller refetches) or looser.
 */
export function mergeNotModified(
  entry: CacheEntry,
  res304: ResponseFacts,
  opts: PolicyOptions,
  now: number,
  req: RequestFacts = { method: 'GET', url: '/', headers: {} },
): CacheEntry | undefined {
  if (!isSelectedByNotModified(entry, res304.headers)) return undefined;
  const update: HeaderMap = {};
  for (const [name, value] of Object.entries(res304.headers)) {
    if (value === undefined || NOT_UPDATED_BY_304.has(name.toLowerCase())) continue;
    update[name.toLowerCase()] = value;
  }
  // Hop-by-hop and the rest are filtered by makeStoredHeaders as for any response; the targeted
  // fields stay in `merged` so decideStorage can read them, and are stripped by it.
  const filteredUpdate = makeStoredHeaders(update, opts.targetedHeader);
  const merged: HeaderMap = { ...entry.headers, ...filteredUpdate };
  for (const keep of [...SET_COOKIE_FIELDS, 'age', 'cdn-cache-control', opts.targetedHeader.toLowerCase()]) {
    if (update[keep] !== undefined) merged[keep] = update[keep];
  }
  // The 304's Vary may name fewer fields than the copy varies on: the gateway adds names the
  // origin does not send (an echoed input, a header naming who asks: fill.ts), and an origin
  // repeats its own Vary on a 304 (RFC 9110 §15.4.5). Taken as the copy's, every revalidation of
  // such a copy failed and was fetched again in full (review). The copy keeps its own Vary, a
  // superset; a 304 that varies on a field the copy's variant key does not hold is refetched.
  const newVary = parseVary(merged['vary']);
  if (newVary === '*' || newVary.some((name) => !entry.vary.includes(name))) return undefined;
  if (entry.headers['vary'] !== undefined) merged['vary'] = entry.headers['vary'];
  else delete merged['vary'];

  const decision = decideStorage(
    { ...req, method: 'GET' },
    { status: entry.status, headers: merged, requestTime: res304.requestTime, responseTime: res304.responseTime },
    opts,
    now,
  );
  if (!decision.store) return undefined;
  const updated: CacheEntry = { ...decision.entry, key: entry.key, variantKey: entry.variantKey, body: entry.body };
  // The targeted field that made a copy shared is not stored: a 304 without it keeps that word.
  if (entry.sharedByOrigin === true) updated.sharedByOrigin = true;
  // The body is unchanged, and so are its stored encodings, unless the 304 now forbids transforms.
  if (entry.encodings !== undefined && !hasNoTransform(updated.headers)) updated.encodings = entry.encodings;
  return updated;
}

/**
 * Can the gateway answer the client's own conditional request with 304 from `entry`?
 * If-None-Match (weak comparison, `*`, lists; RFC 9110 §13.1.2) decides when present; otherwise
 * If-Modified-Since ≥ Last-Modified (§13.1.3), falling back to the stored Date or receipt time
 * when there is no Last-Modified (RFC 9111 §4.3.2). Only GET/HEAD of a stored 200.
 *
 * `coding` is the stored encoding the answer would carry (content-coding.ts): then the
 * encoding's own ETag (`"abc-br"`) matches, and so does the origin's (`"abc"`): the client
 * holds the same content in another coding, and the 304 hands it the encoding's ETag. The
 * ETag of another encoding (`"abc-gzip"` for a br answer) does not match.
 */
export function isNotModifiedForClient(entry: CacheEntry, req: RequestFacts, coding?: StoredCoding): boolean {
  const method = req.method.toUpperCase();
  if ((method !== 'GET' && method !== 'HEAD') || entry.status !== 200) return false;
  const inm = headerValue(req.headers, 'if-none-match');
  if (inm !== undefined) {
    const tags = splitEntityTags(inm);
    if (tags.includes('*')) return true;
    const stored = storedValue(entry.headers, 'etag');
    if (stored === undefined) return false;
    const encoded = coding === undefined ? undefined : encodedETag(stored, coding);
    return tags.some((t) => weakMatch(t, stored) || (encoded !== undefined && weakMatch(t, encoded)));
  }
  const imsRaw = req.headers['if-modified-since'];
  if (imsRaw === undefined || Array.isArray(imsRaw)) return false; // §13.1.3: more than one member -> ignore
  const ims = parseLastModified(imsRaw);
  if (ims === undefined) return false;
  const modifiedAt =
    parseLastModified(storedValue(entry.headers, 'last-modified')) ??
    parseHttpDate(storedValue(entry.headers, 'date')) ??
    entry.responseTime;
  return modifiedAt <= ims;
}



/** scheme://host[:port] of an absolute URL, lowercase, default ports dropped; undefined if not one. */
function originOf(url: URL): string {
  return `${url.protocol}//${url.host}`.toLowerCase();
}

/**
 * What a successful (2xx/3xx) unsafe request invalidates (RFC 9111 §4.4): its target URI, and the
 * Location and Content-Location URIs when they have the same origin. Returned as path?query
 * strings (raw, as cache-key.ts's makeCacheKey or keyPrefixFor expect), deduplicated.
 * `origin` is the request's scheme://host[:port].
 */
export function invalidationTargets(
  req: RequestFacts,
  res: { status: number; headers: HeaderMap },
  origin: string,
): string[] {
  if (SAFE_METHODS.has(req.method.toUpperCase())) return [];
  if (res.status < 200 || res.status > 399) return [];
  let base: URL;
  try {
    const { path, query } = parseUrlPath(req.url);
    base = new URL(path + (query === undefined ? '' : '?' + query), origin);
  } catch {
    return [];
  }
  const targets = new Set<string>([base.pathname + base.search]);
  const wantedOrigin = originOf(base);
  for (const field of ['location', 'content-location']) {
    const value = headerValue(res.headers, field);
    if (value === undefined) continue;
    let u: URL;
    try {
      u = new URL(value.trim(), base);
    } catch {
      continue;
    }
    // §4.4 "MUST NOT invalidate ... URIs whose origin differs from the target URI's".
    if (originOf(u) !== wantedOrigin) continue;
    targets.add(u.pathname + u.search);
    // And the page without the query a redirect added: ikiwiki sends a saved edit to
    // `/page/?updated`, and the `/page/` readers get kept the old text for its whole lifetime
    // (failure-day trial). A cache may drop more than it must.
    if (u.search !== '') targets.add(u.pathname);
  }
  return [...targets];
}
