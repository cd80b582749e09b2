/**
 * WebSocket upgrades on the public listener: the site is chosen by Host, one healthy member is
 * picked, and the connection is tunnelled to it (origin/forward.ts ws()) until either side
 * closes. An unknown Host or a gateway that is draining gets 400; a site without a usable
 * member gets 502. Other protocols offered in Upgrade never come here: they are ignored and
 * the request is served as an ordinary one (http-server.ts upgradeListener).
 *
 * Tunnels are long-lived: they are counted on their own gauge (crowdgate_websocket_tunnels),
 * never through the admission limiter, and nothing of them is cached. The request path
 * (handle-request.ts) never sees an upgrade.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { Forwarder } from '../origin/forward.js';
import type { Runtime } from '../runtime.js';
import type { TrustedProxies } from './client-address.js';
import { normaliseTarget } from '../cache/cache-key.js';
import { dropClientAddressClaims, dropOddFieldNames, setForwardedHeaders } from './headers.js';
import { isSecure } from './context.js';

/** What an upgrade needs from the gateway (gateway.ts passes itself). */
export interface WebSocketDeps {
  readonly forwarder: Forwarder;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  /** The current config generation (read per upgrade, so a reload applies to the next one). */
  runtime(): Runtime;
  trustedProxies(): TrustedProxies;
  isDraining(): boolean;
}

export class WebSocketUpgrades {
  /** Open tunnels per site, for the gauge. */
  private readonly tunnels = new Map<string, number>();

  constructor(private readonly deps: WebSocketDeps) {}

  /** The public listener's 'upgrade' handler. */
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const site = this.deps.runtime().router.match(req.headers.host);
    const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
    if (!site || upgrade !== 'websocket' || this.deps.isDraining()) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const member = site.pool.pick();
    if (!member) {
      socket.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    // The normalised target, as every request is forwarded with (dot segments removed): under
    // an origin URL with a path prefix, `/../admin` must not climb out of it.
    const rawUrl = req.url ?? '/';
    if (!rawUrl.startsWith('/')) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    req.url = normaliseTarget(rawUrl).url;
    const gauge = this.deps.metrics.get('websocketTunnels');
    this.tunnels.set(site.name, (this.tunnels.get(site.name) ?? 0) + 1);
    gauge.set({ site: site.name }, this.tunnels.get(site.name)!);
    // The same X-Forwarded-* and Via as every forwarded request (headers.ts), set in place:
    // http-proxy sends the upgrade request's own headers on.
    const peer = req.socket.remoteAddress ?? '';
    const peerTrusted = this.deps.trustedProxies().isTrusted(peer);
    setForwardedHeaders(req.headers, { ...req.headers }, {
      peerAddress: peer,
      peerTrusted,
      scheme: isSecure(req) ? 'https' : 'http',
    });
    if (!peerTrusted) dropClientAddressClaims(req.headers as Record<string, unknown>);
    dropOddFieldNames(req.headers as Record<string, unknown>);
    void this.deps.forwarder.ws(req, socket, head, member.url, !site.config.preserveHost).then((r) => {
      this.tunnels.set(site.name, Math.max(0, (this.tunnels.get(site.name) ?? 1) - 1));
      gauge.set({ site: site.name }, this.tunnels.get(site.name)!);
      if (r instanceof Error) this.deps.logger.warn({ err: r, site: site.name }, 'websocket tunnel failed');
    });
  }
}
