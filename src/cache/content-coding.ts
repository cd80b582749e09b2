/**
 * Compression stored once: which responses get a brotli and a gzip encoding beside the identity
 * body, making those encodings (at fill time, on libuv's threadpool), and choosing per request the
 * best encoding the client accepts (RFC 9110 §12.5.3 Accept-Encoding, §8.4 Content-Encoding).
 *
 * Owns the policy and the codings; it does not store (stores/), serve (server/respond.ts) or
 * decide cacheability (policy.ts). Pure but for the async compressors.
 */
import { promisify } from 'node:util';
import { brotliCompress, brotliCompressSync, constants as zc, gzip, gzipSync } from 'node:zlib';
import { ownBytes } from '../bytes.js';
import { headerValue, parseCacheControl, type HeaderMap } from './cache-control.js';

/** The content codings crowdgate stores, best first: brotli, then gzip. */
export type StoredCoding = 'br' | 'gzip';
export const STORED_CODINGS: readonly StoredCoding[] = ['br', 'gzip'];

/** The encodings stored beside an entry's identity body (each strictly smaller than it). */
export interface EntryEncodings {
  br?: Buffer;
  gzip?: Buffer;
}

/** The `compression` config section, as this module reads it. */
export interface CompressionOptions {
  enabled: boolean;
  types: readonly string[];
  minBytes: number;
  minSavingsRatio: number;
  brotliQuality: number;
  gzipLevel: number;
}

// ---------------------------------------------------------------------------------------------
// Accept-Encoding

/**
 * A client's Accept-Encoding reduced to what crowdgate can send: the q-value (0–1) of br, gzip
 * and identity. RFC 9110 §12.5.3: `*` stands for every coding not listed (identity included);
 * identity is acceptable unless refused (`identity;q=0`, or `*;q=0` without an identity entry);
 * `x-gzip` is gzip. A member with a malformed q-value is ignored (as if absent). Identity not
 * listed (and no `*`) takes the lowest q the client gave any coding, as the `negotiator` library
 * does: `gzip;q=0.5` asks for gzip, not for identity at an implied q=1.
 */
export interface AcceptedCodings {
  readonly br: number;
  readonly gzip: number;
  readonly identity: number;
}

const Q_RE = /^q=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/i;

export function parseAcceptEncoding(value: string): AcceptedCodings {
  let br: number | undefined;
  let gz: number | undefined;
  let identity: number | undefined;
  let star: number | undefined;
  let minListed = 1;
  for (const member of value.split(',')) {
    const parts = member.split(';');
    const coding = parts[0]!.trim().toLowerCase();
    if (coding === '') continue;
    let q = 1;
    let valid = true;
    for (let i = 1; i < parts.length; i++) {
      const param = parts[i]!.trim();
      if (param === '') continue;
      const m = Q_RE.exec(param.replace(/\s*=\s*/, '='));
      if (m) q = Number(m[1]);
      else if (/^q\s*=/i.test(param)) valid = false; // q present but malformed: ignore the member
    }
    if (!valid) continue;
    if (q > 0) minListed = Math.min(minListed, q);
    // A coding listed twice keeps its highest q (lenient; RFC leaves it undefined).
    if (coding === 'br') br = Math.max(br ?? 0, q);
    else if (coding === 'gzip' || coding === 'x-gzip') gz = Math.max(gz ?? 0, q);
    else if (coding === 'identity') identity = Math.max(identity ?? 0, q);
    else if (coding === '*') star = Math.max(star ?? 0, q);
  }
  return {
    br: br ?? star ?? 0,
    gzip: gz ?? star ?? 0,
    identity: identity ?? star ?? minListed,
  };
}

/**
 * The coding to send from the encodings available: the highest q wins, ties go br > gzip >
 * identity. `undefined` is identity: without Accept-Encoding, when nothing stored is acceptable
 * (also when identity is refused too: the full body beats a 406 that breaks the page), or when
 * nothing is stored.
 */
export function pickCoding(accepted: AcceptedCodings, available: EntryEncodings): StoredCoding | undefined {
  let best: StoredCoding | undefined;
  let bestQ = accepted.identity;
  // Strictly greater for identity (it loses ties), and br is tried first (wins a tie with gzip).
  if (available.br !== undefined && accepted.br > 0 && accepted.br >= bestQ) {
    best = 'br';
    bestQ = accepted.br;
  }
  if (available.gzip !== undefined && accepted.gzip > 0 && (best === undefined ? accepted.gzip >= bestQ : accepted.gzip > bestQ)) {
    best = 'gzip';
  }
  return best;
}

/** Parsed Accept-Encoding values by their text: browsers send a handful of distinct strings. */
const parsedCache = new Map<string, AcceptedCodings>();
const PARSED_CACHE_MAX = 256;
const MAX_ACCEPT_ENCODING = 512;
const IDENTITY_ONLY: AcceptedCodings = Object.freeze({ br: 0, gzip: 0, identity: 1 });

/** pickCoding() for a request's Accept-Encoding, through a small cache of parsed values. */
export function chooseCoding(acceptEncoding: string | string[] | undefined, available: EntryEncodings): StoredCoding | undefined {
  if (acceptEncoding === undefined) return undefined;
  const text = typeof acceptEncoding === 'string' ? acceptEncoding : acceptEncoding.join(',');
  let accepted = parsedCache.get(text);
  if (accepted === undefined) {
    accepted = text.length > MAX_ACCEPT_ENCODING ? IDENTITY_ONLY : parseAcceptEncoding(text);
    if (parsedCache.size >= PARSED_CACHE_MAX) parsedCache.clear();
    parsedCache.set(text, accepted);
  }
  return pickCoding(accepted, available);
}

// ---------------------------------------------------------------------------------------------
// What is compressed

/** The media types compressed by default (compression.types). */
export const DEFAULT_COMPRESSIBLE_TYPES: readonly string[] = [
  'text/*',
  'application/json',
  'application/*+json',
  'application/javascript',
  'application/x-javascript',
  'application/ecmascript',
  'application/xml',
  'application/*+xml',
  'application/wasm',
  'application/x-ndjson',
  'image/svg+xml',
  'image/x-icon',
  'image/vnd.microsoft.icon',
  'image/bmp',
  'font/ttf',
  'font/otf',
  'application/vnd.ms-fontobject',
];

/** Never compressed whatever `types` says: a stream whose events must not wait in a compressor. */
const NEVER_TYPES: ReadonlySet<string> = new Set(['text/event-stream']);

/**
 * A matcher for `types`: `type/subtype` exactly, `type/*` for any subtype, `type/*+suffix` for
 * any subtype with that structured suffix (RFC 6838 §4.2.8). Case-insensitive; parameters of the
 * response's Content-Type are ignored.
 */
export function compileTypeMatcher(types: readonly string[]): (contentType: string | undefined) => boolean {
  const exact = new Set<string>();
  const anySubtype = new Set<string>();
  const suffixes: Array<[string, string]> = [];
  for (const raw of types) {
    const t = raw.trim().toLowerCase();
    const slash = t.indexOf('/');
    const type = t.slice(0, slash);
    const sub = t.slice(slash + 1);
    if (sub === '*') anySubtype.add(type);
    else if (sub.startsWith('*+')) suffixes.push([type, sub.slice(1)]);
    else exact.add(t);
  }
  return (contentType) => {
    if (contentType === undefined) return false;
    const semi = contentType.indexOf(';');
    const mediaType = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
    const slash = mediaType.indexOf('/');
    if (slash <= 0 || slash === mediaType.length - 1 || NEVER_TYPES.has(mediaType)) return false;
    if (exact.has(mediaType)) return true;
    const type = mediaType.slice(0, slash);
    if (anySubtype.has(type)) return true;
    const sub = mediaType.slice(slash + 1);
    for (const [t, suffix] of suffixes) if (t === type && sub.endsWith(suffix)) return true;
    return false;
  };
}

/** A media-type pattern accepted in compression.types (the schema uses it). */
export const TYPE_PATTERN_RE = /^[a-z0-9!#$&^_.+-]+\/(\*|\*\+[a-z0-9!#$&^_.+-]+|[a-z0-9!#$&^_.+-]+)$/i;

const matchers = new WeakMap<readonly string[], (contentType: string | undefined) => boolean>();
function matcherFor(types: readonly string[]): (contentType: string | undefined) => boolean {
  let m = matchers.get(types);
  if (m === undefined) matchers.set(types, (m = compileTypeMatcher(types)));
  return m;
}

function stored(headers: HeaderMap, name: string): string | undefined {
  return headerValue(headers, name);
}

/** True when the response's Cache-Control forbids transforming it (RFC 9111 §5.2.2.6). */
export function hasNoTransform(headers: HeaderMap): boolean {
  const cc = stored(headers, 'cache-control');
  return cc !== undefined && parseCacheControl(cc).has('no-transform');
}

/**
 * Why a stored response gets no encodings, or undefined when it should be compressed: only a
 * 200 whose body is sent with no content coding (absent or `identity`), of a compressible type,
 * at least `minBytes` long, without `no-transform`, and not a range.
 */
export function whyNotCompressed(
  status: number,
  headers: HeaderMap,
  bodyLength: number,
  opts: CompressionOptions,
): 'disabled' | 'status' | 'encoded' | 'type' | 'small' | 'no_transform' | undefined {
  if (!opts.enabled) return 'disabled';
  if (status !== 200 || stored(headers, 'content-range') !== undefined) return 'status';
  if (!matcherFor(opts.types)(stored(headers, 'content-type'))) return 'type';
  const ce = stored(headers, 'content-encoding');
  if (ce !== undefined && ce.trim() !== '' && ce.trim().toLowerCase() !== 'identity') return 'encoded';
  if (bodyLength < opts.minBytes) return 'small';
  if (hasNoTransform(headers)) return 'no_transform';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Making the encodings

const brotliAsync = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

/** One stored encoding made, for metrics. */
export interface EncodingMade {
  coding: StoredCoding;
  bytes: number;
}

/**
 * Bodies up to this size are compressed on the event loop: for them the threadpool's own cost
 * is the larger one. Measured on one CPU (Node 20, brotli 5 + gzip 6, text): a 2 KiB page costs
 * 0.20 ms inline and 0.62 ms through the threadpool (0.47 ms of it on the event loop, for the
 * two zlib stream objects and their callbacks); 8 KiB 0.33 / 0.72 ms; at 32 KiB inline (1.1 ms)
 * blocks the loop longer than the threadpool's 0.3 ms, so larger bodies go there.
 */
export const INLINE_COMPRESSION_MAX_BYTES = 16 * 1024;

/**
 * The brotli and gzip encodings of `body`: on the event loop for a small body (see
 * INLINE_COMPRESSION_MAX_BYTES), otherwise concurrently on the threadpool. An encoding that
 * does not save at least `minSavingsRatio` of the identity bytes is left out; undefined when none
 * is kept. A compressor error leaves that encoding out.
 */
export async function makeEncodings(body: Buffer, opts: CompressionOptions, isText: boolean): Promise<EntryEncodings | undefined> {
  const limit = Math.floor(body.length * (1 - opts.minSavingsRatio));
  const brotliOptions = {
    params: {
      [zc.BROTLI_PARAM_QUALITY]: opts.brotliQuality,
      [zc.BROTLI_PARAM_SIZE_HINT]: body.length,
      [zc.BROTLI_PARAM_MODE]: isText ? zc.BROTLI_MODE_TEXT : zc.BROTLI_MODE_GENERIC,
    },
  };
  const gzipOptions = { level: opts.gzipLevel };
  const [br, gz] =
    body.length <= INLINE_COMPRESSION_MAX_BYTES
      ? [inline(() => brotliCompressSync(body, brotliOptions)), inline(() => gzipSync(body, gzipOptions))]
      : await Promise.all([
          brotliAsync(body, brotliOptions).catch(() => undefined),
          gzipAsync(body, gzipOptions).catch(() => undefined),
        ]);
  const out: EntryEncodings = {};
  let any = false;
  if (br !== undefined && br.length <= limit) {
    out.br = ownBytes(br);
    any = true;
  }
  if (gz !== undefined && gz.length <= limit) {
    out.gzip = ownBytes(gz);
    any = true;
  }
  return any ? out : undefined;
}

/** The fill-time budget holds this many seconds of `fillBytesPerSecond` (its burst). */
export const BUDGET_BURST_SECONDS = 8;

/** One client may take at most this share of the fill-time budget (its rate and its burst). */
export const BUDGET_CLIENT_SHARE = 0.5;
/** Clients whose share is tracked at once; past it the least recent is forgotten (a full share again). */
const BUDGET_CLIENTS_MAX = 4096;

/** A token bucket of bytes, refilled at a rate up to a burst. */
class Bucket {
  private tokens: number | undefined;
  private at = 0;

  /** The bytes it holds at `now` (refilled since it was last read), without taking any. */
  level(now: number, perSecond: number, burst: number): number {
    const tokens = this.tokens === undefined ? burst : Math.min(burst, this.tokens + ((now - this.at) / 1000) * perSecond);
    this.tokens = tokens;
    this.at = now;
    return tokens;
  }

  take(bytes: number): void {
    this.tokens = (this.tokens ?? 0) - bytes;
  }
}

/**
 * The fill-time compression budget (`compression.fillBytesPerSecond`): a token bucket of body
 * bytes, refilled at that rate up to BUDGET_BURST_SECONDS of it. A body larger than
 * INLINE_COMPRESSION_MAX_BYTES is compressed only when the bucket holds its size (or is full:
 * a body larger than the burst goes into debt), else it is stored identity only. Compression
 * costs the gateway about 100 ms of CPU per MB, once per fill, while the origin may serve the
 * same file in 3 ms: a client asking for one large script under ever new query strings made
 * the gateway spend 1.8 of the box's 2 CPUs on 42 requests a second (attacker trial). Small
 * bodies (a crowd's pages) are never held back and not counted. One per gateway process.
 *
 * And one client (the request whose fill it is, `client`) takes at most BUDGET_CLIENT_SHARE of
 * it, in rate and burst: one client asking for 100 kB pages under made-up query strings kept
 * the whole budget empty, and a 300 kB script filled meanwhile (a year's `immutable`) was
 * stored uncompressed, 300 000 bytes to every visitor where brotli makes 10 861, until it was
 * filled again (attacker trial). Half stays for everyone else; a visitor's own first page
 * load of a new deploy's assets (a few MB) fits in its share.
 */
export class CompressionBudget {
  private readonly all = new Bucket();
  private readonly clients = new Map<string, Bucket>();

  constructor(private readonly now: () => number) {}

  /** May a body of `bytes` be compressed now at `perSecond` (0: no budget), for `client`? Takes its bytes when it may. */
  take(bytes: number, perSecond: number, client?: string): boolean {
    if (perSecond <= 0 || bytes <= INLINE_COMPRESSION_MAX_BYTES) return true;
    const burst = BUDGET_BURST_SECONDS * perSecond;
    const now = this.now();
    if (this.all.level(now, perSecond, burst) < Math.min(bytes, burst)) return false;
    let own: Bucket | undefined;
    if (client !== undefined) {
      own = this.clients.get(client);
      if (own === undefined) {
        own = new Bucket();
        if (this.clients.size >= BUDGET_CLIENTS_MAX) this.clients.delete(this.clients.keys().next().value!);
      } else this.clients.delete(client); // to the end: the least recent goes first
      this.clients.set(client, own);
      const share = BUDGET_CLIENT_SHARE;
      if (own.level(now, perSecond * share, burst * share) < Math.min(bytes, burst * share)) return false;
    }
    this.all.take(bytes);
    own?.take(bytes);
    return true;
  }
}

/** One synchronous compression; undefined when the compressor fails. */
function inline(compress: () => Buffer): Buffer | undefined {
  try {
    return compress();
  } catch {
    return undefined;
  }
}

/** True for the textual types (brotli's text mode). */
export function isTextual(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const t = contentType.trim().toLowerCase();
  return t.startsWith('text/') || t.includes('json') || t.includes('javascript') || t.includes('xml');
}

// ---------------------------------------------------------------------------------------------
// Headers of an encoded answer

/**
 * The ETag of an encoding, derived from the origin's: `"abc"` → `"abc-br"`, `W/"abc"` →
 * `W/"abc-gzip"`. A strong tag stays strong (the encoded bytes are fixed for the entry's life,
 * so they are a strong validator of their own); a weak tag stays weak. undefined for a
 * malformed tag (then the encoded answer carries no ETag rather than the identity's).
 */
export function encodedETag(etag: string, coding: StoredCoding): string | undefined {
  const t = etag.trim();
  const weak = t.startsWith('W/');
  const opaque = weak ? t.slice(2) : t;
  if (opaque.length < 2 || !opaque.startsWith('"') || !opaque.endsWith('"')) return undefined;
  const inner = opaque.slice(1, -1);
  if (inner.includes('"')) return undefined;
  return `${weak ? 'W/' : ''}"${inner}-${coding}"`;
}

/**
 * Header fields that describe the identity bytes, left off an encoded answer: ranges are served
 * from the identity body only, and a digest of the identity bytes is wrong for encoded ones.
 */
export const IDENTITY_ONLY_FIELDS: ReadonlySet<string> = new Set(['accept-ranges', 'content-md5', 'content-digest', 'repr-digest', 'digest']);

/** True when the request's Cache-Control says `no-transform` (RFC 9111 §5.2.1.6): send identity. */
export function requestForbidsTransform(cacheControl: string | string[] | undefined): boolean {
  return cacheControl !== undefined && parseCacheControl(cacheControl).has('no-transform');
}

/** Vary with `Accept-Encoding` added once (case-insensitive), kept as the origin wrote the rest. */
export function varyWithAcceptEncoding(vary: string | string[] | undefined): string {
  const text = vary === undefined ? '' : Array.isArray(vary) ? vary.join(', ') : vary;
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.some((n) => n.toLowerCase() === 'accept-encoding')) return names.join(', ');
  names.push('Accept-Encoding');
  return names.join(', ');
}

/** Bytes of every stored encoding of an entry. */
export function encodedBytesOf(encodings: EntryEncodings | undefined): number {
  if (encodings === undefined) return 0;
  return (encodings.br?.length ?? 0) + (encodings.gzip?.length ?? 0);
}
