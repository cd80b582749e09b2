/**
 * Reloading the config file into a ConfigSource: read, validate fully, and swap only when the
 * whole file is valid. An invalid file is refused with every error logged as
 * `file:line:col path: message`; the running config stays as it was.
 *
 * Restart-only keys (RESTART_KEYS in schema.ts: listeners, header size, cache size, Redis, the file watch) cannot change in
 * a running process. When the file changes one of them the reloader warns that a restart is
 * needed and carries the RUNNING value over into the new snapshot, so `current()` always
 * describes what the process is actually doing; every other key applies live.
 *
 * Reloads never overlap: a reload asked for while one runs is queued, and any number of asks
 * during one run collapse into a single follow-up run, which reads the file as it is then.
 *
 * Owns the reload sequence and its logging. It does not watch the file (watch.ts) or install
 * the SIGHUP handler (main.ts): both just call `reload()`.
 */
import { readFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { formatConfigError, loadConfigFile, type ConfigError, type ParseOptions } from './load.js';
import { RESTART_KEYS, type GatewayConfig } from './schema.js';
import type { ConfigSource } from './source.js';

export type ReloadReason = 'signal' | 'watch' | 'manual';

/** The subset of a pino logger the reloader uses. */
export interface ReloadLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export type ReloadOutcome =
  | {
      ok: true;
      reason: ReloadReason;
      /** The source's generation after this reload. */
      generation: number;
      /** False when the file validated but nothing that can apply live differed: no swap. */
      changed: boolean;
      /** RESTART_KEYS whose value in the file differs from the running one (kept as running). */
      restartRequired: string[];
    }
  | {
      ok: false;
      reason: ReloadReason;
      /** The generation still running. */
      generation: number;
      errors: ConfigError[];
    };

export interface ReloaderOptions {
  file: string;
  source: ConfigSource;
  logger: ReloadLogger;
  /** Called after every reload attempt (for metrics: reload counter, last-success gauge). */
  onResult?: (outcome: ReloadOutcome) => void;
  /** Passed to the loader (`env` for `${NAME}` substitution). */
  parseOptions?: ParseOptions;
  /**
   * How long a watched edit that removes a site or a route waits for the file to settle before
   * it applies (see attempt). Default REMOVAL_HOLD_MS.
   */
  removalHoldMs?: number;
  /** Waits `ms` (injectable for tests). Default a timer. */
  sleep?: (ms: number) => Promise<void>;
}

/** See ReloaderOptions.removalHoldMs. */
export const REMOVAL_HOLD_MS = 2_000;
/** A file still changing after this many holds applies as it is then. */
const MAX_REMOVAL_HOLDS = 3;

export interface Reloader {
  /** Resolves once the file has been read as it is at or after this call. Never rejects. */
  reload(reason: ReloadReason): Promise<ReloadOutcome>;
  /** Queued reloads resolve refused; a reload already running finishes. */
  close(): void;
}

interface Batch {
  reason: ReloadReason;
  resolvers: Array<(o: ReloadOutcome) => void>;
}

export function createReloader(options: ReloaderOptions): Reloader {
  const { file, source, logger, onResult } = options;
  let busy = false;
  let queued: Batch | null = null;
  let closed = false;

  const closedOutcome = (reason: ReloadReason): ReloadOutcome => ({
    ok: false,
    reason,
    generation: source.generation,
    errors: [{ file, line: 1, col: 1, path: '(root)', message: 'reloader is closed' }],
  });

  async function drive(first: Batch): Promise<void> {
    let batch: Batch | null = first;
    while (batch !== null) {
      const outcome = await runOnce(batch.reason);
      for (const resolve of batch.resolvers) resolve(outcome);
      batch = queued;
      queued = null;
      if (batch !== null && closed) {
        for (const resolve of batch.resolvers) resolve(closedOutcome(batch.reason));
        batch = null;
      }
    }
    busy = false;
  }

  async function runOnce(reason: ReloadReason): Promise<ReloadOutcome> {
    let outcome: ReloadOutcome;
    try {
      outcome = await attempt(reason);
    } catch (err) {
      // Not expected (the loader does not throw); keep the old config and say why.
      const error: ConfigError = { file, line: 1, col: 1, path: '(root)', message: `reload failed: ${String(err)}` };
      logger.error({ reason, err }, formatConfigError(error));
      outcome = { ok: false, reason, generation: source.generation, errors: [error] };
    }
    try {
      onResult?.(outcome);
    } catch (err) {
      logger.error({ reason, err }, 'config reload onResult callback failed');
    }
    return outcome;
  }

  async function attempt(reason: ReloadReason, holds = 0): Promise<ReloadOutcome> {
    const seen = reason === 'watch' ? await readText(file) : undefined;
    const result = await loadConfigFile(file, options.parseOptions);
    const prev = source.current();
    // A watched edit that removes a site or a route waits for the file to stay as it is: a
    // write cut exactly at a line's end parses, and a two-site file cut before its second site
    // sent 95 of that site's requests to the first site's origin in the second before the rest
    // came (config-edit trial). Read again after the hold, a file still changing is taken up
    // again; one that is not applies. A signal or a manual reload means the file is ready.
    const removals = result.ok && seen !== undefined && holds < MAX_REMOVAL_HOLDS ? removalsOf(prev, result.config) : [];
    if (removals.length > 0) {
      const holdMs = options.removalHoldMs ?? REMOVAL_HOLD_MS;
      logger.info({ reason, file, holdMs }, `config edit removes ${removals.join(', ')}: applying it once the file has not changed for ${holdMs} ms`);
      await (options.sleep ?? defaultSleep)(holdMs);
      if ((await readText(file)) !== seen) return attempt(reason, holds + 1);
    }
    if (!result.ok) {
      for (const e of result.errors) {
        logger.error({ reason, file: e.file, line: e.line, col: e.col, path: e.path }, formatConfigError(e));
      }
      logger.warn(
        { reason, file, errors: result.errors.length, generation: source.generation },
        `config reload refused: ${result.errors.length} error(s); still running generation ${source.generation}`,
      );
      return { ok: false, reason, generation: source.generation, errors: result.errors };
    }

    const restartRequired = changedRestartKeys(prev, result.config);
    const next = keepRestartKeys(result.config, prev, restartRequired);
    if (restartRequired.length > 0) {
      logger.warn(
        { reason, file, keys: restartRequired },
        `config changes ${restartRequired.join(', ')}: these need a restart; running with the old values until then`,
      );
    }
    if (isDeepStrictEqual(next, prev)) {
      logger.info({ reason, file, generation: source.generation }, 'config reloaded: nothing to apply');
      return { ok: true, reason, generation: source.generation, changed: false, restartRequired };
    }
    // A valid file's warnings, once per change (an unchanged file saved again repeats nothing).
    for (const w of result.warnings ?? []) logger.warn({ reason, file: w.file, line: w.line, col: w.col, path: w.path }, `${formatConfigError(w)} (warning)`);
    try {
      source.swap(next);
    } catch (err) {
      // The swap happened; a component failed to follow it. Loud, but the new config stands.
      logger.error({ reason, err, generation: source.generation }, 'config applied but a change listener failed');
    }
    const changes = summariseChange(prev, next);
    logger.info(
      { reason, file, generation: source.generation, changes },
      `config reloaded: generation ${source.generation}${changes.length > 0 ? ` (${changes.join('; ')})` : ''}`,
    );
    for (const line of orphanedCaches(prev, next)) logger.warn({ reason, file, generation: source.generation }, line);
    return { ok: true, reason, generation: source.generation, changed: true, restartRequired };
  }

  return {
    reload(reason) {
      if (closed) return Promise.resolve(closedOutcome(reason));
      return new Promise<ReloadOutcome>((resolve) => {
        if (!busy) {
          busy = true;
          void drive({ reason, resolvers: [resolve] });
        } else {
          queued ??= { reason, resolvers: [] };
          queued.resolvers.push(resolve);
        }
      });
    },
    close() {
      closed = true;
    },
  };
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The file's text, or '' when it cannot be read (the loader says why). */
async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

/** Sites and routes (by name) in `prev` that `next` lacks, in words. */
function removalsOf(prev: GatewayConfig, next: GatewayConfig): string[] {
  const out: string[] = [];
  for (const site of prev.sites) {
    const kept = next.sites.find((s) => s.name === site.name);
    if (!kept) out.push(`site "${site.name}"`);
    else for (const route of site.routes) if (!kept.routes.some((r) => r.name === route.name)) out.push(`route "${site.name}/${route.name}"`);
  }
  return out;
}

/** The RESTART_KEYS (dotted paths) whose values differ between two configs. */
export function changedRestartKeys(prev: GatewayConfig, next: GatewayConfig): string[] {
  return RESTART_KEYS.filter((key) => !isDeepStrictEqual(valueAt(prev, key), valueAt(next, key)));
}

/** A copy of `next` with the listed dotted keys set back to their values in `running`. */
function keepRestartKeys(next: GatewayConfig, running: GatewayConfig, keys: readonly string[]): GatewayConfig {
  if (keys.length === 0) return next;
  const copy = structuredClone(next) as Record<string, unknown>;
  for (const key of keys) {
    const parts = key.split('.');
    const last = parts.pop()!;
    let target = copy;
    for (const p of parts) target = target[p] as Record<string, unknown>;
    const value = valueAt(running, key);
    if (value === undefined) delete target[last];
    else target[last] = structuredClone(value);
  }
  return copy as GatewayConfig;
}

function valueAt(config: GatewayConfig, dotted: string): unknown {
  let v: unknown = config;
  for (const p of dotted.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

/**
 * A warning for each site a reload removed: the site's name is in every key of its cached
 * copies, so under another name (a rename: a new site with the same hosts) it starts with an
 * empty cache and no stale copy to answer with while its origin fails. Renaming a site during
 * an outage turned its stale pages into the origin's 503s, and the log said only "sites
 * removed: blog" (failure-day trial).
 */
export function orphanedCaches(prev: GatewayConfig, next: GatewayConfig): string[] {
  const kept = new Set(next.sites.map((s) => s.name));
  const lines = prev.sites
    .filter((s) => !kept.has(s.name))
    .map((s) => {
      const heir = next.sites.find((n) => !prev.sites.some((p) => p.name === n.name) && isDeepStrictEqual([...n.hosts].sort(), [...s.hosts].sort()));
      return heir
        ? `site "${s.name}" renamed to "${heir.name}": the name is in every cache key, so "${heir.name}" starts with an empty cache (no stale copies while its origin fails); "${s.name}"'s copies stay unused until they age out or the name comes back (then they are revalidated before use)`
        : `site "${s.name}" removed: its cached copies stay unused until they age out or a site of that name comes back (then they are revalidated before use)`;
    });
  // A route's key template changed: its copies are stored under keys the new template no
  // longer makes. During an outage every stale page of the route turned into a 502 at once,
  // and the log said only "sites changed: blog" (config-edit trial).
  for (const site of next.sites) {
    const before = prev.sites.find((p) => p.name === site.name);
    if (!before) continue;
    for (const route of site.routes) {
      const old = before.routes.find((r) => r.name === route.name);
      if (!old) continue;
      const parts = KEY_PARTS.filter((part) => !isDeepStrictEqual(keyPart(old.cache.key, part), keyPart(route.cache.key, part)));
      if (parts.length > 0)
        lines.push(
          `site "${site.name}" route "${route.name}": cache key changed (${parts.join(', ')}): its pages start with an empty cache (no stale copies while the origin fails); the old copies stay unused until they age out or the key is changed back (then they are revalidated before use)`,
        );
    }
  }
  return lines;
}

/**
 * A route's key template as its keys see it (every part that makes keys, in a canonical form):
 * equal for two templates that make the same keys.
 */
export function keyTemplateSignature(key: GatewayConfig['sites'][number]['routes'][number]['cache']['key']): string {
  return JSON.stringify(KEY_PARTS.map((part) => keyPart(key, part) ?? null));
}

/** The parts of a route's key template that make its keys (not ignoreCookies, which only decides passes). */
const KEY_PARTS = ['query', 'params', 'dropTracking', 'headers', 'cookies'] as const;

/** One part as the keys see it: lists in any order, header names in any case. */
function keyPart(key: GatewayConfig['sites'][number]['routes'][number]['cache']['key'], part: (typeof KEY_PARTS)[number]): unknown {
  const value = key[part];
  if (!Array.isArray(value)) return value;
  return [...new Set(part === 'headers' ? value.map((h) => h.toLowerCase()) : value)].sort();
}

/**
 * What a reload changed, in words for the log line: sites added, removed (by name) and changed,
 * then the other top-level sections that differ. A half-written file that parsed (the first
 * sites of a list) shows here as "sites removed: docs", not as a bare generation number.
 */
/** The top-level keys whose values differ between two objects, in the newer one's order. */
function changedKeys(prev: object, next: object): string[] {
  const a = prev as Record<string, unknown>;
  const b = next as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])];
  return keys.filter((k) => !isDeepStrictEqual(a[k], b[k]));
}

export function summariseChange(prev: GatewayConfig, next: GatewayConfig): string[] {
  const out: string[] = [];
  const before = new Map(prev.sites.map((s) => [s.name, s]));
  const after = new Map(next.sites.map((s) => [s.name, s]));
  const added = [...after.keys()].filter((n) => !before.has(n));
  const removed = [...before.keys()].filter((n) => !after.has(n));
  // Each changed site with the keys that changed in it (`blog (origins)`): "sites changed: blog"
  // alone did not say that an edit had moved the site to another origin (new-user trial).
  const changed = [...after.keys()]
    .filter((n) => before.has(n) && !isDeepStrictEqual(before.get(n), after.get(n)))
    .map((n) => `${n} (${changedKeys(before.get(n)!, after.get(n)!).join(', ')})`);
  if (added.length > 0) out.push(`sites added: ${added.join(', ')}`);
  if (removed.length > 0) out.push(`sites removed: ${removed.join(', ')}`);
  if (changed.length > 0) out.push(`sites changed: ${changed.join(', ')}`);
  const sections = (Object.keys(next) as Array<keyof GatewayConfig>).filter(
    (k) => k !== 'sites' && !isDeepStrictEqual(prev[k], next[k]),
  );
  if (sections.length > 0) out.push(`changed: ${sections.join(', ')}`);
  return out;
}
