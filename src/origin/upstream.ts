/**
 * The way to the origin: every origin request (fill, revalidation, pass-through) asks here for a
 * member and a permit, and reports back how it went. Keeps, per origin member, its Limiter
 * (adaptive concurrency + bounded deadline queue) and its CircuitBreaker, across reloads, and
 * feeds the origin metrics. Owns admission to the origin; not what is sent or served.
 */
import type { Clock } from '../clock.js';
import { Limiter, systemScheduler, type Permit, type Scheduler } from '../admission/limiter.js';
import { makeLimit } from '../admission/limits/make-limit.js';
import { CircuitBreaker } from './circuit.js';
import type { AdmissionConfig, SiteConfig } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { ShedReason } from '../outcome.js';
import type { OriginMember, OriginPool, PoolLogger } from './pool.js';
import type { FetchFailure } from './fetch.js';
import { PeerLoad, type LoadBus } from './peer-load.js';
import { RouteSlots } from './route-slots.js';

export interface MemberControl {
  readonly site: string;
  readonly member: OriginMember;
  limiter: Limiter;
  breaker: CircuitBreaker;
  /** Limiter.saturatedSeconds() when last published (collect). */
  saturatedSeen: number;
  /** The member's URL: what the other gateways name it by (peer-load.ts). */
  readonly memberKey: string;
  /** The admission config the limiter was built from, to rebuild it when it changes. */
  admissionKey: string;
  circuitKey: string;
  /** The last trial request sent while no member was usable (clock ms), and whether it is out. */
  trialAt: number;
  trialInFlight: boolean;
  /** The last failure that counted against the member (clock ms): trials wait an interval after it. */
  failedAt: number;
  /**
   * Trials of this ejected member that failed in a row while another member took the traffic:
   * each doubles the wait for the next (ejectedTrialMember). Zero again once it answers (not
   * when an ejection runs out: a member in maintenance came back at its old trial pace).
   */
  failedTrials: number;
  /** URL-level failures (see isUrlFailure): the order of outcomes, and each failing path's last failure in it. */
  urlFailures: UrlFailures;
}

/** How many failing paths a member remembers (the oldest is forgotten first). */
const URL_FAILURES_KEPT = 64;

/**
 * Tells a failure one URL keeps giving from a member that is sick. A 503 or a timeout that
 * repeats on one path, while the member answers (a success within URL_SUCCESS_WINDOW_MS) and
 * no other path fails, is that URL's (a search whose backend is down answering `503
 * Retry-After: 30`, a long-poll that outlasts the response timeout): counted against the
 * member, five searchers ejected a working member 36 times in 30 s and its breaker opened 87
 * times (new-user trial). The first failure of a path always counts, failures across paths
 * count, and so do a path's failures while nothing succeeds, so a member failing everything,
 * or a crowd on one page of a member that answers nothing else, is ejected as before.
 *
 * The same for one client: 502/503/504s that repeat for one client address that got no answer
 * in the last URL_SUCCESS_WINDOW_MS, while the member answers other clients and no other
 * client's request fails, are that client's (an origin's per-client rate limit or firewall:
 * nginx's `limit_req` answers 503 by default). One client alternating two paths opened the
 * breaker with 10 of them (attacker trial). A client that gets answers among its failures is
 * seeing a sick member (review: a member failing 70 % of requests, nine in ten of them from one
 * client, read 30 % to the breaker when any repeat counted). Timeouts are never the client's. Behind a proxy
 * that is not trusted, every request has that proxy's address, and no other client is ever
 * answered: failures count as before.
 */
export class UrlFailures {
  private seq = 0;
  private lastSuccessAt = -Infinity;
  /** path -> the order number of its last failure. */
  private readonly lastFailure = new Map<string, number>();
  /** client address -> the order number of its last failure. */
  private readonly lastClientFailure = new Map<string, number>();
  /** client address -> when it was last answered (the latest URL_FAILURES_KEPT). */
  private readonly clientAnswered = new Map<string, number>();

  success(now: number, client?: string): void {
    this.lastSuccessAt = now;
    if (client === undefined) return;
    remember(this.clientAnswered, client, now);
  }

  /**
   * Records a failure of `path` (for `client`, a status only) at `now`; true when it is the
   * URL's or the client's alone (not the member's). `answeredElsewhere`: another member
   * answered this path lately, so it is this member's.
   */
  isUrlFailure(path: string, now: number, answeredElsewhere = false, client?: string): boolean {
    const seq = ++this.seq;
    const previous = remember(this.lastFailure, path, seq);
    const url = previous !== undefined && noneSince(this.lastFailure, path, previous) && now - this.lastSuccessAt <= URL_SUCCESS_WINDOW_MS;
    let own = false;
    if (client !== undefined) {
      const before = remember(this.lastClientFailure, client, seq);
      own =
        before !== undefined &&
        noneSince(this.lastClientFailure, client, before) &&
        now - (this.clientAnswered.get(client) ?? -Infinity) > URL_SUCCESS_WINDOW_MS &&
        this.answeredOtherThan(client, now);
    }
    return !answeredElsewhere && (url || own);
  }

  /** Whether the member answered a client other than `client` within URL_SUCCESS_WINDOW_MS. */
  private answeredOtherThan(client: string, now: number): boolean {
    for (const [other, at] of this.clientAnswered) if (other !== client && now - at <= URL_SUCCESS_WINDOW_MS) return true;
    return false;
  }
}

/**
 * Sets `key` to `value` in `map` as its newest entry, the oldest dropped past `max` entries
 * (a Map keeps insertion order); the value it had before, if any.
 */
function remember<V>(map: Map<string, V>, key: string, value: V, max = URL_FAILURES_KEPT): V | undefined {
  const previous = map.get(key);
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value!);
  return previous;
}

/** Whether nothing in `last` but `key` failed after failure number `since`. */
function noneSince(last: Map<string, number>, key: string, since: number): boolean {
  for (const [other, at] of last) if (other !== key && at > since) return false;
  return true;
}

/** An origin timeout on one path is logged at most this often (Upstream.noteTimeout). */
const TIMEOUT_LOG_INTERVAL_MS = 60_000;
/** A member refusing or resetting connections is logged at most this often (Upstream.noteUnreachable). */
const UNREACHABLE_LOG_INTERVAL_MS = 10_000;

/** A member that answered successfully this recently (ms) is answering: see UrlFailures. */
const URL_SUCCESS_WINDOW_MS = 10_000;

/**
 * Which member last answered each path, and when (per pool, the last URL_FAILURES_KEPT x 4
 * paths): a path one member fails while another answers it is the failing member's (a bad
 * deploy on one of two), never the URL's (review).
 */
class PathAnswers {
  private readonly last = new Map<string, { member: OriginMember; at: number }>();
  note(path: string, member: OriginMember, at: number): void {
    remember(this.last, path, { member, at }, URL_FAILURES_KEPT * 4);
  }
  answeredElsewhere(path: string, member: OriginMember, now: number): boolean {
    const last = this.last.get(path);
    return last !== undefined && last.member !== member && now - last.at <= URL_SUCCESS_WINDOW_MS;
  }
}
const pathAnswers = new WeakMap<OriginPool, PathAnswers>();
function answersOf(pool: OriginPool): PathAnswers {
  let a = pathAnswers.get(pool);
  if (a === undefined) pathAnswers.set(pool, (a = new PathAnswers()));
  return a;
}

/**
 * One admitted origin request: the member, its permit, and the bookkeeping around it. Whoever
 * is admitted calls `finish(outcome)` exactly once, in a `finally` (later calls are ignored):
 * it ends the pool's in-flight count, releases the permit with the right sample, and tells the
 * breaker, passive health and metrics how it went (Netflix concurrency-limits' listener:
 * onSuccess / onDropped / onIgnore).
 */
export interface OriginLease {
  readonly member: OriginMember;
  readonly waitedMs: number;
  /** When the request was admitted (clock ms): its origin time runs from here. */
  readonly startedAt: number;
  /**
   * Sent although no member was usable: panic routing (nothing to fall back on) or a trial
   * request (one at a time per member) to learn whether an ejected or failing member is back;
   * or a trial of an ejected member while others are usable.
   */
  readonly trial: boolean;
  /**
   * Sent to a member not yet shown to be well while others are usable or may be: an ejected
   * member's trial, its half-open breaker's probe, or a member on probation after an ejection
   * ran out. A fill it answers 502-504 or resets, or a repeatable request passed through it
   * answers 502 or 503, is sent once more to a usable member (fill.ts, pass-through.ts): a primary in maintenance whose
   * health path still passed gave visitors its 503 at each half-open probe and after each
   * ejection ran out (failure-day trial).
   */
  readonly suspect: boolean;
  finish(outcome: OriginOutcome): void;
}

export type AdmitResult =
  | { ok: true; lease: OriginLease }
  | { ok: false; why: 'no_healthy' }
  | { ok: false; why: 'circuit_open' }
  | { ok: false; why: 'shed'; reason: ShedReason; waitedMs: number };

/**
 * How an origin request ended. What counts against the member (ejection, breaker) is only what
 * says the member itself is sick: connection refused, timeout, reset, or a 502/503/504 from it.
 * A 500 or 4xx is the application answering; `client_gone` is the client's doing; a fetch
 * `failure: 'error'` is an error the request itself caused (a header the HTTP client refuses)
 * or a gateway bug; `bad_response` is an answer for one URL that could not be parsed; `abandoned` is a request the gateway gave up on (an exception): none of
 * these say anything about the member. Nor does a reset with `reusedConnection`: a keep-alive
 * connection the member closed as idle while our request was on its way (it has no way to say
 * so in advance without a `Keep-Alive: timeout` hint); the caller sends the request again on a
 * new connection, and that attempt counts.
 */
export type OriginOutcome =
  /**
   * `clientHeld`: finished early, the body still streaming at a pace that is no longer the
   * origin's (an endless event stream, or a client that stopped reading): the permit is given
   * back, and the round trip is not fed to the limit.
   */
  | { kind: 'response'; status: number; clientHeld?: boolean }
  | { kind: 'failure'; failure: FetchFailure; reusedConnection?: boolean }
  | { kind: 'client_gone' }
  | { kind: 'abandoned' }
  /**
   * The client stopped sending its request body: the request goes on at the client's pace,
   * which is not the origin's work, so the permit is given back (nothing for or against the
   * member, no sample).
   */
  | { kind: 'body_stalled' };

/** Statuses from a member that say the member itself is in trouble (RFC 9110 §15.6.3-5). */
export const SICK_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);
/**
 * Statuses that may say the member is overloaded, or may be one URL's answer (a maintenance
 * page, a broken endpoint, a test harness): their round trips are not fed to the limit either
 * way. Counted as drops they let one URL that answers 503 halve the limit window after window
 * for every other page (Envoy's adaptive concurrency reads latency only, for the same reason);
 * an overloaded origin shows in latency and timeouts first, and the breaker still counts them.
 */
const AMBIGUOUS_STATUSES: ReadonlySet<number> = new Set([429, 503, 504]);
/** At most one trial request per member per this many ms while no member is usable. */
export const TRIAL_INTERVAL_MS = 250;

/** The learning part of admission.limit, as the admission key holds it. */
type LearningKey = Pick<AdmissionConfig['limit'], 'algorithm' | 'initial' | 'min' | 'max'>;

/**
 * A reloaded admission.limit, applied to a running limiter. The same learning algorithm keeps
 * what it learned, within the new `min`/`max` (`initial` is where a new one starts): raising
 * `max` in a crowd must not drop a learned limit of 80 back to 8. A `fixed` limit is the
 * operator's word and applies as written. Another learning algorithm starts from the limit
 * learned so far (from `initial` after a fixed one, which learned nothing).
 */
function applyLimitEdit(limiter: Limiter, before: LearningKey, cfg: AdmissionConfig['limit']): void {
  if (cfg.algorithm !== 'fixed' && before.algorithm === cfg.algorithm) return limiter.setLimitBounds(cfg.min, cfg.max);
  if (cfg.algorithm === 'fixed') return limiter.replaceLimit(makeLimit(cfg), false);
  const initial = before.algorithm === 'fixed' ? cfg.initial : Math.min(Math.max(limiter.learnedLimit, cfg.min), cfg.max);
  limiter.replaceLimit(makeLimit({ ...cfg, initial }), true);
}

/**
 * How far apart an ejected member's trials are: TRIAL_INTERVAL_MS after a first ejection (an
 * origin back from a restart gets traffic within 250 ms), doubling with each ejection of a
 * streak (member.ts, ejectionStreak), at most ejectMs. A member that answers some requests and
 * fails others (40 % fast 503s) passed a trial within milliseconds of each ejection and went
 * on taking traffic; Envoy's outlier detection likewise lengthens each repeated ejection.
 */
export function trialIntervalMs(ejectionStreak: number, ejectMs: number): number {
  const ms = TRIAL_INTERVAL_MS * 2 ** Math.max(0, Math.min(ejectionStreak - 1, 20));
  return ms < ejectMs ? ms : ejectMs;
}

export interface AdmitOptions {
  priority: number;
  deadlineAt: number;
  kind: OriginRequestKind;
  exclude?: ReadonlySet<OriginMember>;
  signal?: AbortSignal;
  servesCrowd?: boolean;
  /**
   * What kind of request this is for the limit (`fill:<route>`, `forward:<route>`...): its round
   * trip is read against its own class's (admission/limiter.ts, "Latency classes").
   */
  latencyClass?: string;
  /** The request's path (no query): a failure only this path keeps giving is the URL's, not the member's (UrlFailures). */
  path?: string;
  /** Its page where the path is shared by many (admission/limiter.ts pageOf). */
  page?: string;
  /** The client's address: a failure only this client keeps getting is the client's, not the member's (UrlFailures). */
  client?: string;
  /**
   * The caller can answer without the origin (a usable stale copy). When no member is usable it
   * is then refused, except for one trial request per member at a time (TRIAL_INTERVAL_MS
   * apart); without a fallback the request is sent to some member anyway (panic routing).
   */
  hasFallback?: boolean;
  /**
   * No trial of an ejected member: the request is sent again after its trial failed, and goes
   * to a usable member (a second ejected one's trial would give the visitor its 503: review).
   */
  noTrial?: boolean;
  /**
   * The request's route caps its origin requests at once (routes[].maxConcurrent, routeCapOf):
   * a slot is taken before the permit (route-slots.ts), and given back when the lease finishes.
   */
  routeCap?: { route: string; max: number };
}

export type OriginRequestKind = 'fill' | 'forward' | 'background';

/**
 * After a background refresh is refused for want of origin capacity, the site's next ones are
 * not asked for this long (ms; see Upstream.holdsBackground).
 */
export const BACKGROUND_HOLD_MS = 100;

export class Upstream {
  private readonly controls = new WeakMap<OriginMember, MemberControl>();
  private readonly all = new Set<MemberControl>();
  /**
   * `all` by member URL (MemberControl.memberKey): several sites that name the same origin URL
   * each have a limit of their own in front of the one origin, and count each other's requests
   * as they count other gateways' (othersInflight).
   */
  private readonly byMemberKey = new Map<string, Set<MemberControl>>();
  /** Per site: until when background refreshes are not asked for (see holdsBackground). */
  private readonly backgroundHeldUntil = new Map<string, number>();
  /** The other gateways sharing the Redis tier (sharePeers); undefined without Redis. */
  private peers: PeerLoad | undefined;

  /**
   * False while the gateway itself is overloaded: its own event-loop lag is then part of every
   * measured round trip, and feeding that to the limit would shrink it for the wrong reason.
   */
  samplesValid: () => boolean = () => true;
  /** The gateway's event-loop delay now (ms), for the learned limits (gradient2 allows for it). */
  hostDelayMs: () => number = () => 0;
  /** Where breaker transitions are logged (an operator reading the log after an incident). */
  logger: PoolLogger | undefined;
  /** site + path -> when a timeout (noteTimeout) or a 5xx (noteServerError) on it was last logged. */
  private readonly pathLoggedAt = new Map<string, number>();
  /** Member -> by failure, when its refused or reset connections were last logged, and how many since (noteUnreachable). */
  private readonly unreachableLogged = new WeakMap<MemberControl, Map<'connect_error' | 'reset', { at: number; since: number }>>();

  constructor(
    private readonly clock: Clock,
    private readonly metrics: GatewayMetrics,
    private admission: AdmissionConfig,
    private priorityClasses: number,
    /** Timers of the routes' slot waits (routes[].maxConcurrent). */
    private readonly scheduler: Scheduler = systemScheduler,
  ) {}

  /** Site + route -> its slots (routes[].maxConcurrent; see admit). */
  private readonly routeSlots = new Map<string, RouteSlots>();

  /** Config reload: later permits use the new limit/queue settings (limiters are rebuilt only when those change). */
  configure(admission: AdmissionConfig, priorityClasses: number): void {
    this.admission = admission;
    this.priorityClasses = priorityClasses;
  }

  /** Config snapshots are frozen and replaced whole, so their keys are computed once each. */
  private readonly admissionKeys = new WeakMap<AdmissionConfig, string>();
  private readonly circuitKeys = new WeakMap<object, string>();
  /** Each site's circuit settings as of the last reload (applyCircuits): what a breaker follows, whichever config a request began on. */
  private readonly circuits = new Map<string, SiteConfig['circuit']>();

  /**
   * A reload's `sites[].circuit`: each member's breaker takes it in place, its state kept
   * (CircuitBreaker.configure). Rebuilt, as it was, an edit closed every open breaker (traffic
   * straight back to a sick member), left crowdgate_circuit_state saying open, and a request
   * that began on the old config rebuilt it again with the old settings (config audit).
   */
  applyCircuits(sites: readonly SiteConfig[]): void {
    this.circuits.clear();
    for (const site of sites) this.circuits.set(site.name, site.circuit);
  }

  /** Members a reload removed (forget()): never published again. */
  private readonly forgotten = new WeakSet<OriginMember>();

  controlFor(site: SiteConfig, member: OriginMember): MemberControl {
    let admissionKey = this.admissionKeys.get(this.admission);
    if (admissionKey === undefined) {
      const { ceiling: _ceiling, slowShare: _slowShare, ...learning } = this.admission.limit;
      admissionKey = JSON.stringify([learning, this.priorityClasses, this.admission.queue, this.admission.limit.ceiling ?? null, this.admission.limit.slowShare]);
      this.admissionKeys.set(this.admission, admissionKey);
    }
    const circuit = this.circuits.get(site.name) ?? site.circuit;
    let circuitKey = this.circuitKeys.get(circuit);
    if (circuitKey === undefined) {
      circuitKey = JSON.stringify(circuit);
      this.circuitKeys.set(circuit, circuitKey);
    }
    let c = this.controls.get(member);
    if (!c) {
      // Its URL without query, fragment or credentials (never published).
      const memberKey = member.url.origin + member.url.pathname;
      c = {
        site: site.name,
        member,
        memberKey,
        saturatedSeen: 0,
        limiter: this.makeLimiter(member, site.name, memberKey),
        breaker: this.makeBreaker(site.name, circuit, member),
        admissionKey,
        circuitKey,
        trialAt: -Infinity,
        trialInFlight: false,
        failedAt: -Infinity,
        failedTrials: 0,
        urlFailures: new UrlFailures(),
      };
      this.controls.set(member, c);
      // A member a reload removed, still reached by requests that began on the old config:
      // a control of its own, but no gauges (they would stay until restart) (review).
      if (!this.forgotten.has(member)) {
        this.all.add(c);
        let same = this.byMemberKey.get(memberKey);
        if (same === undefined) this.byMemberKey.set(memberKey, (same = new Set()));
        same.add(c);
        this.metrics.get('circuitState').set({ site: site.name, origin: member.name }, 0);
        // From 0, so the first time saturated is a rise that rate() sees.
        this.metrics.get('originSaturated').inc({ site: site.name, origin: member.name }, 0);
      }
    } else {
      if (c.admissionKey !== admissionKey) {
        // Everything applies at once, under load too, to the same Limiter (its permits, waiters
        // and latency classes kept): queue bounds, the ceiling and the number of priority
        // classes in place, and the limit as applyLimitEdit says.
        const [oldLearning] = JSON.parse(c.admissionKey) as [LearningKey, number];
        const [newLearning, newClasses] = JSON.parse(admissionKey) as [LearningKey, number];
        c.limiter.configure({ ceiling: this.admission.limit.ceiling, queue: this.admission.queue, classes: newClasses + 2 });
        if (JSON.stringify(oldLearning) !== JSON.stringify(newLearning)) applyLimitEdit(c.limiter, oldLearning, this.admission.limit);
        c.limiter.enableSlowShare(this.admission.limit.slowShare);
        c.admissionKey = admissionKey;
      }
      if (c.circuitKey !== circuitKey) {
        c.breaker.configure(circuit);
        c.circuitKey = circuitKey;
      }
    }
    return c;
  }

  /**
   * Several gateways share the Redis tier (peer-load.ts): their in-flight counts are counted
   * beside each limit's own (gradient2.ts, "Several gateways"), and their no-load probes are
   * joined. Once, at start, when `redis:` is set.
   */
  sharePeers(bus: LoadBus): void {
    this.peers?.close();
    this.peers = new PeerLoad({
      bus,
      clock: this.clock,
      snapshot: () => this.inflightByMember(),
      onPeerProbe: (member) => {
        for (const c of this.all)
          if (c.memberKey === member && c.limiter.joinProbe()) this.metrics.get('originLimitProbes').inc({ site: c.site, origin: c.member.name, source: 'peer' });
      },
    });
  }

  /** What the other gateways have in flight to the member with this URL (0 without Redis). */
  peerInflight(memberKey: string): number {
    return this.peers?.inflight(memberKey) ?? 0;
  }

  /**
   * What others have in flight to the member with this URL, for one limiter's samples
   * (LimitSample.peerInflight): the other gateways' (peerInflight) and this gateway's other
   * sites' that name the same URL: two sites in front of one app, each counting only its own
   * requests, would each start at the initial limit and take the other's queue for an origin
   * slow on its own, as several gateways did (gradient2.ts, "Several gateways").
   */
  private othersInflight(memberKey: string, self: Limiter): number {
    let n = this.peers?.inflight(memberKey) ?? 0;
    const same = this.byMemberKey.get(memberKey);
    if (same !== undefined && same.size > 1) for (const c of same) if (c.limiter !== self) n += c.limiter.inflight;
    return n;
  }

  /** Whether a limiter's samples count others' requests (othersInflight): Redis, or another site naming the URL. */
  private hasOthers(c: MemberControl): boolean {
    return this.peers !== undefined || (this.byMemberKey.get(c.memberKey)?.size ?? 0) > 1;
  }

  /** This gateway's origin requests in flight per member URL, every site's together. */
  private inflightByMember(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const c of this.all) counts.set(c.memberKey, (counts.get(c.memberKey) ?? 0) + c.limiter.inflight);
    return counts;
  }

  /** Stops telling the other gateways (close). */
  closePeers(): void {
    this.peers?.close();
    this.peers = undefined;
  }

  private makeLimiter(member: OriginMember, site: string, memberKey: string): Limiter {
    const limiter = new Limiter({
      limit: makeLimit(this.admission.limit),
      ceiling: this.admission.limit.ceiling,
      queue: this.admission.queue,
      // Queue classes: health probes (0), then the configured priorities (1..n), then the
      // background class below every configured one (n + 1).
      classes: this.priorityClasses + 2,
      clock: this.clock,
      // A learned limit measures the origin, so requests already known to be slow step aside
      // (limiter.ts, "Overdue permits"); a fixed limit means what it says.
      slowLane: this.admission.limit.algorithm !== 'fixed',
      slowShare: this.admission.limit.slowShare,
      hostDelayMs: () => this.hostDelayMs(),
      peerInflight: () => this.othersInflight(memberKey, limiter),
    });
    limiter.onProbe = () => {
      // A member a reload removed says nothing more (its requests still in flight drain).
      if (this.forgotten.has(member)) return;
      this.metrics.get('originLimitProbes').inc({ site, origin: member.name, source: 'own' });
      this.peers?.announceProbe(memberKey);
      // This gateway's other sites in front of the same URL join it as the other gateways do.
      const same = this.byMemberKey.get(memberKey);
      if (same !== undefined && same.size > 1)
        for (const c of same)
          if (c.limiter !== limiter && c.limiter.joinProbe()) this.metrics.get('originLimitProbes').inc({ site: c.site, origin: c.member.name, source: 'peer' });
    };
    let shared = false;
    limiter.onSlowShare = (share, out, paths) => {
      if (this.forgotten.has(member)) return;
      const fields = { site, origin: member.name, slowShare: share ?? null, slowOut: out, ...(paths !== undefined ? { slowPaths: paths } : {}) };
      // Warned when it begins (limiter.ts, "Slow endpoints' share"); its later cuts and its end are info.
      if (share === undefined) this.logger?.info(fields, 'slow requests share lifted: no quick request held up behind them for a second, and none of them waiting, for 30 s (or admission.limit.slowShare turned off)');
      else if (!shared)
        this.logger?.warn(
          fields,
          `origin held up by slow requests: quick requests waited behind ${out} slow ones; slow endpoints now get ${share} at a time, the rest wait at the gateway (slow_share when they wait too long)`,
        );
      else this.logger?.info(fields, `slow requests share cut to ${share} of ${out}: quick requests still waited behind them`);
      shared = share !== undefined;
    };
    return limiter;
  }

  private makeBreaker(siteName: string, circuit: SiteConfig['circuit'], member: OriginMember): CircuitBreaker {
    const breaker = new CircuitBreaker(circuit, this.clock);
    const labels = { site: siteName, origin: member.name };
    breaker.onStateChange = (state, previous, why) => {
      if (this.forgotten.has(member)) return;
      this.metrics.get('circuitState').set(labels, state === 'closed' ? 0 : state === 'half_open' ? 1 : 2);
      // As nginx logs "upstream server temporarily disabled": when forwarding stopped and why.
      const fields = { ...labels, circuit: state, previous, why };
      if (state === 'open') this.logger?.warn({ ...fields, lastFailure: breaker.lastFailure }, 'origin member circuit open: requests go to other members or stale copies first (with neither, still to it)');
      else if (state === 'half_open') this.logger?.info(fields, 'origin member circuit half-open');
      else this.logger?.info(fields, 'origin member circuit closed: requests flow again');
    };
    return breaker;
  }

  /**
   * A background refresh of this site was refused for want of origin capacity (shed: a
   * predicted wait past its deadline, a full queue, a standing queue) within the last
   * BACKGROUND_HOLD_MS. It runs in the lowest class, so the next ones would be refused too:
   * in a x50 crowd every stale hit on every hot page asked again, 2 000-3 000 refused
   * admissions a second for nothing. Stale-while-revalidate answers meanwhile.
   */
  holdsBackground(site: SiteConfig): boolean {
    const until = this.backgroundHeldUntil.get(site.name);
    return until !== undefined && this.clock.now() < until;
  }

  /** Some member would be picked now: healthy and its breaker letting requests through. */
  hasUsableMember(site: SiteConfig, pool: OriginPool): boolean {
    const now = this.clock.now();
    return pool.members().some((m) => m.isHealthy(now) && this.controlFor(site, m).breaker.isAvailable());
  }

  /**
   * The origin is busy: no usable member has a free permit, so a fill asked for now would wait
   * its turn behind others (RFC 5861-style grace is then allowed, see decide() step 7). False
   * while any usable member has room or is unknown yet.
   */
  isBacklogged(pool: OriginPool): boolean {
    const now = this.clock.now();
    let any = false;
    for (const member of pool.members()) {
      if (!member.isHealthy(now)) continue;
      const c = this.controls.get(member);
      if (!c) return false;
      if (!c.breaker.isAvailable()) continue;
      if (c.limiter.hasFreePermit) return false;
      any = true;
    }
    return any;
  }

  /**
   * Picks a member whose breaker lets requests through and waits for one of its permits (up to
   * `deadlineAt`), then returns the lease (see OriginLease). Refusal is a value, never an
   * exception. When no member is usable (down, ejected, breaker open), a protection may be
   * misfiring, so the request is not simply refused: without a fallback it goes to some member
   * anyway (panic routing, as nginx resets its marks and Envoy routes to all hosts below its
   * panic threshold); with one, one trial per member at a time finds out whether it is back.
   */
  async admit(site: SiteConfig, pool: OriginPool, opts: AdmitOptions): Promise<AdmitResult> {
    const cap = opts.routeCap;
    if (cap === undefined) return this.admitMember(site, pool, opts);
    // The route's slot first (route-slots.ts): a request past its cap waits here, holding no
    // origin permit, and is refused `route_busy` at its deadline.
    const slots = this.slotsFor(site.name, cap.route);
    const askedAt = this.clock.now();
    const got = slots.acquire(cap.max, opts.priority, opts.deadlineAt, askedAt, opts.signal);
    if (!(got === true || (got !== false && (await got)))) {
      const waitedMs = this.clock.now() - askedAt;
      return { ok: false, why: 'shed', reason: opts.signal?.aborted ? 'deadline' : 'route_busy', waitedMs };
    }
    const slotWaitMs = this.clock.now() - askedAt;
    let result: AdmitResult;
    try {
      result = await this.admitMember(site, pool, opts);
    } catch (err) {
      slots.release();
      throw err;
    }
    if (!result.ok) {
      slots.release();
      return result.why === 'shed' ? { ...result, waitedMs: slotWaitMs + result.waitedMs } : result;
    }
    const lease = result.lease;
    let released = false;
    return {
      ok: true,
      lease: {
        member: lease.member,
        waitedMs: slotWaitMs + lease.waitedMs,
        startedAt: lease.startedAt,
        trial: lease.trial,
        suspect: lease.suspect,
        finish: (outcome) => {
          lease.finish(outcome);
          // A permit given back before the answer ends (a download, an event stream, a client
          // that stopped reading or sending) leaves the origin's worker busy: the slot is given
          // back by the finish when the answer ends (pass-through.ts calls it again then).
          // Freed at the head, three clients of a capped download had three at once (review).
          if (released || (outcome.kind === 'response' && outcome.clientHeld === true) || outcome.kind === 'body_stalled') return;
          released = true;
          slots.release();
        },
      },
    };
  }

  /** A route's slots (routes[].maxConcurrent), made when its first request asks. */
  private slotsFor(site: string, route: string): RouteSlots {
    const key = JSON.stringify([site, route]);
    let s = this.routeSlots.get(key);
    if (s === undefined) this.routeSlots.set(key, (s = new RouteSlots(this.scheduler)));
    return s;
  }

  /**
   * A reload: each capped route's slots take its new cap at once (none, when the route lost its
   * cap or is gone: its waiters go through, and its slots and gauges are dropped once none is
   * taken).
   */
  applyRouteCaps(sites: readonly SiteConfig[]): void {
    const caps = new Map<string, number>();
    for (const site of sites) for (const r of site.routes) if (r.maxConcurrent !== undefined) caps.set(JSON.stringify([site.name, r.name]), r.maxConcurrent);
    for (const [key, slots] of this.routeSlots) {
      const max = caps.get(key);
      slots.setMax(max ?? Infinity);
      if (max === undefined && slots.inUse === 0 && slots.queued === 0) {
        this.routeSlots.delete(key);
        const [site, route] = JSON.parse(key) as [string, string];
        this.metrics.get('routeInflight').remove({ site, route });
        this.metrics.get('routeQueueLength').remove({ site, route });
      }
    }
  }

  /** Requests of a site's route at the origin now, and waiting for a slot (routes[].maxConcurrent; zeros for a route never capped). */
  routeSlotsOf(site: string, route: string): { inUse: number; queued: number } {
    const s = this.routeSlots.get(JSON.stringify([site, route]));
    return { inUse: s?.inUse ?? 0, queued: s?.queued ?? 0 };
  }

  private async admitMember(site: SiteConfig, pool: OriginPool, opts: AdmitOptions): Promise<AdmitResult> {
    // An ejected member is half-open: one trial request at a time ends its ejection as soon as
    // it answers (a refused connection is retried on another member by the caller).
    let member = opts.noTrial ? undefined : this.ejectedTrialMember(site, pool, opts.exclude);
    let trial = member !== undefined;
    // A trial while another member takes the traffic (failedTrials counts those, not the
    // trials sent while nothing was usable, which keep TRIAL_INTERVAL_MS).
    const othersUsable = trial;
    // A request to a member not yet shown to be well: an ejected one's trial, a half-open
    // breaker's probe, a member back from an ejection that ran out (on probation). Its 502-504
    // may be answered by another member instead (OriginLease.suspect).
    let suspect = othersUsable;
    if (member === undefined) {
      member = pool.pick({
        exclude: opts.exclude,
        accept: (m) => this.controlFor(site, m).breaker.isAvailable(), // no side effects: takes no probe slot
      });
      if (member) {
        const breaker = this.controlFor(site, member).breaker;
        if (!breaker.canRequest()) return { ok: false, why: 'circuit_open' };
        suspect = breaker.state === 'half_open' || member.isOnProbation(this.clock.now());
      } else {
        member = opts.hasFallback ? this.trialMember(site, pool, opts.exclude) : pool.pickAny({ exclude: opts.exclude });
        if (!member) {
          // Tell "every usable member's breaker is open" from "nothing healthy" without a second
          // pick(), which would advance the round-robin.
          const now = this.clock.now();
          const anyHealthy = pool.members().some((m) => m.isHealthy(now) && !opts.exclude?.has(m));
          return anyHealthy ? { ok: false, why: 'circuit_open' } : { ok: false, why: 'no_healthy' };
        }
        trial = true;
      }
    }
    const control = this.controlFor(site, member);
    // When the member was chosen, before any wait for its permit: a request queued for it before
    // an ejection and granted after says nothing new about it (its success must not end the
    // ejection; review).
    const chosenAt = this.clock.now();
    if (trial) {
      control.trialAt = this.clock.now();
      control.trialInFlight = true;
    }
    const labels = { site: site.name, origin: member.name };
    const result = await control.limiter.acquire({
      priority: opts.priority + 1, // class 0 is the probes'
      deadlineAt: opts.deadlineAt,
      signal: opts.signal,
      servesCrowd: opts.servesCrowd,
      // Nobody waits on a background refresh; a request with a usable stale copy is answered
      // from it when refused, sooner than a longer wait would answer it.
      fixedDeadline: opts.kind === 'background' || opts.hasFallback === true,
      latencyClass: opts.latencyClass,
      path: opts.path,
      page: opts.page,
    });
    if (result.waitedMs > 0 || !result.ok) this.metrics.get('queueWait').observe(labels, result.waitedMs / 1000);
    if (!result.ok) {
      if (trial) control.trialInFlight = false;
      if (opts.kind === 'background' && result.reason !== 'aborted') this.backgroundHeldUntil.set(site.name, this.clock.now() + BACKGROUND_HOLD_MS);
      const reason: ShedReason = result.reason === 'aborted' ? 'deadline' : result.reason;
      return { ok: false, why: 'shed', reason, waitedMs: result.waitedMs };
    }
    pool.begin(member);
    return { ok: true, lease: this.makeLease(pool, control, result.permit, result.waitedMs, opts.kind, trial, othersUsable, suspect, opts.latencyClass, chosenAt, opts.path, opts.client) };
  }

  /**
   * An ejected member due a trial while others take the traffic: its trial slot is free, and
   * its last trial and its last failure are trialIntervalMs ago or more, doubled for each of
   * its trials that failed in a row. Only when another member is usable (otherwise admit()
   * panics or sends trials anyway), and not while the active probes hold it down: they watch
   * it, and their passes let it back. A trial is a visitor's request: a primary in
   * maintenance (503 to everything) was tried 1-4 times a second, each time a visitor got its
   * 503, while a healthy backup stood idle (failure-day trial); HAProxy sends nothing to a
   * server its checks hold down.
   */
  private ejectedTrialMember(site: SiteConfig, pool: OriginPool, exclude?: ReadonlySet<OriginMember>): OriginMember | undefined {
    const members = pool.members();
    if (members.length < 2) return undefined;
    const now = this.clock.now();
    for (const m of members) {
      if (!m.isEjected(now) || m.activeHealth() === 'down' || exclude?.has(m)) continue;
      const c = this.controlFor(site, m);
      const interval = Math.min(trialIntervalMs(m.ejectionStreak, site.passive.ejectMs) * 2 ** Math.min(c.failedTrials, 20), site.passive.ejectMs);
      if (c.trialInFlight || now - c.trialAt < interval || now - c.failedAt < interval) continue;
      if (!members.some((o) => o !== m && o.isHealthy(now))) return undefined;
      return m;
    }
    return undefined;
  }

  /** A member whose trial slot is free: none in flight, and the last one TRIAL_INTERVAL_MS ago. */
  private trialMember(site: SiteConfig, pool: OriginPool, exclude?: ReadonlySet<OriginMember>): OriginMember | undefined {
    const now = this.clock.now();
    for (const m of pool.members()) {
      if (exclude?.has(m)) continue;
      const c = this.controlFor(site, m);
      if (!c.trialInFlight && now - c.trialAt >= TRIAL_INTERVAL_MS) return m;
    }
    return undefined;
  }

  private makeLease(
    pool: OriginPool,
    control: MemberControl,
    permit: Permit,
    waitedMs: number,
    kind: OriginRequestKind,
    trial: boolean,
    othersUsable: boolean,
    suspect: boolean,
    latencyClass: string | undefined,
    chosenAt: number,
    path: string | undefined,
    client: string | undefined,
  ): OriginLease {
    const startedAt = this.clock.now();
    let finished = false;
    return {
      member: control.member,
      waitedMs,
      startedAt,
      trial,
      suspect,
      finish: (outcome) => {
        if (finished) return;
        finished = true;
        pool.end(control.member);
        if (trial) control.trialInFlight = false;
        this.report(pool, control, permit, outcome, kind, startedAt, latencyClass, chosenAt, path, client, othersUsable);
      },
    };
  }

  /** An active health check of `member` passed: its breaker, open past openMs, turns half-open (circuit.ts). */
  healthCheckPassed(site: SiteConfig, member: OriginMember): void {
    this.controlFor(site, member).breaker.onHealthCheckPassed();
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
      fixedDeadline: true,
      signal,
    });
    if (!result.ok) return undefined;
    return { release: () => result.permit.release('ignore') };
  }

  /**
   * One origin request's outcome (OriginLease.finish): releases the permit (a response feeds
   * the limit an RTT sample, except 429/503/504; timeouts and resets count as drops; a refused
   * connection, a client that left, a request-caused error or a gateway overloaded itself give
   * no sample), and feeds the breaker, passive health and metrics with what says the member is
   * sick, and nothing else (see OriginOutcome).
   */
  private report(
    pool: OriginPool,
    control: MemberControl,
    permit: Permit,
    outcome: OriginOutcome,
    kind: OriginRequestKind,
    startedAt: number,
    latencyClass: string | undefined,
    chosenAt: number,
    path: string | undefined,
    client: string | undefined,
    trialOthersUsable: boolean,
  ): void {
    const labels = { site: control.site, origin: control.member.name };
    const sampleValid = this.samplesValid();
    if (outcome.kind === 'client_gone' || outcome.kind === 'abandoned' || outcome.kind === 'body_stalled') {
      permit.release('ignore');
      control.breaker.onCancel(); // a half-open probe that never finished gives its slot back
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: outcome.kind === 'body_stalled' ? 'client_stalled' : 'client_gone' });
      return;
    }
    if (outcome.kind === 'failure' && outcome.failure === 'reset' && outcome.reusedConnection) {
      // An idle keep-alive connection closed under the request (see OriginOutcome): no latency
      // sample, nothing against the member, a half-open probe slot given back.
      permit.release('ignore');
      control.breaker.onCancel();
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: 'reset_reused' });
      return;
    }
    if (outcome.kind === 'failure') {
      const failure = outcome.failure;
      this.metrics.get('originRequests').inc({ ...labels, kind, outcome: failure });
      if (failure === 'error' || failure === 'bad_response') {
        // The request (or the gateway) failed, or the application answered garbage for one URL:
        // nothing is learned about the member's health or latency.
        permit.release('ignore');
        control.breaker.onCancel();
        return;
      }
      if (failure === 'timeout' && path !== undefined) this.noteTimeout(control, path);
      if (failure === 'connect_error' || failure === 'reset') this.noteUnreachable(control, failure);
      if (failure === 'timeout' && path !== undefined && control.urlFailures.isUrlFailure(path, this.clock.now(), answersOf(pool).answeredElsewhere(path, control.member, this.clock.now()))) {
        // This URL's own timeout (a long-poll, a report), while the member answers others.
        permit.release('ignore');
        control.breaker.onCancel();
        return;
      }
      // A refused connection says nothing about the origin's latency; a timeout or reset under load does.
      permit.release(failure === 'connect_error' || !sampleValid ? 'ignore' : 'dropped', latencyClass);
      control.failedAt = this.clock.now();
      if (trialOthersUsable) control.failedTrials++;
      control.breaker.onFailure(failure === 'timeout' ? startedAt : undefined, failure);
      pool.reportFailure(control.member, failure === 'connect_error' ? 'connect' : failure === 'timeout' ? 'timeout' : 'reset', chosenAt);
      return;
    }
    const status = outcome.status;
    // A 2xx or 304 measures the path's cost; a 404 or a redirect from a slow path comes at once.
    permit.release(!sampleValid || outcome.clientHeld === true || AMBIGUOUS_STATUSES.has(status) ? 'ignore' : 'success', latencyClass, (status >= 200 && status < 300) || status === 304);
    this.metrics.get('originDuration').observe(labels, Math.max(0, this.clock.now() - startedAt) / 1000);
    this.metrics.get('originRequests').inc({ ...labels, kind, outcome: status >= 500 ? 'status_5xx' : 'ok' });
    if (status >= 500 && path !== undefined) this.noteServerError(control, path, status);
    if (SICK_STATUSES.has(status) && path !== undefined && control.urlFailures.isUrlFailure(path, this.clock.now(), answersOf(pool).answeredElsewhere(path, control.member, this.clock.now()), client)) {
      // This URL's own 502/503/504, or this client's, while the member answers others: nothing for or against it.
      control.breaker.onCancel();
    } else if (SICK_STATUSES.has(status)) {
      control.failedAt = this.clock.now();
      if (trialOthersUsable) control.failedTrials++;
      control.breaker.onFailure(undefined, `status ${status}`);
      pool.reportFailure(control.member, 'status5xx', chosenAt);
    } else {
      // Any other answer, a 500 or a 404 included, is the member working: nothing against it.
      this.noteAnswering(control);
      control.urlFailures.success(this.clock.now(), client);
      if (path !== undefined) answersOf(pool).note(path, control.member, this.clock.now());
      control.breaker.onSuccess(startedAt);
      control.failedTrials = 0;
      // It ends the failure streak; but only an answer below 500 ends a 'down' the probes found (the
      // probe's own rule): WordPress without its database answers every page 500, and each
      // one flipped the member up between probes, so the outage never showed (the alert for
      // it needs the member down for 5 minutes).
      pool.reportSuccess(control.member, chosenAt, status < 500);
    }
  }

  /**
   * Logs an origin timeout of `path` at warn, at most once a minute per path (the latest
   * URL_FAILURES_KEPT) and once a second per site (a hung origin's crowd on unique URLs): with
   * only access-log lines, 120 long-polls of a chat app cut at the 15 s default in one run left
   * a new operator nothing to read (new-user trial). It names both causes: an Apache whose 5
   * workers were held by 10 s pages timed out its 50 ms pages, and the line sent the operator
   * to raise their timeout (Apache trial). Which one it was is not known here: a path's
   * latency class is its endpoint's, shared with other paths, and a timeout teaches it nothing
   * (review: an endpoint that always times out kept its fast neighbours' round trip).
   */
  private noteTimeout(control: MemberControl, path: string): void {
    const key = `${control.site}\n${path}`;
    const now = this.clock.now();
    const last = this.pathLoggedAt.get(key);
    const siteLast = this.pathLoggedAt.get(control.site);
    if ((last !== undefined && now - last < TIMEOUT_LOG_INTERVAL_MS) || (siteLast !== undefined && now - siteLast < 1_000)) return;
    remember(this.pathLoggedAt, key, now);
    remember(this.pathLoggedAt, control.site, now);
    this.logger?.warn(
      { site: control.site, origin: control.member.name, path },
      'origin timeout (504 origin_timeout: no connection within timeouts.connectMs, no answer within responseHeadersMs (unsafeResponseHeadersMs for a POST...), or a body silent for idleMs); a long-poll or a slow report needs a route with a longer routes[].timeouts.responseHeadersMs; a page that usually answers quickly waited at the origin (its workers busy with slower requests, or the origin stalled): a longer timeout only answers it later, capping the slow requests (routes[].maxConcurrent) answers it sooner: compare crowdgate_origin_inflight with what the origin serves at once',
    );
  }

  /**
   * Logs an origin's 5xx answer for `path` at warn, as noteTimeout does (at most once a minute
   * per path, once a second per site): gitweb's tree view answering 500 for 80 s in a crowd left
   * only access-log lines and counters without a path (new-user trial).
   */
  private noteServerError(control: MemberControl, path: string, status: number): void {
    const key = `${control.site}\n5xx\n${path}`;
    const siteKey = `${control.site}\n5xx`;
    const now = this.clock.now();
    const last = this.pathLoggedAt.get(key);
    const siteLast = this.pathLoggedAt.get(siteKey);
    if ((last !== undefined && now - last < TIMEOUT_LOG_INTERVAL_MS) || (siteLast !== undefined && now - siteLast < 1_000)) return;
    remember(this.pathLoggedAt, key, now);
    remember(this.pathLoggedAt, siteKey, now);
    this.logger?.warn(
      { site: control.site, origin: control.member.name, path, status },
      `origin error (the origin answered ${status} for this path: its own log says why); a stored copy answers in its place where the route's grace allows, else the answer is passed on; a 500 never counts against the member, a 502/503/504 does unless only this URL gives it; logged at most once a minute per path`,
    );
  }

  /**
   * Logs a member's refused or reset connections at warn: the first at once, then at most every
   * UNREACHABLE_LOG_INTERVAL_MS per kind with how many there were since; the member's next
   * answer says how many were not told yet (noteAnswering). A 4 s restart of a small app gave
   * its logged-in users 502s and left nothing but access lines until the breaker opened after
   * 10 in a row (new-user trial); nginx logs each such connect() failure. A request retried on
   * another member, or one whose answer had begun, was not a 502: the line names the failure,
   * not what the client got (review).
   */
  private noteUnreachable(control: MemberControl, failure: 'connect_error' | 'reset'): void {
    const now = this.clock.now();
    let kinds = this.unreachableLogged.get(control);
    if (kinds === undefined) this.unreachableLogged.set(control, (kinds = new Map()));
    const logged = kinds.get(failure);
    if (logged !== undefined && now - logged.at < UNREACHABLE_LOG_INTERVAL_MS) {
      logged.since++;
      return;
    }
    kinds.set(failure, { at: now, since: 0 });
    this.logger?.warn(
      { site: control.site, origin: control.member.name, failure, ...(logged !== undefined && logged.since > 0 ? { moreSinceLastLine: logged.since } : {}) },
      failure === 'connect_error'
        ? `origin unreachable: a connection refused or not made (origin_unreachable); logged at most every ${UNREACHABLE_LOG_INTERVAL_MS / 1000} s per member`
        : `origin connection reset before its answer ended (origin_reset); logged at most every ${UNREACHABLE_LOG_INTERVAL_MS / 1000} s per member`,
    );
  }

  /** The member answered: refused or reset connections not told yet are told now (noteUnreachable), and the counts start again. */
  private noteAnswering(control: MemberControl): void {
    const kinds = this.unreachableLogged.get(control);
    if (kinds === undefined) return;
    this.unreachableLogged.delete(control);
    const untold = [...kinds].filter(([, k]) => k.since > 0).map(([failure, k]) => ({ failure, count: k.since }));
    if (untold.length > 0)
      this.logger?.info({ site: control.site, origin: control.member.name, untold }, 'origin answering again; refused or reset connections since the last unreachable line');
  }

  /** Publishes limit / in-flight / queue gauges, and the capped routes' (called on scrape). */
  collect(): void {
    for (const c of this.all) {
      const labels = { site: c.site, origin: c.member.name };
      this.metrics.get('originLimit').set(labels, c.limiter.limit);
      this.metrics.get('originInflight').set(labels, c.limiter.inflight);
      if (this.hasOthers(c)) this.metrics.get('originPeerInflight').set(labels, c.limiter.peerInflight);
      this.metrics.get('queueLength').set(labels, c.limiter.queueLength);
      this.metrics.get('originSlowShare').set(labels, c.limiter.slowRequestsShare ?? 0);
      this.metrics.get('queueHeldToBounds').set(labels, c.limiter.holdsToBounds ? 1 : 0);
      // Only forward: a wall clock stepped back can make the limiter's count smaller for a while.
      const saturated = c.limiter.saturatedSeconds();
      if (saturated > c.saturatedSeen) {
        this.metrics.get('originSaturated').inc(labels, saturated - c.saturatedSeen);
        c.saturatedSeen = saturated;
      }
    }
    for (const [key, slots] of this.routeSlots) {
      const [site, route] = JSON.parse(key) as [string, string];
      if (!slots.capped && slots.inUse === 0 && slots.queued === 0) {
        // A cap a reload took out, its last request done: its series go (applyRouteCaps).
        this.routeSlots.delete(key);
        this.metrics.get('routeInflight').remove({ site, route });
        this.metrics.get('routeQueueLength').remove({ site, route });
        continue;
      }
      this.metrics.get('routeInflight').set({ site, route }, slots.inUse);
      this.metrics.get('routeQueueLength').set({ site, route }, slots.queued);
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

  /**
   * A member the config no longer has: its limiter goes, and so do its gauge series (a removed
   * member left `crowdgate_origin_limit` and the rest behind, and the status page listed it).
   */
  forget(member: OriginMember): void {
    this.forgotten.add(member);
    const c = this.controls.get(member);
    if (c) {
      this.all.delete(c);
      const same = this.byMemberKey.get(c.memberKey);
      same?.delete(c);
      if (same?.size === 0) this.byMemberKey.delete(c.memberKey);
      const labels = { site: c.site, origin: member.name };
      for (const gauge of ['originLimit', 'originInflight', 'originPeerInflight', 'queueLength', 'queueHeldToBounds', 'originSlowShare', 'circuitState'] as const) this.metrics.get(gauge).remove(labels);
    }
    this.controls.delete(member);
  }
}
