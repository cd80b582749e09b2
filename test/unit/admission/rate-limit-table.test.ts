import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { RateLimitTable } from '../../../src/admission/rate-limit-table.js';
import type { RateLimitConfig, SiteConfig } from '../../../src/config/schema.js';

function sites(rateLimit: Partial<RateLimitConfig>): SiteConfig[] {
  return [{ name: 's', routes: [], rateLimit: { enabled: true, ratePerSecond: 0.1, burst: 6, ...rateLimit } } as unknown as SiteConfig];
}

describe('RateLimitTable across reloads', () => {
  const client = () => '192.0.2.1';
  const takes = (table: RateLimitTable, n: number) => Array.from({ length: n }, () => table.take('s', '_default', client) === undefined);

  it('keeps every bucket through a reload that does not change the limit', () => {
    const table = new RateLimitTable(new ManualClock(0));
    table.configure(sites({}));
    expect(takes(table, 7)).toEqual([true, true, true, true, true, true, false]);
    table.configure(sites({}));
    expect(takes(table, 1)).toEqual([false]);
  });

  it('carries buckets over when the burst or the rate changes: tightening a limit hands nobody a fresh burst (config-edit trial)', () => {
    const clock = new ManualClock(0);
    const table = new RateLimitTable(clock);
    table.configure(sites({}));
    expect(takes(table, 7).at(-1)).toBe(false); // empty
    table.configure(sites({ burst: 3 }));
    expect(takes(table, 1)).toEqual([false]);
    table.configure(sites({ burst: 7 }));
    expect(takes(table, 1)).toEqual([false]);
    // What a client had is capped at the new burst: 5 left of 6, then a burst of 2.
    const other = () => '192.0.2.9';
    table.configure(sites({ burst: 6, ratePerSecond: 0.1 }));
    expect(table.take('s', '_default', other)).toBeUndefined();
    table.configure(sites({ burst: 2, ratePerSecond: 0.1 }));
    expect([0, 1, 2].map(() => table.take('s', '_default', other) === undefined)).toEqual([true, true, false]);
    // Refill goes on at the new rate.
    table.configure(sites({ burst: 2, ratePerSecond: 1 }));
    clock.advance(1_000);
    expect(takes(table, 2)).toEqual([true, false]);
  });

  it('starts fresh buckets when the key header changes (the keys name other clients)', () => {
    const table = new RateLimitTable(new ManualClock(0));
    table.configure(sites({}));
    expect(takes(table, 7).at(-1)).toBe(false);
    table.configure(sites({ keyHeader: 'x-api-key' }));
    expect(takes(table, 1)).toEqual([true]);
  });
});
