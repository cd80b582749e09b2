/**
 * A route's cap on its origin requests at once (`routes[].maxConcurrent`), per gateway instance:
 * nginx's `limit_conn` on a location, HAProxy's `maxconn`, an Envoy cluster's `max_requests`.
 * It is the operator's word for an endpoint she knows holds a worker for seconds (a report, an
 * export, a search) on an origin with a few workers: without it, eight clients of a 10 s page
 * held all five of Apache's workers and every quick page waited in its backlog (busy-workers
 * bench). A request of the route takes a slot before it asks for an origin permit, and gives it
 * back when its origin request ends or it is refused; past the cap it waits here, by priority
 * then arrival, up to its own deadline, and is then refused `route_busy` (or answered from a
 * usable stale copy, as any refusal). It never misfires: it counts, and learns nothing.
 */
import type { Scheduler } from '../admission/limiter.js';

interface SlotWaiter {
  readonly priority: number;
  readonly resolve: (granted: boolean) => void;
  timer: unknown;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export class RouteSlots {
  private taken = 0;
  /** Waiters by priority (0 first), then arrival. */
  private readonly waiting: SlotWaiter[] = [];
  /** The cap, as the last request that asked named it (a reload applies to the next one). */
  private max = Infinity;

  constructor(private readonly scheduler: Scheduler) {}

  /** Requests of the route at the origin (or on their way to it) now. */
  get inUse(): number {
    return this.taken;
  }

  /** Whether a cap applies (a reload that took it out leaves Infinity). */
  get capped(): boolean {
    return this.max !== Infinity;
  }

  /** Requests of the route waiting for a slot now. */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * A slot for one request: true at once when fewer than `max` are taken (and nobody waits
   * ahead of it), else a wait that ends true when one is given back to it, or false at
   * `deadlineAt` or when `signal` aborts.
   */
  acquire(max: number, priority: number, deadlineAt: number, now: number, signal?: AbortSignal): boolean | Promise<boolean> {
    this.max = max;
    this.wake(); // a reload that raised the cap lets waiters through before this one
    if (this.taken < max && this.waiting.length === 0) {
      this.taken++;
      return true;
    }
    if (signal?.aborted || deadlineAt <= now) return false;
    return new Promise<boolean>((resolve) => {
      const w: SlotWaiter = { priority, resolve, timer: undefined, signal, onAbort: undefined };
      let at = this.waiting.length;
      while (at > 0 && this.waiting[at - 1]!.priority > priority) at--;
      this.waiting.splice(at, 0, w);
      w.timer = this.scheduler.setTimeout(() => this.giveUp(w), deadlineAt - now);
      if (signal !== undefined) {
        w.onAbort = () => this.giveUp(w);
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
    });
  }

  /** A new cap from a reload (Infinity: none): waiters it lets through go at once (review: a cap taken out left them waiting for slots to come back). */
  setMax(max: number): void {
    this.max = max;
    this.wake();
  }

  /** A slot given back: the first waiter takes it while the cap allows. */
  release(): void {
    if (this.taken > 0) this.taken--;
    this.wake();
  }

  private wake(): void {
    while (this.taken < this.max && this.waiting.length > 0) {
      const w = this.waiting.shift()!;
      this.settle(w);
      this.taken++;
      w.resolve(true);
    }
  }

  private giveUp(w: SlotWaiter): void {
    const i = this.waiting.indexOf(w);
    if (i < 0) return;
    this.waiting.splice(i, 1);
    this.settle(w);
    w.resolve(false);
  }

  private settle(w: SlotWaiter): void {
    this.scheduler.clearTimeout(w.timer);
    if (w.onAbort !== undefined) w.signal?.removeEventListener('abort', w.onAbort);
  }
}
