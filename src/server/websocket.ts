/**
 * WebSocket upgrades on the public listener: the site is chosen by Host and the handshake is
 * sent to a member (origin/forward.ts upgrade()) like any request the cache does not answer:
 * through the site's per-client rate limit, and through admission, holding an origin permit
 * until the origin answers the handshake (the tunnel that follows holds none), with the
 * site's connect and response-head timeouts. A 101 opens a tunnel until either side closes;
 * any other answer is relayed as an ordinary response on a connection that then closes.
 * A request that is not a WebSocket handshake (RFC 6455 §4.1: GET, `Upgrade: websocket`,
 * `Sec-WebSocket-Key`, `Sec-WebSocket-Version`) or an unknown Host gets 400, a gateway that is
 * draining 503; a refusal by admission 503 with Retry-After; an origin that cannot be reached 502,
 * one that does not answer in time 504; each with its code in X-Crowdgate-Error. Every handshake
 * is counted and logged once (a tunnel when it closes). Other protocols offered in Upgrade never come here:
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
import { statusClassOf, type GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { ErrorCode } from '../errors.js';
import type { Forwarder, UpgradeOutcome } from '../origin/forward.js';
import type { OriginOutcome, Upstream } from '../origin/upstream.js';
import { queueDeadlineFor, routeCapOf, timeoutsFor, type Runtime } from '../runtime.js';
import { rateLimitClientKey, type TrustedProxies } from './client-address.js';
import { hasDisguisedDotSegment, normaliseTarget, parseUrlPath } from '../cache/cache-key.js';
import { LOOP_FIELD, cameBack } from '../http/loop.js';
import { dropClientAddressClaims, dropNeverForwarded, dropOddFieldNames, setForwardedHeaders, stripHopByHop } from './headers.js';
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
    const hs: Handshake = { req, socket, startedAt: this.deps.clock.now(), site: '-', route: '-', done: false };
    void this.upgrade(hs, head).catch((err: unknown) => {
      this.deps.logger.error({ err }, 'websocket upgrade failed unexpectedly');
      this.refuse(hs, 500, 'Internal Server Error', 'internal_error');
    });
  }

  /**
   * Answers a handshake the gateway refuses or could not complete, with the catalogue's code in
   * X-Crowdgate-Error, and accounts for it: an incomplete handshake's bare 400 had no code, no
   * count and no access line (new-user trial).
   */
  private refuse(hs: Handshake, status: number, message: string, code: ErrorCode, retryAfterSeconds?: number): void {
    answer(hs.socket, status, message, code, retryAfterSeconds);
    this.account(hs, status, status === 503 && code !== 'draining' ? 'shed' : 'error', code);
  }

  /** One handshake's count (crowdgate_requests_total) and access line, once. */
  private account(hs: Handshake, status: number, state: string, code?: ErrorCode): void {
    if (hs.done) return;
    hs.done = true;
    const { deps } = this;
    const durationMs = deps.clock.now() - hs.startedAt;
    deps.metrics.observeRequest(hs.site, hs.route, state, status === 0 ? 'aborted' : statusClassOf(status), durationMs / 1000);
    if (!deps.runtime().config.log.access) return;
    deps.logger.info(
      {
        type: 'access',
        client: hs.req.socket.remoteAddress,
        method: hs.req.method,
        path: hs.req.url,
        site: hs.site,
        route: hs.route,
        status,
        durationMs,
        cache: state,
        websocket: true,
        ...(code === undefined ? {} : { error: code }),
      },
      'request',
    );
  }

  private async upgrade(hs: Handshake, head: Buffer): Promise<void> {
    const { deps } = this;
    const { req, socket } = hs;
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
      if (site) hs.site = site.name;
      return deps.isDraining() ? this.refuse(hs, 503, 'Service Unavailable', 'draining') : this.refuse(hs, 400, 'Bad Request', site ? 'bad_request' : 'no_site');
    }
    req.url = normaliseTarget(rawUrl).url;
    // A handshake this gateway sent to the site's origin, come back (http/loop.ts).
    if (cameBack(req.headers[LOOP_FIELD], site.name, req.url)) {
      hs.site = site.name;
      return this.refuse(hs, 508, 'Loop Detected', 'origin_loop');
    }
    const target = parseUrlPath(req.url);
    const route = site.compiled.matchRoute('GET', target.path, target.query);
    hs.site = site.name;
    hs.route = route.name;
    const peer = req.socket.remoteAddress ?? '';
    const trusted = deps.trustedProxies();
    const peerTrusted = trusted.isTrusted(peer);
    const clientAddress = trusted.resolveClient(peer, req.headers['x-forwarded-for']);

    // The site's per-client rate limit, as for any request.
    const limited = deps.admission.takeRateLimit(site.name, route.name, (header) => rateLimitClientKey(req.headers, header, clientAddress));
    if (limited !== undefined) {
      deps.metrics.get('rateLimited').inc({ site: site.name, route: route.name });
      return this.refuse(hs, 429, 'Too Many Requests', 'rate_limited', limited);
    }

    // The same X-Forwarded-* and Via as every forwarded request (headers.ts), set in place.
    setForwardedHeaders(req.headers, { ...req.headers }, {
      peerAddress: peer,
      peerTrusted,
      scheme: isSecure(req) ? 'https' : 'http',
      loop: { site: site.name, target: req.url },
    });
    if (!peerTrusted) dropClientAddressClaims(req.headers as Record<string, unknown>);
    dropOddFieldNames(req.headers as Record<string, unknown>);
    dropNeverForwarded(req.headers as Record<string, unknown>);
    // Hop-by-hop fields are the client's hop's (forward.ts sets Connection and Upgrade itself).
    stripHopByHop(req.headers as Record<string, unknown>);

    // An origin permit for the handshake: a crowd of upgrades waits and is shed like any
    // request the cache does not answer.
    const abort = new AbortController();
    const onClose = () => abort.abort();
    socket.once('close', onClose);
    const priority = rt.priorityOf(route, 'GET', target.path, req.headers);
    const admitted = await deps.upstream.admit(site.config, site.pool, {
      priority,
      deadlineAt: deps.clock.now() + queueDeadlineFor(rt.config, route),
      kind: 'forward',
      latencyClass: `upgrade:${route.name}`,
      signal: abort.signal,
      routeCap: routeCapOf(route),
    });
    socket.off('close', onClose);
    if (!admitted.ok) {
      if (socket.destroyed) return this.account(hs, 0, 'pass'); // the client left while it waited
      if (admitted.why === 'no_healthy') return this.refuse(hs, 502, 'Bad Gateway', 'no_healthy_origin');
      const reason = admitted.why === 'shed' ? admitted.reason : 'circuit_open';
      const retryAfter = deps.admission.retryAfterSeconds(site.name);
      deps.metrics.get('shed').inc({ site: site.name, reason, priority: rt.priorities.nameOf(priority) });
      return this.refuse(hs, 503, 'Service Unavailable', reason === 'circuit_open' ? 'circuit_open' : 'overloaded', retryAfter);
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
      // A tunnel on a capped route keeps its slot while open (routes[].maxConcurrent counts
      // what holds the origin, as nginx's limit_conn counts connections): the handshake gives
      // its permit back (no sample), and the finish at the tunnel's close gives the slot back.
      const held = outcome?.kind === 'upgraded' && route.config.maxConcurrent !== undefined;
      lease.finish(held ? { kind: 'response', status: 101, clientHeld: true } : leaseOutcome(outcome));
    }
    if (outcome.kind === 'failure') {
      deps.logger.warn({ err: outcome.error, site: site.name, origin: lease.member.name }, 'websocket upgrade failed');
      return outcome.failure === 'timeout' ? this.refuse(hs, 504, 'Gateway Timeout', 'origin_timeout') : this.refuse(hs, 502, 'Bad Gateway', 'origin_unreachable');
    }
    // The origin's own answer to the handshake (relayed), or a client that left: counted now.
    if (outcome.kind === 'answered') return this.account(hs, outcome.status, 'pass');
    if (outcome.kind !== 'upgraded') return this.account(hs, 0, 'pass');
    const gauge = deps.metrics.get('websocketTunnels');
    this.tunnels.set(site.name, (this.tunnels.get(site.name) ?? 0) + 1);
    gauge.set({ site: site.name }, this.tunnels.get(site.name)!);
    await outcome.closed;
    lease.finish({ kind: 'response', status: 101 }); // a capped route's slot (above); else nothing
    this.tunnels.set(site.name, Math.max(0, (this.tunnels.get(site.name) ?? 1) - 1));
    gauge.set({ site: site.name }, this.tunnels.get(site.name)!);
    // A tunnel is counted and logged when it closes, as nginx logs a 101 (its duration the tunnel's).
    this.account(hs, 101, 'pass');
  }
}

/** One handshake being answered: what its count and access line say. */
interface Handshake {
  readonly req: IncomingMessage;
  readonly socket: Duplex;
  readonly startedAt: number;
  site: string;
  route: string;
  /** Counted and logged already. */
  done: boolean;
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
function answer(socket: Duplex, status: number, message: string, code: ErrorCode, retryAfterSeconds?: number): void {
  if (socket.destroyed) return;
  const retry = retryAfterSeconds === undefined ? '' : `Retry-After: ${retryAfterSeconds}\r\n`;
  socket.end(`HTTP/1.1 ${status} ${message}\r\n${retry}X-Crowdgate-Error: ${code}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}
