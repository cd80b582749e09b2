import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { FixedLimit } from '../../../src/admission/limits/fixed.js';
import type { Limit, LimitSample } from '../../../src/admission/limits/limit.js';
import { endpointOf, latencyClassOf, Limiter, pageOf, MAX_LATENCY_CLASSES, type AcquireResult, type LimiterOptions, type Permit } from '../../../src/admission/limiter.js';
import { OUTGROWN_MEMORY_MS, type Outgrowth } from '../../../src/admission/outgrowth.js';
import { ManualScheduler } from './manual-scheduler.js';

/** A limit the test sets by hand, recording the samples it is fed. */
class ScriptedLimit implements Limit {
  samples: (LimitSample & { now: number })[] = [];
  constructor(public current: number) {}
  onSample(s: LimitSample, now: number): void {
    this.samples.push({ ...s, now });
  }
}

/** A learned limit that may or may not have seen the origin queue (Limit.showsQueueing). */
class LearnedLimit extends ScriptedLimit {
  queueing = false;
  /** Strong evidence (Limit.showsSustainedQueueing): most recent windows queued. */
  sustained = false;
  cold = false;
  showsQueueing(): boolean {
    return this.queueing;
  }
  showsSustainedQueueing(): boolean {
    return this.sustained;
  }
  isColdStart(): boolean {
    return this.cold;
  }
}

const queue = { maxLength: 100, deadlineMs: 500, codelTargetMs: 20, codelIntervalMs: 100 };

function setup(opts: Partial<LimiterOptions> & { limitN?: number } = {}) {
  const clock = new ManualClock(0);
  const scheduler = new ManualScheduler(clock);
  const limit = opts.limit ?? new ScriptedLimit(opts.limitN ?? 2);
  const limiter = new Limiter({ classes: 3, queue, clock, scheduler, ...opts, limit });
  /** Acquire and record the outcome when it settles. */
  const outcomes: { name: string; result: AcquireResult }[] = [];
  const request = (name: string, priority = 1, extra: { deadlineAt?: number; signal?: AbortSignal; servesCrowd?: boolean; fixedDeadline?: boolean; latencyClass?: string; path?: string } = {}) => {
    const r = limiter.acquire({ priority, ...extra });
    if (r instanceof Promise) void r.then((result) => outcomes.push({ name, result }));
    else outcomes.push({ name, result: r });
    return r;
  };
  const flush = () => new Promise<void>((resolve) => setImmediate(resolve));
  const granted = (name: string): Permit => {
    const o = outcomes.find((x) => x.name === name);
    if (!o || !o.result.ok) throw new Error(`${name} has no permit: ${JSON.stringify(o?.result)}`);
    return o.result.permit;
  };
  /** Teaches the limiter its typical round trip: `n` permits in turn, each held `rttMs` ms, then released. */
  const teach = async (rttMs: number, n = 1): Promise<void> => {
    for (let i = 0; i < n; i++) {
      request(`warm${i}`);
      await flush();
      clock.advance(rttMs);
      granted(`warm${i}`).release('success');
    }
  };
  return { clock, scheduler, limit, limiter, outcomes, request, flush, granted, teach };
}

/** Holds one permit `rttMs` of class `cls` and releases it (inflight 1 when nothing else is out: a no-load sample). */
async function one(t: ReturnType<typeof setup>, cls: string | undefined, rttMs: number): Promise<void> {
  const r = t.limiter.acquire({ priority: 1 });
  const result = r instanceof Promise ? await r : r;
  if (!result.ok) throw new Error('refused');
  t.clock.advance(rttMs);
  result.permit.release('success', cls);
}

describe('Limiter', () => {
  it('grants synchronously while permits are free, then queues', async () => {
    const { limiter, request, outcomes, flush } = setup({ limitN: 2 });
    const a = request('a');
    const b = request('b');
    expect(a).not.toBeInstanceOf(Promise);
    expect(b).not.toBeInstanceOf(Promise);
    expect(request('c')).toBeInstanceOf(Promise);
    await flush();
    expect(outcomes.map((o) => [o.name, o.result.ok])).toEqual([
      ['a', true],
      ['b', true],
    ]);
    expect(limiter.inflight).toBe(2);
    expect(limiter.queueLength).toBe(1);
  });

  it('hands a released permit straight to the next waiter (FIFO), with the time it waited', async () => {
    const { limiter, request, outcomes, flush, granted, scheduler } = setup({ limitN: 1 });
    request('a');
    request('b');
    request('c');
    scheduler.advance(15);
    granted('a').release('success');
    expect(limiter.inflight).toBe(1);
    expect(limiter.queueLength).toBe(1);
    await flush();
    expect(outcomes[1]).toMatchObject({ name: 'b', result: { ok: true, waitedMs: 15 } });
    granted('b').release('success');
    await flush();
    expect(outcomes.map((o) => o.name)).toEqual(['a', 'b', 'c']);
  });

  it.each([
    { kind: 'success' as const, samples: [{ rttMs: 40, inflight: 1, originInflight: 1, peerInflight: 0, waiting: 0, dropped: false, hostDelayMs: 0 }] },
    { kind: 'dropped' as const, samples: [{ rttMs: 40, inflight: 1, originInflight: 1, peerInflight: 0, waiting: 0, dropped: true, hostDelayMs: 0 }] },
    { kind: 'ignore' as const, samples: [] },
  ])('release($kind) feeds the limit $samples.length sample(s), once however often it is called', ({ kind, samples }) => {
    const { limiter, limit, clock } = setup({ limitN: 3 });
    const permit = limiter.tryAcquire()!;
    clock.advance(40);
    permit.release(kind);
    permit.release(kind);
    permit.release('success');
    expect(limiter.inflight).toBe(0);
    expect((limit as ScriptedLimit).samples.map(({ now: _now, ...s }) => s)).toEqual(samples);
  });

  it('a second release of the same permit does not let another waiter in', async () => {
    const { limiter, request, granted, flush } = setup({ limitN: 1 });
    request('a');
    request('b');
    request('c');
    granted('a').release('success');
    granted('a').release('success');
    await flush();
    expect(limiter.inflight).toBe(1);
    expect(limiter.queueLength).toBe(1);
  });

  it.each([
    { what: 'the default deadline (queue.deadlineMs)', deadlineAt: undefined, expiresAfter: 500 },
    { what: "the caller's deadlineAt", deadlineAt: 120, expiresAfter: 120 },
  ])('refuses a waiter with reason deadline at $what', async ({ deadlineAt, expiresAfter }) => {
    const { limiter, request, outcomes, flush, scheduler } = setup({ limitN: 1 });
    request('a');
    request('b', 1, deadlineAt === undefined ? {} : { deadlineAt });
    scheduler.advance(expiresAfter - 1);
    await flush();
    expect(outcomes).toHaveLength(1);
    scheduler.advance(1);
    await flush();
    expect(outcomes[1]).toEqual({ name: 'b', result: { ok: false, reason: 'deadline', waitedMs: expiresAfter } });
    expect(limiter.queueLength).toBe(0);
    expect(scheduler.pending).toBe(0);
  });

  it('refuses at once, without a promise, when the deadline has already passed', () => {
    const { request } = setup({ limitN: 1 });
    request('a');
    expect(request('b', 1, { deadlineAt: 0 })).toEqual({ ok: false, reason: 'deadline', waitedMs: 0 });
  });

  it('refuses queue_full synchronously with one shared result object (no allocation on refusal)', () => {
    const { limiter, request } = setup({ limitN: 1, queue: { ...queue, maxLength: 2 } });
    request('a');
    request('b');
    request('c');
    const r1 = request('d');
    const r2 = request('e');
    expect(r1).toEqual({ ok: false, reason: 'queue_full', waitedMs: 0 });
    expect(r2).toBe(r1);
    expect(Object.isFrozen(r1)).toBe(true);
    expect(limiter.queueLength).toBe(2);
  });

  it('with maxLength 0 never queues: fail fast at the limit', () => {
    const { request } = setup({ limitN: 1, queue: { ...queue, maxLength: 0 } });
    expect(request('a')).toMatchObject({ ok: true });
    expect(request('b')).toEqual({ ok: false, reason: 'queue_full', waitedMs: 0 });
  });

  it.each([
    // queued: [name, class] in arrival order; the arrival; who is evicted (or queue_full)
    { queued: [['x', 2], ['y', 2]], arrival: 0, evicted: 'y' },
    { queued: [['x', 1], ['y', 2]], arrival: 0, evicted: 'y' },
    { queued: [['x', 2], ['y', 1]], arrival: 1, evicted: 'x' },
    { queued: [['x', 1], ['y', 1]], arrival: 0, evicted: 'y' },
    { queued: [['x', 1], ['y', 1]], arrival: 1, evicted: undefined },
    { queued: [['x', 0], ['y', 1]], arrival: 2, evicted: undefined },
  ] as { queued: [string, number][]; arrival: number; evicted: string | undefined }[])(
    'when full, an arrival of class $arrival over $queued evicts $evicted',
    async ({ queued, arrival, evicted }) => {
      const { limiter, request, outcomes, flush } = setup({ limitN: 1, queue: { ...queue, maxLength: 2 } });
      request('holder');
      for (const [name, p] of queued) request(name, p);
      const r = request('new', arrival);
      await flush();
      if (evicted === undefined) {
        expect(r).toEqual({ ok: false, reason: 'queue_full', waitedMs: 0 });
      } else {
        expect(r).toBeInstanceOf(Promise);
        expect(outcomes.find((o) => o.name === evicted)?.result).toEqual({ ok: false, reason: 'evicted', waitedMs: 0 });
      }
      expect(limiter.queueLength).toBe(2);
    },
  );

  it('serves the more important class first', async () => {
    const { request, granted, outcomes, flush } = setup({ limitN: 1 });
    request('holder');
    request('low', 2);
    request('mid', 1);
    request('high', 0);
    granted('holder').release('success');
    await flush();
    granted('high').release('success');
    await flush();
    granted('mid').release('success');
    await flush();
    expect(outcomes.map((o) => o.name)).toEqual(['holder', 'high', 'mid', 'low']);
  });

  it('removes an aborted waiter (aborted), and refuses an already-aborted signal at once', async () => {
    const { limiter, request, outcomes, flush, scheduler } = setup({ limitN: 1 });
    request('a');
    const ac = new AbortController();
    request('b', 1, { signal: ac.signal });
    scheduler.advance(7);
    ac.abort();
    await flush();
    expect(outcomes[1]).toEqual({ name: 'b', result: { ok: false, reason: 'aborted', waitedMs: 7 } });
    expect(limiter.queueLength).toBe(0);
    expect(scheduler.pending).toBe(0);
    expect(request('c', 1, { signal: ac.signal })).toEqual({ ok: false, reason: 'aborted', waitedMs: 0 });
  });

  it('under a standing queue, before any round trip is known, serves newest first and cuts old waits (codel), then returns to FIFO once drained', async () => {
    const { limiter, request, granted, outcomes, flush, scheduler } = setup({
      limitN: 1,
      queue: { maxLength: 100, deadlineMs: 10_000, codelTargetMs: 20, codelIntervalMs: 100 },
    });
    request('holder'); // t=0
    request('w1'); // t=0
    scheduler.advance(50);
    request('w2'); // t=50
    scheduler.advance(60);
    // t=110: a whole interval passed and nobody left the queue in under 20 ms: standing queue.
    request('w3');
    expect(limiter.isQueueStanding).toBe(true);
    await flush();
    // w1 had waited past the 100 ms cap already.
    expect(outcomes.find((o) => o.name === 'w1')?.result).toEqual({ ok: false, reason: 'codel', waitedMs: 110 });
    scheduler.advance(10);
    granted('holder').release('ignore'); // no sample: waits are not predictable yet
    await flush();
    expect(outcomes.at(-1)?.name).toBe('w3'); // LIFO: the newest first
    // w2's wait is capped at 50 + 100 = 150 ms instead of its 10 s deadline.
    scheduler.advance(30);
    await flush();
    expect(outcomes.find((o) => o.name === 'w2')?.result).toEqual({ ok: false, reason: 'codel', waitedMs: 100 });
    expect(limiter.isQueueStanding).toBe(false); // drained
    // Back to FIFO.
    request('f1');
    request('f2');
    granted('w3').release('success');
    await flush();
    expect(outcomes.at(-1)?.name).toBe('f1');
  });

  it('a queue that keeps emptying is not a standing queue, however long the busy period', async () => {
    const { limiter, request, granted, flush, scheduler } = setup({ limitN: 1 });
    let holder = 'h0';
    request(holder);
    for (let i = 1; i <= 50; i++) {
      request(`h${i}`);
      scheduler.advance(10); // each waits 10 ms < 20 ms target
      granted(holder).release('success');
      await flush();
      holder = `h${i}`;
      expect(limiter.isQueueStanding).toBe(false);
    }
  });

  it('never exceeds the ceiling, however the learned limit moves', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant('acquire' as const), priority: fc.integer({ min: 0, max: 2 }) }),
            fc.record({ op: fc.constant('release' as const), index: fc.nat(), kind: fc.constantFrom('success', 'dropped', 'ignore') }),
            fc.record({ op: fc.constant('limit' as const), value: fc.integer({ min: 1, max: 20 }) }),
            fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 300 }) }),
          ),
          { maxLength: 200 },
        ),
        (ceiling, ops) => {
          const limit = new ScriptedLimit(4);
          const { limiter, scheduler } = setup({ limit, ceiling, queue: { ...queue, maxLength: 5 } });
          const held: Permit[] = [];
          // Collect permits synchronously: grants inside release() resolve promises we track here.
          const track = (r: Promise<AcquireResult> | AcquireResult) => {
            if (r instanceof Promise) void r.then((x) => x.ok && held.push(x.permit));
            else if (r.ok) held.push(r.permit);
          };
          for (const o of ops) {
            if (o.op === 'acquire') track(limiter.acquire({ priority: o.priority }));
            else if (o.op === 'release' && held.length > 0) held.splice(o.index % held.length, 1)[0]!.release(o.kind as 'success');
            else if (o.op === 'limit') limit.current = o.value;
            else if (o.op === 'advance') scheduler.advance(o.ms);
            if (limiter.inflight > ceiling) return false;
            if (limiter.limit !== Math.min(limit.current, ceiling)) return false;
          }
          return true;
        },
      ),
    );
  });

  it('grants no more than the limit: waiters stay queued while inflight = limit', async () => {
    const { limiter, request, flush } = setup({ limitN: 3 });
    for (let i = 0; i < 10; i++) request(`r${i}`);
    await flush();
    expect(limiter.inflight).toBe(3);
    expect(limiter.queueLength).toBe(7);
    expect(limiter.tryAcquire()).toBeUndefined();
  });

  it('tryAcquire does not jump the queue even when the limit has grown', async () => {
    const limit = new ScriptedLimit(1);
    const { limiter, request, flush } = setup({ limit });
    request('a');
    request('b');
    limit.current = 2;
    expect(limiter.tryAcquire()).toBeUndefined();
    // The next acquire lets the waiter in first, then queues itself behind.
    request('c');
    await flush();
    expect(limiter.inflight).toBe(2);
    expect(limiter.queueLength).toBe(1);
  });

  it('measures the drain rate in permits per second', () => {
    const { limiter, scheduler } = setup({ limit: new FixedLimit(100) });
    expect(limiter.drainRatePerSecond()).toBe(0); // nothing measured yet
    for (let t = 0; t < 5_000; t += 10) {
      limiter.tryAcquire()!.release('success'); // 100 completions per second
      scheduler.advance(10);
    }
    expect(limiter.drainRatePerSecond()).toBeGreaterThan(90);
    expect(limiter.drainRatePerSecond()).toBeLessThan(110);
    scheduler.advance(10_000); // idle: decays toward 0
    expect(limiter.drainRatePerSecond()).toBeLessThan(5);
  });

  it('reports changes to limit, inflight and queue through onChange', async () => {
    const { limiter, request, granted, flush } = setup({ limitN: 1 });
    const seen: [number, number][] = [];
    limiter.onChange = (l) => seen.push([l.inflight, l.queueLength]);
    request('a');
    request('b');
    granted('a').release('success');
    await flush();
    expect(seen).toEqual([
      [1, 0],
      [1, 1],
      [1, 0],
    ]);
  });

  it('lets the important class through while a flood of unimportant requests is shed', async () => {
    // Origin: 4 permits, each request holds its permit 20 ms. Offered: 2 low-priority requests
    // per ms (10x what the origin serves, 0.2 per ms) and 1 high-priority request every 10 ms.
    const { limiter, clock, scheduler, flush } = setup({
      limit: new FixedLimit(4),
      classes: 2,
      queue: { maxLength: 20, deadlineMs: 200, codelTargetMs: 5, codelIntervalMs: 50 },
    });
    const tally = { high: { ok: 0, refused: 0 }, low: { ok: 0, refused: 0 } };
    const onResult = (cls: 'high' | 'low', r: AcquireResult) => {
      if (r.ok) {
        tally[cls].ok++;
        const releaseAt = clock.now() + 20;
        scheduler.setTimeout(() => r.permit.release('success'), releaseAt - clock.now());
      } else tally[cls].refused++;
    };
    for (let t = 0; t < 2_000; t++) {
      for (let i = 0; i < 2; i++) {
        const r = limiter.acquire({ priority: 1 });
        if (r instanceof Promise) void r.then((x) => onResult('low', x));
        else onResult('low', r);
      }
      if (t % 10 === 0) {
        const r = limiter.acquire({ priority: 0 });
        if (r instanceof Promise) void r.then((x) => onResult('high', x));
        else onResult('high', r);
      }
      scheduler.advance(1);
      await flush();
    }
    for (let i = 0; i < 50; i++) {
      scheduler.advance(20); // let the last waiters through and their permits come back
      await flush();
    }
    expect(tally.high.refused).toBe(0);
    expect(tally.high.ok).toBe(200);
    expect(tally.low.refused).toBeGreaterThan(tally.low.ok * 5);
    expect(limiter.inflight).toBe(0);
  });

  it('micro-check: many grant/release and refusal cycles leave the counts exact', () => {
    const { limiter } = setup({ limit: new FixedLimit(1), queue: { ...queue, maxLength: 0 } });
    let refused = 0;
    let first: AcquireResult | undefined;
    for (let i = 0; i < 100_000; i++) {
      const r = limiter.acquire({ priority: 0 }) as AcquireResult;
      const again = limiter.acquire({ priority: 0 }) as AcquireResult;
      if (!again.ok) {
        refused++;
        first ??= again;
        if (again !== first) throw new Error('refusal allocated a new result');
      }
      if (r.ok) r.permit.release('success');
    }
    expect(refused).toBe(100_000);
    expect(limiter.inflight).toBe(0);
    expect(limiter.queueLength).toBe(0);
  });

  it.each([
    [{ ceiling: 0 }, /ceiling/],
    [{ queue: { ...queue, maxLength: -1 } }, /queue.maxLength/],
    [{ queue: { ...queue, deadlineMs: 0 } }, /queue.deadlineMs/],
    [{ classes: 0 }, /classes/],
  ])('rejects bad options naming the option (%o)', (opts, message) => {
    expect(() => setup(opts as Partial<LimiterOptions>)).toThrow(message);
  });
});

describe('Limiter with Gradient2 in front of a model origin under a 50x crowd', () => {
  it('keeps the origin >= 90 % busy with its in-flight within 1.5 C, shedding the excess', async () => {
    const { Gradient2Limit, COLD_START_MS } = await import('../../../src/admission/limits/gradient2.js');
    const C = 8;
    const S = 50;
    const clock = new ManualClock(0);
    const scheduler = new ManualScheduler(clock);
    const limiter = new Limiter({
      limit: new Gradient2Limit({ initial: 8, min: 2, max: 256 }),
      queue: { maxLength: 50, deadlineMs: 500, codelTargetMs: 20, codelIntervalMs: 100 },
      classes: 1,
      clock,
      scheduler,
    });
    // The origin: C slots of S ms, FIFO inside beyond that.
    let serving = 0;
    let busyFrom = 0;
    let busyMs = 0;
    let maxInflight = 0;
    const waiting: Permit[] = [];
    const measureFromMs = 2_000;
    const account = () => {
      const now = clock.now();
      if (now > measureFromMs) busyMs += (Math.min(serving, C) * (now - Math.max(busyFrom, measureFromMs))) / C;
      busyFrom = now;
    };
    const serve = (permit: Permit) => {
      account();
      serving++;
      scheduler.setTimeout(() => {
        account();
        serving--;
        permit.release('success');
        const next = waiting.shift();
        if (next) serve(next);
      }, S);
    };
    const toOrigin = (permit: Permit) => {
      if (serving < C) serve(permit);
      else waiting.push(permit);
      if (clock.now() > measureFromMs) maxInflight = Math.max(maxInflight, serving + waiting.length);
    };
    // Refusals while the limit is still learning (COLD_START_MS), and after.
    const coldRefusals = new Map<string, number>();
    const refusals = new Map<string, number>();
    const onResult = (r: AcquireResult) => {
      if (r.ok) toOrigin(r.permit);
      else {
        const into = clock.now() < COLD_START_MS ? coldRefusals : refusals;
        into.set(r.reason, (into.get(r.reason) ?? 0) + 1);
      }
    };
    // 50 x C / S = 8 requests per ms.
    const endMs = COLD_START_MS + 4_000;
    for (let t = 0; t < endMs; t++) {
      for (let i = 0; i < 8; i++) {
        const r = limiter.acquire({ priority: 0 });
        if (r instanceof Promise) void r.then(onResult);
        else onResult(r);
      }
      scheduler.advance(1);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    account();
    expect(busyMs / (endMs - measureFromMs)).toBeGreaterThanOrEqual(0.9);
    expect(maxInflight).toBeLessThanOrEqual(1.5 * C);
    // Refused at arrival: by the forecast, or at the queue's bound once it is full. While the
    // limit is still learning, waits are bounded by the deadline alone (no CoDel cap), so the
    // queue fills and the bound refuses; once warm, the forecast against the cap does.
    expect((coldRefusals.get('predicted_wait') ?? 0) + (coldRefusals.get('queue_full') ?? 0)).toBeGreaterThan(30_000);
    expect(coldRefusals.get('codel') ?? 0).toBe(0);
    expect(refusals.get('predicted_wait')).toBeGreaterThan(10_000);
    expect((refusals.get('predicted_wait') ?? 0) + (refusals.get('queue_full') ?? 0)).toBeGreaterThan(25_000);
  });
});

describe('Limiter: refusal at arrival', () => {
  it('refuses at once a request the queue ahead cannot serve before its deadline', async () => {
    const { clock, limiter, request, outcomes, flush, granted, teach } = setup({ limitN: 1 });
    await teach(100);
    request('a'); // granted: the permit is free
    const deadlineAt = clock.now() + 150;
    request('b', 1, { deadlineAt }); // 1 ahead-or-self × 100 ms / limit 1 = 100 ms ≤ 150: queued
    const c = request('c', 1, { deadlineAt }); // 2 × 100 ms = 200 ms > 150: refused now
    expect(c).not.toBeInstanceOf(Promise);
    expect(c).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 });
    expect(limiter.queueLength).toBe(1);
    // A more important request is judged on what is ahead of it only.
    const urgent = request('urgent', 0, { deadlineAt });
    expect(urgent).toBeInstanceOf(Promise);
    await flush();
    expect(outcomes.find((o) => o.name === 'b')).toBeUndefined();
  });

  it('refuses at arrival, and caps waits under a standing queue, only while the limit shows the origin queueing', async () => {
    const limit = new LearnedLimit(1);
    const { clock, scheduler, limiter, request, granted, outcomes, flush, teach } = setup({ limit }); // CoDel 20 / 100 ms
    await teach(100); // round trip 100 ms
    request('holder');
    const deadlineAt = clock.now() + 150;
    request('b', 1, { deadlineAt }); // 100 ms <= 150: queued either way
    // 200 ms > 150: refused at once with evidence; without it (a limit still climbing, round
    // trips at their no-load value) it waits for its permit, up to its deadline.
    expect(request('c', 1, { deadlineAt })).toBeInstanceOf(Promise);
    limit.queueing = true;
    expect(request('d', 1, { deadlineAt })).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 });
    expect(limiter.queueLength).toBe(2);

    // The queue stands (waits above 20 ms for 100 ms): with evidence a new arrival is held to
    // the CoDel target (3 x 100 ms / 1 > 20 ms, refused at once, though 300 ms is within its
    // 500 ms deadline); without it, it waits, and is served as the limit grows.
    limit.queueing = false;
    scheduler.advance(120);
    expect(request('e', 1)).toBeInstanceOf(Promise);
    limit.queueing = true;
    expect(request('f', 1)).toMatchObject({ ok: false, reason: 'predicted_wait' });
    limit.queueing = false;
    scheduler.advance(20);
    limit.current = 4; // the limit grew
    granted('holder').release('success');
    await flush();
    for (const name of ['b', 'c', 'e']) expect(outcomes.find((o) => o.name === name)?.result).toMatchObject({ ok: true });
  });

  it('while the limit is still learning (cold start), bounds waits by the deadline alone: no standing-queue cap', async () => {
    const limit = new LearnedLimit(1);
    const { scheduler, limiter, request, outcomes, flush, teach } = setup({ limit }); // CoDel 20 / 100 ms
    await teach(100); // round trip 100 ms
    limit.queueing = true; // evidence the origin queues
    limit.cold = true;
    request('holder');
    request('w1', 1);
    scheduler.advance(120); // waits above the target for an interval: warm, the queue would stand
    // 2 x 100 ms / 1 = 200 ms, and 300 ms: past the CoDel target, within the 500 ms deadline: they wait.
    expect(request('w2', 1)).toBeInstanceOf(Promise);
    expect(request('w3', 1)).toBeInstanceOf(Promise);
    scheduler.advance(150);
    await flush();
    expect(outcomes.filter((o) => !o.result.ok)).toEqual([]); // nothing cut by CoDel either
    expect(limiter.queueLength).toBe(3);
    // Warm, the same queue stands, and a new arrival is held to the CoDel target: 400 ms is
    // within its deadline, not within 20 ms.
    limit.cold = false;
    expect(request('w4', 1)).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  it('before a round trip is measured, caps waits under a standing queue whatever the limit shows (adaptive LIFO)', async () => {
    const { scheduler, request, outcomes, flush } = setup({ limit: new LearnedLimit(1) }); // CoDel 20 / 100 ms
    request('holder'); // never released: no round trip is ever measured
    request('w1', 1);
    scheduler.advance(60);
    request('w1b', 1);
    scheduler.advance(60); // the waits stayed over the target for an interval: the queue stands
    request('w2', 1);
    scheduler.advance(30); // past w2's cap at the CoDel target, before w1b's at the interval
    await flush();
    expect(outcomes.find((o) => o.name === 'w2')?.result).toMatchObject({ ok: false, reason: 'codel' });
    expect(outcomes.find((o) => o.name === 'w1b')).toBeUndefined();
  });

  it('takes an origin that stopped answering (nothing released for two round trips) as evidence too', async () => {
    /** A learned limit whose windows never close: the origin answers nothing. */
    const { clock, scheduler, request, granted, flush, teach } = setup({ limit: new LearnedLimit(1) }); // CoDel 20 / 100 ms
    await teach(100); // round trip 100 ms, the last release
    request('holder'); // never released
    request('w1', 1);
    request('w2', 1);
    // 150 ms after the last release (under 2 round trips): 3 ahead-or-self x 100 ms > 250 ms,
    // but no evidence, so it waits.
    scheduler.advance(150);
    expect(request('early', 1, { deadlineAt: clock.now() + 250 })).toBeInstanceOf(Promise);
    // 300 ms after it: the origin stopped answering, refused at once.
    scheduler.advance(150);
    expect(request('late', 1, { deadlineAt: clock.now() + 250 })).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 });
  });

  it('a burst that takes every permit after a quiet spell is no stalled origin: the permits have had no time to be answered (failure-day trial)', async () => {
    const { clock, scheduler, request, teach } = setup({ limit: new LearnedLimit(1) }); // CoDel 20 / 100 ms
    await teach(100); // round trip 100 ms, the last release
    scheduler.advance(5_000); // a quiet spell: nothing in flight, nothing released
    request('burst'); // takes the only permit now
    request('w1', 1);
    request('w2', 1);
    scheduler.advance(10);
    // 5 s since the last release, but the oldest permit is 10 ms old: no evidence, it waits.
    expect(request('early', 1, { deadlineAt: clock.now() + 250 })).toBeInstanceOf(Promise);
    // Held two round trips with nothing released: the origin stopped answering.
    scheduler.advance(200);
    expect(request('late', 1, { deadlineAt: clock.now() + 250 })).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 });
  });

  it('forecasts with the planning limit while a probe holds the limit down, capped by the ceiling', async () => {
    /** A limit in a no-load probe: 1 permit now, 4 once the probe ends. */
    class ProbingLimit extends ScriptedLimit {
      planning = 4;
    }
    const forecast = async (ceiling?: number) => {
      const { clock, request, granted, flush, teach } = setup({ limit: new ProbingLimit(1), ...(ceiling ? { ceiling } : {}) });
      await teach(100); // round trip 100 ms
      request('holder');
      const deadlineAt = clock.now() + 150;
      // 3 ahead-or-self × 100 ms / 4 = 75 ms ≤ 150 ms: queued, not refused on the probe's 1 permit.
      request('w1', 1, { deadlineAt });
      request('w2', 1, { deadlineAt });
      return { w3: request('w3', 1, { deadlineAt }) }; // wrapped: awaiting would wait for the permit
    };
    expect((await forecast()).w3).toBeInstanceOf(Promise);
    // A ceiling of 1 caps the forecast too: 3 × 100 ms / 1 = 300 ms > 150 ms, refused at once.
    expect((await forecast(1)).w3).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 });
  });

  it('does not judge the queue a probe builds as standing, during the probe or after it', async () => {
    /** A limit in a no-load probe: 1 permit now, 4 once the probe ends (the test ends it). */
    class ProbingLimit extends ScriptedLimit {
      planning = 4;
    }
    const limit = new ProbingLimit(1);
    const { clock, limiter, request, granted, outcomes, flush, scheduler, teach } = setup({ limit }); // CoDel 20 / 100 ms
    await teach(30); // round trip 30 ms
    request('holder');
    for (let i = 0; i < 14; i++) request(`w${i}`);
    scheduler.advance(150); // every waiter has waited 150 ms: past the CoDel target for a whole interval
    // Judged by its deadline (15 × 30 ms / 4 = 113 ms ≤ 500 ms), not by the 100 ms standing-queue cap.
    expect(request('late')).toBeInstanceOf(Promise);
    expect(limiter.isQueueStanding).toBe(false);
    // The probe ends: the waits it imposed are not queueing the crowd caused.
    limit.current = 4;
    granted('holder').release('success');
    await flush();
    scheduler.advance(100);
    request('next'); // a new CoDel interval is judged here
    expect(limiter.isQueueStanding).toBe(false);
    expect(outcomes.filter((o) => !o.result.ok)).toEqual([]);
  });

  it('does not hold arrivals to a queue standing from before a probe to the CoDel target while the probe holds the limit down (differential fuzzer: an origin 3x slower for 6 s)', async () => {
    /** A learned limit with evidence of queueing, that a no-load probe holds at 1 of its 4. */
    class ProbedLimit extends LearnedLimit {
      planning: number | undefined = undefined;
    }
    const limit = new ProbedLimit(4);
    limit.queueing = true;
    const { limiter, request, scheduler, teach } = setup({ limit }); // CoDel 20 / 100 ms
    await teach(100); // round trip 100 ms
    for (let i = 0; i < 4; i++) request(`holder${i}`);
    for (let i = 0; i < 10; i++) request(`w${i}`);
    scheduler.advance(120);
    request('w10'); // judged: the queue stands
    expect(limiter.isQueueStanding).toBe(true);
    // 12 ahead-or-self x 100 ms / 4 = 300 ms: past 8 typical requests' work, held to the target.
    expect(request('before')).toMatchObject({ ok: false, reason: 'predicted_wait' });
    limit.planning = 4;
    limit.current = 1; // the probe
    // The same forecast against the planning limit, now bounded by its deadline: it waits.
    expect(request('during')).toBeInstanceOf(Promise);
    expect(limiter.isQueueStanding).toBe(true);
  });

  it('with queue.standingBoundAfterMs, holds a client\'s arrivals to the CoDel target only once the queue has stood that long, counted from the end of the last probe (differential fuzzer)', async () => {
    /** A learned limit with evidence of queueing; the test starts and ends a no-load probe. */
    class ProbedLimit extends LearnedLimit {
      planning: number | undefined = undefined;
    }
    const limit = new ProbedLimit(4);
    limit.queueing = true;
    const { limiter, request, scheduler, teach, clock } = setup({
      limit,
      queue: { ...queue, deadlineMs: 30_000, minWaitRoundTrips: 1, standingBoundAfterMs: 1_000 },
    });
    // Round trips of 2 s: the permits held through the test are no stall (4 s without an answer).
    await teach(2_000);
    for (let i = 0; i < 4; i++) request(`holder${i}`); // held throughout
    for (let i = 0; i < 10; i++) request(`w${i}`);
    scheduler.advance(120);
    request('w10'); // judged: the queue stands from here
    expect(limiter.isQueueStanding).toBe(true);
    // The queue outgrows a deadline (11 ahead x 2 s / 4 past this one's 2 s): the bounds below apply.
    expect(request('past its deadline', 1, { deadlineAt: clock.now() + 1 })).toMatchObject({ ok: false, reason: 'predicted_wait' });
    // 12 ahead x 2 s / 4 = 6 s (more than 8 ahead and 8 typical requests' work), past the 20 ms
    // target: a queue that has stood a moment bounds it by its deadline...
    expect(request('early')).toBeInstanceOf(Promise);
    // ...but not a request a stale copy answers: it keeps the target, answered from the copy;
    // nor any request once the evidence is strong (most recent windows queued: a crowd).
    expect(request('stale-able', 1, { fixedDeadline: true })).toMatchObject({ ok: false, reason: 'predicted_wait' });
    limit.sustained = true;
    expect(request('in a crowd')).toMatchObject({ ok: false, reason: 'predicted_wait' });
    limit.sustained = false;
    scheduler.advance(999);
    expect(request('still')).toBeInstanceOf(Promise);
    // One that has stood a second bounds it by the target.
    scheduler.advance(1);
    expect(request('stood')).toMatchObject({ ok: false, reason: 'predicted_wait' });
    // A probe of 500 ms, seen by arrivals as it goes: counted again from its end.
    limit.planning = 4;
    limit.current = 1;
    expect(request('during')).toBeInstanceOf(Promise);
    scheduler.advance(500);
    expect(request('during, later')).toBeInstanceOf(Promise);
    limit.planning = undefined;
    limit.current = 4; // it ends
    scheduler.advance(999);
    expect(request('after')).toBeInstanceOf(Promise); // 1 499 ms after it began, 999 after its end
    scheduler.advance(1);
    expect(request('a second after')).toMatchObject({ ok: false, reason: 'predicted_wait' });
    expect(limiter.isQueueStanding).toBe(true);
  });

  it('holds a client\'s arrivals to the CoDel target only once the queue outgrows its deadlines (a search crowd on a few PHP workers fits them)', async () => {
    const limit = new LearnedLimit(4);
    limit.queueing = true;
    limit.sustained = true; // a queue at the origin's capacity, in every window
    const { limiter, request, scheduler, teach, clock, outcomes } = setup({
      limit,
      queue: { ...queue, deadlineMs: 500, minWaitRoundTrips: 8, standingBoundAfterMs: 0 },
    });
    // Searches of 150 ms: a deadline of 8 round trips, 1.2 s.
    await teach(150);
    for (let i = 0; i < 4; i++) request(`holder${i}`);
    for (let i = 0; i < 17; i++) request(`w${i}`); // a closed loop's clients: 4 answered, the others waiting their turn
    scheduler.advance(120);
    request('w17');
    expect(limiter.isQueueStanding).toBe(true);
    // (18 ahead + 1) x 150 ms / 4 = 712 ms: past the 20 ms target, within the 1.2 s deadline. It waits,
    // as the origin would have made it wait.
    expect(request('searcher')).toBeInstanceOf(Promise);
    expect(request('another')).toBeInstanceOf(Promise);
    // A crowd grows the queue past a deadline: that arrival is refused, and from then on the
    // target holds arrivals that would wait past it.
    expect(limiter.holdsToBounds).toBe(false);
    for (let i = 0; i < 13; i++) request(`crowd${i}`);
    const refused = () => outcomes.filter((o) => !o.result.ok).map((o) => o.name);
    await Promise.resolve();
    expect(refused()).toEqual(['crowd12']); // (32 ahead + 1) x 150 ms / 4: past its 1.2 s deadline
    expect(limiter.holdsToBounds).toBe(true); // crowdgate_queue_held_to_bounds
    expect(request('after the crowd', 1, { deadlineAt: clock.now() + 30_000 })).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  /**
   * A standing queue of 11 behind 4 permits held `rttMs` each (no stall for twice that), waits of
   * up to `deadlineMs`; no evidence of queueing yet (nothing forecast).
   */
  async function standingQueue({ maxLength = 100, rttMs = 6_000, deadlineMs = 30_000 } = {}) {
    const limit = new LearnedLimit(4);
    limit.sustained = true;
    const t = setup({ limit, queue: { ...queue, maxLength, deadlineMs, minWaitRoundTrips: 1, standingBoundAfterMs: 0 } });
    await t.teach(rttMs);
    for (let i = 0; i < 4; i++) t.request(`holder${i}`);
    for (let i = 0; i < 10; i++) t.request(`w${i}`);
    t.scheduler.advance(120);
    t.request('w10');
    expect(t.limiter.isQueueStanding).toBe(true);
    return { ...t, limit };
  }

  it('lets the queue grow to its deadlines again OUTGROWN_MEMORY_MS after it last outgrew one (a burst is not a crowd)', async () => {
    // Round trips of 20 s: the permits held through the test are no stall (40 s without an answer).
    const { limiter, request, scheduler, clock, limit } = await standingQueue({ rttMs: 20_000, deadlineMs: 120_000 });
    limit.queueing = true;
    expect(request('fits')).toBeInstanceOf(Promise); // (11 ahead + 1) x 20 s / 4 = 60 s: within its 120 s
    expect(request('past its deadline', 1, { deadlineAt: clock.now() + 1 })).toMatchObject({ ok: false, reason: 'predicted_wait' }); // past its 20 s
    expect(request('held')).toMatchObject({ ok: false, reason: 'predicted_wait' });
    scheduler.advance(OUTGROWN_MEMORY_MS - 1);
    expect(request('still held')).toMatchObject({ ok: false, reason: 'predicted_wait' });
    scheduler.advance(2);
    expect(limiter.isQueueStanding).toBe(true);
    expect(request('let grow again')).toBeInstanceOf(Promise);
  });

  it('counts a waiter a client waits for refused at its deadline as the queue outgrowing its deadlines', async () => {
    const t = await standingQueue();
    // Admitted without a forecast (no evidence of queueing yet): its deadline, 6 s (one round trip), ends its wait.
    t.request('waited', 1, { deadlineAt: t.clock.now() + 500 });
    t.limit.queueing = true;
    expect(t.request('fits')).toBeInstanceOf(Promise); // (12 ahead + 1) x 6 s / 4 = 19.5 s: within its 30 s
    t.scheduler.advance(6_000);
    await t.flush();
    expect(t.outcomes.filter((o) => !o.result.ok)).toMatchObject([{ name: 'waited', result: { reason: 'deadline' } }]);
    expect(t.request('held')).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  it('does not count a request a stale copy answers (its deadline is not stretched to the round trips), at arrival or at its deadline', async () => {
    const t = await standingQueue();
    t.request('stale-able', 1, { fixedDeadline: true, deadlineAt: t.clock.now() + 500 });
    t.limit.queueing = true;
    expect(t.request('stale-able too', 1, { fixedDeadline: true, deadlineAt: t.clock.now() + 500 })).toMatchObject({ ok: false, reason: 'predicted_wait' }); // past its 500 ms
    t.scheduler.advance(500);
    await t.flush();
    expect(t.outcomes.filter((o) => !o.result.ok).map((o) => [o.name, (o.result as { reason: string }).reason])).toEqual([
      ['stale-able too', 'predicted_wait'],
      ['stale-able', 'deadline'],
    ]);
    expect(t.request('fits')).toBeInstanceOf(Promise);
  });

  it('holds to the bounds the class whose deadlines were outgrown and the less important ones, not the more important ones (crawlers below the readers)', async () => {
    const t = await standingQueue(); // the readers: class 1
    t.limit.queueing = true;
    expect(t.request('crawler', 2, { deadlineAt: t.clock.now() + 1 })).toMatchObject({ ok: false, reason: 'predicted_wait' }); // past its 6 s
    expect(t.request('reader')).toBeInstanceOf(Promise);
    expect(t.request('another crawler', 2)).toMatchObject({ ok: false, reason: 'predicted_wait' });
    expect(t.request('reader, past its deadline', 1, { deadlineAt: t.clock.now() + 1 })).toMatchObject({ ok: false, reason: 'predicted_wait' });
    expect(t.request('reader, held')).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  it('counts a full queue as the queue outgrowing its deadlines', async () => {
    const t = await standingQueue({ maxLength: 12 });
    t.limit.queueing = true;
    expect(t.request('fits')).toBeInstanceOf(Promise); // the twelfth
    expect(t.request('one too many')).toMatchObject({ ok: false, reason: 'queue_full' });
    t.clock.advance(10);
    t.granted('holder0').release('success'); // w0 gets its permit: room in the queue again
    expect(t.request('held')).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  it('holds arrivals to the CoDel target at once behind a fixed limit, which states the origin\'s capacity, whatever queue.standingBoundAfterMs says', async () => {
    const { limiter, request, scheduler, teach } = setup({
      limitN: 4,
      queue: { ...queue, deadlineMs: 30_000, minWaitRoundTrips: 1, standingBoundAfterMs: 1_000 },
    });
    await teach(2_000);
    for (let i = 0; i < 4; i++) request(`holder${i}`);
    for (let i = 0; i < 10; i++) request(`w${i}`);
    scheduler.advance(120);
    request('w10');
    expect(limiter.isQueueStanding).toBe(true);
    expect(request('early')).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  /** A limit of 4 that a test holds at 1 for a no-load probe (and ends it). */
  class ProbedLimit extends ScriptedLimit {
    planning: number | undefined = undefined;
  }

  /**
   * A round trip of 30 ms taught (8 of them are 240 ms, less than the 500 ms deadline), then a
   * probe holds the limit of 4 at 1, and `names` queue in turn ((k + 1) x 30 ms / 4 ahead:
   * admitted). The test ends the probe (limit.planning = undefined).
   */
  async function probeWithLine(names: string[]) {
    const limit = new ProbedLimit(4);
    const t = setup({ limit, queue: { ...queue, minWaitRoundTrips: 8 } });
    await t.teach(30);
    limit.planning = 4;
    limit.current = 1;
    for (const name of names) t.request(name);
    return { ...t, limit };
  }

  /** The held permit is answered every 80 ms (the origin answers: no stall), `n` times, each time to the next of `names` in line. */
  async function answerInTurn(t: Awaited<ReturnType<typeof probeWithLine>>, names: string[], n: number) {
    await t.flush();
    for (let i = 0; i < n; i++) {
      t.scheduler.advance(80);
      t.granted(names[i]!).release('success');
      await t.flush();
    }
  }

  it('keeps waits a client waits for through a no-load probe past their deadline, and the restored limit serves them (differential fuzzer)', async () => {
    const names = ['p0', ...Array.from({ length: 10 }, (_, i) => `w${i}`)];
    const t = await probeWithLine(names);
    const { clock, limit, outcomes, flush, granted } = t;
    // At 500 ms w7-w9 are past their deadline with the probe still on.
    await answerInTurn(t, names, 7);
    expect(outcomes.filter((o) => !o.result.ok)).toEqual([]);
    limit.planning = undefined;
    limit.current = 4; // the probe ends
    // The answer that comes as a kept wait's look is due is read before the look's timer runs
    // (clock, not scheduler): the look is a time to look again, not a deadline.
    clock.advance(80);
    granted(names[7]!).release('success');
    await flush();
    expect(outcomes.filter((o) => !o.result.ok)).toEqual([]);
    for (const name of ['w7', 'w8', 'w9']) expect(outcomes.find((o) => o.name === name)?.result).toMatchObject({ ok: true });
  });

  it('does not keep through a probe a wait that a stale copy answers: refused at its deadline, it is answered from the copy', async () => {
    const names = ['p0', 'w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6'];
    const t = await probeWithLine(names);
    const { outcomes } = t;
    t.request('stale-able', 1, { fixedDeadline: true }); // last in line
    // At 530 ms the stale-able one is past its deadline and refused, while those a client waits
    // for are kept.
    await answerInTurn(t, names, 7);
    expect(outcomes.filter((o) => !o.result.ok).map((o) => o.name)).toEqual(['stale-able']);
    expect(outcomes.find((o) => o.name === 'stale-able')?.result).toMatchObject({ ok: false, reason: 'deadline' });
  });

  it('after the probe a kept wait waits one more of its own length to drain, then is refused at it as any other', async () => {
    const names = ['p0', ...Array.from({ length: 8 }, (_, i) => `w${i}`)];
    const t = await probeWithLine(names);
    const { limit, request, outcomes, flush, scheduler, granted } = t;
    // At 530 ms (deadline 500 ms after their arrival at 30 ms) w6 and w7 are past it, kept.
    await answerInTurn(t, names, 7);
    expect(outcomes.filter((o) => !o.result.ok)).toEqual([]);
    // 590 ms: the probe ends but the limit stays at 1 (the origin got slower). The origin goes
    // on answering every 80 ms, each time to a more important request; w7's look at 630 ms
    // gives it one more wait of its own 500 ms, to 1 130 ms.
    limit.planning = undefined;
    let holder = 'w6';
    for (let k = 0; k < 7; k++) {
      request(`h${k}`, 0);
      scheduler.advance(80);
      granted(holder).release('success');
      await flush();
      holder = `h${k}`;
      if (k === 5) expect(outcomes.find((o) => o.name === 'w7')).toBeUndefined(); // 1 070 ms
    }
    expect(outcomes.find((o) => o.name === 'w7')?.result).toMatchObject({ ok: false, reason: 'deadline' }); // 1 150 ms
    // Kept through the probe, its refusal is the probe's doing: no evidence that the queue outgrows its deadlines.
    expect((t.limiter as unknown as { outgrowth: Outgrowth }).outgrowth.holds(1, t.clock.now())).toBe(false);
  });

  it('tells the limit the time on each arrival: a probe whose permits slow requests hold ends on time, and its waiters are served (normal-day trial)', async () => {
    /** A no-load probe of 1 permit that ends 1 s after it began, by the clock alone. */
    class TimedProbe extends ScriptedLimit {
      planning = 4;
      tick(now: number): void {
        if (now >= 1_000) this.current = 4;
      }
    }
    const { request, outcomes, flush, scheduler } = setup({ limit: new TimedProbe(1) });
    request('slow report'); // holds the probe's only permit for seconds
    // Arrivals wait behind it, one every 20 ms, and the probe's 1 s runs out meanwhile.
    for (let i = 0; i < 50; i++) {
      request(`w${i}`, 1, { deadlineAt: 3_000 });
      scheduler.advance(20);
    }
    request('arrival', 1, { deadlineAt: 3_000 });
    await flush();
    // The probe ended on an arrival: three more permits, to the first waiters.
    expect(outcomes.filter((o) => o.result.ok).map((o) => o.name)).toEqual(['slow report', 'w0', 'w1', 'w2']);
    expect(outcomes.filter((o) => !o.result.ok)).toEqual([]);
  });

  it('during a probe, a slow endpoint\'s permits step aside once held that long; a crowd\'s pages that only queue do not (normal-day trial)', async () => {
    /** A limit in a no-load probe: 2 permits now, 8 once it ends. */
    class ProbingLimit extends ScriptedLimit {
      planning = 8;
    }
    const run = async (holderClass: string) => {
      const { clock, request, granted, outcomes, flush, scheduler } = setup({ limit: new ProbingLimit(2), slowLane: true });
      // Pages of 5 ms, reports of 100 ms: the site's typical round trip about 23 ms.
      const learn = async (cls: string, rttMs: number, n: number) => {
        for (let i = 0; i < n; i++) {
          request(`${cls}-warm${i}`, 1, { latencyClass: cls });
          await flush();
          clock.advance(rttMs);
          granted(`${cls}-warm${i}`).release('success', cls);
        }
      };
      await learn('page', 5, 20);
      await learn('report', 100, 2);
      request('held1', 1, { latencyClass: holderClass });
      request('held2', 1, { latencyClass: holderClass });
      for (let i = 0; i < 3; i++) request(`w${i}`, 1, { latencyClass: 'page', deadlineAt: clock.now() + 2_000 });
      scheduler.advance(80); // past 3 x 23 ms, short of the overdue threshold (230 ms)
      request('arrival', 1, { latencyClass: 'page', deadlineAt: clock.now() + 2_000 });
      await flush();
      return outcomes.filter((o) => o.result.ok && /^w\d/.test(o.name)).map((o) => o.name);
    };
    // Two reports held the probe's permits: they step aside, pages flow.
    expect(await run('report')).toEqual(['w0', 'w1']);
    // Two pages held them as long (queueing in the origin): they stay counted.
    expect(await run('page')).toEqual([]);
  });

  it('keeps the slow lane in the order permits were acquired when a probe moves a younger one aside first (review)', async () => {
    class ProbingLimit extends ScriptedLimit {
      planning = 8;
    }
    const limit = new ProbingLimit(2);
    const { clock, limiter, request, granted, flush, scheduler } = setup({ limit, slowLane: true });
    for (let i = 0; i < 20; i++) {
      request(`p${i}`, 1, { latencyClass: 'page' });
      await flush();
      clock.advance(5);
      granted(`p${i}`).release('success', 'page');
    }
    request('r-warm', 1, { latencyClass: 'report' });
    await flush();
    clock.advance(300);
    granted('r-warm').release('success', 'report');
    request('old page', 1, { latencyClass: 'page' }); // acquired first
    scheduler.advance(10);
    request('report', 1, { latencyClass: 'report' }); // younger, of a slow endpoint
    request('w', 1, { latencyClass: 'page', deadlineAt: clock.now() + 5_000 });
    scheduler.advance(150); // past 3 x the typical 35 ms: the report is moved aside by the probe; the page (345 ms) not yet
    request('a1', 1, { latencyClass: 'page', deadlineAt: clock.now() + 5_000 });
    scheduler.advance(400); // now the page is overdue too, and moves
    request('a2', 1, { latencyClass: 'page', deadlineAt: clock.now() + 5_000 });
    type Linked = { acquiredAt: number; next?: Linked };
    const lane = (limiter as unknown as { lane: { first?: Linked } }).lane;
    const order: number[] = [];
    for (let p = lane.first; p; p = p.next) order.push(p.acquiredAt);
    expect(order.length).toBeGreaterThanOrEqual(2);
    expect(order).toEqual([...order].sort((a, b) => a - b));
  });

  it('queues without judging while no round trip has been measured', () => {
    const { request } = setup({ limitN: 1 });
    request('a');
    for (let i = 0; i < 5; i++) expect(request(`q${i}`, 1, { deadlineAt: 10 })).toBeInstanceOf(Promise);
  });
});

describe('Limiter: standing queue once waits are predictable', () => {
  it('serves FIFO and refuses at arrival instead of failing old waiters late', async () => {
    const { limiter, request, granted, outcomes, flush, scheduler } = setup({
      limitN: 1,
      queue: { maxLength: 100, deadlineMs: 10_000, codelTargetMs: 20, codelIntervalMs: 100 },
    });
    const fill = { servesCrowd: true }; // bounded by the CoDel interval under a standing queue
    request('warm', 1, fill);
    scheduler.advance(30);
    granted('warm').release('success'); // round trip 30 ms
    request('holder', 1, fill);
    request('w1', 1, fill);
    scheduler.advance(50);
    request('w2', 1, fill);
    scheduler.advance(60);
    // t=140: standing. w1 (admitted at t=30, when 30 ms was the forecast) has outwaited the
    // 100 ms cap because the holder overran, but it was admitted on a forecast: it keeps its
    // deadline rather than failing late. Queue now: w1, w2.
    request('w3', 1, fill); // 3 × 30 ms = 90 ms ≤ 100 ms: admitted
    expect(limiter.isQueueStanding).toBe(true);
    const w4 = request('w4', 1, fill); // 4 × 30 = 120 ms > the 100 ms cap: refused at once
    expect(w4).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 });
    granted('holder').release('success');
    await flush();
    expect(outcomes.filter((o) => o.result.ok).map((o) => o.name)).toEqual(['warm', 'holder', 'w1']); // FIFO
    expect(outcomes.filter((o) => !o.result.ok).map((o) => o.name)).toEqual(['w4']); // nobody failed late
  });

  it('bounds a pass-through wait by the CoDel target and a cache fill by the interval', async () => {
    const { limiter, request, granted, outcomes, flush, scheduler } = setup({
      limitN: 1,
      queue: { maxLength: 100, deadlineMs: 10_000, codelTargetMs: 35, codelIntervalMs: 100 },
    });
    request('warm');
    scheduler.advance(10);
    granted('warm').release('success'); // round trip 10 ms
    request('holder');
    request('w1');
    scheduler.advance(110); // t=120: the queue has not emptied for a whole interval
    // Forecast: (waiters ahead + 1) × 10 ms. Pass-through is bounded by 35 ms, fills by 100 ms.
    expect(request('pass-a')).toBeInstanceOf(Promise); // 20 ms; this arrival takes CoDel's verdict
    expect(limiter.isQueueStanding).toBe(true);
    expect(request('pass-b')).toBeInstanceOf(Promise); // 30 ms
    expect(request('pass-c')).toMatchObject({ ok: false, reason: 'predicted_wait', waitedMs: 0 }); // 40 > 35
    expect(request('fill', 1, { servesCrowd: true })).toBeInstanceOf(Promise); // 40 ≤ 100
    scheduler.advance(36);
    await flush();
    const result = (name: string) => outcomes.find((o) => o.name === name)?.result;
    expect(result('pass-a')).toEqual({ ok: false, reason: 'codel', waitedMs: 35 });
    expect(result('pass-b')).toEqual({ ok: false, reason: 'codel', waitedMs: 35 });
    expect(result('fill')).toBeUndefined(); // still waiting
    scheduler.advance(65);
    await flush();
    expect(result('fill')).toEqual({ ok: false, reason: 'codel', waitedMs: 100 });
  });
});

describe('Limiter: a reloaded number of priority classes', () => {
  it('keeps every waiter: the last (background) class stays the last, those of a class gone join the lowest above it, in order, and are served', async () => {
    const s = setup({ limitN: 1, classes: 4 });
    s.request('held', 0);
    s.request('a', 1);
    s.request('b', 2);
    s.request('c', 3); // the last class: background refreshes
    await s.flush();
    expect(s.limiter.queueLengthByClass()).toEqual([0, 1, 1, 1]);
    s.limiter.configure({ queue, classes: 3 }); // a priority class gone
    expect(s.limiter.queueLengthByClass()).toEqual([0, 2, 1]);
    s.limiter.configure({ queue, classes: 5 }); // two added: background is still below them, default above it
    expect(s.limiter.queueLengthByClass()).toEqual([0, 0, 0, 2, 1]);
    s.request('d', 3); // default: after those already waiting there, before the background refresh
    await s.flush();
    for (const name of ['held', 'a', 'b', 'd']) {
      s.granted(name).release('success');
      await s.flush();
    }
    expect(s.outcomes.map((o) => o.name)).toEqual(['held', 'a', 'b', 'd', 'c']);
    expect(s.limiter.queueLength).toBe(0);
  });
});

describe('Limiter: overdue permits step aside (the slow lane)', () => {
  /** Teach the limiter a typical round trip of `rttMs` with `n` quick requests. */
  it('a slow request held past 10 x the typical round trip leaves the count, and a waiter gets its permit', async () => {
    const s = setup({ limitN: 2, slowLane: true });
    await s.teach(20, 5); // typical 20 ms: overdue after 200 ms
    s.request('slow1');
    s.request('slow2');
    s.request('fast'); // both permits held: it waits
    await s.flush();
    expect(s.limiter.queueLength).toBe(1);
    s.scheduler.advance(199);
    await s.flush();
    expect(s.outcomes.find((o) => o.name === 'fast')).toBeUndefined();
    s.scheduler.advance(1); // the overdue timer moves both aside
    await s.flush();
    expect(s.granted('fast')).toBeDefined();
    expect(s.limiter.overdue).toBe(2);
    expect(s.limiter.inflight).toBe(3);
    // The request granted beside them tells the limit what the origin had in flight then: its
    // own permit and the two the lane held (LimitSample.originInflight), not just the count.
    s.clock.advance(20);
    s.granted('fast').release('success');
    expect((s.limit as ScriptedLimit).samples.at(-1)).toMatchObject({ inflight: 1, originInflight: 3 });
    // Their round trips are not fed to the limit: outliers of the endpoint mix.
    const fed = (s.limit as ScriptedLimit).samples.length;
    s.clock.advance(5_000);
    s.granted('slow1').release('success');
    s.granted('slow2').release('success');
    expect((s.limit as ScriptedLimit).samples.length).toBe(fed);
    expect(s.limiter.overdue).toBe(0);
  });

  it('before any round trip is known, a request held past the first threshold is still fed to the limit: an origin slow for every request is learned', async () => {
    const s = setup({ limitN: 2, slowLane: true });
    expect(s.limiter.overdueAfterMs).toBe(75); // 3/4 of the CoDel interval, nothing measured yet
    s.request('a');
    s.request('b');
    s.request('c'); // waits
    await s.flush();
    s.scheduler.advance(75); // a and b step aside; c is granted
    await s.flush();
    expect(s.granted('c')).toBeDefined();
    expect(s.limiter.overdue).toBe(2);
    s.clock.advance(225);
    s.granted('a').release('success');
    // Its 300 ms is the origin's round trip, not an outlier of a mix nobody has measured.
    expect((s.limit as ScriptedLimit).samples.map((x) => x.rttMs)).toEqual([300]);
    // 10 x 300 ms, but a waiter here waits only its 500 ms deadline (no minWaitRoundTrips):
    // at most 3/4 of that, and no less than 4 round trips.
    expect(s.limiter.overdueAfterMs).toBe(1_200);
    // Once a round trip is known, one held past the threshold is an outlier again.
    s.clock.advance(2_000);
    s.granted('b').release('success');
    expect((s.limit as ScriptedLimit).samples).toHaveLength(1);
  });

  it('a reload to a fixed limit counts the lane\'s permits again: an emergency cap is not exceeded beside them', async () => {
    const s = setup({ limitN: 2, slowLane: true });
    await s.teach(20, 5);
    s.request('slow1');
    s.request('slow2');
    s.request('fast');
    await s.flush();
    s.scheduler.advance(200); // both slow ones moved aside; fast is granted
    await s.flush();
    expect(s.limiter.overdue).toBe(2);
    s.limiter.replaceLimit(new ScriptedLimit(2), false);
    expect(s.limiter.overdue).toBe(0);
    expect(s.limiter.inflight).toBe(3);
    expect(s.limiter.hasFreePermit).toBe(false); // 3 at the origin under a cap of 2
    s.granted('slow1').release('success');
    s.granted('slow2').release('success');
    expect(s.limiter.inflight).toBe(1);
    expect(s.limiter.hasFreePermit).toBe(true);
    s.granted('fast').release('success');
    expect(s.limiter.inflight).toBe(0);
  });

  it('is off by default (a fixed limit means what it says)', async () => {
    const s = setup({ limitN: 1 });
    await s.teach(20, 5);
    s.request('slow');
    s.request('fast');
    await s.flush();
    s.scheduler.advance(400); // past 10 x 20 ms, inside the 500 ms deadline
    await s.flush();
    expect(s.outcomes.find((o) => o.name === 'fast')).toBeUndefined();
    expect(s.limiter.overdue).toBe(0);
  });

  it('never lets the lane take everything in flight past the ceiling', async () => {
    const s = setup({ limitN: 2, ceiling: 3, slowLane: true });
    await s.teach(20, 5);
    s.request('slow1');
    s.request('slow2');
    s.request('a');
    s.request('b');
    await s.flush();
    s.scheduler.advance(250);
    await s.flush();
    expect(s.limiter.inflight).toBe(3); // one moved aside (3 - 2), one waiter served
    expect(s.limiter.overdue).toBe(1);
    expect(s.limiter.queueLength).toBe(1);
  });

  it('when most requests are that slow, the origin has slowed down: their round trips are fed again and the lane closes', async () => {
    const s = setup({ limitN: 4, slowLane: true });
    await s.teach(10, 5); // typical 10 ms: overdue after 100 ms
    const limit = s.limit as ScriptedLimit;
    let fed = limit.samples.length;
    for (let i = 0; i < 40; i++) {
      s.request(`s${i}`);
      await s.flush();
      s.clock.advance(500);
      s.granted(`s${i}`).release('success');
    }
    // The first few were ignored as outliers; once the share passed one half they were fed.
    fed = limit.samples.length - fed;
    expect(fed).toBeGreaterThan(20);
    expect(fed).toBeLessThan(40);
    expect(limit.samples.at(-1)!.rttMs).toBe(500);
  });

  it("reads a request's page as its path and its query's first parameter", () => {
    expect(pageOf('/index.php', '/index.php?title=Main_Page&action=history')).toBe('/index.php?title=Main_Page');
    expect(pageOf('/', '/?p=42')).toBe('/?p=42');
    expect(pageOf('/a', '/a')).toBeUndefined();
    expect(pageOf('/a', '/a?')).toBeUndefined();
    expect(pageOf('/a', `/a?x=${'y'.repeat(500)}`)!.length).toBe('/a?'.length + 128);
  });

  describe('an origin that got slow during a quiet spell (failure-day trial, ikiwiki: the limit froze)', () => {
    /**
     * A limiter that learned quick pages (10 ms, five paths; or, `onePath`, five pages of
     * /index.php by their `title`), then 10 s with nothing asked; then `n` requests to
     * `pathOf(i)` answered in 500 ms (with onePath, to /index.php?title=`pathOf(i)`).
     */
    async function slowAfterQuiet(n: number, pathOf: (i: number) => string, onePath = false) {
      const s = setup({ limitN: 4, slowLane: true });
      const at = (p: string) => (onePath ? { path: '/index.php', page: `/index.php?title=${p.slice(1).replace(/\//g, '_')}` } : { path: p });
      for (let i = 0; i < 20; i++) {
        s.request(`q${i}`, 1, { ...at(`/p/${i % 5}`), latencyClass: 'fill:pages:' });
        await s.flush();
        s.clock.advance(10);
        s.granted(`q${i}`).release('success', 'fill:pages:');
      }
      const limit = s.limit as ScriptedLimit;
      const before = limit.samples.length;
      s.clock.advance(10_000);
      for (let i = 0; i < n; i++) {
        s.request(`s${i}`, 1, { ...at(pathOf(i)), latencyClass: 'fill:pages:' });
        await s.flush();
        s.clock.advance(500);
        s.granted(`s${i}`).release('success', 'fill:pages:');
      }
      return { fed: limit.samples.slice(before) };
    }

    it('quick pages all answered slowly are the origin slow for everyone: their round trips are fed to the limit', async () => {
      const { fed } = await slowAfterQuiet(40, (i) => `/p/${i % 5}`);
      // The first eight are set aside (one run of evidence), the rest fed.
      expect(fed.length).toBeGreaterThan(20);
      expect(fed.at(-1)!.rttMs).toBe(500);
    });

    it('not new paths of the quick class (a crawler on uncached pages), nor one path (a slow search on a quick page), nor a run mostly to one (review)', async () => {
      expect((await slowAfterQuiet(40, (i) => `/new/${i}`)).fed).toHaveLength(0);
      expect((await slowAfterQuiet(40, () => '/p/0')).fed).toHaveLength(0);
      // Five of every eight to /p/0, the rest to two other pages held up behind them.
      expect((await slowAfterQuiet(40, (i) => (i % 8 < 5 ? '/p/0' : `/p/${1 + (i % 2)}`))).fed).toHaveLength(0);
      // Two pages only: not enough.
      expect((await slowAfterQuiet(40, (i) => `/p/${i % 2}`)).fed).toHaveLength(0);
    });

    it("on a site whose pages share one path (/index.php?title=…), its pages answered promptly before tell the same; new ones (a search's terms) or one page do not (failure-day re-check)", async () => {
      const { fed } = await slowAfterQuiet(40, (i) => `/p/${i % 5}`, true);
      expect(fed.length).toBeGreaterThan(20);
      expect(fed.at(-1)!.rttMs).toBe(500);
      expect((await slowAfterQuiet(40, (i) => `/new/${i}`, true)).fed).toHaveLength(0);
      expect((await slowAfterQuiet(40, () => '/p/0', true)).fed).toHaveLength(0);
      expect((await slowAfterQuiet(40, (i) => `/p/${i % 2}`, true)).fed).toHaveLength(0);
    });
  });

  it('a batch of slow requests after a quiet spell is the endpoint mix: the lane stays open and pages get permits', async () => {
    const s = setup({ limitN: 8, slowLane: true });
    await s.teach(10, 5); // typical 10 ms: overdue after 100 ms
    s.clock.advance(10_000); // nobody asked anything for 10 s
    for (let i = 0; i < 20; i++) s.request(`r${i}`); // twenty reports: 8 counted, 12 waiting
    await s.flush();
    for (let step = 0; step < 10; step++) {
      s.scheduler.advance(100); // the counted ones turn overdue and step aside, the next start
      await s.flush();
    }
    expect(s.limiter.overdue).toBeGreaterThanOrEqual(16);
    for (let i = 0; i < 4; i++) s.request(`p${i}`);
    await s.flush();
    s.scheduler.advance(100);
    await s.flush();
    for (let i = 0; i < 4; i++) expect(s.granted(`p${i}`), `p${i}`).toBeDefined();
  });

  /**
   * Long-polls that one event answers all at once, and that all ask again at once (a chat's or a
   * forum's message bus): thirty requests to one path, started together, held for seconds. Eight
   * of them overdue, all started after the last prompt answer, read as an origin slow for
   * everyone; the lane closed, the polls held every permit, and 15-17 % of a site's pages were
   * refused in every 10 s cycle (failure-day trial). A path whose request was answered overdue
   * after a later one was answered promptly is slow on its own: its overdue requests are no
   * such evidence.
   */
  describe('synchronized long-polls', () => {
    /** A warm limiter that has seen one round of polls to /ev answered overdue while pages were answered promptly. */
    async function afterOneRound() {
      const s = setup({ limitN: 8, slowLane: true });
      await s.teach(5, 5); // typical 5 ms: overdue after 100 ms
      for (let i = 0; i < 4; i++) s.request(`first${i}`, 1, { path: '/ev' });
      await s.flush();
      s.scheduler.advance(150); // they step aside
      await s.flush();
      for (let i = 0; i < 3; i++) {
        // Pages started after them, answered promptly.
        s.request(`before${i}`, 1, { path: `/p/${i}` });
        await s.flush();
        s.clock.advance(5);
        s.granted(`before${i}`).release('success');
      }
      s.clock.advance(2_000);
      for (let i = 0; i < 4; i++) s.granted(`first${i}`).release('success'); // the event
      return s;
    }

    async function burst(s: ReturnType<typeof setup>, path: string) {
      for (let i = 0; i < 30; i++) s.request(`poll${i}`, 1, { path });
      for (let i = 0; i < 4; i++) s.request(`page${i}`, 1, { path: `/p/${i}` });
      await s.flush();
      for (let step = 0; step < 4; step++) {
        s.scheduler.advance(100);
        await s.flush();
      }
    }

    it('once a path is known to be slow on its own, thirty of its polls at once leave the lane open and pages get permits', async () => {
      const s = await afterOneRound();
      await burst(s, '/ev');
      for (let i = 0; i < 4; i++) expect(s.granted(`page${i}`), `page${i}`).toBeDefined();
      expect(s.limiter.overdue).toBeGreaterThanOrEqual(24);
    });

    it('thirty of them to a path answered promptly before, never slow, still read as the origin slowing down (the evidence rule as before)', async () => {
      const s = await afterOneRound();
      s.request('other', 1, { path: '/other' });
      await s.flush();
      s.clock.advance(5);
      s.granted('other').release('success');
      await burst(s, '/other');
      expect(s.outcomes.filter((o) => o.name.startsWith('page') && o.result.ok)).toHaveLength(0);
    });

    /**
     * A restart on an ordinary day: the gateway's first pages are answered promptly, then thirty
     * long-polls arrive together, to a path it has never seen answered. Eight overdue polls all
     * started after the last prompt page, and the lane closed: the polls beyond 16 waited for a
     * permit that only the next event frees and were refused at their deadline (trial: 14 of 30).
     */
    it('on a fresh gateway, thirty polls to one path never answered promptly are that path being slow: the lane stays open and every poll gets a permit', async () => {
      const s = setup({ limitN: 8, slowLane: true });
      for (let i = 0; i < 3; i++) {
        s.request(`page${i}`, 1, { path: `/p/${i}` });
        await s.flush();
        s.clock.advance(5);
        s.granted(`page${i}`).release('success');
      }
      for (let i = 0; i < 30; i++) s.request(`poll${i}`, 1, { path: '/ev' });
      await s.flush();
      for (let step = 0; step < 5; step++) {
        s.scheduler.advance(100);
        await s.flush();
      }
      expect(s.outcomes.filter((o) => o.name.startsWith('poll') && !o.result.ok)).toHaveLength(0);
      expect(s.limiter.inflight).toBe(30);
      s.request('later', 1, { path: '/p/9' }); // and a page arriving meanwhile gets one at once
      await s.flush();
      expect(s.granted('later')).toBeDefined();
    });

    it('a path known slow exempts only itself: the origin stalling for other paths still closes the lane', async () => {
      const s = await afterOneRound();
      for (let i = 0; i < 16; i++) {
        s.request(`hung${i}`, 1, { path: `/p/${i}` });
        await s.flush();
        s.scheduler.advance(150);
        await s.flush();
      }
      s.scheduler.advance(150);
      await s.flush();
      expect(s.limiter.inflight - s.limiter.overdue).toBeGreaterThanOrEqual(8); // every permit counted, held
    });
  });

  /**
   * The origin stops answering: requests hang, step aside, until eight of them, all started
   * after the last prompt answer, say it is slow for everyone; the lane closes, and the hung
   * ones hold every permit.
   */
  async function stall(s: ReturnType<typeof setup>): Promise<void> {
    for (let i = 0; i < 16; i++) {
      s.request(`hung${i}`);
      await s.flush();
      s.scheduler.advance(150);
      await s.flush();
    }
    s.scheduler.advance(150);
    await s.flush();
  }

  it('an origin that stalled with every permit held gets one trial request at a time beyond the limit: answered promptly, traffic flows again at once (failure-day trial)', async () => {
    const s = setup({ limitN: 4, slowLane: true });
    await s.teach(10, 5); // typical 10 ms: overdue after 100 ms
    await stall(s);
    expect(s.limiter.inflight - s.limiter.overdue).toBeGreaterThanOrEqual(4); // every permit counted, held
    s.scheduler.advance(5_000); // (the hung requests were trials too, ever further apart: at most 5 s)
    await s.flush();
    s.request('trial'); // every permit held by requests never answered: a trial goes beyond the limit
    await s.flush();
    expect(s.granted('trial')).toBeDefined();
    s.request('meanwhile'); // one trial at a time: not granted
    await s.flush();
    expect(s.outcomes.find((o) => o.name === 'meanwhile')?.result.ok ?? false).toBe(false);
    s.clock.advance(10);
    s.granted('trial').release('success'); // the origin answers again, promptly
    await s.flush();
    s.request('next');
    await s.flush();
    expect(s.granted('next')).toBeDefined(); // the hung ones stepped aside: traffic flows
  });

  it('gives a trial to a waiting request of another kind than the ones holding every permit: a dashboard\'s reports never asked for before do not hold the pages back for seconds', async () => {
    const s = setup({ limitN: 4, slowLane: true });
    await s.teach(10, 5); // typical 10 ms: overdue after 100 ms
    const report = (i: number) => s.request(`r${i}`, 1, { latencyClass: 'fill:-:report', path: `/report/${i}`, deadlineAt: s.clock.now() + 10_000 });
    const page = (name: string) => s.request(name, 1, { latencyClass: 'fill:-:', path: `/${name}` });
    for (let i = 0; i < 16; i++) report(i); // 4 counted, 12 waiting
    await s.flush();
    s.scheduler.advance(50);
    await s.flush();
    page('p1'); // behind them
    page('p2');
    s.scheduler.advance(50); // the first 4 step aside; 4 more start
    await s.flush();
    s.scheduler.advance(100); // 8 overdue after the last prompt answer: the lane closes behind them, 4 more start
    await s.flush();
    s.scheduler.advance(110); // those 4 are overdue too, and hold every permit
    await s.flush();
    expect(s.limiter.overdue).toBe(8);
    expect(s.limiter.inflight - s.limiter.overdue).toBe(4);
    expect(s.outcomes.find((o) => o.name === 'p1')).toBeUndefined();
    page('p3'); // an arrival: a trial is due, and goes to the first page waiting, not a report
    await s.flush();
    expect(s.granted('p1')).toBeDefined();
    expect(s.outcomes.find((o) => o.name === 'r12')).toBeUndefined();
    s.clock.advance(10);
    s.granted('p1').release('success'); // answered promptly: the lane opens again
    await s.flush();
    // The held reports step aside (the last four, queued first, take their permits and step
    // aside in turn): the other pages get permits within their deadline.
    s.scheduler.advance(110);
    await s.flush();
    expect(s.granted('p2')).toBeDefined();
  });

  it('an origin that answers none of its trials gets a few, spaced out, not one per threshold (review: 20 in 3 s)', async () => {
    const s = setup({ limitN: 4, slowLane: true });
    await s.teach(10, 5); // overdue after 100 ms
    await stall(s);
    const before = s.limiter.inflight;
    for (let i = 0; i < 60; i++) {
      s.request(`t${i}`, 1, { deadlineAt: s.clock.now() + 1 }); // arrivals every 50 ms for 3 s; none answered
      await s.flush();
      s.scheduler.advance(50);
      await s.flush();
    }
    const trials = s.limiter.inflight - before;
    expect(trials).toBeGreaterThanOrEqual(2);
    expect(trials).toBeLessThanOrEqual(6);
  });

  it('fast failures (resets, 503s) are not prompt answers: an origin slow for everyone that also fails fast still closes the lane', async () => {
    const s = setup({ limitN: 8, slowLane: true });
    await s.teach(10, 5); // overdue after 100 ms
    const limit = s.limit as ScriptedLimit;
    const fed = limit.samples.length;
    for (let i = 0; i < 20; i++) {
      s.request(`s${i}`);
      await s.flush();
      s.clock.advance(5);
      s.request(`f${i}`); // started after the slow one, fails at once
      await s.flush();
      s.clock.advance(5);
      s.granted(`f${i}`).release('dropped');
      s.clock.advance(490);
      s.granted(`s${i}`).release('success');
    }
    const slowFed = limit.samples.slice(fed).filter((x) => x.rttMs === 500).length;
    expect(slowFed).toBeGreaterThan(5); // the lane closed: the slow round trips count again
  });

  it('slow reports that are most of the origin\'s releases are still outliers while pages keep being answered promptly (a well-cached site)', async () => {
    // Hits take no permit, so the origin sees mostly reports: two 500 ms reports for every
    // 10 ms page. Each page started after the reports before it, and was answered at once.
    const s = setup({ limitN: 8, slowLane: true });
    await s.teach(10, 5); // typical 10 ms: overdue after 100 ms
    const limit = s.limit as ScriptedLimit;
    const fed = limit.samples.length;
    for (let i = 0; i < 30; i++) {
      s.request(`r${i}a`);
      s.request(`r${i}b`);
      await s.flush();
      s.clock.advance(5);
      s.request(`p${i}`);
      await s.flush();
      s.clock.advance(10);
      s.granted(`p${i}`).release('success');
      s.clock.advance(485);
      s.granted(`r${i}a`).release('success');
      s.granted(`r${i}b`).release('success');
    }
    const rtts = limit.samples.slice(fed).map((x) => x.rttMs);
    expect(rtts).toHaveLength(30); // the pages only
    expect(Math.max(...rtts)).toBe(10);
    expect(s.limiter.overdueAfterMs).toBe(100); // the typical round trip is still the page's
  });

  it('makes room for 8 x the limit in slow requests: a tenth of 100 clients in 2-10 s reports did not fit in 4 x', async () => {
    const s = setup({ limitN: 2, slowLane: true });
    await s.teach(10, 5); // overdue after 100 ms
    for (let i = 0; i < 15; i++) {
      s.request(`r${i}`); // each report holds its permit...
      await s.flush();
      s.scheduler.advance(110); // ...past the overdue threshold
      await s.flush();
      expect(s.request(`p${i}`)).not.toBeInstanceOf(Promise); // a page still gets a permit at once
      s.clock.advance(10);
      s.granted(`p${i}`).release('success');
    }
    expect(s.limiter.overdue).toBe(14); // the newest report is still counted
  });

  it('after a burst whose last releases are slow reports, the next burst is not refused on their round trips', async () => {
    const s = setup({ limitN: 4, slowLane: true, limit: new LearnedLimit(4) });
    (s.limit as LearnedLimit).queueing = true; // the limit's windows are evidence: refusal at arrival applies
    await s.teach(10, 5);
    // A burst: reports among pages answered at once; then it ends and only the reports finish.
    for (let i = 0; i < 20; i++) {
      s.request(`r${i}`);
      await s.flush();
      s.request(`p${i}`);
      await s.flush();
      s.clock.advance(10);
      s.granted(`p${i}`).release('success');
      s.scheduler.advance(140); // the report becomes overdue and steps aside when permits run out
      await s.flush();
    }
    s.clock.advance(5_000);
    for (let i = 0; i < 20; i++) s.granted(`r${i}`).release('success');
    // The next burst: 12 pages at once against a limit of 4 (3 round trips of 10 ms).
    for (let i = 0; i < 12; i++) s.request(`n${i}`);
    await s.flush();
    expect(s.outcomes.filter((o) => o.name.startsWith('n') && !o.result.ok)).toEqual([]);
    expect(s.limiter.overdueAfterMs).toBe(100);
  });
});

/** A Limiter with Gradient2 (initial 8) and a slow lane on a manual clock, as the latency-class tests use. */
async function gradient2Limiter(maxLength: number) {
  const { Gradient2Limit } = await import('../../../src/admission/limits/gradient2.js');
  const clock = new ManualClock(0);
  const scheduler = new ManualScheduler(clock);
  const limiter = new Limiter({
    limit: new Gradient2Limit({ initial: 8, min: 2, max: 256 }),
    queue: { maxLength, deadlineMs: 500, codelTargetMs: 20, codelIntervalMs: 100 },
    classes: 1,
    clock,
    scheduler,
    slowLane: true,
  });
  return { clock, scheduler, limiter };
}

describe('Limiter: latency classes (a page fill and an API call are read on one scale)', () => {
  it('reads each sample as its class\'s no-load round trip plus its excess, on the scale of the mix', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    for (let i = 0; i < 6; i++) {
      await one(t, 'forward:api', 10);
      await one(t, 'fill:default', 60);
    }
    // Equal shares: the mix's no-load round trip is about 35 ms; each class's samples read so.
    const fill = limit.samples.at(-1)!.rttMs;
    const api = limit.samples.at(-2)!.rttMs;
    expect(fill).toBeGreaterThan(30);
    expect(fill).toBeLessThan(40);
    expect(Math.abs(api - fill)).toBeLessThan(3);
    // Queueing in the origin adds the same wait to both: it shows in full on either.
    await one(t, 'forward:api', 10 + 50);
    expect(limit.samples.at(-1)!.rttMs - fill).toBeGreaterThan(45);
    await one(t, 'fill:default', 60 + 50);
    expect(limit.samples.at(-1)!.rttMs - fill).toBeGreaterThan(45);
  });

  it('names the scale a sample is read on (LimitSample.scaleMs) once two classes are known, and none before', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    for (let i = 0; i < 3; i++) await one(t, 'forward:api', 10);
    expect(limit.samples.at(-1)!.scaleMs).toBeUndefined(); // one class: read as it is
    for (let i = 0; i < 6; i++) {
      await one(t, 'forward:api', 10);
      await one(t, 'fill:default', 60);
    }
    // The mix's no-load round trip, as each class's samples are read: between the two.
    const s = limit.samples.at(-1)!;
    expect(s.scaleMs).toBeGreaterThan(25);
    expect(s.scaleMs).toBeLessThan(45);
    expect(Math.abs(s.rttMs - s.scaleMs!)).toBeLessThan(5);
    await one(t, undefined, 10);
    expect(limit.samples.at(-1)!.scaleMs).toBeUndefined(); // a sample of no class
  });

  it('tells how long the oldest request of a sample\'s class still out has been held (LimitSample.classSettledMs): 0 when none is', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    t.request('page0', 1, { latencyClass: 'fill:default:page' });
    t.clock.advance(10);
    t.request('api', 1, { latencyClass: 'forward:api:api' });
    t.clock.advance(10);
    t.request('page1', 1, { latencyClass: 'fill:default:page' });
    await t.flush();
    t.clock.advance(100);
    // page1 back first: page0, started 20 ms before it, is still out (120 ms).
    t.granted('page1').release('success', 'fill:default:page');
    expect(limit.samples.at(-1)!.classSettledMs).toBe(120);
    // The API call: none of its class is out, whatever the pages do.
    t.granted('api').release('success', 'forward:api:api');
    expect(limit.samples.at(-1)!.classSettledMs).toBe(0);
    t.clock.advance(30);
    t.granted('page0').release('success', 'fill:default:page');
    expect(limit.samples.at(-1)!.classSettledMs).toBe(0);
    // A sample of no class tells none.
    t.request('plain');
    await t.flush();
    t.granted('plain').release('success');
    expect(limit.samples.at(-1)!.classSettledMs).toBeUndefined();
  });

  it('one slow first sample of a class (a cold start) does not set its no-load round trip', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    await one(t, 'fill:default', 2_000);
    for (let i = 0; i < 6; i++) {
      await one(t, 'fill:default', 60);
      await one(t, 'forward:api', 10);
    }
    // Read on the mix's scale (about 35 ms), not 60 − ~1 150 + mean.
    expect(limit.samples.at(-2)!.rttMs).toBeGreaterThan(25);
    expect(limit.samples.at(-2)!.rttMs).toBeLessThan(45);
  });

  it('a class whose own answers spread widely is read against its median, not its fastest: its typical answer reads no queue', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    // 50-150 ms pages (the endpoint's own spread) beside 10 ms ones, at no load.
    for (let i = 0; i < 150; i++) {
      await one(t, 'fill:default:m', 50 + ((i * 37) % 101));
      await one(t, 'fill:default:f', 10);
    }
    await one(t, 'fill:default:f', 10);
    const fast = limit.samples.at(-1)!.rttMs;
    await one(t, 'fill:default:m', 100);
    // Against a base near its fastest (50 ms) a 100 ms answer read 50 ms of queueing.
    expect(Math.abs(limit.samples.at(-1)!.rttMs - fast)).toBeLessThan(10);
    // Queueing still adds in full.
    await one(t, 'fill:default:m', 100 + 50);
    expect(limit.samples.at(-1)!.rttMs - fast).toBeGreaterThan(40);
  });

  it('a class whose first samples were all cold comes down to its real round trip within a dozen samples', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    for (let i = 0; i < 20; i++) await one(t, 'fill:default:f', 10);
    for (let i = 0; i < 3; i++) await one(t, 'fill:default:m', 240);
    for (let i = 0; i < 12; i++) await one(t, 'fill:default:m', 60);
    await one(t, 'fill:default:f', 10);
    const fast = limit.samples.at(-1)!.rttMs;
    await one(t, 'fill:default:m', 60);
    expect(Math.abs(limit.samples.at(-1)!.rttMs - fast)).toBeLessThan(10);
  });

  it('names each sample\'s class (a stable small integer) and that class\'s share of recent samples', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    for (let i = 0; i < 40; i++) {
      await one(t, 'fill:default:a', 10);
      await one(t, 'fill:default:a', 10);
      await one(t, 'fill:default:b', 60);
    }
    await one(t, undefined, 10);
    const [a, b] = [limit.samples.at(-3)!, limit.samples.at(-2)!];
    expect(a.stratum).toEqual(limit.samples[0]!.stratum);
    expect(b.stratum).toEqual(limit.samples[2]!.stratum);
    expect(a.stratum).not.toEqual(b.stratum);
    // About two thirds and one third of the traffic (the shares decay, so not exactly).
    expect(a.stratumShare!).toBeGreaterThan(0.55);
    expect(b.stratumShare!).toBeGreaterThan(0.25);
    expect(a.stratumShare! + b.stratumShare!).toBeGreaterThan(0.95);
    expect(a.stratumShare! + b.stratumShare!).toBeLessThanOrEqual(1.01);
    // A sample of no class names none.
    expect(limit.samples.at(-1)).toMatchObject({ stratum: undefined, stratumShare: undefined });
  });

  it('reads a sample as it is with one class, without a class, or before its class has a no-load round trip', async () => {
    const t = setup({ limitN: 8 });
    const limit = t.limit as ScriptedLimit;
    for (let i = 0; i < 5; i++) await one(t, 'fill:default', 60);
    expect(limit.samples.map((s) => s.rttMs)).toEqual([60, 60, 60, 60, 60]);
    await one(t, undefined, 10);
    await one(t, 'forward:api', 10); // its first sample: no base yet
    expect(limit.samples.slice(-2).map((s) => s.rttMs)).toEqual([10, 10]);
  });

  it('with Gradient2: 40 % API calls of 10 ms among 60 ms page fills on an origin with room to spare keep their limit and are never refused (new-user trial)', async () => {
    const { clock, scheduler, limiter } = await gradient2Limiter(100);
    // An origin with unlimited capacity: every request takes its class's time (±20 %).
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const refusals: string[] = [];
    let minLimit = Infinity;
    // About 200 requests a second, arriving in bursts of 1-4 (clients that think, then ask).
    for (let t = 0; t < 30_000; t += 10) {
      const n = rand() < 0.5 ? 1 + Math.floor(rand() * 4) : 0;
      for (let i = 0; i < n; i++) {
        const api = rand() < 0.4;
        const ms = (api ? 10 : 60) * (0.8 + 0.4 * rand());
        const r = limiter.acquire({ priority: 0 });
        const onResult = (res: AcquireResult) => {
          if (!res.ok) return void refusals.push(res.reason);
          scheduler.setTimeout(() => res.permit.release('success', api ? 'forward:api' : 'fill:default'), ms);
        };
        if (r instanceof Promise) void r.then(onResult);
        else onResult(r);
      }
      scheduler.advance(10);
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (t > 5_000) minLimit = Math.min(minLimit, limiter.limit);
    }
    expect(refusals).toEqual([]);
    expect(minLimit).toBeGreaterThanOrEqual(6);
  });

  it('with Gradient2: the quiet seconds of a fresh start, while the classes become known, do not end slow start, and a jump to 1 000 requests a second on an origin with room is not refused', async () => {
    const { Gradient2Limit } = await import('../../../src/admission/limits/gradient2.js');
    // 40 % API calls of 10 ms among 60 ms pages (±20 %), an origin with unlimited capacity: a
    // request every 20 ms for 2 s, then one every millisecond (about 40 in flight). A window
    // holding a page's round trips as they were (before two classes were known) and judged on
    // the scale the mix is read on once they are read 70 ms pages against a 38 ms baseline as a
    // queue: slow start ended at 8 in the quiet, and 1 598 requests of one draw were refused.
    const endedInQuiet: number[] = [];
    const refusedBy: number[] = [];
    for (let draw = 1; draw <= 30; draw++) {
      const clock = new ManualClock(0);
      const scheduler = new ManualScheduler(clock);
      const limit = new Gradient2Limit({ initial: 8, min: 2, max: 256 });
      const limiter = new Limiter({
        limit,
        queue: { maxLength: 1000, deadlineMs: 500, codelTargetMs: 50, codelIntervalMs: 100, minWaitRoundTrips: 8 },
        classes: 1,
        clock,
        scheduler,
        slowLane: true,
      });
      let seed = draw * 7919;
      const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      let refused = 0;
      for (let t = 0; t < 6_000; t++) {
        if (rand() < (t < 2_000 ? 0.05 : 1)) {
          const api = rand() < 0.4;
          const ms = (api ? 10 : 60) * (0.8 + 0.4 * rand());
          const r = limiter.acquire({ priority: 0 });
          const onResult = (res: AcquireResult) => {
            if (!res.ok) return void refused++;
            scheduler.setTimeout(() => res.permit.release('success', api ? 'forward:api' : 'fill:default'), ms);
          };
          if (r instanceof Promise) void r.then(onResult);
          else onResult(r);
        }
        scheduler.advance(1);
        if (t % 10 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
        if (t === 1_999 && !limit.readings().slowStart) endedInQuiet.push(draw);
      }
      if (refused > 0) refusedBy.push(draw);
    }
    expect(endedInQuiet).toEqual([]);
    expect(refusedBy).toEqual([]);
  });
});

describe('Limiter with Gradient2 and two latency classes under a crowd', () => {
  it('still finds the origin saturated: in-flight within 1.6 C, the origin >= 90 % busy, the excess refused', async () => {
    const C = 8;
    const { clock, scheduler, limiter } = await gradient2Limiter(50);
    // The origin: C slots; API calls take 10 ms of a slot, page fills 60 ms; FIFO beyond that.
    let serving = 0;
    let busyFrom = 0;
    let busyMs = 0;
    let maxInflight = 0;
    const measureFromMs = 8_000;
    const waiting: Array<{ permit: Permit; api: boolean }> = [];
    const account = () => {
      const now = clock.now();
      if (now > measureFromMs) busyMs += (Math.min(serving, C) * (now - Math.max(busyFrom, measureFromMs))) / C;
      busyFrom = now;
    };
    const serve = (job: { permit: Permit; api: boolean }) => {
      account();
      serving++;
      scheduler.setTimeout(() => {
        account();
        serving--;
        job.permit.release('success', job.api ? 'forward:api' : 'fill:default');
        const next = waiting.shift();
        if (next) serve(next);
      }, job.api ? 10 : 60);
    };
    let refused = 0;
    let seed = 11;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const endMs = 14_000;
    for (let t = 0; t < endMs; t++) {
      // Before 3 s a quiet site (the classes learn their no-load round trips), then 10 x capacity.
      const n = t < 3_000 ? (rand() < 0.05 ? 1 : 0) : 2;
      for (let i = 0; i < n; i++) {
        const api = rand() < 0.4;
        const r = limiter.acquire({ priority: 0 });
        const onResult = (res: AcquireResult) => {
          if (!res.ok) return void refused++;
          const job = { permit: res.permit, api };
          if (serving < C) serve(job);
          else waiting.push(job);
          if (clock.now() > measureFromMs) maxInflight = Math.max(maxInflight, serving + waiting.length);
        };
        if (r instanceof Promise) void r.then(onResult);
        else onResult(r);
      }
      scheduler.advance(1);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    account();
    expect(busyMs / (endMs - measureFromMs)).toBeGreaterThanOrEqual(0.9);
    expect(maxInflight).toBeLessThanOrEqual(1.6 * C);
    expect(refused).toBeGreaterThan(10_000);
  });
});

describe('Limiter: a client waits at least a few round trips (queue.minWaitRoundTrips)', () => {
  const patient = { ...queue, minWaitRoundTrips: 8 };
  /** One permit held by `a`, then `b` queued behind it with the default 500 ms deadline. */
  async function behindOne(t: ReturnType<typeof setup>, b: Parameters<Limiter['acquire']>[0]) {
    const a = t.limiter.acquire({ priority: 1 });
    if (a instanceof Promise || !a.ok) throw new Error('a was not granted');
    const waiting = t.limiter.acquire(b);
    expect(waiting).toBeInstanceOf(Promise);
    return { a: a.permit, waiting: waiting as Promise<AcquireResult> };
  }

  it('against 300 ms answers, a queued request waits 8 round trips, not the 500 ms deadline, and is served', async () => {
    const t = setup({ limitN: 1, queue: patient });
    await t.teach(300);
    const { a, waiting } = await behindOne(t, { priority: 1 });
    t.scheduler.advance(1_500); // past 500 ms, within 8 × 300 = 2 400 ms
    a.release('success');
    await expect(waiting).resolves.toMatchObject({ ok: true, waitedMs: 1_500 });
  });

  // 8 round trips of 3 s: 5 s at most, however slow the origin. (With 300 ms round trips and
  // the one permit held throughout, the origin answers nothing: a stall, also 5 s; below.)
  it.each([
    [300, 5_000, 'stalled'],
    [3_000, 5_000, 'deadline'],
  ])('still ends the wait: round trip %i ms, after %i ms (%s)', async (rttMs, waitMs, reason) => {
    const t = setup({ limitN: 1, queue: patient });
    await t.teach(rttMs);
    const { waiting } = await behindOne(t, { priority: 1 });
    t.scheduler.advance(waitMs);
    await expect(waiting).resolves.toMatchObject({ ok: false, reason, waitedMs: waitMs });
  });

  it('the deadline alone with 0, for a background refresh or a probe (fixedDeadline), or before a round trip is known', async () => {
    for (const [q, opts, teachMs] of [
      [{ ...queue, minWaitRoundTrips: 0 }, {}, 300],
      [patient, { fixedDeadline: true }, 300],
      [patient, {}, 0],
    ] as const) {
      const t = setup({ limitN: 1, queue: q });
      if (teachMs > 0) await t.teach(teachMs);
      const { waiting } = await behindOne(t, { priority: 1, ...opts });
      t.scheduler.advance(500);
      await expect(waiting).resolves.toMatchObject({ ok: false, reason: 'deadline', waitedMs: 500 });
    }
  });

  it('a request queued before any round trip was known waits the round trips once one is (a fresh gateway\'s first clients), and still ends its wait then', async () => {
    const t = setup({ limitN: 1, queue: patient });
    // Nothing known yet: a holds the permit, b and c queue with the 500 ms deadline.
    const { a, waiting: b } = await behindOne(t, { priority: 1 });
    const c = t.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    t.scheduler.advance(200);
    a.release('success'); // the first round trip: 200 ms; b gets the permit
    const gotB = await b;
    if (!gotB.ok) throw new Error('b was not granted');
    // c waits 8 x 200 ms from its arrival, not 500.
    t.scheduler.advance(700);
    gotB.permit.release('success');
    await expect(c).resolves.toMatchObject({ ok: true, waitedMs: 900 });
    // Without a round trip known before 500 ms (nor minWaitRoundTrips), c was refused at 500.
    const u = setup({ limitN: 1, queue: patient });
    const { waiting: b2 } = await behindOne(u, { priority: 1 });
    const c2 = u.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    u.scheduler.advance(500);
    await expect(c2).resolves.toMatchObject({ ok: false, reason: 'deadline', waitedMs: 500 });
    void b2;
    // And one whose endpoint's first round trip is known extends by its own: 8 x 300 ms = 2 400.
    const v = setup({ limitN: 1, queue: patient });
    const first = v.limiter.acquire({ priority: 1, latencyClass: 'fill:default:page' });
    if (first instanceof Promise || !first.ok) throw new Error('not granted');
    const page = v.limiter.acquire({ priority: 1, latencyClass: 'fill:default:page' }) as Promise<AcquireResult>;
    const pageAfter = v.limiter.acquire({ priority: 1, latencyClass: 'fill:default:page' }) as Promise<AcquireResult>;
    v.scheduler.advance(300);
    first.permit.release('success', 'fill:default:page');
    const p1 = await page;
    if (!p1.ok) throw new Error('page not granted');
    // 2 400 from its arrival its wait would end, as for any; but the one permit has been held
    // since (the origin answers nothing: a stall), so it waits on to 5 s.
    v.scheduler.advance(2_100);
    v.scheduler.advance(2_600);
    await expect(pageAfter).resolves.toMatchObject({ ok: false, reason: 'stalled', waitedMs: 5_000 });
  });

  it('waits through a stall (the origin answers nothing) past its deadline, up to 5 s, and is served when the origin answers again; an origin that answers others still ends it at its deadline (new-user trial: a 2.5 s event-loop stall)', async () => {
    // Stalled: both permits held, none released, for 2.5 s; the waiter is served at once after.
    const t = setup({ limitN: 2, queue: patient });
    await t.teach(20, 3); // typical 20 ms: 8 round trips are 160, the 500 ms deadline stands
    const held = [t.limiter.acquire({ priority: 1 }), t.limiter.acquire({ priority: 1 })];
    const waiting = t.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    let settled: AcquireResult | undefined;
    void waiting.then((r) => (settled = r));
    t.scheduler.advance(2_500);
    await t.flush();
    expect(settled).toBeUndefined(); // not refused at 500 ms
    for (const h of held) if (!(h instanceof Promise) && h.ok) h.permit.release('success');
    await expect(waiting).resolves.toMatchObject({ ok: true, waitedMs: 2_500 });
    // The answer that ends a stall read before the waiter's re-check timer runs (Node runs due
    // timers in a later phase than I/O): it is served, not refused at its past re-check (review).
    const r = setup({ limitN: 2, queue: patient });
    await r.teach(20, 3);
    const stuck = [r.limiter.acquire({ priority: 1 }), r.limiter.acquire({ priority: 1 })];
    const kept = r.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    r.scheduler.advance(1_599);
    await r.flush();
    r.clock.advance(1); // the re-check due at 1 600 has not run
    const back = stuck[0]!;
    if (!(back instanceof Promise) && back.ok) back.permit.release('success');
    await expect(kept).resolves.toMatchObject({ ok: true, waitedMs: 1_600 });
    // Hung for good: refused 5 s after its arrival, saying a stall was waited through (`stalled`).
    const u = setup({ limitN: 1, queue: patient });
    await u.teach(20, 3);
    u.limiter.acquire({ priority: 1 });
    const hung = u.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    u.scheduler.advance(5_000);
    await expect(hung).resolves.toMatchObject({ ok: false, reason: 'stalled', waitedMs: 5_000 });
    // Answering others (a more important class takes each permit freed): the deadline holds.
    const v = setup({ limitN: 1, queue: patient });
    await v.teach(20, 3);
    const first = v.limiter.acquire({ priority: 1 });
    if (first instanceof Promise || !first.ok) throw new Error('not granted');
    let current = first.permit;
    const low = v.limiter.acquire({ priority: 2 }) as Promise<AcquireResult>;
    let lowResult: AcquireResult | undefined;
    void low.then((r) => (lowResult = r));
    for (let at = 0; at < 600 && lowResult === undefined; at += 20) {
      const next = v.limiter.acquire({ priority: 0 });
      v.scheduler.advance(20);
      current.release('success');
      const got = await next;
      if (!got.ok) throw new Error('the important class was refused');
      current = got.permit;
      await v.flush();
    }
    expect(lowResult).toMatchObject({ ok: false, reason: 'deadline', waitedMs: 500 });
  });

  it('an arrival during a young stall queues rather than being refused at once by the forecast; past 5 s of silence the forecast refuses again (failure-day trial: 58-81 refused predicted_wait in the first second of each 2.5 s lock)', async () => {
    const t = setup({ limitN: 2, queue: patient });
    await t.teach(20, 3);
    const held = [t.limiter.acquire({ priority: 1 }), t.limiter.acquire({ priority: 1 })];
    const waiting = Array.from({ length: 30 }, () => t.limiter.acquire({ priority: 1 }));
    expect(waiting.every((w) => w instanceof Promise)).toBe(true);
    t.scheduler.advance(1_000); // nothing answered for a second: a stall
    await t.flush();
    const arrival = t.limiter.acquire({ priority: 1 });
    expect(arrival, 'not refused at arrival').toBeInstanceOf(Promise);
    // The origin answers again: every one of them is served in turn.
    let holders = held.map((h) => (h instanceof Promise || !h.ok ? undefined : h.permit));
    const all = [...waiting, arrival] as Promise<AcquireResult>[];
    const results: (AcquireResult | undefined)[] = all.map(() => undefined);
    all.forEach((w, i) => void w.then((r) => (results[i] = r)));
    for (let round = 0; round < 20 && results.some((r) => r === undefined); round++) {
      for (const p of holders) p?.release('success');
      await t.flush();
      holders = results.filter((r): r is AcquireResult & { ok: true } => r !== undefined && r.ok).map((r) => r.permit);
      t.scheduler.advance(20);
    }
    expect(results.every((r) => r?.ok === true)).toBe(true);
    // Hung for good: past 5 s of silence an arrival is judged by the forecast again.
    const u = setup({ limitN: 1, queue: patient });
    await u.teach(20, 3);
    u.limiter.acquire({ priority: 1 });
    u.scheduler.advance(5_100);
    await u.flush();
    const late = Array.from({ length: 60 }, () => u.limiter.acquire({ priority: 1 }));
    expect(late.filter((r) => !(r instanceof Promise) && !r.ok && r.reason === 'predicted_wait').length).toBeGreaterThan(0);
  });

  it('a backlog kept through a stall drains when the origin answers again, not refused `stalled` at its next look (normal-day bench with a 1.5 s lock every 10 s: 3-11 quick pages refused as each ended)', async () => {
    // One permit, held through a 1.5 s stall; ten requests wait behind it. The origin answers
    // again at 1.5 s and then each request in 20 ms: the last is served 200 ms after the stall.
    const t = setup({ limitN: 1, queue: patient });
    await t.teach(20, 3);
    const first = t.limiter.acquire({ priority: 1 });
    if (first instanceof Promise || !first.ok) throw new Error('not granted');
    const waiting = Array.from({ length: 10 }, () => t.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>);
    const results: (AcquireResult | undefined)[] = waiting.map(() => undefined);
    waiting.forEach((w, i) => void w.then((r) => (results[i] = r)));
    t.scheduler.advance(1_500);
    await t.flush();
    expect(results.every((r) => r === undefined)).toBe(true);
    let holder = first.permit;
    for (let i = 0; i < 10; i++) {
      holder.release('success');
      await t.flush();
      const got = results[i];
      expect(got, `request ${i}`).toMatchObject({ ok: true });
      if (got === undefined || !got.ok) break;
      holder = got.permit;
      t.scheduler.advance(20);
    }
    holder.release('success');
    expect(results.map((r) => r?.ok)).toEqual(Array(10).fill(true));
  });

  it('and again when the typical round trip has grown by a quarter since (from a first quick answer toward the mix\'s)', async () => {
    const t = setup({ limitN: 2, queue: patient });
    await t.teach(50); // typical 50 ms: 8 of them are 400, so the 500 ms deadline stands
    const a1 = t.limiter.acquire({ priority: 1 });
    const a2 = t.limiter.acquire({ priority: 1 });
    if (a1 instanceof Promise || !a1.ok || a2 instanceof Promise || !a2.ok) throw new Error('not granted');
    const b = t.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    const c = t.limiter.acquire({ priority: 1 }) as Promise<AcquireResult>;
    t.scheduler.advance(450);
    a1.permit.release('success'); // typical 50 + 0.1 x 400 = 90 ms: 8 of them are 720
    expect((await b).ok).toBe(true);
    t.scheduler.advance(250);
    a2.permit.release('success');
    await expect(c).resolves.toMatchObject({ ok: true, waitedMs: 700 });
  });

  it('uses the request\'s own endpoint\'s round trip when the site\'s cheap endpoints make the typical one short (the block editor\'s REST calls)', async () => {
    const t = setup({ limitN: 1, queue: patient });
    await one(t, 'forward:default:wp-json', 400);
    for (let i = 0; i < 30; i++) await one(t, 'forward:default:wp-admin.js', 3); // typical round trip now ~20 ms
    const rest = await behindOne(t, { priority: 1, latencyClass: 'forward:default:wp-json' });
    t.scheduler.advance(2_000); // within 8 × ~400 ms
    rest.a.release('success');
    await expect(rest.waiting).resolves.toMatchObject({ ok: true });
  });
  it('keeps telling endpoints apart after a client requested more of them than MAX_LATENCY_CLASSES: the least used class gives way', async () => {
    for (const cls of ['forward:default:reports', 'forward:default:wp-json']) {
      const t = setup({ limitN: 1, queue: patient });
      for (let i = 0; i < 10; i++) await one(t, 'forward:default:wp-json', 400);
      for (let i = 0; i < MAX_LATENCY_CLASSES + 10; i++) await one(t, `forward:default:junk${i}`, 3);
      for (let i = 0; i < 3; i++) await one(t, 'forward:default:reports', 400); // an endpoint seen after the junk
      const { a, waiting } = await behindOne(t, { priority: 1, latencyClass: cls });
      t.scheduler.advance(2_000); // within 8 × ~400 ms; 8 typical round trips (~110 ms) are 0.9 s
      a.release('success');
      await expect(waiting).resolves.toMatchObject({ ok: true });
    }
  });
});

describe('Limiter: the forecast counts each waiter ahead as its own endpoint\'s round trip', () => {

  it('admits a burst of 40 cheap scripts behind slow pages, and still refuses the pages\' own work past the deadline (HTTP/2: a WordPress editor\'s page load, all at once)', async () => {
    const t = setup({ limitN: 2 });
    for (let i = 0; i < 10; i++) await one(t, 'forward:default:', 400);
    for (let i = 0; i < 3; i++) await one(t, 'forward:default:wp-includes.js', 10); // the site's round trip is still ~290 ms
    t.request('page-a');
    t.request('page-b'); // both permits held
    // Counted at the site's round trip, (k + 1) × 290 / 2 > 500 ms from the third on.
    for (let i = 0; i < 40; i++) expect(t.request(`script${i}`, 1, { latencyClass: 'forward:default:wp-includes.js' })).toBeInstanceOf(Promise);
    // 40 × 10 ms ahead: a page (400 ms) fits once, (400 + 290) / 2 ≤ 500; a second would wait (800 + 290) / 2.
    expect(t.request('page-c', 1, { latencyClass: 'forward:default:' })).toBeInstanceOf(Promise);
    expect(t.request('page-d', 1, { latencyClass: 'forward:default:' })).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });

  it('learns a slow endpoint\'s round trip from its overdue answers (WordPress\'s REST calls at 0.7 s among 100 ms pages)', async () => {
    const t = setup({ limitN: 1, slowLane: true, queue: { ...queue, minWaitRoundTrips: 8 } });
    // Overdue after 600 ms: 3/4 of the 800 ms a page's waiter waits (8 x 100 ms).
    for (let i = 0; i < 20; i++) await one(t, 'forward:default:', 100);
    await one(t, 'forward:default:wp-json', 700); // overdue: not fed to the limit, but its endpoint's round trip
    t.request('page'); // holds the permit
    const rest = t.limiter.acquire({ priority: 1, latencyClass: 'forward:default:wp-json' });
    expect(rest).toBeInstanceOf(Promise);
    t.scheduler.advance(1_000); // the page steps aside at 600 ms: past the 500 ms deadline, within 8 × 700 ms
    await expect(rest).resolves.toMatchObject({ ok: true, waitedMs: 600 });
  });

  it('sets a permit aside before a waiter behind it reaches its deadline: at most 3/4 of the least a waiter waits (a fresh gateway\'s long-polls ahead of pages)', async () => {
    const t = setup({ limitN: 2, slowLane: true, queue: { ...queue, minWaitRoundTrips: 8 } });
    for (let i = 0; i < 20; i++) await one(t, 'forward:default:', 60);
    // 10 x 60 ms would be 600 ms; a waiter waits max(500 ms, 8 x 60 ms) = 500 ms.
    expect(t.limiter.overdueAfterMs).toBe(375);
    t.request('poll-1', 1, { latencyClass: 'forward:default:ev' });
    t.request('poll-2', 1, { latencyClass: 'forward:default:ev' }); // every permit held, for seconds
    const page = t.limiter.acquire({ priority: 1, latencyClass: 'forward:default:' });
    expect(page).toBeInstanceOf(Promise);
    t.scheduler.advance(1_000);
    await expect(page).resolves.toMatchObject({ ok: true, waitedMs: 375 });
  });

  it('counts a waiting slow request at most the overdue threshold: its permit steps aside then', async () => {
    const t = setup({ limitN: 2, slowLane: true });
    for (let i = 0; i < 20; i++) await one(t, 'forward:default:', 60); // overdue after 600 ms
    await one(t, 'forward:default:reports', 5_000);
    t.request('page-a');
    t.request('page-b'); // both permits held
    expect(t.request('report', 1, { latencyClass: 'forward:default:reports' })).toBeInstanceOf(Promise);
    // The report ahead counts 600 ms, not 5 s: (600 + 60) / 2 ≤ 500 ms.
    expect(t.request('page-c', 1, { latencyClass: 'forward:default:' })).toBeInstanceOf(Promise);
  });

  it('under a standing queue, admits a cheap request behind two slow ones within its deadline: the allowance is 8 requests ahead, whatever they cost', async () => {
    const t = setup({ limitN: 4, queue: { ...queue, minWaitRoundTrips: 8 } });
    for (let i = 0; i < 20; i++) await one(t, 'forward:default:', 80);
    await one(t, 'forward:default:wp-json', 700);
    for (const name of ['p1', 'p2', 'p3', 'p4']) t.request(name); // every permit held
    t.request('rest-1', 1, { latencyClass: 'forward:default:wp-json' });
    t.request('rest-2', 1, { latencyClass: 'forward:default:wp-json' });
    t.scheduler.advance(110);
    // (2 × 700 + ~80) / 4 = 370 ms: within the script's deadline (8 × ~80 ms), beyond the CoDel
    // target and beyond the time 8 permits of ~80 ms take to come free (160 ms).
    expect(t.request('script', 1, { latencyClass: 'forward:default:wp-includes.js' })).toBeInstanceOf(Promise);
    expect(t.limiter.isQueueStanding).toBe(true);
  });

  it('under a standing queue, admits 20 cheap scripts asked for at once past 8 ahead while their work is no more than 8 typical requests\' (HTTP/2 page load)', async () => {
    const t = setup({ limitN: 4, queue: { ...queue, minWaitRoundTrips: 8 } });
    for (let i = 0; i < 20; i++) await one(t, 'forward:default:', 80);
    for (let i = 0; i < 3; i++) await one(t, 'forward:default:wp-includes.js', 10); // site's round trip now ~61 ms
    for (const name of ['p1', 'p2', 'p3', 'p4']) t.request(name); // every permit held
    t.request('page-1', 1, { latencyClass: 'forward:default:' });
    t.request('page-2', 1, { latencyClass: 'forward:default:' });
    t.scheduler.advance(110);
    // The 20th: (2 × 80 + 19 × 10 + 61) / 4 ≈ 103 ms, within 8 × 61 / 4 ≈ 122 ms.
    for (let i = 0; i < 20; i++) expect(t.request(`script${i}`, 1, { latencyClass: 'forward:default:wp-includes.js' })).toBeInstanceOf(Promise);
    expect(t.limiter.isQueueStanding).toBe(true);
    expect(t.request('stale-able', 1, { fixedDeadline: true })).toMatchObject({ ok: false, reason: 'predicted_wait' }); // keeps the 20 ms cap
    let pages = 0;
    while (t.request(`page-${3 + pages}`, 1, { latencyClass: 'forward:default:' }) instanceof Promise) pages++;
    expect(pages).toBeLessThan(3); // past 8 ahead and 8 typical requests' work: the CoDel target
  });

  it('prices the waiters queued before any round trip was known at the first one', async () => {
    const t = setup({ limitN: 1, queue: { ...queue, codelTargetMs: 1_000, deadlineMs: 450 } });
    t.request('a');
    for (let i = 0; i < 5; i++) t.request(`w${i}`); // no round trip known: no forecast, all queue
    t.clock.advance(100);
    t.granted('a').release('success'); // 100 ms; w0 takes the permit, 4 wait
    await t.flush();
    // 4 waiters ahead at 100 ms each, plus a round trip, over 1 permit: 500 ms > 450 ms.
    expect(t.request('late')).toMatchObject({ ok: false, reason: 'predicted_wait' });
  });
});

describe('Limiter: under a standing queue, a client is held to the CoDel cap only with 8 requests ahead', () => {
  /** Limit 2, a 400 ms round trip, the permits held and one waiter for a whole CoDel interval: standing. */
  function standing(minWaitRoundTrips: number) {
    const t = setup({ limitN: 2, queue: { maxLength: 100, deadlineMs: 10_000, codelTargetMs: 20, codelIntervalMs: 100, minWaitRoundTrips } });
    for (const name of ['warm-a', 'warm-b']) t.request(name);
    t.scheduler.advance(400);
    t.granted('warm-a').release('success');
    t.granted('warm-b').release('success'); // round trip 400 ms
    t.request('holder-a');
    t.request('holder-b');
    t.request('w1');
    t.scheduler.advance(110);
    return t;
  }

  it('admits a request with up to 7 ahead where the 20 ms CoDel target refused it (a browser\'s 6 connections: a WordPress editor\'s scripts while readers kept 4 PHP workers busy)', () => {
    const t = standing(8);
    expect(t.request('a')).toBeInstanceOf(Promise); // (1 ahead + 1) × 400 / 2 = 400 ms, within its deadline
    expect(t.limiter.isQueueStanding).toBe(true);
    // A request a stale copy answers keeps the CoDel cap: it yields the permits (600 ms > 20 ms).
    expect(t.request('stale-able', 1, { fixedDeadline: true })).toMatchObject({ ok: false, reason: 'predicted_wait' });
    for (const name of ['b', 'c', 'd', 'e', 'f', 'g']) expect(t.request(name)).toBeInstanceOf(Promise); // 2 … 7 ahead
    expect(t.request('h')).toMatchObject({ ok: false, reason: 'predicted_wait' }); // 8 ahead: 1 800 ms > 20 ms
  });

  it('lets a request a client waits for, once admitted, wait to its deadline: the forecast was short, cutting it only fails it late (a WordPress editor\'s scripts cut at 160-210 ms)', async () => {
    const t = standing(8);
    const a = t.request('a'); // forecast 400 ms, bound 1 600 ms, deadline 10 s
    t.scheduler.advance(1_800); // the permits still held: past the bound, not the deadline
    expect(t.limiter.queueLength).toBe(2);
    t.granted('holder-a').release('success');
    t.granted('holder-b').release('success');
    await expect(a).resolves.toMatchObject({ ok: true });
    expect(t.outcomes.filter((o) => !o.result.ok)).toEqual([]);
  });

  it('keeps the CoDel target with minWaitRoundTrips 0', () => {
    const t = standing(0);
    expect(t.request('a')).toMatchObject({ ok: false, reason: 'predicted_wait' }); // 400 ms > 20 ms
    expect(t.limiter.isQueueStanding).toBe(true);
  });
});

describe('latencyClassOf: a route\'s endpoints', () => {
  it('names the first segment with the last one\'s extension, a single segment only when it names a file', () => {
    expect(endpointOf('/wp-json/wp/v2/users')).toBe('wp-json');
    expect(endpointOf('/wp-admin/js/postbox.min.js')).toBe('wp-admin.js');
    expect(endpointOf('/wp-admin/post-new.php')).toBe('wp-admin.php');
    expect(endpointOf('/index.php')).toBe('index.php');
    expect(endpointOf('/API.PHP')).toBe('API.PHP');
    expect(endpointOf('/')).toBe('');
    expect(endpointOf('/about')).toBe('');
    expect(endpointOf('/a-post-slug/')).toBe('');
    expect(endpointOf('/2024/05/a-post/')).toBe('2024');
    expect(endpointOf(`/${'x'.repeat(100)}/y`)).toBe('x'.repeat(40));
    expect(latencyClassOf('forward', 'default', '/wp-json/wp/v2/users')).toBe('forward:default:wp-json');
  });
});

describe('Limiter: several gateways in front of one origin', () => {
  /** A limit that probes on demand, as gradient2 does (Limit.joinProbe, Limit.onProbe). */
  class ProbingLimit extends ScriptedLimit {
    onProbe: (() => void) | undefined = undefined;
    joined: number[] = [];
    joinProbe(now: number): boolean {
      this.joined.push(now);
      return true;
    }
  }

  it('tells the limit what the other gateways had in flight when each permit was granted (LimitSample.peerInflight)', () => {
    let peers = 5;
    const { limiter, limit, clock } = setup({ limitN: 3, peerInflight: () => peers });
    const a = limiter.tryAcquire()!;
    peers = 9;
    const b = limiter.tryAcquire()!;
    peers = 0;
    clock.advance(30);
    b.release('success');
    a.release('success');
    expect((limit as ScriptedLimit).samples.map((s) => s.peerInflight)).toEqual([9, 5]);
  });

  it('passes another gateway\'s probe to its limit and the limit\'s own probes on, the replaced limit\'s no more', () => {
    const { limiter, limit, clock } = setup({ limit: new ProbingLimit(4) });
    const told: string[] = [];
    limiter.onProbe = () => told.push('probe');
    clock.advance(7);
    expect(limiter.joinProbe()).toBe(true);
    expect((limit as ProbingLimit).joined).toEqual([7]);
    (limit as ProbingLimit).onProbe?.();
    expect(told).toEqual(['probe']);
    const next = new ProbingLimit(4);
    limiter.replaceLimit(next, true);
    expect((limit as ProbingLimit).onProbe).toBeUndefined();
    next.onProbe?.();
    expect(told).toEqual(['probe', 'probe']);
    // A limit that does not probe (fixed) joins nothing.
    limiter.replaceLimit(new FixedLimit(4), false);
    expect(limiter.joinProbe()).toBe(false);
  });
});

describe('Limiter: time saturated (crowdgate_origin_saturated_seconds_total)', () => {
  it('counts the time every permit was in use with a request waiting, and only that', async () => {
    const { limiter, clock, request, granted, flush } = setup({ limitN: 1 });
    request('a');
    await flush();
    clock.advance(100); // every permit in use, nobody waiting: not saturated
    expect(limiter.saturatedSeconds()).toBe(0);
    request('b');
    clock.advance(40);
    expect(limiter.saturatedSeconds()).toBeCloseTo(0.04, 9); // counted while it lasts
    clock.advance(60);
    granted('a').release('success');
    await flush();
    clock.advance(500); // b holds the permit, nobody waits
    expect(limiter.saturatedSeconds()).toBeCloseTo(0.1, 9);
    request('c');
    clock.advance(30);
    granted('b').release('success');
    await flush();
    granted('c').release('success');
    clock.advance(1_000);
    expect(limiter.saturatedSeconds()).toBeCloseTo(0.13, 9);
  });
});

describe('Limiter: time saturated while a no-load probe holds the limit down', () => {
  it('is not counted: the queue is the probe\'s, for a few round trips', async () => {
    class ProbeHeld extends ScriptedLimit {
      planning = 4;
    }
    const { limiter, clock, request, granted, flush } = setup({ limit: new ProbeHeld(1) });
    request('a');
    await flush();
    request('b');
    clock.advance(200);
    expect(limiter.saturatedSeconds()).toBe(0);
    granted('a').release('success');
    await flush();
    granted('b').release('success');
  });
});

describe('Limiter: room an overdue permit leaves', () => {
  it('goes to the request waiting for it when another caller moves the permit aside (review: it waited for the next release)', async () => {
    const { limiter, clock, request, outcomes, flush, teach } = setup({ limitN: 1, slowLane: true });
    await teach(10, 3); // a typical round trip of 10 ms: overdue after 100 ms
    request('slow');
    await flush();
    request('waiting');
    await flush();
    expect(outcomes.map((o) => o.name)).not.toContain('waiting');
    clock.advance(150);
    // An arrival's check for a free permit moves the overdue one aside: the waiter gets the room.
    expect(limiter.hasFreePermit).toBe(false);
    await flush();
    expect(outcomes.find((o) => o.name === 'waiting')?.result.ok).toBe(true);
    expect(limiter.saturatedSeconds()).toBeCloseTo(0.15, 9);
  });
});

describe('Limiter: the ceiling once a no-load probe ends', () => {
  it('is never passed: the slow lane filled during the probe counts (review: 7 in flight under a ceiling of 4)', async () => {
    class Probing extends ScriptedLimit {
      planning: number | undefined = 4;
    }
    const limit = new Probing(1); // a probe holds the limit at 1 of 4
    const { limiter, clock, request, flush, teach } = setup({ limit, ceiling: 4, slowLane: true });
    await teach(10, 3); // overdue after 100 ms
    for (let i = 0; i < 4; i++) {
      request(`slow${i}`); // each steps aside once overdue, while the probe lasts
      await flush();
      clock.advance(150);
    }
    expect(limiter.inflight).toBe(4);
    // The probe ends: the limit is 4 again, with four requests at the origin already.
    limit.current = 4;
    limit.planning = undefined;
    for (let i = 0; i < 3; i++) request(`next${i}`);
    await flush();
    expect(limiter.inflight).toBeLessThanOrEqual(4);
    expect(limiter.queueLength).toBe(3);
  });
});

describe('Limiter: a latency class learns its no-load round trip only from an origin lightly used, the other gateways\' requests included', () => {
  it('does not take round trips beside the others\' queue as the class\'s own', async () => {
    let peers = 0;
    const { limiter, limit, clock } = setup({ limitN: 8, peerInflight: () => peers });
    const one = async (cls: string, ms: number) => {
      const r = limiter.acquire({ priority: 1, latencyClass: cls });
      const res = r instanceof Promise ? await r : r;
      if (!res.ok) throw new Error('refused');
      clock.advance(ms);
      res.permit.release('success', cls);
    };
    for (let i = 0; i < 4; i++) {
      await one('fill:a', 10);
      await one('fill:b', 100);
    }
    const baseOf = (cls: string): number => (limiter['latency'] as unknown as { classes: Map<string, { base: number }> }).classes.get(cls)!.base;
    expect(baseOf('fill:b')).toBeCloseTo(100, 6);
    // The others keep the origin busy: b's answers take 300 ms, queueing behind their requests.
    peers = 20;
    for (let i = 0; i < 20; i++) await one('fill:b', 300);
    expect(baseOf('fill:b')).toBeCloseTo(100, 6);
    expect((limit as ScriptedLimit).samples.length).toBeGreaterThan(20);
  });
});

describe("Limiter: slow endpoints' share of the origin", () => {
  /**
   * An origin with `workers` workers and a FIFO backlog (Apache prefork, php-fpm), Gradient2 in
   * front, in virtual time: 40 readers of 10 ms pages (think 500 ms), and from 5 s on, 8 clients
   * asking a 10 s page over and over (busy-workers bench). Deterministic: no randomness.
   */
  async function busyOrigin(
    workers: number,
    opts: { endMs?: number; hogsUntil?: number; stallAt?: number; stallMs?: number; slowShare?: boolean; readMs?: number; slowMs?: number; hogs?: number; hogsAt?: number; readers?: number; thinkMs?: number; lateFrom?: number; reportOnceAt?: number; reportOnceCosts?: boolean; editorsFrom?: number } = {},
  ) {
    const lateFrom = opts.lateFrom ?? 30_000;
    const { Gradient2Limit } = await import('../../../src/admission/limits/gradient2.js');
    const clock = new ManualClock(0);
    const scheduler = new ManualScheduler(clock);
    const limiter = new Limiter({
      limit: new Gradient2Limit({ initial: 8, min: 2, max: 256 }),
      queue: { maxLength: 1000, deadlineMs: 500, codelTargetMs: 50, codelIntervalMs: 100, minWaitRoundTrips: 8 },
      classes: 1,
      clock,
      scheduler,
      slowLane: true,
      slowShare: opts.slowShare ?? true,
    });
    const shares: (number | undefined)[] = [];
    const shareTimes: number[] = [];
    limiter.onSlowShare = (share) => {
      shares.push(share);
      shareTimes.push(clock.now());
    };
    let busy = 0;
    let slowAtOrigin = 0;
    let maxSlowAtOriginLate = 0;
    const backlog: (() => void)[] = [];
    const startWork = (ms: number, slow: boolean, done: () => void) => {
      busy++;
      if (slow) slowAtOrigin++;
      // A stall of the host: no work ends between stallAt and stallAt + stallMs; what would have
      // ends at the stall's end.
      const endAt = clock.now() + ms;
      const stallEnd = (opts.stallAt ?? 0) + (opts.stallMs ?? 0);
      const stall = opts.stallAt !== undefined && endAt >= opts.stallAt && endAt < stallEnd ? stallEnd - endAt : 0;
      scheduler.setTimeout(() => {
        busy--;
        if (slow) slowAtOrigin--;
        done();
        const next = backlog.shift();
        if (next) next();
      }, ms + stall);
    };
    const send = (ms: number, slow: boolean, done: () => void) => {
      if (clock.now() > lateFrom) maxSlowAtOriginLate = Math.max(maxSlowAtOriginLate, slowAtOrigin + (slow ? 1 : 0));
      if (busy < workers) startWork(ms, slow, done);
      else backlog.push(() => startWork(ms, slow, done));
    };
    const endMs = opts.endMs ?? 45_000;
    const readers = { answered: 0, late: [] as number[], refused: new Map<string, number>() };
    const hogs = { answered: 0, refused: new Map<string, number>() };
    const ask = (slow: boolean, i: number, again: () => void) => {
      const t0 = clock.now();
      // One latency class for both, as a route's top-level pages are: only their paths differ.
      const path = slow ? '/report' : `/page${i % 4}`;
      const latencyClass = 'fill:default:';
      const on = (r: AcquireResult) => {
        const into = slow ? hogs : readers;
        if (!r.ok) {
          into.refused.set(r.reason, (into.refused.get(r.reason) ?? 0) + 1);
          scheduler.setTimeout(again, slow ? 100 : 500);
          return;
        }
        send(slow ? (opts.slowMs ?? 10_000) : (opts.readMs ?? 10), slow, () => {
          r.permit.release('success', latencyClass);
          into.answered++;
          if (!slow && t0 >= lateFrom) readers.late.push(clock.now() - t0);
          scheduler.setTimeout(again, slow ? 10 : (opts.thinkMs ?? 500));
        });
      };
      const r = limiter.acquire({ priority: slow && opts.editorsFrom !== undefined ? 1 : 0, latencyClass, path });
      if (r instanceof Promise) void r.then(on);
      else on(r);
    };
    // From editorsFrom on, every 3 s, an editor (priority 0, the crowd's requests priority 1)
    // views the slow page once.
    const editors = { answered: 0, refused: 0 };
    if (opts.editorsFrom !== undefined)
      for (let at = opts.editorsFrom; at < endMs - 15_000; at += 3_000)
        scheduler.setTimeout(() => {
          const on = (r: AcquireResult) => {
            if (!r.ok) return void editors.refused++;
            send(opts.slowMs ?? 10_000, true, () => {
              r.permit.release('success', 'fill:default:');
              editors.answered++;
            });
          };
          const r = limiter.acquire({ priority: 0, latencyClass: 'fill:default:', path: '/report' });
          if (r instanceof Promise) void r.then(on);
          else on(r);
        }, at);
    // One request to the slow path answered at once (a 404 or a redirect when it does not measure
    // the path's cost, else a 200), before its clients come.
    if (opts.reportOnceAt !== undefined)
      scheduler.setTimeout(() => {
        const on = (r: AcquireResult) => r.ok && send(5, false, () => r.permit.release('success', 'fill:default:', opts.reportOnceCosts ?? false));
        const r = limiter.acquire({ priority: 0, latencyClass: 'fill:default:', path: '/report' });
        if (r instanceof Promise) void r.then(on);
        else on(r);
      }, opts.reportOnceAt);
    for (let i = 0; i < (opts.readers ?? 40); i++) {
      const reader = () => clock.now() < endMs && ask(false, i, reader);
      scheduler.setTimeout(reader, i * 12.5);
    }
    for (let i = 0; i < (opts.hogs ?? 8); i++) {
      const hog = () => clock.now() < (opts.hogsUntil ?? endMs) && ask(true, i, hog);
      scheduler.setTimeout(hog, (opts.hogsAt ?? 5_000) + i * 10);
    }
    // Every change of the share, cuts and lifts (onSlowShare) and the quieter steps too: [ms, share].
    const trace: [number, number | undefined][] = [];
    for (let t = 0; t < endMs; t += 5) {
      if (limiter.slowRequestsShare !== trace.at(-1)?.[1]) trace.push([t, limiter.slowRequestsShare]);
      scheduler.advance(5);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    readers.late.sort((a, b) => a - b);
    return { editors, trace, shares, shareTimes, readers, hogs, maxSlowAtOriginLate, limiter, p90Late: readers.late[Math.floor(0.9 * readers.late.length)] ?? Infinity };
  }

  it('an origin whose 5 workers are held by 10 s requests: their share is cut, and quick pages flow beside the few let through', async () => {
    const r = await busyOrigin(5);
    // Cut within a few seconds of the slow requests taking every worker, to half of those out.
    expect(r.shares[0]).toBeGreaterThanOrEqual(1);
    expect(r.shares[0]).toBeLessThanOrEqual(4);
    // Once the cut has taken effect, fewer slow requests than workers are at the origin, and
    // the readers' pages (10 ms of work) are answered in well under a second.
    expect(r.maxSlowAtOriginLate).toBeLessThan(5);
    expect(r.p90Late).toBeLessThan(200);
    expect(r.readers.late.length).toBeGreaterThan(400);
    // The slow page is still answered, a few at a time; the clients beyond the share wait at the
    // gateway and are refused `slow_share` past their deadline (5 s: 8 of its round trips, capped).
    expect(r.hogs.answered).toBeGreaterThanOrEqual(8);
    expect(r.hogs.refused.get('slow_share')).toBeGreaterThan(0);
  }, 60_000);

  it('a quick page answered within the clock\'s millisecond (0 ms) is still quick: the share is cut as for 10 ms pages (Apache trial: never again after one)', async () => {
    const r = await busyOrigin(5, { readMs: 0 });
    expect(r.shares[0]).toBeGreaterThanOrEqual(1);
    expect(r.p90Late).toBeLessThan(200);
  }, 60_000);

  for (const [hogsAt, settledBy, why] of [
    [1_000, 8_000, 'the cut to 3 of 6 out left every worker to them: as the 3 at work ended, 3 more went; the level quick pages were held under as it followed those out down is its ceiling, or it grew to every worker once more'],
    [0, 15_000, 'grown back to every worker, the share held every quick page for 2 s, every 5 s'],
  ] as const)
    it(`a 3-worker origin, six clients of a 2 s report from ${hogsAt} ms and eight closed-loop readers: the share settles one below every worker within ${settledBy / 1000} s and stays there (CI: ${why})`, async () => {
      const r = await busyOrigin(3, { slowMs: 2_000, hogs: 6, hogsAt, readers: 8, thinkMs: 50, endMs: 60_000, lateFrom: settledBy });
      // While quick pages are held a second, a report answered is not replaced (the share
      // follows those out down); it then grows no further than one below the level they were
      // held under.
      expect(r.trace.filter(([t]) => t >= settledBy), 'no change of the share after it settles').toEqual([]);
      expect(r.trace.at(-1)?.[1]).toBe(2);
      expect(r.maxSlowAtOriginLate, 'reports at work at once after it settles').toBe(2);
      expect(r.readers.late.filter((ms) => ms >= 1_000), 'quick pages held a second after it settles').toEqual([]);
      expect(r.p90Late).toBeLessThan(50);
      // Two reports at a time after it settles: 45 or more answered in 60 s.
      expect(r.hogs.answered).toBeGreaterThanOrEqual(45);
    }, 60_000);

  it('a slow path answered once at once with a 404 or a redirect is still slow: the share is cut as without it (review: one fast answer made it quick for good)', async () => {
    const r = await busyOrigin(5, { reportOnceAt: 1_000 });
    expect(r.shares[0]).toBeGreaterThanOrEqual(1);
    expect(r.maxSlowAtOriginLate).toBeLessThan(5);
    expect(r.p90Late).toBeLessThan(200);
  }, 60_000);

  it('a path answered quickly (a 200) 11 minutes before its 10 s clients come reads as slow again after their first answer: its least round trip ages', async () => {
    const hogsAt = 11 * 60_000;
    const r = await busyOrigin(5, { reportOnceAt: 1_000, reportOnceCosts: true, hogsAt, endMs: hogsAt + 45_000, lateFrom: hogsAt + 30_000, readers: 8 });
    expect(r.shares[0]).toBeGreaterThanOrEqual(1);
    expect(r.shareTimes[0]).toBeGreaterThan(hogsAt);
    expect(r.maxSlowAtOriginLate).toBeLessThan(5);
  }, 60_000);

  it('an editor\'s view of the slow page waits for the share ahead of the crowd\'s requests for it, not behind them to its deadline (Apache trial: editors were not exempt)', async () => {
    const r = await busyOrigin(5, { editorsFrom: 20_000, endMs: 60_000 });
    // Nine views, 3 s apart, of a page the share lets out 2-3 at a time, one every few seconds:
    // behind the crowd's 6-7 held requests none got a slot before its 5 s deadline.
    expect(r.editors.answered + r.editors.refused).toBe(9);
    expect(r.editors.answered).toBeGreaterThanOrEqual(4);
    expect(r.p90Late).toBeLessThan(200);
  }, 60_000);

  it('a 3-worker origin and six clients of a 2 s report for 15 minutes: the share stays one below every worker but for one probe a level up after 5 minutes, the next 10 minutes after it (review: every 5 minutes, or stuck at 1)', async () => {
    const r = await busyOrigin(3, { slowMs: 2_000, hogs: 6, hogsAt: 1_000, readers: 8, thinkMs: 50, endMs: 900_000, lateFrom: 15_000 });
    const after = r.trace.filter(([t]) => t >= 15_000);
    expect(after.every(([, share]) => share !== undefined && share <= 3)).toBe(true);
    const probes = after.filter(([, share]) => share === 3).map(([t]) => t);
    expect(probes).toHaveLength(1);
    expect(probes[0]).toBeGreaterThanOrEqual(300_000);
    expect(r.trace.at(-1)?.[1]).toBe(2);
    // The probe holds each reader's page once, for a report's round trip.
    expect(r.readers.late.filter((ms) => ms >= 1_000).length).toBeLessThanOrEqual(8);
    // Two reports at a time: 2 every 2 s.
    expect(r.hogs.answered).toBeGreaterThan(850);
  }, 120_000);

  it('a share that fell to 1 grows again once quick pages are answered promptly, to every worker once only (review: quick requests held a second without a cut kept it at 1 for good)', async () => {
    // It grows to every worker once (45 s), is cut and follows those out down to 1, grows back
    // to 4 (the ceiling is 5); a host stall of 1.2 s at 100 s cuts it again.
    const r = await busyOrigin(5, { stallAt: 100_000, stallMs: 1_200, endMs: 300_000 });
    const one = r.trace.findIndex(([, share]) => share === 1);
    expect(one).toBeGreaterThan(0);
    expect(r.trace.slice(one + 1).some(([, share]) => share !== undefined && share >= 3)).toBe(true);
    expect(r.trace.filter(([, share]) => share !== undefined && share >= 5)).toHaveLength(1);
    expect(r.trace.at(-1)?.[1]).toBeGreaterThanOrEqual(2);
    expect(r.hogs.answered).toBeGreaterThanOrEqual(80);
  }, 60_000);

  it('an origin with room that stalls for 1.5 s: the share cut then grows back to one below the stall\'s level, and is lifted once the ceiling is raised after 5 minutes (a misfire the rules bound)', async () => {
    const r = await busyOrigin(1_000, { stallAt: 20_000, stallMs: 1_500, endMs: 450_000 });
    expect(r.shares[0]).toBe(4);
    expect(r.trace.filter(([t]) => t < 300_000).at(-1)?.[1]).toBe(7);
    expect(r.trace.at(-1)?.[1]).toBeUndefined();
    expect(r.trace.at(-1)?.[0]).toBeLessThan(400_000);
    // One of the 8 clients beyond the share of 7 waits, and is refused after 5 s, now and then.
    expect(r.hogs.refused.get('slow_share') ?? 0).toBeLessThanOrEqual(40);
  }, 60_000);

  it('is off unless asked for (admission.limit.slowShare): the same origin sets no share, and nothing is held', async () => {
    const r = await busyOrigin(5, { slowShare: false });
    expect(r.shares).toEqual([]);
    expect(r.hogs.refused.get('slow_share') ?? 0).toBe(0);
    expect(r.p90Late).toBeGreaterThan(1_000);
  }, 60_000);

  it('the share is lifted 30 s after the last quick request held up or slow request held for it', async () => {
    const r = await busyOrigin(5, { endMs: 80_000, hogsUntil: 25_000 });
    expect(r.shares[0]).toBeGreaterThanOrEqual(1);
    expect(r.shares.at(-1)).toBeUndefined();
    // The slow clients stop at 25 s (the last ones held wait up to 5 s before that); the share
    // goes 30 s later, not before: slow requests waited for it until then.
    expect(r.shareTimes.at(-1)).toBeGreaterThanOrEqual(45_000);
    expect(r.shareTimes.at(-1)).toBeLessThan(65_000);
  }, 60_000);

  it('an origin with room for the slow requests never sets a share: nothing is held or refused', async () => {
    const r = await busyOrigin(1_000);
    expect(r.shares).toEqual([]);
    expect(r.readers.refused.size).toBe(0);
    expect(r.hogs.refused.size).toBe(0);
    expect(r.p90Late).toBeLessThan(20);
  }, 60_000);

  it('an origin with room that hangs for 3 s: a share is cut then, and costs only some of the slow requests right after it', async () => {
    const r = await busyOrigin(1_000, { endMs: 60_000, stallAt: 20_000, stallMs: 3_000 });
    // Every request out is held up by the hang, the 8 slow ones too: a share is cut then (to 4),
    // a misfire the rules bound. The 8 slow clients come back together after it; the share
    // grows by one each time a slow request is answered while quick ones are answered promptly,
    // so some of them wait at the gateway past their deadline (5 s) and are refused. Quick
    // pages are never held or refused.
    expect(r.shares[0]).toBe(4);
    expect(r.hogs.refused.get('slow_share') ?? 0).toBeLessThanOrEqual(12);
    expect(r.hogs.answered).toBeGreaterThanOrEqual(25);
    expect(r.readers.refused.size).toBe(0);
    expect(r.p90Late).toBeLessThan(20);
  }, 60_000);

  it('a host stall of 600 ms holds every request up at once: no share is set', async () => {
    const r = await busyOrigin(1_000, { endMs: 25_000, stallAt: 20_000, stallMs: 600 });
    expect(r.shares).toEqual([]);
    expect(r.hogs.refused.size).toBe(0);
  }, 60_000);
});
