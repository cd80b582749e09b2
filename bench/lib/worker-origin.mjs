/**
 * An origin with a fixed number of workers and a FIFO backlog beyond them, as Apache prefork
 * with `MaxRequestWorkers` (or PHP-FPM's `pm.max_children`) is, for bench/busy-workers.mjs:
 * each request holds a worker for its whole service time, and a request that finds none busy
 * waits in the backlog, however long.
 *
 *   GET /slow?s=N    holds a worker N seconds (a report, a slow PHP page)
 *   GET /__stats     JSON counters, answered at once, no worker
 *   anything else    holds a worker `--page-ms` (a page; default 5–15 ms, uniform)
 *
 * Every answer is `Cache-Control: no-store`: each request reaches the origin.
 *
 * Run alone: node bench/lib/worker-origin.mjs [--port 0] [--workers 5] [--page-ms 5-15]
 * (prints "worker-origin listening on 127.0.0.1:<port>" on stdout).
 */
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '0' }, workers: { type: 'string', default: '5' }, 'page-ms': { type: 'string', default: '5-15' } },
});
const WORKERS = Number(values.workers);
/** A page's service time, ms: uniform between the two bounds of --page-ms ("A-B", or "A" for exactly A). */
const [PAGE_MIN_MS, PAGE_MAX_MS = PAGE_MIN_MS] = values['page-ms'].split('-').map(Number);
if (!(PAGE_MIN_MS >= 0 && PAGE_MAX_MS >= PAGE_MIN_MS)) throw new Error(`--page-ms: expected A-B with 0 <= A <= B, got ${values['page-ms']}`);
let busy = 0;
/** @type {Array<() => void>} */
const backlog = [];
let peakBacklog = 0;
const served = { slow: 0, page: 0 };
/** Requests whose client left before the answer: their work was done anyway. */
let abandoned = 0;

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://origin');
  if (url.pathname === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ busy, backlog: backlog.length, peakBacklog, served, abandoned }));
    return;
  }
  const slow = url.pathname === '/slow';
  const ms = slow ? Number(url.searchParams.get('s') ?? 10) * 1000 : PAGE_MIN_MS + Math.random() * (PAGE_MAX_MS - PAGE_MIN_MS);
  const run = () => {
    busy++;
    setTimeout(() => {
      busy--;
      if (res.destroyed) abandoned++;
      else {
        served[slow ? 'slow' : 'page']++;
        res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'no-store' });
        res.end(`<p>${url.pathname} ${Math.round(ms)} ms</p>`);
      }
      backlog.shift()?.();
    }, ms);
  };
  if (busy < WORKERS) run();
  else {
    backlog.push(run);
    if (backlog.length > peakBacklog) peakBacklog = backlog.length;
  }
});
server.keepAliveTimeout = 5_000; // Apache's KeepAliveTimeout
server.listen(Number(values.port), '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`worker-origin listening on 127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}\n`);
});
