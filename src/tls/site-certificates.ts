/**
 * `sites[].tls` PEM files -> the listener's certificates (certificates.ts), kept live:
 * - on every config (start and each reload) each site's files are read; a site that lost its
 *   `tls` files (certFile/keyFile) loses its certificate; `tls.acme` sites are acme-sites.ts's;
 * - each file is watched (config/watch.ts: the directory, so a rename over the file — certbot,
 *   Kubernetes secrets — is seen); a change re-reads the site's pair a moment later, once both
 *   halves of a renewal had time to land;
 * - a pair that fails the checks (material.ts) never replaces a working one: the error is
 *   logged with the file and the reason, `crowdgate_tls_certificate_loads_total{result="failure"}`
 *   counts it, and the old certificate keeps serving. The loader (config/load.ts) refuses the
 *   same problems in a config file before it ever gets here.
 *
 * Owns the files and their watches. Selection by SNI is certificates.ts; the loader's checks
 * share material.ts.
 */
import type { Logger } from 'pino';
import { certificateFilesOf, type GatewayConfig, type SiteCertificateFiles } from '../config/schema.js';
import { watchConfig, type ConfigWatcher } from '../config/watch.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { Certificates } from './certificates.js';
import { readCertificateFiles } from './material.js';

/** Wait after a file event before reading a pair (a renewal writes the chain and the key one after the other). */
export const CERT_SETTLE_MS = 150;

interface Watched {
  files: SiteCertificateFiles;
  watchers: ConfigWatcher[];
  timer?: NodeJS.Timeout;
}

export class SiteCertificates {
  private readonly watched = new Map<string, Watched>();
  private closed = false;

  constructor(
    private readonly certificates: Certificates,
    private readonly logger: Logger,
    private readonly metrics?: GatewayMetrics,
    private readonly settleMs: number = CERT_SETTLE_MS,
  ) {}

  /** Applies a config: every site's TLS settings and files. Never throws; a bad pair keeps the old one. */
  apply(config: GatewayConfig): void {
    this.certificates.configure(
      config.sites.map((s) => ({ name: s.name, hosts: s.hosts })),
      { minVersion: config.tls.minVersion, ciphers: config.tls.ciphers },
    );
    const wanted = new Map(
      config.sites.flatMap((s) => {
        const files = certificateFilesOf(s);
        return files ? [[s.name, files] as const] : [];
      }),
    );
    for (const [name, w] of this.watched) {
      if (wanted.has(name)) continue;
      this.unwatch(w);
      this.watched.delete(name);
      this.certificates.delete(name);
      this.metrics?.get('tlsCertificateNotAfter').remove({ site: name });
    }
    for (const [name, files] of wanted) {
      const known = this.watched.get(name);
      if (known && known.files.certFile === files.certFile && known.files.keyFile === files.keyFile) continue;
      if (known) this.unwatch(known);
      const w: Watched = { files, watchers: [] };
      this.watched.set(name, w);
      this.load(name, files, 'config');
      if (!this.closed) w.watchers = [files.certFile, files.keyFile].map((file) => watchConfig({ file, debounceMs: this.settleMs, onChange: () => this.changed(name) }));
    }
  }

  /** Re-reads one site's pair now (the file watch calls this; tests may too). */
  reload(siteName: string): boolean {
    const w = this.watched.get(siteName);
    return w ? this.load(siteName, w.files, 'file') : false;
  }

  close(): void {
    this.closed = true;
    for (const w of this.watched.values()) this.unwatch(w);
  }

  private changed(siteName: string): void {
    const w = this.watched.get(siteName);
    if (!w || this.closed) return;
    if (w.timer) clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = undefined;
      if (this.watched.get(siteName) === w) this.load(siteName, w.files, 'file');
    }, this.settleMs);
  }

  private load(site: string, files: SiteCertificateFiles, why: 'config' | 'file'): boolean {
    const result = readCertificateFiles(files.certFile, files.keyFile);
    const kept = this.certificates.has(site) ? '; the certificate loaded before keeps serving' : '; the site has no certificate until this is fixed';
    if (!result.ok) {
      this.metrics?.get('tlsCertificateLoads').inc({ site, result: 'failure' });
      this.logger.error({ site, certFile: files.certFile, keyFile: files.keyFile, problems: result.problems.map((p) => p.message) }, `certificate for site ${site} refused: ${result.problems.map((p) => p.message).join('; ')}${kept}`);
      return false;
    }
    try {
      this.certificates.set(site, { cert: result.material.cert, key: result.material.key });
    } catch (err) {
      this.metrics?.get('tlsCertificateLoads').inc({ site, result: 'failure' });
      this.logger.error({ site, certFile: files.certFile, err }, `certificate for site ${site} refused: ${(err as Error).message}${kept}`);
      return false;
    }
    this.metrics?.get('tlsCertificateLoads').inc({ site, result: 'success' });
    this.metrics?.get('tlsCertificateNotAfter').set({ site }, Math.floor(result.material.notAfter / 1000));
    for (const warning of result.warnings) this.logger.warn({ site, certFile: files.certFile }, warning);
    this.logger.info(
      { site, certFile: files.certFile, subject: result.material.subject, altNames: result.material.altNames, notAfter: new Date(result.material.notAfter).toISOString(), why },
      `certificate for site ${site} loaded`,
    );
    return true;
  }

  private unwatch(w: Watched): void {
    if (w.timer) clearTimeout(w.timer);
    for (const watcher of w.watchers) watcher.close();
    w.watchers = [];
  }
}
