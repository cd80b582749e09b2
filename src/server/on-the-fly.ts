/**
 * On-the-fly compression of uncached answers (bypass and pass): what the cache never stores is
 * compressed for the one answer, at a cheap level, when the client accepts it and the answer
 * qualifies as a stored one would (content-coding.ts). Streamed pass-through: every chunk from
 * the origin is flushed through the compressor at once, so a slow or long-lived answer is never
 * held back waiting for more bytes. A fill's answer that turned out not storable (buffered) is
 * compressed whole on the threadpool.
 *
 * Owns the decision and the head rewrite for one uncached answer; forward.ts pipes the body.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Transform } from 'node:stream';
import { promisify } from 'node:util';
import { brotliCompress, constants as zc, createBrotliCompress, createGzip, gzip } from 'node:zlib';
import {
  chooseCoding,
  IDENTITY_ONLY_FIELDS,
  isTextual,
  requestForbidsTransform,
  varyWithAcceptEncoding,
  whyNotCompressed,
  type EntryEncodings,
  type StoredCoding,
} from '../cache/content-coding.js';
import type { CompressionConfig } from '../config/schema.js';
import { SET_COOKIE_FIELDS } from '../http/facts.js';
import { fieldOf } from '../cache/cache-control.js';

/** Both codings "available": on the fly, crowdgate can make either. */
const ANY: EntryEncodings = Object.freeze({ br: Buffer.alloc(0), gzip: Buffer.alloc(0) });

function single(v: OutgoingHttpHeaders[string]): string | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v.join(', ');
  return String(v);
}

/** What the request says about compressing its answer. */
export interface OnTheFlyRequest {
  acceptEncoding: string | string[] | undefined;
  range: string | undefined;
  cacheControl: string | string[] | undefined;
  /** The request carries a cookie or credentials: its answer may hold a secret (see codingFor). */
  personal: boolean;
}

/**
 * The request fields makeOnTheFlyEncoder and compressBuffered read. `credentialHeaders`: the
 * site's (sites[].credentialHeaders, lower case); a request carrying one is as personal as
 * one with a cookie (`X-Api-Key` answers were compressed on the fly).
 */
export function onTheFlyRequestOf(headers: IncomingHttpHeaders, credentialHeaders: readonly string[] = []): OnTheFlyRequest {
  return {
    acceptEncoding: headers['accept-encoding'],
    range: headers.range,
    cacheControl: headers['cache-control'],
    personal:
      headers.cookie !== undefined ||
      headers.authorization !== undefined ||
      headers['proxy-authorization'] !== undefined ||
      credentialHeaders.some((name) => fieldOf(headers, name) !== undefined),
  };
}

/** The answer is someone's own: it sets a cookie or is `private` (RFC 9111 §5.2.2.7). */
function isPersonalAnswer(head: OutgoingHttpHeaders): boolean {
  if (SET_COOKIE_FIELDS.some((name) => head[name] !== undefined)) return true;
  const cc = single(head['cache-control']);
  return cc !== undefined && /(^|[\s,])private\b/i.test(cc);
}

/**
 * The coding to compress an uncached answer with, or undefined: only a GET answered 200, with no
 * Content-Encoding, a compressible type, no `no-transform` (in the answer or the request), no
 * Range, a length (declared or known; unknown counts as long enough) of at least `minBytes`, and
 * a client that accepts br or gzip. Never a personal answer — a request with a cookie or
 * credentials, or an answer that sets a cookie or is `private`: a secret (a session or CSRF
 * token) compressed beside input an attacker reflects into the page leaks through the
 * compressed length over TLS (BREACH), and an origin that chose not to compress such a page is
 * not overruled (nginx does not compress proxied answers by default). Reads `head`, never
 * changes it.
 */
function codingFor(
  opts: CompressionConfig,
  method: string,
  request: OnTheFlyRequest,
  status: number,
  head: OutgoingHttpHeaders,
  length: number | undefined,
): StoredCoding | undefined {
  if (!opts.enabled || !opts.passThrough.enabled || method !== 'GET' || request.range !== undefined || requestForbidsTransform(request.cacheControl))
    return undefined;
  if (request.personal || isPersonalAnswer(head)) return undefined;
  const coding = chooseCoding(request.acceptEncoding, ANY);
  if (coding === undefined) return undefined;
  const fields: Record<string, string | undefined> = {
    'content-type': single(head['content-type']),
    'content-encoding': single(head['content-encoding']),
    'content-range': single(head['content-range']),
    'cache-control': single(head['cache-control']),
  };
  const n = length ?? opts.minBytes;
  if (!Number.isFinite(n) || whyNotCompressed(status, fields, n, opts) !== undefined) return undefined;
  return coding;
}

/**
 * The head of a compressed answer: Content-Encoding set, Content-Length, Accept-Ranges and
 * digests removed, Accept-Encoding added to Vary, a strong ETag made weak as nginx does (the
 * bytes depend on the level and on how the stream was chunked).
 */
function rewriteHead(head: OutgoingHttpHeaders, coding: StoredCoding): void {
  delete head['content-length'];
  for (const name of IDENTITY_ONLY_FIELDS) delete head[name];
  head['content-encoding'] = coding;
  head['vary'] = varyWithAcceptEncoding(single(head['vary']));
  const etag = single(head['etag']);
  if (etag !== undefined && !etag.trim().startsWith('W/')) head['etag'] = `W/${etag.trim()}`;
}

function brotliParams(opts: CompressionConfig, head: OutgoingHttpHeaders, length: number | undefined): Record<number, number> {
  return {
    [zc.BROTLI_PARAM_QUALITY]: opts.passThrough.brotliQuality,
    [zc.BROTLI_PARAM_MODE]: isTextual(single(head['content-type'])) ? zc.BROTLI_MODE_TEXT : zc.BROTLI_MODE_GENERIC,
    ...(length !== undefined ? { [zc.BROTLI_PARAM_SIZE_HINT]: length } : {}),
  };
}

/**
 * For a streamed pass-through answer about to be sent: when it should be compressed (codingFor),
 * rewrites `head` and returns the compressor to pipe the body through, every chunk flushed;
 * otherwise undefined and `head` untouched.
 */
export function makeOnTheFlyEncoder(
  opts: CompressionConfig,
  method: string,
  request: OnTheFlyRequest,
  status: number,
  head: OutgoingHttpHeaders,
): Transform | undefined {
  const declared = single(head['content-length']);
  const length = declared === undefined ? undefined : Number(declared);
  const coding = codingFor(opts, method, request, status, head, length);
  if (coding === undefined) return undefined;
  const params = brotliParams(opts, head, length);
  rewriteHead(head, coding);
  if (coding === 'br') return createBrotliCompress({ flush: zc.BROTLI_OPERATION_FLUSH, params });
  return createGzip({ level: opts.passThrough.gzipLevel, flush: zc.Z_SYNC_FLUSH });
}

const brotliAsync = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

/**
 * For a buffered uncached answer (a fill whose answer was not storable): undefined, at once,
 * when it is not to be compressed; else a promise of the compressed head and body (the head a
 * rewritten copy), or of undefined when compressing did not save `minSavingsRatio` or failed.
 * Made on the threadpool at the on-the-fly level.
 */
export function compressBuffered(
  opts: CompressionConfig,
  method: string,
  request: OnTheFlyRequest,
  status: number,
  head: OutgoingHttpHeaders,
  body: Buffer,
): Promise<{ head: OutgoingHttpHeaders; body: Buffer } | undefined> | undefined {
  const coding = codingFor(opts, method, request, status, head, body.length);
  if (coding === undefined) return undefined;
  const made = coding === 'br' ? brotliAsync(body, { params: brotliParams(opts, head, body.length) }) : gzipAsync(body, { level: opts.passThrough.gzipLevel });
  return made.then(
    (encoded) => {
      if (encoded.length > body.length * (1 - opts.minSavingsRatio)) return undefined;
      const out = { ...head };
      rewriteHead(out, coding);
      return { head: out, body: encoded };
    },
    () => undefined,
  );
}
