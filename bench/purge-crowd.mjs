/**
 * Purge in a crowd: a hard purge of every hot page in the middle of a crowd, with the gateway
 * CPU-bound (its pressure gate over). Beside the flash crowd (flash-crowd.mjs), it checks one
 * thing: that a hot page with nothing stored comes back while the gateway is overloaded. Under
 * pressure the gateway answers stored pages and sheds work it has no copy for; a key with
 * nothing stored and no fill under way gets its one collapsed fill all the same (README,
 * Overload control), otherwise the page would be 503 `shed-pressure` for as long as the crowd
 * lasts.
 *
 * Per run, with a fresh origin and gateway:
 *
 *   - Origin (`--serve-origin PORT`, a child of this script): `--pages` hot pages `/hot/N`
 *     (default 5), each ~`--page-bytes` (15 KB), answered after `--origin-ms` (200 ms) of timer
 *     latency with `Cache-Control: public, max-age=60` (and `/`, where health checks land). It records the arrival time of every
 *     fetch (`/__fetches`, not counted).
 *   - crowdgate from dist/ through scripts/crowdgate, default admission settings (pressure gate
 *     on, its default thresholds), access log off, `admin.purgeToken` set (passed through the
 *     environment, so it is not written to the config file).
 *   - The pages are warmed (one request each, then checked to be hits), then a closed loop of
 *     `--connections` (200) keep-alive connections (undici Pool, in a worker thread) asks for
 *     the pages round-robin for `--seconds` (10). At `--purge-at` (4 s) this script sends
 *     `POST /purge {"all": true, "mode": "hard"}` to the admin listener.
 *   - Every request is recorded: send time, end time, page, status, Cache-Status. The admin
 *     `/metrics` is scraped every 250 ms for crowdgate_pressure_overloaded (and the event-loop
 *     delay / utilisation gauges).
 *
 * Measured per page, from the instant the purge was sent: the first 200 and the first 200 with
 * `Cache-Status: …; hit` among requests SENT after the purge was acknowledged (so neither can be
 * an answer from before the purge), each timed to the end of that answer; the 503s answered after
 * the purge was sent (by Cache-Status detail, e.g. shed-pressure); and the origin's fetches of the
 * page from the purge on (one collapsed fill per page is the ideal). Pressure: the share of
 * scrapes that read 1, over the whole run and around the purge (−0.5 s … +1 s).
 *
 * PASS: in every run, every page is a hit again within `--within` (1000) ms of the purge.
 *
 * Pinning (default `--cpus 0`): the gateway, the origin and this process (the load generator's
 * worker thread included) all on the same CPU list via taskset, which makes the gateway
 * CPU-bound: this is how the refusals after a purge were seen. Single-CPU lists add
 * `--single-threaded-gc` (this script re-runs itself under it; the launcher adds it to the
 * gateway). `--cpus none` turns pinning off.
 *
 * Usage: node bench/purge-crowd.mjs [--runs 10] [--seconds 10] [--purge-at 4] [--connections 200]
 *          [--pages 5] [--page-bytes 15000] [--origin-ms 200] [--within 1000] [--cpus 0]
 *          [--gateway-dir DIR]   (another checkout's root with a built dist/, for an A/B)
 *
 * Bounded (runs × seconds, plus at most 15 s draining per run), loopback only; every process is
 * a child stopped by PID.
 */
import { parseArgs } from 'node:util';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { stringify } from 'yaml';
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { startProcess, waitForPort, freePort, stopAll, sleep, noteMachineLoad } from './lib/procs.mjs';
import {
  BENCH_DIR,
  REPO_DIR,
  makeRunDir,
  pinned,
  pinnedNode,
  pinSelf,
  hasCommand,
  relaunchForOneCpu,
  gatewayBuildState,
} from './lib/setups.mjs';
import { fmtMs, fmtPct, fmtInt, median } from './lib/stats.mjs';

const SELF = fileURLToPath(import.meta.url);
/** Epoch ms with sub-ms resolution, comparable across this process's threads. */
const nowMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// The origin (`--serve-origin PORT`): slow, cacheable hot pages, every fetch timestamped.

function serveOrigin(port, pageBytes, latencyMs) {
  const filler = 'x'.repeat(Math.max(0, pageBytes - 200));
  /** @type {Record<string, number[]>} */
  const fetches = {};
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/__fetches') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return res.end(JSON.stringify(fetches));
    }
    (fetches[path] ??= []).push(Date.now());
    setTimeout(() => {
      const m = /^\/hot\/(\d+)$/.exec(path);
      if (path === '/') {
        // Where the gateway's health checks land.
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=5' });
        return res.end('ok\n');
      }
      if (!m) {
        res.writeHead(404, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
        return res.end('not found\n');
      }
      const body = `<!doctype html><title>hot page ${m[1]}</title><h1>hot page ${m[1]}</h1><p>rendered ${new Date().toISOString()}</p><!-- ${filler} -->\n`;
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': Buffer.byteLength(body),
        'cache-control': 'public, max-age=60',
        'last-modified': new Date().toUTCString(),
      });
      res.end(body);
    }, latencyMs);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, '127.0.0.1');
  const stop = () => server.close(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

// ---------------------------------------------------------------------------------------------
// The load generator (a worker thread): a closed loop over `connections` keep-alive connections.

/** Short label for a Cache-Status value: hit | fwd=<kind>, " collapsed", " (<detail>)". */
function cacheLabel(v) {
  if (!v) return 'none';
  const s = String(v);
  const fwd = /;\s*fwd=([\w-]+)/.exec(s)?.[1];
  let label = /;\s*hit\b/.test(s) ? 'hit' : fwd ? `fwd=${fwd}` : s.split(';')[0].trim().slice(0, 24);
  if (/;\s*collapsed\b/.test(s)) label += ' collapsed';
  const detail = /detail="([^\s"]+)/.exec(s)?.[1];
  if (detail && !['hit', 'miss', 'rid'].includes(detail) && !detail.startsWith('rid=')) label += ` (${detail})`;
  return label;
}

async function workerMain() {
  const { Pool } = await import('undici');
  const { target, connections, pipelining, pages, startAt, durationMs } = workerData;
  const cap = 3_000_000;
  const sendT = new Float64Array(cap);
  const endT = new Float64Array(cap);
  const page = new Uint8Array(cap);
  const status = new Uint16Array(cap);
  const label = new Uint8Array(cap);
  /** @type {Map<string, number>} */
  const labelIds = new Map();
  const intern = (l) => {
    let id = labelIds.get(l);
    if (id === undefined) labelIds.set(l, (id = Math.min(labelIds.size, 255)));
    return id;
  };
  const pool = new Pool(target, {
    connections,
    pipelining,
    keepAliveTimeout: 30_000,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
    connect: { timeout: 10_000 },
  });
  const headers = { accept: 'text/html' };
  const endAt = startAt + durationMs;
  let n = 0;
  let rr = 0;
  let active = 0;
  let done;
  const finished = new Promise((r) => (done = r));

  function next() {
    if (nowMs() >= endAt || n >= cap) {
      if (--active === 0) done();
      return;
    }
    const i = n++;
    const p = rr++ % pages;
    page[i] = p;
    sendT[i] = nowMs();
    let st = 0;
    let cs;
    pool.dispatch(
      { path: `/hot/${p + 1}`, method: 'GET', headers },
      {
        onRequestStart() {},
        onResponseStart(_c, statusCode, h) {
          st = statusCode;
          cs = h['cache-status'];
        },
        onResponseData() {},
        onResponseEnd() {
          endT[i] = nowMs();
          status[i] = st;
          label[i] = intern(cacheLabel(cs));
          next();
        },
        onResponseError(_c, err) {
          endT[i] = nowMs();
          status[i] = 0;
          label[i] = intern(`error ${err?.code ?? err?.name ?? 'unknown'}`);
          setTimeout(next, 10); // do not spin on a broken connection
        },
      },
    );
  }

  await sleep(Math.max(0, startAt - nowMs()));
  // `pipelining` requests out per connection: the gateway always has the next one waiting.
  active = connections * pipelining;
  for (let c = 0; c < active; c++) next();
  // Bounded: the closed loop stops sending at endAt; answers still out get 15 s.
  await Promise.race([finished, sleep(durationMs + 15_000)]);
  const take = (a) => a.slice(0, n);
  const out = { n, sendT: take(sendT), endT: take(endT), page: take(page), status: take(status), label: take(label), labels: [...labelIds.keys()] };
  parentPort?.postMessage(out, [out.sendT.buffer, out.endT.buffer, out.page.buffer, out.status.buffer, out.label.buffer]);
  await pool.destroy().catch(() => {});
}

function runLoadWorker(opts) {
  return new Promise((resolve, reject) => {
    const w = new Worker(SELF, { workerData: { role: 'purge-crowd-load', ...opts } });
    let result;
    // Resolve on the results, not on exit: closing 200 keep-alive connections is not measured.
    w.once('message', (m) => {
      result = m;
      resolve(m);
      setTimeout(() => w.terminate(), 2000).unref();
    });
    w.once('error', reject);
    w.once('exit', (code) => result ?? reject(new Error(`load worker exited ${code} without results`)));
  });
}

// ---------------------------------------------------------------------------------------------
// One run.

async function startOrigin(o) {
  const port = await freePort();
  const dir = makeRunDir('purge-origin');
  const [cmd, args] = pinnedNode(o.cpu, [
    SELF, '--serve-origin', String(port), '--page-bytes', String(o.pageBytes), '--origin-ms', String(o.originMs),
  ]);
  const proc = startProcess('origin', cmd, args, { logFile: join(dir, 'origin.log') });
  await waitForPort(port, { proc });
  return { url: `http://127.0.0.1:${port}`, pid: proc.pid, stop: () => proc.stop() };
}

async function startGateway(o, originUrl, token) {
  const [port, adminPort] = [await freePort(), await freePort()];
  const config = {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort, purgeToken: '${CROWDGATE_BENCH_PURGE_TOKEN}' },
    log: { level: 'warn', access: false },
    reload: { watch: false },
    sites: [{ name: 'bench', hosts: ['*'], origins: [{ url: originUrl }] }],
  };
  mkdirSync(join(BENCH_DIR, 'configs'), { recursive: true });
  const configFile = join(BENCH_DIR, 'configs', 'crowdgate-purge-crowd.yaml');
  writeFileSync(configFile, `# Generated by bench/purge-crowd.mjs for one run (free ports picked at run time); safe to delete.\n${stringify(config)}`);
  const dir = makeRunDir('purge-gateway');
  const launcher = join(o.gatewayDir, 'scripts', 'crowdgate');
  const [cmd, args] = pinned(o.cpu, launcher, ['--config', configFile]);
  const env = { ...process.env, CROWDGATE_BENCH_PURGE_TOKEN: token, CROWDGATE_NODE_FLAGS: process.env.BENCH_GATEWAY_NODE_FLAGS ?? '' };
  const proc = startProcess('crowdgate', cmd, args, { logFile: join(dir, 'gateway.log'), cwd: o.gatewayDir, env });
  await waitForPort(port, { proc });
  await waitForPort(adminPort, { proc });
  return { url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`, pid: proc.pid, logFile: proc.logFile, stop: () => proc.stop() };
}

/** Reads one gauge (no labels) from Prometheus text. */
function gauge(text, name) {
  const m = new RegExp(`^${name} ([^\\s]+)`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** Scrapes /metrics every 250 ms (one scrape at a time) until stopped. */
function startScraper(adminUrl) {
  /** @type {{ t: number, answeredAt: number, overloaded: number, delayMs: number, elu: number }[]} */
  const samples = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t = nowMs();
      try {
        const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
        samples.push({
          t,
          answeredAt: nowMs(),
          overloaded: gauge(text, 'crowdgate_pressure_overloaded'),
          delayMs: gauge(text, 'crowdgate_pressure_event_loop_delay_seconds') * 1000,
          elu: gauge(text, 'crowdgate_pressure_event_loop_utilization'),
        });
      } catch {
        samples.push({ t, answeredAt: nowMs(), overloaded: NaN, delayMs: NaN, elu: NaN });
      }
      await sleep(Math.max(0, t + 250 - nowMs()));
    }
  })();
  return { samples, stop: async () => ((stopped = true), await loop) };
}

async function runOnce(o, index) {
  const token = randomBytes(24).toString('hex');
  const origin = await startOrigin(o);
  let gw;
  try {
    gw = await startGateway(o, origin.url, token);
    // Warm every page (a miss, then a hit), outside the measured crowd.
    // (Retried for up to 10 s: a gateway just started on a busy CPU may itself be under pressure.)
    for (let p = 1; p <= o.pages; p++) {
      for (let deadline = nowMs() + 10_000; ; ) {
        const res = await fetch(`${gw.url}/hot/${p}`, { signal: AbortSignal.timeout(5000) });
        await res.arrayBuffer();
        const cs = res.headers.get('cache-status') ?? '';
        if (res.status === 200 && /;\s*hit\b/.test(cs)) break;
        if (nowMs() > deadline) throw new Error(`warm-up: /hot/${p} is not a hit (${res.status} ${cs})`);
        await sleep(res.status === 200 ? 0 : 250);
      }
    }
    const scraper = startScraper(gw.adminUrl);
    const startAt = nowMs() + 300;
    const purgeAt = startAt + o.purgeAtMs;
    const loadP = runLoadWorker({ target: gw.url, connections: o.connections, pipelining: o.pipelining, pages: o.pages, startAt, durationMs: o.seconds * 1000 });
    await sleep(purgeAt - nowMs());
    const purge = { sentAt: nowMs(), ackAt: NaN, status: 0, body: undefined };
    try {
      const res = await fetch(`${gw.adminUrl}/purge`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ all: true, mode: 'hard' }),
        signal: AbortSignal.timeout(10_000),
      });
      purge.status = res.status;
      purge.body = await res.json().catch(() => undefined);
    } catch (err) {
      purge.body = { error: String(err) };
    }
    purge.ackAt = nowMs();
    const load = await loadP;
    await scraper.stop();
    const fetches = await (await fetch(`${origin.url}/__fetches`)).json();
    const r = analyse(o, index, { startAt, purge, load, samples: scraper.samples, fetches });
    process.stderr.write(
      `  run ${index}: ${fmtInt(r.requests)} requests (${fmtInt(r.rps)}/s), purge ${purge.status} ack +${fmtMs(r.purgeAckMs)} ms, ` +
        `max time to hit ${fmtTms(r.maxHitAgainMs)}, 503s after ${r.after503}, origin fetches/page after [${r.pages.map((p) => p.originFetchesAfter).join(' ')}], ` +
        `pressure over ${fmtPct(r.pressure.share)} (around purge ${fmtPct(r.pressure.aroundPurgeShare)}, while missing ${r.pressure.whileMissingOver}/${r.pressure.whileMissingSamples})\n`,
    );
    return r;
  } finally {
    await gw?.stop();
    await origin.stop();
  }
}

function analyse(o, index, { startAt, purge, load, samples, fetches }) {
  const t0 = purge.sentAt;
  const pages = [];
  for (let p = 0; p < o.pages; p++) pages.push({ page: `/hot/${p + 1}`, first200Ms: Infinity, hitAgainMs: Infinity, requestsAfter: 0, after503: 0, originFetchesBefore: 0, originFetchesAfter: 0, warmFetches: 0 });
  /** @type {Record<string, number>} */
  const after503ByLabel = {};
  /** @type {Record<string, number>} */
  const afterLabels = {};
  /** @type {Record<string, number>} */
  const beforeLabels = {};
  let before503 = 0;
  let otherErrors = 0;
  for (let i = 0; i < load.n; i++) {
    const pg = pages[load.page[i]];
    const st = load.status[i];
    const lbl = load.labels[load.label[i]];
    const endMs = load.endT[i];
    if (st !== 200 && st !== 503) otherErrors++;
    if (endMs < t0) {
      beforeLabels[`${st} ${lbl}`] = (beforeLabels[`${st} ${lbl}`] ?? 0) + 1;
      if (st === 503) before503++;
      continue;
    }
    afterLabels[`${st} ${lbl}`] = (afterLabels[`${st} ${lbl}`] ?? 0) + 1;
    pg.requestsAfter++;
    if (st === 503) {
      pg.after503++;
      after503ByLabel[lbl] = (after503ByLabel[lbl] ?? 0) + 1;
    }
    // Only requests sent after the purge was acknowledged can say "back": nothing they got can be
    // from before the purge.
    if (load.sendT[i] >= purge.ackAt && st === 200) {
      pg.first200Ms = Math.min(pg.first200Ms, endMs - t0);
      if (lbl.startsWith('hit')) pg.hitAgainMs = Math.min(pg.hitAgainMs, endMs - t0);
    }
  }
  for (const pg of pages) {
    const times = fetches[pg.page] ?? [];
    pg.warmFetches = times.filter((t) => t < startAt).length;
    pg.originFetchesBefore = times.filter((t) => t >= startAt && t < Math.floor(t0)).length;
    pg.originFetchesAfter = times.filter((t) => t >= Math.floor(t0)).length;
  }
  const valid = samples.filter((s) => Number.isFinite(s.overloaded) && s.t >= startAt && s.t <= startAt + o.seconds * 1000);
  const around = valid.filter((s) => s.t >= t0 - 500 && s.t <= t0 + 1000);
  // While the pages were missing: from the purge to the last page's first hit again.
  const missingTo = Math.max(...pages.map((p) => (Number.isFinite(p.hitAgainMs) ? p.hitAgainMs : o.seconds * 1000)));
  const whileMissing = valid.filter((s) => s.t >= t0 && s.t <= t0 + missingTo);
  const over = (xs) => (xs.length ? xs.filter((s) => s.overloaded === 1).length / xs.length : NaN);
  const lastEnd = load.n ? Math.max(...Array.from(load.endT.subarray(Math.max(0, load.n - 5000)))) : startAt;
  const after503 = pages.reduce((a, p) => a + p.after503, 0);
  return {
    run: index,
    requests: load.n,
    rps: load.n / o.seconds,
    purge: { status: purge.status, body: purge.body, sentAtMs: purge.sentAt - startAt },
    purgeAckMs: purge.ackAt - purge.sentAt,
    maxHitAgainMs: Math.max(...pages.map((p) => p.hitAgainMs)),
    maxFirst200Ms: Math.max(...pages.map((p) => p.first200Ms)),
    after503,
    after503ByLabel,
    before503,
    otherErrors,
    afterLabels,
    beforeLabels,
    pages,
    pressure: {
      samples: valid.length,
      failedScrapes: samples.length - samples.filter((s) => Number.isFinite(s.overloaded)).length,
      share: over(valid),
      aroundPurgeShare: over(around),
      aroundPurgeSamples: around.length,
      whileMissingOver: whileMissing.filter((s) => s.overloaded === 1).length,
      whileMissingSamples: whileMissing.length,
      elu: median(valid.map((s) => s.elu)),
      delayMs: median(valid.map((s) => s.delayMs)),
      series: samples.map((s) => ({ t: Math.round(s.t - startAt), o: s.overloaded, elu: Number(s.elu.toFixed(3)), d: Number(s.delayMs.toFixed(1)) })),
    },
    drainedMs: lastEnd - (startAt + o.seconds * 1000),
  };
}

// ---------------------------------------------------------------------------------------------
// Report.

/** ms for a table, "never" for a page that did not come back within the run. */
const fmtT = (ms) => (Number.isFinite(ms) ? fmtMs(ms) : 'never');
/** The same with its unit. */
const fmtTms = (ms) => (Number.isFinite(ms) ? `${fmtMs(ms)} ms` : 'never');

function report(o, runs, meta, notes) {
  // A run counts only if its purge was accepted and deleted at least every hot page.
  const purgeOk = (r) => r.purge.status === 200 && (r.purge.body?.purged ?? 0) >= o.pages;
  const pass = runs.every((r) => purgeOk(r) && r.maxHitAgainMs <= o.withinMs);
  const pressured = runs.filter((r) => r.pressure.aroundPurgeShare > 0).length;
  const overWhileMissing = runs.filter((r) => r.pressure.whileMissingOver > 0).length;
  const L = [];
  L.push(`# Purge in a crowd — ${meta.date}`, '');
  L.push(machineSentence(meta), '');
  L.push(`Command: \`${meta.command}\``, '');
  for (const n of notes) L.push(`> ${n}`, '');
  L.push(
    `${o.pages} hot pages (~${fmtInt(o.pageBytes)} B, origin latency ${o.originMs} ms, \`max-age=60\`), ${o.connections} keep-alive connections in a closed loop for ${o.seconds} s, ` +
      `\`POST /purge {"all": true, "mode": "hard"}\` at ${o.purgeAtMs / 1000} s; gateway, origin and generator pinned to CPU ${o.cpu ?? '(unpinned)'}; ` +
      `default admission (pressure gate on, default thresholds); gateway from \`${o.gatewayDir === REPO_DIR ? 'dist/' : o.gatewayDir}\`. ${runs.length} runs, fresh gateway and origin each.`,
    '',
  );
  L.push(
    'Times are from the purge being sent (in parentheses: from its answer, which a CPU-bound gateway gives late) to the end of the first answer of that kind among requests sent after the purge was acknowledged; "503s after" counts answers that ended after the purge was sent; origin fetches per page count from the purge on (1 = one collapsed fill); pressure = share of 250 ms `/metrics` scrapes reading `crowdgate_pressure_overloaded 1` over the run, and in −0.5 s … +1 s around the purge.',
    '',
  );
  L.push('| run | req/s | purge ack ms | max time to first 200 ms | max time to hit again ms (from ack) | 503s after purge (detail) | origin fetches per page after purge | pressure over | share of samples: run (around purge) | over while pages missing | ELU / loop delay p99 (median) |');
  L.push('|---:|---:|---:|---:|---:|---|---|---|---|---|---|');
  for (const r of runs) {
    const det = Object.entries(r.after503ByLabel).map(([k, v]) => `${v} ${k}`).join(', ');
    const fetchesPer = r.pages.map((p) => p.originFetchesAfter).join(' / ');
    const over = r.pressure.share > 0 ? 'yes' : 'no';
    L.push(
      `| ${r.run} | ${fmtInt(r.rps)} | ${fmtMs(r.purgeAckMs)} | ${fmtT(r.maxFirst200Ms)} | ${fmtT(r.maxHitAgainMs)} (${fmtT(r.maxHitAgainMs - r.purgeAckMs)}) | ${fmtInt(r.after503)}${det ? ` (${det})` : ''} | ${fetchesPer} | ${over} | ${fmtPct(r.pressure.share)} (${fmtPct(r.pressure.aroundPurgeShare)}) | ${r.pressure.whileMissingOver}/${r.pressure.whileMissingSamples} | ${r.pressure.elu.toFixed(3)} / ${fmtMs(r.pressure.delayMs)} ms |`,
    );
  }
  L.push('');
  L.push(`Max time to hit again across runs: median ${fmtTms(median(runs.map((r) => r.maxHitAgainMs)))} (${fmtTms(median(runs.map((r) => r.maxHitAgainMs - r.purgeAckMs)))} from the purge's answer), worst ${fmtTms(Math.max(...runs.map((r) => r.maxHitAgainMs)))}. Pressure gate over around the purge in ${pressured} of ${runs.length} runs, and read over at least once while pages were missing in ${overWhileMissing} of ${runs.length}.`, '');
  L.push('Answers after the purge, by status and Cache-Status (all runs):', '');
  const agg = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.afterLabels)) agg[k] = (agg[k] ?? 0) + v;
  L.push('| status + Cache-Status | answers |', '|---|---:|');
  for (const [k, v] of Object.entries(agg).sort((a, b) => b[1] - a[1])) L.push(`| ${k} | ${fmtInt(v)} |`);
  L.push('');
  const other = runs.reduce((a, r) => a + r.otherErrors, 0);
  const before503 = runs.reduce((a, r) => a + r.before503, 0);
  L.push(`Before the purge: ${before503} 503s; other statuses or transport errors over all runs: ${other}.`, '');
  L.push(
    `${pass ? 'PASS' : 'FAIL'}: every page a hit again within ${o.withinMs} ms of the purge in every run (worst ${fmtTms(Math.max(...runs.map((r) => r.maxHitAgainMs)))}).`,
  );
  for (const r of runs.filter((x) => !purgeOk(x))) L.push(`FAIL: run ${r.run}: the purge answered ${r.purge.status} ${JSON.stringify(r.purge.body)}.`);
  if (pressured < runs.length)
    L.push(`NOTE: the pressure gate was not over around the purge in ${runs.length - pressured} run(s); those runs do not exercise the overloaded path.`);
  L.push('');
  return { md: L.join('\n'), pass };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      'serve-origin': { type: 'string' },
      runs: { type: 'string', default: '10' },
      seconds: { type: 'string', default: '10' },
      'purge-at': { type: 'string', default: '4' },
      connections: { type: 'string', default: '200' },
      pipelining: { type: 'string', default: '1' },
      pages: { type: 'string', default: '5' },
      'page-bytes': { type: 'string', default: '15000' },
      'origin-ms': { type: 'string', default: '200' },
      within: { type: 'string', default: '1000' },
      cpus: { type: 'string', default: '0' },
      'gateway-dir': { type: 'string' },
    },
  });
  if (values['serve-origin'])
    return serveOrigin(Number(values['serve-origin']), Number(values['page-bytes']), Number(values['origin-ms']));

  const pin = values.cpus !== 'none' && hasCommand('taskset');
  const o = {
    runs: Math.max(1, Math.min(100, Number(values.runs))),
    seconds: Math.max(2, Math.min(120, Number(values.seconds))),
    purgeAtMs: Number(values['purge-at']) * 1000,
    connections: Math.max(1, Math.min(2000, Number(values.connections))),
    pipelining: Math.max(1, Math.min(16, Number(values.pipelining))),
    pages: Math.max(1, Math.min(200, Number(values.pages))),
    pageBytes: Number(values['page-bytes']),
    originMs: Number(values['origin-ms']),
    withinMs: Number(values.within),
    cpu: pin ? values.cpus : undefined,
    gatewayDir: values['gateway-dir'] ?? REPO_DIR,
  };
  if (!(o.purgeAtMs > 0 && o.purgeAtMs < o.seconds * 1000)) throw new Error('--purge-at must fall inside the run');

  // A single-CPU list: this process (and its worker) pinned there too, with the one-CPU GC flags.
  if (pin) {
    if (/^\d+$/.test(o.cpu)) {
      const code = relaunchForOneCpu();
      if (code !== undefined) process.exit(code);
    }
  }
  // Before pinning: pinned, this process sees one CPU.
  const loadAtStart = noteMachineLoad('start');
  if (pin) pinSelf(o.cpu);
  const notes = [];
  if (!existsSync(join(o.gatewayDir, 'dist', 'main.js'))) throw new Error(`${o.gatewayDir}/dist/main.js is missing (run \`npm run build\`)`);
  if (o.gatewayDir === REPO_DIR) {
    const state = gatewayBuildState();
    if (!state.ok) {
      process.stderr.write(`warning: ${state.reason}; benchmarking the build that is there\n`);
      notes.push(`${state.reason}: the build that was there was measured.`);
    }
  }
  if (loadAtStart > cpus().length / 2)
    notes.push(`The machine was busy (load average ${loadAtStart} at start on ${cpus().length} CPUs): other work shared the CPUs.`);
  process.stderr.write(`purge-crowd: ${o.runs} runs × ${o.seconds} s, purge at ${o.purgeAtMs / 1000} s, ${o.connections} connections, CPU ${o.cpu ?? 'unpinned'}\n`);

  const runs = [];
  try {
    for (let i = 1; i <= o.runs; i++) runs.push(await runOnce(o, i));
  } finally {
    await stopAll();
  }
  const meta = runFacts('purge-crowd.mjs', loadAtStart);
  const { md, pass } = report(o, runs, meta, notes);
  writeReport({ dir: join(BENCH_DIR, 'results'), name: 'purge-crowd', date: meta.date, json: { meta, options: o, notes, pass, runs }, md });
  process.exitCode = pass ? 0 : 1;
}

if (!isMainThread && workerData?.role === 'purge-crowd-load') {
  await workerMain();
} else if (isMainThread) {
  await main();
}
