/**
 * On-the-fly compression of uncached pass-through answers (bypass and pass): what the cache
 * never stores is compressed while it streams, at a cheap level, when the client accepts it and
 * the answer qualifies as a stored one would (content-coding.ts). Streaming: every chunk from
 * the origin is flushed through the compressor at once, so a slow or long-lived answer is never
 * held back waiting for more bytes.
 *
 * Owns the decision and the head rewrite for one pass-through answer; forward.ts pipes the body.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Transform } from 'node:stream';
import { constants as zc, createBrotliCompress, createGzip } from 'node:zlib';
import { chooseCoding, IDENTITY_ONLY_FIELDS, isTextual, requestForbidsTransform, varyWithAcceptEncoding, whyNotCompressed, type EntryEncodings } from '../cache/content-coding.js';
import type { CompressionConfig } from '../config/schema.js';

/** Both codings "available": on the fly, crowdgate can make either. */
const ANY: EntryEncodings = Object.freeze({ br: Buffer.alloc(0), gzip: Buffer.alloc(0) });

function single(v: OutgoingHttpHeaders[string]): string | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v.join(', ');
  return String(v);
}

/**
 * For a pass-through answer about to be sent: when it should be compressed, rewrites `head`
 * (Content-Encoding set, Content-Length, Accept-Ranges and digests removed, Accept-Encoding added to Vary,
 * a strong ETag made weak as nginx does: the bytes now depend on how the stream was chunked)
 * and returns the compressor to pipe the body through; otherwise undefined and `head` untouched.
 * Only a GET answered 200, with no Content-Encoding, a compressible type, no `no-transform` (in
 * the answer or the request), no Range, and a declared length (if any) of at least `minBytes`.
 */
export function makeOnTheFlyEncoder(
  opts: CompressionConfig,
  method: string,
  request: { acceptEncoding: string | string[] | undefined; range: string | undefined; cacheControl: string | string[] | undefined },
  status: number,
  head: OutgoingHttpHeaders,
): Transform | undefined {
  const fly = opts.passThrough;
  if (!opts.enabled || !fly.enabled || method !== 'GET' || request.range !== undefined || requestForbidsTransform(request.cacheControl)) return undefined;
  const coding = chooseCoding(request.acceptEncoding, ANY);
  if (coding === undefined) return undefined;
  const headers: Record<string, string | undefined> = {
    'content-type': single(head['content-type']),
    'content-encoding': single(head['content-encoding']),
    'content-range': single(head['content-range']),
    'cache-control': single(head['cache-control']),
  };
  const declared = single(head['content-length']);
  // Unknown length (chunked): judged as at least minBytes; a short one costs a few bytes.
  const length = declared === undefined ? opts.minBytes : Number(declared);
  if (!Number.isFinite(length) || whyNotCompressed(status, headers, length, opts) !== undefined) return undefined;

  delete head['content-length'];
  for (const name of IDENTITY_ONLY_FIELDS) delete head[name];
  head['content-encoding'] = coding;
  head['vary'] = varyWithAcceptEncoding(single(head['vary']));
  const etag = single(head['etag']);
  if (etag !== undefined && !etag.trim().startsWith('W/')) head['etag'] = `W/${etag.trim()}`;
  if (coding === 'br') {
    return createBrotliCompress({
      flush: zc.BROTLI_OPERATION_FLUSH,
      
      params: {
        [zc.BROTLI_PARAM_QUALITY]: fly.brotliQuality,
        [zc.BROTLI_PARAM_MODE]: isTextual(headers['content-type']) ? zc.BROTLI_MODE_TEXT : zc.BROTLI_MODE_GENERIC,
        ...(declared !== undefined ? { [zc.BROTLI_PARAM_SIZE_HINT]: length } : {}),
      },
    });
  }
  return createGzip({ level: fly.gzipLevel, flush: zc.Z_SYNC_FLUSH });
}
