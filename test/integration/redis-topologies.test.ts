/**
 * The Redis tier through Sentinel and Cluster, against real servers: createRedisClient from a
 * parsed `redis` config section, wrapped in RedisGuard + RedisStore exactly as the gateway does.
 *
 * Sentinel: one master and one sentinel (quorum 1); the client finds the master through the
 * sentinel, and records land on that master; after SENTINEL FAILOVER it should follow the promoted
 * replica (known bug, see that test). Cluster: three masters (no replicas); records of
 * many keys land on every master, and purges by prefix, `all` (SCAN on every master) and tag
 * reach all of them. Cluster failover and resharding are not covered here.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { StoreEvent } from '../../src/cache/stores/cache-store.js';
import { createRedisClient, RedisGuard, RedisStore, type RedisClient } from '../../src/cache/stores/redis-store.js';
import { redisSchema, type RedisConfig } from '../../src/config/schema.js';
import { makeEntry } from '../contract/cache-store.contract.js';
import { startRedisServer, waitUntilReady, type RedisServer } from '../helpers/redis-server.js';
import { startRedisCluster, startSentinel, type RedisClusterProcesses, type SentinelProcess } from '../helpers/redis-topology.js';

const T0 = 1_700_000_000_000;
/**
 * Generous: this file checks routing, not the fail-open timing (redis-store.test.ts does); on a
 * loaded 2-core machine a 75 ms timeout could turn a real answer into a silent miss.
 */
const COMMAND_TIMEOUT_MS = 1_000;
const READY_TIMEOUT_MS = 5_000;
/** A failover (SENTINEL FAILOVER, old master alive) must reach the client within this. */
const FOLLOW_FAILOVER_MS = 3_000;

interface Harness {
  store: RedisStore;
  client: RedisClient;
  /** Store events other than hit/miss/set (errors and skips would mean a silent fail-open). */
  faults: StoreEvent['kind'][];
  keyPrefix: string;
}

let suffix = 0;

async function makeHarness(section: Record<string, unknown>): Promise<Harness> {
  const keyPrefix = `topo${++suffix}:`;
  const cfg: RedisConfig = redisSchema.parse({
    ...section,
    keyPrefix,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    connectTimeoutMs: 1_000,
  });
  const clock = new ManualClock(T0);
  const errors: Error[] = [];
  const client = createRedisClient(cfg, { connectionName: 'crowdgate-topology-test', onError: (e) => errors.push(e) });
  try {
    await waitUntilReady(client, READY_TIMEOUT_MS);
  } catch (err) {
    client.disconnect();
    throw new Error(`${(err as Error).message}; connection errors: ${errors.map((e) => e.message).join(' | ') || 'none'}`);
  }
  const guard = new RedisGuard(client, { breakerFailures: cfg.breakerFailures, breakerOpenMs: cfg.breakerOpenMs, clock });
  const faults: StoreEvent['kind'][] = [];
  const store = new RedisStore({
    guard,
    keyPrefix: cfg.keyPrefix,
    maxEntryBytes: cfg.maxEntryBytes,
    maxVariants: 4,
    clock,
    ownsClient: true,
    onEvent: (e) => {
      if (e.kind !== 'hit' && e.kind !== 'miss' && e.kind !== 'set') faults.push(e.kind);
    },
  });
  return { store, client, faults, keyPrefix };
}

/** SCAN one node for keys matching pattern (an inspection client, not the store). */
async function keysOn(node: Redis, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}

/** Poll fn every 50 ms until it returns true; throw `what` after timeoutMs. */
async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

describe('Redis tier through Sentinel', () => {
  let master: RedisServer | undefined;
  let replica: RedisServer | undefined;
  let sentinel: SentinelProcess | undefined;
  let inspect: Redis | undefined;
  let inspectReplica: Redis | undefined;
  let inspectSentinel: Redis | undefined;
  let h: Harness | undefined;

  beforeAll(async () => {
    [master, replica] = await Promise.all([startRedisServer(), startRedisServer()]);
    inspect = new Redis(master.url);
    inspectReplica = new Redis(replica.url);
    for (const c of [inspect, inspectReplica]) c.on('error', () => {});
    // Redis 7 waits repl-diskless-sync-delay (5 s) for more replicas before a full sync: not here.
    await inspect.config('SET', 'repl-diskless-sync-delay', '0');
    // The replica is attached before the sentinel starts, so its first INFO of the master lists it.
    await inspectReplica.replicaof('127.0.0.1', master.port);
    await waitFor('replica link up', async () => /master_link_status:up/.test(await inspectReplica!.info('replication')), 5_000);
    sentinel = await startSentinel(master.port, 'mymaster');
    inspectSentinel = new Redis({ host: '127.0.0.1', port: sentinel.port });
    inspectSentinel.on('error', () => {});
    // No url in the section: the master's address can only come from the sentinel.
    h = await makeHarness({ sentinels: [{ host: '127.0.0.1', port: sentinel.port }], sentinelName: 'mymaster' });
  });
  afterAll(async () => {
    await h?.store.close();
    for (const c of [inspect, inspectReplica, inspectSentinel]) c?.disconnect();
    await sentinel?.stop();
    await Promise.all([master?.stop(), replica?.stop()]);
  });

  it('connects to the master the sentinel names', async () => {
    const { client } = h!;
    expect(client.status).toBe('ready');
    const masterRunId = /run_id:(\w+)/.exec(await inspect!.info('server'))?.[1];
    const clientRunId = /run_id:(\w+)/.exec(await (client as Redis).info('server'))?.[1];
    expect(clientRunId).toBeDefined();
    expect(clientRunId).toBe(masterRunId);
  });

  it('round-trips an entry, which lands on the master under keyPrefix', async () => {
    const { store, faults, keyPrefix } = h!;
    const entry = makeEntry({ key: 's\u0000/sentinel?', tags: ['t'] });
    await store.put(entry);
    expect(await store.get(entry.key)).toEqual([entry]);
    expect(await inspect!.exists(`${keyPrefix}e:${entry.key}`)).toBe(1);
    expect(await inspect!.smembers(`${keyPrefix}t:t`)).toEqual([entry.key]);
    expect(faults).toEqual([]);
  });

  it.each([
    { name: 'prefix, hard', selector: { kind: 'prefix', prefix: 's\u0000/p/' } as const, mode: 'hard' as const },
    { name: 'tag, hard', selector: { kind: 'tag', tag: 'pt' } as const, mode: 'hard' as const },
    { name: 'prefix, soft', selector: { kind: 'prefix', prefix: 's\u0000/p/' } as const, mode: 'soft' as const },
  ])('purges by $name: only the selected entries, counted', async ({ selector, mode }) => {
    const { store, faults } = h!;
    const selected = [0, 1, 2].map((i) => makeEntry({ key: `s\u0000/p/${i}?`, tags: ['pt'] }));
    const other = makeEntry({ key: 's\u0000/q/0?', tags: ['qt'] });
    for (const e of [...selected, other]) await store.put(e);
    expect(await store.purge(selector, mode, T0 + 1)).toBe(selected.length);
    for (const e of selected) {
      const after = await store.get(e.key);
      if (mode === 'hard') expect(after).toBeUndefined();
      else expect(after?.[0]?.invalidatedAt).toBe(T0 + 1);
    }
    expect(await store.get(other.key)).toEqual([other]);
    expect(faults).toEqual([]);
  });

  it("purges 'all' hard: every record and tag SET under keyPrefix, nothing else", async () => {
    const { store, faults, keyPrefix } = h!;
    await inspect!.set('unrelated', 'x');
    await store.put(makeEntry({ key: 's\u0000/all/1?', tags: ['a'] }));
    const records = (await keysOn(inspect!, `${keyPrefix}e:*`)).length;
    expect(records).toBeGreaterThan(0);
    expect(await store.purge({ kind: 'all' }, 'hard', T0)).toBe(records);
    expect(await keysOn(inspect!, `${keyPrefix}*`)).toEqual([]);
    expect(await inspect!.get('unrelated')).toBe('x');
    expect(faults).toEqual([]);
  });

  /**
   * A failover with the old master still running: the client must follow Sentinel's
   * +switch-master at once (ioredis `failoverDetector`), not when Sentinel later demotes the old
   * master, or writes and purges in between would be lost.
   */
  it('after a sentinel failover, the same store follows the promoted replica within 3 s and keeps the data', async () => {
    const { store, client, keyPrefix } = h!;
    const before = makeEntry({ key: 's\u0000/failover/before?' });
    await store.put(before);
    await waitFor('replica has the record', async () => (await inspectReplica!.exists(`${keyPrefix}e:${before.key}`)) === 1, 5_000);
    // The sentinel must know the replica (from the master's INFO) before it can promote it.
    await waitFor(
      'sentinel lists the replica',
      async () => {
        const replicas = (await inspectSentinel!.call('SENTINEL', 'REPLICAS', 'mymaster')) as string[][];
        return replicas.some((r) => r.includes(String(replica!.port)) && r[r.indexOf('flags') + 1] === 'slave');
      },
      5_000,
    );
    expect(await inspectSentinel!.call('SENTINEL', 'FAILOVER', 'mymaster')).toBe('OK');
    // The sentinel turns the old master into a replica and kills its clients; ioredis asks the
    // sentinel again and connects to the new master.
    let seen = '';
    try {
      await waitFor(
        'client on the promoted replica',
        async () => {
          const role = await (client as Redis).role().catch((e: Error) => e.message);
          const port = await (client as Redis).config('GET', 'port').catch((e: Error) => e.message);
          const named = await inspectSentinel!.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster').catch((e: Error) => e.message);
          seen = JSON.stringify({ status: client.status, role, port, named, replicaPort: replica!.port });
          return client.status === 'ready' && Array.isArray(role) && role[0] === 'master' && (port as string[])[1] === String(replica!.port);
        },
        FOLLOW_FAILOVER_MS,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; last seen ${seen}`);
    }
    expect(await store.get(before.key)).toEqual([before]);
    const after = makeEntry({ key: 's\u0000/failover/after?' });
    await store.put(after);
    expect(await store.get(after.key)).toEqual([after]);
    expect(await inspectReplica!.exists(`${keyPrefix}e:${after.key}`)).toBe(1);
  });
});

describe('Redis tier through Cluster (three masters)', () => {
  let cluster: RedisClusterProcesses | undefined;
  let nodes: Redis[] = [];
  let h: Harness | undefined;
  /** Enough keys that, with 16384 slots split three ways, every master holds some (checked). */
  const KEY_COUNT = 60;

  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    nodes = cluster.urls.map((url) => {
      const node = new Redis(url);
      node.on('error', () => {});
      return node;
    });
    // One seed only: the client must discover the other masters itself.
    h = await makeHarness({ cluster: [cluster.urls[0]] });
  });
  afterAll(async () => {
    await h?.store.close();
    for (const node of nodes) node.disconnect();
    await cluster?.stop();
  });

  /** Records under keyPrefix held by each master, in port order. */
  async function recordsPerNode(): Promise<number[]> {
    return await Promise.all(nodes.map(async (n) => (await keysOn(n, `${h!.keyPrefix}e:*`)).length));
  }

  it('round-trips entries whose records land on every master', async () => {
    const { store, faults } = h!;
    const entries = Array.from({ length: KEY_COUNT }, (_, i) =>
      makeEntry({ key: `s\u0000/${i % 2 === 0 ? 'even' : 'odd'}/${i}?`, tags: [i % 3 === 0 ? 'third' : 'rest'] }),
    );
    await Promise.all(entries.map((e) => store.put(e)));
    for (const e of entries) expect(await store.get(e.key)).toEqual([e]);
    const perNode = await recordsPerNode();
    expect(perNode.reduce((a, b) => a + b, 0)).toBe(KEY_COUNT);
    for (const count of perNode) expect(count).toBeGreaterThan(0);
    expect(faults).toEqual([]);
  });

  it('purges by tag across slots (the tag SET lives on one master, its members on all)', async () => {
    const { store, faults } = h!;
    const tagged = Array.from({ length: KEY_COUNT }, (_, i) => i).filter((i) => i % 3 === 0);
    expect(await store.purge({ kind: 'tag', tag: 'third' }, 'soft', T0 + 5)).toBe(tagged.length);
    for (const i of tagged) {
      const key = `s\u0000/${i % 2 === 0 ? 'even' : 'odd'}/${i}?`;
      expect((await store.get(key))?.[0]?.invalidatedAt).toBe(T0 + 5);
    }
    expect(await store.purge({ kind: 'tag', tag: 'third' }, 'hard', T0 + 6)).toBe(tagged.length);
    for (const i of tagged) expect(await store.get(`s\u0000/${i % 2 === 0 ? 'even' : 'odd'}/${i}?`)).toBeUndefined();
    expect((await recordsPerNode()).reduce((a, b) => a + b, 0)).toBe(KEY_COUNT - tagged.length);
    expect(faults).toEqual([]);
  });

  it('purges by prefix on every master (SCAN per master), leaving the rest', async () => {
    const { store, faults } = h!;
    const remaining = Array.from({ length: KEY_COUNT }, (_, i) => i).filter((i) => i % 3 !== 0);
    const even = remaining.filter((i) => i % 2 === 0);
    const odd = remaining.filter((i) => i % 2 === 1);
    expect(await store.purge({ kind: 'prefix', prefix: 's\u0000/even/' }, 'hard', T0)).toBe(even.length);
    for (const i of even) expect(await store.get(`s\u0000/even/${i}?`)).toBeUndefined();
    for (const i of odd) expect(await store.get(`s\u0000/odd/${i}?`)).toHaveLength(1);
    expect((await recordsPerNode()).reduce((a, b) => a + b, 0)).toBe(odd.length);
    expect(faults).toEqual([]);
  });

  it("purges 'all' hard: counts the records of every master and leaves no key under keyPrefix", async () => {
    const { store, faults, keyPrefix } = h!;
    // Refill so that every master holds records again, then purge them all.
    const entries = Array.from({ length: KEY_COUNT }, (_, i) => makeEntry({ key: `s\u0000/all/${i}?`, tags: ['all'] }));
    await Promise.all(entries.map((e) => store.put(e)));
    const perNode = await recordsPerNode();
    for (const count of perNode) expect(count).toBeGreaterThan(0);
    const total = perNode.reduce((a, b) => a + b, 0);
    expect(await store.purge({ kind: 'all' }, 'hard', T0)).toBe(total);
    const left = await Promise.all(nodes.map((n) => keysOn(n, `${keyPrefix}*`)));
    expect(left.flat()).toEqual([]);
    expect(faults).toEqual([]);
  });

  it('refreshStats counts the records of every master', async () => {
    const { store } = h!;
    const entries = Array.from({ length: 30 }, (_, i) => makeEntry({ key: `s\u0000/stats/${i}?` }));
    await Promise.all(entries.map((e) => store.put(e)));
    await store.refreshStats();
    expect(store.stats().entries).toBe(entries.length);
  });
});
