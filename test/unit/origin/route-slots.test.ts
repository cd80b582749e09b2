/**
 * A route's cap on its origin requests at once (routes[].maxConcurrent): slots taken and given
 * back, waiters by priority then arrival, deadlines and aborts, a reloaded cap; and Upstream's
 * use of it (a refusal gives the slot back, a lease's finish gives it back once).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { admissionSchema, siteSchema } from '../../../src/config/schema.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';
import { OriginPool } from '../../../src/origin/pool.js';
import { RouteSlots } from '../../../src/origin/route-slots.js';
import { Upstream, type AdmitResult } from '../../../src/origin/upstream.js';
import { ManualScheduler } from '../admission/manual-scheduler.js';

function setup() {
  const clock = new ManualClock(1_000_000);
  const scheduler = new ManualScheduler(clock);
  return { clock, scheduler, slots: new RouteSlots(scheduler) };
}

/** A pending acquire's outcome, read after timers or releases ran. */
function track(p: boolean | Promise<boolean>): { result: boolean | undefined } {
  const t: { result: boolean | undefined } = { result: typeof p === 'boolean' ? p : undefined };
  if (typeof p !== 'boolean') void p.then((v) => (t.result = v));
  return t;
}
const flush = () => new Promise((r) => setImmediate(r));

describe('RouteSlots', () => {
  it('grants up to the cap at once, then makes the next wait for a slot given back', async () => {
    const { clock, slots } = setup();
    expect(slots.acquire(2, 1, clock.now() + 500, clock.now())).toBe(true);
    expect(slots.acquire(2, 1, clock.now() + 500, clock.now())).toBe(true);
    const third = track(slots.acquire(2, 1, clock.now() + 500, clock.now()));
    await flush();
    expect(third.result).toBeUndefined();
    expect(slots.inUse).toBe(2);
    expect(slots.queued).toBe(1);
    slots.release();
    await flush();
    expect(third.result).toBe(true);
    expect(slots.inUse).toBe(2);
    expect(slots.queued).toBe(0);
  });

  it('refuses a waiter at its deadline, and never grants it after', async () => {
    const { clock, scheduler, slots } = setup();
    expect(slots.acquire(1, 1, clock.now() + 500, clock.now())).toBe(true);
    const waiter = track(slots.acquire(1, 1, clock.now() + 500, clock.now()));
    scheduler.advance(499);
    await flush();
    expect(waiter.result).toBeUndefined();
    scheduler.advance(1);
    await flush();
    expect(waiter.result).toBe(false);
    slots.release();
    expect(slots.inUse).toBe(0);
    expect(slots.acquire(1, 1, clock.now() + 500, clock.now())).toBe(true);
    expect(scheduler.pending).toBe(0);
  });

  it('refuses a waiter whose signal aborts, and one whose deadline has passed at once', async () => {
    const { clock, slots } = setup();
    expect(slots.acquire(1, 1, clock.now() + 500, clock.now())).toBe(true);
    const abort = new AbortController();
    const waiter = track(slots.acquire(1, 1, clock.now() + 500, clock.now(), abort.signal));
    abort.abort();
    await flush();
    expect(waiter.result).toBe(false);
    expect(slots.queued).toBe(0);
    expect(slots.acquire(1, 1, clock.now(), clock.now())).toBe(false);
  });

  it('serves waiters by priority, then in arrival order; a newcomer never passes a waiter', async () => {
    const { clock, slots } = setup();
    expect(slots.acquire(1, 1, clock.now() + 500, clock.now())).toBe(true);
    const order: string[] = [];
    const ask = (name: string, priority: number) => {
      const p = slots.acquire(1, priority, clock.now() + 500, clock.now());
      if (typeof p !== 'boolean') void p.then((ok) => ok && order.push(name));
    };
    ask('crowd-1', 2);
    ask('editor', 0);
    ask('crowd-2', 2);
    ask('reader', 1);
    for (let i = 0; i < 4; i++) {
      slots.release();
      await flush();
    }
    expect(order).toEqual(['editor', 'reader', 'crowd-1', 'crowd-2']);
    slots.release();
    expect(slots.inUse).toBe(0);
  });

  it('applies a raised cap at the next request: the waiters go first', async () => {
    const { clock, slots } = setup();
    expect(slots.acquire(1, 1, clock.now() + 500, clock.now())).toBe(true);
    const waiter = track(slots.acquire(1, 1, clock.now() + 500, clock.now()));
    const next = slots.acquire(3, 1, clock.now() + 500, clock.now());
    await flush();
    expect(waiter.result).toBe(true);
    expect(next).toBe(true);
    expect(slots.inUse).toBe(3);
  });
});

describe('Upstream with a route cap', () => {
  const pools: OriginPool[] = [];
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()));
  });

  function upstreamSetup(admission: Record<string, unknown> = { limit: { algorithm: 'fixed', initial: 8 } }) {
    const clock = new ManualClock(1_000_000);
    const scheduler = new ManualScheduler(clock);
    const site = siteSchema.parse({ name: 'site', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:9/a', name: 'a' }], healthCheck: { enabled: false } });
    const pool = new OriginPool(site, { clock });
    pools.push(pool);
    const metrics = new GatewayMetrics();
    const upstream = new Upstream(clock, metrics, admissionSchema.parse(admission), 1, scheduler);
    const admit = (priority = 0) =>
      upstream.admit(site, pool, { priority, deadlineAt: clock.now() + 500, kind: 'forward', routeCap: { route: 'report', max: 1 } });
    return { clock, scheduler, site, pool, metrics, upstream, admit };
  }

  it('refuses the request past the cap route_busy at its deadline, without asking the origin\'s limiter', async () => {
    const { scheduler, upstream, admit } = upstreamSetup();
    const first = await admit();
    expect(first.ok).toBe(true);
    let second: AdmitResult | undefined;
    void admit().then((r) => (second = r));
    await flush();
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 1, queued: 1 });
    scheduler.advance(500);
    await flush();
    expect(second).toEqual({ ok: false, why: 'shed', reason: 'route_busy', waitedMs: 500 });
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 1, queued: 0 });
  });

  it('gives the slot back when the lease finishes, once however often finish is called', async () => {
    const { scheduler, upstream, admit } = upstreamSetup();
    const first = await admit();
    if (!first.ok) throw new Error('refused');
    let second: AdmitResult | undefined;
    void admit().then((r) => (second = r));
    scheduler.advance(200);
    first.lease.finish({ kind: 'response', status: 200 });
    first.lease.finish({ kind: 'response', status: 200 });
    for (let i = 0; i < 5 && second === undefined; i++) await flush();
    expect(second?.ok).toBe(true);
    if (!second?.ok) throw new Error('refused');
    expect(second.lease.waitedMs).toBe(200);
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 1, queued: 0 });
    second.lease.finish({ kind: 'response', status: 200 });
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 0, queued: 0 });
  });

  it('a reload that takes the cap out lets the waiters through at once, and drops the route\'s series once its last request is done (review: they waited for slots to come back)', async () => {
    const { scheduler, metrics, upstream, admit } = upstreamSetup();
    const first = await admit();
    if (!first.ok) throw new Error('refused');
    let second: AdmitResult | undefined;
    void admit().then((r) => (second = r));
    await flush();
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 1, queued: 1 });
    upstream.collect();
    expect((await metrics.get('routeInflight').get()).values).toHaveLength(1);
    upstream.applyRouteCaps([siteSchema.parse({ name: 'site', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:9/a' }], routes: [{ name: 'report' }] })]);
    for (let i = 0; i < 5 && second === undefined; i++) await flush();
    expect(second?.ok).toBe(true);
    expect(scheduler.pending).toBe(0);
    first.lease.finish({ kind: 'response', status: 200 });
    if (second?.ok) second.lease.finish({ kind: 'response', status: 200 });
    upstream.collect();
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 0, queued: 0 });
    expect(await metrics.get('routeInflight').get()).toMatchObject({ values: [] });
  });

  it('gives the slot back when the origin\'s limiter refuses the request', async () => {
    // A fixed limit of 1 and no queue: the second request past the limiter is refused at once.
    const { clock, site, pool, upstream } = upstreamSetup({ limit: { algorithm: 'fixed', initial: 1 }, queue: { maxLength: 0 } });
    const held = await upstream.admit(site, pool, { priority: 0, deadlineAt: clock.now() + 500, kind: 'forward' });
    expect(held.ok).toBe(true);
    const refused = await upstream.admit(site, pool, { priority: 0, deadlineAt: clock.now() + 500, kind: 'forward', routeCap: { route: 'report', max: 1 } });
    expect(refused.ok).toBe(false);
    expect(upstream.routeSlotsOf('site', 'report')).toEqual({ inUse: 0, queued: 0 });
  });
});
