/**
 * The Redis tier, built once from the `redis:` block (a restart-only key): one command
 * connection and one breaker (RedisGuard) shared by the L2 store, the bus publisher and the fill
 * lock (they learn together that Redis is down), and a second connection for the bus's
 * subscriber mode. What it gives the gateway:
 * - `store`: the process's memory store (L1) in front of Redis (L2), tiered-store.ts;
 * - `crossInstance`: collapsing across instances (collapse/cross-instance.ts), which copies
 *   another instance's fill from L2 into L1 before its waiters re-read;
 * - purges across instances: broadcastPurge() tells the others, and a purge they announce is
 *   applied to our L1 (their purge already covered L2);
 * - whenReady() before traffic, a heartbeat while running, close() at the end.
 *
 * It does not purge locally (gateway-store.ts purges the store, then broadcasts) nor decide
 * whether Redis is used at all (the config and the gateway's store override do).
 */
import type { Logger } from 'pino';
import type { Clock } from '../../clock.js';
import type { CollapseKey } from '../cache-key.js';
import type { RedisConfig } from '../../config/schema.js';
import { RedisCrossInstance, type CrossInstanceOutcome } from '../../collapse/cross-instance.js';
import { DistributedLock } from '../../collapse/distributed.js';
import { staleAtOf } from '../entry.js';
import { CLOCK_SKEW_MS } from '../purge-fence.js';
import type { PurgeMode, PurgeSelector, StoreEventHook } from './cache-store.js';
import type { MemoryStore } from './memory-store.js';
import { RedisBus } from './redis-bus.js';
import { createRedisClient, RedisGuard, RedisStore, type RedisClient } from './redis-store.js';
import { TieredStore } from './tiered-store.js';

export interface RedisTierOptions {
  config: RedisConfig;
  /** The memory store to put in front (L1). */
  l1: MemoryStore;
  /** cache.maxVariants */
  maxVariants: number;
  clock: Clock;
  logger: Logger;
  /** Store events of the L2 store (the L1 store reports its own). */
  onStoreEvent?: StoreEventHook;
  /** After each heartbeat PING: whether Redis is usable now (crowdgate_redis_up). */
  onHeartbeat?: (available: boolean) => void;
  /**
   * A purge another instance announced, after our L1 applied it: returns the selectors to apply
   * again to both tiers and announce once more (a fill of ours that stored between that purge
   * and its notice). Not asked for an announcement that is itself such a repeat.
   */
  onPurgeReceived?: (selector: PurgeSelector, mode: PurgeMode, at: number) => PurgeSelector[];
  /** How each fill asked across instances ended (crowdgate_redis_fills_total). */
  onCrossInstance?: (outcome: CrossInstanceOutcome) => void;
}

/** At most one warning for failed Redis commands per this many ms. */
export const COMMAND_ERROR_LOG_MS = 60_000;
/** Two readings of when Redis started (whole seconds of uptime, our clock) this close are one start (noteRedisStart). */
const REDIS_START_SLACK_MS = 2_000;

export class RedisTier {
  readonly config: RedisConfig;
  /** L1 (memory) in front of L2 (Redis). */
  readonly store: TieredStore;
  readonly crossInstance: RedisCrossInstance;
  /** The command connection; the ACME manager shares it (tls/acme-sites.ts) for certificates, lock and challenges. */
  readonly client: RedisClient;
  private readonly guard: RedisGuard;
  private readonly bus: RedisBus;
  /** The bus's origin-load side (origin/peer-load.ts). */
  get loadBus(): Pick<RedisBus, 'publishLoad' | 'onLoad'> {
    return this.bus;
  }
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly onHeartbeat: ((available: boolean) => void) | undefined;
  /** The heartbeat (see startHeartbeat). */
  private heartbeat?: NodeJS.Timeout;
  /** When Redis last started having loaded copies from disk, as noteRedisStart last saw it. */
  private loadedStartAt: number | undefined;

  constructor(opts: RedisTierOptions) {
    const cfg = opts.config;
    this.config = cfg;
    this.clock = opts.clock;
    this.logger = opts.logger;
    this.onHeartbeat = opts.onHeartbeat;
    // One warning when Redis stops being used (its connection failed, or the breaker opened on
    // commands that failed or timed out: a hung Redis keeps its connection), one line when it is
    // used again. Connection errors repeat on every reconnect attempt: only the first is said.
    // A hung Redis used to log only its command timeouts, and nothing when it answered again
    // (multi-instance trial).
    let isDown = false;
    const wentDown = (fields: Record<string, unknown>, msg: string) => {
      if (isDown) return;
      isDown = true;
      this.logger.warn(fields, msg);
    };
    const cameBack = () => {
      if (!isDown) return;
      isDown = false;
      this.logger.info('redis back: shared tier resumed');
    };
    this.client = createRedisClient(cfg, {
      connectionName: 'crowdgate',
      onError: (err) => wentDown({ err: err.message }, 'redis unavailable: serving from memory only until it is back'),
    });
    this.client.on('ready', () => {
      cameBack();
      void this.noteRedisStart();
    });
    // Commands Redis refuses while it stays connected (a full Redis under noeviction answers OOM
    // to every write, a replica after a failover READONLY) or leaves unanswered: once per
    // COMMAND_ERROR_LOG_MS, with how many since. Only counted before, so a Redis that had
    // stopped taking writes (nothing shared, every instance fetching alone) logged nothing and
    // crowdgate_redis_up stayed 1 (multi-instance trial).
    let lastLoggedAt = -Infinity;
    let unlogged = 0;
    const onCommandError = (error: unknown) => {
      unlogged++;
      const now = this.clock.now();
      if (now - lastLoggedAt < COMMAND_ERROR_LOG_MS) return;
      lastLoggedAt = now;
      this.logger.warn({ err: error instanceof Error ? error.message : String(error), errors: unlogged }, 'redis command failed: this page is not shared through Redis');
      unlogged = 0;
    };
    const onBreaker = (open: boolean) =>
      open
        ? wentDown({ breakerOpenMs: cfg.breakerOpenMs }, 'redis not answering: serving from memory only, one probe command per breakerOpenMs')
        : cameBack();
    this.guard = new RedisGuard(this.client, { breakerFailures: cfg.breakerFailures, breakerOpenMs: cfg.breakerOpenMs, clock: this.clock, onCommandError, onBreaker });
    const l2 = new RedisStore({
      guard: this.guard,
      keyPrefix: cfg.keyPrefix,
      maxEntryBytes: cfg.maxEntryBytes,
      maxVariants: opts.maxVariants,
      clock: this.clock,
      onEvent: opts.onStoreEvent,
      ownsClient: true,
    });
    const tiered = new TieredStore({ l1: opts.l1, l2, clock: this.clock });
    this.store = tiered;
    this.bus = new RedisBus({
      guard: this.guard,
      subscriber: this.client.duplicate(),
      keyPrefix: cfg.keyPrefix,
      clock: this.clock,
      ownsSubscriber: true,
    });
    // Another instance purged (L2 included) and told us: our L1 only, at the sender's moment.
    this.bus.onPurge((notice) => {
      void tiered.purgeLocal(notice.selector, notice.mode, notice.at, notice.late ? notice.at : undefined).then(async (purged) => {
        // At debug when it found nothing here: MediaWiki purges every instance for each URL of
        // an edit, and each hears the others' too: 16 lines per instance per edit, all
        // `purged: 0` (fleet trial).
        const fields = { from: notice.from, selector: notice.selector, mode: notice.mode, purged, ...(notice.late ? { late: true } : {}) };
        if (purged > 0) this.logger.info(fields, 'purge received');
        else this.logger.debug(fields, 'purge received');
        // A fill of ours may have stored in the gap before this notice: purged again in both
        // tiers, and announced once more (marked, so it is not repeated), since another
        // instance may have copied it from Redis into its memory meanwhile (review).
        if (notice.again || notice.late) return;
        for (const again of opts.onPurgeReceived?.(notice.selector, notice.mode, notice.at) ?? []) {
          await tiered.purge(again, notice.mode, notice.at);
          await this.bus.publishPurge(again, notice.mode, notice.at, true);
        }
      });
    });
    this.crossInstance = new RedisCrossInstance({
      lock: new DistributedLock({ guard: this.guard, keyPrefix: cfg.keyPrefix }),
      bus: this.bus,
      lockTtlMs: cfg.lockTtlMs,
      lockWaitMs: cfg.lockWaitMs,
      onOutcome: opts.onCrossInstance,
      onFilled: (collapseKey) => this.refreshL1FromL2(collapseKey.primary),
      isFilled: (collapseKey) => this.isFreshInL2(collapseKey),
    });
  }

  /** Is Redis usable now (the breaker is not open)? */
  isAvailable(): boolean {
    return this.guard.isAvailable();
  }

  /**
   * Give Redis one connect timeout to come up before traffic, so the first requests already
   * share the tier; past it, start anyway (fail open: it joins when it connects).
   */
  async whenReady(): Promise<void> {
    const timeoutMs = this.config.connectTimeoutMs;
    const ready =
      this.client.status === 'ready'
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, timeoutMs);
            this.client.once('ready', () => {
              clearTimeout(timer);
              resolve();
            });
          });
    const [, listening] = await Promise.all([ready, this.bus.whenListening(timeoutMs)]);
    if (this.client.status !== 'ready' || !listening)
      this.logger.warn({ timeoutMs }, 'redis not ready at start: serving from memory only until it connects');
    else {
      this.logger.info({ keyPrefix: this.config.keyPrefix, instance: this.bus.instanceId }, 'redis ready: cache, fill locks and purges shared through it');
      await this.checkMemoryBound(timeoutMs);
    }
  }

  /**
   * On every connection (the first, and each after Redis restarted or the link dropped): when
   * Redis started and whether it loaded copies from disk then (INFO: `uptime_in_seconds`,
   * `rdb_last_load_keys_loaded`, `aof_enabled`). If it did, copies stored before its start came
   * from a snapshot that may predate purges the instances made since: the store no longer uses
   * them (TieredStore.noteL2Loaded), and a warning says so. A Redis without persistence loads
   * nothing and costs nothing here. One that does not say how many keys it loaded (before
   * Redis 7) is taken to have loaded some. Says nothing when INFO is refused or does not answer.
   */
  private async noteRedisStart(): Promise<void> {
    const asked = this.clock.now();
    let timer: NodeJS.Timeout | undefined;
    let info: unknown;
    try {
      info = await Promise.race([
        this.client.info() as Promise<unknown>,
        new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), this.config.connectTimeoutMs))),
      ]);
    } catch {
      return; // INFO refused (a managed Redis): nothing known
    } finally {
      clearTimeout(timer);
    }
    if (typeof info !== 'string') return;
    const field = (name: string): string | undefined => new RegExp(`^${name}:(.*)$`, 'm').exec(info as string)?.[1]?.trim();
    const uptime = Number(field('uptime_in_seconds'));
    if (!Number.isFinite(uptime) || uptime < 0) return;
    const loaded = field('rdb_last_load_keys_loaded');
    const fromDisk = field('aof_enabled') === '1' || loaded === undefined || Number(loaded) > 0;
    if (!fromDisk) return;
    // Its start, at the latest (uptime is whole seconds), and CLOCK_SKEW_MS more: copies carry
    // the storing instance's clock, and one running ahead would have its last snapshot copies
    // read as stored after the start (review). A copy stored in those first seconds is fetched
    // again; none from the snapshot is used.
    const startedAt = asked - uptime * 1000;
    this.store.noteL2Loaded(startedAt + CLOCK_SKEW_MS);
    // Once per start of Redis, not at each reconnect to the same one.
    const known = this.loadedStartAt;
    this.loadedStartAt = startedAt;
    if (known !== undefined && Math.abs(startedAt - known) <= REDIS_START_SLACK_MS) return;
    const aof = field('aof_enabled') === '1';
    this.logger.warn(
      { startedAt: new Date(startedAt).toISOString(), keysLoaded: loaded === undefined ? undefined : Number(loaded), aof },
      loaded === undefined && !aof
        ? 'redis does not say whether it loaded copies from disk when it started (before Redis 7): copies stored in it before then are not used (a purge made since a snapshot would come back with them), so each page is fetched again once'
        : 'redis loaded copies from disk when it started: copies stored in it before then are not used (a purge made since its snapshot would come back with them), so each page is fetched again once; a cache Redis needs no persistence (--save \'\' --appendonly no)',
    );
  }

  /**
   * Warns once at start when Redis keeps every copy until it expires: no `maxmemory`, or
   * `noeviction`. Copies live there their lifetime plus the grace (an hour by default), so an
   * unbounded Redis grows with every distinct URL asked, and a full `noeviction` one refuses
   * every write. Says nothing when CONFIG is not allowed (a managed Redis) or does not answer.
   */
  private async checkMemoryBound(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const reply = await Promise.race([
        this.client.config('GET', 'maxmemory*') as Promise<unknown>,
        new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs))),
      ]);
      if (!Array.isArray(reply)) return;
      const settings = new Map<string, string>();
      for (let i = 0; i + 1 < reply.length; i += 2) settings.set(String(reply[i]), String(reply[i + 1]));
      const maxmemory = settings.get('maxmemory');
      const policy = settings.get('maxmemory-policy');
      if (maxmemory === '0' || policy === 'noeviction')
        this.logger.warn(
          { maxmemory: Number(maxmemory), policy },
          'redis has no memory bound that evicts: copies stay there for their lifetime plus the grace (an hour by default), so it grows with every distinct URL asked (and under noeviction refuses every write once full); set maxmemory (a few times cache.maxBytes) and maxmemory-policy allkeys-lru',
        );
    } catch {
      // CONFIG refused (a managed Redis): nothing to say
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One PING through the guard every `breakerOpenMs`: without traffic the breaker would neither
   * notice a hung Redis nor take its half-open probe once Redis is back, and crowdgate_redis_up
   * would stay stale. A PING that fails counts toward opening the breaker like any command.
   */
  startHeartbeat(): void {
    if (this.heartbeat) return;
    this.heartbeat = setInterval(() => {
      void this.guard.run((c) => c.ping()).then(() => {
        this.onHeartbeat?.(this.guard.isAvailable());
      });
    }, this.config.breakerOpenMs);
    this.heartbeat.unref();
  }

  /**
   * Tells the other instances to purge their L1 (the caller has purged here, L2 included), with
   * the caller's `now` so every instance purges as of one moment. True when Redis took every
   * notice; otherwise a warning says so, and the caller sends it again later (gateway-store.ts).
   */
  async broadcastPurge(selectors: readonly PurgeSelector[], mode: PurgeMode, now: number, late = false): Promise<boolean> {
    return (await this.broadcastEach(selectors, mode, now, late)).every(Boolean);
  }

  /** broadcastPurge, saying which notices Redis took (one per selector, in order). */
  async broadcastEach(selectors: readonly PurgeSelector[], mode: PurgeMode, now: number, late = false): Promise<boolean[]> {
    const sent = await Promise.all(selectors.map((selector) => this.bus.publishPurge(selector, mode, now, false, late)));
    if (!sent.every(Boolean)) this.logger.warn({ mode }, 'purge not broadcast: redis unavailable; announced when it answers again (crowdgate_purges_pending)');
    return sent;
  }

  /** Stops the heartbeat, then closes the bus and the store (both connections with them). */
  async close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.bus.close();
    await this.store.close();
  }

  /**
   * Another instance just stored `key` in L2: replace our L1 record with it. The tiered store
   * reads L1 first, so a stale L1 copy would otherwise hide the fresh one and be refetched.
   */
  private async refreshL1FromL2(key: string): Promise<void> {
    const far = await this.store.l2.get(key);
    if (far) this.store.fillFromL2(key, far);
  }

  /**
   * Asked by a new lock holder: did another instance store a fresh copy of this key after our
   * lookup (it held the lock, filled, and released before we asked)? Then copy it into L1 and
   * skip the fetch. Fresh here is the entry's own staleAt (entry.ts), not the request's view;
   * the request path re-evaluates what it reads. Vary'd keys are left to fetch.
   */
  private async isFreshInL2(collapseKey: CollapseKey): Promise<boolean> {
    if (collapseKey.variant !== undefined) return false;
    const far = this.store.screen(await this.store.l2.get(collapseKey.primary));
    const now = this.clock.now();
    if (!far || !far.some((e) => staleAtOf(e) > now)) return false;
    this.store.l1.fill(collapseKey.primary, far);
    return true;
  }
}
