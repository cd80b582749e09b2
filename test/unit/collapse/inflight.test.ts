import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { Inflight } from '../../../src/collapse/inflight.js';

describe('Inflight', () => {
  it('makes the first caller the leader and wakes every waiter with its result', async () => {
    const f = new Inflight<string>({ maxWaiters: 10, clock: new ManualClock() });
    const leader = f.join('k', 1000);
    expect(leader.role).toBe('leader');
    const waiters = [f.join('k', 1000), f.join('k', 1000)];
    expect(waiters.map((w) => w.role)).toEqual(['waiter', 'waiter']);
    if (leader.role === 'leader') leader.settle('done');
    for (const w of waiters) if (w.role === 'waiter') expect(await w.result).toBe('done');
    expect(f.isInflight('k')).toBe(false);
    expect(f.join('k', 1000).role).toBe('leader');
  });

  it('caps waiters per key', () => {
    const f = new Inflight<string>({ maxWaiters: 1, clock: new ManualClock() });
    f.join('k', 1000);
    expect(f.join('k', 1000).role).toBe('waiter');
    expect(f.join('k', 1000).role).toBe('overflow');
  });

  it('lets a waiter give up at its deadline', async () => {
    const f = new Inflight<string>({ maxWaiters: 10, clock: new ManualClock() });
    f.join('k', 1000);
    const w = f.join('k', 5);
    expect(w.role === 'waiter' && (await w.result)).toBe('timeout');
  });

  it('keeps hit-for-pass markers until they expire by the clock', () => {
    const clock = new ManualClock();
    const f = new Inflight<string>({ maxWaiters: 10, clock });
    f.markHitForPass('k', 5000);
    expect(f.isHitForPass('k')).toBe(true);
    clock.advance(4999);
    expect(f.isHitForPass('k')).toBe(true);
    clock.advance(1);
    expect(f.isHitForPass('k')).toBe(false);
  });
});
