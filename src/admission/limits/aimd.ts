/**
 * AIMD (additive increase, multiplicative decrease), the loss-based limit of TCP Reno and
 * Netflix concurrency-limits' AIMDLimit. Reacts only to drops and to RTTs above a timeout, so it
 * finds the point where the origin starts failing, not where it starts queueing: it runs the
 * origin hotter than Gradient2 and saw-tooths. Use it when latency is too noisy to read.
 *
 * Per sample:
 *   dropped, or rttMs > timeoutMs  ->  limit = max(min, floor(limit * backoffRatio)), at most once
 *                                      per round trip (samples that started before the last
 *                                      backoff are ignored; start = now - rttMs)
 *   else if inflight >= limit / 2  ->  limit = min(max, limit + 1 / limit)
 *   else (app-limited)             ->  unchanged, so an idle origin does not inflate the limit
 * `+1 / limit` per sample is +1 per round trip (a round trip returns about `limit` samples), the
 * classic additive increase; Netflix's +1 per sample doubles per round trip and overshoots.
 * `current` is floor(limit).
 */
import { checkBounds, clamp, type Limit, type LimitSample } from './limit.js';

export interface AimdOptions {
  initial: number;
  min: number;
  max: number;
  /** Multiplier applied on a drop, in (0.5, 1). Default 0.9. */
  backoffRatio?: number;
  /** An RTT above this counts as a drop, in ms. Default 2000. */
  timeoutMs?: number;
}

export class AimdLimit implements Limit {
  private limit: number;
  private min: number;
  private max: number;
  private readonly backoffRatio: number;
  private readonly timeoutMs: number;
  private lastBackoffAt = -Infinity;

  constructor(opts: AimdOptions) {
    checkBounds(opts.initial, opts.min, opts.max);
    this.min = opts.min;
    this.max = opts.max;
    this.backoffRatio = opts.backoffRatio ?? 0.9;
    this.timeoutMs = opts.timeoutMs ?? 2000;
    if (!(this.backoffRatio >= 0.5 && this.backoffRatio < 1))
      throw new TypeError(`backoffRatio must be in [0.5, 1), got ${this.backoffRatio}`);
    if (!(this.timeoutMs > 0)) throw new TypeError(`timeoutMs must be > 0, got ${this.timeoutMs}`);
    this.limit = clamp(Math.floor(opts.initial), this.min, this.max);
  }

  get current(): number {
    return Math.floor(this.limit);
  }

  setBounds(min: number, max: number): void {
    checkBounds(min, min, max);
    this.min = min;
    this.max = max;
    this.limit = clamp(this.limit, min, max);
  }

  onSample(sample: LimitSample, now: number): void {
    if (sample.dropped || sample.rttMs > this.timeoutMs) {
      // One backoff per round trip (as TCP cuts once per window): a request that started before
      // the last backoff reports on the old limit, not the new one.
      if (now - sample.rttMs < this.lastBackoffAt) return;
      this.limit = Math.max(this.min, Math.floor(this.limit * this.backoffRatio));
      this.lastBackoffAt = now;
    } else if (sample.inflight * 2 >= this.limit) {
      this.limit = Math.min(this.max, this.limit + 1 / this.limit);
    }
  }
}
