/**
 * Several gateways in front of one origin: does the fleet hold the origin near its capacity?
 *
 * Three crowdgate instances in front of one fragile origin (C = `--concurrency` 8 slots of
 * `--service-ms` 50 ms; past its slots it queues and thrashes, see fragile-origin.mjs), driven
 * by `--clients` (60) clients in a closed loop on an uncacheable page (`/account` with a session
 * cookie, which bypasses the cache), round-robin over the three, 0-20 ms apart: far past the
 * origin's capacity. Phases: `--crowd-seconds` (20) as it is (its first 5 s reported apart as
 * `start`: every limit starts at its initial value), then `--slow-seconds` (20) with
 * every answer `--slow-factor` (10) times slower (the origin's POST /__service), then
 * `--after-seconds` (10) as it was.
 *
 * Two setups, alternated `--runs` (2) times each:
 *   - `alone`: the three without Redis: each learns its limit from its own requests only;
 *   - `shared`: the three sharing one redis-server: each counts what the others have in flight
 *     to the origin and joins their no-load probes (README, "Scaling out with Redis").
 * Per phase: the origin's peak concurrent requests (in service + its backlog, its own counter,
 * polled every 250 ms), pages served (200s the clients got), and gateway refusals; medians per
 * setup, and shared ÷ alone.
 *
 * Every process (redis-server, origin, gateways) is a child started here and stopped by PID.
 * Results go to bench/results/fleet-<timestamp>.{json,md}.
 *
 * `--only alone|shared` runs one setup (no ratio is reported then).
 *
 * Usage: node bench/fleet.mjs [--runs 2] [--clients 60] [--crowd-seconds 20] [--slow-seconds 20]
 *        [--after-seconds 10] [--concurrency 8] [--service-ms 50] [--slow-factor 10] [--only SETUP]
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { noteMachineLoad, sleep, stopAll } from './lib/procs.mjs';
import { machineSentence, runFacts, writeReport } from './lib/report.mjs';
import { BENCH_DIR, gatewayAvailable, startCrowdgate, startOrigin, startRedis } from './lib/setups.mjs';
import { fmtInt, median } from './lib/stats.mjs';

const INSTANCES = 3;
const POLL_MS = 250;
/** The crowd's first seconds, reported apart (see runOnce). */
const START_SECONDS = 5;


/** One run of one setup: the phases above; per phase the origin's peak, pages served, refusals. */
async function runOnce(setup, o, round) {
  const label = `fleet-${setup}-${round}`;
  const origin = await startOrigin({ concurrency: o.concurrency, serviceMs: o.serviceMs, label: `${label}-origin` });
  const redis = setup === 'shared' ? await startRedis(`${label}-redis`) : undefined;
  const extra = redis ? { redis: { url: redis.url, keyPrefix: `${label}:` } } : {};
  const gateways = await Promise.all(
    Array.from({ length: INSTANCES }, (_, i) => startCrowdgate({ originUrl: origin.url, label: `${label}-${i + 1}`, extra, siteExtra: { healthCheck: { enabled: false } } })),
  );
  const phases = [
    // The first seconds apart: three limits starting from their initial values, before any has learned.
    { name: 'start', seconds: Math.min(START_SECONDS, o.crowdSeconds), serviceMs: o.serviceMs },
    { name: 'crowd', seconds: Math.max(0, o.crowdSeconds - START_SECONDS), serviceMs: o.serviceMs },
    { name: 'slow', seconds: o.slowSeconds, serviceMs: o.serviceMs * o.slowFactor },
    { name: 'after', seconds: o.afterSeconds, serviceMs: o.serviceMs },
  ];
  const rows = phases.map((p) => ({ phase: p.name, originPeak: 0, served: 0, refused: 0, other: 0 }));
  let phase = 0;
  let running = true;
  const pools = gateways.map((g) => new Pool(g.url, { connections: Math.ceil(o.clients / INSTANCES) + 2 }));
  const client = async (c) => {
    // Each client's requests go round the three in turn (client c starts at gateway c mod 3).
    for (let k = c; running; k++) {
      const row = rows[phase];
      try {
        const res = await pools[k % INSTANCES].request({ path: '/account', method: 'GET', headers: { cookie: `sessionid=u${c}` }, headersTimeout: 20_000, bodyTimeout: 20_000 });
        await res.body.dump();
        if (res.statusCode === 200) row.served++;
        else if (res.statusCode === 503 && res.headers['x-crowdgate-error']) row.refused++;
        else row.other++;
      } catch {
        row.other++;
      }
      await sleep(Math.random() * 20);
    }
  };
  const poll = async () => {
    while (running) {
      try {
        const s = await (await fetch(`${origin.url}/__stats?brief=1`)).json();
        const now = s.inflight + s.backlog;
        if (now > rows[phase].originPeak) rows[phase].originPeak = now;
      } catch {
        // the next poll
      }
      await sleep(POLL_MS);
    }
  };
  try {
    const load = [...Array.from({ length: o.clients }, (_, c) => client(c)), poll()];
    for (const [i, p] of phases.entries()) {
      phase = i;
      await fetch(`${origin.url}/__service?ms=${p.serviceMs}`, { method: 'POST' });
      await sleep(p.seconds * 1000);
    }
    running = false;
    await Promise.all(load);
  } finally {
    running = false;
    await Promise.all(pools.map((p) => p.destroy()));
    await Promise.all(gateways.map((g) => g.stop()));
    await redis?.stop();
    await origin.stop();
  }
  process.stderr.write(`  ${setup} #${round}: ${rows.map((r) => `${r.phase} origin peak ${r.originPeak}, served ${fmtInt(r.served)}, refused ${fmtInt(r.refused)}`).join('; ')}\n`);
  return rows;
}

export async function main() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '2' },
      clients: { type: 'string', default: '60' },
      'crowd-seconds': { type: 'string', default: '20' },
      'slow-seconds': { type: 'string', default: '20' },
      'after-seconds': { type: 'string', default: '10' },
      concurrency: { type: 'string', default: '8' },
      'service-ms': { type: 'string', default: '50' },
      'slow-factor': { type: 'string', default: '10' },
      only: { type: 'string' },
    },
  });
  const o = {
    runs: Number(values.runs),
    clients: Number(values.clients),
    crowdSeconds: Number(values['crowd-seconds']),
    slowSeconds: Number(values['slow-seconds']),
    afterSeconds: Number(values['after-seconds']),
    concurrency: Number(values.concurrency),
    serviceMs: Number(values['service-ms']),
    slowFactor: Number(values['slow-factor']),
    only: values.only,
  };
  if (o.only !== undefined && o.only !== 'alone' && o.only !== 'shared') throw new Error(`--only must be alone or shared, got ${o.only}`);
  const build = gatewayAvailable();
  if (build !== true) throw new Error(`crowdgate is not built: ${build}`);
  const loadAtStart = noteMachineLoad('start');
  const runs = { alone: [], shared: [] };
  try {
    for (let r = 1; r <= o.runs; r++)
      for (const setup of r % 2 === 1 ? ['alone', 'shared'] : ['shared', 'alone']) if (o.only === undefined || o.only === setup) runs[setup].push(await runOnce(setup, o, r));
  } finally {
    await stopAll();
  }
  const meta = runFacts('fleet.mjs', loadAtStart);
  const medians = {};
  const setups = o.only === undefined ? ['alone', 'shared'] : [o.only];
  for (const setup of setups)
    medians[setup] = runs[setup][0].map((row, i) => ({
      phase: row.phase,
      originPeak: median(runs[setup].map((rs) => rs[i].originPeak)),
      served: median(runs[setup].map((rs) => rs[i].served)),
      refused: median(runs[setup].map((rs) => rs[i].refused)),
      other: median(runs[setup].map((rs) => rs[i].other)),
    }));
  const capacity = Math.round((o.concurrency * 1000) / o.serviceMs);
  const lines = [
    `# Several gateways in front of one origin (${new Date(meta.date).toISOString().slice(0, 16)}Z)`,
    '',
    machineSentence(meta),
    '',
    `${INSTANCES} gateways, one fragile origin of ${o.concurrency} slots × ${o.serviceMs} ms (${capacity} pages/s; past its slots it queues and slows down), ${o.clients} clients in a closed loop on an uncacheable page, 0-20 ms apart; phases: crowd ${o.crowdSeconds} s (its first ${START_SECONDS} s apart: \`start\`), every answer ${o.slowFactor}× slower ${o.slowSeconds} s, as before ${o.afterSeconds} s. \`alone\`: no Redis (each gateway knows its own requests); \`shared\`: one Redis (each counts the others' in-flight requests and joins their probes). ${o.only === undefined ? `Medians of ${o.runs} alternated runs each.` : `Medians of ${o.runs} runs of \`${o.only}\` only.`}`,
    '',
    ...(o.only === undefined
      ? [
          '| phase | origin peak in flight: alone | shared | shared ÷ alone | pages served: alone | shared | shared ÷ alone | refused: alone | shared | other failures: alone | shared |',
          '|---|---|---|---|---|---|---|---|---|---|---|',
          ...medians.alone.map((a, i) => {
            const s = medians.shared[i];
            return `| ${a.phase} | ${a.originPeak} | ${s.originPeak} | ${(s.originPeak / a.originPeak).toFixed(2)} | ${fmtInt(a.served)} | ${fmtInt(s.served)} | ${(s.served / a.served).toFixed(2)} | ${fmtInt(a.refused)} | ${fmtInt(s.refused)} | ${fmtInt(a.other)} | ${fmtInt(s.other)} |`;
          }),
        ]
      : [
          `| phase | origin peak in flight: ${o.only} | pages served | refused | other failures |`,
          '|---|---|---|---|---|',
          ...medians[o.only].map((r) => `| ${r.phase} | ${r.originPeak} | ${fmtInt(r.served)} | ${fmtInt(r.refused)} | ${fmtInt(r.other)} |`),
        ]),
    '',
    'Refused: 503 from a gateway (`X-Crowdgate-Error`); in a closed loop a refused client asks again at once, so compare pages served. Other failures: the origin\'s own 503 (a request that waited 2 s in its backlog), a timeout or a reset.',
    '',
    `Per run (origin peak / served): ${setups.map((setup) => `${setup} ${runs[setup].map((rs) => rs.map((r) => `${r.originPeak}/${r.served}`).join(' ')).join(' | ')}`).join('; ')}.`,
    '',
  ];
  writeReport({ dir: join(BENCH_DIR, 'results'), name: 'fleet', date: meta.date, json: { meta, options: o, runs, medians }, md: lines.join('\n') });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch(async (err) => {
    console.error(err);
    await stopAll();
    process.exit(1);
  });
}
