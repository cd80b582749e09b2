/**
 * The ordinary-day differential bench: which requests does crowdgate ITSELF refuse on an
 * ordinary day, when the very same load sent straight to an identical origin loses nothing?
 *
 * Two identical origins (bench/lib/mixed-origin.mjs children, same options, unlimited workers,
 * every answer `private, no-store`): one behind a fresh crowdgate with the SHIPPED
 * config/gateway.yaml (only the listen/admin ports, the loopback host, the origin URL and
 * logging changed, plus any --set), one reached directly. A seeded schedule of closed-loop
 * virtual clients: after each think time a client sends the SAME request (method, path, body) to
 * both sides at the same moment (two undici Pools, keep-alive, one connection per client per
 * side) and waits for both answers before it thinks again, so the two sides carry the same load
 * at the same time. Each request carries a unique `?req=` and both origins run with
 * `--delay-seed <seed>`, so the same request draws the same service time on both sides
 * (X-Origin-Delay-Ms is compared per pair; mismatches are reported).
 *
 * Classes (--cls):
 *   ordinary  (default) 60–90 clients (seeded, ~78), think times (exponential, a per-client mean)
 *             seeded so the total is 150–250 req/s, pages 1–30 ms (--page-ms), API 5–20 ms,
 *             1–2 % slow (GET /report/N, POST /upload: 2–10 s), ~3 % fast POSTs. ALL clients
 *             send their first request at t = 0 on a fresh gateway (--spread-ms N spreads them).
 *   overload  not implemented: worker-origin.mjs has no seeded delays, events or in-flight
 *             counts, and in an overload the gateway's refusals are the point, so the
 *             differential judge (refused here, fine there) does not apply; it needs its own.
 * Events (--ev), at a seeded time in 20–70 % of the run (--ev-at S to pin it), on BOTH origins at
 * the same wall-clock moment (POST /__events to each before the start, with epoch times):
 *   none | slow (every answer's delay ×3 for 6 s: a database hiccup) | stall (nothing answered
 *   for 1.5 s) | random (slow or stall, from the seed).
 *
 * The judge, per pair: the headline is gateway-made refusals where the direct side succeeded
 * (gateway answer carrying X-Crowdgate-Error; reason from Cache-Status detail, `shed-` dropped,
 * else the error code; direct answer below 500); "other unexcused" is a gateway 5xx without it,
 * or a transport error, where the direct side succeeded. Requests still on the wire after the
 * drain are cut on both sides and excused. Reported: totals per side, the headline by reason,
 * kind and second; latency per kind (pages p50/p99 both sides, their ratio, and the paired
 * difference); origin peak in flight on both sides; per second of the run: pairs, refusals,
 * page p99 on both sides, crowdgate_origin_limit / crowdgate_origin_inflight /
 * crowdgate_queue_length (admin /metrics every 500 ms), and CPU. The last line printed is one
 * summary line. Exit code 1 when there was a gateway-made refusal where the direct side
 * succeeded, 0 otherwise (2 when the bench itself failed).
 *
 * Seeds: same --seed, same schedule (client count, rate, each client's think times and requests
 * in order, the event's kind and time) and same origin delays; what timing changes is only
 * where in the run the k-th request of a client falls, since clients are closed loops. The run
 * starts on a whole wall-clock second, so the origins' per-second counters line up with the
 * run's seconds.
 *
 * Pinning (unless --unpinned; taskset and 2+ CPUs): the gateway and BOTH origins on CPU 0, this
 * process (load generator and scraper) on CPU 1. Both origins share the gateway's CPU on
 * purpose: the two origins must see the same conditions, or the delays they give the same
 * request would differ for reasons other than the gateway (the direct origin beside the load
 * generator on CPU 1 would run on a different, differently loaded CPU). The direct origin is not
 * starved: an origin here is a timer per request, a few % of a CPU at 250 req/s, and the report
 * gives each process's CPU per second, so a saturated CPU 0 (gateway + origins near 100 %) is
 * seen, and then a difference is the box's, not the limiter's.
 *
 * Usage: node bench/ordinary-diff.mjs [--seed 1] [--cls ordinary] [--ev none|slow|stall|random]
 *          [--duration 40] [--drain S] [--max-requests 100000] [--spread-ms 0] [--clients N]
 *          [--rate R] [--page-ms 1-30] [--ev-at S] [--set PATH=VALUE ...] [--tree DIR]
 *          [--out DIR] [--unpinned]
 *   --seed N       the schedule's seed (clients, rate, shares, think times, requests, event).
 *   --duration S   send window (default 40 s), also bounded by --max-requests pairs.
 *   --drain S      after the window, wait this long for requests on the wire (slow ones), then
 *                  cut them (default 11 s; 31 s with a slow event, whose reports take up to 30 s).
 *   --spread-ms N  spread the clients' first requests uniformly over N ms (default 0: all at t=0).
 *   --clients N, --rate R   override the seeded client count and target req/s.
 *   --ev-at S      the event at S s into the run instead of the seeded time.
 *   --set PATH=VALUE  one config setting on top of the shipped file (a dotted path, a YAML
 *                  value: `--set admission.queue.deadlineMs=5`); repeatable.
 *   --tree DIR     run DIR/scripts/crowdgate with DIR/config/gateway.yaml (default: this repo);
 *                  DIR/dist is built only when missing. The origins are always this repo's.
 *   --out DIR      where the report goes (default bench/results): ordinary-diff-<cls>-<ev>-
 *                  seed<N>[-tree-<head>]-<date>.json and .md.
 *
 * Every process it starts is a child stopped by PID (also on Ctrl-C). Loopback only.
 */
import { parseArgs } from 'node:util';
import { join, resolve } from 'node:path';
import { setMaxListeners } from 'node:events';
import { pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { makeRandom } from './load.mjs';
import { summarize, fmtMs, fmtPct, fmtInt } from './lib/stats.mjs';
import { stopAll, noteMachineLoad, sleep } from './lib/procs.mjs';
import { BENCH_DIR, REPO_DIR, canPin, pinSelf, relaunchForOneCpu, ONE_CPU_NODE_FLAGS, SUT_CPU, LOADGEN_CPU } from './lib/setups.mjs';
import { parseRange } from './lib/mixed-origin.mjs';
import {
  startListeningNode,
  ensureBuild,
  treeHead,
  parseSetting,
  startShippedGateway,
  startMetricsScraper,
  metricByLabel,
  cacheStatusDetail,
} from './lib/shipped-gateway.mjs';

const SCRAPE_MS = 500;
const FAST_MS = [5, 20];
const SLOW_MS = [2000, 10_000];
const EVENTS = {
  slow: { kind: 'slow', forMs: 6000, factor: 3, text: 'every answer ×3 for 6 s' },
  stall: { kind: 'stall', forMs: 1500, text: 'nothing answered for 1.5 s' },
};
const UPLOAD_BODY = JSON.stringify({ file: 'x'.repeat(512) });
const POST_BODY = JSON.stringify({ qty: 1, note: 'ordinary' });
const KINDS = ['page', 'api', 'post', 'report', 'upload'];

// ---------------------------------------------------------------------------------------------
// The seeded schedule.

/** A 32-bit seed for client `i` of run seed `seed`. */
const clientSeed = (seed, i) => (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0;

/**
 * The run's parameters from the seed: every draw is made whatever is overridden, so one override
 * leaves the rest of a seed's schedule as it was.
 */
function planRun(opts) {
  const rand = makeRandom(opts.seed);
  const draw = {
    clients: 60 + Math.floor(rand() * 31),
    rate: 150 + rand() * 100,
    slowShare: 0.01 + rand() * 0.01,
    postShare: 0.02 + rand() * 0.02,
    evKind: rand() < 0.5 ? 'slow' : 'stall',
    evAtShare: 0.2 + rand() * 0.5,
  };
  const clients = opts.clients ?? draw.clients;
  const rate = opts.rate ?? draw.rate;
  const [pageLo, pageHi] = opts.pageMs;
  const fastMean = 0.5 * ((pageLo + pageHi) / 2) + 0.5 * ((FAST_MS[0] + FAST_MS[1]) / 2);
  const serviceMean = (1 - draw.slowShare) * fastMean + draw.slowShare * ((SLOW_MS[0] + SLOW_MS[1]) / 2);
  const thinkMeanMs = Math.max(20, (clients / rate) * 1000 - serviceMean);
  const evKind = opts.ev === 'random' ? draw.evKind : opts.ev;
  const evAtMs = evKind === 'none' ? undefined : Math.round(opts.evAtS !== undefined ? opts.evAtS * 1000 : draw.evAtShare * opts.durationMs);
  return { draw, clients, rate, slowShare: draw.slowShare, postShare: draw.postShare, pageShare: 0.5, thinkMeanMs, evKind, evAtMs };
}

/** The next request of a client: slow (half GET /report/N, half POST /upload), a fast POST, else half pages, half API reads. */
function pickRequest(rand, plan, id, k) {
  const u = rand();
  const n = 1 + Math.floor(rand() * 10_000);
  const q = `?req=${id}.${k}`;
  if (u < plan.slowShare) {
    if (u < plan.slowShare / 2) return { kind: 'report', method: 'GET', path: `/report/${n}${q}` };
    return { kind: 'upload', method: 'POST', path: `/upload${q}`, body: UPLOAD_BODY };
  }
  if (u < plan.slowShare + plan.postShare) return { kind: 'post', method: 'POST', path: `/api/item/${n}${q}`, body: POST_BODY };
  if (rand() < plan.pageShare) return { kind: 'page', method: 'GET', path: `/page/${n}${q}` };
  return { kind: 'api', method: 'GET', path: `/api/item/${n}${q}` };
}

// ---------------------------------------------------------------------------------------------
// The load: pairs of identical requests.

/** One request to one side; never throws. */
async function send(pool, r, signal) {
  const start = performance.now();
  try {
    const res = await pool.request({
      path: r.path,
      method: r.method,
      headers: r.body ? { 'content-type': 'application/json', accept: 'application/json' } : { accept: 'text/html' },
      body: r.body,
      signal,
    });
    await res.body.dump({ limit: 1 << 20 });
    const gwError = res.headers['x-crowdgate-error'];
    const detail = cacheStatusDetail(res.headers['cache-status']);
    return {
      status: res.statusCode,
      ms: performance.now() - start,
      gwError: gwError === undefined ? undefined : String(gwError),
      reason: gwError === undefined ? undefined : (detail && detail !== 'error' ? detail : String(gwError)).replace(/^shed-/, ''),
      originDelay: res.headers['x-origin-delay-ms'] === undefined ? undefined : Number(res.headers['x-origin-delay-ms']),
    };
  } catch (err) {
    return { ms: performance.now() - start, error: signal.aborted ? 'cut' : String(err?.code ?? err?.name ?? 'error') };
  }
}

/**
 * Runs the plan's clients against both sides from `t0` (performance.now() at a whole wall-clock
 * second) for `durationMs` or `maxRequests` pairs, then waits up to `drainMs` and cuts the rest.
 * Returns every pair.
 */
async function runPairs({ gatewayUrl, directUrl, plan, opts, t0 }) {
  const poolOpts = { connections: plan.clients, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: 60_000, bodyTimeout: 60_000 };
  const pools = { gateway: new Pool(gatewayUrl, poolOpts), direct: new Pool(directUrl, poolOpts) };
  const cut = new AbortController();
  setMaxListeners(2 * plan.clients + 16, cut.signal);
  const pairs = [];
  let sent = 0;
  const endAt = t0 + opts.durationMs;

  async function client(id) {
    const rand = makeRandom(clientSeed(opts.seed, id));
    const thinkMean = plan.thinkMeanMs * (0.5 + rand());
    const startOffset = rand() * opts.spreadMs;
    const wait = t0 + startOffset - performance.now();
    if (wait > 0) await sleep(wait);
    for (let k = 0; performance.now() < endAt && sent < opts.maxRequests; k++) {
      const r = pickRequest(rand, plan, id, k);
      const think = Math.min(4 * thinkMean, -Math.log(1 - rand()) * thinkMean);
      sent++;
      const at = performance.now() - t0;
      // Alternate which side's request is written first, so neither is always second.
      const first = (id + k) % 2 === 0 ? 'gateway' : 'direct';
      const second = first === 'gateway' ? 'direct' : 'gateway';
      const p1 = send(pools[first], r, cut.signal);
      const p2 = send(pools[second], r, cut.signal);
      const [a, b] = await Promise.all([p1, p2]);
      const pair = { at, client: id, k, kind: r.kind, method: r.method, path: r.path, [first]: a, [second]: b };
      pairs.push(pair);
      if (cut.signal.aborted) return;
      const left = endAt - performance.now();
      if (left > 0) await sleep(Math.min(think, left));
    }
  }

  const all = Promise.all(Array.from({ length: plan.clients }, (_, i) => client(i)));
  await sleep(Math.max(0, endAt - performance.now()));
  const drained = await Promise.race([all.then(() => true), sleep(opts.drainMs).then(() => false)]);
  if (!drained) {
    cut.abort();
    await all;
  }
  await Promise.all([pools.gateway.destroy(), pools.direct.destroy()]);
  return { pairs, drainedAll: drained, sent };
}

// ---------------------------------------------------------------------------------------------
// The judge.

const isOk = (x) => x.status !== undefined && x.status < 500 && x.gwError === undefined;
const bump = (o, k, n = 1) => (o[k] = (o[k] ?? 0) + n);

/** Classifies every pair and sums them up. */
function judge(pairs, seconds) {
  const sides = {};
  for (const side of ['gateway', 'direct'])
    sides[side] = { sent: pairs.length, statuses: {}, gatewayMade: 0, gatewayMadeReasons: {}, errors: {}, cut: 0 };
  const out = {
    pairs: pairs.length,
    bothOk: 0,
    refused: 0, // headline: gateway-made, direct succeeded
    refusedReasons: {},
    refusedByKind: {},
    refusedByStatus: {},
    otherUnexcused: 0, // gateway 5xx without the header, or a transport error; direct succeeded
    otherUnexcusedWhat: {},
    directFailedGatewayOk: 0,
    bothFailed: 0,
    cutPairs: 0,
    delayCompared: 0,
    delayMismatch: 0,
    refusedSamples: [],
  };
  const perSecond = Array.from({ length: seconds }, () => ({ pairs: 0, refused: 0, reasons: {}, other: 0, directFailed: 0, gwPage: [], directPage: [] }));
  const lat = Object.fromEntries(KINDS.map((k) => [k, { gateway: [], direct: [], paired: [] }]));
  for (const p of pairs) {
    const sec = perSecond[Math.min(seconds - 1, Math.floor(p.at / 1000))];
    sec.pairs++;
    for (const side of ['gateway', 'direct']) {
      const x = p[side];
      const s = sides[side];
      if (x.error === 'cut') s.cut++;
      else if (x.error) bump(s.errors, x.error);
      else bump(s.statuses, x.status);
      if (x.gwError !== undefined) {
        s.gatewayMade++;
        bump(s.gatewayMadeReasons, x.reason);
      }
    }
    const g = p.gateway;
    const d = p.direct;
    if (g.error === 'cut' || d.error === 'cut') {
      out.cutPairs++;
      continue;
    }
    const dOk = d.status !== undefined && d.status < 500;
    if (dOk && g.gwError !== undefined) {
      out.refused++;
      bump(out.refusedReasons, g.reason);
      bump(out.refusedByKind, p.kind);
      bump(out.refusedByStatus, `${g.status} ${g.gwError}`);
      sec.refused++;
      bump(sec.reasons, g.reason);
      if (out.refusedSamples.length < 40)
        out.refusedSamples.push({ at: Number((p.at / 1000).toFixed(3)), kind: p.kind, method: p.method, path: p.path, gateway: g, direct: d });
    } else if (dOk && !isOk(g)) {
      out.otherUnexcused++;
      bump(out.otherUnexcusedWhat, g.error ?? `${g.status}`);
      sec.other++;
    } else if (!dOk && isOk(g)) {
      out.directFailedGatewayOk++;
      sec.directFailed++;
    } else if (!dOk) {
      out.bothFailed++;
      sec.directFailed++;
    } else {
      out.bothOk++;
      const l = lat[p.kind];
      l.gateway.push(g.ms);
      l.direct.push(d.ms);
      l.paired.push(g.ms - d.ms);
      if (p.kind === 'page') {
        sec.gwPage.push(g.ms);
        sec.directPage.push(d.ms);
      }
      if (Number.isFinite(g.originDelay) && Number.isFinite(d.originDelay)) {
        out.delayCompared++;
        if (Math.abs(g.originDelay - d.originDelay) > 0.05) out.delayMismatch++;
      }
    }
  }
  out.sides = sides;
  out.latency = Object.fromEntries(
    Object.entries(lat).map(([k, l]) => [k, { gateway: summarize(l.gateway), direct: summarize(l.direct), paired: summarize(l.paired) }]),
  );
  const fastAll = (side) => ['page', 'api', 'post'].flatMap((k) => lat[k][side]);
  out.latency.fast = { gateway: summarize(fastAll('gateway')), direct: summarize(fastAll('direct')), paired: summarize(fastAll('paired')) };
  out.perSecond = perSecond.map((s) => ({
    pairs: s.pairs,
    refused: s.refused,
    reasons: s.reasons,
    other: s.other,
    directFailed: s.directFailed,
    gwPageP99: summarize(s.gwPage).p99,
    directPageP99: summarize(s.directPage).p99,
  }));
  return out;
}

/** The scraper's samples folded into run seconds: limit (last), in flight and queue (max), CPU share per process. */
function metricsPerSecond(samples, seconds) {
  const ok = samples.filter((s) => !s.error);
  const nearest = (t) => {
    let best;
    for (const s of samples) if (s.cpu && Math.abs(s.t - t) <= SCRAPE_MS / 2000 && (!best || Math.abs(s.t - t) < Math.abs(best.t - t))) best = s;
    return best;
  };
  const rows = [];
  for (let t = 0; t < seconds; t++) {
    const inSec = ok.filter((s) => s.t >= t && s.t < t + 1);
    const max = (k) => (inSec.length ? Math.max(...inSec.map((s) => s[k]).filter(Number.isFinite)) : NaN);
    const a = nearest(t);
    const b = nearest(t + 1);
    const cpu = {};
    if (a && b && b.t > a.t) for (const k of Object.keys(a.cpu)) cpu[k] = Number.isFinite(a.cpu[k]) && Number.isFinite(b.cpu[k]) ? (b.cpu[k] - a.cpu[k]) / (b.t - a.t) : NaN;
    rows.push({ limit: inSec.at(-1)?.limit ?? NaN, limitMin: inSec.length ? Math.min(...inSec.map((s) => s.limit)) : NaN, inflightMax: max('inflight'), queueMax: max('queue'), cpu });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// The report.

const reasonsText = (o) =>
  Object.entries(o)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${fmtInt(n)}`)
    .join(', ') || '—';
const fmtLim = (n) => (Number.isFinite(n) ? (Number.isInteger(n) ? String(n) : n.toFixed(1)) : '—');
const fmtCpu = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)}` : '—');
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '—');
const msRound = (x) => (Number.isFinite(x) ? String(Math.round(x)) : '—');

function summaryLine(meta, j) {
  const pages = j.latency.page;
  const direct = j.sides.direct;
  const directFailures = Object.values(direct.errors).reduce((a, b) => a + b, 0) + Object.entries(direct.statuses).filter(([s]) => Number(s) >= 500).reduce((a, [, n]) => a + n, 0);
  const reasons = Object.keys(j.refusedReasons).length ? ` (${reasonsText(j.refusedReasons)})` : '';
  const other = j.otherUnexcused ? `, other unexcused ${j.otherUnexcused} (${reasonsText(j.otherUnexcusedWhat)})` : '';
  return (
    `${meta.cls} seed ${meta.seed} ev ${meta.plan.evKind}${meta.plan.evAtMs !== undefined ? `@${(meta.plan.evAtMs / 1000).toFixed(1)}s` : ''}: ` +
    `gateway-made refusals ${j.refused}${reasons}${other}, direct failures ${directFailures}, ` +
    `pages p99 ${msRound(pages.gateway.p99)} ms vs ${msRound(pages.direct.p99)} ms direct`
  );
}

function toMarkdown(meta, j, perSec, origins, shedTotals) {
  const p = meta.plan;
  const L = [];
  L.push(`# Ordinary-day differential — ${meta.cls}, event ${p.evKind}, seed ${meta.seed} — ${meta.date}`, '');
  L.push(
    `${machineSentence(meta)} Two identical origins (bench/lib/mixed-origin.mjs, unlimited workers, \`private, no-store\`, delays seeded per request by --delay-seed ${meta.seed}): ` +
      `pages ${meta.pageMs.join('–')} ms, API ${FAST_MS.join('–')} ms, slow (/report/N, POST /upload) ${SLOW_MS.join('–')} ms. ` +
      `One behind crowdgate (shipped config/gateway.yaml of \`${meta.tree}\` at ${meta.gatewayHead}, build ${meta.gatewayBuild}; ports, loopback host, origin URL, logging changed` +
      `${meta.settings.length ? `; and ${meta.settings.map((x) => `\`${x.text}\``).join(', ')}` : ''}), one reached directly. ` +
      `Load: ${p.clients} closed-loop clients${meta.clientsOverridden ? ' (--clients)' : ' (seeded)'}, target ${fmtInt(p.rate)} req/s per side, think time exponential with a per-client mean around ${fmtInt(p.thinkMeanMs)} ms, ` +
      `${fmtPct(p.slowShare)} slow, ${fmtPct(p.postShare)} fast POSTs, the rest half pages, half API reads; each request sent to both sides at once, the client waits for both. ` +
      `${meta.spreadMs > 0 ? `First requests spread over ${meta.spreadMs} ms.` : 'All clients send their first request at t = 0.'} ` +
      `Event: ${p.evKind === 'none' ? 'none' : `${p.evKind} (${EVENTS[p.evKind].text}) at ${(p.evAtMs / 1000).toFixed(1)} s, on both origins at the same wall-clock moment`}. ` +
      `${meta.durationMs / 1000} s (≤ ${fmtInt(meta.maxRequests)} pairs), then up to ${meta.drainMs / 1000} s to drain${meta.drainedAll ? '' : ' (some cut)'}. ` +
      `Pinning: ${meta.pinning ? `gateway and both origins on CPU ${SUT_CPU}, load generator on CPU ${LOADGEN_CPU} (${ONE_CPU_NODE_FLAGS.join(' ')})` : 'none'}. ` +
      `Command: \`${meta.command}\``,
    '',
  );
  L.push('## Verdict', '');
  L.push(
    `- **Gateway-made refusals where the direct side succeeded: ${fmtInt(j.refused)}** of ${fmtInt(j.pairs)} pairs (${fmtPct(j.pairs ? j.refused / j.pairs : 0)}; ${fmtInt(j.pairs / (meta.durationMs / 1000))} pairs/s sent)` +
      (j.refused ? `; by reason: ${reasonsText(j.refusedReasons)}; by kind: ${reasonsText(j.refusedByKind)}; by status: ${reasonsText(j.refusedByStatus)}` : ''),
    `- Other unexcused failures (gateway 5xx without X-Crowdgate-Error, or a transport error, direct succeeded): ${fmtInt(j.otherUnexcused)}${j.otherUnexcused ? ` (${reasonsText(j.otherUnexcusedWhat)})` : ''}`,
    `- Direct side failed: ${fmtInt(j.directFailedGatewayOk + j.bothFailed)} (gateway fine on ${fmtInt(j.directFailedGatewayOk)}, both failed ${fmtInt(j.bothFailed)}); pairs cut at the end of the drain: ${fmtInt(j.cutPairs)}`,
    `- Same origin delay on both sides: ${fmtInt(j.delayCompared - j.delayMismatch)} of ${fmtInt(j.delayCompared)} pairs answered on both sides${j.delayMismatch ? ` (${fmtInt(j.delayMismatch)} differ: requests arriving on either side of an event's edge)` : ''}`,
    '',
  );
  L.push('## Totals per side', '');
  L.push('| side | pairs sent | statuses | gateway-made (X-Crowdgate-Error) | transport errors | cut at end | origin requests (fast / slow / health) | origin peak in flight (fast / slow) |');
  L.push('|---|---:|---|---|---|---:|---|---|');
  for (const side of ['gateway', 'direct']) {
    const s = j.sides[side];
    const o = origins[side];
    L.push(
      `| ${side} | ${fmtInt(s.sent)} | ${Object.entries(s.statuses).map(([k, n]) => `${k}: ${fmtInt(n)}`).join(', ') || '—'} | ${fmtInt(s.gatewayMade)}${s.gatewayMade ? ` (${reasonsText(s.gatewayMadeReasons)})` : ''} | ` +
        `${reasonsText(s.errors)} | ${fmtInt(s.cut)} | ${o ? `${fmtInt(o.byClass.fast)} / ${fmtInt(o.byClass.slow)} / ${fmtInt(o.byClass.health)}` : '—'} | ${o ? `${o.peakInflight} (${o.peakInflightFast} / ${o.peakInflightSlow})` : '—'} |`,
    );
  }
  L.push('', `crowdgate_shed_total at the end: ${reasonsText(shedTotals)}.`, '');
  L.push('## Latency of pairs answered on both sides (ms)', '');
  L.push('| kind | n | gateway p50 / p99 | direct p50 / p99 | ratio p50 / p99 | paired gateway − direct p50 / p99 |');
  L.push('|---|---:|---:|---:|---:|---:|');
  for (const k of ['page', 'api', 'post', 'fast', 'report', 'upload']) {
    const l = j.latency[k];
    if (!l.gateway.n) continue;
    L.push(
      `| ${k === 'fast' ? '**all fast**' : k} | ${fmtInt(l.gateway.n)} | ${fmtMs(l.gateway.p50)} / ${fmtMs(l.gateway.p99)} | ${fmtMs(l.direct.p50)} / ${fmtMs(l.direct.p99)} | ` +
        `${ratio(l.gateway.p50, l.direct.p50)} / ${ratio(l.gateway.p99, l.direct.p99)} | ${fmtMs(l.paired.p50)} / ${fmtMs(l.paired.p99)} |`,
    );
  }
  L.push('', '## Per second of the run', '');
  L.push(
    'refused: gateway-made refusals where the direct side succeeded, by the second the pair was sent; limit (last sample of the second; min if lower) / in flight (max) / queued (max) from admin /metrics; ' +
      'origin peak in flight per wall-clock second (the run starts on a whole second); CPU % of one CPU: gateway, its origin, the direct origin.',
    '',
  );
  L.push('| s | pairs | refused | reasons | other | direct failed | page p99 gw / direct | limit / in flight / queued | origin peak in flight gw / direct | CPU gw / origin / direct | |');
  L.push('|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|');
  const evFrom = p.evAtMs !== undefined ? p.evAtMs / 1000 : Infinity;
  const evTo = p.evAtMs !== undefined ? (p.evAtMs + EVENTS[p.evKind].forMs) / 1000 : -Infinity;
  for (let t = 0; t < j.perSecond.length; t++) {
    const s = j.perSecond[t];
    const m = perSec[t] ?? {};
    const lim = Number.isFinite(m.limitMin) && m.limitMin < m.limit ? `${fmtLim(m.limit)} (min ${fmtLim(m.limitMin)})` : fmtLim(m.limit);
    const sec = String(Math.floor(meta.t0EpochMs / 1000) + t);
    const peak = (side) => origins[side]?.perSecond?.[sec]?.peakInflight ?? 0;
    const ev = t + 1 > evFrom && t < evTo ? p.evKind : '';
    L.push(
      `| ${t} | ${fmtInt(s.pairs)} | ${s.refused ? `**${s.refused}**` : 0} | ${s.refused ? reasonsText(s.reasons) : ''} | ${s.other} | ${s.directFailed} | ${fmtMs(s.gwPageP99)} / ${fmtMs(s.directPageP99)} | ` +
        `${lim} / ${fmtLim(m.inflightMax)} / ${fmtLim(m.queueMax)} | ${peak('gateway')} / ${peak('direct')} | ${fmtCpu(m.cpu?.gateway)} / ${fmtCpu(m.cpu?.originGateway)} / ${fmtCpu(m.cpu?.originDirect)} | ${ev} |`,
    );
  }
  if (j.refusedSamples.length) {
    L.push('', `## Refused requests (the first ${j.refusedSamples.length} judged${j.refused > j.refusedSamples.length ? ` of ${fmtInt(j.refused)}` : ''}, by send time)`, '');
    L.push('| at s | request | gateway | gateway ms | direct | direct ms |');
    L.push('|---:|---|---|---:|---|---:|');
    for (const x of [...j.refusedSamples].sort((a, b) => a.at - b.at))
      L.push(`| ${x.at.toFixed(3)} | ${x.method} ${x.path} | ${x.gateway.status} ${x.gateway.reason} | ${fmtMs(x.gateway.ms)} | ${x.direct.status ?? x.direct.error} | ${fmtMs(x.direct.ms)} |`);
  }
  L.push('', '```', summaryLine(meta, j), '```', '');
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------
// One run, main.

async function startOrigin(label, opts, cpu) {
  return startListeningNode({
    script: join(BENCH_DIR, 'lib', 'mixed-origin.mjs'),
    args: ['--port', '0', '--page-ms', opts.pageMs.join('-'), '--fast-ms', FAST_MS.join('-'), '--slow-ms', SLOW_MS.join('-'), '--delay-seed', String(opts.seed)],
    cpu,
    label,
  });
}

async function postEvents(url, events) {
  const res = await fetch(`${url}/__events`, { method: 'POST', body: JSON.stringify(events), signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`${url}/__events: ${res.status} ${await res.text()}`);
  await res.text();
}

async function runOnce(opts, plan) {
  const cpu = opts.pinning ? SUT_CPU : undefined;
  const label = `ordinary-diff-${opts.seed}`;
  const [originGw, originDirect] = await Promise.all([startOrigin(`${label}-origin-gw`, opts, cpu), startOrigin(`${label}-origin-direct`, opts, cpu)]);
  let gw;
  try {
    gw = await startShippedGateway({ tree: opts.tree, originUrl: originGw.url, settings: opts.settings, cpu, label: 'ordinary-diff', by: 'bench/ordinary-diff.mjs' });
    for (const url of [gw.url, originDirect.url]) {
      const probe = await fetch(`${url}/probe`, { signal: AbortSignal.timeout(5000) }).catch((e) => e);
      if (!(probe instanceof Response) || probe.status !== 200) throw new Error(`${url} does not answer (${probe instanceof Response ? probe.status : probe}); see ${gw.logFile}`);
      await probe.text();
    }
    // Start on the next whole wall-clock second (at least 300 ms away, for the event set-up).
    const t0EpochMs = (Math.floor((Date.now() + 300) / 1000) + 1) * 1000;
    if (plan.evKind !== 'none') {
      const e = EVENTS[plan.evKind];
      const events = [{ kind: e.kind, atMs: t0EpochMs + plan.evAtMs, forMs: e.forMs, ...(e.factor ? { factor: e.factor } : {}) }];
      await Promise.all([postEvents(originGw.url, events), postEvents(originDirect.url, events)]);
    }
    process.stderr.write(
      `  ${opts.cls} seed ${opts.seed}: ${plan.clients} clients, ~${fmtInt(plan.rate)} req/s, event ${plan.evKind}${plan.evAtMs !== undefined ? ` at ${(plan.evAtMs / 1000).toFixed(1)} s` : ''}; gateway ${gw.url} (admin ${gw.adminUrl}), origin ${originGw.url}; direct ${originDirect.url} …\n`,
    );
    await sleep(Math.max(0, t0EpochMs - Date.now()));
    const t0 = performance.now();
    const scraper = startMetricsScraper(gw.adminUrl, t0, { gateway: gw.pid, originGateway: originGw.pid, originDirect: originDirect.pid }, SCRAPE_MS);
    const load = await runPairs({ gatewayUrl: gw.url, directUrl: originDirect.url, plan, opts, t0 });
    const lastMetrics = await scraper.stop();
    const stats = async (o) => (await fetch(`${o.url}/__stats`, { signal: AbortSignal.timeout(5000) })).json();
    const origins = { gateway: await stats(originGw), direct: await stats(originDirect) };
    return { load, t0EpochMs, scraper: scraper.samples, lastMetrics, origins, gatewayLog: gw.logFile, configFile: gw.configFile };
  } finally {
    await gw?.stop();
    await Promise.all([originGw.stop(), originDirect.stop()]);
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string', default: '1' },
      cls: { type: 'string', default: 'ordinary' },
      ev: { type: 'string', default: 'none' },
      'ev-at': { type: 'string' },
      duration: { type: 'string', default: '40' },
      drain: { type: 'string' },
      'max-requests': { type: 'string', default: '100000' },
      'spread-ms': { type: 'string', default: '0' },
      clients: { type: 'string' },
      rate: { type: 'string' },
      'page-ms': { type: 'string', default: '1-30' },
      set: { type: 'string', multiple: true, default: [] },
      tree: { type: 'string', default: REPO_DIR },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
      unpinned: { type: 'boolean', default: false },
    },
  });
  if (values.cls === 'overload') throw new Error('--cls overload is not implemented (see the header comment: it needs its own judge); use --cls ordinary');
  if (values.cls !== 'ordinary') throw new Error(`unknown --cls "${values.cls}" (ordinary)`);
  if (!['none', 'slow', 'stall', 'random'].includes(values.ev)) throw new Error(`unknown --ev "${values.ev}" (none, slow, stall, random)`);
  const opts = {
    cls: values.cls,
    ev: values.ev,
    seed: Number(values.seed),
    durationMs: Number(values.duration) * 1000,
    maxRequests: Number(values['max-requests']),
    spreadMs: Number(values['spread-ms']),
    clients: values.clients === undefined ? undefined : Number(values.clients),
    rate: values.rate === undefined ? undefined : Number(values.rate),
    pageMs: parseRange(values['page-ms']),
    evAtS: values['ev-at'] === undefined ? undefined : Number(values['ev-at']),
    settings: values.set.map(parseSetting),
    tree: resolve(values.tree),
  };
  if (!Number.isInteger(opts.seed)) throw new Error('--seed must be an integer');
  if (!(opts.durationMs >= 1000 && opts.durationMs <= 600_000)) throw new Error('--duration must be in [1, 600] s');
  if (!(Number.isInteger(opts.maxRequests) && opts.maxRequests > 0 && opts.maxRequests <= 10_000_000)) throw new Error('--max-requests must be in 1..10 000 000');
  if (!(opts.spreadMs >= 0 && opts.spreadMs <= opts.durationMs)) throw new Error('--spread-ms must be in [0, duration]');
  if (opts.clients !== undefined && !(Number.isInteger(opts.clients) && opts.clients >= 1 && opts.clients <= 2000)) throw new Error('--clients must be in 1..2000');
  if (opts.rate !== undefined && !(opts.rate > 0 && opts.rate <= 20_000)) throw new Error('--rate must be in (0, 20000] req/s');
  if (opts.evAtS !== undefined && !(opts.evAtS >= 0 && opts.evAtS * 1000 < opts.durationMs)) throw new Error('--ev-at must be within the run');
  const plan = planRun(opts);
  const defaultDrainS = plan.evKind === 'slow' ? (SLOW_MS[1] * EVENTS.slow.factor) / 1000 + 1 : SLOW_MS[1] / 1000 + 1;
  opts.drainMs = Number(values.drain ?? defaultDrainS) * 1000;
  if (!(opts.drainMs >= 0 && opts.drainMs <= 120_000)) throw new Error('--drain must be in [0, 120] s');

  const pinning = !values.unpinned && canPin();
  if (pinning) {
    const code = relaunchForOneCpu();
    if (code !== undefined) return code;
    pinSelf(LOADGEN_CPU);
  }
  opts.pinning = pinning;
  const gatewayBuild = ensureBuild(opts.tree);
  const gatewayHead = treeHead(opts.tree);

  const loadAtStart = noteMachineLoad('start');
  const run = await runOnce(opts, plan);
  const seconds = Math.ceil(opts.durationMs / 1000);
  const j = judge(run.load.pairs, seconds);
  const perSec = metricsPerSecond(run.scraper, seconds);
  const shedTotals = metricByLabel(run.lastMetrics, 'crowdgate_shed_total', 'reason');
  const meta = {
    ...runFacts('ordinary-diff.mjs', loadAtStart),
    ...opts,
    settings: opts.settings,
    plan,
    clientsOverridden: opts.clients !== undefined,
    gatewayBuild,
    gatewayHead,
    t0EpochMs: run.t0EpochMs,
    drainedAll: run.load.drainedAll,
    gatewayLog: run.gatewayLog,
  };
  const md = toMarkdown(meta, j, perSec, run.origins, shedTotals);
  const line = summaryLine(meta, j);
  const { refusedSamples, ...judged } = j;
  const json = {
    meta,
    summary: line,
    pass: j.refused === 0,
    judge: { ...judged, refusedSamples },
    metricsPerSecond: perSec,
    shedTotals,
    originOutcomes: metricByLabel(run.lastMetrics, 'crowdgate_origin_requests_total', 'outcome'),
    origins: run.origins,
    scraper: run.scraper,
  };
  const name = `ordinary-diff-${opts.cls}-${plan.evKind}-seed${opts.seed}${opts.tree !== REPO_DIR ? `-tree-${gatewayHead}` : ''}`;
  writeReport({ dir: values.out, name, date: meta.date, json, md });
  process.stdout.write(`${line}\n`);
  return j.refused > 0 ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let code = 2;
  try {
    code = await main();
  } catch (err) {
    process.stderr.write(`ordinary-diff: ${err?.stack ?? err}\n`);
  } finally {
    await stopAll();
  }
  process.exit(code);
}

export { planRun, judge, summaryLine };
