import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { addressOf, closeNow, listenOn } from '../../../src/server/listen.js';

describe('listenOn, addressOf, closeNow', () => {
  it('resolves with the bound address, and closes with an open connection cut', async () => {
    const server = http.createServer((_req, res) => res.end('ok'));
    expect(addressOf(server)).toBeUndefined();
    const addr = await listenOn(server, '127.0.0.1', 0);
    expect(addr.port).toBeGreaterThan(0);
    expect(addressOf(server)).toEqual(addr);
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((r) => http.get({ port: addr.port, host: '127.0.0.1', agent }, (res) => res.resume().on('end', r)));
    await closeNow(server); // the kept-alive connection would hold a plain close() open
    expect(server.listening).toBe(false);
    expect(addressOf(server)).toBeUndefined();
    await closeNow(server); // not listening: nothing to do
    await closeNow(undefined);
    agent.destroy();
  });

  it('rejects with the listen error when the port is taken, and leaves no error listener behind', async () => {
    const first = http.createServer();
    const { port } = await listenOn(first, '127.0.0.1', 0);
    const second = http.createServer();
    await expect(listenOn(second, '127.0.0.1', port)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const ok = http.createServer();
    await listenOn(ok, '127.0.0.1', 0);
    expect(ok.listenerCount('error')).toBe(0);
    await closeNow(first);
    await closeNow(ok);
  });
});
