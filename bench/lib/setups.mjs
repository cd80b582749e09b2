/**
 * The systems under test, each started as its own process on free loopback ports and stopped by
 * PID: the fragile origin, crowdgate (from dist/), nginx proxy_cache, Varnish, and a bare Node
 * proxy stand-in. Configs are written at run time: crowdgate's YAML to bench/configs/, nginx's
 * to bench/nginx/, Varnish's VCL to bench/varnish/; caches, pid files and logs go to a fresh
 * temp dir per start.
 *
 * Owns process life cycles and config text. It does not generate load or judge results.
 */
import { mkdtempSync, writeFileSync, existsSync, mkdirSync, chmodSync, statSync, readdirSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync, spawnSync } from 'node:child_process';
import { stringify } from 'yaml';
import { freePort, startProcess, waitForPort, sleep } from './procs.mjs';

export const BENCH_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
export const REPO_DIR = dirname(BENCH_DIR);
export const GATEWAY_MAIN = join(REPO_DIR, 'dist', 'main.js');
/** How users start crowdgate (`npm start`, the `crowdgate` command): it picks the GC mode by CPU count. */
export const GATEWAY_LAUNCHER = join(REPO_DIR, 'scripts', 'crowdgate');

/**
 * Node's flag for a process pinned to one CPU: V8's concurrent and parallel GC threads would
 * take turns with the event loop on that CPU, stalling it for tens of ms at every old-generation
 * collection (crowdgate's launcher makes the same choice; README, "Running on one CPU").
 */
export const ONE_CPU_NODE_FLAGS = ['--single-threaded-gc'];

/** A fresh temp dir for one process's logs and files. @param {string} name */
export function makeRunDir(name) {
  const dir = mkdtempSync(join(tmpdir(), `crowdgate-bench-${name}-`));
  chmodSync(dir, 0o777); // nginx workers and Varnish may drop privileges
  return dir;
}

/** Whether an executable is on PATH. @param {string} cmd */
export function hasCommand(cmd) {
  try {
    execFileSync('which', [cmd], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * @typedef {{ name: string, url: string, pid: number, logFile?: string, adminUrl?: string, stop: () => Promise<void> }} Running
 */

/**
 * Starts the fragile origin as a child process (pinned to `cpu`, a `taskset -c` list, when given).
 * @param {{ concurrency?: number, serviceMs?: number, maxWaitMs?: number, label?: string, cpu?: string }} [opts]
 * @returns {Promise<Running>}
 */
export async function startOrigin(opts = {}) {
  const port = await freePort();
  const dir = makeRunDir(opts.label ?? 'origin');
  const args = [join(BENCH_DIR, 'fragile-origin.mjs'), '--port', String(port)];
  if (opts.concurrency) args.push('--concurrency', String(opts.concurrency));
  if (opts.serviceMs) args.push('--service-ms', String(opts.serviceMs));
  if (opts.maxWaitMs) args.push('--max-wait-ms', String(opts.maxWaitMs));
  const [cmd, cmdArgs] = pinnedNode(opts.cpu, args);
  const proc = startProcess(opts.label ?? 'origin', cmd, cmdArgs, { logFile: join(dir, 'origin.log') });
  await waitForPort(port, { proc });
  return { name: 'origin', url: `http://127.0.0.1:${port}`, pid: proc.pid, logFile: proc.logFile, stop: () => proc.stop() };
}

/** A redis-server child on a free loopback port, no persistence. */
export async function startRedis(label) {
  const port = await freePort();
  const dir = makeRunDir(label);
  const proc = startProcess(label, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    logFile: join(dir, 'redis.log'),
  });
  await waitForPort(port, { proc });
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.stop() };
}

/**
 * Whether dist/main.js exists (`exists`) and is at least as new as every file under src/
 * (`ok`); `reason` says what is wrong otherwise.
 * @returns {{ ok: boolean, exists: boolean, reason?: string }}
 */
export function gatewayBuildState() {
  if (!existsSync(GATEWAY_MAIN)) return { ok: false, exists: false, reason: 'dist/main.js is missing (run `npm run build`)' };
  const built = statSync(GATEWAY_MAIN).mtimeMs;
  const newest = newestMtime(join(REPO_DIR, 'src'));
  if (newest > built) return { ok: false, exists: true, reason: 'dist/ is older than src/ (run `npm run build`)' };
  return { ok: true, exists: true };
}

/**
 * For the benchmarks: true when dist/main.js exists (a stale build is used, with a warning on
 * stderr), else why crowdgate cannot run.
 * @returns {true | string}
 */
export function gatewayAvailable() {
  const state = gatewayBuildState();
  if (!state.exists) return state.reason ?? 'dist/main.js is missing';
  if (!state.ok) process.stderr.write(`warning: ${state.reason}; benchmarking the build that is there\n`);
  return true;
}

/** The newest modification time (ms) of any file under `dir`. @param {string} dir */
export function newestMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Writes a crowdgate config for one origin to bench/configs/ and starts `node dist/main.js`.
 * @param {{ originUrl: string, label?: string, admission?: object, extra?: object, cpu?: string }} opts
 *   admission: merged in as the `admission:` block (e.g. a fixed limit); extra: top-level keys;
 *   cpu: a `taskset -c` CPU list to pin the process to.
 * @returns {Promise<Running>}
 */
export async function startCrowdgate(opts) {
  const label = opts.label ?? 'crowdgate';
  const [port, adminPort] = [await freePort(), await freePort()];
  const config = {
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort },
    log: { level: 'warn', access: false },
    reload: { watch: false },
    ...(opts.admission ? { admission: opts.admission } : {}),
    ...(opts.extra ?? {}),
    // BENCH_GATEWAY_CONFIG: JSON merged over the top level, for A/B runs of one setting.
    ...(process.env.BENCH_GATEWAY_CONFIG ? JSON.parse(process.env.BENCH_GATEWAY_CONFIG) : {}),
    sites: [{ name: 'bench', hosts: ['*'], origins: [{ url: opts.originUrl }], ...(opts.siteExtra ?? {}) }],
  };
  mkdirSync(join(BENCH_DIR, 'configs'), { recursive: true });
  const configFile = join(BENCH_DIR, 'configs', `${label}.yaml`);
  writeFileSync(
    configFile,
    `# Generated by bench/ for one run (free ports picked at run time); safe to delete.\n${stringify(config)}`,
  );
  const dir = makeRunDir(label);
  // Started the way users start it, through the launcher (which execs node, so the PID is the
  // gateway's). BENCH_GATEWAY_NODE_FLAGS: extra node flags for the gateway only (e.g. --trace-gc).
  const [cmd, args] = pinned(opts.cpu, GATEWAY_LAUNCHER, ['--config', configFile]);
  const env = { ...process.env, CROWDGATE_NODE_FLAGS: process.env.BENCH_GATEWAY_NODE_FLAGS ?? '' };
  const proc = startProcess(label, cmd, args, { logFile: join(dir, 'gateway.log'), cwd: REPO_DIR, env });
  await waitForPort(port, { proc });
  await waitForPort(adminPort, { proc });
  return {
    name: label,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    pid: proc.pid,
    logFile: proc.logFile,
    stop: () => proc.stop(),
  };
}

/** CPUs when pinning: the side under test (servers), and the load generator. */
export const SUT_CPU = '0';
export const LOADGEN_CPU = '1';

/** Whether benches can pin: taskset exists and the box has 2+ CPUs. */
export function canPin() {
  return hasCommand('taskset') && availableParallelism() >= 2;
}

/**
 * Pins this process and all its threads to `cpu` (a load worker started later inherits it);
 * children get their own CPU through `pinned()`.
 */
export function pinSelf(cpu) {
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpu, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset failed: ${r.stderr}`);
}

/** [cmd, args] wrapped in `taskset -c cpu` when a CPU list is given and taskset exists. */
export function pinned(cpu, cmd, args) {
  if (cpu !== undefined && hasCommand('taskset')) return ['taskset', ['-c', cpu, cmd, ...args]];
  return [cmd, args];
}

/** A node script: pinned to `cpu` (with the one-CPU GC flags) when given, else as it is. */
export function pinnedNode(cpu, args) {
  const pin = cpu !== undefined && hasCommand('taskset');
  return pinned(cpu, process.execPath, pin && /^\d+$/.test(cpu) ? [...ONE_CPU_NODE_FLAGS, ...args] : args);
}

/**
 * For a bench that pins itself (and its load worker) to one CPU: runs the same command again
 * under the one-CPU GC flags, which only take effect at start, and returns its exit code;
 * undefined when this process already runs with them (then carry on).
 */
export function relaunchForOneCpu() {
  if (ONE_CPU_NODE_FLAGS.every((f) => process.execArgv.includes(f))) return undefined;
  const r = spawnSync(process.execPath, [...ONE_CPU_NODE_FLAGS, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  return r.status ?? 1;
}

/**
 * nginx as a caching reverse proxy, configured as its best honest effort for a flash crowd:
 * proxy_cache honouring the origin's Cache-Control, proxy_cache_lock (one fill per key, others
 * wait), stale served while updating and on errors, background update, conditional
 * revalidation, keep-alive to the origin. One worker process (the gateway is one process too).
 * Open-source nginx has no queue in front of an upstream (max_conns without `queue` just fails
 * with 502), so no origin concurrency limit is set.
 * @param {{ originUrl: string, label?: string, cpu?: string, httpExtra?: string }} opts
 *   httpExtra: directives added to the http block (e.g. `gzip on;`, the compression bench)
 * @returns {Promise<Running>}
 */
export async function startNginx(opts) {
  const label = opts.label ?? 'nginx';
  const port = await freePort();
  const dir = makeRunDir(label);
  const origin = new URL(opts.originUrl);
  const conf = `# Generated by bench/lib/setups.mjs for one run; ports and paths are per run.
daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=bench:32m max_size=512m inactive=10m use_temp_path=off;
  keepalive_requests 1000000;
  upstream origin {
    server ${origin.host};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_lock on;              # one request fills a key, the others wait for it
      proxy_cache_lock_timeout 10s;     # waiters give up (and go to the origin) after this
      proxy_cache_lock_age 10s;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on; # serve stale while one request refreshes
      proxy_cache_revalidate on;        # refresh with If-None-Match / If-Modified-Since
      add_header X-Cache-Status $upstream_cache_status always;
    }
  }
${opts.httpExtra ?? ''}
}
`;
  mkdirSync(join(BENCH_DIR, 'nginx'), { recursive: true });
  const confFile = join(BENCH_DIR, 'nginx', 'nginx.conf');
  writeFileSync(confFile, conf);
  const [cmd, args] = pinned(opts.cpu, 'nginx', ['-p', dir, '-c', confFile, '-e', `${dir}/error.log`]);
  const proc = startProcess(label, cmd, args, { logFile: join(dir, 'stdout.log') });
  await waitForPort(port, { proc });
  return { name: label, url: `http://127.0.0.1:${port}`, pid: proc.pid, logFile: join(dir, 'error.log'), stop: () => proc.stop() };
}

/**
 * Varnish Cache with its built-in VCL (which already passes requests with cookies and POSTs,
 * collapses concurrent misses on its waiting list and makes hit-for-miss objects for
 * uncacheable responses), plus 60 s of grace so stale objects are served while one fetch
 * refreshes them or when the backend fails, and 5xx handling: a failed background fetch is
 * abandoned (the graced object stays), a failed miss makes a 1 s hit-for-miss, not 120 s.
 * Varnish 7.1 has no backend queue (.max_connections just fails the excess), so none is set.
 * @param {{ originUrl: string, label?: string, cpu?: string }} opts
 * @returns {Promise<Running>}
 */
export async function startVarnish(opts) {
  const label = opts.label ?? 'varnish';
  const port = await freePort();
  const dir = makeRunDir(label);
  const origin = new URL(opts.originUrl);
  const vcl = `# Generated by bench/lib/setups.mjs for one run; the backend port is per run.
vcl 4.1;

backend origin {
  .host = "${origin.hostname}";
  .port = "${origin.port}";
  .connect_timeout = 2s;
  .first_byte_timeout = 15s;
}

sub vcl_backend_response {
  set beresp.grace = 60s;
  if (beresp.status >= 500) {
    # A failed background refresh keeps the graced object; a failed miss is not cached and
    # makes a 1 s hit-for-miss object instead of the built-in VCL's 120 s.
    if (bereq.is_bgfetch) {
      return (abandon);
    }
    set beresp.ttl = 1s;
    set beresp.uncacheable = true;
    return (deliver);
  }
}

sub vcl_deliver {
  if (obj.hits > 0) {
    set resp.http.X-Cache-Status = "HIT";
  } else {
    set resp.http.X-Cache-Status = "MISS";
  }
}
`;
  mkdirSync(join(BENCH_DIR, 'varnish'), { recursive: true });
  const vclFile = join(BENCH_DIR, 'varnish', 'bench.vcl');
  writeFileSync(vclFile, vcl);
  const [cmd, args] = pinned(opts.cpu, 'varnishd', [
    '-F', '-j', 'none', '-n', join(dir, 'work'), '-a', `127.0.0.1:${port}`, '-T', 'none', '-f', vclFile, '-s', 'malloc,256m',
  ]);
  const proc = startProcess(label, cmd, args, { logFile: join(dir, 'varnishd.log') });
  await waitForPort(port, { proc, timeoutMs: 30_000 });
  return { name: label, url: `http://127.0.0.1:${port}`, pid: proc.pid, logFile: proc.logFile, stop: () => proc.stop() };
}

/**
 * The bare Node proxy stand-in (no cache, no admission): the harness's control before the
 * gateway exists.
 * @param {{ originUrl: string, label?: string, cpu?: string }} opts
 * @returns {Promise<Running>}
 */
export async function startStandin(opts) {
  const label = opts.label ?? 'standin';
  const port = await freePort();
  const dir = makeRunDir(label);
  const [cmd, args] = pinnedNode(opts.cpu, [
    join(BENCH_DIR, 'lib', 'proxy-standin.mjs'), '--port', String(port), '--origin', opts.originUrl,
  ]);
  const proc = startProcess(label, cmd, args, { logFile: join(dir, 'standin.log') });
  await waitForPort(port, { proc });
  return { name: label, url: `http://127.0.0.1:${port}`, pid: proc.pid, logFile: proc.logFile, stop: () => proc.stop() };
}

/** GET a URL's text, or undefined on any error. @param {string} url */
export async function fetchText(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return await res.text();
  } catch {
    return undefined;
  }
}

export { sleep };
