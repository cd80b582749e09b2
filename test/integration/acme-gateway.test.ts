/**
 * Automatic HTTPS end to end: a real gateway (plain and HTTPS listeners on 127.0.0.1, port 0)
 * with a site that says `tls.acme: true`, against Debian's pebble as the CA. pebble-challtestsrv
 * is pebble's DNS and points every name at 127.0.0.1, and pebble's HTTP-01 port is the
 * gateway's plain listener: pebble really fetches each challenge from the gateway.
 *
 * The gateway starts first (its port is pebble's `httpPort`); the ACME section arrives by a live
 * reload, once pebble's directory URL is known. The tests run in order on one story: temporary
 * certificate, issuance, real TLS clients (node https, curl --http2) through the cache, the
 * challenge path, renewal by the injected clock, a reload that adds a name, a restart that places
 * no order, and reloads that refuse a bad config or take ACME away. Then two gateways sharing a
 * redis-server: one orders, the other answers pebble's challenge from Redis and serves the same
 * certificate.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ManualClock } from '../../src/clock.js';
import type { GatewayConfigInput } from '../../src/config/schema.js';
import { TEMPORARY_SUBJECT } from '../../src/tls/acme/self-signed.js';
import { startGateway, withTestDefaults, type StartedGateway } from '../helpers/gateway.js';
import { startPebble, type Pebble } from '../helpers/pebble.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startTestOrigin, type TestOrigin } from '../helpers/test-origin.js';
import { makeTestCa, type TestCa } from '../helpers/tls-certs.js';
import { h1get } from '../helpers/tls-client.js';

const run = promisify(execFile);
const DAY = 86_400_000;
/** acme-client polls pebble every 50 ms at first (1 s in production): the orders take a fraction of a second. */
const POLL = { poll: { attempts: 20, minMs: 50, maxMs: 500 } };

interface Served {
  subjectCn: string | undefined;
  issuerCn: string | undefined;
  serial: string;
  names: string | undefined;
  authorized: boolean;
  authorizationError: string | undefined;
}

/** One TLS handshake with SNI; what the gateway presented and whether it verified against `ca`. */
function handshake(port: number, servername: string, ca: string): Promise<Served> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: false });
    socket.once('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('TLS handshake timed out')));
    socket.once('secureConnect', () => {
      const peer = socket.getPeerCertificate();
      const cn = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
      resolve({
        subjectCn: cn(peer.subject?.CN),
        issuerCn: cn(peer.issuer?.CN),
        serial: peer.serialNumber,
        names: peer.subjectaltname,
        authorized: socket.authorized,
        authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
      });
      socket.end();
    });
  });
}

async function until<T>(probe: () => Promise<T | undefined> | T | undefined, what: string, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
}

/** A sample's value from the gateway's /metrics text; undefined when the series does not exist. */
async function metric(gw: StartedGateway, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = (await h1get(`${gw.adminUrl}/metrics`)).body;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('automatic HTTPS: a gateway with tls.acme against pebble', () => {
  let origin: TestOrigin;
  let testCa: TestCa;
  let pebble: Pebble;
  let root: string;
  let gw: StartedGateway;
  let clock: ManualClock;
  let httpsPort: number;
  let plainPort: number;
  const dirs: string[] = [];
  let storageDir: string;
  let caBundleFile: string;
  let files: { certFile: string; keyFile: string };
  /** Serials pebble issued, as the gateway served them. */
  const serials: string[] = [];
  /** When the first issued certificate was seen (real time). */
  let firstSeenAt = 0;

  /** The shop's hosts: "*" is served but left out of the certificate; a reload adds a name. */
  let shopHosts = ['shop.test', 'www.shop.test', '*'];
  const shop = (tlsBlock?: Record<string, unknown>) => ({
    name: 'shop',
    hosts: shopHosts,
    origins: [{ url: origin.url }],
    healthCheck: { enabled: false },
    ...(tlsBlock ? { tls: tlsBlock } : {}),
  });
  /** A second site with certificate files: its entry must survive everything ACME does. */
  const filesSite = () => ({ name: 'files', hosts: ['files.test'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: files });
  const config = (shopTls?: Record<string, unknown>, withAcme = true): GatewayConfigInput =>
    ({
      tls: { host: '127.0.0.1', port: 0, redirectHttp: true },
      ...(withAcme
        ? {
            acme: {
              directoryUrl: pebble.directoryUrl,
              caBundleFile,
              email: 'ops@shop.test',
              storageDir,
              renewBeforeDays: 30,
              checkIntervalMs: 100,
              requestTimeoutMs: 5_000,
              backoff: { initialMs: 200, maxMs: 1_000, jitter: 0 },
            },
          }
        : {}),
      sites: [filesSite(), shop(shopTls)],
    }) as GatewayConfigInput;

  /** Rewrites the running gateway's config file (test defaults, as the helper writes them) and reloads. */
  async function reloadWith(input: GatewayConfigInput) {
    writeFileSync(gw.configPath, stringify(withTestDefaults({ reload: { watch: false }, ...input })));
    return gw.gw.reload('manual');
  }

  const served = (name = 'shop.test') => handshake(httpsPort, name, root);

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'shop' });
    origin.route('/page', { headers: { 'cache-control': 'max-age=600' }, body: 'the shop page\n' });
    testCa = await makeTestCa();
    files = testCa.write('files', await testCa.leaf(['files.test']));
    storageDir = mkdtempSync(join(tmpdir(), 'crowdgate-acme-gw-'));
    dirs.push(storageDir, testCa.dir);
    clock = new ManualClock(Date.now());
    // The gateway first, without ACME: its plain port is where pebble validates.
    gw = await startGateway(
      { tls: { host: '127.0.0.1', port: 0, redirectHttp: true }, sites: [filesSite(), shop()] } as GatewayConfigInput,
      { clock, acme: POLL },
    );
    plainPort = gw.gw.publicAddress!.port;
    httpsPort = gw.gw.httpsAddress!.port;
    pebble = await startPebble({ httpPort: plainPort, validitySeconds: 120 * 86_400 });
    root = await pebble.rootPem();
    caBundleFile = join(storageDir, '..', `${storageDir.split('/').pop()}-pebble-ca.pem`);
    writeFileSync(caBundleFile, pebble.caBundle);
  }, 30_000);

  afterAll(async () => {
    await gw?.close();
    await pebble?.stop();
    await origin?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    if (caBundleFile) rmSync(caBundleFile, { force: true });
  });

  it('a reload that adds tls.acme serves the temporary self-signed certificate at once, then the one pebble issues after fetching the challenges from the plain listener', async () => {
    // Frozen CA: the order cannot finish, so what is served meanwhile can be looked at.
    pebble.pause();
    try {
      const outcome = await reloadWith(config({ acme: true }));
      expect(outcome).toMatchObject({ ok: true, changed: true });
      const temporary = await until(async () => {
        const s = await served();
        return s.subjectCn === TEMPORARY_SUBJECT ? s : undefined;
      }, 'the temporary certificate');
      expect(temporary.authorized).toBe(false);
      expect(temporary.names).toBe('DNS:shop.test, DNS:www.shop.test');
      expect(await metric(gw, 'crowdgate_acme_temporary', { site: 'shop' })).toBe(1);
      // No redirect to a certificate browsers refuse: plain HTTP keeps serving the page.
      const plain = await h1get(`http://127.0.0.1:${plainPort}/page`, { headers: { host: 'shop.test' } });
      expect(plain.status).toBe(200);
      // The file site's certificate was not touched.
      expect((await handshake(httpsPort, 'files.test', testCa.ca)).authorized).toBe(true);
    } finally {
      pebble.resume();
    }
    const issued = await until(async () => {
      const s = await served();
      return s.authorized ? s : undefined;
    }, 'the certificate pebble issues');
    expect(issued.issuerCn).toMatch(/^Pebble Intermediate CA/);
    expect(issued.names).toBe('DNS:shop.test, DNS:www.shop.test');
    expect((await served('www.shop.test')).serial).toBe(issued.serial);
    serials.push(issued.serial);
    firstSeenAt = Date.now();
    expect(await metric(gw, 'crowdgate_acme_temporary', { site: 'shop' })).toBe(0);
    expect(await metric(gw, 'crowdgate_acme_orders_total', { site: 'shop', result: 'success' })).toBe(1);
    // Both names were validated by pebble over the gateway's plain listener, never by the origin.
    expect(await metric(gw, 'crowdgate_acme_challenges_total', { result: 'answered' })).toBeGreaterThanOrEqual(2);
    expect(origin.count((r) => r.path.startsWith('/.well-known/'))).toBe(0);
    expect(pebble.orders()).toBe(1);
    const notAfter = await metric(gw, 'crowdgate_tls_certificate_not_after_seconds', { site: 'shop' });
    expect(notAfter).toBeGreaterThan(Date.now() / 1000 + 110 * 86_400);
  });

  it('real TLS clients trust it: node https against pebble\'s root, and curl --http2 --cacert; the page comes through the cache', async () => {
    const fetched = origin.count('/page');
    // The Host curl sends, so both clients share one cache key.
    const ask = () => h1get(`https://127.0.0.1:${httpsPort}/page`, { ca: root, servername: 'shop.test', headers: { host: `shop.test:${httpsPort}` } });
    const first = await ask();
    expect(first.status).toBe(200);
    expect(first.body).toBe('the shop page\n');
    const second = await ask();
    expect(second.headers['cache-status']).toMatch(/^crowdgate; hit/);
    const rootFile = join(storageDir, '..', `${storageDir.split('/').pop()}-pebble-root.pem`);
    writeFileSync(rootFile, root);
    try {
      const curl = await run('curl', ['-sS', '--http2', '--cacert', rootFile, '--resolve', `shop.test:${httpsPort}:127.0.0.1`, '-D', '-', '-w', '\nproto=%{http_version} verify=%{ssl_verify_result}\n', `https://shop.test:${httpsPort}/page`]);
      expect(curl.stdout).toMatch(/^HTTP\/2 200/);
      expect(curl.stdout).toMatch(/cache-status: crowdgate; hit/);
      expect(curl.stdout).toContain('the shop page');
      expect(curl.stdout).toContain('proto=2 verify=0');
    } finally {
      rmSync(rootFile, { force: true });
    }
    expect(origin.count('/page')).toBe(fetched + 1);
    // Now that a trusted certificate is served, plain HTTP redirects to it.
    const plain = await h1get(`http://127.0.0.1:${plainPort}/page`, { headers: { host: 'shop.test' } });
    expect(plain.status).toBe(308);
    expect(plain.headers.location).toBe(`https://shop.test:${httpsPort}/page`);
    // The file site keeps its own certificate beside the ACME one.
    const other = await handshake(httpsPort, 'files.test', testCa.ca);
    expect(other.authorized).toBe(true);
    expect(other.names).toBe('DNS:files.test');
  });

  it('the challenge path of an ACME name is answered by the gateway (an unknown token is a 404, never forwarded nor cached); another site\'s goes to its origin', async () => {
    const before = (await metric(gw, 'crowdgate_acme_challenges_total', { result: 'unknown' })) ?? 0;
    for (let i = 0; i < 2; i++) {
      const r = await h1get(`http://127.0.0.1:${plainPort}/.well-known/acme-challenge/no-such-token`, { headers: { host: 'www.shop.test' } });
      expect(r.status).toBe(404);
      expect(r.headers['cache-control']).toBe('no-store');
      expect(r.headers['cache-status']).toBeUndefined();
    }
    expect(await metric(gw, 'crowdgate_acme_challenges_total', { result: 'unknown' })).toBe(before + 2);
    expect(origin.count((r) => r.path.startsWith('/.well-known/'))).toBe(0);
    const other = await h1get(`http://127.0.0.1:${plainPort}/.well-known/acme-challenge/webroot-token`, { headers: { host: 'files.test' } });
    expect(other.body).toContain('/.well-known/acme-challenge/webroot-token');
    expect(origin.count('/.well-known/acme-challenge/webroot-token')).toBe(1);
  });

  it('renews when the injected clock reaches the renewal time: a new order, and the served serial changes', async () => {
    const status = gw.gw.acmeStatus();
    expect(status).toHaveLength(1);
    const renewAt = status[0]!.renewAt!;
    expect(renewAt).toBe(status[0]!.notAfter! - 30 * DAY);
    // X.509 times are whole seconds: a renewal issued within the second of the first certificate
    // would expire with it and be due again at once on this clock. Let that second pass.
    await new Promise((r) => setTimeout(r, Math.max(0, firstSeenAt + 1_000 - Date.now())));
    clock.set(renewAt - 1_000);
    await new Promise((r) => setTimeout(r, 300)); // three checks: not due yet, nothing ordered
    expect(pebble.orders()).toBe(1);
    clock.set(renewAt + 1);
    const renewed = await until(async () => {
      const s = await served();
      return s.authorized && s.serial !== serials[0] ? s : undefined;
    }, 'the renewed certificate');
    serials.push(renewed.serial);
    expect(pebble.orders()).toBe(2);
    expect(await metric(gw, 'crowdgate_acme_orders_total', { site: 'shop', result: 'success' })).toBe(2);
    expect(await metric(gw, 'crowdgate_acme_temporary', { site: 'shop' })).toBe(0);
  });

  it('a reload that adds a host name orders a certificate naming it; the names already covered keep a trusted certificate meanwhile', async () => {
    shopHosts = ['shop.test', 'www.shop.test', 'api.shop.test', '*'];
    expect(await reloadWith(config({ acme: true }))).toMatchObject({ ok: true, changed: true });
    // No temporary certificate for a gained name: the names already covered keep a trusted one.
    expect((await served('shop.test')).authorized).toBe(true);
    const widened = await until(async () => {
      const s = await served('api.shop.test');
      return s.authorized ? s : undefined;
    }, 'a certificate naming api.shop.test');
    expect(widened.names).toBe('DNS:shop.test, DNS:www.shop.test, DNS:api.shop.test');
    expect(widened.serial).not.toBe(serials[1]);
    serials.push(widened.serial);
    expect(pebble.orders()).toBe(3);
    expect(await metric(gw, 'crowdgate_acme_temporary', { site: 'shop' })).toBe(0);
  });

  it('a restart with the same storageDir serves the stored certificate: no new order, the same serial, no temporary one', async () => {
    await gw.close();
    // The closed gateway renews nothing, however far its clock moves.
    clock.set(clock.now() + 200 * DAY);
    await new Promise((r) => setTimeout(r, 400));
    expect(pebble.orders()).toBe(3);
    gw = await startGateway(config({ acme: true }), { clock: new ManualClock(Date.now()), acme: POLL });
    httpsPort = gw.gw.httpsAddress!.port;
    plainPort = gw.gw.publicAddress!.port;
    const again = await until(async () => {
      const s = await served();
      return s.authorized ? s : undefined;
    }, 'the stored certificate');
    expect(again.serial).toBe(serials[2]);
    expect(again.names).toBe('DNS:shop.test, DNS:www.shop.test, DNS:api.shop.test');
    expect(pebble.orders()).toBe(3);
    expect(await metric(gw, 'crowdgate_acme_orders_total', { site: 'shop' })).toBeUndefined();
    expect(gw.logs.some((l) => l.msg === 'ACME: temporary self-signed certificate installed')).toBe(false);
    expect(await metric(gw, 'crowdgate_acme_temporary', { site: 'shop' })).toBe(0);
    const status = JSON.parse((await h1get(`${gw.adminUrl}/status.json`)).body) as { acme: Array<Record<string, unknown>> };
    expect(status.acme).toEqual([
      expect.objectContaining({ site: 'shop', hostnames: ['shop.test', 'www.shop.test', 'api.shop.test'], temporary: false, serial: serials[2], failures: 0 }),
    ]);
    expect(Date.parse(String(status.acme[0]!.renewAt))).toBe(Date.parse(String(status.acme[0]!.notAfter)) - 30 * DAY);
  });

  it('a changed acme section starts a new ACME client, which takes up the stored certificate: no order', async () => {
    const input = config({ acme: true }) as { acme: Record<string, unknown> };
    expect(await reloadWith({ ...input, acme: { ...input.acme, email: 'security@shop.test', renewBeforeDays: 20 } } as GatewayConfigInput)).toMatchObject({ ok: true, changed: true });
    expect(gw.logs.some((l) => l.msg === 'ACME: the acme section changed; a new ACME client takes over')).toBe(true);
    await until(() => (gw.gw.acmeStatus()[0]?.renewAt === gw.gw.acmeStatus()[0]?.notAfter! - 20 * DAY ? true : undefined), 'the new client holding the stored certificate');
    expect((await served()).serial).toBe(serials[2]);
    expect(pebble.orders()).toBe(3);
  });

  it('a reload asking for both acme and certificate files is refused and the certificate keeps serving; a reload without acme withdraws it', async () => {
    const refused = await reloadWith(config({ acme: true, ...files }));
    expect(refused?.ok).toBe(false);
    if (refused && !refused.ok)
      expect(refused.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([expect.stringMatching(/^sites\[1\]\.tls\.acme: acme: true and certFile\/keyFile are mutually exclusive/)]);
    expect((await served()).serial).toBe(serials[2]);

    const withdrawn = await reloadWith(config(undefined, false));
    expect(withdrawn).toMatchObject({ ok: true, changed: true });
    // shop.test now falls to the default certificate (the file site's); nothing is renewed any more.
    const now = await handshake(httpsPort, 'shop.test', testCa.ca);
    expect(now.names).toBe('DNS:files.test');
    expect(gw.gw.acmeStatus()).toEqual([]);
    expect(await metric(gw, 'crowdgate_acme_temporary', { site: 'shop' })).toBeUndefined();
    // The challenge path goes the usual way again.
    await h1get(`http://127.0.0.1:${plainPort}/.well-known/acme-challenge/after`, { headers: { host: 'shop.test' } });
    expect(origin.count('/.well-known/acme-challenge/after')).toBe(1);
    // What ACME stored stays on disk for a site that comes back.
    expect(new X509Certificate(readFileSync(join(storageDir, 'sites', 'shop', 'cert.pem'), 'utf8')).serialNumber).toBe(serials[2]);
  });
});

describe('automatic HTTPS across two gateways sharing Redis', () => {
  let origin: TestOrigin;
  let redis: RedisServer;
  let raw: Redis;
  let pebble: Pebble;
  let a: StartedGateway;
  let b: StartedGateway | undefined;
  const dirs: string[] = [];

  const site = (acme: boolean) => ({ name: 'shared', hosts: ['shared.test'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, ...(acme ? { tls: { acme: true } } : {}) });
  const config = (acme: boolean, storageDir?: string, caBundleFile?: string): GatewayConfigInput =>
    ({
      tls: { host: '127.0.0.1', port: 0 },
      redis: { url: redis.url, keyPrefix: 'acmegw:' },
      ...(storageDir ? { acme: { directoryUrl: pebble.directoryUrl, caBundleFile, storageDir, checkIntervalMs: 100, requestTimeoutMs: 5_000 } } : {}),
      sites: [site(acme)],
    }) as GatewayConfigInput;

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'shared' });
    redis = await startRedisServer();
    raw = new Redis(redis.url);
    raw.on('error', () => {});
    // A first: pebble validates at A's plain port; the ACME section comes by reload.
    a = await startGateway(config(false), { acme: POLL });
    pebble = await startPebble({ httpPort: a.gw.publicAddress!.port });
  }, 30_000);

  afterAll(async () => {
    await b?.close();
    await a?.close();
    raw?.disconnect();
    await pebble?.stop();
    await redis?.stop();
    await origin?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('B orders under the renewal lock while pebble validates at A, which answers from Redis; A takes up the certificate B stored: one order, one serial', async () => {
    const dirA = mkdtempSync(join(tmpdir(), 'crowdgate-acme-a-'));
    const dirB = mkdtempSync(join(tmpdir(), 'crowdgate-acme-b-'));
    dirs.push(dirA, dirB);
    const caBundleFile = join(dirA, 'pebble-ca.pem');
    writeFileSync(caBundleFile, pebble.caBundle);
    // B starts with ACME and takes the lock; pebble is frozen so B's order waits while A joins.
    pebble.pause();
    try {
      b = await startGateway(config(true, dirB, caBundleFile), { acme: POLL });
      await until(async () => ((await raw.get('acmegw:acme:lock:shared')) !== null ? true : undefined), "B's renewal lock");
      writeFileSync(a.configPath, stringify(withTestDefaults({ reload: { watch: false }, ...config(true, dirA, caBundleFile) })));
      expect(await a.gw.reload('manual')).toMatchObject({ ok: true, changed: true });
      await until(() => (a.gw.acmeStatus()[0]?.temporary === true ? true : undefined), "A's temporary certificate");
    } finally {
      pebble.resume();
    }
    const root = await pebble.rootPem();
    const onA = await until(async () => {
      const s = await handshake(a.gw.httpsAddress!.port, 'shared.test', root);
      return s.authorized ? s : undefined;
    }, 'A serving the issued certificate');
    const onB = await handshake(b.gw.httpsAddress!.port, 'shared.test', root);
    expect(onB.authorized).toBe(true);
    expect(onB.serial).toBe(onA.serial);
    expect(pebble.orders()).toBe(1);
    expect(await metric(b, 'crowdgate_acme_orders_total', { site: 'shared', result: 'success' })).toBe(1);
    expect(await metric(a, 'crowdgate_acme_orders_total', { site: 'shared' })).toBeUndefined();
    // The challenges were B's, answered by A from Redis (B's plain port was never asked).
    expect(await metric(a, 'crowdgate_acme_challenges_total', { result: 'answered' })).toBeGreaterThanOrEqual(1);
    expect(await metric(b, 'crowdgate_acme_challenges_total', { result: 'answered' })).toBeUndefined();
    expect(origin.count((r) => r.path.startsWith('/.well-known/'))).toBe(0);
  });
});
