/**
 * The edge features together, as a browser meets them: one cached page answered over HTTP/2 and
 * HTTP/1.1 on the HTTPS listener, compressed (the stored encoding the client prefers) and in
 * ranges (always of the identity bytes), from one origin fetch. Each feature has its own suite
 * (tls, compression, range); this one pins how they combine: the 206 of an entry stored with
 * encodings, the Accept-Ranges of each answer, If-Range against an encoding's ETag, and curl
 * --http2 asking for a range and for a compressed page.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type StartedGateway } from '../helpers/gateway.js';
import { startTestOrigin, type TestOrigin } from '../helpers/test-origin.js';
import { makeTestCa, type TestCa } from '../helpers/tls-certs.js';
import { h2get } from '../helpers/tls-client.js';

const run = promisify(execFile);
const HOST = 'edge.test';

/** A compressible page well above compression.minBytes, with varied text so ranges are checkable. */
const PAGE = Buffer.from(
  Array.from({ length: 400 }, (_, i) => `<p id="p${i}">paragraph ${i} of the garage wiki page, line ${(i * 7919) % 1000}</p>\n`).join(''),
);

describe('HTTPS + HTTP/2 + stored encodings + Range, on one cached page', () => {
  let origin: TestOrigin;
  let ca: TestCa;
  let caFile: string;
  let gw: StartedGateway;
  let port: number;

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'o' });
    origin.route('/doc', { headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'public, max-age=600', etag: '"doc1"' }, body: PAGE.toString() });
    ca = await makeTestCa();
    caFile = join(ca.dir, 'ca.pem');
    writeFileSync(caFile, ca.ca);
    const files = ca.write('edge', await ca.leaf([HOST]));
    gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      sites: [{ name: 'edge', hosts: [HOST], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: files }],
    });
    port = gw.gw.httpsAddress!.port;
  });

  afterAll(async () => {
    await gw?.close();
    await origin?.close();
  });

  it('serves the brotli encoding over h2 (decompresses to the page) and an identity range of the same entry, from one origin fetch', async () => {
    const br = await h2get(port, ca.ca, HOST, '/doc', { 'accept-encoding': 'gzip, br' });
    expect(br.status).toBe(200);
    expect(br.headers['content-encoding']).toBe('br');
    expect(br.headers['etag']).toBe('"doc1-br"');
    expect(String(br.headers['vary'])).toMatch(/accept-encoding/i);
    // Ranges are of the identity bytes: an encoded answer does not offer them.
    expect(br.headers['accept-ranges']).toBeUndefined();
    expect(brotliDecompressSync(br.bytes).equals(PAGE)).toBe(true);
    expect(Number(br.headers['content-length'])).toBe(br.bytes.length);

    const range = await h2get(port, ca.ca, HOST, '/doc', { 'accept-encoding': 'gzip, br', range: 'bytes=1000-1999' });
    expect(range.status).toBe(206);
    expect(range.headers['content-encoding']).toBeUndefined();
    expect(range.headers['content-range']).toBe(`bytes 1000-1999/${PAGE.length}`);
    expect(range.bytes.equals(PAGE.subarray(1000, 2000))).toBe(true);
    expect(range.headers['etag']).toBe('"doc1"');
    // The entry varies on Accept-Encoding, so its 206 says so too.
    expect(String(range.headers['vary'])).toMatch(/accept-encoding/i);
    expect(range.headers['cache-status']).toMatch(/crowdgate; hit/);

    const identity = await h2get(port, ca.ca, HOST, '/doc', { 'accept-encoding': 'identity' });
    expect(identity.headers['content-encoding']).toBeUndefined();
    expect(identity.headers['accept-ranges']).toBe('bytes');
    expect(identity.headers['etag']).toBe('"doc1"');
    expect(identity.bytes.equals(PAGE)).toBe(true);
    expect(origin.count('/doc')).toBe(1);
  });

  it('a 416 from the entry stored with encodings says Vary: Accept-Encoding too', async () => {
    const r = await h2get(port, ca.ca, HOST, '/doc', { 'accept-encoding': 'br', range: `bytes=${PAGE.length + 10}-` });
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${PAGE.length}`);
    expect(String(r.headers['vary'])).toMatch(/accept-encoding/i);
  });

  it('If-Range with an encoding\'s ETag is not the identity\'s: the full page, not a range', async () => {
    const r = await h2get(port, ca.ca, HOST, '/doc', { 'accept-encoding': 'br', range: 'bytes=0-99', 'if-range': '"doc1-br"' });
    expect(r.status).toBe(200);
    expect(r.bytes.equals(PAGE)).toBe(true);
    const ok = await h2get(port, ca.ca, HOST, '/doc', { range: 'bytes=0-99', 'if-range': '"doc1"' });
    expect(ok.status).toBe(206);
    expect(ok.bytes.equals(PAGE.subarray(0, 100))).toBe(true);
    expect(origin.count('/doc')).toBe(1);
  });

  it('a multipart range over h2 is parsed part by part from the identity bytes', async () => {
    const r = await h2get(port, ca.ca, HOST, '/doc', { 'accept-encoding': 'br', range: 'bytes=0-9, 5000-5009' });
    expect(r.status).toBe(206);
    const type = String(r.headers['content-type']);
    const boundary = /boundary=([^;]+)/.exec(type)?.[1];
    expect(boundary).toBeDefined();
    const text = r.bytes.toString('latin1');
    const parts = text.split(`--${boundary}`).slice(1, -1);
    expect(parts.length).toBe(2);
    expect(parts[0]!.toLowerCase()).toContain(`content-range: bytes 0-9/${PAGE.length}`);
    expect(parts[0]!.endsWith(`\r\n\r\n${PAGE.subarray(0, 10).toString('latin1')}\r\n`)).toBe(true);
    expect(parts[1]!.endsWith(`\r\n\r\n${PAGE.subarray(5000, 5010).toString('latin1')}\r\n`)).toBe(true);
  });

  it('curl --http2: a gzip answer that decompresses to the page, and a byte range', async () => {
    const url = `https://${HOST}:${port}/doc`;
    const resolve = `${HOST}:${port}:127.0.0.1`;
    const gz = await run('curl', ['-sS', '--http2', '--cacert', caFile, '--resolve', resolve, '-H', 'Accept-Encoding: gzip', '-D', '-', '-o', join(ca.dir, 'doc.gz'), url], { encoding: 'latin1' });
    expect(gz.stdout).toMatch(/^HTTP\/2 200/);
    expect(gz.stdout).toMatch(/content-encoding: gzip/i);
    const { readFileSync } = await import('node:fs');
    expect(gunzipSync(readFileSync(join(ca.dir, 'doc.gz'))).equals(PAGE)).toBe(true);
    const ranged = await run('curl', ['-sS', '--http2', '--cacert', caFile, '--resolve', resolve, '--compressed', '-r', '200-299', '-D', join(ca.dir, 'head.txt'), url], { encoding: 'latin1' });
    expect(readFileSync(join(ca.dir, 'head.txt'), 'latin1')).toMatch(/^HTTP\/2 206/);
    expect(ranged.stdout).toBe(PAGE.subarray(200, 300).toString('latin1'));
    expect(origin.count('/doc')).toBe(1);
  });
});
