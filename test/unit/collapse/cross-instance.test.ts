import { describe, expect, it } from 'vitest';
import { makeCollapseKey, type CollapseKey } from '../../../src/cache/cache-key.js';
import { RedisBus } from '../../../src/cache/stores/redis-bus.js';
import { createRedisClient, RedisGuard } from '../../../src/cache/stores/redis-store.js';
import { RedisCrossInstance, type CrossInstanceClaim, type CrossInstanceOutcome } from '../../../src/collapse/cross-instance.js';
import { DistributedLock } from '../../../src/collapse/distributed.js';
import { startRedisServer, useRedisServer, waitUntilReady } from '../../helpers/redis-server.js';

const COMMAND_TIMEOUT_MS = 75;
/**
 * The command timeout of the tests of the protocol itself: a loaded CI host stalls a command
 * past 75 ms now and then, and a "filled" notice so timed out is lost by design (the waiters
 * then time out at lockWaitMs: one CI run). The fail-open tests keep COMMAND_TIMEOUT_MS.
 */
const PROTOCOL_COMMAND_TIMEOUT_MS = 1_000;
/** Scheduling slack on a shared 2-core machine. */
const SLACK_MS = 150;
const redis = useRedisServer();
let n = 0;

interface Instance {
  cross: RedisCrossInstance;
  bus: RedisBus;
  outcomes: CrossInstanceOutcome[];
  /** The instance dies: its connections drop, so it renews nothing and publishes nothing. */
  die(): Promise<void>;
}

/** `count` simulated gateway instances on one key prefix, each with its own connections. */
async function makeInstances(
  count: number,
  opts: { url?: string; lockTtlMs?: number; lockWaitMs?: number; waitReady?: boolean; commandTimeoutMs?: number; onFilled?: (key: CollapseKey) => Promise<void> } = {},
): Promise<Instance[]> {
  const keyPrefix = `x${++n}:`;
  const url = opts.url ?? redis.url;
  const out: Instance[] = [];
  for (let i = 0; i < count; i++) {
    const client = createRedisClient({ url, commandTimeoutMs: opts.commandTimeoutMs ?? PROTOCOL_COMMAND_TIMEOUT_MS, connectTimeoutMs: 300 });
    const guard = new RedisGuard(client, { breakerFailures: 3, breakerOpenMs: 1_000 });
    const bus = new RedisBus({ guard, subscriber: client.duplicate(), keyPrefix, ownsSubscriber: true });
    redis.cleanup(async () => {
      await bus.close();
      client.disconnect();
    });
    if (opts.waitReady !== false) {
      await waitUntilReady(client);
      expect(await bus.whenListening(2_000)).toBe(true);
    }
    const outcomes: CrossInstanceOutcome[] = [];
    const cross = new RedisCrossInstance({
      lock: new DistributedLock({ guard, keyPrefix }),
      bus,
      lockTtlMs: opts.lockTtlMs ?? 5_000,
      lockWaitMs: opts.lockWaitMs ?? 5_000,
      onOutcome: (o) => outcomes.push(o),
      ...(opts.onFilled ? { onFilled: opts.onFilled } : {}),
    });
    out.push({
      cross,
      bus,
      outcomes,
      die: async () => {
        await bus.close();
        client.disconnect();
      },
    });
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const startedAt = performance.now();
  const value = await p;
  return { value, ms: performance.now() - startedAt };
}

function holderOf(claims: CrossInstanceClaim[]): Extract<CrossInstanceClaim, { kind: 'fetch' }> {
  const holders = claims.filter((c): c is Extract<CrossInstanceClaim, { kind: 'fetch' }> => c.kind === 'fetch');
  expect(holders).toHaveLength(1);
  return holders[0]!;
}

describe('RedisCrossInstance', () => {
  it('lets exactly one of several instances fetch; the others wake with "filled" when it is done', async () => {
    const instances = await makeInstances(4);
    const key = makeCollapseKey('site\u0000/cold');
    const pending = instances.map((i) => timed(i.cross.acquire(key)));
    // The holder answers at once; the others are still waiting.
    const first = await Promise.race(pending);
    expect(first.value.kind).toBe('fetch');
    await sleep(100);
    const holderIndex = instances.findIndex((i) => i.outcomes.includes('locked'));
    const waiting = instances.filter((_, idx) => idx !== holderIndex);
    expect(waiting.map((i) => i.bus.waiterCount(key.id))).toEqual([1, 1, 1]);
    const doneAt = performance.now();
    await holderOf([first.value]).done();
    const results = await Promise.all(pending);
    expect(results.map((r) => r.value.kind).sort()).toEqual(['fetch', 'filled', 'filled', 'filled']);
    // Woken by the notice (well before lockWaitMs = 5 s), and not before done().
    for (const r of results.filter((x) => x.value.kind === 'filled')) {
      expect(r.ms).toBeGreaterThanOrEqual(100);
      expect(r.ms).toBeLessThan(performance.now() - doneAt + 100 + SLACK_MS);
    }
    expect(instances.flatMap((i) => i.outcomes).sort()).toEqual(['filled', 'filled', 'filled', 'locked']);
  });

  it('does not make a request wait on a fill held by an instance it came through (its owner named in the lock); a made-up one waits', async () => {
    const [a, b] = await makeInstances(2);
    const key = makeCollapseKey('site\u0000/lap');
    const held = await a!.cross.acquire(key, undefined, 'crowdgate-aaaaaaaaaaaaaa');
    expect(held.kind).toBe('fetch');
    // Came through a: not waited for.
    const lap = await timed(b!.cross.acquire(key, 5_000, 'crowdgate-bbbbbbbbbbbbbb', (holder) => holder === 'crowdgate-aaaaaaaaaaaaaa'));
    expect(lap.value.kind).toBe('lap');
    expect(lap.ms).toBeLessThan(SLACK_MS * 2);
    expect(b!.outcomes).toEqual(['lap']);
    // Through another (a client's made-up id): waits for a's notice as any.
    let settled = false;
    const other = b!.cross.acquire(key, 5_000, 'crowdgate-bbbbbbbbbbbbbb', (holder) => holder === 'crowdgate-00000000000000');
    void other.then(() => (settled = true));
    await sleep(100);
    expect(settled).toBe(false);
    await (held as Extract<CrossInstanceClaim, { kind: 'fetch' }>).done();
    expect((await other).kind).toBe('filled');
  });

  it('releases the lock in done(), so the next acquire for the key fetches', async () => {
    const [a, b] = await makeInstances(2);
    const claim = await a!.cross.acquire(makeCollapseKey('k'));
    expect(claim.kind).toBe('fetch');
    if (claim.kind === 'fetch') await claim.done();
    const next = await b!.cross.acquire(makeCollapseKey('k'));
    expect(next.kind).toBe('fetch');
  });

  it('keeps keys apart: a holder of one key does not make another key wait', async () => {
    const [a, b] = await makeInstances(2);
    expect((await a!.cross.acquire(makeCollapseKey('one'))).kind).toBe('fetch');
    expect((await b!.cross.acquire(makeCollapseKey('two'))).kind).toBe('fetch');
  });

  it('answers "timeout" after lockWaitMs when the holder never finishes, and frees the key at lockTtlMs', async () => {
    const lockWaitMs = 200;
    const lockTtlMs = 500;
    const [dead, other] = await makeInstances(2, { lockWaitMs, lockTtlMs });
    const held = await dead!.cross.acquire(makeCollapseKey('k')); // never calls done(): a holder that died
    expect(held.kind).toBe('fetch');
    await dead!.die();
    const waited = await timed(other!.cross.acquire(makeCollapseKey('k')));
    expect(waited.value.kind).toBe('timeout');
    expect(waited.ms).toBeGreaterThanOrEqual(lockWaitMs - 5);
    expect(waited.ms).toBeLessThan(lockWaitMs + SLACK_MS);
    await sleep(lockTtlMs - waited.ms + 20);
    expect((await other!.cross.acquire(makeCollapseKey('k'))).kind).toBe('fetch');
  });

  it('keeps the key and its waiters while the holder\'s fill outlasts lockTtlMs and lockWaitMs (its lock renewed), up to the waiter\'s maxWaitMs', async () => {
    // Multi-instance trial: a 3 s page under the 3 s lockWaitMs and 5 s lockTtlMs was fetched by
    // every instance, and the waiting instance's clients took lockWaitMs plus a fetch of their own.
    const [a, b, c] = await makeInstances(3, { lockWaitMs: 150, lockTtlMs: 300 });
    const claim = await a!.cross.acquire(makeCollapseKey('slow'));
    expect(claim.kind).toBe('fetch');
    const waiting = timed(b!.cross.acquire(makeCollapseKey('slow'), 5_000));
    await sleep(700); // over twice lockTtlMs, over four lockWaitMs
    // Still held: a third instance arriving now waits too, and does not fetch.
    const late = c!.cross.acquire(makeCollapseKey('slow'), 5_000);
    await sleep(100);
    if (claim.kind === 'fetch') await claim.done();
    const woken = await waiting;
    expect(woken.value.kind).toBe('filled');
    expect(woken.ms).toBeGreaterThanOrEqual(790);
    expect((await late).kind).toBe('filled');
    expect(b!.outcomes).toEqual(['filled']);
    expect(c!.outcomes).toEqual(['filled']);
    // maxWaitMs bounds the wait for a holder that is still at work.
    const again = await a!.cross.acquire(makeCollapseKey('slow2'));
    expect(again.kind).toBe('fetch');
    const bounded = await timed(b!.cross.acquire(makeCollapseKey('slow2'), 400));
    expect(bounded.value.kind).toBe('timeout');
    expect(bounded.ms).toBeGreaterThanOrEqual(395);
    expect(bounded.ms).toBeLessThan(400 + SLACK_MS);
    if (again.kind === 'fetch') await again.done();
  });

  it('leaves a holder that died within lockTtlMs + lockWaitMs, however long its maxWaitMs', async () => {
    const [dead, other] = await makeInstances(2, { lockWaitMs: 150, lockTtlMs: 300 });
    expect((await dead!.cross.acquire(makeCollapseKey('k'))).kind).toBe('fetch');
    const waiting = timed(other!.cross.acquire(makeCollapseKey('k'), 10_000));
    await sleep(50);
    await dead!.die();
    const left = await waiting;
    expect(left.value.kind).toBe('timeout');
    expect(left.ms).toBeLessThan(300 + 2 * 150 + SLACK_MS);
  });

  it('wakes waiters on done() even when the holder did not store anything usable', async () => {
    // The request path decides what "filled" means (it re-reads the store); the notice only says "look now".
    const [a, b] = await makeInstances(2);
    const claim = await a!.cross.acquire(makeCollapseKey('k'));
    const waiting = b!.cross.acquire(makeCollapseKey('k'));
    await sleep(50);
    if (claim.kind === 'fetch') await claim.done();
    expect((await waiting).kind).toBe('filled');
  });

  it('runs onFilled for the key before answering "filled" (and not for the holder)', async () => {
    const calls: string[] = [];
    const [a, b] = await makeInstances(2, {
      onFilled: async (key) => {
        await sleep(30);
        calls.push(`${key.primary} ${key.variant}`);
      },
    });
    const claim = await a!.cross.acquire(makeCollapseKey('k', 'v'));
    const waiting = b!.cross.acquire(makeCollapseKey('k', 'v')).then((c) => ({ c, calls: [...calls] }));
    await sleep(50);
    if (claim.kind === 'fetch') await claim.done();
    const woken = await waiting;
    expect(woken.c.kind).toBe('filled');
    expect(woken.calls).toEqual(['k v']); // the key as a value: primary and variant, nothing to decode
  });

  it('releases its own fill waiter when it holds the lock (no waiter left behind after done)', async () => {
    const [a] = await makeInstances(1);
    const claim = await a!.cross.acquire(makeCollapseKey('k'));
    expect(a!.bus.waiterCount('k')).toBe(1);
    if (claim.kind === 'fetch') await claim.done();
    await sleep(50);
    expect(a!.bus.waiterCount('k')).toBe(0);
  });
});

describe('RedisCrossInstance fails open', () => {
  it.each([
    ['refused (nothing listens on the port)', 'refused'],
    ['killed after connecting', 'killed'],
    ['paused with SIGSTOP (hung)', 'paused'],
  ] as const)('fetches alone, without waiting past the command timeout, when Redis is %s', async (_name, how) => {
    const own = how === 'refused' ? undefined : await startRedisServer();
    redis.cleanup(() => own?.stop()); // stop() sends SIGCONT first
    const url = own ? own.url : await closedPortUrl();
    const [a, b] = await makeInstances(2, { url, waitReady: how !== 'refused', commandTimeoutMs: COMMAND_TIMEOUT_MS });
    if (how === 'killed') await own!.kill();
    if (how === 'paused') own!.pause();
    for (const instance of [a!, b!]) {
      const { value, ms } = await timed(instance.cross.acquire(makeCollapseKey('k')));
      expect(value.kind).toBe('fetch');
      expect(ms).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
      if (value.kind === 'fetch') {
        const done = await timed(value.done());
        expect(done.ms).toBeLessThan(COMMAND_TIMEOUT_MS + SLACK_MS);
      }
    }
    expect(a!.outcomes).toEqual(['redis_down']);
    expect(b!.outcomes).toEqual(['redis_down']);
  });
});

/** A redis:// URL on a loopback port nothing listens on. */
async function closedPortUrl(): Promise<string> {
  const net = await import('node:net');
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as import('node:net').AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  return `redis://127.0.0.1:${port}`;
}
