/**
 * Request buffering (nginx's `proxy_request_buffering on`, its default): a request body is read
 * whole before the origin is asked, so a client's pace holds no permit and no origin
 * connection. Four photo uploads from phones on a slow link, or four clients dribbling a body
 * a byte a second, held every worker of a PHP origin with four, and the site answered nobody
 * until they were done (attacker trial). Small bodies are kept in memory
 * (BUFFERED_BODY_MAX_BYTES); larger ones are spooled to a file in the temp directory, unlinked
 * as soon as it is open (nothing is left behind, even by a crash), and read back for the
 * origin with a Content-Length (a chunked body becomes a counted one, as with nginx).
 *
 * The bytes spooled at once are capped (`limits.requestBuffering.maxBytes`), counted as they
 * arrive: a body declaring a length the cap has no room for streams as it comes (as without
 * buffering: its permit is given back when it stalls); one that outgrows the room while it
 * arrives is refused (503 `upload_buffer_full`), since what has been read cannot be streamed
 * again. A chunked body that ends within BUFFERED_BODY_MAX_BYTES never leaves memory.
 *
 * The bytes bodies hold in memory at once are capped too (`limits.requestBuffering.memoryBytes`),
 * counted as they arrive and until the body is released: past it a small body goes to a file
 * like a large one, and a large one's bytes are written as they come. Uncounted, one HTTP/2
 * connection's 128 streams that each sent 64 KiB and stalled held 8 MB until the body timeout,
 * and twenty such connections 200 MB (measured).
 *
 * Owns the spool and its budget; forward.ts sends what it holds, pass-through.ts decides when.
 */
import type { IncomingMessage } from 'node:http';
import { mkdtemp, open, rm, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';

/**
 * Request bodies up to this many bytes (a login, a comment, a form) are kept in memory; larger
 * ones are spooled to a file. Also the spool's write size.
 */
export const BUFFERED_BODY_MAX_BYTES = 64 * 1024;

/** A body read whole: sent to the origin as often as asked, then released once. */
export interface BufferedBody {
  readonly length: number;
  /** A new stream of the whole body (each attempt sends its own). */
  stream(): Readable;
  /** Frees the spool (file, budget); idempotent. */
  release(): void;
}

export type SpoolResult =
  | { kind: 'body'; body: BufferedBody }
  /**
   * Not buffered: stream it as it comes (no body, already read, or no room for its declared
   * length); `unbuffered` says why when the spool itself failed (the caller logs it).
   */
  | { kind: 'stream'; unbuffered?: string }
  /** The client went away before the body ended, or its body timed out (the listener answered it). */
  | { kind: 'gone' }
  /** A chunked body grew past `maxBodyBytes`. */
  | { kind: 'too_large' }
  /** A chunked body outgrew the spool's room, or the spool could not be written (disk full). */
  | { kind: 'no_room'; reason: string };

export interface SpoolOptions {
  maxBodyBytes: number;
  /** Bytes all spooled bodies may hold at once. */
  maxBytes: number;
  /** Bytes all bodies may hold in memory at once (read, or waiting for their write); past it they go to files. */
  memoryBytes: number;
  /** Where spool files go; empty: the system's temp directory. */
  directory: string;
}

export class BodySpool {
  private held = 0;
  private memHeld = 0;
  private dirs = new Map<string, Promise<string>>();
  private seq = 0;

  private warnedAt = -Infinity;

  /** True at most once a minute: whether a spool failure should be logged now. */
  warnDue(now: number): boolean {
    if (now - this.warnedAt < 60_000) return false;
    this.warnedAt = now;
    return true;
  }

  /** Bytes spooled to files right now. */
  get bytesHeld(): number {
    return this.held;
  }

  /** Bytes of request bodies in memory right now (kept whole, or waiting for their write). */
  get bytesInMemory(): number {
    return this.memHeld;
  }

  /** Reads `req`'s body whole (see the module comment). */
  async read(req: IncomingMessage, opts: SpoolOptions): Promise<SpoolResult> {
    if (req.readableEnded || req.readableDidRead) return { kind: 'stream' };
    const declaredHeader = req.headers['content-length'];
    const chunked = declaredHeader === undefined && req.headers['transfer-encoding'] !== undefined;
    const declared = declaredHeader === undefined ? undefined : Number(declaredHeader);
    if (!chunked && !(declared !== undefined && declared > 0)) return { kind: 'stream' };
    const small = declared !== undefined && declared <= BUFFERED_BODY_MAX_BYTES;
    // A declared length the room cannot take now streams as before: a large body the file room
    // cannot take, or a small one neither memory nor the file room can. What a body holds of
    // either is what it has sent, counted as it comes: reserved up front, a few connections that
    // declared 100 MB and sent a byte a minute held it all (review).
    if (declared !== undefined && this.held + declared > opts.maxBytes && !(small && this.memHeld + declared <= opts.memoryBytes))
      return { kind: 'stream' };
    let held = 0;
    let mem = 0;
    let file: FileHandle | undefined;
    let opening: Promise<FileHandle> | undefined;
    let released = false;
    if (declared !== undefined && (!small || this.memHeld + declared > opts.memoryBytes)) {
      // A body that will be spooled gets its file first: a directory that cannot be used then
      // streams the body as it would without buffering (nothing read yet), rather than failing
      // the upload. The client may leave meanwhile: heard now, checked after.
      let goneEarly = false;
      const onEarlyGone = () => void (goneEarly = true);
      req.once('close', onEarlyGone);
      req.once('error', onEarlyGone);
      try {
        file = await this.openSpool(opts.directory);
      } catch (err) {
        return { kind: 'stream', unbuffered: (err as Error).message };
      } finally {
        req.off('close', onEarlyGone);
        req.off('error', onEarlyGone);
      }
      if (goneEarly || req.destroyed) {
        void file.close().catch(() => undefined);
        return { kind: 'gone' };
      }
    }
    const holdMemory = (bytes: number) => {
      mem += bytes;
      this.memHeld += bytes;
    };
    const release = () => {
      if (released) return;
      released = true;
      this.held -= held;
      held = 0;
      holdMemory(-mem);
      // The file, or the one still being opened (a chunked body's: `file` comes from it).
      void (file !== undefined ? Promise.resolve(file) : opening)?.then((f) => f.close()).catch(() => undefined);
    };
    // Bytes first gather in memory (a small body never opens a file while memory has room), then
    // go to the file in writes of up to BUFFERED_BODY_MAX_BYTES: at once when the bodies in
    // memory fill `memoryBytes` (many HTTP/2 streams each holding 64 KiB and stalled).
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let length = 0;
    let written = 0;
    // Whether the body's bytes go to a file and count against its room: past
    // BUFFERED_BODY_MAX_BYTES, or once memory had no room for them.
    let spooling = false;
    const flush = async () => {
      if (pendingBytes === 0) return;
      if (file === undefined) {
        opening ??= this.openSpool(opts.directory);
        file = await opening;
      }
      const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      let at = 0;
      while (at < data.length) {
        const { bytesWritten } = await file.write(data, at, data.length - at, written + at);
        at += bytesWritten;
      }
      written += data.length;
      // Not once released: release() gave back all the body held, this write's bytes included
      // (a client gone while it was in flight: subtracted twice, the cap wore away; review).
      if (!released) holdMemory(-data.length);
    };
    const outcome = await new Promise<'end' | 'gone' | 'too_large' | 'no_room' | Error>((resolve) => {
      let writing: Promise<void> = Promise.resolve();
      let settled = false;
      let ended = false;
      const finish = (v: 'end' | 'gone' | 'too_large' | 'no_room' | Error) => {
        if (settled) return;
        settled = true;
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('close', onGone);
        req.off('error', onGone);
        resolve(v);
      };
      const failed = (err: unknown) => finish(err instanceof Error ? err : new Error(String(err)));
      const onData = (chunk: Buffer) => {
        length += chunk.length;
        if (chunked && length > opts.maxBodyBytes) return finish('too_large');
        if (!spooling && (length > BUFFERED_BODY_MAX_BYTES || this.memHeld + chunk.length > opts.memoryBytes)) spooling = true;
        if (spooling) {
          // Spooled: the body's bytes count against the file room.
          const more = length - held;
          if (more > 0) {
            if (this.held + more > opts.maxBytes) return finish('no_room');
            this.held += more;
            held += more;
          }
        }
        pending.push(chunk);
        pendingBytes += chunk.length;
        holdMemory(chunk.length);
        if (!spooling || (pendingBytes < BUFFERED_BODY_MAX_BYTES && this.memHeld <= opts.memoryBytes)) return;
        req.pause();
        writing = writing.then(flush).then(() => void (settled || req.resume()), failed);
      };
      const onEnd = () => {
        ended = true;
        // A body in memory stays there; a spooled one writes its tail.
        if (!spooling) return void writing.then(() => finish('end'), failed);
        writing = writing.then(flush).then(() => finish('end'), failed);
      };
      // (A 'close' after the end is the request's own, once it is answered: not a client gone.)
      const onGone = () => void (ended || finish('gone'));
      req.on('data', onData);
      req.once('end', onEnd);
      req.once('close', onGone);
      req.once('error', onGone);
    });
    if (outcome !== 'end') {
      release();
      if (outcome === 'gone') return { kind: 'gone' };
      if (outcome === 'too_large') return { kind: 'too_large' };
      if (outcome === 'no_room') return { kind: 'no_room', reason: `the request bodies being read hold limits.requestBuffering.maxBytes (${opts.maxBytes} bytes)` };
      return { kind: 'no_room', reason: `the request body could not be spooled: ${outcome.message}` };
    }
    if (!spooling) {
      // Never left memory: it holds its bytes of `memoryBytes` until released.
      const whole = pendingBytes === 0 ? Buffer.alloc(0) : pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      return { kind: 'body', body: { length: whole.length, stream: () => Readable.from([whole]), release } };
    }
    const handle = file!;
    return {
      kind: 'body',
      body: {
        length,
        stream: () => (length === 0 ? Readable.from([]) : handle.createReadStream({ start: 0, end: length - 1, autoClose: false })),
        release,
      },
    };
  }

  /** A new spool file, unlinked at once; its directory made again if it was removed (a tmp cleaner). */
  private async openSpool(base: string): Promise<FileHandle> {
    for (let attempt = 0; ; attempt++) {
      const dir = await this.directory(base);
      const path = join(dir, `body-${process.pid}-${++this.seq}`);
      try {
        const file = await open(path, 'w+', 0o600);
        await unlink(path).catch(() => undefined);
        return file;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt > 0) throw err;
        this.dirs.delete(base === '' ? tmpdir() : base);
      }
    }
  }

  /** Removes the spool directories this process made (at shutdown). */
  async close(): Promise<void> {
    const dirs = [...this.dirs.values()];
    this.dirs.clear();
    await Promise.all(dirs.map((d) => d.then((dir) => rm(dir, { recursive: true, force: true })).catch(() => undefined)));
  }

  /** A directory of this process's own under `base` (made once; made again if it was removed). */
  private async directory(base: string): Promise<string> {
    const root = base === '' ? tmpdir() : base;
    let dir = this.dirs.get(root);
    if (dir === undefined) {
      dir = mkdtemp(join(root, 'crowdgate-body-'));
      this.dirs.set(root, dir);
      dir.catch(() => this.dirs.delete(root));
    }
    const made = await dir;
    return made;
  }
}
