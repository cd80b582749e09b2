/**
 * HTTP facts the gateway relies on in several places, once: which fields are hop-by-hop, what
 * a Connection header lists, and which methods are safe, idempotent or cached. Definitions
 * only (RFC 9110, RFC 9111), no policy: what the cache stores lives in cache/policy.ts, what is
 * forwarded in server/headers.ts.
 */

/**
 * Hop-by-hop fields: RFC 9110 §7.6.1's (Connection, Proxy-Connection, Keep-Alive, TE, Trailer,
 * Transfer-Encoding, Upgrade), the proxy credentials of §11.7, which concern one hop only, and
 * HTTP2-Settings (RFC 7540 §3.2.1: the h2c upgrade's, for the immediate connection; HTTP/2
 * refuses it as connection-specific, RFC 9113 §8.2.2, so a stored page that kept an origin's
 * one hung every HTTP/2 reader). Never stored (RFC 9111 §3.1) nor forwarded. Fields that
 * Connection lists are hop-by-hop too. Other Proxy-* fields (RFC 9209 Proxy-Status) are end to
 * end.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'http2-settings',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Names listed in a Connection header, lower-cased (RFC 9110 §7.6.1: they are hop-by-hop too),
 * except the fields that frame the message or name its target (NEVER_CONNECTION_OPTIONS): a
 * client's `Connection: content-length` stripped the length from a forwarded DELETE with a
 * body, and the origin read that body as a second request on the shared connection (request
 * smuggling: the next client got its answer); `Connection: host` stripped Host from a cache
 * fill, and the origin's default host answered under the site's key.
 */
export function connectionListedNames(value: string | string[] | undefined): readonly string[] {
  if (!value) return NONE_LISTED;
  // What nearly every client sends, answered without splitting (this runs for most requests).
  if (value === 'keep-alive' || value === 'Keep-Alive') return KEEP_ALIVE_LISTED;
  if (value === 'close' || value === 'Close') return CLOSE_LISTED;
  const joined = Array.isArray(value) ? value.join(',') : value;
  return joined
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0 && !NEVER_CONNECTION_OPTIONS.has(s));
}

const NONE_LISTED: readonly string[] = Object.freeze([]);
const KEEP_ALIVE_LISTED: readonly string[] = Object.freeze(['keep-alive']);
const CLOSE_LISTED: readonly string[] = Object.freeze(['close']);

/** Fields a Connection header never removes (see connectionListedNames). */
export const NEVER_CONNECTION_OPTIONS: ReadonlySet<string> = new Set(['host', 'content-length']);

/** The fixed hop-by-hop set, plus the names Connection lists (RFC 9110 §7.6.1). */
export function isHopByHop(name: string, connectionListed: ReadonlySet<string>): boolean {
  return HOP_BY_HOP.has(name) || connectionListed.has(name);
}

/**
 * Fields that set a cookie: RFC 6265's Set-Cookie and RFC 2965's obsolete Set-Cookie2, which
 * some user agents and old origins still speak. The cache treats them alike: never stored,
 * and under `setCookie: refuse` the response is not stored at all.
 */
export const SET_COOKIE_FIELDS: readonly string[] = Object.freeze(['set-cookie', 'set-cookie2']);

/** RFC 9110 §9.2.1: methods whose semantics are read-only. */
export const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/** RFC 9110 §9.2.2 idempotent methods a proxy may retry on another server (bodies aside). */
export const RETRYABLE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The methods whose responses this cache stores or answers from (RFC 9111 §3: GET; HEAD from a GET's entry). */
export const CACHED_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);

/**
 * Request fields every cache fill sends whatever `fillHeaders` says (server/fill-headers.ts):
 * Host and the fields the variant key reads (Accept*, User-Agent). config/load.ts warns at a
 * `fillHeaders.drop` entry among them.
 */
export const FILL_ALWAYS: ReadonlySet<string> = new Set(['host', 'accept', 'accept-encoding', 'accept-language', 'accept-charset', 'user-agent']);
