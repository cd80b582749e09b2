import { describe, expect, it } from 'vitest';
import { Outgrowth, OUTGROWN_MEMORY_MAX_MS, OUTGROWN_MEMORY_MS } from '../../../src/admission/outgrowth.js';

describe('Outgrowth', () => {
  it('holds for OUTGROWN_MEMORY_MS after the last time the queue outgrew a deadline, each note sliding it on', () => {
    const o = new Outgrowth(3);
    expect(o.holds(1, 0)).toBe(false);
    o.note(1, 1_000);
    expect(o.holds(1, 1_000 + OUTGROWN_MEMORY_MS)).toBe(true);
    o.note(1, 5_000);
    expect(o.holds(1, 5_000 + OUTGROWN_MEMORY_MS)).toBe(true);
    expect(o.holds(1, 5_001 + OUTGROWN_MEMORY_MS)).toBe(false);
  });

  it('holds twice as long when the queue outgrows its deadlines again within one memory of being let grow, up to OUTGROWN_MEMORY_MAX_MS (a crowd goes on)', () => {
    const o = new Outgrowth(1);
    let t = 0;
    o.note(0, t);
    let memory = OUTGROWN_MEMORY_MS;
    for (let i = 0; i < 10; i++) {
      t += memory + 500; // let grow, and outgrown again half a second later
      o.note(0, t);
      memory = Math.min(2 * memory, OUTGROWN_MEMORY_MAX_MS);
      expect(o.memoryOf(0)).toBe(memory);
    }
    expect(memory).toBe(OUTGROWN_MEMORY_MAX_MS);
    expect(o.holds(0, t + OUTGROWN_MEMORY_MAX_MS)).toBe(true);
  });

  it('goes back to OUTGROWN_MEMORY_MS when the queue was let grow for a whole memory without outgrowing them (a burst, not a crowd)', () => {
    const o = new Outgrowth(1);
    o.note(0, 0);
    o.note(0, OUTGROWN_MEMORY_MS + 1); // again at once: 20 s
    expect(o.memoryOf(0)).toBe(2 * OUTGROWN_MEMORY_MS);
    const lapsedAt = OUTGROWN_MEMORY_MS + 1 + 2 * OUTGROWN_MEMORY_MS;
    o.note(0, lapsedAt + 2 * OUTGROWN_MEMORY_MS + 1);
    expect(o.memoryOf(0)).toBe(OUTGROWN_MEMORY_MS);
  });

  it("holds a class and the less important ones (larger numbers), whose requests wait behind it, not the more important ones; class 0's evidence (a full queue) holds every class", () => {
    const o = new Outgrowth(3);
    o.note(1, 0);
    expect([o.holds(0, 1), o.holds(1, 1), o.holds(2, 1)]).toEqual([false, true, true]);
    o.note(0, 2);
    expect([o.holds(0, 3), o.holds(1, 3), o.holds(2, 3)]).toEqual([true, true, true]);
    // Out-of-range classes read as the nearest one.
    expect(o.holds(7, 3)).toBe(true);
    expect(new Outgrowth(2).holds(-1, 0)).toBe(false);
  });
});
