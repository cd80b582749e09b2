import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import type { GatewayConfig } from '../../src/config/schema.js';
import { createLogger, isLoopbackHost, logStartup } from '../../src/log.js';

const TOKEN = 'a-token-of-16+chars';

function config(admin: string): GatewayConfig {
  const r = parseConfigText(
    `admin:\n${admin}sites:\n  - name: blog\n    hosts: ["*"]\n    origins: [{ url: "http://127.0.0.1:3000" }]\n`,
    'test.yaml',
    { env: {} },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

function recorder() {
  const lines: Array<{ level: 'info' | 'warn'; msg: string; obj?: unknown }> = [];
  const at = (level: 'info' | 'warn') => (a: unknown, b?: string) =>
    void lines.push(typeof a === 'string' ? { level, msg: a } : { level, msg: b!, obj: a });
  return { lines, logger: { info: at('info'), warn: at('warn') } as unknown as Logger };
}

const addr = (address: string, port: number): AddressInfo => ({ address, port, family: 'IPv4' });
const ADDRESSES = { public: addr('127.0.0.1', 8080), admin: addr('0.0.0.0', 9091) };
const warnings = (lines: ReturnType<typeof recorder>['lines']) => lines.filter((l) => l.level === 'warn').map((l) => l.msg);

describe('logStartup', () => {
  it('says where it listens, which sites, CPUs and GC mode', () => {
    const { lines, logger } = recorder();
    logStartup(logger, config('  host: 127.0.0.1\n'), ADDRESSES, { cpus: 4, gc: 'concurrent' });
    expect(lines).toEqual([
      { level: 'info', msg: 'crowdgate listening', obj: { listen: '127.0.0.1:8080', admin: '0.0.0.0:9091', sites: ['blog'], cpus: 4, gc: 'concurrent' } },
    ]);
  });

  it('warns about an admin listener beyond loopback unless both tokens are set', () => {
    const exposed = recorder();
    logStartup(exposed.logger, config(`  host: 0.0.0.0\n  purgeToken: ${TOKEN}\n`), ADDRESSES, { cpus: 4, gc: 'concurrent' });
    expect(warnings(exposed.lines)).toHaveLength(1);
    expect(warnings(exposed.lines)[0]).toContain('admin listener on a non-loopback address');
    expect(exposed.lines[1]!.obj).toEqual({ admin: '0.0.0.0:9091', purgeToken: true, statusToken: false });
    const tokens = recorder();
    logStartup(tokens.logger, config(`  host: 0.0.0.0\n  purgeToken: ${TOKEN}\n  statusToken: ${TOKEN}x\n`), ADDRESSES, { cpus: 4, gc: 'concurrent' });
    expect(warnings(tokens.lines)).toEqual([]);
  });

  it('warns about one CPU with concurrent GC, not with single-threaded GC', () => {
    const one = recorder();
    logStartup(one.logger, config('  host: localhost\n'), ADDRESSES, { cpus: 1, gc: 'concurrent' });
    expect(warnings(one.lines)).toEqual([expect.stringContaining('one CPU and concurrent GC')]);
    const single = recorder();
    logStartup(single.logger, config('  host: localhost\n'), ADDRESSES, { cpus: 1, gc: 'single-threaded' });
    expect(warnings(single.lines)).toEqual([]);
  });
});

describe('isLoopbackHost', () => {
  it('is true for 127.0.0.0/8, ::1 (bracketed or not), localhost and the mapped 127.0.0.1', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'example.com', '127.0.0.1.example.com']) expect(isLoopbackHost(h)).toBe(false);
  });
});

describe('createLogger', () => {
  it('logs at the configured level, every line tagged svc=crowdgate', () => {
    const logger = createLogger('warn');
    expect(logger.level).toBe('warn');
    expect(logger.bindings()).toEqual({ svc: 'crowdgate' });
  });
});
