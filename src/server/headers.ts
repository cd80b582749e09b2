/**
 * Header plumbing shared by forwarding, cache fills and responses: hop-by-hop removal
 * (RFC 9110 §7.6.1), X-Forwarded-*, Via (RFC 9110 §7.6.3) and CDN-Loop (RFC 8586), cookie
 * filtering for fills.
 * Owns no policy: what is cacheable lives in cache/policy.ts.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
// One hop-by-hop list for storing and forwarding alike.
import { HOP_BY_HOP, connectionListedNames } from '../http/facts.js';
import { LOOP_FIELD, appendLoopMember } from '../http/loop.js';

/**
 * Removes hop-by-hop headers in place. `keep` lets a caller keep e.g. transfer-encoding on a
 * request whose body framing Node must reproduce.
 */
export function stripHopByHop(headers: Record<string, unknown>, keep: ReadonlySet<string> = EMPTY): void {
  for (const name of connectionListedNames(headers['connection'] as string | string[] | undefined)) {
    if (!keep.has(name)) delete headers[name];
  }
  for (const name of HOP_BY_HOP) if (!keep.has(name)) delete headers[name];
}
const EMPTY: ReadonlySet<string> = new Set();

/** Client conditional and range headers: never sent on a cache fill (the cache needs the full body). */
export const CLIENT_CONDITIONALS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range'];

export const VIA_VALUE = '1.1 crowdgate';

/** The Via value to send on: what was there, then our hop (RFC 9110 §7.6.3). */
export function appendVia(existing: string | string[] | number | undefined): string {
  const prior = Array.isArray(existing) ? existing.join(', ') : existing === undefined ? '' : String(existing);
  return prior ? `${prior}, ${VIA_VALUE}` : VIA_VALUE;
}

export interface ForwardedFacts {
  /** The direct peer address. */
  peerAddress: string;
  /** Whether the direct peer is a trusted proxy (its X-Forwarded-* are kept). */
  peerTrusted: boolean;
  /** The listener's scheme: 'https' over TLS is what the origin sees, whatever the client sent. */
  scheme?: 'http' | 'https';
  /**
   * The site the request is sent on for, and its normalised target: their CDN-Loop member is
   * appended to the client's field (http/loop.ts). A shared fill sets its own (fill.ts).
   */
  loop?: { site: string; target: string };
}

/**
 * Sets X-Forwarded-For/-Proto/-Host, Via and CDN-Loop on outgoing request headers. From an
 * untrusted peer the client's own X-Forwarded-* are replaced, never passed on, so they cannot
 * be spoofed.
 */
export function setForwardedHeaders(
  out: Record<string, string | string[] | number | undefined>,
  incoming: IncomingHttpHeaders,
  facts: ForwardedFacts,
): void {
  const xff = incoming['x-forwarded-for'];
  const prior = facts.peerTrusted && xff ? (Array.isArray(xff) ? xff.join(', ') : xff) : '';
  out['x-forwarded-for'] = prior ? `${prior}, ${facts.peerAddress}` : facts.peerAddress;
  const proto = facts.scheme === 'https' ? 'https' : facts.peerTrusted ? firstValue(incoming['x-forwarded-proto']) : undefined;
  out['x-forwarded-proto'] = proto ?? 'http';
  const fwdHost = facts.peerTrusted ? firstValue(incoming['x-forwarded-host']) : undefined;
  const host = fwdHost ?? incoming.host;
  if (host) out['x-forwarded-host'] = host;
  else delete out['x-forwarded-host'];
  out['via'] = appendVia(incoming.via);
  if (facts.loop !== undefined) out[LOOP_FIELD] = appendLoopMember(incoming[LOOP_FIELD], facts.loop.site, facts.loop.target);
}

function firstValue(v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined) return undefined;
  const first = s.split(',')[0]!.trim();
  return first.length > 0 ? first : undefined;
}

/**
 * Globs with `*` wildcards, case-insensitive, compiled once. Matched in linear time: the first
 * and last pieces fixed at the ends, each middle piece at its leftmost place after the one
 * before (the leftmost place leaves the most room, so it finds a match whenever one exists).
 * As a regular expression, `*a*a*a*b` took 48 s against a 1 000-character cookie name that a
 * client chooses, and `*a*b*` 166 ms against 16 KB.
 */
export function compileGlobs(patterns: readonly string[]): (name: string) => boolean {
  if (patterns.length === 0) return () => false;
  const globs = patterns.map(compileGlob);
  return (name) => {
    const text = name.toLowerCase();
    for (const glob of globs) if (glob(text)) return true;
    return false;
  };
}

/** One glob, for text already lower-cased. */
function compileGlob(pattern: string): (text: string) => boolean {
  const pieces = pattern.toLowerCase().split('*');
  const first = pieces[0]!;
  if (pieces.length === 1) return (text) => text === first;
  const last = pieces[pieces.length - 1]!;
  const middle = pieces.slice(1, -1).filter((p) => p !== '');
  const least = pieces.reduce((n, p) => n + p.length, 0);
  return (text) => {
    if (text.length < least || !text.startsWith(first) || !text.endsWith(last)) return false;
    const end = text.length - last.length;
    let at = first.length;
    for (const piece of middle) {
      const found = text.indexOf(piece, at);
      if (found < 0 || found + piece.length > end) return false;
      at = found + piece.length;
    }
    return true;
  };
}

/** Copies response headers for a client, dropping hop-by-hop ones. */
export function copyEndToEnd(headers: IncomingHttpHeaders | Record<string, string | string[]>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = new Set(connectionListedNames(headers['connection'] as string | string[] | undefined));
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Request fields that name the client's address, as proxies and CDNs set them (X-Forwarded-For aside, which the gateway writes itself). */
const CLIENT_ADDRESS_FIELDS: readonly string[] = [
  'x-real-ip',
  'true-client-ip',
  'x-client-ip',
  'client-ip',
  'x-cluster-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-originating-ip',
  'x-remote-ip',
  'x-remote-addr',
  'x-proxyuser-ip',
  'x-original-forwarded-for',
  'forwarded-for',
  'forwarded',
];

/**
 * Removes the client-address claims of a request from a client that is not a trusted proxy
 * (pass-through and WebSocket upgrades; fills never send them): replaced like its
 * X-Forwarded-For, never passed on.
 */
export function dropClientAddressClaims(headers: Record<string, unknown>): void {
  for (const name of CLIENT_ADDRESS_FIELDS) delete headers[name];
}

/**
 * Request fields never sent to an origin, on a fill or a pass-through, from any client: `Proxy`
 * (httpoxy, CVE-2016-5385): CGI and FastCGI stacks expose it as `HTTP_PROXY`, which PHP's and
 * Python's HTTP clients take for the outgoing proxy to use. No client has a reason to send it;
 * nginx's hardening guide removes it (`fastcgi_param HTTP_PROXY ""`).
 */
export const NEVER_FORWARDED_FIELDS: readonly string[] = ['proxy'];

/** Removes NEVER_FORWARDED_FIELDS from a request sent on (pass-through and WebSocket upgrades). */
export function dropNeverForwarded(headers: Record<string, unknown>): void {
  for (const name of NEVER_FORWARDED_FIELDS) delete headers[name];
}

/**
 * True for a field name of letters, digits and hyphens only: what nginx passes on by default
 * (`underscores_in_headers off`, `ignore_invalid_headers on`). PHP, and CGI-style frameworks
 * generally, read a header by a name with `-`, `.` and `_` all turned into `_`
 * (`HTTP_X_REAL_IP`), so `X.Real.IP` and `X_Real_IP` are `X-Real-IP` to them, past every list
 * that names `X-Real-IP`. Names arrive lower-cased from Node's parser.
 */
export function isPlainFieldName(name: string): boolean {
  return PLAIN_FIELD_NAME.test(name);
}
const PLAIN_FIELD_NAME = /^[a-z0-9-]+$/;

/**
 * Removes the fields whose names are not plain (isPlainFieldName) from a request sent on
 * (pass-through and WebSocket upgrades; a fill never sends them unless the key covers them).
 */
export function dropOddFieldNames(headers: Record<string, unknown>): void {
  for (const name of Object.keys(headers)) if (!PLAIN_FIELD_NAME.test(name)) delete headers[name];
}

/**
 * The client's answer can no longer be written: its connection closed, or over HTTP/2 its stream
 * (a client that cancelled a request resets it). HTTP/2's compatibility response has no
 * `destroyed` of its own (undefined): checked on it alone, an HTTP/2 request cancelled while it
 * waited was sent to the origin anyway, its answer written nowhere, and its origin permit held
 * for good (browser trial: a member's in-flight count stuck at 1; a dozen cancelled POSTs held
 * twelve).
 */
export function isResponseGone(res: { destroyed?: boolean; stream?: { destroyed: boolean } }): boolean {
  return res.destroyed === true || res.stream?.destroyed === true;
}

/**
 * The answer was written to its end (not: the client left first). `writableFinished` alone says
 * so on HTTP/1.1; HTTP/2's compatibility response also reads finished (and emits 'finish') when
 * the client reset the stream before any answer, with `writableEnded` false. Taken for an
 * answer, a cancelled HTTP/2 request was never seen to leave: its wait for a permit went on, and
 * a pass-through already sent waited for good, its permit held (browser trial).
 */
export function isAnswered(res: { writableFinished: boolean; writableEnded: boolean }): boolean {
  return res.writableFinished && res.writableEnded;
}

/**
 * The head with `Content-Disposition` ahead of every other field. Node's writeHead re-encodes a
 * Content-Disposition that comes after a Content-Length (latin1 bytes read back as UTF-8: its
 * fix for nodejs/node#46528): a UTF-8 `filename="résumé.pdf"` reached the client as latin1,
 * and one with a character past latin1 (`€`) threw, a 502 (odd-origin trial). Before the
 * length, it is written as Node's parser read it, byte for byte, as a stored copy's head is.
 */
export function dispositionFirst(head: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const disposition = head['content-disposition'];
  if (disposition === undefined) return head;
  return { 'content-disposition': disposition, ...head };
}
