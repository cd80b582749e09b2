/**
 * Names a client or an origin chooses (header names, cookie names, query parameters, directives,
 * codings, Vary members) that are also properties of every JavaScript object (`constructor`,
 * `__proto__`, `toString`...): looked up in a plain object, `constructor` found
 * Object.prototype's, and every shared fill a client's `constructor: xyzzy123` header reached
 * threw; collapsed visitors got 500 and a stored page was held at its stale copy while the
 * origin was healthy (attacker trial). Each is sent here as the request or the origin's answer
 * would carry it, and nothing may answer 500 or log an error.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { siteFor } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';

const { origin, gateway } = useFixtures();

/** Every name Object.prototype has, spelled as a header token allows (all are). */
const NAMES = [
  'constructor',
  '__proto__',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
];

interface Raw {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One HTTP/1.1 request written as given (header names untouched), read to the connection's close. */
function raw(url: string, method: string, target: string, headers: [string, string][]): Promise<Raw> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      const head = [`${method} ${target} HTTP/1.1`, ...headers.map(([n, v]) => `${n}: ${v}`), 'Connection: close', '', ''].join('\r\n');
      socket.write(head);
    });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer in 10 s')));
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no response head: ${JSON.stringify(text.slice(0, 200))}`));
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const hs: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        hs[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let body = text.slice(end + 4);
      if (hs['transfer-encoding'] === 'chunked') {
        let out = '';
        for (;;) {
          const nl = body.indexOf('\r\n');
          const size = parseInt(body.slice(0, nl), 16);
          if (!(size > 0)) break;
          out += body.slice(nl + 2, nl + 2 + size);
          body = body.slice(nl + 2 + size + 2);
        }
        body = out;
      }
      resolve({ status: Number(statusLine!.split(' ')[1]), headers: hs, body });
    });
  });
}

describe('names that are properties of every object', () => {
  it('never breaks a fill, a hit, a variant, a purge or a bypass: no 500, no error logged, and the page is still served and shared after', async () => {
    const o = await origin();
    // /echo: every header received, in the body. /vary?on=N: varies on N, and says its value.
    // /own?h=N: answers with a header named N. /cc?d=N: N as a Cache-Control directive.
    o.setHandler((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      const head: [string, string][] = [
        ['content-type', 'text/plain'],
        ['cache-control', 'public, max-age=60'],
      ];
      let body = `page ${u.pathname}`;
      if (u.pathname === '/echo') body = JSON.stringify(req.rawHeaders);
      if (u.pathname === '/vary') {
        const on = u.searchParams.get('on')!;
        head.push(['vary', on]);
        body = `variant ${String(req.headersDistinct[on.toLowerCase()]?.join(',') ?? '-')}`;
      }
      if (u.pathname === '/own') head.push([u.searchParams.get('h')!, 'own value']);
      if (u.pathname === '/cc') head[1] = ['cache-control', `public, max-age=60, ${u.searchParams.get('d')}, ${u.searchParams.get('d')}=5`];
      if (u.pathname === '/cdn') head.push(['cdn-cache-control', `max-age=60, ${u.searchParams.get('d')}=7`]);
      if (u.pathname === '/coded') head.push(['content-encoding', u.searchParams.get('c')!]);
      if (u.pathname === '/tagged') head.push(['surrogate-key', `${u.searchParams.get('t')} other`], ['cache-tag', String(u.searchParams.get('t'))]);
      res.writeHead(200, head.flat());
      res.end(body);
    });
    const g = await gateway({ sites: [siteFor([o.url], { routes: [{ name: 'all', cache: { key: { cookies: ['theme'] } } }] })] });
    const problems: string[] = [];
    const check = async (what: string, method: string, target: string, headers: [string, string][] = []) => {
      const r = await raw(g.url, method, target, [['Host', 'a.test'], ...headers]);
      if (r.status >= 500) problems.push(`${what}: ${r.status} ${r.headers['x-crowdgate-error'] ?? ''}`);
      return r;
    };
    for (const n of NAMES) {
      const q = encodeURIComponent(n);
      await check(`request header ${n}`, 'GET', `/page/${q}`, [[n, 'xyzzy123']]);
      await check(`request header ${n} on an echoing page`, 'GET', `/echo?n=${q}`, [[n, 'xyzzy123']]);
      await check(`request header ${n}, a HEAD`, 'HEAD', `/page/head-${q}`, [[n, 'xyzzy123']]);
      for (const v of ['one', 'two', undefined]) {
        const r = await check(`Vary: ${n} (${v})`, 'GET', `/vary?on=${q}`, v === undefined ? [] : [[n, v]]);
        // Each client gets its own variant. (A name with an underscore is not sent on a fill
        // until a stored Vary names it, as nginx drops them; Node drops `__proto__` itself.)
        if (r.status === 200 && !n.includes('_') && r.body !== `variant ${v ?? '-'}`) problems.push(`Vary: ${n} (${v}) answered ${JSON.stringify(r.body)}`);
      }
      await check(`cookie ${n}`, 'GET', `/page/cookie-${q}`, [['Cookie', `${n}=1; theme=dark`]]);
      await check(`query parameter ${n}`, 'GET', `/page/q?${q}=1&utm_source=x&${q}=2`);
      await check(`request directive ${n}`, 'GET', `/page/rcc-${q}`, [['Cache-Control', `${n}, ${n}=5`], ['Pragma', n]]);
      await check(`Accept-Encoding ${n}`, 'GET', `/page/ae-${q}`, [['Accept-Encoding', `${n}, gzip;q=0.5, ${n};q=1`]]);
      await check(`Accept* members ${n}`, 'GET', `/echo?accept=${q}`, [['Accept', `${n}/${n}`], ['Accept-Language', n], ['Accept-Charset', n]]);
      await check(`answer header ${n}`, 'GET', `/own?h=${q}`);
      await check(`answer directive ${n}`, 'GET', `/cc?d=${q}`);
      await check(`CDN-Cache-Control directive ${n}`, 'GET', `/cdn?d=${q}`);
      await check(`Content-Encoding ${n}`, 'GET', `/coded?c=${q}`, [['Accept-Encoding', 'gzip']]);
      await check(`tag ${n}`, 'GET', `/tagged?t=${q}`);
      await check(`Host ${n}`, 'GET', `/page/host`, [['Host', n.toLowerCase().replace(/_/g, 'x')]]);
      await check(`Range unit ${n}`, 'GET', `/page/${q}`, [['Range', `${n}=0-1`], ['If-Range', n]]);
      await check(`conditional ${n}`, 'GET', `/page/${q}`, [['If-None-Match', n], ['If-Modified-Since', n]]);
      await check(`PURGE method ${n}`, 'PURGE', `/page/purge-${q}`, [['X-Purge-Method', n]]);
      await check(`Forwarded ${n}`, 'GET', `/page/fwd-${q}`, [['Forwarded', `${n}=1;for=${n}`], ['X-Forwarded-Proto', n]]);
    }
    expect(problems).toEqual([]);
    const errors = g.logs.filter((l) => Number(l.level) >= 50);
    expect(errors.map((l) => l.msg)).toEqual([]);
    // Still served, and shared: a plain request after all that is a hit from the first fill.
    const before = o.count('/page/constructor');
    const after = await raw(g.url, 'GET', '/page/constructor', [['Host', 'a.test']]);
    expect(after.status).toBe(200);
    expect(after.body).toBe('page /page/constructor');
    expect(o.count('/page/constructor')).toBe(before);
  }, 60_000);
});
