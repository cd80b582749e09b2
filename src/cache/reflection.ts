/**
 * Reflected inputs: which request headers a shared fill sent without the key covering them
 * show up in the origin's answer. A fill passes on headers no list names (an origin, or a test
 * harness, may read its own), so an origin that copies such a header into a cacheable page
 * without `Vary` on it would let one client plant that page for everyone (the classic unkeyed
 * input of cache poisoning). The fill treats a header whose value it finds in the answer's
 * headers or body as if the origin had listed it in Vary: the copy is stored as that header's
 * variant, and reaches only requests carrying the same value.
 *
 * Best effort, not a proof: an origin that transforms a value in a way not undone here
 * (truncates it, decodes base64, takes a port off) still gets past it; `fillHeaders.only` is
 * the strict defence. How "found" is decided: the answer (its header values, and its body
 * decoded when the origin compressed it) and each text looked for are brought to one
 * canonical spelling (normalise: JavaScript/JSON escapes, HTML entities and percent-encoding
 * undone, `+` read as a space, whitespace collapsed, lower case), so an origin that escapes
 * the value in any of those ways, or lowercases or uppercases it, still shows it. The texts
 * looked for are the value, each of its `,` and `;` separated parts, and each of those
 * percent-decoded (an origin that decodes the value takes characters out). A raw byte copy is
 * also looked for (Node reads header bytes as latin1, an origin may write them back as is).
 * For Accept, Accept-Language and Accept-Charset, a value made only of what a browser sends
 * (well-formed media ranges, language ranges or charsets, with token=token parameters) is
 * not looked for at all, and otherwise not in the answer's own Content-Type /
 * Content-Language: a browser's `en-US` is in every page that says `lang="en-US"`, its
 * `text/html` in every page's meta tag.
 *
 * Cost: the answer is normalised only when the longest run of letters and digits of some
 * text (which every escaping above keeps, in some case) is in it as received; a browser's
 * User-Agent on an ordinary page costs three substring searches.
 *
 * Values shorter than MIN_REFLECTED_LENGTH, and texts whose longest run of letters and
 * digits is shorter, are not looked for: they cannot carry a host name or a script worth
 * planting, and they occur in almost every page by chance. A User-Agent is looked for whole
 * (its `;` parts, `x64`, are in many pages). A body that cannot hold markup or script
 * (images, audio, video, fonts, archives: NOT_SCANNED_TYPES) is not searched, only the
 * headers. Past MAX_SCANNED_INPUTS headers other than User-Agent and Accept* (which are always
 * searched), those count as echoed unsearched; when the body cannot be decoded, every input
 * does (a variant too many is a miss; a missed reflection is a planted page). A large body is
 * searched one input per event-loop turn, and normalised a slice per turn.
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
  accept: /^[a-z0-9.+*-]+\/[a-z0-9.+*-]+$/i,
  'accept-language': /^(?:\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*)$/i,
  'accept-charset': /^[a-z0-9._:-]+$/i,
};
/** A parameter a browser sends with a negotiation member (`q=0.9`, `v=b3`). */
const PLAIN_PARAMETER = /^\s*[a-z0-9-]+\s*=\s*[a-z0-9.]+\s*$/i;
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
  const scanned = inputs
    .filter(([, value]) => value.trim().length >= MIN_REFLECTED_LENGTH)
    .map(([name, value]) => [name, textsOf(name, value)] as const)
    .filter(([, texts]) => texts.length > 0);
  if (scanned.length === 0) return [];
  // Past MAX_SCANNED_INPUTS headers of their own choosing (not User-Agent or Accept*, which a
  // client always sends and which are always searched), those all count as echoed unsearched.
  const custom = scanned.filter(([name]) => !ALWAYS_SEARCHED.has(name));
  const assumed = custom.length > MAX_SCANNED_INPUTS ? new Set(custom.map(([name]) => name)) : new Set<string>();
  const searched = scanned.filter(([name]) => !assumed.has(name));
  const contentType = headers['content-type'];
  const searchBody = body.length > 0 && !NOT_SCANNED_TYPES.test(Array.isArray(contentType) ? contentType.join(',') : (contentType ?? ''));
  const decoded = searchBody ? await decodeBody(body, headers['content-encoding'], maxBodyBytes) : Buffer.alloc(0);
  // A body that cannot be read: everything counts as echoed (a variant too many is a miss).
  if (decoded === undefined) return [...new Set(scanned.map(([name]) => name))].sort();
  const found = new Set<string>(assumed);
  // The answer in canonical spelling, made once and only when some text's anchor is in it.
  let bodyText: string | undefined;
  const canonicalBody = async () => (bodyText ??= await normaliseLarge(decoded.toString('utf8')));
  for (const [name, texts] of searched) {
    if (found.has(name)) continue;
    if (decoded.length > YIELD_AFTER_BYTES) await new Promise<void>((resolve) => setImmediate(resolve));
    const own = OWN_ANSWER_FIELD[name];
    const headerText = Object.entries(headers)
      .filter(([field, v]) => v !== undefined && field !== 'content-encoding' && field !== own)
      .map(([, v]) => (Array.isArray(v) ? v.join('\n') : (v as string)))
      .join('\n');
    const inRaw = (s: string) => headerText.includes(s) || decoded.includes(s);
    let canonicalHeaders: string | undefined;
    for (const text of texts) {
      if (!isAscii(text) && decoded.includes(Buffer.from(text, 'latin1'))) {
        found.add(name);
        break;
      }
      if (!anchorFound(text, inRaw)) continue;
      const canonical = normalise(text);
      if (canonical.length < MIN_REFLECTED_LENGTH) continue;
      if ((canonicalHeaders ??= normalise(headerText)).includes(canonical) || (await canonicalBody()).includes(canonical)) {
        found.add(name);
        break;
      }
    }
  }
  return [...found].sort();
}

/**
 * The longest run of letters and digits in `text`, which every spelling normalise() undoes
 * keeps (in some case): when no case of it is in the answer as received, no spelling of the
 * text is. True when the run is too short to tell.
 */
function anchorFound(text: string, inRaw: (s: string) => boolean): boolean {
  let anchor = '';
  for (const run of text.match(/[A-Za-z0-9]+/g) ?? []) if (run.length > anchor.length) anchor = run;
  // Too short a run carries no host name or script worth planting, and would match any page.
  if (anchor.length < MIN_REFLECTED_LENGTH) return false;
  return inRaw(anchor) || inRaw(anchor.toLowerCase()) || inRaw(anchor.toUpperCase());
}

/** Headers a client always sends: searched whatever the number of others. */
const ALWAYS_SEARCHED: ReadonlySet<string> = new Set(['user-agent', 'accept', 'accept-language', 'accept-charset']);

/** A body longer than this is normalised in slices, one per event-loop turn. */
const NORMALISE_SLICE_CHARS = 256 * 1024;

/**
 * normalise() of a long text, a slice per event-loop turn. Slices end after a `>` or a line
 * break where there is one in their last 256 characters, so an entity or escape is seldom cut.
 */
async function normaliseLarge(text: string): Promise<string> {
  if (text.length <= NORMALISE_SLICE_CHARS) return normalise(text);
  const out: string[] = [];
  for (let at = 0; at < text.length; ) {
    let end = Math.min(text.length, at + NORMALISE_SLICE_CHARS);
    if (end < text.length) {
      const window = text.slice(end - 256, end);
      const cut = Math.max(window.lastIndexOf('>'), window.lastIndexOf('\n'));
      if (cut >= 0) end = end - 256 + cut + 1;
    }
    out.push(normalise(text.slice(at, end)));
    at = end;
    if (at < text.length) await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return out.join('');
}

/**
 * The value, its `,` and `;` separated parts, and each percent-decoded (module comment); for a
 * negotiation header only when some member is not what a browser sends.
 */
export function textsOf(name: string, value: string): string[] {
  const plain = PLAIN_MEMBER[name];
  const texts = new Set<string>();
  if (name === 'user-agent') {
    // Its `;` parts (`x64`, `Win64`) are in many pages by chance; an origin that echoes a
    // User-Agent echoes it whole.
    texts.add(value.trim());
  } else if (plain === undefined) {
    texts.add(value.trim());
    for (const part of value.split(/[,;]/)) texts.add(part.trim());
  } else {
    let browserShaped = true;
    for (const member of value.split(',')) {
      const [bare, ...params] = member.split(';');
      const b = bare!.trim();
      if (b === '' && params.length === 0) continue;
      if (!plain.test(b) || !params.every((p) => PLAIN_PARAMETER.test(p))) {
        browserShaped = false;
        texts.add(member.trim());
        for (const part of [b, ...params]) texts.add(part.trim());
      }
    }
    if (browserShaped) return [];
    texts.add(value.trim());
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

const NAMED_ENTITIES: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', sol: '/', equals: '=', grave: '`', plus: '+' };

/**
 * The canonical spelling of a text (module comment): JavaScript / JSON escapes (`\u003c`,
 * `\x3c`, `\/`), HTML entities (named, decimal, hex), percent-encoding and `+` undone, white
 * space collapsed, lower case. Applied alike to the answer and to what is looked for.
 */
export function normalise(text: string): string {
  return text
    .replace(/\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})|\\([^ux])/g, (_, u: string, x: string, c: string) => (u ? String.fromCharCode(parseInt(u, 16)) : x ? String.fromCharCode(parseInt(x, 16)) : c))
    .replace(/&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z]{2,8}));?/g, (m, d: string, h: string, n: string) => {
      if (n !== undefined) return NAMED_ENTITIES[n.toLowerCase()] ?? m;
      const code = d !== undefined ? Number(d) : parseInt(h, 16);
      return code <= 0x10ffff ? String.fromCodePoint(code) : m;
    })
    .replace(/(?:%[0-9a-fA-F]{2})+/g, (m) => {
      try {
        return decodeURIComponent(m);
      } catch {
        return m.replace(/%([0-9a-fA-F]{2})/g, (_, x: string) => String.fromCharCode(parseInt(x, 16)));
      }
    })
    .replace(/\+/g, ' ')
    .replace(/\s+/g, ' ')
    .toLowerCase();
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
