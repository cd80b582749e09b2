/**
 * The HTTPS listener: TLS with a certificate per site by SNI (certificates.ts), ALPN `h2` and
 * `http/1.1` on one port (node:http2 with `allowHTTP1`), every request handed to the same
 * `onRequest` as the plain listener — so caching, collapsing, admission, logging and metrics
 * are the same code for HTTP/1.1, HTTP/1.1 over TLS and HTTP/2.
 *
 * HTTP/2 requests reach the request path through Node's compatibility API, made to look like
 * HTTP/1.1 where the path reads them (Http2Request below):
 *   - `headers` without pseudo-headers, `host` from `:authority` (RFC 9113 §8.3.1);
 *   - `rawHeaders` without pseudo-headers, so `limits.maxHeadersCount` counts the same fields;
 *   - a body with no Content-Length is marked `Transfer-Encoding: chunked` (what an HTTP/1.1
 *     origin receives anyway), so `limits.maxBodyBytes` is enforced as it streams.
 * Responses (Http2Response) drop the connection-specific fields HTTP/2 forbids (RFC 9113
 * §8.2.2: Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade) instead of
 * Node's once-per-process warning; the raw head writer (server/raw-head.ts) never runs for
 * them (it writes HTTP/1.1 bytes), respond.ts falls back to writeHead. WebSocket upgrades stay
 * HTTP/1.1 (the 'upgrade' event of the HTTP/1.1 fallback).
 *
 * Limits: HTTP/1.1 over TLS gets the plain listener's (head size and count, head, request and
 * keep-alive timeouts, 400/408/431 for malformed requests). HTTP/2 gets the head size as
 * SETTINGS_MAX_HEADER_LIST_SIZE, the header count from the request path (431), an idle timeout
 * of `requestTimeoutMs` per session and per stream (a stream silent that long is cancelled), and
 * MAX_CONCURRENT_STREAMS of `H2_MAX_STREAMS`; a connection that resets most of its streams as
 * they open is closed (PREMATURE_RESET_MIN_STREAMS, rapid reset). The TLS
 * handshake must finish within `headersTimeoutMs`. Connection caps apply to the TCP connection.
 *
 * Owns the TLS/HTTP2 socket level. Certificates are certificates.ts; the request path is
 * server/handle-request.ts.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex, ReadableOptions } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { answerClientError, answerConnect, applyHttp1Limits, BodyWatch, closeQueuedWithSocket, guardConnections, inTurn, upgradeListener, CONNECTIONS_CHECK_MS, type PublicServerOptions } from '../server/http-server.js';
import type { GatewayConfig } from '../config/schema.js';
import type { Certificates } from './certificates.js';

type Limits = GatewayConfig['limits'];

/** Streams one client may have open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
export const H2_MAX_STREAMS = 128;
/**
 * Rapid reset (CVE-2023-44487), as Envoy guards against it: a stream the client resets within
 * PREMATURE_RESET_MS of opening, before its answer ended, is a premature reset; once a
 * connection has opened PREMATURE_RESET_MIN_STREAMS streams, more than half of them reset so,
 * it takes no new stream (GOAWAY ENHANCE_YOUR_CALM) and is closed once those under way end. Reset streams do not count against
 * MAX_CONCURRENT_STREAMS, so one connection opened and reset 5 000 streams in a second, each a
 * request started (a fill, a permit asked for); nghttp2's own limit (a GOAWAY after about 1 000)
 * left the connection open, its frames ignored, for `requestTimeoutMs` (attacker trial). A
 * browser cancels a page's requests as it navigates away, far fewer than that on one connection.
 */
export const PREMATURE_RESET_MS = 1_000;
export const PREMATURE_RESET_MIN_STREAMS = 500;

/**
 * Response fields HTTP/2 forbids (RFC 9113 §8.2.2), every one Node's HTTP/2 refuses: with one in
 * a head, writeHead throws and the stream is never answered.
 */
const H2_FORBIDDEN: ReadonlySet<string> = new Set(['connection', 'http2-settings', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade']);

/** An HTTP/2 request as the request path reads HTTP/1.1 ones (module comment). */
export class Http2Request extends http2.Http2ServerRequest {
  constructor(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, options: ReadableOptions, rawHeaders: readonly string[]) {
    super(stream, headers, options, rawHeaders);
    const clean: http2.IncomingHttpHeaders = {};
    for (const name in headers) if (name.charCodeAt(0) !== 0x3a /* : */) clean[name] = headers[name];
    const authority = headers[':authority'];
    if (authority !== undefined) clean.host = authority;
    if (!stream.endAfterHeaders && clean['content-length'] === undefined) clean['transfer-encoding'] = 'chunked';
    // Cookie crumbs (RFC 9113 §8.2.3: Chrome and Firefox send each cookie as a field of its own)
    // are one field, joined with "; ", as HTTP/1.1 spells them: limits.maxHeadersCount counted
    // each, and a browser with 95 cookies got 431 over HTTP/2 where HTTP/1.1 was answered (review).
    const raw: string[] = [];
    let cookieAt = -1;
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!;
      if (name.charCodeAt(0) === 0x3a) continue;
      if (name === 'cookie') {
        if (cookieAt >= 0) {
          raw[cookieAt + 1] += `; ${rawHeaders[i + 1]!}`;
          continue;
        }
        cookieAt = raw.length;
      }
      raw.push(name, rawHeaders[i + 1]!);
    }
    Object.defineProperty(this, 'headers', { value: clean, writable: true, configurable: true, enumerable: true });
    Object.defineProperty(this, 'rawHeaders', { value: raw, writable: true, configurable: true, enumerable: true });
  }
}

/** An HTTP/2 response that drops the connection-specific fields HTTP/2 forbids. */
export class Http2Response extends http2.Http2ServerResponse {
  override setHeader(name: string, value: number | string | readonly string[]): this {
    if (!H2_FORBIDDEN.has(name.toLowerCase())) super.setHeader(name, value);
    return this;
  }

  override writeHead(statusCode: number, a?: unknown, b?: unknown): this {
    const headers = (b ?? (typeof a === 'object' ? a : undefined)) as http.OutgoingHttpHeaders | Array<unknown> | undefined;
    const clean = headers === undefined ? undefined : withoutForbidden(headers);
    try {
      return clean === undefined ? super.writeHead(statusCode) : super.writeHead(statusCode, clean as http.OutgoingHttpHeaders);
    } catch (err) {
      // A head HTTP/2 refuses (a field it will not carry): nothing went out, but the fields are
      // kept on the response, and the error answer the caller makes next would carry them and
      // be refused too, leaving the stream unanswered. Drop them so that answer goes out.
      // (removeHeader('date') only turns the automatic Date off: a repeated one is replaced.)
      if (!this.headersSent)
        for (const name of this.getHeaderNames()) {
          if (name === 'date') this.setHeader('date', new Date().toUTCString());
          else this.removeHeader(name);
        }
      throw err;
    }
  }
}

function withoutForbidden(headers: http.OutgoingHttpHeaders | Array<unknown>): http.OutgoingHttpHeaders | Array<unknown> {
  if (Array.isArray(headers)) {
    let found = false;
    for (let i = 0; i < headers.length; i += 2) if (typeof headers[i] === 'string' && H2_FORBIDDEN.has((headers[i] as string).toLowerCase())) found = true;
    if (!found) return headers;
    const out: unknown[] = [];
    for (let i = 0; i < headers.length; i += 2) if (!H2_FORBIDDEN.has(String(headers[i]).toLowerCase())) out.push(headers[i], headers[i + 1]);
    return out;
  }
  let found = false;
  for (const name in headers) if (H2_FORBIDDEN.has(name.toLowerCase())) found = true;
  if (!found) return headers;
  const out: http.OutgoingHttpHeaders = {};
  for (const name in headers) if (!H2_FORBIDDEN.has(name.toLowerCase())) out[name] = headers[name];
  return out;
}

export interface SecureServerOptions extends PublicServerOptions {
  certificates: Certificates;
  /** Offer h2 by ALPN (`tls.http2`); false: HTTP/1.1 only. */
  http2: boolean;
}

/** What the gateway needs of the HTTPS listener (the plain one's PublicServer, plus the drain calls http.Server has). */
export interface SecurePublicServer extends Omit<http.Server, 'closeIdleConnections' | 'closeAllConnections'> {
  applyLimits(limits: Limits): void;
  /** Draining: HTTP/2 sessions get a GOAWAY and close once their streams finish; idle HTTP/1.1 connections close. */
  closeIdleConnections(): void;
  /** Cuts every connection, handshaking, HTTP/1.1 or HTTP/2. */
  closeAllConnections(): void;
}

export function createSecurePublicServer(opts: SecureServerOptions): SecurePublicServer {
  let limits = opts.limits;
  const certs = opts.certificates;
  const tlsOptions = {
    ...certs.defaultSecureOptions(),
    honorCipherOrder: true,
    SNICallback: (servername: string, cb: (err: Error | null, ctx?: import('node:tls').SecureContext) => void) => cb(null, certs.contextFor(servername)),
    handshakeTimeout: limits.headersTimeoutMs,
  };
  // HTTP/1.1 over TLS pipelines too; an HTTP/2 stream is never queued (closeQueuedWithSocket skips it).
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    closeQueuedWithSocket(req, res);
    inTurn(req, res, opts.onRequest);
  };
  const server = (
    opts.http2
      ? http2.createSecureServer(
          {
            ...tlsOptions,
            allowHTTP1: true,
            Http2ServerRequest: Http2Request,
            Http2ServerResponse: Http2Response,
            // The head's byte bound is the SETTINGS frame's; its field count is checked by the request path (431).
            settings: { maxHeaderListSize: limits.maxHeaderBytes, maxConcurrentStreams: H2_MAX_STREAMS, enablePush: false },
            // Fields decoded per request, pseudo-fields and cookie crumbs included. Node decodes
            // a head whole before it is counted (431), whatever SETTINGS_MAX_HEADER_LIST_SIZE
            // says: at 2 008 one 5 KB frame referring to a 4 000-byte HPACK table entry 2 000
            // times cost 8 MB and 7 ms (attacker trial). Twice the count a request may have, and
            // room for a browser's whole cookie jar (Chrome keeps 180 a site, each its own field)
            // beside it, so a head a little over gets its 431 and reason; far over, Node resets
            // the stream. Read at start: a raise of limits.maxHeadersCount reaches HTTP/2 after a restart.
            maxHeaderListPairs: Math.max(2 * limits.maxHeadersCount, limits.maxHeadersCount + 200) + 8,
          },
          onRequest as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
        )
      : https.createServer({ ...tlsOptions, ALPNProtocols: ['http/1.1'] }, onRequest)
  ) as unknown as SecurePublicServer & {
    maxHeaderSize?: number;
    requireHostHeader?: boolean;
    insecureHTTPParser?: boolean;
    joinDuplicateHeaders?: boolean;
    connectionsCheckingInterval?: number;
    maxConnections: number;
    setSecureContext(options: object): void;
  };
  // The HTTP/1.1 fallback reads the same settings off the server object as http.Server does.
  server.maxHeaderSize = limits.maxHeaderBytes;
  server.requireHostHeader = false; // the request path answers a missing Host (400 bad_request, logged)
  server.insecureHTTPParser = false;
  server.joinDuplicateHeaders = false;
  server.connectionsCheckingInterval = CONNECTIONS_CHECK_MS;
  const apply = (next: Limits) => {
    limits = next;
    applyHttp1Limits(server, next);
    // HTTP/2 sessions (and idle HTTP/1.1 sockets) with no activity for this long are closed.
    server.setTimeout(next.requestTimeoutMs);
  };
  apply(limits);
  Object.defineProperty(server, 'applyLimits', { value: apply });
  certs.onChange(() => server.setSecureContext(certs.defaultSecureOptions()));

  guardConnections(server as unknown as import('node:net').Server, opts, () => limits);
  const sockets = new Set<Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  if (opts.http2) {
    const h2 = server as unknown as http2.Http2SecureServer;
    h2.on('session', (session) => {
      sessions.add(session);
      // The first request head must arrive within headersTimeoutMs, as on HTTP/1.1: a session
      // that opened and sent no complete HEADERS (silent, or trickling CONTINUATION frames)
      // held its connection for requestTimeoutMs (60 s), six times the slowloris guard.
      const firstHead = setTimeout(() => {
        if (!session.destroyed) session.destroy();
      }, limits.headersTimeoutMs);
      firstHead.unref();
      session.once('stream', () => clearTimeout(firstHead));
      let opened = 0;
      let premature = 0;
      let closing = false;
      session.on('stream', (stream: http2.ServerHttp2Stream) => {
        opened++;
        const at = performance.now();
        // 'aborted': the client reset the stream before its answer ended.
        stream.once('aborted', () => {
          if (performance.now() - at > PREMATURE_RESET_MS) return;
          premature++;
          if (opened >= PREMATURE_RESET_MIN_STREAMS && premature * 2 > opened && !closing && !session.destroyed) {
            closing = true;
            opts.onConnectionRefused?.('rapid_reset');
            opts.logger.warn({ peer: session.socket?.remoteAddress, streams: opened, resets: premature }, 'HTTP/2 connection closed: most of its streams reset as they opened (rapid reset)');
            // No new stream, and the connection closed once the streams under way end: the
            // requests of a visitor whose browser cancelled many are answered, not cut.
            session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
            session.close();
          }
        });
      });
      session.once('close', () => {
        clearTimeout(firstHead);
        sessions.delete(session);
      });
    });
    h2.on('sessionError', (err) => opts.logger.debug({ err }, 'http2 session error'));
    // A stream silent for requestTimeoutMs (a body trickled in, or never finished) is cancelled,
    // while its connection may stay busy with other streams (the session timeout would not fire).
    h2.on('stream', (stream) => stream.setTimeout(limits.requestTimeoutMs, () => stream.close(http2.constants.NGHTTP2_CANCEL)));
  }
  server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
    opts.logger.debug({ err: err.message, peer: socket.remoteAddress }, 'TLS handshake failed');
  });
  // A body read past the parser an 'upgrade' detached (an h2c offer with a body) is timed by its
  // silence as the plain listener's are: no socket timeout watches it there (review: one that
  // stopped held its connection for good).
  const bodies = new BodyWatch(() => limits.requestTimeoutMs);
  server.once('close', () => bodies.stop());
  server.on('upgrade', upgradeListener(opts, { watchBody: (req, res) => bodies.watch(req, res), sendTimeoutMs: () => limits.sendTimeoutMs }));
  server.on('connect', (req: http.IncomingMessage, socket: Duplex | http.ServerResponse) => answerConnect(opts.logger, req, socket));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(opts, err, socket));

  const closeIdleH1 = http.Server.prototype.closeIdleConnections;
  Object.defineProperty(server, 'closeIdleConnections', {
    value: () => {
      for (const session of sessions) session.close();
      // The HTTP/1.1 fallback tracks its connections as http.Server does (Node sets this up for allowHTTP1).
      try {
        closeIdleH1.call(server as unknown as http.Server);
      } catch {
        /* no HTTP/1.1 connection tracking on this Node: they close at closeAllConnections */
      }
    },
  });
  Object.defineProperty(server, 'closeAllConnections', {
    value: () => {
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
  });
  return server;
}
