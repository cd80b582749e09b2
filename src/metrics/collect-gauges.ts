/**
 * The gauges that are read rather than counted, published just before they are looked at (each
 * /metrics scrape, each status-page sample): cache size, the request bodies read ahead, the origin
 * limiters (upstream.ts), the pressure gate's readings and verdict, draining, and whether Redis is
 * usable.
 */
import type { PressureGate } from '../admission/pressure-gate.js';
import type { BodySpool } from '../origin/request-body.js';
import type { CacheStore } from '../cache/stores/cache-store.js';
import type { Upstream } from '../origin/upstream.js';
import type { GatewayMetrics } from './gateway-metrics.js';

/** Where the figures come from; a Gateway is one. */
export interface GaugeSources {
  readonly metrics: GatewayMetrics;
  readonly store: Pick<CacheStore, 'stats'>;
  readonly upstream: Pick<Upstream, 'collect'>;
  /** The request bodies read whole before the origin is asked (origin/request-body.ts). */
  readonly bodies: Pick<BodySpool, 'bytesHeld' | 'bytesInMemory'>;
  /** The pressure gate's readings and the verdicts (admission/admission.ts). */
  readonly admission: {
    readonly pressure: Pick<PressureGate, 'readings'>;
    isOverloaded(): boolean;
    isShedding(): boolean;
  };
  /** Shutting down: shutdown.delayMs, then draining (crowdgate_draining). */
  isStopping(): boolean;
}

/** `redis`: the Redis tier when one is configured (crowdgate_redis_up exists only then). */
export function collectGauges(from: GaugeSources, redis?: { isAvailable(): boolean }): void {
  const { metrics } = from;
  const stats = from.store.stats();
  metrics.get('cacheEntries').set(stats.entries);
  metrics.get('cacheBytes').set(stats.bytes);
  metrics.get('requestBodyBytes').set({ where: 'memory' }, from.bodies.bytesInMemory);
  metrics.get('requestBodyBytes').set({ where: 'file' }, from.bodies.bytesHeld);
  from.upstream.collect();
  const r = from.admission.pressure.readings();
  metrics.get('pressureEventLoopDelay').set(r.eventLoopDelayMs / 1000);
  metrics.get('pressureUtilization').set(r.eventLoopUtilization);
  metrics.get('pressureHeap').set(r.heapUsedRatio);
  metrics.get('pressureOverloaded').set(from.admission.isOverloaded() ? 1 : 0);
  metrics.get('pressureShedding').set(from.admission.isShedding() ? 1 : 0);
  metrics.get('draining').set(from.isStopping() ? 1 : 0);
  if (redis) metrics.get('redisUp').set(redis.isAvailable() ? 1 : 0);
}
