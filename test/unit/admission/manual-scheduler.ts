/**
 * A Scheduler driven by a ManualClock, for tests: timers fire only inside advance(), in time
 * order, with the clock set to each timer's moment.
 */
import type { ManualClock } from '../../../src/clock.js';
import type { Scheduler } from '../../../src/admission/limiter.js';

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

export class ManualScheduler implements Scheduler {
  private readonly timers = new Map<number, Timer>();
  private nextId = 1;

  constructor(private readonly clock: ManualClock) {}

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.clock.now() + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  advance(ms: number): void {
    const end = this.clock.now() + ms;
    for (;;) {
      let due: Timer | undefined;
      for (const t of this.timers.values()) if (t.at <= end && (!due || t.at < due.at || (t.at === due.at && t.id < due.id))) due = t;
      if (!due) break;
      this.timers.delete(due.id);
      this.clock.set(Math.max(this.clock.now(), due.at));
      due.fn();
    }
    this.clock.set(end);
  }
}
