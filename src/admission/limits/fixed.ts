/**
 * A limit that never changes: the nginx/Varnish-style fixed cap, for origins whose capacity is
 * known, and as the baseline the adaptive limits are compared with. Ignores every sample.
 */
import type { Limit, LimitSample } from './limit.js';

export class FixedLimit implements Limit {
  readonly current: number;

  constructor(limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new TypeError(`limit must be an integer >= 1, got ${limit}`);
    this.current = limit;
  }

  onSample(_sample: LimitSample, _now: number): void {}
}
