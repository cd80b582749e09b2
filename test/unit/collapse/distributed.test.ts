import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { createRedisClient, RedisGuard } from '../../../src/cache/stores/redis-store.js';
import { DistributedLock, makeLockToken } from '../../../src/collapse/distributed.js';
import { useRedisServer, waitUntilReady } from '../../helpers/redis-server.js';

const T0 = 1_700_000_000_000;
const COMMAND_TIMEOUT_MS = 75;
const SLACK_MS = 150;
const redis = useRedisServer({ inspect: true });
let n = 0;

/** One lock client per simulated instance, all on one key prefix. */
async function makeLocks(count: number, url = redis.url) {
  const keyPrefix = `lock${++n}:`;
  const locks: DistributedLock[] = [];
  for (let i = 0; i < count; i++) {
    const client = createRedisClient({ url, commandTimeoutMs: COMMAND_TIMEOUT_MS, connectTimeoutMs: 300 });
    redis.cleanup(() => client.disconnect());
    if (url === redis.url) await waitUntilReady(client);
    const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock: new ManualClock(T0) });
    locks.push(new DistributedLock({ guard, keyPrefix }));
  }
  return locks;
}

describe('DistributedLock', () => {
  it('gives the lock to exactly one of many concurrent instances', async () => {
    const locks = await makeLocks(5);
    const results = await Promise.all(locks.map((l) => l.tryLock('s\u0000/hot?', 5_000)));
    expect(results.filter((r) => r.acquired)).toHaveLength(1);
    expect(results.filter((r) => !r.acquired && !r.redisDown)).toHaveLength(4);
  });

  it('release lets the next instance take it; a second release is harmless', async () => {
    const [a, b] = await makeLocks(2);
    const held = await a!.tryLock('k', 5_000);
    expect((await b!.tryLock('k', 5_000)).acquired).toBe(false);
    if (!held.acquired) throw new Error('expected the lock');
    await held.release();
    await held.release();
    expect((await b!.tryLock('k', 5_000)).acquired).toBe(true);
  });

  it('sets the TTL so a dead holder blocks the key no longer than ttlMs', async () => {
    const [a] = await makeLocks(1);
    await a!.tryLock('k', 2_000);
    const pttl = await redis.raw.pttl(a!.lockKeyOf('k'));
    expect(pttl).toBeGreaterThan(1_000);
    expect(pttl).toBeLessThanOrEqual(2_000);
  });

  it('a holder whose lock lapsed does not delete the next holder’s lock', async () => {
    const [a, b] = await makeLocks(2);
    const stale = await a!.tryLock('k', 5_000);
    if (!stale.acquired) throw new Error('expected the lock');
    await redis.raw.del(a!.lockKeyOf('k')); // a's lock expires…
    const fresh = await b!.tryLock('k', 5_000); // …and b takes the key
    expect(fresh.acquired).toBe(true);
    await stale.release();
    expect(await redis.raw.exists(a!.lockKeyOf('k'))).toBe(1);
    expect((await a!.tryLock('k', 5_000)).acquired).toBe(false);
  });

  it('a lock expires on its own after ttlMs (short real TTL)', async () => {
    const [a, b] = await makeLocks(2);
    expect((await a!.tryLock('k', 100)).acquired).toBe(true);
    // Bounded poll: the key must be gone shortly after 100 ms.
    const started = performance.now();
    let acquired = false;
    while (!acquired && performance.now() - started < 1_000) {
      acquired = (await b!.tryLock('k', 5_000)).acquired;
      if (!acquired) await new Promise((r) => setTimeout(r, 20));
    }
    expect(acquired).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(80);
  });

  it('says redisDown at once when Redis is unreachable', async () => {
    const [a] = await makeLocks(1, 'redis://127.0.0.1:1');
    const started = performance.now();
    expect(await a!.tryLock('k', 5_000)).toEqual({ acquired: false, redisDown: true });
    expect(performance.now() - started).toBeLessThan(SLACK_MS);
  });

  it('says redisDown within the command timeout when Redis is paused', async () => {
    const [a] = await makeLocks(1);
    redis.server.pause();
    try {
      const started = performance.now();
      expect(await a!.tryLock('k', 5_000)).toEqual({ acquired: false, redisDown: true });
      expect(performance.now() - started).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
    } finally {
      redis.server.resume();
    }
  });

  it('makes a distinct 128-bit token per acquisition', () => {
    const tokens = new Set(Array.from({ length: 100 }, makeLockToken));
    expect(tokens.size).toBe(100);
    expect([...tokens].every((t) => /^[0-9a-f]{32}$/.test(t))).toBe(true);
  });
});
