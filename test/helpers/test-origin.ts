/**
 * A real, scriptable origin server for tests: node:http on 127.0.0.1, port 0 by default.
 *
 * Owns: recording what reached the origin (method, URL, headers, body size, time), counting
 * in-flight and peak concurrency and TCP connections, and answering by script — per path
 * (status, headers, body, delay, connection reset, hang) or by a handler function.
 * It does not: speak TLS, HTTP/2, or decide anything about caching; tests assert on what it saw.
 *
 * ```ts
 * const origin = await startTestOrigin({ name: 'a' });
 * origin.route('/slow', { delayMs: 200, headers: { 'cache-control': 'max-age=60' } });
 * origin.route('/boom', { reset: true });          // destroy the socket, no response
 * origin.route('/down', { status: 503 });
 * origin.route('/json', (req, res) => res.end('{}')); // full control
 * // ... exercise the gateway against origin.url ...
 * expect(origin.count('/slow')).toBe(1);
 * origin.kill();          // crash: stop listening, destroy every socket now
 * await origin.reopen();  // listen again on the same port (an origin coming back)
 * await origin.close();   // in afterEach/afterAll
 * ```
 *
 * Every response carries `x-origin-seq` (1-based number of the request that produced it) and,
 * when `name` is given, `x-origin-name`, so a test can tell which fetch — and which member —
 * a response came from. The default answer is 200 `text/plain` "origin <name> <method> <url>"
 * with no Cache-Control (tests say what they want cached).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  /** 1-based arrival order, the same number as the response's `x-origin-seq`. */
  seq: number;
  method: string;
  /** Request target as received, with the query. */
  url: string;
  /** `url` without the query. */
  path: string;
  headers: http.IncomingHttpHeaders;
  /** Bytes of request body received (0 until the body has been read). */
  bodyLength: number;
  /** When the request head arrived, epoch ms (real time: this is a real server). */
  at: number;
}

/** How one path answers. Unset fields take the defaults (200, default body, no delay). */
export interface RouteScript {
  status?: number;
  headers?: http.OutgoingHttpHeaders;
  /** Response body; a function is called per request. Ignored for HEAD, 204 and 304. */
  body?: string | Buffer | ((req: RecordedRequest) => string | Buffer);
  /** Wait this long (real ms) after the request body before answering (or resetting). */
  delayMs?: number;
  /** Destroy the socket instead of answering: the client sees ECONNRESET / "socket hang up". */
  reset?: boolean;
  /** Never answer; the request stays open until the client gives up or the origin closes. */
  hang?: boolean;
  /** Send the head, then `delayMs`, then the body — for body-idle timeouts. Needs `delayMs`. */
  delayBody?: boolean;
}

export type OriginHandler = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  recorded: RecordedRequest,
) => unknown;

export interface TestOriginOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number;
  /** Sent as `x-origin-name` and in the default body. */
  name?: string;
  /** Handler for paths without a route; defaults to the 200 answer described above. */
  handler?: OriginHandler;
  /** Server keep-alive timeout in ms (Node's default is 5000). */
  keepAliveTimeoutMs?: number;
}

export interface TestOrigin {
  /** `http://127.0.0.1:<port>` — no trailing slash. */
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  /** Every request received since start or the last reset(), in arrival order. */
  readonly requests: RecordedRequest[];
  /** Requests received and not yet answered or aborted. */
  readonly inflight: number;
  /** Highest `inflight` seen since start or the last reset(). */
  readonly peakInflight: number;
  /** TCP connections accepted since start or the last reset() (keep-alive reuse keeps it low). */
  readonly connections: number;
  /** Currently open TCP connections. */
  readonly openConnections: number;
  /**
   * Count recorded requests: all; those whose path equals the string (or whose full URL
   * equals it when it contains '?'); whose URL matches the RegExp; or that satisfy the predicate.
   */
  count(match?: string | RegExp | ((r: RecordedRequest) => boolean)): number;
  /** Script one path (exact match on the path without query); replaces an earlier script. */
  route(path: string, script: RouteScript | OriginHandler): void;
  /** Remove one path's script, or every script when no path is given. */
  unroute(path?: string): void;
  /** Replace the handler for unscripted paths; undefined restores the default. */
  setHandler(fn: OriginHandler | undefined): void;
  /** Forget recorded requests and peaks (scripts stay). */
  reset(): void;
  /** Crash: stop listening and destroy every open socket, now. */
  kill(): void;
  /** Listen again on the same port after kill() or close(). */
  reopen(): Promise<void>;
  /** Stop listening, destroy every socket (idle keep-alive and in-flight), resolve when closed. */
  close(): Promise<void>;
}

export async function startTestOrigin(opts: TestOriginOptions = {}): Promise<TestOrigin> {
  const routes = new Map<string, RouteScript | OriginHandler>();
  let fallback: OriginHandler | undefined = opts.handler;
  let requests: RecordedRequest[] = [];
  let seq = 0;
  let inflight = 0;
  let peakInflight = 0;
  let connections = 0;
  const sockets = new Set<Socket>();
  /** Timers for delays, cleared on kill/close so nothing fires into a closed server. */
  const timers = new Set<NodeJS.Timeout>();

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const defaultAnswer = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const body = `origin ${opts.name ?? '-'} ${req.method} ${req.url}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  const runScript = (
    script: RouteScript,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    rec: RecordedRequest,
  ): void => {
    if (script.hang) return;
    const answer = (): void => {
      if (script.reset) {
        req.socket.destroy();
        return;
      }
      const status = script.status ?? 200;
      const raw = typeof script.body === 'function' ? script.body(rec) : script.body;
      const noBody = req.method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
      const body = raw === undefined ? Buffer.from(`origin ${opts.name ?? '-'} ${rec.method} ${rec.url}\n`) : Buffer.from(raw);
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain', ...script.headers };
      if (!noBody && headers['content-length'] === undefined && headers['transfer-encoding'] === undefined)
        headers['content-length'] = body.length;
      if (script.delayBody && script.delayMs) {
        res.writeHead(status, headers);
        res.flushHeaders();
        later(script.delayMs, () => res.end(noBody ? undefined : body));
        return;
      }
      res.writeHead(status, headers);
      res.end(noBody ? undefined : body);
    };
    if (script.delayMs && !script.delayBody) later(script.delayMs, answer);
    else answer();
  };

  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const rec: RecordedRequest = {
      seq: ++seq,
      method: req.method ?? 'GET',
      url,
      path: url.split('?')[0] ?? url,
      headers: req.headers,
      bodyLength: 0,
      at: Date.now(),
    };
    requests.push(rec);
    inflight++;
    peakInflight = Math.max(peakInflight, inflight);
    // 'close' fires once whether the response finished or the connection died first.
    res.once('close', () => inflight--);
    res.setHeader('x-origin-seq', String(rec.seq));
    if (opts.name !== undefined) res.setHeader('x-origin-name', opts.name);
    req.on('data', (chunk: Buffer) => (rec.bodyLength += chunk.length));
    req.once('end', () => {
      const script = routes.get(rec.path);
      try {
        if (typeof script === 'function') void Promise.resolve(script(req, res, rec)).catch(() => req.socket.destroy());
        else if (script) runScript(script, req, res, rec);
        else if (fallback) void Promise.resolve(fallback(req, res, rec)).catch(() => req.socket.destroy());
        else defaultAnswer(req, res);
      } catch {
        req.socket.destroy();
      }
    });
  });
  if (opts.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  server.on('connection', (socket: Socket) => {
    connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // A client that resets mid-request would otherwise surface as an unhandled error.
  server.on('clientError', (_err, socket) => socket.destroy());

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });

  const dropEverything = (): void => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    server.closeAllConnections();
    // closeAllConnections() only knows sockets that carried an HTTP request; destroy the rest too.
    for (const s of sockets) s.destroy();
  };

  await listen(opts.port ?? 0);
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    get requests() {
      return requests;
    },
    get inflight() {
      return inflight;
    },
    get peakInflight() {
      return peakInflight;
    },
    get connections() {
      return connections;
    },
    get openConnections() {
      return sockets.size;
    },
    count(match) {
      if (match === undefined) return requests.length;
      if (typeof match === 'function') return requests.filter(match).length;
      if (match instanceof RegExp) return requests.filter((r) => match.test(r.url)).length;
      return requests.filter((r) => (match.includes('?') ? r.url === match : r.path === match)).length;
    },
    route(path, script) {
      routes.set(path, script);
    },
    unroute(path) {
      if (path === undefined) routes.clear();
      else routes.delete(path);
    },
    setHandler(fn) {
      fallback = fn;
    },
    reset() {
      requests = [];
      peakInflight = inflight;
      connections = 0;
    },
    kill() {
      if (server.listening) server.close();
      dropEverything();
    },
    async reopen() {
      if (server.listening) return;
      await listen(port);
    },
    close() {
      return new Promise<void>((resolve) => {
        if (!server.listening) {
          dropEverything();
          resolve();
          return;
        }
        server.close(() => resolve());
        dropEverything();
      });
    },
  };
}
