/**
 * Everything HTTPS the gateway owns, in one part for the composition root: the certificates by
 * SNI (certificates.ts), the sites' PEM files watched and reloaded (site-certificates.ts), the
 * `tls.acme` sites' certificates and HTTP-01 challenge answers (acme-sites.ts), and the HTTPS
 * listener (https-server.ts), created only when `tls.port` is set.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { RedisTier } from '../cache/stores/redis-tier.js';
import type { GatewayConfig } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { PublicServerOptions } from '../server/http-server.js';
import { addressOf, closeNow, listenOn } from '../server/listen.js';
import { AcmeSites } from './acme-sites.js';
import type { AcmeManagerOptions, SiteStatus } from './acme/manager.js';
import { Certificates } from './certificates.js';
import { createSecurePublicServer, type SecurePublicServer } from './https-server.js';
import { SiteCertificates } from './site-certificates.js';

export interface TlsEdgeOptions {
  config: GatewayConfig;
  logger: Logger;
  metrics: GatewayMetrics;
  clock: Clock;
  /** The gateway's Redis tier, when it runs: ACME shares certificates, lock and challenges through its client, under its key prefix. */
  redis?: Pick<RedisTier, 'client' | 'config'> | undefined;
  /** ACME client settings the config does not carry (tests: how fast acme-client polls the CA). */
  acme?: Pick<AcmeManagerOptions, 'poll'> | undefined;
  /** A certificate was installed or withdrawn (which plain requests redirect changed). */
  onCertificateChange(): void;
}

export class TlsEdge {
  /**
   * Certificates by SNI. The seam for any certificate source: `certificates.set(siteName,
   * { cert, key })` serves a new certificate from the next handshake on. Exists whether or not
   * `tls.port` is set.
   */
  readonly certificates: Certificates;
  private readonly files: SiteCertificates;
  private readonly acmeSites: AcmeSites;
  private server: SecurePublicServer | undefined;

  constructor(private readonly opts: TlsEdgeOptions) {
    const cfg = opts.config;
    this.certificates = new Certificates({ minVersion: cfg.tls.minVersion, ciphers: cfg.tls.ciphers });
    this.certificates.onChange(opts.onCertificateChange);
    this.files = new SiteCertificates(this.certificates, opts.logger, opts.metrics);
    const redis = opts.redis ? { client: opts.redis.client, keyPrefix: opts.redis.config.keyPrefix } : undefined;
    this.acmeSites = new AcmeSites({ certificates: this.certificates, logger: opts.logger, metrics: opts.metrics, clock: opts.clock, redis, manager: opts.acme });
    this.apply(cfg);
  }

  /** A validated config, at start and on every reload. */
  apply(config: GatewayConfig): void {
    this.server?.applyLimits(config.limits);
    // ACME first: a site that lost `tls.acme` gives its entry up before its files are installed.
    this.acmeSites.apply(config);
    this.files.apply(config);
  }

  /**
   * A reloaded config, applied last and on its own (Gateway.applyConfig): settings OpenSSL
   * refuses (the loader checks them first) leave the certificates in force serving, and
   * nothing else the reload applies is skipped.
   */
  reload(config: GatewayConfig): void {
    try {
      this.apply(config);
    } catch (err) {
      this.opts.logger.error({ err }, 'TLS settings not applied; the certificates and settings in force keep serving');
    }
    // As at start (listen): a reload that removed the last certificate leaves the listener up
    // and every handshake failing, and said nothing.
    if (this.server !== undefined && this.certificates.defaultSite === undefined && !this.acmeSites.active)
      this.opts.logger.warn({ port: config.tls.port }, 'after this reload no site has a usable certificate (sites[].tls): HTTPS handshakes fail until one is installed');
  }

  /** Answers an ACME HTTP-01 challenge for an ACME site's name (the plain listener, before routing); false when it is not one. */
  answerChallenge(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    return this.acmeSites.answer(req, res);
  }

  /**
   * The redirect may send a visitor of `host` to https: the site's certificate names that host,
   * and it is not ACME's temporary self-signed one (either would lock the visitor out, and a 308
   * is remembered by browsers).
   */
  hasCertificate(site: string, host: string): boolean {
    return this.certificates.covers(site, host) && !this.acmeSites.isTemporary(site);
  }

  /** The port written in redirects to https: `tls.redirectPort`, else the HTTPS listener's; undefined without either. */
  redirectPort(config: GatewayConfig): number | undefined {
    return config.tls.redirectPort ?? this.address?.port;
  }

  /** Each ACME site's certificate, renewal time and last error (/status.json). */
  acmeStatus(): SiteStatus[] {
    return this.acmeSites.status();
  }

  /** Creates the HTTPS listener when `tls.port` is set, then listens; undefined without it. */
  async listen(config: GatewayConfig, hooks: Omit<PublicServerOptions, 'limits' | 'logger'>): Promise<AddressInfo | undefined> {
    if (config.tls.port === undefined) return undefined;
    this.server = createSecurePublicServer({ ...hooks, limits: config.limits, logger: this.opts.logger, certificates: this.certificates, http2: config.tls.http2 });
    if (this.certificates.defaultSite === undefined && !this.acmeSites.active)
      this.opts.logger.warn({ port: config.tls.port }, 'tls.port is set but no site has a usable certificate (sites[].tls): HTTPS handshakes fail until one is installed');
    return listenOn(this.server as unknown as http.Server, config.tls.host ?? config.listen.host, config.tls.port, config.listen.backlog);
  }

  /** After every listener is up, not awaited: the CA fetches challenges from the plain listener, and an order (or another instance's renewal lock) must never hold up startup or serving. */
  startAcme(): void {
    this.acmeSites.start();
  }

  /** The HTTPS listener, for the drain; undefined without `tls.port`. */
  get listener(): SecurePublicServer | undefined {
    return this.server;
  }

  get address(): AddressInfo | undefined {
    return addressOf(this.server as http.Server | undefined);
  }

  async close(): Promise<void> {
    this.files.close();
    this.acmeSites.close();
    await closeNow(this.server);
  }
}
