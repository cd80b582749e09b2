/**
 * THE request path. Read top to bottom, this is everything the gateway does to a request:
 *
 *   plain request, memoised route  → fresh hit answered at once (hit-memo.ts), else as below
 *   parse checks → site (came back to us: 508, http/loop.ts) / route → rate limit → cache eligibility → lookup
 *     fresh                      → hit (or 304 to the client's conditional)
 *     stale, in SWR              → updating + background refresh (collapsed, limited)
 *     pressure gate over         → stale if usable, else 503 shed
 *     origin busy, copy a crowd read → stale within grace + one refresh at this request's priority
 *     missing / must revalidate  → collapsed fill: one leader per key asks upstream for a
 *                                  member + permit, fetches (conditionally when it can), stores;
 *                                  waiters share the result only when it is storable
 *     any failure on the way     → stale if usable (stale-if-error / grace), else error page
 *   not eligible                 → pressure gate → limited streaming pass-through [bypass]
 *
 * Every other module answers one question for this file; the steps it hands on live beside it:
 * fill.ts (the collapsed fill, background refreshes), pass-through.ts (streaming to the origin),
 * stale.ts (what answers when the origin cannot), fill-headers.ts (what a fill sends),
 * answer.ts (writing and accounting), purge-method.ts (PURGE), context.ts (the shared types).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { currentAgeMsOf, staleAtOf, type CacheEntry } from '../cache/entry.js';
import { hasDisguisedDotSegment, makeCacheKey, normaliseTarget, parseCookies, parseUrlPath } from '../cache/cache-key.js';
import { fieldOf } from '../cache/cache-control.js';
import { evaluateEntry, isCacheableRequest, type PolicyOptions, type RequestFacts } from '../cache/policy.js';
import { rateLimitClientKey } from './client-address.js';
import type { StaleReason } from '../outcome.js';
import type { LeftOutDefaults, Runtime, SiteRuntime } from '../runtime.js';
import { sendEntry } from './respond.js';
import { readHostEntry, type CompiledRoute } from './site-router.js';
import { HOLD_MS, isEventStreamRequest, isPlainRequest, newHold, plainBypassOf, type MemoRoute } from './hit-memo.js';
import { ttlSecondsOf, codingFor, failUnexpected, serveEntry, fail, countRequest, finish } from './answer.js';
import { isOnlyIfCached, isSecure, selectVariant, collapseKeyOf, authorityOf, pathKeysOf, variesOnAll, type RequestDeps, type Ctx, type Lookup } from './context.js';
import { hstsValue, redirectToHttps } from './https-edge.js';
import { fillAndServe, isOtherCookiesCopy, passAlone, passForOwnCookies, refreshFailedMomentAgo, startBackgroundRefresh } from './fill.js';
import { carriesOwnCookies, identityFillInputs, isSessionLookalike, makeFillVisibleHeaders, uncoveredFillInputs } from './fill-headers.js';
import { forward, forwardUnlessShed } from './pass-through.js';
import { nextRequestId, requestIdOf } from './request-id.js';
import { answerMaxForwards, answerServerOptions } from './max-forwards.js';
import { closeAfterAnswer } from './http-server.js';
import { answerPurge } from './purge-method.js';
import { LOOP_FIELD, cameBack } from '../http/loop.js';
import { countHit, isHot, isServableWhileUpdating, serveStaleOr, wasReadOften } from './stale.js';

export type { CrossInstanceCollapse, FillResult, RequestDeps } from './context.js';
export { HOT_HITS, HOT_STALE_MS } from './stale.js';


/**
 * One request, start to finish. A memory hit is answered synchronously (no promise on the hit
 * path); anything that waits returns a promise, settled when the answer is under way.
 */
export function handleRequest(deps: RequestDeps, req: IncomingMessage, res: ServerResponse): void | Promise<void> {
  const rt = deps.runtime(); // one config snapshot for the whole request
  const secure = isSecure(req);
  if (secure) {
    const hsts = hstsValue(rt.config.tls);
    if (hsts !== undefined) res.setHeader('strict-transport-security', hsts);
  }
  let memoHost: string | undefined;
  let peeked: Ctx['peeked'];
  const hitMemo = deps.hitMemo;
  if (hitMemo !== undefined && isPlainRequest(req)) {
    const host = req.headers.host;
    if (hitMemo.accepts(host, req.url!)) {
      memoHost = host;
      const memo = hitMemo.get(req.method!, host, req.url!, secure);
      if (memo !== undefined && memo.rt === rt) {
        let outcome: ReturnType<typeof answerMemoHit>;
        try {
          outcome = answerMemoHit(deps, rt, memo, req, res, secure);
        } catch (err) {
          // As on the slow path (failUnexpected below): an answer, never a request left hanging,
          // and accounted for like any other.
          const failed = makeCtx(deps, rt, req, res, nextRequestId(), deps.clock.now(), secure);
          failUnexpected(failed, err);
          if (res.writableEnded) return finish(failed, true);
          res.once('close', () => finish(failed, false));
          return;
        }
        if (outcome === true) return;
        if (outcome !== false) peeked = { key: memo.key, variants: outcome };
      }
    }
  }
  const requestId = requestIdOf(req.headers['x-request-id']);
  const ctx = makeCtx(deps, rt, req, res, requestId, deps.clock.now(), secure, memoHost, peeked);
  let pending: void | Promise<void> = undefined;
  try {
    pending = route(ctx);
  } catch (err) {
    failUnexpected(ctx, err);
  }
  // An answer written in full right away (a memory hit, an error page) is accounted for now;
  // anything still under way when its response closes (no listener or closure per hit).
  if (!pending && res.writableEnded) return finish(ctx, true);
  res.once('close', () => finish(ctx, false));
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
  secure: boolean,
): boolean | readonly CacheEntry[] {
  if (req.rawHeaders.length / 2 > rt.config.limits.maxHeadersCount) return false;
  // A cookie is the one plain field that can decide something: a bypass cookie sends the request
  // to the origin (route() step 4), and Vary: Cookie selects with the cookies a fill would send,
  // which for a memoised route (no cookie in its key) are none.
  const cookie = req.headers.cookie;
  if (cookie !== undefined && !memo.route.config.cache.ignoreSessionCookies && hasBypassCookie(memo.site, cookie, deps)) return false;
  for (const name of memo.plainBypass) if (fieldOf(req.headers, name) !== undefined) return false;
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
  // A copy that varies on Cookie is not for a request with cookies (decide() passes it on).
  if (entry === undefined || entry.noCache || !(now < staleAtOf(entry)) || (cookie !== undefined && entry.vary.includes('cookie'))) {
    // The slow path reuses a record just looked up; held variants are not a lookup of this request.
    return held ? false : variants;
  }
  if (held) store.noteHeldHit!();
  countHit(entry);
  const requestId = nextRequestId();
  sendEntry(res, entry, {
    head: req.method === 'HEAD',
    requestId,
    cacheStatus: undefined, // a fresh hit: sendEntry renders it
    ageSeconds: Math.floor(currentAgeMsOf(entry, now) / 1000),
    ttlSeconds: ttlSecondsOf(entry, now),
    coding: codingFor(entry, req.headers, rt.config.compression.enabled),
    notModified: false, // a plain request has no conditional
  });
  if (rt.config.log.access) {
    // The access log wants the whole context; build it only then.
    const ctx = makeCtx(deps, rt, req, res, requestId, now, secure);
    ctx.site = memo.site;
    ctx.route = memo.route;
    ctx.state = 'hit';
    finish(ctx, true);
    return true;
  }
  countRequest(deps, res, { site: memo.site.name, route: memo.route.name, path: memo.path, state: 'hit', durationMs: deps.clock.now() - now }, hold);
  return true;
}

function makeCtx(
  deps: RequestDeps,
  rt: Runtime,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  startedAt: number,
  secure: boolean,
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
    method: req.method ?? 'GET', // as sent: one in lower case is refused below (HTTP/2; HTTP/1.1's parser refuses it)
    rawUrl,
    url: target.url,
    path: target.path,
    clientAddress: trusted.resolveClient(peerAddress, req.headers['x-forwarded-for']),
    peerAddress,
    peerTrusted: trusted.isTrusted(peerAddress),
    scheme: secure ? 'https' : 'http',
    priority: rt.priorities.default,
    state: '-',
    collapsed: false,
    memoHost,
    peeked,
  };
}

/** Sites whose loop was last logged at (failLoop), for LOOP_WARN_EVERY_MS. */
const loopWarnedAt = new Map<string, number>();
const LOOP_WARN_EVERY_MS = 60_000;

/**
 * Answers a request that came back to this gateway (http/loop.ts) `508 origin_loop`, and says
 * why at warn, at most once a minute per site: the lap that sent it gets the 508 as its
 * origin's answer, and its own line names the origin it went to.
 */
function failLoop(ctx: Ctx): void {
  const site = ctx.site!.name;
  const now = ctx.deps.clock.now();
  const last = loopWarnedAt.get(site);
  if (last === undefined || now - last >= LOOP_WARN_EVERY_MS) {
    if (loopWarnedAt.size >= 1024) loopWarnedAt.clear();
    loopWarnedAt.set(site, now);
    ctx.deps.logger.warn(
      { site, path: ctx.path },
      'request loop: a request this gateway sent to the site\'s origin came back to it (its CDN-Loop carries our id), so an origin URL (sites[].origins[].url) points at crowdgate itself, or at a proxy in front of it: point it at the application. Such requests are answered 508 origin_loop (said once a minute per site)',
    );
  }
  fail(ctx, 'origin_loop', `site "${site}": an origin URL (sites[].origins[].url) points back at this gateway`);
}

/** An absolute-form request target (RFC 9112 §3.2.2); group 1 is its authority. */
const ABSOLUTE_TARGET = /^https?:\/\/([^/?#]*)/i;

/** RFC 3986 host (reg-name, IPv4, or an IP literal in brackets) with an optional port. */
const VALID_HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?$/;

/** `Transfer-Encoding: chunked` and nothing else (any case, blanks around it). */
function isChunkedAlone(te: string): boolean {
  return te === 'chunked' || te.trim().toLowerCase() === 'chunked';
}

/** How many Host field lines the request carried (RFC 9112 §3.2: more than one is a 400). */
function hostLines(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') n++;
  return n;
}

export function route(ctx: Ctx): void | Promise<void> {
  const { req, rt, deps } = ctx;

  // 1. Parse checks the HTTP parser leaves to us.
  if (req.headers['content-length'] !== undefined && req.headers['transfer-encoding'] !== undefined)
    return fail(ctx, 'ambiguous_length'); // RFC 9112 §6.1: never forward (request smuggling)
  // RFC 9112 §6.1: a transfer coding the server does not implement is a 501, as nginx answers
  // any Transfer-Encoding but `chunked`. Node's parser takes `gzip, chunked` (chunked last) and
  // re-chunks the body for the origin under the same list: an origin that compares the field
  // to `chunked` alone then reads the body another way (request smuggling).
  const te = req.headers['transfer-encoding'];
  if (te !== undefined && !isChunkedAlone(te)) {
    // Its body cannot be framed, so the connection cannot carry another request (RFC 9112
    // §6.3): closed after the answer, not left to read the body's bytes as the next request.
    if (req.httpVersionMajor === 1) {
      ctx.res.setHeader('connection', 'close');
      closeAfterAnswer(req);
    }
    return fail(ctx, 'unsupported_transfer_coding', `Transfer-Encoding: ${te.slice(0, 100)}`);
  }
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. Here rather than Node's
  // requireHostHeader, whose 400 left no access-log line, metric or error code.
  if (req.headers.host === undefined && req.httpVersion === '1.1') return fail(ctx, 'bad_request', 'an HTTP/1.1 request needs a Host header');
  if (req.rawHeaders.length / 2 > rt.config.limits.maxHeadersCount) return fail(ctx, 'headers_too_large');
  // RFC 9110 §9.1: a method is case-sensitive, and Node's HTTP/1.1 parser refuses one in lower
  // case with 400, as nginx does. HTTP/2 hands any `:method` on: `purge` was read as PURGE,
  // `get` filled as GET, and `head` was answered as HEAD on a stream Node wrote for a body, which
  // it then reset (attacker trial).
  if (req.method !== undefined && /[a-z]/.test(req.method)) return fail(ctx, 'bad_request', 'a method in lower case (methods are case-sensitive)');
  // HTTP/2 advertises the bound (SETTINGS_MAX_HEADER_LIST_SIZE) but Node does not enforce it: a
  // 40 KB field was taken and sent on to the origin, on a shared fill too (attacker trial), where
  // HTTP/1.1 gets 431. A cached answer (the memo's hit path) is still served: it sends nothing on.
  if (req.httpVersionMajor === 2 && h2HeadBytesOf(req) > rt.config.limits.maxHeaderBytes) return fail(ctx, 'headers_too_large');
  if (answerServerOptions(ctx)) return;
  if (!ctx.rawUrl.startsWith('/') && !/^https?:\/\//i.test(ctx.rawUrl)) return fail(ctx, 'bad_request', 'unsupported request target');
  // `/static/..;/account`, `/static/..%2Faccount`: a dot segment the origin resolves and the
  // gateway would not, so the route and key would name another page (cache-key.ts).
  if (hasDisguisedDotSegment(ctx.rawUrl))
    return fail(ctx, 'bad_request', 'a dot segment hidden by a path parameter or an encoded slash');
  // RFC 9112 §3.2.2: with an absolute-form target the Host field is ignored and the target's
  // authority is the host, for routing, the key and the fill alike (nginx does the same). A
  // target naming no host, or with userinfo, is a 400 below.
  const absolute = ctx.rawUrl.charCodeAt(0) === 0x2f /* / */ ? null : ABSOLUTE_TARGET.exec(ctx.rawUrl);
  if (absolute !== null) {
    if (absolute[1] === '' || absolute[1]!.includes('@')) return fail(ctx, 'bad_request', 'absolute-form target without a valid authority');
    req.headers.host = absolute[1];
  }
  // RFC 9112 §3.2: a Host that is not a host[:port] is a 400 (`Host: [` reached the origin
  // client, which threw: a 500 for a malformed request).
  const host = req.headers.host;
  if (host !== undefined && (!VALID_HOST.test(host) || hostLines(req.rawHeaders) > 1))
    return fail(ctx, 'bad_request', 'malformed or repeated Host header');
  req.url = ctx.url; // pass-through sends the normalised target too (http-proxy reads req.url)
  const declaredLength = Number(req.headers['content-length'] ?? 0);
  if (!Number.isFinite(declaredLength) || declaredLength > rt.config.limits.maxBodyBytes) return fail(ctx, 'body_too_large');

  // 2. Site and route (config snapshot).
  const site = rt.router.match(req.headers.host);
  if (!site) return fail(ctx, 'no_site', `no site lists host "${String(req.headers.host ?? '').slice(0, 100)}"`);
  ctx.site = site;
  // A request this gateway sent to this site's origin, come back: never sent round again.
  if (req.headers[LOOP_FIELD] !== undefined && cameBack(req.headers[LOOP_FIELD], site.name, ctx.url)) return failLoop(ctx);
  // An HTTP/1.0 request without Host is for the site's first named host (nginx's $host: the
  // server name), in the key and on the origin request alike: the member's own address went
  // to the origin as Host, although preserveHost says the client's (attacker trial).
  if (req.headers.host === undefined) {
    for (const h of site.config.hosts) {
      const entry = readHostEntry(h); // as the router reads it: lower case, no port or trailing dot
      if (entry?.kind === 'exact') {
        req.headers.host = entry.host;
        break;
      }
    }
  }
  if (ctx.method === 'PURGE') return answerPurge(ctx, site);
  if (answerMaxForwards(ctx)) return;
  if (redirectToHttps(ctx, site)) return;
  const routeMatch = site.compiled.matchRoute(ctx.method, ctx.path, parseUrlPath(ctx.url).query);
  ctx.route = routeMatch;
  ctx.priority = rt.priorityOf(routeMatch, ctx.method, ctx.path, req.headers);

  // 3. Per-client rate limit (off unless configured).
  const retryAfter = deps.admission.takeRateLimit(site.name, routeMatch.name, (header) => rateLimitClientKey(req.headers, header, ctx.clientAddress));
  if (retryAfter !== undefined) {
    ctx.shedReason = 'rate_limited';
    deps.metrics.get('rateLimited').inc({ site: site.name, route: routeMatch.name });
    deps.metrics.get('retryAfter').observe(retryAfter);
    return fail(ctx, 'rate_limited', undefined, { retryAfterSeconds: retryAfter, state: 'shed' });
  }

  // 4. Cache eligibility.
  const policy = site.policyFor(routeMatch);
  const facts: RequestFacts = { method: ctx.method, url: ctx.url, headers: req.headers };
  const eligibility = isCacheableRequest(facts, policy);
  const bypassCookie = req.headers.cookie !== undefined && !routeMatch.config.cache.ignoreSessionCookies && hasBypassCookie(site, req.headers.cookie, deps);
  if (
    !eligibility.cacheable ||
    bypassCookie ||
    hasCredential(site, req.headers) ||
    ctx.method === 'OPTIONS' ||
    isEventStreamRequest(req.headers.accept)
  ) {
    return forwardUnlessShed(ctx, 'bypass');
  }
  // A fragment request (htmx, Turbo, Next.js RSC...) looks the key up, and bypasses there
  // unless the origin's Vary covers its fragment headers (decide()).
  const fragment = fragmentHeadersOf(site, req.headers);

  // A GET or HEAD with a chunked body on the cache path: the body is never sent on (a fill is
  // shared), but it is read, within limits.maxBodyBytes, before the answer (else 413).
  if (req.headers['transfer-encoding'] !== undefined)
    return discardBody(ctx).then((within) => (within ? lookup(ctx, policy, facts, eligibility.canStoreResponse, fragment) : undefined));
  return lookup(ctx, policy, facts, eligibility.canStoreResponse, fragment);
}

/**
 * Reads and drops a request body the cache path does not send on, counting it against
 * limits.maxBodyBytes as pass-through does (nginx's client_max_body_size applies to every
 * body): true once it has ended within the cap; past it, 413 and the connection closed (the
 * rest is never read), false. A client that leaves or stalls is the request timeout's.
 */
function discardBody(ctx: Ctx): Promise<boolean> {
  const { req, res, rt } = ctx;
  const max = rt.config.limits.maxBodyBytes;
  return new Promise((resolve) => {
    let seen = 0;
    const done = (within: boolean) => {
      req.off('data', onData).off('end', onEnd).off('error', onGone).off('close', onGone);
      resolve(within);
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen <= max) return;
      req.pause();
      done(false);
      res.setHeader('connection', 'close');
      fail(ctx, 'body_too_large', `the chunked request body passed limits.maxBodyBytes (${max} bytes)`);
    };
    const onEnd = () => done(true);
    const onGone = () => done(false);
    req.on('data', onData).on('end', onEnd).on('error', onGone).on('close', onGone);
  });
}

/** Steps 5 on: the key, the stored variants, and decide(). */
function lookup(ctx: Ctx, policy: PolicyOptions, facts: RequestFacts, canStore: boolean, fragment?: readonly string[]): void | Promise<void> {
  const { req, deps } = ctx;
  const site = ctx.site!;
  const routeMatch = ctx.route!;
  // 5. Lookup: the key, then the stored variant this request selects.
  const key = makeCacheKey({ site: site.name, authority: authorityOf(ctx), url: ctx.url, headers: req.headers, key: policy.route.key });
  if (ctx.memoHost !== undefined) rememberRoute(ctx, site, routeMatch, policy, key, canStore);
  // Memory hits are answered without a promise; anything else asks the store properly.
  const peeked = ctx.peeked?.key === key ? ctx.peeked.variants : deps.store.peekHit?.(key);
  const lookupFacts = { key, policy, facts, canStore, ...(fragment !== undefined ? { fragment } : {}) };
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
  if (memo === undefined || deps.admission.rateLimitApplies?.(site.name, route.name) !== false) return;
  if (!canStore || policy.route.key.headers.length > 0 || policy.route.key.cookies.length > 0) return;
  const secure = ctx.scheme === 'https';
  const known = memo.get(ctx.method, ctx.memoHost!, ctx.rawUrl, secure);
  if (known !== undefined && known.rt === rt && known.key === key) return;
  memo.set(ctx.method, ctx.memoHost!, ctx.rawUrl, { rt, site, route, key, path: ctx.url, hold: newHold(), plainBypass: plainBypassOf(site) }, secure);
}

/** Steps 5 to 9, once the stored variants are known. */
export function decide(
  ctx: Ctx,
  { key, policy, facts, canStore, fragment }: Pick<Lookup, 'key' | 'policy' | 'facts' | 'canStore' | 'fragment'>,
  variants: readonly CacheEntry[],
): void | Promise<void> {
  const { deps, req } = ctx;
  const site = ctx.site!;
  const variantHeaders = makeFillVisibleHeaders(site, req.headers, policy, variants);
  // A fragment request goes through the cache only where every stored copy of the key varies
  // on its fragment headers and on every other header a fill would send for it: the origin
  // said the page and the fragment are answers of their own (Django's
  // vary_on_headers('HX-Request'), Next.js's Vary: RSC, Next-Router-State-Tree...). Elsewhere a
  // fragment stored would be the page for everyone (a Next.js that forgot Vary: RSC,
  // CVE-2025-49005), a fill without the header would give the fragment request the page, and a
  // sibling header the origin did not name (HX-Target, X-Inertia-Partial-Data: Inertia's
  // Laravel adapter says only Vary: X-Inertia) would pick another fragment: it bypasses.
  const variedOn = fragment === undefined ? undefined : fragmentVariedOn(site, fragment, variants, variantHeaders, policy);
  if (fragment !== undefined && variedOn === undefined) return forwardUnlessShed(ctx, 'bypass');
  // A request that says who asks (`X-User-Token`) is not answered with a copy a fill made
  // without it, unless the origin said that copy is for everyone: it is the guest's page, and
  // the request goes to the origin as it came (its answer is stored as its own variant, fill.ts).
  const entry = variants.length === 0 ? undefined : selectVariant(variants, variantHeaders, identityFillInputs(variantHeaders, policy, []), variedOn !== undefined ? fragment : undefined);
  const now = deps.clock.now();
  const evaluation = entry ? evaluateEntry(entry, facts, now, policy) : undefined;
  const lookup: Lookup = { key, variants, entry, evaluation, policy, facts, variantHeaders, canStore, ...(variedOn !== undefined ? { fragment: variedOn } : {}) };
  // A copy made without this request's own cookies (isOtherCookiesCopy) is not its answer: it
  // asks the origin as it came, through the shed gate like any pass (passForOwnCookies). A copy
  // that varies on Cookie never answers it, even if the origin fails; one without cache headers
  // is the page without the cookies, and answers when the origin fails or sheds, and while the
  // gateway is overloaded (step 6), as it does for everyone.
  if (entry && isOtherCookiesCopy(ctx, entry, policy) && (entry.vary.includes('cookie') || !deps.admission.isOverloaded()))
    return passForOwnCookies(ctx, lookup, entry);

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

  // 6. The gateway itself is overloaded: answer from what is stored (also while the key's one
  //    refresh is under way: it runs at background priority, nobody should wait on it), keep it
  //    fresh with one collapsed background refresh per key; with nothing usable stored, join a
  //    fill already under way, or start the key's one collapsed fill (it turns the crowd's
  //    refusals into hits, and nothing else ends them); shed hit-for-pass keys.
  if (deps.admission.isOverloaded()) {
    const collapseKey = collapseKeyOf(lookup);
    return serveStaleOr(
      ctx,
      lookup,
      'pressure',
      () =>
        deps.inflight.isInflight(collapseKey.id) || !deps.inflight.isHitForPass(collapseKey.id) ? fillAndServe(ctx, lookup, 0) : passAlone(ctx, lookup),
      () => startBackgroundRefresh(ctx, lookup),
    );
  }

  // 7. The origin is busy (no usable member has a free permit: a fill would wait its turn) and a
  //    crowd read this page while the copy was fresh (wasReadOften): a stale copy the route's grace allows answers
  //    now instead of queueing behind the crowd, and the revalidation still runs, collapsed, at
  //    this request's priority, with nobody waiting for it (nginx's use_stale updating and
  //    Varnish's grace do the same without either test). A page read now and then, or an origin
  //    with room, waits for the revalidation as RFC 9111 says (busy permits are no outage: if
  //    its wait is refused or times out, the copy answers then, step "any failure").
  if (entry && evaluation && isServableWhileUpdating(entry, evaluation) && wasReadOften(entry) && deps.upstream.isBacklogged(site.pool)) {
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
    const reason: StaleReason = site.pool.isAnyHealthy() ? 'circuit_open' : 'origin_down';
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
  if (entry && evaluation && isServableWhileUpdating(entry, evaluation) && deps.inflight.isInflight(collapseKeyOf(lookup).id)) {
    serveEntry(ctx, entry, evaluation, { state: 'updating', staleReason: 'while_revalidate', collapsed: true });
    deps.metrics.get('staleServed').inc({ site: site.name, reason: 'while_revalidate' });
    return;
  }

  // 9b. This page's last fill or refresh failed a moment ago (the origin answered 5xx or 429,
  //    refused, timed out): a copy the route allows on failure answers now, and the origin is
  //    asked again once REFRESH_RETRY_MS has passed, not by every visitor meanwhile.
  if (entry && evaluation?.withinGraceOnFailure && !evaluation.refetchDemanded && refreshFailedMomentAgo(ctx, lookup)) {
    ctx.staleReason = 'error';
    serveEntry(ctx, entry, evaluation, { state: 'stale', staleReason: 'error' });
    deps.metrics.get('staleServed').inc({ site: site.name, reason: 'error' });
    return;
  }

  // 10. Hit-for-pass: this URL was recently uncacheable; don't queue behind a leader. One
  //    request a second fills it instead (nobody waits on that fill: the others pass), and its
  //    answer is stored when it may be, which ends the mark, as Varnish's hit-for-miss stores
  //    the next storable answer: a client whose own requests the origin answered uncacheable,
  //    leading each fill as the mark ran out, kept a hot page passed (attacker trial), and a
  //    page fixed to be cacheable waited out a mark of up to 120 s. Only a request the fill is
  //    made as it came (no cookies of its own, no Range): such a one would be sent again as it
  //    came after an unstorable answer, two origin requests where its pass is one.
  const passKey = collapseKeyOf(lookup).id;
  if (deps.inflight.isHitForPass(passKey)) {
    const asItCame = req.headers.range === undefined && !carriesOwnCookies(req.headers.cookie, lookup.policy);
    return asItCame && deps.inflight.takeHitForPassProbe(passKey) ? fillAndServe(ctx, lookup, 0) : forward(ctx, 'pass', lookup);
  }

  // 10b. A request the fill would be made without part of (its own cookies, a Range), for a
  //    query of a path whose last fill answered something not storable (a search's `private`
  //    page), with nothing stored for its key: sent as it came. A fill would be made without
  //    them, answer `private` again, and the request would go again as it came (passWithoutCopy;
  //    serveFillResult for a Range): every search with a `theme=dark` cookie ran twice on the
  //    origin, and its visitor waited for both (new-user trial: search p99 1.4 s against an
  //    origin's 0.8 s). Not while a fill or such a pass of the key is under way, nor while the
  //    origin is backlogged: a crowd on a page just purged collapses on one fill as before.
  if (isPassOnPath(ctx, lookup)) {
    const key = collapseKeyOf(lookup).id;
    if (deps.inflight.beginPathPass(key)) {
      ctx.res.once('close', () => deps.inflight.endPathPass(key));
      ctx.passDetail = 'pass path uncacheable';
      return forward(ctx, 'pass', lookup);
    }
  }

  // 11. Collapsed fill.
  return fillAndServe(ctx, lookup, 0);
}

/** Step 10b's test: nothing stored for the key, a request a fill would be made without part of, on a path (or directory) lately uncacheable. */
function isPassOnPath(ctx: Ctx, lookup: Lookup): boolean {
  if (lookup.entry !== undefined || lookup.variants.length > 0) return false;
  const headers = ctx.req.headers;
  const cookies = carriesOwnCookies(headers.cookie, lookup.policy);
  const range = ctx.method === 'GET' && headers.range !== undefined;
  if (!cookies && !range) return false;
  const { deps } = ctx;
  // A mark for cookie holders (copies varying on Cookie) is not for a request whose only own
  // cookies are sessions the route ignores (cache.ignoreSessionCookies): a stored copy answers
  // it as anyone's. DokuWiki's styles vary on Cookie, and each new `?tseed=` URL of
  // `css.php` went to PHP for every visitor for the mark's 10 minutes (DokuWiki trial).
  const cookieHolder = cookies && carriesOwnCookies(headers.cookie, lookup.policy, true);
  // A Range on its path's own mark alone, and not one for cookies only: a directory's may be
  // some other page's (a new episode under /podcast/ must still be stored whole).
  const marked = pathKeysOf(ctx).some((key, i) => {
    const mark = deps.inflight.pathUncacheable(key);
    return mark !== undefined && (mark.cookiesOnly ? cookieHolder : cookies || i === 0);
  });
  return marked && !deps.inflight.isInflight(collapseKeyOf(lookup).id) && !deps.upstream.isBacklogged(ctx.site!.pool);
}

/**
 * True when the Cookie header names a cookie that makes this site bypass the cache
 * (sites[].bypassCookies). In the same pass, a cookie of the default list that the site's own
 * list leaves out is noted for a warning (noteLeftOutSessionCookies) while any such pattern has
 * not been warned of yet.
 */
function hasBypassCookie(site: SiteRuntime, header: string, deps: RequestDeps): boolean {
  const leftOut = site.leftOutDefaults !== undefined && site.leftOutDefaults.unwarned.size > 0 ? site.leftOutDefaults : undefined;
  let carried: string[] | undefined;
  for (const name of parseCookies(header).keys()) {
    const bypass = site.isBypassCookie(name);
    if (!bypass && (leftOut === undefined || !leftOut.matchesAny(name))) continue;
    // Named like a session cookie, but never one: an analytics script's (Hotjar's
    // `_hjSession_*` on every visitor from the first page on, MediaWiki's `*mwuser-sessionId`:
    // browser trial). Not a route's key.ignoreCookies: a glob there too wide (`mywiki*` for
    // `mywikiUserName`) would have let the wiki's own session cookie through (review).
    if (isSessionLookalike(name)) continue;
    if (bypass) return true;
    (carried ??= []).push(name);
  }
  if (carried !== undefined) noteLeftOutSessionCookies(deps, site, leftOut!, carried);
  return false;
}

/**
 * A request carrying a cookie that the default bypassCookies list would bypass, on a site whose
 * own list leaves that pattern out: a warning, once per pattern under each config (the cookie's
 * name, never its value). A WordPress operator who listed only WooCommerce's cookies had the
 * admin served cached anonymous pages, and the reload said only "changes: bypassCookies"
 * (WordPress trial). Nothing else changes: the list given is the operator's word.
 */
function noteLeftOutSessionCookies(deps: RequestDeps, site: SiteRuntime, leftOut: LeftOutDefaults, names: readonly string[]): void {
  for (const name of names) {
    const pattern = leftOut.patternOf(name);
    if (pattern === undefined || !leftOut.unwarned.delete(pattern)) continue;
    deps.logger.warn(
      { site: site.name, cookie: name.slice(0, 64), pattern },
      `a request carried a cookie the default bypassCookies list names (${pattern}) and this site's list leaves out: it was treated as an anonymous visitor's. If it is a login or session cookie, add the pattern to sites[].bypassCookies`,
    );
  }
}

/** True when the request carries a credential header (sites[].credentialHeaders): it bypasses the cache. */
function hasCredential(site: SiteRuntime, headers: IncomingHttpHeaders): boolean {
  for (const name of site.credentialHeaders) if (fieldOf(headers, name) !== undefined) return true;
  return false;
}

/**
 * The names a fragment request's answer is stored varying on (its fragment headers and every
 * name a stored copy of the key varies on), when every stored copy varies on its fragment
 * headers and on every other header a fill sends for it (but Accept* and User-Agent, which
 * every fill sends); else undefined: it bypasses (decide()).
 */
function fragmentVariedOn(site: SiteRuntime, fragment: readonly string[], variants: readonly CacheEntry[], variantHeaders: IncomingHttpHeaders, policy: PolicyOptions): string[] | undefined {
  // Strict mode (fillHeaders.only) fills without the headers it does not list: a sibling it
  // leaves out (HX-Target) would never be seen, and its fragment stored for every target (review).
  if (variants.length === 0 || site.config.fillHeaders.only !== undefined) return undefined;
  const names = new Set(fragment);
  for (const v of variants) {
    if (!variesOnAll(v, fragment) || uncoveredFillInputs(variantHeaders, policy, v.vary).length > 0) return undefined;
    for (const name of v.vary) names.add(name);
  }
  return [...names];
}

/**
 * The fragment-request headers the request carries (sites[].bypassHeaders, lower-case: htmx's
 * HX-Request, Turbo-Frame, Next.js's RSC...), or undefined for none: the origin answers it with
 * a fragment of the page at the same URL, seldom saying Vary (decide() lets it bypass).
 */
function fragmentHeadersOf(site: SiteRuntime, headers: IncomingHttpHeaders): string[] | undefined {
  let present: string[] | undefined;
  for (const name of site.bypassHeaders) if (fieldOf(headers, name) !== undefined) (present ??= []).push(name);
  return present;
}

/**
 * An HTTP/2 request's head as HTTP/1.1 would spell it (request line, then `name: value` lines),
 * in characters: what `limits.maxHeaderBytes` bounds on the HTTP/1.1 listener.
 */
export function h2HeadBytesOf(req: IncomingMessage): number {
  let bytes = (req.method?.length ?? 0) + (req.url?.length ?? 0) + 12; // `GET /x HTTP/1.1\r\n`
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) bytes += raw[i]!.length + raw[i + 1]!.length + 4;
  return bytes;
}
