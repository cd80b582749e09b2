/**
 * Cross-instance collapsing: the answer to a local leader's question "may I fetch this key, or is
 * another gateway instance already fetching it?" (CrossInstanceCollapse, below; the request path's fill asks it).
 * Built on the fill lock (distributed.ts: `SET NX PX`) and the "filled" notice (redis-bus.ts,
 * pub/sub). It does not collapse requests inside one process (inflight.ts), read or write the
 * store, nor decide what a waiter does once woken (the request path re-reads the store).
 *
 * acquire(key):
 *   1. register a fill waiter on the bus (synchronously, before anything can be published), then
 *   2. try the lock for `lockTtlMs`:
 *      - acquired   → 'fetch'; done() releases the lock, then publishes "filled" (the caller
 *                     calls it after its store write, so a woken waiter finds the entry in L2);
 *                     unless `isFilled` says another instance stored the key in the meantime
 *                     (after the caller's lookup, before our lock): then release, publish,
 *                     and answer 'filled';
 *      - Redis down → 'fetch' at once, done() is a no-op (fail open: fetch alone);
 *      - held       → wait for the holder's "filled" notice: 'filled', or 'timeout' (the
 *                     caller then fetches on its own) once the holder shows no sign of life
 *                     for `lockWaitMs` or the caller's maxWaitMs has passed.
 * The holder renews its lock every lockTtlMs / 3 while its fill runs (compare-and-PEXPIRE), so
 * a fill slower than lockTtlMs keeps the key; a waiter without a notice after lockWaitMs asks
 * whether the lock is still there and, if so, waits on. Registering first closes the race where
 * the holder publishes between our failed SET NX and our subscription to its notice. A holder
 * that dies never publishes and stops renewing: its lock lapses within lockTtlMs and its waiters
 * leave at their next check, so the key is never blocked longer than lockTtlMs + lockWaitMs.
 * Waiting costs one EXISTS per lockWaitMs past the first (the wake-up itself is the shared
 * subscription's notice); when the subscriber is down the wait ends at once ('timeout'),
 * since no notice could arrive.
 *
 * Release before publish: a waiter woken by the notice may take the lock itself (to refetch an
 * entry that arrived unusable) without finding the old holder's lock still there.
 */
import type { CollapseKey } from '../cache/cache-key.js';
import { systemClock, type Clock } from '../clock.js';
import type { RedisBus } from '../cache/stores/redis-bus.js';
import type { DistributedLock } from './distributed.js';

export type CrossInstanceClaim = { kind: 'fetch'; done(): Promise<void> } | { kind: 'filled' } | { kind: 'timeout' } | { kind: 'lap' };

/**
 * Cross-instance collapsing: a local leader asks before fetching. 'fetch': this instance holds
 * the fill (or Redis is unavailable): fetch, store, then call done() so the others wake.
 * 'filled': another instance stored it meanwhile: read the store again. 'timeout': the holder
 * took too long: fetch alone.
 */
export interface CrossInstanceCollapse {
  /**
   * maxWaitMs: the longest a non-holder waits for a holder still at work (cache.collapse.waitDeadlineMs).
   * `owner`: named in the lock this acquire takes. `cameThrough`: for a request that came
   * through gateways (its CDN-Loop ids), whether the holder named is one of them: then 'lap'
   * at once, no wait (the holder's fill is the one this request came from: a loop through a
   * balancer would wait on itself until its deadline).
   */
  acquire(key: CollapseKey, maxWaitMs?: number, owner?: string, cameThrough?: (holder: string) => boolean): Promise<CrossInstanceClaim>;
}

/** How an acquire ended, for metrics and logs. */
export type CrossInstanceOutcome = 'locked' | 'redis_down' | 'filled' | 'timeout' | 'lap';

export interface RedisCrossInstanceOptions {
  lock: DistributedLock;
  bus: RedisBus;
  /** redis.lockTtlMs: how long a holder may keep a key before its lock lapses. */
  lockTtlMs: number;
  /** redis.lockWaitMs: how long a non-holder waits for "filled" before fetching alone. */
  lockWaitMs: number;
  onOutcome?: (outcome: CrossInstanceOutcome) => void;
  /** Times the waits, whose timers are real ones (the bus's): default the system clock. */
  clock?: Clock;
  /**
   * Runs before 'filled' is answered: the Redis tier (cache/stores/redis-tier.ts) copies the
   * holder's L2 record into L1 there, so the caller's re-read finds it rather than the stale L1
   * copy it started from.
   */
  onFilled?: (key: CollapseKey) => Promise<void>;
  /**
   * Asked once the lock is ours: true when the key turns out to be filled already (another
   * instance stored it after the caller's lookup and released before our SET NX). Then the lock
   * is released, waiters are told, and 'filled' is answered instead of a second origin fetch.
   */
  isFilled?: (key: CollapseKey) => Promise<boolean>;
}

const NOTHING_TO_RELEASE = async (): Promise<void> => {};

export class RedisCrossInstance implements CrossInstanceCollapse {
  private readonly lock: DistributedLock;
  private readonly bus: RedisBus;
  private readonly lockTtlMs: number;
  private readonly lockWaitMs: number;
  private readonly onOutcome: ((outcome: CrossInstanceOutcome) => void) | undefined;
  private readonly onFilled: ((key: CollapseKey) => Promise<void>) | undefined;
  private readonly isFilled: ((key: CollapseKey) => Promise<boolean>) | undefined;
  private readonly clock: Clock;

  constructor(options: RedisCrossInstanceOptions) {
    for (const name of ['lockTtlMs', 'lockWaitMs'] as const) {
      if (!(options[name] > 0)) throw new RangeError(`${name} must be positive, got ${options[name]}`);
    }
    this.lock = options.lock;
    this.bus = options.bus;
    this.lockTtlMs = options.lockTtlMs;
    this.lockWaitMs = options.lockWaitMs;
    this.onOutcome = options.onOutcome;
    this.onFilled = options.onFilled;
    this.isFilled = options.isFilled;
    this.clock = options.clock ?? systemClock;
  }

  /**
   * `maxWaitMs`: the longest a non-holder waits for a holder that is still at work (its lock
   * renewed); default lockWaitMs. A holder that shows no sign of life for lockWaitMs (its lock
   * gone) is waited for no longer.
   */
  async acquire(key: CollapseKey, maxWaitMs: number = this.lockWaitMs, owner?: string, cameThrough?: (holder: string) => boolean): Promise<CrossInstanceClaim> {
    const startedAt = this.clock.now();
    // 1. Listen first (see module doc); resolves 'timeout' at once when no notice could arrive.
    const notified = this.bus.waitForFill(key.id, Math.min(this.lockWaitMs, maxWaitMs));
    // 2. The lock.
    const lock = await this.lock.tryLock(key.id, this.lockTtlMs, owner);
    if (lock.acquired) {
      // Renewed while the fill runs, so a fill slower than lockTtlMs keeps the key and its
      // waiters (a 3 s page was fetched by each instance, and their clients waited 6 s).
      const renewal = setInterval(() => void lock.extend(this.lockTtlMs), Math.max(RENEW_MIN_MS, this.lockTtlMs / 3));
      renewal.unref();
      const stopRenewal = setTimeout(() => clearInterval(renewal), MAX_HOLD_MS);
      stopRenewal.unref();
      // Our own waiter is settled by our own "filled" notice (or its timer); nobody awaits it.
      const done = async () => {
        clearInterval(renewal);
        clearTimeout(stopRenewal);
        await lock.release();
        await this.bus.publishFilled(key.id);
      };
      if (await this.isFilled?.(key)) {
        await done();
        this.onOutcome?.('filled');
        return { kind: 'filled' };
      }
      this.onOutcome?.('locked');
      return { kind: 'fetch', done };
    }
    if (lock.redisDown) {
      this.onOutcome?.('redis_down');
      return { kind: 'fetch', done: NOTHING_TO_RELEASE };
    }
    // 3. Another instance holds the fill. One this request came through: not waited on.
    if (cameThrough !== undefined) {
      const holder = await this.lock.holderOf(key.id);
      if (holder !== undefined && cameThrough(holder)) {
        this.onOutcome?.('lap');
        return { kind: 'lap' };
      }
    }
    //    Else its notice, or our deadline. Each lockWaitMs without
    //    a notice, the holder's lock says whether it is still at work (it renews it): then wait
    //    on, up to maxWaitMs in all. Gone, the holder either just finished (release comes
    //    before its notice: the store has the copy) or died (fetch here).
    let outcome = await notified;
    while (outcome === 'timeout' && this.bus.isListening()) {
      const remaining = maxWaitMs - (this.clock.now() - startedAt);
      if (remaining <= 0) break;
      const next = this.bus.waitForFill(key.id, Math.min(this.lockWaitMs, remaining));
      if (!(await this.lock.isHeld(key.id))) {
        if (await this.isFilled?.(key)) outcome = 'filled';
        break;
      }
      outcome = await next;
    }
    this.onOutcome?.(outcome);
    if (outcome === 'filled') await this.onFilled?.(key);
    return { kind: outcome };
  }
}

/** The renewal period's floor, ms (lockTtlMs / 3 otherwise). */
const RENEW_MIN_MS = 50;
/** A holder stops renewing after this, ms, whatever its fill does (a fill past every timeout is a bug; the key is not held for good). */
export const MAX_HOLD_MS = 300_000;
