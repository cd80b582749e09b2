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
      return { role: 'waiter', result: withDeadline(group.promise, waitMs) };
    }
    let resolve!: (r: T) => void;
    const promise = new Promise<T>((r) => (resolve = r));
    const created: Group<T> = { promise, resolve, waiters: 0 };
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

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    timer.unref?.();
    promise.then(
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
