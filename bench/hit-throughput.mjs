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
 * Usage: node bench/hit-throughput.mjs [--launches 3] [--runs 3] [--seconds 5] [--warmup 3] [--sizes 1024,65536] [--peers]
 *          [--only crowdgate,nginx,varnish] [--connections 64]
 */
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
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

/** Starts bench/lib/static-server.mjs with a body of `bytes`. */
async function startStatic(label, bytes, cpu) {
  const port = await freePort();
  const dir = makeRunDir(label);
  const [cmd, args] = pinnedNode(cpu, [
    join(BENCH_DIR, 'lib', 'static-server.mjs'), '--port', String(port), '--bytes', String(bytes),
  ]);
  const proc = startProcess(label, cmd, args, { logFile: join(dir, 'static.log') });
  await waitForPort(port, { proc });
  return { name: label, url: `http://127.0.0.1:${port}`, pid: proc.pid, stop: () => proc.stop() };
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
      only: { type: 'string' },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  if (!hasCommand('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
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
  for (const bytes of sizes) {
    /** @type {Record<string, ReturnType<typeof runWrk>[]>} */
    const samples = {};
    let originFetchesDuringRuns = 0;
    // Each launch starts every server afresh: a Node process's speed varies by a few percent from
    // one start to the next (JIT and memory layout), so one launch per server would be a sample of one.
    for (let launch = 0; launch < launches; launch++) {
      const ceiling = await startStatic(`ceiling-${bytes}`, bytes, SERVER_CPU);
      const origin = await startStatic(`origin-${bytes}`, bytes, undefined);
      /** @type {{ name: string, url: string, stop: () => Promise<void> }[]} */
      const servers = [ceiling];
      try {
        for (const c of contenders) {
          const start = { crowdgate: startCrowdgate, nginx: startNginx, varnish: startVarnish }[c];
          const s = await start({ originUrl: origin.url, label: `${c}-hit-${bytes}`, cpu: SERVER_CPU });
          await warm(s.url);
          servers.push({ ...s, name: c });
        }
        // Unmeasured warm-up of every server under the same load: JIT, and the kernel growing each
        // connection's socket buffers (the first seconds of 64 KiB runs were up to 2x slower).
        for (const s of servers) runWrk(s.url, warmupSeconds, connections);
        const originBefore = (await (await fetch(`${origin.url}/__stats`)).json()).benchRequests;
        for (let i = 0; i < runs; i++) {
          // Rotate the order each run, so no server always runs first or right after another.
          const k = (launch * runs + i) % servers.length;
          for (const s of [...servers.slice(k), ...servers.slice(0, k)]) {
            const r = runWrk(s.url, seconds, connections);
            (samples[s.name] ??= []).push({ ...r, launch });
            process.stderr.write(`  ${bytes} B launch ${launch + 1} run ${i + 1} ${s.name}: ${fmtInt(r.rps)} req/s, p99 ${fmtMs(r.p99)} ms\n`);
          }
        }
        const originAfter = (await (await fetch(`${origin.url}/__stats`)).json()).benchRequests;
        originFetchesDuringRuns += originAfter - originBefore;
      } finally {
        for (const s of servers.reverse()) await s.stop();
        await origin.stop();
      }
    }
    const row = { bytes, originFetchesDuringRuns, servers: {} };
    const ceilingRuns = samples[`ceiling-${bytes}`];
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
    warmupSeconds,
    runs,
    launches,
  };
  const { date } = meta;
  const L = [`# Cache-hit throughput — ${date}`, ''];
  L.push(
    `${machineSentence(meta)} ${meta.wrk}. ${launches} launches (every server started afresh each time), each with ${warmupSeconds} s of unmeasured warm-up per server and then ${runs} runs per server in rotating order: ${launches * runs} runs per server; medians. "÷ ceiling" is the ratio of medians; "pairs" is each run over the ceiling's run of the same launch and index (median, min–max). Pinning: ${meta.pinning}. Command: \`${meta.command}\``,
    '',
  );
  L.push('| body | server | req/s (median) | ÷ ceiling | pairs: median (min–max) | p50 ms | p99 ms | non-2xx | origin fetches of /bench during runs |');
  L.push('|---:|---|---:|---:|---|---:|---:|---:|---:|');
  for (const row of results) {
    const ceil = row.servers[`ceiling-${row.bytes}`] ?? Object.values(row.servers)[0];
    for (const [name, s] of Object.entries(row.servers)) {
      L.push(
        `| ${row.bytes >= 1024 ? `${row.bytes / 1024} KiB` : `${row.bytes} B`} | ${name.replace(/-\d+$/, '')} | ${fmtInt(s.rpsMedian)} | ${(s.rpsMedian / ceil.rpsMedian).toFixed(2)} | ${name.startsWith('ceiling') ? '—' : `${s.pairRatioMedian.toFixed(2)} (${s.pairRatioMin.toFixed(2)}–${s.pairRatioMax.toFixed(2)})`} | ${fmtMs(s.p50Median)} | ${fmtMs(s.p99Median)} | ${s.non2xx} | ${name.startsWith('ceiling') ? '—' : row.originFetchesDuringRuns} |`,
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
