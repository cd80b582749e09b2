import http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Certificates } from '../../../src/tls/certificates.js';
import { createSecurePublicServer, type SecurePublicServer } from '../../../src/tls/https-server.js';
import { INTERMEDIATE_CIPHERS, serverLimitsSchema } from '../../../src/config/schema.js';
import { makeTestCa } from '../../helpers/tls-certs.js';

let server: SecurePublicServer | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

async function start(onRequest: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ port: number; ca: string }> {
  const ca = await makeTestCa();
  const certs = new Certificates({ minVersion: 'TLSv1.2', ciphers: INTERMEDIATE_CIPHERS });
  certs.configure([{ name: 's', hosts: ['*'] }]);
  certs.set('s', await ca.leaf(['s.test']));
  server = createSecurePublicServer({
    limits: serverLimitsSchema.parse({}),
    logger: pino({ level: 'silent' }),
    certificates: certs,
    http2: true,
    onRequest,
    onUpgrade: () => undefined,
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, ca: ca.ca };
}

function get(port: number, ca: string, headers: Record<string, string>): Promise<http2.IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: 's.test' });
    client.on('error', reject);
    const req = client.request(headers);
    req.on('response', (h) => {
      req.resume();
      req.on('end', () => {
        client.close();
        resolve(h);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the HTTPS listener\'s HTTP/2 adapters', () => {
  it('hands the request path HTTP/1.1-shaped headers: host from :authority, no pseudo-headers in headers or rawHeaders', async () => {
    let seen: { headers: object; raw: string[]; version: string; method: string; url: string } | undefined;
    const { port, ca } = await start((req, res) => {
      seen = { headers: { ...req.headers }, raw: [...req.rawHeaders], version: req.httpVersion, method: req.method!, url: req.url! };
      res.end('ok');
    });
    await get(port, ca, { ':path': '/p?q=1', ':authority': 'Site.Test:8443', 'user-agent': 'ua' });
    expect(seen).toEqual({
      headers: { host: 'Site.Test:8443', 'user-agent': 'ua' },
      raw: ['user-agent', 'ua'],
      version: '2.0',
      method: 'GET',
      url: '/p?q=1',
    });
  });

  it('a head HTTP/2 refuses (a field sent twice that it carries once) leaves no field behind, so the error answer after it goes out', async () => {
    const { port, ca } = await start((req, res) => {
      const twice: Record<string, string[]> =
        req.url === '/date' ? { date: ['Mon, 01 Jan 2024 00:00:00 GMT', 'Tue, 02 Jan 2024 00:00:00 GMT'] } : { 'content-type': ['text/html', 'text/plain'] };
      try {
        res.writeHead(200, { ...twice, 'x-page': 'yes' });
        res.end('page');
      } catch {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('error');
      }
    });
    for (const path of ['/date', '/type']) {
      const h = await get(port, ca, { ':path': path });
      expect(h[':status'], path).toBe(500);
      expect(h['x-page'], path).toBeUndefined();
    }
  });

  it('drops connection-specific response fields (RFC 9113 §8.2.2) from setHeader and writeHead, arrays and objects alike, without Node\'s warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const { port, ca } = await start((req, res) => {
        res.setHeader('connection', 'close');
        if (req.url === '/array') res.writeHead(200, ['keep-alive', 'timeout=5', 'x-kept', 'yes', 'Transfer-Encoding', 'chunked', 'content-length', 2] as unknown as Record<string, string>);
        else res.writeHead(200, { Upgrade: 'h2c', 'proxy-connection': 'keep-alive', 'x-kept': 'yes', 'content-length': 2 });
        res.end('ok');
      });
      for (const path of ['/array', '/object']) {
        const h = await get(port, ca, { ':path': path });
        expect(h[':status']).toBe(200);
        expect(h['x-kept']).toBe('yes');
        for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']) expect(h[name], `${path} ${name}`).toBeUndefined();
      }
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => /connection header/i.test(w))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });
});
