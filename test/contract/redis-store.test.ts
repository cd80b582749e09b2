import { createRedisClient, RedisGuard, RedisStore } from '../../src/cache/stores/redis-store.js';
import { useRedisServer, waitUntilReady } from '../helpers/redis-server.js';
import { describeCacheStoreContract } from './cache-store.contract.js';

const redis = useRedisServer();
let n = 0;

describeCacheStoreContract('redis', async ({ clock, maxVariants }) => {
  // A fresh prefix per test: tests share the server, never each other's keys.
  const keyPrefix = `contract${++n}:`;
  const client = createRedisClient({ url: redis.url, commandTimeoutMs: 1_000, connectTimeoutMs: 1_000 });
  await waitUntilReady(client);
  const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock });
  return {
    store: new RedisStore({ guard, keyPrefix, maxEntryBytes: 1024 * 1024, maxVariants, clock }),
    dispose: async () => client.disconnect(),
  };
});
