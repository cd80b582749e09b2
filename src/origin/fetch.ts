/**
 * One origin request on behalf of the cache (fills and revalidations), with undici: these have
 * no client request of their own, so they are not tied to any client connection — a client that
 * leaves does not cancel the fill the others wait on. Owns timeouts, the body cap and mapping
 * failures to a small set of kinds. It does not take permits (the caller holds one) nor decide
 * what to store.
 */
import { Pool, errors as undiciErrors } from 'undici';
import type { Readable } from 'node:stream';
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
  | { ok: false; failure: FetchFailure; error: Error; requestTime: number; responseTime: number };

export interface FetchRequest {
  origin: URL;
  method: 'GET' | 'HEAD';
  path: string;
  headers: Record<string, string>;
  connectMs: number;
  responseHeadersMs: number;
  idleMs: number;
  maxBodyBytes: number;
}

export class OriginFetcher {
  private readonly pools = new Map<string, Pool>();

  constructor(private readonly clock: Clock) {}

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
    const requestTime = this.clock.now();
    let res;
    try {
      res = await this.poolFor(req.origin, req.connectMs).request({
        method: req.method,
        path: req.path,
        headers: req.headers,
        headersTimeout: req.responseHeadersMs,
        bodyTimeout: req.idleMs,
      });
    } catch (err) {
      return { ok: false, failure: classifyFetchError(err), error: err as Error, requestTime, responseTime: this.clock.now() };
    }
    const responseTime = this.clock.now();
    const head: FetchedHead = {
      status: res.statusCode,
      headers: res.headers as Record<string, string | string[]>,
      requestTime,
      responseTime,
    };
    if (res.statusCode === 304 || req.method === 'HEAD') {
      // No content, whatever Content-Length says (RFC 9110 §8.6: a 304 or a HEAD answer may
      // carry the selected representation's length). undici 7 still counts the missing bytes
      // and fails the body with a length mismatch: drop it unread, and that error with it.
      res.body.on('error', () => {});
      res.body.destroy();
      return { ...head, ok: true, body: Buffer.alloc(0) };
    }
    const declared = Number(res.headers['content-length']);
    if (Number.isFinite(declared) && declared > req.maxBodyBytes) {
      res.body.destroy();
      return { ...head, ok: true, tooLarge: true };
    }
    // Buffer up to the cap; past it, give up on the body (the caller streams it with http-proxy).
    const body = await readCapped(res.body, req.maxBodyBytes);
    if (body === 'too_large') return { ...head, ok: true, tooLarge: true };
    if (body instanceof Error) {
      return { ok: false, failure: classifyFetchError(body), error: body, requestTime, responseTime };
    }
    return { ...head, ok: true, body };
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }
}

export function classifyFetchError(err: unknown): FetchFailure {
  const e = err as { code?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code;
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
