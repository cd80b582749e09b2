/**
 * The origin pools in force, one per site (pool.ts), kept across config generations: a reload
 * updates a site's pool in place (members that stay keep their health and in-flight counts),
 * makes pools for new sites and closes those of sites that went. Keeps
 * crowdgate_origin_healthy in step with the members, and makes every active probe take a
 * permit from its member's limiter (upstream.ts) under the site's current config.
 *
 * Owns which pools exist. It does not compile the config (runtime.ts asks it for each site's
 * pool) nor pick members (the pools do).
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { SiteConfig } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import { HEALTH_CHANGE_CAUSES, OriginPool, PROBE_VERDICTS, type HealthChangeCause } from './pool.js';
import type { Upstream } from './upstream.js';
import type { OriginMember } from './member.js';

/** A HealthChangeCause as the `cause` label of crowdgate_origin_health_changes_total ('-' as '_'). */
const causeLabel = (cause: HealthChangeCause): string => cause.replace('-', '_');

export interface PoolTableOptions {
  clock: Clock;
  logger: Logger;
  metrics: GatewayMetrics;
  upstream: Upstream;
  /** A site's config as it is now (a probe may outlive the generation its pool was made by). */
  currentSite(name: string): SiteConfig | undefined;
}

export class PoolTable {
  private readonly pools = new Map<string, OriginPool>();
  private started = false;

  constructor(private readonly opts: PoolTableOptions) {}

  /**
   * Compiles a config generation: `compile` gets each site's pool from `poolFor` (the existing
   * one updated, or a new one); afterwards the pools of sites it did not ask for are closed.
   */
  refresh<T>(compile: (poolFor: (site: SiteConfig) => OriginPool) => T): T {
    const seen = new Set<string>();
    const compiled = compile((site) => {
      seen.add(site.name);
      return this.poolFor(site);
    });
    for (const [name, pool] of this.pools) {
      if (!seen.has(name)) {
        // A removed (or renamed) site: its members' limiters and gauge series go with it, or
        // `crowdgate_origin_healthy 0` of a site that no longer exists stays for good.
        for (const m of pool.members()) this.forgetMember(name, m);
        this.pools.delete(name);
        pool.retire();
      }
    }
    return compiled;
  }

  /** Starts active health checks in every pool, and in every pool made from now on. */
  start(): void {
    this.started = true;
    for (const pool of this.pools.values()) pool.start();
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close()));
  }

  /** A member's series: healthy until told otherwise, its health-change and probe counters at 0 (a first ejection then shows as an increase). */
  private seriesFor(site: string, member: OriginMember): void {
    const { metrics } = this.opts;
    metrics.get('originHealthy').set({ site, origin: member.name }, 1);
    for (const cause of HEALTH_CHANGE_CAUSES) metrics.get('originHealthChanges').inc({ site, origin: member.name, cause: causeLabel(cause) }, 0);
    for (const result of PROBE_VERDICTS) metrics.get('originHealthChecks').inc({ site, origin: member.name, result }, 0);
  }

  private forgetMember(site: string, member: OriginMember): void {
    this.opts.upstream.forget(member);
    this.opts.metrics.get('originHealthy').remove({ site, origin: member.name });
    for (const cause of HEALTH_CHANGE_CAUSES) this.opts.metrics.get('originHealthChanges').remove({ site, origin: member.name, cause: causeLabel(cause) });
    for (const result of PROBE_VERDICTS) this.opts.metrics.get('originHealthChecks').remove({ site, origin: member.name, result });
  }

  private poolFor(site: SiteConfig): OriginPool {
    const { metrics, upstream } = this.opts;
    let pool = this.pools.get(site.name);
    if (pool) {
      const update = pool.update(site);
      for (const m of update.removed) this.forgetMember(site.name, m);
      for (const m of update.added) this.seriesFor(site.name, m);
      return pool;
    }
    pool = new OriginPool(site, {
      clock: this.opts.clock,
      logger: this.opts.logger,
      // The pool logs health transitions itself; here they only feed the gauge.
      onHealthChange: (member, healthy, cause) => {
        metrics.get('originHealthy').set({ site: site.name, origin: member.name }, healthy ? 1 : 0);
        metrics.get('originHealthChanges').inc({ site: site.name, origin: member.name, cause: causeLabel(cause) });
      },
      // Probes take a permit like every origin request; the site's current config decides.
      admitProbe: (member, signal) => {
        const current = this.opts.currentSite(site.name) ?? site;
        return upstream.admitProbe(current, member, signal);
      },
      onProbePassed: (member) => upstream.healthCheckPassed(this.opts.currentSite(site.name) ?? site, member),
      onProbeVerdict: (member, verdict) => metrics.get('originHealthChecks').inc({ site: site.name, origin: member.name, result: verdict }),
    });
    for (const m of pool.members()) this.seriesFor(site.name, m);
    // At 0 from the start, so a first retry shows as an increase (rate() needs a sample before it).
    metrics.get('originRetries').inc({ site: site.name }, 0);
    this.pools.set(site.name, pool);
    if (this.started) pool.start();
    return pool;
  }
}
