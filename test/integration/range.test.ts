/**
 * Range requests through a real gateway and a real origin (src/server/range.ts): every answer's
 * bytes are compared with the origin's body, multipart answers are parsed part by part, and
 * what the origin saw (how many requests, with or without Range) is asserted.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { ManualClock } from '../../src/clock.js';
import { siteFor } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import type { TestOrigin } from '../helpers/test-origin.js';

const { origin, gateway } = useFixtures();

const BODY = randomBytes(100_000);
const LENGTH = BODY.length;
const ETAG = '"v1"';
const LAST_MODIFIED = 'Tue, 01 Dec 2026 10:00:00 GMT';
const FILE_HEADERS = {
  'cache-control': 'public, max-age=60',
  'content-type': 'application/octet-stream',
  etag: ETAG,
  'last-modified': LAST_MODIFIED,
};

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<Answer> {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body };
}

/** Parses a multipart/byteranges body (RFC 9110 §14.6) into its parts, strictly. */
function parseMultipart(answer: Answer): Array<{ headers: Record<string, string>; body: Buffer }> {
  const m = /^multipart\/byteranges; boundary=([A-Za-z0-9'()+_,\-./:=?]+)$/.exec(answer.headers['content-type'] ?? '');
  expect(m, `content-type ${answer.headers['content-type']}`).not.toBeNull();
  const text = answer.body.toString('latin1');
  const delimiter = `--${m![1]}`;
  expect(text.endsWith(`\r\n${delimiter}--\r\n`)).toBe(true);
  const pieces = text.slice(0, -`\r\n${delimiter}--\r\n`.length).split(`\r\n${delimiter}\r\n`);
  expect(pieces[0]!.startsWith(`${delimiter}\r\n`)).toBe(true);
  pieces[0] = pieces[0]!.slice(delimiter.length + 2);
  return pieces.map((piece) => {
    const split = piece.indexOf('\r\n\r\n');
    const headers: Record<string, string> = {};
    for (const line of piece.slice(0, split).split('\r\n')) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    return { headers, body: Buffer.from(piece.slice(split + 4), 'latin1') };
  });
}

function expectSingle(answer: Answer, start: number, end: number): void {
  expect(answer.status).toBe(206);
  expect(answer.headers['content-range']).toBe(`bytes ${start}-${end}/${LENGTH}`);
  expect(answer.headers['content-length']).toBe(String(end - start + 1));
  expect(answer.headers['content-type']).toBe('application/octet-stream');
  expect(answer.headers['etag']).toBe(ETAG);
  expect(answer.body.equals(BODY.subarray(start, end + 1))).toBe(true);
}

function expectFull(answer: Answer): void {
  expect(answer.status).toBe(200);
  expect(answer.headers['content-range']).toBeUndefined();
  expect(answer.headers['content-length']).toBe(String(LENGTH));
  expect(answer.headers['accept-ranges']).toBe('bytes');
  expect(answer.body.equals(BODY)).toBe(true);
}

/** An origin serving BODY at /file; it honours Range itself (as a real file server does) when asked. */
async function fileOrigin(script: { delayMs?: number; headers?: Record<string, string> } = {}): Promise<TestOrigin> {
  const o = await origin();
  o.route('/file', (req, res) => {
    const send = () => {
      const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      const headers = { ...FILE_HEADERS, ...script.headers };
      if (range) {
        const [start, end] = [Number(range[1]), Math.min(Number(range[2]), LENGTH - 1)];
        res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${LENGTH}`, 'content-length': end - start + 1 });
        res.end(BODY.subarray(start, end + 1));
      } else {
        res.writeHead(200, { ...headers, 'content-length': LENGTH });
        res.end(BODY);
      }
    };
    if (script.delayMs) setTimeout(send, script.delayMs);
    else send();
  });
  return o;
}

const withRange = (o: TestOrigin) => o.requests.filter((r) => r.headers.range !== undefined).length;

describe('Range from the cache', () => {
  it('a range miss fills the whole object once, then single, open and suffix ranges are cut from it', async () => {
    const o = await fileOrigin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    const miss = await get(`${g.url}/file`, { range: 'bytes=0-99' });
    expectSingle(miss, 0, 99);
    expect(miss.headers['cache-status']).toMatch(/fwd=uri-miss; fwd-status=200; stored/);
    expect(o.count('/file')).toBe(1);
    expect(withRange(o)).toBe(0); // the fill asked for the whole object
    expect(o.requests[0]!.headers['if-range']).toBeUndefined();

    const cases: Array<[string, number, number]> = [
      ['bytes=1000-', 1000, LENGTH - 1],
      ['bytes=-500', LENGTH - 500, LENGTH - 1],
      ['bytes=99990-200000', 99_990, LENGTH - 1], // last-pos past the end is clamped
      ['bytes=-1000000', 0, LENGTH - 1], // suffix longer than the body: all of it
      ['bytes= 7 - 7 ', 7, 7],
      ['bytes=0-0', 0, 0],
    ];
    for (const [range, start, end] of cases) {
      const hit = await get(`${g.url}/file`, { range });
      expectSingle(hit, start, end);
      expect(hit.headers['cache-status']).toMatch(/^crowdgate; hit; ttl=\d+; detail="hit rid=[^"]+"$/);
      expect(hit.headers['age']).toMatch(/^\d+$/);
      expect(hit.headers['x-request-id']).toBeTruthy();
      expect(hit.headers['accept-ranges']).toBe('bytes');
    }
    expect(o.count('/file')).toBe(1);
    // A request without Range gets the stored 200, never a 206.
    expectFull(await get(`${g.url}/file`));
    expectFull(await get(`${g.url}/file`)); // the hit memo's fast path too
    expect(o.count('/file')).toBe(1);
  });

  it('several ranges: 206 multipart/byteranges, each part checked byte for byte; overlaps coalesced', async () => {
    const o = await fileOrigin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/file`);
    const multi = await get(`${g.url}/file`, { range: 'bytes=500-599, 0-9, -10' });
    expect(multi.status).toBe(206);
    expect(multi.headers['content-range']).toBeUndefined();
    expect(Number(multi.headers['content-length'])).toBe(multi.body.length);
    expect(multi.headers['etag']).toBe(ETAG);
    const parts = parseMultipart(multi);
    // No overlap: the parts come in the order asked.
    const expected: Array<[number, number]> = [
      [500, 599],
      [0, 9],
      [LENGTH - 10, LENGTH - 1],
    ];
    expect(parts).toHaveLength(expected.length);
    parts.forEach((part, i) => {
      const [start, end] = expected[i]!;
      expect(part.headers).toEqual({ 'content-type': 'application/octet-stream', 'content-range': `bytes ${start}-${end}/${LENGTH}` });
      expect(part.body.equals(BODY.subarray(start, end + 1))).toBe(true);
    });

    // Overlapping and adjacent ranges are merged (then in ascending order).
    const merged = parseMultipart(await get(`${g.url}/file`, { range: 'bytes=300-310,0-99,50-149,150-160' }));
    expect(merged.map((p) => p.headers['content-range'])).toEqual([`bytes 0-160/${LENGTH}`, `bytes 300-310/${LENGTH}`]);
    expect(merged[0]!.body.equals(BODY.subarray(0, 161))).toBe(true);
    expect(merged[1]!.body.equals(BODY.subarray(300, 311))).toBe(true);
    // Ranges that merge into one are a single-part answer.
    expectSingle(await get(`${g.url}/file`, { range: 'bytes=0-10,5-20,21-30' }), 0, 30);
    // An unsatisfiable spec among satisfiable ones is dropped.
    expectSingle(await get(`${g.url}/file`, { range: 'bytes=200000-,10-19' }), 10, 19);
    // 16 ranges are served, 17 are a request for the whole body.
    const sixteen = Array.from({ length: 16 }, (_, i) => `${i * 1000}-${i * 1000 + 9}`).join(',');
    const many = parseMultipart(await get(`${g.url}/file`, { range: `bytes=${sixteen}` }));
    expect(many).toHaveLength(16);
    many.forEach((p, i) => expect(p.body.equals(BODY.subarray(i * 1000, i * 1000 + 10))).toBe(true));
    expectFull(await get(`${g.url}/file`, { range: `bytes=${sixteen},50000-50001` }));
    // Thousands of tiny overlapping ranges (a known DoS vector): the whole body once.
    expectFull(await get(`${g.url}/file`, { range: `bytes=${'0-0,'.repeat(2000)}0-0` }));
    expect(o.count('/file')).toBe(1);
  });

  it('If-Range: a strong ETag or the exact Last-Modified serves the range, anything else the full body', async () => {
    const o = await fileOrigin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/file`);
    expectSingle(await get(`${g.url}/file`, { range: 'bytes=10-19', 'if-range': ETAG }), 10, 19);
    expectSingle(await get(`${g.url}/file`, { range: 'bytes=10-19', 'if-range': LAST_MODIFIED }), 10, 19);
    expectFull(await get(`${g.url}/file`, { range: 'bytes=10-19', 'if-range': '"v0"' }));
    expectFull(await get(`${g.url}/file`, { range: 'bytes=10-19', 'if-range': 'W/"v1"' }));
    expectFull(await get(`${g.url}/file`, { range: 'bytes=10-19', 'if-range': 'Tue, 01 Dec 2026 09:59:59 GMT' }));
    expectFull(await get(`${g.url}/file`, { range: 'bytes=10-19', 'if-range': 'not a validator' }));
    // A failing If-Range sends the full body even where the range could not be satisfied.
    expectFull(await get(`${g.url}/file`, { range: 'bytes=200000-', 'if-range': '"v0"' }));
    // If-Range never reaches the origin, nor does Range.
    expect(o.count('/file')).toBe(1);
    expect(o.requests.some((r) => r.headers['if-range'] !== undefined || r.headers.range !== undefined)).toBe(false);
  });

  it('416 for unsatisfiable ranges; an invalid Range or another unit is ignored (200 full); HEAD ignores Range', async () => {
    const o = await fileOrigin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/file`);
    for (const range of ['bytes=100000-', 'bytes=-0', 'bytes=100000-100001,200000-']) {
      const answer = await get(`${g.url}/file`, { range });
      expect(answer.status, range).toBe(416);
      expect(answer.headers['content-range']).toBe(`bytes */${LENGTH}`);
      expect(answer.headers['content-length']).toBe('0');
      expect(answer.headers['cache-status']).toMatch(/^crowdgate; hit;/);
      expect(answer.body.length).toBe(0);
    }
    for (const range of ['bytes=20-10', 'items=0-9', 'bytes=ten-', 'bytes=', 'bytes=0-9;x', 'bytes=0-1, bytes=2-3'])
      expectFull(await get(`${g.url}/file`, { range }));
    // A conditional that matches wins over Range (RFC 9110 §13.2.2).
    const notModified = await get(`${g.url}/file`, { range: 'bytes=0-9', 'if-none-match': ETAG });
    expect(notModified.status).toBe(304);
    expect(notModified.body.length).toBe(0);
    // HEAD: range handling is defined for GET only; the full answer's head, no body.
    const head = await get(`${g.url}/file`, { range: 'bytes=0-9' }, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(LENGTH));
    expect(head.headers['accept-ranges']).toBe('bytes');
    expect(head.headers['content-range']).toBeUndefined();
    expect(head.body.length).toBe(0);
    expect(o.count('/file')).toBe(1);
  });

  it('two concurrent range misses collapse into one fill without Range; each gets its own range', async () => {
    const o = await fileOrigin({ delayMs: 150 });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const [a, b, c] = await Promise.all([
      get(`${g.url}/file`, { range: 'bytes=0-9' }),
      get(`${g.url}/file`, { range: 'bytes=-20' }),
      get(`${g.url}/file`, { range: 'bytes=0-0,99-99' }),
    ]);
    expectSingle(a, 0, 9);
    expectSingle(b, LENGTH - 20, LENGTH - 1);
    expect(parseMultipart(c).map((p) => p.body.toString('hex'))).toEqual([BODY.subarray(0, 1).toString('hex'), BODY.subarray(99, 100).toString('hex')]);
    expect(o.count('/file')).toBe(1);
    expect(withRange(o)).toBe(0);
    expect([a, b, c].filter((x) => /collapsed/.test(x.headers['cache-status']!))).toHaveLength(2);
  });

  it('an object over cache.maxObjectBytes passes through with its Range: the origin answers the 206, nothing is stored', async () => {
    const o = await fileOrigin();
    const g = await gateway({ cache: { maxObjectBytes: 10_000 }, sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/file`, { range: 'bytes=10-19' });
    expectSingle(first, 10, 19);
    expect(first.headers['cache-status']).toMatch(/fwd=/);
    // The fill asked for the whole object (and gave up at the limit), then the range went through.
    expect(o.requests.map((r) => r.headers.range ?? '-')).toEqual(['-', 'bytes=10-19']);
    const second = await get(`${g.url}/file`, { range: 'bytes=20-29' }); // hit-for-pass: straight through
    expectSingle(second, 20, 29);
    expect(o.requests.map((r) => r.headers.range ?? '-')).toEqual(['-', 'bytes=10-19', 'bytes=20-29']);
    // The origin's 206s were not stored: a plain request gets the origin's full 200.
    const plain = await get(`${g.url}/file`);
    expect(plain.status).toBe(200);
    expect(plain.body.equals(BODY)).toBe(true);
    expect(o.requests).toHaveLength(4);
    expect(o.requests[3]!.headers.range).toBeUndefined();
  });

  it('a 206 from the origin is never stored: ranges passed through leave nothing for a later request without Range', async () => {
    const o = await origin();
    // A broken origin: 206 with freshness whatever it is asked.
    o.route('/odd', {
      status: 206,
      headers: { 'cache-control': 'public, max-age=600', 'content-range': `bytes 0-4/10`, 'content-type': 'text/plain' },
      body: '01234',
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const first = await get(`${g.url}/odd`, { range: 'bytes=0-4' });
    expect(first.status).toBe(206);
    expect(first.headers['cache-status']).toMatch(/fwd=/);
    const second = await get(`${g.url}/odd`, { range: 'bytes=0-4' });
    expect(second.headers['cache-status']).not.toMatch(/; hit/);
    expect(o.count('/odd')).toBe(2); // not stored: the second went to the origin too
    // An origin that honours Range, on an object it forbids storing: the fill asked for the whole
    // object, found it not storable, and the range went to the origin after it; the next ones go
    // straight there (hit-for-pass). The origin's 206s are not stored either.
    const f = await fileOrigin({ headers: { 'cache-control': 'no-store' } });
    const g2 = await gateway({ sites: [siteFor([f.url])] });
    const leader = await get(`${g2.url}/file`, { range: 'bytes=0-9' });
    expectSingle(leader, 0, 9);
    expect(leader.headers['cache-status']).toMatch(/fwd=miss; fwd-status=206; detail="pass/);
    expectSingle(await get(`${g2.url}/file`, { range: 'bytes=30-39' }), 30, 39);
    const plain = await get(`${g2.url}/file`);
    expect(plain.status).toBe(200);
    expect(plain.body.equals(BODY)).toBe(true);
    expect(f.requests.map((r) => r.headers.range ?? '-')).toEqual(['-', 'bytes=0-9', 'bytes=30-39', '-']);
  });
  it('under pressure, the range request whose fill found the object not storable gets the full answer at hand', async () => {
    const f = await fileOrigin({ headers: { 'cache-control': 'no-store' } });
    const g = await gateway({ sites: [siteFor([f.url])] }, { isOverloaded: () => true });
    const answer = await get(`${g.url}/file`, { range: 'bytes=0-9' });
    expect(answer.status).toBe(200);
    expect(answer.body.equals(BODY)).toBe(true);
    expect(f.requests.map((r) => r.headers.range ?? '-')).toEqual(['-']);
  });

  it('stale answers are cut too: a range within stale-while-revalidate is 206 while one refresh (without Range) runs', async () => {
    const clock = new ManualClock(Date.now());
    const o = await fileOrigin({ headers: { 'cache-control': 'public, max-age=1, stale-while-revalidate=60' } });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    await get(`${g.url}/file`);
    clock.advance(5_000);
    const stale = await get(`${g.url}/file`, { range: 'bytes=-100' });
    expectSingle(stale, LENGTH - 100, LENGTH - 1);
    expect(stale.headers['cache-status']).toMatch(/^crowdgate; hit; ttl=-\d+; detail="updating rid=/);
    expect(Number(stale.headers['age'])).toBeGreaterThanOrEqual(5);
    for (let i = 0; i < 50 && o.count('/file') < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(o.count('/file')).toBe(2);
    expect(withRange(o)).toBe(0);
  });

  it('curl -r as a real client: one range and two ranges, bytes compared with the origin body', async () => {
    const o = await fileOrigin();
    const g = await gateway({ sites: [siteFor([o.url])] });
    const dir = mkdtempSync(join(tmpdir(), 'crowdgate-range-'));
    const curl = async (range: string, out: string) => {
      const { stdout } = await promisify(execFile)('curl', ['-sS', '--http1.1', '--noproxy', '*', '-r', range, '-D', '-', '-o', join(dir, out), `${g.url}/file`], {
        timeout: 10_000,
      });
      const lines = stdout.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      return { status: Number(lines[0]!.split(' ')[1]), headers, body: readFileSync(join(dir, out)) };
    };
    expectSingle(await curl('0-99', 'a'), 0, 99); // a miss: filled, then cut
    expectSingle(await curl('-4096', 'b'), LENGTH - 4096, LENGTH - 1);
    const parts = parseMultipart(await curl('0-9,20000-29999', 'c'));
    expect(parts.map((p) => p.headers['content-range'])).toEqual([`bytes 0-9/${LENGTH}`, `bytes 20000-29999/${LENGTH}`]);
    expect(parts[0]!.body.equals(BODY.subarray(0, 10))).toBe(true);
    expect(parts[1]!.body.equals(BODY.subarray(20000, 30000))).toBe(true);
    expect(o.count('/file')).toBe(1);
  });
  it('a large multipart answer reaches a slow reader whole: parts written with backpressure', async () => {
    const big = randomBytes(6 * 1024 * 1024);
    const o = await origin();
    o.route('/big', { headers: { 'cache-control': 'public, max-age=60', 'content-type': 'video/mp4' }, body: big });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/big`)).body.equals(big)).toBe(true);
    const port = Number(new URL(g.url).port);
    // A raw client that reads nothing for a while: the socket's buffers fill and the writer must wait.
    const raw = await new Promise<Buffer>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`GET /big HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nRange: bytes=0-1999999,3000000-4999999,-1000000\r\nConnection: close\r\n\r\n`);
        socket.pause();
        setTimeout(() => socket.resume(), 300);
      });
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => resolve(Buffer.concat(chunks)));
      socket.on('error', reject);
      socket.setTimeout(10_000, () => reject(new Error('timed out')));
    });
    const split = raw.indexOf('\r\n\r\n');
    const lines = raw.subarray(0, split).toString('latin1').split('\r\n');
    expect(lines[0]).toBe('HTTP/1.1 206 Partial Content');
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) headers[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim();
    const body = raw.subarray(split + 4);
    expect(Number(headers['content-length'])).toBe(body.length);
    const parts = parseMultipart({ status: 206, headers, body });
    const expected: Array<[number, number]> = [
      [0, 1_999_999],
      [3_000_000, 4_999_999],
      [big.length - 1_000_000, big.length - 1],
    ];
    expect(parts).toHaveLength(3);
    parts.forEach((p, i) => {
      const [start, end] = expected[i]!;
      expect(p.headers).toEqual({ 'content-type': 'video/mp4', 'content-range': `bytes ${start}-${end}/${big.length}` });
      expect(p.body.equals(big.subarray(start, end + 1))).toBe(true);
    });
    expect(o.count('/big')).toBe(1);
  });
});
