/**
 * The request path's shared vocabulary: what it needs from the gateway (RequestDeps), one
 * request's context (Ctx), one cache lookup (Lookup), a fill's shared result (FillResult), and
 * the small pure helpers every step uses (variant selection, the collapse key, the key's
 * authority). Types and pure functions only: no I/O, no answers.
 */
import type { Fence, PurgeFence } from '../cache/purge-fence.js';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { GatewayConfig } from '../config/schema.js';
import { isSharedByOrigin, type CacheEntry } from '../cache/entry.js';
import { makeAuthority, makeCollapseKey, makeVariantKey, type CollapseKey } from '../cache/cache-key.js';
import type { CrossInstanceCollapse } from '../collapse/cross-instance.js';
import { parseCacheControl } from '../cache/cache-control.js';
import type { EntryEvaluation, PolicyOptions, RequestFacts } from '../cache/policy.js';
import type { CacheStore, PurgeMode, PurgeSelector } from '../cache/stores/cache-store.js';
import type { Inflight } from '../collapse/inflight.js';
import type { ErrorCode } from '../errors.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { OriginFetcher } from '../origin/fetch.js';
import type { BodySpool } from '../origin/request-body.js';
import type { Forwarder } from '../origin/forward.js';
import type { Upstream } from '../origin/upstream.js';
import type { CacheState, ShedReason, StaleReason } from '../outcome.js';
import type { Runtime, SiteRuntime } from '../runtime.js';
import type { TrustedProxies } from './client-address.js';
import type { CompiledRoute } from './site-router.js';
import type { HitMemo } from './hit-memo.js';
import type { HotKeys } from '../admin/hot-keys.js';
import type { CompressionBudget } from '../cache/content-coding.js';

/** What the request path needs from the gateway (gateway.ts implements it). */
export interface RequestDeps {
  readonly clock: Clock;
  runtime(): Runtime;
  trustedProxies(): TrustedProxies;
  readonly store: CacheStore;
  readonly inflight: Inflight<FillResult>;
  readonly fetcher: OriginFetcher;
  readonly forwarder: Forwarder;
  /** Request bodies read whole before they are forwarded (origin/request-body.ts). */
  readonly bodies: BodySpool;
  readonly upstream: Upstream;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The pressure gate's verdicts, the rate limits and Retry-After (admission/admission.ts). */
  readonly admission: RequestAdmission;
  isDraining(): boolean;
  /** Hot-key accounting for the status page. */
  noteKey?(site: string, path: string, state: CacheState): void;
  /** The same table, for the memo fast path's rows held across hits (noteKey stays the slow path's). */
  readonly hotKeys?: HotKeys;
  /** Collapsing across gateway instances (Redis), when configured. */
  readonly crossInstance?: CrossInstanceCollapse;
  /** Purges here and, with Redis, on every instance. */
  /** `except`: the fill making this purge, whose own store it does not cover (cache/purge-fence.ts). */
  purge(selectors: readonly PurgeSelector[], mode: PurgeMode, except?: Fence): Promise<{ purged: number }>;
  /** The fills in flight, which every purge also covers (cache/purge-fence.ts); without it a fill stores what it got. */
  readonly purgeFence?: PurgeFence;
  /** Once per request, when its response is finished or cut (in-flight accounting for drain). */
  requestDone?(): void;
  /** What the redirect to https needs to know (tls/tls-edge.ts); without it, nothing is redirected. */
  readonly tls?: HttpsRedirectFacts;
  /** Routing remembered for plain requests (hit-memo.ts); without it every request goes the slow way. */
  readonly hitMemo?: HitMemo;
  /** The fill-time compression budget (content-coding.ts); without it every fill compresses. */
  readonly compressionBudget?: CompressionBudget;
}

/** What the request path asks of admission (admission/admission.ts implements it). */
export interface RequestAdmission {
  /** The pressure gate is over any threshold: answer from what is stored first. */
  isOverloaded(): boolean;
  /** The pressure gate's hard level (event-loop delay or heap): also shed what the store cannot answer. */
  isShedding(): boolean;
  /** May a request the cache cannot answer be forwarded now (the gate's allowance while it sheds)? Its release once answered, or undefined: shed it. */
  admitForward(): (() => void) | undefined;
  /** Takes a token for this client from the route's and the site's limiters; returns Retry-After seconds when refused. */
  takeRateLimit(site: string, route: string, clientKey: (header?: string) => string): number | undefined;
  /** True when a rate limit applies to this site and route; the memo is only written when this says false. */
  rateLimitApplies?(site: string, route: string): boolean;
  retryAfterSeconds(site: string): number;
}

/** What the redirect to https asks of the HTTPS edge (tls/tls-edge.ts implements it). */
export interface HttpsRedirectFacts {
  /** True when a certificate for this site names `host` and is not ACME's temporary self-signed one (a redirect needs one). */
  hasCertificate(site: string, host: string): boolean;
  /** The port written in redirects to https; undefined without an HTTPS listener. */
  redirectPort(config: GatewayConfig): number | undefined;
}

export type { CrossInstanceCollapse } from '../collapse/cross-instance.js';

/** The outcome of one collapsed origin fetch, shared with its waiters. */
export type FillResult =
  | {
      kind: 'entry';
      entry: CacheEntry;
      state: 'miss' | 'expired' | 'revalidated';
      stored: boolean;
      fwdStatus: number;
      /** Names the copy varies on only because its answer echoed them (cache/reflection.ts). */
      echoed?: readonly string[];
    }
  | {
      kind: 'uncacheable';
      fwdStatus: number;
      status: number;
      headers: OutgoingHttpHeaders;
      body: Buffer;
      reason: string;
      /** Only this answer was not storable (it was its leader's own): no hit-for-pass. */
      once?: true;
      /** A 404 or 410 its leader's headers may have drawn: the origin, asked without them, did not say gone (fill.ts). */
      drawn?: true;
    }
  | { kind: 'too_large' }
  | { kind: 'origin_error'; fwdStatus: number; status: number; headers: OutgoingHttpHeaders; body: Buffer }
  | {
      kind: 'failed';
      code: ErrorCode;
      staleReason: StaleReason;
      shedReason?: ShedReason;
      detail?: string;
      /** Given up while waiting for a permit: its client left and nobody else waited (fill.ts). */
      abandoned?: true;
      /**
       * Failed on its leader's own request, not on the origin: a header the HTTP client would
       * not send, or a gateway bug the request met (an exception). Its waiters fill once more
       * (fill.ts).
       */
      requestCaused?: true;
    };

export interface Ctx {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly deps: RequestDeps;
  readonly rt: Runtime;
  readonly requestId: string;
  readonly startedAt: number;
  readonly method: string;
  /** The target as received (the hit memo is keyed by it). */
  readonly rawUrl: string;
  /** The normalised target (normaliseTarget): routing, the key and the origin all see this one. */
  readonly url: string;
  readonly path: string;
  readonly clientAddress: string;
  readonly peerAddress: string;
  readonly peerTrusted: boolean;
  /** The listener's own scheme: 'https' when the request arrived over TLS (isSecure()). */
  readonly scheme: 'http' | 'https';
  site?: SiteRuntime;
  route?: CompiledRoute;
  priority: number;
  state: CacheState | '-';
  collapsed: boolean;
  staleReason?: StaleReason;
  shedReason?: ShedReason;
  errorCode?: ErrorCode;
  /** The origin member this request's last origin attempt went to, and how many it made (access log). */
  origin?: string;
  originAttempts?: number;
  /** Cache-Status detail of a pass that says why (default `pass`). */
  passDetail?: string;
  /** What the error page's detail says (fail()): in the access log; on the page for 4xx, or a client on this machine. */
  errorDetail?: string;
  /**
   * The id a cache fill led by this request sent the origin, when it is not `requestId` (the
   * client chose that one; a shared fill sends one the gateway made): in the access log.
   */
  originRequestId?: string;
  /** For a collapsed request: when the fill it waited on finished (the wake-up moment). */
  wokenAt?: number;
  /**
   * When a buffered answer (entry, fill result, error page) was handed to the socket in full.
   * Later than this, 'close' also waits for every other response written in the same tick.
   */
  answeredAt?: number;
  /** Time spent in origin fetches made for this request (ms). */
  upstreamMs?: number;
  /** The Host, when this request is plain and may be memoised (hit-memo.ts). */
  readonly memoHost?: string;
  /** The record the fast path already looked up for memo.key (one lookup, one store event). */
  readonly peeked?: { readonly key: string; readonly variants: readonly CacheEntry[] };
}

export interface Lookup {
  key: string;
  variants: readonly CacheEntry[];
  entry: CacheEntry | undefined;
  evaluation: EntryEvaluation | undefined;
  policy: PolicyOptions;
  facts: RequestFacts;
  /** The client's headers as a fill sends them, and so as Vary sees them (makeFillVisibleHeaders). */
  variantHeaders: IncomingHttpHeaders;
  canStore: boolean;
  /**
   * A fragment request (sites[].bypassHeaders) that goes through the cache: the names its fill's
   * answer is stored varying on, whatever its own Vary says (its fragment headers and every name
   * a stored copy of the key varies on; handle-request.ts fragmentVariedOn).
   */
  fragment?: readonly string[];
}

/**
 * The access log's `origin` and `originAttempts`: which member answered, and how many were
 * asked. `retry`: sent once more because the attempt before failed (crowdgate_origin_retries_total);
 * not a request's second origin request of another kind (its own after a shared fill made
 * without its cookies: 316 "retries" in a clean run of a Django site; new-operator trial).
 */
export function noteAttempt(ctx: Ctx, member: { readonly name: string }, retry: boolean): void {
  ctx.origin = member.name;
  ctx.originAttempts = (ctx.originAttempts ?? 0) + 1;
  if (retry) ctx.deps.metrics.get('originRetries').inc({ site: ctx.site?.name ?? '-' });
}

export function isOnlyIfCached(req: IncomingMessage): boolean {
  return req.headers['cache-control'] !== undefined && parseCacheControl(req.headers['cache-control']).has('only-if-cached');
}

/**
 * The stored variant this request selects (RFC 9111 §4.1), the most recent when several match.
 * `asks`: names of headers the request carries that say who asks and nothing keys
 * (identityFillInputs); a copy that varies on none of them answers it only if the origin
 * gave it for everyone (isSharedByOrigin).
 */
export function selectVariant(variants: readonly CacheEntry[], headers: IncomingHttpHeaders, asks: readonly string[] = [], fragment?: readonly string[]): CacheEntry | undefined {
  let best: CacheEntry | undefined;
  for (const v of variants) {
    if (makeVariantKey(v.vary, headers) !== v.variantKey) continue;
    // A fragment request's answer is only a copy that varies on its fragment headers.
    if (fragment !== undefined && !variesOnAll(v, fragment)) continue;
    if (isOtherAskersCopy(v, asks)) continue;
    if (!best || v.responseTime > best.responseTime) best = v;
  }
  return best;
}

/**
 * A copy that is not the page of a request carrying `asks` (headers that say who asks and
 * nothing keys, identityFillInputs): it varies on none of them, and the origin did not give it
 * for everyone (isSharedByOrigin). A stored one is not selected (selectVariant); a fill's answer
 * is not handed to such a waiter (fill.ts).
 */
export function isOtherAskersCopy(entry: CacheEntry, asks: readonly string[]): boolean {
  return asks.length > 0 && !variesOnAll(entry, asks) && !isSharedByOrigin(entry);
}

/** The copy varies on every one of these (lower-case) header names. */
export function variesOnAll(entry: { readonly vary: readonly string[] }, names: readonly string[]): boolean {
  return names.every((name) => entry.vary.includes(name));
}

/** One origin fetch per key and Vary variant: the variant is known once any variant is stored. */
export function collapseKeyOf(lookup: Lookup): CollapseKey {
  // The origin's own Vary, as a stored answer below 400 has it: an error kept for requests like
  // the one that got it varies on every header (fill.ts narrowVariantNames), and taken as the
  // key's Vary it gave each browser a fill of its own (review).
  // A fragment request's on the names its answer is stored varying on (the fragment headers
  // included): never the plain page's fill, even when no stored copy below 400 tells the key's
  // Vary (review: an htmx request collapsed on a plain request's fill got the page).
  const known = lookup.entry ?? lookup.variants.find((v) => v.status < 400);
  const vary = lookup.fragment !== undefined ? [...lookup.fragment].sort() : known?.vary;
  if (!vary || vary.length === 0) return makeCollapseKey(lookup.key);
  return makeCollapseKey(lookup.key, makeVariantKey(vary, lookup.variantHeaders));
}

/**
 * This request's path and its directory (site, scheme and host, then the path without query,
 * and the path up to its last `/`, a trailing one left out): Inflight.markPathUncacheable's
 * keys. The directory stands for a search whose terms are in the path (`/search/term`,
 * `/search/term/`); the root is no such directory (review: one `/search?q=` answered
 * `private` marked every top-level page, and a crowd with cookies on the home page just purged
 * went to the origin one by one).
 */
export function pathKeysOf(ctx: Ctx): string[] {
  const base = `${ctx.site!.name}\n${authorityOf(ctx)}\n`;
  const path = ctx.path;
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  const directory = trimmed.slice(0, trimmed.lastIndexOf('/') + 1);
  return directory.length > 1 ? [base + path, base + directory] : [base + path];
}

/**
 * The scheme and host the origin will see for this request, for the cache key: the Host (or a
 * trusted proxy's X-Forwarded-Host) and the scheme, as setForwardedHeaders() passes them on.
 */
export function authorityOf(ctx: Ctx): string {
  return makeAuthority(hostOf(ctx), schemeOf(ctx));
}

/**
 * The host (and port) the client asked for: Host, or a trusted proxy's X-Forwarded-Host when
 * it is a host[:port] (a name, an IPv4 address or an IP literal: anything else is ignored, as
 * it would be sent as a fill's Host).
 */
export function hostOf(ctx: Pick<Ctx, 'req' | 'peerTrusted'>): string | undefined {
  const h = ctx.req.headers;
  const forwardedHost = ctx.peerTrusted ? firstToken(h['x-forwarded-host']) : undefined;
  return forwardedHost !== undefined && HOST_AND_PORT.test(forwardedHost) ? forwardedHost : h.host;
}

/** A host name (a trailing dot allowed), an IPv4 address or an IP literal, with an optional port. */
export const HOST_AND_PORT = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/**
 * The scheme the client used: the listener's own when it is TLS ('https', whatever a header
 * says), else a trusted proxy's X-Forwarded-Proto (it terminated TLS in front), else 'http'.
 */
export function schemeOf(ctx: Pick<Ctx, 'req' | 'peerTrusted' | 'scheme'>): string {
  if (ctx.scheme === 'https') return 'https';
  return (ctx.peerTrusted ? firstToken(ctx.req.headers['x-forwarded-proto']) : undefined) ?? 'http';
}

/** True when the request arrived on a TLS connection (HTTP/1.1 over TLS or HTTP/2). */
export function isSecure(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean } | null)?.encrypted === true;
}

function firstToken(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  const first = s?.split(',')[0]?.trim();
  return first ? first : undefined;
}
