/**
 * One origin member of a site: its identity (name, base URL, weight, backup), its keep-alive
 * agent, its in-flight count, and the two health signals that decide whether it gets traffic:
 *
 * - **active** (health checks): 'unknown' until a verdict; from 'unknown' or 'up',
 *   `unhealthyThreshold` failures in a row take the member 'down' (one failed probe never
 *   does, not even the first: a probe that misfires must not take a serving site down), and a
 *   pass takes 'unknown' 'up' at once; `healthyThreshold` passes in a row bring a 'down' member
 *   up. A passing probe also ends a passive ejection: the member answers, so it gets traffic
 *   again. With checks disabled the member is assumed 'up'.
 * - **passive** (live traffic): `consecutiveFailures` failures in a row that say the member
 *   itself is sick (connection refused, timeout, reset, or a 502/503/504 from it: see
 *   upstream.ts for what counts) eject the member for `ejectMs`, unless no other member would
 *   be usable then (the pool never ejects its last usable member). When the ejection ends the
 *   member is on probation, as nginx does after `fail_timeout`: its next result decides, a
 *   failure ejects it again at once, a success clears the record. Any success reported while
 *   it is ejected (a trial request, see upstream.ts) ends the ejection at once. Failures
 *   reported while it is ejected (requests sent before the ejection) do not extend it.
 *
 * Routing: a member is healthy when active is not 'down' (so 'unknown' routes) and it is not
 * ejected. The state here is pure and clock-driven; it does no I/O except owning the agent.
 * Probing is health-check.ts; scheduling, selection and reload are pool.ts.
 */
import http from 'node:http';
import https from 'node:https';
import type { HealthCheckConfig, OriginConfig } from '../config/schema.js';

export type ActiveHealth = 'up' | 'down' | 'unknown';
/** What says a member is sick: connection refused, timeout, reset, or a 502/503/504 from it. */
export type FailureKind = 'connect' | 'timeout' | 'status5xx' | 'reset';

export interface HealthState {
  /** What the active checks say; 'unknown' until the first probe completes. */
  active: ActiveHealth;
  /** End of the current passive ejection (epoch ms); absent when not ejected. */
  ejectedUntil?: number;
  /** The last probe failure ("probe: ECONNREFUSED") or live-traffic failure ("traffic: timeout"). */
  lastError?: string;
  lastErrorAt?: number;
  /** When the last probe completed (epoch ms). */
  lastProbeAt?: number;
  /** Live-traffic failures in a row since the last success. */
  consecutiveFailures: number;
}

export interface OriginMember {
  /** `name` from the config, or the URL's host:port. Unique within the site. */
  readonly name: string;
  /** Base URL of the member. */
  readonly url: URL;
  readonly weight: number;
  /** Used only when no primary is healthy. */
  readonly backup: boolean;
  /**
   * Keep-alive agent for this member: reuse connections, most recently used first ('lifo')
   * so surplus sockets idle out; idle sockets closed after FREE_SOCKET_TIMEOUT_MS.
   * Destroyed when the member is removed (after its in-flight requests) or the pool closes.
   */
  readonly agent: http.Agent;
  /** Origin requests started (pool.begin) and not yet ended (pool.end). */
  readonly inflight: number;
  /**
   * Answers streaming from the member that gave their origin permit back before their end (a
   * download, an event stream, a client that stopped reading): at most MAX_FREED_ANSWERS, see
   * pass-through.ts. Counted by the request path.
   */
  freedAnswers: number;
  /** Active checks do not say 'down' and the member is not passively ejected. */
  isHealthy(now: number): boolean;
  /** Passively ejected now (upstream.ts sends such a member one trial request at a time). */
  isEjected(now: number): boolean;
  /** An ejection ran out and no request has succeeded since (one more failure ejects it again). */
  isOnProbation(now: number): boolean;
  /**
   * Ejections in a row of a member let back (by a trial or a probe) and ejected again, each
   * within EJECTION_MEMORY_FACTOR x ejectMs of the one before (1 for a first one; 0 before any):
   * how seldom an ejected member gets its trial (upstream.ts).
   */
  readonly ejectionStreak: number;
  /** What the active probes say: 'unknown' before their first verdict, 'up' with them off. */
  activeHealth(): ActiveHealth;
  healthState(now: number): HealthState;
}

/**
 * An ejection that begins within this many ejectMs of the one before continues a streak
 * (PoolMember.ejectionStreak); after that long without one, the next starts afresh.
 */
export const EJECTION_MEMORY_FACTOR = 3;

/** Agent sizing. The limiter bounds real concurrency; these only stop runaway socket counts. */
export const AGENT_MAX_SOCKETS = 256;
/**
 * Most answers of one member that stream on without their permit (OriginMember.freedAnswers):
 * half the agent's sockets, so the permits' own requests always find one. Freed without a
 * bound, 300 downloads took all 256 and every other pass-through request waited for a socket,
 * holding its permit, with no timeout running (review).
 */
export const MAX_FREED_ANSWERS = AGENT_MAX_SOCKETS / 2;
export const AGENT_MAX_FREE_SOCKETS = 64;
/**
 * Idle keep-alive sockets are closed after this, below Node's default server
 * `keepAliveTimeout` (5 s): reusing a socket the origin is closing at that moment fails
 * with ECONNRESET. Note: Node applies the agent timeout to busy sockets too, where it only
 * emits 'timeout' on the request (nothing is destroyed); callers set their own request timeouts.
 */
export const FREE_SOCKET_TIMEOUT_MS = 4_000;

export function makeAgent(url: URL): http.Agent {
  const options = {
    keepAlive: true,
    keepAliveMsecs: 1_000,
    maxSockets: AGENT_MAX_SOCKETS,
    maxFreeSockets: AGENT_MAX_FREE_SOCKETS,
    scheduling: 'lifo' as const,
    timeout: FREE_SOCKET_TIMEOUT_MS,
  };
  return url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options);
}

/** The member name the config implies: `name`, else host:port of the URL. */
export function memberNameOf(cfg: Pick<OriginConfig, 'url' | 'name'>): string {
  return cfg.name ?? new URL(cfg.url).host;
}

/** Identity across reloads: a member is "the same" when both name and URL are unchanged. */
export function memberKeyOf(cfg: Pick<OriginConfig, 'url' | 'name'>): string {
  return `${memberNameOf(cfg)} ${new URL(cfg.url).href}`;
}

export interface PassiveRules {
  consecutiveFailures: number;
  ejectMs: number;
}

/** The pool's view of a member: the public interface plus the state the pool mutates. */
export class PoolMember implements OriginMember {
  readonly name: string;
  readonly url: URL;
  readonly key: string;
  readonly agent: http.Agent;
  weight: number;
  backup: boolean;
  inflight = 0;
  freedAnswers = 0;
  /** Live answers below 500 from the member so far, and that count when its last probe ended (pool.ts). */
  answered = 0;
  answeredAtLastProbe = 0;
  /** Its latest live answers that were 5xx, refused connections, resets or timeouts, in a row (0 after one below 500; pool.ts). */
  failedAnswersInARow = 0;
  /** The status its last probe was answered with; undefined before one, or when none came (pool.ts). */
  lastProbeStatus: number | undefined;
  /** Smooth weighted round-robin running weight (pool.ts). */
  currentWeight = 0;
  /** Set when a reload removed the member; its agent goes when its in-flight requests end. */
  removed = false;

  private active: ActiveHealth;
  /** When the probes last marked the member down (clock ms). */
  private downAt = -Infinity;
  private probePasses = 0;
  private probeFailures = 0;
  private lastProbeAt: number | undefined;
  private trafficFailures = 0;
  /** Set by an ejection; kept after it ends (probation) until the next success. */
  private ejectedUntil: number | undefined;
  /** When the current (or last) ejection began. */
  private ejectedAt = -Infinity;
  /** The last ejection was ended by a success (a trial, a probe), not by its time running out. */
  private letBack = false;
  ejectionStreak = 0;
  /** When the newest request that succeeded was sent (recordSuccess). */
  private newestSuccessStart = -Infinity;
  /** The end of the ejection already announced as over (pool.ts emits 'ejection-ended' once). */
  private announcedEjectionEnd: number | undefined;
  private lastError: string | undefined;
  private lastErrorAt: number | undefined;

  constructor(cfg: OriginConfig, activeChecks: boolean) {
    this.url = new URL(cfg.url);
    this.name = memberNameOf(cfg);
    this.key = memberKeyOf(cfg);
    this.weight = cfg.weight;
    this.backup = cfg.backup;
    this.agent = makeAgent(this.url);
    this.active = activeChecks ? 'unknown' : 'up';
  }

  isHealthy(now: number): boolean {
    return this.active !== 'down' && !this.isEjected(now);
  }

  isEjected(now: number): boolean {
    return this.ejectedUntil !== undefined && now < this.ejectedUntil;
  }

  isOnProbation(now: number): boolean {
    return this.ejectedUntil !== undefined && now >= this.ejectedUntil;
  }

  activeHealth(): ActiveHealth {
    return this.active;
  }

  healthState(now: number): HealthState {
    const s: HealthState = { active: this.active, consecutiveFailures: this.trafficFailures };
    if (this.isEjected(now)) s.ejectedUntil = this.ejectedUntil;
    if (this.lastError !== undefined) s.lastError = this.lastError;
    if (this.lastErrorAt !== undefined) s.lastErrorAt = this.lastErrorAt;
    if (this.lastProbeAt !== undefined) s.lastProbeAt = this.lastProbeAt;
    return s;
  }

  /** Health checks switched on or off by a reload: restart from 'unknown', or assume 'up'. */
  setActiveChecks(enabled: boolean): void {
    this.active = enabled ? 'unknown' : 'up';
    this.probePasses = 0;
    this.probeFailures = 0;
  }

  /** Count one probe result; returns true when the active state changed. */
  recordProbe(ok: boolean, error: string | undefined, rules: HealthCheckConfig, now: number): boolean {
    this.lastProbeAt = now;
    if (ok) {
      this.probePasses++;
      this.probeFailures = 0;
    } else {
      this.probeFailures++;
      this.probePasses = 0;
      this.lastError = `probe: ${error ?? 'failed'}`;
      this.lastErrorAt = now;
    }
    const before = this.active;
    if (this.active === 'unknown' && ok) this.active = 'up';
    else if (this.active !== 'down' && this.probeFailures >= rules.unhealthyThreshold) {
      this.active = 'down';
      this.downAt = now;
    } else if (this.active === 'down' && this.probePasses >= rules.healthyThreshold) this.active = 'up';
    return this.active !== before;
  }

  /**
   * A passing probe ends a passive ejection (returns true when it did): the member answers new
   * connections, so it gets traffic again rather than waiting for a timer.
   */
  endEjection(now: number): boolean {
    if (!this.isEjected(now)) return false;
    // A member ejected again and again (one that answers some requests and fails others) is
    // not let back by a probe that happens to pass: only by a trial, or its time.
    if (this.ejectionStreak > 1) return false;
    this.ejectedUntil = undefined;
    this.letBack = true;
    this.announcedEjectionEnd = undefined;
    this.trafficFailures = 0;
    return true;
  }

  /**
   * A live request succeeded: the failure streak and any probation end, and so does a 'down'
   * from the active probes (returns true when it did) if the request was sent after it: the
   * member answers real requests (a trial sent while nothing else was usable), so it gets
   * traffic again now, not when the next probe passes (after an origin restart, pages answered
   * `stale-unreachable` for 9 s while the refreshes behind them succeeded). The probes'
   * failures start counting again from zero.
   */
  recordSuccess(startedAt: number, endsDown = true): boolean {
    this.trafficFailures = 0;
    if (startedAt > this.newestSuccessStart) this.newestSuccessStart = startedAt;
    // Only a request sent since the ejection began (a trial, or traffic after it) ends it, as
    // only such a request's failure counts (recordFailure): with requests of its own in flight
    // when it was ejected, a member failing 40 % of them came back within milliseconds, 192
    // times in 40 s, and took the most traffic of three (failure-day trial).
    if (startedAt >= this.ejectedAt && this.ejectedUntil !== undefined) {
      this.ejectedUntil = undefined;
      this.announcedEjectionEnd = undefined;
      this.letBack = true;
    }
    if (!endsDown) return false;
    // Only a request sent after the probes' verdict: one already in flight then says nothing
    // new (an operator draining a member by failing its health path saw it come back with every
    // page request that finished).
    if (this.active !== 'down' || startedAt < this.downAt) return false;
    this.active = 'up';
    this.probeFailures = 0;
    return true;
  }

  /**
   * A live request failed in a way that says the member is sick; returns true when this
   * failure ejected the member. `mayEject` is false when no other member would be usable: the
   * streak is kept, and the member is ejected by a later failure once another one is usable.
   */
  recordFailure(kind: FailureKind, rules: PassiveRules, now: number, mayEject = true, startedAt = now): boolean {
    this.lastError = `traffic: ${kind}`;
    this.lastErrorAt = now;
    if (this.isEjected(now)) return false; // sent before the ejection; do not extend it
    // Nor, once it has run out, eject it again: a request that chose the member before the
    // ejection says nothing new (its success does not end one either).
    if (startedAt < this.ejectedAt) return false;
    // A timeout of a request sent before the newest one that succeeded is old news (its
    // report comes a timeout late): after a slowdown, those of requests sent during it arrived
    // after the origin had recovered (failure-day trial; the breaker does the same).
    if (kind === 'timeout' && startedAt < this.newestSuccessStart) return false;
    this.trafficFailures++;
    const onProbation = this.ejectedUntil !== undefined;
    if (!onProbation && this.trafficFailures < rules.consecutiveFailures) return false;
    if (!mayEject) return false;
    // A streak is a member let back and failing again soon after: one whose ejection ran out
    // while it was still down (an outage longer than ejectMs) is not flapping, and must still
    // get its trial every 250 ms (after a 45 s outage it was tried every 4 s: review).
    const recent = now - this.ejectedAt <= EJECTION_MEMORY_FACTOR * rules.ejectMs;
    this.ejectionStreak = !recent ? 1 : this.letBack ? this.ejectionStreak + 1 : Math.max(1, this.ejectionStreak);
    this.letBack = false;
    this.ejectedAt = now;
    this.ejectedUntil = now + rules.ejectMs;
    this.announcedEjectionEnd = undefined;
    this.trafficFailures = 0;
    return true;
  }

  /**
   * True once per ejection, the first time it is seen over. Ejections end by time, so the
   * pool notices at its next pick / probe / health query rather than on a timer.
   */
  takeEjectionEnded(now: number): boolean {
    if (this.ejectedUntil === undefined || now < this.ejectedUntil) return false;
    if (this.announcedEjectionEnd === this.ejectedUntil) return false;
    this.announcedEjectionEnd = this.ejectedUntil;
    return true;
  }

  /** Close idle sockets now; destroy the agent once nothing is in flight. Returns true when destroyed. */
  releaseAgentIfIdle(): boolean {
    if (this.inflight > 0) {
      for (const list of Object.values(this.agent.freeSockets)) for (const s of list ?? []) s.destroy();
      return false;
    }
    this.agent.destroy();
    return true;
  }
}
