/**
 * The CacheStore contract, as one suite run against every store (memory, redis, tiered).
 * Each runner passes a factory that builds a fresh, empty store on a ManualClock.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import type { CacheEntry } from '../../src/cache/entry.js';
import type { CacheStore, PurgeMode, PurgeSelector } from '../../src/cache/stores/cache-store.js';

export interface StoreHarness {
  store: CacheStore;
  /** Tears down what the factory built beyond store.close() (e.g. a client). */
  dispose?: () => Promise<void>;
}

export interface HarnessOptions {
  clock: ManualClock;
  maxVariants: number;
}

export type StoreFactory = (options: HarnessOptions) => Promise<StoreHarness>;

const MAX_VARIANTS = 3;
const T0 = 1_700_000_000_000;

export function makeEntry(overrides: Partial<CacheEntry> & { key: string }): CacheEntry {
  return {
    variantKey: '',
    vary: [],
    status: 200,
    headers: { 'content-type': 'text/plain' },
    body: Buffer.from(`body of ${overrides.key} ${overrides.variantKey ?? ''}`),
    requestTime: T0 - 10,
    responseTime: T0,
    initialAgeMs: 0,
    freshnessMs: 60_000,
    staleWhileRevalidateMs: 0,
    staleIfErrorMs: 0,
    noCache: false,
    mustRevalidate: false,
    tags: [],
    deleteAt: T0 + 120_000,
    ...overrides,
  };
}

/** Purge fixtures: four records; k/c has two variants, only one tagged t1. */
const A = 's\u0000/a?';
const AB = 's\u0000/a/b?';
const C = 's\u0000/c?';
const OTHER = 'other\u0000/a?';
function purgeFixtures(): CacheEntry[] {
  return [
    makeEntry({ key: A, tags: ['t1'] }),
    makeEntry({ key: AB, tags: ['t2'] }),
    makeEntry({ key: C, variantKey: 'gzip', vary: ['accept-encoding'], tags: ['t1', 't2'] }),
    makeEntry({ key: C, variantKey: 'br', vary: ['accept-encoding'], tags: ['t2'] }),
    makeEntry({ key: OTHER, tags: [] }),
  ];
}

/** (key, variantKey) pairs as "key|variant". */
const id = (e: CacheEntry) => `${e.key}|${e.variantKey}`;

const purgeCases: { name: string; selector: PurgeSelector; selected: string[] }[] = [
  { name: 'key', selector: { kind: 'key', key: A }, selected: [`${A}|`] },
  { name: 'prefix', selector: { kind: 'prefix', prefix: 's\u0000/a' }, selected: [`${A}|`, `${AB}|`] },
  { name: 'tag', selector: { kind: 'tag', tag: 't1' }, selected: [`${A}|`, `${C}|gzip`] },
  {
    name: 'all',
    selector: { kind: 'all' },
    selected: [`${A}|`, `${AB}|`, `${C}|gzip`, `${C}|br`, `${OTHER}|`],
  },
];

export function describeCacheStoreContract(label: string, factory: StoreFactory): void {
  describe(`CacheStore contract: ${label}`, () => {
    let clock: ManualClock;
    let store: CacheStore;
    let harness: StoreHarness;

    beforeEach(async () => {
      clock = new ManualClock(T0);
      harness = await factory({ clock, maxVariants: MAX_VARIANTS });
      store = harness.store;
    });
    afterEach(async () => {
      await store.close();
      await harness.dispose?.();
    });

    const all = async (keys: string[]) => (await Promise.all(keys.map((k) => store.get(k)))).flatMap((r) => r ?? []);

    it('misses a key never stored', async () => {
      expect(await store.get('s\u0000/nothing?')).toBeUndefined();
    });

    it('returns what was put, field for field', async () => {
      const entry = makeEntry({
        key: 's\u0000/page?x=1',
        headers: { 'content-type': 'text/html', etag: '"v1"', 'set-cookie': ['a=1; Path=/', 'b=2; HttpOnly'] },
        tags: ['home', 'news'],
        noCache: true,
        mustRevalidate: true,
        initialAgeMs: 1_500,
        staleWhileRevalidateMs: 30_000,
        staleIfErrorMs: 90_000,
      });
      await store.put(entry);
      expect(await store.get(entry.key)).toEqual([entry]);
    });

    it('keeps binary and empty bodies byte for byte', async () => {
      const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const binary = makeEntry({ key: 's\u0000/bin?', body: Buffer.concat([everyByte, everyByte.reverse()]) });
      const empty = makeEntry({ key: 's\u0000/empty?', status: 204, body: Buffer.alloc(0) });
      await store.put(binary);
      await store.put(empty);
      const [gotBinary] = (await store.get(binary.key)) ?? [];
      const [gotEmpty] = (await store.get(empty.key)) ?? [];
      expect(gotBinary?.body.equals(binary.body)).toBe(true);
      expect(gotEmpty?.body.length).toBe(0);
    });

    it('keeps keys apart, including a key that is a prefix of another', async () => {
      const short = makeEntry({ key: 's\u0000/a?' });
      const long = makeEntry({ key: 's\u0000/a?b' });
      await store.put(short);
      await store.put(long);
      expect((await store.get(short.key))?.map((e) => e.body.toString())).toEqual([short.body.toString()]);
      expect((await store.get(long.key))?.map((e) => e.body.toString())).toEqual([long.body.toString()]);
    });

    it('keeps Vary variants apart and replaces the one with the same variantKey', async () => {
      const key = 's\u0000/v?';
      await store.put(makeEntry({ key, variantKey: 'gzip', vary: ['accept-encoding'], body: Buffer.from('g1') }));
      await store.put(makeEntry({ key, variantKey: 'br', vary: ['accept-encoding'], body: Buffer.from('b1') }));
      await store.put(makeEntry({ key, variantKey: 'gzip', vary: ['accept-encoding'], body: Buffer.from('g2') }));
      const got = (await store.get(key)) ?? [];
      expect(Object.fromEntries(got.map((e) => [e.variantKey, e.body.toString()]))).toEqual({ gzip: 'g2', br: 'b1' });
    });

    it(`keeps at most maxVariants (${MAX_VARIANTS}) per key, dropping the oldest`, async () => {
      const key = 's\u0000/many?';
      for (let i = 0; i < MAX_VARIANTS + 2; i++) await store.put(makeEntry({ key, variantKey: `v${i}`, vary: ['x'] }));
      const got = (await store.get(key)) ?? [];
      const expected = Array.from({ length: MAX_VARIANTS }, (_, i) => `v${i + 2}`);
      expect(got.map((e) => e.variantKey).sort()).toEqual(expected);
    });

    it('drops server-error variants before a page\'s older one when full: the copy that stands in for a failed origin stays (attacker trial)', async () => {
      const key = 's\u0000/outage?';
      await store.put(makeEntry({ key, variantKey: 'page', vary: ['x'] }));
      for (let i = 0; i < MAX_VARIANTS + 2; i++) await store.put(makeEntry({ key, variantKey: `e${i}`, vary: ['x'], status: 503 }));
      const got = (await store.get(key)) ?? [];
      expect(got).toHaveLength(MAX_VARIANTS);
      expect(got.map((e) => e.variantKey)).toContain('page');
      expect(got.map((e) => e.variantKey)).toContain(`e${MAX_VARIANTS + 1}`); // the newest always joins
    });

    it('deletes a whole record and says whether there was one', async () => {
      const key = 's\u0000/d?';
      await store.put(makeEntry({ key, variantKey: 'a', vary: ['x'] }));
      await store.put(makeEntry({ key, variantKey: 'b', vary: ['x'] }));
      expect(await store.delete(key)).toBe(true);
      expect(await store.get(key)).toBeUndefined();
      expect(await store.delete(key)).toBe(false);
    });

    it('hands out entries that cannot change the store (frozen or copies)', async () => {
      const entry = makeEntry({ key: 's\u0000/copy?' });
      await store.put(entry);
      entry.status = 404; // the caller's object is not the stored one
      const [first] = (await store.get(entry.key)) ?? [];
      try {
        first!.invalidatedAt = T0;
        first!.status = 500;
      } catch {
        // frozen: assignment throws in strict mode, which is fine
      }
      const [second] = (await store.get(entry.key)) ?? [];
      expect(second?.invalidatedAt).toBeUndefined();
      expect(second?.status).toBe(200);
    });

    describe.each(purgeCases)('purge by $name', ({ selector, selected }) => {
      const keys = [A, AB, C, OTHER];
      const modes: PurgeMode[] = ['soft', 'hard'];
      it.each(modes)('%s: affects exactly the selected entries and counts them', async (mode) => {
        for (const e of purgeFixtures()) await store.put(e);
        clock.advance(5_000);
        const purgedAt = clock.now();
        const count = await store.purge(selector, mode, purgedAt);
        expect(count).toBe(selected.length);
        const remaining = await all(keys);
        const expectedIds = purgeFixtures()
          .map(id)
          .filter((x) => mode === 'soft' || !selected.includes(x));
        expect(remaining.map(id).sort()).toEqual(expectedIds.sort());
        for (const e of remaining) {
          const isSelected = selected.includes(id(e));
          expect(e.invalidatedAt, id(e)).toBe(mode === 'soft' && isSelected ? purgedAt : undefined);
        }
      });
    });

    it('purge by prefix matches glob characters literally', async () => {
      const globby = makeEntry({ key: 's\u0000/x*?[y]\\z' });
      const lookalike = makeEntry({ key: 's\u0000/xyz' });
      await store.put(globby);
      await store.put(lookalike);
      expect(await store.purge({ kind: 'prefix', prefix: 's\u0000/x*?[' }, 'hard', clock.now())).toBe(1);
      expect(await store.get(globby.key)).toBeUndefined();
      expect(await store.get(lookalike.key)).toBeDefined();
    });

    it('a second soft purge keeps the earliest invalidation', async () => {
      const entry = makeEntry({ key: 's\u0000/twice?', tags: ['t'] });
      await store.put(entry);
      const firstAt = clock.now() + 1_000;
      await store.purge({ kind: 'key', key: entry.key }, 'soft', firstAt);
      await store.purge({ kind: 'tag', tag: 't' }, 'soft', firstAt + 5_000);
      expect((await store.get(entry.key))?.[0]?.invalidatedAt).toBe(firstAt);
    });

    it('a purge that selects nothing counts 0 and changes nothing', async () => {
      const entry = makeEntry({ key: 's\u0000/keep?', tags: ['t'] });
      await store.put(entry);
      const cases: PurgeSelector[] = [
        { kind: 'key', key: 's\u0000/absent?' },
        { kind: 'prefix', prefix: 'nosite\u0000' },
        { kind: 'tag', tag: 'absent' },
      ];
      for (const selector of cases) expect(await store.purge(selector, 'hard', clock.now())).toBe(0);
      expect(await store.get(entry.key)).toEqual([entry]);
    });

    it('a new put after a tag purge is found by the next tag purge', async () => {
      const entry = makeEntry({ key: 's\u0000/again?', tags: ['t'] });
      await store.put(entry);
      expect(await store.purge({ kind: 'tag', tag: 't' }, 'hard', clock.now())).toBe(1);
      await store.put(entry);
      expect(await store.purge({ kind: 'tag', tag: 't' }, 'hard', clock.now())).toBe(1);
      expect(await store.get(entry.key)).toBeUndefined();
    });

    it('stops returning an entry at its deleteAt', async () => {
      const entry = makeEntry({ key: 's\u0000/exp?', deleteAt: T0 + 1_000 });
      await store.put(entry);
      clock.advance(999);
      expect(await store.get(entry.key)).toHaveLength(1);
      clock.advance(1);
      expect(await store.get(entry.key)).toBeUndefined();
    });

    it('expires variants one by one, each at its own deleteAt', async () => {
      const key = 's\u0000/exp2?';
      await store.put(makeEntry({ key, variantKey: 'short', vary: ['x'], deleteAt: T0 + 1_000 }));
      await store.put(makeEntry({ key, variantKey: 'long', vary: ['x'], deleteAt: T0 + 5_000 }));
      clock.advance(2_000);
      expect((await store.get(key))?.map((e) => e.variantKey)).toEqual(['long']);
    });

    it('does not store an entry already past its deleteAt', async () => {
      const entry = makeEntry({ key: 's\u0000/late?', deleteAt: T0 - 1 });
      await store.put(entry);
      expect(await store.get(entry.key)).toBeUndefined();
    });

    it('counts records and bytes in stats', async () => {
      const empty = (await store.refreshStats?.(), store.stats());
      expect(empty).toEqual({ entries: 0, bytes: 0 });
      await store.put(makeEntry({ key: 's\u0000/s1?', body: Buffer.alloc(2_000) }));
      await store.put(makeEntry({ key: 's\u0000/s2?', variantKey: 'a', vary: ['x'] }));
      await store.put(makeEntry({ key: 's\u0000/s2?', variantKey: 'b', vary: ['x'] }));
      await store.refreshStats?.();
      const two = store.stats();
      expect(two.entries).toBe(2);
      expect(two.bytes).toBeGreaterThan(2_000);
      await store.delete('s\u0000/s1?');
      await store.refreshStats?.();
      const one = store.stats();
      expect(one.entries).toBe(1);
      expect(one.bytes).toBeLessThan(two.bytes - 2_000);
    });
  });
}
