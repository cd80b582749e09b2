/**
 * PeerLoad over a real redis-server: two instances' buses on one Redis, each with its own
 * clock (the receiver's decides when a count is stale).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { LOAD_COUNT_MAX, LOAD_FROM_MAX, LOAD_KEY_MAX, LOAD_MEMBERS_MAX, RedisBus, type LoadNotice } from '../../../src/cache/stores/redis-bus.js';
import { createRedisClient, RedisGuard } from '../../../src/cache/stores/redis-store.js';
import { LOAD_STALE_MS, PeerLoad } from '../../../src/origin/peer-load.js';
import { useRedisServer, waitUntilReady } from '../../helpers/redis-server.js';
import { admissionSchema, siteSchema } from '../../../src/config/schema.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';
import { OriginPool } from '../../../src/origin/pool.js';
import { Upstream, type OriginLease } from '../../../src/origin/upstream.js';

const T0 = 1_700_000_000_000;
const redis = useRedisServer({ inspect: true });
let n = 0;

async function instance(id: string, keyPrefix: string, snapshot: () => Map<string, number>) {
  const client = createRedisClient({ url: redis.url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
  const subscriber = createRedisClient({ url: redis.url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
  const clock = new ManualClock(T0);
  const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock });
  const bus = new RedisBus({ guard, subscriber, keyPrefix, instanceId: id, ownsSubscriber: true });
  const probes: string[] = [];
  // The timer never fires within a test: publish() is called by hand.
  const peers = new PeerLoad({ bus, clock, snapshot, onPeerProbe: (member) => probes.push(member), intervalMs: 3_600_000 });
  redis.cleanup(async () => {
    peers.close();
    await bus.close();
    client.disconnect();
  });
  await waitUntilReady(client);
  expect(await bus.whenListening(5_000)).toBe(true);
  return { bus, clock, peers, probes };
}

/** Resolves with the next load notice the bus hands its listeners. */
function nextLoad(bus: RedisBus): Promise<LoadNotice> {
  return loads(bus, 1).then(([notice]) => notice!);
}

/** Resolves with the next `count` load notices the bus hands its listeners. */
function loads(bus: RedisBus, count: number): Promise<LoadNotice[]> {
  const seen: LoadNotice[] = [];
  return new Promise((resolve) => {
    const off = bus.onLoad((notice) => {
      seen.push(notice);
      if (seen.length < count) return;
      off();
      resolve(seen);
    });
  });
}

const ORIGIN = 'http://127.0.0.1:3000/';
const OTHER = 'http://10.0.0.2:8080/';

describe('PeerLoad: what the other gateways have in flight to each origin member', () => {
  it('adds up the others\' counts per member URL, never its own, and drops a count LOAD_STALE_MS after it came', async () => {
    const keyPrefix = `peer${++n}:`;
    let countsA = new Map([[ORIGIN, 6], [OTHER, 1]]);
    const a = await instance('a', keyPrefix, () => countsA);
    const b = await instance('b', keyPrefix, () => new Map([[ORIGIN, 4]]));
    const c = await instance('c', keyPrefix, () => new Map([[ORIGIN, 0]]));
    let heard: Promise<unknown> = Promise.all([loads(c.bus, 2), loads(a.bus, 1)]);
    a.peers.publish();
    b.peers.publish();
    await heard;
    expect(c.peers.inflight(ORIGIN)).toBe(10);
    expect(c.peers.inflight(OTHER)).toBe(1);
    expect(c.peers.inflight('http://127.0.0.1:3001/')).toBe(0);
    // A counts B's, not its own (its own message comes back to it and is dropped).
    expect(a.peers.inflight(ORIGIN)).toBe(4);
    // C has nothing in flight and has published nothing: no message.
    const sent = nextLoad(a.bus).then(() => 'sent');
    c.peers.publish();
    countsA = new Map([[ORIGIN, 2]]);
    heard = nextLoad(c.bus);
    a.peers.publish();
    await heard;
    expect(await Promise.race([sent, Promise.resolve('none')])).toBe('none');
    expect(c.peers.inflight(ORIGIN)).toBe(6);
    // B stops telling (stopped, or lost Redis): its count goes once stale by C's clock.
    c.clock.advance(LOAD_STALE_MS - 100);
    heard = nextLoad(c.bus);
    a.peers.publish();
    await heard;
    c.clock.advance(200);
    expect(c.peers.inflight(ORIGIN)).toBe(2);
    // A clock stepped back past a count's arrival: stale at once.
    heard = nextLoad(c.bus);
    a.peers.publish();
    await heard;
    expect(c.peers.inflight(ORIGIN)).toBe(2);
    c.clock.advance(-1_000);
    expect(c.peers.inflight(ORIGIN)).toBe(0);
    // A's counts fall to 0: said once, then nothing more.
    countsA = new Map([[ORIGIN, 0]]);
    heard = nextLoad(c.bus);
    a.peers.publish();
    await heard;
    expect(c.peers.inflight(ORIGIN)).toBe(0);
    const again = nextLoad(c.bus).then(() => 'sent');
    a.peers.publish();
    await redis.raw.ping();
    expect(await Promise.race([again, new Promise((r) => setTimeout(() => r('none'), 100))])).toBe('none');
  });

  it('relays a probe to the others at once, by member URL, from an instance that has requests there', async () => {
    const keyPrefix = `peer${++n}:`;
    const a = await instance('a', keyPrefix, () => new Map([[ORIGIN, 4]]));
    const b = await instance('b', keyPrefix, () => new Map());
    // Before A said it has requests at the member, its probe is nobody's business here.
    let heard = nextLoad(b.bus);
    a.peers.announceProbe(ORIGIN);
    expect(await heard).toEqual({ from: 'a', probe: ORIGIN });
    expect(b.probes).toEqual([]);
    heard = nextLoad(b.bus);
    a.peers.publish();
    await heard;
    heard = nextLoad(b.bus);
    a.peers.announceProbe(ORIGIN);
    await heard;
    expect(b.probes).toEqual([ORIGIN]);
    expect(a.probes).toEqual([]);
    // Nor a probe of a member it has no requests at, nor one its count for went stale.
    heard = nextLoad(b.bus);
    a.peers.announceProbe(OTHER);
    await heard;
    b.clock.advance(LOAD_STALE_MS + 1);
    heard = nextLoad(b.bus);
    a.peers.announceProbe(ORIGIN);
    await heard;
    expect(b.probes).toEqual([ORIGIN]);
  });

  it('ignores what is not a load notice, and counts that are not whole numbers; caps what it keeps', async () => {
    const keyPrefix = `peer${++n}:`;
    const b = await instance('b', keyPrefix, () => new Map());
    const channel = `${keyPrefix}bus:load`;
    for (const bad of ['not json', '{"v":2,"from":"x","inflight":{}}', '{"v":1,"inflight":{"a":1}}', '{"v":1,"from":"x","inflight":5}'])
      await redis.raw.publish(channel, bad);
    const heard = nextLoad(b.bus);
    await redis.raw.publish(channel, JSON.stringify({ v: 1, from: 'x', inflight: { [ORIGIN]: 3, [OTHER]: -1, z: 1.5, y: 'many' } }));
    expect(await heard).toEqual({ from: 'x', inflight: new Map([[ORIGIN, 3]]) });
    expect(b.peers.inflight(ORIGIN)).toBe(3);
    expect(b.peers.inflight(OTHER)).toBe(0);
    // A count past LOAD_COUNT_MAX reads as it; a URL past LOAD_KEY_MAX, and members past
    // LOAD_MEMBERS_MAX, are not kept.
    const long = `http://x/${'a'.repeat(LOAD_KEY_MAX)}`;
    const many = Object.fromEntries(Array.from({ length: LOAD_MEMBERS_MAX + 10 }, (_, i) => [`http://m${i}/`, 1]));
    // Nothing from an id past LOAD_FROM_MAX, nor a probe of a URL past LOAD_KEY_MAX.
    const seen: LoadNotice[] = [];
    b.bus.onLoad((notice) => seen.push(notice));
    await redis.raw.publish(channel, JSON.stringify({ v: 1, from: 'f'.repeat(LOAD_FROM_MAX + 1), inflight: { [OTHER]: 7 } }));
    await redis.raw.publish(channel, JSON.stringify({ v: 1, from: 'x', probe: long }));
    const next = nextLoad(b.bus);
    await redis.raw.publish(channel, JSON.stringify({ v: 1, from: 'y', inflight: { [long]: 5, ...many, [ORIGIN]: 1e308 } }));
    const notice = await next;
    if (!('inflight' in notice)) throw new Error('not a count notice');
    expect(seen).toHaveLength(1); // only y's
    expect(notice.inflight.size).toBe(LOAD_MEMBERS_MAX);
    expect(notice.inflight.has(long)).toBe(false);
    expect(notice.inflight.has('http://m0/')).toBe(true);
    expect(b.peers.inflight('http://m0/')).toBe(1);
    expect(b.peers.inflight(`http://m${LOAD_MEMBERS_MAX + 5}/`)).toBe(0);
    // The members are kept in the order sent: ORIGIN came after the 266 others and was dropped.
    expect(b.peers.inflight(ORIGIN)).toBe(3);
    const capped = nextLoad(b.bus);
    await redis.raw.publish(channel, JSON.stringify({ v: 1, from: 'z', inflight: { [ORIGIN]: 1e308 } }));
    await capped;
    expect(b.peers.inflight(ORIGIN)).toBe(3 + LOAD_COUNT_MAX);
    // At most PEERS_MAX (64) instances are remembered: the oldest heard goes first.
    for (let i = 0; i < 70; i++) {
      const heard = nextLoad(b.bus);
      await redis.raw.publish(channel, JSON.stringify({ v: 1, from: `p${i}`, inflight: { [OTHER]: 1 } }));
      await heard;
    }
    expect(b.peers.inflight(OTHER)).toBe(64);
  });
});

describe('Upstream with PeerLoad: two gateways in front of one origin member', () => {
  const pools: OriginPool[] = [];
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()));
  });

  /** One gateway's origin seam on its own clock, told about the others through a real Redis bus. */
  async function gateway(id: string, keyPrefix: string) {
    const client = createRedisClient({ url: redis.url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
    const subscriber = createRedisClient({ url: redis.url, commandTimeoutMs: 75, connectTimeoutMs: 300 });
    const clock = new ManualClock(T0);
    const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000, clock });
    const bus = new RedisBus({ guard, subscriber, keyPrefix, instanceId: id, ownsSubscriber: true });
    await waitUntilReady(client);
    expect(await bus.whenListening(5_000)).toBe(true);
    const site = siteSchema.parse({ name: 'blog', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:9/' }], healthCheck: { enabled: false } });
    const pool = new OriginPool(site, { clock });
    pools.push(pool);
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const upstream = new Upstream(clock, metrics, admissionSchema.parse({}), 1);
    upstream.sharePeers(bus);
    redis.cleanup(async () => {
      upstream.closePeers();
      await bus.close();
      client.disconnect();
    });
    const member = pool.members()[0]!;
    const admit = async (): Promise<OriginLease> => {
      const r = await upstream.admit(site, pool, { priority: 0, deadlineAt: clock.now() + 500, kind: 'fill' });
      if (!r.ok) throw new Error(r.why);
      return r.lease;
    };
    const probes = async (source: string) =>
      (await metrics.registry.getSingleMetric('crowdgate_origin_limit_probes_total')!.get()).values.find((v) => v.labels.source === source)?.value ?? 0;
    return { clock, site, member, upstream, admit, probes, control: () => upstream.controlFor(site, member) };
  }

  it('counts what the other has in flight to the same member URL, and joins its probes', async () => {
    const keyPrefix = `peer${++n}:`;
    const a = await gateway('a', keyPrefix);
    const b = await gateway('b', keyPrefix);
    const key = 'http://127.0.0.1:9/';
    // B learns the member's no-load round trip first (a probe needs one to start from), then has
    // every permit in use (only a limit that binds joins a probe).
    for (let i = 0; i < 5; i++) {
      const lease = await b.admit();
      b.clock.advance(20);
      lease.finish({ kind: 'response', status: 200 });
    }
    // Past its cold start too: it has bound for 6 s (a limit joins nothing in its first 5).
    for (let round = 0; round < 7; round++) {
      const busy = await Promise.all(Array.from({ length: 8 }, () => b.admit()));
      b.clock.advance(20);
      for (const lease of busy) lease.finish({ kind: 'response', status: 200 });
      b.clock.advance(980);
    }
    const held = [await a.admit(), await a.admit(), await a.admit()];
    // A tells its count within its publishing interval (0.5 s of real time).
    for (let i = 0; i < 40 && b.upstream.peerInflight(key) !== 3; i++) await new Promise((r) => setTimeout(r, 50));
    expect(b.upstream.peerInflight(key)).toBe(3);
    expect(a.upstream.peerInflight(key)).toBe(0);
    // A's limit starts a probe of its own: B's joins it, its limit at a quarter of 8.
    expect(b.control().limiter.limit).toBe(8);
    a.control().limiter.onProbe!();
    for (let i = 0; i < 40 && (await b.probes('peer')) === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await b.probes('peer')).toBe(1);
    expect(b.control().limiter.limit).toBe(2);
    expect(await a.probes('own')).toBe(1);
    for (const lease of held) lease.finish({ kind: 'response', status: 200 });
  });
});
