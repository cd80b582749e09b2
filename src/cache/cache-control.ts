/**
 * Header parsing for the cache: Cache-Control (and its targeted siblings, RFC 9213), HTTP-date,
 * and Age. Owns syntax only: what a directive says, never what the cache does about it
 * (policy.ts decides). Pure: no I/O, no clock (a reference time is passed in where the RFC needs one).
 *
 * Choices the RFC leaves open, made conservatively:
 * - A delta-seconds directive repeated with different values, or with a value that is not a
 *   non-negative integer (`max-age=abc`, `max-age=-1`, bare `max-age`), reads as 0: "treat as
 *   stale" (RFC 9111 §4.2.1 "either the first occurrence should be used or the response should be
 *   considered stale"; "Caches are encouraged to consider responses that have invalid freshness
 *   information ... to be stale").
 * - A field-name directive (`no-cache`, `private`) that appears both bare and qualified, or with
 *   an empty list, reads as bare: the unqualified form is the more restrictive one (§4.2.1 "the
 *   most restrictive directive should be honored").
 */

/** Node's IncomingHttpHeaders shape: lowercase names, repeated fields as arrays. */
export type HeaderMap = Record<string, string | string[] | undefined>;
export type HeaderValue = string | string[] | undefined;

/** RFC 9111 §1.2.2: delta-seconds larger than this are taken as this (2^31). */
export const DELTA_SECONDS_MAX = 2 ** 31;

/**
 * A field's value by a name a client, an origin or the config chose (a Vary member, a key
 * template's header): the object's own property only. A plain object answers `constructor`
 * (and `toString`, `__proto__`...) from Object.prototype, and Node's request headers are plain
 * objects: an origin's `Vary: constructor` made every fill throw (attacker trial).
 */
export function fieldOf(headers: Readonly<HeaderMap>, name: string): HeaderValue {
  return Object.hasOwn(headers, name) ? headers[name] : undefined;
}

/** All field lines of a header joined as one list value (RFC 9110 §5.3), or undefined. */
export function joinHeader(value: HeaderValue): string | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value)) return value.length === 0 ? undefined : value.join(', ');
  return value;
}

/** A header's value by lowercase name, all field lines joined. */
export function headerValue(headers: HeaderMap, name: string): string | undefined {
  return joinHeader(fieldOf(headers, name.toLowerCase()));
}

/** Whether a header field is present at all (even with an empty value). */
export function hasHeader(headers: HeaderMap, name: string): boolean {
  const v = fieldOf(headers, name.toLowerCase());
  return v !== undefined && !(Array.isArray(v) && v.length === 0);
}

const TCHAR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]$/;
const DELTA_SECONDS = /^\d+$/;

function isTchar(c: string | undefined): boolean {
  return c !== undefined && TCHAR.test(c);
}

/** Parse a delta-seconds string (RFC 9111 §1.2.2); undefined when it is not one. */
export function parseDeltaSeconds(text: string | undefined): number | undefined {
  if (text === undefined || !DELTA_SECONDS.test(text)) return undefined;
  const n = Number(text);
  return n > DELTA_SECONDS_MAX ? DELTA_SECONDS_MAX : n; // §1.2.2 overflow -> 2^31
}

/**
 * Parsed Cache-Control (or CDN-Cache-Control / targeted) directives.
 * Names are lowercase; values have quotes and backslash escapes removed.
 */
export class CacheControl {
  /** name -> value of each occurrence, in order (undefined = directive without `=`). */
  private readonly directives: ReadonlyMap<string, readonly (string | undefined)[]>;
  /** Some part of the value could not be parsed (RFC 9213 §2.1: such a targeted field is ignored). */
  readonly malformed: boolean;

  constructor(directives: ReadonlyMap<string, readonly (string | undefined)[]>, malformed: boolean) {
    this.directives = directives;
    this.malformed = malformed;
  }

  /** Directive names present, lowercase, in first-seen order. */
  get names(): string[] {
    return [...this.directives.keys()];
  }

  /** No directive at all. */
  get isEmpty(): boolean {
    return this.directives.size === 0;
  }

  has(name: string): boolean {
    return this.directives.has(name.toLowerCase());
  }

  /** The first occurrence's value (undefined when absent or given without `=`). */
  value(name: string): string | undefined {
    return this.directives.get(name.toLowerCase())?.[0];
  }

  /** Whether every occurrence of the directive was given without a value (e.g. bare `max-stale`). */
  isBare(name: string): boolean {
    const occ = this.directives.get(name.toLowerCase());
    return occ !== undefined && occ.every((v) => v === undefined);
  }

  /**
   * A delta-seconds directive in seconds. undefined when absent; 0 when invalid (not a
   * non-negative integer, or bare) or repeated with different values — both mean "stale"
   * (RFC 9111 §4.2.1, §1.2.2). Values above 2^31 are capped (§1.2.2).
   */
  deltaSeconds(name: string): number | undefined {
    const occ = this.directives.get(name.toLowerCase());
    if (occ === undefined) return undefined;
    if (this.isInvalid(name)) return 0;
    return parseDeltaSeconds(occ[0]);
  }

  /** Present but not one agreeing, valid delta-seconds value (see deltaSeconds). */
  isInvalid(name: string): boolean {
    const occ = this.directives.get(name.toLowerCase());
    if (occ === undefined) return false;
    const parsed = occ.map(parseDeltaSeconds);
    if (parsed.some((v) => v === undefined)) return true;
    return new Set(parsed).size > 1; // duplicates that disagree: §4.2.1 "considered stale"
  }

  /**
   * The field names of `no-cache="a, b"` / `private="x"`, lowercase and deduplicated.
   * undefined when absent; [] when the directive is unqualified anywhere (or its list is empty),
   * which is the more restrictive reading (§4.2.1).
   */
  fieldNames(name: string): string[] | undefined {
    const occ = this.directives.get(name.toLowerCase());
    if (occ === undefined) return undefined;
    const names = new Set<string>();
    for (const v of occ) {
      if (v === undefined) return [];
      const list = v
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter((s) => s.length > 0);
      if (list.length === 0) return [];
      for (const n of list) names.add(n);
    }
    return [...names];
  }
}

/** The parse of an absent field; CacheControl is read-only, so one instance serves every caller. */
const NO_DIRECTIVES = new CacheControl(new Map(), false);

/**
 * Directives that only ever keep an answer out of a shared cache or send it to the origin
 * again. Not must-revalidate, proxy-revalidate or public: each lets a response to a request
 * with Authorization be stored (RFC 9111 §3.5; review).
 */
const RESTRICTIVE: ReadonlySet<string> = new Set(['no-store', 'private', 'no-cache']);

/**
 * Parse a Cache-Control style field value (RFC 9111 §5.2): a comma list of
 * `token [ "=" ( token / quoted-string ) ]`. Directive names are case-insensitive (§5.2);
 * `max-age="5"` is accepted (§5.2 "recipients ... SHOULD accept both forms").
 * Unparseable members are skipped and flagged in `malformed`; the restrictive words one holds
 * (`no-store`, `private`, `no-cache`) are kept as bare directives.
 */
export function parseCacheControl(value: HeaderValue): CacheControl {
  if (value === undefined) return NO_DIRECTIVES; // most requests: no field at all (hot path)
  const text = joinHeader(value) ?? '';
  const directives = new Map<string, (string | undefined)[]>();
  let malformed = false;
  let i = 0;
  const n = text.length;
  const skipOws = () => {
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
  };
  /** Skip to the next top-level comma (outside quotes); used after a syntax error. */
  const skipToComma = () => {
    let quoted = false;
    while (i < n) {
      const c = text[i];
      if (quoted) {
        if (c === '\\') i++;
        else if (c === '"') quoted = false;
      } else if (c === '"') quoted = true;
      else if (c === ',') return;
      i++;
    }
  };

  /**
   * A member that does not parse still says what it forbids: `private; max-age=0`,
   * `private no-store` and `no-store no-cache` name directives that keep an answer out of a
   * shared cache, and dropping them stored a private page for everyone (attacker trial). Its
   * restrictive words are kept as bare directives (nginx looks for the substring, Varnish's
   * built-in VCL for the word); nothing permissive is taken from it (see RESTRICTIVE).
   */
  const keepRestrictive = (member: string) => {
    for (const word of member.toLowerCase().split(/[^a-z-]+/)) {
      if (!RESTRICTIVE.has(word)) continue;
      // Unqualified, even beside a valid `private="set-cookie"`: the stricter reading (§4.2.1).
      const list = directives.get(word);
      if (list === undefined) directives.set(word, [undefined]);
      else if (!list.includes(undefined)) list.push(undefined);
    }
  };

  while (i < n) {
    skipOws();
    if (text[i] === ',') {
      i++;
      continue;
    }
    if (i >= n) break;
    const nameStart = i;
    while (i < n && isTchar(text[i])) i++;
    const name = text.slice(nameStart, i).toLowerCase();
    if (name.length === 0) {
      malformed = true;
      skipToComma();
      keepRestrictive(text.slice(nameStart, i));
      continue;
    }
    skipOws();
    let val: string | undefined;
    let ok = true;
    if (text[i] === '=') {
      i++;
      skipOws();
      if (text[i] === '"') {
        i++;
        let out = '';
        let closed = false;
        while (i < n) {
          const c = text[i]!;
          if (c === '\\' && i + 1 < n) {
            out += text[i + 1];
            i += 2;
          } else if (c === '"') {
            closed = true;
            i++;
            break;
          } else {
            out += c;
            i++;
          }
        }
        if (!closed) ok = false;
        val = out;
      } else {
        const start = i;
        while (i < n && isTchar(text[i])) i++;
        val = text.slice(start, i);
      }
      skipOws();
    }
    if (i < n && text[i] !== ',') {
      ok = false;
      skipToComma();
    }
    if (!ok) {
      malformed = true;
      keepRestrictive(text.slice(nameStart, i));
      continue;
    }
    const list = directives.get(name);
    if (list) list.push(val);
    else directives.set(name, [val]);
  }
  return new CacheControl(directives, malformed);
}

const DAY_SHORT = '(Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const DAY_LONG = '(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)';
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = `(${MONTHS.join('|')})`;
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
/** RFC 9110 §5.6.7 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`. */
const IMF_FIXDATE = new RegExp(`^${DAY_SHORT}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`);
/** RFC 9110 §5.6.7 obsolete rfc850-date: `Sunday, 06-Nov-94 08:49:37 GMT`. */
const RFC850_DATE = new RegExp(`^${DAY_LONG}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`);
/** RFC 9110 §5.6.7 obsolete asctime-date: `Sun Nov  6 08:49:37 1994`. */
const ASCTIME_DATE = new RegExp(`^${DAY_SHORT} ${MONTH} (\\d{2}| \\d) ${TIME} (\\d{4})$`);

function utcMs(year: number, month: string, day: number, h: number, m: number, s: number): number | undefined {
  const mo = MONTHS.indexOf(month);
  if (mo < 0 || day < 1 || day > 31 || h > 23 || m > 59 || s > 60) return undefined;
  const midnight = Date.UTC(year, mo, day);
  const check = new Date(midnight);
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== mo || check.getUTCDate() !== day) return undefined; // 31 Feb
  return midnight + ((h * 60 + m) * 60 + s) * 1000; // s = 60: a leap second, rolls into the next minute
}

/**
 * Parse an HTTP-date (RFC 9110 §5.6.7) to epoch ms: IMF-fixdate, plus the obsolete rfc850 and
 * asctime forms every recipient MUST accept. Case-sensitive, as the RFC says. Anything else,
 * including `0` and `-1`, gives undefined. A repeated field (array) uses its first line.
 *
 * Two-digit rfc850 years: a year that looks more than 50 years after `referenceAt` is taken as
 * the most recent past year with those digits (§5.6.7). Without a reference, 70–99 -> 19xx and
 * 00–69 -> 20xx.
 */
export function parseHttpDate(value: HeaderValue, referenceAt?: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return undefined;
  const s = raw.trim();
  let m = IMF_FIXDATE.exec(s);
  if (m) return utcMs(Number(m[4]), m[3]!, Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7]));
  m = RFC850_DATE.exec(s);
  if (m) {
    const yy = Number(m[4]);
    let year: number;
    if (referenceAt !== undefined && Number.isFinite(referenceAt)) {
      const refYear = new Date(referenceAt).getUTCFullYear();
      year = Math.floor(refYear / 100) * 100 + yy;
      if (year > refYear + 50) year -= 100;
    } else {
      year = yy >= 70 ? 1900 + yy : 2000 + yy;
    }
    return utcMs(year, m[3]!, Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7]));
  }
  m = ASCTIME_DATE.exec(s);
  if (m) return utcMs(Number(m[7]), m[2]!, Number(m[3]!.trim()), Number(m[4]), Number(m[5]), Number(m[6]));
  return undefined;
}

/** An IMF-fixdate whose zone is UTC spelt otherwise (`+0000`, `UTC`, `UT`, `Z`). */
const IMF_OTHER_UTC = new RegExp(`^${DAY_SHORT}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} (?:\\+0000|-0000|\\+00:00|UTC|UT|Z)$`);

/**
 * parseHttpDate, and an IMF-fixdate whose zone is UTC under another name: for `Last-Modified`
 * and `If-Modified-Since`, whose definitions do not restrict parsing (RFC 9110 §5.6.7: be
 * robust; `Expires` and `Date` keep the strict reading, and an `Expires` in `UTC` is
 * expired, as the conformance suite requires). gitweb writes `Last-modified: Mon, 07 Dec 2026
 * 10:00:00 +0000`: read strictly, a feed reader's conditional request was answered the whole
 * feed each time, and the copy was never revalidated with it (new-user trial).
 */
export function parseLastModified(value: HeaderValue, referenceAt?: number): number | undefined {
  const strict = parseHttpDate(value, referenceAt);
  if (strict !== undefined) return strict;
  const raw = Array.isArray(value) ? value[0] : value;
  const m = raw === undefined ? null : IMF_OTHER_UTC.exec(raw.trim());
  return m ? utcMs(Number(m[4]), m[3]!, Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7])) : undefined;
}

/** Format epoch ms as an IMF-fixdate (RFC 9110 §5.6.7). */
export function formatHttpDate(at: number): string {
  return new Date(at).toUTCString();
}

/**
 * Parse Age (RFC 9111 §5.1) to seconds. A list value uses its first member, as does a repeated
 * field; a value that is then not a non-negative integer is ignored (undefined). Capped at 2^31.
 */
export function parseAge(value: HeaderValue): number | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  if (first === undefined) return undefined;
  const member = first.split(',')[0]!.trim(); // §5.1 "SHOULD use the first member"
  return parseDeltaSeconds(member);
}
