/**
 * The ACME (RFC 8555) certificate manager: per site, a certificate for the site's hostnames,
 * issued through HTTP-01 by acme-client, kept on disk (and in Redis when shared), renewed before
 * it expires, and handed to whoever serves TLS through `onCertificate`.
 *
 * Life of a site (`ensure(site, hostnames)`):
 *   1. A stored certificate (disk, or Redis when shared) that covers the names, comes from this
 *      directory, matches its key and has not expired is installed; no order is placed (restart).
 *   2. Otherwise a temporary self-signed certificate (self-signed.ts) is installed first, so TLS
 *      answers at once, then an order is placed: the key authorization of each HTTP-01 challenge is
 *      kept here (and published in Redis) for the plain HTTP listener to answer
 *      `GET /.well-known/acme-challenge/<token>` with (`handleHttp01`, `answerChallenge`).
 *   3. `checkRenewals()` (run every `checkIntervalMs` by `start()`, or by hand) renews a certificate
 *      once the clock passes its renewal time (renewal.ts) and retries a failed attempt after an
 *      exponential backoff with jitter; until an attempt succeeds the installed certificate stays.
 * With Redis, one instance at a time holds a site's renewal lock (SET NX PX); the others wait
 * for the certificate it stores, and take up a certificate another instance renewed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import acme from 'acme-client';
import type { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { type Clock, systemClock } from '../../clock.js';
import { registerAcmeOrigin } from './acme-http.js';
import { certificateFacts, coversAll } from './certs.js';
import { DiskStore, type StoredAccount, type StoredCertificate, assertSiteName } from './disk-store.js';
import { type BackoffPolicy, DEFAULT_BACKOFF, DEFAULT_RENEW_BEFORE_MS, backoffDelay, renewalTime } from './renewal.js';
import { createTemporaryCertificate } from './self-signed.js';
import { type SharedChallenge, SharedStore } from './shared-store.js';

/** A certificate as handed to the TLS side. */
export interface InstalledCertificate {
  /** PEM chain, leaf first. */
  cert: string;
  /** PEM private key. */
  key: string;
  notBefore: number;
  notAfter: number;
  serial: string;
  hostnames: string[];
  /** True for the self-signed stand-in served until ACME issues the real certificate. */
  temporary: boolean;
}

export interface AcmeManagerOptions {
  /** The CA's ACME directory, e.g. https://acme-v02.api.letsencrypt.org/directory. */
  directoryUrl: string;
  /** Contact for the account (mailto:); optional for CAs that allow it. */
  email?: string;
  /** A PEM account key to use instead of the stored (or newly made) one. */
  accountKey?: string;
  /** Where account, certificates and keys are kept (created 0700; key files 0600). */
  storageDir: string;
  /** Share account, certificates, renewal lock and challenges with other instances through Redis. */
  redis?: { client: Redis; keyPrefix?: string; timeoutMs?: number };
  /** Renew this long before notAfter (default 30 days), at most a third of the certificate's lifetime. */
  renewBeforeMs?: number;
  /** Delays between failed attempts (default: 1 min doubling to 6 h, up to 50% jitter). */
  backoff?: Partial<BackoffPolicy>;
  clock?: Clock;
  /** [0, 1) source for the jitter (tests). */
  random?: () => number;
  /** PEM CA certificate(s) to trust for the ACME server's HTTPS (a test CA's own root). */
  caBundle?: string | Buffer;
  /** Timeout of one HTTP request to the CA (default 30 s). */
  requestTimeoutMs?: number;
  /** acme-client's polling of pending challenges and orders (default 10 polls, 1 s to 10 s apart). */
  poll?: { attempts: number; minMs: number; maxMs: number };
  logger?: Logger;
  /** Called each time a site's certificate is installed: the temporary one, the first issued, each renewal. */
  onCertificate?: (site: string, cert: InstalledCertificate) => void;
  /** Called when an attempt of this instance to have a certificate issued ends: issued and installed, or failed (then retried after the backoff). */
  onOrder?: (site: string, result: 'success' | 'failure') => void;
  /** How often `start()` runs checkRenewals (default 10 min). */
  checkIntervalMs?: number;
  /** Lifetime of the Redis renewal lock (default 10 min): longer than an order takes, short enough to recover from a crashed holder. */
  lockTtlMs?: number;
  /** How long an instance that did not get the lock waits for the holder's certificate (default lockTtlMs), polling every peerPollMs (default 1 s). */
  waitForPeerMs?: number;
  peerPollMs?: number;
  /** How long a published challenge stays in Redis (default 10 min). */
  challengeTtlMs?: number;
}

interface SiteState {
  name: string;
  hostnames: string[];
  current?: InstalledCertificate;
  /** When the installed certificate is due for renewal (-Infinity for the temporary one: due at once). */
  renewAt: number;
  failures: number;
  nextAttemptAt: number;
  lastError?: string;
  inFlight?: Promise<void>;
}

export interface SiteStatus {
  site: string;
  hostnames: string[];
  temporary: boolean | undefined;
  serial: string | undefined;
  notAfter: number | undefined;
  renewAt: number | undefined;
  failures: number;
  nextAttemptAt: number;
  lastError: string | undefined;
}

export const ACME_CHALLENGE_PATH = '/.well-known/acme-challenge/';

function normalizeHost(host: string): string {
  const h = host.trim().toLowerCase();
  // [v6]:port, name:port, name
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.indexOf(':');
  return (colon === -1 ? h : h.slice(0, colon)).replace(/\.$/, '');
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class AcmeManager {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly disk: DiskStore;
  private readonly shared: SharedStore | undefined;
  private readonly backoff: BackoffPolicy;
  private readonly renewBeforeMs: number;
  private readonly lockTtlMs: number;
  private readonly sites = new Map<string, SiteState>();
  /** Per site, how many times it was forgotten: an ensure() asked for before a forget() does not bring the site back. */
  private readonly epochs = new Map<string, number>();
  /** The last ensure() per site, settled (never rejects): the next one waits for it. */
  private readonly ensuring = new Map<string, Promise<void>>();
  /** token -> challenge, for the challenges this instance created. */
  private readonly challenges = new Map<string, SharedChallenge>();
  private readonly disposeOrigin: () => void;
  private timer: NodeJS.Timeout | undefined;
  private account: Promise<StoredAccount> | undefined;
  private closed = false;
  /** Orders this instance placed (for status and tests). */
  ordersPlaced = 0;

  constructor(private readonly opts: AcmeManagerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.logger ?? pino({ level: 'silent' })).child({ component: 'acme' });
    this.disk = new DiskStore(opts.storageDir);
    this.shared = opts.redis ? new SharedStore(opts.redis.client, opts.redis.keyPrefix, opts.redis.timeoutMs) : undefined;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.renewBeforeMs = opts.renewBeforeMs ?? DEFAULT_RENEW_BEFORE_MS;
    this.lockTtlMs = opts.lockTtlMs ?? 600_000;
    let url: URL;
    try {
      url = new URL(opts.directoryUrl);
    } catch {
      throw new Error(`ACME: directoryUrl ${JSON.stringify(opts.directoryUrl)} is not a URL`);
    }
    if (url.protocol !== 'https:') throw new Error(`ACME: directoryUrl ${opts.directoryUrl} must be https: (RFC 8555 §6.1)`);
    this.disposeOrigin = registerAcmeOrigin(opts.directoryUrl, { ca: opts.caBundle, timeoutMs: opts.requestTimeoutMs ?? 30_000 });
  }

  /** Runs checkRenewals every checkIntervalMs (timer unref'd: it never keeps the process alive). */
  start(): void {
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => {
      this.checkRenewals().catch((err) => this.log.error({ err }, 'ACME renewal check failed'));
    }, this.opts.checkIntervalMs ?? 600_000);
    this.timer.unref();
  }

  /** Stops the timer and closes the connections to the CA; in-flight attempts finish on their own. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.disposeOrigin();
  }

  /**
   * Stops managing a site (it left the config, or lost `tls.acme`): no renewal from now on, and an
   * attempt under way installs nothing. What is stored on disk stays (a site that comes back uses it).
   */
  forget(site: string): void {
    this.sites.delete(site);
    this.epochs.set(site, this.epochOf(site) + 1);
  }

  private epochOf(site: string): number {
    return this.epochs.get(site) ?? 0;
  }

  /** The certificate installed for a site now (temporary or issued), if any. */
  certificate(site: string): InstalledCertificate | undefined {
    return this.sites.get(site)?.current;
  }

  status(): SiteStatus[] {
    return [...this.sites.values()].map((s) => ({
      site: s.name,
      hostnames: s.hostnames,
      temporary: s.current?.temporary,
      serial: s.current?.serial,
      notAfter: s.current?.notAfter,
      renewAt: s.current && !s.current.temporary ? s.renewAt : undefined,
      failures: s.failures,
      nextAttemptAt: s.nextAttemptAt,
      lastError: s.lastError,
    }));
  }

  /**
   * Makes sure `site` has a certificate for `hostnames`: a stored one if valid, else the temporary
   * one at once and then an issued one. Resolves with what is installed after the first attempt;
   * never rejects for a CA or Redis failure (that is logged and retried by checkRenewals), only
   * for a bad site name or hostname list, a storage directory that cannot be created, or a
   * forget(site) that came after this call and before it ran.
   */
  ensure(site: string, hostnames: readonly string[]): Promise<InstalledCertificate> {
    // One ensure per site at a time (two at once would make two temporary certificates).
    const previous = this.ensuring.get(site) ?? Promise.resolve();
    const epoch = this.epochOf(site);
    const run = previous.then(
      () => this.ensureNow(site, hostnames, epoch),
      () => this.ensureNow(site, hostnames, epoch),
    );
    const settled = run.then(
      () => {},
      () => {},
    );
    this.ensuring.set(site, settled);
    void settled.then(() => {
      if (this.ensuring.get(site) === settled) this.ensuring.delete(site);
    });
    return run;
  }

  private async ensureNow(site: string, hostnames: readonly string[], epoch: number): Promise<InstalledCertificate> {
    assertSiteName(site);
    if (this.epochOf(site) !== epoch) throw new Error(`ACME: site ${site} was forgotten before its certificate was ensured`);
    const names = [...new Set(hostnames.map((h) => normalizeHost(h)))];
    if (names.length === 0) throw new Error(`ACME: site ${site} has no hostnames`);
    for (const n of names) {
      if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(n) || n.length > 253)
        throw new Error(`ACME: site ${site}: ${JSON.stringify(n)} is not a DNS name a CA can issue for`);
      if (n.startsWith('*.')) throw new Error(`ACME: site ${site}: ${n}: a wildcard name needs the DNS-01 challenge; this manager answers HTTP-01 only`);
    }
    let state = this.sites.get(site);
    if (!state) {
      state = { name: site, hostnames: names, renewAt: Infinity, failures: 0, nextAttemptAt: 0 };
      this.sites.set(site, state);
    } else if ([...names].sort().join(',') !== [...state.hostnames].sort().join(',')) {
      state.hostnames = names;
      state.renewAt = -Infinity; // the installed certificate may not cover the new names: due now
      state.failures = 0;
      state.nextAttemptAt = 0;
    }
    await this.disk.init();
    if (!state.current || state.current.temporary) {
      const stored = await this.loadStored(state);
      if (stored) this.install(state, stored);
    }
    // A real certificate for fewer names (the site gained a name) stays until the new one arrives:
    // the names it covers keep working. Only a temporary one is made again for the new names.
    if (!state.current || (state.current.temporary && !coversAll(state.current.hostnames, names))) {
      const temp = await createTemporaryCertificate(names, this.clock.now());
      this.install(state, { ...temp, serial: certificateFacts(temp.cert).serial, hostnames: names, temporary: true });
    }
    const now = this.clock.now();
    if (this.sites.get(site) !== state) return state.current!; // forgotten meanwhile: no order
    if (now >= state.renewAt && now >= state.nextAttemptAt) await this.attempt(state);
    return state.current!;
  }

  /**
   * One pass over the sites: take up a certificate another instance stored, renew what is due,
   * retry what failed once its backoff has passed, replace an expiring temporary certificate.
   */
  async checkRenewals(): Promise<void> {
    // Sites side by side: one waiting on another instance's lock must not hold up the others.
    await Promise.all([...this.sites.values()].map((state) => this.checkSite(state)));
  }

  private async checkSite(state: SiteState): Promise<void> {
    if (this.closed) return;
    try {
      if (this.shared) {
        const fromPeer = await this.loadShared(state);
        if (fromPeer && this.isNewer(state, fromPeer)) {
          this.install(state, fromPeer);
          await this.saveToDisk(state.name, fromPeer);
        }
      }
      const now = this.clock.now();
      if (state.current?.temporary && now >= state.current.notAfter - (state.current.notAfter - state.current.notBefore) / 3) {
        const temp = await createTemporaryCertificate(state.hostnames, now);
        this.install(state, { ...temp, serial: certificateFacts(temp.cert).serial, hostnames: state.hostnames, temporary: true });
      }
      if (now >= state.renewAt && now >= state.nextAttemptAt) await this.attempt(state);
    } catch (err) {
      this.log.error({ err, site: state.name }, 'ACME check of a site failed');
    }
  }

  /** The key authorization for an HTTP-01 token this instance created, if `host` (when given) is one of its names. */
  challengeResponse(token: string, host?: string): string | undefined {
    const c = this.challenges.get(token);
    if (!c) return undefined;
    if (host !== undefined && !c.hostnames.includes(normalizeHost(host))) return undefined;
    return c.keyAuthorization;
  }

  /** Like challengeResponse, then asks Redis (a challenge another instance published); undefined if unknown or Redis fails. */
  async answerChallenge(token: string, host?: string): Promise<string | undefined> {
    const local = this.challengeResponse(token, host);
    if (local !== undefined || !this.shared) return local;
    let c: SharedChallenge | undefined;
    try {
      c = await this.shared.lookupChallenge(token);
    } catch (err) {
      this.log.warn({ err, token }, 'ACME challenge lookup in redis failed');
      return undefined;
    }
    if (!c) return undefined;
    if (host !== undefined && !c.hostnames.includes(normalizeHost(host))) return undefined;
    return c.keyAuthorization;
  }

  /**
   * For the plain HTTP listener: answers `GET|HEAD /.well-known/acme-challenge/<token>` (200 with
   * the key authorization, or 404) and returns true; returns false, untouched, for any other request.
   */
  handleHttp01(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url ?? '';
    if (!url.startsWith(ACME_CHALLENGE_PATH)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const token = url.slice(ACME_CHALLENGE_PATH.length).split('?')[0]!;
    this.answerChallenge(token, req.headers.host ?? '').then(
      (body) => {
        if (res.destroyed) return;
        if (body === undefined) {
          res.writeHead(404, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : 'unknown ACME challenge\n');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      () => res.destroy(),
    );
    return true;
  }

  // ---- internals ----

  private install(state: SiteState, cert: InstalledCertificate): void {
    state.current = cert;
    // Due at once: a temporary certificate, and one that misses a name the site now has.
    state.renewAt = cert.temporary || !coversAll(cert.hostnames, state.hostnames) ? -Infinity : renewalTime(cert.notBefore, cert.notAfter, this.renewBeforeMs);
    if (this.sites.get(state.name) !== state) return; // forgotten meanwhile: nobody serves it
    this.log.info(
      { site: state.name, serial: cert.serial, notAfter: new Date(cert.notAfter).toISOString(), temporary: cert.temporary },
      cert.temporary ? 'ACME: temporary self-signed certificate installed' : 'ACME: certificate installed',
    );
    try {
      this.opts.onCertificate?.(state.name, cert);
    } catch (err) {
      this.log.error({ err, site: state.name }, 'ACME onCertificate callback threw');
    }
  }

  /** Whether a certificate another instance stored should replace ours: it covers our names and is not older. */
  private isNewer(state: SiteState, candidate: InstalledCertificate): boolean {
    const current = state.current;
    if (!coversAll(candidate.hostnames, state.hostnames)) return false;
    if (!current || current.temporary || !coversAll(current.hostnames, state.hostnames)) return true;
    return candidate.serial !== current.serial && candidate.notAfter >= current.notAfter;
  }

  /** A stored certificate, checked: parses, key matches, same directory, not expired (it may lack a name: install() makes it due). */
  private usable(state: SiteState, stored: StoredCertificate | undefined, where: string): InstalledCertificate | undefined {
    if (!stored) return undefined;
    try {
      const facts = certificateFacts(stored.cert, stored.key);
      if (stored.directoryUrl !== this.opts.directoryUrl) {
        this.log.info({ site: state.name, where, directoryUrl: stored.directoryUrl }, 'ACME: stored certificate is from another directory; not used');
        return undefined;
      }
      if (!coversAll(facts.names, state.hostnames))
        this.log.info({ site: state.name, where, names: facts.names }, 'ACME: stored certificate does not cover all the hostnames; served for the names it has until a new one is issued');
      if (this.clock.now() >= facts.notAfter) {
        this.log.info({ site: state.name, where }, 'ACME: stored certificate has expired; not used');
        return undefined;
      }
      return { cert: stored.cert, key: stored.key, notBefore: facts.notBefore, notAfter: facts.notAfter, serial: facts.serial, hostnames: facts.names, temporary: false };
    } catch (err) {
      this.log.error({ site: state.name, where, err: messageOf(err) }, 'ACME: stored certificate is unreadable; not used');
      return undefined;
    }
  }

  private async loadShared(state: SiteState): Promise<InstalledCertificate | undefined> {
    if (!this.shared) return undefined;
    return this.usable(state, await this.shared.loadCertificate(state.name), 'redis');
  }

  private async loadStored(state: SiteState): Promise<InstalledCertificate | undefined> {
    let fromDisk: InstalledCertificate | undefined;
    try {
      fromDisk = this.usable(state, await this.disk.loadCertificate(state.name), 'disk');
    } catch (err) {
      this.log.error({ site: state.name, err: messageOf(err) }, 'ACME: reading the stored certificate failed');
    }
    let fromShared: InstalledCertificate | undefined;
    try {
      fromShared = await this.loadShared(state);
    } catch (err) {
      this.log.warn({ site: state.name, err: messageOf(err) }, 'ACME: reading the shared certificate from redis failed');
    }
    // Prefer the one covering all the names, then the later notAfter.
    const covers = (c: InstalledCertificate) => coversAll(c.hostnames, state.hostnames);
    const sharedIsBetter =
      fromShared !== undefined &&
      (fromDisk === undefined || (covers(fromShared) && !covers(fromDisk)) || (covers(fromShared) === covers(fromDisk) && fromShared.notAfter > fromDisk.notAfter));
    if (fromShared && sharedIsBetter) {
      await this.saveToDisk(state.name, fromShared);
      return fromShared;
    }
    return fromDisk;
  }

  private async saveToDisk(site: string, cert: InstalledCertificate): Promise<void> {
    try {
      await this.disk.saveCertificate(site, { cert: cert.cert, key: cert.key, hostnames: cert.hostnames, directoryUrl: this.opts.directoryUrl }, cert);
    } catch (err) {
      this.log.error({ site, err: messageOf(err) }, 'ACME: writing the certificate to the storage directory failed');
    }
  }

  /** One attempt at a certificate, deduplicated per site; failures are recorded for the backoff, never thrown. */
  private attempt(state: SiteState): Promise<void> {
    if (state.inFlight) return state.inFlight;
    if (this.sites.get(state.name) !== state) return Promise.resolve(); // forgotten: no order
    const run = (async () => {
      try {
        await this.obtain(state);
        state.failures = 0;
        state.nextAttemptAt = 0;
        state.lastError = undefined;
      } catch (err) {
        state.failures++;
        const delay = backoffDelay(state.failures, this.backoff, this.opts.random);
        state.nextAttemptAt = this.clock.now() + delay;
        state.lastError = messageOf(err);
        this.log.error(
          { site: state.name, err: state.lastError, failures: state.failures, retryInMs: delay, serving: state.current?.temporary ? 'temporary' : state.current?.serial },
          'ACME: certificate attempt failed; retrying after backoff',
        );
      }
    })();
    state.inFlight = run.finally(() => {
      state.inFlight = undefined;
    });
    return state.inFlight;
  }

  private async obtain(state: SiteState): Promise<void> {
    if (this.closed) throw new Error('manager closed');
    if (!this.shared) {
      await this.issue(state);
      return;
    }
    const owner = await this.shared.tryLock(state.name, this.lockTtlMs);
    if (owner === undefined) {
      await this.waitForPeer(state);
      return;
    }
    try {
      // Another instance may have renewed between our last look and our lock.
      const fromPeer = await this.loadShared(state);
      if (fromPeer && this.isNewer(state, fromPeer) && this.clock.now() < renewalTime(fromPeer.notBefore, fromPeer.notAfter, this.renewBeforeMs)) {
        this.install(state, fromPeer);
        await this.saveToDisk(state.name, fromPeer);
        return;
      }
      await this.issue(state);
    } finally {
      await this.shared.unlock(state.name, owner).catch((err) => this.log.warn({ site: state.name, err: messageOf(err) }, 'ACME: releasing the renewal lock failed (it expires by itself)'));
    }
  }

  /** Another instance holds the lock: poll Redis for the certificate it will store, for at most waitForPeerMs. */
  private async waitForPeer(state: SiteState): Promise<void> {
    const pollMs = Math.max(10, this.opts.peerPollMs ?? 1_000);
    const polls = Math.ceil((this.opts.waitForPeerMs ?? this.lockTtlMs) / pollMs);
    this.log.info({ site: state.name }, 'ACME: another instance holds the renewal lock; waiting for its certificate');
    for (let i = 0; i < polls && !this.closed; i++) {
      await new Promise((r) => setTimeout(r, pollMs));
      // Whatever the holder stored since is the answer: it was issued just now.
      const fromPeer = await this.loadShared(state);
      if (fromPeer && this.isNewer(state, fromPeer)) {
        this.install(state, fromPeer);
        await this.saveToDisk(state.name, fromPeer);
        return;
      }
    }
    throw new Error('another instance holds the renewal lock and stored no new certificate in time');
  }

  private getAccount(): Promise<StoredAccount> {
    this.account ??= this.loadOrCreateAccount().catch((err: unknown) => {
      this.account = undefined;
      throw err;
    });
    return this.account;
  }

  private async loadOrCreateAccount(): Promise<StoredAccount> {
    const directoryUrl = this.opts.directoryUrl;
    if (this.opts.accountKey !== undefined) {
      const stored = (await this.shared?.loadAccount(directoryUrl)) ?? (await this.loadDiskAccount());
      return { directoryUrl, key: this.opts.accountKey, ...(stored?.key === this.opts.accountKey && stored.accountUrl ? { accountUrl: stored.accountUrl } : {}) };
    }
    let account = (await this.shared?.loadAccount(directoryUrl)) ?? (await this.loadDiskAccount());
    if (!account) {
      account = { directoryUrl, key: (await acme.crypto.createPrivateEcdsaKey('P-256')).toString() };
      if (this.shared) account = await this.shared.offerAccount(account);
    }
    await this.disk.saveAccount(account);
    return account;
  }

  /** The account on disk; an unreadable file is set aside (and a new account made), or issuance would fail on it forever. */
  private async loadDiskAccount(): Promise<StoredAccount | undefined> {
    try {
      return await this.disk.loadAccount(this.opts.directoryUrl);
    } catch (err) {
      const aside = await this.disk.setAsideAccount(this.opts.directoryUrl, this.clock.now());
      this.log.error({ err: messageOf(err), setAside: aside }, 'ACME: the stored account is unreadable; set aside, registering a new account');
      return undefined;
    }
  }

  /** One order, reported to onOrder whichever way it ends. */
  private async issue(state: SiteState): Promise<void> {
    let result: 'success' | 'failure' = 'failure';
    try {
      await this.issueNow(state);
      result = 'success';
    } finally {
      try {
        this.opts.onOrder?.(state.name, result);
      } catch (err) {
        this.log.error({ err, site: state.name }, 'ACME onOrder callback threw');
      }
    }
  }

  private async issueNow(state: SiteState): Promise<void> {
    const account = await this.getAccount();
    const poll = this.opts.poll ?? { attempts: 10, minMs: 1_000, maxMs: 10_000 };
    const client = new acme.Client({
      directoryUrl: this.opts.directoryUrl,
      accountKey: account.key,
      ...(account.accountUrl ? { accountUrl: account.accountUrl } : {}),
      backoffAttempts: poll.attempts,
      backoffMin: poll.minMs,
      backoffMax: poll.maxMs,
    });
    const hostnames = state.hostnames;
    const certKey = await acme.crypto.createPrivateEcdsaKey('P-256');
    const [, csr] = await acme.crypto.createCsr({ commonName: hostnames[0], altNames: hostnames }, certKey);
    this.ordersPlaced++;
    this.log.info({ site: state.name, hostnames }, 'ACME: placing an order');
    // acme-client calls challengeRemoveFn for every challenge challengeCreateFn was called for, whatever happens.
    const chain = await client.auto({
      csr,
      ...(this.opts.email ? { email: this.opts.email } : {}),
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      // acme-client's own check fetches http://<name>:80 from here: not what a CA sees, and wrong behind NAT.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type !== 'http-01') throw new Error(`ACME: the CA offers no http-01 challenge for ${authz.identifier.value}`);
        const c: SharedChallenge = { keyAuthorization, hostnames: [normalizeHost(authz.identifier.value)] };
        this.challenges.set(challenge.token, c);
        await this.shared?.publishChallenge(challenge.token, c, this.opts.challengeTtlMs ?? 600_000);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        this.challenges.delete(challenge.token);
        await this.shared?.removeChallenge(challenge.token);
      },
    });
    const accountUrl = client.getAccountUrl();
    if (accountUrl !== account.accountUrl) {
      const registered = { ...account, accountUrl };
      this.account = Promise.resolve(registered);
      if (this.opts.accountKey === undefined) {
        await this.disk.saveAccount(registered);
        await this.shared?.saveAccount(registered).catch((err) => this.log.warn({ err: messageOf(err) }, 'ACME: storing the account URL in redis failed'));
      }
    }
    const key = certKey.toString();
    const facts = certificateFacts(chain, key);
    if (!coversAll(facts.names, hostnames)) throw new Error(`ACME: the issued certificate covers ${facts.names.join(', ')}, not ${hostnames.join(', ')}`);
    const cert: InstalledCertificate = { cert: chain, key, notBefore: facts.notBefore, notAfter: facts.notAfter, serial: facts.serial, hostnames: facts.names, temporary: false };
    this.log.info({ site: state.name, serial: facts.serial, notAfter: new Date(facts.notAfter).toISOString() }, 'ACME: certificate issued');
    await this.saveToDisk(state.name, cert);
    this.install(state, cert);
    await this.shared
      ?.saveCertificate(state.name, { cert: chain, key, hostnames, directoryUrl: this.opts.directoryUrl })
      .catch((err) => this.log.error({ site: state.name, err: messageOf(err) }, 'ACME: storing the certificate in redis failed; other instances will not see it'));
  }
}
