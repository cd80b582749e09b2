import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HitMemo, isPlainRequest, MAX_MEMO_TARGET, PLAIN_FIELDS, type MemoRoute } from '../../../src/server/hit-memo.js';

// Requests go through Node's own parser (a real server on 127.0.0.1), as the gateway sees them.
let server: Server;
let verdict: boolean | undefined;
beforeAll(async () => {
  server = createServer((req, res) => {
    verdict = isPlainRequest(req);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Sends one request with these header lines; what isPlainRequest said of it. */
async function plain(method: string, url: string, raw: Array<[string, string]>): Promise<boolean> {
  verdict = undefined;
  const { port } = server.address() as AddressInfo;
  const socket = connect(port, '127.0.0.1');
  // Connection: close unless the lines name a Connection (a field sent twice is not plain).
  const close = raw.some(([n]) => n.toLowerCase() === 'connection') ? '' : 'Connection: close\r\n';
  const lines = raw.map(([n, v]) => `${n}: ${v}\r\n`).join('');
  socket.end(`${method} ${url} HTTP/1.1\r\n${lines}${close}\r\n`);
  await new Promise<void>((resolve) => {
    socket.on('data', () => undefined);
    socket.on('close', () => resolve());
  });
  if (verdict === undefined) throw new Error('the request never reached the handler');
  return verdict;
}

const BROWSER: Array<[string, string]> = [
  ['Host', 'shop.example'],
  ['User-Agent', 'Mozilla/5.0'],
  ['Accept', 'text/html'],
  ['Accept-Encoding', 'gzip, br'],
  ['Accept-Language', 'en-GB'],
  ['Connection', 'keep-alive'],
  ['Referer', 'https://news.example/'],
  ['Sec-Fetch-Mode', 'navigate'],
  ['Upgrade-Insecure-Requests', '1'],
];

describe('isPlainRequest', () => {
  it('a browser navigation without cookies is plain, GET or HEAD', async () => {
    expect(await plain('GET', '/a?b=1', BROWSER)).toBe(true);
    expect(await plain('HEAD', '/', BROWSER)).toBe(true);
  });

  it.each(['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])('%s is never plain', async (method) => {
    expect(await plain(method, '/', [['Host', 'a']])).toBe(false);
  });

  it('an absolute-form or asterisk target is not plain (the slow path parses it)', async () => {
    expect(await plain('GET', 'http://a/x', [['Host', 'a']])).toBe(false);
    expect(await plain('OPTIONS', '*', [['Host', 'a']])).toBe(false);
  });

  // Every field a decision before the lookup reads (or that varies the answer) sends the request the slow way.
  it.each([
    ['Authorization', 'Bearer x'],
    ['Cache-Control', 'no-cache'],
    ['Pragma', 'no-cache'],
    ['If-None-Match', '"a"'],
    ['If-Modified-Since', 'Mon, 01 Jan 2024 00:00:00 GMT'],
    ['Range', 'bytes=0-1'],
    ['Expect', '100-continue'],
    ['X-Request-Id', 'abc'],
    ['X-Forwarded-For', '10.0.0.1'],
    ['Forwarded', 'for=10.0.0.1'],
    ['Content-Length', '0'],
    ['X-Priority', 'high'],
    ['Upgrade', 'h2c'],
  ])('%s makes it not plain', async (name, value) => {
    expect(await plain('GET', '/', [...BROWSER, [name, value]])).toBe(false);
  });

  it('two Host lines make it not plain: they are the slow path\'s 400 (attacker trial)', async () => {
    expect(await plain('GET', '/', [...BROWSER, ['Host', 'evil.test']])).toBe(false);
    expect(await plain('GET', '/', [...BROWSER, ['HOST', 'evil.test']])).toBe(false);
    // Another field sent twice is merged alike for both paths (and an HTTP/2 request, whose
    // Host is no raw line, stays plain: review).
    expect(await plain('GET', '/', [...BROWSER, ['Accept', 'text/html']])).toBe(true);
  });

  it('an EventSource\'s Accept makes it not plain: the slow path bypasses the cache for it', async () => {
    const others = BROWSER.filter(([n]) => n !== 'Accept');
    expect(await plain('GET', '/live', [...others, ['Accept', 'text/event-stream']])).toBe(false);
    expect(await plain('GET', '/live', [...others, ['Accept', 'Text/Event-Stream, */*']])).toBe(false);
  });

  it('a Cookie keeps it plain: the fast path checks the bypass cookies itself', async () => {
    expect(await plain('GET', '/', [...BROWSER, ['Cookie', '_ga=GA1.1.1; _gid=GA1.1.2']])).toBe(true);
  });

  it('the allowed fields exclude everything the request path reads before the lookup', () => {
    for (const read of ['authorization', 'cache-control', 'pragma', 'content-length', 'transfer-encoding', 'x-request-id', 'x-forwarded-for']) {
      expect(PLAIN_FIELDS.has(read)).toBe(false);
    }
  });
});

describe('HitMemo', () => {
  const route = (key: string) => ({ key }) as unknown as MemoRoute;

  it('keys by method, Host and target', () => {
    const memo = new HitMemo(10);
    memo.set('GET', 'a', '/x', route('get-a-x'));
    memo.set('HEAD', 'a', '/x', route('head-a-x'));
    memo.set('GET', 'b', '/x', route('get-b-x'));
    expect(memo.get('GET', 'a', '/x')?.key).toBe('get-a-x');
    expect(memo.get('HEAD', 'a', '/x')?.key).toBe('head-a-x');
    expect(memo.get('GET', 'b', '/x')?.key).toBe('get-b-x');
    expect(memo.get('GET', 'a', '/y')).toBeUndefined();
    expect(memo.get('GET', 'c', '/x')).toBeUndefined();
    expect(memo.size).toBe(3);
  });

  it('accepts only a request with a Host, and Host plus target within the length bound', () => {
    const memo = new HitMemo(10);
    expect(memo.accepts('a', '/x')).toBe(true);
    expect(memo.accepts(undefined, '/x')).toBe(false);
    expect(memo.accepts('a', '/' + 'x'.repeat(MAX_MEMO_TARGET))).toBe(false);
  });

  it('starts over when full, so a flood of targets cannot grow it', () => {
    const memo = new HitMemo(3);
    for (let i = 0; i < 3; i++) memo.set('GET', 'h', `/k${i}`, route(`r${i}`));
    expect(memo.size).toBe(3);
    memo.set('GET', 'h', '/k1', route('again')); // replacing an entry does not clear
    expect(memo.size).toBe(3);
    expect(memo.get('GET', 'h', '/k1')?.key).toBe('again');
    memo.set('GET', 'h', '/k3', route('r3'));
    expect(memo.size).toBe(1);
    expect(memo.get('GET', 'h', '/k3')?.key).toBe('r3');
    expect(memo.get('GET', 'h', '/k0')).toBeUndefined();
    memo.set('GET', 'other', '/k3', route('r3-other')); // a second Host under a known target
    expect(memo.size).toBe(2);
    memo.clear();
    expect(memo.size).toBe(0);
    expect(memo.get('GET', 'h', '/k3')).toBeUndefined();
  });
});
