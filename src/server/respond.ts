/**
 * Writes responses: cached entries (with Age and 304s), error pages, shed answers with
 * Retry-After, the gateway's other own answers (sendOwn), and the Cache-Status header
 * (RFC 9211), each from one Answer (what the request's answer says besides its bytes, recorded
 * once). Owns the bytes on the wire, not the decisions that led to them.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { CacheEntry } from '../cache/entry.js';
import { encodedETag, IDENTITY_ONLY_FIELDS, varyWithAcceptEncoding, type StoredCoding } from '../cache/content-coding.js';
import { ERRORS, makeErrorBody, type ErrorCode } from '../errors.js';
import type { CacheState } from '../outcome.js';
import { HOP_BY_HOP } from '../http/facts.js';
import { VIA_VALUE, appendVia, dispositionFirst } from './headers.js';
import { makeHeadBlock, setRawHead, type HeadBlock } from './raw-head.js';

export const CACHE_STATUS_NAME = 'crowdgate';

export interface CacheStatusFacts {
  state: CacheState;
  collapsed?: boolean;
  /** RFC 9211 §2.8 ttl: remaining freshness in seconds (negative when stale). */
  ttlSeconds?: number;
  /** RFC 9211 §2.5 stored */
  stored?: boolean;
  /** RFC 9211 §2.3 fwd-status */
  fwdStatus?: number;
  /** For `stale`: the origin was contacted (and failed), so the answer is fwd=stale, not a hit. */
  forwarded?: boolean;
  /** `uri-miss` when nothing was stored for the URL, `vary-miss` when only other variants were. */
  missKind?: 'uri-miss' | 'vary-miss' | 'miss' | 'request';
  detail?: string;
  requestId?: string;
}

/**
 * The Cache-Status field of an answer passed on from the origin: an inner cache's members (the
 * origin behind its own cache) stay first and ours is added last, as RFC 9211 §2 asks (members
 * in order from the origin to the user agent), as a stored answer's two field lines do.
 */
export function chainCacheStatus(existing: string | string[] | number | undefined, ours: string): string {
  if (existing === undefined) return ours;
  const inner = (Array.isArray(existing) ? existing.join(', ') : String(existing)).trim();
  return inner === '' ? ours : `${inner}, ${ours}`;
}

/**
 * RFC 9211 Cache-Status for one request. `hit` when the cache answered without waiting for the
 * origin (fresh, or stale while revalidating, or stale because the origin was protected);
 * otherwise `fwd=` says why the request went forward.
 */
export function formatCacheStatus(f: CacheStatusFacts, requestId: string | undefined = f.requestId): string {
  // Plain concatenation: this runs on every response, hits included.
  let out = CACHE_STATUS_NAME;
  switch (f.state) {
    case 'hit':
    case 'updating':
      out += '; hit';
      break;
    case 'stale':
      // Served stale: a hit if we never reached the origin, otherwise fwd=stale (RFC 9211 §2.2).
      out += f.forwarded ? '; fwd=stale' : '; hit';
      break;
    case 'miss':
      out += `; fwd=${f.missKind ?? 'uri-miss'}`;
      break;
    case 'expired':
    case 'revalidated':
      out += '; fwd=stale';
      break;
    case 'bypass':
      out += f.missKind === 'request' ? '; fwd=request' : '; fwd=bypass';
      break;
    case 'pass':
    case 'shed':
    case 'error':
      out += `; fwd=${f.missKind ?? 'miss'}`;
      break;
  }
  if (f.fwdStatus !== undefined && f.state !== 'hit') out += `; fwd-status=${f.fwdStatus}`;
  if (f.stored) out += '; stored';
  if (f.collapsed) out += '; collapsed';
  if (f.ttlSeconds !== undefined) out += `; ttl=${Math.trunc(f.ttlSeconds)}`;
  // detail is an sf-string: request ids are validated at the edge; strip quotes defensively.
  let detail = f.detail ?? f.state;
  if (requestId) detail += ` rid=${requestId}`;
  if (detail.includes('"') || detail.includes('\\')) detail = detail.replace(/["\\]/g, '');
  // And printable ASCII only (RFC 8941 §3.3.3): the policy's reasons cite RFC sections with
  // '§', which strict Structured Field parsers reject, and with it the whole field.
  if (NOT_SF_STRING.test(detail)) detail = detail.replace(/§/g, 'section ').replace(NOT_SF_STRING_ALL, '?');
  return `${out}; detail="${detail}"`;
}

const NOT_SF_STRING = /[^\x20-\x7e]/;
const NOT_SF_STRING_ALL = /[^\x20-\x7e]/g;

/**
 * formatCacheStatus({ state: 'hit', ttlSeconds, requestId }) up to the request id, for a fresh
 * hit's answer (sendEntry with no `cacheStatus`); the same for every hit on one entry within a
 * second. A unit test holds the prefix plus `${requestId}"` equal to the general formatter.
 */
export function hitCacheStatusPrefix(ttlSeconds: number): string {
  return `${CACHE_STATUS_NAME}; hit; ttl=${Math.trunc(ttlSeconds)}; detail="hit rid=`;
}

/**
 * What one request's answer says besides its bytes, recorded once per request (answer.ts
 * recordAnswer(), or the memo hit path in handle-request.ts) and read by every writer here and
 * in range.ts: HEAD handling, the request id and the Cache-Status field.
 */
export interface Answer {
  /** A HEAD request: the head alone, never a body (RFC 9110 §9.3.2). */
  readonly head: boolean;
  readonly requestId: string;
  /**
   * The Cache-Status field value (RFC 9211). Undefined only for a fresh hit from a stored entry
   * (EntryAnswer): the writer renders `hit; ttl=…` from `ttlSeconds` itself, once per entry and
   * second (hitCacheStatusPrefix, cacheStatusOf).
   */
  readonly cacheStatus: string | undefined;
}

/** An answer from a stored entry: sendEntry(), and range.ts sendRange(). */
export interface EntryAnswer extends Answer {
  /** The entry's age in seconds (RFC 9111 §5.1 Age, sent floored). */
  readonly ageSeconds: number;
  /** RFC 9211 ttl: seconds of freshness left, negative when stale. */
  readonly ttlSeconds: number;
  /** The stored encoding to send (answer.ts codingFor); identity when undefined. */
  readonly coding: StoredCoding | undefined;
  /** A 304 to the client's conditional (RFC 9110 §15.4.5) instead of the entry's answer. */
  readonly notModified: boolean;
}

/** The Cache-Status an entry's answer carries: its own, or a fresh hit's. */
export function cacheStatusOf(answer: EntryAnswer): string {
  return answer.cacheStatus ?? formatCacheStatus({ state: 'hit', ttlSeconds: answer.ttlSeconds, requestId: answer.requestId });
}

/** Response headers that a 304 carries from the stored 200 (RFC 9110 §15.4.5). */
const NOT_MODIFIED_HEADERS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified'];

/** Kept in the stored entry (purge by tag recomputes from them) but not sent to clients. */
const INTERNAL_HEADERS: ReadonlySet<string> = new Set(['surrogate-key', 'cache-tag']);

/** What every answer from one entry in one coding shares, built on its first use. */
interface PreparedEntry {
  /** Flat [name, value, …] list for writeHead. */
  readonly flat: Array<string | number | string[]>;
  /** The same as ready header lines for the raw writer; undefined when it must not be used. */
  readonly block: HeadBlock | undefined;
  /** The bytes sent: the identity body or the stored encoding. */
  readonly body: Buffer;
  /** The 304's headers (RFC 9110 §15.4.5) for this coding, Via included. */
  readonly notModified: OutgoingHttpHeaders;
  /** A fresh hit's Age and Cache-Status lines up to the request id, for hitAge and hitTtl. */
  hitLines: string;
  hitAge: number;
  hitTtl: number;
}

/** An entry's prepared encoded answers (only for codings it stores). */
interface PreparedCodings {
  br?: PreparedEntry;
  gzip?: PreparedEntry;
}

/**
 * Entries are never mutated (a 304 merge or a purge makes a new one), so what every answer from
 * an entry shares is built once per coding and a hit only appends what differs per request. The
 * identity answer has its own map, so a hit on an entry without encodings does what it did
 * before encodings existed: one WeakMap lookup.
 */
const prepared = new WeakMap<CacheEntry, PreparedEntry>();
const preparedEncoded = new WeakMap<CacheEntry, PreparedCodings>();
function prepare(entry: CacheEntry, coding: StoredCoding | undefined): PreparedEntry {
  if (coding === undefined) {
    let p = prepared.get(entry);
    if (p === undefined) prepared.set(entry, (p = makePrepared(entry, undefined)));
    return p;
  }
  let codings = preparedEncoded.get(entry);
  if (codings === undefined) preparedEncoded.set(entry, (codings = {}));
  let p = codings[coding];
  if (p === undefined) codings[coding] = p = makePrepared(entry, coding);
  return p;
}

/**
 * The head of an answer from `entry` in `coding`. An entry with stored encodings answers every
 * coding (identity included) with `Vary: Accept-Encoding` merged into the origin's Vary; an
 * encoded answer carries its Content-Encoding, its own Content-Length and the encoding's ETag
 * (content-coding.ts encodedETag), and none of the fields that describe the identity bytes
 * (Accept-Ranges, digests: IDENTITY_ONLY_FIELDS); Last-Modified stays the origin's.
 */
function makePrepared(entry: CacheEntry, coding: StoredCoding | undefined): PreparedEntry {
  const encoded = coding === undefined ? undefined : entry.encodings?.[coding];
  const effective = encoded === undefined ? undefined : coding;
  const body = encoded ?? entry.body;
  const varies = entry.encodings !== undefined;
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(entry.headers)) {
    // x-request-id: the origin's id of the one request that filled the entry; each answer carries its own.
    if (INTERNAL_HEADERS.has(name) || name === 'content-length' || name === 'via' || name === 'x-request-id') continue;
    if (HOP_BY_HOP.has(name)) continue; // the framing is this answer's own (a record from elsewhere may say otherwise)
    if (name === 'vary' && varies) continue;
    if (name === 'accept-ranges' && effective === undefined) continue; // set below
    if (name === 'etag' && effective !== undefined) {
      const tag = encodedETag(Array.isArray(value) ? value[0]! : value, effective);
      if (tag !== undefined) headers['etag'] = tag;
      continue;
    }
    if (effective !== undefined && (name === 'content-encoding' || IDENTITY_ONLY_FIELDS.has(name))) continue;
    headers[name] = value;
  }
  if (varies) headers['vary'] = varyWithAcceptEncoding(entry.headers['vary']);
  if (effective !== undefined) headers['content-encoding'] = effective;
  // A stored 200's identity answer serves Range requests (range.ts), whatever the origin said
  // about its own; ranges are of the identity bytes, so an encoded answer advertises none.
  if (effective === undefined) {
    if (entry.status === 200) headers['accept-ranges'] = 'bytes';
    else if (entry.headers['accept-ranges'] !== undefined) headers['accept-ranges'] = entry.headers['accept-ranges'];
  }
  const flat: Array<string | number | string[]> = [];
  for (const [name, value] of Object.entries(headers)) flat.push(name, value);
  const via = appendVia(entry.headers['via']);
  // Never on a 204 (RFC 9110 §8.6: a server must not send one; the origin's had none).
  if (entry.status === 204) flat.push('via', via);
  else flat.push('content-length', body.length, 'via', via);
  const notModified: OutgoingHttpHeaders = {};
  for (const name of NOT_MODIFIED_HEADERS) {
    const v = headers[name];
    if (v !== undefined) notModified[name] = v;
  }
  notModified['via'] = via;
  return { flat, block: makeHeadBlock(flat), body, notModified, hitLines: '', hitAge: NaN, hitTtl: NaN };
}

/**
 * An answer from a stored entry: its 200 (or other stored status), or a 304 to the client's
 * conditional, with Age (RFC 9111 §5.1), Cache-Status and X-Request-Id.
 *
 * A fresh hit (no `cacheStatus`: the memo hit path) has its Age and Cache-Status lines up to the
 * request id rendered once per entry for as long as both stay the same (a second at most), and
 * the rest is plain concatenation. Against a hits-only formatter on every hit, in the memo path:
 * +2.6 % hits/s (median of six launches of both builds loaded at once, 0.98–1.04), together with
 * raw-head.ts rendering status and keep-alive lines once.
 */
export function sendEntry(res: ServerResponse, entry: CacheEntry, answer: EntryAnswer): void {
  // RFC 9111 §5.1: Age on every response served from cache.
  const age = answer.ageSeconds > 0 ? Math.floor(answer.ageSeconds) : 0;
  const p = prepare(entry, answer.coding);
  const requestId = answer.requestId;
  if (answer.notModified) {
    const headers: OutgoingHttpHeaders = { ...p.notModified };
    headers['age'] = String(age);
    headers['cache-status'] = cacheStatusOf(answer);
    headers['x-request-id'] = requestId;
    res.writeHead(304, dispositionFirst(headers));
    res.end();
    return;
  }
  // Age is digits, Cache-Status is built from fixed words and the request id, and request ids
  // are validated at the edge (REQUEST_ID_RE) or generated: valid header values by construction.
  if (p.block !== undefined) {
    let lines: string;
    if (answer.cacheStatus === undefined) {
      const ttl = Math.trunc(answer.ttlSeconds);
      if (p.hitAge !== age || p.hitTtl !== ttl) {
        p.hitLines = `age: ${age}\r\ncache-status: ${hitCacheStatusPrefix(ttl)}`;
        p.hitAge = age;
        p.hitTtl = ttl;
      }
      lines = p.hitLines + requestId + '"\r\nx-request-id: ' + requestId + '\r\n';
    } else lines = `age: ${age}\r\ncache-status: ${answer.cacheStatus}\r\nx-request-id: ${requestId}\r\n`;
    if (setRawHead(res, entry.status, p.block, lines)) {
      endWithBody(res, entry, p.body, answer.head);
      return;
    }
  }
  const headers = p.flat.slice();
  headers.push('age', String(age), 'cache-status', cacheStatusOf(answer), 'x-request-id', requestId);
  res.writeHead(entry.status, headers as unknown as OutgoingHttpHeaders);
  endWithBody(res, entry, p.body, answer.head);
}

/** Ends an entry's answer: its body (identity or encoded), unless HEAD or a status without one. */
function endWithBody(res: ServerResponse, entry: CacheEntry, body: Buffer, head: boolean): void {
  if (head || entry.status === 204 || entry.status === 304) res.end();
  else res.end(body);
}

/** What an error page says besides the catalogue's text. */
export interface ErrorPage {
  /** The request's Accept: JSON or HTML. */
  accept?: string;
  /** For the operator: what went wrong here. */
  detail?: string;
  retryAfterSeconds?: number;
}

/** The gateway's own error answer: status from the catalogue, small HTML or JSON page. */
export function sendError(res: ServerResponse, code: ErrorCode, answer: Answer, page: ErrorPage = {}): number {
  const status = ERRORS[code].status;
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  const body = makeErrorBody(code, { accept: page.accept, detail: page.detail, requestId: answer.requestId });
  const headers: OutgoingHttpHeaders = { 'content-type': body.contentType, 'cache-control': 'no-store', 'x-crowdgate-error': code };
  if (page.retryAfterSeconds !== undefined) headers['retry-after'] = String(page.retryAfterSeconds);
  sendOwn(res, status, headers, body.body, answer);
  return status;
}

/**
 * An answer the gateway makes itself rather than from the origin or a stored entry: an error
 * page (sendError), the redirect to https (https-edge.ts), a PURGE's result (purge-method.ts).
 * `headers` as the caller made them, then what every such answer carries: Content-Length, Via,
 * X-Request-Id and Cache-Status from the Answer; the body unless HEAD.
 */
export function sendOwn(res: ServerResponse, status: number, headers: OutgoingHttpHeaders, body: Buffer | string, answer: Answer): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const out: OutgoingHttpHeaders = { ...headers, 'content-length': bytes.length, 'x-request-id': answer.requestId, via: VIA_VALUE };
  if (answer.cacheStatus) out['cache-status'] = answer.cacheStatus;
  res.writeHead(status, dispositionFirst(out));
  res.end(answer.head ? undefined : bytes);
}
