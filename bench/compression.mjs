/**
 * Compression stored once, against nginx compressing every hit: bytes on the wire per page and
 * cache hits per second, for browser-like clients (`Accept-Encoding: gzip, deflate, br`),
 * gzip-only clients and clients that ask for no compression, in one run.
 *
 * Setups, each in front of the same origin (bench/lib/page-server.mjs: 20 wiki-like HTML pages of
 * ~15 KB, uncompressed, cacheable):
 *   - crowdgate: the defaults (brotli 5 and gzip 6 stored once per page at fill time);
 *   - nginx: proxy_cache (the flash-crowd setup) with `gzip on` (gzip_comp_level 1, nginx's
 *     default), `gzip_vary on`: gzip per response, no brotli (not in Debian's nginx);
 *   - nginx-gzip6: the same with `gzip_comp_level 6`, for equal gzip bytes.
 *
 * Wire bytes: one raw HTTP/1.1 request per page on its own socket, every byte received counted
 * (status line, headers, chunked framing, body); the body is decoded (zlib) and compared with the
 * origin's page, byte for byte, so a setup that sends the wrong bytes fails the run.
 * Throughput: `wrk` (closed loop, keep-alive, 64 connections, 1 thread, a Lua script rotating over
 * the 20 pages) per setup and client, `--runs` times in rotating order; medians of requests/s and
 * of wrk's Transfer/sec ÷ requests/s (bytes per response on the wire, as wrk read them). The
 * origin's request count is checked after the runs: every measured request was a cache hit.
 *
 * Pinning: when `taskset` exists on 2+ CPUs, the setup under test on CPU 0, wrk on CPU 1.
 *
 * Prerequisites: `npm run build`; wrk and nginx (`apt-get install -y wrk nginx-light`); a missing
 * nginx is reported as skipped. Not part of CI.
 *
 * Usage: node bench/compression.mjs [--runs 3] [--seconds 5] [--warmup 2] [--connections 64] [--only crowdgate,nginx,nginx-gzip6]
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';
import { median, fmtInt } from './lib/stats.mjs';
import { freePort, startProcess, waitForPort, sleep, noteMachineLoad } from './lib/procs.mjs';
import { BENCH_DIR, makeRunDir, pinned, pinnedNode, hasCommand, startCrowdgate, startNginx, gatewayAvailable } from './lib/setups.mjs';
import { makePages } from './lib/page-server.mjs';

const SERVER_CPU = '0';
const LOADGEN_CPU = '1';
const PAGES = 20;
const PAGE_BYTES = 15_000;

const CLIENTS = [
  { name: 'browser', acceptEncoding: 'gzip, deflate, br' },
  { name: 'gzip only', acceptEncoding: 'gzip' },
  { name: 'no compression', acceptEncoding: undefined },
];

async function startPages() {
  const port = await freePort();
  const dir = makeRunDir('pages');
  const [cmd, args] = pinnedNode(undefined, [join(BENCH_DIR, 'lib', 'page-server.mjs'), '--port', String(port), '--pages', String(PAGES), '--bytes', String(PAGE_BYTES)]);
  const proc = startProcess('pages', cmd, args, { logFile: join(dir, 'pages.log') });
  await waitForPort(port, { proc });
  return { url: `http://127.0.0.1:${port}`, stop: () => proc.stop() };
}

/** One request on its own connection: every byte received, and the decoded body. */
function rawGet(url, path, acceptEncoding) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks = [];
    socket.setTimeout(10_000, () => socket.destroy(new Error('raw request timed out')));
    socket.on('connect', () =>
      socket.write(`GET ${path} HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\n${acceptEncoding ? `Accept-Encoding: ${acceptEncoding}\r\n` : ''}Connection: close\r\n\r\n`),
    );
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const wire = Buffer.concat(chunks);
      const split = wire.indexOf('\r\n\r\n');
      const head = wire.subarray(0, split).toString('latin1');
      let body = wire.subarray(split + 4);
      const headers = Object.fromEntries(
        head.split('\r\n').slice(1).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
      );
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = unchunk(body);
      const coding = headers['content-encoding'];
      const decoded = coding === 'br' ? brotliDecompressSync(body) : coding === 'gzip' ? gunzipSync(body) : body;
      resolve({ wireBytes: wire.length, status: head.split(' ')[1], coding: coding ?? 'identity', headers, decoded });
    });
  });
}

function unchunk(buf) {
  const parts = [];
  let at = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', at);
    const size = parseInt(buf.toString('latin1', at, eol), 16);
    if (!(size > 0)) break;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Asks for every page until each answers as a cache hit (both setups mark it). */
async function warm(url) {
  for (let n = 0; n < PAGES; n++) {
    let hit = false;
    for (let i = 0; i < 50 && !hit; i++) {
      const res = await fetch(`${url}/page/${n}`, { headers: { 'accept-encoding': 'gzip, br' } });
      await res.arrayBuffer();
      hit = /;\s*hit\b|\bHIT\b/i.test(`${res.headers.get('cache-status') ?? ''} ${res.headers.get('x-cache-status') ?? ''}`);
      if (!hit) await sleep(20);
    }
    if (!hit) throw new Error(`${url}/page/${n} never answered a cache hit`);
  }
}

function wrkScript(dir, acceptEncoding) {
  const file = join(dir, `rotate-${acceptEncoding ? acceptEncoding.replace(/\W+/g, '_') : 'identity'}.lua`);
  writeFileSync(
    file,
    `-- Generated by bench/compression.mjs: rotate over the pages.
local n = 0
${acceptEncoding ? `wrk.headers["Accept-Encoding"] = "${acceptEncoding}"` : ''}
request = function()
  n = (n + 1) % ${PAGES}
  return wrk.format("GET", "/page/" .. n)
end
`,
  );
  return file;
}

function runWrk(url, script, seconds, connections) {
  const [cmd, args] = pinned(LOADGEN_CPU, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '-s', script, url]);
  const out = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (out.status !== 0) throw new Error(`wrk failed: ${out.stderr || out.stdout}`);
  const text = out.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const t = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(text);
  const bytesPerSec = t ? Number(t[1]) * { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[t[2]] : NaN;
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  return { rps, bytesPerResponse: bytesPerSec / rps, non2xx };
}

async function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '64' },
      only: { type: 'string' },
      out: { type: 'string', default: join(BENCH_DIR, 'results') },
    },
  });
  if (!hasCommand('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const runs = Number(values.runs);
  const seconds = Number(values.seconds);
  const connections = Number(values.connections);
  const isPinned = hasCommand('taskset') && availableParallelism() >= 2;
  const wanted = values.only ? values.only.split(',') : ['crowdgate', 'nginx', 'nginx-gzip6'];
  const skipped = [];
  const starters = {
    crowdgate: (originUrl) => startCrowdgate({ originUrl, label: 'crowdgate-compress', cpu: SERVER_CPU }),
    nginx: (originUrl) => startNginx({ originUrl, label: 'nginx-gzip', cpu: SERVER_CPU, httpExtra: '  gzip on;\n  gzip_vary on;' }),
    'nginx-gzip6': (originUrl) =>
      startNginx({ originUrl, label: 'nginx-gzip6', cpu: SERVER_CPU, httpExtra: '  gzip on;\n  gzip_vary on;\n  gzip_comp_level 6;' }),
  };
  const setups = [];
  for (const name of wanted) {
    if (name === 'crowdgate') {
      const gw = gatewayAvailable();
      if (gw === true) setups.push(name);
      else skipped.push(`crowdgate: ${gw}`);
    } else if (name.startsWith('nginx')) {
      if (hasCommand('nginx')) setups.push(name);
      else skipped.push(`${name}: nginx not installed (apt-get install -y nginx-light)`);
    }
  }
  for (const s of skipped) process.stderr.write(`skipped ${s}\n`);

  const loadAtStart = noteMachineLoad('start');
  const pages = makePages(PAGES, PAGE_BYTES);
  const identityBytes = pages.reduce((a, p) => a + p.length, 0) / PAGES;
  const dir = makeRunDir('compression-wrk');
  const origin = await startPages();
  const running = [];
  /** @type {Record<string, Record<string, any>>} */
  const results = {};
  try {
    for (const name of setups) running.push({ ...(await starters[name](origin.url)), name });
    for (const s of running) await warm(s.url);
    // Wire bytes per page, and byte-exact bodies.
    for (const s of running) {
      results[s.name] = {};
      for (const client of CLIENTS) {
        const wire = [];
        const codings = new Set();
        for (let n = 0; n < PAGES; n++) {
          const r = await rawGet(s.url, `/page/${n}`, client.acceptEncoding);
          if (r.status !== '200' || !r.decoded.equals(pages[n])) throw new Error(`${s.name} /page/${n} (${client.name}): wrong answer (${r.status}, ${r.coding})`);
          wire.push(r.wireBytes);
          codings.add(r.coding);
        }
        results[s.name][client.name] = { wireBytesPerPage: wire.reduce((a, b) => a + b, 0) / PAGES, codings: [...codings], runs: [] };
      }
    }
    const originBefore = (await (await fetch(`${origin.url}/__stats`)).json()).requests;
    const scripts = Object.fromEntries(CLIENTS.map((c) => [c.name, wrkScript(dir, c.acceptEncoding)]));
    for (const s of running) for (const c of CLIENTS) runWrk(s.url, scripts[c.name], Number(values.warmup), connections);
    for (let i = 0; i < runs; i++) {
      const k = i % running.length;
      for (const s of [...running.slice(k), ...running.slice(0, k)])
        for (const c of CLIENTS) {
          const r = runWrk(s.url, scripts[c.name], seconds, connections);
          results[s.name][c.name].runs.push(r);
          process.stderr.write(`  run ${i + 1} ${s.name} ${c.name}: ${fmtInt(r.rps)} req/s, ${fmtInt(r.bytesPerResponse)} B/response\n`);
        }
    }
    const originAfter = (await (await fetch(`${origin.url}/__stats`)).json()).requests;
    for (const s of running)
      for (const c of CLIENTS) {
        const row = results[s.name][c.name];
        row.rpsMedian = median(row.runs.map((r) => r.rps));
        row.wrkBytesPerResponseMedian = median(row.runs.map((r) => r.bytesPerResponse));
        row.non2xx = row.runs.reduce((a, r) => a + r.non2xx, 0);
      }
    const meta = {
      ...runFacts('compression.mjs', loadAtStart),
      pinning: isPinned ? `setup under test on CPU ${SERVER_CPU}, wrk on CPU ${LOADGEN_CPU} (taskset)` : 'none (taskset missing or 1 CPU)',
      wrk: `wrk -t1 -c${connections} -d${seconds}s, rotating over ${PAGES} pages`,
      runs,
      identityBytesPerPage: identityBytes,
      originFetchesDuringRuns: originAfter - originBefore,
      skipped,
    };
    const L = [`# Compression stored once vs nginx gzip per hit — ${meta.date}`, ''];
    L.push(
      `${machineSentence(meta)} ${PAGES} wiki-like HTML pages of ${fmtInt(identityBytes)} B on average (identity). Wire bytes: one request per page on its own connection, every byte received (head, framing, body), the body decoded and compared with the origin's byte for byte. Hits/s: ${meta.wrk}, ${runs} runs per setup and client in rotating order, medians; "wrk B/resp" is wrk's Transfer/sec ÷ requests/s. Origin fetches during the measured runs: ${meta.originFetchesDuringRuns} (every measured request a hit). Pinning: ${meta.pinning}. Command: \`${meta.command}\``,
      '',
    );
    if (skipped.length) L.push(`Skipped: ${skipped.join('; ')}.`, '');
    L.push('| setup | client | coding sent | wire B/page | ÷ identity | hits/s (median) | wrk B/resp | non-2xx |');
    L.push('|---|---|---|---:|---:|---:|---:|---:|');
    for (const [name, byClient] of Object.entries(results))
      for (const [client, r] of Object.entries(byClient))
        L.push(
          `| ${name} | ${client} | ${r.codings.join(', ')} | ${fmtInt(r.wireBytesPerPage)} | ${(r.wireBytesPerPage / identityBytes).toFixed(2)} | ${fmtInt(r.rpsMedian)} | ${fmtInt(r.wrkBytesPerResponseMedian)} | ${r.non2xx} |`,
        );
    L.push('');
    writeReport({ dir: values.out, name: 'compression', date: meta.date, json: { meta, results }, md: L.join('\n') });
  } finally {
    for (const s of running.reverse()) await s.stop();
    await origin.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
