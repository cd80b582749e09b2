/**
 * A healthy origin with an ordinary mix of traffic, for bench/normal-day.mjs: unlimited capacity
 * (no slots, no backlog: every request just waits on its own timer), most paths fast, a few slow.
 *
 *   GET  /page/N        fast: 5–20 ms (uniform), small HTML (`pageMs` / --page-ms: its own range,
 *                       e.g. 40–80 ms pages beside a 5–20 ms API, the mix a new-user trial used)
 *   GET  /api/item/N    fast: 5–20 ms, small JSON
 *   GET  /              fast: 5–20 ms (where crowdgate's health checks land; counted as "health")
 *   GET  /probe         answered at once (the bench's readiness probe; counted as "probe")
 *   GET  /report/N      slow: 2–10 s (uniform)
 *   POST /upload        slow: 2–10 s, after reading the body
 *   GET  /__stats       JSON counters, answered at once and not counted
 *   anything else       404 after a fast delay (counted as "other")
 *
 * With `stallEveryMs` and `stallMs` (--stall-every-ms, --stall-ms) the origin stalls for
 * `stallMs` every `stallEveryMs` from its start, as a database lock or a long GC pause would:
 * nothing is answered during a stall (an answer due then waits for its end, a request arriving
 * then starts its work at the end). /probe and /__stats are never held.
 *
 * Every answer carries `Cache-Control: private, no-store` so each request reaches the origin and
 * takes a permit from the gateway's limiter; with `cacheableShare` > 0, the pages /page/N with
 * N mod 100 < 100 × share are `public, max-age=5` instead. `X-Origin-Delay-Ms` tells the client
 * the service time drawn, so it can subtract it from its latency (the gateway's own share).
 *
 * It counts requests per class and per route, its own in-flight requests (peak overall, fast,
 * slow) and per wall-clock second: requests started and peak in flight.
 *
 * For a differential bench (bench/ordinary-diff.mjs: two of these, one behind crowdgate, one
 * reached directly), all off by default:
 *   - `delaySeed` (--delay-seed N): each request's service time is drawn from a PRNG seeded by N
 *     and the request's method and URL (query included) instead of Math.random(), so two origins
 *     with the same seed give the same request the same delay.
 *   - `fastMs` / `slowMs` (--fast-ms, --slow-ms LOW-HIGH): the fast (API, /) and slow ranges.
 *   - events, one-off and at wall-clock times (epoch ms), so two origins on one machine see them
 *     at the same moment: `slow` (a request arriving in [atMs, atMs + forMs) takes `factor` times
 *     its drawn delay: a database hiccup) and `stall` (nothing is answered in the window, as a
 *     periodic stall above). Given as `events` at start, or at run time by
 *     `POST /__events` with a JSON array of { kind: "slow"|"stall", atMs, forMs, factor? }
 *     (answered at once with the whole list, not counted). An event counts the requests it
 *     slowed (`slowedByEvent`); held answers count in `heldByStall`.
 *
 * Run alone: node bench/lib/mixed-origin.mjs [--port 0] [--cacheable-share 0] [--page-ms 5-20]
 *   [--fast-ms 5-20] [--slow-ms 2000-10000] [--delay-seed N] [--stall-every-ms 0 --stall-ms 0]
 * (prints "mixed-origin listening on 127.0.0.1:<port>" on stdout), or import startMixedOrigin().
 */
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { makeRandom } from '../load.mjs';

const FAST = 'fast';
const SLOW = 'slow';

/**
 * @typedef {{ kind: 'slow' | 'stall', atMs: number, forMs: number, factor?: number }} OriginEvent  atMs: epoch ms
 * @param {{ port?: number, host?: string, cacheableShare?: number, fastMs?: [number, number], pageMs?: [number, number], slowMs?: [number, number], stallEveryMs?: number, stallMs?: number, delaySeed?: number, events?: OriginEvent[] }} [opts]
 * @returns {Promise<{ port: number, url: string, stats: () => object, close: () => Promise<void> }>}
 */
export async function startMixedOrigin(opts = {}) {
  const host = opts.host ?? '127.0.0.1';
  const cacheableShare = opts.cacheableShare ?? 0;
  const [fastMin, fastMax] = opts.fastMs ?? [5, 20];
  const [pageMin, pageMax] = opts.pageMs ?? [fastMin, fastMax];
  const [slowMin, slowMax] = opts.slowMs ?? [2000, 10_000];
  const cacheableBelow = Math.round(cacheableShare * 100);

  const byClass = { fast: 0, slow: 0, health: 0, probe: 0, other: 0 };
  const byRoute = { page: 0, api: 0, root: 0, report: 0, upload: 0, probe: 0, other: 0 };
  let cacheableAnswers = 0;
  let inflight = 0;
  let inflightFast = 0;
  let inflightSlow = 0;
  let peakInflight = 0;
  let peakInflightFast = 0;
  let peakInflightSlow = 0;
  /** @type {Record<number, { requests: number, peakInflight: number }>} */
  const perSecond = {};
  const startedAt = Date.now();
  const stallEveryMs = opts.stallEveryMs ?? 0;
  const stallMs = stallEveryMs > 0 ? Math.min(opts.stallMs ?? 0, stallEveryMs) : 0;
  let heldByStall = 0;
  /** @type {OriginEvent[]} */
  const events = [];
  let slowedByEvent = 0;
  const addEvents = (list) => {
    for (const e of list) {
      if (!(e && (e.kind === 'slow' || e.kind === 'stall') && Number.isFinite(e.atMs) && e.forMs >= 0 && (e.kind === 'stall' || e.factor > 0)))
        throw new Error(`an event is { kind: "slow"|"stall", atMs (epoch ms), forMs >= 0, factor > 0 for slow }; got ${JSON.stringify(e)}`);
      events.push({ kind: e.kind, atMs: e.atMs, forMs: e.forMs, ...(e.kind === 'slow' ? { factor: e.factor } : {}) });
    }
  };
  addEvents(opts.events ?? []);
  /** `t` (epoch ms), or the end of the stall it falls in. */
  const pastStall = (t) => {
    for (const e of events) if (e.kind === 'stall' && t >= e.atMs && t < e.atMs + e.forMs) t = e.atMs + e.forMs;
    if (stallMs <= 0) return t;
    const since = t - startedAt;
    const k = Math.floor(since / stallEveryMs);
    const stallStart = k * stallEveryMs;
    return k >= 1 && since < stallStart + stallMs ? startedAt + stallStart + stallMs : t;
  };
  /** The product of the factors of the slow events `t` (epoch ms) falls in; 1 outside them. */
  const slowFactorAt = (t) => {
    let f = 1;
    for (const e of events) if (e.kind === 'slow' && t >= e.atMs && t < e.atMs + e.forMs) f *= e.factor;
    return f;
  };

  const delaySeed = opts.delaySeed;
  /** A uniform draw in [lo, hi): Math.random(), or with `delaySeed` the request's own seeded draw. */
  const between = (lo, hi, key) => lo + (delaySeed === undefined ? Math.random() : makeRandom(hashKey(delaySeed, key))()) * (hi - lo);

  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0];
    if (path === '/__stats') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(stats()));
      return;
    }
    if (path === '/__events' && req.method === 'POST') {
      let text = '';
      req.setEncoding('utf8');
      req.on('data', (c) => (text += c));
      req.on('end', () => {
        try {
          addEvents(JSON.parse(text));
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
          res.end(JSON.stringify(events));
        } catch (err) {
          res.writeHead(400, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
          res.end(String(err?.message ?? err));
        }
      });
      return;
    }
    let route;
    let cls;
    let cacheable = false;
    let m;
    if ((m = /^\/page\/(\d+)$/.exec(path))) {
      route = 'page';
      cls = FAST;
      cacheable = cacheableBelow > 0 && Number(m[1]) % 100 < cacheableBelow;
    } else if (/^\/api\/item\/\d+$/.test(path)) [route, cls] = ['api', FAST];
    else if (path === '/') [route, cls] = ['root', 'health'];
    else if (path === '/probe') [route, cls] = ['probe', 'probe'];
    else if (/^\/report\/\d+$/.test(path)) [route, cls] = ['report', SLOW];
    else if (path === '/upload' && req.method === 'POST') [route, cls] = ['upload', SLOW];
    else [route, cls] = ['other', 'other'];

    byClass[cls]++;
    byRoute[route]++;
    if (cacheable) cacheableAnswers++;
    const sec = Math.floor(Date.now() / 1000);
    const ps = (perSecond[sec] ??= { requests: 0, peakInflight: 0 });
    ps.requests++;
    inflight++;
    if (inflight > peakInflight) peakInflight = inflight;
    if (inflight > ps.peakInflight) ps.peakInflight = inflight;
    if (cls === FAST) peakInflightFast = Math.max(peakInflightFast, ++inflightFast);
    if (cls === SLOW) peakInflightSlow = Math.max(peakInflightSlow, ++inflightSlow);

    const key = `${req.method} ${url}`;
    const drawn = cls === 'probe' ? 0 : cls === SLOW ? between(slowMin, slowMax, key) : route === 'page' ? between(pageMin, pageMax, key) : between(fastMin, fastMax, key);
    const factor = cls === 'probe' || events.length === 0 ? 1 : slowFactorAt(Date.now());
    if (factor !== 1) slowedByEvent++;
    const delay = drawn * factor;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      inflight--;
      if (cls === FAST) inflightFast--;
      if (cls === SLOW) inflightSlow--;
    };
    res.once('close', finish);
    req.resume(); // read (and drop) any body, e.g. an upload's
    req.once('end', () => {
      const now = Date.now();
      const due = cls === 'probe' ? now : pastStall(pastStall(now) + delay);
      if (due > now + delay) heldByStall++;
      setTimeout(() => {
        const isJson = route === 'api' || route === 'report' || route === 'upload';
        const body = isJson
          ? JSON.stringify({ path, route, delayMs: Math.round(delay) })
          : `<!doctype html><title>${route}</title><p>${path}: ${Math.round(delay)} ms</p>\n`;
        res.writeHead(route === 'other' ? 404 : 200, {
          'content-type': isJson ? 'application/json' : 'text/html; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          'cache-control': cacheable ? 'public, max-age=5' : 'private, no-store',
          'x-origin-delay-ms': delay.toFixed(1),
        });
        res.end(body, finish);
      }, due - now);
    });
  });
  // The gateway keeps its upstream connections alive; never let the origin close them first.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 0;

  function stats() {
    return {
      startedAt,
      cacheableShare,
      fastMs: [fastMin, fastMax],
      slowMs: [slowMin, slowMax],
      stallEveryMs,
      stallMs,
      heldByStall,
      delaySeed,
      events,
      slowedByEvent,
      byClass: { ...byClass },
      byRoute: { ...byRoute },
      cacheableAnswers,
      inflight,
      peakInflight,
      peakInflightFast,
      peakInflightSlow,
      perSecond,
    };
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, resolve);
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    url: `http://${host}:${port}`,
    stats,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      'cacheable-share': { type: 'string', default: '0' },
      'page-ms': { type: 'string' },
      'stall-every-ms': { type: 'string', default: '0' },
      'stall-ms': { type: 'string', default: '0' },
      'fast-ms': { type: 'string' },
      'slow-ms': { type: 'string' },
      'delay-seed': { type: 'string' },
    },
  });
  const share = Number(values['cacheable-share']);
  if (!(share >= 0 && share <= 1)) throw new Error('--cacheable-share must be between 0 and 1');
  const stallEveryMs = Number(values['stall-every-ms']);
  const stallMs = Number(values['stall-ms']);
  if (!(stallEveryMs >= 0 && stallMs >= 0 && (stallEveryMs === 0 || stallMs <= stallEveryMs)))
    throw new Error('--stall-every-ms and --stall-ms are >= 0 ms, the stall no longer than the period');
  const delaySeed = values['delay-seed'] === undefined ? undefined : Number(values['delay-seed']);
  if (delaySeed !== undefined && !Number.isInteger(delaySeed)) throw new Error('--delay-seed must be an integer');
  const o = await startMixedOrigin({
    port: Number(values.port),
    cacheableShare: share,
    pageMs: parseRange(values['page-ms']),
    fastMs: parseRange(values['fast-ms']),
    slowMs: parseRange(values['slow-ms']),
    stallEveryMs,
    stallMs,
    delaySeed,
  });
  process.stdout.write(`mixed-origin listening on 127.0.0.1:${o.port}\n`);
  const stop = () => o.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/** `40-80` → [40, 80]; undefined when absent. */
export function parseRange(text) {
  if (text === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(text);
  if (!m || Number(m[1]) > Number(m[2])) throw new Error(`a range is LOW-HIGH in ms, like 40-80; got ${text}`);
  return [Number(m[1]), Number(m[2])];
}

/** A 32-bit seed from a number and a string (FNV-1a), for a request's own delay draw. */
function hashKey(seed, text) {
  let h = (0x811c9dc5 ^ Math.imul(seed | 0, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
