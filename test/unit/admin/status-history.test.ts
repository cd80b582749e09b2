import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';
import { HotKeys } from '../../../src/admin/hot-keys.js';
import { CACHE_STATES } from '../../../src/outcome.js';
import {
  RingBuffer,
  StatusHistory,
  computeRate,
  type StatusHistoryOptions,
  type StatusSource,
} from '../../../src/admin/status-history.js';

/** A real registry, a real hot-keys table and a hand-driven clock. */
function setup(opts: StatusHistoryOptions = {}) {
  const clock = new ManualClock(1_700_000_000_000);
  const metrics = new GatewayMetrics({ defaultMetrics: false });
  const hotKeys = new HotKeys(50);
  let collected = 0;
  const source: StatusSource = { metrics, hotKeys, clock, collectGauges: () => void collected++ };
  const history = new StatusHistory(source, opts);
  const requests = (state: string, n: number, site = 'blog') =>
    metrics.get('requests').inc({ site, route: 'default', state, status_class: state === 'shed' ? '5xx' : '2xx' }, n);
  return { clock, metrics, hotKeys, history, requests, collected: () => collected };
}

describe('RingBuffer', () => {
  it.each([
    { capacity: 3, pushed: 0, kept: [] },
    { capacity: 3, pushed: 2, kept: [1, 2] },
    { capacity: 3, pushed: 3, kept: [1, 2, 3] },
    { capacity: 3, pushed: 7, kept: [5, 6, 7] },
    { capacity: 1, pushed: 4, kept: [4] },
  ])('keeps the last $capacity of $pushed items, oldest first', ({ capacity, pushed, kept }) => {
    const ring = new RingBuffer<number>(capacity);
    for (let i = 1; i <= pushed; i++) ring.push(i);
    expect(ring.toArray()).toEqual(kept);
    expect(ring.size).toBe(kept.length);
    expect(ring.last()).toBe(kept[kept.length - 1]);
  });

  it.each([0, -1, 1.5, Number.NaN])('refuses capacity %s', (capacity) => {
    expect(() => new RingBuffer(capacity)).toThrow(/capacity/);
  });
});

describe('computeRate', () => {
  it.each([
    { previous: 10, current: 30, spanMs: 1000, rate: 20, why: 'increase over one second' },
    { previous: 10, current: 30, spanMs: 2000, rate: 10, why: 'increase over two seconds' },
    { previous: 50, current: 5, spanMs: 1000, rate: 5, why: 'a reset counts the whole new value' },
    { previous: 7, current: 7, spanMs: 1000, rate: 0, why: 'no change' },
    { previous: 1, current: 9, spanMs: 0, rate: 0, why: 'no time passed' },
  ])('$why: $previous -> $current in $spanMs ms = $rate/s', ({ previous, current, spanMs, rate }) => {
    expect(computeRate(previous, current, spanMs)).toBe(rate);
  });
});

describe('StatusHistory', () => {
  it('needs two readings before it has a rate, but reports totals from the first', async () => {
    const t = setup();
    t.requests('hit', 4);
    await t.history.sample();
    const snap = t.history.snapshot();
    expect(snap.samples).toEqual([]);
    expect(snap.totals.requests.hit).toBe(4);
    expect(snap.totals.requests.miss).toBe(0);
  });

  it('tells refusals by admission (503) from one client rate-limited (429)', async () => {
    const t = setup();
    await t.history.sample();
    t.clock.advance(1_000);
    t.requests('shed', 4); // 5xx: admission
    t.metrics.get('requests').inc({ site: 'blog', route: 'default', state: 'shed', status_class: '4xx' }, 6); // 429s
    await t.history.sample();
    const [s] = t.history.snapshot().samples;
    expect(s!.shedPerSecond).toBe(4);
    expect(s!.rateLimitedPerSecond).toBe(6);
    expect(t.history.snapshot().totals).toMatchObject({ shed: 4, rateLimited: 6 });
  });

  it('turns counter increases into per-second rates by cache state, every state present', async () => {
    const t = setup();
    t.requests('hit', 100);
    await t.history.sample();
    t.clock.advance(2_000);
    t.requests('hit', 20);
    t.requests('hit', 10, 'shop');
    t.requests('miss', 4);
    t.requests('shed', 6);
    t.requests('stale', 2);
    await t.history.sample();
    const [s] = t.history.snapshot().samples;
    expect(s).toBeDefined();
    expect(s!.spanMs).toBe(2_000);
    expect(s!.requestsPerSecond).toMatchObject({ hit: 15, miss: 2, shed: 3, stale: 1, bypass: 0 });
    expect(Object.keys(s!.requestsPerSecond).sort()).toEqual([...CACHE_STATES].sort());
    expect(s!.shedPerSecond).toBe(3);
    expect(s!.stalePerSecond).toBe(1);
    expect(t.history.snapshot().totals).toMatchObject({ shed: 6, stale: 2 });
  });

  it('takes no sample when the clock has not moved', async () => {
    const t = setup();
    await t.history.sample();
    t.requests('hit', 5);
    await t.history.sample();
    expect(t.history.snapshot().samples).toHaveLength(0);
    t.clock.advance(1_000);
    await t.history.sample();
    expect(t.history.snapshot().samples[0]!.requestsPerSecond.hit).toBe(5);
  });

  it('keeps windowMs / intervalMs samples, oldest first', async () => {
    const t = setup({ intervalMs: 1_000, windowMs: 5_000 });
    await t.history.sample();
    for (let i = 1; i <= 8; i++) {
      t.clock.advance(1_000);
      t.requests('hit', i);
      await t.history.sample();
    }
    const samples = t.history.snapshot().samples;
    expect(samples.map((s) => s.requestsPerSecond.hit)).toEqual([4, 5, 6, 7, 8]);
    expect(samples.every((s, i) => i === 0 || s.at > samples[i - 1]!.at)).toBe(true);
  });

  it('reads origin in-flight, limit, queue, health and circuit from the gauges, after publishing them', async () => {
    const t = setup();
    const a = { site: 'blog', origin: 'a' };
    const b = { site: 'blog', origin: 'b' };
    t.metrics.get('originInflight').set(a, 3);
    t.metrics.get('originLimit').set(a, 8);
    t.metrics.get('queueLength').set(a, 2);
    t.metrics.get('originHealthy').set(a, 1);
    t.metrics.get('circuitState').set(a, 0);
    t.metrics.get('originHealthy').set(b, 0);
    t.metrics.get('circuitState').set(b, 2);
    await t.history.sample();
    t.clock.advance(1_000);
    t.metrics.get('circuitState').set(a, 1);
    await t.history.sample();
    expect(t.collected()).toBe(2);
    const snap = t.history.snapshot();
    expect(snap.origins).toEqual([
      { site: 'blog', origin: 'a', inflight: 3, limit: 8, queue: 2, healthy: true, circuit: 'half_open' },
      { site: 'blog', origin: 'b', inflight: 0, limit: 0, queue: 0, healthy: false, circuit: 'open' },
    ]);
    expect(snap.samples[0]!.origins).toEqual(snap.origins);
  });

  it('lists the hottest keys and halves their counts every hotKeyDecayMs', async () => {
    const t = setup({ hotKeyDecayMs: 2_000, hotKeyRows: 2 });
    for (let i = 0; i < 8; i++) t.hotKeys.note('blog', '/hot', 'hit');
    for (let i = 0; i < 3; i++) t.hotKeys.note('blog', '/warm', 'miss');
    t.hotKeys.note('blog', '/cold', 'miss');
    await t.history.sample();
    expect(t.history.snapshot().hotKeys.map((r) => [r.path, r.count])).toEqual([
      ['/hot', 8],
      ['/warm', 3],
    ]);
    t.clock.advance(1_000);
    await t.history.sample();
    expect(t.history.snapshot().hotKeys[0]!.count).toBe(8);
    t.clock.advance(1_000);
    await t.history.sample();
    expect(t.history.snapshot().hotKeys.map((r) => [r.path, r.count])).toEqual([
      ['/hot', 4],
      ['/warm', 1],
    ]);
  });

  it('shares one sample between overlapping calls', async () => {
    const t = setup();
    await Promise.all([t.history.sample(), t.history.sample(), t.history.sample()]);
    expect(t.collected()).toBe(1);
  });

  it('samples on start and stops sampling on stop', async () => {
    const t = setup({ intervalMs: 10 });
    t.history.start();
    t.history.stop();
    await t.history.sample();
    const after = t.collected();
    expect(after).toBeGreaterThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(t.collected()).toBe(after);
  });

  it.each([
    { opts: { intervalMs: 0 }, error: /intervalMs/ },
    { opts: { intervalMs: 1_000, windowMs: 500 }, error: /windowMs/ },
  ])('refuses $opts', ({ opts, error }) => {
    const t = setup();
    expect(() => new StatusHistory({ metrics: t.metrics, hotKeys: t.hotKeys, clock: t.clock, collectGauges: () => {} }, opts)).toThrow(error);
  });
});
