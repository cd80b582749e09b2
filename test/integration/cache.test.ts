import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { request } from 'undici';
import { ManualClock } from '../../src/clock.js';
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { siteFor, withTestDefaults } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import { spawnGateway } from '../helpers/gateway-process.js';
import type { OriginHandler } from '../helpers/test-origin.js';

const { cleanups, origin, gateway } = useFixtures();
async function get(url: string, headers: Record<string, string> = {}) {
  const started = performance.now();
  const res = await request(url, { headers });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body, ms: performance.now() - started };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** crowdgate_hit_for_pass_total of the test site: the hit-for-pass marks set so far. */
async function hitForPassMarks(adminUrl: string): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text();
  return Number(/^crowdgate_hit_for_pass_total\{site="test"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

/** A ManualClock on a whole second, so Date headers (second resolution) carry no hidden age. */
const manualClock = () => new ManualClock(Math.floor(Date.now() / 1000) * 1000);

/**
 * An origin answer whose Date header comes from the gateway's ManualClock: with Node's real-time
 * Date, a fill made after the clock moved ahead would arrive already aged (RFC 9111 §4.2.3).
 * `delayMs` is real time (the origin is a real server).
 */
function clocked(
  clock: ManualClock,
  script: { headers: Record<string, string>; body: string | (() => string); delayMs?: number },
): OriginHandler {
  return (_req, res) => {
    const answer = () => {
      const body = typeof script.body === 'function' ? script.body() : script.body;
      res.writeHead(200, {
        'content-type': 'text/plain',
        ...script.headers,
        date: new Date(clock.now()).toUTCString(),
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    };
    if (script.delayMs) setTimeout(answer, script.delayMs);
    else answer();
  };
}

describe('cache: hits, misses, collapsing', () => {
  it('serves a fresh page from cache with Age and Cache-Status after one origin fetch', async () => {
    const o = await origin();
    o.route('/page', { headers: { 'cache-control': 'public, max-age=60' }, body: 'hello' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/page`);
    expect(first.status).toBe(200);
    expect(first.headers['cache-status']).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored/);
    const second = await get(`${g.url}/page`);
    expect(second.body).toBe('hello');
    expect(second.headers['cache-status']).toMatch(/^crowdgate; hit; ttl=\d+/);
    expect(second.headers['age']).toMatch(/^\d+$/);
    const head = await request(`${g.url}/page`, { method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(head.headers['cache-status']).toMatch(/hit/);
    await head.body.text();
    expect(o.count('/page')).toBe(1);
  });

  it('collapses 100 simultaneous requests for a cold page into exactly 1 origin fetch and wakes every waiter without polling', async () => {
    const o = await origin();
    const latency = 150;
    let answeredAt = 0;
    let answeredAtWall = 0;
    o.route('/cold', (_req, res) => {
      setTimeout(() => {
        answeredAt = performance.now();
        answeredAtWall = Date.now();
        res.writeHead(200, { 'cache-control': 'public, max-age=60' });
        res.end('x'.repeat(1000));
      }, latency);
    });
    // The gateway runs as its own process so the test client doesn't share its event loop.
    const g = await spawnGateway({ sites: [siteFor([o.url])] });
    cleanups.push(() => void g.stop('SIGKILL'));
    // Open 100 client connections first so the measurement is of the cache, not of handshakes.
    await Promise.all(Array.from({ length: 100 }, () => get(`${g.url}/warm`)));
    const collapsedBefore = Number(
      /crowdgate_collapsed_requests_total\{site="test"\} (\d+)/.exec(await (await request(`${g.adminUrl}/metrics`)).body.text())?.[1] ?? 0,
    );
    const sentAt = performance.now();
    const results = await Promise.all(
      Array.from({ length: 100 }, () => get(`${g.url}/cold`)),
    );
    expect(o.count('/cold')).toBe(1);
    expect(results.every((r) => r.status === 200 && r.body.length === 1000)).toBe(true);
    expect(results.filter((r) => /collapsed/.test(r.headers['cache-status']!)).length).toBe(99);
    // Every waiter is woken by the fill itself, no lock polling (nginx's cache lock polls every
    // 500 ms). The gateway logs, per collapsed request, the time from the fill finishing to its
    // whole answer being handed to the socket. The 10 ms target is measured by `npm run bench:coalesce` on a quiet
    // machine; here, with the test client, the origin and other suites sharing two cores, the
    // bound only proves there is no polling interval in the way.
    // Access log lines arrive over the child's stdout: a busy CI box delivered 55 of 100 in 50 ms.
    const coldLines = () => g.logs.filter((l) => l.type === 'access' && l.path === '/cold');
    for (let i = 0; i < 100 && coldLines().length < 100; i++) await sleep(20);
    const cold = coldLines();
    expect(cold).toHaveLength(100);
    const afterWake = cold.filter((l) => l.collapsed).map((l) => Number(l.afterWakeMs));
    expect(afterWake).toHaveLength(99);
    expect(Math.max(...afterWake)).toBeLessThan(150);
    expect(answeredAt).toBeGreaterThan(sentAt);
    const collapsed = async () =>
      Number(/crowdgate_collapsed_requests_total\{site="test"\} (\d+)/.exec(await (await request(`${g.adminUrl}/metrics`)).body.text())?.[1] ?? 0);
    expect(await collapsed()).toBe(collapsedBefore + 99);
  });

  it('waiters of a fill whose head is in wait for its body past their deadline: a trickling page is fetched once (failure-day trial, round 3)', async () => {
    const o = await origin();
    // The head at once, then the body over 1.5 s: longer than the waiters' deadline below.
    o.route('/trickle', async (_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-length': '10' });
      for (let i = 0; i < 10; i++) {
        res.write('x');
        await sleep(150);
      }
      res.end();
    });
    const site = siteFor([o.url], { timeouts: { connectMs: 100, responseHeadersMs: 200, idleMs: 1_000 } });
    const g = await gateway({ cache: { collapse: { waitDeadlineMs: 300 } }, sites: [site] });
    // Deadline: max(300, 100 + 200 + 1000) = 1.3 s, before the body's end at 1.5 s.
    const answers = await Promise.all(Array.from({ length: 8 }, () => get(`${g.url}/trickle`)));
    expect(answers.map((a) => a.status)).toEqual(Array(8).fill(200));
    expect(answers.every((a) => a.body === 'x'.repeat(10))).toBe(true);
    expect(o.count('/trickle')).toBe(1);
    // Without a declared length (a stream that may never end: NDJSON, a log tail), the waiters
    // keep their deadline and ask alone (review: they would wait as long as the stream runs).
    o.route('/stream', async (_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'application/x-ndjson' });
      for (let i = 0; i < 10; i++) {
        res.write('{}\n');
        await sleep(150);
      }
      res.end();
    });
    const streamed = await Promise.all(Array.from({ length: 4 }, () => get(`${g.url}/stream`)));
    expect(streamed.map((a) => a.status)).toEqual(Array(4).fill(200));
    expect(o.count('/stream')).toBeGreaterThan(1);
  });

  it('releases waiters on an uncacheable answer and marks the key hit-for-pass', async () => {
    const o = await origin();
    o.route('/private', { delayMs: 100, headers: { 'cache-control': 'private' }, body: (r) => `for ${r.seq}` });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const results = await Promise.all(Array.from({ length: 5 }, () => get(`${g.url}/private`)));
    // The leader's private answer is never shared: each waiter fetched its own.
    expect(new Set(results.map((r) => r.body)).size).toBe(5);
    expect(o.count('/private')).toBe(5);
    const after = await get(`${g.url}/private`);
    expect(after.headers['cache-status']).toMatch(/fwd=bypass|fwd=miss/);
    expect(after.headers['cache-status']).toMatch(/pass/);
  });
});

describe('cache: hit-for-pass that grows while a page stays uncacheable, and looks again each second', () => {
  it('passes a page that is private every time, uncollapsed, but for one fill a second, whose answer is stored once it may be (new-user trial: Redmine; attacker trial: a client leading each fill held a page passed)', async () => {
    const clock = manualClock();
    const o = await origin();
    let cc = 'private';
    o.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cc, date: new Date(clock.now()).toUTCString() });
      res.end('issues');
    });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const marks = () => hitForPassMarks(g.adminUrl);
    const status = async () => String((await request(`${g.url}/issues`)).headers['cache-status']);
    await status(); // fill: private, marked
    expect(await marks()).toBe(1);
    for (let i = 0; i < 3; i++) expect(await status()).toMatch(/detail="pass rid/); // passed: no fill
    expect(await marks()).toBe(1);
    clock.advance(1_000);
    await status(); // a second on: this one fills (private again: marked again, longer)
    expect(await marks()).toBe(2);
    expect(await status()).toMatch(/detail="pass rid/);
    expect(await marks()).toBe(2);
    expect(o.count('/issues')).toBe(6); // every request reached the origin, none waited on another
    // A request with cookies of its own (or a Range) is not the one a second that fills: the
    // fill would be made without them and it would go again as it came.
    clock.advance(1_000);
    const before = o.count('/issues');
    expect(String((await request(`${g.url}/issues`, { headers: { cookie: 'theme=dark' } })).headers['cache-status'])).toMatch(/detail="pass rid/);
    expect(String((await request(`${g.url}/issues`, { headers: { range: 'bytes=0-1' } })).headers['cache-status'])).toMatch(/detail="pass rid/);
    expect(o.count('/issues')).toBe(before + 2);
    expect(await marks()).toBe(2);
    await status(); // the next plain one does
    expect(await marks()).toBe(3);
    // The page turns cacheable: the next fill a second on stores it, and the rest are hits.
    cc = 'public, max-age=60';
    expect(await status()).toMatch(/detail="pass rid/);
    clock.advance(1_000);
    expect(await status()).toMatch(/stored/);
    expect(await status()).toMatch(/; hit/);
  });
});

describe('cache: a purged page the origin now answers 404, and one client it rate-limits', () => {
  it('serves the readers the 404, not the purged copy, though the client the origin answers 429 leads its refreshes (attacker trial: 39 of 40 reads got the taken-down page)', async () => {
    const clock = manualClock();
    const o = await origin();
    let takenDown = false;
    o.setHandler((req, res) => {
      if (!takenDown) {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600', date: new Date(clock.now()).toUTCString() });
        return res.end('the page');
      }
      if (req.headers['user-agent'] === 'limited') {
        res.writeHead(429, { 'content-type': 'text/plain', 'retry-after': '60' });
        return res.end('slow down');
      }
      res.writeHead(404, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end('gone');
    });
    const g = await gateway({ purge: { mode: 'soft' }, sites: [siteFor([o.url])] }, { clock });
    const read = async (ua: string) => {
      const r = await request(`${g.url}/story`, { headers: { 'user-agent': ua } });
      return [r.statusCode, await r.body.text()];
    };
    expect(await read('reader')).toEqual([200, 'the page']);
    takenDown = true;
    expect((await request(`${g.url}/story`, { method: 'PURGE' })).statusCode).toBe(200);
    await read('limited'); // leads the revalidation: 429
    expect(await read('reader')).toEqual([404, 'gone']);
    await read('limited');
    expect(await read('reader')).toEqual([404, 'gone']);
    clock.advance(500);
    expect(await read('reader')).toEqual([404, 'gone']);
  });
});

describe('cache: hit-for-pass on a redirect does not grow', () => {
  it('marks a page whose fill the origin answers with a redirect (a User-Agent\'s mobile page) 5 s each time, never longer (attacker trial: held a hot page passed for 120 s at a time)', async () => {
    const clock = manualClock();
    const o = await origin();
    o.setHandler((_req, res) => {
      res.writeHead(302, { location: '/m/page', 'cache-control': 'private', vary: 'User-Agent', date: new Date(clock.now()).toUTCString() });
      res.end();
    });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const marks = () => hitForPassMarks(g.adminUrl);
    for (let i = 1; i <= 4; i++) {
      expect((await request(`${g.url}/page`)).statusCode).toBe(302); // undici's request follows no redirect
      expect(await marks()).toBe(i); // a fill each 5 s: the mark stayed 5 s
      clock.advance(5_000);
    }
  });
});

describe('cache: a grown hit-for-pass mark ends at a purge of the page or a reload', () => {
  it('stores a page made cacheable at once after a PURGE of it, or after a reload, not at the end of its grown mark (review: a mark grown to 120 s outlived the fix)', async () => {
    const clock = manualClock();
    const o = await origin();
    let cc = 'private';
    o.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cc, date: new Date(clock.now()).toUTCString() });
      res.end('page');
    });
    const g = await gateway({ reload: { watch: false }, sites: [siteFor([o.url])] }, { clock });
    const status = async (path: string) => String((await request(`${g.url}${path}`)).headers['cache-status']);
    // Each marked 5 s, then 10 s: still marked 5 s after, and filled within the second (no
    // fill of its own due: those come one a second).
    for (const path of ['/a', '/b']) await status(path);
    clock.advance(5_000);
    for (const path of ['/a', '/b']) await status(path);
    for (const path of ['/a', '/b']) expect(await status(path)).toMatch(/detail="pass rid/);
    // The pages are fixed (cacheable now). A PURGE of /a ends its mark: the next request stores it.
    cc = 'public, max-age=60';
    expect((await request(`${g.url}/a`, { method: 'PURGE' })).statusCode).toBe(404); // nothing stored to purge
    expect(await status('/a')).toMatch(/stored/);
    expect(await status('/a')).toMatch(/; hit/);
    // /b is still marked, until a reload.
    expect(await status('/b')).toMatch(/detail="pass rid/);
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, cache: { collapse: { hitForPassSeconds: 6 } }, sites: [siteFor([o.url])] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect(await status('/b')).toMatch(/stored/);
  });
});

describe('cache: limits applied live', () => {
  it('a raise of cache.maxObjectBytes by reload stores the larger answers, and they are hits (new-user trial: said stored, never a hit)', async () => {
    const o = await origin();
    o.route('/big', { headers: { 'cache-control': 'public, max-age=60', 'content-type': 'application/octet-stream' }, body: Buffer.alloc(20_000, 7) });
    const config = (maxObjectBytes: number) => ({ reload: { watch: false }, cache: { maxObjectBytes }, sites: [siteFor([o.url])] });
    const g = await gateway(config(8_192));
    const status = async () => {
      const res = await request(`${g.url}/big`);
      expect((await res.body.arrayBuffer()).byteLength).toBe(20_000);
      return String(res.headers['cache-status']);
    };
    expect(await status()).not.toMatch(/stored/);
    expect(await status()).not.toMatch(/; hit/);
    writeFileSync(g.configPath, stringify(withTestDefaults(config(65_536))));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect(await status()).toMatch(/stored/);
    expect(await status()).toMatch(/; hit/);
    // The first too large (its fill let go at the head, then streamed), the second passed
    // (hit-for-pass), the third stored; the fourth a hit.
    expect(o.count('/big')).toBe(4);
    // Lowered again: a new one is not stored; the copy stored already answers until it expires.
    writeFileSync(g.configPath, stringify(withTestDefaults(config(8_192))));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    o.route('/big2', { headers: { 'cache-control': 'public, max-age=60' }, body: Buffer.alloc(20_000, 7) });
    expect(String((await request(`${g.url}/big2`)).headers['cache-status'])).not.toMatch(/stored/);
    expect(await status()).toMatch(/; hit/);
  });

  it('an answer as long as cache.maxObjectBytes is stored and then a hit, however long its URL and headers (attacker trial: said stored, never kept, a crowd all went to the origin)', async () => {
    const o = await origin();
    const path = `/edge?${'q'.repeat(1_500)}`;
    o.route('/edge', {
      headers: { 'cache-control': 'public, max-age=60', 'content-type': 'application/octet-stream', 'content-security-policy': `default-src 'self' ${'a'.repeat(2_000)}` },
      body: Buffer.alloc(8_192, 7),
    });
    const g = await gateway({ cache: { maxObjectBytes: 8_192 }, sites: [siteFor([o.url])] });
    const statusOf = async () => {
      const res = await request(`${g.url}${path}`);
      expect((await res.body.arrayBuffer()).byteLength).toBe(8_192);
      return String(res.headers['cache-status']);
    };
    expect(await statusOf()).toMatch(/stored/);
    expect(await statusOf()).toMatch(/; hit/);
    expect(await statusOf()).toMatch(/; hit/);
    expect(o.count('/edge')).toBe(1);
  });

  it('a raise of cache.collapse.maxWaiters by reload collapses the requests it used to send on alone (config audit)', async () => {
    const o = await origin();
    o.route('/slow', { delayMs: 300, headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `page ${r.url}` });
    const config = (maxWaiters: number) => ({ reload: { watch: false }, cache: { collapse: { maxWaiters } }, sites: [siteFor([o.url])] });
    const g = await gateway(config(1));
    const crowd = (path: string) => Promise.all(Array.from({ length: 5 }, () => request(`${g.url}${path}`).then((r) => r.body.text())));
    await crowd('/slow?a');
    expect(o.count('/slow?a')).toBeGreaterThan(1); // one waiter; the others asked alone
    writeFileSync(g.configPath, stringify(withTestDefaults(config(100))));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect(await crowd('/slow?b')).toEqual(Array(5).fill('page /slow?b'));
    expect(o.count('/slow?b')).toBe(1);
  });
});

describe('cache: hit-for-pass is the URL\'s, never one request\'s', () => {
  it('an error the origin gave one request (431 for a header too large) sends nobody else past the cache', async () => {
    const o = await origin();
    o.route('/page', (req, res) => {
      if (String(req.headers['x-pad'] ?? '').length > 1000) {
        res.writeHead(431, { 'content-type': 'text/plain' });
        res.end('too large');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
      res.end('page');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const refused = await get(`${g.url}/page`, { 'x-pad': 'a'.repeat(2000) });
    expect(refused.status).toBe(431);
    const visitors = [];
    for (let i = 0; i < 5; i++) visitors.push(await get(`${g.url}/page`));
    expect(visitors.map((v) => v.body)).toEqual(['page', 'page', 'page', 'page', 'page']);
    expect(visitors[0]!.headers['cache-status']).not.toMatch(/pass/);
    expect(visitors[4]!.headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/page')).toBe(2); // the 431 and one fill
  });

  it('an uncacheable answer one client drew for a page that has a stored copy sends nobody else past the cache (attacker trial)', async () => {
    // A POST invalidates the copy; the attacker's GET, with a User-Agent the origin redirects
    // (a mobile redirect, no cache headers), leads the revalidation: its 302 used to mark the
    // page hit-for-pass and send the whole crowd to the origin for 5 s, again and again.
    const o = await origin();
    o.route('/page', (req, res) => {
      if (req.method === 'POST') {
        res.writeHead(204);
        res.end();
        return;
      }
      if (String(req.headers['user-agent'] ?? '').includes('iPhone')) {
        res.writeHead(302, { location: '/m/page', 'content-length': 0 });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=300' });
      res.end('page');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/page`)).body).toBe('page');
    expect((await request(`${g.url}/page`, { method: 'POST', body: 'x' })).statusCode).toBe(204);
    const drawn = await get(`${g.url}/page`, { 'user-agent': 'Mozilla/5.0 (iPhone)' });
    expect(drawn.status).toBe(302);
    const visitors = [];
    for (let i = 0; i < 4; i++) visitors.push(await get(`${g.url}/page`));
    expect(visitors.map((v) => v.body)).toEqual(['page', 'page', 'page', 'page']);
    expect(visitors.map((v) => /pass/.test(v.headers['cache-status'] ?? ''))).toEqual([false, false, false, false]);
    expect(visitors[3]!.headers['cache-status']).toMatch(/; hit/);
    expect(o.count((r) => r.method === 'GET')).toBe(3); // the first fill, the attacker's, one refill
    // A URL with nothing stored that answers uncacheable is still hit-for-pass.
    o.route('/private', { headers: { 'cache-control': 'private' } });
    await get(`${g.url}/private`);
    expect((await get(`${g.url}/private`)).headers['cache-status']).toMatch(/pass/);
  });
});

describe('cache: why an answer was not stored', () => {
  it('counts answers not stored by route and reason, and names the cookies of a Set-Cookie refusal in one warning a minute; setCookie: strip stores them (WordPress trial: a language plugin)', async () => {
    const clock = manualClock();
    const o = await origin();
    const page: OriginHandler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60', 'set-cookie': ['pll_language=en; path=/', 'consent=unset; path=/'] });
      res.end('<p>a post</p>');
    };
    o.route('/post', page);
    o.route('/other', page);
    o.route('/shared/post', page);
    o.route('/private', { headers: { 'cache-control': 'private' } });
    o.route('/big', { headers: { 'cache-control': 'public, max-age=60' }, body: 'b'.repeat(4096) });
    o.route('/token/page', { headers: { 'cache-control': 'public, max-age=60', 'set-cookie': 'abc123secretvalue; Path=/' }, body: 'page' });
    const site = siteFor([o.url], {
      bypassCookies: ['*session*', 'DokuWiki'],
      routes: [
        { name: 'shared', match: { pathPrefix: '/shared/' }, cache: { setCookie: 'strip' } },
        { name: 'token', match: { pathPrefix: '/token/' } },
        { name: 'media', match: { pathPrefix: '/lib/exe/' }, cache: { ignoreSessionCookies: true } },
        { name: 'pages', match: { pathPrefix: '/' } },
      ],
    });
    const g = await gateway({ cache: { maxObjectBytes: 2048 }, sites: [site] }, { clock });
    for (const path of ['/post', '/post', '/other', '/private', '/shared/post', '/shared/post', '/big', '/token/page']) await get(`${g.url}${path}`);
    expect(o.count('/post') + o.count('/other')).toBe(3); // never stored
    expect(o.count('/shared/post')).toBe(1); // stored without the cookies
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    // The second /post is passed by hit-for-pass: no fill, nothing decided.
    expect(metrics).toContain('crowdgate_not_stored_total{site="test",route="pages",reason="set_cookie"} 2');
    expect(metrics).toContain('crowdgate_not_stored_total{site="test",route="pages",reason="private"} 1');
    expect(metrics).toContain('crowdgate_not_stored_total{site="test",route="pages",reason="too_large"} 1');
    expect(metrics).not.toMatch(/crowdgate_not_stored_total\{site="test",route="shared"/);
    const warned = () => g.logs.filter((l) => String(l.msg).startsWith('answers with Set-Cookie are not stored'));
    expect(warned()).toHaveLength(2);
    expect(warned()[0]).toMatchObject({ level: 40, site: 'test', route: 'pages', cookies: ['pll_language', 'consent'], path: '/post' });
    expect(JSON.stringify(warned()[0])).not.toContain('unset'); // names, never values
    // A cookie without a name is its value alone: named as such, never logged.
    expect(warned()[1]).toMatchObject({ route: 'token', cookies: ['(nameless)'] });
    expect(JSON.stringify(warned()[1])).not.toContain('abc123secretvalue');
    clock.advance(61_000);
    await get(`${g.url}/other`);
    expect(warned()).toHaveLength(3);
    // A visitor's own cookie (Django's csrftoken): the hint is not to strip it.
    expect(warned()[0]!.msg).toContain('setCookie: strip on the route stores the pages without them');
    o.route('/form', { headers: { 'cache-control': 'public, max-age=60', 'set-cookie': 'csrftoken=abc123; Path=/' }, body: 'form' });
    clock.advance(61_000);
    await get(`${g.url}/form`);
    expect(warned()).toHaveLength(4);
    expect(warned()[3]!.msg).toContain('csrftoken looks like a cookie of each visitor\'s own');
    expect(warned()[3]!.msg).toContain('do not strip it');
    // So does one set HttpOnly, whatever its name (Debian's Redmine calls its session `Redmine`).
    o.route('/issues', { headers: { 'cache-control': 'public, max-age=60', 'set-cookie': ['lang=en; path=/', 'Redmine=abc123; path=/; HttpOnly; SameSite=Lax'] }, body: 'issues' });
    clock.advance(61_000);
    await get(`${g.url}/issues`);
    expect(warned()).toHaveLength(5);
    expect(warned()[4]).toMatchObject({ cookies: ['lang', 'Redmine'] });
    expect(warned()[4]!.msg).toContain('Redmine looks like a cookie of each visitor\'s own');
    // On a route whose fills carry no session (ignoreSessionCookies), a session the answer sets
    // was started for the fill: the hint is to strip it (DokuWiki's images, its session on each).
    o.route('/lib/exe/fetch.php', { headers: { 'cache-control': 'public, max-age=60', 'set-cookie': 'DokuWiki=abc123; path=/; HttpOnly' }, body: 'img' });
    clock.advance(61_000);
    await get(`${g.url}/lib/exe/fetch.php?media=a.png`, { cookie: 'DokuWiki=visitor' });
    expect(warned()).toHaveLength(6);
    expect(warned()[5]).toMatchObject({ route: 'media', cookies: ['DokuWiki'] });
    expect(warned()[5]!.msg).toContain('DokuWiki is a session this route\'s fills are made without');
    expect(warned()[5]!.msg).toContain('setCookie: strip on the route stores the files without it');
    expect(warned()[5]!.msg).not.toContain('do not strip');
    // A page (HTML) on such a route keeps the warning not to strip it: a form's session holds its token.
    o.route('/lib/exe/form.php', { headers: { 'cache-control': 'public, max-age=60', 'content-type': 'text/html; charset=utf-8', 'set-cookie': 'DokuWiki=def456; path=/; HttpOnly' }, body: '<form>' });
    clock.advance(61_000);
    await get(`${g.url}/lib/exe/form.php`, { cookie: 'DokuWiki=visitor' });
    expect(warned()).toHaveLength(7);
    expect(warned()[6]!.msg).toContain('do not strip it');
  });

  it('says once per route when a route\'s defaultTtlSeconds meets answers stored with a lifetime of their own of zero, which are revalidated every time (Ghost trial: public, max-age=0 on every page); a floor raises it and says nothing', async () => {
    const o = await origin();
    // Ghost's pages: public, max-age=0 and a weak ETag; it answers a matching If-None-Match with 304.
    o.route('/post', (req, res) => {
      const etag = 'W/"p1"';
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'public, max-age=0' });
        return void res.end();
      }
      res.writeHead(200, { etag, 'cache-control': 'public, max-age=0', 'content-type': 'text/html' });
      res.end('<p>post</p>');
    });
    const site = siteFor([o.url], {
      routes: [
        { name: 'floored', match: { pathPrefix: '/f/' }, cache: { defaultTtlSeconds: 60, ttlFloorSeconds: 60 } },
        { name: 'pages', match: { pathPrefix: '/' }, cache: { defaultTtlSeconds: 60 } },
      ],
    });
    o.route('/f/post', { headers: { etag: 'W/"f1"', 'cache-control': 'public, max-age=0' }, body: 'floored' });
    const g = await gateway({ sites: [site] });
    const said = () => g.logs.filter((l) => String(l.msg).includes('revalidated with the origin on every request'));
    for (let i = 0; i < 3; i++) expect((await get(`${g.url}/post`)).status).toBe(200);
    // Every request went to the origin (the later ones as revalidations): the route's minute did nothing.
    expect(o.count('/post')).toBe(3);
    expect(said()).toHaveLength(1);
    expect(said()[0]).toMatchObject({ level: 40, site: 'test', route: 'pages', reason: 'zero_lifetime', path: '/post' });
    expect(String(said()[0]!.msg)).toContain('ttlFloorSeconds raises a lifetime the answer states');
    // Under a floor the page is a hit, and nothing is said for that route.
    for (let i = 0; i < 3; i++) expect((await get(`${g.url}/f/post`)).status).toBe(200);
    expect(o.count('/f/post')).toBe(1);
    expect(said()).toHaveLength(1);
    // A no-cache answer is said apart: no floor lifts it (microcacheSeconds does, for seconds).
    o.route('/nc', { headers: { etag: '"n1"', 'cache-control': 'no-cache' }, body: 'validate me' });
    for (let i = 0; i < 2; i++) expect((await get(`${g.url}/nc`)).status).toBe(200);
    expect(said()).toHaveLength(2);
    expect(said()[1]).toMatchObject({ route: 'pages', reason: 'no_cache', path: '/nc' });
    expect(String(said()[1]!.msg)).toContain('microcacheSeconds lifts it');
    // Under a floor too: no floor lifts no-cache (review: the floored route said nothing).
    o.route('/f/nc', { headers: { etag: '"n2"', 'cache-control': 'no-cache' }, body: 'validate me too' });
    for (let i = 0; i < 2; i++) expect((await get(`${g.url}/f/nc`)).status).toBe(200);
    expect(o.count('/f/nc')).toBe(2);
    expect(said()).toHaveLength(3);
    expect(said()[2]).toMatchObject({ route: 'floored', reason: 'no_cache', path: '/f/nc' });
    expect(String(said()[2]!.msg)).toContain("whatever the route's defaultTtlSeconds");
  });

  it('says once per route and reason when a route\'s lifetime meets answers sent no-store or private, which it never applies to (new-user trial: DokuWiki\'s pages); a route without one says nothing', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/doku.php', { headers: { 'cache-control': 'no-store, no-cache, must-revalidate' }, body: 'page' });
    o.route('/account', { headers: { 'cache-control': 'private' }, body: 'mine' });
    o.route('/api/x', { headers: { 'cache-control': 'no-store' }, body: '{}' });
    const site = siteFor([o.url], {
      routes: [
        { name: 'api', match: { pathPrefix: '/api/' } },
        { name: 'pages', match: { pathPrefix: '/' }, cache: { defaultTtlSeconds: 60 } },
      ],
    });
    const g = await gateway({ sites: [site] }, { clock });
    const overruled = () => g.logs.filter((l) => String(l.msg).startsWith('answers sent '));
    for (const path of ['/doku.php?id=a', '/doku.php?id=b', '/account', '/api/x', '/api/x']) await get(`${g.url}${path}`);
    expect(overruled()).toHaveLength(2);
    expect(overruled()[0]).toMatchObject({ level: 40, site: 'test', route: 'pages', reason: 'no_store', path: '/doku.php' });
    expect(String(overruled()[0]!.msg)).toContain("the route's defaultTtlSeconds does not apply");
    expect(overruled()[1]).toMatchObject({ route: 'pages', reason: 'private', path: '/account' });
    // Once per route and reason under a config: not again a minute later (a catch-all route
    // meets a login page's no-store all day long: review).
    clock.advance(61_000);
    await get(`${g.url}/doku.php?id=c`);
    expect(overruled()).toHaveLength(2);
    // Again under a new config.
    const edited = siteFor([o.url], {
      routes: [
        { name: 'api', match: { pathPrefix: '/api/' } },
        { name: 'pages', match: { pathPrefix: '/' }, cache: { defaultTtlSeconds: 30 } },
      ],
    });
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: [edited] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    await get(`${g.url}/doku.php?id=d`);
    expect(overruled()).toHaveLength(3);
  });
});

describe('cache: a bypassCookies list that leaves out a default session cookie', () => {
  it('warns once per pattern when a request carries such a cookie (treated as anonymous, as the list says); a site on the default list bypasses it and says nothing', async () => {
    const o = await origin();
    o.route('/post', { headers: { 'cache-control': 'public, max-age=60' }, body: 'post' });
    const g = await gateway({
      sites: [
        siteFor([o.url], { name: 'shop', hosts: ['shop.test'], bypassCookies: ['woocommerce_items_in_cart', 'wp_woocommerce_session_*'] }),
        siteFor([o.url], { name: 'blog', hosts: ['blog.test'] }),
      ],
    });
    const admin = { cookie: 'wordpress_logged_in_abc=admin%7C1; _ga=GA1' };
    const shop = [await get(`${g.url}/post`, { host: 'shop.test' }), await get(`${g.url}/post`, { host: 'shop.test', ...admin }), await get(`${g.url}/post`, { host: 'shop.test', ...admin })];
    expect(shop.map((r) => /; hit/.test(r.headers['cache-status'] ?? ''))).toEqual([false, true, true]);
    const blog = await get(`${g.url}/post`, { host: 'blog.test', ...admin });
    expect(blog.headers['cache-status']).toMatch(/bypass/);
    const warned = g.logs.filter((l) => String(l.msg).startsWith('a request carried a cookie the default bypassCookies list names'));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, site: 'shop', cookie: 'wordpress_logged_in_abc', pattern: 'wordpress_logged_in_*' });
    expect(JSON.stringify(warned[0])).not.toContain('admin%7C1');
  });
});

describe('cache: stale serving', () => {
  it('answers inside stale-while-revalidate without waiting, then refreshes in the background once', async () => {
    const clock = manualClock();
    const o = await origin();
    let version = 1;
    const swr = { 'cache-control': 'public, max-age=1, stale-while-revalidate=30' };
    o.route('/swr', clocked(clock, { headers: swr, body: () => `v${version}` }));
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    expect((await get(`${g.url}/swr`)).body).toBe('v1');
    clock.advance(1_100); // past max-age=1, inside stale-while-revalidate=30
    version = 2;
    o.route('/swr', clocked(clock, { delayMs: 300, headers: swr, body: () => `v${version}` }));
    const stale = await Promise.all(Array.from({ length: 10 }, () => get(`${g.url}/swr`)));
    expect(stale.every((r) => r.body === 'v1')).toBe(true);
    expect(stale.every((r) => /hit; ttl=-\d+/.test(r.headers['cache-status']!))).toBe(true);
    expect(Math.max(...stale.map((r) => r.ms))).toBeLessThan(250); // the refresh takes 300 ms at the origin
    // The refresh runs in real time: wait until it has settled (and stored), then count.
    await expect.poll(() => g.gw.inflight.size).toBe(0);
    expect(o.count('/swr')).toBe(2); // one background refresh for ten stale answers
    expect((await get(`${g.url}/swr`)).body).toBe('v2');
  });

  it('drops a stale copy when its refresh finds the page gone (a 404 it may not store): no more stale answers, and none at the next outage', async () => {
    const clock = manualClock();
    const o = await origin();
    const swr = { 'cache-control': 'public, max-age=1, stale-while-revalidate=30, stale-if-error=600' };
    o.route('/post', clocked(clock, { headers: swr, body: 'the post' }));
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    expect((await get(`${g.url}/post`)).body).toBe('the post');
    clock.advance(1_100);
    // Deleted: WordPress answers its 404 with no-cache.
    o.route('/post', { status: 404, headers: { 'cache-control': 'no-cache, must-revalidate, max-age=0' }, body: 'gone' });
    const updating = await get(`${g.url}/post`);
    expect(updating.body).toBe('the post'); // the refresh starts behind this answer
    await expect.poll(() => g.gw.inflight.size).toBe(0);
    const after = [];
    for (let i = 0; i < 3; i++) after.push(await get(`${g.url}/post`));
    expect(after.map((r) => [r.status, r.body])).toEqual([
      [404, 'gone'],
      [404, 'gone'],
      [404, 'gone'],
    ]);
    // And the origin failing later brings nothing back.
    o.route('/post', { status: 500, body: 'broken' });
    expect((await get(`${g.url}/post`)).status).toBe(500);
  });

  it('keeps a stale copy that a 404 meets while the origin is in trouble (its last refresh failed): a WAF or a vhost default is no deletion', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/hot', clocked(clock, { headers: { 'cache-control': 'public, max-age=1, stale-if-error=600' }, body: 'hot' }));
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { graceSeconds: 60 } }] })] }, { clock });
    for (let i = 0; i < 10; i++) await get(`${g.url}/hot`);
    clock.advance(1_100);
    o.route('/hot', { status: 500, body: 'down' });
    expect((await get(`${g.url}/hot`)).body).toBe('hot');
    await expect.poll(() => g.gw.inflight.size).toBe(0);
    o.route('/hot', { status: 404, headers: { 'cache-control': 'no-cache' }, body: 'not here' });
    clock.advance(1_100); // the next refresh may start: it meets the 404
    expect((await get(`${g.url}/hot`)).body).toBe('hot');
    await expect.poll(() => g.gw.inflight.size).toBe(0);
    expect(o.count((r) => r.path === '/hot')).toBe(3);
    o.route('/hot', { status: 500, body: 'down' });
    expect((await get(`${g.url}/hot`)).body).toBe('hot'); // still there for the outage
  });

  it('while its refreshes fail, a hot page asks the origin once a second, not once per visitor', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/hot', clocked(clock, { headers: { 'cache-control': 'public, max-age=1, stale-if-error=600' }, body: 'hot' }));
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { graceSeconds: 60 } }] })] }, { clock });
    for (let i = 0; i < 10; i++) expect((await get(`${g.url}/hot`)).body).toBe('hot'); // read by a crowd
    clock.advance(1_100);
    o.route('/hot', { status: 500, body: 'Error establishing a database connection' });
    const during = [];
    for (let i = 0; i < 8; i++) {
      during.push(await get(`${g.url}/hot`));
      await expect.poll(() => g.gw.inflight.size).toBe(0); // each refresh has failed before the next visitor
    }
    expect(during.map((r) => r.body)).toEqual(Array(8).fill('hot'));
    expect(o.count((r) => r.path === '/hot')).toBe(2); // the fill, then one failed refresh
    clock.advance(1_100);
    expect((await get(`${g.url}/hot`)).body).toBe('hot');
    await expect.poll(() => o.count((r) => r.path === '/hot')).toBe(3); // a second later, one more try
  });

  it('serves the cached page as stale while the origin answers 500 or is down, for the grace window', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/news', clocked(clock, { headers: { 'cache-control': 'public, max-age=1', etag: '"n1"' }, body: 'news' }));
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { graceSeconds: 30, staleWhileRevalidateSeconds: 0 } }] })] },
      { clock },
    );
    expect((await get(`${g.url}/news`)).body).toBe('news');
    clock.advance(1_100); // past max-age=1, inside the 30 s grace
    o.route('/news', { status: 500, body: 'broken' });
    const during500 = await get(`${g.url}/news`);
    expect(during500.status).toBe(200);
    expect(during500.body).toBe('news');
    expect(during500.headers['cache-status']).toMatch(/fwd=stale.*detail="stale-error/);
    o.kill();
    clock.advance(1_000); // a failed refresh is not retried for a second (the copy answers meanwhile)
    const whileDown = await get(`${g.url}/news`);
    expect(whileDown.status).toBe(200);
    expect(whileDown.body).toBe('news');
    expect(whileDown.headers['cache-status']).toMatch(/stale/);
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_stale_served_total\{site="test",reason="error"\} 1/);
    expect(metrics).toMatch(/crowdgate_stale_served_total\{site="test",reason="unreachable"\} 1/);
    const access = g.accessLogs().filter((l) => l.path === '/news');
    expect(access.at(-1)?.cache).toBe('stale');
  });

  it('does not serve stale past the grace window', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/short', clocked(clock, { headers: { 'cache-control': 'public, max-age=1' }, body: 'short' }));
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { graceSeconds: 1, staleWhileRevalidateSeconds: 0 } }] })] },
      { clock },
    );
    await get(`${g.url}/short`);
    o.route('/short', { status: 500, body: 'broken' });
    // Inside max-age=1 + graceSeconds=1 the copy still stands in for the 500 ...
    clock.advance(1_500);
    const within = await get(`${g.url}/short`);
    expect([within.status, within.body]).toEqual([200, 'short']);
    expect(within.headers['cache-status']).toMatch(/detail="stale-error/);
    // ... and past it, it does not: the client gets the origin's error.
    clock.advance(600);
    const res = await get(`${g.url}/short`);
    expect(res.status).toBe(500);
    expect(res.body).toBe('broken');
  });

  it('gives copies already stored a grace raised by a reload during an outage, as the runbook says (ops trial: they turned into 502s at their old grace); a copy on an unchanged route keeps its own', async () => {
    const clock = manualClock();
    const o = await origin();
    for (const path of ['/page', '/static/app.css', '/wiki']) o.route(path, clocked(clock, { headers: { 'cache-control': path === '/wiki' ? 'public, s-maxage=120, must-revalidate, max-age=0' : 'public, max-age=60' }, body: `copy of ${path}` }));
    const site = (pagesGrace: number, wikiOverride: boolean) =>
      siteFor([o.url], {
        routes: [
          { name: 'static', match: { pathPrefix: '/static/' }, cache: { graceSeconds: 60, staleWhileRevalidateSeconds: 0 } },
          { name: 'wiki', match: { pathPrefix: '/wiki' }, cache: { graceSeconds: 3600, graceOverridesMustRevalidate: wikiOverride } },
          { name: 'pages', cache: { graceSeconds: pagesGrace, staleWhileRevalidateSeconds: 0 } },
        ],
      });
    const g = await gateway({ reload: { watch: false }, sites: [site(60, false)] }, { clock });
    for (const path of ['/page', '/static/app.css', '/wiki']) expect((await get(`${g.url}${path}`)).status).toBe(200);
    // The origin fails; 100 s in (60 s fresh, 40 s of the 60 s grace; the wiki page still
    // fresh for 20 s, and kept no longer) the operator raises the pages' grace to an hour and
    // lets the wiki's hour stand in for its must-revalidate.
    for (const path of ['/page', '/static/app.css', '/wiki']) o.route(path, { status: 502, body: 'origin down' });
    clock.advance(100_000);
    expect((await get(`${g.url}/page`)).body).toBe('copy of /page');
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: [site(3600, true)] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    // 30 minutes on: the page and the wiki page still stand in; the static file's grace ran out.
    clock.advance(30 * 60_000);
    const page = await get(`${g.url}/page`);
    expect([page.status, page.body]).toEqual([200, 'copy of /page']);
    expect(page.headers['cache-status']).toMatch(/detail="stale-/);
    const wiki = await get(`${g.url}/wiki`);
    expect([wiki.status, wiki.body]).toEqual([200, 'copy of /wiki']);
    const file = await get(`${g.url}/static/app.css`);
    expect([file.status, file.body]).toEqual([502, 'origin down']);
    // And past the raised grace, the page's too.
    clock.advance(31 * 60_000);
    expect((await get(`${g.url}/page`)).status).toBe(502);
    expect(g.logs.find((l) => l.msg === 'grace raised: copies stored before the reload have the new grace')).toMatchObject({ site: 'test', widened: 2 });
    // An edit that gives no route more grace walks no copy, though the site's routes differ in
    // grace (the shipped config's day for /static/ beside an hour walked the store at every
    // edit; review).
    const store = g.gw.store as { widenGrace?: (...args: never[]) => Promise<number> };
    const walk = store.widenGrace!.bind(store);
    let walks = 0;
    store.widenGrace = (...args: never[]) => (walks++, walk(...args));
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, admission: { queue: { deadlineMs: 700 } }, sites: [site(3600, true)] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect(walks).toBe(0);
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: [site(7200, true)] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect(walks).toBe(1);
  });
});

describe('cache: server errors and unknown statuses', () => {
  it('stores a server error or an unknown status that carries explicit freshness (RFC 9111 §3), and a stored error never stands in for a new one', async () => {
    const clock = new ManualClock(Date.now());
    const o = await origin();
    o.route('/maintenance', { status: 503, headers: { 'cache-control': 'max-age=2' }, body: 'back soon' });
    o.route('/odd', { status: 599, headers: { 'cache-control': 'max-age=60' }, body: 'odd' });
    o.route('/understand', { status: 599, headers: { 'cache-control': 'max-age=60, must-understand' }, body: 'odd' });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { graceSeconds: 30 } }] })] }, { clock });
    for (let i = 0; i < 3; i++) {
      const res = await get(`${g.url}/maintenance`);
      expect([res.status, res.body]).toEqual([503, 'back soon']);
      if (i > 0) expect(res.headers['cache-status']).toMatch(/; hit/);
      expect((await get(`${g.url}/odd`)).status).toBe(599);
      expect((await get(`${g.url}/understand`)).status).toBe(599);
    }
    expect(o.count('/maintenance')).toBe(1);
    expect(o.count('/odd')).toBe(1);
    expect(o.count('/understand')).toBe(3); // must-understand: an unknown status is not stored
    // Stale, within grace: the origin's new error is the answer, not the stored one.
    clock.advance(3_000);
    o.route('/maintenance', { status: 500, body: 'broken' });
    const after = await get(`${g.url}/maintenance`);
    expect([after.status, after.body]).toEqual([500, 'broken']);
    expect(after.headers['cache-status']).not.toMatch(/stale/);
    // Nor for an origin that does not answer at all: a stored 503 that is stale is not served
    // for an unreachable origin (the same rule as for an error), even within grace.
    o.route('/maintenance', { status: 503, headers: { 'cache-control': 'max-age=1, stale-if-error=60' }, body: 'back soon' });
    clock.advance(3_000);
    expect((await get(`${g.url}/maintenance`)).body).toBe('back soon'); // stored again
    clock.advance(1_500); // stale, inside stale-if-error and grace
    o.kill();
    const down = await get(`${g.url}/maintenance`);
    expect(down.status).toBe(502);
    expect(down.body).not.toBe('back soon');
    expect(down.headers['cache-status']).not.toMatch(/stale/);
  });
});

describe('cache: correctness', () => {
  it('keeps Vary variants apart', async () => {
    const o = await origin();
    o.route('/v', {
      headers: { 'cache-control': 'public, max-age=60', vary: 'Accept-Language' },
      body: (r) => `lang=${r.headers['accept-language'] ?? 'none'}`,
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/v`, { 'accept-language': 'fr' })).body).toBe('lang=fr');
    expect((await get(`${g.url}/v`, { 'accept-language': 'de' })).body).toBe('lang=de');
    const fr = await get(`${g.url}/v`, { 'accept-language': 'fr' });
    expect(fr.body).toBe('lang=fr');
    expect(fr.headers['cache-status']).toMatch(/hit/);
    const de = await get(`${g.url}/v`, { 'accept-language': 'de' });
    expect(de.body).toBe('lang=de');
    expect(o.count('/v')).toBe(2);
  });

  it('a flood of made-up Accept-Language values never pushes out the copy readers are answered with: the variant read least goes first (#14)', async () => {
    const o = await origin();
    const asked: string[] = [];
    o.route('/v', {
      headers: { 'cache-control': 'public, max-age=600', vary: 'Accept-Language' },
      body: (r) => {
        asked.push(String(r.headers['accept-language']));
        return `lang=${r.headers['accept-language'] ?? 'none'}`;
      },
    });
    const g = await gateway({ sites: [siteFor([o.url])] }); // cache.maxVariants 16
    expect((await get(`${g.url}/v`, { 'accept-language': 'en-us' })).body).toBe('lang=en-us');
    expect((await get(`${g.url}/v`, { 'accept-language': 'en-us' })).headers['cache-status']).toMatch(/; hit/);
    for (let i = 0; i < 40; i++) expect((await get(`${g.url}/v`, { 'accept-language': `x-flood${i}` })).body).toBe(`lang=x-flood${i}`);
    const reader = await get(`${g.url}/v`, { 'accept-language': 'en-us' });
    expect(reader.body).toBe('lang=en-us');
    expect(reader.headers['cache-status']).toMatch(/; hit/);
    expect(asked.filter((v) => v === 'en-us')).toHaveLength(1); // the origin was asked for it once
    expect(asked).toHaveLength(41);
  });

  it('refreshes the stored headers from a 304 (RFC 9111 §4.3.4)', async () => {
    const clock = manualClock();
    const o = await origin();
    o.route('/r', clocked(clock, { headers: { 'cache-control': 'public, max-age=1', etag: '"v1"', 'x-version': 'one' }, body: 'body-v1' }));
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0 } }] })] }, { clock });
    await get(`${g.url}/r`);
    clock.advance(1_100); // past max-age=1
    o.route('/r', (req, res) => {
      expect(req.headers['if-none-match']).toBe('"v1"');
      res.writeHead(304, { 'cache-control': 'public, max-age=60', etag: '"v1"', 'x-version': 'two', date: new Date(clock.now()).toUTCString() });
      res.end();
    });
    const revalidated = await get(`${g.url}/r`);
    expect(revalidated.status).toBe(200);
    expect(revalidated.body).toBe('body-v1');
    expect(revalidated.headers['x-version']).toBe('two');
    expect(revalidated.headers['cache-status']).toMatch(/fwd=stale; fwd-status=304; stored/);
    const hit = await get(`${g.url}/r`);
    expect(hit.headers['cache-status']).toMatch(/hit/);
    expect(hit.headers['x-version']).toBe('two');
    expect(o.count('/r')).toBe(2);
  });

  it('answers a client If-None-Match with 304 from the cache', async () => {
    const o = await origin();
    o.route('/c', { headers: { 'cache-control': 'public, max-age=60', etag: '"abc"' }, body: 'content' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/c`);
    const res = await get(`${g.url}/c`, { 'if-none-match': '"abc"' });
    expect(res.status).toBe(304);
    expect(res.body).toBe('');
    expect(res.headers['etag']).toBe('"abc"');
    expect(o.count('/c')).toBe(1);
  });

  it('serves a stored 204 without Content-Length, as the origin sent it (RFC 9110 §8.6; differential trial: Content-Length: 0 from the cache)', async () => {
    const o = await origin();
    o.route('/ping', (_req, res) => {
      res.writeHead(204, { 'cache-control': 'public, max-age=60', 'x-kind': 'beacon' });
      res.end();
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const state of [/fwd=uri-miss/, /; hit/]) {
      const res = await get(`${g.url}/ping`);
      expect(res.status).toBe(204);
      expect(res.headers['cache-status']).toMatch(state);
      expect(res.headers['x-kind']).toBe('beacon');
      expect(res.headers['content-length']).toBeUndefined();
    }
    expect(o.count('/ping')).toBe(1);
  });

  it('sends a request with If-Match or If-Unmodified-Since to the origin as it came, which answers it (RFC 9111 §4.3.2; differential trial: the copy answered 200 where the origin answered 412)', async () => {
    const o = await origin();
    const lm = 'Mon, 01 Jun 2026 10:00:00 GMT';
    o.route('/doc', (req, res) => {
      const im = req.headers['if-match'];
      const ius = req.headers['if-unmodified-since'];
      const fails = (im !== undefined && im !== '*' && !im.split(',').some((t) => t.trim() === '"v2"')) || (im === undefined && ius !== undefined && Date.parse(ius) < Date.parse(lm));
      res.writeHead(fails ? 412 : 200, { 'cache-control': 'public, max-age=60', etag: '"v2"', 'last-modified': lm });
      res.end(fails ? '' : 'version two');
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/doc`)).headers['cache-status']).toMatch(/fwd=uri-miss[^]*stored/);
    for (const [headers, status] of [
      [{ 'if-match': '"v1"' }, 412],
      [{ 'if-match': '"v1", "v2"' }, 200],
      [{ 'if-unmodified-since': 'Sun, 31 May 2026 10:00:00 GMT' }, 412],
      [{ 'if-unmodified-since': lm }, 200],
    ] as const) {
      const res = await get(`${g.url}/doc`, headers);
      expect(res.status, JSON.stringify(headers)).toBe(status);
      expect(res.headers['cache-status'], JSON.stringify(headers)).toMatch(/fwd=bypass/);
    }
    // Each reached the origin with its precondition; the copy still answers everyone else.
    expect(o.requests.slice(1).map((r) => r.headers['if-match'] ?? r.headers['if-unmodified-since'])).toEqual(['"v1"', '"v1", "v2"', 'Sun, 31 May 2026 10:00:00 GMT', lm]);
    expect((await get(`${g.url}/doc`)).headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/doc')).toBe(5);
  });

  it('invalidates the URL and its Location after a successful POST (RFC 9111 §4.4)', async () => {
    const o = await origin();
    o.route('/item', { headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `item ${r.seq}` });
    o.route('/other', { headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `other ${r.seq}` });
    o.route('/submit', { status: 303, headers: { location: '/other' } });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const itemBefore = (await get(`${g.url}/item`)).body;
    const otherBefore = (await get(`${g.url}/other`)).body;
    const post = await request(`${g.url}/item`, { method: 'POST', body: 'x' });
    await post.body.text();
    const submit = await request(`${g.url}/submit`, { method: 'POST', body: 'y' });
    await submit.body.text();
    await sleep(20);
    expect((await get(`${g.url}/item`)).body).not.toBe(itemBefore);
    expect((await get(`${g.url}/other`)).body).not.toBe(otherBefore);
  });

  it('with invalidateOnUnsafeMethods off, a successful POST invalidates nothing: the page stays a hit until its TTL (nginx and Varnish by default)', async () => {
    const o = await origin();
    o.route('/item', { headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `item ${r.seq}` });
    o.route('/other', { headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `other ${r.seq}` });
    o.route('/submit', { status: 303, headers: { location: '/other' } });
    const g = await gateway({ sites: [siteFor([o.url], { invalidateOnUnsafeMethods: false })] });
    const itemBefore = (await get(`${g.url}/item`)).body;
    const otherBefore = (await get(`${g.url}/other`)).body;
    await (await request(`${g.url}/item`, { method: 'POST', body: 'x' })).body.text();
    await (await request(`${g.url}/submit`, { method: 'POST', body: 'y' })).body.text();
    await sleep(20);
    const item = await get(`${g.url}/item`);
    expect(item.body).toBe(itemBefore);
    expect(item.headers['cache-status']).toMatch(/; hit/);
    expect((await get(`${g.url}/other`)).body).toBe(otherBefore);
    // The POSTs reached the origin; no GET did after the fills.
    expect(o.count('/item')).toBe(2);
    expect(o.count('/other')).toBe(1);
  });

  it('a client\'s max-stale never reads a copy a POST invalidated: the page is validated first (RFC 9111 §4.4; attacker trial)', async () => {
    const o = await origin();
    o.route('/item', { headers: { 'cache-control': 'public, max-age=60' }, body: (r) => `item ${r.seq}` });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const before = (await get(`${g.url}/item`)).body;
    await (await request(`${g.url}/item`, { method: 'POST', body: 'x' })).body.text();
    await sleep(20);
    const stale = await get(`${g.url}/item`, { 'cache-control': 'max-stale' });
    expect(stale.body).not.toBe(before);
    expect(o.count('/item')).toBe(3); // the fill, the POST, the validation
  });

  it('honours CDN-Cache-Control and passes it on (a CDN in front is its target too); strips its own targeted field', async () => {
    const o = await origin();
    o.route('/cdn', { headers: { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' }, body: 'cdn' });
    o.route('/own', { headers: { 'cache-control': 'no-store', 'crowdgate-cache-control': 'max-age=60' }, body: 'own' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/cdn`);
    expect(first.headers['cdn-cache-control']).toBe('max-age=60');
    const second = await get(`${g.url}/cdn`);
    expect(second.headers['cache-status']).toMatch(/hit/);
    expect(second.headers['cdn-cache-control']).toBe('max-age=60');
    expect(second.headers['cache-control']).toBe('no-store');
    expect(o.count('/cdn')).toBe(1);
    for (let i = 0; i < 2; i++) expect((await get(`${g.url}/own`)).headers['crowdgate-cache-control']).toBeUndefined();
    expect(o.count('/own')).toBe(1);
  });

  it('a targeted private=?1 (RFC 9213 §2.1: bare private) is never served to a second client: not stored, not shared with a waiter, not kept for grace', async () => {
    const o = await origin();
    // Each answer is its asker's own page; Cache-Control would let any cache share it.
    const own = (extra: Record<string, string>): OriginHandler => (_req, res, r) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', ...extra });
        res.end(`account of asker ${r.seq}`);
      }, 100);
    };
    o.route('/cdn', own({ 'cache-control': 'public, max-age=60', 'cdn-cache-control': 'max-age=60, private=?1' }));
    o.route('/own', own({ 'crowdgate-cache-control': 'private=?1' }));
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const path of ['/cdn', '/own']) {
      const first = await get(`${g.url}${path}`);
      const second = await get(`${g.url}${path}`);
      expect(second.body, path).not.toBe(first.body);
      expect(second.headers['cache-status'], path).not.toMatch(/; hit/);
      // Two at once: the one that joins the other's fill gets an answer of its own.
      const [a, b] = await Promise.all([get(`${g.url}${path}`), get(`${g.url}${path}`)]);
      expect(a.body, path).not.toBe(b.body);
    }
    // The origin fails: nothing of another asker's stands in for it.
    o.route('/own', { status: 503, body: 'down' });
    const down = await get(`${g.url}/own`);
    expect(down.body).not.toMatch(/account of asker/);
    expect(o.count('/cdn')).toBe(4);
  });

  it('drops tracking parameters from the key', async () => {
    const o = await origin();
    o.route('/t', { headers: { 'cache-control': 'public, max-age=60' }, body: 't' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/t?a=1&utm_source=hn&fbclid=zzz`);
    const res = await get(`${g.url}/t?a=1&gclid=1`);
    expect(res.headers['cache-status']).toMatch(/hit/);
    expect(o.count('/t')).toBe(1);
  });

  it('never serves a private page, or one that set a cookie, to another client (property-based)', async () => {
    const o = await origin();
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { defaultTtlSeconds: 60 } }] })] });
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          cc: fc.constantFrom('', 'public, max-age=60', 'private', 'private, max-age=60', 'no-store', 'no-cache', 's-maxage=60', 'max-age=60, must-revalidate', 'public'),
          setCookie: fc.boolean(),
          vary: fc.constantFrom('', 'Cookie', '*', 'Accept-Encoding'),
          userAuth: fc.boolean(),
          userCookie: fc.boolean(),
        }),
        async ({ cc, setCookie, vary, userAuth, userCookie }) => {
          const path = `/p${n++}`;
          const secret = `secret-${n}-${Math.random()}`;
          o.route(path, (req, res) => {
            const headers: Record<string, string> = { 'content-type': 'text/plain' };
            if (cc) headers['cache-control'] = cc;
            if (vary) headers['vary'] = vary;
            if (setCookie) headers['set-cookie'] = `session=${secret}`;
            const personal = req.headers.authorization || req.headers.cookie;
            res.writeHead(200, headers);
            res.end(personal ? `private page ${secret}` : 'public page');
          });
          const userHeaders: Record<string, string> = {};
          if (userAuth) userHeaders['authorization'] = 'Bearer user-a';
          if (userCookie) userHeaders['cookie'] = 'session=user-a';
          const a = await get(`${g.url}${path}`, userHeaders);
          // RFC 9111 §3, §3.5: what a shared cache must never hand to someone else.
          const explicitlyShared = /public|s-maxage|must-revalidate/.test(cc);
          const mustNotShare =
            cc.startsWith('private') || cc.includes('no-store') || setCookie || vary === '*' || (userAuth && !explicitlyShared);
          const b = await get(`${g.url}${path}`);
          const bFromCache = /hit|collapsed/.test(b.headers['cache-status'] ?? '');
          if (mustNotShare && a.body.includes(secret)) {
            // Another client never receives user A's private body from the cache.
            expect(bFromCache && b.body.includes(secret)).toBe(false);
          }
          // Nor anyone's Set-Cookie.
          expect(bFromCache && String(b.headers['set-cookie'] ?? '').includes(secret)).toBe(false);
        },
      ),
      { numRuns: 60, seed: Number(process.env.FC_SEED ?? Date.now()), verbose: true },
    );
  });

  it('purges by tag, by prefix and everything; soft by default, hard on request', async () => {
    const o = await origin();
    o.route('/blog/a', { headers: { 'cache-control': 'public, max-age=300', 'surrogate-key': 'post-1 blog' }, body: (r) => `a${r.seq}` });
    o.route('/blog/b', { headers: { 'cache-control': 'public, max-age=300', 'cache-tag': 'post-2,blog' }, body: (r) => `b${r.seq}` });
    o.route('/about', { headers: { 'cache-control': 'public, max-age=300' }, body: (r) => `about${r.seq}` });
    const token = 'a-long-enough-token-1234';
    const g = await gateway({ admin: { purgeToken: token }, sites: [siteFor([o.url])] });
    const purge = async (body: unknown) => {
      const res = await request(`${g.adminUrl}/purge`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
      return { status: res.statusCode, body: (await res.body.json()) as { purged?: number; error?: string } };
    };
    for (const p of ['/blog/a', '/blog/b', '/about']) await get(`${g.url}${p}`);
    const firstA = await get(`${g.url}/blog/a`);
    expect(firstA.headers['surrogate-key']).toBeUndefined(); // internal: not sent to clients
    expect(await purge({ tag: 'post-2' })).toEqual({ status: 200, body: { purged: 1, mode: 'soft', kind: 'tag' } });
    expect((await get(`${g.url}/blog/a`)).headers['cache-status']).toMatch(/hit/);
    expect((await get(`${g.url}/blog/b`)).headers['cache-status']).toMatch(/fwd=stale/);
    expect((await purge({ prefix: '/blog/', mode: 'hard' })).body).toMatchObject({ purged: 2, mode: 'hard' });
    expect((await get(`${g.url}/blog/a`)).headers['cache-status']).toMatch(/fwd=uri-miss/);
    expect((await get(`${g.url}/about`)).headers['cache-status']).toMatch(/hit/);
    expect((await purge({ all: true })).body).toMatchObject({ purged: 2, mode: 'soft' }); // /blog/a (refetched) and /about
    expect((await get(`${g.url}/about`)).headers['cache-status']).toMatch(/fwd=stale/);
    expect((await purge({ tag: 'x', url: '/y' })).status).toBe(400);
    expect((await purge({ mode: 'sideways', all: true })).status).toBe(400);
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_purges_total\{kind="tag",mode="soft"\} 1/);
  });

  it('costs the origin one fetch per URL on a soft purge under load, not one per waiter', async () => {
    const o = await origin();
    o.route('/hot', { delayMs: 100, headers: { 'cache-control': 'public, max-age=300', etag: '"h"' }, body: 'hot' });
    const g = await gateway({ admin: { purgeToken: 'a-long-enough-token-1234' }, sites: [siteFor([o.url])] });
    await get(`${g.url}/hot`);
    const unauthorised = await request(`${g.adminUrl}/purge`, { method: 'POST', body: JSON.stringify({ url: '/hot' }) });
    expect(unauthorised.statusCode).toBe(401);
    await unauthorised.body.text();
    const purge = await request(`${g.adminUrl}/purge`, {
      method: 'POST',
      headers: { authorization: 'Bearer a-long-enough-token-1234', 'content-type': 'application/json' },
      body: JSON.stringify({ url: '/hot' }),
    });
    expect(purge.statusCode).toBe(200);
    expect(((await purge.body.json()) as { purged: number }).purged).toBe(1);
    const crowd = await Promise.all(Array.from({ length: 50 }, () => get(`${g.url}/hot`)));
    expect(crowd.every((r) => r.status === 200 && r.body === 'hot')).toBe(true);
    expect(o.count('/hot')).toBe(2);
  });
});

describe('cache: eviction', () => {
  it('a flood of one-off fills (one asset under ever new query strings) evicts each other, not the pages visitors read (attacker trial)', async () => {
    const o = await origin();
    for (let i = 0; i < 8; i++) o.route(`/page${i}`, { headers: { 'cache-control': 'public, max-age=600' }, body: `page ${i} `.repeat(2_000) });
    o.route('/static/app.js', { headers: { 'content-type': 'image/png', 'cache-control': 'public, max-age=86400' }, body: 'x'.repeat(100_000) });
    const g = await gateway({ cache: { maxBytes: 1_048_576 }, log: { access: false }, sites: [siteFor([o.url])] });
    for (let i = 0; i < 8; i++) {
      await get(`${g.url}/page${i}`);
      expect((await get(`${g.url}/page${i}`)).headers['cache-status']).toMatch(/hit/); // read since stored
    }
    // 40 distinct 100 kB fills: four times the 1 MiB cache.
    for (let v = 0; v < 40; v++) expect((await get(`${g.url}/static/app.js?v=${v}`)).status).toBe(200);
    for (let i = 0; i < 8; i++) expect((await get(`${g.url}/page${i}`)).headers['cache-status'], `page${i}`).toMatch(/hit/);
    for (let i = 0; i < 8; i++) expect(o.count(`/page${i}`)).toBe(1);
    expect(o.count('/static/app.js')).toBe(40);
    expect((await get(`${g.url}/static/app.js?v=39`)).headers['cache-status']).toMatch(/hit/);
  });
});
