import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../src/clock.js';
import { entrySizeOf, type CacheEntry } from '../../../../src/cache/entry.js';
import { noteVariantHit, type StoreEvent } from '../../../../src/cache/stores/cache-store.js';
import { MemoryStore, type MemoryStoreOptions } from '../../../../src/cache/stores/memory-store.js';
import { makeEntry } from '../../../contract/cache-store.contract.js';

const T0 = 1_700_000_000_000;

function makeStore(options: Partial<MemoryStoreOptions> = {}) {
  const clock = new ManualClock(T0);
  const events: StoreEvent['kind'][] = [];
  const store = new MemoryStore({
    maxBytes: 1024 * 1024,
    maxObjectBytes: 64 * 1024,
    maxVariants: 4,
    clock,
    onEvent: (e) => {
      expect(e.tier).toBe('memory');
      events.push(e.kind);
    },
    ...options,
  });
  return { store, clock, events };
}

const sized = (key: string, bodyBytes: number, extra: Partial<CacheEntry> = {}) =>
  makeEntry({ key, body: Buffer.alloc(bodyBytes, 1), ...extra });

describe('MemoryStore bounds', () => {
  it('evicts the least recently used record when maxBytes is reached, and reports it', async () => {
    const one = entrySizeOf(sized('k0', 10_000));
    const { store, events } = makeStore({ maxBytes: one * 3 + 10 });
    for (const k of ['k0', 'k1', 'k2']) await store.put(sized(k, 10_000));
    await store.get('k0'); // k0 now most recent: k1 is the oldest
    await store.put(sized('k3', 10_000));
    expect(await store.get('k1')).toBeUndefined();
    expect(await store.get('k0')).toBeDefined();
    expect(events.filter((k) => k === 'eviction')).toHaveLength(1);
    expect(store.stats()).toEqual({ entries: 3, bytes: one * 3 });
  });

  it('counts a small entry at what it costs in the heap, so many tiny pages cannot outgrow maxBytes (attacker trial)', async () => {
    // A 40-byte page costs about 1.5 KiB live (heap snapshot); 256 bytes of overhead let one
    // client's 580 000 distinct URLs make a "256 MiB" cache 1.9 GB of RSS.
    const { store } = makeStore({ maxBytes: 1024 * 1024 });
    for (let i = 0; i < 2000; i++) await store.put(sized(`/q${i}`, 40));
    expect(entrySizeOf(sized('/q0', 40))).toBeGreaterThanOrEqual(1400);
    expect(store.stats().entries).toBeLessThanOrEqual(Math.floor((1024 * 1024) / 1400));
  });

  it('keeps large records to their share: distinct large objects evict each other, not the hot pages', async () => {
    // 64 MiB: large is over 1 MiB, and large records share at most 16 MiB.
    const { store, events } = makeStore({ maxBytes: 64 * 1024 * 1024, maxObjectBytes: 8 * 1024 * 1024 });
    for (let i = 0; i < 200; i++) await store.put(sized(`page${i}`, 20_000));
    // 32 distinct 2 MiB assets (one asset under 32 query strings): 64 MiB, the whole cache.
    for (let i = 0; i < 32; i++) await store.put(sized(`asset?v=${i}`, 2 * 1024 * 1024));
    for (let i = 0; i < 200; i++) expect(await store.get(`page${i}`), `page${i}`).toBeDefined();
    // The most recent large ones are kept, within their share; reading one keeps it.
    expect(await store.get('asset?v=31')).toBeDefined();
    expect(await store.get('asset?v=0')).toBeUndefined();
    await store.get('asset?v=25');
    for (let i = 32; i < 38; i++) await store.put(sized(`asset?v=${i}`, 2 * 1024 * 1024));
    expect(await store.get('asset?v=25')).toBeDefined();
    expect(await store.get('asset?v=26')).toBeUndefined();
    expect(store.stats().bytes).toBeLessThanOrEqual(200 * entrySizeOf(sized('p', 20_000)) + 16 * 1024 * 1024);
    expect(events.filter((k) => k === 'eviction').length).toBeGreaterThanOrEqual(30);
  });

  it('evicts records nobody read since they were stored before any read one: one-off fills push out each other, not the pages (attacker trial)', async () => {
    const one = entrySizeOf(sized('p0', 10_000));
    const { store, events } = makeStore({ maxBytes: one * 10 + 500 }); // keys differ in length by a few bytes
    // Unread records may fill the whole cache when nothing else wants the room.
    for (let i = 0; i < 10; i++) await store.put(sized(`p${i}`, 10_000));
    expect(store.stats().entries).toBe(10);
    for (let i = 0; i < 6; i++) expect(await store.get(`p${i}`)).toBeDefined(); // read: the site's pages
    // One asset under 40 query strings, each stored once and never read again.
    for (let v = 0; v < 40; v++) await store.put(sized(`asset?v=${v}`, 10_000));
    for (let i = 0; i < 6; i++) expect(await store.get(`p${i}`), `p${i}`).toBeDefined();
    for (let i = 6; i < 10; i++) expect(await store.get(`p${i}`), `p${i}`).toBeUndefined(); // unread: pushed out first
    expect(await store.get('asset?v=39')).toBeDefined(); // the newest one-offs are held
    expect(await store.get('asset?v=35')).toBeUndefined();
    expect(events.filter((k) => k === 'eviction')).toHaveLength(40);
    expect(store.stats().bytes).toBeLessThanOrEqual(one * 10 + 500);
    // A revalidation or refresh of a read page keeps it read; with only read records left, recency decides.
    await store.put(sized('p0', 10_000));
    for (let v = 40; v < 44; v++) await store.put(sized(`asset?v=${v}`, 10_000));
    expect(await store.get('p0')).toBeDefined();
    expect(await store.get('asset?v=39')).toBeDefined(); // read just above
  });

  it('counts a record filled from another tier (asked for) as read', async () => {
    const one = entrySizeOf(sized('p0', 10_000));
    const { store } = makeStore({ maxBytes: one * 3 + 10 });
    store.fill('from-l2', [sized('from-l2', 10_000)]);
    await store.put(sized('a', 10_000));
    for (let v = 0; v < 5; v++) await store.put(sized(`x?v=${v}`, 10_000));
    expect(await store.get('from-l2')).toBeDefined();
    expect(await store.get('a')).toBeUndefined();
  });

  it('does not store a variant larger than maxObjectBytes, and keeps the others', async () => {
    const { store, events } = makeStore({ maxObjectBytes: 5_000 });
    await store.put(sized('k', 1_000, { variantKey: 'small', vary: ['x'] }));
    await store.put(sized('k', 6_000, { variantKey: 'big', vary: ['x'] }));
    expect((await store.get('k'))?.map((e) => e.variantKey)).toEqual(['small']);
    expect(events).toContain('skip');
  });

  it('bounds maxObjectBytes by the body alone, as the fill does: a body of exactly the bound is stored whatever its URL and headers (attacker trial: said stored, dropped here)', async () => {
    const { store, events } = makeStore({ maxObjectBytes: 5_000 });
    const key = 'k' + 'q'.repeat(2_000);
    await store.put(sized(key, 5_000, { headers: { 'content-security-policy': 'x'.repeat(3_000), 'content-type': 'text/html' } }));
    expect((await store.get(key))?.[0]?.body.length).toBe(5_000);
    await store.put(sized('k2', 5_001));
    expect(await store.get('k2')).toBeUndefined();
    expect(events.filter((k) => k === 'skip')).toHaveLength(1);
  });

  it('drops the oldest variants of a record that would outgrow the whole cache', async () => {
    const one = entrySizeOf(sized('k', 30_000, { variantKey: 'a' }));
    const { store } = makeStore({ maxBytes: one * 2 + 100, maxObjectBytes: 64 * 1024 });
    for (const v of ['a', 'b', 'c']) await store.put(sized('k', 30_000, { variantKey: v, vary: ['x'] }));
    expect((await store.get('k'))?.map((e) => e.variantKey)).toEqual(['b', 'c']);
  });

  it.each([
    ['maxBytes', { maxBytes: 0 }],
    ['maxObjectBytes', { maxObjectBytes: 1.5 }],
    ['maxVariants', { maxVariants: -1 }],
  ] as const)('rejects a bad %s at construction, naming it', (name, bad) => {
    expect(() => makeStore(bad)).toThrow(name);
  });
});

describe('MemoryStore variants: the one read least goes first', () => {
  const key = 's\u0000/lang?';
  const lang = (value: string, extra: Partial<CacheEntry> = {}) => makeEntry({ key, variantKey: `accept-language=${value}`, vary: ['accept-language'], body: Buffer.from(value), ...extra });
  const variantsOf = async (store: MemoryStore) => ((await store.get(key)) ?? []).map((e) => e.body.toString());
  const hit = async (store: MemoryStore, value: string) => {
    const entry = ((await store.get(key)) ?? []).find((e) => e.body.toString() === value);
    expect(entry, value).toBeDefined();
    noteVariantHit(entry!);
  };

  it('a flood of made-up values (each read by nobody) pushes out each other, not the copy that answers hits (attacker trial)', async () => {
    const { store } = makeStore(); // maxVariants 4
    await store.put(lang('en'));
    await hit(store, 'en');
    await store.put(lang('de'));
    for (let i = 0; i < 10; i++) await store.put(lang(`x${i}`));
    expect(await variantsOf(store)).toEqual(['en', 'x7', 'x8', 'x9']);
  });

  it('the variant with fewer hits goes first, the oldest among equals; the newest always joins', async () => {
    const { store } = makeStore();
    for (const v of ['a', 'b', 'c', 'd']) await store.put(lang(v));
    for (const [v, n] of [['a', 3], ['b', 1], ['c', 2], ['d', 1]] as const) for (let i = 0; i < n; i++) await hit(store, v);
    await store.put(lang('e'));
    expect(await variantsOf(store)).toEqual(['a', 'c', 'd', 'e']); // b and d tied at 1: b is older
    await store.put(lang('f'));
    expect(await variantsOf(store)).toEqual(['a', 'c', 'd', 'f']); // e, no longer the newest, has no hit: it goes before d
  });

  it('a refresh, a soft purge and a copy from another tier keep the hits of the copy they replace', async () => {
    const { store, clock } = makeStore();
    await store.put(lang('en'));
    await hit(store, 'en');
    await store.put(lang('en', { responseTime: T0 + 1 })); // the refresh
    await store.purge({ kind: 'key', key }, 'soft', clock.now()); // the soft purge
    store.fill(key, ((await store.get(key)) ?? []).map((e) => ({ ...e }))); // L2's copy: new objects
    for (let i = 0; i < 6; i++) await store.put(lang(`x${i}`));
    expect(await variantsOf(store)).toEqual(['en', 'x3', 'x4', 'x5']);
  });
});

describe('MemoryStore events', () => {
  it('reports miss, set, hit in order', async () => {
    const { store, events } = makeStore();
    await store.get('k');
    await store.put(sized('k', 10));
    await store.get('k');
    expect(events).toEqual(['miss', 'set', 'hit']);
  });

  it('a purge is not reported as a set', async () => {
    const { store, events } = makeStore();
    await store.put(sized('k', 10, { variantKey: 'a', vary: ['x'], tags: ['t'] }));
    await store.put(sized('k', 10, { variantKey: 'b', vary: ['x'] }));
    events.length = 0;
    expect(await store.purge({ kind: 'tag', tag: 't' }, 'hard', T0)).toBe(1);
    expect(events).toEqual([]);
  });
});

describe('MemoryStore expiry by the injected clock', () => {
  it('drops the record once the clock passes its deleteAt and stops counting it', async () => {
    const { store, clock } = makeStore();
    await store.put(sized('k', 10, { deleteAt: T0 + 1_000 }));
    clock.advance(1_001);
    expect(await store.get('k')).toBeUndefined();
    expect(store.stats().entries).toBe(0);
  });

  it('a soft purge keeps the record until its original deleteAt', async () => {
    const { store, clock } = makeStore();
    await store.put(sized('k', 10, { deleteAt: T0 + 1_000 }));
    await store.purge({ kind: 'key', key: 'k' }, 'soft', T0 + 500);
    clock.advance(999);
    expect((await store.get('k'))?.[0]?.invalidatedAt).toBe(T0 + 500);
    clock.advance(1);
    expect(await store.get('k')).toBeUndefined();
  });
});

describe('MemoryStore tag index', () => {
  it('forgets evicted records: a tag purge counts only what is still held', async () => {
    const one = entrySizeOf(sized('k0', 10_000, { tags: ['t'] }));
    const { store } = makeStore({ maxBytes: one * 2 + 10 });
    for (const k of ['k0', 'k1', 'k2']) await store.put(sized(k, 10_000, { tags: ['t'] }));
    expect(await store.purge({ kind: 'tag', tag: 't' }, 'hard', T0)).toBe(2);
  });

  it('follows a record whose tags changed on replace', async () => {
    const { store } = makeStore();
    await store.put(sized('k', 10, { tags: ['old'] }));
    await store.put(sized('k', 10, { tags: ['new'] }));
    expect(await store.purge({ kind: 'tag', tag: 'old' }, 'hard', T0)).toBe(0);
    expect(await store.purge({ kind: 'tag', tag: 'new' }, 'hard', T0)).toBe(1);
  });
});

describe('MemoryStore.fill (from L2)', () => {
  it('replaces the record, leaving out expired, foreign-key and oversized variants', async () => {
    const { store } = makeStore({ maxObjectBytes: 5_000 });
    await store.put(sized('k', 10, { variantKey: 'local', vary: ['x'] }));
    store.fill('k', [
      sized('k', 10, { variantKey: 'a', vary: ['x'] }),
      sized('k', 10, { variantKey: 'expired', vary: ['x'], deleteAt: T0 }),
      sized('other', 10, { variantKey: 'foreign', vary: ['x'] }),
      sized('k', 6_000, { variantKey: 'huge', vary: ['x'] }),
    ]);
    expect((await store.get('k'))?.map((e) => e.variantKey)).toEqual(['a']);
  });
});

describe('MemoryStore synchronous hit path', () => {
  it('peekHit returns what get would on a hit, and nothing (no miss counted) on a miss', async () => {
    const events: StoreEvent[] = [];
    const clock = new ManualClock(1_700_000_000_000);
    const store = new MemoryStore({ maxBytes: 1 << 20, maxObjectBytes: 1 << 16, maxVariants: 4, clock, onEvent: (e) => events.push(e) });
    const entry = makeEntry({ key: 'k' });
    await store.put(entry);
    events.length = 0;
    expect(store.peekHit('k')).toEqual(await store.get('k'));
    expect(store.peekHit('absent')).toBeUndefined();
    expect(events.map((e) => e.kind)).toEqual(['hit', 'hit']);
  });
});

describe('MemoryStore version (held variants, CacheStore.version)', () => {
  it('changes on every write, delete, purge, eviction and expiry, and not on lookups', async () => {
    const { store, clock } = makeStore({ maxBytes: 3 * entrySizeOf(sized('x', 100)) });
    const changedBy = async (step: () => unknown) => {
      const before = store.version;
      await step();
      return store.version !== before;
    };
    expect(await changedBy(() => store.put(sized('a', 100)))).toBe(true);
    expect(await changedBy(() => store.peekHit('a'))).toBe(false);
    expect(await changedBy(() => store.get('a'))).toBe(false);
    expect(await changedBy(() => store.get('absent'))).toBe(false);
    expect(await changedBy(() => store.put(sized('a', 100, { variantKey: 'v2' })))).toBe(true); // replace
    expect(await changedBy(() => store.purge({ kind: 'key', key: 'a' }, 'soft', clock.now()))).toBe(true); // in place
    expect(await changedBy(() => store.delete('a'))).toBe(true);
    await store.put(sized('b', 100));
    await store.put(sized('c', 100));
    await store.put(sized('d', 100));
    expect(await changedBy(() => store.put(sized('e', 100)))).toBe(true); // evicts b
    expect(store.peekHit('b')).toBeUndefined();
    const live = sized('f', 100);
    await store.put(live);
    clock.set(live.deleteAt + 1);
    expect(await changedBy(() => store.peekHit('f'))).toBe(true); // found expired: dropped
  });

  it('noteHeldHit counts a hit exactly as a lookup that found the key does', async () => {
    const { store, events } = makeStore();
    await store.put(sized('k', 10));
    events.length = 0;
    store.peekHit('k');
    store.noteHeldHit();
    expect(events).toEqual(['hit', 'hit']);
  });
});

describe('MemoryStore counts stored encodings', () => {
  const withEncodings = (key: string, body: number, br: number, gzip: number) =>
    sized(key, body, { encodings: { br: Buffer.alloc(br, 2), gzip: Buffer.alloc(gzip, 3) } });

  it('weighs every encoding in the byte bound, and evicts accordingly', async () => {
    const plain = entrySizeOf(sized('e0', 10_000)); // same key length as every key below
    const heavy = withEncodings('e0', 10_000, 3_000, 4_000);
    expect(entrySizeOf(heavy)).toBe(plain + 7_000);
    // Room for four identity-only entries, but only two with their encodings.
    const { store, events } = makeStore({ maxBytes: plain * 4 + 10 });
    for (const k of ['e0', 'e1']) await store.put(withEncodings(k, 10_000, 3_000, 4_000));
    expect(store.stats()).toEqual({ entries: 2, bytes: (plain + 7_000) * 2 });
    await store.put(withEncodings('e2', 10_000, 3_000, 4_000));
    expect(events.filter((k) => k === 'eviction')).toHaveLength(1);
    expect(await store.get('e0')).toBeUndefined();
    expect(store.stats()).toEqual({ entries: 2, bytes: (plain + 7_000) * 2 });
    const kept = (await store.get('e2'))![0]!;
    expect(kept.encodings!.br!.length).toBe(3_000);
  });

  it('bounds maxObjectBytes by the identity object: encodings never make it too large to store', async () => {
    const { store } = makeStore({ maxObjectBytes: 12_000 });
    await store.put(withEncodings('k', 10_000, 3_000, 4_000));
    expect((await store.get('k'))?.[0]?.encodings?.gzip?.length).toBe(4_000);
  });

  it('keeps a lone variant that only fits without its encodings, identity only', async () => {
    const plain = entrySizeOf(sized('k', 10_000));
    const { store } = makeStore({ maxBytes: plain + 1_000, maxObjectBytes: 64 * 1024 });
    await store.put(withEncodings('k', 10_000, 3_000, 4_000));
    const [kept] = (await store.get('k'))!;
    expect(kept!.body.length).toBe(10_000);
    expect(kept!.encodings).toBeUndefined();
    expect(store.stats().bytes).toBe(plain);
  });
});

describe('MemoryStore.widenGrace (a reload that raised a route\'s graceSeconds)', () => {
  const grace = (graceMs: number, overridesMustRevalidate = false) => ({ graceMs, overridesMustRevalidate });
  it('widens the stale-if-error window and the lifetime of the copies under the prefix it is given a grace for, never narrows one, and leaves no-cache and must-revalidate copies unless grace overrides it', async () => {
    const { store, clock } = makeStore();
    // Stored at T0, stale at T0 + 60 s, kept to T0 + 120 s (60 s of grace).
    await store.put(makeEntry({ key: 's\u0000/page?', staleIfErrorMs: 60_000 }));
    await store.put(makeEntry({ key: 's\u0000/wide?', staleIfErrorMs: 7_200_000, deleteAt: T0 + 7_260_000 }));
    await store.put(makeEntry({ key: 's\u0000/revalidate?', mustRevalidate: true, deleteAt: T0 + 60_000 }));
    await store.put(makeEntry({ key: 's\u0000/override?', mustRevalidate: true, deleteAt: T0 + 60_000 }));
    await store.put(makeEntry({ key: 's\u0000/no-cache?', noCache: true, headers: { etag: '"x"' }, deleteAt: T0 + 60_000 }));
    await store.put(makeEntry({ key: 'other\u0000/page?', staleIfErrorMs: 60_000 }));
    // A micro-cached no-cache answer: stored without stale windows, whatever the grace.
    await store.put(makeEntry({ key: 's\u0000/micro?', headers: { 'cache-control': 'no-cache' }, freshnessMs: 2_000, deleteAt: T0 + 2_000 }));
    clock.advance(1_000);
    const asked: string[] = [];
    const widened = await store.widenGrace('s\u0000/', (key) => (asked.push(key), key.includes('override') ? grace(3_600_000, true) : grace(3_600_000)));
    expect(widened).toBe(2); // /page, /override
    expect(asked.sort()).toEqual(['s\u0000/micro?', 's\u0000/no-cache?', 's\u0000/override?', 's\u0000/page?', 's\u0000/revalidate?', 's\u0000/wide?']);
    expect((await store.get('s\u0000/micro?'))![0]!.deleteAt).toBe(T0 + 2_000);
    const [page] = (await store.get('s\u0000/page?'))!;
    expect([page!.staleIfErrorMs, page!.deleteAt]).toEqual([3_600_000, T0 + 3_660_000]);
    expect((await store.get('s\u0000/wide?'))![0]!.staleIfErrorMs).toBe(7_200_000);
    const [override] = (await store.get('s\u0000/override?'))!;
    expect([override!.staleIfErrorMs, override!.deleteAt]).toEqual([0, T0 + 3_660_000]);
    // Past their old lifetimes: the widened copies are still held, the others are not.
    clock.advance(1_099_000);
    expect(await store.get('s\u0000/page?')).toBeDefined();
    expect(await store.get('s\u0000/override?')).toBeDefined();
    expect(await store.get('s\u0000/revalidate?')).toBeUndefined();
    expect(await store.get('s\u0000/no-cache?')).toBeUndefined();
    expect(await store.get('other\u0000/page?')).toBeUndefined();
  });
});
