/**
 * Cache-hit throughput: how close crowdgate serving a cached hit comes to a bare node:http
 * server answering with a preallocated buffer (the ceiling for any Node server on this box),
 * for 1 KiB and 64 KiB bodies. Optionally nginx and Varnish serving the same hit (--peers).
 *
 * Method: `wrk` (closed loop, keep-alive, 64 connections, 1 thread) against each server in
 * turn. `--launches` times, every server is started afresh (a Node process's speed differs by a
 * few percent from one start to the next), warmed up, and run `--runs` times, in an order that
 * rotates from run to run, so drift in the machine's load hits all alike. Medians over all runs
 * of requests/s and of wrk's p50/p99 latency are reported, with the ratio crowdgate ÷ ceiling,
 * and each run's ratio to the ceiling's run of the same launch and index (median, min–max). The
 * cache is warmed first (until Cache-Status says hit) and the origin's request count is checked
 * afterwards to prove the runs were hits.
 *
 * Pinning: when `taskset` exists, the server under test is pinned to CPU 0 and wrk to CPU 1,
 * so the generator never steals the server's core (the origin is idle during the runs).
 *
 * Warm-up: one unmeasured `--warmup`-second wrk run per server before the measured ones.
 *
 * HTTP/2 (`--protocols h1,h2` or `h2`): the same method over TLS with `h2load` (nghttp2-client)
 * instead of wrk: crowdgate's HTTPS listener against a bare node:http2 secure server with the
 * same self-signed certificate (made with the openssl CLI per run), `--streams` concurrent
 * streams per connection (default 1, so 64 connections carry 64 requests at once as in wrk).
 * h2load reports a mean latency, not percentiles: the table's p50 column is that mean for h2.
 *
 * Usage: node bench/hit-throughput.mjs [--launches 3] [--runs 3] [--seconds 5] [--warmup 3] [--sizes 1024,65536] [--peers]
 *          [--only crowdgate,nginx,varnish] [--connections 64] [--protocols h1,h2] [--streams 1]
 */
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import https from 'node:https';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { median, fmtInt, fmtMs } from './lib/stats.mjs';
import { freePort, startProcess, waitForPort, stopAll, sleep, noteMachineLoad } from './lib/procs.mjs';
import {
  BENCH_DIR,
  makeRunDir,
  pinned,
  pinnedNode,
  hasCommand,
  startCrowdgate,
  startNginx,
  startVarnish,
  gatewayAvailable,
} from './lib/setups.mjs';

const SERVER_CPU = '0';
const LOADGEN_CPU = '1';

/** Starts bench/lib/static-server.mjs with a body of `bytes` (node:http2 over TLS when `tls` is given). */
async function startStatic(label, bytes, cpu, tls) {
  const port = await freePort();
  const dir = makeRunDir(label);
  const [cmd, args] = pinnedNode(cpu, [
    join(BENCH_DIR, 'lib', 'static-server.mjs'), '--port', String(port), '--bytes', String(bytes),
    ...(tls ? ['--tls-cert', tls.certFile, '--tls-key', tls.keyFile] : []),
  ]);
  const proc = startProcess(label, cmd, args, { logFile: join(dir, 'static.log') });
  await waitForPort(port, { proc });
  return { name: label, url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, pid: proc.pid, stop: () => proc.stop() };
}

/** A self-signed certificate for 127.0.0.1 made with the openssl CLI, for the h2 runs. */
function makeBenchCertificate() {
  const dir = makeRunDir('tls');
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=bench.test', '-addext', 'subjectAltName=DNS:bench.test,IP:127.0.0.1'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { certFile, keyFile };
}

/** GET over HTTPS (the bench's self-signed certificate): Cache-Status and the body drained. */
function getTls(url) {
  return new Promise((resolve, reject) => {
    https
      .get(url, { rejectUnauthorized: false, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.headers['cache-status'] ?? '')));
      })
      .on('error', reject);
  });
}

/** warm() over HTTPS: the https page is its own cache key. */
async function warmTls(url) {
  for (let i = 0; i < 50; i++) {
    if (/;\s*hit\b/i.test(await getTls(`${url}/bench`))) return;
    await sleep(50);
  }
  throw new Error(`${url} never answered a cache hit over HTTPS`);
}

/**
 * One h2load run (HTTP/2 over TLS, ALPN h2); requests/s and mean latency in ms (h2load reports
 * no percentiles: p50 carries the mean, p99 is left empty).
 */
function runH2load(url, seconds, connections, streams) {
  const [cmd, args] = pinned(LOADGEN_CPU, 'h2load', ['-t1', `-c${connections}`, `-m${streams}`, '-D', String(seconds), `${url}/bench`]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (out.status !== 0) throw new Error(`h2load failed: ${out.stderr || out.stdout}`);
  const text = out.stdout;
  if (!/Application protocol: h2/.test(text)) throw new Error(`h2load did not negotiate h2:\n${text}`);
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(text)?.[1]);
  const toMs = (v, unit) => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN);
  const m = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(text);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(text);
  const failed = /requests: .*?(\d+) failed, (\d+) errored/.exec(text);
  return {
    rps,
    p50: m ? toMs(m[1], m[2]) : NaN,
    p99: NaN,
    non2xx: codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : NaN,
    socketErrors: failed && (Number(failed[1]) || Number(failed[2])) ? `failed ${failed[1]}, errored ${failed[2]}` : undefined,
  };
}

/** GETs /bench until the response says it is a cache hit; throws after 50 tries. */
async function warm(url) {
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${url}/bench`);
    await res.arrayBuffer();
    const cs = `${res.headers.get('cache-status') ?? ''} ${res.headers.get('x-cache-status') ?? ''}`;
    if (/;\s*hit\b|\bHIT\b/i.test(cs)) return;
    await sleep(50);
  }
  throw new Error(`${url} never answered a cache hit`);
}

/**
 * One wrk run; returns requests/s and latency p50/p99 in ms.
 * wrk prints "Requests/sec: N" and, with --latency, "50% 1.23ms" lines.
 */
function runWrk(url, seconds, connections) {
  const [cmd, args] = pinned(LOADGEN_CPU, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', `${url}/bench`]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (out.status !== 0) throw new Error(`wrk failed: ${out.stderr || out.stdout}`);
  const text = out.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const toMs = (v, unit) => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN);
  const lat = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(text);
    return m ? toMs(m[1], m[2]) : NaN;
  };
  const errors = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? '0';
  const socketErrors = /Socket errors:[^\n]*/.exec(text)?.[0];
  return { rps, p50: lat(50), p99: lat(99), non2xx: Number(errors), socketErrors };
}

async function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      launches: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '3' },
      sizes: { type: 'string', default: '1024,65536' },
      connections: { type: 'string', default: '64' },
      peers: { type: 'boolean', default: false },
      protocols: { type: 'string', default: 'h1' },
      streams: { type: 'string', default: '1' },
      only: { type: 'string' },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  const protocols = values.protocols.split(',');
  const streams = Number(values.streams);
  if (protocols.includes('h1') && !hasCommand('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  if (protocols.includes('h2') && !hasCommand('h2load')) throw new Error('h2load is not installed (apt-get install -y nghttp2-client)');
  const benchTls = protocols.includes('h2') ? makeBenchCertificate() : undefined;
  const runs = Number(values.runs);
  const launches = Number(values.launches);
  const seconds = Number(values.seconds);
  const warmupSeconds = Number(values.warmup);
  const connections = Number(values.connections);
  const sizes = values.sizes.split(',').map(Number);
  const isPinned = hasCommand('taskset') && availableParallelism() >= 2;
  const wanted = values.only ? values.only.split(',') : ['crowdgate', ...(values.peers ? ['nginx', 'varnish'] : [])];
  const contenders = [];
  if (wanted.includes('crowdgate')) {
    const gw = gatewayAvailable();
    if (gw === true) contenders.push('crowdgate');
    else process.stderr.write(`crowdgate skipped: ${gw}\n`);
  }
  for (const [name, cmd] of [['nginx', 'nginx'], ['varnish', 'varnishd']])
    if (wanted.includes(name)) {
      if (hasCommand(cmd)) contenders.push(name);
      else process.stderr.write(`${name} skipped: ${cmd} not installed\n`);
    }

  const loadAtStart = noteMachineLoad('start');
  const results = [];
  for (const protocol of protocols)
  for (const bytes of sizes) {
    const h2 = protocol === 'h2';
    const load = (url, secs) => (h2 ? runH2load(url, secs, connections, streams) : runWrk(url, secs, connections));
    const ceilingName = h2 ? `ceiling-h2-${bytes}` : `ceiling-${bytes}`;
    /** @type {Record<string, ReturnType<typeof runWrk>[]>} */
    const samples = {};
    let originFetchesDuringRuns = 0;
    // Each launch starts every server afresh: a Node process's speed varies by a few percent from
    // one start to the next (JIT and memory layout), so one launch per server would be a sample of one.
    for (let launch = 0; launch < launches; launch++) {
      const ceiling = await startStatic(ceilingName, bytes, SERVER_CPU, h2 ? benchTls : undefined);
      const origin = await startStatic(`origin-${bytes}`, bytes, undefined);
      /** @type {{ name: string, url: string, stop: () => Promise<void> }[]} */
      const servers = [ceiling];
      try {
        for (const c of contenders) {
          if (h2 && c !== 'crowdgate') continue; // the peers are measured over HTTP/1.1 only
          if (h2) {
            const tlsPort = await freePort();
            const s = await startCrowdgate({
              originUrl: origin.url,
              label: `${c}-h2-hit-${bytes}`,
              cpu: SERVER_CPU,
              extra: { tls: { host: '127.0.0.1', port: tlsPort } },
              siteExtra: { tls: benchTls },
            });
            const url = `https://127.0.0.1:${tlsPort}`;
            await warmTls(url);
            servers.push({ ...s, url, name: 'crowdgate-h2' });
            continue;
          }
          const start = { crowdgate: startCrowdgate, nginx: startNginx, varnish: startVarnish }[c];
          const s = await start({ originUrl: origin.url, label: `${c}-hit-${bytes}`, cpu: SERVER_CPU });
          await warm(s.url);
          servers.push({ ...s, name: c });
        }
        // Unmeasured warm-up of every server under the same load: JIT, and the kernel growing each
        // connection's socket buffers (the first seconds of 64 KiB runs were up to 2x slower).
        for (const s of servers) load(s.url, warmupSeconds);
        const originBefore = (await (await fetch(`${origin.url}/__stats`)).json()).benchRequests;
        for (let i = 0; i < runs; i++) {
          // Rotate the order each run, so no server always runs first or right after another.
          const k = (launch * runs + i) % servers.length;
          for (const s of [...servers.slice(k), ...servers.slice(0, k)]) {
            const r = load(s.url, seconds);
            (samples[s.name] ??= []).push({ ...r, launch });
            process.stderr.write(`  ${protocol} ${bytes} B launch ${launch + 1} run ${i + 1} ${s.name}: ${fmtInt(r.rps)} req/s, p99 ${fmtMs(r.p99)} ms\n`);
          }
        }
        const originAfter = (await (await fetch(`${origin.url}/__stats`)).json()).benchRequests;
        originFetchesDuringRuns += originAfter - originBefore;
      } finally {
        for (const s of servers.reverse()) await s.stop();
        await origin.stop();
      }
    }
    const row = { protocol, bytes, originFetchesDuringRuns, servers: {} };
    const ceilingRuns = samples[ceilingName];
    for (const [name, rs] of Object.entries(samples)) {
      // Each run's req/s over the ceiling's in the same launch and run index (taken minutes apart at most).
      const ratios = rs.map((r, j) => r.rps / ceilingRuns[j].rps);
      row.servers[name] = {
        rpsMedian: median(rs.map((r) => r.rps)),
        p50Median: median(rs.map((r) => r.p50)),
        p99Median: median(rs.map((r) => r.p99)),
        pairRatioMedian: median(ratios),
        pairRatioMin: Math.min(...ratios),
        pairRatioMax: Math.max(...ratios),
        non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
        socketErrors: rs.map((r) => r.socketErrors).filter(Boolean),
        runs: rs,
      };
    }
    results.push(row);
  }

  const meta = {
    ...runFacts('hit-throughput.mjs', loadAtStart),
    pinning: isPinned ? `server under test on CPU ${SERVER_CPU}, wrk on CPU ${LOADGEN_CPU} (taskset)` : 'none (taskset missing or 1 CPU)',
    wrk: `wrk -t1 -c${connections} -d${seconds}s --latency`,
    h2load: protocols.includes('h2') ? `h2load -t1 -c${connections} -m${streams} -D ${seconds}` : undefined,
    protocols,
    warmupSeconds,
    runs,
    launches,
  };
  const { date } = meta;
  const L = [`# Cache-hit throughput — ${date}`, ''];
  L.push(
    `${machineSentence(meta)} ${protocols.includes('h1') ? `HTTP/1.1: ${meta.wrk}. ` : ''}${meta.h2load ? `HTTP/2 over TLS: ${meta.h2load}, against a bare node:http2 secure server as the ceiling (p50 column: h2load's mean). ` : ''}${launches} launches (every server started afresh each time), each with ${warmupSeconds} s of unmeasured warm-up per server and then ${runs} runs per server in rotating order: ${launches * runs} runs per server; medians. "÷ ceiling" is the ratio of medians; "pairs" is each run over the ceiling's run of the same launch and index (median, min–max). Pinning: ${meta.pinning}. Command: \`${meta.command}\``,
    '',
  );
  L.push('| protocol | body | server | req/s (median) | ÷ ceiling | pairs: median (min–max) | p50 ms | p99 ms | non-2xx | origin fetches of /bench during runs |');
  L.push('|---|---:|---|---:|---:|---|---:|---:|---:|---:|');
  for (const row of results) {
    const ceil = row.servers[row.protocol === 'h2' ? `ceiling-h2-${row.bytes}` : `ceiling-${row.bytes}`] ?? Object.values(row.servers)[0];
    for (const [name, s] of Object.entries(row.servers)) {
      L.push(
        `| ${row.protocol === 'h2' ? 'h2 (TLS)' : 'HTTP/1.1'} | ${row.bytes >= 1024 ? `${row.bytes / 1024} KiB` : `${row.bytes} B`} | ${name.replace(/-\d+$/, '')} | ${fmtInt(s.rpsMedian)} | ${(s.rpsMedian / ceil.rpsMedian).toFixed(2)} | ${name.startsWith('ceiling') ? '—' : `${s.pairRatioMedian.toFixed(2)} (${s.pairRatioMin.toFixed(2)}–${s.pairRatioMax.toFixed(2)})`} | ${fmtMs(s.p50Median)} | ${fmtMs(s.p99Median)} | ${s.non2xx} | ${name.startsWith('ceiling') ? '—' : row.originFetchesDuringRuns} |`,
      );
    }
  }
  const md = L.join('\n') + '\n';
  writeReport({ dir: values.out, name: 'hit-throughput', date, json: { meta, results }, md });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    await main();
  } finally {
    await stopAll();
  }
}
