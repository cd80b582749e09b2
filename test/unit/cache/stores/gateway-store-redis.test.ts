/**
 * GatewayStore's purges against a real Redis that refuses writes (maxmemory with noeviction, as
 * a full Redis or a read-only replica after a failover does) while it still answers reads and
 * PUBLISH: a purge it did not take is not announced (the others would read the old record back),
 * is kept, and once Redis takes writes again it is applied to what was stored before it only and
 * announced late, so the copies made since stay.
 */
import pino from 'pino';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../../../src/clock.js';
import { staleAtOf } from '../../../../src/cache/entry.js';
import { parseConfigText } from '../../../../src/config/load.js';
import type { GatewayConfig } from '../../../../src/config/schema.js';
import { GatewayStore, type GatewayStoreOptions } from '../../../../src/cache/stores/gateway-store.js';
import { carryHeat, countHit, HOT_HITS, isReadOften } from '../../../../src/server/stale.js';
import { GatewayMetrics } from '../../../../src/metrics/gateway-metrics.js';
import { makeEntry } from '../../../contract/cache-store.contract.js';
import { useRedisServer } from '../../../helpers/redis-server.js';

const quiet = pino({ level: 'silent' });
const redis = useRedisServer();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let n = 0;

function config(url: string, keyPrefix: string): GatewayConfig {
  const r = parseConfigText(
    `redis:\n  url: ${url}\n  keyPrefix: "${keyPrefix}"\n  breakerOpenMs: 200\nsites:\n  - name: blog\n    hosts: ["*"]\n    origins: [{ url: "http://127.0.0.1:3000" }]\n`,
    'test.yaml',
    { env: {} },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

async function twoInstances(carryOver?: GatewayStoreOptions['carryOver']) {
  const prefix = `gsr${++n}:`;
  const make = async () => {
    const g = new GatewayStore({ config: config(redis.url, prefix), clock: systemClock, logger: quiet, metrics: new GatewayMetrics({ defaultMetrics: false }), carryOver });
    redis.cleanup(() => g.close());
    await g.start();
    return g;
  };
  const admin = new Redis(redis.url);
  redis.cleanup(async () => {
    await admin.config('SET', 'maxmemory', '0');
    admin.disconnect();
  });
  return { a: await make(), b: await make(), admin };
}

const freshNow = (record: readonly { freshnessMs: number }[] | undefined) =>
  record !== undefined && record.length > 0 && staleAtOf(record[0] as Parameters<typeof staleAtOf>[0]) > Date.now();

describe('GatewayStore purges when Redis refuses writes', () => {
  it('announces a purge only once Redis has taken it, then late, and the copies made since stay', async () => {
    const { a, b, admin } = await twoInstances();
    const key = 's\u0000/page?';
    const t0 = Date.now();
    await a.store.put(makeEntry({ key, responseTime: t0 - 1_000, requestTime: t0 - 1_010, freshnessMs: 600_000, deleteAt: t0 + 600_000, body: Buffer.from('OLD') }));
    expect((await b.store.get(key))?.[0]?.body.toString()).toBe('OLD'); // in b's memory now
    await admin.config('SET', 'maxmemory', '1');
    const result = await a.purge([{ kind: 'key', key }], 'soft', Date.now());
    expect(result.broadcast).toBe(false);
    expect(a.pendingPurges).toBe(1);
    await sleep(50);
    // A copy b stored after the purge: the new page (Redis refuses it; b's memory keeps it).
    const other = 's\u0000/other?';
    await b.store.put(makeEntry({ key: other, responseTime: Date.now(), requestTime: Date.now() - 5, freshnessMs: 600_000, deleteAt: Date.now() + 600_000, body: Buffer.from('NEW') }));
    await admin.config('SET', 'maxmemory', '0');
    for (let i = 0; i < 40 && a.pendingPurges > 0; i++) await sleep(100);
    expect(a.pendingPurges).toBe(0);
    await sleep(100); // pub/sub
    // b got the notice: its memory copy of the purged page is stale, and Redis's too.
    expect(freshNow(await b.store.get(key))).toBe(false);
    expect(freshNow(await a.redis!.store.l2.get(key))).toBe(false);
    expect((await b.store.get(other))?.[0]?.body.toString()).toBe('NEW');
  }, 20_000);

  it('a late purge spares what was stored after it, in Redis and in the others\' memory', async () => {
    const { a, b, admin } = await twoInstances();
    const key = 's\u0000/late?';
    const t0 = Date.now();
    await a.store.put(makeEntry({ key, responseTime: t0 - 1_000, requestTime: t0 - 1_010, freshnessMs: 600_000, deleteAt: t0 + 600_000, body: Buffer.from('OLD') }));
    await admin.config('SET', 'maxmemory', '1');
    await a.purge([{ kind: 'key', key }], 'soft', Date.now()); // its SET is refused
    expect(a.pendingPurges).toBe(1);
    await sleep(20);
    await admin.config('SET', 'maxmemory', '0');
    // Before the retry: b stores the page as the origin has it now (after the purge).
    const t = Date.now();
    await b.store.put(makeEntry({ key, responseTime: t, requestTime: t - 5, freshnessMs: 600_000, deleteAt: t + 600_000, body: Buffer.from('NEW') }));
    for (let i = 0; i < 40 && a.pendingPurges > 0; i++) await sleep(100);
    expect(a.pendingPurges).toBe(0);
    await sleep(100);
    for (const record of [await b.store.get(key), await a.redis!.store.l2.get(key)]) {
      expect(record?.[0]?.body.toString()).toBe('NEW');
      expect(freshNow(record)).toBe(true);
    }
  }, 20_000);
});

describe('GatewayStore: a copy from Redis and the reads of the one it replaces', () => {
  it('another instance\'s refresh, copied into this one\'s memory, stays hot here when the copy it replaces was read by a crowd here', async () => {
    // Multi-instance trial: a page read a few times a second on each of two instances was hot
    // on neither, since each copy the other instance refreshed started with no reads.
    for (const [carryOver, hot] of [
      [carryHeat, true],
      [undefined, false],
    ] as const) {
      const { a, b } = await twoInstances(carryOver);
      const key = 's\u0000/hot?';
      const t0 = Date.now();
      await a.store.put(makeEntry({ key, responseTime: t0 - 100, requestTime: t0 - 110, freshnessMs: 60_000, deleteAt: t0 + 600_000, body: Buffer.from('v1') }));
      await b.store.get(key); // copied into b's memory; the crowd then reads that copy
      const first = (await b.store.get(key))![0]!;
      for (let i = 0; i < HOT_HITS; i++) countHit(first); // b's crowd
      expect(isReadOften(first, Date.now())).toBe(true);
      // a refreshes the page; b is told (the "filled" notice) and copies it from Redis.
      await a.store.put(makeEntry({ key, responseTime: t0, requestTime: t0 - 5, freshnessMs: 60_000, deleteAt: t0 + 600_000, body: Buffer.from('v2') }));
      b.redis!.store.fillFromL2(key, (await b.redis!.store.l2.get(key))!);
      const second = (await b.store.get(key))![0]!;
      expect(second).not.toBe(first);
      expect(second.body.toString()).toBe('v2');
      countHit(second); // the crowd's next read, here (the reads carried decay from now on)
      expect(isReadOften(second, Date.now())).toBe(hot);
      // The other instance's reads are never counted here: a's copy carries nothing to b.
      expect(isReadOften((await a.store.get(key))![0]!, Date.now())).toBe(false);
    }
  }, 20_000);
});

describe('GatewayStore: a Redis that refuses writes while it stays up', () => {
  it('logs why (OOM under noeviction), once a minute, with the count since', async () => {
    const lines: Array<{ level: number; msg: string; err?: string; errors?: number }> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const prefix = `gsr${++n}:`;
    const g = new GatewayStore({ config: config(redis.url, prefix), clock: systemClock, logger, metrics: new GatewayMetrics({ defaultMetrics: false }) });
    const admin = new Redis(redis.url);
    redis.cleanup(async () => {
      await admin.config('SET', 'maxmemory', '0');
      admin.disconnect();
      await g.close();
    });
    await g.start();
    await admin.config('SET', 'maxmemory', '1');
    const t = Date.now();
    for (let i = 0; i < 3; i++)
      await g.store.put(makeEntry({ key: `s\u0000/full${i}?`, responseTime: t, requestTime: t - 5, freshnessMs: 60_000, deleteAt: t + 60_000 }));
    const failed = lines.filter((l) => l.msg.startsWith('redis command failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]!.level).toBe(40);
    expect(failed[0]!.err).toMatch(/OOM/);
    expect(failed[0]!.errors).toBe(1);
  }, 20_000);
});


describe('GatewayStore: what it says about Redis', () => {
  it('warns at start when Redis keeps every copy until it expires (no maxmemory, or noeviction), and not once it has a bound that evicts', async () => {
    const started = async () => {
      const lines: Array<{ level: number; msg: string; maxmemory?: number; policy?: string }> = [];
      const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
      const g = new GatewayStore({ config: config(redis.url, `gsr${++n}:`), clock: systemClock, logger, metrics: new GatewayMetrics({ defaultMetrics: false }) });
      redis.cleanup(() => g.close());
      await g.start();
      return lines.filter((l) => l.msg.startsWith('redis has no memory bound'));
    };
    const admin = new Redis(redis.url);
    redis.cleanup(async () => {
      await admin.config('SET', 'maxmemory', '0');
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      admin.disconnect();
    });
    await admin.config('SET', 'maxmemory', '0');
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    expect(await started()).toMatchObject([{ level: 40, maxmemory: 0, policy: 'noeviction' }]);
    await admin.config('SET', 'maxmemory', '100mb');
    expect(await started()).toMatchObject([{ level: 40, policy: 'noeviction' }]);
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
    expect(await started()).toEqual([]);
  }, 20_000);

  it('logs a purge heard from another instance at info when it purged something here, at debug when nothing (fleet trial: 16 lines per instance per MediaWiki edit), and names its own id at start', async () => {
    const lines: Array<{ level: number; msg: string; purged?: number; from?: string; instance?: string }> = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const prefix = `gsr${++n}:`;
    const make = async (log: pino.Logger) => {
      const g = new GatewayStore({ config: config(redis.url, prefix), clock: systemClock, logger: log, metrics: new GatewayMetrics({ defaultMetrics: false }) });
      redis.cleanup(() => g.close());
      await g.start();
      return g;
    };
    const a = await make(quiet);
    const b = await make(logger);
    const ready = lines.find((l) => l.msg.startsWith('redis ready'));
    expect(ready?.instance).toMatch(/^[0-9a-f-]{36}$/);
    const heard = async (count: number) => {
      for (let i = 0; i < 100 && lines.filter((l) => l.msg === 'purge received').length < count; i++) await sleep(20);
      return lines.filter((l) => l.msg === 'purge received');
    };
    await a.purge([{ kind: 'key', key: 's\u0000/nothing?' }], 'hard', Date.now());
    expect(await heard(1)).toMatchObject([{ level: 20, purged: 0 }]);
    const key = 's\u0000/stored?';
    const t = Date.now();
    await b.store.put(makeEntry({ key, responseTime: t, requestTime: t - 5, freshnessMs: 600_000, deleteAt: t + 600_000 }));
    await a.purge([{ kind: 'key', key }], 'hard', Date.now());
    const both = await heard(2);
    expect(both[1]).toMatchObject({ level: 30, purged: 1 });
    expect(both[1]!.from).not.toBe(ready?.instance);
  }, 20_000);

  it('says Redis is in use at start, that a hung Redis is skipped (once), and that it answers again (multi-instance trial)', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const g = new GatewayStore({ config: config(redis.url, `gsr${++n}:`), clock: systemClock, logger, metrics: new GatewayMetrics({ defaultMetrics: false }) });
    redis.cleanup(() => g.close());
    await g.start();
    const said = (prefix: string) => lines.filter((l) => l.msg.startsWith(prefix));
    expect(said('redis ready')).toHaveLength(1);
    expect(said('redis ready')[0]!.level).toBe(30);
    const put = (i: number) => {
      const t = Date.now();
      return g.store.put(makeEntry({ key: `s\u0000/hung${i}?`, responseTime: t, requestTime: t - 5, freshnessMs: 60_000, deleteAt: t + 60_000 }));
    };
    redis.server.pause(); // SIGSTOP: the connection stays, nothing answers
    try {
      for (let i = 0; i < 4; i++) await put(i); // the first times out and opens the breaker; the rest skip Redis
    } finally {
      redis.server.resume();
    }
    expect(said('redis not answering')).toHaveLength(1);
    expect(said('redis not answering')[0]!.level).toBe(40);
    expect(said('redis back')).toHaveLength(0);
    // breakerOpenMs is 200: a probe (the heartbeat's PING or the next command) finds it answering.
    for (let i = 0; i < 40 && said('redis back').length === 0; i++) {
      await sleep(100);
      await put(10 + i);
    }
    expect(said('redis back')).toHaveLength(1);
    expect(said('redis not answering')).toHaveLength(1);
  }, 20_000);
});
