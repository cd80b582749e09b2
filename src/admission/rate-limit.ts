/**
 * Per-client token buckets (429 + Retry-After when empty), kept in a bounded LRU table so a
 * flood of distinct client keys cannot grow memory without end.
 *
 * Owns the buckets only. It does not choose the key (client address or a header: the request
 * path does) nor write the response.
 *
 * Bucket, refilled lazily on each take (no timers):
 *   tokens = min(burst, tokens + elapsedMs * ratePerSecond / 1000)
 *   allowed when tokens >= 1 (then tokens -= 1)
 *   retryAfterSeconds = ceil((1 - tokens) / ratePerSecond) when refused, else 0
 *
 * Known limitation: when more than `maxKeys` clients are active, the least recently seen lose
 * their bucket, and a client whose bucket was evicted starts again with a full one. Size
 * `maxKeys` above the number of clients expected within one refill period (burst / rate).
 */
import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';

export interface RateLimiterOptions {
  /** Tokens refilled per second. */
  ratePerSecond: number;
  /** Bucket size: requests a quiet client may send at once. */
  burst: number;
  /** Most buckets kept. Default 100000. */
  maxKeys?: number;
  clock: Clock;
}

export interface TakeResult {
  allowed: boolean;
  /** Whole seconds until a token is available; 0 when allowed. */
  retryAfterSeconds: number;
  /** Whole tokens left after this take. */
  remaining: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class RateLimiter {
  private readonly ratePerMs: number;
  private readonly ratePerSecond: number;
  private readonly burst: number;
  private readonly clock: Clock;
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(opts: RateLimiterOptions) {
    if (!(opts.ratePerSecond > 0 && Number.isFinite(opts.ratePerSecond)))
      throw new TypeError(`ratePerSecond must be > 0, got ${opts.ratePerSecond}`);
    if (!(Number.isInteger(opts.burst) && opts.burst >= 1)) throw new TypeError(`burst must be an integer >= 1, got ${opts.burst}`);
    const maxKeys = opts.maxKeys ?? 100_000;
    if (!(Number.isInteger(maxKeys) && maxKeys >= 1)) throw new TypeError(`maxKeys must be an integer >= 1, got ${maxKeys}`);
    this.ratePerSecond = opts.ratePerSecond;
    this.ratePerMs = opts.ratePerSecond / 1000;
    this.burst = opts.burst;
    this.clock = opts.clock;
    this.buckets = new LRUCache<string, Bucket>({ max: maxKeys });
  }

  /** Buckets held now (bounded by maxKeys). */
  get size(): number {
    return this.buckets.size;
  }

  /**
   * Takes over `from`'s buckets (a reload that changed the rate or the burst): each client keeps
   * what it had, as of now, never more than the new burst. A new limiter with full buckets
   * handed every client, the abusive ones first, a fresh burst at each edit, one that tightened
   * the limit included (config-edit trial).
   */
  adopt(from: RateLimiter): void {
    const now = this.clock.now();
    const entries = [...from.buckets.entries()].reverse(); // least recent first, so recency is kept
    for (const [key, b] of entries) {
      const elapsed = Math.max(0, now - b.updatedAt);
      const tokens = Math.min(from.burst, b.tokens + elapsed * from.ratePerMs, this.burst);
      this.buckets.set(key, { tokens, updatedAt: now });
    }
  }

  take(key: string): TakeResult {
    const now = this.clock.now();
    let b = this.buckets.get(key);
    if (b === undefined) {
      b = { tokens: this.burst, updatedAt: now };
      this.buckets.set(key, b);
    } else {
      const elapsed = now - b.updatedAt;
      if (elapsed > 0) {
        const t = b.tokens + elapsed * this.ratePerMs;
        b.tokens = t > this.burst ? this.burst : t;
        b.updatedAt = now;
      }
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { allowed: true, retryAfterSeconds: 0, remaining: Math.floor(b.tokens) };
    }
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / this.ratePerSecond)),
      remaining: 0,
    };
  }
}
