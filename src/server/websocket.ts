/**
 * WebSocket upgrades on the public listener: the site is chosen by Host and the handshake is
 * sent to a member (origin/forward.ts upgrade()) like any request the cache does not answer:
 * through the site's per-client rate limit, and through admission, holding an origin permit
 * until the origin answers the handshake (the tunnel that follows holds none), with the
 * site's connect and response-head timeouts. A 101 opens a tunnel until either side closes;
 * any other answer is relayed as an ordinary response on a connection that then closes.
 * A request that is not a WebSocket handshake (RFC 6455 §4.1: GET, `Upgrade: websocket`,
 * `Sec-WebSocket-Key`, `Sec-WebSocket-Version`), an unknown Host or a gateway that is draining
 * gets 400; a refusal by admission 503 with Retry-After; an origin that cannot be reached 502,
 * one that does not answer in time 504. Other protocols offered in Upgrade never come here:
 * they are ignored and the request is served as an ordinary one (http-server.ts
 * upgradeListener).
 *
 * Tunnels are long-lived: they are counted on their own gauge (crowdgate_websocket_tunnels),
 * and nothing of them is cached. The request path (handle-request.ts) never sees an upgrade.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { Forwarder, UpgradeOutcome } from '../origin/forward.js';
import type { OriginOutcome, Upstream } from '../origin/upstream.js';
import { timeoutsFor, type Runtime } from '../runtime.js';
import { rateLimitClientKey, type TrustedProxies } from './client-address.js';
import { hasDisguisedDotSegment, normaliseTarget, parseUrlPath } from '../cache/cache-key.js';
import { dropClientAddressClaims, dropOddFieldNames, setForwardedHeaders, stripHopByHop } from './headers.js';
import { isSecure } from './context.js';

/** What an upgrade needs from the gateway (gateway.ts passes itself). */
export interface WebSocketDeps {
  readonly forwarder: Forwarder;
  readonly upstream: Upstream;
  readonly admission: {
    takeRateLimit(site: string, route: string, clientKey: (header?: string) => string): number | undefined;
    retryAfterSeconds(site: string): number;
  };
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The current config generation (read per upgrade, so a reload applies to the next one). */
  runtime(): Runtime;
  trustedProxies(): TrustedProxies;
  isDraining(): boolean;
}

/** RFC 6455 §4.1: a base64-encoded 16-byte nonce. */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{22}==$/;

export class WebSocketUpgrades {
  /** Open tunnels per site, for the gauge. */
  private readonly tunnels = new Map<string, number>();

  constructor(private readonly deps: WebSocketDeps) {}

  /** The public listener's 'upgrade' handler. */
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    void this.upgrade(req, socket, head).catch((err: unknown) => {
      this.deps.logger.error({ err }, 'websocket upgrade failed unexpectedly');
      answer(socket, 500, 'Internal Server Error');
    });
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const { deps } = this;
    const rt = deps.runtime();
    const site = rt.router.match(req.headers.host);
    const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
    const key = req.headers['sec-websocket-key'];
    const rawUrl = req.url ?? '/';
    if (
      !site ||
      // RFC 9112 §3.2 (and RFC 6455 §4.1: a handshake names its Host): no Host, no '*' site.
      req.headers.host === undefined ||
      upgrade !== 'websocket' ||
      req.method !== 'GET' ||
      typeof key !== 'string' ||
      !WEBSOCKET_KEY.test(key.trim()) ||
      req.headers['sec-websocket-version'] === undefined ||
      // A handshake has no body (RFC 6455 §4.1): one that declares one would hold its permit
      // while an origin that reads bodies first waits for it (review).
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') ||
      req.headers['transfer-encoding'] !== undefined ||
      // The normalised target, as every request is forwarded with (dot segments removed): under
      // an origin URL with a path prefix, `/../admin` must not climb out of it.
      !rawUrl.startsWith('/') ||
      hasDisguisedDotSegment(rawUrl) ||
      deps.isDraining()
    ) {
      return answer(socket, 400, 'Bad Request');
    }
    req.url = normaliseTarget(rawUrl).url;
    const route = site.compiled.matchRoute('GET', parseUrlPath(req.url).path);
    const peer = req.socket.remoteAddress ?? '';
    const trusted = deps.trustedProxies();
    const peerTrusted = trusted.isTrusted(peer);
    const clientAddress = trusted.resolveClient(peer, req.headers['x-forwarded-for']);

    // The site's per-client rate limit, as for any request.
    const limited = deps.admission.takeRateLimit(site.name, route.name, (header) => rateLimitClientKey(req.headers, header, clientAddress));
    if (limited !== undefined) {
      deps.metrics.get('rateLimited').inc({ site: site.name, route: route.name });
      return answer(socket, 429, 'Too Many Requests', limited);
    }

    // The same X-Forwarded-* and Via as every forwarded request (headers.ts), set in place.
    setForwardedHeaders(req.headers, { ...req.headers }, {
      peerAddress: peer,
      peerTrusted,
      scheme: isSecure(req) ? 'https' : 'http',
    });
    if (!peerTrusted) dropClientAddressClaims(req.headers as Record<string, unknown>);
    dropOddFieldNames(req.headers as Record<string, unknown>);
    // Hop-by-hop fields are the client's hop's (forward.ts sets Connection and Upgrade itself).
    stripHopByHop(req.headers as Record<string, unknown>);

    // An origin permit for the handshake: a crowd of upgrades waits and is shed like any
    // request the cache does not answer.
    const abort = new AbortController();
    const onClose = () => abort.abort();
    socket.once('close', onClose);
    const priority = rt.priorityOf(route, 'GET', parseUrlPath(req.url).path, req.headers);
    const admitted = await deps.upstream.admit(site.config, site.pool, {
      priority,
      deadlineAt: deps.clock.now() + rt.config.admission.queue.deadlineMs,
      kind: 'forward',
      latencyClass: `upgrade:${route.name}`,
      signal: abort.signal,
    });
    socket.off('close', onClose);
    if (!admitted.ok) {
      if (socket.destroyed) return;
      if (admitted.why === 'no_healthy') return answer(socket, 502, 'Bad Gateway');
      const reason = admitted.why === 'shed' ? admitted.reason : 'circuit_open';
      const retryAfter = deps.admission.retryAfterSeconds(site.name);
      deps.metrics.get('shed').inc({ site: site.name, reason, priority: rt.priorities.nameOf(priority) });
      return answer(socket, 503, 'Service Unavailable', retryAfter);
    }
    const lease = admitted.lease;
    let outcome: UpgradeOutcome | undefined;
    try {
      outcome = await deps.forwarder.upgrade(req, socket, head, {
        target: lease.member.url,
        changeOrigin: !site.config.preserveHost,
        timeouts: timeoutsFor(site.config, route),
      });
    } finally {
      lease.finish(leaseOutcome(outcome));
    }
    if (outcome.kind === 'failure') {
      deps.logger.warn({ err: outcome.error, site: site.name, origin: lease.member.name }, 'websocket upgrade failed');
      return outcome.failure === 'timeout' ? answer(socket, 504, 'Gateway Timeout') : answer(socket, 502, 'Bad Gateway');
    }
    if (outcome.kind !== 'upgraded') return;
    const gauge = deps.metrics.get('websocketTunnels');
    this.tunnels.set(site.name, (this.tunnels.get(site.name) ?? 0) + 1);
    gauge.set({ site: site.name }, this.tunnels.get(site.name)!);
    await outcome.closed;
    this.tunnels.set(site.name, Math.max(0, (this.tunnels.get(site.name) ?? 1) - 1));
    gauge.set({ site: site.name }, this.tunnels.get(site.name)!);
  }
}

/** What the member's health and limiter learn from a handshake. */
function leaseOutcome(outcome: UpgradeOutcome | undefined): OriginOutcome {
  if (outcome === undefined) return { kind: 'abandoned' };
  switch (outcome.kind) {
    case 'upgraded':
      return { kind: 'response', status: 101 };
    case 'answered':
      return { kind: 'response', status: outcome.status };
    case 'client_gone':
      return { kind: 'client_gone' };
    case 'failure':
      return { kind: 'failure', failure: outcome.failure };
  }
}

/** A short answer of the gateway's own on a connection that then closes. */
function answer(socket: Duplex, status: number, message: string, retryAfterSeconds?: number): void {
  if (socket.destroyed) return;
  const retry = retryAfterSeconds === undefined ? '' : `Retry-After: ${retryAfterSeconds}\r\n`;
  socket.end(`HTTP/1.1 ${status} ${message}\r\n${retry}Connection: close\r\nContent-Length: 0\r\n\r\n`);
}
