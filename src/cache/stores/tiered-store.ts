/**
 * Two tiers as one store: the process's MemoryStore (L1) in front of a shared store (L2, Redis).
 * Owns the order of the tiers; each tier reports its own events (tier 'memory' / 'redis'), so
 * metrics show the L1 and L2 hit ratios apart. It does not broadcast purges to other instances
 * (redis-bus.ts; the receiving side calls purgeLocal()).
 *
 * - get: L1, then L2 on an L1 miss; an L2 hit fills L1 with the whole record.
 * - put: both tiers (L2 may skip what exceeds redis.maxEntryBytes: it then lives in L1 only).
 * - delete / purge: both tiers. purge returns the larger of the two counts: the same entry
 *   usually sits in both, and adding would count it twice.
 * - stats: L1's (synchronous); L2 figures come from the L2 store itself.
 *
 * Known limitation: an L1 record wins over L2. A Vary variant another instance stored only in
 * L2 is not seen here until this instance's L1 record goes (expiry, purge, eviction) or this
 * instance fetches that variant itself.
 */
import type { CacheEntry } from '../entry.js';
import type { CacheStore, PurgeMode, PurgeSelector } from './cache-store.js';
import type { MemoryStore } from './memory-store.js';

export interface TieredStoreOptions {
  l1: MemoryStore;
  l2: CacheStore;
  name?: string;
}

export class TieredStore implements CacheStore {
  readonly name: string;
  readonly l1: MemoryStore;
  readonly l2: CacheStore;

  constructor(options: TieredStoreOptions) {
    this.l1 = options.l1;
    this.l2 = options.l2;
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
    if (near) return near;
    const far = await this.l2.get(key);
    if (far) this.l1.fill(key, far);
    return far;
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
