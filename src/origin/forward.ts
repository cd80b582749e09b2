/**
 * Streaming pass-through to an origin member with http-proxy 1.18, and WebSocket handshakes
 * with node:http (upgrade(): http-proxy wrote an origin's non-101 answer with its own
 * Transfer-Encoding around a body it had de-chunked). http-proxy is unmaintained, so it is
 * used carefully:
 * - a keep-alive agent per member (passed in), and the client's Connection header and every
 *   hop-by-hop header removed before forwarding (with an agent, http-proxy would pass them on);
 * - `selfHandleResponse`, so we write the response head ourselves (hop-by-hop stripped, our
 *   Cache-Status/Via added) instead of http-proxy's outgoing passes, which copy Connection;
 * - the upstream request is destroyed when the client goes away (Node no longer emits
 *   'aborted' once a request body is complete, so we watch the response's 'close');
 * - connect, response-head and idle timeouts of our own;
 * - an error handler on every call and on the proxy itself.
 *
 * Owns the mechanics of one forward. It does not choose the member, hold permits, or decide
 * retries (handle-request.ts does).
 */
import httpProxy from 'http-proxy';
import { Agent as HttpAgent, request as httpRequest, type Agent, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex, Transform } from 'node:stream';
import { REUSED_RESET_WINDOW_MS, hasCompressingTransferCoding, isEndlessStream, isTlsFailure, isValidStatus, type FetchFailure } from './fetch.js';
import { copyEndToEnd, dispositionFirst, isAnswered, isResponseGone } from '../server/headers.js';
import type { BufferedBody } from './request-body.js';

export type ForwardOutcome =
  | { kind: 'ok'; status: number; headAt: number }
  /**
   * Failed before any response byte reached the client: the caller may answer or retry.
   * `reusedConnection`: a reset on a reused keep-alive connection before any byte of the
   * answer arrived (see `onProxyReq`).
   */
  | { kind: 'failure'; failure: FetchFailure; error: Error; bodySent: boolean; reusedConnection?: boolean }
  /** Failed after the head was sent: the client connection was cut. */
  | { kind: 'broken'; failure: FetchFailure; status: number }
  | { kind: 'client_gone' }
  /** The client's body grew past `maxBodyBytes` while streaming: the upstream request was aborted. */
  | { kind: 'body_too_large'; headSent: boolean }
  /** passOver() declined the answer: nothing reached the client, its body was dropped unread. */
  | { kind: 'passed_over'; status: number };

/** How a WebSocket handshake sent on (Forwarder.upgrade) ended. */
export type UpgradeOutcome =
  /** The origin switched protocols: the tunnel is open until `closed` settles. */
  | { kind: 'upgraded'; closed: Promise<void> }
  /** The origin answered something else, relayed to the client on a connection that then closes. */
  | { kind: 'answered'; status: number }
  /** Nothing reached the client: the caller answers it. */
  | { kind: 'failure'; failure: FetchFailure; error: Error }
  | { kind: 'client_gone' };

export interface ForwardTarget {
  url: URL;
  agent: Agent;
}

export interface ForwardTimeouts {
  connectMs: number;
  responseHeadersMs: number;
  idleMs: number;
}

export interface ForwardCall {
  target: ForwardTarget;
  timeouts: ForwardTimeouts;
  changeOrigin: boolean;
  /** Called with the origin's status and headers (hop-by-hop already removed); returns the head to send. */
  onHead(status: number, headers: OutgoingHttpHeaders): OutgoingHttpHeaders;
  /**
   * Called first with the origin's status: true declines the answer (dropped unread with its
   * connection, nothing reaches the client) and the call settles as `passed_over`, for the
   * caller to send the request elsewhere.
   */
  passOver?(status: number): boolean;
  /**
   * Most request body bytes streamed to the origin. A body without Content-Length (chunked) is
   * counted as it flows (a declared length is checked before forwarding); past the cap the
   * upstream request is aborted and the call settles as `body_too_large`.
   */
  maxBodyBytes?: number;
  /**
   * Called after onHead with the head about to be sent: a stream to pass the body through
   * (on-the-fly compression, server/on-the-fly.ts), which may have rewritten the head; undefined
   * to stream the body as it comes.
   */
  encodeBody?(status: number, head: OutgoingHttpHeaders): Transform | undefined;
  /**
   * Send it on a new connection of its own (`Connection: close`, no agent) rather than one of
   * the member's idle keep-alive connections: the retry of a request whose reused connection
   * was reset, where the agent may hold more connections the origin has just closed.
   */
  freshConnection?: boolean;
  /**
   * Called once when what is left of the body is no longer the origin's work: the answer is an
   * endless stream (server-sent events: called at its head), a download (a declared length
   * past `downloadBytes`: called at its head), or the client has held the body back (not read
   * it) for CLIENT_STALL_MS. The caller gives the origin permit back (nginx and Varnish free
   * the origin connection by buffering instead).
   */
  onPermitFree?(status: number): void;
  /**
   * An answer declaring a longer body than this is a download: once its head has come, the rest
   * is a transfer at the client's pace, not the origin's work (see onPermitFree). Unset: none.
   */
  downloadBytes?: number;
  /**
   * Called once when the client has sent no byte of its request body for CLIENT_STALL_MS (a
   * slow or stalled upload): the request goes on at the client's pace, and the caller gives the
   * origin permit back. 300 uploads dribbling a byte a second held every permit (and the slow
   * lane), and every other visitor's miss got 503 (attacker trial).
   */
  onBodyStall?(): void;
  /** The request body, already read whole (request-body.ts): sent from here instead of the request stream. */
  body?: BufferedBody;
}

interface CallState {
  call: ForwardCall;
  settle(outcome: ForwardOutcome): void;
  proxyReq?: import('node:http').ClientRequest;
  /** The socket the request went out on, and how many bytes it had read by then. */
  socket?: Socket;
  bytesReadBefore?: number;
  /** When the request was handed its socket (performance.now()), for wasReusedUnanswered. */
  sentAt?: number;
  timedOut?: boolean;
  /** The answer's head arrived, or the call settled: no head timeout is armed after that. */
  answered?: boolean;
  /** The origin's answer, once its head arrived. */
  proxyRes?: IncomingMessage;
  timers: NodeJS.Timeout[];
}

export class Forwarder {
  private readonly proxy: httpProxy;
  private readonly states = new WeakMap<IncomingMessage, CallState>();

  constructor(private readonly now: () => number = Date.now) {
    this.proxy = httpProxy.createProxyServer({ selfHandleResponse: true, xfwd: false, ws: true, secure: true });
    // Always registered: http-proxy emits 'error' for failures the per-call callback misses.
    this.proxy.on('error', (err, req) => {
      const state = this.states.get(req as IncomingMessage);
      state?.settle({ kind: 'failure', failure: classifyProxyError(err, state.timedOut), error: err, bodySent: true });
    });
    this.proxy.on('proxyReq', (proxyReq, req, res) => this.onProxyReq(proxyReq, req, res));
    this.proxy.on('proxyRes', (proxyRes, req, res) => this.onProxyRes(proxyRes, req, res));
  }

  /** Streams `req` to the member and the answer back to `res`. Headers on `req` must already be prepared. */
  web(req: IncomingMessage, res: ServerResponse, call: ForwardCall): Promise<ForwardOutcome> {
    return new Promise((resolve) => {
      let done = false;
      const state: CallState = {
        call,
        timers: [],
        settle: (outcome) => {
          if (done) return;
          done = true;
          state.answered = true;
          for (const t of state.timers) clearTimeout(t);
          res.off('close', onClientClose);
          resolve(outcome);
        },
      };
      const onClientClose = () => {
        if (done || isAnswered(res)) return;
        state.proxyReq?.destroy();
        state.settle({ kind: 'client_gone' });
      };
      res.on('close', onClientClose);
      // Gone before the call (its 'close' has fired already): nothing is sent.
      if (isResponseGone(res)) return state.settle({ kind: 'client_gone' });
      this.states.set(req, state);
      if (call.onBodyStall !== undefined && hasBody(req) && !req.complete) {
        const onBodyStall = call.onBodyStall;
        let stall: NodeJS.Timeout | undefined;
        const arm = () => {
          if (stall !== undefined) clearTimeout(stall);
          stall = setTimeout(() => {
            // Not the client's doing, so wait on: the request still queued for a connection to
            // the member, the origin not reading what was sent (backpressure), or bytes the
            // client sent still waiting in the pipe (review).
            if (state.proxyReq === undefined || state.proxyReq.writableNeedDrain || req.readableLength > 0) return arm();
            stop();
            if (!done) onBodyStall();
          }, CLIENT_STALL_MS);
        };
        const stop = () => {
          if (stall !== undefined) clearTimeout(stall);
          stall = undefined;
          req.off('data', arm);
          req.off('end', stop);
        };
        req.on('data', arm);
        req.once('end', stop);
        arm();
        const settle = state.settle;
        state.settle = (outcome) => {
          stop();
          settle(outcome);
        };
      }
      const max = call.maxBodyBytes;
      if (max !== undefined && req.headers['content-length'] === undefined && req.headers['transfer-encoding'] !== undefined) {
        let seen = 0;
        const onData = (chunk: Buffer) => {
          seen += chunk.length;
          if (seen <= max) return;
          req.off('data', onData);
          req.unpipe();
          req.pause();
          state.proxyReq?.destroy();
          state.settle({ kind: 'body_too_large', headSent: res.headersSent });
        };
        req.on('data', onData);
        const stop = () => req.off('data', onData);
        const settle = state.settle;
        state.settle = (outcome) => {
          stop();
          settle(outcome);
        };
      }
      this.proxy.web(
        req,
        res,
        {
          target: call.target.url.origin + stripTrailingSlash(call.target.url.pathname),
          // A fresh connection: a one-off agent that keeps none, so the request opens its own.
          agent: exactPathAgent(
            call.freshConnection ? oneOffAgent(call.target.url) : call.target.agent,
            stripTrailingSlash(call.target.url.pathname) + (req.url ?? '/'),
          ),
          changeOrigin: call.changeOrigin,
          ...(call.body !== undefined ? { buffer: call.body.stream() } : {}),
        },
        (err) => {
          // A call already settled never touches `res` again: after a passed-over answer the
          // retry is writing it (review: the first answer's late reset cut the retry's 200).
          if (done) return;
          const bodySent = req.readableEnded && hasBody(req);
          const failure = classifyProxyError(err, state.timedOut);
          // The body had all arrived (the origin then sent more than its Content-Length, and the
          // parser failed on the excess): the answer is whole, and still being written; cut, the
          // client got nothing at all (failure-day trial). nginx sends the declared bytes too.
          if (state.proxyRes?.complete === true) return;
          if (res.headersSent) {
            state.settle({ kind: 'broken', failure, status: res.statusCode });
            res.destroy();
          } else {
            const reusedConnection = failure === 'reset' && wasReusedUnanswered(state);
            state.settle({ kind: 'failure', failure, error: err, bodySent, ...(reusedConnection ? { reusedConnection } : {}) });
          }
        },
      );
    });
  }

  private onProxyReq(proxyReq: import('node:http').ClientRequest, req: IncomingMessage, _res: ServerResponse): void {
    const state = this.states.get(req);
    if (!state) return;
    state.proxyReq = proxyReq;
    // http-proxy emits 'proxyReq' from the request's 'socket' event: the socket is known here.
    const socket = proxyReq.socket;
    if (socket) {
      state.socket = socket;
      state.bytesReadBefore = socket.bytesRead;
      state.sentAt = performance.now();
    }
    const { connectMs, responseHeadersMs } = state.call.timeouts;
    const fail = () => {
      state.timedOut = true;
      proxyReq.destroy(Object.assign(new Error('origin timeout'), { code: 'ETIMEDOUT' }));
    };
    // The connect timeout on the socket this request was given: already assigned here (the
    // 'socket' event has fired, so a listener for it was never called and a connect that
    // hung was only cut by the response-head timeout), or, should that ever change, to come.
    const armConnect = (socket: Socket) => {
      if (socket.connecting) {
        const t = setTimeout(fail, connectMs);
        state.timers.push(t);
        socket.once('connect', () => clearTimeout(t));
      }
    };
    if (socket) armConnect(socket);
    else proxyReq.once('socket', armConnect);
    // The wait for the answer's head starts once the request, body included, has gone out: a
    // 20 MB upload from a client at 1.2 MB/s took 17 s to send, and was cut at 15 s with a 504
    // that also counted against a healthy member. (A body that stops coming is the client's
    // limits.requestTimeoutMs to cut; one the origin stops reading, the socket's idle timer's.)
    if (proxyReq.writableFinished) state.timers.push(setTimeout(fail, responseHeadersMs));
    else proxyReq.once('finish', () => {
      if (!state.answered) state.timers.push(setTimeout(fail, responseHeadersMs));
    });
  }

  private onProxyRes(proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const state = this.states.get(req);
    if (!state) {
      proxyRes.resume();
      return;
    }
    for (const t of state.timers) clearTimeout(t);
    state.timers.length = 0;
    state.answered = true;
    state.proxyRes = proxyRes;
    const status = proxyRes.statusCode ?? 502;
    if (!isValidStatus(status)) {
      // RFC 9110 §15: a status is 100-599. Node's parser takes any three digits; h1 would pass
      // 700 on as it came and h2 cannot send it at all. A bad answer, as nginx has it (502).
      proxyRes.destroy();
      state.settle({ kind: 'failure', failure: 'bad_response', error: new Error(`origin answered status ${status}`), bodySent: req.readableEnded && hasBody(req) });
      return;
    }
    if (hasCompressingTransferCoding(proxyRes.headers['transfer-encoding'])) {
      // Node's parser takes the chunks off and leaves the gzip on (see hasCompressingTransferCoding).
      proxyRes.destroy();
      const error = new Error(`origin answered Transfer-Encoding: ${String(proxyRes.headers['transfer-encoding'])}`);
      state.settle({ kind: 'failure', failure: 'bad_response', error, bodySent: req.readableEnded && hasBody(req) });
      return;
    }
    if (state.call.passOver?.(status)) {
      // Dropped unread with its connection: a body left to drain could stall for as long as the
      // origin likes, holding the socket (review).
      state.settle({ kind: 'passed_over', status });
      proxyRes.on('error', () => {});
      proxyRes.destroy();
      return;
    }
    const head = state.call.onHead(status, copyEndToEnd(proxyRes.headers));
    // RFC 9110 §8.6: never in a 204 (an origin's `Content-Length: 5` beside its body, which Node
    // drops, was passed on: a client taking it at its word waits for 5 bytes; odd-origin trial).
    if (status === 204) delete head['content-length'];
    if (isResponseGone(res)) {
      proxyRes.destroy();
      state.settle({ kind: 'client_gone' });
      return;
    }
    const encoder = state.call.encodeBody?.(status, head);
    try {
      res.writeHead(status, dispositionFirst(head));
    } catch (err) {
      // A head the client's protocol refuses (HTTP/2 throws for a field it cannot carry; none
      // known reaches here, the h2 response drops them): a bad answer (502), never an exception
      // in http-proxy's handler that leaves the request unanswered with its permit held.
      // The failed writeHead set it: the error page's line read "502 OK". (HTTP/2 has none: its
      // getter reads '' and setting it warns.)
      if (res.statusMessage !== '') res.statusMessage = '';
      proxyRes.destroy();
      state.settle({ kind: 'failure', failure: 'bad_response', error: err as Error, bodySent: req.readableEnded && hasBody(req) });
      return;
    }
    const headAt = this.now();
    const idle = setTimeout(() => {
      state.timedOut = true;
      proxyRes.destroy(Object.assign(new Error('origin idle timeout'), { code: 'ETIMEDOUT' }));
    }, state.call.timeouts.idleMs);
    state.timers.push(idle);
    proxyRes.on('data', () => idle.refresh());
    proxyRes.on('error', () => {
      res.destroy();
      state.settle({ kind: 'broken', failure: state.timedOut ? 'timeout' : 'reset', status });
    });
    proxyRes.on('aborted', () => {
      res.destroy();
      state.settle({ kind: 'broken', failure: state.timedOut ? 'timeout' : 'reset', status });
    });
    proxyRes.on('end', () => {
      state.settle({ kind: 'ok', status, headAt });
    });
    // Closed without 'end' or an error (its socket destroyed after a whole answer): settled all the same.
    proxyRes.once('close', () => state.settle(proxyRes.complete ? { kind: 'ok', status, headAt } : { kind: 'broken', failure: 'reset', status }));
    // The pipe pauses the origin's body while the client does not read; past CLIENT_STALL_MS
    // the caller is told, once.
    const permitFree = state.call.onPermitFree;
    // An event stream holds its origin connection for as long as it lives, doing little: it
    // does not hold a permit too, or 25 open streams refused every other request.
    if (permitFree !== undefined && (isEndlessStream(proxyRes.headers['content-type']) || isDownload(proxyRes.headers['content-length'], state.call.downloadBytes))) permitFree(status);
    else if (permitFree !== undefined) {
      let stall: NodeJS.Timeout | undefined;
      proxyRes.on('pause', () => {
        if (stall === undefined) stall = setTimeout(() => permitFree(status), CLIENT_STALL_MS);
        else stall.refresh();
      });
      proxyRes.on('resume', () => {
        clearTimeout(stall);
        stall = undefined;
      });
      proxyRes.once('close', () => clearTimeout(stall));
    }
    if (encoder === undefined) {
      proxyRes.pipe(res);
      return;
    }
    // A compressor failing (it should not) cuts this one answer; a client leaving frees it.
    encoder.on('error', () => {
      proxyRes.destroy();
      res.destroy();
    });
    res.once('close', () => encoder.destroy());
    proxyRes.pipe(encoder).pipe(res);
  }

  /**
   * Sends a WebSocket handshake to `target` on a connection of its own and relays the origin's
   * answer. A 101 is relayed and the two connections are piped until either closes (`closed`
   * settles then). Any other answer is relayed as an ordinary response on a connection that
   * then closes: hop-by-hop fields removed and `Connection: close` (the body arrives
   * de-chunked, so the origin's own Transfer-Encoding would frame it wrongly). Connect and
   * response-head timeouts as for any forward; nothing is written to the client on a failure,
   * so the caller answers it.
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, call: { target: URL; changeOrigin: boolean; timeouts: ForwardTimeouts }): Promise<UpgradeOutcome> {
    return new Promise<UpgradeOutcome>((resolve) => {
      const { target, timeouts } = call;
      const headers: OutgoingHttpHeaders = { ...req.headers, connection: 'Upgrade', upgrade: 'websocket' };
      if (call.changeOrigin) headers.host = target.host;
      const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
      const proxyReq = send({
        protocol: target.protocol,
        hostname: target.hostname.replace(/^\[|\]$/g, ''),
        port: target.port || (target.protocol === 'https:' ? 443 : 80),
        method: 'GET',
        path: stripTrailingSlash(target.pathname) + (req.url ?? '/'),
        headers,
        agent: false,
      });
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (outcome: UpgradeOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('close', onClientClose);
        resolve(outcome);
      };
      const fail = (failure: FetchFailure, error: Error) => {
        proxyReq.destroy();
        settle({ kind: 'failure', failure, error });
      };
      const onClientClose = () => {
        proxyReq.destroy();
        settle({ kind: 'client_gone' });
      };
      socket.once('close', onClientClose);
      timer = setTimeout(() => fail('timeout', new Error(`origin did not accept the connection within ${timeouts.connectMs} ms`)), timeouts.connectMs);
      proxyReq.once('socket', (s: Socket) => {
        const armHeadTimer = () => {
          clearTimeout(timer);
          timer = setTimeout(
            () => fail('timeout', new Error(`origin sent no answer to the upgrade within ${timeouts.responseHeadersMs} ms`)),
            timeouts.responseHeadersMs,
          );
        };
        if (s.connecting) s.once('connect', armHeadTimer);
        else armHeadTimer();
      });
      proxyReq.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return;
        fail(classifyProxyError(err), err);
      });
      proxyReq.on('upgrade', (proxyRes: IncomingMessage, proxySocket: Socket, proxyHead: Buffer) => {
        if (settled || socket.destroyed) {
          proxySocket.destroy();
          return settle({ kind: 'client_gone' });
        }
        proxySocket.on('error', () => socket.destroy());
        socket.on('error', () => proxySocket.destroy());
        proxySocket.setTimeout(0);
        proxySocket.setNoDelay(true);
        proxySocket.setKeepAlive(true, 0);
        const closed = new Promise<void>((done) => {
          let open = 2;
          const one = () => {
            if (--open === 0) done();
          };
          socket.once('close', () => {
            proxySocket.destroy();
            one();
          });
          proxySocket.once('close', () => {
            socket.destroy();
            one();
          });
        });
        socket.write(rawHead(101, 'Switching Protocols', proxyRes.rawHeaders));
        if (proxyHead.length > 0) socket.write(proxyHead);
        if (head.length > 0) proxySocket.write(head);
        proxySocket.pipe(socket);
        socket.pipe(proxySocket);
        settle({ kind: 'upgraded', closed });
      });
      proxyReq.on('response', (res: IncomingMessage) => {
        if (settled) {
          res.destroy();
          return;
        }
        const status = res.statusCode ?? 0;
        if (!isValidStatus(status)) {
          res.destroy();
          return fail('bad_response', new Error(`origin answered status ${status}`));
        }
        const out = copyEndToEnd(res.headers);
        out['connection'] = 'close';
        const pairs: string[] = [];
        for (const [name, value] of Object.entries(out)) {
          if (value === undefined) continue;
          for (const v of Array.isArray(value) ? value : [String(value)]) pairs.push(name, v);
        }
        socket.write(rawHead(status, res.statusMessage ?? '', pairs));
        // The relay ends with either side: a client that leaves takes the origin connection
        // with it, and a body silent for idleMs is cut (an endless answer to a handshake).
        const idle = setTimeout(() => res.destroy(), timeouts.idleMs);
        res.on('data', () => idle.refresh());
        res.once('close', () => {
          clearTimeout(idle);
          if (!res.complete) socket.destroy(); // cut or timed out; a complete body ends the socket itself
        });
        socket.once('close', () => {
          res.destroy();
          proxyReq.destroy();
        });
        // An upgrade socket is half-open capable: a client that leaves may only send its FIN.
        socket.once('end', () => socket.destroy());
        res.on('error', () => socket.destroy());
        res.pipe(socket);
        settle({ kind: 'answered', status });
      });
      proxyReq.end();
    });
  }

  close(): void {
    this.proxy.close();
  }
}

/** A response head as raw bytes: the status line and `pairs` (name, value, name, value...). */
function rawHead(status: number, message: string, pairs: readonly string[]): string {
  let out = `HTTP/1.1 ${status} ${message.replace(/[\r\n]/g, '')}\r\n`;
  for (let i = 0; i + 1 < pairs.length; i += 2) out += `${pairs[i]}: ${pairs[i + 1]}\r\n`;
  return out + '\r\n';
}

/** A declared Content-Length past `limit` (onPermitFree's download). */
function isDownload(contentLength: string | undefined, limit: number | undefined): boolean {
  if (limit === undefined || contentLength === undefined || !/^\d{1,15}$/.test(contentLength)) return false;
  return Number(contentLength) > limit;
}

/** How long a client may hold a forwarded body back before its origin permit is given back (ms). */
export const CLIENT_STALL_MS = 1000;

/**
 * `agent` for one forwarded request, which sends it with `path` as given: the member's base
 * path and the target the gateway normalised, what routes matched (and what a fill sends).
 * http-proxy joins them itself after a legacy url.parse, collapsing `//` and rewriting
 * `http:/` to `http://`: `POST //login` matched no `/login` route (its rate limit, priority,
 * timeouts) and reached the origin as `/login` (attacker trial). Node hands a request to its
 * agent before it writes the head (a request with Expect excepted, and Expect is never
 * forwarded), so the path set there is the one sent.
 */
function exactPathAgent(agent: Agent, path: string): Agent {
  const exact = Object.create(agent) as Agent & { addRequest(req: ClientRequest, options: unknown): void };
  const base = agent as Agent & { addRequest(req: ClientRequest, options: unknown): void };
  exact.addRequest = (req, options) => {
    req.path = path;
    base.addRequest(req, options);
  };
  return exact;
}

/** An agent for one request on a connection of its own, closed after it (`Connection: close`). */
function oneOffAgent(url: URL): Agent {
  return url.protocol === 'https:' ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false });
}

function stripTrailingSlash(path: string): string {
  return path.endsWith('/') ? path.slice(0, -1) : path;
}

/**
 * The request went out on a keep-alive connection that had carried requests before
 * (`ClientRequest.reusedSocket`, set by the agent when it hands out an idle socket), and not one
 * byte came back on it since: the reset is the origin closing that connection as idle while
 * our request was on its way (Node's documentation names this race and this test for it). A
 * reset on a new connection is never counted here: that is the origin refusing or dropping
 * work (a crash, an overload), and sending it again would add load, not remove it.
 */
function wasReusedUnanswered(state: CallState): boolean {
  const { proxyReq, socket, bytesReadBefore, sentAt } = state;
  return (
    proxyReq?.reusedSocket === true &&
    socket !== undefined &&
    socket.bytesRead === bytesReadBefore &&
    sentAt !== undefined &&
    performance.now() - sentAt <= REUSED_RESET_WINDOW_MS
  );
}

/** The request carries a body (declared length above 0, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  return req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0'
    ? true
    : req.headers['transfer-encoding'] !== undefined;
}

export function classifyProxyError(err: unknown, timedOut?: boolean): FetchFailure {
  if (timedOut) return 'timeout';
  const code = (err as { code?: string })?.code;
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'ENETUNREACH' || code === 'EAI_AGAIN' || isTlsFailure(code))
    return 'connect_error';
  if (code === 'ETIMEDOUT') return 'timeout';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'HPE_INVALID_CONSTANT') return 'reset';
  if (typeof code === 'string' && code.startsWith('HPE_')) return 'bad_response';
  return 'error';
}
