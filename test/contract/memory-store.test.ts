import { MemoryStore } from '../../src/cache/stores/memory-store.js';
import { describeCacheStoreContract } from './cache-store.contract.js';

describeCacheStoreContract('memory', async ({ clock, maxVariants }) => ({
  store: new MemoryStore({ maxBytes: 16 * 1024 * 1024, maxObjectBytes: 1024 * 1024, maxVariants, clock }),
}));
