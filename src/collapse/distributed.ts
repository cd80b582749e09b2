/**
 * Cross-instance fill lock: at most one instance fetches a key from the origin at a time.
 * Owns the lock (acquire, release, expiry); it does not wait for the fill (redis-bus.ts
 * waitForFill) nor collapse requests inside one process (inflight.ts).
 *
 * Acquire: `SET ${keyPrefix}l:${key} <token> NX PX ttlMs` — only one instance gets OK, and a
 * holder that dies blocks the key no longer than ttlMs (redis.lockTtlMs).
 * Release: compare-and-delete in Lua, so a holder whose lock already expired (and was taken by
 * another instance) never deletes the newer holder's lock. Extend: compare-and-PEXPIRE the same
 * way, so a holder whose fill outlasts ttlMs keeps the key (cross-instance.ts renews it while
 * the fill runs) and one that died lets it lapse.
 *
 * Fail open: with Redis down, hung or behind an open breaker, tryLock answers
 * `{ acquired: false, redisDown: true }` within one command timeout (at once when the breaker is
 * open), and the caller fetches alone. release() never rejects.
 */
import { randomBytes } from 'node:crypto';
import type { RedisGuard } from '../cache/stores/redis-store.js';

export type LockResult =
  | {
      acquired: true;
      release(): Promise<void>;
      /** Sets the lock's lifetime to ttlMs from now while it is still ours; false when it is not (lapsed, taken) or Redis did not answer. */
      extend(ttlMs: number): Promise<boolean>;
    }
  | { acquired: false; redisDown?: undefined }
  | { acquired: false; redisDown: true };

export interface DistributedLockOptions {
  guard: RedisGuard;
  keyPrefix: string;
}

/** DEL only when the lock still holds our token. */
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** PEXPIRE only when the lock still holds our token. */
const EXTEND_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

export class DistributedLock {
  private readonly guard: RedisGuard;
  private readonly keyPrefix: string;

  constructor(options: DistributedLockOptions) {
    this.guard = options.guard;
    this.keyPrefix = options.keyPrefix;
  }

  /** The Redis key of the lock for a primary key. */
  lockKeyOf(key: string): string {
    return `${this.keyPrefix}l:${key}`;
  }

  /**
   * `owner`: who takes it, readable by the others (holderOf): a fill's CDN-Loop id (http/loop.ts),
   * so that a request that came through the holder does not wait on it.
   */
  async tryLock(key: string, ttlMs: number, owner?: string): Promise<LockResult> {
    const lockKey = this.lockKeyOf(key);
    const token = owner === undefined ? makeLockToken() : `${owner}${OWNER_END}${makeLockToken()}`;
    // PX wants a positive integer number of milliseconds.
    const pxMs = Math.max(1, Math.ceil(ttlMs));
    const result = await this.guard.run((c) => c.set(lockKey, token, 'PX', pxMs, 'NX'));
    if (!result.ok) return { acquired: false, redisDown: true };
    if (result.value !== 'OK') return { acquired: false };
    let released = false;
    return {
      acquired: true,
      release: async () => {
        if (released) return;
        released = true;
        // Fail open: if this does not reach Redis, the lock lapses at its PX.
        await this.guard.run((c) => c.eval(RELEASE_LUA, 1, lockKey, token));
      },
      extend: async (ttlMs: number) => {
        if (released) return false;
        const result = await this.guard.run((c) => c.eval(EXTEND_LUA, 1, lockKey, token, String(Math.max(1, Math.ceil(ttlMs)))));
        return result.ok && result.value === 1;
      },
    };
  }

  /** The owner named by the lock of `key` now (tryLock's `owner`); undefined when none is, nobody holds it, or Redis does not answer. */
  async holderOf(key: string): Promise<string | undefined> {
    const result = await this.guard.run((c) => c.get(this.lockKeyOf(key)));
    if (!result.ok || typeof result.value !== 'string') return undefined;
    const end = result.value.indexOf(OWNER_END);
    return end > 0 ? result.value.slice(0, end) : undefined;
  }

  /** Does some instance hold the lock of `key` now? False as well when Redis does not answer (fail open: the caller fetches). */
  async isHeld(key: string): Promise<boolean> {
    const result = await this.guard.run((c) => c.exists(this.lockKeyOf(key)));
    return result.ok && result.value === 1;
  }
}

/** Ends a lock token's owner (an owner never contains it: CDN-Loop ids are `crowdgate-<hex>`). */
const OWNER_END = '/';

/** 128 random bits, hex: unique per acquisition across instances. */
export function makeLockToken(): string {
  return randomBytes(16).toString('hex');
}
