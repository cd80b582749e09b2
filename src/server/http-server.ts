/**
 * node:http glue for the public listener: size limits and timeouts against slow or hostile
 * clients, and a clientError handler so malformed requests get a 400/408/431 and never reach
 * (or crash) the request path. Owns the socket-level rules; handle-request.ts owns the rest.
 */
import http from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { GatewayConfig } from '../config/schema.js';
import type { ErrorCode } from '../errors.js';

type Limits = GatewayConfig['limits'];

/** A request Node's parser refused before the request path saw it. */
export interface ClientRefusal {
  status: 400 | 431;
  code: Extract<ErrorCode, 'bad_request' | 'headers_too_large'>;
  /** The parser's own code (HPE_HEADER_OVERFLOW, HPE_INVALID_HEADER_TOKEN, ...). */
  parserCode: string;
  peer: string | undefined;
}

export interface PublicServerOptions {
  limits: Limits;
  logger: Logger;
  onRequest(req: http.IncomingMessage, res: http.ServerResponse): void;
  onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /**
   * A connection closed at once by a cap (`limits.maxConnections` or `maxConnectionsPerClient`),
   * or an HTTP/2 connection closed for resetting most of its streams as they opened (`rapid_reset`).
   */
  onConnectionRefused?(reason: 'max_connections' | 'per_client' | 'rapid_reset'): void;
  /** A request the HTTP parser refused (400 or 431): counted and logged like any answer. */
  onClientError?(refusal: ClientRefusal): void;
  /** Peers exempt from `maxConnectionsPerClient` (trusted proxies carry many clients). */
  isExemptPeer?(address: string): boolean;
  /** Open client connections changed by `delta` (+1 accepted, -1 closed). */
  onConnectionCount?(delta: 1 | -1): void;
}

/**
 * How often Node checks the head and request timeouts. Its default (30 s) left a connection
 * that never sends a byte open for up to 30 s past `headersTimeoutMs`; at 1 s it closes (with
 * 408) within a second of it.
 */
export const CONNECTIONS_CHECK_MS = 1_000;

export interface PublicServer extends http.Server {
  /** Applies the live `limits` keys (timeouts, connection caps) after a reload. */
  applyLimits(limits: Limits): void;
}

export function createPublicServer(opts: PublicServerOptions): PublicServer {
  let limits = opts.limits;
  const server = http.createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes, // larger heads: HPE_HEADER_OVERFLOW -> 431 below
      headersTimeout: limits.headersTimeoutMs, // slow-loris: the whole head within this
      requestTimeout: 0, // a body is timed by its silence (BodyWatch), not as a whole
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: CONNECTIONS_CHECK_MS,
      requireHostHeader: false, // the request path answers a missing Host (400 bad_request, logged)
      insecureHTTPParser: false, // llhttp strict: CL+TE, bad chunking, bare LF are refused
      joinDuplicateHeaders: false,
    },
    (req, res) => {
      bodies.watch(req, res);
      closeQueuedWithSocket(req, res);
      inTurn(req, res, opts.onRequest);
    },
  ) as PublicServer;
  const bodies = new BodyWatch(() => limits.requestTimeoutMs);
  server.once('close', () => bodies.stop());
  const apply = (next: Limits) => {
    limits = next;
    applyHttp1Limits(server, next);
    server.setTimeout(next.sendTimeoutMs);
  };
  apply(limits);
  Object.defineProperty(server, 'applyLimits', { value: apply });
  // A socket with no traffic either way for sendTimeoutMs: closed only when it has bytes
  // waiting to be sent, a client that stopped reading (slow-read: 50 connections that each
  // asked for a 4 MB cached file and read nothing held every connection slot for as long as
  // they liked; attacker trial). One waiting on the origin, or on a quiet stream, stays: the
  // origin's own timeouts bound those. (The HTTPS listener closes any socket idle for
  // requestTimeoutMs.) A listener here keeps Node from closing idle sockets itself, so one
  // with no response in hand (a keep-alive connection past keepAliveTimeoutMs, which Node
  // times the same way) is closed here, as Node would.
  server.on('timeout', (socket: Socket) => {
    if (answerInFlight(socket) === undefined || socket.writableLength > 0) socket.destroy();
  });
  guardConnections(server, opts, () => limits);
  // Sockets 'upgrade' took from Node's connection list (WebSocket tunnels, requests served
  // after an ignored Upgrade): closeAllConnections() (the drain's cut, close) must cut them
  // too, or server.close() waits for them (the TLS listener tracks every socket itself).
  const taken = new Set<Socket>();
  server.on(
    'upgrade',
    upgradeListener(opts, {
      onTaken: (socket) => {
        taken.add(socket);
        socket.once('close', () => taken.delete(socket));
      },
      watchBody: (req, res) => bodies.watch(req, res),
      sendTimeoutMs: () => limits.sendTimeoutMs,
    }),
  );
  const closeAll = http.Server.prototype.closeAllConnections;
  Object.defineProperty(server, 'closeAllConnections', {
    value: () => {
      closeAll.call(server);
      // With an error: a WebSocket tunnel's proxy (http-proxy) ends the origin side on one,
      // and on nothing else (a plain destroy left the origin's socket open).
      for (const socket of taken) socket.destroy(CUT);
    },
  });
  server.on('connect', (req: http.IncomingMessage, socket: Duplex) => answerConnect(opts.logger, req, socket));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(opts, err, socket));
  return server;
}

/**
 * A pipelined request's response waits in Node's queue until the ones before it are sent (it
 * has no socket yet). When the client closes the connection meanwhile, Node destroys the
 * request but never gives that response a socket, so it never emits 'close': the request path
 * never heard that it was over (the drain's count of requests in flight grew by one per such
 * request, and every shutdown then waited its whole drainTimeoutMs: attacker trial, 20
 * connections each closed with two requests pipelined), and neither did what it holds until
 * 'close' (an origin permit's wait, a forward). Here such a response emits 'close' once its
 * socket is gone, unless Node gave it the socket by then (it then emits 'close' itself: both
 * made the request path count it twice; attacker trial). The response Node is writing has the
 * socket and closes with it; nothing is added for it.
 */
export function closeQueuedWithSocket(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (res.socket !== null || !(res instanceof http.ServerResponse)) return;
  const socket = req.socket;
  // One listener per connection, not one per queued response (500 pipelined requests made
  // Node warn of a listener leak on every such connection).
  let queued = queuedResponses.get(socket);
  if (queued === undefined) {
    const responses = new Set<http.ServerResponse>();
    queued = responses;
    queuedResponses.set(socket, responses);
    socket.once('close', () => {
      // Given the socket meanwhile (the answers before it went out), Node closes it itself: once.
      for (const r of responses) if (r.socket === null && !r.writableFinished) r.emit('close');
      responses.clear();
    });
  }
  const responses = queued;
  responses.add(res);
  res.once('close', () => responses.delete(res));
}

/**
 * Hands a request to the request path once it is the connection's to answer, and never when an
 * answer before it on the connection closes the connection (RFC 9112 §9.6: a server that sends
 * `close` must not process further requests). Node's parser hands over a request pipelined
 * behind one still being answered at once, its response queued; when the answer ahead then
 * said `Connection: close` (an HTTP/1.0 client's `keep-alive` answered without a length, an
 * error page, a drain), Node closed the connection after it, but the request behind it had
 * already been sent on: a pipelined DELETE reached the origin, its answer written nowhere
 * (attacker trial). (A request that itself says `Connection: close` ends the parsing: nothing
 * after it is handed over.) An HTTP/1.0 request with Transfer-Encoding is answered with
 * `Connection: close` (RFC 9112 §6.1: its framing is taken as faulty), so nothing pipelined
 * behind it is processed either. HTTP/2 streams are never queued: handed over at once.
 */
export function inTurn(req: http.IncomingMessage, res: http.ServerResponse, handle: (req: http.IncomingMessage, res: http.ServerResponse) => void): void {
  if (!(res instanceof http.ServerResponse)) return handle(req, res);
  if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0 && req.headers['transfer-encoding'] !== undefined) res.shouldKeepAlive = false;
  if (res.socket !== null) return handle(req, res);
  const socket = req.socket;
  // One queue and one 'close' listener per connection, one 'finish' listener on the answer in
  // flight: 500 pipelined requests must not each listen (Node warns of a leak past 10).
  let queue = waitingTurn.get(socket);
  if (queue === undefined) {
    const created: WaitingRequest[] = [];
    queue = created;
    waitingTurn.set(socket, created);
    socket.once('close', () => void created.splice(0)); // never taken up: their responses close with the socket
  }
  queue.push({ req, res, handle });
  if (queue.length === 1) takeUpInTurn(socket, queue);
}

interface WaitingRequest {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  handle(req: http.IncomingMessage, res: http.ServerResponse): void;
}
/** The requests of each connection waiting for their turn (inTurn), in arrival order. */
const waitingTurn = new WeakMap<Duplex, WaitingRequest[]>();

/**
 * Hands over the request Node has given the socket to, if any (answers go out in order, so only
 * the first waiting can have it), then waits for the answer holding the socket to finish. When
 * that answer closes the connection (Node's own mark), or the connection is gone, the requests
 * still waiting are never processed.
 */
function takeUpInTurn(socket: Socket, queue: WaitingRequest[]): void {
  while (queue.length > 0 && queue[0]!.res.socket !== null) {
    const next = queue.shift()!;
    next.handle(next.req, next.res);
  }
  if (queue.length === 0) return;
  const ahead = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
  if (socket.destroyed || ahead === undefined || ahead === null || (ahead as http.ServerResponse & { _last?: boolean })._last === true) {
    queue.splice(0);
    return;
  }
  // After Node's own 'finish' listener has handed the socket on (or closed it).
  ahead.once('finish', () => process.nextTick(() => takeUpInTurn(socket, queue)));
}

/** The responses of each connection waiting in Node's queue (closeQueuedWithSocket). */
const queuedResponses = new WeakMap<Duplex, Set<http.ServerResponse>>();

/** Why closeAllConnections() destroyed a socket the 'upgrade' event took. */
const CUT = Object.assign(new Error('connection cut: the listener is closing'), { code: 'ERR_CROWDGATE_CUT' });

/**
 * The 'upgrade' listener of both public listeners. Once anything listens for 'upgrade', Node
 * hands it every request that carries `Connection: upgrade` with an `Upgrade` field, and the
 * connection's HTTP parser is gone. Only WebSocket is tunnelled (opts.onUpgrade). Any other
 * protocol a client offers is ignored, as RFC 9110 §7.8 allows, and the request is answered as
 * an ordinary one (its Upgrade and Connection fields are hop-by-hop: never sent on), on a
 * connection closed afterwards: `curl --http2 http://…` offers `h2c` on every request, and all
 * of them got 400 (nginx, Varnish and Caddy answer them over HTTP/1.1). A body of a declared
 * length is read from the socket past the parser (withBody): `curl --http2 -d …` (a form post,
 * a login) got 400 where every origin answered it (differential trial). A chunked one cannot
 * be read without a parser: 400, with a page saying why. `watchBody` times a body's silence as
 * the listener times any other (BodyWatch): past the detached parser no other timeout watches
 * the socket, and without it a body that stopped held its connection for good (review). A
 * body asked with `Expect: 100-continue` is told to come (Node does not, past 'upgrade').
 * `sendTimeoutMs` cuts the answer's connection when its client stops reading for that long
 * (limits.sendTimeoutMs): Node drops its own socket timeout at 'upgrade', and 20 clients each
 * asking for a 4 MB page with an h2c offer and reading nothing held their connections for
 * good (attacker trial; 100 of them filled a maxConnections of 100).
 */
export function upgradeListener(
  opts: Pick<PublicServerOptions, 'onRequest' | 'onUpgrade'>,
  extra: UpgradeWatch = {},
): (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void {
  const { onTaken, ...watch } = extra;
  return (req, socket, head) => {
    onTaken?.(socket as Socket);
    socket.on('error', () => socket.destroy());
    // From here on, an answer before this request (pipelined ahead of it) and its own are
    // watched here: Node dropped its socket timeout and its drain listener when it handed
    // the socket over (a slow reader of an ordinary answer with an h2c offer pipelined behind
    // it was held for good too: attacker trial).
    if (String(req.headers.upgrade ?? '').trim().toLowerCase() !== 'websocket') watchAnswers(socket as Socket, watch.sendTimeoutMs?.() ?? 0);
    afterEarlierResponses(socket as Socket, () => {
      try {
        takeUpgrade(opts, req, socket, head, watch);
      } catch (err) {
        socket.destroy(); // no parser and no timeout watch this connection any more: never leave it open
        throw err;
      }
    });
  };
}

/**
 * Runs `then` once no answer to an earlier request on the connection holds the socket. A
 * request pipelined behind one still being answered reaches 'upgrade' while Node's response to
 * the earlier one still writes there: a response assigned to the socket then threw
 * (ERR_HTTP_SOCKET_ASSIGNED, an uncaught exception), left the request unanswered and the
 * connection open past every timeout (the parser that enforced them is gone), and a refusal or
 * a WebSocket handshake written at once would have cut into the earlier answer (an attacker
 * trial). Node's own 'finish' listener, which hands the socket to the next answer, runs first.
 */
function afterEarlierResponses(socket: Socket, then: () => void): void {
  const holder = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
  if (!holder) {
    // An earlier answer that closed the connection (`Connection: close`, an HTTP/1.0 request's
    // framing taken as faulty) ends what was pipelined behind it, as inTurn does for ordinary
    // requests (RFC 9112 §9.6): an h2c-offering DELETE behind such an answer reached the
    // origin, answered nowhere (attacker trial).
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    then();
    return;
  }
  if (socket.destroyed) return;
  const onFinish = () => {
    socket.off('close', onClose);
    // Node closes the connection after an answer marked last: nothing behind it is taken up.
    if ((holder as http.ServerResponse & { _last?: boolean })._last === true) {
      socket.destroySoon();
      return;
    }
    process.nextTick(() => afterEarlierResponses(socket, then));
  };
  const onClose = () => holder.off('finish', onFinish);
  holder.once('finish', onFinish);
  socket.once('close', onClose);
}

function takeUpgrade(
  opts: Pick<PublicServerOptions, 'onRequest' | 'onUpgrade'>,
  req: http.IncomingMessage,
  socket: Duplex,
  head: Buffer,
  watch: Omit<UpgradeWatch, 'onTaken'>,
): void {
  if (String(req.headers.upgrade ?? '').trim().toLowerCase() === 'websocket') {
    opts.onUpgrade(req, socket, head);
    return;
  }
  // llhttp has checked Content-Length (digits, one value, not beside Transfer-Encoding).
  const length = Number(req.headers['content-length'] ?? 0);
  const refusal =
    req.headers['transfer-encoding'] !== undefined
      ? 'A request that asks to upgrade the connection cannot carry a chunked body here: send it with a Content-Length, or without the Upgrade offer.\n'
      : req.headers.host === undefined && req.httpVersion !== '1.0' // what the request path does for the others
        ? 'An HTTP/1.1 request needs a Host header.\n'
        : undefined;
  if (refusal !== undefined) {
    socket.end(`HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(refusal)}\r\n\r\n${refusal}`, () => socket.destroy());
    return;
  }
  const request = length > 0 ? withBody(req, socket as Socket, head, length) : req;
  // Node answers `Expect: 100-continue` itself for a request it parses, not for one it handed
  // to 'upgrade': curl --http2 waited its 1 s for it on every upload over 1 MB (review).
  if (length > 0 && String(req.headers.expect ?? '').trim().toLowerCase() === '100-continue' && head.length < length) socket.write('HTTP/1.1 100 Continue\r\n\r\n');
  // The parser that noticed a client leaving is gone: read on (bytes past this request are
  // dropped unparsed), and a client that ends its side has left, as Node's server treats it.
  socket.on('end', () => socket.destroy());
  socket.resume();
  // What Node's own server does per request (a ServerResponse on the socket, 'close' after
  // 'finish'), for one response on a connection that then ends.
  const res = new http.ServerResponse(request);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  res.once('finish', () => {
    res.detachSocket(socket as Socket);
    request.resume();
    process.nextTick(() => res.emit('close'));
    (socket as Socket).destroySoon(); // flushed, then closed: never left half-open
  });
  if (request !== req) watch.watchBody?.(request, res);
  opts.onRequest(request, res);
}

/**
 * What Node's server does for the answers on a connection, for one it handed to 'upgrade'
 * (which drops its listeners): a client that stops reading (bytes waiting to be sent) for
 * `sendTimeoutMs` is cut, as the listener's own timeout does for every other answer (one
 * waiting on the origin stays); and the answer writing there hears its socket drain. Without
 * it, an answer streamed through a pipe (a pass-through download) waited for a 'drain' that
 * never came after its first full buffer, stalled for good with nothing left to send (found
 * while fixing the slow read: attacker trial).
 */
function watchAnswers(socket: Socket, sendTimeoutMs: number): void {
  if (sendTimeoutMs > 0) {
    socket.setTimeout(sendTimeoutMs);
    socket.on('timeout', () => {
      if (socket.writableLength > 0) socket.destroy();
    });
  }
  socket.on('drain', () => {
    const answer = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (answer && !answer.writableFinished && !answer.destroyed) answer.emit('drain');
  });
}

/** What the listener gives its 'upgrade' handler (upgradeListener). */
export interface UpgradeWatch {
  /** The socket was taken from Node's connection list. */
  onTaken?: (socket: Socket) => void;
  /** Times a request body's silence (BodyWatch.watch). */
  watchBody?: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  /** limits.sendTimeoutMs, read when a request is taken up. */
  sendTimeoutMs?: () => number;
}

/**
 * The request Node handed to 'upgrade' (its stream already ended: the parser stopped at the
 * head), again with its body: the `length` bytes that follow the head, `head` first, then
 * the socket's, with back-pressure. A client that leaves before the last byte aborts it as
 * Node's own requests are aborted (ECONNRESET); bytes past the body are not read (the
 * connection closes after the answer).
 */
function withBody(req: http.IncomingMessage, socket: Socket, head: Buffer, length: number): http.IncomingMessage {
  const body = new http.IncomingMessage(socket);
  body.method = req.method;
  body.url = req.url;
  body.httpVersion = req.httpVersion;
  body.httpVersionMajor = req.httpVersionMajor;
  body.httpVersionMinor = req.httpVersionMinor;
  body.headers = req.headers;
  body.rawHeaders = req.rawHeaders;
  let remaining = length;
  const finish = (): void => {
    socket.off('data', onData);
    socket.off('close', onClose);
  };
  const onData = (chunk: Buffer): void => {
    if (remaining <= 0) return;
    const part = chunk.length > remaining ? chunk.subarray(0, remaining) : chunk;
    remaining -= part.length;
    const more = body.push(part);
    if (remaining === 0) {
      finish();
      body.complete = true;
      body.push(null);
    } else if (!more) socket.pause();
  };
  const onClose = (): void => {
    finish();
    if (remaining > 0 && !body.destroyed) {
      body.emit('aborted');
      body.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
    }
  };
  body._read = () => {
    if (remaining > 0) socket.resume();
  };
  socket.on('data', onData);
  socket.once('close', onClose);
  if (head.length > 0) onData(head);
  return body;
}

/** The HTTP/1.1 parser's limits, on the plain listener and the HTTPS listener's HTTP/1.1 fallback alike. */
export function applyHttp1Limits(
  server: Pick<http.Server, 'headersTimeout' | 'requestTimeout' | 'keepAliveTimeout' | 'maxHeadersCount' | 'maxConnections'>,
  next: Limits,
): void {
  server.headersTimeout = next.headersTimeoutMs;
  // A body is timed by its silence, never as a whole (nginx's client_body_timeout): the plain
  // listener's BodyWatch, the HTTPS listener's socket idle timeout. Node's whole-request cap
  // cut every upload longer than 60 s (a 3 MB photo from a phone at 40 KB/s got 408).
  server.requestTimeout = 0;
  server.keepAliveTimeout = next.keepAliveTimeoutMs;
  // One more than allowed, so handle-request can tell "too many" (Node silently truncates).
  server.maxHeadersCount = next.maxHeadersCount + 1;
  // Node closes connections past maxConnections before 'connection' (and says 'drop').
  server.maxConnections = next.maxConnections === 0 ? Infinity : next.maxConnections;
}

/**
 * CONNECT: crowdgate is not a forward proxy. Node would drop the connection without a word; the
 * usual sender is MediaWiki purging an `https://` URL through `$wgCdnServers` (its HTTP client
 * tunnels https through a proxy), so the answer and the log line say what to change.
 */
export function answerConnect(logger: Logger, req: http.IncomingMessage, socket: Duplex | http.ServerResponse): void {
  const hint = 'crowdgate is not a forward proxy; to PURGE, send PURGE with an http:// URL (MediaWiki on https: set $wgInternalServer to its http:// URL)';
  logger.info({ client: req.socket.remoteAddress, target: req.url, status: 405 }, `CONNECT refused: ${hint}`);
  const body = `405 Method Not Allowed: ${hint}\n`;
  if ('writeHead' in socket) {
    // An HTTP/2 CONNECT (RFC 9113 §8.5) comes with a response object, not a socket: a 2xx there
    // would mean "tunnel established".
    socket.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    socket.end(body);
    return;
  }
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(
    `HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/**
 * The connection caps and counts, on a plain or a TLS listener alike: `limits.maxConnections`
 * (Node closes the excess before 'connection' and says 'drop'), `maxConnectionsPerClient`
 * (closed here, before any byte is read, so before a TLS handshake costs anything).
 */
export function guardConnections(server: NetServer, opts: PublicServerOptions, limitsNow: () => Limits): void {
  const byPeer = new Map<string, number>();
  server.on('drop', () => opts.onConnectionRefused?.('max_connections'));
  server.on('connection', (socket: Socket) => {
    opts.onConnectionCount?.(1);
    socket.once('close', () => opts.onConnectionCount?.(-1));
    const cap = limitsNow().maxConnectionsPerClient;
    const peer = socket.remoteAddress;
    if (cap === 0 || peer === undefined || opts.isExemptPeer?.(peer)) return;
    const open = byPeer.get(peer) ?? 0;
    if (open >= cap) {
      opts.onConnectionRefused?.('per_client');
      socket.destroy();
      return;
    }
    byPeer.set(peer, open + 1);
    socket.once('close', () => {
      const left = (byPeer.get(peer) ?? 1) - 1;
      if (left <= 0) byPeer.delete(peer);
      else byPeer.set(peer, left);
    });
  });
}

/**
 * Connections whose last answer the request path ended with `Connection: close` because the
 * request's body could not be framed (an unsupported transfer coding): what the parser makes
 * of the bytes after it is that body, dropped with the connection, never answered as a request
 * of its own (a 400 after the 501: attacker trial).
 */
const closingAfterAnswer = new WeakSet<Duplex>();

/** The request path answers this request with `Connection: close`; bytes after it are not a request. */
export function closeAfterAnswer(req: http.IncomingMessage): void {
  closingAfterAnswer.add(req.socket);
}

/**
 * A TLS ClientHello sent to the plain-HTTP listener (record type 22, version 3.x): WordPress's
 * HTTPS check does it, and the access log read `400 bad_request HPE_INVALID_METHOD` with method
 * `-`, which did not say what had happened (WordPress trial).
 */
function isTlsHandshake(err: NodeJS.ErrnoException): boolean {
  const raw = (err as { rawPacket?: unknown }).rawPacket;
  return Buffer.isBuffer(raw) && raw.length >= 2 && raw[0] === 0x16 && raw[1] === 0x03;
}

/**
 * A malformed HTTP/1.1 request (the parser's error): 400, 408 or 431 and the connection closed.
 * A 400 or 431 carries its catalogue code in X-Crowdgate-Error and is counted and logged as an
 * answer (opts.onClientError): a visitor whose cookies grew past `limits.maxHeaderBytes` was
 * refused with no trace (observability trial). A 408 is not: most are connections that never
 * sent a request (a browser's preconnect), which nginx does not log either.
 */
export function answerClientError(
  opts: Pick<PublicServerOptions, 'logger' | 'onClientError'>,
  err: NodeJS.ErrnoException,
  socket: Duplex,
): void {
  const code = err.code ?? '';
  if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
    socket.destroy();
    return;
  }
  // Bytes after a request that said `Connection: close` are dropped, as nginx does: the answer
  // to that request is the last on the connection, and it closes after it. A 400 written here
  // replaced the answer to a POST the origin had already executed (attacker trial).
  // A client that ended its side in the middle of a request already handed over (an upload cut
  // short): that request is counted and answered (or cut) by the request path; no second
  // answer, count or access line for it (review).
  if (code === 'HPE_INVALID_EOF_STATE' && hasAnswerInFlight(socket)) {
    socket.destroy();
    return;
  }
  if (code === 'HPE_CLOSED_CONNECTION' || closingAfterAnswer.has(socket)) {
    opts.logger.debug({ code }, 'bytes after Connection: close dropped');
    afterAnswerInFlight(socket, () => socket.end());
    return;
  }
  const timeout = code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_HTTP_HEADERS_TIMEOUT';
  const [status, text] = code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large'] : timeout ? [408, 'Request Timeout'] : [400, 'Bad Request'];
  opts.logger.debug({ code, status }, 'malformed request refused');
  let errorHeader = '';
  if (status !== 408) {
    const refusal: ClientRefusal = {
      status: status as 400 | 431,
      code: status === 431 ? 'headers_too_large' : 'bad_request',
      parserCode: isTlsHandshake(err) ? 'tls_handshake_on_plain_http' : code,
      peer: (socket as Socket).remoteAddress,
    };
    errorHeader = `X-Crowdgate-Error: ${refusal.code}\r\n`;
    try {
      opts.onClientError?.(refusal);
    } catch (hookErr) {
      opts.logger.warn({ err: hookErr }, 'onClientError threw');
    }
  }
  const body = `${status} ${text}\n`;
  // A malformed request pipelined behind one still being answered is refused after that answer,
  // never in its place. A malformed body of the request in flight (a bad chunk size) is that
  // request's own fault: refused at once (closing the connection cuts its upstream request),
  // unless its answer has begun.
  const inFlight = answerInFlight(socket);
  const ownBody = inFlight !== undefined && !inFlight.req.complete;
  if (ownBody && inFlight.headersSent) return void socket.destroy();
  // The body of the request in flight did not arrive within requestTimeoutMs (a slow upload):
  // answered through that request's own response, so it is counted, logged and labelled as
  // the gateway's 408 (it was logged as a client that gave up, status 0; new-user trial).
  if (ownBody && timeout) return answerBodyTimeout(inFlight, socket);
  const refuse = ownBody ? (then: () => void) => then() : (then: () => void) => afterAnswerInFlight(socket, then);
  refuse(() => {
    if (!socket.writable) return void socket.destroy();
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\n${errorHeader}Content-Length: ${body.length}\r\n\r\n${body}`,
    );
  });
}

/**
 * Request bodies on their way in, each answered 408 `request_timeout` once its client has sent
 * nothing for `limits.requestTimeoutMs` (nginx's client_body_timeout). Silence is the
 * client's: a body held back by the gateway itself (its reader paused, bytes waiting in the
 * request's buffer: a spool writing, an origin reading slowly) is not silence. Checked every
 * CONNECTIONS_CHECK_MS while a body is arriving.
 */
export class BodyWatch {
  private readonly arriving = new Map<http.IncomingMessage, { res: http.ServerResponse; bytes: number; since: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly timeoutMs: () => number) {}

  watch(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.complete || !hasRequestBody(req)) return;
    const socket = req.socket;
    this.arriving.set(req, { res, bytes: socket.bytesRead, since: performance.now() });
    const done = () => this.arriving.delete(req);
    req.once('end', done);
    res.once('close', done);
    this.timer ??= setInterval(() => this.check(), CONNECTIONS_CHECK_MS).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.arriving.clear();
  }

  private check(): void {
    const now = performance.now();
    const timeoutMs = this.timeoutMs();
    for (const [req, body] of this.arriving) {
      const socket = req.socket;
      if (req.complete || socket.destroyed) {
        this.arriving.delete(req);
        continue;
      }
      if (socket.bytesRead !== body.bytes || req.readableLength > 0) {
        body.bytes = socket.bytesRead;
        body.since = now;
        continue;
      }
      if (now - body.since < timeoutMs) continue;
      this.arriving.delete(req);
      // Answered through its own response, unless that has begun or an earlier answer on the
      // connection still holds the socket: then the connection is cut.
      if (body.res.headersSent || answerInFlight(socket) !== body.res) socket.destroy();
      else answerBodyTimeout(body.res, socket);
    }
    if (this.arriving.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

function hasRequestBody(req: http.IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/** Responses answered 408 because their request's body did not arrive in time (answer.ts logs the code). */
const bodyTimedOut = new WeakSet<http.ServerResponse>();

/** True when `res` was answered 408 `request_timeout` by the listener (its body came too slowly). */
export function isBodyTimeout(res: http.ServerResponse): boolean {
  return bodyTimedOut.has(res);
}

function answerBodyTimeout(res: http.ServerResponse, socket: Duplex): void {
  bodyTimedOut.add(res);
  const body = '408 Request Timeout\n';
  try {
    res.writeHead(408, { 'content-type': 'text/plain', 'content-length': body.length, connection: 'close', 'x-crowdgate-error': 'request_timeout' });
    res.end(body, () => socket.destroy());
  } catch {
    socket.destroy();
  }
}

/**
 * Runs `then` once the response node:http has attached to this socket (the answer in flight,
 * then any pipelined after it) has finished or been cut; at once when there is none.
 */
function afterAnswerInFlight(socket: Duplex, then: () => void): void {
  const res = answerInFlight(socket);
  if (res === undefined) return then();
  res.once('close', () => setImmediate(() => afterAnswerInFlight(socket, then)));
}

/** The response node:http has attached to this socket, while it is still being written. */
function answerInFlight(socket: Duplex): http.ServerResponse | undefined {
  const res = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
  return res === undefined || res === null || res.writableFinished || res.destroyed ? undefined : res;
}

function hasAnswerInFlight(socket: Duplex): boolean {
  return answerInFlight(socket) !== undefined;
}
