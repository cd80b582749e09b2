/**
 * Several gateways in front of one origin, sharing a Redis tier: what the others have in flight
 * to each origin member, and their no-load probes. Each gateway learns its own concurrency
 * limit (admission/limits/gradient2.ts), but the origin's queue holds all of their requests; a
 * gateway that counts only its own took the others' queue for an origin slow on its own and
 * doubled its limit (three gateways held an origin with 8 slots at 28-34 in flight, one alone
 * at 19: a trial). So every LOAD_INTERVAL_MS each instance publishes its in-flight count per
 * member URL (while any is above 0, and once more when they fall to 0), and a probe it starts
 * at once; the others count them wherever they count their own in judging the origin's load
 * (whether a round trip is a no-load sample, and the bound that tells queueing from slowness),
 * and join the probe where their own limit binds (gradient2.ts, joinProbe).
 *
 * Owns the schedule, the peers' latest counts and their expiry; not the limit (the Limiter
 * reads inflight() at each grant and calls joinProbe on a notice) nor the transport
 * (cache/stores/redis-bus.ts, through the guard: Redis away means no counts, which is one
 * gateway's view, as before).
 *
 * A count is dropped LOAD_STALE_MS after it arrived (by this instance's clock: the
 * senders' may be off), or at once if that clock stepped back past it: a gateway that stopped,
 * or lost Redis, stops counting. A probe is joined only from an instance whose count for the
 * member is above 0.
 */
import type { Clock } from '../clock.js';
import type { LoadNotice } from '../cache/stores/redis-bus.js';

/** How often an instance publishes its in-flight counts, ms. */
export const LOAD_INTERVAL_MS = 500;
/** How long a peer's count stands without a newer one, ms. */
export const LOAD_STALE_MS = 2_000;
/** Peers remembered at most (a stopped instance's entry goes when it is stale anyway). */
const PEERS_MAX = 64;

/** The part of the Redis bus this uses (redis-bus.ts). */
export interface LoadBus {
  publishLoad(load: { inflight: ReadonlyMap<string, number> } | { probe: string }): Promise<boolean>;
  onLoad(listener: (notice: LoadNotice) => void): () => void;
}

export interface PeerLoadOptions {
  bus: LoadBus;
  clock: Clock;
  /** This instance's in-flight count per member URL (Upstream.inflightByMember). */
  snapshot: () => ReadonlyMap<string, number>;
  /** Another instance started a probe of the member with this URL. */
  onPeerProbe: (member: string) => void;
  intervalMs?: number;
}

/** A count this old (ms; below 0: the clock stepped back) no longer counts. */
const isStale = (age: number): boolean => age > LOAD_STALE_MS || age < 0;

export class PeerLoad {
  private readonly bus: LoadBus;
  private readonly clock: Clock;
  private readonly snapshot: () => ReadonlyMap<string, number>;
  private readonly peers = new Map<string, { at: number; inflight: ReadonlyMap<string, number> }>();
  private readonly timer: NodeJS.Timeout;
  private readonly removeListener: () => void;
  /** The last published counts held one above 0 (the next all-zero one is published once). */
  private busy = false;

  constructor(opts: PeerLoadOptions) {
    this.bus = opts.bus;
    this.clock = opts.clock;
    this.snapshot = opts.snapshot;
    this.removeListener = opts.bus.onLoad((notice) => {
      // A probe is joined only from an instance that lately said it has requests at that
      // member: what queues there is its doing. A probe notice from anything else is ignored.
      if ('probe' in notice) {
        if (this.peerCount(notice.from, notice.probe) > 0) opts.onPeerProbe(notice.probe);
      } else this.note(notice.from, notice.inflight);
    });
    this.timer = setInterval(() => this.publish(), opts.intervalMs ?? LOAD_INTERVAL_MS);
    this.timer.unref();
  }

  /** What the other instances last said they have in flight to the member with this URL. */
  inflight(member: string): number {
    if (this.peers.size === 0) return 0;
    const now = this.clock.now();
    let sum = 0;
    for (const [from, peer] of this.peers) {
      if (isStale(now - peer.at)) this.peers.delete(from);
      else sum += peer.inflight.get(member) ?? 0;
    }
    return sum;
  }

  /** What one peer last said it has in flight to the member, 0 when stale or unknown. */
  private peerCount(from: string, member: string): number {
    const peer = this.peers.get(from);
    return peer === undefined || isStale(this.clock.now() - peer.at) ? 0 : (peer.inflight.get(member) ?? 0);
  }

  /** This instance started a no-load probe of the member with this URL: the others join it. */
  announceProbe(member: string): void {
    void this.bus.publishLoad({ probe: member });
  }

  /** Publishes this instance's counts now (the timer's job; tests). */
  publish(): void {
    const inflight = this.snapshot();
    let any = false;
    for (const n of inflight.values()) if (n > 0) any = true;
    if (!any && !this.busy) return;
    this.busy = any;
    void this.bus.publishLoad({ inflight });
  }

  close(): void {
    clearInterval(this.timer);
    this.removeListener();
    this.peers.clear();
  }

  private note(from: string, inflight: ReadonlyMap<string, number>): void {
    this.peers.delete(from);
    this.peers.set(from, { at: this.clock.now(), inflight });
    if (this.peers.size > PEERS_MAX) this.peers.delete(this.peers.keys().next().value!);
  }
}
