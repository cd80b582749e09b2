/**
 * The last few minutes of the gateway for the live status page (/status, /status.json): a ring
 * buffer of one sample per second, read from the same prom-client registry that /metrics renders,
 * so the page and Prometheus never disagree.
 *
 * Owns: sampling (an unref'd timer), turning counters into per-second rates between samples,
 * the ring buffer, ageing the hot-keys table (HotKeys.decay) so it shows recent traffic, and the
 * JSON snapshot. It does not: render HTML (status-page.ts), serve HTTP (admin-server.ts), or count
 * anything itself — every figure comes from the metrics the request path already keeps.
 */
import type { Clock } from '../clock.js';
import { CACHE_STATES } from '../outcome.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { HotKeys } from './hot-keys.js';

/** What StatusHistory reads; a Gateway is one. */
export interface StatusSource {
  readonly metrics: GatewayMetrics;
  readonly hotKeys: HotKeys;
  readonly clock: Clock;
  /** Publishes read-on-scrape gauges (origin in-flight, limit, queue) before they are sampled. */
  collectGauges(): void;
}

export interface StatusHistoryOptions {
  /** Time between samples. Default 1000 ms. */
  intervalMs?: number;
  /** How much history to keep: capacity = windowMs / intervalMs samples. Default 300 000 ms (5 min). */
  windowMs?: number;
  /** Halve the hot-key counts this often so the table follows recent traffic. Default 30 000 ms; 0 = never. */
  hotKeyDecayMs?: number;
  /** Rows in the hot-keys table. Default 10. */
  hotKeyRows?: number;
}

export type CircuitName = 'closed' | 'half_open' | 'open';

export interface OriginPoint {
  site: string;
  origin: string;
  inflight: number;
  limit: number;
  queue: number;
  /** undefined until the gauge exists for this member. */
  healthy?: boolean;
  circuit?: CircuitName;
}

export interface StatusSample {
  /** When the sample was taken, epoch ms. */
  at: number;
  /** Time since the previous sample, ms (the rates' denominator). */
  spanMs: number;
  /** Requests answered per second since the previous sample, by cache state (every state present, 0 when none). */
  requestsPerSecond: Record<string, number>;
  /** Requests refused by admission control (503 + Retry-After) per second. */
  shedPerSecond: number;
  /** Requests refused by a per-client rate limit (429 + Retry-After) per second: one client's doing, not the origin's. */
  rateLimitedPerSecond: number;
  /** Requests answered in state "stale" (origin failed, slow or protected) per second. */
  stalePerSecond: number;
  origins: OriginPoint[];
}

export interface HotKeyRow {
  site: string;
  path: string;
  count: number;
  states: Partial<Record<string, number>>;
}

export interface StatusJson {
  generatedAt: number;
  intervalMs: number;
  windowMs: number;
  /** Cache states in display order; every requestsPerSecond record has all of them. */
  states: string[];
  /** Oldest first. Empty until two samples have been taken (a rate needs two readings). */
  samples: StatusSample[];
  /** Cumulative since the gateway started, straight from the counters. */
  totals: { requests: Record<string, number>; shed: number; rateLimited: number; stale: number };
  /** The latest reading per origin member. */
  origins: OriginPoint[];
  hotKeys: HotKeyRow[];
}

/** A fixed-capacity ring: push overwrites the oldest once full; toArray() is oldest first. */
export class RingBuffer<T> {
  private readonly items: Array<T | undefined>;
  private next = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`RingBuffer capacity must be an integer ≥ 1, got ${capacity}`);
    this.items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  push(item: T): void {
    this.items[this.next] = item;
    this.next = (this.next + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
  }

  last(): T | undefined {
    return this.count === 0 ? undefined : this.items[(this.next - 1 + this.capacity) % this.capacity];
  }

  toArray(): T[] {
    const out: T[] = [];
    const start = (this.next - this.count + this.capacity) % this.capacity;
    for (let i = 0; i < this.count; i++) out.push(this.items[(start + i) % this.capacity] as T);
    return out;
  }
}

/**
 * Per-second rate of a counter between two readings:
 *   rate = (current − previous) / (spanMs / 1000)   [1/s]
 * A counter that went down was reset (a new registry): its whole current value counts as the
 * increase, as Prometheus's rate() does. A span ≤ 0 gives 0.
 */
export function computeRate(previous: number, current: number, spanMs: number): number {
  if (spanMs <= 0) return 0;
  const increase = current >= previous ? current - previous : current;
  return increase / (spanMs / 1000);
}

/** Counter totals at one moment, the input of a sample. */
export interface CounterReading {
  at: number;
  requestsByState: Record<string, number>;
  /** Of the "shed" requests, those refused by a per-client rate limit (429: status class 4xx). */
  rateLimited?: number;
}

/** The rates between two readings, one value for every state in `states`. */
export function computeRequestRates(
  prev: CounterReading,
  cur: CounterReading,
  states: readonly string[],
): Record<string, number> {
  const spanMs = cur.at - prev.at;
  const out: Record<string, number> = {};
  const all = new Set([...states, ...Object.keys(cur.requestsByState)]);
  for (const state of all) out[state] = computeRate(prev.requestsByState[state] ?? 0, cur.requestsByState[state] ?? 0, spanMs);
  return out;
}

const CIRCUIT_BY_VALUE: Record<number, CircuitName> = { 0: 'closed', 1: 'half_open', 2: 'open' };

export class StatusHistory {
  readonly intervalMs: number;
  readonly windowMs: number;
  private readonly hotKeyDecayMs: number;
  private readonly hotKeyRows: number;
  private readonly ring: RingBuffer<StatusSample>;
  private previous?: CounterReading;
  private latestTotals: CounterReading = { at: 0, requestsByState: {} };
  private latestOrigins: OriginPoint[] = [];
  private lastDecayAt?: number;
  private timer?: NodeJS.Timeout;
  private sampling?: Promise<void>;

  constructor(
    private readonly gw: StatusSource,
    opts: StatusHistoryOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 1_000;
    this.windowMs = opts.windowMs ?? 300_000;
    this.hotKeyDecayMs = opts.hotKeyDecayMs ?? 30_000;
    this.hotKeyRows = opts.hotKeyRows ?? 10;
    if (!(this.intervalMs > 0)) throw new RangeError(`intervalMs must be > 0, got ${this.intervalMs}`);
    if (!(this.windowMs >= this.intervalMs)) throw new RangeError(`windowMs must be ≥ intervalMs, got ${this.windowMs}`);
    this.ring = new RingBuffer<StatusSample>(Math.ceil(this.windowMs / this.intervalMs));
  }

  /** Samples now and then every intervalMs; the timer never keeps the process alive. */
  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Takes one sample (the timer calls this; tests call it directly with a ManualClock).
   * Overlapping calls share the one in progress: prom-client's get() is async.
   */
  sample(): Promise<void> {
    this.sampling ??= this.takeSample().finally(() => {
      this.sampling = undefined;
    });
    return this.sampling;
  }

  private async takeSample(): Promise<void> {
    const at = this.gw.clock.now();
    this.gw.collectGauges();
    const m = this.gw.metrics;
    const [requests, inflight, limit, queue, healthy, circuit] = await Promise.all([
      m.get('requests').get(),
      m.get('originInflight').get(),
      m.get('originLimit').get(),
      m.get('queueLength').get(),
      m.get('originHealthy').get(),
      m.get('circuitState').get(),
    ]);
    const requestsByState: Record<string, number> = {};
    let rateLimited = 0;
    for (const v of requests.values) {
      const state = String(v.labels.state ?? 'error');
      requestsByState[state] = (requestsByState[state] ?? 0) + v.value;
      if (state === 'shed' && v.labels.status_class === '4xx') rateLimited += v.value;
    }
    const reading: CounterReading = { at, requestsByState, rateLimited };

    const origins = new Map<string, OriginPoint>();
    const point = (labels: Partial<Record<string, string | number>>): OriginPoint => {
      const site = String(labels.site ?? '');
      const origin = String(labels.origin ?? '');
      const id = `${site}\u0000${origin}`;
      let p = origins.get(id);
      if (!p) {
        p = { site, origin, inflight: 0, limit: 0, queue: 0 };
        origins.set(id, p);
      }
      return p;
    };
    for (const v of inflight.values) point(v.labels).inflight = v.value;
    for (const v of limit.values) point(v.labels).limit = v.value;
    for (const v of queue.values) point(v.labels).queue = v.value;
    for (const v of healthy.values) point(v.labels).healthy = v.value >= 1;
    for (const v of circuit.values) point(v.labels).circuit = CIRCUIT_BY_VALUE[v.value] ?? 'open';
    const originList = [...origins.values()].sort((a, b) => a.site.localeCompare(b.site) || a.origin.localeCompare(b.origin));

    if (this.previous && at > this.previous.at) {
      const rates = computeRequestRates(this.previous, reading, CACHE_STATES);
      const spanS = (at - this.previous.at) / 1000;
      const rateLimitedPerSecond = Math.max(0, (reading.rateLimited ?? 0) - (this.previous.rateLimited ?? 0)) / spanS;
      this.ring.push({
        at,
        spanMs: at - this.previous.at,
        requestsPerSecond: rates,
        shedPerSecond: Math.max(0, (rates.shed ?? 0) - rateLimitedPerSecond),
        rateLimitedPerSecond,
        stalePerSecond: rates.stale ?? 0,
        origins: originList,
      });
    }
    if (!this.previous || at > this.previous.at) this.previous = reading;
    this.latestTotals = reading;
    this.latestOrigins = originList;

    if (this.hotKeyDecayMs > 0) {
      this.lastDecayAt ??= at;
      if (at - this.lastDecayAt >= this.hotKeyDecayMs) {
        this.gw.hotKeys.decay();
        this.lastDecayAt = at;
      }
    }
  }

  snapshot(): StatusJson {
    const totals = this.latestTotals.requestsByState;
    const requests: Record<string, number> = {};
    for (const state of new Set([...CACHE_STATES, ...Object.keys(totals)])) requests[state] = totals[state] ?? 0;
    return {
      generatedAt: this.gw.clock.now(),
      intervalMs: this.intervalMs,
      windowMs: this.windowMs,
      states: [...CACHE_STATES],
      samples: this.ring.toArray(),
      totals: {
        requests,
        shed: Math.max(0, (requests.shed ?? 0) - (this.latestTotals.rateLimited ?? 0)),
        rateLimited: this.latestTotals.rateLimited ?? 0,
        stale: requests.stale ?? 0,
      },
      origins: this.latestOrigins,
      hotKeys: this.gw.hotKeys.top(this.hotKeyRows).map((r) => ({ site: r.site, path: r.path, count: r.count, states: { ...r.states } })),
    };
  }
}
