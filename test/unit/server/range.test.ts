/**
 * The Range grammar, range resolution and coalescing, If-Range, and the plan for one request
 * (src/server/range.ts), without sockets; test/integration/range.test.ts has the bytes on the wire.
 */
import { describe, expect, it } from 'vitest';
import type { CacheEntry } from '../../../src/cache/entry.js';
import { MAX_RANGES, ifRangeHolds, multipartChunks, parseRange, planRange, resolveRanges } from '../../../src/server/range.js';

function entry(over: Partial<CacheEntry> = {}): CacheEntry {
  return {
    key: 'k',
    variantKey: '',
    vary: [],
    status: 200,
    headers: { etag: '"v1"', 'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT', 'content-type': 'text/plain' },
    body: Buffer.from('0123456789'),
    requestTime: 0,
    responseTime: 0,
    initialAgeMs: 0,
    freshnessMs: 60_000,
    staleWhileRevalidateMs: 0,
    staleIfErrorMs: 0,
    noCache: false,
    mustRevalidate: false,
    tags: [],
    deleteAt: 60_000,
    ...over,
  };
}

describe('parseRange', () => {
  it('reads first-last, first-, -suffix and several specs, with whitespace and any case of the unit', () => {
    expect(parseRange('bytes=0-99')).toEqual([{ first: 0, last: 99 }]);
    expect(parseRange('bytes=100-')).toEqual([{ first: 100, last: undefined }]);
    expect(parseRange('bytes=-5')).toEqual([{ suffix: 5 }]);
    expect(parseRange('Bytes = 0-1 , 5 - 6,\t-3')).toEqual([{ first: 0, last: 1 }, { first: 5, last: 6 }, { suffix: 3 }]);
    expect(parseRange('bytes=0-1,,2-3,')).toEqual([{ first: 0, last: 1 }, { first: 2, last: 3 }]); // empty list elements
  });

  it('calls anything else invalid: other units, last before first, signs, garbage, no ranges at all', () => {
    for (const v of ['items=0-1', 'bytes 0-1', 'bytes=1-0', 'bytes=-', 'bytes=+1-2', 'bytes=1-2-3', 'bytes=a-b', 'bytes=', 'bytes=,', 'bytes=0-1, bytes=2-3', '0-1', '', 'bytes=0x10-'])
      expect(parseRange(v), v).toBe('invalid');
  });

  it('refuses more than MAX_RANGES specs, also a huge field, without building them all', () => {
    const specs = (n: number) => `bytes=${Array.from({ length: n }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(',')}`;
    expect(parseRange(specs(MAX_RANGES))).toHaveLength(MAX_RANGES);
    expect(parseRange(specs(MAX_RANGES + 1))).toBe('too_many');
    expect(parseRange(`bytes=${'0-0,'.repeat(100_000)}0-0`)).toBe('too_many');
  });

  it('keeps huge numbers as numbers (a later step clamps or refuses them)', () => {
    expect(parseRange('bytes=0-99999999999999999999999')).toEqual([{ first: 0, last: 1e23 }]);
  });
});

describe('resolveRanges', () => {
  it('clamps to the body, drops unsatisfiable specs, keeps request order when nothing overlaps', () => {
    expect(resolveRanges([{ first: 8, last: 100 }], 10)).toEqual([{ start: 8, end: 9 }]);
    expect(resolveRanges([{ suffix: 50 }], 10)).toEqual([{ start: 0, end: 9 }]);
    expect(resolveRanges([{ first: 10, last: undefined }, { suffix: 0 }], 10)).toEqual([]);
    expect(resolveRanges([{ first: 6, last: 7 }, { first: 10, last: 12 }, { first: 0, last: 1 }], 10)).toEqual([
      { start: 6, end: 7 },
      { start: 0, end: 1 },
    ]);
  });

  it('coalesces overlapping and adjacent ranges, then answers in ascending order', () => {
    expect(resolveRanges([{ first: 5, last: 8 }, { first: 0, last: 2 }, { first: 3, last: 4 }], 10)).toEqual([{ start: 0, end: 8 }]);
    expect(
      resolveRanges(
        [{ first: 7, last: 9 }, { first: 0, last: 3 }, { first: 2, last: 4 }],
        10,
      ),
    ).toEqual([
      { start: 0, end: 4 },
      { start: 7, end: 9 },
    ]);
    // Many copies of the same range are one range.
    expect(resolveRanges(Array.from({ length: 16 }, () => ({ first: 0, last: 9 })), 10)).toEqual([{ start: 0, end: 9 }]);
  });
});

describe('ifRangeHolds', () => {
  const stored = entry().headers;
  it('holds for the identical strong ETag only', () => {
    expect(ifRangeHolds('"v1"', stored)).toBe(true);
    expect(ifRangeHolds(' "v1" ', stored)).toBe(true);
    expect(ifRangeHolds('"v2"', stored)).toBe(false);
    expect(ifRangeHolds('W/"v1"', stored)).toBe(false); // weak never holds
    expect(ifRangeHolds('"v1"', { etag: 'W/"v1"' })).toBe(false); // nor does a weak stored one
    expect(ifRangeHolds('W/"v1"', { etag: 'W/"v1"' })).toBe(false); // even an identical weak one
    expect(ifRangeHolds('"v1', stored)).toBe(false);
  });
  it('holds for a date equal to Last-Modified only', () => {
    expect(ifRangeHolds('Tue, 01 Dec 2026 10:00:00 GMT', stored)).toBe(true);
    expect(ifRangeHolds('Tue, 01 Dec 2026 10:00:01 GMT', stored)).toBe(false);
    expect(ifRangeHolds('Tue, 01 Dec 2026 10:00:00 GMT', { etag: '"v1"' })).toBe(false);
    expect(ifRangeHolds('yesterday', stored)).toBe(false);
  });
});

describe('planRange', () => {
  it('cuts ranges from a stored 200 for GET', () => {
    expect(planRange('GET', { range: 'bytes=2-4' }, entry())).toEqual({ kind: 'single', range: { start: 2, end: 4 } });
    expect(planRange('GET', { range: 'bytes=0-0,-1' }, entry())).toEqual({
      kind: 'multipart',
      ranges: [
        { start: 0, end: 0 },
        { start: 9, end: 9 },
      ],
    });
    expect(planRange('GET', { range: 'bytes=10-' }, entry())).toEqual({ kind: 'unsatisfiable' });
  });

  it('answers in full where a range does not apply or may not be served', () => {
    expect(planRange('GET', {}, entry())).toMatchObject({ kind: 'full', why: 'no_range' });
    expect(planRange('HEAD', { range: 'bytes=0-1' }, entry())).toMatchObject({ kind: 'full', why: 'not_applicable' });
    expect(planRange('GET', { range: 'bytes=0-1' }, entry({ status: 404 }))).toMatchObject({ kind: 'full', why: 'not_applicable' });
    expect(planRange('GET', { range: 'bytes=0-1' }, entry({ body: Buffer.alloc(0) }))).toMatchObject({ kind: 'full', why: 'not_applicable' });
    expect(planRange('GET', { range: 'bytes=1-0' }, entry())).toMatchObject({ kind: 'full', why: 'invalid' });
    expect(planRange('GET', { range: `bytes=${'0-0,'.repeat(MAX_RANGES)}0-0` }, entry())).toMatchObject({ kind: 'full', why: 'too_many' });
    expect(planRange('GET', { range: 'bytes=0-1', 'if-range': '"v2"' }, entry())).toMatchObject({ kind: 'full', why: 'if_range' });
    expect(planRange('GET', { range: 'bytes=0-1', 'if-range': '"v1"' }, entry())).toEqual({ kind: 'single', range: { start: 0, end: 1 } });
    // Several ranges of a body stored in a content coding: full (a single range is cut as usual).
    const gzipped = entry({ headers: { 'content-encoding': 'gzip' } });
    expect(planRange('GET', { range: 'bytes=0-0,5-5' }, gzipped)).toMatchObject({ kind: 'full', why: 'encoded_multipart' });
    expect(planRange('GET', { range: 'bytes=0-0' }, gzipped)).toEqual({ kind: 'single', range: { start: 0, end: 0 } });
    // If-Range is evaluated before satisfiability: a failing one sends 200 full, not 416.
    expect(planRange('GET', { range: 'bytes=99-', 'if-range': '"v2"' }, entry())).toMatchObject({ kind: 'full', why: 'if_range' });
  });
});

describe('multipartChunks', () => {
  it('frames each part and references the body instead of copying it', () => {
    const body = Buffer.from('0123456789');
    const chunks = multipartChunks(body, [{ start: 0, end: 1 }, { start: 8, end: 9 }], 'text/plain', 'B');
    expect(Buffer.concat(chunks).toString()).toBe(
      '--B\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/10\r\n\r\n01' +
        '\r\n--B\r\ncontent-type: text/plain\r\ncontent-range: bytes 8-9/10\r\n\r\n89' +
        '\r\n--B--\r\n',
    );
    expect(chunks[1]!.buffer).toBe(body.buffer);
    expect(multipartChunks(body, [{ start: 0, end: 0 }], undefined, 'B')[0]!.toString()).toBe('--B\r\ncontent-range: bytes 0-0/10\r\n\r\n');
  });
});
