import { describe, expect, it } from 'vitest';
import { retryAfterOf } from '../../../src/server/fill.js';

describe("retryAfterOf (the origin's Retry-After passed to a refused fill's waiters)", () => {
  const now = Date.UTC(2026, 11, 4, 12, 0, 0);
  it('reads delta-seconds and an HTTP-date, capped at an hour', () => {
    expect(retryAfterOf('30', now)).toBe(30);
    expect(retryAfterOf(' 120 ', now)).toBe(120);
    expect(retryAfterOf('86400', now)).toBe(3600);
    expect(retryAfterOf(new Date(now + 90_000).toUTCString(), now)).toBe(90);
    expect(retryAfterOf(['45', '60'], now)).toBe(45);
  });
  it('is undefined when absent, unreadable, zero or past', () => {
    for (const v of [undefined, '', 'soon', '-5', '0', '1.5', new Date(now - 5_000).toUTCString()]) expect(retryAfterOf(v, now), String(v)).toBeUndefined();
  });
});
