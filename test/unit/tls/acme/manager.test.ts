/**
 * The manager without a CA: a directory URL on a loopback port nobody listens on (connection
 * refused, at once). What it does with the failures (backoff on the manual clock), with the
 * temporary certificate, with what it finds in its storage directory, and with bad input.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../src/clock.js';
import { certificateFacts, coversAll } from '../../../../src/tls/acme/certs.js';
import { DiskStore } from '../../../../src/tls/acme/disk-store.js';
import { AcmeManager, type AcmeManagerOptions, type InstalledCertificate } from '../../../../src/tls/acme/manager.js';
import { TEMPORARY_LIFETIME_MS, TEMPORARY_SUBJECT, createTemporaryCertificate } from '../../../../src/tls/acme/self-signed.js';
import { freePort } from '../../../helpers/free-port.js';

let directoryUrl = '';
const dirs: string[] = [];
const managers: AcmeManager[] = [];

beforeAll(async () => {
  directoryUrl = `https://127.0.0.1:${await freePort()}/dir`;
});
afterEach(() => {
  for (const m of managers.splice(0)) m.close();
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function setup(extra: Partial<AcmeManagerOptions> = {}) {
  const storageDir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-acme-unit-'));
  dirs.push(storageDir);
  const clock = new ManualClock(Date.now());
  const installs: InstalledCertificate[] = [];
  const m = new AcmeManager({
    directoryUrl,
    storageDir,
    clock,
    random: () => 0,
    backoff: { initialMs: 1_000, maxMs: 4_000, jitter: 0.5 },
    requestTimeoutMs: 2_000,
    onCertificate: (_s, c) => installs.push(c),
    ...extra,
  });
  managers.push(m);
  return { m, clock, installs, storageDir };
}

describe('backoff on the injected clock', () => {
  it('retries only once each delay has passed, doubling up to the cap, keeping the temporary certificate', async () => {
    const { m, clock, installs } = setup();
    await m.ensure('a', ['a.test']);
    expect(installs).toHaveLength(1);
    const temp = installs[0]!;
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 5; attempt++) {
      const s = m.status()[0]!;
      expect(s.failures).toBe(attempt);
      expect(s.lastError).toMatch(/ECONNREFUSED/);
      const wait = s.nextAttemptAt - clock.now();
      delays.push(wait);
      clock.advance(wait - 1);
      await m.checkRenewals();
      expect(m.status()[0]!.failures).toBe(attempt); // 1 ms early: no attempt
      clock.advance(1);
      await m.checkRenewals();
    }
    expect(delays).toEqual([1_000, 2_000, 4_000, 4_000, 4_000]);
    expect(m.certificate('a')).toBe(temp);
    expect(installs).toHaveLength(1);
  });

  it('two ensure() calls at once make one temporary certificate and one attempt', async () => {
    const { m, installs } = setup();
    const [x, y] = await Promise.all([m.ensure('a', ['a.test']), m.ensure('a', ['a.test'])]);
    expect(x).toBe(y);
    expect(installs).toHaveLength(1);
    expect(m.status()[0]!.failures).toBe(1);
    // A rejected ensure() does not block the next one.
    await expect(m.ensure('a', [])).rejects.toThrow(/no hostnames/);
    expect(await m.ensure('a', ['a.test'])).toBe(x);
  });

  it('reports each failed order to onOrder', async () => {
    const orders: string[] = [];
    const { m, clock } = setup({ onOrder: (site, result) => orders.push(`${site}:${result}`) });
    await m.ensure('a', ['a.test']);
    expect(orders).toEqual(['a:failure']);
    clock.advance(1_000);
    await m.checkRenewals();
    expect(orders).toEqual(['a:failure', 'a:failure']);
  });

  it('forget(): a forgotten site is no longer retried nor listed, and an attempt under way installs nothing', async () => {
    const { m, clock, installs } = setup();
    await m.ensure('a', ['a.test']);
    await m.ensure('b', ['b.test']);
    m.forget('a');
    expect(m.status().map((s) => s.site)).toEqual(['b']);
    expect(m.certificate('a')).toBeUndefined();
    clock.advance(10_000);
    await m.checkRenewals();
    expect(m.status()[0]!.failures).toBe(2); // b retried, a not
    // forgotten before its ensure() ran: it does not come back, nothing is made for it
    const pending = m.ensure('c', ['c.test']);
    m.forget('c');
    await expect(pending).rejects.toThrow(/site c was forgotten/);
    expect(m.status().map((s) => s.site)).toEqual(['b']);
    expect(installs.map((c) => c.hostnames[0])).toEqual(['a.test', 'b.test']);
    // back in the config: managed again from scratch
    await m.ensure('a', ['a.test']);
    expect(m.status().map((s) => s.site).sort()).toEqual(['a', 'b']);
  });

  it('ensure() during the backoff does not attempt again', async () => {
    const { m } = setup();
    await m.ensure('a', ['a.test']);
    await m.ensure('a', ['a.test']);
    expect(m.status()[0]!.failures).toBe(1);
  });
});

describe('the temporary certificate', () => {
  it('is self-signed for the names, short-lived, says what it is, and its key matches', async () => {
    const { m, clock } = setup();
    const c = await m.ensure('site', ['Site.Test', 'www.site.test', 'site.test']);
    expect(c.temporary).toBe(true);
    const x = new X509Certificate(c.cert);
    expect(x.subject).toContain(`CN=${TEMPORARY_SUBJECT}`);
    expect(x.subjectAltName).toBe('DNS:site.test, DNS:www.site.test');
    expect(x.verify(x.publicKey)).toBe(true);
    expect(c.notAfter - clock.now()).toBeLessThanOrEqual(TEMPORARY_LIFETIME_MS);
    expect(c.notAfter - clock.now()).toBeGreaterThan(TEMPORARY_LIFETIME_MS - 1_000);
    expect(certificateFacts(c.cert, c.key).serial).toBe(c.serial);
  });

  it('is replaced by a fresh one in the last third of its life while ACME keeps failing', async () => {
    const { m, clock, installs } = setup();
    const first = await m.ensure('site', ['site.test']);
    clock.advance(TEMPORARY_LIFETIME_MS / 2);
    await m.checkRenewals();
    expect(m.certificate('site')).toBe(first);
    clock.advance(TEMPORARY_LIFETIME_MS / 4);
    await m.checkRenewals();
    const second = m.certificate('site')!;
    expect(second.temporary).toBe(true);
    expect(second.serial).not.toBe(first.serial);
    expect(second.notAfter).toBeGreaterThan(first.notAfter);
    expect(installs.map((c) => c.serial)).toEqual([first.serial, second.serial]);
  });
});

describe('the storage directory', () => {
  async function stored(storageDir: string, opts: { names?: string[]; lifetimeMs?: number; directory?: string; swapKey?: boolean } = {}) {
    const names = opts.names ?? ['site.test'];
    // A stand-in for an issued certificate: any certificate whose key matches will do for loading.
    const pair = await createTemporaryCertificate(names, Date.now(), opts.lifetimeMs ?? 90 * 86_400_000);
    const key = opts.swapKey ? (await createTemporaryCertificate(names, Date.now())).key : pair.key;
    const facts = certificateFacts(pair.cert);
    await new DiskStore(storageDir).saveCertificate('site', { cert: pair.cert, key, hostnames: names, directoryUrl: opts.directory ?? directoryUrl }, facts);
    return facts;
  }

  it('installs a stored valid certificate without any attempt, and writes keys 0600 in a 0700 directory', async () => {
    const { m, storageDir, installs } = setup();
    const facts = await stored(storageDir);
    const c = await m.ensure('site', ['site.test']);
    expect(c.temporary).toBe(false);
    expect(c.serial).toBe(facts.serial);
    expect(installs).toHaveLength(1);
    expect(m.status()[0]!.failures).toBe(0);
    expect(statSync(path.join(storageDir, 'sites', 'site', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(storageDir, 'sites')).mode & 0o777).toBe(0o700);
  });

  it('does not use a stored certificate whose key does not match, that expired, that is from another CA or misses a name', async () => {
    const cases: [string, Parameters<typeof stored>[1], string[]][] = [
      ['key mismatch', { swapKey: true }, ['site.test']],
      ['expired', { lifetimeMs: -120_000 + 60_000 }, ['site.test']],
      ['another directory', { directory: 'https://other.example/dir' }, ['site.test']],
    ];
    for (const [what, opts, names] of cases) {
      const { m, storageDir } = setup();
      await stored(storageDir, opts);
      const c = await m.ensure('site', names);
      expect(c.temporary, what).toBe(true);
      expect(m.status()[0]!.failures, what).toBe(1); // and an order was attempted
    }
  });

  it('serves a stored certificate that lacks a name the site gained, and orders a new one at once', async () => {
    const { m, storageDir, installs } = setup();
    const facts = await stored(storageDir, { names: ['site.test'] });
    const c = await m.ensure('site', ['site.test', 'new.site.test']);
    expect(c.temporary).toBe(false);
    expect(c.serial).toBe(facts.serial);
    expect(c.hostnames).toEqual(['site.test']);
    expect(installs).toHaveLength(1);
    expect(m.status()[0]!.failures).toBe(1); // the order for both names was attempted
  });

  it('a site that gains a name keeps its certificate while the new order runs', async () => {
    const { m, storageDir, installs } = setup();
    const facts = await stored(storageDir, { names: ['site.test'] });
    await m.ensure('site', ['site.test']);
    expect(m.status()[0]!.failures).toBe(0);
    await m.ensure('site', ['site.test', 'new.site.test']);
    expect(m.certificate('site')!.serial).toBe(facts.serial);
    expect(installs.map((c) => c.temporary)).toEqual([false]);
    expect(m.status()[0]!.failures).toBe(1);
  });

  it('the same names in another order are no change (no order placed)', async () => {
    const { m, storageDir } = setup();
    await stored(storageDir, { names: ['site.test', 'www.site.test'] });
    await m.ensure('site', ['site.test', 'www.site.test']);
    await m.ensure('site', ['www.site.test', 'site.test']);
    expect(m.status()[0]!.failures).toBe(0);
  });

  it('creates the account key once (0600) and reuses it; a configured account key is not written', async () => {
    const { m, storageDir } = setup();
    await m.ensure('a', ['a.test']);
    const files = readdirSync(path.join(storageDir, 'accounts'));
    expect(files).toHaveLength(1);
    const file = path.join(storageDir, 'accounts', files[0]!);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const account = JSON.parse(readFileSync(file, 'utf8')) as { key: string; directoryUrl: string };
    expect(account.directoryUrl).toBe(directoryUrl);
    expect(account.key).toMatch(/^-----BEGIN (EC )?PRIVATE KEY-----/);
    const { m: again } = setup({ storageDir });
    await again.ensure('b', ['b.test']);
    expect(JSON.parse(readFileSync(file, 'utf8')).key).toBe(account.key);

    const { m: given, storageDir: other } = setup({ accountKey: account.key });
    await given.ensure('a', ['a.test']);
    expect(given.status()[0]!.failures).toBe(1);
    expect(existsSync(path.join(other, 'accounts'))).toBe(false);
  });

  it('an unreadable account file is set aside and a new account key made (issuance is not blocked by it)', async () => {
    const { m, storageDir } = setup();
    await m.ensure('a', ['a.test']);
    const dir = path.join(storageDir, 'accounts');
    const [name] = readdirSync(dir);
    writeFileSync(path.join(dir, name!), '{"key": ');
    const { m: again, clock } = setup({ storageDir });
    await again.ensure('a', ['a.test']);
    expect(again.status()[0]!.lastError).toMatch(/ECONNREFUSED/); // it got as far as the CA
    expect(readdirSync(dir).sort()).toEqual([name, `${name}.corrupt-${clock.now()}`]);
    expect(JSON.parse(readFileSync(path.join(dir, name!), 'utf8')).key).toMatch(/PRIVATE KEY/);
  });

  it('start() runs the checks on its timer (unref\'d), close() stops them', async () => {
    const { m, clock } = setup({ checkIntervalMs: 20 });
    await m.ensure('a', ['a.test']);
    clock.advance(1_000);
    m.start();
    for (let i = 0; i < 100 && m.status()[0]!.failures < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(m.status()[0]!.failures).toBe(2);
    m.close();
    clock.advance(10_000);
    await new Promise((r) => setTimeout(r, 100));
    expect(m.status()[0]!.failures).toBe(2);
  });

  it('a corrupt file is logged and re-issued, not thrown', async () => {
    const { m, storageDir } = setup();
    await stored(storageDir);
    writeFileSync(path.join(storageDir, 'sites', 'site', 'meta.json'), '{"hostnames":');
    const c = await m.ensure('site', ['site.test']);
    expect(c.temporary).toBe(true);
    writeFileSync(path.join(storageDir, 'sites', 'site', 'meta.json'), JSON.stringify({ hostnames: ['site.test'], directoryUrl }));
    writeFileSync(path.join(storageDir, 'sites', 'site', 'cert.pem'), 'not a certificate');
    const { m: m2 } = setup({ storageDir });
    expect((await m2.ensure('site', ['site.test'])).temporary).toBe(true);
  });
});

describe('bad input', () => {
  it('rejects site names that are not directory names and hostnames a CA cannot issue for', async () => {
    const { m } = setup();
    await expect(m.ensure('../etc', ['a.test'])).rejects.toThrow(/cannot name a storage directory/);
    await expect(m.ensure('a/b', ['a.test'])).rejects.toThrow(/cannot name a storage directory/);
    await expect(m.ensure('a', [])).rejects.toThrow(/no hostnames/);
    await expect(m.ensure('a', ['bad host'])).rejects.toThrow(/not a DNS name/);
    await expect(m.ensure('a', ['-x.test'])).rejects.toThrow(/not a DNS name/);
    await expect(m.ensure('a', ['*.a.test'])).rejects.toThrow(/wildcard name needs the DNS-01 challenge/);
    expect(() => new AcmeManager({ directoryUrl: 'not a url', storageDir: '/tmp/x' })).toThrow(/directoryUrl "not a url" is not a URL/);
    expect(() => new AcmeManager({ directoryUrl: 'http://127.0.0.1:1/dir', storageDir: '/tmp/x' })).toThrow(/must be https:/);
    // The manager still works after all that.
    expect((await m.ensure('a', ['a.test'])).temporary).toBe(true);
  });
});

describe('handleHttp01', () => {
  it('claims only GET/HEAD under /.well-known/acme-challenge/ and answers 404 for an unknown token', async () => {
    const { m } = setup();
    const server = http.createServer((req, res) => {
      if (!m.handleHttp01(req, res)) res.writeHead(418).end('not mine');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const ask = (method: string, p: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method, path: p }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      expect(await ask('GET', '/.well-known/acme-challenge/abc_DEF-123')).toBe(404);
      expect(await ask('HEAD', '/.well-known/acme-challenge/abc')).toBe(404);
      expect(await ask('GET', '/.well-known/acme-challenge/../../etc/passwd')).toBe(404);
      expect(await ask('POST', '/.well-known/acme-challenge/abc')).toBe(418);
      expect(await ask('GET', '/index.html')).toBe(418);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('coversAll', () => {
  it('matches names exactly or by a one-label wildcard, case-insensitively', () => {
    expect(coversAll(['site.test', '*.site.test'], ['Site.Test', 'www.site.test'])).toBe(true);
    expect(coversAll(['*.site.test'], ['a.b.site.test'])).toBe(false);
    expect(coversAll(['*.site.test'], ['site.test'])).toBe(false);
    expect(coversAll(['site.test'], ['other.test'])).toBe(false);
  });
});
