import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../src/clock.js';
import type { StoreEvent } from '../../../../src/cache/stores/cache-store.js';
import {
  createRedisClient,
  escapeGlob,
  RedisGuard,
  RedisStore,
  type RedisClient,
} from '../../../../src/cache/stores/redis-store.js';
import { makeEntry } from '../../../contract/cache-store.contract.js';
import { useRedisServer, waitUntilReady } from '../../../helpers/redis-server.js';

const T0 = 1_700_000_000_000;
const COMMAND_TIMEOUT_MS = 75;
/** Scheduling slack on a loaded 2-core machine. */
const SLACK_MS = 150;
const BREAKER_FAILURES = 3;
const BREAKER_OPEN_MS = 2_000;

const redis = useRedisServer({ inspect: true });
let n = 0;

async function makeStore(options: { url?: string; maxEntryBytes?: number; waitReady?: boolean; afterRead?: (key: string) => Promise<void> } = {}) {
  const clock = new ManualClock(T0);
  const client = createRedisClient({
    url: options.url ?? redis.url,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    connectTimeoutMs: 500,
  });
  redis.cleanup(() => client.disconnect());
  if (options.waitReady !== false) await waitUntilReady(client);
  // `afterRead`: what another instance does between a read of ours and what follows it.
  const afterRead = options.afterRead;
  const seen: RedisClient =
    afterRead === undefined
      ? client
      : new Proxy(client, {
          get(target, name) {
            if (name === 'getBuffer')
              return async (key: string) => {
                const value = await target.getBuffer(key);
                await afterRead(key);
                return value;
              };
            const value = Reflect.get(target, name) as unknown;
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
  const guard = new RedisGuard(seen, { breakerFailures: BREAKER_FAILURES, breakerOpenMs: BREAKER_OPEN_MS, clock });
  const events: StoreEvent['kind'][] = [];
  const keyPrefix = `unit${++n}:`;
  const store = new RedisStore({
    guard,
    keyPrefix,
    maxEntryBytes: options.maxEntryBytes ?? 64 * 1024,
    maxVariants: 4,
    clock,
    onEvent: (e) => {
      expect(e.tier).toBe('redis');
      events.push(e.kind);
    },
  });
  return { store, guard, client, clock, events, keyPrefix };
}

/** Run fn, return its result and how long it took in ms. */
async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - started };
}

describe('createRedisClient', () => {
  const cases: { name: string; cfg: Parameters<typeof createRedisClient>[0]; isCluster: boolean }[] = [
    { name: 'standalone url', cfg: { url: 'redis://127.0.0.1:1', commandTimeoutMs: 75, connectTimeoutMs: 300 }, isCluster: false },
    {
      name: 'sentinel',
      cfg: { sentinels: [{ host: '127.0.0.1', port: 1 }], sentinelName: 'mymaster', commandTimeoutMs: 75, connectTimeoutMs: 300 },
      isCluster: false,
    },
    { name: 'cluster', cfg: { cluster: ['redis://127.0.0.1:1'], commandTimeoutMs: 75, connectTimeoutMs: 300 }, isCluster: true },
  ];

  it.each(cases)('$name: fail-fast options (no offline queue, no retries, command and connect timeouts)', ({ cfg, isCluster }) => {
    const client = createRedisClient(cfg);
    try {
      expect(client instanceof Cluster).toBe(isCluster);
      const node = client instanceof Cluster ? client.options.redisOptions! : client.options;
      expect(client.options.enableOfflineQueue).toBe(false);
      expect(node.maxRetriesPerRequest).toBe(0);
      expect(node.commandTimeout).toBe(75);
      expect(node.connectTimeout).toBe(300);
      expect(client.listenerCount('error')).toBeGreaterThan(0);
    } finally {
      client.disconnect();
    }
  });

  it('refuses a config with nothing to connect to', () => {
    expect(() => createRedisClient({ commandTimeoutMs: 75, connectTimeoutMs: 300 })).toThrow(/url, sentinels or cluster/);
  });

  it('gives a Sentinel client the database its url names (`/N` or `?db=N`), as a standalone url has it (review: every Sentinel deployment shared database 0)', () => {
    for (const [url, db] of [
      ['redis://:secret@ignored/2', 2],
      ['redis://ignored?db=3', 3],
      ['redis://ignored', 0],
    ] as const) {
      const client = createRedisClient({ url, sentinels: [{ host: '127.0.0.1', port: 1 }], sentinelName: 'mymaster', commandTimeoutMs: 75, connectTimeoutMs: 300 }) as Redis;
      try {
        expect(client.options.db ?? 0, url).toBe(db);
      } finally {
        client.disconnect();
      }
    }
    const standalone = createRedisClient({ url: 'redis://127.0.0.1:1/4', commandTimeoutMs: 75, connectTimeoutMs: 300 }) as Redis;
    expect(standalone.options.db).toBe(4);
    standalone.disconnect();
  });
});

describe('escapeGlob', () => {
  it.each([
    ['plain', 'plain'],
    ['a*b', 'a\\*b'],
    ['a?[b]', 'a\\?\\[b\\]'],
    ['back\\slash', 'back\\\\slash'],
  ])('%s -> %s', (input, expected) => {
    expect(escapeGlob(input)).toBe(expected);
  });
});

describe('RedisStore layout', () => {
  it('writes the record under keyPrefix with PX = latest deleteAt − now', async () => {
    const { store, keyPrefix } = await makeStore();
    await store.put(makeEntry({ key: 'k', variantKey: 'a', vary: ['x'], deleteAt: T0 + 10_000 }));
    await store.put(makeEntry({ key: 'k', variantKey: 'b', vary: ['x'], deleteAt: T0 + 30_000 }));
    const pttl = await redis.raw.pttl(`${keyPrefix}e:k`);
    expect(pttl).toBeGreaterThan(30_000 - 1_000);
    expect(pttl).toBeLessThanOrEqual(30_000);
  });

  it('pushes a tag SET expiry out to its longest member, never shortens it', async () => {
    const { store, keyPrefix } = await makeStore();
    await store.put(makeEntry({ key: 'k1', tags: ['t'], deleteAt: T0 + 10_000 }));
    await store.put(makeEntry({ key: 'k2', tags: ['t'], deleteAt: T0 + 100_000 }));
    await store.put(makeEntry({ key: 'k3', tags: ['t'], deleteAt: T0 + 5_000 }));
    const pttl = await redis.raw.pttl(`${keyPrefix}t:t`);
    expect(pttl).toBeGreaterThan(100_000 - 1_000);
    expect((await redis.raw.smembers(`${keyPrefix}t:t`)).sort()).toEqual(['k1', 'k2', 'k3']);
  });

  it('drops tag members whose record is gone when that tag is purged', async () => {
    const { store, keyPrefix } = await makeStore();
    await store.put(makeEntry({ key: 'gone', tags: ['t'] }));
    await store.put(makeEntry({ key: 'kept', tags: ['t'] }));
    await store.delete('gone');
    expect(await store.purge({ kind: 'tag', tag: 't' }, 'soft', T0)).toBe(1);
    expect(await redis.raw.smembers(`${keyPrefix}t:t`)).toEqual(['kept']);
  });

  it("never writes back variants another instance purged between its read and its write (attacker trial)", async () => {
    let purgeNext = false;
    const { store, keyPrefix } = await makeStore({
      afterRead: async (key) => {
        if (!purgeNext) return;
        purgeNext = false;
        await redis.raw.del(key); // the other instance's hard PURGE of the page
      },
    });
    await store.put(makeEntry({ key: 'page', variantKey: 'old-json', vary: ['accept'], body: Buffer.from('version 1') }));
    purgeNext = true;
    await store.put(makeEntry({ key: 'page', variantKey: 'new-json', vary: ['accept'], body: Buffer.from('version 2') }));
    const record = await store.get('page');
    expect(record?.map((e) => e.variantKey)).toEqual(['new-json']);
    expect(await redis.raw.exists(`${keyPrefix}e:page`)).toBe(1);
  });

  it('leaves a record that changes under every attempt to the next fill (not written, skip)', async () => {
    let n = 0;
    const { store, events, keyPrefix } = await makeStore({
      afterRead: async (key) => {
        await redis.raw.set(key, `changed ${++n}`);
      },
    });
    await store.put(makeEntry({ key: 'busy' }));
    expect(n).toBe(3);
    expect(await redis.raw.get(`${keyPrefix}e:busy`)).toBe('changed 3'); // theirs, not overwritten
    expect(events).toEqual(['skip']);
  });

  it('does not write a record larger than maxEntryBytes', async () => {
    const { store, events, keyPrefix } = await makeStore({ maxEntryBytes: 4_096 });
    await store.put(makeEntry({ key: 'big', body: Buffer.alloc(5_000) }));
    await store.put(makeEntry({ key: 'almost', body: Buffer.alloc(4_000) })); // body fits, encoded record does not
    expect(await redis.raw.exists(`${keyPrefix}e:big`, `${keyPrefix}e:almost`)).toBe(0);
    expect(events).toEqual(['skip', 'skip']);
  });

  it('stores and reads back an entry with its encodings, byte for byte', async () => {
    const { store } = await makeStore();
    const encodings = { br: Buffer.from([0x0b, 0x80, 0x01]), gzip: Buffer.from([0x1f, 0x8b, 0x08]) };
    await store.put(makeEntry({ key: 'enc', body: Buffer.from('identity body'), encodings }));
    const [got] = (await store.get('enc'))!;
    expect(got!.body.toString()).toBe('identity body');
    expect(got!.encodings!.br!.equals(encodings.br)).toBe(true);
    expect(got!.encodings!.gzip!.equals(encodings.gzip)).toBe(true);
  });

  it('drops the encodings, never the identity body, when only they make the record too large', async () => {
    const { store, events } = await makeStore({ maxEntryBytes: 4_096 });
    await store.put(makeEntry({ key: 'k', body: Buffer.alloc(2_000, 1), encodings: { br: Buffer.alloc(1_500, 2), gzip: Buffer.alloc(1_600, 3) } }));
    const [got] = (await store.get('k'))!;
    expect(got!.body.length).toBe(2_000);
    expect(got!.encodings).toBeUndefined();
    expect(events).toEqual(['set', 'hit']);
  });

  it('treats bytes it cannot decode as a miss', async () => {
    const { store, events, keyPrefix } = await makeStore();
    await redis.raw.set(`${keyPrefix}e:k`, 'not an entry');
    expect(await store.get('k')).toBeUndefined();
    expect(events).toEqual(['miss']);
  });

  it('purges only under its own keyPrefix', async () => {
    const a = await makeStore();
    const b = await makeStore();
    await a.store.put(makeEntry({ key: 'k' }));
    await b.store.put(makeEntry({ key: 'k' }));
    expect(await a.store.purge({ kind: 'all' }, 'hard', T0)).toBe(1);
    expect(await b.store.get('k')).toHaveLength(1);
  });
});

describe('RedisStore fails open', () => {
  it('with Redis paused (SIGSTOP): the first call resolves within the command timeout and opens the breaker, later ones skip Redis, and a probe resumes it', async () => {
    const { store, guard, clock, events } = await makeStore();
    const entry = makeEntry({ key: 'k' });
    await store.put(entry);
    redis.server.pause();
    try {
      // A timeout opens the breaker at once: no request waits for Redis more than once.
      const { value, ms } = await timed(() => store.get('k'));
      expect(value).toBeUndefined();
      expect(ms).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
      expect(ms).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 5); // it did wait for the timeout
      expect(guard.state).toBe('open');
      // Breaker open: no command is sent, every method answers at once.
      const skipped = await timed(() =>
        Promise.all([store.get('k'), store.put(entry), store.delete('k'), store.purge({ kind: 'all' }, 'soft', T0)]),
      );
      expect(skipped.value).toEqual([undefined, undefined, false, 0]);
      // No command waits for the paused server: all four together answer well inside one
      // command timeout (a busy box took 24 ms, so the bound is not tighter than that).
      expect(skipped.ms).toBeLessThan(COMMAND_TIMEOUT_MS - 5);
      expect(events.filter((k) => k === 'error')).toHaveLength(1);
      // Still paused when the breaker half-opens: the one probe fails and it opens again.
      clock.advance(BREAKER_OPEN_MS);
      expect(guard.state).toBe('half-open');
      const probe = await timed(() => store.get('k'));
      expect(probe.ms).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
      expect(guard.state).toBe('open');
    } finally {
      redis.server.resume();
    }
    clock.advance(BREAKER_OPEN_MS);
    expect(await store.get('k')).toEqual([entry]); // the probe succeeds: closed again
    expect(guard.state).toBe('closed');
  });

  it('with Redis killed: calls resolve at once as misses, and the same store works again after a restart', async () => {
    const { store, guard, client } = await makeStore();
    await store.put(makeEntry({ key: 'before' }));
    await redis.server.kill();
    try {
      for (let i = 0; i < BREAKER_FAILURES + 2; i++) {
        const { value, ms } = await timed(() => store.get('before'));
        expect(value).toBeUndefined();
        expect(ms).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
      }
      expect(guard.state).toBe('open');
      const write = await timed(() => store.put(makeEntry({ key: 'during' })));
      expect(write.ms).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
    } finally {
      await redis.server.restart();
    }
    // ioredis reconnects by itself (reconnect delay ≤ 1 s); its 'ready' closes the breaker.
    await waitUntilReady(client, 5_000);
    expect(guard.state).toBe('closed');
    const after = makeEntry({ key: 'after' });
    await store.put(after);
    expect(await store.get('after')).toEqual([after]);
  });

  it('with Redis unreachable from the start: misses, no waiting, breaker opens', async () => {
    const { store, guard } = await makeStore({ url: 'redis://127.0.0.1:1', waitReady: false });
    for (let i = 0; i < BREAKER_FAILURES; i++) {
      const { value, ms } = await timed(() => store.get('k'));
      expect(value).toBeUndefined();
      expect(ms).toBeLessThan(SLACK_MS);
    }
    expect(guard.state).toBe('open');
    await store.put(makeEntry({ key: 'k' }));
    expect(await store.purge({ kind: 'prefix', prefix: 'k' }, 'hard', T0)).toBe(0);
  });
});

describe('RedisGuard', () => {
  it('opens after breakerFailures failures in a row, then lets exactly one probe through', async () => {
    const clock = new ManualClock(T0);
    const client = createRedisClient({ url: redis.url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
    redis.cleanup(() => client.disconnect());
    await waitUntilReady(client);
    const guard = new RedisGuard(client, { breakerFailures: 2, breakerOpenMs: 1_000, clock });
    const failing = (c: RedisClient) => c.call('NO-SUCH-COMMAND'); // a real Redis error reply
    expect((await guard.run(failing)).ok).toBe(false);
    expect(guard.state).toBe('closed');
    expect((await guard.run((c) => c.ping())).ok).toBe(true); // a success resets the count
    await guard.run(failing);
    expect(guard.state).toBe('closed');
    await guard.run(failing);
    expect(guard.state).toBe('open');
    let sent = 0;
    const counted = async (c: RedisClient) => (sent++, c.ping());
    expect(await guard.run(counted)).toEqual({ ok: false, reason: 'breaker-open' });
    clock.advance(999);
    expect(await guard.run(counted)).toEqual({ ok: false, reason: 'breaker-open' });
    clock.advance(1);
    expect(guard.state).toBe('half-open');
    const [probe, other] = await Promise.all([guard.run(counted), guard.run(counted)]);
    expect(probe).toEqual({ ok: true, value: 'PONG' });
    expect(other).toEqual({ ok: false, reason: 'breaker-open' }); // while the probe was in flight
    expect(sent).toBe(1);
    expect(guard.state).toBe('closed');
  });

  it('a timeout that fired late, behind a busy event loop, counts as one failure and does not open the breaker at once (fleet trial: a crowd\'s first second)', async () => {
    const clock = new ManualClock(T0);
    const client = createRedisClient({ url: redis.url, commandTimeoutMs: 50, connectTimeoutMs: 300 });
    redis.cleanup(() => client.disconnect());
    await waitUntilReady(client);
    const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock });
    const pending = guard.run((c) => c.ping());
    // The loop is busy for three command timeouts: the timer and Redis's reply are both due
    // when it is free, and timers run first.
    const until = performance.now() + 150;
    while (performance.now() < until);
    const result = await pending;
    expect(result).toMatchObject({ ok: false, reason: 'error' });
    expect(String((result as { error?: Error }).error?.message)).toMatch(/timed out/i);
    expect(guard.state).toBe('closed');
    expect((await guard.run((c) => c.ping())).ok).toBe(true);
  });

  it('counts an unconnected client as a failure without sending', async () => {
    const clock = new ManualClock(T0);
    const client = createRedisClient({ url: 'redis://127.0.0.1:1', commandTimeoutMs: 75, connectTimeoutMs: 300 });
    redis.cleanup(() => client.disconnect());
    const guard = new RedisGuard(client, { breakerFailures: 1, breakerOpenMs: 1_000, clock });
    let sent = 0;
    expect(await guard.run(async (c) => (sent++, c.ping()))).toEqual({ ok: false, reason: 'not-ready' });
    expect(guard.state).toBe('open');
    expect(sent).toBe(0);
  });

  it.each([
    ['breakerFailures', { breakerFailures: 0, breakerOpenMs: 1 }],
    ['breakerOpenMs', { breakerFailures: 1, breakerOpenMs: 0 }],
  ])('rejects a bad %s at construction', (name, options) => {
    const client = createRedisClient({ url: 'redis://127.0.0.1:1', commandTimeoutMs: 75, connectTimeoutMs: 300 });
    redis.cleanup(() => client.disconnect());
    expect(() => new RedisGuard(client, options)).toThrow(name);
  });
});
