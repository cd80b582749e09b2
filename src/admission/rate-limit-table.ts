/**
 * The rate limiters in force: one per site and one per route that configures `rateLimit`
 * (enabled), each a RateLimiter (rate-limit.ts). Rebuilt from every config generation by
 * configure(); a limiter whose settings did not change is kept, buckets and all, and one whose
 * rate or burst changed takes the old buckets over (capped at the new burst), so a reload
 * neither refills nor empties anybody's bucket.
 *
 * Owns the table and the order limiters apply in (the route's first, then the site's). It does
 * not choose the client key (the request path passes a function from the limiter's `keyHeader`
 * to the key) nor write the 429.
 */
import type { Clock } from '../clock.js';
import type { RateLimitConfig, SiteConfig } from '../config/schema.js';
import { RateLimiter } from './rate-limit.js';

interface Entry {
  cfg: RateLimitConfig;
  limiter: RateLimiter;
}

export class RateLimitTable {
  private limiters = new Map<string, Entry>();

  constructor(private readonly clock: Clock) {}

  /** Applies a config generation's sites: new limiters for new or changed settings, the rest kept. */
  configure(sites: readonly SiteConfig[]): void {
    const next = new Map<string, Entry>();
    const add = (id: string, rl: RateLimitConfig | undefined) => {
      if (!rl || !rl.enabled) return;
      const prev = this.limiters.get(id);
      if (prev && JSON.stringify(prev.cfg) === JSON.stringify(rl)) return void next.set(id, prev);
      const limiter = new RateLimiter({ ratePerSecond: rl.ratePerSecond, burst: rl.burst, clock: this.clock });
      // New numbers for the same clients: their buckets carry over (capped at the new burst).
      // Another key header names other clients: fresh buckets.
      if (prev && prev.cfg.keyHeader === rl.keyHeader) limiter.adopt(prev.limiter);
      next.set(id, { cfg: rl, limiter });
    };
    for (const site of sites) {
      add(rateLimitId(site.name), site.rateLimit);
      for (const route of site.routes) add(rateLimitId(site.name, route.name), route.rateLimit);
    }
    this.limiters = next;
  }

  /**
   * Takes a token for this client from every limiter of the route and the site; returns the
   * Retry-After seconds (at least 1) of the first that refuses, undefined when all allow.
   */
  take(site: string, route: string, clientKey: (header?: string) => string): number | undefined {
    if (this.limiters.size === 0) return undefined; // off unless configured
    for (const id of rateLimitIds(site, route)) {
      const rl = this.limiters.get(id);
      if (!rl) continue;
      const taken = rl.limiter.take(clientKey(rl.cfg.keyHeader));
      if (!taken.allowed) return Math.max(1, Math.ceil(taken.retryAfterSeconds));
    }
    return undefined;
  }

  /** True when a limiter applies to this site and route. */
  applies(site: string, route: string): boolean {
    if (this.limiters.size === 0) return false;
    return rateLimitIds(site, route).some((id) => this.limiters.has(id));
  }
}

/** A rate limiter's id: the site's own (route omitted) or one route's. */
function rateLimitId(site: string, route = ''): string {
  return `${site}\u0000${route}`;
}

/** The limiters that may apply to a request, the route's first, then the site's. */
function rateLimitIds(site: string, route: string): [string, string] {
  return [rateLimitId(site, route), rateLimitId(site)];
}
