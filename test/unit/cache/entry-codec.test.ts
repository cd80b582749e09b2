import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CODEC_VERSION, decodeEntries, decodeEntry, encodeEntries, encodeEntry } from '../../../src/cache/entry-codec.js';
import type { CacheEntry } from '../../../src/cache/entry.js';
import { HOP_BY_HOP } from '../../../src/http/facts.js';

const base: CacheEntry = {
  key: 'site\u0000/path?q=1',
  variantKey: '',
  vary: [],
  status: 200,
  headers: { 'content-type': 'text/html; charset=utf-8' },
  body: Buffer.from('<h1>hello</h1>'),
  requestTime: 1_700_000_000_000,
  responseTime: 1_700_000_000_012.5,
  initialAgeMs: 3_000,
  freshnessMs: 60_000,
  staleWhileRevalidateMs: 10_000,
  staleIfErrorMs: 86_400_000,
  noCache: false,
  mustRevalidate: false,
  tags: [],
  deleteAt: 1_700_086_460_000,
};

describe('entry codec round trip', () => {
  const cases: { name: string; entry: CacheEntry }[] = [
    { name: 'plain text entry', entry: base },
    {
      name: 'binary body with every byte value',
      entry: { ...base, body: Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7) % 256)) },
    },
    { name: 'empty body', entry: { ...base, status: 204, body: Buffer.alloc(0) } },
    {
      name: 'repeated set-cookie as an array',
      entry: { ...base, headers: { 'set-cookie': ['a=1; Path=/', 'b=2; Secure; HttpOnly'], vary: 'Accept-Encoding' } },
    },
    {
      name: 'vary, tags, flags and a soft purge',
      entry: {
        ...base,
        variantKey: 'gzip\u0000en',
        vary: ['accept-encoding', 'accept-language'],
        tags: ['product-1', 'ünïcode-tag'],
        noCache: true,
        mustRevalidate: true,
        invalidatedAt: 1_700_000_005_000,
      },
    },
    { name: 'given for everyone by the origin (sharedByOrigin), and not', entry: { ...base, sharedByOrigin: true } },
    { name: 'kept for one asker (sharedByOrigin false)', entry: { ...base, sharedByOrigin: false } },
    { name: 'non-ASCII key and header values', entry: { ...base, key: 's\u0000/café?x=☃', headers: { link: '</ü>; rel=x' } } },
  ];

  it.each(cases)('$name', ({ entry }) => {
    expect(decodeEntry(encodeEntry(entry))).toEqual(entry);
  });

  it('keeps several variants in order', () => {
    const record = cases.map((c, i) => ({ ...c.entry, variantKey: `v${i}` }));
    expect(decodeEntries(encodeEntries(record))).toEqual(record);
  });

  it('round-trips an empty record', () => {
    expect(decodeEntries(encodeEntries([]))).toEqual([]);
  });

  it('leaves out properties that are not CacheEntry fields', () => {
    const withExtra = { ...base, extra: 'not persisted' } as CacheEntry;
    expect(decodeEntry(encodeEntry(withExtra))).toEqual(base);
  });

  it('gives each decoded entry its own body buffer', () => {
    const bytes = encodeEntry(base);
    const decoded = decodeEntry(bytes)!;
    bytes.fill(0);
    expect(decoded.body.toString()).toBe('<h1>hello</h1>');
    // In memory of its own size, not a slice of Node's shared pool that a cached body would pin.
    expect(decoded.body.buffer.byteLength).toBe(decoded.body.length);
    const withEncodings = decodeEntry(encodeEntry({ ...base, encodings: { br: Buffer.from('br bytes'), gzip: Buffer.from('gzip bytes') } }))!;
    for (const b of [withEncodings.encodings!.br!, withEncodings.encodings!.gzip!]) expect(b.buffer.byteLength).toBe(b.length);
  });

  it('round-trips arbitrary entries (property)', () => {
    // Header fields as an origin can send them (a token name, a value without CR, LF or NUL):
    // a record holding anything else is refused on decode (see the rejects below).
    const fieldValue = fc.string().filter((v) => !/[\r\n\0]/.test(v));
    const headerValue = fc.oneof(fieldValue, fc.array(fieldValue, { maxLength: 3 }));
    const fieldName = fc.stringMatching(/^[!#$%&'*+.^_`|~0-9a-z-]{1,20}$/).filter((s) => s !== '__proto__' && !HOP_BY_HOP.has(s));
    const entryArb = fc.record({
      key: fc.string({ unit: 'binary', maxLength: 40 }),
      variantKey: fc.string(),
      vary: fc.array(fc.string(), { maxLength: 3 }),
      status: fc.integer({ min: 100, max: 599 }),
      headers: fc.dictionary(fieldName, headerValue, { maxKeys: 5 }),
      body: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      requestTime: fc.double({ noNaN: true, noDefaultInfinity: true }),
      responseTime: fc.integer(),
      initialAgeMs: fc.nat(),
      freshnessMs: fc.nat(),
      staleWhileRevalidateMs: fc.nat(),
      staleIfErrorMs: fc.nat(),
      noCache: fc.boolean(),
      mustRevalidate: fc.boolean(),
      tags: fc.array(fc.string(), { maxLength: 3 }),
      deleteAt: fc.integer(),
    });
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 4 }), (record) => {
        // JSON has no -0: normalise it the way the codec must. Bodies compared as hex (fast).
        const comparable = (entries: CacheEntry[]) =>
          entries.map((e) => ({ ...e, requestTime: e.requestTime === 0 ? 0 : e.requestTime, body: e.body.toString('hex') }));
        const decoded = decodeEntries(encodeEntries(record));
        expect(decoded && comparable(decoded)).toEqual(comparable(record));
      }),
      { numRuns: 50 },
    );
  });
});

describe('entry codec rejects what it did not write', () => {
  const valid = encodeEntries([base, { ...base, variantKey: 'b' }]);
  const withByte = (at: number, value: number) => {
    const copy = Buffer.from(valid);
    copy[at] = value;
    return copy;
  };
  const metaJson = (meta: unknown) => {
    const json = Buffer.from(JSON.stringify(meta));
    // Version 1, the layout without stored encodings (CODEC_VERSION's needs encoding fields:
    // every record built here was refused for that alone, whatever its metadata said).
    const header = Buffer.from([0x43, 0x47, 1, 0, 1]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(json.length);
    return Buffer.concat([header, len, json, Buffer.alloc(4)]);
  };
  const { body: _body, ...meta } = base;

  const cases: { name: string; bytes: Uint8Array }[] = [
    { name: 'empty input', bytes: Buffer.alloc(0) },
    { name: 'wrong magic', bytes: withByte(0, 0x58) },
    { name: 'unknown version', bytes: withByte(2, CODEC_VERSION + 1) },
    { name: 'trailing bytes', bytes: Buffer.concat([valid, Buffer.from([0])]) },
    { name: 'a plain JSON string', bytes: Buffer.from(JSON.stringify(base)) },
    { name: 'metadata that is not JSON', bytes: withByte(9, 0x00 /* NUL where '{' was */) },
    { name: 'status as a string', bytes: metaJson({ ...meta, status: '200' }) },
    { name: 'header value as a number', bytes: metaJson({ ...meta, headers: { age: 5 } }) },
    { name: 'missing deleteAt', bytes: metaJson({ ...meta, deleteAt: undefined }) },
    { name: 'tags not strings', bytes: metaJson({ ...meta, tags: [1] }) },
    { name: 'metadata that is an array', bytes: metaJson([meta]) },
    // Fields Node cannot write: each made writeHead throw on every hit of the page.
    { name: 'a status past 599', bytes: metaJson({ ...meta, status: 99999 }) },
    { name: 'a status below 100', bytes: metaJson({ ...meta, status: 42 }) },
    { name: 'a header name that is not a token', bytes: metaJson({ ...meta, headers: { 'bad name': 'x' } }) },
    { name: 'a CR LF in a header value', bytes: metaJson({ ...meta, headers: { 'x-a': 'ok\r\nSet-Cookie: planted=1' } }) },
    { name: 'a NUL in one of a header\'s values', bytes: metaJson({ ...meta, headers: { 'x-a': ['ok', 'b\u0000'] } }) },
    // Framing the gateway never stores: served beside its own Content-Length on every hit
    // (attacker trial, a record written into a shared Redis).
    { name: 'a transfer-encoding field', bytes: metaJson({ ...meta, headers: { 'transfer-encoding': 'gzip' } }) },
    { name: 'a connection field', bytes: metaJson({ ...meta, headers: { connection: 'close' } }) },
    { name: 'an upper-case name (not how the gateway stores them)', bytes: metaJson({ ...meta, headers: { 'Transfer-Encoding': 'chunked' } }) },
  ];

  it('a record built the way these are, from valid metadata, decodes (so each case below fails for its own reason)', () => {
    expect(decodeEntries(metaJson(meta))).toHaveLength(1);
  });

  it.each(cases)('$name decodes to undefined', ({ bytes }) => {
    expect(decodeEntries(bytes)).toBeUndefined();
  });

  it('every truncation of a valid record decodes to undefined', () => {
    for (let length = 0; length < valid.length; length++)
      expect(decodeEntries(valid.subarray(0, length)), `length ${length}`).toBeUndefined();
  });

  it('decodeEntry wants exactly one variant', () => {
    expect(decodeEntry(valid)).toBeUndefined();
    expect(decodeEntry(encodeEntries([]))).toBeUndefined();
  });

  it('accepts a Uint8Array view as well as a Buffer', () => {
    const view = new Uint8Array(valid.buffer, valid.byteOffset, valid.byteLength);
    expect(decodeEntries(view)).toHaveLength(2);
  });
});

describe('entry codec: stored encodings (version 2)', () => {
  const encoded: CacheEntry = {
    ...base,
    body: Buffer.from('<p>identity</p>'.repeat(100)),
    encodings: { br: Buffer.from([0x1b, 0x00, 0xff, 0x80]), gzip: Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x01]) },
  };

  it('round-trips an entry with br and gzip encodings, as version 2', () => {
    const bytes = encodeEntry(encoded);
    expect(bytes[2]).toBe(2);
    const decoded = decodeEntry(bytes)!;
    expect(decoded).toEqual(encoded);
    expect(decoded.encodings!.br!.equals(encoded.encodings!.br!)).toBe(true);
    expect(decoded.encodings!.gzip!.equals(encoded.encodings!.gzip!)).toBe(true);
  });

  it('round-trips one encoding only, and a record mixing variants with and without encodings', () => {
    const gzOnly: CacheEntry = { ...encoded, variantKey: 'g', encodings: { gzip: Buffer.from('gz') } };
    const plain: CacheEntry = { ...base, variantKey: 'p' };
    const record = [gzOnly, plain, { ...encoded, variantKey: 'e' }];
    const decoded = decodeEntries(encodeEntries(record))!;
    expect(decoded).toEqual(record);
    expect(decoded[1]!.encodings).toBeUndefined();
    expect(decoded[0]!.encodings!.br).toBeUndefined();
  });

  it('writes a record without encodings as version 1, and still reads version 1 records', () => {
    const bytes = encodeEntries([base, { ...base, variantKey: 'b' }]);
    expect(bytes[2]).toBe(1);
    // Version 1 as an older instance wrote it (byte layout built by hand: no encodings trailer).
    const { body, ...meta } = base;
    const json = Buffer.from(JSON.stringify(meta));
    const lengths = Buffer.alloc(8);
    lengths.writeUInt32BE(json.length, 0);
    const bodyLength = Buffer.alloc(4);
    bodyLength.writeUInt32BE(body.length, 0);
    const v1 = Buffer.concat([Buffer.from([0x43, 0x47, 1, 0, 1]), lengths.subarray(0, 4), json, bodyLength, body]);
    expect(decodeEntry(v1)).toEqual(base);
  });

  it('rejects every truncation, an unknown coding name and trailing bytes', () => {
    const valid = encodeEntry(encoded);
    for (let length = 0; length < valid.length; length++)
      expect(decodeEntries(valid.subarray(0, length)), `length ${length}`).toBeUndefined();
    expect(decodeEntries(Buffer.concat([valid, Buffer.from([0])]))).toBeUndefined();
    const unknown = Buffer.from(valid);
    const at = unknown.indexOf(Buffer.from([2, 0x62, 0x72])); // nameLength 2, "br"
    expect(at).toBeGreaterThan(0);
    unknown[at + 1] = 0x7a; // "zr"
    expect(decodeEntries(unknown)).toBeUndefined();
  });
});
