/**
 * What a shared cache fill sends the origin (the key's view of the client's headers), and
 * what an origin answer keeps on its way to the client (hop-by-hop and our targeted field
 * stripped, Via added).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { CacheEntry } from '../cache/entry.js';
import { isIdentityHeaderName } from '../cache/identity-headers.js';
import { acceptEncodingVariant, normaliseHost, normaliseVaryValue, parseCookies } from '../cache/cache-key.js';
import type { PolicyOptions } from '../cache/policy.js';
import type { UnkeyedInput } from '../cache/reflection.js';
import { FILL_ALWAYS, HOP_BY_HOP, connectionListedNames } from '../http/facts.js';
import type { SiteRuntime } from '../runtime.js';
import { CLIENT_CONDITIONALS, NEVER_FORWARDED_FIELDS, VIA_VALUE, appendVia, compileGlobs, isPlainFieldName, setForwardedHeaders, stripHopByHop } from './headers.js';
import { hostOf, schemeOf, type Ctx, type Lookup } from './context.js';
import { vouchedForwardedFor } from './client-address.js';
import { nextRequestId } from './request-id.js';

/**
 * Request headers a cache fill passes on from the client: a fill is shared by everyone who asks
 * for the key, so what the origin sees must be covered by the key. Never the hop-by-hop ones,
 * the client's conditionals, Range, Cache-Control, Pragma, Expect or Content-Length (the cache
 * makes its own), `Proxy` (httpoxy: never sent anywhere, headers.ts), cookies (only the key template's), nor the site's `fillHeaders.drop`
 * (X-Original-URL, X-HTTP-Method-Override, Forwarded and the like: they rewrite what an origin
 * framework acts on). With `fillHeaders.only` set, nothing beyond those listed, Host, Accept*,
 * User-Agent, the key template's headers and the names a stored Vary of the key lists.
 */
const FILL_NEVER: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  ...CLIENT_CONDITIONALS,
  ...NEVER_FORWARDED_FIELDS,
  'cookie',
  'cache-control',
  'pragma',
  'expect',
  'content-length',
  'content-type',
  'x-request-id',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'via',
]);

/**
 * The client's headers as a fill sends them, and so as Vary sees them (RFC 9111 §4.1 compares
 * the headers of the request that was sent): see FILL_ALWAYS (http/facts.ts) and FILL_NEVER above.
 */
export function makeFillVisibleHeaders(site: SiteRuntime, headers: IncomingHttpHeaders, policy: PolicyOptions, variants: readonly CacheEntry[]): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  const listed = connectionListedNames(headers.connection);
  for (const name in headers) {
    if (FILL_NEVER.has(name)) continue;
    const keyed = isKeyedFillHeader(name, policy, variants);
    // A name the client's Connection lists is its hop's, except one the key or a stored Vary
    // covers: the key was made with it, so the fill must send it (`Connection: x-device` sent
    // a fill without X-Device, and the default page was stored under the mobile key).
    if (!keyed && listed.includes(name)) continue;
    // A name with an underscore never passes on its own (nginx drops them by default): PHP and
    // other CGI-style frameworks read `X_Forwarded_Host` as X-Forwarded-Host, which the
    // gateway sets itself. Nor does what a browser sends about the fetch itself (Referer,
    // Sec-Fetch-*, client hints, X-Requested-With: an Android WebView names its app there on
    // every request), unless the key or a stored Vary covers it: sent, it would be an input
    // the key does not hold, reflected into a page everyone then gets.
    if (keyed || (site.isFillHeader(name) && isPlainFieldName(name) && !isFetchContextHeader(name))) out[name] = headers[name] as string;
  }
  // The codings of the variant key's value for this client (`br, gzip`, `br`, `gzip` or
  // `identity`), not its own list: the variant is shared by every client with that value, and
  // an origin that compresses itself answered `deflate` or `zstd` to one client's list under a
  // bucket whose clients never asked for it.
  out['accept-encoding'] = acceptEncodingVariant(headers['accept-encoding']);
  // Accept, Accept-Language and Accept-Charset as the variant key holds them (lower case,
  // ordered by weight): an origin that reads the first two letters (PHP's common
  // `substr($_SERVER['HTTP_ACCEPT_LANGUAGE'], 0, 2)`) answered `de;q=0.8,en-US,en;q=0.9` in
  // German, stored for everyone whose value is the same list in another order.
  for (const name of ['accept', 'accept-language', 'accept-charset'] as const) {
    const value = out[name];
    if (value !== undefined) out[name] = normaliseVaryValue(name, Array.isArray(value) ? value.join(', ') : value);
  }
  const cookie = keptCookies(headers.cookie, policy);
  if (cookie !== undefined) out.cookie = cookie;
  return out;
}

/**
 * The request headers a fill sent that the key of the copy being stored does not cover: not
 * the key template's, not in `vary` (the answer's own Vary). What the origin saw but the key
 * does not hold, looked for in its answer (cache/reflection.ts). User-Agent and Accept* count:
 * they are sent on every fill, and a page that repeats them is no more shareable. A header
 * another stored variant varies on counts too (it is sent, but this answer's Vary decides this
 * copy's variant). Not Host (keyed), Accept-Encoding (the variant bucket's own value) or Cookie
 * (only the key template's cookies are sent).
 */
export function unkeyedFillInputs(variantHeaders: IncomingHttpHeaders, policy: PolicyOptions, vary: readonly string[]): UnkeyedInput[] {
  const out: UnkeyedInput[] = [];
  for (const [name, value] of Object.entries(variantHeaders)) {
    if (value === undefined || name === 'host' || name === 'accept-encoding' || name === 'cookie') continue;
    if (vary.includes(name) || isKeyTemplateHeader(name, policy)) continue;
    out.push([name, Array.isArray(value) ? value.join(', ') : value]);
  }
  return out;
}

/**
 * The unkeyed inputs of unkeyedFillInputs whose names say who is asking (`X-User-Token`,
 * `X-Tenant`, `X-Customer-Id`, `X-Session-Key`...; not what every browser sends, nor a CDN's
 * or tracer's per-request id such as `CF-Ray` or `traceparent`): an answer without cache
 * headers may depend on them without saying so.
 */
export function identityFillInputs(variantHeaders: IncomingHttpHeaders, policy: PolicyOptions, vary: readonly string[]): string[] {
  return uncoveredFillInputs(variantHeaders, policy, vary).filter(isIdentityHeaderName);
}

/**
 * The unkeyed inputs of unkeyedFillInputs but the ones every fill sends (Accept*, User-Agent):
 * the headers of this request that an answer varying on `vary` would be shared across.
 */
export function uncoveredFillInputs(variantHeaders: IncomingHttpHeaders, policy: PolicyOptions, vary: readonly string[]): string[] {
  return unkeyedFillInputs(variantHeaders, policy, vary)
    .map(([name]) => name)
    .filter((name) => !FILL_ALWAYS.has(name));
}

/**
 * The header names naming who asks that other stored variants of the key vary on: a copy made
 * without such a header varies on it too (on its absence), or it would match the requests of
 * the users whose own copies are stored beside it, and the newest copy wins (Alice, her token's
 * copy stored, got the guest copy stored after it).
 */
export function identityNamesVariedOn(variants: readonly CacheEntry[]): string[] {
  const out = new Set<string>();
  for (const v of variants) for (const name of v.vary) if (!FILL_ALWAYS.has(name) && isIdentityHeaderName(name)) out.add(name);
  return [...out];
}

/** A header the fill always sends, the key template names, or a stored variant of the key varies on. */
function isKeyedFillHeader(name: string, policy: PolicyOptions, variants: readonly CacheEntry[]): boolean {
  return FILL_ALWAYS.has(name) || isKeyTemplateHeader(name, policy) || variants.some((v) => v.vary.includes(name));
}

/** A header the route's key template names (`name` lowercase). */
function isKeyTemplateHeader(name: string, policy: PolicyOptions): boolean {
  return policy.route.key.headers.some((h) => h.toLowerCase() === name);
}

/** What a browser says about the fetch itself, not about what it wants (see makeFillVisibleHeaders). */
const FETCH_CONTEXT: ReadonlySet<string> = new Set([
  'referer',
  'upgrade-insecure-requests',
  'dnt',
  'priority',
  'purpose',
  'x-requested-with',
  'save-data',
  'dpr',
  'width',
  'viewport-width',
  'device-memory',
  'rtt',
  'downlink',
  'ect',
  'x-purpose',
  'x-moz',
]);
function isFetchContextHeader(name: string): boolean {
  return FETCH_CONTEXT.has(name) || name.startsWith('sec-');
}

/**
 * True when the request carries a cookie a fill does not send (one the key template does not
 * name): a stored answer that varies on Cookie was made for the cookies its fill sent, so it is
 * not this request's (RFC 9111 §4.1), and the request goes to the origin as it came (a pass).
 * Without this, a client with `Cookie: jwt=...` got the anonymous copy of a `Vary: Cookie` page.
 * Not a session cookie on a route with `ignoreSessionCookies`, against a stored copy
 * (`storedCopy`): the operator said its files never depend on the session, and its fills never
 * send one. DokuWiki's styles and scripts say
 * `Vary: Cookie`, and every visitor has its session cookie from the first page on: each of their
 * requests went to the origin, and in a crowd got 503 beside a fresh copy (new-user trial).
 */
export function carriesOwnCookies(header: string | string[] | undefined, policy: PolicyOptions, storedCopy = false): boolean {
  if (!header) return false;
  const keyed = policy.route.key.cookies;
  const ignored = ignoredCookiesOf(policy.route.key.ignoreCookies);
  // Only against a copy stored for everyone: an answer that cannot be shared (private, a
  // Set-Cookie) was made for the fill's request alone, and its Set-Cookie would log the
  // session holder out (review); such a request still goes to the origin as it came.
  const session = storedCopy ? (policy.isIgnoredSessionCookie ?? NONE) : NONE;
  for (const name of parseCookies(header).keys()) if (!keyed.includes(name) && !isAnalyticsCookie(name) && !ignored(name) && !session(name)) return true;
  return false;
}

/**
 * A cookie named like a session cookie (a bypassCookies pattern matches it) that is none: an
 * analytics script's (Hotjar's `_hj*`: `_hjSession_<id>` and `_hjSessionUser_<id>` on every
 * visitor; Adobe's `s_sess`; MediaWiki's `<wiki>mwuser-sessionId`, set by its own scripts for
 * their logging). Not a reason to bypass.
 */
export const isSessionLookalike = compileGlobs(['_hj*', 's_sess', '*mwuser-sessionId']);

/** The route's `key.ignoreCookies`, compiled once per config list. */
const ignoredMatchers = new WeakMap<readonly string[], (name: string) => boolean>();
function ignoredCookiesOf(patterns: readonly string[] | undefined): (name: string) => boolean {
  if (patterns === undefined || patterns.length === 0) return NONE;
  let match = ignoredMatchers.get(patterns);
  if (match === undefined) ignoredMatchers.set(patterns, (match = compileGlobs(patterns)));
  return match;
}
const NONE = (): boolean => false;

/**
 * Cookies that analytics and consent scripts set and only they read (Google Analytics and Ads,
 * Facebook, Hotjar, Matomo, HubSpot, Clarity, Bing, Yandex, Mixpanel, Segment, Cloudflare's
 * bot cookies, consent banners (Cookiebot, OneTrust, IAB TCF, Drupal's EU Cookie Compliance,
 * WordPress's CookieYes, Complianz, Borlabs, Cookie Notice, GDPR Cookie Compliance, Didomi),
 * Drupal 7's has_js): not a reason to pass a request whose page
 * varies on Cookie. Every visitor of a Drupal site (`Vary: Cookie` on anonymous pages) carries
 * `_ga` from the second request on, and a crowd's would all reach the origin.
 */
const isAnalyticsCookie = compileGlobs([
  '_ga',
  '_ga_*',
  '_gid',
  '_gat*',
  '_gcl_*',
  '_dc_gtm_*',
  '__utm*',
  '_fbp',
  '_fbc',
  '_hj*',
  '_pk_*',
  '_clck',
  '_clsk',
  '_uetsid',
  '_uetvid',
  '_ym_*',
  '__hstc',
  '__hssc',
  '__hssrc',
  'hubspotutk',
  'mp_*',
  'ajs_*',
  '__cf_bm',
  'cf_clearance',
  'cookieconsent_status',
  'CookieConsent',
  'OptanonConsent',
  'OptanonAlertBoxClosed',
  'euconsent-v2',
  'addtl_consent',
  'cookie-agreed',
  'cookie-agreed-*',
  'cookielawinfo-*',
  'viewed_cookie_policy',
  'cookieyes-consent',
  'cmplz_*',
  'borlabs-cookie',
  'cookie_notice_accepted',
  'moove_gdpr_popup',
  'didomi_token',
  'has_js',
  // WordPress's own that no front-end page reads: the login form's cookie check, and the
  // admin's UI settings (kept after a logout).
  'wordpress_test_cookie',
  'wp-settings-*',
  // Adobe Analytics' session; MediaWiki's scripts' own, for their logging (mw.user.sessionId).
  's_sess',
  '*mwuser-sessionId',
]);

/** Cookies a fill may send: only those the key template varies on (they are part of the key). */
function keptCookies(header: string | string[] | undefined, policy: PolicyOptions): string | undefined {
  if (!header || policy.route.key.cookies.length === 0) return undefined;
  const keep = new Set(policy.route.key.cookies);
  const cookies = [...parseCookies(header)].filter(([name]) => keep.has(name));
  return cookies.length > 0 ? cookies.map(([n, v]) => `${n}=${v}`).join('; ') : undefined;
}

/** Request headers for a cache fill: shared with every waiter, so nothing user-specific. */
export function makeFillHeaders(ctx: Ctx, lookup: Lookup): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(lookup.variantHeaders)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  setForwardedHeaders(out, ctx.req.headers, {
    peerAddress: ctx.peerAddress,
    peerTrusted: ctx.peerTrusted,
    scheme: ctx.scheme,
  });
  // Via: the gateway's own hop only. A client's Via is its own text, and so is one a trusted
  // proxy passed on (nginx adds none and forwards the client's), which a fill would carry into
  // a page everyone gets. (CDN-Loop is set with the path sent, once a member is chosen: fill.ts,
  // http/loop.ts fillLoopValue; a client's field is not passed on but for crowdgate members.)
  out['via'] = VIA_VALUE;
  // X-Forwarded-For: the client and the trusted hops after it, never what the client wrote
  // before its own address (the key cannot hold it; an origin printing the first entry would
  // print it for everyone).
  out['x-forwarded-for'] = vouchedForwardedFor(ctx.deps.trustedProxies(), ctx.peerAddress, ctx.req.headers['x-forwarded-for']);
  // The scheme, Host and X-Forwarded-Host as the key holds them, not as this client typed
  // them: `BLOG.example.com.:80` is the same entry as `blog.example.com`, and an origin
  // building its links from the Host would put the typed form in a page everyone then gets
  // (a trailing dot is another origin to a browser: its cookies are not sent). Behind a
  // trusted proxy the key's host is its X-Forwarded-Host: the Host the client sent beside
  // it would reach the origin unkeyed; the key's scheme is http or https, and so is what is sent.
  const scheme = schemeOf(ctx).toLowerCase() === 'https' ? 'https' : 'http';
  out['x-forwarded-proto'] = scheme;
  const keyHost = hostOf(ctx);
  if (keyHost !== undefined) {
    out.host = normaliseHost(keyHost, scheme);
    out['x-forwarded-host'] = out.host;
  } else if (out.host !== undefined) out.host = normaliseHost(out.host, scheme);
  // The gateway's own request id, never one the client chose: an origin that prints it (a
  // footer, a debug comment) would print the leader's text into the page everyone gets.
  out['x-request-id'] = ctx.req.headers['x-request-id'] === ctx.requestId ? (ctx.originRequestId ??= nextRequestId()) : ctx.requestId;
  return out;
}

/** The client's fields a recheck still sends (plainFillHeaders): what it asks for, not who it is. */
const RECHECK_KEPT: ReadonlySet<string> = new Set(['accept', 'accept-language', 'accept-charset']);

/** The User-Agent of a fill asked again without the client's headers (plainFillHeaders). */
export const RECHECK_USER_AGENT = 'crowdgate-recheck';

/**
 * A fill's headers made the gateway's own question, in place: none of the client's but its
 * Accept, Accept-Language and Accept-Charset (as every browser sends them, in the variant key's
 * form), those the key holds (Host, the Accept-Encoding bucket, the key template's headers and
 * cookies) and those the stored copy `stored` varies on; no X-Forwarded-For (the origin sees
 * the gateway ask, as a probe does), and `User-Agent: crowdgate-recheck` unless the copy varies
 * on it. Asked so when a 404 or 410 would take a stored page away from everyone (fill.ts): a
 * WAF answering one client's `User-Agent: sqlmap` with 404 took a popular page's stale copy
 * with it. Its answer may become the fill's, so it asks for the format the client did.
 */
export function plainFillHeaders(headers: Record<string, string>, variantHeaders: IncomingHttpHeaders, policy: PolicyOptions, stored: CacheEntry): void {
  for (const name of Object.keys(variantHeaders)) {
    if (name === 'host' || name === 'accept-encoding' || name === 'cookie' || RECHECK_KEPT.has(name)) continue;
    if (isKeyTemplateHeader(name, policy) || stored.vary.includes(name)) continue;
    delete headers[name];
  }
  delete headers['x-forwarded-for'];
  if (!stored.vary.includes('user-agent')) headers['user-agent'] = RECHECK_USER_AGENT;
}

export function joinPath(base: URL, target: string): string {
  let pathAndQuery = target;
  if (!target.startsWith('/')) {
    try {
      const u = new URL(target);
      pathAndQuery = u.pathname + u.search;
    } catch {
      pathAndQuery = '/';
    }
  }
  const prefix = base.pathname.endsWith('/') ? base.pathname.slice(0, -1) : base.pathname;
  return prefix + pathAndQuery;
}

/** Headers of a non-stored origin response as sent to the client. */
export function clientHeaders(headers: Record<string, string | string[]>, policy: PolicyOptions): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) out[name] = value;
  stripHopByHop(out as Record<string, unknown>);
  stripTargeted(out, policy.targetedHeader);
  out['via'] = appendVia(out['via']);
  return out;
}

/**
 * RFC 9213: our own targeted field is for us and is not passed on; CDN-Cache-Control targets
 * every CDN, so one in front of us gets it too (as the stored copy keeps it).
 */
export function stripTargeted(headers: OutgoingHttpHeaders, targeted: string): void {
  const own = targeted.toLowerCase();
  if (own !== 'cdn-cache-control') delete headers[own];
}
