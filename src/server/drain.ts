/**
 * Graceful shutdown of the public listener. Counts the requests in flight (one more when
 * node:http hands a request over, one less when the request path has finished or cut its
 * response), and drain() stops accepting, gives the requests in flight up to a timeout to
 * finish, then cuts the connections left.
 *
 * Owns the draining flag that /readyz, new requests (sent Connection: close) and WebSocket
 * upgrades (refused) read, and the stopping flag of the phase before it (shutdown.delayMs),
 * which /readyz and new requests read. It does not decide when to drain (main.ts, on SIGTERM) nor close the
 * rest of the gateway (Gateway.close).
 */
import type http from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { Logger } from 'pino';

/** A listener as drain() uses it: http.Server, and the HTTPS listener (tls/https-server.ts). */
export interface DrainableServer {
  close(cb: () => void): unknown;
  closeIdleConnections(): void;
  closeAllConnections(): void;
}

export class Drain {
  private draining = false;
  private stopping = false;
  private inFlight = 0;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(private readonly logger: Logger) {}

  isDraining(): boolean {
    return this.draining;
  }

  /**
   * Shutting down, before draining (shutdown.delayMs): requests are still accepted and served,
   * but /readyz says not ready and answers close their connections, so a load balancer takes
   * this instance out, and its clients reconnect through it, while nothing is refused yet.
   */
  announce(): void {
    this.stopping = true;
  }

  /** Shutting down: announced or draining. */
  isStopping(): boolean {
    return this.stopping || this.draining;
  }

  /**
   * A request arrived; once shutting down, its connection is not kept alive: `Connection: close`
   * over HTTP/1.x; over HTTP/2 (which has no such field: Node warns and drops it) its session is
   * closed gracefully, a GOAWAY that lets the streams under way finish.
   */
  requestStarted(res: http.ServerResponse): void {
    this.inFlight++;
    if (!this.stopping && !this.draining) return;
    const session = (res as unknown as Partial<Http2ServerResponse>).stream?.session;
    if (session !== undefined) {
      if (!session.closed) session.close();
    } else res.setHeader('connection', 'close');
  }

  /** The request path is done with one request: its response finished or was cut. */
  requestDone(): void {
    // Never below 0: a request counted done twice must not make the drain cut the ones under way.
    if (this.inFlight > 0) this.inFlight--;
    if (this.inFlight === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Draining from now on: `server` stops accepting and its idle connections close, requests in
   * flight get up to `timeoutMs` to finish, then the connections left are cut. `drained` is
   * false when the timeout came first; `cut` is how many requests were still in flight then.
   */
  async drain(listeners: DrainableServer | undefined | ReadonlyArray<DrainableServer | undefined>, timeoutMs: number): Promise<{ drained: boolean; cut: number }> {
    this.draining = true;
    this.logger.info({ inFlight: this.inFlight, timeoutMs }, 'draining');
    const servers = (Array.isArray(listeners) ? listeners : [listeners]).filter((s): s is DrainableServer => s !== undefined);
    const closed = Promise.all(servers.map((server) => new Promise<void>((r) => server.close(() => r()))));
    for (const server of servers) server.closeIdleConnections();
    const idle = this.inFlight === 0 ? Promise.resolve(true) : new Promise<boolean>((r) => this.idleWaiters.push(() => r(true)));
    const timedOut = new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref());
    const drained = await Promise.race([idle, timedOut]);
    const cut = this.inFlight;
    for (const server of servers) server.closeAllConnections();
    await closed;
    this.logger.info({ drained, cut }, 'drained');
    return { drained, cut };
  }
}
