/**
 * Two tiers as one store: the process's MemoryStore (L1) in front of a shared store (L2, Redis).
 * Owns the order of the tiers; each tier reports its own events (tier 'memory' / 'redis'), so
 * metrics show the L1 and L2 hit ratios apart. It does not broadcast purges to other instances
 * (redis-bus.ts; the receiving side calls purgeLocal()).
 *
 * - get: L1 when it holds a variant still fresh; else L2 too (an L1 miss, or a local record
 *   with nothing fresh: expired, soft-purged, or older than what another instance stored), and
 *   an L2 record with a fresh variant, or one newer than L1's, replaces L1's whole record.
 * - put: both tiers (L2 may skip what exceeds redis.maxEntryBytes: it then lives in L1 only).
 * - delete / purge: both tiers. purge returns the larger of the two counts: the same entry
 *   usually sits in both, and adding would count it twice.
 * - stats: L1's (synchronous); L2 figures come from the L2 store itself.
 *
 * Known limitation: an L1 record with a fresh variant wins over L2. A Vary variant another
 * instance stored only in L2 is not seen here while this instance holds another fresh variant
 * of the key; it is once none is fresh.
 */
import type { Clock } from '../../clock.js';
import { staleAtOf, type CacheEntry } from '../entry.js';
import type { CacheStore, PurgeMode, PurgeSelector } from './cache-store.js';
import type { MemoryStore } from './memory-store.js';

export interface TieredStoreOptions {
  l1: MemoryStore;
  l2: CacheStore;
  name?: string;
  /** Decides what "fresh" means for get(); default the system clock. */
  clock?: Clock;
}

export class TieredStore implements CacheStore {
  readonly name: string;
  readonly l1: MemoryStore;
  readonly l2: CacheStore;
  private readonly now: () => number;

  constructor(options: TieredStoreOptions) {
    this.l1 = options.l1;
    this.l2 = options.l2;
    const clock = options.clock;
    this.now = clock ? () => clock.now() : Date.now;
    this.name = options.name ?? `${options.l1.name}+${options.l2.name}`;
  }

  peekHit(key: string, now?: number): readonly CacheEntry[] | undefined {
    return this.l1.peekHit(key, now);
  }

  get version(): number {
    return this.l1.version;
  }

  noteHeldHit(): void {
    this.l1.noteHeldHit();
  }

  async get(key: string): Promise<readonly CacheEntry[] | undefined> {
    const near = await this.l1.get(key);
    const now = this.now();
    if (near && near.some((e) => staleAtOf(e) > now)) return near;
    const far = await this.l2.get(key);
    if (!far) return near;
    if (!near || far.some((e) => staleAtOf(e) > now) || newestResponse(far) > newestResponse(near)) {
      this.l1.fill(key, far);
      return far;
    }
    return near;
  }

  async put(entry: CacheEntry): Promise<void> {
    await Promise.all([this.l1.put(entry), this.l2.put(entry)]);
  }

  async delete(key: string): Promise<boolean> {
    const [near, far] = await Promise.all([this.l1.delete(key), this.l2.delete(key)]);
    return near || far;
  }

  async purge(selector: PurgeSelector, mode: PurgeMode, now: number): Promise<number> {
    const [near, far] = await Promise.all([this.l1.purge(selector, mode, now), this.l2.purge(selector, mode, now)]);
    return Math.max(near, far);
  }

  /** Apply a purge to L1 only: another instance already purged L2 and broadcast it. */
  purgeLocal(selector: PurgeSelector, mode: PurgeMode, now: number): Promise<number> {
    return this.l1.purge(selector, mode, now);
  }

  stats(): { entries: number; bytes: number } {
    return this.l1.stats();
  }

  async refreshStats(): Promise<void> {
    await this.l2.refreshStats?.();
  }

  async close(): Promise<void> {
    await Promise.all([this.l1.close(), this.l2.close()]);
  }
}

function newestResponse(record: readonly CacheEntry[]): number {
  let newest = -Infinity;
  for (const e of record) if (e.responseTime > newest) newest = e.responseTime;
  return newest;
}
