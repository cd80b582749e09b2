import { describe, expect, it } from 'vitest';
import { collectGauges, type GaugeSources } from '../../../src/metrics/collect-gauges.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';

/** The value of one sample line in the exposition text, or undefined when absent. */
function sample(text: string, line: string): number | undefined {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

/** The pressure readings of these tests, with the verdicts given. */
function admission(overloaded: boolean, shedding: boolean): GaugeSources['admission'] {
  return {
    pressure: { readings: () => ({ eventLoopDelayMs: 250, eventLoopUtilization: 0.5, heapUsedRatio: 0.25 }) },
    isOverloaded: () => overloaded,
    isShedding: () => shedding,
  };
}

function sources(metrics: GatewayMetrics, over: Partial<GaugeSources> = {}): GaugeSources & { collected: () => number } {
  let collected = 0;
  return {
    metrics,
    store: { stats: () => ({ entries: 3, bytes: 4096 }) },
    upstream: { collect: () => void collected++ },
    bodies: { bytesHeld: 70_000, bytesInMemory: 1_234 },
    admission: admission(true, false),
    isStopping: () => false,
    collected: () => collected,
    ...over,
  };
}

describe('collectGauges', () => {
  it('publishes the cache size, the request bodies held, pressure readings and verdict, draining, and has the upstream publish its own', async () => {
    const m = new GatewayMetrics({ defaultMetrics: false });
    const s = sources(m);
    collectGauges(s);
    const text = (await m.render()).body;
    expect(s.collected()).toBe(1);
    expect(sample(text, 'crowdgate_cache_entries')).toBe(3);
    expect(sample(text, 'crowdgate_cache_bytes')).toBe(4096);
    expect(sample(text, 'crowdgate_request_body_bytes{where="memory"}')).toBe(1234);
    expect(sample(text, 'crowdgate_request_body_bytes{where="file"}')).toBe(70000);
    expect(sample(text, 'crowdgate_pressure_event_loop_delay_seconds')).toBe(0.25);
    expect(sample(text, 'crowdgate_pressure_event_loop_utilization')).toBe(0.5);
    expect(sample(text, 'crowdgate_pressure_heap_used_ratio')).toBe(0.25);
    expect(sample(text, 'crowdgate_pressure_overloaded')).toBe(1);
    expect(sample(text, 'crowdgate_pressure_shedding')).toBe(0);
    expect(sample(text, 'crowdgate_draining')).toBe(0);
    collectGauges(sources(m, { admission: admission(true, true), isStopping: () => true }));
    const after = (await m.render()).body;
    expect(sample(after, 'crowdgate_pressure_shedding')).toBe(1);
    expect(sample(after, 'crowdgate_draining')).toBe(1);
  });

  it('sets crowdgate_redis_up only when given the Redis tier', async () => {
    const m = new GatewayMetrics({ defaultMetrics: false });
    m.get('redisUp').remove();
    collectGauges(sources(m));
    expect(sample((await m.render()).body, 'crowdgate_redis_up')).toBeUndefined();
    collectGauges(sources(m), { isAvailable: () => true });
    expect(sample((await m.render()).body, 'crowdgate_redis_up')).toBe(1);
    collectGauges(sources(m), { isAvailable: () => false });
    expect(sample((await m.render()).body, 'crowdgate_redis_up')).toBe(0);
  });
});
