import { describe, expect, it } from 'vitest';
import { AimdLimit } from '../../../../src/admission/limits/aimd.js';
import { FixedLimit } from '../../../../src/admission/limits/fixed.js';
import { Gradient2Limit } from '../../../../src/admission/limits/gradient2.js';
import { makeLimit } from '../../../../src/admission/limits/make-limit.js';
import { between, simulate } from './origin-model.js';

describe('AimdLimit', () => {
  it.each([
    { what: 'adds 1 / limit when the limit is in use', limit: 1, sample: { rttMs: 50, inflight: 1, dropped: false }, next: 2 },
    { what: 'holds when app-limited (inflight < limit / 2)', limit: 10, sample: { rttMs: 50, inflight: 4, dropped: false }, next: 10 },
    { what: 'backs off x0.9 on a drop', limit: 20, sample: { rttMs: 50, inflight: 20, dropped: true }, next: 18 },
    { what: 'backs off x0.9 on an RTT above the timeout', limit: 20, sample: { rttMs: 2001, inflight: 20, dropped: false }, next: 18 },
    { what: 'never goes below min', limit: 1, sample: { rttMs: 50, inflight: 1, dropped: true }, next: 1 },
    { what: 'never goes above max', limit: 30, sample: { rttMs: 50, inflight: 30, dropped: false }, next: 30 },
  ])('$what', ({ limit, sample, next }) => {
    const aimd = new AimdLimit({ initial: limit, min: 1, max: 30 });
    aimd.onSample(sample, 0);
    expect(aimd.current).toBe(next);
  });

  it('grows by about one per round trip: a limit of 10 needs 10-11 in-use samples to reach 11', () => {
    const aimd = new AimdLimit({ initial: 10, min: 1, max: 30 });
    for (let i = 0; i < 9; i++) aimd.onSample({ rttMs: 50, inflight: 10, dropped: false }, i);
    expect(aimd.current).toBe(10);
    aimd.onSample({ rttMs: 50, inflight: 10, dropped: false }, 10);
    aimd.onSample({ rttMs: 50, inflight: 10, dropped: false }, 11);
    expect(aimd.current).toBe(11);
  });

  it('keeps a model origin busy with its in-flight bounded by the latency timeout', () => {
    const C = 8;
    const S = 50;
    // Timeout at 1.5 x the service time: backs off once the origin queue adds half an RTT.
    const aimd = new AimdLimit({ initial: 8, min: 2, max: 256, timeoutMs: 75 });
    const trace = simulate({
      limit: aimd,
      jitter: 0,
      phases: [
        { untilMs: 5_000, capacity: C, serviceMs: S, demand: Infinity },
        { untilMs: 15_000, capacity: C, serviceMs: S, demand: Infinity },
      ],
    });
    expect(trace.utilisation[1]).toBeGreaterThanOrEqual(0.9);
    expect(trace.maxInflight[1]).toBeLessThanOrEqual(2 * C);
    const limits = between(trace, 5_000, 15_000).map((p) => p.limit);
    expect(Math.min(...limits)).toBeGreaterThanOrEqual(C * 0.75);
  });

  it('rejects a backoff ratio outside [0.5, 1)', () => {
    expect(() => new AimdLimit({ initial: 4, min: 1, max: 8, backoffRatio: 1 })).toThrow(/backoffRatio/);
  });
});

describe('FixedLimit', () => {
  it('ignores every sample', () => {
    const fixed = new FixedLimit(12);
    fixed.onSample({ rttMs: 1e6, inflight: 12, dropped: true }, 0);
    fixed.onSample({ rttMs: 1, inflight: 12, dropped: false }, 1);
    expect(fixed.current).toBe(12);
  });
  it('rejects a limit below 1', () => {
    expect(() => new FixedLimit(0)).toThrow(/limit/);
  });
});

describe('makeLimit', () => {
  it.each([
    ['fixed', FixedLimit],
    ['aimd', AimdLimit],
    ['gradient2', Gradient2Limit],
  ] as const)('builds %s from the config, starting at the initial limit', (algorithm, type) => {
    const limit = makeLimit({ algorithm, initial: 6, min: 2, max: 50 });
    expect(limit).toBeInstanceOf(type);
    expect(limit.current).toBe(6);
  });
});

describe('AimdLimit backoff pacing', () => {
  it('backs off once per round trip: drops from requests started before the last backoff are ignored', () => {
    const aimd = new AimdLimit({ initial: 20, min: 2, max: 30 });
    aimd.onSample({ rttMs: 50, inflight: 20, dropped: true }, 1000); // backoff at 1000 -> 18
    aimd.onSample({ rttMs: 50, inflight: 20, dropped: true }, 1010); // started at 960: old news
    expect(aimd.current).toBe(18);
    aimd.onSample({ rttMs: 50, inflight: 18, dropped: true }, 1060); // started at 1010: counts
    expect(aimd.current).toBe(16);
  });
});

describe('setBounds (a reloaded min/max)', () => {
  it('keeps the learned limit within the new bounds, for AIMD and Gradient2', () => {
    const aimd = new AimdLimit({ initial: 30, min: 2, max: 256 });
    aimd.setBounds(2, 400);
    expect(aimd.current).toBe(30);
    aimd.setBounds(2, 12);
    expect(aimd.current).toBe(12);
    aimd.setBounds(16, 64);
    expect(aimd.current).toBe(16);
    expect(() => aimd.setBounds(10, 5)).toThrow(/max/);
    const g2 = new Gradient2Limit({ initial: 30, min: 2, max: 256 });
    g2.setBounds(2, 400);
    expect(g2.current).toBe(30);
    g2.setBounds(2, 12);
    expect(g2.current).toBe(12);
    g2.setBounds(20, 64);
    expect(g2.current).toBe(20);
  });
});
