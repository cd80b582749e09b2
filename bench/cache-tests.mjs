/**
 * HTTP cache conformance: runs the public suite behind https://cache-tests.fyi
 * (github.com/http-tests/cache-tests) against crowdgate and scores it the way cache-tests.fyi
 * classifies each test (the suite's own `determineTestResult`): a `required` test passes or
 * fails, an `optimal` one passes or is a ⚠️, a `check` is yes/no; a test whose `depends_on`
 * did not pass is ⚪️ "not run" whatever its own outcome; setup (🔹), harness (⁉️) and retry (↻)
 * outcomes are counted apart. The score is required tests passed / required tests run by the
 * reverse-proxy client (browser-only tests are not run).
 *
 * Nothing of the suite lives in this repository: each run extracts it into a fresh temp dir,
 * from the bare git mirror (`git archive HEAD`; default /work/.mirror/http-tests+cache-tests/repo,
 * or $CACHE_TESTS_SUITE) or from `--suite DIR` (a bare git dir, a checkout, or an unpacked copy).
 * Its client needs one npm package at run time (undici, for the interim-response tests); it is
 * linked from crowdgate's own node_modules when the version fits the suite's range, else
 * installed with npm into the temp dir.
 *
 * Processes, all children stopped by PID: the suite's origin server (`test-engine/server/
 * server.mjs`, bound to 127.0.0.1 by a preloaded module, since it listens on every interface
 * by itself), crowdgate from dist/ through scripts/crowdgate with the shipped config/gateway.yaml
 * (or `--config FILE`) where only listen/admin host and ports, the origin URLs and the access log
 * (off) are changed, written to bench/configs/cache-tests.yaml; and the suite's CLI
 * (`test-engine/cli.mjs`, 25 tests at a time, each request with a 10 s timeout), pointed at
 * crowdgate, then at the origin directly (the no-cache baseline; `--no-baseline` skips it).
 *
 * Usage: node bench/cache-tests.mjs [--suite DIR] [--config FILE] [--no-baseline] [--keep]
 *        node bench/cache-tests.mjs --id TEST_ID     (one test with the suite's request/response dump)
 * Failing required tests are re-run one at a time after the full run (`--no-recheck` skips it).
 */
import { parseArgs } from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, mkdirSync, readdirSync, statSync, cpSync, symlinkSync, rmSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseDocument } from 'yaml';
import { freePort, startProcess, waitForPort, stopAll, sleep, noteMachineLoad } from './lib/procs.mjs';
import { BENCH_DIR, REPO_DIR, GATEWAY_LAUNCHER, gatewayBuildState, makeRunDir } from './lib/setups.mjs';
import { writeReport, runFacts, machineSentence } from './lib/report.mjs';

const DEFAULT_SUITE = process.env.CACHE_TESTS_SUITE ?? '/work/.mirror/http-tests+cache-tests/repo';
const SHIPPED_CONFIG = join(REPO_DIR, 'config', 'gateway.yaml');
/** What the client and the origin server need from the suite (the rest is its web site and spec). */
const SUITE_PARTS = ['package.json', 'test-engine', 'tests'];
const CLIENT_TIMEOUT_MS = 20 * 60_000;

const { values: opts } = parseArgs({
  options: {
    suite: { type: 'string', default: DEFAULT_SUITE },
    config: { type: 'string', default: SHIPPED_CONFIG },
    'no-baseline': { type: 'boolean', default: false },
    'no-recheck': { type: 'boolean', default: false },
    id: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
});

// The children's environment: no proxy variables, so every request stays on loopback.
const CHILD_ENV = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(https?|all|no)_proxy$/i.test(k) && !/^npm_(config|package)_/i.test(k)),
);

// ---------------------------------------------------------------------------------------------
// The build

/** Builds dist/ when missing or older than src/ (a half-made edit may break it: retried). */
function ensureBuild() {
  let state = gatewayBuildState();
  for (let attempt = 1; !state.ok && attempt <= 3; attempt++) {
    process.stderr.write(`${state.reason}: running npm run build (attempt ${attempt})\n`);
    const r = spawnSync('npm', ['run', 'build'], { cwd: REPO_DIR, stdio: ['ignore', 'inherit', 'inherit'] });
    state = gatewayBuildState();
    if (r.status === 0) break;
    if (attempt < 3) {
      process.stderr.write('build failed (src/ may be mid-edit); retrying in 60 s\n');
      spawnSync('sleep', ['60']);
    }
  }
  if (!state.exists) throw new Error('dist/main.js is missing and the build failed');
  if (!state.ok) process.stderr.write(`warning: ${state.reason}; testing the build that is there\n`);
}

// ---------------------------------------------------------------------------------------------
// The suite: extracted, its npm needs met, its tests and result rules imported

/** @returns {{ dir: string, source: string, commit?: string, commitDate?: string }} */
function extractSuite(src, dest) {
  src = resolve(src);
  const gitDir = existsSync(join(src, '.git')) ? join(src, '.git') : existsSync(join(src, 'HEAD')) && existsSync(join(src, 'objects')) ? src : undefined;
  if (gitDir) {
    const git = (...args) => spawnSync('git', ['--git-dir', gitDir, ...args], { encoding: 'buffer', maxBuffer: 512 << 20 });
    const tar = git('archive', '--format=tar', 'HEAD', ...SUITE_PARTS);
    if (tar.status !== 0) throw new Error(`git archive in ${gitDir} failed: ${tar.stderr}`);
    const x = spawnSync('tar', ['-x', '-C', dest], { input: tar.stdout });
    if (x.status !== 0) throw new Error(`tar -x failed: ${x.stderr}`);
    const [commit, commitDate] = git('log', '-1', '--format=%H %cI', 'HEAD').stdout.toString().trim().split(' ');
    return { dir: dest, source: src, commit, commitDate };
  }
  for (const part of SUITE_PARTS) {
    if (!existsSync(join(src, part))) throw new Error(`${src} is not the cache-tests suite (no ${part})`);
    cpSync(join(src, part), join(dest, part), { recursive: true, filter: (p) => !p.includes('node_modules') });
  }
  return { dir: dest, source: src };
}

/** Bare package imports of the client, the server and the tests (export.mjs, the site generator, is not run). */
function neededPackages(suiteDir) {
  const names = new Set();
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.mjs') && e.name !== 'export.mjs') {
        for (const m of readFileSync(p, 'utf8').matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm)) {
          const spec = m[1];
          if (spec.startsWith('.') || spec.startsWith('/') || isBuiltin(spec)) continue;
          names.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
        }
      }
    }
  };
  walk(join(suiteDir, 'test-engine'));
  walk(join(suiteDir, 'tests'));
  return [...names].sort();
}

/** Whether `version` satisfies a plain `^x.y.z` / `~x.y.z` / `x.y.z` / `>=x.y.z` range (anything else: no). */
function satisfies(version, range) {
  const v = version.split(/[.-]/).slice(0, 3).map(Number);
  const m = /^(\^|~|>=)?\s*(\d+)\.(\d+)\.(\d+)$/.exec(range.trim());
  if (!m) return false;
  const r = [Number(m[2]), Number(m[3]), Number(m[4])];
  const ge = v[0] !== r[0] ? v[0] > r[0] : v[1] !== r[1] ? v[1] > r[1] : v[2] >= r[2];
  if (m[1] === '>=') return ge;
  if (m[1] === '^') return ge && (r[0] > 0 ? v[0] === r[0] : v[1] === r[1]);
  if (m[1] === '~') return ge && v[0] === r[0] && v[1] === r[1];
  return v.join('.') === r.join('.');
}

/** Links or installs what the suite imports; returns how each need was met. */
function installSuiteDeps(suiteDir, workDir) {
  const pkg = JSON.parse(readFileSync(join(suiteDir, 'package.json'), 'utf8'));
  const ranges = { ...pkg.devDependencies, ...pkg.dependencies };
  const needs = neededPackages(suiteDir).map((name) => ({ name, range: ranges[name] ?? '*' }));
  if (needs.length === 0) return [];
  const local = needs.map((n) => {
    const p = join(REPO_DIR, 'node_modules', n.name, 'package.json');
    const version = existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')).version : undefined;
    return { ...n, version, fits: version !== undefined && satisfies(version, n.range) };
  });
  mkdirSync(join(suiteDir, 'node_modules'), { recursive: true });
  if (local.every((n) => n.fits)) {
    for (const n of local) {
      mkdirSync(join(suiteDir, 'node_modules', n.name, '..'), { recursive: true });
      symlinkSync(join(REPO_DIR, 'node_modules', n.name), join(suiteDir, 'node_modules', n.name), 'dir');
    }
    return local.map((n) => ({ name: n.name, range: n.range, version: n.version, how: "linked from crowdgate's node_modules" }));
  }
  // npm into a side dir (the suite's own package.json would pull its site generator's deps too).
  const depsDir = join(workDir, 'deps');
  mkdirSync(depsDir, { recursive: true });
  writeFileSync(join(depsDir, 'package.json'), '{"private":true}\n');
  const specs = needs.map((n) => `${n.name}@${n.range}`);
  process.stderr.write(`installing ${specs.join(' ')} with npm\n`);
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--no-package-lock', ...specs], {
    cwd: depsDir,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: CHILD_ENV,
  });
  if (r.status !== 0) throw new Error(`npm install ${specs.join(' ')} failed`);
  rmSync(join(suiteDir, 'node_modules'), { recursive: true, force: true });
  symlinkSync(join(depsDir, 'node_modules'), join(suiteDir, 'node_modules'), 'dir');
  return needs.map((n) => ({
    name: n.name,
    range: n.range,
    version: JSON.parse(readFileSync(join(depsDir, 'node_modules', n.name, 'package.json'), 'utf8')).version,
    how: 'npm install',
  }));
}

// ---------------------------------------------------------------------------------------------
// Processes

/** The suite's origin server on a free loopback port (server.mjs itself listens on every interface). */
async function startSuiteOrigin(suiteDir, workDir) {
  const port = await freePort();
  const preload = join(workDir, 'loopback-only.mjs');
  writeFileSync(
    preload,
    `// Preloaded by crowdgate's bench/cache-tests.mjs: a listen() given only a port binds 127.0.0.1.
import net from 'node:net';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const portOnly = (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\\d+$/.test(args[0]))) && typeof args[1] !== 'string';
  return portOnly ? listen.call(this, Number(args[0]), '127.0.0.1', ...args.slice(1)) : listen.apply(this, args);
};
`,
  );
  const env = { ...CHILD_ENV, npm_config_protocol: 'http', npm_config_port: String(port), npm_config_pidfile: join(workDir, 'origin.pid') };
  const proc = startProcess('cache-tests-origin', process.execPath, ['--import', pathToFileURL(preload).href, 'test-engine/server/server.mjs'], {
    cwd: suiteDir,
    env,
    logFile: join(workDir, 'origin.log'),
  });
  await waitForPort(port, { proc });
  return { url: `http://127.0.0.1:${port}`, pid: proc.pid, logFile: proc.logFile, stop: () => proc.stop() };
}

/**
 * The config under test with only what a run must change: listen/admin on 127.0.0.1 and free
 * ports, every origin member pointed at the suite's server, the access log off.
 */
async function writeGatewayConfig(configPath, originUrl) {
  const doc = parseDocument(readFileSync(configPath, 'utf8'));
  if (doc.errors.length) throw new Error(`${configPath}: ${doc.errors[0].message}`);
  const [port, adminPort] = [await freePort(), await freePort()];
  doc.setIn(['listen', 'host'], '127.0.0.1');
  doc.setIn(['listen', 'port'], port);
  doc.setIn(['admin', 'host'], '127.0.0.1');
  doc.setIn(['admin', 'port'], adminPort);
  doc.setIn(['log', 'access'], false);
  const sites = doc.get('sites');
  let members = 0;
  for (const site of sites?.items ?? []) for (const origin of site.get('origins')?.items ?? []) origin.set('url', originUrl), members++;
  if (members === 0) throw new Error(`${configPath}: no sites[].origins[] to point at the suite's server`);
  mkdirSync(join(BENCH_DIR, 'configs'), { recursive: true });
  const file = join(BENCH_DIR, 'configs', 'cache-tests.yaml');
  writeFileSync(
    file,
    `# Generated by bench/cache-tests.mjs from ${relative(REPO_DIR, configPath) || configPath} for one run: only listen/admin\n` +
      `# host and ports, the origin URLs and log.access changed. Safe to delete.\n${doc.toString()}`,
  );
  return { file, port, adminPort };
}

async function startGateway(configPath, originUrl, workDir) {
  const cfg = await writeGatewayConfig(configPath, originUrl);
  const env = { ...CHILD_ENV, CROWDGATE_NODE_FLAGS: process.env.BENCH_GATEWAY_NODE_FLAGS ?? '' };
  const proc = startProcess('crowdgate', GATEWAY_LAUNCHER, ['--config', cfg.file], { cwd: REPO_DIR, env, logFile: join(workDir, 'gateway.log') });
  await waitForPort(cfg.port, { proc });
  await waitForPort(cfg.adminPort, { proc });
  // Ready means its origin is usable; the suite's server answers the health probe (GET /) with 404, alive.
  const readyBy = Date.now() + 15_000;
  let ready = false;
  while (!ready && Date.now() < readyBy) {
    ready = await fetch(`http://127.0.0.1:${cfg.adminPort}/readyz`).then((r) => r.ok, () => false);
    if (!ready) await sleep(200);
  }
  if (!ready) process.stderr.write('warning: crowdgate /readyz not 200 after 15 s; running anyway\n');
  return { url: `http://127.0.0.1:${cfg.port}`, adminUrl: `http://127.0.0.1:${cfg.adminPort}`, configFile: cfg.file, pid: proc.pid, logFile: proc.logFile, stop: () => proc.stop() };
}

/** Children spawned here with pipes (not through procs.mjs), killed by PID if this process exits first. */
const clients = new Set();
process.on('exit', () => {
  for (const c of clients) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/**
 * Runs the suite's CLI against `base`. Full run: resolves with its JSON results (test id →
 * true | [errorName, message]). With `id`: streams the one test's dump to our stdout.
 */
function runClient(suiteDir, base, id, capture = false) {
  const stream = id !== undefined && !capture;
  return new Promise((resolveRun, reject) => {
    // As `npm run cli --base=… [--id=…]` would set them (package.json's config.id is '': all tests).
    const env = { ...CHILD_ENV, npm_config_base: base, npm_config_id: id ?? '', npm_package_config_id: '' };
    const child = spawn(process.execPath, ['--no-warnings', 'test-engine/cli.mjs'], {
      cwd: suiteDir,
      env,
      stdio: ['ignore', stream ? 'inherit' : 'pipe', stream ? 'inherit' : 'pipe'],
    });
    clients.add(child);
    const out = [];
    let err = '';
    child.stdout?.on('data', (d) => out.push(d));
    child.stderr?.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), CLIENT_TIMEOUT_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      clients.delete(child);
      const text = Buffer.concat(out).toString();
      if (stream) return resolveRun({});
      if (id !== undefined) {
        // One test: the CLI ends with "<symbol> - <details>" (its own outcome, dependencies ignored).
        const last = text.trim().split('\n').pop() ?? '';
        const m = /^(\S+) - ?(.*)$/.exec(last);
        return resolveRun({ solo: m ? { symbol: m[1], details: m[2] } : { symbol: '?', details: `${last} ${err.slice(-300)}`.trim() } });
      }
      if (code !== 0) return reject(new Error(`suite client exited ${code ?? signal}: ${err.slice(-2000)}`));
      try {
        resolveRun({ results: JSON.parse(text.slice(text.indexOf('{'))), stderr: err });
      } catch (e) {
        reject(new Error(`suite client output is not JSON (${e.message}): ${text.slice(0, 500)} ${err.slice(-1000)}`));
      }
    });
  });
}

/** crowdgate's own refusals and protections during the run, from /metrics (non-zero series only). */
const METRICS_OF_INTEREST = /^crowdgate_(shed_total|circuit_state|pressure_overloaded|origin_limit|stale_served_total|hit_for_pass_total|rate_limited_total|requests_total|origin_requests_total)\b/;
async function gatewayMetrics(adminUrl) {
  const text = await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) }).then((r) => r.text(), () => '');
  return text
    .split('\n')
    .filter((l) => METRICS_OF_INTEREST.test(l) && !/_bucket|_sum|_count/.test(l) && !/ 0$/.test(l));
}

// ---------------------------------------------------------------------------------------------
// Scoring, with the suite's own rules (test-engine/lib/results.mjs, as on cache-tests.fyi)

const KINDS = ['required', 'optimal', 'check'];

async function loadRules(suiteDir) {
  const suites = (await import(pathToFileURL(join(suiteDir, 'tests', 'index.mjs')).href)).default;
  const rules = await import(pathToFileURL(join(suiteDir, 'test-engine', 'lib', 'results.mjs')).href);
  const typeName = new Map(Object.entries(rules.resultTypes).map(([name, t]) => [t, name]));
  return { suites, determine: (id, results) => typeName.get(rules.determineTestResult(suites, id, results)) ?? 'unknown' };
}

/** Per test: kind, suite, outcome (pass|fail|optional_fail|yes|no|dependency_fail|setup_fail|harness_fail|retry|untested), reason. */
function classify(rules, results) {
  const rows = [];
  for (const suite of rules.suites) {
    for (const test of suite.tests) {
      const raw = results[test.id];
      const outcome = rules.determine(test.id, results);
      if (outcome === 'untested') continue; // not run by a reverse-proxy client (browser_only)
      const row = {
        id: test.id,
        suite: suite.id,
        suiteName: suite.name,
        kind: test.kind ?? 'required',
        outcome,
        name: test.name,
        ownResult: raw === true ? 'pass' : raw ? `${raw[0]}: ${raw[1]}` : 'none',
      };
      if (outcome === 'dependency_fail') {
        row.failedDependencies = (test.depends_on ?? []).filter((d) => !['pass', 'yes'].includes(rules.determine(d, results)));
      }
      rows.push(row);
    }
  }
  return rows;
}

/** Counts per kind and per suite. */
function tally(rows) {
  const byKind = {};
  for (const kind of KINDS) {
    const rs = rows.filter((r) => r.kind === kind);
    const counts = {};
    for (const r of rs) counts[r.outcome] = (counts[r.outcome] ?? 0) + 1;
    const passed = (counts.pass ?? 0) + (counts.yes ?? 0);
    // Not the cache-tests.fyi score: each test's own outcome with its dependencies ignored.
    const ownPassed = rs.filter((r) => r.ownResult === 'pass').length;
    byKind[kind] = { total: rs.length, passed, ownPassed, counts };
  }
  const bySuite = [];
  for (const suite of [...new Set(rows.map((r) => r.suite))]) {
    const rs = rows.filter((r) => r.suite === suite);
    const entry = { suite, name: rs[0].suiteName };
    for (const kind of ['required', 'optimal']) {
      const k = rs.filter((r) => r.kind === kind);
      entry[kind] = { passed: k.filter((r) => r.outcome === 'pass').length, own: k.filter((r) => r.ownResult === 'pass').length, total: k.length };
    }
    bySuite.push(entry);
  }
  return { byKind, bySuite };
}

// ---------------------------------------------------------------------------------------------
// Report

const SYMBOL = {
  pass: '✅',
  fail: '⛔️',
  optional_fail: '⚠️',
  yes: 'Y',
  no: 'N',
  dependency_fail: '⚪️ not run',
  setup_fail: '🔹 setup',
  harness_fail: '⁉️ harness',
  retry: '↻ retry',
};

const oneLine = (s, max = 160) => {
  const t = String(s).replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

function markdown(report) {
  const { runs, meta } = report;
  const cg = runs.crowdgate;
  const base = runs.baseline;
  const L = [];
  const cols = base ? ['crowdgate', 'no cache (origin direct)'] : ['crowdgate'];
  const cell = (t, kind) => `${t.byKind[kind].passed} / ${t.byKind[kind].total}`;
  L.push(`# HTTP cache conformance (cache-tests.fyi suite) — ${meta.date}`, '');
  L.push(machineSentence(meta) + ' ');
  L.push(
    `Suite: http-tests/cache-tests ${report.suite.commit ? `${report.suite.commit.slice(0, 12)} (${report.suite.commitDate})` : `from ${report.suite.source}`}; ` +
      `config: \`${report.config}\` with only listen/admin host and ports, origin URLs and the access log changed. ` +
      `Command: \`${meta.command}\`. Scored with the suite's own result rules (as on cache-tests.fyi): a test whose dependency did not pass counts as not run (⚪️), never as passed.`,
    '',
  );
  L.push(`| | ${cols.join(' | ')} |`, `|---|${cols.map(() => '--:').join('|')}|`);
  const runList = base ? [cg, base] : [cg];
  L.push(`| **required passed** | ${runList.map((r) => `**${cell(r.tally, 'required')}**`).join(' | ')} |`);
  for (const [label, key] of [
    ['required failed ⛔️', 'fail'],
    ['required not run ⚪️ (dependency failed)', 'dependency_fail'],
    ['required setup fail 🔹', 'setup_fail'],
    ['required harness fail ⁉️', 'harness_fail'],
    ['required retried ↻', 'retry'],
  ]) {
    L.push(`| ${label} | ${runList.map((r) => r.tally.byKind.required.counts[key] ?? 0).join(' | ')} |`);
  }
  L.push(`| _required passing on their own, dependencies ignored (not the fyi score)_ | ${runList.map((r) => `_${r.tally.byKind.required.ownPassed} / ${r.tally.byKind.required.total}_`).join(' | ')} |`);
  L.push(`| optimal passed (else ⚠️ or not run) | ${runList.map((r) => cell(r.tally, 'optimal')).join(' | ')} |`);
  L.push(`| check: yes | ${runList.map((r) => cell(r.tally, 'check')).join(' | ')} |`);
  L.push(`| client run time | ${runList.map((r) => `${(r.ms / 1000).toFixed(0)} s`).join(' | ')} |`, '');

  L.push('## By suite file', '');
  L.push(`| suite | required (crowdgate) | _own, deps ignored_ | optimal (crowdgate) |${base ? ' required (no cache) |' : ''}`);
  L.push(`|---|--:|--:|--:|${base ? '--:|' : ''}`);
  for (const s of cg.tally.bySuite) {
    const b = base?.tally.bySuite.find((x) => x.suite === s.suite);
    L.push(
      `| ${s.name} (\`${s.suite}\`) | ${s.required.passed} / ${s.required.total} | _${s.required.own}_ | ${s.optimal.passed} / ${s.optimal.total} |${base ? ` ${b ? `${b.required.passed} / ${b.required.total}` : '–'} |` : ''}`,
    );
  }
  L.push('');

  const baseOutcome = new Map((base?.rows ?? []).map((r) => [r.id, r.outcome]));
  const failing = cg.rows.filter((r) => r.kind === 'required' && !['pass', 'dependency_fail'].includes(r.outcome));
  L.push(`## Failing required tests (${failing.length}), by suite file`, '');
  if (base) L.push('_(no cache: …)_ gives the same test\'s outcome with the client pointed straight at the origin.', '');
  if (failing.some((r) => r.solo)) L.push('"alone:" is the outcome when the test was run again by itself right after (`--id`), through the same crowdgate.', '');
  for (const suite of [...new Set(failing.map((r) => r.suite))]) {
    const rs = failing.filter((r) => r.suite === suite);
    L.push(`### ${rs[0].suiteName} (\`${suite}\`) — ${rs.length}`, '');
    for (const r of rs) {
      const b = baseOutcome.get(r.id);
      const solo = r.solo ? ` — alone: ${r.solo.symbol}${r.solo.symbol === '✅' ? ' (fails only in the full run)' : ''}` : '';
      L.push(`- \`${r.id}\` ${SYMBOL[r.outcome] ?? r.outcome}: ${oneLine(r.ownResult.replace(/^Assertion: /, ''))}${b ? ` _(no cache: ${SYMBOL[b] ?? b})_` : ''}${solo}  `);
      L.push(`  ${oneLine(r.name, 200)}`);
    }
    L.push('');
  }
  const notRun = cg.rows.filter((r) => r.kind === 'required' && r.outcome === 'dependency_fail');
  if (notRun.length) {
    // The tests whose failure hides the most required tests: fix these first.
    const blocked = new Map();
    for (const r of notRun) for (const d of r.failedDependencies) blocked.set(d, (blocked.get(d) ?? 0) + 1);
    const byId = new Map(cg.rows.map((r) => [r.id, r]));
    L.push(`## What keeps required tests from running`, '');
    L.push('| dependency | kind | its outcome | required tests it holds back | why it did not pass |', '|---|---|---|--:|---|');
    for (const [d, n] of [...blocked].sort((a, b) => b[1] - a[1])) {
      const r = byId.get(d);
      const why = r?.outcome === 'dependency_fail' ? `needs ${r.failedDependencies.map((x) => `\`${x}\``).join(', ')}` : oneLine(r?.ownResult ?? '?', 120);
      L.push(`| \`${d}\` | ${r?.kind ?? '?'} | ${SYMBOL[r?.outcome] ?? r?.outcome} | ${n} | ${why.replace(/\|/g, '\\|')} |`);
    }
    L.push('');
    const hidden = notRun.filter((r) => r.ownResult !== 'pass');
    if (hidden.length) {
      L.push(`## Required tests not run that also fail on their own (${hidden.length}): next in line once their dependencies pass`, '');
      for (const suite of [...new Set(hidden.map((r) => r.suite))]) {
        const rs = hidden.filter((r) => r.suite === suite);
        L.push(`### ${rs[0].suiteName} (\`${suite}\`) — ${rs.length}`, '');
        for (const r of rs) L.push(`- \`${r.id}\`: ${oneLine(r.ownResult.replace(/^Assertion: /, ''))}  `, `  ${oneLine(r.name, 200)}`);
        L.push('');
      }
    }
    L.push(`## All required tests not run (${notRun.length}): a dependency did not pass`, '');
    for (const r of notRun) L.push(`- \`${r.id}\` needs ${r.failedDependencies.map((d) => `\`${d}\``).join(', ')} (own result: ${oneLine(r.ownResult, 100)})`);
    L.push('');
  }
  if (cg.metrics?.length) {
    const own503 = cg.rows.filter((r) => /very busy|status is 503, not (?!503)/.test(r.ownResult)).length;
    L.push(`## crowdgate during the full run (its /metrics, non-zero series)`, '');
    if (own503) L.push(`${own503} tests (any kind) got a 503 the origin did not send (crowdgate's "very busy" refusal): those outcomes are about admission control under the suite's 25-tests-at-a-time load, not caching.`, '');
    const shown = cg.metrics.filter(
      (l) => (!/^crowdgate_requests_total/.test(l) || /status_class="5xx"/.test(l)) && (!/^crowdgate_origin_requests_total/.test(l) || !/outcome="ok"/.test(l)),
    );
    L.push('```', ...shown.slice(0, 60), '```', '');
  }
  const optimalMissed = cg.rows.filter((r) => r.kind === 'optimal' && r.outcome !== 'pass');
  if (optimalMissed.length) {
    L.push(`## Optimal tests not passed (${optimalMissed.length})`, '');
    for (const suite of [...new Set(optimalMissed.map((r) => r.suite))]) {
      const rs = optimalMissed.filter((r) => r.suite === suite);
      L.push(`- ${rs[0].suiteName}: ${rs.map((r) => `\`${r.id}\`${r.outcome === 'optional_fail' ? '' : ` (${SYMBOL[r.outcome] ?? r.outcome})`}`).join(', ')}`);
    }
    L.push('');
  }
  return L.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const loadAtStart = noteMachineLoad('start');
  ensureBuild();
  const workDir = makeRunDir('cache-tests');
  const suiteDir = join(workDir, 'suite');
  mkdirSync(suiteDir);
  const suite = extractSuite(opts.suite, suiteDir);
  const deps = installSuiteDeps(suiteDir, workDir);
  process.stderr.write(`suite ${suite.commit?.slice(0, 12) ?? suite.source} in ${suiteDir}\n`);
  const configPath = resolve(opts.config);

  const origin = await startSuiteOrigin(suiteDir, workDir);
  const gateway = await startGateway(configPath, origin.url, workDir);
  process.stderr.write(`origin ${origin.url} (pid ${origin.pid}), crowdgate ${gateway.url} (pid ${gateway.pid}), logs in ${workDir}\n`);
  try {
    if (opts.id) {
      await runClient(suiteDir, gateway.url, opts.id);
      return;
    }
    const rules = await loadRules(suiteDir);
    const runs = {};
    for (const [name, base] of [['crowdgate', gateway.url], ...(opts['no-baseline'] ? [] : [['baseline', origin.url]])]) {
      process.stderr.write(`running the suite against ${name} (${base})…\n`);
      const t0 = Date.now();
      const { results, stderr } = await runClient(suiteDir, base, undefined);
      const rows = classify(rules, results);
      const metrics = name === 'crowdgate' ? await gatewayMetrics(gateway.adminUrl) : undefined;
      runs[name] = { target: base, ms: Date.now() - t0, tally: tally(rows), rows, raw: results, clientErrors: stderr.split('\n').filter(Boolean).slice(0, 50), metrics };
      if (name === 'crowdgate' && !opts['no-recheck']) {
        // Each failing required test again, alone: tells a failure under the suite's 25-at-a-time
        // load (or next to other tests' 5xx) from one that happens every time.
        const failing = rows.filter((r) => r.kind === 'required' && !['pass', 'dependency_fail'].includes(r.outcome)).slice(0, 40);
        if (failing.length) process.stderr.write(`  re-running ${failing.length} failing required tests one at a time…\n`);
        for (const r of failing) r.solo = (await runClient(suiteDir, base, r.id, true)).solo;
      }
      const req = runs[name].tally.byKind.required;
      process.stderr.write(`  ${name}: required ${req.passed}/${req.total}, optimal ${runs[name].tally.byKind.optimal.passed}/${runs[name].tally.byKind.optimal.total}\n`);
    }
    const meta = runFacts('cache-tests.mjs', loadAtStart);
    const report = {
      meta,
      suite: { ...suite, dir: undefined, deps },
      config: relative(REPO_DIR, configPath) || configPath,
      generatedConfig: relative(REPO_DIR, gateway.configFile),
      score: {
        required: `${runs.crowdgate.tally.byKind.required.passed}/${runs.crowdgate.tally.byKind.required.total}`,
        optimal: `${runs.crowdgate.tally.byKind.optimal.passed}/${runs.crowdgate.tally.byKind.optimal.total}`,
        ...(runs.baseline ? { baselineRequired: `${runs.baseline.tally.byKind.required.passed}/${runs.baseline.tally.byKind.required.total}` } : {}),
      },
      runs,
    };
    writeReport({ dir: join(BENCH_DIR, 'results'), name: 'cache-tests', date: meta.date, json: report, md: markdown(report) });
  } finally {
    await gateway.stop();
    await origin.stop();
    await stopAll();
    if (!opts.keep) rmSync(workDir, { recursive: true, force: true });
    else process.stderr.write(`kept ${workDir}\n`);
  }
}

main().catch(async (err) => {
  process.stderr.write(`cache-tests: ${err.stack ?? err}\n`);
  await stopAll();
  process.exit(1);
});
