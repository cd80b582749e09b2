/**
 * A bare Node reverse proxy with keep-alive to the origin and nothing else: no cache, no
 * collapsing, no admission control. The harness's control setup ("standin") and the thing
 * the benchmarks were developed against before the gateway existed.
 *
 * CLI: node bench/lib/proxy-standin.mjs --port P --origin http://127.0.0.1:3000
 */
import { createServer, request, Agent } from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '0' }, origin: { type: 'string', default: 'http://127.0.0.1:3000' } },
});
const origin = new URL(values.origin);
const agent = new Agent({ keepAlive: true, maxSockets: 1024 });

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const upstream = request(
    { host: origin.hostname, port: origin.port, method: req.method, path: req.url, headers: req.headers, agent },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  upstream.on('error', () => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('bad gateway\n');
  });
  req.pipe(upstream);
});
server.listen(Number(values.port), '127.0.0.1', () => console.log(`standin on ${JSON.stringify(server.address())}`));
process.once('SIGTERM', () => process.exit(0));
process.once('SIGINT', () => process.exit(0));
