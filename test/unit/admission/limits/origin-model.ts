/**
 * A small origin model for the limit tests, simulated in virtual time (no sleeps, no timers).
 *
 * The origin has `capacity` slots; each request holds one for `serviceMs` (times a uniform
 * jitter factor in [1 - jitter, 1 + jitter]); requests beyond the capacity wait inside the origin
 * in FIFO order, so past saturation the RTT grows as inflight * serviceMs / capacity. Phases let
 * the origin change (degrade, recover) over time.
 *
 * Demand is closed-loop: the gateway keeps min(limit.current, demand) requests in flight at all
 * times, so `demand: Infinity` models a crowd far above capacity (the gateway queue is never
 * empty) and a small demand models an app-limited origin.
 */
import type { Limit, LimitSample } from '../../../../src/admission/limits/limit.js';

export interface Phase {
  /** The phase lasts until this virtual time, in ms from the start. */
  untilMs: number;
  capacity: number;
  serviceMs: number;
  /** Concurrent requests the clients want; Infinity = a crowd. */
  demand: number;
}

export interface TracePoint {
  atMs: number;
  limit: number;
  inflight: number;
  busy: number;
  capacity: number;
  probing: boolean;
}

export interface Trace {
  points: TracePoint[];
  /** Fraction of slot-time the origin spent serving, per phase. */
  utilisation: number[];
  /** Highest origin in-flight (serving + waiting inside the origin), per phase. */
  maxInflight: number[];
  samples: number;
}

interface Req {
  startAt: number;
  inflightAtStart: number;
}

/**
 * Virtual time through the phases, and the slot-time the origin was busy in each (for
 * utilisation): shared by simulate and simulateFleet.
 */
class PhaseClock {
  t = 0;
  index = 0;
  private readonly busyTime: number[];
  constructor(private readonly phases: Phase[]) {
    this.busyTime = phases.map(() => 0);
  }
  get phase(): Phase {
    return this.phases[this.index]!;
  }
  /** Moves to `to`, integrating busy slot-time across phase boundaries; `onNext` runs as each later phase begins. */
  advanceTo(to: number, busy: () => number, onNext: () => void): void {
    while (this.t < to) {
      const boundary = Math.min(to, this.phase.untilMs);
      this.busyTime[this.index]! += Math.min(busy(), this.phase.capacity) * (boundary - this.t);
      this.t = boundary;
      if (this.t >= this.phase.untilMs && this.index < this.phases.length - 1) {
        this.index++;
        onNext();
      } else if (this.t >= this.phase.untilMs) return;
    }
  }
  /** Fraction of each phase's slot-time the origin spent serving. */
  utilisation(): number[] {
    let prevEnd = 0;
    return this.phases.map((p, i) => {
      const u = this.busyTime[i]! / (p.capacity * (p.untilMs - prevEnd));
      prevEnd = p.untilMs;
      return u;
    });
  }
}

/** Deterministic PRNG (mulberry32), so traces repeat exactly. */
export function makeRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function simulate(opts: {
  limit: Limit & { readonly isProbing?: boolean };
  phases: Phase[];
  jitter?: number;
  seed?: number;
  epochMs?: number;
  /** Every sample names this latency class (LimitSample.stratum), at a share of 1; none by default. */
  stratum?: number;
}): Trace {
  const { limit, phases } = opts;
  const jitter = opts.jitter ?? 0.2;
  const random = makeRandom(opts.seed ?? 1);
  const epoch = opts.epochMs ?? 1_700_000_000_000;
  const endMs = phases[phases.length - 1]!.untilMs;

  // Completion events: a binary min-heap on finishAt.
  const heapAt: number[] = [];
  const heapReq: Req[] = [];
  const push = (at: number, req: Req): void => {
    let i = heapAt.length;
    heapAt.push(at);
    heapReq.push(req);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heapAt[p]! <= at) break;
      heapAt[i] = heapAt[p]!;
      heapReq[i] = heapReq[p]!;
      i = p;
    }
    heapAt[i] = at;
    heapReq[i] = req;
  };
  const pop = (): { at: number; req: Req } => {
    const at = heapAt[0]!;
    const req = heapReq[0]!;
    const lastAt = heapAt.pop()!;
    const lastReq = heapReq.pop()!;
    if (heapAt.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= heapAt.length) break;
        const r = l + 1;
        const c = r < heapAt.length && heapAt[r]! < heapAt[l]! ? r : l;
        if (heapAt[c]! >= lastAt) break;
        heapAt[i] = heapAt[c]!;
        heapReq[i] = heapReq[c]!;
        i = c;
      }
      heapAt[i] = lastAt;
      heapReq[i] = lastReq;
    }
    return { at, req };
  };

  const clock = new PhaseClock(phases);
  let inflight = 0;
  let busy = 0;
  const waiting: Req[] = [];
  let waitingHead = 0;
  const maxInflight = phases.map(() => 0);
  const points: TracePoint[] = [];
  let samples = 0;
  const sample: LimitSample = { rttMs: 0, inflight: 0, dropped: false };
  if (opts.stratum !== undefined) {
    sample.stratum = opts.stratum;
    sample.stratumShare = 1;
  }

  const phase = (): Phase => clock.phase;
  const serve = (req: Req): void => {
    busy++;
    const factor = 1 - jitter + 2 * jitter * random();
    push(clock.t + phase().serviceMs * factor, req);
  };
  const start = (): void => {
    inflight++;
    const req = { startAt: clock.t, inflightAtStart: inflight };
    if (busy < phase().capacity) serve(req);
    else waiting.push(req);
  };
  const fill = (): void => {
    const want = Math.min(limit.current, phase().demand);
    while (inflight < want) start();
    if (inflight > maxInflight[clock.index]!) maxInflight[clock.index] = inflight;
  };
  // As each later phase begins, its slots take the requests waiting in the origin.
  const advanceTo = (to: number): void =>
    clock.advanceTo(to, () => busy, () => {
      while (busy < phase().capacity && waitingHead < waiting.length) serve(waiting[waitingHead++]!);
      fill();
    });

  fill();
  while (heapAt.length > 0 && clock.t < endMs) {
    const { at, req } = pop();
    advanceTo(Math.min(at, endMs));
    if (at > endMs) break;
    busy--;
    inflight--;
    sample.rttMs = at - req.startAt;
    sample.inflight = req.inflightAtStart;
    sample.dropped = false;
    limit.onSample(sample, epoch + at);
    samples++;
    while (busy < phase().capacity && waitingHead < waiting.length) serve(waiting[waitingHead++]!);
    fill();
    points.push({
      atMs: at,
      limit: limit.current,
      inflight,
      busy,
      capacity: phase().capacity,
      probing: limit.isProbing ?? false,
    });
  }
  advanceTo(endMs);

  const utilisation = clock.utilisation();
  return { points, utilisation, maxInflight, samples };
}

/** Points within [fromMs, toMs). */
export function between(trace: Trace, fromMs: number, toMs: number): TracePoint[] {
  return trace.points.filter((p) => p.atMs >= fromMs && p.atMs < toMs);
}

/**
 * Several gateways, each with its own limit, in front of one model origin (its slots and FIFO
 * queue shared): each keeps min(its limit, demand) requests in flight. With `share`, as
 * gateways sharing a Redis tier do (origin/peer-load.ts), each sample carries the others'
 * in-flight count when its request started (LimitSample.peerInflight; told at once here, where
 * the real ones are up to LOAD_INTERVAL_MS old) and a probe one starts is joined by the others
 * (Limit.joinProbe).
 */
export function simulateFleet(opts: {
  limits: (Limit & { readonly isProbing?: boolean })[];
  phases: Phase[];
  share: boolean;
  jitter?: number;
  seed?: number;
  epochMs?: number;
}): { maxInflight: number[]; utilisation: number[]; points: { atMs: number; total: number; limits: number[] }[] } {
  const { limits, phases, share } = opts;
  const jitter = opts.jitter ?? 0.2;
  const random = makeRandom(opts.seed ?? 1);
  const epoch = opts.epochMs ?? 1_700_000_000_000;
  const endMs = phases[phases.length - 1]!.untilMs;
  interface FleetReq {
    gw: number;
    startAt: number;
    inflightAtStart: number;
    peersAtStart: number;
  }
  // Completions, kept sorted by time (a few dozen at once: insertion is cheap enough).
  const events: { at: number; req: FleetReq }[] = [];
  const schedule = (at: number, req: FleetReq): void => {
    let i = events.length;
    while (i > 0 && events[i - 1]!.at > at) i--;
    events.splice(i, 0, { at, req });
  };
  const clock = new PhaseClock(phases);
  let busy = 0;
  const inflight = limits.map(() => 0);
  let total = 0;
  const waiting: FleetReq[] = [];
  let waitingHead = 0;
  const maxInflight = phases.map(() => 0);
  const points: { atMs: number; total: number; limits: number[] }[] = [];
  const sample: LimitSample = { rttMs: 0, inflight: 0, peerInflight: 0, dropped: false };
  const phase = (): Phase => clock.phase;
  const serve = (req: FleetReq): void => {
    busy++;
    schedule(clock.t + phase().serviceMs * (1 - jitter + 2 * jitter * random()), req);
  };
  if (share)
    limits.forEach((limit, i) => {
      limit.onProbe = () => {
        for (const [j, other] of limits.entries()) if (j !== i) other.joinProbe?.(epoch + clock.t);
      };
    });
  const fill = (): void => {
    for (const [g, limit] of limits.entries()) {
      const want = Math.min(limit.current, phase().demand);
      while (inflight[g]! < want) {
        inflight[g]!++;
        total++;
        const req = { gw: g, startAt: clock.t, inflightAtStart: inflight[g]!, peersAtStart: total - inflight[g]! };
        if (busy < phase().capacity) serve(req);
        else waiting.push(req);
      }
    }
    if (total > maxInflight[clock.index]!) maxInflight[clock.index] = total;
  };
  // As each later phase begins, its slots take the requests waiting in the origin.
  const advanceTo = (to: number): void =>
    clock.advanceTo(to, () => busy, () => {
      while (busy < phase().capacity && waitingHead < waiting.length) serve(waiting[waitingHead++]!);
      fill();
    });
  fill();
  while (events.length > 0 && clock.t < endMs) {
    const { at, req } = events.shift()!;
    advanceTo(Math.min(at, endMs));
    if (at > endMs) break;
    busy--;
    inflight[req.gw]!--;
    total--;
    sample.rttMs = at - req.startAt;
    sample.inflight = req.inflightAtStart;
    sample.peerInflight = share ? req.peersAtStart : 0;
    limits[req.gw]!.onSample(sample, epoch + at);
    while (busy < phase().capacity && waitingHead < waiting.length) serve(waiting[waitingHead++]!);
    fill();
    points.push({ atMs: at, total, limits: limits.map((l) => l.current) });
  }
  advanceTo(endMs);
  const utilisation = clock.utilisation();
  return { maxInflight, utilisation, points };
}
