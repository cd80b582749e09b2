/**
 * Per-member circuit breaker: stops sending requests to an origin member that keeps failing,
 * so it can recover and the gateway can answer from stale copies at once instead of waiting on
 * timeouts.
 *
 * Owns the breaker state machine only. It does not pick members (pool.ts), decide what counts as
 * a failure (the caller reports one), or serve stale (the request path).
 *
 *   closed     requests flow. Opens after `consecutiveFailures` failures in a row, or when the
 *              failures over the last `windowMs` are >= `errorRatePercent` % of at least
 *              `minRequests` requests (counted in 10 buckets of windowMs / 10; judged when a
 *              failure is reported).
 *   open       refuses everything for `openMs`, then turns half-open on the next ask.
 *   half_open  lets at most `halfOpenProbes` probe requests through at once. A probe success
 *              closes the breaker (fresh counts); a probe failure opens it again for `openMs`.
 *              A probe that never reports (the caller lost it) frees its slot after `openMs`,
 *              or at once through onCancel().
 * Failures reported while open come from requests sent before it opened and are ignored; a
 * success reported while open (a request sent before, or a trial the caller sent because no
 * member was usable) closes it: the member answers, and recovery follows the origin, not a timer.
 */
import type { Clock } from '../clock.js';
import type { CircuitConfig } from '../config/schema.js';

export type CircuitState = 'closed' | 'open' | 'half_open';

export type CircuitBreakerConfig = Pick<
  CircuitConfig,
  'consecutiveFailures' | 'errorRatePercent' | 'minRequests' | 'windowMs' | 'openMs' | 'halfOpenProbes'
> & { enabled?: boolean };

const BUCKETS = 10;

export class CircuitBreaker {
  /** Called on every state change with the new and the previous state, and why (for the log). */
  onStateChange: ((state: CircuitState, previous: CircuitState, why: string) => void) | undefined;

  private cfg: CircuitBreakerConfig;
  private readonly clock: Clock;
  private current: CircuitState = 'closed';
  private consecutive = 0;
  private openedAt = 0;
  private probes = 0;
  private lastProbeAt = 0;
  /** When the newest request that succeeded was sent (onSuccess's startedAt). */
  private newestSuccessStart = -Infinity;
  private lastFailureKind: string | undefined;
  // Error-rate window: bucket i holds bucket number epochs[i] (= floor(now / bucketMs)).
  private readonly epochs = new Array<number>(BUCKETS).fill(-1);
  private readonly totals = new Array<number>(BUCKETS).fill(0);
  private readonly failures = new Array<number>(BUCKETS).fill(0);

  constructor(cfg: CircuitBreakerConfig, clock: Clock) {
    this.cfg = checkConfig(cfg);
    this.clock = clock;
  }

  /** The state as of the last call; an open breaker past openMs turns half-open on canRequest(). */
  get state(): CircuitState {
    return this.current;
  }

  /** Applies a reloaded config; the state is kept. */
  configure(cfg: CircuitBreakerConfig): void {
    this.cfg = checkConfig(cfg);
    if (cfg.enabled === false && this.current !== 'closed') this.close('the breaker was turned off');
  }

  /** Whether canRequest() would say yes, without taking a probe slot or changing state. */
  isAvailable(): boolean {
    if (this.cfg.enabled === false || this.current === 'closed') return true;
    const now = this.clock.now();
    if (this.current === 'open') return now - this.openedAt >= this.cfg.openMs;
    return this.probes < this.cfg.halfOpenProbes || now - this.lastProbeAt >= this.cfg.openMs;
  }

  /** May a request go to this member now? In half-open, a yes takes a probe slot. */
  canRequest(): boolean {
    if (this.cfg.enabled === false || this.current === 'closed') return true;
    const now = this.clock.now();
    if (this.current === 'open') {
      if (now - this.openedAt < this.cfg.openMs) return false;
      this.probes = 0;
      this.transition('half_open', `${this.cfg.openMs} ms open: trial requests may go`);
    }
    if (this.probes < this.cfg.halfOpenProbes) {
      this.probes++;
      this.lastProbeAt = now;
      return true;
    }
    if (now - this.lastProbeAt >= this.cfg.openMs) {
      // The probes out there never reported: assume them lost and probe again.
      this.probes = 1;
      this.lastProbeAt = now;
      return true;
    }
    return false;
  }

  /**
   * An active health check of the member passed: an open breaker past `openMs` turns half-open,
   * so its next request is the trial that decides (without traffic it read "open" for minutes
   * on a healthy origin, and the next page was answered stale-circuit_open: a new-user trial).
   * Not closed outright: a cheap probe URL can pass while the pages time out (a database down),
   * and a closed breaker would send every request into the timeouts again (review).
   */
  onHealthCheckPassed(): void {
    if (this.cfg.enabled === false || this.current !== 'open') return;
    if (this.clock.now() - this.openedAt < this.cfg.openMs) return;
    this.probes = 0;
    this.transition('half_open', 'a health check passed: trial requests may go');
  }

  onSuccess(startedAt?: number): void {
    if (this.cfg.enabled === false) return;
    if (startedAt !== undefined && startedAt > this.newestSuccessStart) this.newestSuccessStart = startedAt;
    if (this.current === 'half_open' || this.current === 'open') {
      this.close('a request to it succeeded');
      return;
    }
    this.consecutive = 0;
    this.record(false);
  }

  /**
   * A failure that says the member is sick. `sentAt`, given for a timeout (reported long after
   * its request went out): one sent before the newest request that succeeded is old news and
   * does not count. After a 20 s slowdown the timeouts of requests sent during it arrived just
   * after the origin recovered, ten in a row, and opened the breaker: 503s against a healthy
   * origin for 5-8 s (failure-day trial).
   */
  onFailure(sentAt?: number, kind?: string): void {
    if (this.cfg.enabled === false) return;
    if (sentAt !== undefined && sentAt < this.newestSuccessStart) return;
    this.lastFailureKind = kind;
    if (this.current === 'half_open') {
      this.open('a trial request failed');
      return;
    }
    if (this.current === 'open') return;
    this.consecutive++;
    this.record(true);
    if (this.consecutive >= this.cfg.consecutiveFailures) this.open(`${this.consecutive} failures in a row`);
    else if (this.isErrorRateOver()) this.open(`failures reached ${this.cfg.errorRatePercent} % of requests over ${this.cfg.windowMs} ms`);
  }

  /** What the last counted failure was (`timeout`, `reset`, `connect_error`, `status 503`...), for the log. */
  get lastFailure(): string | undefined {
    return this.lastFailureKind;
  }

  /** A probe ended without a verdict (e.g. the client left): frees its half-open slot. */
  onCancel(): void {
    if (this.current === 'half_open' && this.probes > 0) this.probes--;
  }

  private record(failed: boolean): void {
    const n = Math.floor(this.clock.now() / (this.cfg.windowMs / BUCKETS));
    const i = n % BUCKETS;
    if (this.epochs[i] !== n) {
      this.epochs[i] = n;
      this.totals[i] = 0;
      this.failures[i] = 0;
    }
    this.totals[i]!++;
    if (failed) this.failures[i]!++;
  }

  /** failures * 100 / total >= errorRatePercent over the buckets still inside the window. */
  private isErrorRateOver(): boolean {
    const n = Math.floor(this.clock.now() / (this.cfg.windowMs / BUCKETS));
    let total = 0;
    let failed = 0;
    for (let i = 0; i < BUCKETS; i++) {
      if (this.epochs[i]! > n - BUCKETS) {
        total += this.totals[i]!;
        failed += this.failures[i]!;
      }
    }
    return total >= this.cfg.minRequests && failed * 100 >= this.cfg.errorRatePercent * total;
  }

  private open(why: string): void {
    this.openedAt = this.clock.now();
    this.transition('open', why);
  }

  private close(why: string): void {
    this.consecutive = 0;
    this.probes = 0;
    this.epochs.fill(-1);
    this.transition('closed', why);
  }

  private transition(to: CircuitState, why: string): void {
    const from = this.current;
    if (from === to) return;
    this.current = to;
    this.onStateChange?.(to, from, why);
  }
}

function checkConfig(cfg: CircuitBreakerConfig): CircuitBreakerConfig {
  const positiveInt = (name: keyof CircuitBreakerConfig) => {
    const v = cfg[name] as number;
    if (!(Number.isInteger(v) && v >= 1)) throw new TypeError(`${name} must be an integer >= 1, got ${v}`);
  };
  positiveInt('consecutiveFailures');
  positiveInt('minRequests');
  positiveInt('halfOpenProbes');
  if (!(cfg.errorRatePercent > 0 && cfg.errorRatePercent <= 100))
    throw new TypeError(`errorRatePercent must be in (0, 100], got ${cfg.errorRatePercent}`);
  if (!(cfg.windowMs > 0)) throw new TypeError(`windowMs must be > 0, got ${cfg.windowMs}`);
  if (!(cfg.openMs > 0)) throw new TypeError(`openMs must be > 0, got ${cfg.openMs}`);
  return cfg;
}
