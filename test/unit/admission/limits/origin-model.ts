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

  let phaseIndex = 0;
  let t = 0;
  let inflight = 0;
  let busy = 0;
  const waiting: Req[] = [];
  let waitingHead = 0;
  const busyTime = phases.map(() => 0);
  const maxInflight = phases.map(() => 0);
  const points: TracePoint[] = [];
  let samples = 0;
  const sample: LimitSample = { rttMs: 0, inflight: 0, dropped: false };

  const phase = (): Phase => phases[phaseIndex]!;
  const serve = (req: Req): void => {
    busy++;
    const factor = 1 - jitter + 2 * jitter * random();
    push(t + phase().serviceMs * factor, req);
  };
  const start = (): void => {
    inflight++;
    const req = { startAt: t, inflightAtStart: inflight };
    if (busy < phase().capacity) serve(req);
    else waiting.push(req);
  };
  const fill = (): void => {
    const want = Math.min(limit.current, phase().demand);
    while (inflight < want) start();
    if (inflight > maxInflight[phaseIndex]!) maxInflight[phaseIndex] = inflight;
  };
  const advanceTo = (to: number): void => {
    // Integrate busy slot-time, splitting across phase boundaries.
    while (t < to) {
      const boundary = Math.min(to, phase().untilMs);
      busyTime[phaseIndex]! += Math.min(busy, phase().capacity) * (boundary - t);
      t = boundary;
      if (t >= phase().untilMs && phaseIndex < phases.length - 1) {
        phaseIndex++;
        while (busy < phase().capacity && waitingHead < waiting.length) serve(waiting[waitingHead++]!);
        fill();
      } else if (t >= phase().untilMs) return;
    }
  };

  fill();
  while (heapAt.length > 0 && t < endMs) {
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

  let prevEnd = 0;
  const utilisation = phases.map((p, i) => {
    const u = busyTime[i]! / (p.capacity * (p.untilMs - prevEnd));
    prevEnd = p.untilMs;
    return u;
  });
  return { points, utilisation, maxInflight, samples };
}

/** Points within [fromMs, toMs). */
export function between(trace: Trace, fromMs: number, toMs: number): TracePoint[] {
  return trace.points.filter((p) => p.atMs >= fromMs && p.atMs < toMs);
}
