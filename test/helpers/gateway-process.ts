/**
 * Runs the real `crowdgate` binary (node dist/main.js, built by the global setup) as a child
 * process, for tests that must measure the gateway alone: its memory high-water mark, or
 * latencies not disturbed by a test client sharing its event loop. Logs (stdout JSON lines)
 * are captured. Stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { GatewayConfigInput } from '../../src/config/schema.js';
import { withTestDefaults } from './gateway.js';

export interface GatewayProcess {
  child: ChildProcess;
  url: string;
  adminUrl: string;
  configPath: string;
  logs: Array<Record<string, unknown>>;
  /** Peak resident set size of the gateway process so far, in bytes (Linux VmHWM). */
  peakRssBytes(): number;
  rssBytes(): number;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function spawnGateway(input: GatewayConfigInput, timeoutMs = 10_000): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'crowdgate-proc-'));
  const configPath = join(dir, 'gateway.yaml');
  writeFileSync(configPath, stringify(withTestDefaults({ reload: { watch: false }, ...input })));
  const child = spawn(process.execPath, ['dist/main.js', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  // The test worker may end without calling stop() (a failed beforeAll, a timeout): the child
  // must not outlive it. Removed once the child has exited.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => process.off('exit', reap));
  const logs: Array<Record<string, unknown>> = [];
  let buffered = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start: ${stderr}`)), timeoutMs);
    child.once('exit', (code) => reject(new Error(`gateway exited ${code}: ${stderr}`)));
    child.stdout!.on('data', (d) => {
      buffered += String(d);
      let nl: number;
      while ((nl = buffered.indexOf('\n')) !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'crowdgate listening') {
            clearTimeout(timer);
            resolve(entry);
          }
        } catch {
          /* not JSON */
        }
      }
    });
  });
  let started: Record<string, unknown>;
  try {
    started = await listening;
  } catch (err) {
    child.kill('SIGKILL'); // never leave a half-started gateway behind
    throw err;
  }
  const status = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  };
  return {
    child,
    url: `http://${String(started.listen)}`,
    adminUrl: `http://${String(started.admin)}`,
    configPath,
    logs,
    peakRssBytes: () => status('VmHWM'),
    rssBytes: () => status('VmRSS'),
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill(signal);
      }),
  };
}
