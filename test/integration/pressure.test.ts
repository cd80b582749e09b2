/**
 * The request path under the pressure gate (the gateway process itself overloaded), with the
 * gate's verdict injected: stored pages are answered (stale ones also while their refresh is under
 * way), a key with nothing usable stored joins a fill under way or gets its one collapsed fill (the
 * cheapest action that ends the pressure), and everything else is shed with 503.
 */
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { ManualClock } from '../../src/clock.js';
import { ALLOWANCE_HOLD_MS } from '../../src/server/pass-through.js';
import { siteFor, type StartedGateway } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import type { TestOrigin } from '../helpers/test-origin.js';

const { origin, gateway } = useFixtures();

/** One sample of the gateway's /metrics, 0 when the series does not exist (yet). */
async function metric(g: StartedGateway, series: string): Promise<number> {
  const text = await (await request(`${g.adminUrl}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

const STALE_PRESSURE = 'crowdgate_stale_served_total{site="test",reason="pressure"}';
const SHED_PRESSURE = 'crowdgate_shed_total{site="test",reason="pressure",priority="default"}';
const COLLAPSED = 'crowdgate_collapsed_requests_total{site="test"}';

/** A ManualClock on a whole second, so Date headers (second resolution) carry no hidden age. */
const manualClock = () => new ManualClock(Math.floor(Date.now() / 1000) * 1000);

/**
 * /page on `o`: `max-age=1`, Date from the injected clock. Version 1 answers at once; once
 * `newVersion()` is called, requests are held at the origin until `release()`, so a fill is
 * under way for exactly as long as the test says, without timing anything.
 */
function heldPage(o: TestOrigin, clock: ManualClock) {
  let version = 1;
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  o.route('/page', async (_req, res) => {
    const body = `v${version}`;
    if (version > 1) await released;
    res.writeHead(200, { 'cache-control': 'public, max-age=1', date: new Date(clock.now()).toUTCString(), 'content-length': body.length });
    res.end(body);
  });
  return { newVersion: () => void version++, release: () => release() };
}

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
    expect(await metric(g, COLLAPSED)).toBe(29);
    expect(await metric(g, SHED_PRESSURE)).toBe(0);
    // Now stored: a hit, still under pressure, with no further fetch.
    const hit = await call(`${g.url}/hot`);
    expect(hit.headers['cache-status']).toMatch(/crowdgate; hit/);
    expect(o.count('/hot')).toBe(1);
    overloaded = false;
  });

  it('sheds the waiters of a fill that turns out uncacheable instead of letting each of them through to the origin', async () => {
    const o = await origin();
    o.route('/account', { delayMs: 150, headers: { 'cache-control': 'private, no-store' }, body: 'yours' });
    let overloaded = true;
    const g = await gateway({ admission: { pressure: { forwardWhileShedding: 0 } }, sites: [siteFor([o.url])] }, { isOverloaded: () => overloaded });
    const answers = await Promise.all(Array.from({ length: 10 }, () => call(`${g.url}/account`)));
    // The leader gets the origin's answer; the nine that joined it are refused, not forwarded.
    expect(answers.filter((a) => a.status === 200).map((a) => a.body)).toEqual(['yours']);
    expect(answers.filter((a) => a.status === 503).length).toBe(9);
    expect(o.count('/account')).toBe(1);
    expect(await metric(g, SHED_PRESSURE)).toBe(9);
    // Without pressure the waiters of such a fill ask the origin themselves.
    overloaded = false;
    o.route('/other', { delayMs: 150, headers: { 'cache-control': 'private, no-store' }, body: 'theirs' });
    const calm = await Promise.all(Array.from({ length: 5 }, () => call(`${g.url}/other`)));
    expect(calm.map((a) => a.status)).toEqual(Array(5).fill(200));
    expect(o.count('/other')).toBe(5);
  });

  it('still sheds what the cache cannot answer: uncacheable requests and hit-for-pass keys', async () => {
    const o = await origin();
    o.route('/private', { headers: { 'cache-control': 'private, no-store' } });
    let overloaded = false;
    const g = await gateway(
      {
        admission: { pressure: { forwardWhileShedding: 0 } },
        sites: [siteFor([o.url], { routes: [{ name: 'api', match: { pathPrefix: '/api/' }, cache: { enabled: false } }] })],
      },
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
    expect(await metric(g, SHED_PRESSURE)).toBe(3);
    expect(await metric(g, STALE_PRESSURE)).toBe(0);
    // The gate is the only reason: without overload the same three are forwarded.
    overloaded = false;
    expect((await call(`${g.url}/api/x`)).headers['cache-status']).toMatch(/fwd=bypass/);
    const passed = await call(`${g.url}/private`);
    expect(passed.status).toBe(200);
    expect(passed.headers['cache-status']).toMatch(/pass/);
    expect((await call(`${g.url}/page`, { method: 'POST', body: 'x' })).status).toBe(200);
    expect(o.count()).toBe(before + 3);
    expect(await metric(g, SHED_PRESSURE)).toBe(3);
  });

  it('while shedding still forwards forwardWhileShedding uncacheable requests at once, sheds past it, and frees the allowance as answers finish', async () => {
    const o = await origin();
    // POSTs to /publish are held at the origin until release(); arrived(n) resolves once n are there.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const waiting: Array<[number, () => void]> = [];
    let arrivals = 0;
    const arrived = (n: number) => new Promise<void>((r) => (arrivals >= n ? r() : waiting.push([n, r])));
    o.route('/publish', async (_req, res) => {
      arrivals++;
      for (const [n, r] of waiting) if (arrivals >= n) r();
      await released;
      res.writeHead(200, { 'cache-control': 'private, no-store', 'content-length': 9 });
      res.end('published');
    });
    const g = await gateway({ admission: { pressure: { forwardWhileShedding: 2 } }, sites: [siteFor([o.url])] }, { isOverloaded: () => true });
    const post = () => call(`${g.url}/publish`, { method: 'POST', body: 'x' });
    const first = [post(), post()];
    await arrived(2);
    // The allowance is in use: a third POST and a logged-in page are shed, never sent.
    const third = await post();
    expect(third.status).toBe(503);
    expect(third.headers['cache-status']).toMatch(/shed-pressure/);
    const loggedIn = await call(`${g.url}/page`, { headers: { cookie: 'wordpress_logged_in_abc=editor' } });
    expect(loggedIn.status).toBe(503);
    expect(o.count('/publish')).toBe(2);
    expect(o.count('/page')).toBe(0);
    expect(await metric(g, SHED_PRESSURE)).toBe(2);
    release();
    expect((await Promise.all(first)).map((a) => [a.status, a.body])).toEqual([
      [200, 'published'],
      [200, 'published'],
    ]);
    // Answered: the allowance is free again, for a POST and a bypassed page alike.
    expect((await post()).status).toBe(200);
    const page = await call(`${g.url}/page`, { headers: { cookie: 'wordpress_logged_in_abc=editor' } });
    expect(page.status).toBe(200);
    expect(page.headers['cache-status']).toMatch(/fwd=bypass/);
    expect(o.count('/publish')).toBe(3);
    expect(o.count('/page')).toBe(1);
    expect(await metric(g, SHED_PRESSURE)).toBe(2);
  });

  it('a stream that stays open frees its share of the allowance after ALLOWANCE_HOLD_MS (review: EventSource readers held it for hours)', async () => {
    const o = await origin();
    const open: import('node:http').ServerResponse[] = [];
    o.route('/live', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      res.write('data: hello\n\n');
      open.push(res);
    });
    o.route('/publish', { headers: { 'cache-control': 'no-store' }, body: 'published' });
    const g = await gateway({ admission: { pressure: { forwardWhileShedding: 1 } }, sites: [siteFor([o.url])] }, { isOverloaded: () => true });
    const reader = await request(`${g.url}/live`, { headers: { accept: 'text/event-stream' } });
    expect(reader.statusCode).toBe(200);
    expect((await call(`${g.url}/publish`, { method: 'POST', body: 'x' })).status).toBe(503); // the stream holds it
    const started = Date.now();
    let published = await call(`${g.url}/publish`, { method: 'POST', body: 'x' });
    while (published.status === 503 && Date.now() - started < ALLOWANCE_HOLD_MS + 2_000) {
      await new Promise((r) => setTimeout(r, 250));
      published = await call(`${g.url}/publish`, { method: 'POST', body: 'x' });
    }
    expect(published.status).toBe(200);
    expect(published.body).toBe('published');
    for (const res of open) res.end();
    reader.body.destroy();
  }, 15_000);

  it('by default a logged-in user\'s publish is forwarded while the gate sheds', async () => {
    const o = await origin();
    o.route('/wp-admin/post.php', { headers: { 'cache-control': 'private, no-store' }, body: 'saved' });
    const g = await gateway({ sites: [siteFor([o.url])] }, { isOverloaded: () => true });
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await call(`${g.url}/wp-admin/post.php`, { method: 'POST', body: 'x', headers: { cookie: 'wordpress_logged_in_abc=editor' } }));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
    expect(o.count('/wp-admin/post.php')).toBe(3);
    expect(await metric(g, SHED_PRESSURE)).toBe(0);
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
    // The rest are answered too: stale (also while the refresh is under way: 'the order under
    // pressure' below), or the refreshed page once it is stored.
    const rest = await Promise.all(Array.from({ length: 4 }, () => call(`${g.url}/page`)));
    for (const r of rest) {
      expect(r.status).toBe(200);
      expect(`${r.body} ${r.headers['cache-status']}`).toMatch(/^v1 .*stale-pressure|^v2 crowdgate; hit|^v2 crowdgate; fwd=stale; fwd-status=200; stored; collapsed/);
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

/**
 * decide() step 6, in its order: a stale copy within stale-if-error answers (and starts the one
 * refresh, which runs at background priority: nobody waits on it); else a fill under way for the
 * key is joined, or the key gets its one collapsed fill; a hit-for-pass key is shed. The cold-key
 * fill and the shed are pinned in 'under pressure' above.
 */
describe('the order under pressure: a stale copy answers, else a fill is joined or started, else shed', () => {
  it('answers its stale copy at once, also while the key\'s one refresh is under way, rather than joining it', async () => {
    const clock = manualClock();
    const o = await origin();
    const page = heldPage(o, clock);
    let overloaded = false;
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, graceSeconds: 60 } }] })] },
      { clock, isOverloaded: () => overloaded },
    );
    expect((await call(`${g.url}/page`)).body).toBe('v1');
    clock.advance(2_000); // stale, well inside the grace: a copy the pressure gate may answer with
    page.newVersion(); // v2, held at the origin until released
    overloaded = true;
    // Nothing in flight: the stale copy answers at once and starts the key's one refresh.
    const first = await call(`${g.url}/page`);
    expect(first.body).toBe('v1');
    expect(first.headers['cache-status']).toMatch(/crowdgate; hit; ttl=-\d+; detail="stale-pressure/);
    await expect.poll(() => o.count('/page')).toBe(2); // the refresh is at the origin, held there
    // While it is under way (held at the origin), the crowd is answered from the stale copy.
    const crowd = await Promise.all(Array.from({ length: 5 }, () => call(`${g.url}/page`)));
    for (const r of crowd) {
      expect(r.status).toBe(200);
      expect(r.body).toBe('v1');
      expect(r.headers['cache-status']).toMatch(/detail="stale-pressure/);
    }
    expect(await metric(g, STALE_PRESSURE)).toBe(6);
    page.release();
    await expect.poll(async () => (await call(`${g.url}/page`)).body).toBe('v2');
    expect(o.count('/page')).toBe(2); // one refresh for the six
    expect(await metric(g, SHED_PRESSURE)).toBe(0);
  });

  it('answers no copy past its grace under pressure: the key gets one collapsed fill, waited for, and nothing is shed', async () => {
    const clock = manualClock();
    const o = await origin();
    const page = heldPage(o, clock);
    let overloaded = false;
    const g = await gateway(
      { sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { staleWhileRevalidateSeconds: 0, graceSeconds: 1 } }] })] },
      { clock, isOverloaded: () => overloaded },
    );
    expect((await call(`${g.url}/page`)).body).toBe('v1');
    clock.advance(5_000); // past max-age=1 + graceSeconds=1: nothing usable stored
    page.newVersion(); // v2, held at the origin until released
    overloaded = true;
    let answered = 0;
    const crowd = Array.from({ length: 10 }, () => call(`${g.url}/page`).then((r) => (answered++, r)));
    await expect.poll(() => o.count('/page')).toBe(2); // the one fill, held at the origin
    await expect.poll(() => metric(g, COLLAPSED)).toBe(9); // and nine requests waiting on it
    expect(answered).toBe(0);
    page.release();
    const answers = await Promise.all(crowd);
    expect(answers.map((r) => `${r.status} ${r.body}`)).toEqual(Array(10).fill('200 v2'));
    expect(answers.filter((r) => /collapsed/.test(r.headers['cache-status'] ?? '')).length).toBe(9);
    expect(o.count('/page')).toBe(2);
    expect(await metric(g, STALE_PRESSURE)).toBe(0);
    expect(await metric(g, SHED_PRESSURE)).toBe(0);
  });
});
