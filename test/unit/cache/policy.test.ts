import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { formatHttpDate } from '../../../src/cache/cache-control.js';
import type { CacheEntry } from '../../../src/cache/entry.js';
import {
  computeInitialAgeMs,
  decideStorage,
  evaluateEntry,
  isCacheableRequest,
  type PolicyOptions,
  type RequestFacts,
  type ResponseFacts,
} from '../../../src/cache/policy.js';
import { routeCacheSchema } from '../../../src/config/schema.js';

/** Table-driven tests with each row's full name as the test name. */
function table<T extends { name: string }>(rows: readonly T[], run: (row: T) => void): void {
  for (const row of rows) test(row.name, () => run(row));
}

type Headers = Record<string, string | string[] | undefined>;
type RouteInput = Parameters<typeof routeCacheSchema.parse>[0];

const T0 = 1_700_000_000_000; // a whole second, so Date headers are exact
const S = 1000;

const makeOpts = (route: RouteInput = {}, honorClientNoCache = false): PolicyOptions => ({
  route: routeCacheSchema.parse(route),
  targetedHeader: 'Crowdgate-Cache-Control',
  honorClientNoCache,
});
const get = (headers: Headers = {}): RequestFacts => ({ method: 'GET', url: '/p', headers });
/** A response received at T0, sent at T0 (no delay), with Date: T0 unless overridden. */
const response = (status: number, headers: Headers = {}, times: Partial<ResponseFacts> = {}): ResponseFacts => ({
  status,
  headers: { date: formatHttpDate(T0), ...headers },
  requestTime: T0,
  responseTime: T0,
  ...times,
});

function storeOrThrow(req: RequestFacts, res: ResponseFacts, opts: PolicyOptions): CacheEntry {
  const d = decideStorage(req, res, opts, res.responseTime);
  if (!d.store) throw new Error(`expected storable: ${d.reason}`);
  return { ...d.entry, key: 'k', variantKey: '', body: Buffer.from('body') };
}

describe('isCacheableRequest', () => {
  table([
    { name: '§2 GET is eligible', method: 'GET', headers: {}, route: {}, want: { cacheable: true, canStoreResponse: true } },
    { name: '§2 HEAD is eligible', method: 'HEAD', headers: {}, route: {}, want: { cacheable: true, canStoreResponse: true } },
    { name: '§2 POST is not eligible', method: 'POST', headers: {}, route: {}, want: { cacheable: false } },
    { name: '§2 DELETE is not eligible', method: 'DELETE', headers: {}, route: {}, want: { cacheable: false } },
    { name: '§3.5 a request with Authorization is still eligible (the response decides)', method: 'GET', headers: { authorization: 'Bearer x' }, route: {}, want: { cacheable: true, canStoreResponse: true } },
    { name: '§5.2.1.5 request no-store may be answered from cache but its response is not stored', method: 'GET', headers: { 'cache-control': 'no-store' }, route: {}, want: { cacheable: true, canStoreResponse: false } },
    { name: 'route cache disabled is not eligible', method: 'GET', headers: {}, route: { enabled: false }, want: { cacheable: false } },
    { name: '§4.3.2 If-Match is for the origin: not eligible', method: 'GET', headers: { 'if-match': '"v1"' }, route: {}, want: { cacheable: false } },
    { name: '§4.3.2 If-Unmodified-Since is for the origin: not eligible', method: 'HEAD', headers: { 'if-unmodified-since': 'Sun, 31 May 2026 10:00:00 GMT' }, route: {}, want: { cacheable: false } },
    { name: '§4.3.2 If-None-Match is the cache\'s to answer: eligible', method: 'GET', headers: { 'if-none-match': '"v1"' }, route: {}, want: { cacheable: true } },
  ], ({ method, headers, route, want }) => {
    expect(isCacheableRequest({ method, url: '/', headers }, makeOpts(route))).toMatchObject(want);
  });
});

interface StorageRow {
  name: string;
  req?: Headers;
  status?: number;
  res?: Headers;
  route?: RouteInput;
  times?: Partial<ResponseFacts>;
  method?: string;
  /** false: refused; otherwise the entry fields expected (freshnessMs etc.). */
  want: false | Partial<CacheEntry>;
  /** Stored header names that must be absent. */
  absent?: string[];
  /** Stored header names that must be present. */
  present?: string[];
}

const LM_10H_AGO = formatHttpDate(T0 - 10 * 3600 * S);

describe('decideStorage', () => {
  const rows: StorageRow[] = [
    // Refusals
    { name: '§5.2.2.5 no-store response is not stored', res: { 'cache-control': 'max-age=60, no-store' }, want: false },
    { name: '§5.2.1.5 no-store request: the response is not stored', req: { 'cache-control': 'no-store' }, res: { 'cache-control': 'max-age=60' }, want: false },
    { name: '§5.2.2.7 private without field names is not stored by a shared cache', res: { 'cache-control': 'private, max-age=60' }, want: false },
    { name: '§4.1 Vary: * is not stored', res: { 'cache-control': 'max-age=60', vary: 'Accept, *' }, want: false },
    { name: '§3 a 1xx status is not final', status: 103, res: { 'cache-control': 'max-age=60' }, want: false },
    { name: '§3.3 206 is not stored (no range support)', status: 206, res: { 'cache-control': 'max-age=60' }, want: false },
    { name: '§4.3.4 a 304 is not stored on its own', status: 304, res: { 'cache-control': 'max-age=60' }, want: false },
    { name: '§5.2.2.3 must-understand: a status the cache does not understand is not stored', status: 599, res: { 'cache-control': 'max-age=60, must-understand' }, want: false },
    { name: '§3 an unknown status without explicit freshness is not stored', status: 299, res: { 'last-modified': LM_10H_AGO }, want: false },
    { name: '§3 500 without explicit freshness is not stored', status: 500, res: {}, want: false },
    { name: '§4.2.2 302 is not heuristically cacheable: not stored without freshness', status: 302, res: { 'last-modified': LM_10H_AGO }, want: false },
    { name: '§4.2.2 public alone does not make 302 storable (conservative)', status: 302, res: { 'cache-control': 'public' }, want: false },
    { name: '§3.5 Authorization request without public/s-maxage/must-revalidate is not stored', req: { authorization: 'Basic eA==' }, res: { 'cache-control': 'max-age=60' }, want: false },
    { name: '§3 Set-Cookie with setCookie refuse is not stored', res: { 'cache-control': 'max-age=60', 'set-cookie': ['a=1'] }, want: false },
    { name: '§3 Set-Cookie2 (RFC 2965) is a Set-Cookie: with setCookie refuse not stored', res: { 'cache-control': 'max-age=60', 'set-cookie2': 'a=1; Version=1' }, want: false },
    { name: '§5.2.2.4 no-cache without a validator is never usable: not stored', res: { 'cache-control': 'no-cache, max-age=60' }, want: false },
    { name: '§4.2.1 zero lifetime, no validator, no stale window: not stored', res: { 'cache-control': 'max-age=0' }, route: { graceSeconds: 0, staleWhileRevalidateSeconds: 0 }, want: false },
    { name: '§4.2.3 stale on arrival (Age beyond lifetime), no validator, no window: not stored', res: { 'cache-control': 'max-age=60', age: '120' }, route: { graceSeconds: 0, staleWhileRevalidateSeconds: 0 }, want: false },
    { name: 'route cache disabled: not stored', res: { 'cache-control': 'max-age=60' }, route: { enabled: false }, want: false },
    { name: '§9.3.2 a HEAD response has no content: not stored', method: 'HEAD', res: { 'cache-control': 'max-age=60' }, want: false },
    // Stored, and how
    { name: '§3 500 with max-age is stored', status: 500, res: { 'cache-control': 'max-age=5' }, want: { freshnessMs: 5 * S } },
    { name: '§3 an unknown status with max-age is stored (only must-understand asks to understand it)', status: 599, res: { 'cache-control': 'max-age=60' }, want: { freshnessMs: 60 * S } },
    { name: '§3.5 Authorization request with public is stored', req: { authorization: 'Bearer t' }, res: { 'cache-control': 'public, max-age=60' }, want: { freshnessMs: 60 * S, mustRevalidate: false } },
    { name: '§3.5 Authorization request with s-maxage is stored', req: { authorization: 'Bearer t' }, res: { 'cache-control': 's-maxage=60' }, want: { freshnessMs: 60 * S, mustRevalidate: true } },
    { name: '§3.5 a must-revalidate in a member that does not parse does not make an Authorization answer storable (review)', req: { authorization: 'Bearer t' }, res: { 'cache-control': 'max-age=60 must-revalidate', 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT' }, want: false },
    { name: '§3.5 Authorization request with must-revalidate is stored', req: { authorization: 'Bearer t' }, res: { 'cache-control': 'must-revalidate, max-age=60' }, want: { freshnessMs: 60 * S, mustRevalidate: true } },
    { name: '§3 Set-Cookie with setCookie strip: stored without Set-Cookie', route: { setCookie: 'strip' }, res: { 'cache-control': 'max-age=60', 'set-cookie': ['a=1', 'b=2'] }, want: { freshnessMs: 60 * S }, absent: ['set-cookie'] },
    { name: '§3 Set-Cookie2 with setCookie strip: stored without it', route: { setCookie: 'strip' }, res: { 'cache-control': 'max-age=60', 'set-cookie2': 'a=1; Version=1' }, want: { freshnessMs: 60 * S }, absent: ['set-cookie2'] },
    { name: '§5.2.2.7 private with field names: stored without those fields', res: { 'cache-control': 'private="X-User", max-age=60', 'x-user': 'alice', 'x-other': '1' }, want: { freshnessMs: 60 * S }, absent: ['x-user'], present: ['x-other'] },
    { name: '§5.2.2.4 bare no-cache: stored, validated on every use', res: { 'cache-control': 'no-cache, max-age=60', etag: '"v1"' }, want: { noCache: true, staleWhileRevalidateMs: 0, staleIfErrorMs: 0 } },
    { name: '§5.2.2.4 no-cache with field names: stored without those fields, not noCache', res: { 'cache-control': 'no-cache="x-debug", max-age=60', 'x-debug': 'x' }, want: { noCache: false, freshnessMs: 60 * S }, absent: ['x-debug'] },
    { name: '§4.2.1 s-maxage beats max-age in a shared cache', res: { 'cache-control': 'max-age=10, s-maxage=30' }, want: { freshnessMs: 30 * S } },
    { name: '§4.2.1 max-age beats Expires', res: { 'cache-control': 'max-age=10', expires: formatHttpDate(T0 + 3600 * S) }, want: { freshnessMs: 10 * S } },
    { name: '§4.2.1 Expires minus Date', res: { date: formatHttpDate(T0 - 100 * S), expires: formatHttpDate(T0 + 200 * S) }, want: { freshnessMs: 300 * S } },
    { name: '§4.2.1 Expires with Date missing counts from response_time', res: { date: undefined, expires: formatHttpDate(T0 + 200 * S) }, want: { freshnessMs: 200 * S } },
    { name: '§5.3 invalid Expires ("0") is already stale', res: { expires: '0', etag: '"e"' }, want: { freshnessMs: 0 } },
    { name: '§4.2.1 Expires before Date is stale (lifetime 0)', res: { expires: formatHttpDate(T0 - 5 * S), etag: '"e"' }, want: { freshnessMs: 0 } },
    { name: '§4.2.1 conflicting duplicate max-age is treated as stale', res: { 'cache-control': 'max-age=60, max-age=3600', etag: '"e"' }, want: { freshnessMs: 0 } },
    { name: '§4.2.1 invalid max-age is treated as stale', res: { 'cache-control': 'max-age=soon', etag: '"e"' }, want: { freshnessMs: 0 } },
    { name: '§4.2.2 heuristic: 10 % of Date − Last-Modified', res: { 'last-modified': LM_10H_AGO }, want: { freshnessMs: 3600 * S } },
    { name: '§4.2.2 heuristic is capped at 24 h', res: { 'last-modified': formatHttpDate(T0 - 1000 * 86400 * S) }, want: { freshnessMs: 86400 * S } },
    { name: '§4.2.2 heuristically cacheable 404 without Last-Modified is stored stale', status: 404, res: {}, want: { freshnessMs: 0, staleIfErrorMs: 3600 * S } }, // the default grace
    { name: '§4.2.2 heuristic not used when explicit freshness exists', res: { 'cache-control': 'max-age=5', 'last-modified': LM_10H_AGO }, want: { freshnessMs: 5 * S } },
    { name: 'RFC 9213 §2.2 CDN-Cache-Control replaces Cache-Control', res: { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' }, want: { freshnessMs: 60 * S }, present: ['cache-control', 'cdn-cache-control'] },
    { name: 'RFC 9213 §2.2 our targeted field beats CDN-Cache-Control', res: { 'crowdgate-cache-control': 'max-age=5', 'cdn-cache-control': 'max-age=60' }, want: { freshnessMs: 5 * S }, absent: ['crowdgate-cache-control'], present: ['cdn-cache-control'] },
    { name: 'RFC 9213 §2.2 a targeted no-store refuses even when Cache-Control allows', res: { 'cache-control': 'public, max-age=600', 'crowdgate-cache-control': 'no-store' }, want: false },
    { name: 'RFC 9213 §2.2 with a targeted field, Expires is ignored', res: { 'cdn-cache-control': 'public', expires: formatHttpDate(T0 + 3600 * S) }, want: { freshnessMs: 0 } },
    { name: 'RFC 9213 §2.1 an unparseable targeted field is ignored', res: { 'cdn-cache-control': 'max-age=5 junk', 'cache-control': 'max-age=100' }, want: { freshnessMs: 100 * S }, present: ['cdn-cache-control'] },
    { name: 'RFC 9213 §2.1 a targeted field that is no Structured Field Dictionary is ignored', res: { 'cdn-cache-control': 'max-age=10000, &&&&&', 'cache-control': 'no-store' }, want: false },
    { name: 'RFC 9213 §2.1 a targeted field whose only member is seconds that are no Integer is as if absent', res: { 'cdn-cache-control': 'max-age="10000"', 'cache-control': 'no-store' }, want: false },
    // RFC 9213 §2.1: the field is read as the Structured Field Dictionary it is, never as
    // Cache-Control text: Boolean true is the bare directive, parameters are ignored (attacker
    // trial: each of these was stored under Cache-Control's public lifetime).
    ...[
      'private=?1',
      'private;x=1',
      'private=?1;x=1',
      'no-store=?1',
      'no-store;reason="pii"',
      'private, private="x-user"',
    ].flatMap((d) => ['cdn-cache-control', 'crowdgate-cache-control'].map((field): StorageRow => ({
      name: `RFC 9213 §2.1 ${field}: max-age=60, ${d} is not stored (Cache-Control says public)`,
      res: { 'cache-control': 'public, max-age=60', [field]: `max-age=60, ${d}` },
      want: false,
    }))),
    { name: 'RFC 9213 §2.1 a targeted no-cache=?1 is bare no-cache: without a validator not stored', res: { 'cache-control': 'public, max-age=60', 'cdn-cache-control': 'max-age=60, no-cache=?1' }, want: false },
    { name: 'RFC 9213 §2.1 a targeted no-cache=?1 is bare no-cache: validated on every use', res: { 'cache-control': 'public, max-age=60', 'cdn-cache-control': 'max-age=60, no-cache=?1', etag: '"v1"' }, want: { noCache: true } },
    { name: 'RFC 9213 §2.1 a targeted no-cache;p=1 is bare no-cache', res: { 'cache-control': 'public, max-age=60', 'crowdgate-cache-control': 'max-age=60, no-cache;p=1', etag: '"v1"' }, want: { noCache: true } },
    { name: 'RFC 9213 §2.1 a member of the wrong type is ignored, not the field: max-age="60", no-store is no-store', res: { 'cache-control': 'public, max-age=60', 'cdn-cache-control': 'max-age="60", no-store' }, want: false },
    { name: 'RFC 9213 §2.1 max-age=?1 is ignored, the field\'s s-maxage governs', res: { 'cache-control': 'max-age=600', 'cdn-cache-control': 'max-age=?1, s-maxage=30' }, want: { freshnessMs: 30 * S } },
    { name: 'RFC 9213 §2.1 a decimal max-age is ignored: nothing else, the field is as if absent', res: { 'cache-control': 'max-age=100', 'cdn-cache-control': 'max-age=1.5' }, want: { freshnessMs: 100 * S } },
    { name: 'RFC 9213 §2.1 a negative max-age is ignored', res: { 'cache-control': 'max-age=100', 'cdn-cache-control': 'max-age=-5, public', etag: '"e"' }, want: { freshnessMs: 0 } },
    { name: 'RFC 9213 §2.1 parameters on seconds are ignored: max-age=60;x=1 is 60 s', res: { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60;x=1' }, want: { freshnessMs: 60 * S } },
    { name: 'RFC 9213 §2.1 a targeted private String or Token names fields: stored without them', res: { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60, private=x-user;p=1, no-cache="x-debug"', 'x-user': 'a', 'x-debug': 'b', 'x-other': 'c' }, want: { freshnessMs: 60 * S, noCache: false }, absent: ['x-user', 'x-debug'], present: ['x-other'] },
    { name: 'RFC 9213 §2.1 a targeted private=?0 says not private', res: { 'cache-control': 'private', 'cdn-cache-control': 'max-age=60, private=?0' }, want: { freshnessMs: 60 * S } },
    { name: 'RFC 9213 §2.1 a targeted private of another type counts, unqualified (the stricter reading)', res: { 'cache-control': 'public, max-age=60', 'cdn-cache-control': 'max-age=60, private=5' }, want: false },
    { name: 'RFC 9213 §2.1 a repeated targeted max-age that disagrees is stale, as in Cache-Control', res: { 'cdn-cache-control': 'max-age=60, max-age=3600', etag: '"e"' }, want: { freshnessMs: 0 } },
    { name: 'RFC 9213 §2.1 a targeted public=?1 lets an answer to Authorization be stored', req: { authorization: 'Bearer t' }, res: { 'cdn-cache-control': 'max-age=60, public=?1' }, want: { freshnessMs: 60 * S } },
    { name: 'RFC 9213 §2.1 a targeted public=?0 is ignored: an answer to Authorization is not stored', req: { authorization: 'Bearer t' }, res: { 'cdn-cache-control': 'max-age=60, public=?0' }, want: false },
    { name: 'RFC 9213 §2.1 a targeted field with a field-name list is a valid Dictionary', res: { 'cdn-cache-control': 'max-age=60, private="x-user"', 'cache-control': 'no-store', 'x-user': 'a' }, want: { freshnessMs: 60 * S }, absent: ['x-user'] },
    { name: 'RFC 9213 §2.1 an empty targeted field is ignored', res: { 'cdn-cache-control': '', 'cache-control': 'max-age=100' }, want: { freshnessMs: 100 * S } },
    { name: '§3.1 hop-by-hop fields, Connection-listed fields and Age are not stored', res: { 'cache-control': 'max-age=60', connection: 'close, X-Hop', 'x-hop': '1', 'keep-alive': 'timeout=5', 'transfer-encoding': 'chunked', 'proxy-authenticate': 'Basic', te: 'trailers', trailer: 'x', upgrade: 'h2c', age: '3', 'content-type': 'text/html' }, want: { freshnessMs: 60 * S }, absent: ['connection', 'x-hop', 'keep-alive', 'transfer-encoding', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'age'], present: ['content-type', 'date'] },
    { name: '§3.1 only the hop-by-hop Proxy-* fields are dropped: RFC 9209 Proxy-Status is end to end (RFC 9110 §7.6.1, §11.7)', res: { 'cache-control': 'max-age=60', 'proxy-connection': 'keep-alive', 'proxy-authorization': 'Basic x', 'proxy-status': 'crowdgate; error=http_request_error' }, want: { freshnessMs: 60 * S }, absent: ['proxy-connection', 'proxy-authorization'], present: ['proxy-status'] },
    { name: '§5.2.2.2 must-revalidate: no stale windows even with grace', res: { 'cache-control': 'max-age=60, must-revalidate, stale-if-error=600, stale-while-revalidate=30' }, route: { graceSeconds: 300 }, want: { mustRevalidate: true, staleIfErrorMs: 0, staleWhileRevalidateMs: 0 } },
    { name: '§5.2.2.8 proxy-revalidate sets mustRevalidate', res: { 'cache-control': 'max-age=60, proxy-revalidate' }, want: { mustRevalidate: true, staleIfErrorMs: 0 } },
    { name: '§5.2.2.10 s-maxage sets mustRevalidate', res: { 'cache-control': 's-maxage=60' }, want: { mustRevalidate: true } },
    { name: 'RFC 5861 §3 stale-while-revalidate from the header', res: { 'cache-control': 'max-age=60, stale-while-revalidate=30' }, route: { staleWhileRevalidateSeconds: 5 }, want: { staleWhileRevalidateMs: 30 * S } },
    { name: 'RFC 5861 §3 stale-while-revalidate from the route when the header has none', res: { 'cache-control': 'max-age=60' }, route: { staleWhileRevalidateSeconds: 5 }, want: { staleWhileRevalidateMs: 5 * S } },
    { name: 'RFC 5861 §4 stale-if-error is the larger of header and grace (header)', res: { 'cache-control': 'max-age=60, stale-if-error=300' }, route: { graceSeconds: 60 }, want: { staleIfErrorMs: 300 * S } },
    { name: 'RFC 5861 §4 stale-if-error is the larger of header and grace (grace)', res: { 'cache-control': 'max-age=60, stale-if-error=10' }, route: { graceSeconds: 60 }, want: { staleIfErrorMs: 60 * S } },
    { name: 'deleteAt is the stale moment plus the longer stale window', res: { 'cache-control': 'max-age=60, stale-while-revalidate=500, stale-if-error=200' }, route: { graceSeconds: 60 }, want: { deleteAt: T0 + 560 * S } },
    { name: 'deleteAt keeps a 60 s revalidation window for an entry with a validator', res: { 'cache-control': 'max-age=60', etag: '"x"' }, route: { graceSeconds: 0 }, want: { deleteAt: T0 + 120 * S } },
    { name: 'deleteAt is the stale moment without windows or validators', res: { 'cache-control': 'max-age=60' }, route: { graceSeconds: 0, staleWhileRevalidateSeconds: 0 }, want: { deleteAt: T0 + 60 * S } },
    { name: 'RFC 5861 §3 no stale-while-revalidate unless the origin gives one (strict by default)', res: { 'cache-control': 'max-age=60' }, want: { staleWhileRevalidateMs: 0 } },
    { name: 'RFC 5861 §3 the route\'s opt-in stale-while-revalidate applies when the response gives none', res: { 'cache-control': 'max-age=60' }, route: { staleWhileRevalidateSeconds: 10 }, want: { staleWhileRevalidateMs: 10 * S } },
    { name: 'tags come from Surrogate-Key (spaces) and Cache-Tag (commas)', res: { 'cache-control': 'max-age=60', 'surrogate-key': 'a  b c', 'cache-tag': 'd, e,a' }, want: { tags: ['a', 'b', 'c', 'd', 'e'] } },
    { name: '§4.1 vary is lowercase, sorted and deduplicated', res: { 'cache-control': 'max-age=60', vary: 'User-Agent, Accept-Encoding, accept-encoding' }, want: { vary: ['accept-encoding', 'user-agent'] } },
    // Route rules
    { name: 'route negative TTL gives a 404 without freshness its lifetime', status: 404, route: { negativeTtlSeconds: { '404': 10 } }, want: { freshnessMs: 10 * S } },
    { name: 'route negative TTL makes a 503 without freshness storable', status: 503, route: { negativeTtlSeconds: { '503': 2 } }, want: { freshnessMs: 2 * S } },
    { name: 'route negative TTL beats the default TTL (more specific)', status: 404, route: { negativeTtlSeconds: { '404': 10 }, defaultTtlSeconds: 300 }, want: { freshnessMs: 10 * S } },
    { name: 'route negative TTL does not override explicit freshness', status: 404, res: { 'cache-control': 'max-age=30' }, route: { negativeTtlSeconds: { '404': 10 } }, want: { freshnessMs: 30 * S } },
    { name: 'route default TTL applies without explicit freshness', route: { defaultTtlSeconds: 120 }, want: { freshnessMs: 120 * S } },
    { name: 'route default TTL replaces heuristics', res: { 'last-modified': LM_10H_AGO }, route: { defaultTtlSeconds: 120 }, want: { freshnessMs: 120 * S } },
    { name: 'route default TTL does not make a 500 storable', status: 500, route: { defaultTtlSeconds: 120 }, want: false },
    { name: 'route floor raises a short lifetime', res: { 'cache-control': 'max-age=1' }, route: { ttlFloorSeconds: 10 }, want: { freshnessMs: 10 * S } },
    { name: 'route floor never lengthens an error: a 404 keeps its negative TTL', status: 404, route: { ttlFloorSeconds: 86400, negativeTtlSeconds: { '404': 10 } }, want: { freshnessMs: 10 * S } },
    { name: 'route floor never lengthens an error: a 410 keeps its max-age', status: 410, res: { 'cache-control': 'max-age=5' }, route: { ttlFloorSeconds: 86400 }, want: { freshnessMs: 5 * S } },
    { name: 'route ceiling lowers a long lifetime', res: { 'cache-control': 'max-age=3600' }, route: { ttlCeilingSeconds: 60 }, want: { freshnessMs: 60 * S } },
    { name: '§4.2.3 route TTLs count from receipt: Age is added to a default TTL', res: { age: '30' }, route: { defaultTtlSeconds: 10 }, want: { initialAgeMs: 30 * S, freshnessMs: 40 * S } },
    { name: '§4.2.3 route ceiling counts from receipt', res: { age: '30', 'cache-control': 'max-age=3600' }, route: { ttlCeilingSeconds: 60 }, want: { freshnessMs: 90 * S } },
    // Micro-caching
    { name: 'micro-cache overrides bare no-cache (not noCache, no stale windows)', res: { 'cache-control': 'no-cache' }, route: { microcacheSeconds: 2 }, want: { freshnessMs: 2 * S, noCache: false, staleIfErrorMs: 0, staleWhileRevalidateMs: 0 } },
    { name: 'micro-cache overrides max-age=0', res: { 'cache-control': 'max-age=0' }, route: { microcacheSeconds: 2 }, want: { freshnessMs: 2 * S, staleIfErrorMs: 3600 * S } },
    { name: 'micro-cache is not applied past floor/ceiling: ceiling ignored', res: { 'cache-control': 'max-age=0' }, route: { microcacheSeconds: 3, ttlCeilingSeconds: 1 }, want: { freshnessMs: 3 * S } },
    { name: 'micro-cache never overrides no-store', res: { 'cache-control': 'no-store' }, route: { microcacheSeconds: 2 }, want: false },
    { name: 'micro-cache never overrides private', res: { 'cache-control': 'private, max-age=0' }, route: { microcacheSeconds: 2 }, want: false },
    { name: 'micro-cache never applies with private field names', res: { 'cache-control': 'private="x-u", max-age=0', etag: '"e"' }, route: { microcacheSeconds: 2 }, want: { freshnessMs: 0 } },
    { name: 'micro-cache never applies with Set-Cookie (even with strip)', res: { 'cache-control': 'max-age=0', 'set-cookie': 'a=1', etag: '"e"' }, route: { microcacheSeconds: 2, setCookie: 'strip' }, want: { freshnessMs: 0 }, absent: ['set-cookie'] },
    { name: 'micro-cache never applies to an Authorization request', req: { authorization: 'Bearer t' }, res: { 'cache-control': 'public, max-age=0', etag: '"e"' }, route: { microcacheSeconds: 2 }, want: { freshnessMs: 0 } },
    { name: 'micro-cache does not shorten a positive lifetime', res: { 'cache-control': 'max-age=60' }, route: { microcacheSeconds: 2 }, want: { freshnessMs: 60 * S } },
  ];

  table(rows, (row) => {
    const req: RequestFacts = { method: row.method ?? 'GET', url: '/p', headers: row.req ?? {} };
    const res = response(row.status ?? 200, row.res ?? {}, row.times ?? {});
    const d = decideStorage(req, res, makeOpts(row.route ?? {}), T0);
    if (row.want === false) {
      expect(d.store, d.store ? d.detail : '').toBe(false);
      return;
    }
    expect(d.store, d.store ? '' : d.reason).toBe(true);
    if (!d.store) return;
    expect(d.entry).toMatchObject(row.want);
    for (const h of row.absent ?? []) expect(d.entry.headers).not.toHaveProperty(h);
    for (const h of row.present ?? []) expect(d.entry.headers).toHaveProperty(h);
  });

  test('a refusal names the RFC rule, and its reason in a word (the metric label)', () => {
    const d = decideStorage(get(), response(200, { 'cache-control': 'no-store' }), makeOpts(), T0);
    expect(d).toEqual({ store: false, reason: expect.stringContaining('§5.2.2.5'), code: 'no_store' });
  });

  test.each([
    [{ 'cache-control': 'private' }, 'private'],
    [{ 'cache-control': 'max-age=60', vary: '*' }, 'vary'],
    [{ 'cache-control': 'max-age=60', 'set-cookie': 'a=b' }, 'set_cookie'],
    [{ 'cache-control': 'max-age=60', 'clear-site-data': '"cookies"' }, 'clear_site_data'],
    [{ 'cache-control': 'no-cache' }, 'never_usable'],
  ] as const)('not stored: %j is %s', (headers, code) => {
    const d = decideStorage(get(), response(200, headers), makeOpts(), T0);
    expect(d.store === false && d.code).toBe(code);
  });

  test('not stored: a 500 without freshness is no_freshness', () => {
    const d = decideStorage(get(), response(500), makeOpts(), T0);
    expect(d.store === false && d.code).toBe('no_freshness');
  });
});

describe('§4.2.3 age calculation', () => {
  table([
    { name: '§4.2.3 corrected_age_value (Age + response_delay) wins over apparent_age', date: T0 - 5 * S, age: 10, requestTime: T0 - 2 * S, want: 12 * S },
    { name: '§4.2.3 apparent_age wins when the Date is older than Age says', date: T0 - 50 * S, age: 10, requestTime: T0 - 2 * S, want: 50 * S },
    { name: '§4.2.3 a Date in the future (clock skew) gives apparent_age 0', date: T0 + 60 * S, age: undefined, requestTime: T0 - 1 * S, want: 1 * S },
    { name: 'RFC 9110 §6.6.1 Date missing: apparent_age 0, only the response delay', date: undefined, age: undefined, requestTime: T0 - 300, want: 300 },
  ], ({ date, age, requestTime, want }) => {
    expect(computeInitialAgeMs({ requestTime, responseTime: T0, dateAt: date, ageSeconds: age })).toBe(want);
  });

  table([
    // RFC 9110 §5.6.7: Date has one-second resolution, so apparent_age is whole seconds.
    { name: 'RFC 9110 §5.6.7 made and received in the same second: apparent_age 0', responseTime: T0 + 900, want: 5 },
    { name: 'RFC 9110 §5.6.7 received 2.3 s after its Date second began: apparent_age 2 s', responseTime: T0 + 2_300, want: 2 * S },
  ], ({ responseTime, want }) => {
    expect(computeInitialAgeMs({ requestTime: responseTime - 5, responseTime, dateAt: T0, ageSeconds: undefined })).toBe(want);
  });

  table([
    { name: '§5.1 garbage Age is ignored when storing', age: 'soon', want: 0 },
    { name: '§5.1 list Age uses its first member when storing', age: '20, 40', want: 20 * S },
    { name: '§5.1 Date missing and no Age: initial age is 0', age: undefined, want: 0 },
  ], ({ age, want }) => {
    const d = decideStorage(get(), response(200, { date: undefined, age, 'cache-control': 'max-age=600' }), makeOpts(), T0);
    expect(d.store && d.entry.initialAgeMs).toBe(want);
  });
});

interface EvalRow {
  name: string;
  res: Headers;
  route?: RouteInput;
  req?: Headers;
  honor?: boolean;
  /** Seconds after T0 when the entry is evaluated. */
  at: number;
  invalidatedAt?: number;
  want: Partial<ReturnType<typeof evaluateEntry>>;
}

describe('evaluateEntry', () => {
  const rows: EvalRow[] = [
    { name: '§4.2 fresh while current_age < freshness_lifetime', res: { 'cache-control': 'max-age=60' }, at: 30, want: { fresh: true, needsRevalidation: false, ageSeconds: 30 } },
    { name: '§4.2 stale once current_age reaches the lifetime', res: { 'cache-control': 'max-age=60' }, route: { graceSeconds: 0 }, at: 60, want: { fresh: false, needsRevalidation: true, withinStaleIfError: false } },
    { name: '§4.2.3 current_age includes the Age the origin reported', res: { 'cache-control': 'max-age=60', age: '50' }, at: 5, want: { fresh: true, ageSeconds: 55 } },
    { name: '§4.2.3 an entry older than its lifetime on arrival is stale', res: { 'cache-control': 'max-age=60', age: '50' }, at: 10, want: { fresh: false, ageSeconds: 60 } },
    { name: '§5.1 ageSeconds is whole seconds, rounded down', res: { 'cache-control': 'max-age=60' }, at: 1.999, want: { ageSeconds: 1 } },
    { name: '§5.2.2.4 a no-cache entry is never fresh', res: { 'cache-control': 'no-cache, max-age=60', etag: '"a"' }, at: 1, want: { fresh: false, needsRevalidation: true, withinStaleIfError: false, withinStaleWhileRevalidate: false } },
    { name: '§5.2.2.2 must-revalidate does not force validation of a fresh entry', res: { 'cache-control': 'max-age=60, must-revalidate' }, at: 30, want: { fresh: true, needsRevalidation: false } },
    { name: '§5.2.2.2 stale must-revalidate: no stale-while-revalidate or stale-if-error', res: { 'cache-control': 'max-age=60, must-revalidate, stale-while-revalidate=600', etag: '"a"' }, route: { graceSeconds: 600 }, at: 61, want: { fresh: false, needsRevalidation: true, withinStaleWhileRevalidate: false, withinStaleIfError: false } },
    { name: 'RFC 5861 §3 within stale-while-revalidate after the stale moment', res: { 'cache-control': 'max-age=60, stale-while-revalidate=30' }, at: 70, want: { fresh: false, needsRevalidation: true, withinStaleWhileRevalidate: true } },
    { name: 'RFC 5861 §3 past stale-while-revalidate', res: { 'cache-control': 'max-age=60, stale-while-revalidate=30' }, at: 90, want: { withinStaleWhileRevalidate: false } },
    { name: 'RFC 5861 §3 a fresh entry is not "within stale-while-revalidate"', res: { 'cache-control': 'max-age=60, stale-while-revalidate=30' }, at: 10, want: { fresh: true, withinStaleWhileRevalidate: false } },
    { name: 'RFC 5861 §4 within stale-if-error', res: { 'cache-control': 'max-age=60, stale-if-error=100' }, route: { graceSeconds: 0 }, at: 150, want: { withinStaleIfError: true } },
    { name: 'RFC 5861 §4 past stale-if-error', res: { 'cache-control': 'max-age=60, stale-if-error=100' }, route: { graceSeconds: 0 }, at: 161, want: { withinStaleIfError: false } },
    { name: 'route grace widens stale-if-error', res: { 'cache-control': 'max-age=60' }, route: { graceSeconds: 300 }, at: 300, want: { withinStaleIfError: true } },
    { name: '§5.2.1.2 request max-stale accepts a stale entry within its limit', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'max-stale=20' }, at: 70, want: { fresh: false, needsRevalidation: false } },
    { name: '§5.2.1.2 request max-stale beyond its limit needs revalidation', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'max-stale=5' }, at: 70, want: { needsRevalidation: true } },
    { name: '§5.2.1.2 bare max-stale accepts any staleness', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'max-stale' }, at: 10_000, want: { needsRevalidation: false } },
    { name: '§4.2.4 max-stale never applies to a must-revalidate entry', res: { 'cache-control': 'max-age=60, must-revalidate' }, req: { 'cache-control': 'max-stale' }, at: 70, want: { needsRevalidation: true } },
    { name: '§4.2.4 max-stale never applies to an s-maxage entry', res: { 'cache-control': 's-maxage=60' }, req: { 'cache-control': 'max-stale' }, at: 70, want: { needsRevalidation: true } },
    { name: '§4.2.4 max-stale never applies to a no-cache entry', res: { 'cache-control': 'no-cache', etag: '"a"' }, req: { 'cache-control': 'max-stale' }, at: 1, want: { needsRevalidation: true } },
    { name: '§5.2.1.4 request no-cache forces validation when honoured', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'no-cache' }, honor: true, at: 10, want: { fresh: true, needsRevalidation: true, refetchDemanded: true } },
    { name: '§5.2.1.4 a stale entry with no request directive: validation needed, but not demanded by the client (a backlog may answer stale)', res: { 'cache-control': 'max-age=60' }, at: 70, want: { needsRevalidation: true, refetchDemanded: false, withinStaleIfError: true } },
    { name: '§5.2.1.4 request no-cache is ignored when not honoured (reload storm)', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'no-cache' }, honor: false, at: 10, want: { fresh: true, needsRevalidation: false, refetchDemanded: false } },
    { name: '§5.2.1.4 request no-cache (honoured) also rules out serving stale-while-revalidate', res: { 'cache-control': 'max-age=60, stale-while-revalidate=60' }, req: { 'cache-control': 'no-cache' }, honor: true, at: 70, want: { withinStaleWhileRevalidate: false } },
    { name: '§5.4 Pragma: no-cache without Cache-Control is honoured as no-cache', res: { 'cache-control': 'max-age=60' }, req: { pragma: 'no-cache' }, honor: true, at: 10, want: { needsRevalidation: true } },
    { name: '§5.4 Pragma is ignored when the request has Cache-Control', res: { 'cache-control': 'max-age=60' }, req: { pragma: 'no-cache', 'cache-control': 'max-age=3600' }, honor: true, at: 10, want: { needsRevalidation: false } },
    { name: '§5.4 Pragma is ignored when client no-cache is not honoured', res: { 'cache-control': 'max-age=60' }, req: { pragma: 'no-cache' }, honor: false, at: 10, want: { needsRevalidation: false } },
    { name: '§5.2.1.1 request max-age below the age forces validation when honoured', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'max-age=5' }, honor: true, at: 10, want: { fresh: true, needsRevalidation: true, refetchDemanded: true } },
    { name: '§5.2.1.1 request max-age=0 is ignored when not honoured', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'max-age=0' }, honor: false, at: 10, want: { needsRevalidation: false } },
    { name: '§5.2.1.1 request max-age above the age is satisfied', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'max-age=30' }, honor: true, at: 10, want: { needsRevalidation: false } },
    { name: '§5.2.1.3 min-fresh unmet forces validation when client directives are honoured', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'min-fresh=40' }, honor: true, at: 30, want: { fresh: true, needsRevalidation: true } },
    { name: '§5.2.1.3 min-fresh is ignored like client no-cache by default (min-fresh equal to max-age would refetch every page at will)', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'min-fresh=60' }, honor: false, at: 1, want: { fresh: true, needsRevalidation: false } },
    { name: '§5.2.1.3 min-fresh met', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'min-fresh=20' }, at: 30, want: { needsRevalidation: false } },
    { name: '§5.2.1.3 a huge min-fresh is ignored by default too', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'min-fresh=100000000' }, honor: false, at: 30, want: { fresh: true, needsRevalidation: false } },
    { name: '§5.2.1.7 only-if-cached is reported', res: { 'cache-control': 'max-age=60' }, req: { 'cache-control': 'only-if-cached' }, at: 70, want: { onlyIfCached: true, needsRevalidation: true } },
    { name: '§4.4 a soft purge (invalidatedAt) makes a fresh entry stale and needing validation: no stale-while-revalidate', res: { 'cache-control': 'max-age=600, stale-while-revalidate=30' }, invalidatedAt: 10, at: 20, want: { fresh: false, needsRevalidation: true, withinStaleWhileRevalidate: false, withinStaleIfError: true } },
    { name: '§4.4 request max-stale never reads an invalidated (soft-purged) entry: it needs a validation first (attacker trial)', res: { 'cache-control': 'max-age=600' }, req: { 'cache-control': 'max-stale' }, invalidatedAt: 10, at: 20, want: { fresh: false, needsRevalidation: true } },
    { name: 'a soft purge counts stale-if-error from the purge moment', res: { 'cache-control': 'max-age=600, stale-if-error=30' }, route: { graceSeconds: 0 }, invalidatedAt: 10, at: 41, want: { withinStaleIfError: false } },
  ];

  table(rows, (row) => {
    const opts = makeOpts(row.route ?? {}, row.honor ?? false);
    const entry = storeOrThrow(get(), response(200, row.res), opts);
    if (row.invalidatedAt !== undefined) entry.invalidatedAt = T0 + row.invalidatedAt * S;
    const ev = evaluateEntry(entry, get(row.req ?? {}), T0 + row.at * S, opts);
    expect(ev).toMatchObject(row.want);
  });
});

describe('property: privacy rules are never broken', () => {
  const directive = fc.constantFrom(
    'public',
    'private',
    'private="x-user"',
    'no-store',
    'no-cache',
    'no-cache="x-debug"',
    'max-age=60',
    'max-age=0',
    's-maxage=30',
    'must-revalidate',
    'proxy-revalidate',
    'stale-while-revalidate=30',
    'stale-if-error=600',
  );
  const scenario = fc.record({
    authorization: fc.boolean(),
    cookie: fc.option(fc.constantFrom('sid=abc', 'sid=abc; theme=dark'), { nil: undefined }),
    requestNoStore: fc.boolean(),
    directives: fc.array(directive, { maxLength: 5 }),
    /** Which field carries the directives: the effective source must govern. */
    field: fc.constantFrom('cache-control', 'cdn-cache-control', 'crowdgate-cache-control'),
    setCookie: fc.option(fc.constantFrom('a=1', 'sid=x; HttpOnly'), { nil: undefined }),
    vary: fc.option(fc.constantFrom('Accept-Encoding', '*', 'Cookie', 'Accept, *'), { nil: undefined }),
    etag: fc.boolean(),
    status: fc.constantFrom(200, 203, 404, 500),
    setCookieMode: fc.constantFrom('refuse' as const, 'strip' as const),
    microcacheSeconds: fc.constantFrom(0, 2),
    defaultTtlSeconds: fc.constantFrom(0, 60),
    ttlFloorSeconds: fc.constantFrom(0, 5),
    age: fc.option(fc.constantFrom('0', '10', 'junk', '100000'), { nil: undefined }),
  });

  test('private, no-store, refused Set-Cookie, and unqualified Authorization are never stored; Set-Cookie never kept', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const reqHeaders: Headers = {};
        if (s.authorization) reqHeaders['authorization'] = 'Bearer secret';
        if (s.cookie) reqHeaders['cookie'] = s.cookie;
        if (s.requestNoStore) reqHeaders['cache-control'] = 'no-store';
        const resHeaders: Headers = { [s.field]: s.directives.join(', '), 'x-user': 'alice' };
        if (s.setCookie) resHeaders['set-cookie'] = [s.setCookie];
        if (s.vary) resHeaders['vary'] = s.vary;
        if (s.etag) resHeaders['etag'] = '"v1"';
        if (s.age) resHeaders['age'] = s.age;
        const opts = makeOpts({
          setCookie: s.setCookieMode,
          microcacheSeconds: s.microcacheSeconds,
          defaultTtlSeconds: s.defaultTtlSeconds,
          ttlFloorSeconds: s.ttlFloorSeconds,
        });
        const d = decideStorage(
          { method: 'GET', url: '/p', headers: reqHeaders },
          response(s.status, resHeaders, { requestTime: T0 - 50 }),
          opts,
          T0,
        );
        const has = (x: string) => (s.directives as string[]).includes(x);
        const forbidden =
          has('private') ||
          has('no-store') ||
          s.requestNoStore ||
          s.vary?.includes('*') === true ||
          (s.setCookie !== undefined && s.setCookieMode === 'refuse') ||
          (s.authorization && !has('public') && !has('s-maxage=30') && !has('must-revalidate'));
        if (forbidden) {
          expect(d.store).toBe(false);
          return;
        }
        if (!d.store) return;
        expect(d.entry.headers).not.toHaveProperty('set-cookie');
        expect(d.entry.headers).not.toHaveProperty('authorization');
        if (has('private="x-user"')) expect(d.entry.headers).not.toHaveProperty('x-user');
        // A stored entry that forbids stale serving is never usable stale, whatever max-stale says.
        const entry: CacheEntry = { ...d.entry, key: 'k', variantKey: '', body: Buffer.alloc(0) };
        const later = T0 + 7 * 24 * 3600 * S;
        const ev = evaluateEntry(entry, get({ 'cache-control': 'max-stale' }), later, makeOpts({}, true));
        if (entry.mustRevalidate || entry.noCache) {
          expect(ev.needsRevalidation).toBe(true);
          expect(ev.withinStaleIfError || ev.withinStaleWhileRevalidate).toBe(false);
        }
        if (entry.noCache) expect(evaluateEntry(entry, get(), T0, opts).fresh).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('decideStorage: an origin clock that runs behind', () => {
  test('a Date alone that would make the answer stale on arrival is taken as clock skew: stored with its max-age', () => {
    // The origin's clock is 10 min behind; no cache on the way says the answer is old (no Age).
    const e = storeOrThrow(get(), response(200, { 'cache-control': 'max-age=300', date: formatHttpDate(T0 - 600 * S) }), makeOpts());
    expect(e.freshnessMs - e.initialAgeMs).toBe(300 * S);
  });
  test('an Age that says the answer is that old still counts: stale on arrival, not stored for reuse', () => {
    const d = decideStorage(get(), response(200, { 'cache-control': 'max-age=300', date: formatHttpDate(T0 - 600 * S), age: '600' }), makeOpts({ staleWhileRevalidateSeconds: 0, graceSeconds: 0 }), T0);
    expect(d.store).toBe(false);
  });
  test('an Age that says less than the Date, from a cache on the way, is the age: the Date is the origin\'s clock (failure-day trial, round 3)', () => {
    const e = storeOrThrow(get(), response(200, { 'cache-control': 'max-age=60', date: formatHttpDate(T0 - 600 * S), age: '50' }), makeOpts());
    expect(e.initialAgeMs).toBe(50 * S);
    expect(e.freshnessMs - e.initialAgeMs).toBe(10 * S);
  });
  test('a Date some seconds behind still ages the answer (RFC 9111 §4.2.3)', () => {
    const e = storeOrThrow(get(), response(200, { 'cache-control': 'max-age=300', date: formatHttpDate(T0 - 50 * S) }), makeOpts());
    expect(e.initialAgeMs).toBe(50 * S);
  });
});
