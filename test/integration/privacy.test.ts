/**
 * Never another user's page, never a planted page: what the origin sees is covered by the key.
 * Each test uses an origin that reflects its inputs into the body, and asserts that no client
 * gets a body reflecting another request's inputs unless the key covers them.
 */
import http from 'node:http';
import accepts from 'accepts';
import { describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import zlib from 'node:zlib';
import { request } from 'undici';
import { siteFor } from '../helpers/gateway.js';
import { ManualClock } from '../../src/clock.js';
import { useFixtures } from '../helpers/fixtures.js';
import { useRedisServer } from '../helpers/redis-server.js';
import { until } from '../helpers/until.js';

const { origin, gateway } = useFixtures();

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body };
}

/** One request on a raw socket, target sent exactly as given; resolves with the whole answer. */
function rawGet(base: string, target: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(`GET ${target} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n`));
    let out = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (out += d));
    socket.on('end', () => resolve(out));
    socket.on('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('raw request timed out')));
  });
}

/** An origin page that reflects what it received, cacheable for everyone. */
const reflecting = (fields: string[], extra: Record<string, string> = {}) => ({
  headers: { 'cache-control': 'public, max-age=60', ...extra },
  body: (r: { headers: Record<string, string | string[] | undefined> }) => fields.map((f) => `${f}=${String(r.headers[f] ?? '-')}`).join(' '),
});

describe('the key covers what the origin sees', () => {
  it('a page asked for with another Host is never served to the real Host (cache poisoning)', async () => {
    const o = await origin();
    o.route('/home', reflecting(['host']));
    const g = await gateway({ sites: [siteFor([o.url], { hosts: ['shop.test', '*'] })] });
    const planted = await get(`${g.url}/home`, { host: 'evil.example' });
    expect(planted.body).toBe('host=evil.example');
    const real = await get(`${g.url}/home`, { host: 'shop.test' });
    expect(real.body).toBe('host=shop.test');
    expect(real.headers['cache-status']).toMatch(/fwd=uri-miss/);
    // Equivalent spellings of one Host share the entry.
    const again = await get(`${g.url}/home`, { host: 'SHOP.test.:80' });
    expect(again.body).toBe('host=shop.test');
    expect(again.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/home')).toBe(2);
  });

  it('an absolute-form target names the host: its authority replaces Host for routing, the key and the fill (RFC 9112 §3.2.2)', async () => {
    const o = await origin();
    o.route('/home', reflecting(['host']));
    const g = await gateway({ sites: [siteFor([o.url], { hosts: ['shop.test', '*'] })] });
    // rawGet sends `Host: shop.test`; the target names evil.example, which is what the origin sees.
    const planted = await rawGet(g.url, 'http://evil.example/home');
    expect(planted).toMatch(/^HTTP\/1\.1 200/);
    expect(planted).toContain('host=evil.example');
    expect((await get(`${g.url}/home`, { host: 'evil.example' })).headers['cache-status']).toMatch(/; hit/);
    const real = await get(`${g.url}/home`, { host: 'shop.test' });
    expect(real.body).toBe('host=shop.test');
    expect(o.count('/home')).toBe(2);
    expect(await rawGet(g.url, 'http:///home')).toMatch(/^HTTP\/1\.1 400/);
    expect(await rawGet(g.url, 'http://user@shop.test/home')).toMatch(/^HTTP\/1\.1 400/);
    expect(o.count('/home')).toBe(2);
  });

  it('behind a trusted proxy a fill sends what the key holds: its host as Host, its scheme, only vouched-for X-Forwarded-For hops, our own Via', async () => {
    const o = await origin();
    o.route('/news', reflecting(['host', 'x-forwarded-host', 'x-forwarded-proto', 'via']));
    o.route('/ip', { headers: { 'cache-control': 'public, max-age=60' }, body: 'ok' });
    const g = await gateway({ trustedProxies: ['127.0.0.1', '::1'], sites: [siteFor([o.url], { hosts: ['shop.test', '*'] })] });
    // A front proxy that passes the client's own headers through (nginx adds no Via and keeps
    // the client's X-Forwarded-For on the left of $proxy_add_x_forwarded_for).
    const planted = await get(`${g.url}/news`, {
      host: 'evil.example',
      'x-forwarded-host': 'shop.test',
      'x-forwarded-proto': 'javascript:alert(1)//',
      via: '1.1 <b>evil</b>',
    });
    expect(planted.body).toBe('host=shop.test x-forwarded-host=shop.test x-forwarded-proto=http via=1.1 crowdgate');
    const visitor = await get(`${g.url}/news`, { host: 'shop.test' });
    expect(visitor.headers['cache-status']).toMatch(/; hit/);
    expect(visitor.body).toBe('host=shop.test x-forwarded-host=shop.test x-forwarded-proto=http via=1.1 crowdgate');
    await get(`${g.url}/ip`, { host: 'shop.test', 'x-forwarded-for': '1.2.3.4"><script>alert(1)</script>, 10.9.8.7, 203.0.113.9' });
    const seen = o.requests.find((r) => r.path === '/ip')!;
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    expect(o.count('/news')).toBe(1);
    // A POST to the page reaches the same origin vhost as its fills.
    await request(`${g.url}/news`, { method: 'POST', headers: { host: 'evil.example', 'x-forwarded-host': 'shop.test' }, body: 'x' }).then((r) => r.body.text());
    expect(o.requests.filter((r) => r.path === '/news' && r.method === 'POST').map((r) => r.headers.host)).toEqual(['shop.test']);
    // An X-Forwarded-Host that is not a host[:port] is ignored: the Host stands.
    const odd = await get(`${g.url}/news?odd`, { host: 'shop.test', 'x-forwarded-host': 'a b/../c' });
    expect(odd.body).toContain('host=shop.test');
  });

  it('a fill sends Accept-Language as the variant key holds it: an origin reading its first two letters answers every client of the variant alike', async () => {
    const o = await origin();
    // PHP's common idiom: substr($_SERVER['HTTP_ACCEPT_LANGUAGE'], 0, 2).
    o.route('/lang', {
      headers: { 'cache-control': 'public, max-age=60', vary: 'Accept-Language' },
      body: (r: { headers: Record<string, string | string[] | undefined> }) => `lang=${String(r.headers['accept-language'] ?? '').slice(0, 2)}`,
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const planted = await get(`${g.url}/lang`, { 'accept-language': 'de;q=0.8,en-US,en;q=0.9' });
    expect(planted.body).toBe('lang=en');
    const victim = await get(`${g.url}/lang`, { 'accept-language': 'en-US,en;q=0.9,de;q=0.8' });
    expect(victim.headers['cache-status']).toMatch(/; hit/);
    expect(victim.body).toBe('lang=en');
    expect(o.requests.find((r) => r.path === '/lang')!.headers['accept-language']).toBe('en-us,en;q=0.9,de;q=0.8');
  });

  it('an answer to an Accept that asks first for JSON, without Vary, is that Accept\'s variant: browsers never get it', async () => {
    const o = await origin();
    // Rails' respond_to, Laravel's wantsJson(): the Accept picks the format, and no Vary says so.
    // Like negotiator (Express): among equal weights the more specific type wins, so
    // `*/*, application/json` is JSON too.
    o.route('/doc', (req, res) => {
      const json = String(req.headers['accept'] ?? '').includes('application/json');
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': json ? 'application/json' : 'text/html' });
      res.end(json ? '{"doc":1}' : '<h1>doc</h1>');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const navigation = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
    for (const planted of ['application/json', '*/*, application/json', 'text/html;level=1, application/json'])
      expect((await get(`${g.url}/doc`, { accept: planted })).body, planted).toBe('{"doc":1}');
    for (const accept of [navigation, '*/*', undefined]) {
      const page = await get(`${g.url}/doc`, accept === undefined ? {} : { accept });
      expect(page.body, String(accept)).toBe('<h1>doc</h1>');
    }
    expect((await get(`${g.url}/doc`, { accept: navigation })).headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/doc')).toBe(4); // three JSON variants, one page
  });

  it("JSON to a fill that is not a browser's navigation (*/*, no Accept, text/html;level=1) is that Accept's variant: a monitor's HEAD or a refresh never stores JSON for the browsers (attacker trial)", async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    // Express's res.format({ json, html }), Django REST Framework: the first format for `*/*`
    // or no Accept, HTML for a browser's navigation, and no Vary.
    const negotiating = (req: http.IncomingMessage, res: http.ServerResponse) => {
      // `text/html` itself first; `text/html;level=1` is not it to Express's negotiator (review).
      const html = /^text\/html(,|$)/.test(String(req.headers['accept'] ?? ''));
      res.writeHead(200, {
        'cache-control': 'public, max-age=5, stale-while-revalidate=60',
        'content-type': html ? 'text/html' : 'application/json',
        date: new Date(clock.now()).toUTCString(),
      });
      res.end(req.method === 'HEAD' ? undefined : html ? '<h1>home</h1>' : '{"home":1}');
    };
    o.route('/home', negotiating);
    o.route('/news', negotiating);
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const navigation = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
    // A monitor's HEAD is the first request for /home.
    const monitor = await request(`${g.url}/home`, { method: 'HEAD', headers: { accept: '*/*' } });
    expect(monitor.statusCode).toBe(200);
    await monitor.body.text();
    expect((await get(`${g.url}/home`, { accept: '*/*' })).body).toBe('{"home":1}');
    expect((await get(`${g.url}/home`)).body).toBe('{"home":1}'); // no Accept at all
    expect((await get(`${g.url}/home`, { accept: 'text/html;level=1, */*' })).body).toBe('{"home":1}');
    const browser = await get(`${g.url}/home`, { accept: navigation });
    expect(browser.body).toBe('<h1>home</h1>');
    expect(browser.headers['content-type']).toBe('text/html');
    expect((await get(`${g.url}/home`, { accept: navigation })).headers['cache-status']).toMatch(/; hit/);
    // Browsers filled /news; expired, a wildcard client starts the background refresh of their copy.
    expect((await get(`${g.url}/news`, { accept: navigation })).body).toBe('<h1>home</h1>');
    clock.advance(6_000);
    expect((await get(`${g.url}/news`, { accept: '*/*' })).body).toBe('<h1>home</h1>'); // the stale copy, updating
    await expect.poll(() => g.gw.inflight.size).toBe(0);
    expect(o.requests.filter((r) => r.url === '/news').map((r) => r.headers['accept'])).toEqual([navigation, '*/*']); // the refresh was the wildcard's
    const after = await get(`${g.url}/news`, { accept: navigation });
    expect(after.body).toBe('<h1>home</h1>');
    expect(after.headers['content-type']).toBe('text/html');
  });

  it("an Accept the origin's negotiator reads otherwise (a weight that is no qvalue, text/html with parameters first) never stores another format for the browsers (attacker trial)", async () => {
    const o = await origin();
    // Koa's ctx.accepts, Express's req.accepts (the real accepts and negotiator packages): the
    // format from Accept, a public lifetime and no Vary.
    o.route('/acc', (req, res) => {
      const type = accepts(req).type(['html', 'text', 'xml']) || 'html';
      const contentType = type === 'html' ? 'text/html' : type === 'text' ? 'text/plain' : 'application/xml';
      res.writeHead(200, { 'cache-control': 'public, max-age=300', 'content-type': contentType });
      res.end(type === 'html' ? '<h1>page</h1>' : type === 'text' ? 'plain page' : '<page/>');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const chrome = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
    const planted = {
      'text/html;q=-1, text/plain': 'plain page',
      'text/html;q=1e-9, text/plain': 'plain page',
      'text/html, application/xml;q=1e1': '<page/>',
      'text/html;level=1, text/plain': 'plain page',
      'text/html;charset=utf-8, text/plain': 'plain page',
    };
    for (const [accept, body] of Object.entries(planted)) {
      const path = `/acc?case=${encodeURIComponent(accept)}`;
      expect((await get(`${g.url}${path}`, { accept })).body, accept).toBe(body);
      const browser = await get(`${g.url}${path}`, { accept: chrome });
      expect([browser.body, browser.headers['content-type']], accept).toEqual(['<h1>page</h1>', 'text/html']);
    }
  });

  it("a revalidation led by another format's client does not merge that format's 304 fields into the shared page (attacker trial)", async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    // Express-like: the format's headers are set before the freshness check, and the record's
    // version is the ETag of every format, so a CSV client's conditional request gets a 304
    // that carries the CSV's Content-Disposition.
    o.route('/rep', (req, res) => {
      const csv = accepts(req).type(['html', 'csv']) === 'csv';
      const head: Record<string, string> = { 'cache-control': 'public, max-age=2', etag: '"rev-7"', date: new Date(clock.now()).toUTCString() };
      if (csv) head['content-disposition'] = 'attachment; filename="report.csv"';
      if (req.headers['if-none-match'] === '"rev-7"') {
        res.writeHead(304, head);
        res.end();
        return;
      }
      res.writeHead(200, { ...head, 'content-type': csv ? 'text/csv' : 'text/html' });
      res.end(csv ? 'a,b\n' : '<h1>report</h1>');
    });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0 } }] })] }, { clock });
    const firefox = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
    expect((await get(`${g.url}/rep`, { accept: firefox })).body).toBe('<h1>report</h1>');
    clock.advance(3_000);
    const csv = await get(`${g.url}/rep`, { accept: 'text/csv' });
    expect([csv.body, csv.headers['content-disposition']]).toEqual(['a,b\n', 'attachment; filename="report.csv"']);
    const page = await get(`${g.url}/rep`, { accept: firefox });
    expect([page.body, page.headers['content-type'], page.headers['content-disposition']]).toEqual(['<h1>report</h1>', 'text/html', undefined]);
    // A browser's own revalidation is merged as before (the 304 speaks for the page).
    clock.advance(3_000);
    const again = await get(`${g.url}/rep`, { accept: firefox });
    expect(again.headers['cache-status']).toMatch(/revalidated/);
    expect(again.headers['content-disposition']).toBeUndefined();
  });

  it('a dot segment hidden by a path parameter or an encoded slash is refused, never stored under the route it seems to match', async () => {
    const o = await origin();
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'static', match: { pathPrefix: '/static/' }, cache: { ttlFloorSeconds: 86400 } }] })] });
    for (const target of ['/static/..;/account', '/static/%2e%2e;/account', '/static/n1/..%2F..%2Faccount', '/static/n3/..%5C..%5Caccount']) {
      const answer = await rawGet(g.url, target);
      expect(answer, target).toMatch(/^HTTP\/1\.1 400 /);
    }
    expect(o.requests.length).toBe(0);
    // An ordinary path parameter still passes.
    expect((await rawGet(g.url, '/static/app.css;v=2')).startsWith('HTTP/1.1 200')).toBe(true);
  });

  it('http and https pages behind a trusted TLS terminator are different entries', async () => {
    const o = await origin();
    o.route('/home', reflecting(['x-forwarded-proto']));
    const g = await gateway({ trustedProxies: ['127.0.0.1', '::1'], sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/home`, { 'x-forwarded-proto': 'https' })).body).toBe('x-forwarded-proto=https');
    expect((await get(`${g.url}/home`)).body).toBe('x-forwarded-proto=http');
    expect((await get(`${g.url}/home`, { 'x-forwarded-proto': 'https' })).body).toBe('x-forwarded-proto=https');
    expect(o.count('/home')).toBe(2);
  });

  it('requests carrying credentials bypass the cache: nobody else gets their page, and theirs is not stored', async () => {
    const o = await origin();
    o.route('/account', reflecting(['x-api-key', 'authorization', 'x-auth-token', 'x-redmine-api-key']));
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const [name, value] of [
      ['x-api-key', 'k-alice'],
      ['authorization', 'Bearer alice'],
      ['x-auth-token', 't-alice'],
      ['x-redmine-api-key', 'r-alice'], // Redmine's REST API key (Redmine trial)
    ] as const) {
      const own = await get(`${g.url}/account`, { [name]: value });
      expect(own.body).toContain(`${name}=${value}`);
      expect(own.headers['cache-status']).toMatch(/fwd=bypass/);
    }
    const anonymous = await get(`${g.url}/account`);
    expect(anonymous.body).toBe('x-api-key=- authorization=- x-auth-token=- x-redmine-api-key=-');
    expect(anonymous.headers['cache-status']).toMatch(/fwd=uri-miss/);
    expect(o.count('/account')).toBe(5);
  });

  it("a signed-in Ghost member's requests bypass the cache by default: the members-only post is theirs, not the anonymous copy (Ghost trial)", async () => {
    const o = await origin();
    // Ghost: the anonymous page public with max-age, the member's own private (its paywalled text).
    o.route('/members-post/', (req, res) => {
      const member = /(^|;\s*)ghost-members-ssr=/.test(String(req.headers.cookie ?? ''));
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': member ? 'private, no-store' : 'public, max-age=60' });
      res.end(member ? 'the whole post' : 'sign in to read');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/members-post/`)).body).toBe('sign in to read');
    expect((await get(`${g.url}/members-post/`)).headers['cache-status']).toMatch(/hit/);
    const member = await get(`${g.url}/members-post/`, { cookie: 'ghost-members-ssr=abc; ghost-members-ssr.sig=def' });
    expect(member.body).toBe('the whole post');
    expect(member.headers['cache-status']).toMatch(/fwd=bypass/);
    expect((await get(`${g.url}/members-post/`)).body).toBe('sign in to read');
  });

  it('an answer without cache headers to a fill that carried a token header nothing keys is neither shared with the fill\'s waiters nor served stale to anyone', async () => {
    // New-user trial: an API picks the user from X-User-Token (not in credentialHeaders) and
    // sends no cache headers. Bob, arriving during Alice's fill, got her JSON; with the origin
    // down, anyone did for a minute (grace).
    const o = await origin();
    let arrivals = 0;
    let arrived!: () => void;
    const first = new Promise<void>((r) => (arrived = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    o.route('/v1/me', async (req, res) => {
      if (++arrivals === 1) {
        arrived();
        await released;
      }
      const token = req.headers['x-user-token'];
      if (token === undefined) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"error":"no token"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"user":"${String(token).slice(4)}","email":"${String(token).slice(4)}@example.com"}`);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const alice = get(`${g.url}/v1/me`, { 'x-user-token': 'tok-alice' });
    await first;
    const bob = get(`${g.url}/v1/me`);
    release();
    expect((await alice).body).toContain('"user":"alice"');
    const bobs = await bob;
    expect(bobs.status).toBe(401);
    expect(bobs.body).not.toContain('alice');
    expect(o.count('/v1/me')).toBe(2);
    o.kill();
    const carol = await get(`${g.url}/v1/me`);
    expect(carol.body).not.toContain('alice');
    expect(carol.status).toBeGreaterThanOrEqual(500);
  });

  it('a page personalised by X-Visitor-Id, X-Viewer, X-Profile-Id or X-Device-Id without saying so is that visitor\'s copy, never another\'s (attacker trial: shared)', async () => {
    const o = await origin();
    for (const name of ['x-visitor-id', 'x-viewer', 'x-profile-id', 'x-device-id'])
      o.route(`/welcome/${name}`, (req, res) => {
        // Not echoed, not in Vary: a greeting picked by the header.
        res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'max-age=60' });
        res.end(req.headers[name] === undefined ? 'Welcome, new visitor' : 'Welcome back, your saved cart');
      });
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const name of ['x-visitor-id', 'x-viewer', 'x-profile-id', 'x-device-id']) {
      expect((await get(`${g.url}/welcome/${name}`, { [name]: 'v-123' })).body).toBe('Welcome back, your saved cart');
      expect((await get(`${g.url}/welcome/${name}`)).body).toBe('Welcome, new visitor');
    }
  });

  it('an answer to a token-carrying fill with a validator, a heuristic or a route lifetime is that token\'s variant; only public or s-maxage shares it (attacker trial)', async () => {
    // Attacker trial: an Express-style API picks the user from X-User-Token and sends an ETag
    // (Express's default) or a Last-Modified, or the path is under a route with a floor. The
    // answer was stored with no variant: Bob got Alice's page when he arrived during her fill,
    // from the heuristic or the floor's lifetime, and with the origin down, stale.
    const o = await origin();
    let hold: Promise<void> | undefined;
    let arrived: (() => void) | undefined;
    const page = (extra: (who: string) => Record<string, string>) => async (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      const who = String(req.headers['x-user-token'] ?? 'tok-guest').slice(4);
      if (hold && who === 'alice') {
        arrived?.();
        await hold;
      }
      res.writeHead(200, { 'content-type': 'text/html', ...extra(who) });
      res.end(`account of ${who}`);
    };
    const lastModified = new Date(Date.now() - 10 * 86_400_000).toUTCString();
    o.route('/me/etag', page((who) => ({ etag: `W/"${who}"` })));
    o.route('/me/lm', page(() => ({ 'last-modified': lastModified })));
    o.route('/static/me.css', page(() => ({})));
    o.route('/me/public', page(() => ({ 'cache-control': 'public, max-age=60' })));
    o.route('/me/shared', page(() => ({ 'cache-control': 'max-age=0, s-maxage=60' })));
    const routes = [
      { name: 'static', match: { pathPrefix: '/static/' }, cache: { ttlFloorSeconds: 86_400 } },
      { name: 'default', cache: { graceSeconds: 60 } },
    ];
    const g = await gateway({ sites: [siteFor([o.url], { routes })] });
    const alice = { 'x-user-token': 'tok-alice' };

    // Bob arrives during Alice's fill of a page with an ETag: his own fill, not her page.
    let release!: () => void;
    hold = new Promise<void>((r) => (release = r));
    const inFill = new Promise<void>((r) => (arrived = r));
    const hers = get(`${g.url}/me/etag`, alice);
    await inFill;
    const bobs = get(`${g.url}/me/etag`);
    await expect.poll(async () => /crowdgate_collapsed_requests_total\{site="test"\} 1\b/.test(await (await request(`${g.adminUrl}/metrics`)).body.text())).toBe(true);
    release();
    hold = undefined;
    expect((await hers).body).toBe('account of alice');
    expect((await bobs).body).toBe('account of guest');
    expect(o.count('/me/etag')).toBe(2);

    // One after the other: a heuristic lifetime, a route's floor.
    for (const path of ['/me/lm', '/static/me.css']) {
      expect((await get(`${g.url}${path}`, alice)).body).toBe('account of alice');
      expect((await get(`${g.url}${path}`, alice)).headers['cache-status']).toMatch(/; hit/);
      const bob = await get(`${g.url}${path}`);
      expect(bob.body).toBe('account of guest');
      expect(bob.headers['cache-status']).toMatch(/fwd=vary-miss/);
    }

    // The guest's copy first: Alice is not answered with it, and each gets their own after.
    o.route('/me/lm2', page(() => ({ 'last-modified': lastModified })));
    expect((await get(`${g.url}/me/lm2`)).body).toBe('account of guest');
    const first = await get(`${g.url}/me/lm2`, alice);
    expect(first.body).toBe('account of alice');
    expect(first.headers['cache-status']).toMatch(/fwd=vary-miss/);
    expect((await get(`${g.url}/me/lm2`, alice)).body).toBe('account of alice');
    expect((await get(`${g.url}/me/lm2`)).body).toBe('account of guest');
    expect(o.count('/me/lm2')).toBe(2);

    // The origin said public (or s-maxage): the copy is for everyone, as RFC 9111 §3.5 has it for Authorization.
    for (const path of ['/me/public', '/me/shared']) {
      expect((await get(`${g.url}${path}`, alice)).body).toBe('account of alice');
      expect((await get(`${g.url}${path}`)).headers['cache-status']).toMatch(/; hit/);
    }

    // With the origin down, nobody else is given Alice's stored page.
    o.kill();
    for (const path of ['/me/etag', '/me/lm']) {
      for (const headers of [{}, { 'x-user-token': 'tok-carol' }] as Record<string, string>[]) {
        const other = await get(`${g.url}${path}`, headers);
        expect(other.body).not.toContain('alice');
      }
      const own = await get(`${g.url}${path}`, alice);
      expect(own.body).toBe('account of alice');
    }
  });

  it('a request carrying a header naming who asks that joins a guest\'s fill under way gets its own page, not the guest\'s (attacker trial)', async () => {
    const o = await origin();
    // The guest's request is held in the origin until the other has joined its fill.
    let arrived = () => {};
    let hold = Promise.resolve();
    const held = () => {
      let release!: () => void;
      hold = new Promise<void>((r) => (release = r));
      const inFill = new Promise<void>((r) => (arrived = r));
      return { inFill, release };
    };
    const page = (headers: Record<string, string>) => async (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      const who = String(req.headers['x-user-token'] ?? 'tok-guest').slice(4);
      if (who === 'guest') {
        arrived();
        await hold;
      }
      res.writeHead(200, { 'content-type': 'text/html', ...headers });
      res.end(`account of ${who}`);
    };
    o.route('/me/etag', page({ etag: 'W/"v1"' }));
    o.route('/me/public', page({ 'cache-control': 'public, max-age=60' }));
    const g = await gateway({ sites: [siteFor([o.url])] });
    const collapsed = async () => Number(/crowdgate_collapsed_requests_total\{site="test"\} (\d+)/.exec(await (await request(`${g.adminUrl}/metrics`)).body.text())?.[1] ?? 0);

    // An ETag is no word that the page is everyone's: Alice gets her own. The origin said public:
    // she shares the fill, as any waiter does.
    for (const [path, aliceGets, fetches, joined] of [['/me/etag', 'alice', 2, 1], ['/me/public', 'guest', 1, 2]] as const) {
      const gate = held();
      const guest = get(`${g.url}${path}`);
      await gate.inFill;
      const alice = get(`${g.url}${path}`, { 'x-user-token': 'tok-alice' });
      await expect.poll(collapsed).toBe(joined);
      gate.release();
      expect((await guest).body).toBe('account of guest');
      expect((await alice).body, path).toBe(`account of ${aliceGets}`);
      expect(o.count(path)).toBe(fetches);
    }

    // Twenty of one tenant and two of another behind a guest's fill: one more fill each value
    // shares (its first), not one each (review: 21 origin fetches).
    o.route('/me/tenant', async (req, res) => {
      const who = String(req.headers['x-tenant'] ?? 'guest');
      if (who === 'guest') {
        arrived();
        await hold;
      }
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'max-age=60' });
      res.end(`catalogue of ${who}`);
    });
    const gate = held();
    const guest = get(`${g.url}/me/tenant`);
    await gate.inFill;
    const before = await collapsed();
    const acme = Array.from({ length: 20 }, () => get(`${g.url}/me/tenant`, { 'x-tenant': 'acme' }));
    const other = Array.from({ length: 2 }, () => get(`${g.url}/me/tenant`, { 'x-tenant': 'initech' }));
    await expect.poll(collapsed).toBe(before + 22);
    gate.release();
    expect((await guest).body).toBe('catalogue of guest');
    for (const a of await Promise.all(acme)) expect(a.body).toBe('catalogue of acme');
    for (const a of await Promise.all(other)) expect(a.body).toBe('catalogue of initech');
    // The guest's, one shared by acme's (or initech's) twenty, and at most the other value's two alone.
    expect(o.count('/me/tenant')).toBeLessThanOrEqual(4);
  });

  it('a crowd whose requests each carry their own CSRF token shares one fill; a flood of token values never pushes out the copy everyone else gets; our own targeted field shares a copy (review)', async () => {
    const o = await origin();
    o.route('/api/feed', { delayMs: 150, headers: { 'cache-control': 'max-age=60' }, body: 'feed' });
    o.route('/api/etag', { delayMs: 150, headers: { etag: '"e1"' }, body: 'etag' });
    o.route('/api/ours', { headers: { 'crowdgate-cache-control': 'max-age=600' }, body: (r) => `for ${String(r.headers['x-user-token'] ?? 'tok-guest').slice(4)}` });
    o.route('/api/guest', { headers: { 'cache-control': 'max-age=600' }, body: (r) => `for ${String(r.headers['x-user-token'] ?? 'tok-guest').slice(4)}` });
    const g = await gateway({ sites: [siteFor([o.url])] });
    // axios/AngularJS send X-XSRF-TOKEN, rails-ujs X-CSRF-Token, Django setups X-CSRFToken, on every request.
    for (const [path, name] of [['/api/feed', 'x-xsrf-token'], ['/api/etag', 'x-csrf-token'], ['/api/etag', 'x-csrftoken']] as const) {
      o.reset();
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => get(`${g.url}${path}`, { [name]: `csrf-${i}-${name}` })));
      expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200));
      expect(o.count(path), `${path} ${name}`).toBe(1);
    }
    // Crowdgate-Cache-Control is stripped before storing; the copy is still the origin's word for everyone.
    expect((await get(`${g.url}/api/ours`, { 'x-user-token': 'tok-alice' })).body).toBe('for alice');
    expect((await get(`${g.url}/api/ours`)).headers['cache-status']).toMatch(/; hit/);
    // The guest's copy, then 20 random token values (each its own copy): the guest copy stays.
    expect((await get(`${g.url}/api/guest`)).body).toBe('for guest');
    for (let i = 0; i < 20; i++) expect((await get(`${g.url}/api/guest`, { 'x-user-token': `tok-r${i}` })).body).toBe(`for r${i}`);
    const guest = await get(`${g.url}/api/guest`);
    expect(guest.body).toBe('for guest');
    expect(guest.headers['cache-status']).toMatch(/; hit/);
  });

  it('a response with Clear-Site-Data is never stored: one logout would log out every visitor of the URL (attacker trial)', async () => {
    const o = await origin();
    o.route('/logout', { headers: { 'cache-control': 'public, max-age=60', 'clear-site-data': '"cookies"' }, body: 'bye' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/logout`)).headers['clear-site-data']).toBe('"cookies"');
    const next = await get(`${g.url}/logout`);
    expect(next.headers['cache-status']).not.toMatch(/; hit/);
    expect(o.count('/logout')).toBe(2);
  });

  it('a page without cache headers still collapses a crowd whose requests differ only in per-request ids (CF-Ray, traceparent) or a header naming nobody (review)', async () => {
    const o = await origin();
    o.route('/post', { delayMs: 150, body: 'the post' }); // no cache headers
    const g = await gateway({ sites: [siteFor([o.url])] });
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        get(`${g.url}/post`, { 'cf-ray': `8f${i}a-AMS`, traceparent: `00-${String(i).padStart(32, '0')}-00f067aa0ba902b7-01`, 'x-junk': `j${i}` }),
      ),
    );
    expect(answers.map((a) => a.body)).toEqual(Array(6).fill('the post'));
    expect(o.count('/post')).toBe(1);
  });

  it('a private page whose Cache-Control is malformed (private; max-age=0) is never stored for the next visitor (attacker trial)', async () => {
    const o = await origin();
    const lastModified = new Date(Date.now() - 10 * 86_400_000).toUTCString();
    let n = 0;
    let served = 0;
    // The page names the session the origin read from its own cookie (not a header the fill
    // could carry): each answer is one user's.
    for (const cc of ['private; max-age=0', 'private no-store', 'no-store no-cache'])
      o.route(`/me/${n++}`, { headers: { 'cache-control': cc, 'last-modified': lastModified }, body: () => `session ${++served}` });
    // A route lifetime, as the quick start gives a WordPress site: heuristic freshness or not.
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'pages', match: { pathPrefix: '/' }, cache: { defaultTtlSeconds: 60 } }] })] });
    for (let i = 0; i < n; i++) {
      const first = await get(`${g.url}/me/${i}`);
      const next = await get(`${g.url}/me/${i}`);
      expect(next.body).not.toBe(first.body);
      expect(next.headers['cache-status']).not.toMatch(/; hit/);
      expect(o.count(`/me/${i}`)).toBe(2);
    }
  });

  it('fragment requests (htmx, Turbo Frames...) bypass the cache: the fragment is never stored as the page, nor the page served for the fragment', async () => {
    const o = await origin();
    // An htmx view: the same URL answers a fragment to HX-Request and the whole page otherwise,
    // without Vary (as most do).
    o.route('/list', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(req.headers['hx-request'] !== undefined ? '<li>one</li>' : req.headers['turbo-frame'] !== undefined ? '<turbo-frame id="f">one</turbo-frame>' : '<html><ul><li>one</li></ul></html>');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const fragment = await get(`${g.url}/list`, { 'hx-request': 'true' });
    expect(fragment.body).toBe('<li>one</li>');
    expect(fragment.headers['cache-status']).toMatch(/fwd=bypass/);
    const page = await get(`${g.url}/list`);
    expect(page.body).toBe('<html><ul><li>one</li></ul></html>');
    expect(page.headers['cache-status']).toMatch(/fwd=uri-miss/);
    expect((await get(`${g.url}/list`, { 'hx-request': 'true' })).body).toBe('<li>one</li>');
    expect((await get(`${g.url}/list`, { 'turbo-frame': 'f' })).body).toBe('<turbo-frame id="f">one</turbo-frame>');
    const again = await get(`${g.url}/list`);
    expect(again.body).toBe('<html><ul><li>one</li></ul></html>');
    expect(again.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/list')).toBe(4);
  });

  it("a Next.js RSC request bypasses when the origin's Vary leaves RSC out: the flight payload is never stored as the page (CVE-2025-49005)", async () => {
    const o = await origin();
    // A Next.js release that answered the flight payload to `RSC: 1` at the page's own URL
    // without `Vary: RSC`: a CDN stored it, and every visitor got text/x-component.
    o.route('/post', (req, res) => {
      const flight = req.headers['rsc'] === '1';
      res.writeHead(200, { 'content-type': flight ? 'text/x-component' : 'text/html', 'cache-control': 'public, s-maxage=60' });
      res.end(flight ? '0:["$","div",null,{}]' : '<html>post</html>');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const planted = await get(`${g.url}/post`, { rsc: '1', 'next-router-state-tree': '%5B%22%22%5D' });
    expect(planted.body).toBe('0:["$","div",null,{}]');
    expect(planted.headers['cache-status']).toMatch(/fwd=bypass/);
    expect((await get(`${g.url}/post`)).body).toBe('<html>post</html>');
    // With the page stored (no Vary), a flight request still bypasses: the page is not its answer.
    const flight = await get(`${g.url}/post`, { rsc: '1' });
    expect(flight.body).toBe('0:["$","div",null,{}]');
    expect(flight.headers['cache-status']).toMatch(/fwd=bypass/);
    const page = await get(`${g.url}/post`);
    expect(page.body).toBe('<html>post</html>');
    expect(page.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/post')).toBe(3);
  });

  it("a fragment request is cached as its own variant where the origin's Vary names its header, even when the fragment's own answer leaves Vary out", async () => {
    const o = await origin();
    const seen: string[] = [];
    // Django's vary_on_headers('HX-Request') on the page, forgotten on the fragment's answer.
    o.route('/list', (req, res) => {
      const fragment = req.headers['hx-request'] !== undefined;
      seen.push(fragment ? 'fragment' : 'page');
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', ...(fragment ? {} : { vary: 'HX-Request' }) });
      res.end(fragment ? '<li>one</li>' : '<html><ul><li>one</li></ul></html>');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    // Nothing stored yet: nothing says the origin keeps them apart, so the fragment bypasses.
    expect((await get(`${g.url}/list`, { 'hx-request': 'true' })).headers['cache-status']).toMatch(/fwd=bypass/);
    expect((await get(`${g.url}/list`)).body).toBe('<html><ul><li>one</li></ul></html>');
    const fill = await get(`${g.url}/list`, { 'hx-request': 'true' });
    expect(fill.body).toBe('<li>one</li>');
    expect(fill.headers['cache-status']).toMatch(/fwd=uri-miss|fwd=vary-miss|fwd=miss/);
    const hit = await get(`${g.url}/list`, { 'hx-request': 'true' });
    expect(hit.body).toBe('<li>one</li>');
    expect(hit.headers['cache-status']).toMatch(/; hit/);
    const page = await get(`${g.url}/list`);
    expect(page.body).toBe('<html><ul><li>one</li></ul></html>');
    expect(page.headers['cache-status']).toMatch(/; hit/);
    expect(seen).toEqual(['fragment', 'page', 'fragment']);
    // A sibling header the origin's Vary does not name (htmx's HX-Target picks which fragment):
    // the stored fragment is not its answer, nor is its answer stored for the others.
    const other = await get(`${g.url}/list`, { 'hx-request': 'true', 'hx-target': 'sidebar' });
    expect(other.headers['cache-status']).toMatch(/fwd=bypass/);
    expect(seen).toEqual(['fragment', 'page', 'fragment', 'fragment']);
    expect((await get(`${g.url}/list`, { 'hx-request': 'true' })).headers['cache-status']).toMatch(/; hit/);
  });

  it("a fragment's answer, without a Vary of its own, is stored varying on what the page's Vary names: each HX-Target its own fragment", async () => {
    const o = await origin();
    o.route('/panel', (req, res) => {
      const target = req.headers['hx-target'];
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', ...(req.headers['hx-request'] === undefined ? { vary: 'HX-Request, HX-Target' } : {}) });
      res.end(req.headers['hx-request'] === undefined ? '<html>panel</html>' : `<div id="${String(target)}">part</div>`);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/panel`)).body).toBe('<html>panel</html>');
    for (const target of ['a', 'b']) {
      const first = await get(`${g.url}/panel`, { 'hx-request': 'true', 'hx-target': target });
      expect(first.body).toBe(`<div id="${target}">part</div>`);
      expect(first.headers['cache-status'], target).not.toMatch(/fwd=bypass|; hit/);
    }
    for (const target of ['a', 'b']) {
      const again = await get(`${g.url}/panel`, { 'hx-request': 'true', 'hx-target': target });
      expect(again.body).toBe(`<div id="${target}">part</div>`);
      expect(again.headers['cache-status'], target).toMatch(/; hit/);
    }
    expect(o.count('/panel')).toBe(3);
  });

  it("a fragment request bypasses under fillHeaders.only: the fill would leave a sibling header out (HX-Target) and store one target's fragment for all (review)", async () => {
    const o = await origin();
    o.route('/panel', (req, res) => {
      const fragment = req.headers['hx-request'] !== undefined;
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', vary: 'HX-Request' });
      res.end(fragment ? `<div>target=${String(req.headers['hx-target'] ?? '-')}</div>` : '<html>panel</html>');
    });
    const g = await gateway({ sites: [siteFor([o.url], { fillHeaders: { only: ['X-Tenant-Lang'] } })] });
    expect((await get(`${g.url}/panel`)).body).toBe('<html>panel</html>');
    for (const target of ['a', 'b']) {
      const r = await get(`${g.url}/panel`, { 'hx-request': 'true', 'hx-target': target });
      expect(r.body, target).toBe(`<div>target=${target}</div>`);
      expect(r.headers['cache-status'], target).toMatch(/fwd=bypass/);
    }
  });

  it('a fragment request never collapses on a plain request\'s fill, even when only error copies tell the key\'s Vary (review)', async () => {
    const o = await origin();
    let exists = false;
    o.route('/c', (req, res) => {
      const fragment = req.headers['hx-request'] !== undefined;
      if (!exists) {
        res.writeHead(404, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', vary: 'HX-Request, Accept-Language' });
        return res.end('NOT FOUND');
      }
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', vary: fragment ? 'HX-Request, Accept-Language' : 'Accept-Language' });
        res.end(fragment ? 'FRAGMENT' : 'PAGE');
      }, 300);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/c`, { 'accept-language': 'en' })).status).toBe(404);
    exists = true;
    const plain = get(`${g.url}/c`, { 'accept-language': 'de' });
    await new Promise((r) => setTimeout(r, 50));
    const fragment = get(`${g.url}/c`, { 'accept-language': 'de', 'hx-request': 'true' });
    const [p, f] = await Promise.all([plain, fragment]);
    expect(p.body).toBe('PAGE');
    expect(f.body).toBe('FRAGMENT');
  });

  it("a fragment request carrying a header the stored copies do not vary on bypasses: Inertia's partial reload never answers a full visit, nor a full visit a partial reload", async () => {
    const o = await origin();
    const seen: string[] = [];
    // Inertia's Laravel adapter: Vary: X-Inertia on every answer; a partial reload
    // (X-Inertia-Partial-Data) answers only the props it names.
    o.route('/users', (req, res) => {
      const partial = req.headers['x-inertia-partial-data'];
      seen.push(req.headers['x-inertia'] === undefined ? 'page' : partial === undefined ? 'visit' : `partial ${String(partial)}`);
      const vary = req.headers['x-inertia-partial-data'] !== undefined ? 'X-Inertia, X-Inertia-Partial-Data' : 'X-Inertia';
      res.writeHead(200, { 'content-type': req.headers['x-inertia'] ? 'application/json' : 'text/html', 'cache-control': 'public, max-age=60', vary });
      res.end(req.headers['x-inertia'] === undefined ? '<html>users</html>' : partial === undefined ? '{"props":{"users":[1],"teams":[2]}}' : '{"props":{"users":[1]}}');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/users`)).body).toBe('<html>users</html>');
    // The stored page varies on X-Inertia only: a partial reload carries a header it does not name.
    const partial = await get(`${g.url}/users`, { 'x-inertia': 'true', 'x-inertia-partial-data': 'users' });
    expect(partial.body).toBe('{"props":{"users":[1]}}');
    expect(partial.headers['cache-status']).toMatch(/fwd=bypass/);
    const visit = await get(`${g.url}/users`, { 'x-inertia': 'true' });
    expect(visit.body).toBe('{"props":{"users":[1],"teams":[2]}}');
    expect(visit.headers['cache-status']).not.toMatch(/fwd=bypass/);
    const again = await get(`${g.url}/users`, { 'x-inertia': 'true' });
    expect(again.body).toBe('{"props":{"users":[1],"teams":[2]}}');
    expect(again.headers['cache-status']).toMatch(/; hit/);
    expect((await get(`${g.url}/users`, { 'x-inertia': 'true', 'x-inertia-partial-data': 'users' })).body).toBe('{"props":{"users":[1]}}');
    expect(seen).toEqual(['page', 'partial users', 'visit', 'partial users']);
  });

  it("a CDN's country header never reaches a shared fill: one country's page is not stored for everyone", async () => {
    const o = await origin();
    const seen: string[] = [];
    // Geo-personalised without saying so and without echoing the value.
    o.route('/home', (req, res) => {
      seen.push(String(req.headers['cf-ipcountry'] ?? '-'));
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(req.headers['cf-ipcountry'] === 'DE' ? 'Willkommen' : 'Welcome');
    });
    const g = await gateway({ trustedProxies: ['127.0.0.1', '::1'], sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/home`, { 'cf-ipcountry': 'DE' })).body).toBe('Welcome');
    expect((await get(`${g.url}/home`, { 'cf-ipcountry': 'US' })).body).toBe('Welcome');
    expect(seen).toEqual(['-']);
  });

  it('a page that varies on Cookie is not served from the cookie-less copy to a request with its own cookies (RFC 9111 §4.1); analytics cookies do not count', async () => {
    const o = await origin();
    o.route('/me', (req, res) => {
      const jwt = /(?:^|; )jwt=([^;]+)/.exec(String(req.headers.cookie ?? ''))?.[1];
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', vary: 'Cookie' });
      res.end(jwt ? `hello ${jwt}` : 'please log in');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    // Cold: the logged-in request leads the fill (sent without its cookie), then asks alone.
    const first = await get(`${g.url}/me`, { cookie: 'jwt=alice' });
    expect(first.body).toBe('hello alice');
    const anonymous = await get(`${g.url}/me`);
    expect(anonymous.body).toBe('please log in');
    expect(anonymous.headers['cache-status']).toMatch(/; hit/);
    // Warm: a hit for the anonymous copy is never the logged-in answer.
    const again = await get(`${g.url}/me`, { cookie: 'jwt=bob; _ga=GA1.1.1' });
    expect(again.body).toBe('hello bob');
    expect(again.headers['cache-status']).not.toMatch(/; hit/);
    // And it says why (a bare "pass" left a wiki's returning visitors guessing: new-user trial).
    expect(again.headers['cache-status']).toMatch(/detail="pass cookies the fill was made without/);
    // Analytics cookies alone are no reason to reach the origin.
    const tracked = await get(`${g.url}/me`, { cookie: '_ga=GA1.1.1; _gid=GA1.2.3' });
    expect(tracked.body).toBe('please log in');
    expect(tracked.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/me')).toBe(3);
    // The cold request asked the origin twice (the shared fill, then its own), which is no retry
    // after a failure: crowdgate_origin_retries_total counted it (new-operator trial).
    expect(g.accessLogs().find((l) => l.path === '/me')?.originAttempts).toBe(2);
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).not.toMatch(/crowdgate_origin_retries_total\{site="test"\} [1-9]/);
  });

  it('a path whose fills answer private pages (a search): another query (or path of its directory) with its own cookies or a Range goes to the origin once, as it came, not as a fill first (new-user trial: each ran twice)', async () => {
    const o = await origin();
    const seen: string[] = [];
    o.route('/search', (req, res) => {
      const url = new URL(String(req.url), 'http://x');
      const q = url.searchParams.get('q')!;
      seen.push(`${q} ${req.headers.cookie ?? '-'} ${req.headers.range ?? '-'}`);
      const cacheable = q === 'stored';
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': cacheable ? 'public, max-age=60' : 'private' });
      res.end(`results for ${q} (${req.headers.cookie ?? 'no cookie'})`);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    // The path's first: the fill (without the cookie), then the request as it came.
    expect((await get(`${g.url}/search?q=a`, { cookie: 'theme=dark' })).body).toBe('results for a (theme=dark)');
    expect(seen).toEqual(['a - -', 'a theme=dark -']);
    seen.length = 0;
    // Its other queries: once, as they came.
    const b = await get(`${g.url}/search?q=b`, { cookie: 'theme=dark' });
    expect(b.body).toBe('results for b (theme=dark)');
    expect(b.headers['cache-status']).toMatch(/detail="pass path uncacheable/);
    const c = await get(`${g.url}/search?q=c`, { range: 'bytes=0-6' });
    expect(c.status).toBe(200); // (the origin ignores Range)
    expect(seen).toEqual(['b theme=dark -', 'c - bytes=0-6']);
    seen.length = 0;
    // Nothing of theirs is stored: an anonymous request of the same query gets its own page.
    expect((await get(`${g.url}/search?q=b`)).body).toBe('results for b (no cookie)');
    // A storable answer on the path ends it: the next query with a cookie is a fill again.
    expect((await get(`${g.url}/search?q=stored`)).headers['cache-status']).toMatch(/stored/);
    seen.length = 0;
    expect((await get(`${g.url}/search?q=d`, { cookie: 'theme=dark' })).body).toBe('results for d (theme=dark)');
    expect(seen).toEqual(['d - -', 'd theme=dark -']);
    // Terms in the path (`/find/term`): its directory is marked too. And pages without cache
    // headers (WordPress): a copy a request with cookies of its own never gets.
    const found: string[] = [];
    for (const term of ['x', 'y'])
      o.route(`/find/${term}`, (req, res) => {
        found.push(`${term} ${req.headers.cookie ?? '-'}`);
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(`found ${term} (${req.headers.cookie ?? 'no cookie'})`);
      });
    expect((await get(`${g.url}/find/x`, { cookie: 'theme=dark' })).body).toBe('found x (theme=dark)');
    expect((await get(`${g.url}/find/y`, { cookie: 'theme=dark' })).body).toBe('found y (theme=dark)');
    expect(found).toEqual(['x -', 'x theme=dark', 'y theme=dark']);
  });

  it('a path whose copies vary on Cookie passes requests with cookies of their own straight for 10 minutes, not hitForPassSeconds; its directory for hitForPassSeconds (new-user trial: every Django visitor carries csrftoken, and each page of the long tail cost two requests)', async () => {
    const o = await origin();
    const seen: string[] = [];
    o.setHandler((req, res) => {
      seen.push(`${req.url} ${req.headers.cookie ?? '-'}`);
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', vary: 'Cookie' });
      res.end(`post ${req.url} (${req.headers.cookie ?? 'no cookie'})`);
    });
    const clock = new ManualClock(Date.now());
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const token = { cookie: 'csrftoken=abc123' };
    // The directory's first: the fill (without the cookie), then the request as it came.
    expect((await get(`${g.url}/post/one/`, token)).body).toBe('post /post/one/ (csrftoken=abc123)');
    expect(seen).toEqual(['/post/one/ -', '/post/one/ csrftoken=abc123']);
    // A minute later (past hitForPassSeconds), another query of it: once, as it came.
    clock.advance(60_000);
    seen.length = 0;
    const two = await get(`${g.url}/post/one/?page=2`, token);
    expect(two.body).toBe('post /post/one/?page=2 (csrftoken=abc123)');
    expect(two.headers['cache-status']).toMatch(/detail="pass path uncacheable/);
    expect(seen).toEqual(['/post/one/?page=2 csrftoken=abc123']);
    // Another post of the directory: its mark was hitForPassSeconds' (its pages may be anyone's).
    seen.length = 0;
    await get(`${g.url}/post/two/`, token);
    expect(seen).toEqual(['/post/two/ -', '/post/two/ csrftoken=abc123']);
    // Past the 10 minutes, a fill first again.
    clock.advance(10 * 60_000);
    seen.length = 0;
    await get(`${g.url}/post/one/?page=3`, token);
    expect(seen).toEqual(['/post/one/?page=3 -', '/post/one/?page=3 csrftoken=abc123']);
  });

  it('a path\'s mark never sends a crowd to the origin one by one: the root is no directory, a Range needs its own path\'s mark, and one pass per key at a time (review)', async () => {
    const o = await origin();
    const seen: string[] = [];
    const page = (cc: string, delayMs = 0) => (req: http.IncomingMessage, res: http.ServerResponse) => {
      seen.push(`${req.url} ${req.headers.cookie ?? '-'} ${req.headers.range ?? '-'}`);
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/html', 'cache-control': cc });
        res.end(`page ${req.url}`);
      }, delayMs);
    };
    o.route('/search', page('private'));
    o.route('/about', page('public, max-age=60'));
    o.route('/podcast/list', page('private'));
    o.route('/podcast/ep1.mp3', page('public, max-age=60'));
    o.route('/news', (req, res) => page(String(req.url).includes('private') ? 'private' : 'public, max-age=60', 200)(req, res));
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/search?q=x`); // marks /search (and no directory: the root)
    await get(`${g.url}/about`, { cookie: 'theme=dark' });
    expect(seen.filter((l) => l.startsWith('/about'))).toEqual(['/about - -']); // a fill, not a pass
    await get(`${g.url}/podcast/list`); // marks /podcast/list and /podcast/
    await get(`${g.url}/podcast/ep1.mp3`, { range: 'bytes=0-3' });
    expect(seen.filter((l) => l.startsWith('/podcast/ep1'))).toEqual(['/podcast/ep1.mp3 - -']); // stored whole
    await get(`${g.url}/news?id=private`); // marks /news
    seen.length = 0;
    const crowd = await Promise.all(Array.from({ length: 5 }, () => get(`${g.url}/news?id=1`, { cookie: 'theme=dark' })));
    for (const r of crowd) expect(r.body).toBe('page /news?id=1');
    // The first goes as it came; the others collapse on one fill, stored for all.
    expect(seen.length).toBe(2);
  });

  it('cookies a route says never change its pages (key.ignoreCookies) do not pass a request: a wiki\'s returning visitor gets the shared copy (new-user trial)', async () => {
    const o = await origin();
    o.route('/wiki/Main', (req, res) => {
      const session = /(?:^|; )wiki_session=([^;]+)/.exec(String(req.headers.cookie ?? ''))?.[1];
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 's-maxage=600, must-revalidate, max-age=0', vary: 'Accept-Encoding, Cookie' });
      res.end(session ? `hello ${session}` : 'the main page');
    });
    const routes = [{ name: 'default', cache: { key: { ignoreCookies: ['*UserName'] } } }];
    const g = await gateway({ sites: [siteFor([o.url], { routes, bypassCookies: [] })] });
    expect((await get(`${g.url}/wiki/Main`)).body).toBe('the main page');
    const returning = await get(`${g.url}/wiki/Main`, { cookie: 'wikiUserName=Bob; _ga=GA1.1.1' });
    expect(returning.body).toBe('the main page');
    expect(returning.headers['cache-status']).toMatch(/; hit/);
    // Any other cookie still passes the request as it came.
    const session = await get(`${g.url}/wiki/Main`, { cookie: 'wikiUserName=Bob; wiki_session=bob' });
    expect(session.body).toBe('hello bob');
    expect(session.headers['cache-status']).not.toMatch(/; hit/);
    expect(o.count('/wiki/Main')).toBe(2);
  });

  it('a request with a cookie outside bypassCookies gets its own answer when the page cannot be shared or came without cache headers (new-user trial)', async () => {
    const o = await origin();
    o.route('/cart', (req, res) => {
      const cart = new RegExp('(?:^|;\\s*)cart_id=([^;]*)').exec(String(req.headers.cookie ?? ''))?.[1] ?? 'none';
      res.writeHead(200, { 'content-type': 'text/plain' }); // no cache headers at all
      res.end(`Cart ${cart}`);
    });
    o.route('/account', (req, res) => {
      const who = new RegExp('(?:^|;\\s*)remember_token=([^;]*)').exec(String(req.headers.cookie ?? ''))?.[1];
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'private', ...(who ? {} : { 'set-cookie': 'guest=1; Path=/' }) });
      res.end(`Account of ${who ?? 'anonymous'}`);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/cart`, { cookie: 'cart_id=alice' })).body).toBe('Cart alice');
    expect((await get(`${g.url}/cart`)).body).toBe('Cart none');
    expect((await get(`${g.url}/cart`, { cookie: 'cart_id=bob; _ga=GA1.1' })).body).toBe('Cart bob');
    expect((await get(`${g.url}/cart`, { cookie: '_ga=GA1.1' })).body).toBe('Cart none'); // analytics cookies do not count
    const account = await get(`${g.url}/account`, { cookie: 'remember_token=alice' });
    expect(account.body).toBe('Account of alice');
    expect(account.headers['set-cookie']).toBeUndefined();
    expect((await get(`${g.url}/account`)).body).toBe('Account of anonymous');
    expect((await get(`${g.url}/account`, { cookie: 'remember_token=carol' })).body).toBe('Account of carol');
    // With the origin down, the page without the cookies answers, as it does for everyone (review).
    o.kill();
    const down = await get(`${g.url}/cart`, { cookie: 'cart_id=dave' });
    expect(down.status).toBe(200);
    expect(down.body).toBe('Cart none');
    expect(down.headers['cache-status']).toMatch(/detail="stale-/);
  });

  it('WordPress password reset works: its wp-resetpass-* cookie bypasses the cache by default', async () => {
    const o = await origin();
    // wp-login.php?action=rp reads the key from the cookie step one set (path /wp-login.php).
    o.route('/wp-login.php', (req, res) => {
      const cookie = String(req.headers.cookie ?? '');
      const ok = /(^|; )wp-resetpass-[0-9a-f]+=sue%3Akey1/.test(cookie);
      res.writeHead(ok ? 200 : 302, ok ? { 'content-type': 'text/html' } : { location: '/wp-login.php?action=lostpassword&error=invalidkey' });
      res.end(ok ? '<form name="resetpassform"><input name="rp_key" value="key1"></form>' : '');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const form = await get(`${g.url}/wp-login.php?action=rp`, { cookie: 'wp-resetpass-0a1b2c=sue%3Akey1' });
    expect(form.status).toBe(200);
    expect(form.body).toContain('rp_key');
    expect(form.headers['cache-status']).toMatch(/fwd=bypass/);
  });

  it('a route with ignoreSessionCookies caches a logged-in user\'s scripts for everyone, fills them without cookies, and leaves other routes personal', async () => {
    const o = await origin();
    o.route('/wp-includes/js/editor.js', (req, res) => {
      res.writeHead(200, { 'content-type': 'application/javascript', 'last-modified': 'Tue, 01 Dec 2026 00:00:00 GMT' });
      res.end(`/* cookie: ${req.headers.cookie ?? 'none'} */ ${'editor();'.repeat(200)}`);
    });
    o.route('/wp-admin/', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`dashboard for ${req.headers.cookie ?? 'nobody'}`);
    });
    const assets = { name: 'assets', match: { pathRegex: '^/wp-includes/.*\\.(js|css)$' }, cache: { defaultTtlSeconds: 3600, ignoreSessionCookies: true } };
    const g = await gateway({ sites: [siteFor([o.url], { routes: [assets] })] });
    const session = 'wordpress_logged_in_abc=admin%7Ctoken';
    const first = await get(`${g.url}/wp-includes/js/editor.js`, { cookie: session, 'accept-encoding': 'gzip' });
    expect(first.status).toBe(200);
    expect(first.headers['cache-status']).toMatch(/fwd=uri-miss[^]*stored/);
    expect(first.headers['content-encoding']).toBe('gzip'); // shared, so compressed like any other copy
    expect(o.requests.find((r) => r.url === '/wp-includes/js/editor.js')?.headers.cookie).toBeUndefined();
    const anonymous = await get(`${g.url}/wp-includes/js/editor.js`);
    expect(anonymous.headers['cache-status']).toMatch(/; hit/);
    expect(anonymous.body).toContain('/* cookie: none */');
    const again = await get(`${g.url}/wp-includes/js/editor.js`, { cookie: session });
    expect(again.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/wp-includes/js/editor.js')).toBe(1);
    // Elsewhere the session still bypasses, with its cookie.
    const admin = await get(`${g.url}/wp-admin/`, { cookie: session });
    expect(admin.headers['cache-status']).toMatch(/fwd=bypass/);
    expect(admin.body).toBe(`dashboard for ${session}`);
  });

  it('a route with ignoreSessionCookies answers a session holder from a copy that varies on Cookie (DokuWiki\'s styles); a cookie of another kind still goes to the origin', async () => {
    const o = await origin();
    o.route('/lib/exe/css.php', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/css', 'cache-control': 'public, max-age=31536000', vary: 'Cookie' });
      res.end(`/* cookie: ${req.headers.cookie ?? 'none'} */ ${'.a{color:red}'.repeat(100)}`);
    });
    const assets = { name: 'assets', match: { pathPrefix: '/lib/exe/' }, cache: { ignoreSessionCookies: true } };
    const g = await gateway({ sites: [siteFor([o.url], { bypassCookies: ['DokuWiki', 'DW*'], routes: [assets] })] });
    const first = await get(`${g.url}/lib/exe/css.php`, { cookie: 'DokuWiki=visitor1' });
    expect(first.headers['cache-status']).toMatch(/fwd=uri-miss[^]*stored/);
    expect(first.body).toContain('/* cookie: none */');
    for (const cookie of ['DokuWiki=visitor2', 'DokuWiki=visitor3; DW0a1b=editor', undefined]) {
      const again = await get(`${g.url}/lib/exe/css.php`, cookie === undefined ? {} : { cookie });
      expect(again.headers['cache-status'], cookie).toMatch(/; hit/);
    }
    expect(o.count('/lib/exe/css.php')).toBe(1);
    // A new URL of the path (DokuWiki's `?tseed=` after a config change): its path is marked as
    // answered with copies for no cookie holder (they vary on Cookie), yet a session holder's
    // request is no cookie holder's here: filled once and shared, never passed to the origin
    // for the mark's 10 minutes (DokuWiki trial: 300 of 300 visitors sent to PHP).
    const seeded = await Promise.all(['visitor4', 'visitor5', 'visitor6'].map((v) => get(`${g.url}/lib/exe/css.php?tseed=2`, { cookie: `DokuWiki=${v}` })));
    expect(seeded.map((r) => r.headers['cache-status']).join('\n')).not.toMatch(/pass path uncacheable/);
    expect((await get(`${g.url}/lib/exe/css.php?tseed=2`, { cookie: 'DokuWiki=visitor7' })).headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/lib/exe/css.php')).toBe(2);
    // A cookie that is not a session's may change a page that varies on Cookie: as it came.
    const themed = await get(`${g.url}/lib/exe/css.php`, { cookie: 'DokuWiki=visitor2; theme=dark' });
    expect(themed.headers['cache-status']).toMatch(/pass cookies the fill was made without/);
    expect(themed.body).toContain('/* cookie: DokuWiki=visitor2; theme=dark */');
    expect(o.count('/lib/exe/css.php')).toBe(3);
    // An answer that cannot be shared (private, a Set-Cookie) is the fill's request's alone: a
    // session holder is still sent as it came, never given the anonymous answer and its
    // Set-Cookie, which would log it out (review).
    o.route('/lib/exe/ajax.php', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'private', 'set-cookie': 'DokuWiki=fresh-anonymous; path=/' });
      res.end(`cookie seen: ${req.headers.cookie ?? 'none'}`);
    });
    const own = await get(`${g.url}/lib/exe/ajax.php`, { cookie: 'DokuWiki=alice-session' });
    expect(own.body).toBe('cookie seen: DokuWiki=alice-session');
  });

  it('a shared fill never carries override, rewrite or other unkeyed headers to the origin', async () => {
    const o = await origin();
    // Next.js's internal x-middleware-subrequest skips its middleware (auth included); its
    // prefetch and route-match headers made it answer an empty or static page.
    const unkeyed = ['x-original-url', 'x-rewrite-url', 'x-http-method-override', 'x-forwarded-scheme', 'forwarded', 'x-forwarded-prefix', 'x-host',
      'x-forwarded-pathbase', 'x-middleware-subrequest', 'x-middleware-prefetch', 'x-now-route-matches', 'x-nextjs-data', 'x-matched-path', 'x-invoke-path',
      'x-invoke-query', 'x-invoke-status', 'x-invoke-output', 'x-envoy-original-path', 'early-data'];
    o.route('/page', reflecting([...unkeyed, 'accept-language', 'user-agent']));
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/page`, {
      'x-original-url': '/admin',
      'x-rewrite-url': '/admin',
      'x-http-method-override': 'DELETE',
      'x-forwarded-scheme': 'javascript',
      forwarded: 'for=1.2.3.4;host=evil.example',
      'x-forwarded-prefix': '/evil',
      'x-host': 'evil.example',
      'x-forwarded-pathbase': '/evil',
      'x-middleware-subrequest': 'middleware:middleware:middleware:middleware:middleware',
      'x-middleware-prefetch': '1',
      'x-now-route-matches': '1',
      // Next.js turns a middleware redirect's Location into x-nextjs-redirect for this one
      // (GHSA-3g8h-86w9-wvmq): stored, every visitor got a redirect no browser follows (attacker trial).
      'x-nextjs-data': '1',
      'x-matched-path': '/admin',
      'x-invoke-path': '/admin',
      'x-invoke-query': '%7B%7D',
      'x-invoke-status': '404',
      'x-invoke-output': '/admin',
      'x-envoy-original-path': '/admin',
      'early-data': '1',
      'accept-language': 'fr',
      'user-agent': 'ua-1',
    });
    for (const name of unkeyed) expect(first.body).toContain(`${name}=-`);
    expect(first.body).toContain('accept-language=fr');
    const seen = o.requests.find((r) => r.path === '/page')!;
    for (const name of unkeyed) expect(seen.headers[name]).toBeUndefined();
    expect(seen.method).toBe('GET');
  });

  it('a framework-internal header a client sends (Nuxt\'s X-Nuxt-No-SSR, Symfony\'s Surrogate-Capability) never reaches a fill: the next visitor gets the rendered page', async () => {
    const o = await origin();
    // What the frameworks do with them, without echoing the value: Nuxt 2 serves its empty SPA
    // shell (`noSSR = req.spa || req.headers['x-nuxt-no-ssr']`); Symfony's HttpCache hands the
    // ESI tags to a surrogate that claims `ESI/1.0` instead of rendering the fragments.
    o.route('/nuxt/article', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(req.headers['x-nuxt-no-ssr'] ? '<div id="__nuxt"></div>' : '<div id="__nuxt"><article>rendered</article></div>');
    });
    o.route('/symfony/product', (req, res) => {
      const esi = /ESI\/1\.0/.test(String(req.headers['surrogate-capability'] ?? ''));
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', ...(esi ? { 'surrogate-control': 'content="ESI/1.0"' } : {}) });
      res.end(esi ? '<main><esi:include src="/_fragment?price" /></main>' : '<main><p>price 42</p></main>');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/nuxt/article`, { 'x-nuxt-no-ssr': '1' });
    await get(`${g.url}/symfony/product`, { 'surrogate-capability': 'x="ESI/1.0"' });
    expect(o.requests.find((r) => r.path === '/nuxt/article')!.headers['x-nuxt-no-ssr']).toBeUndefined();
    expect(o.requests.find((r) => r.path === '/symfony/product')!.headers['surrogate-capability']).toBeUndefined();
    const article = await get(`${g.url}/nuxt/article`);
    expect(article.body).toContain('<article>rendered</article>');
    expect(article.headers['cache-status']).toMatch(/; hit/);
    const product = await get(`${g.url}/symfony/product`);
    expect(product.body).toBe('<main><p>price 42</p></main>');
    expect(product.headers['cache-status']).toMatch(/; hit/);
  });

  it('no header a device detector takes for a phone (Mobile_Detect\'s whole list) reaches a fill: the next visitor gets the desktop page', async () => {
    const o = await origin();
    // Mobile_Detect's checkHttpHeadersForMobile (the PHP library in many WordPress themes and
    // plugins): the mere presence of one of these is a phone, UA-CPU when it says ARM; and it
    // reads the User-Agent from these others too.
    const presence = ['x-wap-profile', 'x-wap-clientid', 'wap-connection', 'profile', 'x-operamini-phone-ua', 'x-nokia-ipaddress', 'x-nokia-gateway-id',
      'x-orange-id', 'x-vodafone-3gpdpcontext', 'x-huawei-userid', 'ua-os', 'x-mobile-gateway', 'x-att-deviceid'];
    const userAgents = ['x-device-user-agent', 'x-original-user-agent', 'x-skyfire-phone', 'x-bolt-phone-ua', 'device-stock-ua', 'x-ucbrowser-device-ua'];
    const isMobile = (h: Record<string, string | string[] | undefined>) =>
      presence.some((n) => h[n] !== undefined) || /ARM/.test(String(h['ua-cpu'] ?? '')) || userAgents.some((n) => /iPhone/.test(String(h[n] ?? '')));
    const handler = (req: { headers: Record<string, string | string[] | undefined> }, res: import('node:http').ServerResponse) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(isMobile(req.headers) ? '<body class="mobile">TEMPLATE mobile</body>' : '<body class="desktop">TEMPLATE desktop</body>');
    };
    const sent: [string, string][] = [...presence.map((n): [string, string] => [n, 'x']), ['ua-cpu', 'ARM'], ...userAgents.map((n): [string, string] => [n, 'iPhone'])];
    for (const [name] of sent) o.route(`/md/${name}`, handler);
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const [name, value] of sent) {
      await get(`${g.url}/md/${name}`, { [name]: value, 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64)' });
      const seen = o.requests.find((r) => r.path === `/md/${name}`)!;
      expect(seen.headers[name], name).toBeUndefined();
      const victim = await get(`${g.url}/md/${name}`, { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64)' });
      expect(victim.body, name).toBe('<body class="desktop">TEMPLATE desktop</body>');
      expect(victim.headers['cache-status'], name).toMatch(/; hit/);
    }
  });

  it('an Accept naming a type a device detector takes for a phone (WAP, OBML, BlackBerry) gets its own variant: the next visitor gets the desktop page', async () => {
    const o = await origin();
    // Mobile_Detect reads these four in HTTP_ACCEPT as a phone, wherever they stand in the list.
    const types = ['text/vnd.wap.wml', 'application/vnd.wap.xhtml+xml', 'application/x-obml2d', 'application/vnd.rim.html'];
    const handler = (req: { headers: Record<string, string | string[] | undefined> }, res: import('node:http').ServerResponse) => {
      const mobile = types.some((t) => String(req.headers['accept'] ?? '').includes(t));
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(mobile ? '<body class="mobile">TEMPLATE mobile</body>' : '<body class="desktop">TEMPLATE desktop</body>');
    };
    for (const t of types) o.route(`/wap/${t}`, handler);
    const g = await gateway({ sites: [siteFor([o.url])] });
    const browser = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
    for (const t of types) {
      const phone = await get(`${g.url}/wap/${t}`, { accept: `text/html, ${t}` });
      expect(phone.body, t).toBe('<body class="mobile">TEMPLATE mobile</body>');
      const victim = await get(`${g.url}/wap/${t}`, { accept: browser });
      expect(victim.body, t).toBe('<body class="desktop">TEMPLATE desktop</body>');
      const next = await get(`${g.url}/wap/${t}`, { accept: browser });
      expect(next.body, t).toBe('<body class="desktop">TEMPLATE desktop</body>');
      expect(next.headers['cache-status'], t).toMatch(/; hit/);
    }
    expect(o.requests.filter((r) => r.path.startsWith('/wap/'))).toHaveLength(2 * types.length);
  });

  it('a shared fill carries no client-address header, no underscore-named header and no client Via', async () => {
    const o = await origin();
    const names = ['x-real-ip', 'true-client-ip', 'x_forwarded_host', 'x.original.url', 'x-forwarded-protocol', 'via', 'x-scheme', 'x-originating-ip', 'x-custom'];
    o.route('/page', reflecting(names));
    // The test client (127.0.0.1) is not a trusted proxy here: its Via is its own text.
    const g = await gateway({ trustedProxies: [], sites: [siteFor([o.url])] });
    const planted = await get(`${g.url}/page`, {
      'x-real-ip': '6.6.6.6',
      'true-client-ip': '6.6.6.6',
      x_forwarded_host: 'evil.example',
      // PHP's built-in server reads this as HTTP_X_ORIGINAL_URL (dots become underscores).
      'x.original.url': '/maintenance',
      'x-forwarded-protocol': 'javascript',
      via: '1.0 <img src=x onerror=alert(1)>',
      'x-scheme': 'javascript',
      'x-originating-ip': '6.6.6.6',
      'x-custom': 'kept',
    });
    expect(planted.body).toBe('x-real-ip=- true-client-ip=- x_forwarded_host=- x.original.url=- x-forwarded-protocol=- via=1.1 crowdgate x-scheme=- x-originating-ip=- x-custom=kept');
  });

  it('a pass-through from a client that is not a trusted proxy carries none of its client-address claims; from a trusted one they pass', async () => {
    const o = await origin();
    const g = await gateway({ trustedProxies: ['10.0.0.1'], sites: [siteFor([o.url])] });
    // `X.Real.IP` and `X_Real_IP` are HTTP_X_REAL_IP to PHP: names other than letters, digits
    // and hyphens are never passed on (nginx's default), from any client.
    const claims = { 'x-real-ip': '127.0.0.1', 'true-client-ip': '127.0.0.1', 'cf-connecting-ip': '127.0.0.1', forwarded: 'for=127.0.0.1', 'x.real.ip': '127.0.0.1', x_real_ip: '127.0.0.1', 'x-custom': 'kept' };
    await request(`${g.url}/api/post`, { method: 'POST', headers: claims, body: 'x' }).then((r) => r.body.text());
    const seen = o.requests.find((r) => r.path === '/api/post')!;
    expect(seen.method).toBe('POST');
    for (const name of ['x-real-ip', 'true-client-ip', 'cf-connecting-ip', 'forwarded', 'x.real.ip', 'x_real_ip']) expect(seen.headers[name], name).toBeUndefined();
    expect(seen.headers['x-custom']).toBe('kept');
    const trusting = await gateway({ trustedProxies: ['127.0.0.1', '::1'], sites: [siteFor([o.url])] });
    await request(`${trusting.url}/api/trusted`, { method: 'POST', headers: claims, body: 'x' }).then((r) => r.body.text());
    const trusted = o.requests.find((r) => r.path === '/api/trusted')!;
    expect(trusted.headers['x-real-ip']).toBe('127.0.0.1');
    expect(trusted.headers['x.real.ip']).toBeUndefined();
  });

  it('the Proxy request header (httpoxy) never reaches the origin: not on a fill, not on a pass-through, not even from a trusted proxy', async () => {
    const o = await origin();
    o.route('/page', reflecting(['proxy']));
    // The test client (127.0.0.1) is a trusted proxy here: Proxy is dropped whoever sends it.
    const g = await gateway({ trustedProxies: ['127.0.0.1', '::1'], sites: [siteFor([o.url], { routes: [{ name: 'key-names-it', match: { pathPrefix: '/keyed' }, cache: { key: { headers: ['Proxy'] } } }] })] });
    const proxy = { proxy: 'http://attacker.example:3128/' };
    const fill = await get(`${g.url}/page`, proxy);
    expect(fill.body).toBe('proxy=-');
    await get(`${g.url}/keyed/page`, proxy);
    await request(`${g.url}/api/post`, { method: 'POST', headers: proxy, body: 'x' }).then((r) => r.body.text());
    await get(`${g.url}/page?bypass`, { ...proxy, authorization: 'Bearer x' });
    const seen = o.requests.filter((r) => ['/page', '/keyed/page', '/api/post'].includes(r.path));
    expect(seen.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /page', 'GET /keyed/page', 'POST /api/post', 'GET /page?bypass']);
    for (const r of seen) expect(r.headers.proxy, r.url).toBeUndefined();
  });

  it('a header the key template covers reaches the fill even when the client\'s Connection names it', async () => {
    const o = await origin();
    o.route('/home', reflecting(['x-device']));
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'by-device', match: { pathPrefix: '/' }, cache: { key: { headers: ['X-Device'] } } }] })],
    });
    const planted = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(new URL(g.url).port), '127.0.0.1', () =>
        socket.write('GET /home HTTP/1.1\r\nHost: blog.example.com\r\nX-Device: mobile\r\nConnection: close, x-device\r\n\r\n'),
      );
      let out = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (out += d));
      socket.on('end', () => resolve(out));
      socket.on('error', reject);
    });
    expect(planted).toContain('x-device=mobile');
    const mobile = await get(`${g.url}/home`, { host: 'blog.example.com', 'x-device': 'mobile' });
    expect(mobile.body).toBe('x-device=mobile');
    expect(mobile.headers['cache-status']).toMatch(/; hit/);
  });

  it('what a browser says about the fetch (Referer, Sec-*, X-Requested-With) never reaches a fill, and its page is stored', async () => {
    const o = await origin();
    const context = ['referer', 'sec-fetch-mode', 'sec-ch-ua-mobile', 'upgrade-insecure-requests', 'x-requested-with'];
    o.route('/page', reflecting(context));
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/page`, {
      referer: 'https://evil.example/',
      'sec-fetch-mode': 'navigate',
      'sec-ch-ua-mobile': '?1',
      'upgrade-insecure-requests': '1',
      'x-requested-with': 'com.facebook.katana',
    });
    expect(first.body).toBe('referer=- sec-fetch-mode=- sec-ch-ua-mobile=- upgrade-insecure-requests=- x-requested-with=-');
    expect(first.headers['cache-status']).toMatch(/stored/);
  });

  it('a response varying on a header the gateway writes per request (X-Forwarded-For) is not stored', async () => {
    const o = await origin();
    o.route('/geo', reflecting(['x-forwarded-for'], { vary: 'X-Forwarded-For' }));
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/geo`);
    expect(first.headers['cache-status']).not.toMatch(/stored/);
    await get(`${g.url}/geo`);
    expect(o.count()).toBe(2);
  });

  it('strict fill headers (fillHeaders.only): nothing else reaches a fill', async () => {
    const o = await origin();
    o.route('/page', reflecting(['x-custom', 'referer', 'x-allowed', 'accept-language']));
    const g = await gateway({ sites: [siteFor([o.url], { fillHeaders: { only: ['X-Allowed'] } })] });
    const first = await get(`${g.url}/page`, { 'x-custom': 'planted', referer: 'http://evil.example/', 'x-allowed': 'yes', 'accept-language': 'fr' });
    expect(first.body).toBe('x-custom=- referer=- x-allowed=yes accept-language=fr');
  });

  it('an answer that repeats a header nothing keys is that header\'s variant: the planter gets it, nobody else', async () => {
    const o = await origin();
    o.route('/page', reflecting(['x-anything']));
    // The same page compressed by the origin: the fill looks in the decoded body.
    o.route('/gz', {
      headers: { 'cache-control': 'public, max-age=60', 'content-encoding': 'gzip', 'content-type': 'text/html' },
      body: (r) => zlib.gzipSync(`<p>${String(r.headers['user-agent'] ?? '-')}</p>`),
    });
    // Sent and not repeated: the page stays shared whatever the value.
    o.route('/quiet', { headers: { 'cache-control': 'public, max-age=60' }, body: () => 'same for all' });
    const g = await gateway({ sites: [siteFor([o.url])] });

    const planted = await get(`${g.url}/page`, { 'x-anything': '<script src=//evil.example/x.js>' });
    expect(planted.body).toBe('x-anything=<script src=//evil.example/x.js>');
    expect(planted.headers['vary']).toMatch(/x-anything/);
    // The planter's variant answers the planter (and anyone sending the same value).
    const again = await get(`${g.url}/page`, { 'x-anything': '<script src=//evil.example/x.js>' });
    expect(again.headers['cache-status']).toMatch(/; hit/);
    // A second value: the header is sent now because a stored variant varies on it, and this
    // answer, without a Vary of its own, is again only that value's variant.
    expect((await get(`${g.url}/page`, { 'x-anything': 'second planted value' })).body).toBe('x-anything=second planted value');
    const victim = await get(`${g.url}/page`);
    expect(victim.body).toBe('x-anything=-');
    expect(victim.headers['cache-status']).toMatch(/fwd=vary-miss/);
    expect((await get(`${g.url}/page`)).headers['cache-status']).toMatch(/; hit/);

    const gunzipped = async (ua: string) => {
      const res = await request(`${g.url}/gz`, { headers: { 'user-agent': ua, 'accept-encoding': 'gzip' } });
      expect(res.headers['content-encoding']).toBe('gzip');
      return zlib.gunzipSync(Buffer.from(await res.body.arrayBuffer())).toString();
    };
    expect(await gunzipped('Evil/1.0 <b>planted</b>')).toBe('<p>Evil/1.0 <b>planted</b></p>');
    expect(await gunzipped('Mozilla/5.0')).toBe('<p>Mozilla/5.0</p>');

    await get(`${g.url}/quiet`, { 'x-anything': 'one value' });
    const shared = await get(`${g.url}/quiet`, { 'x-anything': 'another value' });
    expect(shared.headers['cache-status']).toMatch(/; hit/);
    expect(shared.headers['vary']).toBeUndefined();

    expect(o.count('/page')).toBe(3);
    expect(o.count('/gz')).toBe(2);
    expect(o.count('/quiet')).toBe(1);
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_fill_reflected_inputs_total\{site="[^"]+"\} 4/);
  });

  it('a script host of short numbers, or one part of a User-Agent, echoed into a shared page plants nothing (attacker trial)', async () => {
    const o = await origin();
    o.route('/asset', {
      headers: { 'cache-control': 'public, max-age=60', 'content-type': 'text/html' },
      body: (r) => `<script src="${String(r.headers['x-asset-base'] ?? '/static')}/app.js"></script>`,
    });
    // An origin printing the platform it parsed out of the User-Agent (its second `;` part).
    o.route('/ua', {
      headers: { 'cache-control': 'public, max-age=60', 'content-type': 'text/html' },
      body: (r) => `<p>Platform: ${String(r.headers['user-agent'] ?? '').split(';')[1]?.trim() ?? '-'}</p>`,
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const browser = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
    expect((await get(`${g.url}/asset`, { 'x-asset-base': '//12.34.56.78' })).body).toContain('//12.34.56.78/app.js');
    expect((await get(`${g.url}/ua`, { 'user-agent': 'Mozilla/5.0 (X11; <script src=//evil.example/x.js></script>; rv:128.0) Gecko' })).body).toContain('evil.example');
    const victims = [await get(`${g.url}/asset`, { 'user-agent': browser }), await get(`${g.url}/ua`, { 'user-agent': browser })];
    expect(victims[0]!.body).toBe('<script src="/static/app.js"></script>');
    expect(victims[1]!.body).toBe('<p>Platform: Linux x86_64</p>');
    expect(o.count('/asset')).toBe(2);
    expect(o.count('/ua')).toBe(2);
  });

  it('waiters behind a leader whose answer only seemed to echo its header share one more fill, not one each', async () => {
    const o = await origin();
    // A page with nothing of the request in it, but "html" in it everywhere.
    o.route('/fan', { delayMs: 300, headers: { 'cache-control': 'public, max-age=60', 'content-type': 'text/html' }, body: '<html><body>same for all</body></html>' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const leader = get(`${g.url}/fan`, { 'user-agent': 'html' }); // an echo by chance: stored as its variant
    await new Promise((r) => setTimeout(r, 50));
    const waiters = Array.from({ length: 20 }, (_, i) => get(`${g.url}/fan`, { 'user-agent': `Mozilla/5.0 client-${i}` }));
    const answers = await Promise.all([leader, ...waiters]);
    for (const a of answers) expect(a.body).toBe('<html><body>same for all</body></html>');
    expect(o.count('/fan')).toBe(2);
  });

  it("a WAF's 404 for one client's User-Agent on a page's refresh reaches nobody: the gateway asks again without it, and that answer refreshes the page (attacker trial)", async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    // A WAF in front of the app: scanners get a 404 with no cache headers.
    o.route('/waf', (req, res) => {
      if (String(req.headers['user-agent'] ?? '').includes('sqlmap')) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('blocked');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=1', date: new Date(clock.now()).toUTCString() });
      res.end('<p>popular page</p>');
    });
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, negativeTtlSeconds: { '404': 10 } } }] })] },
      { clock },
    );
    const browser = { 'user-agent': 'Mozilla/5.0 Firefox/133.0', accept: 'text/html' };
    expect((await get(`${g.url}/waf`, browser)).status).toBe(200);
    clock.advance(2_000); // stale: the attacker's request leads its revalidation
    const attacker = await get(`${g.url}/waf`, { 'user-agent': 'sqlmap/1.7', accept: 'text/html' });
    expect([attacker.status, attacker.body]).toEqual([200, '<p>popular page</p>']); // the page, as any cached reader gets it
    for (const ua of [browser['user-agent'], 'curl/8.0', 'sqlmap/1.7']) {
      const reader = await get(`${g.url}/waf`, { 'user-agent': ua, accept: 'text/html' });
      expect([reader.status, reader.body], ua).toEqual([200, '<p>popular page</p>']);
      expect(reader.headers['cache-status'], ua).toMatch(/; hit/);
    }
    // The first fill, the attacker's, and the gateway's own question without his headers,
    // whose answer refreshed the copy (before: the 404 took it away).
    expect(o.count('/waf')).toBe(3);
    const recheck = o.requests.filter((r) => r.path === '/waf')[2]!;
    expect(recheck.headers['user-agent']).toBe('crowdgate-recheck');
    expect(recheck.headers['accept']).toBe('text/html'); // what it asks for, not who it is
    expect(recheck.headers['x-forwarded-for']).toBeUndefined();
  });

  it("a 404 one client's header draws on a stale page's refresh, the gateway's own question unanswered, leaves the copy for everyone: an outage after it finds it (attacker trial)", async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    let down = false;
    // A WAF in front of the app answers scanners 404 with a public lifetime, as the app's
    // other answers, and the gateway's own question (no browser's User-Agent) a 503: unsure,
    // the gateway keeps the copy. The app is a page with a minute of grace.
    o.route('/hot', (req, res) => {
      if (down || String(req.headers['user-agent'] ?? '').includes('crowdgate')) {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('down');
        return;
      }
      const head = { 'cache-control': 'public, max-age=1', date: new Date(clock.now()).toUTCString() };
      if (String(req.headers['user-agent'] ?? '').includes('sqlmap')) {
        res.writeHead(404, { ...head, 'content-type': 'text/plain' });
        res.end('blocked');
        return;
      }
      res.writeHead(200, { ...head, 'content-type': 'text/html' });
      res.end('<p>hot page</p>');
    });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, graceSeconds: 60 } }] })] }, { clock });
    const browser = { 'user-agent': 'Mozilla/5.0 Firefox/133.0', accept: 'text/html' };
    expect((await get(`${g.url}/hot`, browser)).status).toBe(200);
    clock.advance(2_000); // stale: the scanner's request leads its refresh
    const scanner = await get(`${g.url}/hot`, { 'user-agent': 'sqlmap/1.7' });
    expect(scanner.status).toBe(404);
    expect(scanner.body).toBe('blocked');
    // His 404, public as it is, is kept for requests like his, not for everyone.
    expect((await get(`${g.url}/hot`, { 'user-agent': 'sqlmap/1.7' })).headers['cache-status']).toMatch(/; hit/);
    // The origin goes down: the stale copy answers the next visitor (grace), not a 404 or 503.
    down = true;
    const visitor = await get(`${g.url}/hot`, browser);
    expect(visitor.status).toBe(200);
    expect(visitor.body).toBe('<p>hot page</p>');
    expect(visitor.headers['cache-status']).toMatch(/fwd=stale/);
  });

  it('an error the origin gives a lifetime (400, 403, 500: statuses the URL does not explain) never replaces a stored page for everyone; with nothing stored it is kept for all, as RFC 9111 says (attacker trial, CPDoS)', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    // An origin whose middleware puts one Cache-Control on every answer, errors included.
    const cc = { 'cache-control': 'public, max-age=300' };
    o.route('/p', (req, res) => {
      const h = req.headers;
      const [status, body] = h['x-big'] !== undefined ? [400, 'header too large'] : String(h['user-agent']).includes('sqlmap') ? [403, 'forbidden by WAF'] : h['x-evil'] !== undefined ? [500, 'crashed'] : [200, '<p>page</p>'];
      res.writeHead(status, { 'content-type': 'text/html', date: new Date(clock.now()).toUTCString(), ...cc });
      res.end(body);
    });
    o.route('/gone', { status: 404, headers: { 'content-type': 'text/html', ...cc }, body: 'no such page' });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const browser = { 'user-agent': 'Mozilla/5.0 Firefox/133.0', accept: 'text/html' };
    // A stored page whose refresh an attacker's request leads keeps answering everyone else.
    for (const [i, attack] of ([{ 'x-big': 'A'.repeat(4000) }, { 'user-agent': 'sqlmap/1.7' }] as Array<Record<string, string>>).entries()) {
      const path = `/p?n=${i}`;
      expect((await get(`${g.url}${path}`, browser)).status).toBe(200);
      clock.advance(301_000);
      const planted = await get(`${g.url}${path}`, { ...browser, ...attack });
      expect([200, 400, 403]).toContain(planted.status); // the stale page (updating) or his error
      const victim = await get(`${g.url}${path}`, browser);
      expect(victim.status, JSON.stringify(attack).slice(0, 40)).toBe(200);
      expect(victim.body).toBe('<p>page</p>');
      // Kept for requests like the attacker's: his error is a hit, the origin is not asked again.
      const again = await get(`${g.url}${path}`, { ...browser, ...attack });
      expect(again.status).toBeGreaterThanOrEqual(400);
      expect(again.headers['cache-status']).toMatch(/; hit/);
    }
    // Nothing stored: the origin's error with its lifetime is stored for all (RFC 9111 §3).
    expect((await get(`${g.url}/p?n=e`, { ...browser, 'x-evil': '1' })).status).toBe(500);
    expect((await get(`${g.url}/p?n=e`, browser)).headers['cache-status']).toMatch(/; hit/);
    // A 404 with the origin's lifetime is its word about the URL: stored for everyone.
    expect((await get(`${g.url}/gone`, { 'user-agent': 'sqlmap/1.7' })).status).toBe(404);
    const gone = await get(`${g.url}/gone`, browser);
    expect(gone.status).toBe(404);
    expect(gone.headers['cache-status']).toMatch(/; hit/);
  });

  it("the visitors who joined a scanner's refresh that drew a 404, a second scanner first among them, get the page the gateway's own question refreshed (review)", async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    o.route('/hot', (req, res) => {
      setTimeout(() => {
        if (String(req.headers['user-agent'] ?? '').includes('sqlmap')) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('blocked');
          return;
        }
        // must-revalidate (MediaWiki's pages): no stale copy answers those who arrive during
        // the refresh, they wait for its answer; kept past its lifetime by its validator.
        const head = { 'cache-control': 'public, max-age=1, must-revalidate', etag: '"v1"', date: new Date(clock.now()).toUTCString() };
        if (req.headers['if-none-match'] === '"v1"') {
          res.writeHead(304, head);
          res.end();
          return;
        }
        res.writeHead(200, { ...head, 'content-type': 'text/html' });
        res.end('<p>hot page</p>');
      }, 100);
    });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0 } }] })] }, { clock });
    expect((await get(`${g.url}/hot`, { 'user-agent': 'Firefox' })).status).toBe(200);
    clock.advance(2_000);
    const scanner = get(`${g.url}/hot`, { 'user-agent': 'sqlmap/1.7' });
    await until(() => o.inflight === 1, 'the scanner\'s fill at the origin');
    const crowd = await Promise.all(['sqlmap/1.7', 'Chrome/1', 'Chrome/2', 'Safari/3', 'Edge/4', 'Opera/5'].map((ua) => get(`${g.url}/hot`, { 'user-agent': ua })));
    expect((await scanner).status).toBe(200);
    expect(crowd.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    // The first fill, the scanner's, and the gateway's question without his headers, whose 304
    // refreshed the copy for the crowd (before the question, all five got his 404, stored with
    // no lifetime).
    expect(o.count('/hot')).toBe(3);
  });

  it("a scanner leading a page's first fill does not give the visitors who joined it his 404 or 400", async () => {
    const o = await origin();
    o.route('/cold', (req, res) => {
      setTimeout(() => {
        const ua = String(req.headers['user-agent'] ?? '');
        // A WAF: a scanner gets a 404, an odd client a 400, neither with cache headers.
        if (ua.includes('sqlmap') || ua.includes('odd')) {
          res.writeHead(ua.includes('odd') ? 400 : 404, { 'content-type': 'text/plain' });
          res.end('blocked');
          return;
        }
        res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
        res.end('<p>page</p>');
      }, 100);
    });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0 } }] })] });
    for (const [ua, status] of [['sqlmap/1.7', 404], ['odd/1', 400]] as const) {
      o.reset();
      const path = `/cold?by=${ua.slice(0, 3)}`;
      const scanner = get(`${g.url}${path}`, { 'user-agent': ua });
      await until(() => o.inflight === 1, "the scanner's fill at the origin");
      const crowd = await Promise.all(['Chrome/1', 'Chrome/2', 'Safari/3', 'Edge/4', 'Opera/5'].map((b) => get(`${g.url}${path}`, { 'user-agent': b })));
      expect((await scanner).status).toBe(status);
      expect(crowd.map((r) => r.status), ua).toEqual([200, 200, 200, 200, 200]);
      // His fill and one for the crowd (before: the 404 for all five, the 400 one request each).
      expect(o.count('/cold'), ua).toBe(2);
    }
  });

  it('a narrow 404 left alone in the store does not split the crowd into one fill per browser', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    // A WAF that answers every client it does not take for a browser 404: the gateway's own
    // question without the scanner's headers (fill.ts) gets one too, and the copy goes.
    o.route('/hot', (req, res) => {
      if (/sqlmap|crowdgate/.test(String(req.headers['user-agent'] ?? ''))) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('blocked');
        return;
      }
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=1', date: new Date(clock.now()).toUTCString() });
        res.end('<p>hot page</p>');
      }, 100);
    });
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, negativeTtlSeconds: { '404': 10 } } }] })] },
      { clock },
    );
    expect((await get(`${g.url}/hot`, { 'user-agent': 'Firefox' })).status).toBe(200);
    clock.advance(2_000);
    expect((await get(`${g.url}/hot`, { 'user-agent': 'sqlmap/1.7' })).status).toBe(404); // the copy goes; his 404 stays, narrow
    const before = o.count('/hot');
    const crowd = await Promise.all(['Chrome/1', 'Chrome/2', 'Safari/3', 'Edge/4', 'Opera/5'].map((ua) => get(`${g.url}/hot`, { 'user-agent': ua })));
    expect(crowd.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(o.count('/hot') - before).toBe(1);
  });

  it('a deleted page (404 kept by the negative TTL) is not served from the old copy to anyone', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    let deleted = false;
    o.route('/post', (_req, res) => {
      if (deleted) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('gone');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=1', date: new Date(clock.now()).toUTCString() });
      res.end('<p>post</p>');
    });
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 30, negativeTtlSeconds: { '404': 10 } } }] })] },
      { clock },
    );
    for (const ua of ['a', 'b']) expect((await get(`${g.url}/post`, { 'user-agent': ua })).status).toBe(200);
    deleted = true;
    clock.advance(2_000);
    // Served stale while a background refresh learns the page is gone (kept for requests like
    // this one alone).
    expect((await get(`${g.url}/post`, { 'user-agent': 'a' })).status).toBe(200);
    // The refresh's 404, then the gateway's own question (404 too: the page is gone).
    for (const until = Date.now() + 5_000; o.count('/post') < 3 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    // Another client does not get the old copy: the 404 took it with it.
    const b = await get(`${g.url}/post`, { 'user-agent': 'b' });
    expect(b.status).toBe(404);
    expect(b.body).toBe('gone');
  });

  it('a 304 whose headers repeat a header nothing keys is not merged into the shared copy', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    // Express-like: the Link is built from a header before the freshness check, so the 304
    // carries it too.
    o.route('/etag', (req, res) => {
      const cdn = String(req.headers['x-cdn'] ?? 'cdn.example');
      const head = { 'cache-control': 'public, max-age=1', etag: 'W/"v1"', link: `<https://${cdn}/app.css>; rel=preload`, date: new Date(clock.now()).toUTCString() };
      if (req.headers['if-none-match'] === 'W/"v1"') {
        res.writeHead(304, head);
        res.end();
        return;
      }
      res.writeHead(200, { ...head, 'content-type': 'text/html' });
      res.end('<p>page</p>');
    });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0 } }] })] }, { clock });
    // Browsers' requests (a page's 304 is merged only for a navigation's Accept).
    const page = { accept: 'text/html' };
    expect((await get(`${g.url}/etag`, page)).headers['link']).toBe('<https://cdn.example/app.css>; rel=preload');
    clock.advance(2_000); // stale: the next request revalidates
    const attacker = await get(`${g.url}/etag`, { ...page, 'x-cdn': 'evil.example' });
    expect(attacker.headers['link']).toBe('<https://evil.example/app.css>; rel=preload');
    const victim = await get(`${g.url}/etag`, page);
    expect(victim.headers['link']).toBe('<https://cdn.example/app.css>; rel=preload');
    // The 304 was not merged: the attacker's answer came from a full fetch, stored as his
    // variant; the victim's own revalidation (no X-Cdn, nothing repeated) was.
    expect(attacker.headers['cache-status']).not.toMatch(/revalidated/);
    expect(victim.headers['cache-status']).toMatch(/fwd-status=304/);
    expect(o.requests.filter((r) => r.url === '/etag').map((r) => r.headers['if-none-match'] ?? '-')).toEqual(['-', 'W/"v1"', '-', 'W/"v1"']);
  });

  it('Vary is computed from the headers the fill sent: a header named by a stored Vary reaches the next fill', async () => {
    const o = await origin();
    o.route('/v', reflecting(['x-device'], { vary: 'X-Device' }));
    const g = await gateway({ sites: [siteFor([o.url], { fillHeaders: { only: [] } })] });
    // The first fill cannot know the origin varies on X-Device: it is not sent, and the entry is
    // the variant for "no X-Device" (what the origin saw), never the mobile page.
    expect((await get(`${g.url}/v`, { 'x-device': 'mobile' })).body).toBe('x-device=-');
    expect((await get(`${g.url}/v`)).body).toBe('x-device=-');
    // Now the stored Vary names it: the next mobile request is filled with it, its own variant.
    expect((await get(`${g.url}/v`, { 'x-device': 'mobile' })).body).toBe('x-device=mobile');
    expect((await get(`${g.url}/v`, { 'x-device': 'desktop' })).body).toBe('x-device=desktop');
    const hit = await get(`${g.url}/v`, { 'x-device': 'mobile' });
    expect(hit.body).toBe('x-device=mobile');
    expect(hit.headers['cache-status']).toMatch(/; hit/);
    expect((await get(`${g.url}/v`)).body).toBe('x-device=-');
  });

  it('routing, the key and the origin see one normalised target: /static/../index is /index everywhere', async () => {
    const o = await origin();
    o.route('/index', { headers: { 'cache-control': 'public, max-age=1' }, body: 'index' });
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'static', match: { pathPrefix: '/static/' }, cache: { ttlFloorSeconds: 86_400 } }] })],
    });
    const tricked = await get(`${g.url}/static/../index`);
    expect(tricked.body).toBe('index');
    expect(o.requests.at(-1)!.url).toBe('/index'); // the origin saw the normalised target
    // Matched as /index (the default route), so the static route's one-day floor did not apply:
    // the stored page has the origin's one-second lifetime.
    expect(tricked.headers['cache-status']).not.toMatch(/ttl=86/);
    const log = g.accessLogs().at(-1)!;
    expect(log.route).toBe('default');
    expect(log.path).toBe('/index');
  });

  it('a pass-through sends the origin the target its route matched, as a fill does: no `//` collapsed, no `http:/` rewritten', async () => {
    const o = await origin();
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'login', match: { pathPrefix: '/login' }, cache: { enabled: false } }] })],
    });
    // http-proxy's own join sent `//login` (no /login route matched it: its rate limit,
    // priority and timeouts dodged) to the origin as `/login`.
    for (const target of ['//login', '//127.0.0.1:1/pwn?a=//b', '/go/http:/evil.example/x', '/a//b/']) {
      const posted = await request(`${g.url}${target}`, { method: 'POST', body: 'x' });
      await posted.body.text();
      expect(o.requests.at(-1)!.url, target).toBe(target);
      // `//login` reaches the never-cached login route as a lenient origin reads it (merged slashes).
      expect(g.accessLogs().at(-1)!.route, target).toBe(target === '//login' ? 'login' : 'default');
      // A GET fill of the same target sends the same.
      await (await request(`${g.url}${target}`)).body.text();
      expect(o.requests.at(-1)!.url, `GET ${target}`).toBe(target);
    }
    const login = await request(`${g.url}/login`, { method: 'POST', body: 'x' });
    await login.body.text();
    expect(o.requests.at(-1)!.url).toBe('/login');
    expect(g.accessLogs().at(-1)!.route).toBe('login');
  });

  it('tracking parameters left out of the key never reach a shared fill, and a fragment is dropped', async () => {
    const o = await origin();
    o.route('/page', { headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `query=${r.url.split('?')[1] ?? '-'}` });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/page?utm_source=evil&b=2&a=1`);
    expect(first.body).toBe('query=a=1&b=2'); // what the key names: sorted, tracker dropped
    expect((await get(`${g.url}/page?a=1&b=2`)).headers['cache-status']).toMatch(/; hit/);
    // A ';' is part of a value, the same in the key and on the wire: no parameter cloaking.
    const cloaked = await get(`${g.url}/page?a=1;utm_source=evil`);
    expect(cloaked.body).toBe('query=a=1;utm_source=evil');
    expect((await get(`${g.url}/page?a=1`)).body).toBe('query=a=1');
    // A raw '#' in the target (clients never send one; undici strips it, so a raw socket here).
    const raw = await rawGet(g.url, '/page?x=1#frag');
    expect(raw).toMatch(/^HTTP\/1\.1 200/);
    expect(raw).toContain('query=x=1');
    expect(o.requests.every((r) => !r.url.includes('utm_source=evil&') && !r.url.includes('#'))).toBe(true);
  });

  it('a fill asks the origin for the coding of the variant bucket, not the leader\'s own list (no deflate for everyone)', async () => {
    const o = await origin();
    // An origin that compresses itself, as it is asked.
    o.route('/v', (req, res) => {
      const ae = String(req.headers['accept-encoding'] ?? '');
      const coding = ae.includes('deflate') ? 'deflate' : undefined;
      const body = coding ? zlib.deflateSync('page') : Buffer.from('page');
      res.writeHead(200, { 'cache-control': 'public, max-age=60', vary: 'Accept-Encoding', 'content-type': 'text/plain', ...(coding ? { 'content-encoding': coding } : {}) });
      res.end(body);
    });
    const g = await gateway({ compression: { enabled: false }, sites: [siteFor([o.url])] });
    await get(`${g.url}/v`, { 'accept-encoding': 'deflate' });
    expect(o.requests[0]!.headers['accept-encoding']).toBe('identity');
    const victim = await get(`${g.url}/v`);
    expect(victim.headers['content-encoding']).toBeUndefined();
    expect(victim.body).toBe('page');
    expect(victim.headers['cache-status']).toMatch(/; hit/);
    // A browser (br and gzip) asks for both: a gzip-only origin still compresses its answer.
    await get(`${g.url}/v`, { 'accept-encoding': 'gzip, deflate, br' });
    expect(o.requests[1]!.headers['accept-encoding']).toBe('br, gzip');
  });

  it('a request carrying no-store goes alone: it never marks the page hit-for-pass for everyone', async () => {
    const o = await origin();
    o.route('/p', { headers: { 'cache-control': 'public, max-age=60' }, body: 'p' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const alone = await get(`${g.url}/p`, { 'cache-control': 'no-store' });
    expect(alone.body).toBe('p');
    expect(alone.headers['cache-status']).not.toMatch(/stored/);
    // The next visitors fill and share the page as if that request had never come.
    const first = await get(`${g.url}/p`);
    expect(first.headers['cache-status']).toMatch(/fwd=uri-miss;.*stored/);
    expect((await get(`${g.url}/p`)).headers['cache-status']).toMatch(/; hit/);
    expect(o.count()).toBe(2);
    // And once stored, a no-store request is answered from the store (§5.2.1.5 allows it).
    expect((await get(`${g.url}/p`, { 'cache-control': 'no-store' })).headers['cache-status']).toMatch(/; hit/);
    expect(o.count()).toBe(2);
  });

  it('a request carrying no-store joins a fill already under way (it is not stored, and never leads one)', async () => {
    const o = await origin();
    o.route('/slow', { delayMs: 300, headers: { 'cache-control': 'public, max-age=60' }, body: 'slow' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const leader = get(`${g.url}/slow`);
    await new Promise((r) => setTimeout(r, 100)); // the leader's fill is under way
    const joined = await get(`${g.url}/slow`, { 'cache-control': 'no-store' });
    expect(joined.body).toBe('slow');
    expect(joined.headers['cache-status']).toMatch(/collapsed/);
    expect((await leader).body).toBe('slow');
    expect(o.count()).toBe(1);
  });

  it('a purge by URL clears the page for every Host', async () => {
    const o = await origin();
    let version = 1;
    o.route('/p', { headers: { 'cache-control': 'public, max-age=60' }, body: () => `v${version}` });
    const g = await gateway({ admin: { purgeToken: 'a-token-of-sixteen-chars' }, sites: [siteFor([o.url])] });
    for (const host of ['a.test', 'b.test']) expect((await get(`${g.url}/p`, { host })).body).toBe('v1');
    version = 2;
    const purge = await request(`${g.adminUrl}/purge`, {
      method: 'POST',
      headers: { authorization: 'Bearer a-token-of-sixteen-chars', 'content-type': 'application/json' },
      body: JSON.stringify({ url: '/p', mode: 'hard' }),
    });
    expect(purge.statusCode).toBe(200);
    await purge.body.text();
    for (const host of ['a.test', 'b.test']) expect((await get(`${g.url}/p`, { host })).body).toBe('v2');
  });
});

/**
 * A wiki page whose first request (version 1) is held until `release()`: `fillArrived` resolves
 * when it reaches the origin, `edit()` makes every later request render version 2.
 */
function editedPage(o: Awaited<ReturnType<typeof origin>>, path: string) {
  let version = 1;
  let release: () => void = () => undefined;
  let arrived: () => void = () => undefined;
  const fillArrived = new Promise<void>((r) => (arrived = r));
  o.route(path, (_req, res) => {
    const body = `version ${version}`; // what the origin renders when the request arrives
    const answer = () => {
      res.writeHead(200, { 'cache-control': 'public, max-age=600', 'content-type': 'text/html', etag: `"v${body.slice(-1)}"` });
      res.end(body);
    };
    if (version === 1) {
      release = answer;
      arrived();
    } else answer();
  });
  return { fillArrived, edit: () => void (version = 2), release: () => release() };
}

describe('PURGE, Varnish-compatible', () => {
  const redis = useRedisServer();
  it('is answered by the gateway from an allowed address: the page is gone for every variant, and a deleted page is not served again', async () => {
    const o = await origin();
    let deleted = false;
    o.route('/wiki/Page', (_req, res) => {
      if (deleted) {
        res.writeHead(404, { 'cache-control': 's-maxage=18000, must-revalidate, max-age=0', 'content-length': 9 });
        return res.end('not found');
      }
      res.writeHead(200, { 'cache-control': 's-maxage=18000, must-revalidate, max-age=0', vary: 'Accept-Language', 'content-length': 4 });
      res.end('page');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const lang of ['en', 'fr']) expect((await get(`${g.url}/wiki/Page`, { host: 'wiki.test', 'accept-language': lang })).body).toBe('page');
    expect((await get(`${g.url}/wiki/Page`, { host: 'wiki.test', 'accept-language': 'en' })).headers['cache-status']).toMatch(/; hit/);
    deleted = true;
    const purge = await request(`${g.url}/wiki/Page`, { method: 'PURGE', headers: { host: 'wiki.test' } });
    expect(purge.statusCode).toBe(200);
    expect(JSON.parse(await purge.body.text())).toMatchObject({ purged: 2 }); // both variants
    expect(o.requests.some((r) => r.method === 'PURGE')).toBe(false); // never forwarded
    for (const lang of ['en', 'fr']) {
      const after = await get(`${g.url}/wiki/Page`, { host: 'wiki.test', 'accept-language': lang });
      expect(after.status).toBe(404);
      expect(after.body).toBe('not found');
    }
    // Nothing stored for it any more: 404 like Varnish.
    const again = await request(`${g.url}/wiki/Other`, { method: 'PURGE', headers: { host: 'wiki.test' } });
    expect(again.statusCode).toBe(404);
    await again.body.text();
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_purges_total\{kind="url",mode="[a-z]+"\} 2/);
    expect(metrics).toMatch(/crowdgate_purged_entries_total\{mode="[a-z]+"\} 2/);
  });

  for (const mode of ['hard', 'soft'] as const) {
    it(`covers a fill in flight when it arrives (${mode}): the page the fill brings back from before the edit is not kept (attacker trial)`, async () => {
      const o = await origin();
      const page = editedPage(o, '/wiki/Slow');
      const g = await gateway({ purge: { mode }, sites: [siteFor([o.url])] });
      const pending = get(`${g.url}/wiki/Slow`, { host: 'wiki.test' });
      await page.fillArrived;
      page.edit(); // the edit, then its PURGE, while the fill is away
      const purge = await request(`${g.url}/wiki/Slow`, { method: 'PURGE', headers: { host: 'wiki.test' } });
      expect(purge.statusCode).toBe(404); // nothing stored yet
      await purge.body.text();
      page.release();
      expect((await pending).body).toBe('version 1'); // its own client asked before the edit
      const after = await get(`${g.url}/wiki/Slow`, { host: 'wiki.test' });
      expect(after.body).toBe('version 2');
      expect(after.headers['cache-status']).toMatch(/fwd=(uri-miss|stale)/);
      expect(o.count('/wiki/Slow')).toBe(2);
      // And the new page is kept as usual.
      expect((await get(`${g.url}/wiki/Slow`, { host: 'wiki.test' })).headers['cache-status']).toMatch(/; hit/);
      expect(g.gw.purgeFence.openCount).toBe(0);
    });
  }

  it('covers a fill in flight on another instance (Redis): what it brings back is neither in its memory nor in Redis (attacker trial)', async () => {
    const o = await origin();
    const page = editedPage(o, '/wiki/Shared');
    // At debug, a purge that found nothing here is logged too: the sign that A heard it.
    const config = { redis: { url: redis.url, keyPrefix: 'fence:' }, log: { level: 'debug' as const }, sites: [siteFor([o.url])] };
    const a = await gateway(config);
    const b = await gateway(config);
    const pending = get(`${a.url}/wiki/Shared`, { host: 'wiki.test' });
    await page.fillArrived;
    page.edit();
    const purge = await request(`${b.url}/wiki/Shared`, { method: 'PURGE', headers: { host: 'wiki.test' } });
    expect(purge.statusCode).toBe(404);
    await purge.body.text();
    // A has heard of B's purge before its fill comes back.
    for (let i = 0; i < 200 && !a.logs.some((l) => l.msg === 'purge received'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(a.logs.some((l) => l.msg === 'purge received')).toBe(true);
    page.release();
    expect((await pending).body).toBe('version 1');
    expect((await get(`${b.url}/wiki/Shared`, { host: 'wiki.test' })).body).toBe('version 2');
    expect((await get(`${a.url}/wiki/Shared`, { host: 'wiki.test' })).body).toBe('version 2');
  });

  it('clears its own Host\'s copies only, not those of hosts or ports its name begins (attacker trial)', async () => {
    const o = await origin();
    o.route('/p', { headers: { 'cache-control': 'public, max-age=600' }, body: 'p' });
    const routes = [{ name: 'default', cache: { key: { headers: ['X-Tenant'] } } }];
    const g = await gateway({ sites: [siteFor([o.url], { routes })] });
    const hosts = ['b', 'blog.example.com', 'b:8080', 'bx.example'];
    for (const host of hosts) for (const tenant of ['one', 'two']) expect((await get(`${g.url}/p`, { host, 'x-tenant': tenant })).body).toBe('p');
    const purge = await request(`${g.url}/p`, { method: 'PURGE', headers: { host: 'b' } });
    expect(purge.statusCode).toBe(200);
    expect(JSON.parse(await purge.body.text())).toMatchObject({ purged: 2 }); // b's two key-template parts
    for (const host of hosts.slice(1))
      for (const tenant of ['one', 'two']) expect((await get(`${g.url}/p`, { host, 'x-tenant': tenant })).headers['cache-status']).toMatch(/; hit/);
    expect((await get(`${g.url}/p`, { host: 'b', 'x-tenant': 'one' })).headers['cache-status']).toMatch(/fwd=/);
    // An empty Host names no stored host: nothing is cleared.
    const empty = await request(`${g.url}/p`, { method: 'PURGE', headers: { host: '' } });
    expect(empty.statusCode).toBe(404);
    await empty.body.text();
    for (const host of hosts.slice(1)) expect((await get(`${g.url}/p`, { host, 'x-tenant': 'two' })).headers['cache-status']).toMatch(/; hit/);
  });

  it('with X-Purge-Method: regex, a path prefix followed by .* clears that prefix (WordPress\'s Varnish HTTP Purge "purge all"); any other regex is refused (WordPress trial)', async () => {
    const o = await origin();
    for (const path of ['/about/', '/blog/one/', '/blog/two/', '/blog/feed/'])
      o.route(path, { headers: { 'cache-control': 'public, max-age=600' }, body: path });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const paths = ['/about/', '/blog/one/', '/blog/two/', '/blog/feed/'];
    for (const path of paths) expect((await get(`${g.url}${path}`, { host: 'wp.test' })).body).toBe(path);
    // Another Host of the same site: a PURGE for wp.test leaves its copies (review).
    for (const path of paths) expect((await get(`${g.url}${path}`, { host: 'shop.test' })).body).toBe(path);
    const purge = async (target: string, method = 'regex') => {
      const res = await request(`${g.url}${target}`, { method: 'PURGE', headers: { host: 'wp.test', 'x-purge-method': method } });
      return { status: res.statusCode, error: res.headers['x-crowdgate-error'], body: await res.body.text() };
    };
    const cached = async () => {
      const out: string[] = [];
      for (const path of paths) if (/; hit/.test((await get(`${g.url}${path}`, { host: 'wp.test' })).headers['cache-status'] ?? '')) out.push(path);
      return out;
    };
    // Refused, not taken for a URL, and nothing cleared.
    for (const target of ['/blog/(one|two)/.*', '/blog/o.e/.*', '/blog/one/', '/.*x']) {
      const refused = await purge(target);
      expect(refused.status, target).toBe(400);
      expect(refused.error).toBe('purge_regex_unsupported');
    }
    expect(await cached()).toEqual(paths);
    const blog = await purge('/blog/.*');
    expect(blog.status).toBe(200);
    expect(JSON.parse(blog.body)).toMatchObject({ purged: 3 });
    expect(await cached()).toEqual(['/about/']);
    for (const path of paths) await get(`${g.url}${path}`, { host: 'wp.test' });
    const all = await purge('/.*');
    expect(JSON.parse(all.body)).toMatchObject({ purged: 4 });
    expect(await cached()).toEqual([]);
    for (const path of paths) expect((await get(`${g.url}${path}`, { host: 'shop.test' })).headers['cache-status']).toMatch(/; hit/);
    // X-Purge-Method: default is the plain URL purge it always was.
    expect((await purge('/about/', 'default')).status).toBe(200);
    expect(o.requests.some((r) => r.method === 'PURGE')).toBe(false);
  });

  it('is refused with 405 from other addresses, and never reaches the origin', async () => {
    const o = await origin();
    o.route('/p', { headers: { 'cache-control': 'public, max-age=60' }, body: 'p' });
    const g = await gateway({ purge: { allow: ['10.0.0.0/8'] }, sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/p`)).body).toBe('p');
    const refused = await request(`${g.url}/p`, { method: 'PURGE' });
    expect(refused.statusCode).toBe(405);
    expect(refused.headers['x-crowdgate-error']).toBe('purge_not_allowed');
    await refused.body.text();
    expect((await get(`${g.url}/p`)).headers['cache-status']).toMatch(/; hit/);
    expect(o.count()).toBe(1);
  });

  it('is refused for a client a trusted proxy names unreadably (`unknown`, `ip:port`, a header of no hop), never taken for the proxy itself', async () => {
    const o = await origin();
    o.route('/p', { headers: { 'cache-control': 'public, max-age=60' }, body: 'p' });
    // The gateway's peer (127.0.0.1) is both a trusted proxy and allowed to purge.
    const g = await gateway({ trustedProxies: ['127.0.0.1'], purge: { allow: ['127.0.0.1'] }, sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/p`)).body).toBe('p');
    // (`,` and ` , `: a header that names no hop; attacker trial)
    for (const xff of ['unknown', '203.0.113.5, unknown', '203.0.113.5:4711', '[2001:db8::1]:443', ',', ' , ']) {
      const refused = await request(`${g.url}/p`, { method: 'PURGE', headers: { 'x-forwarded-for': xff } });
      await refused.body.text();
      expect(refused.statusCode, xff).toBe(405);
    }
    expect((await get(`${g.url}/p`)).headers['cache-status']).toMatch(/; hit/);
    // The proxy's own PURGE (no X-Forwarded-For) is allowed.
    const allowed = await request(`${g.url}/p`, { method: 'PURGE' });
    await allowed.body.text();
    expect(allowed.statusCode).toBe(200);
  });
});
