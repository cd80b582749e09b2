/**
 * Opening and closing a node:http listener, for the public and the admin listener alike:
 * listenOn() resolves with the bound address or rejects with the listen error (a port in use),
 * closeNow() cuts every connection and waits for the listener to close.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';

/** `backlog`: the accept queue's length (the kernel caps it at net.core.somaxconn); Node's default, 511, when unset. */
export function listenOn(server: http.Server, host: string, port: number, backlog?: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen({ port, host, ...(backlog === undefined ? {} : { backlog }) }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** The bound address; undefined before listening, after closing, or without a server. */
export function addressOf(server: http.Server | undefined): AddressInfo | undefined {
  return (server?.address() as AddressInfo | null) ?? undefined;
}

/** Cuts every connection and closes the listener; nothing to do when it is not listening. */
export async function closeNow(server: http.Server | undefined): Promise<void> {
  if (!server?.listening) return;
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}
