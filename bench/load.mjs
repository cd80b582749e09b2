/**
 * The open-loop load generator for the flash-crowd benchmark and the demo.
 *
 * Open loop: every arrival time is fixed in advance by a clock (Poisson or uniform spacing)
 * and a request is sent at its time whether or not earlier ones have been answered. Latency is
 * measured from the SCHEDULED send time to the end of the response body, so time a request
 * spent waiting for a connection, or because the generator itself fell behind, is counted
 * (coordinated omission cannot hide queueing). The generator's own lateness (actual send −
 * scheduled) is reported separately as `sendLag`, so a reader can tell whether it kept up.
 *
 * Rate: linear ramp from `fromMultiplier`× to `multiplier`× the origin's capacity over
 * `rampMs`, then `multiplier`× for `holdMs`. Capacity = C / S (160 req/s for C = 8, S = 50 ms).
 *
 * Mix: GET /page/N with Zipf popularity (P(rank k) ∝ 1 / k^s, s = 1.1 over 200 pages), and a
 * share (3 %) of uncacheable requests: half GET /account with a session cookie, half
 * POST /api/comment with a small JSON body.
 *
 * Outcome per request: ok (2xx/3xx), refused (503/429), failed (any other status, a transport
 * error such as a reset, or no full answer within `timeoutMs`, which counts as failure).
 *
 * Connections: each worker has one undici Pool of `connections` keep-alive connections (1024),
 * the crowd's largest number of requests on the wire at once; an arrival finding them all busy
 * waits in the worker's own FIFO, and that wait is part of its latency. Nothing is ever aborted
 * (see `arrive`): a request not answered `timeoutMs` after its scheduled time is counted as a
 * timeout and, if it is still waiting, never sent.
 *
 * Runs in worker_threads (one by default; `workers` splits the rate) so the caller's event loop
 * (live display, stats polling) does not disturb sending. On the 2-core box one worker is the
 * right choice: it generates 8 000 req/s (×50) with a p99 send lag of tens of ms, while a second
 * worker only steals the core the system under test needs. Bounded: exactly the scheduled
 * number of requests, then at most `timeoutMs` of draining.
 *
 * CLI: node bench/load.mjs --target http://127.0.0.1:3000 [--multiplier 20] [--ramp-ms 5000]
 *        [--hold-ms 20000] [--capacity 160] [--workers 1] [--connections 1024] [--arrivals poisson]
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { summarize, percentile, fmtMs, fmtPct, fmtInt } from './lib/stats.mjs';

export const KINDS = /** @type {const} */ (['page', 'private', 'post']);

/**
 * @typedef {object} LoadOptions
 * @property {string} target base URL, e.g. http://127.0.0.1:8080
 * @property {number} [capacityRps] the origin's capacity in req/s (default 160 = 8 / 50 ms)
 * @property {number} [fromMultiplier] rate at the start of the ramp, × capacity (0.5)
 * @property {number} [multiplier] rate held after the ramp, × capacity (20)
 * @property {number} [rampMs] (5000)
 * @property {number} [holdMs] (20000)
 * @property {number} [pages] number of distinct pages (200)
 * @property {number} [zipfS] Zipf exponent (1.1)
 * @property {number} [uncacheableShare] share of /account + POST (0.03)
 * @property {'poisson'|'uniform'} [arrivals] ('poisson')
 * @property {number} [timeoutMs] per-request limit from the scheduled time (10000)
 * @property {number} [workers] worker threads sharing the rate (1)
 * @property {number} [connections] keep-alive connections per worker (1024)
 * @property {number} [seed] PRNG seed (1)
 * @property {number} [startDelayMs] time from the call to the first arrival (300)
 */

/** Defaults for LoadOptions. */
export const LOAD_DEFAULTS = {
  capacityRps: 160,
  fromMultiplier: 0.5,
  multiplier: 20,
  rampMs: 5000,
  holdMs: 20000,
  pages: 200,
  zipfS: 1.1,
  uncacheableShare: 0.03,
  arrivals: 'poisson',
  timeoutMs: 10_000,
  workers: 1,
  connections: 1024,
  seed: 1,
  startDelayMs: 300,
};

/**
 * The offered rate in req/s at `tMs` after the start: the linear ramp, then the hold.
 * @param {Required<LoadOptions>} o
 * @param {number} tMs
 */
export function rateAt(o, tMs) {
  if (tMs < o.rampMs) return o.capacityRps * (o.fromMultiplier + ((o.multiplier - o.fromMultiplier) * tMs) / o.rampMs);
  return o.capacityRps * o.multiplier;
}

/** mulberry32: a small seeded PRNG returning floats in [0, 1). @param {number} seed */
export function makeRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Cumulative Zipf distribution over ranks 1..n: cdf[k-1] = Σ_{i≤k} i^-s / Σ_{i≤n} i^-s.
 * @param {number} n @param {number} s
 */
export function makeZipfCdf(n, s) {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let k = 1; k <= n; k++) cdf[k - 1] = acc += 1 / k ** s;
  for (let k = 0; k < n; k++) cdf[k] /= acc;
  return cdf;
}

/** Rank (1-based) drawn from a Zipf CDF by binary search. @param {Float64Array} cdf @param {number} u */
function drawRank(cdf, u) {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo + 1;
}

/**
 * The arrival schedule of one worker: times (ms after start), kinds (0 page, 1 private,
 * 2 post) and page numbers. Each worker offers rate / workers.
 * Poisson: next gap = −ln(U) / r(t); uniform: 1 / r(t).
 * @param {Required<LoadOptions>} o
 * @param {number} share fraction of the rate this worker offers
 * @param {number} seed
 */
export function makeSchedule(o, share, seed) {
  const rnd = makeRandom(seed);
  const cdf = makeZipfCdf(o.pages, o.zipfS);
  const endMs = o.rampMs + o.holdMs;
  const cap = Math.ceil(((o.capacityRps * o.multiplier * share * endMs) / 1000) * 1.2 + 100);
  const times = new Float64Array(cap);
  const kinds = new Uint8Array(cap);
  const pages = new Uint16Array(cap);
  let n = 0;
  let t = 0;
  while (n < cap) {
    const rate = (rateAt(o, t) * share) / 1000; // per ms
    const gap = o.arrivals === 'uniform' ? 1 / rate : -Math.log(1 - rnd()) / rate;
    t += gap;
    if (t >= endMs) break;
    times[n] = t;
    const u = rnd();
    kinds[n] = u < o.uncacheableShare / 2 ? 1 : u < o.uncacheableShare ? 2 : 0;
    pages[n] = drawRank(cdf, rnd());
    n++;
  }
  return { n, times: times.subarray(0, n), kinds: kinds.subarray(0, n), pages: pages.subarray(0, n) };
}

/** Short label for a Cache-Status (RFC 9211) or X-Cache-Status value. @param {string|undefined} v */
function cacheLabel(v) {
  if (!v) return 'none';
  const s = String(v);
  const fwd = /fwd=([\w-]+)/.exec(s)?.[1];
  let label = /;\s*hit\b/i.test(s) ? 'hit' : fwd ? `fwd=${fwd}` : s.split(/[;,]/)[0].trim().toLowerCase().slice(0, 24);
  if (/collapsed/i.test(s)) label += '+collapsed';
  if (/detail=([\w-]+)/.test(s)) label += ` (${/detail=([\w-]+)/.exec(s)?.[1]})`;
  return label;
}

const OPEN = 1;
const DONE = 2;
const TIMEOUT = Object.freeze({ code: 'timeout' });
const GET_HEADERS = { accept: 'text/html' };
const POST_HEADERS = { 'content-type': 'application/json' };

/** The body of a worker thread: runs one schedule and posts per-second and final results. */
async function workerMain() {
  const { Pool } = await import('undici');
  const { opts: o, share, seed, startAt } = workerData;
  const sched = makeSchedule(o, share, seed);
  const pool = new Pool(o.target, {
    connections: o.connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: Math.max(30_000, 3 * o.timeoutMs),
    bodyTimeout: Math.max(30_000, 3 * o.timeoutMs),
    connect: { timeout: o.timeoutMs },
  });
  const perfStart = performance.now() + (startAt - Date.now());
  const epochOf = (perf) => startAt + (perf - perfStart);

  const per = KINDS.map(() => ({
    sent: 0,
    ok: 0,
    refused: 0,
    failed: 0,
    okLat: [],
    refusedLat: [],
    retryAfter: 0,
    statuses: {},
    errors: {},
    cache: {},
  }));
  /** @type {Map<number, { offered: number, ok: number, refused: number, failed: number, okLat: number[], pageLat: number[] }>} */
  const seconds = new Map();
  const sec = (epochMs) => {
    const s = Math.floor(epochMs / 1000);
    let r = seconds.get(s);
    if (!r) seconds.set(s, (r = { offered: 0, ok: 0, refused: 0, failed: 0, okLat: [], pageLat: [] }));
    return r;
  };
  const sendLag = new Float64Array(sched.n);
  const states = new Uint8Array(sched.n); // NOT_YET → OPEN → DONE
  /** @type {number[]} */
  const waiting = [];
  let waitHead = 0;
  let onWire = 0;
  let open = 0;

  function finish(i, kind, status, headers, error) {
    if (states[i] !== OPEN) return; // already counted (a timeout raced the answer)
    states[i] = DONE;
    open--;
    const end = performance.now();
    const latency = end - (perfStart + sched.times[i]);
    const k = per[kind];
    const bucket = sec(epochOf(end));
    if (error) {
      k.failed++;
      bucket.failed++;
      const code = error === TIMEOUT ? 'timeout' : (error.code ?? error.name ?? 'error');
      k.errors[code] = (k.errors[code] ?? 0) + 1;
      return;
    }
    k.statuses[status] = (k.statuses[status] ?? 0) + 1;
    const cl = cacheLabel(headers['cache-status'] ?? headers['x-cache-status'] ?? headers['x-cache']);
    k.cache[cl] = (k.cache[cl] ?? 0) + 1;
    if (status >= 200 && status < 400) {
      k.ok++;
      k.okLat.push(latency);
      bucket.ok++;
      bucket.okLat.push(latency);
      if (kind === 0) bucket.pageLat.push(latency);
    } else if (status === 503 || status === 429) {
      k.refused++;
      k.refusedLat.push(latency);
      if (headers['retry-after'] !== undefined) k.retryAfter++;
      bucket.refused++;
    } else {
      k.failed++;
      bucket.failed++;
    }
  }

  /**
   * Arrival i, at its scheduled time: counted as offered, then sent at once when fewer than
   * `connections` requests are on the wire, else put in this worker's own FIFO (its wait
   * counts in its latency). Requests are never handed to undici beyond the connection count,
   * so undici never queues and nothing is ever aborted: aborting a request on a socket closes
   * the connection from this side and leaves a TIME_WAIT socket per timeout, which exhausts the
   * loopback port range within a few runs.
   */
  function arrive(i) {
    const kind = sched.kinds[i];
    sendLag[i] = performance.now() - (perfStart + sched.times[i]);
    per[kind].sent++;
    sec(epochOf(perfStart + sched.times[i])).offered++;
    states[i] = OPEN;
    open++;
    if (onWire < o.connections) send(i);
    else waiting.push(i);
  }

  /** The next waiting request that has not timed out yet, sent when a connection is free. */
  function sendWaiting() {
    while (onWire < o.connections && waitHead < waiting.length) {
      const i = waiting[waitHead++];
      if (waitHead > 4096 && waitHead * 2 > waiting.length) {
        waiting.splice(0, waitHead);
        waitHead = 0;
      }
      if (states[i] === OPEN) send(i); // a timed-out one is dropped unsent
    }
  }

  /**
   * Sends request i through undici's raw dispatch API: no promise or stream per request, so
   * the generator stays cheap enough to keep its schedule at thousands of requests a second.
   */
  function send(i) {
    const kind = sched.kinds[i];
    onWire++;
    /** @type {import('undici').Dispatcher.DispatchOptions} */
    let req;
    if (kind === 0) req = { path: `/page/${sched.pages[i]}`, method: 'GET', headers: GET_HEADERS };
    else if (kind === 1)
      req = { path: '/account', method: 'GET', headers: { accept: 'text/html', cookie: `session=user${i % 1000}` } };
    else
      req = {
        path: '/api/comment',
        method: 'POST',
        headers: POST_HEADERS,
        body: `{"page":${sched.pages[i]},"text":"first!"}`,
      };
    let status = 0;
    /** @type {Record<string, string | string[]>} */
    let resHeaders = {};
    pool.dispatch(req, {
      onRequestStart() {},
      onResponseStart(_c, statusCode, headers) {
        status = statusCode;
        resHeaders = headers;
      },
      onResponseData() {},
      onResponseEnd() {
        onWire--;
        finish(i, kind, status, resHeaders, null);
        sendWaiting();
      },
      onResponseError(_c, err) {
        onWire--;
        finish(i, kind, 0, {}, err);
        sendWaiting();
      },
    });
  }

  // Timeouts: arrivals are in schedule order, so sweep from the oldest request. A request
  // older than timeoutMs is counted as a timeout now; a waiting one is then never sent, one on
  // the wire is left to finish and its answer ignored (undici's headers/body timeouts,
  // 3 × timeoutMs and at least 30 s, bound how long it can hold its connection).
  let sweepIdx = 0;
  let next = 0;
  function sweep() {
    const now = performance.now();
    while (sweepIdx < next && perfStart + sched.times[sweepIdx] + o.timeoutMs <= now) {
      if (states[sweepIdx] === OPEN) finish(sweepIdx, sched.kinds[sweepIdx], 0, {}, TIMEOUT);
      sweepIdx++;
    }
  }

  // Per-second progress: post every completed second to the parent (a late answer for a second
  // already posted is posted again later and summed by the parent).
  function postSeconds(all) {
    const upTo = all ? Infinity : Math.floor(Date.now() / 1000) - 1;
    const out = [];
    for (const [s, r] of seconds) {
      if (s > upTo) continue;
      out.push({ s, ...r, okLat: Float64Array.from(r.okLat), pageLat: Float64Array.from(r.pageLat) });
      seconds.delete(s);
    }
    if (out.length) parentPort?.postMessage({ type: 'seconds', seconds: out });
  }
  const progressTimer = setInterval(() => postSeconds(false), 250);
  const sweepTimer = setInterval(sweep, 100);
  const debugTimer = process.env.LOAD_DEBUG
    ? setInterval(() => console.error(`[load worker] open ${open} on wire ${onWire} waiting ${waiting.length - waitHead} next ${next}/${sched.n}`, JSON.stringify(pool.stats)), 1000)
    : undefined;

  await new Promise((resolve) => {
    function tick() {
      const now = performance.now() - perfStart;
      while (next < sched.n && sched.times[next] <= now) arrive(next++);
      if (next >= sched.n) return resolve();
      const wait = sched.times[next] - (performance.now() - perfStart);
      setTimeout(tick, Math.max(0, wait - 0.5));
    }
    setTimeout(tick, Math.max(0, perfStart - performance.now()));
  });
  // Drain: wait for the stragglers, bounded by the per-request timeout.
  const drainDeadline = performance.now() + o.timeoutMs + 1000;
  while (open > 0 && performance.now() < drainDeadline) await new Promise((r) => setTimeout(r, 20));
  sweep();
  for (let i = 0; i < sched.n; i++) if (states[i] === OPEN) finish(i, sched.kinds[i], 0, {}, TIMEOUT);
  clearInterval(progressTimer);
  clearInterval(sweepTimer);
  if (debugTimer) clearInterval(debugTimer);
  postSeconds(true);
  parentPort?.postMessage({
    type: 'done',
    per: per.map((k) => ({ ...k, okLat: Float64Array.from(k.okLat), refusedLat: Float64Array.from(k.refusedLat) })),
    sendLag,
    scheduled: sched.n,
  });
  await pool.destroy().catch(() => {});
}

/**
 * Runs the load and returns the aggregated result.
 * @param {LoadOptions} options
 * @param {{ onSecond?: (row: SecondRow) => void }} [hooks] onSecond is called about once a second
 *   with the previous second's figures (summed over workers), for live displays.
 * @returns {Promise<LoadResult>}
 *
 * @typedef {{ t: number, epochSecond: number, offered: number, ok: number, refused: number, failed: number, okP99: number, pageP99: number, pagesOver10ms: number }} SecondRow
 * @typedef {Awaited<ReturnType<typeof aggregate>>} LoadResult
 */
export async function runLoad(options, hooks = {}) {
  /** @type {Required<LoadOptions>} */
  const o = { ...LOAD_DEFAULTS, ...options };
  const startAt = Date.now() + o.startDelayMs;
  const file = fileURLToPath(import.meta.url);
  /** @type {Map<number, { offered: number, ok: number, refused: number, failed: number, okLat: number[], pageLat: number[] }>} */
  const seconds = new Map();
  const emitted = new Set();
  const dones = [];
  const firstSecond = Math.floor(startAt / 1000);

  const emitTimer = hooks.onSecond
    ? setInterval(() => {
        const ready = Math.floor((Date.now() - 400) / 1000) - 1;
        for (const s of [...seconds.keys()].sort((a, b) => a - b)) {
          if (s > ready || emitted.has(s)) continue;
          emitted.add(s);
          hooks.onSecond?.(secondRow(s, seconds.get(s), firstSecond));
        }
      }, 200)
    : undefined;

  await Promise.all(
    Array.from({ length: o.workers }, (_, w) => {
      const worker = new Worker(file, {
        workerData: { role: 'crowdgate-load', opts: o, share: 1 / o.workers, seed: o.seed * 7919 + w, startAt },
      });
      return new Promise((resolve, reject) => {
        worker.on('message', (m) => {
          if (m.type === 'seconds') {
            for (const r of m.seconds) {
              const acc = seconds.get(r.s) ?? { offered: 0, ok: 0, refused: 0, failed: 0, okLat: [], pageLat: [] };
              acc.offered += r.offered;
              acc.ok += r.ok;
              acc.refused += r.refused;
              acc.failed += r.failed;
              for (const v of r.okLat) acc.okLat.push(v);
              for (const v of r.pageLat) acc.pageLat.push(v);
              seconds.set(r.s, acc);
            }
          } else if (m.type === 'done') {
            dones.push(m);
            resolve(undefined);
          }
        });
        worker.once('error', reject);
        worker.once('exit', (code) => (code === 0 ? resolve(undefined) : reject(new Error(`load worker exited ${code}`))));
      });
    }),
  );
  if (emitTimer) clearInterval(emitTimer);
  if (hooks.onSecond)
    for (const s of [...seconds.keys()].sort((a, b) => a - b))
      if (!emitted.has(s)) hooks.onSecond(secondRow(s, seconds.get(s), firstSecond));
  return aggregate(o, startAt, dones, seconds);
}

/** Index of the first value > x in an ascending array. */
function lowerBound(sorted, x) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function secondRow(s, r, firstSecond) {
  const sorted = Float64Array.from(r.okLat).sort();
  const pages = Float64Array.from(r.pageLat).sort();
  return { t: s - firstSecond, epochSecond: s, offered: r.offered, ok: r.ok, refused: r.refused, failed: r.failed, okP99: percentile(sorted, 99), pageP99: percentile(pages, 99), pagesOver10ms: pages.length - lowerBound(pages, 10) };
}

/** Merges the workers' results into per-kind summaries and a per-second table. */
function aggregate(o, startAt, dones, seconds) {
  const byKind = {};
  const allOk = [];
  KINDS.forEach((kind, ki) => {
    const merged = { sent: 0, ok: 0, refused: 0, failed: 0, retryAfter: 0, okLat: [], refusedLat: [], statuses: {}, errors: {}, cache: {} };
    for (const d of dones) {
      const k = d.per[ki];
      merged.sent += k.sent;
      merged.ok += k.ok;
      merged.refused += k.refused;
      merged.failed += k.failed;
      merged.retryAfter += k.retryAfter;
      for (const v of k.okLat) merged.okLat.push(v);
      for (const v of k.refusedLat) merged.refusedLat.push(v);
      for (const f of ['statuses', 'errors', 'cache'])
        for (const [key, n] of Object.entries(k[f])) merged[f][key] = (merged[f][key] ?? 0) + n;
    }
    for (const v of merged.okLat) allOk.push(v);
    byKind[kind] = {
      sent: merged.sent,
      ok: merged.ok,
      refused: merged.refused,
      failed: merged.failed,
      successRate: merged.sent ? merged.ok / merged.sent : NaN,
      latency: summarize(merged.okLat),
      refusedLatency: summarize(merged.refusedLat),
      retryAfterShare: merged.refused ? merged.retryAfter / merged.refused : NaN,
      statuses: merged.statuses,
      errors: merged.errors,
      cacheStatus: merged.cache,
    };
  });
  const lags = [];
  for (const d of dones) for (const v of d.sendLag) lags.push(v);
  const firstSecond = Math.floor(startAt / 1000);
  const perSecond = [...seconds.keys()].sort((a, b) => a - b).map((s) => secondRow(s, seconds.get(s), firstSecond));
  const uncSent = byKind.private.sent + byKind.post.sent;
  const uncOk = byKind.private.ok + byKind.post.ok;
  const refusedLat = [];
  for (const d of dones) for (const k of d.per) for (const v of k.refusedLat) refusedLat.push(v);
  const refusedTotal = KINDS.reduce((a, k) => a + byKind[k].refused, 0);
  const retryAfterTotal = dones.reduce((a, d) => a + d.per.reduce((b, k) => b + k.retryAfter, 0), 0);
  return {
    options: o,
    startAt,
    rampEndAt: startAt + o.rampMs,
    endAt: startAt + o.rampMs + o.holdMs,
    scheduled: dones.reduce((a, d) => a + d.scheduled, 0),
    byKind,
    uncacheable: { sent: uncSent, ok: uncOk, successRate: uncSent ? uncOk / uncSent : NaN },
    allSuccessLatency: summarize(allOk),
    refused: { n: refusedTotal, latency: summarize(refusedLat), retryAfterShare: refusedTotal ? retryAfterTotal / refusedTotal : NaN },
    sendLag: summarize(lags),
    perSecond,
  };
}

/**
 * Markdown lines summarising one load result (per kind, plus the generator's own lag).
 * @param {LoadResult} r
 */
export function formatLoadResult(r) {
  const lines = [
    '| kind | sent | success | p50 ms | p99 ms | p99.9 ms | refused | refused p50 ms | Retry-After | failed (reasons) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const kind of KINDS) {
    const k = r.byKind[kind];
    const reasons = Object.entries(k.errors)
      .map(([e, n]) => `${e} ${n}`)
      .concat(Object.entries(k.statuses).filter(([s]) => !/^[23]|503|429/.test(s)).map(([s, n]) => `${s} ${n}`))
      .join(', ');
    lines.push(
      `| ${kind} | ${fmtInt(k.sent)} | ${fmtPct(k.successRate)} | ${fmtMs(k.latency.p50)} | ${fmtMs(k.latency.p99)} | ${fmtMs(k.latency.p999)} | ${fmtInt(k.refused)} | ${fmtMs(k.refusedLatency.p50)} | ${fmtPct(k.retryAfterShare)} | ${fmtInt(k.failed)}${reasons ? ` (${reasons})` : ''} |`,
    );
  }
  lines.push('', `generator send lag: p50 ${fmtMs(r.sendLag.p50)} ms, p99 ${fmtMs(r.sendLag.p99)} ms, max ${fmtMs(r.sendLag.max)} ms`);
  return lines.join('\n');
}

if (!isMainThread && workerData?.role === 'crowdgate-load') {
  await workerMain();
} else if (isMainThread && process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: 'http://127.0.0.1:3000' },
      capacity: { type: 'string', default: '160' },
      multiplier: { type: 'string', default: '20' },
      'ramp-ms': { type: 'string', default: '5000' },
      'hold-ms': { type: 'string', default: '20000' },
      workers: { type: 'string', default: '1' },
      connections: { type: 'string', default: '1024' },
      arrivals: { type: 'string', default: 'poisson' },
      seed: { type: 'string', default: '1' },
      'timeout-ms': { type: 'string', default: '10000' },
    },
  });
  const r = await runLoad(
    {
      target: values.target,
      capacityRps: Number(values.capacity),
      multiplier: Number(values.multiplier),
      rampMs: Number(values['ramp-ms']),
      holdMs: Number(values['hold-ms']),
      workers: Number(values.workers),
      connections: Number(values.connections),
      arrivals: /** @type {'poisson'|'uniform'} */ (values.arrivals),
      seed: Number(values.seed),
      timeoutMs: Number(values['timeout-ms']),
    },
    { onSecond: (row) => console.log(`t=${row.t}s offered ${row.offered} ok ${row.ok} refused ${row.refused} failed ${row.failed} p99 ${fmtMs(row.okP99)} ms`) },
  );
  console.log(formatLoadResult(r));
}
