/**
 * Cross-instance notices over Redis pub/sub: purge broadcast and "key filled" notifications.
 * Owns the channels, the message format and the local waiters; it does not apply purges (the
 * onPurge callback does, to its own L1) nor take fill locks (collapse/distributed.ts).
 *
 * Two connections: publishing goes through the shared RedisGuard (fail open, breaker); receiving
 * needs a second connection in subscriber mode (a subscribed connection accepts no other command).
 * After a reconnect we subscribe again on 'ready' (ioredis's own resubscription is turned off:
 * it left its promise unhandled).
 *
 * Channels: `${keyPrefix}bus:purge` carries JSON { v: 1, from, selector, mode, at, again?, late? };
 * `${keyPrefix}bus:filled` carries the primary key as is; `${keyPrefix}bus:load` carries JSON
 * { v: 1, from, inflight: { <origin member URL>: n } } or { v: 1, from, probe: <member URL> }
 * (origin/peer-load.ts). On a database other than 0 (`redis://…/N`) each is
 * `${keyPrefix}dbN:bus:…`: channels ignore databases. One subscription and one handler serve
 * every waiter of every key: waiters sit in a key -> Set map resolved by the notification, never
 * by polling.
 *
 * Fail open: publish resolves false when Redis is unavailable; waitForFill resolves 'timeout'
 * at once when the subscriber is not listening or the breaker is open (nobody could tell us),
 * and every pending waiter resolves 'timeout' when the subscriber connection drops.
 *
 * Race to know about: a fill published between a caller's failed tryLock and its waitForFill is
 * not seen. waitForFill registers synchronously, so callers should call it first, then re-read the
 * store, then await it.
 */
import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '../../clock.js';
import type { PurgeMode, PurgeSelector } from './cache-store.js';
import type { RedisClient, RedisGuard } from './redis-store.js';

export interface PurgeNotice {
  selector: PurgeSelector;
  mode: PurgeMode;
  /** When the purge was made, by the sender's clock: use it as `now` so instances agree. */
  at: number;
  /** The sending instance's id. */
  from: string;
  /** A purge repeated for a fill that stored just before the first notice arrived: not repeated again. */
  again?: boolean;
  /**
   * Announced late (Redis was unavailable when it was made): for what was stored before `at`
   * only, since copies stored since are the new page; not repeated either.
   */
  late?: boolean;
}

export type FillOutcome = 'filled' | 'timeout';

/** Another instance's origin load (origin/peer-load.ts): its in-flight counts, or a probe it started. */
export type LoadNotice =
  | { from: string; inflight: ReadonlyMap<string, number> }
  | { from: string; probe: string };

/** Purges kept in the log for instances that were away (redis-bus.ts publishPurge). */
export const PURGE_LOG_KEPT = 1_000;
/** How long the log outlives its last purge, ms. */
const PURGE_LOG_TTL_MS = 600_000;
/** How far before the drop a replay starts, ms (clock skew between instances). */
const REPLAY_SLACK_MS = 5_000;
/** How soon a replay Redis did not answer is tried again, ms. */
const REPLAY_RETRY_MS = 1_000;

export interface RedisBusOptions {
  /** Publisher side: the guard of the shared command connection. */
  guard: RedisGuard;
  /** A dedicated connection for subscriber mode (e.g. guard.client.duplicate()). */
  subscriber: RedisClient;
  keyPrefix: string;
  /** Messages from this id are ignored; default a random UUID per process. */
  instanceId?: string;
  clock?: Clock;
  /** close() disconnects the subscriber (when the bus created it). */
  ownsSubscriber?: boolean;
}

interface Waiter {
  resolve: (outcome: FillOutcome) => void;
  timer: NodeJS.Timeout;
}

export class RedisBus {
  readonly instanceId: string;
  private readonly guard: RedisGuard;
  private readonly subscriber: RedisClient;
  private readonly clock: Clock;
  private readonly ownsSubscriber: boolean;
  private readonly purgeChannel: string;
  private readonly filledChannel: string;
  private readonly loadChannel: string;
  private readonly purgeListeners = new Set<(notice: PurgeNotice) => void>();
  private readonly loadListeners = new Set<(notice: LoadNotice) => void>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  private listening = false;
  /** When the subscription last dropped (clock ms), until it is back and the purge log was read. */
  private lostAt: number | undefined;
  private readonly purgeLog: string;
  private readonly listeningResolvers = new Set<(ok: boolean) => void>();
  private isClosed = false;

  constructor(options: RedisBusOptions) {
    this.guard = options.guard;
    this.subscriber = options.subscriber;
    this.instanceId = options.instanceId ?? randomUUID();
    this.clock = options.clock ?? systemClock;
    this.ownsSubscriber = options.ownsSubscriber ?? false;
    // Pub/sub channels are one namespace for the whole server, whatever database a client
    // selected: a staging deployment on `redis://…/1` with the same keyPrefix purged
    // production's memory copies on db 0 (fleet trial). Its database scopes them too (none for
    // db 0, so the channels of a deployment on db 0 are as they were).
    const db = (this.subscriber as { options?: { db?: number } }).options?.db ?? 0;
    const channels = db > 0 ? `${options.keyPrefix}db${db}:bus` : `${options.keyPrefix}bus`;
    this.purgeChannel = `${channels}:purge`;
    this.filledChannel = `${channels}:filled`;
    this.loadChannel = `${channels}:load`;
    this.purgeLog = `${options.keyPrefix}bus:purgelog`;
    // Only our own subscribe() on each 'ready' (below) subscribes again after a reconnect:
    // ioredis's own resubscription leaves its promise unhandled, and a connection that dropped
    // again at once (enableOfflineQueue off) rejected it: an unhandled rejection (CI caught one).
    const subscriberOptions = (this.subscriber as { options?: { autoResubscribe?: boolean } }).options;
    if (subscriberOptions !== undefined && 'autoResubscribe' in subscriberOptions) subscriberOptions.autoResubscribe = false;
    this.subscriber.on('message', (channel: string, message: string) => this.onMessage(channel, message));
    this.subscriber.on('ready', () => void this.subscribe());
    this.subscriber.on('close', () => this.stopListening());
    this.subscriber.on('error', () => {}); // the owner may log; an unhandled 'error' would crash
    if (this.subscriber.status === 'ready') void this.subscribe();
  }

  /** Is the subscription up (so notifications can arrive)? */
  isListening(): boolean {
    return this.listening;
  }

  /** Resolves once the subscription is up, or false after timeoutMs (tests, startup). */
  whenListening(timeoutMs: number): Promise<boolean> {
    if (this.listening) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.listeningResolvers.delete(done);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.listeningResolvers.add(done);
    });
  }

  /**
   * Tell the other instances to apply a purge to their L1. True when Redis took the message.
   * It is also kept in a short log (the last PURGE_LOG_KEPT, for PURGE_LOG_TTL_MS), which an
   * instance whose subscription dropped reads when it is back: pub/sub keeps nothing for a
   * subscriber that is away, and a purge made while one instance reconnected was never applied
   * there (its old copy served on; multi-instance trial).
   */
  async publishPurge(selector: PurgeSelector, mode: PurgeMode, at: number = this.clock.now(), again = false, late = false): Promise<boolean> {
    const message = JSON.stringify({ v: 1, from: this.instanceId, selector, mode, at, ...(again ? { again: true } : {}), ...(late ? { late: true } : {}) });
    const result = await this.guard.run((c) => c.publish(this.purgeChannel, message));
    // The log is best effort: a full Redis (noeviction) refuses the append but still publishes,
    // and the notice must not wait for memory.
    if (result.ok)
      await this.guard.run((c) => c.multi().rpush(this.purgeLog, message).ltrim(this.purgeLog, -PURGE_LOG_KEPT, -1).pexpire(this.purgeLog, PURGE_LOG_TTL_MS).exec());
    return result.ok;
  }

  /** Register a purge handler (messages from other instances only); returns its removal. */
  onPurge(listener: (notice: PurgeNotice) => void): () => void {
    this.purgeListeners.add(listener);
    return () => this.purgeListeners.delete(listener);
  }

  /**
   * Tell the other instances this one's origin in-flight counts, by member URL, or that it
   * started a no-load probe of a member. Fire and forget: true when Redis took it.
   */
  async publishLoad(load: { inflight: ReadonlyMap<string, number> } | { probe: string }): Promise<boolean> {
    const body = 'probe' in load ? { probe: load.probe } : { inflight: Object.fromEntries(load.inflight) };
    const result = await this.guard.run((c) => c.publish(this.loadChannel, JSON.stringify({ v: 1, from: this.instanceId, ...body })));
    return result.ok;
  }

  /** Register a load handler (messages from other instances only); returns its removal. */
  onLoad(listener: (notice: LoadNotice) => void): () => void {
    this.loadListeners.add(listener);
    return () => this.loadListeners.delete(listener);
  }

  /** Tell waiters on every instance (this one included) that `key` was stored. */
  async publishFilled(key: string): Promise<boolean> {
    const result = await this.guard.run((c) => c.publish(this.filledChannel, key));
    return result.ok;
  }

  /**
   * Wait until some instance publishes that `key` was filled, at most timeoutMs. Registers
   * synchronously. 'timeout' at once when no notification could arrive (see module doc).
   */
  waitForFill(key: string, timeoutMs: number): Promise<FillOutcome> {
    if (this.isClosed || !this.listening || this.guard.state !== 'closed') return Promise.resolve('timeout');
    return new Promise<FillOutcome>((resolve) => {
      let waiters = this.waiters.get(key);
      if (!waiters) this.waiters.set(key, (waiters = new Set()));
      const set = waiters;
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          set.delete(waiter);
          if (set.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
          resolve('timeout');
        }, timeoutMs),
      };
      set.add(waiter);
    });
  }

  /** Waiters currently registered for a key (tests and status). */
  waiterCount(key: string): number {
    return this.waiters.get(key)?.size ?? 0;
  }

  async close(): Promise<void> {
    this.isClosed = true;
    this.stopListening();
    this.purgeListeners.clear();
    this.loadListeners.clear();
    if (this.ownsSubscriber) this.subscriber.disconnect();
  }

  private async subscribe(): Promise<void> {
    if (this.isClosed) return;
    try {
      await this.subscriber.subscribe(this.purgeChannel, this.filledChannel, this.loadChannel);
      if (this.isClosed) return;
      this.listening = true;
      for (const done of [...this.listeningResolvers]) done(true);
      await this.replayIfLost();
    } catch {
      // Not connected or timed out: the next 'ready' tries again.
    }
  }

  private stopListening(): void {
    if (this.listening) this.lostAt ??= this.clock.now();
    this.listening = false;
    // Nobody can notify these any more: let them go now rather than at their deadline.
    for (const key of [...this.waiters.keys()]) this.settle(key, 'timeout');
  }

  private onMessage(channel: string, message: string): void {
    if (channel === this.filledChannel) {
      this.settle(message, 'filled');
      return;
    }
    if (channel === this.loadChannel) {
      const notice = parseLoadNotice(message);
      if (!notice || notice.from === this.instanceId) return;
      for (const listener of this.loadListeners) {
        try {
          listener(notice);
        } catch {
          // A failing listener must not stop the others nor the subscriber.
        }
      }
      return;
    }
    if (channel !== this.purgeChannel) return;
    this.deliverPurge(message);
  }

  /**
   * Once the subscription is back after a drop: the purges the log holds from REPLAY_SLACK_MS
   * before the drop on (the senders' clocks may be a little off ours), delivered late (see
   * below): one delivered twice is applied twice, as of its own moment, which changes nothing
   * more. A log Redis cannot read yet is read again every REPLAY_RETRY_MS while listening.
   */
  private async replayIfLost(): Promise<void> {
    const lostAt = this.lostAt;
    if (lostAt === undefined || this.isClosed || !this.listening) return;
    const result = await this.guard.run((c) => c.lrange(this.purgeLog, 0, -1));
    if (!result.ok) {
      // The command connection is not back yet (Redis restarted: the subscriber often
      // reconnects first): try again shortly, until it answers or the subscription drops.
      setTimeout(() => void this.replayIfLost(), REPLAY_RETRY_MS).unref();
      return;
    }
    if (this.lostAt === lostAt) this.lostAt = undefined;
    for (const message of result.value) {
      const notice = parsePurgeNotice(message);
      // Late: for what was stored before the purge only (copies refilled since are the new
      // page), and not announced again.
      if (notice && notice.at >= lostAt - REPLAY_SLACK_MS) this.deliverPurge({ ...notice, late: true });
    }
  }

  private deliverPurge(message: string | PurgeNotice): void {
    const notice = typeof message === 'string' ? parsePurgeNotice(message) : message;
    if (!notice || notice.from === this.instanceId) return;
    for (const listener of this.purgeListeners) {
      try {
        listener(notice);
      } catch {
        // A failing listener must not stop the others nor the subscriber.
      }
    }
  }

  private settle(key: string, outcome: FillOutcome): void {
    const waiters = this.waiters.get(key);
    if (!waiters) return;
    this.waiters.delete(key);
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve(outcome);
    }
  }
}

/** Members a load notice may name: more are ignored (a notice is not a way to fill our memory). */
export const LOAD_MEMBERS_MAX = 256;
/** The longest member URL a load notice may name; longer ones are ignored. */
export const LOAD_KEY_MAX = 2_048;
/**
 * The most in flight a notice may say for one member (four times a limit's default `max`): more
 * reads as this. A count of 1e308 from a broken publisher made every round trip "explained".
 */
export const LOAD_COUNT_MAX = 1_024;
/** The longest instance id a load notice may carry (ours are UUIDs): longer ones are ignored. */
export const LOAD_FROM_MAX = 64;

function parseLoadNotice(message: string): LoadNotice | undefined {
  try {
    const m: unknown = JSON.parse(message);
    if (typeof m !== 'object' || m === null) return undefined;
    const { v, from, inflight, probe } = m as Record<string, unknown>;
    if (v !== 1 || typeof from !== 'string' || from.length > LOAD_FROM_MAX) return undefined;
    if (typeof probe === 'string') return probe.length <= LOAD_KEY_MAX ? { from, probe } : undefined;
    if (typeof inflight !== 'object' || inflight === null) return undefined;
    const counts = new Map<string, number>();
    for (const [member, n] of Object.entries(inflight)) {
      if (counts.size >= LOAD_MEMBERS_MAX) break;
      if (member.length <= LOAD_KEY_MAX && typeof n === 'number' && Number.isInteger(n) && n >= 0) counts.set(member, Math.min(n, LOAD_COUNT_MAX));
    }
    return { from, inflight: counts };
  } catch {
    return undefined;
  }
}

function parsePurgeNotice(message: string): PurgeNotice | undefined {
  try {
    const m: unknown = JSON.parse(message);
    if (typeof m !== 'object' || m === null) return undefined;
    const { v, from, selector, mode, at, again, late } = m as Record<string, unknown>;
    if (v !== 1 || typeof from !== 'string' || !Number.isFinite(at)) return undefined;
    if (mode !== 'soft' && mode !== 'hard') return undefined;
    const parsed = parseSelector(selector);
    return parsed
      ? { selector: parsed, mode, at: at as number, from, ...(again === true ? { again: true } : {}), ...(late === true ? { late: true } : {}) }
      : undefined;
  } catch {
    return undefined;
  }
}

function parseSelector(value: unknown): PurgeSelector | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const s = value as Record<string, unknown>;
  switch (s.kind) {
    case 'key':
      return typeof s.key === 'string' ? { kind: 'key', key: s.key } : undefined;
    case 'prefix':
      if (typeof s.prefix !== 'string') return undefined;
      if (s.authorities === undefined) return { kind: 'prefix', prefix: s.prefix };
      return Array.isArray(s.authorities) && s.authorities.every((a) => typeof a === 'string')
        ? { kind: 'prefix', prefix: s.prefix, authorities: s.authorities as string[] }
        : undefined;
    case 'tag':
      return typeof s.tag === 'string' ? { kind: 'tag', tag: s.tag } : undefined;
    case 'all':
      return { kind: 'all' };
    default:
      return undefined;
  }
}
