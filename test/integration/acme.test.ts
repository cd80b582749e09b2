/**
 * The ACME manager against a real CA: Debian's pebble validating HTTP-01 by fetching the
 * challenge from our responder (a plain HTTP server on 127.0.0.1 that hands
 * /.well-known/acme-challenge/ to a manager's handleHttp01), names resolved by
 * pebble-challtestsrv's DNS to 127.0.0.1. Issuance, the chain, TLS with SNI, renewal by the
 * injected clock, restart without re-issue, two instances sharing one redis-server, and a CA that
 * cannot be reached.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { splitChain } from '../../src/tls/acme/certs.js';
import { AcmeManager, type AcmeManagerOptions, type InstalledCertificate } from '../../src/tls/acme/manager.js';
import { TEMPORARY_SUBJECT } from '../../src/tls/acme/self-signed.js';
import { freePort } from '../helpers/free-port.js';
import { startPebble, type Pebble } from '../helpers/pebble.js';
import { useRedisServer, waitUntilReady } from '../helpers/redis-server.js';

const redis = useRedisServer({ inspect: true });

interface Fetch {
  path: string;
  host: string;
  status: number;
  body: string;
  by: string;
}

let pebble: Pebble;
let responder: http.Server;
/** Every challenge fetch the responder answered, in order. */
const fetches: Fetch[] = [];
/** Every fetch from pebble as it arrives (before the gate), path and Host. */
const arrivals: { path: string; host: string }[] = [];
/** Who answers the next challenge fetch (set by each test). */
let answerer: () => { name: string; manager: AcmeManager } | undefined = () => undefined;
/** Held challenge fetches wait on this (a test sets it to look at the temporary certificate first). */
let gate: Promise<void> = Promise.resolve();
const dirs: string[] = [];
const closers: (() => void | Promise<void>)[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-acme-'));
  dirs.push(d);
  return d;
}

function manager(extra: Partial<AcmeManagerOptions> & { clock: ManualClock; storageDir: string }): AcmeManager {
  const m = new AcmeManager({
    directoryUrl: pebble.directoryUrl,
    caBundle: pebble.caBundle,
    email: 'ops@site.test',
    poll: { attempts: 20, minMs: 50, maxMs: 500 },
    requestTimeoutMs: 5_000,
    ...extra,
  });
  closers.push(() => m.close());
  return m;
}

/** A TLS server choosing its certificate by SNI from what the manager last installed per hostname. */
async function tlsServer(store: Map<string, InstalledCertificate>): Promise<number> {
  const server = tls.createServer({
    SNICallback: (name, cb) => {
      const c = store.get(name);
      if (!c) return cb(new Error(`no certificate for ${name}`));
      cb(null, tls.createSecureContext({ cert: c.cert, key: c.key }));
    },
  });
  server.on('secureConnection', (s) => s.end('hello over TLS\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** A real TLS handshake with SNI; the peer certificate and whether it verified against `ca`. */
function handshake(port: number, servername: string, ca?: string): Promise<{ authorized: boolean; error: string | undefined; cert: tls.PeerCertificate; data: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ...(ca ? { ca } : {}), rejectUnauthorized: false });
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (data += c));
    socket.once('secureConnect', () => {
      const out = { authorized: socket.authorized, error: socket.authorizationError ? String(socket.authorizationError) : undefined, cert: socket.getPeerCertificate() };
      socket.once('end', () => resolve({ ...out, data }));
    });
    socket.once('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

function probe(port: number, urlPath: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers: { host, 'x-test-probe': '1' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

let responderPort = 0;

beforeAll(async () => {
  responder = http.createServer((req, res) => {
    const probeRequest = req.headers['x-test-probe'] === '1';
    if (!probeRequest) arrivals.push({ path: req.url ?? '', host: req.headers.host ?? '' });
    void (probeRequest ? Promise.resolve() : gate).then(() => {
      const who = answerer();
      if (!who) {
        res.writeHead(503).end();
        return;
      }
      // Record what the manager answered (status and body) as the response ends.
      const chunks: string[] = [];
      const end = res.end.bind(res);
      res.end = ((chunk?: unknown, ...rest: unknown[]) => {
        if (typeof chunk === 'string') chunks.push(chunk);
        if (!probeRequest) fetches.push({ path: req.url ?? '', host: req.headers.host ?? '', status: res.statusCode, body: chunks.join(''), by: who.name });
        return (end as (...a: unknown[]) => http.ServerResponse)(chunk, ...rest);
      }) as typeof res.end;
      if (!who.manager.handleHttp01(req, res)) res.writeHead(404).end('not an ACME challenge\n');
    });
  });
  await new Promise<void>((r) => responder.listen(0, '127.0.0.1', r));
  responderPort = (responder.address() as AddressInfo).port;
  pebble = await startPebble({ httpPort: responderPort });
}, 30_000);

afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await new Promise<void>((r) => responder.close(() => r()));
  await pebble?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('ACME certificates from pebble over HTTP-01', () => {
  const clock = new ManualClock(Date.now());
  const storageDir = tempDir();
  const installs: InstalledCertificate[] = [];
  const sni = new Map<string, InstalledCertificate>();
  let first: InstalledCertificate;
  let tlsPort = 0;

  it('serves a temporary self-signed certificate at once, then the one pebble issues after fetching the challenge from us', async () => {
    tlsPort = await tlsServer(sni);
    const m = manager({
      clock,
      storageDir,
      onCertificate: (site, c) => {
        expect(site).toBe('site');
        installs.push(c);
        for (const h of c.hostnames) sni.set(h, c);
      },
    });
    answerer = () => ({ name: 'm', manager: m });
    let open!: () => void;
    gate = new Promise<void>((r) => (open = r));
    const ordersBefore = pebble.orders();
    const ensured = m.ensure('site', ['site.test', 'www.site.test']);

    // Until pebble's validation goes through, TLS answers with the temporary certificate.
    for (let i = 0; i < 200 && fetches.length === 0 && !sni.has('site.test'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(installs[0]?.temporary).toBe(true);
    const before = await handshake(tlsPort, 'site.test', await pebble.rootPem());
    expect(before.authorized).toBe(false);
    expect(before.data).toBe('hello over TLS\n');
    expect(before.cert.subject.CN).toBe(TEMPORARY_SUBJECT);
    expect(before.cert.subjectaltname).toBe('DNS:site.test, DNS:www.site.test');
    expect(before.cert.serialNumber).toBe(installs[0]!.serial);

    // While pebble's first fetch is held: the responder answers that challenge only for its own name.
    for (let i = 0; i < 500 && arrivals.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const held = arrivals[0]!;
    expect(held.path).toMatch(/^\/\.well-known\/acme-challenge\/[A-Za-z0-9_-]+$/);
    const token = held.path.split('/').pop()!;
    const right = await probe(responderPort, held.path, held.host);
    expect(right.status).toBe(200);
    expect(right.body).toMatch(new RegExp(`^${token}\\.[A-Za-z0-9_-]{43}$`)); // token.thumbprint (RFC 8555 §8.1)
    expect(m.challengeResponse(token, held.host)).toBe(right.body);
    expect(m.challengeResponse(token, 'other.test')).toBeUndefined();
    expect((await probe(responderPort, held.path, 'other.test')).status).toBe(404);
    expect((await probe(responderPort, '/.well-known/acme-challenge/no-such-token', 'site.test')).status).toBe(404);
    open();

    first = await ensured;
    expect(first.temporary).toBe(false);
    expect(installs.map((c) => c.temporary)).toEqual([true, false]);
    expect(pebble.orders() - ordersBefore).toBe(1);
    // Pebble really fetched both challenges from our responder, by name, and got the key authorizations.
    const challengeFetches = fetches.filter((f) => f.path.startsWith('/.well-known/acme-challenge/'));
    // (pebble's VA may fetch a challenge more than once)
    expect([...new Set(challengeFetches.map((f) => f.host.replace(/:\d+$/, '')))].sort()).toEqual(['site.test', 'www.site.test']);
    expect(challengeFetches.every((f) => f.status === 200 && f.body.startsWith(f.path.split('/').pop()! + '.'))).toBe(true);
    // Answered challenges are forgotten.
    expect((await probe(responderPort, held.path, held.host)).status).toBe(404);
    expect(m.challengeResponse(token)).toBeUndefined();
  }, 30_000);

  it('the issued chain leads to pebble’s root and covers the names; TLS with SNI verifies against that root', async () => {
    const root = new X509Certificate(await pebble.rootPem());
    const [leafPem, intermediatePem] = splitChain(first.cert);
    const leaf = new X509Certificate(leafPem!);
    const intermediate = new X509Certificate(intermediatePem!);
    expect(leaf.verify(intermediate.publicKey)).toBe(true);
    expect(intermediate.verify(root.publicKey)).toBe(true);
    expect(leaf.checkHost('site.test')).toBe('site.test');
    expect(leaf.checkHost('www.site.test')).toBe('www.site.test');
    expect(leaf.checkHost('other.test')).toBeUndefined();

    const after = await handshake(tlsPort, 'www.site.test', root.toString());
    expect(after.error).toBeUndefined();
    expect(after.authorized).toBe(true);
    expect(after.cert.serialNumber).toBe(first.serial);
    expect(after.data).toBe('hello over TLS\n');
  });

  it('keeps account key and certificate key private on disk (0600 in a 0700 directory)', () => {
    expect(statSync(storageDir).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(storageDir, 'sites', 'site', 'key.pem')).mode & 0o777).toBe(0o600);
    const accounts = path.join(storageDir, 'accounts');
    expect(statSync(accounts).mode & 0o077).toBe(0);
  });

  it('renews when the injected clock enters the renewal window, not before', async () => {
    const m = manager({ clock, storageDir, onCertificate: (_s, c) => installs.push(c) });
    answerer = () => ({ name: 'm', manager: m });
    gate = Promise.resolve();
    const ordersBefore = pebble.orders();
    const loaded = await m.ensure('site', ['site.test', 'www.site.test']);
    expect(loaded.serial).toBe(first.serial);
    const renewAt = m.status()[0]!.renewAt!;
    expect(renewAt).toBe(first.notAfter - 30 * 86_400_000);

    clock.set(renewAt - 1_000);
    await m.checkRenewals();
    expect(pebble.orders()).toBe(ordersBefore);
    expect(m.certificate('site')!.serial).toBe(first.serial);

    clock.set(renewAt + 1_000);
    await m.checkRenewals();
    const renewed = m.certificate('site')!;
    expect(pebble.orders() - ordersBefore).toBe(1);
    expect(renewed.temporary).toBe(false);
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.notAfter).toBeGreaterThanOrEqual(first.notAfter);
    expect(installs.at(-1)!.serial).toBe(renewed.serial);
    expect(m.status()[0]!.renewAt).toBe(renewed.notAfter - 30 * 86_400_000);
    first = renewed;
  }, 30_000);

  it('a restart on the same storage directory installs the stored certificate and places no order', async () => {
    clock.set(Date.now());
    const seen: InstalledCertificate[] = [];
    const m = manager({ clock, storageDir, onCertificate: (_s, c) => seen.push(c) });
    const ordersBefore = pebble.orders();
    const got = await m.ensure('site', ['www.site.test', 'site.test']);
    expect(got.serial).toBe(first.serial);
    expect(seen.map((c) => [c.temporary, c.serial])).toEqual([[false, first.serial]]);
    await m.checkRenewals();
    expect(pebble.orders()).toBe(ordersBefore);
    expect(m.ordersPlaced).toBe(0);
  });
});

describe('two instances sharing one redis-server', () => {
  it('place one order between them, hold one certificate, and the other instance answers the challenge', async () => {
    const clients = [new Redis(redis.url), new Redis(redis.url)];
    for (const c of clients) {
      c.on('error', () => {});
      await waitUntilReady(c);
      closers.push(() => c.disconnect());
    }
    const clock = new ManualClock(Date.now());
    const common = { clock, peerPollMs: 25 };
    const a = manager({ ...common, storageDir: tempDir(), redis: { client: clients[0]!, keyPrefix: 'gw:acme:' } });
    const b = manager({ ...common, storageDir: tempDir(), redis: { client: clients[1]!, keyPrefix: 'gw:acme:' } });
    // The validator reaches whichever instance did NOT place the order.
    answerer = () => (a.ordersPlaced === 0 ? { name: 'a', manager: a } : { name: 'b', manager: b });
    gate = Promise.resolve();
    const fetchesBefore = fetches.length;
    const ordersBefore = pebble.orders();
    const issuedBefore = pebble.issued();

    const [ca, cb] = await Promise.all([a.ensure('shared', ['shared.test']), b.ensure('shared', ['shared.test'])]);

    expect(pebble.orders() - ordersBefore).toBe(1);
    expect(pebble.issued() - issuedBefore).toBe(1);
    expect(a.ordersPlaced + b.ordersPlaced).toBe(1);
    expect(ca.temporary).toBe(false);
    expect(cb.serial).toBe(ca.serial);
    const issuer = a.ordersPlaced === 1 ? 'a' : 'b';
    const challengeFetches = fetches.slice(fetchesBefore);
    expect(challengeFetches.length).toBeGreaterThanOrEqual(1);
    for (const f of challengeFetches) {
      expect(f.host.replace(/:\d+$/, '')).toBe('shared.test');
      expect(f.by).not.toBe(issuer);
      expect(f.status).toBe(200);
    }
    // One certificate in redis, the lock released, the challenge removed.
    expect(JSON.parse((await redis.raw.get('gw:acme:cert:shared'))!).cert).toBe(ca.cert);
    expect(await redis.raw.exists('gw:acme:lock:shared')).toBe(0);
    expect(await redis.raw.keys('gw:acme:challenge:*')).toEqual([]);
    expect(await redis.raw.keys('gw:acme:account:*')).toHaveLength(1);

    // Renewal: both enter the window together; one order, and both end up with its certificate.
    const renewAt = a.status()[0]!.renewAt!;
    expect(b.status()[0]!.renewAt).toBe(renewAt);
    clock.set(renewAt + 1_000);
    const ordersBeforeRenewal = pebble.orders();
    await Promise.all([a.checkRenewals(), b.checkRenewals()]);
    expect(pebble.orders() - ordersBeforeRenewal).toBe(1);
    const renewed = a.certificate('shared')!;
    expect(renewed.serial).not.toBe(ca.serial);
    expect(b.certificate('shared')!.serial).toBe(renewed.serial);

    // A third instance with an empty storage directory takes the shared certificate at start: no order.
    clock.set(Date.now()); // back to now: the renewed certificate is not yet due
    const cInstalls: InstalledCertificate[] = [];
    const c = manager({ clock, storageDir: tempDir(), redis: { client: clients[0]!, keyPrefix: 'gw:acme:' }, onCertificate: (_s, x) => cInstalls.push(x) });
    const ordersBeforeC = pebble.orders();
    expect((await c.ensure('shared', ['shared.test'])).serial).toBe(renewed.serial);
    expect(pebble.orders()).toBe(ordersBeforeC);
    expect(c.ordersPlaced).toBe(0);
    expect(cInstalls.map((x) => [x.temporary, x.serial])).toEqual([[false, renewed.serial]]); // no temporary certificate first
  }, 30_000);
});

describe('a challenge the CA cannot validate', () => {
  it('fails the order with the CA’s reason, keeps the temporary certificate and backs off', async () => {
    const clock = new ManualClock(Date.now());
    const m = manager({ clock, storageDir: tempDir(), random: () => 0, backoff: { initialMs: 10_000, maxMs: 60_000, jitter: 0.5 } });
    answerer = () => undefined; // the responder answers 503: this instance is not reachable
    const fetchesBefore = arrivals.length;
    const got = await m.ensure('refused', ['refused.test']);
    expect(got.temporary).toBe(true);
    expect(arrivals.length).toBeGreaterThan(fetchesBefore); // pebble did come for the challenge
    const s = m.status()[0]!;
    expect(s.failures).toBe(1);
    expect(s.lastError).toMatch(/refused\.test.*acme-challenge.* returned 503/); // pebble's own words
    expect(s.nextAttemptAt).toBe(clock.now() + 10_000);
    expect(m.certificate('refused')).toBe(got);
  }, 20_000);
});

describe('a CA whose HTTPS certificate is not trusted', () => {
  it('is an attempt that fails with the TLS reason (no caBundle: pebble’s test CA is not trusted)', async () => {
    const clock = new ManualClock(Date.now());
    const m = new AcmeManager({ directoryUrl: pebble.directoryUrl, storageDir: tempDir(), clock, requestTimeoutMs: 5_000 });
    closers.push(() => m.close());
    const ordersBefore = pebble.orders();
    expect((await m.ensure('untrusted', ['untrusted.test'])).temporary).toBe(true);
    expect(m.status()[0]!.lastError).toMatch(/ACME request to https:\/\/127\.0\.0\.1:\d+\/dir failed: .*(certificate|verify)/i);
    expect(pebble.orders()).toBe(ordersBefore);
    m.close(); // acme-client's HTTP settings are per CA origin in the process: hand pebble's back to the other managers
  });
});

describe('a redis-server that does not answer', () => {
  it('costs an attempt (backoff, temporary certificate kept), not the process; the next attempt after it answers again succeeds', async () => {
    const client = new Redis(redis.url);
    client.on('error', () => {});
    await waitUntilReady(client);
    closers.push(() => client.disconnect());
    const clock = new ManualClock(Date.now());
    const m = manager({ clock, storageDir: tempDir(), random: () => 0, backoff: { initialMs: 5_000, maxMs: 60_000, jitter: 0.5 }, redis: { client, keyPrefix: 'stall:', timeoutMs: 200 } });
    answerer = () => ({ name: 'm', manager: m });
    const ordersBefore = pebble.orders();
    redis.server.pause();
    try {
      const got = await m.ensure('stalled', ['stalled.test']);
      expect(got.temporary).toBe(true);
      const s = m.status()[0]!;
      expect(s.failures).toBe(1);
      expect(s.lastError).toMatch(/redis SET did not answer within 200 ms/);
      expect(s.nextAttemptAt).toBe(clock.now() + 5_000);
      expect(pebble.orders()).toBe(ordersBefore); // no order without the lock
    } finally {
      redis.server.resume();
    }
    clock.advance(5_000);
    await m.checkRenewals();
    expect(m.certificate('stalled')!.temporary).toBe(false);
    expect(m.status()[0]!.failures).toBe(0);
    expect(pebble.orders() - ordersBefore).toBe(1);
  }, 20_000);
});

describe('a CA that cannot be reached', () => {
  it('keeps the temporary certificate, backs off exponentially with jitter by the injected clock, and does not throw', async () => {
    const clock = new ManualClock(Date.now());
    const sni = new Map<string, InstalledCertificate>();
    const port = await tlsServer(sni);
    const m = new AcmeManager({
      directoryUrl: `https://127.0.0.1:${await freePort()}/dir`,
      storageDir: tempDir(),
      clock,
      random: () => 0.5,
      backoff: { initialMs: 60_000, maxMs: 3_600_000, jitter: 0.5 },
      requestTimeoutMs: 2_000,
      onCertificate: (_s, c) => sni.set('down.test', c),
    });
    closers.push(() => m.close());

    const got = await m.ensure('down', ['down.test']);
    expect(got.temporary).toBe(true);
    let s = m.status()[0]!;
    expect(s.failures).toBe(1);
    expect(s.lastError).toMatch(/ECONNREFUSED/);
    expect(s.nextAttemptAt).toBe(clock.now() + 45_000); // 60 s less half of the 50% jitter

    // Not yet due: no attempt.
    clock.advance(44_000);
    await m.checkRenewals();
    expect(m.status()[0]!.failures).toBe(1);

    clock.advance(1_000);
    await m.checkRenewals();
    s = m.status()[0]!;
    expect(s.failures).toBe(2);
    expect(s.nextAttemptAt).toBe(clock.now() + 90_000); // 120 s, jittered

    const served = await handshake(port, 'down.test');
    expect(served.cert.subject.CN).toBe(TEMPORARY_SUBJECT);
    expect(served.cert.serialNumber).toBe(got.serial);
  }, 20_000);
});
