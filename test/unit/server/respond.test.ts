import { describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterEach } from 'vitest';
import { formatCacheStatus, hitCacheStatusPrefix, sendEntry, type EntryAnswer } from '../../../src/server/respond.js';
import { codingFor } from '../../../src/server/answer.js';
import { chooseCoding } from '../../../src/cache/content-coding.js';
import { makeEntry } from '../../contract/cache-store.contract.js';

describe('Cache-Status (RFC 9211)', () => {
  it.each([
    ['fresh hit', { state: 'hit', ttlSeconds: 42 }, 'crowdgate; hit; ttl=42; detail="hit"'],
    ['miss stored', { state: 'miss', stored: true, fwdStatus: 200 }, 'crowdgate; fwd=uri-miss; fwd-status=200; stored; detail="miss"'],
    ['collapsed waiter', { state: 'miss', stored: true, collapsed: true, fwdStatus: 200 }, 'crowdgate; fwd=uri-miss; fwd-status=200; stored; collapsed; detail="miss"'],
    ['vary miss', { state: 'miss', missKind: 'vary-miss' }, 'crowdgate; fwd=vary-miss; detail="miss"'],
    ['revalidated', { state: 'revalidated', fwdStatus: 304, stored: true }, 'crowdgate; fwd=stale; fwd-status=304; stored; detail="revalidated"'],
    ['updating (SWR) is a hit with negative ttl', { state: 'updating', ttlSeconds: -3, detail: 'updating' }, 'crowdgate; hit; ttl=-3; detail="updating"'],
    ['stale after origin error', { state: 'stale', forwarded: true, ttlSeconds: -9, detail: 'stale-error' }, 'crowdgate; fwd=stale; ttl=-9; detail="stale-error"'],
    ['stale when shed (origin not contacted)', { state: 'stale', ttlSeconds: -1, detail: 'stale-shed' }, 'crowdgate; hit; ttl=-1; detail="stale-shed"'],
    ['bypass', { state: 'bypass', fwdStatus: 200 }, 'crowdgate; fwd=bypass; fwd-status=200; detail="bypass"'],
    ['request id in detail', { state: 'hit', requestId: 'abc-1' }, 'crowdgate; hit; detail="hit rid=abc-1"'],
    // An sf-string is printable ASCII (RFC 8941 §3.3.3): a strict parser rejected the whole field.
    ['a policy reason citing a section', { state: 'pass', detail: 'pass §5.2.2.7 response private' }, 'crowdgate; fwd=miss; detail="pass section 5.2.2.7 response private"'],
    ['other non-ASCII', { state: 'pass', detail: 'pass caf\u00e9\u2014x' }, 'crowdgate; fwd=miss; detail="pass caf??x"'],
  ] as const)('%s', (_n, facts, expected) => {
    expect(formatCacheStatus(facts)).toBe(expected);
  });
});

describe('hitCacheStatusPrefix (the memo hit path)', () => {
  it.each([0, 1, 42, 3599, -1, -7, 86_400 * 365, 2.9, -2.9])('ttl %s: with the id, byte for byte the general formatter', (ttl) => {
    for (const requestId of ['0a1b2c3d-1', '0a1b2c3d-zz9']) {
      expect(`${hitCacheStatusPrefix(ttl)}${requestId}"`).toBe(formatCacheStatus({ state: 'hit', ttlSeconds: ttl, requestId }));
    }
  });
});

/** A fresh hit's answer as the memo path records it: no Cache-Status, sendEntry renders it. */
function hitAnswer(head: boolean, ageSeconds: number, ttlSeconds: number, requestId: string, coding?: EntryAnswer['coding']): EntryAnswer {
  return { head, requestId, cacheStatus: undefined, ageSeconds, ttlSeconds, coding, notModified: false };
}

/** The same answer with the general formatter's Cache-Status, as the slow path records it. */
function generalAnswer(head: boolean, ageSeconds: number, ttlSeconds: number, requestId: string, coding?: EntryAnswer['coding']): EntryAnswer {
  return { ...hitAnswer(head, ageSeconds, ttlSeconds, requestId, coding), cacheStatus: formatCacheStatus({ state: 'hit', ttlSeconds, requestId }) };
}

describe('sendEntry for a fresh hit (no Cache-Status recorded: the memo hit path)', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await new Promise((r) => server?.close(r));
    server = undefined;
  });

  /** Everything read on one connection for `request`, until it goes idle. */
  function exchange(port: number, request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      let idle: NodeJS.Timeout | undefined;
      socket.on('data', (c) => {
        chunks.push(c);
        clearTimeout(idle);
        idle = setTimeout(() => {
          socket.destroy();
          resolve(Buffer.concat(chunks).toString('latin1'));
        }, 100);
      });
      socket.on('error', reject);
      socket.write(request);
    });
  }

  it('puts on the wire what an answer with the general Cache-Status does, as Age and ttl move', async () => {
    const entries = [
      makeEntry({ key: 'k', headers: { 'content-type': 'text/plain', 'cache-control': 'max-age=60', date: 'Mon, 30 Nov 2026 12:00:00 GMT' } }),
      makeEntry({ key: 'k', status: 404, headers: { 'content-type': 'text/plain' } }), // no Date: the writer adds one
      makeEntry({ key: 'k', headers: { 'content-type': 'text/plain', 'x-odd': 'caf\u00e9' } }), // non-ASCII: writeHead's way
    ];
    server = createServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      const entry = entries[Number(u.searchParams.get('e'))]!;
      const [age, ttl, id, head] = [Number(u.searchParams.get('age')), Number(u.searchParams.get('ttl')), 'r-' + u.searchParams.get('age'), req.method === 'HEAD'];
      sendEntry(res, entry, (u.pathname === '/hit' ? hitAnswer : generalAnswer)(head, age, ttl, id));
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const normalise = (s: string) => s.replace(/^Date: .*$/gim, 'Date: <now>');
    for (const e of [0, 1, 2])
      for (const [age, ttl] of [[3, 57], [3, 57], [4, 57], [4, 56], [0, -1]])
        for (const method of ['GET', 'HEAD']) {
          const request = (path: string) => `${method} ${path}?e=${e}&age=${age}&ttl=${ttl} HTTP/1.1\r\nHost: a\r\n\r\n`;
          const hit = await exchange(port, request('/hit'));
          expect(hit).toContain(`cache-status: crowdgate; hit; ttl=${ttl}; detail="hit rid=r-${age}"`);
          expect(normalise(hit)).toBe(normalise(await exchange(port, request('/std'))));
        }
  });

  it('never writes a stored framing or hop-by-hop field: one Content-Length, whatever a record from elsewhere says (attacker trial)', async () => {
    const entry = makeEntry({
      key: 'k',
      body: Buffer.from('hello'),
      headers: { 'content-type': 'text/plain', 'transfer-encoding': 'gzip', connection: 'close', 'keep-alive': 'timeout=1', upgrade: 'h2c' },
    });
    server = createServer((_req, res) => sendEntry(res, entry, hitAnswer(false, 1, 59, 'r-1')));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const wire = await exchange((server.address() as AddressInfo).port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    const head = wire.slice(0, wire.indexOf('\r\n\r\n')).toLowerCase();
    expect(head).not.toMatch(/transfer-encoding|\r\nupgrade:|timeout=1/);
    expect(head).toMatch(/\r\ncontent-length: 5\r\n/);
    expect(head).toMatch(/\r\nconnection: keep-alive/);
    expect(wire.endsWith('\r\n\r\nhello')).toBe(true);
  });

  it('sends the coding Accept-Encoding picks, the same bytes as the general answer in that coding, raw or through writeHead', async () => {
    const identity = Buffer.from('identity body '.repeat(20));
    const encodings = { br: Buffer.from('BR-BYTES'), gzip: Buffer.from('GZIP-BYTES!') };
    const headers = { 'content-type': 'text/html', etag: '"e1"', vary: 'Origin', 'accept-ranges': 'bytes' };
    const entries = [
      makeEntry({ key: 'k', body: identity, encodings, headers }),
      makeEntry({ key: 'k', body: identity, encodings, headers: { ...headers, 'x-odd': 'caf\u00e9' } }), // writeHead's way
    ];
    server = createServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      const entry = entries[Number(u.searchParams.get('e'))]!;
      const ae = req.headers['accept-encoding'];
      const head = req.method === 'HEAD';
      // The memo path's pick (codingFor) against the parser's own, with the general formatter.
      if (u.pathname === '/hit') sendEntry(res, entry, hitAnswer(head, 1, 59, 'r-1', codingFor(entry, req.headers, true)));
      else sendEntry(res, entry, generalAnswer(head, 1, 59, 'r-1', chooseCoding(ae, entry.encodings!)));
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const normalise = (s: string) => s.replace(/^Date: .*$/gim, 'Date: <now>');
    const cases: Array<[string | undefined, string | undefined, Buffer]> = [
      ['br, gzip', 'br', encodings.br],
      ['gzip', 'gzip', encodings.gzip],
      [undefined, undefined, identity],
      ['identity', undefined, identity],
    ];
    for (const e of [0, 1])
      for (const [ae, coding, body] of cases)
        for (const method of ['GET', 'HEAD']) {
          const request = (path: string) => `${method} ${path}?e=${e} HTTP/1.1\r\nHost: a\r\n${ae ? `Accept-Encoding: ${ae}\r\n` : ''}\r\n`;
          const hit = await exchange(port, request('/hit'));
          expect(normalise(hit)).toBe(normalise(await exchange(port, request('/std'))));
          const lower = hit.toLowerCase();
          if (coding) {
            expect(lower).toContain(`content-encoding: ${coding}\r\n`);
            expect(lower).toContain(`etag: "e1-${coding}"\r\n`);
            expect(lower).not.toContain('accept-ranges');
          } else {
            expect(lower).not.toContain('content-encoding');
            expect(lower).toContain('etag: "e1"\r\n');
          }
          expect(lower).toContain('vary: origin, accept-encoding\r\n');
          expect(lower).toContain(`content-length: ${body.length}\r\n`);
          if (method === 'GET') expect(hit.endsWith(`\r\n\r\n${body.toString('latin1')}`)).toBe(true);
        }
  });
});
