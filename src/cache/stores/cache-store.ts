/**
 * The CacheStore contract every store keeps (memory, Redis, tiered), and the small pure helpers
 * they share: which variants a purge selector matches, how a purge changes a record, how a new
 * variant joins a record.
 * Owns the contract only; it does not decide what is cacheable or fresh (policy.ts), nor build
 * keys (cache-key.ts). One contract suite (test/contract/cache-store.contract.ts) runs against
 * every implementation.
 *
 * Vocabulary: a *record* is everything stored under one primary key (CacheEntry.key): one to
 * `maxVariants` *entries* (variants), told apart by `variantKey` (RFC 9111 §4.1).
 */
import { authorityOfKey } from '../cache-key.js';
import { parseCacheControl } from '../cache-control.js';
import { isSharedByOrigin, staleAtOf, type CacheEntry } from '../entry.js';
import { isIdentityHeaderName } from '../identity-headers.js';

export type PurgeSelector =
  | { kind: 'key'; key: string }
  /** Keys starting with `prefix`; with `authorities`, only those of these hosts (cache-key.ts makeAuthority). */
  | { kind: 'prefix'; prefix: string; authorities?: readonly string[] }
  | { kind: 'tag'; tag: string }
  | { kind: 'all' };

/** soft: set invalidatedAt = now (the entry turns stale and is revalidated by the next request); hard: delete. */
export type PurgeMode = 'soft' | 'hard';

export type StoreTier = 'memory' | 'redis';

/**
 * What a store reports for metrics.
 * - `hit` / `miss`: one per get (a failed or breaker-skipped get is a `miss`, preceded by
 *   `error` when a command actually failed);
 * - `set`: a record written; `skip`: a write not made (entry too large, already past deleteAt,
 *   or the Redis breaker open);
 * - `eviction`: a record dropped for room (memory) — not expiry, delete or purge;
 * - `error`: a backend command failed or timed out (the call still resolved).
 */
export type StoreEventKind = 'hit' | 'miss' | 'error' | 'eviction' | 'set' | 'skip';
export interface StoreEvent {
  kind: StoreEventKind;
  tier: StoreTier;
}
export type StoreEventHook = (e: StoreEvent) => void;

export interface CacheStore {
  readonly name: string;
  /**
   * All stored Vary variants for a primary key (CacheEntry.key), or undefined. Never rejects:
   * errors become a miss. Variants past their deleteAt are not returned.
   * The array and its entries are the store's own (entries are frozen copies of what was put):
   * read-only, hence `readonly`; a store may hand the same array to every reader.
   */
  get(key: string): Promise<readonly CacheEntry[] | undefined>;
  /**
   * Optional synchronous hit path: the variants when they are in memory right now, else
   * undefined — then call get(), which is definitive (and counts the miss). A hit found here
   * counts as a hit. `now` is the caller's current clock reading, when it has one (saves a read).
   */
  peekHit?(key: string, now?: number): readonly CacheEntry[] | undefined;
  /**
   * With peekHit: a number that changes whenever anything stored changes (a write, a purge, a
   * delete, an eviction or expiry). A caller holding what peekHit returned at version v may
   * answer from it again, without a lookup, while the version is still v; it then reports the
   * hit with noteHeldHit(). Such answers skip the lookup's recency update, so a holder should
   * look up again from time to time (the hit memo does every second).
   */
  readonly version?: number;
  /** Counts a hit answered from held variants (see version), as peekHit counts its own. */
  noteHeldHit?(): void;
  /**
   * Store one variant: replaces the variant with the same variantKey under entry.key, keeps the
   * others, at most maxVariants (dropVariant: the oldest server error first, then the oldest
   * copy kept for one asker, else the one read least).
   * Never rejects.
   */
  put(entry: CacheEntry): Promise<void>;
  /** Remove the whole record; true when something was removed. Never rejects. */
  delete(key: string): Promise<boolean>;
  /**
   * Count of entries (variants) affected. Never rejects (0 when the backend failed).
   * `storedBefore`: only entries whose responseTime is at most this (a purge applied late, after
   * newer copies may have been stored: those are the new page).
   */
  purge(selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number): Promise<number>;
  /**
   * Widens the grace of the copies held here under `prefix` for which `graceFor` gives one (a
   * reload raised their route's graceSeconds): see widenedGrace. Count of entries widened.
   * Optional: a store that does not hold copies in this process has none to widen.
   */
  widenGrace?(prefix: string, graceFor: (key: string) => GraceWidening | undefined): Promise<number>;
  /** entries: records (primary keys) held; bytes: their approximate size. Cheap, synchronous. */
  stats(): { entries: number; bytes: number };
  /** Bring stats() up to date where it is not tracked synchronously (Redis). Optional. */
  refreshStats?(): Promise<void>;
  close(): Promise<void>;
}

/** A primary key a prefix selector covers: by string prefix, and of one of its authorities when it names them. */
export function isUnderPrefix(key: string, selector: { prefix: string; authorities?: readonly string[] }): boolean {
  if (!key.startsWith(selector.prefix)) return false;
  if (selector.authorities === undefined) return true;
  const authority = authorityOfKey(key);
  return authority !== undefined && selector.authorities.includes(authority);
}

/** Does this entry fall under the selector? Prefix matches the primary key by string prefix. */
export function isSelectedBy(entry: CacheEntry, selector: PurgeSelector): boolean {
  switch (selector.kind) {
    case 'key':
      return entry.key === selector.key;
    case 'prefix':
      return isUnderPrefix(entry.key, selector);
    case 'tag':
      return entry.tags.includes(selector.tag);
    case 'all':
      return true;
  }
}

export interface PurgeResult {
  /** The record after the purge: unchanged entries and soft-purged copies. Empty: delete it. */
  kept: CacheEntry[];
  affected: number;
}

/**
 * Apply a purge to one record. Soft keeps the earliest invalidation (a second soft purge does
 * not make an already-invalidated entry look younger); hard drops the selected variants only.
 */
export function computePurge(
  record: readonly CacheEntry[],
  selector: PurgeSelector,
  mode: PurgeMode,
  now: number,
  storedBefore = Infinity,
): PurgeResult {
  const kept: CacheEntry[] = [];
  let affected = 0;
  for (const entry of record) {
    if (!isSelectedBy(entry, selector) || entry.responseTime > storedBefore) {
      kept.push(entry);
      continue;
    }
    affected++;
    if (mode === 'soft') {
      const invalidatedAt = entry.invalidatedAt === undefined ? now : Math.min(entry.invalidatedAt, now);
      const copy = Object.freeze({ ...entry, invalidatedAt });
      carryVariantHits(entry, copy);
      kept.push(copy);
    }
  }
  return { kept, affected };
}

/**
 * The record after `entry` joins it: same variantKey replaced, the newcomer last (newest),
 * variants past deleteAt dropped, then variants dropped (dropVariant) until at most
 * `maxVariants` remain.
 */
export function computeRecordWith(
  record: readonly CacheEntry[] | undefined,
  entry: CacheEntry,
  maxVariants: number,
  now: number,
): CacheEntry[] {
  const replaced = record?.find((e) => e.variantKey === entry.variantKey);
  if (replaced !== undefined) carryVariantHits(replaced, entry);
  const others = (record ?? []).filter((e) => e.variantKey !== entry.variantKey && isLiveAt(e, now));
  const next = [...others, entry];
  while (next.length > maxVariants) dropVariant(next);
  return next;
}

/**
 * Hits each stored variant answered in this process, by the object the store holds (a store
 * hands out its own frozen copies, so the object a hit was answered from is the stored one):
 * dropVariant gives up the variant read least. A refresh or revalidation of a variant takes
 * the count of the copy it replaces (computeRecordWith), so a page's common copy keeps its
 * place across its refreshes. Counted up to MAX_COUNTED_VARIANT_HITS; past it a hit writes
 * nothing. A record read back from Redis is new objects with no counts: there the oldest goes
 * first, as before.
 */
const variantHits = new WeakMap<CacheEntry, number>();

/** Past this many hits a variant's count stays (no write per hit): a flood must read each of its variants this often to tie. */
export const MAX_COUNTED_VARIANT_HITS = 1_000;

/** A request was answered from this stored variant (fresh hit). */
export function noteVariantHit(entry: CacheEntry): void {
  const hits = variantHits.get(entry) ?? 0;
  if (hits < MAX_COUNTED_VARIANT_HITS) variantHits.set(entry, hits + 1);
}

/** Hits counted for this stored variant (noteVariantHit), 0 when none. */
export function variantHitsOf(entry: CacheEntry): number {
  return variantHits.get(entry) ?? 0;
}

/** `to` replaces `from` in a store (a refresh, a copy made to freeze or purge it): it keeps from's hits. */
export function carryVariantHits(from: CacheEntry, to: CacheEntry): void {
  const hits = variantHits.get(from);
  if (hits !== undefined && from !== to) variantHits.set(to, Math.max(hits, variantHits.get(to) ?? 0));
}

/**
 * Drops one variant of a record to make room, never the newest (last): the oldest server
 * error first, then the oldest copy kept for one asker, else the variant that answered the
 * fewest hits (variantHitsOf), the oldest among equals. A stored 5xx never stands in for a
 * failed origin (stale.ts, standsInFor), a page's older variant may: during an outage a client
 * sent 17 values of a header the page varies on, each drew the origin's 503 (with a lifetime)
 * as a variant of its own, and the oldest-first rule dropped the stale copy every visitor was
 * being answered with (attacker trial). The same flood of made-up `Accept-Language` values
 * (each a 200 of its own under `Vary: Accept-Language`) pushed out the copy every English
 * reader was answered with, oldest first; each made-up value is read by nobody else, so it
 * goes before a copy that answers hits.
 */
export function dropVariant(record: CacheEntry[]): void {
  if (record.length < 2) return;
  let victim = -1;
  for (let i = 0; i < record.length - 1; i++)
    if (record[i]!.status >= 500) {
      victim = i;
      break;
    }
  // Then one user's own copy (isOwnVariant): anyone can send 16 values of X-User-Token, and
  // oldest-first, they pushed out the copy every other visitor was answered with (review).
  if (victim < 0)
    for (let i = 0; i < record.length - 1; i++)
      if (isOwnVariant(record[i]!)) {
        victim = i;
        break;
      }
  if (victim < 0) {
    victim = 0;
    for (let i = 1; i < record.length - 1; i++) if (variantHitsOf(record[i]!) < variantHitsOf(record[victim]!)) victim = i;
  }
  record.splice(victim, 1);
}

/**
 * A copy kept for one asker: its variant key holds a value of a header naming who asks
 * (identity-headers.ts), and the origin did not give it for everyone.
 */
export function isOwnVariant(entry: CacheEntry): boolean {
  if (entry.variantKey === '' || isSharedByOrigin(entry)) return false;
  for (const part of entry.variantKey.split('&')) {
    const eq = part.indexOf('=');
    if (eq > 0 && isIdentityHeaderName(safeDecode(part.slice(0, eq)))) return true;
  }
  return false;
}

/** A variant key's name part as the header name it encodes; '' for one that is not ours (a record from Redis is input). */
function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return '';
  }
}

/** Live until deleteAt (exclusive): at `deleteAt` a store no longer returns it. */
export function isLiveAt(entry: CacheEntry, now: number): boolean {
  return entry.deleteAt > now;
}

/** A route's grace as a reload made it: graceSeconds in ms, and graceOverridesMustRevalidate. */
export interface GraceWidening {
  graceMs: number;
  overridesMustRevalidate: boolean;
}

/**
 * The entry as if it had been stored under `grace`, when that is wider: its stale-if-error
 * window at least the grace (never for no-cache or must-revalidate copies, as at storage), and
 * its deleteAt at least that far past its stale moment (a must-revalidate copy's too when the
 * route lets grace override it, which evaluateEntry reads from the route). The entry itself
 * when nothing widens; never narrower.
 */
export function widenedGrace(entry: CacheEntry, grace: GraceWidening): CacheEntry {
  if (entry.noCache || (entry.mustRevalidate && !grace.overridesMustRevalidate)) return entry;
  // A micro-cached `no-cache` answer (stored `noCache: false`) is stored with no stale window
  // at all, whatever the grace (policy.ts): so it stays (review).
  if (parseCacheControl(entry.headers['cache-control']).fieldNames('no-cache')?.length === 0) return entry;
  const staleIfErrorMs = entry.mustRevalidate ? entry.staleIfErrorMs : Math.max(entry.staleIfErrorMs, grace.graceMs);
  const deleteAt = Math.max(entry.deleteAt, staleAtOf(entry) + grace.graceMs);
  if (staleIfErrorMs === entry.staleIfErrorMs && deleteAt === entry.deleteAt) return entry;
  const widened = Object.freeze({ ...entry, staleIfErrorMs, deleteAt });
  carryVariantHits(entry, widened);
  return widened;
}

/** The moment the last variant of a record may be dropped. */
export function computeRecordDeleteAt(record: readonly CacheEntry[]): number {
  let deleteAt = -Infinity;
  for (const e of record) if (e.deleteAt > deleteAt) deleteAt = e.deleteAt;
  return deleteAt;
}

/** Validate store options once, with messages that name the option. */
export function assertPositiveInt(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}
