/**
 * Real Redis topologies for tests: one Sentinel watching a master, and a three-master Cluster,
 * all with the installed redis-server (and redis-cli for `--cluster create`), on 127.0.0.1 in a
 * temp dir, without persistence.
 * Owns the processes it starts (only those, by PID), their temp dirs and bounded readiness waits;
 * it does not start the standalone master a Sentinel watches (redis-server.ts does).
 * A missing binary is an error with a clear message, never a silent skip.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { binaryOf, trackChild, waitForExit } from './redis-server.js';

const execFileAsync = promisify(execFile);

const READY_DEADLINE_MS = 5_000;
/** `redis-cli --cluster create` plus gossip until every node says cluster_state:ok. */
const CLUSTER_DEADLINE_MS = 10_000;
/** Redis Cluster's bus listens on port + 10000 (fixed offset), so data ports stay below this. */
const CLUSTER_BUS_OFFSET = 10_000;
const STOP_DEADLINE_MS = 2_000;

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A port free on 127.0.0.1 whose cluster bus port (port + 10000) is free too. Picked at random in
 * [20000, 40000) so the bus port stays below the ephemeral range most kernels hand out.
 */
async function freePortWithBus(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    if (taken.has(port) || taken.has(port + CLUSTER_BUS_OFFSET)) continue;
    if ((await canBind(port)) && (await canBind(port + CLUSTER_BUS_OFFSET))) return port;
  }
  throw new Error('no free port pair (port, port + 10000) on 127.0.0.1 after 50 tries');
}

/** One inline command over a raw socket; the first reply line (or bulk payload) within timeoutMs, else ''. */
function rawCommand(port: number, command: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (text: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(() => done(''), timeoutMs);
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      const bulk = /^\$(\d+)\r\n/.exec(reply);
      if (bulk) {
        const start = bulk[0].length;
        const length = Number(bulk[1]);
        if (reply.length >= start + length + 2) done(reply.slice(start, start + length));
      } else if (reply.includes('\r\n') && !reply.startsWith('$')) done(reply);
    });
    socket.on('error', () => done(''));
  });
}

/** SIGTERM, then SIGKILL if it has not exited within STOP_DEADLINE_MS. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  process.kill(child.pid, 'SIGTERM');
  if (await waitForExit(child, STOP_DEADLINE_MS)) return;
  process.kill(child.pid, 'SIGKILL');
  await waitForExit(child, STOP_DEADLINE_MS);
}

/** Spawn redis-server with args and wait (bounded) until PING answers +PONG on port. */
async function launch(args: string[], port: number, what: string): Promise<ChildProcess> {
  const proc = spawn(binaryOf('redis-server', 'redis-server'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout?.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4_000)));
  proc.stderr?.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4_000)));
  trackChild(proc);
  const deadline = Date.now() + READY_DEADLINE_MS;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${what} on port ${port} exited (${proc.exitCode}):\n${output}`);
    if ((await rawCommand(port, 'PING', 200)).startsWith('+PONG')) return proc;
    await new Promise((r) => setTimeout(r, 20));
  }
  await stopChild(proc);
  throw new Error(`${what} on port ${port} did not answer PING within ${READY_DEADLINE_MS} ms:\n${output}`);
}

export interface SentinelProcess {
  port: number;
  /** Stop the sentinel (SIGKILL if it does not exit promptly) and remove its dir; idempotent. */
  stop(): Promise<void>;
}

/**
 * One sentinel monitoring `127.0.0.1:masterPort` as `masterName` with quorum 1. Resolves once the
 * sentinel answers PING and names that master in SENTINEL get-master-addr-by-name.
 */
export async function startSentinel(masterPort: number, masterName = 'mymaster'): Promise<SentinelProcess> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-sentinel-'));
  const port = await freePortWithBus(new Set());
  const confPath = path.join(dir, 'sentinel.conf');
  // The sentinel rewrites its own config file at startup, so it lives in the temp dir.
  writeFileSync(
    confPath,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 1`,
      `sentinel down-after-milliseconds ${masterName} 1000`,
      `sentinel failover-timeout ${masterName} 5000`,
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;
  try {
    child = await launch([confPath, '--sentinel'], port, 'redis sentinel');
    const deadline = Date.now() + READY_DEADLINE_MS;
    let answer = '';
    while (Date.now() < deadline) {
      answer = await rawCommand(port, `SENTINEL get-master-addr-by-name ${masterName}`, 200);
      if (answer.includes(String(masterPort))) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!answer.includes(String(masterPort)))
      throw new Error(`sentinel on ${port} does not name master ${masterName} at ${masterPort} (answer ${JSON.stringify(answer)})`);
  } catch (err) {
    if (child) await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const started = child;
  return {
    port,
    stop: async () => {
      await stopChild(started);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisClusterProcesses {
  /** Data ports of the masters. */
  ports: number[];
  /** `redis://127.0.0.1:<port>` of each master. */
  urls: string[];
  /** Stop every node (SIGKILL if one does not exit promptly) and remove the dir; idempotent. */
  stop(): Promise<void>;
}

/** The `cluster_state` line of CLUSTER INFO on a node, e.g. 'ok' or 'fail'; '' when no answer. */
async function clusterStateOf(port: number): Promise<string> {
  const info = await rawCommand(port, 'CLUSTER INFO', 500);
  return /cluster_state:(\w+)/.exec(info)?.[1] ?? '';
}

/**
 * `masters` cluster-enabled redis-servers (no replicas), joined by `redis-cli --cluster create`
 * (which assigns the 16384 slots evenly). Resolves once every node reports cluster_state:ok.
 */
export async function startRedisCluster(masters = 3): Promise<RedisClusterProcesses> {
  const cli = binaryOf('redis-cli', 'redis-tools');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-cluster-'));
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(children.map(stopChild));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const taken = new Set<number>();
    for (let i = 0; i < masters; i++) {
      const port = await freePortWithBus(taken);
      taken.add(port).add(port + CLUSTER_BUS_OFFSET);
      const args = [
        '--port', String(port),
        '--bind', '127.0.0.1',
        '--dir', dir,
        '--cluster-enabled', 'yes',
        '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout', '2000',
        '--appendonly', 'no',
        '--save', '',
        '--daemonize', 'no',
      ];
      children.push(await launch(args, port, 'redis-server (cluster node)'));
      ports.push(port);
    }
    try {
      await execFileAsync(
        cli,
        ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
        { timeout: CLUSTER_DEADLINE_MS, killSignal: 'SIGKILL' },
      );
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`redis-cli --cluster create failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    }
    const deadline = Date.now() + CLUSTER_DEADLINE_MS;
    let states: string[] = [];
    while (Date.now() < deadline) {
      states = await Promise.all(ports.map(clusterStateOf));
      if (states.every((s) => s === 'ok')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!states.every((s) => s === 'ok'))
      throw new Error(`cluster not ok within ${CLUSTER_DEADLINE_MS} ms: states ${JSON.stringify(states)} on ports ${ports.join(',')}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { ports, urls: ports.map((p) => `redis://127.0.0.1:${p}`), stop };
}
