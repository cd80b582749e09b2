/**
 * The request path under the pressure gate (the gateway process itself overloaded), with the
 * gate's verdict injected: stored pages are answered, fills under way are joined, a key with
 * nothing usable stored gets its one collapsed fill (the cheapest action that ends the
 * pressure), and everything else is shed with 503.
 */
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { ManualClock } from '../../src/clock.js';
import { siteFor } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';

const { origin, gateway } = useFixtures();

async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
  const res = await request(url, init);
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body };
}

describe('under pressure', () => {
  it('a cold cacheable key gets exactly one origin fetch, and every waiter is answered from it', async () => {
    const o = await origin();
    o.route('/hot', { delayMs: 150, headers: { 'cache-control': 'public, max-age=60' }, body: 'hot page' });
    let overloaded = true;
    const g = await gateway({ sites: [siteFor([o.url])] }, { isOverloaded: () => overloaded });
    const answers = await Promise.all(Array.from({ length: 30 }, () => call(`${g.url}/hot`)));
    expect(answers.map((a) => a.status)).toEqual(Array(30).fill(200));
    expect(answers.every((a) => a.body === 'hot page')).toBe(true);
    expect(o.count('/hot')).toBe(1);
    expect(answers.filter((a) => /collapsed/.test(a.headers['cache-status'] ?? '')).length).toBe(29);
    // Now stored: a hit, still under pressure, with no further fetch.
    const hit = await call(`${g.url}/hot`);
    expect(hit.headers['cache-status']).toMatch(/crowdgate; hit/);
    expect(o.count('/hot')).toBe(1);
    overloaded = false;
  });

  it('still sheds what the cache cannot answer: uncacheable requests and hit-for-pass keys', async () => {
    const o = await origin();
    o.route('/private', { headers: { 'cache-control': 'private, no-store' } });
    let overloaded = false;
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'api', match: { pathPrefix: '/api/' }, cache: { enabled: false } }] })] },
      { isOverloaded: () => overloaded },
    );
    expect((await call(`${g.url}/private`)).status).toBe(200); // uncacheable: hit-for-pass marked
    overloaded = true;
    const before = o.count();
    const bypass = await call(`${g.url}/api/x`);
    expect(bypass.status).toBe(503);
    expect(bypass.headers['cache-status']).toMatch(/shed-pressure/);
    const pass = await call(`${g.url}/private`);
    expect(pass.status).toBe(503);
    expect(pass.headers['cache-status']).toMatch(/shed-pressure/);
    const post = await call(`${g.url}/page`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(503);
    expect(o.count()).toBe(before);
  });

  it('answers a stored stale page at once and refreshes it once in the background', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    let version = 1;
    // Date from the injected clock, so a refetched page is not aged by the clock's jump.
    o.route('/page', (_req, res) => {
      const body = `v${version}`;
      res.writeHead(200, { 'cache-control': 'public, max-age=1', date: new Date(clock.now()).toUTCString(), 'content-length': body.length });
      res.end(body);
    });
    let overloaded = false;
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, graceSeconds: 60 } }] })] },
      { clock, isOverloaded: () => overloaded },
    );
    expect((await call(`${g.url}/page`)).body).toBe('v1');
    clock.advance(2_000);
    version = 2;
    overloaded = true;
    const first = await call(`${g.url}/page`);
    expect(first.status).toBe(200);
    expect(first.body).toBe('v1');
    expect(first.headers['cache-status']).toMatch(/detail="stale-pressure/);
    // The rest are answered at once too: stale, or the refreshed page once it is stored.
    const rest = await Promise.all(Array.from({ length: 4 }, () => call(`${g.url}/page`)));
    for (const r of rest) {
      expect(r.status).toBe(200);
      expect(`${r.body} ${r.headers['cache-status']}`).toMatch(/^v1 .*stale-pressure|^v2 crowdgate; hit/);
    }
    await expect.poll(() => o.count('/page')).toBe(2); // one refresh for the five
    await expect.poll(async () => (await call(`${g.url}/page`)).body).toBe('v2');
  });
});

describe('a page being refreshed', () => {
  it('is answered at once from its stale copy to the requests that arrive while its one refresh is under way; the first waits for it', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    let version = 1;
    o.route('/hot', (_req, res) => {
      const body = `v${version}`;
      setTimeout(() => {
        res.writeHead(200, { 'cache-control': 'public, max-age=5', date: new Date(clock.now()).toUTCString(), 'content-length': body.length });
        res.end(body);
      }, version === 1 ? 0 : 300);
    });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    expect((await call(`${g.url}/hot`)).body).toBe('v1');
    clock.advance(6_000); // stale, no stale-while-revalidate from the origin
    version = 2;
    const leader = call(`${g.url}/hot`);
    await expect.poll(() => o.count('/hot')).toBe(2); // its refresh is under way
    const during = await Promise.all(Array.from({ length: 10 }, () => call(`${g.url}/hot`)));
    for (const r of during) {
      expect(r.body).toBe('v1');
      expect(r.headers['cache-status']).toMatch(/hit; collapsed; ttl=-\d+; detail="updating/);
    }
    expect((await leader).body).toBe('v2'); // the one that found it stale waited: RFC 9111
    expect((await call(`${g.url}/hot`)).body).toBe('v2');
    expect(o.count('/hot')).toBe(2);
  });

  it('never answers a stored copy that had no freshness and no validator, even while it is refreshed', async () => {
    const o = await origin();
    let n = 0;
    o.route('/nofresh', (_req, res) => {
      const body = `n${++n}`;
      setTimeout(() => {
        res.writeHead(200, { 'content-length': body.length }); // no Cache-Control, Expires or validator
        res.end(body);
      }, 200);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await call(`${g.url}/nofresh`)).body).toBe('n1');
    const answers = await Promise.all(Array.from({ length: 5 }, () => call(`${g.url}/nofresh`)));
    for (const r of answers) expect(r.body).not.toBe('n1');
  });

  it('a hot page (one a crowd reads) is answered stale while it refreshes in the background; a quiet page waits for its revalidation', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    let version = 1;
    for (const path of ['/hot', '/quiet'])
      o.route(path, (_req, res) => {
        const body = `${path.slice(1)} v${version}`;
        res.writeHead(200, { 'cache-control': 'public, max-age=5', date: new Date(clock.now()).toUTCString(), 'content-length': body.length });
        res.end(body);
      });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    for (let i = 0; i < 6; i++) await call(`${g.url}/hot`);
    for (let i = 0; i < 2; i++) await call(`${g.url}/quiet`);
    clock.advance(6_000);
    version = 2;
    const hot = await call(`${g.url}/hot`);
    expect(hot.body).toBe('hot v1');
    expect(hot.headers['cache-status']).toMatch(/hit; ttl=-\d+; detail="updating/);
    await expect.poll(() => o.count('/hot')).toBe(2); // refreshed once in the background
    expect((await call(`${g.url}/hot`)).body).toBe('hot v2');
    const quiet = await call(`${g.url}/quiet`);
    expect(quiet.body).toBe('quiet v2'); // RFC 9111: revalidated while the client waited
    expect(quiet.headers['cache-status']).toMatch(/fwd=stale/);
    // Past the hot window (10 s after expiry), even a hot page waits.
    for (let i = 0; i < 6; i++) await call(`${g.url}/hot`);
    clock.advance(5_000 + 11_000);
    version = 3;
    expect((await call(`${g.url}/hot`)).body).toBe('hot v3');
  });
});
