/**
 * The process logger, and what the gateway says once both listeners are up: the 'crowdgate
 * listening' line (addresses, sites, CPUs, GC mode) and two warnings about how it was started:
 * an admin listener reachable from other machines without both admin tokens, and one CPU with
 * concurrent GC (the launcher, scripts/crowdgate, picks the GC flag by CPU count).
 */
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import pino, { type Logger } from 'pino';
import type { GatewayConfig } from './config/schema.js';

/** JSON lines on stdout, written asynchronously and buffered: a slow stdout reader must never stall the request path. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { svc: 'crowdgate' } }, pino.destination({ dest: 1, sync: false }));
}

/** The process facts the start-up line reports; read from this process unless given (tests). */
export interface HostFacts {
  cpus: number;
  gc: 'single-threaded' | 'concurrent';
}

export function hostFacts(): HostFacts {
  const gc = process.execArgv.includes('--single-threaded-gc') ? 'single-threaded' : 'concurrent';
  return { cpus: availableParallelism(), gc };
}

export function logStartup(
  logger: Logger,
  cfg: GatewayConfig,
  addresses: { public: AddressInfo; admin: AddressInfo; https?: AddressInfo },
  host: HostFacts = hostFacts(),
): void {
  const { public: pub, admin } = addresses;
  const { cpus, gc } = host;
  logger.info(
    {
      listen: `${pub.address}:${pub.port}`,
      ...(addresses.https ? { https: `${addresses.https.address}:${addresses.https.port}` } : {}),
      admin: `${admin.address}:${admin.port}`,
      sites: cfg.sites.map((s) => s.name), cpus, gc },
    'crowdgate listening',
  );
  if (!isLoopbackHost(cfg.admin.host) && (cfg.admin.purgeToken === undefined || cfg.admin.statusToken === undefined))
    logger.warn(
      { admin: `${admin.address}:${admin.port}`, purgeToken: cfg.admin.purgeToken !== undefined, statusToken: cfg.admin.statusToken !== undefined },
      'admin listener on a non-loopback address without admin.purgeToken and admin.statusToken: /status shows hot paths and origins to anyone who can reach it; bind it to 127.0.0.1 or set both tokens',
    );
  if (cpus === 1 && gc === 'concurrent')
    logger.warn('one CPU and concurrent GC: start with scripts/crowdgate (or node --single-threaded-gc) to avoid GC stalls');
}

/** 127.0.0.0/8, ::1 and localhost: addresses only this machine reaches. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}
