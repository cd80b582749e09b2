import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { siteSchema, type SiteConfig } from '../../../src/config/schema.js';
import type { FailureKind } from '../../../src/origin/member.js';
import { OriginPool, type HealthChangeCause, type OriginMember, type OriginPoolOptions } from '../../../src/origin/pool.js';
import { startTestOrigin, type TestOrigin } from '../../helpers/test-origin.js';

type OriginInput = { url: string; name?: string; weight?: number; backup?: boolean };

function makeSite(origins: OriginInput[], extra: Record<string, unknown> = {}): SiteConfig {
  return siteSchema.parse({ name: 'site', hosts: ['*'], origins, ...extra });
}

/** Members at fixed, unused URLs: for tests that never touch the network (checks disabled). */
const offline = (name: string, weight = 1, backup = false): OriginInput => ({
  url: `http://127.0.0.1:9/${name}`,
  name,
  weight,
  backup,
});

const pools: OriginPool[] = [];
const origins: TestOrigin[] = [];
function makePool(site: SiteConfig, opts: OriginPoolOptions = {}): OriginPool {
  const p = new OriginPool(site, opts);
  pools.push(p);
  return p;
}
async function origin(name: string): Promise<TestOrigin> {
  const o = await startTestOrigin({ name });
  origins.push(o);
  return o;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
  await Promise.all(origins.splice(0).map((o) => o.close()));
});

function byName(pool: OriginPool, name: string): OriginMember {
  const m = pool.members().find((x) => x.name === name);
  if (!m) throw new Error(`no member ${name}`);
  return m;
}

function tally(pool: OriginPool, picks: number): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < picks; i++) {
    const m = pool.pick();
    const k = m?.name ?? 'none';
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return counts;
}

function eject(pool: OriginPool, m: OriginMember, failures: number, kind: FailureKind = 'connect'): void {
  for (let i = 0; i < failures; i++) pool.reportFailure(m, kind);
}

const noChecks = { healthCheck: { enabled: false } };

describe('round-robin selection', () => {
  it.each([
    { weights: [3, 1], picks: 400, expected: [300, 100] },
    { weights: [1, 1, 1], picks: 300, expected: [100, 100, 100] },
    { weights: [5, 1, 1], picks: 700, expected: [500, 100, 100] },
    { weights: [2, 3], picks: 500, expected: [200, 300] },
  ])('weights $weights over $picks picks give exactly $expected', ({ weights, picks, expected }) => {
    const names = weights.map((_, i) => `m${i}`);
    const pool = makePool(makeSite(weights.map((w, i) => offline(names[i]!, w)), noChecks));
    const counts = tally(pool, picks);
    expect(names.map((n) => counts[n] ?? 0)).toEqual(expected);
  });

  it('interleaves smoothly: weights 5:1:1 never pick the light members back to back', () => {
    const pool = makePool(makeSite([offline('a', 5), offline('b'), offline('c')], noChecks));
    const seq = Array.from({ length: 7 }, () => pool.pick()?.name).join('');
    expect(seq).toBe('aabacaa');
  });

  it('skips excluded members and members the accept filter refuses', () => {
    const pool = makePool(makeSite([offline('a'), offline('b'), offline('c')], noChecks));
    const a = byName(pool, 'a');
    const c = byName(pool, 'c');
    const picked = new Set(Array.from({ length: 9 }, () => pool.pick({ exclude: new Set([a]), accept: (m) => m !== c })?.name));
    expect([...picked]).toEqual(['b']);
    expect(pool.pick({ exclude: new Set(pool.members()) })).toBeUndefined();
  });
});

describe('least-inflight selection', () => {
  it.each([
    { weights: [1, 1, 1], inflight: [2, 0, 1], expected: 'm1' },
    { weights: [1, 1, 1], inflight: [0, 3, 3], expected: 'm0' },
    // inflight / weight: 2/4 = 0.5 beats 1/1
    { weights: [4, 1], inflight: [2, 1], expected: 'm0' },
    // 3/2 = 1.5 loses to 1/1
    { weights: [2, 1], inflight: [3, 1], expected: 'm1' },
  ])('weights $weights with in-flight $inflight pick $expected', ({ weights, inflight, expected }) => {
    const pool = makePool(makeSite(weights.map((w, i) => offline(`m${i}`, w)), { ...noChecks, balance: 'least-inflight' }));
    pool.members().forEach((m, i) => {
      for (let k = 0; k < inflight[i]!; k++) pool.begin(m);
    });
    expect(pool.pick()?.name).toBe(expected);
  });

  it('breaks ties by weighted round-robin and follows begin/end as load changes', () => {
    const pool = makePool(makeSite([offline('a', 3), offline('b', 1)], { ...noChecks, balance: 'least-inflight' }));
    // All idle: every pick ties, so picks follow the 3:1 smooth round-robin.
    expect(tally(pool, 400)).toEqual({ a: 300, b: 100 });
    // Hold each picked request open: load spreads by weight, 3 on a for every 1 on b.
    const held: OriginMember[] = [];
    for (let i = 0; i < 8; i++) {
      const m = pool.pick()!;
      pool.begin(m);
      held.push(m);
    }
    expect([byName(pool, 'a').inflight, byName(pool, 'b').inflight]).toEqual([6, 2]);
    for (const m of held.filter((m) => m.name === 'a')) pool.end(m);
    expect(pool.pick()?.name).toBe('a');
    pool.end(byName(pool, 'a')); // end never drives the count below zero
    expect(byName(pool, 'a').inflight).toBe(0);
  });
});

describe('passive ejection (ManualClock)', () => {
  const passive = { consecutiveFailures: 3, ejectMs: 10_000 };

  it.each<FailureKind>(['connect', 'timeout', 'status5xx', 'reset'])(
    '%s failures in a row eject the member for ejectMs, then it serves again',
    (kind) => {
      const clock = new ManualClock();
      const events: [string, boolean, HealthChangeCause][] = [];
      const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), {
        clock,
        onHealthChange: (m, healthy, cause) => events.push([m.name, healthy, cause]),
      });
      const a = byName(pool, 'a');
      eject(pool, a, 2, kind);
      expect(a.isHealthy(clock.now())).toBe(true);
      pool.reportFailure(a, kind);
      expect(a.isHealthy(clock.now())).toBe(false);
      expect(a.healthState(clock.now())).toMatchObject({ ejectedUntil: clock.now() + 10_000, lastError: `traffic: ${kind}` });
      expect(tally(pool, 10)).toEqual({ b: 10 });

      clock.advance(9_999);
      expect(a.isHealthy(clock.now())).toBe(false);
      clock.advance(1);
      expect(tally(pool, 10)).toEqual({ a: 5, b: 5 });
      expect(events).toEqual([
        ['a', false, 'ejected'],
        ['a', true, 'ejection-ended'],
      ]);
    },
  );

  it('a success in between resets the failure streak', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 2);
    pool.reportSuccess(a);
    eject(pool, a, 2);
    expect(a.isHealthy(clock.now())).toBe(true);
    expect(a.healthState(clock.now()).consecutiveFailures).toBe(2);
  });

  it('an answer that may not end a probe \'down\' (a 500) still resets the failure streak', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 2);
    pool.reportSuccess(a, clock.now(), false);
    eject(pool, a, 2);
    expect(a.isHealthy(clock.now())).toBe(true);
    expect(a.healthState(clock.now()).consecutiveFailures).toBe(2);
  });

  it('after an ejection ends, one failure ejects again; one success ends probation', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 3);
    clock.advance(10_000);
    pool.reportFailure(a, 'connect');
    expect(a.healthState(clock.now()).ejectedUntil).toBe(clock.now() + 10_000);

    clock.advance(10_000);
    pool.reportSuccess(a);
    eject(pool, a, 2);
    expect(a.isHealthy(clock.now())).toBe(true);
  });

  it('failures reported while ejected (requests sent before) do not extend the ejection', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 3);
    const until = a.healthState(clock.now()).ejectedUntil;
    clock.advance(5_000);
    eject(pool, a, 5);
    expect(a.healthState(clock.now()).ejectedUntil).toBe(until);
  });

  it('says when a trial\'s success ends an ejection, and when one ran out before a success (the healthy gauge read 0 for a member serving again)', () => {
    const clock = new ManualClock();
    const events: [string, boolean, HealthChangeCause][] = [];
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), {
      clock,
      onHealthChange: (m, healthy, cause) => events.push([m.name, healthy, cause]),
    });
    const a = byName(pool, 'a');
    eject(pool, a, 3);
    clock.advance(100);
    pool.reportSuccess(a, clock.now()); // a trial
    eject(pool, a, 3);
    clock.advance(20_000); // this one runs out unseen (no pick, no probe)...
    pool.reportSuccess(a, clock.now()); // ...and a success comes first
    expect(events).toEqual([
      ['a', false, 'ejected'],
      ['a', true, 'ejection-ended'],
      ['a', false, 'ejected'],
      ['a', true, 'ejection-ended'],
    ]);
  });

  it('a success of a request sent before the ejection does not end it; one sent since does', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    const sentBefore = clock.now();
    clock.advance(5);
    eject(pool, a, 3);
    clock.advance(5);
    pool.reportSuccess(a, sentBefore); // was in flight when a was ejected
    expect(a.isEjected(clock.now())).toBe(true);
    pool.reportSuccess(a, clock.now()); // a trial, sent now
    expect(a.isEjected(clock.now())).toBe(false);
  });

  it('counts ejections that follow each other within 3 x ejectMs as a streak, and starts afresh after', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    expect(a.ejectionStreak).toBe(0);
    for (const expected of [1, 2, 3]) {
      eject(pool, a, 3);
      expect(a.ejectionStreak).toBe(expected);
      clock.advance(100);
      pool.reportSuccess(a, clock.now()); // a trial passes: back at once
    }
    clock.advance(3 * 10_000 + 1);
    eject(pool, a, 3);
    expect(a.ejectionStreak).toBe(1);
  });

  it('a failure of a request that chose the member before its ejection does not eject it again once it has run out', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    const chosenBefore = clock.now();
    clock.advance(5);
    eject(pool, a, 3);
    clock.advance(10_000); // ran out: probation
    pool.reportFailure(a, 'timeout', chosenBefore); // a slow request of before finally times out
    expect(a.isEjected(clock.now())).toBe(false);
    pool.reportFailure(a, 'timeout', clock.now()); // one chosen since: probation ends in an ejection
    expect(a.isEjected(clock.now())).toBe(true);
  });

  it('a timeout of a request chosen before the newest one that succeeded does not count toward an ejection (failure-day trial)', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    const chosenDuringSlowdown = clock.now();
    clock.advance(15_000);
    pool.reportSuccess(a, clock.now());
    for (let i = 0; i < 5; i++) pool.reportFailure(a, 'timeout', chosenDuringSlowdown + i);
    expect(a.isEjected(clock.now())).toBe(false);
    // Other failures of such requests still count: a reset or a 503 is news when it comes.
    for (let i = 0; i < 5; i++) pool.reportFailure(a, 'reset', chosenDuringSlowdown + i);
    expect(a.isEjected(clock.now())).toBe(true);
  });

  it('an outage longer than ejectMs is no streak: an ejection that ran out and failed again keeps trials every 250 ms', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b')], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 3);
    for (let i = 0; i < 4; i++) {
      clock.advance(10_000); // ran out: probation
      pool.reportFailure(a, 'connect'); // still down: ejected again at once
      expect(a.isEjected(clock.now())).toBe(true);
      expect(a.ejectionStreak).toBe(1);
    }
  });

  it('a passing probe ends a first ejection, not a repeated one', async () => {
    const o = await origin('a');
    const clock = new ManualClock();
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, offline('b')], { passive, healthCheck: { timeoutMs: 1_000 } }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 3);
    clock.advance(100);
    pool.reportSuccess(a, clock.now());
    eject(pool, a, 3); // again, within the streak
    await pool.probeNow();
    expect(a.isEjected(clock.now())).toBe(true);
  });

  it('never ejects the last usable member: the streak waits until another member is usable', () => {
    const clock = new ManualClock();
    const pool = makePool(makeSite([offline('a'), offline('b', 1, true)], { ...noChecks, passive }), { clock });
    const a = byName(pool, 'a');
    const b = byName(pool, 'b');
    eject(pool, a, 3);
    expect(a.isHealthy(clock.now())).toBe(false);
    eject(pool, b, 10); // the backup is now the only usable member
    expect(b.isHealthy(clock.now())).toBe(true);
    expect(pool.pick()?.name).toBe('b');
    expect(pool.readiness()).toBe('up');
    clock.advance(10_000); // a is back: b's next failure ejects it at once
    pool.reportFailure(b, 'connect');
    expect(b.isHealthy(clock.now())).toBe(false);
    expect(pool.pick()?.name).toBe('a');
  });

  it('pick returns undefined when every member is down; pickAny still names one (panic routing)', async () => {
    const o = await origin('a');
    o.kill();
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, offline('b', 1, true)], { healthCheck: { timeoutMs: 1_000, unhealthyThreshold: 1 } }));
    await pool.probeNow();
    // b (offline) is probed too; both are down now.
    expect(pool.pick()).toBeUndefined();
    expect(pool.isAnyHealthy()).toBe(false);
    expect(pool.readiness()).toBe('down');
    expect(pool.pickAny()?.name).toBe('a'); // primaries first
    expect(pool.pickAny({ exclude: new Set([byName(pool, 'a')]) })?.name).toBe('b');
  });

  it('a passing probe ends an ejection', async () => {
    const o = await origin('a');
    const clock = new ManualClock();
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, offline('b')], { passive, healthCheck: { timeoutMs: 1_000 } }), { clock });
    const a = byName(pool, 'a');
    eject(pool, a, 3);
    expect(a.isHealthy(clock.now())).toBe(false);
    await pool.probeNow();
    expect(a.isHealthy(clock.now())).toBe(true);
    expect(a.healthState(clock.now()).ejectedUntil).toBeUndefined();
  });
});

describe('what an ejection\'s end says', () => {
  it('an ejection that runs out while the health check holds the member down says so, not "ended" (failure trial: it read as a recovery)', async () => {
    const o = await origin('a');
    const other = await origin('b');
    const clock = new ManualClock();
    const infos: string[] = [];
    const logger = { info: (_fields: Record<string, unknown>, msg: string) => void infos.push(msg), warn: () => {} };
    const passive = { consecutiveFailures: 3, ejectMs: 10_000 };
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, { url: other.url, name: 'b' }], { passive, healthCheck: { timeoutMs: 1_000, unhealthyThreshold: 1 } }), { clock, logger });
    const a = byName(pool, 'a');
    o.kill();
    await pool.probeNow(); // down by health check
    expect(a.healthState(clock.now()).active).toBe('down');
    eject(pool, a, 3);
    expect(a.healthState(clock.now()).ejectedUntil).toBeDefined();
    clock.advance(10_001);
    pool.pick();
    expect(infos.filter((m) => m.startsWith('origin member ejection'))).toEqual(['origin member ejection ran out; still down by health check (trial requests go on)']);
    // One that ends with the member up by its checks still says "ended".
    await o.reopen();
    for (let i = 0; i < 5 && a.healthState(clock.now()).active !== 'up'; i++) await pool.probeNow();
    expect(a.healthState(clock.now()).active).toBe('up');
    eject(pool, a, 3);
    clock.advance(10_001);
    pool.pick();
    expect(infos.filter((m) => m.startsWith('origin member ejection')).at(-1)).toBe('origin member ejection ended');
  });
});

describe('backups', () => {
  it('get traffic only while no primary is healthy, and lose it when a primary returns', () => {
    const clock = new ManualClock();
    const passive = { consecutiveFailures: 1, ejectMs: 1_000 };
    const pool = makePool(makeSite([offline('p1'), offline('p2', 2), offline('bk', 5, true)], { ...noChecks, passive }), {
      clock,
    });
    expect(tally(pool, 30)).toEqual({ p1: 10, p2: 20 });
    pool.reportFailure(byName(pool, 'p1'), 'connect');
    expect(tally(pool, 30)).toEqual({ p2: 30 });
    clock.advance(500);
    pool.reportFailure(byName(pool, 'p2'), 'connect');
    expect(tally(pool, 30)).toEqual({ bk: 30 });
    clock.advance(500); // p1's ejection is over; p2 has 500 ms left
    expect(tally(pool, 30)).toEqual({ p1: 30 });
    clock.advance(500);
    expect(tally(pool, 30)).toEqual({ p1: 10, p2: 20 });
  });

  it('take over when active checks find the primary down, and hand back when it is up again', async () => {
    const primary = await origin('primary');
    const backup = await origin('backup');
    const hc = { path: '/health', healthyThreshold: 1, unhealthyThreshold: 1, timeoutMs: 1_000 };
    const pool = makePool(
      makeSite([{ url: primary.url, name: 'primary' }, { url: backup.url, name: 'backup', backup: true }], { healthCheck: hc }),
    );
    await pool.probeNow();
    expect(pool.pick()?.name).toBe('primary');
    primary.kill();
    await pool.probeNow();
    expect(pool.pick()?.name).toBe('backup');
    await primary.reopen();
    await pool.probeNow();
    expect(pool.pick()?.name).toBe('primary');
  });
});

/** The only member 'a', whose `/` (the probe's page) answers 500, one failure marks it down; its pool's warnings and probe verdicts. */
async function brokenFrontPage() {
  const o = await origin('a');
  o.route('/', { status: 500 });
  const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
  const logger = { info: () => {}, warn: (fields: Record<string, unknown>, msg: string) => void warnings.push({ fields, msg }) };
  const verdicts: string[] = [];
  const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { unhealthyThreshold: 1 } }), {
    logger,
    onProbeVerdict: (_m, verdict) => verdicts.push(verdict),
  });
  return { o, pool, a: byName(pool, 'a'), warnings, verdicts };
}

describe('active health checks against real origins', () => {
  it('mark a stopped origin down after unhealthyThreshold failures and a restarted one up after healthyThreshold passes', async () => {
    const o = await origin('a');
    const events: [boolean, HealthChangeCause][] = [];
    const verdicts: string[] = [];
    const hc = { path: '/health', healthyThreshold: 2, unhealthyThreshold: 2, timeoutMs: 1_000 };
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: hc }), {
      onHealthChange: (_m, healthy, cause) => events.push([healthy, cause]),
      onProbeVerdict: (m, verdict) => verdicts.push(`${m.name} ${verdict}`),
    });
    const a = byName(pool, 'a');
    const active = () => a.healthState(Date.now()).active;
    expect(active()).toBe('unknown');
    expect(pool.readiness()).toBe('unknown');

    const steps: [string, () => void | Promise<void>, string][] = [
      ['first probe passes', () => {}, 'up'],
      ['stopped: one failure is not enough', () => o.kill(), 'up'],
      ['second failure', () => {}, 'down'],
      ['restarted on the same port: one pass is not enough', () => o.reopen(), 'down'],
      ['second pass', () => {}, 'up'],
    ];
    for (const [label, act, expected] of steps) {
      await act();
      await pool.probeNow();
      expect(active(), label).toBe(expected);
    }
    expect(a.healthState(Date.now()).lastError).toBe('probe: ECONNREFUSED');
    expect(events).toEqual([
      [true, 'probe'],
      [false, 'probe'],
      [true, 'probe'],
    ]);
    expect(o.count('/health')).toBe(3); // two probes met a dead port
    // Every probe's verdict, whether or not it changed the state.
    expect(verdicts).toEqual(['a pass', 'a fail', 'a fail', 'a pass', 'a pass']);
  });

  it('a request that succeeds brings a member the probes marked down back at once, not at the next passing probe', async () => {
    const o = await origin('a');
    const events: [boolean, HealthChangeCause][] = [];
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { unhealthyThreshold: 2, healthyThreshold: 2, timeoutMs: 1_000 } }), {
      onHealthChange: (_m, healthy, cause) => events.push([healthy, cause]),
    });
    const a = byName(pool, 'a');
    o.kill();
    await pool.probeNow();
    await pool.probeNow();
    expect(pool.readiness()).toBe('down');
    expect(pool.pick()).toBeUndefined();
    // A request sent before the verdict that finishes now says nothing new.
    pool.reportSuccess(a, Date.now() - 60_000);
    expect(a.healthState(Date.now()).active).toBe('down');
    // The origin is back; a trial request (sent while nothing was usable) succeeds.
    await o.reopen();
    pool.reportSuccess(a, Date.now());
    expect(a.healthState(Date.now()).active).toBe('up');
    expect(pool.pick()?.name).toBe('a');
    expect(events).toEqual([
      [false, 'probe'],
      [true, 'traffic'],
    ]);
    // The probes count from zero again: one failure does not mark it down.
    o.kill();
    await pool.probeNow();
    expect(pool.readiness()).toBe('up');
  });

  it('one failed probe never marks a member down from unknown; unhealthyThreshold failures do', async () => {
    const o = await origin('a');
    o.kill();
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { unhealthyThreshold: 3, timeoutMs: 1_000 } }));
    await pool.probeNow();
    await pool.probeNow();
    expect(pool.readiness()).toBe('unknown');
    expect(pool.pick()?.name).toBe('a'); // 'unknown' routes
    await pool.probeNow();
    expect(pool.readiness()).toBe('down');
  });

  it('counts any answer below 500 as alive by default: a / that answers 404 or 401 is up', async () => {
    const o = await origin('a');
    o.route('/', { status: 404 });
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { timeoutMs: 1_000 } }));
    await pool.probeNow();
    expect(pool.readiness()).toBe('up');
    o.route('/', { status: 401 });
    await pool.probeNow();
    await pool.probeNow();
    await pool.probeNow();
    expect(pool.readiness()).toBe('up');
    o.route('/', { status: 503 });
    for (let i = 0; i < 3; i++) await pool.probeNow();
    expect(pool.readiness()).toBe('down');
  });

  it('start() probes at once, so a gateway started with its origin down reports it down after the threshold', async () => {
    const o = await origin('a');
    o.kill();
    // unhealthyThreshold 1: the first failed probe is enough.
    const hc = { intervalMs: 60_000, unhealthyThreshold: 1, timeoutMs: 1_000 };
    let resolveDown!: (healthy: boolean) => void;
    const firstChange = new Promise<boolean>((r) => (resolveDown = r));
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: hc }), {
      onHealthChange: (_m, healthy) => resolveDown(healthy),
    });
    pool.start();
    expect(await firstChange).toBe(false);
    expect(pool.readiness()).toBe('down');
    expect(pool.isAnyHealthy()).toBe(false);
    expect(pool.pick()).toBeUndefined();
  });

  it('keep probing on the interval after start()', async () => {
    const o = await origin('a');
    const hc = { path: '/health', intervalMs: 20, healthyThreshold: 1, unhealthyThreshold: 1, timeoutMs: 1_000 };
    const changes: boolean[] = [];
    let onChange: () => void = () => {};
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: hc }), {
      onHealthChange: (_m, healthy) => {
        changes.push(healthy);
        onChange();
      },
    });
    const nextChange = () => new Promise<void>((r) => (onChange = r));
    let change = nextChange();
    pool.start();
    await change;
    change = nextChange();
    o.kill();
    await change; // only a later, timer-driven probe can see this
    expect(changes).toEqual([true, false]);
  });

  it('keeps probing through reloads that change the interval every few milliseconds (failure-day trial)', async () => {
    const o = await origin('a');
    const hc = { path: '/health', intervalMs: 60, healthyThreshold: 1, unhealthyThreshold: 1, timeoutMs: 1_000 };
    const site = makeSite([{ url: o.url, name: 'a' }], { healthCheck: hc });
    const pool = makePool(site, {});
    pool.start();
    await pool.probeNow();
    const before = o.count('/health');
    // Flip the interval every 30 ms for 600 ms: each edit used to re-arm the probe a whole
    // interval from then, so none ran.
    for (let i = 0; i < 20; i++) {
      pool.update(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { ...hc, intervalMs: i % 2 === 0 ? 50 : 60 } }));
      await new Promise((r) => setTimeout(r, 30));
    }
    expect(o.count('/health') - before).toBeGreaterThanOrEqual(5);
  });

  it('never has more than one probe in flight per member', async () => {
    const o = await origin('a');
    o.route('/health', { delayMs: 100 });
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { path: '/health', timeoutMs: 1_000 } }));
    pool.start();
    await Promise.all([pool.probeNow(), pool.probeNow(), pool.probeNow()]);
    expect(o.count('/health')).toBe(1);
    expect(o.peakInflight).toBe(1);
  });

  it('a probe that times out counts as a failure', async () => {
    const o = await origin('a');
    o.route('/health', { hang: true });
    const hc = { path: '/health', timeoutMs: 100, unhealthyThreshold: 1 };
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: hc }));
    await pool.probeNow();
    expect(byName(pool, 'a').healthState(Date.now())).toMatchObject({ active: 'down', lastError: 'probe: timeout' });
  });

  it('a probe that times out while the member answers live requests (below 500) counts as alive, once a minute said (a slow WordPress front page marked a serving member down)', async () => {
    const o = await origin('a');
    o.route('/', { hang: true });
    const warnings: { fields: Record<string, unknown>; msg: string }[] = [];
    const logger = { info: () => {}, warn: (fields: Record<string, unknown>, msg: string) => void warnings.push({ fields, msg }) };
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { timeoutMs: 100, unhealthyThreshold: 1 } }), { logger });
    const a = byName(pool, 'a');
    for (let i = 0; i < 2; i++) {
      const probing = pool.probeNow();
      pool.reportSuccess(a, Date.now(), true); // a page answered while the probe waits
      await probing;
      expect(a.healthState(Date.now()).active).toBe('up');
    }
    expect(warnings.filter((w) => /health check timed out while the member answered/.test(w.msg))).toHaveLength(1);
    expect(warnings[0]!.fields).toMatchObject({ origin: 'a', path: '/', timeoutMs: 100 });
    // A 500 is no such evidence, and neither is an answer from before the probe began.
    const probing = pool.probeNow();
    pool.reportSuccess(a, Date.now(), false);
    await probing;
    expect(a.healthState(Date.now())).toMatchObject({ active: 'down', lastError: 'probe: timeout' });
  });

  it('a probe answered 500 while the only member answered live requests since the probe before counts as alive, once a minute said (a broken front page flipped the member down and up every 15 s)', async () => {
    const { pool, a, warnings, verdicts } = await brokenFrontPage();
    for (let i = 0; i < 2; i++) {
      pool.reportSuccess(a, Date.now(), true); // a page answered between probes
      await pool.probeNow();
      expect(a.healthState(Date.now()).active).toBe('up');
    }
    expect(verdicts).toEqual(['excused', 'excused']);
    const said = warnings.filter((w) => /health check answered 5xx while the member answered requests/.test(w.msg));
    expect(said).toHaveLength(1);
    expect(said[0]!.fields).toMatchObject({ origin: 'a', path: '/', status: 500 });
    // No answer below 500 since the probe before (WordPress without its database answers every
    // page 500): the probe's verdict stands.
    pool.reportSuccess(a, Date.now(), false);
    await pool.probeNow();
    expect(a.healthState(Date.now())).toMatchObject({ active: 'down', lastError: 'probe: status 500' });
    expect(verdicts).toEqual(['excused', 'excused', 'fail']);
  });

  it('a probe answered 500 after the live answers turned to 500s too, three in a row, is not excused (a database outage: the pages answered before it; new-user trial); one live 500 before it is (a visitor asking for the broken page; review)', async () => {
    const { o, pool, a, warnings, verdicts } = await brokenFrontPage();
    // Pages answered, and one visitor asked for the broken front page itself: excused.
    for (let i = 0; i < 5; i++) pool.reportSuccess(a, Date.now(), true);
    pool.reportSuccess(a, Date.now(), false);
    pool.reportSuccess(a, Date.now(), false);
    await pool.probeNow();
    expect(verdicts).toEqual(['excused']);
    expect(a.healthState(Date.now()).active).toBe('up');
    // Then the database went: pages answered before the next probe, then three 500s like it.
    for (let i = 0; i < 5; i++) pool.reportSuccess(a, Date.now(), true);
    for (let i = 0; i < 3; i++) pool.reportSuccess(a, Date.now(), false);
    await pool.probeNow();
    expect(verdicts).toEqual(['excused', 'fail']);
    expect(a.healthState(Date.now())).toMatchObject({ active: 'down', lastError: 'probe: status 500' });
    expect(warnings.filter((w) => /health check answered 5xx while the member answered requests/.test(w.msg))).toHaveLength(1);
    // Refused connections and 502s count in the run too.
    const b = makePool(makeSite([{ url: o.url, name: 'b' }], { healthCheck: { unhealthyThreshold: 1 } }));
    const mb = byName(b, 'b');
    b.reportSuccess(mb, Date.now(), true);
    b.reportFailure(mb, 'status5xx');
    b.reportSuccess(mb, Date.now(), false);
    b.reportFailure(mb, 'connect');
    await b.probeNow();
    expect(mb.healthState(Date.now()).active).toBe('down');
  });

  it('a probe answered 500 on every member alike, while they answer live requests, takes none down (a deploy that broke the front page)', async () => {
    const o = await origin('a');
    const p = await origin('b');
    o.route('/', { status: 500 });
    p.route('/', { status: 503 });
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, { url: p.url, name: 'b' }], { healthCheck: { unhealthyThreshold: 2 } }));
    const a = byName(pool, 'a');
    const b = byName(pool, 'b');
    for (let i = 0; i < 4; i++) {
      pool.reportSuccess(a, Date.now(), true);
      pool.reportSuccess(b, Date.now(), true);
      await pool.probeNow();
    }
    expect(a.healthState(Date.now()).active).not.toBe('down');
    expect(b.healthState(Date.now()).active).not.toBe('down');
  });

  it('a probe answered 500 takes a serving member down while another usable member passes its probes (a deep health page sends traffic to the others)', async () => {
    const o = await origin('a');
    const p = await origin('b');
    o.route('/', { status: 500 });
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, { url: p.url, name: 'b' }], { healthCheck: { unhealthyThreshold: 2 } }));
    const a = byName(pool, 'a');
    for (let i = 0; i < 2; i++) {
      pool.reportSuccess(a, Date.now(), true);
      await pool.probeNow();
    }
    expect(a.healthState(Date.now()).active).toBe('down');
    expect(byName(pool, 'b').healthState(Date.now()).active).toBe('up');
  });

  it('close() aborts a hanging probe instead of waiting for its timeout', async () => {
    const o = await origin('a');
    o.route('/health', { hang: true });
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { path: '/health', timeoutMs: 20_000 } }));
    pool.start();
    while (o.inflight === 0) await new Promise((r) => setTimeout(r, 2));
    const startedAt = Date.now();
    await pool.close();
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(byName(pool, 'a').healthState(Date.now()).active).toBe('unknown');
  });

  it('holds an admitted permit for exactly the probe, and probes without one when none came free (a member whose permits hung requests hold)', async () => {
    const o = await origin('a');
    o.route('/health', { delayMs: 30 });
    const hc = { path: '/health', timeoutMs: 1_000, healthyThreshold: 1, unhealthyThreshold: 1 };
    const events: string[] = [];
    let admit = false;
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: hc }), {
      admitProbe: async () => {
        if (!admit) return undefined;
        events.push(`acquire inflight=${o.inflight}`);
        return { release: () => events.push(`release inflight=${o.inflight} probes=${o.count('/health')}`) };
      },
    });
    await pool.probeNow(); // no permit came free: probed all the same
    expect(o.count('/health')).toBe(1);
    expect(byName(pool, 'a').healthState(Date.now()).active).toBe('up');
    admit = true;
    await pool.probeNow();
    expect(events).toEqual(['acquire inflight=0', 'release inflight=0 probes=2']);
  });

  it('gives back a permit that came as the pool closed', async () => {
    const o = await origin('a');
    let released = 0;
    let pool: ReturnType<typeof makePool> | undefined = undefined;
    let closing: Promise<void> | undefined;
    pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { path: '/health', timeoutMs: 1_000 } }), {
      // The permit is granted, and the pool closes before the probe takes it.
      admitProbe: async () => {
        closing = pool!.close();
        return { release: () => released++ };
      },
    });
    await pool.probeNow();
    await closing;
    expect(released).toBe(1);
    expect(o.count('/health')).toBe(0);
  });

  it('close() also ends a probe still waiting for its permit', async () => {
    const o = await origin('a');
    let aborted = false;
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], { healthCheck: { path: '/health', timeoutMs: 20_000 } }), {
      admitProbe: (_m, signal) =>
        new Promise((resolve) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            resolve(undefined);
          }),
        ),
    });
    pool.start();
    await new Promise((r) => setTimeout(r, 20));
    const startedAt = Date.now();
    await pool.close();
    expect(aborted).toBe(true);
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(o.count('/health')).toBe(0);
  });

  it('with checks disabled members are assumed up and nothing is probed', async () => {
    const o = await origin('a');
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }], noChecks));
    pool.start();
    await pool.probeNow();
    expect(pool.readiness()).toBe('up');
    expect(o.count()).toBe(0);
  });
});

describe('update() on config reload', () => {
  it('keeps the object, health, ejection and in-flight count of members whose name and URL are unchanged', () => {
    const clock = new ManualClock();
    const passive = { consecutiveFailures: 1, ejectMs: 10_000 };
    const pool = makePool(makeSite([offline('a'), offline('b'), offline('c')], { ...noChecks, passive }), { clock });
    const [a, b, c] = pool.members();
    pool.reportFailure(a!, 'connect');
    pool.begin(b!);
    pool.begin(b!);

    const renamedC = { ...offline('c'), name: 'c2' };
    const result = pool.update(makeSite([offline('a', 4), offline('b', 1, true), renamedC, offline('d')], { ...noChecks, passive }));

    expect(result.kept).toEqual([a, b]);
    expect(result.removed).toEqual([c]);
    expect(result.added.map((m) => m.name)).toEqual(['c2', 'd']);
    expect(pool.members().map((m) => m.name)).toEqual(['a', 'b', 'c2', 'd']);
    expect(pool.members()[0]).toBe(a);
    expect(a!.weight).toBe(4);
    expect(a!.isHealthy(clock.now())).toBe(false);
    expect(b!.backup).toBe(true);
    expect(b!.inflight).toBe(2);
    expect(tally(pool, 20)).toEqual({ c2: 10, d: 10 });
  });

  it('closes a removed member’s idle sockets at once and its agent after its last request ends', async () => {
    const o = await origin('a');
    const pool = makePool(makeSite([{ url: o.url, name: 'a' }, offline('b')], noChecks));
    const a = byName(pool, 'a');
    const get = () =>
      new Promise<void>((resolve, reject) => {
        http.get(o.url, { agent: a.agent }, (res) => res.resume().on('end', resolve)).on('error', reject);
      });
    await get();
    await get();
    expect(o.connections).toBe(1); // keep-alive reuse through the member's agent
    pool.begin(a);
    pool.update(makeSite([offline('b')], noChecks));
    await until(() => o.openConnections === 0);
    expect(pool.members().map((m) => m.name)).toEqual(['b']);

    await get(); // a request still in flight on the removed member keeps working
    expect(o.openConnections).toBe(1);
    pool.end(a);
    await until(() => o.openConnections === 0);
  });

  it('probes members added while running, and stops probing removed ones', async () => {
    const a = await origin('a');
    const b = await origin('b');
    const hc = { path: '/health', intervalMs: 60_000, timeoutMs: 1_000 };
    const pool = makePool(makeSite([{ url: a.url, name: 'a' }], { healthCheck: hc }));
    pool.start();
    await pool.probeNow();
    pool.update(makeSite([{ url: b.url, name: 'b' }], { healthCheck: hc }));
    await pool.probeNow();
    expect(byName(pool, 'b').healthState(Date.now()).active).toBe('up');
    expect(a.count('/health')).toBe(1);
    expect(b.count('/health')).toBe(1);
  });

  it('switching checks off assumes members up; switching them on makes them unknown until probed', async () => {
    const o = await origin('a');
    o.kill();
    const site = (enabled: boolean) => makeSite([{ url: o.url, name: 'a' }], { healthCheck: { enabled, timeoutMs: 1_000, unhealthyThreshold: 1 } });
    const pool = makePool(site(true));
    await pool.probeNow();
    expect(pool.readiness()).toBe('down');
    pool.update(site(false));
    expect(pool.readiness()).toBe('up');
    pool.update(site(true));
    expect(pool.readiness()).toBe('unknown');
    await pool.probeNow();
    expect(pool.readiness()).toBe('down');
  });
});

describe('construction', () => {
  it('rejects duplicate member names with a message naming the site and the name', () => {
    const site = makeSite([offline('a')], noChecks);
    site.origins.push({ ...site.origins[0]! });
    expect(() => new OriginPool(site)).toThrow('site "site": duplicate origin member name "a"');
  });

  it('names a member by host:port when the config gives no name', () => {
    const pool = makePool(makeSite([{ url: 'http://127.0.0.1:9/' }], noChecks));
    expect(pool.members()[0]?.name).toBe('127.0.0.1:9');
  });
});

/** Wait for a socket-level effect (a real close on loopback), bounded at 2 s. */
async function until(predicate: () => boolean): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not reached within 2 s');
    await new Promise((r) => setTimeout(r, 5));
  }
}
