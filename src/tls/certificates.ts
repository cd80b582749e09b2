/**
 * The HTTPS listener's certificates: one per site, chosen per connection by the client's SNI
 * name against the site's `hosts` (exact, then the longest `*.suffix`, then `*`, as the Host
 * router matches them), and a default for clients that send no name or an unknown one.
 *
 * THE SEAM where certificates come in, from files or not: anything that holds a certificate —
 * site-certificates.ts for `sites[].tls` PEM files, acme-sites.ts for `tls.acme` sites (the ACME
 * manager in src/tls/acme/) — calls `set(siteName, { cert, key })` at any time; the next
 * handshake for that site's names uses it, connections already open keep theirs. Each caller
 * sets and deletes only its own sites' entries. `delete(siteName)` withdraws
 * one. `set` refuses (throws) a pair OpenSSL cannot use, and the old certificate stays.
 *
 * Every context shares one set of session-ticket keys (made once per process), so a session
 * resumed after a certificate reload or a config change still resumes.
 *
 * Owns the selection and the TLS contexts. It does not read files (material.ts) or watch them
 * (site-certificates.ts), and knows nothing about the request path.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { createSecureContext, type SecureContext, type SecureVersion } from 'node:tls';
import { SiteRouter } from '../server/site-router.js';

/** The TLS settings every context is built with (the `tls` config section). */
export interface TlsContextOptions {
  readonly minVersion: SecureVersion;
  readonly ciphers: string;
}

export interface PemPair {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

interface SiteHosts {
  readonly name: string;
  readonly hosts: readonly string[];
}

/** SiteRouter's shape, for the sites that have a certificate. */
interface Routed {
  readonly name: string;
  readonly config: { readonly hosts: readonly string[] };
}

export class Certificates {
  /** 48 bytes: the session-ticket keys of every context (tls.Server's ticketKeys format). */
  readonly ticketKeys: Buffer = randomBytes(48);
  /** One session-id context for every context (TLS 1.2 session ids resume across them). */
  private readonly sessionIdContext = randomBytes(16).toString('hex');
  private readonly pairs = new Map<string, PemPair>();
  private readonly contexts = new Map<string, SecureContext>();
  /** The presented certificate of each site, for the names it covers. */
  private readonly leaves = new Map<string, X509Certificate>();
  private sites: readonly SiteHosts[] = [];
  private router = new SiteRouter<Routed>([]);
  private defaultName: string | undefined;
  private readonly listeners: Array<() => void> = [];

  constructor(private options: TlsContextOptions) {}

  /** The sites and their hosts (config order), and the TLS settings; rebuilds every context when those changed. */
  configure(sites: readonly SiteHosts[], options: TlsContextOptions = this.options): void {
    const optionsChanged = options.minVersion !== this.options.minVersion || options.ciphers !== this.options.ciphers;
    if (optionsChanged) {
      // Every context is built before anything is changed: settings OpenSSL refuses throw here
      // and leave the old settings and contexts serving (the loader refuses such a config first).
      const previous = this.options;
      this.options = options;
      let rebuilt: Array<[string, SecureContext]>;
      try {
        createSecureContext(this.common());
        rebuilt = [...this.pairs].map(([name, pair]) => [name, this.build(pair)]);
      } catch (err) {
        this.options = previous;
        throw err;
      }
      for (const [name, context] of rebuilt) this.contexts.set(name, context);
    }
    this.sites = sites.map((s) => ({ name: s.name, hosts: [...s.hosts] }));
    this.reindex();
  }

  /**
   * Installs (or replaces) a site's certificate chain and key. Throws, changing nothing, when
   * OpenSSL cannot build a context from them (a key that does not match, garbage PEM).
   */
  set(siteName: string, pair: PemPair): void {
    const context = this.build(pair);
    const leaf = new X509Certificate(pair.cert); // the chain's first certificate: the one presented
    this.pairs.set(siteName, pair);
    this.contexts.set(siteName, context);
    this.leaves.set(siteName, leaf);
    this.reindex();
  }

  /** Withdraws a site's certificate; its names then get the default one. */
  delete(siteName: string): void {
    if (!this.pairs.delete(siteName)) return;
    this.contexts.delete(siteName);
    this.leaves.delete(siteName);
    this.reindex();
  }

  has(siteName: string): boolean {
    return this.contexts.has(siteName);
  }

  /**
   * The site's certificate names `host` (a DNS name, wildcards as TLS clients match them, or an
   * IP literal against its IP addresses): a client sent there would accept it.
   */
  covers(siteName: string, host: string): boolean {
    const leaf = this.leaves.get(siteName);
    if (leaf === undefined) return false;
    const name = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host.replace(/\.$/, '');
    return isIP(name) !== 0 ? leaf.checkIP(name) !== undefined : leaf.checkHost(name) !== undefined;
  }

  /** The site whose certificate answers a client that sends no SNI name or one no site with a certificate lists. */
  get defaultSite(): string | undefined {
    return this.defaultName;
  }

  /** The context for an SNI name (undefined, garbage or unknown: the default); undefined when no site has a certificate. */
  contextFor(servername: string | undefined): SecureContext | undefined {
    const site = servername ? this.router.match(servername) : undefined;
    return this.contexts.get(site?.name ?? this.defaultName ?? '');
  }

  /** The site whose certificate contextFor() picks; for logs and tests. */
  siteFor(servername: string | undefined): string | undefined {
    return (servername ? this.router.match(servername)?.name : undefined) ?? this.defaultName;
  }

  /** The default pair and TLS settings, for tls.Server#setSecureContext (the no-SNI path). */
  defaultSecureOptions(): { cert?: string | Buffer; key?: string | Buffer; minVersion: SecureVersion; ciphers: string; ticketKeys: Buffer; sessionIdContext: string } {
    const pair = this.defaultName === undefined ? undefined : this.pairs.get(this.defaultName);
    // The same ticket keys every time: setSecureContext() would otherwise start new ones, and every ticket issued before would stop resuming.
    return { ...this.common(), ticketKeys: this.ticketKeys, ...(pair ? { cert: pair.cert, key: pair.key } : {}) };
  }

  /** Called after every change (a certificate set or withdrawn, a new config): the listener refreshes its default. */
  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  private common(): { minVersion: SecureVersion; ciphers: string; sessionIdContext: string } {
    return { minVersion: this.options.minVersion, ciphers: this.options.ciphers, sessionIdContext: this.sessionIdContext };
  }

  private build(pair: PemPair): SecureContext {
    // Tickets are sealed with the listener's own (default) context's keys whatever context SNI
    // picks (OpenSSL keeps the session context), so defaultSecureOptions() carries ticketKeys.
    return createSecureContext({ ...this.common(), cert: pair.cert, key: pair.key, honorCipherOrder: true });
  }

  private reindex(): void {
    const withCert = this.sites.filter((s) => this.contexts.has(s.name));
    this.router = new SiteRouter<Routed>(withCert.map((s) => ({ name: s.name, config: { hosts: s.hosts } })));
    const catchAll = withCert.find((s) => s.hosts.some((h) => h.trim() === '*'));
    // Sites configured first; then certificates installed for names the config does not list.
    this.defaultName = catchAll?.name ?? withCert[0]?.name ?? this.contexts.keys().next().value;
    for (const fn of this.listeners) fn();
  }
}
