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
  | { role: 'leader'; settle(result: T): void }
  | { role: 'waiter'; result: Promise<T | 'timeout'> }
  | { role: 'overflow' };

interface Group<T> {
  promise: Promise<T>;
  resolve(result: T): void;
  waiters: number;
  /** The fetch has its answer's head and is reading the body (markAnswering). */
  answering: boolean;
}

export class Inflight<T> {
  private readonly groups = new Map<string, Group<T>>();
  private readonly passUntil: LRUCache<string, number>;

  constructor(
    private readonly opts: { maxWaiters: number; clock: Clock; maxPassMarkers?: number },
  ) {
    this.passUntil = new LRUCache({ max: opts.maxPassMarkers ?? 10_000 });
  }

  /** Becomes the leader for `key`, or waits on the current leader (until `waitMs`). */
  join(key: string, waitMs: number): JoinResult<T> {
    const group = this.groups.get(key);
    if (group) {
      if (group.waiters >= this.opts.maxWaiters) return { role: 'overflow' };
      group.waiters++;
      return { role: 'waiter', result: withDeadline(group, waitMs) };
    }
    let resolve!: (r: T) => void;
    const promise = new Promise<T>((r) => (resolve = r));
    const created: Group<T> = { promise, resolve, waiters: 0, answering: false };
    this.groups.set(key, created);
    let settled = false;
    return {
      role: 'leader',
      settle: (result: T) => {
        if (settled) return;
        settled = true;
        if (this.groups.get(key) === created) this.groups.delete(key);
        created.resolve(result);
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

  /** How many requests joined `key`'s fill as waiters (those that gave up since included); 0 when none is under way. */
  waitersOf(key: string): number {
    return this.groups.get(key)?.waiters ?? 0;
  }

  /** True while a leader is fetching `key`. */
  isInflight(key: string): boolean {
    return this.groups.has(key);
  }

  get size(): number {
    return this.groups.size;
  }

  markHitForPass(key: string, durationMs: number): void {
    if (durationMs > 0) this.passUntil.set(key, this.opts.clock.now() + durationMs);
  }

  isHitForPass(key: string): boolean {
    const until = this.passUntil.get(key);
    if (until === undefined) return false;
    if (until <= this.opts.clock.now()) {
      this.passUntil.delete(key);
      return false;
    }
    return true;
  }

  clearHitForPass(key: string): void {
    this.passUntil.delete(key);
  }
}

/** How many more deadlines a waiter waits while its fill reads the body (Inflight.setAnswering). */
export const ANSWERING_RENEWALS = 2;

function withDeadline<T>(group: Group<T>, ms: number): Promise<T | 'timeout'> {
  return new Promise((resolve) => {
    let renewals = 0;
    const expire = (): void => {
      if (!group.answering || renewals >= ANSWERING_RENEWALS) return resolve('timeout');
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
