import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../src/clock.js';
import { parseConfigText } from '../../../../src/config/load.js';
import type { GatewayConfig } from '../../../../src/config/schema.js';
import { GatewayStore } from '../../../../src/cache/stores/gateway-store.js';
import { MemoryStore } from '../../../../src/cache/stores/memory-store.js';
import { GatewayMetrics } from '../../../../src/metrics/gateway-metrics.js';
import { makeEntry } from '../../../contract/cache-store.contract.js';

const quiet = pino({ level: 'silent' });

function config(cache: string): GatewayConfig {
  const r = parseConfigText(
    `${cache}sites:\n  - name: blog\n    hosts: ["*"]\n    origins: [{ url: "http://127.0.0.1:3000" }]\n`,
    'test.yaml',
    { env: {} },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

/** The value of one sample line in the exposition text, or undefined when absent. */
function sample(text: string, line: string): number | undefined {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe('GatewayStore', () => {
  it('without redis: a memory store within cache.maxObjectBytes, its operations counted, no crowdgate_redis_up', async () => {
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const made = new GatewayStore({ config: config('cache:\n  maxObjectBytes: 2000\n'), clock: new ManualClock(0), logger: quiet, metrics });
    expect(made.store).toBeInstanceOf(MemoryStore);
    expect(made.redis).toBeUndefined();
    await made.store.put(makeEntry({ key: 'k', body: Buffer.alloc(100) }));
    await made.store.put(makeEntry({ key: 'big', body: Buffer.alloc(5_000) }));
    expect(await made.store.get('big')).toBeUndefined();
    expect(made.store.stats().entries).toBe(1);
    const text = (await metrics.render()).body;
    expect(sample(text, 'crowdgate_store_operations_total{tier="memory",result="skip"}')).toBe(1);
    expect(sample(text, 'crowdgate_redis_up')).toBeUndefined();
  });

  it('uses a store given instead, and then makes no Redis tier even when redis: is configured', () => {
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const given = new MemoryStore({ maxBytes: 1024, maxObjectBytes: 1024, maxVariants: 1 });
    const cfg = config('redis:\n  url: redis://127.0.0.1:1\n');
    const made = new GatewayStore({ config: cfg, clock: new ManualClock(0), logger: quiet, metrics, override: given });
    expect(made.store).toBe(given);
    expect(made.redis).toBeUndefined();
  });

  it('without Redis: starts at once, purges here only (one now for every selector), closes the store', async () => {
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const made = new GatewayStore({ config: config(''), clock: new ManualClock(0), logger: quiet, metrics });
    await made.start();
    for (const key of ['a', 'b', 'c']) await made.store.put(makeEntry({ key, body: Buffer.alloc(10) }));
    const selectors = [{ kind: 'key', key: 'a' }, { kind: 'key', key: 'b' }] as const;
    expect(await made.purge(selectors, 'hard', 1_000)).toEqual({ purged: 2, broadcast: false });
    expect(made.store.stats().entries).toBe(1);
    await made.close();
  });
});
