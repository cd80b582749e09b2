/**
 * One origin request on behalf of the cache (fills and revalidations), with undici: these have
 * no client request of their own, so they are not tied to any client connection — a client that
 * leaves does not cancel the fill the others wait on. Owns timeouts, the body cap and mapping
 * failures to a small set of kinds. It does not take permits (the caller holds one) nor decide
 * what to store.
 */
import diagnostics from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { Client, Pool, errors as undiciErrors } from 'undici';
import { ownBytes } from '../bytes.js';
import type { Clock } from '../clock.js';

/**
 * How an origin request failed. `connect_error`, `timeout` and `reset` say the member is in
 * trouble; `bad_response` is an answer that could not be parsed (the application's fault, like
 * a 500); `error` is anything else, which in practice is the request itself (a header the
 * HTTP client refuses to send) or a gateway bug: it says nothing about the member.
 */
export type FetchFailure = 'connect_error' | 'timeout' | 'reset' | 'bad_response' | 'error';

export interface FetchedHead {
  status: number;
  headers: Record<string, string | string[]>;
  /** RFC 9111 §4.2.3 request_time / response_time, epoch ms. */
  requestTime: number;
  responseTime: number;
}

export type FetchResult =
  | (FetchedHead & { ok: true; body: Buffer })
  /** Larger than the cap: the body was abandoned, not buffered. */
  | (FetchedHead & { ok: true; tooLarge: true })
  | {
      ok: false;
      failure: FetchFailure;
      error: Error;
      requestTime: number;
      responseTime: number;
      /**
       * The origin closed or reset a reused keep-alive connection before any byte of the
       * answer arrived (see `tagsReusedResets`): most likely it closed the connection as idle
       * while our request was on its way, so the request may be sent again on a new connection.
       */
      reusedConnection?: true;
    };

export interface FetchRequest {
  origin: URL;
  method: 'GET' | 'HEAD';
  path: string;
  headers: Record<string, string>;
  connectMs: number;
  responseHeadersMs: number;
  idleMs: number;
  maxBodyBytes: number;
  /**
   * Send it on a new connection of its own (closed afterwards) rather than one from the
   * member's pool: the retry of a request whose reused connection was reset, where the pool
   * may hold more connections the origin has just closed.
   */
  freshConnection?: boolean;
  /** Called with the answer's head once it is in, before its body is read (a fill's waiters may then wait for the body). */
  onHead?: (head: FetchedHead) => void;
}

export class OriginFetcher {
  private readonly pools = new Map<string, Pool>();

  /** One-off clients of fresh-connection requests still running (destroyed by close()). */
  private readonly oneOff = new Set<Client>();

  constructor(private readonly clock: Clock) {
    tagReusedResets();
  }

  private poolFor(origin: URL, connectMs: number): Pool {
    const id = `${origin.origin}|${connectMs}`;
    let pool = this.pools.get(id);
    if (!pool) {
      pool = new Pool(origin.origin, {
        connections: 256,
        pipelining: 1,
        keepAliveTimeout: 4_000,
        connect: { timeout: connectMs },
      });
      this.pools.set(id, pool);
    }
    return pool;
  }

  async fetch(req: FetchRequest): Promise<FetchResult> {
    if (!req.freshConnection) return this.fetchWith(this.poolFor(req.origin, req.connectMs), req);
    const client = new Client(req.origin.origin, { pipelining: 1, connect: { timeout: req.connectMs } });
    this.oneOff.add(client);
    try {
      return await this.fetchWith(client, req);
    } finally {
      // The body was read or dropped by now: nothing else will use this connection.
      this.oneOff.delete(client);
      void client.destroy().catch(() => undefined);
    }
  }

  private async fetchWith(dispatcher: Pool | Client, req: FetchRequest): Promise<FetchResult> {
    const requestTime = this.clock.now();
    // Names this request in undici's diagnostics (cutByReset): a body its close delimits, ended by a reset.
    const ticket = {};
    let res;
    try {
      res = await dispatcher.request({
        method: req.method,
        path: req.path,
        headers: req.headers,
        headersTimeout: req.responseHeadersMs,
        bodyTimeout: req.idleMs,
        opaque: ticket,
      });
    } catch (err) {
      const failure = classifyFetchError(err);
      const failed = { ok: false as const, failure, error: err as Error, requestTime, responseTime: this.clock.now() };
      return failure === 'reset' && reusedResets.has(err as object) ? { ...failed, reusedConnection: true } : failed;
    }
    const responseTime = this.clock.now();
    if (!isValidStatus(res.statusCode)) {
      // RFC 9110 §15: a status is 100-599 (undici takes any three digits): a bad answer.
      res.body.on('error', () => {});
      res.body.destroy();
      return { ok: false, failure: 'bad_response', error: new Error(`origin answered status ${res.statusCode}`), requestTime, responseTime };
    }
    if (hasCompressingTransferCoding(res.headers['transfer-encoding'])) {
      res.body.on('error', () => {});
      res.body.destroy();
      return { ok: false, failure: 'bad_response', error: new Error(`origin answered Transfer-Encoding: ${String(res.headers['transfer-encoding'])}`), requestTime, responseTime };
    }
    const head: FetchedHead = {
      status: res.statusCode,
      headers: singleValued(res.headers as Record<string, string | string[]>),
      requestTime,
      responseTime,
    };
    req.onHead?.(head);
    if (res.statusCode === 304 || req.method === 'HEAD') {
      // No content, whatever Content-Length says (RFC 9110 §8.6: a 304 or a HEAD answer may
      // carry the selected representation's length). undici 7 still counts the missing bytes
      // and fails the body with a length mismatch: drop it unread, and that error with it.
      res.body.on('error', () => {});
      res.body.destroy();
      return { ...head, ok: true, body: Buffer.alloc(0) };
    }
    // An answer that is a stream with no end (server-sent events, an MJPEG camera) is never
    // stored: read for a fill, it held the fill, its permit and every waiter until the origin
    // stopped, which it never does (failure-day trial: 25 abandoned event streams pinned every
    // permit for good). Handled as too large: dropped unread, and streamed to the client.
    if (isEndlessStream(res.headers['content-type'])) {
      res.body.on('error', () => {});
      res.body.destroy();
      return { ...head, ok: true, tooLarge: true };
    }
    const declared = Number(res.headers['content-length']);
    if (Number.isFinite(declared) && declared > req.maxBodyBytes) {
      // Dropped unread: undici fails the body with RequestAbortedError, an uncaught exception
      // without a listener (whenever the whole body had already arrived).
      res.body.on('error', () => {});
      res.body.destroy();
      return { ...head, ok: true, tooLarge: true };
    }
    // Buffer up to the cap; past it, give up on the body (the caller streams it with http-proxy).
    const body = await readCapped(res.body, req.maxBodyBytes);
    if (body === 'too_large') return { ...head, ok: true, tooLarge: true };
    if (body instanceof Error) {
      return { ok: false, failure: classifyFetchError(body), error: body, requestTime, responseTime };
    }
    if (cutByReset.has(ticket)) {
      // The body had no length and no chunks (its close ends it: `php -S` answers so) and the
      // connection was reset, not closed: undici ends such a body there as if complete, and the
      // first part of a page (a script, a style sheet) was stored as the whole for its lifetime
      // (an odd-origin trial; nginx stores nothing). A bad answer: not stored, not blamed on the
      // member (an origin that always resets after its answers would otherwise be ejected).
      return { ok: false, failure: 'bad_response', error: new Error('origin reset the connection during a body delimited by its close'), requestTime, responseTime };
    }
    return { ...head, ok: true, body };
  }

  async close(): Promise<void> {
    const dispatchers = [...this.pools.values(), ...this.oneOff];
    this.pools.clear();
    this.oneOff.clear();
    await Promise.all(dispatchers.map((p) => p.destroy().catch(() => undefined)));
  }
}

/**
 * Fields HTTP/2 sends once (Node's http2 throws ERR_HTTP2_HEADER_SINGLE_VALUE for more, and the
 * stream is never answered). undici gives a repeated field as an array. The list fields among
 * them (LIST_FIELDS) are joined with `, ` as RFC 9110 §5.3 allows; for the others a second
 * value is an error, and the first is kept, as node:http keeps it for most of them.
 */
const LIST_FIELDS: ReadonlySet<string> = new Set(['content-encoding', 'content-language']);
const SINGLE_VALUE_FIELDS: ReadonlySet<string> = new Set([
  'access-control-allow-credentials',
  'access-control-max-age',
  'access-control-request-method',
  'age',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'etag',
  'expires',
  'from',
  'last-modified',
  'location',
  'max-forwards',
  'retry-after',
  'tk',
  'x-content-type-options',
]);

/** The origin's header fields with a repeated single-value field (SINGLE_VALUE_FIELDS) sent once: a list field joined, another's first value. */
export function singleValued(headers: Record<string, string | string[]>): Record<string, string | string[]> {
  let out: Record<string, string | string[]> | undefined;
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (!Array.isArray(value) || !SINGLE_VALUE_FIELDS.has(name)) continue;
    out ??= { ...headers };
    out[name] = LIST_FIELDS.has(name) ? value.join(', ') : (value[0] ?? '');
  }
  return out ?? headers;
}

/** RFC 9110 §15: a status code is 100-599; parsers accept any three digits. */
export function isValidStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 100 && status <= 599;
}

/**
 * An answer framed with a transfer coding that compresses (`Transfer-Encoding: gzip, chunked`).
 * The HTTP parsers (undici's and Node's) take the chunks off and hand over the rest still
 * gzipped, under a head that no longer says so: stored, that was a page of gzip bytes served as
 * text to everyone (an attacker trial). A bad answer, as nginx has it (502 "upstream sent
 * unknown Transfer-Encoding"). The registered codings that change the bytes (RFC 9112 §7,
 * IANA's registry: compress, deflate, gzip and their x- names) and the content codings an
 * origin might send there (br, zstd); a token outside them names no coding anyone applies, and
 * its body is read to the close as RFC 9112 §6.3 says (the HTTP cache conformance suite sends
 * such a token and expects the answer stored, without the field).
 */
const COMPRESSING_CODINGS: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'compress', 'x-compress', 'br', 'zstd']);

export function hasCompressingTransferCoding(te: string | string[] | undefined): boolean {
  if (te === undefined) return false;
  for (const field of Array.isArray(te) ? te : [te]) {
    for (const coding of field.split(',')) {
      if (COMPRESSING_CODINGS.has(coding.split(';')[0]!.trim().toLowerCase())) return true;
    }
  }
  return false;
}

/**
 * A TLS handshake with an https origin that failed: its certificate did not verify
 * (self-signed, another name, expired, an unknown CA) or the protocols did not agree. The
 * connection could not be made: a connect error, never a gateway bug (it answered every
 * request 500 internal_error while the probes said why).
 */
export function isTlsFailure(code: string | undefined): boolean {
  return (
    code !== undefined &&
    (code === 'EPROTO' ||
      code.startsWith('ERR_TLS_') ||
      code.startsWith('ERR_SSL_') ||
      /^(?:DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(?:_LOCALLY)?|CERT_[A-Z_]+|HOSTNAME_MISMATCH)$/.test(code))
  );
}

export function classifyFetchError(err: unknown): FetchFailure {
  const e = err as { code?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code;
  if (isTlsFailure(code)) return 'connect_error';
  // undici's own verdicts on the origin's bytes: an interim `100 Continue` it did not ask for
  // ('bad response': it never sends Expect) and a status below 100 (`099`), which trips an
  // assertion in its parser. The answer for this one request, not a sick member (not a reset,
  // and not a gateway bug answered 500).
  if (err instanceof undiciErrors.SocketError && err.message === 'bad response') return 'bad_response';
  if (code === 'ERR_ASSERTION' && /undici/.test((err as Error).stack ?? '')) return 'bad_response';
  // A response head past undici's 16 KiB bound (nginx: "upstream sent too big header", 502).
  if (err instanceof undiciErrors.HeadersOverflowError || code === 'UND_ERR_HEADERS_OVERFLOW') return 'bad_response';
  if (err instanceof undiciErrors.ConnectTimeoutError) return 'timeout';
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError) return 'timeout';
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'ENETUNREACH')
    return 'connect_error';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT')
    return 'timeout';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE' || code === 'UND_ERR_CLOSED') return 'reset';
  if (err instanceof undiciErrors.HTTPParserError || err instanceof undiciErrors.ResponseContentLengthMismatchError) return 'bad_response';
  if (typeof code === 'string' && (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')) return 'bad_response';
  return 'error';
}

/**
 * Telling a reused connection from a new one. undici does not retry the request a connection
 * was carrying when it closes (only requests queued behind it), and its answer does not say
 * whether the connection had carried requests before; its diagnostics channels (a documented
 * API) do: `undici:client:sendHeaders` names the socket each request is written to, and
 * `undici:request:error` hands over the very error object the request then fails with. So a
 * request written to a socket that had carried one before, and failed with nothing more read
 * from that socket, has its error remembered here; fetch() marks such a reset
 * `reusedConnection`. A reset on a new connection is never marked: that is the origin refusing
 * or dropping work (a crash, an overload), and sending it again would add load, not remove it.
 *
 * The channels are process-wide (every undici client in the process publishes to them), so
 * this subscribes once, and keeps only weak references: nothing is held past its request.
 */
/**
 * A reset on a reused connection counts as the idle-close race (retried, not blamed) only this
 * soon after the request went out: the origin closing an idle connection resets it within a
 * round trip of our write, while a reset after seconds of work is a worker that died on the
 * request (PHP-FPM's request_terminate_timeout, the OOM killer), which counts as any reset and
 * is not sent again to another member.
 */
export const REUSED_RESET_WINDOW_MS = 1_000;

/** Tickets (fetchWith) of requests whose close-delimited body ended with a connection reset. */
const cutByReset = new WeakSet<object>();
const usedSockets = new WeakSet<Socket>();
const written = new WeakMap<object, { socket: Socket; reused: boolean; bytesRead: number; at: number }>();
const reusedResets = new WeakSet<object>();
let tagging = false;

function tagReusedResets(): void {
  if (tagging) return;
  tagging = true;
  diagnostics.subscribe('undici:client:sendHeaders', (message) => {
    const { request, socket } = message as { request: object; socket: Socket };
    written.set(request, { socket, reused: usedSockets.has(socket), bytesRead: socket.bytesRead, at: performance.now() });
    usedSockets.add(socket);
  });
  // A body delimited by its connection's close that ends now, with the connection reset: undici
  // calls the message complete from the socket's error (its comment: macOS resets after a whole
  // body). Published just before the body ends, with the request's socket destroyed by the
  // reset. The request's ticket is the `opaque` fetchWith gave, on undici's request handler
  // (not a public field: if undici moves it, nothing is found and the body is kept as before).
  diagnostics.subscribe('undici:request:trailers', (message) => {
    const { request } = message as { request: object };
    const socket = written.get(request)?.socket;
    if ((socket?.errored as { code?: string } | null | undefined)?.code !== 'ECONNRESET') return;
    const handler = handlerOf(request) as { opaque?: unknown } | undefined;
    if (typeof handler?.opaque === 'object' && handler.opaque !== null) cutByReset.add(handler.opaque);
  });
  diagnostics.subscribe('undici:request:error', (message) => {
    const { request, error } = message as { request: object; error: unknown };
    const sent = written.get(request);
    // Nothing read since the request was written: no byte of its answer had arrived.
    // And soon after it was written (REUSED_RESET_WINDOW_MS): later, a worker died on it.
    if (
      sent?.reused &&
      sent.socket.bytesRead === sent.bytesRead &&
      performance.now() - sent.at <= REUSED_RESET_WINDOW_MS &&
      typeof error === 'object' &&
      error !== null
    )
      reusedResets.add(error);
  });
}

/** undici's handler of one of its requests (a symbol-named field), or undefined. */
function handlerOf(request: object): unknown {
  const key = Object.getOwnPropertySymbols(request).find((s) => s.description === 'handler');
  return key === undefined ? undefined : (request as Record<symbol, unknown>)[key];
}

/** A content type whose body is a stream that does not end by itself (SSE, multipart/x-mixed-replace). */
export function isEndlessStream(contentType: string | string[] | undefined): boolean {
  const value = (Array.isArray(contentType) ? contentType[0] : contentType)?.split(';')[0]?.trim().toLowerCase();
  return value === 'text/event-stream' || value === 'multipart/x-mixed-replace';
}

/** Reads a body into one Buffer, or abandons it once it passes `max` bytes. */
function readCapped(body: Readable, max: number): Promise<Buffer | Error | 'too_large'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    body.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > max) {
        body.destroy();
        resolve('too_large');
        return;
      }
      chunks.push(chunk);
    });
    // Memory of its own size: this body may be kept in the cache (bytes.ts).
    body.once('end', () => resolve(ownBytes(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total))));
    body.once('error', (err) => resolve(err));
  });
}
