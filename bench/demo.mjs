/**
 * `npm run demo`: the first thing a newcomer tries. Two identical fragile origins (8 requests
 * at a time, 50 ms each: 160 req/s), one hit directly, one behind crowdgate; the same flash
 * crowd (×10 the origin's capacity by default, 45 s) against both at once; a live side-by-side
 * view every second; a verdict at the end. Ends by itself in about a minute and stops every
 * process it started (by PID).
 *
 * Builds the gateway first (`npm run build`) when dist/main.js is missing or older than src/.
 *
 * Usage: node bench/demo.mjs [--multiplier 10] [--seconds 45]
 *        (--standin puts a bare Node proxy where crowdgate goes: for developing the harness)
 *
 * It is a demonstration, not a measurement: both crowds share this machine's cores with both
 * origins and the gateway. bench/flash-crowd.mjs measures one setup at a time.
 */
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { runLoad } from './load.mjs';
import { fmtMs, fmtPct, fmtInt } from './lib/stats.mjs';
import { stopAll } from './lib/procs.mjs';
import { REPO_DIR, startOrigin, startCrowdgate, startStandin, gatewayBuildState } from './lib/setups.mjs';

const C = 8;
const S = 50;
const CAPACITY = (C * 1000) / S;

const { values } = parseArgs({
  options: {
    multiplier: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '45' },
    // Harness development only: put the bare Node proxy (no cache) where crowdgate goes.
    standin: { type: 'boolean', default: false },
  },
});
const multiplier = Number(values.multiplier);
const totalMs = Number(values.seconds) * 1000;
const rampMs = Math.min(5000, totalMs / 3);

const tty = process.stdout.isTTY;
const bold = (s) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const red = (s) => (tty ? `\x1b[31m${s}\x1b[0m` : s);
const green = (s) => (tty ? `\x1b[32m${s}\x1b[0m` : s);

/** Builds dist/ when it is missing or stale; exits with the build's output on failure. */
function ensureBuilt() {
  const state = gatewayBuildState();
  if (state.ok) return;
  console.log(`${state.reason.replace(/ \(run.*\)/, '')}: building with \`npm run build\` …`);
  const r = spawnSync('npm', ['run', 'build'], { cwd: REPO_DIR, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('The build failed; fix it and run `npm run demo` again.');
    process.exit(1);
  }
}

/** Live figures per side, updated by the load's per-second rows and the origin polls. */
function makeSide() {
  return { last: undefined, sent: 0, ok: 0, origin: undefined, prevRequests: 0, originRps: 0 };
}

async function main() {
  if (!values.standin) ensureBuilt();
  console.log(bold('crowdgate demo'));
  console.log(
    `Two identical origins that can serve ${CAPACITY} req/s (${C} at a time, ${S} ms each; they slow down, ` +
      `time out with 503 and reset connections when swamped). A flash crowd ramps to ×${multiplier} ` +
      `(${fmtInt(CAPACITY * multiplier)} req/s, 97 % page views, 3 % logged-in pages and comment POSTs) ` +
      `against one directly and the other through crowdgate, for ${totalMs / 1000} s.\n`,
  );
  const directOrigin = await startOrigin({ concurrency: C, serviceMs: S, label: 'demo-origin-direct' });
  const gatedOrigin = await startOrigin({ concurrency: C, serviceMs: S, label: 'demo-origin-gated' });
  const gateway = values.standin
    ? await startStandin({ originUrl: gatedOrigin.url, label: 'demo-standin' })
    : await startCrowdgate({ originUrl: gatedOrigin.url, label: 'demo-crowdgate' });

  const sides = { direct: makeSide(), gated: makeSide() };
  const loadOpts = {
    capacityRps: CAPACITY,
    multiplier,
    rampMs,
    holdMs: totalMs - rampMs,
    timeoutMs: 5000,
    connections: 512, // no more on the wire per crowd: keeps the direct side's reset storm from starving the machine
  };
  let drawn = 0;
  const startedAt = Date.now();
  function draw() {
    const t = Math.min(totalMs / 1000, Math.max(0, Math.round((Date.now() - startedAt) / 1000)));
    const row = (label, f) => `  ${label.padEnd(30)}${f(sides.direct).padStart(16)}${f(sides.gated).padStart(22)}`;
    const last = (s, fn) => (s.last ? fn(s.last) : '…');
    const lines = [
      `  t = ${String(t).padStart(2)} s of ${totalMs / 1000} s${''.padEnd(14)}${bold('direct'.padStart(16))}${bold('through crowdgate'.padStart(22))}`,
      row('crowd, req/s', (s) => last(s, (l) => fmtInt(l.offered))),
      row('answered OK, last second', (s) => last(s, (l) => fmtPct(l.ok / Math.max(1, l.ok + l.refused + l.failed)))),
      row('p99 latency, last second', (s) => last(s, (l) => `${fmtMs(l.okP99)} ms`)),
      row('answered OK, so far', (s) => fmtPct(s.ok / Math.max(1, s.sent))),
      row('origin: working / waiting', (s) => (s.origin ? `${s.origin.inflight}/${C} / ${s.origin.backlog}` : '…')),
      row('origin: requests/s', (s) => fmtInt(s.originRps)),
      row('origin: 503s + resets so far', (s) => (s.origin ? fmtInt(s.origin.status503 + s.origin.resets) : '…')),
    ];
    if (tty && drawn) process.stdout.write(`\x1b[${drawn}A`);
    if (tty) process.stdout.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
    else process.stdout.write(`${lines.slice(1).map((l) => l.replace(/\s+/g, ' ').trim()).join(' | ')}\n`);
    drawn = lines.length;
  }
  async function poll() {
    for (const [side, origin] of [['direct', directOrigin], ['gated', gatedOrigin]]) {
      try {
        const s = await (await fetch(`${origin.url}/__stats?brief=1`, { signal: AbortSignal.timeout(900) })).json();
        sides[side].originRps = s.requests - sides[side].prevRequests;
        sides[side].prevRequests = s.requests;
        sides[side].origin = s;
      } catch {
        /* a busy origin may miss one poll */
      }
    }
  }
  const onSecond = (side) => (r) => {
    sides[side].last = r;
    sides[side].sent += r.ok + r.refused + r.failed;
    sides[side].ok += r.ok;
  };
  const ticker = setInterval(() => poll().then(draw), 1000);
  const [direct, gated] = await Promise.all([
    runLoad({ ...loadOpts, target: directOrigin.url, seed: 1 }, { onSecond: onSecond('direct') }),
    runLoad({ ...loadOpts, target: gateway.url, seed: 1 }, { onSecond: onSecond('gated') }),
  ]);
  clearInterval(ticker);
  await poll();
  draw();
  const dStats = sides.direct.origin;
  const gStats = sides.gated.origin;
  await gateway.stop();
  await directOrigin.stop();
  await gatedOrigin.stop();

  const sum = (r) => {
    const sent = r.byKind.page.sent + r.uncacheable.sent;
    const ok = r.byKind.page.ok + r.uncacheable.ok;
    return { sent, ok, rate: ok / Math.max(1, sent) };
  };
  const d = sum(direct);
  const g = sum(gated);
  console.log(`\n${bold('Verdict')}`);
  console.log(
    `  Direct:          ${fmtPct(d.rate)} of ${fmtInt(d.sent)} requests answered OK, p99 ${fmtMs(direct.allSuccessLatency.p99)} ms; ` +
      `the origin sent ${fmtInt(dStats?.status503 ?? NaN)} 503s and reset ${fmtInt(dStats?.resets ?? NaN)} connections.`,
  );
  console.log(
    `  Through crowdgate: ${fmtPct(g.rate)} answered OK (pages ${fmtPct(gated.byKind.page.successRate)}, logged-in and POSTs ${fmtPct(gated.uncacheable.successRate)}), ` +
      `p99 ${fmtMs(gated.allSuccessLatency.p99)} ms; ${fmtInt(gated.refused.n)} refused fast (p50 ${fmtMs(gated.refused.latency.p50)} ms) with Retry-After; ` +
      `the origin handled ${fmtInt(gStats?.requests ?? NaN)} requests, at most ${gStats?.peakConcurrent ?? '?'} at once, with ${fmtInt(gStats?.status503 ?? NaN)} 503s and ${fmtInt(gStats?.resets ?? NaN)} resets.`,
  );
  const held = g.rate >= 0.99 && (gStats?.status503 ?? 1) === 0 && (gStats?.resets ?? 1) === 0;
  console.log(
    held
      ? green(`  crowdgate kept the site up: ${fmtPct(g.rate)} vs ${fmtPct(d.rate)} without it, and the origin never melted.`)
      : red(`  crowdgate did not fully hold this time (${fmtPct(g.rate)} OK; origin 503s ${gStats?.status503}, resets ${gStats?.resets}). See bench/README.md.`),
  );
}

try {
  await main();
} finally {
  await stopAll();
}
