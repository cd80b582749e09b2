import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ownBytes, ownCopy } from '../../src/bytes.js';

describe('buffers the gateway keeps', () => {
  it('ownBytes copies a buffer that holds much more memory than its bytes, and keeps one that does not', () => {
    const zipped = gzipSync(Buffer.alloc(3000, 'abc'));
    expect(zipped.buffer.byteLength).toBeGreaterThanOrEqual(16 * 1024); // what zlib hands back
    const owned = ownBytes(zipped);
    expect(owned.equals(zipped)).toBe(true);
    expect(owned.buffer.byteLength).toBe(owned.length);
    // A small Buffer.from() is a slice of Node's shared 8 KiB pool.
    const pooled = Buffer.from('a small body');
    expect(pooled.buffer.byteLength).toBeGreaterThan(1024 + pooled.length);
    expect(ownBytes(pooled).buffer.byteLength).toBe(pooled.length);
    // A buffer that fills its memory (give or take 1 KiB) is kept as it is.
    const exact = Buffer.allocUnsafeSlow(5000);
    expect(ownBytes(exact)).toBe(exact);
    const nearly = Buffer.allocUnsafeSlow(5000).subarray(10);
    expect(ownBytes(nearly)).toBe(nearly);
  });

  it('ownCopy always copies, into memory of its own size', () => {
    const source = Buffer.allocUnsafeSlow(64);
    source.fill(7);
    const copy = ownCopy(source.subarray(8, 40));
    expect(copy.length).toBe(32);
    expect(copy.buffer.byteLength).toBe(32);
    source.fill(0);
    expect(copy.every((b) => b === 7)).toBe(true);
  });
});
