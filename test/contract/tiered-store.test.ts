import { MemoryStore } from '../../src/cache/stores/memory-store.js';
import { createRedisClient, RedisGuard, RedisStore } from '../../src/cache/stores/redis-store.js';
import { TieredStore } from '../../src/cache/stores/tiered-store.js';
import { useRedisServer, waitUntilReady } from '../helpers/redis-server.js';
import { describeCacheStoreContract } from './cache-store.contract.js';

const redis = useRedisServer();
let n = 0;

describeCacheStoreContract('tiered (memory + redis)', async ({ clock, maxVariants }) => {
  const client = createRedisClient({ url: redis.url, commandTimeoutMs: 1_000, connectTimeoutMs: 1_000 });
  await waitUntilReady(client);
  const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock });
  const l1 = new MemoryStore({ maxBytes: 16 * 1024 * 1024, maxObjectBytes: 1024 * 1024, maxVariants, clock });
  const l2 = new RedisStore({ guard, keyPrefix: `tiered${++n}:`, maxEntryBytes: 1024 * 1024, maxVariants, clock });
  return { store: new TieredStore({ l1, l2 }), dispose: async () => client.disconnect() };
});
