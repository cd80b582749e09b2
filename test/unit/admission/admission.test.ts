import { describe, expect, it } from 'vitest';
import { Admission } from '../../../src/admission/admission.js';
import { parseConfigText } from '../../../src/config/load.js';
import { ManualClock } from '../../../src/clock.js';
import { stringify } from 'yaml';

function configWith(pressure: Record<string, unknown>) {
  const loaded = parseConfigText(
    stringify({ admission: { pressure }, sites: [{ name: 's', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:9' }] }] }),
    'admission.yaml',
  );
  if (!loaded.ok) throw new Error('test config invalid');
  return loaded.config;
}

describe('Admission', () => {
  it('applies a reload\'s pressure thresholds to the running gate (they are documented live)', () => {
    // A reading of 100 ms: under the first threshold, over the reloaded one.
    const sampler = () => ({ eventLoopDelayMs: 100, eventLoopUtilization: 0.2, heapUsedRatio: 0.1 });
    const admission = new Admission({
      config: configWith({ maxEventLoopDelayMs: 250 }),
      clock: new ManualClock(0),
      upstream: { drainFacts: () => ({ queued: 0, permitsPerSecond: 0 }) } as never,
      sampler,
    });
    admission.pressure.sampleNow();
    expect(admission.isShedding()).toBe(false);
    admission.configure(configWith({ maxEventLoopDelayMs: 40 }));
    admission.pressure.sampleNow();
    expect(admission.isShedding()).toBe(true);
    admission.stop();
  });

  it('admitForward: no count while the gate does not shed; while it sheds, forwardWhileShedding at once, each release freeing one exactly once', () => {
    let delayMs = 10;
    const admission = new Admission({
      config: configWith({ maxEventLoopDelayMs: 100, forwardWhileShedding: 2 }),
      clock: new ManualClock(0),
      upstream: { drainFacts: () => ({ queued: 0, permitsPerSecond: 0 }) } as never,
      sampler: () => ({ eventLoopDelayMs: delayMs, eventLoopUtilization: 0.2, heapUsedRatio: 0.1 }),
    });
    admission.pressure.sampleNow();
    // Calm: every forward is admitted, and none counts against a later allowance.
    const calm = Array.from({ length: 5 }, () => admission.admitForward());
    expect(calm.every((r) => r !== undefined)).toBe(true);
    delayMs = 300;
    admission.pressure.sampleNow();
    expect(admission.isShedding()).toBe(true);
    const a = admission.admitForward();
    const b = admission.admitForward();
    expect(a).toBeDefined();
    expect(b).toBeDefined();
    expect(admission.admitForward()).toBeUndefined();
    a!();
    a!(); // a second call frees nothing more
    const c = admission.admitForward();
    expect(c).toBeDefined();
    expect(admission.admitForward()).toBeUndefined();
    // A reload to 0 sheds them all while the gate sheds.
    b!();
    c!();
    admission.configure(configWith({ maxEventLoopDelayMs: 100, forwardWhileShedding: 0 }));
    admission.pressure.sampleNow();
    expect(admission.admitForward()).toBeUndefined();
    admission.stop();
  });
});
