import { describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { ANSWERING_RENEWALS, Inflight, MAX_HIT_FOR_PASS_MS } from '../../../src/collapse/inflight.js';

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

  it('counts only the waiters still waiting: one that left, or gave up at its deadline, frees its place (attacker trial)', async () => {
    const f = new Inflight<string>({ maxWaiters: 2, clock: new ManualClock() });
    f.join('k', 1000);
    const a = f.join('k', 1000);
    const b = f.join('k', 5);
    expect(f.join('k', 1000).role).toBe('overflow');
    if (a.role === 'waiter') {
      a.leave();
      a.leave(); // once only
    }
    expect(f.join('k', 1000).role).toBe('waiter'); // a's place
    expect(f.join('k', 1000).role).toBe('overflow');
    expect(b.role === 'waiter' && (await b.result)).toBe('timeout');
    expect(f.join('k', 1000).role).toBe('waiter'); // b's place
  });

  it('calls the leader\'s abandon when its client has gone and no waiter is left, not before', () => {
    const f = new Inflight<string>({ maxWaiters: 10, clock: new ManualClock() });
    const alone = f.join('alone', 1000);
    const abandonAlone = vi.fn();
    if (alone.role === 'leader') alone.left(abandonAlone);
    expect(abandonAlone).toHaveBeenCalledTimes(1);

    const leader = f.join('k', 1000);
    const w1 = f.join('k', 1000);
    const w2 = f.join('k', 1000);
    const abandon = vi.fn();
    if (leader.role === 'leader') leader.left(abandon);
    expect(abandon).not.toHaveBeenCalled();
    if (w1.role === 'waiter') w1.leave();
    expect(abandon).not.toHaveBeenCalled();
    if (w2.role === 'waiter') w2.leave();
    expect(abandon).toHaveBeenCalledTimes(1);

    // Settled: nothing is abandoned any more.
    const settled = f.join('s', 1000);
    const late = vi.fn();
    if (settled.role === 'leader') {
      settled.settle('done');
      settled.left(late);
    }
    expect(late).not.toHaveBeenCalled();
  });

  it('lets a waiter give up at its deadline', async () => {
    const f = new Inflight<string>({ maxWaiters: 10, clock: new ManualClock() });
    f.join('k', 1000);
    const w = f.join('k', 5);
    expect(w.role === 'waiter' && (await w.result)).toBe('timeout');
  });

  it('while its fill reads a body of known length, a waiter waits up to ANSWERING_RENEWALS more deadlines; asked again, its deadline holds', async () => {
    vi.useFakeTimers();
    try {
      const f = new Inflight<string>({ maxWaiters: 10, clock: new ManualClock() });
      const leader = f.join('k', 0);
      const w = f.join('k', 100);
      let outcome: string | undefined;
      if (w.role === 'waiter') void w.result.then((r) => (outcome = r));
      f.setAnswering('k', true);
      await vi.advanceTimersByTimeAsync(100 * (1 + ANSWERING_RENEWALS) - 1);
      expect(outcome).toBeUndefined();
      await vi.advanceTimersByTimeAsync(1);
      expect(outcome).toBe('timeout');
      // Another waiter, whose fill asks again (not answering): gone at its own deadline.
      const again = f.join('k', 100);
      let second: string | undefined;
      if (again.role === 'waiter') void again.result.then((r) => (second = r));
      f.setAnswering('k', false);
      await vi.advanceTimersByTimeAsync(100);
      expect(second).toBe('timeout');
      if (leader.role === 'leader') leader.settle('done');
    } finally {
      vi.useRealTimers();
    }
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

  it('doubles a key\'s hit-for-pass mark each time its next fill is uncacheable again, up to 120 s, and starts over after a stored answer or a quiet spell (new-user trial: Redmine\'s private pages gathered their crowd on one fill every 5 s)', () => {
    const clock = new ManualClock();
    const f = new Inflight<string>({ maxWaiters: 10, clock });
    const marks: number[] = [];
    for (let i = 0; i < 8; i++) {
      marks.push(f.markHitForPass('page', 5000));
      clock.advance(marks.at(-1)!); // the mark runs out; the next fill answers uncacheable again at once
      expect(f.isHitForPass('page')).toBe(false);
    }
    expect(marks).toEqual([5000, 10_000, 20_000, 40_000, 80_000, 120_000, 120_000, 120_000]);
    expect(MAX_HIT_FOR_PASS_MS).toBe(120_000);
    // A storable answer: the next uncacheable one is marked for the configured time again.
    f.clearHitForPass('page');
    expect(f.markHitForPass('page', 5000)).toBe(5000);
    // Uncacheable again long after its mark ran out (a page asked now and then): from the start.
    clock.advance(5000 + 5000);
    expect(f.markHitForPass('page', 5000)).toBe(5000);
    clock.advance(5000 + 4999);
    expect(f.markHitForPass('page', 5000)).toBe(10_000);
    // A page slower than its mark: judged by when the fill that found it uncacheable began
    // (failure-day trial: a 5 s report's fills all ended past the window, and it never grew).
    expect(f.markHitForPass('report', 5000)).toBe(5000);
    clock.advance(5100);
    const began = clock.now(); // the first fill after the mark
    clock.advance(5200); // takes 5.2 s: it ends 10.3 s after the mark was set
    expect(f.markHitForPass('report', 5000, true, began)).toBe(10_000);
    clock.advance(10_000 + 20);
    const next = clock.now();
    clock.advance(10_500); // past 2 x 10 s by its end
    expect(f.markHitForPass('report', 5000, true, next)).toBe(20_000);
    // A configured time above the cap is kept as it is; 0 marks nothing.
    expect(f.markHitForPass('long', 300_000)).toBe(300_000);
    clock.advance(300_000);
    expect(f.markHitForPass('long', 300_000)).toBe(300_000);
    expect(f.markHitForPass('none', 0)).toBe(0);
    // Not grown when told so (a redirect, another status: maybe about the request).
    expect(f.markHitForPass('redirect', 5000, false)).toBe(5000);
    clock.advance(5000);
    expect(f.markHitForPass('redirect', 5000, false)).toBe(5000);
    clock.advance(5000);
    expect(f.markHitForPass('redirect', 5000)).toBe(10_000);
    expect(f.isHitForPass('none')).toBe(false);
  });
});
