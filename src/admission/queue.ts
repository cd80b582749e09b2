/**
 * The bounded wait for an origin permit: per-priority-class lists of waiters, the service order
 * (priority first; FIFO, or LIFO under a standing queue), eviction by priority, and the CoDel
 * standing-queue detector.
 *
 * Owns ordering and the standing-queue state only. It does not grant permits, run timers or
 * resolve waiters: the Limiter (limiter.ts) does, and asks this queue whom to serve or drop.
 *
 * CoDel (Nichols & Jacobson, "Controlling Queue Delay", ACM Queue 2012), as Facebook applies it
 * to server queues ("Fail at Scale", ACM Queue 2015): a queue that is good at absorbing bursts
 * empties now and then; one whose *minimum* sojourn time over a whole `intervalMs` stays above
 * `targetMs` is a standing queue, i.e. arrivals exceed service and waiting only adds latency.
 * Under a standing queue the Limiter serves newest first (adaptive LIFO: fresh requests still
 * meet their deadline while the old ones, which likely gave up already, are dropped) and caps
 * waits (limiter.ts: at the target for pass-through, at `intervalMs` for cache fills). The standing state ends when the queue drains to empty; it is not
 * re-judged from sojourn times while LIFO serves the newest (those would always look short).
 * Once the Limiter has measured round trips it predicts each arrival's wait and refuses at
 * once what would not be served within the cap; then it keeps FIFO (`lifoWhenStanding` off),
 * since admitted requests meet their deadlines and LIFO would only make old ones fail late.
 * Waits the Limiter imposed on purpose (a no-load probe holding permits down) are excused: the
 * Limiter does not ask for a verdict meanwhile, and sojourns count from the probe's end.
 */

/** One request waiting for a permit. Fields beyond the links belong to the Limiter. */
export interface Waiter<R = unknown> {
  /** Priority class, 0 = most important. */
  priority: number;
  enqueuedAt: number;
  /** The request's own deadline (epoch ms). */
  deadlineAt: number;
  /** How long its permit is expected to be held, ms (its endpoint's typical round trip): the forecast's unit of work. */
  costMs: number;
  /** The request's path (AcquireOptions.path), given to its permit. */
  path: string | undefined;
  /** The request's page (AcquireOptions.page), given to its permit. */
  page?: string | undefined;
  /** The request's latency class (AcquireOptions.latencyClass), given to its permit. */
  latencyClass: string | undefined;
  /** When the wait ends: deadlineAt, or earlier under a standing queue. */
  expiresAt: number;
  /** expiresAt comes from the CoDel cap, so expiry is reported as 'codel'. */
  capped: boolean;
  /** Its client waits `minWaitRoundTrips` round trips at least, once one is known (Limiter.waitRoundTrips). */
  waitsRoundTrips: boolean;
  /** Its wait was kept past its deadline through a stall (Limiter.expire): served until ROUND_TRIP_WAIT_MAX_MS from arrival. */
  keptThroughStall?: boolean;
  /** The stall it was kept through ended while it waited: one more wait of its own length to drain (Limiter.expire). */
  drainingAfterStall?: boolean;
  /** Its wait was kept past its deadline while a no-load probe held the limit down (Limiter.expire). */
  keptThroughProbe?: boolean;
  /** The probe it was kept through ended while it waited: one more wait of its own length to drain (Limiter.expire). */
  drainingAfterProbe?: boolean;
  resolve: (result: R) => void;
  timer: unknown;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  prev: Waiter<R> | undefined;
  next: Waiter<R> | undefined;
  queued: boolean;
}

export interface CodelOptions {
  targetMs: number;
  intervalMs: number;
}

export class WaitQueue<R = unknown> {
  private heads: (Waiter<R> | undefined)[];
  private tails: (Waiter<R> | undefined)[];
  private counts: number[];
  /** Per class, the sum of its waiters' costMs. */
  private works: number[];
  private size = 0;
  private codel: CodelOptions;

  private standing = false;
  /** When the queue last began to stand (checkStanding); meaningful while `standing`. */
  private standingSince = -Infinity;
  private intervalStartAt = 0;
  private minSojournMs = Infinity;
  private dequeues = 0;
  /** Sojourns count from here at the earliest (excuseWaitsUntil). */
  private excusedUntil = -Infinity;

  private classCount: number;

  constructor(classes: number, codel: CodelOptions) {
    checkClasses(classes);
    this.classCount = classes;
    this.heads = new Array<Waiter<R> | undefined>(classes).fill(undefined);
    this.tails = new Array<Waiter<R> | undefined>(classes).fill(undefined);
    this.counts = new Array<number>(classes).fill(0);
    this.works = new Array<number>(classes).fill(0);
    this.codel = codel;
  }

  /** Number of priority classes (0 = most important). */
  get classes(): number {
    return this.classCount;
  }

  /**
   * A reload changed the number of classes. The last class stays the last (the Limiter's
   * background refreshes, below every configured priority: with one priority class added they
   * would otherwise have been served before it), and the one above it stays the one above it
   * (the Limiter's "default": with classes added its waiters would have jumped to a new
   * class above it); other waiters keep their class, and those of a class that no longer exists
   * join the lowest class above the last (in their order). The CoDel state stays.
   */
  setClasses(classes: number): void {
    checkClasses(classes);
    if (classes === this.classCount) return;
    const waiters: Waiter<R>[] = [];
    this.forEach((w) => waiters.push(w));
    const oldLast = this.classCount - 1;
    const last = classes - 1;
    const lowestAboveLast = Math.max(0, last - 1);
    for (const w of waiters) {
      if (w.priority === oldLast) w.priority = last;
      else if (w.priority === oldLast - 1 && w.priority > 0) w.priority = lowestAboveLast; // "default" stays the lowest configured class
      else w.priority = Math.min(w.priority, lowestAboveLast);
    }
    this.classCount = classes;
    this.heads = new Array<Waiter<R> | undefined>(classes).fill(undefined);
    this.tails = new Array<Waiter<R> | undefined>(classes).fill(undefined);
    this.counts = new Array<number>(classes).fill(0);
    this.works = new Array<number>(classes).fill(0);
    for (const w of waiters) {
      w.prev = this.tails[w.priority];
      w.next = undefined;
      if (w.prev) w.prev.next = w;
      else this.heads[w.priority] = w;
      this.tails[w.priority] = w;
      this.counts[w.priority]!++;
      this.works[w.priority]! += w.costMs;
    }
  }

  /**
   * Serve newest first under a standing queue. The Limiter turns this off once it can predict
   * waits: then it refuses at arrival what would not be served in time, and FIFO meets every
   * admitted request's deadline without making old waiters fail late.
   */
  lifoWhenStanding = true;

  get length(): number {
    return this.size;
  }

  /** Under a standing queue: serve newest first and cap waits at the CoDel interval. */
  get isStanding(): boolean {
    return this.standing;
  }

  /** When the standing queue began; -Infinity while none stands. */
  get standingSinceAt(): number {
    return this.standing ? this.standingSince : -Infinity;
  }

  setCodel(codel: CodelOptions): void {
    this.codel = codel;
  }

  lengthByClass(): number[] {
    return this.counts.slice();
  }

  /** Waiters that would be served before a new arrival of class `priority` under FIFO. */
  countAhead(priority: number): number {
    let n = 0;
    for (let p = 0; p <= priority && p < this.classes; p++) n += this.counts[p]!;
    return n;
  }

  /** The summed costMs of the waiters countAhead counts. */
  workAhead(priority: number): number {
    let ms = 0;
    for (let p = 0; p <= priority && p < this.classes; p++) ms += this.works[p]!;
    return ms;
  }

  /** Gives every waiter queued with no cost (no round trip known yet) `costMs`. */
  priceUnpriced(costMs: number): void {
    this.forEach((w) => {
      if (w.costMs !== 0) return;
      w.costMs = costMs;
      this.works[w.priority]! += costMs;
    });
  }

  /** Appends `w` to its class; `now` starts a CoDel interval if the queue was empty. */
  push(w: Waiter<R>, now: number): void {
    if (this.size === 0) this.resetInterval(now);
    const p = w.priority;
    w.prev = this.tails[p];
    w.next = undefined;
    if (w.prev) w.prev.next = w;
    else this.heads[p] = w;
    this.tails[p] = w;
    w.queued = true;
    this.counts[p]!++;
    this.works[p]! += w.costMs;
    this.size++;
  }

  /** Unlinks `w` (served, expired, aborted or evicted). An emptied queue ends a standing queue. */
  remove(w: Waiter<R>): void {
    if (!w.queued) return;
    const p = w.priority;
    if (w.prev) w.prev.next = w.next;
    else this.heads[p] = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.tails[p] = w.prev;
    w.prev = w.next = undefined;
    w.queued = false;
    // Summed in floating point: an emptied class starts again from 0, not from rounding residue.
    this.works[p] = --this.counts[p]! === 0 ? 0 : this.works[p]! - w.costMs;
    if (--this.size === 0) this.standing = false;
  }

  /**
   * The waiter to serve next: the most important non-empty class, its oldest (FIFO) or, under a
   * standing queue, its newest (LIFO). Removes it and records its sojourn for CoDel.
   */
  shift(now: number): Waiter<R> | undefined {
    const lifo = this.standing && this.lifoWhenStanding;
    for (let p = 0; p < this.classes; p++) {
      const w = lifo ? this.tails[p] : this.heads[p];
      if (!w) continue;
      this.remove(w);
      const sojourn = now - (w.enqueuedAt > this.excusedUntil ? w.enqueuedAt : this.excusedUntil);
      if (sojourn < this.minSojournMs) this.minSojournMs = sojourn;
      this.dequeues++;
      return w;
    }
    return undefined;
  }

  /** The newest waiter of the least important class strictly below `priority`, if any. */
  evictionCandidate(priority: number): Waiter<R> | undefined {
    for (let p = this.classes - 1; p > priority; p--) {
      const w = this.tails[p];
      if (w) return w;
    }
    return undefined;
  }

  /**
   * Ends the CoDel interval if `intervalMs` has passed and judges it: a standing queue when the
   * smallest sojourn seen in it exceeded `targetMs` (with nothing served, the oldest waiter's age
   * stands in). Returns true when a standing queue has just begun.
   */
  checkStanding(now: number): boolean {
    if (this.standing || this.size === 0 || now - this.intervalStartAt < this.codel.intervalMs) return false;
    const sojourn = this.dequeues > 0 ? this.minSojournMs : now - Math.max(this.oldestEnqueuedAt(), this.excusedUntil);
    this.resetInterval(now);
    if (sojourn > this.codel.targetMs) {
      this.standing = true;
      this.standingSince = now;
      return true;
    }
    return false;
  }

  /** The first waiter, in the order they are served (FIFO), for which `pred` holds. */
  find(pred: (w: Waiter<R>) => boolean): Waiter<R> | undefined {
    for (let p = 0; p < this.classes; p++) for (let w = this.heads[p]; w; w = w.next) if (pred(w)) return w;
    return undefined;
  }

  /** Calls fn for every waiter; fn may remove the waiter it is given. */
  forEach(fn: (w: Waiter<R>) => void): void {
    for (let p = 0; p < this.classes; p++) {
      let w = this.heads[p];
      while (w) {
        const next = w.next;
        fn(w);
        w = next;
      }
    }
  }

  private oldestEnqueuedAt(): number {
    let oldest = Infinity;
    for (let p = 0; p < this.classes; p++) {
      const h = this.heads[p];
      if (h && h.enqueuedAt < oldest) oldest = h.enqueuedAt;
    }
    return oldest;
  }

  /**
   * The wait so far was imposed, not caused by arrivals outrunning service (the Limiter holds
   * permits down for a probe): CoDel counts sojourns from now and starts a new interval.
   */
  excuseWaitsUntil(now: number): void {
    this.excusedUntil = now;
    this.resetInterval(now);
  }

  private resetInterval(now: number): void {
    this.intervalStartAt = now;
    this.minSojournMs = Infinity;
    this.dequeues = 0;
  }
}

function checkClasses(classes: number): void {
  if (!(Number.isInteger(classes) && classes >= 1)) throw new TypeError(`classes must be an integer >= 1, got ${classes}`);
}
