/**
 * The pressure gate: protects the gateway process itself (not the origin). Samples event-loop
 * delay, event-loop utilisation and heap use every `sampleIntervalMs` and keeps one cached
 * boolean, so asking "overloaded?" on every request costs a property read.
 *
 * Owns the sampling and the overloaded decision. It does not decide what to do about it (the
 * request path serves stale or sheds with 503).
 *
 * Two levels. **Overloaded** (any threshold): the request path answers from what is stored
 * first (stale copies, joined fills). Utilisation is the early signal here, but only together
 * with some delay: a flooded loop is busy and starts to lag (answering stale then, before the
 * delay threshold, keeps page latency low in a crowd); a loop busy all the time but turning
 * over quickly, as under a closed-loop load, is not in trouble. So utilisation over its
 * threshold counts while the delay is over maxEventLoopDelayMs / 5; a utilisation threshold of
 * 1 turns it off. **Shedding** (the delay or heap threshold itself): work the store cannot
 * answer (uncacheable requests, hit-for-pass keys) is also refused with 503. Utilisation alone
 * never sheds: a gateway sharing its CPU with the origin, or under a burst of new clients, is
 * busy and lags tens of ms on an ordinary day, and refusing healthy requests then was an
 * outage the gateway caused (a normal day at 100 clients: 1 743 of 6 300 fast requests shed on
 * a loaded host); the origin limiter still refuses on the origin's evidence.
 *
 * Each level with hysteresis so the gate does not flap at a threshold:
 *   off -> on  when any of its readings > its threshold
 *   on -> off  when every one of its readings < HYSTERESIS (0.9) x its threshold
 */
import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import type { PressureConfig } from '../config/schema.js';

export interface PressureReadings {
  /** p99 event-loop delay over the last sample period, ms. */
  eventLoopDelayMs: number;
  /** Mean event-loop delay over the last sample period, ms (0 when an injected sampler omits it). */
  eventLoopDelayMeanMs?: number;
  /** Share of the last sample period the loop was busy, 0..1. */
  eventLoopUtilization: number;
  /** V8 heap used / heap size limit, 0..1. */
  heapUsedRatio: number;
}

export type PressureSampler = () => PressureReadings;

type Thresholds = Pick<PressureConfig, 'maxEventLoopDelayMs' | 'maxEventLoopUtilization' | 'maxHeapUsedRatio'>;
export type PressureGateConfig = Thresholds & Pick<PressureConfig, 'sampleIntervalMs'> & { enabled?: boolean };

const HYSTERESIS = 0.9;
/** Utilisation sheds only while the delay is over maxEventLoopDelayMs / this. */
export const ELU_DELAY_FRACTION = 5;

/** monitorEventLoopDelay's timer period, ms. */
const DELAY_RESOLUTION_MS = 10;

/**
 * The default sampler: event-loop delay p99 from perf_hooks.monitorEventLoopDelay (reset each
 * sample), utilisation as the delta of performance.eventLoopUtilization() since the last
 * sample, heap from v8.getHeapStatistics(). Call stop() to disable the delay monitor.
 *
 * The histogram records each whole timer interval, its period included (an idle loop reads
 * min 10.08, mean 10.19 ms at a 10 ms resolution), so the period is taken off: the delay is what
 * came on top of it. Read raw, an idle gateway "lagged" 10 ms, which the learned limit allowed
 * for as the gateway's own delay, and the pressure thresholds sat 10 ms lower than written.
 */
export function makeProcessSampler(): PressureSampler & { stop(): void } {
  const histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
  histogram.enable();
  let lastElu: EventLoopUtilization = performance.eventLoopUtilization();
  const sample = (): PressureReadings => {
    // percentile() is in ns; 0 samples yet reads as 0 (or NaN on some versions).
    const p99 = histogram.count > 0 ? Math.max(0, histogram.percentile(99) / 1e6 - DELAY_RESOLUTION_MS) : 0;
    const mean = histogram.count > 0 ? Math.max(0, histogram.mean / 1e6 - DELAY_RESOLUTION_MS) : 0;
    histogram.reset();
    const elu = performance.eventLoopUtilization(lastElu);
    lastElu = performance.eventLoopUtilization();
    const heap = getHeapStatistics();
    return {
      eventLoopDelayMs: Number.isFinite(p99) ? p99 : 0,
      eventLoopDelayMeanMs: Number.isFinite(mean) ? mean : 0,
      eventLoopUtilization: elu.utilization,
      heapUsedRatio: heap.used_heap_size / heap.heap_size_limit,
    };
  };
  return Object.assign(sample, { stop: () => histogram.disable() });
}

export class PressureGate {
  private cfg: PressureGateConfig;
  private readonly injected: PressureSampler | undefined;
  private sampler: (PressureSampler & { stop?(): void }) | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private overloaded = false;
  private shedding = false;
  private last: PressureReadings = { eventLoopDelayMs: 0, eventLoopUtilization: 0, heapUsedRatio: 0 };
  /** Called when the overloaded state flips. */
  onChange: ((overloaded: boolean, readings: PressureReadings) => void) | undefined;

  constructor(cfg: PressureGateConfig, opts: { sampler?: PressureSampler } = {}) {
    this.cfg = checkConfig(cfg);
    this.injected = opts.sampler;
  }

  /** Starts sampling on an unref'd interval (does not keep the process alive). Idempotent. */
  start(): void {
    if (this.timer) return;
    this.sampler ??= this.injected ?? makeProcessSampler();
    this.timer = setInterval(() => this.sampleNow(), this.cfg.sampleIntervalMs);
    this.timer.unref();
  }

  /** Stops sampling and clears the overloaded state. Idempotent. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.sampler && this.sampler !== this.injected) this.sampler.stop?.();
    if (this.sampler !== this.injected) this.sampler = undefined;
    this.overloaded = false;
    this.shedding = false;
    // Its last readings go too: the limiters read the event-loop delay from here, and turned
    // off by reload the gate kept offering its last one for good, where a gate started off
    // offers none (config audit).
    this.last = { eventLoopDelayMs: 0, eventLoopUtilization: 0, heapUsedRatio: 0 };
  }

  /** Applies new thresholds; a changed interval restarts a running sampler. */
  configure(cfg: PressureGateConfig): void {
    const restart = this.timer !== undefined && cfg.sampleIntervalMs !== this.cfg.sampleIntervalMs;
    this.cfg = checkConfig(cfg);
    if (restart) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.start();
    }
  }

  /** The cached decision from the last sample: answer from the store first. */
  isOverloaded(): boolean {
    return this.overloaded;
  }

  /** The hard level (delay or heap over its threshold): also shed what the store cannot answer. */
  isShedding(): boolean {
    return this.shedding;
  }

  readings(): PressureReadings {
    return this.last;
  }

  /** Takes one sample now and updates the decision (the interval calls this; so can tests). */
  sampleNow(): PressureReadings {
    this.sampler ??= this.injected ?? makeProcessSampler();
    const r = this.sampler();
    this.last = r;
    const c = this.cfg;
    const was = this.overloaded;
    // Utilisation counts only together with some delay (a fifth of the delay threshold): a loop
    // busy all the time but turning over quickly (a closed-loop load: refused clients ask again
    // at once, so shedding kept it busy) answers promptly; a flooded one also starts to lag.
    // A utilisation threshold of 1 is off.
    const eluOn = c.maxEventLoopUtilization < 1;
    const busyDelayMs = c.maxEventLoopDelayMs / ELU_DELAY_FRACTION;
    this.shedding = this.shedding
      ? !(r.eventLoopDelayMs < HYSTERESIS * c.maxEventLoopDelayMs && r.heapUsedRatio < HYSTERESIS * c.maxHeapUsedRatio)
      : r.eventLoopDelayMs > c.maxEventLoopDelayMs || r.heapUsedRatio > c.maxHeapUsedRatio;
    if (!was) {
      this.overloaded = this.shedding || (eluOn && r.eventLoopUtilization > c.maxEventLoopUtilization && r.eventLoopDelayMs > busyDelayMs);
    } else {
      this.overloaded =
        this.shedding ||
        !(
          r.eventLoopDelayMs < HYSTERESIS * c.maxEventLoopDelayMs &&
          (!eluOn || r.eventLoopUtilization < HYSTERESIS * c.maxEventLoopUtilization || r.eventLoopDelayMs < HYSTERESIS * busyDelayMs) &&
          r.heapUsedRatio < HYSTERESIS * c.maxHeapUsedRatio
        );
    }
    if (this.overloaded !== was) this.onChange?.(this.overloaded, r);
    return r;
  }
}

function checkConfig(cfg: PressureGateConfig): PressureGateConfig {
  if (!(cfg.maxEventLoopDelayMs > 0)) throw new TypeError(`maxEventLoopDelayMs must be > 0, got ${cfg.maxEventLoopDelayMs}`);
  if (!(cfg.maxEventLoopUtilization > 0 && cfg.maxEventLoopUtilization <= 1))
    throw new TypeError(`maxEventLoopUtilization must be in (0, 1], got ${cfg.maxEventLoopUtilization}`);
  if (!(cfg.maxHeapUsedRatio > 0 && cfg.maxHeapUsedRatio <= 1))
    throw new TypeError(`maxHeapUsedRatio must be in (0, 1], got ${cfg.maxHeapUsedRatio}`);
  if (!(cfg.sampleIntervalMs > 0)) throw new TypeError(`sampleIntervalMs must be > 0, got ${cfg.sampleIntervalMs}`);
  return cfg;
}
