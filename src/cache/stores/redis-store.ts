/**
 * The shared cache tier in Redis (ioredis), plus the Redis plumbing the other Redis users share:
 * the connection factory and the fail-open guard (a small circuit breaker).
 * Owns the key layout, the record encoding on the wire (entry-codec.ts) and failing open; it does
 * not decide freshness (policy.ts), hold the in-process tier (memory-store.ts), nor broadcast
 * purges (redis-bus.ts).
 *
 * Fail open. Redis is an optimisation: a request must never wait on it longer than one command
 * timeout, and never fail because of it.
 * - Connections use `enableOfflineQueue: false` and `maxRetriesPerRequest: 0`, so a command on a
 *   disconnected client rejects at once instead of queueing, and `commandTimeout` bounds a command
 *   on a connected but hung (paused, SIGSTOPped, overloaded) server.
 * - Every store method resolves: a failed get is a miss, a failed put/delete/purge a no-op.
 * - RedisGuard: `breakerFailures` failures in a row open the breaker; while open Redis is skipped
 *   entirely (no command sent) for `breakerOpenMs`, then exactly one probe is let through; its
 *   success closes the breaker. A client 'ready' event (ioredis reconnected) closes it at once.
 *   ioredis reconnects by itself (retryStrategy below, forever, at most 1 s apart).
 *
 * Key layout (all under `keyPrefix`):
 *   `${keyPrefix}e:${key}`  one record: every Vary variant of the primary key, encoded
 *                           (entry-codec.ts), expiring (PX) at the latest variant deleteAt
 *   `${keyPrefix}t:${tag}`  SET of primary keys with a variant carrying the tag; its expiry is
 *                           pushed to the longest expiry of its members on each put
 * Purge by tag reads the tag SET (no keyspace scan); members whose record is gone or no longer
 * carries the tag are removed then. Prefix and `all` purges SCAN with a glob MATCH whose special
 * characters are escaped. In Cluster mode SCAN runs on every master.
 *
 * Known limitations: put is read-modify-write (GET then SET): two instances storing different
 * variants of one key at the same moment may lose one of them (it is refetched later). Time for
 * expiry comes from the injected clock (PX relative to clock.now()), so instances with skewed
 * clocks disagree by their skew. A tag SET may hold members that expired, until the next purge
 * of that tag or its own expiry.
 */
import { createHash } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { systemClock, type Clock } from '../../clock.js';
import type { RedisConfig } from '../../config/schema.js';
import { decodeEntries, encodeEntries } from '../entry-codec.js';
import type { CacheEntry } from '../entry.js';
import {
  assertPositiveInt,
  computePurge,
  computeRecordDeleteAt,
  computeRecordWith,
  dropVariant,
  isLiveAt,
  type CacheStore,
  type PurgeMode,
  type PurgeSelector,
  type StoreEventHook,
} from './cache-store.js';

export type RedisClient = Redis | Cluster;

export interface RedisClientOptions {
  /** Shown in CLIENT LIST. */
  connectionName?: string;
  /** Connection-level errors (refused, reset, timeouts). Without it they are swallowed. */
  onError?: (err: Error) => void;
}

/** Reconnect forever, 100 ms × attempts, at most 1 s apart. */
function reconnectDelayMs(times: number): number {
  return Math.min(times * 100, 1_000);
}

/**
 * One ioredis connection from the config: Cluster when `cluster` seeds are given, else Sentinel
 * (`sentinels` + `sentinelName`), else standalone `url`. Always fail-fast options (see module doc)
 * and an 'error' listener (an EventEmitter 'error' without a listener would crash the process).
 */
export function createRedisClient(
  cfg: Pick<RedisConfig, 'url' | 'sentinels' | 'sentinelName' | 'cluster' | 'commandTimeoutMs' | 'connectTimeoutMs'>,
  options: RedisClientOptions = {},
): RedisClient {
  const failFast: RedisOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: cfg.commandTimeoutMs,
    connectTimeout: cfg.connectTimeoutMs,
    retryStrategy: reconnectDelayMs,
    keepAlive: 10_000,
    ...(options.connectionName ? { connectionName: options.connectionName } : {}),
  };
  let client: RedisClient;
  if (cfg.cluster && cfg.cluster.length > 0) {
    const seeds = cfg.cluster.map(parseSeed);
    const { enableOfflineQueue: _o, retryStrategy: _r, ...nodeOptions } = failFast;
    const auth = credentialsOf(cfg.cluster[0]!);
    client = new Cluster(seeds, {
      enableOfflineQueue: false,
      clusterRetryStrategy: reconnectDelayMs,
      redisOptions: { ...nodeOptions, ...auth },
    });
  } else if (cfg.sentinels && cfg.sentinels.length > 0) {
    if (!cfg.sentinelName) throw new TypeError('redis.sentinels needs redis.sentinelName');
    client = new Redis({
      ...failFast,
      sentinels: cfg.sentinels.map((s) => ({ host: s.host, port: s.port })),
      name: cfg.sentinelName,
      sentinelRetryStrategy: reconnectDelayMs,
      // Follow +switch-master at once; otherwise writes and purges go to the demoted master
      // for the seconds until Sentinel drops its clients.
      failoverDetector: true,
      // The url's credentials, and its database (`/N` or `?db=N`): ignored before, every
      // Sentinel deployment shared database 0 whatever its url said (review).
      ...(cfg.url ? { ...credentialsOf(cfg.url), ...databaseOf(cfg.url) } : {}),
    });
  } else if (cfg.url) {
    client = new Redis(cfg.url, failFast);
  } else {
    throw new TypeError('redis needs url, sentinels or cluster');
  }
  client.on('error', (err: Error) => options.onError?.(err));
  return client;
}

function parseSeed(seed: string): { host: string; port: number } {
  const url = new URL(/^[a-z]+:\/\//i.test(seed) ? seed : `redis://${seed}`);
  return { host: url.hostname, port: url.port ? Number(url.port) : 6379 };
}

function credentialsOf(urlText: string): { username?: string; password?: string } {
  try {
    const url = new URL(urlText);
    return {
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    };
  } catch {
    return {};
  }
}

/** The database a redis:// url names (`/N`, else `?db=N`), as ioredis reads a standalone url; none when it names none. */
export function databaseOf(urlText: string): { db?: number } {
  try {
    const url = new URL(urlText);
    const path = /^\/(\d+)$/.exec(url.pathname)?.[1];
    const text = path ?? url.searchParams.get('db') ?? undefined;
    const db = text === undefined || !/^\d+$/.test(text) ? undefined : Number(text);
    return db === undefined ? {} : { db };
  } catch {
    return {};
  }
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface RedisGuardOptions {
  breakerFailures: number;
  breakerOpenMs: number;
  clock?: Clock;
  /** A command Redis refused or did not answer in time (the owner logs it: an OOM under noeviction, a read-only replica, a hung server). */
  onCommandError?: (error: unknown) => void;
  /** The breaker opened (true) or closed again (false): the owner says Redis is skipped, then back. */
  onBreaker?: (open: boolean) => void;
}

export type GuardResult<T> =
  | { ok: true; value: T }
  | { ok: false; reason: 'breaker-open' | 'not-ready' | 'error'; error?: unknown };

/**
 * Fail-open runner with a consecutive-failure breaker. Share one per client: the store, the bus
 * publisher and the fill lock then learn together that Redis is down.
 */
export class RedisGuard {
  private failures = 0;
  private openUntil = 0;
  private isOpen = false;
  private isProbing = false;
  private readonly clock: Clock;
  private readonly breakerFailures: number;
  private readonly breakerOpenMs: number;
  private readonly onCommandError: ((error: unknown) => void) | undefined;
  private readonly onBreaker: ((open: boolean) => void) | undefined;
  /** The client's command timeout, ms (ioredis `commandTimeout`), if it has one. */
  private readonly commandTimeoutMs: number | undefined;

  constructor(
    readonly client: RedisClient,
    options: RedisGuardOptions,
  ) {
    assertPositiveInt('breakerFailures', options.breakerFailures);
    if (!(options.breakerOpenMs > 0)) throw new RangeError(`breakerOpenMs must be positive, got ${options.breakerOpenMs}`);
    this.breakerFailures = options.breakerFailures;
    this.breakerOpenMs = options.breakerOpenMs;
    this.clock = options.clock ?? systemClock;
    this.onCommandError = options.onCommandError;
    this.onBreaker = options.onBreaker;
    this.commandTimeoutMs = (client as { options?: { commandTimeout?: number } }).options?.commandTimeout;
    // A fresh connection is the best probe there is.
    client.on('ready', () => this.close());
  }

  get state(): BreakerState {
    if (!this.isOpen) return 'closed';
    return this.clock.now() >= this.openUntil ? 'half-open' : 'open';
  }

  /** Is the client connected and the breaker letting commands through (without taking the probe)? */
  isAvailable(): boolean {
    return this.client.status === 'ready' && this.state === 'closed';
  }

  /** Run one operation; never rejects. */
  async run<T>(op: (client: RedisClient) => Promise<T>): Promise<GuardResult<T>> {
    if (!this.tryEnter()) return { ok: false, reason: 'breaker-open' };
    if (this.client.status !== 'ready') {
      // Would reject at once anyway (no offline queue); count it so the breaker opens.
      this.recordFailure();
      return { ok: false, reason: 'not-ready' };
    }
    const startedAt = performance.now();
    try {
      const value = await op(this.client);
      this.close();
      return { ok: true, value };
    } catch (error) {
      // A command timeout means Redis is hung or overloaded: open at once, so no request waits
      // more than one commandTimeout for Redis (other errors answer fast and are counted).
      // Unless the timeout itself came late (over LATE_TIMEOUT_FACTOR times its time): this
      // process's event loop was busy, as in a crowd's first second, and Redis's reply may
      // have sat unread behind the timer. That counts as one failure, toward breakerFailures:
      // opened at once, every instance skipped Redis and fetched each page itself (fleet
      // trial: 11 origin requests for 5 pages while Redis was idle).
      const timeout = isTimeout(error);
      const late = timeout && this.commandTimeoutMs !== undefined && performance.now() - startedAt > LATE_TIMEOUT_FACTOR * this.commandTimeoutMs;
      this.recordFailure(timeout && !late);
      this.onCommandError?.(error);
      return { ok: false, reason: 'error', error };
    }
  }

  private tryEnter(): boolean {
    if (!this.isOpen) return true;
    if (this.clock.now() < this.openUntil || this.isProbing) return false;
    this.isProbing = true; // half-open: this caller is the one probe
    return true;
  }

  private recordFailure(openNow = false): void {
    this.failures++;
    if (openNow || this.isProbing || this.failures >= this.breakerFailures) {
      const wasOpen = this.isOpen;
      this.isOpen = true;
      this.isProbing = false;
      this.openUntil = this.clock.now() + this.breakerOpenMs;
      if (!wasOpen) this.onBreaker?.(true);
    }
  }

  private close(): void {
    const wasOpen = this.isOpen;
    this.failures = 0;
    this.isOpen = false;
    this.isProbing = false;
    if (wasOpen) this.onBreaker?.(false);
  }
}

export interface RedisStoreOptions {
  guard: RedisGuard;
  /** redis.keyPrefix */
  keyPrefix: string;
  /** redis.maxEntryBytes: a record encoded larger than this is not written. */
  maxEntryBytes: number;
  /** cache.maxVariants */
  maxVariants: number;
  clock?: Clock;
  onEvent?: StoreEventHook;
  name?: string;
  /** close() disconnects the client (when the store created it). */
  ownsClient?: boolean;
}

const SCAN_COUNT = 500;

/**
 * SADD the member, then push the SET's expiry out to at least ARGV[2] ms (never shorten it).
 * PTTL is -1 on a SET that has just been created, so the first call always sets it.
 */
const TAG_ADD_LUA = `
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1`;

/**
 * SET the record (ARGV[2], PX ARGV[3]) only if it is still the one read: ARGV[1] is the SHA-1 of
 * the value read, '' when there was none. 1 when written, 0 when the record changed meanwhile.
 */
const CAS_SET_LUA = `
local cur = redis.call('GET', KEYS[1])
if cur then
  if redis.sha1hex(cur) ~= ARGV[1] then return 0 end
elseif ARGV[1] ~= '' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`;

/** Reads and merges a put tries before leaving a record that keeps changing to the next fill. */
const PUT_ATTEMPTS = 3;

export class RedisStore implements CacheStore {
  readonly name: string;
  private readonly guard: RedisGuard;
  private readonly keyPrefix: string;
  private readonly maxEntryBytes: number;
  private maxVariants: number;
  private readonly clock: Clock;
  private readonly onEvent: StoreEventHook | undefined;
  private readonly ownsClient: boolean;
  private lastStats = { entries: 0, bytes: 0 };

  /** cache.maxVariants, live (MemoryStore.setLimits). */
  setMaxVariants(maxVariants: number): void {
    assertPositiveInt('maxVariants', maxVariants);
    this.maxVariants = maxVariants;
  }

  constructor(options: RedisStoreOptions) {
    assertPositiveInt('maxEntryBytes', options.maxEntryBytes);
    assertPositiveInt('maxVariants', options.maxVariants);
    this.name = options.name ?? 'redis';
    this.guard = options.guard;
    this.keyPrefix = options.keyPrefix;
    this.maxEntryBytes = options.maxEntryBytes;
    this.maxVariants = options.maxVariants;
    this.clock = options.clock ?? systemClock;
    this.onEvent = options.onEvent;
    this.ownsClient = options.ownsClient ?? false;
  }

  /** A store with its own connection and guard, from the redis config section. */
  static fromConfig(
    cfg: RedisConfig,
    options: { maxVariants: number; clock?: Clock; onEvent?: StoreEventHook; onError?: (err: Error) => void },
  ): RedisStore {
    const client = createRedisClient(cfg, {
      connectionName: 'crowdgate-cache',
      ...(options.onError ? { onError: options.onError } : {}),
    });
    const guard = new RedisGuard(client, { ...cfg, ...(options.clock ? { clock: options.clock } : {}) });
    return new RedisStore({
      guard,
      keyPrefix: cfg.keyPrefix,
      maxEntryBytes: cfg.maxEntryBytes,
      maxVariants: options.maxVariants,
      ownsClient: true,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    });
  }

  /** The Redis key holding the record of a primary key. */
  recordKeyOf(key: string): string {
    return `${this.keyPrefix}e:${key}`;
  }

  private tagKeyOf(tag: string): string {
    return `${this.keyPrefix}t:${tag}`;
  }

  async get(key: string): Promise<readonly CacheEntry[] | undefined> {
    const result = await this.guard.run((c) => c.getBuffer(this.recordKeyOf(key)));
    if (!result.ok) {
      if (result.reason !== 'breaker-open') this.onEvent?.({ kind: 'error', tier: 'redis' });
      this.onEvent?.({ kind: 'miss', tier: 'redis' });
      return undefined;
    }
    const entries = this.liveEntriesOf(key, result.value);
    this.onEvent?.({ kind: entries ? 'hit' : 'miss', tier: 'redis' });
    return entries;
  }

  async put(entry: CacheEntry): Promise<void> {
    const now = this.clock.now();
    // Cheap pre-check before any round trip: the body alone already exceeds the bound.
    if (entry.body.length > this.maxEntryBytes || !isLiveAt(entry, now)) {
      this.onEvent?.({ kind: 'skip', tier: 'redis' });
      return;
    }
    const recordKey = this.recordKeyOf(entry.key);
    const result = await this.guard.run(async (c) => {
      // Read, merge, then write only if the record is still what was read (CAS_SET_LUA): another
      // instance's purge (or put) between the two would otherwise be overwritten, and the purged
      // variants come back for their whole lifetime (attacker trial: 6 times in 10). A record
      // that keeps changing under us is left to the next fill.
      for (let attempt = 0; attempt < PUT_ATTEMPTS; attempt++) {
        const raw = await c.getBuffer(recordKey);
        const outcome = await this.writeMerged(c, recordKey, raw, entry, now);
        if (outcome !== 'changed') return outcome;
      }
      return 'skip' as const;
    });
    if (!result.ok) {
      this.onEvent?.({ kind: result.reason === 'breaker-open' ? 'skip' : 'error', tier: 'redis' });
      return;
    }
    this.onEvent?.({ kind: result.value, tier: 'redis' });
  }

  /** put()'s merge of `entry` into the record read as `raw`, written only if the record is still `raw`. */
  private async writeMerged(c: RedisClient, recordKey: string, raw: Buffer | null, entry: CacheEntry, now: number): Promise<'set' | 'skip' | 'changed'> {
    const current = this.liveEntriesOf(entry.key, raw);
    const record = computeRecordWith(current, entry, this.maxVariants, now);
    let bytes = encodeEntries(record);
    // Stored encodings go first (every variant keeps its identity body), then the oldest
    // variants until the record fits maxEntryBytes; the newcomer alone may not.
    if (bytes.length > this.maxEntryBytes && record.some((e) => e.encodings !== undefined)) {
      for (let i = 0; i < record.length; i++) if (record[i]!.encodings !== undefined) record[i] = { ...record[i]!, encodings: undefined };
      bytes = encodeEntries(record);
    }
    while (bytes.length > this.maxEntryBytes && record.length > 1) {
      dropVariant(record);
      bytes = encodeEntries(record);
    }
    if (bytes.length > this.maxEntryBytes) return 'skip';
    // PX = latest deleteAt − now (ms), by the injected clock; the record cannot be past it here.
    const ttlMs = Math.ceil(computeRecordDeleteAt(record) - now);
    const seen = raw === null ? '' : createHash('sha1').update(raw).digest('hex');
    if ((await c.eval(CAS_SET_LUA, 1, recordKey, seen, bytes, ttlMs)) !== 1) return 'changed';
    const tags = new Set(record.flatMap((e) => e.tags));
    await Promise.all([...tags].map((tag) => c.eval(TAG_ADD_LUA, 1, this.tagKeyOf(tag), entry.key, ttlMs)));
    return 'set';
  }

  async delete(key: string): Promise<boolean> {
    const result = await this.guard.run((c) => c.del(this.recordKeyOf(key)));
    if (!result.ok) {
      if (result.reason !== 'breaker-open') this.onEvent?.({ kind: 'error', tier: 'redis' });
      return false;
    }
    return result.value > 0;
  }

  async purge(selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number): Promise<number> {
    return (await this.purgeChecked(selector, mode, now, storedBefore)).affected;
  }

  /** purge(), saying whether Redis took all of it (false: unavailable, or failed half-way). */
  async purgeChecked(selector: PurgeSelector, mode: PurgeMode, now: number, storedBefore?: number): Promise<{ affected: number; ok: boolean }> {
    let affected = 0; // counted as we go, so a failure half-way still reports what was done
    const result = await this.guard.run(async (c) => {
      if (selector.kind === 'key') {
        affected += await this.purgeRecord(c, selector.key, selector, mode, now, storedBefore);
        return;
      }
      if (selector.kind === 'tag') {
        const tagKey = this.tagKeyOf(selector.tag);
        const keys = await c.smembers(tagKey);
        const counts = await Promise.all(keys.map((k) => this.purgeRecord(c, k, selector, mode, now, storedBefore)));
        const gone: string[] = [];
        counts.forEach((n, i) => {
          affected += n;
          // Hard: the record no longer carries the tag. Zero: it expired or lost the tag earlier.
          // (A late purge, storedBefore, may leave newer copies with the tag: kept in the set.)
          if (storedBefore === undefined && (mode === 'hard' || n === 0)) gone.push(keys[i]!);
        });
        if (gone.length > 0) await c.srem(tagKey, ...gone);
        return;
      }
      const entryPrefix = `${this.keyPrefix}e:`;
      const pattern = `${escapeGlob(selector.kind === 'prefix' ? entryPrefix + selector.prefix : entryPrefix)}*`;
      await this.scanEach(c, pattern, async (redisKeys) => {
        const counts = await Promise.all(
          redisKeys.map((rk) => this.purgeRecord(c, rk.slice(entryPrefix.length), selector, mode, now, storedBefore)),
        );
        for (const n of counts) affected += n;
      });
      if (selector.kind === 'all' && mode === 'hard') {
        await this.scanEach(c, `${escapeGlob(`${this.keyPrefix}t:`)}*`, async (tagKeys) => {
          await Promise.all(tagKeys.map((tk) => c.del(tk)));
        });
      }
    });
    if (!result.ok && result.reason !== 'breaker-open') this.onEvent?.({ kind: 'error', tier: 'redis' });
    return { affected, ok: result.ok };
  }

  stats(): { entries: number; bytes: number } {
    return { ...this.lastStats };
  }

  /** SCAN the records (O(keys) — for the admin/status page, not the request path). */
  async refreshStats(): Promise<void> {
    let entries = 0;
    let bytes = 0;
    const result = await this.guard.run(async (c) => {
      await this.scanEach(c, `${escapeGlob(`${this.keyPrefix}e:`)}*`, async (keys) => {
        const lengths = await Promise.all(keys.map((k) => c.strlen(k)));
        entries += keys.length;
        for (const n of lengths) bytes += n;
      });
    });
    if (result.ok) this.lastStats = { entries, bytes };
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.guard.client.disconnect();
  }

  private liveEntriesOf(key: string, raw: Buffer | null): CacheEntry[] | undefined {
    if (!raw) return undefined;
    const now = this.clock.now();
    const live = decodeEntries(raw)?.filter((e) => e.key === key && isLiveAt(e, now));
    return live && live.length > 0 ? live : undefined;
  }

  /** Purge one record; the count of its variants affected. */
  private async purgeRecord(
    c: RedisClient,
    key: string,
    selector: PurgeSelector,
    mode: PurgeMode,
    now: number,
    storedBefore?: number,
  ): Promise<number> {
    const recordKey = this.recordKeyOf(key);
    const current = this.liveEntriesOf(key, await c.getBuffer(recordKey));
    if (!current) return 0;
    const { kept, affected } = computePurge(current, selector, mode, now, storedBefore);
    if (affected === 0) return 0;
    if (kept.length === 0) await c.del(recordKey);
    // KEEPTTL: a purge changes what the record says, never how long it may live.
    else await c.set(recordKey, encodeEntries(kept), 'KEEPTTL');
    return affected;
  }

  /** SCAN MATCH over every master (one node unless Cluster), batch by batch. */
  private async scanEach(c: RedisClient, pattern: string, onBatch: (keys: string[]) => Promise<void>): Promise<void> {
    const nodes: Redis[] = c instanceof Cluster ? c.nodes('master') : [c];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
        cursor = next;
        if (keys.length > 0) await onBatch(keys);
      } while (cursor !== '0');
    }
  }
}

/** A command timeout that fired more than this many times its time after the command left came late (RedisGuard.run). */
export const LATE_TIMEOUT_FACTOR = 2;

/** An ioredis command timeout (`Command timed out`). */
function isTimeout(error: unknown): boolean {
  return /timed? ?out/i.test(String((error as Error)?.message ?? ''));
}

/** Escape Redis glob specials (`* ? [ ] \`) so a prefix matches literally in SCAN MATCH. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (ch) => `\\${ch}`);
}
