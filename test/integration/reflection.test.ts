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

const { origin, gateway } = useFixtures();

/** Headers the origin ignores (the gateway's own per-request ones). */
const NOT_REFLECTED = new Set(['x-request-id', 'connection', 'via', 'x-forwarded-for', 'content-length', 'transfer-encoding']);

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

/** One request with the target exactly as given (no client-side normalisation). */
function send(base: string, target: string, headers: Record<string, string>): Promise<Answer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path: target, method: 'GET', headers, agent: false }, (res) => {
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
    ['user-agent', 'Mozilla/5.0 (TOKEN)'],
    ['accept-language', 'TOKEN, en;q=0.5'],
    ['referer', 'https://TOKEN.evil.example/'],
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
            for (const [name, value] of r.unkeyed) headers[name] = value.replace('TOKEN', own);
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
