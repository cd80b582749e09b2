/**
 * Config -> limit algorithm. Kept apart from the contract (limit.ts), which the algorithms
 * import, so that no module imports its own importer.
 */
import type { LimitConfig } from '../../config/schema.js';
import { AimdLimit } from './aimd.js';
import { FixedLimit } from './fixed.js';
import { Gradient2Limit } from './gradient2.js';
import type { Limit } from './limit.js';

/** Builds the configured algorithm. `ceiling` is not applied here: the Limiter applies it. */
export function makeLimit(cfg: Pick<LimitConfig, 'algorithm' | 'initial' | 'min' | 'max'>): Limit {
  switch (cfg.algorithm) {
    case 'fixed':
      return new FixedLimit(cfg.initial);
    case 'aimd':
      return new AimdLimit({ initial: cfg.initial, min: cfg.min, max: cfg.max });
    case 'gradient2':
      return new Gradient2Limit({ initial: cfg.initial, min: cfg.min, max: cfg.max });
  }
}
