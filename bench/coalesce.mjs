/**
 * Cold-key coalescing: `--waiters` (100) simultaneous requests for each of `--pages` (5) cold
 * pages, against an origin that takes exactly `--origin-ms` (100 ms) per request and never
 * queues (C = 10 000). Reports, per setup, the origin fetches per page (ideal 1; direct = 100)
 * and each client's latency minus the origin latency (p50/p99/max): what waiting on someone
 * else's fetch costs.
 *
 * Setups: direct (the baseline: every request is a fetch), crowdgate (from dist/), and nginx
 * (proxy_cache_lock) and Varnish (waiting list) when installed.
 *
 * Method: one undici Pool with one keep-alive connection per request, opened beforehand by a
 * warm-up burst to /warm (a cacheable 404, so proxies fetch it once), then one unmeasured burst
 * of the same shape on other cold pages (so no setup is measured with a cold JIT); then all
 * requests are dispatched in one synchronous loop and latency is measured from the instant the
 * burst began (so the time to dispatch the burst itself is included; it is also reported).
 *
 * Client-side latency also holds the client's own work on 500 answers. So for crowdgate the
 * wake-up itself is read from its access log too: `afterWakeMs`, from the moment the fill
 * finished to the moment each collapsed waiter's response was written (the ≤ 10 ms target).
 *
 * Pinning (unless --unpinned, when taskset exists on 2+ CPUs): the setup and the origin on
 * CPU 0, this process (the 500 clients) on CPU 1, as in the flash-crowd bench: otherwise the
 * clients parsing the first answers preempt the server still writing the rest.
 *
 * Usage: node bench/coalesce.mjs [--pages 5] [--waiters 100] [--origin-ms 100] [--only direct,crowdgate,nginx,varnish] [--unpinned]
 */
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import { summarize, fmtMs } from './lib/stats.mjs';
import { stopAll, sleep, noteMachineLoad } from './lib/procs.mjs';
import {
  BENCH_DIR,
  startOrigin,
  startCrowdgate,
  startNginx,
  startVarnish,
  gatewayAvailable,
  hasCommand,
  canPin,
  pinSelf,
  relaunchForOneCpu,
  ONE_CPU_NODE_FLAGS,
  SUT_CPU,
  LOADGEN_CPU,
} from './lib/setups.mjs';

/** @type {Record<string, { available: () => true | string, start: (originUrl: string, cpu?: string) => Promise<any> }>} */
const SETUPS = {
  direct: { available: () => true, start: async () => undefined },
  crowdgate: {
    available: gatewayAvailable,
    // Access log on: each collapsed waiter's afterWakeMs is the server-side wake-up time.
    start: (originUrl, cpu) =>
      startCrowdgate({ originUrl, cpu, label: 'crowdgate-coalesce', extra: { log: { level: 'info', access: true } } }),
  },
  nginx: { available: () => hasCommand('nginx') || 'nginx not installed', start: (originUrl, cpu) => startNginx({ originUrl, cpu, label: 'nginx-coalesce' }) },
  varnish: {
    available: () => hasCommand('varnishd') || 'varnishd not installed',
    start: (originUrl, cpu) => startVarnish({ originUrl, cpu, label: 'varnish-coalesce' }),
  },
};

/** Sends one GET through the pool; resolves with status and Cache-Status, never rejects. */
function get(pool, path) {
  return pool.request({ path, method: 'GET' }).then(
    async (res) => {
      await res.body.dump();
      return { status: res.statusCode, cache: String(res.headers['cache-status'] ?? res.headers['x-cache-status'] ?? '') };
    },
    (err) => ({ status: 0, cache: '', error: err.code ?? err.name }),
  );
}

/** crowdgate's afterWakeMs for the measured pages' collapsed waiters, from its access log. */
function wakeUpsFromLog(logFile, pages) {
  const wanted = new Set(pages.map((n) => `/page/${n}`));
  const out = [];
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    if (!line.includes('"afterWakeMs"')) continue;
    try {
      const rec = JSON.parse(line);
      if (rec.type === 'access' && wanted.has(rec.path) && typeof rec.afterWakeMs === 'number') out.push(rec.afterWakeMs);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

async function runSetup(name, o) {
  const cpu = o.pinning ? SUT_CPU : undefined;
  const origin = await startOrigin({ concurrency: 10_000, serviceMs: o.originMs, label: `origin-coalesce-${name}`, cpu });
  let front;
  const total = o.pages * o.waiters;
  const pool = { close: async () => {} };
  try {
    front = await SETUPS[name].start(origin.url, cpu);
    const target = front?.url ?? origin.url;
    const p = new Pool(target, { connections: total, pipelining: 1, keepAliveTimeout: 60_000 });
    pool.close = () => p.destroy();
    // Warm-up: open `total` connections at once (all busy together forces one each).
    await Promise.all(Array.from({ length: total }, () => get(p, '/warm')));
    await sleep(200);
    // JIT warm-up: the same burst on pages nobody asks for afterwards.
    const warmPages = Array.from({ length: o.pages }, (_, i) => 200_000 + i);
    await Promise.all(Array.from({ length: o.waiters }, () => warmPages.map((page) => get(p, `/page/${page}`))).flat());
    await sleep(200);
    const before = await (await fetch(`${origin.url}/__stats`)).json();
    const pages = Array.from({ length: o.pages }, (_, i) => 100_000 + i);
    const startedAt = performance.now();
    const pending = [];
    for (let w = 0; w < o.waiters; w++)
      for (const page of pages) pending.push(get(p, `/page/${page}`).then((r) => ({ ...r, page, ms: performance.now() - startedAt })));
    const dispatchMs = performance.now() - startedAt;
    const answers = await Promise.all(pending);
    const after = await (await fetch(`${origin.url}/__stats`)).json();
    const fetchesPerPage = pages.map((n) => (after.fetchesByPath[`/page/${n}`] ?? 0) - (before.fetchesByPath[`/page/${n}`] ?? 0));
    const ok = answers.filter((a) => a.status >= 200 && a.status < 400);
    const statuses = {};
    for (const a of answers) statuses[a.error ?? a.status] = (statuses[a.error ?? a.status] ?? 0) + 1;
    const cache = {};
    for (const a of answers) {
      const label = /;\s*hit\b/i.test(a.cache) ? 'hit' : (/fwd=[\w-]+/.exec(a.cache)?.[0] ?? (a.cache || 'none')) + (/collapsed/.test(a.cache) ? '+collapsed' : '');
      cache[label] = (cache[label] ?? 0) + 1;
    }
    await sleep(100); // let the access log reach the file
    const wake = front?.logFile ? wakeUpsFromLog(front.logFile, pages) : [];
    return {
      name,
      requests: total,
      wakeUp: wake.length > 0 ? { waiters: wake.length, ...summarize(wake) } : undefined,
      ok: ok.length,
      statuses,
      cacheStatus: cache,
      fetchesPerPage,
      dispatchMs,
      overOrigin: summarize(ok.map((a) => a.ms - o.originMs)),
    };
  } finally {
    await pool.close().catch(() => {});
    await front?.stop();
    await origin.stop();
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      pages: { type: 'string', default: '5' },
      waiters: { type: 'string', default: '100' },
      'origin-ms': { type: 'string', default: '100' },
      only: { type: 'string' },
      unpinned: { type: 'boolean', default: false },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  const pinning = !values.unpinned && canPin();
  if (pinning) {
    // The one-CPU GC flags only take effect at start: run again under them, once.
    const code = relaunchForOneCpu();
    if (code !== undefined) process.exit(code);
    pinSelf(LOADGEN_CPU);
  }
  const o = { pages: Number(values.pages), waiters: Number(values.waiters), originMs: Number(values['origin-ms']), pinning };
  const wanted = values.only ? values.only.split(',') : Object.keys(SETUPS);
  const loadAtStart = noteMachineLoad('start');
  const rows = [];
  const skipped = [];
  for (const name of wanted) {
    if (!SETUPS[name]) throw new Error(`unknown setup "${name}"`);
    const avail = SETUPS[name].available();
    if (avail !== true) {
      skipped.push({ name, reason: avail });
      continue;
    }
    try {
      rows.push(await runSetup(name, o));
    } catch (err) {
      skipped.push({ name, reason: String(err?.message ?? err) });
    }
  }
  const meta = { ...runFacts('coalesce.mjs', loadAtStart), ...o };
  const { date } = meta;
  const L = [`# Cold-key coalescing — ${date}`, ''];
  L.push(
    `${machineSentence(meta)} ${o.waiters} simultaneous requests for each of ${o.pages} cold pages; origin answers in ${o.originMs} ms and never queues. ` +
      `"over origin" = client latency − ${o.originMs} ms, from the instant the burst began. ` +
      `Pinning: ${pinning ? `setup and origin on CPU ${SUT_CPU}, clients on CPU ${LOADGEN_CPU} (taskset); Node processes on one CPU run with ${ONE_CPU_NODE_FLAGS.join(' ')}` : 'none'}. Command: \`${meta.command}\``,
    '',
    '| setup | ok | origin fetches per page | over origin p50 ms | p99 ms | max ms | burst dispatch ms | wake-up to response written p50 / p99 / max ms (server side) | cache status |',
    '|---|---:|---|---:|---:|---:|---:|---:|---|',
  );
  for (const r of rows)
    L.push(
      `| ${r.name} | ${r.ok}/${r.requests} | ${r.fetchesPerPage.join(', ')} | ${fmtMs(r.overOrigin.p50)} | ${fmtMs(r.overOrigin.p99)} | ${fmtMs(r.overOrigin.max)} | ${fmtMs(r.dispatchMs)} | ${r.wakeUp ? `${fmtMs(r.wakeUp.p50)} / ${fmtMs(r.wakeUp.p99)} / ${fmtMs(r.wakeUp.max)} (${r.wakeUp.waiters} waiters)` : '—'} | ${Object.entries(r.cacheStatus).map(([c, n]) => `${c} ${n}`).join(', ')} |`,
    );
  for (const s of skipped) L.push(`| ${s.name} | skipped: ${s.reason} ||||||||`);
  const md = L.join('\n') + '\n';
  writeReport({ dir: values.out, name: 'coalesce', date, json: { meta, rows, skipped }, md });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    await main();
  } finally {
    await stopAll();
  }
}
