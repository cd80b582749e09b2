/**
 * The hit memo: routing decisions remembered per plain request, so a cache hit skips them.
 *
 * For a *plain* request — GET or HEAD, an origin-form target, and no header field outside
 * `PLAIN_FIELDS` — every decision the request path makes before the cache lookup is a function
 * of (config generation, method, Host, target) alone, but for one the fast path still makes:
 *   - parse checks: no Content-Length or Transfer-Encoding (the header count is still checked);
 *   - site and route: Host, method and target (a route may match the query);
 *   - rate limit: the memo is only written where no limit applies;
 *   - eligibility: no Authorization, Cache-Control or Pragma to change it; a Cookie can (a
 *     bypass cookie), so the fast path checks the site's bypass cookies whenever one is sent;
 *   - cache key: only where the route's key template reads no header or cookie;
 *   - Vary's request headers: the request's own, without Cookie (a fill sends no cookie on a
 *     route whose key reads none, so Vary: Cookie selects as for no cookie).
 * The slow path writes an entry after making those decisions; the fast path (handle-request.ts
 * `answerMemoHit`) reads it and still does everything that depends on the moment or on the
 * request: the store lookup, Vary selection, freshness, Age, Cache-Status, metrics. Anything
 * that is not a plain fresh hit goes the slow path, which decides from scratch.
 *
 * Owns the memo and the plain-request test; it decides nothing about caching itself.
 */
import type { IncomingMessage } from 'node:http';
import type { HotKeyRow } from '../admin/hot-keys.js';
import type { CacheEntry } from '../cache/entry.js';
import type { RequestRow } from '../metrics/gateway-metrics.js';
import type { Runtime, SiteRuntime } from '../runtime.js';
import type { CompiledRoute } from './site-router.js';

/**
 * Request fields no decision before the lookup reads, and Cookie, which the fast path checks
 * itself (module comment). Vary may still name them: the fast path selects the variant with the
 * request's own headers, as the slow path does. Anything else —
 * Authorization, Cache-Control, Pragma, conditionals, Range, Expect, X-Request-Id,
 * X-Forwarded-For, Content-Length, Transfer-Encoding, priority or rate-limit key headers —
 * sends the request the slow way.
 */
export const PLAIN_FIELDS: ReadonlySet<string> = new Set([
  'host',
  'user-agent',
  'accept',
  'accept-encoding',
  'accept-language',
  'connection',
  'keep-alive',
  'referer',
  'dnt',
  'upgrade-insecure-requests',
  'sec-fetch-site',
  'sec-fetch-mode',
  'sec-fetch-user',
  'sec-fetch-dest',
  'sec-ch-ua',
  'sec-ch-ua-mobile',
  'sec-ch-ua-platform',
  'cookie',
]);

/**
 * The request asks for server-sent events (`Accept: text/event-stream`, what every EventSource
 * sends): it bypasses the cache. A fill of an endless stream is never stored, but it was asked
 * for first and dropped, and the request then asked the origin again: every event-stream client
 * cost two origin connections, and an event the origin wrote on the first was lost
 * (failure-day trial).
 */
export function isEventStreamRequest(accept: string | undefined): boolean {
  return accept !== undefined && accept.length >= 17 && EVENT_STREAM.test(accept);
}

/** (A regular expression: no lower-cased copy of every browser's Accept on the hit path.) */
const EVENT_STREAM = /text\/event-stream/i;

/** Host plus target longer than this is never memoised (bounds the memo's memory). */
export const MAX_MEMO_TARGET = 1024;

/** What the slow path decided for one (generation, method, Host, target). */
export interface MemoRoute {
  readonly rt: Runtime;
  readonly site: SiteRuntime;
  readonly route: CompiledRoute;
  readonly key: string;
  /** The normalised target, query included: what the hot-keys table counts. */
  readonly path: string;
  /** What the fast path keeps between hits on this target (newHold() makes an empty one). */
  readonly hold: MemoHold;
  /**
   * The site's credential and bypass headers (sites[].credentialHeaders, bypassHeaders) that are
   * plain fields: a request carrying one goes the slow way, to bypass there (attacker trial: a
   * `Referer` made a credential header was answered from the memo). Usually empty.
   */
  readonly plainBypass: readonly string[];
}

/** The site's credential and bypass headers among the plain fields (MemoRoute.plainBypass). */
export function plainBypassOf(site: Pick<SiteRuntime, 'credentialHeaders' | 'bypassHeaders'>): readonly string[] {
  return [...site.credentialHeaders, ...site.bypassHeaders].filter((name) => PLAIN_FIELDS.has(name));
}

/**
 * Kept between fast-path hits on one target, each part checked before use:
 *   - the variants of the last store lookup, reused while the store's `version` is unchanged
 *     (nothing stored changed since) and the lookup is under `HOLD_MS` old, so the LRU still
 *     sees this key as recently used about once a second (as memcached bumps an item at most
 *     once a minute). Held weakly: a record the store evicted must not live on in the memo;
 *   - the metrics row and the hot-keys row a hit counts into, reused while `live`.
 */
export interface MemoHold {
  variants: WeakRef<readonly CacheEntry[]> | undefined;
  version: number;
  lookedUpAt: number;
  row: RequestRow | undefined;
  hot: HotKeyRow | undefined;
}

/** How long held variants stand in for a store lookup (ms). */
export const HOLD_MS = 1000;

export function newHold(): MemoHold {
  return { variants: undefined, version: NaN, lookedUpAt: -Infinity, row: undefined, hot: undefined };
}

/** True when `req` is plain (module comment): the memo may stand in for its routing. */
export function isPlainRequest(req: IncomingMessage): boolean {
  const method = req.method;
  if (method !== 'GET' && method !== 'HEAD') return false;
  const url = req.url;
  if (url === undefined || url.charCodeAt(0) !== 0x2f /* / */) return false;
  const headers = req.headers;
  for (const name in headers) if (!PLAIN_FIELDS.has(name)) return false;
  // An EventSource's request bypasses the cache on the slow path (isEventStreamRequest).
  if (isEventStreamRequest(headers.accept)) return false;
  // A second Host line is dropped by the parser: the slow path judges it (a 400 there, RFC 9112
  // §3.2; the memo answered it as the first Host's hit, attacker trial). Other fields sent twice
  // are merged alike for both paths. (HTTP/2's Host comes from :authority, not a raw line.)
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && (name === 'Host' || name === 'host' || name.toLowerCase() === 'host') && ++hosts > 1) return false;
  }
  return true;
}

/**
 * Memo entries by scheme, method, target and Host (the scheme is the listener's: an https
 * page has its own key): nested maps looked up with the strings as the parser
 * gave them (no key string built per request). Bounded: at `capacity` entries it starts over (a
 * cleared memo only costs the next requests the slow path). An entry of an older config
 * generation is never used (`rt` is compared) and is replaced when the slow path passes again.
 */
export class HitMemo {
  private readonly forGet = new Map<string, Map<string, MemoRoute>>();
  private readonly forHead = new Map<string, Map<string, MemoRoute>>();
  private readonly forGetTls = new Map<string, Map<string, MemoRoute>>();
  private readonly forHeadTls = new Map<string, Map<string, MemoRoute>>();
  private count = 0;

  constructor(private readonly capacity = 10_000) {}

  /** True when this request may be memoised at all: a Host, and Host plus target within bounds. */
  accepts(host: string | undefined, url: string): host is string {
    return host !== undefined && host.length + url.length <= MAX_MEMO_TARGET;
  }

  /** `secure`: the request arrived over TLS. */
  get(method: string, host: string, url: string, secure = false): MemoRoute | undefined {
    return this.mapFor(method, secure).get(url)?.get(host);
  }

  set(method: string, host: string, url: string, route: MemoRoute, secure = false): void {
    const byUrl = this.mapFor(method, secure);
    let byHost = byUrl.get(url);
    if (byHost === undefined || !byHost.has(host)) {
      if (this.count >= this.capacity) {
        this.clear();
        byHost = undefined;
      }
      if (byHost === undefined) byUrl.set(url, (byHost = new Map()));
      this.count++;
    }
    byHost.set(host, route);
  }

  get size(): number {
    return this.count;
  }

  private mapFor(method: string, secure: boolean): Map<string, Map<string, MemoRoute>> {
    if (secure) return method === 'HEAD' ? this.forHeadTls : this.forGetTls;
    return method === 'HEAD' ? this.forHead : this.forGet;
  }

  clear(): void {
    this.forGet.clear();
    this.forHead.clear();
    this.forGetTls.clear();
    this.forHeadTls.clear();
    this.count = 0;
  }
}
