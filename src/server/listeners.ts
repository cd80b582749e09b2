/**
 * The gateway's listeners, bound in this order at start: the public (plain HTTP) listener, the
 * HTTPS listener when `tls.port` is set (tls/tls-edge.ts), and the admin listener
 * (admin/admin-server.ts); then the start-up log lines. Both public listeners call the same
 * hooks; on the plain one an ACME HTTP-01 challenge for an ACME site's name is answered first.
 *
 * Owns creating, binding, addressing and closing them. What a request does is the hooks'
 * business (gateway.ts wires them to the request path).
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createAdminServer, type AdminGateway } from '../admin/admin-server.js';
import type { GatewayConfig } from '../config/schema.js';
import { logStartup } from '../log.js';
import type { TlsEdge } from '../tls/tls-edge.js';
import type { DrainableServer } from './drain.js';
import { createPublicServer, type PublicServer, type PublicServerOptions } from './http-server.js';
import { addressOf, closeNow, listenOn } from './listen.js';

/** What both public listeners call: requests, upgrades and connection accounting. */
export type ListenerHooks = Omit<PublicServerOptions, 'limits' | 'logger'>;

export interface ListenerAddresses {
  public: AddressInfo;
  admin: AddressInfo;
  /** Only with `tls.port`. */
  https?: AddressInfo;
}

export interface ListenersOptions {
  logger: Logger;
  /** The certificates and the HTTPS listener; it answers ACME challenges on the plain listener. */
  tls: TlsEdge;
  /** What the admin listener reads. */
  admin: AdminGateway;
}

export class Listeners {
  private publicServer: PublicServer | undefined;
  private adminServer: http.Server | undefined;

  constructor(private readonly opts: ListenersOptions) {}

  /** Creates and binds every listener (the config's hosts and ports), then logs where they listen. */
  async listen(cfg: GatewayConfig, hooks: ListenerHooks): Promise<ListenerAddresses> {
    const { logger, tls } = this.opts;
    this.publicServer = createPublicServer({
      ...hooks,
      limits: cfg.limits,
      logger,
      // ACME HTTP-01 challenges for ACME sites' names are answered before routing and caching.
      onRequest: (req, res) => tls.answerChallenge(req, res) || hooks.onRequest(req, res),
    });
    this.adminServer = createAdminServer(this.opts.admin);
    const pub = await listenOn(this.publicServer, cfg.listen.host, cfg.listen.port, cfg.listen.backlog);
    const https = await tls.listen(cfg, hooks);
    const admin = await listenOn(this.adminServer, cfg.admin.host, cfg.admin.port);
    const addresses = { public: pub, admin, ...(https ? { https } : {}) };
    logStartup(logger, cfg, addresses);
    return addresses;
  }

  /** The live `limits` keys after a reload, on the plain listener (the TLS edge applies its own). */
  applyLimits(limits: GatewayConfig['limits']): void {
    this.publicServer?.applyLimits(limits);
  }

  get publicAddress(): AddressInfo | undefined {
    return addressOf(this.publicServer);
  }

  get adminAddress(): AddressInfo | undefined {
    return addressOf(this.adminServer);
  }

  /** The listeners a drain stops: both public ones (the admin listener keeps answering /readyz). */
  get drainable(): Array<DrainableServer | undefined> {
    return [this.publicServer, this.opts.tls.listener];
  }

  /** Cuts every connection: the public listener, the TLS edge (its listener, file watches and ACME), then the admin listener. */
  async close(): Promise<void> {
    await closeNow(this.publicServer);
    await this.opts.tls.close();
    await closeNow(this.adminServer);
  }
}
