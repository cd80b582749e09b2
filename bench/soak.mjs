/**
 * Memory soak: does crowdgate's resident memory level off once its cache is full and evicting?
 *
 * An origin (node:http, a child of this process) serves cacheable pages: `/p/N` (the hot set) and
 * `/u/N` (each requested once), `max-age` = 1 + (N mod 10) s, an ETag that changes every TTL (a
 * 304 when it still matches), bodies of 2–40 KiB. crowdgate runs from dist/ through its launcher
 * with `cache.maxBytes` small (64 MiB by default) so the cache is full within the first minute.
 * An open-loop generator (undici Pool, keep-alive) sends `--rate` requests/s for `--minutes`:
 * 90 % Zipf over the hot set, 10 % (`--unique`) fresh `/u/<counter>` URLs, so the cache keeps
 * evicting. It never has more than `--max-inflight` requests out (the excess is counted, not sent).
 *
 * Every `--sample` s: VmRSS, RssAnon, RssFile and open fds from /proc/<pid>/status and fd/, the
 * resident size of the `[heap]` mapping (glibc malloc's main arena) from smaps; from
 * the admin `/metrics`: process_resident_memory_bytes, nodejs_heap_size_used_bytes,
 * nodejs_external_memory_bytes, crowdgate_cache_bytes and crowdgate_cache_entries; and, from a
 * preloaded probe (`--require`, off with `--no-probe`) that appends process.memoryUsage() and
 * v8.getHeapStatistics() to a file every sample period, arrayBuffers and V8's malloced memory
 * (prom-client exports neither).
 *
 * Report: each quantity at the window start (`--from`, default minutes − 20 for runs of 30 min or
 * more, else a third of the run) and at the end (each the median of the samples within ±30 s),
 * growth over the window in %, and the least-squares slope in MiB/min; a per-minute table. The
 * requirement checked: RSS growth over the window < 2 %.
 *
 * Pinning: crowdgate and the origin on CPU 0, this process (the generator) on CPU 1, with the
 * one-CPU GC flags (as the other benches; `--unpinned` turns it off).
 *
 * Usage: node bench/soak.mjs [--minutes 30] [--rate 2000] [--unique 0.1] [--hot 1000]
 *          [--max-bytes 67108864] [--connections 64] [--sample 10] [--from M] [--label NAME]
 *          [--gateway-env K=V,K=V] [--no-probe] [--unpinned]
 * `--gateway-env` sets environment variables for crowdgate only (e.g. MALLOC_ARENA_MAX=2);
 * BENCH_GATEWAY_NODE_FLAGS passes node flags to it (e.g. --trace-gc).
 */
import { parseArgs } from 'node:util';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { startProcess, waitForPort, freePort, stopAll, sleep, noteMachineLoad } from './lib/procs.mjs';
import {
  BENCH_DIR,
  makeRunDir,
  pinnedNode,
  canPin,
  pinSelf,
  relaunchForOneCpu,
  startCrowdgate,
  gatewayAvailable,
  SUT_CPU,
  LOADGEN_CPU,
} from './lib/setups.mjs';

const MiB = 1024 * 1024;
const SELF = fileURLToPath(import.meta.url);

// ---------------------------------------------------------------------------------------------
// The origin (`--serve-origin PORT`, run as a child so it can be pinned with crowdgate).

function pageMeta(n, now) {
  const ttl = 1 + (n % 10);
  const size = 2048 + ((n * 2654435761) % (38 * 1024)); // 2–40 KiB, spread by a multiplicative hash
  const version = Math.floor(now / (ttl * 1000));
  return { ttl, size, etag: `"${n}-${version}"` };
}

function serveOrigin(port) {
  const filler = Buffer.alloc(64 * 1024, 'abcdefghijklmnopqrstuvwxyz0123456789\n');
  let requests = 0;
  let notModified = 0;
  const server = createServer((req, res) => {
    if (req.url === '/__stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ requests, notModified }));
      return;
    }
    requests++;
    const m = /^\/([pu])\/(\d+)/.exec(req.url ?? '');
    if (!m) {
      res.setHeader('cache-control', 'max-age=5');
      res.end('ok\n');
      return;
    }
    const n = Number(m[2]);
    const { ttl, size, etag } = pageMeta(m[1] === 'u' ? n * 7 + 3 : n, Date.now());
    res.setHeader('cache-control', `public, max-age=${ttl}`);
    res.setHeader('etag', etag);
    res.setHeader('content-type', 'text/plain');
    if (req.headers['if-none-match'] === etag) {
      notModified++;
      res.statusCode = 304;
      res.end();
      return;
    }
    const head = Buffer.from(`${req.url} ${etag}\n`);
    res.setHeader('content-length', String(size));
    res.end(Buffer.concat([head, filler.subarray(0, size - head.length)], size));
  });
  server.keepAliveTimeout = 10_000;
  server.listen(port, '127.0.0.1');
}

async function startSoakOrigin(cpu) {
  const port = await freePort();
  const dir = makeRunDir('soak-origin');
  const [cmd, args] = pinnedNode(cpu, [SELF, '--serve-origin', String(port)]);
  const proc = startProcess('soak-origin', cmd, args, { logFile: join(dir, 'origin.log') });
  await waitForPort(port, { proc });
  return { url: `http://127.0.0.1:${port}`, pid: proc.pid, stop: () => proc.stop() };
}

// ---------------------------------------------------------------------------------------------
// Sampling.

/** The probe preloaded into crowdgate: one JSON line of memory figures every `periodMs`. */
function writeProbe(dir, periodMs) {
  const out = join(dir, 'probe.jsonl');
  const file = join(dir, 'probe.cjs');
  writeFileSync(
    file,
    `// Written by bench/soak.mjs: memory figures for the soak report (no effect on requests).
const { appendFileSync } = require('node:fs');
const v8 = require('node:v8');
setInterval(() => {
  const m = process.memoryUsage();
  const h = v8.getHeapStatistics();
  appendFileSync(${JSON.stringify(out)}, JSON.stringify({ t: Date.now(), rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal,
    external: m.external, arrayBuffers: m.arrayBuffers, malloced: h.malloced_memory, peakMalloced: h.peak_malloced_memory }) + '\\n');
}, ${periodMs}).unref();
`,
  );
  return { file, out };
}

function lastProbe(out) {
  if (!out || !existsSync(out)) return undefined;
  const text = readFileSync(out, 'utf8').trimEnd();
  const line = text.slice(text.lastIndexOf('\n') + 1);
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

function procStatus(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  let fds = NaN;
  try {
    fds = readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    /* not ours to read */
  }
  return { rss: kb('VmRSS'), rssAnon: kb('RssAnon'), rssFile: kb('RssFile'), threads: Number(/^Threads:\s+(\d+)/m.exec(text)?.[1]), fds, brkHeap: brkHeapRss(pid) };
}

/**
 * Resident bytes of the `[heap]` mapping (the brk segment: glibc malloc's main arena, where
 * Buffer memory of a single-threaded Node process lives), from /proc/<pid>/smaps.
 */
function brkHeapRss(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    const at = text.indexOf(' [heap]\n');
    if (at < 0) return NaN;
    const m = /^Rss:\s+(\d+) kB/m.exec(text.slice(at, at + 2000));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

const SCRAPED = {
  promRss: 'process_resident_memory_bytes',
  heapUsed: 'nodejs_heap_size_used_bytes',
  heapTotal: 'nodejs_heap_size_total_bytes',
  external: 'nodejs_external_memory_bytes',
  cacheBytes: 'crowdgate_cache_bytes',
  cacheEntries: 'crowdgate_cache_entries',
  evictions: 'crowdgate_cache_evictions_total',
};

async function scrape(adminUrl) {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    const out = { metricsBytes: text.length, metricsSeries: 0 };
    for (const line of text.split('\n')) if (line && line[0] !== '#') out.metricsSeries++;
    for (const [k, name] of Object.entries(SCRAPED)) {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([-\\d.e+]+)`, 'm').exec(text);
      out[k] = m ? Number(m[1]) : NaN;
    }
    return out;
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------------------------
// Load.

function zipfSampler(n, s) {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / Math.pow(i + 1, s);
  for (let i = 0; i < n; i++) cdf[i] /= sum;
  return () => {
    const r = Math.random();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < r) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

function startLoad(url, o) {
  const pool = new Pool(url, { connections: o.connections, pipelining: 1, keepAliveTimeout: 30_000 });
  const pickHot = zipfSampler(o.hot, 1.0);
  const st = { sent: 0, done: 0, hits: 0, errors: 0, non2xx: 0, skipped: 0, inflight: 0, lat: [], statuses: {} };
  let unique = 0;
  const t0 = performance.now();
  let stopped = false;
  const one = async () => {
    const path = Math.random() < o.unique ? `/u/${unique++}` : `/p/${pickHot()}`;
    const start = performance.now();
    st.inflight++;
    try {
      const res = await pool.request({ method: 'GET', path, headers: { host: 'soak.test' } });
      for await (const _ of res.body);
      if (res.statusCode >= 200 && res.statusCode < 400) st.done++;
      else st.non2xx++;
      st.statuses[res.statusCode] = (st.statuses[res.statusCode] ?? 0) + 1;
      if (/;\s*hit\b/i.test(String(res.headers['cache-status'] ?? ''))) st.hits++;
      st.lat.push(performance.now() - start);
    } catch {
      st.errors++;
    } finally {
      st.inflight--;
    }
  };
  const timer = setInterval(() => {
    if (stopped) return;
    const due = Math.floor(((performance.now() - t0) / 1000) * o.rate);
    while (st.sent + st.skipped < due) {
      if (st.inflight >= o.maxInflight) {
        st.skipped++;
        continue;
      }
      st.sent++;
      one();
    }
  }, 5);
  return {
    st,
    /** Counters since the last call, and p50/p99 of the latencies in that interval. */
    take() {
      const lat = st.lat.sort((a, b) => a - b);
      const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN);
      const r = { done: st.done, hits: st.hits, errors: st.errors, non2xx: st.non2xx, skipped: st.skipped, p50: q(0.5), p99: q(0.99) };
      st.lat = [];
      return r;
    },
    uniqueSent: () => unique,
    async stop() {
      stopped = true;
      clearInterval(timer);
      const deadline = Date.now() + 10_000;
      while (st.inflight > 0 && Date.now() < deadline) await sleep(50);
      await pool.close().catch(() => undefined);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Analysis.

const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};

/** Median of `key` over samples within ±30 s of minute `m`. */
function around(samples, key, m) {
  return median(samples.filter((s) => Math.abs(s.min - m) <= 0.5).map((s) => s[key]));
}

/** Least-squares slope of `key` over samples in [from, to] minutes, in units per minute. */
function slope(samples, key, from, to) {
  const pts = samples.filter((s) => s.min >= from - 1e-9 && s.min <= to + 1e-9 && Number.isFinite(s[key]));
  if (pts.length < 3) return NaN;
  const mx = pts.reduce((a, s) => a + s.min, 0) / pts.length;
  const my = pts.reduce((a, s) => a + s[key], 0) / pts.length;
  let num = 0;
  let den = 0;
  for (const s of pts) {
    num += (s.min - mx) * (s[key] - my);
    den += (s.min - mx) ** 2;
  }
  return num / den;
}

const QUANTITIES = [
  ['rss', 'RSS (VmRSS)'],
  ['rssAnon', 'RssAnon'],
  ['rssFile', 'RssFile'],
  ['brkHeap', 'malloc main arena ([heap] RSS)'],
  ['heapUsed', 'V8 heap used'],
  ['heapTotal', 'V8 heap total'],
  ['external', 'external (prom-client)'],
  ['arrayBuffers', 'arrayBuffers (probe)'],
  ['malloced', 'V8 malloced (probe)'],
  ['cacheBytes', 'crowdgate_cache_bytes'],
  ['nonHeap', 'RSS − heap total − arrayBuffers'],
];

const mib = (b) => (Number.isFinite(b) ? (b / MiB).toFixed(1) : '–');
const pct = (x) => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(2)} %` : '–');

// ---------------------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '30' },
      rate: { type: 'string', default: '2000' },
      unique: { type: 'string', default: '0.1' },
      hot: { type: 'string', default: '1000' },
      'max-bytes': { type: 'string', default: String(64 * MiB) },
      connections: { type: 'string', default: '64' },
      'max-inflight': { type: 'string', default: '512' },
      sample: { type: 'string', default: '10' },
      from: { type: 'string' },
      label: { type: 'string', default: '' },
      'gateway-env': { type: 'string', default: '' },
      probe: { type: 'boolean', default: true },
      'no-probe': { type: 'boolean', default: false },
      unpinned: { type: 'boolean', default: false },
      'serve-origin': { type: 'string' },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  if (values['serve-origin']) return serveOrigin(Number(values['serve-origin']));

  const minutes = Number(values.minutes);
  const o = {
    minutes,
    rate: Number(values.rate),
    unique: Number(values.unique),
    hot: Number(values.hot),
    maxBytes: Number(values['max-bytes']),
    connections: Number(values.connections),
    maxInflight: Number(values['max-inflight']),
    sampleS: Number(values.sample),
    from: values.from !== undefined ? Number(values.from) : minutes >= 30 ? minutes - 20 : minutes / 3,
    label: values.label,
    gatewayEnv: Object.fromEntries(values['gateway-env'].split(',').filter(Boolean).map((kv) => kv.split(/=(.*)/s).slice(0, 2))),
    probe: values.probe && !values['no-probe'],
  };
  if (!(minutes > 0 && minutes <= 240)) throw new Error('--minutes must be in (0, 240]');
  if (!(o.rate > 0 && o.rate <= 20_000)) throw new Error('--rate must be in (0, 20000]');
  const gw = gatewayAvailable();
  if (gw !== true) throw new Error(gw);

  const pinning = !values.unpinned && canPin();
  if (pinning) {
    const code = relaunchForOneCpu();
    if (code !== undefined) process.exit(code);
  }
  const loadAtStart = noteMachineLoad('start'); // before pinning: it compares with the CPU count
  if (pinning) pinSelf(LOADGEN_CPU);
  const sutCpu = pinning ? SUT_CPU : undefined;

  const origin = await startSoakOrigin(sutCpu);
  const runDir = makeRunDir('soak');
  const probe = o.probe ? writeProbe(runDir, o.sampleS * 1000) : undefined;
  // crowdgate's own environment: --gateway-env and the probe preload, set only while it starts.
  const saved = { ...process.env };
  Object.assign(process.env, o.gatewayEnv);
  if (probe) process.env.BENCH_GATEWAY_NODE_FLAGS = `${process.env.BENCH_GATEWAY_NODE_FLAGS ?? ''} --require ${probe.file}`.trim();
  let gateway;
  try {
    gateway = await startCrowdgate({
      originUrl: origin.url,
      label: 'crowdgate-soak',
      cpu: sutCpu,
      extra: { cache: { maxBytes: o.maxBytes } },
    });
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
  process.stderr.write(
    `soak: crowdgate pid ${gateway.pid} at ${gateway.url} (admin ${gateway.adminUrl}), origin pid ${origin.pid}; ` +
      `${o.rate} req/s for ${minutes} min, ${o.unique * 100} % unique, cache ${mib(o.maxBytes)} MiB` +
      `${Object.keys(o.gatewayEnv).length ? `, env ${values['gateway-env']}` : ''}\n`,
  );

  const samples = [];
  const load = startLoad(gateway.url, o);
  const t0 = Date.now();
  const endAt = t0 + minutes * 60_000;
  let last = { done: 0, hits: 0, errors: 0, non2xx: 0, skipped: 0 };
  let lastT = t0;
  try {
    while (Date.now() < endAt) {
      await sleep(Math.min(o.sampleS * 1000 - ((Date.now() - t0) % (o.sampleS * 1000)), endAt - Date.now()));
      const now = Date.now();
      const proc = procStatus(gateway.pid);
      const metrics = await scrape(gateway.adminUrl);
      const p = lastProbe(probe?.out) ?? {};
      const l = load.take();
      const dt = (now - lastT) / 1000;
      const done = l.done - last.done;
      const s = {
        min: (now - t0) / 60_000,
        ...proc,
        ...metrics,
        arrayBuffers: p.arrayBuffers,
        malloced: p.malloced,
        probeExternal: p.external,
        probeAgeS: p.t ? (now - p.t) / 1000 : undefined,
        rps: done / dt,
        hitShare: done > 0 ? (l.hits - last.hits) / done : NaN,
        errors: l.errors - last.errors,
        non2xx: l.non2xx - last.non2xx,
        skipped: l.skipped - last.skipped,
        p50: l.p50,
        p99: l.p99,
      };
      s.nonHeap = s.rss - (s.heapTotal ?? NaN) - (s.arrayBuffers ?? NaN);
      samples.push(s);
      last = l;
      lastT = now;
      process.stderr.write(
        `${s.min.toFixed(1).padStart(5)} min  rss ${mib(s.rss)} (anon ${mib(s.rssAnon)}, brk ${mib(s.brkHeap)})  heap ${mib(s.heapUsed)}/${mib(s.heapTotal)}  ext ${mib(s.external)}  ab ${mib(s.arrayBuffers)}  cache ${mib(s.cacheBytes)} (${s.cacheEntries})  fds ${s.fds}  ${Math.round(s.rps)} req/s  hit ${(s.hitShare * 100).toFixed(0)} %  p99 ${s.p99?.toFixed(1)} ms  err ${s.errors}/${s.non2xx}/${s.skipped}\n`,
      );
    }
  } finally {
    await load.stop();
  }
  const originStats = await (await fetch(`${origin.url}/__stats`)).json().catch(() => ({}));
  await gateway.stop();
  await origin.stop();
  await stopAll();

  // Analysis over the window [from, end].
  const end = samples.at(-1)?.min ?? minutes;
  const from = Math.min(o.from, end);
  const rows = QUANTITIES.map(([key, label]) => {
    const a = around(samples, key, from);
    const b = around(samples, key, end);
    return { key, label, atFrom: a, atEnd: b, growthPct: ((b - a) / a) * 100, slopeMiBPerMin: slope(samples, key, from, end) / MiB };
  });
  const rss = rows.find((r) => r.key === 'rss');
  const pass = rss.growthPct < 2;
  const totals = samples.reduce(
    (a, s) => ({ errors: a.errors + s.errors, non2xx: a.non2xx + s.non2xx, skipped: a.skipped + s.skipped }),
    { errors: 0, non2xx: 0, skipped: 0 },
  );
  const meta = runFacts('soak.mjs', loadAtStart);
  const name = `soak${o.label ? `-${o.label}` : ''}`;

  const perMinute = [];
  for (let m = 1; m <= Math.round(end); m++) {
    const inMin = samples.filter((s) => s.min > m - 1 + 0.01 && s.min <= m + 0.01);
    if (!inMin.length) continue;
    const lastS = inMin.at(-1);
    perMinute.push({
      minute: m,
      rss: lastS.rss,
      rssAnon: lastS.rssAnon,
      brkHeap: lastS.brkHeap,
      heapUsed: lastS.heapUsed,
      external: lastS.external,
      arrayBuffers: lastS.arrayBuffers,
      malloced: lastS.malloced,
      cacheBytes: lastS.cacheBytes,
      cacheEntries: lastS.cacheEntries,
      fds: lastS.fds,
      rps: median(inMin.map((s) => s.rps)),
      hitShare: median(inMin.map((s) => s.hitShare)),
      p99: Math.max(...inMin.map((s) => s.p99).filter(Number.isFinite)),
    });
  }

  const md = [
    `# Soak: crowdgate memory with a full cache${o.label ? ` (${o.label})` : ''}`,
    '',
    machineSentence(meta),
    `Command: \`${meta.command}\`. ${pinning ? 'crowdgate and the origin on CPU 0, the generator on CPU 1.' : 'Unpinned.'}`,
    `Load: ${o.rate} req/s open loop for ${minutes} min (${o.connections} keep-alive connections, at most ${o.maxInflight} in flight), ` +
      `${(1 - o.unique) * 100} % Zipf over ${o.hot} hot pages, ${o.unique * 100} % unique URLs (${load.uniqueSent()} sent); bodies 2–40 KiB, max-age 1–10 s. ` +
      `cache.maxBytes ${mib(o.maxBytes)} MiB.${Object.keys(o.gatewayEnv).length ? ` crowdgate environment: \`${values['gateway-env']}\`.` : ''}` +
      `${process.env.BENCH_GATEWAY_NODE_FLAGS ? ` Extra node flags: \`${process.env.BENCH_GATEWAY_NODE_FLAGS}\`.` : ''}`,
    `Origin: ${originStats.requests ?? '?'} requests, ${originStats.notModified ?? '?'} answered 304. Client errors ${totals.errors}, non-2xx/3xx ${totals.non2xx}, not sent (in-flight cap) ${totals.skipped}; statuses ${JSON.stringify(load.st.statuses)}.`,
    '',
    `**RSS over minutes ${from.toFixed(0)}–${end.toFixed(0)}: ${pct(rss.growthPct)} (${mib(rss.atFrom)} → ${mib(rss.atEnd)} MiB, slope ${rss.slopeMiBPerMin.toFixed(2)} MiB/min): ${pass ? 'meets' : 'fails'} the < 2 % requirement.**`,
    '',
    `| quantity | at ${from.toFixed(0)} min (MiB) | at ${end.toFixed(0)} min (MiB) | growth | slope (MiB/min) |`,
    '|---|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.label} | ${mib(r.atFrom)} | ${mib(r.atEnd)} | ${pct(r.growthPct)} | ${Number.isFinite(r.slopeMiBPerMin) ? r.slopeMiBPerMin.toFixed(2) : '–'} |`),
    '',
    'Values at a minute are medians of the samples within ±30 s of it; the slope is a least-squares fit over the window.',
    '',
    '| min | RSS | RssAnon | [heap] | heap used | external | arrayBuffers | V8 malloced | cache bytes | entries | fds | req/s | hit | p99 ms |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...perMinute.map(
      (r) =>
        `| ${r.minute} | ${mib(r.rss)} | ${mib(r.rssAnon)} | ${mib(r.brkHeap)} | ${mib(r.heapUsed)} | ${mib(r.external)} | ${mib(r.arrayBuffers)} | ${mib(r.malloced)} | ${mib(r.cacheBytes)} | ${r.cacheEntries ?? '–'} | ${r.fds} | ${Math.round(r.rps)} | ${(r.hitShare * 100).toFixed(0)} % | ${r.p99.toFixed(1)} |`,
    ),
    '',
  ].join('\n');
  writeReport({
    dir: values.out,
    name,
    date: meta.date,
    json: { meta, options: o, pinning, from, end, pass, summary: rows, totals, statuses: load.st.statuses, originStats, perMinute, samples },
    md,
  });
}

main().catch(async (err) => {
  process.stderr.write(`soak failed: ${err?.stack ?? err}\n`);
  await stopAll();
  process.exit(1);
});
