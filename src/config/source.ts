/**
 * The live configuration: one frozen snapshot at a time, replaced whole.
 *
 * A request handler calls `current()` once when the request starts and keeps that snapshot,
 * so a reload never changes the rules under a request in flight; the next request sees the
 * new snapshot. Components that build state from the config (pools, limiters) subscribe with
 * `onChange` and rebuild from `next`.
 *
 * Owns the snapshot, its generation counter and the change listeners. It does not read or
 * validate files (load.ts) or decide when to reload (reloader.ts): `swap` trusts its caller
 * to pass a config that has passed validation.
 */
import { deepFreeze } from './load.js';
import type { GatewayConfig } from './schema.js';

export type ConfigListener = (next: GatewayConfig, prev: GatewayConfig) => void;

export class ConfigSource {
  #config: GatewayConfig;
  #generation = 1;
  readonly #listeners = new Set<ConfigListener>();

  constructor(initial: GatewayConfig) {
    this.#config = deepFreeze(initial);
  }

  /** The snapshot to use for one whole request; frozen, never mutated later. */
  current(): GatewayConfig {
    return this.#config;
  }

  /** 1 for the initial config, +1 per swap. Shown in /status and reload logs. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Makes `next` current, then tells every listener. A throwing listener does not stop the
   * others or undo the swap; the errors are rethrown together afterwards.
   */
  swap(next: GatewayConfig): void {
    const prev = this.#config;
    this.#config = deepFreeze(next);
    this.#generation++;
    const failures: unknown[] = [];
    for (const listener of [...this.#listeners]) {
      try {
        listener(this.#config, prev);
      } catch (err) {
        failures.push(err);
      }
    }
    if (failures.length > 0) {
      throw new AggregateError(failures, `config generation ${this.#generation}: ${failures.length} change listener(s) failed`);
    }
  }

  /** Calls `listener(next, prev)` after every swap; returns the unsubscribe function. */
  onChange(listener: ConfigListener): () => void {
    // Wrap so the same function may subscribe twice and unsubscribe each independently.
    const entry: ConfigListener = (next, prev) => listener(next, prev);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }
}
