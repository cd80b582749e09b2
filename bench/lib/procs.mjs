/**
 * Process and port plumbing for the benchmarks: free loopback ports, child processes that are
 * started, awaited and stopped by their own PID, and readiness probes.
 *
 * Every child started through `startProcess` is remembered and stopped (SIGTERM, then SIGKILL
 * after a grace period) on `stopAll()` and when this process exits or is interrupted, so a
 * benchmark never leaves a server behind. It never signals anything it did not start.
 */
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { loadavg, availableParallelism } from 'node:os';

/** @typedef {{ name: string, pid: number, child: import('node:child_process').ChildProcess, logFile?: string, exited: Promise<number|null>, stop: (graceMs?: number) => Promise<void> }} Proc */

/** @type {Set<Proc>} */
const live = new Set();

/**
 * A free TCP port on 127.0.0.1: bind port 0, read the port, close. (Racy in principle; good
 * enough on a quiet loopback.)
 * @returns {Promise<number>}
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts a child process; its stdout and stderr go to `logFile` (or are discarded).
 * @param {string} name label for messages
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ logFile?: string, env?: NodeJS.ProcessEnv, cwd?: string }} [opts]
 * @returns {Proc}
 */
export function startProcess(name, cmd, args, opts = {}) {
  const fd = opts.logFile ? openSync(opts.logFile, 'a') : 'ignore';
  const child = spawn(cmd, args, {
    stdio: ['ignore', fd, fd],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  if (typeof fd === 'number') closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  /** @type {Proc} */
  const proc = {
    name,
    pid: child.pid,
    child,
    logFile: opts.logFile,
    exited,
    async stop(graceMs = 3000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      live.delete(proc);
    },
  };
  live.add(proc);
  exited.then(() => live.delete(proc));
  return proc;
}

/** Stops every child still running that this module started. */
export async function stopAll() {
  await Promise.all([...live].map((p) => p.stop()));
}

function killAllSync() {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.once('exit', killAllSync);
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
  process.once(sig, () => {
    killAllSync();
    process.exit(130);
  });
}

/**
 * Resolves when a TCP connection to host:port succeeds; rejects after `timeoutMs` or as soon
 * as `proc` exits.
 * @param {number} port
 * @param {{ host?: string, timeoutMs?: number, proc?: Proc }} [opts]
 */
export async function waitForPort(port, opts = {}) {
  const host = opts.host ?? '127.0.0.1';
  const deadlineAt = Date.now() + (opts.timeoutMs ?? 15_000);
  let exitedCode;
  opts.proc?.exited.then((c) => (exitedCode = c ?? 'signal'));
  while (Date.now() < deadlineAt) {
    if (exitedCode !== undefined)
      throw new Error(`${opts.proc?.name} exited (${exitedCode}) before listening; see ${opts.proc?.logFile ?? 'its output'}`);
    const ok = await new Promise((resolve) => {
      const s = connect(port, host);
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listening on ${host}:${port} after ${opts.timeoutMs ?? 15_000} ms`);
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The machine's 1-minute load average, with a warning on stderr when it is above half the CPU
 * count before a benchmark starts: other work on the box skews every figure.
 * @param {string} when label for the message
 * @returns {number}
 */
export function noteMachineLoad(when) {
  const load1 = loadavg()[0];
  if (when === 'start' && load1 > availableParallelism() / 2)
    process.stderr.write(`warning: load average ${load1.toFixed(2)} on ${availableParallelism()} CPUs before the run: the machine is busy and the figures will be noisy\n`);
  return Number(load1.toFixed(2));
}

/** Linux's USER_HZ: the unit of utime and stime in /proc/PID/stat (100 on every Linux ABI Node supports). */
const CLOCK_TICKS = 100;

/**
 * CPU seconds (user + system) a process has used so far, from /proc/PID/stat; undefined where
 * there is no /proc or no PID. The setup's CPU over the load is the figure least moved by a
 * noisy host: latency there is mostly queueing for the CPU, its cost per request is not.
 */
export function processCpuSeconds(pid) {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
