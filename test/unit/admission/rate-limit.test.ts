import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { RateLimiter } from '../../../src/admission/rate-limit.js';

describe('RateLimiter', () => {
  it('allows a burst, then refuses with the time until the next token', () => {
    const clock = new ManualClock(0);
    const rl = new RateLimiter({ ratePerSecond: 2, burst: 3, clock });
    expect([1, 2, 3].map(() => rl.take('a'))).toEqual([
      { allowed: true, retryAfterSeconds: 0, remaining: 2 },
      { allowed: true, retryAfterSeconds: 0, remaining: 1 },
      { allowed: true, retryAfterSeconds: 0, remaining: 0 },
    ]);
    expect(rl.take('a')).toEqual({ allowed: false, retryAfterSeconds: 1, remaining: 0 });
  });

  it.each([
    { waitMs: 499, allowed: false },
    { waitMs: 500, allowed: true }, // 2 tokens/s: one token after 500 ms
  ])('refills at ratePerSecond: after $waitMs ms allowed=$allowed', ({ waitMs, allowed }) => {
    const clock = new ManualClock(0);
    const rl = new RateLimiter({ ratePerSecond: 2, burst: 1, clock });
    rl.take('a');
    clock.advance(waitMs);
    expect(rl.take('a').allowed).toBe(allowed);
  });

  it('never refills past the burst', () => {
    const clock = new ManualClock(0);
    const rl = new RateLimiter({ ratePerSecond: 100, burst: 2, clock });
    rl.take('a');
    clock.advance(60_000);
    expect([rl.take('a').allowed, rl.take('a').allowed, rl.take('a').allowed]).toEqual([true, true, false]);
  });

  it('answers Retry-After from the deficit and the rate for slow buckets', () => {
    const clock = new ManualClock(0);
    const rl = new RateLimiter({ ratePerSecond: 0.1, burst: 1, clock }); // one token per 10 s
    rl.take('a');
    clock.advance(2_500);
    expect(rl.take('a')).toEqual({ allowed: false, retryAfterSeconds: 8, remaining: 0 });
  });

  it('keeps clients apart', () => {
    const rl = new RateLimiter({ ratePerSecond: 1, burst: 1, clock: new ManualClock(0) });
    expect([rl.take('a').allowed, rl.take('a').allowed, rl.take('b').allowed]).toEqual([true, false, true]);
  });

  it('stays bounded under a flood of distinct keys, keeping the most recent', () => {
    const clock = new ManualClock(0);
    const rl = new RateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 1000, clock });
    rl.take('regular');
    for (let i = 0; i < 50_000; i++) {
      rl.take(`flood-${i}`);
      if (i % 100 === 0) rl.take('regular'); // a client seen often stays in the table
    }
    expect(rl.size).toBe(1000);
    expect(rl.take('regular').allowed).toBe(false);
  });

  it.each([
    [{ ratePerSecond: 0, burst: 1 }, /ratePerSecond/],
    [{ ratePerSecond: 1, burst: 0 }, /burst/],
    [{ ratePerSecond: 1, burst: 1, maxKeys: 0 }, /maxKeys/],
  ])('rejects bad options naming the option (%o)', (opts, message) => {
    expect(() => new RateLimiter({ ...opts, clock: new ManualClock(0) })).toThrow(message);
  });
});
