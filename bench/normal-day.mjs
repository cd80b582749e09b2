/**
 * The normal-day benchmark: on an ordinary day, does crowdgate's own protection refuse healthy
 * traffic?
 *
 * A healthy origin with unlimited capacity (bench/lib/mixed-origin.mjs: most paths answer in
 * 5–20 ms, 2 % of requests go to slow endpoints that take 2–10 s, everything `private, no-store`
 * so every request takes a permit from the origin limiter) behind crowdgate with the SHIPPED
 * defaults: config/gateway.yaml with only the listen/admin ports (free ones picked at run time,
 * listen host 127.0.0.1), the origin URL and logging (access log off, level warn, as the other
 * benches) changed. Adaptive gradient2 limit, queue, CoDel, health checks, ejection, breaker and
 * pressure gate all as shipped.
 *
 * Load: closed-loop virtual clients on one undici Pool (keep-alive, one connection per client),
 * at each level of clients first with 100 ms think time between requests ("think"), then with no
 * think time ("closed"). Clients start spread over the first second. Each level gets a fresh
 * origin and a fresh gateway, sends for `--duration` s (bounded also by `--max-requests`), then
 * waits up to `--drain` s for the requests still on the wire (slow ones) and aborts the rest.
 *
 * Reported per level: requests, fast vs slow, statuses, gateway-made refusals (answers carrying
 * X-Crowdgate-Error, with the reason from Cache-Status detail) of fast and of slow requests,
 * fast p50/p99, and the learned limit over time (admin /metrics scraped every 500 ms:
 * crowdgate_origin_limit, crowdgate_origin_inflight, crowdgate_queue_length). The origin has no
 * capacity limit, so a gateway-made refusal of a fast request at any level is a false refusal:
 * the exit code is 1 (FAIL) when there was one, 0 (PASS) otherwise.
 *
 * Pinning (unless --unpinned, when taskset exists on a box with 2+ CPUs): gateway and origin on
 * CPU 0, this process (the load generator and the metrics scraper) on CPU 1, as flash-crowd.mjs.
 *
 * Usage: node bench/normal-day.mjs [--levels 5,10,25,50,100] [--modes think,closed]
 *          [--duration 15] [--drain 11] [--think-ms 100] [--max-requests 200000]
 *          [--slow-share 0.02] [--cacheable-share 0] [--page-ms 40-80] [--page-share 0.5] [--quick] [--unpinned] [--seed 1]
 *          [--stall-every 0] [--stall-ms 1500] [--set PATH=VALUE ...] [--tree DIR] [--out DIR]
 *   --stall-every S  the origin stalls (answers nothing) for --stall-ms every S s: a database lock
 *                or a GC pause on an ordinary day (bench/lib/mixed-origin.mjs); 0: never.
 *   --set PATH=VALUE  one config setting on top of the shipped file (a dotted path, a YAML value:
 *                `--set admission.limit.slowShare=true`); repeatable.
 *   --tree DIR   run DIR/scripts/crowdgate with DIR/config/gateway.yaml (default: this repo);
 *                DIR/dist is built (npm run build) only when it is missing.
 *   --quick      levels 10,50, duration 6 s.
 *
 * Every process it starts is a child stopped by PID (also on Ctrl-C).
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { makeRandom } from './load.mjs';
import { summarize, median, fmtMs, fmtPct, fmtInt } from './lib/stats.mjs';
import { stopAll, noteMachineLoad, sleep } from './lib/procs.mjs';
import {
  BENCH_DIR,
  REPO_DIR,
  canPin,
  pinSelf,
  relaunchForOneCpu,
  ONE_CPU_NODE_FLAGS,
  SUT_CPU,
  LOADGEN_CPU,
} from './lib/setups.mjs';
import {
  startListeningNode,
  ensureBuild,
  startShippedGateway,
  metricByLabel,
  startMetricsScraper,
  cacheStatusDetail,
  parseSetting,
} from './lib/shipped-gateway.mjs';

const GATEWAY_STATUSES = new Set([429, 502, 503, 504]);
const SCRAPE_MS = 500;

// ---------------------------------------------------------------------------------------------
// The system under test: the mixed origin and crowdgate with the shipped config.

/** Starts bench/lib/mixed-origin.mjs as a child on port 0 and reads the port it printed. */
function startOriginProc({ cacheableShare, pageMs, stallEveryS, stallMs, cpu, label }) {
  const args = ['--port', '0', '--cacheable-share', String(cacheableShare), ...(pageMs ? ['--page-ms', pageMs] : []), ...(stallEveryS > 0 ? ['--stall-every-ms', String(stallEveryS * 1000), '--stall-ms', String(stallMs)] : [])];
  return startListeningNode({ script: join(BENCH_DIR, 'lib', 'mixed-origin.mjs'), args, cpu, label });
}

// ---------------------------------------------------------------------------------------------
// The load: closed-loop clients.


const UPLOAD_BODY = JSON.stringify({ file: 'x'.repeat(512) });

/** One request of the mix: 2 % slow (half GET /report/N, half POST /upload), else `pageShare` (half) pages, the rest API. */
function pickRequest(rand, slowShare, pageShare) {
  const u = rand();
  if (u < slowShare) {
    if (u < slowShare / 2) return { cls: 'slow', kind: 'report', method: 'GET', path: `/report/${1 + Math.floor(rand() * 1e6)}` };
    return { cls: 'slow', kind: 'upload', method: 'POST', path: '/upload', body: UPLOAD_BODY };
  }
  if (rand() < pageShare) return { cls: 'fast', kind: 'page', method: 'GET', path: `/page/${1 + Math.floor(rand() * 10_000)}` };
  return { cls: 'fast', kind: 'api', method: 'GET', path: `/api/item/${1 + Math.floor(rand() * 10_000)}` };
}

function newClassStats() {
  return { sent: 0, answered: 0, ok: 0, statuses: {}, gatewayRefused: 0, refusedReasons: {}, otherGatewayErrors: {}, errors: {}, cut: 0, latency: [], overhead: [], cacheStatus: {} };
}

/**
 * Runs `clients` closed-loop clients against `target` for `durationMs` (or until `maxRequests`
 * are sent), then waits up to `drainMs` for requests still on the wire and aborts the rest.
 */
async function runClosedLoop({ target, clients, thinkMs, durationMs, drainMs, maxRequests, slowShare, pageShare, seed }) {
  const pool = new Pool(target, {
    connections: clients,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  const cut = new AbortController();
  setMaxListeners(clients + 16, cut.signal); // one listener per request on the wire
  const by = { fast: newClassStats(), slow: newClassStats() };
  const refusalsPerSecond = {}; // t (s) → gateway-made refusals of fast requests started then
  let sent = 0;
  let completedInWindow = 0;
  let fastOkInWindow = 0;
  const t0 = performance.now();
  const endAt = t0 + durationMs;

  async function client(id) {
    const rand = makeRandom(seed * 1000 + id);
    await sleep((id / clients) * Math.min(1000, durationMs / 4)); // spread the start over the first second
    while (performance.now() < endAt && sent < maxRequests) {
      const r = pickRequest(rand, slowShare, pageShare);
      const st = by[r.cls];
      sent++;
      st.sent++;
      const start = performance.now();
      try {
        const res = await pool.request({
          path: r.path,
          method: r.method,
          headers: r.body ? { 'content-type': 'application/json', accept: 'application/json' } : { accept: 'text/html' },
          body: r.body,
          signal: cut.signal,
        });
        await res.body.dump({ limit: 1 << 20 });
        const end = performance.now();
        if (end <= endAt) completedInWindow++;
        st.answered++;
        st.statuses[res.statusCode] = (st.statuses[res.statusCode] ?? 0) + 1;
        const gwError = res.headers['x-crowdgate-error'];
        const detail = cacheStatusDetail(res.headers['cache-status']);
        if (gwError !== undefined) {
          const reason = detail ?? String(gwError);
          if (GATEWAY_STATUSES.has(res.statusCode)) {
            st.gatewayRefused++;
            st.refusedReasons[reason] = (st.refusedReasons[reason] ?? 0) + 1;
            if (r.cls === 'fast') {
              const sec = Math.floor((start - t0) / 1000);
              refusalsPerSecond[sec] = (refusalsPerSecond[sec] ?? 0) + 1;
            }
          } else {
            const k = `${res.statusCode} ${reason}`;
            st.otherGatewayErrors[k] = (st.otherGatewayErrors[k] ?? 0) + 1;
          }
        } else if (res.statusCode >= 200 && res.statusCode < 400) {
          st.ok++;
          if (r.cls === 'fast' && end <= endAt) fastOkInWindow++;
          st.latency.push(end - start);
          const originMs = Number(res.headers['x-origin-delay-ms']);
          if (Number.isFinite(originMs)) st.overhead.push(end - start - originMs);
          const state = String(res.headers['cache-status'] ?? '').split(';')[1]?.trim() ?? 'none';
          st.cacheStatus[state] = (st.cacheStatus[state] ?? 0) + 1;
        }
      } catch (err) {
        if (cut.signal.aborted) st.cut++;
        else {
          const code = err?.code ?? err?.name ?? 'error';
          st.errors[code] = (st.errors[code] ?? 0) + 1;
        }
        if (cut.signal.aborted) return;
      }
      if (thinkMs > 0) {
        const wait = Math.min(thinkMs, endAt - performance.now());
        if (wait > 0) await sleep(wait);
      }
    }
  }

  const all = Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
  await sleep(Math.max(0, endAt - performance.now()));
  const drained = await Promise.race([all.then(() => true), sleep(drainMs).then(() => false)]);
  if (!drained) {
    cut.abort();
    await all;
  }
  const windowEnd = performance.now();
  await pool.destroy();

  const summarizeClass = (st) => {
    const { latency, overhead, ...rest } = st;
    return { ...rest, latency: summarize(latency), overhead: summarize(overhead), refusedShare: st.sent ? st.gatewayRefused / st.sent : 0 };
  };
  return {
    t0,
    sent,
    durationMs,
    drainedMs: windowEnd - endAt,
    drainedAll: drained,
    reqPerSec: completedInWindow / (durationMs / 1000),
    fastOkPerSec: fastOkInWindow / (durationMs / 1000),
    fast: summarizeClass(by.fast),
    slow: summarizeClass(by.slow),
    refusalsPerSecond,
  };
}

// ---------------------------------------------------------------------------------------------
// One level, the report, main.

async function runLevel(level, opts) {
  const cpu = opts.pinning ? SUT_CPU : undefined;
  const label = `normal-day-${level.mode}-${level.clients}`;
  const origin = await startOriginProc({ cacheableShare: opts.cacheableShare, pageMs: opts.pageMs, stallEveryS: opts.stallEveryS, stallMs: opts.stallMs, cpu, label: `${label}-origin` });
  let gw;
  try {
    gw = await startShippedGateway({ tree: opts.tree, originUrl: origin.url, settings: opts.settings, cpu, label: 'normal-day', by: 'bench/normal-day.mjs' });
    const probe = await fetch(`${gw.url}/probe`, { signal: AbortSignal.timeout(5000) }).catch((e) => e);
    if (!(probe instanceof Response) || probe.status !== 200)
      throw new Error(`crowdgate does not answer on ${gw.url} (${probe instanceof Response ? probe.status : probe}); see ${gw.logFile}`);
    await probe.text();
    process.stderr.write(`  ${level.mode} ×${level.clients}: gateway ${gw.url} (admin ${gw.adminUrl}), origin ${origin.url} …\n`);
    const t0 = performance.now();
    const scraper = startMetricsScraper(gw.adminUrl, t0, { gateway: gw.pid, origin: origin.pid }, SCRAPE_MS);
    const load = await runClosedLoop({
      target: gw.url,
      clients: level.clients,
      thinkMs: level.mode === 'think' ? opts.thinkMs : 0,
      durationMs: opts.durationMs,
      drainMs: opts.drainMs,
      maxRequests: opts.maxRequests,
      slowShare: opts.slowShare,
      pageShare: opts.pageShare,
      seed: opts.seed + level.clients * (level.mode === 'think' ? 1 : 7),
    });
    const lastMetrics = await scraper.stop();
    const originStats = await (await fetch(`${origin.url}/__stats`)).json();
    const series = scraper.samples.filter((s) => !s.error);
    const inWindow = series.filter((s) => s.t <= opts.durationMs / 1000);
    const limits = inWindow.map((s) => s.limit).filter(Number.isFinite);
    const firstRefusal = Object.keys(load.refusalsPerSecond).map(Number).sort((a, b) => a - b)[0];
    const cpuUse = cpuPerSecond(series, opts.durationMs / 1000);
    return {
      ...level,
      load,
      limit: { min: Math.min(...limits), median: median(limits), max: Math.max(...limits), final: limits.at(-1) },
      inflightMax: Math.max(...inWindow.map((s) => s.inflight).filter(Number.isFinite)),
      queueMax: Math.max(...inWindow.map((s) => s.queue).filter(Number.isFinite)),
      unhealthySamples: series.filter((s) => s.healthy === 0).length,
      circuitOpenSamples: series.filter((s) => s.circuit === 2).length,
      loopDelayMaxMs: Math.max(...series.map((s) => s.loopDelayMs).filter(Number.isFinite)),
      firstFastRefusalSecond: firstRefusal,
      cpu: cpuUse,
      shedTotals: metricByLabel(lastMetrics, 'crowdgate_shed_total', 'reason'),
      originOutcomes: metricByLabel(lastMetrics, 'crowdgate_origin_requests_total', 'outcome'),
      timeline: scraper.samples,
      origin: {
        heldByStall: originStats.heldByStall,
        byClass: originStats.byClass,
        byRoute: originStats.byRoute,
        cacheableAnswers: originStats.cacheableAnswers,
        peakInflight: originStats.peakInflight,
        peakInflightFast: originStats.peakInflightFast,
        peakInflightSlow: originStats.peakInflightSlow,
      },
      gatewayLog: gw.logFile,
    };
  } finally {
    await gw?.stop();
    await origin.stop();
  }
}

/**
 * The gateway's and the origin's CPU per second of the send window, as a share of one CPU,
 * from the scraper's cumulative readings: `perSecond[t]` covers [t, t + 1) s (undefined where
 * no two readings bracket it, or there is no /proc). Pinned, both share one CPU, so their sum
 * near 100 % is that CPU saturated: the box at its capacity, whatever the origin's concurrency.
 */
function cpuPerSecond(series, seconds) {
  const pts = series.filter((s) => Number.isFinite(s.cpu?.gateway) && Number.isFinite(s.cpu?.origin));
  const at = (t) => {
    // The reading nearest t, within half a scrape.
    let best;
    for (const s of pts) if (Math.abs(s.t - t) <= SCRAPE_MS / 2000 && (!best || Math.abs(s.t - t) < Math.abs(best.t - t))) best = s;
    return best;
  };
  const perSecond = [];
  for (let t = 0; t < seconds; t++) {
    const a = at(t);
    const b = at(t + 1);
    if (!a || !b || b.t <= a.t) {
      perSecond.push(undefined);
      continue;
    }
    const dt = b.t - a.t;
    perSecond.push({ gateway: (b.cpu.gateway - a.cpu.gateway) / dt, origin: (b.cpu.origin - a.cpu.origin) / dt });
  }
  const both = perSecond.filter(Boolean).map((x) => x.gateway + x.origin);
  const gw = perSecond.filter(Boolean).map((x) => x.gateway);
  return {
    perSecond,
    meanBusy: both.length ? both.reduce((x, y) => x + y, 0) / both.length : undefined,
    maxBusy: both.length ? Math.max(...both) : undefined,
    meanGateway: gw.length ? gw.reduce((x, y) => x + y, 0) / gw.length : undefined,
  };
}

/** CPU (gateway + origin) in the seconds a level's fast requests were refused, as a share of one CPU. */
function busyInRefusalSeconds(r) {
  const secs = Object.keys(r.load.refusalsPerSecond).map(Number);
  const vals = secs.map((t) => r.cpu?.perSecond[t]).filter(Boolean).map((x) => x.gateway + x.origin);
  return vals.length ? vals.reduce((x, y) => x + y, 0) / vals.length : undefined;
}

const fmtCpu = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)} %` : '—');

const reasonsText = (o) =>
  Object.entries(o)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${fmtInt(n)}`)
    .join(', ') || '—';

const fmtLim = (n) => (Number.isFinite(n) ? (Number.isInteger(n) ? String(n) : n.toFixed(1)) : '—');

/** The one-row-per-level summary table (also what normal-and-crowd.mjs prints). */
function summaryTable(runs) {
  const L = [];
  L.push('| clients | mode | req/s (fast ok/s) | fast refused by gateway | refusal reasons | fast p50 / p99 ms | limit min / median / max |');
  L.push('|---:|---|---:|---:|---|---:|---:|');
  for (const r of runs) {
    const f = r.load.fast;
    L.push(
      `| ${r.clients} | ${r.mode} | ${fmtInt(r.load.reqPerSec)} (${fmtInt(r.load.fastOkPerSec)}) | ${fmtInt(f.gatewayRefused)} (${fmtPct(f.refusedShare)}) | ${reasonsText(f.refusedReasons)} | ` +
        `${fmtMs(f.latency.p50)} / ${fmtMs(f.latency.p99)} | ${fmtLim(r.limit.min)} / ${fmtLim(r.limit.median)} / ${fmtLim(r.limit.max)} |`,
    );
  }
  return L;
}

function verdict(runs) {
  const bad = runs.filter((r) => r.load.fast.gatewayRefused > 0);
  if (bad.length === 0) return { pass: true, line: 'PASS normal-day: no gateway-made refusal of a fast request at any level (the origin has unlimited capacity)' };
  const total = bad.reduce((s, r) => s + r.load.fast.gatewayRefused, 0);
  return {
    pass: false,
    line:
      `FAIL normal-day: the gateway refused ${fmtInt(total)} fast request(s) of a healthy origin with unlimited capacity, at ${bad.length} of ${runs.length} level(s): ` +
      bad.map((r) => `${r.mode} ×${r.clients}${Number.isFinite(busyInRefusalSeconds(r)) ? ` (CPU gateway + origin ${fmtCpu(busyInRefusalSeconds(r))} in its refusal seconds)` : ''}`).join(', '),
  };
}

function toMarkdown(meta, runs, failed) {
  const L = [];
  L.push(`# Normal day — ${meta.date}`, '');
  L.push(
    `${machineSentence(meta)} Origin: unlimited capacity, fast paths (/page/N, /api/item/N) ${meta.fastMs} ms uniform${meta.pageMs ? ` (pages ${meta.pageMs} ms)` : ''}, ${fmtPct(meta.pageShare ?? 0.5)} of them pages, ` +
      `${fmtPct(meta.slowShare)} slow (/report/N, POST /upload) ${meta.slowMs} ms uniform, \`private, no-store\`` +
      `${meta.cacheableShare > 0 ? ` (${fmtPct(meta.cacheableShare)} of pages max-age=5)` : ''}` +
      `${meta.stallEveryS > 0 ? `; it stalls (answers nothing) for ${fmtInt(meta.stallMs)} ms every ${meta.stallEveryS} s` : ''}. ` +
      `crowdgate: shipped config/gateway.yaml of \`${meta.tree}\` (ports, loopback host, origin URL, logging changed${meta.settings?.length ? `; and ${meta.settings.map((x) => `\`${x.text}\``).join(', ')}` : ''}); build ${meta.gatewayBuild}; ` +
      `a fresh origin and gateway per level. Load: closed-loop clients, one keep-alive connection each, "think" = ${meta.thinkMs} ms between requests, ` +
      `"closed" = none; ${meta.durationMs / 1000} s per level (≤ ${fmtInt(meta.maxRequests)} requests), then up to ${meta.drainMs / 1000} s to drain. ` +
      `Pinning: ${meta.pinning ? `gateway and origin on CPU ${SUT_CPU}, load generator on CPU ${LOADGEN_CPU} (${ONE_CPU_NODE_FLAGS.join(' ')})` : 'none'}. ` +
      `Command: \`${meta.command}\``,
    '',
  );
  L.push(...summaryTable(runs), '');
  L.push('"fast refused by gateway": answers to fast requests carrying `X-Crowdgate-Error` with status 429/502/503/504, reason from `Cache-Status` detail. ' +
    'The limit is `crowdgate_origin_limit` scraped every 500 ms during the send window.', '');
  L.push('## Details', '');
  L.push('| clients | mode | sent (fast / slow) | fast statuses | slow statuses | slow refused by gateway | fast gateway overhead p50 / p99 ms | errors / cut at end | first fast refusal at s | origin peak in flight (fast / slow) | gateway inflight max / queue max | shed_total at end | unhealthy / circuit-open samples | loop delay max ms | CPU gateway + origin: mean (gateway) / busiest second / refusal seconds |');
  L.push('|---:|---|---:|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---|');
  for (const r of runs) {
    const f = r.load.fast;
    const s = r.load.slow;
    const statuses = (o) => Object.entries(o).map(([k, n]) => `${k}: ${fmtInt(n)}`).join(', ') || '—';
    const errs = { ...f.errors, ...Object.fromEntries(Object.entries(s.errors).map(([k, n]) => [`slow ${k}`, n])) };
    L.push(
      `| ${r.clients} | ${r.mode} | ${fmtInt(r.load.sent)} (${fmtInt(f.sent)} / ${fmtInt(s.sent)}) | ${statuses(f.statuses)} | ${statuses(s.statuses)} | ` +
        `${fmtInt(s.gatewayRefused)} (${fmtPct(s.refusedShare)})${s.gatewayRefused ? `: ${reasonsText(s.refusedReasons)}` : ''} | ` +
        `${fmtMs(f.overhead.p50)} / ${fmtMs(f.overhead.p99)} | ${reasonsText(errs)} / ${f.cut + s.cut} | ${r.firstFastRefusalSecond ?? '—'} | ` +
        `${r.origin.peakInflight} (${r.origin.peakInflightFast} / ${r.origin.peakInflightSlow}) | ${fmtLim(r.inflightMax)} / ${fmtLim(r.queueMax)} | ${reasonsText(r.shedTotals)} | ` +
        `${r.unhealthySamples} / ${r.circuitOpenSamples} | ${fmtMs(r.loopDelayMaxMs)} | ` +
        `${fmtCpu(r.cpu?.meanBusy)} (${fmtCpu(r.cpu?.meanGateway)}) / ${fmtCpu(r.cpu?.maxBusy)} / ${fmtCpu(busyInRefusalSeconds(r))} |`,
    );
  }
  for (const x of failed) L.push(`| ${x.clients} | ${x.mode} | failed: ${x.reason} |||||||||||||`);
  L.push(
    '',
    'CPU: the gateway\'s and the origin\'s user + system time (/proc) per second of the send window, as a share of one CPU. ' +
      'Pinned, the two share one CPU: near 100 % that CPU is saturated and the box is at its capacity, whatever the origin\'s own concurrency.',
  );
  L.push('', '## Learned limit over time (one sample per second: limit / in flight / queued, CPU gateway + origin)', '');
  for (const r of runs) {
    const ok = r.timeline.filter((s) => !s.error);
    const perSec = [];
    for (let t = 0; t < meta.durationMs / 1000; t++) {
      let best;
      for (const s of ok) if (Math.abs(s.t - t) < 0.5 && (!best || Math.abs(s.t - t) < Math.abs(best.t - t))) best = s;
      const c = r.cpu?.perSecond[t];
      perSec.push((best ? `${fmtLim(best.limit)}/${fmtLim(best.inflight)}/${fmtLim(best.queue)}` : '?') + (c ? ` ${Math.round((c.gateway + c.origin) * 100)}%` : ''));
    }
    L.push(`- ${r.mode} ×${r.clients}: ${perSec.join(' ')}`);
  }
  L.push('', '## Gateway refusals of fast requests per second of the run', '');
  for (const r of runs) {
    const secs = Object.entries(r.load.refusalsPerSecond).map(([t, n]) => `${t}s:${n}`).join(' ');
    L.push(`- ${r.mode} ×${r.clients}: ${secs || 'none'}`);
  }
  const v = verdict(runs);
  L.push('', '```', v.line, ...(failed.length ? [`FAIL normal-day: ${failed.length} level(s) did not run`] : []), '```', '');
  return L.join('\n');
}

function parseList(s) {
  return s.split(',').map((x) => x.trim()).filter(Boolean);
}

async function main() {
  const { values } = parseArgs({
    options: {
      levels: { type: 'string' },
      modes: { type: 'string', default: 'think,closed' },
      duration: { type: 'string' },
      drain: { type: 'string', default: '11' },
      'think-ms': { type: 'string', default: '100' },
      'max-requests': { type: 'string', default: '200000' },
      'slow-share': { type: 'string', default: '0.02' },
      'cacheable-share': { type: 'string', default: '0' },
      'page-ms': { type: 'string' },
      'page-share': { type: 'string', default: '0.5' },
      'stall-every': { type: 'string', default: '0' },
      'stall-ms': { type: 'string', default: '1500' },
      set: { type: 'string', multiple: true, default: [] },
      seed: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      unpinned: { type: 'boolean', default: false },
      tree: { type: 'string', default: REPO_DIR },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  const levels = parseList(values.levels ?? (values.quick ? '10,50' : '5,10,25,50,100')).map(Number);
  const modes = parseList(values.modes);
  for (const m of modes) if (m !== 'think' && m !== 'closed') throw new Error(`unknown mode "${m}" (think, closed)`);
  for (const n of levels) if (!(Number.isInteger(n) && n > 0 && n <= 2000)) throw new Error(`bad level "${n}" (1..2000 clients)`);
  const opts = {
    tree: values.tree,
    durationMs: Number(values.duration ?? (values.quick ? 6 : 15)) * 1000,
    drainMs: Number(values.drain) * 1000,
    thinkMs: Number(values['think-ms']),
    maxRequests: Number(values['max-requests']),
    slowShare: Number(values['slow-share']),
    cacheableShare: Number(values['cacheable-share']),
    pageMs: values['page-ms'],
    pageShare: Number(values['page-share']),
    seed: Number(values.seed),
    stallEveryS: Number(values['stall-every']),
    stallMs: Number(values['stall-ms']),
    settings: values.set.map(parseSetting),
  };
  if (!(opts.stallEveryS >= 0 && opts.stallMs >= 0 && (opts.stallEveryS === 0 || opts.stallMs <= opts.stallEveryS * 1000)))
    throw new Error('--stall-every (s) and --stall-ms are >= 0, the stall no longer than the period');
  if (!(opts.durationMs > 0 && opts.durationMs <= 600_000)) throw new Error('--duration must be in (0, 600] s');
  if (!(opts.drainMs >= 0 && opts.drainMs <= 60_000)) throw new Error('--drain must be in [0, 60] s');
  if (!(opts.maxRequests > 0)) throw new Error('--max-requests must be > 0');
  if (![opts.slowShare, opts.cacheableShare, opts.pageShare].every((x) => x >= 0 && x <= 1))
    throw new Error('--slow-share, --cacheable-share and --page-share must be between 0 and 1');

  const pinning = !values.unpinned && canPin();
  if (pinning) {
    const code = relaunchForOneCpu();
    if (code !== undefined) process.exit(code);
    pinSelf(LOADGEN_CPU);
  }
  opts.pinning = pinning;
  const gatewayBuild = ensureBuild(opts.tree);

  const loadAtStart = noteMachineLoad('start');
  const runs = [];
  const failed = [];
  for (const mode of modes)
    for (const clients of levels) {
      try {
        runs.push(await runLevel({ mode, clients }, opts));
        const r = runs.at(-1);
        process.stderr.write(
          `    ${fmtInt(r.load.sent)} sent, ${fmtInt(r.load.reqPerSec)} req/s, fast refused by gateway ${fmtInt(r.load.fast.gatewayRefused)} (${reasonsText(r.load.fast.refusedReasons)}), limit ${fmtLim(r.limit.min)}–${fmtLim(r.limit.max)}, CPU gateway + origin ${fmtCpu(r.cpu?.meanBusy)} (busiest second ${fmtCpu(r.cpu?.maxBusy)})\n`,
        );
      } catch (err) {
        failed.push({ mode, clients, reason: String(err?.message ?? err) });
        process.stderr.write(`  ${mode} ×${clients}: failed: ${err?.stack ?? err}\n`);
      }
      await sleep(500);
    }

  const meta = {
    ...runFacts('normal-day.mjs', loadAtStart),
    tree: opts.tree,
    gatewayBuild,
    gatewayHead: spawnSync('git', ['-C', opts.tree, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout?.trim() || 'unknown',
    levels,
    modes,
    fastMs: '5–20',
    slowMs: '2 000–10 000',
    ...opts,
  };
  const md = toMarkdown(meta, runs, failed);
  const v = verdict(runs);
  const json = { meta, verdict: v, failed, runs };
  writeReport({ dir: values.out, name: `normal-day${values.quick ? '-quick' : ''}`, date: meta.date, json, md });
  process.stderr.write(`${v.line}\n`);
  return v.pass && failed.length === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let code = 1;
  try {
    code = await main();
  } finally {
    await stopAll();
  }
  process.exit(code);
}

export { summaryTable, verdict };
