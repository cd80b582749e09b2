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
 * So is the whole value base64- and base64url-encoded (base64Cores: at each of the three byte
 * alignments, so also inside a larger encoded text such as a JSON of all the headers), as
 * received or escaped where it was written.
 * For Accept, Accept-Language and Accept-Charset, a value made only of what browsers send
 * (PLAIN_SHAPE: media types browsers ask for with `q`, `v`, `charset` and `level`
 * parameters; language, script and region tags; charset names; a fixed vocabulary that
 * carries no text of a client's choosing) is not looked for at all; otherwise the value and
 * each member not of that shape (and its parts) are looked for like any header's, but not in
 * the answer's own Content-Type / Content-Language: a browser's `en-US` is in every page that
 * says `lang="en-US"`, its `text/html` in every page's meta tag.
 *
 * Cost: the answer is normalised only when the longest run of letters and digits of some
 * text (which every escaping above keeps, in some case) is in it as received; a browser's
 * User-Agent on an ordinary page costs three substring searches, and one for each of its
 * (up to three) base64 cores.
 *
 * Values shorter than MIN_REFLECTED_LENGTH are not looked for, nor texts whose longest run of
 * letters and digits is shorter unless they have MIN_UNANCHORED_LENGTH characters and one
 * that markup, script or a URL is made of (CARRIES_CODE): `//12.34.56.78` is a script host and
 * `[]["fi"+"lt"+"er"]...` is script without a run of three (attacker trial: both planted a
 * script for every visitor; so was `12.34.56.78` where the origin writes the `//`: review),
 * while `u=0` or `1.2` occur in almost every page by chance. A User-Agent is looked for whole
 * (its `;` parts, `x64`, are in many pages); one that carries markup (MARKUP), which no
 * browser's does, counts as repeated unsearched: an origin that prints a part of it it parsed
 * (a `;` part, the version after `Chrome/`) repeats what no search for the whole finds
 * (attacker trial, review: each planted a `<script>`). A body that cannot hold markup or script
 * (images, audio, video, fonts, archives: NOT_SCANNED_TYPES) is searched only for the raw
 * bytes of texts of MIN_BINARY_REFLECTED_BYTES or more (decoded first, within the same
 * bound), not for their other spellings; its headers as any answer's. Past
 * MAX_SCANNED_INPUTS headers other than User-Agent and Accept* (which are always searched),
 * those count as echoed unsearched; when the body cannot be decoded, every input does (a
 * variant too many is a miss; a missed reflection is a planted page). A large body is
 * searched one input per event-loop turn, and normalised a slice per turn.
 */
import { promisify } from 'node:util';
import { brotliDecompress, brotliDecompressSync, gunzip, gunzipSync, inflate, inflateSync, type ZlibOptions } from 'node:zlib';

import type { CacheEntry } from './entry.js';

export const MIN_REFLECTED_LENGTH = 3;
/** The shortest text without a run of MIN_REFLECTED_LENGTH letters or digits that is looked for (`//1.1` is a host). */
const MIN_UNANCHORED_LENGTH = 5;
/** Characters markup, script and URLs are made of: a text without a long run is looked for only with one. */
const CARRIES_CODE = /[<>"'`\\()[\]{}/:=+]/;
/** A text without a long run that is a host address (`12.34.56.78`; 7 characters or more, so not `1.2.3`) is looked for too. */
const MIN_UNANCHORED_HOST_LENGTH = 7;
/** Characters of markup and script no browser's User-Agent has: a User-Agent with one counts as repeated (reflectedInputs). */
const MARKUP = /[<>"'`\\{}=]/;
export const MAX_SCANNED_INPUTS = 8;
/** A decoded body past this many bytes is searched one text per event-loop turn. */
const YIELD_AFTER_BYTES = 64 * 1024;

/**
 * How many bytes of answer one fill's search may read in all, each look at the answer
 * counting its size: past it, the inputs not yet found count as repeated unsearched (a
 * variant too many, as for MAX_SCANNED_INPUTS). A header of 3 000 `,`-separated parts
 * against a 2 MiB page held the event loop, and every client, for 10 s. A 100 kB page can be
 * looked at 600 times within it, far more than real requests need.
 */
export const SEARCH_BUDGET_BYTES = 64 * 1024 * 1024;
/**
 * Looks at the answer granted on top of SEARCH_BUDGET_BYTES, each its size: a browser's
 * User-Agent (its value, its three base64 spellings' anchors) and Accept-Language are searched
 * in a large answer too. With the budget alone, a 7 MB gitweb snapshot used it up on one
 * browser's User-Agent, which then counted as repeated: the tarball was stored as each
 * browser's variant, one origin run per browser, and a crowd of 40 browsers got fewer
 * answers than straight from the origin (new-user trial).
 */
const ANSWER_LOOKS = 8;
/** What ANSWER_LOOKS adds at most: a 256 MiB cache.maxObjectBytes would otherwise let one fill read 2 GiB (review). */
const ANSWER_LOOKS_MAX_BYTES = 192 * 1024 * 1024;

/**
 * How an input counted as repeated: its `value` (or a part or spelling of it) or its `name` was
 * found in the answer, it was `unsearched` (past MAX_SCANNED_INPUTS, past the search budget, or
 * a body that cannot be read), or it is a User-Agent carrying `markup`.
 */
export type Finding = 'value' | 'name' | 'unsearched' | 'markup';

/** A request header a fill sent that nothing keys: lowercase name and the value sent. */
export type UnkeyedInput = readonly [name: string, value: string];

/**
 * Content types whose bodies cannot carry markup or script: searched only for raw copies of
 * longer texts (MIN_BINARY_REFLECTED_BYTES), not for spellings (they would match binary data
 * by chance).
 */
const NOT_SCANNED_TYPES =
  /^\s*(?:image\/(?!svg)|audio\/|video\/|font\/|application\/(?:octet-stream|pdf|zip|gzip|wasm|x-font|font-|x-gzip|x-tar|x-gtar|x-bzip2?|x-xz|x-lzma|x-lzip|zstd|x-zstd|x-compress|x-compressed|x-7z-compressed|x-rar-compressed|vnd\.rar|x-zip-compressed|java-archive|x-java-archive|vnd\.android\.package-archive|vnd\.debian\.binary-package|x-debian-package|x-rpm|x-redhat-package-manager|x-msdownload|x-msi|x-apple-diskimage|x-iso9660-image|x-xpinstall|x-shockwave-flash))/i;

/**
 * Charsets as browsers name them (Accept-Charset, and `charset=` in Accept): the WHATWG
 * Encoding labels browsers sent when they still sent the header (`ISO-8859-1,utf-8;q=0.7,*;q=0.3`,
 * `windows-1251,utf-8;q=0.7,*;q=0.7`). A fixed list: no text of an attacker's choosing fits it.
 */
const PLAIN_CHARSET = '(?:\\*|utf-8|utf-16(?:[bl]e)?|us-ascii|iso-8859-(?:[1-9]|1[0-6])|windows-125[0-8]|koi8-[ru]|shift_jis|euc-(?:jp|kr)|iso-2022-jp|gb2312|gbk|gb18030|big5)';
/** A weight (RFC 9110 §12.4.2: `0`, `0.8`, `1.000`). */
const PLAIN_Q = 'q=(?:0(?:\\.\\d{0,3})?|1(?:\\.0{0,3})?)';
/**
 * Media types browsers send, by subtype: navigations (html, xhtml+xml, xml, Chrome's
 * signed-exchange and avif/webp/apng), images (Chrome, Firefox and Safari image requests:
 * avif, webp, apng, png, jpeg, gif, svg+xml, Safari's jxl, heic, heic-sequence, old Opera's
 * x-xbitmap), media (Firefox: webm, ogg, wav), fonts (older Firefox: font-woff, font-woff2,
 * woff, woff2), scripts, styles and fetches (javascript, ecmascript, css, json, plain: axios
 * and jQuery defaults; event-stream: EventSource), and `*`. Each is a fixed word: a value
 * made of them carries no host name or script. Anything else (a vendor type, `x.y/z`) is
 * looked for.
 */
const PLAIN_SUBTYPE = '(?:html|xhtml\\+xml|xml|signed-exchange|avif|webp|apng|png|jpeg|gif|svg\\+xml|jxl|heic|heic-sequence|x-xbitmap|webm|ogg|wav|font-woff2?|woff2?|javascript|ecmascript|css|json|plain|event-stream|\\*)';
/**
 * What a browser sends in each negotiation header, member by member (members split at `,`,
 * parameters at `;`, each trimmed): Accept a registered top-level type or `*` and a subtype
 * above, with `q`, Chrome's `v=b3`, `charset` and `level` only; Accept-Language `*` or a
 * language (2-3 letters) with an optional script (4 letters) and region (2 letters or 3
 * digits), BCP 47 variants, extensions and private use (`en-x-…`) not; Accept-Charset a
 * charset above. Each with `q` only.
 */
const PLAIN_SHAPE: Readonly<Record<string, { readonly member: RegExp; readonly parameter: RegExp }>> = {
  accept: {
    member: new RegExp(`^(?:\\*|text|image|audio|video|application|font|model|multipart|message)/${PLAIN_SUBTYPE}$`, 'i'),
    parameter: new RegExp(`^(?:${PLAIN_Q}|v=[a-z0-9]{1,3}|charset=${PLAIN_CHARSET}|level=\\d)$`, 'i'),
  },
  'accept-language': {
    member: /^(?:\*|[a-z]{2,3}(?:-[a-z]{4})?(?:-(?:[a-z]{2}|\d{3}))?)$/i,
    parameter: new RegExp(`^${PLAIN_Q}$`, 'i'),
  },
  'accept-charset': {
    member: new RegExp(`^${PLAIN_CHARSET}$`, 'i'),
    parameter: new RegExp(`^${PLAIN_Q}$`, 'i'),
  },
};
/**
 * A table's entry by a name a client or an origin chose (a header name, a coding, an entity):
 * its own only, never Object.prototype's (`constructor: xyzzy123` made every fill throw:
 * attacker trial).
 */
function entryOf<T>(table: Readonly<Record<string, T>>, name: string): T | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

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
 * everything). `how`, when given, gets each returned name's Finding (for the log).
 */
export async function reflectedInputs(
  inputs: readonly UnkeyedInput[],
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer,
  maxBodyBytes: number,
  how?: Map<string, Finding>,
): Promise<string[]> {
  // Each with whether its value is looked for (`valued`), or only its name (nameTextsOf).
  const scanned = inputs
    .map(([name, value]) => {
      const valued = value.trim().length >= MIN_REFLECTED_LENGTH;
      const values = valued ? textsOf(name, value) : [];
      const names = nameTextsOf(name);
      return [name, [...values, ...names], valued ? base64Cores(value.trim()) : [], valued, new Set(names)] as const;
    })
    .filter(([, texts]) => texts.length > 0);
  if (scanned.length === 0) return [];
  // Past MAX_SCANNED_INPUTS headers of their own choosing (not User-Agent or Accept*, which a
  // client always sends and which are always searched), those all count as echoed unsearched.
  // Only those whose values are looked for: one whose name alone is (its value too short)
  // is always searched, on an unreadable body too (below; the HTTP cache conformance suite
  // numbers its requests in a `Req-Num: 1` header, and counted unseen, an answer with a test's
  // own Content-Encoding stored nothing the next request could use).
  const custom = scanned.filter(([name, , , valued]) => valued && !ALWAYS_SEARCHED.has(name));
  const assumed = custom.length > MAX_SCANNED_INPUTS ? new Set(custom.map(([name]) => name)) : new Set<string>();
  const searched = scanned.filter(([name]) => !assumed.has(name));
  const contentType = headers['content-type'];
  const binary = NOT_SCANNED_TYPES.test(Array.isArray(contentType) ? contentType.join(',') : (contentType ?? ''));
  const readable = body.length > 0 ? await decodeBody(body, headers['content-encoding'], maxBodyBytes) : Buffer.alloc(0);
  // A text body that cannot be read: everything counts as echoed (a variant too many is a
  // miss). A binary one (a .tar.gz served with Content-Encoding: gzip, past the cap unpacked)
  // is searched as it came: it carries no markup either way.
  if (readable === undefined && !binary) {
    // A name looked for alone is looked for in its bytes as they came there (any case), and in
    // the headers, not counted unseen: the conformance suite's `Req-Num: 1` beside a made-up
    // Content-Encoding made its answer vary on it, and one of its tests failed.
    const named = scanned.filter(([, , , valued]) => !valued);
    for (const [name, , , valued] of scanned) if (valued) how?.set(name, 'unsearched');
    if (named.length === 0) return [...new Set(scanned.map(([name]) => name))].sort();
    const seen = `${headerTextOf(headers, NAME_LISTS)}\n${body.toString('latin1')}`.toLowerCase();
    const echoed = named.filter(([, texts]) => texts.some((t) => seen.includes(t)));
    for (const [name] of echoed) if (!how?.has(name)) how?.set(name, 'name');
    return [...new Set([...scanned.filter(([, , , valued]) => valued), ...echoed].map(([name]) => name))].sort();
  }
  const decoded = readable ?? body;
  // The body searched for spellings: none for a binary one (only its raw bytes, below).
  const textBody = binary ? Buffer.alloc(0) : decoded;
  const found = new Set<string>(assumed);
  for (const name of assumed) how?.set(name, 'unsearched');
  // A User-Agent with markup in it is no browser's: taken as repeated, whatever part of it the
  // origin printed.
  for (const [name, value] of inputs)
    if (name === 'user-agent' && MARKUP.test(value)) {
      found.add(name);
      how?.set(name, 'markup');
    }
  // The answer in canonical spelling, made once and only when some text's anchor is in it;
  // in lower case (latin1), made once for the anchors.
  let bodyText: string | undefined;
  const canonicalBody = async () => (bodyText ??= await normaliseLarge(textBody.toString('utf8')));
  let lowerBody: string | undefined;
  const loweredBody = () => (lowerBody ??= textBody.toString('latin1').toLowerCase());
  // Every look at the answer is paid for with its size: past the budget, what is left counts
  // as repeated unsearched.
  let spent = 0;
  const budget = SEARCH_BUDGET_BYTES + Math.min(ANSWER_LOOKS * decoded.length, ANSWER_LOOKS_MAX_BYTES);
  const pay = (bytes: number) => (spent += bytes) > budget;
  const large = decoded.length > YIELD_AFTER_BYTES;
  for (const [name, texts, cores, , names] of searched) {
    if (found.has(name)) continue;
    if (large) await new Promise<void>((resolve) => setImmediate(resolve));
    const own = entryOf(OWN_ANSWER_FIELD, name);
    const headerText = headerTextOf(headers, own === undefined ? UNSEARCHED : new Set([...UNSEARCHED, own]));
    const size = headerText.length + textBody.length;
    const inRaw = (s: string) => headerText.includes(s) || textBody.includes(s);
    let headerLower: string | undefined;
    const inAnyCase = (lower: string) => (headerLower ??= headerText.toLowerCase()).includes(lower) || loweredBody().includes(lower);
    let canonicalHeaders: string | undefined;
    const inCanonical = async (canonical: string) => (canonicalHeaders ??= normalise(headerText)).includes(canonical) || (await canonicalBody()).includes(canonical);
    // A header's name is not looked for where the answer lists header names (NAME_LISTS).
    let namesText: string | undefined;
    let namesLower: string | undefined;
    let namesCanonical: string | undefined;
    const nameHeaders = () => (namesText ??= headerTextOf(headers, new Set([...UNSEARCHED, ...NAME_LISTS])));
    const nameInAnyCase = (lower: string) => (namesLower ??= nameHeaders().toLowerCase()).includes(lower) || loweredBody().includes(lower);
    const nameInCanonical = async (canonical: string) => (namesCanonical ??= normalise(nameHeaders())).includes(canonical) || (await canonicalBody()).includes(canonical);
    if (pay(binary ? decoded.length * texts.length : 0)) {
      found.add(name);
      how?.set(name, 'unsearched');
      continue;
    }
    // How it was found (past the budget it counts unsearched).
    let finding: Finding | undefined;
    const raw = binary ? texts.find((text) => rawBytesIn(decoded, text)) : undefined;
    if (raw !== undefined) finding = names.has(raw) ? 'name' : 'value';
    for (const text of finding ? [] : texts) {
      if (pay(size)) {
        finding = 'unsearched';
        break;
      }
      if (large) await new Promise<void>((resolve) => setImmediate(resolve));
      const isName = names.has(text);
      if (!isAscii(text) && textBody.includes(Buffer.from(text, 'latin1'))) {
        finding = isName ? 'name' : 'value';
        break;
      }
      if (!anchorFound(text, isName ? nameInAnyCase : inAnyCase) && !isUnanchoredCode(text)) continue;
      if (pay(size)) {
        finding = 'unsearched';
        break;
      }
      const canonical = normalise(text);
      if (canonical.length < MIN_REFLECTED_LENGTH) continue;
      if (await (isName ? nameInCanonical : inCanonical)(canonical)) {
        finding = isName ? 'name' : 'value';
        break;
      }
    }
    for (const core of finding ? [] : cores) {
      const base64 = await base64Found(core, inRaw, inCanonical, (looks) => pay(looks * size));
      if (base64 !== false) {
        finding = base64 === true ? 'value' : 'unsearched';
        break;
      }
    }
    if (finding) {
      found.add(name);
      how?.set(name, finding);
    }
  }
  return [...found].sort();
}

/**
 * The longest run of letters and digits in `text`, which every spelling normalise() undoes
 * keeps (in some case): when no case of it is in the answer as received, no spelling of the
 * text is. True when the run is too short to tell.
 */
function anchorFound(text: string, inAnyCase: (lower: string) => boolean): boolean {
  const anchor = longestRun(text);
  // Too short a run carries no host name or script worth planting, and would match any page.
  if (anchor.length < MIN_REFLECTED_LENGTH) return false;
  return inAnyCase(anchor.toLowerCase());
}

/**
 * A binary body (NOT_SCANNED_TYPES) is searched only for texts of at least this many bytes,
 * as their raw bytes: a given 8-byte string turns up by chance in a MiB of random or
 * compressed data with odds of about 2^20 / 2^64, and where a format has text of its own
 * (PDF keywords, PNG chunk names) a value matches it only by being such a word, which costs
 * a variant too many, no more. Shorter ones would (a 4-byte one in one MiB in 4 000).
 */
const MIN_BINARY_REFLECTED_BYTES = 8;

/** Whether `body` holds `text`'s bytes as Node read them (latin1) or, past ASCII, as UTF-8. */
function rawBytesIn(body: Buffer, text: string): boolean {
  const bytes = Buffer.from(text, 'latin1');
  if (bytes.length < MIN_BINARY_REFLECTED_BYTES) return false;
  return body.includes(bytes) || (!isAscii(text) && body.includes(Buffer.from(text, 'utf8')));
}

/**
 * A text too short in runs for an anchor that may still be a host or a script (CARRIES_CODE),
 * or words of one or two letters joined by `-` or `_` (a header name such as
 * `Ha-Ck-Ed-By-Ev-Il-Co-M` spells a message in them: review): looked for in canonical spelling.
 */
function isUnanchoredCode(text: string): boolean {
  if (longestRun(text).length >= MIN_REFLECTED_LENGTH) return false;
  return (
    (text.length >= MIN_UNANCHORED_LENGTH && CARRIES_CODE.test(text)) ||
    (text.length >= MIN_UNANCHORED_HOST_LENGTH && (text.includes('.') || /^[a-z0-9]+(?:[-_][a-z0-9]+){2,}$/i.test(text)))
  );
}

function longestRun(text: string): string {
  let anchor = '';
  for (const run of text.match(/[A-Za-z0-9]+/g) ?? []) if (run.length > anchor.length) anchor = run;
  return anchor;
}

/** A base64 core shorter than this is not looked for (it is in many pages by chance). */
const MIN_BASE64_CORE = 8;

/**
 * The base64 spellings of `value` wherever it sits in what an origin encoded (alone, or
 * inside a JSON of all its headers): the value's bytes encoded after 0, 1 and 2 bytes of
 * anything, less the characters that also depend on those bytes or on what follows
 * (`encoded.slice(ceil(8k/6), floor(8(k+n)/6))`); one of the three is in any base64 text
 * that holds the value. Of its latin1 bytes (as Node read them), its UTF-8 bytes when it is
 * not ASCII, and its JSON-escaped form (`"` and `\` escaped) when that differs. Standard
 * alphabet; base64url is looked for by base64Found. Cores shorter than MIN_BASE64_CORE are
 * left out.
 */
/**
 * Whether the answer repeats a client address (`address`, IPv4 or IPv6 as the socket gave
 * it): in a header or in the body (decoded as reflectedInputs decodes it; one that cannot be
 * decoded is searched as it came), as a whole address, not inside a longer one (`192.168.1.2`
 * is not in `192.168.1.20`), whatever its digits (the MIN_REFLECTED_LENGTH rule for other
 * texts would skip `10.0.0.5`). An IPv6 address is also looked for with its colons
 * percent-encoded (in a URL). Not counted among a client's headers (MAX_SCANNED_INPUTS):
 * nothing but the address itself found makes it repeated.
 */
export async function repeatsAddress(address: string, headers: Readonly<Record<string, unknown>>, body: Buffer, maxBodyBytes: number): Promise<boolean> {
  if (address.length === 0) return false;
  const v6 = address.includes(':');
  const edge = v6 ? '[0-9A-Fa-f:.]' : '[0-9.]';
  const spellings = v6 ? [address, address.replace(/:/g, '%3A'), address.replace(/:/g, '%3a')] : [address];
  const pattern = new RegExp(`(?<!${edge})(?:${spellings.map(escapeRegExp).join('|')})(?!${v6 ? '[0-9A-Fa-f]' : '\\d|\\.\\d'})`, v6 ? 'i' : '');
  for (const [field, value] of Object.entries(headers)) {
    if (value === undefined || field === 'content-encoding') continue;
    if (pattern.test(Array.isArray(value) ? value.join('\n') : String(value))) return true;
  }
  if (body.length === 0) return false;
  const decoded = (await decodeBody(body, headers['content-encoding'] as string | string[] | undefined, maxBodyBytes)) ?? body;
  // Cheap first: the address's bytes anywhere; only then the boundaries.
  if (!spellings.some((sp) => decoded.includes(sp))) return false;
  return pattern.test(decoded.toString('latin1'));
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function base64Cores(value: string): string[] {
  const forms = [Buffer.from(value, 'latin1')];
  if (!isAscii(value)) forms.push(Buffer.from(value, 'utf8'));
  const json = JSON.stringify(value).slice(1, -1);
  if (json !== value) forms.push(Buffer.from(json, 'utf8'));
  const cores = new Set<string>();
  for (const bytes of forms) {
    for (let k = 0; k < 3; k++) {
      const encoded = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64');
      const core = encoded.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + bytes.length)) / 6));
      if (core.length >= MIN_BASE64_CORE) cores.add(core);
    }
  }
  return [...cores];
}

/**
 * Whether a base64 core (standard alphabet) is in the answer, in either alphabet. Its longest
 * run of letters and digits, the same in both alphabets, is looked for first (one search, as
 * base64 keeps its case): only when it is there are the core and its base64url spelling, and
 * then (for a core with `+` or `/`, which a JSON or URL escaper rewrites: PHP's `\/`, `%2B`)
 * its canonical spelling looked for.
 */
async function base64Found(
  core: string,
  inRaw: (s: string) => boolean,
  inCanonical: (s: string) => Promise<boolean>,
  /** Pays for `looks` looks at the answer; true when past the budget (then 'unsearched'). */
  pay: (looks: number) => boolean,
): Promise<boolean | 'unsearched'> {
  const anchor = longestRun(core);
  const anchored = anchor.length >= MIN_BASE64_CORE;
  if (anchored) {
    if (pay(1)) return 'unsearched';
    if (!inRaw(anchor)) return false;
  }
  const url = core.replace(/\+/g, '-').replace(/\//g, '_');
  if (pay(url !== core ? 2 : 1)) return 'unsearched';
  if (inRaw(core) || (url !== core && inRaw(url))) return true;
  if (!anchored || anchor === core) return false;
  if (pay(1)) return 'unsearched';
  return inCanonical(normalise(core));
}

/** Answer fields never searched: the coding the fill itself asked for. */
const UNSEARCHED: ReadonlySet<string> = new Set(['content-encoding']);
/**
 * Answer fields whose values are lists of header names: a request header's *name* is not looked
 * for there (its value still is). WordPress's REST answers list `X-WP-Nonce` in
 * `Access-Control-Allow-Headers`, and every anonymous REST request that carried one was stored
 * as its nonce's variant, with a warning that the origin repeats it (new-user trial).
 */
const NAME_LISTS: ReadonlySet<string> = new Set(['access-control-allow-headers', 'access-control-expose-headers', 'vary', 'trailer', 'accept-ch', 'critical-ch']);

/** The answer's header values, one a line, but those of the fields in `skip` (lower-case names). */
function headerTextOf(headers: Readonly<Record<string, string | string[] | undefined>>, skip: ReadonlySet<string>): string {
  return Object.entries(headers)
    .filter(([field, v]) => v !== undefined && !skip.has(field))
    .map(([, v]) => (Array.isArray(v) ? v.join('\n') : (v as string)))
    .join('\n');
}

/** Headers a client always sends: searched whatever the number of others. */
const ALWAYS_SEARCHED: ReadonlySet<string> = new Set(['user-agent', 'accept', 'accept-language', 'accept-charset']);

/** The most of a value valueForLog shows. */
const LOGGED_VALUE_CHARS = 64;

/**
 * A repeated input's value as the log may show it: a browser's own headers (User-Agent,
 * Accept*: no secret) up to LOGGED_VALUE_CHARS characters, so an operator can tell a common
 * word found by chance (Node's `User-Agent: node` in MediaWiki's "visited node count") from an
 * echo; any other header's only as its length, since it may be a token (WordPress's
 * `X-WP-Nonce` reached the log: new-user trial).
 */
export function valueForLog(name: string, value: string): string {
  if (!ALWAYS_SEARCHED.has(name)) return value.length === 1 ? '(1 character)' : `(${value.length} characters)`;
  return value.length > LOGGED_VALUE_CHARS ? `${value.slice(0, LOGGED_VALUE_CHARS)}…` : value;
}

/**
 * Request field names of a standard or common vocabulary: not a text of the client's choosing
 * (and in many pages by chance: a CSP's `upgrade-insecure-requests`).
 */
const STANDARD_FIELD_NAMES: ReadonlySet<string> = new Set([
  ...ALWAYS_SEARCHED,
  'accept-encoding', 'authorization', 'proxy-authorization', 'cache-control', 'pragma', 'connection', 'content-length',
  'content-type', 'content-encoding', 'content-language', 'cookie', 'date', 'dnt', 'early-data', 'expect', 'forwarded',
  'from', 'host', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-range', 'max-forwards',
  'origin', 'priority', 'purpose', 'range', 'referer', 'save-data', 'te', 'trailer', 'upgrade', 'upgrade-insecure-requests',
  'via', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-real-ip', 'x-request-id',
  'x-requested-with', 'traceparent', 'tracestate', 'baggage', 'device-memory', 'dpr', 'width', 'viewport-width', 'rtt',
  'downlink', 'ect', 'service-worker', 'service-worker-navigation-preload', 'alt-used', 'available-dictionary', 'cdn-loop',
  'x-amzn-trace-id',
  // What Cloudflare adds: these names only (a prefix let a client's `CF-This-Site-Was-Defaced…`
  // through: review).
  'cf-connecting-ip', 'cf-connecting-ipv6', 'cf-pseudo-ipv4', 'cf-ipcountry', 'cf-ipcity', 'cf-ipcontinent', 'cf-iplatitude',
  'cf-iplongitude', 'cf-region', 'cf-region-code', 'cf-metro-code', 'cf-postal-code', 'cf-timezone', 'cf-ray', 'cf-visitor',
  'cf-worker', 'cf-ew-via', 'cf-device-type', 'true-client-ip',
]);

/**
 * A header's name is a text of the client's choosing too: an origin that lists the headers it
 * got (`print_r(getallheaders())`, a debug page, a JSON of them) printed a client's
 * `X-This-Site-Was-Defaced-Visit-Evil-Example-Com: 1` for everyone (attacker trial; its value
 * was too short to be looked for). So a name outside the standard vocabulary (and not `sec-`)
 * is looked for like a value, whatever its value, and as a CGI variable spells it
 * (`x_this_site...`, in PHP's `$_SERVER` as `HTTP_X_THIS_SITE...`).
 */
function nameTextsOf(name: string): string[] {
  if (STANDARD_FIELD_NAMES.has(name) || name.startsWith('sec-') || name.length < MIN_REFLECTED_LENGTH) return [];
  return name.includes('-') ? [name, name.replace(/-/g, '_')] : [name];
}

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
  const plain = entryOf(PLAIN_SHAPE, name);
  const texts = new Set<string>();
  if (name === 'user-agent') {
    // Its `;` parts (`x64`, `Win64`) are in many pages by chance; an origin that echoes a
    // User-Agent echoes it whole (one that carries markup counts as repeated: reflectedInputs).
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
      if (!plain.member.test(b) || !params.every((p) => plain.parameter.test(p.trim()))) {
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
      if (n !== undefined) return entryOf(NAMED_ENTITIES, n.toLowerCase()) ?? m;
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
function decodeBody(body: Buffer, contentEncoding: string | string[] | undefined, maxBytes: number): Promise<Buffer | undefined> {
  const codings = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : (contentEncoding ?? ''))
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length === 0) return Promise.resolve(body);
  // A fill's body is searched twice (repeatsAddress, then reflectedInputs): decoded once.
  const coding = codings.join(',');
  const memo = decodedBodies.get(body);
  if (memo !== undefined && memo.coding === coding && memo.maxBytes === maxBytes) return memo.out;
  const out = decodeCodings(body, codings, maxBytes);
  decodedBodies.set(body, { coding, maxBytes, out });
  return out;
}

/** Decoded bodies by the received buffer (held no longer than it is). */
const decodedBodies = new WeakMap<Buffer, { coding: string; maxBytes: number; out: Promise<Buffer | undefined> }>();

async function decodeCodings(body: Buffer, codings: string[], maxBytes: number): Promise<Buffer | undefined> {
  let out = body;
  try {
    for (const coding of codings.reverse()) {
      const decoder = entryOf(DECODERS, coding);
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
