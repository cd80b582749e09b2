/**
 * One run of both sides of overload control: the normal-day bench (does crowdgate refuse
 * healthy traffic?) and then the flash crowd at ×20 and ×50 for the two crowdgate setups (does
 * it still protect a fragile origin?). Each bench runs as its own child process, one after the
 * other (they would fight for the CPUs otherwise); their full reports go to bench/results/ as
 * usual, and at the end this prints every summary table and PASS/FAIL line together.
 *
 * Usage: node bench/normal-and-crowd.mjs [--quick] [--unpinned] [--multipliers 20,50]
 *          [--only crowdgate,crowdgate-fixed] [--flash-duration S] [-- <normal-day flags>]
 *   --quick            normal-day --quick and flash-crowd --quick
 *   --flash-duration   flash-crowd's --duration (hold, s)
 *   after `--`         passed to normal-day.mjs as they are (e.g. -- --levels 5,10 --duration 10)
 *
 * Exit code: 0 when normal-day passed and no flash-crowd target failed, else 1.
 * It starts only its two kinds of child, one at a time, and forwards SIGINT/SIGTERM to that
 * child's PID; each child stops its own servers by PID.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    quick: { type: 'boolean', default: false },
    unpinned: { type: 'boolean', default: false },
    multipliers: { type: 'string', default: '20,50' },
    only: { type: 'string', default: 'crowdgate,crowdgate-fixed' },
    'flash-duration': { type: 'string' },
  },
});

/** @type {import('node:child_process').ChildProcess | undefined} */
let current;
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.on(sig, () => {
    if (current?.pid !== undefined && current.exitCode === null) current.kill(sig);
    process.exitCode = 130;
  });
}

/** Runs `node <script> ...args`, stderr passed through, stdout collected; resolves { code, out }. */
function run(script, args) {
  process.stderr.write(`\n=== node bench/${script} ${args.join(' ')}\n`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(HERE, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    current = child;
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => (out += d));
    child.once('close', (code, signal) => {
      current = undefined;
      resolve({ code: code ?? (signal ? 128 : 1), out });
    });
  });
}

/** The lines of `md` from the first line matching `start` up to the next blank line. */
function block(md, start) {
  const lines = md.split('\n');
  const i = lines.findIndex((l) => start.test(l));
  if (i < 0) return [];
  const j = lines.findIndex((l, k) => k > i && l.trim() === '');
  return lines.slice(i, j < 0 ? undefined : j);
}

/** The fenced block after a heading (flash-crowd's "## Targets"), without the fences. */
function fencedAfter(md, heading) {
  const at = md.indexOf(heading);
  if (at < 0) return [];
  const m = /```\n([\s\S]*?)```/.exec(md.slice(at));
  return m ? m[1].trimEnd().split('\n') : [];
}

const common = values.unpinned ? ['--unpinned'] : [];
const summaries = [];
let failed = false;

if (process.exitCode !== 130) {
  const nd = await run('normal-day.mjs', [...(values.quick ? ['--quick'] : []), ...common, ...positionals]);
  const verdictLines = nd.out.split('\n').filter((l) => /^(PASS|FAIL) normal-day/.test(l));
  summaries.push({ title: `normal-day (exit ${nd.code})`, lines: [...block(nd.out, /^\| clients \| mode \| req\/s/), '', ...verdictLines] });
  if (nd.code !== 0) failed = true;
}

for (const m of values.multipliers.split(',').map((s) => s.trim()).filter(Boolean)) {
  if (process.exitCode === 130) break;
  const args = ['--multiplier', m, '--only', values.only, ...(values.quick ? ['--quick'] : []), ...common];
  if (values['flash-duration']) args.push('--duration', values['flash-duration']);
  const fc = await run('flash-crowd.mjs', args);
  const targets = fencedAfter(fc.out, '## Targets');
  summaries.push({ title: `flash-crowd ×${m} (exit ${fc.code})`, lines: [...block(fc.out, /^\| setup \|/), '', ...targets] });
  if (fc.code !== 0 || targets.some((l) => l.startsWith('FAIL'))) failed = true;
}

process.stdout.write('\n# normal day + flash crowd\n');
for (const s of summaries) process.stdout.write(`\n## ${s.title}\n\n${s.lines.join('\n')}\n`);
const line = failed ? 'FAIL normal-and-crowd: see the FAIL lines above' : 'PASS normal-and-crowd: normal day refused nothing healthy and every flash-crowd target was met';
process.stdout.write(`\n${line}\n`);
process.exit(process.exitCode === 130 ? 130 : failed ? 1 : 0);
