/**
 * The in-process cache: an LRU (lru-cache 11) bounded in bytes, one record (all Vary variants of
 * a primary key) per LRU item.
 * Owns memory bounds, per-record expiry and purge over what this process holds; it does not
 * decide freshness (policy.ts) nor talk to other instances (redis-store.ts, redis-bus.ts).
 *
 * - Size: a record weighs the sum of `entrySizeOf` over its variants, stored encodings included
 *   (`maxSize` = cache.maxBytes); one variant whose identity body is longer than
 *   `maxObjectBytes` is not stored (the bound the fill reads, so a body it keeps is stored: one
 *   just under it with a long URL and headers was said stored and dropped here, and each of its
 *   crowd's requests went to the origin; attacker trial); a record heavier than maxBytes drops
 *   its oldest variants until it fits.
 * - Expiry: the LRU item lives until the latest `deleteAt` of its variants (lru-cache `ttl` per
 *   set, driven by the injected clock through lru-cache's `perf` option); each get also drops
 *   variants whose own deleteAt has passed, by the same clock.
 * - Large records (over maxBytes / LARGE_RECORD_DIVISOR and 1 MiB) share at most maxBytes /
 *   LARGE_SHARE_DIVISOR between them, least recently used evicted first among themselves: a
 *   client asking for many distinct large objects (one 8 MiB asset under 32 query strings
 *   filled the default 256 MiB) evicts other large objects, not the hot pages. The LRU's own
 *   byte bound still applies to everything.
 * - Unread records first: a record nobody has read since it was stored (a fill's own answer
 *   does not read it) is evicted before any record that was, least recently stored first, once
 *   the cache is full (`unread`, kept in step with the LRU like `large`). A client asking for
 *   one 735 KB file under ever new query strings flushed all 100 stored pages of a site in
 *   10 s (attacker trial): such one-off fills now push out each other, and the pages read
 *   since they were stored stay. (Segmented LRU's probation, without a fixed share: unread
 *   records may fill the whole cache when nothing else wants the room.) A record filled from
 *   another tier (fill()) was asked for, so it counts as read.
 * - Purge by tag: a tag -> keys index kept in step with the LRU through `dispose`, so a tag purge
 *   touches only the records carrying the tag. Its cost is one Set entry per (tag, record), bounded
 *   by the LRU itself. Purge by prefix and `all` scan the keys: O(records), acceptable for a
 *   memory store of a few hundred MB (documented limitation).
 */
import { LRUCache } from 'lru-cache';
import { systemClock, type Clock } from '../../clock.js';
import { entrySizeOf, type CacheEntry } from '../entry.js';
import {
  assertPositiveInt,
  computePurge,
  computeRecordDeleteAt,
  carryVariantHits,
  computeRecordWith,
  dropVariant,
  isLiveAt,
  isUnderPrefix,
  widenedGrace,
  type CacheStore,
  type GraceWidening,
  type PurgeMode,
  type PurgeSelector,
  type StoreEvent,
  type StoreEventHook,
} from './cache-store.js';

export interface MemoryStoreOptions {
  /** cache.maxBytes: the LRU's byte bound. */
  maxBytes: number;
  /** cache.maxObjectBytes: a single variant larger than this is not stored. */
  maxObjectBytes: number;
  /** cache.maxVariants: most Vary variants kept per primary key. */
  maxVariants: number;
  clock?: Clock;
  onEvent?: StoreEventHook;
  name?: string;
  /**
   * fill() (a record from elsewhere: another instance's, through Redis) replaces a variant this
   * store holds: `next`, a fresh copy not yet frozen, may take over what the request path kept
   * on `previous` (its read counts, server/stale.ts carryHeat).
   */
  carryOver?: (previous: CacheEntry, next: CacheEntry, now: number) => void;
}

type StoredRecord = CacheEntry[];

/** A record heavier than maxBytes / this, and than LARGE_RECORD_MIN_BYTES, is a large one (4 MiB of the default 256 MiB). */
export const LARGE_RECORD_DIVISOR = 64;
export const LARGE_RECORD_MIN_BYTES = 1024 * 1024;
/** Large records together hold at most maxBytes / this (64 MiB of the default 256 MiB). */
export const LARGE_SHARE_DIVISOR = 4;

/** Records widenGrace goes through between turns of the event loop. */
const WIDEN_BATCH = 1_000;

/** Shared event objects: a lookup reports without allocating. */
const HIT: StoreEvent = Object.freeze({ kind: 'hit', tier: 'memory' });
const MISS: StoreEvent = Object.freeze({ kind: 'miss', tier: 'memory' });

export class MemoryStore implements CacheStore {
  readonly name: string;
  private readonly lru: LRUCache<string, StoredRecord>;
  private readonly clock: Clock;
  private readonly onEvent: StoreEventHook | undefined;
  private readonly carryOver: MemoryStoreOptions['carryOver'];
  private readonly maxBytes: number;
  private maxObjectBytes: number;
  private maxVariants: number;
  /** The clock reading of the lookup under way, lent to lru-cache's TTL check (one read per lookup). */
  private lookupNow: number | undefined;
  /** CacheStore.version: bumped by every write, purge and removal (dispose covers removals). */
  private changes = 0;
  /** tag -> primary keys whose record has at least one variant with that tag. */
  private readonly keysByTag = new Map<string, Set<string>>();
  private readonly largeRecordBytes: number;
  private readonly largeShareBytes: number;
  /** Large records: key -> size, least recently used first (see the module comment). */
  private readonly large = new Map<string, number>();
  private largeBytes = 0;
  /** Records not read since stored: key -> size, least recently stored first (see the module comment). */
  private readonly unread = new Map<string, number>();

  /**
   * cache.maxObjectBytes and cache.maxVariants, live: a raise by reload used to leave the store
   * on the values read at start, so fills of the larger answers said `stored` and none was
   * ever a hit (new-user trial). After a cut, larger copies stored already are still answered
   * until they expire (the request path reads records as stored).
   */
  setLimits(limits: { maxObjectBytes: number; maxVariants: number }): void {
    assertPositiveInt('maxObjectBytes', limits.maxObjectBytes);
    assertPositiveInt('maxVariants', limits.maxVariants);
    this.maxObjectBytes = limits.maxObjectBytes;
    this.maxVariants = limits.maxVariants;
  }

  constructor(options: MemoryStoreOptions) {
    assertPositiveInt('maxBytes', options.maxBytes);
    assertPositiveInt('maxObjectBytes', options.maxObjectBytes);
    assertPositiveInt('maxVariants', options.maxVariants);
    this.name = options.name ?? 'memory';
    this.clock = options.clock ?? systemClock;
    this.onEvent = options.onEvent;
    this.carryOver = options.carryOver;
    this.maxBytes = options.maxBytes;
    this.maxObjectBytes = options.maxObjectBytes;
    this.maxVariants = options.maxVariants;
    this.largeRecordBytes = Math.max(LARGE_RECORD_MIN_BYTES, Math.floor(options.maxBytes / LARGE_RECORD_DIVISOR));
    this.largeShareBytes = Math.max(1, Math.floor(options.maxBytes / LARGE_SHARE_DIVISOR));
    const clock = this.clock;
    this.lru = new LRUCache<string, StoredRecord>({
      maxSize: options.maxBytes,
      sizeCalculation: (record) => Math.max(1, recordSizeOf(record)),
      // Time from the injected clock; ttlResolution 0 so a ManualClock step is seen at once.
      perf: { now: () => this.lookupNow ?? clock.now() },
      ttlResolution: 0,
      dispose: (record, key, reason) => {
        this.changes++;
        this.unindex(key, record);
        const size = this.large.get(key);
        if (size !== undefined) {
          this.large.delete(key);
          this.largeBytes -= size;
        }
        // Not on a 'set': write() has already said whether the record replacing it is read.
        if (reason !== 'set') this.unread.delete(key);
        if (reason === 'evict') this.onEvent?.({ kind: 'eviction', tier: 'memory' });
      },
    });
  }

  peekHit(key: string, now?: number): readonly CacheEntry[] | undefined {
    const entries = this.read(key, now ?? this.clock.now());
    if (entries) this.onEvent?.(HIT);
    return entries;
  }

  get version(): number {
    return this.changes;
  }

  noteHeldHit(): void {
    this.onEvent?.(HIT);
  }

  async get(key: string): Promise<readonly CacheEntry[] | undefined> {
    const entries = this.read(key, this.clock.now());
    this.onEvent?.(entries ? HIT : MISS);
    return entries;
  }

  async put(entry: CacheEntry): Promise<void> {
    const now = this.clock.now();
    if (entry.body.length > this.maxObjectBytes || !isLiveAt(entry, now)) {
      this.onEvent?.({ kind: 'skip', tier: 'memory' });
      return;
    }
    const current = this.lru.peek(entry.key);
    const next = computeRecordWith(current, Object.freeze({ ...entry }), this.maxVariants, now);
    this.write(entry.key, next, now);
  }

  /**
   * Replace the whole record for `key` (the tiered store filling L1 from L2). Variants past
   * deleteAt or over maxObjectBytes are left out; at most maxVariants, newest kept.
   */
  fill(key: string, entries: readonly CacheEntry[]): void {
    const now = this.clock.now();
    const previous = this.lru.peek(key, { allowStale: true });
    const usable = entries
      .filter((e) => e.key === key && isLiveAt(e, now) && e.body.length <= this.maxObjectBytes)
      .map((e) => {
        const copy = { ...e };
        const before = previous?.find((p) => p.variantKey === e.variantKey);
        if (before !== undefined) this.carryOver?.(before, copy, now);
        const frozen = Object.freeze(copy);
        if (before !== undefined) carryVariantHits(before, frozen);
        return frozen;
      });
    const record = usable.slice(Math.max(0, usable.length - this.maxVariants));
    if (record.length === 0) return;
    this.write(key, record, now, true, true);
  }

  async delete(key: string): Promise<boolean> {
    return this.lru.delete(key);
  }

  async purge(selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number): Promise<number> {
    let affected = 0;
    this.changes++;
    for (const key of this.candidateKeys(selector)) {
      const record = this.lru.peek(key);
      if (!record) continue;
      const result = computePurge(record, selector, mode, now, storedBefore);
      if (result.affected === 0) continue;
      affected += result.affected;
      if (result.kept.length === 0) this.lru.delete(key);
      else if (result.kept.length === record.length) {
        // Soft purge: same variants, same size. Swap in place so recency and TTL stay as they were.
        for (let i = 0; i < record.length; i++) record[i] = result.kept[i]!;
      } else this.write(key, result.kept, this.clock.now(), false);
    }
    return affected;
  }

  /**
   * CacheStore.widenGrace. Each widened variant is swapped into its record in place (as a soft
   * purge does: same size, same index entries) and the record's lifetime set again, which makes
   * it the most recently used: least recently used first, so the records widened keep their
   * order among themselves. A turn of the event loop is given back every WIDEN_BATCH records:
   * done in one go through the store's `write`, 100 000 records held the loop for 2.4 s.
   */
  async widenGrace(prefix: string, graceFor: (key: string) => GraceWidening | undefined): Promise<number> {
    let widened = 0;
    let seen = 0;
    for (const key of [...this.lru.rkeys()]) {
      if (++seen % WIDEN_BATCH === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      if (!key.startsWith(prefix)) continue;
      const record = this.lru.peek(key, { allowStale: true });
      const grace = record && graceFor(key);
      if (!record || !grace) continue;
      let changed = 0;
      for (let i = 0; i < record.length; i++) {
        const wider = widenedGrace(record[i]!, grace);
        if (wider === record[i]) continue;
        record[i] = wider;
        changed++;
      }
      if (changed === 0) continue;
      widened += changed;
      this.changes++;
      const ttlMs = Math.ceil(computeRecordDeleteAt(record) - this.clock.now());
      if (ttlMs > 0) this.lru.set(key, record, { ttl: ttlMs }); // the same record: no dispose, index kept
    }
    return widened;
  }

  /** Records held; a record past deleteAt counts until it is next touched or evicted. */
  stats(): { entries: number; bytes: number } {
    return { entries: this.lru.size, bytes: this.lru.calculatedSize };
  }

  async close(): Promise<void> {
    this.changes++;
    this.lru.clear();
    this.keysByTag.clear();
    this.large.clear();
    this.largeBytes = 0;
    this.unread.clear();
  }

  /**
   * Live variants, without emitting events. Entries are frozen when stored and handed out as
   * they are (no copy per hit): a soft purge or a 304 merge replaces an entry, never edits it.
   * The record array itself is handed out too; a soft purge that keeps every variant swaps the
   * invalidated copies into it in place, which a reader holding it may see (harmless: the
   * entries it held stay valid objects).
   */
  private read(key: string, now: number): readonly CacheEntry[] | undefined {
    this.lookupNow = now;
    let record: StoredRecord | undefined;
    try {
      record = this.lru.get(key);
    } finally {
      this.lookupNow = undefined;
    }
    if (!record) return undefined;
    const size = this.large.size > 0 ? this.large.get(key) : undefined;
    if (size !== undefined) {
      this.large.delete(key); // most recently used: to the end
      this.large.set(key, size);
    }
    if (this.unread.size > 0) this.unread.delete(key);
    let live = record;
    for (const e of record) {
      if (!isLiveAt(e, now)) {
        live = record.filter((v) => isLiveAt(v, now));
        break;
      }
    }
    if (live.length === 0) {
      this.lru.delete(key);
      return undefined;
    }
    return live === record ? record : live; // readonly to callers (CacheStore), so no copy
  }

  /** `read`: the record was asked for (filled from another tier), so it is not an unread one. */
  private write(key: string, record: StoredRecord, now: number, isNewData = true, read = false): void {
    this.changes++;
    // Drop variants (server errors first) until the record fits the whole cache (lru-cache refuses it otherwise).
    while (record.length > 1 && recordSizeOf(record) > this.maxBytes) dropVariant(record);
    // A lone variant too heavy only with its encodings is kept without them (identity still fits).
    const only = record[0];
    if (record.length === 1 && only?.encodings !== undefined && recordSizeOf(record) > this.maxBytes) {
      record[0] = Object.freeze({ ...only, encodings: undefined });
      carryVariantHits(only, record[0]);
    }
    // ttl = latest deleteAt − now, in whole ms (lru-cache wants a positive integer).
    const ttlMs = Math.ceil(computeRecordDeleteAt(record) - now);
    if (ttlMs <= 0) {
      this.lru.delete(key);
      this.onEvent?.({ kind: 'skip', tier: 'memory' });
      return;
    }
    // A new key is unread; a key already held keeps what it was (a revalidation or a refresh
    // of a page read since is not a one-off).
    const size = recordSizeOf(record);
    const held = this.lru.peek(key, { allowStale: true }) !== undefined;
    if (read) this.unread.delete(key);
    else if (!held || this.unread.has(key)) {
      this.unread.delete(key);
      this.unread.set(key, size);
    }
    this.evictUnreadFor(key, size, held);
    // dispose() of the previous record (reason 'set') runs inside set() and unindexes it first.
    this.lru.set(key, record, { ttl: ttlMs });
    if (this.lru.peek(key) !== record) {
      this.onEvent?.({ kind: 'skip', tier: 'memory' });
      return;
    }
    this.index(key, record);
    if (size > this.largeRecordBytes) this.holdLarge(key, size);
    if (isNewData) this.onEvent?.({ kind: 'set', tier: 'memory' });
  }

  /**
   * Room for `size` bytes under `key` taken from the unread records first, least recently
   * stored first (never `key` itself): lru-cache then evicts by recency only what is still
   * needed.
   */
  private evictUnreadFor(key: string, size: number, held: boolean): void {
    if (this.unread.size === 0) return;
    const previous = held ? recordSizeOf(this.lru.peek(key, { allowStale: true })!) : 0;
    let over = this.lru.calculatedSize - previous + Math.max(1, size) - this.maxBytes;
    for (const [oldest, bytes] of this.unread) {
      if (over <= 0) break;
      if (oldest === key) continue;
      const record = this.lru.peek(oldest, { allowStale: true });
      this.unread.delete(oldest);
      if (record === undefined) continue;
      over -= Math.max(1, bytes);
      this.lru.delete(oldest);
      this.onEvent?.({ kind: 'eviction', tier: 'memory' });
    }
  }

  /** Counts a large record, and evicts the least recently used others past their share. */
  private holdLarge(key: string, size: number): void {
    this.large.set(key, size);
    this.largeBytes += size;
    for (const [oldest] of this.large) {
      if (this.largeBytes <= this.largeShareBytes || oldest === key) break;
      this.lru.delete(oldest); // dispose() takes it out of `large`
      this.onEvent?.({ kind: 'eviction', tier: 'memory' });
    }
  }

  private candidateKeys(selector: PurgeSelector): string[] {
    switch (selector.kind) {
      case 'key':
        return [selector.key];
      case 'tag':
        return [...(this.keysByTag.get(selector.tag) ?? [])];
      case 'prefix':
        return [...this.lru.keys()].filter((k) => isUnderPrefix(k, selector));
      case 'all':
        return [...this.lru.keys()];
    }
  }

  private index(key: string, record: StoredRecord): void {
    for (const entry of record)
      for (const tag of entry.tags) {
        let keys = this.keysByTag.get(tag);
        if (!keys) this.keysByTag.set(tag, (keys = new Set()));
        keys.add(key);
      }
  }

  private unindex(key: string, record: StoredRecord): void {
    for (const entry of record)
      for (const tag of entry.tags) {
        const keys = this.keysByTag.get(tag);
        if (!keys) continue;
        keys.delete(key);
        if (keys.size === 0) this.keysByTag.delete(tag);
      }
  }
}

/** Bytes of a record: the sum of entrySizeOf over its variants. */
function recordSizeOf(record: readonly CacheEntry[]): number {
  let size = 0;
  for (const e of record) size += entrySizeOf(e);
  return size;
}
