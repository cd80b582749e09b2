import { describe, expect, it } from 'vitest';
import { computeRetryAfterSeconds, retryAfterFromDrain } from '../../../src/admission/retry-after.js';

const lowest = () => 0;
const highest = () => 0.999999;

describe('computeRetryAfterSeconds', () => {
  it.each([
    // queue / rate = base; jitter spread 0 .. floor(base / 2) + 1
    { what: 'time to drain the queue ahead', queueLength: 50, rate: 10, random: lowest, expected: 5 },
    { what: 'the same with the largest jitter (+50 % + 1 s)', queueLength: 50, rate: 10, random: highest, expected: 8 },
    { what: 'a partial second rounds up', queueLength: 11, rate: 10, random: lowest, expected: 2 },
    { what: 'an empty queue gives the minimum', queueLength: 0, rate: 10, random: lowest, expected: 1 },
    { what: 'an empty queue still spreads clients over min and min + 1', queueLength: 0, rate: 10, random: highest, expected: 2 },
    { what: 'never above the maximum', queueLength: 10_000, rate: 1, random: highest, expected: 60 },
    { what: 'no measured drain rate with a queue: the fallback (5 s)', queueLength: 10, rate: 0, random: lowest, expected: 5 },
    { what: 'no measured drain rate and no queue: the minimum', queueLength: 0, rate: 0, random: lowest, expected: 1 },
    { what: 'a non-finite rate counts as unmeasured', queueLength: 10, rate: Number.NaN, random: lowest, expected: 5 },
  ])('$what -> $expected s', ({ queueLength, rate, random, expected }) => {
    expect(
      computeRetryAfterSeconds({ queueLength, drainRatePerSecond: rate, minSeconds: 1, maxSeconds: 60, random }),
    ).toBe(expected);
  });

  it('raises answers below minSeconds to it', () => {
    expect(computeRetryAfterSeconds({ queueLength: 1, drainRatePerSecond: 100, minSeconds: 3, maxSeconds: 60, random: lowest })).toBe(3);
  });

  it('spreads a crowd refused at the same moment over several whole seconds', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++)
      seen.add(computeRetryAfterSeconds({ queueLength: 100, drainRatePerSecond: 10, minSeconds: 1, maxSeconds: 60, random }));
    expect([...seen].sort((a, b) => a - b)).toEqual([10, 11, 12, 13, 14, 15, 16]);
  });
});

describe('retryAfterFromDrain', () => {
  it('reads the queue and drain rate of a site against the configured bounds', () => {
    const bounds = { retryAfterMinSeconds: 2, retryAfterMaxSeconds: 30 };
    expect(retryAfterFromDrain({ queueLength: 50, drainRatePerSecond: 10 }, bounds, lowest)).toBe(5);
    expect(retryAfterFromDrain({ queueLength: 0, drainRatePerSecond: 10 }, bounds, lowest)).toBe(2);
    expect(retryAfterFromDrain({ queueLength: 10_000, drainRatePerSecond: 1 }, bounds, highest)).toBe(30);
  });
});
