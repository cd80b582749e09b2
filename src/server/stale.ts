/**
 * What answers when the origin cannot: a stored copy within the window the reason allows
 * (stale-if-error and grace when the origin failed, stale-if-error when it was busy or we
 * were), else the error or shed page. Also the "hot page" rule (a page a crowd reads is
 * answered while it refreshes) and the mapping of origin failures to error codes.
 */
import { isNeverFresh, staleAtOf, type CacheEntry } from '../cache/entry.js';
import { evaluateEntry, type EntryEvaluation } from '../cache/policy.js';
import { noteVariantHit } from '../cache/stores/cache-store.js';
import type { ErrorCode } from '../errors.js';
import type { FetchFailure } from '../origin/fetch.js';
import type { OriginMember } from '../origin/pool.js';
import type { AdmitResult } from '../origin/upstream.js';
import type { StaleReason } from '../outcome.js';
import type { SiteRuntime } from '../runtime.js';
import { fail, serveEntry, shed } from './answer.js';
import type { FillResult, Ctx, Lookup } from './context.js';

/**
 * Hits answered per stored entry, by either path: a copy's own hits, so the memo fast path and
 * the slow path agree on them. A refreshed copy starts with none, and carries the page's
 * earlier reads instead (see inheritHeat).
 */
const entryHits = new WeakMap<CacheEntry, number>();

/**
 * The page's reads before this copy, as of `at` (epoch ms), carried from the copy it replaced:
 * a page that a crowd keeps reading stays hot across refreshes, though each copy of a
 * short-lived page answers only a few requests. A property, not a WeakMap entry, because the
 * store keeps its own frozen copy of what it is given: an own enumerable property survives that
 * copy (object spread copies symbol keys), and the entry codec and JSON leave symbols out, so
 * the heat stays in this process: a copy filled by another instance, through Redis, takes the
 * reads of the copy it replaces here (carryHeat), never the other instance's.
 */
const EARLIER_READS = Symbol('crowdgate.earlierReads');
type Heated = { [EARLIER_READS]?: { reads: number; at: number } };

export function countHit(entry: CacheEntry): void {
  noteVariantHit(entry);
  const hits = entryHits.get(entry) ?? 0;
  if (hits < HOT_HITS) entryHits.set(entry, hits + 1); // past HOT_HITS a hit changes nothing: no write
}

/**
 * Reads after which a page is hot: a crowd is reading it. A page that answered this many
 * requests is answered stale while it refreshes in the background (within its grace), like
 * stale-while-revalidate; one read now and then (a conformance test, a quiet page) is not.
 */
export const HOT_HITS = 5;

/** How long past expiry a hot page is answered while it refreshes (the old default SWR window), ms. */
export const HOT_STALE_MS = 10_000;

/**
 * Time constant of the carried reads' decay, ms: a page read r times a second carries about
 * r x 5 reads, so it stays hot across its copies from about one read a second on; one read
 * every few seconds (a single client, a quiet page) never adds up to HOT_HITS.
 */
export const HEAT_DECAY_MS = 5_000;

/**
 * `next` (a refresh or revalidation of `previous`, stored at `now`) carries the page's reads:
 * those carried by `previous` (decayed to `now`), its own hits, and the read that asked for
 * the refresh.
 */
export function inheritHeat(previous: CacheEntry, next: CacheEntry, now: number): void {
  carryReads(previous, next, now, 1);
}

/**
 * `next`, another instance's copy of the page (through Redis) taking the place of `previous`
 * in this process's memory, carries the reads `previous` had here (MemoryStore's carryOver):
 * without it, every copy another instance refreshed started cold, and a page read a few times
 * a second on each of two instances was no longer hot on either (a third of its requests
 * waited on the origin instead of a tenth; multi-instance trial).
 */
export function carryHeat(previous: CacheEntry, next: CacheEntry, now: number): void {
  if (previous === next) return;
  carryReads(previous, next, now, 0);
}

function carryReads(previous: CacheEntry, next: CacheEntry, now: number, more: number): void {
  const reads = carriedReads(previous, now) + (entryHits.get(previous) ?? 0) + more;
  if (reads > 0) (next as Heated)[EARLIER_READS] = { reads: Math.min(reads, 2 * HOT_HITS), at: now };
}

function carriedReads(entry: CacheEntry, now: number): number {
  const carried = (entry as Heated)[EARLIER_READS];
  return carried === undefined ? 0 : carried.reads * Math.exp(-Math.max(0, now - carried.at) / HEAT_DECAY_MS);
}

/**
 * The page is read by a crowd: this copy answered HOT_HITS hits, or its own hits and the
 * reads carried from the copies before it (decayed) add up to HOT_HITS. Never a copy that was
 * invalidated (a purge, an unsafe method): it is revalidated by the next request.
 */
export function isReadOften(entry: CacheEntry, now: number): boolean {
  if (entry.invalidatedAt !== undefined) return false;
  return (entryHits.get(entry) ?? 0) + carriedReads(entry, now) >= HOT_HITS;
}

/**
 * A crowd read the page while this copy was fresh: isReadOften as of the copy's expiry (a copy
 * that answered HOT_HITS hits stays so however long ago; carried reads decay only to then).
 */
export function wasReadOften(entry: CacheEntry): boolean {
  return isReadOften(entry, staleAtOf(entry));
}

/** The entry expired less than HOT_STALE_MS ago and its page is read often (isReadOften). */
export function isHot(ctx: Ctx, entry: CacheEntry): boolean {
  const now = ctx.deps.clock.now();
  return now < staleAtOf(entry) + HOT_STALE_MS && isReadOften(entry, now);
}

/** A stale copy that may answer while its key's refresh is under way (decide(), step 9). */
export function isServableWhileUpdating(entry: CacheEntry, evaluation: EntryEvaluation): boolean {
  if (evaluation.refetchDemanded || !evaluation.withinStaleIfError) return false;
  return !isNeverFresh(entry);
}

/** Where to look for each kind of origin failure (the config key, or the origin itself). */
const FAILURE_HINT: Readonly<Record<Exclude<FetchFailure, 'error'>, string>> = {
  connect_error: 'check that the origin is running and sites[].origins[].url points at it',
  timeout: 'check the origin\'s load, or raise sites[].timeouts.responseHeadersMs (unsafeResponseHeadersMs for a POST, PUT, PATCH or DELETE; or the route\'s timeouts)',
  reset: 'check the origin\'s logs',
  bad_response: 'check the origin\'s answer',
};

/** For an https origin that could not be reached: its certificate may be what failed. */
const TLS_HINT = ' (for https, that the origin\'s certificate verifies: NODE_EXTRA_CA_CERTS adds a CA or a self-signed certificate)';

/**
 * The error page and stale reason for an origin that failed (refused, timed out, reset, or
 * answered garbage). The detail (for the operator: on the page only for a local client, and in
 * the access log) says the error's code (`ECONNREFUSED`) when there is one, and the
 * certificate hint only for an https origin (a plain http app that was merely stopped was
 * told about NODE_EXTRA_CA_CERTS: new-user trial).
 */
export function originFailure(
  failure: Exclude<FetchFailure, 'error'>,
  origin?: { https: boolean; error?: Error },
): { code: ErrorCode; staleReason: StaleReason; detail: string } {
  const error = origin?.error as { code?: unknown; cause?: { code?: unknown } } | undefined;
  const code = error?.code ?? error?.cause?.code;
  const cause = typeof code === 'string' && /^[A-Z0-9_]{2,40}$/.test(code) ? ` (${code})` : '';
  // A body that stopped coming is idleMs's, not responseHeadersMs's (failure-day trial: the
  // detail sent the operator to the setting that did not apply).
  const hint =
    failure === 'timeout' && code === 'UND_ERR_BODY_TIMEOUT'
      ? 'the origin stopped sending the body: check the origin, or raise sites[].timeouts.idleMs (or the route\'s timeouts)'
      : failure === 'timeout' && code === 'UND_ERR_CONNECT_TIMEOUT'
        ? 'no connection in time: check that the origin is up and reachable, or raise sites[].timeouts.connectMs'
        : FAILURE_HINT[failure] + (failure === 'connect_error' && origin?.https !== false ? TLS_HINT : '');
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
    // What a visitor's error page says: the kind of failure and where the operator looks, never
    // the origin's name or address (a member's name defaults to its host:port; nginx and Caddy
    // do not show upstream addresses either). The member is in the metrics and the status page.
    detail: `origin ${failure.replace('_', ' ')}${cause}; ${hint}`,
  };
}

/** A stored copy this request may be answered with if the origin fails (stale-if-error, grace). */
export function hasStaleOnFailure(ctx: Ctx, lookup: Lookup): boolean {
  const entry = lookup.entry;
  return entry !== undefined && standsInFor(entry, evaluateEntry(entry, lookup.facts, ctx.deps.clock.now(), lookup.policy), 'error');
}

/**
 * The one rule for "may this stored copy answer for an origin request that failed or was
 * refused (reason)?": a copy that is still fresh, or one within the window the reason allows:
 * the route's grace (and stale-if-error) when the origin failed, stale-if-error alone when it
 * was busy or the gateway was. A stored server error never stands in: it is no better than a
 * new one, and a new 5xx replaces it (RFC 9111 §4.2.4 lets a cache serve stale, not oblige it).
 */
export function standsInFor(entry: CacheEntry, evaluation: EntryEvaluation, reason: StaleReason): boolean {
  if (entry.status >= 500) return false;
  if (evaluation.fresh) return true;
  // The route's grace for must-revalidate pages covers an origin that fails, not a busy one.
  return ORIGIN_FAILED.has(reason) ? evaluation.withinGraceOnFailure : evaluation.withinStaleIfError;
}

/** Is there another routable member to retry on? (Asked without pick(), which advances the round-robin.) */
export function hasOtherMember(site: SiteRuntime, failed: OriginMember, now: number): boolean {
  return site.pool.members().some((m) => m !== failed && m.isHealthy(now));
}

export function refusedFill(ctx: Ctx, admitted: Exclude<AdmitResult, { ok: true }>): Extract<FillResult, { kind: 'failed' }> {
  const site = ctx.site!;
  if (admitted.why === 'no_healthy') {
    return {
      kind: 'failed',
      code: 'no_healthy_origin',
      staleReason: 'origin_down',
      detail: `no healthy origin for site "${site.name}"; check sites[].origins[].url and sites[].healthCheck (/readyz names each member's state)`,
    };
  }
  if (admitted.why === 'circuit_open') return { kind: 'failed', code: 'circuit_open', staleReason: 'circuit_open', shedReason: 'circuit_open' };
  return { kind: 'failed', code: 'overloaded', staleReason: 'shed', shedReason: admitted.reason };
}

/** A fill or forward that failed or was refused: a stored copy the reason allows, else the shed or error page. */
export function serveFailed(ctx: Ctx, lookup: Lookup, result: Extract<FillResult, { kind: 'failed' }>): void | Promise<void> {
  return serveStaleOr(ctx, lookup, result.staleReason, () => {
    if (result.shedReason) return shed(ctx, result.shedReason);
    fail(ctx, result.code, result.detail);
  });
}

/** Stale is the first answer to trouble (RFC 5861 §4 stale-if-error, widened by the route's grace). */
export function serveStaleOr(
  ctx: Ctx,
  lookup: Lookup,
  reason: StaleReason,
  otherwise: () => void | Promise<void>,
  afterServing?: () => void,
): void | Promise<void> {
  const entry = lookup.entry;
  if (entry) {
    const evaluation = evaluateEntry(entry, lookup.facts, ctx.deps.clock.now(), lookup.policy);
    if (standsInFor(entry, evaluation, reason)) {
      ctx.staleReason = reason;
      ctx.deps.metrics.get('staleServed').inc({ site: ctx.site!.name, reason });
      serveEntry(ctx, entry, evaluation, { state: 'stale', staleReason: reason });
      afterServing?.();
      return;
    }
    if (ORIGIN_FAILED.has(reason)) noteGraceWithheld(ctx, entry, lookup);
  }
  return otherwise();
}

/** When each route of a site (as a reload built it) last said that a must-revalidate copy was withheld. */
const graceWithheldAt = new WeakMap<SiteRuntime, Map<string, number>>();
const GRACE_WITHHELD_EVERY_MS = 10 * 60_000;

/**
 * A copy the route's grace would have served for the failed origin but for its `must-revalidate`
 * (or `s-maxage`, RFC 9111 §4.2.4), with the route's opt-in off: said at warn, once in 10 min per
 * site and route, naming the setting. MediaWiki marks every page so, and through a 3 s restart
 * every reader of an expired page got 502 while copies were stored; nothing said why (failure trial).
 */
function noteGraceWithheld(ctx: Ctx, entry: CacheEntry, lookup: Lookup): void {
  const route = lookup.policy.route;
  if (entry.status >= 500 || !entry.mustRevalidate || entry.noCache || route.graceOverridesMustRevalidate) return;
  const now = ctx.deps.clock.now();
  if (now >= staleAtOf(entry) + route.graceSeconds * 1000) return;
  const site = ctx.site!;
  const routeName = ctx.route?.name ?? '-';
  let said = graceWithheldAt.get(site);
  if (said === undefined) graceWithheldAt.set(site, (said = new Map()));
  const last = said.get(routeName);
  if (last !== undefined && now - last < GRACE_WITHHELD_EVERY_MS) return;
  said.set(routeName, now);
  ctx.deps.logger.warn(
    { site: site.name, route: routeName, path: ctx.path },
    'the origin failed and a stored copy was not served in its place: the origin marks it must-revalidate (or s-maxage), which forbids a stale answer, and the route does not opt out; set graceOverridesMustRevalidate: true on this route (sites[].routes[].cache) to serve such pages for graceSeconds while the origin fails (README "Origin health"; said once in 10 minutes per route)',
  );
}

/** Stale reasons that mean the origin failed (not that it was busy or the gateway was). */
const ORIGIN_FAILED: ReadonlySet<StaleReason> = new Set(['error', 'timeout', 'unreachable', 'origin_down', 'circuit_open']);
