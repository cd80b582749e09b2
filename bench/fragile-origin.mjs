/**
 * The fragile origin: a garage web server that melts under a flash crowd. Used by every
 * benchmark and the demo, either imported (`startFragileOrigin`) or run as a child process
 * (`node bench/fragile-origin.mjs --port 3000 --concurrency 8 --service-ms 50`).
 *
 * The model (all simulated with timers; the CPU work is negligible):
 *
 *   - It works on at most C requests at once ("in flight"; default C = 8). Each takes a
 *     service time of S ms (default 50), so its capacity is C / S requests per ms
 *     (8 / 50 ms = 160 requests/s).
 *   - Requests beyond C wait in its own FIFO ("backlog").
 *   - Work slows as the backlog grows, like a box that swaps and thrashes: a request that
 *     starts service while B requests wait takes  S × (1 + B / (4·C))  ms. At B = 4·C the
 *     service time doubles, so the effective capacity halves exactly when it is needed most.
 *   - A request that waited longer than `maxWaitMs` (default 2000 ms) in the backlog is answered
 *     503 at once when its turn comes (no service time), like a PHP-FPM pool timing out.
 *   - Past a backlog of `backlogLimit` (default 64·C) new connections' requests are reset:
 *     the socket is destroyed with a TCP RST (accept queue overflow, process OOM-killed…).
 *   - A conditional request whose validator matches is answered 304, still after the service
 *     time (the application renders before comparing, as most do).
 *
 * Routes:
 *   GET  /page/N       cacheable: `Cache-Control: public, max-age=T`, T = 1 + (7·N mod 10) s,
 *                      ETag and Last-Modified of the current version (the page changes every T s)
 *   GET  /             a small cacheable page (max-age=5); where health checks land
 *   GET  /account      logged-in page: `Cache-Control: private, no-store` + `Set-Cookie`
 *   POST /api/comment  uncacheable write, answers 201
 *   GET  /__stats      JSON counters; served at once, not counted, not queued
 *                      (`/__stats?brief=1`: totals and current state only, for polling)
 *   POST /__service?ms=N  the base service time S from now on (an origin that gets slower:
 *                      its database, a dependency); served at once, not counted
 *
 * Counters: total requests, peak in flight (in service, ≤ C by construction), peak backlog, peak
 * concurrent (in service + backlog: what a client-side observer calls "in flight"), 503s, resets, fetches per path, and
 * per wall-clock second (epoch second): fetches, busy area (∫ in-flight dt, in request·ms),
 * peak in flight, peak backlog, 503s, resets, and fetches per path.
 *
 * It does not implement Range, Vary, HEAD bodies or anything else a real origin might; it is a
 * load model, not an HTTP test fixture.
 */
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

/**
 * Cache lifetime of /page/N in seconds: 1..10, deterministic in N.
 * @param {number} n page number
 */
export function pageTtlSeconds(n) {
  return 1 + ((7 * n) % 10);
}

/**
 * @typedef {object} FragileOriginOptions
 * @property {number} [port] 0 = any free port
 * @property {string} [host]
 * @property {number} [concurrency] C, requests worked on at once
 * @property {number} [serviceMs] S, base service time per request in ms
 * @property {number} [maxWaitMs] longest backlog wait before a 503
 * @property {number} [backlogLimit] backlog size past which requests are reset; default 64·C
 * @property {number} [pageBytes] approximate size of a page body
 */

/**
 * Starts the fragile origin.
 * @param {FragileOriginOptions} [opts]
 * @returns {Promise<{ url: string, port: number, stats: () => OriginStats, close: () => Promise<void> }>}
 */
export async function startFragileOrigin(opts = {}) {
  const C = opts.concurrency ?? 8;
  let S = opts.serviceMs ?? 50;
  const maxWaitMs = opts.maxWaitMs ?? 2000;
  const backlogLimit = opts.backlogLimit ?? 64 * C;
  const pageBytes = opts.pageBytes ?? 2048;
  const startedAt = Date.now();

  /** @type {{ req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, arrivedAt: number }[]} */
  const backlog = [];
  let backlogHead = 0; // index of the first waiting entry (amortised O(1) shift)
  let inflight = 0;

  const totals = { requests: 0, served: 0, status503: 0, resets: 0, notModified: 0, peakInflight: 0, peakBacklog: 0, peakConcurrent: 0 };
  /** @type {Map<string, number>} */
  const fetchesByPath = new Map();
  /** @type {Map<number, { fetches: number, busyMs: number, peakInflight: number, peakBacklog: number, peakConcurrent: number, status503: number, resets: number, paths: Record<string, number> }>} */
  const perSecond = new Map();

  // Busy-area bookkeeping: area += inflight × dt, split at epoch-second boundaries.
  let areaAt = Date.now();
  function accrue(now) {
    let t = areaAt;
    while (t < now) {
      const secEnd = (Math.floor(t / 1000) + 1) * 1000;
      const until = Math.min(now, secEnd);
      if (inflight > 0) second(t).busyMs += inflight * (until - t);
      t = until;
    }
    areaAt = now;
  }
  function second(at) {
    const s = Math.floor(at / 1000);
    let rec = perSecond.get(s);
    if (!rec) {
      rec = { fetches: 0, busyMs: 0, peakInflight: 0, peakBacklog: 0, peakConcurrent: 0, status503: 0, resets: 0, paths: {} };
      perSecond.set(s, rec);
    }
    return rec;
  }
  const backlogSize = () => backlog.length - backlogHead;
  function notePeaks(now) {
    const rec = second(now);
    const b = backlogSize();
    if (inflight > totals.peakInflight) totals.peakInflight = inflight;
    if (b > totals.peakBacklog) totals.peakBacklog = b;
    if (inflight > rec.peakInflight) rec.peakInflight = inflight;
    if (b > rec.peakBacklog) rec.peakBacklog = b;
    if (inflight + b > totals.peakConcurrent) totals.peakConcurrent = inflight + b;
    if (inflight + b > rec.peakConcurrent) rec.peakConcurrent = inflight + b;
  }

  /** Starts work on waiting requests while a slot is free; 503s the ones that waited too long. */
  function pump() {
    while (inflight < C && backlogSize() > 0) {
      const job = backlog[backlogHead];
      backlog[backlogHead++] = undefined;
      if (backlogHead > 1024 && backlogHead * 2 > backlog.length) {
        backlog.splice(0, backlogHead);
        backlogHead = 0;
      }
      if (job.res.destroyed) continue; // the client left while waiting
      const now = Date.now();
      if (now - job.arrivedAt > maxWaitMs) {
        totals.status503++;
        second(now).status503++;
        send(job.res, 503, { 'content-type': 'text/plain', 'retry-after': '5' }, 'origin overloaded\n');
        continue;
      }
      begin(job, now);
    }
  }

  function begin(job, now) {
    accrue(now);
    inflight++;
    notePeaks(now);
    // Service time grows with the backlog: S × (1 + B / (4·C)) ms.
    const serviceMs = S * (1 + backlogSize() / (4 * C));
    setTimeout(() => {
      const end = Date.now();
      accrue(end);
      inflight--;
      try {
        respond(job.req, job.res, end);
      } catch (err) {
        if (!job.res.headersSent) send(job.res, 500, {}, String(err));
      }
      pump();
    }, serviceMs);
  }

  function respond(req, res, now) {
    const url = new URL(req.url ?? '/', 'http://origin');
    const path = url.pathname;
    const page = /^\/page\/(\d+)$/.exec(path);
    if ((page || path === '/') && (req.method === 'GET' || req.method === 'HEAD')) {
      const n = page ? Number(page[1]) : 0;
      const ttl = page ? pageTtlSeconds(n) : 5;
      const version = Math.floor(now / (ttl * 1000)); // the page changes every TTL
      const etag = `"p${n}-v${version}"`;
      const lastModified = new Date(version * ttl * 1000).toUTCString();
      const headers = {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': `public, max-age=${ttl}`,
        etag,
        'last-modified': lastModified,
      };
      totals.served++;
      if (req.headers['if-none-match'] === etag) {
        totals.notModified++;
        return send(res, 304, headers, '');
      }
      return send(res, 200, headers, renderPage(n, version, pageBytes));
    }
    if (path === '/account' && req.method === 'GET') {
      const session = /(?:^|;\s*)session=([^;]+)/.exec(req.headers.cookie ?? '')?.[1] ?? 'anonymous';
      totals.served++;
      return send(
        res,
        200,
        {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'private, no-store',
          'set-cookie': `seen=${now}; Path=/; HttpOnly`,
        },
        `<!doctype html><title>Account</title><p>Signed in as ${session.replace(/[^\w-]/g, '')}.</p>\n`,
      );
    }
    if (path === '/api/comment' && req.method === 'POST') {
      totals.served++;
      return send(res, 201, { 'content-type': 'application/json', 'cache-control': 'no-store' }, `{"ok":true,"at":${now}}\n`);
    }
    totals.served++;
    return send(res, 404, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=10' }, 'not found\n');
  }

  const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
    if (req.url === '/__stats' || req.url === '/__stats?brief=1') {
      req.resume();
      const body = JSON.stringify(req.url === '/__stats' ? stats() : briefStats());
      return send(res, 200, { 'content-type': 'application/json', 'cache-control': 'no-store' }, body);
    }
    if (req.method === 'POST' && req.url?.startsWith('/__service?')) {
      req.resume();
      const ms = Number(new URL(req.url, 'http://origin').searchParams.get('ms'));
      if (!(ms > 0)) return send(res, 400, { 'content-type': 'text/plain' }, 'ms must be > 0\n');
      S = ms;
      return send(res, 200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }, `service ${S} ms\n`);
    }
    const now = Date.now();
    totals.requests++;
    const path = (req.url ?? '/').split('?')[0];
    fetchesByPath.set(path, (fetchesByPath.get(path) ?? 0) + 1);
    const rec = second(now);
    rec.fetches++;
    rec.paths[path] = (rec.paths[path] ?? 0) + 1;
    if (backlogSize() >= backlogLimit) {
      // Overflow: drop the connection hard (RST where the platform allows it).
      totals.resets++;
      rec.resets++;
      const sock = req.socket;
      if (typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
      else sock.destroy();
      return;
    }
    req.resume(); // bodies (POST) are read and ignored
    req.once('end', () => {
      backlog.push({ req, res, arrivedAt: now });
      notePeaks(now);
      pump();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.headersTimeout = 65_000;

  /** @typedef {ReturnType<typeof stats>} OriginStats */
  function stats() {
    accrue(Date.now());
    return {
      concurrency: C,
      serviceMs: S,
      maxWaitMs,
      backlogLimit,
      startedAt,
      now: Date.now(),
      inflight,
      backlog: backlogSize(),
      ...totals,
      fetchesByPath: Object.fromEntries(fetchesByPath),
      perSecond: Object.fromEntries(perSecond),
    };
  }

  /** The totals and current state only (no per-path or per-second tables): cheap to poll. */
  function briefStats() {
    return { concurrency: C, serviceMs: S, now: Date.now(), inflight, backlog: backlogSize(), ...totals };
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve);
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://${opts.host ?? '127.0.0.1'}:${port}`,
    port,
    stats,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** @param {import('node:http').ServerResponse} res */
function send(res, status, headers, body) {
  if (res.destroyed) return;
  res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** A deterministic HTML page of about `bytes` bytes for page n, version v. */
function renderPage(n, v, bytes) {
  const head = `<!doctype html><title>Page ${n}</title><h1>Page ${n}</h1><p>version ${v}</p>\n`;
  const filler = `<p>${'lorem ipsum dolor sit amet '.repeat(4)}</p>\n`;
  let body = head;
  while (body.length < bytes) body += filler;
  return body;
}

/** Fetches the stats of an origin running in another process. @param {string} url origin base URL */
export async function fetchOriginStats(url) {
  const res = await fetch(`${url}/__stats`);
  return res.json();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '3000' },
      host: { type: 'string', default: '127.0.0.1' },
      concurrency: { type: 'string', default: '8' },
      'service-ms': { type: 'string', default: '50' },
      'max-wait-ms': { type: 'string', default: '2000' },
      'backlog-limit': { type: 'string' },
      'page-bytes': { type: 'string', default: '2048' },
    },
  });
  const origin = await startFragileOrigin({
    port: Number(values.port),
    host: values.host,
    concurrency: Number(values.concurrency),
    serviceMs: Number(values['service-ms']),
    maxWaitMs: Number(values['max-wait-ms']),
    backlogLimit: values['backlog-limit'] ? Number(values['backlog-limit']) : undefined,
    pageBytes: Number(values['page-bytes']),
  });
  const s = origin.stats();
  console.log(
    `fragile origin on ${origin.url}: C=${s.concurrency}, S=${s.serviceMs} ms, capacity ${Math.round((s.concurrency * 1000) / s.serviceMs)} req/s, backlog limit ${s.backlogLimit}`,
  );
  const stop = () => origin.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
