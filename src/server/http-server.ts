/**
 * node:http glue for the public listener: size limits and timeouts against slow or hostile
 * clients, and a clientError handler so malformed requests get a 400/408/431 and never reach
 * (or crash) the request path. Owns the socket-level rules; handle-request.ts owns the rest.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { GatewayConfig } from '../config/schema.js';

export interface PublicServerOptions {
  limits: GatewayConfig['limits'];
  logger: Logger;
  onRequest(req: http.IncomingMessage, res: http.ServerResponse): void;
  onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
}

export function createPublicServer(opts: PublicServerOptions): http.Server {
  const { limits } = opts;
  const server = http.createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes, // larger heads: HPE_HEADER_OVERFLOW -> 431 below
      headersTimeout: limits.headersTimeoutMs, // slow-loris: the whole head within this
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      requireHostHeader: true,
      insecureHTTPParser: false, // llhttp strict: CL+TE, bad chunking, bare LF are refused
      joinDuplicateHeaders: false,
    },
    opts.onRequest,
  );
  // One more than allowed, so handle-request can tell "too many" (Node silently truncates).
  server.maxHeadersCount = limits.maxHeadersCount + 1;
  server.on('upgrade', opts.onUpgrade);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, text] =
      code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large']
        : code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT'
          ? [408, 'Request Timeout']
          : [400, 'Bad Request'];
    opts.logger.debug({ code, status }, 'malformed request refused');
    const body = `${status} ${text}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
  });
  return server;
}
