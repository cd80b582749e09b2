/**
 * Live reload of the config file, as the gateway runs it: the reloader (reloader.ts), the file
 * watch (watch.ts) when `reload.watch` is on, and the reload metrics
 * (crowdgate_config_reloads_total by result, crowdgate_config_last_reload_success). SIGHUP
 * (main.ts) and tests ask through reload(); the watch asks with reason 'watch'.
 */
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
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
}

/** close() stops the watch, then the reloader (queued reloads resolve refused). */
export function startLiveReload(opts: LiveReloadOptions): Reloader {
  const { file, source, logger, metrics } = opts;
  const reloader = createReloader({
    file,
    source,
    logger,
    onResult: (o) => {
      metrics.get('configReloads').inc({ result: o.ok ? 'success' : 'failure' });
      metrics.get('configLastReloadSuccess').set(o.ok ? 1 : 0);
    },
  });
  const watcher = opts.reload.watch
    ? watchConfig({ file, debounceMs: opts.reload.debounceMs, onChange: () => void reloader.reload('watch') })
    : undefined;
  return {
    reload: (reason) => reloader.reload(reason),
    close: () => {
      watcher?.close();
      reloader.close();
    },
  };
}
