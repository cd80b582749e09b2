/**
 * /readyz: is this instance worth sending traffic to? Ready unless shutting down (stopping: the
 * shutdown.delayMs before draining; draining). The origins'
 * health is in the body (each site's state, every member's health), not in the status: every
 * instance shares the origin, and one down would make a load balancer pull them all at once,
 * with the stale copies that were keeping the site up (a WordPress database outage).
 */
import type { SiteRuntime } from '../runtime.js';

export interface Readiness {
  ready: boolean;
  /** Shutting down but still serving (shutdown.delayMs). */
  stopping: boolean;
  draining: boolean;
  sites: Array<{ site: string; state: string; origins: unknown[] }>;
}

export function readinessOf(sites: readonly SiteRuntime[], stopping: boolean, draining: boolean, now: number): Readiness {
  const states = sites.map((s) => ({
    site: s.name,
    state: s.pool.readiness(),
    origins: s.pool.members().map((m) => ({
      name: m.name,
      url: m.url.origin,
      healthy: m.isHealthy(now),
      ...m.healthState(now),
      configKey: 'sites[].origins[].url',
    })),
  }));
  const ready = !stopping && !draining;
  return { ready, stopping: stopping && !draining, draining, sites: states };
}
