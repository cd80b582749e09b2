import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../src/clock.js';
import { RedisBus, type PurgeNotice } from '../../../../src/cache/stores/redis-bus.js';
import { createRedisClient, RedisGuard } from '../../../../src/cache/stores/redis-store.js';
import { useRedisServer, waitUntilReady } from '../../../helpers/redis-server.js';

const T0 = 1_700_000_000_000;
const redis = useRedisServer();
let n = 0;

async function makeBus(options: { id: string; keyPrefix: string; url?: string }) {
  const url = options.url ?? redis.url;
  const client = createRedisClient({ url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
  const subscriber = createRedisClient({ url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
  const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock: new ManualClock(T0) });
  const bus = new RedisBus({ guard, subscriber, keyPrefix: options.keyPrefix, instanceId: options.id, ownsSubscriber: true });
  redis.cleanup(async () => {
    await bus.close();
    client.disconnect();
  });
  if (url === redis.url) {
    await waitUntilReady(client);
    expect(await bus.whenListening(5_000)).toBe(true);
  }
  return { bus, client, subscriber };
}

async function pair() {
  const keyPrefix = `bus${++n}:`;
  return { a: await makeBus({ id: 'a', keyPrefix }), b: await makeBus({ id: 'b', keyPrefix }), keyPrefix };
}

/** The next notice a bus hands its onPurge listeners. */
function nextNotice(bus: RedisBus): Promise<PurgeNotice> {
  return new Promise((resolve) => {
    const off = bus.onPurge((notice) => {
      off();
      resolve(notice);
    });
  });
}

describe('RedisBus purge broadcast', () => {
  it('keeps the notices of a deployment on another database to itself, though channels ignore databases (fleet trial: staging on /1 purged production on /0)', async () => {
    const keyPrefix = `bus${++n}:`;
    const production = [await makeBus({ id: 'p1', keyPrefix }), await makeBus({ id: 'p2', keyPrefix })];
    const staging = [await makeBus({ id: 's1', keyPrefix, url: `${redis.url}/1` }), await makeBus({ id: 's2', keyPrefix, url: `${redis.url}/1` })];
    for (const s of staging) expect(await s.bus.whenListening(5_000)).toBe(true);
    const heardInProduction: PurgeNotice[] = [];
    production[1]!.bus.onPurge((notice) => heardInProduction.push(notice));
    // Staging's purge reaches staging, not production.
    const atStaging = nextNotice(staging[1]!.bus);
    expect(await staging[0]!.bus.publishPurge({ kind: 'all' }, 'hard', T0 + 1)).toBe(true);
    expect(await atStaging).toMatchObject({ from: 's1', selector: { kind: 'all' } });
    // Production's own purge, sent after, arrives; staging's never did (Redis delivers in order
    // on one connection, and a subscriber to both channels would have had it first).
    const atProduction = nextNotice(production[1]!.bus);
    await production[0]!.bus.publishPurge({ kind: 'key', key: 'k' }, 'hard', T0 + 2);
    expect(await atProduction).toMatchObject({ from: 'p1' });
    expect(heardInProduction.map((x) => x.from)).toEqual(['p1']);
  });

  it('delivers a purge to the other instance and not back to the sender', async () => {
    const { a, b } = await pair();
    const seenByA: PurgeNotice[] = [];
    a.bus.onPurge((notice) => seenByA.push(notice));
    const atB = nextNotice(b.bus);
    expect(await a.bus.publishPurge({ kind: 'tag', tag: 'news' }, 'soft', T0 + 5)).toBe(true);
    expect(await atB).toEqual({ selector: { kind: 'tag', tag: 'news' }, mode: 'soft', at: T0 + 5, from: 'a' });
    // Redis delivers in publish order: by the time A hears B's purge it has heard (and dropped) its own.
    const atA = nextNotice(a.bus);
    await b.bus.publishPurge({ kind: 'all' }, 'hard', T0 + 6);
    expect(await atA).toMatchObject({ from: 'b', selector: { kind: 'all' } });
    expect(seenByA.map((x) => x.from)).toEqual(['b']);
    // A repeated purge (for a fill that stored before the first notice arrived) says so.
    const again = nextNotice(b.bus);
    await a.bus.publishPurge({ kind: 'key', key: 'k' }, 'hard', T0 + 7, true);
    expect(await again).toEqual({ selector: { kind: 'key', key: 'k' }, mode: 'hard', at: T0 + 7, from: 'a', again: true });
  });

  it('an instance whose subscription dropped applies the purges made meanwhile once it is back, from the purge log', async () => {
    // Multi-instance trial: a purge made while one instance's pub/sub connection reconnected
    // never reached it, and its old copy was served on.
    const { a, b } = await pair();
    const seen: PurgeNotice[] = [];
    b.bus.onPurge((notice) => seen.push(notice));
    const before = Date.now() - 60_000;
    expect(await a.bus.publishPurge({ kind: 'key', key: 'old' }, 'hard', before)).toBe(true);
    await expect.poll(() => seen.length).toBe(1);
    const closed = new Promise((r) => b.subscriber.once('end', r));
    b.subscriber.disconnect(false);
    await closed;
    expect(b.bus.isListening()).toBe(false);
    const at = Date.now();
    expect(await a.bus.publishPurge({ kind: 'prefix', prefix: 's\u0000/news/' }, 'soft', at)).toBe(true);
    await b.subscriber.connect();
    expect(await b.bus.whenListening(5_000)).toBe(true);
    await expect.poll(() => seen.map((x) => x.selector)).toEqual([
      { kind: 'key', key: 'old' },
      { kind: 'prefix', prefix: 's\u0000/news/' },
    ]);
    expect(seen[1]).toEqual({ selector: { kind: 'prefix', prefix: 's\u0000/news/' }, mode: 'soft', at, from: 'a', late: true });
  });

  it('reads the purge log once its command connection is back, when the subscription came back first (review)', async () => {
    const { a, b } = await pair();
    const seen: PurgeNotice[] = [];
    b.bus.onPurge((notice) => seen.push(notice));
    const ended = Promise.all([new Promise((r) => b.subscriber.once('end', r)), new Promise((r) => b.client.once('end', r))]);
    b.subscriber.disconnect(false);
    b.client.disconnect(false);
    await ended;
    expect(await a.bus.publishPurge({ kind: 'tag', tag: 'missed' }, 'hard', Date.now())).toBe(true);
    await b.subscriber.connect(); // listening again, but the log cannot be read yet
    expect(await b.bus.whenListening(5_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toEqual([]);
    await b.client.connect();
    await expect.poll(() => seen.map((x) => x.selector), { timeout: 5_000 }).toEqual([{ kind: 'tag', tag: 'missed' }]);
  });

  it('ignores malformed messages and survives a throwing listener', async () => {
    const { a, b, keyPrefix } = await pair();
    const raw = new Redis(redis.url);
    redis.cleanup(() => raw.disconnect());
    b.bus.onPurge(() => {
      throw new Error('listener bug');
    });
    const seen: PurgeNotice[] = [];
    b.bus.onPurge((x) => seen.push(x));
    for (const junk of ['not json', '{"v":2}', '{"v":1,"from":"x","mode":"soft","at":1,"selector":{"kind":"nope"}}'])
      await raw.publish(`${keyPrefix}bus:purge`, junk);
    const next = nextNotice(b.bus);
    await a.bus.publishPurge({ kind: 'prefix', prefix: 's\u0000/a' }, 'hard', T0);
    expect((await next).selector).toEqual({ kind: 'prefix', prefix: 's\u0000/a' });
    expect(seen).toHaveLength(1);
  });
});

describe('RedisBus fill notifications', () => {
  it('one notification releases every waiter of that key on every instance, and only that key', async () => {
    const { a, b } = await pair();
    const waiters = Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).bus.waitForFill('s\u0000/hot?', 5_000));
    const otherKey = b.bus.waitForFill('s\u0000/cold?', 5_000);
    expect(b.bus.waiterCount('s\u0000/hot?')).toBe(25);
    expect(await a.bus.publishFilled('s\u0000/hot?')).toBe(true);
    expect(new Set(await Promise.all(waiters))).toEqual(new Set(['filled']));
    expect(b.bus.waiterCount('s\u0000/hot?')).toBe(0);
    expect(b.bus.waiterCount('s\u0000/cold?')).toBe(1);
    await a.bus.publishFilled('s\u0000/cold?');
    expect(await otherKey).toBe('filled');
  });

  it('times out when nobody fills', async () => {
    const { b } = await pair();
    const started = performance.now();
    expect(await b.bus.waitForFill('k', 60)).toBe('timeout');
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    expect(b.bus.waiterCount('k')).toBe(0);
  });

  it('with Redis unreachable: waitForFill answers timeout at once, publish resolves false', async () => {
    const { bus } = await makeBus({ id: 'x', keyPrefix: 'down:', url: 'redis://127.0.0.1:1' });
    const started = performance.now();
    expect(await bus.waitForFill('k', 10_000)).toBe('timeout');
    expect(await bus.publishFilled('k')).toBe(false);
    expect(await bus.publishPurge({ kind: 'all' }, 'soft')).toBe(false);
    expect(performance.now() - started).toBeLessThan(100);
  });

  it('releases waiters when the subscriber connection drops, and resubscribes after Redis restarts', async () => {
    const { a, b } = await pair();
    const pending = b.bus.waitForFill('k', 10_000);
    const started = performance.now();
    await redis.server.kill();
    try {
      expect(await pending).toBe('timeout');
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(b.bus.isListening()).toBe(false);
    } finally {
      await redis.server.restart();
    }
    await waitUntilReady(a.client, 5_000);
    expect(await b.bus.whenListening(5_000)).toBe(true);
    // By the bus's own subscribe on 'ready': ioredis's resubscription is off, as it leaves its
    // promise unhandled when the connection drops again at once (CI caught one).
    expect((b.subscriber as unknown as { options: { autoResubscribe: boolean } }).options.autoResubscribe).toBe(false);
    const again = b.bus.waitForFill('k', 5_000);
    expect(await a.bus.publishFilled('k')).toBe(true);
    expect(await again).toBe('filled');
  });
});
