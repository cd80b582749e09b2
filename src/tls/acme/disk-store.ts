/**
 * The ACME state on disk, under one storage directory (mode 0700):
 *
 *   accounts/<sha256(directory URL), 16 hex>.json   { directoryUrl, accountUrl?, key }   (0600)
 *   sites/<site>/cert.pem                            the issued chain, leaf first       (0644)
 *   sites/<site>/key.pem                             its private key                    (0600)
 *   sites/<site>/meta.json                           { hostnames, directoryUrl, serial, notAfter }
 *
 * Every file is written to a temporary name and renamed, so a crash mid-write leaves the old file
 * or the new one, never half of one. A site's three files are renamed key, cert, meta: a reader
 * checks that key and certificate match (certs.ts), so a crash between renames is re-issued, not served.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface StoredAccount {
  directoryUrl: string;
  /** Known once the account is registered. */
  accountUrl?: string;
  /** PEM private key of the account. */
  key: string;
}

export interface StoredCertificate {
  cert: string;
  key: string;
  hostnames: string[];
  directoryUrl: string;
}

const SITE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Whether a site name can name a storage directory: letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'. */
export function isStorageSiteName(site: string): boolean {
  return SITE_NAME.test(site) && !site.includes('..');
}

/** Site names become directory names: letters, digits, '.', '_' and '-', not starting with a dot. */
export function assertSiteName(site: string): void {
  if (!isStorageSiteName(site)) throw new Error(`ACME: site name ${JSON.stringify(site)} cannot name a storage directory (letters, digits, '.', '_', '-'; at most 128)`);
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

export class DiskStore {
  constructor(readonly dir: string) {}

  private accountFile(directoryUrl: string): string {
    const id = createHash('sha256').update(directoryUrl).digest('hex').slice(0, 16);
    return path.join(this.dir, 'accounts', `${id}.json`);
  }

  private siteDir(site: string): string {
    assertSiteName(site);
    return path.join(this.dir, 'sites', site);
  }

  private async writeAtomic(file: string, data: string, mode: number): Promise<void> {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      // A new file: created with `mode` (less the umask, which can only take bits away).
      await writeFile(tmp, data, { mode, flag: 'wx' });
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  async loadAccount(directoryUrl: string): Promise<StoredAccount | undefined> {
    let text: string;
    try {
      text = await readFile(this.accountFile(directoryUrl), 'utf8');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    const parsed = JSON.parse(text) as Partial<StoredAccount>;
    if (typeof parsed.key !== 'string' || parsed.directoryUrl !== directoryUrl) throw new Error(`${this.accountFile(directoryUrl)}: not an account for ${directoryUrl}`);
    return { directoryUrl, key: parsed.key, ...(typeof parsed.accountUrl === 'string' ? { accountUrl: parsed.accountUrl } : {}) };
  }

  /** Renames an unreadable account file to `<name>.corrupt-<ms>` (kept for a human, out of the way); returns the new path. */
  async setAsideAccount(directoryUrl: string, now: number): Promise<string> {
    const file = this.accountFile(directoryUrl);
    const aside = `${file}.corrupt-${now}`;
    await rename(file, aside);
    return aside;
  }

  async saveAccount(account: StoredAccount): Promise<void> {
    await this.writeAtomic(this.accountFile(account.directoryUrl), JSON.stringify(account, null, 2) + '\n', 0o600);
  }

  async loadCertificate(site: string): Promise<StoredCertificate | undefined> {
    const dir = this.siteDir(site);
    let cert: string, key: string, metaText: string;
    try {
      [cert, key, metaText] = await Promise.all([
        readFile(path.join(dir, 'cert.pem'), 'utf8'),
        readFile(path.join(dir, 'key.pem'), 'utf8'),
        readFile(path.join(dir, 'meta.json'), 'utf8'),
      ]);
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    const meta = JSON.parse(metaText) as { hostnames?: unknown; directoryUrl?: unknown };
    if (!Array.isArray(meta.hostnames) || typeof meta.directoryUrl !== 'string') throw new Error(`${path.join(dir, 'meta.json')}: hostnames or directoryUrl missing`);
    return { cert, key, hostnames: meta.hostnames.map(String), directoryUrl: meta.directoryUrl };
  }

  async saveCertificate(site: string, stored: StoredCertificate, facts: { serial: string; notAfter: number }): Promise<void> {
    const dir = this.siteDir(site);
    await this.writeAtomic(path.join(dir, 'key.pem'), stored.key, 0o600);
    await this.writeAtomic(path.join(dir, 'cert.pem'), stored.cert, 0o644);
    const meta = { hostnames: stored.hostnames, directoryUrl: stored.directoryUrl, serial: facts.serial, notAfter: new Date(facts.notAfter).toISOString() };
    await this.writeAtomic(path.join(dir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n', 0o644);
  }
}
