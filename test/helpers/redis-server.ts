/**
 * A real redis-server for tests, on 127.0.0.1 and a free port, with no persistence.
 * Owns the process it starts (and only that one, by PID): start, PING readiness, pause (SIGSTOP),
 * resume (SIGCONT), kill, restart on the same port, cleanup on process exit.
 * Missing redis-server is an error with a clear message, never a silent skip (CI installs it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { freePort } from './free-port.js';

export interface RedisServer {
  port: number;
  url: string;
  /** Stop the server (SIGKILL if it does not exit promptly); idempotent. */
  stop(): Promise<void>;
  /** SIGSTOP: the socket stays open, nothing answers. */
  pause(): void;
  /** SIGCONT */
  resume(): void;
  /** SIGKILL, no goodbye: clients see the connection drop. */
  kill(): Promise<void>;
  /** Start again on the same port (after kill/stop) and wait for PING. */
  restart(): Promise<void>;
}

const READY_DEADLINE_MS = 5_000;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Registers a server process this test run started, so it is SIGKILLed by PID if the suite dies
 * before its afterAll (also ends a SIGSTOPped server). Shared with redis-topology.ts.
 */
export function trackChild(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) {
        if (c.pid === undefined) continue;
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** The path of a Redis binary, or a clear error naming the Debian package to install. */
export function binaryOf(name: 'redis-server' | 'redis-cli', pkg: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const bin = found.stdout.trim();
  if (found.status !== 0 || !bin)
    throw new Error(`${name} not found on PATH. The Redis tests need a real server: install it (Debian/Ubuntu: \`apt-get install -y ${pkg}\`).`);
  return bin;
}

/** One PING over a raw socket; true on +PONG within timeoutMs. */
function ping(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
  });
}

export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export async function startRedisServer(): Promise<RedisServer> {
  const bin = binaryOf('redis-server', 'redis-server');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-redis-'));
  let child: ChildProcess | undefined;
  let port = 0;

  const launch = async (): Promise<void> => {
    const proc = spawn(
      bin,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    proc.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    trackChild(proc);
    child = proc;
    const deadline = Date.now() + READY_DEADLINE_MS;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode}) on port ${port}: ${stderr}`);
      if (await ping(port, 200)) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`redis-server on port ${port} did not answer PING within ${READY_DEADLINE_MS} ms`);
  };

  const kill = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    process.kill(proc.pid, 'SIGKILL');
    await waitForExit(proc, 2_000);
  };

  // A free port can be taken between probing and binding: try a few.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await launch();
      lastError = undefined;
      break;
    } catch (err) {
      lastError = err;
      await kill();
    }
  }
  if (lastError) throw lastError;

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pause: () => {
      if (child?.pid !== undefined) process.kill(child.pid, 'SIGSTOP');
    },
    resume: () => {
      if (child?.pid !== undefined) process.kill(child.pid, 'SIGCONT');
    },
    kill,
    restart: async () => {
      await kill();
      await launch();
    },
    stop: async () => {
      const proc = child;
      if (proc?.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
        process.kill(proc.pid, 'SIGCONT');
        process.kill(proc.pid, 'SIGTERM');
        if (!(await waitForExit(proc, 2_000))) await kill();
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Resolves when an ioredis client (or anything with status + 'ready') is ready; rejects after timeoutMs. */
export function waitUntilReady(
  client: { status: string; once(event: 'ready', listener: () => void): unknown; off(event: 'ready', listener: () => void): unknown },
  timeoutMs = 5_000,
): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`redis client not ready within ${timeoutMs} ms (status ${client.status})`));
    }, timeoutMs);
    client.once('ready', onReady);
  });
}

/** What useRedisServer gives a test file. Read it inside hooks and tests: the server starts in beforeAll. */
export interface RedisServerFixture {
  readonly server: RedisServer;
  readonly url: string;
  /** An ioredis client for inspecting keys (only with `inspect: true`); its errors are ignored, as tests kill and restart the server. */
  readonly raw: Redis;
  /** Registers a cleanup to run after the current test; last registered runs first, each awaited. */
  cleanup(fn: () => Promise<void> | void): void;
}

/**
 * One redis-server for the calling test file: started in beforeAll (with the raw inspection client
 * if asked), stopped in afterAll, and the per-test cleanups run in afterEach.
 */
export function useRedisServer(opts: { inspect?: boolean } = {}): RedisServerFixture {
  let server: RedisServer | undefined;
  let raw: Redis | undefined;
  const cleanups: (() => Promise<void> | void)[] = [];

  beforeAll(async () => {
    server = await startRedisServer();
    if (opts.inspect) {
      raw = new Redis(server.url);
      raw.on('error', () => {});
    }
  });
  afterAll(async () => {
    raw?.disconnect();
    await server?.stop();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  return {
    get server() {
      if (!server) throw new Error('useRedisServer: the server starts in beforeAll; use it inside hooks and tests');
      return server;
    },
    get url() {
      return this.server.url;
    },
    get raw() {
      if (!raw) throw new Error('useRedisServer: the raw client needs { inspect: true }');
      return raw;
    },
    cleanup: (fn) => {
      cleanups.push(fn);
    },
  };
}
