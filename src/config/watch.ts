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
 * - the file does not end in a newline (what a write cut in two looks like: `url:
 *   http://127.0.0.1:491` parsed, and two sites were gone for 0.8 s under load) and a change
 *   of it was seen less than `partialHoldMs` ago -> no callback yet: the rest of it, or the
 *   hold's end, fires.
 *
 * A file missing at two checks in a row (deleted, or moved away, not an editor's save, which
 * puts it back at once) is reported through `onMissing(true)`, and its return through
 * `onMissing(false)`: the gateway keeps serving its running config, but a restart would not
 * start (new-user trial: a deleted config logged nothing).
 *
 * Every `retryMs` the directory is checked too: a watch on a directory that was removed and
 * made again, or moved away (deployment tools that recreate /etc/crowdgate), raises no error on
 * Linux and went silent for good. Then, as when the watch itself fails, it is set again (retried
 * until it can be) and the file is checked. The same check notices a file changed without an
 * event (a file system that sends none).
 *
 * Owns the watch and the debounce. It does not read or validate the file (reloader.ts).
 */
import { closeSync, openSync, readSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

export interface WatchOptions {
  file: string;
  /** Quiet time after the last event before `onChange` runs. */
  debounceMs: number;
  onChange: () => void;
  /** How often to check the directory, and to retry a failed watch. Default 1000. */
  retryMs?: number;
  /** How long a file that does not end in a newline waits for the rest, from its last change. Default 2000. */
  partialHoldMs?: number;
  /** The file went missing (true; at two checks in a row) or came back (false). */
  onMissing?: (missing: boolean) => void;
}

export interface ConfigWatcher {
  close(): void;
}

/** Checks in a row (retryMs apart) that must find the file missing before it is reported. */
const MISSING_CHECKS = 2;

export function watchConfig(options: WatchOptions): ConfigWatcher {
  const file = resolve(options.file);
  const dir = dirname(file);
  const name = basename(file);
  const retryMs = options.retryMs ?? 1_000;
  const partialHoldMs = options.partialHoldMs ?? 2_000;

  let watcher: FSWatcher | null = null;
  let debounce: NodeJS.Timeout | null = null;
  let retry: NodeJS.Timeout | null = null;
  let namedEvent = false;
  let lastIdentity = identityOf(file);
  let closed = false;
  /** The watched directory's identity (device, inode, birth time), to notice it replaced or moved. */
  let watchedDir: string | null = null;
  /** When a change of the file was last seen (monotonic ms): the partial-file hold counts from it. */
  let lastChangeSeenAt = performance.now();
  /** Checks in a row that found the file missing; reported once it is MISSING_CHECKS. */
  let missingChecks = 0;

  function noteMissing(missing: boolean): void {
    if (missing) {
      if (++missingChecks === MISSING_CHECKS) options.onMissing?.(true);
    } else {
      if (missingChecks >= MISSING_CHECKS) options.onMissing?.(false);
      missingChecks = 0;
    }
  }

  function onEvent(_event: string, filename: string | Buffer | null): void {
    // filename may be null on some platforms: treat it as "could be ours".
    const ours = filename === null || filename.toString() === name;
    if (ours) {
      namedEvent = true;
      lastChangeSeenAt = performance.now();
    }
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
    if (changed && !closed) {
      const holdMs = endsMidLine(file) ? Math.ceil(lastChangeSeenAt + partialHoldMs - performance.now()) : 0;
      if (holdMs > 0) {
        debounce = setTimeout(settle, holdMs); // namedEvent kept: the callback is still owed
        return;
      }
    }
    namedEvent = false;
    lastIdentity = identity;
    if (changed && !closed) options.onChange();
  }

  /** The directory replaced, moved or gone: set the watch again. A file changed unseen: check it. */
  function check(): void {
    if (closed) return;
    noteMissing(identityOf(file) === null);
    if (retry) return;
    if (dirIdentityOf(dir) !== watchedDir) {
      watcher?.close();
      watcher = null;
      rewatch();
      return;
    }
    if (!debounce) {
      const identity = identityOf(file);
      if (identity !== null && identity !== lastIdentity) {
        lastChangeSeenAt = performance.now();
        debounce = setTimeout(settle, options.debounceMs);
      }
    }
  }

  function start(): boolean {
    try {
      watchedDir = dirIdentityOf(dir);
      if (watchedDir === null) return false;
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

  /** Sets the watch again (the pending check dropped) and checks the file, or retries later. */
  function rewatch(): void {
    if (debounce) clearTimeout(debounce);
    debounce = null;
    if (start()) settle();
    else scheduleRetry();
  }

  function scheduleRetry(): void {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = null;
      if (!closed) rewatch();
    }, retryMs);
    retry.unref();
  }

  if (!start()) scheduleRetry();
  const checker = setInterval(check, retryMs);
  checker.unref();

  return {
    close() {
      closed = true;
      clearInterval(checker);
      watcher?.close();
      watcher = null;
      if (debounce) clearTimeout(debounce);
      if (retry) clearTimeout(retry);
      debounce = retry = null;
    },
  };
}

/** The directory's device, inode and birth time; null when it is missing. */
function dirIdentityOf(dir: string): string | null {
  try {
    // The birth time too: a directory removed and made again may get the same inode (ext4).
    const s = statSync(dir, { bigint: true });
    return `${s.dev}:${s.ino}:${s.birthtimeNs}`;
  } catch {
    return null;
  }
}

/**
 * True when the file does not end in a newline (editors and config tools end files with one; a
 * write cut in two mostly does not), or is empty. The hold that follows counts from when the change was
 * seen, on this process's monotonic clock: never from the file's mtime, which a clock-skewed
 * file system or `touch -d` can put days ahead (a reload held that long, or a timer past
 * 2^31 ms firing back to back; review).
 */
function endsMidLine(file: string): boolean {
  let fd: number | undefined;
  try {
    const s = statSync(file);
    // Empty: truncated by a writer that has not written yet (truncate, then write). Reloaded
    // at once it was refused as empty, logged as a failed reload and could fire the alert,
    // while the writer was half a second from done (config-edit trial).
    if (s.size === 0) return true;
    fd = openSync(file, 'r');
    const last = Buffer.alloc(1);
    readSync(fd, last, 0, 1, s.size - 1);
    return last[0] !== 0x0a;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
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
