/**
 * The raw head writer must put on the wire exactly what writeHead would: the same server,
 * answering the same request once through each writer, on a real loopback connection.
 */
import { createServer, IncomingMessage, ServerResponse, type Server } from 'node:http';
import { connect, Socket, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { makeHeadBlock, RAW_HEAD_SUPPORTED, setRawHead } from '../../../src/server/raw-head.js';

type Flat = Array<string | number | string[]>;

interface Served {
  status: number;
  flat: Flat;
  body: Buffer;
}

const BODY = Buffer.from('hello, crowd\n');
const DATED: Flat = [
  'content-type', 'text/plain',
  'cache-control', 'public, max-age=60',
  'date', 'Mon, 30 Nov 2026 12:00:00 GMT',
  'set-cookie', ['a=1; Path=/', 'b=2; Path=/'],
  'content-length', BODY.length,
  'via', '1.1 crowdgate',
];
const PER_REQUEST: Flat = ['age', '3', 'cache-status', 'crowdgate; hit; ttl=57; detail="hit rid=r-1"', 'x-request-id', 'r-1'];

function linesOf(flat: Flat): string {
  let out = '';
  for (let i = 0; i < flat.length; i += 2) out += `${flat[i]}: ${flat[i + 1]}\r\n`;
  return out;
}

let servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  servers = [];
});

/**
 * A server answering `/raw` through setRawHead and anything else through writeHead, with the
 * same status, headers and body. `configure` may set server options (maxRequestsPerSocket…).
 */
async function startServer(served: Served, configure?: (s: Server) => void): Promise<number> {
  const block = makeHeadBlock(served.flat);
  const server = createServer((req, res: ServerResponse) => {
    const raw = req.url === '/raw';
    if (raw) {
      expect(block).toBeDefined();
      expect(setRawHead(res, served.status, block!, linesOf(PER_REQUEST))).toBe(true);
    } else {
      res.writeHead(served.status, [...served.flat, ...PER_REQUEST] as unknown as Record<string, string>);
    }
    if (req.method === 'HEAD' || served.status === 204) res.end();
    else res.end(served.body);
  });
  configure?.(server);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** Sends `request` bytes on a fresh connection; resolves with everything read until it closes or goes idle. */
function exchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let idle: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(idle);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    socket.on('data', (c) => {
      chunks.push(c);
      clearTimeout(idle);
      idle = setTimeout(done, 150); // keep-alive: the server leaves it open
    });
    socket.on('end', done);
    socket.on('error', reject);
    socket.write(request);
  });
}

/** Both writers' bytes for one request template (`PATH` is replaced by /raw or /std). */
async function bothWays(port: number, template: string): Promise<{ raw: string; std: string }> {
  const raw = await exchange(port, template.replaceAll('PATH', '/raw'));
  const std = await exchange(port, template.replaceAll('PATH', '/std'));
  const normalise = (s: string) => s.replace(/^Date: .*$/gm, 'Date: <now>');
  return { raw: normalise(raw), std: normalise(std) };
}

const cases: Array<[string, string, Partial<Served>?, ((s: Server) => void)?]> = [
  ['keep-alive, two pipelined requests', 'GET PATH HTTP/1.1\r\nHost: a\r\n\r\nGET PATH HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['Connection: close', 'GET PATH HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'],
  ['HTTP/1.0 without keep-alive', 'GET PATH HTTP/1.0\r\n\r\n'],
  ['HTTP/1.0 with keep-alive', 'GET PATH HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'],
  ['HEAD', 'HEAD PATH HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['Expect: 100-continue never answered with 100', 'GET PATH HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n'],
  ['an entry without Date', 'GET PATH HTTP/1.1\r\nHost: a\r\n\r\n', { flat: DATED.filter((_, i) => i !== 4 && i !== 5) }],
  ['a 404 entry', 'GET PATH HTTP/1.1\r\nHost: a\r\n\r\n', { status: 404 }],
  ['a 204 entry', 'GET PATH HTTP/1.1\r\nHost: a\r\n\r\n', { status: 204 }],
  [
    'the last request a socket may carry (maxRequestsPerSocket)',
    'GET PATH HTTP/1.1\r\nHost: a\r\n\r\nGET PATH HTTP/1.1\r\nHost: a\r\n\r\nGET PATH HTTP/1.1\r\nHost: a\r\n\r\n',
    {},
    (s) => {
      s.maxRequestsPerSocket = 2;
    },
  ],
  [
    'keep-alive timeout off',
    'GET PATH HTTP/1.1\r\nHost: a\r\n\r\n',
    {},
    (s) => {
      s.keepAliveTimeout = 0;
    },
  ],
];

describe('raw head writer', () => {
  it('is supported on this Node', () => {
    expect(RAW_HEAD_SUPPORTED).toBe(true);
  });

  it.each(cases)('writes the same bytes as writeHead: %s', async (_name, template, served, configure) => {
    const port = await startServer({ status: 200, flat: DATED, body: BODY, ...served }, configure);
    const { raw, std } = await bothWays(port, template);
    expect(raw.length).toBeGreaterThan(0);
    expect(raw).toBe(std);
  });

  it('steps aside when a header was already set through the public API', async () => {
    const block = makeHeadBlock(DATED)!;
    const server = createServer((_req, res) => {
      res.setHeader('connection', 'close'); // what the gateway does while draining
      const used = setRawHead(res, 200, block, '');
      if (!used) res.writeHead(200, DATED as unknown as Record<string, string>);
      res.end(BODY);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const out = await exchange((server.address() as AddressInfo).port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(out).toMatch(/^connection: close\r$/m);
    expect(out).not.toMatch(/keep-alive/i);
  });

  it('writes fields set beforehand (HSTS over HTTPS) first, byte for byte as writeHead does', async () => {
    const block = makeHeadBlock(DATED)!;
    const server = createServer((req, res) => {
      res.setHeader('Strict-Transport-Security', 'max-age=600; includeSubDomains');
      if (req.url === '/raw') expect(setRawHead(res, 200, block, linesOf(PER_REQUEST))).toBe(true);
      else res.writeHead(200, [...DATED, ...PER_REQUEST] as unknown as Record<string, string>);
      res.end(BODY);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { raw, std } = await bothWays((server.address() as AddressInfo).port, 'GET PATH HTTP/1.1\r\nHost: a\r\n\r\nGET PATH HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(raw).toMatch(/^HTTP\/1\.1 200 OK\r\nStrict-Transport-Security: max-age=600; includeSubDomains\r\n/);
    expect(raw).toBe(std);
  });

  it('leaves a field set beforehand to writeHead when the entry sends it too, or it is special', () => {
    const withHsts = makeHeadBlock([...DATED, 'strict-transport-security', 'max-age=1'])!;
    const plain = makeHeadBlock(DATED)!;
    const res = (name: string, value: string | string[]) => {
      const r = new ServerResponse(new IncomingMessage(new Socket()));
      r.setHeader(name, value);
      return r;
    };
    expect(setRawHead(res('strict-transport-security', 'max-age=600'), 200, withHsts, '')).toBe(false);
    expect(setRawHead(res('date', 'Mon, 30 Nov 2026 12:00:00 GMT'), 200, plain, '')).toBe(false);
    expect(setRawHead(res('x-request-id', 'a'), 200, plain, '')).toBe(false);
    expect(setRawHead(res('x-multi', ['a', 'b']), 200, plain, '')).toBe(false);
    expect(setRawHead(res('x-plain', 'yes'), 200, plain, '')).toBe(true);
  });

  it.each([
    ['a value with CR LF', ['x-a', 'one\r\nx-injected: two']],
    ['a value with NUL', ['x-a', 'a\u0000b']],
    ['a non-ASCII value', ['x-a', 'caf\u00e9']],
    ['a name that is not a token', ['x a', 'v']],
    ['a Connection header', ['connection', 'close']],
    ['a Transfer-Encoding header', ['transfer-encoding', 'chunked']],
    ['a Keep-Alive header', ['keep-alive', 'timeout=1']],
    ['a Content-Length given as text', ['content-length', '12']],
    ['an empty multi-value', ['set-cookie', []]],
  ] as Array<[string, Flat]>)('leaves entries with %s to writeHead', (_name, flat) => {
    expect(makeHeadBlock(flat)).toBeUndefined();
  });

  it('renders repeated values as separate lines and notes Date and Content-Length', () => {
    const block = makeHeadBlock(DATED)!;
    expect(block.hasDate).toBe(true);
    expect(block.contentLength).toBe(BODY.length);
    expect(block.lines).toContain('set-cookie: a=1; Path=/\r\nset-cookie: b=2; Path=/\r\n');
  });
});
