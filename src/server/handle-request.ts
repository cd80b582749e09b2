/**
 * THE request path. Read top to bottom, this is everything the gateway does to a request:
 *
 *   plain request, memoised route  → fresh hit answered at once (hit-memo.ts), else as below
 *   parse checks → site / route → rate limit → cache eligibility → lookup
 *     fresh                      → hit (or 304 to the client's conditional)
 *     stale, in SWR              → updating + background refresh (collapsed, limited)
 *     pressure gate over         → stale if usable, else 503 shed
 *     origin queue standing      → stale within grace + one refresh at this request's priority
 *     missing / must revalidate  → collapsed fill: one leader per key asks upstream for a
 *                                  member + permit, fetches (conditionally when it can), stores;
 *                                  waiters share the result only when it is storable
 *     any failure on the way     → stale if usable (stale-if-error / grace), else error page
 *   not eligible                 → pressure gate → limited streaming pass-through [bypass]
 *
 * Every other module answers one question for this file.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { currentAgeMsOf, staleAtOf, type CacheEntry } from '../cache/entry.js';
import { keyUrlPrefixFor, makeAuthority, makeCacheKey, makeFillTarget, makeVariantKey, normaliseTarget, parseCookies } from '../cache/cache-key.js';
import { parseCacheControl } from '../cache/cache-control.js';
import {
  HOP_BY_HOP,
  decideStorage,
  evaluateEntry,
  isCacheableRequest,
  type EntryEvaluation,
  type PolicyOptions,
  type RequestFacts,
} from '../cache/policy.js';
import { invalidationTargets, isNotModifiedForClient, makeConditionalHeaders, mergeNotModified } from '../cache/revalidation.js';
import type { CacheStore, PurgeMode, PurgeSelector } from '../cache/stores/cache-store.js';
import type { Inflight } from '../collapse/inflight.js';
import type { ErrorCode } from '../errors.js';
import { statusClassOf, type GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { FetchFailure, FetchResult, OriginFetcher } from '../origin/fetch.js';
import type { ForwardOutcome, Forwarder } from '../origin/forward.js';
import type { OriginMember } from '../origin/pool.js';
import type { AdmitResult, Upstream } from '../origin/upstream.js';
import type { CacheState, ShedReason, StaleReason } from '../outcome.js';
import type { Runtime, SiteRuntime } from '../runtime.js';
import type { TrustedProxies } from './client-address.js';
import { CLIENT_CONDITIONALS, appendVia, connectionListedNames, setForwardedHeaders, stripHopByHop } from './headers.js';
import { formatCacheStatus, sendEntry, sendError, sendHit, type CacheStatusFacts } from './respond.js';
import type { CompiledRoute } from './site-router.js';
import { HOLD_MS, isPlainRequest, newHold, type HitMemo, type MemoHold, type MemoRoute } from './hit-memo.js';
import type { HotKeys } from '../admin/hot-keys.js';

/** What the request path needs from the gateway (gateway.ts implements it). */
export interface RequestDeps {
  readonly clock: Clock;
  runtime(): Runtime;
  trustedProxies(): TrustedProxies;
  readonly store: CacheStore;
  readonly inflight: Inflight<FillResult>;
  readonly fetcher: OriginFetcher;
  readonly forwarder: Forwarder;
  readonly upstream: Upstream;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  isOverloaded(): boolean;
  /** Takes a token for this client; returns Retry-After seconds when refused. */
  takeRateLimit(site: SiteRuntime, route: CompiledRoute, clientKey: (header?: string) => string): number | undefined;
  retryAfterSeconds(site: string): number;
  isDraining(): boolean;
  /** Hot-key accounting for the status page. */
  noteKey?(site: string, path: string, state: CacheState): void;
  /** The same table, for the memo fast path's rows held across hits (noteKey stays the slow path's). */
  readonly hotKeys?: HotKeys;
  /** Collapsing across gateway instances (Redis), when configured. */
  readonly crossInstance?: CrossInstanceCollapse;
  /** Purges here and, with Redis, on every instance. */
  purge(selectors: readonly PurgeSelector[], mode: PurgeMode): Promise<{ purged: number }>;
  /** Once per request, when its response is finished or cut (in-flight accounting for drain). */
  requestDone?(): void;
  /** Routing remembered for plain requests (hit-memo.ts); without it every request goes the slow way. */
  readonly hitMemo?: HitMemo;
  /** True when a rate limit applies to this site and route; the memo is only written when this says false. */
  rateLimitApplies?(site: SiteRuntime, route: CompiledRoute): boolean;
}

/**
 * Cross-instance collapsing: a local leader asks before fetching. 'fetch': this instance holds
 * the fill (or Redis is unavailable): fetch, store, then call done() so the others wake.
 * 'filled': another instance stored it meanwhile: read the store again. 'timeout': the holder
 * took too long: fetch alone.
 */
export interface CrossInstanceCollapse {
  acquire(key: string): Promise<{ kind: 'fetch'; done(): Promise<void> } | { kind: 'filled' } | { kind: 'timeout' }>;
}

/** The outcome of one collapsed origin fetch, shared with its waiters. */
export type FillResult =
  | { kind: 'entry'; entry: CacheEntry; state: 'miss' | 'expired' | 'revalidated'; stored: boolean; fwdStatus: number }
  | { kind: 'uncacheable'; fwdStatus: number; status: number; headers: OutgoingHttpHeaders; body: Buffer; reason: string }
  | { kind: 'too_large' }
  | { kind: 'origin_error'; fwdStatus: number; status: number; headers: OutgoingHttpHeaders; body: Buffer }
  | { kind: 'failed'; code: ErrorCode; staleReason: StaleReason; shedReason?: ShedReason; detail?: string };

interface Ctx {
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
  site?: SiteRuntime;
  route?: CompiledRoute;
  priority: number;
  state: CacheState | '-';
  collapsed: boolean;
  staleReason?: StaleReason;
  shedReason?: ShedReason;
  errorCode?: ErrorCode;
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

const MAX_REQUEST_ID = 128;
/** Request ids: a random per-process prefix and a counter; unique, cheap, and sortable per process. */
const ID_PREFIX = randomUUID().slice(0, 8);
let idCounter = 0;
function nextRequestId(): string {
  return `${ID_PREFIX}-${(++idCounter).toString(36)}`;
}
const REQUEST_ID_RE = /^[A-Za-z0-9._:\-]{1,128}$/;

/**
 * One request, start to finish. A memory hit is answered synchronously (no promise on the hit
 * path); anything that waits returns a promise, settled when the answer is under way.
 */
export function handleRequest(deps: RequestDeps, req: IncomingMessage, res: ServerResponse): void | Promise<void> {
  const rt = deps.runtime(); // one config snapshot for the whole request
  let memoHost: string | undefined;
  let peeked: Ctx['peeked'];
  const hitMemo = deps.hitMemo;
  if (hitMemo !== undefined && isPlainRequest(req)) {
    const host = req.headers.host;
    if (hitMemo.accepts(host, req.url!)) {
      memoHost = host;
      const memo = hitMemo.get(req.method!, host, req.url!);
      if (memo !== undefined && memo.rt === rt) {
        const outcome = answerMemoHit(deps, rt, memo, req, res);
        if (outcome === true) return;
        if (outcome !== false) peeked = { key: memo.key, variants: outcome };
      }
    }
  }
  const incomingId = req.headers['x-request-id'];
  const requestId =
    typeof incomingId === 'string' && incomingId.length <= MAX_REQUEST_ID && REQUEST_ID_RE.test(incomingId)
      ? incomingId
      : nextRequestId();
  const ctx = makeCtx(deps, rt, req, res, requestId, deps.clock.now(), memoHost, peeked);
  let pending: void | Promise<void> = undefined;
  try {
    pending = route(ctx);
  } catch (err) {
    failUnexpected(ctx, err);
  }
  // An answer written in full right away (a memory hit, an error page) is accounted for now;
  // anything still under way when its response closes (no listener or closure per hit).
  if (!pending && res.writableEnded) return finish(ctx, true);
  res.on('close', () => finish(ctx, false));
  if (pending) return pending.catch((err: unknown) => failUnexpected(ctx, err));
}

/**
 * The fast path for a plain request whose routing the memo holds (hit-memo.ts): the store
 * lookup, Vary selection and freshness as decide() and evaluateEntry() make them for a request
 * without directives, then the same answer and accounting as a hit on the slow path. Returns
 * true when it answered, the looked-up record when it did not (the slow path reuses it), false
 * when nothing was looked up.
 */
function answerMemoHit(
  deps: RequestDeps,
  rt: Runtime,
  memo: MemoRoute,
  req: IncomingMessage,
  res: ServerResponse,
): boolean | readonly CacheEntry[] {
  if (req.rawHeaders.length / 2 > rt.config.limits.maxHeadersCount) return false;
  // A cookie is the one plain field that can decide something: a bypass cookie sends the request
  // to the origin (route() step 4), and Vary: Cookie selects with the cookies a fill would send,
  // which for a memoised route (no cookie in its key) are none.
  const cookie = req.headers.cookie;
  if (cookie !== undefined && hasBypassCookie(memo.site, cookie)) return false;
  const now = deps.clock.now();
  const store = deps.store;
  const hold = memo.hold;
  // Held variants are still stored while the version is unchanged, hence still reachable.
  let variants =
    hold.version === store.version && now >= hold.lookedUpAt && now - hold.lookedUpAt < HOLD_MS ? hold.variants?.deref() : undefined;
  const held = variants !== undefined;
  if (variants === undefined) {
    variants = store.peekHit?.(memo.key, now);
    hold.variants = variants === undefined ? undefined : new WeakRef(variants);
    hold.version = store.version ?? NaN; // read after the lookup, which may itself drop what expired
    hold.lookedUpAt = now;
    if (variants === undefined) return false;
  }
  // makeFillVisibleHeaders() for a route whose key reads no header or cookie, as far as the
  // stored variants' Vary names go: the request's own headers, cookie-less.
  const entry = selectVariant(variants, cookie === undefined ? req.headers : { ...req.headers, cookie: undefined });
  // evaluateEntry without request directives: fresh is exactly "no revalidation needed".
  if (entry === undefined || entry.noCache || !(now < staleAtOf(entry))) {
    // The slow path reuses a record just looked up; held variants are not a lookup of this request.
    return held ? false : variants;
  }
  if (held) store.noteHeldHit!();
  countHit(entry);
  const requestId = nextRequestId();
  sendHit(res, entry, req.method === 'HEAD', Math.floor(currentAgeMsOf(entry, now) / 1000), ttlSecondsOf(entry, now), requestId);
  if (rt.config.log.access) {
    // The access log wants the whole context; build it only then.
    const ctx = makeCtx(deps, rt, req, res, requestId, now);
    ctx.site = memo.site;
    ctx.route = memo.route;
    ctx.state = 'hit';
    finish(ctx, true);
    return true;
  }
  countRequest(deps, res, memo.site.name, memo.route.name, memo.path, 'hit', deps.clock.now() - now, hold);
  return true;
}

/** Seconds of freshness left (RFC 9211 ttl), negative once stale; an invalidated entry is stale. */
function ttlSecondsOf(entry: CacheEntry, now: number): number {
  const ttl = Math.floor((entry.responseTime + entry.freshnessMs - entry.initialAgeMs - now) / 1000);
  return entry.invalidatedAt !== undefined ? Math.min(ttl, -1) : ttl;
}

function makeCtx(
  deps: RequestDeps,
  rt: Runtime,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  startedAt: number,
  memoHost?: string,
  peeked?: Ctx['peeked'],
): Ctx {
  const peerAddress = req.socket.remoteAddress ?? '';
  const trusted = deps.trustedProxies();
  const rawUrl = req.url ?? '/';
  const target = normaliseTarget(rawUrl);
  return {
    req,
    res,
    deps,
    rt,
    requestId,
    startedAt,
    method: (req.method ?? 'GET').toUpperCase(),
    rawUrl,
    url: target.url,
    path: target.path,
    clientAddress: trusted.resolveClient(peerAddress, req.headers['x-forwarded-for']),
    peerAddress,
    peerTrusted: trusted.isTrusted(peerAddress),
    priority: rt.priorityNames.length - 1,
    state: '-',
    collapsed: false,
    memoHost,
    peeked,
  };
}

/** A bug on the request path: log it and answer 502 rather than leave the client hanging. */
function failUnexpected(ctx: Ctx, err: unknown): void {
  ctx.deps.logger.error({ err, requestId: ctx.requestId, url: ctx.path }, 'request failed unexpectedly');
  if (ctx.res.headersSent) {
    ctx.res.destroy();
    return;
  }
  fail(ctx, 'internal_error', 'see the gateway log');
}

function route(ctx: Ctx): void | Promise<void> {
  const { req, rt, deps } = ctx;

  // 1. Parse checks the HTTP parser leaves to us.
  if (req.headers['content-length'] !== undefined && req.headers['transfer-encoding'] !== undefined)
    return fail(ctx, 'ambiguous_length'); // RFC 9112 §6.1: never forward (request smuggling)
  if (req.rawHeaders.length / 2 > rt.config.limits.maxHeadersCount) return fail(ctx, 'headers_too_large');
  if (!ctx.rawUrl.startsWith('/') && !/^https?:\/\//i.test(ctx.rawUrl)) return fail(ctx, 'bad_request', 'unsupported request target');
  req.url = ctx.url; // pass-through sends the normalised target too (http-proxy reads req.url)
  const declaredLength = Number(req.headers['content-length'] ?? 0);
  if (!Number.isFinite(declaredLength) || declaredLength > rt.config.limits.maxBodyBytes) return fail(ctx, 'body_too_large');

  // 2. Site and route (config snapshot).
  const site = rt.router.match(req.headers.host);
  if (!site) return fail(ctx, 'no_site', `no site lists host "${String(req.headers.host ?? '').slice(0, 100)}"`);
  ctx.site = site;
  if (ctx.method === 'PURGE') return answerPurge(ctx, site);
  const routeMatch = site.compiled.matchRoute(ctx.method, ctx.path);
  ctx.route = routeMatch;
  ctx.priority = rt.priorityOf(routeMatch, ctx.method, ctx.path, req.headers);

  // 3. Per-client rate limit (off unless configured).
  const retryAfter = deps.takeRateLimit(site, routeMatch, (header) => clientKeyOf(ctx, header));
  if (retryAfter !== undefined) {
    ctx.shedReason = 'rate_limited';
    deps.metrics.get('rateLimited').inc({ site: site.name, route: routeMatch.name });
    deps.metrics.get('retryAfter').observe(retryAfter);
    return fail(ctx, 'rate_limited', undefined, retryAfter, 'shed');
  }

  // 4. Cache eligibility.
  const policy = site.policyFor(routeMatch);
  const facts: RequestFacts = { method: ctx.method, url: ctx.url, headers: req.headers };
  const eligibility = isCacheableRequest(facts, policy);
  const bypassCookie = req.headers.cookie !== undefined && hasBypassCookie(site, req.headers.cookie);
  if (!eligibility.cacheable || bypassCookie || hasCredential(site, req.headers) || ctx.method === 'OPTIONS') {
    ctx.state = 'bypass';
    if (deps.isOverloaded()) return shed(ctx, 'pressure');
    return forward(ctx, 'bypass');
  }

  // 5. Lookup: the key, then the stored variant this request selects.
  const key = makeCacheKey({ site: site.name, authority: authorityOf(ctx), url: ctx.url, headers: req.headers, key: policy.route.key });
  if (ctx.memoHost !== undefined) rememberRoute(ctx, site, routeMatch, policy, key, eligibility.canStoreResponse);
  // Memory hits are answered without a promise; anything else asks the store properly.
  const peeked = ctx.peeked?.key === key ? ctx.peeked.variants : deps.store.peekHit?.(key);
  const lookupFacts = { key, policy, facts, canStore: eligibility.canStoreResponse };
  if (peeked !== undefined) return decide(ctx, lookupFacts, peeked);
  return deps.store.get(key).then((variants) => decide(ctx, lookupFacts, variants ?? []));
}

/**
 * Writes the hit memo for a plain request (hit-memo.ts), where this request's decisions so far
 * depended on nothing but its method, Host and target: no rate limit, a key template that reads
 * no header or cookie, and a storable request (a plain request has no Cache-Control).
 */
function rememberRoute(ctx: Ctx, site: SiteRuntime, route: CompiledRoute, policy: PolicyOptions, key: string, canStore: boolean): void {
  const { deps, rt } = ctx;
  const memo = deps.hitMemo;
  if (memo === undefined || deps.rateLimitApplies?.(site, route) !== false) return;
  if (!canStore || policy.route.key.headers.length > 0 || policy.route.key.cookies.length > 0) return;
  const known = memo.get(ctx.method, ctx.memoHost!, ctx.rawUrl);
  if (known !== undefined && known.rt === rt && known.key === key) return;
  memo.set(ctx.method, ctx.memoHost!, ctx.rawUrl, { rt, site, route, key, path: ctx.path, hold: newHold() });
}

/** Steps 5 to 9, once the stored variants are known. */
function decide(
  ctx: Ctx,
  { key, policy, facts, canStore }: Pick<Lookup, 'key' | 'policy' | 'facts' | 'canStore'>,
  variants: readonly CacheEntry[],
): void | Promise<void> {
  const { deps, req } = ctx;
  const site = ctx.site!;
  const variantHeaders = makeFillVisibleHeaders(site, req.headers, policy, variants);
  const entry = selectVariant(variants, variantHeaders);
  const now = deps.clock.now();
  const evaluation = entry ? evaluateEntry(entry, facts, now, policy) : undefined;
  const lookup: Lookup = { key, variants, entry, evaluation, policy, facts, variantHeaders, canStore };

  if (entry && evaluation && !evaluation.needsRevalidation) {
    countHit(entry);
    return serveEntry(ctx, entry, evaluation, { state: 'hit' });
  }
  if (evaluation?.onlyIfCached || (!entry && isOnlyIfCached(req))) {
    return fail(ctx, 'only_if_cached'); // RFC 9111 §5.2.1.7
  }
  if (entry && evaluation && (evaluation.withinStaleWhileRevalidate || (isServableWhileUpdating(entry, evaluation) && isHot(ctx, entry)))) {
    // RFC 5861 §3: answer now from the stale entry, refresh in the background (collapsed).
    // A hot page (one a crowd is reading) is answered the same way within its grace: the page
    // that just expired must not make the crowd wait. A page read now and then is revalidated
    // while its client waits, as RFC 9111 says.
    serveEntry(ctx, entry, evaluation, { state: 'updating', staleReason: 'while_revalidate' });
    deps.metrics.get('staleServed').inc({ site: site.name, reason: 'while_revalidate' });
    startBackgroundRefresh(ctx, lookup);
    return;
  }

  // 6. The gateway itself is overloaded: answer from what is stored, keep it fresh with one
  //    collapsed background refresh per key, join a fill already under way, shed the rest. A key
  //    with nothing usable stored and no fill under way gets its one collapsed fill all the
  //    same: it turns the crowd's refusals into hits, and nothing else ends them.
  if (deps.isOverloaded()) {
    if (deps.inflight.isInflight(collapseKeyOf(lookup))) return fillAndServe(ctx, lookup, 0);
    return serveStaleOr(
      ctx,
      lookup,
      'pressure',
      () => (deps.inflight.isHitForPass(collapseKeyOf(lookup)) ? shed(ctx, 'pressure') : fillAndServe(ctx, lookup, 0)),
      () => startBackgroundRefresh(ctx, lookup),
    );
  }

  // 7. The origin is busy (no usable member has a free permit: a fill would wait its turn): a
  //    stale copy the route's grace allows answers now instead of queueing behind the crowd,
  //    and the revalidation still runs, collapsed, at this request's priority, with nobody
  //    waiting for it (nginx's use_stale updating and Varnish's grace do the same without the
  //    busy test). On an origin with room, the request waits for it as RFC 9111 says.
  if (entry && evaluation && isServableWhileUpdating(entry, evaluation) && deps.upstream.isBacklogged(site.pool)) {
    ctx.staleReason = 'backlog';
    serveEntry(ctx, entry, evaluation, { state: 'stale', staleReason: 'backlog' });
    deps.metrics.get('staleServed').inc({ site: site.name, reason: 'backlog' });
    startBackgroundRefresh(ctx, lookup, ctx.priority);
    return;
  }

  // 8. No member is usable (down, ejected, breakers open): a copy the route allows on failure
  //    answers now, and the refresh is the member's trial request (one at a time, upstream.ts),
  //    which brings the member back as soon as it answers.
  if (entry && evaluation?.withinGraceOnFailure && !evaluation.refetchDemanded && !deps.upstream.hasUsableMember(site.config, site.pool)) {
    const reason: StaleReason = site.pool.isAnyHealthy() ? 'circuit_open' : 'unreachable';
    ctx.staleReason = reason;
    serveEntry(ctx, entry, evaluation, { state: 'stale', staleReason: reason });
    deps.metrics.get('staleServed').inc({ site: site.name, reason });
    startBackgroundRefresh(ctx, lookup, ctx.priority);
    return;
  }

  // 9. The key's refresh is already under way: a stale copy the route's grace allows answers
  //    at once instead of joining the wait (nginx's use_stale updating). One request per
  //    expiry waits for the origin, never the crowd behind it; sequential clients always get
  //    the refreshed answer, as RFC 9111 wants. Not for a copy that had no freshness and no
  //    validator (never reused), nor when the client may and does demand a fresh answer.
  if (entry && evaluation && isServableWhileUpdating(entry, evaluation) && deps.inflight.isInflight(collapseKeyOf(lookup))) {
    serveEntry(ctx, entry, evaluation, { state: 'updating', staleReason: 'while_revalidate', collapsed: true });
    deps.metrics.get('staleServed').inc({ site: site.name, reason: 'while_revalidate' });
    return;
  }

  // 10. Hit-for-pass: this URL was recently uncacheable; don't queue behind a leader.
  if (deps.inflight.isHitForPass(collapseKeyOf(lookup))) {
    ctx.state = 'pass';
    return forward(ctx, 'pass', lookup);
  }

  // 11. Collapsed fill.
  return fillAndServe(ctx, lookup, 0);
}

/**
 * Hits answered per stored entry, by either path: a page's heat is its current copy's, so the
 * memo fast path and the slow path agree on it, and a refreshed copy starts cold.
 */
const entryHits = new WeakMap<CacheEntry, number>();

function countHit(entry: CacheEntry): void {
  entryHits.set(entry, (entryHits.get(entry) ?? 0) + 1);
}

/**
 * Hits after which a page is hot: a crowd is reading it. A page that answered this many
 * requests is answered stale while it refreshes in the background (within its grace), like
 * stale-while-revalidate; one read now and then (a conformance test, a quiet page) is not.
 */
export const HOT_HITS = 5;

/** How long past expiry a hot page is answered while it refreshes (the old default SWR window), ms. */
export const HOT_STALE_MS = 10_000;

/** The entry expired less than HOT_STALE_MS ago and answered HOT_HITS requests. */
function isHot(ctx: Ctx, entry: CacheEntry): boolean {
  return ctx.deps.clock.now() < staleAtOf(entry) + HOT_STALE_MS && (entryHits.get(entry) ?? 0) >= HOT_HITS;
}

/** A stale copy that may answer while its key's refresh is under way (decide(), step 9). */
function isServableWhileUpdating(entry: CacheEntry, evaluation: EntryEvaluation): boolean {
  if (evaluation.refetchDemanded || !evaluation.withinStaleIfError) return false;
  return entry.freshnessMs > 0 || entry.headers['etag'] !== undefined || entry.headers['last-modified'] !== undefined;
}

interface Lookup {
  key: string;
  variants: readonly CacheEntry[];
  entry: CacheEntry | undefined;
  evaluation: EntryEvaluation | undefined;
  policy: PolicyOptions;
  facts: RequestFacts;
  /** The client's headers as a fill sends them, and so as Vary sees them (makeFillVisibleHeaders). */
  variantHeaders: IncomingHttpHeaders;
  canStore: boolean;
}

function isOnlyIfCached(req: IncomingMessage): boolean {
  return req.headers['cache-control'] !== undefined && parseCacheControl(req.headers['cache-control']).has('only-if-cached');
}

/** The stored variant this request selects (RFC 9111 §4.1), the most recent when several match. */
function selectVariant(variants: readonly CacheEntry[], headers: IncomingHttpHeaders): CacheEntry | undefined {
  let best: CacheEntry | undefined;
  for (const v of variants) {
    if (makeVariantKey(v.vary, headers) !== v.variantKey) continue;
    if (!best || v.responseTime > best.responseTime) best = v;
  }
  return best;
}

/** One origin fetch per key and Vary variant: the variant is known once any variant is stored. */
function collapseKeyOf(lookup: Lookup): string {
  const known = lookup.entry ?? lookup.variants[0];
  if (!known || known.vary.length === 0) return lookup.key;
  return `${lookup.key}\u0001${makeVariantKey(known.vary, lookup.variantHeaders)}`;
}

async function fillAndServe(ctx: Ctx, lookup: Lookup, attempt: number): Promise<void> {
  const { deps } = ctx;
  const collapseKey = collapseKeyOf(lookup);
  const cfg = ctx.rt.config.cache.collapse;
  const joined = deps.inflight.join(collapseKey, cfg.waitDeadlineMs);

  if (joined.role === 'leader') {
    let result: FillResult;
    try {
      result = await fillAcrossInstances(ctx, lookup, collapseKey, 'fill');
    } catch (err) {
      deps.logger.error({ err, requestId: ctx.requestId }, 'cache fill failed unexpectedly');
      result = { kind: 'failed', code: 'internal_error', staleReason: 'error' };
    }
    if (result.kind === 'uncacheable' || result.kind === 'too_large') {
      deps.inflight.markHitForPass(collapseKey, ctx.rt.config.cache.collapse.hitForPassSeconds * 1000);
      deps.metrics.get('hitForPass').inc({ site: ctx.site!.name });
    }
    fillSettledAt.set(result, deps.clock.now());
    joined.settle(result);
    return serveFillResult(ctx, lookup, result, false);
  }

  ctx.collapsed = true;
  deps.metrics.get('collapsed').inc({ site: ctx.site!.name });
  const outcome = joined.role === 'waiter' ? await joined.result : 'timeout';
  // The wake-up moment is when the fill finished, not when this waiter's turn came to run.
  ctx.wokenAt = (outcome !== 'timeout' && fillSettledAt.get(outcome)) || deps.clock.now();
  if (outcome === 'timeout') {
    // Waited past the deadline (or too many waiters): stale if we can, else fetch alone.
    return serveStaleOr(ctx, lookup, 'timeout', () => {
      ctx.state = 'pass';
      return forward(ctx, 'pass', lookup);
    });
  }
  if (outcome.kind === 'entry') {
    // The leader's variant may not be ours (Vary); then fill our own variant, once.
    if (makeVariantKey(outcome.entry.vary, lookup.variantHeaders) !== outcome.entry.variantKey) {
      if (attempt >= 1) {
        ctx.state = 'pass';
        return forward(ctx, 'pass', lookup);
      }
      const variants = [outcome.entry];
      const variantHeaders = makeFillVisibleHeaders(ctx.site!, ctx.req.headers, lookup.policy, variants);
      return fillAndServe(ctx, { ...lookup, variants, variantHeaders, entry: undefined, evaluation: undefined }, attempt + 1);
    }
    return serveFillResult(ctx, lookup, outcome, true);
  }
  if (outcome.kind === 'uncacheable' || outcome.kind === 'too_large') {
    // Not shareable: every waiter asks the origin itself (through the limiter).
    ctx.state = 'pass';
    return forward(ctx, 'pass', lookup);
  }
  if (outcome.kind === 'origin_error') {
    return serveStaleOr(ctx, lookup, 'error', () => {
      ctx.state = 'pass';
      return forward(ctx, 'pass', lookup);
    });
  }
  return serveFillResult(ctx, lookup, outcome, true);
}

/** When each shared fill result was handed to its waiters (for the access log's afterWakeMs). */
const fillSettledAt = new WeakMap<FillResult, number>();

/** Serves the shared fill result to the leader or a waiter. */
function serveFillResult(ctx: Ctx, lookup: Lookup, result: FillResult, collapsed: boolean): void | Promise<void> {
  const now = ctx.deps.clock.now();
  switch (result.kind) {
    case 'entry': {
      const evaluation = evaluateEntry(result.entry, lookup.facts, now, lookup.policy);
      ctx.state = result.state;
      return serveEntry(ctx, result.entry, evaluation, {
        state: result.state,
        collapsed,
        stored: result.stored,
        fwdStatus: result.fwdStatus,
        missKind: lookup.variants.length > 0 && !lookup.entry ? 'vary-miss' : undefined,
      });
    }
    case 'uncacheable': {
      ctx.state = 'pass';
      return writeBuffered(ctx, result.status, result.headers, result.body, {
        state: 'pass',
        fwdStatus: result.fwdStatus,
        detail: `pass ${result.reason}`,
      });
    }
    case 'origin_error': {
      return serveStaleOr(ctx, lookup, 'error', () => {
        ctx.state = 'miss';
        writeBuffered(ctx, result.status, result.headers, result.body, { state: 'miss', fwdStatus: result.fwdStatus });
      });
    }
    case 'failed':
      return serveStaleOr(ctx, lookup, result.staleReason, () => {
        if (result.shedReason) return shed(ctx, result.shedReason);
        fail(ctx, result.code, result.detail);
      });
    case 'too_large':
      ctx.state = 'pass';
      void forward(ctx, 'pass', lookup);
  }
}

/**
 * One origin fetch for the cache: member + permit, conditional when a stored entry has
 * validators, store when storable. Never tied to a client: the result belongs to the cache.
 */
async function runFill(ctx: Ctx, lookup: Lookup, kind: 'fill' | 'background', priorityOverride?: number): Promise<FillResult> {
  const { deps, rt } = ctx;
  const site = ctx.site!;
  const excluded = new Set<OriginMember>();
  for (let attempt = 0; ; attempt++) {
    const deadlineAt = deps.clock.now() + rt.config.admission.queue.deadlineMs;
    // A background refresh runs while stale-while-revalidate answers everyone: it uses spare
    // origin capacity (the background class, below every configured one) and is refused first;
    // the next stale hit tries again.
    const priority = priorityOverride ?? (kind === 'background' ? rt.priorityNames.length : ctx.priority);
    const admitted = await deps.upstream.admit(site.config, site.pool, {
      priority,
      deadlineAt,
      kind,
      exclude: excluded,
      servesCrowd: true,
      // Nobody waits on a background refresh, and a usable stale copy answers a failed fill.
      hasFallback: kind === 'background' || hasStaleOnFailure(ctx, lookup),
    });
    if (!admitted.ok) return refusedFill(ctx, admitted);
    const lease = admitted.lease;
    const member = lease.member;
    const revalidating = lookup.entry;
    const conditional = revalidating ? makeConditionalHeaders(revalidating) : {};
    const headers = { ...makeFillHeaders(ctx, lookup), ...conditional };
    if (!site.config.preserveHost) headers['host'] = member.url.host;
    let fetched: FetchResult | undefined;
    try {
      fetched = await deps.fetcher.fetch({
        origin: member.url,
        method: 'GET', // HEAD is filled with GET so the entry can answer both
        path: joinPath(member.url, makeFillTarget(lookup.facts.url, lookup.policy.route.key)),
        headers,
        connectMs: site.config.timeouts.connectMs,
        responseHeadersMs: site.config.timeouts.responseHeadersMs,
        idleMs: site.config.timeouts.idleMs,
        maxBodyBytes: rt.config.cache.maxObjectBytes,
      });
    } finally {
      lease.finish(
        fetched === undefined
          ? { kind: 'abandoned' }
          : fetched.ok
            ? { kind: 'response', status: fetched.status }
            : { kind: 'failure', failure: fetched.failure },
      );
      if (kind !== 'background') ctx.upstreamMs = (ctx.upstreamMs ?? 0) + (deps.clock.now() - lease.startedAt);
    }
    if (!fetched.ok) {
      if (fetched.failure === 'connect_error' && site.config.retryOnConnectFailure && attempt === 0 && hasOtherMember(site, member, deps.clock.now())) {
        excluded.add(member); // idempotent GET: retry once on another member
        continue;
      }
      if (fetched.failure === 'error') {
        deps.logger.warn({ err: fetched.error, requestId: ctx.requestId, origin: member.name }, 'cache fill could not be sent');
        return { kind: 'failed', code: 'internal_error', staleReason: 'error', detail: `the fill could not be sent: ${fetched.error.message}` };
      }
      return { kind: 'failed', ...originFailure(fetched.failure, member) };
    }
    if ('tooLarge' in fetched) {
      // Larger than cache.maxObjectBytes: not stored. The body was abandoned unread; the leader
      // and every waiter stream it with http-proxy, and hit-for-pass sends the next ones straight there.
      return { kind: 'too_large' };
    }
    const now = deps.clock.now();
    const response = {
      status: fetched.status,
      headers: fetched.headers,
      requestTime: fetched.requestTime,
      responseTime: fetched.responseTime,
    };
    // RFC 9111 §4.3.3-4: a 304 to our conditional request refreshes the stored entry.
    if (fetched.status === 304 && revalidating) {
      const merged = mergeNotModified(revalidating, response, lookup.policy, now, lookup.facts);
      if (merged) {
        await deps.store.put(merged);
        return { kind: 'entry', entry: merged, state: 'revalidated', stored: true, fwdStatus: 304 };
      }
      // The 304 doesn't select our entry: fetch unconditionally once.
      lookup = { ...lookup, entry: undefined };
      continue;
    }
    const decision = lookup.canStore
      ? decideStorage({ ...lookup.facts, method: 'GET', headers }, response, lookup.policy, now)
      : ({ store: false, reason: 'request no-store' } as const);
    // A server error answers with the stored copy where one may stand in (stale-if-error,
    // grace); else it is an answer like any other, stored only with explicit freshness (or a
    // route's negative TTL for its status), as RFC 9111 §3 and nginx do.
    if (fetched.status >= 500 && (!decision.store || hasStaleOnFailure(ctx, lookup))) {
      return {
        kind: 'origin_error',
        fwdStatus: fetched.status,
        status: fetched.status,
        headers: clientHeaders(fetched.headers, lookup.policy),
        body: fetched.body,
      };
    }
    if (decision.store) {
      const entry: CacheEntry = {
        ...decision.entry,
        key: lookup.key,
        variantKey: makeVariantKey(decision.entry.vary, lookup.variantHeaders),
        body: fetched.body,
      };
      if (entry.body.length <= rt.config.cache.maxObjectBytes) await deps.store.put(entry);
      return { kind: 'entry', entry, state: lookup.entry ? 'expired' : 'miss', stored: true, fwdStatus: fetched.status };
    }
    return {
      kind: 'uncacheable',
      fwdStatus: fetched.status,
      status: fetched.status,
      headers: clientHeaders(fetched.headers, lookup.policy),
      body: fetched.body,
      reason: decision.reason,
    };
  }
}

/** The error page and stale reason for an origin that failed (refused, timed out, reset, or answered garbage). */
function originFailure(failure: Exclude<FetchFailure, 'error'>, member: OriginMember): { code: ErrorCode; staleReason: StaleReason; detail: string } {
  return {
    code:
      failure === 'timeout'
        ? 'origin_timeout'
        : failure === 'connect_error'
          ? 'origin_unreachable'
          : failure === 'bad_response'
            ? 'origin_bad_response'
            : 'origin_reset',
    staleReason: failure === 'timeout' ? 'timeout' : failure === 'connect_error' ? 'unreachable' : 'error',
    detail: `origin ${member.name} (${member.url.origin}): ${failure.replace('_', ' ')}; check sites[].origins[].url`,
  };
}

/** A stored copy this request may be answered with if the origin fails (stale-if-error, grace). */
function hasStaleOnFailure(ctx: Ctx, lookup: Lookup): boolean {
  const entry = lookup.entry;
  // A stored server error is no better than a new one.
  if (!entry || entry.status >= 500) return false;
  return evaluateEntry(entry, lookup.facts, ctx.deps.clock.now(), lookup.policy).withinGraceOnFailure;
}

/** Is there another routable member to retry on? (Asked without pick(), which advances the round-robin.) */
function hasOtherMember(site: SiteRuntime, failed: OriginMember, now: number): boolean {
  return site.pool.members().some((m) => m !== failed && m.isHealthy(now));
}

function refusedFill(ctx: Ctx, admitted: Exclude<AdmitResult, { ok: true }>): Extract<FillResult, { kind: 'failed' }> {
  const site = ctx.site!;
  if (admitted.why === 'no_healthy') {
    return {
      kind: 'failed',
      code: 'no_healthy_origin',
      staleReason: 'unreachable',
      detail: `no healthy origin for site "${site.name}" (${site.config.origins.map((o) => o.url).join(', ')}); check sites[].origins[].url`,
    };
  }
  if (admitted.why === 'circuit_open') return { kind: 'failed', code: 'circuit_open', staleReason: 'circuit_open', shedReason: 'circuit_open' };
  return { kind: 'failed', code: 'overloaded', staleReason: 'shed', shedReason: admitted.reason };
}

/**
 * A local leader's fill, collapsed across instances when Redis is configured: if another
 * instance holds this key's fill, wait for its notification and take what it stored; otherwise
 * fetch here and, when this instance held the others' lock, wake them once stored.
 */
async function fillAcrossInstances(
  ctx: Ctx,
  lookup: Lookup,
  collapseKey: string,
  kind: 'fill' | 'background',
  priority?: number,
): Promise<FillResult> {
  const remote = ctx.deps.crossInstance;
  if (!remote) return runFill(ctx, lookup, kind, priority);
  const claim = await remote.acquire(collapseKey);
  if (claim.kind === 'filled') {
    const entry = selectVariant((await ctx.deps.store.get(lookup.key)) ?? [], lookup.variantHeaders);
    if (entry && entry !== lookup.entry) {
      const evaluation = evaluateEntry(entry, lookup.facts, ctx.deps.clock.now(), lookup.policy);
      if (!evaluation.needsRevalidation) {
        return { kind: 'entry', entry, state: lookup.entry ? 'expired' : 'miss', stored: false, fwdStatus: entry.status };
      }
    }
    return runFill(ctx, lookup, kind, priority); // nothing usable arrived: fetch here
  }
  try {
    return await runFill(ctx, lookup, kind, priority);
  } finally {
    if (claim.kind === 'fetch') await claim.done().catch(() => undefined);
  }
}

/**
 * A refresh nobody waits for: collapsed with any fill of the same key. RFC 5861 §3 refreshes
 * take the background class (spare capacity only); a refresh standing in for a fill the crowd
 * would have queued for (step 7) keeps that request's `priority`.
 */
function startBackgroundRefresh(ctx: Ctx, lookup: Lookup, priority?: number): void {
  const { deps } = ctx;
  const collapseKey = collapseKeyOf(lookup);
  const joined = deps.inflight.join(collapseKey, 0);
  if (joined.role !== 'leader') return; // someone is already refreshing it
  fillAcrossInstances(ctx, lookup, collapseKey, 'background', priority)
    .catch((err): FillResult => {
      deps.logger.warn({ err, requestId: ctx.requestId }, 'background refresh failed');
      return { kind: 'failed', code: 'internal_error', staleReason: 'error' };
    })
    .then((result) => joined.settle(result));
}

/** Stale is the first answer to trouble (RFC 5861 §4 stale-if-error, widened by the route's grace). */
function serveStaleOr(
  ctx: Ctx,
  lookup: Lookup,
  reason: StaleReason,
  otherwise: () => void | Promise<void>,
  afterServing?: () => void,
): void | Promise<void> {
  const entry = lookup.entry;
  // A stored server error does not stand in for the origin's new error.
  if (entry && !(reason === 'error' && entry.status >= 500)) {
    const evaluation = evaluateEntry(entry, lookup.facts, ctx.deps.clock.now(), lookup.policy);
    // The route's grace for must-revalidate pages covers an origin that fails, not a busy one.
    const usable = ORIGIN_FAILED.has(reason) ? evaluation.withinGraceOnFailure : evaluation.withinStaleIfError;
    if (evaluation.fresh || usable) {
      ctx.staleReason = reason;
      ctx.deps.metrics.get('staleServed').inc({ site: ctx.site!.name, reason });
      serveEntry(ctx, entry, evaluation, { state: 'stale', staleReason: reason });
      afterServing?.();
      return;
    }
  }
  return otherwise();
}

/** Stale reasons that mean the origin failed (not that it was busy or the gateway was). */
const ORIGIN_FAILED: ReadonlySet<StaleReason> = new Set(['error', 'timeout', 'unreachable', 'circuit_open']);

function serveEntry(
  ctx: Ctx,
  entry: CacheEntry,
  evaluation: EntryEvaluation,
  facts: CacheStatusFacts & { staleReason?: StaleReason },
): void {
  ctx.state = facts.state;
  if (facts.collapsed) ctx.collapsed = true;
  const detail = facts.state === 'stale' ? `stale-${facts.staleReason}` : facts.state === 'updating' ? 'updating' : undefined;
  facts.ttlSeconds = ttlSecondsOf(entry, ctx.deps.clock.now());
  facts.requestId = ctx.requestId;
  facts.detail = detail;
  if (facts.state === 'stale') facts.forwarded = STALE_AFTER_ORIGIN_TRIED.has(facts.staleReason!);
  const cacheStatus = formatCacheStatus(facts);
  const h = ctx.req.headers;
  const notModified =
    (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined) &&
    isNotModifiedForClient(entry, { method: ctx.method, url: ctx.url, headers: h });
  sendEntry(ctx.res, entry, {
    head: ctx.method === 'HEAD',
    ageSeconds: evaluation.ageSeconds,
    cacheStatus,
    requestId: ctx.requestId,
    notModified,
  });
  if (ctx.wokenAt !== undefined) ctx.answeredAt = ctx.deps.clock.now();
}

/** Stale reasons for which the origin was actually contacted (Cache-Status fwd=stale, not hit). */
const STALE_AFTER_ORIGIN_TRIED: ReadonlySet<StaleReason> = new Set(['error', 'timeout', 'unreachable']);

function writeBuffered(
  ctx: Ctx,
  status: number,
  headers: OutgoingHttpHeaders,
  body: Buffer,
  facts: Omit<CacheStatusFacts, 'requestId'>,
): void {
  const { res } = ctx;
  if (res.headersSent || res.destroyed) return;
  const out: OutgoingHttpHeaders = { ...headers, 'content-length': body.length };
  out['cache-status'] = formatCacheStatus({ ...facts, requestId: ctx.requestId });
  out['x-request-id'] = ctx.requestId;
  res.writeHead(status, out);
  res.end(ctx.method === 'HEAD' ? undefined : body);
  if (ctx.wokenAt !== undefined) ctx.answeredAt = ctx.deps.clock.now();
}

/**
 * Streaming pass-through for requests the cache does not answer: through the limiter, to a
 * member, with one retry on another member when an idempotent request could not connect.
 */
async function forward(ctx: Ctx, state: 'bypass' | 'pass', lookup?: Lookup): Promise<void> {
  const { deps, req, res, rt } = ctx;
  const site = ctx.site!;
  ctx.state = state;
  prepareForwardHeaders(ctx);
  const excluded = new Set<OriginMember>();
  const abort = new AbortController();
  const onClose = () => abort.abort();
  res.once('close', onClose);
  try {
    for (let attempt = 0; ; attempt++) {
      const deadlineAt = deps.clock.now() + rt.config.admission.queue.deadlineMs;
      const admitted = await deps.upstream.admit(site.config, site.pool, {
        priority: ctx.priority,
        deadlineAt,
        kind: 'forward',
        exclude: excluded,
        signal: abort.signal,
        hasFallback: lookup !== undefined && hasStaleOnFailure(ctx, lookup),
      });
      if (!admitted.ok) {
        if (res.destroyed) return;
        const refused = refusedFill(ctx, admitted);
        if (lookup) return serveFillResult(ctx, lookup, refused, false);
        if (refused.shedReason) return shed(ctx, refused.shedReason);
        return fail(ctx, refused.code, refused.detail);
      }
      const lease = admitted.lease;
      const member = lease.member;
      let outcome: ForwardOutcome | undefined;
      try {
        if (res.destroyed) outcome = { kind: 'client_gone' };
        else
          outcome = await deps.forwarder.web(req, res, {
            target: { url: member.url, agent: member.agent },
            timeouts: site.config.timeouts,
            changeOrigin: !site.config.preserveHost,
            maxBodyBytes: rt.config.limits.maxBodyBytes,
            onHead: (status, headers) => {
              if (lookup) stripTargeted(headers, lookup.policy.targetedHeader);
              else stripTargeted(headers, rt.config.cache.targetedHeader);
              headers['cache-status'] = formatCacheStatus({
                state,
                fwdStatus: status,
                detail: state,
                requestId: ctx.requestId,
              });
              headers['x-request-id'] = ctx.requestId;
              headers['via'] = appendVia(headers['via']);
              if (status >= 200 && status < 400 && !isCacheableMethod(ctx.method)) invalidateAfterUnsafe(ctx, status, headers);
              return headers;
            },
          });
      } finally {
        lease.finish(
          outcome === undefined
            ? { kind: 'abandoned' }
            : outcome.kind === 'ok'
              ? { kind: 'response', status: outcome.status }
              : outcome.kind === 'client_gone' || outcome.kind === 'body_too_large'
                ? { kind: 'client_gone' }
                : { kind: 'failure', failure: outcome.failure },
        );
      }
      if (outcome.kind === 'ok' || outcome.kind === 'client_gone') return;
      if (outcome.kind === 'body_too_large') {
        // nginx's client_max_body_size for a chunked body: 413, and the connection closed (the
        // rest of the body is never read).
        if (outcome.headSent || res.headersSent) {
          res.destroy();
          return;
        }
        res.setHeader('connection', 'close');
        return fail(ctx, 'body_too_large', `the chunked request body passed limits.maxBodyBytes (${rt.config.limits.maxBodyBytes} bytes)`);
      }
      if (outcome.kind === 'broken') return; // head already sent; the client connection was cut
      const idempotent = ctx.method === 'GET' || ctx.method === 'HEAD' || ctx.method === 'OPTIONS';
      if (
        outcome.failure === 'connect_error' &&
        idempotent &&
        !outcome.bodySent &&
        site.config.retryOnConnectFailure &&
        attempt === 0 &&
        hasOtherMember(site, member, deps.clock.now())
      ) {
        excluded.add(member);
        continue;
      }
      if (outcome.failure === 'error') {
        deps.logger.warn({ err: outcome.error, requestId: ctx.requestId, origin: member.name }, 'request could not be forwarded');
        return fail(ctx, 'internal_error', `the request could not be forwarded: ${outcome.error.message}`);
      }
      const failed = originFailure(outcome.failure, member);
      if (lookup) return serveStaleOr(ctx, lookup, failed.staleReason, () => fail(ctx, failed.code, failed.detail));
      return fail(ctx, failed.code, failed.detail);
    }
  } finally {
    res.off('close', onClose);
  }
}

function isCacheableMethod(method: string): boolean {
  return method === 'GET' || method === 'HEAD';
}

/** Prepares the client's request for forwarding: hop-by-hop out, X-Forwarded-* and Via in. */
function prepareForwardHeaders(ctx: Ctx): void {
  const headers = ctx.req.headers as Record<string, string | string[] | undefined>;
  const original = { ...ctx.req.headers };
  // Keep Transfer-Encoding so Node reproduces the body framing; strip every other hop-by-hop
  // field, including the client's Connection (with an agent, http-proxy would forward it).
  // (WebSocket upgrades never come here: gateway.ts tunnels them.)
  stripHopByHop(headers, TE_KEEP);
  setForwardedHeaders(headers as Record<string, string | string[] | number | undefined>, original, {
    peerAddress: ctx.peerAddress,
    peerTrusted: ctx.peerTrusted,
  });
  headers['x-request-id'] = ctx.requestId;
}
const TE_KEEP: ReadonlySet<string> = new Set(['transfer-encoding']);

/** True when the Cookie header names a cookie that makes this site bypass the cache (sites[].bypassCookies). */
function hasBypassCookie(site: SiteRuntime, header: string): boolean {
  for (const name of parseCookies(header).keys()) if (site.isBypassCookie(name)) return true;
  return false;
}

/** True when the request carries a credential header (sites[].credentialHeaders): it bypasses the cache. */
function hasCredential(site: SiteRuntime, headers: IncomingHttpHeaders): boolean {
  for (const name of site.credentialHeaders) if (headers[name] !== undefined) return true;
  return false;
}

/**
 * Request headers a cache fill passes on from the client: a fill is shared by everyone who asks
 * for the key, so what the origin sees must be covered by the key. Never the hop-by-hop ones,
 * the client's conditionals, Range, Cache-Control, Pragma, Expect or Content-Length (the cache
 * makes its own), cookies (only the key template's), nor the site's `fillHeaders.drop`
 * (X-Original-URL, X-HTTP-Method-Override, Forwarded and the like: they rewrite what an origin
 * framework acts on). With `fillHeaders.only` set, nothing beyond those listed, Host, Accept*,
 * User-Agent, the key template's headers and the names a stored Vary of the key lists.
 */
const FILL_ALWAYS: ReadonlySet<string> = new Set(['host', 'accept', 'accept-encoding', 'accept-language', 'accept-charset', 'user-agent']);
const FILL_NEVER: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  ...CLIENT_CONDITIONALS,
  'cookie',
  'cache-control',
  'pragma',
  'expect',
  'content-length',
  'x-request-id',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'via',
]);

/**
 * The client's headers as a fill sends them, and so as Vary sees them (RFC 9111 §4.1 compares
 * the headers of the request that was sent): see FILL_ALWAYS / FILL_NEVER above.
 */
function makeFillVisibleHeaders(site: SiteRuntime, headers: IncomingHttpHeaders, policy: PolicyOptions, variants: readonly CacheEntry[]): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  const keyHeaders = policy.route.key.headers;
  const listed = connectionListedNames(headers.connection);
  for (const name in headers) {
    if (FILL_NEVER.has(name) || listed.includes(name)) continue;
    if (FILL_ALWAYS.has(name) || site.isFillHeader(name) || keyHeaders.some((h) => h.toLowerCase() === name) || variants.some((v) => v.vary.includes(name)))
      out[name] = headers[name] as string;
  }
  const cookie = keptCookies(headers.cookie, policy);
  if (cookie !== undefined) out.cookie = cookie;
  return out;
}

/** Cookies a fill may send: only those the key template varies on (they are part of the key). */
function keptCookies(header: string | string[] | undefined, policy: PolicyOptions): string | undefined {
  if (!header || policy.route.key.cookies.length === 0) return undefined;
  const keep = new Set(policy.route.key.cookies);
  const cookies = [...parseCookies(header)].filter(([name]) => keep.has(name));
  return cookies.length > 0 ? cookies.map(([n, v]) => `${n}=${v}`).join('; ') : undefined;
}

/** Request headers for a cache fill: shared with every waiter, so nothing user-specific. */
function makeFillHeaders(ctx: Ctx, lookup: Lookup): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(lookup.variantHeaders)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  setForwardedHeaders(out, ctx.req.headers, {
    peerAddress: ctx.peerAddress,
    peerTrusted: ctx.peerTrusted,
  });
  out['x-request-id'] = ctx.requestId;
  return out;
}

function joinPath(base: URL, target: string): string {
  let pathAndQuery = target;
  if (!target.startsWith('/')) {
    try {
      const u = new URL(target);
      pathAndQuery = u.pathname + u.search;
    } catch {
      pathAndQuery = '/';
    }
  }
  const prefix = base.pathname.endsWith('/') ? base.pathname.slice(0, -1) : base.pathname;
  return prefix + pathAndQuery;
}

/** Headers of a non-stored origin response as sent to the client. */
function clientHeaders(headers: Record<string, string | string[]>, policy: PolicyOptions): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) out[name] = value;
  stripHopByHop(out as Record<string, unknown>);
  stripTargeted(out, policy.targetedHeader);
  out['via'] = appendVia(out['via']);
  return out;
}

/**
 * RFC 9213: our own targeted field is for us and is not passed on; CDN-Cache-Control targets
 * every CDN, so one in front of us gets it too (as the stored copy keeps it).
 */
function stripTargeted(headers: OutgoingHttpHeaders, targeted: string): void {
  const own = targeted.toLowerCase();
  if (own !== 'cdn-cache-control') delete headers[own];
}

/** RFC 9111 §4.4: a successful unsafe request invalidates the URI and same-origin Location / Content-Location. */
function invalidateAfterUnsafe(ctx: Ctx, status: number, headers: OutgoingHttpHeaders): void {
  const site = ctx.site!;
  const host = ctx.req.headers['x-forwarded-host'] ?? ctx.req.headers.host ?? 'localhost';
  const origin = `http://${Array.isArray(host) ? host[0] : host}`;
  const targets = invalidationTargets(
    { method: ctx.method, url: ctx.url, headers: ctx.req.headers },
    { status, headers: headers as Record<string, string | string[] | undefined> },
    origin,
  );
  const selectors: PurgeSelector[] = targets.map((target) => {
    const route = site.compiled.matchRoute('GET', target.split('?')[0]!);
    return {
      kind: 'key',
      key: makeCacheKey({ site: site.name, authority: authorityOf(ctx), url: target, headers: ctx.req.headers, key: site.policyFor(route).route.key }),
    };
  });
  if (selectors.length > 0) void ctx.deps.purge(selectors, 'soft').catch(() => undefined);
}

/**
 * PURGE, as Varnish and Squid answer it (MediaWiki sends one to its CDN on every edit and
 * delete): answered here, never forwarded. Allowed only from `purge.allow` (the client address,
 * trusted proxies honoured), 405 otherwise. Clears every entry of the URL for this Host (every
 * Host with `purge.allHosts`): all Vary variants and key-template parts, here and, with Redis,
 * on every instance. 200 when something was purged, 404 when nothing was stored.
 */
async function answerPurge(ctx: Ctx, site: SiteRuntime): Promise<void> {
  const { rt, deps } = ctx;
  ctx.state = 'bypass';
  if (!rt.purgeAllowed.isTrusted(ctx.clientAddress)) return fail(ctx, 'purge_not_allowed');
  const cfg = rt.config.purge;
  const route = site.compiled.matchRoute('GET', ctx.path);
  const prefix = keyUrlPrefixFor(site.name, ctx.url, site.policyFor(route).route.key, cfg.allHosts ? undefined : authorityOf(ctx));
  const { purged } = await deps.purge([{ kind: 'prefix', prefix }], cfg.mode);
  deps.metrics.get('purges').inc({ kind: 'url', mode: cfg.mode });
  deps.metrics.get('purgedEntries').inc({ mode: cfg.mode }, purged);
  const status = purged > 0 ? 200 : 404;
  const body = JSON.stringify({ status, purged, mode: cfg.mode, url: ctx.url }) + '\n';
  ctx.res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': ctx.requestId,
  });
  ctx.res.end(ctx.method === 'HEAD' ? undefined : body);
}

/**
 * The scheme and host the origin will see for this request, for the cache key: the Host (or a
 * trusted proxy's X-Forwarded-Host) and 'http' (or a trusted proxy's X-Forwarded-Proto), as
 * setForwardedHeaders() passes them on.
 */
function authorityOf(ctx: Ctx): string {
  const h = ctx.req.headers;
  const forwardedHost = ctx.peerTrusted ? firstToken(h['x-forwarded-host']) : undefined;
  const scheme = (ctx.peerTrusted ? firstToken(h['x-forwarded-proto']) : undefined) ?? 'http';
  return makeAuthority(forwardedHost ?? h.host, scheme);
}

function firstToken(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  const first = s?.split(',')[0]?.trim();
  return first ? first : undefined;
}

function clientKeyOf(ctx: Ctx, header: string | undefined): string {
  if (header) {
    const v = ctx.req.headers[header.toLowerCase()];
    const s = Array.isArray(v) ? v[0] : v;
    if (s) return `h:${s.slice(0, 256)}`;
  }
  return ctx.clientAddress;
}

/** Admission refused and nothing stale: 503 with Retry-After from the measured drain rate. */
function shed(ctx: Ctx, reason: ShedReason): void {
  ctx.shedReason = reason;
  const site = ctx.site;
  const retryAfter = site ? ctx.deps.retryAfterSeconds(site.name) : 1;
  ctx.deps.metrics.get('shed').inc({ site: site?.name ?? '-', reason, priority: ctx.rt.priorityNames[ctx.priority] ?? 'default' });
  ctx.deps.metrics.get('retryAfter').observe(retryAfter);
  fail(ctx, reason === 'circuit_open' ? 'circuit_open' : 'overloaded', undefined, retryAfter, 'shed', `shed-${reason}`);
}

function fail(
  ctx: Ctx,
  code: ErrorCode,
  detail?: string,
  retryAfterSeconds?: number,
  state: CacheState = 'error',
  statusDetail?: string,
): void {
  ctx.errorCode = code;
  ctx.state = state;
  const accept = ctx.req.headers.accept;
  sendError(ctx.res, code, {
    accept: typeof accept === 'string' ? accept : undefined,
    detail,
    requestId: ctx.requestId,
    retryAfterSeconds,
    head: ctx.method === 'HEAD',
    cacheStatus: formatCacheStatus({ state, detail: statusDetail ?? code, requestId: ctx.requestId }),
  });
}

/**
 * Drain accounting, the request metrics and the hot-key count for one finished request (the
 * memo hit path, with the rows its memo entry holds, and finish() alike). Returns the status
 * sent, 0 when no head went out.
 */
function countRequest(
  deps: RequestDeps,
  res: ServerResponse,
  site: string,
  route: string,
  path: string,
  state: CacheState,
  durationMs: number,
  hold?: MemoHold,
): number {
  deps.requestDone?.();
  const status = res.headersSent ? res.statusCode : 0;
  const statusClass = status ? statusClassOf(status) : 'aborted';
  if (hold === undefined) {
    deps.metrics.observeRequest(site, route, state, statusClass, durationMs / 1000);
    deps.noteKey?.(site, path, state);
    return status;
  }
  // The memo hit path: through the rows held on its memo entry while they are live (no lookups).
  let row = hold.row;
  if (row === undefined || !row.live || row.statusClass !== statusClass) row = hold.row = deps.metrics.requestRow(site, route, state, statusClass);
  deps.metrics.observeRow(row, durationMs / 1000);
  const hotKeys = deps.hotKeys;
  if (hotKeys === undefined) deps.noteKey?.(site, path, state);
  else {
    let hot = hold.hot;
    if (hot === undefined || !hot.live) hot = hold.hot = hotKeys.rowFor(site, path);
    hotKeys.noteRow(hot, state);
  }
  return status;
}

/**
 * Once per request, when its answer was handed over in full synchronously (`handedOff`) or its
 * response closed: drain accounting, request metrics, hot keys, the access log line.
 */
function finish(ctx: Ctx, handedOff: boolean): void {
  const { deps, res } = ctx;
  const durationMs = deps.clock.now() - ctx.startedAt;
  const site = ctx.site?.name ?? '-';
  const routeName = ctx.route?.name ?? '-';
  const state = ctx.state === '-' ? 'error' : ctx.state;
  const status = countRequest(deps, res, site, routeName, ctx.path, state, durationMs);
  if (ctx.rt.config.log.access) {
    deps.logger.info(
      {
        type: 'access',
        requestId: ctx.requestId,
        client: ctx.clientAddress,
        method: ctx.method,
        path: ctx.path.slice(0, 512),
        site,
        route: routeName,
        status,
        durationMs: Math.round(durationMs * 100) / 100,
        cache: ctx.state,
        collapsed: ctx.collapsed,
        ...(ctx.wokenAt !== undefined
          ? { afterWakeMs: Math.round(((ctx.answeredAt ?? deps.clock.now()) - ctx.wokenAt) * 100) / 100 }
          : {}),
        ...(ctx.upstreamMs !== undefined ? { upstreamMs: Math.round(ctx.upstreamMs * 100) / 100 } : {}),
        ...(ctx.staleReason ? { staleReason: ctx.staleReason } : {}),
        ...(ctx.shedReason ? { shedReason: ctx.shedReason } : {}),
        ...(ctx.errorCode ? { error: ctx.errorCode } : {}),
        ...(handedOff || res.writableFinished ? {} : { aborted: true }),
      },
      'request',
    );
  }
}
