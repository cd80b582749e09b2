/**
 * Cache keys: request -> primary key (site, normalised URL, the route's key template) and the
 * Vary secondary key (RFC 9111 §4.1). Owns normalisation only; it does not decide whether a
 * request is cacheable (policy.ts) nor which route applies (the caller passes the template).
 *
 * Primary key layout (NUL separates parts, so a part can never run into the next):
 *   `${site}\0${path}[?${query}]\0H:${scheme}://${host}` then `\0h:name=value&...` when the
 *   template names headers and `\0c:name=value&...` when it names cookies. The authority (scheme
 *   and Host) is in every key: the origin builds links, redirects and vhost answers from what
 *   it receives, so a page asked for with `Host: evil.example` must never answer another Host
 *   (Varnish's built-in vcl_hash hashes Host with the URL for the same reason). Values are percent-encoded; a missing header or
 *   cookie appears as its bare name, so "absent" and "empty" are different keys.
 * The method is not in the key: only GET and HEAD are cached and HEAD is answered from GET's entry.
 *
 * Purge by prefix matches keys by string prefix: `keyPrefixFor(site, '/blog/')` is a prefix of
 * every key under /blog/. Note `/blog` (no slash) also matches `/blogroll`.
 */
import type { CacheKeyConfig } from '../config/schema.js';
import { fieldOf, joinHeader, type HeaderMap } from './cache-control.js';

const SEP = '\u0000';

export interface CacheKeyInput {
  /** Site name from the config; always the first part of the key. */
  site: string;
  /** `scheme://host` from makeAuthority(); in every key. */
  authority: string;
  /** Request target as received: origin-form `/path?query` or absolute-form `http://host/path`. */
  url: string;
  headers: HeaderMap;
  key: CacheKeyConfig;
}

/** A request target split into its raw path and query (no fragment). */
export interface UrlPath {
  path: string;
  /** Without the `?`; undefined when the target has no `?`. */
  query: string | undefined;
}

/**
 * Split a request target (RFC 9112 §3.2) into path and query. Absolute-form
 * (`http://host/p?q`) gives just the path; authority-form and `*` give `/` and `*` unchanged.
 */
export function parseUrlPath(url: string): UrlPath {
  let target = url;
  const hash = target.indexOf('#');
  if (hash >= 0) target = target.slice(0, hash);
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(target);
  if (scheme) {
    const rest = target.slice(scheme[0].length);
    const slash = rest.search(/[/?]/);
    target = slash < 0 ? '/' : rest.slice(slash);
    if (target.startsWith('?')) target = '/' + target;
  }
  if (target === '*') return { path: '*', query: undefined };
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  return { path: path === '' ? '/' : path, query: q < 0 ? undefined : target.slice(q + 1) };
}

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
/** Characters left as they are in a path segment (RFC 3986 pchar minus '%', plus '/'). */
const PATH_SAFE = /[A-Za-z0-9\-._~!$&'()*+,;=:@/]/;
/** In a query component '?' is also allowed; '&' and '=' are kept as structure. */
const QUERY_SAFE = /[A-Za-z0-9\-._~!$'()*+,;:@/?&=]/;
const ALL_PATH_SAFE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
const ALL_QUERY_SAFE = /^[A-Za-z0-9\-._~!$'()*+,;:@/?&=]*$/;

/**
 * Percent-encoding normalisation (RFC 3986 §6.2.2.1, §6.2.2.2): hex digits upper-case, encoded
 * unreserved characters decoded, and characters that may not appear raw encoded as UTF-8.
 * A `%` not followed by two hex digits is encoded as `%25`.
 */
function normalisePercent(s: string, safe: RegExp): string {
  // Fast path (every request computes a key): nothing to normalise.
  if ((safe === PATH_SAFE ? ALL_PATH_SAFE : ALL_QUERY_SAFE).test(s)) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '%') {
      const hex = s.slice(i + 1, i + 3);
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        const ch = String.fromCharCode(parseInt(hex, 16));
        out += UNRESERVED.test(ch) ? ch : '%' + hex.toUpperCase();
        i += 2;
      } else out += '%25';
    } else if (safe.test(c)) out += c;
    else {
      const cp = s.codePointAt(i)!;
      const chars = String.fromCodePoint(cp);
      i += chars.length - 1;
      out += encodeURIComponent(chars).replace(/%[0-9a-f]{2}/g, (h) => h.toUpperCase());
    }
  }
  return out;
}

/** RFC 3986 §5.2.4 remove_dot_segments, on an already percent-normalised absolute path. */
function removeDotSegments(path: string): string {
  if (!path.includes('/.')) return path.startsWith('/') ? path : '/' + path; // no dot segment
  const input = path.split('/');
  const out: string[] = [];
  for (let i = 0; i < input.length; i++) {
    const seg = input[i]!;
    const last = i === input.length - 1;
    if (seg === '.' || seg === '..') {
      if (seg === '..' && out.length > 1) out.pop();
      if (last) out.push(''); // `/a/..` -> `/`, keep the trailing slash
    } else out.push(seg);
  }
  const joined = out.join('/');
  return joined.startsWith('/') ? joined : '/' + joined;
}

/** Normalise a raw path: percent-encoding case and unreserved decoding, then dot segments. */
export function normalisePath(rawPath: string): string {
  if (rawPath === '*') return '*';
  const p = normalisePercent(rawPath.startsWith('/') ? rawPath : '/' + rawPath, PATH_SAFE);
  return removeDotSegments(p);
}

/**
 * A dot segment in disguise: a segment that is `.` or `..` once a path parameter is cut off
 * (`..;/`, `.;x/`: Tomcat and Jetty resolve them) or once an encoded slash or backslash splits
 * it (`..%2F`, `..%5C`, `..\\`: origins that decode before routing, nginx or IIS, resolve
 * them). The gateway keeps those as opaque text, so the route and key it gives the target name
 * another resource than the one the origin serves: `/static/..;/account` was stored under the
 * static route's one-day floor (attacker trial). Such a target is refused (400), as Apache
 * refuses encoded slashes by default.
 */
export function hasDisguisedDotSegment(rawTarget: string): boolean {
  if (!DISGUISE.test(rawTarget)) return false; // every ordinary target stops here
  const { path } = parseUrlPath(rawTarget);
  for (const segment of path.split('/')) {
    if (!DISGUISE.test(segment)) continue;
    const plain = segment.replace(/%2e/gi, '.');
    for (const part of plain.split(SPLITS)) {
      const name = part.split(';')[0];
      if (name === '.' || name === '..') return true;
    }
  }
  return false;
}
const DISGUISE = /[;\\]|%(?:2f|5c)/i;
const SPLITS = /\\|%2f|%5c/i;

/** Whether the key template keeps query parameter `name`, so that a fill sends it to the origin. */
export function keyKeepsParam(name: string, key: CacheKeyConfig): boolean {
  if (key.query === 'none' || key.dropTracking.some((p) => matchesName(name, p))) return false;
  const listed = key.params.some((p) => matchesName(name, p));
  return key.query === 'keep' ? listed : key.query === 'drop' ? !listed : true;
}

/** `name` matches `pattern` exactly, or by prefix when the pattern ends with `*`. */
function matchesName(name: string, pattern: string): boolean {
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

function decodeName(encoded: string): string {
  try {
    return decodeURIComponent(encoded.replace(/\+/g, ' '));
  } catch {
    return encoded;
  }
}

/**
 * Normalise a raw query for the key: drop tracking parameters, apply the template's query mode,
 * normalise percent-encoding, and sort stably by name (values of a repeated name keep their
 * order). Returns '' when nothing is left.
 */
export function normaliseQuery(rawQuery: string | undefined, key: CacheKeyConfig): string {
  if (rawQuery === undefined || key.query === 'none') return '';
  const params: { name: string; text: string }[] = [];
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const text = normalisePercent(part, QUERY_SAFE);
    const eq = text.indexOf('=');
    const name = decodeName(eq < 0 ? text : text.slice(0, eq));
    if (!keyKeepsParam(name, key)) continue;
    params.push({ name, text });
  }
  // Array.prototype.sort is stable (ES2019): repeated names keep their relative order.
  params.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return params.map((p) => p.text).join('&');
}

/** Parse a Cookie request header (RFC 6265 §5.4): first value of each name. */
export function parseCookies(value: string | string[] | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  const lines = value === undefined ? [] : Array.isArray(value) ? value : [value];
  for (const line of lines) {
    for (const pair of line.split(';')) {
      const eq = pair.indexOf('=');
      if (eq < 0) continue;
      const name = pair.slice(0, eq).trim();
      if (name === '' || cookies.has(name)) continue;
      cookies.set(name, pair.slice(eq + 1).trim());
    }
  }
  return cookies;
}

function keyPart(tag: 'h' | 'c', entries: [string, string | undefined][]): string {
  const body = entries
    .map(([name, value]) => (value === undefined ? encodeURIComponent(name) : `${encodeURIComponent(name)}=${encodeURIComponent(value)}`))
    .join('&');
  return `${SEP}${tag}:${body}`;
}

/**
 * The authority part of a key: `scheme://host`, the host lower-cased, without a trailing dot
 * or the scheme's default port (RFC 3986 §6.2.2.1, §6.2.3). `scheme` is 'http' unless a trusted
 * proxy said otherwise (X-Forwarded-Proto): behind a TLS terminator the http and https pages
 * carry different absolute links. A missing Host is ''.
 */
export function makeAuthority(host: string | undefined, scheme: string): string {
  const sch = scheme.toLowerCase() === 'https' ? 'https' : 'http';
  let h = (host ?? '').trim().toLowerCase();
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(h);
  if (m) {
    let name = m[1]!;
    if (name.endsWith('.')) name = name.slice(0, -1);
    const port = m[2];
    const isDefault = port === undefined || port === '' || (sch === 'http' && port === '80') || (sch === 'https' && port === '443');
    h = isDefault ? name : `${name}:${port}`;
  }
  return `${sch}://${h}`;
}

/** The host as the key holds it (see makeAuthority): what a shared fill sends as Host. */
export function normaliseHost(host: string, scheme: string): string {
  const authority = makeAuthority(host, scheme);
  return authority.slice(authority.indexOf('://') + 3);
}

/**
 * The request target once normalised, used alike for route matching, the cache key and what is
 * sent to the origin: path percent-normalised and dot segments removed (`/static/../index` is
 * `/index` everywhere), fragment dropped, absolute-form reduced to origin-form, query as sent.
 */
export function normaliseTarget(url: string): { path: string; url: string } {
  const { path, query } = parseUrlPath(url);
  const p = normalisePath(path);
  return { path: p, url: query === undefined ? p : `${p}?${query}` };
}

/**
 * The target a cache fill asks the origin for: the key's own path and query (tracking
 * parameters dropped, the template's query mode applied, parameters sorted), so the origin
 * answers exactly what the key names. A `;` is part of a value here as everywhere: not a
 * separator in the key, and sent on as it came.
 */
export function makeFillTarget(url: string, key: CacheKeyConfig): string {
  const { path, query } = parseUrlPath(url);
  const q = normaliseQuery(query, key);
  return `${normalisePath(path)}${q === '' ? '' : '?' + q}`;
}

/** The path-and-query part of a key: `${site}\0${path}[?${query}]`, ending before the authority. */
export function makePathKey(site: string, url: string, key: CacheKeyConfig): string {
  const { path, query } = parseUrlPath(url);
  const q = normaliseQuery(query, key);
  return `${site}${SEP}${normalisePath(path)}${q === '' ? '' : '?' + q}`;
}

/**
 * The prefix every key for this site and URL starts with, whatever its authority and header or
 * cookie parts: purge by URL for every host (or `authority` for one).
 */
export function keyUrlPrefixFor(site: string, url: string, key: CacheKeyConfig, authority?: string): string {
  return `${makePathKey(site, url, key)}${SEP}${authority === undefined ? '' : `H:${authority}`}`;
}

/**
 * Purge selectors for every key of this site and URL (every Vary variant and key-template
 * part) under one authority, or under every authority when none is given. The authority is
 * not terminated in a key (`H:http://b` is a string prefix of `H:http://blog.example.com`), so
 * one authority's keys are its key exactly, or that key followed by a key-template part: a
 * PURGE with `Host: b` cleared blog.example.com's and b:8080's copies too, and one with an
 * empty Host every host's (attacker trial).
 */
export function keyUrlSelectorsFor(site: string, url: string, key: CacheKeyConfig, authority?: string): KeySelector[] {
  const prefix = keyUrlPrefixFor(site, url, key, authority);
  if (authority === undefined) return [{ kind: 'prefix', prefix }];
  return [
    { kind: 'key', key: prefix },
    { kind: 'prefix', prefix: prefix + SEP },
  ];
}

/** A purge selector (stores/cache-store.ts PurgeSelector) by key or key prefix, declared here so the store may read keys. */
export type KeySelector = { kind: 'key'; key: string } | { kind: 'prefix'; prefix: string };

/** The primary cache key for a request (layout in the module comment). */
export function makeCacheKey(input: CacheKeyInput): string {
  let key = `${makePathKey(input.site, input.url, input.key)}${SEP}H:${input.authority}`;
  if (input.key.headers.length > 0) {
    const names = [...new Set(input.key.headers.map((h) => h.toLowerCase()))].sort();
    key += keyPart(
      'h',
      names.map((n) => [n, normaliseWhitespace(joinHeader(fieldOf(input.headers, n)))]),
    );
  }
  if (input.key.cookies.length > 0) {
    const jar = parseCookies(input.headers['cookie']);
    const names = [...new Set(input.key.cookies)].sort();
    key += keyPart(
      'c',
      names.map((n) => [n, jar.get(n)]),
    );
  }
  return key;
}

/**
 * The string every key of `site` under `pathPrefix` starts with, for purge by prefix.
 * The prefix is percent-normalised like a path, but dot segments are left alone and a trailing
 * slash is kept.
 */
export function keyPrefixFor(site: string, pathPrefix: string): string {
  const p = normalisePercent(pathPrefix.startsWith('/') ? pathPrefix : '/' + pathPrefix, PATH_SAFE);
  return `${site}${SEP}${p}`;
}

/**
 * The authority part of a key (`http://blog.example.com`, as makeAuthority makes it), or
 * undefined for a key without one. The path before it never holds a NUL (percent-encoded).
 */
/** The path and query a key was made for (makePathKey's part), or undefined for a key of another shape. */
export function targetOfKey(key: string): { path: string; query: string | undefined } | undefined {
  const start = key.indexOf(SEP);
  if (start < 0) return undefined;
  const end = key.indexOf(SEP, start + 1);
  const target = end < 0 ? key.slice(start + 1) : key.slice(start + 1, end);
  if (!target.startsWith('/')) return undefined;
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: undefined } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

export function authorityOfKey(key: string): string | undefined {
  const at = key.indexOf(`${SEP}H:`);
  if (at < 0) return undefined;
  const end = key.indexOf(SEP, at + 3);
  return end < 0 ? key.slice(at + 3) : key.slice(at + 3, end);
}

/** The site part of a key (everything before the first NUL). */
export function siteOfKey(key: string): string {
  const i = key.indexOf(SEP);
  return i < 0 ? key : key.slice(0, i);
}

/**
 * Parse Vary (RFC 9111 §4.1): lowercase field names, deduplicated and sorted; `'*'` when any
 * member is `*` (such a response never matches a later request and is not stored).
 */
export function parseVary(value: string | string[] | undefined): string[] | '*' {
  const text = joinHeader(value);
  if (text === undefined) return [];
  const names = new Set<string>();
  for (const member of text.split(',')) {
    const name = member.trim().toLowerCase();
    if (name === '') continue;
    if (name === '*') return '*';
    names.add(name);
  }
  return [...names].sort();
}

function normaliseWhitespace(value: string | undefined): string | undefined {
  return value === undefined ? undefined : value.trim().replace(/[ \t]+/g, ' ');
}

/**
 * Request headers whose values are case-insensitive comma lists of weighted alternatives
 * (RFC 9110 §12.5): their members are lowercased and ordered by weight, highest first, keeping
 * the client's order among equal weights. `en-US, fr;q=0.5` and `fr;q=0.5, en-us` are one
 * variant; `fr, en` and `en, fr` are two, since negotiators (Express, `negotiator`) break ties
 * by order and the fill sends the leader's order. Other headers (Cookie, Authorization, custom
 * ones) only have whitespace normalised: their case and order may matter.
 */
const NEGOTIATION_HEADERS = new Set(['accept', 'accept-charset', 'accept-language']);

/**
 * The codings of the variant key and of what a fill asks the origin for (RFC 9110 §12.5.3): the
 * acceptable subset of br and gzip (`br, gzip`, `br`, `gzip`), else `identity`. A coding is
 * acceptable when listed with q > 0, or, when not listed, when `*` is listed with q > 0;
 * `x-gzip` is gzip; a missing header is `identity`. Every client in one value accepts
 * every coding it names, so a gzip-only origin's answer to `br, gzip` reaches no client that
 * refused gzip, and browsers (which accept both) still get the origin's gzip when crowdgate
 * does not compress that answer itself.
 */
export function acceptEncodingVariant(value: string | string[] | undefined): 'br, gzip' | 'br' | 'gzip' | 'identity' {
  const set = acceptableCodings(value);
  return set.br ? (set.gzip ? 'br, gzip' : 'br') : set.gzip ? 'gzip' : 'identity';
}

function acceptableCodings(value: string | string[] | undefined): { br: boolean; gzip: boolean } {
  const text = joinHeader(value);
  if (text === undefined) return { br: false, gzip: false };
  const q = new Map<string, number>();
  for (const member of text.split(',')) {
    const [coding, ...params] = member.split(';').map((s) => s.trim().toLowerCase());
    if (!coding) continue;
    let weight = 1;
    for (const p of params) {
      const m = /^q\s*=\s*([0-9.]+)$/.exec(p);
      if (m) weight = Number(m[1]);
    }
    const name = coding === 'x-gzip' ? 'gzip' : coding;
    if (!q.has(name)) q.set(name, Number.isFinite(weight) ? weight : 0);
  }
  const acceptable = (c: string) => {
    const w = q.get(c) ?? q.get('*');
    return w !== undefined && w > 0;
  };
  return { br: acceptable('br'), gzip: acceptable('gzip') };
}

/** Normalise one request header value for the variant key. */
export function normaliseVaryValue(name: string, value: string | undefined): string | undefined {
  if (name === 'accept-encoding') return acceptEncodingVariant(value);
  const v = normaliseWhitespace(value);
  if (v === undefined || !NEGOTIATION_HEADERS.has(name)) return v;
  const members = v
    .toLowerCase()
    .split(',')
    .map((s) => s.trim().replace(/\s*;\s*/g, ';'))
    .filter((s) => s !== '');
  // Array.prototype.sort is stable: equal weights keep the client's order.
  return members
    .map((m) => ({ m, q: memberWeight(m) }))
    .sort((a, b) => b.q - a.q)
    .map((x) => x.m)
    .join(',');
}

/** The q weight of one negotiation member (`fr;q=0.5` is 0.5), 1 when absent or unreadable. */
function memberWeight(member: string): number {
  const m = /;q=([0-9.]+)/.exec(member);
  if (!m) return 1;
  const q = Number(m[1]);
  return Number.isFinite(q) ? q : 1;
}

/**
 * The secondary key (RFC 9111 §4.1): `name=value` for each name in `vary` (already lowercase and
 * sorted, see parseVary), joined with `&`; a missing header appears as its bare name. '' when
 * `vary` is empty.
 */
export function makeVariantKey(vary: readonly string[], headers: HeaderMap): string {
  if (vary.length === 0) return '';
  return vary
    .map((name) => {
      const v = normaliseVaryValue(name, joinHeader(fieldOf(headers, name)));
      return v === undefined ? encodeURIComponent(name) : `${encodeURIComponent(name)}=${encodeURIComponent(v)}`;
    })
    .join('&');
}

/**
 * What one collapsed fill is for: a primary cache key and, for a resource whose stored copy
 * varies (Vary), one variant of it. `id` names it in the in-flight table and in Redis (lock,
 * "filled" notice); it is opaque: read `primary` and `variant`, never decode `id`.
 */
export interface CollapseKey {
  readonly primary: string;
  readonly variant?: string;
  readonly id: string;
}

export function makeCollapseKey(primary: string, variant?: string): CollapseKey {
  return variant === undefined ? { primary, id: primary } : { primary, variant, id: `${primary}\u0001${variant}` };
}
