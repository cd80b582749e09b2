/**
 * BodySpool on a slow disk: every spool write takes 30 ms after it is issued (a busy disk, or
 * libuv's threadpool saturated), so a client can leave while one is in flight.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    open: async (...args: Parameters<typeof real.open>) => {
      const handle = await real.open(...args);
      const write = handle.write.bind(handle) as (...a: unknown[]) => Promise<unknown>;
      // Issued at once, answered 30 ms later (close() waits for a write in flight).
      Object.assign(handle, {
        write: async (...a: unknown[]) => {
          const done = await write(...a);
          await new Promise((r) => setTimeout(r, 30));
          return done;
        },
      });
      return handle;
    },
  };
});
const { BodySpool, BUFFERED_BODY_MAX_BYTES } = await import('../../../src/origin/request-body.js');

function requestOf(headers: Record<string, string>): IncomingMessage & PassThrough {
  return Object.assign(new PassThrough(), { headers }) as unknown as IncomingMessage & PassThrough;
}
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function options(memoryBytes: number) {
  const directory = mkdtempSync(join(tmpdir(), 'spool-slow-'));
  dirs.push(directory);
  return { maxBodyBytes: 1e8, maxBytes: 1e8, memoryBytes, directory };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('BodySpool on a slow disk', () => {
  it('a client gone while a spool write is in flight gives its bytes back once: the memory cap does not wear away (review)', async () => {
    const spool = new BodySpool();
    const opts = options(200_000);
    for (let i = 0; i < 10; i++) {
      const req = requestOf({ 'content-length': '1000000' });
      const reading = spool.read(req, opts);
      await sleep(5); // its file is open
      req.write(Buffer.alloc(BUFFERED_BODY_MAX_BYTES + 1000)); // past 64 KiB: a write starts
      await sleep(5); // in flight
      req.destroy();
      expect((await reading).kind).toBe('gone');
    }
    await sleep(100);
    expect(spool.bytesInMemory).toBe(0);
    expect(spool.bytesHeld).toBe(0);
    // And the cap still holds: ten stalled small bodies of 60 000 bytes, 200 000 in memory at most.
    const stalled = Array.from({ length: 10 }, () => {
      const req = requestOf({ 'content-length': '60001' });
      const reading = spool.read(req, opts);
      req.write(Buffer.alloc(60_000));
      return { req, reading };
    });
    for (let i = 0; i < 100 && spool.bytesInMemory + spool.bytesHeld < 600_000; i++) await sleep(10);
    await sleep(100);
    expect(spool.bytesInMemory).toBeLessThanOrEqual(200_000);
    expect(spool.bytesHeld).toBeGreaterThan(0);
    for (const s of stalled) s.req.destroy();
    for (const s of stalled) await s.reading;
    await sleep(100);
    expect(spool.bytesInMemory).toBe(0);
    expect(spool.bytesHeld).toBe(0);
  });
});
