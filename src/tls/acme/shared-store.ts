/**
 * The ACME state N gateway instances share through Redis, so they hold one account, one
 * certificate per site and run one renewal at a time, and whichever instance the CA's validator
 * reaches can answer an HTTP-01 challenge. Keys, all under one prefix (default `crowdgate:acme:`):
 *
 *   <p>account:<sha256(directory URL), 16 hex>   JSON { directoryUrl, accountUrl?, key }
 *   <p>cert:<site>                               JSON { cert, key, hostnames, directoryUrl }
 *   <p>lock:<site>                               a random owner token, SET NX PX (the renewal lock)
 *   <p>challenge:<token>                         JSON { keyAuthorization, hostnames }, PX
 *
 * The private keys are stored in Redis as they are on disk: Redis must be as private as the
 * storage directory. Every command is bounded by `timeoutMs`; a Redis that does not answer is an
 * error for the caller (the manager retries with backoff and keeps serving what it has).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { StoredAccount, StoredCertificate } from './disk-store.js';

export interface SharedChallenge {
  keyAuthorization: string;
  hostnames: string[];
}

/** Deletes the lock only if this owner still holds it (a lock that expired and was taken by another instance stays). */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

export class SharedStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'crowdgate:acme:',
    private readonly timeoutMs = 2_000,
  ) {}

  private bounded<T>(what: string, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`ACME shared store: redis ${what} did not answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  private accountKey(directoryUrl: string): string {
    return `${this.prefix}account:${createHash('sha256').update(directoryUrl).digest('hex').slice(0, 16)}`;
  }

  async loadAccount(directoryUrl: string): Promise<StoredAccount | undefined> {
    const text = await this.bounded('GET', this.redis.get(this.accountKey(directoryUrl)));
    if (text === null) return undefined;
    const parsed = JSON.parse(text) as Partial<StoredAccount>;
    if (typeof parsed.key !== 'string' || parsed.directoryUrl !== directoryUrl) throw new Error(`redis ${this.accountKey(directoryUrl)}: not an account for ${directoryUrl}`);
    return { directoryUrl, key: parsed.key, ...(typeof parsed.accountUrl === 'string' ? { accountUrl: parsed.accountUrl } : {}) };
  }

  /** Stores the account unless another instance stored one first; returns the one that is stored. */
  async offerAccount(account: StoredAccount): Promise<StoredAccount> {
    const key = this.accountKey(account.directoryUrl);
    const set = await this.bounded('SET', this.redis.set(key, JSON.stringify(account), 'NX'));
    if (set === 'OK') return account;
    return (await this.loadAccount(account.directoryUrl)) ?? account;
  }

  async saveAccount(account: StoredAccount): Promise<void> {
    await this.bounded('SET', this.redis.set(this.accountKey(account.directoryUrl), JSON.stringify(account)));
  }

  async loadCertificate(site: string): Promise<StoredCertificate | undefined> {
    const text = await this.bounded('GET', this.redis.get(`${this.prefix}cert:${site}`));
    if (text === null) return undefined;
    const parsed = JSON.parse(text) as Partial<StoredCertificate>;
    if (typeof parsed.cert !== 'string' || typeof parsed.key !== 'string' || !Array.isArray(parsed.hostnames) || typeof parsed.directoryUrl !== 'string')
      throw new Error(`redis ${this.prefix}cert:${site}: not a stored certificate`);
    return { cert: parsed.cert, key: parsed.key, hostnames: parsed.hostnames.map(String), directoryUrl: parsed.directoryUrl };
  }

  async saveCertificate(site: string, stored: StoredCertificate): Promise<void> {
    await this.bounded('SET', this.redis.set(`${this.prefix}cert:${site}`, JSON.stringify(stored)));
  }

  /** Takes the site's renewal lock for ttlMs (SET NX PX); returns the owner token, or undefined if another instance holds it. */
  async tryLock(site: string, ttlMs: number): Promise<string | undefined> {
    const owner = randomBytes(16).toString('hex');
    let ok: string | null;
    try {
      ok = await this.bounded('SET', this.redis.set(`${this.prefix}lock:${site}`, owner, 'PX', Math.max(1, Math.round(ttlMs)), 'NX'));
    } catch (err) {
      // A SET that timed out here may still run when Redis answers again, taking the lock for an
      // owner nobody knows (every instance would wait out ttlMs). The release goes out on the same
      // connection, so Redis runs it after that SET: the lock is freed either way.
      this.unlock(site, owner).catch(() => {});
      throw err;
    }
    return ok === 'OK' ? owner : undefined;
  }

  async unlock(site: string, owner: string): Promise<void> {
    await this.bounded('EVAL', this.redis.eval(RELEASE, 1, `${this.prefix}lock:${site}`, owner));
  }

  async publishChallenge(token: string, challenge: SharedChallenge, ttlMs: number): Promise<void> {
    await this.bounded('SET', this.redis.set(`${this.prefix}challenge:${token}`, JSON.stringify(challenge), 'PX', Math.max(1, Math.round(ttlMs))));
  }

  async removeChallenge(token: string): Promise<void> {
    await this.bounded('DEL', this.redis.del(`${this.prefix}challenge:${token}`));
  }

  async lookupChallenge(token: string): Promise<SharedChallenge | undefined> {
    const text = await this.bounded('GET', this.redis.get(`${this.prefix}challenge:${token}`));
    if (text === null) return undefined;
    const parsed = JSON.parse(text) as Partial<SharedChallenge>;
    if (typeof parsed.keyAuthorization !== 'string' || !Array.isArray(parsed.hostnames)) return undefined;
    return { keyAuthorization: parsed.keyAuthorization, hostnames: parsed.hostnames.map(String) };
  }
}
