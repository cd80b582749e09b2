/**
 * The concurrency-limit algorithm contract (Netflix concurrency-limits style): a `Limit` takes
 * samples of finished origin requests and exposes the current limit. It is pure and
 * sample-driven: no timers, no I/O, time only from the `now` passed in.
 *
 * Owns the contract and the helpers the algorithms share (make-limit.ts builds one from config,
 * so this module imports none of them). It does not enforce anything: the Limiter
 * (../limiter.ts) hands out permits and feeds the samples.
 */

/** One finished origin request, as seen by the Limiter. */
export interface LimitSample {
  /** Time from permit acquire to release, in ms. Meaningless when `dropped`. */
  rttMs: number;
  /** Permits in flight when this request's permit was acquired, itself included. */
  inflight: number;
  /**
   * Everything the gateway had in flight to the origin when this permit was acquired, itself
   * included: `inflight` plus the slow lane's permits, which no longer count against the limit
   * but still hold the origin's workers. Absent: `inflight`.
   */
  originInflight?: number;
  /**
   * Requests waiting for a permit when this one was released: the demand past the limit (an
   * algorithm that finds the origin slow on its own may grow to meet it). Absent: 0.
   */
  waiting?: number;
  /**
   * What the other gateways sharing the Redis tier last said they had in flight to this origin
   * member when this permit was acquired (origin/peer-load.ts): the origin's own queue holds
   * their requests too. Absent: 0 (one gateway, or no Redis).
   */
  peerInflight?: number;
  /** The origin failed in a way that signals overload (timeout, 503, connection refused). */
  dropped: boolean;
  /**
   * The gateway's own share of this round trip, ms: its event-loop delay when the sample was
   * taken (a response waits that long for its callback). Not the origin's: an algorithm may
   * allow for it. 0 or absent when unknown.
   */
  hostDelayMs?: number;
  /**
   * The request's latency class as a small integer (the Limiter's "Latency classes"), and that
   * class's share of the recent samples (0-1). A window of a few samples holds the site's
   * endpoints in chance proportions (three 50-150 ms pages among five samples, where they are
   * one in seven of the traffic); an algorithm may weight each class by its share instead, so
   * the mix a window happens to hold does not read as queueing. Absent: one class.
   */
  stratum?: number;
  stratumShare?: number;
  /**
   * The scale `rttMs` is read on, when the Limiter reads every class's samples on one scale (its
   * "Latency classes"): the no-load round trip a sample of the mix reads as, ms (the known
   * classes' no-load round trips weighted by their shares). It moves as classes become known and
   * shares change, and a no-load round trip learned before moves with it. Absent: samples are
   * read as they are.
   */
  scaleMs?: number;
  /**
   * With scaleMs: the no-load round trip of the sample's class that `rttMs` was read against
   * (`rttMs - scaleMs + classBaseMs` is the round trip as the origin took it). It moves as the
   * Limiter learns the class.
   */
  classBaseMs?: number;
  /**
   * With stratum: every request of the sample's class that started more than this many ms ago
   * has been released (the age of the oldest one still counted against the limit; 0 when none
   * is). A class's first round trips in the order they come back are its quickest (eight pages
   * of 100-250 ms started together return the 130 ms ones first); taken in the order they
   * started, once none started earlier is still out, they are a fair sample. Absent: unknown.
   */
  classSettledMs?: number;
}

export interface Limit {
  /** The current concurrency limit: an integer within the algorithm's [min, max]. */
  readonly current: number;
  /**
   * The limit to forecast queue waits with, when it differs from `current` only for a moment:
   * Gradient2's no-load probe holds `current` down for a few round trips, and a wait forecast
   * from it would refuse requests that will be served once the probe ends. Default `current`.
   */
  readonly planning?: number;
  /**
   * Whether the origin showed queueing recently (`now` epoch ms): the evidence the Limiter needs
   * before it refuses at arrival a request that could still wait for its permit. Absent: always
   * (a fixed or AIMD limit states the origin's capacity, so a queue past it is the evidence).
   */
  showsQueueing?(now: number): boolean;
  /**
   * Whether that evidence is strong (`now` epoch ms): most of the recent windows showed
   * queueing, as past an origin's capacity nearly all do, or drops. The Limiter holds a
   * standing queue's arrivals to the CoDel bounds at once on it, and otherwise only once the
   * queue has stood `queue.standingBoundAfterMs`. Absent: always.
   */
  showsSustainedQueueing?(now: number): boolean;
  /**
   * Whether the limit is still learning the concurrency the origin needs (`now` epoch ms): it
   * has not bound yet, or only just (gradient2: COLD_START_MS after it first did). Meanwhile the
   * Limiter refuses at arrival only what its deadline cannot serve, and does not cap waits to
   * the CoDel bounds of a standing queue: a queue behind a limit still climbing from its
   * initial value is the limit's lag. Absent: never.
   */
  isColdStart?(now: number): boolean;
  /**
   * The time now (`now` epoch ms), told on every arrival: an algorithm that holds the limit down
   * for a while (gradient2's no-load probe) ends that on time even when no sample comes (its
   * few permits held by slow requests). Absent: nothing depends on time alone.
   */
  tick?(now: number): void;
  /**
   * Another gateway in front of the same origin started a no-load probe (origin/peer-load.ts):
   * start one too, so the origin is really at low load while both measure (`now` epoch ms);
   * false when not joined (one running, one just ended, no baseline yet). Absent: no probes.
   */
  joinProbe?(now: number): boolean;
  /**
   * Called when the algorithm starts a no-load probe of its own (not a joined one), for the
   * Limiter to tell the other gateways. Absent: no probes.
   */
  onProbe?: (() => void) | undefined;
  /**
   * Feeds one sample. `now` is epoch ms. The caller may reuse the sample object afterwards,
   * so implementations must copy what they keep.
   */
  onSample(sample: LimitSample, now: number): void;
  /**
   * A reload changed the bounds (validated like the constructor's): the limit learned so far is
   * kept, within them. Absent: the algorithm has none (fixed).
   */
  setBounds?(min: number, max: number): void;
}

/** Shared option checks; messages name the option (lru-cache style). */
export function checkBounds(initial: number, min: number, max: number): void {
  if (!Number.isInteger(min) || min < 1) throw new TypeError(`min must be an integer >= 1, got ${min}`);
  if (!Number.isInteger(max) || max < min) throw new TypeError(`max must be an integer >= min (${min}), got ${max}`);
  if (!Number.isFinite(initial) || initial < 1) throw new TypeError(`initial must be >= 1, got ${initial}`);
}

export function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}
