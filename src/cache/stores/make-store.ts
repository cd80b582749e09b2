/**
 * Config -> the store the gateway caches in, chosen once at start: a memory store sized by
 * `cache.maxBytes`; with a `redis:` block, that memory store as L1 in front of the Redis tier
 * (redis-tier.ts: L2, collapsing and purges across instances); or a store given instead (tests),
 * which turns the Redis tier off. Store events (operations by tier, evictions) are counted in the
 * metrics, and crowdgate_redis_up exists only where there is a Redis tier (the alert keys on that).
 */
import type { Logger } from 'pino';
import type { Clock } from '../../clock.js';
import type { GatewayConfig } from '../../config/schema.js';
import type { GatewayMetrics } from '../../metrics/gateway-metrics.js';
import type { CacheStore, StoreEventHook } from './cache-store.js';
import { MemoryStore } from './memory-store.js';
import { RedisTier } from './redis-tier.js';

export interface MakeStoreOptions {
  config: GatewayConfig;
  clock: Clock;
  logger: Logger;
  metrics: GatewayMetrics;
  /** Use this store instead (tests): no memory store is made and the Redis tier stays off. */
  override?: CacheStore;
}

/** `redis` is the Redis tier when one was made (its store is `store`), for purges, heartbeat and close. */
export function makeStore(opts: MakeStoreOptions): { store: CacheStore; redis?: RedisTier } {
  const { config: cfg, clock, logger, metrics } = opts;
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
    });
  let made: { store: CacheStore; redis?: RedisTier };
  if (opts.override) made = { store: opts.override };
  else if (cfg.redis) {
    const redis = new RedisTier({
      config: cfg.redis,
      l1: memory(),
      maxVariants: cfg.cache.maxVariants,
      clock,
      logger,
      onStoreEvent,
      onHeartbeat: (available) => metrics.get('redisUp').set(available ? 1 : 0),
    });
    made = { store: redis.store, redis };
  } else made = { store: memory() };
  if (made.redis) metrics.get('redisUp').set(0);
  else metrics.get('redisUp').remove();
  return made;
}
