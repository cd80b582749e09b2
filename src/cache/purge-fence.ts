/**
 * The purge fence: a purge also covers the fills in flight when it is made. A fill that left for
 * the origin before an edit and comes back after its PURGE would otherwise store the old page
 * for its whole lifetime: the purge found nothing to remove, the fill then put what the origin
 * said before the edit (attacker trial: a wiki page edited while its fill was under way stayed
 * old for 10 minutes). Varnish has the same window; its users purge twice.
 *
 * A fill opens a fence on its key before it asks for a member and closes it when done. Every
 * purge made while it is open (here, or announced by another instance) is noted on it when its
 * selector may cover the key; the fill's put then goes through `apply`, which gives the entry
 * each noted purge: a hard purge drops it (not stored), a soft one stores it invalidated as of
 * the purge. The answer the fill gives its own waiters is not changed: they asked before.
 *
 * Another instance's purge reaches us through Redis a few milliseconds after it was made; a fill
 * of ours that began before it and stored in that gap is in `recentlyClosed` for `RECENT_MS`,
 * and `noteRemote` returns the keys it stored under, for the caller to purge again in full (L1
 * and Redis) and announce once more (a third instance may have copied it from Redis meanwhile).
 *
 * Owns only which purges a fill must apply; the stores purge (cache-store.ts computePurge).
 */
import type { CacheEntry } from './entry.js';
import { computePurge, isUnderPrefix, type PurgeMode, type PurgeSelector } from './stores/cache-store.js';

/** One fill's fence: the purges noted while it was open. */
export interface Fence {
  readonly key: string;
  /** When the fill began (this instance's clock). */
  readonly startedAt: number;
  readonly purges: Array<{ selector: PurgeSelector; mode: PurgeMode; at: number }>;
  /** Set by apply() when the fill stored something under `key`. */
  stored: boolean;
  /** The tags of what it stored (a tag purge covers it only with its tag). */
  tags: readonly string[];
}

/**
 * Clock difference allowed between instances: a fill that began up to this long after another
 * instance's purge (by the two clocks) may still have begun before it, and is purged again.
 */
export const CLOCK_SKEW_MS = 1_000;

/** How long a closed fence still answers a purge announced by another instance (ms). */
export const RECENT_MS = 5_000;
/** At most this many closed fences are remembered (the oldest go first). */
export const MAX_RECENT = 10_000;

export class PurgeFence {
  private readonly open = new Set<Fence>();
  /** Fences that stored, by closing time, oldest first. */
  private readonly recentlyClosed: Array<{ fence: Fence; closedAt: number }> = [];

  constructor(private readonly now: () => number) {}

  /** A fill of `key` starts. */
  begin(key: string): Fence {
    const fence: Fence = { key, startedAt: this.now(), purges: [], stored: false, tags: [] };
    this.open.add(fence);
    return fence;
  }

  /** That fill is done (stored, not stored, or failed). */
  end(fence: Fence): void {
    if (!this.open.delete(fence) || !fence.stored) return;
    const now = this.now();
    this.dropOld(now);
    this.recentlyClosed.push({ fence, closedAt: now });
    if (this.recentlyClosed.length > MAX_RECENT) this.recentlyClosed.shift();
  }

  /** A purge made here: noted on every open fence it may cover (but `except`, the fill that made it). */
  note(selector: PurgeSelector, mode: PurgeMode, at: number, except?: Fence): void {
    for (const fence of this.open) if (fence !== except && mayCover(selector, fence.key)) fence.purges.push({ selector, mode, at });
  }

  /**
   * A purge another instance made (at `at`, its clock): noted on the open fences, and the keys
   * that fills of ours which began before it (within CLOCK_SKEW_MS) stored under in the last
   * `RECENT_MS`, with what they stored covered by it (they may have stored before the notice
   * arrived). A fill that began after the purge fetched the page as it is now: left alone.
   */
  noteRemote(selector: PurgeSelector, mode: PurgeMode, at: number): string[] {
    this.note(selector, mode, at);
    this.dropOld(this.now());
    const keys = new Set<string>();
    for (const { fence } of this.recentlyClosed) {
      if (fence.startedAt > at + CLOCK_SKEW_MS || !mayCover(selector, fence.key)) continue;
      if (selector.kind === 'tag' && !fence.tags.includes(selector.tag)) continue;
      keys.add(fence.key);
    }
    return [...keys];
  }

  /** What the fill may store: `entry` with every purge noted on its fence applied; undefined when one removed it. */
  apply(fence: Fence, entry: CacheEntry): CacheEntry | undefined {
    let current = entry;
    for (const { selector, mode, at } of fence.purges) {
      const [kept] = computePurge([current], selector, mode, at).kept;
      if (kept === undefined) return undefined;
      current = kept;
    }
    fence.stored = true;
    fence.tags = current.tags;
    return current;
  }

  /** Open fences (tests and the status page's curiosity). */
  get openCount(): number {
    return this.open.size;
  }

  private dropOld(now: number): void {
    let drop = 0;
    while (drop < this.recentlyClosed.length && now - this.recentlyClosed[drop]!.closedAt > RECENT_MS) drop++;
    if (drop > 0) this.recentlyClosed.splice(0, drop);
  }
}

/** Whether a purge by `selector` may cover an entry stored under `key` (a tag is known only on the entry). */
function mayCover(selector: PurgeSelector, key: string): boolean {
  switch (selector.kind) {
    case 'key':
      return selector.key === key;
    case 'prefix':
      return isUnderPrefix(key, selector);
    case 'tag':
    case 'all':
      return true;
  }
}
