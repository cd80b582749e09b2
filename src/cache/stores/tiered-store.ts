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
import { computePurge, isUnderPrefix, type CacheStore, type GraceWidening, type PurgeMode, type PurgeSelector } from './cache-store.js';
import type { MemoryStore } from './memory-store.js';

/**
 * How long after its L2 part is done a purge still screens what L2 returns (ms): a read of L2
 * that began before the purge deleted the record may return it later (a command takes up to
 * redis.commandTimeoutMs).
 */
export const PURGE_SETTLE_MS = 5_000;
/** At most this many purges screen L2 at once; past it, the oldest settled ones go first. */
export const MAX_UNSETTLED_PURGES = 10_000;

/** A purge whose L2 part is not known done for PURGE_SETTLE_MS (settledAt Infinity: not done). */
export interface UnsettledPurge {
  readonly selector: PurgeSelector;
  readonly mode: PurgeMode;
  readonly at: number;
  settledAt: number;
}

/** L2's purge, saying whether it all went through (RedisStore.purgeChecked). */
type CheckedPurge = (selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number) => Promise<{ affected: number; ok: boolean }>;

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
  /**
   * Purges whose L2 part is under way, failed (Redis down or stalled) or done less than
   * PURGE_SETTLE_MS ago: a record read from L2 is screened by them before it is used or copied
   * into L1. A request that missed L1 while a purge was deleting the record in Redis (several
   * round trips) read the old record and put it back in L1, where it stayed for its lifetime
   * (1 purge in 10 under load, multi-instance trial); a purge Redis never took left every
   * copy there to come back the same way.
   */
  private readonly unsettled: UnsettledPurge[] = [];
  /**
   * When L2 last started, if it loaded copies from disk then (noteL2Loaded; -Infinity: it did
   * not, or is not known to have): copies stored before it are not used (screen).
   */
  private l2LoadedAt = -Infinity;

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
    const far = this.screen(await this.l2.get(key));
    if (!far) return near;
    if (!near || far.some((e) => staleAtOf(e) > now) || newestResponse(far) > newestResponse(near)) {
      this.l1.fill(key, far);
      return far;
    }
    return near;
  }

  /**
   * A record read from L2, with every unsettled purge that covers it applied to what was stored
   * before it (a hard purge drops those variants, a soft one invalidates them); undefined when
   * nothing is left. Use it for everything L2 returns before L1 or a request sees it.
   */
  screen(record: readonly CacheEntry[] | undefined): readonly CacheEntry[] | undefined {
    if (record !== undefined && this.l2LoadedAt !== -Infinity) record = this.sinceLoaded(record);
    if (record === undefined || this.unsettled.length === 0) return record;
    this.dropSettled();
    let current: readonly CacheEntry[] = record;
    const key = record[0]?.key;
    // Only what was stored before the purge (a page filled since, here or by another instance,
    // is the new one; one whose fill began before and stored after is purge-fence.ts's).
    for (const p of this.unsettled) {
      // One string test for most purges (a URL's key or prefix): only tags need the entries.
      const sel = p.selector;
      if (key !== undefined && ((sel.kind === 'key' && sel.key !== key) || (sel.kind === 'prefix' && !isUnderPrefix(key, sel)))) continue;
      const { kept, affected } = computePurge(current, p.selector, p.mode, p.at, p.at);
      if (affected > 0) current = kept; // in the record's order (oldest first: computeRecordWith trims by it)
    }
    return current.length === 0 ? undefined : current;
  }

  /**
   * L2 loaded copies from disk when it started, at `at` (this instance's clock): every copy
   * stored before then came from its snapshot, which may predate purges the instances made and
   * applied since (an edited or deleted page). They are not used from now on: each page is
   * fetched again once. A Redis restarted from its dump served a deleted wiki page and the
   * old version of an edited one, for their 5 h lifetime, from the instance that started
   * after it (fleet trial).
   */
  noteL2Loaded(at: number): void {
    this.l2LoadedAt = at;
  }

  /** The variants of an L2 record stored since L2 last loaded copies from disk (noteL2Loaded); undefined when none is. */
  private sinceLoaded(record: readonly CacheEntry[]): readonly CacheEntry[] | undefined {
    const since = this.l2LoadedAt;
    let old = 0;
    for (const e of record) if (e.responseTime < since) old++;
    if (old === 0) return record;
    return old === record.length ? undefined : record.filter((e) => e.responseTime >= since);
  }

  /** An L2 record copied into L1 (another instance stored it), screened first. */
  fillFromL2(key: string, record: readonly CacheEntry[]): readonly CacheEntry[] | undefined {
    const screened = this.screen(record);
    if (screened) this.l1.fill(key, screened);
    return screened;
  }

  async put(entry: CacheEntry): Promise<void> {
    await Promise.all([this.l1.put(entry), this.l2.put(entry)]);
  }

  async delete(key: string): Promise<boolean> {
    const [near, far] = await Promise.all([this.l1.delete(key), this.l2.delete(key)]);
    return near || far;
  }

  async purge(selector: PurgeSelector, mode: PurgeMode, now: number): Promise<number> {
    return (await this.purgeChecked(selector, mode, now)).affected;
  }

  /**
   * purge(), saying whether L2 took all of it. Until it has (purgeL2Again), and for
   * PURGE_SETTLE_MS after, what L2 returns is screened by it.
   */
  async purgeChecked(selector: PurgeSelector, mode: PurgeMode, now: number): Promise<{ affected: number; ok: boolean }> {
    const mark: UnsettledPurge = { selector, mode, at: now, settledAt: Infinity };
    this.hold(mark);
    const [near, far] = await Promise.all([this.l1.purge(selector, mode, now), this.l2Purge(selector, mode, now)]);
    if (far.ok) mark.settledAt = this.now();
    return { affected: Math.max(near, far.affected), ok: far.ok };
  }

  /**
   * A purge L2 did not take (purgeChecked said so), tried there again, on what was stored before
   * it only (copies stored since are the new page); true once it has.
   */
  async purgeL2Again(selector: PurgeSelector, mode: PurgeMode, at: number): Promise<boolean> {
    const { ok } = await this.l2Purge(selector, mode, at, at);
    if (!ok) return false;
    const settledAt = this.now();
    for (const p of this.unsettled) if (p.selector === selector && p.at === at) p.settledAt = settledAt;
    return true;
  }

  /** Purges L2 has not taken yet, or took less than PURGE_SETTLE_MS ago (status, tests). */
  get unsettledCount(): number {
    this.dropSettled();
    return this.unsettled.length;
  }

  private l2Purge(selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number): Promise<{ affected: number; ok: boolean }> {
    const checked = (this.l2 as { purgeChecked?: CheckedPurge }).purgeChecked;
    if (checked) return checked.call(this.l2, selector, mode, now, storedBefore);
    return this.l2.purge(selector, mode, now, storedBefore).then((affected) => ({ affected, ok: true }));
  }

  private hold(mark: UnsettledPurge): void {
    this.dropSettled();
    if (this.unsettled.length >= MAX_UNSETTLED_PURGES) {
      const i = this.unsettled.findIndex((p) => p.settledAt !== Infinity);
      this.unsettled.splice(i >= 0 ? i : 0, 1);
    }
    this.unsettled.push(mark);
  }

  /** Drops the purges settled more than PURGE_SETTLE_MS ago, in one pass. */
  private dropSettled(): void {
    const now = this.now();
    const list = this.unsettled;
    let kept = 0;
    for (let i = 0; i < list.length; i++) if (now - list[i]!.settledAt <= PURGE_SETTLE_MS) list[kept++] = list[i]!;
    list.length = kept;
  }

  /**
   * Apply a purge to L1 only: another instance already purged L2 and broadcast it.
   * `storedBefore`: a purge announced late (PurgeNotice.late), for what was stored before it only.
   */
  purgeLocal(selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number): Promise<number> {
    return this.l1.purge(selector, mode, now, storedBefore);
  }

  /** In L1 only: the copies in L2 keep the grace they were stored with (the other instances' too). */
  widenGrace(prefix: string, graceFor: (key: string) => GraceWidening | undefined): Promise<number> {
    return this.l1.widenGrace(prefix, graceFor);
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
