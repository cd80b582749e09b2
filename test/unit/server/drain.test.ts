import type http from 'node:http';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Drain } from '../../../src/server/drain.js';

const quiet = pino({ level: 'silent' });

/** The three calls drain() makes on the listener, recorded in order. */
function fakeServer() {
  const calls: string[] = [];
  const server = {
    close: (cb: () => void) => {
      calls.push('close');
      setImmediate(cb);
    },
    closeIdleConnections: () => void calls.push('closeIdle'),
    closeAllConnections: () => void calls.push('closeAll'),
  };
  return { calls, server: server as unknown as http.Server };
}

function fakeResponse() {
  const headers: Record<string, string> = {};
  return { headers, res: { setHeader: (k: string, v: string) => void (headers[k] = v) } as unknown as http.ServerResponse };
}

afterEach(() => void vi.useRealTimers());

describe('Drain', () => {
  it('with nothing in flight drains at once', async () => {
    const d = new Drain(quiet);
    const { calls, server } = fakeServer();
    expect(d.isDraining()).toBe(false);
    await expect(d.drain(server, 10_000)).resolves.toEqual({ drained: true, cut: 0 });
    expect(d.isDraining()).toBe(true);
    expect(calls).toEqual(['close', 'closeIdle', 'closeAll']);
  });

  it('waits for the requests in flight to be done, and asks later ones to close their connection', async () => {
    const d = new Drain(quiet);
    const before = fakeResponse();
    d.requestStarted(before.res);
    d.requestStarted(fakeResponse().res);
    expect(before.headers).toEqual({});
    const { server } = fakeServer();
    let settled = false;
    const result = d.drain(server, 10_000).finally(() => void (settled = true));
    const during = fakeResponse();
    d.requestStarted(during.res);
    expect(during.headers).toEqual({ connection: 'close' });
    d.requestDone();
    d.requestDone();
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false); // one still in flight
    d.requestDone();
    await expect(result).resolves.toEqual({ drained: true, cut: 0 });
  });

  it('cuts what is still in flight when the timeout comes first', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    const d = new Drain(quiet);
    d.requestStarted(fakeResponse().res);
    d.requestStarted(fakeResponse().res);
    d.requestDone();
    const { calls, server } = fakeServer();
    const result = d.drain(server, 500);
    await vi.advanceTimersByTimeAsync(499);
    expect(calls).toEqual(['close', 'closeIdle']);
    await vi.advanceTimersByTimeAsync(1);
    await expect(result).resolves.toEqual({ drained: false, cut: 1 });
    expect(calls).toEqual(['close', 'closeIdle', 'closeAll']);
  });

  it('without a listener (never started) still drains', async () => {
    await expect(new Drain(quiet).drain(undefined, 100)).resolves.toEqual({ drained: true, cut: 0 });
  });
});
