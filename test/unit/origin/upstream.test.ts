/**
 * The origin seam: admit() hands out a lease, and lease.finish(outcome) decides what counts
 * against a member. Only what says the member is sick (refused, timeout, reset, 502/503/504)
 * ejects it or opens its breaker; with no usable member a request with nothing to fall back on
 * is still sent (panic routing), and one with a fallback may be a trial, one at a time.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { admissionSchema, siteSchema, type SiteConfig } from '../../../src/config/schema.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';
import { OriginPool, type OriginMember } from '../../../src/origin/pool.js';
import { TRIAL_INTERVAL_MS, Upstream, type AdmitOptions, type OriginOutcome } from '../../../src/origin/upstream.js';

const pools: OriginPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

function setup(names: string[], extra: Record<string, unknown> = {}) {
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
  const upstream = new Upstream(clock, new GatewayMetrics(), admissionSchema.parse({}), 1);
  const opts = (o: Partial<AdmitOptions> = {}): AdmitOptions => ({ priority: 0, deadlineAt: clock.now() + 500, kind: 'fill', ...o });
  /** One admitted request that ends with `outcome`; returns the member it went to. */
  const send = async (outcome: OriginOutcome, o: Partial<AdmitOptions> = {}): Promise<OriginMember | string> => {
    const r = await upstream.admit(site, pool, opts(o));
    if (!r.ok) return r.why;
    r.lease.finish(outcome);
    return r.lease.member;
  };
  const member = (name: string) => pool.members().find((m) => m.name === name)!;
  return { clock, site, pool, upstream, opts, send, member };
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

  it('sends an ejected member one trial at a time while others take the traffic, and its success ends the ejection', async () => {
    const { send, member, clock } = setup(['a', 'b']);
    for (let i = 0; i < 6; i++) await send(i % 2 === 0 ? failure('connect_error') : status(200));
    expect(member('a').isEjected(clock.now())).toBe(true);
    expect(await send(status(200))).toBe(member('b')); // no trial right after the failures
    clock.advance(TRIAL_INTERVAL_MS);
    // a's trial (it fails: the caller retries elsewhere), then b's turn until the next interval.
    expect(await send(failure('connect_error'))).toBe(member('a'));
    expect(await send(status(200))).toBe(member('b'));
    expect(await send(status(200))).toBe(member('b'));
    clock.advance(TRIAL_INTERVAL_MS);
    expect(await send(status(200))).toBe(member('a')); // a answers: back in rotation
    expect(member('a').isEjected(clock.now())).toBe(false);
    const next = [await send(status(200)), await send(status(200))];
    expect(next).toContain(member('a'));
    expect(next).toContain(member('b'));
  });
});
