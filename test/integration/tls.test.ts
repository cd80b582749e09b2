/**
 * The HTTPS listener end to end, with real TLS clients: Node's tls, https and http2 clients and
 * curl (spawned), against a gateway whose certificates are real PEM files made in the test
 * (test/helpers/tls-certs.ts) and a real origin. What each test proves is in its name.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { HitMemo } from '../../src/server/hit-memo.js';
import { WebSocket, WebSocketServer } from 'ws';
import { stringify } from 'yaml';
import { formatConfigError } from '../../src/config/load.js';
import type { GatewayConfigInput } from '../../src/config/schema.js';
import { startGateway, withTestDefaults, type StartedGateway } from '../helpers/gateway.js';
import { startTestOrigin, type TestOrigin } from '../helpers/test-origin.js';
import { makeTestCa, type TestCa, type TestLeaf } from '../helpers/tls-certs.js';
import { h1get, h2get } from '../helpers/tls-client.js';
import { until } from '../helpers/until.js';

const run = promisify(execFile);

interface Handshake {
  cn: string | string[] | undefined;
  serial: string;
  alpn: string | false | null;
  reused: boolean;
  session: Buffer | undefined;
  version: string | null;
}

/** One TLS handshake; resolves with what the server presented (after a session ticket had time to arrive). */
function handshake(port: number, ca: string, opts: { servername?: string; alpn?: string[]; session?: Buffer; minVersion?: tls.SecureVersion; maxVersion?: tls.SecureVersion } = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined;
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca,
      ...(opts.servername ? { servername: opts.servername } : {}),
      // Without SNI the name check has nothing to compare; the chain is still verified against the test CA.
      checkServerIdentity: opts.servername ? tls.checkServerIdentity : () => undefined,
      ALPNProtocols: opts.alpn,
      session: opts.session,
      minVersion: opts.minVersion,
      maxVersion: opts.maxVersion,
    });
    socket.on('session', (s) => (session = s));
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate();
      const facts = { cn: peer.subject?.CN, serial: peer.serialNumber, alpn: socket.alpnProtocol, reused: socket.isSessionReused(), version: socket.getProtocol() };
      // TLS 1.3 tickets come after the handshake: read a moment, then close.
      setTimeout(() => {
        socket.end();
        resolve({ ...facts, session });
      }, 50);
    });
  });
}

describe('HTTPS listener: SNI, HTTP/2, redirect, HSTS, live certificate reload', () => {
  let origin: TestOrigin;
  let ca: TestCa;
  let gw: StartedGateway;
  let httpsPort: number;
  let caFile: string;
  const leaves: Record<string, TestLeaf> = {};
  const files: Record<string, { certFile: string; keyFile: string }> = {};

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'o' });
    origin.route('/page', { headers: { 'cache-control': 'max-age=60' }, body: 'a page' });
    origin.route('/h1', { headers: { 'cache-control': 'max-age=60' }, body: 'h1 page' });
    // nginx and the application both add it: two lines of a field HTTP/2 sends once.
    origin.route('/twice', (_req, res) => {
      res.setHeader('x-content-type-options', ['nosniff', 'nosniff']);
      res.setHeader('content-language', ['en', 'en']);
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
      res.end('twice');
    });
    // A connection-specific field HTTP/2 refuses (RFC 9113 §8.2.2), from an origin that echoes
    // an h2c upgrade's: stored, passed through.
    origin.route('/h2-settings', { headers: { 'cache-control': 'max-age=60', 'http2-settings': 'AAMAAABkAAQAoAAAAAIAAAAA' }, body: 'settings page' });
    origin.route('/h2-settings-pass', { headers: { 'cache-control': 'no-store', 'http2-settings': 'AAMAAABkAAQAoAAAAAIAAAAA' }, body: 'settings pass' });
    origin.route('/curl', { headers: { 'cache-control': 'max-age=60' }, body: 'curl page' });
    origin.route('/purged', { headers: { 'cache-control': 'max-age=600' }, body: 'purge me' });
    origin.route('/scheme', { headers: { 'cache-control': 'max-age=60' }, body: (r) => `proto=${String(r.headers['x-forwarded-proto'])}` });
    ca = await makeTestCa();
    caFile = join(ca.dir, 'ca.pem');
    writeFileSync(caFile, ca.ca);
    leaves.a = await ca.leaf(['a.test']);
    leaves.b = await ca.leaf(['b.test', '*.b.test']);
    leaves.c = await ca.leaf(['default.test']);
    for (const k of ['a', 'b', 'c']) files[k] = ca.write(k, leaves[k]!);
    const site = (name: string, hosts: string[], tlsFiles?: { certFile: string; keyFile: string }) => ({
      name,
      hosts,
      origins: [{ url: origin.url }],
      healthCheck: { enabled: false },
      ...(tlsFiles ? { tls: tlsFiles } : {}),
    });
    gw = await startGateway({
      // No tls.host: the HTTPS listener binds where the plain one does (127.0.0.1), not 0.0.0.0.
      tls: { port: 0, redirectHttp: true, hsts: { maxAgeSeconds: 600, includeSubDomains: true } },
      sites: [site('a', ['a.test'], files.a), site('b', ['b.test', '*.b.test'], files.b), site('d', ['d.test']), site('c', ['*'], files.c)],
    });
    httpsPort = gw.gw.httpsAddress!.port;
    expect(gw.gw.httpsAddress!.address).toBe('127.0.0.1');
  });

  afterAll(async () => {
    await gw?.close();
    await origin?.close();
  });

  it('picks each site\'s certificate by SNI (exact and wildcard); no or unknown SNI gets the "*" site\'s', async () => {
    const a = await handshake(httpsPort, ca.ca, { servername: 'a.test' });
    expect([a.cn, a.serial]).toEqual(['a.test', leaves.a!.serial]);
    const b = await handshake(httpsPort, ca.ca, { servername: 'www.b.test' });
    expect([b.cn, b.serial]).toEqual(['b.test', leaves.b!.serial]);
    const unknown = await handshake(httpsPort, ca.ca, { servername: 'nobody.example' }).catch((e: Error) => e);
    // The default certificate does not name nobody.example: the client's name check refuses it, the server did not crash.
    expect(unknown).toBeInstanceOf(Error);
    expect(String((unknown as Error).message)).toMatch(/nobody\.example/);
    const none = await handshake(httpsPort, ca.ca, {});
    expect([none.cn, none.serial]).toEqual(['default.test', leaves.c!.serial]);
    // d.test has no certificate: its name gets the default one too.
    const d = await handshake(httpsPort, ca.ca, { servername: 'd.test' }).catch((e: Error) => e);
    expect(String((d as Error).message)).toMatch(/d\.test/);
  });

  it('offers h2 and http/1.1 by ALPN, TLS 1.2 and 1.3, and refuses TLS 1.1', async () => {
    expect((await handshake(httpsPort, ca.ca, { servername: 'a.test', alpn: ['h2', 'http/1.1'] })).alpn).toBe('h2');
    expect((await handshake(httpsPort, ca.ca, { servername: 'a.test', alpn: ['http/1.1'] })).alpn).toBe('http/1.1');
    expect((await handshake(httpsPort, ca.ca, { servername: 'a.test', maxVersion: 'TLSv1.2' })).version).toBe('TLSv1.2');
    expect((await handshake(httpsPort, ca.ca, { servername: 'a.test' })).version).toBe('TLSv1.3');
    await expect(handshake(httpsPort, ca.ca, { servername: 'a.test', minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })).rejects.toThrow();
  });

  it('answers an HTTP/2 hit from the hit memo (its Host is :authority, no raw line: review)', async () => {
    await h2get(httpsPort, ca.ca, 'a.test', '/page?memo-h2');
    await h2get(httpsPort, ca.ca, 'a.test', '/page?memo-h2'); // the slow path's hit: memoised
    const spy = vi.spyOn(HitMemo.prototype, 'get');
    try {
      const third = await h2get(httpsPort, ca.ca, 'a.test', '/page?memo-h2');
      expect(third.headers['cache-status']).toMatch(/crowdgate; hit/);
      expect(spy.mock.results.some((r) => r.type === 'return' && r.value !== undefined)).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });

  it('answers HTTP/2 and HTTP/1.1 over TLS from one cached copy, with no connection headers in h2', async () => {
    const before = origin.count('/page');
    const logsBefore = gw.accessLogs().length;
    const first = await h2get(httpsPort, ca.ca, 'a.test', '/page');
    expect(first.status).toBe(200);
    expect(first.body).toBe('a page');
    expect(first.headers['cache-status']).toMatch(/fwd=uri-miss/);
    const second = await h2get(httpsPort, ca.ca, 'a.test', '/page');
    expect(second.body).toBe('a page');
    expect(second.headers['cache-status']).toMatch(/crowdgate; hit/);
    const overH1 = await h1get(`https://127.0.0.1:${httpsPort}/page`, { ca: ca.ca, servername: 'a.test', headers: { host: `a.test:${httpsPort}` } });
    expect(overH1.httpVersion).toBe('1.1');
    expect(overH1.headers['cache-status']).toMatch(/crowdgate; hit/);
    expect(overH1.body).toBe('a page');
    expect(origin.count('/page') - before).toBe(1);
    for (const a of [first, second]) for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade']) expect(a.headers[name]).toBeUndefined();
    // What the origin saw: the site's host, https, as the listener knows it.
    const seen = origin.requests.filter((r) => r.path === '/page').at(-1)!;
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    expect(seen.headers.host).toBe(`a.test:${httpsPort}`);
    // The access log tells the protocols apart.
    const logged = gw.accessLogs().slice(logsBefore).filter((l) => l.path === '/page');
    expect(logged.map((l) => l.http)).toEqual(['2.0', '2.0', '1.1']);
    expect(new Set(logged.map((l) => l.scheme))).toEqual(new Set(['https']));
  });

  it('answers h2 clients a page whose origin repeats a single-value field (kept once), on the fill and on hits', async () => {
    for (const expected of [/fwd=uri-miss/, /crowdgate; hit/]) {
      const a = await h2get(httpsPort, ca.ca, 'a.test', '/twice');
      expect({ status: a.status, body: a.body, xcto: a.headers['x-content-type-options'], lang: a.headers['content-language'] }).toEqual({
        status: 200,
        body: 'twice',
        xcto: 'nosniff', // a singleton: the first
        lang: 'en, en', // a list (RFC 9110 §5.3): joined
      });
      expect(a.headers['cache-status']).toMatch(expected);
    }
  });

  it('answers h2 clients a page whose origin sends HTTP2-Settings (a connection-specific field): dropped, never stored', async () => {
    for (const expected of [/fwd=uri-miss/, /crowdgate; hit/]) {
      const a = await h2get(httpsPort, ca.ca, 'a.test', '/h2-settings');
      expect({ status: a.status, body: a.body, settings: a.headers['http2-settings'] }).toEqual({ status: 200, body: 'settings page', settings: undefined });
      expect(a.headers['cache-status']).toMatch(expected);
    }
    const passed = await h2get(httpsPort, ca.ca, 'a.test', '/h2-settings-pass');
    expect({ status: passed.status, body: passed.body, settings: passed.headers['http2-settings'] }).toEqual({ status: 200, body: 'settings pass', settings: undefined });
    // Nor kept for HTTP/1.1 readers of the stored copy: it was for the origin's own connection.
    const overH1 = await h1get(`https://127.0.0.1:${httpsPort}/h2-settings`, { ca: ca.ca, servername: 'a.test', headers: { host: `a.test:${httpsPort}` } });
    expect(overH1.headers['cache-status']).toMatch(/crowdgate; hit/);
    expect(overH1.headers['http2-settings']).toBeUndefined();
    expect(origin.count('/h2-settings')).toBe(1);
  });

  it('curl --http2 and --http1.1 both get the page and then hit', async () => {
    const args = (version: string) => ['-sS', version, '--cacert', caFile, '--resolve', `a.test:${httpsPort}:127.0.0.1`, '-D', '-', '-o', '/dev/null', '-w', 'proto=%{http_version}\\n', `https://a.test:${httpsPort}/curl`];
    const h2 = await run('curl', args('--http2'));
    expect(h2.stdout).toMatch(/^HTTP\/2 200/);
    expect(h2.stdout).toContain('proto=2');
    expect(h2.stdout.toLowerCase()).not.toMatch(/^(connection|keep-alive|transfer-encoding):/m);
    const h1 = await run('curl', args('--http1.1'));
    expect(h1.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(h1.stdout).toContain('proto=1.1');
    expect(h1.stdout.toLowerCase()).toMatch(/^cache-status: crowdgate; hit/m);
    expect(origin.count('/curl')).toBe(1);
    // HTTP/1.1 over TLS offering another protocol: ignored, answered as an ordinary request.
    const offer = await run('curl', ['-H', 'Connection: Upgrade', '-H', 'Upgrade: h2c', ...args('--http1.1')]);
    expect(offer.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(offer.stdout.toLowerCase()).toMatch(/^cache-status: crowdgate; hit/m);
    expect(origin.count('/curl')).toBe(1);
  });

  it('caches http and https pages under different keys, and the origin sees the listener\'s scheme whatever the client claims', async () => {
    const overTls = await h2get(httpsPort, ca.ca, 'a.test', '/scheme', { 'x-forwarded-proto': 'http' });
    expect(overTls.body).toBe('proto=https');
    // Plain HTTP from a trusted peer (127.0.0.1 is in the default trustedProxies): its X-Forwarded-Proto is believed.
    const plain = await h1get(`${gw.url}/scheme`, { headers: { host: 'd.test' } });
    expect(plain.body).toBe('proto=http');
    const plainA = await h1get(`${gw.url}/scheme`, { headers: { host: `a.test:${httpsPort}`, 'x-forwarded-proto': 'https' } });
    // Said to be https by a trusted proxy: not redirected, and the same key (scheme and authority) as the TLS listener's copy.
    expect(plainA.status).toBe(200);
    expect(plainA.body).toBe('proto=https');
    expect(plainA.headers['cache-status']).toMatch(/hit/);
    const tlsAgain = await h1get(`https://127.0.0.1:${httpsPort}/scheme`, { ca: ca.ca, servername: 'a.test', headers: { host: `a.test:${httpsPort}` } });
    expect(tlsAgain.headers['cache-status']).toMatch(/hit/);
    expect(tlsAgain.body).toBe('proto=https');
    // The hit memo (plain requests' routing) keeps http and https apart too: a memoised http copy never answers https.
    for (let i = 0; i < 3; i++) expect((await h1get(`${gw.url}/scheme?memo`, { headers: { host: 'd.test' } })).body).toBe('proto=http');
    const memoTls = await h1get(`https://127.0.0.1:${httpsPort}/scheme?memo`, { ca: ca.ca, servername: 'd.test', checkServerIdentity: () => undefined, headers: { host: 'd.test' } });
    expect(memoTls.body).toBe('proto=https');
    expect(memoTls.headers['cache-status']).toMatch(/fwd=uri-miss/);
    const hosts = origin.requests.filter((r) => r.path === '/scheme' && !r.url.includes('memo')).map((r) => `${String(r.headers.host)} ${String(r.headers['x-forwarded-proto'])}`);
    expect(hosts).toEqual([`a.test:${httpsPort} https`, 'd.test http']);
  });

  it('sends HSTS on HTTPS answers only (hits included) and redirects plain HTTP for sites with a certificate', async () => {
    await h2get(httpsPort, ca.ca, 'a.test', '/page');
    const hit = await h2get(httpsPort, ca.ca, 'a.test', '/page');
    expect(hit.headers['cache-status']).toMatch(/hit/);
    expect(hit.headers['strict-transport-security']).toBe('max-age=600; includeSubDomains');
    const h1hit = await h1get(`https://127.0.0.1:${httpsPort}/page`, { ca: ca.ca, servername: 'a.test', headers: { host: `a.test:${httpsPort}` } });
    expect(h1hit.headers['strict-transport-security']).toBe('max-age=600; includeSubDomains');

    const before = origin.requests.length;
    const redirected = await h1get(`${gw.url}/page?x=1`, { headers: { host: 'a.test' } });
    expect(redirected.status).toBe(308);
    expect(redirected.headers.location).toBe(`https://a.test:${httpsPort}/page?x=1`);
    expect(redirected.headers['strict-transport-security']).toBeUndefined();
    expect(redirected.headers['cache-status']).toBe(`crowdgate; fwd=bypass; detail="https-redirect rid=${String(redirected.headers['x-request-id'])}"`);
    // The same site however its name is spelt: a trailing dot or capitals did not redirect.
    for (const host of ['a.test.', 'A.Test', 'a.test.:80']) {
      const spelt = await h1get(`${gw.url}/page?x=1`, { headers: { host } });
      expect([spelt.status, spelt.headers.location], host).toEqual([308, `https://a.test:${httpsPort}/page?x=1`]);
    }
    const wildcard = await h1get(`${gw.url}/x`, { headers: { host: 'www.b.test:8080' } });
    expect(wildcard.headers.location).toBe(`https://www.b.test:${httpsPort}/x`);
    expect(origin.requests.length).toBe(before);
    // Never redirected: ACME challenges, a site without a certificate, PURGE.
    const challenge = await h1get(`${gw.url}/.well-known/acme-challenge/tok`, { headers: { host: 'a.test' } });
    expect(challenge.status).toBe(200);
    expect(origin.requests.at(-1)!.path).toBe('/.well-known/acme-challenge/tok');
    const noCert = await h1get(`${gw.url}/page`, { headers: { host: 'd.test' } });
    expect(noCert.status).toBe(200);
    expect(noCert.headers['strict-transport-security']).toBeUndefined();
    const purge = await h1get(`${gw.url}/page`, { method: 'PURGE', headers: { host: 'a.test' } });
    expect([200, 404]).toContain(purge.status);
    // Nor a name the site's certificate does not cover: the "*" site's certificate names only
    // default.test, so another name or an IP stays on plain HTTP rather than a certificate error.
    expect((await h1get(`${gw.url}/page`, { headers: { host: 'default.test' } })).status).toBe(308);
    for (const host of ['unlisted.example', '203.0.113.5', 'a.b.c.b.test']) {
      const plain = await h1get(`${gw.url}/page`, { headers: { host } });
      expect(plain.status, host).toBe(200);
      expect(plain.headers.location).toBeUndefined();
    }
  });

  it('a PURGE on the plain listener clears the copy cached over HTTPS, and one over TLS the plain copy (MediaWiki purges over HTTP)', async () => {
    // MediaWiki behind the HTTPS listener: its purges go to $wgCdnServers over plain HTTP (an
    // https URL would be tunnelled with CONNECT), naming the URL's Host, for the copies readers
    // got over HTTPS.
    const host = `a.test:${httpsPort}`;
    const before = origin.count('/purged');
    await h2get(httpsPort, ca.ca, 'a.test', '/purged');
    expect((await h2get(httpsPort, ca.ca, 'a.test', '/purged')).headers['cache-status']).toMatch(/crowdgate; hit/);
    const purge = await h1get(`${gw.url}/purged`, { method: 'PURGE', headers: { host } });
    expect(purge.status).toBe(200);
    expect(JSON.parse(purge.body).purged).toBe(1);
    const after = await h2get(httpsPort, ca.ca, 'a.test', '/purged');
    expect(after.headers['cache-status']).toMatch(/fwd=uri-miss/);
    expect(origin.count('/purged') - before).toBe(2);
    // And the other way: a copy stored for plain HTTP (d.test has no certificate) by a PURGE over TLS.
    await h1get(`${gw.url}/purged`, { headers: { host: 'd.test' } });
    expect((await h1get(`${gw.url}/purged`, { headers: { host: 'd.test' } })).headers['cache-status']).toMatch(/hit/);
    const overTls = await h1get(`https://127.0.0.1:${httpsPort}/purged`, { method: 'PURGE', ca: ca.ca, servername: 'd.test', checkServerIdentity: () => undefined, headers: { host: 'd.test' } });
    expect(overTls.status).toBe(200);
    expect((await h1get(`${gw.url}/purged`, { headers: { host: 'd.test' } })).headers['cache-status']).toMatch(/fwd=uri-miss/);
    // A successful POST (RFC 9111 §4.4) over TLS invalidates the plain copy as well.
    await h1get(`${gw.url}/purged?post`, { headers: { host: 'd.test' } });
    expect((await h1get(`${gw.url}/purged?post`, { headers: { host: 'd.test' } })).headers['cache-status']).toMatch(/crowdgate; hit/);
    const post = await h1get(`https://127.0.0.1:${httpsPort}/purged?post`, { method: 'POST', ca: ca.ca, servername: 'd.test', checkServerIdentity: () => undefined, headers: { host: 'd.test' } });
    expect(post.status).toBe(200);
    expect((await h1get(`${gw.url}/purged?post`, { headers: { host: 'd.test' } })).headers['cache-status']).not.toMatch(/crowdgate; hit/);
  });

  it('answers CONNECT (a PURGE of an https URL sent through a proxy) 405 and logs why, instead of dropping the connection', async () => {
    // What MediaWiki's curl sends to $wgCdnServers for an https purge URL.
    const port = Number(new URL(gw.url).port);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write(`CONNECT a.test:${httpsPort} HTTP/1.1\r\nHost: a.test:${httpsPort}\r\n\r\n`));
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (c: string) => (text += c));
      socket.once('close', () => resolve(text));
      socket.once('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 405 /);
    expect(answer).toMatch(/\$wgInternalServer/);
    await until(() => gw.logs.some((l) => /CONNECT refused/.test(String(l.msg)) && l.target === `a.test:${httpsPort}`), 'the CONNECT refusal in the log');
  });

  it('answers an HTTP/2 CONNECT on the HTTPS listener 405, never a 2xx ("tunnel established")', async () => {
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const client = http2.connect(`https://127.0.0.1:${httpsPort}`, { ca: ca.ca, servername: 'a.test' });
      client.once('error', reject);
      const req = client.request({ ':method': 'CONNECT', ':authority': 'a.test:443' });
      let status = 0;
      let body = '';
      req.setEncoding('utf8');
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        client.close();
        resolve({ status, body });
      });
      req.once('error', reject);
    });
    expect(answer.status).toBe(405);
    expect(answer.body).toMatch(/^405 Method Not Allowed: .*\$wgInternalServer/);
  });

  it('resumes TLS sessions (tickets), also after the certificate was replaced', async () => {
    for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
      const first = await handshake(httpsPort, ca.ca, { servername: 'a.test', maxVersion });
      expect(first.reused).toBe(false);
      expect(first.session).toBeDefined();
      const again = await handshake(httpsPort, ca.ca, { servername: 'a.test', maxVersion, session: first.session });
      expect(again.reused, maxVersion).toBe(true);
    }
    const before = await handshake(httpsPort, ca.ca, { servername: 'b.test' });
    leaves.b2 = await ca.leaf(['b.test', '*.b.test']);
    ca.write('b', leaves.b2);
    await until(async () => (await handshake(httpsPort, ca.ca, { servername: 'b.test' })).serial === leaves.b2!.serial, 'the renewed b certificate');
    const resumed = await handshake(httpsPort, ca.ca, { servername: 'b.test', session: before.session });
    expect(resumed.reused).toBe(true);
  });

  it('serves a certificate replaced on disk without restart; a broken replacement keeps the old one', async () => {
    const renewed = await ca.leaf(['a.test']);
    // As certbot does: new files renamed over the old ones.
    writeFileSync(`${files.a!.certFile}.new`, renewed.cert);
    writeFileSync(`${files.a!.keyFile}.new`, renewed.key);
    renameSync(`${files.a!.keyFile}.new`, files.a!.keyFile);
    renameSync(`${files.a!.certFile}.new`, files.a!.certFile);
    await until(async () => (await handshake(httpsPort, ca.ca, { servername: 'a.test' })).serial === renewed.serial, 'the renewed a certificate');
    const loadsBefore = gw.logs.filter((l) => String(l.msg).startsWith('certificate for site a refused')).length;

    // Broken: not PEM at all.
    writeFileSync(files.a!.certFile, 'this is not a certificate\n');
    await until(() => gw.logs.filter((l) => String(l.msg).startsWith('certificate for site a refused')).length > loadsBefore, 'the refusal in the log');
    expect((await handshake(httpsPort, ca.ca, { servername: 'a.test' })).serial).toBe(renewed.serial);
    // Broken: another certificate's key.
    writeFileSync(files.a!.certFile, renewed.cert);
    writeFileSync(files.a!.keyFile, leaves.c!.key);
    await until(() => gw.logs.some((l) => /is not the key of the certificate/.test(String(l.msg))), 'the key mismatch in the log');
    expect((await handshake(httpsPort, ca.ca, { servername: 'a.test' })).serial).toBe(renewed.serial);
    const answer = await h2get(httpsPort, ca.ca, 'a.test', '/page');
    expect(answer.status).toBe(200);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/crowdgate_tls_certificate_loads_total\{site="a",result="failure"\} [1-9]/);
    expect(metrics).toMatch(/crowdgate_tls_certificate_not_after_seconds\{site="a"\} \d+/);
    // Fixed again: served.
    writeFileSync(files.a!.keyFile, renewed.key);
    const third = await ca.leaf(['a.test']);
    ca.write('a', third);
    await until(async () => (await handshake(httpsPort, ca.ca, { servername: 'a.test' })).serial === third.serial, 'the third a certificate');
  });
});

describe('HTTP/2 requests their client cancels', () => {
  let origin: TestOrigin;
  let gw: StartedGateway;
  let ca: TestCa;

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'o' });
    origin.route('/api', { delayMs: 200, headers: { 'cache-control': 'private, max-age=0' }, body: 'answer' });
    origin.route('/quick', { delayMs: 60, headers: { 'cache-control': 'private, max-age=0' }, body: 'answer' });
    ca = await makeTestCa();
    gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      // Two permits, a patient queue: most of the cancelled requests are waiting when they go.
      admission: { limit: { algorithm: 'fixed', initial: 2, min: 1, ceiling: 2 }, queue: { deadlineMs: 5000, codelTargetMs: 5000, codelIntervalMs: 5000 } },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: ca.write('s', await ca.leaf(['s.test'])) }],
    });
  });

  afterAll(async () => {
    await gw?.close();
    await origin?.close();
  });

  async function inflight(adminUrl = gw.adminUrl, metric = 'crowdgate_origin_inflight'): Promise<number> {
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    return Number(new RegExp(`^${metric}\\{[^}]*\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  }

  /**
   * Sends `n` requests on one HTTP/2 connection, POSTs (passed through, body read first) and
   * GETs (cache fills of private answers) in turn, and resets request i after `cancelAfterMs(i)`;
   * resolves once every stream has closed. `pauseEvery`: a 30 ms pause after that many.
   */
  async function sendAndCancel(client: http2.ClientHttp2Session, n: number, path: string, cancelAfterMs: (i: number) => number, pauseEvery = Infinity): Promise<void> {
    const cancelled: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const post = i % 2 === 0;
      const req = client.request({ ':method': post ? 'POST' : 'GET', ':path': `${path}?i=${i}`, ':authority': 's.test' });
      req.on('error', () => undefined);
      req.on('response', () => undefined);
      req.resume();
      req.end(post ? 'text=hello' : undefined);
      cancelled.push(
        new Promise((resolve) => {
          setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), cancelAfterMs(i));
          req.on('close', () => resolve());
        }),
      );
      if (i % pauseEvery === pauseEvery - 1) await new Promise((r) => setTimeout(r, 30));
    }
    await Promise.all(cancelled);
  }

  it('gives every origin permit back, sends none waiting in the queue to the origin, and serves the next request (browser trial: a cancelled POST held a permit for good)', async () => {
    const client = http2.connect(`https://127.0.0.1:${gw.gw.httpsAddress!.port}`, { ca: ca.ca, servername: 's.test' });
    client.on('error', () => undefined);
    try {
      // Reset at 40 ms: the first two at the origin (200 ms), the others waiting for a permit.
      await sendAndCancel(client, 24, '/api', () => 40);
      // Those have left the queue at once, not waited there for a permit (held till 200 ms).
      await until(async () => (await inflight(gw.adminUrl, 'crowdgate_queue_length')) === 0, 'the queue empty', 100);
      await until(() => origin.inflight === 0, 'the origin done with what it got', 5000);
      await until(async () => (await inflight()) === 0, 'every permit back', 3000);
      // The ones cancelled while queued never reached the origin.
      expect(origin.count('/api')).toBeLessThanOrEqual(6);
      const next = await h2get(gw.gw.httpsAddress!.port, ca.ca, 's.test', '/api?after=1');
      expect(next.status).toBe(200);
      expect(await inflight()).toBe(0);
    } finally {
      client.close();
    }
  });

  it('gives every permit back whenever the client cancels: queued, at the origin, as the answer comes', async () => {
    // Room for most of them at the origin at once.
    const wide = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      admission: { limit: { algorithm: 'fixed', initial: 16, min: 1, ceiling: 16 } },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: ca.write('w', await ca.leaf(['s.test'])) }],
    });
    const client = http2.connect(`https://127.0.0.1:${wide.gw.httpsAddress!.port}`, { ca: ca.ca, servername: 's.test' });
    client.on('error', () => undefined);
    try {
      await sendAndCancel(client, 60, '/quick', (i) => (i * 7) % 120, 10);
      await until(() => origin.inflight === 0, 'the origin done with what it got', 5000);
      await until(async () => (await inflight(wide.adminUrl)) === 0, 'every permit back', 3000);
    } finally {
      client.close();
      await wide.close();
    }
  });
});

describe('HTTP/2 through the same limits as HTTP/1.1', () => {
  let origin: TestOrigin;
  let gw: StartedGateway;
  let ca: TestCa;
  let port: number;

  /** (Re)starts the gateway for s.test with these limits (besides 20 header fields and 1000 body bytes). */
  async function restart(name: string, limits: Record<string, number> = {}): Promise<void> {
    await gw?.close();
    gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      limits: { maxHeadersCount: 20, maxBodyBytes: 1000, ...limits },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: ca.write(name, await ca.leaf(['s.test'])) }],
    });
    port = gw.gw.httpsAddress!.port;
  }

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'o' });
    ca = await makeTestCa();
    await restart('s');
  });

  afterAll(async () => {
    await gw?.close();
    await origin?.close();
  });

  function h2send(headers: Record<string, string>, body?: Buffer): Promise<{ status: number; headers: http2.IncomingHttpHeaders; error?: Error }> {
    return new Promise((resolve) => {
      const client = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 's.test' });
      client.on('error', () => undefined);
      const req = client.request({ ':authority': 's.test', ...headers });
      req.on('response', (h) => {
        req.resume();
        req.on('end', () => {
          client.close();
          resolve({ status: Number(h[':status']), headers: h });
        });
      });
      req.on('error', (error) => {
        client.close();
        resolve({ status: 0, headers: {}, error });
      });
      if (body) {
        // Streamed without Content-Length, as a browser's fetch() upload does.
        req.write(body.subarray(0, 500));
        setTimeout(() => req.end(body.subarray(500)), 20);
      } else req.end();
    });
  }

  it('refuses a method in lower case with 400, as HTTP/1.1 does (attacker trial: `purge` was PURGE, `get` filled, `head` reset its stream)', async () => {
    for (const method of ['get', 'head', 'purge', 'Get']) {
      const res = await h2send({ ':method': method, ':path': `/lower-${method}` });
      expect([method, res.error?.message]).toEqual([method, undefined]); // `head`: a body as Content-Length says, not cut
      expect(res.status).toBe(400);
      expect(res.headers['x-crowdgate-error']).toBe('bad_request');
    }
    expect(origin.requests.some((r) => r.path.startsWith('/lower-'))).toBe(false);
    expect((await h2send({ ':method': 'GET', ':path': '/upper' })).status).toBe(200);
  });

  it('streams a request body to the origin (no Content-Length), and refuses one past limits.maxBodyBytes', async () => {
    const ok = await h2send({ ':method': 'POST', ':path': '/upload' }, Buffer.alloc(900, 1));
    expect(ok.status).toBe(200);
    await until(() => origin.requests.some((r) => r.path === '/upload' && r.bodyLength === 900), 'the body at the origin');
    const big = await h2send({ ':method': 'POST', ':path': '/big' }, Buffer.alloc(5000, 1));
    expect(big.status === 413 || big.error !== undefined).toBe(true);
    expect(origin.requests.some((r) => r.path === '/big' && r.bodyLength >= 5000)).toBe(false);
  });

  it('cancels a stream silent for limits.requestTimeoutMs while its connection stays busy', async () => {
    await restart('s2', { requestTimeoutMs: 600, headersTimeoutMs: 500 });
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 's.test' });
    client.on('error', () => undefined);
    // Another stream keeps the connection itself busy (a body dripping from the origin), so only
    // the stalled stream's own timeout can end it.
    origin.route('/drip', (_req, res) => {
      let n = 0;
      const t = setInterval(() => {
        res.write('x');
        if (++n >= 25) {
          clearInterval(t);
          res.end();
        }
      }, 100);
    });
    const drip = client.request({ ':method': 'POST', ':path': '/drip', ':authority': 's.test' });
    drip.on('error', () => undefined);
    drip.resume();
    drip.end();
    try {
      const startedAt = Date.now();
      const req = client.request({ ':method': 'POST', ':path': '/trickle', ':authority': 's.test' });
      req.on('error', () => undefined);
      req.on('response', () => undefined);
      req.write(Buffer.alloc(10, 1)); // and never the rest
      const rstCode = await new Promise<number>((resolve) => req.on('close', () => resolve(req.rstCode ?? -1)));
      const elapsed = Date.now() - startedAt;
      expect(rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(elapsed).toBeGreaterThanOrEqual(500);
      expect(elapsed).toBeLessThan(5000);
      expect(client.closed || client.destroyed).toBe(false);
    } finally {
      client.close();
    }
  });

  it('answers 408 to an h2c-offering HTTP/1.1 request whose body stops, on the HTTPS listener too (review: no timeout watched it past the detached parser)', async () => {
    await restart('s4', { requestTimeoutMs: 600, headersTimeoutMs: 500 });
    const startedAt = Date.now();
    const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.ca, servername: 's.test', ALPNProtocols: ['http/1.1'] });
    socket.on('error', () => undefined);
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    socket.write('POST /upload HTTP/1.1\r\nHost: s.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 100\r\n\r\nhello');
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const elapsed = Date.now() - startedAt;
    expect(got).toMatch(/^HTTP\/1\.1 408 /);
    expect(elapsed).toBeGreaterThanOrEqual(500);
    expect(elapsed).toBeLessThan(5_000);
  });

  it('closes an HTTP/2 connection that sends no complete request head within limits.headersTimeoutMs', async () => {
    await restart('s3', { requestTimeoutMs: 30_000, headersTimeoutMs: 400 });
    const startedAt = Date.now();
    const silent = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 's.test' });
    silent.on('error', () => undefined);
    await new Promise<void>((resolve) => silent.on('close', () => resolve()));
    const elapsed = Date.now() - startedAt;
    expect(elapsed).toBeGreaterThanOrEqual(300);
    expect(elapsed).toBeLessThan(5_000); // not requestTimeoutMs (30 s)
    // A session that asks at once is served, and keeps its connection past that deadline.
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 's.test' });
    client.on('error', () => undefined);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = client.request({ ':method': 'GET', ':path': '/p', ':authority': 's.test' });
        req.on('response', (h) => resolve(Number(h[':status'])));
        req.on('error', reject);
        req.resume();
        req.end();
      });
      expect(status).toBe(200);
      await new Promise((r) => setTimeout(r, 700));
      expect(client.closed || client.destroyed).toBe(false);
    } finally {
      client.close();
    }
  });

  it('answers 431 to more header fields than limits.maxHeadersCount (pseudo-headers not counted)', async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 25; i++) many[`x-h${i}`] = 'v';
    const refused = await h2send({ ':path': '/many', ...many });
    expect(refused.status).toBe(431);
    const few: Record<string, string> = {};
    for (let i = 0; i < 18; i++) few[`x-h${i}`] = 'v';
    expect((await h2send({ ':path': '/few', ...few })).status).toBe(200);
    expect(origin.count('/many')).toBe(0);
  });

  it('answers 431 to an HTTP/2 head larger than limits.maxHeaderBytes, as HTTP/1.1 does, and sends it nowhere (attacker trial)', async () => {
    // Node advertises SETTINGS_MAX_HEADER_LIST_SIZE but took a 40 KB field and sent it on.
    const refused = await h2send({ ':path': '/big-head', 'x-big': 'a'.repeat(20_000) });
    expect(refused.status).toBe(431);
    expect(refused.headers['x-crowdgate-error']).toBe('headers_too_large');
    expect(origin.count('/big-head')).toBe(0);
    expect((await h2send({ ':path': '/big-head', 'x-big': 'a'.repeat(12_000) })).status).toBe(200);
    expect(origin.count('/big-head')).toBe(1);
  });

  it('shutting down, an HTTP/2 session is closed with a GOAWAY after its answer, not sent a Connection field (shutdown.delayMs)', async () => {
    await gw?.close();
    gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      shutdown: { delayMs: 60_000 },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: ca.write('sd', await ca.leaf(['s.test'])) }],
    });
    port = gw.gw.httpsAddress!.port;
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 's.test' });
    client.on('error', () => undefined);
    const goaway = new Promise<void>((r) => client.once('goaway', () => r()));
    const ask = (path: string) =>
      new Promise<number>((resolve) => {
        const req = client.request({ ':authority': 's.test', ':path': path });
        req.on('response', (h) => {
          req.resume();
          req.on('end', () => resolve(Number(h[':status'])));
        });
        req.on('error', () => resolve(0));
        req.end();
      });
    try {
      expect(await ask('/before')).toBe(200);
      const stopping = gw.gw.announceShutdown();
      expect(await ask('/during')).toBe(200);
      await goaway;
      expect(warnings.filter((m) => /connection header/i.test(m))).toEqual([]);
      stopping.hurry();
      await stopping.elapsed;
    } finally {
      process.off('warning', onWarning);
      client.close();
    }
  });
});

describe('HTTPS listener across config reloads and drain', () => {
  let origin: TestOrigin;
  let ca: TestCa;

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'o' });
    origin.route('/slow', { delayMs: 400, body: 'slow' });
    ca = await makeTestCa();
  });
  afterAll(async () => {
    await origin?.close();
  });

  const site = (name: string, hosts: string[], files?: { certFile: string; keyFile: string }) => ({
    name,
    hosts,
    origins: [{ url: origin.url }],
    healthCheck: { enabled: false },
    ...(files ? { tls: files } : {}),
  });

  it('refuses a reload naming a missing certificate (file:line:col) and keeps serving; a new site\'s certificate and minVersion apply live', async () => {
    const a = await ca.leaf(['a.test']);
    const e = await ca.leaf(['e.test']);
    const filesA = ca.write('reload-a', a);
    const filesE = ca.write('reload-e', e);
    const base = { reload: { watch: false }, tls: { host: '127.0.0.1', port: 0 } };
    const gw = await startGateway({ ...base, sites: [site('a', ['a.test'], filesA)] });
    try {
      const port = gw.gw.httpsAddress!.port;
      const write = (input: GatewayConfigInput) => writeFileSync(gw.configPath, stringify(withTestDefaults(input)));
      write({ ...base, sites: [site('a', ['a.test'], { certFile: join(ca.dir, 'gone.crt'), keyFile: filesA.keyFile })] });
      const refused = await gw.gw.reload();
      expect(refused?.ok).toBe(false);
      const text = refused && !refused.ok ? refused.errors.map(formatConfigError).join('\n') : '';
      expect(text).toMatch(new RegExp(`^${gw.configPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+ sites\\[0\\]\\.tls\\.certFile: cannot read .*gone\\.crt: file not found$`));
      expect((await handshake(port, ca.ca, { servername: 'a.test' })).serial).toBe(a.serial);

      write({ ...base, tls: { ...base.tls, minVersion: 'TLSv1.3' }, sites: [site('a', ['a.test'], filesA), site('e', ['e.test'], filesE)] });
      expect((await gw.gw.reload())?.ok).toBe(true);
      expect((await handshake(port, ca.ca, { servername: 'e.test' })).serial).toBe(e.serial);
      expect((await h2get(port, ca.ca, 'e.test', '/hello')).status).toBe(200);
      expect(origin.requests.at(-1)!.headers.host).toBe(`e.test:${port}`);
      await expect(handshake(port, ca.ca, { servername: 'a.test', maxVersion: 'TLSv1.2' })).rejects.toThrow();
      expect(gw.gw.httpsAddress!.port).toBe(port);
    } finally {
      await gw.close();
    }
  });

  it('warns when a reload leaves no site with a certificate (every handshake then fails), as at start', async () => {
    const filesA = ca.write('reload-last', await ca.leaf(['a.test']));
    const base = { reload: { watch: false }, tls: { host: '127.0.0.1', port: 0 } };
    const gw = await startGateway({ ...base, sites: [site('a', ['a.test'], filesA), site('plain', ['*'])] });
    try {
      const warned = () => gw.logs.filter((l) => /no site has a usable certificate/.test(String(l.msg)));
      expect(warned()).toHaveLength(0);
      writeFileSync(gw.configPath, stringify(withTestDefaults({ ...base, sites: [site('plain', ['*'])] })));
      expect((await gw.gw.reload())?.ok).toBe(true);
      expect(warned()).toHaveLength(1);
      await expect(handshake(gw.gw.httpsAddress!.port, ca.ca, { servername: 'a.test' })).rejects.toThrow();
    } finally {
      await gw.close();
    }
  });

  it('drains: an HTTP/2 request in flight finishes, then the HTTPS listener is closed', async () => {
    const files = ca.write('drain', await ca.leaf(['drain.test']));
    const gw = await startGateway({ tls: { host: '127.0.0.1', port: 0 }, sites: [site('d', ['*'], files)] });
    try {
      const port = gw.gw.httpsAddress!.port;
      const inFlight = h2get(port, ca.ca, 'drain.test', '/slow');
      await until(() => origin.requests.some((r) => r.path === '/slow'), 'the request at the origin');
      const drained = await gw.gw.drain();
      expect(drained).toEqual({ drained: true, cut: 0 });
      const answer = await inFlight;
      expect([answer.status, answer.body]).toEqual([200, 'slow']);
      await expect(handshake(port, ca.ca, { servername: 'drain.test' })).rejects.toThrow();
    } finally {
      await gw.close();
    }
  });
});

describe('tls.http2: false', () => {
  it('offers only http/1.1 by ALPN and still answers and caches over TLS', async () => {
    const origin = await startTestOrigin({ name: 'o' });
    origin.route('/c', { headers: { 'cache-control': 'max-age=60' }, body: 'c' });
    const ca = await makeTestCa();
    const files = ca.write('h1', await ca.leaf(['h1.test']));
    const gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0, http2: false },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: files }],
    });
    try {
      const port = gw.gw.httpsAddress!.port;
      expect((await handshake(port, ca.ca, { servername: 'h1.test', alpn: ['h2', 'http/1.1'] })).alpn).toBe('http/1.1');
      const opts = { ca: ca.ca, servername: 'h1.test', headers: { host: 'h1.test' } };
      expect((await h1get(`https://127.0.0.1:${port}/c`, opts)).headers['cache-status']).toMatch(/fwd=uri-miss/);
      const hit = await h1get(`https://127.0.0.1:${port}/c`, opts);
      expect(hit.headers['cache-status']).toMatch(/crowdgate; hit/);
      expect(origin.count('/c')).toBe(1);
      expect(origin.requests[0]!.headers['x-forwarded-proto']).toBe('https');
    } finally {
      await gw.close();
      await origin.close();
    }
  });
});

describe('WebSocket over the HTTPS listener', () => {
  it('tunnels a wss:// upgrade (HTTP/1.1) and the origin sees X-Forwarded-Proto: https', async () => {
    const server = http.createServer();
    const wss = new WebSocketServer({ server });
    let proto: string | string[] | undefined;
    wss.on('connection', (ws, req) => {
      proto = req.headers['x-forwarded-proto'];
      ws.on('message', (m) => ws.send(`echo:${String(m)}`));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const ca = await makeTestCa();
    const gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      sites: [{ name: 'w', hosts: ['*'], origins: [{ url: `http://127.0.0.1:${(server.address() as { port: number }).port}` }], healthCheck: { enabled: false }, tls: ca.write('ws', await ca.leaf(['ws.test'])) }],
    });
    try {
      const ws = new WebSocket(`wss://127.0.0.1:${gw.gw.httpsAddress!.port}/socket`, [], { ca: ca.ca, headers: { host: 'ws.test' }, ...{ servername: 'ws.test' } } as ConstructorParameters<typeof WebSocket>[2]);
      const reply = await new Promise<string>((resolve, reject) => {
        ws.on('open', () => ws.send('hello'));
        ws.on('message', (m) => resolve(String(m)));
        ws.on('error', reject);
      });
      expect(reply).toBe('echo:hello');
      expect(proto).toBe('https');
      ws.terminate();
    } finally {
      await gw.close();
      // Upgraded sockets are not the HTTP server's to close: end them, or close() waits forever.
      for (const c of wss.clients) c.terminate();
      wss.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
