/**
 * Time, injected. Everything that decides by time (freshness, deadlines, limits, breakers)
 * takes a Clock so tests can move time by hand instead of sleeping.
 */
export interface Clock {
  /** Epoch milliseconds (may be fractional). */
  now(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
};

/** A clock tests drive by hand. */
export class ManualClock implements Clock {
  constructor(private t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
  set(ms: number): void {
    this.t = ms;
  }
}
