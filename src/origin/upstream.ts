/**
 * The way to the origin: every origin request (fill, revalidation, pass-through) asks here for a
 * member and a permit, and reports back how it went. Keeps, per origin member, its Limiter
 * (adaptive concurrency + bounded deadline queue) and its CircuitBreaker, across reloads, and
 * feeds the origin metrics. Owns admission to the origin; not what is sent or served.
 */
import type { Clock } from '../clock.js';
import { Limiter, type Permit } from '../admission/limiter.js';
import { makeLimit } from '../admission/limits/limit.js';
import { CircuitBreaker } from './circuit.js';
import type { AdmissionConfig, SiteConfig } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { ShedReason } from '../outcome.js';
import type { OriginMember, OriginPool } from './pool.js';
import type { FetchFailure } from './fetch.js';

export interface MemberControl {
  readonly site: string;
  readonly member: OriginMember;
  limiter: Limiter;
  breaker: CircuitBreaker;
  /** The admission config the limiter was built from, to rebuild it when it changes. */
  admissionKey: string;
  circuitKey: string;
}

export type AdmitResult =
  | { ok: true; member: OriginMember; permit: Permit; control: MemberControl; waitedMs: number }
  | { ok: false; why: 'no_healthy' }
  | { ok: false; why: 'circuit_open' }
  | { ok: false; why: 'shed'; reason: ShedReason; control: MemberControl; waitedMs: number };

export type OriginOutcome =
  | { kind: 'response'; status: number }
  | { kind: 'failure'; failure: FetchFailure }
  | { kind: 'client_gone' };

export type OriginRequestKind = 'fill' | 'forward' | 'background';

/** The part of an admission key that needs a new Limiter when it changes: [learning, classes]. */
function learningKeyOf(admissionKey: string): string {
  return JSON.stringify((JSON.parse(admissionKey) as unknown[]).slice(0, 2));
}

export class Upstream {
  private readonly controls = new WeakMap<OriginMember, MemberControl>();
  private readonly all = new Set<MemberControl>();

  constructor(
    private readonly clock: Clock,
    private readonly metrics: GatewayMetrics,
    private admission: AdmissionConfig,
    private priorityClasses: number,
  ) {}

  /** Config reload: later permits use the new limit/queue settings (limiters are rebuilt only when those change). */
  configure(admission: AdmissionConfig, priorityClasses: number): void {
    this.admission = admission;
    this.priorityClasses = priorityClasses;
  }

  /** Config snapshots are frozen and replaced whole, so their keys are computed once each. */
  private readonly admissionKeys = new WeakMap<AdmissionConfig, string>();
  private readonly circuitKeys = new WeakMap<object, string>();

  controlFor(site: SiteConfig, member: OriginMember): MemberControl {
    let admissionKey = this.admissionKeys.get(this.admission);
    if (admissionKey === undefined) {
      const { ceiling: _ceiling, ...learning } = this.admission.limit;
      admissionKey = JSON.stringify([learning, this.priorityClasses, this.admission.queue, this.admission.limit.ceiling ?? null]);
      this.admissionKeys.set(this.admission, admissionKey);
    }
    let circuitKey = this.circuitKeys.get(site.circuit);
    if (circuitKey === undefined) {
      circuitKey = JSON.stringify(site.circuit);
      this.circuitKeys.set(site.circuit, circuitKey);
    }
    let c = this.controls.get(member);
    if (!c) {
      c = {
        site: site.name,
        member,
        limiter: this.makeLimiter(),
        breaker: this.makeBreaker(site, member),
        admissionKey,
        circuitKey,
      };
      this.controls.set(member, c);
      this.all.add(c);
      this.metrics.get('circuitState').set({ site: site.name, origin: member.name }, 0);
    } else {
      if (c.admissionKey !== admissionKey) {
        // Queue bounds and the ceiling apply at once. A changed learning algorithm (or number
        // of priority classes) needs a new Limiter: swapped only while idle, so permits in
        // flight are released to the limiter that issued them.
        c.limiter.configure({ ceiling: this.admission.limit.ceiling, queue: this.admission.queue });
        const learningChanged = learningKeyOf(c.admissionKey) !== learningKeyOf(admissionKey);
        if (!learningChanged) c.admissionKey = admissionKey;
        else if (c.limiter.inflight === 0 && c.limiter.queueLength === 0) {
          c.limiter = this.makeLimiter();
          c.admissionKey = admissionKey;
        }
      }
      if (c.circuitKey !== circuitKey) {
        c.breaker = this.makeBreaker(site, member);
        c.circuitKey = circuitKey;
      }
    }
    return c;
  }

  private makeLimiter(): Limiter {
    return new Limiter({
      limit: makeLimit(this.admission.limit),
      ceiling: this.admission.limit.ceiling,
      queue: this.admission.queue,
      // Queue classes: health probes (0), then the configured priorities (1..n), then the
      // background class below every configured one (n + 1).
      classes: this.priorityClasses + 2,
      clock: this.clock,
    });
  }

  private makeBreaker(site: SiteConfig, member: OriginMember): CircuitBreaker {
    const breaker = new CircuitBreaker(site.circuit, this.clock);
    const labels = { site: site.name, origin: member.name };
    breaker.onStateChange = (state) => {
      this.metrics.get('circuitState').set(labels, state === 'closed' ? 0 : state === 'half_open' ? 1 : 2);
    };
    return breaker;
  }

  /**
   * The origin is being protected: every member that takes requests has a standing queue
   * (CoDel: arrivals outrun what it serves, see admission/queue.ts), so a fill asked for now
   * waits its turn behind the crowd. False while any usable member has room or is unknown yet.
   */
  isBacklogged(pool: OriginPool): boolean {
    const now = this.clock.now();
    let any = false;
    for (const member of pool.members()) {
      if (!member.isHealthy(now)) continue;
      const c = this.controls.get(member);
      if (!c) return false;
      if (!c.breaker.isAvailable()) continue;
      if (!c.limiter.judgeQueue()) return false;
      any = true;
    }
    return any;
  }

  /**
   * Picks a member whose breaker lets requests through and waits for one of its permits (up to
   * `deadlineAt`). Refusal is a value, never an exception.
   */
  async admit(
    site: SiteConfig,
    pool: OriginPool,
    opts: { priority: number; deadlineAt: number; exclude?: ReadonlySet<OriginMember>; signal?: AbortSignal; servesCrowd?: boolean },
  ): Promise<AdmitResult> {
    const member = pool.pick({
      exclude: opts.exclude,
      accept: (m) => this.controlFor(site, m).breaker.isAvailable(), // no side effects: takes no probe slot
    });
    if (!member) {
      // Tell "every usable member's breaker is open" from "nothing healthy" without a second
      // pick(), which would advance the round-robin.
      const now = this.clock.now();
      const anyHealthy = pool.members().some((m) => m.isHealthy(now) && !opts.exclude?.has(m));
      return anyHealthy ? { ok: false, why: 'circuit_open' } : { ok: false, why: 'no_healthy' };
    }
    const control = this.controlFor(site, member);
    if (!control.breaker.canRequest()) return { ok: false, why: 'circuit_open' };
    const labels = { site: site.name, origin: member.name };
    const result = await control.limiter.acquire({
      priority: opts.priority + 1, // class 0 is the probes'
      deadlineAt: opts.deadlineAt,
      signal: opts.signal,
      servesCrowd: opts.servesCrowd,
    });
    if (result.waitedMs > 0 || !result.ok) this.metrics.get('queueWait').observe(labels, result.waitedMs / 1000);
    if (!result.ok) {
      const reason: ShedReason = result.reason === 'aborted' ? 'deadline' : result.reason;
      return { ok: false, why: 'shed', reason, control, waitedMs: result.waitedMs };
    }
    return { ok: true, member, permit: result.permit, control, waitedMs: result.waitedMs };
  }

  /**
   * A permit for one active health probe of `member`: probes are origin requests too, so a
   * member never sees more than its limit (and never more than `ceiling`). The probe queues in
   * a class of its own above every configured priority, so it waits for about one permit to come
   * free, not behind the crowd, and gives up after the probe's own timeout. Its round trip (a
   * fresh connection) is not fed to the limit. Undefined when refused: the pool skips that round.
   */
  async admitProbe(site: SiteConfig, member: OriginMember, signal?: AbortSignal): Promise<{ release(): void } | undefined> {
    const control = this.controlFor(site, member);
    const result = await control.limiter.acquire({
      priority: 0,
      deadlineAt: this.clock.now() + site.healthCheck.timeoutMs,
      servesCrowd: true,
      signal,
    });
    if (!result.ok) return undefined;
    return { release: () => result.permit.release('ignore') };
  }

  /**
   * Reports one origin request's outcome: releases the permit (success feeds the limit an RTT
   * sample; timeouts and overload statuses count as drops; a client that left gives no sample),
   * feeds the breaker, passive health and metrics.
   */
  report(
    pool: OriginPool,
    control: MemberControl,
    permit: Permit,
    outcome: OriginOutcome,
    kind: OriginRequestKind,
    startedAt: number,
    /**
     * False while the gateway itself is overloaded: its own event-loop lag is then part of the
     * measured round trip, and feeding that to the limit would shrink it for the wrong reason.
     */
    sampleValid = true,
  ): void {
    const labels = { site: control.site, origin: control.member.name };
    if (outcome.kind === 'client_gone') {
      permit.release('ignore');
      control.breaker.onCancel(); // a half-open probe that never finished gives its slot back
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: 'client_gone' });
      return;
    }
    if (outcome.kind === 'failure') {
      // A refused connection says nothing about the origin's latency; a timeout or reset under load does.
      permit.release(outcome.failure === 'connect_error' || !sampleValid ? 'ignore' : 'dropped');
      control.breaker.onFailure();
      pool.reportFailure(
        control.member,
        outcome.failure === 'connect_error' ? 'connect' : outcome.failure === 'timeout' ? 'timeout' : 'reset',
      );
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: outcome.failure });
      return;
    }
    const status = outcome.status;
    const overloaded = status === 503 || status === 429 || status === 504;
    permit.release(!sampleValid ? 'ignore' : overloaded ? 'dropped' : 'success');
    this.metrics.get('originDuration').observe(labels, Math.max(0, this.clock.now() - startedAt) / 1000);
    if (status >= 500) {
      control.breaker.onFailure();
      pool.reportFailure(control.member, 'status5xx');
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: 'status_5xx' });
    } else {
      control.breaker.onSuccess();
      pool.reportSuccess(control.member);
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: 'ok' });
    }
  }

  /** Publishes limit / in-flight / queue gauges (called on scrape). */
  collect(): void {
    for (const c of this.all) {
      const labels = { site: c.site, origin: c.member.name };
      this.metrics.get('originLimit').set(labels, c.limiter.limit);
      this.metrics.get('originInflight').set(labels, c.limiter.inflight);
      this.metrics.get('queueLength').set(labels, c.limiter.queueLength);
    }
  }

  /** Retry-After basis for a site: queued requests and drain rate summed over its members. */
  drainFacts(site: string): { queueLength: number; drainRatePerSecond: number } {
    let queueLength = 0;
    let drainRatePerSecond = 0;
    for (const c of this.all) {
      if (c.site !== site) continue;
      queueLength += c.limiter.queueLength;
      drainRatePerSecond += c.limiter.drainRatePerSecond();
    }
    return { queueLength, drainRatePerSecond };
  }

  forget(member: OriginMember): void {
    const c = this.controls.get(member);
    if (c) this.all.delete(c);
    this.controls.delete(member);
  }
}
