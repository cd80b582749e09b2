/**
 * Automatic HTTPS wired into the gateway: the sites with `tls.acme: true` get their certificates
 * from an ACME manager (tls/acme/manager.ts) and serve them through the HTTPS listener's
 * certificates (certificates.ts), in step with the config:
 *   - a manager exists while some site asks for ACME, built from the top-level `acme` section;
 *     a changed section replaces it (the new one takes up the stored certificates: no order for
 *     a certificate it already has), and the last ACME site leaving closes it;
 *   - start() (once the listeners are up) ensures every ACME site without waiting for it: an
 *     order, or another instance's renewal lock, never holds up startup or serving; apply() (each
 *     reload) ensures a site that is new or whose names changed, and forgets one that left
 *     (no more renewals; its certificate is withdrawn);
 *   - answer(): the plain listener's `GET|HEAD /.well-known/acme-challenge/<token>` for an ACME
 *     site's name, before any routing or caching: 200 with the key authorization for a token of
 *     a pending challenge (this instance's, or another's through Redis), else 404. Never cached,
 *     never forwarded. The same path for any other host goes the usual way (an origin may answer
 *     its own challenges, certbot --webroot for a site with certificate files);
 *   - with the gateway's Redis tier, the manager shares the account, certificates, renewal lock
 *     and challenges through its client, under `<redis.keyPrefix>acme:`.
 * Metrics: crowdgate_acme_orders_total, crowdgate_acme_temporary, crowdgate_acme_challenges_total,
 * and crowdgate_tls_certificate_not_after_seconds for what each ACME site serves.
 *
 * Owns the ACME sites' entries in Certificates and nothing else: a site with certificate files
 * is site-certificates.ts's, and a certificate arriving for a site that is no longer an ACME
 * site (an order that outlived a reload, a replaced manager) is dropped.
 */
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { AcmeConfig, GatewayConfig } from '../config/schema.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { RedisClient } from '../cache/stores/redis-store.js';
import { normaliseHost } from '../server/site-router.js';
import type { Certificates } from './certificates.js';
import { acmeHostnames } from './acme/hostnames.js';
import { ACME_CHALLENGE_PATH, AcmeManager, type AcmeManagerOptions, type InstalledCertificate, type SiteStatus } from './acme/manager.js';
import { DAY_MS } from './acme/renewal.js';

/** What a token in a challenge URL may look like (base64url, RFC 8555 §8.3); anything else is a 404 without a lookup. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

export interface AcmeSitesOptions {
  certificates: Certificates;
  logger: Logger;
  metrics: GatewayMetrics;
  clock: Clock;
  /** The gateway's Redis client and key prefix, when the Redis tier runs (`redis:`). */
  redis?: { client: RedisClient; keyPrefix: string } | undefined;
  /** Manager settings the config does not carry (tests: how fast acme-client polls the CA). */
  manager?: Pick<AcmeManagerOptions, 'poll'> | undefined;
}

export class AcmeSites {
  private manager: AcmeManager | undefined;
  /** The `acme` section the manager was built from (JSON), to see when it changes. */
  private managerSettings: string | undefined;
  /** ACME sites of the config in force and the names each certificate is for. */
  private wanted = new Map<string, string[]>();
  /** Every name of an ACME site: challenges for these are answered here. */
  private names = new Set<string>();
  /** Per site, the names the current manager was last asked to ensure (sorted, joined). */
  private readonly ensured = new Map<string, string>();
  /** ACME sites whose entry in Certificates is ours (installed by the manager). */
  private readonly owned = new Set<string>();
  /** Sites serving the temporary self-signed certificate. */
  private readonly temporary = new Set<string>();
  private started = false;

  constructor(private readonly opts: AcmeSitesOptions) {}

  /** Whether any site of the config in force gets its certificate from ACME. */
  get active(): boolean {
    return this.wanted.size > 0;
  }

  /** Applies a config (start and every reload). Never throws. */
  apply(config: GatewayConfig): void {
    const next = new Map<string, string[]>();
    for (const site of config.sites) if (site.tls?.acme === true) next.set(site.name, acmeHostnames(site.hosts).names);
    for (const site of this.wanted.keys()) if (!next.has(site)) this.withdraw(site, 'no longer an ACME site');
    for (const [site, names] of next) {
      const before = this.wanted.get(site);
      if (before && before.join(',') !== names.join(',')) this.opts.logger.info({ site, before, names }, 'ACME: the site\'s names changed; a certificate for the new names follows');
    }
    this.wanted = next;
    this.names = new Set([...next.values()].flat());
    for (const site of config.sites) {
      if (site.tls?.acme !== true || this.ensured.has(site.name)) continue;
      for (const s of acmeHostnames(site.hosts).skipped)
        this.opts.logger.warn({ site: site.name, host: s.host }, `ACME: ${JSON.stringify(s.host)} is left out of site ${site.name}'s certificate: ${s.reason}`);
    }
    if (next.size === 0) {
      this.closeManager();
      return;
    }
    const settings = JSON.stringify(config.acme);
    if (!this.manager || settings !== this.managerSettings) {
      const made = this.makeManager(config.acme);
      if (!made) return; // logged; the old manager (if any) carries on
      if (this.manager) this.opts.logger.info({ directoryUrl: config.acme.directoryUrl }, 'ACME: the acme section changed; a new ACME client takes over');
      this.closeManager();
      this.manager = made;
      this.managerSettings = settings;
      if (this.started) made.start();
    }
    if (this.started) this.ensureAll();
  }

  /** Begins ensuring every ACME site and the periodic renewal check; call once the listeners are up. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.manager?.start();
    this.ensureAll();
  }

  /**
   * For the plain listener, before anything else: answers an HTTP-01 challenge request for an
   * ACME site's name and returns true; returns false, untouched, for every other request.
   */
  answer(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const manager = this.manager;
    const url = req.url;
    if (manager === undefined || url === undefined || !url.startsWith(ACME_CHALLENGE_PATH)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const host = normaliseHost(req.headers.host);
    if (host === undefined || !this.names.has(host)) return false;
    const end = url.indexOf('?');
    const token = url.slice(ACME_CHALLENGE_PATH.length, end === -1 ? undefined : end);
    const lookup = TOKEN.test(token) ? manager.answerChallenge(token, host) : Promise.resolve(undefined);
    lookup.then(
      (keyAuthorization) => {
        if (res.destroyed) return;
        const head = req.method === 'HEAD';
        if (keyAuthorization === undefined) {
          this.opts.metrics.get('acmeChallenges').inc({ result: 'unknown' });
          this.opts.logger.info({ host, token: token.slice(0, 64) }, 'ACME challenge request for an unknown token: 404');
          const body = 'unknown ACME challenge token\n';
          res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
          res.end(head ? undefined : body);
          return;
        }
        this.opts.metrics.get('acmeChallenges').inc({ result: 'answered' });
        this.opts.logger.info({ host, token }, 'ACME challenge answered');
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': Buffer.byteLength(keyAuthorization), 'cache-control': 'no-store' });
        res.end(head ? undefined : keyAuthorization);
      },
      () => res.destroy(),
    );
    return true;
  }

  /** True while the site serves ACME's temporary self-signed certificate (no redirect to https then). */
  isTemporary(site: string): boolean {
    return this.temporary.has(site);
  }

  /** Each ACME site's certificate, renewal time and last error (for /status.json). */
  status(): SiteStatus[] {
    return this.manager?.status() ?? [];
  }

  /** Stops the renewal timer and the ACME client; attempts under way install nothing. */
  close(): void {
    this.started = false;
    this.closeManager();
  }

  // ---- internals ----

  private makeManager(acme: AcmeConfig): AcmeManager | undefined {
    let caBundle: string | undefined;
    try {
      if (acme.caBundleFile !== undefined) caBundle = readFileSync(acme.caBundleFile, 'utf8');
    } catch (err) {
      this.opts.logger.error({ caBundleFile: acme.caBundleFile, err: (err as Error).message }, 'ACME: cannot read acme.caBundleFile; ACME sites get no new certificate');
      return undefined;
    }
    const redis = this.opts.redis;
    try {
      const manager: AcmeManager = new AcmeManager({
        directoryUrl: acme.directoryUrl,
        ...(acme.email !== undefined ? { email: acme.email } : {}),
        storageDir: acme.storageDir,
        // A Cluster client answers the same few commands (GET, SET NX PX, EVAL on one key, DEL).
        ...(redis ? { redis: { client: redis.client as Redis, keyPrefix: `${redis.keyPrefix}acme:` } } : {}),
        renewBeforeMs: acme.renewBeforeDays * DAY_MS,
        backoff: acme.backoff,
        clock: this.opts.clock,
        ...(caBundle !== undefined ? { caBundle } : {}),
        requestTimeoutMs: acme.requestTimeoutMs,
        checkIntervalMs: acme.checkIntervalMs,
        lockTtlMs: acme.lockTtlMs,
        logger: this.opts.logger,
        ...this.opts.manager,
        onCertificate: (site, cert) => this.install(manager, site, cert),
        onOrder: (site, result) => this.opts.metrics.get('acmeOrders').inc({ site, result }),
      });
      return manager;
    } catch (err) {
      this.opts.logger.error({ err: (err as Error).message }, 'ACME: cannot start the ACME client; ACME sites get no new certificate');
      return undefined;
    }
  }

  private closeManager(): void {
    this.manager?.close();
    this.manager = undefined;
    this.managerSettings = undefined;
    this.ensured.clear();
  }

  private ensureAll(): void {
    const manager = this.manager;
    if (!manager) return;
    for (const [site, names] of this.wanted) {
      const key = [...names].sort().join(',');
      if (this.ensured.get(site) === key) continue;
      this.ensured.set(site, key);
      this.opts.logger.info({ site, names }, 'ACME: ensuring a certificate');
      manager.ensure(site, names).catch((err: unknown) => {
        if (manager !== this.manager || !this.wanted.has(site)) return; // withdrawn before it ran
        if (this.ensured.get(site) === key) this.ensured.delete(site);
        this.opts.logger.error({ site, err: (err as Error).message }, `ACME: cannot set up site ${site}; it gets no certificate until the next reload`);
      });
    }
  }

  /** The manager installed a certificate (temporary, issued, renewed, or another instance's). */
  private install(from: AcmeManager, site: string, cert: InstalledCertificate): void {
    if (from !== this.manager || !this.wanted.has(site)) return;
    try {
      this.opts.certificates.set(site, { cert: cert.cert, key: cert.key });
    } catch (err) {
      this.opts.logger.error({ site, serial: cert.serial, err: (err as Error).message }, `ACME: certificate for site ${site} refused by the TLS layer; the one before keeps serving`);
      return;
    }
    this.owned.add(site);
    if (cert.temporary) this.temporary.add(site);
    else this.temporary.delete(site);
    this.opts.metrics.get('tlsCertificateNotAfter').set({ site }, Math.floor(cert.notAfter / 1000));
    this.opts.metrics.get('acmeTemporary').set({ site }, cert.temporary ? 1 : 0);
  }

  private withdraw(site: string, why: string): void {
    this.manager?.forget(site);
    this.ensured.delete(site);
    this.temporary.delete(site);
    if (this.owned.delete(site)) {
      this.opts.certificates.delete(site);
      this.opts.metrics.get('tlsCertificateNotAfter').remove({ site });
    }
    this.opts.metrics.get('acmeTemporary').remove({ site });
    this.opts.logger.info({ site, why }, 'ACME: site withdrawn; its certificate is no longer served or renewed');
  }
}
