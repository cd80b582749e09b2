/**
 * One request with Node's own clients, for the TLS tests: HTTP/1.1 over TLS or plain HTTP
 * (node:https or node:http by the URL's scheme) and HTTP/2 over TLS (node:http2), each on a
 * connection of its own, so every answer comes from a fresh handshake. Each resolves with the
 * whole answer: status, headers, the body as text and as bytes, and the protocol version.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';

export interface ClientAnswer {
  status: number;
  /** Response headers; for HTTP/2 without the `:status` pseudo-header. */
  headers: http.IncomingHttpHeaders;
  /** The body as UTF-8 text. */
  body: string;
  /** The body as received (compressed answers, byte ranges). */
  bytes: Buffer;
  /** `1.1` or `2.0`. */
  httpVersion: string;
}

/** One HTTP/1.1 request to `url`, https: or http:, on its own connection (no agent). */
export function h1get(url: string, opts: https.RequestOptions = {}): Promise<ClientAnswer> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.request(url, { agent: false, ...opts }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        resolve({ status: res.statusCode!, headers: res.headers, body: bytes.toString('utf8'), bytes, httpVersion: res.httpVersion });
      });
    });
    req.once('error', reject);
    req.end();
  });
}

/**
 * One HTTP/2 request over TLS to 127.0.0.1:`port` on its own session, trusting `ca`: SNI `host`
 * and `:authority` `host:port`.
 */
export function h2get(port: number, ca: string, host: string, path: string, headers: Record<string, string> = {}): Promise<ClientAnswer> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: host });
    client.once('error', reject);
    const req = client.request({ ':path': path, ':authority': `${host}:${port}`, ...headers });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader = {};
    req.on('response', (h) => (head = h));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      client.close();
      const { ':status': status, ...rest } = head;
      const bytes = Buffer.concat(chunks);
      resolve({ status: Number(status), headers: rest as http.IncomingHttpHeaders, body: bytes.toString('utf8'), bytes, httpVersion: '2.0' });
    });
    req.once('error', reject);
    req.end();
  });
}
