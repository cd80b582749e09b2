/**
 * Reflected inputs: which request headers a shared fill sent without the key covering them
 * show up in the origin's answer. A fill passes on headers no list names (an origin, or a test
 * harness, may read its own), so an origin that copies such a header into a cacheable page
 * without `Vary` on it would let one client plant that page for everyone (the classic unkeyed
 * input of cache poisoning). The fill treats a header whose value it finds in the answer's
 * headers or body as if the origin had listed it in Vary: the copy is stored as that header's
 * variant, and reaches only requests carrying the same value.
 *
 * Pure: no I/O. What counts as "found": the value as sent, lowercased, percent-encoded,
 * form-encoded, HTML-escaped and JSON-escaped, in the response header values or in the body
 * (decoded when the origin compressed it). Values shorter than MIN_REFLECTED_LENGTH are not
 * looked for: one or two characters cannot carry a URL or markup, and they occur in almost
 * every page by chance. Past MAX_SCANNED_INPUTS inputs, or when the body cannot be decoded,
 * every input counts as reflected (a variant too many is a miss; a missed reflection is a
 * planted page).
 */
import { promisify } from 'node:util';
import { brotliDecompress, brotliDecompressSync, gunzip, gunzipSync, inflate, inflateSync, type ZlibOptions } from 'node:zlib';

import type { CacheEntry } from './entry.js';

export const MIN_REFLECTED_LENGTH = 3;
export const MAX_SCANNED_INPUTS = 16;

/** A request header a fill sent that nothing keys: lowercase name and the value sent. */
export type UnkeyedInput = readonly [name: string, value: string];

/**
 * The names of `inputs` whose values appear in the answer: `headers` (lowercase names, as
 * stored) and `body` (as received, coded as `headers['content-encoding']` says), sorted and
 * deduplicated. `maxBodyBytes` bounds a decoded body (a compression bomb counts as reflecting
 * everything).
 */
export async function reflectedInputs(
  inputs: readonly UnkeyedInput[],
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer,
  maxBodyBytes: number,
): Promise<string[]> {
  const scanned = inputs.filter(([, value]) => value.length >= MIN_REFLECTED_LENGTH);
  if (scanned.length === 0) return [];
  const all = () => [...new Set(scanned.map(([name]) => name))].sort();
  if (scanned.length > MAX_SCANNED_INPUTS) return all();
  const decoded = await decodeBody(body, headers['content-encoding'], maxBodyBytes);
  if (decoded === undefined) return all();
  const headerText = Object.entries(headers)
    .filter(([name, v]) => v !== undefined && name !== 'content-encoding')
    .map(([, v]) => (Array.isArray(v) ? v.join('\n') : (v as string)))
    .join('\n');
  const found = new Set<string>();
  for (const [name, value] of scanned) {
    if (found.has(name)) continue;
    for (const form of formsOf(value)) {
      if (headerText.includes(form) || decoded.includes(form)) {
        found.add(name);
        break;
      }
    }
  }
  return [...found].sort();
}

/** The spellings an origin is likely to copy a value in (module comment). */
export function formsOf(value: string): string[] {
  const forms = new Set<string>([value, value.toLowerCase()]);
  for (const encode of [encodeURIComponent, formEncode, htmlEscape, jsonEscape]) {
    try {
      forms.add(encode(value));
    } catch {
      // A lone surrogate cannot be percent-encoded: the other forms still stand.
    }
  }
  return [...forms].filter((f) => f.length >= MIN_REFLECTED_LENGTH);
}

function formEncode(value: string): string {
  return new URLSearchParams([['', value]]).toString().slice(1);
}

function htmlEscape(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function jsonEscape(value: string): string {
  return JSON.stringify(value).slice(1, -1);
}

/** A body up to this size (as received) is decoded inline; a larger one on the threadpool. */
const INLINE_DECODE_MAX_BYTES = 16 * 1024;

type Decoder = (buf: Buffer, opts: ZlibOptions) => Buffer;
type AsyncDecoder = (buf: Buffer, opts: ZlibOptions) => Promise<Buffer>;
const DECODERS: Readonly<Record<string, readonly [Decoder, AsyncDecoder]>> = {
  gzip: [gunzipSync, promisify(gunzip) as AsyncDecoder],
  'x-gzip': [gunzipSync, promisify(gunzip) as AsyncDecoder],
  br: [brotliDecompressSync as Decoder, promisify(brotliDecompress) as AsyncDecoder],
  deflate: [inflateSync, promisify(inflate) as AsyncDecoder],
};

/**
 * The body as the origin's representation before its content coding, or undefined when it
 * cannot be read (an unknown coding, a corrupt stream, more than `maxBytes` decoded).
 */
async function decodeBody(body: Buffer, contentEncoding: string | string[] | undefined, maxBytes: number): Promise<Buffer | undefined> {
  const codings = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : (contentEncoding ?? ''))
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  let out = body;
  try {
    for (const coding of codings.reverse()) {
      const decoder = DECODERS[coding];
      if (decoder === undefined) return undefined;
      const opts = { maxOutputLength: Math.max(1, maxBytes) };
      out = out.length <= INLINE_DECODE_MAX_BYTES ? decoder[0](out, opts) : await decoder[1](out, opts);
    }
  } catch {
    return undefined;
  }
  return out;
}

type StoredShape = Pick<CacheEntry, 'vary' | 'headers'>;

/**
 * `entry` as if its Vary had also listed `names`: the variant key then holds their values, and
 * the answer's Vary tells a cache downstream the same.
 */
export function varyingAlsoOn<E extends StoredShape>(entry: E, names: readonly string[]): E {
  const added = names.filter((n) => !entry.vary.includes(n));
  if (added.length === 0) return entry;
  const current = entry.headers['vary'];
  const listed = Array.isArray(current) ? current.join(', ') : current;
  return {
    ...entry,
    vary: [...entry.vary, ...added].sort(),
    headers: { ...entry.headers, vary: listed ? `${listed}, ${added.join(', ')}` : added.join(', ') },
  };
}
