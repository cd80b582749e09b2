/**
 * Reading a fill's `Accept` the way the origin's negotiator will, for an origin that picks a
 * format from it without saying `Vary: Accept` (Express's `req.accepts` and `res.format`, Koa's
 * `ctx.accepts`, Rails' `respond_to`, Django REST Framework: all negotiators of this kind). Which
 * answers stay shared for everyone (fill.ts: the implied `Vary: Accept`), and which 304s may be
 * merged into a copy made for another Accept.
 *
 * The Accept here is as a fill sends it: lower case, members ordered by weight
 * (cache-key.ts normaliseVaryValue). A member's weight is read as RFC 9110 §12.4.2 spells a
 * qvalue (0 to 1, at most three decimals); a member whose `q` is anything else makes the whole
 * Accept one the gateway cannot read as the origin will (negotiator's parseFloat takes
 * `q=1e-9` for almost nothing, `q=1e1` for ten, `q=-1` for never; the gateway's reading put
 * `text/html` first, and one request stored the plain-text or XML version of a page for every
 * browser: attacker trial).
 */

/** One member of an Accept: its media range (`type/subtype`), whether it has parameters other than q, and its weight. */
interface AcceptMember {
  readonly range: string;
  readonly params: boolean;
  /** The weight, NaN when its `q` is not an RFC 9110 qvalue. */
  readonly q: number;
}

/** RFC 9110 §12.4.2 qvalue. */
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/**
 * Media types whose mere mention in Accept a device detector takes for a phone (Mobile_Detect,
 * in many WordPress themes and plugins: Opera Mini's OBML, BlackBerry's, WAP's): an Accept of
 * `text/html, text/vnd.wap.wml` got the mobile template, stored for everyone (attacker trial).
 */
const DEVICE_MEDIA_TYPES = ['application/x-obml2d', 'application/vnd.rim.html', 'text/vnd.wap.wml', 'application/vnd.wap.xhtml+xml'];

/** An Accept as one lower-case text (several field lines joined). */
function acceptText(accept: string | string[] | undefined): string {
  return (Array.isArray(accept) ? accept.join(',') : (accept ?? '')).trim().toLowerCase();
}

/** The members of an Accept text (acceptText), in its order; empty ones dropped. */
function membersOf(value: string): AcceptMember[] {
  const out: AcceptMember[] = [];
  for (const raw of value.split(',')) {
    const parts = raw.split(';').map((p) => p.trim());
    const range = parts[0]!;
    if (range === '') continue;
    let q = 1;
    let params = false;
    for (const p of parts.slice(1)) {
      if (p === '') continue;
      const eq = p.indexOf('=');
      if (eq > 0 && p.slice(0, eq).trim() === 'q') q = QVALUE.test(p.slice(eq + 1).trim()) ? Number(p.slice(eq + 1)) : NaN;
      else params = true;
    }
    out.push({ range, params, q });
  }
  return out;
}

/** Every member's weight is a qvalue (a member with an unreadable `q` makes it false). */
function readable(members: readonly AcceptMember[]): boolean {
  return members.every((m) => !Number.isNaN(m.q));
}

/** Names JSON or a device detector's type anywhere (a negotiator may pick it over text/html among equals). */
function namesDataOrDevice(value: string): boolean {
  return value.includes('json') || DEVICE_MEDIA_TYPES.some((t) => value.includes(t));
}

/**
 * Whether an Accept puts first something other than a page: not absent, not the any-type
 * wildcard alone, not `text/html` first (without parameters) with no JSON anywhere, but
 * `application/json` (axios, fetch calls), `image/avif,…` (an <img>), `text/css,…`,
 * `text/html;level=1, text/plain` (a negotiator does not match `text/html;level=1` to the
 * `text/html` it offers), or any Accept whose weights are not qvalues.
 */
export function asksForOtherThanAPage(accept: string | string[] | undefined): boolean {
  const value = acceptText(accept);
  if (value === '' || value === '*/*') return false;
  const members = membersOf(value);
  if (!readable(members)) return true;
  const first = members[0];
  return first === undefined || first.range !== 'text/html' || first.params || namesDataOrDevice(value);
}

/**
 * Whether an Accept is a browser's navigation exactly: `text/html` first, with no parameter
 * but its weight, every weight a qvalue, and no JSON (nor a device detector's type) anywhere in
 * it. Not the any-type wildcard alone or no Accept (curl, an uptime monitor's HEAD, fetch() by
 * default), nor `text/html;level=1` followed by the wildcard, which Express's negotiator does
 * not match to `text/html` (its parameters differ) and answers with the wildcard's first
 * format, JSON (review).
 */
export function isNavigation(accept: string | string[] | undefined): boolean {
  const value = acceptText(accept);
  const members = membersOf(value);
  const first = members[0];
  return first !== undefined && first.range === 'text/html' && !first.params && readable(members) && !namesDataOrDevice(value);
}

/**
 * Whether an answer is a data format a negotiating origin gives a client that does not ask for
 * a page by name: a `Content-Type` of JSON or XML (not XHTML, not an image such as SVG). To a
 * fill whose Accept is not a browser's navigation (isNavigation), such an answer is stored as
 * that Accept's variant (fill.ts): an origin that picks the format from Accept without Vary
 * (Express's `res.format`, Django REST Framework) gives the any-type wildcard its JSON, and a
 * monitor's `curl -I` on the home page stored the JSON for every browser for its lifetime
 * (attacker trial). Not scripts, styles, images or plain text, which a browser asks for with
 * that wildcard too: their answers stay shared, with no Vary added.
 */
export function isDataFormat(headers: Readonly<Record<string, string | string[] | undefined>>): boolean {
  const type = mediaTypeOf(headers);
  return (type.includes('json') || type.includes('xml')) && type !== 'application/xhtml+xml' && !type.startsWith('image/');
}

/** An answer's media type (`type/subtype`, lower case, no parameters); '' without one. */
function mediaTypeOf(headers: Readonly<Record<string, string | string[] | undefined>>): string {
  const raw = headers['content-type'];
  return ((Array.isArray(raw) ? raw[0] : raw) ?? '').split(';')[0]!.trim().toLowerCase();
}

/**
 * Media types an origin serves whatever the Accept (a browser asks for an image, a style or a
 * script with an Accept that names other types first): not held to speaksForStored.
 */
const NOT_NEGOTIATED = /^(?:image|audio|video|font)\/|^text\/(?:css|javascript)$|^application\/(?:javascript|x-javascript|ecmascript|wasm|octet-stream|pdf|zip|gzip|x-gzip)$/;

/**
 * Whether a 304 the origin gave a request with this Accept speaks for a stored copy whose
 * headers are `stored` (a copy that does not vary on Accept). For a page (HTML), the Accept
 * must be a navigation (isNavigation); for any other format an origin may offer beside others
 * (JSON, XML, CSV, plain text...), the Accept must be absent or the wildcard alone, or name
 * the copy's type first, without parameters, every weight a qvalue: a negotiator prefers a
 * named type to the wildcard at the same weight (the wildcard, then text/csv, is CSV). Otherwise the origin
 * may have chosen another format for it, and its 304 carries that format's fields: Express's
 * `res.send` keeps every header set before its freshness check but Content-Type and
 * Content-Length, and a revalidation led by `Accept: text/csv` merged the CSV's
 * `Content-Disposition: attachment` into the home page, which every browser then downloaded
 * (attacker trial). Such a 304 is not merged; the fill asks again unconditionally, and that
 * answer goes by the rules above (fill.ts). Images, fonts, styles, scripts and downloads
 * (NOT_NEGOTIATED) are revalidated by whatever their clients send.
 */
export function speaksForStored(accept: string | string[] | undefined, stored: Readonly<Record<string, string | string[] | undefined>>): boolean {
  const type = mediaTypeOf(stored);
  if (type === '' || NOT_NEGOTIATED.test(type)) return true;
  if (type === 'text/html' || type === 'application/xhtml+xml') return isNavigation(accept);
  const value = acceptText(accept);
  if (value === '' || value === '*/*') return true;
  const members = membersOf(value);
  const first = members[0];
  return first !== undefined && !first.params && readable(members) && first.range === type;
}
