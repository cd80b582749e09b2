/**
 * The collapsed cache fill: one leader per key and variant asks upstream for a member and a
 * permit, fetches (conditionally when it can), stores, and hands one result to every waiter;
 * background refreshes; collapsing across instances through Redis.
 */
import { LOOP_FIELD, fillLoopValue, loopIdOf, loopIdsIn } from '../http/loop.js';
import { latencyClassOf, pageOf } from '../admission/limiter.js';
import type { Fence } from '../cache/purge-fence.js';
import { isSharedByOrigin, isNeverFresh, type CacheEntry } from '../cache/entry.js';
import { isTextual, makeEncodings, STORED_CODINGS, whyNotCompressed } from '../cache/content-coding.js';
import { makeFillTarget, makeVariantKey, normaliseTarget } from '../cache/cache-key.js';
import { decideStorage, evaluateEntry, isHeuristicallyCacheable, type NotStoredReason, type PolicyOptions } from '../cache/policy.js';
import { makeConditionalHeaders, mergeNotModified } from '../cache/revalidation.js';
import { asksForOtherThanAPage, isDataFormat, isNavigation, speaksForStored } from '../cache/accept.js';
import type { FetchResult } from '../origin/fetch.js';
import type { OriginMember } from '../origin/pool.js';
import { SICK_STATUSES } from '../origin/upstream.js';
import { fail, recordAnswer, serveEntry, writeBuffered } from './answer.js';
import { selectVariant, collapseKeyOf, isOtherAskersCopy, noteAttempt, pathKeysOf, variesOnAll, type FillResult, type Ctx, type Lookup } from './context.js';
import { makeFillVisibleHeaders, makeFillHeaders, plainFillHeaders, joinPath, clientHeaders, unkeyedFillInputs, identityFillInputs, identityNamesVariedOn, carriesOwnCookies } from './fill-headers.js';
import { reflectedInputs, repeatsAddress, valueForLog, varyingAlsoOn, type Finding, type UnkeyedInput } from '../cache/reflection.js';
import type { CollapseKey } from '../cache/cache-key.js';
import { forward, forwardUnlessShed } from './pass-through.js';
import { isAnswered, isResponseGone } from './headers.js';
import { queueDeadlineFor, routeCapOf, timeoutsFor, type SiteRuntime } from '../runtime.js';
import { compressBuffered, onTheFlyRequestOf } from './on-the-fly.js';
import { originFailure, hasStaleOnFailure, inheritHeat, hasOtherMember, refusedFill, serveFailed, serveStaleOr } from './stale.js';

export async function fillAndServe(ctx: Ctx, lookup: Lookup, attempt: number): Promise<void> {
  const { deps } = ctx;
  // A request carrying no-store (RFC 9111 §5.2.1.5) may be answered from the store, but what
  // the origin answers it is not stored: it joins a fill already under way, and otherwise goes
  // alone, never leading a shared fill. Leading one, its unstored answer marked the key
  // hit-for-pass, and one such request sent everyone's requests for the page to the origin for
  // hitForPassSeconds.
  const collapseKey = collapseKeyOf(lookup);
  if (!lookup.canStore && !deps.inflight.isInflight(collapseKey.id)) return passAlone(ctx, lookup);
  const joined = deps.inflight.join(collapseKey.id, waiterDeadlineMs(ctx));

  if (joined.role === 'leader') {
    // A client that leaves while its fill still waits for an origin permit, with nobody else
    // waiting on that fill (or once the last waiter has left too), takes the fill out of the
    // queue: nobody wants its answer now. A client sending unique URLs and closing each at once
    // (or resetting each HTTP/2 stream) had its fills hold the queue while the origin was slow,
    // and logged-in pages and POSTs got 503 (attacker trial). A fill already sent goes on and is
    // stored, as Varnish's does.
    const abandon = new AbortController();
    const onLeft = () => {
      if (!isAnswered(ctx.res)) joined.left(() => abandon.abort());
    };
    ctx.res.once('close', onLeft);
    if (isResponseGone(ctx.res)) onLeft(); // gone during the lookup: its 'close' has fired already
    const fillStartedAt = deps.clock.now();
    let result: FillResult;
    try {
      result = await fillAcrossInstances(ctx, lookup, collapseKey, 'fill', undefined, abandon.signal);
    } catch (err) {
      deps.logger.error({ err, requestId: ctx.requestId }, 'cache fill failed unexpectedly');
      result = { kind: 'failed', code: 'internal_error', staleReason: 'error', requestCaused: true };
    } finally {
      ctx.res.off('close', onLeft);
    }
    // Given up in the queue: a waiter that came since fills again (abandoned, below).
    if (abandon.signal.aborted && result.kind === 'failed' && result.shedReason !== undefined) result = { ...result, abandoned: true };
    // Not for an uncacheable answer to a page that has a stored copy: the URL was cacheable,
    // and this answer may be about the request that drew it (a mobile User-Agent's redirect
    // right after a POST invalidated the copy sent a hot page's crowd to the origin for 5 s,
    // again at will; attacker trial). The next request fills again; once the copy has gone,
    // an uncacheable answer marks the URL as before.
    if ((result.kind === 'uncacheable' && !result.once && lookup.entry === undefined) || result.kind === 'too_large') {
      // Grown only on a 200 (Redmine's private pages): a redirect or another status may be about
      // the request that drew it, and a client whose User-Agent the origin redirected, leading
      // each fill as its mark ran out, held a hot page passed to the origin for 120 s at a time
      // (attacker trial).
      const grows = result.kind === 'too_large' || result.status === 200;
      deps.inflight.markHitForPass(collapseKey.id, ctx.rt.config.cache.collapse.hitForPassSeconds * 1000, grows, fillStartedAt);
      deps.metrics.get('hitForPass').inc({ site: ctx.site!.name });
    } else if (result.kind === 'entry' && result.stored) deps.inflight.clearHitForPass(collapseKey.id);
    // The path's other queries too, for requests the fill would be made without (isPassOnPath).
    notePathAnswer(ctx, lookup, result);
    fillSettledAt.set(result, deps.clock.now());
    noteRefreshOutcome(ctx, collapseKey.id, result, lookup);
    joined.settle(result);
    // The answer varies on Cookie (or came without cache headers) and this request has cookies
    // the fill did not send: it is stored for the others, and this request asks the origin as
    // it came. So does one whose answer cannot be shared at all (private, no-store, a
    // Set-Cookie): it was made without this request's cookies, so it is not this request's
    // either (the anonymous `/account` page, and its Set-Cookie, went to a user with a session
    // cookie outside bypassCookies; new-user trial).
    if (result.kind === 'entry' && isOtherCookiesCopy(ctx, result.entry, lookup.policy)) return passForOwnCookies(ctx, lookup, result.entry);
    if (result.kind === 'uncacheable' && carriesOwnCookies(ctx.req.headers.cookie, lookup.policy)) return passWithoutCopy(ctx, lookup);
    if (result.kind === 'failed' && result.abandoned) return; // its client has gone: no answer, no shed counted
    return serveFillResult(ctx, lookup, result, false);
  }

  ctx.collapsed = true;
  deps.metrics.get('collapsed').inc({ site: ctx.site!.name });
  let outcome: FillResult | 'timeout' = 'timeout';
  if (joined.role === 'waiter') {
    // A waiter whose client leaves no longer counts: neither toward maxWaiters nor as someone
    // the fill is kept for (its leader gone too, the fill gives its queue place up).
    let hasLeft = false;
    const onLeft = () => {
      if (isAnswered(ctx.res)) return;
      hasLeft = true;
      joined.leave();
    };
    ctx.res.once('close', onLeft);
    outcome = await joined.result;
    ctx.res.off('close', onLeft);
    if (hasLeft) return; // nobody to answer: no fill of its own (below) for a client that has gone
  }
  // The wake-up moment is when the fill finished, not when this waiter's turn came to run.
  ctx.wokenAt = (outcome !== 'timeout' && fillSettledAt.get(outcome)) || deps.clock.now();
  if (outcome === 'timeout') {
    // Waited past the deadline (or too many waiters): stale if we can, else fetch alone.
    return serveStaleOr(ctx, lookup, 'timeout', () => passAlone(ctx, lookup));
  }
  // An error its leader got that is kept for nobody (not stored, or stored without a lifetime:
  // never reused) may be about the leader's own request: a 404 a WAF gave a scanner's
  // User-Agent (fetchForCache's recheck could not tell, or nothing was stored to check
  // against), a 400 for a header too large for the origin. The waiters make one fill of their
  // own, collapsed again, as after a server error (below): a scanner leading a page's fill gave
  // the visitors who joined it his 404, and after a 400 each asked the origin alone.
  if (attempt === 0 && isLeadersError(outcome)) return fillAndServe(ctx, lookup, attempt + 1);
  if (outcome.kind === 'entry') {
    // The leader's variant may not be ours (Vary); then fill our own variant, once. Collapsed
    // on the origin's own Vary, not on the names the leader's answer echoed: a leader whose
    // echo was a false match (`User-Agent: html` on any HTML page) would otherwise send every
    // waiter with another value to the origin on its own.
    if (isOtherCookiesCopy(ctx, outcome.entry, lookup.policy)) return passForOwnCookies(ctx, lookup, outcome.entry);
    if (
      makeVariantKey(outcome.entry.vary, lookup.variantHeaders) !== outcome.entry.variantKey ||
      (lookup.fragment !== undefined && !variesOnAll(outcome.entry, lookup.fragment))
    ) {
      const echoed = outcome.echoed;
      return fillOwnVariant(ctx, lookup, [echoed?.length ? { ...outcome.entry, vary: outcome.entry.vary.filter((n) => !echoed.includes(n)) } : outcome.entry], attempt);
    }
    // A fill made without a header this request carries naming who asks (X-User-Token), whose
    // answer the origin did not give for everyone: not this request's page (selectVariant's rule
    // for stored copies; attacker trial: Alice, arriving during a guest's fill, got the guest's
    // page). Such waiters make one more fill, collapsed again (stored as its leader's value's
    // copy, which the waiters with that value share); the others ask alone. Each asking alone,
    // 20 requests of one tenant behind a guest's fill were 20 origin fetches (review).
    if (isOtherAskersCopy(outcome.entry, identityFillInputs(lookup.variantHeaders, lookup.policy, [])))
      return fillOwnVariant(ctx, lookup, [outcome.entry, ...lookup.variants.filter((v) => v.variantKey !== outcome.entry.variantKey)], attempt);
    return serveFillResult(ctx, lookup, outcome, true);
  }
  if (outcome.kind === 'uncacheable' || outcome.kind === 'too_large') {
    // Not shareable: every waiter asks the origin itself (through the limiter).
    return passAlone(ctx, lookup);
  }
  // Its leader's client left while the fill was queued, before this waiter came: fill again.
  if (outcome.kind === 'failed' && outcome.abandoned) return attempt === 0 ? fillAndServe(ctx, lookup, attempt + 1) : passAlone(ctx, lookup);
  // Its leader's own request failed it (a gateway bug it met, a header the HTTP client would
  // not send): the waiters make one fill of their own, collapsed again, as after a server
  // error (below). A client's `constructor: xyzzy123` header made every fill throw, and every
  // visitor collapsed onto its fill got 500 (attacker trial).
  if (outcome.kind === 'failed' && outcome.requestCaused)
    return serveStaleOr(ctx, lookup, 'error', () => (attempt === 0 ? fillAndServe(ctx, lookup, attempt + 1) : serveFillResult(ctx, lookup, outcome, true)));
  // A server error, a 503 and a 429 included, may be about the leader's own request: its
  // User-Agent or Accept-Language went with the fill (review: one client whose User-Agent
  // tripped an origin bug got every waiter a 502; an origin throttling a crawler by its
  // User-Agent got the visitors who joined the crawler's fill a 503: failure-day trial), or its
  // address in X-Forwarded-For (nginx's limit_req answers 503 by default: one client the origin
  // rate-limited, asking first for each new page, got every visitor who joined its fills a 503;
  // attacker trial). So the waiters make one fill of their own, collapsed again (one of them
  // leads it); only when that one fails too is the failure the page's, and they share it as
  // the gateway's own answer, never the origin's bytes: 503 (`origin_unavailable`) for a 503,
  // with the origin's Retry-After (a maintenance page's waiters were told `overloaded` and
  // Retry-After: 1, as if the gateway were shedding: trial), or for a 429 with ours (the
  // origin's may be about the leader alone); 502 (`origin_failed`) for any other. Each asking
  // alone, a crowd on a page that failed after 2 s (a database timeout) was 50 requests at once
  // on 4 PHP workers, and the rest of the site got 503 (failure-day trial); a stored copy
  // answers them first (serveStaleOr).
  if (outcome.kind === 'origin_error') {
    const orElse = () =>
      attempt === 0
        ? fillAndServe(ctx, lookup, attempt + 1)
        : outcome.status === 503 || outcome.status === 429
          ? fail(ctx, 'origin_unavailable', `the origin answered ${outcome.status} to this page's fill, twice`, {
              // A 503 speaks for the site (maintenance); a 429 may be about the leader alone.
              retryAfterSeconds:
                (outcome.status === 503 ? retryAfterOf(outcome.headers['retry-after'], ctx.deps.clock.now()) : undefined) ??
                ctx.deps.admission.retryAfterSeconds(ctx.site!.name),
              state: 'error',
            })
          : fail(ctx, 'origin_failed', `the origin answered ${outcome.status} to this page's fill, twice`, { state: 'error' });
    // A purged or invalidated copy does not stand in for a 429 its leader drew (it may be about
    // that client alone: noteRefreshOutcome) before the waiters have asked once more: a client
    // the origin rate-limited served a taken-down page to those who joined its fills.
    if (outcome.status === 429 && attempt === 0 && lookup.entry?.invalidatedAt !== undefined) return orElse();
    return serveStaleOr(ctx, lookup, 'error', orElse);
  }
  return serveFillResult(ctx, lookup, outcome, true);
}

/** A fill's error answer kept for nobody but its leader (fillAndServe's waiters ask once more). */
function isLeadersError(outcome: FillResult): boolean {
  if (outcome.kind === 'uncacheable') return outcome.drawn === true || (outcome.once === true && outcome.status >= 400);
  return outcome.kind === 'entry' && outcome.entry.status >= 400 && outcome.entry.status < 500 && isNeverFresh(outcome.entry);
}

/**
 * Marks this fill's path (and directory) when its answer, for a key with nothing stored, is
 * not one a request with cookies of its own (or, when not storable at all, a Range) could use;
 * clears them when it is one anyone may use (Inflight.markPathUncacheable).
 */
function notePathAnswer(ctx: Ctx, lookup: Lookup, result: FillResult): void {
  const inflight = ctx.deps.inflight;
  const keys = pathKeysOf(ctx);
  const entry = result.kind === 'entry' ? result.entry : undefined;
  const notForCookies = entry !== undefined && (entry.vary.includes('cookie') || isNeverFresh(entry));
  if (entry !== undefined && !notForCookies) {
    for (const key of keys) inflight.clearPathUncacheable(key);
    return;
  }
  if (lookup.entry !== undefined || lookup.variants.length > 0) return;
  if (!notForCookies && !(result.kind === 'uncacheable' && !result.once)) return;
  // A copy never for requests with cookies of their own (varying on Cookie, or without cache
  // headers) marks the path for them for COOKIE_PATH_MARK_MS: passing them costs the origin
  // nothing a fill would not (the copy is never theirs), and after hitForPassSeconds every
  // Django visitor (each carries `csrftoken` from its first form) cost two requests per page
  // of the long tail, a 4 s export 8 s (new-user trial).
  // The path itself only: its directory's other pages may be anyone's (review: one `Vary:
  // Cookie` page under /products/ would have passed every cookie holder's request there).
  const hitForPassMs = ctx.rt.config.cache.collapse.hitForPassSeconds * 1000;
  keys.forEach((key, i) => inflight.markPathUncacheable(key, notForCookies && i === 0 && hitForPassMs > 0 ? Math.max(hitForPassMs, COOKIE_PATH_MARK_MS) : hitForPassMs, notForCookies));
}

/** An error undici raised before sending: an argument (a header) or a request shape it does not take (Expect). */
function isRefusedRequest(err: Error): boolean {
  const code = (err as { code?: string }).code;
  return code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED';
}

/** How long a path whose copies are never for requests with cookies of their own passes them straight (notePathAnswer). */
export const COOKIE_PATH_MARK_MS = 10 * 60_000;

/**
 * A waiter whose fill answered another variant than its own: one more fill, collapsed again,
 * knowing `variants` (the fill's answer among them), or, already on that second try, alone.
 */
function fillOwnVariant(ctx: Ctx, lookup: Lookup, variants: CacheEntry[], attempt: number): Promise<void> | void {
  if (attempt >= 1) return passAlone(ctx, lookup);
  const variantHeaders = makeFillVisibleHeaders(ctx.site!, ctx.req.headers, lookup.policy, variants);
  return fillAndServe(ctx, { ...lookup, variants, variantHeaders, entry: undefined, evaluation: undefined }, attempt + 1);
}

/**
 * How long a request waits on a fill under way: `cache.collapse.waitDeadlineMs`, or longer when
 * the fill itself may take longer to get its answer's head (the route's `connectMs` +
 * `responseHeadersMs`, twice when it may try a second member, plus a second for its permit).
 * Giving up first, every waiter of a 12 s page fetched it alone at the same moment: 50 origin
 * requests at once instead of one (failure-day trial). A fill that fails or times out still
 * answers its waiters (stale, or the gateway's error). Once the fill has its answer's head
 * with a length it will store, its waiters wait for the body up to two more of these
 * (Inflight.setAnswering).
 */
function waiterDeadlineMs(ctx: Ctx): number {
  const own = ctx.rt.config.cache.collapse.waitDeadlineMs;
  const site = ctx.site!.config;
  const timeouts = timeoutsFor(site, ctx.route);
  // A fill that timed out on one member tries another once (runFill): twice the time then
  // (review: waiters gave up while the retry was about to answer, and 4 of 9 met the hung member).
  // So does a fill whose trial of an ejected member failed, whatever retryOnConnectFailure says.
  const tries = site.origins.length > 1 ? 2 : 1;
  const fill = tries * (timeouts.connectMs + timeouts.responseHeadersMs) + FILL_PERMIT_MARGIN_MS;
  return own > fill ? own : fill;
}

/** A declared Content-Length the fill will store (at most `max` bytes); no length, or a larger one, is not. */
function isStorableLength(value: string | string[] | undefined, max: number): boolean {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || !/^\d{1,15}$/.test(text.trim())) return false;
  return Number(text.trim()) <= max;
}

/** What a waiter allows a fill beyond its response-head timeout: its wait for a permit (ms). */
const FILL_PERMIT_MARGIN_MS = 1_000;

/**
 * A waiter that cannot use the shared result asks the origin alone, as a pass; while the
 * pressure gate sheds (its hard level) it takes the gate's allowance like any uncacheable
 * request, or is shed (it joined the fill because the key looked cacheable, not to get past
 * the gate).
 */
export function passAlone(ctx: Ctx, lookup: Lookup): void | Promise<void> {
  return forwardUnlessShed(ctx, 'pass', lookup);
}

/**
 * A stored answer made for the cookies its fill sent (none but the key template's) that is not
 * this request's when it carries others (carriesOwnCookies; analytics cookies do not count):
 * one that varies on Cookie (RFC 9111 §4.1), or one without freshness or validator, whose
 * origin sent no cache headers and so never said the page is the same without the cookies
 * (new-user trial: `cart_id=alice` got "Cart none" on every request, `remember_token=alice`
 * "you are guest").
 */
export function isOtherCookiesCopy(ctx: Ctx, entry: CacheEntry, policy: PolicyOptions): boolean {
  return (entry.vary.includes('cookie') || isNeverFresh(entry)) && carriesOwnCookies(ctx.req.headers.cookie, policy, true);
}

/**
 * A request with cookies of its own whose stored copy was made without them
 * (isOtherCookiesCopy) asks the origin as it came. A copy that varies on Cookie is never its
 * answer. A copy without cache headers is the page without the cookies, maybe the same: it
 * answers when the origin fails or the gateway sheds, as it would for anyone (review: visitors
 * with a language or currency cookie got 503s and errors where the copy used to answer).
 */
export function passForOwnCookies(ctx: Ctx, lookup: Lookup, copy: CacheEntry): void | Promise<void> {
  ctx.passDetail = OWN_COOKIES_DETAIL;
  if (copy.vary.includes('cookie')) return passWithoutCopy(ctx, lookup);
  return passAlone(ctx, { ...lookup, entry: copy, evaluation: evaluateEntry(copy, lookup.facts, ctx.deps.clock.now(), lookup.policy) });
}

/**
 * Why a request with cookies of its own went to the origin, in its Cache-Status: a bare
 * `pass` left a wiki's returning visitors (MediaWiki keeps `wikiUserName` 180 days after
 * logout) wondering why they were never answered from the cache (new-user trial).
 */
const OWN_COOKIES_DETAIL = 'pass cookies the fill was made without';

/** passAlone for a request with cookies of its own, never falling back to the copy that was not this request's if the origin fails. */
export function passWithoutCopy(ctx: Ctx, lookup: Lookup): void | Promise<void> {
  ctx.passDetail = OWN_COOKIES_DETAIL;
  return passAlone(ctx, { ...lookup, entry: undefined, evaluation: undefined });
}

/** The most Retry-After passed on from the origin, s. */
const MAX_ORIGIN_RETRY_AFTER_S = 3600;

/** An origin's Retry-After (delta-seconds or an HTTP-date, RFC 9110 §10.2.3) in whole seconds from `now`, at most an hour; undefined when absent or unreadable. */
export function retryAfterOf(value: unknown, now: number): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (typeof text !== 'string') return undefined;
  const trimmed = text.trim();
  const seconds = /^\d{1,10}$/.test(trimmed) ? Number(trimmed) : Math.ceil((Date.parse(trimmed) - now) / 1000);
  if (!Number.isFinite(seconds) || seconds < 1) return undefined;
  return Math.min(seconds, MAX_ORIGIN_RETRY_AFTER_S);
}

/** A fill's first try went to a suspect member (OriginLease.suspect), and another member is usable to try instead. */
function suspectFailedElsewhereUsable(suspect: boolean, attempt: number, site: SiteRuntime, member: OriginMember, now: number): boolean {
  return suspect && attempt === 0 && hasOtherMember(site, member, now);
}

/** When each shared fill result was handed to its waiters (for the access log's afterWakeMs). */
const fillSettledAt = new WeakMap<FillResult, number>();

/** Serves the shared fill result to the leader or a waiter. */
export function serveFillResult(ctx: Ctx, lookup: Lookup, result: FillResult, collapsed: boolean): void | Promise<void> {
  const now = ctx.deps.clock.now();
  switch (result.kind) {
    case 'entry': {
      const evaluation = evaluateEntry(result.entry, lookup.facts, now, lookup.policy);
      return serveEntry(ctx, result.entry, evaluation, {
        state: result.state,
        collapsed,
        stored: result.stored,
        fwdStatus: result.fwdStatus,
        missKind: lookup.variants.length > 0 && !lookup.entry ? 'vary-miss' : undefined,
      });
    }
    case 'uncacheable': {
      // A range request whose fill (for the whole object) found it not storable: the range goes
      // to the origin as a pass, with its Range, as the waiters' do (passAlone) and the next
      // requests will (hit-for-pass). Under pressure the full answer at hand is sent instead.
      if (!collapsed && result.status === 200 && ctx.method === 'GET' && ctx.req.headers.range !== undefined && !ctx.deps.admission.isOverloaded())
        return forward(ctx, 'pass', lookup);
      const answer = recordAnswer(ctx, { state: 'pass', fwdStatus: result.fwdStatus, detail: `pass ${result.reason}` });
      // Not stored, so compressed for this answer alone, at the on-the-fly level.
      const compressing = compressBuffered(ctx.rt.config.compression, ctx.method, onTheFlyRequestOf(ctx.req.headers, ctx.site!.credentialHeaders), result.status, result.headers, result.body);
      if (compressing === undefined) return writeBuffered(ctx, answer, result.status, result.headers, result.body);
      return compressing.then((c) => writeBuffered(ctx, answer, result.status, c?.head ?? result.headers, c?.body ?? result.body));
    }
    case 'origin_error': {
      return serveStaleOr(ctx, lookup, 'error', () =>
        writeBuffered(ctx, recordAnswer(ctx, { state: 'miss', fwdStatus: result.fwdStatus }), result.status, result.headers, result.body),
      );
    }
    case 'failed':
      return serveFailed(ctx, lookup, result);
    case 'too_large':
      return forward(ctx, 'pass', lookup);
  }
}

/**
 * One origin fetch for the cache: member + permit, conditional when a stored entry has
 * validators, store when storable. Never tied to a client: the result belongs to the cache.
 */
async function runFill(ctx: Ctx, lookup: Lookup, kind: 'fill' | 'background', priorityOverride?: number, collapseId?: string, signal?: AbortSignal): Promise<FillResult> {
  // A purge made while this fill is away (an edit's PURGE) also covers what it brings back.
  const fences = ctx.deps.purgeFence;
  const fence = fences?.begin(lookup.key);
  try {
    return await fetchForCache(ctx, lookup, kind, priorityOverride, fence, collapseId, signal, (entry) => {
      const storable = fence === undefined ? entry : fences!.apply(fence, entry);
      return storable === undefined ? Promise.resolve() : ctx.deps.store.put(storable);
    });
  } finally {
    if (fence !== undefined) fences!.end(fence);
  }
}

/** runFill's fetch and store; `put` stores through the fill's purge `fence`, which its own purges do not cover. */
async function fetchForCache(
  ctx: Ctx,
  lookup: Lookup,
  kind: 'fill' | 'background',
  priorityOverride: number | undefined,
  fence: Fence | undefined,
  /** The collapse group whose waiters this fill answers (Inflight.setAnswering). */
  collapseId: string | undefined,
  /** Aborts the wait for a permit (a fill nobody waits for any more), not a fetch under way. */
  signal: AbortSignal | undefined,
  put: (entry: CacheEntry) => Promise<void>,
): Promise<FillResult> {
  const { deps, rt } = ctx;
  const site = ctx.site!;
  const excluded = new Set<OriginMember>();
  // A reused connection reset under this fill is retried once (below), on a new connection.
  let reusedRetried = false;
  // Sent again after a suspect member failed it: to a usable member, no ejected member's trial.
  let afterTrial = false;
  let freshNext = false;
  // A 404 or 410 that would take a stored page away, held while the origin is asked again
  // without the client's headers (below); `drawn` when that answer did not say gone and is not
  // taken as the fill's (an error, none, or a client that names who asks).
  let gone: FetchResult | undefined;
  let rechecked = false;
  let drawn = false;
  for (let attempt = 0; ; attempt++) {
    // Asking again (another member, an unconditional refetch): its waiters' deadlines hold again.
    if (collapseId !== undefined) deps.inflight.setAnswering(collapseId, false);
    const deadlineAt = deps.clock.now() + queueDeadlineFor(rt.config, ctx.route);
    // A background refresh runs while stale-while-revalidate answers everyone: it uses spare
    // origin capacity (the background class, below every configured one) and is refused first;
    // the next stale hit tries again.
    const priority = priorityOverride ?? (kind === 'background' ? rt.priorities.background : ctx.priority);
    // The request's head before its permit: nothing between the permit and the fetch's
    // `finally` may throw, or the permit would be held for good.
    const revalidating = lookup.entry;
    // A copy of a page or a data format that does not vary on Accept is revalidated only by an
    // Accept that speaks for it (cache/accept.ts speaksForStored); another asks unconditionally,
    // and its answer is stored by the rules below (below: a 304 to it is not merged).
    const speaks = revalidating === undefined || revalidating.vary.includes('accept') || speaksForStored(lookup.variantHeaders['accept'], revalidating.headers);
    const conditional = revalidating && speaks ? makeConditionalHeaders(revalidating) : {};
    const headers = { ...makeFillHeaders(ctx, lookup), ...conditional };
    if (gone !== undefined && revalidating !== undefined) plainFillHeaders(headers, lookup.variantHeaders, lookup.policy, revalidating);
    const admitted = await deps.upstream.admit(site.config, site.pool, {
      priority,
      deadlineAt,
      kind,
      // A background refresh is a fill like any: one class per route and endpoint (a 304's round trip too).
      latencyClass: latencyClassOf('fill', ctx.route?.name ?? '-', ctx.path),
      path: ctx.path,
      page: pageOf(ctx.path, ctx.url),
      client: ctx.clientAddress,
      exclude: excluded,
      noTrial: afterTrial,
      servesCrowd: true,
      routeCap: routeCapOf(ctx.route),
      // Nobody waits on a background refresh, and a usable stale copy answers a failed fill.
      hasFallback: kind === 'background' || hasStaleOnFailure(ctx, lookup),
      ...(signal !== undefined ? { signal } : {}),
    });
    // A recheck of a 404 (below) refused ends so too: unsure, the stored copy stays (and answers
    // where it may stand in for a refusal), and the 404 goes to nobody.
    if (!admitted.ok) return refusedFill(ctx, admitted);
    const lease = admitted.lease;
    const member = lease.member;
    if (kind !== 'background') noteAttempt(ctx, member, attempt > 0 && gone === undefined); // a refresh is not this request's answer; a recheck no retry
    if (!site.config.preserveHost) headers['host'] = member.url.host;
    let fetched: FetchResult | undefined;
    const freshConnection = freshNext;
    freshNext = false;
    const path = joinPath(member.url, makeFillTarget(lookup.facts.url, lookup.policy.route.key));
    // Marked with the target as sent (tracking parameters dropped, the key's query, the
    // member's path prefix), as a lap that comes back reads its own: marked with the client's
    // `/?utm_source=…`, the lap for `/` was not known, joined its own fill and waited to a 504
    // (review).
    headers[LOOP_FIELD] = fillLoopValue(ctx.req.headers[LOOP_FIELD], site.name, normaliseTarget(path).url);
    try {
      fetched = await deps.fetcher.fetch({
        origin: member.url,
        method: 'GET', // HEAD is filled with GET so the entry can answer both
        path,
        headers,
        ...timeoutsFor(site.config, ctx.route),
        maxBodyBytes: rt.config.cache.maxObjectBytes,
        freshConnection,
        // Its head is in, with a length it will store: the waiters wait for the body.
        onHead: (head) => {
          if (collapseId !== undefined && isStorableLength(head.headers['content-length'], rt.config.cache.maxObjectBytes))
            deps.inflight.setAnswering(collapseId, true);
        },
      });
    } finally {
      lease.finish(
        fetched === undefined
          ? { kind: 'abandoned' }
          : fetched.ok
            ? { kind: 'response', status: fetched.status }
            : { kind: 'failure', failure: fetched.failure, reusedConnection: fetched.reusedConnection },
      );
      if (kind !== 'background') ctx.upstreamMs = (ctx.upstreamMs ?? 0) + (deps.clock.now() - lease.startedAt);
    }
    if (gone !== undefined) {
      // The gateway's own question's answer (asked below). Gone too: the page is gone, and the
      // 404 goes on as any. The page (a 2xx, 3xx or 304): the 404 was the client's own, and
      // this answer is the fill's, for everyone (the client too), stored or merged by the
      // rules below: thrown away, the copy stayed expired, and a scanner's two requests at
      // once sent a must-revalidate page's crowd to the origin one by one (review). Not when
      // the client's request says who asks (X-User-Token: identityFillInputs): the page without
      // it is not its answer (selectVariant's rule). An error, or no answer: unsure, so the 404
      // goes to that client alone and the copy stays.
      const answered = fetched.ok && !('tooLarge' in fetched) ? fetched.status : undefined;
      const asks = identityFillInputs(lookup.variantHeaders, lookup.policy, []).length > 0;
      if (answered === undefined || isGone(answered) || answered >= 400 || asks) {
        drawn = answered === undefined || !isGone(answered);
        fetched = gone;
      }
      gone = undefined;
    }
    if (!fetched.ok) {
      if (fetched.reusedConnection && !reusedRetried) {
        // A pooled keep-alive connection the origin closed as idle just as the fill went out
        // (origin/fetch.ts tells it from a reset on a new connection, which is not retried):
        // a fill is a GET without a body, so send it once more, on a new connection, to another
        // member when one is usable (as the connect-error retry), else to this one. It did not
        // count against the member (upstream.ts); the retry's own failure does.
        reusedRetried = true;
        freshNext = true;
        if (hasOtherMember(site, member, deps.clock.now())) excluded.add(member);
        continue;
      }
      if (suspectFailedElsewhereUsable(lease.suspect, attempt, site, member, deps.clock.now()) && fetched.failure === 'reset') {
        excluded.add(member);
        afterTrial = true;
        continue;
      }
      if (fetched.failure === 'connect_error' && site.config.retryOnConnectFailure && attempt === 0 && hasOtherMember(site, member, deps.clock.now())) {
        excluded.add(member); // idempotent GET: retry once on another member
        continue;
      }
      // A fill that timed out on one member is a GET nobody has seen an answer to: once more on
      // another usable member (nginx's proxy_next_upstream has `timeout` by default), or one
      // member that accepts and never answers gave every visitor of the page a 504 while the
      // other was healthy (failure-day trial). The timeout still counts against the first.
      if (fetched.failure === 'timeout' && site.config.retryOnConnectFailure && attempt === 0 && hasOtherMember(site, member, deps.clock.now())) {
        excluded.add(member);
        continue;
      }
      if (fetched.failure === 'error') {
        deps.logger.warn({ err: fetched.error, requestId: ctx.requestId, origin: member.name }, 'cache fill could not be sent');
        return {
          kind: 'failed',
          code: 'internal_error',
          staleReason: 'error',
          detail: `the fill could not be sent: ${fetched.error.message}`,
          // A header or request shape undici refuses is the request's own; any other error
          // (EMFILE, a client torn down by a reload) may be the gateway's, for everyone (review).
          ...(isRefusedRequest(fetched.error) ? { requestCaused: true as const } : {}),
        };
      }
      return { kind: 'failed', ...originFailure(fetched.failure, { https: member.url.protocol === 'https:', error: fetched.error }) };
    }
    // A request to a suspect member (an ejected one's trial, a half-open probe, a member on
    // probation: OriginLease.suspect) is a visitor's: its 502-504 is not theirs to see while
    // another member is usable, so the page is fetched there (nginx's proxy_next_upstream
    // http_503, here for such requests only). A primary in maintenance answering
    // 503 to everything gave visitors its 503 1-4 times a second while a healthy backup stood
    // idle (failure-day trial). The 503 still counts against the member.
    if (SICK_STATUSES.has(fetched.status) && suspectFailedElsewhereUsable(lease.suspect, attempt, site, member, deps.clock.now())) {
      excluded.add(member);
      afterTrial = true;
      continue;
    }
    if ('tooLarge' in fetched) {
      // Larger than cache.maxObjectBytes: not stored. The body was abandoned unread; the leader
      // and every waiter stream it with http-proxy, and hit-for-pass sends the next ones straight there.
      noteNotStored(ctx, 'too_large', fetched.headers);
      return { kind: 'too_large' };
    }
    // A 404 or 410 that would take a stored page (not an error) away from everyone, here and on
    // every instance (below), while the origin is well: asked once more, as the gateway's own
    // question, without the client's headers (plainFillHeaders). A WAF answering one client's
    // `User-Agent: sqlmap` with 404 took a popular page's stale copy away, so that the next
    // visitors waited for a refill and an outage found nothing to serve (attacker trial). A
    // page really deleted costs the origin one request more.
    if (!rechecked && isGone(fetched.status) && revalidating !== undefined && !isGone(revalidating.status) && !originInTrouble(ctx, lookup)) {
      rechecked = true;
      gone = fetched;
      continue;
    }
    const now = deps.clock.now();
    const response = {
      status: fetched.status,
      headers: fetched.headers,
      requestTime: fetched.requestTime,
      responseTime: fetched.responseTime,
    };
    const address = leaderAddress(ctx, member.url);
    // RFC 9111 §4.3.3-4: a 304 to our conditional request refreshes the stored entry, unless
    // its header fields repeat a request header the entry's key does not hold (a framework
    // sets a Link from a header before its freshness check) or the leader's address: merged,
    // they would reach everyone. Then fetch the whole answer, whose every part is checked as a
    // fill's is. So too when the fill's Accept may have had the origin pick another format than
    // the copy's, which does not vary on Accept (cache/accept.ts speaksForStored; such a fill
    // is not sent conditional, above, but an origin may answer 304 all the same): a
    // revalidation led by `Accept: text/csv` merged the CSV's Content-Disposition into the
    // home page for everyone, and it stayed through every later 304 (attacker trial).
    if (
      fetched.status === 304 &&
      revalidating &&
      (!speaks ||
        (await reflectedInputs(unkeyedFillInputs(lookup.variantHeaders, lookup.policy, revalidating.vary), fetched.headers, EMPTY, 0)).length > 0 ||
        (address !== undefined && (await repeatsAddress(address, fetched.headers, EMPTY, 0))))
    ) {
      lookup = { ...lookup, entry: undefined };
      continue;
    }
    if (fetched.status === 304 && revalidating) {
      const merged = mergeNotModified(revalidating, response, lookup.policy, now, lookup.facts);
      if (merged) {
        inheritHeat(revalidating, merged, now);
        await put(merged);
        return { kind: 'entry', entry: merged, state: 'revalidated', stored: true, fwdStatus: 304 };
      }
      // The 304 doesn't select our entry: fetch unconditionally once.
      lookup = { ...lookup, entry: undefined };
      continue;
    }
    const decision = lookup.canStore
      ? decideStorage({ ...lookup.facts, method: 'GET', headers }, response, lookup.policy, now)
      : ({ store: false, reason: 'request no-store', code: 'request_no_store' } as const);
    // A server error answers with the stored copy where one may stand in (stale-if-error,
    // grace); else it is an answer like any other, stored only with explicit freshness (or a
    // route's negative TTL for its status), as RFC 9111 §3 and nginx do.
    // A 429 is the origin refusing the gateway for a while (rate-limiting it): an error like a
    // 5xx here, so a stored copy answers instead, and the next refresh waits (failure-day trial:
    // stale copies stopped after 14 s and 1 088 requests reached the origin in its 30 s of 429s).
    if ((fetched.status >= 500 || fetched.status === 429) && (!decision.store || hasStaleOnFailure(ctx, lookup))) {
      noteNotStored(ctx, 'origin_error', fetched.headers);
      return {
        kind: 'origin_error',
        fwdStatus: fetched.status,
        status: fetched.status,
        headers: clientHeaders(fetched.headers, lookup.policy),
        body: fetched.body,
      };
    }
    if (decision.store) {
      // The leader's address (in the X-Forwarded-For the gateway writes) is an input no key or
      // Vary can hold: an answer that repeats it ("your IP is ...") is that client's own, and
      // stored it would show everyone who filled the page. Not stored, and nothing more: no
      // hit-for-pass (the next leader's answer is judged on its own; a client whose address
      // a page happens to contain, or who had the origin echo it, must not send a hot page's
      // crowd to the origin), and the requests that shared the fill ask the origin themselves.
      if (address !== undefined && (await repeatsAddress(address, decision.entry.headers, fetched.body, rt.config.cache.maxObjectBytes))) {
        noteNotStored(ctx, 'client_address', fetched.headers);
        return { ...notStored(fetched, lookup, 'the answer repeats the client address'), once: true };
      }
      // A header nothing keys that the answer repeats is treated as if the origin had listed it
      // in Vary (cache/reflection.ts): the page is stored as that value's variant, and a client
      // who sent `X-Anything: <script…>` plants it for nobody but himself.
      const unkeyed = unkeyedFillInputs(lookup.variantHeaders, lookup.policy, decision.entry.vary);
      const how = new Map<string, Finding>();
      const reflected = await reflectedInputs(unkeyed, decision.entry.headers, fetched.body, rt.config.cache.maxObjectBytes, how);
      if (reflected.length > 0) noteReflected(ctx, reflected, unkeyed, how);
      // An answer the origin encoded for the Accept-Encoding the fill sent, without saying
      // `Vary: Accept-Encoding` (nginx's `gzip on` without `gzip_vary`), is that coding's
      // variant: a client that cannot decode it makes its own fill.
      // Likewise an answer to an Accept that asks first for something other than a page
      // (`application/json`: Rails' respond_to, an API that negotiates) without `Vary: Accept`
      // is that Accept's variant: stored for all, one client's JSON answered everyone's HTML;
      // and one that names a type a device detector takes for a phone (DEVICE_MEDIA_TYPES).
      // An error kept only because the site says so (a negative TTL, a micro-cache) is stored as
      // the variant of every header the fill sent, and of the Accept* and User-Agent it did not:
      // the origin did not say it is for everyone, and a WAF's 404 for one client's
      // `User-Agent: sqlmap` (or a header nothing keys) stored for all took a popular page
      // away from everyone for the TTL (attacker trial). It is served only to requests that
      // look the same as the one that got it; others make their own fill. So is an error whose
      // lifetime the origin gave, with a status the URL itself does not explain (400, 403...;
      // not 404, 405, 410, 414, 501: RFC 9110 §15.1's heuristically cacheable set), when it would
      // replace a stored answer that was not an error: an origin that puts `public, max-age=300`
      // on every answer had one client's WAF 403 replace a popular page for everyone (attacker
      // trial, CPDoS). With nothing stored it is stored for all, as RFC 9111 says (see README).
      const implied = [
        ...(isCoded(decision.entry.headers) ? ['accept-encoding'] : []),
        ...(asksForOtherThanAPage(lookup.variantHeaders['accept']) || (isDataFormat(decision.entry.headers) && !isNavigation(lookup.variantHeaders['accept']))
          ? ['accept']
          : []),
        // And so is a 404 or 410 the client's headers drew (rechecked above).
        ...(drawn || isNarrowError(fetched.status, decision.configured, lookup.entry) ? narrowVariantNames(lookup) : []),
        // An answer to a fill that carried a header naming who asks (`X-User-Token`) may be
        // that client's own: it is that header value's variant, so the fill's waiters without it
        // make one fill of their own, and nobody else gets it, fresh or stale (new-user trial:
        // one user's JSON, chosen by a token header, went to the requests that arrived during
        // its fill and, with the origin down, to anyone for a minute). Unless the origin gave
        // it for everyone (`public`, `s-maxage`, a targeted field: isSharedByOrigin) and it can
        // be reused at all: an ETag (Express sends one on every answer), a Last-Modified's
        // heuristic lifetime, a max-age or a route's lifetime or floor is no such word (attacker trial:
        // Alice's account page went to everyone collapsed on her fill or her revalidation, and
        // to anyone while the origin failed).
        ...(isNeverFresh(decision.entry) || !isSharedByOrigin(decision.entry)
          ? [...identityFillInputs(lookup.variantHeaders, lookup.policy, decision.entry.vary), ...identityNamesVariedOn(lookup.variants)]
          : []),
        // A fragment request's answer is the fragment's variant, on every name the stored
        // copies vary on, whatever its own Vary says (handle-request.ts fragmentVariedOn).
        ...(lookup.fragment ?? []),
      ];
      // A 404 or 410 takes the stored copy of another status with it (below, for one not stored).
      if (isGone(fetched.status) && !drawn && lookup.entry !== undefined && lookup.entry.status !== fetched.status && !originInTrouble(ctx, lookup))
        await ctx.deps.purge([{ kind: 'key', key: lookup.key }], 'hard', fence).catch(() => undefined);
      const stored = varyingAlsoOn(decision.entry, implied.length === 0 ? reflected : [...new Set([...reflected, ...implied])]);
      const entry: CacheEntry = {
        ...stored,
        key: lookup.key,
        variantKey: makeVariantKey(stored.vary, lookup.variantHeaders),
        body: fetched.body,
      };
      if (lookup.entry) inheritHeat(lookup.entry, entry, now);
      noteRevalidatedEveryTime(ctx, entry);
      if (entry.body.length <= rt.config.cache.maxObjectBytes) {
        await addEncodings(ctx, entry);
        await put(entry);
      }
      const echoed = reflected.filter((n) => !decision.entry.vary.includes(n));
      return { kind: 'entry', entry, state: lookup.entry ? 'expired' : 'miss', stored: true, fwdStatus: fetched.status, echoed };
    }
    // An error the origin gave this request (400, 406, 413, 414, 431...) may be about what the
    // leader sent, not about the URL: no hit-for-pass on it, or two requests every 5 s (one
    // with a header too large for the origin) sent a hot page's whole crowd to the origin.
    const refusal = fetched.status >= 400;
    // A 404 or 410 the origin will not let us store is still its word that the page is gone:
    // the stored copy goes, here and on every instance, rather than being served stale (a
    // deleted WordPress post kept answering `updating` for 10 s, one origin request per visitor,
    // and would have come back as stale-if-error at the next outage).
    // Not while the origin is in trouble (its probes find it down, or this page's last refresh
    // failed): a 404 then may be a vhost or ingress default, or a WAF answering one client's
    // User-Agent, and the stale copy is what keeps the page up (review).
    // Nor when the origin, asked again without the client's headers, said the page is there
    // (drawn, above): the 404 is answered to that client alone.
    if (isGone(fetched.status) && !drawn && lookup.entry !== undefined && !originInTrouble(ctx, lookup))
      await ctx.deps.purge([{ kind: 'key', key: lookup.key }], 'hard', fence).catch(() => undefined);
    noteNotStored(ctx, decision.code, fetched.headers);
    if (drawn) return { ...notStored(fetched, lookup, 'a 404 this request may have drawn: asked without its headers, the origin did not say gone'), once: true, drawn: true };
    return refusal ? { ...notStored(fetched, lookup, decision.reason), once: true } : notStored(fetched, lookup, decision.reason);
  }
}

/** Routes (`site\0route`) whose Set-Cookie refusal was last logged at, for SET_COOKIE_WARN_EVERY_MS. */
const setCookieWarnedAt = new Map<string, number>();
/** Under each config (its SiteRuntime), the routes and reasons a route lifetime was said to be overruled for. */
const overruledSaid = new WeakMap<object, Set<string>>();
const SET_COOKIE_WARN_EVERY_MS = 60_000;

/**
 * Says once per route under each config (as a route lifetime overruled by no-store, below)
 * when a route with a lifetime of its own (`defaultTtlSeconds`, `ttlFloorSeconds`,
 * `microcacheSeconds`) stores an answer that is still revalidated with the origin on every
 * request: sent `no-cache`, or with a lifetime of its own of zero (`max-age=0`, `s-maxage=0`,
 * an Expires already past) that the route did not raise (a floor applies to 2xx and 3xx only;
 * a micro-cache never to an answer with Set-Cookie). Ghost sends `public, max-age=0` on every
 * page, and a new operator's `defaultTtlSeconds: 60` did nothing, with nothing to say so (Ghost
 * trial); a floor, or a no-cache answer under one, was as silent (review). Judged from the
 * stored entry, on a fill that stores one: an instance that only ever revalidates a copy
 * another stored (Redis) says nothing.
 */
function noteRevalidatedEveryTime(ctx: Ctx, entry: CacheEntry): void {
  if (entry.freshnessMs > 0 && !entry.noCache) return;
  const lifetime = routeLifetimeSetting(ctx);
  if (lifetime === undefined) return;
  const reason = entry.noCache ? 'no_cache' : 'zero_lifetime';
  if (!sayOncePerRoute(ctx, reason)) return;
  const advice =
    reason === 'no_cache'
      ? 'microcacheSeconds lifts it for a few seconds, or have the app send a max-age instead'
      : entry.status >= 400
        ? 'a floor applies to 2xx and 3xx only: have the app send a longer max-age'
        : 'ttlFloorSeconds raises a lifetime the answer states, or have the app send a longer max-age';
  ctx.deps.logger.warn(
    { site: ctx.site!.name, route: ctx.route!.name, reason, status: entry.status, path: ctx.url.split('?')[0] },
    `answers sent ${reason === 'no_cache' ? 'no-cache' : 'with a lifetime of their own of zero (max-age=0, s-maxage=0 or an Expires already past)'} are revalidated with the origin on every request, whatever the route's ${lifetime} (RFC 9111): ${advice} (said once per route under this config)`,
  );
}

/** The setting by which the request's route gives answers a lifetime of its own, if any (for the lines above and below). */
function routeLifetimeSetting(ctx: Ctx): 'defaultTtlSeconds' | 'ttlFloorSeconds' | 'microcacheSeconds' | undefined {
  const cache = ctx.route?.config.cache;
  if (cache === undefined) return undefined;
  return cache.defaultTtlSeconds > 0 ? 'defaultTtlSeconds' : cache.ttlFloorSeconds > 0 ? 'ttlFloorSeconds' : cache.microcacheSeconds > 0 ? 'microcacheSeconds' : undefined;
}

/** True the first time `reason` is said for the request's route under this config (overruledSaid). */
function sayOncePerRoute(ctx: Ctx, reason: string): boolean {
  let said = overruledSaid.get(ctx.site!);
  if (said === undefined) overruledSaid.set(ctx.site!, (said = new Set()));
  const what = `${ctx.route?.name ?? '-'}\0${reason}`;
  if (said.has(what)) return false;
  said.add(what);
  return true;
}

/**
 * Counts an answer not stored, by why; and for a Set-Cookie under `setCookie: refuse`, says so
 * in the log at most once a minute per route, with the cookie names (never their values). A
 * plugin setting a language cookie on every page view (Polylang's `pll_language`) kept a
 * WordPress site's every page out of the cache; in a crowd of 100 clients 27 000 answers were
 * `503 overloaded` where the origin alone served them all slowly, and nothing but a shedding
 * warning said why (WordPress trial).
 */
function noteNotStored(ctx: Ctx, reason: NotStoredReason, headers: Readonly<Record<string, string | string[] | undefined>>): void {
  const site = ctx.site!.name;
  const route = ctx.route?.name ?? '-';
  ctx.deps.metrics.get('notStored').inc({ site, route, reason });
  // A lifetime the route gives is for answers that say nothing: one sent no-store or private
  // is never stored whatever the route says, and an operator who gave DokuWiki's pages a
  // minute saw nothing say so but a metric (new-user trial).
  if (reason === 'no_store' || reason === 'private') {
    const lifetime = routeLifetimeSetting(ctx);
    if (lifetime === undefined) return;
    // Once per route and reason under each config (again after a reload): a catch-all route's
    // lifetime meets a login page's no-store all day long, and a line a minute for it would
    // be noise an alert on warnings keeps firing on (review).
    if (!sayOncePerRoute(ctx, reason)) return;
    ctx.deps.logger.warn(
      { site, route, reason, path: ctx.url.split('?')[0] },
      `answers sent ${reason === 'no_store' ? 'no-store' : 'private'} are never stored: the route's ${lifetime} does not apply to them (RFC 9111), and every request for them goes to the origin (said once per route under this config)`,
    );
    return;
  }
  if (reason !== 'set_cookie') return;
  const key = `${site}\0${route}`;
  const now = ctx.deps.clock.now();
  const last = setCookieWarnedAt.get(key);
  if (last !== undefined && now - last < SET_COOKIE_WARN_EVERY_MS) return;
  setCookieWarnedAt.set(key, now);
  if (setCookieWarnedAt.size > 1000) setCookieWarnedAt.delete(setCookieWarnedAt.keys().next().value!);
  const set = setCookiesOf(headers);
  const cookies = set.map((c) => c.name);
  const perVisitor = set.filter((c) => c.httpOnly || PER_VISITOR_COOKIE.test(c.name)).map((c) => c.name);
  // On a route whose fills carry no session (cache.ignoreSessionCookies), a session the answer
  // sets was started for the fill itself: stripped, each visitor keeps its own. DokuWiki's
  // images (`fetch.php`) set its session on every fill, and the hint said not to strip it,
  // the one setting that let a crowd have them (DokuWiki trial).
  // Not a page (HTML): a form's session carries its CSRF token, and stripped, every visitor's
  // form would fail (review).
  const contentType = String(headers['content-type'] ?? '').toLowerCase();
  const fillsOwnSession =
    ctx.route?.config.cache?.ignoreSessionCookies === true &&
    !contentType.startsWith('text/html') &&
    !contentType.startsWith('application/xhtml') &&
    perVisitor.length > 0 &&
    perVisitor.every((name) => ctx.site!.isBypassCookie(name));
  ctx.deps.logger.warn(
    { site, route, cookies, path: ctx.url.split('?')[0] },
    fillsOwnSession
      ? `answers with Set-Cookie are not stored (setCookie: refuse): every request for them goes to the origin. ${perVisitor.join(', ')} is a session this route's fills are made without (cache.ignoreSessionCookies), so the origin starts one for each fill: setCookie: strip on the route stores the files without it, and each visitor keeps its own`
      : perVisitor.length > 0
        ? `answers with Set-Cookie are not stored (setCookie: refuse): every request for them goes to the origin. ${perVisitor.join(', ')} looks like a cookie of each visitor's own (a CSRF token, a session; HttpOnly, or named so): do not strip it (setCookie: strip would give every visitor the first one's, and their forms would fail); such pages can be cached only where the app stops setting it`
        : 'answers with Set-Cookie are not stored (setCookie: refuse): every request for them goes to the origin. If these cookies are the same for every visitor (a language, a consent choice), setCookie: strip on the route stores the pages without them',
  );
}

/**
 * Cookie names of each visitor's own (a CSRF token, a session, a login, a cart): the hint to
 * strip them would hand every visitor the first one's. Django's `csrftoken` on every page with a
 * form: a new user who followed the hint served everyone one token, and every comment failed
 * its CSRF check with 403 (new-user trial). A cookie set `HttpOnly` is one too, whatever its
 * name: scripts never read it, so it is for the server to know the visitor by (Debian's
 * Redmine calls its session `Redmine`, and the hint said to strip it: new-user trial).
 */
const PER_VISITOR_COOKIE = /csrf|xsrf|sess|sid|token|auth|login|user|cart|ident|jwt/i;

/**
 * The cookies an answer sets (Set-Cookie, Set-Cookie2), at most 10: each name (`(nameless)` for
 * one without a name: its text is its value) and whether it is set HttpOnly.
 */
function setCookiesOf(headers: Readonly<Record<string, string | string[] | undefined>>): { name: string; httpOnly: boolean }[] {
  const cookies = new Map<string, boolean>();
  for (const field of ['set-cookie', 'set-cookie2']) {
    const value = headers[field];
    for (const line of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
      const [pair, ...attributes] = line.split(';');
      const at = pair!.indexOf('=');
      const name = at < 0 ? '' : pair!.slice(0, at).trim().slice(0, 64);
      const httpOnly = attributes.some((a) => a.trim().toLowerCase() === 'httponly');
      const key = name === '' ? '(nameless)' : name;
      cookies.set(key, (cookies.get(key) ?? false) || httpOnly);
    }
  }
  return [...cookies].slice(0, 10).map(([name, httpOnly]) => ({ name, httpOnly }));
}

/**
 * An error stored only for requests like the one that got it: any error whose lifetime came from
 * the site's config, and one whose status the URL does not explain (not heuristically cacheable)
 * that would replace a stored answer that was not an error (`stored`).
 */
function isNarrowError(status: number, configured: boolean, stored: CacheEntry | undefined): boolean {
  return status >= 400 && (configured || (!isHeuristicallyCacheable(status) && stored !== undefined && stored.status < 400));
}

function isGone(status: number): boolean {
  return status === 404 || status === 410;
}

/** The names a narrow variant varies on: every header the fill sent but Host and the key's cookies, and the Accept* and User-Agent. */
function narrowVariantNames(lookup: Lookup): string[] {
  const names = new Set(['accept', 'accept-encoding', 'accept-language', 'accept-charset', 'user-agent']);
  for (const name of Object.keys(lookup.variantHeaders)) if (name !== 'host' && name !== 'cookie') names.add(name);
  return [...names];
}

/** Whether an answer's body carries a content coding (anything but identity). */
function isCoded(headers: Readonly<Record<string, string | string[] | undefined>>): boolean {
  const coding = headers['content-encoding'];
  const text = (Array.isArray(coding) ? coding.join(',') : (coding ?? '')).trim().toLowerCase();
  return text !== '' && text !== 'identity';
}

/** A fetched answer that is not stored: it answers the requests that shared the fill. */
function notStored(fetched: { status: number; headers: Record<string, string | string[]>; body: Buffer }, lookup: Lookup, reason: string): FillResult & { kind: 'uncacheable' } {
  return { kind: 'uncacheable', fwdStatus: fetched.status, status: fetched.status, headers: clientHeaders(fetched.headers, lookup.policy), body: fetched.body, reason };
}

/**
 * Counts a fill whose answer repeated unkeyed request headers, and says so in the log at most
 * once a minute per site, with how many were not logged since (names are the client's choice:
 * a list of names already logged could be filled up, and then stay silent for good), and the
 * values found as valueForLog shows them: a short common word is in pages by chance (Node's
 * `fetch` sends `User-Agent: node`, and MediaWiki's parser report says "visited node count" in
 * every page), and the operator told her origin repeats `user-agent` looked for an echo that
 * was not there (new-user trial).
 */
function noteReflected(ctx: Ctx, names: readonly string[], inputs: readonly UnkeyedInput[], how: ReadonlyMap<string, Finding>): void {
  const site = ctx.site!.name;
  ctx.deps.metrics.get('fillReflected').inc({ site });
  const now = ctx.deps.clock.now();
  const last = reflectionWarnedAt.get(site);
  if (last !== undefined && now - last < REFLECTION_WARN_EVERY_MS) {
    reflectionsUnlogged.set(site, (reflectionsUnlogged.get(site) ?? 0) + 1);
    return;
  }
  reflectionWarnedAt.set(site, now);
  const unlogged = reflectionsUnlogged.get(site) ?? 0;
  reflectionsUnlogged.delete(site);
  const logged = names.slice(0, 16);
  const values: Record<string, string> = Object.create(null);
  const found: Record<string, Finding> = Object.create(null);
  for (const [name, value] of inputs) {
    if (!logged.includes(name) || Object.hasOwn(values, name)) continue;
    values[name] = valueForLog(name, value);
    found[name] = how.get(name) ?? 'unsearched';
  }
  ctx.deps.logger.warn(
    { site, headers: logged, found, values, url: ctx.req.url, requestId: ctx.requestId, unloggedSinceLast: unlogged },
    'origin answer repeats request headers the cache key does not hold (found: the value or the name in the answer, a common word may match by chance; unsearched: counted without a search); stored as varying on them (add Vary, or key or drop them)',
  );
}
const REFLECTION_WARN_EVERY_MS = 60_000;
const reflectionWarnedAt = new Map<string, number>();
const reflectionsUnlogged = new Map<string, number>();
const EMPTY = Buffer.alloc(0);

/**
 * What a fill sends from its leader that no key or Vary can hold: the client's address, in the
 * X-Forwarded-For the gateway writes (after a trusted proxy's chain, whose own addresses are
 * the same for everyone); undefined when it is not looked for. Not this machine's loopback address, nor the origin's or the site's
 * own host: a page names those in its links (MediaWiki's and WordPress's absolute URLs on a
 * box reached as 127.0.0.1), and every page would have been its client's own.
 */
function leaderAddress(ctx: Ctx, origin: URL): string | undefined {
  const address = ctx.clientAddress.startsWith('::ffff:') ? ctx.clientAddress.slice(7) : ctx.clientAddress;
  if (address === '' || address === '127.0.0.1' || address === '::1' || address === unbracketed(origin.hostname)) return undefined;
  const host = ctx.req.headers.host;
  if (host !== undefined && (host === address || host.startsWith(`${address}:`) || host.startsWith(`[${address}]`))) return undefined;
  return address;
}

function unbracketed(hostname: string): string {
  return hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
}

/**
 * Compression stored once: the brotli and gzip encodings of a new entry's body, made before it
 * is stored (compression config, read from this request's config generation). The fill's own
 * answer and its waiters wait for it: once per fill, inline for a small body and on the
 * threadpool for a large one (content-coding.ts; both codings of
 * a 15 KB page: 3.4 ms on a busy 2-CPU box, 160 ms for 1 MB), while storing first and adding the
 * encodings later would write every entry twice (to Redis too), race a revalidation or purge
 * that replaced it meanwhile, and answer the first crowd of a new page uncompressed.
 */
async function addEncodings(ctx: Ctx, entry: CacheEntry): Promise<void> {
  const opts = ctx.rt.config.compression;
  const why = whyNotCompressed(entry.status, entry.headers, entry.body.length, opts);
  const metrics = ctx.deps.metrics;
  if (why !== undefined) {
    if (why === 'small' || why === 'no_transform' || why === 'encoded') metrics.get('compressionSkipped').inc({ reason: why });
    return;
  }
  if (ctx.deps.compressionBudget?.take(entry.body.length, opts.fillBytesPerSecond, ctx.clientAddress) === false) {
    metrics.get('compressionSkipped').inc({ reason: 'budget' });
    return;
  }
  const contentType = entry.headers['content-type'];
  const encodings = await makeEncodings(entry.body, opts, isTextual(Array.isArray(contentType) ? contentType[0] : contentType));
  if (encodings === undefined) {
    metrics.get('compressionSkipped').inc({ reason: 'no_savings' });
    return;
  }
  entry.encodings = encodings;
  for (const coding of STORED_CODINGS) {
    const bytes = encodings[coding];
    if (bytes === undefined) continue;
    metrics.get('compressionEncodings').inc({ coding });
    metrics.get('compressionSavedBytes').inc({ coding }, entry.body.length - bytes.length);
  }
}

/**
 * A local leader's fill, collapsed across instances when Redis is configured: if another
 * instance holds this key's fill, wait for its notification and take what it stored; otherwise
 * fetch here and, when this instance held the others' lock, wake them once stored.
 */
async function fillAcrossInstances(
  ctx: Ctx,
  lookup: Lookup,
  collapseKey: CollapseKey,
  kind: 'fill' | 'background',
  priority?: number,
  signal?: AbortSignal,
): Promise<FillResult> {
  const remote = ctx.deps.crossInstance;
  if (!remote) return runFill(ctx, lookup, kind, priority, collapseKey.id, signal);
  // The lock names this site's CDN-Loop id, and a request that came through crowdgates does
  // not wait on a fill held by one of them: with instances whose origin is the balancer in
  // front of them, that fill is the one it came from, and it waited on itself to a 504. A
  // client's made-up member names no holder, so its fill waits as any (it skipped the lock
  // when any member did: one fetch per instance per refresh; review).
  const came = loopIdsIn(ctx.req.headers[LOOP_FIELD]);
  const claim = await remote.acquire(
    collapseKey,
    ctx.rt.config.cache.collapse.waitDeadlineMs,
    loopIdOf(ctx.site!.name),
    came.length > 0 ? (holder) => came.includes(holder) : undefined,
  );
  if (claim.kind === 'lap') return runFill(ctx, lookup, kind, priority, collapseKey.id, signal);
  if (claim.kind === 'filled') {
    const entry = selectVariant((await ctx.deps.store.get(lookup.key)) ?? [], lookup.variantHeaders, identityFillInputs(lookup.variantHeaders, lookup.policy, []), lookup.fragment);
    if (entry && entry !== lookup.entry) {
      const evaluation = evaluateEntry(entry, lookup.facts, ctx.deps.clock.now(), lookup.policy);
      if (!evaluation.needsRevalidation) {
        return { kind: 'entry', entry, state: lookup.entry ? 'expired' : 'miss', stored: false, fwdStatus: entry.status };
      }
    }
    return runFill(ctx, lookup, kind, priority, collapseKey.id, signal); // nothing usable arrived: fetch here
  }
  try {
    return await runFill(ctx, lookup, kind, priority, collapseKey.id, signal);
  } finally {
    if (claim.kind === 'fetch') await claim.done().catch(() => undefined);
  }
}

/**
 * A refresh nobody waits for: collapsed with any fill of the same key. RFC 5861 §3 refreshes
 * take the background class (spare capacity only); a refresh standing in for a fill the crowd
 * would have queued for (step 7) keeps that request's `priority`.
 */
export function startBackgroundRefresh(ctx: Ctx, lookup: Lookup, priority?: number): void {
  const { deps } = ctx;
  // A refresh asked for by a no-store request would not be stored: it would spend the key's
  // one refresh and leave the copy stale. The next request without no-store starts it.
  if (!lookup.canStore) return;
  // The site's last background refresh found no origin capacity a moment ago (see
  // Upstream.holdsBackground): this one would be refused too; the next stale hit asks again.
  // Only refreshes in the background class: one at a request's priority (steps 7, 8) still asks.
  if (priority === undefined && deps.upstream.holdsBackground(ctx.site!.config)) return;
  const collapseKey = collapseKeyOf(lookup);
  // This key's last refresh failed a moment ago (a 5xx, a refused connection, a timeout): the
  // stale copy keeps answering and the next refresh waits REFRESH_RETRY_MS, so an origin in
  // trouble gets one request per page a second, not one per visitor (WordPress without its
  // database drew 237 in 6 s from 50 visitors a second on ten pages).
  if (refreshFailedMomentAgo(ctx, lookup)) return;
  const joined = deps.inflight.join(collapseKey.id, 0);
  if (joined.role !== 'leader') return; // someone is already refreshing it
  fillAcrossInstances(ctx, lookup, collapseKey, 'background', priority)
    .catch((err): FillResult => {
      deps.logger.warn({ err, requestId: ctx.requestId }, 'background refresh failed');
      return { kind: 'failed', code: 'internal_error', staleReason: 'error' };
    })
    .then((result) => {
      noteRefreshOutcome(ctx, collapseKey.id, result, lookup);
      joined.settle(result);
    });
}

/**
 * Remembers a fill or refresh of a key that the origin failed (a 5xx, a 429, a refused
 * connection, a timeout; a refusal for capacity is the site's hold's to space out:
 * holdsBackground) for REFRESH_RETRY_MS, and forgets it once one stores.
 */
export function noteRefreshOutcome(ctx: Ctx, collapseKeyId: string, result: FillResult, lookup: Lookup): void {
  const { deps } = ctx;
  let failedKeys = refreshFailedUntil.get(deps);
  if (failedKeys === undefined) refreshFailedUntil.set(deps, (failedKeys = new Map()));
  // A 429 for a copy that was purged or invalidated is no failure of the origin's: it may be
  // about the client that drew it alone (an origin rate-limiting by X-Forwarded-For). Counted,
  // a client limited there held a taken-down page (purged, now 404) as everyone's answer for a
  // second after each of its requests, and kept the readers' 404s from deleting it (attacker
  // trial: 39 of 40 reads over 20 s).
  if (result.kind === 'origin_error' && result.status === 429 && lookup.entry?.invalidatedAt !== undefined) return;
  if ((result.kind === 'failed' && result.shedReason === undefined) || result.kind === 'origin_error') {
    if (failedKeys.size >= REFRESH_FAILED_KEYS) failedKeys.clear();
    failedKeys.set(collapseKeyId, deps.clock.now() + REFRESH_RETRY_MS);
  } else if (result.kind === 'entry') failedKeys.delete(collapseKeyId);
}

/**
 * This key's last fill or refresh failed less than REFRESH_RETRY_MS ago: a copy that may stand
 * in for a failure answers now (decide()), and no refresh is asked for, so an origin in trouble
 * gets one request per page a second, not one per visitor.
 */
export function refreshFailedMomentAgo(ctx: Ctx, lookup: Lookup): boolean {
  const failedUntil = refreshFailedUntil.get(ctx.deps)?.get(collapseKeyOf(lookup).id);
  return failedUntil !== undefined && ctx.deps.clock.now() < failedUntil;
}

/** The site's origin is found down by its probes, or this page's last background refresh failed a moment ago. */
function originInTrouble(ctx: Ctx, lookup: Lookup): boolean {
  if (ctx.site!.pool.readiness() === 'down') return true;
  const failedUntil = refreshFailedUntil.get(ctx.deps)?.get(collapseKeyOf(lookup).id);
  return failedUntil !== undefined && ctx.deps.clock.now() < failedUntil + REFRESH_RETRY_MS;
}

/** How long after a failed background refresh the key's next one waits, ms. */
export const REFRESH_RETRY_MS = 1_000;
/** Keys remembered with a failed refresh (cleared whole past it: forgetting costs a refresh). */
const REFRESH_FAILED_KEYS = 10_000;
/** Per gateway: collapse key id → when its next background refresh may start (after a failed one). */
const refreshFailedUntil = new WeakMap<object, Map<string, number>>();
