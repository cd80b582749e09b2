/**
 * Listener limits without holes (issue 14): a chunked body past limits.maxBodyBytes gets 413
 * and the origin request is aborted; a connection that never sends a byte is closed after
 * limits.headersTimeoutMs; connection caps overall and per client address (trusted proxies
 * exempt); the timeouts and caps follow a reload.
 */
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { stringify } from 'yaml';
import { siteFor, withTestDefaults } from '../helpers/gateway.js';
import { spawnGateway } from '../helpers/gateway-process.js';
import { useFixtures } from '../helpers/fixtures.js';
import { CONNECTIONS_CHECK_MS } from '../../src/server/http-server.js';
import type { GatewayConfigInput } from '../../src/config/schema.js';

const { origin, gateway } = useFixtures();

/** An origin that answers an upload with the bytes it received (the helper counts them as they come). */
async function uploadOrigin() {
  const o = await origin();
  o.route('/upload', { body: (rec) => `got ${rec.bodyLength}` });
  return o;
}

/**
 * POSTs `total` bytes with chunked framing (no Content-Length), 1 KiB per chunk; with `pause`,
 * the first `pause.after` bytes go, then `pause.until()` is awaited before the rest.
 */
function postChunked(
  url: string,
  total: number,
  pause?: { after: number; until: () => Promise<unknown> },
  target: { method: string; path: string } = { method: 'POST', path: '/upload' },
): Promise<{ status: number; body: string; error?: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve) => {
    const req = http.request(`${url}${target.path}`, { method: target.method, headers: { 'transfer-encoding': 'chunked', 'content-type': 'application/octet-stream' } });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      res.on('error', (e) => resolve({ status: res.statusCode ?? 0, body, error: e.message, headers: res.headers }));
    });
    req.on('error', (e) => {
      if (!answered) resolve({ status: 0, body: '', error: e.message, headers: {} });
    });
    const chunk = Buffer.alloc(1024, 'x');
    let sent = 0;
    let paused = false;
    const pump = () => {
      while (sent < total) {
        if (pause && !paused && sent >= pause.after) {
          paused = true;
          void pause.until().then(pump);
          return;
        }
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/** Opens a raw TCP connection; resolves with the ms until the gateway closed it, or 'open' after `waitMs`. */
function silentConnection(port: number, waitMs: number): Promise<{ closedAfterMs: number | 'open'; received: string; socket: net.Socket }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    socket.on('error', () => {});
    const timer = setTimeout(() => resolve({ closedAfterMs: 'open', received, socket }), waitMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ closedAfterMs: Date.now() - started, received, socket });
    });
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
    s.resume(); // flowing, so the gateway's FIN is read and 'close' fires
  });
}

/** Resolves true if the socket is closed by the peer within `ms`, false if still open. */
function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function metric(adminUrl: string, line: RegExp): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text();
  const m = text.split('\n').find((l) => line.test(l));
  return m === undefined ? 0 : Number(m.split(' ').at(-1));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function portOf(url: string): number {
  return Number(new URL(url).port);
}

describe('limits: request bodies', () => {
  it('answers 413 to a chunked body that grows past limits.maxBodyBytes, and the origin never sees it (request buffering)', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { maxBodyBytes: 8 * 1024 }, sites: [siteFor([o.url])] });
    const res = await postChunked(g.url, 256 * 1024);
    expect(res.status).toBe(413);
    expect(res.headers['x-crowdgate-error']).toBe('body_too_large');
    expect(res.headers['connection']).toBe('close');
    expect(o.requests).toHaveLength(0);
    const after = await postChunked(g.url, 4 * 1024);
    expect([after.status, after.body]).toEqual([200, 'got 4096']);
    expect(o.requests[0]!.headers['content-length']).toBe('4096'); // read whole, sent with its length
  });

  it('answers 413 to a chunked body that grows past limits.maxBodyBytes and aborts the origin request (request buffering off)', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { maxBodyBytes: 8 * 1024, requestBuffering: { enabled: false } }, sites: [siteFor([o.url])] });
    // Half the cap first, so the origin request is under way when the cap is crossed.
    const res = await postChunked(g.url, 256 * 1024, {
      after: 4 * 1024,
      until: () => expect.poll(() => o.requests[0]?.bodyLength ?? 0, { timeout: 2_000 }).toBeGreaterThan(0),
    });
    expect(res.status).toBe(413);
    expect(res.headers['x-crowdgate-error']).toBe('body_too_large');
    expect(res.headers['connection']).toBe('close');
    // The origin request was cut: it never got the whole body, never answered, and is gone.
    await expect.poll(() => o.inflight, { timeout: 2_000 }).toBe(0);
    expect(o.requests).toHaveLength(1);
    expect(o.requests[0]!.bodyLength).toBeLessThan(256 * 1024);
    // The gateway keeps serving.
    const after = await postChunked(g.url, 4 * 1024);
    expect([after.status, after.body]).toEqual([200, 'got 4096']);
  });

  it('caps a chunked body on a GET the cache answers too (413, connection closed), and drops one within the cap before answering', async () => {
    const o = await origin();
    o.route('/page', { headers: { 'cache-control': 'public, max-age=60' }, body: (rec) => `page, origin got ${rec.bodyLength} body bytes` });
    const g = await gateway({ limits: { maxBodyBytes: 8 * 1024 }, sites: [siteFor([o.url])] });
    const big = await postChunked(g.url, 256 * 1024, undefined, { method: 'GET', path: '/page' });
    expect(big.status).toBe(413);
    expect(big.headers['x-crowdgate-error']).toBe('body_too_large');
    expect(big.headers['connection']).toBe('close');
    expect(o.requests).toHaveLength(0); // nothing reached the origin
    const small = await postChunked(g.url, 4 * 1024, undefined, { method: 'GET', path: '/page' });
    expect([small.status, small.body]).toEqual([200, 'page, origin got 0 body bytes']); // a shared fill sends no body
    const hit = await postChunked(g.url, 4 * 1024, undefined, { method: 'GET', path: '/page' });
    expect(hit.status).toBe(200);
    expect(hit.headers['cache-status']).toMatch(/; hit/);
    expect(o.requests).toHaveLength(1);
  });

  it('spools what limits.requestBuffering.maxBytes has room for: a declared body past it streams and arrives whole, a chunked one that outgrows it gets 503 upload_buffer_full and never reaches the origin', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { requestBuffering: { maxBytes: 100_000 } }, sites: [siteFor([o.url])] });
    const chunked = await postChunked(g.url, 256 * 1024);
    expect(chunked.status).toBe(503);
    expect(chunked.headers['x-crowdgate-error']).toBe('upload_buffer_full');
    expect(chunked.headers['connection']).toBe('close');
    expect(o.requests).toHaveLength(0);
    const declared = await request(`${g.url}/upload`, { method: 'POST', body: Buffer.alloc(256 * 1024, 1) });
    expect([declared.statusCode, await declared.body.text()]).toEqual([200, `got ${256 * 1024}`]);
    // Within the room, a chunked body is spooled and sent with its length.
    const fits = await postChunked(g.url, 90 * 1024);
    expect([fits.status, fits.body]).toEqual([200, `got ${90 * 1024}`]);
    expect(o.requests.at(-1)!.headers['content-length']).toBe(String(90 * 1024));
  });

  it('streams a route with requestBuffering: false as it comes: the origin sees the upload before its end', async () => {
    const o = await origin();
    let firstBytes = 0;
    o.route('/live-import', (_req, res, rec) => void res.end(`got ${rec.bodyLength}`));
    const g = await gateway({
      sites: [siteFor([o.url], { routes: [{ name: 'import', match: { pathPrefix: '/live-import' }, requestBuffering: false }, { name: 'all' }] })],
    });
    const res = await postChunked(g.url, 256 * 1024, {
      after: 8 * 1024,
      // The origin has the request while the client still holds most of the body back.
      until: () => expect.poll(() => (firstBytes = o.count('/live-import')), { timeout: 2_000 }).toBe(1),
    }, { method: 'POST', path: '/live-import' });
    expect(firstBytes).toBe(1);
    expect([res.status, res.body]).toEqual([200, `got ${256 * 1024}`]);
  });

  it('streams a chunked body within limits.maxBodyBytes to the origin whole', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { maxBodyBytes: 64 * 1024 }, sites: [siteFor([o.url])] });
    const res = await postChunked(g.url, 64 * 1024);
    expect([res.status, res.body]).toEqual([200, `got ${64 * 1024}`]);
  });
});

describe('limits: requests the HTTP parser refuses', () => {
  /** One raw request; resolves with everything the gateway sent before closing. */
  async function raw(port: number, head: string): Promise<string> {
    const s = await connect(port);
    let received = '';
    s.on('data', (d) => (received += d.toString()));
    s.write(head);
    await closedWithin(s, 5_000);
    return received;
  }

  it('a head too large (a grown cookie), no Host, or bare LF: 431/400 with the error code, counted and logged (observability trial)', async () => {
    const o = await origin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    const big = await raw(port, `GET / HTTP/1.1\r\nHost: blog.example.com\r\nCookie: c=${'x'.repeat(18_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    expect(big).toMatch(/\r\nX-Crowdgate-Error: headers_too_large\r\n/i);
    const noHost = await raw(port, 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n');
    expect(noHost).toMatch(/^HTTP\/1\.1 400 /);
    expect(noHost).toMatch(/\r\nX-Crowdgate-Error: bad_request\r\n/i);
    const bareLf = await raw(port, 'GET / HTTP/1.1\nHost: blog.example.com\n\n');
    expect(bareLf).toMatch(/^HTTP\/1\.1 400 /);
    // A TLS ClientHello on the plain listener (WordPress's HTTPS check): named as such.
    await new Promise<void>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'blog.example.com' });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    const lines = g.accessLogs().filter((l) => l.site === '-');
    expect(lines.map((l) => [l.status, l.error])).toEqual([
      [431, 'headers_too_large'],
      [400, 'bad_request'],
      [400, 'bad_request'],
      [400, 'bad_request'],
    ]);
    expect(lines[0]).toMatchObject({ client: '127.0.0.1', parserError: 'HPE_HEADER_OVERFLOW' });
    expect(lines[3]).toMatchObject({ parserError: 'tls_handshake_on_plain_http' });
    expect(await metric(g.adminUrl, /^crowdgate_requests_total\{site="-",route="-",state="error",status_class="4xx"\}/)).toBe(4);
    expect(o.count()).toBe(0);
  });

  it('bytes after a Connection: close request are dropped and its answer is sent; a malformed request pipelined behind an answer in flight is refused after it (attacker trial)', async () => {
    const o = await origin();
    o.route('/order', { delayMs: 100, body: 'ordered' });
    o.route('/slow', { delayMs: 100, body: 'slow page' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    const afterClose = await raw(
      port,
      'POST /order HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc' +
        'GET /next HTTP/1.1\r\nHost: blog.example.com\r\n\r\n',
    );
    expect(afterClose).toMatch(/^HTTP\/1\.1 200 /);
    expect(afterClose).toMatch(/\r\n\r\nordered$/);
    expect(o.count('/order')).toBe(1);
    expect(o.count('/next')).toBe(0);
    const pipelined = await raw(port, 'GET /slow HTTP/1.1\r\nHost: blog.example.com\r\n\r\nGET /bad HTTP/1.1\r\nHost: blog.example.com\r\nBad Name: x\r\n\r\n');
    expect(pipelined).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\nslow page/);
    expect(pipelined).toMatch(/slow pageHTTP\/1\.1 400 Bad Request\r\n/);
  });

  it('a request answered with Connection: close is the connection\'s last: an HTTP/1.0 keep-alive request (or one with Transfer-Encoding) never lets a request pipelined behind it reach the origin (RFC 9112 §9.6)', async () => {
    const o = await origin();
    // Answered without a length: to an HTTP/1.0 client the end of the body is the connection's.
    o.route('/api/stream', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part one, ');
      setTimeout(() => res.end('part two'), 20);
    });
    o.route('/api/x', { body: 'posted' });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    const deleteLine = (tag: string) => `DELETE /api/${tag} HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: 0\r\n\r\n`;
    const keepAlive = await raw(port, 'GET /api/stream HTTP/1.0\r\nHost: blog.example.com\r\nAuthorization: Bearer t\r\nConnection: keep-alive\r\n\r\n' + deleteLine('after-keep-alive'));
    expect(keepAlive).toMatch(/^HTTP\/1\.1 200 /);
    expect(keepAlive).toMatch(/\r\nconnection: close\r\n/i);
    expect(keepAlive).toMatch(/part one, part two$/);
    await new Promise((r) => setTimeout(r, 200));
    expect(o.requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual([]);
    const chunked = await raw(
      port,
      'POST /api/x HTTP/1.0\r\nHost: blog.example.com\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' + deleteLine('after-chunked'),
    );
    expect(chunked).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\nposted$/);
    expect(chunked).toMatch(/\r\nconnection: close\r\n/i);
    await new Promise((r) => setTimeout(r, 200));
    expect(o.requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual([]);
    // Nor one offering h2c (taken up by the 'upgrade' path, not the pipeline's: attacker trial).
    const offering = await raw(
      port,
      'POST /api/x HTTP/1.0\r\nHost: blog.example.com\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' +
        'DELETE /api/after-chunked-h2c HTTP/1.1\r\nHost: blog.example.com\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n',
    );
    expect(offering).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\nposted$/);
    await new Promise((r) => setTimeout(r, 200));
    expect(o.requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual([]);
    expect(g.accessLogs().filter((l) => l.method === 'DELETE')).toEqual([]);
    // An answer with a length keeps an HTTP/1.0 keep-alive connection open: what is pipelined
    // behind it is answered, in order.
    o.route('/page', { headers: { 'cache-control': 'max-age=60' }, body: 'page' });
    const kept = await raw(port, 'GET /page HTTP/1.0\r\nHost: blog.example.com\r\nConnection: keep-alive\r\n\r\nGET /next HTTP/1.1\r\nHost: blog.example.com\r\nConnection: close\r\n\r\n');
    expect(kept).toMatch(/^HTTP\/1\.1 200 [^]*\r\nconnection: keep-alive\r\n[^]*\r\n\r\npageHTTP\/1\.1 200 [^]*origin - GET \/next\n?$/i);
    // Many pipelined on one connection: each taken up in its turn, all answered in order, and
    // no listener piles up per waiting request (Node warns past 10 on one emitter).
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const many = await raw(port, 'GET /page HTTP/1.1\r\nHost: blog.example.com\r\n\r\n'.repeat(40) + 'GET /next HTTP/1.1\r\nHost: blog.example.com\r\nConnection: close\r\n\r\n');
      expect(many.match(/HTTP\/1\.1 200 /g)).toHaveLength(41);
      expect(many.match(/\r\n\r\npage/g)).toHaveLength(40);
      expect(many).toMatch(/origin - GET \/next\n?$/);
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });

  it('an upload the client cut short (FIN mid-body) is one request: counted once, never a second 400 (review)', async () => {
    const o = await origin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    const s = await connect(portOf(g.url));
    s.write('POST /upload HTTP/1.1\r\nHost: blog.example.com\r\nContent-Length: 100\r\n\r\nhello');
    await new Promise((r) => setTimeout(r, 100));
    s.end();
    await closedWithin(s, 5_000);
    await new Promise((r) => setTimeout(r, 100));
    expect(g.accessLogs().map((l) => l.path)).toEqual(['/upload']);
    expect(await metric(g.adminUrl, /^crowdgate_requests_total\{site="-"/)).toBe(0);
  });
});

describe('limits: connections', () => {
  it('closes a connection that never sends a byte soon after limits.headersTimeoutMs (not Node\'s 30 s check)', async () => {
    const o = await origin();
    const g = await gateway({ limits: { headersTimeoutMs: 300 }, sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    const [silent, partial] = await Promise.all([
      silentConnection(port, 300 + CONNECTIONS_CHECK_MS * 4),
      (async () => {
        const s = await connect(port);
        s.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // a head that never ends
        const started = Date.now();
        let received = '';
        s.on('data', (d) => (received += d.toString()));
        const closed = await closedWithin(s, 300 + CONNECTIONS_CHECK_MS * 4);
        return { closed, ms: Date.now() - started, received };
      })(),
    ]);
    expect(silent.closedAfterMs).not.toBe('open');
    expect(silent.closedAfterMs as number).toBeGreaterThanOrEqual(250);
    expect(partial.closed).toBe(true);
    expect(partial.received).toMatch(/^HTTP\/1\.1 408/);
  });

  it('closes a connection whose client stops reading its answer after limits.sendTimeoutMs (slow read), and no other: a long wait for the origin and an idle keep-alive are timed as before (attacker trial)', async () => {
    const o = await origin();
    const big = Buffer.alloc(24 * 1024 * 1024, 'x');
    o.route('/big', { headers: { 'cache-control': 'public, max-age=60' }, body: big });
    o.route('/stream', { headers: { 'cache-control': 'no-store' }, body: big });
    o.route('/poll', { delayMs: 1_200, headers: { 'cache-control': 'no-store' }, body: 'news' });
    const g = await gateway({ limits: { sendTimeoutMs: 400, keepAliveTimeoutMs: 800 }, cache: { maxObjectBytes: 32 * 1024 * 1024 }, sites: [siteFor([o.url])] });
    const warm = await request(`${g.url}/big`);
    expect((await warm.body.arrayBuffer()).byteLength).toBe(big.length);
    const port = portOf(g.url);
    const connections = () => metric(g.adminUrl, /^crowdgate_client_connections (\d+)/m);
    /** Asks for `path` and never reads (the gateway's FIN is never read either: its own count tells). */
    const stalled = async (path: string) => {
      const s = net.connect(port, '127.0.0.1');
      await new Promise<void>((r) => s.once('connect', () => r()));
      s.on('error', () => {});
      s.write(path.includes(' HTTP/1.1') ? `GET ${path}\r\n\r\n` : `GET ${path} HTTP/1.1\r\nHost: shop.test\r\n\r\n`);
      s.pause();
      return s;
    };
    // A hit (answered from memory) and a pass-through stream alike, and each again offering h2c
    // (answered past the parser Node detaches at 'upgrade', whose socket timeout it drops:
    // attacker trial, such readers were held for good).
    const offer = (path: string) => `${path} HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Offer: 1`;
    const readers = [await stalled('/big'), await stalled('/stream'), await stalled(offer('/big')), await stalled(offer('/stream'))];
    // And an ordinary answer with an h2c offer pipelined behind it (Node hands the socket over
    // while that answer is still being written).
    for (const path of ['/big', '/stream']) readers.push(await stalled(`${path} HTTP/1.1\r\nHost: shop.test\r\n\r\nGET /poll HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nX-Pipelined: 1`));
    await expect.poll(connections, { timeout: 400 + 4_000, interval: 100 }).toBe(0);
    for (const s of readers) s.destroy();
    // A client waiting 1.2 s for the origin's answer is not one that stopped reading.
    const polled = await request(`${g.url}/poll`);
    expect(polled.statusCode).toBe(200);
    expect(await polled.body.text()).toBe('news');
    // An idle keep-alive connection is still closed after keepAliveTimeoutMs.
    const s = await connect(port);
    s.write('GET /poll HTTP/1.1\r\nHost: shop.test\r\n\r\n');
    let received = '';
    s.on('data', (d) => (received += d.toString()));
    await expect.poll(() => received, { timeout: 5_000 }).toMatch(/news$/);
    const idleSince = Date.now();
    expect(await closedWithin(s, 800 + 3_000)).toBe(true);
    expect(Date.now() - idleSince).toBeGreaterThanOrEqual(600);
  });

  it('answers an upload whose body comes slower than limits.requestTimeoutMs with the gateway\'s own 408 request_timeout, counted as one (new-user trial: it was logged as a client that gave up)', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { headersTimeoutMs: 1_000, requestTimeoutMs: 1_000 }, sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    // Two bodies read whole before the origin is asked: 1 000 bytes in memory, 100 000 spooled.
    const answers = await Promise.all(
      [1_000, 100_000].map(async (length) => {
        const s = await connect(port);
        let received = '';
        s.on('data', (d) => (received += d.toString()));
        s.write(`POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: ${length}\r\n\r\n${'x'.repeat(10)}`);
        expect(await closedWithin(s, 1_000 + CONNECTIONS_CHECK_MS * 4)).toBe(true);
        return received;
      }),
    );
    for (const received of answers) {
      expect(received).toMatch(/^HTTP\/1\.1 408 /);
      expect(received.toLowerCase()).toContain('x-crowdgate-error: request_timeout');
    }
    expect(await metric(g.adminUrl, /^crowdgate_requests_total\{[^}]*status_class="4xx"[^}]*\}/)).toBe(2);
  });

  it('never cuts a body that keeps coming, however long it takes: limits.requestTimeoutMs times its silence (a 3 MB photo at 40 KB/s took 75 s and got 408)', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { headersTimeoutMs: 1_000, requestTimeoutMs: 1_000 }, sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    // 100 000 bytes (spooled) and 1 000 (in memory), a piece every 300 ms for about 3 s: three
    // times the timeout in all, never silent for it.
    const answers = await Promise.all(
      [100_000, 1_000].map(async (length) => {
        const s = await connect(port);
        let received = '';
        s.on('data', (d) => (received += d.toString()));
        s.write(`POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`);
        const piece = length / 10;
        for (let i = 0; i < 10; i++) {
          await sleep(300);
          s.write('x'.repeat(piece));
        }
        await closedWithin(s, 5_000);
        return received;
      }),
    );
    expect(answers[0]).toMatch(/^HTTP\/1\.1 200 [^]*got 100000$/);
    expect(answers[1]).toMatch(/^HTTP\/1\.1 200 [^]*got 1000$/);
  }, 15_000);

  it('times the body of a request that offers h2c (read past the parser Node detached) as any other: 408 when it stalls, whole when it keeps coming (differential trial: it was refused 400)', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { headersTimeoutMs: 1_000, requestTimeoutMs: 1_000 }, sites: [siteFor([o.url])] });
    const port = portOf(g.url);
    const offer = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n';
    const send = async (length: number, pieces: number): Promise<string> => {
      const s = await connect(port);
      let received = '';
      s.on('data', (d) => (received += d.toString()));
      s.write(`POST /upload HTTP/1.1\r\nHost: shop.test\r\n${offer}Content-Length: ${length}\r\n\r\n${'x'.repeat(10)}`);
      for (let i = 0; i < pieces; i++) {
        await sleep(300);
        s.write('x'.repeat((length - 10) / pieces));
      }
      await closedWithin(s, 1_000 + CONNECTIONS_CHECK_MS * 4);
      return received;
    };
    const [stalled, flowing] = await Promise.all([send(1_000, 0), send(100_010, 10)]);
    expect(stalled).toMatch(/^HTTP\/1\.1 408 /);
    expect(stalled.toLowerCase()).toContain('x-crowdgate-error: request_timeout');
    expect(flowing).toMatch(/^HTTP\/1\.1 200 [^]*got 100010$/);
  }, 15_000);

  it('tells an h2c-offering request with Expect: 100-continue to send its body, as Node does for any other (review: curl --http2 waited 1 s on each upload over 1 MB)', async () => {
    const o = await uploadOrigin();
    const g = await gateway({ limits: { headersTimeoutMs: 1_000, requestTimeoutMs: 1_000 }, sites: [siteFor([o.url])] });
    const s = await connect(portOf(g.url));
    let received = '';
    s.on('data', (d) => (received += d.toString()));
    s.write('POST /upload HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
    const started = Date.now();
    while (!received.includes('100 Continue') && Date.now() - started < 900) await sleep(10);
    expect(received).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    s.write('hello');
    await closedWithin(s, 3_000);
    expect(received).toMatch(/\r\n\r\nHTTP\/1\.1 200 [^]*got 5$/);
  });

  it('caps open connections per client address (maxConnectionsPerClient), and exempts trusted proxies', async () => {
    const o = await origin();
    o.route('/', { body: 'ok' });
    const input: GatewayConfigInput = { limits: { maxConnectionsPerClient: 2 }, trustedProxies: [], sites: [siteFor([o.url])] };
    const g = await gateway(input);
    const port = portOf(g.url);
    const first = [await connect(port), await connect(port)];
    const third = await connect(port); // accepted by the kernel, closed by the gateway at once
    expect(await closedWithin(third, 2_000)).toBe(true);
    expect(await metric(g.adminUrl, /^crowdgate_client_connections_refused_total\{reason="per_client"\}/)).toBe(1);
    // The first two still serve.
    first[0]!.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      first[0]!.on('data', (d) => (text += d.toString()));
      first[0]!.on('close', () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    // One closed: a new one fits again.
    const again = await connect(port);
    expect(await closedWithin(again, 300)).toBe(false);
    for (const s of [...first, again]) s.destroy();

    // Live: trusted proxies carry many clients, so they are exempt.
    writeFileSync(g.configPath, stringify(withTestDefaults({ ...input, trustedProxies: ['127.0.0.1/32', '::1/128'] })));
    expect((await g.gw.reload())?.ok).toBe(true);
    const many = await Promise.all(Array.from({ length: 4 }, () => connect(port)));
    expect(await Promise.all(many.map((s) => closedWithin(s, 300)))).toEqual([false, false, false, false]);
    for (const s of many) s.destroy();
  });

  it('caps open connections overall (maxConnections), live after a reload', async () => {
    const o = await origin();
    const input: GatewayConfigInput = { sites: [siteFor([o.url])] };
    const g = await gateway(input);
    const port = portOf(g.url);
    writeFileSync(g.configPath, stringify(withTestDefaults({ ...input, limits: { maxConnections: 2, headersTimeoutMs: 300 } })));
    expect((await g.gw.reload())?.ok).toBe(true);
    const held = [await connect(port), await connect(port)];
    const third = await connect(port);
    expect(await closedWithin(third, 2_000)).toBe(true);
    expect(await metric(g.adminUrl, /^crowdgate_client_connections_refused_total\{reason="max_connections"\}/)).toBe(1);
    expect(await metric(g.adminUrl, /^crowdgate_client_connections /)).toBe(2);
    // The reloaded head timeout applies too: the silent two are closed soon after it, and then a new one fits.
    expect(await Promise.all(held.map((s) => closedWithin(s, 300 + CONNECTIONS_CHECK_MS * 4)))).toEqual([true, true]);
    await expect.poll(() => metric(g.adminUrl, /^crowdgate_client_connections /), { timeout: 2_000 }).toBe(0);
    const res = await request(`${g.url}/`);
    await res.body.text();
    expect(res.statusCode).toBe(200);
  });
});

/**
 * Opens `n` connections to `url` and resolves with how many the kernel completed within
 * `withinMs` (a connection sits in the listener's accept queue until the gateway accepts it),
 * and the sockets (the caller destroys them).
 */
async function connectMany(url: string, n: number, withinMs: number): Promise<{ connected: number; sockets: net.Socket[] }> {
  const { hostname, port } = new URL(url);
  const sockets: net.Socket[] = [];
  let connected = 0;
  for (let i = 0; i < n; i++) {
    const socket = net.connect(Number(port), hostname);
    socket.on('connect', () => connected++);
    socket.on('error', () => {});
    sockets.push(socket);
  }
  await new Promise((r) => setTimeout(r, withinMs));
  return { connected, sockets };
}

describe('the accept queue (listen.backlog)', () => {
  // The gateway is stopped (SIGSTOP) so it accepts nothing: what completes is what the kernel
  // queues for it, as during a flash crowd's burst of new connections while the event loop is busy.
  it('holds a burst of 700 new connections while the gateway cannot accept, where Node\'s default of 511 drops the rest to a SYN retransmit', async () => {
    const o = await origin();
    o.route('/p', { headers: { 'cache-control': 'public, max-age=60' }, body: 'page' });
    for (const [backlog, want] of [[undefined, (c: number) => expect(c).toBe(700)], [64, (c: number) => expect(c).toBeLessThanOrEqual(80)]] as const) {
      const g = await spawnGateway({ ...(backlog === undefined ? {} : { listen: { host: '127.0.0.1', port: 0, backlog } }), sites: [siteFor([o.url])] });
      let sockets: net.Socket[] = [];
      try {
        g.child.kill('SIGSTOP');
        const burst = await connectMany(g.url, 700, 500);
        sockets = burst.sockets;
        want(burst.connected);
        g.child.kill('SIGCONT');
        // Once it runs again it serves them: a request on the first queued connection is answered.
        const first = sockets[0]!;
        const answer = await new Promise<string>((resolve, reject) => {
          let out = '';
          first.setEncoding('utf8');
          first.on('data', (d: string) => {
            out += d;
            if (out.includes('\r\n\r\npage')) resolve(out);
          });
          first.on('close', () => reject(new Error(`closed: ${out}`)));
          first.write('GET /p HTTP/1.1\r\nHost: a.test\r\n\r\n');
        });
        expect(answer).toMatch(/^HTTP\/1\.1 200/);
      } finally {
        g.child.kill('SIGCONT');
        for (const socket of sockets) socket.destroy();
        await g.stop();
      }
    }
  }, 30_000);
});
