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

export interface RequestRow {
  readonly labels: Record<string, string>;
  readonly statusClass: string;
  /** False once the rows started over: counting into it would be lost. */
  live: boolean;
  pending: number;
  duration: HistogramSeries;
}

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
    // Starting values: no reload refused yet, generation 1, and both refusal series at 0 (so
    // rate() and alerts see the first refusal).
    this.get('configLastReloadSuccess').set(1);
    this.get('configGeneration').set(1);
    for (const reason of ['max_connections', 'per_client']) this.get('clientConnectionsRefused').inc({ reason }, 0);
    // Rare events' series at 0 from the start, so increase() over a dashboard's range counts the
    // first one: a counter born at 1 read as 0 (one refused reload showed failure 0; one PURGE
    // showed url 0; observability trial).
    for (const result of ['success', 'failure']) this.get('configReloads').inc({ result }, 0);
    for (const kind of ['key', 'prefix', 'tag', 'all', 'url'])
      for (const mode of ['soft', 'hard']) this.get('purges').inc({ kind, mode }, 0);
    for (const mode of ['soft', 'hard']) this.get('purgedEntries').inc({ mode }, 0);
  }

  get<K extends MetricKey>(key: K): MetricOf<K> {
    if (key === 'requestDuration') return this.requestDuration as unknown as MetricOf<K>;
    return this.metrics.get(key) as MetricOf<K>;
  }

  /**
   * Hot path: one finished request. No prom-client call here (it hashes the label object every
   * time): the count goes to a plain number flushed into the counter on scrape, the duration
   * into a lean histogram. Rows are found through nested maps keyed by the label values as
   * given (config names and fixed words, whose string hashes V8 keeps), not by a string built
   * per request.
   */
  observeRequest(site: string, route: string, state: string, statusClass: string, seconds: number): void {
    this.observeRow(this.requestRow(site, route, state, statusClass), seconds);
  }

  /**
   * The row counting requests with these labels, for a caller that keeps it across requests
   * (the hit memo): it stays valid while `live` is true (the rows are bounded and start over at
   * 10 000, which makes every row held until then dead).
   */
  requestRow(site: string, route: string, state: string, statusClass: string): RequestRow {
    let byRoute = this.requestRows.get(site);
    if (!byRoute) this.requestRows.set(site, (byRoute = new Map()));
    let byState = byRoute.get(route);
    if (!byState) byRoute.set(route, (byState = new Map()));
    let byClass = byState.get(state);
    if (!byClass) byState.set(state, (byClass = new Map()));
    let c = byClass.get(statusClass);
    if (!c) {
      if (this.requestRowCount >= 10_000) {
        this.flushRequestCounts();
        for (const byRoute of this.requestRows.values())
          for (const byState of byRoute.values()) for (const byClass of byState.values()) for (const row of byClass.values()) row.live = false;
        this.requestRows.clear();
        this.requestRowCount = 0;
        return this.requestRow(site, route, state, statusClass);
      }
      c = {
        labels: { site, route, state, status_class: statusClass },
        statusClass,
        live: true,
        pending: 0,
        duration: this.requestDuration.seriesFor({ site, state }),
      };
      byClass.set(statusClass, c);
      this.requestRowCount++;
    }
    return c;
  }

  /** One finished request counted into a row from requestRow() (which must still be live). */
  observeRow(row: RequestRow, seconds: number): void {
    row.pending++;
    this.requestDuration.observe(row.duration, seconds);
  }
  private requestDuration!: FastHistogram;
  /** site -> route -> state -> status class -> row (bounded by requestRowCount). */
  private readonly requestRows = new Map<string, Map<string, Map<string, Map<string, RequestRow>>>>();
  private requestRowCount = 0;

  private flushRequestCounts(): void {
    const counter = this.metrics.get('requests') as client.Counter<string>;
    for (const byRoute of this.requestRows.values())
      for (const byState of byRoute.values()) for (const byClass of byState.values()) flushPending(counter, byClass.values());
  }

  /** Hot path too (every lookup): a store operation, counted like requests (flushed on scrape). */
  countStoreOperation(tier: string, result: string): void {
    let byResult = this.storeCounts.get(tier);
    if (!byResult) this.storeCounts.set(tier, (byResult = new Map()));
    let c = byResult.get(result);
    if (!c) byResult.set(result, (c = { labels: { tier, result }, pending: 0 }));
    c.pending++;
  }
  /** tier -> result -> row; bounded by the store's fixed tier and result names (a few dozen at most). */
  private readonly storeCounts = new Map<string, Map<string, { labels: Record<string, string>; pending: number }>>();

  private flushStoreCounts(): void {
    const counter = this.metrics.get('storeOperations') as client.Counter<string>;
    for (const byResult of this.storeCounts.values()) flushPending(counter, byResult.values());
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];

/** '2xx' style class for a status code (one shared string per class). */
export function statusClassOf(status: number): string {
  if (status >= 100 && status < 600) return STATUS_CLASSES[Math.floor(status / 100) - 1]!;
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
