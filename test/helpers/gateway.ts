/**
 * Starts a real Gateway in-process for integration tests: both listeners on 127.0.0.1 port 0,
 * a config given inline (object or YAML text, validated by the real loader), logs captured in
 * memory so tests can assert on the access log.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { stringify } from 'yaml';
import type { Clock } from '../../src/clock.js';
import { formatConfigError, parseConfigText } from '../../src/config/load.js';
import type { GatewayConfigInput } from '../../src/config/schema.js';
import { Gateway, type GatewayOptions } from '../../src/gateway.js';
import type { CacheStore } from '../../src/cache/stores/cache-store.js';

export interface StartedGateway {
  gw: Gateway;
  /** http://127.0.0.1:PORT of the public listener. */
  url: string;
  adminUrl: string;
  /** The YAML file the gateway was started from (edit it to test reloads). */
  configPath: string;
  logs: Array<Record<string, unknown>>;
  accessLogs(): Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export interface StartOptions {
  clock?: Clock;
  store?: CacheStore;
  /** Keep the file watcher on (off by default so tests reload explicitly). */
  watch?: boolean;
  /** The pressure gate's verdict, injected (the sampled gate is off in tests). */
  isOverloaded?: () => boolean;
  /** `false`: no hit memo (every request takes the slow path). */
  hitMemo?: boolean;
  /** ACME client settings the config does not carry (how fast acme-client polls the CA). */
  acme?: GatewayOptions['acme'];
}

/** Test defaults: ephemeral ports, fast health checks off unless asked, pressure gate off. */
export function withTestDefaults(input: GatewayConfigInput): GatewayConfigInput {
  return {
    ...input,
    listen: { host: '127.0.0.1', port: 0, ...(input.listen ?? {}) },
    admin: { host: '127.0.0.1', port: 0, ...(input.admin ?? {}) },
    log: { level: 'info', ...(input.log ?? {}) },
    admission: { ...(input.admission ?? {}), pressure: { enabled: false, ...(input.admission?.pressure ?? {}) } },
  };
}

export async function startGateway(input: GatewayConfigInput | string, opts: StartOptions = {}): Promise<StartedGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'crowdgate-test-'));
  const configPath = join(dir, 'gateway.yaml');
  const text = typeof input === 'string' ? input : stringify(withTestDefaults({ reload: { watch: opts.watch ?? false }, ...input }));
  writeFileSync(configPath, text);
  const loaded = parseConfigText(text, configPath);
  if (!loaded.ok) throw new Error(`test config invalid:\n${loaded.errors.map(formatConfigError).join('\n')}`);
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) {
        if (line.trim()) {
          try {
            logs.push(JSON.parse(line) as Record<string, unknown>);
          } catch {
            /* not JSON */
          }
        }
      }
      cb();
    },
  });
  const logger = pino({ level: loaded.config.log.level }, sink);
  const gw = new Gateway({ config: loaded.config, configPath, logger, clock: opts.clock, store: opts.store, isOverloaded: opts.isOverloaded, hitMemo: opts.hitMemo, acme: opts.acme });
  const { public: pub, admin } = await gw.listen();
  return {
    gw,
    url: `http://127.0.0.1:${pub.port}`,
    adminUrl: `http://127.0.0.1:${admin.port}`,
    configPath,
    logs,
    accessLogs: () => logs.filter((l) => l.type === 'access'),
    close: () => gw.close(),
  };
}

/** One site "test" for every host, pointing at the given origin URLs. */
export function siteFor(origins: string[], extra: Record<string, unknown> = {}): GatewayConfigInput['sites'][number] {
  return {
    name: 'test',
    hosts: ['*'],
    origins: origins.map((url) => ({ url })),
    healthCheck: { enabled: false },
    ...extra,
  } as GatewayConfigInput['sites'][number];
}
