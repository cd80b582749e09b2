/**
 * decide() (handle-request.ts, steps 5 to 11) one decision at a time, through the real request
 * path: the memory store, Inflight, Upstream with a real pool and limiter; only the clock, the
 * pressure gate's verdict and the origin (a scripted fetcher and forwarder) are faked. Each test
 * names a decision and reads what shows it: the cache state in the access log, Cache-Status on
 * the wire, and what was asked of the origin.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HOT_HITS } from '../../../src/server/handle-request.js';
import type { FetchResult } from '../../../src/origin/fetch.js';
import { BACKGROUND_HOLD_MS } from '../../../src/origin/upstream.js';
import { held, startRequestPath, type Answered, type RequestPath } from '../../helpers/request-path.js';

let path: RequestPath | undefined;
afterEach(async () => {
  await path?.close();
  path = undefined;
});

async function start(...args: Parameters<typeof startRequestPath>): Promise<RequestPath> {
  path = await startRequestPath(...args);
  return path;
}

/** `promise`, or a failure naming `what` when it takes longer than `ms` (real time). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits (real time, up to 2 s) until `condition` holds. */
async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting until ${what}`);
}

const V1 = { 'cache-control': 'max-age=10', etag: '"v1"' };
const V2 = { 'cache-control': 'max-age=10', etag: '"v2"' };

/** Fills `/a` with a page valid for 10 s (ETag "v1"), then moves the clock `ageMs` on. */
async function stored(p: RequestPath, ageMs: number, headers: Record<string, string> = V1): Promise<Answered> {
  p.fetcher.script = [p.page('v1', headers)];
  const filled = await p.get('/a');
  expect(filled.state).toBe('miss');
  p.clock.advance(ageMs);
  return filled;
}

/** A 304 to the conditional refresh, keeping the page 10 s more. */
function notModified(p: RequestPath): FetchResult {
  return p.page('', V1, 304);
}

describe('decide(): a stored copy that needs nothing', () => {
  it('a fresh copy answers as a hit, with Age and ttl, without asking the origin (step 5)', async () => {
    const p = await start();
    await stored(p, 4_000);
    const r = await p.get('/a');
    expect(r.state).toBe('hit');
    expect(r.body).toBe('v1');
    expect(r.headers['age']).toBe('4');
    expect(r.cacheStatus).toMatch(/^crowdgate; hit; ttl=6; detail="hit rid=/);
    expect(p.fetcher.calls).toHaveLength(1); // the fill only
  });

  it('only-if-cached answers 504 without asking the origin, with nothing stored or a copy that needs revalidating', async () => {
    const p = await start();
    const none = await p.get('/a', { 'cache-control': 'only-if-cached' });
    expect(none.status).toBe(504);
    expect(none.headers['x-crowdgate-error']).toBe('only_if_cached');
    expect(none.state).toBe('error');
    expect(p.fetcher.calls).toHaveLength(0);
    // Stale within stale-while-revalidate: still no answer from the origin for this client.
    await stored(p, 15_000, { ...V1, 'cache-control': 'max-age=10, stale-while-revalidate=30' });
    const stale = await p.get('/a', { 'cache-control': 'only-if-cached' });
    expect(stale.status).toBe(504);
    expect(p.fetcher.calls).toHaveLength(1);
  });
});

describe('decide(): a stale copy on an origin with room', () => {
  it('within stale-while-revalidate: answered at once (updating, a hit), refreshed once in the background, conditionally', async () => {
    const p = await start();
    await stored(p, 15_000, { ...V1, 'cache-control': 'max-age=10, stale-while-revalidate=30' });
    const refresh = held<FetchResult>();
    p.fetcher.script = [refresh.promise];
    const r = await within(p.get('/a'), 1_000, 'the SWR answer');
    expect(r.state).toBe('updating');
    expect(r.body).toBe('v1');
    expect(r.cacheStatus).toMatch(/^crowdgate; hit; ttl=-5; detail="updating rid=/);
    expect(p.fetcher.calls).toHaveLength(2);
    expect(p.fetcher.calls[1]!.headers['if-none-match']).toBe('"v1"');
    refresh.resolve(p.page('v2', V2));
    await until(async () => (await p.get('/a')).body === 'v2', 'the refreshed copy answers');
  });

  it(`a hot page (${HOT_HITS} hits) just expired is answered at once while it refreshes; a cold one waits for its revalidation`, async () => {
    const p = await start();
    await stored(p, 1_000);
    for (let i = 0; i < HOT_HITS; i++) expect((await p.get('/a')).state).toBe('hit');
    p.clock.advance(10_000); // expired 1 s ago
    p.fetcher.script = [notModified(p)];
    const hot = await p.get('/a');
    expect(hot.state).toBe('updating');
    expect(hot.cacheStatus).toMatch(/; detail="updating rid=/);
    await until(() => p.fetcher.calls.length === 2, 'the background refresh is sent');

    // A page read once: the client waits for the revalidation, as RFC 9111 says.
    p.fetcher.script = [p.page('b1', V1)];
    await p.get('/b');
    expect((await p.get('/b')).state).toBe('hit');
    p.clock.advance(11_000);
    p.fetcher.script = [notModified(p)];
    const cold = await p.get('/b');
    expect(cold.state).toBe('revalidated');
    expect(cold.cacheStatus).toMatch(/^crowdgate; fwd=stale; fwd-status=304; stored;/);
    expect(p.fetcher.calls.at(-1)!.headers['if-none-match']).toBe('"v1"');
  });

  it(`a page a crowd reads is hot across its short-lived copies, though no copy answered ${HOT_HITS}; one read every few seconds never is`, async () => {
    const p = await start();
    const ONE_S = { 'cache-control': 'max-age=1', etag: '"v1"' };
    p.fetcher.script = [p.page('v1', ONE_S)];
    expect((await p.get('/a')).state).toBe('miss');
    // Each copy lives 1 s and answers two hits; each expired read revalidates while its client
    // waits (no copy is hot on its own), and each refreshed copy carries the page's reads on,
    // decayed: 2, then 3 x e^-0.3 + 2 = 4.2, then 5.2 x e^-0.3 + 2 = 5.9 >= HOT_HITS.
    const states: string[] = [];
    for (let i = 0; i < 3; i++) {
      for (let h = 0; h < 2; h++) expect((await p.get('/a')).state).toBe('hit');
      p.clock.advance(1_500);
      p.fetcher.script = [p.page('', ONE_S, 304)];
      states.push((await p.get('/a')).state);
    }
    expect(states).toEqual(['revalidated', 'revalidated', 'updating']);
    await until(() => p.fetcher.calls.length === 4, 'the background refresh is sent');

    // The same via a full 200 refetch (no validator): the new copy carries the reads too.
    const NO_TAG = { 'cache-control': 'max-age=1' };
    p.fetcher.script = [p.page('c1', NO_TAG)];
    await p.get('/c');
    const full: string[] = [];
    for (let i = 0; i < 3; i++) {
      for (let h = 0; h < 2; h++) expect((await p.get('/c')).state).toBe('hit');
      p.clock.advance(1_500);
      p.fetcher.script = [p.page(`c${i + 2}`, NO_TAG)];
      full.push((await p.get('/c')).state);
    }
    expect(full).toEqual(['expired', 'expired', 'updating']);

    // One client reading every 9 s (each read 8 s past the copy's expiry, within the 10 s hot
    // window): the carried reads decay faster than they add up, so every read waits for its
    // revalidation, however long it goes on.
    p.fetcher.script = [p.page('b1', ONE_S)];
    await p.get('/b');
    for (let i = 0; i < 3 * HOT_HITS; i++) {
      p.clock.advance(9_000);
      p.fetcher.script = [p.page('', ONE_S, 304)];
      expect((await p.get('/b')).state).toBe('revalidated');
    }
  });

  it('a hot page that was invalidated (a purge, an unsafe method) is revalidated by the next read, not answered stale', async () => {
    const p = await start();
    const ONE_S = { 'cache-control': 'max-age=1', etag: '"v1"' };
    p.fetcher.script = [p.page('v1', ONE_S)];
    await p.get('/a');
    for (let i = 0; i < HOT_HITS; i++) expect((await p.get('/a')).state).toBe('hit');
    p.clock.advance(1_500);
    p.fetcher.script = [p.page('', ONE_S, 304)];
    expect((await p.get('/a')).state).toBe('updating'); // hot: answered while it refreshes
    await until(() => p.fetcher.calls.length === 2, 'the background refresh is sent');
    await until(async () => (await p.get('/a')).state === 'hit', 'the refreshed copy answers');
    // The refreshed copy carries the page's heat; a soft purge invalidates it.
    expect(await p.store.purge({ kind: 'all' }, 'soft', p.clock.now())).toBe(1);
    p.fetcher.script = [p.page('v2', { 'cache-control': 'max-age=1', etag: '"v2"' })];
    const next = await p.get('/a');
    expect(next.state).toBe('expired');
    expect(next.body).toBe('v2');
  });
});

describe('decide(): the pressure gate (step 6)', () => {
  it('answers from a usable stale copy (stale-pressure, a hit) and refreshes it once in the background', async () => {
    const p = await start();
    await stored(p, 20_000);
    p.overloaded = true;
    p.fetcher.script = [p.page('v2', V2)];
    const r = await p.get('/a');
    expect(r.state).toBe('stale');
    expect(r.body).toBe('v1');
    expect(r.cacheStatus).toMatch(/^crowdgate; hit; ttl=-10; detail="stale-pressure rid=/);
    await until(() => p.fetcher.calls.length === 2, 'the background refresh is sent');
    expect(p.fetcher.calls[1]!.headers['if-none-match']).toBe('"v1"');
  });

  it('with nothing stored, starts the key\'s one fill (a miss) rather than shedding', async () => {
    const p = await start();
    p.overloaded = true;
    p.fetcher.script = [p.page('v1', V1)];
    const r = await p.get('/a');
    expect(r.state).toBe('miss');
    expect(r.body).toBe('v1');
    expect(p.fetcher.calls.map((c) => c.path)).toEqual(['/a']);
  });

  it('with nothing stored, joins the fill already under way (collapsed) instead of a second fetch', async () => {
    const p = await start();
    const fill = held<FetchResult>();
    p.fetcher.script = [fill.promise];
    const leader = p.get('/a');
    await until(() => p.fetcher.calls.length === 1, 'the leader fetches');
    p.overloaded = true;
    const waiter = p.get('/a');
    await until(async () => ((await p.metrics.get('collapsed').get()).values[0]?.value ?? 0) === 1, 'the second request waits on the fill');
    fill.resolve(p.page('v1', V1));
    const [l, w] = await Promise.all([leader, waiter]);
    expect(l.state).toBe('miss');
    expect(w.state).toBe('miss');
    expect(w.cacheStatus).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored; collapsed;/);
    expect(p.fetcher.calls).toHaveLength(1);
  });

  it('a fill its leader\'s own request failed (a gateway bug it met): the waiters fill once more, collapsed, and get the page (attacker trial: a constructor header gave every waiter 500)', async () => {
    const p = await start();
    const fill = held<void>();
    p.fetcher.script = [
      fill.promise.then((): FetchResult => {
        throw new Error('a bug the leader\'s request met');
      }),
      p.page('v1', V1),
    ];
    const leader = p.get('/a');
    await until(() => p.fetcher.calls.length === 1, 'the leader fetches');
    const waiters = [p.get('/a'), p.get('/a')];
    await until(async () => ((await p.metrics.get('collapsed').get()).values[0]?.value ?? 0) === 2, 'two requests wait on the fill');
    fill.resolve();
    const [l, ...ws] = await Promise.all([leader, ...waiters]);
    expect(l.status).toBe(500);
    expect(ws.map((w) => [w.status, w.body])).toEqual([
      [200, 'v1'],
      [200, 'v1'],
    ]);
    expect(p.fetcher.calls).toHaveLength(2); // one more fill for both
  });

  it('sheds a hit-for-pass key with nothing in flight (503, Retry-After) and forwards nothing', async () => {
    const p = await start();
    p.fetcher.script = [p.page('private', { 'cache-control': 'private' })];
    expect((await p.get('/a')).state).toBe('pass'); // not storable: hit-for-pass from now on
    p.overloaded = true;
    const r = await p.get('/a');
    expect(r.status).toBe(503);
    expect(r.state).toBe('shed');
    expect(r.headers['retry-after']).toBe('1');
    expect(r.cacheStatus).toMatch(/^crowdgate; fwd=miss; detail="shed-pressure rid=/);
    expect(p.forwarder.calls).toHaveLength(0);
    expect(p.fetcher.calls).toHaveLength(1);
  });

  it('while overloaded but not shedding (utilisation, not the delay threshold), a hit-for-pass key and a bypass request still go to the origin', async () => {
    const p = await start();
    p.fetcher.script = [p.page('private', { 'cache-control': 'private' })];
    expect((await p.get('/a')).state).toBe('pass');
    p.overloaded = true;
    p.shedding = false;
    const r = await p.get('/a');
    expect(r.status).toBe(200);
    expect(r.state).toBe('pass');
    const bypass = await p.get('/b', { authorization: 'Bearer x' });
    expect(bypass.status).toBe(200);
    expect(bypass.state).toBe('bypass');
    expect(p.forwarder.calls).toEqual(['/a', '/b']);
  });

  it('serves the stale copy at once even while the key\'s fill is under way: stale before joining', async () => {
    const p = await start();
    await stored(p, 20_000);
    const fill = held<FetchResult>();
    p.fetcher.script = [fill.promise];
    const leader = p.get('/a'); // no pressure: revalidates, the client waits
    await until(() => p.fetcher.calls.length === 2, 'the revalidation is sent');
    p.overloaded = true;
    const r = await within(p.get('/a'), 1_000, 'the request under pressure');
    expect(r.state).toBe('stale');
    expect(r.cacheStatus).toMatch(/; detail="stale-pressure rid=/);
    fill.resolve(notModified(p));
    expect((await leader).state).toBe('revalidated');
    expect(p.fetcher.calls).toHaveLength(2);
  });
});

describe('decide(): the origin busy or down', () => {
  it('a queue at the origin (no free permit): a stale copy a crowd read answers at once (stale-backlog) and the refresh waits its turn (step 7)', async () => {
    const p = await start({ config: { admission: { limit: { algorithm: 'fixed', initial: 1, min: 1, ceiling: 1 } } } });
    await stored(p, 0);
    for (let i = 0; i < HOT_HITS; i++) expect((await p.get('/a')).state).toBe('hit');
    p.clock.advance(20_000); // past the hot-page window (10 s after expiry), within grace
    const busy = await p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 10_000, kind: 'forward' });
    if (!busy.ok) throw new Error(busy.why);
    p.fetcher.script = [notModified(p)];
    const r = await within(p.get('/a'), 1_000, 'the request behind a busy origin');
    expect(r.state).toBe('stale');
    expect(r.body).toBe('v1');
    expect(r.cacheStatus).toMatch(/^crowdgate; hit; ttl=-10; detail="stale-backlog rid=/);
    expect(p.fetcher.calls).toHaveLength(1); // the refresh is queued for the permit
    busy.lease.finish({ kind: 'response', status: 200 });
    await until(() => p.fetcher.calls.length === 2, 'the queued refresh is sent');
    expect(p.fetcher.calls[1]!.headers['if-none-match']).toBe('"v1"');
  });

  it('a queue at the origin: a page a crowd reads across short-lived copies answers at once too (stale-backlog, step 7)', async () => {
    const p = await start({ config: { admission: { limit: { algorithm: 'fixed', initial: 1, min: 1, ceiling: 1 } } } });
    const ONE_S = { 'cache-control': 'max-age=1', etag: '"v1"' };
    p.fetcher.script = [p.page('v1', ONE_S)];
    await p.get('/a');
    // Copies of 1 s with three hits each, revalidated while their clients wait (a copy is
    // never hot on its own, and each read past expiry is 2 s late): the page's reads add up.
    for (let i = 0; i < 2; i++) {
      for (let h = 0; h < 3; h++) expect((await p.get('/a')).state).toBe('hit');
      p.clock.advance(2_000);
      p.fetcher.script = [p.page('', ONE_S, 304)];
      if (i === 0) expect((await p.get('/a')).state).toBe('revalidated');
    }
    p.clock.advance(10_000); // past the hot-page window, within grace
    const busy = await p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 10_000, kind: 'forward' });
    if (!busy.ok) throw new Error(busy.why);
    const r = await within(p.get('/a'), 1_000, 'the request behind a busy origin');
    expect(r.state).toBe('stale');
    expect(r.cacheStatus).toMatch(/detail="stale-backlog rid=/);
    busy.lease.finish({ kind: 'response', status: 200 });
    await until(() => p.fetcher.calls.length === 3, 'the queued refresh is sent');
  });

  it('a background refresh refused for want of capacity: the site asks for none for BACKGROUND_HOLD_MS, stale-while-revalidate answers meanwhile', async () => {
    // One permit, no queue: a refresh that finds the permit taken is refused at once (queue_full).
    const p = await start({ config: { admission: { limit: { algorithm: 'fixed', initial: 1, min: 1, ceiling: 1 }, queue: { maxLength: 0 } } } });
    await stored(p, 12_000, { 'cache-control': 'max-age=10, stale-while-revalidate=60', etag: '"v1"' });
    const busy = await p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 10_000, kind: 'forward' });
    if (!busy.ok) throw new Error(busy.why);
    expect((await p.get('/a')).state).toBe('updating'); // its refresh is refused
    expect(p.upstream.holdsBackground(p.site.config)).toBe(true);
    busy.lease.finish({ kind: 'response', status: 200 });
    p.fetcher.script = [notModified(p)];
    p.clock.advance(BACKGROUND_HOLD_MS - 1);
    expect((await p.get('/a')).state).toBe('updating'); // the permit is free, but the site holds its refreshes
    await new Promise((r) => setTimeout(r, 20));
    expect(p.fetcher.calls).toHaveLength(1); // the fill only
    p.clock.advance(1);
    expect(p.upstream.holdsBackground(p.site.config)).toBe(false);
    expect((await p.get('/a')).state).toBe('updating');
    await until(() => p.fetcher.calls.length === 2, 'the next stale hit refreshes the page');
    expect(p.fetcher.calls[1]!.headers['if-none-match']).toBe('"v1"');
  });

  it('a background-class refresh refused does not hold a step-7 refresh at the request\'s own priority: it still queues and is sent', async () => {
    // One permit, one queue slot. /b's stale-while-revalidate refresh (the background class)
    // finds the queue held by a more important waiter and is refused: the site's hold starts.
    const p = await start({ config: { admission: { limit: { algorithm: 'fixed', initial: 1, min: 1, ceiling: 1 }, queue: { maxLength: 1 } } } });
    p.fetcher.script = [p.page('b1', { 'cache-control': 'max-age=10, stale-while-revalidate=60', etag: '"b1"' })];
    expect((await p.get('/b')).state).toBe('miss');
    await stored(p, 0);
    for (let i = 0; i < HOT_HITS; i++) expect((await p.get('/a')).state).toBe('hit');
    p.clock.advance(20_000); // /a: past the hot-page window, within grace; /b: within stale-while-revalidate
    const busy = await p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 10_000, kind: 'forward' });
    if (!busy.ok) throw new Error(busy.why);
    const queued = p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 10_000, kind: 'forward' });
    expect((await p.get('/b')).state).toBe('updating'); // its background refresh: queue_full
    await until(() => p.upstream.holdsBackground(p.site.config), 'the refused refresh starts the hold');
    busy.lease.finish({ kind: 'response', status: 200 });
    const second = await queued; // the queued request takes the permit: the queue slot is free again
    if (!second.ok) throw new Error(second.why);
    // /a: a crowd read it and the origin is busy (step 7): stale-backlog now, and its refresh
    // "still runs, collapsed, at this request's priority", queued for the permit.
    p.fetcher.script = [notModified(p)];
    const r = await p.get('/a');
    expect(r.state).toBe('stale');
    expect(r.cacheStatus).toMatch(/detail="stale-backlog rid=/);
    second.lease.finish({ kind: 'response', status: 200 });
    await until(() => p.fetcher.calls.length === 3, 'the step-7 refresh of /a is sent once the permit is free');
    expect(p.fetcher.calls[2]!.headers['if-none-match']).toBe('"v1"');
  });

  it('a queue at the origin, but a copy no crowd read: the request waits its turn for the refresh, as RFC 9111 says (step 7)', async () => {
    const p = await start({ config: { admission: { limit: { algorithm: 'fixed', initial: 1, min: 1, ceiling: 1 } } } });
    await stored(p, 20_000);
    const busy = await p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 10_000, kind: 'forward' });
    if (!busy.ok) throw new Error(busy.why);
    p.fetcher.script = [notModified(p)];
    let answered = false;
    const waiting = p.get('/a').then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    expect(p.fetcher.calls).toHaveLength(1); // the refresh is queued for the permit, and the request with it
    busy.lease.finish({ kind: 'response', status: 200 });
    const r = await within(waiting, 1_000, 'the request once the permit is free');
    expect(r.state).toBe('revalidated');
    expect(r.cacheStatus).not.toMatch(/stale-backlog/);
  });

  it('no usable member (breaker open): a copy within grace answers (stale-circuit_open) and the refresh is the member\'s trial (step 8)', async () => {
    const p = await start({ site: { circuit: { consecutiveFailures: 3 } } });
    await stored(p, 20_000);
    for (let i = 0; i < 3; i++) {
      const a = await p.upstream.admit(p.site.config, p.pool, { priority: 0, deadlineAt: p.clock.now() + 500, kind: 'fill' });
      if (!a.ok) throw new Error(a.why);
      a.lease.finish({ kind: 'failure', failure: 'connect_error' });
    }
    expect(p.upstream.hasUsableMember(p.site.config, p.pool)).toBe(false);
    p.fetcher.script = [notModified(p)];
    const r = await p.get('/a');
    expect(r.state).toBe('stale');
    expect(r.cacheStatus).toMatch(/^crowdgate; hit; ttl=-10; detail="stale-circuit_open rid=/);
    await until(() => p.fetcher.calls.length === 2, 'the trial refresh is sent');
    await until(() => p.upstream.hasUsableMember(p.site.config, p.pool), 'the trial closes the breaker');
  });

  it('the key\'s refresh under way: a stale copy answers at once (updating, collapsed) instead of waiting on it (step 9)', async () => {
    const p = await start();
    await stored(p, 20_000);
    const fill = held<FetchResult>();
    p.fetcher.script = [fill.promise];
    const leader = p.get('/a');
    await until(() => p.fetcher.calls.length === 2, 'the revalidation is sent');
    const r = await within(p.get('/a'), 1_000, 'the request behind the refresh');
    expect(r.state).toBe('updating');
    expect(r.body).toBe('v1');
    expect(r.cacheStatus).toMatch(/^crowdgate; hit; collapsed; ttl=-10; detail="updating rid=/);
    fill.resolve(notModified(p));
    expect((await leader).state).toBe('revalidated');
    expect(p.fetcher.calls).toHaveLength(2);
  });
});

describe('decide(): to the origin', () => {
  it('nothing stored: one fill of the target, stored (a miss); a key that was not storable passes through next time (steps 10, 11)', async () => {
    const p = await start();
    p.fetcher.script = [p.page('v1', V1)];
    const r = await p.get('/a?x=1');
    expect(r.state).toBe('miss');
    expect(r.cacheStatus).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored; ttl=10; detail="miss rid=/);
    expect(p.fetcher.calls.map((c) => [c.method, c.path])).toEqual([['GET', '/a?x=1']]);

    p.fetcher.script = [p.page('private', { 'cache-control': 'private' })];
    const first = await p.get('/b');
    expect(first.state).toBe('pass');
    expect(first.body).toBe('private');
    const next = await p.get('/b');
    expect(next.state).toBe('pass');
    expect(next.body).toBe('passed');
    expect(p.forwarder.calls).toEqual(['/b']);
    expect(p.fetcher.calls).toHaveLength(2);
  });

  it('a fill too large to store: the answer streams through (pass); a pass-through that throws then is answered, not left hanging', async () => {
    const p = await start();
    const tooLarge = (): FetchResult => ({ ...p.page('big'), tooLarge: true }) as FetchResult;
    p.fetcher.script = [tooLarge()];
    const r = await p.get('/big');
    expect(r.state).toBe('pass');
    expect(r.body).toBe('passed');
    expect(p.forwarder.calls).toEqual(['/big']);

    p.fetcher.script = [tooLarge()];
    p.forwarder.throws = true;
    const failed = await within(p.get('/bigger'), 1_000, 'the failed pass-through');
    expect(failed.status).toBe(500);
    expect(failed.headers['x-crowdgate-error']).toBe('internal_error');
    expect(p.upstream.controlFor(p.site.config, p.member()).limiter.inflight).toBe(0);
  });
});
