/**
 * The hottest paths recently requested, for the status page: a small bounded table counting
 * requests per site+path and how they were answered. Never exported as metric labels (raw
 * paths must not become series); bounded so a random-path flood cannot grow it.
 */
import type { CacheState } from '../outcome.js';

interface Row {
  site: string;
  path: string;
  count: number;
  states: Partial<Record<CacheState, number>>;
}

export class HotKeys {
  private rows = new Map<string, Row>();

  constructor(private readonly capacity: number) {}

  note(site: string, path: string, state: CacheState): void {
    const id = `${site}\u0000${path}`;
    let row = this.rows.get(id);
    if (!row) {
      if (this.rows.size >= this.capacity) this.evictColdest();
      row = { site, path: path.slice(0, 200), count: 0, states: {} };
      this.rows.set(id, row);
    }
    row.count++;
    row.states[state] = (row.states[state] ?? 0) + 1;
  }

  /** Halve every count so the table tracks recent traffic (called periodically). */
  decay(): void {
    for (const [id, row] of this.rows) {
      row.count = Math.floor(row.count / 2);
      for (const k of Object.keys(row.states) as CacheState[]) row.states[k] = Math.floor(row.states[k]! / 2);
      if (row.count === 0) this.rows.delete(id);
    }
  }

  top(n: number): Row[] {
    return [...this.rows.values()].sort((a, b) => b.count - a.count).slice(0, n);
  }

  private evictColdest(): void {
    let coldId: string | undefined;
    let cold = Infinity;
    for (const [id, row] of this.rows) {
      if (row.count < cold) {
        cold = row.count;
        coldId = id;
      }
    }
    if (coldId !== undefined) this.rows.delete(coldId);
  }
}
