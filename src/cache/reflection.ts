/**
 * Reflected inputs: which request headers a shared fill sent without the key covering them
 * show up in the origin's answer. A fill passes on headers no list names (an origin, or a test
 * harness, may read its own), so an origin that copies such a header into a cacheable page
 * without `Vary` on it would let one client plant that page for everyone (the classic unkeyed
 * input of cache poisoning). The fill treats a header whose value it finds in the answer's
 * headers or body as if the origin had listed it in Vary: the copy is stored as that header's
 * variant, and reaches only requests carrying the same value.
 *
 * Best effort, not a proof: an origin that transforms a value in a way not looked for here
 * (truncates it, decodes base64, takes a port off) still gets past it; `fillHeaders.only` is
 * the strict defence. What counts as "found" (formsOf): the value and each of its comma
 * members, as sent and percent-decoded, each lowercased, uppercased, with whitespace
 * collapsed, percent- and form-encoded, HTML-escaped (the usual spellings of quotes), JSON-escaped (also
 * with `\/`), in the response header values or in the body (decoded when the origin compressed
 * it; as UTF-8 and as the raw bytes, since Node reads header bytes as latin1). For Accept,
 * Accept-Language and Accept-Charset, a value made only of well-formed media ranges,
 * language ranges or charsets (the shape a browser sends) is not looked for at all, and
 * otherwise not in the answer's own Content-Type / Content-Language: a browser's `en-US` is in
 * every page that says `lang="en-US"`, its `text/html` in every page's meta tag.
 *
 * Values shorter than MIN_REFLECTED_LENGTH are not looked for: one or two characters cannot
 * carry a URL or markup, and they occur in almost every page by chance. A body that cannot
 * hold markup or script (images, audio, video, fonts, archives: NOT_SCANNED_TYPES) is not
 * searched, only the headers. Past MAX_SCANNED_INPUTS inputs, or when the body cannot be
 * decoded, every input counts as reflected (a variant too many is a miss; a missed reflection
 * is a planted page). A large body is searched one input per event-loop turn.
 */
import { promisify } from 'node:util';
import { brotliDecompress, brotliDecompressSync, gunzip, gunzipSync, inflate, inflateSync, type ZlibOptions } from 'node:zlib';

import type { CacheEntry } from './entry.js';

export const MIN_REFLECTED_LENGTH = 3;
export const MAX_SCANNED_INPUTS = 8;
/** A decoded body past this many bytes is searched one input per event-loop turn. */
const YIELD_AFTER_BYTES = 64 * 1024;

/** A request header a fill sent that nothing keys: lowercase name and the value sent. */
export type UnkeyedInput = readonly [name: string, value: string];

/** Content types whose bodies are not searched (they cannot carry markup or script). */
const NOT_SCANNED_TYPES = /^\s*(?:image\/(?!svg)|audio\/|video\/|font\/|application\/(?:octet-stream|pdf|zip|gzip|wasm|x-font|font-))/i;

/** A well-formed member of each negotiation header, parameters aside (the shape browsers send). */
const PLAIN_MEMBER: Readonly<Record<string, RegExp>> = {
  accept: /^[a-z0-9!#$&^_.+*-]+\/[a-z0-9!#$&^_.+*-]+$/i,
  'accept-language': /^(?:\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*)$/i,
  'accept-charset': /^[a-z0-9!#$%&'*+.^_`|~-]+$/i,
};
/** The answer's own header a negotiation header's value is naturally found in. */
const OWN_ANSWER_FIELD: Readonly<Record<string, string>> = {
  accept: 'content-type',
  'accept-language': 'content-language',
  'accept-charset': 'content-type',
};

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
  const scanned = inputs.filter(([, value]) => value.trim().length >= MIN_REFLECTED_LENGTH);
  if (scanned.length === 0) return [];
  const all = () => [...new Set(scanned.map(([name]) => name))].sort();
  if (scanned.length > MAX_SCANNED_INPUTS) return all();
  const contentType = headers['content-type'];
  const searchBody = !NOT_SCANNED_TYPES.test(Array.isArray(contentType) ? contentType.join(',') : (contentType ?? ''));
  const decoded = searchBody ? await decodeBody(body, headers['content-encoding'], maxBodyBytes) : Buffer.alloc(0);
  if (decoded === undefined) return all();
  const found = new Set<string>();
  for (const [name, value] of scanned) {
    if (found.has(name)) continue;
    if (decoded.length > YIELD_AFTER_BYTES) await new Promise<void>((resolve) => setImmediate(resolve));
    const own = OWN_ANSWER_FIELD[name];
    const headerText = Object.entries(headers)
      .filter(([field, v]) => v !== undefined && field !== 'content-encoding' && field !== own)
      .map(([, v]) => (Array.isArray(v) ? v.join('\n') : (v as string)))
      .join('\n');
    const within = (form: string) => headerText.includes(form) || decoded.includes(form) || (!isAscii(form) && decoded.includes(Buffer.from(form, 'latin1')));
    if (textsOf(name, value).some((text) => anchorFound(text, within) && formsOfText(text).some(within))) found.add(name);
  }
  return [...found].sort();
}

/**
 * The longest run of letters and digits in `text`, which every form of it keeps (in some case):
 * when no case of it is in the answer, no form is, and the forms need not be searched. True
 * when the run is too short to tell.
 */
function anchorFound(text: string, within: (form: string) => boolean): boolean {
  let anchor = '';
  for (const run of text.match(/[A-Za-z0-9]+/g) ?? []) if (run.length > anchor.length) anchor = run;
  if (anchor.length < MIN_REFLECTED_LENGTH) return true;
  return within(anchor) || within(anchor.toLowerCase()) || within(anchor.toUpperCase());
}

/** The spellings an origin is likely to copy a header's value in (module comment). */
export function formsOf(name: string, value: string): string[] {
  return [...new Set(textsOf(name, value).flatMap(formsOfText))];
}

/**
 * The value and the comma members looked for on their own (module comment), each also
 * percent-decoded: decoding takes characters out (`%3Csvg` is `<svg`), where every other
 * spelling only puts some in or changes case, which anchorFound relies on.
 */
function textsOf(name: string, value: string): string[] {
  const plain = PLAIN_MEMBER[name];
  const texts = new Set<string>();
  if (plain === undefined) {
    texts.add(value.trim());
    for (const member of value.split(',')) texts.add(member.trim());
  } else {
    // A negotiation header made only of the members a browser sends is not looked for at all.
    for (const member of value.split(',')) {
      const bare = member.split(';')[0]!.trim();
      if (bare !== '' && !plain.test(bare)) texts.add(bare);
    }
    if (texts.size > 0) texts.add(value.trim());
  }
  for (const t of [...texts]) {
    try {
      texts.add(decodeURIComponent(t));
    } catch {
      // Not percent-encoded: the text as it is stands.
    }
  }
  return [...texts].filter((t) => t.length >= MIN_REFLECTED_LENGTH);
}

function formsOfText(text: string): string[] {
  const forms = new Set<string>();
  for (const t of new Set([text, text.replace(/\s+/g, ' ')])) {
    forms.add(t);
    forms.add(t.toLowerCase());
    forms.add(t.toUpperCase());
    for (const transform of TRANSFORMS) {
      try {
        forms.add(transform(t));
      } catch {
        // A lone surrogate cannot be percent-encoded: the other spellings stand.
      }
    }
  }
  return [...forms].filter((f) => f.length >= MIN_REFLECTED_LENGTH);
}

const TRANSFORMS: readonly ((v: string) => string)[] = [
  encodeURIComponent,
  (v) => new URLSearchParams([['', v]]).toString().slice(1),
  (v) => htmlEscape(v, '&quot;', '&#39;'),
  (v) => htmlEscape(v, '&#34;', '&#039;'),
  (v) => htmlEscape(v, '&quot;', '&#x27;'),
  (v) => JSON.stringify(v).slice(1, -1),
  (v) => JSON.stringify(v).slice(1, -1).replace(/\//g, '\\/'),
];

function htmlEscape(value: string, quot: string, apos: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, quot).replace(/'/g, apos);
}

function isAscii(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
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
