/**
 * Versioned, binary-safe serialisation of CacheEntry records (one primary key, all its Vary
 * variants) for stores that keep bytes (Redis).
 * Owns the byte layout and its validation; it does not decide what is stored (stores/) nor what
 * the fields mean (entry.ts, policy.ts).
 *
 * Layout, version 1 (all integers big-endian):
 *
 *   magic  'C' 'G'            2 bytes, rejects foreign values early
 *   version                   1 byte  (CODEC_VERSION)
 *   count                     u16     number of variants
 *   count × {
 *     metaLength              u32     length of the JSON metadata that follows
 *     meta                    UTF-8 JSON of every field but `body`
 *     bodyLength              u32
 *     body                    raw bytes (never base64: binary bodies cost nothing extra)
 *   }
 *
 * Version 2 (written when a variant carries stored encodings, content-coding.ts) is version 1
 * with, after each body:
 *
 *     encodingCount           u8
 *     encodingCount × { nameLength u8, name (ASCII coding: br, gzip), length u32, raw bytes }
 *
 * A record without encodings is still written as version 1, so instances that predate version
 * 2 keep reading it; both versions decode.
 *
 * Decoding never throws: an unknown magic or version, a truncated buffer, trailing bytes or a
 * field of the wrong type yields `undefined`, which every caller treats as a miss. A new layout
 * gets a new version byte; unknown versions decode to `undefined` and simply refill.
 */
import type { CacheEntry, StoredHeaders } from './entry.js';
import { STORED_CODINGS, type EntryEncodings, type StoredCoding } from './content-coding.js';
import { ownCopy } from '../bytes.js';
import { HOP_BY_HOP } from '../http/facts.js';

/** The newest layout written (version 1 is still written for records without encodings). */
export const CODEC_VERSION = 2;
const V1 = 1;
const MAGIC_0 = 0x43; // 'C'
const MAGIC_1 = 0x47; // 'G'
const PREAMBLE_BYTES = 5; // magic (2) + version (1) + count (2)
const MAX_VARIANTS = 0xffff;

type EntryMeta = Omit<CacheEntry, 'body' | 'encodings'>;

/** Encode one record: all variants stored under one primary key. */
export function encodeEntries(entries: readonly CacheEntry[]): Buffer {
  if (entries.length > MAX_VARIANTS) throw new RangeError(`encodeEntries: at most ${MAX_VARIANTS} variants`);
  const parts: Buffer[] = [];
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  preamble[0] = MAGIC_0;
  preamble[1] = MAGIC_1;
  const version = entries.some((e) => e.encodings !== undefined) ? CODEC_VERSION : V1;
  preamble[2] = version;
  preamble.writeUInt16BE(entries.length, 3);
  parts.push(preamble);
  for (const entry of entries) {
    const meta = Buffer.from(JSON.stringify(metaOf(entry)), 'utf8');
    const metaLength = Buffer.alloc(4);
    metaLength.writeUInt32BE(meta.length, 0);
    const bodyLength = Buffer.alloc(4);
    bodyLength.writeUInt32BE(entry.body.length, 0);
    parts.push(metaLength, meta, bodyLength, entry.body);
    if (version === V1) continue;
    const codings = STORED_CODINGS.filter((c) => entry.encodings?.[c] !== undefined);
    parts.push(Buffer.from([codings.length]));
    for (const coding of codings) {
      const bytes = entry.encodings![coding]!;
      const head = Buffer.alloc(1 + coding.length + 4);
      head[0] = coding.length;
      head.write(coding, 1, 'latin1');
      head.writeUInt32BE(bytes.length, 1 + coding.length);
      parts.push(head, bytes);
    }
  }
  return Buffer.concat(parts);
}

/** Decode a record; `undefined` for anything that is not a valid version-1 or version-2 record. */
export function decodeEntries(bytes: Uint8Array): CacheEntry[] | undefined {
  try {
    const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (buf.length < PREAMBLE_BYTES) return undefined;
    const version = buf[2];
    if (buf[0] !== MAGIC_0 || buf[1] !== MAGIC_1 || (version !== V1 && version !== CODEC_VERSION)) return undefined;
    const count = buf.readUInt16BE(3);
    const entries: CacheEntry[] = [];
    let at = PREAMBLE_BYTES;
    for (let i = 0; i < count; i++) {
      if (at + 4 > buf.length) return undefined;
      const metaLength = buf.readUInt32BE(at);
      at += 4;
      if (at + metaLength + 4 > buf.length) return undefined;
      const meta: unknown = JSON.parse(buf.toString('utf8', at, at + metaLength));
      at += metaLength;
      const bodyLength = buf.readUInt32BE(at);
      at += 4;
      if (at + bodyLength > buf.length) return undefined;
      // Copy: the caller's buffer may be reused (Redis client buffers); an entry owns its body.
      const body = ownCopy(buf.subarray(at, at + bodyLength));
      at += bodyLength;
      if (!isEntryMeta(meta)) return undefined;
      const entry = entryOf(meta, body);
      if (version === CODEC_VERSION) {
        if (at + 1 > buf.length) return undefined;
        const encodingCount = buf[at++]!;
        let encodings: EntryEncodings | undefined;
        for (let j = 0; j < encodingCount; j++) {
          if (at + 1 > buf.length) return undefined;
          const nameLength = buf[at++]!;
          if (at + nameLength + 4 > buf.length) return undefined;
          const name = buf.toString('latin1', at, at + nameLength);
          at += nameLength;
          const length = buf.readUInt32BE(at);
          at += 4;
          if (at + length > buf.length) return undefined;
          if (!(STORED_CODINGS as readonly string[]).includes(name)) return undefined;
          (encodings ??= {})[name as StoredCoding] = ownCopy(buf.subarray(at, at + length));
          at += length;
        }
        if (encodings !== undefined) entry.encodings = encodings;
      }
      entries.push(entry);
    }
    if (at !== buf.length) return undefined; // trailing bytes: not something we wrote
    return entries;
  } catch {
    return undefined; // malformed JSON and the like: a miss, never an exception
  }
}

/** Encode a single variant (a record of one). */
export function encodeEntry(entry: CacheEntry): Buffer {
  return encodeEntries([entry]);
}

/** Decode a single variant; `undefined` unless the bytes hold exactly one valid entry. */
export function decodeEntry(bytes: Uint8Array): CacheEntry | undefined {
  const entries = decodeEntries(bytes);
  return entries?.length === 1 ? entries[0] : undefined;
}

function metaOf(entry: CacheEntry): EntryMeta {
  // Explicit field list: an unexpected extra property on the object is not persisted.
  const meta: EntryMeta = {
    key: entry.key,
    variantKey: entry.variantKey,
    vary: entry.vary,
    status: entry.status,
    headers: entry.headers,
    requestTime: entry.requestTime,
    responseTime: entry.responseTime,
    initialAgeMs: entry.initialAgeMs,
    freshnessMs: entry.freshnessMs,
    staleWhileRevalidateMs: entry.staleWhileRevalidateMs,
    staleIfErrorMs: entry.staleIfErrorMs,
    noCache: entry.noCache,
    mustRevalidate: entry.mustRevalidate,
    tags: entry.tags,
    deleteAt: entry.deleteAt,
  };
  if (entry.invalidatedAt !== undefined) meta.invalidatedAt = entry.invalidatedAt;
  if (entry.sharedByOrigin !== undefined) meta.sharedByOrigin = entry.sharedByOrigin;
  return meta;
}

function entryOf(meta: EntryMeta, body: Buffer): CacheEntry {
  const entry: CacheEntry = { ...metaOf({ ...meta, body }), body };
  return entry;
}

const NUMBER_FIELDS = [
  'status',
  'requestTime',
  'responseTime',
  'initialAgeMs',
  'freshnessMs',
  'staleWhileRevalidateMs',
  'staleIfErrorMs',
  'deleteAt',
] as const;

function isEntryMeta(value: unknown): value is EntryMeta {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const m = value as Record<string, unknown>;
  if (typeof m.key !== 'string' || typeof m.variantKey !== 'string') return false;
  if (!isStringArray(m.vary) || !isStringArray(m.tags)) return false;
  for (const field of NUMBER_FIELDS) if (!Number.isFinite(m[field])) return false;
  if (typeof m.noCache !== 'boolean' || typeof m.mustRevalidate !== 'boolean') return false;
  if (m.invalidatedAt !== undefined && !Number.isFinite(m.invalidatedAt)) return false;
  if (m.sharedByOrigin !== undefined && typeof m.sharedByOrigin !== 'boolean') return false;
  // A status and header fields Node will write: a record with status 99999, a bad header name
  // or a CR/LF in a value made writeHead throw on every hit of that page.
  if (!Number.isInteger(m.status) || (m.status as number) < 100 || (m.status as number) > 599) return false;
  return isStoredHeaders(m.headers);
}

/**
 * A header field name as the gateway stores it (an RFC 9110 §5.1 token, lower case) and a value
 * without CR, LF or NUL (§5.5). A hop-by-hop field is never stored (fill.ts strips them): a
 * record naming `transfer-encoding` beside the length the gateway writes was served framed twice
 * on every hit (a desync for a proxy in front), so such a record is not ours.
 */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
const FIELD_VALUE = /^[^\r\n\0]*$/;

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function isStoredHeaders(value: unknown): value is StoredHeaders {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.entries(value).every(
    ([name, v]) => FIELD_NAME.test(name) && !HOP_BY_HOP.has(name) && (typeof v === 'string' ? FIELD_VALUE.test(v) : isStringArray(v) && v.every((x) => FIELD_VALUE.test(x))),
  );
}
