/**
 * CacheEntry: one stored response variant, with the times RFC 9111 needs to age it.
 * Owns the shape only; policy.ts decides what the times mean, entry-codec.ts serialises it,
 * stores/ keep it. Times are epoch milliseconds, durations carry `Ms`.
 */

import { parseCacheControl } from './cache-control.js';
import { encodedBytesOf, type EntryEncodings } from './content-coding.js';

/** Stored response headers: lowercase names; `set-cookie` may repeat (array). */
export type StoredHeaders = Record<string, string | string[]>;

export interface CacheEntry {
  /** Primary cache key (cache-key.ts): site, normalised URL, key template. */
  key: string;
  /**
   * Secondary key: the normalised values of the request headers named by `vary`
   * (RFC 9111 §4.1); '' when the response has no Vary.
   */
  variantKey: string;
  /** Lowercase header names from the response's Vary, sorted. Never '*' (never stored). */
  vary: string[];
  status: number;
  /** Hop-by-hop, CDN-Cache-Control and the targeted header already removed; no Age. */
  headers: StoredHeaders;
  body: Buffer;
  /**
   * Compression stored once (content-coding.ts): brotli and gzip encodings of `body`, made at
   * fill time; absent when none is stored. `headers` stay the origin's (identity) headers; the
   * answer's Content-Encoding, Content-Length, ETag and Vary are derived when it is sent.
   */
  encodings?: EntryEncodings;
  /** RFC 9111 §4.2.3 request_time: when the origin request was sent. */
  requestTime: number;
  /** RFC 9111 §4.2.3 response_time: when the response was received. */
  responseTime: number;
  /** RFC 9111 §4.2.3 corrected_initial_age, in ms, computed when stored. */
  initialAgeMs: number;
  /** Freshness lifetime in ms after route rules (floor, ceiling, default TTL, micro-cache). */
  freshnessMs: number;
  /** RFC 5861 stale-while-revalidate window in ms (header or route default). */
  staleWhileRevalidateMs: number;
  /** RFC 5861 stale-if-error window in ms (header), widened by the route's grace. */
  staleIfErrorMs: number;
  /** `no-cache` without field names: every use must be validated first (RFC 9111 §5.2.2.4). */
  noCache: boolean;
  /** `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale (§5.2.2.2, §5.2.2.8, §5.2.2.10). */
  mustRevalidate: boolean;
  /** Surrogate-Key / Cache-Tag values, for purge by tag. */
  tags: string[];
  /** Set by a soft purge: the entry counts as stale from this moment. */
  invalidatedAt?: number;
  /**
   * The origin gave this copy for everyone (isSharedByOrigin): addressed to shared caches
   * (`public`, `s-maxage`, a targeted field). Decided when stored, from
   * the directives that governed it (the targeted fields are not kept); absent on records
   * written before it existed, which are judged by their stored headers.
   */
  sharedByOrigin?: boolean;
  /** When a store may drop it: the end of its longest stale window. */
  deleteAt: number;
}

/**
 * No freshness and no validator (the origin sent no cache headers, or `max-age=0` without
 * ETag or Last-Modified): RFC 9111 never reuses such a copy; it is kept only for the crowd.
 */
export function isNeverFresh(entry: Pick<CacheEntry, 'freshnessMs' | 'headers'>): boolean {
  return entry.freshnessMs <= 0 && entry.headers['etag'] === undefined && entry.headers['last-modified'] === undefined;
}

/**
 * The origin gave this copy for everyone: it addressed it to shared caches (`public`,
 * `s-maxage`, a targeted field), as RFC 9111 §3.5 asks of an answer to `Authorization`.
 * Otherwise (a `max-age`, a validator only, a heuristic lifetime, a route's lifetime or floor)
 * a copy made by a fill that carried a header naming who asks (`X-User-Token`) may be that
 * client's own (fill.ts, context.ts selectVariant).
 */
export function isSharedByOrigin(entry: Pick<CacheEntry, 'headers' | 'sharedByOrigin'>): boolean {
  if (entry.sharedByOrigin !== undefined) return entry.sharedByOrigin;
  if (entry.headers['cdn-cache-control'] !== undefined) return true;
  const cc = entry.headers['cache-control'];
  if (cc === undefined) return false;
  const parsed = parseCacheControl(cc);
  return parsed.has('public') || parsed.has('s-maxage');
}

/** The moment the entry stops being fresh: response_time + lifetime - corrected_initial_age. */
export function staleAtOf(entry: CacheEntry): number {
  const natural = entry.responseTime + entry.freshnessMs - entry.initialAgeMs;
  return entry.invalidatedAt !== undefined ? Math.min(natural, entry.invalidatedAt) : natural;
}

/** RFC 9111 §4.2.3 current_age in ms. */
export function currentAgeMsOf(entry: CacheEntry, now: number): number {
  return entry.initialAgeMs + Math.max(0, now - entry.responseTime);
}

/**
 * What an entry costs in memory beyond identitySizeOf's text and its fixed 256 bytes: its
 * objects, arrays, numbers and the body's own ArrayBuffer in the V8 heap, and its node in the
 * LRU. Measured in a heap snapshot of 30 000 entries of a 40-byte answer: 1.5 KiB live each,
 * where 410 bytes were counted. One client asking for 580 000 distinct small pages filled the
 * "256 MiB" cache to 1.9 GB of RSS (attacker trial); on a small VM that is the OOM killer.
 */
export const ENTRY_HEAP_OVERHEAD_BYTES = 1152;

/**
 * Approximate memory footprint in bytes: body, every stored encoding, header text and fixed
 * overhead (ENTRY_HEAP_OVERHEAD_BYTES). The cache's byte bound (cache.maxBytes) counts this.
 */
export function entrySizeOf(entry: CacheEntry): number {
  return identitySizeOf(entry) + ENTRY_HEAP_OVERHEAD_BYTES + encodedBytesOf(entry.encodings);
}

/** entrySizeOf() without the stored encodings and the fixed overhead: the object as the origin sent it. */
function identitySizeOf(entry: CacheEntry): number {
  let size = entry.body.length + entry.key.length + entry.variantKey.length + 256;
  for (const [name, value] of Object.entries(entry.headers)) {
    if (Array.isArray(value)) for (const v of value) size += name.length + v.length + 4;
    else size += name.length + value.length + 4;
  }
  for (const tag of entry.tags) size += tag.length + 8;
  return size;
}
