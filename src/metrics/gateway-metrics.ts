/**
 * The prom-client registry holding every metric in the catalogue (names.ts), plus prom-client's
 * default process metrics. One registry per gateway instance, so tests can run several.
 * Owns creation and typed access; callers decide what to count.
 */
import client from 'prom-client';
import { METRICS, type MetricKey, type MetricSpec } from './names.js';

type MetricOf<K extends MetricKey> = (typeof METRICS)[K]['type'] extends 'counter'
  ? client.Counter<string>
  : (typeof METRICS)[K]['type'] extends 'gauge'
    ? client.Gauge<string>
    : client.Histogram<string>;

export class GatewayMetrics {
  readonly registry: client.Registry;
  private readonly metrics = new Map<MetricKey, client.Metric<string>>();

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    this.registry = new client.Registry();
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
    for (const [key, spec] of Object.entries(METRICS) as [MetricKey, (typeof METRICS)[MetricKey]][]) {
      const common = { name: spec.name, help: spec.help, labelNames: [...spec.labels], registers: [this.registry] };
      let metric: client.Metric<string>;
      if (spec.type === 'counter') metric = new client.Counter(common);
      else if (spec.type === 'gauge') metric = new client.Gauge(common);
      else metric = new client.Histogram({ ...common, buckets: [...((spec as MetricSpec).buckets ?? [])] });
      this.metrics.set(key, metric);
    }
    this.get('configLastReloadSuccess').set(1);
  }

  get<K extends MetricKey>(key: K): MetricOf<K> {
    return this.metrics.get(key) as MetricOf<K>;
  }

  /**
   * Hot path: one finished request. Label children are cached by their values (prom-client
   * hashes the label object on every call otherwise); the sets are small and fixed.
   */
  observeRequest(site: string, route: string, state: string, statusClass: string, seconds: number): void {
    const id = `${site}\u0000${route}\u0000${state}\u0000${statusClass}`;
    let c = this.requestChildren.get(id);
    if (!c) {
      c = {
        count: this.get('requests').labels({ site, route, state, status_class: statusClass }),
        duration: this.get('requestDuration').labels({ site, state }),
      };
      if (this.requestChildren.size > 10_000) this.requestChildren.clear();
      this.requestChildren.set(id, c);
    }
    c.count.inc();
    c.duration.observe(seconds);
  }
  private readonly requestChildren = new Map<
    string,
    { count: client.Counter.Internal; duration: client.Histogram.Internal<string> }
  >();

  /** Hot path too (every lookup): a store operation, with cached label children. */
  countStoreOperation(tier: string, result: string): void {
    const id = `${tier}\u0000${result}`;
    let c = this.storeChildren.get(id);
    if (!c) {
      c = this.get('storeOperations').labels({ tier, result });
      this.storeChildren.set(id, c);
    }
    c.inc();
  }
  private readonly storeChildren = new Map<string, client.Counter.Internal>();

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** '2xx' style class for a status code. */
export function statusClassOf(status: number): string {
  if (status >= 100 && status < 600) return `${Math.floor(status / 100)}xx`;
  return 'other';
}
