import { describe, expect, it } from 'vitest';
import zlib from 'node:zlib';
import { MAX_SCANNED_INPUTS, formsOf, reflectedInputs, varyingAlsoOn } from '../../../src/cache/reflection.js';

const MAX = 1 << 20;

describe('reflectedInputs', () => {
  it('finds a value in the body or in a response header, and nothing else', async () => {
    const body = Buffer.from('<a href="//evil.example/x">home</a>');
    const inputs = [
      ['x-host', 'evil.example'],
      ['x-next', '/after-login'],
      ['x-quiet', 'not-in-the-page'],
    ] as const;
    expect(await reflectedInputs(inputs, { location: '/after-login?x=1' }, body, MAX)).toEqual(['x-host', 'x-next']);
    expect(await reflectedInputs([['x-quiet', 'not-in-the-page']], {}, body, MAX)).toEqual([]);
  });

  it('finds the value lowercased, percent-, form-, HTML- and JSON-encoded', async () => {
    const value = 'Evil "One" <b>&co';
    for (const form of [value.toLowerCase(), encodeURIComponent(value), 'Evil &quot;One&quot; &lt;b&gt;&amp;co', JSON.stringify(value)]) {
      expect(await reflectedInputs([['x-a', value]], {}, Buffer.from(`page ${form} end`), MAX), form).toEqual(['x-a']);
    }
    expect(formsOf('a b')).toContain('a+b');
  });

  it('ignores values shorter than three characters (they match most pages by chance)', async () => {
    expect(await reflectedInputs([['req-num', '12']], { 'x-count': '12' }, Buffer.from('0123456789'), MAX)).toEqual([]);
    expect(await reflectedInputs([['x-v', '123']], {}, Buffer.from('0123456789'), MAX)).toEqual(['x-v']);
  });

  it('reads a body the origin compressed (gzip, br, deflate), small and large', async () => {
    const page = (n: number) => Buffer.from(`${'filler '.repeat(n)}<script src="//planted.example/x.js"></script>`);
    const input = [['x-cdn', 'planted.example']] as const;
    for (const [coding, encode] of [
      ['gzip', zlib.gzipSync],
      ['br', zlib.brotliCompressSync],
      ['deflate', zlib.deflateSync],
    ] as const) {
      for (const n of [1, 100_000]) {
        expect(await reflectedInputs(input, { 'content-encoding': coding }, encode(page(n)), MAX), `${coding} ${n}`).toEqual(['x-cdn']);
      }
    }
  });

  it('counts every input as repeated when the body cannot be read or there are too many inputs', async () => {
    const inputs = [['x-b', 'bbb'], ['x-a', 'aaa']] as const;
    const plain = Buffer.from('nothing here');
    expect(await reflectedInputs(inputs, { 'content-encoding': 'zstd' }, plain, MAX)).toEqual(['x-a', 'x-b']);
    expect(await reflectedInputs(inputs, { 'content-encoding': 'gzip' }, plain, MAX)).toEqual(['x-a', 'x-b']);
    // A compression bomb: more than the bound once decoded.
    expect(await reflectedInputs(inputs, { 'content-encoding': 'gzip' }, zlib.gzipSync(Buffer.alloc(4096)), 1024)).toEqual(['x-a', 'x-b']);
    const many = Array.from({ length: MAX_SCANNED_INPUTS + 1 }, (_, i) => [`x-h${i}`, `value-${i}`] as const);
    expect(await reflectedInputs(many, {}, plain, MAX)).toHaveLength(MAX_SCANNED_INPUTS + 1);
    expect(await reflectedInputs(many.slice(1), {}, plain, MAX)).toEqual([]);
  });
});

describe('varyingAlsoOn', () => {
  it('adds the names to the entry\'s Vary list and header, sorted and once', () => {
    const entry = { vary: ['accept-language'], headers: { vary: 'Accept-Language', 'content-type': 'text/html' } };
    const out = varyingAlsoOn(entry, ['x-b', 'accept-language', 'x-a']);
    expect(out.vary).toEqual(['accept-language', 'x-a', 'x-b']);
    expect(out.headers).toEqual({ vary: 'Accept-Language, x-b, x-a', 'content-type': 'text/html' });
    expect(entry.vary).toEqual(['accept-language']); // not changed in place
    expect(varyingAlsoOn({ vary: [], headers: {} }, ['x-a']).headers).toEqual({ vary: 'x-a' });
    expect(varyingAlsoOn(entry, [])).toBe(entry);
  });
});
