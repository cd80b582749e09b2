/**
 * Live reload of the config file, as the gateway runs it: the reloader (reloader.ts), the file
 * watch (watch.ts) when `reload.watch` is on, and the reload metrics
 * (crowdgate_config_reloads_total by result, crowdgate_config_last_reload_success). SIGHUP
 * (main.ts) and tests ask through reload(); the watch asks with reason 'watch'.
 */
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import { formatConfigError } from './load.js';
import { createReloader, type ReloadLogger, type Reloader } from './reloader.js';
import type { GatewayConfig } from './schema.js';
import type { ConfigSource } from './source.js';
import { watchConfig } from './watch.js';

export interface LiveReloadOptions {
  file: string;
  source: ConfigSource;
  logger: ReloadLogger;
  metrics: GatewayMetrics;
  /** The `reload:` block at start: the watch is set up once (changing it takes a restart). */
  reload: GatewayConfig['reload'];
  /** Milliseconds since the epoch, for `LastReload.at` (the gateway's clock). */
  now?: () => number;
  /** The watch's check period (watch.ts retryMs; tests). */
  watchRetryMs?: number;
}

/** The last reload attempt, as /status.json and the status page show it. */
export interface LastReload {
  /** When it finished (ms since the epoch). */
  at: number;
  reason: string;
  ok: boolean;
  /** The generation running after it (unchanged when refused). */
  generation: number;
  /** Refused: the first errors, as the log has them (`file:line:col path: message`). */
  errors: string[];
  /** How many errors there were in all. */
  errorCount: number;
  /**
   * Keys whose value in the file waits for a restart: as the last accepted reload found them
   * (a refused edit leaves them waiting; it used to clear the list and the page's note).
   */
  restartRequired: string[];
}

/** How many of a refused reload's errors /status.json repeats (the log has them all). */
const SHOWN_ERRORS = 5;

export interface LiveReload extends Reloader {
  /** The last attempt since start; undefined before the first. */
  last(): LastReload | undefined;
}

/** close() stops the watch, then the reloader (queued reloads resolve refused). */
export function startLiveReload(opts: LiveReloadOptions): LiveReload {
  const { file, source, logger, metrics } = opts;
  const now = opts.now ?? Date.now;
  let last: LastReload | undefined;
  let pendingRestart: string[] = [];
  const reloader = createReloader({
    file,
    source,
    logger,
    onResult: (o) => {
      metrics.get('configReloads').inc({ result: o.ok ? 'success' : 'failure' });
      metrics.get('configLastReloadSuccess').set(o.ok ? 1 : 0);
      if (o.ok) pendingRestart = o.restartRequired;
      metrics.get('configRestartPending').set(pendingRestart.length > 0 ? 1 : 0);
      last = {
        at: now(),
        reason: o.reason,
        ok: o.ok,
        generation: o.generation,
        errors: o.ok ? [] : o.errors.slice(0, SHOWN_ERRORS).map(formatConfigError),
        errorCount: o.ok ? 0 : o.errors.length,
        restartRequired: pendingRestart,
      };
    },
  });
  const watcher = opts.reload.watch
    ? watchConfig({
        file,
        debounceMs: opts.reload.debounceMs,
        onChange: () => void reloader.reload('watch'),
        ...(opts.watchRetryMs !== undefined ? { retryMs: opts.watchRetryMs } : {}),
        onMissing: (missing) => {
          if (!missing) {
            logger.info({ file }, 'config file back');
            void reloader.reload('watch'); // its state on the page and in the metrics: the file's again
            return;
          }
          const message = 'config file missing: the running config is kept, but a restart would fail until the file is back';
          logger.warn({ file }, message);
          // As a refused reload, so that what shows one shows this: the metrics (and the
          // CrowdgateConfigReloadFailed alert), the status page, /status.json. A log line
          // alone left ops unaware that the next restart would fail (ops trial).
          metrics.get('configReloads').inc({ result: 'failure' });
          metrics.get('configLastReloadSuccess').set(0);
          last = {
            at: now(),
            reason: 'watch',
            ok: false,
            generation: source.generation,
            errors: [`${file}: ${message}`],
            errorCount: 1,
            restartRequired: pendingRestart,
          };
        },
      })
    : undefined;
  return {
    reload: (reason) => reloader.reload(reason),
    last: () => last,
    close: () => {
      watcher?.close();
      reloader.close();
    },
  };
}
