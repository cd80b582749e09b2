/**
 * The origin seam: admit() hands out a lease, and lease.finish(outcome) decides what counts
 * against a member. Only what says the member is sick (refused, timeout, reset, 502/503/504)
 * ejects it or opens its breaker; with no usable member a request with nothing to fall back on
 * is still sent (panic routing), and one with a fallback may be a trial, one at a time. What the
 * lease feeds the limiter (a success sample, a drop, or nothing) and the breaker, and that the
 * request path's fills and pass-throughs finish their lease in a finally, even when they throw.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startRequestPath, type RequestPath } from '../../helpers/request-path.js';
import { ManualClock } from '../../../src/clock.js';
import { admissionSchema, siteSchema, type SiteConfig } from '../../../src/config/schema.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';
import { OriginPool, type OriginMember } from '../../../src/origin/pool.js';
import type { PoolMember } from '../../../src/origin/member.js';
import { TRIAL_INTERVAL_MS, Upstream, UrlFailures, trialIntervalMs, type AdmitOptions, type OriginOutcome } from '../../../src/origin/upstream.js';

const pools: OriginPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

function setup(names: string[], extra: Record<string, unknown> = {}, admission: Record<string, unknown> = {}) {
  const clock = new ManualClock(1_000_000);
  const site: SiteConfig = siteSchema.parse({
    name: 'site',
    hosts: ['*'],
    origins: names.map((name) => ({ url: `http://127.0.0.1:9/${name}`, name })),
    healthCheck: { enabled: false },
    passive: { consecutiveFailures: 3, ejectMs: 10_000 },
    circuit: { consecutiveFailures: 3, openMs: 5_000 },
    ...extra,
  });
  const pool = new OriginPool(site, { clock });
  pools.push(pool);
  const metrics = new GatewayMetrics();
  const upstream = new Upstream(clock, metrics, admissionSchema.parse(admission), 1);
  const opts = (o: Partial<AdmitOptions> = {}): AdmitOptions => ({ priority: 0, deadlineAt: clock.now() + 500, kind: 'fill', ...o });
  /** One admitted request that ends with `outcome`; returns the member it went to. */
  const send = async (outcome: OriginOutcome, o: Partial<AdmitOptions> = {}): Promise<OriginMember | string> => {
    const r = await upstream.admit(site, pool, opts(o));
    if (!r.ok) return r.why;
    r.lease.finish(outcome);
    return r.lease.member;
  };
  const member = (name: string) => pool.members().find((m) => m.name === name)!;
  return { clock, site, pool, upstream, metrics, opts, send, member };
}

const status = (s: number): OriginOutcome => ({ kind: 'response', status: s });
const failure = (f: 'connect_error' | 'timeout' | 'reset' | 'bad_response' | 'error'): OriginOutcome => ({ kind: 'failure', failure: f });

describe('Upstream: what counts against a member', () => {
  it.each([
    ['a 500 from the application', status(500)],
    ['a 404', status(404)],
    ['a request the HTTP client refused to send', failure('error')],
    ['an unparsable answer', failure('bad_response')],
    ['a client that left', { kind: 'client_gone' } as OriginOutcome],
    ['a request the gateway abandoned', { kind: 'abandoned' } as OriginOutcome],
  ])('%s never ejects a member nor opens its breaker', async (_name, outcome) => {
    const { send, member, clock, upstream, site, pool } = setup(['a', 'b']);
    for (let i = 0; i < 20; i++) await send(outcome);
    expect(member('a').isHealthy(clock.now())).toBe(true);
    expect(member('b').isHealthy(clock.now())).toBe(true);
    expect(upstream.controlFor(site, member('a')).breaker.state).toBe('closed');
    expect(upstream.hasUsableMember(site, pool)).toBe(true);
  });

  it.each([
    ['connection refused', failure('connect_error')],
    ['a timeout', failure('timeout')],
    ['a reset', failure('reset')],
    ['a 502', status(502)],
    ['a 503', status(503)],
    ['a 504', status(504)],
  ])('%s counts: three in a row eject the member while another is usable', async (_name, outcome) => {
    const { send, member, clock } = setup(['a', 'b']);
    // Round-robin: a, b, a, b, ...; fail only a's requests.
    for (let i = 0; i < 6; i++) {
      const r = await send(i % 2 === 0 ? outcome : status(200));
      expect(r).toBe(member(i % 2 === 0 ? 'a' : 'b'));
    }
    expect(member('a').isEjected(clock.now())).toBe(true);
    expect(member('b').isHealthy(clock.now())).toBe(true);
  });

  it('the lease releases its permit and the in-flight count once, however often finish is called', async () => {
    const { upstream, site, pool, opts, member } = setup(['a']);
    const r = await upstream.admit(site, pool, opts());
    if (!r.ok) throw new Error(r.why);
    const control = upstream.controlFor(site, member('a'));
    expect(control.limiter.inflight).toBe(1);
    expect(member('a').inflight).toBe(1);
    r.lease.finish(status(200));
    r.lease.finish(status(200));
    expect(control.limiter.inflight).toBe(0);
    expect(member('a').inflight).toBe(0);
  });
});

describe('Upstream: when no member is usable', () => {
  it('sends a request with nothing to fall back on anyway (panic routing), and its success brings the member back', async () => {
    const { send, member, clock, upstream, site, pool } = setup(['a']);
    for (let i = 0; i < 3; i++) expect(await send(failure('connect_error'))).toBe(member('a'));
    // The only member is never ejected, but its breaker is open now.
    expect(member('a').isEjected(clock.now())).toBe(false);
    expect(upstream.controlFor(site, member('a')).breaker.state).toBe('open');
    expect(upstream.hasUsableMember(site, pool)).toBe(false);
    // Without a fallback: still sent, and a success closes the breaker at once.
    expect(await send(status(200))).toBe(member('a'));
    expect(upstream.controlFor(site, member('a')).breaker.state).toBe('closed');
    expect(upstream.hasUsableMember(site, pool)).toBe(true);
  });

  it('with a fallback, allows one trial per member at a time, TRIAL_INTERVAL_MS apart', async () => {
    const { send, member, clock, upstream, site, pool, opts } = setup(['a']);
    for (let i = 0; i < 3; i++) await send(failure('connect_error'));
    const first = await upstream.admit(site, pool, opts({ hasFallback: true }));
    expect(first.ok && first.lease.trial).toBe(true);
    // While the trial is out, a request with a fallback is refused (it serves its stale copy).
    expect(await send(status(200), { hasFallback: true })).toBe('circuit_open');
    if (first.ok) first.lease.finish(failure('connect_error'));
    expect(await send(status(200), { hasFallback: true })).toBe('circuit_open'); // too soon
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200), { hasFallback: true })).toBe(member('a')); // the trial succeeds
    expect(upstream.hasUsableMember(site, pool)).toBe(true);
  });

  it('tries a member ejected again and again less and less often: the trial interval doubles with each ejection of a streak, up to ejectMs', async () => {
    expect([1, 2, 3, 4, 6, 7, 30].map((n) => trialIntervalMs(n, 10_000))).toEqual([250, 500, 1_000, 2_000, 8_000, 10_000, 10_000]);
    const { send, member, clock, pool } = setup(['a', 'b']);
    const ejectA = async () => {
      for (let i = 0; i < 3; i++) pool.reportFailure(member('a'), 'connect');
      expect(member('a').isEjected(clock.now())).toBe(true);
    };
    await ejectA(); // the first: a trial 250 ms on
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200))).toBe(member('a'));
    await ejectA(); // the second, soon after: 500 ms
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200))).toBe(member('b'));
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200))).toBe(member('a'));
    expect(member('a').isEjected(clock.now())).toBe(false);
  });

  it('a request queued at a member before its ejection and granted after it does not end the ejection', async () => {
    const s = setup(['a', 'b'], { circuit: { consecutiveFailures: 100 } }, { limit: { algorithm: 'fixed', initial: 3 } });
    const held = [];
    for (let i = 0; i < 6; i++) {
      const r = await s.upstream.admit(s.site, s.pool, s.opts({ deadlineAt: s.clock.now() + 5_000 }));
      if (!r.ok) throw new Error(r.why);
      held.push(r.lease);
    }
    const queued = Array.from({ length: 6 }, () => s.upstream.admit(s.site, s.pool, s.opts({ deadlineAt: s.clock.now() + 5_000 }))); // 3 wait at each
    s.clock.advance(10);
    for (const lease of held.filter((l) => l.member === s.member('a'))) lease.finish(status(503));
    expect(s.member('a').isEjected(s.clock.now())).toBe(true);
    for (const lease of held.filter((l) => l.member === s.member('b'))) lease.finish(status(200));
    const granted = await Promise.all(queued);
    const toA = granted.filter((r) => r.ok && r.lease.member === s.member('a'));
    expect(toA.length).toBeGreaterThan(0);
    s.clock.advance(5);
    for (const r of toA) if (r.ok) r.lease.finish(status(200));
    expect(s.member('a').isEjected(s.clock.now())).toBe(true);
    for (const r of granted) if (r.ok) r.lease.finish(status(200));
  });

  it('sends an ejected member one trial at a time while others take the traffic, and its success ends the ejection', async () => {
    const { send, member, clock } = setup(['a', 'b']);
    for (let i = 0; i < 6; i++) await send(i % 2 === 0 ? failure('connect_error') : status(200));
    expect(member('a').isEjected(clock.now())).toBe(true);
    expect(await send(status(200))).toBe(member('b')); // no trial right after the failures
    clock.advance(TRIAL_INTERVAL_MS);
    // a's trial (it fails: the caller retries elsewhere), then b's turn until the next interval,
    // twice as long after a failed trial.
    expect(await send(failure('connect_error'))).toBe(member('a'));
    expect(await send(status(200))).toBe(member('b'));
    expect(await send(status(200))).toBe(member('b'));
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200))).toBe(member('b'));
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200))).toBe(member('a')); // a answers: back in rotation
    expect(member('a').isEjected(clock.now())).toBe(false);
    const next = [await send(status(200)), await send(status(200))];
    expect(next).toContain(member('a'));
    expect(next).toContain(member('b'));
  });
});

describe('Upstream: trials of an ejected member while another takes the traffic', () => {
  it('wait twice as long after each trial that failed (a primary in maintenance answering 503: each trial is a visitor)', async () => {
    const { upstream, site, pool, opts, member, clock } = setup(['a', 'b']);
    for (let i = 0; i < 3; i++) pool.reportFailure(member('a'), 'status5xx');
    expect(member('a').isEjected(clock.now())).toBe(true);
    const trialsAt: number[] = [];
    for (let t = 0; t < 8_000; t += 50) {
      const r = await upstream.admit(site, pool, opts());
      if (!r.ok) throw new Error(r.why);
      if (r.lease.member === member('a')) trialsAt.push(t);
      r.lease.finish(status(r.lease.member === member('a') ? 503 : 200));
      clock.advance(50);
    }
    // At once (this ejection came from no request of ours), then 500, 1 000, 2 000, 4 000 ms
    // after each failed one: not every 250 ms.
    expect(trialsAt).toEqual([0, 500, 1_500, 3_500, 7_500]);
  });

  it('are not sent to a member the active probes hold down: their passes let it back', async () => {
    const { send, member, clock, pool, site } = setup(['a', 'b']);
    for (let i = 0; i < 3; i++) pool.reportFailure(member('a'), 'status5xx');
    for (let i = 0; i < site.healthCheck.unhealthyThreshold; i++) (member('a') as PoolMember).recordProbe(false, '503', site.healthCheck, clock.now());
    expect(member('a').activeHealth()).toBe('down');
    for (let t = 0; t < 3_000; t += 50) {
      expect(await send(status(200))).toBe(member('b'));
      clock.advance(50);
    }
    for (let i = 0; i < site.healthCheck.healthyThreshold; i++) (member('a') as PoolMember).recordProbe(true, undefined, site.healthCheck, clock.now());
    expect(member('a').activeHealth()).toBe('up');
    const next = [await send(status(200)), await send(status(200))];
    expect(next).toContain(member('a')); // its trial (still ejected), which ends the ejection
  });
});

/** Admits requests (answering the others 200) until one goes to member `name`; returns its lease, unfinished. */
async function admitTo(s: ReturnType<typeof setup>, name: string) {
  for (let i = 0; i < 4; i++) {
    const r = await s.upstream.admit(s.site, s.pool, s.opts());
    if (!r.ok) throw new Error(r.why);
    if (r.lease.member === s.member(name)) return r.lease;
    r.lease.finish(status(200));
  }
  throw new Error(`never reached ${name}`);
}

describe('Upstream: suspect requests (their 502-504 may be answered by another member)', () => {
  it('marks a half-open probe and a request to a member on probation as suspect, an ordinary one not', async () => {
    // Passive ejection out of the way (100 failures): only the breaker (3 in a row) trips.
    const s1 = setup(['a', 'b'], { passive: { consecutiveFailures: 100, ejectMs: 10_000 } });
    const { upstream, site, member, clock } = s1;
    const ordinary = await admitTo(s1, 'a');
    expect(ordinary.suspect).toBe(false);
    ordinary.finish(status(503));
    for (let i = 0; i < 2; i++) (await admitTo(s1, 'a')).finish(status(503));
    expect(upstream.controlFor(site, member('a')).breaker.state).toBe('open');
    clock.advance(5_000); // openMs: the next request to it is the half-open probe
    const probe = await admitTo(s1, 'a');
    expect(upstream.controlFor(site, member('a')).breaker.state).toBe('half_open');
    expect(probe.suspect).toBe(true);
    probe.finish(status(200));

    // Probation: an ejection that ran out, no success since.
    const s2 = setup(['a', 'b']);
    for (let i = 0; i < 3; i++) s2.pool.reportFailure(s2.member('a'), 'status5xx');
    s2.clock.advance(10_000);
    expect(s2.member('a').isOnProbation(s2.clock.now())).toBe(true);
    const onProbation = await admitTo(s2, 'a');
    expect(onProbation.suspect).toBe(true);
    onProbation.finish(status(200));
  });

  it('keeps the trial back-off when an ejection runs out; only a success starts it afresh', async () => {
    const { upstream, site, pool, opts, member, clock } = setup(['a', 'b']);
    for (let i = 0; i < 3; i++) pool.reportFailure(member('a'), 'status5xx');
    const control = upstream.controlFor(site, member('a'));
    for (let t = 0; t < 2_000; t += 50) {
      const r = await upstream.admit(site, pool, opts());
      if (!r.ok) throw new Error(r.why);
      r.lease.finish(status(r.lease.member === member('a') ? 503 : 200));
      clock.advance(50);
    }
    const failed = control.failedTrials;
    expect(failed).toBeGreaterThan(1);
    clock.advance(10_000); // the ejection runs out; a is picked as usable again and fails
    for (let i = 0; i < 4; i++) {
      const r = await upstream.admit(site, pool, opts());
      if (!r.ok) throw new Error(r.why);
      r.lease.finish(status(r.lease.member === member('a') ? 503 : 200));
    }
    expect(control.failedTrials).toBeGreaterThanOrEqual(failed);
    // A success resets it.
    clock.advance(20_000);
    for (let i = 0; i < 4 && control.failedTrials > 0; i++) {
      const r = await upstream.admit(site, pool, opts());
      if (!r.ok) throw new Error(r.why);
      r.lease.finish(status(200));
    }
    expect(control.failedTrials).toBe(0);
  });
});

describe('Upstream: what the lease feeds the limiter', () => {
  // AIMD shows each sample: at full use (1 of 1) a success raises the limit to 2; a drop (or a
  // round trip over its 2 s timeout) cuts 10 to 9; no sample leaves either as it was.
  const aimd = (initial: number) => ({ limit: { algorithm: 'aimd', initial, min: 1, max: 20 } });
  const limitOf = (s: ReturnType<typeof setup>) => s.upstream.controlFor(s.site, s.member('a')).limiter.limit;

  it.each([
    ['a 200', 2, status(200)],
    ['a 404', 2, status(404)],
    ['a 500', 2, status(500)],
    ['a 502', 2, status(502)],
    ['a 503 (maybe one URL\'s answer)', 1, status(503)],
    ['a 504', 1, status(504)],
    ['a 429', 1, status(429)],
    ['a refused connection', 1, failure('connect_error')],
    ['a request error', 1, failure('error')],
    ['an unparsable answer', 1, failure('bad_response')],
    ['a client that left', 1, { kind: 'client_gone' } as OriginOutcome],
    ['an abandoned request', 1, { kind: 'abandoned' } as OriginOutcome],
  ])('%s at full use: limit 1 -> %i', async (_name, expected, outcome) => {
    const s = setup(['a'], {}, aimd(1));
    await s.send(outcome);
    expect(limitOf(s)).toBe(expected);
  });

  it.each([
    ['a timeout', 9, failure('timeout')],
    ['a reset', 9, failure('reset')],
    ['a refused connection', 10, failure('connect_error')],
    ['a 503', 10, status(503)],
  ])('%s: limit 10 -> %i', async (_name, expected, outcome) => {
    const s = setup(['a'], {}, aimd(10));
    await s.send(outcome);
    expect(limitOf(s)).toBe(expected);
  });

  it('times the origin from admission to finish (the end of the body), for responses only', async () => {
    const s = setup(['a'], {}, aimd(10));
    const r = await s.upstream.admit(s.site, s.pool, s.opts());
    if (!r.ok) throw new Error(r.why);
    s.clock.advance(250);
    r.lease.finish(status(200));
    await s.send(failure('timeout')); // a failure has no duration
    const duration = await s.metrics.get('originDuration').get();
    expect(duration.values.find((v) => v.metricName?.endsWith('_sum'))?.value).toBeCloseTo(0.25);
    expect(duration.values.find((v) => v.metricName?.endsWith('_count'))?.value).toBe(1);
  });

  it('feeds nothing while the gateway is overloaded (its own lag would be measured), but the breaker still hears of failures', async () => {
    const s = setup(['a'], { circuit: { consecutiveFailures: 3, openMs: 5_000 } }, aimd(10));
    s.upstream.samplesValid = () => false;
    for (let i = 0; i < 3; i++) await s.send(failure('timeout'));
    expect(limitOf(s)).toBe(10);
    expect(s.upstream.controlFor(s.site, s.member('a')).breaker.state).toBe('open');
  });
});

describe('Upstream: a reloaded circuit applies in place', () => {
  it('keeps an open breaker open and its gauge true, takes the new settings, and a request begun on the old config does not bring the old ones back (config audit)', async () => {
    const s = setup(['a'], { circuit: { consecutiveFailures: 3, openMs: 5_000 } });
    for (let i = 0; i < 3; i++) await s.send(failure('timeout'));
    const breaker = () => s.upstream.controlFor(s.site, s.member('a')).breaker;
    expect(breaker().state).toBe('open');
    const next = siteSchema.parse({ ...s.site, circuit: { consecutiveFailures: 3, openMs: 20_000 } });
    s.upstream.applyCircuits([next]);
    expect(s.upstream.controlFor(next, s.member('a')).breaker.state).toBe('open'); // not closed by the edit
    const gauge = (await s.metrics.get('circuitState').get()).values.find((v) => v.labels.origin === 'a');
    expect(gauge?.value).toBe(2);
    // The new openMs holds, also for a request that began on the old config (s.site).
    s.clock.advance(6_000);
    expect(breaker().isAvailable()).toBe(false);
    expect(s.upstream.controlFor(next, s.member('a')).breaker.isAvailable()).toBe(false);
    s.clock.advance(15_000);
    expect(breaker().isAvailable()).toBe(true);
  });
});

describe('Upstream: a reloaded limit applies at once, under load too', () => {
  // An edit applied only once the member was idle: under steady traffic never, so an emergency
  // cap did nothing and a restored config left `fixed 4` in force (failure-day trial).
  const held = async (s: ReturnType<typeof setup>, n: number) => {
    const leases = [];
    for (let i = 0; i < n; i++) {
      const r = await s.upstream.admit(s.site, s.pool, s.opts());
      if (!r.ok) throw new Error(r.why);
      leases.push(r.lease);
    }
    return leases;
  };

  it('a lowered fixed limit grants nothing new until the permits out fall below it; the permits out finish as usual', async () => {
    const s = setup(['a'], {}, { limit: { algorithm: 'fixed', initial: 10 } });
    const limiter = () => s.upstream.controlFor(s.site, s.member('a')).limiter;
    const out = await held(s, 6); // six in flight: the member is never idle
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'fixed', initial: 4 } }), 1);
    expect(limiter().limit).toBe(4);
    expect(limiter().inflight).toBe(6); // still counted
    expect(limiter().hasFreePermit).toBe(false);
    for (const lease of out.slice(0, 3)) lease.finish(status(200));
    expect(limiter().inflight).toBe(3);
    expect(limiter().hasFreePermit).toBe(true); // 3 < 4
    for (const lease of out.slice(3)) lease.finish(status(200));
    expect(limiter().inflight).toBe(0);
  });

  it('a restored learned limit replaces a fixed one while its permits are out, and queued requests get the room at once', async () => {
    const s = setup(['a'], {}, { limit: { algorithm: 'fixed', initial: 4 } });
    const limiter = () => s.upstream.controlFor(s.site, s.member('a')).limiter;
    const out = await held(s, 4);
    const queued = s.upstream.admit(s.site, s.pool, s.opts({ deadlineAt: s.clock.now() + 5_000 }));
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'gradient2', initial: 8 } }), 1);
    expect(limiter().limit).toBe(8);
    // The waiter is granted by the next admission's look at the new limit, not by an idle moment.
    const next = await s.upstream.admit(s.site, s.pool, s.opts());
    expect(next.ok).toBe(true);
    const waited = await queued;
    expect(waited.ok).toBe(true);
    expect(limiter().inflight).toBe(6);
    for (const lease of out) lease.finish(status(200));
    if (next.ok) next.lease.finish(status(200));
    if (waited.ok) waited.lease.finish(status(200));
    expect(limiter().inflight).toBe(0);
  });

  it('a changed number of priority classes applies to the same limiter: its permits stay counted, ceiling and all', async () => {
    const s = setup(['a'], {}, { limit: { algorithm: 'fixed', initial: 4, ceiling: 4 } });
    const control = () => s.upstream.controlFor(s.site, s.member('a'));
    const before = control().limiter;
    const out = await held(s, 4);
    const queued = s.upstream.admit(s.site, s.pool, s.opts({ priority: 1, deadlineAt: s.clock.now() + 5_000 }));
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'fixed', initial: 4, ceiling: 4 } }), 3);
    expect(control().limiter).toBe(before);
    // Nothing more goes to the member until a permit comes back (a new limiter had granted 4 more: review).
    expect(control().limiter.hasFreePermit).toBe(false);
    expect(control().limiter.queueLengthByClass()).toHaveLength(5); // probes, 3 priorities, background
    out[0]!.finish(status(200));
    const waited = await queued;
    expect(waited.ok).toBe(true);
    expect(control().limiter.inflight).toBe(4);
    for (const lease of out.slice(1)) lease.finish(status(200));
    if (waited.ok) waited.lease.finish(status(200));
    expect(control().limiter.inflight).toBe(0);
  });

  it('a changed max or min keeps what the algorithm learned, within the new bounds (raising max in a crowd must not drop the limit to initial)', async () => {
    const s = setup(['a'], {}, { limit: { algorithm: 'aimd', initial: 8, min: 2, max: 256 } });
    const limiter = () => s.upstream.controlFor(s.site, s.member('a')).limiter;
    // Learn upwards: AIMD adds 1/limit per success at full use.
    for (let i = 0; i < 400 && limiter().limit < 20; i++) {
      const out = await held(s, limiter().limit);
      for (const lease of out) lease.finish(status(200));
    }
    const learned = limiter().limit;
    expect(learned).toBeGreaterThanOrEqual(20);
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'aimd', initial: 8, min: 2, max: 400 } }), 1);
    expect(limiter().limit).toBe(learned);
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'aimd', initial: 8, min: 2, max: 12 } }), 1);
    expect(limiter().limit).toBe(12);
    // Another learning algorithm starts where this one was; a fixed one as written.
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'gradient2', initial: 8, min: 2, max: 256 } }), 1);
    expect(limiter().limit).toBe(12);
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'fixed', initial: 5 } }), 1);
    expect(limiter().limit).toBe(5);
    s.upstream.configure(admissionSchema.parse({ limit: { algorithm: 'gradient2', initial: 8, min: 2, max: 256 } }), 1);
    expect(limiter().limit).toBe(8); // a fixed limit learned nothing: from initial
  });
});

describe('Upstream: what the lease tells the breaker', () => {
  it('an abandoned half-open probe gives its slot back at once; a finished one closes the breaker', async () => {
    const s = setup(['a'], { circuit: { consecutiveFailures: 3, openMs: 5_000, halfOpenProbes: 1 } });
    for (let i = 0; i < 3; i++) await s.send(failure('connect_error'));
    s.clock.advance(5_000);
    const probe = await s.upstream.admit(s.site, s.pool, s.opts());
    if (!probe.ok) throw new Error(probe.why);
    expect(s.upstream.hasUsableMember(s.site, s.pool)).toBe(false); // its one probe slot is out
    probe.lease.finish({ kind: 'abandoned' });
    expect(s.upstream.hasUsableMember(s.site, s.pool)).toBe(true);
    await s.send(status(200));
    expect(s.upstream.controlFor(s.site, s.member('a')).breaker.state).toBe('closed');
  });
});

describe('the request path finishes every lease in a finally', () => {
  let path: RequestPath | undefined;
  afterEach(async () => {
    await path?.close();
    path = undefined;
  });

  /** The member's permit and in-flight count are back, nothing counted against it, the limit untouched. */
  function expectReleased(p: RequestPath): void {
    const control = p.upstream.controlFor(p.site.config, p.member());
    expect(control.limiter.inflight).toBe(0);
    expect(p.member().inflight).toBe(0);
    expect(control.breaker.state).toBe('closed');
    expect(control.limiter.limit).toBe(1);
  }

  it('a fill whose fetcher throws: permit released without a sample, 500 internal_error', async () => {
    const p = (path = await startRequestPath({ config: { admission: { limit: { algorithm: 'aimd', initial: 1, min: 1, max: 20 } } } }));
    p.fetcher.script = ['throw'];
    const r = await p.get('/a');
    expect(r.status).toBe(500);
    expect(r.headers['x-crowdgate-error']).toBe('internal_error');
    expect(p.fetcher.calls).toHaveLength(1);
    expectReleased(p);
    const requests = await p.metrics.get('originRequests').get();
    expect(requests.values.map((v) => [v.labels['kind'], v.labels['outcome'], v.value])).toEqual([['fill', 'client_gone', 1]]);
  });

  it('a pass-through whose forwarder throws: permit released without a sample, 500 internal_error', async () => {
    const p = (path = await startRequestPath({ config: { admission: { limit: { algorithm: 'aimd', initial: 1, min: 1, max: 20 } } } }));
    p.forwarder.throws = true;
    const r = await p.get('/a', { authorization: 'Bearer x' }); // a credential: bypass, streamed
    expect(r.status).toBe(500);
    expect(r.headers['x-crowdgate-error']).toBe('internal_error');
    expect(r.state).toBe('error');
    expect(p.forwarder.calls).toEqual(['/a']);
    expectReleased(p);
  });
});

describe('Upstream: a member a reload removed', () => {
  it('publishes no gauge for it again, even when a request begun on the old config still reaches it', async () => {
    const t = setup(['a']);
    expect(await t.send(status(200))).toBe(t.member('a'));
    t.upstream.forget(t.member('a'));
    const gauges = async () => (await t.metrics.registry.metrics()).split('\n').filter((l) => /^crowdgate_(origin_limit|origin_inflight|queue_length|circuit_state)\{.*origin="a"/.test(l));
    t.upstream.collect();
    expect(await gauges()).toEqual([]);
    // A request that began before the reload is admitted to the removed member.
    expect(await t.send(status(200))).toBe(t.member('a'));
    t.upstream.collect();
    expect(await gauges()).toEqual([]);
  });
});

describe('Upstream: several sites in front of one origin URL', () => {
  it('counts the other sites\' requests to the same URL beside each limit\'s own, and joins their probes', async () => {
    const clock = new ManualClock(1_000_000);
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const upstream = new Upstream(clock, metrics, admissionSchema.parse({}), 1);
    const siteOf = (name: string, url: string) => {
      const site = siteSchema.parse({ name, hosts: [`${name}.example`], origins: [{ url, name: 'app' }], healthCheck: { enabled: false } });
      const pool = new OriginPool(site, { clock });
      pools.push(pool);
      const admit = async () => {
        const r = await upstream.admit(site, pool, { priority: 0, deadlineAt: clock.now() + 500, kind: 'fill' });
        if (!r.ok) throw new Error(r.why);
        return r.lease;
      };
      return { admit, control: () => upstream.controlFor(site, pool.members()[0]!) };
    };
    const blog = siteOf('blog', 'http://127.0.0.1:9/');
    const shop = siteOf('shop', 'http://127.0.0.1:9/');
    const other = siteOf('other', 'http://127.0.0.1:10/');
    // Each has sent something (a control exists from then on).
    for (const s of [blog, shop, other]) (await s.admit()).finish(status(200));
    // The shop learns the no-load round trip, then has every permit in use past its cold start
    // (only a limit that binds joins a probe, and not in its first 5 s).
    for (let i = 0; i < 5; i++) {
      const lease = await shop.admit();
      clock.advance(20);
      lease.finish(status(200));
    }
    for (let round = 0; round < 7; round++) {
      const busy = await Promise.all(Array.from({ length: 8 }, () => shop.admit()));
      clock.advance(20);
      for (const lease of busy) lease.finish(status(200));
      clock.advance(980);
    }
    const held = [await blog.admit(), await blog.admit(), await blog.admit()];
    expect(shop.control().limiter.peerInflight).toBe(3);
    expect(blog.control().limiter.peerInflight).toBe(0);
    expect(other.control().limiter.peerInflight).toBe(0);
    // The blog's limit starts a probe: the shop's joins it, at a quarter of 8; the other URL's does not.
    expect(shop.control().limiter.limit).toBe(8);
    blog.control().limiter.onProbe!();
    expect(shop.control().limiter.limit).toBe(2);
    expect(other.control().limiter.limit).toBe(8);
    const probes = (await metrics.registry.getSingleMetric('crowdgate_origin_limit_probes_total')!.get()).values;
    expect(probes.find((v) => v.labels.site === 'shop' && v.labels.source === 'peer')?.value).toBe(1);
    expect(probes.find((v) => v.labels.site === 'blog' && v.labels.source === 'own')?.value).toBe(1);
    // Shown per site as the others' in-flight count.
    upstream.collect();
    const peers = (await metrics.registry.getSingleMetric('crowdgate_origin_peer_inflight')!.get()).values;
    expect(peers.find((v) => v.labels.site === 'shop')?.value).toBe(3);
    expect(peers.find((v) => v.labels.site === 'other')).toBeUndefined();
    for (const lease of held) lease.finish(status(200));
  });
});

describe('UrlFailures: a failure one URL or one client keeps getting', () => {
  const WINDOW = 10_000;
  it("excuses a client's repeated failures while the member answers other clients, across paths; not its first, not another client's", () => {
    const f = new UrlFailures();
    f.success(0, 'visitor');
    expect(f.isUrlFailure('/a', 1, false, 'abuser')).toBe(false); // its first counts
    expect(f.isUrlFailure('/b', 2, false, 'abuser')).toBe(true);
    expect(f.isUrlFailure('/a', 3, false, 'abuser')).toBe(true);
    expect(f.isUrlFailure('/c', 4, false, 'other')).toBe(false); // another client's first
    expect(f.isUrlFailure('/d', 5, false, 'abuser')).toBe(false); // another client failed since its last
    expect(f.isUrlFailure('/e', 6, false, 'abuser')).toBe(true);
    // Another member answered the path lately: this member's failure.
    expect(f.isUrlFailure('/f', 7, true, 'abuser')).toBe(false);
    // Nobody else answered within the window: the member's.
    expect(f.isUrlFailure('/g', WINDOW + 1, false, 'abuser')).toBe(false);
  });

  it("counts a client's failures when it is answered between them: a member failing most requests, most of them one client's, is sick (review)", () => {
    const f = new UrlFailures();
    f.success(0, 'other');
    let excused = 0;
    for (let i = 0; i < 30; i++) {
      if (f.isUrlFailure(`/p${i}`, i * 10 + 1, false, 'big-client')) excused++;
      if (i % 3 === 0) f.success(i * 10 + 2, 'big-client');
      else if (f.isUrlFailure(`/q${i}`, i * 10 + 3, false, 'big-client')) excused++;
    }
    // The client is answered among its failures: none of them is its own.
    expect(excused).toBe(0);
    // Failures with no answer to the client for the window are its own (a rate limit).
    const g = new UrlFailures();
    g.success(0, 'visitor');
    g.success(1, 'abuser');
    expect(g.isUrlFailure('/a', 2, false, 'abuser')).toBe(false);
    expect(g.isUrlFailure('/b', 3, false, 'abuser')).toBe(false); // answered 2 ms before
    g.success(4, 'visitor');
    expect(g.isUrlFailure('/c', WINDOW + 10, false, 'abuser')).toBe(false); // nobody else answered within the window either
    g.success(WINDOW + 11, 'visitor');
    expect(g.isUrlFailure('/d', WINDOW + 12, false, 'abuser')).toBe(true);
  });

  it('counts every failure behind a proxy that is not trusted (one address for every client)', () => {
    const f = new UrlFailures();
    f.success(0, 'proxy');
    for (let i = 0; i < 10; i++) expect(f.isUrlFailure(`/p${i % 2}`, i + 1, false, 'proxy')).toBe(false);
  });
});
