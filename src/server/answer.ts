/**
 * Writing answers and accounting for them: a stored entry (with Age, Cache-Status and the
 * client's conditional), a buffered origin answer, an error or shed page; then, once per
 * request, the metrics row, the hot-keys table and the access log (finish()).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { CacheEntry } from '../cache/entry.js';
import { chooseCoding, requestForbidsTransform, type StoredCoding } from '../cache/content-coding.js';
import type { EntryEvaluation } from '../cache/policy.js';
import { isNotModifiedForClient } from '../cache/revalidation.js';
import { ERRORS, type ErrorCode } from '../errors.js';
import { isLoopbackHost } from '../log.js';
import { statusClassOf } from '../metrics/gateway-metrics.js';
import type { CacheState, ShedReason, StaleReason } from '../outcome.js';
import { chainCacheStatus, formatCacheStatus, sendEntry, sendError, sendOwn, type Answer, type CacheStatusFacts } from './respond.js';
import type { MemoHold } from './hit-memo.js';
import { dispositionFirst, isAnswered, isResponseGone } from './headers.js';
import { isBodyTimeout } from './http-server.js';
import { planRange, sendRange } from './range.js';
import type { RequestDeps, Ctx } from './context.js';

/** Seconds of freshness left (RFC 9211 ttl), negative once stale; an invalidated entry is stale. */
export function ttlSecondsOf(entry: CacheEntry, now: number): number {
  const ttl = Math.floor((entry.responseTime + entry.freshnessMs - entry.initialAgeMs - now) / 1000);
  return entry.invalidatedAt !== undefined ? Math.min(ttl, -1) : ttl;
}

/** A bug on the request path: log it and answer 502 rather than leave the client hanging. */
export function failUnexpected(ctx: Ctx, err: unknown): void {
  ctx.deps.logger.error({ err, requestId: ctx.requestId, url: ctx.path }, 'request failed unexpectedly');
  if (ctx.res.headersSent) {
    ctx.res.destroy();
    return;
  }
  fail(ctx, 'internal_error', 'see the gateway log');
}

/**
 * Records this request's answer, once: its cache state (and whether it was collapsed) on the
 * context for the accounting, and what every writer needs (HEAD, the request id, Cache-Status).
 */
export function recordAnswer(ctx: Ctx, facts: CacheStatusFacts): Answer {
  ctx.state = facts.state;
  if (facts.collapsed) ctx.collapsed = true;
  return { head: ctx.method === 'HEAD', requestId: ctx.requestId, cacheStatus: formatCacheStatus(facts, ctx.requestId) };
}

/**
 * The stored encoding this request gets from `entry` (both paths: the memo hit and serveEntry).
 * The one the client accepts best; a Range request gets the identity body (its ranges are of the
 * identity bytes), and so does a request that says no-transform, and every request while
 * compression is disabled (encodings stored before stay until refilled).
 */
export function codingFor(entry: CacheEntry, headers: IncomingHttpHeaders, compressionEnabled: boolean): StoredCoding | undefined {
  return entry.encodings === undefined || !compressionEnabled || headers.range !== undefined || requestForbidsTransform(headers['cache-control'])
    ? undefined
    : chooseCoding(headers['accept-encoding'], entry.encodings);
}

/** A stored entry answers this request: in full, as a 304 to its conditional, or its ranges. */
export function serveEntry(
  ctx: Ctx,
  entry: CacheEntry,
  evaluation: EntryEvaluation,
  facts: CacheStatusFacts & { staleReason?: StaleReason },
): void {
  const ttlSeconds = ttlSecondsOf(entry, ctx.deps.clock.now());
  // Every field named, no spread: this runs for most hits, and a spread of objects of several
  // shapes is a slow generic copy (it was the gateway's costliest function of its own in a x50 crowd).
  const { head, requestId, cacheStatus } = recordAnswer(ctx, {
    state: facts.state,
    collapsed: facts.collapsed,
    ttlSeconds,
    stored: facts.stored,
    fwdStatus: facts.fwdStatus,
    forwarded: facts.state === 'stale' ? STALE_AFTER_ORIGIN_TRIED.has(facts.staleReason!) : undefined,
    missKind: facts.missKind,
    detail: facts.state === 'stale' ? `stale-${facts.staleReason}` : facts.state === 'updating' ? 'updating' : undefined,
  });
  const h = ctx.req.headers;
  const coding = codingFor(entry, h, ctx.rt.config.compression.enabled);
  const notModified =
    (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined) &&
    isNotModifiedForClient(entry, { method: ctx.method, url: ctx.url, headers: h }, coding);
  const answer = { head, requestId, cacheStatus, ageSeconds: evaluation.ageSeconds, ttlSeconds, coding, notModified };
  // RFC 9110 §13.2.2: a matching If-None-Match / If-Modified-Since answers 304 before Range is looked at.
  const plan = !notModified && h.range !== undefined ? planRange(ctx.method, h, entry) : undefined;
  if (plan !== undefined && plan.kind !== 'full') sendRange(ctx.res, entry, plan, answer);
  else sendEntry(ctx.res, entry, answer);
  noteAnswered(ctx);
}

/** For a collapsed request's access log (afterWakeMs): its buffered answer is handed over now. */
function noteAnswered(ctx: Ctx): void {
  if (ctx.wokenAt !== undefined) ctx.answeredAt = ctx.deps.clock.now();
}

/** Stale reasons for which the origin was actually contacted (Cache-Status fwd=stale, not hit). */
const STALE_AFTER_ORIGIN_TRIED: ReadonlySet<StaleReason> = new Set(['error', 'timeout', 'unreachable']);

/** A buffered answer from the origin (a fill's result nobody stores, or its error), as recorded. */
export function writeBuffered(ctx: Ctx, answer: Answer, status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
  const { res } = ctx;
  if (res.headersSent || isResponseGone(res)) return;
  const out: OutgoingHttpHeaders = { ...headers, 'content-length': body.length };
  if (answer.cacheStatus !== undefined) out['cache-status'] = chainCacheStatus(headers['cache-status'], answer.cacheStatus);
  out['x-request-id'] = answer.requestId;
  res.writeHead(status, dispositionFirst(out));
  res.end(answer.head ? undefined : body);
  noteAnswered(ctx);
}

/**
 * One of the gateway's own answers that is not an error page (the redirect to https, a PURGE's
 * result), recorded and written as every other answer is: its state for the accounting,
 * X-Request-Id, Cache-Status and Via, and no body for HEAD.
 */
export function answerOwn(ctx: Ctx, status: number, facts: CacheStatusFacts, headers: OutgoingHttpHeaders, body: string): void {
  sendOwn(ctx.res, status, headers, body, recordAnswer(ctx, facts));
}

/** Admission refused and nothing stale: 503 with Retry-After from the measured drain rate. */
export function shed(ctx: Ctx, reason: ShedReason): void {
  ctx.shedReason = reason;
  const site = ctx.site;
  const retryAfter = site ? ctx.deps.admission.retryAfterSeconds(site.name) : 1;
  ctx.deps.metrics.get('shed').inc({ site: site?.name ?? '-', reason, priority: ctx.rt.priorities.nameOf(ctx.priority) });
  noteShed(ctx, site?.name ?? '-', reason, ctx.route?.name);
  ctx.deps.metrics.get('retryAfter').observe(retryAfter);
  fail(ctx, reason === 'circuit_open' ? 'circuit_open' : 'overloaded', shedDetail(ctx, reason), { retryAfterSeconds: retryAfter, state: 'shed', statusDetail: `shed-${reason}` });
}

/**
 * Why a refusal came, for the access line (`errorDetail`) and a local client's page: a route's
 * own cap read as "the site is very busy" with six users on it (Redmine trial).
 */
function shedDetail(ctx: Ctx, reason: ShedReason): string | undefined {
  if (reason !== 'route_busy') return undefined;
  const route = ctx.route;
  return `route "${route?.name ?? '-'}" is at its cap: its maxConcurrent (${route?.config.maxConcurrent ?? '-'}) requests were at the origin until this one's queue deadline; raise sites[].routes[].maxConcurrent, or give the slow pages a route of their own`;
}

/** At most one shedding warning per site this often, ms (SHED_LOG_MS). */
export const SHED_LOG_MS = 10_000;

/** Per site: when the last shedding warning was written, and the refusals since, by reason. */
const shedLogs = new WeakMap<Ctx['deps'], Map<string, ShedLog>>();

interface ShedLog {
  loggedAt: number;
  refused: number;
  reasons: Record<string, number>;
  /** The refusals by route (at most SHED_LOG_ROUTES named, the rest as "(other)"). */
  routes: Record<string, number>;
  /** Writes the refusals not yet in a line, SHED_LOG_MS after the line before. */
  flush: ReturnType<typeof setTimeout> | undefined;
}

/**
 * A warning in the log while a site sheds: at its first refusal, then at the first refusal
 * SHED_LOG_MS or more after the line before, with the refusals since that line, by reason, and
 * SHED_LOG_MS after a line in any case when refusals came since (a burst that stops within
 * that time: a fresh gateway's 94 refusals in its first 2 s left one line saying 1; normal-day
 * trial). A fifth of a site's requests refused used to leave no line above info (access lines,
 * metrics and /status said it; new-operator trial). By route too: half a DokuWiki crowd's
 * refusals were its invisible background-job image, and the count alone read as twice the
 * harm (DokuWiki re-check).
 */
export function noteShed(ctx: Pick<Ctx, 'deps'>, site: string, reason: ShedReason, route?: string): void {
  const { deps } = ctx;
  let bySite = shedLogs.get(deps);
  if (bySite === undefined) shedLogs.set(deps, (bySite = new Map()));
  const now = deps.clock.now();
  let state = bySite.get(site);
  if (state === undefined) bySite.set(site, (state = { loggedAt: -Infinity, refused: 0, reasons: {}, routes: {}, flush: undefined }));
  state.refused++;
  state.reasons[reason] = (state.reasons[reason] ?? 0) + 1;
  const name = route ?? '-';
  const counted = state.routes[name] !== undefined || Object.keys(state.routes).length < SHED_LOG_ROUTES ? name : '(other)';
  state.routes[counted] = (state.routes[counted] ?? 0) + 1;
  if (now - state.loggedAt < SHED_LOG_MS) {
    if (state.flush === undefined) {
      const pending = state;
      pending.flush = setTimeout(() => {
        pending.flush = undefined;
        if (pending.refused > 0) writeShedLine(deps, site, pending, deps.clock.now());
      }, state.loggedAt + SHED_LOG_MS - now);
      pending.flush.unref?.();
    }
    return;
  }
  writeShedLine(deps, site, state, now);
}

function writeShedLine(deps: Ctx['deps'], site: string, state: ShedLog, now: number): void {
  if (state.flush !== undefined) {
    clearTimeout(state.flush);
    state.flush = undefined;
  }
  deps.logger.warn(
    { site, refused: state.refused, reasons: state.reasons, routes: state.routes, ...(state.loggedAt !== -Infinity ? { sinceMs: Math.round(now - state.loggedAt) } : {}) },
    'shedding: requests refused with 503 and Retry-After since the last such line (crowdgate_shed_total has them all)',
  );
  state.loggedAt = now;
  state.refused = 0;
  state.reasons = {};
  state.routes = {};
}

/** The shedding line names at most this many routes (the rest count as "(other)"). */
const SHED_LOG_ROUTES = 20;

/** How a refusal differs from a plain error page: shed or rate-limited answers say so. */
export interface FailOptions {
  retryAfterSeconds?: number;
  /** The cache state recorded (default 'error'; refusals are 'shed'). */
  state?: CacheState;
  /** Cache-Status detail (default the error code). */
  statusDetail?: string;
}

/**
 * An error page for this request (the catalogue's status and text, `detail` for the operator).
 * The detail of a 5xx (where to look, which config key: the gateway's and the origin's
 * business) is on the page only for a client on this machine, as Rails shows its detailed
 * errors to local requests only; every client gets the code and the request id, and the
 * access line carries the detail (`errorDetail`). A visitor was told to "check
 * sites[].origins[].url" while the origin was merely down (new-user trial). A 4xx's detail is
 * about the request itself and goes to every client.
 */
export function fail(ctx: Ctx, code: ErrorCode, detail?: string, opts: FailOptions = {}): void {
  const { retryAfterSeconds, state = 'error', statusDetail } = opts;
  ctx.errorCode = code;
  ctx.errorDetail = detail;
  const answer = recordAnswer(ctx, { state, detail: statusDetail ?? code });
  const accept = ctx.req.headers.accept;
  const shown = detail !== undefined && (ERRORS[code].status < 500 || isLoopbackHost(ctx.clientAddress)) ? detail : undefined;
  sendError(ctx.res, code, answer, { accept: typeof accept === 'string' ? accept : undefined, detail: shown, retryAfterSeconds });
}

/**
 * Drain accounting, the request metrics and the hot-key count for one finished request (the
 * memo hit path, with the rows its memo entry holds, and finish() alike). Returns the status
 * sent, 0 when no head went out.
 */
/** One finished request, for countRequest(). */
export interface RequestTally {
  site: string;
  route: string;
  path: string;
  state: CacheState;
  durationMs: number;
}

export function countRequest(deps: RequestDeps, res: ServerResponse, tally: RequestTally, hold?: MemoHold): number {
  const { site, route, path, state, durationMs } = tally;
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

/** Requests finish() has accounted for. */
const finished = new WeakSet<Ctx>();

/**
 * Once per request, when its answer was handed over in full synchronously (`handedOff`) or its
 * response closed: drain accounting, request metrics, hot keys, the access log line.
 */
export function finish(ctx: Ctx, handedOff: boolean): void {
  // Once per request, whatever calls it: a response closed twice (Node's 'close' and another)
  // counted it done twice, and the drain then cut requests still under way (attacker trial).
  if (finished.has(ctx)) return;
  finished.add(ctx);
  const { deps, res } = ctx;
  const durationMs = deps.clock.now() - ctx.startedAt;
  const site = ctx.site?.name ?? '-';
  const routeName = ctx.route?.name ?? '-';
  const state = ctx.state === '-' ? 'error' : ctx.state;
  // Hot keys by target, query included: a wiki's pages are all /index.php?title=...
  const status = countRequest(deps, res, { site, route: routeName, path: ctx.url, state, durationMs });
  if (ctx.rt.config.log.access) {
    deps.logger.info(
      {
        type: 'access',
        requestId: ctx.requestId,
        client: ctx.clientAddress,
        method: ctx.method,
        scheme: ctx.scheme,
        http: ctx.req.httpVersion,
        path: ctx.path.slice(0, 512),
        ...(ctx.url.length > ctx.path.length ? { query: ctx.url.slice(ctx.path.length + 1, ctx.path.length + 513) } : {}),
        site,
        route: routeName,
        status,
        durationMs: Math.round(durationMs * 100) / 100,
        // Who asked, as nginx's combined format says: a browser's requests among a script's
        // crowd, and whether the request carried cookies (which of the 503s hit visitors with a
        // session: new-user trial). The cookies themselves never.
        ...(typeof ctx.req.headers['user-agent'] === 'string' ? { userAgent: ctx.req.headers['user-agent'].slice(0, 256) } : {}),
        ...(ctx.req.headers.cookie !== undefined ? { cookie: true } : {}),
        cache: ctx.state,
        collapsed: ctx.collapsed,
        ...(ctx.wokenAt !== undefined
          ? { afterWakeMs: Math.round(((ctx.answeredAt ?? deps.clock.now()) - ctx.wokenAt) * 100) / 100 }
          : {}),
        ...(ctx.upstreamMs !== undefined ? { upstreamMs: Math.round(ctx.upstreamMs * 100) / 100 } : {}),
        ...(ctx.origin !== undefined ? { origin: ctx.origin } : {}),
        ...(ctx.originAttempts !== undefined && ctx.originAttempts > 1 ? { originAttempts: ctx.originAttempts } : {}),
        ...(ctx.originRequestId !== undefined ? { originRequestId: ctx.originRequestId } : {}),
        ...(ctx.staleReason ? { staleReason: ctx.staleReason } : {}),
        ...(ctx.shedReason ? { shedReason: ctx.shedReason } : {}),
        // The admission class, when one of admission.priorities matched: which of the refusals
        // were an editor's (only the metric told; new-user trial).
        ...(ctx.priority !== ctx.rt.priorities.default ? { priority: ctx.rt.priorities.nameOf(ctx.priority) } : {}),
        ...(ctx.errorCode ? { error: ctx.errorCode } : isBodyTimeout(res) ? { error: 'request_timeout' } : {}),
        ...(ctx.errorDetail !== undefined ? { errorDetail: ctx.errorDetail.slice(0, 512) } : {}),
        ...(handedOff || isAnswered(res) ? {} : { aborted: true }),
      },
      'request',
    );
  }
}
