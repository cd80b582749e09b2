/**
 * /readyz: is this instance worth sending traffic to? Ready unless draining or no site has a
 * usable origin ('up': a healthy member with a passing active check). Also lists every
 * member's health, for the readiness body and the status page.
 */
import type { SiteRuntime } from '../runtime.js';

export interface Readiness {
  ready: boolean;
  draining: boolean;
  sites: Array<{ site: string; state: string; origins: unknown[] }>;
}

export function readinessOf(sites: readonly SiteRuntime[], draining: boolean, now: number): Readiness {
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
  const ready = !draining && states.some((s) => s.state === 'up');
  return { ready, draining, sites: states };
}
