/**
 * The prom-client registry holding every metric in the catalogue (names.ts), plus prom-client's
 * default process metrics. One registry per gateway instance, so tests can run several.
 * Owns creation and typed access; callers decide what to count.
 */
import client from 'prom-client';
import { METRICS, type MetricKey, type MetricSpec } from './names.js';
import { FastHistogram, type HistogramSeries } from './fast-histogram.js';

type MetricOf<K extends MetricKey> = (typeof METRICS)[K]['type'] extends 'counter'
  ? client.Counter<string>
  : (typeof METRICS)[K]['type'] extends 'gauge'
    ? client.Gauge<string>
    : (typeof METRICS)[K]['name'] extends 'crowdgate_request_duration_seconds'
      ? FastHistogram
      : client.Histogram<string>;

export class GatewayMetrics {
  readonly registry: client.Registry;
  private readonly metrics = new Map<MetricKey, client.Metric<string>>();

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.registry = new client.Registry();
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
    for (const [key, spec] of Object.entries(METRICS) as [MetricKey, (typeof METRICS)[MetricKey]][]) {
      if (key === 'requestDuration') {
        // Observed once per request: a lean histogram instead of prom-client's (see fast-histogram.ts).
        this.requestDuration = new FastHistogram(spec.name, spec.help, spec.labels, spec.buckets ?? []);
        this.registry.registerMetric(this.requestDuration as unknown as client.Metric<string>);
        continue;
      }
      const common = { name: spec.name, help: spec.help, labelNames: [...spec.labels], registers: [this.registry] };
      if (key === 'requests' || key === 'storeOperations') {
        // Counted per request into plain numbers, added to the prom-client counter when scraped.
        const flush = key === 'requests' ? () => this.flushRequestCounts() : () => this.flushStoreCounts();
        const counter = new client.Counter({ ...common, collect: flush });
        this.metrics.set(key, counter);
        continue;
      }
      let metric: client.Metric<string>;
      if (spec.type === 'counter') metric = new client.Counter(common);
      else if (spec.type === 'gauge') metric = new client.Gauge(common);
      else metric = new client.Histogram({ ...common, buckets: [...((spec as MetricSpec).buckets ?? [])] });
      this.metrics.set(key, metric);
    }
    this.get('configLastReloadSuccess').set(1);
  }

  get<K extends MetricKey>(key: K): MetricOf<K> {
    if (key === 'requestDuration') return this.requestDuration as unknown as MetricOf<K>;
    return this.metrics.get(key) as MetricOf<K>;
  }

  /**
   * Hot path: one finished request. No prom-client call here (it hashes the label object every
   * time): the count goes to a plain number flushed into the counter on scrape, the duration
   * into a lean histogram; both keyed by a label-value string resolved once per label set.
   */
  observeRequest(site: string, route: string, state: string, statusClass: string, seconds: number): void {
    const id = `${site}\u0000${route}\u0000${state}\u0000${statusClass}`;
    let c = this.requestChildren.get(id);
    if (!c) {
      if (this.requestChildren.size > 10_000) {
        this.flushRequestCounts();
        this.requestChildren.clear();
      }
      c = {
        labels: { site, route, state, status_class: statusClass },
        pending: 0,
        duration: this.requestDuration.seriesFor({ site, state }),
      };
      this.requestChildren.set(id, c);
    }
    c.pending++;
    this.requestDuration.observe(c.duration, seconds);
  }
  private requestDuration!: FastHistogram;
  private readonly requestChildren = new Map<
    string,
    { labels: Record<string, string>; pending: number; duration: HistogramSeries }
  >();

  private flushRequestCounts(): void {
    flushPending(this.metrics.get('requests') as client.Counter<string>, this.requestChildren.values());
  }

  /** Hot path too (every lookup): a store operation, counted like requests (flushed on scrape). */
  countStoreOperation(tier: string, result: string): void {
    const id = `${tier}\u0000${result}`;
    let c = this.storeCounts.get(id);
    if (!c) {
      c = { labels: { tier, result }, pending: 0 };
      this.storeCounts.set(id, c);
    }
    c.pending++;
  }
  /** Bounded by the store's fixed tier and result names (a few dozen at most). */
  private readonly storeCounts = new Map<string, { labels: Record<string, string>; pending: number }>();

  private flushStoreCounts(): void {
    flushPending(this.metrics.get('storeOperations') as client.Counter<string>, this.storeCounts.values());
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** '2xx' style class for a status code. */
export function statusClassOf(status: number): string {
  if (status >= 100 && status < 600) return `${Math.floor(status / 100)}xx`;
  return 'other';
}

/** Adds counts kept as plain numbers on the hot path to their prom-client counter (on scrape). */
function flushPending(counter: client.Counter<string>, rows: Iterable<{ labels: Record<string, string>; pending: number }>): void {
  for (const c of rows) {
    if (c.pending > 0) {
      counter.inc(c.labels, c.pending);
      c.pending = 0;
    }
  }
}
