import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../src/clock.js';
import type { StoreEvent } from '../../../../src/cache/stores/cache-store.js';
import { MemoryStore } from '../../../../src/cache/stores/memory-store.js';
import { createRedisClient, RedisGuard, RedisStore } from '../../../../src/cache/stores/redis-store.js';
import { TieredStore } from '../../../../src/cache/stores/tiered-store.js';
import { makeEntry } from '../../../contract/cache-store.contract.js';
import { useRedisServer, waitUntilReady } from '../../../helpers/redis-server.js';

const T0 = 1_700_000_000_000;
const redis = useRedisServer();
let n = 0;

/** Two instances sharing one Redis prefix: each has its own L1. */
async function makeInstances(url = redis.url) {
  const clock = new ManualClock(T0);
  const keyPrefix = `tier${++n}:`;
  const make = async () => {
    const client = createRedisClient({ url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
    redis.cleanup(() => client.disconnect());
    if (url === redis.url) await waitUntilReady(client);
    const events: string[] = [];
    const onEvent = (e: StoreEvent) => events.push(`${e.tier}:${e.kind}`);
    const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock });
    const l1 = new MemoryStore({ maxBytes: 4 * 1024 * 1024, maxObjectBytes: 1024 * 1024, maxVariants: 4, clock, onEvent });
    const l2 = new RedisStore({ guard, keyPrefix, maxEntryBytes: 2_048, maxVariants: 4, clock, onEvent });
    return { store: new TieredStore({ l1, l2, clock }), events };
  };
  return { a: await make(), b: await make(), clock };
}

describe('TieredStore', () => {
  it('uses no copy Redis holds from before it last loaded copies from disk, and every copy stored since (noteL2Loaded)', async () => {
    const { a, b, clock } = await makeInstances();
    const old = makeEntry({ key: 'old', responseTime: clock.now() - 5_000, requestTime: clock.now() - 5_010 });
    await a.store.put(old);
    b.store.noteL2Loaded(clock.now() - 1_000);
    expect(await b.store.get('old')).toBeUndefined();
    const since = makeEntry({ key: 'since', responseTime: clock.now(), requestTime: clock.now() - 10 });
    await a.store.put(since);
    expect(await b.store.get('since')).toEqual([since]);
    // A record holding both: the variant stored since is kept alone.
    const mixed = [makeEntry({ key: 'mixed', variantKey: 'a', responseTime: clock.now() - 5_000 }), makeEntry({ key: 'mixed', variantKey: 'b', responseTime: clock.now() })];
    expect(b.store.screen(mixed)?.map((e) => e.variantKey)).toEqual(['b']);
  });

  it('serves an L2 hit from another instance, then from its own L1 (events tagged by tier)', async () => {
    const { a, b } = await makeInstances();
    const entry = makeEntry({ key: 'k' });
    await a.store.put(entry);
    expect(await b.store.get('k')).toEqual([entry]);
    expect(await b.store.get('k')).toEqual([entry]);
    expect(b.events).toEqual(['memory:miss', 'redis:hit', 'memory:set', 'memory:hit']);
  });

  it('reads Redis when its own copy has nothing fresh: another instance\'s newer copy replaces it', async () => {
    const { a, b, clock } = await makeInstances();
    const v1 = makeEntry({ key: 'k', body: Buffer.from('v1') });
    await a.store.put(v1);
    expect(await b.store.get('k')).toEqual([v1]); // b's L1 holds v1 now
    clock.advance(61_000); // v1 is stale everywhere (freshness 60 s)
    // Nothing newer in Redis yet: b keeps answering with its own (stale) copy, for a revalidation.
    expect((await b.store.get('k'))?.[0]?.body.toString()).toBe('v1');
    // Instance a refreshes the page; b's stale L1 copy must not hide it.
    const v2 = makeEntry({ key: 'k', body: Buffer.from('v2'), requestTime: clock.now() - 10, responseTime: clock.now(), deleteAt: clock.now() + 120_000 });
    await a.store.put(v2);
    b.events.length = 0;
    expect((await b.store.get('k'))?.[0]?.body.toString()).toBe('v2');
    expect(b.events).toEqual(['memory:hit', 'redis:hit', 'memory:set']);
    // Now fresh in L1: Redis is not asked again.
    b.events.length = 0;
    expect((await b.store.get('k'))?.[0]?.body.toString()).toBe('v2');
    expect(b.events).toEqual(['memory:hit']);
  });

  it('keeps an entry too large for Redis in L1 only', async () => {
    const { a, b } = await makeInstances();
    const big = makeEntry({ key: 'big', body: Buffer.alloc(4_000) });
    await a.store.put(big);
    expect(await a.store.get('big')).toEqual([big]);
    expect(await b.store.get('big')).toBeUndefined();
  });

  it('purge hits both tiers; purgeLocal only this L1', async () => {
    const { a, b, clock } = await makeInstances();
    const entry = makeEntry({ key: 'k', tags: ['t'] });
    await a.store.put(entry);
    await b.store.get('k'); // b's L1 now holds it too
    expect(await a.store.purge({ kind: 'tag', tag: 't' }, 'hard', clock.now())).toBe(1);
    expect(await a.store.get('k')).toBeUndefined();
    expect(await b.store.get('k')).toEqual([entry]); // b's L1 copy: only a broadcast reaches it
    expect(await b.store.purgeLocal({ kind: 'tag', tag: 't' }, 'hard', clock.now())).toBe(1);
    expect(await b.store.get('k')).toBeUndefined();
  });

  it('keeps working from L1 with Redis unreachable', async () => {
    const { a } = await makeInstances('redis://127.0.0.1:1');
    const entry = makeEntry({ key: 'k' });
    await a.store.put(entry);
    expect(await a.store.get('k')).toEqual([entry]);
    expect(await a.store.delete('k')).toBe(true);
  });

  it('version is the L1 version: a fill from L2 and a broadcast purge both change it; a held hit counts as an L1 hit', async () => {
    const { a, b, clock } = await makeInstances();
    await a.store.put(makeEntry({ key: 'k', tags: ['t'] }));
    let v = b.store.version;
    await b.store.get('k'); // L1 filled from L2
    expect(b.store.version).not.toBe(v);
    v = b.store.version;
    b.store.peekHit('k');
    expect(b.store.version).toBe(v);
    await b.store.purgeLocal({ kind: 'tag', tag: 't' }, 'soft', clock.now()); // what a purge broadcast runs
    expect(b.store.version).not.toBe(v);
    b.events.length = 0;
    b.store.noteHeldHit();
    expect(b.events).toEqual(['memory:hit']);
  });
});

describe('TieredStore: a purge screens what L2 returns until it has settled', () => {
  it('never puts back from L2 a copy stored before a recent purge, keeps one stored since, and keeps the record\'s order', async () => {
    const { a, clock } = await makeInstances();
    const old = makeEntry({ key: 'p', variantKey: 'gz', responseTime: T0 });
    await a.store.l2.put(old);
    clock.advance(1_000);
    await a.store.purge({ kind: 'key', key: 'p' }, 'hard', clock.now());
    // A read that began before the purge deleted the record writes it back late (the race a
    // multi-instance trial met, 1 purge in 10): here, the old record put back in Redis.
    await a.store.l2.put(old);
    expect(await a.store.get('p')).toBeUndefined();
    expect(await a.store.l1.get('p')).toBeUndefined(); // not copied into memory either
    // A copy stored after the purge (the new page) is not screened, and the order stays oldest first.
    clock.advance(10);
    const fresh = makeEntry({ key: 'p', variantKey: 'br', responseTime: clock.now() });
    await a.store.l2.put(fresh);
    expect((await a.store.get('p'))?.map((e) => e.variantKey)).toEqual(['br']);
    // Settled 5 s ago: no longer screened.
    await a.store.l1.delete('p');
    clock.advance(5_001);
    expect((await a.store.get('p'))?.map((e) => e.variantKey)).toEqual(['gz', 'br']);
  });

  it('a soft purge screens to stale, and a late purge (storedBefore) spares copies stored after it', async () => {
    const { a, clock } = await makeInstances();
    await a.store.l2.put(makeEntry({ key: 'q', responseTime: T0 }));
    clock.advance(1_000);
    await a.store.purge({ kind: 'key', key: 'q' }, 'soft', clock.now());
    await a.store.l2.put(makeEntry({ key: 'q', responseTime: T0 }));
    const got = await a.store.get('q');
    expect(got?.[0]?.invalidatedAt).toBe(T0 + 1_000);
    // A late purge in memory: only what was stored before it.
    const newer = makeEntry({ key: 'r', responseTime: clock.now() + 10 });
    await a.store.l1.put(newer);
    expect(await a.store.purgeLocal({ kind: 'key', key: 'r' }, 'hard', clock.now(), clock.now())).toBe(0);
    expect(await a.store.l1.get('r')).toEqual([newer]);
  });
});
