/**
 * The flash-crowd benchmark: the same open-loop crowd (bench/load.mjs) against several setups,
 * side by side, in one invocation, each with a fresh fragile origin (bench/fragile-origin.mjs):
 *
 *   direct           the origin alone
 *   crowdgate        crowdgate with its default (adaptive) configuration
 *   crowdgate-fixed  crowdgate with a fixed origin limit of 8 (= C)
 *   nginx            nginx proxy_cache + proxy_cache_lock + use_stale updating   (when installed)
 *   varnish          Varnish, built-in VCL + 60 s grace                          (when installed)
 *   standin          a bare Node proxy, no cache (only with --only standin)
 *
 * It reports per setup the client side (success by kind, latency percentiles of successes,
 * refused latency and Retry-After presence) and the origin side (peak in service and peak
 * concurrent = in service + backlog, total requests, 503s, resets, busy fraction over the hold
 * period, fetches per TTL of the hottest pages), a per-second goodput table, and PASS/FAIL
 * lines against the targets for the crowdgate rows. Writes JSON and Markdown to bench/results/.
 *
 * Pinning (unless --unpinned, and when `taskset` exists on a box with 2+ CPUs): the side under
 * test — the setup (gateway, nginx or Varnish) and the origin behind it, or the origin alone
 * for `direct` — on CPU 0; this process, whose worker thread is the load generator, on CPU 1.
 * The crowd's machines are not the gateway's: sharing its core, the generator preempts it
 * (thousands of involuntary context switches a run) and its jitter lands in the latencies.
 *
 * Usage: node bench/flash-crowd.mjs [--multiplier 20|50] [--duration 20] [--ramp 5]
 *          [--only crowdgate,direct] [--quick] [--workers 1] [--connections 1024] [--unpinned]
 *
 * It does not start anything it cannot stop: every process is a child stopped by PID.
 */
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { runLoad, KINDS } from './load.mjs';
import { pageTtlSeconds } from './fragile-origin.mjs';
import { fmtMs, fmtPct, fmtInt } from './lib/stats.mjs';
import {
  BENCH_DIR,
  startOrigin,
  startCrowdgate,
  startNginx,
  startVarnish,
  startStandin,
  gatewayAvailable,
  gatewayBuildState,
  hasCommand,
  canPin,
  pinSelf,
  relaunchForOneCpu,
  ONE_CPU_NODE_FLAGS,
  SUT_CPU,
  LOADGEN_CPU,
  fetchText,
  sleep,
} from './lib/setups.mjs';
import { stopAll, noteMachineLoad, processCpuSeconds } from './lib/procs.mjs';

/** Number of hottest pages (Zipf ranks 1..HOT_PAGES) whose fetches per TTL are reported. */
const HOT_PAGES = 5;

/** crowdgate-fixed's origin limit: the fragile origin's default C. */
const FIXED_CEILING = 8;

/**
 * The setups this benchmark knows, in run order. `cpu`: where to pin the setup, if anywhere.
 * @type {Record<string, { available: () => string | true, start: (originUrl: string, cpu?: string) => Promise<import('./lib/setups.mjs').Running | undefined> }>}
 */
const SETUPS = {
  direct: { available: () => true, start: async () => undefined },
  crowdgate: {
    available: gatewayAvailable,
    start: (originUrl, cpu) => startCrowdgate({ originUrl, label: 'crowdgate', cpu }),
  },
  'crowdgate-fixed': {
    available: gatewayAvailable,
    start: (originUrl, cpu) =>
      startCrowdgate({
        originUrl,
        cpu,
        label: 'crowdgate-fixed',
        admission: { limit: { algorithm: 'fixed', initial: FIXED_CEILING, ceiling: FIXED_CEILING } },
      }),
  },
  nginx: { available: () => hasCommand('nginx') || 'nginx not installed', start: (originUrl, cpu) => startNginx({ originUrl, cpu }) },
  varnish: {
    available: () => hasCommand('varnishd') || 'varnishd not installed',
    start: (originUrl, cpu) => startVarnish({ originUrl, cpu }),
  },
  standin: { available: () => true, start: (originUrl, cpu) => startStandin({ originUrl, cpu }) },
};
const DEFAULT_SETUPS = ['direct', 'crowdgate', 'crowdgate-fixed', 'nginx', 'varnish'];

/**
 * Figures from the origin's own counters for one run.
 * Busy fraction over the hold = Σ busy area (request·ms) over the whole seconds inside the hold
 * period / (seconds × 1000 ms × C): the average share of the C slots in use.
 * Fetches per TTL of a hot page = fetches / (D / TTL), D = ramp + hold in s; the ideal for a
 * shared cache with continuous demand is ceil(D / TTL) fetches (one at start, one per expiry),
 * so `vsIdeal` = fetches / ceil(D / TTL) is the figure judged against ≤ 1.05.
 */
function originFigures(stats, load) {
  const C = stats.concurrency;
  const holdFrom = Math.ceil(load.rampEndAt / 1000);
  const holdTo = Math.floor(load.endAt / 1000); // exclusive
  let busy = 0;
  let secs = 0;
  for (let s = holdFrom; s < holdTo; s++) {
    busy += stats.perSecond[s]?.busyMs ?? 0;
    secs++;
  }
  const D = (load.options.rampMs + load.options.holdMs) / 1000;
  const hot = [];
  for (let n = 1; n <= HOT_PAGES; n++) {
    const ttl = pageTtlSeconds(n);
    const fetches = stats.fetchesByPath[`/page/${n}`] ?? 0;
    hot.push({ page: n, ttl, fetches, perTtl: fetches / (D / ttl), ideal: Math.ceil(D / ttl), vsIdeal: fetches / Math.ceil(D / ttl) });
  }
  const firstSecond = Math.floor(load.startAt / 1000);
  const perSecond = Object.entries(stats.perSecond)
    .map(([s, r]) => ({ t: Number(s) - firstSecond, fetches: r.fetches, busy: r.busyMs / (1000 * C), peakConcurrent: r.peakConcurrent, status503: r.status503, resets: r.resets }))
    .filter((r) => r.t >= 0);
  return {
    concurrency: C,
    serviceMs: stats.serviceMs,
    requests: stats.requests,
    peakInflight: stats.peakInflight,
    peakConcurrent: stats.peakConcurrent,
    peakBacklog: stats.peakBacklog,
    status503: stats.status503,
    resets: stats.resets,
    busyFractionHold: secs ? busy / (secs * 1000 * C) : NaN,
    hotPages: hot,
    perSecond,
  };
}

/** Runs one setup against a fresh origin; returns its figures (or why it was skipped). */
async function runSetup(name, opts) {
  const cpu = opts.pinning ? SUT_CPU : undefined;
  const origin = await startOrigin({ concurrency: opts.concurrency, serviceMs: opts.serviceMs, label: `origin-${name}`, cpu });
  let front;
  try {
    front = await SETUPS[name].start(origin.url, cpu);
    const target = front?.url ?? origin.url;
    if (front) {
      // One request to learn the setup answers at all (not counted in the results; it fills
      // nothing the crowd will ask for).
      const probe = await fetchText(`${target}/page/100000`);
      if (probe === undefined) throw new Error(`${name} does not answer on ${target}`);
    }
    process.stderr.write(`  ${name}: ${target} (origin ${origin.url}) …\n`);
    // crowdgate is one process; nginx's and Varnish's workers are children of the PID we hold.
    const cpuPid = name.startsWith('crowdgate') ? front?.pid : undefined;
    const cpuBefore = processCpuSeconds(cpuPid);
    const load = await runLoad({
      target,
      capacityRps: (opts.concurrency * 1000) / opts.serviceMs,
      multiplier: opts.multiplier,
      rampMs: opts.rampMs,
      holdMs: opts.holdMs,
      workers: opts.workers,
      connections: opts.connections,
    });
    const cpuAfter = processCpuSeconds(cpuPid);
    const setupCpuSeconds = cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : undefined;
    const stats = await (await fetch(`${origin.url}/__stats`)).json();
    const metrics = front?.adminUrl ? await fetchText(`${front.adminUrl}/metrics`) : undefined;
    return { name, target, load, origin: originFigures(stats, load), setupCpuSeconds, metrics, logFile: front?.logFile };
  } finally {
    await front?.stop();
    await origin.stop();
  }
}

/** PASS/FAIL lines for a crowdgate row against the issue's targets for this multiplier. */
export function judge(r, multiplier) {
  const k = r.load.byKind;
  const C = r.origin.concurrency;
  const checks = [];
  const add = (ok, what) => checks.push(`${ok ? 'PASS' : 'FAIL'} ${r.name}: ${what}`);
  const refusedP50 = r.load.refused.latency.p50;
  const noRefused = r.load.refused.n === 0;
  // Pages: the same targets at every multiplier ("the same for pages" at ×50).
  add(k.page.successRate === 1 && k.page.latency.p99 <= 10, `pages ${fmtPct(k.page.successRate)} ok, p99 ${fmtMs(k.page.latency.p99)} ms (want 100 %, ≤ 10 ms)`);
  if (multiplier < 50) {
    add(r.load.uncacheable.successRate === 1, `uncacheable ${fmtPct(r.load.uncacheable.successRate)} ok (want 100 %)`);
    add(r.load.allSuccessLatency.p99 <= 100, `p99 of all successes ${fmtMs(r.load.allSuccessLatency.p99)} ms (want ≤ 100 ms)`);
    add(noRefused || refusedP50 <= 5, `refused ${r.load.refused.n}, answered p50 ${fmtMs(refusedP50)} ms (want ≤ 5 ms)`);
    // A configured ceiling of C is a hard cap (health probes included): never above C.
    const cap = r.name === 'crowdgate-fixed' ? FIXED_CEILING : 1.5 * C;
    add(
      r.origin.peakConcurrent <= cap && r.origin.status503 === 0 && r.origin.resets === 0,
      `origin peak concurrent ${r.origin.peakConcurrent} (want ≤ ${cap}), 503s ${r.origin.status503}, resets ${r.origin.resets} (want 0)`,
    );
    const worst = Math.max(...r.origin.hotPages.map((h) => h.vsIdeal));
    add(worst <= 1.05, `hot pages fetched ≤ ${worst.toFixed(2)}× the ideal once per TTL (want ≤ 1.05)`);
  } else {
    add(r.origin.busyFractionHold >= 0.9, `origin busy ${fmtPct(r.origin.busyFractionHold)} over the hold (want ≥ 90 %)`);
    add(r.origin.status503 === 0 && r.origin.resets === 0, `origin 503s ${r.origin.status503}, resets ${r.origin.resets} (want 0)`);
    add(
      noRefused || (refusedP50 <= 5 && r.load.refused.retryAfterShare === 1),
      `refused ${r.load.refused.n}: p50 ${fmtMs(refusedP50)} ms, Retry-After on ${fmtPct(r.load.refused.retryAfterShare)} (want ≤ 5 ms, 100 %)`,
    );
    add(r.load.allSuccessLatency.p99 <= 150, `p99 of all successes ${fmtMs(r.load.allSuccessLatency.p99)} ms (want ≤ 150 ms)`);
  }
  return checks;
}

/** The Markdown report for all runs. */
function toMarkdown(meta, runs, skipped) {
  const L = [];
  L.push(`# Flash crowd ×${meta.multiplier} — ${meta.date}`, '');
  L.push(
    `${machineSentence(meta)} Origin C = ${meta.concurrency}, S = ${meta.serviceMs} ms (capacity ${meta.capacityRps} req/s); ` +
      `ramp ${meta.rampMs / 1000} s from ×0.5 to ×${meta.multiplier}, hold ${meta.holdMs / 1000} s; Zipf s = 1.1 over 200 pages, 3 % uncacheable; ` +
      `open loop, latency from the scheduled send time; ${meta.workers} load worker thread(s). ` +
      `Pinning: ${meta.pinning ? `setup and origin on CPU ${SUT_CPU}, load generator on CPU ${LOADGEN_CPU} (taskset); Node processes on one CPU run with ${ONE_CPU_NODE_FLAGS.join(' ')}` : 'none'}. ` +
      `Gateway build: ${meta.gatewayBuild}. Command: \`${meta.command}\``,
    '',
  );
  L.push('| setup | page ok | /account ok | POST ok | page p50 / p99 / p99.9 ms | all-success p99 ms | refused: n, p50 ms, Retry-After | origin peak in service / concurrent | origin requests | origin 503 / resets | origin busy (hold) | hot pages fetches ÷ ideal | generator lag p99 ms | gateway CPU s |');
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of runs) {
    const k = r.load.byKind;
    const hot = r.origin.hotPages.map((h) => `${h.vsIdeal.toFixed(2)}`).join(' ');
    L.push(
      `| ${r.name} | ${fmtPct(k.page.successRate)} | ${fmtPct(k.private.successRate)} | ${fmtPct(k.post.successRate)} | ` +
        `${fmtMs(k.page.latency.p50)} / ${fmtMs(k.page.latency.p99)} / ${fmtMs(k.page.latency.p999)} | ${fmtMs(r.load.allSuccessLatency.p99)} | ` +
        `${fmtInt(r.load.refused.n)}, ${fmtMs(r.load.refused.latency.p50)}, ${fmtPct(r.load.refused.retryAfterShare)} | ` +
        `${r.origin.peakInflight} / ${r.origin.peakConcurrent} | ${fmtInt(r.origin.requests)} | ${fmtInt(r.origin.status503)} / ${fmtInt(r.origin.resets)} | ` +
        `${fmtPct(r.origin.busyFractionHold)} | ${hot} | ${fmtMs(r.load.sendLag.p99)} | ${r.setupCpuSeconds === undefined ? '—' : r.setupCpuSeconds.toFixed(1)} |`,
    );
  }
  for (const s of skipped) L.push(`| ${s.name} | skipped: ${s.reason} ||||||||||||||`);
  L.push('', `Hot pages are /page/1..${HOT_PAGES} (TTL ${Array.from({ length: HOT_PAGES }, (_, i) => pageTtlSeconds(i + 1)).join(', ')} s); "fetches ÷ ideal" = origin fetches / ceil(D / TTL), D = ramp + hold.`);
  L.push('Failures by reason (transport errors, timeouts, other statuses):', '');
  for (const r of runs) {
    const parts = KINDS.map((kind) => {
      const k = r.load.byKind[kind];
      const other = Object.entries(k.statuses).filter(([s]) => !/^[23]|^503$|^429$/.test(s));
      const reasons = [...Object.entries(k.errors), ...other].map(([e, n]) => `${e} ${n}`).join(', ');
      return `${kind}: ${fmtInt(k.failed)}${reasons ? ` (${reasons})` : ''}`;
    });
    L.push(`- ${r.name}: ${parts.join('; ')}`);
  }
  L.push('', 'Cache status of page responses:', '');
  for (const r of runs) {
    const cs = Object.entries(r.load.byKind.page.cacheStatus).sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ');
    L.push(`- ${r.name}: ${cs}`);
  }
  const checks = runs.filter((r) => r.name.startsWith('crowdgate')).flatMap((r) => judge(r, meta.multiplier));
  if (checks.length) L.push('', '## Targets', '', '```', ...checks, '```');
  L.push('', '## Goodput per second (successful responses completed in that second)', '');
  const maxT = Math.max(...runs.map((r) => r.load.perSecond.at(-1)?.t ?? 0));
  L.push(`| t s | offered | ${runs.map((r) => `${r.name} ok`).join(' | ')} | ${runs.map((r) => `${r.name} p99 ms`).join(' | ')} | ${runs.map((r) => `${r.name} page p99 ms`).join(' | ')} | ${runs.map((r) => `${r.name} origin busy`).join(' | ')} |`);
  L.push(`|---:|---:|${runs.map(() => '---:').join('|')}|${runs.map(() => '---:').join('|')}|${runs.map(() => '---:').join('|')}|${runs.map(() => '---:').join('|')}|`);
  for (let t = 0; t <= maxT; t++) {
    const rows = runs.map((r) => r.load.perSecond.find((p) => p.t === t));
    const orows = runs.map((r) => r.origin.perSecond.find((p) => p.t === t));
    const offered = rows.find((x) => x)?.offered ?? 0;
    L.push(
      `| ${t} | ${fmtInt(offered)} | ${rows.map((x) => fmtInt(x?.ok ?? 0)).join(' | ')} | ${rows.map((x) => fmtMs(x?.okP99 ?? NaN)).join(' | ')} | ${rows.map((x) => fmtMs(x?.pageP99 ?? NaN)).join(' | ')} | ${orows.map((x) => fmtPct(x?.busy ?? 0)).join(' | ')} |`,
    );
  }
  return L.join('\n') + '\n';
}

async function main() {
  const { values } = parseArgs({
    options: {
      multiplier: { type: 'string', default: '20' },
      duration: { type: 'string' },
      ramp: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      workers: { type: 'string', default: '1' },
      connections: { type: 'string', default: '1024' },
      concurrency: { type: 'string', default: '8' },
      'service-ms': { type: 'string', default: '50' },
      unpinned: { type: 'boolean', default: false },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  const multiplier = Number(values.multiplier);
  const concurrency = Number(values.concurrency);
  const serviceMs = Number(values['service-ms']);
  const opts = {
    multiplier,
    concurrency,
    serviceMs,
    rampMs: Number(values.ramp ?? (values.quick ? 2 : 5)) * 1000,
    holdMs: Number(values.duration ?? (values.quick ? 5 : 20)) * 1000,
    workers: Number(values.workers),
    connections: Number(values.connections),
  };
  const pinning = !values.unpinned && canPin();
  if (pinning) {
    // The one-CPU GC flags only take effect at start: run again under them, once.
    const code = relaunchForOneCpu();
    if (code !== undefined) process.exit(code);
    pinSelf(LOADGEN_CPU); // the load worker starts later and inherits it
  }
  opts.pinning = pinning;
  const wanted = values.only ? values.only.split(',').map((s) => s.trim()) : DEFAULT_SETUPS;
  for (const w of wanted) if (!SETUPS[w]) throw new Error(`unknown setup "${w}"; known: ${Object.keys(SETUPS).join(', ')}`);

  const loadAtStart = noteMachineLoad('start');
  const runs = [];
  const skipped = [];
  for (const name of wanted) {
    const avail = SETUPS[name].available();
    if (avail !== true) {
      skipped.push({ name, reason: avail });
      process.stderr.write(`  ${name}: skipped (${avail})\n`);
      continue;
    }
    try {
      runs.push(await runSetup(name, opts));
    } catch (err) {
      skipped.push({ name, reason: String(err?.message ?? err) });
      process.stderr.write(`  ${name}: failed: ${err?.stack ?? err}\n`);
    }
    await sleep(1000); // let sockets in TIME_WAIT and the CPU settle between runs
  }

  const meta = {
    ...runFacts('flash-crowd.mjs', loadAtStart),
    capacityRps: (concurrency * 1000) / serviceMs,
    gatewayBuild: gatewayBuildState().ok ? 'fresh' : gatewayBuildState().reason,
    ...opts,
  };
  const md = toMarkdown(meta, runs, skipped);
  const json = { meta, skipped, runs: runs.map(({ metrics, ...r }) => r) };
  const name = `flash-crowd-x${multiplier}${values.quick ? '-quick' : ''}`;
  const base = writeReport({ dir: values.out, name, date: meta.date, json, md });
  for (const r of runs) if (r.metrics) writeFileSync(`${base}-${r.name}-metrics.txt`, r.metrics);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    await main();
  } finally {
    await stopAll();
  }
}
