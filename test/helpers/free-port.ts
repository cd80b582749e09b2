/**
 * A port free on 127.0.0.1 right now, for a server that cannot listen on port 0 itself (php -S,
 * redis-server, a config file written before the process starts). Another process may take it
 * before it is used: callers that can, retry.
 */
import net from 'node:net';

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
