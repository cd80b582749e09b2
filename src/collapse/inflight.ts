/**
 * Request collapsing: key -> the one in-flight origin fetch, and the requests waiting on it.
 * The leader runs the fetch; every waiter is woken by the fetch's own promise settling (no
 * polling, no timer), or gives up at its own deadline. Also keeps hit-for-pass markers: after
 * an uncacheable response, requests for that key stop queueing behind a leader for a while.
 *
 * Owns only the bookkeeping. What a result means, and whether a waiter may use it, is the
 * request path's business (handle-request.ts).
 */
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';

export type JoinResult<T> =
  | {
      role: 'leader';
      settle(result: T): void;
      /**
       * The leader's own client has gone: `abandon` is called now if no waiter is left, else
       * when the last one leaves (a fill nobody wants any more may give its place up).
       */
      left(abandon: () => void): void;
    }
  | {
      role: 'waiter';
      result: Promise<T | 'timeout'>;
      /** This waiter's client has gone: it no longer counts (a deadline passed counts as leaving too). */
      leave(): void;
    }
  | { role: 'overflow' };

interface Group<T> {
  promise: Promise<T>;
  resolve(result: T): void;
  /** Waiters still waiting: those that left or gave up at their deadline are not counted. */
  waiters: number;
  /** The fetch has its answer's head and is reading the body (markAnswering). */
  answering: boolean;
  settled: boolean;
  /** Set once the leader's client has gone (JoinResult leader.left). */
  abandon?: () => void;
}

/** The longest a hit-for-pass mark grows to (markHitForPass): Varnish's builtin hit-for-pass time. */
export const MAX_HIT_FOR_PASS_MS = 120_000;

/** During a hit-for-pass mark, one request this often fills the key instead of passing (takeHitForPassProbe). */
export const HIT_FOR_PASS_PROBE_MS = 1_000;

export class Inflight<T> {
  private readonly groups = new Map<string, Group<T>>();
  /** Keys' hit-for-pass marks: until when, and how long the mark was (kept past it: markHitForPass). */
  private readonly passUntil: LRUCache<string, { until: number; durationMs: number }>;
  /** When a marked key was last filled (its mark's fill, or a probe: takeHitForPassProbe). */
  private readonly probedAt: LRUCache<string, number>;
  /** Paths (no query) whose last fill was not storable, until when (see markPathUncacheable). */
  private readonly pathPassUntil: LRUCache<string, { until: number; cookiesOnly: boolean }>;
  /** Keys a path's mark has one pass under way for (beginPathPass). */
  private readonly pathPasses = new Set<string>();

  /** cache.collapse.maxWaiters, live (setMaxWaiters). */
  private maxWaiters: number;

  constructor(
    private readonly opts: { maxWaiters: number; clock: Clock; maxPassMarkers?: number },
  ) {
    this.maxWaiters = opts.maxWaiters;
    this.passUntil = new LRUCache({ max: opts.maxPassMarkers ?? 10_000 });
    this.probedAt = new LRUCache({ max: opts.maxPassMarkers ?? 10_000 });
    this.pathPassUntil = new LRUCache({ max: opts.maxPassMarkers ?? 10_000 });
  }

  /**
   * A reload's cache.collapse.maxWaiters: a raise in a crowd whose overflow went to the origin
   * uncollapsed did nothing, the value read at start held (config audit). Groups already
   * waiting take it at their next join.
   */
  setMaxWaiters(maxWaiters: number): void {
    this.maxWaiters = maxWaiters;
  }

  /** Becomes the leader for `key`, or waits on the current leader (until `waitMs`). */
  join(key: string, waitMs: number): JoinResult<T> {
    const group = this.groups.get(key);
    if (group) {
      // Counted while they wait: 10 000 pipelined requests whose client had closed the
      // connection filled maxWaiters, and a crowd arriving after them was not collapsed (each
      // went to the origin alone), nor could the fill of a page they had asked for twice be
      // given up (attacker trial).
      if (group.waiters >= this.maxWaiters) return { role: 'overflow' };
      group.waiters++;
      let hasLeft = false;
      const leave = (): void => {
        if (hasLeft || group.settled) return;
        hasLeft = true;
        group.waiters--;
        if (group.waiters === 0) group.abandon?.();
      };
      return { role: 'waiter', result: withDeadline(group, waitMs, leave), leave };
    }
    let resolve!: (r: T) => void;
    const promise = new Promise<T>((r) => (resolve = r));
    const created: Group<T> = { promise, resolve, waiters: 0, answering: false, settled: false };
    this.groups.set(key, created);
    return {
      role: 'leader',
      settle: (result: T) => {
        if (created.settled) return;
        created.settled = true;
        if (this.groups.get(key) === created) this.groups.delete(key);
        created.resolve(result);
      },
      left: (abandon: () => void) => {
        if (created.settled || created.abandon !== undefined) return;
        created.abandon = abandon;
        if (created.waiters === 0) abandon();
      },
    };
  }

  /**
   * The fetch for `key` has its answer's head and is reading a body of known, storable length
   * (`on`), or is asking again (`!on`): while on, its waiters wait past their deadline, up to
   * ANSWERING_RENEWALS more deadlines, as its leader does. A body trickling in for 20 s made
   * every waiter give up at 18 s and fetch the page alone (failure-day trial, round 3). Bounded,
   * and only for a length the fill will store: a stream that never ends must not hold them.
   */
  setAnswering(key: string, on: boolean): void {
    const group = this.groups.get(key);
    if (group) group.answering = on;
  }

  /** True while a leader is fetching `key`. */
  isInflight(key: string): boolean {
    return this.groups.has(key);
  }

  get size(): number {
    return this.groups.size;
  }

  /**
   * Marks `key` hit-for-pass (its requests go to the origin as they come, uncollapsed) for
   * `durationMs`; for twice its last mark, up to MAX_HIT_FOR_PASS_MS (or `durationMs` when that
   * is longer), when a fill that began during its last mark or less than that mark's length
   * after it (`fillStartedAt`; the one a second of takeHitForPassProbe, or the first after it)
   * finds it uncacheable again. Each mark's end gathers the page's crowd on one fill whose answer
   * nobody can share, and they then all ask the origin after it: a Redmine page (`private`
   * every time) answered 226 of 500 within 5 s through the gateway, 395 direct (new-user
   * trial). A page uncacheable once is passed for `durationMs`; one uncacheable every time
   * ends up marked 120 s, as Varnish's hit-for-pass. clearHitForPass (a storable answer) starts
   * over. `grow` false (an answer that may be about the request that drew it): `durationMs`, as
   * the first mark. Returns the mark's length.
   */
  markHitForPass(key: string, durationMs: number, grow = true, fillStartedAt?: number): number {
    if (durationMs <= 0) return 0;
    const now = this.opts.clock.now();
    const last = this.passUntil.get(key);
    // Judged by when the fill that found it uncacheable again began: a page slower than the
    // mark (a 5 s report under a 5 s mark) ended each such fill past the window, its mark never
    // grew, and every 5 s the crowd gathered on a fill nobody could share, each then sent
    // again: twice the report's time (failure-day trial).
    const again = grow && last !== undefined && Math.min(now, fillStartedAt ?? now) < last.until + last.durationMs;
    const ms = again ? Math.max(durationMs, Math.min(last.durationMs * 2, MAX_HIT_FOR_PASS_MS)) : durationMs;
    this.passUntil.set(key, { until: now + ms, durationMs: ms });
    this.probedAt.set(key, now); // the fill that marked it was the last look
    return ms;
  }

  /**
   * During `key`'s hit-for-pass mark: whether this request should fill it (stored when it may
   * be) rather than pass, once HIT_FOR_PASS_PROBE_MS has gone since the mark or the last such
   * fill began, and none of it is under way.
   */
  takeHitForPassProbe(key: string): boolean {
    if (this.groups.has(key)) return false;
    const now = this.opts.clock.now();
    const last = this.probedAt.get(key);
    if (last !== undefined && now - last < HIT_FOR_PASS_PROBE_MS) return false;
    this.probedAt.set(key, now);
    return true;
  }

  isHitForPass(key: string): boolean {
    const mark = this.passUntil.get(key);
    return mark !== undefined && mark.until > this.opts.clock.now(); // kept past its end for the next mark's length
  }

  /** The key's answer was stored: its next mark starts from hitForPassSeconds again. */
  clearHitForPass(key: string): void {
    this.passUntil.delete(key);
  }

  /**
   * Ends the hit-for-pass marks (and their growth) of the keys `isPurged` names, by primary key
   * (a collapse id is the primary key, or it and `\u0001` and a variant): a purged page is asked
   * for again collapsed, as a new one is. A mark grown to 120 s outlived a fix that made the
   * page cacheable (review).
   */
  clearHitForPassWhere(isPurged: (primary: string) => boolean): void {
    for (const id of [...this.passUntil.keys()]) {
      const sep = id.indexOf('\u0001');
      if (isPurged(sep < 0 ? id : id.slice(0, sep))) this.passUntil.delete(id);
    }
  }

  /** A new config: every mark (keys' and paths') is judged again under it. */
  clearMarks(): void {
    this.passUntil.clear();
    this.pathPassUntil.clear();
  }

  /**
   * A path (site, host and path, no query; or its directory) whose last fill, for a key with
   * nothing stored, answered what a request with cookies of its own cannot use (`private`, or
   * a copy without freshness, or varying on Cookie: `cookiesOnly`) or what nobody can (not
   * storable at all): for `durationMs`, a request to another query of it that the fill would be
   * made without (its own cookies; a Range, unless `cookiesOnly`) may be sent as it came at
   * once (handle-request.ts). A storable answer anyone may use on the path ends it.
   */
  markPathUncacheable(pathKey: string, durationMs: number, cookiesOnly: boolean): void {
    if (durationMs > 0) this.pathPassUntil.set(pathKey, { until: this.opts.clock.now() + durationMs, cookiesOnly });
  }

  /** The path's mark, if any and not run out: whether it is for requests with cookies only. */
  pathUncacheable(pathKey: string): { cookiesOnly: boolean } | undefined {
    const mark = this.pathPassUntil.get(pathKey);
    if (mark === undefined) return undefined;
    if (mark.until <= this.opts.clock.now()) {
      this.pathPassUntil.delete(pathKey);
      return undefined;
    }
    return mark;
  }

  clearPathUncacheable(pathKey: string): void {
    this.pathPassUntil.delete(pathKey);
  }

  /**
   * Starts the one pass for `key` that a path's mark sends as it came; false while one is under
   * way (the requests after it collapse on a fill as before: a crowd on a page whose path was
   * marked must not reach the origin one by one). `end` when it is answered.
   */
  beginPathPass(key: string): boolean {
    if (this.pathPasses.has(key)) return false;
    this.pathPasses.add(key);
    return true;
  }

  endPathPass(key: string): void {
    this.pathPasses.delete(key);
  }
}

/** How many more deadlines a waiter waits while its fill reads the body (Inflight.setAnswering). */
export const ANSWERING_RENEWALS = 2;

function withDeadline<T>(group: Group<T>, ms: number, onTimeout: () => void): Promise<T | 'timeout'> {
  return new Promise((resolve) => {
    let renewals = 0;
    const expire = (): void => {
      if (!group.answering || renewals >= ANSWERING_RENEWALS) {
        onTimeout();
        return resolve('timeout');
      }
      renewals++;
      timer = setTimeout(expire, ms);
      timer.unref?.();
    };
    let timer = setTimeout(expire, ms);
    timer.unref?.();
    group.promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      () => {
        clearTimeout(timer);
        resolve('timeout');
      },
    );
  });
}
