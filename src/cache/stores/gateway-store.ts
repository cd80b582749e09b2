/**
 * The store the gateway caches in, chosen once at start: a memory store sized by
 * `cache.maxBytes`; with a `redis:` block, that memory store as L1 in front of the Redis tier
 * (redis-tier.ts: L2, collapsing and purges across instances); or a store given instead (tests),
 * which turns the Redis tier off. Store events (operations by tier, evictions) are counted in the
 * metrics, and crowdgate_redis_up exists only where there is a Redis tier (the alert keys on that).
 *
 * Also what happens to the store as a whole: start (Redis given its chance before traffic),
 * purge (the fills in flight, here, then on the other instances), close.
 */
import type { Logger } from 'pino';
import type { Clock } from '../../clock.js';
import type { GatewayConfig } from '../../config/schema.js';
import type { GatewayMetrics } from '../../metrics/gateway-metrics.js';
import type { CacheStore, PurgeMode, PurgeSelector, StoreEventHook } from './cache-store.js';
import { PurgeFence, type Fence } from '../purge-fence.js';
import { MemoryStore, type MemoryStoreOptions } from './memory-store.js';
import { RedisTier } from './redis-tier.js';
import { RedisStore } from './redis-store.js';
import type { CrossInstanceOutcome } from '../../collapse/cross-instance.js';

/** At most this many purges wait for Redis; past it the oldest are given up (with a warning). */
export const MAX_PENDING_PURGES = 10_000;

export interface GatewayStoreOptions {
  config: GatewayConfig;
  clock: Clock;
  logger: Logger;
  metrics: GatewayMetrics;
  /** Use this store instead (tests): no memory store is made and the Redis tier stays off. */
  override?: CacheStore;
  /** The memory store's carryOver (memory-store.ts): what a copy from Redis takes from the one it replaces. */
  carryOver?: MemoryStoreOptions['carryOver'];
}

export interface RedisStatus {
  up: boolean;
  purgesPending: number;
  /** Since start, as crowdgate_redis_fills_total counts them. */
  fills: Record<CrossInstanceOutcome, number>;
}

export class GatewayStore {
  /** How the fills asked across instances ended, since start (redisStatus). */
  private readonly fills: Record<CrossInstanceOutcome, number> = { locked: 0, filled: 0, timeout: 0, redis_down: 0, lap: 0 };
  /** What the request path and the admin listener read and write. */
  readonly store: CacheStore;
  /** The Redis tier behind `store`, when there is one. */
  readonly redis: RedisTier | undefined;
  /** The fills in flight, which every purge also covers (purge-fence.ts). */
  readonly fence: PurgeFence;
  /** Purges Redis did not take (records or notice), oldest first; retried on each heartbeat Redis answers. */
  private readonly pending: Array<{ selector: PurgeSelector; mode: PurgeMode; at: number; needsL2: boolean; needsBroadcast: boolean }> = [];
  private retrying = false;
  private readonly logger: GatewayStoreOptions['logger'];
  private readonly pendingGauge: (n: number) => void;

  constructor(opts: GatewayStoreOptions) {
    const { config: cfg, clock, logger, metrics } = opts;
    const fence = (this.fence = new PurgeFence(() => clock.now()));
    const onStoreEvent: StoreEventHook = (e) => {
      if (e.kind === 'eviction') metrics.get('cacheEvictions').inc();
      else metrics.countStoreOperation(e.tier, e.kind);
    };
    const memory = (): MemoryStore =>
      new MemoryStore({
        maxBytes: cfg.cache.maxBytes,
        maxObjectBytes: cfg.cache.maxObjectBytes,
        maxVariants: cfg.cache.maxVariants,
        clock,
        onEvent: onStoreEvent,
        carryOver: opts.carryOver,
      });
    if (opts.override) this.store = opts.override;
    else if (cfg.redis) {
      this.redis = new RedisTier({
        config: cfg.redis,
        l1: memory(),
        maxVariants: cfg.cache.maxVariants,
        clock,
        logger,
        onStoreEvent,
        onHeartbeat: (available) => {
          metrics.get('redisUp').set(available ? 1 : 0);
          if (available && this.pending.length > 0) void this.retryPending();
        },
        onPurgeReceived: (selector, mode, at) => {
          return fence.noteRemote(selector, mode, at).map((key) => ({ kind: 'key' as const, key }));
        },
        onCrossInstance: (outcome) => {
          metrics.get('redisFills').inc({ outcome });
          this.fills[outcome]++;
        },
      });
      this.store = this.redis.store;
    } else this.store = memory();
    if (this.redis) metrics.get('redisUp').set(0);
    else metrics.get('redisUp').remove();
    this.logger = logger;
    this.pendingGauge = this.redis ? (n) => metrics.get('purgesPending').set(n) : () => undefined;
    if (this.redis) metrics.get('purgesPending').set(0);
    else metrics.get('purgesPending').remove();
  }

  /**
   * A reload's `cache.maxObjectBytes` and `cache.maxVariants` (both live): the memory tier's, and
   * Redis's variants per record. A store given from outside (tests) keeps its own.
   */
  applyLimits(cache: { maxObjectBytes: number; maxVariants: number }): void {
    const limits = { maxObjectBytes: cache.maxObjectBytes, maxVariants: cache.maxVariants };
    if (this.redis) {
      this.redis.store.l1.setLimits(limits);
      if (this.redis.store.l2 instanceof RedisStore) this.redis.store.l2.setMaxVariants(limits.maxVariants);
    } else if (this.store instanceof MemoryStore) this.store.setLimits(limits);
  }

  /** Before traffic: Redis gets its connect timeout to come up, then the heartbeat runs. */
  async start(): Promise<void> {
    if (!this.redis) return;
    await this.redis.whenReady();
    this.redis.startHeartbeat();
  }

  /**
   * Purges here (L1 and L2 when tiered), then tells the other instances to purge their L1, with
   * one `now` for every selector and every instance. `purged`: the entries affected here.
   */
  async purge(selectors: readonly PurgeSelector[], mode: PurgeMode, now: number, except?: Fence): Promise<{ purged: number; broadcast: boolean }> {
    let purged = 0;
    // The fills in flight first (but `except`, a fill clearing the way for what it stores): one
    // that stores while the store is being purged still applies it.
    for (const selector of selectors) this.fence.note(selector, mode, now, except);
    if (!this.redis) {
      for (const selector of selectors) purged += await this.store.purge(selector, mode, now);
      return { purged, broadcast: false };
    }
    const notInL2 = new Set<PurgeSelector>();
    for (const selector of selectors) {
      const r = await this.redis.store.purgeChecked(selector, mode, now);
      purged += r.affected;
      if (!r.ok) notInL2.add(selector);
    }
    // Announced once Redis has taken it: told before, the others dropped their memory copy and
    // read the old record back from Redis (a soft purge Redis refused at maxmemory; review).
    const taken = selectors.filter((s) => !notInL2.has(s));
    const sent = await this.redis.broadcastEach(taken, mode, now);
    const unsent = new Set(taken.filter((_, i) => !sent[i]));
    const broadcast = notInL2.size === 0 && unsent.size === 0;
    if (!broadcast) {
      // Redis did not take it all (down, stalled, refusing writes): kept, and done when it
      // answers again. Until then what Redis returns here is screened by it (tiered-store.ts),
      // so the old copy does not come back from there; the others keep theirs until the notice.
      for (const selector of selectors) {
        if (!notInL2.has(selector) && !unsent.has(selector)) continue;
        this.pending.push({ selector, mode, at: now, needsL2: notInL2.has(selector), needsBroadcast: true });
      }
      if (this.pending.length > MAX_PENDING_PURGES) {
        const dropped = this.pending.splice(0, this.pending.length - MAX_PENDING_PURGES);
        this.logger.warn({ dropped: dropped.length }, 'purges given up: too many waiting for Redis');
      }
      this.pendingGauge(this.pending.length);
    }
    return { purged, broadcast };
  }

  /** Purges Redis has not taken, tried again (while it answers): its records, then the notice. */
  private async retryPending(): Promise<void> {
    if (this.retrying || !this.redis) return;
    this.retrying = true;
    try {
      const redis = this.redis;
      let done = 0;
      for (const p of [...this.pending]) {
        // Late: for what was stored before the purge only (copies made since are the new page).
        if (p.needsL2) p.needsL2 = !(await redis.store.purgeL2Again(p.selector, p.mode, p.at));
        if (!p.needsL2 && p.needsBroadcast) p.needsBroadcast = !(await redis.broadcastEach([p.selector], p.mode, p.at, true))[0];
        if (!p.needsL2 && !p.needsBroadcast) done++;
        // One Redis keeps refusing does not hold back the others.
      }
      // In place: purge() may have added (or given up) entries meanwhile.
      let kept = 0;
      for (const p of this.pending) if (p.needsL2 || p.needsBroadcast) this.pending[kept++] = p;
      this.pending.length = kept;
      if (done > 0) this.logger.info({ done, left: this.pending.length }, 'purges made while Redis was unavailable now applied to it and announced');
      this.pendingGauge(this.pending.length);
    } finally {
      this.retrying = false;
    }
  }

  /** The Redis tier for /status.json: whether it answers now, the purges it has not taken, how fills asked across instances ended; undefined without one. */
  redisStatus(): RedisStatus | undefined {
    if (!this.redis) return undefined;
    return { up: this.redis.isAvailable(), purgesPending: this.pending.length, fills: { ...this.fills } };
  }

  /** Purges waiting for Redis (tests, status). */
  get pendingPurges(): number {
    return this.pending.length;
  }

  /** The Redis tier (which closes its store), or the store. */
  close(): Promise<void> {
    return (this.redis ?? this.store).close();
  }
}
