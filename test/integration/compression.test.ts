/**
 * Compression stored once (content-coding.ts, fill.ts addEncodings, respond.ts): a real origin,
 * a real gateway, real clients (undici, node:http, curl --compressed). Bodies are decompressed
 * with zlib and compared byte for byte with what the origin sent.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { brotliDecompressSync, createBrotliDecompress, gunzipSync, gzipSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { stringify } from 'yaml';
import { ManualClock } from '../../src/clock.js';
import { siteFor, withTestDefaults } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';

const { origin, gateway } = useFixtures();
const run = promisify(execFile);

/** A deterministic, page-like text body (~15 KB): compresses well, but not trivially. */
function pageText(words = 2500): Buffer {
  const vocabulary = ['crowd', 'garage', 'cache', 'origin', 'brotli', 'gzip', 'page', 'wiki', 'edit', 'flash', 'server', 'uplink', 'visitor', 'reload'];
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  const parts: string[] = ['<!doctype html><html><head><title>t</title></head><body>'];
  for (let i = 0; i < words; i++) {
    parts.push(vocabulary[next() % vocabulary.length]!);
    if (i % 12 === 11) parts.push(`</p>\n<p id="p${next() % 100000}">`);
  }
  parts.push('</body></html>');
  return Buffer.from(parts.join(' '));
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const res = await request(url, { headers, method });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

/** node:http, a second client implementation: raw bytes, no decoding. */
function nodeGet(url: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

function decode(answer: Answer): Buffer {
  const ce = answer.headers['content-encoding'];
  if (ce === 'br') return brotliDecompressSync(answer.body);
  if (ce === 'gzip') return gunzipSync(answer.body);
  expect(ce).toBeUndefined();
  return answer.body;
}

/** The Vary field names, lower-cased, in order. */
function varyNames(answer: Answer): string[] {
  const v = answer.headers['vary'];
  const text = Array.isArray(v) ? v.join(',') : (v ?? '');
  return text
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
}

const PAGE = pageText();
const LAST_MODIFIED = 'Tue, 01 Dec 2026 10:00:00 GMT';

describe('compression stored once', () => {
  for (const hitMemo of [true, false]) {
    it(`stores br and gzip once and serves each client its best coding, byte-exact (hit memo ${hitMemo ? 'on' : 'off'})`, async () => {
      const o = await origin();
      o.route('/page', {
        headers: { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'max-age=60', etag: '"v1"', 'last-modified': LAST_MODIFIED, vary: 'Accept-Language' },
        body: PAGE,
      });
      const g = await gateway({ sites: [siteFor([o.url])] }, { hitMemo });
      const first = await get(`${g.url}/page`, { 'accept-encoding': 'gzip, deflate, br' });
      expect(first.headers['cache-status']).toMatch(/fwd=uri-miss/);
      const answers = {
        br: await get(`${g.url}/page`, { 'accept-encoding': 'gzip, deflate, br' }),
        gzip: await get(`${g.url}/page`, { 'accept-encoding': 'gzip' }),
        identity: await get(`${g.url}/page`),
        identityExplicit: await get(`${g.url}/page`, { 'accept-encoding': 'identity' }),
        node: await nodeGet(`${g.url}/page`, { 'accept-encoding': 'br;q=0.5, gzip' }),
      };
      expect(o.count('/page')).toBe(1); // compressed once, at fill time: every hit is from the store
      expect(first.headers['content-encoding']).toBe('br'); // the fill's own answer is compressed too
      expect(first.body.equals(answers.br.body)).toBe(true);
      expect(answers.br.headers['content-encoding']).toBe('br');
      expect(answers.gzip.headers['content-encoding']).toBe('gzip');
      expect(answers.identity.headers['content-encoding']).toBeUndefined();
      expect(answers.identityExplicit.headers['content-encoding']).toBeUndefined();
      expect(answers.node.headers['content-encoding']).toBe('gzip'); // gzip q=1 beats br q=0.5
      for (const [name, a] of Object.entries(answers)) {
        expect(a.status, name).toBe(200);
        expect(decode(a).equals(PAGE), name).toBe(true);
        expect(Number(a.headers['content-length']), name).toBe(a.body.length);
        // The origin's Vary kept, Accept-Encoding added once, on every coding (identity too).
        expect(varyNames(a), name).toEqual(['accept-language', 'accept-encoding']);
        expect(a.headers['last-modified'], name).toBe(LAST_MODIFIED);
      }
      expect(answers.br.body.length).toBeLessThan(PAGE.length / 3);
      expect(answers.gzip.body.length).toBeLessThan(PAGE.length / 2);
      expect(answers.br.headers['etag']).toBe('"v1-br"');
      expect(answers.gzip.headers['etag']).toBe('"v1-gzip"');
      expect(answers.identity.headers['etag']).toBe('"v1"');

      // HEAD carries the selected encoding's headers, and no body.
      const head = await get(`${g.url}/page`, { 'accept-encoding': 'br' }, 'HEAD');
      expect(head.headers['content-encoding']).toBe('br');
      expect(Number(head.headers['content-length'])).toBe(answers.br.body.length);
      expect(head.headers['etag']).toBe('"v1-br"');
      expect(head.body.length).toBe(0);

      const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
      expect(metrics).toMatch(/crowdgate_compression_encodings_stored_total\{coding="br"\} 1\b/);
      expect(metrics).toMatch(/crowdgate_compression_encodings_stored_total\{coding="gzip"\} 1\b/);
      const saved = Number(/crowdgate_compression_saved_bytes_total\{coding="br"\} (\d+)/.exec(metrics)?.[1]);
      expect(saved).toBe(PAGE.length - answers.br.body.length);
    });
  }

  it('negotiates with q-values: q=0 refuses, * accepts, ties prefer br > gzip > identity', async () => {
    const o = await origin();
    o.route('/p', { headers: { 'content-type': 'application/json', 'cache-control': 'max-age=60' }, body: PAGE });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const cases: Array<[string, string | undefined]> = [
      ['br;q=0, gzip', 'gzip'],
      ['gzip;q=0.8, br;q=0.9', 'br'],
      ['gzip;q=1, br;q=0.999', 'gzip'],
      ['*', 'br'],
      ['*;q=0.5, br;q=0', 'gzip'],
      ['identity;q=0, gzip;q=0.1', 'gzip'],
      ['identity, gzip;q=0.5', undefined],
      ['deflate', undefined],
      ['BR', 'br'],
      ['x-gzip', 'gzip'],
      ['', undefined],
      ['br;q=2', undefined], // malformed q: the member is ignored
    ];
    for (const [ae, want] of cases) {
      const a = await get(`${g.url}/p`, { 'accept-encoding': ae });
      expect(a.headers['content-encoding'], ae).toBe(want);
      expect(decode(a).equals(PAGE), ae).toBe(true);
    }
    expect(o.count('/p')).toBe(1);
  });

  it('answers If-None-Match per encoding with 304, and revalidates with the origin ETag, keeping the encodings', async () => {
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    const o = await origin();
    let version = 1;
    o.route('/doc', (req, res) => {
      const headers = {
        'content-type': 'text/css',
        'cache-control': 'max-age=10',
        etag: `"d${version}"`,
        date: new Date(clock.now()).toUTCString(),
      };
      if (req.headers['if-none-match'] === `"d${version}"`) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      res.writeHead(200, headers);
      res.end(PAGE);
    });
    const g = await gateway({ sites: [siteFor([o.url])] }, { clock });
    const br = await get(`${g.url}/doc`, { 'accept-encoding': 'br' });
    expect(br.headers['etag']).toBe('"d1-br"');

    const notModified = await get(`${g.url}/doc`, { 'accept-encoding': 'br', 'if-none-match': '"d1-br"' });
    expect(notModified.status).toBe(304);
    expect(notModified.headers['etag']).toBe('"d1-br"');
    expect(varyNames(notModified)).toEqual(['accept-encoding']);
    expect(notModified.headers['content-encoding']).toBeUndefined();
    // The gzip variant's tag does not validate the br answer, and vice versa.
    const otherTag = await get(`${g.url}/doc`, { 'accept-encoding': 'br', 'if-none-match': '"d1-gzip"' });
    expect(otherTag.status).toBe(200);
    expect(otherTag.headers['content-encoding']).toBe('br');
    const gz304 = await get(`${g.url}/doc`, { 'accept-encoding': 'gzip', 'if-none-match': 'W/"x", "d1-gzip"' });
    expect(gz304.status).toBe(304);
    expect(gz304.headers['etag']).toBe('"d1-gzip"');
    // The origin's own tag names the same content: 304, with the encoding's tag.
    const originTag = await get(`${g.url}/doc`, { 'accept-encoding': 'br', 'if-none-match': '"d1"' });
    expect(originTag.status).toBe(304);
    expect(originTag.headers['etag']).toBe('"d1-br"');
    // An identity answer is not validated by an encoding's tag.
    const identity = await get(`${g.url}/doc`, { 'if-none-match': '"d1-br"' });
    expect(identity.status).toBe(200);
    expect(identity.body.equals(PAGE)).toBe(true);
    expect(o.count('/doc')).toBe(1);

    // Stale (past the hot-page window): the gateway revalidates with the origin's ETag, the
    // only one the origin knows, while the client waits.
    clock.advance(30_000);
    const revalidated = await get(`${g.url}/doc`, { 'accept-encoding': 'gzip, br' });
    expect(o.count('/doc')).toBe(2);
    expect(o.requests.at(-1)!.headers['if-none-match']).toBe('"d1"');
    expect(revalidated.headers['cache-status']).toMatch(/fwd-status=304/);
    expect(revalidated.headers['content-encoding']).toBe('br');
    expect(revalidated.headers['etag']).toBe('"d1-br"');
    expect(brotliDecompressSync(revalidated.body).equals(PAGE)).toBe(true);
    const after = await get(`${g.url}/doc`, { 'accept-encoding': 'gzip' });
    expect(gunzipSync(after.body).equals(PAGE)).toBe(true);
    expect(o.count('/doc')).toBe(2);
  });

  it('never repeats Accept-Encoding in Vary when the origin already varies on it', async () => {
    const o = await origin();
    o.route('/v', { headers: { 'content-type': 'text/html', 'cache-control': 'max-age=60', vary: 'accept-encoding, Origin' }, body: PAGE });
    const g = await gateway({ sites: [siteFor([o.url])] });
    for (const ae of ['br', 'gzip', 'identity']) {
      const a = await get(`${g.url}/v`, { 'accept-encoding': ae });
      expect(varyNames(a), ae).toEqual(['accept-encoding', 'origin']);
      expect(decode(a).equals(PAGE), ae).toBe(true);
    }
  });

  it('leaves identity-only fields off encoded answers, and sends identity to a request that says no-transform', async () => {
    const o = await origin();
    const digest = 'sha-256=:' + Buffer.alloc(32, 1).toString('base64') + ':';
    o.route('/d', {
      headers: { 'content-type': 'text/html', 'cache-control': 'max-age=60', 'accept-ranges': 'bytes', 'content-digest': digest, 'repr-digest': digest },
      body: PAGE,
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const br = await get(`${g.url}/d`, { 'accept-encoding': 'br' });
    expect(br.headers['content-encoding']).toBe('br');
    for (const name of ['accept-ranges', 'content-digest', 'repr-digest']) expect(br.headers[name], name).toBeUndefined();
    const identity = await get(`${g.url}/d`);
    expect(identity.headers['accept-ranges']).toBe('bytes');
    expect(identity.headers['content-digest']).toBe(digest);
    const noTransform = await get(`${g.url}/d`, { 'accept-encoding': 'br', 'cache-control': 'no-transform' });
    expect(noTransform.headers['content-encoding']).toBeUndefined();
    expect(noTransform.body.equals(PAGE)).toBe(true);
    expect(o.count('/d')).toBe(1);
  });

  it('keeps weak ETags weak', async () => {
    const o = await origin();
    o.route('/w', { headers: { 'content-type': 'text/plain', 'cache-control': 'max-age=60', etag: 'W/"w7"' }, body: PAGE });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/w`, { 'accept-encoding': 'br' })).headers['etag']).toBe('W/"w7-br"');
    expect((await get(`${g.url}/w`, { 'accept-encoding': 'gzip' })).headers['etag']).toBe('W/"w7-gzip"');
    expect((await get(`${g.url}/w`, { 'accept-encoding': 'gzip', 'if-none-match': 'W/"w7-gzip"' })).status).toBe(304);
  });

  it('stores identity only: origin-compressed, no-transform, tiny, image, and a body compression does not shrink', async () => {
    const o = await origin();
    const gzipped = gzipSync(PAGE);
    o.route('/gz', { headers: { 'content-type': 'text/html', 'content-encoding': 'gzip', 'cache-control': 'max-age=60' }, body: gzipped });
    o.route('/nt', { headers: { 'content-type': 'text/html', 'cache-control': 'max-age=60, no-transform' }, body: PAGE });
    o.route('/tiny', { headers: { 'content-type': 'text/html', 'cache-control': 'max-age=60' }, body: 'x'.repeat(900) });
    o.route('/img', { headers: { 'content-type': 'image/png', 'cache-control': 'max-age=60' }, body: PAGE });
    const noise = randomBytes(20_000);
    o.route('/noise', { headers: { 'content-type': 'application/json', 'cache-control': 'max-age=60' }, body: noise });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const expected: Record<string, Buffer> = { '/gz': gzipped, '/nt': PAGE, '/tiny': Buffer.from('x'.repeat(900)), '/img': PAGE, '/noise': noise };
    for (const [path, body] of Object.entries(expected)) {
      for (let i = 0; i < 2; i++) {
        const a = await get(`${g.url}${path}`, { 'accept-encoding': 'br, gzip' });
        expect(a.body.equals(body), path).toBe(true); // exactly the origin's bytes, never recompressed
        expect(a.headers['content-encoding'], path).toBe(path === '/gz' ? 'gzip' : undefined);
        // An origin-encoded answer without Vary is stored as that coding's variant; JSON to a
        // request without Accept, as that Accept's (a negotiating origin's first format).
        expect(varyNames(a), path).toEqual(path === '/gz' ? ['accept-encoding'] : path === '/noise' ? ['accept'] : []);
      }
      expect(o.count(path), path).toBe(1);
    }
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).not.toMatch(/crowdgate_compression_encodings_stored_total\{/);
    for (const reason of ['encoded', 'no_transform', 'small', 'no_savings'])
      expect(metrics).toMatch(new RegExp(`crowdgate_compression_skipped_total\\{reason="${reason}"\\} 1\\b`));
  });

  it('compresses large bodies at fill time within fillBytesPerSecond: past it they are stored identity only, small pages never held back', async () => {
    // An attacker's one large script under ever new query strings: each a new fill, each ~100 ms
    // of compression for a 3 ms origin answer (attacker trial: 1.8 CPUs for 42 requests a second).
    const o = await origin();
    const big = pageText(40_000); // ~320 KB
    o.route('/app.js', { headers: { 'content-type': 'application/javascript', 'cache-control': 'max-age=600' }, body: big });
    o.route('/page', { headers: { 'content-type': 'text/html', 'cache-control': 'max-age=600' }, body: PAGE.subarray(0, 15_000) });
    const clock = new ManualClock(Math.floor(Date.now() / 1000) * 1000);
    // 100 kB/s: a burst of 800 kB, one client's share half of it: one of them, and the second
    // waits for its share to refill. (Clients told apart by X-Forwarded-For from the trusted loopback.)
    const g = await gateway({ compression: { fillBytesPerSecond: 100_000 }, sites: [siteFor([o.url])] }, { clock });
    const attacker = { 'accept-encoding': 'br, gzip', 'x-forwarded-for': '203.0.113.9' };
    const codings: (string | undefined)[] = [];
    for (let v = 0; v < 4; v++) {
      const a = await get(`${g.url}/app.js?v=${v}`, attacker);
      expect(decode(a).equals(big)).toBe(true);
      codings.push(a.headers['content-encoding'] as string | undefined);
      // A crowd's page (16 KiB or less) is compressed whatever the budget says.
      const p = await get(`${g.url}/page?v=${v}`, attacker);
      expect(p.headers['content-encoding']).toBe('br');
    }
    expect(codings).toEqual(['br', undefined, undefined, undefined]);
    // Stored identity only: its hits stay identity for the entry's life.
    expect((await get(`${g.url}/app.js?v=2`, { 'accept-encoding': 'br, gzip' })).headers['content-encoding']).toBeUndefined();
    expect(o.count('/app.js')).toBe(4);
    // The other half is everyone else's: a visitor's new script is compressed meanwhile, and
    // the next, past what is left, is not.
    const visitor = (n: number) => ({ 'accept-encoding': 'br, gzip', 'x-forwarded-for': `198.51.100.${n}` });
    expect((await get(`${g.url}/app.js?v=visitor`, visitor(1))).headers['content-encoding']).toBe('br');
    expect((await get(`${g.url}/app.js?v=visitor2`, visitor(2))).headers['content-encoding']).toBeUndefined();
    // The bucket refills at the configured rate.
    clock.advance(8_000);
    expect((await get(`${g.url}/app.js?v=9`, attacker)).headers['content-encoding']).toBe('br');
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_compression_skipped_total\{reason="budget"\} 4\b/);
  });

  it('never serves an origin\'s gzip to a client that did not ask for it, when the origin forgot Vary (nginx gzip without gzip_vary)', async () => {
    const o = await origin();
    const gzipped = gzipSync(PAGE);
    o.route('/neg', (req, res) => {
      const gz = /gzip/.test(String(req.headers['accept-encoding'] ?? ''));
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'max-age=60', ...(gz ? { 'content-encoding': 'gzip' } : {}) });
      res.end(gz ? gzipped : PAGE);
    });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const browser = await get(`${g.url}/neg`, { 'accept-encoding': 'gzip, deflate, br' });
    expect(browser.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(browser.body).equals(PAGE)).toBe(true);
    for (const ae of [undefined, 'identity']) {
      const plain = await get(`${g.url}/neg`, ae === undefined ? {} : { 'accept-encoding': ae });
      expect(plain.headers['content-encoding'], String(ae)).toBeUndefined();
      expect(plain.body.equals(PAGE), String(ae)).toBe(true);
    }
    expect((await get(`${g.url}/neg`, { 'accept-encoding': 'gzip, deflate, br' })).headers['cache-status']).toMatch(/; hit/);
    expect(o.count('/neg')).toBe(2); // the gzip variant and the identity one
  });

  it('answers a Range request from the identity body, never an encoding', async () => {
    const o = await origin();
    o.route('/r', { headers: { 'content-type': 'text/plain', 'cache-control': 'max-age=60' }, body: PAGE });
    const g = await gateway({ sites: [siteFor([o.url])] });
    await get(`${g.url}/r`, { 'accept-encoding': 'br' });
    const ranged = await get(`${g.url}/r`, { 'accept-encoding': 'br, gzip', range: 'bytes=0-99' });
    expect(ranged.headers['content-encoding']).toBeUndefined();
    // A whole identity body (200) or its first 100 bytes (206), whichever the range support gives.
    expect(ranged.body.equals(ranged.status === 206 ? PAGE.subarray(0, 100) : PAGE)).toBe(true);
  });

  it('is byte-exact through curl --compressed', async () => {
    const o = await origin();
    o.route('/c', { headers: { 'content-type': 'application/javascript', 'cache-control': 'max-age=60' }, body: PAGE });
    const g = await gateway({ sites: [siteFor([o.url])] });
    const { stdout: version } = await run('curl', ['--version']);
    const want = /\bbrotli\b/i.test(version) ? 'br' : 'gzip';
    for (let i = 0; i < 2; i++) {
      const { stdout } = await run('curl', ['-sS', '--compressed', '-D', '-', `${g.url}/c`], { encoding: 'buffer', maxBuffer: 1 << 22 });
      const split = stdout.indexOf('\r\n\r\n');
      const head = stdout.subarray(0, split).toString('latin1').toLowerCase();
      expect(head).toContain(`content-encoding: ${want}\r\n`);
      expect(stdout.subarray(split + 4).equals(PAGE)).toBe(true); // curl decoded it
    }
    expect(o.count('/c')).toBe(1);
  });

  it('follows compression config on reload: disabled stores identity only and answers identity', async () => {
    const o = await origin();
    o.route('/a', { headers: { 'content-type': 'text/html', 'cache-control': 'max-age=60' }, body: PAGE });
    o.route('/b', { headers: { 'content-type': 'text/html', 'cache-control': 'max-age=60' }, body: PAGE });
    const g = await gateway({ sites: [siteFor([o.url])] });
    expect((await get(`${g.url}/a`, { 'accept-encoding': 'br' })).headers['content-encoding']).toBe('br');
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, compression: { enabled: false }, sites: [siteFor([o.url])] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    const b = await get(`${g.url}/b`, { 'accept-encoding': 'br' });
    expect(b.headers['content-encoding']).toBeUndefined();
    expect(b.body.equals(PAGE)).toBe(true);
    // What was stored before keeps its encodings until it is refilled, but answers identity,
    // on the hit fast path and the slow path alike.
    for (let i = 0; i < 3; i++) {
      const a = await get(`${g.url}/a`, { 'accept-encoding': 'gzip' }); // the reload emptied the memo: slow path, then memo hits
      expect(a.headers['content-encoding']).toBeUndefined();
      expect(a.body.equals(PAGE)).toBe(true);
    }
    expect((await get(`${g.url}/a`, { 'accept-encoding': 'gzip', 'if-none-match': '"x"' })).headers['content-encoding']).toBeUndefined();
    // Enabled again: the stored encodings answer at once, no refill.
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: [siteFor([o.url])] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect((await get(`${g.url}/a`, { 'accept-encoding': 'gzip' })).headers['content-encoding']).toBe('gzip');
    expect(o.count('/a')).toBe(1);
  });

  describe('uncached pass-through, on the fly', () => {
    const uncached = (url: string, extra: Record<string, unknown> = {}) => siteFor([url], { routes: [{ name: 'all', cache: { enabled: false } }], ...extra });

    it('compresses a streamed answer with a cheap level, byte-exact, without Content-Length, with a weak ETag', async () => {
      const o = await origin();
      o.route('/live', { headers: { 'content-type': 'text/html', etag: '"s1"', 'accept-ranges': 'bytes' }, body: PAGE });
      const g = await gateway({ sites: [uncached(o.url)] });
      for (const coding of ['br', 'gzip'] as const) {
        const a = await get(`${g.url}/live`, { 'accept-encoding': coding });
        expect(a.headers['cache-status']).toMatch(/fwd=bypass/);
        expect(a.headers['content-encoding']).toBe(coding);
        expect(a.headers['content-length']).toBeUndefined();
        expect(a.headers['accept-ranges']).toBeUndefined();
        expect(a.headers['etag']).toBe('W/"s1"');
        expect(varyNames(a)).toEqual(['accept-encoding']);
        expect(decode(a).equals(PAGE)).toBe(true);
        expect(a.body.length).toBeLessThan(PAGE.length / 2);
      }
      const plain = await get(`${g.url}/live`);
      expect(plain.headers['content-encoding']).toBeUndefined();
      expect(plain.headers['etag']).toBe('"s1"');
      expect(plain.body.equals(PAGE)).toBe(true);
      expect(o.count('/live')).toBe(3);
    });

    it('never compresses a personal answer (BREACH): a request with a cookie or credentials, an answer that sets a cookie or is private', async () => {
      const o = await origin();
      o.route('/page', { headers: { 'content-type': 'text/html' }, body: PAGE });
      o.route('/login', { headers: { 'content-type': 'text/html', 'set-cookie': 'sid=s3cret; Secure; HttpOnly' }, body: PAGE });
      o.route('/mine', { headers: { 'content-type': 'text/html', 'cache-control': 'private, max-age=0' }, body: PAGE });
      // RFC 2965's Set-Cookie2 sets a cookie as much.
      o.route('/login2', { headers: { 'content-type': 'text/html', 'set-cookie2': 'sid=s3cret; Version=1' }, body: PAGE });
      const g = await gateway({ sites: [uncached(o.url)] });
      const ae = { 'accept-encoding': 'br, gzip' };
      // The same page to an anonymous request is compressed: the rule is about who, not what.
      expect((await get(`${g.url}/page`, ae)).headers['content-encoding']).toBe('br');
      for (const [path, headers] of [
        ['/page', { ...ae, cookie: 'sessionid=abc' }],
        ['/page', { ...ae, authorization: 'Bearer t0ken' }],
        // The site's credential headers (sites[].credentialHeaders) as much as Authorization.
        ['/page', { ...ae, 'x-api-key': 'k3y' }],
        ['/page', { ...ae, 'x-auth-token': 't0ken' }],
        ['/login', ae],
        ['/login2', ae],
        ['/mine', ae],
      ] as const) {
        const a = await get(`${g.url}${path}`, headers);
        expect(a.headers['content-encoding'], `${path} ${JSON.stringify(headers)}`).toBeUndefined();
        expect(a.body.equals(PAGE)).toBe(true);
      }
    });

    it('compresses a fill whose answer was not storable, and the passes after it', async () => {
      const o = await origin();
      o.route('/dyn', { headers: { 'content-type': 'text/html', 'cache-control': 'no-store', etag: '"n1"' }, body: PAGE });
      const g = await gateway({ sites: [siteFor([o.url])] });
      const first = await get(`${g.url}/dyn`, { 'accept-encoding': 'gzip, br' });
      expect(first.headers['cache-status']).toMatch(/fwd=miss.*detail="pass/);
      const second = await get(`${g.url}/dyn`, { 'accept-encoding': 'gzip' });
      expect(second.headers['cache-status']).toMatch(/detail="pass/);
      for (const [a, coding] of [[first, 'br'], [second, 'gzip']] as const) {
        expect(a.headers['content-encoding']).toBe(coding);
        expect(a.headers['etag']).toBe('W/"n1"');
        expect(varyNames(a)).toEqual(['accept-encoding']);
        expect(decode(a).equals(PAGE)).toBe(true);
      }
      expect(Number(first.headers['content-length'])).toBe(first.body.length);
      expect(o.count('/dyn')).toBe(2);
    });

    it('flushes every chunk: the first part reaches the client before the origin sends the rest', async () => {
      const o = await origin();
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      o.route('/stream', (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write(PAGE.subarray(0, 4000));
        void released.then(() => res.end(PAGE.subarray(4000)));
      });
      const g = await gateway({ sites: [uncached(o.url)] });
      const decoded: Buffer[] = [];
      const done = new Promise<Buffer>((resolve, reject) => {
        http
          .get(`${g.url}/stream`, { headers: { 'accept-encoding': 'br' }, agent: false }, (res) => {
            expect(res.headers['content-encoding']).toBe('br');
            const unbr = createBrotliDecompress();
            res.pipe(unbr);
            unbr.on('data', (c: Buffer) => {
              decoded.push(c);
              if (Buffer.concat(decoded).length >= 4000) release();
            });
            unbr.on('end', () => resolve(Buffer.concat(decoded)));
            unbr.on('error', reject);
          })
          .on('error', reject);
      });
      const timeout = new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('first chunk held back')), 5000));
      expect((await Promise.race([done, timeout])).equals(PAGE)).toBe(true);
    });

    it('leaves alone HEAD, Range, images, origin-encoded, no-transform and small answers, and obeys passThrough.enabled', async () => {
      const o = await origin();
      o.route('/img', { headers: { 'content-type': 'image/jpeg' }, body: PAGE });
      o.route('/gz', { headers: { 'content-type': 'text/html', 'content-encoding': 'gzip' }, body: gzipSync(PAGE) });
      o.route('/nt', { headers: { 'content-type': 'text/html', 'cache-control': 'no-transform' }, body: PAGE });
      o.route('/small', { headers: { 'content-type': 'text/html' }, body: 'tiny' });
      o.route('/page', { headers: { 'content-type': 'text/html' }, body: PAGE });
      const g = await gateway({ sites: [uncached(o.url)] });
      for (const path of ['/img', '/gz', '/nt', '/small']) {
        const a = await get(`${g.url}${path}`, { 'accept-encoding': 'br, gzip' });
        expect(a.headers['content-encoding'], path).toBe(path === '/gz' ? 'gzip' : undefined);
        expect(varyNames(a), path).toEqual([]);
      }
      const head = await get(`${g.url}/page`, { 'accept-encoding': 'br' }, 'HEAD');
      expect(head.headers['content-encoding']).toBeUndefined();
      const ranged = await get(`${g.url}/page`, { 'accept-encoding': 'br', range: 'bytes=0-9' });
      expect(ranged.headers['content-encoding']).toBeUndefined();
      const noTransform = await get(`${g.url}/page`, { 'accept-encoding': 'br', 'cache-control': 'no-transform' });
      expect(noTransform.headers['content-encoding']).toBeUndefined();
      expect(noTransform.body.equals(PAGE)).toBe(true);
      writeFileSync(
        g.configPath,
        stringify(withTestDefaults({ reload: { watch: false }, compression: { passThrough: { enabled: false } }, sites: [uncached(o.url)] })),
      );
      expect((await g.gw.reload('manual'))?.ok).toBe(true);
      const off = await get(`${g.url}/page`, { 'accept-encoding': 'br' });
      expect(off.headers['content-encoding']).toBeUndefined();
      expect(off.body.equals(PAGE)).toBe(true);
    });
  });
});
