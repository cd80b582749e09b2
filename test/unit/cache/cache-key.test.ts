import { describe, expect, test } from 'vitest';
import {
  makeCollapseKey,
  hasDisguisedDotSegment,
  acceptEncodingVariant,
  keyPrefixFor,
  keyUrlPrefixFor,
  keyUrlSelectorsFor,
  makeAuthority,
  makeCacheKey,
  authorityOfKey,
  makeVariantKey,
  parseCookies,
  parseUrlPath,
  parseVary,
  siteOfKey,
} from '../../../src/cache/cache-key.js';
import type { CacheEntry } from '../../../src/cache/entry.js';
import { isSelectedBy, isUnderPrefix } from '../../../src/cache/stores/cache-store.js';
import { cacheKeySchema, type CacheKeyConfig } from '../../../src/config/schema.js';

/** Table-driven tests with each row's full name as the test name. */
function table<T extends { name: string }>(rows: readonly T[], run: (row: T) => void): void {
  for (const row of rows) test(row.name, () => run(row));
}

const template = (over: Partial<CacheKeyConfig> = {}): CacheKeyConfig => ({ ...cacheKeySchema.parse({}), ...over });
const key = (url: string, over: Partial<CacheKeyConfig> = {}, headers: Record<string, string | string[]> = {}) =>
  makeCacheKey({ site: 'shop', authority: 'http://shop.example', url, headers, key: template(over) });
/** The URL part of a key: between the site and the first template part. */
const urlPart = (k: string) => k.split('\u0000')[1];

describe('makeCacheKey: URL normalisation', () => {
  table([
    { name: 'RFC 3986 §6.2.2.1 percent-encoding hex is upper-cased', url: '/a%2fb', want: '/a%2Fb' },
    { name: 'RFC 3986 §6.2.2.2 encoded unreserved characters are decoded', url: '/%7Euser/%41bc', want: '/~user/Abc' },
    { name: 'RFC 3986 §6.2.2.2 encoded reserved characters stay encoded', url: '/a%3Fb', want: '/a%3Fb' },
    { name: 'RFC 3986 §5.2.4 dot segments are removed', url: '/a/./b/../c', want: '/a/c' },
    { name: 'RFC 3986 §5.2.4 .. above the root stays at the root', url: '/../../x', want: '/x' },
    { name: 'RFC 3986 §5.2.4 encoded dots are removed after decoding', url: '/a/%2E%2E/b', want: '/b' },
    { name: 'RFC 3986 §5.2.4 trailing .. keeps the directory slash', url: '/a/b/..', want: '/a/' },
    { name: 'RFC 9112 §3.2.2 absolute-form gives just the path', url: 'http://example.com/p?q=1', want: '/p?q=1' },
    { name: 'RFC 9112 §3.2.2 absolute-form without a path is /', url: 'https://example.com', want: '/' },
    { name: 'RFC 3986 §3.5 a fragment is not part of the key', url: '/p#frag', want: '/p' },
    { name: 'RFC 3986 §2.1 raw non-ASCII is percent-encoded as UTF-8', url: '/café', want: '/caf%C3%A9' },
    { name: 'RFC 3986 §2.4 a stray % is encoded', url: '/100%', want: '/100%25' },
    { name: 'RFC 3986 §6.2.3 an empty query is dropped', url: '/p?', want: '/p' },
  ], ({ url, want }) => {
    expect(urlPart(key(url))).toBe(want);
  });
});

describe('makeCacheKey: query', () => {
  table([
    { name: 'parameters are sorted by name', url: '/p?b=2&a=1&c=3', over: {}, want: '/p?a=1&b=2&c=3' },
    { name: 'repeated names keep their relative order (stable sort)', url: '/p?b=2&a=9&b=1', over: {}, want: '/p?a=9&b=2&b=1' },
    { name: 'default tracking parameters are dropped (utm_* prefix, fbclid, gclid)', url: '/p?utm_source=x&id=3&fbclid=y&utm_medium=z&gclid=q', over: {}, want: '/p?id=3' },
    { name: 'only tracking parameters: no query at all', url: '/p?utm_campaign=spring', over: {}, want: '/p' },
    { name: 'configured tracking list replaces the default', url: '/p?utm_source=x&sid=1', over: { dropTracking: ['sid'] }, want: '/p?utm_source=x' },
    { name: 'keep: only the listed parameters remain', url: '/p?page=2&sort=asc&session=abc', over: { query: 'keep' as const, params: ['page', 'sort'] }, want: '/p?page=2&sort=asc' },
    { name: 'keep with a * prefix pattern', url: '/p?f_color=red&f_size=9&x=1', over: { query: 'keep' as const, params: ['f_*'] }, want: '/p?f_color=red&f_size=9' },
    { name: 'drop: the listed parameters are removed', url: '/p?page=2&cb=123', over: { query: 'drop' as const, params: ['cb'] }, want: '/p?page=2' },
    { name: 'none: the query is ignored', url: '/p?page=2', over: { query: 'none' as const }, want: '/p' },
    { name: 'percent-encoding in the query is normalised', url: '/p?q=%7e%2f', over: {}, want: '/p?q=~%2F' },
    { name: 'encoded parameter names match the lists after decoding', url: '/p?utm%5Fsource=x&a=1', over: {}, want: '/p?a=1' },
    { name: 'empty members are dropped', url: '/p?&&a=1&', over: {}, want: '/p?a=1' },
  ], ({ url, over, want }) => {
    expect(urlPart(key(url, over))).toBe(want);
  });

  test('two URLs differing only in tracking and order share a key', () => {
    expect(key('/p?b=2&a=1&utm_source=news')).toBe(key('/p?a=1&b=2'));
  });
});

describe('makeCacheKey: template headers and cookies, site', () => {
  test('the site name is always the first part', () => {
    const k = key('/p');
    expect(k.startsWith('shop\u0000/p')).toBe(true);
    expect(siteOfKey(k)).toBe('shop');
    expect(makeCacheKey({ site: 'blog', authority: 'http://shop.example', url: '/p', headers: {}, key: template() })).not.toBe(k);
  });

  test('a template header varies the key by its value', () => {
    const t = { headers: ['X-Device'] };
    const mobile = key('/p', t, { 'x-device': 'mobile' });
    expect(mobile).toBe(`shop\u0000/p\u0000H:http://shop.example\u0000h:x-device=mobile`);
    expect(key('/p', t, { 'x-device': 'desktop' })).not.toBe(mobile);
    expect(key('/p', t, { 'x-device': '  mobile ' })).toBe(mobile);
  });

  test('a missing template header differs from an empty one', () => {
    const t = { headers: ['x-device'] };
    expect(key('/p', t, {})).not.toBe(key('/p', t, { 'x-device': '' }));
  });

  test('a template cookie varies the key; other cookies do not', () => {
    const t = { cookies: ['currency'] };
    const eur = key('/p', t, { cookie: 'session=1; currency=EUR' });
    expect(eur).toBe(`shop\u0000/p\u0000H:http://shop.example\u0000c:currency=EUR`);
    expect(key('/p', t, { cookie: 'session=2; currency=EUR' })).toBe(eur);
    expect(key('/p', t, { cookie: 'currency=USD' })).not.toBe(eur);
    expect(key('/p', t, {})).not.toBe(eur);
  });

  test('header values cannot forge a separator into the key', () => {
    const t = { headers: ['a', 'b'] };
    expect(key('/p', t, { a: 'x&b=y' })).not.toBe(key('/p', t, { a: 'x', b: 'y' }));
  });
});

describe('keyPrefixFor: purge by prefix', () => {
  table([
    { name: 'matches keys under the prefix', prefix: '/blog/', url: '/blog/post?id=1', matches: true },
    { name: 'matches the normalised form of the key', prefix: '/blog/', url: '/%62log/./post', matches: true },
    { name: 'matches keys that carry template parts', prefix: '/blog/', url: '/blog/x', matches: true, headers: ['x-device'] },
    { name: 'does not match other paths', prefix: '/blog/', url: '/shop/x', matches: false },
    { name: 'a prefix without slash is a plain string prefix (/blog matches /blogroll)', prefix: '/blog', url: '/blogroll', matches: true },
  ], ({ prefix, url, matches, headers }) => {
    const k = key(url, headers ? { headers } : {});
    expect(k.startsWith(keyPrefixFor('shop', prefix))).toBe(matches);
  });

  test('does not match another site', () => {
    expect(key('/blog/x').startsWith(keyPrefixFor('other', '/blog/'))).toBe(false);
  });
});

describe('hasDisguisedDotSegment', () => {
  test('finds a dot segment behind a path parameter or an encoded slash or backslash', () => {
    for (const p of ['/static/..;/account', '/static/%2e%2e;/account', '/static/n1/..%2F..%2Faccount', '/static/n3/..%5C..%5Caccount', '/static/.;x/a', '/a\\..\\b', '/static%2F..%2Faccount'])
      expect(hasDisguisedDotSegment(p), p).toBe(true);
  });
  test('leaves plain paths, path parameters and encoded slashes without dot segments alone', () => {
    for (const p of ['/page;jsessionid=1', '/a/b', '/a%2Fb', '/a/..b;c', '/static/x.css', '/a/...;/b', '/a/../b']) expect(hasDisguisedDotSegment(p), p).toBe(false);
  });
});

describe('parseUrlPath', () => {
  test('splits path and query, keeping the query raw', () => {
    expect(parseUrlPath('/a/b?x=%20&y')).toEqual({ path: '/a/b', query: 'x=%20&y' });
    expect(parseUrlPath('/a')).toEqual({ path: '/a', query: undefined });
    expect(parseUrlPath('http://h:8080?x=1')).toEqual({ path: '/', query: 'x=1' });
  });
});

describe('parseVary', () => {
  table([
    { name: 'RFC 9111 §4.1 names are lowercased, deduplicated and sorted', value: 'User-Agent, accept-encoding, Accept-Encoding', want: ['accept-encoding', 'user-agent'] },
    { name: 'RFC 9111 §4.1 Vary across field lines is one list', value: ['Accept', 'Origin'], want: ['accept', 'origin'] },
    { name: 'RFC 9111 §4.1 * is returned as *', value: 'Accept, *', want: '*' },
    { name: 'RFC 9111 §4.1 missing Vary is an empty list', value: undefined, want: [] },
  ], ({ value, want }) => {
    expect(parseVary(value)).toEqual(want);
  });
});

describe('makeVariantKey', () => {
  test('RFC 9111 §4.1 empty vary gives an empty variant key', () => {
    expect(makeVariantKey([], { accept: 'text/html' })).toBe('');
  });

  test('a Vary member named like a property of every object is a header like any (an origin\'s `Vary: constructor` threw: attacker trial)', () => {
    expect(makeVariantKey(['constructor'], {})).toBe('constructor');
    expect(makeVariantKey(['__proto__', 'constructor'], { constructor: 'a' })).toBe('__proto__&constructor=a');
  });

  table([
    { name: 'br and gzip when both are accepted (every browser)', value: 'gzip, deflate, br', want: 'br, gzip' },
    { name: 'br alone when gzip is not accepted', value: 'br', want: 'br' },
    { name: 'gzip when br is not accepted', value: 'gzip, deflate', want: 'gzip' },
    { name: 'br excluded by q=0', value: 'br;q=0, gzip', want: 'gzip' },
    { name: 'x-gzip counts as gzip', value: 'x-gzip', want: 'gzip' },
    { name: '* accepts br unless br is listed with q=0', value: 'br;q=0, *', want: 'gzip' },
    { name: '* accepts both', value: '*', want: 'br, gzip' },
    { name: 'identity when nothing usable', value: 'deflate', want: 'identity' },
    { name: 'identity when gzip is refused', value: 'gzip;q=0', want: 'identity' },
    { name: 'identity when missing', value: undefined, want: 'identity' },
  ].map((r) => ({ ...r, name: `RFC 9110 §12.5.3 accept-encoding variant: ${r.name}` })), ({ value, want }) => {
    expect(acceptEncodingVariant(value)).toBe(want);
  });

  test('RFC 9111 §4.1 equivalent negotiation values share a variant', () => {
    const vary = ['accept-encoding', 'accept-language'];
    const a = makeVariantKey(vary, { 'accept-encoding': 'gzip, br', 'accept-language': 'EN-us,  fr;q=0.5' });
    const b = makeVariantKey(vary, { 'accept-encoding': 'br;q=1, x-gzip', 'accept-language': 'fr; q=0.5, en-US' });
    expect(a).toBe(b);
    expect(makeVariantKey(vary, { 'accept-encoding': 'gzip', 'accept-language': 'en-US' })).not.toBe(a);
  });

  test('RFC 9111 §4.1 equal weights keep their order: negotiators break ties by it', () => {
    const lang = (v: string) => makeVariantKey(['accept-language'], { 'accept-language': v });
    expect(lang('fr, en')).not.toBe(lang('en, fr'));
    expect(lang('fr;q=0.5, en, de')).toBe(lang('en, DE, fr; q=0.5'));
    const accept = (v: string) => makeVariantKey(['accept'], { accept: v });
    expect(accept('text/plain, application/json, */*')).not.toBe(accept('application/json, text/plain, */*'));
  });

  test('RFC 9111 §4.1 case-sensitive headers are not lowercased (Cookie, custom)', () => {
    expect(makeVariantKey(['cookie'], { cookie: 'sid=AbC' })).not.toBe(makeVariantKey(['cookie'], { cookie: 'sid=abc' }));
    expect(makeVariantKey(['x-token'], { 'x-token': 'a,  b' })).toBe(makeVariantKey(['x-token'], { 'x-token': ' a, b ' }));
  });

  test('RFC 9111 §4.1 a missing header differs from an empty one', () => {
    expect(makeVariantKey(['origin'], {})).not.toBe(makeVariantKey(['origin'], { origin: '' }));
  });
});

describe('parseCookies', () => {
  test('parses a Cookie header leniently (first value of each name)', () => {
    expect([...parseCookies('a=1; b=two=2;bad; =x; c=; a=2')]).toEqual([
      ['a', '1'],
      ['b', 'two=2'],
      ['c', ''],
    ]);
  });
});

describe('makeCacheKey: the authority (scheme and Host) is in every key', () => {
  table(
    [
      { name: 'host is lower-cased', host: 'Shop.Example', scheme: 'http', want: 'http://shop.example' },
      { name: 'a trailing dot is removed', host: 'shop.example.', scheme: 'http', want: 'http://shop.example' },
      { name: 'the default port of http is removed', host: 'shop.example:80', scheme: 'http', want: 'http://shop.example' },
      { name: 'the default port of https is removed', host: 'shop.example:443', scheme: 'HTTPS', want: 'https://shop.example' },
      { name: 'another port stays', host: 'shop.example:8080', scheme: 'http', want: 'http://shop.example:8080' },
      { name: ':443 on http is not a default port', host: 'shop.example:443', scheme: 'http', want: 'http://shop.example:443' },
      { name: 'an IPv6 literal keeps its brackets', host: '[::1]:80', scheme: 'http', want: 'http://[::1]' },
      { name: 'a missing Host is empty', host: undefined, scheme: 'http', want: 'http://' },
      { name: 'an unknown scheme counts as http', host: 'a', scheme: 'gopher', want: 'http://a' },
    ],
    ({ host, scheme, want }) => expect(makeAuthority(host, scheme)).toBe(want),
  );

  test('two Hosts, or two schemes, never share a key; equivalent spellings do', () => {
    const k = (authority: string) => makeCacheKey({ site: 'shop', authority, url: '/home', headers: {}, key: template() });
    expect(k('http://evil.example')).not.toBe(k('http://shop.example'));
    expect(k('https://shop.example')).not.toBe(k('http://shop.example'));
    expect(k(makeAuthority('SHOP.example.:80', 'http'))).toBe(k(makeAuthority('shop.example', 'http')));
  });

  test('a URL purge prefix covers every Host and template part, or one authority', () => {
    const t = template({ headers: ['X-Device'] });
    const k = makeCacheKey({ site: 'shop', authority: 'http://a.example', url: '/p?b=2&a=1', headers: { 'x-device': 'm' }, key: t });
    expect(k.startsWith(keyUrlPrefixFor('shop', '/p?a=1&b=2', t))).toBe(true);
    expect(k.startsWith(keyUrlPrefixFor('shop', '/p?a=1&b=2', t, 'http://a.example'))).toBe(true);
    expect(k.startsWith(keyUrlPrefixFor('shop', '/p?a=1&b=2', t, 'http://b.example'))).toBe(false);
    expect(k.startsWith(keyUrlPrefixFor('shop', '/p', t))).toBe(false); // another URL
  });

  test('URL purge selectors for one authority take its keys only, not those of authorities it begins', () => {
    const t = template({ headers: ['X-Device'] });
    const key = (authority: string, headers: Record<string, string> = {}) =>
      ({ key: makeCacheKey({ site: 'shop', authority, url: '/p', headers, key: t }), tags: [] }) as unknown as CacheEntry;
    const chosen = (authority: string, e: CacheEntry) => keyUrlSelectorsFor('shop', '/p', t, authority).some((s) => isSelectedBy(e, s));
    expect(chosen('http://b', key('http://b'))).toBe(true);
    expect(chosen('http://b', key('http://b', { 'x-device': 'm' }))).toBe(true);
    expect(chosen('http://b', key('http://blog.example.com'))).toBe(false);
    expect(chosen('http://b', key('http://b:8080', { 'x-device': 'm' }))).toBe(false);
    expect(chosen('http://', key('http://b'))).toBe(false);
    expect(keyUrlSelectorsFor('shop', '/p', t).some((s) => isSelectedBy(key('http://blog.example.com'), s))).toBe(true); // every authority
  });
});

describe('makeCollapseKey', () => {
  test('a key without variant is its primary key; with one, both parts stay readable and the id tells them apart', () => {
    expect(makeCollapseKey('s\u0000/a?')).toEqual({ primary: 's\u0000/a?', id: 's\u0000/a?' });
    const varied = makeCollapseKey('s\u0000/a?', 'accept-language=fr');
    expect(varied.primary).toBe('s\u0000/a?');
    expect(varied.variant).toBe('accept-language=fr');
    expect(varied.id).not.toBe(makeCollapseKey('s\u0000/a?', 'accept-language=en').id);
    expect(varied.id).not.toBe(makeCollapseKey('s\u0000/a?').id);
    // An empty variant (a Vary header the request lacks) is still a variant.
    expect(makeCollapseKey('k', '').id).not.toBe(makeCollapseKey('k').id);
  });
});

describe('authorityOfKey and a prefix selector with authorities (regex PURGE of one Host)', () => {
  const keyOf = (authority: string, url = '/blog/one', over: Partial<CacheKeyConfig> = {}) =>
    makeCacheKey({ site: 'shop', authority, url, headers: { 'x-tenant': 't1' }, key: template(over) });
  test('the authority part is read back, with key-template parts after it', () => {
    expect(authorityOfKey(keyOf('http://a.example'))).toBe('http://a.example');
    expect(authorityOfKey(keyOf('https://a.example:8443', '/p?q=1', { headers: ['X-Tenant'] }))).toBe('https://a.example:8443');
    expect(authorityOfKey('shop\u0000/p')).toBeUndefined();
  });
  test('a prefix with authorities covers those hosts\' keys under the prefix only', () => {
    const selector = { kind: 'prefix' as const, prefix: keyPrefixFor('shop', '/blog/'), authorities: ['http://a.example', 'https://a.example'] };
    const covered = (key: string) => isUnderPrefix(key, selector);
    expect(covered(keyOf('http://a.example'))).toBe(true);
    expect(covered(keyOf('https://a.example', '/blog/two', { headers: ['X-Tenant'] }))).toBe(true);
    expect(covered(keyOf('http://a.example.evil'))).toBe(false);
    expect(covered(keyOf('http://b.example'))).toBe(false);
    expect(covered(keyOf('http://a.example', '/about'))).toBe(false);
    expect(isUnderPrefix(keyOf('http://b.example'), { prefix: selector.prefix })).toBe(true);
  });
});
