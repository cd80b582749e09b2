/**
 * A bare node:http server answering every request at once with one preallocated body: the
 * ceiling for the cache-hit throughput benchmark, and the origin whose body the gateway
 * caches there. Also a harness check: the load generator's floor latency against it.
 *
 * CLI: node bench/lib/static-server.mjs --port P --bytes 1024 [--max-age 3600] [--work-us N] [--tls-cert F --tls-key F]
 *
 * --tls-cert/--tls-key: node:http2's secure server (h2 by ALPN, HTTP/1.1 fallback) with that
 * certificate instead of plain HTTP/1.1: the ceiling for the hit benchmark's h2 mode.
 *
 * --work-us N spins N µs per request before answering: a bare server doing a little work, to
 * see what each µs of per-request work costs in throughput on this machine (README, Benchmarks).
 * Prints "listening <port>" once ready. It owns nothing else.
 */
import { createServer } from 'node:http';
import { createSecureServer } from 'node:http2';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    bytes: { type: 'string', default: '1024' },
    'max-age': { type: 'string', default: '3600' },
    'work-us': { type: 'string', default: '0' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});
const body = Buffer.alloc(Number(values.bytes), 'x');
const headers = {
  'content-type': 'application/octet-stream',
  'content-length': String(body.length),
  'cache-control': `public, max-age=${values['max-age']}`,
  etag: `"static-${body.length}"`,
};
const workNs = BigInt(Math.round(Number(values['work-us']) * 1000));
/** Busy-waits workNs (process.hrtime.bigint, so the wait includes that call's own cost). */
function work() {
  if (workNs === 0n) return;
  const until = process.hrtime.bigint() + workNs;
  while (process.hrtime.bigint() < until);
}
let requests = 0; // all requests but /__stats
let benchRequests = 0; // requests for /bench only (health-check probes of / excluded)
const handler = (req, res) => {
  if (req.url === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ requests, benchRequests }));
  }
  requests++;
  if (req.url === '/bench') benchRequests++;
  work();
  res.writeHead(200, headers);
  res.end(body);
};
const server = values['tls-cert']
  ? createSecureServer(
      { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']), allowHTTP1: true, settings: { maxConcurrentStreams: 128 } },
      handler,
    )
  : createServer({ keepAliveTimeout: 60_000 }, handler);
server.listen(Number(values.port), '127.0.0.1', () => {
  const addr = server.address();
  console.log(`listening ${typeof addr === 'object' && addr ? addr.port : 0}`);
});
process.once('SIGTERM', () => process.exit(0));
process.once('SIGINT', () => process.exit(0));
