/**
 * A histogram for the per-request hot path, registered in a prom-client Registry like any
 * metric (it implements the `get()` the registry reads). prom-client's own Histogram hashes the
 * label object on every observe; here a caller holds a series handle (label set resolved once)
 * and an observation is a bucket search and three additions. Output is the standard Prometheus
 * histogram: cumulative `_bucket{le}`, `_sum`, `_count`.
 */
import type client from 'prom-client';

export interface HistogramSeries {
  readonly labels: Record<string, string>;
  /** Per-bucket (non-cumulative) counts; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

export class FastHistogram {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  private readonly series = new Map<string, HistogramSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    private readonly upperBounds: readonly number[],
  ) {}

  /** The series for these label values (created once; callers keep the handle). */
  seriesFor(labels: Record<string, string>): HistogramSeries {
    const id = this.labelNames.map((n) => labels[n] ?? '').join('\u0000');
    let s = this.series.get(id);
    if (!s) {
      s = { labels: { ...labels }, counts: new Float64Array(this.upperBounds.length + 1), sum: 0, count: 0 };
      this.series.set(id, s);
    }
    return s;
  }

  observe(s: HistogramSeries, value: number): void {
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  /** What a prom-client Registry reads (the shape prom-client's own Histogram.get() returns). */
  get(): { name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: client.MetricValueWithName<string>[] } {
    const values: client.MetricValueWithName<string>[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i <= this.upperBounds.length; i++) {
        cumulative += s.counts[i]!;
        const le = i < this.upperBounds.length ? this.upperBounds[i]! : '+Inf';
        values.push({ labels: { le, ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}
