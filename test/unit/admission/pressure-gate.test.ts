import { describe, expect, it } from 'vitest';
import { PressureGate, makeProcessSampler, type PressureReadings } from '../../../src/admission/pressure-gate.js';

const cfg = { maxEventLoopDelayMs: 100, maxEventLoopUtilization: 0.9, maxHeapUsedRatio: 0.8, sampleIntervalMs: 250 };
const calm: PressureReadings = { eventLoopDelayMs: 10, eventLoopUtilization: 0.3, heapUsedRatio: 0.3 };

function gateWith(readings: PressureReadings[]) {
  let i = 0;
  const gate = new PressureGate(cfg, { sampler: () => readings[Math.min(i++, readings.length - 1)]! });
  return gate;
}

describe('PressureGate', () => {
  it.each([
    { what: 'event-loop delay', reading: { ...calm, eventLoopDelayMs: 101 } },
    { what: 'event-loop utilisation (with some delay)', reading: { ...calm, eventLoopUtilization: 0.91, eventLoopDelayMs: 21 } },
    { what: 'heap use', reading: { ...calm, heapUsedRatio: 0.81 } },
  ])('is overloaded when $what is over its threshold', ({ reading }) => {
    const gate = gateWith([reading]);
    expect(gate.isOverloaded()).toBe(false);
    gate.sampleNow();
    expect(gate.isOverloaded()).toBe(true);
    expect(gate.readings()).toEqual(reading);
  });

  it.each([
    { what: 'event-loop delay', reading: { ...calm, eventLoopDelayMs: 101 }, shedding: true },
    { what: 'event-loop utilisation (with some delay)', reading: { ...calm, eventLoopUtilization: 0.91, eventLoopDelayMs: 99 }, shedding: false },
    { what: 'heap use', reading: { ...calm, heapUsedRatio: 0.81 }, shedding: true },
  ])('sheds (its hard level) for $what only when the delay or heap threshold itself is crossed: $shedding', ({ reading, shedding }) => {
    const gate = gateWith([reading]);
    gate.sampleNow();
    expect(gate.isOverloaded()).toBe(true);
    expect(gate.isShedding()).toBe(shedding);
  });

  it('stops shedding once delay and heap are below 90 % of their thresholds, while still overloaded by utilisation', () => {
    const gate = gateWith([
      { ...calm, eventLoopDelayMs: 150, eventLoopUtilization: 1 },
      { ...calm, eventLoopDelayMs: 95, eventLoopUtilization: 1 }, // under the threshold, not under 90 %
      { ...calm, eventLoopDelayMs: 85, eventLoopUtilization: 1 },
    ]);
    const states = [1, 2, 3].map(() => (gate.sampleNow(), [gate.isOverloaded(), gate.isShedding()]));
    expect(states).toEqual([
      [true, true],
      [true, true],
      [true, false],
    ]);
  });

  it('with utilisation at its default threshold of 1, a busy loop that turns over quickly is not overloaded, and a delay spike clears once delay is back', () => {
    let i = 0;
    const readings: PressureReadings[] = [
      { eventLoopDelayMs: 20, eventLoopUtilization: 1, heapUsedRatio: 0.3 }, // saturated, prompt
      { eventLoopDelayMs: 150, eventLoopUtilization: 1, heapUsedRatio: 0.3 }, // delay over
      { eventLoopDelayMs: 20, eventLoopUtilization: 0.99, heapUsedRatio: 0.3 }, // clears despite utilisation
    ];
    const gate = new PressureGate({ ...cfg, maxEventLoopUtilization: 1 }, { sampler: () => readings[i++]! });
    const states = [1, 2, 3].map(() => (gate.sampleNow(), gate.isOverloaded()));
    expect(states).toEqual([false, true, false]);
  });

  it('utilisation alone, with the loop turning over quickly (a closed-loop load), is not overload', () => {
    const gate = gateWith([{ ...calm, eventLoopUtilization: 1, eventLoopDelayMs: 19 }]);
    gate.sampleNow();
    expect(gate.isOverloaded()).toBe(false);
  });

  it('is not overloaded at the thresholds themselves', () => {
    const gate = gateWith([{ eventLoopDelayMs: 100, eventLoopUtilization: 0.9, heapUsedRatio: 0.8 }]);
    gate.sampleNow();
    expect(gate.isOverloaded()).toBe(false);
  });

  it('clears only once every reading is below 90 % of its threshold (hysteresis)', () => {
    const gate = gateWith([
      { ...calm, eventLoopDelayMs: 150 }, // over
      { ...calm, eventLoopDelayMs: 95 }, // under the threshold, above 90 % of it: stays overloaded
      { ...calm, eventLoopDelayMs: 89 }, // clears
    ]);
    const states = [1, 2, 3].map(() => (gate.sampleNow(), gate.isOverloaded()));
    expect(states).toEqual([true, true, false]);
  });

  it('reports flips through onChange, once per flip', () => {
    const gate = gateWith([{ ...calm, heapUsedRatio: 0.95 }, { ...calm, heapUsedRatio: 0.95 }, calm]);
    const flips: boolean[] = [];
    gate.onChange = (overloaded) => flips.push(overloaded);
    gate.sampleNow();
    gate.sampleNow();
    gate.sampleNow();
    expect(flips).toEqual([true, false]);
  });

  it('samples on its interval after start() and stops after stop()', async () => {
    let calls = 0;
    const gate = new PressureGate({ ...cfg, sampleIntervalMs: 5 }, { sampler: () => (calls++, calm) });
    gate.start();
    gate.start(); // idempotent: one interval
    await new Promise((r) => setTimeout(r, 60));
    gate.stop();
    const seen = calls;
    expect(seen).toBeGreaterThan(2);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toBe(seen);
  });

  it('stopped (turned off by reload), offers no readings of before: the limiters read the host delay from it (config audit)', () => {
    const gate = new PressureGate(cfg, { sampler: () => ({ eventLoopDelayMs: 400, eventLoopUtilization: 1, heapUsedRatio: 0.5, eventLoopDelayMeanMs: 120 }) });
    gate.sampleNow();
    expect(gate.readings().eventLoopDelayMeanMs).toBe(120);
    gate.stop();
    expect(gate.readings().eventLoopDelayMeanMs ?? 0).toBe(0);
    expect(gate.readings().eventLoopDelayMs).toBe(0);
  });

  it('the process sampler reads real, plausible values', () => {
    const sampler = makeProcessSampler();
    const r = sampler();
    sampler.stop();
    expect(r.eventLoopDelayMs).toBeGreaterThanOrEqual(0);
    expect(r.eventLoopUtilization).toBeGreaterThanOrEqual(0);
    expect(r.eventLoopUtilization).toBeLessThanOrEqual(1);
    expect(r.heapUsedRatio).toBeGreaterThan(0);
    expect(r.heapUsedRatio).toBeLessThan(1);
  });

  it('the process sampler reads the delay on top of its timer period: an idle loop lags well under the 10 ms period', async () => {
    const sampler = makeProcessSampler();
    await new Promise((resolve) => setTimeout(resolve, 200)); // the histogram needs real timer turns
    const r = sampler();
    sampler.stop();
    // Read raw, every interval is at least the period (min 10.08 ms on an idle loop).
    expect(r.eventLoopDelayMeanMs).toBeLessThan(9.5);
    expect(r.eventLoopDelayMeanMs).toBeGreaterThanOrEqual(0);
  });

  it('rejects a utilisation threshold above 1', () => {
    expect(() => new PressureGate({ ...cfg, maxEventLoopUtilization: 1.5 })).toThrow(/maxEventLoopUtilization/);
  });
});
