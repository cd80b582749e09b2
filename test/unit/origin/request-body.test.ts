import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { BodySpool, BUFFERED_BODY_MAX_BYTES, type SpoolOptions } from '../../../src/origin/request-body.js';

/** A request stand-in: a stream with headers, fed by the test. */
function requestOf(headers: Record<string, string>): IncomingMessage & PassThrough {
  return Object.assign(new PassThrough(), { headers }) as unknown as IncomingMessage & PassThrough;
}

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  let out = '';
  for await (const chunk of stream) out += (chunk as Buffer).toString();
  return out;
}

const dirs: string[] = [];
function spoolDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'spool-test-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function options(over: Partial<SpoolOptions> = {}): SpoolOptions {
  return { maxBodyBytes: 10_000_000, maxBytes: 10_000_000, memoryBytes: 10_000_000, directory: spoolDir(), ...over };
}

describe('BodySpool', () => {
  it('keeps a small declared body in memory, and its stream can be read more than once', async () => {
    const spool = new BodySpool();
    const req = requestOf({ 'content-length': '5' });
    const reading = spool.read(req, options());
    req.end('hello');
    const read = await reading;
    expect(read.kind).toBe('body');
    if (read.kind !== 'body') return;
    expect(read.body.length).toBe(5);
    expect(await text(read.body.stream())).toBe('hello');
    expect(await text(read.body.stream())).toBe('hello');
    expect(spool.bytesHeld).toBe(0); // memory bodies are not the file budget's
  });

  it('spools a large body to an unlinked file, holds its bytes in the budget until released, and leaves no file behind', async () => {
    const spool = new BodySpool();
    const opts = options();
    const size = BUFFERED_BODY_MAX_BYTES * 3 + 17;
    const req = requestOf({ 'content-length': String(size) });
    const reading = spool.read(req, opts);
    for (let i = 0; i < size; i += 1000) req.write(Buffer.alloc(Math.min(1000, size - i), 97 + ((i / 1000) % 26)));
    req.end();
    const read = await reading;
    expect(read.kind).toBe('body');
    if (read.kind !== 'body') return;
    expect(read.body.length).toBe(size);
    const first = await text(read.body.stream());
    expect(first.length).toBe(size);
    expect(first.slice(0, 1000)).toBe('a'.repeat(1000));
    expect(first.slice(1000, 2000)).toBe('b'.repeat(1000));
    expect(await text(read.body.stream())).toBe(first); // a retry sends it again
    expect(spool.bytesHeld).toBe(size);
    // The spool directory never shows the file: it is unlinked once open.
    const [made] = readdirSync(opts.directory);
    expect(made).toMatch(/^crowdgate-body-/);
    expect(readdirSync(join(opts.directory, made!))).toEqual([]);
    read.body.release();
    read.body.release();
    expect(spool.bytesHeld).toBe(0);
    await spool.close();
    expect(readdirSync(opts.directory)).toEqual([]);
  });

  it('turns a chunked body into a counted one, and refuses one past maxBodyBytes', async () => {
    const spool = new BodySpool();
    const req = requestOf({ 'transfer-encoding': 'chunked' });
    const reading = spool.read(req, options());
    req.write('abc');
    req.end('def');
    const read = await reading;
    expect(read.kind === 'body' && read.body.length).toBe(6);
    if (read.kind === 'body') read.body.release();
    const big = requestOf({ 'transfer-encoding': 'chunked' });
    const bigReading = spool.read(big, options({ maxBodyBytes: 100_000 }));
    big.write(Buffer.alloc(60_000));
    big.write(Buffer.alloc(60_000));
    expect((await bigReading).kind).toBe('too_large');
    expect(spool.bytesHeld).toBe(0);
  });

  it('streams a declared body the budget has no room for, and refuses a chunked one that outgrows it (upload_buffer_full)', async () => {
    const spool = new BodySpool();
    const opts = options({ maxBytes: 300_000 });
    const held = requestOf({ 'content-length': '200000' });
    const holding = spool.read(held, opts);
    held.end(Buffer.alloc(200_000));
    const first = await holding;
    expect(first.kind).toBe('body');
    // 200 000 held: a declared 200 000 more does not fit, and streams.
    expect((await spool.read(requestOf({ 'content-length': '200000' }), opts)).kind).toBe('stream');
    // A chunked body grows until it does not fit.
    const chunked = requestOf({ 'transfer-encoding': 'chunked' });
    const growing = spool.read(chunked, opts);
    for (let i = 0; i < 4; i++) chunked.write(Buffer.alloc(50_000));
    const refused = await growing;
    expect(refused.kind).toBe('no_room');
    expect(refused.kind === 'no_room' && refused.reason).toMatch(/limits\.requestBuffering\.maxBytes/);
    expect(spool.bytesHeld).toBe(200_000);
    if (first.kind === 'body') first.body.release();
    expect(spool.bytesHeld).toBe(0);
    // With the room back, the same declared body is spooled.
    const again = requestOf({ 'content-length': '200000' });
    const reading = spool.read(again, opts);
    again.end(Buffer.alloc(200_000));
    expect((await reading).kind).toBe('body');
  });

  it('streams rather than fails when the spool directory cannot be used, and says why', async () => {
    const spool = new BodySpool();
    const notADir = join(spoolDir(), 'file');
    writeFileSync(notADir, 'x');
    const read = await spool.read(requestOf({ 'content-length': '100000' }), options({ directory: notADir }));
    expect(read.kind).toBe('stream');
    expect(read.kind === 'stream' && read.unbuffered).toMatch(/ENOTDIR/);
    expect(spool.bytesHeld).toBe(0);
  });

  it('holds of the room only what a body has sent: a connection that declared 500 KB and sent a byte holds nothing (review: a few such held it all)', async () => {
    const spool = new BodySpool();
    const opts = options({ maxBytes: 600_000 });
    const idle = requestOf({ 'content-length': '500000' });
    void spool.read(idle, opts);
    idle.write('x');
    const other = requestOf({ 'content-length': '400000' });
    const reading = spool.read(other, opts);
    other.end(Buffer.alloc(400_000));
    expect((await reading).kind).toBe('body'); // the idle one did not take its 500 000
    expect(spool.bytesHeld).toBe(400_000);
    idle.destroy();
  });

  it('keeps a small chunked body in memory: no file is made for it', async () => {
    const spool = new BodySpool();
    const opts = options();
    const req = requestOf({ 'transfer-encoding': 'chunked' });
    const reading = spool.read(req, opts);
    req.end('tiny');
    const read = await reading;
    expect(read.kind === 'body' && (await text(read.body.stream()))).toBe('tiny');
    expect(readdirSync(opts.directory)).toEqual([]);
  });

  it('counts the bodies it keeps in memory until they are released', async () => {
    const spool = new BodySpool();
    const req = requestOf({ 'content-length': '5' });
    const reading = spool.read(req, options());
    req.end('hello');
    const read = await reading;
    expect(spool.bytesInMemory).toBe(5);
    if (read.kind === 'body') read.body.release();
    read.kind === 'body' && read.body.release(); // idempotent
    expect(spool.bytesInMemory).toBe(0);
  });

  it('spools a small body once the bodies in memory fill memoryBytes, from its start or mid-way, and its bytes come back whole', async () => {
    const spool = new BodySpool();
    const opts = options({ memoryBytes: 50_000 });
    const small = (n: number, fill: number) => {
      const req = requestOf({ 'content-length': String(n) });
      const reading = spool.read(req, opts);
      req.end(Buffer.alloc(n, fill));
      return reading;
    };
    const kept = await small(40_000, 97);
    expect(spool.bytesInMemory).toBe(40_000);
    expect(spool.bytesHeld).toBe(0);
    // 30 000 more do not fit in memory: to a file from the start.
    const filed = await small(30_000, 98);
    expect(filed.kind).toBe('body');
    expect(spool.bytesInMemory).toBe(40_000);
    expect(spool.bytesHeld).toBe(30_000);
    expect(filed.kind === 'body' && (await text(filed.body.stream()))).toBe('b'.repeat(30_000));
    // A chunked one starts in memory and moves to a file when the next bytes do not fit.
    const chunked = requestOf({ 'transfer-encoding': 'chunked' });
    const reading = spool.read(chunked, opts);
    chunked.write(Buffer.alloc(5_000, 99));
    await new Promise((r) => setImmediate(r));
    expect(spool.bytesInMemory).toBe(45_000);
    chunked.end(Buffer.alloc(10_000, 100));
    const moved = await reading;
    expect(moved.kind).toBe('body');
    expect(moved.kind === 'body' && (await text(moved.body.stream()))).toBe('c'.repeat(5_000) + 'd'.repeat(10_000));
    expect(spool.bytesInMemory).toBe(40_000);
    expect(spool.bytesHeld).toBe(45_000);
    for (const r of [kept, filed, moved]) if (r.kind === 'body') r.body.release();
    expect(spool.bytesInMemory).toBe(0);
    expect(spool.bytesHeld).toBe(0);
  });

  it('holds at most memoryBytes for many stalled bodies that each sent almost 64 KiB (HTTP/2 streams): the rest is written to files', async () => {
    const spool = new BodySpool();
    const opts = options({ memoryBytes: 200_000 });
    const stalled = Array.from({ length: 10 }, (_, i) => {
      const req = requestOf({ 'content-length': String(i % 2 === 0 ? BUFFERED_BODY_MAX_BYTES : 1_000_000) });
      const reading = spool.read(req, opts);
      req.write(Buffer.alloc(BUFFERED_BODY_MAX_BYTES - 1));
      return { req, reading };
    });
    const sent = 10 * (BUFFERED_BODY_MAX_BYTES - 1);
    for (let i = 0; i < 100 && (spool.bytesInMemory > opts.memoryBytes || spool.bytesInMemory + spool.bytesHeld < sent); i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(spool.bytesInMemory).toBeLessThanOrEqual(opts.memoryBytes);
    expect(spool.bytesInMemory + spool.bytesHeld).toBeGreaterThanOrEqual(sent);
    for (const s of stalled) s.req.destroy();
    for (const s of stalled) expect((await s.reading).kind).toBe('gone');
    expect(spool.bytesInMemory).toBe(0);
    expect(spool.bytesHeld).toBe(0);
  });

  it('streams a small declared body that neither memory nor the file room can take', async () => {
    const spool = new BodySpool();
    const opts = options({ memoryBytes: 10, maxBytes: 10 });
    expect((await spool.read(requestOf({ 'content-length': '100' }), opts)).kind).toBe('stream');
    expect(spool.bytesInMemory + spool.bytesHeld).toBe(0);
    // With memory's room, a full file room does not matter to it.
    const req = requestOf({ 'content-length': '100' });
    const reading = spool.read(req, options({ maxBytes: 10 }));
    req.end(Buffer.alloc(100));
    expect((await reading).kind).toBe('body');
    // Without memory's room and with a directory that cannot be used, it streams as a large one does.
    const notADir = join(spoolDir(), 'file');
    writeFileSync(notADir, 'x');
    const unbuffered = await spool.read(requestOf({ 'content-length': '100' }), options({ memoryBytes: 10, directory: notADir }));
    expect(unbuffered.kind === 'stream' && unbuffered.unbuffered).toMatch(/ENOTDIR/);
  });

  it('makes its directory again when a temp cleaner removed it', async () => {
    const spool = new BodySpool();
    const opts = options();
    const big = (n: number) => {
      const req = requestOf({ 'content-length': String(n) });
      const reading = spool.read(req, opts);
      req.end(Buffer.alloc(n));
      return reading;
    };
    const first = await big(100_000);
    if (first.kind === 'body') first.body.release();
    for (const d of readdirSync(opts.directory)) rmSync(join(opts.directory, d), { recursive: true, force: true });
    const second = await big(100_000);
    expect(second.kind).toBe('body');
    if (second.kind === 'body') second.body.release();
  });

  it('says gone when the client leaves mid-body, and holds nothing after', async () => {
    const spool = new BodySpool();
    const req = requestOf({ 'content-length': '500000' });
    const reading = spool.read(req, options());
    req.write(Buffer.alloc(100_000));
    req.destroy();
    expect((await reading).kind).toBe('gone');
    expect(spool.bytesHeld).toBe(0);
  });

  it('leaves a body without length, or one already read, to stream', async () => {
    const spool = new BodySpool();
    expect((await spool.read(requestOf({}), options())).kind).toBe('stream');
    expect((await spool.read(requestOf({ 'content-length': '0' }), options())).kind).toBe('stream');
  });
});
