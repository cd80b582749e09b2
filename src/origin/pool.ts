/**
 * The origin pool of one site: which members exist, which one gets the next origin request,
 * and keeping their health current — active probes on timers, passive ejection from the
 * results callers report, failover to backups, and config reloads that keep member state.
 *
 * Owns selection and health bookkeeping. It does not send origin requests (fetch.ts,
 * forward.ts), hold circuit breakers or limiters (the composition root keeps those per
 * member, e.g. in a `WeakMap<OriginMember, …>`: member objects keep their identity across
 * update() as long as name and URL are unchanged), or decide what to serve when no member
 * is usable.
 *
 * Selection (pick):
 *  1. candidates = healthy primaries (see member.ts for "healthy"), minus `exclude`, passing `accept`;
 *  2. if none, the healthy backups the same way;
 *  3. if none, `undefined`: every member is down, ejected or excluded. The caller (upstream.ts)
 *     then panics as Envoy does below its panic threshold, and as nginx does when every server
 *     of an upstream has failed: a request with a usable stale copy is answered from it while
 *     one trial request at a time finds out whether the origin is back, and a request with
 *     nothing to fall back on is sent anyway, to any member (`pickAny`). A health verdict that
 *     misfires then costs the failing requests, never the whole site.
 *  Among candidates, 'round-robin' is nginx's smooth weighted round-robin: every pick adds each
 *  candidate's weight to its running weight, takes the largest (first in config order on ties)
 *  and subtracts the candidates' total weight from the winner — weights 3:1 give a,a,b,a and
 *  exactly 3:1 over every 4 picks. 'least-inflight' keeps the candidates with the smallest
 *  inflight / weight (compared as a.inflight * b.weight vs b.inflight * a.weight) and breaks
 *  ties with the same smooth round-robin.
 *
 * Active checks: start() probes every member at once (readiness is 'unknown' until a verdict),
 * then every `intervalMs` after the previous probe settles (every second at most while the
 * member is still 'unknown'), so never more than one probe per member is in flight. Timers are
 * unref'd.
 */
import type { Clock } from '../clock.js';
import { systemClock } from '../clock.js';
import type { HealthCheckConfig, SiteConfig } from '../config/schema.js';
import { parseExpectStatus, probe, type ProbeResult } from './health-check.js';
import type { ActiveHealth, FailureKind, OriginMember } from './member.js';
import { PoolMember, memberKeyOf, memberNameOf } from './member.js';
import { loopMemberOf } from '../http/loop.js';

export type { ActiveHealth, FailureKind, HealthState, OriginMember } from './member.js';

/** Probe interval while a member's state is still 'unknown', ms (at most the configured interval). */
export const UNKNOWN_PROBE_INTERVAL_MS = 1_000;

/** The slow-probe warning (runProbe) is logged at most this often per member, ms. */
const SLOW_PROBE_WARN_MS = 60_000;

/** Why a member's health was announced: a probe result, an ejection, or an ejection's end. */
export const HEALTH_CHANGE_CAUSES = ['probe', 'ejected', 'ejection-ended', 'traffic'] as const;
export type HealthChangeCause = (typeof HEALTH_CHANGE_CAUSES)[number];
/**
 * What one active probe's answer counted as: `pass` (the expected status), `fail`, or
 * `excused` (it timed out or answered 5xx while the member answered live requests: counted as
 * alive, see runProbe).
 */
export const PROBE_VERDICTS = ['pass', 'fail', 'excused'] as const;
export type ProbeVerdict = (typeof PROBE_VERDICTS)[number];
/** Live answers failed in a row (5xx, refused, reset, timed out) that stop a probe's 5xx being excused (runProbe). */
const EXCUSE_FAILED_IN_A_ROW = 3;

/** The slice of a pino logger the pool uses. */
export interface PoolLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface OriginPoolOptions {
  clock?: Clock;
  logger?: PoolLogger;
  /**
   * Called when a member's active state changes (including 'unknown' → 'up'/'down'), when it is
   * ejected, and when an ejection is first seen over. `healthy` is member.isHealthy(now) after
   * the change. Must not throw (a throw is logged and ignored).
   */
  onHealthChange?: (member: OriginMember, healthy: boolean, cause: HealthChangeCause) => void;
  /**
   * Admission for an active probe: it is an origin request too, so it takes a permit from the
   * member's limiter (upstream.ts) when one comes free within the probe's timeout.
   * `undefined` means none did: the probe goes without one (a member whose permits are all
   * held by requests it never answers must still be probed). `signal` aborts with the pool
   * (close). Without this option probes run unadmitted (tests of the pool alone).
   */
  admitProbe?: (member: OriginMember, signal: AbortSignal) => Promise<ProbeAdmission | undefined>;
  /** An active probe of `member` passed (the breaker, which the pool does not own, closes on it). */
  onProbePassed?: (member: OriginMember) => void;
  /** Every active probe's verdict, whether or not it changed the member's state. Must not throw. */
  onProbeVerdict?: (member: OriginMember, verdict: ProbeVerdict) => void;
}

/** A permit held for one probe; released when the probe ends. */
export interface ProbeAdmission {
  release(): void;
}

export interface PickOptions {
  /** Members not to choose, e.g. the one that just refused a connection (retry elsewhere). */
  exclude?: ReadonlySet<OriginMember>;
  /** Extra filter, e.g. "circuit not open". Called per candidate; must have no side effects. */
  accept?: (member: OriginMember) => boolean;
}

export interface PoolUpdate {
  added: OriginMember[];
  removed: OriginMember[];
  kept: OriginMember[];
}

/** The site's readiness for /readyz: 'up' when a member is healthy and known up by a probe
 *  (or checks are off); 'unknown' while nothing is known up but some member awaits its first
 *  probe; 'down' when no member is usable. */
export type PoolReadiness = 'up' | 'unknown' | 'down';

export class OriginPool {
  private site: SiteConfig;
  private readonly clock: Clock;
  private readonly logger: PoolLogger | undefined;
  /** When each of a member's excused-probe warnings was last said (warnDue). */
  private readonly probeWarnedAt = { timeout: new WeakMap<PoolMember, number>(), status: new WeakMap<PoolMember, number>() };
  private readonly onHealthChange: OriginPoolOptions['onHealthChange'];
  private readonly admitProbe: OriginPoolOptions['admitProbe'];
  private readonly onProbePassed: OriginPoolOptions['onProbePassed'];
  private readonly onProbeVerdict: OriginPoolOptions['onProbeVerdict'];
  private list: PoolMember[] = [];
  private byKey = new Map<string, PoolMember>();
  /** Members removed by update() that still have requests in flight. */
  private retiring = new Set<PoolMember>();
  private isExpectedStatus: (status: number) => boolean;
  private readonly timers = new Map<PoolMember, NodeJS.Timeout>();
  private readonly probing = new Map<PoolMember, Promise<void>>();
  private readonly abort = new AbortController();
  private started = false;
  private closed = false;

  constructor(site: SiteConfig, opts: OriginPoolOptions = {}) {
    this.site = site;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.onHealthChange = opts.onHealthChange;
    this.admitProbe = opts.admitProbe;
    this.onProbePassed = opts.onProbePassed;
    this.onProbeVerdict = opts.onProbeVerdict;
    this.isExpectedStatus = parseExpectStatus(site.healthCheck.expectStatus);
    assertUniqueNames(site);
    for (const cfg of site.origins) {
      const m = new PoolMember(cfg, site.healthCheck.enabled);
      this.list.push(m);
      this.byKey.set(m.key, m);
    }
  }

  get siteName(): string {
    return this.site.name;
  }

  /** Current members in config order (removed members are gone from here at once). */
  members(): readonly OriginMember[] {
    return this.list;
  }

  pick(opts: PickOptions = {}): OriginMember | undefined {
    const now = this.clock.now();
    this.announceEndedEjections(now);
    const usable = (m: PoolMember): boolean =>
      m.isHealthy(now) && !opts.exclude?.has(m) && (opts.accept ? opts.accept(m) : true);
    let candidates = this.list.filter((m) => !m.backup && usable(m));
    if (candidates.length === 0) candidates = this.list.filter((m) => m.backup && usable(m));
    if (candidates.length === 0) return undefined;
    if (this.site.balance === 'least-inflight') candidates = leastLoaded(candidates);
    return smoothWeightedRoundRobin(candidates);
  }

  /**
   * Panic selection, for when pick() found nothing usable: any member not excluded, ignoring
   * health (primaries first, then backups), by the same smooth weighted round-robin.
   */
  pickAny(opts: Pick<PickOptions, 'exclude'> = {}): OriginMember | undefined {
    let candidates = this.list.filter((m) => !m.backup && !opts.exclude?.has(m));
    if (candidates.length === 0) candidates = this.list.filter((m) => m.backup && !opts.exclude?.has(m));
    if (candidates.length === 0) return undefined;
    return smoothWeightedRoundRobin(candidates);
  }

  /** An origin request to `member` started. Pair with end() in a finally. */
  begin(member: OriginMember): void {
    asPoolMember(member).inflight++;
  }

  /** An origin request to `member` ended (any outcome). */
  end(member: OriginMember): void {
    const m = asPoolMember(member);
    m.inflight = Math.max(0, m.inflight - 1);
    if (m.removed && m.inflight === 0 && this.retiring.delete(m)) m.releaseAgentIfIdle();
  }

  /**
   * A live request to `member`, which chose it at `startedAt` (before any wait for a permit),
   * got a usable response (anything but the failures below): the failure streak and any
   * probation end. `endsDown`: the answer is also evidence enough to end a 'down' the probes
   * found (below 500, the probe's own rule).
   */
  reportSuccess(member: OriginMember, startedAt = this.clock.now(), endsDown = true): void {
    const m = asPoolMember(member);
    const now = this.clock.now();
    this.announceEndedEjections(now); // one that ran out first, before the success clears its trace
    const wasEjected = m.isEjected(now);
    if (endsDown) m.answered++;
    m.failedAnswersInARow = endsDown ? 0 : m.failedAnswersInARow + 1;
    const up = m.recordSuccess(startedAt, endsDown);
    if (m.removed || this.closed) return;
    if (up) {
      this.logger?.info({ site: this.site.name, origin: m.name }, 'origin member up: a request to it succeeded');
      this.emit(m, m.isHealthy(now), 'traffic');
    } else if (wasEjected && !m.isEjected(now)) {
      // A trial ended the ejection: said, as a probe's or the timer's end is (the healthy
      // gauge otherwise read 0 for a member serving again, and paged CrowdgateOriginDown).
      this.logger?.info({ site: this.site.name, origin: m.name }, 'origin member ejection ended (a request to it succeeded)');
      this.emit(m, m.isHealthy(now), 'ejection-ended');
    }
  }

  /**
   * A live request failed in a way that says the member is sick; `passive.consecutiveFailures`
   * in a row eject it for `passive.ejectMs`, but never the last usable member: with nothing
   * else to send to, an ejection would only turn the failing requests into an outage.
   */
  reportFailure(member: OriginMember, kind: FailureKind, startedAt?: number): void {
    const m = asPoolMember(member);
    m.failedAnswersInARow++;
    if (m.removed || this.closed) return;
    const now = this.clock.now();
    const wasHealthy = m.isHealthy(now);
    const othersUsable = this.list.some((o) => o !== m && o.isHealthy(now));
    if (!m.recordFailure(kind, this.site.passive, now, othersUsable, startedAt ?? now)) return;
    this.logger?.warn(
      { site: this.site.name, origin: m.name, kind, ejectMs: this.site.passive.ejectMs },
      'origin member ejected after consecutive failures',
    );
    if (wasHealthy) this.emit(m, false, 'ejected');
  }

  /** Some member (primary or backup) would be picked now. */
  isAnyHealthy(): boolean {
    const now = this.clock.now();
    this.announceEndedEjections(now);
    return this.list.some((m) => m.isHealthy(now));
  }

  readiness(): PoolReadiness {
    const now = this.clock.now();
    this.announceEndedEjections(now);
    const healthy = this.list.filter((m) => m.isHealthy(now));
    if (healthy.some((m) => m.activeHealth() === 'up')) return 'up';
    if (healthy.some((m) => m.activeHealth() === 'unknown')) return 'unknown';
    return 'down';
  }

  /** Start active health checks: one probe per member now, then every intervalMs. Idempotent. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    if (!this.site.healthCheck.enabled) return;
    for (const m of this.list) this.probeThenSchedule(m);
  }

  /**
   * Probe every member now (joining a probe already in flight) and resolve when all have
   * settled. Works without start(); for tests, the admin listener and "check now" tooling.
   */
  async probeNow(): Promise<void> {
    if (!this.site.healthCheck.enabled) return;
    await Promise.all(this.list.map((m) => this.runProbe(m)));
  }

  /**
   * Apply a reloaded site config. Members whose name and URL are unchanged keep their object,
   * health, agent and in-flight count (weight and backup are updated); new members start
   * 'unknown' and are probed at once when checks run; removed members leave selection at once,
   * their idle sockets are closed and their agent is destroyed when their last request ends.
   */
  update(site: SiteConfig): PoolUpdate {
    if (this.closed) throw new Error(`origin pool "${this.site.name}" is closed`);
    assertUniqueNames(site);
    const before = this.site;
    this.site = site;
    this.isExpectedStatus = parseExpectStatus(site.healthCheck.expectStatus);
    const checksToggled = before.healthCheck.enabled !== site.healthCheck.enabled;
    const intervalChanged = before.healthCheck.intervalMs !== site.healthCheck.intervalMs;

    const result: PoolUpdate = { added: [], removed: [], kept: [] };
    const next: PoolMember[] = [];
    const nextByKey = new Map<string, PoolMember>();
    for (const cfg of site.origins) {
      let m = this.byKey.get(memberKeyOf(cfg));
      if (m) {
        m.weight = cfg.weight;
        m.backup = cfg.backup;
        if (checksToggled) m.setActiveChecks(site.healthCheck.enabled);
        result.kept.push(m);
      } else {
        m = new PoolMember(cfg, site.healthCheck.enabled);
        result.added.push(m);
      }
      next.push(m);
      nextByKey.set(m.key, m);
    }
    for (const m of this.list) {
      if (nextByKey.has(m.key)) continue;
      m.removed = true;
      this.stopTimer(m);
      if (!m.releaseAgentIfIdle()) this.retiring.add(m);
      result.removed.push(m);
    }
    this.list = next;
    this.byKey = nextByKey;
    // Weights or the member set may have changed: restart the round-robin from even.
    for (const m of next) m.currentWeight = 0;

    if (this.started) {
      if (!site.healthCheck.enabled) for (const m of next) this.stopTimer(m);
      else
        for (const m of next) {
          const isNew = result.added.includes(m);
          if (isNew || checksToggled) this.probeThenSchedule(m);
          else if (intervalChanged) this.schedule(m, true); // an in-flight probe re-arms it again when it settles
        }
    }
    return result;
  }

  /**
   * The site went away (a reload removed or renamed it): probes and timers stop as in close(),
   * but requests in flight finish on their sockets, and each member's agent goes once it has
   * none (as a member a reload removes does). Closed, a renamed site's 40 MB download was cut at
   * 7-15 MB and a POST in flight answered `502 origin_reset` (config-edit trial).
   */
  retire(): void {
    if (!this.stopProbing()) return;
    for (const m of this.list) {
      m.removed = true;
      if (!m.releaseAgentIfIdle()) this.retiring.add(m);
    }
  }

  /** Stop probes and timers, destroy every agent (open sockets included). Idempotent. */
  async close(): Promise<void> {
    if (!this.stopProbing()) return;
    await Promise.all([...this.probing.values()]);
    for (const m of [...this.list, ...this.retiring]) m.agent.destroy();
    this.retiring.clear();
  }

  /** Marks the pool closed and stops its probes and timers; false when it already was. */
  private stopProbing(): boolean {
    if (this.closed) return false;
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.abort.abort();
    return true;
  }

  private probeThenSchedule(m: PoolMember): void {
    void this.runProbe(m).then(() => this.schedule(m));
  }

  /**
   * Arm the member's next probe intervalMs from now (from its last probe with `fromLast`: an
   * edit of the interval, so reloads every second do not push the probe back for good: a
   * member in maintenance went unnoticed for 20 s of such reloads; failure-day trial),
   * replacing any armed timer.
   */
  private schedule(m: PoolMember, fromLast = false): void {
    this.stopTimer(m);
    if (this.closed || !this.started || m.removed || !this.site.healthCheck.enabled) return;
    // Until a verdict ('unknown'), probe at least once a second: thresholds apply from the start,
    // and a gateway started with its origin down should say so in seconds, not intervals.
    const intervalMs = this.site.healthCheck.intervalMs;
    let delayMs = m.activeHealth() === 'unknown' ? Math.min(intervalMs, UNKNOWN_PROBE_INTERVAL_MS) : intervalMs;
    const now = this.clock.now();
    const last = fromLast ? m.healthState(now).lastProbeAt : undefined;
    if (last !== undefined) delayMs = Math.max(0, Math.min(delayMs, last + delayMs - now));
    const timer = setTimeout(() => {
      this.timers.delete(m);
      this.probeThenSchedule(m);
    }, delayMs);
    timer.unref();
    this.timers.set(m, timer);
  }

  private stopTimer(m: PoolMember): void {
    const t = this.timers.get(m);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(m);
  }

  /** One probe of `m`, or the one already in flight. Never rejects. */
  private runProbe(m: PoolMember): Promise<void> {
    const inflight = this.probing.get(m);
    if (inflight) return inflight;
    if (this.closed || m.removed) return Promise.resolve();
    const answeredBefore = m.answered;
    const p = this.admitThenProbe(m).then((result) => {
      this.probing.delete(m);
      if (result === undefined) return; // not admitted this round
      if (this.closed || m.removed || !this.site.healthCheck.enabled) return;
      const now = this.clock.now();
      this.announceEndedEjections(now);
      const before: ActiveHealth = m.activeHealth();
      // A probe that timed out while the member answered live requests (below 500) says its
      // health page is slow, not that it is down: a WordPress front page taking 2.5 s against
      // the 2 s timeout marked a serving member down every three probes, and its stale pages
      // were served and the down alert fired while every other page answered in milliseconds
      // (failure-day trial). It counts as alive; said once a minute.
      const slowButServing = !result.ok && result.error === 'timeout' && m.answered > answeredBefore;
      if (slowButServing && this.warnDue(m, now, 'timeout'))
        this.logger?.warn(
          { site: this.site.name, origin: m.name, path: this.site.healthCheck.path, timeoutMs: this.site.healthCheck.timeoutMs },
          'health check timed out while the member answered requests: counted as alive (raise healthCheck.timeoutMs, or point healthCheck.path at a cheaper page)',
        );
      // A probe answered 5xx while live requests to the member were answered below 500 since
      // its previous probe, and its latest live answers were not EXCUSE_FAILED_IN_A_ROW
      // failures in a row (a database outage: the pages answered before it, then 500s like the
      // probe's; excused, the warning sent the operator to the health path: new-user trial; not
      // the latest answer alone: where the broken page is `/`, a visitor's own request for it
      // is a 500 as often as `/` is asked for, and one in four probes would count: review),
      // and no other usable member passed its last probe (none is usable,
      // or each answered 5xx too): the health page is broken, not the member. Marked down, the
      // next live answer brought it up again, and the probes took it down again: a front page
      // answering 500 flipped the only member down and up every 15 s, each time answering a few
      // requests stale `origin_down` and flipping the healthy gauge (failure-day trial). So is one whose page fails on every usable member alike (a
      // deploy that broke the front page would take all members but the last down). While
      // another usable member passes its probes, the verdict stands (a deep health page that
      // fails on one member sends its traffic to the others). Said once a minute.
      const brokenPageServing =
        !result.ok &&
        result.status !== undefined &&
        result.status >= 500 &&
        m.answered > m.answeredAtLastProbe &&
        m.failedAnswersInARow < EXCUSE_FAILED_IN_A_ROW &&
        this.list.every((o) => o === m || !o.isHealthy(now) || (o.lastProbeStatus !== undefined && o.lastProbeStatus >= 500));
      if (brokenPageServing && this.warnDue(m, now, 'status'))
        this.logger?.warn(
          { site: this.site.name, origin: m.name, path: this.site.healthCheck.path, status: result.status },
          'health check answered 5xx while the member answered requests: counted as alive (if the probed page is broken, its visitors get a stale copy or the error: fix it at the origin; else point healthCheck.path at a page that answers)',
        );
      m.answeredAtLastProbe = m.answered;
      m.lastProbeStatus = result.status;
      const changed = m.recordProbe(result.ok || slowButServing || brokenPageServing, result.error, this.site.healthCheck, now);
      try {
        this.onProbeVerdict?.(m, result.ok ? 'pass' : slowButServing || brokenPageServing ? 'excused' : 'fail');
      } catch (err) {
        this.logger?.warn({ site: this.site.name, origin: m.name, err }, 'onProbeVerdict threw');
      }
      if (result.ok) {
        try {
          this.onProbePassed?.(m);
        } catch (err) {
          this.logger?.warn({ site: this.site.name, origin: m.name, err }, 'onProbePassed threw');
        }
      }
      if (result.ok && m.endEjection(now)) {
        this.logger?.info({ site: this.site.name, origin: m.name }, 'origin member ejection ended (health check passed)');
        if (!changed) this.emit(m, m.isHealthy(now), 'ejection-ended');
      }
      if (!changed) return;
      const after = m.activeHealth();
      const fields = { site: this.site.name, origin: m.name, from: before, to: after, status: result.status, error: result.error };
      if (after === 'down') this.logger?.warn(fields, 'origin member down (health check)');
      else this.logger?.info(fields, 'origin member up (health check)');
      this.emit(m, m.isHealthy(now), 'probe');
    });
    this.probing.set(m, p);
    return p;
  }

  /** The probe itself, holding a permit when the pool admits probes; undefined when refused one. */
  private async admitThenProbe(m: PoolMember): Promise<ProbeResult | undefined> {
    let admission: ProbeAdmission | undefined;
    if (this.admitProbe) {
      try {
        admission = await this.admitProbe(m, this.abort.signal);
      } catch {
        admission = undefined;
      }
      // Closed while the permit came: it goes back (held, a member's in-flight count stayed
      // one too high for good).
      if (this.abort.signal.aborted) {
        admission?.release();
        return undefined;
      }
      // No permit came free within the probe's timeout: every permit is held, maybe by
      // requests a hung member never answers. The probe goes all the same (one request an
      // interval): skipped, it never found such a member down (47 s, or never, in a trial).
    }
    try {
      const rules: HealthCheckConfig = this.site.healthCheck;
      return await probe({
        url: m.url,
        path: rules.path,
        timeoutMs: rules.timeoutMs,
        isExpectedStatus: this.isExpectedStatus,
        signal: this.abort.signal,
        loopMember: (path) => loopMemberOf(this.site.name, path),
      });
    } finally {
      admission?.release();
    }
  }

  /** Once a minute per member and kind: a probe excused as timed out, or as answered 5xx, while the member serves. */
  private warnDue(m: PoolMember, now: number, kind: 'timeout' | 'status'): boolean {
    const said = this.probeWarnedAt[kind];
    const last = said.get(m);
    if (last !== undefined && now - last < SLOW_PROBE_WARN_MS) return false;
    said.set(m, now);
    return true;
  }

  private announceEndedEjections(now: number): void {
    for (const m of this.list) {
      if (!m.takeEjectionEnded(now)) continue;
      const healthy = m.isHealthy(now);
      // Its time ran out; a member the health check still holds down is not back (failure
      // trial: "ejection ended" read as a recovery for a port nothing listened on).
      if (healthy) this.logger?.info({ site: this.site.name, origin: m.name }, 'origin member ejection ended');
      else this.logger?.info({ site: this.site.name, origin: m.name }, 'origin member ejection ran out; still down by health check (trial requests go on)');
      this.emit(m, healthy, 'ejection-ended');
    }
  }

  private emit(m: PoolMember, healthy: boolean, cause: HealthChangeCause): void {
    if (!this.onHealthChange) return;
    try {
      this.onHealthChange(m, healthy, cause);
    } catch (err) {
      this.logger?.warn({ site: this.site.name, origin: m.name, err }, 'onHealthChange threw');
    }
  }
}

function asPoolMember(member: OriginMember): PoolMember {
  if (!(member instanceof PoolMember)) throw new TypeError('not a member of an OriginPool');
  return member;
}

function assertUniqueNames(site: SiteConfig): void {
  const seen = new Set<string>();
  for (const cfg of site.origins) {
    const n = memberNameOf(cfg);
    if (seen.has(n)) throw new Error(`site "${site.name}": duplicate origin member name "${n}"`);
    seen.add(n);
  }
}

/** nginx smooth weighted round-robin over `candidates` (non-empty); mutates currentWeight. */
function smoothWeightedRoundRobin(candidates: PoolMember[]): PoolMember {
  let total = 0;
  let best: PoolMember | undefined;
  for (const m of candidates) {
    m.currentWeight += m.weight;
    total += m.weight;
    if (best === undefined || m.currentWeight > best.currentWeight) best = m;
  }
  // candidates is non-empty, so best is set.
  best!.currentWeight -= total;
  return best!;
}

/** The candidates with the smallest inflight / weight (cross-multiplied: no division). */
function leastLoaded(candidates: PoolMember[]): PoolMember[] {
  let least: PoolMember[] = [];
  for (const m of candidates) {
    const first = least[0];
    if (first === undefined) {
      least = [m];
      continue;
    }
    const cmp = m.inflight * first.weight - first.inflight * m.weight;
    if (cmp < 0) least = [m];
    else if (cmp === 0) least.push(m);
  }
  return least;
}
