import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { CircuitBreaker, type CircuitBreakerConfig, type CircuitState } from '../../../src/origin/circuit.js';

const cfg: CircuitBreakerConfig = {
  consecutiveFailures: 3,
  errorRatePercent: 50,
  minRequests: 10,
  windowMs: 10_000,
  openMs: 5_000,
  halfOpenProbes: 2,
};

function setup(over: Partial<CircuitBreakerConfig> = {}) {
  const clock = new ManualClock(0);
  const breaker = new CircuitBreaker({ ...cfg, ...over }, clock);
  const changes: [CircuitState, CircuitState][] = [];
  breaker.onStateChange = (to, from) => changes.push([to, from]);
  /** Runs a script: s = success, f = failure, each 10 ms apart. */
  const run = (script: string) => {
    for (const c of script) {
      clock.advance(10);
      if (c === 's') breaker.onSuccess();
      else breaker.onFailure();
    }
  };
  return { clock, breaker, changes, run };
}

describe('CircuitBreaker', () => {
  it('says why it changed state (for the log)', () => {
    const { clock, breaker } = setup();
    const why: string[] = [];
    breaker.onStateChange = (to, _from, reason) => why.push(`${to}: ${reason}`);
    for (let i = 0; i < 3; i++) breaker.onFailure();
    clock.advance(5_000);
    breaker.canRequest();
    breaker.onFailure();
    clock.advance(5_000);
    breaker.canRequest();
    breaker.onSuccess();
    const rate = setup();
    rate.breaker.onStateChange = (to, _from, reason) => why.push(`${to}: ${reason}`);
    rate.run('sfsfsfsfsf');
    expect(why).toEqual([
      'open: 3 failures in a row',
      'half_open: 5000 ms open: trial requests may go',
      'open: a trial request failed',
      'half_open: 5000 ms open: trial requests may go',
      'closed: a request to it succeeded',
      'open: failures reached 50 % of requests over 10000 ms',
    ]);
  });

  it('remembers the kind of the last failure that counted, for the open warning', () => {
    const { breaker } = setup();
    expect(breaker.lastFailure).toBeUndefined();
    breaker.onFailure(undefined, 'reset');
    breaker.onFailure(undefined, 'status 503');
    expect(breaker.lastFailure).toBe('status 503');
  });

  it.each([
    { script: 'ff', state: 'closed' },
    { script: 'fff', state: 'open' }, // consecutiveFailures in a row
    { script: 'ffsff', state: 'closed' }, // a success resets the run; 4/5 failures but < minRequests
    { script: 'sfsfsfsfsf', state: 'open' }, // 5 of 10 = 50 % with minRequests 10 (judged on a failure)
    { script: 'fsssfsssfs', state: 'closed' }, // 3 of 10 = 30 %
  ])('after $script it is $state', ({ script, state }) => {
    const { breaker, run } = setup();
    run(script);
    expect(breaker.state).toBe(state);
  });

  it('forgets failures older than windowMs', () => {
    const { breaker, run, clock } = setup({ consecutiveFailures: 100 });
    run('ffff');
    clock.advance(10_000);
    run('sfsssss');
    run('sss');
    expect(breaker.state).toBe('closed'); // only 1 of 10 failures still in the window
  });

  it('refuses while open, turns half-open after openMs, and allows only halfOpenProbes probes', () => {
    const { breaker, run, clock, changes } = setup();
    run('fff');
    expect(breaker.canRequest()).toBe(false);
    clock.advance(4_999);
    expect(breaker.isAvailable()).toBe(false);
    expect(breaker.canRequest()).toBe(false);
    clock.advance(1);
    expect(breaker.isAvailable()).toBe(true);
    expect([breaker.canRequest(), breaker.canRequest(), breaker.canRequest()]).toEqual([true, true, false]);
    expect(breaker.state).toBe('half_open');
    expect(breaker.isAvailable()).toBe(false);
    expect(changes).toEqual([
      ['open', 'closed'],
      ['half_open', 'open'],
    ]);
  });

  it.each([
    { outcome: 'success', then: 'closed' },
    { outcome: 'failure', then: 'open' },
  ])('a half-open probe $outcome makes it $then', ({ outcome, then }) => {
    const { breaker, run, clock } = setup();
    run('fff');
    clock.advance(5_000);
    expect(breaker.canRequest()).toBe(true);
    if (outcome === 'success') breaker.onSuccess();
    else breaker.onFailure();
    expect(breaker.state).toBe(then);
    expect(breaker.canRequest()).toBe(then === 'closed');
  });

  it('closing starts fresh: old failures do not count again', () => {
    const { breaker, run, clock } = setup();
    run('fff');
    clock.advance(5_000);
    breaker.canRequest();
    breaker.onSuccess();
    run('ff');
    expect(breaker.state).toBe('closed');
  });

  it('ignores failures reported while open (requests sent before it opened)', () => {
    const { breaker, run, clock } = setup();
    run('fff');
    clock.advance(4_000);
    run('ffff');
    clock.advance(1_000); // openMs counts from the opening, not from the late failures
    expect(breaker.canRequest()).toBe(true);
  });

  it('closes on a success reported while open: the member answers, so recovery follows it', () => {
    const { breaker, run } = setup();
    run('fff');
    expect(breaker.state).toBe('open');
    run('s');
    expect(breaker.state).toBe('closed');
    expect(breaker.canRequest()).toBe(true);
  });

  it('a passing health check turns it half-open once openMs has passed, never closes it outright, and leaves a closed one alone', () => {
    const { breaker, run, clock, changes } = setup();
    breaker.onHealthCheckPassed();
    expect(breaker.state).toBe('closed');
    run('fff');
    breaker.onHealthCheckPassed(); // a cheap probe URL passing while pages time out
    expect(breaker.state).toBe('open');
    clock.advance(5_000);
    breaker.onHealthCheckPassed();
    expect(breaker.state).toBe('half_open');
    expect(changes.at(-1)).toEqual(['half_open', 'open']);
    breaker.onHealthCheckPassed();
    expect(breaker.state).toBe('half_open');
    expect(breaker.canRequest()).toBe(true); // the trial
  });

  it('frees a probe slot on onCancel, and after openMs when probes never report', () => {
    const { breaker, run, clock } = setup({ halfOpenProbes: 1 });
    run('fff');
    clock.advance(5_000);
    expect(breaker.canRequest()).toBe(true);
    expect(breaker.canRequest()).toBe(false);
    breaker.onCancel();
    expect(breaker.canRequest()).toBe(true);
    clock.advance(4_999);
    expect(breaker.canRequest()).toBe(false);
    clock.advance(1);
    expect(breaker.canRequest()).toBe(true);
  });

  it('when disabled, always lets requests through', () => {
    const { breaker, run } = setup({ enabled: false });
    run('ffffffffff');
    expect(breaker.state).toBe('closed');
    expect(breaker.canRequest()).toBe(true);
  });

  it('does not count a timeout of a request sent before the newest one that succeeded (failure-day trial: a slowdown\'s timeouts arrived after recovery)', () => {
    const { clock, breaker } = setup();
    const sentDuringSlowdown = clock.now();
    clock.advance(15_000);
    breaker.onSuccess(clock.now()); // the origin is back: a request sent now is answered
    for (let i = 0; i < 5; i++) breaker.onFailure(sentDuringSlowdown + i); // their 15 s timeouts
    expect(breaker.state).toBe('closed');
    // A timeout of a request sent after that success counts as before.
    clock.advance(10);
    for (let i = 0; i < 3; i++) breaker.onFailure(clock.now());
    expect(breaker.state).toBe('open');
  });

  it('rejects bad options naming the option', () => {
    expect(() => new CircuitBreaker({ ...cfg, halfOpenProbes: 0 }, new ManualClock(0))).toThrow(/halfOpenProbes/);
  });
});
