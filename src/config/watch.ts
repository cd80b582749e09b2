/**
 * Tells the reloader when the config file has changed on disk.
 *
 * Watches the file's DIRECTORY, not the file: editors that save by writing a temp file and
 * renaming it over the original replace the inode, and a watch on the old inode would go
 * silent. The file's own events are debounced (the timer restarts on each, so a burst of
 * writes gives one callback `debounceMs` after the last one); other names' events start a
 * check when none is pending but never restart one (a busy log file beside the config).
 *
 * When the timer fires:
 * - the file is missing (deleted, or between unlink and re-create) -> no callback; the
 *   re-create is another event and fires then. A reload of a half-saved file is not useful.
 * - some event named the file (or named nothing) -> callback.
 * - only other names changed -> callback if the file's identity (device, inode, size, mtime,
 *   following symlinks) changed. This catches Kubernetes ConfigMap updates, where a `..data`
 *   symlink is swapped and the file's own name never appears in an event.
 *
 * If the watch itself fails (the directory was removed), it is retried every
 * `retryMs` until it can be set again, and the file is checked then.
 *
 * Owns the watch and the debounce. It does not read or validate the file (reloader.ts).
 */
import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

export interface WatchOptions {
  file: string;
  /** Quiet time after the last event before `onChange` runs. */
  debounceMs: number;
  onChange: () => void;
  /** How often to try re-establishing a failed directory watch. Default 1000. */
  retryMs?: number;
}

export interface ConfigWatcher {
  close(): void;
}

export function watchConfig(options: WatchOptions): ConfigWatcher {
  const file = resolve(options.file);
  const dir = dirname(file);
  const name = basename(file);
  const retryMs = options.retryMs ?? 1_000;

  let watcher: FSWatcher | null = null;
  let debounce: NodeJS.Timeout | null = null;
  let retry: NodeJS.Timeout | null = null;
  let namedEvent = false;
  let lastIdentity = identityOf(file);
  let closed = false;

  function onEvent(_event: string, filename: string | Buffer | null): void {
    // filename may be null on some platforms: treat it as "could be ours".
    const ours = filename === null || filename.toString() === name;
    if (ours) namedEvent = true;
    // Only the file's own events restart the debounce: another file in the directory written
    // more often than debounceMs (an access log next to the config) kept restarting it, and
    // an edit was never applied. Another name's event starts a check if none is pending (a
    // swapped `..data` symlink names no file of ours), and never delays one.
    if (debounce) {
      if (!ours) return;
      clearTimeout(debounce);
    }
    debounce = setTimeout(settle, options.debounceMs);
  }

  function settle(): void {
    debounce = null;
    const identity = identityOf(file);
    if (identity === null) return; // missing for now; its return is an event of its own
    const changed = namedEvent || identity !== lastIdentity;
    namedEvent = false;
    lastIdentity = identity;
    if (changed && !closed) options.onChange();
  }

  function start(): boolean {
    try {
      watcher = watch(dir, { persistent: false }, onEvent);
      watcher.on('error', () => {
        watcher?.close();
        watcher = null;
        scheduleRetry();
      });
      return true;
    } catch {
      return false;
    }
  }

  function scheduleRetry(): void {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = null;
      if (closed) return;
      if (start()) settle();
      else scheduleRetry();
    }, retryMs);
    retry.unref();
  }

  if (!start()) scheduleRetry();

  return {
    close() {
      closed = true;
      watcher?.close();
      watcher = null;
      if (debounce) clearTimeout(debounce);
      if (retry) clearTimeout(retry);
      debounce = retry = null;
    },
  };
}

/** A string that changes when the file is replaced or rewritten; null when it is missing. */
function identityOf(file: string): string | null {
  try {
    const s = statSync(file, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
  } catch {
    return null;
  }
}
