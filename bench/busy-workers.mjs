/**
 * An origin whose every worker is held by slow requests: does a reader's quick page still get
 * answered, and how, through crowdgate against straight to the origin? (README Limitations:
 * "An origin whose every worker is held by slow requests".)
 *
 * The origin (bench/lib/worker-origin.mjs) has `--workers` workers and a FIFO backlog, as Apache
 * prefork with MaxRequestWorkers has. After `--warm` s of readers alone, `--hogs` clients ask a
 * `--slow-s` s page over and over (each a new URL) while `--readers` clients read quick 5–15 ms
 * pages with `--think-ms` think time (uniform 0.5–1.5×), for `--duration` s. Each round runs
 * each side (straight to the origin, through crowdgate as shipped, through crowdgate with
 * `admission.limit.slowShare: true`, and with the slow page's route capped at `--cap`) on a fresh origin (and a fresh gateway), in alternating order; clients give up
 * after 30 s. It reports, per side, what readers and slow pages got (answered, refused by the
 * gateway with its reason, 504, client timeouts), the readers' answered latency, the origin's
 * peak backlog and how many answers it made for clients that had left (read once it is idle),
 * and for crowdgate the
 * peak of `crowdgate_origin_inflight` against `crowdgate_origin_limit`.
 *
 * `--page-ms` sets the readers' pages' service time (default 5–15 ms). With `--hogs 0` and pages
 * that cost tens of milliseconds it is a crowd of readers at the origin's capacity and nothing
 * else: a closed population (each reader waits for its answer, then thinks) of uncacheable
 * pages, a site search on a few PHP workers (README Overload control, "only while the queue
 * outgrows its deadlines"): `--workers 4 --hogs 0 --readers 25 --think-ms 200 --page-ms 120-200`.
 *
 * Usage: node bench/busy-workers.mjs [--workers 5] [--hogs 8] [--slow-s 10] [--readers 40]
 *          [--think-ms 500] [--page-ms 5-15] [--warm 10] [--duration 40] [--rounds 2] [--cap 2] [--sides a,b]
 * Needs dist/ (npm run build). Results: bench/results/busy-workers-<time>.{json,md}.
 */
import { parseArgs } from 'node:util';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProcess, stopAll, freePort, waitForPort, noteMachineLoad, sleep } from './lib/procs.mjs';
import { startCrowdgate, makeRunDir } from './lib/setups.mjs';
import { runFacts, machineSentence, writeReport } from './lib/report.mjs';
import { percentile, median } from './lib/stats.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '5' },
    hogs: { type: 'string', default: '8' },
    'slow-s': { type: 'string', default: '10' },
    readers: { type: 'string', default: '40' },
    'think-ms': { type: 'string', default: '500' },
    'page-ms': { type: 'string', default: '5-15' },
    warm: { type: 'string', default: '10' },
    duration: { type: 'string', default: '40' },
    rounds: { type: 'string', default: '2' },
    cap: { type: 'string', default: '2' },
    sides: { type: 'string' },
  },
});
const opts = {
  workers: Number(values.workers),
  hogs: Number(values.hogs),
  slowS: Number(values['slow-s']),
  readers: Number(values.readers),
  thinkMs: Number(values['think-ms']),
  pageMs: values['page-ms'],
  warmS: Number(values.warm),
  durationS: Number(values.duration),
  rounds: Number(values.rounds),
  cap: Number(values.cap),
};
const CLIENT_TIMEOUT_MS = 30_000;
/**
 * Straight to the origin, through crowdgate as shipped, with admission.limit.slowShare on, and
 * with the slow page's route capped (routes[].maxConcurrent: --cap, queueDeadlineMs 5 s), as an
 * operator who knows the slow page would.
 */
const SIDES = ['direct', 'crowdgate', 'crowdgate-slowshare', 'crowdgate-routecap'];

async function startWorkerOrigin(label) {
  const port = await freePort();
  const dir = makeRunDir(label);
  const proc = startProcess(label, process.execPath, [join(HERE, 'lib', 'worker-origin.mjs'), '--port', String(port), '--workers', String(opts.workers), '--page-ms', opts.pageMs], {
    logFile: join(dir, 'origin.log'),
  });
  await waitForPort(port, { proc });
  return { url: `http://127.0.0.1:${port}`, stop: () => proc.stop() };
}

/** What one client population got: outcome counts and answered latencies. */
function tally() {
  return { answered: 0, refused: /** @type {Record<string, number>} */ ({}), gatewayTimeout: 0, other: 0, clientTimeout: 0, errors: 0, ms: /** @type {number[]} */ ([]) };
}

async function ask(url, t) {
  const startedAt = performance.now();
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
    await res.arrayBuffer();
    const ms = performance.now() - startedAt;
    if (res.status === 200) {
      t.answered++;
      t.ms.push(ms);
    } else if (res.status === 503) {
      const reason = /shed-([a-z_]+)/.exec(res.headers.get('cache-status') ?? '')?.[1] ?? 'other';
      t.refused[reason] = (t.refused[reason] ?? 0) + 1;
    } else if (res.status === 504) t.gatewayTimeout++;
    else t.other++;
  } catch (err) {
    if (err?.name === 'TimeoutError') t.clientTimeout++;
    else t.errors++;
  }
}

const rand = () => Math.random().toString(36).slice(2, 10);

async function readers(base, count, untilAt, t) {
  await Promise.all(
    Array.from({ length: count }, async () => {
      while (performance.now() < untilAt) {
        await ask(`${base}/page?r=${rand()}`, t);
        await sleep(opts.thinkMs * (0.5 + Math.random()));
      }
    }),
  );
}

async function hogs(base, count, untilAt, t) {
  await Promise.all(
    Array.from({ length: count }, async () => {
      while (performance.now() < untilAt) await ask(`${base}/slow?s=${opts.slowS}&r=${rand()}`, t);
    }),
  );
}

async function gaugeOf(adminUrl, name) {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`));
    return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
  } catch {
    return undefined;
  }
}

async function runSide(side) {
  const origin = await startWorkerOrigin(`origin-${side}`);
  // crowdgate-slowshare: admission.limit.slowShare on (off by default); crowdgate-routecap: the
  // slow page's route capped.
  const gw =
    side === 'direct'
      ? undefined
      : await startCrowdgate({
          originUrl: origin.url,
          label: side,
          ...(side === 'crowdgate-slowshare' ? { admission: { limit: { slowShare: true } } } : {}),
          ...(side === 'crowdgate-routecap' ? { siteExtra: { routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, maxConcurrent: opts.cap, queueDeadlineMs: 5000 }] } } : {}),
        });
  const base = gw?.url ?? origin.url;
  try {
    await readers(base, opts.readers, performance.now() + opts.warmS * 1000, tally());
    const reader = tally();
    const slow = tally();
    const untilAt = performance.now() + opts.durationS * 1000;
    let peakInflight = 0;
    let limitAtPeak;
    let sampling = true;
    const sampler = (async () => {
      while (gw !== undefined && sampling) {
        const inflight = await gaugeOf(gw.adminUrl, 'crowdgate_origin_inflight');
        const limit = await gaugeOf(gw.adminUrl, 'crowdgate_origin_limit');
        if (inflight !== undefined && inflight >= peakInflight) [peakInflight, limitAtPeak] = [inflight, limit];
        await sleep(500);
      }
    })();
    await Promise.all([readers(base, opts.readers, untilAt, reader), hogs(base, opts.hogs, untilAt, slow)]);
    sampling = false;
    await sampler;
    // The origin counts an answer for a client gone when its worker finishes: a slow page the
    // gateway gave up on at 15 s still holds one now (review). Read once it is idle (at most
    // the slow page's time and a little more).
    let originStats = await (await fetch(`${origin.url}/__stats`)).json();
    for (const idleBy = performance.now() + opts.slowS * 1000 + 2_000; (originStats.busy > 0 || originStats.backlog > 0) && performance.now() < idleBy; ) {
      await sleep(250);
      originStats = await (await fetch(`${origin.url}/__stats`)).json();
    }
    return { side, reader, slow, originStats, ...(gw ? { peakInflight, limitAtPeak } : {}) };
  } finally {
    await gw?.stop();
    await origin.stop();
  }
}

const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);

function summarize(run) {
  const ms = [...run.reader.ms].sort((a, b) => a - b);
  return {
    side: run.side,
    readersAnswered: run.reader.answered,
    readersRefused: sum(run.reader.refused),
    readersRefusedBy: run.reader.refused,
    readers504: run.reader.gatewayTimeout,
    readersClientTimeout: run.reader.clientTimeout,
    readerP50: percentile(ms, 50),
    readerP99: percentile(ms, 99),
    slowAnswered: run.slow.answered,
    slowRefused: sum(run.slow.refused),
    slowRefusedBy: run.slow.refused,
    slow504: run.slow.gatewayTimeout,
    slowClientTimeout: run.slow.clientTimeout,
    errors: run.reader.errors + run.slow.errors + run.reader.other + run.slow.other,
    originPeakBacklog: run.originStats.peakBacklog,
    originAbandoned: run.originStats.abandoned,
    peakInflight: run.peakInflight,
    limitAtPeak: run.limitAtPeak,
  };
}

/** --sides: a comma-separated subset of SIDES. */
const sides = values.sides === undefined ? SIDES : values.sides.split(',').filter((s) => SIDES.includes(s));
const loadAtStart = noteMachineLoad('start');
const rows = [];
try {
  for (let round = 0; round < opts.rounds; round++) {
    const order = round % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) {
      process.stderr.write(`round ${round + 1}: ${side} …\n`);
      rows.push({ round: round + 1, ...summarize(await runSide(side)) });
    }
  }
} finally {
  await stopAll();
}

const meta = { ...runFacts('busy-workers.mjs', loadAtStart), ...opts };
const fmt = (x) => (x === undefined || Number.isNaN(x) ? '—' : typeof x === 'number' ? (Number.isInteger(x) ? String(x) : x.toFixed(1)) : String(x));
const L = [`# Busy workers — ${meta.date}`, ''];
L.push(
  `${machineSentence(meta)} Origin: ${opts.workers} workers, FIFO backlog; ${opts.hogs > 0 ? `${opts.hogs} clients asking a ${opts.slowS} s page over and over` : 'no clients of a slow page'}, ` +
    `${opts.readers} readers of ${opts.pageMs.replace('-', '–')} ms pages with ${opts.thinkMs} ms think time, ${opts.durationS} s after ${opts.warmS} s of readers alone; ` +
    `clients give up after ${CLIENT_TIMEOUT_MS / 1000} s. Command: \`${meta.command}\`.`,
  '',
  '| round | side | readers answered | refused (reasons) | 504 | client timeouts | reader p50 ms | reader p99 ms | slow answered | slow refused (reasons) | slow 504 | origin peak backlog | answers for clients gone | gateway peak in flight (limit) |',
  '|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
);
for (const r of rows)
  L.push(
    `| ${r.round} | ${r.side} | ${r.readersAnswered} | ${r.readersRefused} ${r.readersRefused ? JSON.stringify(r.readersRefusedBy) : ''} | ${r.readers504} | ${r.readersClientTimeout} | ${fmt(r.readerP50)} | ${fmt(r.readerP99)} | ${r.slowAnswered} | ${r.slowRefused} ${r.slowRefused ? JSON.stringify(r.slowRefusedBy) : ''} | ${r.slow504} | ${r.originPeakBacklog} | ${r.originAbandoned} | ${r.side !== 'direct' ? `${fmt(r.peakInflight)} (${fmt(r.limitAtPeak)})` : '—'} |`,
  );
L.push('', '## Medians over the rounds', '', '| side | readers answered | readers refused | reader 504 + client timeouts | reader p50 ms | slow answered | answers for clients gone |', '|---|---:|---:|---:|---:|---:|---:|');
for (const side of sides) {
  const rs = rows.filter((r) => r.side === side);
  L.push(
    `| ${side} | ${fmt(median(rs.map((r) => r.readersAnswered)))} | ${fmt(median(rs.map((r) => r.readersRefused)))} | ${fmt(median(rs.map((r) => r.readers504 + r.readersClientTimeout)))} | ${fmt(median(rs.map((r) => r.readerP50)))} | ${fmt(median(rs.map((r) => r.slowAnswered)))} | ${fmt(median(rs.map((r) => r.originAbandoned)))} |`,
  );
}
L.push('');
writeReport({ dir: join(HERE, 'results'), name: 'busy-workers', date: meta.date, json: { meta, rows }, md: L.join('\n') + '\n' });
