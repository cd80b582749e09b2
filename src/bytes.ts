/**
 * Buffers the gateway keeps (cache bodies and their encodings) in memory of their own size.
 * What the cache counts against `cache.maxBytes` is the bytes; what a buffer holds is its whole
 * ArrayBuffer, and the two part ways in two places: zlib hands back its output in a chunk of at
 * least 16 KiB, and a buffer under 4 KiB from Buffer.from() or Buffer.concat() is a slice of
 * Node's shared 8 KiB pool, which one long-lived slice pins whole. A soak with a full 64 MiB
 * cache of 2-40 KiB pages held 140 MiB of buffers.
 */

/** Spare bytes in a buffer's memory that ownBytes() leaves be (a copy would cost more than it frees). */
const OWN_BYTES_SLACK = 1024;

/** `bytes` itself when it (nearly) fills its memory, else a copy that does. */
export function ownBytes(bytes: Buffer): Buffer {
  if (bytes.buffer.byteLength - bytes.length <= OWN_BYTES_SLACK) return bytes;
  return ownCopy(bytes);
}

/** Always a copy, in memory of its own size (for bytes whose buffer the caller may reuse). */
export function ownCopy(view: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(view.length);
  view.copy(copy);
  return copy;
}
