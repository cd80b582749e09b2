import { describe, expect, it } from 'vitest';
import { DAY_MS, DEFAULT_BACKOFF, backoffDelay, renewalTime } from '../../../../src/tls/acme/renewal.js';

describe('renewalTime', () => {
  const t0 = 1_700_000_000_000;

  it('renews a 90-day certificate 30 days before notAfter', () => {
    expect(renewalTime(t0, t0 + 90 * DAY_MS)).toBe(t0 + 60 * DAY_MS);
  });

  it('renews a long certificate 30 days before notAfter (the window is not a third of five years)', () => {
    expect(renewalTime(t0, t0 + 5 * 365 * DAY_MS)).toBe(t0 + 5 * 365 * DAY_MS - 30 * DAY_MS);
  });

  it('renews a short certificate after two thirds of its lifetime', () => {
    expect(renewalTime(t0, t0 + 6 * DAY_MS)).toBe(t0 + 4 * DAY_MS);
    expect(renewalTime(t0, t0 + 3_600_000)).toBe(t0 + 2_400_000);
  });

  it('honours a configured renewBefore, still capped at a third of the lifetime', () => {
    expect(renewalTime(t0, t0 + 90 * DAY_MS, 10 * DAY_MS)).toBe(t0 + 80 * DAY_MS);
    expect(renewalTime(t0, t0 + 9 * DAY_MS, 10 * DAY_MS)).toBe(t0 + 6 * DAY_MS);
  });

  it('a certificate with notAfter before notBefore is due at notAfter', () => {
    expect(renewalTime(t0, t0 - 1)).toBe(t0 - 1);
  });
});

describe('backoffDelay', () => {
  const policy = { initialMs: 1_000, maxMs: 60_000, jitter: 0.5 };

  it('doubles from initialMs per consecutive failure (no jitter drawn)', () => {
    const none = () => 0;
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, policy, none))).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
  });

  it('is bounded by maxMs, even after very many failures', () => {
    const none = () => 0;
    expect(backoffDelay(7, policy, none)).toBe(60_000);
    expect(backoffDelay(10_000, policy, none)).toBe(60_000);
    expect(backoffDelay(Number.MAX_SAFE_INTEGER, DEFAULT_BACKOFF, none)).toBe(DEFAULT_BACKOFF.maxMs);
  });

  it('takes off up to `jitter` of the delay, by the random draw', () => {
    expect(backoffDelay(3, policy, () => 0.5)).toBe(3_000);
    expect(backoffDelay(3, policy, () => 0.999_999)).toBe(2_000);
    expect(backoffDelay(3, { ...policy, jitter: 0 }, () => 0.9)).toBe(4_000);
  });

  it('spreads many instances that failed together', () => {
    let seed = 42;
    const rand = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4, policy, rand)));
    expect(delays.size).toBeGreaterThan(40);
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(4_000);
      expect(d).toBeLessThanOrEqual(8_000);
    }
  });

  it('treats 0 or fractional failure counts as the first failure', () => {
    expect(backoffDelay(0, policy, () => 0)).toBe(1_000);
    expect(backoffDelay(1.7, policy, () => 0)).toBe(1_000);
  });
});
