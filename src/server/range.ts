/**
 * Range requests answered from a stored full response (RFC 9110 §14, RFC 9111 §3.3-3.4).
 *
 *   Range: bytes=…       parsed (first-last, first-, -suffix, several, optional whitespace);
 *                        any other unit or any syntax error: the header is ignored (200 full),
 *                        as §14.2 allows
 *   more than MAX_RANGES ranges: ignored (200 full), before any other work (a known DoS vector)
 *   overlapping or adjacent ranges: coalesced (§14.3), parts then in ascending order
 *   none satisfiable     → 416 with `Content-Range: bytes *\/<length>`
 *   one range            → 206 with Content-Range, the slice of the stored body
 *   several              → 206 multipart/byteranges, each part with Content-Type and Content-Range
 *   If-Range             → the range is served only when it holds (a strong ETag equal to the
 *                          stored one, or a date equal to the stored Last-Modified), else 200 full
 *
 * Only a stored 200 of a GET is cut: HEAD (range handling is defined for GET only, §14.2),
 * other statuses and an empty body get the full answer, and so do several ranges of a body the
 * origin sent with a Content-Encoding (one range of it is a 206 in that coding, as usual). The bytes come from the entry's
 * identity body (`entry.body`), by reference: a single range is one subarray, a multipart
 * answer a list of subarrays written with backpressure.
 *
 * Owns the Range grammar, the plan for one request and the range answer's bytes; answer.ts
 * decides when a stored entry answers, respond.ts writes full answers.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { CacheEntry, StoredHeaders } from '../cache/entry.js';
import { parseLastModified } from '../cache/cache-control.js';
import { appendVia, dispositionFirst, isResponseGone } from './headers.js';
import { varyWithAcceptEncoding } from '../cache/content-coding.js';
import { cacheStatusOf, type EntryAnswer } from './respond.js';

/** Ranges per request beyond which the Range header is ignored and the whole body sent. */
export const MAX_RANGES = 16;

/** One range-spec as written: `first-[last]` or `-suffix`. Bounds may be huge (Infinity). */
export type RangeSpec = { readonly first: number; readonly last: number | undefined } | { readonly suffix: number };

/** An inclusive byte range of the stored body. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** What one request gets from one stored body. */
export type RangePlan =
  | { readonly kind: 'full'; readonly why: 'no_range' | 'invalid' | 'too_many' | 'if_range' | 'not_applicable' | 'encoded_multipart' }
  | { readonly kind: 'unsatisfiable' }
  | { readonly kind: 'single'; readonly range: ByteRange }
  | { readonly kind: 'multipart'; readonly ranges: readonly ByteRange[] };

const UNIT_RE = /^[ \t]*bytes[ \t]*=/i;
const INT_RANGE_RE = /^(\d+)[ \t]*-[ \t]*(\d*)$/;
const SUFFIX_RE = /^-[ \t]*(\d+)$/;

/**
 * Parses a Range field value (RFC 9110 §14.1.2). Returns the range-specs in request order, or
 * 'invalid' (not the bytes unit, or not valid syntax: the field is ignored), or 'too_many'
 * (more than `max` specs: ignored too).
 */
export function parseRange(value: string, max = MAX_RANGES): RangeSpec[] | 'invalid' | 'too_many' {
  const unit = UNIT_RE.exec(value);
  if (unit === null) return 'invalid';
  const set = value.slice(unit[0].length);
  // Count before splitting: a field of thousands of ranges costs one scan, not thousands of specs.
  let commas = 0;
  for (let i = 0; i < set.length; i++) if (set.charCodeAt(i) === 0x2c /* , */ && ++commas > 4 * max) return 'too_many';
  const specs: RangeSpec[] = [];
  for (const raw of set.split(',')) {
    const item = raw.trim();
    if (item === '') continue; // RFC 9110 §5.6.1: empty list elements do not count
    if (specs.length === max) return 'too_many';
    let m = INT_RANGE_RE.exec(item);
    if (m !== null) {
      const first = Number(m[1]);
      const last = m[2] === '' ? undefined : Number(m[2]);
      if (last !== undefined && last < first) return 'invalid'; // §14.1.1: invalid, so the whole field
      specs.push({ first, last });
      continue;
    }
    m = SUFFIX_RE.exec(item);
    if (m === null) return 'invalid';
    specs.push({ suffix: Number(m[1]) });
  }
  return specs.length === 0 ? 'invalid' : specs;
}

/**
 * The satisfiable ranges of `specs` against a body of `length` bytes (§14.1.1), coalesced when
 * any overlap or touch (then in ascending order, as §14.3 allows; otherwise in request order).
 * Empty when none is satisfiable.
 */
export function resolveRanges(specs: readonly RangeSpec[], length: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (const spec of specs) {
    if ('suffix' in spec) {
      if (spec.suffix > 0 && length > 0) out.push({ start: Math.max(0, length - spec.suffix), end: length - 1 });
    } else if (spec.first < length) {
      out.push({ start: spec.first, end: spec.last === undefined ? length - 1 : Math.min(spec.last, length - 1) });
    }
  }
  if (out.length < 2) return out;
  const sorted = out.slice().sort((a, b) => a.start - b.start || a.end - b.end);
  const merged: ByteRange[] = [sorted[0]!];
  for (let i = 1; i < sorted.length; i++) {
    const r = sorted[i]!;
    const last = merged[merged.length - 1]!;
    if (r.start <= last.end + 1) merged[merged.length - 1] = { start: last.start, end: Math.max(last.end, r.end) };
    else merged.push(r);
  }
  return merged.length === out.length ? out : merged;
}

/**
 * RFC 9110 §13.1.5: does If-Range hold for the stored response? An entity-tag holds only when
 * it is strong and equal to a strong stored ETag (strong comparison); an HTTP-date only when it
 * is exactly the stored Last-Modified. Anything else does not hold.
 */
export function ifRangeHolds(value: string, stored: StoredHeaders): boolean {
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith('W/')) {
    if (!/^"[\x21\x23-\x7e\x80-\xff]*"$/.test(v)) return false; // weak, or not an entity-tag
    const etag = stored['etag'];
    return typeof etag === 'string' && etag.trim() === v;
  }
  const date = parseLastModified(v);
  const lastModified = parseLastModified(stored['last-modified']);
  return date !== undefined && lastModified !== undefined && date === lastModified;
}

/**
 * What a request gets from a stored entry: the full answer, a 416, or the ranges to cut.
 * `method` is the request's (uppercase); `headers` its header fields.
 */
export function planRange(method: string, headers: IncomingHttpHeaders, entry: CacheEntry): RangePlan {
  const range = headers.range;
  if (range === undefined) return FULL_NO_RANGE;
  if (method !== 'GET' || entry.status !== 200 || entry.body.length === 0) return FULL_NOT_APPLICABLE;
  const specs = parseRange(range);
  if (specs === 'invalid') return FULL_INVALID;
  if (specs === 'too_many') return FULL_TOO_MANY;
  const ifRange = headers['if-range'];
  if (ifRange !== undefined && (typeof ifRange !== 'string' || !ifRangeHolds(ifRange, entry.headers))) return FULL_IF_RANGE;
  const ranges = resolveRanges(specs, entry.body.length);
  if (ranges.length === 0) return UNSATISFIABLE;
  if (ranges.length === 1) return { kind: 'single', range: ranges[0]! };
  // A multipart body is not itself in the stored content coding, and a Content-Encoding on it
  // would tell the client to decode it: a body the origin sent encoded is answered in full.
  if (entry.headers['content-encoding'] !== undefined) return FULL_ENCODED;
  return { kind: 'multipart', ranges };
}

const FULL_NO_RANGE: RangePlan = { kind: 'full', why: 'no_range' };
const FULL_NOT_APPLICABLE: RangePlan = { kind: 'full', why: 'not_applicable' };
const FULL_INVALID: RangePlan = { kind: 'full', why: 'invalid' };
const FULL_TOO_MANY: RangePlan = { kind: 'full', why: 'too_many' };
const FULL_IF_RANGE: RangePlan = { kind: 'full', why: 'if_range' };
const FULL_ENCODED: RangePlan = { kind: 'full', why: 'encoded_multipart' };
const UNSATISFIABLE: RangePlan = { kind: 'unsatisfiable' };

/** Stored fields never sent (respond.ts keeps them for purge by tag) or replaced here. */
const NOT_COPIED: ReadonlySet<string> = new Set(['surrogate-key', 'cache-tag', 'content-length', 'via', 'accept-ranges', 'content-range', 'x-request-id']);
/** Representation fields a 416 carries from the stored response, besides Content-Range. */
const UNSATISFIABLE_COPIED = ['date', 'etag', 'last-modified'];

/**
 * Writes the 206 or 416 for `plan` (not 'full') from the entry's identity body, with the same
 * per-request fields as any answer from the entry (Age, Cache-Status, X-Request-Id; `answer`).
 */
export function sendRange(res: ServerResponse, entry: CacheEntry, plan: Exclude<RangePlan, { kind: 'full' }>, answer: EntryAnswer): void {
  const length = entry.body.length;
  const age = String(answer.ageSeconds > 0 ? Math.floor(answer.ageSeconds) : 0);
  const cacheStatus = cacheStatusOf(answer);
  if (plan.kind === 'unsatisfiable') {
    const headers: OutgoingHttpHeaders = {};
    for (const name of UNSATISFIABLE_COPIED) {
      const v = entry.headers[name];
      if (v !== undefined) headers[name] = v;
    }
    const vary: string | string[] | undefined = entry.encodings !== undefined ? varyWithAcceptEncoding(entry.headers['vary']) : entry.headers['vary'];
    if (vary !== undefined) headers['vary'] = Array.isArray(vary) ? vary.join(', ') : vary;
    headers['accept-ranges'] = 'bytes';
    headers['content-range'] = `bytes */${length}`;
    headers['content-length'] = 0;
    headers['via'] = appendVia(entry.headers['via']);
    headers['age'] = age;
    headers['cache-status'] = cacheStatus;
    headers['x-request-id'] = answer.requestId;
    res.writeHead(416, dispositionFirst(headers));
    res.end();
    return;
  }
  const flat: Array<string | string[] | number> = [];
  const contentType = entry.headers['content-type'];
  for (const [name, value] of Object.entries(entry.headers)) {
    if (NOT_COPIED.has(name) || (plan.kind === 'multipart' && name === 'content-type')) continue;
    // An entry stored with encodings varies on Accept-Encoding (content-coding.ts) even though a
    // range is always of the identity bytes.
    if (name === 'vary' && entry.encodings !== undefined) continue;
    flat.push(name, value);
  }
  if (entry.encodings !== undefined) flat.push('vary', varyWithAcceptEncoding(entry.headers['vary']));
  flat.push('accept-ranges', 'bytes', 'via', appendVia(entry.headers['via']), 'age', age, 'cache-status', cacheStatus, 'x-request-id', answer.requestId);
  if (plan.kind === 'single') {
    const { start, end } = plan.range;
    flat.push('content-range', `bytes ${start}-${end}/${length}`, 'content-length', end - start + 1);
    res.writeHead(206, flat as unknown as OutgoingHttpHeaders);
    res.end(entry.body.subarray(start, end + 1));
    return;
  }
  const boundary = randomBytes(12).toString('hex');
  const chunks = multipartChunks(entry.body, plan.ranges, typeof contentType === 'string' ? contentType : undefined, boundary);
  let total = 0;
  for (const c of chunks) total += c.length;
  flat.push('content-type', `multipart/byteranges; boundary=${boundary}`, 'content-length', total);
  res.writeHead(206, flat as unknown as OutgoingHttpHeaders);
  writeWithBackpressure(res, chunks);
}

/**
 * The multipart/byteranges body (RFC 9110 §14.6) as chunks: each part's head, then the part's
 * bytes as a subarray of `body` (never copied), then the closing delimiter.
 */
export function multipartChunks(body: Buffer, ranges: readonly ByteRange[], contentType: string | undefined, boundary: string): Buffer[] {
  const chunks: Buffer[] = [];
  const typeLine = contentType === undefined ? '' : `content-type: ${contentType}\r\n`;
  ranges.forEach((r, i) => {
    chunks.push(Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\n${typeLine}content-range: bytes ${r.start}-${r.end}/${body.length}\r\n\r\n`, 'latin1'));
    chunks.push(body.subarray(r.start, r.end + 1));
  });
  chunks.push(Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'));
  return chunks;
}

/** Writes `chunks` in order, waiting for 'drain' whenever the socket's buffer is full; ends the response. */
function writeWithBackpressure(res: ServerResponse, chunks: readonly Buffer[]): void {
  let i = 0;
  const pump = (): void => {
    while (i < chunks.length) {
      if (isResponseGone(res)) return;
      const chunk = chunks[i++]!;
      if (i === chunks.length) {
        res.end(chunk);
        return;
      }
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
  };
  pump();
}
