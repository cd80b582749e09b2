import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  BUDGET_BURST_SECONDS,
  chooseCoding,
  CompressionBudget,
  BUDGET_CLIENT_SHARE,
  compileTypeMatcher,
  DEFAULT_COMPRESSIBLE_TYPES,
  encodedETag,
  makeEncodings,
  INLINE_COMPRESSION_MAX_BYTES,
  parseAcceptEncoding,
  pickCoding,
  varyWithAcceptEncoding,
  whyNotCompressed,
  type CompressionOptions,
} from '../../../src/cache/content-coding.js';

const BOTH = { br: Buffer.from('b'), gzip: Buffer.from('g') };
const OPTS: CompressionOptions = {
  enabled: true,
  types: DEFAULT_COMPRESSIBLE_TYPES,
  minBytes: 1024,
  minSavingsRatio: 0.1,
  brotliQuality: 5,
  gzipLevel: 6,
};

describe('Accept-Encoding (RFC 9110 §12.5.3)', () => {
  it.each([
    ['gzip, deflate, br', { br: 1, gzip: 1, identity: 1 }],
    ['br;q=0, gzip', { br: 0, gzip: 1, identity: 1 }],
    ['gzip;q=0.5, *;q=0.2', { br: 0.2, gzip: 0.5, identity: 0.2 }],
    ['gzip;q=0.5', { br: 0, gzip: 0.5, identity: 0.5 }],
    ['*;q=0', { br: 0, gzip: 0, identity: 0 }],
    ['*;q=0, identity', { br: 0, gzip: 0, identity: 1 }],
    ['identity;q=0', { br: 0, gzip: 0, identity: 0 }],
    ['x-gzip;q=0.3', { br: 0, gzip: 0.3, identity: 0.3 }],
    [' BR ; Q=0.7 ,GZIP', { br: 0.7, gzip: 1, identity: 0.7 }],
    ['br;q=1.5, gzip;q=abc, identity', { br: 0, gzip: 0, identity: 1 }],
    ['br;q = 0.25', { br: 0.25, gzip: 0, identity: 0.25 }],
    ['br;level=3;q=0.4', { br: 0.4, gzip: 0, identity: 0.4 }],
    ['', { br: 0, gzip: 0, identity: 1 }],
    [',,;', { br: 0, gzip: 0, identity: 1 }],
  ])('%j', (header, want) => {
    expect(parseAcceptEncoding(header)).toEqual(want);
  });

  it.each([
    ['gzip, deflate, br', 'br'],
    ['gzip', 'gzip'],
    ['br;q=0, gzip', 'gzip'],
    ['gzip;q=1, br;q=0.999', 'gzip'],
    ['gzip;q=0.5, br;q=0.5', 'br'],
    ['*', 'br'],
    ['identity, gzip;q=0.5', undefined],
    ['identity;q=0.5, gzip;q=0.5', 'gzip'],
    ['identity;q=0', undefined], // nothing stored is acceptable: the identity body, never a 406
    ['deflate', undefined],
    ['', undefined],
  ])('%j picks %s', (header, want) => {
    expect(pickCoding(parseAcceptEncoding(header), BOTH)).toBe(want);
    expect(chooseCoding(header, BOTH)).toBe(want);
  });

  it('picks only what is stored', () => {
    expect(chooseCoding('br, gzip', { gzip: Buffer.from('g') })).toBe('gzip');
    expect(chooseCoding('br', { gzip: Buffer.from('g') })).toBeUndefined();
    expect(chooseCoding('gzip', { br: Buffer.from('b') })).toBeUndefined();
    expect(chooseCoding(undefined, BOTH)).toBeUndefined();
    expect(chooseCoding(['gzip;q=0.1', 'br;q=0.2'], BOTH)).toBe('br');
    expect(chooseCoding('gzip, ' + 'x'.repeat(600), BOTH)).toBeUndefined(); // absurdly long: identity
  });
});

describe('what is compressed', () => {
  it('matches media types exactly, by type/* and by structured suffix, ignoring parameters and case', () => {
    const m = compileTypeMatcher(['text/*', 'application/json', 'application/*+xml']);
    expect(m('text/html; charset=utf-8')).toBe(true);
    expect(m('TEXT/CSS')).toBe(true);
    expect(m('application/json')).toBe(true);
    expect(m('application/atom+xml')).toBe(true);
    expect(m('application/jsonx')).toBe(false);
    expect(m('image/png')).toBe(false);
    expect(m('text/event-stream')).toBe(false);
    expect(m(undefined)).toBe(false);
    expect(m('garbage')).toBe(false);
  });

  it('says why a response is kept identity only', () => {
    const html = { 'content-type': 'text/html' };
    expect(whyNotCompressed(200, html, 5000, OPTS)).toBeUndefined();
    expect(whyNotCompressed(200, { ...html, 'content-encoding': 'identity' }, 5000, OPTS)).toBeUndefined();
    expect(whyNotCompressed(200, { ...html, 'content-encoding': 'gzip' }, 5000, OPTS)).toBe('encoded');
    expect(whyNotCompressed(200, { ...html, 'cache-control': 'max-age=5, no-transform' }, 5000, OPTS)).toBe('no_transform');
    expect(whyNotCompressed(200, html, 1023, OPTS)).toBe('small');
    expect(whyNotCompressed(200, { 'content-type': 'image/jpeg' }, 5000, OPTS)).toBe('type');
    expect(whyNotCompressed(200, {}, 5000, OPTS)).toBe('type');
    expect(whyNotCompressed(404, html, 5000, OPTS)).toBe('status');
    expect(whyNotCompressed(200, html, 5000, { ...OPTS, enabled: false })).toBe('disabled');
  });
});

describe('making encodings', () => {
  it('makes br and gzip that decompress to the identity body', async () => {
    const body = Buffer.from('<p>hello compressed world</p>\n'.repeat(200));
    const enc = await makeEncodings(body, OPTS, true);
    expect(brotliDecompressSync(enc!.br!).equals(body)).toBe(true);
    expect(gunzipSync(enc!.gzip!).equals(body)).toBe(true);
    expect(enc!.br!.length).toBeLessThan(body.length / 10);
  });

  it('keeps each encoding in memory of its own size (zlib hands back at least 16 KiB)', async () => {
    for (const size of [3000, 12_000, 4 * INLINE_COMPRESSION_MAX_BYTES]) {
      const enc = await makeEncodings(Buffer.from(randomBytes(size).toString('base64').slice(0, size)), OPTS, true);
      for (const b of [enc!.br!, enc!.gzip!]) expect(b.buffer.byteLength - b.length).toBeLessThanOrEqual(1024);
    }
  });

  it('keeps none for a body they do not shrink by minSavingsRatio', async () => {
    expect(await makeEncodings(randomBytes(8000), OPTS, false)).toBeUndefined();
    expect(await makeEncodings(randomBytes(INLINE_COMPRESSION_MAX_BYTES + 1), OPTS, false)).toBeUndefined();
  });

  it('makes the same encodings inline (small body) and on the threadpool (large body)', async () => {
    const line = '<p>hello compressed world</p>\n';
    for (const size of [INLINE_COMPRESSION_MAX_BYTES, INLINE_COMPRESSION_MAX_BYTES + 1, 4 * INLINE_COMPRESSION_MAX_BYTES]) {
      const body = Buffer.alloc(size, line);
      const enc = await makeEncodings(body, OPTS, true);
      expect(brotliDecompressSync(enc!.br!).equals(body)).toBe(true);
      expect(gunzipSync(enc!.gzip!).equals(body)).toBe(true);
    }
  });
});

describe('headers of an encoded answer', () => {
  it('derives a distinct ETag per encoding, strong stays strong, weak stays weak', () => {
    expect(encodedETag('"abc"', 'br')).toBe('"abc-br"');
    expect(encodedETag('"abc"', 'gzip')).toBe('"abc-gzip"');
    expect(encodedETag('W/"abc"', 'br')).toBe('W/"abc-br"');
    expect(encodedETag(' "" ', 'gzip')).toBe('"-gzip"');
    expect(encodedETag('abc', 'br')).toBeUndefined();
    expect(encodedETag('"a"b"', 'br')).toBeUndefined();
  });

  it('merges Accept-Encoding into Vary once', () => {
    expect(varyWithAcceptEncoding(undefined)).toBe('Accept-Encoding');
    expect(varyWithAcceptEncoding('Accept-Language')).toBe('Accept-Language, Accept-Encoding');
    expect(varyWithAcceptEncoding('accept-encoding, Cookie')).toBe('accept-encoding, Cookie');
    expect(varyWithAcceptEncoding(['Origin', 'Accept-Encoding'])).toBe('Origin, Accept-Encoding');
    expect(varyWithAcceptEncoding(' , ')).toBe('Accept-Encoding');
  });
});

describe('CompressionBudget (compression.fillBytesPerSecond)', () => {
  const big = INLINE_COMPRESSION_MAX_BYTES + 1;
  it('lets large bodies through up to its burst, then at its rate; small ones always and uncounted', () => {
    let now = 0;
    const budget = new CompressionBudget(() => now);
    const rate = 100_000;
    let taken = 0;
    while (budget.take(50_000, rate)) taken++;
    expect(taken).toBe((BUDGET_BURST_SECONDS * rate) / 50_000);
    expect(budget.take(INLINE_COMPRESSION_MAX_BYTES, rate)).toBe(true); // a page is never held back
    now += 499;
    expect(budget.take(50_000, rate)).toBe(false);
    now += 1;
    expect(budget.take(50_000, rate)).toBe(true);
    now += 1_000_000; // refills to its burst, no further
    taken = 0;
    while (budget.take(big, rate)) taken++;
    expect(taken).toBe(Math.floor((BUDGET_BURST_SECONDS * rate) / big));
  });

  it('lets one client take at most half of it, rate and burst: the rest stays for the others (attacker trial)', () => {
    let now = 0;
    const budget = new CompressionBudget(() => now);
    const rate = 100_000;
    let attacker = 0;
    while (budget.take(50_000, rate, '203.0.113.9')) attacker++;
    expect(attacker).toBe((BUDGET_CLIENT_SHARE * BUDGET_BURST_SECONDS * rate) / 50_000);
    let others = 0;
    for (let i = 0; budget.take(50_000, rate, `198.51.100.${i}`); i++) others++;
    expect(others).toBe(((1 - BUDGET_CLIENT_SHARE) * BUDGET_BURST_SECONDS * rate) / 50_000);
    now += 1_000; // 100 kB refilled: the attacker's share refills at half the rate
    expect(budget.take(60_000, rate, '203.0.113.9')).toBe(false);
    expect(budget.take(60_000, rate, '198.51.100.200')).toBe(true);
    // A fill with no client (none known) is held to the whole budget alone.
    now += 100_000;
    let anonymous = 0;
    while (budget.take(50_000, rate)) anonymous++;
    expect(anonymous).toBe((BUDGET_BURST_SECONDS * rate) / 50_000);
  });

  it('lets a body larger than its burst through when full, in debt after; 0 means no bound', () => {
    let now = 0;
    const budget = new CompressionBudget(() => now);
    expect(budget.take(2_000_000, 100_000)).toBe(true);
    now += 10_000; // 1 MB repaid of the 1.2 MB debt
    expect(budget.take(big, 100_000)).toBe(false);
    now += 3_000;
    expect(budget.take(big, 100_000)).toBe(true);
    for (let i = 0; i < 100; i++) expect(budget.take(10_000_000, 0)).toBe(true);
  });
});
