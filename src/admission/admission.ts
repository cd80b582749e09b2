/**
 * The gateway's own admission, in one part for the composition root: the pressure gate
 * (pressure-gate.ts) as `admission.pressure.enabled` says, or a test's verdict instead; the
 * per-client rate limits (rate-limit-table.ts); and Retry-After for refused requests from the
 * origin queue's measured drain (retry-after.ts). Follows the config: configure() on every
 * generation.
 *
 * Owns the answers to "overloaded?", "shedding?", "over this client's rate?" and "come back
 * when?". It does not act on them: the request path serves stale, sheds or answers 429.
 */
import type { Clock } from '../clock.js';
import type { AdmissionConfig, GatewayConfig } from '../config/schema.js';
import type { Upstream } from '../origin/upstream.js';
import { PressureGate, type PressureSampler } from './pressure-gate.js';
import { RateLimitTable } from './rate-limit-table.js';
import { retryAfterFromDrain } from './retry-after.js';

export interface AdmissionOptions {
  config: GatewayConfig;
  clock: Clock;
  /** The origin limiters, whose measured drain rate sets Retry-After. */
  upstream: Pick<Upstream, 'drainFacts'>;
  /** Decides "overloaded?" (and "shedding?") instead of the pressure gate, whatever `admission.pressure.enabled` says (tests). */
  override?: (() => boolean) | undefined;
  /** The pressure gate's readings instead of the process's (tests). */
  sampler?: PressureSampler;
}

/** admitForward's answer while the gate does not shed: nothing is counted, nothing to release. */
export const NOT_COUNTED = (): void => {};
const noRelease = NOT_COUNTED;

export class Admission {
  /** Samples the process; started by start() when enabled, and by configure() as each generation says. */
  readonly pressure: PressureGate;
  private readonly rateLimits: RateLimitTable;
  private readonly upstream: Pick<Upstream, 'drainFacts'>;
  private readonly override: (() => boolean) | undefined;
  /** The `admission` section in force. */
  private config: AdmissionConfig;
  /** Requests forwarded while the gate sheds (admitForward), their answers not yet done. */
  private forwardingWhileShedding = 0;

  constructor(opts: AdmissionOptions) {
    this.config = opts.config.admission;
    this.upstream = opts.upstream;
    this.override = opts.override;
    this.pressure = new PressureGate(this.config.pressure, { sampler: opts.sampler });
    this.rateLimits = new RateLimitTable(opts.clock);
    this.rateLimits.configure(opts.config.sites);
  }

  /** The pressure gate is over any threshold: answer from the store first. */
  isOverloaded(): boolean {
    if (this.override) return this.override();
    return this.config.pressure.enabled && this.pressure.isOverloaded();
  }

  /** The pressure gate's hard level: also shed what the store cannot answer. */
  isShedding(): boolean {
    if (this.override) return this.override();
    return this.config.pressure.enabled && this.pressure.isShedding();
  }

  /**
   * May a request the cache cannot answer (a bypass, a pass) be forwarded now? Always while the
   * gate does not shed. While it sheds, up to `admission.pressure.forwardWhileShedding` of them
   * at once: the gate protects the process, and a handful of streams costs it nothing next to
   * the crowd it is answering, while refusing them all refused a logged-in user's publish or
   * login (WordPress trial). Any client can send such a request, so the allowance is a count,
   * never a class: a flood fills it and is shed past it, as before. Returns the release to call
   * once the answer is done (idempotent), or undefined: shed it.
   */
  admitForward(): (() => void) | undefined {
    if (!this.isShedding()) return noRelease;
    if (this.forwardingWhileShedding >= this.config.pressure.forwardWhileShedding) return undefined;
    this.forwardingWhileShedding++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.forwardingWhileShedding--;
    };
  }

  /** Takes a token for this client from the route's and the site's limiters; Retry-After seconds when refused. */
  takeRateLimit(site: string, route: string, clientKey: (header?: string) => string): number | undefined {
    return this.rateLimits.take(site, route, clientKey);
  }

  /** True when a rate limit applies to this site and route. */
  rateLimitApplies(site: string, route: string): boolean {
    return this.rateLimits.applies(site, route);
  }

  /** Retry-After for a refusal on `site`: when its origin queue, at its measured drain rate, has room. */
  retryAfterSeconds(site: string): number {
    return retryAfterFromDrain(this.upstream.drainFacts(site), this.config);
  }

  /** At listen: the pressure gate samples when enabled. */
  start(): void {
    if (this.config.pressure.enabled) this.pressure.start();
  }

  /** A validated config generation: its rate limits (unchanged limiters keep their buckets), the gate's thresholds, and the gate on or off. */
  configure(next: GatewayConfig): void {
    this.config = next.admission;
    this.rateLimits.configure(next.sites);
    // The thresholds and the sampling period are live, as documented (a changed period
    // restarts a running sampler).
    this.pressure.configure(next.admission.pressure);
    if (this.config.pressure.enabled) this.pressure.start();
    else this.pressure.stop();
  }

  stop(): void {
    this.pressure.stop();
  }
}
