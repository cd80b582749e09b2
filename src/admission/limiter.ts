/**
 * The Limiter: hands out permits for origin requests (cache fills, revalidations, pass-through;
 * never cache hits) up to min(learned limit, ceiling), makes the rest wait in a bounded queue,
 * and feeds every finished request back to the limit algorithm as a sample.
 *
 * Owns enforcement: the in-flight count, the wait (deadline timers, CoDel cap, abort, eviction),
 * hand-over on release, and the measured drain rate. It does not learn the limit (limits/),
 * order the queue (queue.ts), or decide what a refusal means to the client (the request path).
 *
 * Being refused is a return value, not an exception. `acquire` answers synchronously when a
 * permit is free or the request is refused outright (queue full, deadline already past, already
 * aborted) — the refusal results are shared frozen objects, so shedding allocates nothing — and
 * returns a promise only when the request actually waits. A released permit goes straight to
 * the next waiter: no timer, no polling.
 *
 * Overload policy (queue-then-shed): wait at most `deadlineMs` (or the caller's `deadlineAt`),
 * or `minWaitRoundTrips` typical round trips when that is longer (at most ROUND_TRIP_WAIT_MAX_MS;
 * not for `fixedDeadline` callers, whom no client waits for): a deadline shorter than a few
 * round trips refuses a burst the origin is about to drain. Under a standing queue (CoDel, see queue.ts) cap waits, reason 'codel': at
 * `codelTargetMs` for a request that answers one client, at `codelIntervalMs` for one that
 * answers a crowd (`servesCrowd`: a cache fill every collapsed waiter shares); with
 * `minWaitRoundTrips` on, a request a client waits for is held to it only with
 * STANDING_CAP_PERMITS requests ahead of it and more work than that many typical ones, behind a
 * learned limit only while the queue outgrows the deadlines of such requests (Outgrowth: a
 * closed population at the origin's capacity stands in the queue but fits them), and once
 * admitted keeps its deadline. The short cap is
 * Facebook's server CoDel ("Fail at Scale", ACM Queue 2015: a queue not empty for N ms bounds
 * waits at M << N): while arrivals exceed the origin's rate, a longer wait only adds latency
 * to the requests served, not throughput, since a queue of M ms of work already keeps every
 * permit busy. Fills get the longer bound because refusing one fails every waiter at once.
 * When the queue is full an arrival evicts the newest waiter of the least important class below
 * its own ('evicted'), or is refused ('queue_full'). An arrival whose forecast wait exceeds its
 * bound is refused at once ('predicted_wait').
 *
 * Overdue permits step aside (the slow lane). A site's endpoints do not all cost the same: a
 * report or an upload that takes seconds holds its permit a hundred times longer than a page.
 * Counted against the limit, two slow reports hold the only two permits and the fast pages
 * queue behind them, although the origin has room. So a permit held longer than
 * `OVERDUE_FACTOR` x the typical round trip (clamped to [OVERDUE_MIN_MS, OVERDUE_MAX_MS]; until
 * one is measured, three quarters of the CoDel interval, so that at a cold start waiters are
 * not cut by CoDel behind permits nobody knows to be slow) leaves the limit's count for a lane of its own, of
 * LANE_FACTOR x `limit` permits (never past `ceiling`, which stays a hard cap on everything in
 * flight; during a no-load probe, every overdue permit: see laneCap). The threshold is never
 * more than OVERDUE_WAIT_SHARE of the least a waiter waits (see overdueAfterMs). Once a round trip is
 * known, such a request's round trip, moved aside or not, is an outlier of the endpoint mix:
 * it is fed neither to the limit nor to the typical round trip (which forecasts waits); before,
 * there is no mix to be an outlier of, and it is fed. That holds while some requests are
 * still answered promptly: once the last OVERDUE_RUN overdue requests all started after the
 * latest-started prompt one, the origin itself has slowed down, their round trips are fed
 * again, the lane closes, and an origin that is slow for everyone is limited as before.
 *
 * Known-slow paths. Long-polls that one event answers all at once, and that all ask again at
 * once (a chat's or a forum's message bus), are thirty requests to one path started together
 * and held for seconds: eight of them overdue, all started after the last prompt answer, read
 * as the origin slowing down; the lane closed, the polls held every permit, and the pages
 * behind them were refused in every cycle (failure-day trial: 21-43 % of a site's pages). So a
 * path (AcquireOptions.path) whose request was answered overdue after a request that started
 * later was answered promptly is slow on its own, and for KNOWN_SLOW_MS after that its overdue
 * requests are set aside as any but are no evidence (noteOverdue); KNOWN_SLOW_PATHS of them
 * are remembered (by their first KNOWN_SLOW_KEY_MAX characters), the least recent forgotten
 * first. An origin stalled for everyone answers nothing promptly, so no path becomes known
 * that way, and the paths it usually answers promptly still tell.
 *
 * Nor is a run of overdue requests all to one path that was never answered promptly evidence:
 * that says the path is slow, not the origin. A fresh gateway (a restart on an ordinary day)
 * reached by thirty long-polls a few milliseconds after its first pages had no round of polls
 * to learn from; the lane closed on the first eight and the other polls were refused at their
 * deadline. The paths answered promptly are remembered as the slow ones are (PROMPT_PATHS,
 * oldest forgotten first), so a path everyone's traffic goes to (WordPress's admin-ajax.php
 * in a crowd), once answered promptly, still tells when the origin slows down.
 *
 * Slow endpoints' share of the origin. The slow lane and the known-slow paths assume the slow
 * requests use room the origin has. An origin with a few workers (Apache's MaxRequestWorkers,
 * php-fpm's five children) has none: eight clients of a 10 s page held its five workers, and
 * every quick page sent beside them waited in its accept queue for a worker, 9-10 s, while the
 * gateway sent more (busy-workers bench). So when quick requests (a request's cost, costOf: its
 * path's least round trip, else its endpoint's no-load one, at most 1/QUICK_SHARE_FACTOR of the
 * overdue threshold) are held up (out past 4 times their cost) while slow ones are out (a path
 * never answered under SLOW_SHARE_SLOW_MS, or any request out past the overdue threshold that
 * is not quick), at least SLOW_SHARE_EVIDENCE of them, one for
 * SLOW_SHARE_SPAN_MS or more, and no fewer than the quick ones answered promptly meanwhile, the
 * slow requests out are what holds the origin: their share is cut to SLOW_SHARE_CUT of those out
 * (at least 1). A request of a slow endpoint that finds the share full waits at the gateway
 * (after the queue's own waiters, up to its deadline: `slow_share` when it passes) instead of
 * in the origin's backlog. The share grows by a quarter (at least one) for each slow request
 * answered while quick ones started since are answered promptly and none is held up for
 * SLOW_SHARE_SPAN_MS, no further than one below a ceiling (the fewest slow requests out when
 * quick ones were held that long; raised by a quarter after SLOW_SHARE_CEILING_MS, the wait
 * doubling each time the level it was raised past holds them up again); while ATTRITION_EVIDENCE are, a slow
 * request answered is not replaced (the share follows those out down). It is lifted after SLOW_SHARE_FORGET_MS without one held up that long
 * and without a slow request waiting for it. Off unless LimiterOptions.slowShare (review: a
 * stall of over a second on an origin with room cuts it too).
 * An origin with room holds quick requests up only when it stalls: a stall shorter than a
 * second sets nothing (no quick request is held a second); a longer one, with slow requests
 * out, does.
 * After a cut, only quick requests started since are judged: held up for a second, they cut it
 * again (a cut to half of six reports out left three on a three-worker origin).
 */
import type { Clock } from '../clock.js';
import type { QueueConfig } from '../config/schema.js';
import type { Limit, LimitSample } from './limits/limit.js';
import { Outgrowth } from './outgrowth.js';
import { WaitQueue, type Waiter } from './queue.js';

/** Timers, injectable so tests drive time by hand. */
export interface Scheduler {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemScheduler: Scheduler = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** How the origin request ended, for the limit algorithm. */
export type ReleaseKind =
  | 'success' // feeds an RTT sample: time since acquire
  | 'dropped' // origin timeout, 503, connection refused: an overload signal
  | 'ignore'; // no sample (the client left, the request was cancelled)

export interface Permit {
  /**
   * Returns the permit. Idempotent: only the first call counts. `latencyClass`: what kind of
   * request it was (a route's fills, its pass-through...): its round trip is compared with that
   * class's own no-load round trip (see "Latency classes"). `pathCost`: whether the answer
   * measures its path's cost (a 2xx or 304; default true): a 404 or a redirect from a slow path
   * comes at once, and the path read as quick for good (see "Slow endpoints' share").
   */
  release(kind: ReleaseKind, latencyClass?: string, pathCost?: boolean): void;
}

export type RefusalReason = 'queue_full' | 'predicted_wait' | 'deadline' | 'stalled' | 'codel' | 'evicted' | 'slow_share' | 'aborted';

export type AcquireResult =
  | { readonly ok: true; readonly permit: Permit; readonly waitedMs: number }
  | { readonly ok: false; readonly reason: RefusalReason; readonly waitedMs: number };

export interface AcquireOptions {
  /** Priority class, 0 = most important; out-of-range values are clamped. */
  priority: number;
  /** Give up waiting at this moment (epoch ms). Default now + queue.deadlineMs. */
  deadlineAt?: number;
  /** Aborting removes the waiter ('aborted'). */
  signal?: AbortSignal;
  /**
   * The request answers a crowd (a cache fill or revalidation that collapsed requests share).
   * Under a standing queue it may wait up to the CoDel interval; a request that answers one
   * client (pass-through) up to the CoDel target. See "Overload policy" above.
   */
  servesCrowd?: boolean;
  /**
   * Wait until `deadlineAt` exactly (a background refresh, a health probe, a request a stale
   * copy answers when it is refused). Otherwise a client is waiting, and the wait is at least
   * `queue.minWaitRoundTrips` typical round trips (see "Overload policy" above).
   */
  fixedDeadline?: boolean;
  /** The request's latency class (latencyClassOf), as its permit's release will name it. */
  latencyClass?: string;
  /** The request's path, without query (see "Known-slow paths" above). */
  path?: string;
  /**
   * The page it asks for where its path is shared by many (pageOf: the path and the query's
   * first parameter, `/index.php?title=Main_Page`, `/?p=42`); read by the quiet-spell rule only
   * (quickPagesOverdue).
   */
  page?: string;
}

/**
 * A request's page for AcquireOptions.page: its path and the first parameter of its query
 * (`/doku.php?id=start`, `/?p=42`, `/index.php?title=Main_Page`), at most PAGE_PARAM_MAX
 * characters of it; undefined without a query.
 */
export function pageOf(path: string, url: string): string | undefined {
  const q = url.indexOf('?');
  if (q < 0) return undefined;
  const first = url.slice(q + 1).split('&', 1)[0]!;
  return first === '' ? undefined : `${path}?${first.slice(0, PAGE_PARAM_MAX)}`;
}
const PAGE_PARAM_MAX = 128;

export interface LimiterOptions {
  limit: Limit;
  /** Hard cap on concurrent permits, on top of the learned limit. Never exceeded. */
  ceiling?: number;
  queue: Pick<QueueConfig, 'maxLength' | 'deadlineMs' | 'codelTargetMs' | 'codelIntervalMs'> & { minWaitRoundTrips?: number; standingBoundAfterMs?: number };
  /** Number of priority classes; 0 is the most important. */
  classes: number;
  clock: Clock;
  scheduler?: Scheduler;
  /** Time constant of the drain-rate EWMA, ms. Default 2000. */
  drainRateTauMs?: number;
  /**
   * Let overdue permits step aside (see "Overdue permits" above). Default false: a fixed limit
   * means what it says; the origin seam turns it on for learned limits.
   */
  slowLane?: boolean;
  /**
   * Give slow requests a share of an origin they hold (see "Slow endpoints' share" above), with
   * a slow lane only. Default false (admission.limit.slowShare).
   */
  slowShare?: boolean;
  /** The host's current event-loop delay, ms, passed to the algorithm with every sample. */
  hostDelayMs?: () => number;
  /**
   * What the other gateways in front of the same origin member have in flight to it, as they
   * last told (origin/peer-load.ts); read at each grant (LimitSample.peerInflight).
   */
  peerInflight?: () => number;
}

const refusal = (reason: RefusalReason): AcquireResult => Object.freeze({ ok: false, reason, waitedMs: 0 });
const REFUSED_QUEUE_FULL = refusal('queue_full');
const REFUSED_DEADLINE = refusal('deadline');
const REFUSED_ABORTED = refusal('aborted');
/** Refused at arrival: the queue ahead would not drain before the request's deadline. */
const REFUSED_PREDICTED = refusal('predicted_wait');

/** A permit is overdue after this many typical round trips (see "Overdue permits" above). */
export const OVERDUE_FACTOR = 10;
/** The slow lane holds at most this many times the limit. */
export const LANE_FACTOR = 8;
/**
 * Overdue requests are outliers only while some requests are still answered promptly: once the
 * last OVERDUE_RUN overdue ones all started after the latest-started request that was answered
 * promptly, the origin is slow for everyone, their round trips are fed to the limit again, and
 * the lane closes (see slowForEveryone).
 */
export const OVERDUE_RUN = 8;
/**
 * The origin is slow for everyone only when its slow requests began within this long of the
 * latest request it answered promptly (ms): traffic that was flowing and slowed down. A batch
 * of slow requests after a quiet spell, or on a fresh gateway, is the endpoint mix.
 */
export const SLOW_EVIDENCE_GAP_MS = 5_000;
/** After a quiet spell, the distinct paths answered promptly before that a run of overdue requests must span (see quickPagesOverdue). */
export const QUICK_PATHS_MIN = 3;

/**
 * quickPagesOverdue's test on one ring of keys (paths, or pages): each marked quick (answered
 * promptly before), QUICK_PATHS_MIN distinct at least, none more than half of the run.
 */
function spreadOver(keys: readonly (string | undefined)[], quick: Uint8Array): boolean {
  let distinct = 0;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    if (quick[i] !== 1 || key === undefined) return false;
    let same = 0;
    let seenBefore = false;
    for (let j = 0; j < keys.length; j++) {
      if (keys[j] !== key) continue;
      same++;
      if (j < i) seenBefore = true;
    }
    if (same * 2 > keys.length) return false;
    if (!seenBefore) distinct++;
  }
  return distinct >= QUICK_PATHS_MIN;
}
/** Paths remembered as slow on their own (see "Known-slow paths" above), at most. */
export const KNOWN_SLOW_PATHS = 4_096;
/** How long a path stays known to be slow on its own after its last such answer, ms. */
export const KNOWN_SLOW_MS = 10 * 60_000;
/** Paths remembered as answered promptly at least once (see "Known-slow paths" above), at most. */
export const PROMPT_PATHS = 4_096;
/** A path is remembered by this many characters at most (a client's made-up long paths cost no more). */
const KNOWN_SLOW_KEY_MAX = 256;
const knownSlowKey = (path: string): string => (path.length > KNOWN_SLOW_KEY_MAX ? path.slice(0, KNOWN_SLOW_KEY_MAX) : path);
/**
 * During a no-load probe, a counted permit of an endpoint more than this many times slower than
 * the site's typical round trip steps aside once held that long (see moveOverdue).
 */
export const PROBE_ASIDE_FACTOR = 3;
/** The overdue threshold is at most this share of the least a waiter waits (see overdueAfterMs). */
export const OVERDUE_WAIT_SHARE = 0.75;
/** ... but never below this many typical round trips. */
export const OVERDUE_MIN_FACTOR = 4;
/** Bounds of the overdue threshold, ms. */
export const OVERDUE_MIN_MS = 100;
export const OVERDUE_MAX_MS = 2_000;
/** A quick request: its cost at most 1/this of the overdue threshold (see "Slow endpoints' share" above). */
export const QUICK_SHARE_FACTOR = 4;
/** Paths whose least round trip is remembered (see costOf), at most. */
export const PATH_FLOORS = 4_096;
/** scanHeldUp looks at least this long apart, ms. */
const HELD_UP_SCAN_MS = 250;
/** A request whose path's least round trip is this long or more is slow, ms (see isSlow). */
export const SLOW_SHARE_SLOW_MS = 1_000;
/** The share's log line names at most this many paths of slow requests. */
const SLOW_PATHS_NAMED = 3;
/** A path's least round trip is kept as at least this, ms (0 reads as unknown). */
const PATH_FLOOR_MIN_MS = 0.01;
/** A path's least round trip not confirmed for this long is replaced by its next answer, ms (see notePathFloor). */
export const PATH_FLOOR_AGE_MS = 600_000;
/** The slow requests' share is cut to this part of those out. */
export const SLOW_SHARE_CUT = 0.5;
/** Quick requests held up before the slow requests' share is cut, at least. */
export const SLOW_SHARE_EVIDENCE = 4;
/** ... one of them held at least this long, ms. */
export const SLOW_SHARE_SPAN_MS = 1_000;
/** The share is lifted after this long without a quick request held up or a slow one waiting for it, ms. */
export const SLOW_SHARE_FORGET_MS = 30_000;
/**
 * The share grows no further than one below a level quick requests were held a second under; the
 * ceiling is raised by a quarter (at least one) after this long, ms, and this doubles each time
 * the level it was raised past holds them up again (see noteShareCeiling).
 */
export const SLOW_SHARE_CEILING_MS = 300_000;
/** The longest wait before the ceiling is raised, ms (see noteShareCeiling). */
export const SLOW_SHARE_CEILING_MAX_MS = 3_600_000;
/** Attrition (slowAnswered) needs at least this many quick requests held up a second. */
const ATTRITION_EVIDENCE = 2;

/** classSettledMs looks at most this many counted permits for the oldest of a class. */
const CLASS_SCAN_PERMITS = 64;

/** Completions are counted in buckets at least this long before they move the drain-rate EWMA. */
const DRAIN_BUCKET_MS = 250;

class LimiterPermit implements Permit {
  released = false;
  /** Moved to the slow lane (see "Overdue permits" above). */
  overdue = false;
  /** Moved there by a no-load probe only, before it was overdue (see moveOverdue). */
  probeAside = false;
  /** Noted as a quick request held up past the overdue threshold (see scanHeldUp). */
  heldUp = false;
  /** The counted permits, oldest first, or the slow lane's (doubly-linked lists owned by the Limiter). */
  prev: LimiterPermit | undefined = undefined;
  next: LimiterPermit | undefined = undefined;
  constructor(
    private readonly limiter: Limiter,
    readonly acquiredAt: number,
    readonly inflightAtAcquire: number,
    /** Its endpoint's typical round trip when granted, ms (0: unknown). */
    readonly expectedMs: number,
    /** inflightAtAcquire plus the slow lane's permits then (LimitSample.originInflight). */
    readonly originInflightAtAcquire: number,
    /** The other gateways' in-flight requests to the member then (LimitSample.peerInflight). */
    readonly peerInflightAtAcquire: number,
    /** AcquireOptions.path (see "Known-slow paths" above). */
    readonly path: string | undefined,
    /** AcquireOptions.latencyClass (see trialWaiter). */
    readonly latencyClass: string | undefined,
    /** AcquireOptions.page (quickPagesOverdue). */
    readonly page?: string,
  ) {}
  release(kind: ReleaseKind, latencyClass?: string, pathCost = true): void {
    if (this.released) return;
    this.released = true;
    this.limiter['onRelease'](this, kind, latencyClass, pathCost);
  }
}

/** A doubly-linked list of permits through their own links (a permit is in one list at a time). */
class PermitList {
  first: LimiterPermit | undefined = undefined;
  last: LimiterPermit | undefined = undefined;

  push(p: LimiterPermit): void {
    p.prev = this.last;
    p.next = undefined;
    if (this.last) this.last.next = p;
    else this.first = p;
    this.last = p;
  }

  remove(p: LimiterPermit): void {
    if (p.prev) p.prev.next = p.next;
    else this.first = p.next;
    if (p.next) p.next.prev = p.prev;
    else this.last = p.prev;
    p.prev = p.next = undefined;
  }

  /** Inserts `p` in acquiredAt order (from the back: permits mostly come in that order). */
  insertSorted(p: LimiterPermit): void {
    let after = this.last;
    while (after !== undefined && after.acquiredAt > p.acquiredAt) after = after.prev;
    if (after === undefined) {
      p.prev = undefined;
      p.next = this.first;
      if (this.first) this.first.prev = p;
      else this.last = p;
      this.first = p;
      return;
    }
    p.prev = after;
    p.next = after.next;
    if (after.next) after.next.prev = p;
    else this.last = p;
    after.next = p;
  }
}

/** The longest wait between trials to an origin that still answers none of them (ms; see trialDue). */
export const TRIAL_MAX_GAP_MS = 5_000;
/**
 * Under a standing queue a request a client waits for is held to the CoDel cap only with this
 * many requests ahead of it and more work ahead than this many typical requests; otherwise, to
 * its deadline (acquire). A browser loads a page over HTTP/2 by asking for all its scripts at
 * once (~70 for WordPress's block editor, ~10 ms each), and over HTTP/1.1 over
 * 6 connections to a host, so one user's page load keeps up to 6 requests queued whenever the
 * origin's permits are all busy: against 0.4 s pages on 4 PHP workers a permit comes free every
 * 100 ms, and the 50 ms cap refused whatever did not find one free at once, whatever its
 * priority; with 4, a WordPress editor's scripts were still refused behind its own 4-5 (a trial:
 * 11-44 of one page load's requests, the block editor never loaded). 8 is one page load and a
 * couple of other clients. Requests a stale copy answers keep the cap, so they yield the permits
 * to those it cannot.
 */
export const STANDING_CAP_PERMITS = 8;
/**
 * The longest wait `queue.minWaitRoundTrips` can give a request beyond its own deadline; also
 * the longest a request a client waits for waits through a stall (see expire).
 */
export const ROUND_TRIP_WAIT_MAX_MS = 5_000;
/** How often a wait kept through a no-load probe looks again, ms (see expire). */
const PROBE_LOOK_MS = 100;
/** The queue's waits are given the round trips again when the typical one grows past this multiple (see waitRoundTrips). */
const WAIT_REPRICE_GROWTH = 1.25;

/** A request of a slow endpoint waiting for the slow requests' share (see "Slow endpoints' share" above). */
interface HeldSlow {
  readonly opts: AcquireOptions;
  readonly enqueuedAt: number;
  readonly deadlineAt: number;
  readonly resolve: (r: AcquireResult) => void;
  timer: unknown;
  onAbort: (() => void) | undefined;
}

export class Limiter {
  /** Called after the limit, the in-flight count or the queue changed. Keep it cheap. */
  onChange: ((limiter: Limiter) => void) | undefined;
  /**
   * Called when the slow requests' share is cut (`share`: how many may be out now, `out`: how
   * many were, `paths`: up to SLOW_PATHS_NAMED of their paths, most held first) or lifted
   * (`share` undefined). See "Slow endpoints' share" above.
   */
  onSlowShare: ((share: number | undefined, out: number, paths?: string[]) => void) | undefined;
  /** Called when the algorithm starts a no-load probe of its own (Limit.onProbe), to tell the other gateways. */
  onProbe: (() => void) | undefined;

  private algorithm: Limit;
  private ceiling: number;
  private queueConfig: LimiterOptions['queue'];
  private readonly queue: WaitQueue<AcquireResult>;
  private readonly clock: Clock;
  private readonly scheduler: Scheduler;
  private readonly drainRateTauMs: number;
  /** Permits counted against the limit (the slow lane's are not). */
  private inflightCount = 0;
  /** Permits in the slow lane. */
  private overdueCount = 0;
  /** Counted permits, oldest first: the first to become overdue is at the head. */
  private readonly counted = new PermitList();
  /** Permits in the slow lane, in the order they moved there. */
  private readonly lane = new PermitList();
  /** Timer that moves overdue permits aside while requests wait. */
  private overdueTimer: unknown;
  private slowLane: boolean;
  /** When the latest-started request that was answered promptly (not overdue) started. */
  private promptStartedAt = -Infinity;
  /** When the last request beyond the limit went out to a stalled origin (see trialDue). */
  private lastTrialAt = -Infinity;
  /** That trial, until it is released. */
  private trialPermit: LimiterPermit | undefined = undefined;
  /** The wait before another trial while one is still out (doubles each time). */
  private trialGapMs = 0;
  /** When the last OVERDUE_RUN overdue requests started (a ring; see slowForEveryone). */
  private readonly overdueStarts = new Float64Array(OVERDUE_RUN);
  /** Paths known to be slow on their own, and when each last showed it, oldest first (see "Known-slow paths" above). */
  private readonly knownSlow = new Map<string, number>();
  /** Paths answered promptly at least once, oldest first (see "Known-slow paths" above). */
  private readonly promptPaths = new Set<string>();
  /** The same of pages (AcquireOptions.page), apart: up to PROMPT_PATHS too (notePromptPage). */
  private readonly promptPages = new Set<string>();
  /** Whether each of the last OVERDUE_RUN overdue requests was a quick one (a ring beside overdueStarts; see quickPagesOverdue). */
  private readonly overdueQuick = new Uint8Array(OVERDUE_RUN);
  /** quickPagesOverdue's verdict on the ring, made when it changes (noteOverdue), not at each grant. */
  private overdueRunQuick = false;
  /** The paths of the last OVERDUE_RUN overdue requests (a ring beside overdueStarts). */
  private readonly overduePaths: (string | undefined)[] = new Array<string | undefined>(OVERDUE_RUN).fill(undefined);
  /** Beside overduePaths: each one's page (AcquireOptions.page), and whether it was answered promptly before. */
  private readonly overduePages: (string | undefined)[] = new Array<string | undefined>(OVERDUE_RUN).fill(undefined);
  private readonly overduePageQuick = new Uint8Array(OVERDUE_RUN);
  /** The one path every request of that ring went to, if they all went to one; else undefined. */
  private overdueOnePath: string | undefined = undefined;
  private overdueNoted = 0;
  /** The highest typical round trip the queue's waits were given their round trips at (see waitRoundTrips). */
  private waitPricedAtMs = 0;
  /** The earliest start of an overdue request that started after promptStartedAt (see slowForEveryone). */
  private firstOverdueAfterPrompt = -Infinity;
  // Shared sample object: the Limit contract says implementations copy what they keep.
  private readonly sample: LimitSample = { rttMs: 0, inflight: 0, originInflight: 0, peerInflight: 0, waiting: 0, dropped: false, hostDelayMs: 0, stratum: undefined, stratumShare: undefined, scaleMs: undefined, classBaseMs: undefined, classSettledMs: undefined };
  private readonly hostDelayMs: (() => number) | undefined;
  private readonly peersInflight: (() => number) | undefined;
  /** Whether slow requests may get a share (LimiterOptions.slowShare), with a slow lane. */
  private slowShareOn: boolean;
  /** How many slow requests may be out; Infinity when no share is set (see "Slow endpoints' share" above). */
  private slowShare = Infinity;
  /** When a quick request was last seen held up for SLOW_SHARE_SPAN_MS or more (the evidence a cut needs). */
  private heldUpLongAt = -Infinity;
  /** When the share was last cut or raised: quick requests started before it are not judged against it. */
  private slowShareAt = -Infinity;
  /** The current run of quick requests held up behind slow ones: how many, the earliest start, and the prompt ones since. */
  private heldUpCount = 0;
  private heldUpFirstStart = 0;
  private promptQuick = 0;
  /** When a quick request was last held up (within the share's rules), ms. */
  private heldUpAt = -Infinity;
  /** Each path's least round trip, least recently answered first (see costOf). */
  private readonly pathFloors = new Map<string, { ms: number; at: number }>();
  /** Quick requests started since the share last changed and answered promptly (see slowAnswered). */
  private promptSinceShare = 0;
  /** When a slow request last had to wait for the share. */
  private slowHeldAt = -Infinity;
  /**
   * The fewest slow requests out at a cut when no more were out than the share allowed, or the
   * share quick requests sent under it were held under as it first followed those out down; and
   * when it was set or raised: growth stops one below it (see slowAnswered, noteShareCeiling).
   */
  private shareCeiling = Infinity;
  private shareCeilingAt = -Infinity;
  /**
   * How long after shareCeilingAt the ceiling is raised by a quarter (at least one), doubled when
   * the level it was raised past holds quick requests up again; and that level (Infinity when
   * it was not raised since it was last noted).
   */
  private ceilingRelaxMs = SLOW_SHARE_CEILING_MS;
  private ceilingProbedFrom = Infinity;
  /**
   * Since when growth is judged (see slowAnswered): the share's last change, or the last quick
   * request seen held a second without a cut (a share of 1 never grew again: review).
   */
  private growthFrom = -Infinity;
  /** Whether the share was last changed by following the slow requests out down (slowAnswered). */
  private followingDown = false;
  /** Requests of slow endpoints waiting for the share, by priority then oldest first. */
  private readonly held: HeldSlow[] = [];
  /** The timer of armHeldUpScan. */
  private heldUpTimer: unknown = undefined;
  /** Saturation accounting (see saturatedSeconds): whether saturated now, since when, and the time before. */
  private saturated = false;
  private saturatedSince = 0;
  private saturatedMs = 0;

  /** Each latency class's no-load round trip, to read samples on one scale (see "Latency classes"). */
  private readonly latency = new LatencyClasses();

  /** EWMA of successful permit round trips (ms); 0 until the first one. */
  private rttEwmaMs = 0;
  /** When a permit was last released (see showsSaturation). */
  private lastReleaseAt = -Infinity;
  /** When a no-load probe was last seen holding the limit down (an arrival, a release, a kept wait's look): about when the last one ended; see `queue.standingBoundAfterMs`. */
  private probeSeenAt = -Infinity;
  /** When the queue last outgrew its deadlines, per priority class (see outgrewDeadlines). */
  private outgrowth: Outgrowth;
  private drainBucketStartAt: number;
  private drainBucketCount = 0;
  private drainRate = 0;
  private hasDrainRate = false;

  constructor(opts: LimiterOptions) {
    this.algorithm = opts.limit;
    this.ceiling = checkCeiling(opts.ceiling);
    this.queueConfig = checkQueue(opts.queue);
    this.queue = new WaitQueue<AcquireResult>(opts.classes, {
      targetMs: opts.queue.codelTargetMs,
      intervalMs: opts.queue.codelIntervalMs,
    });
    this.outgrowth = new Outgrowth(this.queue.classes);
    this.clock = opts.clock;
    this.scheduler = opts.scheduler ?? systemScheduler;
    this.drainRateTauMs = opts.drainRateTauMs ?? 2000;
    this.drainBucketStartAt = this.clock.now();
    this.slowLane = opts.slowLane ?? false;
    this.slowShareOn = opts.slowShare ?? false;
    this.hostDelayMs = opts.hostDelayMs;
    this.peersInflight = opts.peerInflight;
    this.hookProbes();
  }

  /**
   * After the limit, the in-flight count or the queue changed: the time saturated is accounted
   * (saturatedSeconds), then onChange is told.
   */
  private changed(): void {
    this.trackSaturation();
    this.onChange?.(this);
  }

  /**
   * Saturated: every counted permit in use, against the planning limit (a no-load probe holds
   * the limit below it for a few round trips, and the queue meanwhile is the probe's), with a
   * request waiting.
   */
  private trackSaturation(): void {
    const saturated = this.queue.length > 0 && this.inflightCount >= this.planningLimit;
    if (saturated === this.saturated) return;
    const now = this.clock.now();
    if (this.saturated) this.saturatedMs += now - this.saturatedSince;
    else this.saturatedSince = now;
    this.saturated = saturated;
  }

  /**
   * A permit may be granted: fewer counted permits than the limit, and fewer in all than the
   * ceiling. The slow lane may hold up to ceiling - limit while a no-load probe holds the limit
   * down; when the probe ends the limit comes back, and filling the counted permits up to it
   * beside that lane passed the ceiling (review: 7 in flight under a ceiling of 4).
   */
  private get hasRoom(): boolean {
    return this.inflightCount < this.limit && this.inflightCount + this.overdueCount < this.ceiling;
  }

  /** Overdue permits step aside when every permit is taken; a waiter gets the room they leave. */
  private makeRoom(now: number): void {
    if (this.inflightCount < this.limit || !this.moveOverdue(now)) return;
    this.pump(now);
    this.changed();
  }

  /**
   * Seconds so far during which every counted permit was in use and requests waited for one
   * (crowdgate_origin_saturated_seconds_total): a counter, so a share of time can be read over
   * any window. The gauges it replaces for the saturation alert (in-flight, limit, queue) are
   * read at scrape instants: a queue empty at one scrape restarted the alert's wait, and a long
   * slowdown seen at 2 s evaluations never fired (observability trial).
   */
  saturatedSeconds(): number {
    const open = this.saturated ? this.clock.now() - this.saturatedSince : 0;
    return (this.saturatedMs + open) / 1000;
  }

  /** The algorithm's own probes are told on through onProbe. */
  private hookProbes(): void {
    this.algorithm.onProbe = () => this.onProbe?.();
  }

  /**
   * Another gateway in front of the same member started a no-load probe: the algorithm starts
   * one too where it can (Limit.joinProbe). True when it did.
   */
  joinProbe(): boolean {
    const joined = this.algorithm.joinProbe?.(this.clock.now()) ?? false;
    if (joined) this.changed();
    return joined;
  }

  /** Permits currently out, the slow lane's included. */
  get inflight(): number {
    return this.inflightCount + this.overdueCount;
  }

  /** What the other gateways have in flight to the member now, as the limit is told it (LimiterOptions.peerInflight). */
  get peerInflight(): number {
    return this.peersInflight?.() ?? 0;
  }

  /** Permits out in the slow lane (held past the overdue threshold, not counted against the limit). */
  get overdue(): number {
    return this.overdueCount;
  }

  /**
   * When a counted permit becomes overdue, ms: OVERDUE_FACTOR x the typical round trip, within
   * [OVERDUE_MIN_MS, OVERDUE_MAX_MS]; three quarters of the CoDel interval until a round trip
   * was measured (before CoDel would cut the waiters; after a first round of ordinary requests,
   * which would otherwise step aside and double the concurrency at a cold start).
   */
  get overdueAfterMs(): number {
    if (this.rttEwmaMs === 0) return (this.queueConfig.codelIntervalMs * 3) / 4;
    let ms = OVERDUE_FACTOR * this.rttEwmaMs;
    // Never past OVERDUE_WAIT_SHARE of the least a waiter waits (queue.deadlineMs, or its
    // minWaitRoundTrips typical round trips): against a 60 ms typical round trip a waiter
    // waits 500 ms and a permit was overdue after 600, so the pages (or polls) queued behind a
    // fresh gateway's first long-polls were refused at their deadline just before the polls
    // would have stepped aside.
    // Nor below OVERDUE_MIN_FACTOR round trips (a queue.deadlineMs of a round trip or two,
    // without minWaitRoundTrips, would set every answer a little slower than usual aside).
    const leastWaitMs = Math.max(this.queueConfig.deadlineMs, this.roundTripWaitMs(undefined));
    const cap = Math.max(OVERDUE_WAIT_SHARE * leastWaitMs, OVERDUE_MIN_FACTOR * this.rttEwmaMs);
    if (ms > cap) ms = cap;
    return ms < OVERDUE_MIN_MS ? OVERDUE_MIN_MS : ms > OVERDUE_MAX_MS ? OVERDUE_MAX_MS : ms;
  }

  /** The enforced limit: min(learned, ceiling). */
  get limit(): number {
    const learned = this.algorithm.current;
    return learned < this.ceiling ? learned : this.ceiling;
  }

  /** The limit waits are forecast with: the algorithm's planning limit, capped like `limit`. */
  private get planningLimit(): number {
    const planned = Math.min(this.algorithm.planning ?? this.algorithm.current, this.ceiling);
    const enforced = this.limit;
    return planned > enforced ? planned : enforced;
  }

  /** How many slow requests may be out, or undefined while no share is set (see "Slow endpoints' share" above). */
  get slowRequestsShare(): number | undefined {
    return this.slowShare === Infinity ? undefined : this.slowShare;
  }

  /** Requests waiting for a permit: the queue's, and slow endpoints' held for their share (see "Slow endpoints' share" above). */
  get queueLength(): number {
    return this.queue.length + this.held.length;
  }

  /** True while CoDel sees a standing queue (LIFO service, capped waits). */
  get isQueueStanding(): boolean {
    return this.queue.isStanding;
  }

  queueLengthByClass(): number[] {
    return this.queue.lengthByClass();
  }

  /**
   * Applies a reloaded config. Waiters keep the deadlines they were given; with fewer priority
   * `classes`, those of a class gone join the lowest one left, and background refreshes stay
   * last (WaitQueue.setClasses).
   */
  configure(opts: { ceiling?: number; queue?: LimiterOptions['queue']; classes?: number }): void {
    this.ceiling = checkCeiling(opts.ceiling);
    if (opts.classes !== undefined) {
      this.queue.setClasses(opts.classes);
      if (this.outgrowth.classes !== this.queue.classes) this.outgrowth = new Outgrowth(this.queue.classes);
    }
    if (opts.queue) {
      this.queueConfig = checkQueue(opts.queue);
      this.queue.setCodel({ targetMs: opts.queue.codelTargetMs, intervalMs: opts.queue.codelIntervalMs });
    }
    this.pump(this.clock.now());
    this.changed();
  }

  /** The algorithm's bounds changed on reload (Limit.setBounds): what it learned is kept within them. */
  setLimitBounds(min: number, max: number): void {
    this.algorithm.setBounds?.(min, max);
    this.pump(this.clock.now());
    this.changed();
  }

  /** The algorithm's limit now (for a reload that changes the algorithm but keeps what was learned). */
  get learnedLimit(): number {
    return this.algorithm.planning ?? this.algorithm.current;
  }

  /**
   * Applies a reloaded limit algorithm at once: the new one decides every grant from now on,
   * starting from its own initial limit (where what was learned should carry over, the caller
   * makes it the initial one). The permits out stay counted (a lowered limit grants nothing
   * until they fall below it), the waiters keep their places, and the latency classes and
   * round-trip estimate stay (they describe the origin, not the algorithm).
   * An edit made under load took effect only once the member was idle, which a member under
   * steady traffic never is: an emergency cap did nothing, and a restored config left a fixed
   * limit of 4 in force and 92 % of requests refused (failure-day trial).
   */
  replaceLimit(limit: Limit, slowLane: boolean): void {
    this.algorithm.onProbe = undefined;
    this.algorithm = limit;
    this.hookProbes();
    // Without a slow lane (a fixed limit means what it says), the permits in it count again:
    // an emergency cap of 2 otherwise still granted beside 8 slow requests at the origin.
    if (this.slowLane && !slowLane) this.recountLane();
    this.slowLane = slowLane;
    // Nor a share for slow requests (see endSlowShare).
    if (!slowLane) this.endSlowShare();
    this.pump(this.clock.now());
    this.changed();
  }

  /** admission.limit.slowShare reloaded: off ends a share set (endSlowShare). */
  enableSlowShare(on: boolean): void {
    if (on === this.slowShareOn) return;
    this.slowShareOn = on;
    if (!on) this.endSlowShare();
  }

  /**
   * No share any more (turned off, or no slow lane): the evidence is forgotten, the scan stops,
   * and the requests held for the share go through acquire again, to the queue's rules and
   * reasons (a reload to a fixed limit left them held, refused `slow_share` after 5 s with no
   * share: review).
   */
  private endSlowShare(): void {
    const now = this.clock.now();
    const was = this.slowShare;
    this.setSlowShare(Infinity, now);
    this.heldUpCount = 0;
    this.promptQuick = 0;
    this.heldUpAt = this.heldUpLongAt = this.slowHeldAt = -Infinity;
    this.forgetCeiling();
    if (this.heldUpTimer !== undefined) {
      this.scheduler.clearTimeout(this.heldUpTimer);
      this.heldUpTimer = undefined;
    }
    if (was !== Infinity) this.onSlowShare?.(undefined, 0);
    for (const h of this.held.splice(0)) {
      this.detachHeld(h);
      const heldMs = now - h.enqueuedAt;
      const settle = (r: AcquireResult) => h.resolve({ ...r, waitedMs: r.waitedMs + heldMs });
      const r = this.acquire({ ...h.opts, deadlineAt: h.deadlineAt });
      if (r instanceof Promise) void r.then(settle);
      else settle(r);
    }
  }

  /** Slow requests may get a share now: the option is on and there is a slow lane. */
  private get sharing(): boolean {
    return this.slowShareOn && this.slowLane;
  }

  /**
   * Permits completed per second (an EWMA over ~drainRateTauMs), counting every release. 0 until
   * measured. This is how fast the queue moves, for Retry-After.
   */
  drainRatePerSecond(): number {
    this.rollDrainBucket(this.clock.now());
    return this.hasDrainRate ? this.drainRate : 0;
  }

  /** A permit now, or undefined; never waits and never jumps the queue. */
  tryAcquire(): Permit | undefined {
    this.makeRoom(this.clock.now());
    if (this.queue.length > 0 || !this.hasRoom) return undefined;
    const permit = this.grant(this.clock.now());
    this.changed();
    return permit;
  }

  acquire(opts: AcquireOptions): Promise<AcquireResult> | AcquireResult {
    const signal = opts.signal;
    if (signal?.aborted) return REFUSED_ABORTED;
    const now = this.clock.now();
    if (this.isProbing) this.probeSeenAt = now; // (tick may end the probe)
    this.algorithm.tick?.(now);
    this.makeRoom(now);
    if (this.queue.length > 0 && this.hasRoom) this.pump(now); // limit grew
    if (this.slowShare !== Infinity && this.isSlow(opts.path, opts.latencyClass)) {
      this.liftSlowShare(now);
      if (this.slowShare !== Infinity && (this.held.length > 0 || this.slowOut(now) >= this.slowShare)) {
        // Held requests count against the queue's bound, as its waiters do.
        if (this.queue.length + this.held.length >= this.queueConfig.maxLength) {
          this.outgrowth.note(0, now);
          return REFUSED_QUEUE_FULL;
        }
        return this.holdSlow(opts, now);
      }
    }
    if (this.inflightCount >= this.limit && this.trialDue(now)) {
      // Every permit is held by a request the origin has not answered: one goes beyond the
      // limit (a waiter of another kind than those (trialWaiter), else the queue's head, else
      // this one) to tell when the origin answers again.
      // The next one waits twice as long while this one is still out (at most TRIAL_MAX_GAP_MS).
      this.trialGapMs = this.trialPermit === undefined ? this.overdueAfterMs : Math.min(2 * this.trialGapMs, TRIAL_MAX_GAP_MS);
      this.lastTrialAt = now;
      if (this.queue.length === 0) {
        const permit = (this.trialPermit = this.grant(now, 0, opts.path, opts.latencyClass, opts.page));
        this.changed();
        return { ok: true, permit, waitedMs: 0 };
      }
      const other = this.trialWaiter(now);
      if (other !== undefined) this.queue.remove(other);
      for (let w = other ?? this.queue.shift(now); w !== undefined; w = this.queue.shift(now)) {
        if (this.waitIsOver(w, now)) {
          this.settle(w, this.overReason(w), now);
          continue;
        }
        this.detach(w);
        w.resolve({ ok: true, permit: (this.trialPermit = this.grant(now, 0, w.path, w.latencyClass, w.page)), waitedMs: now - w.enqueuedAt });
        break;
      }
    }
    if (this.queue.length === 0 && this.hasRoom) {
      const permit = this.grant(now, this.latency.typical(opts.latencyClass), opts.path, opts.latencyClass, opts.page);
      this.changed();
      return { ok: true, permit, waitedMs: 0 };
    }
    // A probe may have ended (tick), waiters been served (pump) or expired (the trial): a refusal
    // below changes nothing more, but the time saturated must know where things stand now.
    this.trackSaturation();
    let deadlineAt = opts.deadlineAt ?? now + this.queueConfig.deadlineMs;
    if (deadlineAt <= now) return REFUSED_DEADLINE;
    // A client waits at least a few of the origin's round trips: against an origin whose
    // answers take 0.5 s, a 500 ms deadline refused every request of a burst that found the
    // permits taken, one the origin drains in a few round trips (WordPress's block editor). The
    // standing queue's cap and the forecast below still refuse what sustained overload would
    // make wait.
    if (this.clientWaits(opts)) deadlineAt = Math.max(deadlineAt, now + this.roundTripWaitMs(opts.latencyClass));
    const last = this.queue.classes - 1;
    const raw = opts.priority;
    const priority = raw >= 0 ? (raw <= last ? raw | 0 : last) : 0;
    if (this.queue.length >= this.queueConfig.maxLength) {
      const victim = this.queue.evictionCandidate(priority);
      this.outgrowth.note(0, now);
      if (!victim) return REFUSED_QUEUE_FULL;
      this.finish(victim, 'evicted', now);
    }
    if (this.judgeStanding(now)) {
      this.capWaiters(now);
      this.trackSaturation();
    }
    // Refuse at arrival what cannot be served in time: a request admitted to the queue should
    // get its permit, and one refused should hear so at once, not after waiting. The expected
    // wait is the work of the waiters ahead of it (FIFO order), plus one round trip for a
    // permit to come free, over the limit (Little's law: limit permits, each held its request's
    // round trip); the bound is its deadline, or the CoDel cap under a standing queue. The
    // planning limit, so a brief no-load probe does not refuse what its end will serve.
    // Only on evidence that the origin queues (Limit.showsQueueing): a queue behind a learned
    // limit that is still climbing (a cold start, a normal day's burst of clients), with round
    // trips at their no-load value, is the limit's lag, not the origin's saturation; those
    // requests wait for their permits, up to their deadline, as the limit grows.
    // While the limit is still learning (Limit.isColdStart: it has only just started to bind),
    // the bound is the deadline alone: no standing-queue cap.
    const saturated = this.showsSaturation(now);
    // Nor while a no-load probe holds the limit down (judgeStanding): a queue that stood before
    // it keeps standing, but behind a quarter of the limit its arrivals' waits are the probe's
    // doing, and the restored limit serves them. Held to the CoDel target there, 8 waiters
    // expected to wait 170-260 ms were refused at arrival, POSTs included, while an origin with
    // room for all got 3x slower for 6 s (differential fuzzer: 30 such refusals in a second).
    // And, for a request a client waits for behind a learned limit, only once the queue has
    // stood `queue.standingBoundAfterMs` (1 s by default), counted from the later of when it
    // began to stand and when the last probe ended: on an ordinary day a queue stands for a
    // moment (a busy host's round trips, a probe's quarter of the limit, a burst), the queue
    // of about 8 behind it does not empty at once, and arrivals expected to wait 90-400 ms were
    // refused against the 50-100 ms CoDel bound, POSTs included, while the origin had room
    // for all (differential fuzzer: up to 206 of ~7 000 requests a minute; direct none).
    // Meanwhile such a wait is bounded by its deadline, as any other; a crowd's queue keeps
    // standing, and gets the bound a second on. Not while the evidence is strong
    // (Limit.showsSustainedQueueing: three quarters of the recent windows queued, as a crowd's
    // do): waiting that second, a x50 crowd's pages p99 read 345-734 ms against 27-300 ms in
    // three of four alternated pairs. A request a stale copy answers keeps the bound (it is answered from
    // the copy, not refused), and so does a fixed or AIMD limit, which states the origin's
    // capacity.
    //
    // And, for such a request, only while the queue outgrows its deadlines (outgrewDeadlines):
    // a queue that stands but whose waits all fit their deadlines is a population the origin
    // serves at its own pace, each client waiting for its answer before it asks again (25
    // people searching a WordPress site on 4 PHP workers: the origin answered every search in
    // 0.6-1.0 s straight; through the gateway 51-496 of ~1 700 were refused, and in the
    // busy-workers bench's search crowd 56 % of the requests, with the same number answered,
    // since a refused client only asks again sooner). A crowd that outgrows them is held to
    // the bound (per class, with a memory that doubles while a crowd goes on: see Outgrowth).
    const standing =
      this.queue.isStanding &&
      !this.isColdStart(now) &&
      !this.isProbing &&
      (!this.clientWaits(opts) ||
        (this.outgrewDeadlines(priority, now) &&
          ((this.algorithm.showsSustainedQueueing?.(now) ?? true) ||
            now - Math.max(this.queue.standingSinceAt, this.probeSeenAt) >= (this.queueConfig.standingBoundAfterMs ?? 0))));
    // Each waiter ahead counts as its own endpoint's typical round trip (costMs), not the site's:
    // over HTTP/2 a browser asks for a page's ~70 scripts at once, each answered in ~10 ms, and
    // counted at the typical round trip of the site's 0.1-0.7 s pages and REST calls they read as
    // seconds of work and most of them were refused on a WordPress editor's page load (a trial).
    // A slow endpoint's permit steps aside to the slow lane once overdue: it holds a counted
    // permit at most that long.
    const typicalMs = this.latency.typical(opts.latencyClass) || this.rttEwmaMs;
    const costMs = this.slowLane && typicalMs > this.overdueAfterMs ? this.overdueAfterMs : typicalMs;
    // Nor while the origin has just stalled (nothing answered for a stall's length, for less
    // than ROUND_TRIP_WAIT_MAX_MS): the forecast's work ahead says nothing about when it answers
    // again, and an origin with room that locks for 2.5 s answers everything then. A request a
    // client waits for queues, and its wait is kept through the stall (expire); refused at
    // arrival, 58-81 of 6 000 requests a minute were refused `predicted_wait` in the first
    // second of each lock, POSTs included (failure-day trial). Past that, the origin is taken as
    // hung, and the forecast refuses again.
    const stalledFor = this.stalledForMs(now);
    const youngStall = this.clientWaits(opts) && stalledFor >= 0 && stalledFor < ROUND_TRIP_WAIT_MAX_MS;
    if (this.rttEwmaMs > 0 && saturated && !youngStall) {
      const expectedWaitMs = (this.queue.workAhead(priority) + this.rttEwmaMs) / this.planningLimit;
      // Under a standing queue, the CoDel cap; for a request a client waits for, only once both
      // STANDING_CAP_PERMITS requests are ahead of it and more work than that many typical
      // ones: one browser's page load is not a crowd, over HTTP/1.1 (6 at a time, some slow)
      // or HTTP/2 (~70 cheap scripts at once).
      const allowance =
        this.clientWaits(opts) &&
        (this.queue.countAhead(priority) < STANDING_CAP_PERMITS || expectedWaitMs <= (STANDING_CAP_PERMITS * this.rttEwmaMs) / this.planningLimit);
      const capped = standing && !allowance;
      const boundMs = capped ? Math.min(this.standingCapMs(opts), deadlineAt - now) : deadlineAt - now;
      if (expectedWaitMs > boundMs) {
        if (expectedWaitMs > deadlineAt - now && this.clientWaits(opts)) this.outgrowth.note(priority, now);
        return REFUSED_PREDICTED;
      }
    }
    return new Promise<AcquireResult>((resolve) => {
      const w: Waiter<AcquireResult> = {
        priority,
        enqueuedAt: now,
        deadlineAt,
        costMs,
        path: opts.path,
        page: opts.page,
        latencyClass: opts.latencyClass,
        expiresAt: deadlineAt,
        capped: false,
        waitsRoundTrips: this.clientWaits(opts),
        resolve,
        timer: undefined,
        signal,
        onAbort: undefined,
        prev: undefined,
        next: undefined,
        queued: false,
      };
      // A request a client waits for, admitted on the forecast, keeps its deadline: it was
      // expected to be served within the bound, and cutting it there when the forecast was short
      // only makes it fail late (a WordPress editor's scripts, admitted with 140 ms forecast and
      // cut at 160-210 ms behind 5 permits, 500-700 ms before their deadline: the block editor
      // did not load). The forecast still refuses arrivals while the queue ahead is too long.
      if (standing && saturated && !(this.rttEwmaMs > 0 && this.clientWaits(opts))) {
        const capAt = now + this.standingCapMs(opts);
        if (capAt < deadlineAt) {
          w.expiresAt = capAt;
          w.capped = true;
        }
      }
      this.queue.push(w, now);
      w.timer = this.scheduler.setTimeout(() => this.expire(w), w.expiresAt - now);
      this.armOverdueTimer(now);
      if (signal) {
        w.onAbort = () => this.finish(w, 'aborted', this.clock.now());
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.changed();
    });
  }

  /**
   * Evidence that the origin is saturated, for refusing at arrival (acquire()): the limit
   * algorithm's (Limit.showsQueueing; a fixed or AIMD limit always), or an origin that stopped
   * answering (none released for max(codelIntervalMs, 2 x the typical round trip) while the
   * oldest permit in flight has been out that long: it closes no window for the algorithm to
   * judge). Counted from the later of the two: a burst that takes every permit at once after a
   * quiet spell has had no time to be answered (500 new clients on uncached pages of a fresh
   * gateway read the 1.3 s since the health probe's release as a stalled origin, and 400 were
   * refused `predicted_wait` by an origin that answers in 20 ms; failure-day trial). Before a
   * round trip is measured there is no forecast, and a standing queue is capped as always
   * (adaptive LIFO).
   */
  private showsSaturation(now: number): boolean {
    if (this.rttEwmaMs === 0) return true;
    if (this.algorithm.showsQueueing?.(now) ?? true) return true;
    const oldest = this.oldestPermit();
    const since = oldest === undefined || oldest.acquiredAt < this.lastReleaseAt ? this.lastReleaseAt : oldest.acquiredAt;
    return now - since > this.stallAfterMs;
  }

  /**
   * The queue outgrew the deadlines of requests a client waits for, of this class or a more
   * important one, within the evidence's memory (see Outgrowth): an arrival was forecast to wait
   * past its deadline, a waiter was refused at it, or the queue was full. Behind a learned limit,
   * only then does a standing queue hold the requests clients wait for to the CoDel bounds
   * (acquire). Behind a fixed or AIMD limit, always (they state the capacity).
   */
  private outgrewDeadlines(priority: number, now: number): boolean {
    if (this.algorithm.showsSustainedQueueing === undefined) return true;
    return this.outgrowth.holds(priority, now);
  }

  /**
   * Some class's requests a client waits for are held to the CoDel bounds under a standing queue
   * now (outgrewDeadlines for the least important class, which waits behind all the others):
   * crowdgate_queue_held_to_bounds.
   */
  get holdsToBounds(): boolean {
    return this.outgrewDeadlines(this.queue.classes - 1, this.clock.now());
  }

  /** How long nothing answered reads as a stall: max(codelIntervalMs, 2 x the typical round trip). */
  private get stallAfterMs(): number {
    return Math.max(this.queueConfig.codelIntervalMs, 2 * this.rttEwmaMs);
  }

  /** The oldest permit in flight: the slow lane's oldest, or the counted ones' (a probe moves slow endpoints' permits aside before older ones are overdue). */
  private oldestPermit(): LimiterPermit | undefined {
    const lane = this.lane.first;
    const counted = this.counted.first;
    return lane === undefined || (counted !== undefined && counted.acquiredAt < lane.acquiredAt) ? counted : lane;
  }

  /**
   * The origin answers nothing now: permits are out, and none was released for
   * max(codelIntervalMs, 2 x the typical round trip) while the oldest has been out that long
   * (showsSaturation's stall, with requests in flight). How long it lasts cannot be told yet.
   */
  private isStalled(now: number): boolean {
    return this.stalledForMs(now) >= 0;
  }

  /** How long the origin has answered nothing with permits out, ms, once that reads as a stall (isStalled); else -1. */
  private stalledForMs(now: number): number {
    if (this.rttEwmaMs === 0) return -1;
    const oldest = this.oldestPermit();
    if (oldest === undefined) return -1;
    const silent = now - Math.max(this.lastReleaseAt, oldest.acquiredAt);
    return silent > this.stallAfterMs ? silent : -1;
  }

  private isColdStart(now: number): boolean {
    return this.algorithm.isColdStart?.(now) ?? false;
  }

  /**
   * `minWaitRoundTrips` of a request's round trips, at most ROUND_TRIP_WAIT_MAX_MS: the typical
   * one, or its own endpoint's when longer (a burst is mostly of one endpoint, the editor's REST
   * calls, and the site's mix of cheap ones makes the typical round trip short). 0 before any is known.
   */
  private roundTripWaitMs(latencyClass: string | undefined): number {
    const roundTripMs = Math.max(this.rttEwmaMs, this.latency.typical(latencyClass));
    return Math.min((this.queueConfig.minWaitRoundTrips ?? 0) * roundTripMs, ROUND_TRIP_WAIT_MAX_MS);
  }

  /** A client waits for the request (no usable stale copy answers it) and `minWaitRoundTrips` is on. */
  private clientWaits(opts: AcquireOptions): boolean {
    return !opts.fixedDeadline && (this.queueConfig.minWaitRoundTrips ?? 0) > 0;
  }

  /** The longest wait under a standing queue, by what the request serves (see the class doc). */
  private standingCapMs(opts: AcquireOptions): number {
    return opts.servesCrowd ? this.queueConfig.codelIntervalMs : this.queueConfig.codelTargetMs;
  }

  private grant(now: number, expectedMs = 0, path?: string, latencyClass?: string, page?: string): LimiterPermit {
    const permit = new LimiterPermit(this, now, ++this.inflightCount, expectedMs, this.inflightCount + this.overdueCount, this.peerInflight, path, latencyClass, page);
    this.counted.push(permit);
    this.armHeldUpScan();
    return permit;
  }

  /** Every slow-lane permit counted again, among the counted ones in the order they were acquired. */
  private recountLane(): void {
    for (let p = this.lane.first; p !== undefined; ) {
      const next = p.next;
      this.lane.remove(p);
      p.overdue = false;
      p.probeAside = false;
      this.counted.insertSorted(p);
      p = next;
    }
    this.inflightCount += this.overdueCount;
    this.overdueCount = 0;
  }

  /**
   * Moves counted permits held past the overdue threshold to the slow lane, oldest first, while
   * the lane has room (at most `limit` permits). Returns true when any moved.
   *
   * During a no-load probe, also a permit of a slow endpoint (its typical round trip more than
   * PROBE_ASIDE_FACTOR times the site's) held that long: the probe's two permits held by
   * 50-150 ms pages and 1-3 s reports of a site whose other pages take 2-5 ms let through 10
   * requests in a second, and its queue was refused (normal-day trial). Only such endpoints:
   * a crowd's pages that are slow because they queue in the origin stay counted, or the probe
   * would let new requests in beside them and measure the queue. Such a permit is not overdue
   * (it is released as a counted one would be), unless it is held past the overdue threshold.
   */
  private moveOverdue(now: number): boolean {
    const cap = this.laneCap;
    if (this.overdueCount >= cap) return false;
    const dueBefore = now - this.overdueAfterMs;
    let moved = false;
    for (let p = this.counted.first; p !== undefined && p.acquiredAt <= dueBefore && this.overdueCount < cap; p = this.counted.first) {
      this.moveAside(p);
      this.noteOverdue(p, now);
      moved = true;
    }
    if (this.isProbing && this.rttEwmaMs > 0) {
      const slowerThan = PROBE_ASIDE_FACTOR * this.rttEwmaMs;
      for (let p = this.counted.first; p !== undefined && this.overdueCount < cap; ) {
        const next = p.next;
        if (p.expectedMs > slowerThan && now - p.acquiredAt > slowerThan) {
          this.moveAside(p);
          p.probeAside = true;
          moved = true;
        }
        p = next;
      }
    }
    return moved;
  }

  /** One counted permit to the slow lane (kept in acquiredAt order: its first is its oldest). */
  private moveAside(p: LimiterPermit): void {
    this.counted.remove(p);
    this.lane.insertSorted(p);
    p.overdue = true;
    this.inflightCount--;
    this.overdueCount++;
  }

  /** The limit algorithm holds the limit below its planning limit for a no-load probe (Limit.planning). */
  private get isProbing(): boolean {
    const planned = this.algorithm.planning;
    return planned !== undefined && planned > this.algorithm.current;
  }

  /**
   * Size of the slow lane: LANE_FACTOR x `limit` permits, none while the origin is slow for everyone,
   * and never past `ceiling` in all. While the limit
   * algorithm holds the limit down for a no-load probe (Limit.planning), every overdue permit
   * steps aside (still within `ceiling`): the probe admits nothing new beyond its small limit,
   * and requests that were already slow must not hold its few permits, or it could not end
   * until they do.
   */
  private get laneCap(): number {
    if (!this.slowLane) return 0;
    const limit = this.limit;
    const room = this.ceiling - limit;
    if (this.slowForEveryone) return 0; // no outliers to set aside
    const planned = this.algorithm.planning;
    const cap = planned !== undefined && planned > this.algorithm.current ? Infinity : LANE_FACTOR * limit;
    return room < cap ? room : cap;
  }

  /**
   * An overdue request (moved aside, or released overdue without having been): when it started.
   * Not one to a path known to be slow on its own (see "Known-slow paths" above).
   */
  private noteOverdue(permit: LimiterPermit, now: number): void {
    if (this.isKnownSlow(permit.path, now)) return;
    const acquiredAt = permit.acquiredAt;
    const path = permit.path === undefined ? undefined : knownSlowKey(permit.path);
    // Quick: a path the origin answered promptly before (not only one of a quick latency class:
    // a new path of it may be the slow page, a crawler's uncached special pages beside a wiki's
    // articles; review), and not known to be slow on its own (noteOverdue's caller skips those).
    this.overdueQuick[this.overdueNoted % OVERDUE_RUN] = path !== undefined && this.promptPaths.has(path) ? 1 : 0;
    this.overduePaths[this.overdueNoted % OVERDUE_RUN] = path;
    const page = permit.page === undefined ? undefined : knownSlowKey(permit.page);
    this.overduePageQuick[this.overdueNoted % OVERDUE_RUN] = page !== undefined && this.promptPages.has(page) ? 1 : 0;
    this.overduePages[this.overdueNoted % OVERDUE_RUN] = page;
    this.overdueStarts[this.overdueNoted++ % OVERDUE_RUN] = acquiredAt;
    let one = path;
    for (let i = 0; i < OVERDUE_RUN && one !== undefined; i++) if (this.overduePaths[i] !== one) one = undefined;
    this.overdueOnePath = one;
    this.overdueRunQuick = this.quickPagesOverdue();
    if (acquiredAt > this.promptStartedAt && (this.firstOverdueAfterPrompt <= this.promptStartedAt || acquiredAt < this.firstOverdueAfterPrompt))
      this.firstOverdueAfterPrompt = acquiredAt;
  }

  /** A path's request was slow on its own (see "Known-slow paths" above): remembered, newest last. */
  private knowSlow(path: string, now: number): void {
    const key = knownSlowKey(path);
    this.knownSlow.delete(key);
    this.knownSlow.set(key, now);
    if (this.knownSlow.size > KNOWN_SLOW_PATHS) this.knownSlow.delete(this.knownSlow.keys().next().value!);
  }

  /** A path was answered promptly: remembered (not moved on each answer: a hot path costs one lookup). */
  private notePrompt(path: string): void {
    const key = knownSlowKey(path);
    if (this.promptPaths.has(key)) return;
    this.promptPaths.add(key);
    if (this.promptPaths.size > PROMPT_PATHS) this.promptPaths.delete(this.promptPaths.values().next().value!);
  }

  /**
   * A page (AcquireOptions.page) was answered promptly: remembered apart from the paths, so
   * that unique queries (searches, cache busters) push out other pages, never the paths.
   */
  private notePromptPage(page: string): void {
    const key = knownSlowKey(page);
    if (this.promptPages.has(key)) return;
    this.promptPages.add(key);
    if (this.promptPages.size > PROMPT_PATHS) this.promptPages.delete(this.promptPages.values().next().value!);
  }

  /** Whether a path's requests were slow on their own within KNOWN_SLOW_MS. */
  private isKnownSlow(path: string | undefined, now: number): boolean {
    if (path === undefined || this.knownSlow.size === 0) return false;
    const key = knownSlowKey(path);
    const at = this.knownSlow.get(key);
    if (at === undefined) return false;
    if (now - at <= KNOWN_SLOW_MS && now >= at) return true;
    this.knownSlow.delete(key);
    return false;
  }

  /**
   * The origin is slow for everyone, not just for a few endpoints: each of the last OVERDUE_RUN
   * overdue requests started after the latest-started request that was answered promptly.
   * While requests of every kind keep being answered promptly, overdue ones are the endpoint
   * mix, however many of the origin's releases they are: on a well-cached site the origin sees
   * few fast requests (hits take no permit), and a share of releases closed the lane there for
   * good (half the uncached pages refused at 50 clients, 2 % slow reports); at the end of a
   * burst the last releases are the slow ones, and the next burst was refused on their round
   * trips. Counted by when requests started, not when they ended: a report that ends now says
   * nothing about the requests started since.
   */
  private get slowForEveryone(): boolean {
    if (this.overdueNoted < OVERDUE_RUN) return false;
    // Only on evidence: a request answered promptly shortly before the slow ones began. With
    // none (a fresh gateway), or none for a while (a quiet site), a batch of slow requests is
    // the endpoint mix, not the origin slowing down: twenty 20 s reports arriving on a quiet
    // site closed the lane and held every permit, and every page was refused for 12-18 s.
    // Unless the batch is to paths the origin answered promptly before, at least three of them
    // (quickPagesOverdue): the origin got slow while nothing was asked of it (a cached site's
    // origin sees nothing for a while).
    if (this.firstOverdueAfterPrompt - this.promptStartedAt > SLOW_EVIDENCE_GAP_MS && !this.overdueRunQuick) return false;
    const starts = this.overdueStarts;
    for (let i = 0; i < OVERDUE_RUN; i++) if (!(starts[i]! > this.promptStartedAt)) return false;
    // All to one path the origin never answered promptly: that path is slow, maybe not the origin
    // (see "Known-slow paths" above).
    const one = this.overdueOnePath;
    return one === undefined || this.promptPaths.has(one);
  }

  /**
   * The last OVERDUE_RUN overdue requests were all to paths the origin answered promptly before,
   * QUICK_PATHS_MIN of them at least and none more than half of the run: pages it used to
   * answer at once, now all slow. Evidence that the origin slowed down without a prompt answer
   * just before: after a quiet spell, an origin 300 ms slower for everyone had every request
   * step aside, no round trip was fed to the limit, and it stayed where it was for whole runs
   * (7 permits turning over every 100 ms while 100 readers waited: 36-54 % fewer answers than
   * straight to the origin, p50 0.8-1.4 s against 0.3; failure-day trial, ikiwiki). Not new
   * paths (a crawler's uncached pages, a report), nor a run mostly to one path (a slow search
   * on a quick page, with a page or two held up behind it). Or, on a site whose pages share
   * one path (`/index.php?title=…`, WordPress's `/?p=42`, DokuWiki's `/doku.php?id=…`), the same
   * of their pages (AcquireOptions.page: the path and the query's first parameter), each one
   * answered promptly before: read by path alone, the rule never fired there, and the same
   * trial's run on such a site kept its limit at 6 (1 833 answers at p50 1.1 s against 3 328
   * at 0.3 s straight to the origin). A search with a new term each time is no such page.
   */
  private quickPagesOverdue(): boolean {
    if (this.overdueNoted < OVERDUE_RUN) return false;
    return spreadOver(this.overduePaths, this.overdueQuick) || spreadOver(this.overduePages, this.overduePageQuick);
  }

  /**
   * The origin is stalled for the gateway: slow for everyone (the slow lane closed, so overdue
   * permits count), and every counted permit held past the overdue threshold, the newest
   * included. No release can then say the origin answers again until those requests time out:
   * a 2 s hang of a single member held every permit, and everything was refused for the 15 s
   * of responseHeadersMs after the origin was fine again (failure-day trial). Then one request
   * at a time goes beyond the limit as a trial (a half-open breaker's): one per overdue
   * threshold, and while the last is still unanswered the wait doubles (at most
   * TRIAL_MAX_GAP_MS), so a hung origin gets a few, not one per threshold (review). Answered
   * promptly, a trial reopens the lane and traffic flows at once.
   */
  private trialDue(now: number): boolean {
    if (!this.slowLane) return false;
    const newest = this.counted.last;
    if (newest === undefined) return false;
    const overdueAfter = this.overdueAfterMs;
    if (now - newest.acquiredAt <= overdueAfter) return false;
    const gap = this.trialPermit === undefined ? overdueAfter : this.trialGapMs;
    if (now - this.lastTrialAt <= gap) return false;
    return this.slowForEveryone;
  }

  /**
   * The waiter a trial goes to: the first in the queue's order (still within its deadline) of a
   * latency class none of the unanswered permits belongs to, else none (the queue's head then).
   * Thirty requests of one kind held every permit (a message bus's long-polls, a dashboard's
   * reports never asked for before) and the trials went to more of the same, unanswered, their
   * gap doubling, while the pages queued behind were refused; a page the origin answers at once
   * reopens the lane (see trialDue). Against an origin stalled for everyone any request is as
   * good a trial.
   */
  private trialWaiter(now: number): Waiter<AcquireResult> | undefined {
    const held = new Set<string | undefined>();
    for (let p = this.counted.first; p !== undefined; p = p.next) held.add(p.latencyClass);
    return this.queue.find((w) => w.latencyClass !== undefined && !held.has(w.latencyClass) && now < w.expiresAt);
  }

  /**
   * What a request costs the origin without a queue, ms: the least round trip its path was
   * answered in (pathFloors), else its latency class's cost (LatencyClasses.cost); 0 when
   * neither is known. By path first: a site's quick pages and its 10 s page are mostly one
   * class (a route's top-level pages), and only their paths tell them apart.
   */
  private costOf(path: string | undefined, latencyClass: string | undefined): number {
    const floor = path === undefined ? undefined : this.pathFloors.get(knownSlowKey(path));
    return floor?.ms ?? this.latency.cost(latencyClass);
  }

  /**
   * A request is quick: its cost is known and at most 1/QUICK_SHARE_FACTOR of the overdue
   * threshold; a request with a path, only once that path was answered so (a new path of a
   * quick class may be the slow page: the clients of a 10 s page held every worker before its
   * first answer, and read by their class they were quick ones held up).
   */
  private isQuick(path: string | undefined, latencyClass: string | undefined): boolean {
    return this.quickCost(path, latencyClass) > 0;
  }

  /**
   * A request out (or just answered) counts as slow: its path is slow (isSlow), or it has been out
   * past the overdue threshold and is not quick (a new path's, before its first answer).
   */
  private slowRequest(path: string | undefined, latencyClass: string | undefined, acquiredAt: number, now: number, overdueAfter: number): boolean {
    return now - acquiredAt > overdueAfter ? !this.isQuick(path, latencyClass) : this.isSlow(path, latencyClass);
  }

  /** A quick request's cost (isQuick), else 0. */
  private quickCost(path: string | undefined, latencyClass: string | undefined): number {
    // Nor a path known to be slow on its own (a long-poll's first answer came at once, and its
    // later polls, held for seconds, read as quick requests held up: review; a search answered
    // in 10 ms or 1.5 s by its query likewise).
    if (path !== undefined && this.isKnownSlow(path, this.clock.now())) return 0;
    const cost = path === undefined ? this.latency.cost(latencyClass) : (this.pathFloors.get(knownSlowKey(path))?.ms ?? 0);
    return cost > 0 && cost * QUICK_SHARE_FACTOR <= this.overdueAfterMs ? cost : 0;
  }

  /**
   * How long a quick request started since the share last changed has been held up, ms: out
   * past QUICK_SHARE_FACTOR times its cost and OVERDUE_MIN_MS; else -1. Not the overdue
   * threshold: held-up answers fed to the typical round trip raise it to 2 s, and quick pages
   * held 1-2 s then went unseen (an integration test).
   */
  private heldUpMs(p: LimiterPermit, now: number): number {
    return p.acquiredAt < this.slowShareAt ? -1 : this.quickHeldFor(p, now);
  }

  /** How long a quick request out has been held up (past QUICK_SHARE_FACTOR times its cost and OVERDUE_MIN_MS), ms; else -1. */
  private quickHeldFor(p: LimiterPermit, now: number): number {
    const cost = this.quickCost(p.path, p.latencyClass);
    const age = now - p.acquiredAt;
    return cost > 0 && age > OVERDUE_MIN_MS && age > QUICK_SHARE_FACTOR * cost ? age : -1;
  }

  /**
   * Quick requests out held up for SLOW_SHARE_SPAN_MS or more, started before the share last
   * changed too: 0 when fewer than ATTRITION_EVIDENCE; 2 when that many were sent under the
   * share as it is, else 1. While they are, a slow request answered is not replaced (the share
   * follows those out down, slowAnswered). Closed-loop readers whose pages were all sent before
   * a cut start none after it, so the cut was not judged; a share of 3 of 6 out (3 at work, 3 in
   * the backlog) sent 3 more as the first 3 ended, and the readers waited a further 2 s round
   * trip twice (CI).
   */
  private quickHeldLong(now: number): 0 | 1 | 2 {
    const due = now - SLOW_SHARE_SPAN_MS;
    let n = 0;
    let underShare = 0;
    for (const list of [this.counted, this.lane])
      for (let p = list.first; p !== undefined && p.acquiredAt <= due; p = p.next) {
        if (this.quickHeldFor(p, now) >= 0) {
          n++;
          if (p.acquiredAt >= this.slowShareAt && ++underShare >= ATTRITION_EVIDENCE) return 2;
        }
      }
    // Two at least: one page's own 1.5 s answer (a cold cache, a lock) cut a share of 3 to 1 (review).
    return n >= ATTRITION_EVIDENCE ? 1 : 0;
  }

  /**
   * A request is slow: its cost is SLOW_SHARE_SLOW_MS or more. Not the overdue threshold: at
   * 100 ms, a site's 150 ms search pages read as slow beside its 2 ms pages, and were held and
   * refused for the share (Apache trial). A quick page first answered in a jam (9 s) reads as
   * slow until its next answer, which may wait for the share; waiting for a second answer
   * before calling a path slow let a 2 s report through for one more round trip, and quick
   * pages waited behind it (the integration test).
   */
  private isSlow(path: string | undefined, latencyClass: string | undefined): boolean {
    return this.costOf(path, latencyClass) >= SLOW_SHARE_SLOW_MS;
  }

  /**
   * A path's least round trip (pathFloors, at most PATH_FLOORS paths, the least recently
   * answered forgotten first), from its 2xx and 304 answers (Permit.release's pathCost). It
   * ages: not confirmed by an answer within twice it for PATH_FLOOR_AGE_MS, the next answer
   * replaces it (a path once quick that now takes 10 s reads as slow again). Not while a share
   * is set: a quick page held up behind slow ones for that long would read as slow, and wait
   * for their share. Nor a path known to be slow on its own before this answer (`knownSlow`): a
   * long-poll's 5 ms floor became 2 s, and its polls waited for the share (review).
   */
  private notePathFloor(path: string | undefined, rttMs: number, now: number, knownSlow: boolean): void {
    if (path === undefined) return;
    const key = knownSlowKey(path);
    // Never 0, which reads as unknown: a page answered within the clock's millisecond was no
    // longer quick, and the share was never set again (Apache trial).
    const ms = rttMs > PATH_FLOOR_MIN_MS ? rttMs : PATH_FLOOR_MIN_MS;
    let floor = this.pathFloors.get(key);
    if (floor === undefined) floor = { ms, at: now };
    else {
      this.pathFloors.delete(key);
      if (ms < floor.ms || (now - floor.at > PATH_FLOOR_AGE_MS && this.slowShare === Infinity && !knownSlow)) {
        floor.ms = ms;
        floor.at = now;
      } else if (ms <= 2 * floor.ms) floor.at = now;
    }
    this.pathFloors.set(key, floor);
    if (this.pathFloors.size > PATH_FLOORS) this.pathFloors.delete(this.pathFloors.keys().next().value!);
  }

  /** Slow requests out: slow ones, or any held past the overdue threshold that is not quick. */
  private slowOut(now: number): number {
    const overdueAfter = this.overdueAfterMs;
    let n = 0;
    for (const list of [this.counted, this.lane])
      for (let p = list.first; p !== undefined; p = p.next) {
        if (this.slowRequest(p.path, p.latencyClass, p.acquiredAt, now, overdueAfter)) n++;
      }
    return n;
  }

  /** The paths of the slow requests out, most held first, at most SLOW_PATHS_NAMED (for the log line). */
  private slowPaths(now: number): string[] {
    const overdueAfter = this.overdueAfterMs;
    const paths = new Set<string>();
    for (const list of [this.lane, this.counted])
      for (let p = list.first; p !== undefined && paths.size < SLOW_PATHS_NAMED; p = p.next) {
        if (p.path === undefined) continue;
        if (this.slowRequest(p.path, p.latencyClass, p.acquiredAt, now, overdueAfter)) paths.add(knownSlowKey(p.path));
      }
    return [...paths];
  }

  /**
   * While permits are out (with a slow lane), every max(HELD_UP_SCAN_MS, overdue threshold):
   * scanHeldUp. A timer, not arrivals: clients whose requests are all held up ask nothing more.
   * Unreferenced: it never keeps a process alive by itself.
   */
  private armHeldUpScan(): void {
    if (!this.sharing || this.heldUpTimer !== undefined || this.inflightCount + this.overdueCount === 0) return;
    const handle = this.scheduler.setTimeout(() => {
      this.heldUpTimer = undefined;
      const now = this.clock.now();
      this.scanHeldUp(now);
      this.liftSlowShare(now);
      this.armHeldUpScan();
    }, Math.max(HELD_UP_SCAN_MS, this.overdueAfterMs));
    (handle as { unref?: () => void } | null)?.unref?.();
    this.heldUpTimer = handle;
  }

  /** The quick requests out held up (heldUpMs) are noted (noteHeldUp), and the share is judged by the longest held. */
  private scanHeldUp(now: number): void {
    if (!this.sharing) return;
    const due = now - OVERDUE_MIN_MS;
    let longest = -1;
    for (const list of [this.counted, this.lane])
      for (let p = list.first; p !== undefined && p.acquiredAt <= due; p = p.next) {
        const held = this.heldUpMs(p, now);
        if (held < 0) continue;
        if (held > longest) longest = held;
        if (!p.heldUp) {
          p.heldUp = true;
          this.noteHeldUp(p, now);
        }
      }
    if (longest >= 0) this.judgeSlowShare(now, longest);
  }

  /**
   * A quick request held past the overdue threshold (still out, or answered so), started since
   * the share last changed: one more in the run of them (see "Slow endpoints' share" above).
   */
  private noteHeldUp(permit: LimiterPermit, now: number): void {
    const start = permit.acquiredAt;
    if (now - this.heldUpAt > 2 * SLOW_SHARE_SPAN_MS) this.heldUpCount = 0;
    if (this.heldUpCount === 0) {
      this.heldUpFirstStart = start;
      this.promptQuick = 0;
    } else if (start < this.heldUpFirstStart) this.heldUpFirstStart = start;
    this.heldUpCount++;
    this.heldUpAt = now;
  }

  /**
   * Cuts the share to SLOW_SHARE_CUT of the slow requests out, or of the share when fewer (at
   * least 1), when the run of quick requests held up is long enough (SLOW_SHARE_EVIDENCE, no
   * fewer than the prompt ones), one of them has been held `heldMs` >= SLOW_SHARE_SPAN_MS, and at
   * least two slow requests are out within the share. Quick requests started since the last cut
   * held up for a second say it was not enough (or that the slow requests sent before it still
   * fill the origin's backlog: the cut is then deeper than needed, and grows back).
   */
  private judgeSlowShare(now: number, heldMs: number): void {
    if (heldMs < SLOW_SHARE_SPAN_MS) return;
    this.heldUpLongAt = now;
    const evidence = this.slowShare === Infinity ? SLOW_SHARE_EVIDENCE : 1;
    const out = this.slowOut(now);
    const within = out < this.slowShare ? out : this.slowShare;
    if (this.heldUpCount < evidence || this.promptQuick > this.heldUpCount || within < 2) {
      // Held a second, no cut: growth is judged from now on (heldUpLongAt past the share's last
      // change kept a share of 1 from ever growing: review).
      this.growthFrom = now;
      this.promptSinceShare = 0;
      return;
    }
    // The level quick requests were held under: those out, when no more were out than the share
    // allows (those beyond it, sent before, may be what held them: a ceiling of 2 with 5 out kept
    // a share of 1 for minutes: review). A stall's is too low; it is raised (noteShareCeiling).
    if (out <= this.slowShare) this.noteShareCeiling(out, now);
    this.setSlowShare(Math.max(1, Math.floor(within * SLOW_SHARE_CUT)), now);
    this.heldUpCount = 0;
    this.onSlowShare?.(this.slowShare, out, this.slowPaths(now));
  }

  /** A new share: quick requests are judged against it from now on (the held-up and the prompt ones). */
  private setSlowShare(share: number, now: number, followingDown = false): void {
    this.followingDown = followingDown;
    this.slowShare = share;
    this.slowShareAt = this.growthFrom = now;
    this.promptSinceShare = 0;
  }

  /** A quick request answered promptly: counted against the run of held-up ones, and as one answered under the share. */
  private notePromptQuick(permit: LimiterPermit): void {
    const counts = this.heldUpCount > 0 && permit.acquiredAt >= this.heldUpFirstStart;
    const underShare = this.slowShare !== Infinity && permit.acquiredAt >= this.growthFrom;
    if (!(counts || underShare) || !this.isQuick(permit.path, permit.latencyClass)) return;
    if (counts) this.promptQuick++;
    if (underShare) this.promptSinceShare++;
  }

  /**
   * A slow request was answered: the share grows by a quarter (at least one) when, since it was
   * last changed, a quick request started then was answered promptly and none was held up for
   * SLOW_SHARE_SPAN_MS (any 100 ms tail kept a share at 1 for good: review), fewer slow ones are
   * out than it allows, and slow ones wait for it (a share cut to 1 or 2 while the origin hung grows back in a few
   * answers, not one answer at a time). Not on no news: readers whose requests all wait in the
   * origin's backlog start none, and the share grew past the workers before any was held up (an
   * integration test). Lifted after SLOW_SHARE_FORGET_MS without either (liftSlowShare).
   * While two quick requests are held a second (quickHeldLong), a slow one answered is not
   * replaced: the share follows those out down. Nor does it grow past one below the ceiling
   * (noteShareCeiling): grown back to a level that held every worker, it held every quick page
   * sent meanwhile for a slow round trip (2 s on a 3-worker origin, every few seconds: CI).
   */
  private slowAnswered(now: number): void {
    if (this.slowShare === Infinity) return;
    if (this.liftSlowShare(now)) return;
    const heldLong = this.quickHeldLong(now);
    if (heldLong > 0) {
      const out = this.slowOut(now);
      if (out < this.slowShare && this.slowShare > 1) {
        const first = !this.followingDown;
        // The share they were held under is a ceiling when they were sent under it (sent before
        // a cut, they were held under the level before it). Without it, a 3-worker origin's
        // share grew back to every worker once more (CI).
        if (first && heldLong === 2) this.noteShareCeiling(this.slowShare, now);
        this.setSlowShare(Math.max(1, out), now, true);
        if (first) this.onSlowShare?.(this.slowShare, out, this.slowPaths(now));
      }
      return;
    }
    if (this.shareCeiling !== Infinity && now - this.shareCeilingAt >= this.ceilingRelaxMs) {
      this.ceilingProbedFrom = this.shareCeiling;
      this.shareCeiling += Math.max(1, Math.floor(this.shareCeiling / 4));
      this.shareCeilingAt = now;
    }
    const cap = this.shareCeiling - 1;
    if (this.held.length > 0 && this.promptSinceShare > 0 && this.heldUpLongAt <= this.growthFrom && this.slowOut(now) < this.slowShare && this.slowShare < cap)
      this.setSlowShare(Math.min(cap, this.slowShare + Math.max(1, Math.floor(this.slowShare / 4))), now);
  }

  /**
   * Quick requests were held a second with `level` slow requests out: growth stops one below it
   * (shareCeiling). Only a lower level moves it (every sighting kept a misfire's ceiling for
   * good: review); after ceilingRelaxMs it is raised by a quarter (at least one), and when the
   * level it was raised past holds them up again the wait doubles, up to an hour (the share grew
   * back to every worker of a 3-worker origin every 5 minutes: review). A stall's level is too
   * low; it is raised like any.
   */
  private noteShareCeiling(level: number, now: number): void {
    if (level >= this.shareCeiling) return;
    // The level it was raised past held them up again: wait twice as long (at most
    // SLOW_SHARE_CEILING_MAX_MS) before the next raise. A lower level (a stall's) does not.
    if (level >= this.ceilingProbedFrom) this.ceilingRelaxMs = Math.min(2 * this.ceilingRelaxMs, SLOW_SHARE_CEILING_MAX_MS);
    this.ceilingProbedFrom = Infinity;
    this.shareCeiling = level;
    this.shareCeilingAt = now;
  }

  private forgetCeiling(): void {
    this.shareCeiling = Infinity;
    this.shareCeilingAt = -Infinity;
    this.ceilingRelaxMs = SLOW_SHARE_CEILING_MS;
    this.ceilingProbedFrom = Infinity;
  }

  /**
   * Lifts the share when for SLOW_SHARE_FORGET_MS no quick request was held up for
   * SLOW_SHARE_SPAN_MS and no slow one had to wait for it (while slow requests wait, it is what keeps quick ones from being held
   * up). True when it did.
   */
  private liftSlowShare(now: number): boolean {
    if (this.slowShare === Infinity || this.held.length > 0 || now - Math.max(this.heldUpLongAt, this.slowShareAt, this.slowHeldAt) < SLOW_SHARE_FORGET_MS) return false;
    this.setSlowShare(Infinity, now);
    this.forgetCeiling();
    this.onSlowShare?.(undefined, this.slowOut(now));
    this.changed();
    return true;
  }

  /** A slow endpoint's request waits for the share, up to its deadline (see "Slow endpoints' share" above). */
  private holdSlow(opts: AcquireOptions, now: number): Promise<AcquireResult> | AcquireResult {
    let deadlineAt = opts.deadlineAt ?? now + this.queueConfig.deadlineMs;
    // A client waits minWaitRoundTrips of its own path's round trips (at most
    // ROUND_TRIP_WAIT_MAX_MS): its class's are the quick pages' (one class), and a 10 s page's
    // clients were refused after half a second while a share slot came free every few seconds.
    if (this.clientWaits(opts)) {
      const ownMs = Math.min((this.queueConfig.minWaitRoundTrips ?? 0) * this.costOf(opts.path, opts.latencyClass), ROUND_TRIP_WAIT_MAX_MS);
      deadlineAt = Math.max(deadlineAt, now + this.roundTripWaitMs(opts.latencyClass), now + ownMs);
    }
    if (deadlineAt <= now) return REFUSED_DEADLINE;
    return new Promise<AcquireResult>((resolve) => {
      const signal = opts.signal;
      const h: HeldSlow = { opts, enqueuedAt: now, deadlineAt, resolve, timer: undefined, onAbort: undefined };
      h.timer = this.scheduler.setTimeout(() => this.dropHeld(h, 'slow_share'), deadlineAt - now);
      if (signal) {
        h.onAbort = () => this.dropHeld(h, 'aborted');
        signal.addEventListener('abort', h.onAbort, { once: true });
      }
      // By priority, then oldest first: an editor's view of a slow page goes ahead of the
      // crowd's requests for it (the queue's order), not behind all of them to its deadline.
      let i = this.held.length;
      while (i > 0 && this.held[i - 1]!.opts.priority > opts.priority) i--;
      this.held.splice(i, 0, h);
      this.slowHeldAt = now;
      this.changed();
    });
  }

  /** A held request leaves: refused at its deadline, or aborted. */
  private dropHeld(h: HeldSlow, reason: RefusalReason): void {
    const i = this.held.indexOf(h);
    if (i < 0) return;
    this.held.splice(i, 1);
    this.detachHeld(h);
    h.resolve({ ok: false, reason, waitedMs: this.clock.now() - h.enqueuedAt });
    this.changed();
  }

  private detachHeld(h: HeldSlow): void {
    if (h.timer !== undefined) this.scheduler.clearTimeout(h.timer);
    h.timer = undefined;
    if (h.onAbort) h.opts.signal!.removeEventListener('abort', h.onAbort);
    h.onAbort = undefined;
  }

  /** Held requests get permits, by priority then oldest first, while nothing else waits, a permit is free and the share has room. */
  private admitHeld(now: number): void {
    while (this.held.length > 0 && this.queue.length === 0 && this.hasRoom && (this.slowShare === Infinity || this.slowOut(now) < this.slowShare)) {
      const h = this.held.shift()!;
      this.detachHeld(h);
      const { path, latencyClass, page } = h.opts;
      h.resolve({ ok: true, permit: this.grant(now, this.latency.typical(latencyClass), path, latencyClass, page), waitedMs: now - h.enqueuedAt });
    }
  }

  /** While requests wait, wake when the oldest counted permit becomes overdue. */
  private armOverdueTimer(now: number): void {
    const oldest = this.counted.first;
    if (this.overdueTimer !== undefined || this.queue.length === 0 || oldest === undefined) return;
    if (this.overdueCount >= this.laneCap) return; // no room in the lane; a release will pump
    const dueIn = Math.max(1, oldest.acquiredAt + this.overdueAfterMs - now);
    this.overdueTimer = this.scheduler.setTimeout(() => {
      this.overdueTimer = undefined;
      const at = this.clock.now();
      if (this.moveOverdue(at)) {
        this.pump(at);
        this.changed();
      }
      this.armOverdueTimer(at);
    }, dueIn);
  }

  /** Called once per permit, from LimiterPermit.release. */
  private onRelease(permit: LimiterPermit, kind: ReleaseKind, latencyClass: string | undefined, pathCost: boolean): void {
    const now = this.clock.now();
    const succeeded = kind === 'success';
    // Before this answer marks it (notePathFloor).
    const knownSlowBefore = succeeded && pathCost && this.sharing && this.isKnownSlow(permit.path, now);
    if (permit === this.trialPermit) this.trialPermit = undefined;
    this.lastReleaseAt = now;
    if (permit.overdue) {
      this.overdueCount--;
      this.lane.remove(permit);
    } else {
      this.inflightCount--;
      this.counted.remove(permit);
    }
    this.rollDrainBucket(now);
    this.drainBucketCount++;
    // A request held past the overdue threshold (moved aside or not) is an outlier of the
    // endpoint mix, and its round trip says nothing about saturation (see "Overdue permits"):
    // unless most requests are that slow now, which is the origin's service time changing.
    if (this.slowLane) {
      const overdue = (permit.overdue && !permit.probeAside) || now - permit.acquiredAt > this.overdueAfterMs;
      if (overdue) {
        // A moved one was noted when moved, unless a probe moved it before it was overdue.
        if (!permit.overdue || permit.probeAside) this.noteOverdue(permit, now);
        // Answered, after a request that started later was answered promptly: the path is slow
        // on its own (see "Known-slow paths" above).
        if (succeeded && permit.path !== undefined && this.promptStartedAt > permit.acquiredAt) this.knowSlow(permit.path, now);
      } else if (kind === 'success') {
        if (permit.acquiredAt > this.promptStartedAt) this.promptStartedAt = permit.acquiredAt;
        if (permit.path !== undefined) this.notePrompt(permit.path);
        if (permit.page !== undefined) this.notePromptPage(permit.page);
      }
      // A quick request answered (or not) after being held up, or answered promptly (see "Slow
      // endpoints' share" above).
      const heldMs = this.sharing ? this.heldUpMs(permit, now) : -1;
      if (heldMs >= 0) {
        if (!permit.heldUp) this.noteHeldUp(permit, now);
        this.judgeSlowShare(now, heldMs);
      } else if (succeeded && this.sharing) this.notePromptQuick(permit);
      // During a no-load probe a counted request is the probe's measurement, however slow.
      const probing = this.isProbing;
      // Before any round trip is known there is no mix to be an outlier of: an origin whose
      // every answer takes longer than the first threshold (3/4 of the CoDel interval) had all
      // of them set aside and ignored, learned nothing, and kept its initial limit and that
      // threshold for good (a 300 ms origin: every request waited for a permit to step aside).
      if (overdue && !this.slowForEveryone && this.rttEwmaMs > 0 && (permit.overdue || !probing)) kind = 'ignore';
    }
    // The first round trip of its class (or a typical one grown by a quarter, below): the
    // waiters queued before it was known wait the round trips they would have been given had
    // it been (waitRoundTrips).
    const firstKnown = succeeded && latencyClass !== undefined && this.latency.typical(latencyClass) === 0;
    // Its endpoint's typical round trip learns from it, overdue or not: that is the endpoint's
    // cost (a WordPress site's REST calls at 0.7 s against 60 ms pages were all overdue, so their
    // class never learned one and a burst of them got the site's 0.5 s deadline).
    if (succeeded) {
      this.latency.observe(latencyClass, now - permit.acquiredAt);
      if (this.sharing && pathCost) this.notePathFloor(permit.path, now - permit.acquiredAt, now, knownSlowBefore);
    }
    if (kind === 'success') {
      // EWMA (α = 0.1) of successful round trips, for the expected wait at arrival.
      const rtt = now - permit.acquiredAt;
      if (this.rttEwmaMs === 0) {
        this.rttEwmaMs = rtt;
        this.queue.priceUnpriced(rtt); // waiters queued before any round trip was known
      } else this.rttEwmaMs += 0.1 * (rtt - this.rttEwmaMs);
      this.queue.lifoWhenStanding = false; // waits are predictable now: admission at arrival + FIFO
    }
    if (this.queue.length > 0 && (firstKnown || this.rttEwmaMs > WAIT_REPRICE_GROWTH * this.waitPricedAtMs)) this.waitRoundTrips(now);
    if (kind !== 'ignore') {
      const s = this.sample;
      s.rttMs = this.latency.normalise(now - permit.acquiredAt, latencyClass, kind === 'success' && permit.inflightAtAcquire + permit.peerInflightAtAcquire <= this.limit / 2);
      s.inflight = permit.inflightAtAcquire;
      s.originInflight = permit.originInflightAtAcquire;
      s.peerInflight = permit.peerInflightAtAcquire;
      s.waiting = this.queue.length;
      s.dropped = kind === 'dropped';
      s.hostDelayMs = this.hostDelayMs?.() ?? 0;
      s.stratum = this.latency.lastStratum;
      s.stratumShare = this.latency.lastShare;
      s.scaleMs = this.latency.lastScale;
      s.classBaseMs = this.latency.lastBase;
      s.classSettledMs = s.stratum === undefined || latencyClass === undefined ? undefined : this.classSettledMs(latencyClass, now);
      const probing = this.isProbing;
      this.algorithm.onSample(s, now);
      if (probing) this.probeSeenAt = now; // (it may have ended the probe)
    }
    if (this.slowShare !== Infinity && this.slowRequest(permit.path, permit.latencyClass, permit.acquiredAt, now, this.overdueAfterMs))
      this.slowAnswered(now);
    if (this.queue.length > 0 && this.inflightCount >= this.limit) this.moveOverdue(now);
    this.pump(now);
    if (this.queue.length === 0 && this.overdueTimer !== undefined) {
      this.scheduler.clearTimeout(this.overdueTimer);
      this.overdueTimer = undefined;
    }
    // Requests still wait: wake when the permits now held turn overdue. The timer stops while
    // the lane is closed (armOverdueTimer), and a prompt answer may just have reopened it: the
    // pages behind a dashboard's reports waited for their deadline with the lane open again.
    else if (this.queue.length > 0) this.armOverdueTimer(now);
    this.changed();
  }

  /**
   * LimitSample.classSettledMs: how long the oldest counted permit of the class still out has
   * been held, ms, or 0 when none is. The counted permits are kept oldest first, so the first of
   * the class is its oldest; past CLASS_SCAN_PERMITS of others, the age of the last one looked
   * at (every permit of the class still out is younger: a bound that errs on the safe side).
   */
  private classSettledMs(latencyClass: string, now: number): number {
    let looked = 0;
    for (let p = this.counted.first; p !== undefined; p = p.next) {
      if (p.latencyClass === latencyClass || ++looked >= CLASS_SCAN_PERMITS) return now - p.acquiredAt;
    }
    return 0;
  }

  /**
   * A client waits at least `minWaitRoundTrips` of its endpoint's round trips (acquire()); one
   * queued before any was known had `deadlineMs` alone. Once the site's first round trip, or its
   * class's, is known, such a waiter waits what it would have been given: 100 clients of a fresh
   * gateway, queued at once behind its 8 permits, were refused at 500 ms while slow start was
   * still raising the limit for pages of 100-250 ms, and the same request a second later would
   * have waited 8 of them (the normal-day bench with `--page-ms 100-250 --page-share 0.7`: 5-13
   * `deadline` refusals in a closed loop's first second). And again each time the typical round
   * trip passes WAIT_REPRICE_GROWTH times the highest it has been applied at: from the first
   * answer (an API call's 12 ms) it climbs toward the mix's 130 ms over the first second, and
   * API calls queued then still had 500 ms. Under a standing queue the CoDel cap still ends the
   * wait.
   */
  private waitRoundTrips(now: number): void {
    if ((this.queueConfig.minWaitRoundTrips ?? 0) <= 0) return;
    if (this.rttEwmaMs > this.waitPricedAtMs) this.waitPricedAtMs = this.rttEwmaMs;
    this.queue.forEach((w) => {
      if (!w.waitsRoundTrips) return;
      const at = w.enqueuedAt + this.roundTripWaitMs(w.latencyClass);
      if (!(at > w.deadlineAt)) return;
      w.deadlineAt = at;
      if (w.capped || !(at > w.expiresAt)) return;
      w.expiresAt = at;
      if (w.timer !== undefined) this.scheduler.clearTimeout(w.timer);
      w.timer = this.scheduler.setTimeout(() => this.expire(w), at - now);
    });
  }

  /** Hands free permits to waiters, in the queue's order. */
  private pump(now: number): void {
    while (this.queue.length > 0 && this.hasRoom) {
      if (this.judgeStanding(now)) {
        this.capWaiters(now);
        continue;
      }
      const w = this.queue.shift(now)!;
      if (this.waitIsOver(w, now)) {
        // The timer is late (or about to fire): the wait is over, not served.
        this.settle(w, this.overReason(w), now);
        continue;
      }
      this.detach(w);
      w.resolve({ ok: true, permit: this.grant(now, w.costMs, w.path, w.latencyClass, w.page), waitedMs: now - w.enqueuedAt });
    }
    if (this.held.length > 0) this.admitHeld(now);
  }

  /**
   * CoDel's verdict on the queue (queue.ts), except while the limit algorithm holds permits
   * below its planning limit for a no-load probe (Limit.planning): that queue is the probe's
   * doing, not the crowd's, and drains when the probe ends a few round trips later. Judging it
   * would cap waits at the CoDel interval and refuse arrivals the restored limit will serve.
   * A queue already standing stays standing; the CoDel interval restarts when the probe ends.
   * Nor while the limit is still learning (Limit.isColdStart): that queue is the limit's lag.
   */
  private judgeStanding(now: number): boolean {
    const planned = this.algorithm.planning;
    if ((planned !== undefined && planned > this.algorithm.current) || this.isColdStart(now)) {
      this.queue.excuseWaitsUntil(now);
      return false;
    }
    return this.queue.checkStanding(now);
  }

  /** A permit is free now: an arrival would not wait (no queue, room under the limit). */
  get hasFreePermit(): boolean {
    this.makeRoom(this.clock.now());
    return this.queue.length === 0 && this.hasRoom;
  }

  /** A standing queue has begun: cap every wait at enqueuedAt + codelIntervalMs. */
  private capWaiters(now: number): void {
    // Once waits are predicted at arrival, a waiter was admitted because it was expected to be
    // served in time: it keeps its deadline (cutting it now would only make it fail late); the
    // standing queue's tighter bound applies to new arrivals. Before that, CoDel cuts old waits.
    if (this.rttEwmaMs > 0) return;
    const intervalMs = this.queueConfig.codelIntervalMs;
    this.queue.forEach((w) => {
      const capAt = w.enqueuedAt + intervalMs;
      if (capAt >= w.expiresAt) return;
      w.expiresAt = capAt;
      w.capped = true;
      if (capAt <= now) {
        this.finish(w, 'codel', now);
        return;
      }
      this.scheduler.clearTimeout(w.timer);
      w.timer = this.scheduler.setTimeout(() => this.expire(w), capAt - now);
    });
  }

  /**
   * A waiter's wait is over when its time has come, except one kept through a stall (expire):
   * its re-check is only a time to look again, and the answer that ends the stall may be read
   * before that timer runs; it is served up to ROUND_TRIP_WAIT_MAX_MS from its arrival (review:
   * refused `deadline` just as the origin answered again, its permit handed to the next).
   */
  private waitIsOver(w: Waiter<AcquireResult>, now: number): boolean {
    return now >= w.expiresAt && !((w.keptThroughStall === true || w.keptThroughProbe === true) && now < w.enqueuedAt + ROUND_TRIP_WAIT_MAX_MS);
  }

  /** Why a wait that is over was refused: CoDel's cap, a stall waited through, or its deadline. */
  private overReason(w: Waiter<AcquireResult>): RefusalReason {
    // Refused while draining after a stall, the origin answered again: its deadline, not a stall.
    return w.capped ? 'codel' : w.keptThroughStall === true && w.drainingAfterStall !== true ? 'stalled' : 'deadline';
  }

  private expire(w: Waiter<AcquireResult>): void {
    if (!w.queued) return;
    w.timer = undefined;
    const now = this.clock.now();
    // Through a stall, a request a client waits for is not refused at its deadline: the origin
    // answers nothing, so no forecast can say it will not answer in time, and a Node app whose
    // event loop blocked for 2.5 s, or a PHP origin waiting on a lock, answers everything the
    // moment it is back. 30 logged-in POSTs in such a stall: direct, all 200 in 2.1 s; through
    // the gateway 14 refused at 0.5 s (new-user trial). Its wait goes on, a stall's length at
    // a time, until ROUND_TRIP_WAIT_MAX_MS from its arrival; an origin hung for good still
    // refuses it then. Not one a stale copy answers (waitsRoundTrips), nor one CoDel capped.
    if (!w.capped && w.waitsRoundTrips) {
      const until = w.enqueuedAt + ROUND_TRIP_WAIT_MAX_MS;
      if (until > now && this.isStalled(now)) {
        w.keptThroughStall = true;
        w.drainingAfterStall = false; // a stall again: it drains again once this one is over
        w.expiresAt = Math.min(until, now + this.stallAfterMs);
        w.timer = this.scheduler.setTimeout(() => this.expire(w), w.expiresAt - now);
        return;
      }
      // The stall it was kept through is over: the origin answers again, and the backlog the
      // stall built drains now, a few round trips on an origin with room. Refused at the first
      // look after it, the pages a 1.5 s lock held were refused `stalled` as it ended
      // (normal-day bench with a lock every 10 s: 3-11 in a minute). So one more wait of its
      // own length (at least a stall's look), within ROUND_TRIP_WAIT_MAX_MS of its arrival.
      if (until > now && w.keptThroughStall === true && w.drainingAfterStall !== true) {
        w.drainingAfterStall = true;
        w.expiresAt = Math.min(until, now + Math.max(this.stallAfterMs, w.deadlineAt - w.enqueuedAt));
        w.timer = this.scheduler.setTimeout(() => this.expire(w), w.expiresAt - now);
        return;
      }
      // Nor while a no-load probe holds the limit at a quarter (Limit.planning): the gateway
      // holds these waits itself, for a few round trips, and the restored limit serves them.
      // Refused at their deadline, 3-22 waiters at a time were refused `deadline` behind a
      // probe's 2 permits on an origin with room for all (differential fuzzer; 45 waited behind
      // a fresh gateway's first probe). Kept a look at a time while it lasts, then one more wait
      // of its own length to drain, within ROUND_TRIP_WAIT_MAX_MS of its arrival.
      if (until > now && this.isProbing) {
        this.probeSeenAt = now;
        w.keptThroughProbe = true;
        w.drainingAfterProbe = false;
        w.expiresAt = Math.min(until, now + PROBE_LOOK_MS);
        w.timer = this.scheduler.setTimeout(() => this.expire(w), w.expiresAt - now);
        return;
      }
      if (until > now && w.keptThroughProbe === true && w.drainingAfterProbe !== true) {
        w.drainingAfterProbe = true;
        w.expiresAt = Math.min(until, now + w.deadlineAt - w.enqueuedAt);
        w.timer = this.scheduler.setTimeout(() => this.expire(w), w.expiresAt - now);
        return;
      }
    }
    // One kept through a stall says so (`stalled`): an origin hung for good, not a queue.
    this.finish(w, this.overReason(w), now);
  }

  /** Removes a waiter and refuses it. */
  private finish(w: Waiter<AcquireResult>, reason: RefusalReason, now: number): void {
    if (!w.queued) return;
    this.queue.remove(w);
    this.settle(w, reason, now);
    this.changed();
  }

  private settle(w: Waiter<AcquireResult>, reason: RefusalReason, now: number): void {
    // A wait a client waits for that its deadline ended is the queue outgrowing it (see
    // Outgrowth); not one that a stale copy answers (its deadline is not stretched to the round
    // trips), nor one kept through a stall or a probe (their doing, not the queue's).
    if (reason === 'deadline' && w.waitsRoundTrips && w.keptThroughStall !== true && w.keptThroughProbe !== true) this.outgrowth.note(w.priority, now);
    this.detach(w);
    w.resolve({ ok: false, reason, waitedMs: now - w.enqueuedAt });
  }

  private detach(w: Waiter<AcquireResult>): void {
    if (w.timer !== undefined) {
      this.scheduler.clearTimeout(w.timer);
      w.timer = undefined;
    }
    if (w.onAbort) {
      w.signal!.removeEventListener('abort', w.onAbort);
      w.onAbort = undefined;
    }
  }

  /**
   * Closes the drain-rate bucket once it is >= DRAIN_BUCKET_MS old:
   *   rate = count * 1000 / elapsedMs                      (completions per second)
   *   ewma += (rate - ewma) * (1 - exp(-elapsedMs / tau))  (time-weighted, so a long idle gap
   *                                                         pulls the estimate toward 0)
   */
  private rollDrainBucket(now: number): void {
    const elapsed = now - this.drainBucketStartAt;
    if (elapsed < DRAIN_BUCKET_MS) return;
    const rate = (this.drainBucketCount * 1000) / elapsed;
    if (this.hasDrainRate) this.drainRate += (rate - this.drainRate) * (1 - Math.exp(-elapsed / this.drainRateTauMs));
    else if (this.drainBucketCount > 0) {
      this.drainRate = rate;
      this.hasDrainRate = true;
    }
    this.drainBucketStartAt = now;
    this.drainBucketCount = 0;
  }
}

function checkCeiling(ceiling: number | undefined): number {
  if (ceiling === undefined) return Infinity;
  if (!(Number.isInteger(ceiling) && ceiling >= 1)) throw new TypeError(`ceiling must be an integer >= 1, got ${ceiling}`);
  return ceiling;
}

function checkQueue(q: LimiterOptions['queue']): LimiterOptions['queue'] {
  if (!(Number.isInteger(q.maxLength) && q.maxLength >= 0))
    throw new TypeError(`queue.maxLength must be an integer >= 0, got ${q.maxLength}`);
  if (!(q.deadlineMs > 0)) throw new TypeError(`queue.deadlineMs must be > 0, got ${q.deadlineMs}`);
  if (!(q.codelTargetMs > 0)) throw new TypeError(`queue.codelTargetMs must be > 0, got ${q.codelTargetMs}`);
  if (!(q.codelIntervalMs > 0)) throw new TypeError(`queue.codelIntervalMs must be > 0, got ${q.codelIntervalMs}`);
  if (q.minWaitRoundTrips !== undefined && !(q.minWaitRoundTrips >= 0))
    throw new TypeError(`queue.minWaitRoundTrips must be >= 0, got ${q.minWaitRoundTrips}`);
  if (q.standingBoundAfterMs !== undefined && !(q.standingBoundAfterMs >= 0))
    throw new TypeError(`queue.standingBoundAfterMs must be >= 0, got ${q.standingBoundAfterMs}`);
  return q;
}

/**
 * The latency class of an origin request: what it is (`fill`, `forward`, `upgrade`), its route,
 * and the endpoint its path names (endpointOf). One route's pass-through covers a site's cheap
 * and dear endpoints alike: WordPress's admin scripts answer in milliseconds and its REST API
 * in half a second on a busy PHP origin, and one class read the REST calls as queueing.
 */
export function latencyClassOf(kind: string, route: string, path: string): string {
  return `${kind}:${route}:${endpointOf(path)}`;
}

/**
 * The endpoint of a path, for latency classes: its first segment when more follow (`/wp-json/…`,
 * `/api/…`), with the extension of the last one (`/wp-admin/….js` beside `/wp-admin/….php`); a
 * single segment only when it names a file (`/index.php`, `/api.php`). Any other single-segment
 * path (`/about`, a WordPress post's `/slug/`) is the site's root endpoint, so a site's posts do
 * not each take one of the MAX_LATENCY_CLASSES.
 */
export function endpointOf(path: string): string {
  const second = path.indexOf('/', 1);
  const last = path.slice(path.lastIndexOf('/') + 1);
  const ext = /\.[a-z0-9]{1,5}$/i.exec(last)?.[0].toLowerCase() ?? '';
  if (second > 1 && second < path.length - 1) return path.slice(1, Math.min(second, 41)) + ext;
  if (second === -1 && ext !== '') return path.slice(1, 41);
  return '';
}

/**
 * At most this many latency classes are told apart. A new class beyond them takes the place of
 * the one with the least share of recent samples: a site with unbounded first path segments, or
 * a client requesting `/junk1/x`, `/junk2/x`…, would otherwise fill them for good, and every
 * endpoint seen later would be read raw.
 */
export const MAX_LATENCY_CLASSES = 64;
/** A class's no-load round trip is used once it rests on this many samples. */
export const LATENCY_CLASS_SAMPLES = 3;
/**
 * A class's no-load round trip moves by this fraction of itself per no-load sample (by
 * 1 / samples while that is larger), up when the sample is slower and down when faster: it
 * settles at the class's median (a stochastic approximation), and one slow sample moves it no
 * more than one fast one.
 */
const CLASS_MEDIAN_STEP = 0.03;
/** Per sample, every class's share of recent samples decays by this fraction (a half-life of about 180 samples). */
const CLASS_WEIGHT_DECAY = 1 / 256;

/** One latency class: its id (LimitSample.stratum), no-load base, sample count, share of recent samples and typical round trip. */
interface LatencyClass {
  id: number;
  base: number;
  samples: number;
  share: number;
  typical: number;
}

/**
 * Latency classes: the round trips the limit algorithm reads, on one scale whatever the endpoint
 * mix. A site's page fills may take 40–80 ms while its API answers in 5–20 ms; read raw, a
 * window of fills after a few API calls looked like a sixfold queue, the limit sank to 2–8 and
 * fast requests were refused on a healthy origin (a new-user trial: 13–40 % of API calls). Each
 * class (a route's fills, its pass-through, its WebSocket handshakes) keeps its own no-load round
 * trip, learned from samples taken at no more than half the limit (the least of the first
 * LATENCY_CLASS_SAMPLES, then its median: CLASS_MEDIAN_STEP); a sample is then read as its
 * own class's no-load round trip plus what it took beyond it, on the scale of the mix's mean:
 * `rtt − base(class) + Σ share(k) × base(k)`. Queueing in the origin adds the same wait to every
 * class, so it still shows in full; the mix no longer does. With one class (or all alike) the
 * sample is read as it is. A class with fewer than LATENCY_CLASS_SAMPLES is read as it is.
 * Each sample also names its class (a small integer) and the class's share of recent samples
 * (LimitSample.stratum, stratumShare), so the algorithm can weigh a window's classes by their
 * share of the traffic rather than by the chance count a window of a few samples holds.
 */
class LatencyClasses {
  private readonly classes = new Map<string, LatencyClass>();
  private nextId = 0;
  /**
   * The class of the sample normalise() last read, as a small integer, and its share of the
   * recent samples (0-1): LimitSample.stratum and stratumShare. Undefined for a sample of no class.
   */
  lastStratum: number | undefined;
  lastShare: number | undefined;
  /** The scale that sample was read on (LimitSample.scaleMs), or undefined when it was read as it is. */
  lastScale: number | undefined;
  /** The no-load round trip of its class it was read against (LimitSample.classBaseMs), with lastScale. */
  lastBase: number | undefined;

  /** A class's typical round trip (an EWMA, α = 0.1, of its successful ones), ms; 0 when unknown. */
  typical(name: string | undefined): number {
    return name === undefined ? 0 : (this.classes.get(name)?.typical ?? 0);
  }

  /**
   * What a class's request costs the origin without a queue, ms: its no-load round trip when one
   * was measured and lower than the typical one (held-up answers raise the typical one), else
   * the typical one; 0 when unknown (see "Slow endpoints' share").
   */
  cost(name: string | undefined): number {
    if (name === undefined) return 0;
    const c = this.classes.get(name);
    if (c === undefined) return 0;
    return c.samples > 0 && c.base < c.typical ? c.base : c.typical;
  }

  /** A successful round trip of a class, overdue ones included (its cost, for typical()). */
  observe(name: string | undefined, rttMs: number): void {
    if (name === undefined) return;
    const own = this.classOf(name);
    own.typical = own.typical === 0 ? rttMs : own.typical + 0.1 * (rttMs - own.typical);
  }

  /** The named class, made (and the least shared one forgotten, at MAX_LATENCY_CLASSES) if new. */
  private classOf(name: string): LatencyClass {
    let own = this.classes.get(name);
    if (own === undefined) {
      if (this.classes.size >= MAX_LATENCY_CLASSES) this.evictLeastShared();
      own = { id: this.takeId(), base: 0, samples: 0, share: 0, typical: 0 };
      this.classes.set(name, own);
    }
    return own;
  }

  /**
   * A new class's id: counting up, and back to 0 after 2^30 (an id must stay a non-negative
   * Int32; a class evicted a billion classes ago is long gone, and ids only tell a window's
   * classes apart).
   */
  private takeId(): number {
    const id = this.nextId;
    this.nextId = id >= 2 ** 30 ? 0 : id + 1;
    return id;
  }

  /** Forgets the class with the least share of recent samples (MAX_LATENCY_CLASSES). */
  private evictLeastShared(): void {
    let least: string | undefined;
    let leastShare = Infinity;
    for (const [name, c] of this.classes) {
      if (c.share < leastShare) {
        leastShare = c.share;
        least = name;
      }
    }
    if (least !== undefined) this.classes.delete(least);
  }

  normalise(rttMs: number, name: string | undefined, noLoad: boolean): number {
    this.lastStratum = undefined;
    this.lastShare = undefined;
    this.lastScale = undefined;
    this.lastBase = undefined;
    if (name === undefined) return rttMs;
    const own = this.classOf(name);
    let weighted = 0;
    let shares = 0;
    let known = 0;
    let all = 1;
    for (const c of this.classes.values()) {
      c.share *= 1 - CLASS_WEIGHT_DECAY;
      all += c.share;
      if (c.samples < LATENCY_CLASS_SAMPLES) continue;
      known++;
      weighted += c.share * c.base;
      shares += c.share;
    }
    own.share += 1;
    this.lastStratum = own.id;
    this.lastShare = own.share / all;
    const onScale = own.samples >= LATENCY_CLASS_SAMPLES && known > 1 && shares > 0;
    if (onScale) {
      this.lastScale = weighted / shares;
      this.lastBase = own.base;
    }
    const read = onScale ? rttMs - own.base + weighted / shares : rttMs;
    if (noLoad) {
      // The least of the first samples, so one slow cold start (a new connection, a cold
      // origin: 2 s among 60 ms fills) cannot set the base and make every later sample read low
      // (review); then it tracks the class's median (CLASS_MEDIAN_STEP), not its fastest: an
      // endpoint whose own answers spread over 50-150 ms read 0-100 ms of queueing against a
      // base near 50 ms, and a window holding a few of them looked like a queue (a normal-day
      // trial); against its median it reads -50 to +50, and queueing still adds in full.
      if (own.samples < LATENCY_CLASS_SAMPLES) own.base = own.samples === 0 ? rttMs : Math.min(own.base, rttMs);
      else {
        // Larger steps while the class is new (1 / samples): when all of its first samples were
        // cold, 3 % a sample took 45 samples to come down from 4 x (review).
        const step = Math.max(CLASS_MEDIAN_STEP, 1 / own.samples);
        own.base += (rttMs > own.base ? step : rttMs < own.base ? -step : 0) * Math.max(own.base, 0.5);
      }
      own.samples++;
    }
    return read > 0.1 ? read : 0.1;
  }
}
