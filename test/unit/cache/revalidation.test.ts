import { describe, expect, test } from 'vitest';
import { formatHttpDate } from '../../../src/cache/cache-control.js';
import { staleAtOf, type CacheEntry } from '../../../src/cache/entry.js';
import { decideStorage, type PolicyOptions, type RequestFacts } from '../../../src/cache/policy.js';
import {
  invalidationTargets,
  isNotModifiedForClient,
  makeConditionalHeaders,
  mergeNotModified,
} from '../../../src/cache/revalidation.js';
import { routeCacheSchema } from '../../../src/config/schema.js';
import { varyingAlsoOn } from '../../../src/cache/reflection.js';

/** Table-driven tests with each row's full name as the test name. */
function table<T extends { name: string }>(rows: readonly T[], run: (row: T) => void): void {
  for (const row of rows) test(row.name, () => run(row));
}

type Headers = Record<string, string | string[] | undefined>;
type RouteInput = Parameters<typeof routeCacheSchema.parse>[0];

const T0 = 1_700_000_000_000;
const S = 1000;
const LM = formatHttpDate(T0 - 3600 * S);

const makeOpts = (route: RouteInput = {}): PolicyOptions => ({
  route: routeCacheSchema.parse(route),
  targetedHeader: 'Crowdgate-Cache-Control',
  honorClientNoCache: false,
});
const req = (method: string, headers: Headers = {}, url = '/p'): RequestFacts => ({ method, url, headers });

/** A stored entry from a 200 received at T0 with these headers. */
function stored(headers: Headers, status = 200, route: RouteInput = {}): CacheEntry {
  const d = decideStorage(
    req('GET'),
    { status, headers: { date: formatHttpDate(T0), ...headers }, requestTime: T0, responseTime: T0 },
    makeOpts(route),
    T0,
  );
  if (!d.store) throw new Error(d.reason);
  return { ...d.entry, key: 'shop\u0000/p', variantKey: '', body: Buffer.from('hello') };
}

describe('makeConditionalHeaders', () => {
  table(
    [
      { name: '§4.3.1 ETag becomes If-None-Match', headers: { etag: 'W/"v1"' }, want: { 'if-none-match': 'W/"v1"' } },
      { name: '§4.3.1 Last-Modified becomes If-Modified-Since', headers: { 'last-modified': LM }, want: { 'if-modified-since': LM } },
      { name: '§4.3.1 both validators are sent', headers: { etag: '"v1"', 'last-modified': LM }, want: { 'if-none-match': '"v1"', 'if-modified-since': LM } },
      { name: '§4.3.1 an invalid Last-Modified is not sent', headers: { etag: '"v1"', 'last-modified': 'yesterday' }, want: { 'if-none-match': '"v1"' } },
      { name: '§4.3.1 no validators, no conditional headers', headers: {}, want: {} },
    ],
    ({ headers, want }) => {
      expect(makeConditionalHeaders(stored({ 'cache-control': 'max-age=60', ...headers }))).toEqual(want);
    },
  );
});

describe('mergeNotModified', () => {
  const base = { 'cache-control': 'max-age=60', etag: '"v1"', 'content-type': 'text/html', 'content-length': '5', 'x-version': '1' };
  const at = T0 + 100 * S;
  const merge = (entry: CacheEntry, headers: Headers, route: RouteInput = {}) =>
    mergeNotModified(entry, { status: 304, headers: { date: formatHttpDate(at), ...headers }, requestTime: at, responseTime: at }, makeOpts(route), at);

  test('§4.3.4 the 304 header fields replace the stored ones and lifetimes are recomputed', () => {
    const merged = merge(stored(base), { etag: '"v1"', 'cache-control': 'max-age=120', 'x-version': '2' });
    expect(merged).toBeDefined();
    expect(merged!.headers['x-version']).toBe('2');
    expect(merged!.headers['cache-control']).toBe('max-age=120');
    expect(merged!.freshnessMs).toBe(120 * S);
    expect(merged!.responseTime).toBe(at);
    expect(staleAtOf(merged!)).toBe(at + 120 * S);
    expect(merged!.body.toString()).toBe('hello');
    expect(merged!.key).toBe('shop\u0000/p');
  });

  test('§4.3.4 with no new Cache-Control the stored one applies from the new response time', () => {
    const merged = merge(stored(base), { etag: '"v1"' });
    expect(staleAtOf(merged!)).toBe(at + 60 * S);
  });

  test('§3.2 Content-Length, Content-Type and Content-Encoding are not updated by a 304', () => {
    const merged = merge(stored(base), { etag: '"v1"', 'content-length': '0', 'content-type': 'text/plain', 'content-encoding': 'br' });
    expect(merged!.headers['content-length']).toBe('5');
    expect(merged!.headers['content-type']).toBe('text/html');
    expect(merged!.headers).not.toHaveProperty('content-encoding');
  });

  test('§3.1 hop-by-hop fields and Age from the 304 are not stored; Age counts in the initial age', () => {
    const merged = merge(stored(base), { etag: '"v1"', connection: 'close', 'keep-alive': 'timeout=1', age: '10' });
    expect(merged!.headers).not.toHaveProperty('connection');
    expect(merged!.headers).not.toHaveProperty('keep-alive');
    expect(merged!.headers).not.toHaveProperty('age');
    expect(merged!.initialAgeMs).toBe(10 * S);
  });

  test('a soft purge mark is cleared by a successful revalidation', () => {
    const entry = { ...stored(base), invalidatedAt: T0 + 10 * S };
    expect(merge(entry, { etag: '"v1"' })!.invalidatedAt).toBeUndefined();
  });

  test('tags are recomputed from the merged headers', () => {
    const merged = merge(stored({ ...base, 'surrogate-key': 'a b' }), { etag: '"v1"', 'surrogate-key': 'c' });
    expect(merged!.tags).toEqual(['c']);
  });

  table(
    [
      { name: '§4.3.4 a strong ETag that differs does not select the entry', stored: { etag: '"v1"' }, update: { etag: '"v2"' }, selected: false },
      { name: '§4.3.4 a strong 304 ETag does not select a weakly tagged entry', stored: { etag: 'W/"v1"' }, update: { etag: '"v1"' }, selected: false },
      { name: '§4.3.4 a weak ETag selects by weak comparison', stored: { etag: '"v1"' }, update: { etag: 'W/"v1"' }, selected: true },
      { name: '§4.3.4 an ETag cannot select an entry without one', stored: { 'last-modified': LM }, update: { etag: '"v1"' }, selected: false },
      { name: '§4.3.4 without ETag, an equal Last-Modified selects', stored: { 'last-modified': LM }, update: { 'last-modified': LM }, selected: true },
      { name: '§4.3.4 without ETag, a different Last-Modified does not select', stored: { 'last-modified': LM }, update: { 'last-modified': formatHttpDate(T0) }, selected: false },
      { name: '§4.3.4 a 304 without validators answers for the entry we validated (relaxed)', stored: { etag: '"v1"' }, update: {}, selected: true },
    ],
    ({ stored: s, update, selected }) => {
      const merged = merge(stored({ 'cache-control': 'max-age=60', ...s }), update);
      expect(merged !== undefined).toBe(selected);
    },
  );

  table(
    [
      { name: '§5.2.2.5 a 304 that says no-store makes the entry unstorable', update: { etag: '"v1"', 'cache-control': 'no-store' }, route: {} },
      { name: '§5.2.2.7 a 304 that says private makes the entry unstorable', update: { etag: '"v1"', 'cache-control': 'private' }, route: {} },
      { name: '§3 a 304 with Set-Cookie under setCookie refuse makes the entry unstorable', update: { etag: '"v1"', 'set-cookie': ['a=1'] }, route: {} },
      { name: '§3 a 304 with Set-Cookie2 under setCookie refuse makes the entry unstorable', update: { etag: '"v1"', 'set-cookie2': 'a=1; Version=1' }, route: {} },
      { name: '§4.1 a 304 with a different Vary does not update the variant', update: { etag: '"v1"', vary: 'Accept-Language' }, route: {} },
    ],
    ({ update, route }) => {
      expect(merge(stored(base), update, route)).toBeUndefined();
    },
  );

  test('§4.1 a 304 repeating the origin\'s own Vary updates a copy the gateway made vary on more (an echoed input, a header naming who asks); it keeps its own Vary (review)', () => {
    const entry = varyingAlsoOn(stored({ ...base, vary: 'Accept-Encoding' }), ['x-user-token']);
    expect(entry.vary).toEqual(['accept-encoding', 'x-user-token']);
    for (const update of [{ etag: '"v1"', vary: 'Accept-Encoding' }, { etag: '"v1"' }, { etag: '"v1"', vary: 'x-user-token, accept-encoding' }]) {
      const merged = merge(entry, update);
      expect(merged, JSON.stringify(update)).toBeDefined();
      expect(merged!.vary).toEqual(['accept-encoding', 'x-user-token']);
      expect(merged!.headers['vary']).toBe(entry.headers['vary']);
    }
    // A field the copy's variant key does not hold: refetched.
    expect(merge(entry, { etag: '"v1"', vary: 'Accept-Encoding, Accept-Language' })).toBeUndefined();
  });

  test('§3 a 304 Set-Cookie under setCookie strip is merged without the cookie', () => {
    const merged = merge(stored(base, 200, { setCookie: 'strip' }), { etag: '"v1"', 'set-cookie': ['a=1'] }, { setCookie: 'strip' });
    expect(merged).toBeDefined();
    expect(merged!.headers).not.toHaveProperty('set-cookie');
  });

  test('§3.5 an Authorization request keeps its rule on merge', () => {
    const entry = stored({ ...base, 'cache-control': 'public, max-age=60' });
    const auth = req('GET', { authorization: 'Bearer t' });
    const opts = makeOpts();
    const res = (cc: string) => ({ status: 304, headers: { etag: '"v1"', 'cache-control': cc }, requestTime: at, responseTime: at });
    expect(mergeNotModified(entry, res('max-age=60'), opts, at, auth)).toBeUndefined();
    expect(mergeNotModified(entry, res('public, max-age=60'), opts, at, auth)).toBeDefined();
  });
});

describe('isNotModifiedForClient', () => {
  const entry = stored({ 'cache-control': 'max-age=60', etag: '"abc"', 'last-modified': LM });
  table(
    [
      { name: 'RFC 9110 §13.1.2 If-None-Match with the same strong tag', method: 'GET', headers: { 'if-none-match': '"abc"' }, want: true },
      { name: 'RFC 9110 §13.1.2 If-None-Match uses weak comparison (W/ matches)', method: 'GET', headers: { 'if-none-match': 'W/"abc"' }, want: true },
      { name: 'RFC 9110 §13.1.2 If-None-Match list with a match', method: 'GET', headers: { 'if-none-match': '"x,y", "abc"' }, want: true },
      { name: 'RFC 9110 §13.1.2 If-None-Match * matches any stored representation', method: 'GET', headers: { 'if-none-match': '*' }, want: true },
      { name: 'RFC 9110 §13.1.2 If-None-Match without a match', method: 'GET', headers: { 'if-none-match': '"zzz"' }, want: false },
      { name: 'RFC 9110 §13.1.3 If-Modified-Since is ignored when If-None-Match is present', method: 'GET', headers: { 'if-none-match': '"zzz"', 'if-modified-since': formatHttpDate(T0) }, want: false },
      { name: 'RFC 9110 §13.1.3 If-Modified-Since at or after Last-Modified', method: 'GET', headers: { 'if-modified-since': LM }, want: true },
      { name: 'RFC 9110 §13.1.3 If-Modified-Since before Last-Modified', method: 'GET', headers: { 'if-modified-since': formatHttpDate(T0 - 7200 * S) }, want: false },
      { name: 'RFC 9110 §13.1.3 an invalid If-Modified-Since is ignored', method: 'GET', headers: { 'if-modified-since': 'yesterday' }, want: false },
      { name: 'RFC 9110 §13.1.3 HEAD is answered like GET', method: 'HEAD', headers: { 'if-none-match': '"abc"' }, want: true },
      { name: 'RFC 9110 §13.1.2 not for unsafe methods', method: 'POST', headers: { 'if-none-match': '"abc"' }, want: false },
      { name: 'no conditional headers: not a 304', method: 'GET', headers: {}, want: false },
    ],
    ({ method, headers, want }) => {
      expect(isNotModifiedForClient(entry, req(method, headers))).toBe(want);
    },
  );

  test('RFC 9111 §4.3.2 without Last-Modified, the stored Date is compared', () => {
    const noLm = stored({ 'cache-control': 'max-age=60' });
    expect(isNotModifiedForClient(noLm, req('GET', { 'if-modified-since': formatHttpDate(T0) }))).toBe(true);
    expect(isNotModifiedForClient(noLm, req('GET', { 'if-modified-since': formatHttpDate(T0 - S) }))).toBe(false);
  });

  test("a Last-Modified in +0000 (gitweb's feeds) is compared, and sent when revalidating (new-user trial)", () => {
    const plus = LM.replace(/GMT$/, '+0000');
    const feed = stored({ 'cache-control': 'max-age=60', 'last-modified': plus });
    expect(isNotModifiedForClient(feed, req('GET', { 'if-modified-since': plus }))).toBe(true);
    expect(isNotModifiedForClient(feed, req('GET', { 'if-modified-since': LM }))).toBe(true);
    expect(isNotModifiedForClient(feed, req('GET', { 'if-modified-since': formatHttpDate(T0 - 7200 * S) }))).toBe(false);
    expect(makeConditionalHeaders(feed)).toEqual({ 'if-modified-since': plus });
  });

  test('RFC 9110 §13.1.2 only a stored 200 answers 304', () => {
    const notFound = stored({ 'cache-control': 'max-age=60', etag: '"abc"' }, 404);
    expect(isNotModifiedForClient(notFound, req('GET', { 'if-none-match': '"abc"' }))).toBe(false);
  });

  test('RFC 9110 §13.1.2 an entry without ETag never matches a tag list', () => {
    const untagged = stored({ 'cache-control': 'max-age=60' });
    expect(isNotModifiedForClient(untagged, req('GET', { 'if-none-match': '"abc"' }))).toBe(false);
  });
});

describe('invalidationTargets', () => {
  const origin = 'https://shop.example';
  table(
    [
      { name: '§4.4 a successful POST invalidates its target URI', method: 'POST', url: '/cart?id=1', status: 201, headers: {}, want: ['/cart?id=1'] },
      { name: '§4.4 any unsafe method counts (custom method)', method: 'REINDEX', url: '/x', status: 200, headers: {}, want: ['/x'] },
      { name: '§4.4 a 3xx counts as successful (303 after POST)', method: 'POST', url: '/form', status: 303, headers: { location: '/done' }, want: ['/form', '/done'] },
      { name: '§4.4 same-origin absolute Location is invalidated, and its page without the query', method: 'PUT', url: '/a', status: 200, headers: { location: 'https://shop.example/b?x=1' }, want: ['/a', '/b?x=1', '/b'] },
      { name: 'a saved edit redirected to its page with a query (ikiwiki: /page/?updated) clears the page too', method: 'POST', url: '/ikiwiki.cgi', status: 302, headers: { location: '/page/?updated' }, want: ['/ikiwiki.cgi', '/page/?updated', '/page/'] },
      { name: '§4.4 relative Content-Location is resolved against the target', method: 'PATCH', url: '/items/7', status: 200, headers: { 'content-location': 'versions/3' }, want: ['/items/7', '/items/versions/3'] },
      { name: '§4.4 a cross-origin Location is not invalidated', method: 'DELETE', url: '/a', status: 204, headers: { location: 'https://evil.example/a2' }, want: ['/a'] },
      { name: '§4.4 another port is another origin', method: 'DELETE', url: '/a', status: 204, headers: { 'content-location': 'https://shop.example:8443/a' }, want: ['/a'] },
      { name: '§4.4 an absolute-form request target gives its path', method: 'POST', url: 'https://shop.example/c', status: 200, headers: {}, want: ['/c'] },
      { name: '§4.4 duplicates are listed once', method: 'POST', url: '/c', status: 200, headers: { location: '/c', 'content-location': '/c' }, want: ['/c'] },
      { name: '§4.4 a failed unsafe request invalidates nothing', method: 'POST', url: '/c', status: 500, headers: {}, want: [] },
      { name: '§4.4 a 4xx unsafe request invalidates nothing', method: 'DELETE', url: '/c', status: 404, headers: {}, want: [] },
      { name: '§4.4 safe methods invalidate nothing', method: 'GET', url: '/c', status: 200, headers: {}, want: [] },
    ],
    ({ method, url, status, headers, want }) => {
      expect(invalidationTargets(req(method, {}, url), { status, headers }, origin)).toEqual(want);
    },
  );
});
