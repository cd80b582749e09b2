/**
 * Property: no client ever receives a body that reflects another request's inputs unless the
 * key covers them (issue 14). Random request sequences — Hosts with case, trailing dots and
 * ports, path tricks (dot segments, percent-encoding, fragments, `;`), tracking parameters,
 * credential headers, session and other cookies, URL/method/scheme/host override headers, a
 * header the origin varies on — go to a gateway in front of an origin that reflects every
 * input it receives into its body and marks every page `public, max-age=60`, as a careless
 * framework would. Every unkeyed input carries the request's own token, so a token of another
 * request in a body is a leak; keyed inputs (Host, path, the query, a Vary header) come from
 * small sets so that requests share keys and hits happen.
 *
 * What the origin is trusted with: it declares `Vary: X-Theme` for the one header it varies
 * on by design, and reflects every other header without Vary. The override family that
 * frameworks act on is stripped from fills; any other header a fill sends and the answer
 * repeats (a custom one, User-Agent, Accept-Language) makes the copy that header's variant
 * (cache/reflection.ts). An origin that changes its answer on a header without repeating it
 * and without Vary is outside what a forwarding cache can see.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { siteFor } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import { ManualClock } from '../../src/clock.js';

const { origin, gateway } = useFixtures();

/** Headers the origin ignores (the gateway's own per-request ones). */
const NOT_REFLECTED = new Set(['connection', 'via', 'x-forwarded-for', 'content-length', 'transfer-encoding']);

interface Reflection {
  method: string;
  url: string;
  headers: Record<string, string>;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request with the target exactly as given (no client-side normalisation), from `localAddress` when given. */
function send(base: string, target: string, headers: Record<string, string>, localAddress?: string): Promise<Answer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path: target, method: 'GET', headers, agent: false, localAddress }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const hostArb = fc.constantFrom('a.example', 'A.EXAMPLE', 'a.example.', 'a.example:80', 'b.example', 'evil.example');
const pathArb = fc.constantFrom('/p', '/p', '/q', '/x/../p', '/%70', '/p#frag', '/p;utm_source=TOKEN', '/P');
const queryArb = fc.constantFrom('', '', '?a=1', '?a=2', '?utm_source=TOKEN', '?a=1&utm_campaign=TOKEN', '?fbclid=TOKEN&a=2');
/** Unkeyed inputs: each value carries the request's token. */
const unkeyedArb = fc.uniqueArray(
  fc.constantFrom<[string, string]>(
    ['authorization', 'Bearer TOKEN'],
    ['x-api-key', 'TOKEN'],
    ['x-auth-token', 'TOKEN'],
    ['cookie', 'wordpress_logged_in_abc=TOKEN'],
    ['cookie', 'sessionid=TOKEN'],
    ['cookie', 'theme=TOKEN'],
    ['x-original-url', '/admin?TOKEN'],
    ['x-rewrite-url', '/admin?TOKEN'],
    ['x-http-method-override', 'DELETE-TOKEN'],
    ['x-forwarded-host', 'TOKEN.evil.example'],
    ['x-forwarded-scheme', 'TOKEN'],
    ['x-forwarded-proto', 'TOKEN'],
    ['x-forwarded-prefix', '/TOKEN'],
    ['x-host', 'TOKEN.evil.example'],
    ['forwarded', 'host=TOKEN.evil.example;proto=https'],
    // Headers no list names: sent on fills, so an answer that repeats them must not be shared.
    ['x-anything', 'TOKEN'],
    ['x-banner', '<b>"TOKEN"</b>'],
    // The token in the name, the value too short to look for (attacker trial: a defacement
    // in header names the origin listed).
    ['x-note-TOKEN', '1'],
    ['user-agent', 'Mozilla/5.0 (TOKEN)'],
    ['accept-language', 'TOKEN, en;q=0.5'],
    ['referer', 'https://TOKEN.evil.example/'],
    // Shaped like a browser's, but not what one sends: private use, any parameter, a host.
    ['accept-language', 'en-x-TOKEN'],
    ['accept', 'text/html;token=TOKEN'],
    ['accept-charset', 'TOKEN.evil.example:1337'],
    // The client's own request id: kept for its answer and its log line, never sent on a fill.
    ['x-request-id', 'TOKEN'],
  ),
  { maxLength: 3, selector: ([name]) => name },
);
/** Keyed by the origin's Vary: a small set, so that it both matches and differs. */
const themeArb = fc.constantFrom<string | undefined>(undefined, 'dark', 'light');

const requestArb = fc.record({
  host: hostArb,
  path: pathArb,
  query: queryArb,
  unkeyed: unkeyedArb,
  theme: themeArb,
  times: fc.constantFrom(1, 1, 2),
});

/** The Host as the key holds it: lower case, no trailing dot, no default port. */
function keyHost(host: string): string {
  return host.toLowerCase().replace(/:80$/, '').replace(/\.$/, '');
}

describe('reflection property', () => {
  it('never gives a client a body reflecting another request\'s unkeyed inputs, nor a page of another key', async () => {
    const o = await origin();
    o.setHandler((req, res) => {
      const reflected: Reflection = { method: req.method ?? '', url: req.url ?? '', headers: {} };
      for (const [name, value] of Object.entries(req.headers)) {
        if (!NOT_REFLECTED.has(name) && value !== undefined) reflected.headers[name] = Array.isArray(value) ? value.join(', ') : value;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=60', vary: 'X-Theme' });
      res.end(JSON.stringify(reflected));
    });
    const g = await gateway({
      trustedProxies: [], // the client is an attacker, not a proxy
      log: { access: false },
      sites: [siteFor([o.url], { hosts: ['a.example', 'b.example', '*'], preserveHost: true, routes: [{ name: 'all', cache: { defaultTtlSeconds: 60 } }] })],
    });

    let token = 0;
    let run = 0;
    let hits = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb, { minLength: 4, maxLength: 16 }), async (requests) => {
        run++;
        for (const r of requests) {
          for (let i = 0; i < r.times; i++) {
            const own = `tok${++token}x`;
            const headers: Record<string, string> = { host: r.host };
            for (const [name, value] of r.unkeyed) headers[name.replace('TOKEN', own)] = value.replace('TOKEN', own);
            if (r.theme !== undefined) headers['x-theme'] = r.theme;
            // Each run its own keys; the prefix is keyed, so runs never share entries.
            const target = `/r${run}${r.path.replace('TOKEN', own)}${r.query.replace('TOKEN', own)}`;
            const answer = await send(g.url, target, headers);
            if (/; hit/.test(String(answer.headers['cache-status'] ?? ''))) hits++;
            const where = `${target} Host: ${r.host} ${JSON.stringify(r.unkeyed)} -> ${answer.status} ${String(answer.headers['cache-status'])}`;
            expect(answer.status, where).toBe(200);
            // No token but this request's own may appear anywhere in what the client got.
            const tokens = new Set(answer.body.match(/tok\d+x/g) ?? []);
            tokens.delete(own);
            expect([...tokens], `${where}\n${answer.body}`).toEqual([]);
            // The page is this key's page: same Host, same theme, same path and keyed query.
            const page = JSON.parse(answer.body) as Reflection;
            expect(keyHost(page.headers['host'] ?? ''), where).toBe(keyHost(r.host));
            expect(page.headers['x-theme'], where).toBe(r.theme);
            expect(page.method, where).toBe('GET');
            const path = page.url.split('?')[0];
            const expectedPath = `/r${run}${r.path === '/%70' || r.path === '/x/../p' || r.path.startsWith('/p#') || r.path.startsWith('/p;') ? '/p' : r.path}`;
            expect(path, where).toBe(r.path.startsWith('/p;') ? `/r${run}/p;utm_source=${own}` : expectedPath);
            // After a fragment, the "query" is part of the fragment: there is none.
            const keyedQuery = r.path.includes('#') ? null : new URLSearchParams(r.query.replace('TOKEN', own)).get('a');
            expect(new URLSearchParams(page.url.split('?')[1] ?? '').get('a'), where).toBe(keyedQuery);
          }
        }
      }),
      { numRuns: 25, seed: Number(process.env.FC_SEED ?? Date.now()) },
    );
    expect(hits).toBeGreaterThan(10); // the cache was in play
  });
});

describe('what a fill carries from the request that led it', () => {
  it('a client\'s own X-Request-Id names its answer and log line but never reaches a shared fill: the origin gets one the gateway made', async () => {
    const o = await origin();
    const seen: string[] = [];
    o.setHandler((req, res) => {
      seen.push(String(req.headers['x-request-id']));
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(`<p>request ${String(req.headers['x-request-id'])}</p>`);
    });
    const g = await gateway({ trustedProxies: [], sites: [siteFor([o.url])] });
    const leader = await send(g.url, '/page', { host: 'blog.example.com', 'x-request-id': 'planted-by-attacker' });
    expect(leader.headers['x-request-id']).toBe('planted-by-attacker'); // its own answer keeps it
    expect(seen).toHaveLength(1);
    expect(seen[0]).not.toBe('planted-by-attacker');
    expect(seen[0]).toMatch(/^[0-9a-f]{8}-[0-9a-z]+$/);
    const victim = await send(g.url, '/page', { host: 'blog.example.com' });
    expect(victim.headers['cache-status']).toMatch(/; hit/);
    expect(victim.body).not.toContain('planted-by-attacker');
  });

  it('an answer repeating the leading client\'s address is not stored: the next visitor never sees it', async () => {
    const o = await origin();
    o.setHandler((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(`<p>Your address: ${String(req.headers['x-forwarded-for'])}</p>`);
    });
    const g = await gateway({ trustedProxies: [], sites: [siteFor([o.url])] });
    const first = await send(g.url, '/ip', { host: 'blog.example.com' }, '127.0.0.2');
    expect(first.body).toContain('127.0.0.2');
    expect(first.headers['cache-status']).toMatch(/fwd=miss; fwd-status=200; detail="pass the answer repeats the client address/);
    const second = await send(g.url, '/ip', { host: 'blog.example.com' }, '127.0.0.3');
    expect(second.body).toContain('127.0.0.3');
    expect(second.body).not.toContain('127.0.0.2');
    expect(o.requests).toHaveLength(2);
  });

  it('an answer repeating the address is only its own: no hit-for-pass, the next visitor\'s fill is stored; and 9 unkeyed headers do not make an address repeated', async () => {
    const o = await origin();
    o.setHandler((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      // The origin echoes what one client made it echo (a header, a query): his own address.
      res.end(req.headers['x-forwarded-for'] === '127.0.0.2' ? '<p>hello 127.0.0.2</p>' : '<p>hello</p>');
    });
    const g = await gateway({ trustedProxies: [], sites: [siteFor([o.url])] });
    const attacker = await send(g.url, '/hot', { host: 'blog.example.com' }, '127.0.0.2');
    expect(attacker.headers['cache-status']).toMatch(/detail="pass the answer repeats the client address/);
    const victim = await send(g.url, '/hot', { host: 'blog.example.com' }, '127.0.0.3');
    expect(victim.headers['cache-status']).toMatch(/fwd=uri-miss; fwd-status=200; stored/); // not hit-for-pass
    expect((await send(g.url, '/hot', { host: 'blog.example.com' }, '127.0.0.4')).headers['cache-status']).toMatch(/; hit/);
    // Nine headers of the client's own (past the eight searched one by one) on a page that
    // repeats none of them: stored, not the client's own.
    const many: Record<string, string> = { host: 'blog.example.com' };
    for (const c of 'abcdefghi') many[`x-${c}`] = `${c}${c}${c}-value`;
    expect((await send(g.url, '/many', many, '127.0.0.5')).headers['cache-status']).toMatch(/stored/);
  });

  it('a page naming this machine\'s own address in its links is still stored for a client on that address (a wiki reached as 127.0.0.1)', async () => {
    const o = await origin();
    o.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, max-age=60' });
      res.end(`<a href="${o.url}/index.php?title=Main">Main page</a> <a href="http://127.0.0.2:8080/">mirror</a>`);
    });
    const g = await gateway({ trustedProxies: [], sites: [siteFor([o.url])] });
    expect((await send(g.url, '/wiki', { host: 'blog.example.com' }, '127.0.0.1')).headers['cache-status']).toMatch(/stored/);
    expect((await send(g.url, '/wiki', { host: 'blog.example.com' }, '127.0.0.1')).headers['cache-status']).toMatch(/; hit/);
    // Another address that the page happens to name is its client's own as far as anyone can tell.
    expect((await send(g.url, '/other', { host: 'blog.example.com' }, '127.0.0.2')).headers['cache-status']).toMatch(/detail="pass the answer repeats the client address/);
  });

  it('a 304 repeating the address in a header is not merged into the stored copy: the whole answer is fetched and judged', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    o.setHandler((req, res) => {
      const date = new Date(clock.now()).toUTCString(); // the origin's clock is the gateway's
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { date, etag: '"v1"', 'cache-control': 'public, max-age=1', 'x-seen-for': String(req.headers['x-forwarded-for']) });
        res.end();
        return;
      }
      res.writeHead(200, { date, 'content-type': 'text/plain', etag: '"v1"', 'cache-control': 'public, max-age=1' });
      res.end('the page');
    });
    const g = await gateway({ trustedProxies: [], sites: [siteFor([o.url])] }, { clock });
    const victimFill = await send(g.url, '/etag', { host: 'blog.example.com' }, '127.0.0.3');
    expect(victimFill.headers['cache-status']).toMatch(/stored/);
    clock.advance(2_000);
    await send(g.url, '/etag', { host: 'blog.example.com' }, '127.0.0.2'); // revalidates: the 304 names 127.0.0.2
    const after = await send(g.url, '/etag', { host: 'blog.example.com' }, '127.0.0.3');
    expect(String(after.headers['x-seen-for'] ?? '')).not.toContain('127.0.0.2');
    expect(o.requests.map((r) => r.headers['if-none-match'] ?? '-')).toEqual(['-', '"v1"', '-']);
  });
});

describe('reflections an origin encodes or writes into a binary body', () => {
  /** The origin's answers by path: each repeats all the request's headers in its own way. */
  const ANSWERS: Record<string, (json: string, lines: string) => [contentType: string, body: Buffer]> = {
    // A page script reads its request's headers back from base64 (a debug panel, an SPA's boot data).
    '/b64': (h) => ['text/html', Buffer.from(`<script>var h = JSON.parse(atob("${Buffer.from(h).toString('base64')}"));</script>`)],
    '/b64url': (h) => ['text/html', Buffer.from(`<a href="/debug?h=${Buffer.from(h).toString('base64url')}">debug</a>`)],
    // A generated file (a report, an export) that records the request it was made for.
    '/bin': (_, lines) => ['application/octet-stream', Buffer.concat([Buffer.from([0x50, 0x4b, 3, 4, 0, 0xff]), Buffer.from(lines, 'latin1'), Buffer.from([0, 1, 2])])],
  };

  it('never gives a victim an answer that repeats an attacker\'s header base64-encoded or in a binary body', async () => {
    const o = await origin();
    o.setHandler((req, res) => {
      const answer = ANSWERS[(req.url ?? '').split('?')[0]!];
      if (answer === undefined) return void res.writeHead(404).end();
      const lines = Object.entries(req.headers).map(([name, value]) => `${name}: ${String(value)}\n`).join('');
      const [contentType, body] = answer(JSON.stringify(req.headers), lines);
      res.writeHead(200, { 'content-type': contentType, 'cache-control': 'public, max-age=60' });
      res.end(body);
    });
    const g = await gateway({
      trustedProxies: [],
      log: { access: false },
      sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { defaultTtlSeconds: 60 } }] })],
    });
    const evil = '<img src=x onerror="alert(1)">';
    for (const path of Object.keys(ANSWERS)) {
      // The same User-Agent for both: only X-Evil tells them apart.
      const planted = await send(g.url, path, { host: 'a.example', 'x-evil': evil, 'user-agent': 'Mozilla/5.0 (X11)' });
      expect(planted.status, path).toBe(200);
      const victim = await send(g.url, path, { host: 'a.example', 'user-agent': 'Mozilla/5.0 (X11)' });
      expect(victim.status, path).toBe(200);
      expect(String(victim.headers['cache-status']), path).not.toMatch(/; hit/);
      const decoded = (victim.body.match(/[A-Za-z0-9+/_-]{40,}/g) ?? []).map((s) => Buffer.from(s, 'base64').toString('latin1'));
      expect([victim.body, ...decoded].join('\n'), path).not.toContain('onerror');
      expect([victim.body, ...decoded].join('\n'), path).toContain('Mozilla/5.0 (X11)');
    }
  });
});
