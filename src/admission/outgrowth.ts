/**
 * Whether the wait queue outgrows its deadlines, per priority class: the evidence that, behind a
 * learned limit, lets a standing queue hold the requests clients wait for to the CoDel bounds
 * (Limiter, "only while the queue outgrows its deadlines").
 *
 * A queue that stands but whose waits fit their deadlines is a population the origin serves at
 * its own pace (each client waits for its answer before it asks again); one that outgrows them is
 * a crowd arriving faster than the origin answers. The limiter notes each time the queue outgrew
 * a deadline: an arrival a client waits for forecast to wait past it, such a waiter refused at it,
 * a full queue. The evidence holds for OUTGROWN_MEMORY_MS. Held to the bounds the queue stays
 * short and no longer shows whether it would outgrow them, so then it is let grow again to see;
 * a crowd that outgrows them again within one memory of that is held twice as long, up to
 * OUTGROWN_MEMORY_MAX_MS. Each release costs a crowd a deadline's worth of waiting: its queue
 * grows to its deadlines, and the cache fills that land in it wait as long, with every visitor
 * collapsed on them (at 10 s, a ×50 crowd's all-success p99 read 440–630 ms in the second after
 * the release and its pages p99 once 488 ms, against about 140 and 10 otherwise). A hold that
 * was not needed costs a closed population at the origin's capacity the refusals it had
 * before this rule, for one memory. So the first memory is long, 30 s.
 *
 * Per class: a request waits behind the requests of its own class and the more important ones
 * (priority 0 is the most important), so the queue outgrowing a class's deadlines says nothing
 * about the classes above it (crawlers in a class below the readers, forecast past their deadline
 * behind the readers' queue, would otherwise hold the readers to the bounds). A full queue is
 * every class's evidence.
 */

/** How long the evidence that the queue outgrew a deadline holds, ms, at first (see Outgrowth). */
export const OUTGROWN_MEMORY_MS = 30_000;
/** The longest it holds after doubling, ms (see Outgrowth). */
export const OUTGROWN_MEMORY_MAX_MS = 240_000;

export class Outgrowth {
  /** When each class's deadlines were last outgrown (ms). */
  private readonly at: number[];
  /** How long each class's evidence holds (ms). */
  private readonly memoryMs: number[];

  constructor(readonly classes: number) {
    this.at = new Array<number>(classes).fill(-Infinity);
    this.memoryMs = new Array<number>(classes).fill(OUTGROWN_MEMORY_MS);
  }

  /** The queue outgrew a deadline of a request of class `priority` now (0: every class, as a full queue). */
  note(priority: number, now: number): void {
    const p = this.classOf(priority);
    const lapsedAt = this.at[p]! + this.memoryMs[p]!;
    if (now > lapsedAt) this.memoryMs[p] = now - lapsedAt <= this.memoryMs[p]! ? Math.min(2 * this.memoryMs[p]!, OUTGROWN_MEMORY_MAX_MS) : OUTGROWN_MEMORY_MS;
    this.at[p] = now;
  }

  /** A request of class `priority` is held to the bounds: its class or a more important one outgrew its deadlines within its memory. */
  holds(priority: number, now: number): boolean {
    const p = this.classOf(priority);
    for (let q = 0; q <= p; q++) if (now - this.at[q]! <= this.memoryMs[q]!) return true;
    return false;
  }

  /** How long class `priority`'s evidence holds now, ms (for tests). */
  memoryOf(priority: number): number {
    return this.memoryMs[this.classOf(priority)]!;
  }

  private classOf(priority: number): number {
    return priority > 0 ? Math.min(priority | 0, this.classes - 1) : 0;
  }
}
