/**
 * An origin of wiki-like HTML pages for the compression benchmark: `/page/N` (N = 0..pages-1)
 * answers a ~15 KB page (real English prose, this repository's README, cut into slices and
 * wrapped in a site's header, navigation and footer), uncompressed, `text/html`, cacheable for
 * an hour, with an ETag. `/__stats` answers how many page requests it served (itself and other
 * paths, such as health-check probes, not counted).
 *
 * CLI: node bench/lib/page-server.mjs --port P [--pages 20] [--bytes 15000]
 * Prints "listening <port>" once ready. It owns nothing else.
 */
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';


/** The pages, built once: deterministic, so every setup is served the same bytes. */
export function makePages(count, bytes) {
  const prose = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;');
  const pages = [];
  for (let n = 0; n < count; n++) {
    const head = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Page ${n} — Garage Wiki</title>` +
      `<link rel="stylesheet" href="/static/site.css"><script src="/static/site.js" defer></script></head><body>` +
      `<header><a href="/">Garage Wiki</a><nav><ul>${Array.from({ length: 12 }, (_, i) => `<li><a href="/page/${(n + i) % count}">Page ${(n + i) % count}</a></li>`).join('')}</ul></nav></header>` +
      `<main><h1>Page ${n}</h1><article>`;
    const foot = `</article></main><footer><p>Last edited by Garage Admin. Content is available under CC BY-SA.</p></footer></body></html>`;
    const room = Math.max(0, bytes - head.length - foot.length);
    const start = (n * 7919) % Math.max(1, prose.length - room);
    const text = prose.slice(start, start + room).split('\n\n').map((p) => `<p>${p}</p>`).join('\n');
    pages.push(Buffer.from(head + text + foot));
  }
  return pages;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      pages: { type: 'string', default: '20' },
      bytes: { type: 'string', default: '15000' },
    },
  });
  const pages = makePages(Number(values.pages), Number(values.bytes));
  let requests = 0;
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    if (req.url === '/__stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ requests }));
    }
    const m = /^\/page\/(\d+)$/.exec(req.url ?? '');
    if (m) requests++; // pages only: health-check probes of / are not counted
    const body = m ? pages[Number(m[1])] : undefined;
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
      return res.end('not found\n');
    }
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': String(body.length),
      'cache-control': 'public, max-age=3600',
      etag: `"page-${m[1]}-${body.length}"`,
    });
    res.end(body);
  });
  server.listen(Number(values.port), '127.0.0.1', () => {
    process.stdout.write(`listening ${server.address().port}\n`);
  });
}
