/**
 * The Redis shared tier (issue 6), two questions:
 *
 * 1. Origin fetches per hot page per TTL, with 1 and 3 gateway instances, with and without Redis.
 *    `--pages` (5) hot pages of the fragile origin, all with a TTL of 2 s (/page/N with
 *    7·N mod 10 = 1), are requested in a closed loop by `--workers` (12) clients spread
 *    round-robin over the instances for `--seconds` (10), after one warm-up request per page per
 *    instance. Figure: origin fetches of those pages ÷ (pages × seconds / TTL). Ideal 1 (one fetch per page per TTL for the whole fleet);
 *    memory-only instances each keep their own copy, so 3 instances cost about 3.
 *
 * 2. The hit-path cost of the tiered store (memory L1 → Redis L2) against memory only: a hot
 *    page (an L1 hit either way: Redis is not touched on an L1 hit) under `wrk` (1 thread,
 *    `--connections` 32, `--hit-seconds` 5 s), runs alternating memory / tiered `--runs` (5)
 *    times; medians of requests/s and p50/p99, and the tiered ÷ memory ratio.
 *    Pinning as in hit-throughput.mjs: gateway on CPU 0, wrk on CPU 1, when taskset exists.
 *
 * Every process (redis-server, origin, gateways) is a child started here and stopped by PID.
 * Results go to bench/results/redis-tier-<timestamp>.{json,md}.
 *
 * Usage: node bench/redis-tier.mjs [--seconds 10] [--pages 5] [--workers 12] [--runs 5]
 *        [--hit-seconds 5] [--connections 32] [--skip-hit] [--skip-fetches]
 */
import { writeReport } from './lib/report.mjs';
import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { pageTtlSeconds } from './fragile-origin.mjs';
import { freePort, noteMachineLoad, sleep, startProcess, stopAll, waitForPort } from './lib/procs.mjs';
import { BENCH_DIR, gatewayAvailable, hasCommand, makeRunDir, pinned, startCrowdgate, startOrigin, startRedis } from './lib/setups.mjs';
import { fmtInt, fmtMs, median } from './lib/stats.mjs';

const SERVER_CPU = '0';
const LOADGEN_CPU = '1';
const TTL_SECONDS = 2;

/** Pages of the fragile origin whose TTL is TTL_SECONDS. */
function hotPages(count) {
  const pages = [];
  for (let n = 1; pages.length < count; n++) if (pageTtlSeconds(n) === TTL_SECONDS) pages.push(n);
  return pages;
}


/** `count` gateways on one origin, sharing `redisUrl` when given. */
async function startGateways(count, originUrl, redisUrl, label, cpu) {
  const extra = redisUrl ? { redis: { url: redisUrl, keyPrefix: `${label}:` } } : {};
  return Promise.all(
    Array.from({ length: count }, (_, i) => startCrowdgate({ originUrl, label: `${label}-${i + 1}`, extra, ...(cpu ? { cpu } : {}) })),
  );
}

/** Closed loop: `workers` clients, round-robin over the gateways, for `seconds`. */
async function drive(gateways, paths, workers, seconds) {
  const pools = gateways.map((g) => new Pool(g.url, { connections: Math.ceil(workers / gateways.length) + 1 }));
  const endAt = Date.now() + seconds * 1000;
  let requests = 0;
  let failures = 0;
  const worker = async (w) => {
    for (let i = w; Date.now() < endAt; i += workers) {
      try {
        const res = await pools[i % pools.length].request({ path: paths[i % paths.length], method: 'GET' });
        await res.body.dump();
        if (res.statusCode !== 200) failures++;
      } catch {
        failures++;
      }
      requests++;
    }
  };
  await Promise.all(Array.from({ length: workers }, (_, w) => worker(w)));
  await Promise.all(pools.map((p) => p.destroy()));
  return { requests, failures };
}

async function originFetches(originUrl, paths) {
  const stats = await (await fetch(`${originUrl}/__stats`)).json();
  return paths.reduce((n, p) => n + (stats.fetchesByPath?.[p] ?? 0), 0);
}

/** Part 1: origin fetches per hot page per TTL. */
async function fetchesPerTtl(o) {
  const rows = [];
  for (const [instances, withRedis] of [
    [1, false],
    [1, true],
    [3, false],
    [3, true],
  ]) {
    const label = `redis-tier-${instances}x-${withRedis ? 'redis' : 'memory'}`;
    const origin = await startOrigin({ concurrency: 10_000, serviceMs: 20, label: `${label}-origin` });
    const redis = withRedis ? await startRedis(`${label}-redis`) : undefined;
    try {
      const gateways = await startGateways(instances, origin.url, redis?.url, label);
      const pages = hotPages(o.pages);
      const paths = pages.map((n) => `/page/${n}`);
      // Warm: every page on every instance, so the count below starts from a filled fleet.
      for (const g of gateways) for (const path of paths) await (await fetch(`${g.url}${path}`)).arrayBuffer();
      const before = await originFetches(origin.url, paths);
      const load = await drive(gateways, paths, o.workers, o.seconds);
      const fetched = (await originFetches(origin.url, paths)) - before;
      const perPagePerTtl = fetched / (pages.length * (o.seconds / TTL_SECONDS));
      rows.push({ instances, redis: withRedis, requests: load.requests, failures: load.failures, originFetches: fetched, perPagePerTtl });
      process.stderr.write(
        `  ${instances} instance(s) ${withRedis ? 'with' : 'without'} Redis: ${fetched} fetches, ${perPagePerTtl.toFixed(2)} per page per TTL (${fmtInt(load.requests)} requests, ${load.failures} failed)\n`,
      );
      await Promise.all(gateways.map((g) => g.stop()));
    } finally {
      await redis?.stop();
      await origin.stop();
    }
  }
  return rows;
}

function runWrk(url, seconds, connections) {
  const [cmd, args] = pinned(LOADGEN_CPU, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', `${url}/bench`]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (out.status !== 0) throw new Error(`wrk failed: ${out.stderr || out.stdout}`);
  const text = out.stdout;
  const toMs = (v, unit) => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN);
  const lat = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(text);
    return m ? toMs(m[1], m[2]) : NaN;
  };
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]),
    p50: lat(50),
    p99: lat(99),
    non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0),
  };
}

async function warm(url) {
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${url}/bench`);
    await res.arrayBuffer();
    if (/;\s*hit\b/.test(res.headers.get('cache-status') ?? '')) return;
    await sleep(50);
  }
  throw new Error(`${url} never answered a cache hit`);
}

/** Part 2: hit-path cost, memory-only vs tiered, alternating runs. */
async function hitPathCost(o) {
  const port = await freePort();
  const dir = makeRunDir('redis-tier-static');
  const staticProc = startProcess('static', process.execPath, [join(BENCH_DIR, 'lib', 'static-server.mjs'), '--port', String(port), '--bytes', '1024'], {
    logFile: join(dir, 'static.log'),
  });
  await waitForPort(port, { proc: staticProc });
  const originUrl = `http://127.0.0.1:${port}`;
  const redis = await startRedis('redis-tier-hit-redis');
  try {
    const [memory] = await startGateways(1, originUrl, undefined, 'redis-tier-hit-memory', SERVER_CPU);
    const [tiered] = await startGateways(1, originUrl, redis.url, 'redis-tier-hit-tiered', SERVER_CPU);
    await warm(memory.url);
    await warm(tiered.url);
    const samples = { memory: [], tiered: [] };
    for (let i = 0; i < o.runs; i++) {
      for (const [name, g] of [
        ['memory', memory],
        ['tiered', tiered],
      ]) {
        const r = runWrk(g.url, o.hitSeconds, o.connections);
        samples[name].push(r);
        process.stderr.write(`  hit path ${name} run ${i + 1}: ${fmtInt(r.rps)} req/s, p50 ${fmtMs(r.p50)} ms, p99 ${fmtMs(r.p99)} ms\n`);
      }
    }
    await memory.stop();
    await tiered.stop();
    const summary = (name) => ({
      rps: median(samples[name].map((s) => s.rps)),
      p50: median(samples[name].map((s) => s.p50)),
      p99: median(samples[name].map((s) => s.p99)),
      non2xx: samples[name].reduce((n, s) => n + s.non2xx, 0),
    });
    const m = summary('memory');
    const t = summary('tiered');
    return { memory: m, tiered: t, rpsRatio: t.rps / m.rps, p50Ratio: t.p50 / m.p50, samples };
  } finally {
    await redis.stop();
    await staticProc.stop();
  }
}

function toMarkdown(result) {
  const lines = [`# Redis shared tier — ${result.at}`, '', `Machine: ${result.machine}; load average ${result.loadAtStart} at start, ${result.loadAtEnd} at end.`, ''];
  if (result.fetches) {
    lines.push(
      `## Origin fetches per hot page per TTL (${result.options.pages} pages, TTL ${TTL_SECONDS} s, ${result.options.workers} clients, ${result.options.seconds} s; ideal 1)`,
      '',
      '| instances | Redis | requests | failed | origin fetches | per page per TTL |',
      '|---:|---|---:|---:|---:|---:|',
      ...result.fetches.map(
        (r) => `| ${r.instances} | ${r.redis ? 'yes' : 'no'} | ${fmtInt(r.requests)} | ${r.failures} | ${r.originFetches} | ${r.perPagePerTtl.toFixed(2)} |`,
      ),
      '',
    );
  }
  if (result.hit) {
    const h = result.hit;
    lines.push(
      `## Hit path: tiered (memory → Redis) vs memory only (wrk -t1 -c${result.options.connections} -d${result.options.hitSeconds}s, ${result.options.runs} alternating runs, medians)`,
      '',
      '| store | req/s | p50 ms | p99 ms | non-2xx |',
      '|---|---:|---:|---:|---:|',
      `| memory | ${fmtInt(h.memory.rps)} | ${fmtMs(h.memory.p50)} | ${fmtMs(h.memory.p99)} | ${h.memory.non2xx} |`,
      `| tiered | ${fmtInt(h.tiered.rps)} | ${fmtMs(h.tiered.p50)} | ${fmtMs(h.tiered.p99)} | ${h.tiered.non2xx} |`,
      `| ratio tiered / memory | ${h.rpsRatio.toFixed(3)} | ${h.p50Ratio.toFixed(3)} | | |`,
      '',
    );
  }
  return lines.join('\n');
}

async function main() {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '10' },
      pages: { type: 'string', default: '5' },
      workers: { type: 'string', default: '12' },
      runs: { type: 'string', default: '5' },
      'hit-seconds': { type: 'string', default: '5' },
      connections: { type: 'string', default: '32' },
      'skip-hit': { type: 'boolean', default: false },
      'skip-fetches': { type: 'boolean', default: false },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  const o = {
    seconds: Number(values.seconds),
    pages: Number(values.pages),
    workers: Number(values.workers),
    runs: Number(values.runs),
    hitSeconds: Number(values['hit-seconds']),
    connections: Number(values.connections),
  };
  const gw = gatewayAvailable();
  if (gw !== true) throw new Error(gw);
  if (!hasCommand('redis-server')) throw new Error('redis-server is not installed (apt-get install -y redis-server)');
  if (!values['skip-hit'] && !hasCommand('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk), or pass --skip-hit');
  const loadAtStart = noteMachineLoad('start');
  const result = {
    at: new Date().toISOString(),
    machine: `${availableParallelism()} × ${cpus()[0]?.model ?? 'CPU'}`,
    options: o,
    loadAtStart,
    fetches: values['skip-fetches'] ? undefined : await fetchesPerTtl(o),
    hit: values['skip-hit'] ? undefined : await hitPathCost(o),
    loadAtEnd: 0,
  };
  result.loadAtEnd = noteMachineLoad('end');
  writeReport({ dir: values.out, name: 'redis-tier', date: result.at, json: result, md: toMarkdown(result) });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main()
    .catch((err) => {
      process.stderr.write(`${err.stack ?? err}\n`);
      process.exitCode = 1;
    })
    .finally(() => stopAll());
}
